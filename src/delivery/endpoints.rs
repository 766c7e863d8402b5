//! Where an event waits for its turn to be sent: one schedule per host (a URL origin), with
//! a queue, an adaptive limit and a breaker per webhook on it (`domain/host_schedule.rs`).
//!
//! An event that finds its host busy waits here, in memory, bounded per webhook in events
//! and bytes and across all hosts in events; it is parked through the retry topics only when
//! its queue is full or it waited longer than `max_wait`. Breakers refuse at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::domain::host_schedule::{
    Admitted, Budget, Dequeued, Finished, HostSchedule, Refusal as ScheduleRefusal, SchedulePolicy,
};
use crate::domain::rate::Rate;

/// Why an event cannot be sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The webhook's breaker is open: an attempt that was not made.
    WebhookOpen(Duration),
    /// The host could not be connected to lately: an attempt that was not made.
    HostOpen(Duration),
    /// The webhook's queue is full, or the event waited too long: nothing failed. With how
    /// long its queue is expected to take before it has room (see
    /// [`HostSchedule::expected_wait`](crate::domain::host_schedule::HostSchedule::expected_wait)).
    Busy(Duration),
    /// Busy because of the webhook's rate cap: with when its turn is expected, counting the
    /// events parked ahead of it (a rate makes that a good guess).
    Capped(Duration),
}

impl Refusal {
    /// `expected_wait`: for a busy refusal, how long the webhook's queue needs.
    fn from_schedule(r: ScheduleRefusal, now: Instant, expected_wait: Duration) -> Self {
        match r {
            ScheduleRefusal::WebhookOpen { until } => {
                Refusal::WebhookOpen(until.saturating_duration_since(now))
            }
            ScheduleRefusal::HostOpen { until } => {
                Refusal::HostOpen(until.saturating_duration_since(now))
            }
            ScheduleRefusal::Busy => Refusal::Busy(expected_wait),
        }
    }
}

/// Limits of waiting, across all hosts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WaitLimits {
    /// Longest wait in a queue before the event is parked instead.
    pub max_wait: Duration,
    /// Events waiting or in flight across all hosts (each holds an input slot) beyond which
    /// each webhook is held to its fair share of them.
    pub max_held: usize,
    /// Longest expected wait of an event over its webhook's fair share (see [`Budget`]).
    pub overflow_wait: Duration,
}

impl WaitLimits {
    /// Once three quarters of the input's slots are held by events waiting or in flight,
    /// each webhook is held to its fair share of them (beyond it, an event that would wait
    /// longer than `queue_overflow_wait_ms` is parked), so slow hosts leave slots for the
    /// others.
    pub fn from_settings(d: &crate::settings::DeliverySettings) -> Self {
        WaitLimits {
            max_wait: Duration::from_millis(d.queue_max_wait_ms),
            max_held: (d.max_in_flight * 3 / 4).max(1),
            overflow_wait: Duration::from_millis(d.queue_overflow_wait_ms),
        }
    }
}

type Waiter = oneshot::Sender<Result<Pass, ScheduleRefusal>>;

struct Host {
    /// The origin, for logs and metrics (never a path: it may carry a tenant's token).
    key: String,
    schedule: Mutex<HostSchedule<Waiter>>,
    /// Its webhooks with events waiting or in flight, and its requests in flight, as last
    /// added to `Totals` (changed only under the schedule's lock).
    active_webhooks: AtomicUsize,
    in_flight: AtomicUsize,
    /// The host's concurrency limit, as last synced: how many connections its requests
    /// are spread over (see [`Pass::lane`]).
    limit: AtomicUsize,
    /// Round-robin over those connections.
    next_lane: AtomicUsize,
    /// Requests one connection carries at once (see [`Endpoints::spread_over_connections`]).
    per_lane: usize,
    /// A task hands out tokens of rate-capped webhooks as they come (at most one a host).
    pumping: AtomicBool,
}

impl Host {
    /// Brings the global counts up to date with `schedule`.
    fn sync(&self, schedule: &HostSchedule<Waiter>, totals: &Totals) {
        let update = |mine: &AtomicUsize, total: &AtomicUsize, now: usize| {
            let before = mine.swap(now, Ordering::Relaxed);
            if now > before {
                total.fetch_add(now - before, Ordering::Relaxed);
            } else {
                total.fetch_sub(before - now, Ordering::Relaxed);
            }
        };
        update(
            &self.active_webhooks,
            &totals.active_webhooks,
            schedule.active_webhooks(),
        );
        update(&self.in_flight, &totals.in_flight, schedule.in_flight());
        self.limit.store(schedule.limit(), Ordering::Relaxed);
    }
}

/// Waiting across all hosts.
#[derive(Default)]
struct Totals {
    queued: AtomicUsize,
    queued_bytes: AtomicUsize,
    in_flight: AtomicUsize,
    /// Webhooks with events waiting or in flight: the fair share's divisor.
    active_webhooks: AtomicUsize,
}

pub struct Endpoints {
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    policy: SchedulePolicy,
    limits: WaitLimits,
    totals: Arc<Totals>,
    ids: AtomicU64,
    last_prune: Mutex<Instant>,
    /// Requests one connection to a host carries at once (see [`Pass::lane`]).
    per_lane: usize,
}

/// Hosts and webhooks unused this long are forgotten (their breakers are closed).
const IDLE: Duration = Duration::from_secs(600);

/// The endpoint key of a URL: its origin. Webhooks of several tenants on one host share it.
pub fn endpoint_key(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or_default(),
            u.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => url.to_owned(),
    }
}

/// Permission to send one request. Report how it ended with [`Pass::finish`]; dropping it
/// unreported frees the slot without a verdict.
pub struct Pass {
    host: Option<Arc<Host>>,
    webhook: Arc<str>,
    totals: Arc<Totals>,
}

/// The time, from tokio's clock (which tests can pause and advance).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pass {
    /// The connection lane this request goes on: requests are spread round-robin over as
    /// many lanes as the host's limit needs at its requests per connection, so that a host
    /// serving each connection on one worker (most servers and proxies) gets more
    /// connections as its limit grows, and a quiet host stays on one.
    pub fn lane(&self) -> usize {
        let Some(host) = &self.host else {
            return 0;
        };
        let limit = host.limit.load(Ordering::Relaxed);
        let lanes = crate::domain::concurrency::lanes(limit, host.per_lane);
        host.next_lane.fetch_add(1, Ordering::Relaxed) % lanes
    }

    pub fn finish(mut self, finished: Finished) {
        if let Some(host) = self.host.take() {
            release(&host, &self.webhook, finished, &self.totals);
        }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if let Some(host) = self.host.take() {
            release(&host, &self.webhook, Finished::NotSent, &self.totals);
        }
    }
}

/// Frees a slot, then hands free slots to waiters and refuses those a breaker shut out.
fn release(host: &Arc<Host>, webhook: &str, finished: Finished, totals: &Arc<Totals>) {
    let mut schedule = lock(&host.schedule);
    let before = schedule.breaker_counts().1;
    let refused = schedule.finish(webhook, finished, now());
    let after = schedule.breaker_counts().1;
    hand_out(host, &mut schedule, refused, totals);
    drop(schedule);
    // Breaker transitions are logged with the host's origin only.
    match (before, after) {
        (false, true) => tracing::warn!(endpoint = host.key, "a circuit breaker opened"),
        (true, false) => tracing::info!(endpoint = host.key, "circuit breakers closed"),
        _ => {}
    }
}

/// Answers the waiters a breaker shut out (`refused`), and hands free slots (and tokens)
/// to waiters; then makes sure tokens still to come are handed out when they come.
fn hand_out(
    host: &Arc<Host>,
    schedule: &mut HostSchedule<Waiter>,
    refused: Vec<(Dequeued<Waiter>, ScheduleRefusal)>,
    totals: &Arc<Totals>,
) {
    let mut handed: Vec<(Dequeued<Waiter>, Result<(), ScheduleRefusal>)> =
        refused.into_iter().map(|(d, r)| (d, Err(r))).collect();
    while let Some(d) = schedule.next_ready(now()) {
        handed.push((d, Ok(())));
    }
    let mut unsent = Vec::new();
    for (d, verdict) in handed {
        totals.queued.fetch_sub(1, Ordering::Relaxed);
        totals.queued_bytes.fetch_sub(d.bytes, Ordering::Relaxed);
        let answer = verdict.map(|()| Pass {
            host: Some(host.clone()),
            webhook: d.webhook.clone(),
            totals: totals.clone(),
        });
        // A waiter that gave up a moment ago: its slot goes back (after the lock is released).
        if let Err(Ok(mut pass)) = d.waiter.send(answer) {
            pass.host = None;
            unsent.push(pass.webhook.clone());
        }
    }
    for w in unsent {
        schedule.finish(&w, Finished::NotSent, now());
        while let Some(d) = schedule.next_ready(now()) {
            totals.queued.fetch_sub(1, Ordering::Relaxed);
            totals.queued_bytes.fetch_sub(d.bytes, Ordering::Relaxed);
            let pass = Pass {
                host: Some(host.clone()),
                webhook: d.webhook.clone(),
                totals: totals.clone(),
            };
            if let Err(Ok(mut pass)) = d.waiter.send(Ok(pass)) {
                // Rare twice over; the next release serves the queue.
                pass.host = None;
                schedule.finish(&d.webhook, Finished::NotSent, now());
            }
        }
    }
    host.sync(schedule, totals);
    if schedule.next_token_at(now()).is_some() {
        pump(host, totals);
    }
}

/// Hands out the tokens of rate-capped webhooks as they come, until none waits for one:
/// nothing else would (answers free slots, not tokens). One task a host at most.
fn pump(host: &Arc<Host>, totals: &Arc<Totals>) {
    if host.pumping.swap(true, Ordering::AcqRel) {
        return;
    }
    let (host, totals) = (host.clone(), totals.clone());
    tokio::spawn(async move {
        loop {
            let next = lock(&host.schedule).next_token_at(now());
            let Some(at) = next else {
                host.pumping.store(false, Ordering::Release);
                // A waiter queued since the look above found the task still running.
                if lock(&host.schedule).next_token_at(now()).is_some()
                    && !host.pumping.swap(true, Ordering::AcqRel)
                {
                    continue;
                }
                return;
            };
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
            let mut schedule = lock(&host.schedule);
            hand_out(&host, &mut schedule, Vec::new(), &totals);
        }
    });
}

impl Endpoints {
    pub fn new(policy: SchedulePolicy, limits: WaitLimits) -> Self {
        Endpoints {
            hosts: Mutex::new(HashMap::new()),
            policy,
            limits,
            totals: Arc::new(Totals::default()),
            ids: AtomicU64::new(0),
            last_prune: Mutex::new(now()),
            per_lane: usize::MAX,
        }
    }

    /// Spreads each host's requests over one connection lane per `per_connection`
    /// requests of its limit (one lane otherwise).
    pub fn spread_over_connections(mut self, per_connection: usize) -> Self {
        self.per_lane = per_connection.max(1);
        self
    }

    fn host(&self, key: &str) -> Arc<Host> {
        let mut hosts = lock(&self.hosts);
        let now = now();
        {
            let mut last = lock(&self.last_prune);
            if now.saturating_duration_since(*last) > Duration::from_secs(60) {
                *last = now;
                hosts.retain(|_, h| !lock(&h.schedule).prune(now, IDLE));
            }
        }
        hosts
            .entry(key.to_owned())
            .or_insert_with(|| {
                Arc::new(Host {
                    key: key.to_owned(),
                    schedule: Mutex::new(HostSchedule::new(self.policy)),
                    active_webhooks: AtomicUsize::new(0),
                    in_flight: AtomicUsize::new(0),
                    limit: AtomicUsize::new(self.policy.host_limit.initial),
                    next_lane: AtomicUsize::new(0),
                    per_lane: self.per_lane,
                    pumping: AtomicBool::new(false),
                })
            })
            .clone()
    }

    fn budget(&self) -> Budget {
        let held = self.totals.queued.load(Ordering::Relaxed)
            + self.totals.in_flight.load(Ordering::Relaxed);
        let webhooks = self.totals.active_webhooks.load(Ordering::Relaxed).max(1);
        Budget {
            over: held >= self.limits.max_held,
            fair_share: (self.limits.max_held / webhooks).max(1),
            overflow_wait: self.limits.overflow_wait,
        }
    }

    /// Asks to send one request of `bytes` for `webhook` (org + sandbox) on `host`, waiting
    /// in the webhook's queue for a bounded time.
    pub async fn admit(&self, host: &str, webhook: &str, bytes: usize) -> Result<Pass, Refusal> {
        self.admit_capped(host, webhook, bytes, None, false).await
    }

    /// [`Endpoints::admit`] for a webhook whose requests are capped at `rate` (this
    /// instance's share of its cap): without a token it waits in its queue like a webhook
    /// whose slots are taken, and is refused as [`Refusal::Capped`] (to be parked until
    /// its turn) when the wait would be long. `returning`: the event was parked as busy.
    pub async fn admit_capped(
        &self,
        host: &str,
        webhook: &str,
        bytes: usize,
        rate: Option<Rate>,
        returning: bool,
    ) -> Result<Pass, Refusal> {
        let answer = self
            .admit_waiting(host, webhook, bytes, rate, returning)
            .await;
        match answer {
            Err(Refusal::Busy(_)) if rate.is_some() => {
                let cell = self.host(host);
                let mut schedule = lock(&cell.schedule);
                let turn = schedule.expected_wait(webhook, now());
                schedule.parked_one(webhook);
                Err(Refusal::Capped(turn))
            }
            other => other,
        }
    }

    async fn admit_waiting(
        &self,
        host: &str,
        webhook: &str,
        bytes: usize,
        rate: Option<Rate>,
        returning: bool,
    ) -> Result<Pass, Refusal> {
        let cell = self.host(host);
        let pass = |webhook: &str| Pass {
            host: Some(cell.clone()),
            webhook: Arc::from(webhook),
            totals: self.totals.clone(),
        };
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = oneshot::channel();
        let started = tokio::time::Instant::now();
        let over_share = {
            let now = now();
            let mut schedule = lock(&cell.schedule);
            schedule.set_rate(webhook, rate, now);
            if returning {
                schedule.returned(webhook);
            }
            let over_share = match schedule.admit(webhook, bytes, now, self.budget()) {
                Ok(Admitted::Now) => {
                    cell.sync(&schedule, &self.totals);
                    return Ok(pass(webhook));
                }
                Ok(Admitted::Wait { over_share }) => over_share,
                Err(r) => {
                    let wait = schedule.expected_wait(webhook, now);
                    return Err(Refusal::from_schedule(r, now, wait));
                }
            };
            schedule.enqueue(webhook, id, bytes, tx);
            self.totals.queued.fetch_add(1, Ordering::Relaxed);
            self.totals.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
            cell.sync(&schedule, &self.totals);
            if rate.is_some() && schedule.next_token_at(now).is_some() {
                pump(&cell, &self.totals);
            }
            over_share
        };
        let deadline = started + self.limits.max_wait;
        // Over its fair share, a waiter looks again after `overflow_wait`: if its webhook
        // turned out slow, it gives its input slot back.
        let mut check = over_share.then(|| started + self.limits.overflow_wait);
        loop {
            let until = check.map_or(deadline, |c| c.min(deadline));
            match tokio::time::timeout_at(until, &mut rx).await {
                Ok(Ok(answer)) => {
                    return answer.map_err(|r| Refusal::from_schedule(r, now(), Duration::ZERO))
                }
                // The host was dropped with the waiter still queued: cannot happen while
                // queued (pruning keeps hosts with waiters), so treat it as busy.
                Ok(Err(_)) => return Err(Refusal::Busy(Duration::ZERO)),
                Err(_) => {}
            }
            let mut schedule = lock(&cell.schedule);
            let now = now();
            let give_up = tokio::time::Instant::now() >= deadline
                || schedule.is_slow(webhook, now, self.limits.overflow_wait);
            if !give_up {
                check = None;
                continue;
            }
            let cancelled = schedule.cancel(webhook, id, now);
            let wait = schedule.expected_wait(webhook, now);
            cell.sync(&schedule, &self.totals);
            drop(schedule);
            if cancelled.is_some() {
                self.totals.queued.fetch_sub(1, Ordering::Relaxed);
                self.totals.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
                return Err(Refusal::Busy(wait));
            }
            // Let through (or refused) just as the wait ended: take the answer.
            return match rx.try_recv() {
                Ok(answer) => answer.map_err(|r| Refusal::from_schedule(r, now, wait)),
                Err(_) => Err(Refusal::Busy(wait)),
            };
        }
    }

    /// Lets the next request of `webhook` on `host` probe its open breaker at once (see
    /// [`Breaker::probe_now`](crate::domain::breaker::Breaker::probe_now)). A host not
    /// known here has no open breaker.
    pub fn probe_now(&self, host: &str, webhook: &str) {
        let cell = lock(&self.hosts).get(host).cloned();
        if let Some(cell) = cell {
            lock(&cell.schedule).probe_now(webhook, now());
        }
    }

    /// Events and bytes waiting across all hosts.
    pub fn queued(&self) -> (usize, usize) {
        (
            self.totals.queued.load(Ordering::Relaxed),
            self.totals.queued_bytes.load(Ordering::Relaxed),
        )
    }

    /// Breakers (hosts' and webhooks') by state (closed, open, half-open), and up to `limit`
    /// hosts with a breaker that is not closed, by their origin.
    pub fn breaker_states(&self, limit: usize) -> ([usize; 3], Vec<String>) {
        let hosts = lock(&self.hosts);
        let mut counts = [0; 3];
        let mut named = Vec::new();
        for (key, host) in hosts.iter() {
            let (c, any_open) = lock(&host.schedule).breaker_counts();
            for (total, n) in counts.iter_mut().zip(c) {
                *total += n;
            }
            if any_open {
                named.push(key.clone());
            }
        }
        named.sort();
        named.truncate(limit);
        (counts, named)
    }

    /// Concurrency limits of the known hosts, and of their webhooks (for the metrics).
    pub fn limits(&self) -> (Vec<usize>, Vec<usize>) {
        let hosts = lock(&self.hosts);
        let mut host_limits = Vec::with_capacity(hosts.len());
        let mut webhook_limits = Vec::new();
        for h in hosts.values() {
            let schedule = lock(&h.schedule);
            host_limits.push(schedule.limit());
            webhook_limits.extend(schedule.webhook_limits());
        }
        (host_limits, webhook_limits)
    }

    /// Sets the scheduler's gauges (called at each scrape): breaker states and the hosts
    /// whose breaker is open (at most `MAX_OPEN_SERIES`), what waits in the queues, and the
    /// spread of the adaptive limits.
    pub fn report(&self, m: &crate::observe::metrics::Metrics) {
        let gauge = |n: usize| n.try_into().unwrap_or(i64::MAX);
        let (counts, named) = self.breaker_states(crate::observe::metrics::MAX_OPEN_SERIES);
        for (state, n) in ["closed", "open", "half_open"].iter().zip(counts) {
            m.circuit_breakers.with_label_values(&[state]).set(gauge(n));
        }
        m.circuit_open.reset();
        for endpoint in named {
            m.circuit_open
                .with_label_values(&[endpoint.as_str()])
                .set(1);
        }
        let (queued, queued_bytes) = self.queued();
        m.deliveries_queued.set(gauge(queued));
        m.deliveries_queued_bytes.set(gauge(queued_bytes));
        let (hosts, webhooks) = self.limits();
        for (limit_gauge, mut limits) in [
            (&m.host_concurrency_limit, hosts),
            (&m.webhook_concurrency_limit, webhooks),
        ] {
            limits.sort_unstable();
            limit_gauge.reset();
            if let (Some(min), Some(max)) = (limits.first(), limits.last()) {
                let median = limits[limits.len() / 2];
                for (stat, v) in [("min", *min), ("median", median), ("max", *max)] {
                    limit_gauge.with_label_values(&[stat]).set(gauge(v));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::breaker::BreakerPolicy;
    use crate::domain::concurrency::LimitPolicy;

    fn endpoints(host_limit: usize, max_wait: Duration, max_held: usize) -> Arc<Endpoints> {
        let breaker = BreakerPolicy {
            failures_to_open: 3,
            open_for: Duration::from_secs(30),
            max_open_for: Duration::from_secs(60),
        };
        Arc::new(Endpoints::new(
            SchedulePolicy {
                host_limit: LimitPolicy::fixed(host_limit),
                webhook_limit: LimitPolicy::fixed(host_limit),
                webhook_breaker: breaker,
                host_breaker: BreakerPolicy {
                    open_for: Duration::from_secs(1),
                    ..breaker
                },
                queue_events: 1_000,
                queue_bytes: 1 << 20,
                host_queue_events: 1_000,
            },
            WaitLimits {
                max_wait,
                max_held,
                overflow_wait: Duration::from_secs(1),
            },
        ))
    }

    /// Asserts that `webhook` on `host` is refused busy after waiting `secs` seconds (give or
    /// take one), and that it left no place held in the queue.
    async fn refused_busy_after(e: &Endpoints, host: &str, webhook: &str, bytes: usize, secs: u64) {
        let started = tokio::time::Instant::now();
        let refused = e.admit(host, webhook, bytes).await.err();
        assert!(matches!(refused, Some(Refusal::Busy(_))));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(secs) && waited < Duration::from_secs(secs + 1));
        assert_eq!(e.queued(), (0, 0));
    }

    fn ok() -> Finished {
        Finished::Answered {
            status: 200,
            latency: Duration::from_millis(5),
        }
    }

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

    /// The host's limit as its passes see it.
    fn host_limit(e: &Endpoints, host: &str) -> usize {
        e.host(host).limit.load(Ordering::Relaxed)
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_used_minutes_ago_starts_where_its_limit_was() {
        let mut policy = endpoints(1, Duration::from_secs(30), 1_000).policy;
        policy.host_limit = LimitPolicy::adaptive(4, 64);
        policy.webhook_limit = LimitPolicy::fixed(64);
        let e = Endpoints::new(
            policy,
            WaitLimits {
                max_wait: Duration::from_secs(30),
                max_held: 1_000,
                overflow_wait: Duration::from_secs(1),
            },
        );
        // Rounds of as many requests as the limit allows, all answered well: slow start.
        for _ in 0..5 {
            let limit = host_limit(&e, "h").max(1);
            let mut passes = Vec::new();
            for _ in 0..limit {
                passes.push(e.admit("h", "w", 10).await.unwrap());
            }
            for p in passes {
                p.finish(ok());
            }
        }
        let grown = host_limit(&e, "h");
        assert!(grown >= 32, "slow start from 4 reached only {grown}");
        // Quiet for five minutes: the next burst starts at the limit the host proved.
        tokio::time::advance(Duration::from_secs(300)).await;
        e.admit("h", "w", 10).await.unwrap().finish(ok());
        assert_eq!(host_limit(&e, "h"), grown);
        // Unused for longer than IDLE, the host is forgotten and starts afresh.
        tokio::time::advance(IDLE + Duration::from_secs(61)).await;
        e.admit("other", "w", 10).await.unwrap().finish(ok());
        assert_eq!(host_limit(&e, "h"), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn busy_is_a_wait_not_a_failure() {
        let e = endpoints(2, Duration::from_secs(30), 100);
        let a = e.admit("h", "w1", 10).await.unwrap();
        let _b = e.admit("h", "w1", 10).await.unwrap();
        let waiter = tokio::spawn({
            let e = e.clone();
            async move { e.admit("h", "w1", 10).await.map(|p| p.finish(ok())) }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(e.queued(), (1, 10), "the third waits in memory");
        a.finish(ok());
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(e.queued(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_wait_ends_busy_and_frees_its_place() {
        let e = endpoints(1, Duration::from_secs(30), 100);
        let _held = e.admit("h", "w1", 10).await.unwrap();
        refused_busy_after(&e, "h", "w1", 10, 30).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_webhook_does_not_delay_another_on_the_same_host() {
        let e = endpoints(8, Duration::from_secs(30), 100);
        // "hang" fills the host with requests that end only at a 10 s timeout.
        let mut hanging = Vec::new();
        for _ in 0..8 {
            let e = e.clone();
            hanging.push(tokio::spawn(async move {
                let pass = e.admit("h", "hang", 10).await;
                tokio::time::sleep(Duration::from_secs(10)).await;
                if let Ok(p) = pass {
                    p.finish(Finished::Transport {
                        connect: false,
                        elapsed: Duration::from_secs(10),
                    });
                }
            }));
        }
        // ... and keeps queueing more.
        for _ in 0..20 {
            let e = e.clone();
            tokio::spawn(async move {
                if let Ok(p) = e.admit("h", "hang", 10).await {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    p.finish(Finished::Transport {
                        connect: false,
                        elapsed: Duration::from_secs(10),
                    });
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        // A healthy webhook on the same host: its events get through once the first hanging
        // requests time out, and from then on "hang" holds no more than its share.
        let started = tokio::time::Instant::now();
        let mut delivered = 0;
        while delivered < 100 {
            let pass = e.admit("h", "fine", 10).await.expect("never refused");
            tokio::time::sleep(Duration::from_millis(5)).await;
            pass.finish(ok());
            delivered += 1;
        }
        // 10 s until the first slot frees, then 100 × 5 ms; "hang" is shut out by its
        // breaker after 3 timeouts and its waiters are refused.
        assert!(
            started.elapsed() < Duration::from_secs(11),
            "took {:?}",
            started.elapsed()
        );
        for h in hanging {
            h.await.unwrap();
        }
        assert!(matches!(
            e.admit("h", "hang", 10).await.err(),
            Some(Refusal::WebhookOpen(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_hosts_leave_input_slots_for_the_others() {
        // Slots for 6 events in all; two hosts whose webhooks answer in 8 s.
        let e = endpoints(8, Duration::from_secs(300), 6);
        for (host, w) in [("slow1", "a"), ("slow2", "b")] {
            e.admit(host, w, 1)
                .await
                .unwrap()
                .finish(Finished::Answered {
                    status: 200,
                    latency: Duration::from_secs(8),
                });
        }
        let mut held = Vec::new();
        for (host, w) in [("slow1", "a"), ("slow2", "b")] {
            for _ in 0..3 {
                held.push(e.admit(host, w, 1).await.expect("room at first"));
            }
        }
        // Six held, each slow webhook has its fair share (3): a seventh would wait 8 s, so
        // it is refused at once and its input slot goes back.
        let started = tokio::time::Instant::now();
        assert!(matches!(
            e.admit("slow1", "a", 1).await.err(),
            Some(Refusal::Busy(_))
        ));
        assert_eq!(started.elapsed(), Duration::ZERO);
        // Another webhook, under its share, still gets through at once.
        let fast = e.admit("fast", "c", 1).await.expect("fast goes through");
        fast.finish(ok());
        assert_eq!(e.queued(), (0, 0));
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_over_its_share_gives_its_slot_back_when_its_webhook_stalls() {
        // Slots for 4 in all; webhook "a" has no latency known yet, and its requests hang.
        let e = endpoints(2, Duration::from_secs(300), 4);
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(e.admit("h", "a", 1).await.unwrap());
        }
        for _ in 0..2 {
            held.push(e.admit("other", "b", 1).await.unwrap());
        }
        // Over the cap and over its share: it may wait, but after `overflow_wait` (1 s) its
        // webhook has gone unanswered that long, so it gives up.
        refused_busy_after(&e, "h", "a", 1, 1).await;
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_pass_frees_its_slot_for_the_next_waiter() {
        let e = endpoints(1, Duration::from_secs(30), 100);
        let held = e.admit("h", "w", 1).await.unwrap();
        let next = tokio::spawn({
            let e = e.clone();
            async move { e.admit("h", "w", 1).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        drop(held);
        assert!(next.await.unwrap());
        let (counts, named) = e.breaker_states(5);
        assert_eq!(counts, [2, 0, 0], "the host's and the webhook's, closed");
        assert!(named.is_empty());
    }
}
