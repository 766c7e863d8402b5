//! The input consumer. A record's offset counts as done once its work is acknowledged (see
//! [`Lease`]); each partition's progress (its contiguous done prefix, and the records done
//! after it) is committed periodically (see [`Committer`]), exactly once inside the
//! transaction that wrote the records' results.
//!
//! On revocation (a member joined or left the group) the revoked partitions stop yielding
//! new work at once; work under way on them gets a grace period to finish, then their
//! progress is committed before the partitions are handed over. What is still unfinished
//! then is released, and the next owner processes it again. Whoever is assigned a partition
//! skips the records its committed progress (or, for a partition this instance held
//! before, its own durable progress) says are done.

use super::reach::{any_up, Reach};
use crate::domain::rate::GroupShare;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{error, info, warn};

use super::commit::{committed_progress, CommitError, Committer, Transactions};
use super::durable::Results;
use super::offsets::{OffsetTracker, PartitionKey};
use crate::fatal::{Fatal, FatalCause};
use crate::kafka::{client_config, KafkaSettings};
use crate::observe::metrics;

/// What a record's result write keeps until the record's offset is settled (exactly once:
/// the transaction's read barrier, which a commit waits for).
pub trait Hold: Send + Sync + std::fmt::Debug {
    /// The record completed (`true`), or was given up after its result was written.
    fn settle(self: Box<Self>, completed: bool);
}

type HoldSlot = Arc<Mutex<Option<Box<dyn Hold>>>>;

fn settle(slot: &HoldSlot, completed: bool) {
    let held = slot.lock().ok().and_then(|mut h| h.take());
    if let Some(held) = held {
        held.settle(completed);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("input consumer: {0}")]
    Kafka(#[from] KafkaError),
}

/// One input record, owned, so it can travel to a delivery task.
#[derive(Debug, Clone)]
pub struct InputRecord {
    pub key: PartitionKey,
    pub offset: i64,
    pub payload: Option<Vec<u8>>,
    /// Assignment generation the record belongs to (see [`OffsetTracker`]).
    pub generation: u64,
    tracker: Arc<Mutex<OffsetTracker>>,
    /// Shared with the record's [`Lease`].
    hold: HoldSlot,
}

impl InputRecord {
    /// A record just received, now tracked; `None` when it is a re-delivery of one already
    /// in flight (after a seek: its first copy completes it) or fetched again too early.
    pub fn received(
        tracker: &Arc<Mutex<OffsetTracker>>,
        key: PartitionKey,
        offset: i64,
        payload: Option<Vec<u8>>,
    ) -> Option<InputRecord> {
        let generation = tracker.lock().ok()?.begin(&key, offset)?;
        Some(InputRecord {
            key,
            offset,
            payload,
            generation,
            tracker: tracker.clone(),
            hold: Arc::default(),
        })
    }

    /// Whether the record is still this instance's to finish: received in this assignment
    /// of its partition (being revoked included) and neither done nor given up.
    pub fn is_held(&self) -> bool {
        self.tracker
            .lock()
            .map(|t| t.tracks(&self.key, self.generation, self.offset))
            .unwrap_or(false)
    }

    /// Keeps `hold` until the record's lease is settled.
    pub fn hold(&self, hold: Box<dyn Hold>) {
        let previous = self.hold.lock().ok().and_then(|mut h| h.replace(hold));
        if let Some(previous) = previous {
            previous.settle(true);
        }
    }

    /// Whether the record's partition is still this instance's (and not being revoked),
    /// and the record was not given back to be fetched again (see [`InputConsumer::defer`]).
    pub fn is_current(&self) -> bool {
        self.tracker
            .lock()
            .map(|t| {
                t.generation(&self.key) == Some(self.generation)
                    && t.tracks(&self.key, self.generation, self.offset)
            })
            .unwrap_or(false)
    }

    /// Starts the record's work: it now counts as under way, and a revocation waits for it
    /// (up to its grace period). Dropping the lease without
    /// completing it releases the record: its offset is never passed.
    pub fn lease(&self) -> Lease {
        if let Ok(mut tracker) = self.tracker.lock() {
            tracker.start(&self.key, self.generation, self.offset);
        }
        Lease {
            tracker: self.tracker.clone(),
            key: self.key.clone(),
            generation: self.generation,
            offset: self.offset,
            settled: false,
            hold: self.hold.clone(),
        }
    }
}

/// A record's claim on its offset: completed when its work is acknowledged, released when
/// dropped unfinished (shutdown, a failed task, a revoked partition).
pub struct Lease {
    tracker: Arc<Mutex<OffsetTracker>>,
    key: PartitionKey,
    generation: u64,
    offset: i64,
    settled: bool,
    hold: HoldSlot,
}

impl Lease {
    /// Marks the record done (then lets go of what its result write held).
    pub fn complete(mut self) {
        self.settled = true;
        if let Ok(mut tracker) = self.tracker.lock() {
            tracker.complete(&self.key, self.generation, self.offset);
        }
        settle(&self.hold, true);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.settled {
            if let Ok(mut tracker) = self.tracker.lock() {
                tracker.release(&self.key, self.generation, self.offset);
            }
            settle(&self.hold, false);
        }
    }
}

/// Keeps the offset tracker in step with the group's assignments.
pub struct InputContext {
    name: &'static str,
    tracker: Arc<Mutex<OffsetTracker>>,
    revoke_grace: Duration,
    joined: Arc<AtomicBool>,
    /// Whether the loop has paused consumption: partitions assigned meanwhile are paused
    /// too, so what is held while full stays bounded.
    paused: Arc<AtomicBool>,
    committer: Arc<Committer>,
    /// Raised when a revocation cannot commit exactly once: the open transaction holds
    /// other partitions' results too, so the process must stop and redo them.
    fatal: Fatal,
    /// At least once, on the input: the recent results, which say what completed after the
    /// committed offsets (see [`super::durable`]).
    results: Option<Arc<Results>>,
    /// Whether the cluster can be reached (from the statistics).
    reach: Arc<Reach>,
    share: Option<Arc<GroupShare>>,
    /// The subscription's topics (names, or patterns starting with `^`).
    topics: Vec<String>,
}

/// Partitions paused until their next record is due, with their generation.
type Deferred = Arc<Mutex<HashMap<PartitionKey, u64>>>;

impl ClientContext for InputContext {
    fn stats(&self, statistics: Statistics) {
        let brokers = statistics.brokers.values();
        let up = any_up(brokers.map(|b| (b.nodeid, b.state.as_str())));
        self.reach.report(self.name, up);
        let lag = &metrics().consumer_lag;
        for (topic, t) in &statistics.topics {
            for (id, p) in &t.partitions {
                if *id < 0 {
                    continue; // librdkafka's internal "unassigned" partition
                }
                let partition = id.to_string();
                let labels = [self.name, topic.as_str(), partition.as_str()];
                // Measured from the offsets stored at each commit (see `Committer`).
                if p.consumer_lag_stored >= 0 {
                    lag.with_label_values(&labels).set(p.consumer_lag_stored);
                } else {
                    let _ = lag.remove_label_values(&labels);
                }
            }
        }
    }
}

impl InputContext {
    /// Sets this instance's share of the group to the fraction of the subscription's
    /// partitions it owns. A pattern subscription cannot count them: its share stays whole.
    fn update_share(&self, consumer: &BaseConsumer<Self>) {
        let Some(share) = &self.share else {
            return;
        };
        if self.topics.iter().any(|t| t.starts_with('^')) {
            return;
        }
        let owned = consumer.assignment().map_or(0, |a| a.count());
        let mut total = 0;
        for topic in &self.topics {
            match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
                Ok(m) => {
                    total += m
                        .topics()
                        .iter()
                        .map(|t| t.partitions().len())
                        .sum::<usize>()
                }
                Err(e) => {
                    warn!(consumer = self.name, error = %e, "partition count not read; the share of rate caps stays as it was");
                    return;
                }
            }
        }
        share.set(owned, total);
        info!(
            consumer = self.name,
            owned, total, "share of the group's rate caps"
        );
    }

    fn keys(tpl: &TopicPartitionList) -> Vec<PartitionKey> {
        tpl.elements()
            .iter()
            .map(|e| PartitionKey {
                topic: e.topic().to_owned(),
                partition: e.partition(),
            })
            .collect()
    }

    /// Lets work under way on `keys` finish (up to the grace period), then commits what it
    /// completed and stops tracking the partitions.
    fn revoke(&self, consumer: &BaseConsumer<Self>, keys: &[PartitionKey]) {
        let open = |tracker: &Arc<Mutex<OffsetTracker>>| {
            tracker.lock().map(|t| t.open_in(keys)).unwrap_or(0)
        };
        if let Ok(mut tracker) = self.tracker.lock() {
            keys.iter().for_each(|k| tracker.start_revoke(k));
        }
        let started = Instant::now();
        let under_way = open(&self.tracker);
        if under_way > 0 {
            let deadline = started + self.revoke_grace;
            let wait = || {
                while open(&self.tracker) > 0 && Instant::now() < deadline {
                    // Exactly once, the records may be waiting to write their results for
                    // a commit (their transaction is full) that the loop cannot make while
                    // this callback holds it up.
                    if self.committer.held_back() {
                        if let Err(e) = self.committer.commit(consumer, CommitMode::Sync) {
                            warn!(consumer = self.name, error = %e, "commit during revocation failed; retrying");
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            };
            // The callback runs inside the consumer's poll on a runtime thread; let the
            // runtime move its other work elsewhere while this one waits.
            match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
                _ => wait(),
            }
        }
        let left = open(&self.tracker);
        // A lost assignment (the session expired) can no longer be committed: the group
        // has handed it over already.
        let lost = consumer.assignment_lost();
        let committed = self.committer.hand_over(consumer, keys, lost);
        if let Err(e) = committed {
            if self.committer.exactly_once() {
                // The open transaction holds results of the partitions handed over: it must
                // never commit now, and other partitions' work in it is lost with it.
                error!(consumer = self.name, error = %e, "no commit on revocation; stopping");
                let _ = self.committer.abort();
                self.fatal.raise(FatalCause::Revocation {
                    consumer: self.name,
                    reason: e.to_string(),
                });
            } else {
                warn!(consumer = self.name, error = %e, "commit on revocation failed; the next owner repeats some records");
            }
        }
        if let Ok(mut tracker) = self.tracker.lock() {
            for key in keys {
                let tracked = tracker.revoke(key);
                if let Some(progress) = self.committer.durable(key, tracked) {
                    tracker.retain(key.clone(), progress);
                }
                self.committer.forget(key);
            }
        }
        for key in keys {
            let partition = key.partition.to_string();
            let _ = metrics().consumer_lag.remove_label_values(&[
                self.name,
                key.topic.as_str(),
                partition.as_str(),
            ]);
        }
        info!(
            consumer = self.name,
            partitions = keys.len(),
            under_way,
            released = left,
            lost,
            waited_ms = started.elapsed().as_millis() as u64,
            "partitions revoked"
        );
    }
}

impl ConsumerContext for InputContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            metrics()
                .rebalances
                .with_label_values(&[self.name, "revoke"])
                .inc();
            self.revoke(consumer, &Self::keys(tpl));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                metrics()
                    .rebalances
                    .with_label_values(&[self.name, "assign"])
                    .inc();
                self.joined.store(true, Ordering::Relaxed);
                if self.paused.load(Ordering::Relaxed) {
                    if let Err(e) = consumer.pause(tpl) {
                        warn!(consumer = self.name, error = %e, "pausing newly assigned partitions failed");
                    }
                }
                let keys = Self::keys(tpl);
                if let Ok(mut tracker) = self.tracker.lock() {
                    for key in &keys {
                        tracker.assign(key.clone());
                    }
                }
                // What the committed offsets' metadata says is done already is skipped.
                match consumer
                    .committed_offsets(TopicPartitionList::clone(tpl), Duration::from_secs(10))
                {
                    Ok(committed) => {
                        let progress = committed_progress(&committed);
                        if let Ok(mut tracker) = self.tracker.lock() {
                            for (key, p) in &progress {
                                tracker.resume(key, p);
                            }
                        }
                        if let Some(results) = &self.results {
                            let wanted: HashMap<PartitionKey, i64> =
                                progress.iter().map(|(k, p)| (k.clone(), p.next)).collect();
                            let done = results.done(&wanted);
                            if let Ok(mut tracker) = self.tracker.lock() {
                                for (key, p) in &done {
                                    tracker.resume(key, p);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        warn!(consumer = self.name, error = %e, "committed offsets not read; records done after them may be processed again")
                    }
                }
                info!(
                    consumer = self.name,
                    partitions = tpl.count(),
                    "partitions assigned"
                );
                self.update_share(consumer);
            }
            Rebalance::Error(e) => warn!(consumer = self.name, error = %e, "rebalance error"),
            Rebalance::Revoke(_) => self.update_share(consumer),
        }
    }
}

pub struct InputConsumer {
    consumer: StreamConsumer<InputContext>,
    tracker: Arc<Mutex<OffsetTracker>>,
    committer: Arc<Committer>,
    joined: Arc<AtomicBool>,
    reach: Arc<Reach>,
    /// Shared with the context: see [`InputContext`].
    paused: Arc<AtomicBool>,
    /// Partitions paused until their next record is due, with their generation.
    deferred: Deferred,
}

/// How a consumer joins its group.
pub struct Subscription<'a> {
    /// `input` or `retry`, for logs and metrics.
    pub name: &'static str,
    pub group: &'a str,
    /// Topic names; a name starting with `^` is a pattern.
    pub topics: &'a [String],
    pub max_record_bytes: usize,
    /// How long a revocation waits for work under way on the revoked partitions.
    pub revoke_grace: Duration,
    /// Exactly once: the transaction the loop's results are written in.
    pub transactions: Option<Arc<dyn Transactions>>,
    pub fatal: Fatal,
    /// At least once, on the input: where to learn what completed after the committed
    /// offsets.
    pub results: Option<Arc<Results>>,
    /// The input's loop: the share of the group to keep up to date at every rebalance (the
    /// fraction of the input partitions this instance owns).
    pub share: Option<Arc<GroupShare>>,
}

impl InputConsumer {
    /// Joins the group and subscribes.
    pub fn subscribe(kafka: &KafkaSettings, s: Subscription<'_>) -> Result<Self, InputError> {
        let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
        let committer = Arc::new(Committer::new(tracker.clone(), s.transactions.clone()));
        let deferred = Deferred::default();
        let joined = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let reach = Arc::new(Reach::default());
        // Fetch sizes allow the largest event we accept plus headroom, so an oversized event
        // is still read (and recorded as invalid) rather than stalling the partition.
        let fetch_max = s
            .max_record_bytes
            .saturating_mul(2)
            .max(1 << 20)
            .to_string();
        let mut config = client_config(kafka);
        // A member that dies without leaving (kill -9, a lost node) holds its partitions
        // until its session times out; librdkafka's 45 s default is a long stall for
        // feedback meant to be real-time. A new group reads its topics from the start, so
        // nothing produced before the first deployment is missed. `kafka.properties` may
        // set other values.
        for (key, value) in [
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "2000"),
            ("auto.offset.reset", "earliest"),
        ] {
            if !kafka.properties.contains_key(key) {
                config.set(key, value);
            }
        }
        let consumer: StreamConsumer<InputContext> = config
            .set("group.id", s.group)
            // Progress is committed by the pipeline (see `Committer`), with its metadata.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // Parked and redelivery records are written in transactions: an aborted one's
            // must never be read.
            .set("isolation.level", "read_committed")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("max.partition.fetch.bytes", &fetch_max)
            // Bound what librdkafka prefetches, so memory does not grow with the backlog. The
            // bound is per partition (and decompressed batches come on top): 4 MiB keeps a
            // 1M-event backlog under ~200 MB and still fetches faster than events are
            // delivered (BENCHMARKS.md).
            .set("queued.max.messages.kbytes", "4096")
            .set("queued.min.messages", "10000")
            // When that queue was full, librdkafka waits this long before fetching again
            // (1 s by default): after a burst the queue drains in far less, and the
            // processor would starve for the rest of the second.
            .set("fetch.queue.backoff.ms", "20")
            // Per-partition lag for the metrics.
            .set("statistics.interval.ms", "5000")
            .create_with_context(InputContext {
                name: s.name,
                tracker: tracker.clone(),
                revoke_grace: s.revoke_grace,
                joined: joined.clone(),
                paused: paused.clone(),
                committer: committer.clone(),
                fatal: s.fatal.clone(),
                results: s.results.clone(),
                reach: reach.clone(),
                share: s.share.clone(),
                topics: s.topics.to_vec(),
            })?;
        let topics: Vec<&str> = s.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(InputConsumer {
            consumer,
            tracker,
            committer,
            joined,
            reach,
            paused,
            deferred,
        })
    }

    /// The next record. Cancel-safe: dropping the future loses nothing.
    pub async fn next(&self) -> Result<Option<InputRecord>, InputError> {
        let message = self.consumer.recv().await?;
        let key = PartitionKey {
            topic: message.topic().to_owned(),
            partition: message.partition(),
        };
        metrics()
            .events_consumed
            .with_label_values(&[key.topic.as_str()])
            .inc();
        let payload = message.payload().map(<[u8]>::to_vec);
        Ok(InputRecord::received(
            &self.tracker,
            key,
            message.offset(),
            payload,
        ))
    }

    /// Whether the consumer has been given its share of the group (possibly nothing).
    pub fn joined(&self) -> bool {
        self.joined.load(Ordering::Relaxed)
    }

    /// Whether the consumer reaches the cluster (as of its last statistics, every 5 s).
    pub fn reaches_the_cluster(&self) -> bool {
        self.reach.is_up()
    }

    /// Stops fetching from every assigned partition (librdkafka drops what it prefetched and
    /// resumes after the last record handed out). Polling goes on, so the group membership
    /// and rebalances are served while paused.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::Relaxed);
        if let Ok(assignment) = self.consumer.assignment() {
            if let Err(e) = self.consumer.pause(&assignment) {
                warn!(error = %e, "pause failed");
            }
        }
    }

    /// Resumes every assigned partition except those deferred until a record is due.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::Relaxed);
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let deferred = self.deferred.lock().map(|d| d.clone()).unwrap_or_default();
        let current = |key: &PartitionKey, generation: u64| {
            self.tracker
                .lock()
                .map(|t| t.generation(key) == Some(generation))
                .unwrap_or(false)
        };
        let mut tpl = TopicPartitionList::new();
        for e in assignment.elements() {
            let key = PartitionKey {
                topic: e.topic().to_owned(),
                partition: e.partition(),
            };
            if !deferred.get(&key).is_some_and(|g| current(&key, *g)) {
                tpl.add_partition(e.topic(), e.partition());
            }
        }
        if let Err(e) = self.consumer.resume(&tpl) {
            warn!(error = %e, "resume failed");
        }
    }

    /// Gives `record` back unstarted and stops fetching its partition, rewound to it, until
    /// [`InputConsumer::resume_deferred`]: a retry tier's head record that is not due yet is
    /// fetched again when it is, instead of being held (with its payload and a task) while
    /// it waits. Records of the partition received after it are given back too. Returns
    /// `false`, changing nothing, when that cannot be done (a later record already started,
    /// the partition moved); the caller then handles the record as usual.
    pub fn defer(&self, record: &InputRecord) -> bool {
        let (key, generation, offset) = (&record.key, record.generation, record.offset);
        let can = self
            .tracker
            .lock()
            .map(|t| t.can_rewind(key, generation, offset))
            .unwrap_or(false);
        if !can {
            return false;
        }
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(&key.topic, key.partition, Offset::Offset(offset))
            .is_err()
        {
            return false;
        }
        if let Err(e) = self.consumer.pause(&tpl) {
            warn!(topic = key.topic, partition = key.partition, error = %e, "pause failed");
            return false;
        }
        // Asynchronous (no wait): librdkafka drops what it prefetched for the partition and
        // fetches from `offset` once resumed.
        if let Err(e) = self.consumer.seek_partitions(tpl, Duration::ZERO) {
            warn!(topic = key.topic, partition = key.partition, error = %e, "seek failed");
            let _ = self.consumer.resume(&self.one(key));
            return false;
        }
        let rewound = self
            .tracker
            .lock()
            .map(|mut t| t.rewind(key, generation, offset))
            .unwrap_or(false);
        if let Ok(mut d) = self.deferred.lock() {
            d.insert(key.clone(), generation);
        }
        rewound
    }

    /// Fetches a deferred partition again, if it is still the same assignment.
    pub fn resume_deferred(&self, key: &PartitionKey, generation: u64) {
        let was = self.deferred.lock().ok().and_then(|mut d| d.remove(key));
        let current = self
            .tracker
            .lock()
            .map(|mut t| {
                t.refetch(key, generation);
                t.generation(key) == Some(generation)
            })
            .unwrap_or(false);
        if was == Some(generation) && current {
            if let Err(e) = self.consumer.resume(&self.one(key)) {
                warn!(topic = key.topic, partition = key.partition, error = %e, "resume failed");
            }
        }
    }

    fn one(&self, key: &PartitionKey) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&key.topic, key.partition);
        tpl
    }

    /// Commits the progress made since the last commit, and waits for the broker's answer
    /// (at shutdown). Blocking.
    pub fn commit(&self) -> Result<(), CommitError> {
        self.committer.commit(&self.consumer, CommitMode::Sync)
    }

    /// Resolves when progress should be committed before the commit interval is up (see
    /// [`Committer::wanted`]).
    pub async fn commit_wanted(&self) {
        self.committer.wanted().await
    }

    /// Exactly once: throws away what was written since the last commit.
    pub fn abort(&self) -> Result<(), CommitError> {
        self.committer.abort()
    }

    /// Commits the progress made since the last commit (periodically): at least once by
    /// the consumer, waiting for the broker's answer (so that a failed commit is tried again
    /// at the next interval), exactly once by committing the transaction.
    ///
    /// A transaction that cannot commit stops the process (see [`Transactions::commit`]).
    pub fn commit_now(&self) -> Result<(), CommitError> {
        let commit = || self.committer.commit(&self.consumer, CommitMode::Sync);
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(commit),
            _ => commit(),
        }
    }

    pub fn unsubscribe(&self) {
        self.consumer.unsubscribe();
    }
}

/// What a consumer loop needs of its source of records: the Kafka consumer in production,
/// an in-memory fake in the loop's unit tests.
pub trait RecordSource: Sync {
    /// The next record; `Ok(None)` when one was received but is not to be handled again.
    fn next(
        &self,
    ) -> impl std::future::Future<Output = Result<Option<InputRecord>, InputError>> + Send;
    /// Commits the progress made since the last commit (see [`InputConsumer::commit_now`]).
    fn commit(&self) -> Result<(), CommitError>;
    /// Resolves when a commit should not wait for the interval (see
    /// [`InputConsumer::commit_wanted`]).
    fn commit_wanted(&self) -> impl std::future::Future<Output = ()> + Send;
    /// Stops / resumes fetching every partition (the loop is full for long).
    fn pause(&self);
    fn resume(&self);
    /// See [`InputConsumer::defer`].
    fn defer(&self, record: &InputRecord) -> bool;
    /// See [`InputConsumer::resume_deferred`].
    fn resume_deferred(&self, key: &PartitionKey, generation: u64);
}

impl RecordSource for InputConsumer {
    async fn next(&self) -> Result<Option<InputRecord>, InputError> {
        InputConsumer::next(self).await
    }

    fn commit(&self) -> Result<(), CommitError> {
        InputConsumer::commit_now(self)
    }

    async fn commit_wanted(&self) {
        InputConsumer::commit_wanted(self).await
    }

    fn pause(&self) {
        InputConsumer::pause(self)
    }

    fn resume(&self) {
        InputConsumer::resume(self)
    }

    fn defer(&self, record: &InputRecord) -> bool {
        InputConsumer::defer(self, record)
    }

    fn resume_deferred(&self, key: &PartitionKey, generation: u64) {
        InputConsumer::resume_deferred(self, key, generation)
    }
}
