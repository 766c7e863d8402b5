//! What each webhook says for itself beyond the SPEC's rules: its filter, its timeout and
//! its retry schedule.

use std::time::Duration;

use feedback_webhooks::receiver::Reply;
use feedback_webhooks::schema::Kind;
use serde_json::{json, Value};

use crate::support::kafka::Reader;
use crate::support::processor::Processor;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_filter_keeps_only_hard_bounces_of_one_campaign() {
    let s = Harness::start("filter").await;
    let p = &s.producer;
    let mut hook = webhook(ORG, SANDBOX, &s.receiver.url("/hard-bounces"));
    hook["filter"] = json!({"all": [
        {"field": "messageDeliveryFeedback.messageFailure.type", "op": "equals", "value": "Hard"},
        {"field": "messageExecution.campaignID", "op": "equals", "value": CAMPAIGN}
    ]});
    p.send_json(&s.topics.config, Some(&webhook_key(ORG, SANDBOX)), &hook)
        .await;
    for campaign_id in [CAMPAIGN, "other-campaign"] {
        p.send_json(
            &s.topics.config,
            Some(&campaign_key(ORG, SANDBOX, campaign_id)),
            &campaign(ORG, SANDBOX, campaign_id, true),
        )
        .await;
    }
    let _processor = Processor::start(&s.env, s.dir.path().join("processor.log"));

    // Each event: the SPEC's example with its failure type, campaign and status set.
    let event = |id: &str, failure: Value, campaign_id: &str, status: &str| {
        let mut e = spec_event(id);
        let journey = &mut e["_experience"]["customerJourneyManagement"];
        journey["messageExecution"]["campaignID"] = json!(campaign_id);
        journey["messageDeliveryfeedback"]["messageFailure"] = failure;
        journey["messageDeliveryfeedback"]["feedbackStatus"] = json!(status);
        e
    };
    let hard =
        json!({"category": "async", "type": "Hard", "code": "550", "reason": "no such user"});
    let soft = json!({"category": "async", "type": "Soft", "code": "421", "reason": "try later"});
    let events = [
        event("e-hard", hard.clone(), CAMPAIGN, "bounce"),
        event("e-soft", soft, CAMPAIGN, "bounce"),
        event("e-hard-other-campaign", hard, "other-campaign", "bounce"),
        event("e-sent", Value::Null, CAMPAIGN, "sent"),
    ];
    for e in &events {
        p.send_json(&s.topics.input, None, e).await;
    }

    let mut outcomes = Reader::new(&s.topics.outcomes);
    outcomes.wait_for(events.len());
    outcomes.poll_for(Duration::from_secs(2));
    assert_eq!(
        outcomes.records.len(),
        events.len(),
        "{:#?}",
        outcomes.records
    );
    let by_id = outcomes.by_event_id();
    for (id, status, reason) in [
        ("e-hard", "delivered", Value::Null),
        ("e-soft", "skipped", json!("filtered")),
        ("e-hard-other-campaign", "skipped", json!("filtered")),
        ("e-sent", "skipped", json!("filtered")),
    ] {
        let outcome = &by_id[id];
        assert_schema(Kind::Outcome, outcome);
        assert_eq!(outcome["status"], status, "{id}");
        assert_eq!(outcome["reason"], reason, "{id}");
        if status == "skipped" {
            assert_eq!(outcome["attempts"], json!([]), "{id}");
        }
    }
    let received = s.receiver.received();
    let ids: Vec<Option<&str>> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids, [Some("e-hard")], "only the hard bounce is requested");
}

/// Publishes a webhook for `org`/`sandbox` at `path` of the test receiver, with `delivery`
/// as its own policy, and opts its campaign in.
async fn webhook_with_policy(s: &Harness, org: &str, sandbox: &str, path: &str, delivery: Value) {
    let p = &s.producer;
    let mut hook = webhook(org, sandbox, &s.receiver.url(path));
    hook["delivery"] = delivery;
    p.send_json(&s.topics.config, Some(&webhook_key(org, sandbox)), &hook)
        .await;
    p.send_json(
        &s.topics.config,
        Some(&campaign_key(org, sandbox, CAMPAIGN)),
        &campaign(org, sandbox, CAMPAIGN, true),
    )
    .await;
}

fn event_of(id: &str, org: &str, sandbox: &str) -> Value {
    let mut e = spec_event(id);
    e["imsOrg"] = json!(org);
    e["sandbox"]["id"] = json!(sandbox);
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_one_second_timeout_fails_a_two_second_receiver_while_the_default_waits_for_it() {
    let s = Harness::start("own-timeout").await;
    // Both webhooks on the same host; only one asks for a 1 s timeout (and no retries).
    webhook_with_policy(
        &s,
        "orgShort",
        "sbx",
        "/short",
        json!({"timeoutMs": 1000, "maxAttempts": 1}),
    )
    .await;
    webhook_with_policy(&s, "orgDefault", "sbx", "/default", Value::Null).await;
    s.receiver.respond(|_| Reply {
        delay: Some(Duration::from_secs(2)),
        ..Reply::status(200)
    });
    let _processor = Processor::start(&s.env, s.dir.path().join("processor.log"));
    for (id, org) in [("e-short", "orgShort"), ("e-default", "orgDefault")] {
        s.producer
            .send_json(&s.topics.input, None, &event_of(id, org, "sbx"))
            .await;
    }

    let mut outcomes = Reader::new(&s.topics.outcomes);
    outcomes.wait_for(2);
    let by_id = outcomes.by_event_id();
    let short = &by_id["e-short"];
    assert_eq!(short["status"], "failed", "{short}");
    assert_eq!(short["reason"], "retries_exhausted", "{short}");
    let attempts = short["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "maxAttempts 1: {short}");
    let error = attempts[0]["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("timeout"), "{short}");
    let took = attempts[0]["durationMs"].as_u64().unwrap();
    assert!(
        (1000..1900).contains(&took),
        "gave up after {took} ms: {short}"
    );

    let default = &by_id["e-default"];
    assert_eq!(default["status"], "delivered", "{default}");
    let took = default["attempts"][0]["durationMs"].as_u64().unwrap();
    assert!(
        took >= 2000,
        "the default timeout waited for the answer: {took} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_schedule_of_one_second_three_times_is_followed_exactly() {
    let s = Harness::start("own-schedule").await;
    // The deployment's schedule in these tests is 0.2 s, 0.2 s: the webhook's own replaces it.
    webhook_with_policy(
        &s,
        ORG,
        SANDBOX,
        "/flaky",
        json!({"retrySchedule": [1, 1, 1]}),
    )
    .await;
    s.receiver.respond(|_| Reply::status(503));
    let _processor = Processor::start(&s.env, s.dir.path().join("processor.log"));
    s.producer
        .send_json(&s.topics.input, None, &event_of("e-flaky", ORG, SANDBOX))
        .await;

    let mut outcomes = Reader::new(&s.topics.outcomes);
    let outcome = outcomes.wait_for(1)[0].clone();
    assert_schema(Kind::Outcome, &outcome);
    assert_eq!(outcome["status"], "failed", "{outcome}");
    assert_eq!(outcome["reason"], "retries_exhausted", "{outcome}");
    assert_eq!(
        outcome["attempts"].as_array().unwrap().len(),
        4,
        "{outcome}"
    );
    outcomes.poll_for(Duration::from_secs(2));
    assert_eq!(outcomes.records.len(), 1, "one outcome");
    let received = s.receiver.received();
    assert_eq!(received.len(), 4, "the first attempt and three retries");
    // Each retry one second after the answer before it (503s come at once): never early,
    // never a deployment's 0.2 s, and late by no more than the retry tier's pick-up.
    for pair in received.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at).unwrap();
        assert!(
            gap >= Duration::from_millis(990) && gap < Duration::from_millis(1800),
            "a retry {gap:?} after the attempt before it"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_410_disables_the_webhook_and_an_abort_header_ends_the_event_without_retries() {
    let s = Harness::start("receiver-signals").await;
    webhook_with_policy(&s, "orgGone", "sbx", "/gone", Value::Null).await;
    webhook_with_policy(&s, "orgAbort", "sbx", "/abort", Value::Null).await;
    s.receiver.respond(|r| {
        if r.path == "/gone" {
            Reply::status(410)
        } else {
            // A 503 is retried, unless the receiver says not to.
            Reply {
                headers: vec![("webhook-delivery".into(), "abort".into())],
                ..Reply::status(503)
            }
        }
    });
    let mut processor = Processor::start(&s.env, s.dir.path().join("processor.log"));
    for (id, org) in [("e-gone-1", "orgGone"), ("e-abort", "orgAbort")] {
        s.producer
            .send_json(&s.topics.input, None, &event_of(id, org, "sbx"))
            .await;
    }
    let mut outcomes = Reader::new(&s.topics.outcomes);
    outcomes.wait_for(2);
    let by_id = outcomes.by_event_id();
    for id in ["e-gone-1", "e-abort"] {
        let outcome = &by_id[id];
        assert_eq!(outcome["status"], "failed", "{outcome}");
        assert_eq!(outcome["reason"], "http_status", "{outcome}");
        assert_eq!(
            outcome["attempts"].as_array().unwrap().len(),
            1,
            "{outcome}"
        );
    }

    // The webhook is disabled in the config topic, by the receiver, and audited.
    let written = processor.wait_log("config write", 1);
    let fields = &written[0]["fields"];
    assert_eq!(
        (&fields["who"], &fields["action"], &fields["key"]),
        (
            &json!("receiver"),
            &json!("disable"),
            &json!("webhook/orgGone/sbx")
        ),
        "{written:?}"
    );
    assert_eq!(written[0]["target"], "feedback_webhooks::audit");
    // The next event of that webhook is skipped; the other webhook is untouched.
    for (id, org) in [("e-gone-2", "orgGone"), ("e-abort-2", "orgAbort")] {
        s.producer
            .send_json(&s.topics.input, None, &event_of(id, org, "sbx"))
            .await;
    }
    outcomes.wait_for(4);
    let by_id = outcomes.by_event_id();
    assert_eq!(by_id["e-gone-2"]["status"], "skipped");
    assert_eq!(by_id["e-gone-2"]["reason"], "webhook_disabled");
    assert_eq!(by_id["e-abort-2"]["reason"], "http_status");
    let to_gone = s
        .receiver
        .received()
        .iter()
        .filter(|r| r.path == "/gone")
        .count();
    assert_eq!(to_gone, 1, "no request after the 410");
}

/// The most receipts in any one-second window (sliding, by arrival time).
fn most_in_one_second(mut at: Vec<std::time::SystemTime>) -> usize {
    at.sort();
    let mut most = 0;
    let mut from = 0;
    for to in 0..at.len() {
        while at[to].duration_since(at[from]).unwrap_or_default() >= Duration::from_secs(1) {
            from += 1;
        }
        most = most.max(to - from + 1);
    }
    most
}

/// `n` events of `org`/`sbx`, spread evenly over the input's three partitions.
async fn send_spread(s: &Harness, prefix: &str, org: &str, n: usize) {
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        s.producer
            .send_json_to(
                &s.topics.input,
                (i % 3) as i32,
                &id,
                &event_of(&id, org, "sbx"),
            )
            .await;
    }
}

fn arrivals(s: &Harness, path: &str) -> Vec<std::time::SystemTime> {
    s.receiver
        .received()
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.at)
        .collect()
}

/// Publishes a webhook capped at 50 a second (burst 10) and an uncapped one on the same
/// host.
async fn capped_and_free(s: &Harness) {
    let p = &s.producer;
    for (org, path, rate) in [
        (
            "orgCapped",
            "/capped",
            json!({"perSecond": 50, "burst": 10}),
        ),
        ("orgFree", "/free", Value::Null),
    ] {
        let mut hook = webhook(org, "sbx", &s.receiver.url(path));
        hook["rateLimit"] = rate;
        p.send_json(&s.topics.config, Some(&webhook_key(org, "sbx")), &hook)
            .await;
        p.send_json(
            &s.topics.config,
            Some(&campaign_key(org, "sbx", CAMPAIGN)),
            &campaign(org, "sbx", CAMPAIGN, true),
        )
        .await;
    }
}

/// Waits until every event has its outcome; checks none failed.
fn all_delivered(outcomes: &mut Reader, n: usize) {
    outcomes.wait_for_within(n, Duration::from_secs(180));
    let by_id = outcomes.by_event_id();
    let failed: Vec<&Value> = by_id
        .values()
        .filter(|o| o["status"] != "delivered")
        .collect();
    assert!(
        failed.is_empty(),
        "over its cap is busy, never failed: {failed:?}"
    );
    assert_eq!(by_id.len(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_cap_holds_the_webhook_to_its_rate_and_never_holds_back_the_others() {
    let s = Harness::start("rate-cap").await;
    capped_and_free(&s).await;
    let _processor = Processor::start(&s.env, s.dir.path().join("processor.log"));
    // A connection to the host first, so that the capped webhook's first burst does not
    // arrive late (a TLS handshake) and bunch up with the requests after it.
    send_spread(&s, "warm", "orgFree", 1).await;
    s.receiver.wait_for(1).await;
    send_spread(&s, "capped", "orgCapped", 2_000).await;
    send_spread(&s, "free", "orgFree", 500).await;

    // The other webhook on the host does not wait behind the capped one's backlog: all of
    // its events arrive while the capped one still has hundreds to go (at 50 a second,
    // 2,000 take 40 s; producing the 2,500 takes some 15 s of it).
    let until = std::time::Instant::now() + PATIENCE;
    while arrivals(&s, "/free").len() < 501 {
        assert!(
            std::time::Instant::now() < until,
            "the free webhook's events did not all arrive"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let capped_so_far = arrivals(&s, "/capped").len();
    assert!(
        capped_so_far < 1_500,
        "{capped_so_far} capped requests before the free webhook's 500"
    );

    let mut outcomes = Reader::new(&s.topics.outcomes);
    all_delivered(&mut outcomes, 2_501);
    let capped = arrivals(&s, "/capped");
    assert!(capped.len() >= 2_000, "{}", capped.len());
    let span = capped
        .iter()
        .max()
        .unwrap()
        .duration_since(*capped.iter().min().unwrap());
    let most = most_in_one_second(capped);
    eprintln!(
        "rate cap, one instance: at most {most} in one second; 2,000 in {:.1} s; the free webhook's 500 done when {capped_so_far} capped had gone",
        span.unwrap_or_default().as_secs_f64()
    );
    assert!(
        most <= 60,
        "{most} requests in one second: over 50 a second + a burst of 10"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_cap_holds_for_the_group_of_three_instances() {
    let s = Harness::start("rate-cap-group").await;
    capped_and_free(&s).await;
    // Three instances in one group, each with its own cache: one input partition each.
    let processors: Vec<Processor> = (0..3)
        .map(|i| {
            let mut env = s.env.clone();
            env.retain(|(k, _)| k != "FW_STORE__PATH");
            let store = s.dir.path().join(format!("store-{i}"));
            env.push(("FW_STORE__PATH".into(), store.display().to_string()));
            // Parked events spread over the instances too (one partition would send them
            // all to one instance, which holds a third of the cap).
            env.retain(|(k, _)| k != "FW_KAFKA__RETRY_PARTITIONS");
            env.push(("FW_KAFKA__RETRY_PARTITIONS".into(), "3".into()));
            Processor::start(&env, s.dir.path().join(format!("processor-{i}.log")))
        })
        .collect();
    // The group settles: each instance owns one of the three partitions.
    let settle_until = std::time::Instant::now() + PATIENCE;
    let mut processors = processors;
    loop {
        let settled = processors.iter_mut().all(|p| {
            p.messages("share of the group's rate caps")
                .last()
                .is_some_and(|l| l["fields"]["owned"] == 1 && l["fields"]["total"] == 3)
        });
        if settled {
            break;
        }
        assert!(
            std::time::Instant::now() < settle_until,
            "the group did not settle on one partition each"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    send_spread(&s, "warm", "orgFree", 3).await;
    s.receiver.wait_for(3).await;
    send_spread(&s, "capped", "orgCapped", 2_000).await;
    let mut outcomes = Reader::new(&s.topics.outcomes);
    all_delivered(&mut outcomes, 2_003);
    let capped = arrivals(&s, "/capped");
    let most = most_in_one_second(capped.clone());
    assert!(most <= 60, "{most} requests in one second across the group");
    // The group's rate while all three have the webhook's events queued (each holds 256,
    // 15 s of its share): within 10% of the cap, over ten seconds after the first second.
    let first = capped.iter().min().copied().unwrap();
    let from = first + Duration::from_secs(1);
    let to = from + Duration::from_secs(10);
    let in_window = capped.iter().filter(|&&t| t >= from && t < to).count();
    let rate = in_window as f64 / 10.0;
    eprintln!("rate cap, three instances: at most {most} in one second; {rate:.1} a second from 1 s to 11 s");
    assert!(
        (45.0..=55.0).contains(&rate),
        "the group sent {rate:.1} a second against a cap of 50"
    );
}
