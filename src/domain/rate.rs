//! A webhook's rate cap: a token bucket of `perSecond` tokens a second holding at most
//! `burst`, so that in any one second at most `perSecond + burst` requests start. The cap
//! is the consumer group's: each instance holds its share of it (see [`Rate::share`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// This instance's share of the group's work: the fraction of the input partitions it owns,
/// set at every rebalance, read at every rate-capped request.
#[derive(Debug)]
pub struct GroupShare(AtomicU64);

impl Default for GroupShare {
    fn default() -> Self {
        GroupShare(AtomicU64::new(1.0f64.to_bits()))
    }
}

impl GroupShare {
    /// Owning `owned` of `total` partitions (at least one's worth: an instance left with
    /// none still finishes its retries).
    pub fn set(&self, owned: usize, total: usize) {
        if total == 0 {
            return;
        }
        let fraction = owned.max(1) as f64 / total as f64;
        self.0.store(fraction.min(1.0).to_bits(), Ordering::Relaxed);
    }

    pub fn fraction(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A webhook's `rateLimit`, as its record says it (for the whole group).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

/// The smallest rate an instance's share comes to: a share never stops a webhook.
const MIN_PER_SECOND: f64 = 0.01;

impl Rate {
    /// This instance's part of the group's cap: `fraction` (0–1] of it, the burst at least
    /// one request.
    pub fn share(self, fraction: f64) -> Rate {
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            1.0
        };
        Rate {
            per_second: (self.per_second * fraction).max(MIN_PER_SECOND),
            burst: (self.burst * fraction).max(1.0),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: Rate,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: Rate, now: Instant) -> Self {
        TokenBucket {
            rate,
            tokens: rate.burst,
            at: now,
        }
    }

    /// Follows a changed rate (an edit, a rebalance), keeping the tokens it has within the
    /// new burst.
    pub fn set(&mut self, rate: Rate, now: Instant) {
        if rate != self.rate {
            self.refill(now);
            self.rate = rate;
            self.tokens = self.tokens.min(rate.burst);
        }
    }

    /// The tokens there are at `now`.
    fn available(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * self.rate.per_second).min(self.rate.burst)
    }

    fn refill(&mut self, now: Instant) {
        self.tokens = self.available(now);
        self.at = now;
    }

    /// Takes a token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether a token is there now.
    pub fn ready(&self, now: Instant) -> bool {
        self.available(now) >= 1.0
    }

    /// How long until `n` more requests may start (0 when they may now).
    pub fn wait_for(&self, n: usize, now: Instant) -> Duration {
        let missing = n as f64 - self.available(now);
        if missing <= 0.0 {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64(missing / self.rate.per_second).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIFTY: Rate = Rate {
        per_second: 50.0,
        burst: 10.0,
    };

    #[test]
    fn no_one_second_window_holds_more_than_the_rate_and_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(FIFTY, start);
        // Ask every millisecond for 5 s; count the starts in every 1 s window.
        let mut starts = Vec::new();
        for ms in 0..5_000u64 {
            let now = start + Duration::from_millis(ms);
            while bucket.try_take(now) {
                starts.push(ms);
            }
        }
        let most = (0..4_000u64)
            .map(|from| {
                starts
                    .iter()
                    .filter(|&&s| s >= from && s < from + 1_000)
                    .count()
            })
            .max()
            .unwrap();
        assert!(most <= 60, "{most} in one second");
        // ... and it keeps up the rate.
        assert!((240..=260).contains(&starts.len()), "{}", starts.len());
    }

    #[test]
    fn the_wait_says_when_requests_may_start() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(FIFTY, start);
        assert_eq!(bucket.wait_for(10, start), Duration::ZERO);
        for _ in 0..10 {
            assert!(bucket.try_take(start));
        }
        assert!(!bucket.ready(start));
        let close = |d: Duration, secs: f64| (d.as_secs_f64() - secs).abs() < 1e-6;
        assert!(close(bucket.wait_for(1, start), 0.02));
        assert!(close(bucket.wait_for(50, start), 1.0));
        assert!(bucket.ready(start + Duration::from_millis(20)));
    }

    #[test]
    fn the_group_share_follows_the_partitions_owned() {
        let share = GroupShare::default();
        assert_eq!(share.fraction(), 1.0);
        share.set(2, 6);
        assert!((share.fraction() - 1.0 / 3.0).abs() < 1e-12);
        share.set(0, 6);
        assert!((share.fraction() - 1.0 / 6.0).abs() < 1e-12);
        share.set(3, 0);
        assert!(
            (share.fraction() - 1.0 / 6.0).abs() < 1e-12,
            "no partitions known: unchanged"
        );
    }

    #[test]
    fn a_share_is_a_fraction_of_the_group_s_cap_and_never_nothing() {
        let third = FIFTY.share(1.0 / 3.0);
        assert!((third.per_second - 50.0 / 3.0).abs() < 1e-9);
        assert!((third.burst - 10.0 / 3.0).abs() < 1e-9);
        assert_eq!(FIFTY.share(0.0).burst, 1.0);
        assert!(FIFTY.share(0.0).per_second > 0.0);
        assert_eq!(FIFTY.share(f64::NAN), FIFTY);
        let start = Instant::now();
        let mut bucket = TokenBucket::new(FIFTY, start);
        bucket.set(FIFTY.share(0.5), start);
        let taken = (0..100).filter(|_| bucket.try_take(start)).count();
        assert_eq!(taken, 5, "the burst shrinks with the share");
    }
}
