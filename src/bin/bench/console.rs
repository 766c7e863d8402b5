//! The admin console's figures: page weight and time to first render of the inventory with
//! 1,000 webhooks of one org (each with outcomes in the delivery log, so that every row
//! shows its last delivery and 24 h failure rate), measured in headless Chromium by the
//! browser's own Navigation and Paint Timing.
//!
//! Run it with `scripts/bench --console` (see BENCHMARKS.md).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use feedback_webhooks::admin::tokens;
use feedback_webhooks::domain::time::unix_ms;
use rdkafka::producer::FutureProducer;
use serde_json::json;

use super::admin::{outcome, plain_client, start_admin};
use super::{client, create_topics, delete_topics, send};

/// Webhooks of the org.
const WEBHOOKS: usize = 1_000;
/// Outcomes of each webhook in the delivery log (the last 10 hours).
const OUTCOMES_EACH: usize = 10;
const ORG: &str = "bench-org";

pub async fn run(bin: &Path, bootstrap: &str) {
    let topics = create_topics(bootstrap, "console").await;
    let producer: FutureProducer = client(bootstrap)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let now = unix_ms(SystemTime::now());
    let mut n = 0;
    for w in 0..WEBHOOKS {
        let sandbox = format!("sb-{w:04}");
        let webhook = json!({ "kind": "webhook", "imsOrg": ORG,
            "sandbox": { "id": sandbox, "name": format!("sandbox {w}") },
            "name": format!("Order feedback {w}"), "channels": ["email", "sms"],
            "url": format!("https://hooks-{w}.example.com/ajo/feedback"), "enabled": w % 10 != 3,
            "authentication": if w % 2 == 0 { json!({ "type": "none" }) } else {
                json!({ "type": "jwt", "algorithm": "HS256", "key": { "ref": "env:BENCH_KEY" },
                    "issuer": "ajo", "subject": "feedback", "audience": "partner", "expiresInSeconds": 300 }) },
            "headers": { "X-Partner-Id": format!("partner-{w}") },
            "updatedAt": "2026-11-30T09:00:00Z" });
        let key = format!("webhook/{ORG}/{sandbox}");
        let bytes = serde_json::to_vec(&webhook).unwrap_or_default();
        send(&producer, &topics.config, &key, &bytes).await;
        for k in 0..OUTCOMES_EACH {
            let at = now - (k as u64) * 3_600_000;
            let value = outcome(n, n * 7 + k, ORG, &sandbox, at);
            let id = format!("evt-{n}");
            send(&producer, &topics.outcomes, &id, &value).await;
            n += 1;
        }
    }
    let dir = tempfile::tempdir().expect("scratch folder");
    let (token, hash) = tokens::generate().expect("token");
    let api = start_admin(bin, &topics, dir.path(), &hash);
    // Ready once the cache holds every webhook and the log the last webhook's outcomes.
    let http = plain_client();
    let last = format!(
        "{}/api/v1/orgs/{ORG}/sandboxes/sb-{:04}/webhook/deliveries?limit=50",
        api.base,
        WEBHOOKS - 1
    );
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let got = http.get(&last).bearer_auth(&token).send().await;
        let count = match got {
            Ok(r) if r.status().is_success() => r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v["items"].as_array().map(Vec::len))
                .unwrap_or(0),
            _ => 0,
        };
        if count == OUTCOMES_EACH {
            break;
        }
        assert!(Instant::now() < until, "the admin API never caught up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "admin console: inventory of {WEBHOOKS} webhooks of one org, {} outcomes in the delivery log; headless Chromium, 20 loads each",
        WEBHOOKS * OUTCOMES_EACH
    );
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/bin/bench/console_timing.py"
        ))
        .args([api.base.as_str(), token.as_str(), ORG])
        .output()
        .expect("python3 with selenium (scripts/test installs it)");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "console timing failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(api);
    delete_topics(bootstrap, &topics).await;
}
