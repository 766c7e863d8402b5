//! Which records a replay selects, and reading them back from Kafka.
//!
//! A selection is a window (or explicit offset ranges) of the input topics, or the events
//! whose outcome in a window failed; [`plan`] turns it into the stretches of partitions to
//! read (and counts what it selects), [`read_plan`] reads them and hands each chosen event
//! to a sink. Both block on librdkafka: async callers run them with [`super::blocking`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use super::{Counts, ReplayError, Reporter};
use crate::domain::event;
use crate::domain::outcome::Source;
use crate::domain::replay::{
    outcome_selected, Facts, Filters, OffsetRange, ReplaySource, Tally, Window,
};
use crate::kafka::{partition_ids, reader_config};
use crate::settings::Settings;

/// How long a Kafka call or a silent read may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// What a replay selects.
#[derive(Debug, Clone)]
pub struct Selection {
    pub source: ReplaySource,
    pub window: Window,
    /// Explicit input offsets instead of a window (input only).
    pub ranges: Vec<OffsetRange>,
    /// Everything the topics retain (instead of a window).
    pub all: bool,
    pub filters: Filters,
    /// From outcomes: the failed events.
    pub failed: bool,
    /// From outcomes: also the events skipped with these reasons ([`ANY_REASON`] for all).
    ///
    /// [`ANY_REASON`]: crate::domain::replay::ANY_REASON
    pub skipped_reasons: Vec<String>,
}

impl Selection {
    /// Refuses selections that mean nothing or everything by accident.
    pub fn check(&self) -> Result<(), ReplayError> {
        if self.source == ReplaySource::Outcomes && !self.ranges.is_empty() {
            return Err(ReplayError::Refused(
                "--range selects input offsets; with --source outcomes give a window".into(),
            ));
        }
        if !self.skipped_reasons.is_empty() && self.source != ReplaySource::Outcomes {
            return Err(ReplayError::Refused(
                "--skipped-reason needs --source outcomes".into(),
            ));
        }
        self.window.check(!self.ranges.is_empty(), self.all)?;
        Ok(())
    }
}

/// A stretch of one partition to read: offsets `start..end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub topic: String,
    pub partition: i32,
    pub start: i64,
    pub end: i64,
}

impl Segment {
    fn len(&self) -> u64 {
        (self.end - self.start) as u64
    }
}

/// What a replay will read to queue its events.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Input records in these segments that the filters match.
    Input { segments: Vec<Segment> },
    /// These input records (chosen by their outcomes, or named one by one).
    Records {
        wanted: BTreeSet<(String, i32, i64)>,
    },
}

impl Plan {
    /// The given input records, each once.
    pub fn records<'a>(sources: impl IntoIterator<Item = &'a Source>) -> Self {
        Plan::Records {
            wanted: sources
                .into_iter()
                .map(|s| (s.topic.clone(), s.partition, s.offset))
                .collect(),
        }
    }
}

/// What [`read_plan`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Read {
    /// Events selected and handed to the sink.
    pub matched: u64,
    /// Records the plan named that the input topics no longer retain.
    pub gone: u64,
}

/// What a replay reads its events with: the settings and a consumer outside the live group.
pub struct Scanner<'a> {
    pub(super) settings: &'a Settings,
    pub(super) consumer: BaseConsumer,
}

impl<'a> Scanner<'a> {
    /// `purpose` names the consumer's group id (`{group_id}-replay-{purpose}`).
    pub fn open(settings: &'a Settings, purpose: &str) -> Result<Self, ReplayError> {
        Ok(Self {
            settings,
            consumer: reader(settings, purpose)?,
        })
    }
}

/// A consumer outside the live group that reads by assignment and commits nothing.
pub fn reader(settings: &Settings, purpose: &str) -> Result<BaseConsumer, ReplayError> {
    Ok(reader_config(&settings.kafka, &format!("replay-{purpose}")).create()?)
}

fn partitions(consumer: &BaseConsumer, topic: &str) -> Result<Vec<i32>, ReplayError> {
    let ids = partition_ids(consumer, topic)?;
    if ids.is_empty() {
        return Err(ReplayError::Refused(format!(
            "topic {topic:?} does not exist"
        )));
    }
    Ok(ids)
}

/// Offsets `start..end` of a partition, cut to what it retains; `None` when nothing is left.
fn segment(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    start: i64,
    end: i64,
) -> Result<Option<Segment>, ReplayError> {
    let (low, high) = consumer.fetch_watermarks(topic, partition, TIMEOUT)?;
    let (start, end) = (start.max(low), end.min(high));
    Ok((start < end).then(|| Segment {
        topic: topic.to_owned(),
        partition,
        start,
        end,
    }))
}

/// Everything each partition of `topic` retains.
pub fn whole_topic(consumer: &BaseConsumer, topic: &str) -> Result<Vec<Segment>, ReplayError> {
    let mut segments = Vec::new();
    for p in partitions(consumer, topic)? {
        segments.extend(segment(consumer, topic, p, 0, i64::MAX)?);
    }
    Ok(segments)
}

/// The offsets of `topics` that the window covers, per partition.
fn window_segments(
    consumer: &BaseConsumer,
    topics: &[String],
    window: Window,
) -> Result<Vec<Segment>, ReplayError> {
    let mut segments = Vec::new();
    for topic in topics {
        if topic.starts_with('^') {
            return Err(ReplayError::Refused(format!(
                "input topic {topic:?} is a pattern: name the topics with --range"
            )));
        }
        let ids = partitions(consumer, topic)?;
        // The first offset at or after a timestamp; past the end when there is none.
        let offsets_at = |ms: i64| -> Result<BTreeMap<i32, i64>, ReplayError> {
            let mut tpl = TopicPartitionList::new();
            for &p in &ids {
                tpl.add_partition_offset(topic, p, Offset::Offset(ms))?;
            }
            let found = consumer.offsets_for_times(tpl, TIMEOUT)?;
            Ok(found
                .elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => (e.partition(), o),
                    _ => (e.partition(), i64::MAX),
                })
                .collect())
        };
        let starts = window.from_ms.map(offsets_at).transpose()?;
        let ends = window.to_ms.map(offsets_at).transpose()?;
        let at = |found: &Option<BTreeMap<i32, i64>>, p: i32, default: i64| {
            found
                .as_ref()
                .and_then(|m| m.get(&p).copied())
                .unwrap_or(default)
        };
        for &p in &ids {
            let (start, end) = (at(&starts, p, 0), at(&ends, p, i64::MAX));
            segments.extend(segment(consumer, topic, p, start, end)?);
        }
    }
    Ok(segments)
}

/// The segments that hold the given records: per partition, first to last.
fn record_segments(
    consumer: &BaseConsumer,
    wanted: &BTreeSet<(String, i32, i64)>,
) -> Result<Vec<Segment>, ReplayError> {
    let mut bounds: BTreeMap<(&str, i32), (i64, i64)> = BTreeMap::new();
    for (topic, partition, offset) in wanted {
        let b = bounds
            .entry((topic.as_str(), *partition))
            .or_insert((*offset, *offset));
        b.0 = b.0.min(*offset);
        b.1 = b.1.max(*offset);
    }
    let mut segments = Vec::new();
    for ((topic, partition), (first, last)) in bounds {
        segments.extend(segment(consumer, topic, partition, first, last + 1)?);
    }
    Ok(segments)
}

/// Reads every record of `segments`, calling `visit` with each.
pub fn scan(
    consumer: &BaseConsumer,
    segments: &[Segment],
    mut visit: impl FnMut(&BorrowedMessage<'_>),
) -> Result<(), ReplayError> {
    if segments.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    let mut open: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for s in segments {
        tpl.add_partition_offset(&s.topic, s.partition, Offset::Offset(s.start))?;
        open.insert((s.topic.clone(), s.partition), s.end);
    }
    consumer.assign(&tpl)?;
    let mut idle_since = Instant::now();
    while !open.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                idle_since = Instant::now();
                let key = (m.topic().to_owned(), m.partition());
                let Some(&end) = open.get(&key) else {
                    continue;
                };
                if m.offset() < end {
                    visit(&m);
                }
                if m.offset() + 1 >= end {
                    open.remove(&key);
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None => {
                // Offsets can have holes (compaction, transaction markers): a partition
                // whose position passed its end is done.
                if let Ok(positions) = consumer.position() {
                    for e in positions.elements() {
                        let key = (e.topic().to_owned(), e.partition());
                        if let (Some(&end), Offset::Offset(p)) = (open.get(&key), e.offset()) {
                            if p >= end {
                                open.remove(&key);
                            }
                        }
                    }
                }
                if idle_since.elapsed() > TIMEOUT {
                    return Err(ReplayError::Refused(format!(
                        "no records for {TIMEOUT:?} while {} partition(s) were unfinished",
                        open.len()
                    )));
                }
            }
        }
    }
    consumer.unassign()?;
    Ok(())
}

impl Scanner<'_> {
    /// Plans a replay and counts what it selects into `tally` (the dry run), queueing
    /// nothing. Input windows are only counted when `count_input` (the count is wanted
    /// before queueing); outcome windows are always read, since that is how their events
    /// are chosen. Returns the plan and how many unreadable records were ignored.
    pub fn plan(
        &self,
        selection: &Selection,
        count_input: bool,
        tally: &mut Tally,
        progress: &mut dyn Reporter,
    ) -> Result<(Plan, u64), ReplayError> {
        let (settings, consumer) = (self.settings, &self.consumer);
        let filters = &selection.filters;
        let mut unreadable = 0u64;
        let mut counts = Counts::default();
        let plan = match selection.source {
            ReplaySource::Input => {
                let segments = if selection.ranges.is_empty() {
                    window_segments(consumer, &settings.kafka.input_topics, selection.window)?
                } else {
                    let mut segments = Vec::new();
                    for r in &selection.ranges {
                        segments.extend(segment(
                            consumer,
                            &r.topic,
                            r.partition,
                            r.first,
                            r.last + 1,
                        )?);
                    }
                    segments
                };
                if !count_input {
                    return Ok((Plan::Input { segments }, 0));
                }
                progress.phase("counting", segments.iter().map(Segment::len).sum());
                scan(consumer, &segments, |m| {
                    counts.scanned += 1;
                    match event::parse(m.payload(), settings.delivery.max_event_bytes) {
                        Ok(e) => {
                            let facts = Facts::of_event(&e);
                            if filters.matches(&facts) {
                                counts.matched += 1;
                                tally.add(&facts);
                            }
                        }
                        // An invalid event would only be recorded invalid again.
                        Err(_) => unreadable += 1,
                    }
                    progress.tick(&counts);
                })?;
                Plan::Input { segments }
            }
            ReplaySource::Outcomes => {
                let topics = [settings.kafka.outcome_topic.clone()];
                let segments = window_segments(consumer, &topics, selection.window)?;
                progress.phase("outcomes", segments.iter().map(Segment::len).sum());
                // Each event once, by its latest outcome in the window: one that failed and was
                // delivered since is not redelivered. (Outcomes of an event share a partition,
                // keyed by its id, so they are read in order.)
                let mut latest: BTreeMap<(String, i32, i64), (String, String, String)> =
                    BTreeMap::new();
                scan(consumer, &segments, |m| {
                    counts.scanned += 1;
                    progress.tick(&counts);
                    let Some(outcome) = m
                        .payload()
                        .and_then(|p| serde_json::from_slice::<Value>(p).ok())
                    else {
                        unreadable += 1;
                        return;
                    };
                    let facts = Facts::of_outcome(&outcome);
                    if !filters.matches(&facts) {
                        return;
                    }
                    let Ok(source) = serde_json::from_value::<Source>(outcome["source"].clone())
                    else {
                        return;
                    };
                    let key = (source.topic, source.partition, source.offset);
                    if outcome_selected(&outcome, selection.failed, &selection.skipped_reasons) {
                        let name = |v: Option<&str>| v.unwrap_or("-").to_owned();
                        let facts = (name(facts.org), name(facts.sandbox), name(facts.status));
                        latest.insert(key, facts);
                    } else {
                        latest.remove(&key);
                    }
                    counts.matched = latest.len() as u64;
                })?;
                for (org, sandbox, status) in latest.values() {
                    tally.add(&Facts {
                        org: Some(org),
                        sandbox: Some(sandbox),
                        status: Some(status),
                        ..Facts::default()
                    });
                }
                let wanted = latest.into_keys().collect();
                Plan::Records { wanted }
            }
        };
        progress.done(&counts);
        Ok((plan, unreadable))
    }
}

/// An event chosen for redelivery, with where it came from.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub event: Value,
    pub source: Source,
}

/// Reads the planned events and hands each to `sink`, which answers whether it queued it.
pub fn read_plan(
    settings: &Settings,
    consumer: &BaseConsumer,
    filters: &Filters,
    plan: &Plan,
    sink: &mut dyn FnMut(Chosen) -> Result<bool, ReplayError>,
    progress: &mut dyn Reporter,
) -> Result<Read, ReplayError> {
    let segments = match plan {
        Plan::Input { segments } => segments.clone(),
        Plan::Records { wanted } => record_segments(consumer, wanted)?,
    };
    progress.phase("queueing", segments.iter().map(Segment::len).sum());
    let mut counts = Counts::default();
    let mut failure = None;
    scan(consumer, &segments, |m| {
        counts.scanned += 1;
        progress.tick(&counts);
        if failure.is_some() {
            return;
        }
        let source = Source {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
        };
        let selected = match plan {
            Plan::Input { .. } => event::parse(m.payload(), settings.delivery.max_event_bytes)
                .is_ok_and(|e| filters.matches(&Facts::of_event(&e))),
            Plan::Records { wanted } => {
                wanted.contains(&(source.topic.clone(), source.partition, source.offset))
            }
        };
        if !selected {
            return;
        }
        counts.matched += 1;
        let event = m
            .payload()
            .and_then(|p| serde_json::from_slice(p).ok())
            .unwrap_or(Value::Null);
        match sink(Chosen { event, source }) {
            Ok(true) => counts.queued += 1,
            Ok(false) => {}
            Err(e) => failure = Some(e),
        }
    })?;
    progress.done(&counts);
    if let Some(e) = failure {
        return Err(e);
    }
    let gone = match plan {
        Plan::Records { wanted } => (wanted.len() as u64).saturating_sub(counts.matched),
        Plan::Input { .. } => 0,
    };
    Ok(Read {
        matched: counts.matched,
        gone,
    })
}
