//! Notifications on the real broker, binary and receivers: an org's operational events
//! reach its notification endpoint as Standard Webhooks requests (verified with the
//! `standardwebhooks` library), and a failing endpoint slows no feedback delivery.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use feedback_webhooks::receiver::{Received, Reply};
use serde_json::{json, Value};

use crate::support::kafka::Reader;
use crate::support::*;

/// The environment variable the processor reads `org`'s notification signing secret from.
fn secret_variable(org: &str) -> String {
    format!(
        "WEBHOOK_SECRET_{}__NOTIFY",
        feedback_webhooks::domain::secret::env_org(org)
    )
}

/// Publishes `org`'s notification endpoint at the harness receiver's `path`, signed with
/// a fresh secret the processor reads from its environment; returns the secret.
pub async fn publish_endpoint(h: &mut Harness, org: &str, path: &str) -> String {
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    );
    let variable = secret_variable(org);
    h.env.retain(|(k, _)| *k != variable);
    h.env.push((variable.clone(), secret.clone()));
    let record = json!({
        "kind": "notification", "imsOrg": org, "name": "Ops alerts",
        "url": h.receiver.url(path), "enabled": true,
        "authentication": {"type": "none"},
        "headers": {"X-Team": "ops"},
        "signing": {"secret": {"ref": format!("env:{variable}")}},
        "updatedAt": "2026-12-08T00:00:00Z"
    });
    h.producer
        .send_json(
            &h.topics.config,
            Some(&format!("notification/{org}")),
            &record,
        )
        .await;
    secret
}

/// Checks each notification's signature with the `standardwebhooks` library (and its
/// envelope), failing the test on the first that does not verify.
pub fn verify(notifications: &[Received], secret: &str, dir: &std::path::Path) {
    let mut cases = Vec::new();
    for n in notifications {
        let body: Value = serde_json::from_slice(&n.body).expect("a notification is JSON");
        assert_eq!(body["type"], body["data"]["type"], "{body:#}");
        assert_eq!(body["timestamp"], body["data"]["occurredAt"], "{body:#}");
        assert_eq!(n.header("webhook-id"), body["data"]["id"].as_str());
        assert_eq!(n.header("x-team"), Some("ops"));
        assert_schema(
            feedback_webhooks::schema::Kind::OperationalEvent,
            &body["data"],
        );
        let headers: HashMap<&str, &str> = ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .into_iter()
            .map(|name| (name, n.header(name).expect("Standard Webhooks header")))
            .collect();
        cases.push(json!({
            "body": String::from_utf8(n.body.to_vec()).unwrap(),
            "headers": headers,
            "secrets": [secret],
        }));
    }
    let file = dir.join("notifications.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&json!({"jwt": [], "signatures": cases})).unwrap(),
    )
    .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/verify.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&file)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "standardwebhooks verification failed (needs: pip install standardwebhooks):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The ids of the notifications received, each once, and how many came twice.
pub fn notified_ids(notifications: &[Received]) -> (HashSet<String>, usize) {
    let mut ids = HashSet::new();
    let mut again = 0;
    for n in notifications {
        if !ids.insert(n.header("webhook-id").unwrap_or_default().to_owned()) {
            again += 1;
        }
    }
    (ids, again)
}

/// Waits until every operational event of `events` has reached `path` (each at least once).
pub async fn wait_notified(h: &Harness, path: &str, events: &[Value]) -> Vec<Received> {
    let want: HashSet<String> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let until = Instant::now() + PATIENCE;
    loop {
        let got = h.receiver.received_on(path);
        let (ids, _) = notified_ids(&got);
        let missing: Vec<&String> = want.difference(&ids).collect();
        if missing.is_empty() {
            return got;
        }
        assert!(
            Instant::now() < until,
            "not notified: {missing:?} of {} events ({} notifications)",
            want.len(),
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const SANDBOX2: &str = "7d0e9a41-0000-4000-8000-00000000f41d";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_notification_endpoint_slows_no_feedback_delivery() {
    let (mut h, topic) = crate::health::harness("notify-failing", 0).await;
    // The failing webhook's events end after their tries (no breaker parks them).
    h.env
        .push(("FW_DELIVERY__BREAKER_FAILURES".into(), "1000".into()));
    // The org's notification endpoint answers 503 after 3 s, every time; its second
    // sandbox's webhook fails (so there is plenty to notify); its first is healthy.
    h.receiver.respond(|r| match r.path.as_str() {
        "/ops" => Reply {
            delay: Some(Duration::from_secs(3)),
            ..Reply::status(503)
        },
        "/failing" => Reply::status(503),
        _ => Reply::status(200),
    });
    h.producer
        .send_json(
            &h.topics.config,
            Some(&webhook_key(ORG, SANDBOX2)),
            &webhook(ORG, SANDBOX2, &h.receiver.url("/failing")),
        )
        .await;
    h.producer
        .send_json(
            &h.topics.config,
            Some(&campaign_key(ORG, SANDBOX2, CAMPAIGN)),
            &campaign(ORG, SANDBOX2, CAMPAIGN, true),
        )
        .await;
    publish_endpoint(&mut h, ORG, "/ops").await;
    let mut processor = h.processor("processor");
    let event = |id: &str, sandbox: &str| {
        let mut e = spec_event(id);
        e["sandbox"]["id"] = json!(sandbox);
        e
    };
    // The failing webhook's events: failing, then exhausted windows to notify.
    for i in 0..20 {
        let id = format!("bad-{i}");
        h.producer
            .send_json(&h.topics.input, Some(&id), &event(&id, SANDBOX2))
            .await;
    }
    let mut events = Reader::operational(&topic);
    let until = Instant::now() + PATIENCE;
    while h.receiver.received_on("/ops").is_empty() {
        assert!(
            Instant::now() < until,
            "no notification sent: {:#?}",
            events.records
        );
        events.poll_for(Duration::from_millis(200));
    }
    // While the endpoint fails (and the failing webhook goes on failing), the healthy
    // webhook's events, paced over 9 s.
    let healthy = 300;
    let mut bad = 20;
    for i in 0..healthy {
        let id = format!("good-{i}");
        h.producer
            .send_json(&h.topics.input, Some(&id), &event(&id, SANDBOX))
            .await;
        if i % 10 == 0 {
            let id = format!("bad-{bad}");
            h.producer
                .send_json(&h.topics.input, Some(&id), &event(&id, SANDBOX2))
                .await;
            bad += 1;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut outcomes = Reader::new(&h.topics.outcomes);
    outcomes.wait_for(bad + healthy);
    let by_id = outcomes.by_event_id();
    let good: Vec<&Value> = by_id
        .iter()
        .filter(|(id, _)| id.starts_with("good-"))
        .map(|(_, o)| o)
        .collect();
    assert_eq!(good.len(), healthy);
    let mut slowest = 0u64;
    for o in &good {
        assert_eq!(o["status"], "delivered", "{o:#}");
        let attempts = o["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{o:#}");
        slowest = slowest.max(attempts[0]["durationMs"].as_u64().unwrap());
    }
    // The endpoint was failing the whole time: not one notification got through.
    let ops = h.receiver.received_on("/ops");
    events.poll_for(Duration::from_secs(1));
    let hooked = h.receiver.received_on("/hook");
    let duplicates = hooked.len() - healthy;
    println!(
        "failing notification endpoint: {} requests to it (each 503 after 3 s), {} operational events; healthy webhook: {healthy}/{healthy} delivered, one attempt each, slowest request {slowest} ms, {duplicates} duplicate deliveries, {} duplicate outcomes, 0 exits",
        ops.len(),
        events.records.len(),
        outcomes.records.len() - by_id.len()
    );
    assert_eq!(duplicates, 0);
    assert_eq!(outcomes.records.len(), by_id.len(), "an outcome twice");
    assert!(!ops.is_empty());
    assert!(processor.exited().is_none(), "the processor exited");
    assert!(processor.stop().success());
}
