//! One consumer loop: records become tasks, a bounded number at once, and each partition's
//! commit point follows its completed records. Retry-tier records that are not due yet are
//! deferred (their partition paused and rewound) once a few of them wait.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::Context;
use crate::delivery::unix_ms;
use crate::source::{InputConsumer, InputRecord, PartitionKey};

/// One consumer loop: each record becomes a task, at most `limit` at once.
///
/// At the limit, the loop stops taking records: librdkafka keeps its bounded prefetch, and
/// a slot frees within about one request. If the loop stays full for longer (parked records
/// waiting for their due time), the assignment is paused and the consumer polled on, so the
/// member stays in its group; it resumes once half the slots are free. Pausing makes
/// librdkafka drop and later re-fetch its prefetch, which is why it is not the first resort.
/// Returns after `stopping` turns true and tasks have drained (up to the drain deadline).
pub(super) async fn consume<F, Fut>(
    l: Loop<'_>,
    context: &Arc<Context>,
    mut stopping: watch::Receiver<bool>,
    handler: F,
) where
    F: Fn(Arc<Context>, InputRecord) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    const PAUSE_AFTER: Duration = Duration::from_secs(30);
    let Loop {
        name,
        consumer,
        limit,
        drain,
        in_flight_gauge,
        due,
    } = l;
    // Partitions paused until their head record is due: (when, partition, generation).
    let mut deferred: Vec<(tokio::time::Instant, PartitionKey, u64)> = Vec::new();
    let permits = Arc::new(Semaphore::new(limit));
    // Commit points reached by completed records, to store for the next commit.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(PartitionKey, u64, i64)>();
    let mut tasks = JoinSet::new();
    // Records received while full (only while paused: newly assigned partitions).
    let mut held: VecDeque<(InputRecord, Option<Waiting>)> = VecDeque::new();
    // Records waiting for their due time, per partition (see `LOOKAHEAD`).
    let mut waiting: HashMap<PartitionKey, Arc<AtomicUsize>> = HashMap::new();
    let mut paused = false;
    let mut full_since: Option<tokio::time::Instant> = None;
    let spawn = |record: InputRecord, permit, waiting: Option<Waiting>, tasks: &mut JoinSet<()>| {
        let done = done_tx.clone();
        let lease = record.lease();
        let work = handler(context.clone(), record);
        tasks.spawn(async move {
            let _waiting = waiting;
            // An unfinished record (shutdown, panic) drops its lease and is released.
            if work.await {
                if let Some(point) = lease.complete() {
                    let _ = done.send(point);
                }
            }
            drop(permit);
        });
    };
    let count_in_flight = |permits: &Semaphore| {
        if let Some(gauge) = in_flight_gauge {
            gauge.set((limit - permits.available_permits()) as i64);
        }
    };

    while !*stopping.borrow() {
        // Start held records while there is room; drop those whose partition moved away.
        count_in_flight(&permits);
        while let Some((record, w)) = held.pop_front() {
            if !record.is_current() {
                continue;
            }
            match permits.clone().try_acquire_owned() {
                Ok(permit) => spawn(record, permit, w, &mut tasks),
                Err(_) => {
                    held.push_front((record, w));
                    break;
                }
            }
        }
        let full = permits.available_permits() == 0 || !held.is_empty();
        if paused && held.is_empty() && permits.available_permits() >= limit.div_ceil(2) {
            consumer.resume();
            paused = false;
        }
        let since = if full {
            *full_since.get_or_insert_with(tokio::time::Instant::now)
        } else {
            full_since = None;
            tokio::time::Instant::now()
        };
        let next_due = deferred.iter().map(|d| d.0).min();
        tokio::select! {
            biased;
            _ = stopping.changed() => {}
            Some((key, generation, next)) = done_rx.recv() => consumer.store(&key, generation, next),
            () = tokio::time::sleep_until(next_due.unwrap_or(since)), if next_due.is_some() => {
                let now = tokio::time::Instant::now();
                deferred.retain(|(at, key, generation)| {
                    let due = *at <= now;
                    if due {
                        consumer.resume_deferred(key, *generation);
                    }
                    !due
                });
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    // Only a panic ends a task this way: its offset is never stored, so the
                    // record is processed again after a restart.
                    error!(consumer = name, error = %e, "record task failed");
                }
            }
            _ = permits.acquire(), if full => {}
            () = tokio::time::sleep_until(since + PAUSE_AFTER), if full && !paused => {
                info!(consumer = name, "full for {PAUSE_AFTER:?}: pausing consumption");
                consumer.pause();
                paused = true;
            }
            next = consumer.next(), if !full || paused => match next {
                Ok(Some(record)) => {
                    let mut w = None;
                    if let Some(wait) = due.and_then(|due| not_due_for(due(&record))) {
                        // Past a few records waiting in its partition, a record not due yet
                        // goes back to the partition, paused until then: waiting costs no
                        // task, permit or memory, and other partitions keep their share.
                        let count = waiting.entry(record.key.clone()).or_default().clone();
                        // Half the budget stays free for records that are due.
                        let scarce = permits.available_permits() < limit.div_ceil(2);
                        if (scarce || count.load(Ordering::Relaxed) >= LOOKAHEAD)
                            && consumer.defer(&record)
                        {
                            let at = tokio::time::Instant::now() + wait;
                            deferred.push((at, record.key.clone(), record.generation));
                            continue;
                        }
                        w = Some(Waiting::new(count));
                    }
                    match permits.clone().try_acquire_owned() {
                        Ok(permit) if held.is_empty() => spawn(record, permit, w, &mut tasks),
                        _ => held.push_back((record, w)),
                    }
                }
                Ok(None) => {}
                Err(e) => warn!(consumer = name, error = %e, "consumer error"),
            },
        }
    }

    // Records not started are left for the next run; those under way may finish.
    held.clear();
    let drained = tokio::time::timeout(drain, async {
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                error!(consumer = name, error = %e, "record task failed");
            }
            while let Ok((key, generation, next)) = done_rx.try_recv() {
                consumer.store(&key, generation, next);
            }
        }
    })
    .await;
    if drained.is_err() {
        warn!(
            consumer = name,
            left = tasks.len(),
            "drain deadline passed; unfinished records stay uncommitted"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    while let Ok((key, generation, next)) = done_rx.try_recv() {
        consumer.store(&key, generation, next);
    }
    count_in_flight(&permits);
}

/// One consumer loop's parts.
pub(super) struct Loop<'a> {
    /// `input`, `retry` or `replay`, for logs.
    pub(super) name: &'static str,
    pub(super) consumer: &'a InputConsumer,
    /// Records processed at once.
    pub(super) limit: usize,
    /// How long shutdown waits for records under way.
    pub(super) drain: Duration,
    /// Set to the number of records under way (the retry loop's pending retries).
    pub(super) in_flight_gauge: Option<&'a prometheus::IntGauge>,
    /// When a record is due (Unix ms), for loops whose records wait (the retry tiers).
    pub(super) due: Option<fn(&InputRecord) -> Option<u64>>,
}

/// Records due later than this count as waiting (see `LOOKAHEAD`).
const DEFER_AFTER: Duration = Duration::from_millis(50);

/// Records of one retry-tier partition that may wait for their due time as tasks (and at
/// most half the loop's budget in all). Past it, the partition is paused and rewound to the
/// next record until that one is due. A few are read ahead because records in a tier fall
/// due only roughly in order (jitter, and a tier spans delays up to the next tier's): a
/// record due soon is not held behind the head.
const LOOKAHEAD: usize = 64;

/// Counts a record among its partition's waiting records while it lives.
struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long until a record due at `due_ms` is due, when that is long enough to defer it.
fn not_due_for(due_ms: Option<u64>) -> Option<Duration> {
    let wait = Duration::from_millis(due_ms?.checked_sub(unix_ms(SystemTime::now()))?);
    (wait > DEFER_AFTER).then_some(wait)
}
