//! The administration API under abuse, on loopback. Before authenticating: 64 concurrent
//! requests with made-up tokens (of today's shape, of the old Argon2 shape, and garbage),
//! then a valid token from the same client, then 1,000 silent TCP connections. After: one
//! tenant's read token looping the most expensive delivery-log page (a filter nothing
//! matches over 50,000 outcomes) from 32 connections, while another tenant reads its own.
//! Prints how long the answers took, the answers, the process's peak RSS growth, how long
//! the silent connections stayed open, and the other tenant's latency alone and beside
//! the loop.
//!
//! Run it with `scripts/bench --abuse` (figures in RELIABILITY.md).

use std::path::Path;
use std::time::{Duration, Instant};

use feedback_webhooks::admin::tokens;
use tokio::io::AsyncReadExt;

use futures::StreamExt;
use rdkafka::producer::FutureProducer;
use serde_json::Value;

use super::admin::{outcome, percentiles, plain_client, start_admin_with, AdminProcess};
use super::{client, create_topics, delete_topics, send, Topics};

/// Requests with made-up tokens sent at once.
const MADE_UP: usize = 64;
/// Silent connections opened at once.
const SILENT: usize = 1_000;
/// Outcomes of the looping tenant's webhook in the delivery log, and of the other's.
const LOOPED_OUTCOMES: usize = 50_000;
const OTHER_OUTCOMES: usize = 200;
/// Connections looping delivery-log pages at once.
const LOOPS: usize = 32;

/// A field of `/proc/{pid}/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

pub async fn run(bin: &Path, bootstrap: &str) {
    let topics = create_topics(bootstrap, "abuse").await;
    let dir = tempfile::tempdir().expect("scratch folder");
    let (token, hash) = tokens::generate().expect("token");
    // One entry of the old kind too, so that old-shaped tokens reach the Argon2 check.
    let old = format!("fwa_{}", "L".repeat(43));
    let old_hash = tokens::argon2_hash(&old).expect("argon2");
    let entry = |name: &str, hash: &str| {
        format!("[[admin.tokens]]\nname = \"{name}\"\nhash = \"{hash}\"\nscope = \"operator\"\nright = \"write\"\n")
    };
    let (acme, acme_hash) = tokens::generate().expect("token");
    let (globex, globex_hash) = tokens::generate().expect("token");
    let settings = entry("bench", &hash)
        + &entry("old", &old_hash)
        + &entry("acme-reader", &acme_hash).replace("\"operator\"", "\"acme\"")
        + &entry("globex-reader", &globex_hash).replace("\"operator\"", "\"globex\"");
    fill_delivery_log(bootstrap, &topics).await;
    let api = start_admin_with(bin, &topics, dir.path(), &settings);
    let client = plain_client();
    api.wait_ready(&client).await;
    wait_indexed(&api, &acme, &globex).await;
    let url = format!("{}/api/v1/orgs/acme/webhooks", api.base);
    let rss_before = status_kib(api.pid(), "VmRSS");
    let hwm_before = status_kib(api.pid(), "VmHWM");

    // 1. Made-up tokens, all at once: a third of each shape (on connections of their own,
    // closed afterwards).
    let flood = plain_client();
    let started = Instant::now();
    let sends = (0..MADE_UP).map(|i| {
        let made_up = match i % 3 {
            0 => format!("fwa_{:016x}_{}", i, "x".repeat(43)),
            1 => format!("fwa_{}{:03}", "M".repeat(40), i),
            _ => format!("not-a-token-{i}"),
        };
        let (flood, url) = (flood.clone(), url.clone());
        async move {
            let r = flood.get(url).bearer_auth(made_up).send().await;
            (
                r.map(|r| r.status().as_u16()).unwrap_or(0),
                started.elapsed(),
            )
        }
    });
    let answers = futures::future::join_all(sends).await;
    drop(flood);
    let slowest = answers.iter().map(|(_, t)| *t).max().unwrap_or_default();
    let count = |s: u16| answers.iter().filter(|(status, _)| *status == s).count();
    let hwm_after = status_kib(api.pid(), "VmHWM");
    println!("admin API abuse (loopback, admin.auth_failures_per_minute = 10)");
    println!(
        "  {MADE_UP} concurrent made-up tokens: all answered within {:.0} ms: {} × 401, {} × 429, {} other",
        slowest.as_secs_f64() * 1000.0,
        count(401),
        count(429),
        MADE_UP - count(401) - count(429)
    );
    println!(
        "  RSS {} MiB before; peak RSS growth {:.1} MiB (VmHWM {} → {} KiB)",
        rss_before / 1024,
        hwm_after.saturating_sub(hwm_before.max(rss_before)) as f64 / 1024.0,
        hwm_before,
        hwm_after
    );

    // 2. A valid token from the same client, right after.
    let valid = client.get(&url).bearer_auth(&token).send().await;
    println!(
        "  then a valid token from the same address: {}",
        valid.map(|r| r.status().as_u16()).unwrap_or(0)
    );

    // 3. Silent connections: opened, never written to; how long until the server closes them.
    let addr = api.base.trim_start_matches("http://").to_owned();
    let opened = Instant::now();
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(
            tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect"),
        );
    }
    let opening = opened.elapsed();
    let closes = silent.into_iter().map(|mut s| async move {
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        closed.map(|()| opened.elapsed())
    });
    let closed = futures::future::join_all(closes).await;
    let open_after = closed.iter().filter(|c| c.is_err()).count();
    let times = || closed.iter().filter_map(|c| c.as_ref().ok());
    let (first, last) = (times().min().copied(), times().max().copied());
    println!(
        "  {SILENT} silent connections (opened in {:.1} s): {} closed by the server, the first after {:.1} s, the last after {:.1} s; {open_after} still open after 60 s",
        opening.as_secs_f64(),
        SILENT - open_after,
        first.unwrap_or_default().as_secs_f64(),
        last.unwrap_or_default().as_secs_f64()
    );
    let after = client.get(&url).bearer_auth(&token).send().await;
    println!(
        "  a valid request after them: {}",
        after.map(|r| r.status().as_u16()).unwrap_or(0)
    );

    // 4. One tenant loops expensive delivery-log pages; another reads its own.
    tenants_apart(&api, &acme, &globex).await;
    drop(api);
    delete_topics(bootstrap, &topics).await;
}

/// Outcomes of two webhooks on the outcome topic, for the API's delivery log to index: the
/// looping tenant's (acme/sb1, 1 in 100 failed) and the other's (globex/sb1).
async fn fill_delivery_log(bootstrap: &str, topics: &Topics) {
    let producer: FutureProducer = client(bootstrap)
        .set("linger.ms", "20")
        .create()
        .expect("producer");
    let now = feedback_webhooks::domain::time::unix_ms(std::time::SystemTime::now());
    let sends = (0..LOOPED_OUTCOMES + OTHER_OUTCOMES).map(|i| {
        let (org, n) = if i < LOOPED_OUTCOMES {
            ("acme", i)
        } else {
            ("globex", i - LOOPED_OUTCOMES)
        };
        let value = outcome(
            i,
            n,
            org,
            "sb1",
            now - (LOOPED_OUTCOMES - n.min(LOOPED_OUTCOMES)) as u64,
        );
        let producer = producer.clone();
        let topic = topics.outcomes.clone();
        async move { send(&producer, &topic, &format!("evt-{i}"), &value).await }
    });
    futures::stream::iter(sends)
        .buffer_unordered(5_000)
        .collect::<Vec<()>>()
        .await;
}

/// How many items a page of `url` has (0 when it cannot be read).
async fn items(client: &reqwest::Client, url: &str, token: &str) -> usize {
    let page: Option<Value> = match client.get(url).bearer_auth(token).send().await {
        Ok(r) => r.json().await.ok(),
        Err(_) => None,
    };
    page.and_then(|p| p["items"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// GETs `url` with `token`: the status and how long it took.
async fn timed(client: &reqwest::Client, url: &str, token: &str) -> (u16, Duration) {
    let t = Instant::now();
    let status = match client.get(url).bearer_auth(token).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let _ = r.bytes().await;
            status
        }
        Err(_) => 0,
    };
    (status, t.elapsed())
}

/// The other tenant's page latencies over `span`, one request after another.
async fn other_tenant(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    span: Duration,
) -> Vec<Duration> {
    let until = Instant::now() + span;
    let mut samples = Vec::new();
    while Instant::now() < until {
        let (status, took) = timed(client, url, token).await;
        assert_eq!(status, 200, "the other tenant's page");
        samples.push(took);
    }
    samples
}

fn deliveries(api: &AdminProcess, org: &str) -> String {
    format!(
        "{}/api/v1/orgs/{org}/sandboxes/sb1/webhook/deliveries",
        api.base
    )
}

/// Waits until the API's delivery log holds both webhooks' outcomes (every failed one of
/// acme's).
async fn wait_indexed(api: &AdminProcess, acme: &str, globex: &str) {
    let (looped, other) = (deliveries(api, "acme"), deliveries(api, "globex"));
    let client = plain_client();
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let failed = items(&client, &format!("{looped}?status=failed&limit=500"), acme).await;
        let theirs = items(&client, &format!("{other}?limit=500"), globex).await;
        if failed == LOOPED_OUTCOMES / 100 && theirs == OTHER_OUTCOMES {
            break;
        }
        assert!(
            Instant::now() < until,
            "the delivery log never indexed the outcomes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn tenants_apart(api: &AdminProcess, acme: &str, globex: &str) {
    let (looped, other) = (deliveries(api, "acme"), deliveries(api, "globex"));
    let client = plain_client();
    let page = format!("{other}?limit=50");
    let alone = other_tenant(&client, &page, globex, Duration::from_secs(5)).await;
    // The loop: a filter nothing matches reads the page's whole budget of entries.
    let expensive = format!("{looped}?status=skipped&limit=50");
    let stop = Instant::now() + Duration::from_secs(10);
    let loops = (0..LOOPS).map(|_| {
        let (client, url, token) = (plain_client(), expensive.clone(), acme.to_owned());
        async move {
            let mut answers = (0usize, 0usize, 0usize);
            while Instant::now() < stop {
                match timed(&client, &url, &token).await.0 {
                    200 => answers.0 += 1,
                    429 => answers.1 += 1,
                    _ => answers.2 += 1,
                }
            }
            answers
        }
    });
    let looping = futures::future::join_all(loops);
    let beside = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        other_tenant(&client, &page, globex, Duration::from_secs(9)).await
    };
    let (answers, beside) = tokio::join!(looping, beside);
    let sum = |f: fn(&(usize, usize, usize)) -> usize| answers.iter().map(f).sum::<usize>();
    println!(
        "  one tenant looping a delivery-log page that reads {LOOPED_OUTCOMES} outcomes, from {LOOPS} connections for 10 s: {} × 200, {} × 429, {} other",
        sum(|a| a.0),
        sum(|a| a.1),
        sum(|a| a.2)
    );
    println!(
        "    another tenant's page alone:      {}",
        percentiles(alone)
    );
    println!(
        "    another tenant's page beside it:  {}",
        percentiles(beside)
    );
}
