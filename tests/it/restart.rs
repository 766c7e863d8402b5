//! A restarted processor resumes its config cache from stored offsets and its input from
//! committed offsets.

use std::collections::HashMap;

use serde_json::Value;

use crate::support::kafka::{self, Reader};
use crate::support::processor::Processor;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_resumes_config_from_the_cache_and_input_from_commits() {
    let h = Harness::hooked("restart").await;
    let (dir, topics, receiver, p) = (&h.dir, &h.topics, &h.receiver, &h.producer);
    let env = h.env.clone();

    let mut first = Processor::start(&env, dir.path().join("first.log"));
    let caught_up = first.wait_log("config cache caught up", 1);
    assert_eq!(caught_up[0]["fields"]["records_read"], 2);
    assert_eq!(caught_up[0]["fields"]["resumed"], false);
    for i in 0..5 {
        p.send_json(&topics.input, None, &spec_event(&format!("before-{i}")))
            .await;
    }
    let mut outcomes = Reader::new(&topics.outcomes);
    outcomes.wait_for(5);
    assert!(first.stop().success(), "graceful stop exits 0");

    // While it is down: more input, no config change.
    for i in 0..5 {
        p.send_json(&topics.input, None, &spec_event(&format!("after-{i}")))
            .await;
    }
    let mut second = Processor::start(&env, dir.path().join("second.log"));
    let caught_up = second.wait_log("config cache caught up", 1);
    assert_eq!(caught_up[0]["fields"]["resumed"], true);
    assert_eq!(
        caught_up[0]["fields"]["records_read"], 0,
        "config topic was re-read"
    );

    outcomes.wait_for(10);
    outcomes.poll_for(std::time::Duration::from_secs(2));
    let mut counts: HashMap<String, usize> = HashMap::new();
    for o in &outcomes.records {
        assert_eq!(o["status"], "delivered", "{o}");
        *counts
            .entry(o["eventId"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(counts.len(), 10);
    assert!(
        counts.values().all(|&n| n == 1),
        "committed input was processed again: {counts:?}"
    );
    let ids: Vec<Value> = receiver
        .received()
        .iter()
        .map(|r| Value::from(r.header("webhook-id").unwrap()))
        .collect();
    assert_eq!(ids.len(), 10);
}

/// `auto.offset.reset` comes from `kafka.properties`: with `latest`, a new group starts at
/// the end of its topics instead of reading what was there before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_group_can_start_at_the_end_of_its_input() {
    let h = Harness::hooked("offset-reset").await;
    for i in 0..5 {
        h.producer
            .send_json(&h.topics.input, None, &spec_event(&format!("before-{i}")))
            .await;
    }
    let settings = h.dir.path().join("settings.toml");
    std::fs::write(
        &settings,
        "[kafka.properties]\n\"auto.offset.reset\" = \"latest\"\n",
    )
    .unwrap();
    let mut processor =
        Processor::start_with(&h.env, h.dir.path().join("processor.log"), Some(&settings));
    // Once it has joined and its positions are set, new events are read.
    let addr = processor.http_addr();
    let until = std::time::Instant::now() + PATIENCE;
    while crate::observe::get(&addr, "/readyz").await.0 != 200 {
        assert!(std::time::Instant::now() < until, "never ready");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    for i in 0..5 {
        h.producer
            .send_json(&h.topics.input, None, &spec_event(&format!("after-{i}")))
            .await;
    }
    let mut outcomes = Reader::new(&h.topics.outcomes);
    outcomes.wait_for(5);
    outcomes.poll_for(std::time::Duration::from_secs(2));
    let ids: Vec<&str> = outcomes
        .records
        .iter()
        .filter_map(|o| o["eventId"].as_str())
        .collect();
    assert_eq!(ids.len(), 5, "{ids:?}");
    assert!(ids.iter().all(|id| id.starts_with("after-")), "{ids:?}");
    assert!(processor.stop().success());
}

/// A stop while outcomes cannot be written (the outcome topic was deleted, and the broker
/// does not create topics): the processor still stops, commits what the broker acknowledged
/// and not the event whose outcome is pending; a restart, once the topic is back, redoes
/// that event. Nothing is lost and nothing acknowledged is redone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stop_with_outcomes_pending_commits_only_acknowledged_work() {
    use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
    use std::time::{Duration, Instant};

    let mut h = Harness::hooked("stop-pending").await;
    h.env
        .push(("FW_SHUTDOWN__DRAIN_DEADLINE_SECS".into(), "2".into()));
    let admin = kafka::admin(&h.topics.bootstrap);
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let mut first = h.processor("first");
    let key = Some("one-partition");
    let mut last = (0, 0);
    for i in 0..5 {
        last = h
            .producer
            .send_json(&h.topics.input, key, &spec_event(&format!("acked-{i}")))
            .await;
    }
    let (partition, acked_end) = (last.0 as usize, last.1 + 1);
    Reader::new(&h.topics.outcomes).wait_for(5);
    for r in admin
        .delete_topics(&[h.topics.outcomes.as_str()], &options)
        .await
        .unwrap()
    {
        r.expect("outcome topic deleted");
    }
    let (_, pending) = h
        .producer
        .send_json(&h.topics.input, key, &spec_event("pending"))
        .await;
    h.receiver.wait_for(6).await;
    assert!(
        !first.stop().success(),
        "a stop with an unflushed outcome is not clean"
    );
    let log = std::fs::read_to_string(&first.log).unwrap();
    assert!(log.contains(r#""message":"stopped""#), "{log}");
    let committed = kafka::committed(&h.topics.bootstrap, &h.topics.group, &h.topics.input);
    assert_eq!(
        committed[partition], acked_end,
        "committed {committed:?}; the pending event is at {pending}"
    );

    let outcomes = NewTopic::new(&h.topics.outcomes, 3, TopicReplication::Fixed(1));
    let until = Instant::now() + PATIENCE;
    loop {
        // The deletion completes in the background; until then the name is taken.
        let created = admin.create_topics([&outcomes], &options).await.unwrap();
        if created.iter().all(Result::is_ok) {
            break;
        }
        assert!(
            Instant::now() < until,
            "outcome topic not recreated: {created:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut second = h.processor("second");
    let mut after = Reader::new(&h.topics.outcomes);
    let redone = after.wait_for(1)[0].clone();
    assert_eq!(redone["eventId"], "pending", "{redone}");
    after.poll_for(Duration::from_secs(2));
    assert_eq!(
        after.records.len(),
        1,
        "acknowledged work redone: {:?}",
        after.records
    );
    let committed = kafka::committed(&h.topics.bootstrap, &h.topics.group, &h.topics.input);
    assert!(committed[partition] > pending, "committed {committed:?}");
    let mut requests: HashMap<String, usize> = HashMap::new();
    for r in h.receiver.received() {
        *requests
            .entry(r.header("webhook-id").unwrap().to_owned())
            .or_default() += 1;
    }
    // The pending event's request was sent before the stop and again after: at least once.
    assert_eq!(requests.remove("pending"), Some(2), "{requests:?}");
    assert!(requests.values().all(|&n| n == 1), "{requests:?}");
    assert!(second.stop().success());
}
