//! The input consumer. Offsets are never stored automatically: the pipeline stores the next
//! offset of a partition once every record before it has its outcome acknowledged, and
//! librdkafka's auto-commit then commits what was stored (also on revocation).

use std::sync::{Arc, Mutex};

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{info, warn};

use super::offsets::{OffsetTracker, PartitionKey};
use crate::kafka::{client_config, KafkaSettings};

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
}

/// Keeps the offset tracker in step with the group's assignments.
pub struct InputContext {
    tracker: Arc<Mutex<OffsetTracker>>,
}

impl ClientContext for InputContext {}

impl ConsumerContext for InputContext {
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let Ok(mut tracker) = self.tracker.lock() else {
                return;
            };
            for e in tpl.elements() {
                tracker.revoke(&PartitionKey {
                    topic: e.topic().to_owned(),
                    partition: e.partition(),
                });
            }
            info!(partitions = tpl.count(), "input partitions revoked");
        }
    }

    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let Ok(mut tracker) = self.tracker.lock() else {
                    return;
                };
                for e in tpl.elements() {
                    tracker.assign(PartitionKey {
                        topic: e.topic().to_owned(),
                        partition: e.partition(),
                    });
                }
                info!(partitions = tpl.count(), "input partitions assigned");
            }
            Rebalance::Error(e) => warn!(error = %e, "input rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

pub struct InputConsumer {
    consumer: StreamConsumer<InputContext>,
    tracker: Arc<Mutex<OffsetTracker>>,
}

impl InputConsumer {
    /// Joins `group` and subscribes to `topics` (a name starting with `^` is a pattern).
    pub fn subscribe(
        kafka: &KafkaSettings,
        group: &str,
        topics: &[String],
        max_event_bytes: usize,
    ) -> Result<Self, InputError> {
        let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
        // Fetch sizes allow the largest event we accept plus headroom, so an oversized event
        // is still read (and recorded as invalid) rather than stalling the partition.
        let fetch_max = (max_event_bytes * 2).max(1 << 20).to_string();
        let consumer: StreamConsumer<InputContext> = client_config(kafka)
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("max.partition.fetch.bytes", &fetch_max)
            // Bound what librdkafka prefetches, so memory does not grow with the backlog.
            .set("queued.max.messages.kbytes", "16384")
            .set("queued.min.messages", "10000")
            .create_with_context(InputContext {
                tracker: tracker.clone(),
            })?;
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(InputConsumer { consumer, tracker })
    }

    /// The next record. Cancel-safe: dropping the future loses nothing.
    pub async fn next(&self) -> Result<Option<InputRecord>, InputError> {
        let message = self.consumer.recv().await?;
        let key = PartitionKey {
            topic: message.topic().to_owned(),
            partition: message.partition(),
        };
        let offset = message.offset();
        let generation = match self.tracker.lock() {
            Ok(mut tracker) => tracker.begin(&key, offset),
            Err(_) => None,
        };
        let Some(generation) = generation else {
            // Already in flight here (re-fetched after a seek): its first copy completes it.
            return Ok(None);
        };
        Ok(Some(InputRecord {
            key,
            offset,
            payload: message.payload().map(<[u8]>::to_vec),
            generation,
        }))
    }

    /// Marks a record complete and stores the partition's new commit point if it moved.
    pub fn complete(&self, key: &PartitionKey, generation: u64, offset: i64) {
        let next = match self.tracker.lock() {
            Ok(mut tracker) => tracker.complete(key, generation, offset),
            Err(_) => None,
        };
        let Some(next) = next else { return };
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(&key.topic, key.partition, Offset::Offset(next))
            .is_err()
        {
            return;
        }
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            // Expected for a partition revoked meanwhile: its new owner re-reads the rest.
            warn!(topic = key.topic, partition = key.partition, error = %e, "offset not stored");
        }
    }

    /// Whether `record` still belongs to this instance's current assignment.
    pub fn is_current(&self, record: &InputRecord) -> bool {
        self.tracker
            .lock()
            .map(|t| t.generation(&record.key) == Some(record.generation))
            .unwrap_or(false)
    }

    /// Stops fetching from every assigned partition (librdkafka drops what it prefetched and
    /// resumes after the last record handed out). Polling goes on, so the group membership
    /// and rebalances are served while paused.
    pub fn pause(&self) {
        if let Ok(assignment) = self.consumer.assignment() {
            if let Err(e) = self.consumer.pause(&assignment) {
                warn!(error = %e, "pause failed");
            }
        }
    }

    pub fn resume(&self) {
        if let Ok(assignment) = self.consumer.assignment() {
            if let Err(e) = self.consumer.resume(&assignment) {
                warn!(error = %e, "resume failed");
            }
        }
    }

    pub fn in_flight(&self) -> usize {
        self.tracker.lock().map(|t| t.in_flight()).unwrap_or(0)
    }

    /// Commits the stored offsets synchronously (at shutdown).
    pub fn commit(&self) -> Result<(), InputError> {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(())
            | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn unsubscribe(&self) {
        self.consumer.unsubscribe();
    }
}
