//! The chaos run: ordinary events of ten tenants (one endpoint dead, one slow) mixed with 5%
//! hostile records (random bytes, invalid UTF-8, JSON nested 10,000 deep, huge ids and
//! strings, nulls, numbers out of range, valid events near the size limit). It prints an
//! invariant report and fails on any violation: every input record has a terminal outcome
//! (records with more than one are counted), every `delivered` was received, the committed
//! offsets reached the end of every partition.
//!
//! The short variant runs with the other tests; `scripts/chaos` runs 100k records
//! (`CHAOS_EVENTS`) and RELIABILITY.md has its figures.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use feedback_webhooks::receiver::Reply;
use serde_json::{json, Value};

use crate::support::kafka::{committed, Reader};
use crate::support::*;

const TENANTS: usize = 10;
/// Tenant 0's endpoint refuses connections; tenant 1's answers after a while.
const DEAD: usize = 0;
const SLOW: usize = 1;

fn events() -> usize {
    std::env::var("CHAOS_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000)
}

/// A record that is not an ordinary event, by kind (`i` picks the kind and varies it).
fn hostile(i: usize) -> (&'static str, Vec<u8>) {
    let random = |n: usize| (0..n).map(|_| rand::random::<u8>()).collect::<Vec<u8>>();
    match i % 8 {
        0 => ("random bytes", random(200 + i % 700)),
        1 => ("invalid UTF-8", {
            let mut v = br#"{"_id": "bad-utf8-"#.to_vec();
            v.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
            v.extend_from_slice(br#"", "imsOrg": "x"}"#);
            v
        }),
        2 => ("nested 10,000 deep", {
            let mut v = "[".repeat(10_000).into_bytes();
            v.extend("]".repeat(10_000).into_bytes());
            v
        }),
        3 => ("huge id", {
            let mut e = spec_event(&"h".repeat(300_000 + i));
            e["imsOrg"] = json!(format!("org{}", 2 + i % (TENANTS - 2)));
            serde_json::to_vec(&e).unwrap()
        }),
        4 => ("huge strings", {
            let mut e = spec_event(&format!("huge-strings-{i}"));
            e["_experience"]["customerJourneyManagement"]["messageExecution"]
                ["messageExecutionID"] = json!("m".repeat(400_000));
            serde_json::to_vec(&e).unwrap()
        }),
        5 => ("nulls", {
            let mut e = spec_event(&format!("nulls-{i}"));
            e["imsOrg"] = Value::Null;
            e["sandbox"] = Value::Null;
            serde_json::to_vec(&e).unwrap()
        }),
        6 => ("number out of range", {
            let e = serde_json::to_string(&spec_event(&format!("range-{i}"))).unwrap();
            e.replacen('{', r#"{"retryCount": 1e400, "#, 1).into_bytes()
        }),
        _ => ("valid, near the size limit", {
            // Padding that keeps the event just under the 1 MiB limit: valid, delivered.
            let mut e = spec_event(&format!("near-limit-{i}"));
            e["imsOrg"] = json!(format!("org{}", 2 + i % (TENANTS - 2)));
            let base = serde_json::to_vec(&e).unwrap().len();
            e["padding"] = json!("p".repeat((1 << 20) - base - 64));
            serde_json::to_vec(&e).unwrap()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_hostile_records_among_ten_tenants() {
    let n = events();
    let mut h = Harness::start("chaos").await;
    // A dead endpoint's events end on a short schedule and maximum age: those its
    // breaker holds back get their one request at the end of their age.
    for (k, v) in [
        ("FW_DELIVERY__RETRY_SCHEDULE_SECS", "[1, 2]"),
        ("FW_DELIVERY__RETRY_MAX_AGE_SECS", "10"),
        ("FW_DELIVERY__BREAKER_OPEN_SECS", "1"),
    ] {
        h.env.retain(|(key, _)| key != k);
        h.env.push((k.into(), v.into()));
    }
    h.receiver.respond(|r| {
        if r.path == format!("/t{SLOW}") {
            Reply {
                delay: Some(Duration::from_millis(50)),
                ..Reply::status(200)
            }
        } else {
            Reply::status(200)
        }
    });
    // Nothing listens on the dead tenant's port.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("https://127.0.0.1:{}/t0", dead.local_addr().unwrap().port());
    drop(dead);
    for t in 0..TENANTS {
        let url = match t {
            DEAD => dead_url.clone(),
            _ => h.receiver.url(&format!("/t{t}")),
        };
        h.configure(&format!("org{t}"), &url).await;
    }
    let mut processor = h.processor("processor");
    let started = Instant::now();
    // Every 20th record is hostile; near-limit events are kept to a few dozen.
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut expected_delivered = HashSet::new();
    let mut dead_events = 0;
    let mut last: HashMap<i32, i64> = HashMap::new();
    let mut pending = Vec::new();
    for i in 0..n {
        let (kind, bytes) = if i % 20 == 19 {
            let mut k = hostile(i / 20);
            if k.0 == "valid, near the size limit" && i / 20 / 8 >= 40 {
                k = hostile(i / 20 + 1);
            }
            k
        } else {
            let t = i % TENANTS;
            let mut e = spec_event(&format!("chaos-{i}"));
            e["imsOrg"] = json!(format!("org{t}"));
            ("ordinary", serde_json::to_vec(&e).unwrap())
        };
        *kinds.entry(kind).or_default() += 1;
        if kind == "ordinary" && i % TENANTS == DEAD {
            dead_events += 1;
        } else if kind == "ordinary" || kind == "valid, near the size limit" {
            expected_delivered.insert(i);
        }
        pending.push((format!("k{i}"), bytes));
        if pending.len() == 200 || i + 1 == n {
            let sends = pending
                .iter()
                .map(|(k, b)| h.producer.send(&h.topics.input, Some(k), Some(b)));
            for (p, o) in futures::future::join_all(sends).await {
                let e = last.entry(p).or_insert(o);
                *e = (*e).max(o);
            }
            pending.clear();
        }
    }
    let produced = started.elapsed();

    // Every record ends with an outcome naming it.
    let mut outcomes = Reader::new(&h.topics.outcomes);
    let patience = Duration::from_secs(120 + n as u64 / 200);
    let until = Instant::now() + patience;
    let mut per_record: HashMap<(i64, i64), Vec<Value>> = HashMap::new();
    loop {
        outcomes.poll_for(Duration::from_millis(500));
        per_record.clear();
        for o in &outcomes.records {
            let key = (
                o["source"]["partition"].as_i64().unwrap(),
                o["source"]["offset"].as_i64().unwrap(),
            );
            per_record.entry(key).or_default().push(o.clone());
        }
        if per_record.len() >= n {
            break;
        }
        assert!(
            Instant::now() < until,
            "{} of {n} records have an outcome after {patience:?}",
            per_record.len()
        );
    }
    let all_done = started.elapsed();
    outcomes.poll_for(Duration::from_secs(2));
    let peak_rss = processor.peak_rss_mb();

    // Committed offsets reach the end of every partition.
    let until = Instant::now() + Duration::from_secs(30);
    let offsets = loop {
        let offsets = committed(&h.topics.bootstrap, &h.topics.group, &h.topics.input);
        let at_end = last
            .iter()
            .all(|(p, o)| offsets.get(*p as usize).is_some_and(|c| c > o));
        if at_end || Instant::now() > until {
            break offsets;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let at_end = last
        .iter()
        .all(|(p, o)| offsets.get(*p as usize).is_some_and(|c| c > o));

    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for outs in per_record.values() {
        let last = outs.last().unwrap();
        *statuses
            .entry(format!(
                "{}/{}",
                last["status"].as_str().unwrap(),
                last["reason"]
            ))
            .or_default() += 1;
    }
    let repeated = per_record.values().filter(|o| o.len() > 1).count();
    let received: HashSet<String> = h
        .receiver
        .received()
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect();
    let delivered_ids: Vec<String> = per_record
        .values()
        .filter_map(|o| o.last())
        .filter(|o| o["status"] == "delivered")
        .filter_map(|o| o["eventId"].as_str().map(str::to_owned))
        .collect();
    let delivered_not_received = delivered_ids
        .iter()
        .filter(|id| !received.contains(*id))
        .count();
    let requests = h.receiver.received().len();
    let (status, _) = crate::observe::get(&processor.http_addr(), "/readyz").await;

    println!(
        "== chaos run: {n} records, {} tenants ({:.0} s) ==",
        TENANTS,
        all_done.as_secs_f64()
    );
    println!("  records by kind                 {kinds:?}");
    println!(
        "  produced in                     {:.1} s",
        produced.as_secs_f64()
    );
    println!(
        "  records with a terminal outcome {} (without: {})",
        per_record.len(),
        n - per_record.len()
    );
    println!("  records with repeated outcomes  {repeated}");
    println!("  final status/reason             {statuses:?}");
    println!(
        "  delivered                       {} (expected {})",
        delivered_ids.len(),
        expected_delivered.len()
    );
    println!("  delivered but never received    {delivered_not_received}");
    println!(
        "  requests received               {requests} (duplicates: {})",
        requests - received.len()
    );
    println!("  dead tenant's events            {dead_events}");
    println!("  committed offsets at the end    {at_end} ({offsets:?})");
    println!("  peak RSS                        {peak_rss:.0} MB");
    println!("  ready at the end                {}", status == 200);

    assert_eq!(per_record.len(), n, "records without an outcome");
    assert_eq!(delivered_not_received, 0);
    assert_eq!(
        delivered_ids.len(),
        expected_delivered.len(),
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .get("failed/\"retries_exhausted\"")
            .copied()
            .unwrap_or(0),
        dead_events,
        "{statuses:?}"
    );
    assert!(at_end, "committed {offsets:?}, last records at {last:?}");
    assert_eq!(status, 200, "still ready");
    assert!(processor.stop().success());
}
