//! Produces outcome and parked records and resolves only once the broker has acknowledged
//! them, which is what allows the offset of the record behind them to be committed.

use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tracing::warn;

use super::RecordSink;
use crate::domain::outcome::Outcome;
use crate::domain::parked::TIERS;
use crate::domain::parked::{tier_for, Parked};
use crate::kafka::{client_config, KafkaSettings};
use crate::observe::metrics;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("producer: {0}")]
    Kafka(#[from] KafkaError),
}

#[derive(Clone)]
pub struct Recorder {
    producer: FutureProducer,
    outcome_topic: String,
    tier_topics: Vec<String>,
}

impl Recorder {
    /// `tier_topics`: the retry tiers' topics, shortest first (see [`crate::domain::parked`]).
    /// `max_record_bytes`: see [`crate::kafka::internal_record_limit`].
    pub fn new(
        kafka: &KafkaSettings,
        tier_topics: Vec<String>,
        max_record_bytes: usize,
    ) -> Result<Self, RecordError> {
        let producer: FutureProducer = client_config(kafka)
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
        })
    }

    /// Writes one outcome and waits for the broker's acknowledgement.
    pub async fn outcome(&self, outcome: &Outcome) {
        self.send(&self.outcome_topic, &outcome.key(), &outcome.to_json())
            .await;
        metrics()
            .outcomes
            .with_label_values(&[
                outcome.status.as_str(),
                outcome.reason.map_or("none", |r| r.as_str()),
            ])
            .inc();
    }

    /// Parks an event in the retry tier for `delay`, and waits for the acknowledgement.
    pub async fn park(&self, parked: &Parked, delay: Duration) {
        let index = tier_for(delay).min(self.tier_topics.len().saturating_sub(1));
        let Some(topic) = self.tier_topics.get(index) else {
            return;
        };
        self.send(topic, &parked.event_id, &parked.to_json()).await;
        if let Some((_, tier)) = TIERS.get(index) {
            metrics().retries_parked.with_label_values(&[tier]).inc();
        }
    }

    /// A failed write is retried with backoff until it succeeds: the offset behind it must
    /// not move without it, and giving up would lose the event's only record.
    async fn send(&self, topic: &str, key: &str, value: &[u8]) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let record = FutureRecord::to(topic).key(key).payload(value);
            match self.producer.send(record, Timeout::Never).await {
                Ok(_) => return,
                Err((e, _)) => {
                    warn!(topic, key, error = %e, "write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
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

    fn park<'a>(&'a self, parked: &'a Parked, delay: Duration) -> BoxFuture<'a, ()> {
        Box::pin(Recorder::park(self, parked, delay))
    }
}
