//! A restarted processor resumes its config cache from stored offsets and its input from
//! committed offsets.

use std::collections::HashMap;

use serde_json::Value;

use crate::support::kafka::Reader;
use crate::support::processor::Processor;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_resumes_config_from_the_cache_and_input_from_commits() {
    let h = Harness::start("restart").await;
    let (dir, topics, receiver, p) = (&h.dir, &h.topics, &h.receiver, &h.producer);
    let env = h.env.clone();
    h.configure(ORG, &receiver.url("/hook")).await;

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
    let h = Harness::start("offset-reset").await;
    h.configure(ORG, &h.receiver.url("/hook")).await;
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
