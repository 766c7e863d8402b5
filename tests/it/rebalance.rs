//! Group membership changes on the real broker: what a paused loop is given stays paused,
//! and a revocation waiting for its records holds up only its own consumer loop.

use std::time::{Duration, Instant, SystemTime};

use feedback_webhooks::receiver::Reply;
use feedback_webhooks::settings::KafkaSettings;
use feedback_webhooks::source::{InputConsumer, Subscription};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::Value;

use crate::support::kafka::{bootstrap, Topics};
use crate::support::{spec_event, Harness, PATIENCE};

/// Partitions assigned to a consumer whose loop has paused (it is full) are paused too: it
/// is handed nothing from them until it resumes, so what it holds stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_assigned_while_paused_stay_paused() {
    let topics = Topics::create("paused-assign").await;
    let producer = crate::support::kafka::Producer::new();
    for i in 0..6 {
        let partition = i % 3;
        producer
            .send_json_to(
                &topics.input,
                partition,
                &format!("k{i}"),
                &spec_event(&format!("e{i}")),
            )
            .await;
    }
    let kafka = KafkaSettings {
        bootstrap_servers: bootstrap(),
        ..KafkaSettings::default()
    };
    let consumer = InputConsumer::subscribe(
        &kafka,
        Subscription {
            name: "input",
            group: &topics.group,
            topics: std::slice::from_ref(&topics.input),
            max_record_bytes: 1 << 20,
            revoke_grace: Duration::from_secs(1),
            transactions: None,
            fatal: Default::default(),
            results: None,
            share: None,
        },
    )
    .unwrap();
    // Paused before the group has assigned anything.
    consumer.pause();
    let joined_by = Instant::now() + PATIENCE;
    let mut quiet_until = None;
    loop {
        if let Ok(got) = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
            panic!("a paused consumer was handed a record: {got:?}");
        }
        match quiet_until {
            None if consumer.joined() => {
                // Long enough for librdkafka to fetch what the partitions hold.
                quiet_until = Some(Instant::now() + Duration::from_secs(4));
            }
            None => assert!(Instant::now() < joined_by, "never joined the group"),
            Some(until) if Instant::now() >= until => break,
            Some(_) => {}
        }
    }
    consumer.resume();
    let mut got = 0;
    let until = Instant::now() + PATIENCE;
    while got < 6 {
        assert!(
            Instant::now() < until,
            "resumed, yet only {got} of 6 records"
        );
        if let Ok(Ok(Some(_))) =
            tokio::time::timeout(Duration::from_millis(200), consumer.next()).await
        {
            got += 1;
        }
    }
    consumer.unsubscribe();
}

/// While the input loop's revocation waits for its hung deliveries (up to the grace period),
/// the retry loop goes on: a parked event falls due and is delivered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_holds_up_only_its_own_loop() {
    let mut h = Harness::start("revoke-isolated").await;
    h.configure("hungOrg", &h.receiver.url("/hung")).await;
    h.configure("okOrg", &h.receiver.url("/ok")).await;
    let ok_requests = std::sync::atomic::AtomicUsize::new(0);
    h.receiver.respond(move |r| match r.path.as_str() {
        "/hung" => Reply {
            delay: Some(Duration::from_secs(120)),
            ..Reply::status(200)
        },
        _ if ok_requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 => {
            Reply::status(503)
        }
        _ => Reply::status(200),
    });
    for (k, v) in [
        ("FW_DELIVERY__RETRY_SCHEDULE_SECS", "[8, 8]"),
        ("FW_DELIVERY__REQUEST_TIMEOUT_MS", "90000"),
        ("FW_SHUTDOWN__REVOKE_GRACE_SECS", "25"),
        ("FW_SHUTDOWN__DRAIN_DEADLINE_SECS", "1"),
    ] {
        h.env.retain(|(key, _)| key != k);
        h.env.push((k.into(), v.into()));
    }
    let mut processor = h.processor("processor");
    processor.wait_log("partitions assigned", 1);
    // A hung delivery on every input partition, then one event whose first attempt fails.
    for partition in 0..3 {
        let mut event = spec_event(&format!("hung-{partition}"));
        event["imsOrg"] = "hungOrg".into();
        h.producer
            .send_json_to(&h.topics.input, partition, "hung", &event)
            .await;
    }
    let mut ok = spec_event("ok");
    ok["imsOrg"] = "okOrg".into();
    h.producer.send_json(&h.topics.input, None, &ok).await;
    h.receiver.wait_for(4).await;
    // Another member joins the input group: the processor must hand over a partition whose
    // delivery is hung, and waits for it.
    let joiner: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", &h.topics.group)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "10000")
        .create()
        .unwrap();
    joiner.subscribe(&[h.topics.input.as_str()]).unwrap();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let polling = std::thread::spawn(move || {
        while stopped.try_recv().is_err() {
            let _ = joiner.poll(Duration::from_millis(100));
        }
    });
    let retried = h.receiver.wait_for(5).await;
    let retry = retried
        .iter()
        .filter(|r| r.path == "/ok")
        .nth(1)
        .unwrap_or_else(|| panic!("the parked event was not retried: {retried:?}"));
    let revoked = processor.wait_log("partitions revoked", 1);
    let line = revoked
        .iter()
        .find(|l| l["fields"]["consumer"] == "input")
        .unwrap_or_else(|| panic!("{revoked:?}"));
    let (ended, waited) = (
        logged_at(line),
        line["fields"]["waited_ms"].as_u64().unwrap(),
    );
    assert!(line["fields"]["under_way"].as_u64() >= Some(1), "{line}");
    let began = ended - Duration::from_millis(waited);
    assert!(
        began < retry.at && retry.at < ended,
        "the retry ({:?}) was not delivered during the revocation ({began:?} .. {ended:?})",
        retry.at
    );
    let _ = stop.send(());
    polling.join().unwrap();
    processor.stop();
}

/// A JSON log line's timestamp.
fn logged_at(line: &Value) -> SystemTime {
    let at = time::OffsetDateTime::parse(
        line["timestamp"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    SystemTime::UNIX_EPOCH + Duration::from_nanos(at.unix_timestamp_nanos() as u64)
}
