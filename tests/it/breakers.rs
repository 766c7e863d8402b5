//! Circuit breakers never cost an event its delivery: an event an open breaker refuses
//! waits for the breaker's next probe instead of using up its retry schedule, a redelivery
//! probes at once, and no event ends without a request sent for it.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use feedback_webhooks::domain::time::rfc3339_millis;
use feedback_webhooks::receiver::Reply;
use feedback_webhooks::schema::Kind;
use serde_json::Value;

use crate::support::kafka::Reader;
use crate::support::processor::cli;
use crate::support::*;

fn set(env: &mut Vec<(String, String)>, name: &str, value: &str) {
    env.retain(|(k, _)| k != name);
    env.push((name.into(), value.into()));
}

/// Whether an attempt of an outcome is a request that was sent (it has an answer, or an
/// error other than a breaker's "not sent").
fn sent(attempt: &Value) -> bool {
    !attempt["httpStatus"].is_null()
        || !attempt["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("not sent"))
}

/// Checks every outcome against its schema and that each one that made attempts made at
/// least one request; returns the outcomes by event id.
fn checked(outcomes: &[Value]) -> HashMap<String, Value> {
    let mut by_id = HashMap::new();
    for o in outcomes {
        assert_schema(Kind::Outcome, o);
        let attempts = o["attempts"].as_array().expect("attempts");
        assert!(
            attempts.iter().any(sent),
            "an outcome with no request sent: {o:#}"
        );
        by_id.insert(o["eventId"].as_str().unwrap().to_owned(), o.clone());
    }
    by_id
}

/// 2xx requests the receiver answered, per event id: each event's deliveries.
fn deliveries(h: &Harness, ok: impl Fn(&str) -> bool) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in h.receiver.received() {
        if let Some(id) = r.header("webhook-id").filter(|id| ok(id)) {
            *counts.entry(id.to_owned()).or_default() += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_receiver_recovers_a_replay_of_its_failed_outcomes_delivers_every_event() {
    let mut h = Harness::hooked("breaker-replay").await;
    // The breaker opens after 3 failures and would cool down for ten minutes, longer than
    // this test waits: only a probe at once lets the replay through. Events live 3 s.
    set(&mut h.env, "FW_DELIVERY__BREAKER_FAILURES", "3");
    set(&mut h.env, "FW_DELIVERY__BREAKER_OPEN_SECS", "600");
    set(&mut h.env, "FW_DELIVERY__BREAKER_MAX_OPEN_SECS", "600");
    set(&mut h.env, "FW_DELIVERY__RETRY_MAX_AGE_SECS", "3");
    h.receiver.respond(|_| Reply::status(503));
    let from = rfc3339_millis(SystemTime::now() - Duration::from_secs(2));
    let mut processor = h.processor("processor");
    let ids: Vec<String> = (0..20).map(|i| format!("b-{i:02}")).collect();
    for id in &ids {
        h.producer
            .send_json(&h.topics.input, Some(id), &spec_event(id))
            .await;
    }
    let mut outcomes = Reader::new(&h.topics.outcomes);
    let first = checked(outcomes.wait_for(ids.len()));
    for id in &ids {
        let o = &first[id];
        assert_eq!(
            (&o["status"], &o["reason"]),
            (&"failed".into(), &"retries_exhausted".into()),
            "{o:#}"
        );
    }

    // Fixed: the replay's first event is the breaker's probe, the rest follow it.
    h.receiver.respond(|_| Reply::status(200));
    let (ok, out, err) = cli(
        &h.env,
        &["replay", "--source", "outcomes", "--from", &from, "--yes"],
    );
    assert!(ok, "{err}{out}");
    assert!(out.contains("20 matched, 20 queued"), "{out}");
    let all = outcomes.wait_for(2 * ids.len()).to_vec();
    outcomes.poll_for(Duration::from_secs(2));
    assert_eq!(outcomes.records.len(), 2 * ids.len(), "one outcome each");
    let replayed: Vec<Value> = all.into_iter().filter(|o| !o["replay"].is_null()).collect();
    let replayed = checked(&replayed);
    for id in &ids {
        let o = &replayed[id];
        assert_eq!(o["status"], "delivered", "{o:#}");
        let attempts = o["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "no refusal is an attempt: {o:#}");
        assert_eq!(attempts[0]["httpStatus"], 200);
    }
    let delivered = deliveries(&h, |_| true);
    let replay_requests = h
        .receiver
        .received()
        .iter()
        .filter(|r| r.header("webhook-replay-id").is_some())
        .count();
    println!(
        "breaker replay: {} of {} delivered, 0 lost, {} replay requests for {} events",
        replayed.len(),
        ids.len(),
        replay_requests,
        ids.len()
    );
    assert_eq!(replay_requests, ids.len(), "each replayed event sent once");
    assert!(ids.iter().all(|id| delivered.contains_key(id)));
    assert!(processor.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_of_a_60_second_outage_is_delivered_when_the_schedule_covers_it() {
    let mut h = Harness::hooked("breaker-outage").await;
    // 5 + 10 + 20 + 40 s after the first try: 75 s, longer than the outage.
    set(
        &mut h.env,
        "FW_DELIVERY__RETRY_SCHEDULE_SECS",
        "[5, 10, 20, 40]",
    );
    set(&mut h.env, "FW_DELIVERY__RETRY_JITTER", "0");
    let mut processor = h.processor("processor");
    let started = std::time::Instant::now();
    h.receiver.go_down();
    let ids: Vec<String> = (0..70).map(|i| format!("o-{i:02}")).collect();
    for id in &ids {
        h.producer
            .send_json(&h.topics.input, Some(id), &spec_event(id))
            .await;
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(started.elapsed())).await;
    h.receiver.come_back().await;

    let mut outcomes = Reader::new(&h.topics.outcomes);
    outcomes.wait_for_within(ids.len(), Duration::from_secs(240));
    outcomes.poll_for(Duration::from_secs(2));
    let by_id = checked(&outcomes.records);
    let not_delivered: Vec<&Value> = by_id
        .values()
        .filter(|o| o["status"] != "delivered")
        .collect();
    assert!(not_delivered.is_empty(), "{not_delivered:#?}");
    let delivered = deliveries(&h, |_| true);
    let duplicates: usize = delivered.values().map(|n| n - 1).sum();
    let outcome_duplicates = outcomes.records.len() - by_id.len();
    println!(
        "60 s outage: {} of {} delivered, 0 lost, {duplicates} duplicate deliveries, \
         {outcome_duplicates} duplicate outcomes, 0 exits",
        by_id.len(),
        ids.len()
    );
    assert_eq!(by_id.len(), ids.len());
    assert!(ids.iter().all(|id| delivered.contains_key(id)));
    assert_eq!(outcome_duplicates, 0);
    assert!(processor.exited().is_none(), "the processor exited");
    assert!(processor.stop().success());
}
