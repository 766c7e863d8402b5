//! One step of an event's delivery: an attempt now, then either its end (delivered or
//! failed) or the delay after which it is tried again. Waiting is not done here: the caller
//! parks the event durably, so no worker is held while an endpoint recovers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tracing::{debug, warn};

use super::auth::{Auth, AuthError, Prepared};
use super::client::{build_lanes, ClientError, ClientOptions};
use super::endpoints::{endpoint_key, Endpoints, Refusal, WaitLimits};
use super::secrets::{SecretScope, Secrets};
use super::sender::{AttemptReport, DeliveryIds, Sender, Senders};
use crate::domain::config::{self, ConfigKey, Rules, WebhookConfig};
use crate::domain::event::FeedbackEvent;
use crate::domain::host_schedule::Finished;
use crate::domain::outcome::{Attempt, Reason, Replay, WebhookRef};
use crate::domain::rate::{GroupShare, Rate};
use crate::domain::retry::{
    verdict, webhook_timeout, AttemptResult, ReceiverSignal, RetryPolicy, Verdict,
};
use crate::domain::time::{unix_ms, unix_seconds};
use crate::join::{Stored, Version};
use crate::settings::{Settings, SettingsError};

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

/// Longest a capped webhook's event is parked for its turn (its record is re-read then).
const CAPPED_WAIT_MAX: Duration = Duration::from_secs(3600);

/// The park of an event over its webhook's rate cap: until its expected turn, within
/// `jitter` (so the parked come back spread out), at least a second and at most an hour.
pub fn capped_delay(turn: Duration, jitter: f64, random: f64) -> Duration {
    let factor = 1.0 + jitter.clamp(0.0, 1.0) * (2.0 * random.clamp(0.0, 1.0) - 1.0);
    turn.clamp(BUSY_WAIT, CAPPED_WAIT_MAX)
        .mul_f64(factor.max(0.0))
        .max(BUSY_WAIT)
}

/// How an attempt ended, as the host's schedule learns from it.
fn finished(report: &AttemptReport) -> Finished {
    match &report.result {
        AttemptResult::Response { status, .. } => Finished::Answered {
            status: *status,
            latency: report.elapsed,
        },
        AttemptResult::Transport => Finished::Transport {
            connect: report.connect_failed,
            elapsed: report.elapsed,
        },
        AttemptResult::Blocked => Finished::NotSent,
    }
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
    /// The retry policy and request timeout in force for it: the deployment's, shaped by
    /// the webhook's own `delivery` within the operator's bounds.
    policy: RetryPolicy,
    timeout: Option<Duration>,
    /// Its rate cap, for the whole group.
    rate: Option<Rate>,
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

/// Carries out a receiver's request to disable its webhook: the version of the record the
/// request answered (a webhook changed since is left alone). Returns at once; the write
/// happens in the background, once per version.
pub trait Disabler: Send + Sync {
    fn disable(&self, key: ConfigKey, version: Version);
}

pub struct Deliverer {
    disabler: Option<Arc<dyn Disabler>>,
    /// This instance's share of the group (by input partitions): of each rate cap.
    share: Arc<GroupShare>,
    senders: Senders,
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

/// How far an event has come on its way to its webhook.
#[derive(Debug, Clone, Default)]
pub struct EventProgress {
    /// The attempts made so far (its outcome lists them all).
    pub attempts: Vec<Attempt>,
    /// When the event was first handled (Unix ms): the retry max age counts from it.
    pub first_seen_ms: u64,
    /// Parks in a row because the webhook's queue was full (they back off).
    pub busy_parks: u32,
    /// The operator's redelivery it belongs to, if any.
    pub replay: Option<Replay>,
}

/// Why a deliverer could not be made from the settings.
#[derive(Debug, thiserror::Error)]
pub enum DelivererError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl Deliverer {
    /// The deliverer the `[delivery]` and `[secrets]` settings describe: the guarded HTTPS
    /// client, the secrets it may open, the retry policy and the per-host queues. The
    /// processor, the admin API's test sends and the tests all make theirs here.
    pub fn from_settings(settings: &Settings) -> Result<Self, DelivererError> {
        let d = &settings.delivery;
        // Enough lanes for a host at its highest limit (see `Pass::lane`).
        let lanes =
            crate::domain::concurrency::lanes(d.host_concurrency_max, d.requests_per_connection);
        let sender = |policy: crate::domain::address::AddressPolicy| {
            let policy = Arc::new(policy);
            let options = ClientOptions::from_settings(d, policy.clone());
            Ok::<_, DelivererError>(Sender::with_lanes(build_lanes(&options, lanes)?, policy))
        };
        let shared = sender(settings.address_policy()?)?;
        let by_org = settings
            .org_address_policies()?
            .into_iter()
            .map(|(org, policy)| Ok((org, sender(policy)?)))
            .collect::<Result<_, DelivererError>>()?;
        let secrets = Secrets::new(
            settings.sealing_key()?,
            SecretScope::from_settings(&settings.secrets),
        );
        Ok(Deliverer::new(
            Senders::new(shared, by_org),
            Auth::new(secrets),
            settings.retry_policy(),
            Endpoints::new(
                settings.schedule_policy(),
                WaitLimits::from_settings(&settings.delivery),
            )
            .spread_over_connections(d.requests_per_connection),
            settings.rules(),
        ))
    }

    pub fn new(
        senders: Senders,
        auth: Auth,
        policy: RetryPolicy,
        endpoints: Endpoints,
        rules: Rules,
    ) -> Self {
        Deliverer {
            disabler: None,
            share: Arc::default(),
            senders,
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
            policy: self
                .policy
                .for_webhook(webhook.delivery.as_deref(), &self.rules.bounds),
            timeout: webhook_timeout(webhook.delivery.as_deref(), &self.rules.bounds),
            rate: webhook.rate_limit.map(|r| r.rate()),
        });
        targets.insert(version, target.clone());
        target
    }

    /// The deliverer, carrying out receivers' requests to disable their webhooks with
    /// `disabler` (without one, such requests end the event and are logged).
    pub fn with_disabler(mut self, disabler: Arc<dyn Disabler>) -> Self {
        self.disabler = Some(disabler);
        self
    }

    /// This instance's share of the group, for the input consumer to keep up to date.
    pub fn group_share(&self) -> Arc<GroupShare> {
        self.share.clone()
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The senders and the authentication, for a request outside the pipeline (a test send).
    pub fn senders(&self) -> &Senders {
        &self.senders
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Makes the next attempt for `event` with the current `webhook` (and its config
    /// version), given how far the event has come; the attempts move into the step.
    pub async fn step(
        &self,
        event: &FeedbackEvent,
        webhook: &Stored<WebhookConfig>,
        body: Bytes,
        progress: &mut EventProgress,
    ) -> Step {
        let (version, webhook) = (webhook.version, &webhook.value);
        let mut attempts = std::mem::take(&mut progress.attempts);
        let first_seen_ms = progress.first_seen_ms;
        let replay_id = progress.replay.as_ref().map(|r| r.id.as_str());
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
        let key = target.endpoint_key.as_str();
        let rate = target.rate.map(|r| r.share(self.share.fraction()));
        let pass = match self
            .endpoints
            .admit_capped(
                key,
                &target.webhook_key,
                body.len(),
                rate,
                progress.busy_parks > 0,
            )
            .await
        {
            Ok(pass) => pass,
            Err(refusal) => {
                return refused(
                    &target.policy,
                    &event.id,
                    key,
                    refusal,
                    used,
                    attempts,
                    progress,
                )
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
            .senders
            .for_org(&webhook.ims_org)
            .on_lane(pass.lane())
            .with_timeout(target.timeout)
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
        let verdict = verdict(&report.result, report.signal);
        if report.signal == Some(ReceiverSignal::Disable) {
            // Every event in flight may get the same answer: the disable's audit line is
            // the one to see.
            debug!(event_id = event.id, webhook = target.webhook_key, status = ?report.attempt.http_status, "the receiver asks to disable its webhook");
            if let Some(disabler) = &self.disabler {
                disabler.disable(webhook.key(), version);
            }
        }
        pass.finish(finished(&report));
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
                after_failure(&target.policy, used, attempts, first_seen_ms, retry_after)
            }
        }
    }
}

/// The step when the endpoint refused the attempt: a full queue parks the event for a
/// while (such parks back off on their own); an open breaker counts as an attempt that
/// was not made, so the schedule goes on and an endpoint that stays down ends the event
/// on the schedule.
fn refused(
    policy: &RetryPolicy,
    event_id: &str,
    key: &str,
    refusal: Refusal,
    used: WebhookRef,
    mut attempts: Vec<Attempt>,
    progress: &EventProgress,
) -> Step {
    let elapsed =
        Duration::from_millis(unix_ms(SystemTime::now()).saturating_sub(progress.first_seen_ms));
    let wait = match refusal {
        Refusal::Busy(expected) => {
            let parks = progress.busy_parks.saturating_add(1);
            debug!(
                event_id,
                endpoint = key,
                parks,
                "webhook queue full; parking"
            );
            busy_delay(parks, expected, policy.jitter, rand::random::<f64>())
        }
        // The rate says when its turn comes: parked until then, not re-read every minute.
        Refusal::Capped(turn) => {
            debug!(
                event_id,
                endpoint = key,
                turn_ms = turn.as_millis() as u64,
                "over its rate cap; parking until its turn"
            );
            capped_delay(turn, policy.jitter, rand::random::<f64>())
        }
        refusal => {
            debug!(event_id, endpoint = key, ?refusal, "breaker open");
            crate::observe::metrics()
                .attempts
                .with_label_values(&["breaker_open"])
                .inc();
            attempts.push(not_sent(refusal));
            return after_failure(policy, used, attempts, progress.first_seen_ms, None);
        }
    };
    if !policy.within_max_age(elapsed, wait) {
        return Step::Done {
            reason: Some(Reason::RetriesExhausted),
            webhook: used,
            attempts,
        };
    }
    Step::Park {
        webhook: used,
        attempts,
        delay: wait,
        busy: true,
    }
}

/// The step after a failed (or refused) attempt: park until the schedule's next delay,
/// or end when the schedule is used up.
fn after_failure(
    policy: &RetryPolicy,
    webhook: WebhookRef,
    attempts: Vec<Attempt>,
    first_seen_ms: u64,
    retry_after: Option<Duration>,
) -> Step {
    let elapsed = Duration::from_millis(unix_ms(SystemTime::now()).saturating_sub(first_seen_ms));
    match policy.next_delay(attempts.len(), elapsed, retry_after, rand::random::<f64>()) {
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
        use crate::domain::config::tests::sample_webhook;
        let mut settings = crate::settings::Settings::default();
        settings.delivery.connect_timeout_ms = 1_000;
        settings.delivery.request_timeout_ms = 1_000;
        let deliverer = Deliverer::from_settings(&settings).unwrap();
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
    fn an_event_over_its_rate_cap_is_parked_until_its_turn() {
        let secs = Duration::from_secs;
        assert_eq!(
            capped_delay(secs(400), 0.0, 0.5),
            secs(400),
            "no doubling, no minute cap"
        );
        assert_eq!(capped_delay(secs(5), 0.2, 0.0), Duration::from_secs(4));
        assert_eq!(capped_delay(secs(86_400), 0.0, 0.5), secs(3600));
        assert_eq!(capped_delay(Duration::ZERO, 0.2, 0.0), secs(1));
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
