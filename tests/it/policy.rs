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
