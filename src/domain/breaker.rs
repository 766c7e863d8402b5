//! A per-endpoint circuit breaker: after sustained failures the endpoint is left alone for a
//! cool-down, then probed with one request at a time; the cool-down doubles while probes fail.
//! Time is passed in, so the state machine is tested without clocks.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the breaker.
    pub failures_to_open: u32,
    /// First cool-down; doubled after each failed probe.
    pub open_for: Duration,
    pub max_open_for: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failures_to_open: 10,
            open_for: Duration::from_secs(30),
            max_open_for: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed { failures: u32 },
    Open { until: Instant, cooldown: Duration },
    HalfOpen { cooldown: Duration },
}

/// What the breaker says about sending a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allow,
    /// Allowed as the single probe of a half-open breaker.
    Probe,
    /// Not now; try again no sooner than `until`.
    Reject {
        until: Instant,
    },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    policy: BreakerPolicy,
    state: State,
}

/// How long a rejected request waits while a probe is in flight.
const PROBE_WAIT: Duration = Duration::from_secs(1);

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Self {
        Breaker {
            policy,
            state: State::Closed { failures: 0 },
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Whether a request now would be rejected, without changing the state.
    pub fn rejects(&self, now: Instant) -> Option<Instant> {
        match self.state {
            State::Open { until, .. } if now < until => Some(until),
            State::HalfOpen { .. } => Some(now + PROBE_WAIT),
            _ => None,
        }
    }

    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            State::Closed { .. } => Admission::Allow,
            State::Open { until, cooldown } if now >= until => {
                self.state = State::HalfOpen { cooldown };
                Admission::Probe
            }
            State::Open { until, .. } => Admission::Reject { until },
            State::HalfOpen { .. } => Admission::Reject {
                until: now + PROBE_WAIT,
            },
        }
    }

    /// The probe of a half-open breaker ended without a verdict (it was never sent, or it
    /// failed for reasons that are not the destination's): the next request probes again.
    pub fn abandon_probe(&mut self, now: Instant) {
        if let State::HalfOpen { cooldown } = self.state {
            self.state = State::Open {
                until: now,
                cooldown,
            };
        }
    }

    /// Someone has reason to believe the endpoint is back (a redelivery was asked for, or
    /// its config changed): an open breaker lets the next request through as its probe,
    /// without waiting out the cool-down. The cool-down is kept: a failed probe doubles it.
    pub fn probe_now(&mut self, now: Instant) {
        if let State::Open { cooldown, .. } = self.state {
            self.state = State::Open {
                until: now,
                cooldown,
            };
        }
    }

    /// Records the result of a request: `healthy` is false for transport errors, timeouts,
    /// 408, 429 and 5xx (the answers that are retried), true for any other answer.
    pub fn record(&mut self, now: Instant, healthy: bool) {
        self.state = match (self.state, healthy) {
            (State::Closed { .. }, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) => {
                let failures = failures + 1;
                if failures >= self.policy.failures_to_open {
                    State::Open {
                        until: now + self.policy.open_for,
                        cooldown: self.policy.open_for,
                    }
                } else {
                    State::Closed { failures }
                }
            }
            (State::HalfOpen { .. }, true) => State::Closed { failures: 0 },
            (State::HalfOpen { cooldown }, false) => {
                let cooldown = cooldown.saturating_mul(2).min(self.policy.max_open_for);
                State::Open {
                    until: now + cooldown,
                    cooldown,
                }
            }
            // Results of requests sent before the breaker opened change nothing.
            (open @ State::Open { .. }, _) => open,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            failures_to_open: 3,
            open_for: Duration::from_secs(10),
            max_open_for: Duration::from_secs(25),
        }
    }

    /// A breaker the policy's three failures in a row opened at `t`.
    fn opened(t: Instant) -> Breaker {
        let mut b = Breaker::new(policy());
        for _ in 0..3 {
            b.record(t, false);
        }
        b
    }

    /// A breaker opened a cooldown ago, that has just let its probe through; and when.
    fn probing() -> (Breaker, Instant) {
        let t = Instant::now();
        let mut b = opened(t);
        let later = t + secs(10);
        assert_eq!(b.admit(later), Admission::Probe);
        (b, later)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn rejected_until(until: Instant) -> Admission {
        Admission::Reject { until }
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let t = Instant::now();
        let mut b = Breaker::new(policy());
        for healthy in [false, false, true, false, false] {
            b.record(t, healthy);
        }
        assert_eq!(b.admit(t), Admission::Allow);
        b.record(t, false);
        assert_eq!(b.admit(t), rejected_until(t + secs(10)));
    }

    #[test]
    fn half_open_lets_one_probe_through() {
        let (mut b, later) = probing();
        assert!(matches!(b.admit(later), Admission::Reject { .. }));
        b.record(later, true);
        assert_eq!(b.state(), State::Closed { failures: 0 });
        assert_eq!(b.admit(later), Admission::Allow);
    }

    #[test]
    fn failed_probes_double_the_cooldown_up_to_the_cap() {
        let t = Instant::now();
        let mut b = opened(t);
        let mut probe_at = t + secs(10);
        // Each failed probe opens it again for twice as long, at most 25 s.
        for cooldown in [20, 25] {
            assert_eq!(b.admit(probe_at), Admission::Probe);
            b.record(probe_at, false);
            assert_eq!(b.admit(probe_at), rejected_until(probe_at + secs(cooldown)));
            probe_at += secs(cooldown);
        }
    }

    #[test]
    fn rejects_peeks_without_changing_state() {
        let t = Instant::now();
        assert_eq!(Breaker::new(policy()).rejects(t), None);
        let mut b = opened(t);
        assert_eq!(b.rejects(t), Some(t + secs(10)));
        let later = t + secs(10);
        assert_eq!(b.rejects(later), None, "due for a probe");
        assert_eq!(b.admit(later), Admission::Probe);
        assert!(b.rejects(later).is_some(), "one probe at a time");
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_request_probe() {
        let (mut b, later) = probing();
        b.abandon_probe(later);
        assert_eq!(b.admit(later), Admission::Probe);
        // Only a half-open breaker has a probe to abandon.
        let mut closed = Breaker::new(policy());
        closed.abandon_probe(later);
        assert_eq!(closed.admit(later), Admission::Allow);
    }

    #[test]
    fn probe_now_skips_the_cool_down_but_keeps_its_length() {
        let t = Instant::now();
        let mut b = opened(t);
        b.probe_now(t + secs(1));
        assert_eq!(b.admit(t + secs(1)), Admission::Probe);
        b.record(t + secs(1), false);
        assert_eq!(b.admit(t + secs(1)), rejected_until(t + secs(21)));
        // A closed or probing breaker is left as it is.
        let (mut probing, later) = probing();
        probing.probe_now(later);
        assert!(matches!(probing.admit(later), Admission::Reject { .. }));
        let mut closed = Breaker::new(policy());
        closed.probe_now(t);
        assert_eq!(closed.admit(t), Admission::Allow);
    }

    #[test]
    fn late_results_do_not_close_an_open_breaker() {
        let t = Instant::now();
        let mut b = opened(t);
        b.record(t, true);
        assert!(matches!(b.admit(t), Admission::Reject { .. }));
    }
}
