//! The administration API's figures: how long a write takes (published, applied by the
//! API's own cache, answered), and how long delivery-log queries take with 1M outcomes
//! indexed, in two shapes: many webhooks at their retention cap, and one webhook holding
//! them all.
//!
//! Run it with `scripts/bench --admin` (see BENCHMARKS.md).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use feedback_webhooks::admin::deliveries::{DeliveryLog, LogQuery, Matching};
use feedback_webhooks::admin::tokens;
use feedback_webhooks::domain::time::rfc3339_millis;
use feedback_webhooks::domain::time::unix_ms;
use serde_json::{json, Value};

use super::{create_topics, delete_topics, Topics};

/// Outcomes in the index.
const OUTCOMES: usize = 1_000_000;

/// Milliseconds of the samples' percentiles.
pub(super) fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    format!(
        "p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  (n={})",
        at(0.5),
        at(0.99),
        at(1.0),
        samples.len()
    )
}

/// A realistic outcome (about 700 bytes), the `n`th of its webhook: 1 in 100 failed after
/// three attempts; a third SMS; feedback statuses in turn.
pub(super) fn outcome(i: usize, n: usize, org: &str, sandbox: &str, at_ms: u64) -> Vec<u8> {
    let failed = n % 100 == 7;
    let feedback = ["sent", "delivered", "bounce", "error"][n % 4];
    let at = rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms));
    let attempt =
        |status: u16| json!({"at": at, "httpStatus": status, "error": null, "durationMs": 42});
    let attempts = if failed {
        vec![attempt(503), attempt(503), attempt(503)]
    } else {
        vec![attempt(200)]
    };
    serde_json::to_vec(&json!({
        "eventId": format!("evt-{i:08}-5f0c1d2e-2b3c-4d5e-8f90-a1b2c3d4e5f6"),
        "requestId": "8NoByJneShCdCGRnrGS1t1m3CdA73dhR",
        "imsOrg": org, "sandboxId": sandbox,
        "channel": if n.is_multiple_of(3) { "sms" } else { "email" },
        "feedbackStatus": feedback,
        "messageExecutionID": "UMA-12345678", "campaignID": "16f24a15-7e21-477c-848a-d5695ca7f137",
        "status": if failed { "failed" } else { "delivered" },
        "reason": if failed { json!("http_status") } else { Value::Null },
        "webhook": {"url": "https://hooks.example.com/feedback", "name": "Order feedback"},
        "attempts": attempts,
        "source": {"topic": "message-feedback", "partition": i % 12, "offset": i},
        "replay": null,
        "completedAt": at,
    }))
    .unwrap_or_default()
}

fn dir_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Indexes `OUTCOMES` outcomes over `webhooks` webhooks, then times the queries the console
/// makes of one of them.
fn delivery_log(webhooks: usize) {
    let dir = tempfile::tempdir().expect("scratch folder");
    let log = DeliveryLog::open(dir.path()).expect("delivery log");
    let now = unix_ms(SystemTime::now());
    let started = Instant::now();
    for i in 0..OUTCOMES {
        let webhook = i % webhooks;
        // One outcome a second per webhook, the newest now.
        let at = now - ((OUTCOMES - i) / webhooks) as u64 * 1000;
        let value = outcome(i, i / webhooks, "acme", &format!("sb-{webhook:04}"), at);
        log.apply((i % 12) as i32, (i / 12) as i64, &value)
            .expect("apply");
    }
    let indexing = started.elapsed();
    let per = OUTCOMES / webhooks;
    println!(
        "delivery log, {OUTCOMES} outcomes over {webhooks} webhook(s) ({per} each): indexed in {:.1} s ({:.0} outcomes/s), {:.0} MiB on disk",
        indexing.as_secs_f64(),
        OUTCOMES as f64 / indexing.as_secs_f64(),
        dir_bytes(dir.path()) as f64 / 1048576.0
    );
    let page = LogQuery {
        limit: 50,
        ..LogQuery::default()
    };
    let middle = now - (per as u64 / 2) * 1000;
    let matching = |status: Option<&str>, channel: Option<&str>, feedback: Option<&str>| {
        let text = |v: Option<&str>| v.map(str::to_owned);
        LogQuery {
            matching: Matching {
                status: text(status),
                channel: text(channel),
                feedback_status: text(feedback),
            },
            ..page.clone()
        }
    };
    let window = LogQuery {
        from_ms: Some(middle - 600_000),
        to_ms: Some(middle),
        ..page.clone()
    };
    let queries: [(&str, LogQuery); 5] = [
        ("newest 50", page.clone()),
        ("failed (1%), 50", matching(Some("failed"), None, None)),
        (
            "sms + bounce, 50",
            matching(None, Some("sms"), Some("bounce")),
        ),
        ("a 10-minute window mid-way", window),
        (
            "a filter nothing matches",
            matching(Some("skipped"), None, None),
        ),
    ];
    let sandbox = format!("sb-{:04}", webhooks / 2);
    for (name, q) in queries {
        let runs = if name == "a filter nothing matches" {
            5
        } else {
            200
        };
        let mut samples = Vec::with_capacity(runs);
        let (mut found, mut more) = (0, false);
        for _ in 0..runs {
            let t = Instant::now();
            let (items, cursor) = log.query("acme", &sandbox, &q).expect("query");
            (found, more) = (items.len(), cursor.is_some());
            samples.push(t.elapsed());
        }
        let next = if more { "+" } else { " " };
        println!(
            "  {name:<28} {found:>3}{next}found  {}",
            percentiles(samples)
        );
    }
    let mut samples = Vec::new();
    for i in (webhooks / 2..OUTCOMES).step_by(OUTCOMES / 200) {
        let id = format!("evt-{i:08}-5f0c1d2e-2b3c-4d5e-8f90-a1b2c3d4e5f6");
        let sandbox = format!("sb-{:04}", i % webhooks);
        let t = Instant::now();
        let found = log.latest_of("acme", &sandbox, &id).expect("lookup");
        samples.push(t.elapsed());
        assert!(found.is_some(), "{id} not found");
    }
    println!(
        "  {:<28}      {}",
        "an event's newest outcome",
        percentiles(samples)
    );
    println!("  (+: the page came with a cursor to read on from)");
}

/// An admin API process on a free port, over plain HTTP (loopback only).
pub(super) struct AdminProcess {
    child: Child,
    pub base: String,
}

impl AdminProcess {
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (up to a minute) until the API answers `/readyz` with 200.
    pub(super) async fn wait_ready(&self, client: &reqwest::Client) {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = client.get(format!("{}/readyz", self.base)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(Instant::now() < until, "the admin API never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for AdminProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn start_admin(
    bin: &Path,
    topics: &Topics,
    dir: &Path,
    token_hash: &str,
) -> AdminProcess {
    let settings = format!("[[admin.tokens]]\nname = \"bench\"\nhash = \"{token_hash}\"\nscope = \"operator\"\nright = \"write\"\n");
    start_admin_with(bin, topics, dir, &settings)
}

/// [`start_admin`] with these settings (TOML).
pub(super) fn start_admin_with(
    bin: &Path,
    topics: &Topics,
    dir: &Path,
    settings: &str,
) -> AdminProcess {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = dir.join("admin.toml");
    std::fs::write(&config, settings).expect("admin settings");
    let child = Command::new(bin)
        .arg("admin")
        .env("FW_CONFIG_FILE", &config)
        .env("FW_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
        .env("FW_KAFKA__GROUP_ID", &topics.group)
        .env("FW_KAFKA__CONFIG_TOPIC", &topics.config)
        .env("FW_KAFKA__OUTCOME_TOPIC", &topics.outcomes)
        .env("FW_ADMIN__LISTEN", format!("127.0.0.1:{port}"))
        // The benchmarks measure speed, not the tenant quotas.
        .env("FW_ADMIN__WRITES_PER_MINUTE", "1000000000")
        .env("FW_ADMIN__MAX_WEBHOOKS_PER_ORG", "1000000000")
        .env("FW_ADMIN__MAX_CAMPAIGNS_PER_ORG", "1000000000")
        .env("FW_ADMIN__ALLOW_PLAIN_HTTP", "true")
        .env("FW_ADMIN__METRICS_LISTEN", "127.0.0.1:0")
        .env("FW_ADMIN__STORE_PATH", dir.join("admin-store"))
        .env("FW_ADMIN__DELIVERIES_PATH", dir.join("admin-deliveries"))
        .env("FW_LOG__FILTER", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the admin API");
    AdminProcess {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// A client for the plain-HTTP API on loopback (reqwest still wants a TLS provider).
pub(super) fn plain_client() -> reqwest::Client {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .build()
        .expect("client")
}

fn body(url: &str) -> Value {
    json!({
        "sandbox": {"name": "prod"}, "name": "Order feedback", "channels": ["email", "sms"],
        "url": url, "enabled": true, "authentication": {"type": "none"},
        "headers": {"X-Partner-Id": "acme"}
    })
}

/// Times writes through a running API: creates, replaces, and creates from 4 clients at once.
async fn writes(bin: &Path, bootstrap: &str) {
    let topics = create_topics(bootstrap, "admin").await;
    let dir = tempfile::tempdir().expect("scratch folder");
    let (token, hash) = tokens::generate().expect("token");
    let api = start_admin(bin, &topics, dir.path(), &hash);
    let client = plain_client();
    api.wait_ready(&client).await;
    let hook = |sandbox: &str| format!("{}/api/v1/orgs/acme/sandboxes/{sandbox}/webhook", api.base);
    let put = |sandbox: String, version: Option<String>, n: usize| {
        let (client, token, url) = (client.clone(), token.clone(), hook(&sandbox));
        async move {
            let mut request = client
                .put(url)
                .bearer_auth(token)
                .json(&body(&format!("https://hooks.example.com/{n}")));
            if let Some(v) = version {
                request = request.header("if-match", v);
            }
            let t = Instant::now();
            let response = request.send().await.expect("write");
            let took = t.elapsed();
            let status = response.status();
            let etag = response
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            assert!(status.is_success(), "write answered {status}");
            (took, etag)
        }
    };
    const N: usize = 200;
    let mut creates = Vec::new();
    let mut versions = Vec::new();
    for i in 0..N {
        let (took, etag) = put(format!("sb-{i:04}"), None, i).await;
        creates.push(took);
        versions.push(etag);
    }
    let mut replaces = Vec::new();
    for (i, v) in versions.into_iter().enumerate() {
        replaces.push(put(format!("sb-{i:04}"), v, i + N).await.0);
    }
    let started = Instant::now();
    let mut concurrent = Vec::new();
    for round in 0..N / 4 {
        let batch = (0..4).map(|k| put(format!("c-{round:03}-{k}"), None, k));
        concurrent.extend(
            futures::future::join_all(batch)
                .await
                .into_iter()
                .map(|r| r.0),
        );
    }
    let rate = N as f64 / started.elapsed().as_secs_f64();
    // A second instance: writes alternate between the two, each fencing the other.
    let dir_b = tempfile::tempdir().expect("scratch folder");
    let api_b = start_admin(bin, &topics, dir_b.path(), &hash);
    api_b.wait_ready(&client).await;
    let mut alternating = Vec::new();
    for i in 0..N / 2 {
        for base in [&api.base, &api_b.base] {
            let url = format!(
                "{base}/api/v1/orgs/acme/sandboxes/alt-{i:03}-{}/webhook",
                alternating.len()
            );
            let t = Instant::now();
            let response = client
                .put(url)
                .bearer_auth(&token)
                .json(&body("https://hooks.example.com/alt"))
                .send()
                .await
                .expect("write");
            assert!(
                response.status().is_success(),
                "write answered {}",
                response.status()
            );
            alternating.push(t.elapsed());
        }
    }
    drop(api_b);
    println!("admin API writes (published acks=all, applied by its cache, answered; one instance, plain HTTP on loopback):");
    println!("  {:<28} {}", "create, one at a time", percentiles(creates));
    println!(
        "  {:<28} {}",
        "replace with If-Match",
        percentiles(replaces)
    );
    println!(
        "  {:<28} {}  ({rate:.0} writes/s)",
        "create, 4 clients at once",
        percentiles(concurrent)
    );
    println!(
        "  {:<28} {}",
        "alternating two instances",
        percentiles(alternating)
    );
    drop(api);
    delete_topics(bootstrap, &topics).await;
}

/// Runs the administration API's benchmarks.
pub async fn run(bin: &Path, bootstrap: &str) {
    writes(bin, bootstrap).await;
    delivery_log(100);
    delivery_log(1);
}
