//! One consumer loop: records become tasks, a bounded number at once, and each partition's
//! progress (its completed records) is committed at a steady interval. Retry-tier records that are not due yet are
//! deferred (their partition paused and rewound) once a few of them wait.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::domain::time::unix_ms;
use crate::fatal::{Fatal, FatalCause};
use crate::source::commit::CommitError;
use crate::source::{InputRecord, Lease, PartitionKey, RecordSource};

/// One consumer loop: each record becomes a task, at most `limit` at once.
///
/// At the limit, the loop stops taking records: librdkafka keeps its bounded prefetch, and
/// a slot frees within about one request. If the loop stays full for longer (parked records
/// waiting for their due time), the assignment is paused and the consumer polled on, so the
/// member stays in its group; it resumes once half the slots are free. Pausing makes
/// librdkafka drop and later re-fetch its prefetch, which is why it is not the first resort.
/// Returns after `stopping` turns true and tasks have drained (up to the drain deadline).
pub(super) async fn consume<S, C, F, Fut>(
    l: Loop<'_, S>,
    context: &Arc<C>,
    mut stopping: watch::Receiver<bool>,
    handler: F,
) where
    S: RecordSource,
    F: Fn(Arc<C>, InputRecord) -> Fut,
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
        fatal,
        commit_every,
    } = l;
    let mut not_due = NotDue::default();
    let permits = Arc::new(Semaphore::new(limit));
    let mut commit_tick = tokio::time::interval(commit_every);
    commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = JoinSet::new();
    // Records received while full (only while paused: newly assigned partitions).
    let mut held: VecDeque<(InputRecord, Option<Waiting>)> = VecDeque::new();
    let mut paused = false;
    let mut full_since: Option<tokio::time::Instant> = None;
    let spawn = |record: InputRecord, permit, waiting: Option<Waiting>, tasks: &mut JoinSet<()>| {
        let lease = record.lease();
        start_task(
            tasks,
            lease,
            handler(context.clone(), record),
            permit,
            waiting,
        );
    };
    let commit = || commit_progress(consumer, name, fatal);
    let count_in_flight = |permits: &Semaphore| {
        if let Some(gauge) = in_flight_gauge {
            gauge.set((limit - permits.available_permits()) as i64);
        }
    };

    while !*stopping.borrow() {
        count_in_flight(&permits);
        start_held(&mut held, &permits, |r, p, w| spawn(r, p, w, &mut tasks));
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
        let next_due = not_due.next_due();
        tokio::select! {
            biased;
            _ = stopping.changed() => {}
            _ = commit_tick.tick() => commit(),
            // The open transaction is full: commit it now, rather than hold its writes back
            // until the interval is up.
            () = consumer.commit_wanted() => {
                commit();
                commit_tick.reset();
            }
            () = tokio::time::sleep_until(next_due.unwrap_or(since)), if next_due.is_some() => {
                not_due.resume_due(consumer);
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    // Only a panic ends a task this way. Its offset is never stored, so the
                    // partition's commit point could not pass it again: stop the process
                    // instead, and the record is processed again after the restart.
                    error!(consumer = name, error = %e, "record task failed; stopping");
                    fatal.raise(FatalCause::TaskFailed {
                        consumer: name,
                        reason: e.to_string(),
                    });
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
                        // Half the budget stays free for records that are due.
                        let scarce = permits.available_permits() <= limit / 2;
                        match not_due.admit(consumer, &record, wait, scarce) {
                            Some(waits) => w = Some(waits),
                            None => continue,
                        }
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
    drain_tasks(name, drain, tasks).await;
    count_in_flight(&permits);
}

/// Runs one record's work as a task holding its permit (and its place among the records
/// waiting, if it waits); the record completes if the work says so.
fn start_task(
    tasks: &mut JoinSet<()>,
    lease: Lease,
    work: impl Future<Output = bool> + Send + 'static,
    permit: OwnedSemaphorePermit,
    waiting: Option<Waiting>,
) {
    tasks.spawn(async move {
        let _waiting = waiting;
        // An unfinished record (shutdown, panic) drops its lease and is released.
        if work.await {
            lease.complete();
        }
        drop(permit);
    });
}

/// Starts held records while there is room; drops those whose partition moved away.
fn start_held(
    held: &mut VecDeque<(InputRecord, Option<Waiting>)>,
    permits: &Arc<Semaphore>,
    mut start: impl FnMut(InputRecord, OwnedSemaphorePermit, Option<Waiting>),
) {
    while let Some((record, w)) = held.pop_front() {
        if !record.is_current() {
            continue;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            held.push_front((record, w));
            break;
        };
        start(record, permit, w);
    }
}

/// Commits a loop's progress. A failure the next commit covers is logged; exactly once, a
/// failed transaction voids results whose records count as done here, so it is fatal.
fn commit_progress<S: RecordSource>(consumer: &S, name: &'static str, fatal: &Fatal) {
    match consumer.commit() {
        Ok(()) => {}
        Err(e @ (CommitError::Kafka(_) | CommitError::Busy)) => {
            warn!(consumer = name, error = %e, "commit failed; the next commit covers it")
        }
        Err(e) => {
            error!(consumer = name, error = %e, "transaction failed; stopping");
            fatal.raise(FatalCause::Commit {
                consumer: name,
                reason: e.to_string(),
            });
        }
    }
}

/// Waits up to `deadline` for the tasks under way; past it, they are aborted and their
/// records stay uncommitted.
async fn drain_tasks(name: &'static str, deadline: Duration, mut tasks: JoinSet<()>) {
    let drained = tokio::time::timeout(deadline, async {
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                error!(consumer = name, error = %e, "record task failed");
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
}

/// Records of a loop whose records wait for their due time (the retry tiers): a few wait as
/// tasks in each partition; past them, a record goes back to its partition, paused until
/// then, so waiting costs no task, permit or memory, and other partitions keep their share.
#[derive(Default)]
struct NotDue {
    /// Partitions paused until their head record is due: (when, partition, generation).
    deferred: Vec<(tokio::time::Instant, PartitionKey, u64)>,
    /// Records waiting for their due time as tasks, per partition (see `LOOKAHEAD`).
    waiting: HashMap<PartitionKey, Arc<AtomicUsize>>,
}

impl NotDue {
    /// When the first deferred partition's record is due.
    fn next_due(&self) -> Option<tokio::time::Instant> {
        self.deferred.iter().map(|d| d.0).min()
    }

    /// Resumes the deferred partitions whose record is due.
    fn resume_due<S: RecordSource>(&mut self, consumer: &S) {
        let now = tokio::time::Instant::now();
        self.deferred.retain(|(at, key, generation)| {
            let due = *at <= now;
            if due {
                consumer.resume_deferred(key, *generation);
            }
            !due
        });
    }

    /// A record due in `wait`: the count it holds while it waits as a task, or `None` when
    /// it went back to its partition (`scarce`: the loop's budget is half used).
    fn admit<S: RecordSource>(
        &mut self,
        consumer: &S,
        record: &InputRecord,
        wait: Duration,
        scarce: bool,
    ) -> Option<Waiting> {
        let count = self.waiting.entry(record.key.clone()).or_default().clone();
        if (scarce || count.load(Ordering::Relaxed) >= LOOKAHEAD) && consumer.defer(record) {
            let at = tokio::time::Instant::now() + wait;
            self.deferred
                .push((at, record.key.clone(), record.generation));
            return None;
        }
        Some(Waiting::new(count))
    }
}

/// One consumer loop's parts.
pub(super) struct Loop<'a, S> {
    /// `input`, `retry` or `replay`, for logs.
    pub(super) name: &'static str,
    pub(super) consumer: &'a S,
    /// Records processed at once.
    pub(super) limit: usize,
    /// How long shutdown waits for records under way.
    pub(super) drain: Duration,
    /// Set to the number of records under way (the retry loop's pending retries).
    pub(super) in_flight_gauge: Option<&'a prometheus::IntGauge>,
    /// When a record is due (Unix ms), for loops whose records wait (the retry tiers).
    pub(super) due: Option<fn(&InputRecord) -> Option<u64>>,
    /// Raised when a record task panics: its offset would stay open for good, so the
    /// process stops and redoes the work after a restart.
    pub(super) fatal: &'a Fatal,
    /// How often progress is committed.
    pub(super) commit_every: Duration,
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
    (wait > DEFER_AFTER).then_some(crate::domain::time::bounded(wait))
}

#[cfg(test)]
mod tests {
    //! The loop against an in-memory source, on a paused clock.

    use std::sync::Mutex;

    use tokio::sync::Notify;

    use super::*;
    use crate::source::{InputError, OffsetTracker};

    /// Records of one partition, handed out in order; a deferred record comes again once
    /// its partition is resumed.
    #[derive(Default)]
    struct FakeSource {
        tracker: Arc<Mutex<OffsetTracker>>,
        queue: Mutex<VecDeque<(i64, Vec<u8>)>>,
        arrived: Notify,
        stored: Mutex<Vec<i64>>,
        deferred: Mutex<Vec<(i64, Vec<u8>)>>,
        resumed: Mutex<Vec<u64>>,
        commit_wanted: Notify,
    }

    fn key() -> PartitionKey {
        PartitionKey {
            topic: "t".into(),
            partition: 0,
        }
    }

    impl FakeSource {
        fn push(&self, offset: i64, payload: &str) {
            self.queue
                .lock()
                .unwrap()
                .push_back((offset, payload.as_bytes().to_vec()));
            self.arrived.notify_one();
        }
    }

    impl RecordSource for FakeSource {
        async fn next(&self) -> Result<Option<InputRecord>, InputError> {
            loop {
                let next = self.queue.lock().unwrap().pop_front();
                if let Some((offset, payload)) = next {
                    return Ok(InputRecord::received(
                        &self.tracker,
                        key(),
                        offset,
                        Some(payload),
                    ));
                }
                self.arrived.notified().await;
            }
        }

        /// Records each new commit point.
        fn commit(&self) -> Result<(), CommitError> {
            let next = self
                .tracker
                .lock()
                .unwrap()
                .progress_of(&key())
                .map(|p| p.next);
            let mut stored = self.stored.lock().unwrap();
            if let Some(next) = next.filter(|n| stored.last() != Some(n)) {
                stored.push(next);
            }
            Ok(())
        }

        async fn commit_wanted(&self) {
            self.commit_wanted.notified().await
        }

        fn pause(&self) {}

        fn resume(&self) {}

        fn defer(&self, record: &InputRecord) -> bool {
            let mut tracker = self.tracker.lock().unwrap();
            if !tracker.rewind(&record.key, record.generation, record.offset) {
                return false;
            }
            // Later records go back too: the partition is fetched again from here.
            let mut queue = self.queue.lock().unwrap();
            let mut again: Vec<_> = queue.drain(..).collect();
            again.insert(
                0,
                (record.offset, record.payload.clone().unwrap_or_default()),
            );
            *self.deferred.lock().unwrap() = again;
            true
        }

        fn resume_deferred(&self, key: &PartitionKey, generation: u64) {
            self.tracker.lock().unwrap().refetch(key, generation);
            self.resumed.lock().unwrap().push(generation);
            let again = std::mem::take(&mut *self.deferred.lock().unwrap());
            let mut queue = self.queue.lock().unwrap();
            for r in again.into_iter().rev() {
                queue.push_front(r);
            }
            self.arrived.notify_one();
        }
    }

    fn a_loop(source: &FakeSource, limit: usize) -> Loop<'_, FakeSource> {
        Loop {
            name: "test",
            consumer: source,
            limit,
            drain: Duration::from_secs(1),
            in_flight_gauge: None,
            due: None,
            fatal: Box::leak(Box::default()),
            commit_every: Duration::from_millis(20),
        }
    }

    /// Runs `l` with `handler` until `stop` is sent.
    fn run<F, Fut>(
        l: Loop<'static, FakeSource>,
        handler: F,
    ) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>)
    where
        F: Fn(Arc<()>, InputRecord) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        let (stop, stopping) = watch::channel(false);
        let task = tokio::spawn(async move { consume(l, &Arc::new(()), stopping, handler).await });
        (stop, task)
    }

    /// A source holding a record of each payload, at offsets 0, 1, …
    fn holding(payloads: &[&str]) -> &'static FakeSource {
        let source = leak(FakeSource::default());
        for (offset, payload) in (0..).zip(payloads) {
            source.push(offset, payload);
        }
        source
    }

    fn leak(source: FakeSource) -> &'static FakeSource {
        Box::leak(Box::new(source))
    }

    #[tokio::test(start_paused = true)]
    async fn the_commit_point_follows_the_completed_prefix() {
        let source = holding(&["300", "100", "200"]);
        let (stop, task) = run(a_loop(source, 8), |_, r| async move {
            let ms: u64 = String::from_utf8(r.payload.unwrap())
                .unwrap()
                .parse()
                .unwrap();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            true
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            *source.stored.lock().unwrap(),
            [0],
            "1 is done, 0 is not: the commit point stays at 0"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            *source.stored.lock().unwrap(),
            [0, 3],
            "0, 1 and 2 are done"
        );
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_transaction_is_committed_before_the_interval_is_up() {
        let source = leak(FakeSource::default());
        let mut l = a_loop(source, 8);
        l.commit_every = Duration::from_secs(3600);
        let (stop, task) = run(l, |_, _| async { true });
        // Past the interval's first tick, which is immediate.
        tokio::time::sleep(Duration::from_millis(10)).await;
        source.push(0, "");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            source.stored.lock().unwrap().is_empty(),
            "record 0 is done, and the next commit is an hour away"
        );
        source.commit_wanted.notify_one();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(*source.stored.lock().unwrap(), [1], "committed now");
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_task_that_panics_stops_the_process_instead_of_freezing_its_partition() {
        let source = holding(&["", "panic", ""]);
        let l = a_loop(source, 8);
        let fatal = l.fatal;
        let (stop, task) = run(l, |_, r| async move {
            assert!(r.payload.as_deref() != Some(b"panic".as_slice()), "a bug");
            true
        });
        let why = tokio::time::timeout(Duration::from_secs(5), fatal.raised())
            .await
            .expect("raised");
        assert!(why.to_string().contains("record task failed"), "{why}");
        // The commit point never passed the record that did not complete.
        assert!(source.stored.lock().unwrap().iter().all(|&next| next <= 1));
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn at_its_limit_the_loop_takes_no_more_records() {
        let source = holding(&[""; 5]);
        let started = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let (stop, task) = run(a_loop(source, 2), {
            let (started, release) = (started.clone(), release.clone());
            move |_, _| {
                let (started, release) = (started.clone(), release.clone());
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    release.notified().await;
                    true
                }
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(started.load(Ordering::SeqCst), 2);
        assert_eq!(
            source.queue.lock().unwrap().len(),
            3,
            "a full loop reads nothing more"
        );
        release.notify_one();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(started.load(Ordering::SeqCst), 3);
        stop.send(true).unwrap();
        release.notify_waiters();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn records_not_due_wait_as_tasks_then_are_deferred_until_due() {
        // Due times are wall-clock Unix ms; the test's clock is tokio's, paused: a record's
        // payload says when it is due in seconds of the test's clock.
        static START: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
        START.get_or_init(tokio::time::Instant::now);
        // Due in 10 s each; a budget of 4 keeps half for records that are due.
        let source = holding(&["10"; 4]);
        let handled = Arc::new(Mutex::new(Vec::new()));
        let mut l = a_loop(source, 4);
        l.due = Some(|r: &InputRecord| {
            let secs: u64 = std::str::from_utf8(r.payload.as_deref()?)
                .ok()?
                .parse()
                .ok()?;
            let elapsed = START.get()?.elapsed().as_millis() as u64;
            Some(unix_ms(SystemTime::now()) + (secs * 1000).saturating_sub(elapsed))
        });
        let (stop, task) = run(l, {
            let handled = handled.clone();
            move |_, r| {
                let handled = handled.clone();
                async move {
                    // A parked record's handler waits for its due time itself.
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    handled.lock().unwrap().push(r.offset);
                    true
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Two wait as tasks (half the budget stays for records that are due); the third is
        // given back, and the fourth with it.
        assert_eq!(source.deferred.lock().unwrap().len(), 2);
        assert!(source.resumed.lock().unwrap().is_empty());
        // When it is due, its partition is fetched again from it.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(source.resumed.lock().unwrap().len(), 1);
        tokio::time::sleep(Duration::from_secs(11)).await;
        let mut done = handled.lock().unwrap().clone();
        done.sort_unstable();
        assert_eq!(done, [0, 1, 2, 3], "each handled once");
        assert_eq!(source.stored.lock().unwrap().last(), Some(&4));
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}
