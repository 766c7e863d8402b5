//! `kill -9` in the middle of a stream loses no event.

use std::collections::HashSet;
use std::time::Duration;

use feedback_webhooks::receiver::Reply;

use crate::support::kafka::Reader;
use crate::support::processor::Processor;
use crate::support::*;

const EVENTS: usize = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_stream_then_restart_loses_nothing() {
    let h = Harness::start("crash").await;
    let (dir, topics, receiver, p) = (&h.dir, &h.topics, &h.receiver, &h.producer);
    // A little latency per request keeps the run long enough to be killed in the middle.
    receiver.respond(|_| Reply {
        delay: Some(Duration::from_millis(20)),
        ..Reply::status(200)
    });
    let mut env = h.env.clone();
    env.push(("FW_DELIVERY__MAX_IN_FLIGHT".into(), "16".into()));
    h.configure(ORG, &receiver.url("/hook")).await;
    let mut ids = HashSet::new();
    for i in 0..EVENTS {
        let id = format!("crash-{i}");
        p.send_json(&topics.input, Some(&id), &spec_event(&id))
            .await;
        ids.insert(id);
    }

    let mut outcomes = Reader::new(&topics.outcomes);
    let mut processor = Processor::start(&env, dir.path().join("first.log"));
    outcomes.wait_for(EVENTS / 6);
    processor.kill();
    let at_kill = outcomes.by_event_id().len();
    assert!(
        at_kill < EVENTS,
        "the processor finished before it could be killed"
    );

    let _processor = Processor::start(&env, dir.path().join("second.log"));
    let until = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        outcomes.poll_for(Duration::from_millis(500));
        let done = outcomes.by_event_id();
        if ids.iter().all(|id| done.contains_key(id)) {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "{} of {EVENTS} events have no outcome",
            ids.iter().filter(|id| !done.contains_key(*id)).count()
        );
    }

    let received: HashSet<String> = receiver
        .received()
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect();
    let mut delivered = 0;
    for o in &outcomes.records {
        if o["status"] == "delivered" {
            delivered += 1;
            let id = o["eventId"].as_str().unwrap();
            assert!(
                received.contains(id),
                "{id} is delivered but never reached the receiver"
            );
        }
    }
    assert!(delivered >= EVENTS);
    println!(
        "crash: {EVENTS} events, {at_kill} had outcomes at kill -9, {} outcomes in all, {} requests received",
        outcomes.records.len(),
        receiver.received().len()
    );
}
