//! Writes go to the config topic, the single source of truth, and are answered only once
//! this instance's own cache (followed from the topic by `follower`) has applied them: a
//! client that writes then reads sees its write, whichever instance answers the read once
//! that instance has caught up too.
//!
//! Every instance (of the API, and processors carrying out a receiver's request to be
//! disabled) writes in Kafka transactions under the same transactional id, so only one
//! of them can commit at a time: an instance that starts writing fences the one that wrote
//! last. A write checks its version after catching up, and commits only if no other
//! instance has started writing since it did; otherwise it is fenced, and it starts again
//! (catching up, checking its version again: a 412 if another instance's write came first).
//! So two instances never overwrite each other's write silently.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use tracing::info;

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
    /// Another instance started writing: this write did not commit, and may be tried again.
    #[error("another instance of the API is writing")]
    Fenced,
}

/// How long a write waits for the broker, then for its own cache.
const PUBLISH_WAIT: Duration = Duration::from_secs(15);
const APPLY_WAIT: Duration = Duration::from_secs(15);

/// How long registering the transactional id (and fencing the last writer) may take.
const INIT_WAIT: Duration = Duration::from_secs(30);

/// A write left open by an instance that died is aborted by the broker after this (or at
/// once, when another instance starts writing): until then the config topic's readers
/// wait at it.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Publisher {
    /// The transactional writer, made (and registered) on first use and again after it was
    /// fenced.
    writer: std::sync::Mutex<Option<Arc<FutureProducer>>>,
    config: ClientConfig,
    /// For the config topic's end offsets (blocking calls, run off the runtime).
    metadata: Arc<BaseConsumer>,
    store: ConfigStore,
    topic: String,
}

impl Publisher {
    pub fn new(kafka: &KafkaSettings, store: ConfigStore) -> Result<Self, PublishError> {
        // acks=all and idempotence: a write acknowledged is on every in-sync replica, once.
        // The key partitioner is the Java client's (crate::kafka), like every other writer.
        let mut config = crate::kafka::producer_config(kafka);
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "transactional.id",
                format!("{}-admin-writer", kafka.group_id),
            )
            .set(
                "transaction.timeout.ms",
                TRANSACTION_TIMEOUT.as_millis().to_string(),
            );
        let metadata: BaseConsumer = client_config(kafka).create()?;
        Ok(Publisher {
            writer: std::sync::Mutex::new(None),
            config,
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

    /// Registers this instance as the writer (fencing the one that wrote last) unless it
    /// still is. A write must do this before it catches up and checks its version: a
    /// commit then succeeds only if no other instance wrote in between.
    pub async fn ready(&self) -> Result<(), PublishError> {
        self.writer().await.map(|_| ())
    }

    /// The transactional writer; registering a new one fences the instance that wrote last
    /// (and aborts what it left open).
    async fn writer(&self) -> Result<Arc<FutureProducer>, PublishError> {
        if let Some(writer) = self.writer.lock().ok().and_then(|w| w.clone()) {
            return Ok(writer);
        }
        let config = self.config.clone();
        let writer = tokio::task::spawn_blocking(move || -> Result<FutureProducer, KafkaError> {
            let producer: FutureProducer = config.create()?;
            producer.init_transactions(INIT_WAIT)?;
            Ok(producer)
        })
        .await
        .map_err(|e| PublishError::Task(e.to_string()))??;
        info!("config writer registered");
        let writer = Arc::new(writer);
        if let Ok(mut slot) = self.writer.lock() {
            *slot = Some(writer.clone());
        }
        Ok(writer)
    }

    /// Publishes `value` (a tombstone when `None`) under `key` in a transaction, and
    /// returns its version once the cache has applied it. [`PublishError::Fenced`] when
    /// another instance started writing since this one did: nothing was published.
    pub async fn publish(
        &self,
        key: &ConfigKey,
        value: Option<&[u8]>,
    ) -> Result<Version, PublishError> {
        let key_text = key.to_string();
        let writer = self.writer().await?;
        let produced = async {
            writer.begin_transaction()?;
            let mut record = FutureRecord::<str, [u8]>::to(&self.topic).key(&key_text);
            if let Some(value) = value {
                record = record.payload(value);
            }
            let delivery = writer
                .send(record, Timeout::After(PUBLISH_WAIT))
                .await
                .map_err(|(e, _)| e)?;
            Ok::<_, KafkaError>(Version {
                partition: delivery.partition,
                offset: delivery.offset,
            })
        }
        .await;
        let version = match produced {
            Ok(version) => version,
            Err(e) => {
                // Not committed: the next write starts with a new writer, which aborts
                // what this one left open.
                let fenced = fenced(&e) || writer.client().fatal_error().is_some();
                self.drop_writer();
                return Err(if fenced {
                    PublishError::Fenced
                } else {
                    PublishError::Kafka(e)
                });
            }
        };
        let committing = writer.clone();
        let committed =
            tokio::task::spawn_blocking(move || committing.commit_transaction(PUBLISH_WAIT))
                .await
                .map_err(|e| PublishError::Task(e.to_string()))?;
        if let Err(e) = committed {
            // A failed commit may still have committed (only its answer lost). A new
            // writer settles it (the coordinator completes or aborts it first); then the
            // topic says which.
            self.drop_writer();
            self.ready().await?;
            self.sync().await?;
            let now = self.store.raw(key)?.map(|s| s.version);
            let landed = match value {
                Some(_) => now == Some(version),
                None => now.is_none(),
            };
            info!(key = %key_text, error = %e, landed, "a config write's commit failed; settled");
            if !landed {
                return Err(PublishError::Fenced);
            }
        }
        self.applied(version.partition, version.offset, &key_text)
            .await?;
        Ok(version)
    }

    fn drop_writer(&self) {
        if let Ok(mut slot) = self.writer.lock() {
            *slot = None;
        }
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

/// Whether a write failed because another writer registered the same transactional id.
fn fenced(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::Fatal
        )
    )
}
