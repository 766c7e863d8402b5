//! JWT authentication, Standard Webhooks signatures and secrets, checked against independent
//! implementations (PyJWT and the `standardwebhooks` package), and a scan of everything the
//! processor wrote for the secret values.

use std::collections::HashMap;
use std::process::Command;

use base64::Engine;
use feedback_webhooks::domain::secret::SealingKey;
use feedback_webhooks::receiver::Reply;
use serde_json::{json, Value};

use crate::support::kafka::{Producer, Reader, Topics};
use crate::support::processor::{cli, env_for, Processor};
use crate::support::receiver::TestReceiver;
use crate::support::*;

fn random_text(bytes: usize) -> String {
    let raw: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a helper");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwt_and_signatures_verify_independently_and_no_secret_leaks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let topics = Topics::create("security").await;
    let receiver = TestReceiver::start(d).await;
    let mut env = env_for(&topics, &d.join("store"), &receiver.ca_file);

    // The deployment's config-encryption key.
    let key_file = d.join("config.key");
    std::fs::write(&key_file, SealingKey::generate_base64()).unwrap();
    env.push((
        "FW_SECRETS__ENCRYPTION_KEY_FILE".into(),
        key_file.display().to_string(),
    ));

    // Keys made for this test: HS secrets, an RSA and an EC key pair.
    let hs256 = random_text(32);
    let hs384 = random_text(48);
    let hs512 = random_text(64);
    std::fs::write(d.join("hs256"), &hs256).unwrap();
    std::fs::write(d.join("hs384"), &hs384).unwrap();
    std::fs::write(d.join("hs512"), &hs512).unwrap();
    run(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(d.join("rsa.pem")));
    run(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(d.join("rsa.pem"))
        .arg("-out")
        .arg(d.join("rsa.pub")));
    let ec = rcgen::KeyPair::generate().unwrap();
    std::fs::write(d.join("ec.pem"), ec.serialize_pem()).unwrap();
    std::fs::write(d.join("ec.pub"), ec.public_key_pem()).unwrap();
    // HS384's key comes from the processor's environment (an org's secrets may name only
    // its own variables, `{prefix}{ORG}__{KEY}`).
    env.push(("WEBHOOK_SECRET_ORGHS384__KEY".into(), hs384.clone()));
    // Secret files are under {root}/{imsOrg}/.
    let secrets_dir = d.join("secrets");
    env.push((
        "FW_SECRETS__FILE_DIRS".into(),
        format!("[\"{}\"]", secrets_dir.display()),
    ));
    // HS512's key is sealed with the CLI.
    let (ok, sealed, err) = cli(
        &env,
        &[
            "secret",
            "seal",
            "--file",
            d.join("hs512").to_str().unwrap(),
            "--record",
            &format!("webhook/orgHS512/{SANDBOX}"),
        ],
    );
    assert!(ok, "{err}");
    let sealed: Value = serde_json::from_str(&sealed).unwrap();

    // A reference to a copy of `name` in the org's folder of secret files.
    let file_ref = |org: &str, name: &str| {
        let folder = secrets_dir.join(org);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::copy(d.join(name), folder.join(name)).unwrap();
        json!({"ref": format!("file:{}", folder.join(name).display())})
    };
    let tenants: Vec<(&str, &str, Value, String)> = vec![
        (
            "orgHS256",
            "HS256",
            file_ref("orgHS256", "hs256"),
            d.join("hs256").display().to_string(),
        ),
        (
            "orgHS384",
            "HS384",
            json!({"ref": "env:WEBHOOK_SECRET_ORGHS384__KEY"}),
            d.join("hs384").display().to_string(),
        ),
        (
            "orgHS512",
            "HS512",
            sealed.clone(),
            d.join("hs512").display().to_string(),
        ),
        (
            "orgRS256",
            "RS256",
            file_ref("orgRS256", "rsa.pem"),
            d.join("rsa.pub").display().to_string(),
        ),
        (
            "orgES256",
            "ES256",
            file_ref("orgES256", "ec.pem"),
            d.join("ec.pub").display().to_string(),
        ),
    ];
    // Signing during a rotation: one sealed secret and one from a file.
    let whsec_a = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    );
    let whsec_b = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 24]>())
    );
    std::fs::write(d.join("whsec_a"), &whsec_a).unwrap();
    std::fs::write(d.join("whsec_b"), &whsec_b).unwrap();
    let (ok, sealed_a, err) = cli(
        &env,
        &[
            "secret",
            "seal",
            "--file",
            d.join("whsec_a").to_str().unwrap(),
            "--record",
            &format!("webhook/orgSigned/{SANDBOX}"),
        ],
    );
    assert!(ok, "{err}");
    let sealed_a: Value = serde_json::from_str(&sealed_a).unwrap();

    let p = Producer::new();
    let url = receiver.url("/hook");
    let mut publish = Vec::new();
    for (org, alg, key, _) in &tenants {
        let mut hook = webhook(org, SANDBOX, &url);
        hook["authentication"] = json!({"type": "jwt", "algorithm": alg, "key": key, "issuer": "feedback-webhooks",
            "subject": org, "audience": "https://hooks.example.com", "expiresInSeconds": 120,
            "claims": {"tenant": org}});
        publish.push((org.to_string(), hook));
    }
    let mut signed = webhook("orgSigned", SANDBOX, &url);
    signed["signing"] = json!({"secrets": [sealed_a, file_ref("orgSigned", "whsec_b")]});
    publish.push(("orgSigned".into(), signed));
    for (org, hook) in &publish {
        // Published with the CLI, which validates exactly as the processor does.
        let file = d.join(format!("{org}.json"));
        std::fs::write(&file, serde_json::to_vec(hook).unwrap()).unwrap();
        let (ok, _, err) = cli(&env, &["config", "put", "--file", file.to_str().unwrap()]);
        assert!(ok, "{org}: {err}");
        p.send_json(
            &topics.config,
            Some(&campaign_key(org, SANDBOX, CAMPAIGN)),
            &campaign(org, SANDBOX, CAMPAIGN, true),
        )
        .await;
    }
    let processor = Processor::start(&env, d.join("processor.log"));
    for (org, _) in &publish {
        let mut event = spec_event(&format!("evt-{org}"));
        event["imsOrg"] = json!(org);
        p.send_json(&topics.input, None, &event).await;
    }
    let requests = receiver.wait_for(publish.len()).await;
    let by_org: HashMap<String, _> = requests
        .iter()
        .map(|r| {
            (
                r.header("webhook-id")
                    .unwrap()
                    .trim_start_matches("evt-")
                    .to_owned(),
                r.clone(),
            )
        })
        .collect();

    let mut jwt_cases = Vec::new();
    for (org, alg, _, verify_key) in &tenants {
        let r = &by_org[*org];
        let token = r
            .header("authorization")
            .unwrap()
            .strip_prefix("Bearer ")
            .unwrap()
            .to_owned();
        assert!(r.header("webhook-signature").is_none());
        jwt_cases.push(json!({"alg": alg, "token": token, "verify_key": verify_key, "aud": "https://hooks.example.com",
            "iss": "feedback-webhooks", "sub": org, "tenant": org, "lifetime": 120}));
    }
    let s = &by_org["orgSigned"];
    assert!(s.header("authorization").is_none());
    let headers: serde_json::Map<String, Value> = s
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.clone())))
        .collect();
    let signature_cases = vec![json!({"body": String::from_utf8(s.body.to_vec()).unwrap(),
        "headers": headers, "secrets": [whsec_a, whsec_b]})];
    let cases = d.join("cases.json");
    std::fs::write(
        &cases,
        serde_json::to_vec(&json!({"jwt": jwt_cases, "signatures": signature_cases})).unwrap(),
    )
    .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/verify.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&cases)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "independent verification failed (needs: pip install 'pyjwt[crypto]' standardwebhooks):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every outcome delivered; no secret, token or signature anywhere the processor wrote.
    let mut outcomes = Reader::new(&topics.outcomes);
    outcomes.wait_for(publish.len());
    for o in &outcomes.records {
        assert_eq!(o["status"], "delivered", "{o}");
    }
    let mut secrets = vec![hs256, hs384, hs512, whsec_a.clone(), whsec_b.clone()];
    secrets.push(whsec_a.trim_start_matches("whsec_").to_owned());
    for r in &requests {
        for name in ["authorization", "webhook-signature"] {
            if let Some(v) = r.header(name) {
                secrets.extend(v.split(' ').filter(|p| p.len() > 20).map(str::to_owned));
            }
        }
    }
    let pem = std::fs::read_to_string(d.join("rsa.pem")).unwrap();
    secrets.extend(
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::to_owned),
    );
    let written = format!(
        "{}\n{}",
        std::fs::read_to_string(&processor.log).unwrap(),
        serde_json::to_string(&outcomes.records).unwrap()
    );
    for secret in &secrets {
        assert!(
            !written.contains(secret.as_str()),
            "a secret value appears in the processor's log or outcomes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plaintext_secrets_and_bad_headers_are_refused_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::create("refusals").await;
    let env = env_for(
        &topics,
        &dir.path().join("store"),
        &dir.path().join("ca.pem"),
    );
    let file = dir.path().join("hook.json");
    let put = |hook: &Value| {
        std::fs::write(&file, serde_json::to_vec(hook).unwrap()).unwrap();
        cli(&env, &["config", "put", "--file", file.to_str().unwrap()])
    };
    let mut hook = webhook(ORG, SANDBOX, "https://hooks.example.com/x");
    hook["signing"] = json!({"secret": "whsec_PLAINTEXTPLAINTEXTPLAINTEXT"});
    let (ok, _, err) = put(&hook);
    assert!(!ok);
    assert!(err.contains("/signing"), "{err}");
    assert!(
        !err.contains("PLAINTEXT"),
        "the refusal must not echo the secret: {err}"
    );

    let mut hook = webhook(ORG, SANDBOX, "https://hooks.example.com/x");
    hook["authentication"] = json!({"type": "jwt", "algorithm": "HS256", "key": "s3cr3t-VALUE",
        "issuer": "i", "subject": "s", "audience": "a", "expiresInSeconds": 300});
    let (ok, _, err) = put(&hook);
    assert!(!ok);
    assert!(err.contains("/authentication"), "{err}");
    assert!(!err.contains("s3cr3t-VALUE"), "{err}");

    for (name, value) in [("Webhook-Signature", "x"), ("X-Ok", "a\r\nInjected: yes")] {
        let mut hook = webhook(ORG, SANDBOX, "https://hooks.example.com/x");
        hook["headers"] = json!({ name: value });
        let (ok, _, err) = put(&hook);
        assert!(!ok, "{name}");
        assert!(err.contains(&format!("/headers/{name}")), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_destination_guard_refuses_internal_addresses_and_the_allowlist_opens_exactly_its_ranges(
) {
    // The harness's environment opens exactly 127.0.0.1/32.
    let h = Harness::start("ssrf").await;
    let (topics, receiver, p) = (&h.topics, &h.receiver, &h.producer);
    let port = receiver.addr.port();
    receiver.respond(|r| {
        if r.path == "/redirect" {
            Reply {
                headers: vec![("location".into(), "https://10.0.0.1/internal".into())],
                ..Reply::status(302)
            }
        } else {
            Reply::status(200)
        }
    });
    let cases = [
        (
            "orgAllowed",
            format!("https://127.0.0.1:{port}/ok"),
            "delivered",
            Value::Null,
        ),
        (
            "orgLoopback2",
            format!("https://127.0.0.2:{port}/x"),
            "failed",
            json!("destination_blocked"),
        ),
        (
            "orgV6Loopback",
            format!("https://[::1]:{port}/x"),
            "failed",
            json!("destination_blocked"),
        ),
        (
            "orgMapped",
            format!("https://[::ffff:127.0.0.2]:{port}/x"),
            "failed",
            json!("destination_blocked"),
        ),
        (
            "orgRedirect",
            format!("https://127.0.0.1:{port}/redirect"),
            "failed",
            json!("http_status"),
        ),
    ];
    for (org, url, _, _) in &cases {
        h.configure(org, url).await;
    }
    let _processor = h.processor("processor");
    for (org, _, _, _) in &cases {
        let mut event = spec_event(&format!("evt-{org}"));
        event["imsOrg"] = json!(org);
        p.send_json(&topics.input, None, &event).await;
    }
    let mut outcomes = Reader::new(&topics.outcomes);
    outcomes.wait_for(cases.len());
    let by_id = outcomes.by_event_id();
    for (org, _, status, reason) in &cases {
        let o = &by_id[&format!("evt-{org}")];
        assert_eq!(o["status"], *status, "{org}: {o}");
        assert_eq!(o["reason"], *reason, "{org}: {o}");
        if reason == "destination_blocked" {
            let attempts = o["attempts"].as_array().unwrap();
            assert_eq!(attempts.len(), 1, "not retried: {o}");
            assert!(
                attempts[0]["error"]
                    .as_str()
                    .unwrap()
                    .contains("destination blocked"),
                "{o}"
            );
        }
    }
    // The redirect was answered but not followed.
    let paths: Vec<String> = receiver.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths.iter().filter(|p| *p == "/redirect").count(), 1);
    assert!(
        paths.iter().all(|p| p == "/ok" || p == "/redirect"),
        "{paths:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostname_resolving_to_loopback_is_refused_without_an_allowlist() {
    let mut h = Harness::start("ssrf-name").await;
    h.env.retain(|(k, _)| k != "FW_DELIVERY__ALLOW_CIDRS");
    let (topics, receiver, p) = (&h.topics, &h.receiver, &h.producer);
    h.configure(ORG, &receiver.url("/hook")).await;
    let _processor = h.processor("processor");
    p.send_json(&topics.input, None, &spec_event("to-localhost"))
        .await;
    let mut outcomes = Reader::new(&topics.outcomes);
    let o = outcomes.wait_for(1)[0].clone();
    assert_eq!(o["status"], "failed", "{o}");
    assert_eq!(o["reason"], "destination_blocked", "{o}");
    assert!(receiver.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_untrusted_certificate_fails_the_attempt_with_a_clear_error() {
    let mut h = Harness::start("untrusted").await;
    // The processor does not get the receiver's CA.
    h.env.retain(|(k, _)| k != "FW_DELIVERY__EXTRA_CA_FILE");
    h.configure(ORG, &h.receiver.url("/hook")).await;
    let _processor = h.processor("processor");
    h.producer
        .send_json(&h.topics.input, None, &spec_event("untrusted"))
        .await;
    let mut outcomes = Reader::new(&h.topics.outcomes);
    let o = outcomes.wait_for(1)[0].clone();
    assert_eq!(o["status"], "failed", "{o}");
    assert_eq!(o["reason"], "retries_exhausted", "{o}");
    for attempt in o["attempts"].as_array().unwrap() {
        let error = attempt["error"].as_str().unwrap_or_default();
        assert!(error.contains("certificate"), "{error}");
        assert_eq!(attempt["httpStatus"], Value::Null);
    }
    assert!(
        h.receiver.received().is_empty(),
        "no request completed over an untrusted connection"
    );
}

/// Secret references reach only what the deployment allows the tenant: another tenant's
/// key file, an endless device, any environment variable and another record's sealed
/// value all end the event as `config_invalid`, and nothing else is affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secret_references_are_scoped_to_their_tenant() {
    let mut h = Harness::start("secret-scope").await;
    let d = h.dir.path().to_owned();
    let key_file = d.join("config.key");
    std::fs::write(&key_file, SealingKey::generate_base64()).unwrap();
    let sealing = SealingKey::from_base64(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
    let secrets_dir = d.join("secrets");
    std::fs::create_dir_all(secrets_dir.join("orgB")).unwrap();
    let b_key = random_text(32);
    std::fs::write(secrets_dir.join("orgB/hs256"), &b_key).unwrap();
    // A variable of the processor's own environment that no secret may name.
    let private = random_text(24);
    for (k, v) in [
        (
            "FW_SECRETS__ENCRYPTION_KEY_FILE",
            key_file.display().to_string(),
        ),
        (
            "FW_SECRETS__FILE_DIRS",
            format!("[\"{}\"]", secrets_dir.display()),
        ),
        ("PRIVATE_SETTING", private.clone()),
        // orgB's own variable: another org's record may not name it.
        ("WEBHOOK_SECRET_ORGB__KEY", b_key.clone()),
    ] {
        h.env.push((k.into(), v));
    }
    let jwt = |key: Value| {
        json!({"type": "jwt", "algorithm": "HS256", "key": key, "issuer": "i",
               "subject": "s", "audience": "a", "expiresInSeconds": 300})
    };
    let b_file = secrets_dir.join("orgB/hs256").display().to_string();
    let sealed_for_b = sealing.seal(b_key.as_bytes(), &webhook_key("orgB", SANDBOX));
    let url = h.receiver.url("/hook");
    let cases = [
        (
            "orgB",
            jwt(json!({"ref": format!("file:{b_file}")})),
            "delivered",
        ),
        (
            "orgSteal",
            jwt(json!({"ref": format!("file:{b_file}")})),
            "skipped",
        ),
        ("orgZero", jwt(json!({"ref": "file:/dev/zero"})), "skipped"),
        (
            "orgOracle",
            jwt(json!({"ref": "env:PRIVATE_SETTING"})),
            "skipped",
        ),
        (
            "orgEnvSteal",
            jwt(json!({"ref": "env:WEBHOOK_SECRET_ORGB__KEY"})),
            "skipped",
        ),
        (
            "orgCopy",
            jwt(json!({"encrypted": sealed_for_b})),
            "skipped",
        ),
        ("orgPlain", json!({"type": "none"}), "delivered"),
    ];
    for (org, auth, _) in &cases {
        let mut hook = webhook(org, SANDBOX, &url);
        hook["authentication"] = auth.clone();
        let p = &h.producer;
        p.send_json(&h.topics.config, Some(&webhook_key(org, SANDBOX)), &hook)
            .await;
        p.send_json(
            &h.topics.config,
            Some(&campaign_key(org, SANDBOX, CAMPAIGN)),
            &campaign(org, SANDBOX, CAMPAIGN, true),
        )
        .await;
    }
    let mut processor = h.processor("processor");
    for (org, _, _) in &cases {
        let mut event = spec_event(&format!("evt-{org}"));
        event["imsOrg"] = json!(org);
        h.producer.send_json(&h.topics.input, None, &event).await;
    }
    let mut outcomes = Reader::new(&h.topics.outcomes);
    outcomes.wait_for(cases.len());
    let by_id = outcomes.by_event_id();
    for (org, _, status) in &cases {
        let o = &by_id[&format!("evt-{org}")];
        assert_eq!(o["status"], *status, "{org}: {o}");
        if *status == "skipped" {
            assert_eq!(o["reason"], "config_invalid", "{org}");
        }
    }
    // B's own requests carry a token signed with its key; nobody else's do.
    let requests = h.receiver.wait_for(2).await;
    assert_eq!(requests.len(), 2);
    // Still healthy and ready.
    let (status, _) = crate::observe::get(&processor.http_addr(), "/readyz").await;
    assert_eq!(status, 200);
    let log = std::fs::read_to_string(d.join("processor.log")).unwrap();
    for secret in [&b_key, &private] {
        assert!(!log.contains(secret.as_str()), "a secret value in the log");
        assert!(!serde_json::to_string(&outcomes.records)
            .unwrap()
            .contains(secret.as_str()));
    }
    for reason in [
        "outside this tenant's secret directories",
        "not one this org's secrets may name",
        "for this record",
    ] {
        assert!(log.contains(reason), "the log says why: {reason}");
    }
    assert_eq!(processor.stop().code(), Some(0));
}
