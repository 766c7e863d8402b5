//! `replay`: the terminal side of a redelivery. Selects events from a bounded window of the
//! input topics (or the events whose outcome failed) and queues them on the redelivery topic
//! with [`crate::replay`], showing progress, counting first and asking before large replays.
//!
//! Safe by default: the window must be bounded (or `--all`), more than
//! `replay.confirm_above` events need a confirmation on a terminal (or `--yes`), and the
//! same replay id never queues an event twice (what is already on the redelivery topic
//! under that id is skipped), so a replay interrupted or run again with `--id` resumes.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime};

use indicatif::{ProgressBar, ProgressStyle};

use crate::domain::outcome::Replay;
use crate::domain::replay::{parse_range, Filters, ReplaySource, Tally, Window};
use crate::domain::time::rfc3339_millis;
use crate::kafka::ensure_topics;
use crate::replay::selection::{Scanner, Selection};
use crate::replay::{blocking, new_id, Counts, ReplayError, Reporter};
use crate::settings::Settings;

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
    /// What a re-enabled webhook missed since `from`: its failed outcomes and its events
    /// skipped as `webhook_disabled`.
    pub fn missed(org: &str, sandbox: &str, from: String, yes: bool) -> Self {
        ReplayArgs {
            source: SourceArg::Outcomes,
            from: Some(from),
            to: None,
            ranges: Vec::new(),
            all: false,
            skipped_reasons: vec!["webhook_disabled".into()],
            orgs: vec![org.to_owned()],
            sandboxes: vec![sandbox.to_owned()],
            campaigns: Vec::new(),
            channels: Vec::new(),
            statuses: Vec::new(),
            request_ids: Vec::new(),
            dry_run: false,
            yes,
            id: None,
        }
    }

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
    i64::try_from(crate::domain::time::now_ms()).unwrap_or(i64::MAX)
}

/// Progress on a terminal (a bar), or plain lines every few seconds elsewhere (logs, CI).
struct Terminal {
    bar: Option<ProgressBar>,
    total: u64,
    counts: Counts,
    started: Instant,
    last_line: Instant,
}

impl Terminal {
    fn new() -> Self {
        Terminal {
            bar: None,
            total: 0,
            counts: Counts::default(),
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    fn line(&self) -> String {
        let c = &self.counts;
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = c.scanned as f64 / secs;
        let left = self.total.saturating_sub(c.scanned) as f64;
        let eta = if rate > 0.0 { left / rate } else { 0.0 };
        format!(
            "replay: scanned {}/{}, matched {}, queued {}, {:.0} records/s, ETA {:.0} s",
            c.scanned, self.total, c.matched, c.queued, rate, eta
        )
    }
}

impl Reporter for Terminal {
    fn phase(&mut self, name: &'static str, total: u64) {
        self.total = total;
        self.counts = Counts::default();
        self.started = Instant::now();
        self.bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} scanned, {msg} {per_sec} ETA {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(name);
            bar
        });
    }

    fn tick(&mut self, counts: &Counts) {
        self.counts = *counts;
        match &self.bar {
            Some(bar) => {
                bar.set_position(counts.scanned);
                bar.set_message(format!(
                    "{} matched, {} queued",
                    counts.matched, counts.queued
                ));
            }
            None if self.last_line.elapsed() >= Duration::from_secs(5) => {
                self.last_line = Instant::now();
                eprintln!("{}", self.line());
            }
            None => {}
        }
    }

    fn done(&mut self, counts: &Counts) {
        self.counts = *counts;
        match self.bar.take() {
            Some(bar) => bar.finish_and_clear(),
            None => eprintln!("{}", self.line()),
        }
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

/// Runs the replay; prints the id first and a summary last.
pub async fn run(settings: &Settings, args: &ReplayArgs) -> Result<(), ReplayError> {
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
    let selection = Selection {
        source: args.source(),
        window: Window { from_ms, to_ms },
        ranges: args
            .ranges
            .iter()
            .map(|r| parse_range(r))
            .collect::<Result<Vec<_>, _>>()?,
        all: args.all,
        filters: args.filters(),
        failed: true,
        skipped_reasons: args.skipped_reasons.clone(),
    };
    selection.check()?;

    let id = args.id.clone().unwrap_or_else(new_id);
    let replay = Replay {
        id: id.clone(),
        requested_at: rfc3339_millis(SystemTime::now()),
        source: selection.source.as_str().to_owned(),
    };
    println!("replay id: {id}");

    // 1. Count what the replay selects: the dry run, and what a confirmation is asked for.
    // With --yes an input window is read once, while queueing.
    let counted = args.dry_run || !args.yes || selection.source == ReplaySource::Outcomes;
    let (planned, tally, unreadable) = {
        let (settings, selection) = (settings.clone(), selection.clone());
        blocking(move || {
            let mut tally = Tally::default();
            let (planned, unreadable) = Scanner::open(&settings, "scan")?.plan(
                &selection,
                counted,
                &mut tally,
                &mut Terminal::new(),
            )?;
            Ok((planned, tally, unreadable))
        })
        .await?
    };
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
        let limit = settings.replay.confirm_above;
        blocking(move || confirm(matched, limit)).await?;
    }

    // 2. Queue what this replay id has not queued yet.
    let topic = settings.replay_topic();
    ensure_topics(
        &settings.kafka,
        std::slice::from_ref(&topic),
        crate::kafka::TopicSpec::from_settings(settings),
    )
    .await?;
    let resume = args.id.is_some();
    let done = {
        let settings = settings.clone();
        blocking(move || {
            let scanner = Scanner::open(&settings, "scan")?;
            let mut progress = Terminal::new();
            scanner.queue(&selection.filters, &planned, &replay, resume, &mut progress)
        })
        .await?
    };
    if done.read.gone > 0 {
        eprintln!(
            "replay: {} event(s) are no longer retained in the input topics",
            done.read.gone
        );
    }
    println!(
        "replay {id}: {} matched, {} queued on {topic}, {} already queued by this replay id",
        done.read.matched, done.queued, done.skipped
    );
    Ok(())
}
