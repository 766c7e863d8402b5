//! Durable, non-blocking retries: Retry-After, timeouts, restarts, config edits between
//! attempts, and isolation between endpoints.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use feedback_webhooks::receiver::Reply;
use serde_json::{json, Value};

use crate::support::kafka::Reader;
use crate::support::processor::Processor;
use crate::support::receiver::TestReceiver;
use crate::support::*;

fn set(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.retain(|(k, _)| k != key);
    env.push((key.into(), value.into()));
}

/// Answers `first` to the first request, 200 afterwards.
fn first_then_ok(receiver: &TestReceiver, first: Reply) {
    let calls = Arc::new(AtomicUsize::new(0));
    receiver.respond(move |_| {
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            first.clone()
        } else {
            Reply::status(200)
        }
    });
}

fn statuses(outcome: &Value) -> Vec<Value> {
    outcome["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["httpStatus"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_after_is_honoured() {
    let h = Harness::hooked("retry-after").await;
    let (dir, topics, receiver, p) = (&h.dir, &h.topics, &h.receiver, &h.producer);
    let env = h.env.clone();
    first_then_ok(
        receiver,
        Reply {
            headers: vec![("retry-after".into(), "2".into())],
            ..Reply::status(429)
        },
    );
    let _processor = Processor::start(&env, dir.path().join("processor.log"));
    p.send_json(&topics.input, None, &spec_event("rate-limited"))
        .await;

    let requests = receiver.wait_for(2).await;
    let gap = requests[1].at.duration_since(requests[0].at).unwrap();
    assert!(
        gap >= Duration::from_secs(2),
        "retried after {gap:?}, before Retry-After"
    );
    let mut outcomes = Reader::new(&topics.outcomes);
    let outcome = outcomes.wait_for(1)[0].clone();
    assert_eq!(outcome["status"], "delivered");
    assert_eq!(statuses(&outcome), [json!(429), json!(200)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_that_hangs_past_the_timeout_is_retried() {
    let h = Harness::start("timeout").await;
    let (dir, topics, receiver, p) = (&h.dir, &h.topics, &h.receiver, &h.producer);
    let mut env = h.env.clone();
    set(&mut env, "FW_DELIVERY__REQUEST_TIMEOUT_MS", "500");
    h.configure(ORG, &receiver.url("/hook")).await;
    first_then_ok(
        receiver,
        Reply {
            delay: Some(Duration::from_secs(5)),
            ..Reply::status(200)
        },
    );
    let _processor = Processor::start(&env, dir.path().join("processor.log"));
    p.send_json(&topics.input, None, &spec_event("slow")).await;

    let mut outcomes = Reader::new(&topics.outcomes);
    let outcome = outcomes.wait_for(1)[0].clone();
    assert_eq!(outcome["status"], "delivered", "{outcome}");
    let attempts = outcome["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["httpStatus"], Value::Null);
    let error = attempts[0]["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("timeout"), "{error}");
    assert!(attempts[0]["durationMs"].as_u64().unwrap() < 3000);
    assert_eq!(attempts[1]["httpStatus"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pending_retry_survives_a_restart() {
    let h = Harness::start("pending").await;
    let (dir, topics, receiver, p) = (&h.dir, &h.topics, &h.receiver, &h.producer);
    let mut env = h.env.clone();
    set(&mut env, "FW_DELIVERY__RETRY_SCHEDULE_SECS", "[4]");
    set(&mut env, "FW_DELIVERY__RETRY_JITTER", "0");
    h.configure(ORG, &receiver.url("/hook")).await;
    first_then_ok(receiver, Reply::status(503));
    let mut first = Processor::start(&env, dir.path().join("first.log"));
    p.send_json(&topics.input, None, &spec_event("pending"))
        .await;
    receiver.wait_for(1).await;
    // The event is parked for 4 s; the processor goes away before it is due.
    assert!(first.stop().success());
    let stopped_at = Instant::now();
    assert_eq!(receiver.received().len(), 1);

    let _second = Processor::start(&env, dir.path().join("second.log"));
    let requests = receiver.wait_for(2).await;
    assert!(stopped_at.elapsed() < Duration::from_secs(30));
    assert_eq!(requests[1].header("webhook-id"), Some("pending"));
    let mut outcomes = Reader::new(&topics.outcomes);
    let outcome = outcomes.wait_for(1)[0].clone();
    outcomes.poll_for(Duration::from_secs(1));
    assert_eq!(outcomes.records.len(), 1, "one outcome for the event");
    assert_eq!(outcome["status"], "delivered");
    assert_eq!(statuses(&outcome), [json!(503), json!(200)]);
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_config_edit_changes_the_url_of_a_pending_retry() {
    let h = Harness::start("edit-retry").await;
    let (dir, topics, receiver, p) = (&h.dir, &h.topics, &h.receiver, &h.producer);
    let mut env = h.env.clone();
    set(&mut env, "FW_DELIVERY__RETRY_SCHEDULE_SECS", "[3]");
    set(&mut env, "FW_DELIVERY__RETRY_JITTER", "0");
    h.configure(ORG, &receiver.url("/v1")).await;
    receiver.respond(|r| Reply::status(if r.path == "/v1" { 503 } else { 200 }));
    let mut processor = Processor::start(&env, dir.path().join("processor.log"));
    p.send_json(&topics.input, None, &spec_event("moving"))
        .await;
    receiver.wait_for(1).await;
    let applied = processor.messages("config record applied").len();
    p.send_json(
        &topics.config,
        Some(&webhook_key(ORG, SANDBOX)),
        &webhook(ORG, SANDBOX, &receiver.url("/v2")),
    )
    .await;
    processor.wait_log("config record applied", applied + 1);

    let requests = receiver.wait_for(2).await;
    assert_eq!(requests[0].path, "/v1");
    assert_eq!(requests[1].path, "/v2");
    let mut outcomes = Reader::new(&topics.outcomes);
    let outcome = outcomes.wait_for(1)[0].clone();
    assert_eq!(outcome["status"], "delivered");
    assert_eq!(outcome["webhook"]["url"], receiver.url("/v2"));
    assert_eq!(statuses(&outcome), [json!(503), json!(200)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_endpoint_does_not_hold_back_another_tenant() {
    const EACH: usize = 300;
    let mut h = Harness::start("isolation").await;
    let dead = TestReceiver::start(&h.dir.path().join("dead").tap_mkdir()).await;
    // One CA file for both: the processor trusts the dead and the healthy receiver.
    let ca = h.dir.path().join("both-ca.pem");
    let pems = [&dead.ca_file, &h.receiver.ca_file].map(|f| std::fs::read_to_string(f).unwrap());
    std::fs::write(&ca, pems.concat()).unwrap();
    set(
        &mut h.env,
        "FW_DELIVERY__EXTRA_CA_FILE",
        ca.to_str().unwrap(),
    );
    set(&mut h.env, "FW_DELIVERY__REQUEST_TIMEOUT_MS", "5000");
    set(&mut h.env, "FW_DELIVERY__RETRY_SCHEDULE_SECS", "[30]");
    set(&mut h.env, "FW_DELIVERY__HOST_CONCURRENCY_MAX", "8");
    set(&mut h.env, "FW_DELIVERY__MAX_IN_FLIGHT", "64");
    // The dead endpoint hangs on every request.
    dead.respond(|_| Reply {
        delay: Some(Duration::from_secs(60)),
        ..Reply::status(200)
    });
    let (topics, p, healthy) = (&h.topics, &h.producer, &h.receiver);
    h.configure("orgDead", &dead.url("/hook")).await;
    h.configure("orgLive", &healthy.url("/hook")).await;
    let _processor = h.processor("processor");

    // The dead tenant's events go first, then the live tenant's, interleaved after.
    let event = |org: &str, i: usize| {
        let mut e = spec_event(&format!("{org}-{i}"));
        e["imsOrg"] = json!(org);
        e
    };
    for i in 0..EACH {
        p.send_json(&topics.input, None, &event("orgDead", i)).await;
    }
    let started = Instant::now();
    for i in 0..EACH {
        p.send_json(&topics.input, None, &event("orgLive", i)).await;
    }
    let live = healthy.wait_for(EACH).await;
    let took = started.elapsed();
    // Generous bound: if the dead endpoint could hold the 64 workers, the live tenant would
    // wait at least one 5 s timeout; isolated, its 300 deliveries take well under a second.
    assert!(took < Duration::from_secs(4), "live tenant took {took:?}");
    assert_eq!(live.len(), EACH);
    let mut outcomes = Reader::new(&topics.outcomes);
    outcomes.wait_for(EACH);
    let by_id = outcomes.by_event_id();
    for i in 0..EACH {
        assert_eq!(by_id[&format!("orgLive-{i}")]["status"], "delivered");
    }
    // The dead endpoint never had more than its limit of requests at once.
    assert!(
        dead.received().len() <= 8 + 8,
        "dead endpoint got {} requests",
        dead.received().len()
    );
}

trait MkDir {
    fn tap_mkdir(self) -> Self;
}

impl MkDir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_the_webhook_ends_a_pending_retry_as_skipped() {
    let h = Harness::start("delete-retry").await;
    let (dir, topics, receiver, p) = (&h.dir, &h.topics, &h.receiver, &h.producer);
    let mut env = h.env.clone();
    set(&mut env, "FW_DELIVERY__RETRY_SCHEDULE_SECS", "[3]");
    set(&mut env, "FW_DELIVERY__RETRY_JITTER", "0");
    h.configure(ORG, &receiver.url("/hook")).await;
    receiver.respond(|_| Reply::status(503));
    let mut processor = Processor::start(&env, dir.path().join("processor.log"));
    p.send_json(&topics.input, None, &spec_event("orphaned"))
        .await;
    receiver.wait_for(1).await;
    let applied = processor.messages("config record applied").len();
    p.tombstone(&topics.config, &webhook_key(ORG, SANDBOX))
        .await;
    processor.wait_log("config record applied", applied + 1);

    let mut outcomes = Reader::new(&topics.outcomes);
    let outcome = outcomes.wait_for(1)[0].clone();
    assert_eq!(outcome["status"], "skipped");
    assert_eq!(outcome["reason"], "no_webhook");
    assert_eq!(
        statuses(&outcome),
        [json!(503)],
        "the attempt made is listed"
    );
    assert_eq!(receiver.received().len(), 1, "no request after the delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_at_the_size_limit_can_be_parked_and_retried() {
    let h = Harness::hooked("retry-large").await;
    first_then_ok(&h.receiver, Reply::status(503));
    let _processor = h.processor("processor");
    // Just under the default max_event_bytes (1 MiB): its parked record is larger than the
    // producer's and the broker's default record limit (about 1 MB).
    let mut event = spec_event("large");
    let padding = 1_040_000 - serde_json::to_vec(&event).unwrap().len();
    event["identityMap"]["padding"] = json!([{ "id": "x".repeat(padding) }]);
    let size = serde_json::to_vec(&event).unwrap().len();
    assert!((1_030_000..1 << 20).contains(&size), "{size}");
    h.producer.send_json(&h.topics.input, None, &event).await;

    let mut outcomes = Reader::new(&h.topics.outcomes);
    let outcome = outcomes.wait_for(1)[0].clone();
    assert_eq!(outcome["status"], "delivered", "{outcome}");
    assert_eq!(statuses(&outcome), [json!(503), json!(200)]);
}
