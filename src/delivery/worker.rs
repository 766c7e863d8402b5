//! One step of an event's delivery: an attempt now, then either its end (delivered or
//! failed) or the delay after which it is tried again. Waiting is not done here: the caller
//! parks the event durably, so no worker is held while an endpoint recovers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tracing::{debug, warn};

use super::auth::Auth;
use super::endpoints::{endpoint_key, Endpoints, Refusal};
use super::sender::{DeliveryIds, Sender};
use crate::domain::config::{self, Rules, WebhookConfig};
use crate::domain::event::FeedbackEvent;
use crate::domain::outcome::{Attempt, Reason, WebhookRef};
use crate::domain::retry::{classify, AttemptResult, RetryPolicy, Verdict};
use crate::domain::time::unix_seconds;

/// How long an event waits when its endpoint already has all the requests it may have.
const BUSY_WAIT: Duration = Duration::from_secs(1);

/// Where a delivery step leaves the event.
#[derive(Debug)]
pub enum Step {
    /// Terminal: delivered when `reason` is `None`.
    Done {
        reason: Option<Reason>,
        webhook: WebhookRef,
        attempts: Vec<Attempt>,
    },
    /// Try again after `delay`.
    Park {
        webhook: WebhookRef,
        attempts: Vec<Attempt>,
        delay: Duration,
    },
}

pub struct Deliverer {
    sender: Sender,
    auth: Auth,
    policy: RetryPolicy,
    endpoints: Endpoints,
    rules: Rules,
}

fn webhook_ref(w: &WebhookConfig) -> WebhookRef {
    WebhookRef {
        name: w.name.clone(),
        url: w.url.clone(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Deliverer {
    pub fn new(
        sender: Sender,
        auth: Auth,
        policy: RetryPolicy,
        endpoints: Endpoints,
        rules: Rules,
    ) -> Self {
        Deliverer {
            sender,
            auth,
            policy,
            endpoints,
            rules,
        }
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Makes the next attempt for `event` with the current `webhook`. `attempts` are the
    /// earlier ones; `first_seen_ms` is when the event was first handled.
    pub async fn step(
        &self,
        event: &FeedbackEvent,
        webhook: &WebhookConfig,
        body: Bytes,
        mut attempts: Vec<Attempt>,
        first_seen_ms: u64,
        replay_id: Option<&str>,
    ) -> Step {
        let used = webhook_ref(webhook);
        let done = |reason, attempts| Step::Done {
            reason,
            webhook: used.clone(),
            attempts,
        };
        // Re-validated at use: a record stored under older rules must not slip through.
        if config::check_url(&webhook.url, self.rules).is_err() {
            return done(Some(Reason::ConfigInvalid), attempts);
        }
        let elapsed =
            Duration::from_millis(unix_ms(SystemTime::now()).saturating_sub(first_seen_ms));
        let key = endpoint_key(&webhook.url);
        let _pass = match self.endpoints.admit(&key).await {
            Ok(pass) => pass,
            Err(refusal) => {
                let wait = match refusal {
                    Refusal::Open(wait) => wait.max(BUSY_WAIT),
                    Refusal::Busy => BUSY_WAIT,
                };
                debug!(
                    event_id = event.id,
                    endpoint = key,
                    ?refusal,
                    "endpoint unavailable; parking"
                );
                if !self.policy.within_max_age(elapsed, wait) {
                    return done(Some(Reason::RetriesExhausted), attempts);
                }
                return Step::Park {
                    webhook: used.clone(),
                    attempts,
                    delay: wait,
                };
            }
        };
        let at = SystemTime::now();
        let security = match self
            .auth
            .headers(webhook, &event.id, unix_seconds(at), &body)
        {
            Ok(security) => security,
            Err(e) => {
                // Not the endpoint's fault; report it so a half-open breaker is not left waiting.
                self.endpoints.report(&key, true);
                warn!(event_id = event.id, error = %e, "webhook security settings cannot be applied");
                return done(Some(Reason::ConfigInvalid), attempts);
            }
        };
        let report = match self
            .sender
            .send(
                &webhook.url,
                webhook.headers.as_ref(),
                DeliveryIds {
                    webhook_id: &event.id,
                    replay_id,
                },
                at,
                &security,
                body,
            )
            .await
        {
            Ok(report) => report,
            Err(e) => {
                // Not the endpoint's fault; report it so a half-open breaker is not left waiting.
                self.endpoints.report(&key, true);
                warn!(event_id = event.id, error = %e, "webhook headers cannot be sent");
                return done(Some(Reason::ConfigInvalid), attempts);
            }
        };
        let verdict = classify(&report.result);
        self.endpoints.report(&key, verdict != Verdict::Retry);
        let retry_after = match &report.result {
            AttemptResult::Response { retry_after, .. } => *retry_after,
            _ => None,
        };
        debug!(event_id = event.id, status = ?report.attempt.http_status, error = ?report.attempt.error, ?verdict, "attempt");
        attempts.push(report.attempt);
        match verdict {
            Verdict::Success => done(None, attempts),
            Verdict::Fail => {
                let reason = match report.result {
                    AttemptResult::Blocked => Reason::DestinationBlocked,
                    _ => Reason::HttpStatus,
                };
                done(Some(reason), attempts)
            }
            Verdict::Retry => {
                let elapsed =
                    Duration::from_millis(unix_ms(SystemTime::now()).saturating_sub(first_seen_ms));
                match self.policy.next_delay(
                    attempts.len(),
                    elapsed,
                    retry_after,
                    rand::random::<f64>(),
                ) {
                    Some(delay) => Step::Park {
                        webhook: used.clone(),
                        attempts,
                        delay,
                    },
                    None => done(Some(Reason::RetriesExhausted), attempts),
                }
            }
        }
    }
}
