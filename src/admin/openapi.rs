//! The API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations and the shapes below, served at `/api/v1/openapi.json`.
//!
//! The shapes describe what the handlers answer; the records' full rules are the JSON
//! Schemas in `schemas/` (the processor's), which every write is validated against. Every
//! operation also answers errors as `application/problem+json` (the `default` response).

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

/// An error (RFC 9457).
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Validation failures: each offending field and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// One refused field of a write.
#[derive(Serialize, ToSchema)]
pub struct FieldError {
    /// JSON pointer into the request body, e.g. `/headers/Host`.
    pub pointer: String,
    pub detail: String,
}

/// A sandbox: its id (from the path) and name.
#[derive(Serialize, ToSchema)]
pub struct Sandbox {
    pub id: String,
    pub name: String,
}

/// The webhook of an org + sandbox, as read: secrets appear as
/// `{"set": true, "fingerprint": "..."}`, never their value.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// Always `webhook`.
    pub kind: String,
    pub ims_org: String,
    pub sandbox: Sandbox,
    pub name: String,
    /// `email` and/or `sms`.
    pub channels: Vec<String>,
    /// An `https://` URL.
    pub url: String,
    pub enabled: bool,
    /// `{"type": "none"}` or `{"type": "jwt", ...}`.
    #[schema(value_type = Object)]
    pub authentication: Value,
    pub updated_at: String,
    /// The config-topic version, `"{partition}-{offset}"` (also the `ETag`).
    pub version: String,
}

/// A webhook as written. `imsOrg` and `sandbox.id` come from the path; secrets may be
/// given as `{"value": "..."}` (sealed before they are published). Validated against
/// `schemas/webhook.schema.json`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookWrite {
    pub sandbox: SandboxName,
    pub name: String,
    pub channels: Vec<String>,
    pub url: String,
    pub enabled: bool,
    #[schema(value_type = Object)]
    pub authentication: Value,
    /// Extra headers sent with every request (name → value).
    #[schema(value_type = Option<Object>)]
    pub headers: Option<Value>,
    /// Signing secrets (Standard Webhooks).
    #[schema(value_type = Option<Object>)]
    pub signing: Option<Value>,
}

/// The sandbox's display name.
#[derive(Serialize, ToSchema)]
pub struct SandboxName {
    pub name: String,
}

/// A page of webhooks.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPage {
    pub items: Vec<Webhook>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// A campaign's opt-in.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Campaign {
    /// Always `campaign`.
    pub kind: String,
    pub ims_org: String,
    pub sandbox_id: String,
    #[serde(rename = "campaignID")]
    pub campaign_id: String,
    pub webhooks_enabled: bool,
    pub updated_at: String,
    pub version: String,
}

/// The body of an opt-in write (none: enabled).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CampaignWrite {
    pub webhooks_enabled: bool,
}

/// A page of campaign opt-ins.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CampaignPage {
    pub items: Vec<Campaign>,
    pub next_cursor: Option<String>,
}

/// One outcome of the delivery log (the outcome record of `schemas/outcome.schema.json`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub event_id: String,
    /// `delivered`, `failed`, `skipped` or `invalid`.
    pub status: String,
    pub channel: Option<String>,
    pub feedback_status: Option<String>,
    pub reason: Option<String>,
    /// Each attempt: time, HTTP status or error, latency.
    #[schema(value_type = Vec<Object>)]
    pub attempts: Vec<Value>,
    pub completed_at: String,
}

/// A page of the delivery log, newest first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryPage {
    pub items: Vec<Delivery>,
    pub next_cursor: Option<String>,
}

/// What a test send got.
#[derive(Serialize, ToSchema)]
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

/// A redelivery queued or started.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Redelivery {
    pub replay_id: String,
    /// One event: how many were queued (1).
    pub queued: Option<u64>,
    /// A window: `running`.
    pub state: Option<String>,
}

/// The body of a window redelivery.
#[derive(Serialize, ToSchema)]
pub struct RedeliverWindow {
    /// `failed` and/or `skipped` (default `["failed"]`).
    pub status: Option<Vec<String>>,
    /// RFC 3339: outcomes completed at or after.
    pub from: String,
    /// RFC 3339, exclusive (default now).
    pub to: Option<String>,
}

/// A window redelivery's progress.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedeliveryStatus {
    pub replay_id: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    /// `outcomes` (choosing the events) or `queueing`.
    pub phase: String,
    pub total: u64,
    pub scanned: u64,
    pub matched: u64,
    pub queued: u64,
    pub error: Option<String>,
}

/// The org of a request.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct OrgPath {
    /// The IMS org.
    #[param(example = "myImsOrg")]
    pub org: String,
}

/// The org + sandbox of a request.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SandboxPath {
    /// The IMS org.
    #[param(example = "myImsOrg")]
    pub org: String,
    /// The sandbox id.
    #[param(example = "068abf40-575e-11ea-8512-9b1bfdb82603")]
    pub sandbox: String,
}

/// `If-Match`: the version read (its `ETag`), or `*`.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IfMatch {
    #[param(rename = "If-Match")]
    pub if_match: Option<String>,
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "feedback-webhooks administration API",
        description = "Feedback webhooks of each IMS org + sandbox, campaign opt-ins, test sends, the delivery log and redelivery. Writes are published to the config topic; see the README's \"Administration API\"."
    ),
    paths(
        super::webhooks::inventory,
        super::webhooks::get,
        super::webhooks::put,
        super::webhooks::delete,
        super::webhooks::enable,
        super::webhooks::disable,
        super::send_test::send,
        super::deliveries::list,
        super::redeliver::one,
        super::redeliver::window,
        super::redeliver::progress,
        super::campaigns::list,
        super::campaigns::get,
        super::campaigns::put,
        super::campaigns::delete,
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&Conventions),
    tags(
        (name = "webhooks", description = "The webhook of an org + sandbox"),
        (name = "deliveries", description = "The delivery log and redelivery"),
        (name = "campaigns", description = "Campaign opt-ins"),
    )
)]
pub struct ApiDoc;

/// What every operation shares: bearer tokens, and errors as problem+json.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.responses.insert(
            "Problem".into(),
            ResponseBuilder::new()
                .description("An error, as application/problem+json (RFC 9457)")
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
                .into(),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                operation
                    .responses
                    .responses
                    .insert("default".into(), Ref::from_response_name("Problem").into());
            }
        }
    }
}

/// The document as served.
pub fn document() -> Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_errors_as_problems() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        let webhook = "/api/v1/orgs/{org}/sandboxes/{sandbox}/webhook";
        for (path, methods) in [
            ("/api/v1/orgs/{org}/webhooks", &["get"][..]),
            (webhook, &["get", "put", "delete"][..]),
            (&format!("{webhook}/enable"), &["post"][..]),
            (&format!("{webhook}/disable"), &["post"][..]),
            (&format!("{webhook}/test"), &["post"][..]),
            (&format!("{webhook}/deliveries"), &["get"][..]),
            (
                &format!("{webhook}/deliveries/{{eventId}}/redeliver"),
                &["post"][..],
            ),
            (&format!("{webhook}/redeliver"), &["post"][..]),
            (&format!("{webhook}/redeliver/{{replayId}}"), &["get"][..]),
            (
                "/api/v1/orgs/{org}/sandboxes/{sandbox}/campaigns",
                &["get"][..],
            ),
            (
                "/api/v1/orgs/{org}/sandboxes/{sandbox}/campaigns/{campaign}",
                &["get", "put", "delete"][..],
            ),
        ] {
            for method in methods {
                let operation = &paths[path][*method];
                assert!(operation.is_object(), "{method} {path} is not documented");
                assert_eq!(
                    operation["responses"]["default"]["$ref"],
                    "#/components/responses/Problem"
                );
            }
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
