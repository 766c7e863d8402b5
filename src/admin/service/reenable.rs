//! Re-enabling a webhook and redelivering what it missed while it was down: the events
//! that failed, or were skipped as `webhook_disabled`, since it went down, as one window
//! redelivery with its progress.

use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::Value;

use super::redeliver::{self, Queued, WindowRequest};
use super::webhooks;
use super::{At, Service, Versioned};
use crate::admin::deliveries::Keep;
use crate::admin::problem::Problem;
use crate::admin::versions::Expect;
use crate::domain::config::ConfigKey;
use crate::domain::time::{parse_rfc3339, rfc3339_millis};
use crate::join::disable::HEALTH;
use crate::schema::Violation;

/// The body of a re-enable: where the redelivery starts (default: when it went down).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reenable {
    pub from: Option<String>,
}

/// When a disabled webhook's record says it went down: its `updatedAt`; for a disable by
/// health, `failing` before that (the disable period and the health window: failing began
/// at least the period before the disable, which comes at the first tick after it), whose
/// failed events were missed too. `None` for a webhook that is not disabled or says no
/// time.
pub fn down_since(record: &Value, failing: Duration) -> Option<SystemTime> {
    if record["enabled"] != Value::Bool(false) {
        return None;
    }
    let at = parse_rfc3339(record["updatedAt"].as_str()?)?;
    if record["updatedBy"] == HEALTH {
        return at.checked_sub(failing).or(Some(at));
    }
    Some(at)
}

/// Enables the webhook and starts the redelivery of what failed or was skipped as
/// `webhook_disabled` from `from` (default: [`down_since`]) until now.
pub async fn reenable(
    svc: &Service,
    at: At<'_>,
    expect: &Expect,
    body: &Reenable,
) -> Result<(Versioned<Value>, Queued), Problem> {
    at.allow(true)?;
    let key = ConfigKey::webhook(at.org, at.sandbox);
    let current = svc.current(&key)?.ok_or_else(|| {
        Problem::not_found(format!(
            "org {:?} has no webhook in sandbox {:?}",
            at.org, at.sandbox
        ))
    })?;
    let record: Value = serde_json::from_slice(&current.value)
        .map_err(|e| Problem::unavailable(format!("stored record unreadable: {e}")))?;
    let health = &svc.settings.health;
    let failing = Duration::from_secs(health.disable_after_secs.saturating_add(health.window_secs));
    let from = match &body.from {
        Some(from) => from.clone(),
        None => match down_since(&record, failing) {
            // No further back than the delivery log keeps (a window may not be wider).
            Some(since) => {
                let keep = Keep::from_settings(&svc.settings.admin).age;
                let oldest = SystemTime::now()
                    .checked_sub(keep.saturating_sub(Duration::from_secs(60)))
                    .unwrap_or(since);
                rfc3339_millis(since.max(oldest))
            }
            None => {
                return Err(Problem::invalid(vec![Violation {
                    field: "/from".into(),
                    message:
                        "required: the webhook is not disabled, so when it went down is not known"
                            .into(),
                }]))
            }
        },
    };
    let enabled = webhooks::set_enabled(svc, at, expect, true).await?;
    let request = WindowRequest {
        status: Some(vec!["failed".into(), "skipped".into()]),
        from: Some(from),
        to: None,
        reasons: Some(vec!["webhook_disabled".into()]),
    };
    let started = redeliver::window(svc, at, &request).await?;
    Ok((enabled, started))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_webhook_went_down_when_it_was_disabled_or_when_it_began_failing() {
        let day = Duration::from_secs(86_400);
        let at = "2026-12-07T10:00:00.000Z";
        let by = |who: &str| json!({"enabled": false, "updatedAt": at, "updatedBy": who});
        let disabled = parse_rfc3339(at).unwrap();
        assert_eq!(down_since(&by("acme"), day), Some(disabled));
        assert_eq!(down_since(&by("receiver"), day), Some(disabled));
        assert_eq!(down_since(&by("health"), day), Some(disabled - day));
        let enabled = json!({"enabled": true, "updatedAt": at});
        assert_eq!(down_since(&enabled, day), None);
        assert_eq!(down_since(&json!({"enabled": false}), day), None);
    }
}
