//! The shapes the API's document describes: what the handlers answer and accept, for the
//! OpenAPI document only (the records' full rules are the JSON Schemas in `schemas/`).

use serde::Serialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// A page of a list: its items and where the next page starts.
macro_rules! page {
    ($name:ident of $item:ty, $doc:literal) => {
        #[doc = $doc]
        #[derive(Serialize, ToSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            pub items: Vec<$item>,
            /// Pass as `cursor` for the next page; null on the last.
            pub next_cursor: Option<String>,
        }
    };
}

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
#[schema(as = Sandbox)]
pub struct SandboxShape {
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
    pub sandbox: SandboxShape,
    pub name: String,
    /// `email` and/or `sms`.
    pub channels: Vec<String>,
    /// An `https://` URL.
    pub url: String,
    pub enabled: bool,
    /// `{"type": "none"}` or `{"type": "jwt", ...}`.
    #[schema(value_type = Object)]
    pub authentication: Value,
    /// Optional conditions on the payload an event must meet to be delivered:
    /// `{"all": [...]}`, `{"any": [...]}`, `{"not": {...}}` or a condition
    /// `{"field": "messageDeliveryFeedback.messageFailure.type", "op": "equals", "value": "Hard"}`
    /// (see `schemas/webhook.schema.json`); events it leaves out end `skipped`/`filtered`.
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// Optional: at most `perSecond` requests a second for the whole consumer group, with
    /// a `burst` (default 1); events over it wait or are parked as busy, never failed.
    #[schema(value_type = Option<Object>)]
    pub rate_limit: Option<Value>,
    pub updated_at: String,
    /// The config-topic version, `"{partition}-{offset}"` (also the `ETag`).
    pub version: String,
    /// Its health (in reads: the webhook and the inventory).
    pub health: Option<Health>,
}

/// A webhook's health: `healthy`, `failing` (since its first failed request after its
/// last success) or `disabled` (since its record was last changed), the requests of the
/// health window and the last error, as its health tracker last wrote them.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `healthy`, `failing` or `disabled`.
    pub state: String,
    /// RFC 3339.
    pub since: Option<String>,
    /// `{"successes", "failures", "failureRate", "windowSeconds"}`.
    #[schema(value_type = Object)]
    pub counts: Value,
    /// `{"at", "httpStatus", "error"}`.
    #[schema(value_type = Option<Object>)]
    pub last_error: Option<Value>,
}

/// An operational event (`schemas/operational-event.schema.json`): a change of a
/// webhook's health or of its enabled flag.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationalEvent {
    /// Stable for the same change (`op_...`); a notification's `webhook-id`.
    pub id: String,
    /// `webhook.failing`, `webhook.recovered`, `webhook.disabled`, `webhook.enabled` or
    /// `event.exhausted`.
    #[serde(rename = "type")]
    pub kind: String,
    pub occurred_at: String,
    pub ims_org: String,
    pub sandbox_id: String,
    pub webhook_version: Option<String>,
    pub state: String,
    pub since: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub counts: Option<Value>,
    /// `event.exhausted`: `{"count", "from", "to", "reasons"}`.
    #[schema(value_type = Option<Object>)]
    pub exhausted: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub last_error: Option<Value>,
    /// Who disabled or enabled it: `health`, `receiver` or a token's name.
    pub by: Option<String>,
}

page!(OperationalEventPage of OperationalEvent, "A page of an org's operational events, newest first.");

/// An org's notification endpoint, as read (secrets as fingerprints): where its
/// operational events are sent as signed Standard Webhooks requests
/// (`schemas/notification.schema.json`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationEndpoint {
    /// Always `notification`.
    pub kind: String,
    pub ims_org: String,
    pub name: Option<String>,
    pub url: String,
    pub enabled: bool,
    /// The operational event types sent; absent: all.
    pub events: Option<Vec<String>>,
    #[schema(value_type = Object)]
    pub authentication: Value,
    #[schema(value_type = Option<Object>)]
    pub headers: Option<Value>,
    /// Signing secrets (Standard Webhooks), required.
    #[schema(value_type = Object)]
    pub signing: Value,
    pub updated_at: String,
    pub version: String,
}

/// A notification endpoint as written; `imsOrg` comes from the path; secrets may be given
/// as `{"value": "..."}` (sealed before they are published).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationWrite {
    pub name: Option<String>,
    pub url: String,
    pub enabled: bool,
    pub events: Option<Vec<String>>,
    #[schema(value_type = Object)]
    pub authentication: Value,
    #[schema(value_type = Option<Object>)]
    pub headers: Option<Value>,
    #[schema(value_type = Object)]
    pub signing: Value,
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
    /// Extra headers sent with every request: name → a value, or a secret given as
    /// `{"value": "..."}` (sealed like the JWT key; read back as `{"set": true, ...}`).
    #[schema(value_type = Option<Object>)]
    pub headers: Option<Value>,
    /// Signing secrets (Standard Webhooks).
    #[schema(value_type = Option<Object>)]
    pub signing: Option<Value>,
    /// Optional conditions on the payload an event must meet to be delivered:
    /// `{"all": [...]}`, `{"any": [...]}`, `{"not": {...}}` or a condition
    /// `{"field": "messageDeliveryFeedback.messageFailure.type", "op": "equals", "value": "Hard"}`
    /// (see `schemas/webhook.schema.json`); events it leaves out end `skipped`/`filtered`.
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// Optional: at most `perSecond` requests a second for the whole consumer group, with
    /// a `burst` (default 1); events over it wait or are parked as busy, never failed.
    #[schema(value_type = Option<Object>)]
    pub rate_limit: Option<Value>,
}

/// The sandbox's display name.
#[derive(Serialize, ToSchema)]
pub struct SandboxName {
    pub name: String,
}

page!(WebhookPage of Webhook, "A page of webhooks.");

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

page!(CampaignPage of Campaign, "A page of campaign opt-ins.");

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

page!(DeliveryPage of Delivery, "A page of the delivery log, newest first.");

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

/// The body of a re-enable with redelivery (optional).
#[derive(Serialize, ToSchema)]
pub struct ReenableBody {
    /// RFC 3339: redeliver what failed or was skipped as `webhook_disabled` from then on
    /// (default: when the webhook went down, by its record).
    pub from: Option<String>,
}

/// A webhook re-enabled, and the redelivery of what it missed.
#[derive(Serialize, ToSchema)]
pub struct Reenabled {
    pub webhook: Webhook,
    pub redelivery: Redelivery,
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
    /// With `skipped`: only these reasons (default: any), e.g. `["webhook_disabled"]`.
    pub reasons: Option<Vec<String>>,
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
