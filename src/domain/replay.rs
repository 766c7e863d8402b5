//! Replays: which records an operator's replay selects, and the record that asks the live
//! processor to deliver an event again.
//!
//! A replay reads a bounded window of the input topics (or of the outcome topic, to find the
//! events that failed), keeps the records its filters match, and queues each one on the
//! redelivery topic as a [`ReplayRecord`]. The processor consumes that topic with a bounded
//! share of its capacity, joins each event with the current config and delivers it under the
//! normal retry and isolation rules; its outcome carries the replay's id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::event::FeedbackEvent;
use super::outcome::{Replay, Source};

/// What a replay reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaySource {
    /// The input topics: every event in the window that the filters match.
    Input,
    /// The outcome topic: the events whose outcome in the window failed (or was skipped
    /// with one of the given reasons).
    Outcomes,
}

impl ReplaySource {
    /// The value recorded in `replay.source` of outcomes.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplaySource::Input => "input",
            ReplaySource::Outcomes => "outcomes",
        }
    }
}

/// A record of the redelivery topic (key: the event id): one event to deliver again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayRecord {
    /// Always "replay": a redelivery request, never an outcome.
    pub kind: String,
    pub replay: Replay,
    /// The original event, as received.
    pub event: Value,
    /// Where the event first entered (the outcome's `source`).
    pub source: Source,
}

impl ReplayRecord {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The operator's filters; within a field any value matches, across fields all must.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub orgs: Vec<String>,
    pub sandboxes: Vec<String>,
    pub campaigns: Vec<String>,
    pub channels: Vec<String>,
    pub statuses: Vec<String>,
    pub request_ids: Vec<String>,
}

/// The fields filters look at, from an event or an outcome.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts<'a> {
    pub org: Option<&'a str>,
    pub sandbox: Option<&'a str>,
    pub campaign: Option<&'a str>,
    pub channel: Option<&'a str>,
    pub status: Option<&'a str>,
    pub request_id: Option<&'a str>,
}

impl<'a> Facts<'a> {
    pub fn of_event(event: &'a FeedbackEvent) -> Self {
        Facts {
            org: Some(event.ims_org.as_str()),
            sandbox: Some(event.sandbox.id.as_str()),
            campaign: event.campaign_id(),
            channel: event.channel(),
            status: event.feedback_status(),
            request_id: Some(event.request_id.as_str()),
        }
    }

    /// From an outcome record (as JSON).
    pub fn of_outcome(outcome: &'a Value) -> Self {
        let field = |name: &str| outcome.get(name).and_then(Value::as_str);
        Facts {
            org: field("imsOrg"),
            sandbox: field("sandboxId"),
            campaign: field("campaignID"),
            channel: field("channel"),
            status: field("feedbackStatus"),
            request_id: field("requestId"),
        }
    }
}

impl Filters {
    pub fn matches(&self, facts: &Facts<'_>) -> bool {
        let one = |wanted: &[String], value: Option<&str>| {
            wanted.is_empty() || value.is_some_and(|v| wanted.iter().any(|w| w == v))
        };
        one(&self.orgs, facts.org)
            && one(&self.sandboxes, facts.sandbox)
            && one(&self.campaigns, facts.campaign)
            && one(&self.channels, facts.channel)
            && one(&self.statuses, facts.status)
            && one(&self.request_ids, facts.request_id)
    }

    pub fn is_empty(&self) -> bool {
        *self == Filters::default()
    }
}

/// A skipped reason that selects every skipped outcome.
pub const ANY_REASON: &str = "*";

/// Whether an outcome (as JSON) is one a replay from the outcome topic redelivers: `failed`
/// (when `failed`), or `skipped` with one of `skipped_reasons` ([`ANY_REASON`]: any).
pub fn outcome_selected(outcome: &Value, failed: bool, skipped_reasons: &[String]) -> bool {
    match outcome.get("status").and_then(Value::as_str) {
        Some("failed") => failed,
        Some("skipped") => outcome
            .get("reason")
            .and_then(Value::as_str)
            .is_some_and(|r| skipped_reasons.iter().any(|s| s == r || s == ANY_REASON)),
        _ => false,
    }
}

/// A time window in Unix milliseconds; `to` is exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    #[error("the window has no start: give --from (and --to), or --range, or --all to replay everything retained")]
    Unbounded,
    #[error("--from {0} is not before --to {1}")]
    Empty(String, String),
    #[error("{0:?} is not TOPIC:PARTITION:FIRST-LAST (offsets inclusive)")]
    BadRange(String),
}

impl Window {
    /// Checks the operator's choice: a window needs a start unless `all`; `to` defaults to
    /// now (the caller fills it in).
    pub fn check(&self, has_ranges: bool, all: bool) -> Result<(), SelectionError> {
        if let (Some(from), Some(to)) = (self.from_ms, self.to_ms) {
            if from >= to {
                return Err(SelectionError::Empty(from.to_string(), to.to_string()));
            }
        }
        if self.from_ms.is_none() && !has_ranges && !all {
            return Err(SelectionError::Unbounded);
        }
        Ok(())
    }
}

/// An explicit range of offsets of one partition (both ends inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetRange {
    pub topic: String,
    pub partition: i32,
    pub first: i64,
    pub last: i64,
}

/// Parses `TOPIC:PARTITION:FIRST-LAST`.
pub fn parse_range(text: &str) -> Result<OffsetRange, SelectionError> {
    let bad = || SelectionError::BadRange(text.to_owned());
    let (rest, offsets) = text.rsplit_once(':').ok_or_else(bad)?;
    let (topic, partition) = rest.rsplit_once(':').ok_or_else(bad)?;
    let (first, last) = offsets.split_once('-').ok_or_else(bad)?;
    let range = OffsetRange {
        topic: topic.to_owned(),
        partition: partition.parse().map_err(|_| bad())?,
        first: first.parse().map_err(|_| bad())?,
        last: last.parse().map_err(|_| bad())?,
    };
    if range.topic.is_empty() || range.partition < 0 || range.first < 0 || range.first > range.last
    {
        return Err(bad());
    }
    Ok(range)
}

/// Counts per org, sandbox and feedback status, for `--dry-run`.
#[derive(Debug, Default)]
pub struct Tally {
    pub counts: BTreeMap<(String, String, String), u64>,
}

impl Tally {
    pub fn add(&mut self, facts: &Facts<'_>) {
        let name = |v: Option<&str>| v.unwrap_or("-").to_owned();
        *self
            .counts
            .entry((name(facts.org), name(facts.sandbox), name(facts.status)))
            .or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// A table with a header line and a total.
    pub fn render(&self) -> String {
        let mut rows = vec![(
            "org".to_owned(),
            "sandbox".to_owned(),
            "status".to_owned(),
            "events".to_owned(),
        )];
        for ((org, sandbox, status), n) in &self.counts {
            rows.push((org.clone(), sandbox.clone(), status.clone(), n.to_string()));
        }
        rows.push((
            "total".into(),
            String::new(),
            String::new(),
            self.total().to_string(),
        ));
        let width = |f: fn(&(String, String, String, String)) -> &String| {
            rows.iter().map(|r| f(r).len()).max().unwrap_or(0)
        };
        let (a, b, c) = (width(|r| &r.0), width(|r| &r.1), width(|r| &r.2));
        rows.iter()
            .map(|r| format!("{:a$}  {:b$}  {:c$}  {:>6}\n", r.0, r.1, r.2, r.3))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_match_any_value_within_a_field_and_all_fields() {
        let f = Filters {
            orgs: vec!["a".into(), "b".into()],
            statuses: vec!["bounce".into()],
            ..Default::default()
        };
        let facts = |org, status| Facts {
            org: Some(org),
            status: Some(status),
            ..Default::default()
        };
        assert!(f.matches(&facts("a", "bounce")));
        assert!(f.matches(&facts("b", "bounce")));
        assert!(!f.matches(&facts("c", "bounce")));
        assert!(!f.matches(&facts("a", "sent")));
        // A field the record lacks never matches a filter on it.
        assert!(!f.matches(&Facts::default()));
        assert!(Filters::default().matches(&Facts::default()));
    }

    #[test]
    fn the_spec_event_is_described_by_its_facts() {
        let bytes = include_bytes!("../../examples/event.json");
        let event = crate::domain::event::parse(Some(bytes), usize::MAX).unwrap();
        let facts = Facts::of_event(&event);
        assert_eq!(facts.org, Some("myImsOrg"));
        assert_eq!(facts.channel, Some("email"));
        assert!(facts.status.is_some() && facts.request_id.is_some());
        assert!(facts.campaign.is_some());
    }

    #[test]
    fn outcomes_selected_are_failed_or_skipped_for_a_named_reason() {
        let o = |status: &str, reason: Value| json!({ "status": status, "reason": reason });
        let no_webhook = o("skipped", json!("no_webhook"));
        assert!(outcome_selected(
            &o("failed", json!("http_status")),
            true,
            &[]
        ));
        assert!(!outcome_selected(
            &o("failed", json!("http_status")),
            false,
            &[]
        ));
        assert!(!outcome_selected(&o("delivered", Value::Null), true, &[]));
        assert!(!outcome_selected(&no_webhook, true, &[]));
        assert!(outcome_selected(&no_webhook, true, &["no_webhook".into()]));
        assert!(!outcome_selected(&no_webhook, true, &["disabled".into()]));
        assert!(outcome_selected(&no_webhook, false, &[ANY_REASON.into()]));
        let invalid = o("invalid", json!("invalid_event"));
        assert!(!outcome_selected(&invalid, true, &[ANY_REASON.into()]));
    }

    #[test]
    fn a_window_needs_a_start_unless_all_or_ranges() {
        let w = |from, to| Window {
            from_ms: from,
            to_ms: to,
        };
        assert_eq!(
            w(None, Some(5)).check(false, false),
            Err(SelectionError::Unbounded)
        );
        assert!(w(None, None).check(false, true).is_ok());
        assert!(w(None, None).check(true, false).is_ok());
        assert!(w(Some(1), Some(5)).check(false, false).is_ok());
        assert!(matches!(
            w(Some(5), Some(5)).check(false, false),
            Err(SelectionError::Empty(..))
        ));
    }

    #[test]
    fn ranges_parse_with_topics_that_contain_colons() {
        assert_eq!(
            parse_range("message-feedback:3:100-200").unwrap(),
            OffsetRange {
                topic: "message-feedback".into(),
                partition: 3,
                first: 100,
                last: 200
            }
        );
        assert_eq!(parse_range("a:b:0:1-1").unwrap().topic, "a:b");
        for bad in ["t:0:5-4", "t:0", "t:x:1-2", ":0:1-2", "t:0:1", "t:-1:1-2"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tally_counts_per_org_sandbox_and_status() {
        let mut t = Tally::default();
        let facts = |org, status| Facts {
            org: Some(org),
            sandbox: Some("s"),
            status: Some(status),
            ..Default::default()
        };
        t.add(&facts("a", "bounce"));
        t.add(&facts("a", "bounce"));
        t.add(&facts("b", "sent"));
        assert_eq!(t.total(), 3);
        let table = t.render();
        assert!(
            table.contains("\na      s        bounce       2\n"),
            "{table}"
        );
        assert!(
            table.ends_with("total                        3\n"),
            "{table}"
        );
    }

    #[test]
    fn replay_records_round_trip() {
        let r = ReplayRecord {
            kind: "replay".into(),
            replay: Replay {
                id: "r1".into(),
                requested_at: "2026-11-28T10:00:00.000Z".into(),
                source: "input".into(),
            },
            event: json!({ "_id": "e1" }),
            source: Source {
                topic: "t".into(),
                partition: 1,
                offset: 2,
            },
        };
        let back: ReplayRecord = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(back, r);
        crate::schema::validate(
            crate::schema::Kind::Replay,
            &serde_json::from_slice(&r.to_json()).unwrap(),
        )
        .unwrap();
    }
}
