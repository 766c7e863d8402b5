//! Adaptive concurrency: how many requests a destination may have in flight, found by
//! additive increase and multiplicative decrease (AIMD), as TCP congestion control, Vector's
//! adaptive request concurrency and Netflix's concurrency-limits do.
//!
//! Until the first sign of congestion the limit doubles after each window of answers in which
//! it was reached (slow start, as TCP's: a burst reaches a fast destination's capacity in a
//! few round trips, not hundreds); from then on it grows by one per such window. It shrinks
//! by a factor when a window's latency grew well past its baseline, and at once when the
//! destination signals overload (429, 503, timeouts). Time is passed in as measured
//! latencies, so the controller is tested without clocks.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitPolicy {
    pub initial: usize,
    pub min: usize,
    pub max: usize,
    /// Factor applied when a window's latency grew past `latency_tolerance` × the baseline.
    pub latency_decrease: f64,
    /// Factor applied on an explicit overload signal.
    pub overload_decrease: f64,
    /// A window whose mean latency exceeds this multiple of the baseline is congested.
    pub latency_tolerance: f64,
    /// ... and also exceeds the baseline by at least this much: on loopback or a LAN,
    /// sub-millisecond latencies double from scheduling noise alone.
    pub latency_slack: Duration,
    /// A known baseline, for latencies already measured against each destination's usual
    /// one (1.0 = usual); `None` learns it from the fastest windows.
    pub fixed_baseline: Option<Duration>,
}

impl LimitPolicy {
    /// A fixed limit (initial = max), as tests and operators who know their host want.
    pub fn fixed(limit: usize) -> Self {
        let limit = limit.max(1);
        LimitPolicy {
            initial: limit,
            min: limit,
            max: limit,
            ..LimitPolicy::adaptive(limit, limit)
        }
    }

    pub fn adaptive(initial: usize, max: usize) -> Self {
        let max = max.max(1);
        LimitPolicy {
            initial: initial.clamp(1, max),
            min: 1,
            max,
            latency_decrease: 0.9,
            overload_decrease: 0.5,
            latency_tolerance: 2.0,
            latency_slack: Duration::from_millis(20),
            fixed_baseline: None,
        }
    }

    /// As [`LimitPolicy::adaptive`], for samples given relative to a usual latency of
    /// `unit`: congestion is a window whose mean is `latency_tolerance` times the usual.
    pub fn relative(initial: usize, max: usize, unit: Duration) -> Self {
        LimitPolicy {
            latency_slack: Duration::ZERO,
            fixed_baseline: Some(unit),
            ..LimitPolicy::adaptive(initial, max)
        }
    }
}

/// What one finished request says about its destination.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    /// Answered in this time. `latency` is relative where the caller normalises it (see
    /// [`Limit::on_sample`]).
    Answered { latency: Duration },
    /// The destination said it is overloaded (429, 503), or did not answer in time.
    Overload,
    /// Says nothing about load (a request that was never sent, a config error).
    Neutral,
}

/// The current limit of one destination and the window it is measuring.
#[derive(Debug, Clone)]
pub struct Limit {
    policy: LimitPolicy,
    limit: f64,
    /// No congestion seen yet: the limit doubles per saturated window instead of growing by
    /// one.
    slow_start: bool,
    /// Long-run latency when not congested (seconds), the yardstick for a window.
    baseline: Option<f64>,
    window: Sampling,
}

#[derive(Debug, Clone, Default)]
struct Sampling {
    answers: usize,
    latency_sum: f64,
    /// The limit was reached at some point during the window: only then is growing useful.
    saturated: bool,
}

/// Weight of a slower window in the baseline (see [`Limit::close_window`]).
const BASELINE_WEIGHT: f64 = 0.1;

impl Limit {
    pub fn new(policy: LimitPolicy) -> Self {
        Limit {
            policy,
            limit: policy.initial as f64,
            slow_start: true,
            baseline: policy.fixed_baseline.map(|d| d.as_secs_f64()),
            window: Sampling::default(),
        }
    }

    /// Requests that may be in flight now.
    pub fn current(&self) -> usize {
        (self.limit as usize).clamp(self.policy.min, self.policy.max)
    }

    /// Notes that the destination had `in_flight` requests at once.
    pub fn observe_in_flight(&mut self, in_flight: usize) {
        if in_flight >= self.current() {
            self.window.saturated = true;
        }
    }

    /// Takes one finished request into account.
    pub fn on_sample(&mut self, sample: Sample) {
        match sample {
            Sample::Neutral => {}
            Sample::Overload => {
                self.decrease(self.policy.overload_decrease);
            }
            Sample::Answered { latency } => {
                self.window.answers += 1;
                self.window.latency_sum += latency.as_secs_f64();
                if self.window.answers >= self.current() {
                    self.close_window();
                }
            }
        }
    }

    fn close_window(&mut self) {
        let w = std::mem::take(&mut self.window);
        let mean = w.latency_sum / w.answers.max(1) as f64;
        let baseline = *self.baseline.get_or_insert(mean);
        let congested = mean > baseline * self.policy.latency_tolerance
            && mean - baseline > self.policy.latency_slack.as_secs_f64();
        let at_minimum = self.current() <= self.policy.min;
        if congested && !at_minimum {
            self.decrease(self.policy.latency_decrease);
            return;
        }
        // A faster window lowers the yardstick at once. A slower one moves it only when the
        // latency is not of our making: the limit was not reached, or it is already at its
        // minimum (the destination became slower for good). A fixed one never moves.
        self.baseline = Some(if self.policy.fixed_baseline.is_some() {
            baseline
        } else if mean < baseline {
            mean
        } else if !w.saturated || at_minimum {
            baseline + (mean - baseline) * BASELINE_WEIGHT
        } else {
            baseline
        });
        if congested {
            self.slow_start = false;
            return;
        }
        if w.saturated {
            let grown = if self.slow_start {
                self.limit * 2.0
            } else {
                self.limit + 1.0
            };
            self.limit = grown.min(self.policy.max as f64);
        }
    }

    fn decrease(&mut self, factor: f64) {
        self.slow_start = false;
        self.limit = (self.limit * factor).max(self.policy.min as f64);
        // The window measured the old limit; start afresh.
        self.window = Sampling::default();
    }
}

/// The connections a destination whose limit is `limit` needs, at `per_connection` requests
/// each (at least one).
pub fn lanes(limit: usize, per_connection: usize) -> usize {
    limit.div_ceil(per_connection.max(1)).max(1)
}

/// A destination's usual latency: a slow moving average, so that a destination that is always
/// slow is not taken for a congested one, while a sudden slowdown stands out for a while.
#[derive(Debug, Clone, Default)]
pub struct Baseline(Option<f64>);

/// Weight of one answer in a [`Baseline`].
const SAMPLE_WEIGHT: f64 = 0.02;

impl Baseline {
    /// The usual latency, once there is one.
    pub fn value(&self) -> Option<Duration> {
        self.0.map(Duration::from_secs_f64)
    }

    /// Takes `latency` into account and returns it relative to the baseline before it
    /// (1.0: as usual).
    pub fn observe(&mut self, latency: Duration) -> f64 {
        let l = latency.as_secs_f64().max(1e-6);
        let base = *self.0.get_or_insert(l);
        self.0 = Some(base + (l - base) * SAMPLE_WEIGHT);
        l / base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_baseline_takes_steady_slowness_as_usual_and_a_jump_as_unusual() {
        let mut slow = Baseline::default();
        for _ in 0..100 {
            slow.observe(Duration::from_secs(9));
        }
        assert!((slow.observe(Duration::from_secs(9)) - 1.0).abs() < 1e-9);
        let mut fast = Baseline::default();
        for _ in 0..100 {
            fast.observe(Duration::from_millis(2));
        }
        assert!(fast.observe(Duration::from_millis(20)) > 9.0);
    }

    fn ms(n: u64) -> Sample {
        Sample::Answered {
            latency: Duration::from_millis(n),
        }
    }

    /// Runs `windows` full windows at the current limit with the latency `latency`.
    fn run(limit: &mut Limit, windows: usize, latency: impl Fn(usize) -> u64) {
        for _ in 0..windows {
            let n = limit.current();
            limit.observe_in_flight(n);
            for _ in 0..n {
                let l = latency(n);
                limit.on_sample(ms(l));
            }
        }
    }

    /// An adaptive limit from 8 (at most 64) after phases of (windows, latency in ms).
    fn adaptive_after(phases: &[(usize, u64)]) -> usize {
        let mut l = Limit::new(LimitPolicy::adaptive(8, 64));
        for &(windows, latency) in phases {
            run(&mut l, windows, |_| latency);
        }
        l.current()
    }

    #[test]
    fn doubles_per_saturated_window_until_congestion_then_grows_by_one() {
        let mut l = Limit::new(LimitPolicy::adaptive(4, 1000));
        run(&mut l, 3, |_| 5);
        assert_eq!(l.current(), 32, "slow start: 4, 8, 16, 32");
        // The first congestion signal ends slow start.
        l.on_sample(Sample::Overload);
        assert_eq!(l.current(), 16);
        run(&mut l, 3, |_| 5);
        assert_eq!(l.current(), 19);
    }

    #[test]
    fn a_limit_is_spread_over_enough_connections() {
        assert_eq!(lanes(0, 32), 1);
        assert_eq!(lanes(32, 32), 1);
        assert_eq!(lanes(33, 32), 2);
        assert_eq!(lanes(256, 32), 8);
        assert_eq!(lanes(5, 0), 5, "a per-connection figure of 0 counts as 1");
    }

    #[test]
    fn never_grows_above_the_maximum() {
        let mut l = Limit::new(LimitPolicy::adaptive(4, 10));
        run(&mut l, 20, |_| 5);
        assert_eq!(l.current(), 10);
    }

    #[test]
    fn a_burst_reaches_a_fast_destination_capacity_within_a_few_round_trips() {
        // Serves 200 at once in 50 ms and queues beyond: from 8, slow start is there in 5
        // windows (a quarter of a second), where additive growth would take about 190
        // (ten seconds).
        let service = |n: usize| if n <= 200 { 50 } else { 50 * n as u64 / 200 };
        let mut l = Limit::new(LimitPolicy::adaptive(8, 500));
        let mut windows = 0;
        while l.current() < 128 && windows < 1000 {
            run(&mut l, 1, service);
            windows += 1;
        }
        assert!(windows <= 5, "{windows} windows to reach 128");
        run(&mut l, 2_000, service);
        let settled = l.current();
        assert!(
            (100..=450).contains(&settled),
            "settled at {settled}, not near the destination's capacity of 200"
        );
    }

    #[test]
    fn does_not_grow_when_the_limit_is_not_reached() {
        let mut l = Limit::new(LimitPolicy::adaptive(4, 10));
        for _ in 0..40 {
            l.on_sample(ms(5));
        }
        assert_eq!(l.current(), 4);
    }

    #[test]
    fn settles_where_latency_starts_to_grow() {
        // A destination that serves 20 at once in 10 ms, and queues beyond that.
        let service = |n: usize| if n <= 20 { 10 } else { 10 * n as u64 / 10 };
        let mut l = Limit::new(LimitPolicy::adaptive(4, 500));
        run(&mut l, 2_000, service);
        let settled = l.current();
        assert!(
            (15..=45).contains(&settled),
            "settled at {settled}, not near the destination's capacity of 20"
        );
    }

    #[test]
    fn a_slower_destination_is_learnt_and_small_noise_is_not_congestion() {
        // 100 ms at any load from now on: the limit drops, then the new latency is the norm
        // and the limit grows again.
        let slower = adaptive_after(&[(5, 10), (200, 100)]);
        // 1 ms then 3 ms on a fast link: three times the baseline but only 2 ms more.
        let noisy = adaptive_after(&[(1, 1), (10, 3)]);
        assert!(slower > 8 && noisy > 8, "limits {slower} and {noisy}");
    }

    #[test]
    fn overload_halves_at_once_and_never_below_the_minimum() {
        let mut l = Limit::new(LimitPolicy::adaptive(32, 64));
        l.on_sample(Sample::Overload);
        assert_eq!(l.current(), 16);
        for _ in 0..20 {
            l.on_sample(Sample::Overload);
        }
        assert_eq!(l.current(), 1);
        l.on_sample(Sample::Neutral);
        assert_eq!(l.current(), 1);
    }

    #[test]
    fn relative_samples_are_judged_against_the_usual() {
        let unit = Duration::from_millis(100);
        let mut l = Limit::new(LimitPolicy::relative(8, 64, unit));
        // Noise around the usual latency: the limit grows.
        run(&mut l, 20, |n| if n % 2 == 0 { 80 } else { 150 });
        assert!(l.current() > 20, "limit {}", l.current());
        let before = l.current();
        // Three times the usual: it shrinks.
        run(&mut l, 3, |_| 300);
        assert!(l.current() < before);
    }

    #[test]
    fn a_fixed_policy_never_moves() {
        let mut l = Limit::new(LimitPolicy::fixed(8));
        run(&mut l, 10, |_| 1);
        l.on_sample(Sample::Overload);
        assert_eq!(l.current(), 8);
    }
}
