//! The fault suite: events flow while instances join and leave the group, are killed with
//! `kill -9`, the broker restarts and the receiver goes down. Each scenario prints an
//! invariant report and fails unless every input event has a terminal outcome, every
//! event is delivered, and every `delivered` outcome was received at least once; exactly
//! once (the default; `FAULTS_GUARANTEE=at_least_once` for the other mode), it also fails
//! on any duplicate committed outcome. Duplicate deliveries are counted and reported beside
//! the bound they must keep: the requests that can be in flight at each fault.
//!
//! The harness acts as the instances' supervisor: one that exits on its own is started
//! again, and the report counts it; but every fault here is routine, one the processor must
//! ride out in process, so a scenario fails if its supervisor ever had to act.
//!
//! The short variants run with the other tests; `scripts/faults` runs the long ones
//! (`FAULTS_LONG=1`) and collects the reports (RELIABILITY.md).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use feedback_webhooks::receiver::Reply;

use crate::support::kafka::{Producer, Reader};
use crate::support::processor::{keep_logs, Processor};
use crate::support::*;

fn long() -> bool {
    std::env::var("FAULTS_LONG").is_ok_and(|v| v == "1")
}

/// The processing guarantee under test (`exactly_once` unless `FAULTS_GUARANTEE` says).
fn guarantee() -> String {
    std::env::var("FAULTS_GUARANTEE").unwrap_or_else(|_| "exactly_once".into())
}

/// Requests one instance may have under way (`delivery.max_in_flight` below): what a fault
/// may make it send again.
const MAX_IN_FLIGHT: usize = 64;

/// Short or long variant of a figure.
fn pick<T>(short: T, long_: T) -> T {
    if long() {
        long_
    } else {
        short
    }
}

/// Settings every scenario shares: retries generous enough to outlast each fault (the
/// invariant is that everything is delivered in the end) and quick breaker probes.
fn fault_env(h: &Harness, instance: &str) -> Vec<(String, String)> {
    let mut env = h.env.clone();
    env.retain(|(k, _)| k != "FW_STORE__PATH" && k != "FW_DELIVERY__RETRY_SCHEDULE_SECS");
    let store = h.dir.path().join(format!("store-{instance}"));
    let schedule = format!("[1, 2, 4{}]", ", 5".repeat(40));
    env.extend([
        ("FW_STORE__PATH".into(), store.display().to_string()),
        ("FW_DELIVERY__RETRY_SCHEDULE_SECS".into(), schedule),
        ("FW_DELIVERY__RETRY_MAX_AGE_SECS".into(), "900".into()),
        ("FW_DELIVERY__BREAKER_OPEN_SECS".into(), "1".into()),
        ("FW_DELIVERY__BREAKER_MAX_OPEN_SECS".into(), "4".into()),
        (
            "FW_DELIVERY__MAX_IN_FLIGHT".into(),
            MAX_IN_FLIGHT.to_string(),
        ),
        // A transaction lost to a fault holds no more than that either.
        (
            "FW_KAFKA__MAX_TRANSACTION_RECORDS".into(),
            MAX_IN_FLIGHT.to_string(),
        ),
        ("FW_KAFKA__PROCESSING_GUARANTEE".into(), guarantee()),
        // Each result written, with its record's coordinates: a duplicate can be traced.
        (
            "FW_LOG__FILTER".into(),
            "info,feedback_webhooks::record=debug".into(),
        ),
    ]);
    env
}

/// One named instance of the processor that can be stopped, killed and started again.
struct Instance {
    name: String,
    env: Vec<(String, String)>,
    dir: PathBuf,
    runs: usize,
    /// Times it exited on its own and was started again.
    restarts: usize,
    process: Option<Processor>,
}

impl Instance {
    fn new(h: &Harness, name: &str) -> Self {
        Instance {
            name: name.into(),
            env: fault_env(h, name),
            dir: h.dir.path().to_owned(),
            runs: 0,
            restarts: 0,
            process: None,
        }
    }

    /// Starts the instance again if it exited on its own, as a supervisor would.
    fn supervise(&mut self) {
        let exited = self.process.as_mut().and_then(Processor::exited);
        if let Some(status) = exited {
            eprintln!("{} exited ({status}); starting it again", self.name);
            self.restarts += 1;
            self.start();
        }
    }

    /// A new instance, started.
    fn started(h: &Harness, name: &str) -> Self {
        let mut instance = Instance::new(h, name);
        instance.start();
        instance
    }

    fn start(&mut self) {
        self.runs += 1;
        let log = self.dir.join(format!("{}-{}.log", self.name, self.runs));
        self.process = Some(Processor::start(&self.env, log));
    }

    fn stop(&mut self) {
        let mut p = self.process.take().expect("running");
        // After a fault, a stop may wait for the drain deadline and a final commit that
        // retries while the cluster settles: the suite checks loss and duplicates, not how
        // fast a stop is.
        let status = p.stop_within(Duration::from_secs(180));
        // A transaction call that the Kafka client leaves blocked ends the process with
        // its own status: nothing was committed, which the checks of loss and duplicates
        // cover.
        let stuck = status.code() == Some(feedback_webhooks::record::watchdog::EXIT_STUCK);
        assert!(
            status.success() || stuck,
            "{} exited with {status}",
            self.name
        );
    }

    fn kill(&mut self) {
        self.process.take().expect("running").kill();
    }
}

/// Produces events at a steady rate in the background; returns the ids acknowledged.
fn start_load(h: &Harness, prefix: &str, per_second: usize, for_: Duration) -> Load {
    let (bootstrap, topic) = (h.topics.bootstrap.clone(), h.topics.input.clone());
    let prefix = prefix.to_owned();
    let started = Instant::now();
    let sending = tokio::spawn(async move {
        let producer = Producer::on(&bootstrap);
        let tick = Duration::from_millis(50);
        let per_tick = (per_second / 20).max(1);
        let mut ids = Vec::new();
        let mut next = 0;
        while started.elapsed() < for_ {
            let batch: Vec<String> = (next..next + per_tick)
                .map(|i| format!("{prefix}-{i}"))
                .collect();
            next += per_tick;
            let events: Vec<Vec<u8>> = batch
                .iter()
                .map(|id| serde_json::to_vec(&spec_event(id)).expect("event"))
                .collect();
            let sends = batch
                .iter()
                .zip(&events)
                .map(|(id, event)| producer.send(&topic, Some(id), Some(event)));
            futures::future::join_all(sends).await;
            ids.extend(batch);
            let due = started + tick * (next / per_tick) as u32;
            tokio::time::sleep_until(due.into()).await;
        }
        ids
    });
    Load { sending, started }
}

/// Events being sent: the ids sent, once done, and when it started.
struct Load {
    sending: tokio::task::JoinHandle<Vec<String>>,
    started: Instant,
}

/// Reads the outcome topic until every id has an outcome (failing after `patience`), and
/// a little longer, so that outcomes written twice are in the report too.
fn outcomes_of(
    h: &Harness,
    ids: &[String],
    patience: Duration,
    instances: &mut [&mut Instance],
) -> Reader {
    let mut outcomes = Reader::on(&h.topics.outcomes, &h.topics.bootstrap);
    let until = Instant::now() + patience;
    loop {
        instances.iter_mut().for_each(|i| i.supervise());
        outcomes.poll_for(Duration::from_millis(500));
        let done: HashSet<&str> = outcomes
            .records
            .iter()
            .filter_map(|o| o["eventId"].as_str())
            .collect();
        let missing = ids.iter().filter(|id| !done.contains(id.as_str())).count();
        if missing == 0 {
            break;
        }
        if Instant::now() >= until {
            dump_stacks(instances, h.dir.path());
            keep_logs(h.dir.path());
        }
        assert!(
            Instant::now() < until,
            "{missing} of {} events have no outcome after {patience:?}",
            ids.len()
        );
    }
    outcomes.poll_for(Duration::from_secs(2));
    outcomes
}

/// Writes where every thread of each running instance is beside its log, for a run that
/// stalls.
fn dump_stacks(instances: &[&mut Instance], dir: &Path) {
    for i in instances {
        if let Some(p) = &i.process {
            p.dump_stacks(&dir.join(format!("{}-stacks.log", i.name)));
        }
    }
}

/// What a scenario's run shows about the guarantees.
struct Report {
    scenario: String,
    guarantee: String,
    /// Faults the scenario caused (kills, broker restarts, members joining or leaving).
    faults: usize,
    /// Instances that exited on their own and were started again.
    restarts: usize,
    /// Times an instance started its parts again in process after a fault (from its last
    /// commit, like a restart): each may redo what it had in flight.
    recoveries: usize,
    events: usize,
    /// Events with at least one terminal outcome.
    with_outcome: usize,
    /// Committed outcome records beyond the first of their event (the reader is
    /// `read_committed`): a record processed again after a fault.
    duplicate_outcomes: usize,
    statuses: BTreeMap<String, usize>,
    /// Events delivered (per their outcome) that the receiver never saw: must be 0.
    delivered_not_received: usize,
    requests: usize,
    /// Requests beyond the first for the same event.
    duplicate_deliveries: usize,
    /// Rebalance revocations seen in the instances' logs, and the records they released
    /// unfinished after the grace period.
    revocations: usize,
    released: u64,
    /// Warnings and errors the instances logged, by the start of their message.
    warnings: BTreeMap<String, usize>,
    elapsed: Duration,
    /// A few events with duplicate committed outcomes, to look for in the logs.
    duplicated: Vec<String>,
    /// Input records beyond the first for the same event (the load producer's retries).
    input_written_twice: usize,
}

/// Revocations, released records, in-process recoveries and warnings in every processor
/// log of `dir`.
fn scan_logs(dir: &Path) -> (usize, u64, usize, BTreeMap<String, usize>) {
    let (mut revocations, mut released, mut recoveries, mut warnings) = (0, 0, 0, BTreeMap::new());
    let files = std::fs::read_dir(dir).into_iter().flatten().flatten();
    for file in files.filter(|f| f.path().extension().is_some_and(|e| e == "log")) {
        let text = std::fs::read_to_string(file.path()).unwrap_or_default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let message = v["fields"]["message"].as_str().unwrap_or_default();
            if message == "partitions revoked" && v["fields"]["consumer"] == "input" {
                revocations += 1;
                released += v["fields"]["released"].as_u64().unwrap_or(0);
            }
            if message.starts_with("the processor's parts stopped after a fault") {
                recoveries += 1;
            }
            if v["level"] == "WARN" || v["level"] == "ERROR" {
                // librdkafka's messages carry addresses and counts: group by their start.
                let kind: String = message.chars().take(36).collect();
                *warnings.entry(kind).or_default() += 1;
            }
        }
    }
    (revocations, released, recoveries, warnings)
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    /// The report of `scenario` (`faults` of them) on `instances`, from what `run` produced
    /// and what `h`'s receiver got.
    fn build(
        scenario: &str,
        faults: usize,
        instances: &[&Instance],
        run: &Run,
        h: &Harness,
    ) -> Self {
        let (ids, outcomes, started) = (&run.ids, &run.outcomes, run.started);
        let (receiver, logs) = (&h.receiver, h.dir.path());
        let (revocations, released, recoveries, warnings) = scan_logs(logs);
        let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut per_event: HashMap<&str, Vec<&str>> = HashMap::new();
        for o in &outcomes.records {
            if let Some(id) = o["eventId"].as_str().filter(|id| wanted.contains(id)) {
                per_event
                    .entry(id)
                    .or_default()
                    .push(o["status"].as_str().unwrap_or("?"));
            }
        }
        // The load producer may write an event twice (a retry during a failover): each
        // copy is an input record of its own, with its own outcome and delivery.
        let mut per_source: HashMap<(i64, i64), usize> = HashMap::new();
        let mut copies: HashMap<&str, HashSet<(i64, i64)>> = HashMap::new();
        for o in &outcomes.records {
            if let Some(id) = o["eventId"].as_str().filter(|id| wanted.contains(id)) {
                let source = &o["source"];
                let key = (
                    source["partition"].as_i64().unwrap_or(-1),
                    source["offset"].as_i64().unwrap_or(-1),
                );
                *per_source.entry(key).or_default() += 1;
                copies.entry(id).or_default().insert(key);
            }
        }
        let input_copies = |id: &str| copies.get(id).map_or(1, HashSet::len);
        let received = receiver.received();
        let mut receipts: HashMap<String, usize> = HashMap::new();
        for r in &received {
            if let Some(id) = r.header("webhook-id") {
                *receipts.entry(id.to_owned()).or_default() += 1;
            }
        }
        let mut statuses = BTreeMap::new();
        let mut delivered_not_received = 0;
        for statuses_of in per_event.values() {
            // The event's final word is its last outcome.
            let last = statuses_of.last().copied().unwrap_or("?");
            *statuses.entry(last.to_owned()).or_default() += 1;
        }
        for (id, statuses_of) in &per_event {
            if statuses_of.contains(&"delivered") && !receipts.contains_key(*id) {
                delivered_not_received += 1;
            }
        }
        let report = Report {
            scenario: scenario.into(),
            guarantee: guarantee(),
            faults,
            restarts: instances.iter().map(|i| i.restarts).sum(),
            recoveries,
            events: ids.len(),
            with_outcome: per_event.len(),
            // Exactly once is per input record: outcomes are counted by their source.
            duplicate_outcomes: per_source.values().map(|n| n - 1).sum(),
            statuses,
            delivered_not_received,
            requests: received.len(),
            duplicate_deliveries: receipts
                .iter()
                .map(|(id, n)| n.saturating_sub(input_copies(id)))
                .sum(),
            input_written_twice: copies.values().map(|c| c.len() - 1).sum(),
            revocations,
            released,
            warnings,
            elapsed: started.elapsed(),
            // Each input record with more than one outcome, and when each was completed,
            // to find the moment in the instances' logs.
            duplicated: per_source
                .iter()
                .filter(|(_, n)| **n > 1)
                .take(5)
                .map(|((partition, offset), _)| {
                    let of_it = |o: &&serde_json::Value| {
                        o["source"]["partition"] == *partition && o["source"]["offset"] == *offset
                    };
                    let times: Vec<&str> = outcomes
                        .records
                        .iter()
                        .filter(of_it)
                        .map(|o| o["completedAt"].as_str().unwrap_or("?"))
                        .collect();
                    let id = outcomes
                        .records
                        .iter()
                        .find(of_it)
                        .map_or("?", |o| o["eventId"].as_str().unwrap_or("?"));
                    format!("{id} p{partition}@{offset} {times:?}")
                })
                .collect(),
        };
        // Kept while they exist: the harness's folder is gone by the time of the checks.
        if report.duplicate_outcomes > 0
            || report.duplicate_deliveries > 0
            || report.with_outcome != report.events
        {
            keep_logs(logs);
        }
        report
    }

    /// Exactly once, a fault, an instance's restart after it stopped on its own (a
    /// transaction the broker aborted), or its parts started again in process after a
    /// fault, makes an instance redo at most what it had in flight.
    fn duplicate_bound(&self) -> usize {
        MAX_IN_FLIGHT * (self.faults + self.restarts + self.recoveries)
    }

    fn check_duplicate_deliveries(&self) {
        if self.guarantee == "exactly_once" {
            assert!(
                self.duplicate_deliveries <= self.duplicate_bound(),
                "more duplicate deliveries than requests in flight at the faults:\n{self}"
            );
        }
    }

    /// Prints the report (and appends it to `$FAULTS_REPORT`), then checks the invariants.
    fn check(&self) {
        println!("{self}");
        if let Ok(path) = std::env::var("FAULTS_REPORT") {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(f, "{self}");
            }
        }
        assert_eq!(self.with_outcome, self.events, "events lost:\n{self}");
        assert_eq!(
            self.statuses.get("delivered").copied().unwrap_or(0),
            self.events,
            "not every event was delivered:\n{self}"
        );
        assert_eq!(self.delivered_not_received, 0, "{self}");
        // Routine faults are ridden out in process: the supervisor never has to act.
        assert_eq!(
            self.restarts, 0,
            "an instance exited on its own and had to be restarted:\n{self}"
        );
        if self.guarantee == "exactly_once" {
            assert_eq!(
                self.duplicate_outcomes, 0,
                "duplicate committed outcomes exactly once:\n{self}"
            );
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "== fault scenario {} ({}, {} variant, {:.0} s) ==",
            self.scenario,
            self.guarantee,
            if long() { "long" } else { "short" },
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "  faults                          {} (instances restarted after exiting: {})",
            self.faults, self.restarts
        )?;
        writeln!(f, "  input events                    {}", self.events)?;
        writeln!(
            f,
            "  with a terminal outcome         {} (lost: {})",
            self.with_outcome,
            self.events - self.with_outcome
        )?;
        writeln!(f, "  final statuses                  {:?}", self.statuses)?;
        writeln!(
            f,
            "  delivered but never received    {}",
            self.delivered_not_received
        )?;
        writeln!(f, "  requests received               {}", self.requests)?;
        writeln!(
            f,
            "  events the producer wrote twice {} (each copy delivered once is no duplicate)",
            self.input_written_twice
        )?;
        writeln!(
            f,
            "  duplicate deliveries            {} (bound: {} in flight × ({} faults + {} restarts + {} in-process recoveries) = {})",
            self.duplicate_deliveries,
            MAX_IN_FLIGHT,
            self.faults,
            self.restarts,
            self.recoveries,
            self.duplicate_bound()
        )?;
        writeln!(
            f,
            "  duplicate committed outcomes    {} {:?} (per input record)",
            self.duplicate_outcomes, self.duplicated
        )?;
        writeln!(
            f,
            "  input revocations               {} (records released unfinished: {})",
            self.revocations, self.released
        )?;
        write!(f, "  warnings logged                 {:?}", self.warnings)
    }
}

async fn fault_harness(name: &str, bootstrap: &str) -> Harness {
    replicated_fault_harness(name, bootstrap, 1).await
}

async fn replicated_fault_harness(name: &str, bootstrap: &str, replication: i32) -> Harness {
    let h = Harness::start_replicated(name, bootstrap, replication).await;
    // A little latency keeps deliveries under way when a fault strikes.
    h.receiver.respond(|_| Reply {
        delay: Some(Duration::from_millis(5)),
        ..Reply::status(200)
    });
    h.configure(ORG, &h.receiver.url("/hook")).await;
    h
}

/// Waits `s` seconds, supervising `instances` meanwhile.
/// What a scenario produced: the events it sent, and the outcome topic read until each
/// has an outcome (or patience ran out).
struct Run {
    ids: Vec<String>,
    outcomes: Reader,
    started: Instant,
}

/// Waits for the load to be sent and for an outcome of each of its events (up to
/// `patience`), then stops `running`.
async fn settle(h: &Harness, load: Load, patience: Duration, running: &mut [&mut Instance]) -> Run {
    let ids = load.sending.await.expect("load");
    let outcomes = outcomes_of(h, &ids, patience, running);
    for instance in running.iter_mut() {
        instance.stop();
    }
    Run {
        ids,
        outcomes,
        started: load.started,
    }
}

async fn sleep_secs(s: u64, instances: &mut [&mut Instance]) {
    let until = Instant::now() + Duration::from_secs(s);
    while Instant::now() < until {
        instances.iter_mut().for_each(|i| i.supervise());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_1_to_3_to_1_while_events_flow() {
    let h = fault_harness("scale", &kafka::bootstrap()).await;
    let rounds = pick(1, 3);
    let mut a = Instance::new(&h, "a");
    let mut b = Instance::new(&h, "b");
    let mut c = Instance::new(&h, "c");
    a.start();
    let load = start_load(&h, "scale", 100, Duration::from_secs(20 * rounds));
    for _ in 0..rounds {
        sleep_secs(3, &mut [&mut a]).await;
        b.start();
        sleep_secs(3, &mut [&mut a, &mut b]).await;
        c.start();
        sleep_secs(6, &mut [&mut a, &mut b, &mut c]).await;
        c.stop();
        sleep_secs(3, &mut [&mut a, &mut b]).await;
        b.stop();
        sleep_secs(5, &mut [&mut a]).await;
    }
    let run = settle(&h, load, Duration::from_secs(180), &mut [&mut a]).await;
    let report = Report::build("scale 1→3→1", 4 * rounds as usize, &[&a, &b, &c], &run, &h);
    report.check();
    // Instances that join and leave gracefully hand over completed work: only a record
    // released unfinished after the grace period may be delivered twice.
    assert!(
        report.duplicate_deliveries as u64 <= report.released,
        "graceful rebalances duplicated deliveries:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_repeatedly_during_load() {
    let h = fault_harness("kill9", &kafka::bootstrap()).await;
    let kills = pick(3, 20);
    let [mut a, mut b] = ["a", "b"].map(|name| Instance::started(&h, name));
    let load = start_load(&h, "kill9", 100, Duration::from_secs(6 * kills as u64 + 4));
    for k in 0..kills {
        sleep_secs(5, &mut [&mut a, &mut b]).await;
        let victim = if k % 2 == 0 { &mut a } else { &mut b };
        victim.kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        victim.start();
    }
    let run = settle(&h, load, Duration::from_secs(240), &mut [&mut a, &mut b]).await;
    let name = format!("kill -9 ×{kills}");
    let report = Report::build(&name, kills, &[&a, &b], &run, &h);
    report.check();
    report.check_duplicate_deliveries();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receiver_down_then_back() {
    let mut h = fault_harness("receiver-down", &kafka::bootstrap()).await;
    let down = pick(15, 60);
    let mut a = Instance::new(&h, "a");
    a.start();
    let load = start_load(&h, "down", 50, Duration::from_secs(down + 15));
    sleep_secs(5, &mut [&mut a]).await;
    h.receiver.go_down();
    sleep_secs(down, &mut [&mut a]).await;
    h.receiver.come_back().await;
    let run = settle(&h, load, Duration::from_secs(180), &mut [&mut a]).await;
    let name = format!("receiver down {down} s");
    let report = Report::build(&name, 1, &[&a], &run, &h);
    report.check();
    report.check_duplicate_deliveries();
}

/// Runs `scripts/kafka ARGS` with `env`, sharing the local broker's jars when installed;
/// fails the test if it fails.
fn kafka_script(args: &[&str], env: &[(&str, &str)]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new(root.join("scripts/kafka"));
    command.args(args).envs(env.iter().copied());
    let shared = root.join(".kafka/libs");
    if shared.join(".complete").exists() {
        command.env("KAFKA_LIBS", shared);
    }
    let status = command.status().expect("scripts/kafka");
    assert!(status.success(), "scripts/kafka {args:?} failed");
}

/// Held by the scenarios that run brokers of their own: four more JVMs at once on a small
/// machine would slow everything past the suite's patience.
static OWN_BROKERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A broker of the scenario's own (ports 19092/19093), so stopping it disturbs no other test.
struct OwnBroker {
    home: tempfile::TempDir,
}

impl OwnBroker {
    const BOOTSTRAP: &str = "127.0.0.1:19092";

    fn script(&self, action: &str) {
        let home = self.home.path().display().to_string();
        kafka_script(
            &[action],
            &[
                ("KAFKA_PORT", "19092"),
                ("KAFKA_CONTROLLER_PORT", "19093"),
                ("KAFKA_HOME_DIR", &home),
            ],
        );
    }

    fn start() -> Self {
        let broker = OwnBroker {
            home: tempfile::tempdir().expect("broker dir"),
        };
        broker.script("start");
        broker
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.script("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_stop_and_start_during_load() {
    let _alone = OWN_BROKERS.lock().await;
    let broker = OwnBroker::start();
    let h = fault_harness("broker", OwnBroker::BOOTSTRAP).await;
    let (restarts, down) = (pick(1, 3), pick(10, 20));
    let [mut a, mut b] = ["a", "b"].map(|name| Instance::started(&h, name));
    let load = start_load(
        &h,
        "broker",
        100,
        Duration::from_secs((down + 15) * restarts as u64 + 5),
    );
    for _ in 0..restarts {
        sleep_secs(6, &mut [&mut a, &mut b]).await;
        broker.script("stop");
        sleep_secs(down, &mut [&mut a, &mut b]).await;
        broker.script("start");
        sleep_secs(9, &mut [&mut a, &mut b]).await;
    }
    let run = settle(&h, load, Duration::from_secs(240), &mut [&mut a, &mut b]).await;
    let name = format!("broker down {down} s ×{restarts}");
    let report = Report::build(&name, restarts, &[&a, &b], &run, &h);
    drop(h);
    drop(broker);
    report.check();
    report.check_duplicate_deliveries();
}

/// The single broker restarts twice under load (about 2,000 events), and one processor, as
/// the README starts it and with nobody to restart it, rides both out in process: it never
/// exits, `/readyz` answers 503 while the broker is away, and every event has its outcome
/// within a minute of the broker's return, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_broker_restarting_twice_is_ridden_out_in_process() {
    let _alone = OWN_BROKERS.lock().await;
    let broker = OwnBroker::start();
    let h = fault_harness("ride", OwnBroker::BOOTSTRAP).await;
    let mut only = Instance::started(&h, "only");
    let addr = only.process.as_mut().expect("running").http_addr();
    let load = start_load(&h, "ride", 68, Duration::from_secs(54));
    let mut unready = 0;
    for _ in 0..2 {
        unready += watch_ready(&addr, 6, &mut only).await;
        broker.script("stop");
        unready += watch_ready(&addr, 20, &mut only).await;
        broker.script("start");
    }
    let run = settle(&h, load, Duration::from_secs(60), &mut [&mut only]).await;
    assert_eq!((only.runs, only.restarts), (1, 0), "the processor exited");
    assert!(unready > 0, "/readyz never said the broker was away");
    let report = Report::build(
        "single broker restarted ×2, in process",
        2,
        &[&only],
        &run,
        &h,
    );
    drop(h);
    drop(broker);
    report.check();
    report.check_duplicate_deliveries();
}

/// Asks `/readyz` twice a second for `secs` seconds, failing if the instance exits; answers
/// how many times it was not ready.
async fn watch_ready(addr: &str, secs: u64, instance: &mut Instance) -> usize {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut unready = 0;
    while Instant::now() < until {
        let exited = instance.process.as_mut().and_then(Processor::exited);
        assert!(exited.is_none(), "{} exited: {exited:?}", instance.name);
        if crate::observe::get(addr, "/readyz").await.0 != 200 {
            unready += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    unready
}

/// A 3-node KRaft cluster of the scenario's own (`scripts/kafka cluster`, ports 19192–19197).
struct OwnCluster {
    home: tempfile::TempDir,
}

impl OwnCluster {
    const BOOTSTRAP: &str = "127.0.0.1:19192,127.0.0.1:19194,127.0.0.1:19196";

    fn script(&self, args: &[&str]) {
        let home = self.home.path().display().to_string();
        let args: Vec<&str> = std::iter::once("cluster")
            .chain(args.iter().copied())
            .collect();
        kafka_script(
            &args,
            &[
                ("KAFKA_CLUSTER_PORT", "19192"),
                ("KAFKA_CLUSTER_DIR", &home),
            ],
        );
    }

    fn start() -> Self {
        // Made first, so that its nodes are stopped even if starting fails half-way.
        let cluster = OwnCluster {
            home: tempfile::tempdir().expect("cluster dir"),
        };
        cluster.script(&["start"]);
        cluster
    }

    fn metadata(topic: Option<&str>) -> rdkafka::metadata::Metadata {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", Self::BOOTSTRAP)
            .create()
            .expect("client");
        consumer
            .fetch_metadata(topic, Duration::from_secs(30))
            .expect("metadata")
    }

    /// The node leading partition `partition` of `topic`.
    fn leader_of(topic: &str, partition: i32) -> i32 {
        Self::metadata(Some(topic)).topics()[0]
            .partitions()
            .iter()
            .find(|p| p.id() == partition)
            .map(|p| p.leader())
            .expect("partition")
    }

    /// The node coordinating consumer group `group`: the leader of its partition of
    /// `__consumer_offsets` (Java's `String.hashCode` of the id, modulo the 6 partitions
    /// `scripts/kafka` configures).
    fn coordinator_of(group: &str) -> i32 {
        let hash = group
            .encode_utf16()
            .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
        let abs = if hash == i32::MIN { 0 } else { hash.abs() };
        Self::leader_of("__consumer_offsets", abs % 6)
    }

    /// Waits until every replica of every partition is in sync again, as an operator does
    /// between the steps of a rolling restart (under-replicated partitions: 0).
    async fn wait_in_sync(instances: &mut [&mut Instance]) {
        let until = Instant::now() + Duration::from_secs(180);
        loop {
            let metadata = tokio::task::block_in_place(|| Self::metadata(None));
            let behind = metadata
                .topics()
                .iter()
                .flat_map(|t| t.partitions())
                .filter(|p| p.isr().len() < p.replicas().len())
                .count();
            if behind == 0 {
                return;
            }
            assert!(
                Instant::now() < until,
                "{behind} partitions still under-replicated after 180 s"
            );
            sleep_secs(1, instances).await;
        }
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        self.script(&["stop"]);
    }
}

/// With every topic replicated three times (`min.insync.replicas` 2), a node is killed with
/// `kill -9` mid-run and brought back: the one leading the input, then (long variant) the
/// group coordinator's, in turns. Nothing is lost, and the instances ride it out in process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_broker_killed_during_load() {
    let _alone = OWN_BROKERS.lock().await;
    let cluster = OwnCluster::start();
    let h = replicated_fault_harness("cluster", OwnCluster::BOOTSTRAP, 3).await;
    let (kills, down) = (pick(1, 6), pick(10, 20));
    let [mut a, mut b] = ["a", "b"].map(|name| Instance::started(&h, name));
    let load = start_load(
        &h,
        "cluster",
        100,
        Duration::from_secs((down + 15) * kills as u64 + 5),
    );
    let mut killed = Vec::new();
    for k in 0..kills {
        sleep_secs(6, &mut [&mut a, &mut b]).await;
        let (what, node) = if k % 2 == 0 {
            ("input leader", OwnCluster::leader_of(&h.topics.input, 0))
        } else {
            (
                "group coordinator",
                OwnCluster::coordinator_of(&h.topics.group),
            )
        };
        killed.push(format!("{what} {node}"));
        cluster.script(&["kill", &node.to_string()]);
        sleep_secs(down, &mut [&mut a, &mut b]).await;
        cluster.script(&["start-node", &node.to_string()]);
        sleep_secs(9, &mut [&mut a, &mut b]).await;
    }
    let run = settle(&h, load, Duration::from_secs(240), &mut [&mut a, &mut b]).await;
    let name = format!("3-node cluster, nodes killed for {down} s: {killed:?}");
    let report = Report::build(&name, kills, &[&a, &b], &run, &h);
    drop(h);
    drop(cluster);
    report.check();
    report.check_duplicate_deliveries();
}

/// A rolling restart of the 3-node cluster under load, as an operator upgrades it: each
/// node in turn is stopped cleanly, started again, and its replicas are back in sync before
/// the next one (twice over in the long variant).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_rolling_restart_during_load() {
    let _alone = OWN_BROKERS.lock().await;
    let cluster = OwnCluster::start();
    let h = replicated_fault_harness("rolling", OwnCluster::BOOTSTRAP, 3).await;
    let rounds = pick(1, 2);
    let [mut a, mut b] = ["a", "b"].map(|name| Instance::started(&h, name));
    let load = start_load(&h, "rolling", 100, Duration::from_secs(75 * rounds as u64));
    let mut steps = 0;
    sleep_secs(5, &mut [&mut a, &mut b]).await;
    'rolling: for _ in 0..rounds {
        for node in ["1", "2", "3"] {
            if load.sending.is_finished() {
                break 'rolling;
            }
            tokio::task::block_in_place(|| cluster.script(&["stop-node", node]));
            sleep_secs(2, &mut [&mut a, &mut b]).await;
            tokio::task::block_in_place(|| cluster.script(&["start-node", node]));
            OwnCluster::wait_in_sync(&mut [&mut a, &mut b]).await;
            steps += 1;
        }
    }
    let run = settle(&h, load, Duration::from_secs(240), &mut [&mut a, &mut b]).await;
    let name = format!("3-node cluster, rolling restart ({steps} node restarts)");
    let report = Report::build(&name, steps, &[&a, &b], &run, &h);
    drop(h);
    drop(cluster);
    assert!(
        steps >= 3,
        "the load ended before one full round:\n{report}"
    );
    report.check();
    report.check_duplicate_deliveries();
}
