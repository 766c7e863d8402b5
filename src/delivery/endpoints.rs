//! Isolation between endpoints: each endpoint (a webhook's URL origin) has its own
//! concurrency limit and circuit breaker. An event may wait a little for a free slot of its
//! endpoint, but only a few events per endpoint may wait, and not for long; past that, or
//! while the breaker is open, the caller parks the event. So a dead, slow or rate-limiting
//! endpoint can hold at most its own small share of the workers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::breaker::{Admission, Breaker, BreakerPolicy};

struct Endpoint {
    permits: Arc<Semaphore>,
    /// Events waiting for one of `permits`.
    waiting: AtomicUsize,
    breaker: Mutex<Breaker>,
}

/// Waiters per request slot of an endpoint.
const WAITERS_PER_SLOT: usize = 4;

/// Permission to send one request; dropping it frees the endpoint's slot.
pub struct Pass {
    _permit: OwnedSemaphorePermit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The endpoint's breaker is open: try again after this long.
    Open(Duration),
    /// The endpoint has its maximum of requests in flight and of events waiting, or the
    /// wait was too long.
    Busy,
}

pub struct Endpoints {
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    concurrency: usize,
    policy: BreakerPolicy,
    /// Longest wait for a free slot before the event is parked instead.
    max_wait: Duration,
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
    pub fn new(concurrency: usize, policy: BreakerPolicy, max_wait: Duration) -> Self {
        Endpoints {
            endpoints: Mutex::new(HashMap::new()),
            concurrency,
            policy,
            max_wait,
        }
    }

    fn endpoint(&self, key: &str) -> Arc<Endpoint> {
        let mut map = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key.to_owned())
            .or_insert_with(|| {
                Arc::new(Endpoint {
                    permits: Arc::new(Semaphore::new(self.concurrency)),
                    waiting: AtomicUsize::new(0),
                    breaker: Mutex::new(Breaker::new(self.policy)),
                })
            })
            .clone()
    }

    /// Asks to send one request to `key`, waiting a bounded time for a free slot.
    pub async fn admit(&self, key: &str) -> Result<Pass, Refusal> {
        let endpoint = self.endpoint(key);
        let rejects = |e: &Endpoint| {
            e.breaker
                .lock()
                .map(|b| b.rejects(Instant::now()))
                .unwrap_or(None)
        };
        if let Some(until) = rejects(&endpoint) {
            return Err(Refusal::Open(
                until.saturating_duration_since(Instant::now()),
            ));
        }
        let permit = match endpoint.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let limit = self.concurrency * WAITERS_PER_SLOT;
                if endpoint.waiting.fetch_add(1, Ordering::SeqCst) >= limit {
                    endpoint.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(Refusal::Busy);
                }
                let free = endpoint.permits.clone().acquire_owned();
                let waited = tokio::time::timeout(self.max_wait, free).await;
                endpoint.waiting.fetch_sub(1, Ordering::SeqCst);
                match waited {
                    Ok(Ok(permit)) => permit,
                    _ => return Err(Refusal::Busy),
                }
            }
        };
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
        use crate::domain::breaker::State;
        let endpoint = self.endpoint(key);
        let (before, after) = {
            let mut breaker = endpoint.breaker.lock().unwrap_or_else(|e| e.into_inner());
            let before = breaker.state();
            breaker.record(Instant::now(), healthy);
            (before, breaker.state())
        };
        // Transitions are logged with the endpoint's origin (never a path or query, which
        // may carry tokens); the metrics only name a bounded few.
        match (before, after) {
            (State::Closed { .. } | State::HalfOpen { .. }, State::Open { cooldown, .. }) => {
                tracing::warn!(
                    endpoint = key,
                    cooldown_secs = cooldown.as_secs(),
                    "circuit breaker opened"
                )
            }
            (State::Open { .. } | State::HalfOpen { .. }, State::Closed { .. }) => {
                tracing::info!(endpoint = key, "circuit breaker closed")
            }
            _ => {}
        }
    }

    /// Endpoints by breaker state (closed, open, half-open), and up to `limit` endpoints
    /// whose breaker is not closed, longest cool-down first, with their state.
    pub fn breaker_states(&self, limit: usize) -> ([usize; 3], Vec<(String, &'static str)>) {
        use crate::domain::breaker::State;
        let map = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        let mut counts = [0; 3];
        let mut open = Vec::new();
        for (key, endpoint) in map.iter() {
            let Ok(state) = endpoint.breaker.lock().map(|b| b.state()) else {
                continue;
            };
            match state {
                State::Closed { .. } => counts[0] += 1,
                State::Open { cooldown, .. } => {
                    counts[1] += 1;
                    open.push((cooldown, key.clone(), "open"));
                }
                State::HalfOpen { cooldown } => {
                    counts[2] += 1;
                    open.push((cooldown, key.clone(), "half_open"));
                }
            }
        }
        open.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let named = open
            .into_iter()
            .take(limit)
            .map(|(_, key, state)| (key, state))
            .collect();
        (counts, named)
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

    #[tokio::test]
    async fn concurrency_is_limited_per_endpoint_and_waits_are_bounded() {
        let e = Arc::new(Endpoints::new(
            2,
            BreakerPolicy::default(),
            Duration::from_millis(50),
        ));
        let a1 = e.admit("a").await.unwrap();
        let _a2 = e.admit("a").await.unwrap();
        // A third waits, then gives up.
        assert_eq!(e.admit("a").await.err(), Some(Refusal::Busy));
        assert!(
            e.admit("b").await.is_ok(),
            "another endpoint is not affected"
        );
        // A waiter gets the slot freed while it waits.
        let waiter = tokio::spawn({
            let e = e.clone();
            async move { e.admit("a").await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(a1);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn only_a_few_may_wait() {
        let e = Arc::new(Endpoints::new(
            1,
            BreakerPolicy::default(),
            Duration::from_secs(5),
        ));
        let _held = e.admit("a").await.unwrap();
        let waiters: Vec<_> = (0..WAITERS_PER_SLOT)
            .map(|_| {
                let e = e.clone();
                tokio::spawn(async move { e.admit("a").await.map(|_| ()) })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        assert_eq!(e.admit("a").await.err(), Some(Refusal::Busy));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refused at once, not after a wait"
        );
        for w in waiters {
            w.abort();
        }
    }

    #[tokio::test]
    async fn an_open_breaker_refuses_with_the_wait() {
        let policy = BreakerPolicy {
            failures_to_open: 2,
            open_for: Duration::from_secs(30),
            max_open_for: Duration::from_secs(60),
        };
        let e = Endpoints::new(8, policy, Duration::from_secs(1));
        e.report("a", false);
        e.report("a", false);
        match e.admit("a").await {
            Err(Refusal::Open(wait)) => assert!(wait > Duration::from_secs(29)),
            other => panic!("expected an open breaker, got {:?}", other.err()),
        }
        assert!(e.admit("b").await.is_ok());
        let (counts, named) = e.breaker_states(5);
        assert_eq!(counts, [1, 1, 0], "b is known and closed, a is open");
        assert_eq!(named, vec![("a".to_owned(), "open")]);
    }
}
