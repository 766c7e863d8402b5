//! Notifications: an org's operational events sent to its notification endpoint (the
//! `notification/{imsOrg}` record) as Standard Webhooks requests. What is sent, to whom,
//! and which offsets of the operational-events topic are done; no I/O here.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::config::NotificationConfig;
use super::operational::OperationalEvent;

/// Why an operational event is not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSent {
    /// The org has no notification endpoint.
    NoEndpoint,
    Disabled,
    /// The endpoint's `events` leave this type out.
    NotSelected,
}

/// Whether `event` goes to `endpoint` (the org's record, if it has one).
pub fn route(
    endpoint: Option<&NotificationConfig>,
    event: &OperationalEvent,
) -> Result<(), NotSent> {
    let endpoint = endpoint.ok_or(NotSent::NoEndpoint)?;
    if !endpoint.enabled {
        return Err(NotSent::Disabled);
    }
    if !endpoint.wants(event.kind.as_str()) {
        return Err(NotSent::NotSelected);
    }
    Ok(())
}

/// The request body: the Standard Webhooks envelope (`type`, `timestamp`, `data`), the
/// operational event as `data`. The request's `webhook-id` is the event's id, so a
/// receiver de-duplicates a notification sent again after a fault.
pub fn body(event: &OperationalEvent) -> Value {
    json!({
        "type": event.kind.as_str(),
        "timestamp": event.occurred_at,
        "data": event,
    })
}

/// The offsets of one partition handed out and not yet done: the consumer commits up to
/// the first one not done, so a restart sends again what was under way (at least once),
/// never skips it.
#[derive(Debug, Default)]
pub struct Completions {
    pending: BTreeSet<i64>,
    /// One past the highest offset seen.
    next: Option<i64>,
}

impl Completions {
    pub fn seen(&mut self, offset: i64) {
        self.pending.insert(offset);
        self.next = Some(self.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    pub fn done(&mut self, offset: i64) {
        self.pending.remove(&offset);
    }

    /// The offset to commit: the first not done, or one past the last seen.
    pub fn committable(&self) -> Option<i64> {
        self.pending.first().copied().or(self.next)
    }

    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::{typed, ConfigRecord};
    use crate::domain::health::{EventType, State};

    fn endpoint(extra: Value) -> NotificationConfig {
        let mut record = json!({
            "kind": "notification", "imsOrg": "org", "url": "https://ops.example.com/hooks",
            "enabled": true, "authentication": {"type": "none"},
            "signing": {"secret": {"ref": "env:OPS_SIGNING"}},
            "updatedAt": "2026-12-08T00:00:00Z"
        });
        for (k, v) in extra.as_object().unwrap() {
            record[k] = v.clone();
        }
        crate::schema::validate(crate::schema::Kind::Notification, &record).unwrap();
        match typed(&record).unwrap() {
            ConfigRecord::Notification(n) => n,
            other => panic!("{other:?}"),
        }
    }

    fn event(kind: EventType) -> OperationalEvent {
        OperationalEvent {
            id: format!("op_{}", "0123456789abcdef".repeat(2)),
            kind,
            occurred_at: "2026-12-08T01:00:00.000Z".into(),
            ims_org: "org".into(),
            sandbox_id: "sb".into(),
            webhook_version: Some("0-4".into()),
            state: State::Failing,
            since: None,
            counts: None,
            exhausted: None,
            last_error: None,
            by: None,
        }
    }

    #[test]
    fn an_event_goes_to_an_enabled_endpoint_that_selects_its_type() {
        let failing = event(EventType::Failing);
        assert_eq!(route(None, &failing), Err(NotSent::NoEndpoint));
        assert_eq!(route(Some(&endpoint(json!({}))), &failing), Ok(()));
        let off = endpoint(json!({"enabled": false}));
        assert_eq!(route(Some(&off), &failing), Err(NotSent::Disabled));
        let some = endpoint(json!({"events": ["webhook.disabled"]}));
        assert_eq!(route(Some(&some), &failing), Err(NotSent::NotSelected));
        assert_eq!(route(Some(&some), &event(EventType::Disabled)), Ok(()));
    }

    #[test]
    fn the_body_is_the_standard_webhooks_envelope_of_the_event() {
        let e = event(EventType::Exhausted);
        let b = body(&e);
        assert_eq!(b["type"], "event.exhausted");
        assert_eq!(b["timestamp"], "2026-12-08T01:00:00.000Z");
        assert_eq!(b["data"]["id"], e.id.as_str());
        crate::schema::validate(crate::schema::Kind::OperationalEvent, &b["data"]).unwrap();
    }

    #[test]
    fn a_notification_record_without_signing_or_with_a_plain_url_is_refused() {
        let rules = crate::domain::config::Rules::default();
        let mut record = serde_json::to_value(endpoint(json!({}))).unwrap();
        assert!(crate::domain::config::refusals(&record, rules).is_empty());
        record["url"] = json!("http://ops.example.com/hooks");
        record["headers"] = json!({"webhook-id": "x"});
        record.as_object_mut().unwrap().remove("signing");
        let fields: Vec<String> = crate::domain::config::refusals(&record, rules)
            .into_iter()
            .map(|v| format!("{}: {}", v.field, v.message))
            .collect();
        let all = fields.join("\n");
        assert!(all.contains("/url"), "{all}");
        assert!(all.contains("/headers/webhook-id"), "{all}");
        assert!(all.contains("signing"), "{all}");
        record["signing"] = Value::Null;
        assert!(!crate::domain::config::refusals(&record, rules).is_empty());
        let key = crate::domain::config::ConfigKey::parse("notification/org").unwrap();
        assert_eq!(key, endpoint(json!({})).key());
        assert_eq!(key.to_string(), "notification/org");
        assert!(crate::domain::config::ConfigKey::parse("notification/org/x").is_err());
    }

    #[test]
    fn the_committable_offset_is_the_first_not_done() {
        let mut c = Completions::default();
        assert_eq!(c.committable(), None);
        for o in 10..15 {
            c.seen(o);
        }
        c.done(11);
        c.done(10);
        assert_eq!(c.committable(), Some(12));
        c.done(13);
        assert_eq!(c.committable(), Some(12));
        c.done(12);
        c.done(14);
        assert_eq!(c.committable(), Some(15));
        assert_eq!(c.in_flight(), 0);
        // Read again after a rebalance: handed out again, the commit waits for it.
        c.seen(12);
        assert_eq!(c.committable(), Some(12));
    }
}
