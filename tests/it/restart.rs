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
