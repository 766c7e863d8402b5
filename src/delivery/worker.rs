//! One step of an event's delivery: an attempt now, then either its end (delivered or
//! failed) or the delay after which it is tried again. Waiting is not done here: the caller
//! parks the event durably, so no worker is held while an endpoint recovers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tracing::{debug, warn};

use super::auth::{Auth, AuthError, Prepared};
use super::endpoints::{endpoint_key, Endpoints, Refusal};
use super::sender::{DeliveryIds, Sender};
use crate::domain::config::{self, Rules, WebhookConfig};
use crate::domain::event::FeedbackEvent;
use crate::domain::host_schedule::Finished;
use crate::domain::outcome::{Attempt, Reason, WebhookRef};
use crate::domain::retry::{classify, AttemptResult, RetryPolicy, Verdict};
use crate::domain::time::unix_seconds;
use crate::join::Version;

/// First delay of an event parked because its webhook's queue was full; doubled for each
/// such park in a row, up to `BUSY_WAIT_MAX`, with jitter.
const BUSY_WAIT: Duration = Duration::from_secs(1);
const BUSY_WAIT_MAX: Duration = Duration::from_secs(60);

/// The delay of the `parks`-th busy park in a row (1-based), at least `expected` (how long
/// the webhook's queue is expected to need: coming back sooner only finds it full again),
/// with `random` in [0, 1) as jitter.
pub fn busy_delay(parks: u32, expected: Duration, jitter: f64, random: f64) -> Duration {
    let base = BUSY_WAIT
        .checked_mul(
            1u32.checked_shl(parks.saturating_sub(1))
                .unwrap_or(u32::MAX),
        )
        .unwrap_or(BUSY_WAIT_MAX)
        .max(expected)
        .min(BUSY_WAIT_MAX);
    let factor = 1.0 + jitter.clamp(0.0, 1.0) * (2.0 * random.clamp(0.0, 1.0) - 1.0);
    base.mul_f64(factor.max(0.0))
}

/// What the outcome's attempt list shows for an attempt a breaker refused.
fn not_sent(refusal: Refusal) -> Attempt {
    let why = match refusal {
        Refusal::HostOpen(_) => {
            "not sent: the host's circuit breaker is open (it could not be connected to)"
        }
        _ => "not sent: the webhook's circuit breaker is open",
    };
    Attempt {
        at: crate::domain::time::rfc3339_millis(SystemTime::now()),
        http_status: None,
        error: Some(why.to_owned()),
        duration_ms: 0,
    }
}

/// What a version of a webhook's record says about where and how it is delivered, worked
/// out on its first event rather than on every one.
struct Target {
    /// The scheduling key: one webhook per org + sandbox.
    webhook_key: String,
    /// The host (URL origin) whose connections it shares.
    endpoint_key: String,
    /// The URL passes the current rules (re-validated at use: a record stored under older
    /// rules must not slip through).
    url_ok: bool,
    /// Its authentication and signing settings, parsed; or why they cannot be applied.
    security: Result<Prepared, AuthError>,
}

/// Versions remembered before the map starts over (old versions are never asked again).
const MAX_TARGETS: usize = 10_000;

/// Where a delivery step leaves the event.
#[derive(Debug)]
pub enum Step {
    /// Terminal: delivered when `reason` is `None`.
    Done {
        reason: Option<Reason>,
        webhook: WebhookRef,
        attempts: Vec<Attempt>,
    },
    /// Try again after `delay`. `busy` when no attempt was made because the webhook's
    /// queue was full (such parks back off on their own).
    Park {
        webhook: WebhookRef,
        attempts: Vec<Attempt>,
        delay: Duration,
        busy: bool,
    },
}

pub struct Deliverer {
    sender: Sender,
    auth: Auth,
    policy: RetryPolicy,
    endpoints: Endpoints,
    rules: Rules,
    targets: Mutex<HashMap<Version, Arc<Target>>>,
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
            targets: Mutex::new(HashMap::new()),
        }
    }

    fn target(&self, webhook: &WebhookConfig, version: Version) -> Arc<Target> {
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(target) = targets.get(&version) {
            return target.clone();
        }
        if targets.len() >= MAX_TARGETS {
            targets.clear();
        }
        let target = Arc::new(Target {
            webhook_key: format!("{}/{}", webhook.ims_org, webhook.sandbox.id),
            endpoint_key: endpoint_key(&webhook.url),
            url_ok: config::check_url(&webhook.url, self.rules).is_ok(),
            security: self.auth.prepare(webhook),
        });
        targets.insert(version, target.clone());
        target
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Makes the next attempt for `event` with the current `webhook` (of config `version`).
    /// `attempts` are the
    /// earlier ones; `first_seen_ms` is when the event was first handled; `busy_parks` how
    /// many times in a row it found its webhook's queue full.
    #[allow(clippy::too_many_arguments)]
    pub async fn step(
        &self,
        event: &FeedbackEvent,
        webhook: &WebhookConfig,
        version: Version,
        body: Bytes,
        mut attempts: Vec<Attempt>,
        first_seen_ms: u64,
        busy_parks: u32,
        replay_id: Option<&str>,
    ) -> Step {
        let used = webhook_ref(webhook);
        let done = |reason, attempts| Step::Done {
            reason,
            webhook: used.clone(),
            attempts,
        };
        let target = self.target(webhook, version);
        if !target.url_ok {
            return done(Some(Reason::ConfigInvalid), attempts);
        }
        let elapsed =
            Duration::from_millis(unix_ms(SystemTime::now()).saturating_sub(first_seen_ms));
        let key = target.endpoint_key.as_str();
        let pass = match self
            .endpoints
            .admit(key, &target.webhook_key, body.len())
            .await
        {
            Ok(pass) => pass,
            Err(Refusal::Busy(expected)) => {
                let parks = busy_parks.saturating_add(1);
                let wait = busy_delay(parks, expected, self.policy.jitter, rand::random::<f64>());
                debug!(
                    event_id = event.id,
                    endpoint = key,
                    parks,
                    "webhook queue full; parking"
                );
                if !self.policy.within_max_age(elapsed, wait) {
                    return done(Some(Reason::RetriesExhausted), attempts);
                }
                return Step::Park {
                    webhook: used.clone(),
                    attempts,
                    delay: wait,
                    busy: true,
                };
            }
            Err(refusal) => {
                // A refusal by an open breaker is an attempt that was not made: the schedule
                // goes on, so an endpoint that stays down ends the event on the schedule.
                debug!(
                    event_id = event.id,
                    endpoint = key,
                    ?refusal,
                    "breaker open"
                );
                crate::observe::metrics()
                    .attempts
                    .with_label_values(&["breaker_open"])
                    .inc();
                attempts.push(not_sent(refusal));
                return self.after_failure(used, attempts, first_seen_ms, None);
            }
        };
        let at = SystemTime::now();
        let security = match target
            .security
            .as_ref()
            .map_err(|e| e.to_string())
            .and_then(|p| {
                self.auth
                    .headers(p, &event.id, unix_seconds(at), &body)
                    .map_err(|e| e.to_string())
            }) {
            Ok(security) => security,
            Err(e) => {
                // Not the endpoint's fault: the pass is dropped without a verdict.
                drop(pass);
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
                drop(pass);
                warn!(event_id = event.id, error = %e, "webhook headers cannot be sent");
                return done(Some(Reason::ConfigInvalid), attempts);
            }
        };
        let verdict = classify(&report.result);
        pass.finish(match &report.result {
            AttemptResult::Response { status, .. } => Finished::Answered {
                status: *status,
                latency: report.elapsed,
            },
            AttemptResult::Transport => Finished::Transport {
                connect: report.connect_failed,
                elapsed: report.elapsed,
            },
            AttemptResult::Blocked => Finished::NotSent,
        });
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
            Verdict::Retry => self.after_failure(used, attempts, first_seen_ms, retry_after),
        }
    }

    /// The step after a failed (or refused) attempt: park until the schedule's next delay,
    /// or end when the schedule is used up.
    fn after_failure(
        &self,
        webhook: WebhookRef,
        attempts: Vec<Attempt>,
        first_seen_ms: u64,
        retry_after: Option<Duration>,
    ) -> Step {
        let elapsed =
            Duration::from_millis(unix_ms(SystemTime::now()).saturating_sub(first_seen_ms));
        match self
            .policy
            .next_delay(attempts.len(), elapsed, retry_after, rand::random::<f64>())
        {
            Some(delay) => Step::Park {
                webhook,
                attempts,
                delay,
                busy: false,
            },
            None => Step::Done {
                reason: Some(Reason::RetriesExhausted),
                webhook,
                attempts,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_parks_back_off_with_jitter_up_to_a_minute() {
        let none = Duration::ZERO;
        assert_eq!(busy_delay(1, none, 0.0, 0.5), Duration::from_secs(1));
        assert_eq!(busy_delay(3, none, 0.0, 0.5), Duration::from_secs(4));
        assert_eq!(busy_delay(40, none, 0.0, 0.5), Duration::from_secs(60));
        assert_eq!(
            busy_delay(u32::MAX, none, 0.0, 0.5),
            Duration::from_secs(60)
        );
        let low = busy_delay(2, none, 0.2, 0.0);
        let high = busy_delay(2, none, 0.2, 0.999_999);
        assert!(low >= Duration::from_millis(1_599) && low <= Duration::from_millis(1_601));
        assert!(high > Duration::from_millis(2_399) && high <= Duration::from_millis(2_400));
    }

    #[tokio::test]
    async fn a_version_of_a_webhook_is_worked_out_once() {
        use crate::delivery::client::ClientOptions;
        use crate::delivery::secrets::Secrets;
        use crate::delivery::{build_client, Endpoints};
        use crate::domain::config::tests::sample_webhook;
        let settings = crate::settings::Settings::default();
        let policy = Arc::new(settings.address_policy().unwrap());
        let client = build_client(&ClientOptions {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            extra_ca_file: None,
            policy: policy.clone(),
        })
        .unwrap();
        let deliverer = Deliverer::new(
            Sender::new(client, policy),
            Auth::new(Secrets::new(None, settings.secret_scope())),
            settings.retry_policy(),
            Endpoints::new(settings.schedule_policy(), settings.wait_limits()),
            settings.rules(),
        );
        let webhook: WebhookConfig = serde_json::from_value(sample_webhook()).unwrap();
        let v = |offset| Version {
            partition: 0,
            offset,
        };
        let first = deliverer.target(&webhook, v(1));
        assert!(Arc::ptr_eq(&first, &deliverer.target(&webhook, v(1))));
        assert!(!Arc::ptr_eq(&first, &deliverer.target(&webhook, v(2))));
        assert_eq!(first.endpoint_key, "https://hooks.example.com:443");
        assert!(first.url_ok && first.security.is_ok());
    }

    #[test]
    fn a_busy_park_lasts_at_least_what_the_queue_is_expected_to_need() {
        let secs = Duration::from_secs;
        assert_eq!(busy_delay(1, secs(7), 0.0, 0.5), secs(7));
        assert_eq!(busy_delay(4, secs(7), 0.0, 0.5), secs(8), "doubling wins");
        assert_eq!(busy_delay(1, secs(3600), 0.0, 0.5), secs(60), "capped");
        assert_eq!(busy_delay(1, Duration::from_millis(5), 0.0, 0.5), secs(1));
    }
}
