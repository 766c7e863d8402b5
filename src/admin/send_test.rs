//! "Send a test": the SPEC's example payload, with the webhook's org and sandbox and a fresh
//! id, POSTed through the processor's own sender (destination guard, TLS, JWT, signing,
//! headers, timeouts). It writes no outcome, and each webhook gets a few a minute.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

use super::auth::{allow, Caller};
use super::problem::Problem;
use super::AppState;
use crate::delivery::auth::Auth;
use crate::delivery::client::ClientOptions;
use crate::delivery::secrets::Secrets;
use crate::delivery::sender::DeliveryIds;
use crate::delivery::{build_client, ClientError, Sender};
use crate::domain::config::{ConfigKey, WebhookConfig};
use crate::domain::retry::AttemptResult;
use crate::domain::time::unix_seconds;
use crate::settings::{Settings, SettingsError};

/// The example payload of the SPEC (`examples/payload.json`).
const EXAMPLE: &str = include_str!("../../examples/payload.json");

/// What a test send needs: the processor's sender and authentication.
pub struct Tester {
    sender: Sender,
    auth: Auth,
    per_minute: usize,
    recent: Mutex<HashMap<String, Vec<Instant>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TesterError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl Tester {
    pub fn new(settings: &Settings) -> Result<Self, TesterError> {
        let policy = Arc::new(settings.address_policy()?);
        let client = build_client(&ClientOptions::from_settings(
            &settings.delivery,
            policy.clone(),
        ))?;
        Ok(Tester {
            sender: Sender::new(client, policy),
            auth: Auth::new(Secrets::new(
                settings.sealing_key()?,
                settings.secret_scope(),
            )),
            per_minute: settings.admin.test_sends_per_minute.max(1),
            recent: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `key` may send a test now (and counts it).
    fn admit(&self, key: &str) -> bool {
        let Ok(mut recent) = self.recent.lock() else {
            return false;
        };
        recent.retain(|_, times| {
            times.retain(|t| t.elapsed() < Duration::from_secs(60));
            !times.is_empty()
        });
        let times = recent.entry(key.to_owned()).or_default();
        if times.len() >= self.per_minute {
            return false;
        }
        times.push(Instant::now());
        true
    }
}

/// The example payload for `webhook`'s org and sandbox.
pub fn test_payload(webhook: &WebhookConfig) -> Value {
    let mut payload: Value = serde_json::from_str(EXAMPLE).unwrap_or(Value::Null);
    payload["imsOrg"] = json!(webhook.ims_org);
    payload["sandbox"] = json!({ "id": webhook.sandbox.id, "name": webhook.sandbox.name });
    payload
}

/// `POST .../webhook/test`: sends the SPEC's example payload through the processor's sender.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/webhook/test", tag = "webhooks", params(super::openapi::SandboxPath),
    responses((status = 200, description = "What the test send got", body = super::openapi::TestResult)))]
pub async fn send(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    Path((org, sandbox)): Path<(String, String)>,
) -> Result<Response, Problem> {
    allow(&caller, &org, Some(&sandbox), true)?;
    let key = ConfigKey::webhook(&org, &sandbox);
    let stored = state
        .store
        .raw(&key)
        .map_err(|e| Problem::unavailable(e.to_string()))?
        .ok_or_else(|| {
            Problem::not_found(format!("org {org:?} has no webhook in sandbox {sandbox:?}"))
        })?;
    let webhook: WebhookConfig = serde_json::from_slice(&stored.value)
        .map_err(|e| Problem::unavailable(format!("stored record unreadable: {e}")))?;
    let tester = &state.tester;
    if !tester.admit(&key.to_string()) {
        return Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many test sends",
            format!(
                "at most {} test sends a minute per webhook",
                tester.per_minute
            ),
        ));
    }
    let prepared = tester.auth.prepare(&webhook).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Webhook cannot authenticate",
            format!("authentication or signing settings: {e}"),
        )
    })?;
    let id = format!("test-{}", uuid::Uuid::new_v4());
    let body = Bytes::from(serde_json::to_vec(&test_payload(&webhook)).unwrap_or_default());
    let at = SystemTime::now();
    let security = tester
        .auth
        .headers(&prepared, &id, unix_seconds(at), &body)
        .map_err(|e| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Webhook cannot authenticate",
                format!("authentication or signing: {e}"),
            )
        })?;
    let ids = DeliveryIds {
        webhook_id: &id,
        replay_id: None,
    };
    let report = tester
        .sender
        .send(
            &webhook.url,
            webhook.headers.as_ref(),
            ids,
            at,
            &security,
            body,
        )
        .await
        .map_err(|e| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid headers", e.0))?;
    let delivered = matches!(report.result, AttemptResult::Response { status, .. } if (200..300).contains(&status));
    Ok(Json(json!({
        "webhookId": id,
        "delivered": delivered,
        "httpStatus": report.attempt.http_status,
        "error": report.attempt.error,
        "latencyMs": report.elapsed.as_millis() as u64,
        "response": String::from_utf8_lossy(&report.response_head),
    }))
    .into_response())
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
        let settings = Settings::default();
        let mut tester = Tester::new(&settings).unwrap();
        tester.per_minute = 2;
        assert!(tester.admit("a") && tester.admit("a"));
        assert!(!tester.admit("a"));
        assert!(tester.admit("b"));
    }
}
