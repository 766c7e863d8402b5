//! Bad input becomes `invalid` outcomes carrying the source coordinates; nothing stops.

use std::time::Duration;

use feedback_webhooks::schema::Kind;
use serde_json::{json, Value};

use crate::support::kafka::Reader;
use crate::support::processor::Processor;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_incomplete_and_oversized_events_are_invalid() {
    let h = Harness::hooked("invalid").await;
    let (dir, topics, receiver, p) = (&h.dir, &h.topics, &h.receiver, &h.producer);
    let env = h.env.clone();
    let _processor = Processor::start(&env, dir.path().join("processor.log"));

    let malformed = p
        .send(&topics.input, Some("k"), Some(b"{\"_id\": \"broken\", "))
        .await;
    let mut missing = spec_event("missing-request-id");
    missing.as_object_mut().unwrap().remove("requestId");
    let incomplete = p.send_json(&topics.input, None, &missing).await;
    // Just over the 1 MiB default limit, padded inside an otherwise valid event.
    let mut big = spec_event("too-large");
    big["padding"] = json!("x".repeat(1 << 20));
    let oversized = p.send_json(&topics.input, None, &big).await;
    let empty = p.send(&topics.input, Some("k"), None).await;
    // A valid event after them still goes through.
    p.send_json(&topics.input, None, &spec_event("fine")).await;

    let mut outcomes = Reader::new(&topics.outcomes);
    outcomes.wait_for(5);
    outcomes.poll_for(Duration::from_millis(500));
    assert_eq!(
        outcomes.records.len(),
        5,
        "{:#?}",
        outcomes
            .records
            .iter()
            .map(|o| (
                o["source"].clone(),
                o["status"].clone(),
                o["eventId"].clone()
            ))
            .collect::<Vec<_>>()
    );
    let find = |(partition, offset): (i32, i64)| -> Value {
        outcomes
            .records
            .iter()
            .find(|o| o["source"]["partition"] == partition && o["source"]["offset"] == offset)
            .cloned()
            .unwrap_or_else(|| panic!("no outcome for {partition}/{offset}"))
    };
    for (coords, reason, event_id) in [
        (malformed, "invalid_event", Value::Null),
        (incomplete, "invalid_event", json!("missing-request-id")),
        (oversized, "event_too_large", Value::Null),
        (empty, "invalid_event", Value::Null),
    ] {
        let o = find(coords);
        assert_schema(Kind::Outcome, &o);
        assert_eq!(o["status"], "invalid", "{o}");
        assert_eq!(o["reason"], reason, "{o}");
        assert_eq!(o["eventId"], event_id, "{o}");
        assert_eq!(o["source"]["topic"], topics.input.as_str());
        assert_eq!(o["attempts"], json!([]));
    }
    assert_eq!(outcomes.by_event_id()["fine"]["status"], "delivered");
    assert_eq!(receiver.received().len(), 1);
}
