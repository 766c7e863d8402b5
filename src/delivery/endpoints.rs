//! Isolation between endpoints: each endpoint (a webhook's URL origin) has its own
//! concurrency limit and circuit breaker. A request that cannot go now is not queued: the
//! caller parks the event, so a dead, slow or rate-limiting endpoint holds no worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::breaker::{Admission, Breaker, BreakerPolicy};

struct Endpoint {
    permits: Arc<Semaphore>,
    breaker: Mutex<Breaker>,
}

/// Permission to send one request; dropping it frees the endpoint's slot.
pub struct Pass {
    _permit: OwnedSemaphorePermit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The endpoint's breaker is open: try again after this long.
    Open(Duration),
    /// The endpoint already has its maximum of requests in flight.
    Busy,
}

pub struct Endpoints {
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    concurrency: usize,
    policy: BreakerPolicy,
}

/// The endpoint key of a URL: its origin. Webhooks of several tenants on one host share it,
/// which is what protects that host.
pub fn endpoint_key(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or_default(),
            u.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => url.to_owned(),
    }
}

impl Endpoints {
    pub fn new(concurrency: usize, policy: BreakerPolicy) -> Self {
        Endpoints {
            endpoints: Mutex::new(HashMap::new()),
            concurrency,
            policy,
        }
    }

    fn endpoint(&self, key: &str) -> Arc<Endpoint> {
        let mut map = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key.to_owned())
            .or_insert_with(|| {
                Arc::new(Endpoint {
                    permits: Arc::new(Semaphore::new(self.concurrency)),
                    breaker: Mutex::new(Breaker::new(self.policy)),
                })
            })
            .clone()
    }

    /// Asks to send one request to `key` now.
    pub fn admit(&self, key: &str) -> Result<Pass, Refusal> {
        let endpoint = self.endpoint(key);
        let permit = endpoint
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Busy)?;
        let now = Instant::now();
        let admission = endpoint
            .breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(now);
        match admission {
            Admission::Allow | Admission::Probe => Ok(Pass { _permit: permit }),
            Admission::Reject { until } => Err(Refusal::Open(until.saturating_duration_since(now))),
        }
    }

    /// Reports how a request to `key` went (see [`Breaker::record`]).
    pub fn report(&self, key: &str, healthy: bool) {
        let endpoint = self.endpoint(key);
        endpoint
            .breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(Instant::now(), healthy);
    }

    /// Endpoints whose breaker is not closed.
    pub fn open_count(&self) -> usize {
        let map = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        map.values()
            .filter(|e| {
                !matches!(
                    e.breaker.lock().map(|b| b.state()),
                    Ok(crate::domain::breaker::State::Closed { .. })
                )
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_origins() {
        assert_eq!(
            endpoint_key("https://a.example.com/x?y=1"),
            "https://a.example.com:443"
        );
        assert_eq!(
            endpoint_key("https://a.example.com:8443/"),
            "https://a.example.com:8443"
        );
    }

    #[test]
    fn concurrency_is_limited_per_endpoint() {
        let e = Endpoints::new(2, BreakerPolicy::default());
        let a1 = e.admit("a").unwrap();
        let _a2 = e.admit("a").unwrap();
        assert_eq!(e.admit("a").err(), Some(Refusal::Busy));
        assert!(e.admit("b").is_ok(), "another endpoint is not affected");
        drop(a1);
        assert!(e.admit("a").is_ok());
    }

    #[test]
    fn an_open_breaker_refuses_with_the_wait() {
        let policy = BreakerPolicy {
            failures_to_open: 2,
            open_for: Duration::from_secs(30),
            max_open_for: Duration::from_secs(60),
        };
        let e = Endpoints::new(8, policy);
        e.report("a", false);
        e.report("a", false);
        match e.admit("a") {
            Err(Refusal::Open(wait)) => assert!(wait > Duration::from_secs(29)),
            other => panic!("expected an open breaker, got {:?}", other.err()),
        }
        assert_eq!(e.open_count(), 1);
        assert!(e.admit("b").is_ok());
    }
}
