//! Benchmark harness: the real processor binary against the local broker and local HTTPS
//! receivers, with the two limits it is compared to measured in the same run on the same
//! machine: the raw consume rate of the input and the raw POST rate to the same receivers.
//!
//! Run it with `scripts/bench` (see BENCHMARKS.md).

mod abuse;
mod admin;
mod console;
mod nginx;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use feedback_webhooks::delivery::client::ClientOptions;
use feedback_webhooks::delivery::{build_client, Sender};
use feedback_webhooks::receiver::{bind, serve, LocalCa, Received, Reply};
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;
use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Every endpoint answers 200.
    Healthy,
    /// Endpoint 0 of the endpoints never answers (requests time out).
    Timeout,
    /// Endpoint 0 answers 429 with `Retry-After`.
    RateLimited,
    /// The events are all produced before the processor starts (memory figure).
    Backlog,
    /// `--shared-tenants` webhooks that are paths on ONE host, every one answering 200.
    SharedHost,
    /// As `shared-host`, but tenant 0's path answers 503.
    SharedHostFailing,
    /// As `shared-host`, but tenant 0's path never answers (requests time out).
    SharedHostHanging,
    /// As `shared-host`, but tenant 0's webhook is capped at 50 requests a second (burst
    /// 10): its events wait or park while the others go on (own receiver only).
    SharedHostCapped,
    /// As `shared-host`, with events produced at `--paced-rate` per second (latency figure).
    Paced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReceiverKind {
    Own,
    Nginx,
}

impl Scenario {
    /// Webhooks are paths on one host.
    fn shared(self) -> bool {
        matches!(
            self,
            Scenario::SharedHost
                | Scenario::SharedHostFailing
                | Scenario::SharedHostHanging
                | Scenario::SharedHostCapped
                | Scenario::Paced
        )
    }

    /// Tenant 0 (on the shared host) or endpoint 0 (on ten hosts) is not healthy.
    fn has_sick(self) -> bool {
        matches!(
            self,
            Scenario::Timeout
                | Scenario::RateLimited
                | Scenario::SharedHostFailing
                | Scenario::SharedHostHanging
                | Scenario::SharedHostCapped
        )
    }
}

#[derive(Parser, Debug)]
#[command(about = "Throughput, latency and memory of the processor on this machine")]
struct Args {
    #[arg(long, value_enum, num_args = 1.., default_values_t = [Scenario::Healthy, Scenario::Timeout, Scenario::RateLimited])]
    scenario: Vec<Scenario>,
    /// Events per scenario. A burst of 200k lasts several seconds, so the first second's
    /// ramp (connections opening, adaptive limits growing) does not dominate the rate.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Events of the backlog scenario.
    #[arg(long, default_value_t = 1_000_000)]
    backlog_events: usize,
    #[arg(long, default_value_t = 100)]
    tenants: usize,
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Tenants of the shared-host scenarios (each a path on the one host).
    #[arg(long, default_value_t = 10)]
    shared_tenants: usize,
    /// Events of the paced scenario (25 s at 2,000/s).
    #[arg(long, default_value_t = 50_000)]
    paced_events: usize,
    /// Events per second of the paced scenario.
    #[arg(long, default_value_t = 2_000)]
    paced_rate: usize,
    /// Extra processor settings, as FW_* variables: `--set DELIVERY__HOST_CONCURRENCY_MAX=512`.
    #[arg(long = "set", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
    /// Also print the processor's scheduling metrics after each scenario.
    #[arg(long)]
    verbose: bool,
    /// Measure the administration API instead (write latency, delivery-log queries with
    /// 1M outcomes indexed).
    #[arg(long)]
    admin: bool,
    /// Abuse the administration API instead (made-up tokens, silent connections).
    #[arg(long)]
    abuse: bool,
    /// Measure the admin console instead (page weight and time to first render of the
    /// inventory with 1,000 webhooks, in headless Chromium).
    #[arg(long)]
    console: bool,
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// The processor's delivery.max_in_flight (also the raw POST concurrency).
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// Batch size of the event producer (the upstream service). The processor's memory
    /// depends on it: a compressed batch is decompressed whole. 16 KiB is a Java producer's
    /// default, 1 MB librdkafka's.
    #[arg(long, default_value_t = 16_384)]
    producer_batch_bytes: usize,
    /// The processor binary to measure (default: the one built beside this harness), to
    /// compare builds with the same harness.
    #[arg(long)]
    processor: Option<PathBuf>,
    /// Compression of the event producer: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "lz4")]
    producer_compression: String,
    /// The receiver: the project's own HTTPS receiver, or nginx (Debian's nginx-light,
    /// `return 200`) with wrk as the POST limit.
    #[arg(long, value_enum, default_value_t = ReceiverKind::Own)]
    receiver: ReceiverKind,
    /// nginx offers HTTP/1.1 only (HTTP/2 is offered beside it otherwise).
    #[arg(long)]
    http1_only: bool,
    /// nginx's worker processes.
    #[arg(long, default_value_t = 2)]
    nginx_workers: usize,
    /// Writes each event's produce time (ms since the first) and latency (ms) to this CSV
    /// file, to see when a latency tail happens (the last scenario run writes it).
    #[arg(long)]
    latency_trace: Option<PathBuf>,
    /// Every webhook carries a filter of five conditions (which every event meets, so all
    /// five are evaluated) and a delivery policy of its own: their cost on the hot path.
    #[arg(long)]
    webhook_policy: bool,
    /// Every tenant's org has a notification endpoint (own receiver, path `/ops`) that
    /// answers 503 after 1 s, every time: what notifying a failing tenant's owner costs
    /// the others when the owner's endpoint fails too.
    #[arg(long)]
    notify_failing: bool,
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected NAME=VALUE")?;
    Ok((format!("FW_{k}"), v.to_owned()))
}

const SANDBOX: &str = "bench-sandbox";
/// The paced scenario's latency is measured after this warm-up (the processor's first
/// seconds after joining its group: its other consumer groups join, connections open).
const PACED_WARM_UP: Duration = Duration::from_secs(2);
const CAMPAIGN: &str = "bench-campaign";

/// Receipt times by event index, from every receiver.
struct Receipts {
    times: Mutex<Vec<Option<Instant>>>,
    count: AtomicUsize,
    /// Events answered 200 more than once (delivered again).
    duplicates: AtomicUsize,
}

impl Receipts {
    fn new(n: usize) -> Self {
        Receipts {
            times: Mutex::new(vec![None; n]),
            count: AtomicUsize::new(0),
            duplicates: AtomicUsize::new(0),
        }
    }

    fn record(&self, r: &Received) {
        if let Some(id) = r.header("webhook-id") {
            self.record_id(id, Instant::now());
        }
    }

    /// The event whose `webhook-id` is `id` was received at `at` (the first time counts).
    fn record_id(&self, id: &str, at: Instant) {
        let Some(index) = id.rsplit('-').next().and_then(|i| i.parse::<usize>().ok()) else {
            return;
        };
        let mut times = self.times.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = times.get_mut(index) {
            if slot.is_none() {
                *slot = Some(at);
                self.count.fetch_add(1, Ordering::Relaxed);
            } else {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// What nginx's log says about the connections and protocols the processor used.
#[derive(Default)]
struct Wire {
    /// Connections seen, by the port (host) they came to.
    connections: std::collections::HashMap<u16, std::collections::HashSet<u64>>,
    protocols: std::collections::BTreeMap<String, usize>,
}

/// What nginx saw of a run.
struct WireFigures {
    connections: usize,
    most_to_one_host: usize,
    protocols: String,
}

struct Receivers {
    urls: Vec<String>,
    ca_file: PathBuf,
    receipts: Arc<Receipts>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// nginx, when it is the receiver, with its log's follower.
    nginx: Option<NginxReceiver>,
}

struct NginxReceiver {
    server: Arc<nginx::Nginx>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    follower: Option<std::thread::JoinHandle<()>>,
    wire: Arc<Mutex<Wire>>,
}

impl Receivers {
    /// Connections opened and requests by protocol, from nginx's log (none for the
    /// project's receiver).
    fn wire(&self) -> Option<WireFigures> {
        let n = self.nginx.as_ref()?;
        let wire = n.wire.lock().unwrap_or_else(|e| e.into_inner());
        Some(WireFigures {
            connections: wire.connections.values().map(|c| c.len()).sum(),
            most_to_one_host: wire
                .connections
                .values()
                .map(|c| c.len())
                .max()
                .unwrap_or(0),
            protocols: format!("{:?}", wire.protocols),
        })
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(n) = &mut self.nginx {
            n.stop.store(true, Ordering::Relaxed);
            if let Some(f) = n.follower.take() {
                let _ = f.join();
            }
        }
    }
}

/// nginx as the receiver of `scenario` (tenant 0's path failing or hanging as the
/// scenario says), its log feeding `receipts`.
async fn start_nginx(
    dir: &Path,
    ca: &LocalCa,
    args: &Args,
    scenario: Scenario,
    receipts: &Arc<Receipts>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> NginxReceiver {
    let hanging_t0 = if scenario == Scenario::SharedHostHanging {
        let (port, task) = nginx::black_hole().await;
        tasks.push(task);
        Some(port)
    } else {
        None
    };
    let server = Arc::new(nginx::Nginx::start(
        dir,
        ca,
        nginx::NginxOptions {
            http2: !args.http1_only,
            workers: args.nginx_workers,
            hosts: if scenario.shared() { 1 } else { args.endpoints },
            failing_t0: scenario == Scenario::SharedHostFailing,
            hanging_t0,
        },
    ));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let wire = Arc::new(Mutex::new(Wire::default()));
    let follower = server.follow(stop.clone(), {
        let (receipts, wire) = (receipts.clone(), wire.clone());
        move |logged| {
            // wrk's requests and tenant 0's failures are not deliveries.
            if logged.webhook_id.starts_with("wrk") {
                return;
            }
            if logged.status == 200 {
                receipts.record_id(&logged.webhook_id, logged.at);
            }
            let mut wire = wire.lock().unwrap_or_else(|e| e.into_inner());
            wire.connections
                .entry(logged.port)
                .or_default()
                .insert(logged.connection);
            *wire.protocols.entry(logged.protocol).or_default() += 1;
        }
    });
    NginxReceiver {
        server,
        stop,
        follower: Some(follower),
        wire,
    }
}

/// `endpoints` receivers on hosts of their own, or, for the shared-host scenarios, one host
/// with a path per tenant (`/t0`, `/t1`, …; tenant 0's is the sick one).
async fn start_receivers(
    dir: &Path,
    endpoints: usize,
    scenario: Scenario,
    events: usize,
    shared_tenants: usize,
    nginx_for: Option<&Args>,
) -> Receivers {
    let endpoints = if scenario.shared() { 1 } else { endpoints };
    let ca = LocalCa::generate(&["localhost", "127.0.0.1"]).expect("local CA");
    let ca_file = dir.join("bench-ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).expect("write CA");
    let receipts = Arc::new(Receipts::new(events));
    let mut urls = Vec::new();
    let mut tasks = Vec::new();
    if let Some(args) = nginx_for.filter(|a| a.receiver == ReceiverKind::Nginx) {
        let nginx = start_nginx(dir, &ca, args, scenario, &receipts, &mut tasks).await;
        for port in &nginx.server.ports {
            if scenario.shared() {
                urls.extend((0..shared_tenants).map(|t| format!("https://localhost:{port}/t{t}")));
            } else {
                urls.push(format!("https://localhost:{port}/hook"));
            }
        }
        return Receivers {
            urls,
            ca_file,
            receipts,
            tasks,
            nginx: Some(nginx),
        };
    }
    for e in 0..endpoints {
        let (listener, addr) = bind("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("bind");
        let receipts = receipts.clone();
        let sick_endpoint = e == 0;
        let handler = Arc::new(move |r: &Received| {
            let sick = if scenario.shared() {
                r.path == "/t0"
            } else {
                sick_endpoint
            };
            reply(scenario, sick, r, &receipts)
        });
        tasks.push(tokio::spawn(serve(listener, ca.tls.clone(), handler)));
        if scenario.shared() {
            for t in 0..shared_tenants {
                urls.push(format!("https://localhost:{}/t{t}", addr.port()));
            }
        } else {
            urls.push(format!("https://localhost:{}/hook", addr.port()));
        }
    }
    Receivers {
        urls,
        ca_file,
        receipts,
        tasks,
        nginx: None,
    }
}

/// A receiver's answer in `scenario`; healthy answers record the receipt.
fn reply(scenario: Scenario, sick: bool, r: &Received, receipts: &Receipts) -> Reply {
    if r.path == "/ops" {
        // A notification endpoint that fails slowly (`--notify-failing`).
        return Reply {
            delay: Some(Duration::from_secs(1)),
            ..Reply::status(503)
        };
    }
    match (scenario, sick) {
        (Scenario::Timeout | Scenario::SharedHostHanging, true) => Reply {
            delay: Some(Duration::from_secs(3600)),
            ..Reply::status(200)
        },
        (Scenario::SharedHostFailing, true) => Reply::status(503),
        // Answered, but not one of the healthy webhooks' receipts.
        (Scenario::SharedHostCapped, true) => Reply::status(200),
        (Scenario::RateLimited, true) => Reply {
            headers: vec![("retry-after".into(), "5".into())],
            ..Reply::status(429)
        },
        _ => {
            receipts.record(r);
            Reply::status(200)
        }
    }
}

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

struct Topics {
    input: String,
    config: String,
    outcomes: String,
    group: String,
}

async fn create_topics(bootstrap: &str, name: &str) -> Topics {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("bench-{name}-{}", &id[..8]);
    let t = Topics {
        input: format!("{prefix}-input"),
        config: format!("{prefix}-config"),
        outcomes: format!("{prefix}-outcomes"),
        group: format!("{prefix}-group"),
    };
    let admin: AdminClient<DefaultClientContext> = client(bootstrap).create().expect("admin");
    let topics = [
        NewTopic::new(&t.input, 6, TopicReplication::Fixed(1)),
        NewTopic::new(&t.config, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact"),
        NewTopic::new(&t.outcomes, OUTCOME_PARTITIONS, TopicReplication::Fixed(1)),
    ];
    for r in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .expect("create topics: is Kafka running? (scripts/kafka start)")
    {
        r.expect("topic created");
    }
    t
}

/// Deletes a scenario's topics and the processor's own (retry tiers, redelivery), so that
/// runs do not pile up partitions on the broker and slow the next ones.
async fn delete_topics(bootstrap: &str, t: &Topics) {
    let admin: AdminClient<DefaultClientContext> = client(bootstrap).create().expect("admin");
    let mut names = vec![t.input.clone(), t.config.clone(), t.outcomes.clone()];
    names.extend(feedback_webhooks::domain::parked::tier_topics(&format!(
        "{}-retry",
        t.group
    )));
    for own in ["replay", "health-signals", "health", "operational"] {
        names.push(format!("{}-{own}", t.group));
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    // Best effort: a topic that was never made is no failure.
    let _ = admin.delete_topics(&names, &AdminOptions::new()).await;
}

fn event(index: usize, tenant: usize, run: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "_id": format!("{run}-{index}"),
        "timestamp": "2026-11-27T10:15:00.000Z",
        "requestId": "8NoByJneShCdCGRnrGS1t1m3CdA73dhR",
        "imsOrg": format!("org{tenant}"),
        "sandbox": { "id": SANDBOX, "name": "prod" },
        "identityMap": { "email": [ { "id": "john.doe@luma.com", "primary": true } ] },
        "_experience": { "customerJourneyManagement": {
            "messageExecution": { "messageExecutionID": "HUMA-26362805", "messageType": "transactional",
                "campaignID": CAMPAIGN, "campaignVersionID": "2ca10c10-56dd-4505-87cd-fa5da84e7a5d" },
            "messageProfile": { "channel": { "_id": "https://ns.adobe.com/xdm/channels/email" } },
            "messageDeliveryfeedback": { "feedbackStatus": "delivered", "offers": null,
                "messageExclusion": null, "messageFailure": null, "retryCount": 0 }
        } }
    }))
    .unwrap_or_default()
}

async fn publish_config(
    producer: &FutureProducer,
    topics: &Topics,
    tenants: usize,
    urls: &[String],
    with_policy: bool,
    capped_t0: bool,
) {
    for t in 0..tenants {
        let org = format!("org{t}");
        let mut webhook = json!({ "kind": "webhook", "imsOrg": org, "sandbox": { "id": SANDBOX, "name": "prod" },
            "name": format!("tenant {t}"), "channels": ["email"], "url": urls[t % urls.len()], "enabled": true,
            "events": ["sent", "delivered", "bounce", "error"], "authentication": { "type": "none" },
            "headers": {}, "signing": null, "updatedAt": "2026-11-27T09:00:00Z" });
        if with_policy {
            webhook["filter"] = json!({"all": [
                {"field": "channel", "op": "in", "values": ["email", "sms"]},
                {"field": "feedbackStatus", "op": "notIn", "values": ["exclude", "denylist"]},
                {"field": "messageExecution.campaignID", "op": "equals", "value": CAMPAIGN},
                {"not": {"field": "messageDeliveryFeedback.messageFailure.category", "op": "exists"}},
                {"field": "retryCount", "op": "lt", "value": 3}
            ]});
            webhook["delivery"] =
                json!({"timeoutMs": 10000, "retrySchedule": [5, 30, 120], "maxAttempts": 4});
        }
        if capped_t0 && t == 0 {
            webhook["rateLimit"] = json!({"perSecond": 50, "burst": 10});
        }
        let campaign = json!({ "kind": "campaign", "imsOrg": org, "sandboxId": SANDBOX, "campaignID": CAMPAIGN,
            "webhooksEnabled": true, "updatedAt": "2026-11-27T09:00:00Z" });
        for (key, value) in [
            (format!("webhook/{org}/{SANDBOX}"), webhook),
            (format!("campaign/{org}/{SANDBOX}/{CAMPAIGN}"), campaign),
        ] {
            let bytes = serde_json::to_vec(&value).unwrap_or_default();
            send(producer, &topics.config, &key, &bytes).await;
        }
    }
}

/// Publishes a notification endpoint for every tenant's org, at `/ops` of the host of
/// `url`, signed with a secret from the processor's environment; answers the variables.
async fn publish_notification_endpoints(
    producer: &FutureProducer,
    topics: &Topics,
    tenants: usize,
    url: &str,
) -> Vec<(String, String)> {
    let origin = url.find("/t").map_or(url, |at| &url[..at]);
    let origin = origin.trim_end_matches("/hook");
    let mut variables = Vec::new();
    for t in 0..tenants {
        let org = format!("org{t}");
        let variable = format!(
            "WEBHOOK_SECRET_{}__NOTIFY",
            feedback_webhooks::domain::secret::env_org(&org)
        );
        let record = json!({ "kind": "notification", "imsOrg": org, "url": format!("{origin}/ops"),
            "enabled": true, "authentication": { "type": "none" },
            "signing": { "secret": { "ref": format!("env:{variable}") } },
            "updatedAt": "2026-12-08T00:00:00Z" });
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        send(
            producer,
            &topics.config,
            &format!("notification/{org}"),
            &bytes,
        )
        .await;
        variables.push((variable, format!("whsec_{}", "A".repeat(32))));
    }
    variables
}

/// The upstream producer of events, configured as the arguments say.
/// Writes one record and waits for the broker's acknowledgement (set-up; panics on failure).
async fn send(producer: &FutureProducer, topic: &str, key: &str, value: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(value),
            Timeout::Never,
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap_or_else(|e| panic!("producing to {topic}: {e}"));
}

fn event_producer(args: &Args) -> FutureProducer {
    client(&args.bootstrap)
        .set("linger.ms", "5")
        .set("batch.size", args.producer_batch_bytes.to_string())
        .set("compression.type", &args.producer_compression)
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer")
}

/// Produces `n` events round-robin over tenants, as fast as possible or at `pace` per
/// second; returns each event's produce time.
async fn produce(
    producer: &FutureProducer,
    topic: &str,
    n: usize,
    tenants: usize,
    run: &str,
    pace: Option<usize>,
) -> Vec<Instant> {
    let mut sent = Vec::with_capacity(n);
    let mut pending = FuturesUnordered::new();
    let begun = Instant::now();
    for i in 0..n {
        if let Some(rate) = pace {
            // Sent at its slot in the pace, in small bursts of what is due.
            let due = begun + Duration::from_secs_f64(i as f64 / rate.max(1) as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                while let Some(Some(r)) = futures::FutureExt::now_or_never(pending.next()) {
                    let r: Result<(), rdkafka::error::KafkaError> = r;
                    r.expect("event produced");
                }
                tokio::time::sleep(wait).await;
            }
        }
        let value = event(i, i % tenants, run);
        let key = format!("{run}-{i}");
        sent.push(Instant::now());
        let producer = producer.clone();
        let topic = topic.to_owned();
        pending.push(async move {
            producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&value),
                    Timeout::Never,
                )
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
        });
        if pending.len() >= 10_000 {
            while let Some(r) = pending.next().await {
                r.expect("event produced");
                if pending.len() < 5_000 {
                    break;
                }
            }
        }
    }
    while let Some(r) = pending.next().await {
        r.expect("event produced");
    }
    sent
}

struct Processor {
    child: Child,
}

impl Processor {
    fn start(
        bin: &Path,
        topics: &Topics,
        dir: &Path,
        ca: &Path,
        max_in_flight: usize,
        settings: &[(String, String)],
    ) -> Self {
        let log = std::fs::File::create(dir.join("processor.log")).expect("log file");
        let child = Command::new(bin)
            .arg("run")
            .env("FW_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
            .env("FW_KAFKA__GROUP_ID", &topics.group)
            .env("FW_KAFKA__INPUT_TOPICS", format!("[{}]", topics.input))
            .env("FW_KAFKA__CONFIG_TOPIC", &topics.config)
            .env("FW_KAFKA__OUTCOME_TOPIC", &topics.outcomes)
            .env(
                "FW_HEALTH__EVENTS_TOPIC",
                format!("{}-operational", topics.group),
            )
            .env("FW_STORE__PATH", dir.join("store"))
            .env("FW_DELIVERY__EXTRA_CA_FILE", ca)
            .env("FW_DELIVERY__MAX_IN_FLIGHT", max_in_flight.to_string())
            .env("FW_DELIVERY__REQUEST_TIMEOUT_MS", "5000")
            .env("FW_DELIVERY__ALLOW_CIDRS", "[127.0.0.1/32]")
            .env("FW_LOG__FORMAT", "json")
            .env(
                "FW_LOG__FILTER",
                "warn,feedback_webhooks::pipeline=info,feedback_webhooks::observe=info",
            )
            .env("FW_HTTP__LISTEN", "127.0.0.1:0")
            .envs(settings.iter().map(|(k, v)| (k, v)))
            .env_remove("FW_CONFIG_FILE")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the processor");
        let p = Processor { child };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !std::fs::read_to_string(dir.join("processor.log"))
            .unwrap_or_default()
            .contains("processing input")
        {
            assert!(
                Instant::now() < deadline,
                "processor did not start; see {}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    /// The address of the processor's operator port, from its log.
    fn http_addr(dir: &Path) -> Option<String> {
        let log = std::fs::read_to_string(dir.join("processor.log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("serving /metrics"))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v["fields"]["addr"].as_str().map(str::to_owned))
    }

    /// A GET on the operator port: the response, headers included.
    fn get(addr: &str, path: &str) -> String {
        use std::io::{Read, Write};
        let mut text = String::new();
        if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
            let _ = write!(
                stream,
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.read_to_string(&mut text);
        }
        text
    }

    /// Waits until `/readyz` answers 200: the cache caught up and the group joined, as a
    /// processor that is already running when traffic comes.
    fn wait_ready(&self, dir: &Path) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(addr) = Self::http_addr(dir) {
                if Self::get(&addr, "/readyz").starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "processor did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The processor's own account of the run: the scheduling and retry series of its
    /// `/metrics` (what limited the figures).
    fn scheduling_metrics(&self, dir: &Path) -> Vec<String> {
        let Some(addr) = Self::http_addr(dir) else {
            return vec!["(no metrics address in the log)".into()];
        };
        let text = Self::get(&addr, "/metrics");
        let wanted = [
            "concurrency_limit",
            "retries_parked_total",
            "delivery_attempts_total",
            "circuit_breakers{",
        ];
        text.lines()
            .filter(|l| !l.starts_with('#') && wanted.iter().any(|w| l.contains(w)))
            .map(|l| l.trim_start_matches("feedback_webhooks_").to_owned())
            .collect()
    }

    /// (peak RSS in MB, CPU seconds so far) from /proc.
    fn usage(&self) -> (f64, f64) {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let hwm_kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
            .sum();
        (hwm_kb / 1024.0, ticks / 100.0)
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Partitions of the outcome topic the harness creates.
const OUTCOME_PARTITIONS: i32 = 6;

struct Run {
    rate: f64,
    healthy_rate: f64,
    p50: Duration,
    p99: Duration,
    /// Paced only: p99 of the events produced in the warm-up (the first seconds after the
    /// processor became ready), which the p50 and p99 above leave out.
    warm_up_p99: Option<Duration>,
    rss_mb: f64,
    /// Events delivered (answered 200) more than once.
    duplicates: usize,
    /// CPU per delivery from the moment the processor was ready (the backlog: from its
    /// start): start-up is paid once per process, not per delivery.
    cpu_per_1k: f64,
    /// CPU seconds the processor spent starting (until ready); the backlog: not apart.
    startup_cpu: Option<f64>,
    /// Series of the processor's metrics (see [`Processor::scheduling_metrics`]).
    scheduling: Vec<String>,
    /// nginx only: connections the processor opened, and its requests by protocol.
    wire: Option<WireFigures>,
    /// Paced only: produce → outcome visible to a `read_committed` reader, p50 and p99
    /// after the warm-up (exactly once, outcomes become visible when their transaction
    /// commits).
    outcome_latency: Option<(Duration, Duration)>,
    /// The burst's first seconds: how fast the limits opened and the deliveries followed.
    ramp: Ramp,
}

/// The first seconds of a burst, in steps.
#[derive(Default)]
struct Ramp {
    /// The highest host limit every 100 ms from the first event produced.
    host_limit: Vec<f64>,
    /// Events produced and delivered in each 250 ms of the first 2 s.
    produced: Vec<usize>,
    delivered: Vec<usize>,
}

impl Ramp {
    const STEP: Duration = Duration::from_millis(250);
    const STEPS: usize = 8;

    fn count(instants: impl Iterator<Item = Instant>, from: Instant) -> Vec<usize> {
        let mut counts = vec![0; Self::STEPS];
        for at in instants {
            let i =
                (at.saturating_duration_since(from).as_millis() / Self::STEP.as_millis()) as usize;
            if let Some(c) = counts.get_mut(i) {
                *c += 1;
            }
        }
        counts
    }

    fn print(&self) {
        let per_second = |v: &[usize]| {
            v.iter()
                .map(|n| format!("{:.0}", *n as f64 / Ramp::STEP.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let limits: Vec<String> = self.host_limit.iter().map(|l| format!("{l:.0}")).collect();
        println!(
            "    ramp: host limit every 100 ms: {}",
            if limits.is_empty() {
                "(not sampled)".to_owned()
            } else {
                limits.join(" ")
            }
        );
        println!(
            "    ramp: per 250 ms of the first 2 s, produced/s {} | delivered/s {}",
            per_second(&self.produced),
            per_second(&self.delivered)
        );
    }
}

/// Samples the processor's highest host limit (`host_concurrency_limit{stat="max"}`) every
/// 100 ms for the first 2 s of a burst.
fn watch_host_limit(addr: Option<String>) -> std::thread::JoinHandle<Vec<f64>> {
    std::thread::spawn(move || {
        let Some(addr) = addr else {
            return Vec::new();
        };
        let started = Instant::now();
        let mut samples = Vec::new();
        for step in 1..=20u32 {
            let text = Processor::get(&addr, "/metrics");
            let limit = text
                .lines()
                .find(|l| l.contains("host_concurrency_limit{stat=\"max\"}"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            samples.push(limit);
            let next = started + Duration::from_millis(100) * step;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        samples
    })
}

/// Records when each event's outcome becomes visible to a `read_committed` reader of
/// `topic` (its `eventId` ends in the event's index), until `stop`.
fn watch_outcomes(
    bootstrap: &str,
    topic: &str,
    n: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<Option<Instant>>> {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::message::Message;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("isolation.level", "read_committed")
        // Assigned, never committed: the group only names the client.
        .set("group.id", format!("{topic}-watch"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("outcome reader");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..OUTCOME_PARTITIONS {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    std::thread::spawn(move || {
        let mut seen = vec![None; n];
        while !stop.load(Ordering::Relaxed) {
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let index = m
                .payload()
                .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                .and_then(|v| v["eventId"].as_str().map(str::to_owned))
                .and_then(|id| id.rsplit('-').next().and_then(|i| i.parse::<usize>().ok()));
            if let Some(slot) = index.and_then(|i| seen.get_mut(i)) {
                slot.get_or_insert_with(Instant::now);
            }
        }
        seen
    })
}

/// One scenario: returns its figures.
async fn run_scenario(args: &Args, scenario: Scenario, bin: &Path) -> Run {
    let events = match scenario {
        Scenario::Backlog => args.backlog_events,
        Scenario::Paced => args.paced_events,
        _ => args.events,
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let topics = create_topics(&args.bootstrap, &format!("{scenario:?}").to_lowercase()).await;
    let tenants = if scenario.shared() {
        args.shared_tenants
    } else {
        args.tenants
    };
    let receivers = start_receivers(
        dir.path(),
        args.endpoints,
        scenario,
        events,
        args.shared_tenants,
        Some(args),
    )
    .await;
    let producer = event_producer(args);
    publish_config(
        &producer,
        &topics,
        tenants,
        &receivers.urls,
        args.webhook_policy,
        scenario == Scenario::SharedHostCapped,
    )
    .await;
    let mut settings = args.settings.clone();
    if args.notify_failing {
        assert!(
            receivers.nginx.is_none(),
            "--notify-failing runs against the project's own receiver"
        );
        settings.extend(
            publish_notification_endpoints(&producer, &topics, tenants, &receivers.urls[0]).await,
        );
    }
    let run = topics.group.clone();
    // Events to the sick endpoint (or the sick tenant's path) are excluded from the
    // healthy figures.
    let sick = |i: usize| {
        let tenant = i % tenants;
        scenario.has_sick()
            && if scenario.shared() {
                tenant == 0
            } else {
                tenant.is_multiple_of(args.endpoints)
            }
    };
    let expected = (0..events).filter(|&i| !sick(i)).count();
    let start = || {
        Processor::start(
            bin,
            &topics,
            dir.path(),
            &receivers.ca_file,
            args.max_in_flight,
            &settings,
        )
    };
    let stop_watching = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let outcome_watch = (scenario == Scenario::Paced).then(|| {
        watch_outcomes(
            &args.bootstrap,
            &topics.outcomes,
            events,
            stop_watching.clone(),
        )
    });
    let mut limit_watch = None;
    let mut startup_cpu = None;
    let (processor, sent, started) = if scenario == Scenario::Backlog {
        let sent = produce(&producer, &topics.input, events, tenants, &run, None).await;
        let started = Instant::now();
        (start(), sent, started)
    } else {
        // Traffic meets a running processor: the clock starts once it is ready.
        let p = start();
        p.wait_ready(dir.path());
        startup_cpu = Some(p.usage().1);
        let started = Instant::now();
        limit_watch = Some(watch_host_limit(Processor::http_addr(dir.path())));
        let pace = (scenario == Scenario::Paced).then_some(args.paced_rate);
        let sent = produce(&producer, &topics.input, events, tenants, &run, pace).await;
        (p, sent, started)
    };
    let deadline = Instant::now() + Duration::from_secs(1800);
    while receivers.receipts.count.load(Ordering::Relaxed) < expected {
        assert!(Instant::now() < deadline, "deliveries did not complete");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let wire = receivers.wire();
    let outcome_seen = outcome_watch.map(|watch| {
        // Outcomes follow the deliveries by up to a commit interval.
        std::thread::sleep(Duration::from_secs(3));
        stop_watching.store(true, Ordering::Relaxed);
        watch.join().unwrap_or_default()
    });
    let (rss_mb, cpu) = processor.usage();
    let scheduling = processor.scheduling_metrics(dir.path());
    drop(processor);
    delete_topics(&args.bootstrap, &topics).await;

    let times = receivers
        .receipts
        .times
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let (Some(path), Some(first)) = (&args.latency_trace, sent.first()) {
        let mut csv = String::from("sent_ms,latency_ms\n");
        for (got, sent) in times.iter().zip(&sent) {
            if let Some(got) = got {
                csv.push_str(&format!(
                    "{:.1},{:.1}\n",
                    sent.duration_since(*first).as_secs_f64() * 1e3,
                    got.saturating_duration_since(*sent).as_secs_f64() * 1e3
                ));
            }
        }
        std::fs::write(path, csv).expect("latency trace written");
    }
    // The paced figure is steady-state latency: events of the warm-up are reported apart.
    let warm_up_end = sent
        .first()
        .filter(|_| scenario == Scenario::Paced)
        .map(|first| *first + PACED_WARM_UP);
    let mut latencies: Vec<Duration> = Vec::with_capacity(sent.len());
    let mut warm_up: Vec<Duration> = Vec::new();
    for (got, sent) in times.iter().zip(&sent) {
        let Some(latency) = got.map(|g| g.saturating_duration_since(*sent)) else {
            continue;
        };
        match warm_up_end {
            Some(end) if *sent < end => warm_up.push(latency),
            _ => latencies.push(latency),
        }
    }
    latencies.sort();
    warm_up.sort();
    let outcome_latency = outcome_seen.map(|seen| {
        let mut after_warm_up: Vec<Duration> = seen
            .iter()
            .zip(&sent)
            .filter(|(_, sent)| warm_up_end.is_none_or(|end| **sent >= end))
            .filter_map(|(seen, sent)| seen.map(|s| s.saturating_duration_since(*sent)))
            .collect();
        after_warm_up.sort();
        (
            percentile(&after_warm_up, 0.5),
            percentile(&after_warm_up, 0.99),
        )
    });
    let ramp = match sent.first() {
        Some(first) => Ramp {
            host_limit: limit_watch.and_then(|w| w.join().ok()).unwrap_or_default(),
            produced: Ramp::count(sent.iter().copied(), *first),
            delivered: Ramp::count(times.iter().flatten().copied(), *first),
        },
        None => Ramp::default(),
    };
    let rate = expected as f64 / elapsed.as_secs_f64();
    Run {
        rate,
        healthy_rate: rate,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        warm_up_p99: (!warm_up.is_empty()).then(|| percentile(&warm_up, 0.99)),
        rss_mb,
        duplicates: receivers.receipts.duplicates.load(Ordering::Relaxed),
        cpu_per_1k: (cpu - startup_cpu.unwrap_or(0.0)) / (events as f64 / 1000.0),
        startup_cpu,
        scheduling,
        wire,
        outcome_latency,
        ramp,
    }
}

/// wrk's POST rate against nginx (one host, HTTP/1.1, 64 keep-alive connections, 10 s), the
/// limit the processor's rate is compared with when nginx is the receiver.
async fn wrk_limit(args: &Args) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = LocalCa::generate(&["localhost", "127.0.0.1"]).expect("local CA");
    let server = nginx::Nginx::start(
        dir.path(),
        &ca,
        nginx::NginxOptions {
            http2: !args.http1_only,
            workers: args.nginx_workers,
            hosts: 1,
            failing_t0: false,
            hanging_t0: None,
        },
    );
    let url = format!("https://localhost:{}/t1", server.ports[0]);
    let body = String::from_utf8_lossy(&event(0, 0, "raw")).into_owned();
    tokio::task::block_in_place(|| nginx::wrk_post_rate(dir.path(), &url, &body, 64, 10))
}

/// The receivers are on loopback, which the destination guard refuses unless opened.
fn loopback_policy() -> feedback_webhooks::domain::address::AddressPolicy {
    feedback_webhooks::domain::address::AddressPolicy {
        allow: vec!["127.0.0.1/32".parse().expect("CIDR")],
    }
}

/// Raw consume rate: the same input-consumer settings, no work.
async fn raw_consume(args: &Args) -> f64 {
    let topics = create_topics(&args.bootstrap, "raw-consume").await;
    let producer = event_producer(args);
    produce(
        &producer,
        &topics.input,
        args.events,
        args.tenants,
        "raw",
        None,
    )
    .await;
    let consumer: StreamConsumer = client(&args.bootstrap)
        .set("group.id", &topics.group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("queued.max.messages.kbytes", "4096")
        .set("queued.min.messages", "10000")
        .set("fetch.queue.backoff.ms", "20")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topics.input]).expect("subscribe");
    let mut n = 0;
    let mut started = None;
    while n < args.events {
        let message = consumer.recv().await.expect("consume");
        started.get_or_insert_with(Instant::now);
        let _ = consumer.store_offset_from_message(&message);
        n += 1;
    }
    n as f64 / started.map_or(1.0, |s| s.elapsed().as_secs_f64())
}

/// Raw POST rate: the processor's HTTP client, same receivers, no Kafka: 32 requests at once
/// per host for the ten hosts, 64 to the one shared host (as `wrk -c 64` would).
/// The best of three rounds of at least 50k requests, so that connection set-up and noise
/// do not flatter the processor's ratio.
async fn raw_post(args: &Args, shared: bool) -> f64 {
    let mut best: f64 = 0.0;
    for _ in 0..3 {
        best = best.max(raw_post_round(args, args.events.max(50_000), shared).await);
    }
    best
}

async fn raw_post_round(args: &Args, requests: usize, shared: bool) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario = if shared {
        Scenario::SharedHost
    } else {
        Scenario::Healthy
    };
    let receivers = start_receivers(
        dir.path(),
        args.endpoints,
        scenario,
        requests,
        args.shared_tenants,
        None,
    )
    .await;
    let policy = std::sync::Arc::new(loopback_policy());
    let client = build_client(&ClientOptions {
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        extra_ca_file: Some(&receivers.ca_file),
        policy: policy.clone(),
        http2: true,
        idle_per_host: 256,
    })
    .expect("client");
    let sender = Sender::new(client, policy);
    let body = bytes::Bytes::from(event(0, 0, "raw"));
    let concurrency = if shared {
        64
    } else {
        args.max_in_flight.min(32 * args.endpoints)
    };
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    for i in 0..requests {
        let url = receivers.urls[i % receivers.urls.len()].clone();
        let sender = sender.clone();
        let body = body.clone();
        pending.push(async move {
            let id = format!("raw-{i}");
            sender
                .send(
                    &url,
                    None,
                    feedback_webhooks::delivery::sender::DeliveryIds {
                        webhook_id: &id,
                        replay_id: None,
                    },
                    std::time::SystemTime::now(),
                    &Default::default(),
                    body,
                )
                .await
                .map(|r| r.attempt.http_status)
        });
        if pending.len() >= concurrency {
            pending.next().await;
        }
    }
    while pending.next().await.is_some() {}
    requests as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let bin = args.processor.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .expect("own path")
            .with_file_name("feedback-webhooks")
    });
    assert!(
        bin.exists(),
        "build the processor first: cargo build --bins"
    );

    if args.console {
        console::run(&bin, &args.bootstrap).await;
        return;
    }
    if args.abuse {
        abuse::run(&bin, &args.bootstrap).await;
        return;
    }
    if args.admin {
        admin::run(&bin, &args.bootstrap).await;
        return;
    }
    let consume = raw_consume(&args).await;
    let any = |f: fn(Scenario) -> bool| args.scenario.iter().any(|s| f(*s));
    assert!(
        !(args.receiver == ReceiverKind::Nginx && any(|s| s == Scenario::SharedHostCapped)),
        "shared-host-capped runs against the project's own receiver (nginx's log would count the capped tenant's receipts)"
    );
    let (post, post_shared) = if args.receiver == ReceiverKind::Nginx {
        // The server's limit whatever the shape: wrk against one of its hosts.
        let wrk = wrk_limit(&args).await;
        println!("wrk's POST limit (nginx, 64 HTTP/1.1 connections): {wrk:.0} requests/s");
        (wrk, wrk)
    } else {
        let post = if any(|s| !s.shared()) {
            raw_post(&args, false).await
        } else {
            0.0
        };
        let post_shared = if any(Scenario::shared) {
            raw_post(&args, true).await
        } else {
            0.0
        };
        (post, post_shared)
    };
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "events={} tenants={} endpoints={} shared-host tenants={} max_in_flight={} producer batch={} B compression={} webhook filter and policy={} settings={:?}",
        args.events,
        args.tenants,
        args.endpoints,
        args.shared_tenants,
        args.max_in_flight,
        args.producer_batch_bytes,
        args.producer_compression,
        args.webhook_policy,
        args.settings,
    );
    println!("raw consume rate:             {consume:>10.0} events/s");
    println!("raw POST rate, ten hosts:     {post:>10.0} requests/s");
    println!("raw POST rate, one host:      {post_shared:>10.0} requests/s");
    let mut healthy_rate = None;
    let mut shared_rate = None;
    for &scenario in &args.scenario {
        let r = run_scenario(&args, scenario, &bin).await;
        let limit = if scenario.shared() {
            consume.min(post_shared)
        } else {
            consume.min(post)
        };
        let keep = |base: Option<f64>, n: usize| match base {
            // The healthy webhooks' share of the healthy run's rate.
            Some(h) => {
                let share = h * (n - 1) as f64 / n as f64;
                format!(
                    "healthy webhooks keep {:.0}% of their healthy rate",
                    100.0 * r.rate / share
                )
            }
            None => "run the healthy scenario of its shape first for the comparison".into(),
        };
        let note = match scenario {
            Scenario::Healthy => {
                healthy_rate = Some(r.healthy_rate);
                format!("ratio to the lower raw limit: {:.2}", r.rate / limit)
            }
            Scenario::SharedHost => {
                shared_rate = Some(r.healthy_rate);
                format!("ratio to the lower raw limit: {:.2}", r.rate / limit)
            }
            Scenario::Timeout | Scenario::RateLimited => keep(healthy_rate, args.endpoints),
            Scenario::SharedHostFailing
            | Scenario::SharedHostHanging
            | Scenario::SharedHostCapped => keep(shared_rate, args.shared_tenants),
            Scenario::Backlog => format!("ratio to the lower raw limit: {:.2}", r.rate / limit),
            Scenario::Paced => {
                let (o50, o99) = r.outcome_latency.unwrap_or_default();
                format!(
                    "paced at {}/s; latency after a {} s warm-up (warm-up p99 {:.0} ms); outcome visible (read_committed) p50 {:.0} ms p99 {:.0} ms",
                    args.paced_rate,
                    PACED_WARM_UP.as_secs(),
                    r.warm_up_p99.unwrap_or_default().as_secs_f64() * 1e3,
                    o50.as_secs_f64() * 1e3,
                    o99.as_secs_f64() * 1e3
                )
            }
        };
        println!(
            "{:<18} deliveries/s {:>8.0}  latency p50 {:>7.0} ms  p99 {:>7.0} ms  peak RSS {:>6.1} MB  CPU {:>5.3} ms/delivery  duplicates {}  {note}",
            format!("{scenario:?}"),
            r.rate,
            r.p50.as_secs_f64() * 1000.0,
            r.p99.as_secs_f64() * 1000.0,
            r.rss_mb,
            r.cpu_per_1k,
            r.duplicates,
        );
        if let Some(startup) = r.startup_cpu {
            println!("    start-up until ready: {startup:.2} CPU s (not in the CPU per delivery)");
        }
        if let Some(wire) = &r.wire {
            let host_max = r
                .scheduling
                .iter()
                .find(|l| l.starts_with("host_concurrency_limit{stat=\"max\"}"))
                .and_then(|l| l.rsplit(' ').next())
                .unwrap_or("?");
            println!(
                "    nginx saw {} connections, at most {} to one host (the highest host limit at the end: {host_max}), requests by protocol {}",
                wire.connections, wire.most_to_one_host, wire.protocols
            );
        }
        if !matches!(scenario, Scenario::Backlog | Scenario::Paced) {
            r.ramp.print();
        }
        if args.verbose {
            for line in &r.scheduling {
                println!("    {line}");
            }
        }
    }
}
