//! A parked event: an event waiting in a retry tier for its next attempt.
//!
//! Tiers are fixed delay buckets, each its own topic (`{prefix}-{tier}`). A record goes to
//! the largest tier not longer than its delay, so records within one tier fall due in
//! roughly the order they were written. The tiers do not depend on the retry schedule, so
//! changing the schedule never strands pending retries.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::outcome::{Attempt, Source};

/// The tiers, shortest first, and their topic-name suffixes.
pub const TIERS: [(Duration, &str); 9] = [
    (Duration::from_secs(1), "1s"),
    (Duration::from_secs(5), "5s"),
    (Duration::from_secs(30), "30s"),
    (Duration::from_secs(120), "2m"),
    (Duration::from_secs(600), "10m"),
    (Duration::from_secs(1800), "30m"),
    (Duration::from_secs(3600), "1h"),
    (Duration::from_secs(7200), "2h"),
    (Duration::from_secs(14400), "4h"),
];

/// Index of the tier for a delay: the largest tier not longer than it (the first for short
/// delays).
pub fn tier_for(delay: Duration) -> usize {
    TIERS.iter().rposition(|(d, _)| *d <= delay).unwrap_or(0)
}

/// The topic names of every tier.
pub fn tier_topics(prefix: &str) -> Vec<String> {
    TIERS.iter().map(|(_, s)| format!("{prefix}-{s}")).collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Parked {
    /// Always "retry": a retry-tier record, never an outcome.
    pub kind: String,
    pub event_id: String,
    /// The original event, as received.
    pub event: Value,
    /// Where the event first entered.
    pub source: Source,
    /// Attempts so far (none when the endpoint was unavailable before the first).
    pub attempts: Vec<Attempt>,
    /// When the event was first handled (Unix ms): the base of the maximum retry age.
    pub first_seen_ms: u64,
    /// When the next attempt is due (Unix ms).
    pub due_ms: u64,
    /// Parks in a row because the webhook's queue was full, not because an attempt failed:
    /// such parks back off on their own (1 s, doubling, up to a minute).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub busy_parks: u32,
    /// The replay redelivering the event, if any: its outcome and requests carry its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<super::outcome::Replay>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Parked {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{self, Kind};

    #[test]
    fn tiers_by_delay() {
        assert_eq!(tier_for(Duration::from_millis(200)), 0);
        assert_eq!(tier_for(Duration::from_secs(1)), 0);
        assert_eq!(tier_for(Duration::from_secs(4)), 0);
        assert_eq!(tier_for(Duration::from_secs(5)), 1);
        assert_eq!(tier_for(Duration::from_secs(29)), 1);
        assert_eq!(tier_for(Duration::from_secs(600)), 4);
        assert_eq!(tier_for(Duration::from_secs(99_999)), 8);
        assert_eq!(tier_topics("webhook-retry")[2], "webhook-retry-30s");
    }

    #[test]
    fn parked_record_matches_its_schema() {
        let parked = Parked {
            kind: "retry".into(),
            event_id: "e1".into(),
            event: serde_json::json!({"_id": "e1"}),
            source: Source {
                topic: "message-feedback".into(),
                partition: 0,
                offset: 7,
            },
            attempts: vec![Attempt {
                at: "2026-11-27T10:15:00.120Z".into(),
                http_status: Some(503),
                error: None,
                duration_ms: 41,
            }],
            first_seen_ms: 1,
            due_ms: 2,
            busy_parks: 0,
            replay: None,
        };
        let json: Value = serde_json::from_slice(&parked.to_json()).unwrap();
        schema::validate(Kind::Retry, &json).unwrap();
        let back: Parked = serde_json::from_value(json).unwrap();
        assert_eq!(back, parked);

        // A replayed event keeps its replay through its retries.
        let replayed = Parked {
            replay: Some(super::super::outcome::Replay {
                id: "replay-1".into(),
                requested_at: "2026-11-28T10:00:00.000Z".into(),
                source: "outcomes".into(),
            }),
            ..parked
        };
        let json: Value = serde_json::from_slice(&replayed.to_json()).unwrap();
        schema::validate(Kind::Retry, &json).unwrap();
        assert_eq!(serde_json::from_value::<Parked>(json).unwrap(), replayed);
    }
}
