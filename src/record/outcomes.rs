//! Produces outcome and parked records and resolves only once the broker has acknowledged
//! them, which is what allows the offset of the record behind them to be committed.

use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tracing::{error, warn};

use super::RecordSink;
use crate::domain::outcome::Outcome;
use crate::domain::parked::TIERS;
use crate::domain::parked::{tier_for, Parked};
use crate::fatal::Fatal;
use crate::kafka::KafkaSettings;
use crate::observe::metrics;

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

#[derive(Clone)]
pub struct Recorder {
    producer: FutureProducer,
    outcome_topic: String,
    tier_topics: Vec<String>,
    fatal: Fatal,
}

impl Recorder {
    /// `tier_topics`: the retry tiers' topics, shortest first (see [`crate::domain::parked`]).
    /// `max_record_bytes`: see [`crate::kafka::internal_record_limit`]. A fatal producer
    /// error raises `fatal`.
    pub fn new(
        kafka: &KafkaSettings,
        tier_topics: Vec<String>,
        max_record_bytes: usize,
        fatal: Fatal,
    ) -> Result<Self, RecordError> {
        let producer: FutureProducer = crate::kafka::producer_config(kafka)
            .set("message.max.bytes", max_record_bytes.to_string())
            // Idempotence: broker-side retries cannot duplicate or reorder records.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .create()?;
        Ok(Recorder {
            producer,
            outcome_topic: kafka.outcome_topic.clone(),
            tier_topics,
            fatal,
        })
    }

    /// Writes one outcome and waits for the broker's acknowledgement. An outcome the broker
    /// refuses for good is written again reduced (no attempts, no webhook: still its
    /// identity, status, reason and source coordinates), so its record still completes.
    pub async fn outcome(&self, outcome: &Outcome) {
        let key = outcome.key();
        let mut written = self
            .send(&self.outcome_topic, &key, &outcome.to_json())
            .await;
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
    pub async fn park(&self, parked: &Parked, delay: Duration) -> Result<(), Refused> {
        let index = tier_for(delay).min(self.tier_topics.len().saturating_sub(1));
        let Some(topic) = self.tier_topics.get(index) else {
            return Ok(());
        };
        if let Err(refused) = self.send(topic, &parked.event_id, &parked.to_json()).await {
            metrics()
                .record_write_failures
                .with_label_values(&["park_refused"])
                .inc();
            return Err(refused);
        }
        if let Some((_, tier)) = TIERS.get(index) {
            metrics().retries_parked.with_label_values(&[tier]).inc();
        }
        Ok(())
    }

    /// Writes one record. A transient failure is retried with backoff until it succeeds:
    /// the offset behind it must not move without it. A permanent one is returned. A fatal
    /// one raises the process's fatal condition and never resolves: the process stops and
    /// the record is redone after the restart.
    async fn send(&self, topic: &str, key: &str, value: &[u8]) -> Result<(), Refused> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let record = FutureRecord::to(topic).key(key).payload(value);
            let e = match self.producer.send(record, Timeout::Never).await {
                Ok(_) => return Ok(()),
                Err((e, _)) => e,
            };
            let failure = match self.producer.client().fatal_error() {
                Some(_) => Failure::Fatal,
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
                    self.fatal.raise(format!("producer: {e}"));
                    return std::future::pending().await;
                }
            }
        }
    }

    /// Sends what is still queued.
    pub fn flush(&self, timeout: Duration) -> Result<(), RecordError> {
        self.producer.flush(timeout)?;
        Ok(())
    }
}

impl RecordSink for Recorder {
    fn outcome<'a>(&'a self, outcome: &'a Outcome) -> BoxFuture<'a, ()> {
        Box::pin(Recorder::outcome(self, outcome))
    }

    fn park<'a>(
        &'a self,
        parked: &'a Parked,
        delay: Duration,
    ) -> BoxFuture<'a, Result<(), Refused>> {
        Box::pin(Recorder::park(self, parked, delay))
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
