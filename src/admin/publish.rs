//! Writes go to the config topic, the single source of truth, and are answered only once
//! this instance's own cache (followed from the topic by `join/`) has applied them: a
//! client that writes then reads sees its write, whichever instance answers the read once
//! that instance has caught up too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::domain::config::ConfigKey;
use crate::join::{ConfigStore, StoreError, Version};
use crate::kafka::{client_config, partition_ids, KafkaSettings};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("config topic: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the config cache did not apply {what} within {secs} s")]
    NotApplied { what: String, secs: u64 },
    #[error("background task: {0}")]
    Task(String),
}

/// How long a write waits for the broker, then for its own cache.
const PUBLISH_WAIT: Duration = Duration::from_secs(15);
const APPLY_WAIT: Duration = Duration::from_secs(15);

pub struct Publisher {
    producer: FutureProducer,
    /// For the config topic's end offsets (blocking calls, run off the runtime).
    metadata: Arc<BaseConsumer>,
    store: ConfigStore,
    topic: String,
}

impl Publisher {
    pub fn new(kafka: &KafkaSettings, store: ConfigStore) -> Result<Self, PublishError> {
        // acks=all and idempotence: a write acknowledged is on every in-sync replica, once.
        // The key partitioner is the Java client's (crate::kafka), like every other writer.
        let producer: FutureProducer = crate::kafka::producer_config(kafka)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()?;
        let metadata: BaseConsumer = client_config(kafka).create()?;
        Ok(Publisher {
            producer,
            metadata: Arc::new(metadata),
            store,
            topic: kafka.config_topic.clone(),
        })
    }

    /// Waits until the cache holds everything the config topic holds now, so that a
    /// version check made next is against the latest version (another instance may have
    /// written a moment ago).
    pub async fn sync(&self) -> Result<(), PublishError> {
        let metadata = self.metadata.clone();
        let topic = self.topic.clone();
        let ends = tokio::task::spawn_blocking(move || -> Result<Vec<(i32, i64)>, KafkaError> {
            let mut ends = Vec::new();
            for p in partition_ids(metadata.as_ref(), &topic)? {
                let (_, high) = metadata.fetch_watermarks(&topic, p, Duration::from_secs(10))?;
                ends.push((p, high));
            }
            Ok(ends)
        })
        .await
        .map_err(|e| PublishError::Task(e.to_string()))??;
        for (partition, high) in ends {
            self.applied(partition, high - 1, "the config topic's latest records")
                .await?;
        }
        Ok(())
    }

    /// Publishes `value` (a tombstone when `None`) under `key`, and returns its version
    /// once the cache has applied it.
    pub async fn publish(
        &self,
        key: &ConfigKey,
        value: Option<&[u8]>,
    ) -> Result<Version, PublishError> {
        let key_text = key.to_string();
        let mut record = FutureRecord::<str, [u8]>::to(&self.topic).key(&key_text);
        if let Some(value) = value {
            record = record.payload(value);
        }
        let delivery = self
            .producer
            .send(record, Timeout::After(PUBLISH_WAIT))
            .await
            .map_err(|(e, _)| e)?;
        let version = Version {
            partition: delivery.partition,
            offset: delivery.offset,
        };
        self.applied(version.partition, version.offset, &key_text)
            .await?;
        Ok(version)
    }

    /// Waits until the cache has applied `partition`'s record at `offset`.
    async fn applied(&self, partition: i32, offset: i64, what: &str) -> Result<(), PublishError> {
        let deadline = Instant::now() + APPLY_WAIT;
        loop {
            let next = self.store.next_offset(&self.topic, partition)?;
            if offset < 0 || next.is_some_and(|n| n > offset) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(PublishError::NotApplied {
                    what: what.to_owned(),
                    secs: APPLY_WAIT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
