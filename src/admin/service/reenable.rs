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
use crate::domain::health::down_since;
use crate::domain::time::rfc3339_millis;
use crate::schema::Violation;

/// The body of a re-enable: where the redelivery starts (default: when it went down).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reenable {
    pub from: Option<String>,
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
    let failing = svc.settings.health.failing_before_disable();
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
