//! The processor's own topics (retry tiers, redelivery) are made as durable as the input
//! they stand in for, and existing ones that fall short are reported loudly.

use std::time::Duration;

use rdkafka::admin::{AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};

use crate::support::kafka::admin;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn internal_topics_get_their_retention_and_shortfalls_are_reported() {
    let h = Harness::start("durability").await;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    // An operator made one tier beforehand, keeping records for a minute only.
    let weak = format!("{}-retry-5s", h.topics.group);
    let topic = NewTopic::new(&weak, 1, TopicReplication::Fixed(1)).set("retention.ms", "60000");
    for r in admin(&h.topics.bootstrap)
        .create_topics([&topic], &options)
        .await
        .unwrap()
    {
        r.expect("topic made");
    }
    let mut processor = h.processor("processor");
    let reported = processor.wait_log(
        "INTERNAL TOPIC IS LESS DURABLE THAN CONFIGURED: parked and redelivery records may be lost or refused; alter the topic",
        1,
    );
    assert_eq!(reported.len(), 1, "only the weak topic: {reported:?}");
    assert_eq!(reported[0]["fields"]["topic"], weak.as_str());
    assert!(reported[0]["fields"]["shortfalls"]
        .as_str()
        .unwrap()
        .contains("retention.ms 60000"));

    // A tier the processor made keeps records past the retry max age (1 day) plus a week,
    // and has room for its largest records.
    let made = format!("{}-retry-1s", h.topics.group);
    let configs = admin(&h.topics.bootstrap)
        .describe_configs([&ResourceSpecifier::Topic(&made)], &options)
        .await
        .unwrap();
    let config = configs.into_iter().next().unwrap().unwrap();
    let value = |name: &str| config.get(name).unwrap().value.clone().unwrap();
    assert_eq!(value("retention.ms"), (8 * 24 * 3_600_000i64).to_string());
    assert_eq!(value("min.insync.replicas"), "1", "one broker");
    assert!(value("max.message.bytes").parse::<usize>().unwrap() >= 2 << 20);
    assert!(processor.stop().success());
}
