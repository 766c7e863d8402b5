//! The notifier: reads the operational-events topic as the consumer group
//! `{group_id}-notify` (each event once across the group, `read_committed`), hands each
//! event whose org has a notification endpoint to that org's lane, and commits, per
//! partition, up to the first event not yet ended: at least once, a restart sends again
//! what was under way (same `webhook-id`).
//!
//! Apart from the feedback pipeline in every way that matters to it: its own consumer,
//! HTTP client pools and tasks, a bounded queue per org and a cap on its requests under
//! way. A fault starts it again from its last commit, without touching the pipeline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::lane::{self, Job, Shared};
use crate::delivery::worker::{auth_from_settings, senders_from_settings};
use crate::delivery::DelivererError;
use crate::domain::config::ConfigKey;
use crate::domain::notification::Completions;
use crate::domain::operational::OperationalEvent;
use crate::join::ConfigStore;
use crate::kafka::{client_config, KafkaSettings};
use crate::observe::metrics::metrics;
use crate::settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notifier: {0}")]
    Kafka(#[from] KafkaError),
    #[error("notifier: {0}")]
    Client(#[from] DelivererError),
}

/// What the notifier reads, and its bounds.
#[derive(Debug, Clone)]
pub struct NotifierOptions {
    pub topic: String,
    pub group: String,
    pub queue_per_org: usize,
    pub concurrency: usize,
}

impl NotifierOptions {
    /// `None` when health tracking or notifications are off.
    pub fn from_settings(settings: &Settings) -> Option<Self> {
        let h = &settings.health;
        (h.enabled && h.notify).then(|| NotifierOptions {
            topic: h.events_topic.clone(),
            group: format!("{}-notify", settings.kafka.group_id),
            queue_per_org: h.notify_queue_per_org.max(1),
            concurrency: h.notify_concurrency.max(1),
        })
    }
}

/// How often offsets are committed and idle lanes let go.
const COMMIT_EVERY: Duration = Duration::from_secs(1);
/// A lane with nothing queued for this long is let go (its task ends).
const LANE_IDLE: Duration = Duration::from_secs(600);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The notifier, running; stopped when dropped.
pub struct Notifier {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Notifier {
    /// Starts the notifier on the current runtime.
    pub fn start(
        options: NotifierOptions,
        settings: &Settings,
        store: ConfigStore,
    ) -> Result<Self, NotifyError> {
        // One connection lane per host is plenty for a few notifications.
        let shared = Arc::new(Shared {
            store,
            senders: senders_from_settings(settings, 1)?.unmetered(),
            auth: auth_from_settings(settings)?,
            policy: settings.retry_policy(),
            permits: Semaphore::new(options.concurrency),
        });
        let (stop, stopped) = watch::channel(false);
        let kafka = settings.kafka.clone();
        let task = tokio::spawn(run(options, kafka, shared, stopped));
        Ok(Notifier {
            stop,
            task: Some(task),
        })
    }

    /// Stops it, committing what has ended.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Sessions, one after another: a fault ends one, the next starts from the last commit.
async fn run(
    options: NotifierOptions,
    kafka: KafkaSettings,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_secs(1);
    while !*stopped.borrow() {
        match session(&options, &kafka, &shared, &mut stopped).await {
            Ok(()) => break,
            Err(e) => {
                warn!(error = %e, wait_ms = backoff.as_millis() as u64, "notifier stopped by a fault; starting it again from its last commit");
                metrics().recoveries.with_label_values(&["notifier"]).inc();
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stopped.changed() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    info!("notifier stopped");
}

/// One org's lane: its queue, when it was last given a job, and the offsets given to it and
/// not ended (queued or being sent: a lane still retrying is never let go, so an org never
/// has two lanes sending at once).
struct Lane {
    queue: mpsc::Sender<Job>,
    used: Instant,
    pending: std::collections::HashSet<(i32, i64)>,
}

/// The partitions' progress and the lanes of one session.
struct Session<'a> {
    options: &'a NotifierOptions,
    shared: &'a Arc<Shared>,
    completions: HashMap<i32, Completions>,
    committed: HashMap<i32, i64>,
    lanes: HashMap<String, Lane>,
    tasks: JoinSet<()>,
    done: mpsc::UnboundedSender<(String, i32, i64)>,
}

async fn session(
    options: &NotifierOptions,
    kafka: &KafkaSettings,
    shared: &Arc<Shared>,
    stopped: &mut watch::Receiver<bool>,
) -> Result<(), NotifyError> {
    let consumer: StreamConsumer = client_config(kafka)
        .set("group.id", &options.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()?;
    consumer.subscribe(&[options.topic.as_str()])?;
    let (done, mut ended) = mpsc::unbounded_channel();
    let mut s = Session {
        options,
        shared,
        completions: HashMap::new(),
        committed: HashMap::new(),
        lanes: HashMap::new(),
        tasks: JoinSet::new(),
        done,
    };
    let mut tick = tokio::time::interval(COMMIT_EVERY);
    let mut errors = 0u32;
    loop {
        tokio::select! {
            _ = stopped.changed() => {
                while let Ok((org, partition, offset)) = ended.try_recv() {
                    s.lane_ended(&org, partition, offset);
                }
                s.commit(&consumer, CommitMode::Sync);
                return Ok(());
            }
            message = consumer.recv() => match message {
                Ok(m) => {
                    errors = 0;
                    let event = m
                        .payload()
                        .and_then(|p| serde_json::from_slice::<OperationalEvent>(p).ok());
                    s.read(m.partition(), m.offset(), event);
                }
                Err(e) => {
                    // librdkafka reconnects by itself; a run of errors starts a new session.
                    errors += 1;
                    if errors >= 30 {
                        return Err(e.into());
                    }
                    debug!(error = %e, "notifier: consumer error");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
            Some((org, partition, offset)) = ended.recv() => s.lane_ended(&org, partition, offset),
            _ = tick.tick() => {
                s.commit(&consumer, CommitMode::Async);
                s.let_go_of_idle_lanes();
            }
        }
    }
}

impl Session<'_> {
    /// An operational event read at `partition`/`offset` (`None`: not one).
    fn read(&mut self, partition: i32, offset: i64, event: Option<OperationalEvent>) {
        let progress = self.completions.entry(partition).or_default();
        progress.seen(offset);
        let Some(event) = event else {
            warn!(
                partition,
                offset, "notifier: a record that is not an operational event; passed over"
            );
            progress.done(offset);
            return;
        };
        // Most orgs have no endpoint: no lane for them.
        let has_endpoint = self
            .shared
            .store
            .raw(&ConfigKey::notification(&event.ims_org))
            .ok()
            .flatten()
            .is_some();
        if !has_endpoint {
            progress.done(offset);
            return;
        }
        let org = event.ims_org.clone();
        let job = Job {
            partition,
            offset,
            event,
        };
        match self.lane(&org).try_send(job) {
            Ok(()) => self.given(&org, partition, offset),
            Err(mpsc::error::TrySendError::Full(job)) => {
                metrics()
                    .notifications
                    .with_label_values(&["dropped"])
                    .inc();
                warn!(org = %org, id = %job.event.id, most = self.options.queue_per_org, "notification dropped: the org's queue is full (its endpoint is failing or slow)");
                self.ended(partition, offset);
            }
            Err(mpsc::error::TrySendError::Closed(job)) => {
                // Its task ended: a new lane takes the job.
                self.lanes.remove(&org);
                match self.lane(&org).try_send(job) {
                    Ok(()) => self.given(&org, partition, offset),
                    Err(_) => self.ended(partition, offset),
                }
            }
        }
    }

    fn given(&mut self, org: &str, partition: i32, offset: i64) {
        if let Some(lane) = self.lanes.get_mut(org) {
            lane.pending.insert((partition, offset));
        }
    }

    /// The lane of `org`, started when it has none.
    fn lane(&mut self, org: &str) -> mpsc::Sender<Job> {
        if let Some(lane) = self.lanes.get_mut(org) {
            lane.used = Instant::now();
            return lane.queue.clone();
        }
        let (queue, jobs) = mpsc::channel(self.options.queue_per_org);
        self.tasks.spawn(lane::run(
            org.to_owned(),
            jobs,
            self.shared.clone(),
            self.done.clone(),
        ));
        self.lanes.insert(
            org.to_owned(),
            Lane {
                queue: queue.clone(),
                used: Instant::now(),
                pending: Default::default(),
            },
        );
        queue
    }

    fn ended(&mut self, partition: i32, offset: i64) {
        if let Some(progress) = self.completions.get_mut(&partition) {
            progress.done(offset);
        }
    }

    /// A job of `org`'s lane ended.
    fn lane_ended(&mut self, org: &str, partition: i32, offset: i64) {
        if let Some(lane) = self.lanes.get_mut(org) {
            lane.pending.remove(&(partition, offset));
        }
        self.ended(partition, offset);
    }

    /// Commits, for the partitions this member owns, up to the first event not ended.
    fn commit(&mut self, consumer: &StreamConsumer, mode: CommitMode) {
        let owned = match consumer.assignment() {
            Ok(owned) => owned,
            Err(_) => return,
        };
        let mut list = TopicPartitionList::new();
        let mut moved = Vec::new();
        for (partition, progress) in &self.completions {
            let Some(next) = progress.committable() else {
                continue;
            };
            let is_owned = owned
                .find_partition(&self.options.topic, *partition)
                .is_some();
            if !is_owned || self.committed.get(partition) == Some(&next) {
                continue;
            }
            if list
                .add_partition_offset(&self.options.topic, *partition, Offset::Offset(next))
                .is_ok()
            {
                moved.push((*partition, next));
            }
        }
        if moved.is_empty() {
            return;
        }
        match consumer.commit(&list, mode) {
            Ok(()) => self.committed.extend(moved),
            Err(e) => debug!(error = %e, "notifier: commit failed; trying again"),
        }
    }

    fn let_go_of_idle_lanes(&mut self) {
        let now = Instant::now();
        self.lanes.retain(|_, lane| {
            !(lane.pending.is_empty() && now.duration_since(lane.used) > LANE_IDLE)
        });
        // Reap the tasks that ended.
        while self.tasks.try_join_next().is_some() {}
    }
}
