//! "Send a test": the SPEC's example payload, with the webhook's org and sandbox and a fresh
//! id, POSTed through the processor's own sender (destination guard, TLS, JWT, signing,
//! headers, timeouts). It writes no outcome, and each webhook gets a few a minute.

use super::budget::PerMinute;
use std::time::SystemTime;

use bytes::Bytes;
use serde_json::{json, Value};

use super::{At, Service};
use crate::admin::problem::Problem;
use crate::delivery::sender::DeliveryIds;
use crate::delivery::{Deliverer, DelivererError};
use crate::domain::config::WebhookConfig;
use crate::domain::retry::AttemptResult;
use crate::domain::time::unix_seconds;
use crate::settings::Settings;

/// The example payload of the SPEC (`examples/payload.json`).
const EXAMPLE: &str = include_str!("../../../examples/payload.json");

/// What a test send needs: the processor's sender and authentication.
pub struct Tester {
    deliverer: Deliverer,
    /// Test sends per webhook and minute.
    budget: PerMinute,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct TesterError(#[from] DelivererError);

impl Tester {
    pub fn new(settings: &Settings) -> Result<Self, TesterError> {
        Ok(Tester {
            deliverer: Deliverer::from_settings(settings)?,
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
    /// The first KiB of the answer.
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
    let (auth, sender) = (tester.deliverer.auth(), tester.deliverer.sender());
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
    Ok(TestResult {
        webhook_id: id,
        delivered,
        http_status: report.attempt.http_status,
        error: report.attempt.error,
        latency_ms: u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX),
        response: String::from_utf8_lossy(&report.response_head).into_owned(),
    })
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
    fn each_webhook_gets_a_few_a_minute() {
        let mut settings = Settings::default();
        settings.admin.test_sends_per_minute = 2;
        let budget = Tester::new(&settings).unwrap().budget;
        assert!(budget.admit("a") && budget.admit("a"));
        assert!(!budget.admit("a"));
        assert!(budget.admit("b"));
    }
}
