//! "Send a test": the SPEC's example payload, with the webhook's org and sandbox and a fresh
//! id, POSTed through the processor's own sender (destination guard, TLS, JWT, signing,
//! headers, timeouts). It writes no outcome, and each webhook gets a few a minute.
//!
//! The answer shows what the receiver said, so the API must not become a way to read (or
//! map) networks the operator opened for deliveries: a destination on the public internet
//! is sent to by a sender that can reach nothing else, and its answer's first KiB is shown;
//! one that needs an allowance (`delivery.allow_cidrs`, or the org's own
//! `delivery.org_allow_cidrs`) is sent to with the org's allowances only, and its answer
//! shows the status and the kind of error, never the body or the error's detail.

use super::budget::PerMinute;
use std::time::SystemTime;

use bytes::Bytes;
use serde_json::{json, Value};

use super::{At, Service};
use crate::admin::problem::Problem;
use crate::delivery::client::ClientOptions;
use crate::delivery::guard::needs_allowance;
use crate::delivery::sender::DeliveryIds;
use crate::delivery::{build_client, Deliverer, DelivererError, Sender};
use crate::domain::address::AddressPolicy;
use crate::domain::config::WebhookConfig;
use crate::domain::retry::AttemptResult;
use crate::domain::time::unix_seconds;
use crate::settings::Settings;
use std::sync::Arc;

/// The example payload of the SPEC (`examples/payload.json`).
const EXAMPLE: &str = include_str!("../../../examples/payload.json");

/// What a test send needs: the processor's senders and authentication, and a sender to
/// the public internet only.
pub struct Tester {
    deliverer: Deliverer,
    public: Sender,
    /// Test sends per webhook and minute.
    budget: PerMinute,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct TesterError(#[from] DelivererError);

impl Tester {
    pub fn new(settings: &Settings) -> Result<Self, TesterError> {
        let closed = Arc::new(AddressPolicy::default());
        let options = ClientOptions::from_settings(&settings.delivery, closed.clone());
        Ok(Tester {
            deliverer: Deliverer::from_settings(settings)?,
            public: Sender::new(
                build_client(&options).map_err(DelivererError::from)?,
                closed,
            ),
            budget: PerMinute::new(settings.admin.test_sends_per_minute),
        })
    }
}

/// The example payload for `webhook`'s org and sandbox.
pub fn test_payload(webhook: &WebhookConfig) -> Value {
    let mut payload: Value = serde_json::from_str(EXAMPLE).unwrap_or(Value::Null);
    payload["imsOrg"] = json!(webhook.ims_org);
    payload["sandbox"] = json!({ "id": webhook.sandbox.id, "name": webhook.sandbox.name });
    payload
}

/// What a test send got.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestResult {
    /// The test request's `webhook-id` (`test-...`).
    pub webhook_id: String,
    /// A 2xx answer.
    pub delivered: bool,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: u64,
    /// The first KiB of the answer (empty for a destination that needs an allowance).
    pub response: String,
}

fn cannot_authenticate(what: &str, e: impl std::fmt::Display) -> Problem {
    Problem::unprocessable("Webhook cannot authenticate", format!("{what}: {e}"))
}

/// Sends the SPEC's example payload to the webhook through the processor's sender. It
/// writes no outcome, and each webhook gets a few a minute.
pub async fn send(svc: &Service, at: At<'_>) -> Result<TestResult, Problem> {
    at.allow(true)?;
    let (org, sandbox) = (at.org, at.sandbox);
    let (key, webhook) = super::webhooks::config(svc, org, sandbox)?;
    let tester = &svc.tester;
    let _sending = svc.quotas.test_send(org)?;
    if !tester.budget.admit(&key.to_string()) {
        let most = tester.budget.limit();
        return Err(Problem::too_many(
            "Too many test sends",
            format!("at most {most} test sends a minute per webhook"),
        ));
    }
    let private = needs_allowance(&webhook.url).await;
    let auth = tester.deliverer.auth();
    let sender = if private {
        tester.deliverer.senders().for_org(org)
    } else {
        &tester.public
    };
    let prepared = auth
        .prepare(&webhook)
        .map_err(|e| cannot_authenticate("authentication or signing settings", e))?;
    let id = format!("test-{}", uuid::Uuid::new_v4());
    let body = Bytes::from(serde_json::to_vec(&test_payload(&webhook)).unwrap_or_default());
    let at = SystemTime::now();
    let security = auth
        .headers(&prepared, &id, unix_seconds(at), &body)
        .map_err(|e| cannot_authenticate("authentication or signing", e))?;
    let ids = DeliveryIds {
        webhook_id: &id,
        replay_id: None,
    };
    let report = sender
        .send(
            &webhook.url,
            webhook.headers.as_ref(),
            ids,
            at,
            &security,
            body,
        )
        .await
        .map_err(|e| Problem::unprocessable("Invalid headers", e.0))?;
    let delivered = matches!(report.result, AttemptResult::Response { status, .. } if (200..300).contains(&status));
    let (error, response) = if private {
        (
            report.attempt.error.as_deref().map(error_kind),
            String::new(),
        )
    } else {
        let head = String::from_utf8_lossy(&report.response_head).into_owned();
        (report.attempt.error, head)
    };
    Ok(TestResult {
        webhook_id: id,
        delivered,
        http_status: report.attempt.http_status,
        error,
        latency_ms: u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX),
        response,
    })
}

/// The kind of a transport error (`timeout`, `connect`, `destination blocked`...), without
/// its detail: the sender's errors read `{kind}: {detail}`.
fn error_kind(error: &str) -> String {
    error
        .split(':')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_payload_is_the_example_for_the_webhook() {
        let webhook: WebhookConfig = serde_json::from_value(json!({
            "kind": "webhook", "imsOrg": "acme", "sandbox": {"id": "sb1", "name": "dev"},
            "name": "n", "channels": ["email"], "url": "https://h.example/x", "enabled": true,
            "authentication": {"type": "none"}, "updatedAt": "2026-11-30T00:00:00Z"
        }))
        .unwrap();
        let p = test_payload(&webhook);
        assert_eq!(p["imsOrg"], "acme");
        assert_eq!(p["sandbox"], json!({"id": "sb1", "name": "dev"}));
        crate::schema::validate(crate::schema::Kind::Payload, &p).unwrap();
    }

    #[test]
    fn a_transport_error_is_told_by_its_kind_alone() {
        assert_eq!(
            error_kind("connect: Connection refused (os error 111)"),
            "connect"
        );
        assert_eq!(error_kind("timeout"), "timeout");
        assert_eq!(
            error_kind("destination blocked: 10.0.0.1 is private"),
            "destination blocked"
        );
    }

    #[test]
    fn each_webhook_gets_a_few_a_minute() {
        let mut settings = Settings::default();
        settings.admin.test_sends_per_minute = 2;
        let budget = Tester::new(&settings).unwrap().budget;
        assert!(budget.admit("a") && budget.admit("a"));
        assert!(!budget.admit("a"));
        assert!(budget.admit("b"));
    }
}
