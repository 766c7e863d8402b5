//! Whether the consumer reaches the cluster: librdkafka's statistics (every few seconds) say
//! each broker connection's state. When none is up, the processor is not ready (`/readyz`
//! answers 503 while its loops wait), and the outage is logged once when it starts and once
//! with its length when it ends, not per failed call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// A change of reachability, as the log tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Lost,
    Back(Duration),
}

#[derive(Debug)]
pub struct Reach {
    up: AtomicBool,
    /// When the cluster was last found unreachable (while it is).
    lost_at: Mutex<Option<Instant>>,
}

impl Default for Reach {
    fn default() -> Self {
        Reach {
            up: AtomicBool::new(true),
            lost_at: Mutex::new(None),
        }
    }
}

impl Reach {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Takes in what the statistics said at `now`; answers the change, if any.
    pub fn observe(&self, up: bool, now: Instant) -> Option<Change> {
        let Ok(mut lost_at) = self.lost_at.lock() else {
            return None;
        };
        self.up.store(up, Ordering::Relaxed);
        match (up, *lost_at) {
            (false, None) => {
                *lost_at = Some(now);
                Some(Change::Lost)
            }
            (true, Some(since)) => {
                *lost_at = None;
                Some(Change::Back(now.duration_since(since)))
            }
            _ => None,
        }
    }

    /// [`Reach::observe`], logged for the consumer `name`.
    pub fn report(&self, name: &str, up: bool) {
        match self.observe(up, Instant::now()) {
            Some(Change::Lost) => {
                warn!(
                    consumer = name,
                    "no broker of the cluster can be reached; waiting for it"
                )
            }
            Some(Change::Back(after)) => info!(
                consumer = name,
                outage_secs = after.as_secs(),
                "the cluster can be reached again"
            ),
            None => {}
        }
    }
}

/// Whether statistics' broker states say any real broker (not a bootstrap address, not
/// librdkafka's internal one) is connected.
pub fn any_up<'a>(brokers: impl IntoIterator<Item = (i32, &'a str)>) -> bool {
    brokers
        .into_iter()
        .any(|(node, state)| node >= 0 && state == "UP")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_told_once_when_it_starts_and_once_with_its_length() {
        let reach = Reach::default();
        let t = Instant::now();
        assert_eq!(reach.observe(true, t), None);
        assert_eq!(reach.observe(false, t), Some(Change::Lost));
        assert!(!reach.is_up());
        assert_eq!(reach.observe(false, t + Duration::from_secs(5)), None);
        let back = reach.observe(true, t + Duration::from_secs(20));
        assert_eq!(back, Some(Change::Back(Duration::from_secs(20))));
        assert!(reach.is_up());
        assert_eq!(reach.observe(true, t + Duration::from_secs(25)), None);
    }

    #[test]
    fn only_a_real_broker_up_counts() {
        assert!(any_up([(-1, "UP"), (1, "UP")]));
        assert!(!any_up([(-1, "UP"), (1, "DOWN"), (2, "CONNECT")]));
        assert!(!any_up([]));
    }
}
