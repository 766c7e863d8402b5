//! Produces outcome records and resolves only once the broker has acknowledged them, which
//! is what allows the input offset behind them to be committed.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tracing::warn;

use crate::domain::outcome::Outcome;
use crate::kafka::{client_config, KafkaSettings};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("outcome producer: {0}")]
    Kafka(#[from] KafkaError),
}

#[derive(Clone)]
pub struct OutcomeSink {
    producer: FutureProducer,
    topic: String,
}

impl OutcomeSink {
    pub fn new(kafka: &KafkaSettings) -> Result<Self, RecordError> {
        let producer: FutureProducer = client_config(kafka)
            // Idempotence: broker-side retries cannot duplicate or reorder outcomes.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .create()?;
        Ok(OutcomeSink {
            producer,
            topic: kafka.outcome_topic.clone(),
        })
    }

    /// Writes one outcome and waits for the broker's acknowledgement. A failed write is
    /// retried with backoff until it succeeds: the input offset must not move without it,
    /// and giving up would lose the event's only record.
    pub async fn record(&self, outcome: &Outcome) -> Result<(), RecordError> {
        let key = outcome.key();
        let value = outcome.to_json();
        let mut backoff = Duration::from_millis(100);
        loop {
            let record = FutureRecord::to(&self.topic).key(&key).payload(&value);
            match self.producer.send(record, Timeout::Never).await {
                Ok(_) => return Ok(()),
                Err((e, _)) => {
                    warn!(event_id = key, error = %e, "outcome write failed; retrying");
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
