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
    /// The last redelivery that let each webhook's breaker probe at once (by webhook key):
    /// once per replay, so a replay to an endpoint still down probes it once, not per event.
    replay_probes: Mutex<HashMap<String, String>>,
}

/// Guarded HTTPS senders with `lanes` connection pools each (one per org the operator
/// opened ranges for, and one for every other org), as `[delivery]` describes them.
pub fn senders_from_settings(settings: &Settings, lanes: usize) -> Result<Senders, DelivererError> {
    let d = &settings.delivery;
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
    Ok(Senders::new(shared, by_org))
}

/// Authentication and signing with the secrets `[secrets]` lets requests open.
pub fn auth_from_settings(settings: &Settings) -> Result<Auth, DelivererError> {
    Ok(Auth::new(Secrets::new(
        settings.sealing_key()?,
        SecretScope::from_settings(&settings.secrets),
    )))
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
        Ok(Deliverer::new(
            senders_from_settings(settings, lanes)?,
            auth_from_settings(settings)?,
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
            replay_probes: Mutex::new(HashMap::new()),
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
        // A new version (an edit, a re-enable) is reason to believe the endpoint may work
        // now: its open breaker probes with the next request instead of cooling down.
        self.endpoints
            .probe_now(&target.endpoint_key, &target.webhook_key);
        target
    }

    /// The first event of a redelivery to `webhook` is its open breaker's probe.
    fn probe_for_replay(&self, host: &str, webhook: &str, replay_id: &str) {
        let mut probes = self.replay_probes.lock().unwrap_or_else(|e| e.into_inner());
        if probes.get(webhook).is_some_and(|id| id == replay_id) {
            return;
        }
        if probes.len() >= MAX_TARGETS {
            probes.clear();
        }
        probes.insert(webhook.to_owned(), replay_id.to_owned());
        drop(probes);
        self.endpoints.probe_now(host, webhook);
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
        if let (Some(replay), false) = (&progress.replay, attempts.iter().any(Attempt::was_sent)) {
            self.probe_for_replay(key, &target.webhook_key, &replay.id);
        }
        let mut forced = false;
        let pass = loop {
            let returning = progress.busy_parks > 0 && !forced;
            let refusal = match self
                .endpoints
                .admit_capped(key, &target.webhook_key, body.len(), rate, returning)
                .await
            {
                Ok(pass) => break pass,
                Err(refusal) => refusal,
            };
            let elapsed = Duration::from_millis(
                unix_ms(SystemTime::now()).saturating_sub(progress.first_seen_ms),
            );
            let sent = attempts.iter().any(Attempt::was_sent);
            let after = after_refusal(
                &target.policy,
                refusal,
                elapsed,
                sent,
                progress.busy_parks,
                rand::random::<f64>(),
            );
            debug!(
                event_id = event.id,
                endpoint = key,
                ?refusal,
                ?after,
                "refused"
            );
            if matches!(refusal, Refusal::WebhookOpen(_) | Refusal::HostOpen(_)) {
                crate::observe::metrics()
                    .attempts
                    .with_label_values(&["breaker_open"])
                    .inc();
            }
            let (delay, busy) = match after {
                AfterRefusal::Park { delay, busy } => (delay, busy),
                AfterRefusal::LastChance if !forced => {
                    self.endpoints.probe_now(key, &target.webhook_key);
                    forced = true;
                    continue;
                }
                // Another probe is in flight: its answer comes within a request's timeout.
                AfterRefusal::LastChance
                    if target
                        .policy
                        .max_age
                        .is_none_or(|max| elapsed <= max.saturating_add(LAST_CHANCE_GRACE)) =>
                {
                    (breaker_delay(BUSY_WAIT, rand::random::<f64>()), false)
                }
                AfterRefusal::LastChance | AfterRefusal::End => {
                    if !sent {
                        attempts.push(not_sent(refusal));
                    }
                    return done(Some(Reason::RetriesExhausted), attempts);
                }
            };
            return Step::Park {
                webhook: used.clone(),
                attempts,
                delay,
                busy,
            };
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

/// What becomes of an event its endpoint refused.
#[derive(Debug, Clone, Copy, PartialEq)]
enum AfterRefusal {
    /// Parked for `delay`. `busy`: its queue was full or it is over its rate cap (such parks
    /// back off on their own); otherwise a breaker is open and `delay` reaches its next probe.
    Park { delay: Duration, busy: bool },
    /// Its maximum age is reached: it ends with the attempts it has.
    End,
    /// Its maximum age comes before the breaker's next probe and no request was ever sent
    /// for it: it is sent now, as the probe, so no event ends without one.
    LastChance,
}

/// How long an event refused by an open breaker is parked: until the breaker's next probe
/// (`until_probe`), spread over a fifth of that (at least a second) after it, so the events
/// parked behind a breaker come back one after another and the first of them is the probe.
fn breaker_delay(until_probe: Duration, random: f64) -> Duration {
    let spread = (until_probe / 5).max(BUSY_WAIT);
    until_probe.max(BUSY_WAIT) + spread.mul_f64(random.clamp(0.0, 1.0))
}

/// Decides what becomes of an event its endpoint refused, `elapsed` after it was first
/// seen; `sent`: a request was sent for it before. A full queue or a rate cap parks it for
/// a while; an open breaker parks it until the breaker's next probe. Neither counts as an
/// attempt: the retry schedule goes on only from requests that were sent.
fn after_refusal(
    policy: &RetryPolicy,
    refusal: Refusal,
    elapsed: Duration,
    sent: bool,
    busy_parks: u32,
    random: f64,
) -> AfterRefusal {
    let (delay, busy) = match refusal {
        Refusal::Busy(expected) => (
            busy_delay(
                busy_parks.saturating_add(1),
                expected,
                policy.jitter,
                random,
            ),
            true,
        ),
        // The rate says when its turn comes: parked until then, not re-read every minute.
        Refusal::Capped(turn) => (capped_delay(turn, policy.jitter, random), true),
        Refusal::WebhookOpen(until) | Refusal::HostOpen(until) => {
            (breaker_delay(until, random), false)
        }
    };
    if policy.within_max_age(elapsed, delay) {
        AfterRefusal::Park { delay, busy }
    } else if busy || sent {
        AfterRefusal::End
    } else {
        AfterRefusal::LastChance
    }
}

/// Past its maximum age, an event whose last-chance probe found another probe in flight
/// waits for it this much longer, at most, before it ends.
const LAST_CHANCE_GRACE: Duration = Duration::from_secs(600);

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

    fn policy_of_a_minute() -> RetryPolicy {
        RetryPolicy {
            schedule: vec![Duration::from_secs(5); 3],
            jitter: 0.0,
            retry_after_cap: Duration::from_secs(60),
            max_age: Some(Duration::from_secs(60)),
        }
    }

    #[test]
    fn an_open_breaker_parks_the_event_until_its_next_probe_without_using_the_schedule() {
        let secs = Duration::from_secs;
        let p = policy_of_a_minute();
        let open = Refusal::WebhookOpen(secs(30));
        // Parked until the probe, spread over a fifth of the wait after it.
        assert_eq!(
            after_refusal(&p, open, secs(0), true, 0, 0.0),
            AfterRefusal::Park {
                delay: secs(30),
                busy: false
            }
        );
        assert_eq!(
            after_refusal(&p, open, secs(0), true, 0, 0.5),
            AfterRefusal::Park {
                delay: secs(33),
                busy: false
            }
        );
        // A probe in flight (half-open) answers "a second": at least that.
        assert_eq!(
            after_refusal(
                &p,
                Refusal::HostOpen(Duration::ZERO),
                secs(0),
                false,
                0,
                0.0
            ),
            AfterRefusal::Park {
                delay: secs(1),
                busy: false
            }
        );
    }

    #[test]
    fn no_event_ends_without_a_request_because_a_breaker_was_open() {
        let secs = Duration::from_secs;
        let p = policy_of_a_minute();
        let open = Refusal::WebhookOpen(secs(30));
        // The probe comes after the event's maximum age: never sent, it gets its chance.
        assert_eq!(
            after_refusal(&p, open, secs(45), false, 0, 0.0),
            AfterRefusal::LastChance
        );
        // Sent before: it ends with the answers it had.
        assert_eq!(
            after_refusal(&p, open, secs(45), true, 0, 0.0),
            AfterRefusal::End
        );
        // A full queue at the end of its age is not the endpoint failing: it ends.
        assert_eq!(
            after_refusal(&p, Refusal::Busy(secs(30)), secs(45), false, 0, 0.0),
            AfterRefusal::End
        );
    }

    #[test]
    fn refusals_recorded_by_older_versions_are_not_requests() {
        let at = |status: Option<u16>, error: Option<&str>| Attempt {
            at: String::new(),
            http_status: status,
            error: error.map(str::to_owned),
            duration_ms: 0,
        };
        assert!(!not_sent(Refusal::WebhookOpen(Duration::ZERO)).was_sent());
        assert!(at(Some(503), None).was_sent());
        assert!(at(None, Some("timed out")).was_sent());
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
