//! The retry policy: how an attempt's result is classified, and when to try again.

use std::time::{Duration, SystemTime};

use super::config::{DeliveryPolicy, PolicyBounds, RetrySchedule};

/// What one attempt produced, as far as the policy cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// The server answered with this status (and maybe a `Retry-After`, already parsed).
    Response {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// No usable answer: connection refused or reset, TLS failure, DNS failure, timeout.
    Transport,
    /// The destination is not allowed; never retried.
    Blocked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// Worth another try later.
    Retry,
    /// Final failure: retrying cannot help.
    Fail,
}

/// What a receiver asks of the sender besides its status: a `410 Gone` answer or a
/// `webhook-delivery: disable` header disables the webhook; `webhook-delivery: abort` ends
/// the event without retries (the convention Svix receivers use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverSignal {
    Disable,
    Abort,
}

/// The signal of an answer with `status` and its `webhook-delivery` header, if any.
pub fn receiver_signal(status: u16, header: Option<&str>) -> Option<ReceiverSignal> {
    match header.map(str::trim) {
        Some(h) if h.eq_ignore_ascii_case("disable") => Some(ReceiverSignal::Disable),
        Some(h) if h.eq_ignore_ascii_case("abort") => Some(ReceiverSignal::Abort),
        _ if status == 410 => Some(ReceiverSignal::Disable),
        _ => None,
    }
}

/// The verdict on an attempt, given the receiver's signal: a signal ends the event
/// (a success stays one; the webhook is still disabled when asked).
pub fn verdict(result: &AttemptResult, signal: Option<ReceiverSignal>) -> Verdict {
    match (classify(result), signal) {
        (Verdict::Retry, Some(_)) => Verdict::Fail,
        (verdict, _) => verdict,
    }
}

/// 2xx succeeds; connection errors, timeouts, 408, 425, 429 and 5xx are retried; every other
/// answer (any 3xx, which is never followed, and the other 4xx) is final.
pub fn classify(result: &AttemptResult) -> Verdict {
    match result {
        AttemptResult::Response { status, .. } => match status {
            200..=299 => Verdict::Success,
            408 | 425 | 429 | 500..=599 => Verdict::Retry,
            _ => Verdict::Fail,
        },
        AttemptResult::Transport => Verdict::Retry,
        AttemptResult::Blocked => Verdict::Fail,
    }
}

/// When retries happen. Delays are counted from the end of the failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the 2nd, 3rd, ... attempt. Its length is the number of retries.
    pub schedule: Vec<Duration>,
    /// Fraction of each delay added or removed at random (0.2 = ±20%).
    pub jitter: f64,
    /// A `Retry-After` longer than this is cut to it.
    pub retry_after_cap: Duration,
    /// No retry is scheduled past this age of the first attempt.
    pub max_age: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        let secs = [5, 30, 120, 600, 1800, 3600, 7200, 14400];
        RetryPolicy {
            schedule: secs.into_iter().map(Duration::from_secs).collect(),
            jitter: 0.2,
            retry_after_cap: Duration::from_secs(3600),
            max_age: Some(Duration::from_secs(24 * 3600)),
        }
    }
}

impl RetryPolicy {
    /// The delay before the next attempt, or `None` when retries are exhausted.
    ///
    /// `failed_attempts` counts the attempts made so far (≥ 1); `elapsed` is the time since
    /// the first attempt; `random` is uniform in [0, 1) and drives the jitter. A `Retry-After`
    /// is honoured as a lower bound, capped.
    pub fn next_delay(
        &self,
        failed_attempts: usize,
        elapsed: Duration,
        retry_after: Option<Duration>,
        random: f64,
    ) -> Option<Duration> {
        let base = *self.schedule.get(failed_attempts.checked_sub(1)?)?;
        let factor = 1.0 + self.jitter * (2.0 * random.clamp(0.0, 1.0) - 1.0);
        let jittered = base.mul_f64(factor.max(0.0));
        let delay = match retry_after {
            Some(asked) => jittered.max(asked.min(self.retry_after_cap)),
            None => jittered,
        };
        self.within_max_age(elapsed, delay).then_some(delay)
    }

    /// Whether an attempt `delay` from now, `elapsed` after the first, is still allowed.
    pub fn within_max_age(&self, elapsed: Duration, delay: Duration) -> bool {
        self.max_age
            .is_none_or(|max| elapsed.checked_add(delay).is_some_and(|at| at <= max))
    }
}

impl RetryPolicy {
    /// The policy of a webhook whose record asks for `own`, within `bounds`: its own waits
    /// (followed as written, without jitter) or a shorter maximum age, and fewer attempts.
    /// Without `own`, this deployment's policy as it is.
    pub fn for_webhook(&self, own: Option<&DeliveryPolicy>, bounds: &PolicyBounds) -> RetryPolicy {
        let Some(own) = own else {
            return self.clone();
        };
        let mut policy = self.clone();
        let age_max = Duration::from_secs(bounds.retry_age_max_secs);
        match &own.retry_schedule {
            Some(RetrySchedule::Waits(waits)) => {
                let longest = age_max.as_secs_f64();
                policy.schedule = waits
                    .iter()
                    .map(|s| Duration::from_secs_f64(s.clamp(0.0, longest)))
                    .collect();
                policy.jitter = 0.0;
            }
            Some(RetrySchedule::MaxAge { max_age_seconds }) => {
                policy.max_age = Some(Duration::from_secs(*max_age_seconds));
            }
            None => {}
        }
        policy.max_age = Some(policy.max_age.map_or(age_max, |age| age.min(age_max)));
        let attempts = own
            .max_attempts
            .unwrap_or(u32::MAX)
            .clamp(1, bounds.attempts_max.max(1));
        policy.schedule.truncate(attempts as usize - 1);
        policy
    }
}

/// The whole-request timeout a webhook asks for, within `bounds`; `None`: the deployment's.
pub fn webhook_timeout(own: Option<&DeliveryPolicy>, bounds: &PolicyBounds) -> Option<Duration> {
    let ms = own?.timeout_ms?;
    Some(Duration::from_millis(ms.clamp(
        bounds.timeout_min_ms,
        bounds.timeout_max_ms.max(bounds.timeout_min_ms),
    )))
}

/// Parses a `Retry-After` value: delay seconds or an HTTP-date (relative to `now`).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(v: serde_json::Value) -> DeliveryPolicy {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_webhook_s_own_waits_are_followed_exactly_within_the_bounds() {
        let bounds = PolicyBounds::default();
        let base = RetryPolicy::default();
        let p = base.for_webhook(
            Some(&own(serde_json::json!({"retrySchedule": [1, 1, 1]}))),
            &bounds,
        );
        let delays: Vec<Option<Duration>> = (1..=4)
            .map(|n| p.next_delay(n, Duration::ZERO, None, 0.99))
            .collect();
        let one = Some(Duration::from_secs(1));
        assert_eq!(delays, [one, one, one, None], "no jitter, then exhausted");
        // A Retry-After still holds a retry back.
        assert_eq!(
            p.next_delay(1, Duration::ZERO, Some(Duration::from_secs(5)), 0.5),
            Some(Duration::from_secs(5))
        );
        // Attempts beyond the deployment's bound are cut; so is an age beyond it.
        let many = base.for_webhook(
            Some(&own(
                serde_json::json!({"retrySchedule": vec![1; 50], "maxAttempts": 99}),
            )),
            &bounds,
        );
        assert_eq!(many.schedule.len(), bounds.attempts_max as usize - 1);
        let p = base.for_webhook(
            Some(&own(serde_json::json!({"retrySchedule": [100000]}))),
            &bounds,
        );
        assert_eq!(p.schedule, [Duration::from_secs(86_400)]);
        assert_eq!(p.max_age, Some(Duration::from_secs(86_400)));
    }

    #[test]
    fn a_max_age_cuts_the_deployment_schedule_and_max_attempts_cuts_its_length() {
        let bounds = PolicyBounds::default();
        let base = RetryPolicy::default();
        let p = base.for_webhook(
            Some(&own(
                serde_json::json!({"retrySchedule": {"maxAgeSeconds": 600}, "maxAttempts": 3}),
            )),
            &bounds,
        );
        assert_eq!(p.schedule, base.schedule[..2]);
        assert_eq!(p.jitter, base.jitter);
        assert_eq!(p.max_age, Some(Duration::from_secs(600)));
        assert_eq!(
            p.next_delay(2, Duration::from_secs(590), None, 0.5),
            None,
            "past the webhook's age"
        );
        assert_eq!(
            base.for_webhook(None, &bounds),
            base,
            "absent: the deployment's"
        );
        let p = base.for_webhook(Some(&own(serde_json::json!({"maxAttempts": 1}))), &bounds);
        assert!(p.schedule.is_empty());
    }

    #[test]
    fn a_webhook_timeout_is_clamped_to_the_bounds() {
        let bounds = PolicyBounds::default();
        let at =
            |ms: u64| webhook_timeout(Some(&own(serde_json::json!({"timeoutMs": ms}))), &bounds);
        assert_eq!(at(1_500), Some(Duration::from_millis(1_500)));
        assert_eq!(at(10), Some(Duration::from_millis(1_000)));
        assert_eq!(at(600_000), Some(Duration::from_millis(30_000)));
        assert_eq!(
            webhook_timeout(Some(&own(serde_json::json!({}))), &bounds),
            None
        );
        assert_eq!(webhook_timeout(None, &bounds), None);
    }

    fn response(status: u16) -> AttemptResult {
        AttemptResult::Response {
            status,
            retry_after: None,
        }
    }

    #[test]
    fn receiver_signals_end_the_event() {
        use ReceiverSignal::*;
        assert_eq!(receiver_signal(410, None), Some(Disable));
        assert_eq!(receiver_signal(503, Some(" Disable ")), Some(Disable));
        assert_eq!(receiver_signal(200, Some("disable")), Some(Disable));
        assert_eq!(receiver_signal(503, Some("abort")), Some(Abort));
        assert_eq!(receiver_signal(503, Some("later")), None);
        assert_eq!(receiver_signal(404, None), None);
        assert_eq!(verdict(&response(503), Some(Abort)), Verdict::Fail);
        assert_eq!(verdict(&response(503), None), Verdict::Retry);
        assert_eq!(verdict(&response(200), Some(Disable)), Verdict::Success);
        assert_eq!(verdict(&response(410), Some(Disable)), Verdict::Fail);
    }

    #[test]
    fn classification() {
        for s in [200, 201, 204, 299] {
            assert_eq!(classify(&response(s)), Verdict::Success, "{s}");
        }
        for s in [408, 425, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify(&response(s)), Verdict::Retry, "{s}");
        }
        for s in [100, 301, 302, 307, 308, 400, 401, 403, 404, 409, 410, 422] {
            assert_eq!(classify(&response(s)), Verdict::Fail, "{s}");
        }
        assert_eq!(classify(&AttemptResult::Transport), Verdict::Retry);
        assert_eq!(classify(&AttemptResult::Blocked), Verdict::Fail);
    }

    #[test]
    fn default_schedule_without_jitter_at_midpoint() {
        let p = RetryPolicy {
            max_age: None,
            ..RetryPolicy::default()
        };
        let delays: Vec<u64> = (1..=8)
            .map(|n| {
                p.next_delay(n, Duration::ZERO, None, 0.5)
                    .unwrap()
                    .as_secs()
            })
            .collect();
        assert_eq!(delays, [5, 30, 120, 600, 1800, 3600, 7200, 14400]);
        assert_eq!(p.next_delay(9, Duration::ZERO, None, 0.5), None);
        assert_eq!(p.next_delay(0, Duration::ZERO, None, 0.5), None);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let p = RetryPolicy::default();
        let lo = p.next_delay(1, Duration::ZERO, None, 0.0).unwrap();
        let hi = p.next_delay(1, Duration::ZERO, None, 0.999_999).unwrap();
        assert_eq!(lo, Duration::from_secs(4));
        assert!(
            hi <= Duration::from_secs(6) && hi > Duration::from_millis(5_990),
            "{hi:?}"
        );
    }

    #[test]
    fn retry_after_is_a_capped_lower_bound() {
        let p = RetryPolicy::default();
        let d = p.next_delay(1, Duration::ZERO, Some(Duration::from_secs(60)), 0.5);
        assert_eq!(d, Some(Duration::from_secs(60)));
        let d = p.next_delay(1, Duration::ZERO, Some(Duration::from_secs(2)), 0.5);
        assert_eq!(d, Some(Duration::from_secs(5)));
        let d = p.next_delay(1, Duration::ZERO, Some(Duration::from_secs(99_999)), 0.5);
        assert_eq!(d, Some(p.retry_after_cap));
    }

    #[test]
    fn max_age_ends_retries() {
        let p = RetryPolicy {
            max_age: Some(Duration::from_secs(60)),
            ..RetryPolicy::default()
        };
        // 10 s + 30 s fits in 60 s; 10 s + 120 s does not.
        assert!(p
            .next_delay(2, Duration::from_secs(10), None, 0.5)
            .is_some());
        assert_eq!(p.next_delay(3, Duration::from_secs(10), None, 0.5), None);
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
