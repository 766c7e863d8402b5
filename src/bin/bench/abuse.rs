//! The administration API under abuse, on loopback: what anyone can send before
//! authenticating. 64 concurrent requests with made-up tokens (of today's shape, of the old
//! Argon2 shape, and garbage), then a valid token from the same client, then 1,000 silent
//! TCP connections. Prints how long the answers took, the answers, the process's peak RSS
//! growth, and how long the silent connections stayed open.
//!
//! Run it with `scripts/bench --abuse` (figures in RELIABILITY.md).

use std::path::Path;
use std::time::{Duration, Instant};

use feedback_webhooks::admin::tokens;
use tokio::io::AsyncReadExt;

use super::admin::{plain_client, start_admin_with};
use super::{create_topics, delete_topics};

/// Requests with made-up tokens sent at once.
const MADE_UP: usize = 64;
/// Silent connections opened at once.
const SILENT: usize = 1_000;

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
    let settings = entry("bench", &hash) + &entry("old", &old_hash);
    let api = start_admin_with(bin, &topics, dir.path(), &settings);
    let client = plain_client();
    api.wait_ready(&client).await;
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
        "  {SILENT} silent connections: {} closed by the server, the first after {:.1} s, the last after {:.1} s; {open_after} still open after 60 s",
        SILENT - open_after,
        first.unwrap_or_default().as_secs_f64(),
        last.unwrap_or_default().as_secs_f64()
    );
    let after = client.get(&url).bearer_auth(&token).send().await;
    println!(
        "  a valid request after them: {}",
        after.map(|r| r.status().as_u16()).unwrap_or(0)
    );
    drop(api);
    delete_topics(bootstrap, &topics).await;
}
