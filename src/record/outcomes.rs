//! Produces outcome and parked records and resolves only once the broker has acknowledged
//! them, which is what allows the offset of the record behind them to be committed.
//! Exactly once, the records are written in a transaction, which commits them together with
//! the offsets of the records they are the results of (see [`Transactions`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tracing::{debug, error, warn};

use super::gate::Gate;
use super::watchdog::Watchdog;

use super::RecordSink;
use crate::domain::outcome::Outcome;
use crate::domain::parked::TIERS;
use crate::domain::parked::{tier_for, Parked};
use crate::fatal::Fatal;
use crate::kafka::KafkaSettings;
use crate::observe::metrics;
use crate::source::commit::{CommitError, Offsets, Transactions};
use crate::source::input::Hold;
use crate::source::InputRecord;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("producer: {0}")]
    Kafka(#[from] KafkaError),
}

/// A record the broker will never take (too large, invalid), as opposed to a failure that
/// retrying can outlast.
#[derive(Debug, thiserror::Error)]
#[error("the broker refuses this record for good: {0}")]
pub struct Refused(pub KafkaError);

/// What a failed write means for the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Broker away, leader moving, queue full, timeout: retry with backoff.
    Transient,
    /// The record can never be written as it is.
    Permanent,
    /// The producer cannot go on (fenced, fatal idempotence error, misconfigured topic).
    Fatal,
}

/// Classifies a failed write by its error code.
pub fn classify(error: &KafkaError) -> Failure {
    use rdkafka::types::RDKafkaErrorCode as Code;
    match error.rdkafka_error_code() {
        Some(
            Code::MessageSizeTooLarge
            | Code::MessageBatchTooLarge
            | Code::InvalidMessageSize
            | Code::InvalidRecord
            | Code::InvalidMessage,
        ) => Failure::Permanent,
        Some(
            Code::Fatal
            | Code::ProducerFenced
            | Code::InvalidProducerEpoch
            | Code::InvalidTopic
            | Code::InvalidRequiredAcks
            | Code::UnsupportedCompressionType,
        ) => Failure::Fatal,
        _ => Failure::Transient,
    }
}

pub struct Recorder {
    producer: FutureProducer,
    outcome_topic: String,
    tier_topics: Vec<String>,
    fatal: Fatal,
    /// The largest outcome record the outcome topic takes: a larger outcome is written
    /// reduced straight away (exactly once, a record the broker refuses would void the
    /// transaction).
    outcome_limit: usize,
    /// Exactly once: the open transaction.
    txn: Option<Arc<Txn>>,
}

/// The open transaction's bookkeeping.
#[derive(Debug)]
struct Txn {
    /// Between writes and commits (see [`Gate`]).
    gate: Gate,
    /// Something was written since the last commit.
    written: AtomicBool,
    /// A record was given up after its result was written (a shutdown past its drain
    /// deadline): committing would keep that result without its offset, so the
    /// transaction is aborted instead.
    orphaned: AtomicBool,
    /// A commit failed for good: the process is stopping, and what is done since is
    /// counted against results that were thrown away, so nothing commits any more (not
    /// even on the revocation that leaving the group causes).
    failed: AtomicBool,
    /// Ends the process when a transaction call blocks past its deadline.
    watchdog: Arc<Watchdog>,
    /// What the open transaction holds, to write again if it must be aborted because the
    /// group's generation moved on (see [`Recorder::rewrite`]).
    sent: Mutex<Vec<Sent>>,
}

/// A record written in the open transaction.
#[derive(Debug, Clone)]
struct Sent {
    topic: String,
    key: String,
    value: Vec<u8>,
}

/// How a transaction step ended.
enum Stepped {
    Done,
    /// Offsets were sent with a group generation that a rebalance had just replaced: the
    /// transaction must be aborted, though nothing was wrong with what it holds.
    GroupMoved(KafkaError),
}

/// Whether the group's generation moved on under a commit (a rebalance under way).
fn group_moved(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::IllegalGeneration | RDKafkaErrorCode::RebalanceInProgress)
    )
}

/// How many times one commit writes its transaction again after the group moved on.
const REWRITES: u32 = 5;

/// What a write inside a transaction holds until its record settles. Dropped otherwise (the
/// write was abandoned half-way, at shutdown), it marks the transaction orphaned.
#[derive(Debug)]
struct TxnHold {
    _read: tokio::sync::OwnedRwLockReadGuard<()>,
    txn: Arc<Txn>,
    completed: bool,
}

impl Hold for TxnHold {
    fn settle(mut self: Box<Self>, completed: bool) {
        self.completed = completed;
    }
}

impl Drop for TxnHold {
    fn drop(&mut self) {
        if !self.completed {
            self.txn.orphaned.store(true, Ordering::SeqCst);
        }
    }
}

/// What the outcome writer needs to know.
pub struct RecorderOptions<'a> {
    /// The retry tiers' topics, shortest first (see [`crate::domain::parked`]).
    pub tier_topics: Vec<String>,
    /// See [`crate::kafka::internal_record_limit`].
    pub max_record_bytes: usize,
    /// The outcome topic's `max.message.bytes`.
    pub outcome_limit: usize,
    /// Exactly once: this writer's transactional id.
    pub transactional_id: Option<&'a str>,
    /// Exactly once: the most results one transaction holds, what a transaction lost to a
    /// fault can take with it (`kafka.max_transaction_records`, see [`Gate`]).
    pub max_transaction_records: usize,
    /// Raised on a fatal producer error.
    pub fatal: Fatal,
}

/// Transaction timeout (librdkafka's default): the broker aborts a transaction left open
/// longer, e.g. by an instance that died and does not come back.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

impl Recorder {
    /// Creates the producer; exactly once, also registers its transactional id (fencing
    /// off an earlier run with the same id, and aborting what it left open) and opens the
    /// first transaction. Blocking.
    pub fn new(kafka: &KafkaSettings, o: RecorderOptions<'_>) -> Result<Self, RecordError> {
        let mut config = crate::kafka::producer_config(kafka);
        config
            .set("message.max.bytes", o.max_record_bytes.to_string())
            // Idempotence: broker-side retries cannot duplicate or reorder records.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Short: a commit waits for the writes under way, so a longer linger holds
            // every commit (and the writes queued behind it) back by as much; with many
            // records under way, batches fill anyway (BENCHMARKS.md, "Exactly-once").
            .set("linger.ms", "1")
            .set("compression.type", "lz4");
        if let Some(id) = o.transactional_id {
            let timeout = TRANSACTION_TIMEOUT.as_millis().to_string();
            config
                .set("transactional.id", id)
                .set("transaction.timeout.ms", &timeout)
                // A record not delivered within the transaction's lifetime voids it anyway.
                .set("message.timeout.ms", &timeout);
        }
        let producer: FutureProducer = config.create()?;
        let txn = match o.transactional_id {
            None => None,
            Some(id) => {
                let watchdog = Watchdog::start(id);
                {
                    let _w =
                        watchdog.watch("init transactions", TRANSACTION_TIMEOUT + STUCK_MARGIN);
                    producer.init_transactions(TRANSACTION_TIMEOUT)?;
                }
                producer.begin_transaction()?;
                Some(Arc::new(Txn {
                    watchdog,
                    gate: Gate::new(o.max_transaction_records),
                    written: AtomicBool::new(false),
                    orphaned: AtomicBool::new(false),
                    failed: AtomicBool::new(false),
                    sent: Mutex::new(Vec::new()),
                }))
            }
        };
        Ok(Recorder {
            producer,
            outcome_topic: kafka.outcome_topic.clone(),
            tier_topics: o.tier_topics,
            fatal: o.fatal,
            outcome_limit: o.outcome_limit,
            txn,
        })
    }

    /// Exactly once: waits for the transaction's read barrier, then checks that `record` is
    /// still this instance's to finish (a result written for a record handed over would be
    /// committed without its offset). `Err` when it is not: nothing is written.
    async fn open(&self, record: &InputRecord) -> Result<Option<TxnHold>, ()> {
        let Some(txn) = &self.txn else {
            return Ok(None);
        };
        let read = txn.gate.enter().await;
        if !record.is_held() {
            debug!(
                topic = record.key.topic,
                partition = record.key.partition,
                offset = record.offset,
                "result not written: the record was handed over"
            );
            return Err(());
        }
        txn.written.store(true, Ordering::SeqCst);
        Ok(Some(TxnHold {
            _read: read,
            txn: txn.clone(),
            completed: false,
        }))
    }

    /// Writes one outcome and waits for the broker's acknowledgement. An outcome the broker
    /// refuses for good (or that is larger than the outcome topic takes) is written
    /// reduced (no attempts, no webhook: still its identity, status, reason and source
    /// coordinates), so its record still completes.
    pub async fn outcome(&self, record: &InputRecord, outcome: &Outcome) {
        let Ok(hold) = self.open(record).await else {
            return;
        };
        let key = outcome.key();
        let full = outcome.to_json();
        let mut written = if key.len() + full.len() + RECORD_OVERHEAD > self.outcome_limit {
            Err(Refused(KafkaError::MessageProduction(
                rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge,
            )))
        } else {
            self.send(&self.outcome_topic, &key, &full).await
        };
        if let Err(Refused(e)) = &written {
            error!(
                topic = self.outcome_topic,
                source_partition = outcome.source.partition,
                source_offset = outcome.source.offset,
                error = %e,
                "outcome refused by the broker; writing it reduced"
            );
            metrics()
                .record_write_failures
                .with_label_values(&["outcome_reduced"])
                .inc();
            let reduced = outcome.reduced();
            written = self
                .send(&self.outcome_topic, &key, &reduced.to_json())
                .await;
        }
        if let Some(hold) = hold {
            record.hold(Box::new(hold));
        }
        if let Err(Refused(e)) = written {
            // Cannot happen with the broker's smallest record limit; never block the
            // partition on it.
            error!(topic = self.outcome_topic, source_partition = outcome.source.partition,
                source_offset = outcome.source.offset, error = %e, "reduced outcome refused too; dropped");
            metrics()
                .record_write_failures
                .with_label_values(&["outcome_dropped"])
                .inc();
            return;
        }
        debug!(
            source_partition = outcome.source.partition,
            source_offset = outcome.source.offset,
            record_topic = record.key.topic,
            record_partition = record.key.partition,
            record_offset = record.offset,
            generation = record.generation,
            status = outcome.status.as_str(),
            "outcome written"
        );
        metrics()
            .outcomes
            .with_label_values(&[
                outcome.status.as_str(),
                outcome.reason.map_or("none", |r| r.as_str()),
            ])
            .inc();
    }

    /// Parks an event in the retry tier for `delay`, and waits for the acknowledgement.
    /// `Err` when the broker refuses the parked record for good: the caller ends the event.
    /// Nothing is written (`Ok`) for a record handed over meanwhile.
    pub async fn park(
        &self,
        record: &InputRecord,
        parked: &Parked,
        delay: Duration,
    ) -> Result<(), Refused> {
        let index = tier_for(delay).min(self.tier_topics.len().saturating_sub(1));
        let Some(topic) = self.tier_topics.get(index) else {
            return Ok(());
        };
        let Ok(hold) = self.open(record).await else {
            return Ok(());
        };
        if let Err(refused) = self.send(topic, &parked.event_id, &parked.to_json()).await {
            metrics()
                .record_write_failures
                .with_label_values(&["park_refused"])
                .inc();
            return Err(refused);
        }
        if let Some(hold) = hold {
            record.hold(Box::new(hold));
        }
        debug!(
            topic,
            record_topic = record.key.topic,
            record_partition = record.key.partition,
            record_offset = record.offset,
            generation = record.generation,
            event_id = parked.event_id,
            "parked"
        );
        if let Some((_, tier)) = TIERS.get(index) {
            metrics().retries_parked.with_label_values(&[tier]).inc();
        }
        Ok(())
    }

    /// Writes one record. A record the broker will never take is returned. A transient
    /// failure is retried with backoff until it succeeds (the offset behind it must not move
    /// without it); exactly once, a failed delivery voids the transaction, so it is fatal.
    /// A fatal failure raises the process's fatal condition and never resolves: the process
    /// stops and the record is redone after the restart.
    async fn send(&self, topic: &str, key: &str, value: &[u8]) -> Result<(), Refused> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let record = FutureRecord::to(topic).key(key).payload(value);
            // Refused before it was queued (too large for the producer, queue full): the
            // transaction is untouched.
            let (e, queued) = match self.producer.send_result(record) {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => {
                        if let Some(txn) = &self.txn {
                            if let Ok(mut sent) = txn.sent.lock() {
                                sent.push(Sent {
                                    topic: topic.to_owned(),
                                    key: key.to_owned(),
                                    value: value.to_vec(),
                                });
                            }
                        }
                        return Ok(());
                    }
                    Ok(Err((e, _))) => (e, true),
                    Err(_cancelled) => (KafkaError::Canceled, true),
                },
                Err((e, _)) => (e, false),
            };
            let failure = match self.producer.client().fatal_error() {
                Some(_) => Failure::Fatal,
                None if queued && self.txn.is_some() => Failure::Fatal,
                None => classify(&e),
            };
            match failure {
                Failure::Transient => {
                    warn!(topic, error = %e, "write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2).min(Duration::from_secs(5));
                }
                Failure::Permanent => return Err(Refused(e)),
                Failure::Fatal => {
                    error!(topic, error = %e, "the producer cannot go on; stopping");
                    if let Some(txn) = &self.txn {
                        txn.failed.store(true, Ordering::SeqCst);
                    }
                    self.fatal.raise(format!("producer: {e}"));
                    return std::future::pending().await;
                }
            }
        }
    }

    /// Sends what is still queued (at least once).
    pub fn flush(&self, timeout: Duration) -> Result<(), RecordError> {
        self.producer.flush(timeout)?;
        Ok(())
    }

    /// Runs a transaction step, retrying what can be retried for up to the transaction's
    /// timeout; a step that requires it aborts the transaction (and opens the next).
    ///
    /// `may_have_committed`: the step may have reached the coordinator's commit (the commit
    /// itself). A failure there is ambiguous (the response may be what was lost): instead of
    /// aborting and redoing in process, which would redo committed work, the process stops;
    /// the restart's `init_transactions` settles the transaction, and the committed offsets
    /// it then reads say what is done.
    fn step(
        &self,
        txn: &Txn,
        what: &str,
        may_have_committed: bool,
        op: impl Fn() -> Result<(), KafkaError>,
    ) -> Result<Stepped, CommitError> {
        let started = std::time::Instant::now();
        loop {
            let result = {
                let _w = txn.watchdog.watch(what, STEP_WAIT + STUCK_MARGIN);
                op()
            };
            let e = match result {
                Ok(()) => return Ok(Stepped::Done),
                Err(e) => e,
            };
            let fatal = self.producer.client().fatal_error().is_some();
            match &e {
                KafkaError::Transaction(t)
                    if !fatal
                        && !t.is_fatal()
                        && t.is_retriable()
                        && started.elapsed() < STEP_BUDGET =>
                {
                    warn!(step = what, error = %e, "transaction step failed; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                KafkaError::Transaction(t)
                    if !fatal
                        && !t.is_fatal()
                        && t.txn_requires_abort()
                        && !may_have_committed
                        && group_moved(&e) =>
                {
                    return Ok(Stepped::GroupMoved(e));
                }
                KafkaError::Transaction(t)
                    if !fatal && !t.is_fatal() && t.txn_requires_abort() && !may_have_committed =>
                {
                    // Redoing in process has let a result through twice under a broker
                    // failover; a restart redoes from the committed offsets, as after
                    // `kill -9`, which never has.
                    warn!(step = what, error = %e, "transaction aborted; stopping");
                    self.abort_open(txn)?;
                    metrics().transactions.with_label_values(&["aborted"]).inc();
                    return Err(CommitError::Fatal(format!(
                        "{what}: transaction aborted: {e}"
                    )));
                }
                _ => return Err(CommitError::Fatal(format!("{what}: {e}"))),
            }
        }
    }

    /// Commits the open transaction with the offsets `offsets` gives (the caller holds the
    /// barrier).
    fn commit_open(
        &self,
        txn: &Txn,
        offsets: &mut dyn FnMut() -> Option<Offsets>,
    ) -> Result<(), CommitError> {
        if txn.orphaned.load(Ordering::SeqCst) {
            self.abort_open(txn)?;
            metrics().transactions.with_label_values(&["aborted"]).inc();
            return Err(CommitError::Fatal(
                "a record was given up after its result was written; transaction aborted".into(),
            ));
        }
        let mut rewrites = 0;
        loop {
            let offsets = offsets();
            if offsets.is_none() && !txn.written.load(Ordering::SeqCst) {
                return Ok(());
            }
            let Some((tpl, group)) = &offsets else {
                break;
            };
            let sent = self.step(txn, "send offsets", false, || {
                self.producer
                    .send_offsets_to_transaction(tpl, group, STEP_WAIT)
            })?;
            match sent {
                Stepped::Done => break,
                Stepped::GroupMoved(e) if rewrites < REWRITES => {
                    rewrites += 1;
                    warn!(error = %e, attempt = rewrites,
                        "the group moved on during a commit; writing the transaction again");
                    self.rewrite(txn)?;
                    // The consumer learns its new generation from the coordinator.
                    std::thread::sleep(Duration::from_millis(100 * u64::from(rewrites)));
                }
                Stepped::GroupMoved(e) => {
                    warn!(step = "send offsets", error = %e, "transaction aborted; stopping");
                    self.abort_open(txn)?;
                    metrics().transactions.with_label_values(&["aborted"]).inc();
                    return Err(CommitError::Fatal(format!(
                        "send offsets: the group kept moving: {e}"
                    )));
                }
            }
        }
        if let Stepped::GroupMoved(e) = self.step(txn, "commit", true, || {
            self.producer.commit_transaction(STEP_WAIT)
        })? {
            return Err(CommitError::Fatal(format!("commit: {e}")));
        }
        txn.written.store(false, Ordering::SeqCst);
        if let Ok(mut sent) = txn.sent.lock() {
            sent.clear();
        }
        let _w = txn.watchdog.watch("begin", STEP_WAIT + STUCK_MARGIN);
        self.producer
            .begin_transaction()
            .map_err(|e| CommitError::Fatal(format!("begin: {e}")))?;
        metrics()
            .transactions
            .with_label_values(&["committed"])
            .inc();
        Ok(())
    }

    /// Aborts the open transaction and writes what it held again in the next one.
    ///
    /// Only for a transaction refused because the group's generation moved on under a
    /// rebalance: this instance is still a member, no partition it holds has been handed
    /// over (a handover commits first), so nobody else has written results for these
    /// records. Writing them again (instead of redoing their deliveries, or stopping and
    /// leaving them to the next owner) keeps one committed result per record and sends no
    /// request twice.
    fn rewrite(&self, txn: &Txn) -> Result<(), CommitError> {
        let records = txn.sent.lock().map(|s| s.clone()).unwrap_or_default();
        {
            let _w = txn.watchdog.watch("abort", ABORT_WAIT + STUCK_MARGIN);
            self.producer
                .abort_transaction(ABORT_WAIT)
                .and_then(|()| self.producer.begin_transaction())
                .map_err(|e| CommitError::Fatal(format!("abort: {e}")))?;
        }
        metrics()
            .transactions
            .with_label_values(&["rewritten"])
            .inc();
        let mut deliveries = Vec::with_capacity(records.len());
        for r in &records {
            let record = FutureRecord::to(&r.topic).key(&r.key).payload(&r.value);
            let delivery = self
                .producer
                .send_result(record)
                .map_err(|(e, _)| CommitError::Fatal(format!("writing again: {e}")))?;
            deliveries.push(delivery);
        }
        let _w = txn.watchdog.watch("write again", STEP_WAIT + STUCK_MARGIN);
        for result in futures::executor::block_on(futures::future::join_all(deliveries)) {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(CommitError::Fatal(format!("writing again: {e}"))),
                Err(_) => return Err(CommitError::Fatal("writing again: cancelled".into())),
            }
        }
        Ok(())
    }

    /// Aborts the open transaction and opens the next.
    fn abort_open(&self, txn: &Txn) -> Result<(), CommitError> {
        let _w = txn.watchdog.watch("abort", ABORT_WAIT + STUCK_MARGIN);
        self.producer
            .abort_transaction(ABORT_WAIT)
            .and_then(|()| self.producer.begin_transaction())
            .map_err(|e| CommitError::Fatal(format!("abort: {e}")))?;
        txn.written.store(false, Ordering::SeqCst);
        txn.orphaned.store(false, Ordering::SeqCst);
        if let Ok(mut sent) = txn.sent.lock() {
            sent.clear();
        }
        Ok(())
    }
}

/// How long one transaction call (sending offsets, committing) may wait for the broker, and
/// how long a step is retried in all. Past that the process stops and its supervisor
/// restarts it: the restart's `init_transactions` settles the transaction left behind, one
/// way or the other, before anything is read again.
const STEP_WAIT: Duration = Duration::from_secs(10);
const STEP_BUDGET: Duration = Duration::from_secs(30);

/// How much longer than its own timeout a transaction call may block before the process
/// ends (see [`Watchdog`]).
const STUCK_MARGIN: Duration = Duration::from_secs(20);

/// How long an abort may take before the producer is given up (and the process restarts).
const ABORT_WAIT: Duration = Duration::from_secs(15);

/// How long a commit waits for the writes under way.
const BARRIER_WAIT: Duration = Duration::from_secs(2);

/// Bytes a record takes beyond its key and value (batch and record headers), for the
/// outcome size check.
const RECORD_OVERHEAD: usize = 512;

impl Transactions for Recorder {
    fn commit(&self, offsets: &mut dyn FnMut() -> Option<Offsets>) -> Result<(), CommitError> {
        let Some(txn) = &self.txn else {
            return Ok(());
        };
        // Every write under way finishes (its record settles) first; new ones wait. A write
        // that does not finish soon (the broker is away) is waited for by a later commit,
        // and new writes wait until then.
        let Some(_barrier) = txn.gate.drain(BARRIER_WAIT) else {
            return Err(CommitError::Busy);
        };
        if txn.failed.load(Ordering::SeqCst) {
            return Err(CommitError::Fatal(
                "an earlier transaction failed; nothing commits until the restart".into(),
            ));
        }
        let result = self.commit_open(txn, offsets);
        if let Err(CommitError::Fatal(_)) = &result {
            txn.failed.store(true, Ordering::SeqCst);
        }
        result
    }

    fn filled(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.txn.as_ref().map(|txn| txn.gate.filled())
    }

    fn held_back(&self) -> bool {
        self.txn.as_ref().is_some_and(|txn| txn.gate.is_closed())
    }

    fn abort(&self) -> Result<(), CommitError> {
        let Some(txn) = &self.txn else {
            return Ok(());
        };
        // Writes under way are thrown away with the rest: no need to wait long for them.
        let _barrier = txn.gate.drain(BARRIER_WAIT);
        let aborted = self.abort_open(txn);
        txn.gate.reopen();
        aborted?;
        metrics().transactions.with_label_values(&["aborted"]).inc();
        Ok(())
    }
}

impl RecordSink for Recorder {
    fn outcome<'a>(&'a self, record: &'a InputRecord, outcome: &'a Outcome) -> BoxFuture<'a, ()> {
        Box::pin(Recorder::outcome(self, record, outcome))
    }

    fn park<'a>(
        &'a self,
        record: &'a InputRecord,
        parked: &'a Parked,
        delay: Duration,
    ) -> BoxFuture<'a, Result<(), Refused>> {
        Box::pin(Recorder::park(self, record, parked, delay))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode as Code;

    #[test]
    fn write_failures_are_classified_by_what_retrying_can_change() {
        let produce = |code| KafkaError::MessageProduction(code);
        assert_eq!(
            classify(&produce(Code::MessageSizeTooLarge)),
            Failure::Permanent
        );
        assert_eq!(classify(&produce(Code::InvalidRecord)), Failure::Permanent);
        assert_eq!(classify(&produce(Code::ProducerFenced)), Failure::Fatal);
        assert_eq!(classify(&produce(Code::Fatal)), Failure::Fatal);
        for transient in [
            Code::BrokerTransportFailure,
            Code::NotLeaderForPartition,
            Code::QueueFull,
            Code::MessageTimedOut,
            Code::NotEnoughReplicas,
            Code::UnknownTopicOrPartition,
        ] {
            assert_eq!(
                classify(&produce(transient)),
                Failure::Transient,
                "{transient:?}"
            );
        }
    }
}
