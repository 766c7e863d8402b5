//! Produces outcome and parked records and resolves only once the broker has acknowledged
//! them, which is what allows the offset of the record behind them to be committed.
//! Exactly once, the records are written in a transaction, which commits them together with
//! the offsets of the records they are the results of (see [`Transactions`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tracing::{debug, error, warn};

use super::transaction::{Sent, Timing, Transaction, TxnHold};
use super::watchdog::Watchdog;

use super::RecordSink;
use crate::domain::health::Signal;
use crate::domain::outcome::Outcome;
use crate::domain::parked::TIERS;
use crate::domain::parked::{tier_for, Parked};
use crate::fatal::{Fatal, FatalCause};
use crate::kafka::KafkaSettings;
use crate::observe::metrics;
use crate::source::commit::{CommitError, Offsets, Transactions};
use crate::source::InputRecord;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("producer: {0}")]
    Kafka(#[from] KafkaError),
    /// A producer's start, run off the async workers, did not complete.
    #[error("producer start: {0}")]
    Start(String),
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

/// What a fatal producer error means for the process: a setting the broker refuses cannot
/// be ridden out; anything else can, with a new producer.
fn fatal_cause(error: &KafkaError) -> FatalCause {
    use rdkafka::types::RDKafkaErrorCode as Code;
    match error.rdkafka_error_code() {
        Some(Code::InvalidTopic | Code::InvalidRequiredAcks | Code::UnsupportedCompressionType) => {
            FatalCause::Misconfigured(error.to_string())
        }
        _ => FatalCause::Producer(error.to_string()),
    }
}

pub struct Recorder {
    producer: FutureProducer,
    outcome_topic: String,
    tier_topics: Vec<String>,
    /// Where the webhooks' health signals go (`None`: health tracking is off).
    signal_topic: Option<String>,
    fatal: Fatal,
    /// The largest outcome record the outcome topic takes: a larger outcome is written
    /// reduced straight away (exactly once, a record the broker refuses would void the
    /// transaction).
    outcome_limit: usize,
    /// Exactly once: the open transaction.
    txn: Option<Arc<Transaction>>,
    /// Exactly once: the health signals of the open transaction's steps, one per webhook,
    /// written when it commits.
    signals: std::sync::Mutex<HashMap<String, Signal>>,
}

/// What the outcome writer needs to know.
pub struct RecorderOptions<'a> {
    /// The retry tiers' topics, shortest first (see [`crate::domain::parked`]).
    pub tier_topics: Vec<String>,
    /// The health signals' topic, when health tracking is on.
    pub signal_topic: Option<String>,
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
                let watchdog = Watchdog::start(id, o.fatal.clone());
                {
                    let margin = Timing::default().stuck_margin;
                    let _w = watchdog.watch("init transactions", TRANSACTION_TIMEOUT + margin);
                    producer.init_transactions(TRANSACTION_TIMEOUT)?;
                }
                producer.begin_transaction()?;
                Some(Arc::new(Transaction::new(
                    watchdog,
                    o.max_transaction_records,
                    Timing::default(),
                )))
            }
        };
        Ok(Recorder {
            producer,
            outcome_topic: kafka.outcome_topic.clone(),
            tier_topics: o.tier_topics,
            signal_topic: o.signal_topic,
            signals: std::sync::Mutex::default(),
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
        let read = txn.enter().await;
        if !record.is_held() {
            debug!(
                topic = record.key.topic,
                partition = record.key.partition,
                offset = record.offset,
                "result not written: the record was handed over"
            );
            return Err(());
        }
        Ok(Some(txn.hold(read)))
    }

    /// Writes one outcome and waits for the broker's acknowledgement. An outcome the broker
    /// refuses for good (or that is larger than the outcome topic takes) is written
    /// reduced (no attempts, no webhook: still its identity, status, reason and source
    /// coordinates), so its record still completes.
    pub async fn outcome(&self, record: &InputRecord, outcome: &Outcome, signal: Option<&Signal>) {
        let Ok(hold) = self.open(record).await else {
            return;
        };
        let (written, ()) = futures::join!(self.write_outcome(outcome), self.signal(signal));
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

    /// Writes `outcome`, or reduced when the broker refuses it for good.
    async fn write_outcome(&self, outcome: &Outcome) -> Result<(), Refused> {
        let key = outcome.key();
        let full = outcome.to_json();
        let written = if key.len() + full.len() + RECORD_OVERHEAD > self.outcome_limit {
            Err(Refused(KafkaError::MessageProduction(
                rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge,
            )))
        } else {
            self.send(&self.outcome_topic, &key, &full).await
        };
        let Err(Refused(e)) = &written else {
            return written;
        };
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
        self.send(&self.outcome_topic, &key, &reduced.to_json())
            .await
    }

    /// Takes a step's health signal (when health tracking is on): exactly once, into its
    /// webhook's signal of the open transaction (written at its commit); at least once,
    /// written at once. Small and of a fixed shape: a refusal cannot happen in practice,
    /// and would only cost the tracker one observation.
    async fn signal(&self, signal: Option<&Signal>) {
        let (Some(topic), Some(signal)) = (&self.signal_topic, signal) else {
            return;
        };
        if self.txn.is_some() {
            let mut signals = self.signals.lock().unwrap_or_else(|e| e.into_inner());
            match signals.get_mut(&signal.key()) {
                Some(sum) => sum.merge(signal),
                None => {
                    signals.insert(signal.key(), signal.clone());
                }
            }
            return;
        }
        if let Err(Refused(e)) = self.send(topic, &signal.key(), &signal.to_json()).await {
            warn!(topic, error = %e, "health signal refused by the broker; dropped");
            metrics()
                .record_write_failures
                .with_label_values(&["signal_dropped"])
                .inc();
        }
    }

    /// Parks an event in the retry tier for `delay`, and waits for the acknowledgement.
    /// `Err` when the broker refuses the parked record for good: the caller ends the event.
    /// Nothing is written (`Ok`) for a record handed over meanwhile.
    pub async fn park(
        &self,
        record: &InputRecord,
        parked: &Parked,
        delay: Duration,
        signal: Option<&Signal>,
    ) -> Result<(), Refused> {
        let index = tier_for(delay).min(self.tier_topics.len().saturating_sub(1));
        let Some(topic) = self.tier_topics.get(index) else {
            return Ok(());
        };
        let Ok(hold) = self.open(record).await else {
            return Ok(());
        };
        let value = parked.to_json();
        let (written, ()) = futures::join!(
            self.send(topic, &parked.event_id, &value),
            self.signal(signal)
        );
        if let Err(refused) = written {
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
                            txn.sent(Sent {
                                topic: topic.to_owned(),
                                key: key.to_owned(),
                                value: value.to_vec(),
                            });
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
                        txn.fail();
                    }
                    // The client's own fatal error says why (a fenced producer); the
                    // record's error is only the purge that followed.
                    let cause = match self.producer.client().fatal_error() {
                        Some((_, reason)) => FatalCause::Producer(reason),
                        None => fatal_cause(&e),
                    };
                    self.fatal.raise(cause);
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
}

/// Bytes a record takes beyond its key and value (batch and record headers), for the
/// outcome size check.
const RECORD_OVERHEAD: usize = 512;

impl Recorder {
    /// Queues the open transaction's health signals in it (the commit waits for them:
    /// one that fails fails the commit, which is then redone with the work it sums).
    fn flush_signals(&self, txn: &Transaction) {
        let (Some(topic), signals) = (
            &self.signal_topic,
            std::mem::take(&mut *self.signals.lock().unwrap_or_else(|e| e.into_inner())),
        ) else {
            return;
        };
        for (key, signal) in signals {
            let value = signal.to_json();
            match self
                .producer
                .send_result(FutureRecord::to(topic).key(&key).payload(&value))
            {
                Ok(_delivery) => txn.sent(Sent {
                    topic: topic.clone(),
                    key,
                    value,
                }),
                Err((e, _)) => {
                    warn!(topic, error = %e, "health signal not queued; dropped");
                    metrics()
                        .record_write_failures
                        .with_label_values(&["signal_dropped"])
                        .inc();
                }
            }
        }
    }

    /// Forgets the signals of a transaction that is thrown away (its work is redone).
    fn forget_signals(&self) {
        self.signals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Transactions for Recorder {
    fn commit(&self, offsets: &mut dyn FnMut() -> Option<Offsets>) -> Result<(), CommitError> {
        match &self.txn {
            Some(txn) => {
                // Most signals go while writes still run: their partitions join the
                // transaction and their records are acknowledged by the time the commit
                // starts; what the last writes add goes after the barrier, beside the offsets.
                self.flush_signals(txn);
                txn.commit(&self.producer, offsets, &|| self.flush_signals(txn))
            }
            None => Ok(()),
        }
    }

    fn filled(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.txn.as_ref().map(|txn| txn.filled())
    }

    fn held_back(&self) -> bool {
        self.txn.as_ref().is_some_and(|txn| txn.held_back())
    }

    fn abort(&self) -> Result<(), CommitError> {
        match &self.txn {
            Some(txn) => {
                self.forget_signals();
                txn.abort(&self.producer)
            }
            None => Ok(()),
        }
    }
}

impl RecordSink for Recorder {
    fn outcome<'a>(
        &'a self,
        record: &'a InputRecord,
        outcome: &'a Outcome,
        signal: Option<&'a Signal>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(Recorder::outcome(self, record, outcome, signal))
    }

    fn park<'a>(
        &'a self,
        record: &'a InputRecord,
        parked: &'a Parked,
        delay: Duration,
        signal: Option<&'a Signal>,
    ) -> BoxFuture<'a, Result<(), Refused>> {
        Box::pin(Recorder::park(self, record, parked, delay, signal))
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
