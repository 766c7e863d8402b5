//! What a fault costs: only the work in flight is redone, and exactly once a fenced
//! instance stops instead of writing beside its successor.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use feedback_webhooks::receiver::Reply;
use serde_json::Value;

use crate::support::kafka::{committed, Reader};
use crate::support::processor::Processor;
use crate::support::*;

fn event_of(org: &str, id: &str) -> Value {
    let mut event = spec_event(id);
    event["imsOrg"] = org.into();
    event
}

fn requests_by_id(h: &Harness) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in h.receiver.received() {
        *counts
            .entry(r.header("webhook-id").unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    counts
}

/// One partition: an event whose webhook hangs, then ten whose webhook answers at once.
/// The ten complete past the hung one; `kill -9`; the restarted processor redoes only the
/// hung event: the committed offset's metadata says the ten are done.
async fn only_work_in_flight_is_redone_after_a_crash(guarantee: &str) {
    let mut h = Harness::start(&format!("inflight-{}", &guarantee[..4])).await;
    h.configure("slowOrg", &h.receiver.url("/slow")).await;
    h.configure("fastOrg", &h.receiver.url("/fast")).await;
    let hang = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    {
        let hang = hang.clone();
        h.receiver.respond(move |r| {
            if r.path == "/slow" && hang.load(std::sync::atomic::Ordering::SeqCst) {
                Reply {
                    delay: Some(Duration::from_secs(120)),
                    ..Reply::status(200)
                }
            } else {
                Reply::status(200)
            }
        });
    }
    h.env.extend([
        ("FW_KAFKA__PROCESSING_GUARANTEE".into(), guarantee.into()),
        ("FW_DELIVERY__REQUEST_TIMEOUT_MS".into(), "100000".into()),
    ]);
    let mut first = h.processor("first");
    h.producer
        .send_json_to(&h.topics.input, 0, "k", &event_of("slowOrg", "slow"))
        .await;
    let mut last = 0;
    for i in 0..10 {
        last = h
            .producer
            .send_json_to(
                &h.topics.input,
                0,
                "k",
                &event_of("fastOrg", &format!("fast-{i}")),
            )
            .await;
    }
    // The ten outcomes are committed (a read_committed reader sees them), and so is the
    // progress that says they are done.
    let mut outcomes = Reader::new(&h.topics.outcomes);
    outcomes.wait_for(10);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        committed(&h.topics.bootstrap, &h.topics.group, &h.topics.input)[0],
        last - 10,
        "the commit point stays at the hung event"
    );
    first.kill();

    hang.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut second = Processor::start(&h.env, h.dir.path().join("second.log"));
    outcomes.wait_for(11);
    let until = Instant::now() + PATIENCE;
    while committed(&h.topics.bootstrap, &h.topics.group, &h.topics.input)[0] <= last {
        assert!(
            Instant::now() < until,
            "the partition's commit point never passed the end"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    outcomes.poll_for(Duration::from_secs(2));
    let requests = requests_by_id(&h);
    assert_eq!(requests.get("slow"), Some(&2), "{requests:?}");
    for i in 0..10 {
        assert_eq!(requests.get(&format!("fast-{i}")), Some(&1), "{requests:?}");
    }
    let per_event = outcomes.by_event_id();
    assert_eq!(outcomes.records.len(), 11, "{:?}", outcomes.records);
    assert_eq!(per_event.len(), 11);
    assert!(second.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_a_crash_redoes_only_the_work_in_flight() {
    only_work_in_flight_is_redone_after_a_crash("exactly_once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_least_once_a_crash_redoes_only_the_work_in_flight() {
    only_work_in_flight_is_redone_after_a_crash("at_least_once").await;
}

/// At least once, records completed after the last commit are not redone after a crash
/// either: their outcomes name them, and the next owner reads the recent outcomes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_least_once_what_completed_after_the_last_commit_is_not_redone() {
    let mut h = Harness::hooked("alo-tail").await;
    h.env.extend([
        (
            "FW_KAFKA__PROCESSING_GUARANTEE".into(),
            "at_least_once".into(),
        ),
        // No periodic commit during the test: only the graceful stop commits.
        ("FW_KAFKA__COMMIT_INTERVAL_MS".into(), "60000".into()),
    ]);
    let mut first = h.processor("first");
    h.producer
        .send_json_to(&h.topics.input, 0, "k", &spec_event("warm"))
        .await;
    let mut outcomes = Reader::new(&h.topics.outcomes);
    outcomes.wait_for(1);
    assert!(first.stop().success());
    assert_eq!(
        committed(&h.topics.bootstrap, &h.topics.group, &h.topics.input)[0],
        1,
        "the stop committed the first record"
    );

    let mut second = h.processor("second");
    for i in 0..10 {
        h.producer
            .send_json_to(&h.topics.input, 0, "k", &spec_event(&format!("e-{i}")))
            .await;
    }
    outcomes.wait_for(11);
    second.kill();
    assert_eq!(
        committed(&h.topics.bootstrap, &h.topics.group, &h.topics.input)[0],
        1,
        "nothing committed after the stop"
    );

    let mut third = h.processor("third");
    let read = third.wait_log("recent results read", 1);
    assert_eq!(read[0]["fields"]["done_past_commit"], 10, "{read:?}");
    h.producer
        .send_json_to(&h.topics.input, 0, "k", &spec_event("after"))
        .await;
    outcomes.wait_for(12);
    outcomes.poll_for(Duration::from_secs(2));
    let requests = requests_by_id(&h);
    for i in 0..10 {
        assert_eq!(requests.get(&format!("e-{i}")), Some(&1), "{requests:?}");
    }
    assert_eq!(outcomes.records.len(), 12, "{:?}", outcomes.records);
    assert!(third.stop().success());
}

/// A transaction holds at most `kafka.max_transaction_records` results: the one that fills
/// it is committed at once, not at the (here hour-long) interval. Each committed
/// transaction leaves a marker after its records in every partition it wrote, so a
/// `read_committed` reader sees the transactions as runs of consecutive offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_holds_no_more_than_its_limit() {
    let mut h = Harness::hooked("txn-limit").await;
    h.env.extend([
        ("FW_KAFKA__COMMIT_INTERVAL_MS".into(), "60000".into()),
        ("FW_KAFKA__MAX_TRANSACTION_RECORDS".into(), "5".into()),
    ]);
    let mut processor = h.processor("limit");
    let events = 100;
    for i in 0..events {
        h.producer
            .send_json(&h.topics.input, Some("k"), &spec_event(&format!("e-{i}")))
            .await;
    }
    let mut outcomes = Reader::new(&h.topics.outcomes);
    // All of them, well before the interval: only full transactions commit meanwhile.
    outcomes.wait_for(events);
    let mut runs: Vec<usize> = Vec::new();
    let mut last: HashMap<i32, i64> = HashMap::new();
    let mut sorted = outcomes.positions.clone();
    sorted.sort_unstable();
    for (partition, offset) in sorted {
        match last.insert(partition, offset) {
            Some(previous) if previous + 1 == offset => {
                if let Some(run) = runs.last_mut() {
                    *run += 1;
                }
            }
            _ => runs.push(1),
        }
    }
    assert!(
        runs.iter().all(|&run| run <= 5),
        "outcomes per transaction and partition: {runs:?}"
    );
    assert_eq!(outcomes.by_event_id().len(), events);
    assert_eq!(
        requests_by_id(&h).values().sum::<usize>(),
        events,
        "one request per event"
    );
    assert!(processor.stop().success());
}

/// A second instance started with the first one's transactional id fences the first: the
/// first stops with a non-zero status at its next commit, and the second carries on; no
/// outcome is committed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fenced_processor_stops_and_its_successor_carries_on() {
    let mut h = Harness::hooked("fenced").await;
    h.env.push((
        "FW_KAFKA__TRANSACTIONAL_ID".into(),
        "it-fenced-instance".into(),
    ));
    let mut first = h.processor("first");
    for i in 0..5 {
        h.producer
            .send_json(&h.topics.input, None, &spec_event(&format!("before-{i}")))
            .await;
    }
    let mut outcomes = Reader::new(&h.topics.outcomes);
    outcomes.wait_for(5);
    let mut env = h.env.clone();
    env.retain(|(k, _)| k != "FW_STORE__PATH");
    env.push((
        "FW_STORE__PATH".into(),
        h.dir.path().join("store-2").display().to_string(),
    ));
    let mut second = Processor::start(&env, h.dir.path().join("second.log"));
    for i in 0..20 {
        h.producer
            .send_json(&h.topics.input, None, &spec_event(&format!("after-{i}")))
            .await;
    }
    let status = first.wait_exit();
    assert!(!status.success(), "{status}");
    let log = std::fs::read_to_string(&first.log).unwrap();
    assert!(log.to_lowercase().contains("fenced"), "{log}");
    outcomes.wait_for(25);
    outcomes.poll_for(Duration::from_secs(2));
    let per_event = outcomes.by_event_id();
    assert_eq!(per_event.len(), 25);
    assert_eq!(outcomes.records.len(), 25, "an outcome committed twice");
    assert!(second.stop().success());
}
