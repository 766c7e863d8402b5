//! At least once, what a partition's previous owner completed after its last commit is
//! still known: each outcome and each parked record names the input record it is the
//! result of (`source`). When input partitions are assigned, the recent tail of the outcome
//! topic and the retry tiers is read, and the records it names past the committed offsets
//! count as done, so a crash redoes only what was in flight (not also what completed in
//! the last commit interval). Exactly once needs none of this: the committed offsets and
//! the transactions already agree.
//!
//! The read is bounded: records written in the last [`LOOKBACK`] only (the crash, the
//! session timeout that hands the partitions over, and the restart all fit in it), at most
//! [`MAX_RECORDS`] of them and [`DEADLINE`] of reading. Anything it misses is processed
//! again, which at-least-once allows.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;
use tracing::{info, warn};

use super::offsets::PartitionKey;
use super::progress::Progress;
use crate::domain::outcome::Source;
use crate::domain::time::unix_ms;
use crate::kafka::{partition_ids, reader_config, KafkaSettings};

/// How far back results are looked for.
pub const LOOKBACK: Duration = Duration::from_secs(60);
/// At most this many records are read per assignment.
pub const MAX_RECORDS: usize = 500_000;
/// And for at most this long.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// What an outcome or a parked record says of its origin (both carry these fields).
#[derive(Deserialize)]
struct Named {
    source: Option<Source>,
    #[serde(default)]
    replay: Option<serde_json::Value>,
}

/// The input record an outcome or parked record is the result of; `None` for a replay's
/// (a redelivery is not the live processing of its record) or a record without one.
pub fn source_of(value: &[u8]) -> Option<(PartitionKey, i64)> {
    let named: Named = serde_json::from_slice(value).ok()?;
    if named.replay.as_ref().is_some_and(|r| !r.is_null()) {
        return None;
    }
    let s = named.source?;
    Some((
        PartitionKey {
            topic: s.topic,
            partition: s.partition,
        },
        s.offset,
    ))
}

/// What the results found say is done in each wanted partition, past its committed offset
/// (`wanted`: partition → committed next offset).
pub fn done_after(
    found: impl IntoIterator<Item = (PartitionKey, i64)>,
    wanted: &HashMap<PartitionKey, i64>,
) -> Vec<(PartitionKey, Progress)> {
    let mut ranges: HashMap<PartitionKey, Vec<(i64, i64)>> = HashMap::new();
    for (key, offset) in found {
        if let Some(&next) = wanted.get(&key) {
            if offset >= next {
                ranges.entry(key).or_default().push((offset, offset));
            }
        }
    }
    ranges
        .into_iter()
        .map(|(key, mut r)| {
            let next = wanted.get(&key).copied().unwrap_or(0);
            (key, Progress::normalised(next, &mut r))
        })
        .collect()
}

/// What a tail read found: the sources named, the records read, whether it read them all.
type Tail = (Vec<(PartitionKey, i64)>, usize, bool);

/// Reads the tails of the topics results are written to.
pub struct Results {
    consumer: BaseConsumer,
    topics: Vec<String>,
}

impl Results {
    /// `topics`: the outcome topic and the retry tiers.
    pub fn new(kafka: &KafkaSettings, topics: Vec<String>) -> Result<Self, KafkaError> {
        let consumer: BaseConsumer = reader_config(kafka, "results-tail").create()?;
        Ok(Results { consumer, topics })
    }

    /// What the recent results say is done past the committed offsets in `wanted`.
    /// Blocking (it runs in the assignment callback, before any record is handed out).
    pub fn done(&self, wanted: &HashMap<PartitionKey, i64>) -> Vec<(PartitionKey, Progress)> {
        if wanted.is_empty() {
            return Vec::new();
        }
        let started = Instant::now();
        match self.read_tail() {
            Ok((found, read, complete)) => {
                let done = done_after(found, wanted);
                // Records past each commit point the results name: those folded into the
                // new commit point and those after it.
                let records: i64 = done
                    .iter()
                    .map(|(key, p)| {
                        let folded = p.next - wanted.get(key).copied().unwrap_or(p.next);
                        folded + p.done.iter().map(|(a, b)| b - a + 1).sum::<i64>()
                    })
                    .sum();
                info!(
                    partitions = wanted.len(),
                    results_read = read,
                    complete,
                    done_past_commit = records,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "recent results read"
                );
                done
            }
            Err(e) => {
                warn!(error = %e, "recent results not read; records done after the committed offsets may be processed again");
                Vec::new()
            }
        }
    }

    /// The sources named by the records written in the last [`LOOKBACK`], how many were
    /// read, and whether the whole tail was read.
    fn read_tail(&self) -> Result<Tail, KafkaError> {
        let since = unix_ms(SystemTime::now()).saturating_sub(LOOKBACK.as_millis() as u64) as i64;
        let mut by_time = TopicPartitionList::new();
        for topic in &self.topics {
            for p in partition_ids(&self.consumer, topic)? {
                by_time.add_partition_offset(topic, p, Offset::Offset(since))?;
            }
        }
        let starts = self
            .consumer
            .offsets_for_times(by_time, Duration::from_secs(10))?;
        let mut ends: HashMap<(String, i32), i64> = HashMap::new();
        let mut assign = TopicPartitionList::new();
        for e in starts.elements() {
            let Offset::Offset(start) = e.offset() else {
                continue; // nothing written since
            };
            let (_, high) = self.consumer.fetch_watermarks(
                e.topic(),
                e.partition(),
                Duration::from_secs(10),
            )?;
            if start < high {
                ends.insert((e.topic().to_owned(), e.partition()), high);
                assign.add_partition_offset(e.topic(), e.partition(), Offset::Offset(start))?;
            }
        }
        if ends.is_empty() {
            return Ok((Vec::new(), 0, true));
        }
        self.consumer.assign(&assign)?;
        let deadline = Instant::now() + DEADLINE;
        let mut found = Vec::new();
        let mut read = 0usize;
        while !ends.is_empty() && read < MAX_RECORDS && Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    read += 1;
                    let at = (m.topic().to_owned(), m.partition());
                    if let Some(source) = m.payload().and_then(source_of) {
                        found.push(source);
                    }
                    if ends.get(&at).is_some_and(|high| m.offset() + 1 >= *high) {
                        ends.remove(&at);
                    }
                }
                Some(Err(e)) => {
                    self.consumer.unassign()?;
                    return Err(e);
                }
                None => {}
            }
        }
        let complete = ends.is_empty();
        self.consumer.unassign()?;
        Ok((found, read, complete))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> PartitionKey {
        PartitionKey {
            topic: "in".into(),
            partition: p,
        }
    }

    #[test]
    fn outcomes_and_parked_records_name_their_source_but_replays_do_not_count() {
        let outcome = br#"{"eventId":"e","status":"delivered","source":{"topic":"in","partition":2,"offset":41},"replay":null}"#;
        assert_eq!(source_of(outcome), Some((key(2), 41)));
        let parked = br#"{"kind":"retry","eventId":"e","source":{"topic":"in","partition":0,"offset":7},"dueMs":1}"#;
        assert_eq!(source_of(parked), Some((key(0), 7)));
        let replayed = br#"{"eventId":"e","source":{"topic":"in","partition":2,"offset":41},"replay":{"id":"r"}}"#;
        assert_eq!(source_of(replayed), None);
        assert_eq!(source_of(b"not json"), None);
        assert_eq!(source_of(br#"{"eventId":"e"}"#), None);
    }

    #[test]
    fn only_records_past_the_commit_of_wanted_partitions_count() {
        let wanted = HashMap::from([(key(0), 10), (key(1), 5)]);
        let found = vec![
            (key(0), 9), // before the commit: done anyway
            (key(0), 12),
            (key(0), 11),
            (key(0), 15),
            (key(1), 5),
            (key(2), 100), // not assigned here
        ];
        let mut done = done_after(found, &wanted);
        done.sort_by_key(|(k, _)| k.partition);
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].1.next, 10);
        assert_eq!(done[0].1.done, vec![(11, 12), (15, 15)]);
        assert_eq!(
            done[1].1.next, 6,
            "the record at the commit point folds into it"
        );
        assert!(done[1].1.done.is_empty());
    }
}
