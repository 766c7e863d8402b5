//! The config CLI validates before publishing and reads back what is in force.

use serde_json::json;

use crate::support::kafka::Topics;
use crate::support::processor::{cli, env_for};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn config_commands_validate_publish_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::create("cli").await;
    let ca = dir.path().join("unused-ca.pem");
    let env = env_for(&topics, &dir.path().join("store"), &ca);
    let file = dir.path().join("webhook.json");

    // Refused with the field named, and nothing published.
    let mut bad = webhook(ORG, SANDBOX, "https://hooks.example.com/x");
    bad["headers"] = json!({"Host": "evil.example.com"});
    std::fs::write(&file, serde_json::to_vec(&bad).unwrap()).unwrap();
    let (ok, _, err) = cli(&env, &["config", "put", "--file", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("/headers/Host") && err.contains("reserved"),
        "{err}"
    );
    bad["headers"] = json!({});
    bad["url"] = json!("http://hooks.example.com/x");
    std::fs::write(&file, serde_json::to_vec(&bad).unwrap()).unwrap();
    let (ok, _, err) = cli(&env, &["config", "put", "--file", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("/url") && err.contains("https"), "{err}");
    // Every refusal at once: an http:// URL, a plaintext JWT key and a reserved header
    // (and no updatedAt: the command stamps it), each named, no secret echoed.
    bad["authentication"] = json!({
        "type": "jwt", "algorithm": "HS256", "key": "plaintext-jwt-key",
        "issuer": "i", "subject": "s", "audience": "a", "expiresInSeconds": 300
    });
    bad["headers"] = json!({"Host": "evil.example.com"});
    bad.as_object_mut().unwrap().remove("updatedAt");
    std::fs::write(&file, serde_json::to_vec(&bad).unwrap()).unwrap();
    let (ok, _, err) = cli(&env, &["config", "put", "--file", file.to_str().unwrap()]);
    assert!(!ok);
    for field in ["/url", "/authentication", "/headers/Host"] {
        assert!(err.contains(field), "{field} not named: {err}");
    }
    assert!(!err.contains("updatedAt"), "{err}");
    assert!(!err.contains("plaintext-jwt-key"), "{err}");
    let (ok, out, _) = cli(&env, &["config", "list"]);
    assert!(ok);
    assert_eq!(out.trim(), "");

    // Valid records are published and read back.
    let good = webhook(ORG, SANDBOX, "https://hooks.example.com/ajo/feedback");
    std::fs::write(&file, serde_json::to_vec(&good).unwrap()).unwrap();
    let (ok, out, err) = cli(
        &env,
        &[
            "config",
            "put",
            "--file",
            file.to_str().unwrap(),
            "--by",
            "ops-alice",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains(&webhook_key(ORG, SANDBOX)), "{out}");
    let (ok, _, err) = cli(
        &env,
        &[
            "campaign",
            "enable",
            "--org",
            ORG,
            "--sandbox",
            SANDBOX,
            "--campaign",
            CAMPAIGN,
        ],
    );
    assert!(ok, "{err}");

    let (ok, out, err) = cli(&env, &["config", "get", "--org", ORG, "--sandbox", SANDBOX]);
    assert!(ok, "{err}");
    let mut got: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Stamped by the command: who, and when.
    assert_eq!(got["updatedBy"], "ops-alice");
    assert_ne!(got["updatedAt"], good["updatedAt"]);
    for stamp in ["updatedAt", "updatedBy"] {
        got.as_object_mut().unwrap().remove(stamp);
    }
    let mut expected = good.clone();
    expected.as_object_mut().unwrap().remove("updatedAt");
    assert_eq!(got, expected);
    let (_, out, _) = cli(&env, &["config", "list"]);
    assert!(out.contains(&webhook_key(ORG, SANDBOX)), "{out}");
    assert!(
        out.contains(&format!(
            "{}\twebhooksEnabled=true",
            campaign_key(ORG, SANDBOX, CAMPAIGN)
        )),
        "{out}"
    );

    // Deletion.
    let (ok, _, err) = cli(
        &env,
        &["config", "delete", "--org", ORG, "--sandbox", SANDBOX],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&env, &["config", "get", "--org", ORG, "--sandbox", SANDBOX]);
    assert!(!ok);
    assert!(err.contains("no webhook"), "{err}");
}
