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
    let h = Harness::start("hostile-sizes").await;
    h.configure(ORG, &h.receiver.url("/hook")).await;
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
