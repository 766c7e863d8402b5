//! What an operator sees: the metrics and probes port, and a graceful shutdown that drains
//! deliveries under way.

use std::time::{Duration, Instant};

use feedback_webhooks::receiver::Reply;

use crate::support::kafka::Reader;
use crate::support::*;

pub async fn get(addr: &str, path: &str) -> (u16, String) {
    // Plain HTTP, but reqwest still wants a TLS provider chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::get(format!("http://{addr}{path}"))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// The value of the sample `series` (name with its labels, as exposed), if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_and_probes_describe_the_work_done() {
    let h = Harness::hooked("metrics").await;
    let mut env = h.env.clone();
    // Attempts are logged at debug level, inside their event's span.
    env.push((
        "FW_LOG__FILTER".into(),
        "info,feedback_webhooks::delivery=debug".into(),
    ));
    let mut processor =
        crate::support::processor::Processor::start(&env, h.dir.path().join("processor.log"));
    let addr = processor.http_addr();

    assert_eq!(get(&addr, "/healthz").await.0, 200);
    let until = Instant::now() + PATIENCE;
    loop {
        let (status, body) = get(&addr, "/readyz").await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < until, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(&addr, "/nowhere").await.0, 404);

    for i in 0..3 {
        let id = format!("metrics-{i}");
        h.producer
            .send_json(&h.topics.input, Some(&id), &spec_event(&id))
            .await;
    }
    h.producer
        .send(&h.topics.input, None, Some(b"not json"))
        .await;
    Reader::new(&h.topics.outcomes).wait_for(4);

    let input = &h.topics.input;
    let expected = [
        (
            format!("feedback_webhooks_events_consumed_total{{topic=\"{input}\"}}"),
            4.0,
        ),
        (
            "feedback_webhooks_outcomes_total{reason=\"none\",status=\"delivered\"}".into(),
            3.0,
        ),
        (
            "feedback_webhooks_outcomes_total{reason=\"invalid_event\",status=\"invalid\"}".into(),
            1.0,
        ),
        (
            "feedback_webhooks_delivery_attempts_total{class=\"2xx\"}".into(),
            3.0,
        ),
        (
            "feedback_webhooks_delivery_attempt_duration_seconds_count".into(),
            3.0,
        ),
        (
            "feedback_webhooks_config_records_total{result=\"applied\"}".into(),
            2.0,
        ),
        // The host's breaker and its one webhook's.
        (
            "feedback_webhooks_circuit_breakers{state=\"closed\"}".into(),
            2.0,
        ),
        ("feedback_webhooks_deliveries_queued".into(), 0.0),
        ("feedback_webhooks_deliveries_in_flight".into(), 0.0),
        ("feedback_webhooks_retries_pending".into(), 0.0),
    ];
    let until = Instant::now() + PATIENCE;
    let text = loop {
        let (status, text) = get(&addr, "/metrics").await;
        assert_eq!(status, 200);
        // Lag comes from librdkafka's statistics, every 5 s.
        let lag = (0..6).any(|p| {
            sample(
                &text,
                &format!("feedback_webhooks_consumer_lag{{consumer=\"input\",partition=\"{p}\",topic=\"{input}\"}}"),
            )
            .is_some()
        });
        if lag && expected.iter().all(|(s, v)| sample(&text, s) == Some(*v)) {
            break text;
        }
        if Instant::now() > until {
            for (s, v) in &expected {
                assert_eq!(sample(&text, s), Some(*v), "{s} in\n{text}");
            }
            panic!("no consumer_lag series for {input} in\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        sample(&text, "feedback_webhooks_config_cache_entries").is_some_and(|n| n >= 2.0),
        "{text}"
    );
    // No tenant identifiers in labels.
    assert!(!text.contains(ORG) && !text.contains(SANDBOX), "{text}");
    // JSON logs: an event's lines carry its span with the event id, org and sandbox.
    let attempt = processor
        .messages("attempt")
        .into_iter()
        .find(|l| l["span"]["event_id"] == "metrics-0")
        .expect("an attempt logged in the span of event metrics-0");
    assert_eq!(attempt["span"]["org"], ORG);
    assert_eq!(attempt["span"]["sandbox"], SANDBOX);
    assert!(processor.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_deliveries_under_way_and_commits_them() {
    let h = Harness::start("drain").await;
    // Each request takes 3 s: SIGTERM comes while all of them are under way.
    h.receiver.respond(|_| Reply {
        delay: Some(Duration::from_secs(3)),
        ..Reply::status(200)
    });
    h.configure(ORG, &h.receiver.url("/hook")).await;
    let mut processor = h.processor("first");
    for i in 0..5 {
        let id = format!("drain-{i}");
        h.producer
            .send_json(&h.topics.input, Some(&id), &spec_event(&id))
            .await;
    }
    h.receiver.wait_for(5).await;
    let status = processor.stop();
    assert!(status.success(), "exit status {status}");
    let mut outcomes = Reader::new(&h.topics.outcomes);
    let done = outcomes.wait_for(5);
    assert!(done.iter().all(|o| o["status"] == "delivered"), "{done:?}");
    // The drained records were committed: a restart delivers nothing again.
    let mut second = h.processor("second");
    second.wait_log("partitions assigned", 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        h.receiver.received().len(),
        5,
        "a drained event was delivered again"
    );
    assert!(second.stop().success());
}
