//! The contract's delivery path: payload, headers, outcomes, skip reasons, live config.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use feedback_webhooks::schema::Kind;
use serde_json::{json, Value};

use crate::support::kafka::Reader;
use crate::support::processor::Processor;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spec_example_is_delivered_with_the_spec_payload_and_headers() {
    let s = Harness::start("spec").await;
    let p = &s.producer;
    let mut hook = webhook(ORG, SANDBOX, &s.receiver.url("/ajo/feedback"));
    hook["headers"] = json!({ "X-Partner-Id": "acme" });
    p.send_json(&s.topics.config, Some(&webhook_key(ORG, SANDBOX)), &hook)
        .await;
    p.send_json(
        &s.topics.config,
        Some(&campaign_key(ORG, SANDBOX, CAMPAIGN)),
        &campaign(ORG, SANDBOX, CAMPAIGN, true),
    )
    .await;
    let _processor = Processor::start(&s.env, s.dir.path().join("processor.log"));

    let event_id = "5f0c1d2e-0000-4000-8000-00000000aaaa";
    let (partition, offset) = p
        .send_json(&s.topics.input, None, &spec_event(event_id))
        .await;

    let requests = s.receiver.wait_for(1).await;
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/ajo/feedback");
    let body: Value = serde_json::from_slice(&request.body).expect("body is JSON");
    assert_eq!(body, spec_payload());
    assert_schema(Kind::Payload, &body);
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("webhook-id"), Some(event_id));
    assert_eq!(request.header("x-partner-id"), Some("acme"));
    let sent_at: u64 = request
        .header("webhook-timestamp")
        .expect("webhook-timestamp")
        .parse()
        .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        now.abs_diff(sent_at) < 120,
        "webhook-timestamp {sent_at} is not now ({now})"
    );

    let mut outcomes = Reader::new(&s.topics.outcomes);
    let outcome = outcomes.wait_for(1)[0].clone();
    assert_schema(Kind::Outcome, &outcome);
    assert_eq!(outcome["eventId"], event_id);
    assert_eq!(outcome["status"], "delivered");
    assert_eq!(outcome["reason"], Value::Null);
    assert_eq!(outcome["channel"], "email");
    assert_eq!(outcome["feedbackStatus"], "bounce");
    assert_eq!(outcome["campaignID"], CAMPAIGN);
    assert_eq!(
        outcome["webhook"],
        json!({"name": "Order feedback", "url": s.receiver.url("/ajo/feedback")})
    );
    assert_eq!(
        outcome["source"],
        json!({"topic": s.topics.input, "partition": partition, "offset": offset})
    );
    let attempts = outcome["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["httpStatus"], 200);
    assert_eq!(attempts[0]["error"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_skip_reason_gives_one_skipped_outcome_and_no_request() {
    let s = Harness::start("skips").await;
    let p = &s.producer;
    let url = s.receiver.url("/hook");
    // Org A: email only, "sent" and "bounce"; campaign CAMPAIGN enabled, "off-campaign" not.
    let mut a = webhook("orgA", "sbxA", &url);
    a["channels"] = json!(["email"]);
    a["events"] = json!(["sent", "bounce"]);
    p.send_json(&s.topics.config, Some(&webhook_key("orgA", "sbxA")), &a)
        .await;
    p.send_json(
        &s.topics.config,
        Some(&campaign_key("orgA", "sbxA", CAMPAIGN)),
        &campaign("orgA", "sbxA", CAMPAIGN, true),
    )
    .await;
    p.send_json(
        &s.topics.config,
        Some(&campaign_key("orgA", "sbxA", "off-campaign")),
        &campaign("orgA", "sbxA", "off-campaign", false),
    )
    .await;
    // Org B: webhook disabled.
    let mut b = webhook("orgB", "sbxB", &url);
    b["enabled"] = json!(false);
    p.send_json(&s.topics.config, Some(&webhook_key("orgB", "sbxB")), &b)
        .await;
    p.send_json(
        &s.topics.config,
        Some(&campaign_key("orgB", "sbxB", CAMPAIGN)),
        &campaign("orgB", "sbxB", CAMPAIGN, true),
    )
    .await;
    let _processor = Processor::start(&s.env, s.dir.path().join("processor.log"));

    let for_org = |id: &str, org: &str, sandbox: &str| {
        let mut e = spec_event(id);
        e["imsOrg"] = json!(org);
        e["sandbox"]["id"] = json!(sandbox);
        e
    };
    // An event of orgA/sbxA with one field of its journey data changed.
    let changed = |id: &str, field: &str, value: &str| {
        let mut e = for_org(id, "orgA", "sbxA");
        let pointer = format!("/_experience/customerJourneyManagement{field}");
        *e.pointer_mut(&pointer).unwrap() = json!(value);
        e
    };
    let sms = "https://ns.adobe.com/xdm/channels/sms";
    let cases: Vec<(&str, Value)> = vec![
        ("no_webhook", for_org("e-no-webhook", "orgNone", "sbxNone")),
        ("webhook_disabled", for_org("e-disabled", "orgB", "sbxB")),
        (
            "channel_not_selected",
            changed("e-sms", "/messageProfile/channel/_id", sms),
        ),
        (
            "event_not_selected",
            changed(
                "e-delivered-status",
                "/messageDeliveryfeedback/feedbackStatus",
                "delivered",
            ),
        ),
        (
            "campaign_not_enabled",
            changed(
                "e-campaign-off",
                "/messageExecution/campaignID",
                "off-campaign",
            ),
        ),
        (
            "campaign_not_enabled",
            changed(
                "e-campaign-unknown",
                "/messageExecution/campaignID",
                "never-configured",
            ),
        ),
        (
            "not_transactional",
            changed("e-marketing", "/messageExecution/messageType", "marketing"),
        ),
    ];

    for (_, event) in &cases {
        p.send_json(&s.topics.input, None, event).await;
    }
    let mut outcomes = Reader::new(&s.topics.outcomes);
    outcomes.wait_for(cases.len());
    // Nothing more arrives: exactly one outcome per event.
    outcomes.poll_for(Duration::from_secs(2));
    assert_eq!(
        outcomes.records.len(),
        cases.len(),
        "{:#?}",
        outcomes.records
    );
    let by_id = outcomes.by_event_id();
    for (reason, event) in &cases {
        let id = event["_id"].as_str().unwrap();
        let outcome = &by_id[id];
        assert_schema(Kind::Outcome, outcome);
        assert_eq!(outcome["status"], "skipped", "{id}");
        assert_eq!(outcome["reason"], *reason, "{id}");
        assert_eq!(outcome["attempts"], json!([]), "{id}");
    }
    assert!(s.receiver.received().is_empty(), "a skipped event was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn config_edits_refusals_and_tombstones_apply_without_restart() {
    let s = Harness::start("live-config").await;
    let p = &s.producer;
    let key = webhook_key(ORG, SANDBOX);
    p.send_json(
        &s.topics.config,
        Some(&key),
        &webhook(ORG, SANDBOX, &s.receiver.url("/v1")),
    )
    .await;
    p.send_json(
        &s.topics.config,
        Some(&campaign_key(ORG, SANDBOX, CAMPAIGN)),
        &campaign(ORG, SANDBOX, CAMPAIGN, true),
    )
    .await;
    let mut processor = Processor::start(&s.env, s.dir.path().join("processor.log"));
    let mut outcomes = Reader::new(&s.topics.outcomes);

    p.send_json(&s.topics.input, None, &spec_event("e1")).await;
    assert_eq!(s.receiver.wait_for(1).await[0].path, "/v1");

    // An edit applies to the next event.
    let applied = processor.messages("config record applied").len();
    p.send_json(
        &s.topics.config,
        Some(&key),
        &webhook(ORG, SANDBOX, &s.receiver.url("/v2")),
    )
    .await;
    processor.wait_log("config record applied", applied + 1);
    p.send_json(&s.topics.input, None, &spec_event("e2")).await;
    assert_eq!(s.receiver.wait_for(2).await[1].path, "/v2");

    // An invalid record is refused, with its reason logged, and the last valid value stays.
    let mut bad = webhook(ORG, SANDBOX, "http://plain.example.com/x");
    bad["headers"] = json!({"Host": "evil"});
    p.send_json(&s.topics.config, Some(&key), &bad).await;
    let refused = processor.wait_log("config record refused", 1);
    let reason = refused[0]["fields"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.contains("/url") || reason.contains("/headers"),
        "reason: {reason}"
    );
    p.send_json(&s.topics.input, None, &spec_event("e3")).await;
    assert_eq!(s.receiver.wait_for(3).await[2].path, "/v2");

    // A tombstone deletes the webhook.
    let applied = processor.messages("config record applied").len();
    p.tombstone(&s.topics.config, &key).await;
    processor.wait_log("config record applied", applied + 1);
    p.send_json(&s.topics.input, None, &spec_event("e4")).await;

    outcomes.wait_for(4);
    let by_id = outcomes.by_event_id();
    assert_eq!(by_id["e1"]["status"], "delivered");
    assert_eq!(by_id["e2"]["status"], "delivered");
    assert_eq!(by_id["e3"]["status"], "delivered");
    assert_eq!(by_id["e4"]["status"], "skipped");
    assert_eq!(by_id["e4"]["reason"], "no_webhook");
    assert_eq!(s.receiver.received().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retryable_answers_are_retried_and_final_ones_are_not() {
    let s = Harness::start("retries").await;
    let p = &s.producer;
    p.send_json(
        &s.topics.config,
        Some(&webhook_key(ORG, SANDBOX)),
        &webhook(ORG, SANDBOX, &s.receiver.url("/hook")),
    )
    .await;
    p.send_json(
        &s.topics.config,
        Some(&campaign_key(ORG, SANDBOX, CAMPAIGN)),
        &campaign(ORG, SANDBOX, CAMPAIGN, true),
    )
    .await;
    // "flaky" fails once with 503; "bad" gets a 400; "moved" a 301; "down" always 503.
    s.receiver.respond(|r| {
        let id = r.header("webhook-id").unwrap_or_default();
        let seen_before =
            id == "flaky" && FLAKY.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0;
        let status = match id {
            "flaky" if seen_before => 200,
            "flaky" | "down" => 503,
            "bad" => 400,
            "moved" => 301,
            _ => 200,
        };
        let mut reply = feedback_webhooks::receiver::Reply::status(status);
        if status == 301 {
            reply
                .headers
                .push(("location".into(), "https://localhost:1/elsewhere".into()));
        }
        reply
    });
    let _processor = Processor::start(&s.env, s.dir.path().join("processor.log"));
    for id in ["flaky", "bad", "moved", "down"] {
        p.send_json(&s.topics.input, None, &spec_event(id)).await;
    }
    let mut outcomes = Reader::new(&s.topics.outcomes);
    outcomes.wait_for(4);
    let by_id = outcomes.by_event_id();
    let attempts = |id: &str| by_id[id]["attempts"].as_array().unwrap().clone();

    assert_eq!(by_id["flaky"]["status"], "delivered");
    let statuses: Vec<Value> = attempts("flaky")
        .iter()
        .map(|a| a["httpStatus"].clone())
        .collect();
    assert_eq!(statuses, [json!(503), json!(200)]);

    assert_eq!(by_id["bad"]["status"], "failed");
    assert_eq!(by_id["bad"]["reason"], "http_status");
    assert_eq!(attempts("bad").len(), 1);

    assert_eq!(by_id["moved"]["status"], "failed");
    assert_eq!(by_id["moved"]["reason"], "http_status");
    assert_eq!(attempts("moved")[0]["httpStatus"], 301);

    // Test schedule: two retries, so three attempts in all.
    assert_eq!(by_id["down"]["status"], "failed");
    assert_eq!(by_id["down"]["reason"], "retries_exhausted");
    assert_eq!(attempts("down").len(), 3);
    for o in by_id.values() {
        assert_schema(Kind::Outcome, o);
    }
    // The redirect was not followed: every request came to /hook.
    assert!(s.receiver.received().iter().all(|r| r.path == "/hook"));
}

static FLAKY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
