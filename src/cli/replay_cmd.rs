//! `replay`: selects events from a bounded window of the input topics (or the events whose
//! outcome failed) and queues them on the redelivery topic, where the live processor
//! delivers them again with the current config. Nothing here touches the live consumer
//! group's offsets or sends a request to a webhook.
//!
//! Safe by default: the window must be bounded (or `--all`), more than
//! `replay.confirm_above` events need a confirmation on a terminal (or `--yes`), and the
//! same replay id never queues an event twice (what is already on the redelivery topic
//! under that id is skipped), so a replay interrupted or run again with `--id` resumes.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime};

use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use crate::domain::event;
use crate::domain::outcome::{Replay, Source};
use crate::domain::replay::{
    outcome_selected, parse_range, Facts, Filters, OffsetRange, ReplayRecord, ReplaySource,
    SelectionError, Tally, Window,
};
use crate::domain::time::rfc3339_millis;
use crate::kafka::{client_config, ensure_topics, internal_record_limit, partition_ids};
use crate::settings::{Guarantee, Settings};

/// The header that carries the replay id on redelivery records.
pub const REPLAY_ID_HEADER: &str = "replay-id";

const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Selection(#[from] SelectionError),
    #[error("{0}")]
    Refused(String),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// What to replay, from the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Read the input topics (default) or the outcome topic's failed outcomes.
    #[arg(long, value_enum, default_value = "input")]
    pub source: SourceArg,
    /// Start of the window (RFC 3339, e.g. 2026-11-27T10:00:00Z), by record timestamp.
    #[arg(long)]
    pub from: Option<String>,
    /// End of the window, exclusive (RFC 3339); default now.
    #[arg(long)]
    pub to: Option<String>,
    /// Explicit input offsets instead of a window: TOPIC:PARTITION:FIRST-LAST (repeatable).
    #[arg(long = "range")]
    pub ranges: Vec<String>,
    /// Replay everything the topics still retain (instead of a window).
    #[arg(long)]
    pub all: bool,
    /// With --source outcomes: also redeliver events skipped with this reason (repeatable).
    #[arg(long = "skipped-reason")]
    pub skipped_reasons: Vec<String>,
    #[arg(long = "org")]
    pub orgs: Vec<String>,
    /// Sandbox id.
    #[arg(long = "sandbox")]
    pub sandboxes: Vec<String>,
    #[arg(long = "campaign")]
    pub campaigns: Vec<String>,
    /// email or sms.
    #[arg(long = "channel")]
    pub channels: Vec<String>,
    /// Feedback status (sent, delivered, bounce, error, ...).
    #[arg(long = "status")]
    pub statuses: Vec<String>,
    #[arg(long = "request-id")]
    pub request_ids: Vec<String>,
    /// Count what would be replayed, per org, sandbox and status; queue nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation above replay.confirm_above events.
    #[arg(long)]
    pub yes: bool,
    /// The replay's id (default: a new one). Running again with the same id queues only
    /// what that replay has not queued yet.
    #[arg(long)]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceArg {
    Input,
    Outcomes,
}

impl ReplayArgs {
    fn filters(&self) -> Filters {
        Filters {
            orgs: self.orgs.clone(),
            sandboxes: self.sandboxes.clone(),
            campaigns: self.campaigns.clone(),
            channels: self.channels.clone(),
            statuses: self.statuses.clone(),
            request_ids: self.request_ids.clone(),
        }
    }

    fn source(&self) -> ReplaySource {
        match self.source {
            SourceArg::Input => ReplaySource::Input,
            SourceArg::Outcomes => ReplaySource::Outcomes,
        }
    }
}

fn parse_time(flag: &str, text: &str) -> Result<i64, ReplayError> {
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| ReplayError::Refused(format!("{flag} {text:?} is not RFC 3339: {e}")))?;
    Ok((at.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A stretch of one partition to read: offsets `start..end`.
#[derive(Debug, Clone)]
struct Segment {
    topic: String,
    partition: i32,
    start: i64,
    end: i64,
}

/// Counters shown while the replay runs.
struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    scanned: u64,
    matched: u64,
    queued: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    fn new(total: u64, phase: &str) -> Self {
        // A bar on a terminal; plain lines every few seconds otherwise (logs, CI).
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} scanned, {msg} {per_sec} ETA {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(phase.to_owned());
            bar
        });
        Progress {
            bar,
            total,
            scanned: 0,
            matched: 0,
            queued: 0,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    fn tick(&mut self) {
        let message = format!("{} matched, {} queued", self.matched, self.queued);
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.scanned);
                bar.set_message(message);
            }
            None if self.last_line.elapsed() >= Duration::from_secs(5) => {
                self.last_line = Instant::now();
                eprintln!("{}", self.line());
            }
            None => {}
        }
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.scanned as f64 / secs;
        let left = self.total.saturating_sub(self.scanned) as f64;
        let eta = if rate > 0.0 { left / rate } else { 0.0 };
        format!(
            "replay: scanned {}/{}, matched {}, queued {}, {:.0} records/s, ETA {:.0} s",
            self.scanned, self.total, self.matched, self.queued, rate, eta
        )
    }

    fn finish(&self) {
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => eprintln!("{}", self.line()),
        }
    }
}

fn reader(settings: &Settings, purpose: &str) -> Result<BaseConsumer, ReplayError> {
    Ok(client_config(&settings.kafka)
        .set(
            "group.id",
            format!("{}-replay-{purpose}", settings.kafka.group_id),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .create()?)
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
        // The first offset at or after a timestamp; End when there is none.
        let offsets_at = |ms: i64| -> Result<BTreeMap<i32, Offset>, ReplayError> {
            let mut tpl = TopicPartitionList::new();
            for &p in &ids {
                tpl.add_partition_offset(topic, p, Offset::Offset(ms))?;
            }
            let found = consumer.offsets_for_times(tpl, TIMEOUT)?;
            Ok(found
                .elements()
                .iter()
                .map(|e| (e.partition(), e.offset()))
                .collect())
        };
        let starts = window.from_ms.map(offsets_at).transpose()?;
        let ends = window.to_ms.map(offsets_at).transpose()?;
        for &p in &ids {
            let (low, high) = consumer.fetch_watermarks(topic, p, TIMEOUT)?;
            let resolve = |found: &Option<BTreeMap<i32, Offset>>, default: i64| match found
                .as_ref()
                .and_then(|m| m.get(&p))
            {
                Some(Offset::Offset(o)) => *o,
                Some(_) => high,
                None => default,
            };
            let start = resolve(&starts, low).max(low);
            let end = resolve(&ends, high).min(high);
            if start < end {
                segments.push(Segment {
                    topic: topic.clone(),
                    partition: p,
                    start,
                    end,
                });
            }
        }
    }
    Ok(segments)
}

fn range_segments(
    consumer: &BaseConsumer,
    ranges: &[OffsetRange],
) -> Result<Vec<Segment>, ReplayError> {
    let mut segments = Vec::new();
    for r in ranges {
        let (low, high) = consumer.fetch_watermarks(&r.topic, r.partition, TIMEOUT)?;
        let (start, end) = (r.first.max(low), (r.last + 1).min(high));
        if start < end {
            segments.push(Segment {
                topic: r.topic.clone(),
                partition: r.partition,
                start,
                end,
            });
        }
    }
    Ok(segments)
}

/// Reads every record of `segments`, calling `visit` with each.
fn scan(
    consumer: &BaseConsumer,
    segments: &[Segment],
    mut visit: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
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

/// The sources this replay id has already queued (its earlier runs).
fn already_queued(
    settings: &Settings,
    topic: &str,
    id: &str,
) -> Result<HashSet<(String, i32, i64)>, ReplayError> {
    let consumer = reader(settings, "ledger")?;
    let ids = partitions(&consumer, topic)?;
    let mut segments = Vec::new();
    for p in ids {
        let (low, high) = consumer.fetch_watermarks(topic, p, TIMEOUT)?;
        if low < high {
            segments.push(Segment {
                topic: topic.to_owned(),
                partition: p,
                start: low,
                end: high,
            });
        }
    }
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

/// Queues redelivery records, waiting for the broker's acknowledgements in batches.
/// Exactly once, each batch is a transaction: the processor (reading `read_committed`)
/// sees a batch whole or not at all, and a replay run again with its id skips what committed.
struct Queue {
    producer: FutureProducer,
    topic: String,
    pending: Vec<DeliveryFuture>,
    transactional: bool,
}

/// How long a batch's transaction may take.
const REPLAY_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

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
                REPLAY_TRANSACTION_TIMEOUT.as_millis().to_string(),
            );
        }
        let producer: FutureProducer = config.create()?;
        if transactional {
            producer.init_transactions(REPLAY_TRANSACTION_TIMEOUT)?;
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
        if self.pending.len() >= 1_000 {
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
            self.producer
                .commit_transaction(REPLAY_TRANSACTION_TIMEOUT)?;
            self.producer.begin_transaction()?;
        }
        Ok(())
    }
}

/// Asks on a terminal; refuses elsewhere.
fn confirm(count: u64, limit: u64) -> Result<(), ReplayError> {
    if !std::io::stdin().is_terminal() {
        return Err(ReplayError::Refused(format!(
            "{count} events exceed replay.confirm_above ({limit}): confirm on a terminal or pass --yes"
        )));
    }
    eprint!("queue {count} events for redelivery? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(ReplayError::Refused("not confirmed; nothing queued".into()))
    }
}

/// A new replay id: sortable by time, unique.
fn new_id() -> String {
    let stamp = time::OffsetDateTime::now_utc();
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "replay-{:04}{:02}{:02}T{:02}{:02}{:02}Z-{}",
        stamp.year(),
        u8::from(stamp.month()),
        stamp.day(),
        stamp.hour(),
        stamp.minute(),
        stamp.second(),
        &uuid[..8]
    )
}

/// An event chosen for redelivery, with where it came from.
struct Chosen {
    event: Value,
    source: Source,
}

/// What the counting pass found to queue.
enum Plan {
    /// Input records in these segments that the filters match.
    Input { segments: Vec<Segment> },
    /// These input records (their outcome failed).
    Records {
        wanted: BTreeSet<(String, i32, i64)>,
    },
}

/// Plans a replay and counts what it selects (the dry run), without queueing anything.
/// Input windows are only counted when `count_input` (the count is wanted before queueing);
/// outcome windows are always read, since that is how their events are chosen.
fn plan(
    settings: &Settings,
    consumer: &BaseConsumer,
    args: &ReplayArgs,
    window: Window,
    ranges: &[OffsetRange],
    count_input: bool,
    tally: &mut Tally,
) -> Result<(Plan, u64), ReplayError> {
    let filters = args.filters();
    let mut unreadable = 0u64;
    let plan = match args.source() {
        ReplaySource::Input => {
            let segments = if ranges.is_empty() {
                window_segments(consumer, &settings.kafka.input_topics, window)?
            } else {
                range_segments(consumer, ranges)?
            };
            if !count_input {
                return Ok((Plan::Input { segments }, 0));
            }
            let total = segments.iter().map(|s| (s.end - s.start) as u64).sum();
            let mut progress = Progress::new(total, "counting");
            scan(consumer, &segments, |m| {
                progress.scanned += 1;
                match event::parse(m.payload(), settings.delivery.max_event_bytes) {
                    Ok(e) => {
                        let facts = Facts::of_event(&e);
                        if filters.matches(&facts) {
                            progress.matched += 1;
                            tally.add(&facts);
                        }
                    }
                    // An invalid event would only be recorded invalid again.
                    Err(_) => unreadable += 1,
                }
                progress.tick();
            })?;
            progress.finish();
            Plan::Input { segments }
        }
        ReplaySource::Outcomes => {
            let topics = vec![settings.kafka.outcome_topic.clone()];
            let segments = window_segments(consumer, &topics, window)?;
            let total = segments.iter().map(|s| (s.end - s.start) as u64).sum();
            let mut progress = Progress::new(total, "outcomes");
            // Each event once, however many selected outcomes it has.
            let mut wanted = BTreeSet::new();
            scan(consumer, &segments, |m| {
                progress.scanned += 1;
                progress.tick();
                let Some(outcome) = m
                    .payload()
                    .and_then(|p| serde_json::from_slice::<Value>(p).ok())
                else {
                    unreadable += 1;
                    return;
                };
                let facts = Facts::of_outcome(&outcome);
                if !outcome_selected(&outcome, &args.skipped_reasons) || !filters.matches(&facts) {
                    return;
                }
                let Ok(source) = serde_json::from_value::<Source>(outcome["source"].clone()) else {
                    return;
                };
                if wanted.insert((source.topic, source.partition, source.offset)) {
                    progress.matched += 1;
                    tally.add(&facts);
                }
            })?;
            progress.finish();
            Plan::Records { wanted }
        }
    };
    Ok((plan, unreadable))
}

/// Reads the planned events and hands each to `sink`; returns how many there were.
fn read_plan(
    settings: &Settings,
    consumer: &BaseConsumer,
    filters: &Filters,
    plan: &Plan,
    sink: &mut dyn FnMut(Chosen) -> Result<(), ReplayError>,
) -> Result<u64, ReplayError> {
    let segments = match plan {
        Plan::Input { segments } => segments.clone(),
        Plan::Records { wanted } => {
            let mut bounds: BTreeMap<(String, i32), (i64, i64)> = BTreeMap::new();
            for (topic, partition, offset) in wanted {
                let b = bounds
                    .entry((topic.clone(), *partition))
                    .or_insert((*offset, *offset));
                b.0 = b.0.min(*offset);
                b.1 = b.1.max(*offset);
            }
            let mut segments = Vec::new();
            for ((topic, partition), (first, last)) in bounds {
                let (low, high) = consumer.fetch_watermarks(&topic, partition, TIMEOUT)?;
                let (start, end) = (first.max(low), (last + 1).min(high));
                if start < end {
                    segments.push(Segment {
                        topic,
                        partition,
                        start,
                        end,
                    });
                }
            }
            segments
        }
    };
    let total = segments.iter().map(|s| (s.end - s.start) as u64).sum();
    let mut progress = Progress::new(total, "queueing");
    let mut failure = None;
    scan(consumer, &segments, |m| {
        progress.scanned += 1;
        progress.tick();
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
        progress.matched += 1;
        let event = m
            .payload()
            .and_then(|p| serde_json::from_slice(p).ok())
            .unwrap_or(Value::Null);
        match sink(Chosen { event, source }) {
            Ok(()) => progress.queued += 1,
            Err(e) => failure = Some(e),
        }
    })?;
    progress.finish();
    if let Plan::Records { wanted } = plan {
        let gone = wanted.len() as u64 - progress.matched;
        if gone > 0 {
            eprintln!("replay: {gone} event(s) are no longer retained in the input topics");
        }
    }
    failure.map_or(Ok(progress.matched), Err)
}

/// Runs the replay; prints the id first and a summary last.
pub async fn run(settings: &Settings, args: &ReplayArgs) -> Result<(), ReplayError> {
    let source = args.source();
    let ranges = args
        .ranges
        .iter()
        .map(|r| parse_range(r))
        .collect::<Result<Vec<_>, _>>()?;
    if source == ReplaySource::Outcomes && !ranges.is_empty() {
        return Err(ReplayError::Refused(
            "--range selects input offsets; with --source outcomes give a window".into(),
        ));
    }
    if !args.skipped_reasons.is_empty() && source != ReplaySource::Outcomes {
        return Err(ReplayError::Refused(
            "--skipped-reason needs --source outcomes".into(),
        ));
    }
    let from_ms = args
        .from
        .as_deref()
        .map(|t| parse_time("--from", t))
        .transpose()?;
    let to_ms = match args.to.as_deref() {
        Some(t) => Some(parse_time("--to", t)?),
        None if from_ms.is_some() => Some(now_ms()),
        None => None,
    };
    let window = Window { from_ms, to_ms };
    window.check(!ranges.is_empty(), args.all)?;

    let id = args.id.clone().unwrap_or_else(new_id);
    let replay = Replay {
        id: id.clone(),
        requested_at: rfc3339_millis(SystemTime::now()),
        source: source.as_str().to_owned(),
    };
    println!("replay id: {id}");
    let consumer = reader(settings, "scan")?;

    // 1. Count what the replay selects: the dry run, and what a confirmation is asked for.
    // With --yes an input window is read once, while queueing.
    let counted = args.dry_run || !args.yes || source == ReplaySource::Outcomes;
    let mut tally = Tally::default();
    let (plan, unreadable) = plan(
        settings, &consumer, args, window, &ranges, counted, &mut tally,
    )?;
    let matched = tally.total();
    if args.dry_run {
        print!("{}", tally.render());
        println!(
            "dry run: {matched} event(s) would be queued for redelivery ({unreadable} unreadable record(s) ignored); nothing was queued"
        );
        return Ok(());
    }
    if counted && matched == 0 {
        println!("replay {id}: nothing matched; nothing queued");
        return Ok(());
    }
    if !args.yes && matched > settings.replay.confirm_above {
        confirm(matched, settings.replay.confirm_above)?;
    }

    // 2. Queue what this replay id has not queued yet.
    let topic = settings.replay_topic();
    ensure_topics(
        &settings.kafka,
        std::slice::from_ref(&topic),
        settings.internal_topics(),
    )
    .await?;
    let done = already_queued(settings, &topic, &id)?;
    let mut queue = Queue::new(settings, topic.clone(), &id)?;
    let (mut queued, mut skipped) = (0u64, 0u64);
    let matched = read_plan(
        settings,
        &consumer,
        &args.filters(),
        &plan,
        &mut |c: Chosen| {
            let key = (c.source.topic.clone(), c.source.partition, c.source.offset);
            if done.contains(&key) {
                skipped += 1;
                return Ok(());
            }
            queue.push(&ReplayRecord {
                kind: "replay".into(),
                replay: replay.clone(),
                event: c.event,
                source: c.source,
            })?;
            queued += 1;
            Ok(())
        },
    )?;
    queue.settle()?;
    println!(
        "replay {id}: {matched} matched, {queued} queued on {topic}, {skipped} already queued by this replay id"
    );
    Ok(())
}
