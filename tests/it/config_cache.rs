//! The config cache is never silently stale: it is rebuilt when the topic lost records it
//! never read or when it is older than the topic keeps tombstones, and it follows
//! partitions added to the topic while it runs.

use std::time::Duration;

use rdkafka::admin::{AdminOptions, AlterConfig, NewPartitions, ResourceSpecifier};
use rdkafka::{Offset, TopicPartitionList};

use crate::support::kafka::{admin, Reader};
use crate::support::*;

fn options() -> AdminOptions {
    AdminOptions::new().request_timeout(Some(Duration::from_secs(30)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cache_older_than_the_tombstone_retention_is_rebuilt() {
    let h = Harness::hooked("cache-stale").await;
    let config = AlterConfig::new(ResourceSpecifier::Topic(&h.topics.config))
        .set("delete.retention.ms", "1000");
    for r in admin(&h.topics.bootstrap)
        .alter_configs([&config], &options())
        .await
        .expect("alter configs")
    {
        r.expect("delete.retention.ms set");
    }
    let mut first = h.processor("first");
    first.wait_log("config cache caught up", 1);
    // Long enough for the follower to record that the cache is in step.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(first.stop().success());
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut second = h.processor("second");
    let caught_up = second.wait_log("config cache caught up", 1);
    assert_eq!(caught_up[0]["fields"]["resumed"], false, "read again");
    let rebuilt = second.messages("rebuilding the config cache from the topic");
    assert!(
        rebuilt[0]["fields"]["why"]
            .as_str()
            .unwrap()
            .contains("delete.retention.ms"),
        "{rebuilt:?}"
    );
    assert!(second.stop().success());

    // Within the retention, the cache is resumed.
    let config = AlterConfig::new(ResourceSpecifier::Topic(&h.topics.config))
        .set("delete.retention.ms", "3600000");
    for r in admin(&h.topics.bootstrap)
        .alter_configs([&config], &options())
        .await
        .expect("alter configs")
    {
        r.expect("delete.retention.ms set");
    }
    let mut third = h.processor("third");
    let caught_up = third.wait_log("config cache caught up", 1);
    assert_eq!(caught_up[0]["fields"]["resumed"], true);
    assert!(third.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cache_missing_deleted_records_is_rebuilt() {
    let h = Harness::hooked("cache-deleted").await;
    let mut first = h.processor("first");
    first.wait_log("config cache caught up", 1);
    assert!(first.stop().success());

    // While it is down, the webhook is deleted, and the records up to and including the
    // tombstone are deleted from the log, as retention does on a `compact,delete` topic
    // (records cannot be deleted from a compact-only one).
    let policy = AlterConfig::new(ResourceSpecifier::Topic(&h.topics.config))
        .set("cleanup.policy", "compact,delete");
    for r in admin(&h.topics.bootstrap)
        .alter_configs([&policy], &options())
        .await
        .expect("alter configs")
    {
        r.expect("cleanup.policy set");
    }
    let key = webhook_key(ORG, SANDBOX);
    let (partition, offset) = h.producer.tombstone(&h.topics.config, &key).await;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&h.topics.config, partition, Offset::Offset(offset + 1))
        .unwrap();
    let deleted = admin(&h.topics.bootstrap)
        .delete_records(&tpl, &options())
        .await
        .expect("records deleted");
    for e in deleted.elements() {
        assert!(e.error().is_ok(), "{:?}", e.error());
    }

    let mut second = h.processor("second");
    second.wait_log("config cache caught up", 1);
    let rebuilt = second.messages("rebuilding the config cache from the topic");
    assert!(!rebuilt.is_empty(), "the cache was rebuilt");
    // The deleted webhook did not come back from the stale cache.
    h.producer
        .send_json(&h.topics.input, None, &spec_event("after-delete"))
        .await;
    let mut outcomes = Reader::new(&h.topics.outcomes);
    outcomes.wait_for(1);
    assert_eq!(outcomes.records[0]["reason"], "no_webhook");
    assert!(second.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_added_to_the_config_topic_are_followed() {
    let h = Harness::start("cache-partitions").await;
    let mut processor = h.processor("processor");
    processor.wait_log("config cache caught up", 1);
    for r in admin(&h.topics.bootstrap)
        .create_partitions(&[NewPartitions::new(&h.topics.config, 4)], &options())
        .await
        .expect("create partitions")
    {
        r.expect("partitions added");
    }
    // The webhook lands in a partition that did not exist when the processor started.
    let org = "orgNewPartition";
    let p = &h.producer;
    p.send_json_to(
        &h.topics.config,
        3,
        &webhook_key(org, SANDBOX),
        &webhook(org, SANDBOX, &h.receiver.url("/new")),
    )
    .await;
    p.send_json_to(
        &h.topics.config,
        3,
        &campaign_key(org, SANDBOX, CAMPAIGN),
        &campaign(org, SANDBOX, CAMPAIGN, true),
    )
    .await;
    processor.wait_log("following partitions added to the config topic", 1);
    // Applied once read: an event for the new webhook is delivered.
    processor.wait_log("config record applied", 2);
    let mut event = spec_event("on-new-partition");
    event["imsOrg"] = serde_json::json!(org);
    p.send_json(&h.topics.input, None, &event).await;
    let mut outcomes = Reader::new(&h.topics.outcomes);
    outcomes.wait_for(1);
    assert_eq!(outcomes.records[0]["status"], "delivered");
    assert!(processor.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cached_record_that_no_longer_decodes_ends_its_events_as_config_invalid() {
    use feedback_webhooks::domain::config::ConfigKey;
    use feedback_webhooks::join::ConfigStore;

    let h = Harness::hooked("cache-corrupt").await;
    let mut first = h.processor("first");
    first.wait_log("config cache caught up", 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(first.stop().success());
    // While it is down, the cached webhook is overwritten with bytes that are not a record
    // (as a disk fault or an incompatible writer would leave them).
    let store_path = h
        .env
        .iter()
        .find(|(k, _)| k == "FW_STORE__PATH")
        .map(|(_, v)| v.clone())
        .expect("store path");
    {
        let store = ConfigStore::open(std::path::Path::new(&store_path)).unwrap();
        let key = ConfigKey::webhook(ORG, SANDBOX);
        let next = (0..2)
            .filter_map(|p| {
                store
                    .next_offset(&h.topics.config, p)
                    .unwrap()
                    .map(|n| (p, n))
            })
            .next()
            .expect("an offset");
        // Keeps the partition's offset where it was: only the value changes.
        store
            .apply(
                &h.topics.config,
                next.0,
                next.1 - 1,
                Some((&key, Some(b"\x00not a record"))),
            )
            .unwrap();
    }
    let mut second = h.processor("second");
    let caught_up = second.wait_log("config cache caught up", 1);
    assert_eq!(caught_up[0]["fields"]["resumed"], true);
    h.producer
        .send_json(&h.topics.input, None, &spec_event("on-a-corrupt-record"))
        .await;
    let mut outcomes = Reader::new(&h.topics.outcomes);
    outcomes.wait_for(1);
    assert_eq!(outcomes.records[0]["status"], "skipped");
    assert_eq!(outcomes.records[0]["reason"], "config_invalid");
    assert!(second.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recreated_config_topic_is_recognised_by_its_id() {
    use rdkafka::admin::{NewTopic, TopicReplication};

    let h = Harness::hooked("cache-recreated").await;
    let mut first = h.processor("first");
    first.wait_log("config cache caught up", 1);
    assert!(first.stop().success());

    // While it is down, the config topic is deleted and made again under the same name,
    // and filled with more records than before (so its offsets alone look familiar): ORG's
    // webhook is not among them.
    let admin = admin(&h.topics.bootstrap);
    admin
        .delete_topics(&[h.topics.config.as_str()], &options())
        .await
        .expect("delete");
    let topic = NewTopic::new(&h.topics.config, 2, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact");
    let until = std::time::Instant::now() + PATIENCE;
    loop {
        let made = admin
            .create_topics([&topic], &options())
            .await
            .expect("create");
        if made.iter().all(Result::is_ok) {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "topic not made again: {made:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for i in 0..10 {
        h.configure(&format!("other{i}"), &h.receiver.url("/other"))
            .await;
    }

    let mut second = h.processor("second");
    second.wait_log("config cache caught up", 1);
    let rebuilt = second.messages("rebuilding the config cache from the topic");
    assert!(
        rebuilt
            .first()
            .and_then(|l| l["fields"]["why"].as_str())
            .is_some_and(|why| why.contains("its id changed")),
        "{rebuilt:?}"
    );
    h.producer
        .send_json(&h.topics.input, None, &spec_event("after-recreate"))
        .await;
    let mut outcomes = Reader::new(&h.topics.outcomes);
    outcomes.wait_for(1);
    assert_eq!(
        outcomes.records[0]["reason"], "no_webhook",
        "the old webhook is gone"
    );
    assert!(second.stop().success());
}
