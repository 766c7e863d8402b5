//! How one host's capacity is shared among the webhooks on it.
//!
//! Many tenants' webhooks often live on one host (an integration platform, an API gateway
//! with a path per sandbox). The host gets an adaptive concurrency limit (AIMD on latency);
//! each webhook (org + sandbox) gets a queue, an adaptive limit of its own (shrunk by its
//! errors and 429s) and a circuit breaker. Waiting webhooks are served round-robin, and while
//! others wait no webhook holds more than its fair share of the host's slots, so one
//! webhook's slowness, errors or volume cannot take another's share.
//!
//! Which failures count where: an HTTP answer (5xx, 429, 408) is the webhook's, since other
//! paths of the same host may be fine; a failure to connect (refused, TLS, DNS) is the host's
//! as well. A request that timed out after connecting is the webhook's.
//!
//! The state machine is pure: the caller passes the time, owns the waiters (`T`) and wakes
//! them; `delivery/endpoints.rs` does that with channels.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::breaker::{Admission, Breaker, BreakerPolicy, State};
use super::concurrency::{Baseline, Limit, LimitPolicy, Sample};
use super::rate::{Rate, TokenBucket};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulePolicy {
    pub host_limit: LimitPolicy,
    pub webhook_limit: LimitPolicy,
    pub webhook_breaker: BreakerPolicy,
    pub host_breaker: BreakerPolicy,
    /// Events one webhook may have waiting.
    pub queue_events: usize,
    /// Bytes of payload one webhook may have waiting (one event always fits an empty queue).
    pub queue_bytes: usize,
    /// Events all the host's webhooks may have waiting: this, or four per request the host
    /// may have in flight if that is more. A hanging host holds no more input slots.
    pub host_queue_events: usize,
}

/// Waiting events per request slot of a host, beyond `host_queue_events`.
const WAITERS_PER_SLOT: usize = 4;

/// A host with requests in flight and no answer for this long is stalled (see
/// [`HostSchedule::is_stalled`]).
const HOST_STALL: Duration = Duration::from_secs(1);

/// Why a request may not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The webhook's breaker is open.
    WebhookOpen { until: Instant },
    /// The host's breaker is open (it could not be connected to).
    HostOpen { until: Instant },
    /// The webhook's queue is full: the host is busy, nothing failed.
    Busy,
}

/// How a request that was let through ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// The host answered with `status` after `latency`.
    Answered { status: u16, latency: Duration },
    /// No answer after `elapsed`: `connect` when no connection could be made (refused, TLS,
    /// DNS); otherwise it was reset or timed out.
    Transport { connect: bool, elapsed: Duration },
    /// Not sent, for reasons that are not the destination's (a config error).
    NotSent,
}

/// The answers that are retried: they count against the webhook.
pub fn is_failure_status(status: u16) -> bool {
    matches!(status, 408 | 425 | 429 | 500..=599)
}

/// What the caller knows of all hosts together. Every event waiting or in flight holds an
/// input slot; once most slots are taken, each webhook is held to its fair share of them, so
/// slow hosts cannot take every input slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Events waiting or in flight across all hosts reached the cap.
    pub over: bool,
    /// Events (waiting or in flight) each active webhook may have while `over`.
    pub fair_share: usize,
    /// Beyond its fair share, an event that would wait longer than this (by its webhook's
    /// usual latency and queue) is refused as busy, so its slot goes back to the input.
    pub overflow_wait: Duration,
}

impl Budget {
    pub const UNLIMITED: Budget = Budget {
        over: false,
        fair_share: usize::MAX,
        overflow_wait: Duration::MAX,
    };
}

/// Admission of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// Send now: the slot is taken.
    Now,
    /// Wait: the caller must [`HostSchedule::enqueue`] it. `over_share` when the webhook is
    /// over its fair share of the input's slots: the caller should not wait longer than
    /// the budget's `overflow_wait` while [`HostSchedule::is_slow`] says so.
    Wait { over_share: bool },
}

struct Waiting<T> {
    id: u64,
    bytes: usize,
    waiter: T,
}

struct Webhook<T> {
    queue: VecDeque<Waiting<T>>,
    queued_bytes: usize,
    in_flight: usize,
    limit: Limit,
    breaker: Breaker,
    latency: Baseline,
    last_active: Instant,
    /// Since when the webhook has had requests in flight without any answer: a lower
    /// bound on its latency before the first answer or timeout says more.
    waiting_since: Option<Instant>,
    /// Its rate cap (this instance's share), when it has one: a request starts only with a
    /// token, before the concurrency limits are asked.
    bucket: Option<TokenBucket>,
    /// Events of a capped webhook parked as busy and not back yet: they are ahead of the
    /// next one in line for its tokens.
    parked: usize,
}

impl<T> Webhook<T> {
    /// How long until its `n`th next request may start by its rate cap, counting those
    /// parked ahead of it.
    fn rate_wait(&self, n: usize, now: Instant) -> Duration {
        self.bucket
            .as_ref()
            .map_or(Duration::ZERO, |b| b.wait_for(n + self.parked, now))
    }

    fn load(&self) -> usize {
        self.in_flight + self.queue.len()
    }
}

/// How long a request of `w` takes by what is known at `now`: its usual latency, at least
/// as long as its requests have now gone unanswered.
fn usual_latency<T>(w: &Webhook<T>, now: Instant) -> Duration {
    let stalled = w
        .waiting_since
        .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
    w.latency.value().unwrap_or(Duration::ZERO).max(stalled)
}

/// The schedule of one host.
pub struct HostSchedule<T> {
    policy: SchedulePolicy,
    limit: Limit,
    breaker: Breaker,
    in_flight: usize,
    webhooks: HashMap<Arc<str>, Webhook<T>>,
    /// Webhooks with waiting events, in round-robin order.
    ring: VecDeque<Arc<str>>,
    /// Webhooks with events waiting or in flight: the divisor of the fair share.
    active: usize,
    queued: usize,
    queued_bytes: usize,
    /// The host has answered at least once.
    answered: bool,
    /// Since when the host has had requests in flight without any answer.
    waiting_since: Option<Instant>,
}

/// A waiter taken off the queue, with the bytes it held.
pub struct Dequeued<T> {
    pub webhook: Arc<str>,
    pub waiter: T,
    pub bytes: usize,
}

/// The unit in which latencies relative to each webhook's usual latency are fed to the host's
/// limit (1.0 = usual is 100 ms); its policy must be [`LimitPolicy::relative`] to it.
pub const RELATIVE_UNIT: Duration = Duration::from_millis(100);

impl<T> HostSchedule<T> {
    pub fn new(policy: SchedulePolicy) -> Self {
        HostSchedule {
            limit: Limit::new(policy.host_limit),
            breaker: Breaker::new(policy.host_breaker),
            policy,
            in_flight: 0,
            webhooks: HashMap::new(),
            ring: VecDeque::new(),
            active: 0,
            queued: 0,
            queued_bytes: 0,
            answered: false,
            waiting_since: None,
        }
    }

    /// A host that never answered, or whose requests have gone unanswered for a while: its
    /// webhooks' waiting events are bounded by `host_queue_events` in all. A host that
    /// answers (a healthy one under a burst) may queue as many as its webhooks may.
    fn is_stalled(&self, now: Instant) -> bool {
        !self.answered
            || self
                .waiting_since
                .is_some_and(|t| now.saturating_duration_since(t) >= HOST_STALL)
    }

    /// The host's current concurrency limit.
    pub fn limit(&self) -> usize {
        self.limit.current()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The current limits of this host's webhooks.
    pub fn webhook_limits(&self) -> impl Iterator<Item = usize> + '_ {
        self.webhooks.values().map(|w| w.limit.current())
    }

    /// Webhooks with events waiting or in flight.
    pub fn active_webhooks(&self) -> usize {
        self.active
    }

    pub fn queued(&self) -> (usize, usize) {
        (self.queued, self.queued_bytes)
    }

    /// Slots `w` may hold now: its own limit, and its fair share of the host while others
    /// wait (so a slow webhook cannot collect the slots that fast ones keep freeing).
    fn cap(&self, w: &Webhook<T>, contended: bool) -> usize {
        self.cap_of(w.limit.current(), contended)
    }

    /// [`HostSchedule::cap`] of a webhook whose own limit is `limit`.
    fn cap_of(&self, limit: usize, contended: bool) -> usize {
        let host = self.limit.current();
        let share = if contended {
            host.div_ceil(self.active.max(1)).max(1)
        } else {
            host
        };
        limit.min(share)
    }

    /// The state of webhook `key`, made on first use (the key is allocated only then: this
    /// runs for every event).
    fn webhook(&mut self, key: &str, now: Instant) -> Option<&mut Webhook<T>> {
        if !self.webhooks.contains_key(key) {
            let policy = self.policy;
            self.webhooks.insert(
                Arc::from(key),
                Webhook {
                    queue: VecDeque::new(),
                    queued_bytes: 0,
                    in_flight: 0,
                    limit: Limit::new(policy.webhook_limit),
                    breaker: Breaker::new(policy.webhook_breaker),
                    latency: Baseline::default(),
                    last_active: now,
                    waiting_since: None,
                    bucket: None,
                    parked: 0,
                },
            );
        }
        let w = self.webhooks.get_mut(key)?;
        w.last_active = now;
        Some(w)
    }

    /// Caps `webhook`'s requests at `rate` (this instance's share of its cap), or lifts
    /// the cap (`None`). Waiting for a token is being busy, not failing.
    pub fn set_rate(&mut self, webhook: &str, rate: Option<Rate>, now: Instant) {
        let Some(w) = self.webhook(webhook, now) else {
            return;
        };
        match (rate, &mut w.bucket) {
            (None, bucket) => *bucket = None,
            (Some(rate), Some(bucket)) => bucket.set(rate, now),
            (Some(rate), bucket @ None) => *bucket = Some(TokenBucket::new(rate, now)),
        }
    }

    /// An event of capped `webhook` was parked as busy: it is ahead of the next in line.
    pub fn parked_one(&mut self, webhook: &str) {
        if let Some(w) = self.webhooks.get_mut(webhook) {
            w.parked = w.parked.saturating_add(1);
        }
    }

    /// An event parked as busy is back for `webhook`'s tokens.
    pub fn returned(&mut self, webhook: &str) {
        if let Some(w) = self.webhooks.get_mut(webhook) {
            w.parked = w.parked.saturating_sub(1);
        }
    }

    /// When the first webhook kept waiting only by its rate cap gets a token; `None` when
    /// none is (answers, not time, let the others through).
    pub fn next_token_at(&self, now: Instant) -> Option<Instant> {
        let contended = self.ring.len() > 1;
        self.ring
            .iter()
            .filter_map(|key| self.webhooks.get(key))
            .filter(|w| !w.queue.is_empty() && w.in_flight < self.cap(w, contended))
            .filter_map(|w| w.bucket.as_ref())
            .filter(|b| !b.ready(now))
            .map(|b| now + b.wait_for(1, now))
            .min()
    }

    /// Asks to send one request of `bytes` for `webhook`.
    pub fn admit(
        &mut self,
        webhook: &str,
        bytes: usize,
        now: Instant,
        budget: Budget,
    ) -> Result<Admitted, Refusal> {
        let policy = self.policy;
        let Some(w) = self.webhook(webhook, now) else {
            return Err(Refusal::Busy); // cannot happen: made on first use
        };
        if let Some(until) = w.breaker.rejects(now) {
            return Err(Refusal::WebhookOpen { until });
        }
        if let Admission::Reject { until } = self.breaker.admit(now) {
            return Err(Refusal::HostOpen { until });
        }
        let contended = !self.ring.is_empty();
        let host_room = self.in_flight < self.limit.current();
        let Some(w) = self.webhooks.get_mut(webhook) else {
            return Err(Refusal::Busy); // cannot happen: made just above
        };
        // Not rejected above, so a closed breaker or the probe of a half-open one.
        w.breaker.admit(now);
        let (queue_len, queued_bytes, in_flight) = (w.queue.len(), w.queued_bytes, w.in_flight);
        let over_share = budget.over && w.load() >= budget.fair_share;
        let usual = usual_latency(w, now);
        let rate_wait = w.rate_wait(queue_len + 1, now);
        let limit = w.limit.current();
        let cap = self.cap_of(limit, contended);
        // Rounds of requests before this one is sent, each taking the webhook's usual time.
        let rounds = u32::try_from(queue_len / cap.max(1) + 1).unwrap_or(u32::MAX);
        let long_wait = usual.saturating_mul(rounds).max(rate_wait) >= budget.overflow_wait;
        let host_queue = policy
            .host_queue_events
            .max(WAITERS_PER_SLOT * self.limit.current());
        let full = queue_len >= policy.queue_events
            || (queue_len > 0 && queued_bytes + bytes > policy.queue_bytes)
            || (self.queued >= host_queue && self.is_stalled(now))
            || (over_share && long_wait);
        if full {
            self.abandon_probes(webhook, now);
            return Err(Refusal::Busy);
        }
        if queue_len == 0 && host_room && in_flight < cap && self.take_token(webhook, now) {
            self.start(webhook, now);
            return Ok(Admitted::Now);
        }
        Ok(Admitted::Wait { over_share })
    }

    /// How long until `webhook`'s queue can take another event, by what is known at `now`:
    /// the rounds of requests ahead of it, each taking its usual latency (or as long as its
    /// requests have gone unanswered). An event refused as busy need not come back sooner.
    pub fn expected_wait(&self, webhook: &str, now: Instant) -> Duration {
        let Some(w) = self.webhooks.get(webhook) else {
            return Duration::ZERO;
        };
        let cap = self.cap_of(w.limit.current(), !self.ring.is_empty()).max(1);
        let rounds = u32::try_from(w.queue.len() / cap + 1).unwrap_or(u32::MAX);
        usual_latency(w, now)
            .saturating_mul(rounds)
            .max(w.rate_wait(w.queue.len() + 1, now))
    }

    /// Whether `webhook` takes `limit` or longer per request by what is known now: its
    /// usual latency, or how long its requests have gone unanswered. A waiter over its fair
    /// share asks again after waiting that long, and gives up its input slot if so.
    pub fn is_slow(&self, webhook: &str, now: Instant, limit: Duration) -> bool {
        self.webhooks
            .get(webhook)
            .is_some_and(|w| usual_latency(w, now) >= limit)
    }

    /// Queues a waiter admitted with [`Admitted::Wait`].
    pub fn enqueue(&mut self, webhook: &str, id: u64, bytes: usize, waiter: T) {
        let Some(w) = self.webhooks.get_mut(webhook) else {
            return;
        };
        let was_idle = w.load() == 0;
        let was_empty = w.queue.is_empty();
        w.queue.push_back(Waiting { id, bytes, waiter });
        w.queued_bytes += bytes;
        self.queued += 1;
        self.queued_bytes += bytes;
        if was_idle {
            self.active += 1;
        }
        if was_empty {
            if let Some((key, _)) = self.webhooks.get_key_value(webhook) {
                self.ring.push_back(key.clone());
            }
        }
    }

    /// Removes a waiter that stopped waiting; `None` when it was already let through or
    /// refused (its answer is then on its way).
    pub fn cancel(&mut self, webhook: &str, id: u64, now: Instant) -> Option<T> {
        let w = self.webhooks.get_mut(webhook)?;
        let at = w.queue.iter().position(|x| x.id == id)?;
        let gone = w.queue.remove(at)?;
        w.queued_bytes -= gone.bytes;
        let idle = w.load() == 0;
        if w.queue.is_empty() {
            self.ring.retain(|k| &**k != webhook);
        }
        self.queued -= 1;
        self.queued_bytes -= gone.bytes;
        if idle {
            self.active -= 1;
        }
        self.abandon_probes(webhook, now);
        Some(gone.waiter)
    }

    fn abandon_probes(&mut self, webhook: &str, now: Instant) {
        self.breaker.abandon_probe(now);
        if let Some(w) = self.webhooks.get_mut(webhook) {
            w.breaker.abandon_probe(now);
        }
    }

    /// Lets the next request of `webhook` through as the probe of its open breaker (and of
    /// the host's), without waiting out the cool-down: see [`Breaker::probe_now`].
    pub fn probe_now(&mut self, webhook: &str, now: Instant) {
        self.breaker.probe_now(now);
        if let Some(w) = self.webhooks.get_mut(webhook) {
            w.breaker.probe_now(now);
        }
    }

    /// Takes a token of `webhook`'s rate cap; `true` without a cap.
    fn take_token(&mut self, webhook: &str, now: Instant) -> bool {
        self.webhooks
            .get_mut(webhook)
            .and_then(|w| w.bucket.as_mut())
            .is_none_or(|b| b.try_take(now))
    }

    /// Sends a request of `webhook` now, which was not waiting.
    fn start(&mut self, webhook: &str, now: Instant) {
        if self.webhooks.get(webhook).is_some_and(|w| w.load() == 0) {
            self.active += 1;
        }
        self.take_slot(webhook, now);
    }

    /// Counts one more request in flight for `webhook` and the host.
    fn take_slot(&mut self, webhook: &str, now: Instant) {
        let Some(w) = self.webhooks.get_mut(webhook) else {
            return;
        };
        if w.in_flight == 0 {
            w.waiting_since = Some(now);
        }
        w.in_flight += 1;
        w.limit.observe_in_flight(w.in_flight);
        if self.in_flight == 0 {
            self.waiting_since = Some(now);
        }
        self.in_flight += 1;
        self.limit.observe_in_flight(self.in_flight);
    }

    /// The next waiter to let through, if the host has a free slot and a waiting webhook is
    /// under its cap. Its slot is taken; call again until `None`.
    pub fn next_ready(&mut self, now: Instant) -> Option<Dequeued<T>> {
        if self.in_flight >= self.limit.current() {
            return None;
        }
        let contended = self.ring.len() > 1;
        for _ in 0..self.ring.len() {
            let key = self.ring.pop_front()?;
            let Some(w) = self.webhooks.get(&key) else {
                continue;
            };
            if w.queue.is_empty() {
                continue;
            }
            if w.in_flight >= self.cap(w, contended) || !self.take_token(&key, now) {
                self.ring.push_back(key);
                continue;
            }
            let Some(w) = self.webhooks.get_mut(&key) else {
                continue;
            };
            let Some(waiting) = w.queue.pop_front() else {
                continue;
            };
            w.queued_bytes -= waiting.bytes;
            let more = !w.queue.is_empty();
            // Still active: it moves from waiting to in flight.
            self.take_slot(&key, now);
            self.queued -= 1;
            self.queued_bytes -= waiting.bytes;
            if more {
                self.ring.push_back(key.clone());
            }
            return Some(Dequeued {
                webhook: key,
                waiter: waiting.waiter,
                bytes: waiting.bytes,
            });
        }
        None
    }

    /// Releases a slot and learns from how the request ended. Returns the waiters refused
    /// because a breaker opened: they would only be refused later.
    pub fn finish(
        &mut self,
        webhook: &str,
        finished: Finished,
        now: Instant,
    ) -> Vec<(Dequeued<T>, Refusal)> {
        self.in_flight = self.in_flight.saturating_sub(1);
        if matches!(finished, Finished::Answered { .. }) {
            self.answered = true;
            self.waiting_since = (self.in_flight > 0).then_some(now);
        } else if self.in_flight == 0 {
            self.waiting_since = None;
        }
        let Some(w) = self.webhooks.get_mut(webhook) else {
            return Vec::new();
        };
        w.in_flight = w.in_flight.saturating_sub(1);
        w.last_active = now;
        w.waiting_since = (w.in_flight > 0).then_some(now);
        if w.load() == 0 {
            self.active = self.active.saturating_sub(1);
        }
        match finished {
            Finished::Answered { status, latency } => {
                self.breaker.record(now, true);
                let failed = is_failure_status(status);
                w.breaker.record(now, !failed);
                if failed {
                    w.limit.on_sample(Sample::Overload);
                } else {
                    w.limit.on_sample(Sample::Answered { latency });
                    // Relative to the webhook's usual latency, so a webhook that is always
                    // slow does not make the host look congested.
                    let relative = w.latency.observe(latency);
                    self.limit.on_sample(Sample::Answered {
                        latency: RELATIVE_UNIT.mul_f64(relative.min(1e6)),
                    });
                }
            }
            Finished::Transport { connect, elapsed } => {
                w.breaker.record(now, false);
                w.limit.on_sample(Sample::Overload);
                // A timeout says how long the webhook keeps a request: its usual latency for
                // the purpose of judging waits.
                if !connect {
                    w.latency.observe(elapsed);
                }
                if connect {
                    self.breaker.record(now, false);
                    self.limit.on_sample(Sample::Overload);
                }
            }
            Finished::NotSent => {
                w.breaker.abandon_probe(now);
                self.breaker.abandon_probe(now);
            }
        }
        if let State::Open { until, .. } = self.breaker.state() {
            let keys: Vec<Arc<str>> = self.ring.drain(..).collect();
            let mut refused = Vec::new();
            for key in keys {
                refused.extend(
                    self.drain(&key)
                        .into_iter()
                        .map(|d| (d, Refusal::HostOpen { until })),
                );
            }
            return refused;
        }
        let webhook_open = match self.webhooks.get(webhook).map(|w| w.breaker.state()) {
            Some(State::Open { until, .. }) => Some(until),
            _ => None,
        };
        match webhook_open {
            Some(until) => {
                self.ring.retain(|k| &**k != webhook);
                self.drain(webhook)
                    .into_iter()
                    .map(|d| (d, Refusal::WebhookOpen { until }))
                    .collect()
            }
            None => Vec::new(),
        }
    }

    /// Takes every waiter of `webhook` off its queue (the caller fixes the ring).
    fn drain(&mut self, webhook: &str) -> Vec<Dequeued<T>> {
        let Some(key) = self.webhooks.get_key_value(webhook).map(|(k, _)| k.clone()) else {
            return Vec::new();
        };
        let Some(w) = self.webhooks.get_mut(webhook) else {
            return Vec::new();
        };
        if w.queue.is_empty() {
            return Vec::new();
        }
        let drained: Vec<Waiting<T>> = w.queue.drain(..).collect();
        w.queued_bytes = 0;
        let idle = w.in_flight == 0;
        if idle {
            self.active = self.active.saturating_sub(1);
        }
        self.queued -= drained.len();
        drained
            .into_iter()
            .map(|x| {
                self.queued_bytes -= x.bytes;
                Dequeued {
                    webhook: key.clone(),
                    waiter: x.waiter,
                    bytes: x.bytes,
                }
            })
            .collect()
    }

    /// Forgets webhooks idle for `idle` with nothing in flight or waiting and a closed
    /// breaker. Returns whether the whole host is idle and can be forgotten.
    pub fn prune(&mut self, now: Instant, idle: Duration) -> bool {
        self.webhooks.retain(|_, w| {
            w.load() > 0
                || !matches!(w.breaker.state(), State::Closed { .. })
                || now.saturating_duration_since(w.last_active) < idle
        });
        self.webhooks.is_empty()
            && self.in_flight == 0
            && matches!(self.breaker.state(), State::Closed { .. })
    }

    /// Breakers by state (closed, open, half-open), this host's and its webhooks', and
    /// whether any is not closed.
    pub fn breaker_counts(&self) -> ([usize; 3], bool) {
        let mut counts = [0; 3];
        let states = std::iter::once(self.breaker.state())
            .chain(self.webhooks.values().map(|w| w.breaker.state()));
        for state in states {
            match state {
                State::Closed { .. } => counts[0] += 1,
                State::Open { .. } => counts[1] += 1,
                State::HalfOpen { .. } => counts[2] += 1,
            }
        }
        (counts, counts[1] + counts[2] > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(host: usize) -> SchedulePolicy {
        SchedulePolicy {
            host_limit: LimitPolicy::fixed(host),
            webhook_limit: LimitPolicy::fixed(host),
            webhook_breaker: BreakerPolicy {
                failures_to_open: 3,
                open_for: Duration::from_secs(30),
                max_open_for: Duration::from_secs(60),
            },
            host_breaker: BreakerPolicy {
                failures_to_open: 3,
                open_for: Duration::from_secs(1),
                max_open_for: Duration::from_secs(5),
            },
            queue_events: 100,
            queue_bytes: 10_000,
            host_queue_events: 1_000,
        }
    }

    /// A transport failure, before connecting or after.
    fn transport(connect: bool, elapsed: Duration) -> Finished {
        Finished::Transport { connect, elapsed }
    }

    fn ok(ms: u64) -> Finished {
        Finished::Answered {
            status: 200,
            latency: Duration::from_millis(ms),
        }
    }

    /// Admits and queues `n` requests for `webhook`; returns how many went through at once.
    /// A host of `limit` offered `n` events of each webhook, now.
    fn offered(limit: usize, offers: &[(&str, u64)]) -> (HostSchedule<u64>, Instant) {
        let t = Instant::now();
        let mut s = HostSchedule::new(policy(limit));
        for &(webhook, n) in offers {
            offer(&mut s, webhook, n, t);
        }
        (s, t)
    }

    fn offer(s: &mut HostSchedule<u64>, webhook: &str, n: u64, t: Instant) -> usize {
        let mut now = 0;
        for i in 0..n {
            match s.admit(webhook, 10, t, Budget::UNLIMITED).unwrap() {
                Admitted::Now => now += 1,
                Admitted::Wait { .. } => s.enqueue(webhook, i, 10, i),
            }
        }
        now
    }

    #[test]
    fn a_capped_webhook_waits_for_its_tokens_while_the_others_go_on() {
        let t = Instant::now();
        let mut s = HostSchedule::new(policy(100));
        let ten = Rate {
            per_second: 10.0,
            burst: 2.0,
        };
        s.set_rate("capped", Some(ten), t);
        // The burst goes at once, the rest waits in its queue: busy, not refused, not failed.
        assert_eq!(offer(&mut s, "capped", 5, t), 2);
        assert_eq!(
            offer(&mut s, "free", 5, t),
            5,
            "the others are not held back"
        );
        assert!(s.next_ready(t).is_none(), "no token yet");
        assert_eq!(s.next_token_at(t), Some(t + Duration::from_millis(100)));
        let later = t + Duration::from_millis(100);
        assert_eq!(
            s.next_ready(later).map(|d| d.webhook.to_string()),
            Some("capped".into())
        );
        assert!(s.next_ready(later).is_none(), "one token, one request");
        // The expected wait of a new event counts the tokens ahead of it.
        assert!(s.expected_wait("capped", later) >= Duration::from_millis(290));
        // Lifting the cap lets the queue go as the limits allow.
        s.set_rate("capped", None, later);
        assert_eq!(s.next_token_at(later), None);
        assert_eq!(std::iter::from_fn(|| s.next_ready(later)).count(), 2);
        // Nothing counted against the breaker.
        assert!(!s.breaker_counts().1);
    }

    #[test]
    fn waiting_webhooks_are_served_round_robin() {
        let t = Instant::now();
        let mut s = HostSchedule::new(policy(2));
        assert_eq!(offer(&mut s, "a", 10, t), 2, "a takes the free slots");
        offer(&mut s, "b", 3, t);
        offer(&mut s, "c", 3, t);
        // As requests finish (oldest first), the slots go round the waiting webhooks, not
        // to a's long queue.
        let mut in_flight = VecDeque::from(["a".to_string(), "a".to_string()]);
        let mut order = Vec::new();
        while order.len() < 6 {
            let done = in_flight.pop_front().expect("something in flight");
            s.finish(&done, ok(1), t);
            while let Some(next) = s.next_ready(t) {
                order.push(next.webhook.to_string());
                in_flight.push_back(next.webhook.to_string());
            }
        }
        assert_eq!(order, ["b", "c", "a", "b", "c", "a"]);
    }

    #[test]
    fn a_slow_webhook_holds_no_more_than_its_share_while_others_wait() {
        let t = Instant::now();
        let mut s = HostSchedule::new(policy(10));
        // "slow" fills the host while alone.
        assert_eq!(offer(&mut s, "slow", 30, t), 10);
        offer(&mut s, "fast", 30, t);
        // Requests of "slow" never finish; as the first five end (say, at their timeout),
        // the freed slots go to "fast", and "slow" gets none back while above its share.
        for _ in 0..5 {
            s.finish("slow", transport(false, Duration::from_secs(10)), t);
        }
        let mut got = Vec::new();
        while let Some(d) = s.next_ready(t) {
            got.push(d.webhook.to_string());
        }
        assert_eq!(got, vec!["fast"; 5]);
        // "fast" keeps its share as its requests complete; "slow" stays at 5.
        for _ in 0..50 {
            s.finish("fast", ok(1), t);
            if let Some(d) = s.next_ready(t) {
                assert_eq!(&*d.webhook, "fast");
            }
        }
    }

    #[test]
    fn an_uncontended_webhook_may_use_the_whole_host() {
        let t = Instant::now();
        let mut s = HostSchedule::new(policy(8));
        assert_eq!(offer(&mut s, "a", 20, t), 8);
        s.finish("a", ok(1), t);
        assert!(s.next_ready(t).is_some());
        assert_eq!(s.in_flight(), 8);
    }

    #[test]
    fn a_busy_webhook_is_expected_to_need_its_queue_s_rounds_of_usual_latency() {
        let t = Instant::now();
        let mut s = HostSchedule::new(policy(4));
        // 4 in flight, 8 waiting: two more rounds before a new event's, three in all.
        assert_eq!(offer(&mut s, "hung", 12, t), 4);
        assert_eq!(
            s.expected_wait("hung", t),
            Duration::ZERO,
            "nothing known yet"
        );
        let later = t + Duration::from_secs(2);
        assert_eq!(
            s.expected_wait("hung", later),
            Duration::from_secs(6),
            "unanswered for 2 s: at least 2 s a round"
        );
        assert_eq!(s.expected_wait("unknown", later), Duration::ZERO);
    }

    #[test]
    fn http_failures_open_only_the_webhooks_breaker_and_refuse_its_waiters() {
        let (mut s, t) = offered(3, &[("bad", 5), ("good", 2)]);
        let mut refused = Vec::new();
        for _ in 0..3 {
            refused.extend(s.finish(
                "bad",
                Finished::Answered {
                    status: 503,
                    latency: Duration::from_millis(1),
                },
                t,
            ));
        }
        assert_eq!(
            refused.len(),
            2,
            "bad's remaining waiters are refused at once"
        );
        assert!(refused
            .iter()
            .all(|(d, r)| &*d.webhook == "bad" && matches!(r, Refusal::WebhookOpen { .. })));
        assert!(matches!(
            s.admit("bad", 1, t, Budget::UNLIMITED),
            Err(Refusal::WebhookOpen { .. })
        ));
        // The host and the other webhook are untouched.
        let mut good = 0;
        while let Some(d) = s.next_ready(t) {
            assert_eq!(&*d.webhook, "good");
            good += 1;
        }
        assert_eq!(good, 2);
        assert!(s.admit("good", 1, t, Budget::UNLIMITED).is_ok());
    }

    #[test]
    fn connect_failures_open_the_host_for_a_short_while() {
        let (mut s, t) = offered(4, &[("a", 3), ("b", 1)]);
        for w in ["a", "b", "a"] {
            s.finish(w, transport(true, Duration::from_millis(1)), t);
        }
        assert!(matches!(
            s.admit("c", 1, t, Budget::UNLIMITED),
            Err(Refusal::HostOpen { .. })
        ));
        // The host's cool-down is short; then one probe goes through.
        let later = t + Duration::from_secs(1);
        assert_eq!(s.admit("c", 1, later, Budget::UNLIMITED), Ok(Admitted::Now));
        assert!(matches!(
            s.admit("d", 1, later, Budget::UNLIMITED),
            Err(Refusal::HostOpen { .. })
        ));
        s.finish("c", ok(1), later);
        assert_eq!(s.admit("d", 1, later, Budget::UNLIMITED), Ok(Admitted::Now));
    }

    #[test]
    fn timeouts_after_connecting_are_the_webhooks_not_the_hosts() {
        let t = Instant::now();
        let mut s = HostSchedule::new(policy(10));
        offer(&mut s, "hang", 5, t);
        for _ in 0..5 {
            s.finish("hang", transport(false, Duration::from_secs(10)), t);
        }
        assert!(matches!(
            s.admit("hang", 1, t, Budget::UNLIMITED),
            Err(Refusal::WebhookOpen { .. })
        ));
        assert_eq!(s.admit("other", 1, t, Budget::UNLIMITED), Ok(Admitted::Now));
    }

    #[test]
    fn queues_are_bounded_in_events_and_bytes() {
        let t = Instant::now();
        let mut p = policy(1);
        p.queue_events = 3;
        p.queue_bytes = 25;
        let mut s = HostSchedule::<u64>::new(p);
        let wait = Ok(Admitted::Wait { over_share: false });
        assert_eq!(s.admit("a", 10, t, Budget::UNLIMITED), Ok(Admitted::Now));
        for i in 0..2 {
            assert_eq!(s.admit("a", 10, t, Budget::UNLIMITED), wait);
            s.enqueue("a", i, 10, i);
        }
        assert_eq!(
            s.admit("a", 10, t, Budget::UNLIMITED),
            Err(Refusal::Busy),
            "bytes"
        );
        // One event always fits an empty queue.
        assert_eq!(s.admit("b", 30, t, Budget::UNLIMITED), wait);
        s.enqueue("b", 9, 30, 9);
        for i in 3..5 {
            assert_eq!(s.admit("c", 1, t, Budget::UNLIMITED), wait);
            s.enqueue("c", i, 1, i);
        }
        assert_eq!(s.admit("c", 1, t, Budget::UNLIMITED), wait);
        s.enqueue("c", 5, 1, 5);
        assert_eq!(
            s.admit("c", 1, t, Budget::UNLIMITED),
            Err(Refusal::Busy),
            "events"
        );
        assert_eq!(s.queued(), (6, 53));
        assert_eq!(s.cancel("a", 1, t), Some(1));
        assert_eq!(s.cancel("a", 1, t), None);
        assert_eq!(s.queued(), (5, 43));
    }

    #[test]
    fn only_a_stalled_host_has_its_waiting_events_bounded() {
        let t = Instant::now();
        // One request at a time, so the host's bound is four waiting events.
        let mut s = HostSchedule::<u64>::new(SchedulePolicy {
            host_queue_events: 1,
            ..policy(1)
        });
        let offer = |s: &mut HostSchedule<u64>, w: &str, id: u64, at: Instant| {
            let r = s.admit(w, 1, at, Budget::UNLIMITED);
            if r.is_ok() {
                s.enqueue(w, id, 1, id);
            }
            r
        };
        // Never answered: four may wait, then busy.
        assert_eq!(s.admit("a", 1, t, Budget::UNLIMITED), Ok(Admitted::Now));
        for (i, w) in ["a", "b", "c", "d"].into_iter().enumerate() {
            assert!(offer(&mut s, w, i as u64, t).is_ok());
        }
        assert_eq!(offer(&mut s, "e", 10, t), Err(Refusal::Busy));
        // It answers, and keeps answering: a burst may queue more.
        s.finish("a", ok(1), t);
        assert!(s.next_ready(t).is_some());
        assert!(offer(&mut s, "e", 11, t).is_ok());
        assert!(offer(&mut s, "f", 12, t).is_ok());
        // No answer for a second: bounded again.
        let later = t + Duration::from_secs(1);
        assert_eq!(offer(&mut s, "g", 13, later), Err(Refusal::Busy));
    }

    #[test]
    fn over_its_fair_share_a_slow_webhook_is_busy_and_a_fast_one_is_not() {
        let t = Instant::now();
        let mut s = HostSchedule::<u64>::new(policy(10));
        let tight = Budget {
            over: true,
            fair_share: 2,
            overflow_wait: Duration::from_secs(1),
        };
        let latency = |ms| Finished::Answered {
            status: 200,
            latency: Duration::from_millis(ms),
        };
        // "slow" usually takes 8 s, "fast" 5 ms.
        for (w, ms) in [("slow", 8_000), ("fast", 5)] {
            assert_eq!(s.admit(w, 1, t, Budget::UNLIMITED), Ok(Admitted::Now));
            s.finish(w, latency(ms), t);
        }
        for w in ["slow", "fast"] {
            for _ in 0..2 {
                assert_eq!(s.admit(w, 1, t, tight), Ok(Admitted::Now));
            }
        }
        assert_eq!(s.admit("slow", 1, t, tight), Err(Refusal::Busy));
        assert_eq!(s.admit("fast", 1, t, tight), Ok(Admitted::Now));
        // Under the cap, the slow webhook may use its host's room.
        assert_eq!(s.admit("slow", 1, t, Budget::UNLIMITED), Ok(Admitted::Now));
    }

    #[test]
    fn the_host_limit_adapts_and_idle_webhooks_are_forgotten() {
        let t = Instant::now();
        let mut p = policy(4);
        p.host_limit = LimitPolicy::adaptive(4, 64);
        p.webhook_limit = LimitPolicy::adaptive(64, 64);
        let mut s = HostSchedule::<u64>::new(p);
        let mut id = 0;
        for _ in 0..200 {
            while let Ok(Admitted::Now) = s.admit("a", 1, t, Budget::UNLIMITED) {}
            // The last admission asked to wait.
            id += 1;
            s.enqueue("a", id, 1, id);
            let n = s.in_flight();
            for _ in 0..n {
                s.finish("a", ok(2), t);
            }
            while s.next_ready(t).is_some() {}
            let n = s.in_flight();
            for _ in 0..n {
                s.finish("a", ok(2), t);
            }
        }
        assert!(s.limit() > 20, "limit {}", s.limit());
        assert!(!s.prune(t + Duration::from_secs(1), Duration::from_secs(60)));
        assert!(s.prune(t + Duration::from_secs(61), Duration::from_secs(60)));
    }
}
