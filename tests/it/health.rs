//! Webhook health on the real broker, binary and receivers: what a failing receiver's
//! owner is told (operational events, exactly once to a `read_committed` reader), when the
//! webhook is disabled for it, and that a receiver that sometimes succeeds never is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use feedback_webhooks::receiver::Reply;
use serde_json::Value;

use crate::support::kafka::Reader;
use crate::support::processor::cli;
use crate::support::*;

fn set(env: &mut Vec<(String, String)>, name: &str, value: &str) {
    env.retain(|(k, _)| k != name);
    env.push((name.into(), value.into()));
}

/// A harness whose processor tracks health with a short period: disabled after
/// `disable_secs` of failures, failed events announced every 2 s.
pub(crate) async fn harness(name: &str, disable_secs: u64) -> (Harness, String) {
    let mut h = Harness::hooked(name).await;
    let events = format!("{}-operational", h.topics.input);
    set(&mut h.env, "FW_HEALTH__EVENTS_TOPIC", &events);
    set(&mut h.env, "FW_HEALTH__PARTITIONS", "2");
    set(
        &mut h.env,
        "FW_HEALTH__DISABLE_AFTER_SECS",
        &disable_secs.to_string(),
    );
    set(&mut h.env, "FW_HEALTH__EXHAUSTED_WINDOW_SECS", "2");
    set(&mut h.env, "FW_HEALTH__TICK_MS", "200");
    (h, events)
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// The webhook record of `ORG` in the config topic (by the CLI).
fn webhook_record(h: &Harness) -> Value {
    let (ok, out, err) = cli(
        &h.env,
        &["config", "get", "--org", ORG, "--sandbox", SANDBOX],
    );
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// Reads operational events until `done` holds for them, or fails after `patience`.
fn wait_until(reader: &mut Reader, patience: Duration, done: impl Fn(&[Value]) -> bool) {
    let until = Instant::now() + patience;
    while !done(&reader.records) {
        assert!(
            Instant::now() < until,
            "operational events so far: {:#?}",
            reader.records
        );
        reader.poll_for(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_failing_every_request_is_announced_once_then_disabled_after_the_period() {
    let (mut h, topic) = harness("health-failing", 8).await;
    // Every event uses up its three tries (no breaker parks them) until the disable.
    set(&mut h.env, "FW_DELIVERY__BREAKER_FAILURES", "1000");
    // The webhook fails every request; the org's notification endpoint works.
    h.receiver
        .respond(|r| Reply::status(if r.path == "/ops" { 200 } else { 503 }));
    let secret = crate::notify::publish_endpoint(&mut h, ORG, "/ops").await;
    let mut processor = h.processor("processor");
    let started = Instant::now();
    // Five events at once, then one every half second: its requests keep failing.
    let mut sent = 0;
    for _ in 0..5 {
        let id = format!("h-{sent}");
        h.producer
            .send_json(&h.topics.input, Some(&id), &spec_event(&id))
            .await;
        sent += 1;
    }
    let mut events = Reader::operational(&topic);
    while of_type(&events.records, "webhook.disabled").is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never disabled: {:#?}",
            events.records
        );
        let id = format!("h-{sent}");
        h.producer
            .send_json(&h.topics.input, Some(&id), &spec_event(&id))
            .await;
        sent += 1;
        events.poll_for(Duration::from_millis(500));
    }
    let disabled_after = started.elapsed();
    // Anything more would have come by now.
    events.poll_for(Duration::from_secs(3));
    let all = &events.records;
    let failing = of_type(all, "webhook.failing");
    assert_eq!(failing.len(), 1, "{all:#?}");
    assert_eq!(failing[0]["state"], "failing");
    assert_eq!(failing[0]["lastError"]["httpStatus"], 503);
    assert_eq!(failing[0]["imsOrg"], ORG);
    let disabled = of_type(all, "webhook.disabled");
    assert_eq!(disabled.len(), 1, "{all:#?}");
    assert_eq!(disabled[0]["by"], "health");
    assert_eq!(disabled[0]["state"], "disabled");
    assert!(!disabled[0]["since"].is_null());
    assert!(
        disabled_after >= Duration::from_secs(8),
        "disabled after {disabled_after:?}, before its period"
    );
    // Failed events are announced together, not one by one.
    let exhausted = of_type(all, "event.exhausted");
    let counted: u64 = exhausted
        .iter()
        .map(|e| e["exhausted"]["count"].as_u64().unwrap())
        .sum();
    assert!(
        !exhausted.is_empty() && (exhausted.len() as u64) < counted,
        "{all:#?}"
    );
    assert!(
        counted >= 5 && counted <= sent,
        "{counted} of {sent}: {all:#?}"
    );
    let ids: std::collections::HashSet<&str> =
        all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), all.len(), "an event written twice: {all:#?}");
    assert!(of_type(all, "webhook.recovered").is_empty());
    // The record says so, and who did it.
    let record = webhook_record(&h);
    assert_eq!(record["enabled"], false, "{record:#}");
    assert_eq!(record["updatedBy"], "health");
    // The owner was told each, once, signed.
    let notified = crate::notify::wait_notified(&h, "/ops", all).await;
    let (ids_notified, again) = crate::notify::notified_ids(&notified);
    crate::notify::verify(&notified, &secret, h.dir.path());
    assert_eq!(ids_notified, ids.iter().map(|s| s.to_string()).collect());
    println!(
        "failing receiver: disabled after {:.1} s (period 8 s); {} operational events: {} failing, {} exhausted ({counted} events), {} disabled, 0 duplicates, 0 exits; notification endpoint: {} requests, each signature verified by standardwebhooks, {again} duplicates",
        disabled_after.as_secs_f64(),
        all.len(),
        failing.len(),
        exhausted.len(),
        disabled.len(),
        notified.len()
    );
    assert_eq!(again, 0, "a notification sent twice");
    assert!(processor.exited().is_none(), "the processor exited");
    assert!(processor.stop().success());
    crate::support::processor::keep_logs(h.dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_failing_nine_requests_in_ten_is_never_disabled() {
    let (mut h, topic) = harness("health-flaky", 4).await;
    // Its breaker stays closed: this is about health, and reordered answers could make
    // ten failures in a row.
    set(&mut h.env, "FW_DELIVERY__BREAKER_FAILURES", "1000");
    let requests = Arc::new(AtomicUsize::new(0));
    {
        let requests = requests.clone();
        h.receiver.respond(move |_| {
            let n = requests.fetch_add(1, Ordering::SeqCst);
            Reply::status(if n % 10 == 9 { 200 } else { 503 })
        });
    }
    let mut processor = h.processor("processor");
    // Three times the period of steady traffic.
    let until = Instant::now() + Duration::from_secs(12);
    let mut sent = 0;
    while Instant::now() < until {
        let id = format!("f-{sent}");
        h.producer
            .send_json(&h.topics.input, Some(&id), &spec_event(&id))
            .await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut events = Reader::operational(&topic);
    events.poll_for(Duration::from_secs(3));
    let all = &events.records;
    let counts: HashMap<&str, usize> = all.iter().fold(HashMap::new(), |mut m, e| {
        *m.entry(e["type"].as_str().unwrap()).or_default() += 1;
        m
    });
    println!(
        "90% failing receiver: {sent} events, {} requests, operational events {counts:?}",
        requests.load(Ordering::SeqCst)
    );
    assert!(of_type(all, "webhook.disabled").is_empty(), "{all:#?}");
    assert_eq!(
        of_type(all, "webhook.failing").len(),
        1,
        "hourly at most: {all:#?}"
    );
    assert!(of_type(all, "webhook.recovered").len() <= 1, "{all:#?}");
    let record = webhook_record(&h);
    assert_ne!(record["enabled"], false, "{record:#}");
    assert!(processor.exited().is_none(), "the processor exited");
    assert!(processor.stop().success());
}

/// The environment of a second instance: its own cache.
fn instance(h: &Harness, name: &str) -> Vec<(String, String)> {
    let mut env = h.env.clone();
    let store = h.dir.path().join(format!("store-{name}"));
    set(&mut env, "FW_STORE__PATH", &store.display().to_string());
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_operational_event_is_written_once_across_a_rebalance_and_a_kill_9() {
    let (mut h, topic) = harness("health-faults", 12).await;
    set(&mut h.env, "FW_DELIVERY__BREAKER_FAILURES", "1000");
    h.receiver
        .respond(|r| Reply::status(if r.path == "/ops" { 200 } else { 503 }));
    let secret = crate::notify::publish_endpoint(&mut h, ORG, "/ops").await;
    let mut first = h.processor("first");
    let started = Instant::now();
    let send = |from: usize, n: usize| {
        let (producer, input) = (&h.producer, h.topics.input.clone());
        async move {
            for i in from..from + n {
                let id = format!("k-{i}");
                producer
                    .send_json(&input, Some(&id), &spec_event(&id))
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    send(0, 20).await;
    // A second instance joins (both groups rebalance), then the first dies mid-stream.
    let mut second = crate::support::processor::Processor::start(
        &instance(&h, "second"),
        h.dir.path().join("second.log"),
    );
    send(20, 20).await;
    first.kill();
    send(40, 20).await;
    let mut events = Reader::operational(&topic);
    // The killed instance's open transactions hold its partitions' readers up to the
    // broker's transaction timeout (60 s) before the survivor reads on. Requests go on
    // failing until the webhook is disabled.
    let mut next = 60;
    while of_type(&events.records, "webhook.disabled").is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "never disabled: {:#?}",
            events.records
        );
        send(next, 2).await;
        next += 2;
        events.poll_for(Duration::from_millis(300));
    }
    // Every input record has its outcome; every event that ended failed is counted once,
    // in one event.exhausted or another (the last window is announced when it closes).
    let mut outcomes = Reader::new(&h.topics.outcomes);
    outcomes.wait_for_within(next, Duration::from_secs(120));
    outcomes.poll_for(Duration::from_secs(2));
    let failed = outcomes
        .by_event_id()
        .values()
        .filter(|o| o["status"] == "failed")
        .count() as u64;
    let counted_in = |e: &[Value]| -> u64 {
        of_type(e, "event.exhausted")
            .iter()
            .map(|e| e["exhausted"]["count"].as_u64().unwrap())
            .sum()
    };
    wait_until(&mut events, Duration::from_secs(60), |e| {
        counted_in(e) >= failed
    });
    events.poll_for(Duration::from_secs(3));
    let all = &events.records;
    let counted = counted_in(all);
    let ids: std::collections::HashSet<&str> =
        all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    // Each reached the owner, at least once (a notification under way when its sender
    // died is sent again, with the same webhook-id), signed.
    let notified = crate::notify::wait_notified(&h, "/ops", all).await;
    let (ids_notified, again) = crate::notify::notified_ids(&notified);
    crate::notify::verify(&notified, &secret, h.dir.path());
    println!(
        "health across a rebalance and a kill -9: {} operational events ({} failing, {} disabled, {} exhausted counting {counted} of {failed} failed events), {} duplicates, disabled after {:.1} s; notifications: {} of {} events, {again} sent twice (same webhook-id), each signature verified by standardwebhooks",
        all.len(),
        of_type(all, "webhook.failing").len(),
        of_type(all, "webhook.disabled").len(),
        of_type(all, "event.exhausted").len(),
        all.len() - ids.len(),
        started.elapsed().as_secs_f64(),
        ids_notified.len(),
        all.len(),
    );
    assert_eq!(ids.len(), all.len(), "an event written twice: {all:#?}");
    assert_eq!(of_type(all, "webhook.failing").len(), 1, "{all:#?}");
    assert_eq!(of_type(all, "webhook.disabled").len(), 1, "{all:#?}");
    assert_eq!(
        outcomes.records.len(),
        outcomes.by_event_id().len(),
        "an outcome twice"
    );
    assert!(failed > 0);
    assert_eq!(counted, failed, "{all:#?}");
    assert!(second.exited().is_none(), "the second instance exited");
    assert!(second.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_reenables_a_disabled_webhook_and_redelivers_what_it_missed_once() {
    let (mut h, _) = harness("health-cli-reenable", 4).await;
    set(&mut h.env, "FW_DELIVERY__BREAKER_FAILURES", "1000");
    h.receiver.respond(|_| Reply::status(503));
    let mut processor = h.processor("processor");
    let until = Instant::now() + Duration::from_secs(60);
    let mut sent = Vec::new();
    while webhook_record(&h)["enabled"] != false {
        assert!(Instant::now() < until, "never disabled");
        let id = format!("c-{}", sent.len());
        h.producer
            .send_json(&h.topics.input, Some(&id), &spec_event(&id))
            .await;
        sent.push(id);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for i in 0..2 {
        let id = format!("c-skipped-{i}");
        h.producer
            .send_json(&h.topics.input, Some(&id), &spec_event(&id))
            .await;
        sent.push(id);
    }
    let mut outcomes = Reader::new(&h.topics.outcomes);
    outcomes.wait_for(sent.len());
    for o in outcomes.by_event_id().values() {
        assert!(
            o["status"] == "failed" || o["reason"] == "webhook_disabled",
            "{o:#}"
        );
    }
    // Fixed; re-enabled from the command line.
    h.receiver.respond(|_| Reply::status(200));
    let (ok, out, err) = cli(
        &h.env,
        &[
            "config",
            "reenable",
            "--org",
            ORG,
            "--sandbox",
            SANDBOX,
            "--yes",
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("enabled: true"), "{out}");
    assert_eq!(webhook_record(&h)["enabled"], true);
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        outcomes.poll_for(Duration::from_millis(300));
        let delivered = outcomes
            .records
            .iter()
            .filter(|o| o["status"] == "delivered" && !o["replay"].is_null())
            .count();
        if delivered >= sent.len() {
            break;
        }
        assert!(
            Instant::now() < until,
            "{delivered} of {} redelivered:\n{out}{err}",
            sent.len()
        );
    }
    outcomes.poll_for(Duration::from_secs(2));
    let requests = h.receiver.received();
    for id in &sent {
        let redelivered = requests
            .iter()
            .filter(|r| r.header("webhook-id") == Some(id.as_str()))
            .filter(|r| r.header("webhook-replay-id").is_some())
            .count();
        assert_eq!(redelivered, 1, "{id} redelivered {redelivered} times");
    }
    println!(
        "CLI re-enable: {} missed events ({} failed, 2 skipped as webhook_disabled) redelivered once each",
        sent.len(),
        sent.len() - 2
    );
    assert!(processor.exited().is_none(), "the processor exited");
    assert!(processor.stop().success());
}
