//! A webhook's health, worked out from what its deliveries did: `healthy`, `failing` (since
//! its first failure after a success) or `disabled`; and the operational events its
//! changes are announced with. Plain state and functions: time comes in with each
//! observation (the attempt's own time) or tick, so every instance that replays the same
//! observations reaches the same state and the same events.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::time::parse_rfc3339;

/// Who the health trackers' disables are published as (`updatedBy`).
pub const BY_HEALTH: &str = "health";

/// The rules of the health model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// A webhook whose every delivery failed for this long is disabled.
    pub disable_after: Duration,
    /// The sliding window of the failure rate.
    pub window: Duration,
    /// `webhook.failing` is announced at most this often while a webhook fails.
    pub remind_every: Duration,
    /// Events that ended failed are announced together, once per this window.
    pub exhausted_window: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            disable_after: Duration::from_secs(5 * 24 * 3600),
            window: Duration::from_secs(3600),
            remind_every: Duration::from_secs(3600),
            exhausted_window: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Healthy,
    Failing,
    Disabled,
}

impl State {
    pub const ALL: [State; 3] = [State::Healthy, State::Failing, State::Disabled];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Healthy => "healthy",
            State::Failing => "failing",
            State::Disabled => "disabled",
        }
    }
}

/// The last failed request of a webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    /// Unix ms.
    pub at_ms: u64,
    pub http_status: Option<u16>,
    pub error: Option<String>,
}

/// What one delivery step of a webhook did: a request answered well or not, and whether
/// the event ended failed with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// When the request was made (Unix ms).
    pub at_ms: u64,
    /// A request was sent in this step (a step may only end the event).
    pub sent: bool,
    /// The request was answered with a 2xx.
    pub ok: bool,
    /// The event ended `failed` with this step (its reason).
    pub ended_failed: Option<String>,
    pub http_status: Option<u16>,
    pub error: Option<String>,
}

/// What the processor tells a webhook's health tracker about its delivery steps (topic
/// `{prefix}-health-signals`, key `webhook/{imsOrg}/{sandboxId}`): exactly once, one
/// signal per webhook per transaction sums the steps whose outcomes or parked records the
/// transaction commits, written in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Signal {
    pub ims_org: String,
    pub sandbox_id: String,
    /// The webhook record's version of the latest step.
    pub version: String,
    /// Requests answered 2xx, and the others.
    pub ok: u64,
    pub failed: u64,
    /// The latest step (Unix ms).
    pub last_ms: u64,
    /// The latest 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ok_ms: Option<u64>,
    /// The first failure after the latest 2xx (or of all, without one): the steps ended
    /// failing since then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
    /// Events that ended failed, by reason, and when the first and last did.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ended: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_from_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_to_ms: Option<u64>,
}

impl Signal {
    /// The signal of one step of webhook `org`/`sandbox` at `version`.
    pub fn of(org: &str, sandbox: &str, version: &str, o: &Observation) -> Self {
        let failed = o.sent && !o.ok;
        Signal {
            ims_org: org.to_owned(),
            sandbox_id: sandbox.to_owned(),
            version: version.to_owned(),
            ok: u64::from(o.sent && o.ok),
            failed: u64::from(failed),
            last_ms: o.at_ms,
            last_ok_ms: (o.sent && o.ok).then_some(o.at_ms),
            failing_since_ms: failed.then_some(o.at_ms),
            last_error: failed.then(|| LastError {
                at_ms: o.at_ms,
                http_status: o.http_status,
                error: o.error.clone(),
            }),
            ended: o
                .ended_failed
                .iter()
                .map(|reason| (reason.clone(), 1))
                .collect(),
            ended_from_ms: o.ended_failed.as_ref().map(|_| o.at_ms),
            ended_to_ms: o.ended_failed.as_ref().map(|_| o.at_ms),
        }
    }

    /// Adds the steps of `later`, which came after these.
    pub fn merge(&mut self, later: &Signal) {
        self.version.clone_from(&later.version);
        self.ok += later.ok;
        self.failed += later.failed;
        self.last_ms = self.last_ms.max(later.last_ms);
        self.failing_since_ms = if later.last_ok_ms.is_some() {
            later.failing_since_ms
        } else {
            self.failing_since_ms.or(later.failing_since_ms)
        };
        self.last_ok_ms = self.last_ok_ms.max(later.last_ok_ms);
        if later
            .last_error
            .as_ref()
            .is_some_and(|l| self.last_error.as_ref().is_none_or(|e| l.at_ms >= e.at_ms))
        {
            self.last_error.clone_from(&later.last_error);
        }
        for (reason, n) in &later.ended {
            *self.ended.entry(reason.clone()).or_default() += n;
        }
        self.ended_from_ms = min_some(self.ended_from_ms, later.ended_from_ms);
        self.ended_to_ms = self.ended_to_ms.max(later.ended_to_ms);
    }

    pub fn key(&self) -> String {
        format!("webhook/{}/{}", self.ims_org, self.sandbox_id)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn min_some(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Successes and failures in one minute of the sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// The minute (Unix ms / 60 000).
    pub minute: u64,
    pub ok: u64,
    pub failed: u64,
}

/// Events that ended failed, not yet announced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exhausted {
    pub count: u64,
    pub from_ms: u64,
    pub to_ms: u64,
    /// By reason (`retries_exhausted`, `http_status`, `destination_blocked`).
    pub reasons: BTreeMap<String, u64>,
}

/// A webhook's health, as kept (and written to the health topic) by its tracker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub ims_org: String,
    pub sandbox_id: String,
    pub state: State,
    /// Failing: since its first failure after its last success (Unix ms).
    #[serde(default)]
    pub since_ms: Option<u64>,
    #[serde(default)]
    pub last_success_ms: Option<u64>,
    #[serde(default)]
    pub last_error: Option<LastError>,
    /// The sliding window, oldest first.
    #[serde(default)]
    pub window: Vec<Bucket>,
    /// When `webhook.failing` was last announced.
    #[serde(default)]
    pub failing_announced_ms: Option<u64>,
    /// A `webhook.failing` was announced since the last `webhook.recovered`.
    #[serde(default)]
    pub announced: bool,
    #[serde(default)]
    pub exhausted: Option<Exhausted>,
    /// The config version of the latest observation.
    #[serde(default)]
    pub version: Option<String>,
}

/// The kinds of operational events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "webhook.failing")]
    Failing,
    #[serde(rename = "webhook.recovered")]
    Recovered,
    #[serde(rename = "webhook.disabled")]
    Disabled,
    #[serde(rename = "webhook.enabled")]
    Enabled,
    #[serde(rename = "event.exhausted")]
    Exhausted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Failing => "webhook.failing",
            EventType::Recovered => "webhook.recovered",
            EventType::Disabled => "webhook.disabled",
            EventType::Enabled => "webhook.enabled",
            EventType::Exhausted => "event.exhausted",
        }
    }
}

/// What a health change announces, before it is dressed as an operational event.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: EventType,
    /// When it happened (Unix ms): the observation's time, or the tick's.
    pub at_ms: u64,
}

/// Successes, failures and the failure rate over a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rate {
    pub successes: u64,
    pub failures: u64,
    /// Failures / requests; 0 without requests.
    pub failure_rate: f64,
    pub window_seconds: u64,
}

const MINUTE_MS: u64 = 60_000;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Health {
    pub fn new(ims_org: &str, sandbox_id: &str) -> Self {
        Health {
            ims_org: ims_org.to_owned(),
            sandbox_id: sandbox_id.to_owned(),
            state: State::Healthy,
            since_ms: None,
            last_success_ms: None,
            last_error: None,
            window: Vec::new(),
            failing_announced_ms: None,
            announced: false,
            exhausted: None,
            version: None,
        }
    }

    /// Counts `ok` and `failed` requests at `at_ms` in the window, dropping minutes older
    /// than it.
    fn count(&mut self, at_ms: u64, ok: u64, failed: u64, policy: &HealthPolicy) {
        let minute = at_ms / MINUTE_MS;
        let oldest = minute.saturating_sub(ms(policy.window) / MINUTE_MS);
        self.window.retain(|b| b.minute > oldest);
        if let Some(b) = self.window.iter_mut().find(|b| b.minute == minute) {
            b.ok += ok;
            b.failed += failed;
            return;
        }
        self.window.push(Bucket { minute, ok, failed });
        self.window.sort_by_key(|b| b.minute);
    }

    /// The failure rate over the window ending at `now_ms`.
    pub fn rate(&self, now_ms: u64, policy: &HealthPolicy) -> Rate {
        let oldest = (now_ms / MINUTE_MS).saturating_sub(ms(policy.window) / MINUTE_MS);
        let (ok, failed) = self
            .window
            .iter()
            .filter(|b| b.minute > oldest)
            .fold((0, 0), |(o, f), b| (o + b.ok, f + b.failed));
        Rate {
            successes: ok,
            failures: failed,
            failure_rate: if ok + failed == 0 {
                0.0
            } else {
                failed as f64 / (ok + failed) as f64
            },
            window_seconds: policy.window.as_secs(),
        }
    }

    /// Takes in a signal (the steps of one transaction); returns what it announces. Its
    /// steps are taken in their order: up to its latest success, then the failures after it.
    pub fn observe(&mut self, s: &Signal, policy: &HealthPolicy) -> Vec<Change> {
        let mut changes = Vec::new();
        self.version = Some(s.version.clone());
        if s.ok + s.failed > 0 {
            self.count(s.last_ms, s.ok, s.failed, policy);
        }
        if let Some(error) = &s.last_error {
            if self
                .last_error
                .as_ref()
                .is_none_or(|e| error.at_ms >= e.at_ms)
            {
                self.last_error = Some(error.clone());
            }
        }
        if let Some(at) = s.last_ok_ms {
            self.last_success_ms = Some(self.last_success_ms.unwrap_or(0).max(at));
            if self.state == State::Failing {
                self.state = State::Healthy;
                self.since_ms = None;
            }
            if self.announced {
                self.announced = false;
                changes.push(Change {
                    kind: EventType::Recovered,
                    at_ms: at,
                });
            }
        }
        if let Some(since) = s.failing_since_ms {
            // Announced when it starts failing, then reminded at the latest failure.
            let at = if self.state == State::Healthy {
                self.state = State::Failing;
                self.since_ms = Some(since);
                since
            } else {
                s.last_error.as_ref().map_or(since, |e| e.at_ms)
            };
            let due = self
                .failing_announced_ms
                .is_none_or(|t| at >= t.saturating_add(ms(policy.remind_every)));
            if self.state == State::Failing && due {
                self.failing_announced_ms = Some(at);
                self.announced = true;
                changes.push(Change {
                    kind: EventType::Failing,
                    at_ms: at,
                });
            }
        }
        if let (Some(from), Some(to)) = (s.ended_from_ms, s.ended_to_ms) {
            let e = self.exhausted.get_or_insert_with(|| Exhausted {
                count: 0,
                from_ms: from,
                to_ms: to,
                reasons: BTreeMap::new(),
            });
            for (reason, n) in &s.ended {
                e.count += n;
                *e.reasons.entry(reason.clone()).or_default() += n;
            }
            e.from_ms = e.from_ms.min(from);
            e.to_ms = e.to_ms.max(to);
        }
        changes
    }

    /// What time alone decides at `now_ms`: the failed events of a window announced
    /// together, and whether the webhook has failed long enough to be disabled (the caller
    /// disables it, and tells [`Health::config`] when the record says so).
    pub fn tick(&mut self, now_ms: u64, policy: &HealthPolicy) -> (Vec<Change>, bool) {
        let mut changes = Vec::new();
        if self
            .exhausted
            .as_ref()
            .is_some_and(|e| now_ms >= e.from_ms.saturating_add(ms(policy.exhausted_window)))
        {
            changes.push(Change {
                kind: EventType::Exhausted,
                at_ms: now_ms,
            });
        }
        (changes, self.due_for_disable(now_ms, policy))
    }

    /// Failing for `disable_after` with no success since it started failing.
    ///
    /// Judged by the requests, not the clock: a failure seen at the end of the period,
    /// with none succeeding since it began. A webhook that stops getting events is left as
    /// it is (nothing fails), and a tracker that reads late never disables on what it has
    /// not read yet.
    pub fn due_for_disable(&self, _now_ms: u64, policy: &HealthPolicy) -> bool {
        self.state == State::Failing
            && self.since_ms.is_some_and(|since| {
                let failing_until = self.last_error.as_ref().map_or(0, |e| e.at_ms);
                failing_until >= since.saturating_add(ms(policy.disable_after))
                    && self.last_success_ms.is_none_or(|s| s < since)
            })
    }

    /// The pending failed events, taken once announced.
    pub fn take_exhausted(&mut self) -> Option<Exhausted> {
        self.exhausted.take()
    }

    /// Follows the webhook's record: disabled, or enabled again (a fresh start).
    pub fn config(&mut self, enabled: bool) {
        match (enabled, self.state) {
            (false, _) => self.state = State::Disabled,
            (true, State::Disabled) => {
                self.state = State::Healthy;
                self.since_ms = None;
                self.failing_announced_ms = None;
                self.announced = false;
            }
            (true, _) => {}
        }
    }
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
    if record["updatedBy"] == BY_HEALTH {
        return at.checked_sub(failing).or(Some(at));
    }
    Some(at)
}

#[cfg(test)]
mod tests {
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

    use super::*;

    const MIN: u64 = 60_000;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            disable_after: Duration::from_secs(600),
            window: Duration::from_secs(3600),
            remind_every: Duration::from_secs(3600),
            exhausted_window: Duration::from_secs(60),
        }
    }

    fn signal(o: Observation) -> Signal {
        Signal::of("org", "sbx", "v", &o)
    }

    fn failed(at_ms: u64, ended: bool) -> Signal {
        signal(Observation {
            at_ms,
            sent: true,
            ok: false,
            ended_failed: ended.then(|| "retries_exhausted".to_owned()),
            http_status: Some(503),
            error: None,
        })
    }

    fn ok(at_ms: u64) -> Signal {
        signal(Observation {
            at_ms,
            sent: true,
            ok: true,
            ended_failed: None,
            http_status: Some(200),
            error: None,
        })
    }

    fn kinds(changes: &[Change]) -> Vec<EventType> {
        changes.iter().map(|c| c.kind).collect()
    }

    #[test]
    fn the_first_failure_after_success_announces_failing_then_once_an_hour() {
        let p = policy();
        let mut h = Health::new("org", "sbx");
        let t0 = 100 * MIN;
        assert!(h.observe(&ok(t0), &p).is_empty());
        assert_eq!(
            kinds(&h.observe(&failed(t0 + 1, false), &p)),
            [EventType::Failing]
        );
        assert_eq!(h.state, State::Failing);
        assert_eq!(h.since_ms, Some(t0 + 1));
        for i in 2..50 {
            assert!(h.observe(&failed(t0 + i * MIN, false), &p).is_empty());
        }
        assert_eq!(
            kinds(&h.observe(&failed(t0 + 61 * MIN, false), &p)),
            [EventType::Failing]
        );
        assert_eq!(h.since_ms, Some(t0 + 1), "still failing since the first");
        assert_eq!(h.last_error.as_ref().unwrap().http_status, Some(503));
    }

    #[test]
    fn a_success_recovers_and_flapping_announces_at_most_hourly() {
        let p = policy();
        let mut h = Health::new("org", "sbx");
        let t0 = 100 * MIN;
        h.observe(&failed(t0, false), &p);
        assert_eq!(kinds(&h.observe(&ok(t0 + 1), &p)), [EventType::Recovered]);
        assert_eq!((h.state, h.since_ms), (State::Healthy, None));
        // Failing again within the hour: failing (not announced), then recovered (silent).
        assert!(h.observe(&failed(t0 + 2, false), &p).is_empty());
        assert_eq!(h.state, State::Failing);
        assert!(h.observe(&ok(t0 + 3), &p).is_empty());
    }

    #[test]
    fn failed_events_are_announced_together_per_window() {
        let p = policy();
        let mut h = Health::new("org", "sbx");
        let t0 = 100 * MIN;
        for i in 0..5 {
            h.observe(&failed(t0 + i * 1000, true), &p);
        }
        assert!(h.tick(t0 + 59_000, &p).0.is_empty());
        assert_eq!(kinds(&h.tick(t0 + MIN, &p).0), [EventType::Exhausted]);
        let e = h.take_exhausted().unwrap();
        assert_eq!((e.count, e.from_ms, e.to_ms), (5, t0, t0 + 4000));
        assert_eq!(e.reasons["retries_exhausted"], 5);
        assert!(h.tick(t0 + 2 * MIN, &p).0.is_empty());
    }

    #[test]
    fn only_a_webhook_failing_for_the_whole_period_is_due_for_disable() {
        let p = policy();
        let mut h = Health::new("org", "sbx");
        let t0 = 100 * MIN;
        h.observe(&failed(t0, false), &p);
        h.observe(&failed(t0 + 9 * MIN, false), &p);
        assert!(
            !h.tick(t0 + 20 * MIN, &p).1,
            "no failure seen at the period's end"
        );
        h.observe(&failed(t0 + 10 * MIN, false), &p);
        assert!(h.tick(t0 + 10 * MIN, &p).1);
        // Nine failures in ten, and a success within every period: never.
        let mut sometimes = Health::new("org", "sbx");
        for i in 0..200 {
            let at = t0 + i * 30_000;
            let o = if i % 10 == 9 {
                ok(at)
            } else {
                failed(at, false)
            };
            sometimes.observe(&o, &p);
            assert!(!sometimes.tick(at, &p).1, "at {i}");
        }
        let rate = sometimes.rate(t0 + 199 * 30_000, &p);
        assert_eq!(rate.successes + rate.failures, 120, "an hour of requests");
        assert!((rate.failure_rate - 0.9).abs() < 0.01, "{rate:?}");
    }

    #[test]
    fn the_record_disables_and_a_re_enable_starts_afresh() {
        let p = policy();
        let mut h = Health::new("org", "sbx");
        h.observe(&failed(MIN, false), &p);
        h.config(false);
        assert_eq!(h.state, State::Disabled);
        assert!(!h.due_for_disable(100 * MIN, &p));
        h.config(true);
        assert_eq!(
            (h.state, h.since_ms, h.announced),
            (State::Healthy, None, false)
        );
        assert_eq!(
            kinds(&h.observe(&failed(2 * MIN, false), &p)),
            [EventType::Failing]
        );
    }

    #[test]
    fn a_signal_sums_a_transaction_s_steps_in_their_order() {
        let p = policy();
        let mut s = failed(MIN, false);
        s.merge(&ok(MIN + 1));
        s.merge(&failed(MIN + 2, true));
        s.merge(&failed(MIN + 3, false));
        assert_eq!((s.ok, s.failed), (1, 3));
        assert_eq!(
            (s.last_ok_ms, s.failing_since_ms),
            (Some(MIN + 1), Some(MIN + 2))
        );
        assert_eq!(s.last_error.as_ref().unwrap().at_ms, MIN + 3);
        assert_eq!(s.ended["retries_exhausted"], 1);
        let json = serde_json::to_vec(&s).unwrap();
        assert_eq!(serde_json::from_slice::<Signal>(&json).unwrap(), s);
        // Taken in: failing since the failure after its success.
        let mut h = Health::new("org", "sbx");
        assert_eq!(kinds(&h.observe(&s, &p)), [EventType::Failing]);
        assert_eq!((h.state, h.since_ms), (State::Failing, Some(MIN + 2)));
        assert_eq!(h.rate(MIN + 3, &p).failures, 3);
        // Steps ending with a success leave it healthy.
        let mut back = failed(2 * MIN, false);
        back.merge(&ok(2 * MIN + 1));
        assert_eq!(kinds(&h.observe(&back, &p)), [EventType::Recovered]);
        assert_eq!(h.state, State::Healthy);
    }

    #[test]
    fn the_state_round_trips_through_json() {
        let p = policy();
        let mut h = Health::new("org", "sbx");
        h.observe(&failed(MIN, true), &p);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<Health>(&json).unwrap(), h);
        assert!(json.contains("\"state\":\"failing\""));
    }
}
