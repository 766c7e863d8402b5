//! Budgets per key: actions per minute ([`PerMinute`]: test sends and single-event
//! redeliveries per webhook, writes per token) and actions under way at once ([`InFlight`]:
//! test sends and reads per org). A key is kept only while it has recent or running
//! actions, so the maps hold no more keys than there are active tenants.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct PerMinute {
    limit: usize,
    recent: Mutex<HashMap<String, Vec<Instant>>>,
}

impl PerMinute {
    pub fn new(limit: usize) -> Self {
        PerMinute {
            limit: limit.max(1),
            recent: Mutex::new(HashMap::new()),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether `key` may act now (and counts it).
    pub fn admit(&self, key: &str) -> bool {
        let Ok(mut recent) = self.recent.lock() else {
            return false;
        };
        recent.retain(|_, times| {
            times.retain(|t| t.elapsed() < Duration::from_secs(60));
            !times.is_empty()
        });
        let times = recent.entry(key.to_owned()).or_default();
        if times.len() >= self.limit {
            return false;
        }
        times.push(Instant::now());
        true
    }
}

/// At most `most` actions of one key under way at once.
#[derive(Clone)]
pub struct InFlight {
    most: usize,
    running: Arc<Mutex<HashMap<String, usize>>>,
}

impl InFlight {
    pub fn new(most: usize) -> Self {
        InFlight {
            most: most.max(1),
            running: Arc::default(),
        }
    }

    pub fn most(&self) -> usize {
        self.most
    }

    /// A place for one action of `key`, given back when dropped; `None` while `key` has its
    /// most under way.
    pub fn take(&self, key: &str) -> Option<Held> {
        let mut running = self.running.lock().ok()?;
        let n = running.entry(key.to_owned()).or_default();
        if *n >= self.most {
            return None;
        }
        *n += 1;
        Some(Held {
            key: key.to_owned(),
            running: self.running.clone(),
        })
    }
}

/// An action under way.
#[derive(Debug)]
pub struct Held {
    key: String,
    running: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut running) = self.running.lock() {
            if let Some(n) = running.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    running.remove(&self.key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_places_given_back_when_done() {
        let in_flight = InFlight::new(1);
        let one = in_flight.take("acme").unwrap();
        assert!(in_flight.take("acme").is_none());
        assert!(
            in_flight.take("other").is_some(),
            "another key is not held up"
        );
        drop(one);
        assert!(in_flight.take("acme").is_some());
        assert!(
            in_flight.running.lock().unwrap().is_empty(),
            "idle keys are dropped"
        );
    }

    #[test]
    fn each_key_has_its_own_budget() {
        let budget = PerMinute::new(2);
        assert!(budget.admit("a") && budget.admit("a"));
        assert!(!budget.admit("a"));
        assert!(budget.admit("b"));
    }
}
