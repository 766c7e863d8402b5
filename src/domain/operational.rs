//! Operational events: what owners and operators are told about a webhook's health
//! (`webhook.failing`, `webhook.recovered`, `webhook.disabled`, `webhook.enabled`,
//! `event.exhausted`), on the operational-events topic and to an org's notification
//! endpoint. Schema: `schemas/operational-event.schema.json`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::health::{EventType, Exhausted, Health, HealthPolicy, LastError, Rate, State};
use super::time::rfc3339_millis_of_unix_ms;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationalEvent {
    /// Stable for the same change: worked out again after a fault, it is the same id, so a
    /// notification's receiver can de-duplicate by it (it is the request's `webhook-id`).
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub occurred_at: String,
    pub ims_org: String,
    pub sandbox_id: String,
    /// The webhook's config version (`{partition}-{offset}`) the change concerns.
    pub webhook_version: Option<String>,
    /// The webhook's state after the change.
    pub state: State,
    /// Failing since (RFC 3339).
    pub since: Option<String>,
    /// Requests over the health window.
    pub counts: Option<Rate>,
    /// `event.exhausted`: the events that ended failed in the window.
    pub exhausted: Option<ExhaustedEvents>,
    pub last_error: Option<ErrorSeen>,
    /// Who disabled or enabled it: `health`, `receiver`, or the API token's name.
    pub by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExhaustedEvents {
    pub count: u64,
    pub from: String,
    pub to: String,
    pub reasons: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorSeen {
    pub at: String,
    pub http_status: Option<u16>,
    pub error: Option<String>,
}

impl From<&LastError> for ErrorSeen {
    fn from(e: &LastError) -> Self {
        ErrorSeen {
            at: rfc3339_millis_of_unix_ms(e.at_ms),
            http_status: e.http_status,
            error: e.error.clone(),
        }
    }
}

impl From<&Exhausted> for ExhaustedEvents {
    fn from(e: &Exhausted) -> Self {
        ExhaustedEvents {
            count: e.count,
            from: rfc3339_millis_of_unix_ms(e.from_ms),
            to: rfc3339_millis_of_unix_ms(e.to_ms),
            reasons: e.reasons.clone(),
        }
    }
}

/// The stable id of the `kind` change of `org`/`sandbox` at `at_ms` (and `version`).
pub fn event_id(kind: EventType, org: &str, sandbox: &str, version: &str, at_ms: u64) -> String {
    let mut h = Sha256::new();
    for part in [kind.as_str(), org, sandbox, version, &at_ms.to_string()] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("op_{hex}")
}

impl OperationalEvent {
    /// The event announcing `kind` of the webhook whose health is `health`, at `at_ms`;
    /// `exhausted`: the failed events taken for an `event.exhausted`.
    pub fn of(
        kind: EventType,
        at_ms: u64,
        health: &Health,
        policy: &HealthPolicy,
        exhausted: Option<&Exhausted>,
        by: Option<&str>,
    ) -> Self {
        let version = health.version.clone().unwrap_or_default();
        OperationalEvent {
            id: event_id(kind, &health.ims_org, &health.sandbox_id, &version, at_ms),
            kind,
            occurred_at: rfc3339_millis_of_unix_ms(at_ms),
            ims_org: health.ims_org.clone(),
            sandbox_id: health.sandbox_id.clone(),
            webhook_version: health.version.clone(),
            state: health.state,
            since: health.since_ms.map(rfc3339_millis_of_unix_ms),
            counts: Some(health.rate(at_ms, policy)),
            exhausted: exhausted.map(ExhaustedEvents::from),
            last_error: health.last_error.as_ref().map(ErrorSeen::from),
            by: by.map(str::to_owned),
        }
    }

    /// A webhook disabled or enabled by a config write (by `by`), at version `version`.
    pub fn config_change(
        enabled: bool,
        at_ms: u64,
        ims_org: &str,
        sandbox_id: &str,
        version: &str,
        by: &str,
    ) -> Self {
        let kind = if enabled {
            EventType::Enabled
        } else {
            EventType::Disabled
        };
        OperationalEvent {
            id: event_id(kind, ims_org, sandbox_id, version, at_ms),
            kind,
            occurred_at: rfc3339_millis_of_unix_ms(at_ms),
            ims_org: ims_org.to_owned(),
            sandbox_id: sandbox_id.to_owned(),
            webhook_version: Some(version.to_owned()),
            state: if enabled {
                State::Healthy
            } else {
                State::Disabled
            },
            since: None,
            counts: None,
            exhausted: None,
            last_error: None,
            by: Some(by.to_owned()),
        }
    }

    /// The record key: the webhook's config key, so one webhook's events keep their order.
    pub fn key(&self) -> String {
        format!("webhook/{}/{}", self.ims_org, self.sandbox_id)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A webhook's health as the API and the console show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthView {
    pub state: State,
    /// Failing since, or disabled since (RFC 3339).
    pub since: Option<String>,
    /// Requests over the health window.
    pub counts: Rate,
    pub last_error: Option<ErrorSeen>,
}

impl HealthView {
    /// The health of a webhook whose record says `enabled` (disabled since `updated_at`
    /// when not), from its tracker's state `health` if it has one, at `now_ms`.
    pub fn of(
        enabled: bool,
        updated_at: &str,
        health: Option<&Health>,
        now_ms: u64,
        policy: &HealthPolicy,
    ) -> Self {
        let counts = health.map_or(
            Rate {
                successes: 0,
                failures: 0,
                failure_rate: 0.0,
                window_seconds: policy.window.as_secs(),
            },
            |h| h.rate(now_ms, policy),
        );
        let last_error = health
            .and_then(|h| h.last_error.as_ref())
            .map(ErrorSeen::from);
        if !enabled {
            return HealthView {
                state: State::Disabled,
                since: Some(updated_at.to_owned()),
                counts,
                last_error,
            };
        }
        match health {
            Some(h) if h.state == State::Failing => HealthView {
                state: State::Failing,
                since: h.since_ms.map(rfc3339_millis_of_unix_ms),
                counts,
                last_error,
            },
            // The record is enabled again: the tracker's `disabled` is past.
            _ => HealthView {
                state: State::Healthy,
                since: None,
                counts,
                last_error,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::health::{Observation, Signal};

    #[test]
    fn the_view_follows_the_record_then_the_tracker() {
        let policy = HealthPolicy::default();
        let at = 1_790_000_000_000;
        let mut h = Health::new("org", "sbx");
        let failed = Observation {
            at_ms: at,
            sent: true,
            ok: false,
            ended_failed: None,
            http_status: Some(503),
            error: None,
        };
        h.observe(&Signal::of("org", "sbx", "0-1", &failed), &policy);
        let view = HealthView::of(true, "t", Some(&h), at + 1_000, &policy);
        assert_eq!(view.state, State::Failing);
        assert_eq!(view.since.as_deref(), Some("2026-09-21T14:13:20.000Z"));
        assert_eq!(view.counts.failures, 1);
        assert_eq!(view.last_error.as_ref().unwrap().http_status, Some(503));
        let off = HealthView::of(false, "2026-12-08T00:00:00Z", Some(&h), at, &policy);
        assert_eq!(off.state, State::Disabled);
        assert_eq!(off.since.as_deref(), Some("2026-12-08T00:00:00Z"));
        let unknown = HealthView::of(true, "t", None, at, &policy);
        assert_eq!(unknown.state, State::Healthy);
        assert_eq!(unknown.counts.failures + unknown.counts.successes, 0);
    }

    #[test]
    fn an_event_names_the_webhook_its_counts_and_last_error_with_a_stable_id() {
        let policy = HealthPolicy::default();
        let mut h = Health::new("org", "sbx");
        let o = Observation {
            at_ms: 1_790_000_000_000,
            sent: true,
            ok: false,
            ended_failed: None,
            http_status: Some(503),
            error: None,
        };
        h.observe(&Signal::of("org", "sbx", "0-42", &o), &policy);
        let e = OperationalEvent::of(EventType::Failing, o.at_ms, &h, &policy, None, None);
        assert_eq!(
            e,
            OperationalEvent::of(EventType::Failing, o.at_ms, &h, &policy, None, None)
        );
        assert_ne!(
            e.id,
            OperationalEvent::of(EventType::Failing, o.at_ms + 1, &h, &policy, None, None).id
        );
        let json: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(json["type"], "webhook.failing");
        assert_eq!(json["state"], "failing");
        assert_eq!(json["webhookVersion"], "0-42");
        assert_eq!(json["counts"]["failures"], 1);
        assert_eq!(json["lastError"]["httpStatus"], 503);
        assert_eq!(e.key(), "webhook/org/sbx");
        crate::schema::validate(crate::schema::Kind::OperationalEvent, &json).unwrap();
    }

    #[test]
    fn a_config_change_says_who_made_it() {
        let e = OperationalEvent::config_change(false, 1_000, "org", "sbx", "0-9", "health");
        let json: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(json["type"], "webhook.disabled");
        assert_eq!(json["by"], "health");
        assert_eq!(json["state"], "disabled");
        crate::schema::validate(crate::schema::Kind::OperationalEvent, &json).unwrap();
    }
}
