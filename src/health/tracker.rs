//! The health tracker: reads the health signals of the webhooks whose partitions it owns,
//! keeps their state (`domain::health`), and writes, in one transaction per batch, the
//! operational events the batch announces, the changed states (compacted state topic, same
//! partition as the signals) and the signals' offsets. A tick looks at the time and at each
//! webhook's record: failed events announced per window, a webhook disabled or enabled by
//! anyone, and a webhook failing for the whole period disabled (`updatedBy: health`).
//!
//! Runs on a thread of its own (its Kafka calls block). A fault starts it again in
//! process, from the last commit, without touching the processor's loops.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::domain::config::ConfigKey;
use crate::domain::health::{EventType, Health, HealthPolicy, Signal, State};
use crate::domain::operational::OperationalEvent;
use crate::domain::time::now_ms;
use crate::join::disable::{ConfigDisabler, HEALTH};
use crate::join::ConfigStore;
use crate::kafka::{client_config, producer_config, reader_config, KafkaSettings};
use crate::observe::metrics;
use crate::settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error("health tracker: {0}")]
    Kafka(#[from] KafkaError),
    #[error("health tracker: the state topic's partitions {0:?} were not read back within {1} s")]
    Restore(Vec<i32>, u64),
    #[error("health tracker: no group metadata for the transaction")]
    NoGroup,
}

/// What a tracker reads and writes.
#[derive(Debug, Clone)]
pub struct TrackerOptions {
    pub signal_topic: String,
    pub state_topic: String,
    pub events_topic: String,
    pub group: String,
    pub transactional_id: String,
    pub policy: HealthPolicy,
    pub tick: Duration,
}

impl TrackerOptions {
    /// `None` when health tracking is off.
    pub fn from_settings(settings: &Settings) -> Option<Self> {
        Some(TrackerOptions {
            signal_topic: settings.health_signal_topic()?,
            state_topic: settings.health_state_topic(),
            events_topic: settings.health.events_topic.clone(),
            group: format!("{}-health", settings.kafka.group_id),
            transactional_id: format!("{}-health", settings.transactional_id()),
            policy: settings.health.policy(),
            tick: Duration::from_millis(settings.health.tick_ms.max(10)),
        })
    }
}

/// Signals taken into one transaction at most.
const MAX_BATCH: usize = 5_000;
/// How long a batch gathers signals.
const BATCH_WAIT: Duration = Duration::from_millis(200);
/// Transaction calls and reading the state back.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The tracker, running; stops (leaving its group) when dropped or stopped.
pub struct Tracker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Tracker {
    /// Starts the tracker on a thread of its own; its disables go through `disabler` (on
    /// the runtime of the caller).
    pub fn start(
        options: TrackerOptions,
        kafka: KafkaSettings,
        store: ConfigStore,
        disabler: ConfigDisabler,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Handle::current();
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("health-tracker".into())
                .spawn(move || {
                    let _runtime = runtime.enter();
                    let world = World {
                        options,
                        kafka,
                        store,
                        disabler,
                        stop,
                    };
                    world.run();
                })?
        };
        Ok(Tracker {
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.stop();
    }
}

struct World {
    options: TrackerOptions,
    kafka: KafkaSettings,
    store: ConfigStore,
    disabler: ConfigDisabler,
    stop: Arc<AtomicBool>,
}

/// The webhooks of each owned partition, by key.
type Owned = HashMap<i32, HashMap<String, Health>>;

/// What one transaction writes, and the disables to carry out once it committed.
#[derive(Default)]
struct Batch {
    signals: usize,
    events: Vec<OperationalEvent>,
    /// Webhooks whose state changed, by partition and key (serialized once, at commit;
    /// one no longer held is written as a tombstone).
    states: HashSet<(i32, String)>,
    disables: Vec<(ConfigKey, crate::join::Version)>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.signals == 0 && self.events.is_empty() && self.states.is_empty()
    }
}

impl World {
    /// Sessions, one after another: a fault ends one and the next starts from the last
    /// commit, after a backoff.
    fn run(&self) {
        let mut backoff = Duration::from_secs(1);
        while !self.stopping() {
            match self.session() {
                Ok(()) => break,
                Err(e) => {
                    warn!(error = %e, wait_ms = backoff.as_millis() as u64, "health tracker stopped by a fault; starting it again from its last commit");
                    metrics()
                        .recoveries
                        .with_label_values(&["health_tracker"])
                        .inc();
                    let until = Instant::now() + backoff;
                    while Instant::now() < until && !self.stopping() {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        info!("health tracker stopped");
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn session(&self) -> Result<(), TrackerError> {
        let o = &self.options;
        let consumer: BaseConsumer = client_config(&self.kafka)
            .set("group.id", &o.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .create()?;
        consumer.subscribe(&[o.signal_topic.as_str()])?;
        let producer: ThreadedProducer<DefaultProducerContext> = producer_config(&self.kafka)
            .set("transactional.id", &o.transactional_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            // A batch's transaction lasts milliseconds: one left open by an instance that
            // died holds up the state's readers (a new owner among them) only this long.
            .set("transaction.timeout.ms", "10000")
            .create()?;
        producer.init_transactions(CALL_TIMEOUT)?;
        let mut owned: Owned = HashMap::new();
        let mut assigned: Vec<i32> = Vec::new();
        let mut last_tick = Instant::now();
        while !self.stopping() {
            let now_assigned = partitions_of(&consumer.assignment()?, &o.signal_topic);
            if now_assigned != assigned {
                owned.retain(|p, _| now_assigned.contains(p));
                let new: Vec<i32> = now_assigned
                    .iter()
                    .filter(|p| !assigned.contains(p))
                    .copied()
                    .collect();
                owned.extend(restore(&self.kafka, &o.state_topic, &new)?);
                assigned = now_assigned;
                let webhooks: usize = owned.values().map(HashMap::len).sum();
                info!(partitions = ?assigned, webhooks, "health tracker: partitions assigned");
                report(&owned);
            }
            let mut batch = Batch::default();
            self.gather(&consumer, &assigned, &mut owned, &mut batch)?;
            if last_tick.elapsed() >= o.tick {
                last_tick = Instant::now();
                self.tick(&mut owned, &mut batch);
            }
            if batch.is_empty() {
                self.disable(std::mem::take(&mut batch.disables));
                continue;
            }
            // A rebalance under the batch: its work is the new owner's, from the commit.
            if partitions_of(&consumer.assignment()?, &o.signal_topic) != assigned {
                debug!("health tracker: assignment changed under a batch; starting over from the last commit");
                rewind(&consumer, &o.signal_topic)?;
                owned.clear();
                assigned.clear();
                continue;
            }
            if let Err(e) = self.commit(&producer, &consumer, (&assigned, &owned), &batch) {
                let _ = producer.abort_transaction(CALL_TIMEOUT);
                return Err(e);
            }
            report(&owned);
            self.disable(batch.disables);
        }
        Ok(())
    }

    /// Disables the webhooks that failed for the whole period (once per version: the
    /// disabler remembers what it started).
    fn disable(&self, disables: Vec<(ConfigKey, crate::join::Version)>) {
        for (key, version) in disables {
            info!(key = %key, version = %version, "webhook failing for the whole period; disabling it");
            self.disabler.disable_as(key, version, HEALTH);
        }
    }

    /// Reads signals for up to [`BATCH_WAIT`] and takes them in.
    fn gather(
        &self,
        consumer: &BaseConsumer,
        assigned: &[i32],
        owned: &mut Owned,
        batch: &mut Batch,
    ) -> Result<(), TrackerError> {
        let policy = &self.options.policy;
        let until = Instant::now() + BATCH_WAIT;
        while batch.signals < MAX_BATCH {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let message = match consumer.poll(left.min(Duration::from_millis(50))) {
                None if batch.signals > 0 => break,
                None => continue,
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(m)) => m,
            };
            batch.signals += 1;
            let partition = message.partition();
            if !assigned.contains(&partition) {
                continue;
            }
            let Some(signal) = message
                .payload()
                .and_then(|b| serde_json::from_slice::<Signal>(b).ok())
            else {
                warn!(
                    partition,
                    offset = message.offset(),
                    "unreadable health signal; skipped"
                );
                continue;
            };
            let key = signal.key();
            let health = owned
                .entry(partition)
                .or_default()
                .entry(key.clone())
                .or_insert_with(|| Health::new(&signal.ims_org, &signal.sandbox_id));
            for change in health.observe(&signal, policy) {
                batch.events.push(OperationalEvent::of(
                    change.kind,
                    change.at_ms,
                    health,
                    policy,
                    None,
                    None,
                ));
            }
            batch.states.insert((partition, key));
        }
        Ok(())
    }

    /// What time and the webhooks' records decide.
    fn tick(&self, owned: &mut Owned, batch: &mut Batch) {
        let policy = &self.options.policy;
        let now = now_ms();
        for (partition, webhooks) in owned.iter_mut() {
            let mut gone = Vec::new();
            for (key, health) in webhooks.iter_mut() {
                let Ok(config_key) = ConfigKey::parse(key) else {
                    continue;
                };
                let record = match self.store.raw(&config_key) {
                    Ok(record) => record,
                    Err(e) => {
                        warn!(key, error = %e, "config cache unreadable; health not checked");
                        continue;
                    }
                };
                let Some(record) = record else {
                    gone.push(key.clone());
                    continue;
                };
                let fields: Value = serde_json::from_slice(&record.value).unwrap_or_default();
                let enabled = fields["enabled"].as_bool().unwrap_or(true);
                let by = fields["updatedBy"].as_str().map(str::to_owned);
                let mut changed = false;
                if enabled == (health.state == State::Disabled) {
                    health.config(enabled);
                    health.version = Some(record.version.to_string());
                    let kind = if enabled {
                        EventType::Enabled
                    } else {
                        EventType::Disabled
                    };
                    batch.events.push(OperationalEvent::of(
                        kind,
                        now,
                        health,
                        policy,
                        None,
                        by.as_deref(),
                    ));
                    changed = true;
                }
                let (changes, disable) = health.tick(now, policy);
                for change in changes {
                    let exhausted = health.take_exhausted();
                    batch.events.push(OperationalEvent::of(
                        change.kind,
                        change.at_ms,
                        health,
                        policy,
                        exhausted.as_ref(),
                        None,
                    ));
                    changed = true;
                }
                if disable && enabled {
                    batch.disables.push((config_key, record.version));
                }
                if changed {
                    batch.states.insert((*partition, key.clone()));
                }
            }
            for key in gone {
                webhooks.remove(&key);
                batch.states.insert((*partition, key));
            }
        }
    }

    /// Writes the batch and the signals' offsets in one transaction.
    fn commit(
        &self,
        producer: &ThreadedProducer<DefaultProducerContext>,
        consumer: &BaseConsumer,
        (assigned, owned): (&[i32], &Owned),
        batch: &Batch,
    ) -> Result<(), TrackerError> {
        let o = &self.options;
        producer.begin_transaction()?;
        for event in &batch.events {
            let (key, value) = (event.key(), event.to_json());
            send(
                producer,
                BaseRecord::to(&o.events_topic)
                    .key(key.as_str())
                    .payload(value.as_slice()),
            )?;
        }
        for (partition, key) in &batch.states {
            let record = BaseRecord::to(&o.state_topic)
                .key(key.as_str())
                .partition(*partition);
            match owned.get(partition).and_then(|w| w.get(key)) {
                Some(health) => {
                    let value = serialized(health);
                    send(producer, record.payload(value.as_slice()))?
                }
                None => send(producer, record)?,
            }
        }
        let mut offsets = TopicPartitionList::new();
        for element in consumer.position()?.elements_for_topic(&o.signal_topic) {
            if assigned.contains(&element.partition()) && element.offset() != Offset::Invalid {
                offsets.add_partition_offset(
                    &o.signal_topic,
                    element.partition(),
                    element.offset(),
                )?;
            }
        }
        if offsets.count() > 0 {
            let group = consumer.group_metadata().ok_or(TrackerError::NoGroup)?;
            producer.send_offsets_to_transaction(&offsets, &group, CALL_TIMEOUT)?;
        }
        producer.commit_transaction(CALL_TIMEOUT)?;
        if !batch.events.is_empty() {
            debug!(
                events = batch.events.len(),
                states = batch.states.len(),
                "health tracker: committed"
            );
        }
        for event in &batch.events {
            metrics()
                .operational_events
                .with_label_values(&[event.kind.as_str()])
                .inc();
        }
        Ok(())
    }
}

fn serialized(health: &Health) -> Vec<u8> {
    serde_json::to_vec(health).unwrap_or_default()
}

/// Queues one record, waiting while the producer's queue is full.
fn send<'a>(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut record: BaseRecord<'a, str, [u8]>,
) -> Result<(), TrackerError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// The partitions of `topic` in `list`, sorted.
fn partitions_of(list: &TopicPartitionList, topic: &str) -> Vec<i32> {
    let mut partitions: Vec<i32> = list
        .elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect();
    partitions.sort_unstable();
    partitions
}

/// Moves the consumer back to its group's committed offsets (the beginning where none).
fn rewind(consumer: &BaseConsumer, topic: &str) -> Result<(), TrackerError> {
    let committed = consumer.committed(CALL_TIMEOUT)?;
    for element in committed.elements_for_topic(topic) {
        let offset = match element.offset() {
            Offset::Offset(n) => Offset::Offset(n),
            _ => Offset::Beginning,
        };
        consumer.seek(topic, element.partition(), offset, CALL_TIMEOUT)?;
    }
    Ok(())
}

/// Reads the state of `partitions` back from the compacted state topic (committed
/// transactions only, to its end).
fn restore(kafka: &KafkaSettings, topic: &str, partitions: &[i32]) -> Result<Owned, TrackerError> {
    let mut owned: Owned = partitions.iter().map(|p| (*p, HashMap::new())).collect();
    if partitions.is_empty() {
        return Ok(owned);
    }
    let reader: BaseConsumer = reader_config(kafka, "health-restore")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let mut list = TopicPartitionList::new();
    for p in partitions {
        list.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    reader.assign(&list)?;
    let mut open: HashSet<i32> = partitions.iter().copied().collect();
    let deadline = Instant::now() + RESTORE_TIMEOUT;
    while !open.is_empty() {
        if Instant::now() > deadline {
            let mut left: Vec<i32> = open.into_iter().collect();
            left.sort_unstable();
            return Err(TrackerError::Restore(left, RESTORE_TIMEOUT.as_secs()));
        }
        match reader.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(m)) => {
                let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                    continue;
                };
                let webhooks = owned.entry(m.partition()).or_default();
                match m.payload().map(serde_json::from_slice::<Health>) {
                    None => {
                        webhooks.remove(key);
                    }
                    Some(Ok(health)) => {
                        webhooks.insert(key.to_owned(), health);
                    }
                    Some(Err(e)) => {
                        warn!(key, error = %e, "unreadable health state; starting that webhook afresh")
                    }
                }
            }
        }
    }
    Ok(owned)
}

/// Sets the per-state gauge from the webhooks this instance tracks (each webhook is
/// tracked by one instance: the sum over instances is the group's).
fn report(owned: &Owned) {
    let mut counts = [0i64; 3];
    for health in owned.values().flat_map(HashMap::values) {
        let i = State::ALL
            .iter()
            .position(|s| *s == health.state)
            .unwrap_or(0);
        counts[i] += 1;
    }
    for (state, n) in State::ALL.iter().zip(counts) {
        metrics()
            .webhooks_by_health
            .with_label_values(&[state.as_str()])
            .set(n);
    }
}
