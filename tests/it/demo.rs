//! The README's demo command (`scripts/demo`), as a new user runs it: against a broker
//! whose config topic already holds 200k records, twice in a row, and while another demo
//! still runs. It uses the local broker's default topics and fixed ports, so the three
//! runs are one test, one after another.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::kafka::Producer;

/// The demo's config topic (`examples/local.toml`).
const CONFIG_TOPIC: &str = "webhook-config";
const LOAD: usize = 200_000;

fn demo(dir: &std::path::Path, args: &[&str]) -> Command {
    let mut command = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo"));
    command
        .args(args)
        .env("DEMO_DIR", dir)
        .env("DEMO_BIN", crate::support::processor::bin())
        .env_remove("FW_CONFIG_FILE");
    command
}

fn text(out: &Output) -> String {
    format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A run that succeeded and printed the delivered payload and its outcome.
fn assert_delivered(out: &Output) {
    let all = text(out);
    assert!(out.status.success(), "the demo failed:\n{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let event = stdout
        .lines()
        .find_map(|l| l.strip_prefix("produced event "))
        .unwrap_or_else(|| panic!("no event produced:\n{all}"));
    let got = stdout
        .split("== the receiver got ==")
        .nth(1)
        .unwrap_or_else(|| panic!("no payload shown:\n{all}"));
    let (payload, rest) = got
        .split_once("== outcome record ==")
        .unwrap_or_else(|| panic!("no outcome shown:\n{all}"));
    assert!(payload.contains("\"messageDeliveryFeedback\""), "{all}");
    let outcome = rest.split("== readiness").next().unwrap_or_default();
    assert!(
        outcome.contains(&format!("\"eventId\": \"{event}\"")),
        "{all}"
    );
    assert!(outcome.contains("\"status\": \"delivered\""), "{all}");
    assert!(!all.contains("Traceback"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_works_on_a_large_config_topic_twice_and_says_when_one_is_running() {
    let dir = tempfile::tempdir().unwrap();
    // Other runs' records: 200k webhooks of other orgs (the same keys each time, so the
    // compacted topic does not grow without end). `scripts/kafka start` made the topic.
    let producer = Producer::new();
    let started = Instant::now();
    for chunk in (0..LOAD).collect::<Vec<_>>().chunks(10_000) {
        let sends = chunk.iter().map(|i| {
            let org = format!("demo-load-{i}");
            let key = format!("webhook/{org}/sb");
            let record = json!({ "kind": "webhook", "imsOrg": org,
                "sandbox": { "id": "sb", "name": "prod" }, "name": "earlier run",
                "channels": ["email"], "url": "https://hooks.example.com/x", "enabled": true,
                "authentication": { "type": "none" }, "updatedAt": "2026-12-01T00:00:00Z" });
            let producer = &producer;
            async move {
                producer.send_json(CONFIG_TOPIC, Some(&key), &record).await;
            }
        });
        futures::future::join_all(sends).await;
    }
    println!(
        "published {LOAD} config records in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // First run: it waits for the API and the processor to catch up, then delivers; then
    // again, with what the first run left behind.
    for run in [
        "on a config topic with 200k more records",
        "again, in a row",
    ] {
        let started = Instant::now();
        let out = tokio::task::spawn_blocking({
            let dir = dir.path().to_owned();
            move || demo(&dir, &[]).output().unwrap()
        })
        .await
        .unwrap();
        assert_delivered(&out);
        println!("demo {run}: {:.1} s", started.elapsed().as_secs_f64());
    }

    // One kept running; a second one says so and stops, leaving the first alone.
    let mut kept = demo(dir.path(), &["--keep"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(kept.stdout.take().unwrap());
    let ready = tokio::task::spawn_blocking(move || {
        lines
            .lines()
            .map_while(Result::ok)
            .any(|l| l.starts_with("running until Ctrl-C"))
    });
    let ready = tokio::time::timeout(Duration::from_secs(600), ready)
        .await
        .expect("the kept demo never got to running")
        .unwrap();
    assert!(ready, "the kept demo stopped before running");
    let other = tempfile::tempdir().unwrap();
    let out = demo(other.path(), &[]).output().unwrap();
    let all = text(&out);
    assert!(
        !out.status.success(),
        "a second demo ran beside the first:\n{all}"
    );
    assert!(
        all.contains("another scripts/demo is still running"),
        "{all}"
    );
    assert!(kept.try_wait().unwrap().is_none(), "the first demo stopped");
    // Ctrl-C ends the kept one.
    let pid = kept.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let until = Instant::now() + Duration::from_secs(60);
    while kept.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < until,
            "the kept demo did not stop on Ctrl-C"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
