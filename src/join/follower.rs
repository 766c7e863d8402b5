//! Follows the whole config topic (every partition, assigned, not group-managed) into the
//! cache. Runs on its own thread: RocksDB writes block, and the consumer is polled there.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::store::{ConfigStore, StoreError};
use crate::domain::config::{self, Rules};
use crate::kafka::{client_config, partition_ids, reader_config, KafkaSettings};
use crate::observe::metrics;

#[derive(Debug, thiserror::Error)]
pub enum FollowerError {
    #[error("config topic: {0}")]
    Kafka(#[from] KafkaError),
    #[error("config topic {0:?} does not exist or has no partitions")]
    NoTopic(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Counters of the follower's work since start.
#[derive(Debug, Default)]
pub struct FollowerStats {
    /// Records read from the topic.
    pub records_read: AtomicU64,
    pub applied: AtomicU64,
    pub refused: AtomicU64,
}

pub struct ConfigFollower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<FollowerStats>,
    /// Becomes `true` once the cache holds everything the topic held when we started.
    pub caught_up: watch::Receiver<bool>,
}

impl ConfigFollower {
    /// Assigns every partition of the config topic from the cache's stored offsets (or the
    /// beginning) and starts following it.
    pub fn start(
        kafka: &KafkaSettings,
        store: ConfigStore,
        rules: Rules,
    ) -> Result<Self, FollowerError> {
        Self::start_waiting(kafka, store, rules, Duration::from_millis(100))
    }

    /// [`ConfigFollower::start`], with how long a read waits when there is nothing new (the
    /// broker's hold of a fetch, and the loop's poll): also about how long a transaction
    /// marker takes to be passed. The processor uses 100 ms; the admin API, which answers
    /// a write once its cache has caught up, 5 ms.
    pub fn start_waiting(
        kafka: &KafkaSettings,
        store: ConfigStore,
        rules: Rules,
        fetch_wait: Duration,
    ) -> Result<Self, FollowerError> {
        let topic = kafka.config_topic.clone();
        let consumer: BaseConsumer = reader_config(kafka, "config-follower")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", fetch_wait.as_millis().to_string())
            .create()?;

        let partitions = partition_ids(&consumer, &topic)?;
        if partitions.is_empty() {
            return Err(FollowerError::NoTopic(topic));
        }
        // Tombstones are kept for `delete.retention.ms` only: a cache that has not followed
        // the topic for longer may have missed a deletion that compaction has since erased,
        // and would bring a deleted webhook back.
        let retention = delete_retention(kafka, &topic);
        let stale = match (store.synced_at()?, retention) {
            (Some(at), Some(retention)) => {
                crate::domain::time::now_ms().saturating_sub(at) > retention
            }
            // Never followed to the end (or by an older version): it cannot be trusted.
            (None, _) => true,
            (Some(_), None) => false,
        };

        // End offsets as of start: the cache is "caught up" once it has read up to them.
        let mut targets = HashMap::new();
        let mut lows = HashMap::new();
        let mut stored = HashMap::new();
        let mut recreated = None;
        for &p in &partitions {
            let (low, high) = consumer.fetch_watermarks(&topic, p, Duration::from_secs(30))?;
            targets.insert(p, high);
            lows.insert(p, low);
            let next = store.next_offset(&topic, p)?;
            if next.is_some_and(|n| n > high) {
                recreated = Some("the topic is behind the cache's offsets (recreated?)");
            }
            if next.is_some_and(|n| n < low) {
                recreated = Some("records the cache has not read were deleted from the topic");
            }
            stored.insert(p, next);
        }
        let resuming = stored.values().any(Option::is_some);
        // A topic deleted and made again has a new id, whatever its offsets say.
        let id = crate::kafka::topic_id(consumer.client(), &topic, Duration::from_secs(30));
        let known = store.topic_id()?;
        if resuming && id.is_some() && known.is_some() && id != known {
            recreated = Some("the topic was recreated (its id changed)");
        }
        if resuming && stale && recreated.is_none() {
            recreated = Some("the cache is older than the topic's delete.retention.ms");
        }
        if let Some(why) = recreated {
            warn!(topic, why, "rebuilding the config cache from the topic");
            store.clear()?;
            stored.values_mut().for_each(|v| *v = None);
        }
        if let Some(id) = &id {
            store.set_topic_id(id)?;
        }
        let resumed = stored.values().any(Option::is_some);

        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            let offset = stored[&p].map_or(Offset::Beginning, Offset::Offset);
            tpl.add_partition_offset(&topic, p, offset)?;
        }
        consumer.assign(&tpl)?;
        info!(
            topic,
            partitions = partitions.len(),
            resumed,
            "following config topic"
        );

        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(FollowerStats::default());
        let (tx, caught_up) = watch::channel(false);
        let state = Following {
            wait: fetch_wait,
            last_sync: None,
            consumer,
            store,
            rules,
            topic,
            targets,
            // Where reading starts: an empty or fully read partition is caught up at once.
            next: stored
                .into_iter()
                .map(|(p, n)| (p, n.unwrap_or_else(|| lows.get(&p).copied().unwrap_or(0))))
                .collect(),
            stop: stop.clone(),
            stats: stats.clone(),
            caught_up: tx,
            resumed,
            started: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("config-follower".into())
            .spawn(move || state.run())
            .map_err(|e| FollowerError::NoTopic(format!("cannot start thread: {e}")))?;
        Ok(ConfigFollower {
            stop,
            thread: Some(thread),
            stats,
            caught_up,
        })
    }

    /// Waits until the cache has caught up (or the follower stopped).
    pub async fn wait_caught_up(&mut self) -> bool {
        self.caught_up.wait_for(|c| *c).await.is_ok()
    }

    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ConfigFollower {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How often a caught-up follower records that the cache is in step, and looks for
/// partitions added to the topic.
const SYNC_EVERY: Duration = Duration::from_secs(30);

/// The topic's `delete.retention.ms`, if the broker says (blocking).
fn delete_retention(kafka: &KafkaSettings, topic: &str) -> Option<u64> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = client_config(kafka).create().ok()?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let results = futures::executor::block_on(
        admin.describe_configs([&ResourceSpecifier::Topic(topic)], &options),
    )
    .ok()?;
    let config = results.into_iter().next()?.ok()?;
    config
        .get("delete.retention.ms")?
        .value
        .as_deref()?
        .parse()
        .ok()
}

struct Following {
    /// How long a poll waits for a record.
    wait: Duration,
    last_sync: Option<Instant>,
    consumer: BaseConsumer,
    store: ConfigStore,
    rules: Rules,
    topic: String,
    targets: HashMap<i32, i64>,
    /// Next offset per partition, as far as this loop has read.
    next: HashMap<i32, i64>,
    stop: Arc<AtomicBool>,
    stats: Arc<FollowerStats>,
    caught_up: watch::Sender<bool>,
    resumed: bool,
    started: Instant,
}

impl Following {
    fn run(mut self) {
        self.check_caught_up();
        while !self.stop.load(Ordering::Relaxed) {
            // A transaction marker passes without a record to return: the position moves
            // when the poll ends.
            match self.consumer.poll(self.wait) {
                None => {}
                Some(Err(e)) => {
                    warn!(topic = self.topic, error = %e, "config topic consumer error")
                }
                Some(Ok(message)) => {
                    let partition = message.partition();
                    let offset = message.offset();
                    let key = message.key().map(String::from_utf8_lossy);
                    if let Err(e) = self.apply(partition, offset, key.as_deref(), message.payload())
                    {
                        // The cache cannot be written: serving stale config silently would
                        // be worse than stopping, so the processor is told to stop.
                        error!(error = %e, "config cache write failed; config follower stops");
                        return;
                    }
                    self.next.insert(partition, offset + 1);
                }
            }
            if let Err(e) = self.pass_markers() {
                error!(error = %e, "config cache write failed; config follower stops");
                return;
            }
            if !*self.caught_up.borrow() {
                self.check_caught_up();
            } else if self.last_sync.is_none_or(|at| at.elapsed() >= SYNC_EVERY) {
                self.last_sync = Some(Instant::now());
                self.follow_new_partitions();
                let now = crate::domain::time::now_ms();
                if let Err(e) = self.store.mark_synced(now) {
                    error!(error = %e, "config cache write failed; config follower stops");
                    return;
                }
            }
        }
        debug!("config follower stopped");
    }

    /// Moves each partition's stored offset past transaction markers the consumer has
    /// passed (they are never delivered as records), so that "applied up to the topic's
    /// end" holds when the last offsets are markers, as after the admin API's writes.
    fn pass_markers(&mut self) -> Result<(), StoreError> {
        let Ok(positions) = self.consumer.position() else {
            return Ok(());
        };
        for e in positions.elements() {
            let (Some(position), Some(&next)) =
                (e.offset().to_raw(), self.next.get(&e.partition()))
            else {
                continue;
            };
            if position > next {
                self.store
                    .apply(&self.topic, e.partition(), position - 1, None)?;
                self.next.insert(e.partition(), position);
            }
        }
        Ok(())
    }

    /// Starts reading partitions added to the topic since the follower started.
    fn follow_new_partitions(&mut self) {
        // Briefly: the check comes round again, and a stop must not wait on a slow broker.
        let Ok(partitions) =
            crate::kafka::partition_ids_within(&self.consumer, &self.topic, Duration::from_secs(2))
        else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        let added: Vec<i32> = partitions
            .into_iter()
            .filter(|p| !self.next.contains_key(p))
            .collect();
        for p in added {
            if tpl
                .add_partition_offset(&self.topic, p, Offset::Beginning)
                .is_ok()
            {
                self.next.insert(p, 0);
            }
        }
        if tpl.count() == 0 {
            return;
        }
        match self.consumer.incremental_assign(&tpl) {
            Ok(()) => info!(
                topic = self.topic,
                added = tpl.count(),
                "following partitions added to the config topic"
            ),
            Err(e) => warn!(topic = self.topic, error = %e, "cannot follow added partitions"),
        }
    }

    fn apply(
        &self,
        partition: i32,
        offset: i64,
        key: Option<&str>,
        value: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        self.stats.records_read.fetch_add(1, Ordering::Relaxed);
        let Some(key) = key else {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            metrics()
                .config_records
                .with_label_values(&["refused"])
                .inc();
            warn!(
                partition,
                offset,
                reason = "record has no key",
                "config record refused"
            );
            return self.store.apply(&self.topic, partition, offset, None);
        };
        match config::validate(key, value, self.rules) {
            Ok(change) => {
                self.stats.applied.fetch_add(1, Ordering::Relaxed);
                let result = if change.record.is_none() {
                    "deleted"
                } else {
                    "applied"
                };
                metrics().config_records.with_label_values(&[result]).inc();
                info!(
                    key,
                    partition,
                    offset,
                    deleted = change.record.is_none(),
                    "config record applied"
                );
                self.store
                    .apply(&self.topic, partition, offset, Some((&change.key, value)))
            }
            Err(reason) => {
                // The last valid value stays in force; only the offset moves on.
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                metrics()
                    .config_records
                    .with_label_values(&["refused"])
                    .inc();
                warn!(key, partition, offset, reason = %reason, "config record refused");
                self.store.apply(&self.topic, partition, offset, None)
            }
        }
    }

    /// Caught up when every partition's position reached its end offset as of start. The
    /// consumer's position is used as well as the last record read, because the last offsets
    /// of a partition may be transaction markers that are never delivered as records.
    fn check_caught_up(&mut self) {
        let positions = self.consumer.position().ok();
        let done = self.targets.iter().all(|(&p, &high)| {
            let read = self.next.get(&p).copied().unwrap_or(0);
            let position = positions
                .as_ref()
                .and_then(|tpl| tpl.find_partition(&self.topic, p))
                .and_then(|e| e.offset().to_raw())
                .unwrap_or(-1);
            read >= high || position >= high
        });
        if done {
            info!(
                topic = self.topic,
                records_read = self.stats.records_read.load(Ordering::Relaxed),
                refused = self.stats.refused.load(Ordering::Relaxed),
                resumed = self.resumed,
                elapsed_ms = self.started.elapsed().as_millis() as u64,
                "config cache caught up"
            );
            let _ = self.caught_up.send(true);
        }
    }
}
