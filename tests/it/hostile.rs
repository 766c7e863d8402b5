//! Hostile input cannot stall a partition: records that once produced outcomes too large
//! for the broker get small terminal outcomes, and the commit point moves past them.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::kafka::{committed, Reader};
use crate::support::processor::Processor;
use crate::support::*;

/// `n` characters that compression can hardly shrink (the broker's size limit applies to
/// compressed batches): base64 of random bytes.
fn incompressible(n: usize) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
    let mut s = base64::engine::general_purpose::STANDARD.encode(bytes);
    s.truncate(n);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_with_huge_fields_do_not_stall_their_partition() {
    const ORDINARY: usize = 100;
    let h = Harness::hooked("hostile-sizes").await;
    let mut processor = Processor::start(&h.env, h.dir.path().join("processor.log"));
    // One key: every record lands on the same partition, behind the hostile one.
    let key = Some("one-partition");
    // An invalid event (no requestId) whose ~800 KB `_id` used to be copied into the
    // outcome's value and key: over the outcome topic's 1 MB limit, compressed or not.
    let mut huge_id = spec_event(&incompressible(800_000));
    huge_id.as_object_mut().unwrap().remove("requestId");
    // A valid-looking event of ~1 MiB whose unbounded fields filled the outcome.
    let mut huge_fields = spec_event("huge-fields");
    huge_fields["_experience"]["customerJourneyManagement"]["messageExecution"]
        ["messageExecutionID"] = json!(incompressible(520_000));
    huge_fields["_experience"]["customerJourneyManagement"]["messageExecution"]["campaignID"] =
        json!(incompressible(520_000));
    let mut last = (0, 0);
    for (hostile, name) in [(huge_id, "huge-id"), (huge_fields, "huge-fields")] {
        let bytes = serde_json::to_vec(&hostile).unwrap();
        assert!(bytes.len() < 1 << 20, "{name} is under the event limit");
        h.producer.send(&h.topics.input, key, Some(&bytes)).await;
        for i in 0..ORDINARY {
            last = h
                .producer
                .send_json(
                    &h.topics.input,
                    key,
                    &spec_event(&format!("{name}-after-{i}")),
                )
                .await;
        }
    }
    let total = 2 * (ORDINARY + 1);
    let mut outcomes = Reader::new(&h.topics.outcomes);
    outcomes.wait_for(total);
    outcomes.poll_for(Duration::from_millis(500));
    let invalid: Vec<_> = outcomes
        .records
        .iter()
        .filter(|o| o["status"] == "invalid")
        .collect();
    assert_eq!(invalid.len(), 2, "the two hostile records");
    for o in &invalid {
        assert_eq!(o["reason"], "invalid_event");
        assert_eq!(o["source"]["partition"], last.0);
        let id = o["eventId"].as_str().unwrap_or_default();
        assert!(
            id.chars().count() <= 256,
            "identity cut: {} chars",
            id.len()
        );
    }
    let delivered = outcomes
        .records
        .iter()
        .filter(|o| o["status"] == "delivered")
        .count();
    assert!(delivered >= 2 * ORDINARY, "{delivered} delivered");
    let duplicates = outcomes.records.len() - total;
    // The partition's commit point passes every record.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let offsets = committed(&h.topics.bootstrap, &h.topics.group, &h.topics.input);
        if offsets[last.0 as usize] > last.1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "committed {offsets:?}, last record at {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(duplicates, 0, "duplicate outcomes");
    assert_eq!(processor.stop().code(), Some(0));
}

/// An outcome the broker refuses for good is written again reduced, and its record
/// completes: here the outcome topic takes records of at most 1,500 bytes, and a webhook's
/// 1.9 KB URL (random, so compression cannot shrink it) makes the full outcome larger.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outcome_refused_for_good_is_written_reduced() {
    use rdkafka::admin::{AdminOptions, AlterConfig, ResourceSpecifier};

    let h = Harness::start("hostile-refused").await;
    let config = AlterConfig::new(ResourceSpecifier::Topic(&h.topics.outcomes))
        .set("max.message.bytes", "1500");
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    for r in crate::support::kafka::admin(&h.topics.bootstrap)
        .alter_configs([&config], &options)
        .await
        .unwrap()
    {
        r.expect("max.message.bytes set");
    }
    let path: String = incompressible(1_900)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { 'x' })
        .collect();
    h.configure(ORG, &h.receiver.url(&format!("/{path}"))).await;
    let mut processor = h.processor("processor");
    let key = Some("one-partition");
    let (partition, offset) = h
        .producer
        .send_json(&h.topics.input, key, &spec_event("refused-outcome"))
        .await;
    let mut outcomes = Reader::new(&h.topics.outcomes);
    outcomes.wait_for(1);
    let o = &outcomes.records[0];
    assert_eq!(o["eventId"], "refused-outcome");
    assert_eq!(o["status"], "delivered");
    assert!(
        o["webhook"].is_null() && o["attempts"] == json!([]),
        "reduced: {o}"
    );
    assert_eq!(o["source"]["offset"], offset);
    // The partition moves on.
    let deadline = Instant::now() + PATIENCE;
    while committed(&h.topics.bootstrap, &h.topics.group, &h.topics.input)[partition as usize]
        <= offset
    {
        assert!(Instant::now() < deadline, "commit point stuck");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_, metrics) = crate::observe::get(&processor.http_addr(), "/metrics").await;
    assert!(
        metrics.contains("record_write_failures_total{action=\"outcome_reduced\"} 1"),
        "{metrics}"
    );
    assert!(processor.stop().success());
}

/// A producer error retrying cannot outlast (here: an outcome topic whose name the broker
/// refuses) stops the processor with a non-zero status and a clear log line, instead of a
/// silent spin; the record is not committed, so a restart (once fixed) redoes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fatal_producer_error_stops_the_processor() {
    let mut h = Harness::hooked("hostile-fatal").await;
    h.env.retain(|(k, _)| k != "FW_KAFKA__OUTCOME_TOPIC");
    h.env.push((
        "FW_KAFKA__OUTCOME_TOPIC".into(),
        "not a valid topic name!".into(),
    ));
    let mut processor = h.processor("processor");
    let (partition, _) = h
        .producer
        .send_json(&h.topics.input, None, &spec_event("fatal"))
        .await;
    let status = processor.wait_exit();
    assert!(!status.success(), "{status}");
    let log = std::fs::read_to_string(&processor.log).unwrap();
    assert!(log.contains("the producer cannot go on; stopping"), "{log}");
    let offsets = committed(&h.topics.bootstrap, &h.topics.group, &h.topics.input);
    assert!(offsets[partition as usize] <= 0, "committed {offsets:?}");
}
