//! Queueing chosen events on the redelivery topic, under a replay id.
//!
//! Records are acknowledged in batches; exactly once, each batch is a transaction, so the
//! processor (reading `read_committed`) sees a batch whole or not at all. A replay run again
//! with its id skips what its earlier runs queued ([`already_queued`]).

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use serde_json::Value;

use super::selection::{read_plan, reader, scan, whole_topic, Plan, Read, Scanner};
use super::{ReplayError, Reporter, REPLAY_ID_HEADER};
use crate::domain::outcome::Replay;
use crate::domain::replay::{Filters, ReplayRecord};
use crate::kafka::internal_record_limit;
use crate::settings::{Guarantee, Settings};

/// How long a batch's transaction may take.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Records sent before waiting for their acknowledgements.
const BATCH: usize = 1_000;

/// What a replay queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Queued {
    pub read: Read,
    /// Queued now.
    pub queued: u64,
    /// Already queued by an earlier run of the same replay id.
    pub skipped: u64,
}

impl Scanner<'_> {
    /// Reads the planned events and queues those this replay id has not queued yet.
    /// `resume`: look for what earlier runs of this id queued (a new id has queued nothing).
    pub fn queue(
        &self,
        filters: &Filters,
        plan: &Plan,
        replay: &Replay,
        resume: bool,
        progress: &mut dyn Reporter,
    ) -> Result<Queued, ReplayError> {
        let (settings, consumer) = (self.settings, &self.consumer);
        let topic = settings.replay_topic();
        let done = if resume {
            already_queued(settings, &topic, &replay.id)?
        } else {
            HashSet::new()
        };
        let mut queue = Queue::new(settings, topic, &replay.id)?;
        let (mut queued, mut skipped) = (0u64, 0u64);
        let read = read_plan(
            settings,
            consumer,
            filters,
            plan,
            &mut |chosen| {
                let key = (
                    chosen.source.topic.clone(),
                    chosen.source.partition,
                    chosen.source.offset,
                );
                if done.contains(&key) {
                    skipped += 1;
                    return Ok(false);
                }
                queue.push(&ReplayRecord {
                    kind: "replay".into(),
                    replay: replay.clone(),
                    event: chosen.event,
                    source: chosen.source,
                })?;
                queued += 1;
                Ok(true)
            },
            progress,
        )?;
        queue.settle()?;
        Ok(Queued {
            read,
            queued,
            skipped,
        })
    }
}

/// The sources this replay id has already queued (its earlier runs).
fn already_queued(
    settings: &Settings,
    topic: &str,
    id: &str,
) -> Result<HashSet<(String, i32, i64)>, ReplayError> {
    let consumer = reader(settings, "ledger")?;
    let segments = whole_topic(&consumer, topic)?;
    let mut done = HashSet::new();
    scan(&consumer, &segments, |m| {
        let ours = m.headers().is_some_and(|h| {
            h.iter()
                .any(|h| h.key == REPLAY_ID_HEADER && h.value == Some(id.as_bytes()))
        });
        if !ours {
            return;
        }
        if let Some(Ok(record)) = m.payload().map(serde_json::from_slice::<ReplayRecord>) {
            done.insert((
                record.source.topic,
                record.source.partition,
                record.source.offset,
            ));
        }
    })?;
    Ok(done)
}

/// The redelivery topic's producer, waiting for acknowledgements in batches.
struct Queue {
    producer: FutureProducer,
    topic: String,
    pending: Vec<DeliveryFuture>,
    transactional: bool,
}

impl Queue {
    fn new(settings: &Settings, topic: String, replay_id: &str) -> Result<Self, ReplayError> {
        let limit = internal_record_limit(settings.delivery.max_event_bytes);
        let transactional = settings.kafka.processing_guarantee == Guarantee::ExactlyOnce;
        let mut config = crate::kafka::producer_config(&settings.kafka);
        config
            .set("message.max.bytes", limit.to_string())
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "20")
            .set("compression.type", "lz4");
        if transactional {
            // One id per replay: nothing else writes with it.
            let id = format!("{}-replay-cmd-{replay_id}", settings.kafka.group_id);
            config.set("transactional.id", id).set(
                "transaction.timeout.ms",
                TRANSACTION_TIMEOUT.as_millis().to_string(),
            );
        }
        let producer: FutureProducer = config.create()?;
        if transactional {
            producer.init_transactions(TRANSACTION_TIMEOUT)?;
            producer.begin_transaction()?;
        }
        Ok(Queue {
            producer,
            topic,
            pending: Vec::new(),
            transactional,
        })
    }

    fn push(&mut self, record: &ReplayRecord) -> Result<(), ReplayError> {
        let value = record.to_json();
        let key = record
            .event
            .get("_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let headers = OwnedHeaders::new().insert(Header {
            key: REPLAY_ID_HEADER,
            value: Some(record.replay.id.as_str()),
        });
        let topic = self.topic.clone();
        let mut future_record = FutureRecord::to(&topic)
            .key(&key)
            .payload(&value)
            .headers(headers);
        loop {
            match self.producer.send_result(future_record) {
                Ok(delivery) => {
                    self.pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(_), back)) => {
                    // The local queue is full: wait for what is in flight, then retry.
                    future_record = back;
                    self.settle()?;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        if self.pending.len() >= BATCH {
            self.settle()?;
        }
        Ok(())
    }

    /// Waits until every record sent so far is acknowledged (exactly once: and commits
    /// them).
    fn settle(&mut self) -> Result<(), ReplayError> {
        let pending = std::mem::take(&mut self.pending);
        for result in futures::executor::block_on(futures::future::join_all(pending)) {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e.into()),
                Err(_) => return Err(ReplayError::Refused("the producer was dropped".into())),
            }
        }
        if self.transactional {
            self.producer.commit_transaction(TRANSACTION_TIMEOUT)?;
            self.producer.begin_transaction()?;
        }
        Ok(())
    }
}
