//! A budget of actions per key and minute: test sends and single-event redeliveries, per
//! webhook. The keys are webhooks that exist (an action on one that does not is refused
//! before it spends anything), and a key's times are dropped once a minute old.

use std::collections::HashMap;
use std::sync::Mutex;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_budget() {
        let budget = PerMinute::new(2);
        assert!(budget.admit("a") && budget.admit("a"));
        assert!(!budget.admit("a"));
        assert!(budget.admit("b"));
    }
}
