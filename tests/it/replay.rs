//! `feedback-webhooks replay`: redelivery through the live processor, by window and filters,
//! from failed outcomes or explicit offsets; dry runs, safety, idempotence per replay id.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use feedback_webhooks::domain::time::rfc3339_millis;
use feedback_webhooks::receiver::Reply;
use serde_json::Value;

use crate::support::kafka::Reader;
use crate::support::processor::cli;
use crate::support::*;

const ORG2: &str = "otherImsOrg";

fn at(offset_secs: i64) -> String {
    let now = SystemTime::now();
    let t = if offset_secs >= 0 {
        now + Duration::from_secs(offset_secs as u64)
    } else {
        now - Duration::from_secs((-offset_secs) as u64)
    };
    rfc3339_millis(t)
}

/// Runs `replay` with `args`; returns stdout, failing the test if it fails.
fn replay(h: &Harness, args: &[&str]) -> String {
    let mut all = vec!["replay"];
    all.extend_from_slice(args);
    let (ok, out, err) = cli(&h.env, &all);
    assert!(ok, "replay {args:?} failed: {err}{out}");
    out
}

fn replay_id(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("replay id: "))
        .unwrap_or_else(|| panic!("no replay id in {out}"))
        .to_owned()
}

fn event_for(org: &str, id: &str) -> Value {
    let mut e = spec_event(id);
    e["imsOrg"] = org.into();
    e
}

/// Requests received for `id`, and their replay headers.
fn requests_for(h: &Harness, id: &str) -> Vec<Option<String>> {
    h.receiver
        .received()
        .iter()
        .filter(|r| r.header("webhook-id") == Some(id))
        .map(|r| r.header("webhook-replay-id").map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_of_a_window_redelivers_the_filtered_events_once_per_replay_id() {
    let h = Harness::start("replay").await;
    let url = h.receiver.url("/hook");
    h.configure(ORG, &url).await;
    h.configure(ORG2, &url).await;
    let mut processor = h.processor("processor");
    let from = at(-2);
    let ours: Vec<String> = (0..3).map(|i| format!("replay-a-{i}")).collect();
    let theirs: Vec<String> = (0..2).map(|i| format!("replay-b-{i}")).collect();
    for id in &ours {
        h.producer
            .send_json(&h.topics.input, Some(id), &event_for(ORG, id))
            .await;
    }
    for id in &theirs {
        h.producer
            .send_json(&h.topics.input, Some(id), &event_for(ORG2, id))
            .await;
    }
    let mut outcomes = Reader::new(&h.topics.outcomes);
    let originals: Vec<Value> = outcomes.wait_for(5).to_vec();
    let to = at(1);

    // A dry run counts per org, sandbox and status and queues nothing.
    let out = replay(&h, &["--from", &from, "--to", &to, "--dry-run"]);
    assert!(out.contains("5 event(s) would be queued"), "{out}");
    let row = |org: &str, n: usize| {
        out.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.first() == Some(&org)
                && w.get(1) == Some(&SANDBOX)
                && w.last() == Some(&&*n.to_string())
        })
    };
    assert!(row(ORG, 3) && row(ORG2, 2), "{out}");

    let out = replay(&h, &["--from", &from, "--to", &to, "--org", ORG]);
    let id = replay_id(&out);
    assert!(out.contains("3 queued"), "{out}");
    h.receiver.wait_for(8).await;
    for event in &ours {
        // The event's own webhook-id, once plain and once marked as this replay.
        assert_eq!(
            requests_for(&h, event),
            vec![None, Some(id.clone())],
            "{event}"
        );
    }
    for event in &theirs {
        assert_eq!(
            requests_for(&h, event),
            vec![None],
            "{event} was not asked for"
        );
    }
    let all = outcomes.wait_for(8).to_vec();
    let replayed: Vec<&Value> = all.iter().filter(|o| !o["replay"].is_null()).collect();
    assert_eq!(replayed.len(), 3);
    for o in &replayed {
        assert_eq!(o["status"], "delivered");
        assert_eq!(o["replay"]["id"], id.as_str());
        assert_eq!(o["replay"]["source"], "input");
        let original = originals
            .iter()
            .find(|x| x["eventId"] == o["eventId"])
            .expect("original outcome");
        assert_eq!(o["source"], original["source"], "same input record");
    }

    // The same replay id again queues nothing more.
    let again = replay(
        &h,
        &["--from", &from, "--to", &to, "--org", ORG, "--id", &id],
    );
    assert!(
        again.contains("0 queued") && again.contains("3 already queued"),
        "{again}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.receiver.received().len(), 8);
    assert!(processor.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_of_failed_outcomes_and_of_ranges_and_its_safety_rules() {
    let h = Harness::start("replay-failed").await;
    // Events whose id ends in "-bad" are refused for now.
    h.receiver.respond(|r| {
        let bad = r
            .header("webhook-id")
            .is_some_and(|id| id.ends_with("-bad"));
        Reply::status(if bad { 400 } else { 200 })
    });
    h.configure(ORG, &h.receiver.url("/hook")).await;
    let mut processor = h.processor("processor");
    let from = at(-2);
    let ids = ["f-0-ok", "f-1-bad", "f-2-ok", "f-3-bad"];
    for id in ids {
        h.producer
            .send_json(&h.topics.input, Some(id), &spec_event(id))
            .await;
    }
    let mut outcomes = Reader::new(&h.topics.outcomes);
    let first = outcomes.wait_for(4).to_vec();
    let failed: HashSet<&str> = first
        .iter()
        .filter(|o| o["status"] == "failed")
        .filter_map(|o| o["eventId"].as_str())
        .collect();
    assert_eq!(failed, HashSet::from(["f-1-bad", "f-3-bad"]));

    // Safe by default: no unbounded window, no large replay without a confirmation.
    let (ok, _, err) = cli(&h.env, &["replay", "--source", "outcomes"]);
    assert!(!ok && err.contains("--all"), "{err}");
    let mut strict = h.env.clone();
    strict.push(("FW_REPLAY__CONFIRM_ABOVE".into(), "1".into()));
    let (ok, _, err) = cli(
        &strict,
        &["replay", "--source", "outcomes", "--from", &from],
    );
    assert!(
        !ok && err.contains("2 events exceed replay.confirm_above (1)") && err.contains("--yes"),
        "{err}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        h.receiver.received().len(),
        4,
        "a refused replay queued something"
    );

    // The endpoint is fixed (its first answer to the replay is still a 503, which the
    // normal retry rules handle); exactly the failed events are redelivered.
    let unavailable_once = std::sync::atomic::AtomicBool::new(true);
    h.receiver.respond(move |r| {
        let replayed = r.header("webhook-replay-id").is_some();
        if replayed && unavailable_once.swap(false, std::sync::atomic::Ordering::SeqCst) {
            Reply::status(503)
        } else {
            Reply::status(200)
        }
    });
    let out = replay(&h, &["--source", "outcomes", "--from", &from, "--yes"]);
    let id = replay_id(&out);
    assert!(out.contains("2 matched, 2 queued"), "{out}");
    let all = outcomes.wait_for(6).to_vec();
    let replayed: Vec<&Value> = all.iter().filter(|o| !o["replay"].is_null()).collect();
    assert_eq!(replayed.len(), 2);
    let mut attempts = 0;
    for o in replayed {
        assert!(failed.contains(o["eventId"].as_str().unwrap()));
        assert_eq!(o["status"], "delivered");
        assert_eq!(o["replay"]["id"], id.as_str());
        assert_eq!(o["replay"]["source"], "outcomes");
        attempts += o["attempts"].as_array().unwrap().len();
    }
    assert_eq!(attempts, 3, "one replayed delivery was retried once");
    let mut replay_requests = 0;
    for event in ["f-1-bad", "f-3-bad"] {
        let requests = requests_for(&h, event);
        assert_eq!(requests[0], None);
        assert!(requests[1..]
            .iter()
            .all(|r| r.as_deref() == Some(id.as_str())));
        replay_requests += requests.len() - 1;
    }
    assert_eq!(replay_requests, 3, "the retry keeps the replay header");

    // Explicit offsets: one record, by its coordinates.
    let target = first.iter().find(|o| o["eventId"] == "f-2-ok").unwrap();
    let range = format!(
        "{}:{}:{}-{}",
        target["source"]["topic"].as_str().unwrap(),
        target["source"]["partition"],
        target["source"]["offset"],
        target["source"]["offset"]
    );
    let out = replay(&h, &["--range", &range]);
    assert!(out.contains("1 matched, 1 queued"), "{out}");
    outcomes.wait_for(7);
    assert_eq!(requests_for(&h, "f-2-ok").len(), 2);
    assert_eq!(requests_for(&h, "f-0-ok").len(), 1);
    assert!(processor.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_replay_does_not_hold_back_live_events() {
    let h = Harness::start("replay-share").await;
    // Replayed requests take a second each; live ones are answered at once.
    h.receiver.respond(|r| Reply {
        delay: r
            .header("webhook-replay-id")
            .map(|_| Duration::from_secs(1)),
        ..Reply::status(200)
    });
    h.configure(ORG, &h.receiver.url("/hook")).await;
    let mut env = h.env.clone();
    // One replayed event at a time: the replay's share of this instance.
    env.push(("FW_REPLAY__MAX_IN_FLIGHT".into(), "1".into()));
    // Two requests at once to the host: a replay taking both would hold live events.
    env.push(("FW_DELIVERY__HOST_CONCURRENCY_MAX".into(), "2".into()));
    let mut processor =
        crate::support::processor::Processor::start(&env, h.dir.path().join("p.log"));
    let from = at(-2);
    for i in 0..8 {
        let id = format!("share-old-{i}");
        h.producer
            .send_json(&h.topics.input, Some(&id), &spec_event(&id))
            .await;
    }
    h.receiver.wait_for(8).await;
    replay(&h, &["--from", &from, "--to", &at(1), "--yes"]);

    // While the replay trickles through its one slot, a live event goes straight through.
    let replayed = |h: &Harness| {
        h.receiver
            .received()
            .iter()
            .filter(|r| r.header("webhook-replay-id").is_some())
            .count()
    };
    let until = std::time::Instant::now() + PATIENCE;
    while replayed(&h) == 0 {
        assert!(
            std::time::Instant::now() < until,
            "the replay never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.producer
        .send_json(
            &h.topics.input,
            Some("share-live"),
            &spec_event("share-live"),
        )
        .await;
    let until = std::time::Instant::now() + PATIENCE;
    while requests_for(&h, "share-live").is_empty() {
        assert!(
            std::time::Instant::now() < until,
            "the live event never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done_before_live = replayed(&h);
    assert!(
        done_before_live <= 2,
        "the live event waited for the whole replay ({done_before_live} of 8 replayed first)"
    );
    h.receiver.wait_for(17).await;
    assert!(processor.stop().success());
}
