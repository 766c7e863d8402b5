//! The delivery log: the API follows the outcome topic into its own RocksDB index, one entry
//! per outcome under its webhook (org + sandbox), newest first, kept for
//! `admin.delivery_retention_days` and at most `admin.deliveries_per_webhook` entries per
//! webhook (pruned every few minutes).
//!
//! Keys: `d/{org}/{sandbox}/{u64::MAX - completed ms, hex}/{partition}-{offset}` → the
//! outcome's JSON, so a prefix scan is newest first; `e/{org}/{sandbox}/{eventId}` → the
//! `d/` key of the event's newest outcome (what a redeliver looks up); `o/{partition}` → the
//! next offset to read of each outcome-topic partition, written in the same batch;
//! `h/{org}/{sandbox}/{hour, hex}` → two big-endian u64, the delivered and failed outcomes
//! completed in that hour (what the inventory's failure rate of the last 24 h sums).

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use rocksdb::{Options, WriteBatch, DB};
use serde_json::Value;
use tracing::{info, warn};

use super::health_log::{EVENT_OFFSETS, STATE_OFFSETS};
use crate::domain::outcome::Source;
use crate::domain::time::parse_rfc3339;
use crate::domain::time::unix_ms;
use crate::health::HealthTopics;
use crate::kafka::{partition_ids, reader_config, KafkaSettings};
use crate::settings::AdminSettings;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("delivery log: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("outcome topic: {0}")]
    Kafka(#[from] KafkaError),
    #[error("delivery log thread: {0}")]
    Thread(String),
}

/// The index.
#[derive(Clone)]
pub struct DeliveryLog {
    db: Arc<DB>,
}

/// What the log keeps: outcomes younger than `age`, at most `per_webhook` of them per webhook.
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    pub age: Duration,
    pub per_webhook: usize,
}

impl Keep {
    pub fn from_settings(admin: &AdminSettings) -> Self {
        Keep {
            age: Duration::from_secs(admin.delivery_retention_days.max(1) * 86_400),
            per_webhook: admin.deliveries_per_webhook.max(1),
        }
    }
}

/// What a query of the log asks for.
#[derive(Debug, Default, Clone)]
pub struct LogQuery {
    pub matching: Matching,
    /// Completed at or after / before (Unix ms).
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    /// The key the previous page ended at.
    pub after: Option<String>,
    pub limit: usize,
}

/// The webhook an outcome belongs to, and when it completed (Unix ms).
pub fn placed(outcome: &Value) -> Option<(String, String, u64)> {
    let org = outcome.get("imsOrg")?.as_str()?;
    let sandbox = outcome.get("sandboxId")?.as_str()?;
    let at = parse_rfc3339(outcome.get("completedAt")?.as_str()?)?;
    Some((org.to_owned(), sandbox.to_owned(), unix_ms(at)))
}

fn prefix(org: &str, sandbox: &str) -> String {
    format!("d/{org}/{sandbox}/")
}

fn event_key(org: &str, sandbox: &str, event_id: &str) -> String {
    format!("e/{org}/{sandbox}/{event_id}")
}

fn entry_key(org: &str, sandbox: &str, at_ms: u64, partition: i32, offset: i64) -> String {
    format!(
        "{}{:016x}/{partition}-{offset}",
        prefix(org, sandbox),
        u64::MAX - at_ms
    )
}

const HOUR_MS: u64 = 3_600_000;

/// Hour counters are kept this many hours.
const HOURS_KEPT: u64 = 48;

fn hour_key(org: &str, sandbox: &str, hour: u64) -> String {
    format!("h/{org}/{sandbox}/{hour:016x}")
}

fn counts_of(value: &[u8]) -> (u64, u64) {
    let word = |i: usize| {
        value
            .get(i..i + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_be_bytes)
    };
    (word(0), word(8))
}

/// Delivered and failed outcomes of a span of time.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub delivered: u64,
    pub failed: u64,
}

impl Tally {
    /// Failed outcomes as a share of delivered and failed, in percent.
    pub fn failure_percent(&self) -> Option<f64> {
        let total = self.delivered + self.failed;
        (total > 0).then(|| self.failed as f64 * 100.0 / total as f64)
    }
}

fn at_of(key: &str, prefix_len: usize) -> Option<u64> {
    let hex = key.get(prefix_len..prefix_len + 16)?;
    u64::from_str_radix(hex, 16).ok().map(|inv| u64::MAX - inv)
}

/// The values a listed outcome has: its status, channel and feedback status, each any
/// where `None`.
#[derive(Debug, Default, Clone)]
pub struct Matching {
    pub status: Option<String>,
    pub channel: Option<String>,
    pub feedback_status: Option<String>,
}

impl Matching {
    pub fn accepts(&self, outcome: &Value) -> bool {
        let is = |field: &str, wanted: &Option<String>| {
            wanted
                .as_deref()
                .is_none_or(|w| outcome.get(field).and_then(Value::as_str) == Some(w))
        };
        is("status", &self.status)
            && is("channel", &self.channel)
            && is("feedbackStatus", &self.feedback_status)
    }
}

impl DeliveryLog {
    pub fn open(path: &Path) -> Result<Self, LogError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        options.set_keep_log_file_num(2);
        Ok(DeliveryLog {
            db: Arc::new(DB::open(&options, path)?),
        })
    }

    pub(super) fn db(&self) -> &DB {
        &self.db
    }

    fn next_offset_at(&self, key: &str) -> Result<Option<i64>, LogError> {
        Ok(self.db.get(key)?.and_then(|v| {
            let bytes: [u8; 8] = v.as_slice().try_into().ok()?;
            Some(i64::from_be_bytes(bytes))
        }))
    }

    /// Indexes one outcome-topic record (or only moves the offset past one that names no
    /// webhook).
    pub fn apply(&self, partition: i32, offset: i64, value: &[u8]) -> Result<(), LogError> {
        let mut batch = WriteBatch::default();
        let outcome = serde_json::from_slice::<Value>(value).ok();
        if let Some((org, sandbox, at)) = outcome.as_ref().and_then(placed) {
            let entry = entry_key(&org, &sandbox, at, partition, offset);
            // Outcomes of one event share a partition (keyed by event id): the last applied
            // is the newest.
            if let Some(id) = outcome.as_ref().and_then(|o| o["eventId"].as_str()) {
                batch.put(event_key(&org, &sandbox, id), &entry);
            }
            batch.put(entry, value);
            let status = outcome.as_ref().and_then(|o| o["status"].as_str());
            if let Some(failed) = status.and_then(|s| match s {
                "delivered" => Some(false),
                "failed" => Some(true),
                _ => None,
            }) {
                // One follower thread applies records one at a time: read, add, write.
                let key = hour_key(&org, &sandbox, at / HOUR_MS);
                let (mut delivered, mut failures) = self.hour(&key)?;
                if failed {
                    failures += 1;
                } else {
                    delivered += 1;
                }
                let mut counts = delivered.to_be_bytes().to_vec();
                counts.extend_from_slice(&failures.to_be_bytes());
                batch.put(key, counts);
            }
        }
        batch.put(format!("o/{partition}"), (offset + 1).to_be_bytes());
        self.db.write(batch)?;
        Ok(())
    }

    fn hour(&self, key: &str) -> Result<(u64, u64), LogError> {
        Ok(self.db.get(key)?.map_or((0, 0), |v| counts_of(&v)))
    }

    /// Delivered and failed outcomes of a webhook completed in the 24 hours up to `now_ms`
    /// (whole hours: the current one and the 23 before it).
    pub fn last_24h(&self, org: &str, sandbox: &str, now_ms: u64) -> Result<Tally, LogError> {
        let now_hour = now_ms / HOUR_MS;
        let start = hour_key(org, sandbox, now_hour.saturating_sub(23));
        let end = hour_key(org, sandbox, now_hour);
        let mut tally = Tally::default();
        let iter = self.db.iterator(rocksdb::IteratorMode::From(
            start.as_bytes(),
            rocksdb::Direction::Forward,
        ));
        for item in iter {
            let (key, value) = item?;
            if key.as_ref() > end.as_bytes() {
                break;
            }
            let (delivered, failed) = counts_of(&value);
            tally.delivered += delivered;
            tally.failed += failed;
        }
        Ok(tally)
    }

    /// A webhook's outcomes, newest first, filtered; and the key to continue after.
    ///
    /// A window's end is sought, not scanned to. A page reads at most [`MAX_SCANNED`]
    /// entries: a filter that matches little may answer fewer items than asked, with the
    /// cursor to read on from, so no query holds the API for long.
    pub fn query(
        &self,
        org: &str,
        sandbox: &str,
        q: &LogQuery,
    ) -> Result<(Vec<Value>, Option<String>), LogError> {
        self.query_reading(org, sandbox, q, MAX_SCANNED)
    }

    fn query_reading(
        &self,
        org: &str,
        sandbox: &str,
        q: &LogQuery,
        max_scanned: usize,
    ) -> Result<(Vec<Value>, Option<String>), LogError> {
        let prefix = prefix(org, sandbox);
        let mut start = q.after.clone().unwrap_or_else(|| prefix.clone());
        if let Some(to) = q.to_ms {
            // Newer than `to` sorts first: start at the newest entry before it.
            let seek = format!("{prefix}{:016x}", u64::MAX - to.saturating_sub(1));
            if seek > start {
                start = seek;
            }
        }
        let mut items = Vec::new();
        let mut scanned = 0usize;
        // The last entry read: a page ends after it, and the next starts past it.
        let mut last: Option<String> = None;
        let iter = self.db.iterator(rocksdb::IteratorMode::From(
            start.as_bytes(),
            rocksdb::Direction::Forward,
        ));
        for item in iter {
            let (key, value) = item?;
            let Ok(key) = std::str::from_utf8(&key) else {
                continue;
            };
            if !key.starts_with(&prefix) {
                break;
            }
            if q.after.as_deref() == Some(key) {
                continue;
            }
            let Some(at) = at_of(key, prefix.len()) else {
                continue;
            };
            if q.to_ms.is_some_and(|to| at >= to) {
                continue;
            }
            if q.from_ms.is_some_and(|from| at < from) {
                break; // newest first: everything further is older
            }
            if items.len() == q.limit || scanned == max_scanned {
                return Ok((items, last));
            }
            scanned += 1;
            last = Some(key.to_owned());
            let Ok(outcome) = serde_json::from_slice::<Value>(&value) else {
                continue;
            };
            if q.matching.accepts(&outcome) {
                items.push(outcome);
            }
        }
        Ok((items, None))
    }

    /// The input records of a webhook's events whose newest outcome completed in
    /// `from_ms..to_ms` is one `selected` accepts, newest first: what a window redelivery
    /// queues. Reads only this webhook's entries of the window (at most what the log keeps
    /// of it), reporting each entry read to `read`.
    pub fn redeliverable(
        &self,
        org: &str,
        sandbox: &str,
        (from_ms, to_ms): (u64, u64),
        selected: &dyn Fn(&Value) -> bool,
        read: &mut dyn FnMut(u64, u64),
    ) -> Result<Vec<Source>, LogError> {
        let prefix = prefix(org, sandbox);
        let start = format!("{prefix}{:016x}", u64::MAX - to_ms.saturating_sub(1));
        let iter = self.db.iterator(rocksdb::IteratorMode::From(
            start.as_bytes(),
            rocksdb::Direction::Forward,
        ));
        let mut seen = HashSet::new();
        let mut chosen = Vec::new();
        let mut scanned = 0u64;
        for item in iter {
            let (key, value) = item?;
            let Some(at) = std::str::from_utf8(&key)
                .ok()
                .filter(|k| k.starts_with(&prefix))
                .and_then(|k| at_of(k, prefix.len()))
            else {
                break;
            };
            if at < from_ms {
                break; // newest first: everything further is older
            }
            scanned += 1;
            let Ok(outcome) = serde_json::from_slice::<Value>(&value) else {
                continue;
            };
            let Ok(source) = serde_json::from_value::<Source>(outcome["source"].clone()) else {
                continue;
            };
            // The newest outcome of an event decides: one that failed and was delivered
            // since is not redelivered.
            let id = (source.topic.clone(), source.partition, source.offset);
            if seen.insert(id) && selected(&outcome) {
                chosen.push(source);
            }
            read(scanned, chosen.len() as u64);
        }
        Ok(chosen)
    }

    /// The newest outcome of an event of a webhook, if the log still holds it.
    pub fn latest_of(
        &self,
        org: &str,
        sandbox: &str,
        event_id: &str,
    ) -> Result<Option<Value>, LogError> {
        let Some(entry) = self.db.get(event_key(org, sandbox, event_id))? else {
            return Ok(None);
        };
        Ok(self
            .db
            .get(entry)?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// The entries whose key starts with `prefix`, in key order (keys that are not text
    /// are passed over).
    fn under<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = Result<(String, Box<[u8]>), rocksdb::Error>> + 'a {
        self.db
            .prefix_iterator(prefix.as_bytes())
            .filter_map(|item| match item {
                Ok((key, value)) => String::from_utf8(key.into_vec())
                    .ok()
                    .map(|k| Ok((k, value))),
                Err(e) => Some(Err(e)),
            })
            // An error is passed on, for the caller to stop at.
            .take_while(move |item| match item {
                Ok((key, _)) => key.starts_with(prefix),
                Err(_) => true,
            })
    }

    /// Deletes the entries the log no longer keeps.
    pub fn prune(&self, keep: Keep, now: SystemTime) -> Result<usize, LogError> {
        let oldest = unix_ms(now).saturating_sub(keep.age.as_millis() as u64);
        let mut batch = WriteBatch::default();
        let mut removed = 0;
        let mut current = String::new();
        let mut kept = 0usize;
        for item in self.under("d/") {
            let (key, value) = item?;
            let key = key.as_str();
            // `d/{org}/{sandbox}/`: the first three segments.
            let webhook: String = key.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
            if webhook != current {
                current = webhook;
                kept = 0;
            }
            let at = at_of(key, current.len() + 1).unwrap_or(0);
            if kept >= keep.per_webhook || at < oldest {
                batch.delete(key);
                removed += 1;
                // The event's pointer goes with its newest outcome.
                let event = serde_json::from_slice::<Value>(&value).ok();
                if let Some(id) = event.as_ref().and_then(|o| o["eventId"].as_str()) {
                    let pointer = format!("e/{}/{id}", &current[2..]);
                    if self.db.get(&pointer)?.as_deref() == Some(key.as_bytes()) {
                        batch.delete(pointer);
                    }
                }
            } else {
                kept += 1;
            }
        }
        // Hour counters past what the failure rate reads.
        let oldest_hour = (unix_ms(now) / HOUR_MS).saturating_sub(HOURS_KEPT);
        for item in self.under("h/") {
            let (key, _) = item?;
            let key = key.as_str();
            let hour = key
                .rsplit('/')
                .next()
                .and_then(|h| u64::from_str_radix(h, 16).ok());
            if hour.is_some_and(|h| h < oldest_hour) {
                batch.delete(key);
            }
        }
        self.db.write(batch)?;
        Ok(removed)
    }
}

/// Follows the outcome topic into the log on its own thread, and prunes it.
pub struct LogFollower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LogFollower {
    /// Follows the outcome topic and, with `health`, the health state and operational-events
    /// topics.
    pub fn start(
        kafka: &KafkaSettings,
        log: DeliveryLog,
        keep: Keep,
        health: Option<HealthTopics>,
    ) -> Result<Self, LogError> {
        let topic = kafka.outcome_topic.clone();
        let consumer: BaseConsumer = reader_config(kafka, "admin-delivery-log")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .create()?;
        let since = unix_ms(SystemTime::now()).saturating_sub(keep.age.as_millis() as u64) as i64;
        let mut tpl = TopicPartitionList::new();
        // Partitions the log has not read yet start with the retention window, not the
        // whole topic: looked up together, once.
        let mut by_time = TopicPartitionList::new();
        let mut resume = |topic: &str, offsets: &str| -> Result<(), LogError> {
            for p in partition_ids(&consumer, topic)? {
                match log.next_offset_at(&format!("{offsets}{p}"))? {
                    Some(next) => tpl.add_partition_offset(topic, p, Offset::Offset(next))?,
                    None => by_time.add_partition_offset(topic, p, Offset::Offset(since))?,
                }
            }
            Ok(())
        };
        resume(&topic, "o/")?;
        if let Some(h) = &health {
            resume(&h.events, EVENT_OFFSETS)?;
        }
        if by_time.count() > 0 {
            let starts = consumer.offsets_for_times(by_time, Duration::from_secs(30))?;
            for e in starts.elements() {
                let offset = match e.offset() {
                    Offset::Offset(o) => Offset::Offset(o),
                    _ => Offset::End,
                };
                tpl.add_partition_offset(e.topic(), e.partition(), offset)?;
            }
        }
        if let Some(h) = &health {
            // The state from its start (compacted: the latest of each webhook).
            for p in partition_ids(&consumer, &h.state)? {
                let next = log.next_offset_at(&format!("{STATE_OFFSETS}{p}"))?;
                tpl.add_partition_offset(
                    &h.state,
                    p,
                    next.map_or(Offset::Beginning, Offset::Offset),
                )?;
            }
        }
        consumer.assign(&tpl)?;
        info!(
            topic,
            partitions = tpl.count(),
            health = health.is_some(),
            "delivery log following the outcome topic"
        );
        let (state_topic, events_topic) = health.map(|h| (h.state, h.events)).unwrap_or_default();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("delivery-log".into())
            .spawn(move || {
                let mut pruned = Instant::now();
                while !stopping.load(Ordering::Relaxed) {
                    match consumer.poll(Duration::from_millis(200)) {
                        Some(Ok(m)) => {
                            let (p, o) = (m.partition(), m.offset());
                            let applied = if m.topic() == state_topic {
                                log.apply_state(p, o, m.key(), m.payload())
                            } else if m.topic() == events_topic {
                                log.apply_operational(p, o, m.payload().unwrap_or(b""))
                            } else {
                                log.apply(p, o, m.payload().unwrap_or(b""))
                            };
                            if let Err(e) = applied {
                                warn!(error = %e, "delivery log write failed");
                            }
                        }
                        Some(Err(e)) => warn!(error = %e, "outcome topic consumer error"),
                        None => {}
                    }
                    if pruned.elapsed() > PRUNE_EVERY {
                        pruned = Instant::now();
                        let pruned_events = log.prune_operational(keep, unix_ms(SystemTime::now()));
                        if let Err(e) = pruned_events {
                            warn!(error = %e, "operational events prune failed");
                        }
                        match log.prune(keep, SystemTime::now()) {
                            Ok(n) if n > 0 => info!(removed = n, "delivery log pruned"),
                            Ok(_) => {}
                            Err(e) => warn!(error = %e, "delivery log prune failed"),
                        }
                    }
                }
            })
            .map_err(|e| LogError::Thread(e.to_string()))?;
        Ok(LogFollower {
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Entries one page of a query reads at most (about 0.3 s).
pub const MAX_SCANNED: usize = 50_000;

/// How often old entries are removed.
const PRUNE_EVERY: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An outcome of event `id`, whose input record is at the offset of `id`'s bytes.
    fn outcome(id: &str, status: &str, at: &str) -> Vec<u8> {
        let offset = id.bytes().fold(0i64, |n, b| n * 256 + i64::from(b));
        serde_json::to_vec(&json!({
            "eventId": id, "imsOrg": "acme", "sandboxId": "sb1", "channel": "email",
            "feedbackStatus": "delivered", "status": status, "completedAt": at,
            "source": {"topic": "in", "partition": 0, "offset": offset},
            "attempts": [{"at": at, "httpStatus": 200, "error": null, "durationMs": 3}]
        }))
        .unwrap()
    }

    /// A log in a folder of its own, holding outcomes as (partition, offset, event id,
    /// status, completed at).
    fn log_with(outcomes: &[(i32, i64, &str, &str, &str)]) -> (tempfile::TempDir, DeliveryLog) {
        let dir = tempfile::tempdir().unwrap();
        let log = DeliveryLog::open(dir.path()).unwrap();
        for &(partition, offset, id, status, at) in outcomes {
            log.apply(partition, offset, &outcome(id, status, at))
                .unwrap();
        }
        (dir, log)
    }

    fn keep(age_secs: u64, per_webhook: usize) -> Keep {
        Keep {
            age: Duration::from_secs(age_secs),
            per_webhook,
        }
    }

    fn failed_only() -> Matching {
        Matching {
            status: Some("failed".into()),
            ..Matching::default()
        }
    }

    fn ids(items: &[Value]) -> Vec<&str> {
        items
            .iter()
            .map(|o| o["eventId"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn the_last_24_hours_count_delivered_and_failed_outcomes() {
        let (_dir, log) = log_with(&[
            (0, 0, "old", "failed", "2026-11-28T09:00:00Z"),
            (0, 1, "a", "delivered", "2026-11-30T09:10:00Z"),
            (0, 2, "b", "failed", "2026-11-30T09:20:00Z"),
            (0, 3, "c", "delivered", "2026-11-30T10:00:00Z"),
            (0, 4, "d", "skipped", "2026-11-30T10:00:00Z"),
        ]);
        let at = |t: &str| parse_rfc3339(t).map(unix_ms).unwrap();
        let tally = log
            .last_24h("acme", "sb1", at("2026-11-30T10:30:00Z"))
            .unwrap();
        assert_eq!((tally.delivered, tally.failed), (2, 1));
        assert_eq!(tally.failure_percent().map(|p| p.round()), Some(33.0));
        assert_eq!(log.last_24h("acme", "other", 0).unwrap(), Tally::default());
        assert_eq!(Tally::default().failure_percent(), None);
        // Counters older than two days go with pruning; the others stay.
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(at("2026-11-30T10:30:00Z"));
        log.prune(keep(30 * 86400, 1000), now).unwrap();
        let two_days_ago = log
            .last_24h("acme", "sb1", at("2026-11-28T10:30:00Z"))
            .unwrap();
        assert_eq!(two_days_ago, Tally::default());
        assert_eq!(
            log.last_24h("acme", "sb1", at("2026-11-30T10:30:00Z"))
                .unwrap()
                .failed,
            1
        );
    }

    #[test]
    fn a_window_redelivery_takes_each_event_by_its_newest_outcome_in_the_window() {
        // Event, status, minute after 10:00 (offsets in order).
        let history = [
            ("before", "failed", -60),
            ("a", "failed", 0),
            ("b", "failed", 1),
            ("b", "delivered", 2),
            ("c", "delivered", 3),
            ("c", "failed", 4),
            ("after", "failed", 60),
        ];
        let dir = tempfile::tempdir().unwrap();
        let log = DeliveryLog::open(dir.path()).unwrap();
        let ten = parse_rfc3339("2026-11-30T10:00:00Z").map(unix_ms).unwrap();
        for (offset, (id, status, minute)) in history.into_iter().enumerate() {
            let at_ms = (ten as i64 + minute * 60_000) as u64;
            let at = SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms);
            let value = outcome(id, status, &crate::domain::time::rfc3339_millis(at));
            log.apply(0, offset as i64, &value).unwrap();
        }
        // Another webhook's failures are not read.
        let mut other = outcome("x", "failed", "2026-11-30T10:30:00Z");
        other = String::from_utf8(other)
            .unwrap()
            .replace("sb1", "sb2")
            .into_bytes();
        log.apply(0, 7, &other).unwrap();
        let at = |t: &str| parse_rfc3339(t).map(unix_ms).unwrap();
        let window = (at("2026-11-30T10:00:00Z"), at("2026-11-30T11:00:00Z"));
        let failed = |o: &Value| o["status"] == "failed";
        let mut reads = 0;
        let chosen = log
            .redeliverable("acme", "sb1", window, &failed, &mut |n, _| reads = n)
            .unwrap();
        let offset = |id: &str| id.bytes().fold(0i64, |n, b| n * 256 + i64::from(b));
        let offsets: Vec<i64> = chosen.iter().map(|s| s.offset).collect();
        // b was delivered since it failed; c failed last; the edges: from in, to out.
        assert_eq!(offsets, [offset("c"), offset("a")]);
        assert_eq!(
            reads, 5,
            "only the webhook's entries of the window are read"
        );
    }

    #[test]
    fn newest_first_filtered_and_paged() {
        let (_dir, log) = log_with(&[
            (0, 0, "a", "delivered", "2026-11-30T10:00:00Z"),
            (0, 1, "b", "failed", "2026-11-30T10:00:01Z"),
            (1, 0, "c", "delivered", "2026-11-30T10:00:02Z"),
        ]);
        log.apply(1, 1, b"not json").unwrap();
        assert_eq!(log.next_offset_at("o/1").unwrap(), Some(2));
        let all = LogQuery {
            limit: 10,
            ..LogQuery::default()
        };
        let (items, next) = log.query("acme", "sb1", &all).unwrap();
        assert_eq!((ids(&items), next), (vec!["c", "b", "a"], None));
        let failed = LogQuery {
            matching: failed_only(),
            ..all.clone()
        };
        assert_eq!(ids(&log.query("acme", "sb1", &failed).unwrap().0), ["b"]);
        let page = LogQuery {
            limit: 2,
            ..all.clone()
        };
        let (first, cursor) = log.query("acme", "sb1", &page).unwrap();
        assert_eq!(ids(&first), ["c", "b"]);
        let rest = LogQuery {
            after: cursor,
            ..page
        };
        assert_eq!(ids(&log.query("acme", "sb1", &rest).unwrap().0), ["a"]);
        let from = parse_rfc3339("2026-11-30T10:00:01Z").map(unix_ms);
        let window = LogQuery {
            from_ms: from,
            to_ms: from.map(|f| f + 1000),
            ..all.clone()
        };
        assert_eq!(ids(&log.query("acme", "sb1", &window).unwrap().0), ["b"]);
        assert!(log.query("acme", "sb2", &all).unwrap().0.is_empty());
        assert_eq!(
            log.latest_of("acme", "sb1", "b").unwrap().unwrap()["status"],
            "failed"
        );
        assert!(log.latest_of("acme", "sb2", "b").unwrap().is_none());
    }

    #[test]
    fn a_page_reads_a_bounded_number_of_entries_and_says_where_to_go_on() {
        let (_dir, log) = log_with(&[]);
        for i in 0..10 {
            let status = if i == 1 { "failed" } else { "delivered" };
            let at = format!("2026-11-30T10:00:{i:02}Z");
            log.apply(0, i, &outcome(&format!("e{i}"), status, &at))
                .unwrap();
        }
        let failed = LogQuery {
            matching: failed_only(),
            limit: 10,
            ..LogQuery::default()
        };
        // Newest first: e9..e6 read, nothing found yet, a cursor to go on.
        let (items, cursor) = log.query_reading("acme", "sb1", &failed, 4).unwrap();
        assert!(items.is_empty() && cursor.is_some());
        let on = LogQuery {
            after: cursor,
            ..failed.clone()
        };
        let (items, cursor) = log.query_reading("acme", "sb1", &on, 4).unwrap();
        assert!(items.is_empty() && cursor.is_some(), "e5..e2");
        let on = LogQuery {
            after: cursor,
            ..on
        };
        let (items, cursor) = log.query_reading("acme", "sb1", &on, 4).unwrap();
        assert_eq!((ids(&items), cursor), (vec!["e1"], None));
        // A window's end is sought: entries after it are not read.
        let to = parse_rfc3339("2026-11-30T10:00:02Z").map(unix_ms);
        let window = LogQuery {
            to_ms: to,
            ..failed
        };
        let (items, _) = log.query_reading("acme", "sb1", &window, 1).unwrap();
        assert_eq!(ids(&items), ["e1"]);
    }

    #[test]
    fn an_event_points_at_its_newest_outcome_until_pruned() {
        let (_dir, log) = log_with(&[
            (0, 0, "a", "failed", "2026-11-29T10:00:00Z"),
            (0, 1, "a", "delivered", "2026-11-29T10:05:00Z"),
        ]);
        let latest = log.latest_of("acme", "sb1", "a").unwrap().unwrap();
        assert_eq!(latest["status"], "delivered");
        let now = parse_rfc3339("2026-11-30T00:00:00Z").unwrap();
        assert_eq!(log.prune(keep(86_400, 1), now).unwrap(), 1);
        assert_eq!(
            log.latest_of("acme", "sb1", "a").unwrap().unwrap()["status"],
            "delivered",
            "pruning an older outcome keeps the pointer"
        );
        assert_eq!(log.prune(keep(3_600, 1), now).unwrap(), 1);
        assert!(log.latest_of("acme", "sb1", "a").unwrap().is_none());
        assert!(log.db.get(event_key("acme", "sb1", "a")).unwrap().is_none());
    }

    #[test]
    fn pruning_keeps_the_newest_within_retention() {
        let (_dir, log) = log_with(&[]);
        for (i, at) in [
            "2026-11-20T00:00:00Z",
            "2026-11-29T00:00:00Z",
            "2026-11-29T01:00:00Z",
            "2026-11-29T02:00:00Z",
        ]
        .iter()
        .enumerate()
        {
            log.apply(0, i as i64, &outcome(&format!("e{i}"), "delivered", at))
                .unwrap();
        }
        let now = parse_rfc3339("2026-11-30T00:00:00Z").unwrap();
        let removed = log.prune(keep(7 * 86_400, 2), now).unwrap();
        assert_eq!(removed, 2, "one too old, one beyond two per webhook");
        let all = LogQuery {
            limit: 10,
            ..LogQuery::default()
        };
        assert_eq!(
            ids(&log.query("acme", "sb1", &all).unwrap().0),
            ["e3", "e2"]
        );
    }
}
