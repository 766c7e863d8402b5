//! Configuration records of the `webhook-config` topic: keys, shapes and validation.
//!
//! The same functions serve the processor (which refuses an invalid record and keeps the last
//! valid value) and the CLI (which refuses to publish one), so both agree on what is valid.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::filter::Filter;
use crate::schema::{self, Kind};

/// The feedback statuses a webhook gets when its record lists no `events`.
pub const DEFAULT_EVENTS: [&str; 4] = ["sent", "delivered", "bounce", "error"];

/// Header names a webhook may not set (compared case-insensitively); `webhook-*` is also reserved.
pub const RESERVED_HEADERS: [&str; 7] = [
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "authorization",
    "user-agent",
];

/// Upper bound on one config record's size; a webhook record is a few hundred bytes.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("key {0:?} is not webhook/{{imsOrg}}/{{sandboxId}}, campaign/{{imsOrg}}/{{sandboxId}}/{{campaignID}} or notification/{{imsOrg}}")]
    BadKey(String),
    #[error("record is {0} bytes, over the {MAX_RECORD_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("record is not JSON: {0}")]
    Malformed(String),
    #[error("field {field}: {message}")]
    Invalid { field: String, message: String },
    /// Several fields at once, each with why (see [`refusals`]).
    #[error("{}", list_refusals(.0))]
    Refused(Vec<schema::Violation>),
    #[error("key {key:?} does not match the record's body (expected {expected:?})")]
    KeyMismatch { key: String, expected: String },
}

impl ConfigError {
    fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<schema::Violation> for ConfigError {
    fn from(v: schema::Violation) -> Self {
        ConfigError::Invalid {
            field: v.field,
            message: v.message,
        }
    }
}

fn list_refusals(refusals: &[schema::Violation]) -> String {
    let each: Vec<String> = refusals.iter().map(|v| format!("field {v}")).collect();
    format!("{} problems: {}", refusals.len(), each.join("; "))
}

/// The key of a config record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConfigKey {
    Webhook {
        ims_org: String,
        sandbox_id: String,
    },
    Campaign {
        ims_org: String,
        sandbox_id: String,
        campaign_id: String,
    },
    /// An org's notification endpoint (its operational events).
    Notification {
        ims_org: String,
    },
}

impl ConfigKey {
    pub fn webhook(ims_org: &str, sandbox_id: &str) -> Self {
        ConfigKey::Webhook {
            ims_org: ims_org.to_owned(),
            sandbox_id: sandbox_id.to_owned(),
        }
    }

    pub fn campaign(ims_org: &str, sandbox_id: &str, campaign_id: &str) -> Self {
        ConfigKey::Campaign {
            ims_org: ims_org.to_owned(),
            sandbox_id: sandbox_id.to_owned(),
            campaign_id: campaign_id.to_owned(),
        }
    }

    pub fn notification(ims_org: &str) -> Self {
        ConfigKey::Notification {
            ims_org: ims_org.to_owned(),
        }
    }

    /// The org the record belongs to.
    pub fn ims_org(&self) -> &str {
        match self {
            ConfigKey::Webhook { ims_org, .. }
            | ConfigKey::Campaign { ims_org, .. }
            | ConfigKey::Notification { ims_org } => ims_org,
        }
    }

    pub fn parse(key: &str) -> Result<Self, ConfigError> {
        let parts: Vec<&str> = key.split('/').collect();
        let ok = |s: &&str| !s.is_empty();
        match parts.as_slice() {
            ["webhook", org, sandbox] if ok(org) && ok(sandbox) => {
                Ok(ConfigKey::webhook(org, sandbox))
            }
            ["campaign", org, sandbox, campaign] if ok(org) && ok(sandbox) && ok(campaign) => {
                Ok(ConfigKey::campaign(org, sandbox, campaign))
            }
            ["notification", org] if ok(org) => Ok(ConfigKey::notification(org)),
            _ => Err(ConfigError::BadKey(key.to_owned())),
        }
    }
}

impl std::fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigKey::Webhook {
                ims_org,
                sandbox_id,
            } => write!(f, "webhook/{ims_org}/{sandbox_id}"),
            ConfigKey::Campaign {
                ims_org,
                sandbox_id,
                campaign_id,
            } => write!(f, "campaign/{ims_org}/{sandbox_id}/{campaign_id}"),
            ConfigKey::Notification { ims_org } => write!(f, "notification/{ims_org}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: String,
    pub name: String,
}

/// `authentication` of a webhook. Secret values stay opaque here: they are references or
/// sealed values, resolved only where a request is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Authentication {
    None,
    Jwt(Value),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookConfig {
    pub kind: String,
    pub ims_org: String,
    pub sandbox: Sandbox,
    pub name: String,
    pub channels: Vec<String>,
    pub url: String,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    pub authentication: Authentication,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, HeaderParam>>,
    #[serde(default)]
    pub signing: Option<Value>,
    /// Conditions on the payload an event must meet to be delivered (after the channel,
    /// status and campaign rules); compiled when the record is decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Box<Filter>>,
    /// The webhook's own timeout and retries, within the deployment's bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Box<DeliveryPolicy>>,
    /// The most requests a second the consumer group sends it, with a burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

/// `delivery` of a webhook: what it asks of the deployment's timeouts and retries. Each
/// member is optional; the processor clamps each to the operator's [`PolicyBounds`], and
/// the API and the CLI refuse a value outside them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryPolicy {
    /// The whole request's timeout, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_schedule: Option<RetrySchedule>,
    /// Attempts in all, the first included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

/// `rateLimit` of a webhook: at most `perSecond` requests a second across the consumer
/// group, and `burst` more at once after a quiet spell (1 when absent).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl RateLimit {
    pub fn rate(&self) -> super::rate::Rate {
        super::rate::Rate {
            per_second: self.per_second,
            burst: f64::from(self.burst.unwrap_or(1).max(1)),
        }
    }
}

/// A webhook's retry schedule: its own waits (seconds before each retry, followed as
/// written, without jitter), or the deployment's schedule cut at a maximum age.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RetrySchedule {
    Waits(Vec<f64>),
    MaxAge {
        #[serde(rename = "maxAgeSeconds")]
        max_age_seconds: u64,
    },
}

/// What a webhook's own `delivery` policy may ask for in this deployment (settings
/// `delivery.webhook_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PolicyBounds {
    pub timeout_min_ms: u64,
    pub timeout_max_ms: u64,
    /// The longest a webhook's retries may go on after its first attempt.
    pub retry_age_max_secs: u64,
    /// Attempts in all, the first included.
    pub attempts_max: u32,
}

impl Default for PolicyBounds {
    fn default() -> Self {
        PolicyBounds {
            timeout_min_ms: 1_000,
            timeout_max_ms: 30_000,
            retry_age_max_secs: 24 * 3600,
            attempts_max: 20,
        }
    }
}

impl PolicyBounds {
    /// Why each member of `policy` (at `/delivery`) is outside these bounds; empty when
    /// none is.
    pub fn refusals(&self, policy: &Value) -> Vec<schema::Violation> {
        let mut found = Vec::new();
        let mut refuse = |field: &str, message: String| {
            found.push(schema::Violation {
                field: format!("/delivery/{field}"),
                message,
            })
        };
        if let Some(ms) = policy.get("timeoutMs").and_then(Value::as_u64) {
            if !(self.timeout_min_ms..=self.timeout_max_ms).contains(&ms) {
                refuse(
                    "timeoutMs",
                    format!(
                        "must be within {}–{} ms in this deployment",
                        self.timeout_min_ms, self.timeout_max_ms
                    ),
                );
            }
        }
        if let Some(n) = policy.get("maxAttempts").and_then(Value::as_u64) {
            if n > u64::from(self.attempts_max) {
                refuse(
                    "maxAttempts",
                    format!("must be at most {} in this deployment", self.attempts_max),
                );
            }
        }
        let max_age = self.retry_age_max_secs;
        match policy.get("retrySchedule") {
            Some(Value::Array(waits)) => {
                let total: f64 = waits.iter().filter_map(Value::as_f64).sum();
                if total > max_age as f64 {
                    refuse(
                        "retrySchedule",
                        format!("waits {total} s in all, more than the {max_age} s retries may last in this deployment"),
                    );
                }
                if waits.len() >= self.attempts_max as usize {
                    refuse(
                        "retrySchedule",
                        format!(
                            "has {} waits: at most {} attempts are allowed in this deployment",
                            waits.len(),
                            self.attempts_max
                        ),
                    );
                }
            }
            Some(schedule)
                if schedule
                    .get("maxAgeSeconds")
                    .and_then(Value::as_u64)
                    .is_some_and(|s| s > max_age) =>
            {
                refuse(
                    "retrySchedule/maxAgeSeconds",
                    format!("must be at most {max_age} s in this deployment"),
                );
            }
            _ => {}
        }
        found
    }
}

/// A custom header's value: text, sent as it is, or a secret (an API key a receiver takes
/// as a header), resolved at use like the JWT key and sent marked sensitive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HeaderParam {
    Text(String),
    Secret(Value),
}

impl WebhookConfig {
    pub fn key(&self) -> ConfigKey {
        ConfigKey::webhook(&self.ims_org, &self.sandbox.id)
    }

    pub fn wants_channel(&self, channel: &str) -> bool {
        self.channels.iter().any(|c| c == channel)
    }

    pub fn wants_status(&self, status: &str) -> bool {
        match &self.events {
            Some(events) => events.iter().any(|e| e == status),
            None => DEFAULT_EVENTS.contains(&status),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignConfig {
    pub kind: String,
    #[serde(rename = "imsOrg")]
    pub ims_org: String,
    #[serde(rename = "sandboxId")]
    pub sandbox_id: String,
    #[serde(rename = "campaignID")]
    pub campaign_id: String,
    #[serde(rename = "webhooksEnabled")]
    pub webhooks_enabled: bool,
    #[serde(rename = "updatedAt")]
    pub updated_at: String,
    #[serde(rename = "updatedBy", default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

impl CampaignConfig {
    pub fn key(&self) -> ConfigKey {
        ConfigKey::campaign(&self.ims_org, &self.sandbox_id, &self.campaign_id)
    }
}

// A record is made once per config version (then kept behind an `Arc` by the join's
// memo): the webhook's size costs nothing that boxing would save.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigRecord {
    Webhook(WebhookConfig),
    Campaign(CampaignConfig),
    Notification(NotificationConfig),
}

impl ConfigRecord {
    /// The key the record belongs under.
    pub fn key(&self) -> ConfigKey {
        match self {
            ConfigRecord::Webhook(w) => w.key(),
            ConfigRecord::Campaign(c) => c.key(),
            ConfigRecord::Notification(n) => n.key(),
        }
    }
}

/// An org's notification endpoint, key `notification/{imsOrg}`: where its operational
/// events go, as signed Standard Webhooks requests. URL, authentication, headers and
/// signing follow a webhook's rules; signing is required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationConfig {
    pub kind: String,
    pub ims_org: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub url: String,
    pub enabled: bool,
    /// The operational event types to send; absent: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    pub authentication: Authentication,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, HeaderParam>>,
    pub signing: Value,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

impl NotificationConfig {
    pub fn key(&self) -> ConfigKey {
        ConfigKey::notification(&self.ims_org)
    }

    /// Whether events of type `kind` (`webhook.failing`, ...) are sent to it.
    pub fn wants(&self, kind: &str) -> bool {
        self.events
            .as_ref()
            .is_none_or(|events| events.iter().any(|e| e == kind))
    }
}

/// A validated change: the record to store under its key, or a deletion.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigChange {
    pub key: ConfigKey,
    pub record: Option<ConfigRecord>,
}

/// Settings that change what is valid in this deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    /// Accept `http://` URLs (development only).
    pub allow_http: bool,
    /// What a webhook's own `delivery` policy may ask for: refused beyond them when
    /// authoring, clamped to them when delivering.
    pub bounds: PolicyBounds,
    /// The record is being written by our own tools (the API, the CLI): also refuse what
    /// the SPEC lets a record hold but a receiver could never get, hop-by-hop and proxy
    /// header names ([`is_hop_by_hop`]). The processor accepts such records and does not
    /// send those headers.
    pub authoring: bool,
}

impl Rules {
    /// The same rules, for a record being written by the API or the CLI.
    pub fn authoring(self) -> Rules {
        Rules {
            authoring: true,
            ..self
        }
    }
}

/// Hop-by-hop and proxy header names (any case): they concern one connection or a proxy,
/// so no receiver would see them as sent (RFC 9110, 7.6.1).
pub const HOP_BY_HOP_HEADERS: [&str; 5] = ["te", "upgrade", "keep-alive", "trailer", "expect"];

/// Whether `name` is a hop-by-hop or proxy header name (`Proxy-*` too).
pub fn is_hop_by_hop(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    HOP_BY_HOP_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-")
}

/// Validates one record of the config topic: its key and, unless it is a tombstone, its body.
pub fn validate(
    key: &str,
    value: Option<&[u8]>,
    rules: Rules,
) -> Result<ConfigChange, ConfigError> {
    let parsed_key = ConfigKey::parse(key)?;
    let Some(bytes) = value else {
        return Ok(ConfigChange {
            key: parsed_key,
            record: None,
        });
    };
    let record = validate_body(bytes, rules)?;
    let body_key = record.key();
    if body_key != parsed_key {
        return Err(ConfigError::KeyMismatch {
            key: key.to_owned(),
            expected: body_key.to_string(),
        });
    }
    Ok(ConfigChange {
        key: parsed_key,
        record: Some(record),
    })
}

/// Validates a record body on its own (the CLI derives the key from it).
pub fn validate_body(bytes: &[u8], rules: Rules) -> Result<ConfigRecord, ConfigError> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(ConfigError::TooLarge(bytes.len()));
    }
    let json: Value =
        serde_json::from_slice(bytes).map_err(|e| ConfigError::Malformed(e.to_string()))?;
    validate_value(&json, rules)
}

pub fn validate_value(json: &Value, rules: Rules) -> Result<ConfigRecord, ConfigError> {
    let mut found = refusals(json, rules);
    match found.len() {
        0 => {}
        1 => return Err(found.remove(0).into()),
        _ => return Err(ConfigError::Refused(found)),
    }
    typed(json)
}

/// The typed record of a body whose [`refusals`] are none.
pub fn typed(json: &Value) -> Result<ConfigRecord, ConfigError> {
    let record = match json.get("kind").and_then(Value::as_str) {
        Some("webhook") => serde_json::from_value(json.clone()).map(ConfigRecord::Webhook),
        Some("notification") => {
            serde_json::from_value(json.clone()).map(ConfigRecord::Notification)
        }
        _ => serde_json::from_value(json.clone()).map(ConfigRecord::Campaign),
    };
    record.map_err(|e| ConfigError::field("/", e.to_string()))
}

/// Everything wrong with a record, at once: each schema violation, and the rules a schema
/// cannot say well (URL semantics, reserved header names), each naming its field as a JSON
/// pointer. Empty when the record is valid.
pub fn refusals(json: &Value, rules: Rules) -> Vec<schema::Violation> {
    let refusal = |field: String, message: String| schema::Violation { field, message };
    let kind = match json.get("kind").and_then(Value::as_str) {
        Some("webhook") => Kind::Webhook,
        Some("campaign") => Kind::Campaign,
        Some("notification") => Kind::Notification,
        _ => {
            return vec![refusal(
                "/kind".into(),
                "must be \"webhook\", \"campaign\" or \"notification\"".into(),
            )]
        }
    };
    let mut found = schema::violations(kind, json);
    // A notification endpoint's URL and headers follow a webhook's rules.
    if kind == Kind::Webhook || kind == Kind::Notification {
        // Checked on what is there, whatever else is wrong: every problem is listed.
        // A field the schema refused already is not refused twice.
        let schema_refused =
            |found: &[schema::Violation], field: &str| found.iter().any(|v| v.field == field);
        if let Some(url) = json.get("url").and_then(Value::as_str) {
            if let Err(ConfigError::Invalid { field, message }) = check_url(url, rules) {
                if !schema_refused(&found, &field) {
                    found.push(refusal(field, message));
                }
            }
        }
        let names_refused = schema_refused(&found, "/headers");
        let names = json.get("headers").and_then(Value::as_object);
        for name in names.into_iter().flat_map(|h| h.keys()) {
            let field = || format!("/headers/{}", pointer_escape(name));
            match check_header_name(name) {
                Err(HEADER_NOT_A_TOKEN) if names_refused => {}
                Err(message) => found.push(refusal(field(), message.into())),
                Ok(()) if rules.authoring && is_hop_by_hop(name) => found.push(refusal(
                    field(),
                    "is a hop-by-hop or proxy header name: a receiver never gets it as sent".into(),
                )),
                Ok(()) => {}
            }
        }
        if let Some(policy) = json.get("delivery").filter(|_| rules.authoring) {
            if !found.iter().any(|v| v.field.starts_with("/delivery")) {
                found.extend(rules.bounds.refusals(policy));
            }
        }
        // The schema checks each member's type; how members combine is the compiler's.
        if let Some(filter) = json.get("filter").filter(|f| !f.is_null()) {
            let under_filter = |v: &schema::Violation| v.field.starts_with("/filter");
            if !found.iter().any(under_filter) {
                if let Err(refused) = Filter::compile(filter, "/filter") {
                    found.extend(refused);
                }
            }
        }
    }
    found
}

/// Marks a record as published now by `by` (`updatedAt`, `updatedBy`), whatever it said.
pub fn stamp(json: &mut Value, by: &str, now: &str) {
    if let Some(object) = json.as_object_mut() {
        object.insert("updatedAt".into(), Value::from(now));
        object.insert("updatedBy".into(), Value::from(by));
    }
}

/// A JSON-pointer segment (RFC 6901).
fn pointer_escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

pub fn check_url(url: &str, rules: Rules) -> Result<(), ConfigError> {
    let parsed =
        url::Url::parse(url).map_err(|e| ConfigError::field("/url", format!("not a URL: {e}")))?;
    match parsed.scheme() {
        "https" => {}
        "http" if rules.allow_http => {}
        "http" => {
            return Err(ConfigError::field(
                "/url",
                "must be https (http is accepted only with the development setting delivery.allow_http)",
            ))
        }
        other => return Err(ConfigError::field("/url", format!("scheme {other:?} is not https"))),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::field("/url", "has no host"));
    }
    // Credentials in a URL would end up in logs and outcomes; they belong in authentication.
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ConfigError::field(
            "/url",
            "must not carry credentials; use authentication instead",
        ));
    }
    if parsed.fragment().is_some() {
        return Err(ConfigError::field("/url", "must not have a fragment"));
    }
    Ok(())
}

const HEADER_NOT_A_TOKEN: &str = "is not a valid header name";

/// A custom header name must be a valid token and not one the processor owns.
pub fn check_header_name(name: &str) -> Result<(), &'static str> {
    let valid_token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid_token {
        return Err(HEADER_NOT_A_TOKEN);
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("webhook-") {
        return Err("is a reserved header name");
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    #[test]
    fn every_refusal_is_listed_at_once() {
        let mut webhook = sample_webhook();
        webhook["url"] = serde_json::json!("http://hooks.example.com/x");
        webhook["authentication"] = serde_json::json!({
            "type": "jwt", "algorithm": "HS256", "key": "plaintext-secret",
            "issuer": "i", "subject": "s", "audience": "a", "expiresInSeconds": 300
        });
        webhook["headers"] = serde_json::json!({"Host": "elsewhere", "a/b": "x"});
        webhook.as_object_mut().unwrap().remove("updatedAt");
        let found = super::refusals(&webhook, super::Rules::default());
        let fields: Vec<&str> = found.iter().map(|v| v.field.as_str()).collect();
        // "a/b" is not a header token (the schema says so, at /headers); Host is reserved.
        for expected in ["/url", "/headers", "/headers/Host"] {
            assert!(fields.contains(&expected), "{expected} not in {fields:?}");
        }
        assert!(
            fields.iter().any(|f| f.starts_with("/authentication")),
            "{fields:?}"
        );
        assert!(
            found.iter().any(|v| v.message.contains("updatedAt")),
            "{found:?}"
        );
        let error = super::validate_value(&webhook, super::Rules::default()).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("problems") && !text.contains("plaintext-secret"),
            "{text}"
        );
        assert!(super::refusals(&sample_webhook(), super::Rules::default()).is_empty());
    }

    #[test]
    fn hop_by_hop_header_names_are_refused_when_written_by_our_tools() {
        let mut webhook = sample_webhook();
        webhook["headers"] = json!({"Upgrade": "h2c", "proxy-authorization": "x", "TE": "t"});
        // The SPEC's rules let a record hold them: the processor accepts it.
        assert!(refusals(&webhook, Rules::default()).is_empty());
        let written = refusals(&webhook, Rules::default().authoring());
        let fields: Vec<&str> = written.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "/headers/TE",
                "/headers/Upgrade",
                "/headers/proxy-authorization"
            ]
        );
    }

    use super::*;
    use serde_json::json;

    pub fn sample_webhook() -> Value {
        json!({ "kind": "webhook", "imsOrg": "myImsOrg",
          "sandbox": { "id": "068abf40-575e-11ea-8512-9b1bfdb82603", "name": "prod" },
          "name": "Order feedback", "channels": ["email", "sms"],
          "url": "https://hooks.example.com/ajo/feedback",
          "enabled": true,
          "events": ["sent", "delivered", "bounce", "error"],
          "authentication": { "type": "none" },
          "headers": { "X-Partner-Id": "acme" },
          "signing": null,
          "updatedAt": "2026-11-27T09:00:00Z" })
    }

    pub fn sample_campaign() -> Value {
        json!({ "kind": "campaign", "imsOrg": "myImsOrg",
          "sandboxId": "068abf40-575e-11ea-8512-9b1bfdb82603",
          "campaignID": "16f24a15-7e21-477c-848a-d5695ca7f137", "webhooksEnabled": true,
          "updatedAt": "2026-11-27T09:00:00Z" })
    }

    const WEBHOOK_KEY: &str = "webhook/myImsOrg/068abf40-575e-11ea-8512-9b1bfdb82603";

    fn check(key: &str, v: &Value) -> Result<ConfigChange, ConfigError> {
        validate(key, Some(&serde_json::to_vec(v).unwrap()), Rules::default())
    }

    fn field_of(result: Result<ConfigChange, ConfigError>) -> String {
        match result {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn the_spec_examples_are_valid() {
        let change = check(WEBHOOK_KEY, &sample_webhook()).unwrap();
        assert!(matches!(change.record, Some(ConfigRecord::Webhook(_))));
        let change = check(
            "campaign/myImsOrg/068abf40-575e-11ea-8512-9b1bfdb82603/16f24a15-7e21-477c-848a-d5695ca7f137",
            &sample_campaign(),
        )
        .unwrap();
        assert!(matches!(change.record, Some(ConfigRecord::Campaign(_))));
    }

    #[test]
    fn tombstone_needs_only_a_valid_key() {
        let change = validate(WEBHOOK_KEY, None, Rules::default()).unwrap();
        assert_eq!(change.record, None);
        assert!(matches!(
            validate("webhook/onlyorg", None, Rules::default()),
            Err(ConfigError::BadKey(_))
        ));
    }

    #[test]
    fn key_and_body_must_agree() {
        let err = check(
            "webhook/otherOrg/068abf40-575e-11ea-8512-9b1bfdb82603",
            &sample_webhook(),
        );
        assert!(matches!(err, Err(ConfigError::KeyMismatch { .. })));
    }

    #[test]
    fn url_rules() {
        let mut v = sample_webhook();
        v["url"] = json!("http://hooks.example.com/x");
        assert_eq!(field_of(check(WEBHOOK_KEY, &v)), "/url");
        let ok = validate(
            WEBHOOK_KEY,
            Some(&serde_json::to_vec(&v).unwrap()),
            Rules {
                allow_http: true,
                ..Rules::default()
            },
        );
        assert!(ok.is_ok());
        v["url"] = json!("https://user:pw@hooks.example.com/x");
        assert_eq!(field_of(check(WEBHOOK_KEY, &v)), "/url");
        v["url"] = json!("ftp://hooks.example.com/x");
        assert_eq!(field_of(check(WEBHOOK_KEY, &v)), "/url");
    }

    #[test]
    fn header_rules() {
        for bad in [
            "Host",
            "content-TYPE",
            "Authorization",
            "Webhook-Id",
            "webhook-signature",
        ] {
            let mut v = sample_webhook();
            v["headers"] = json!({ bad: "x" });
            assert_eq!(
                field_of(check(WEBHOOK_KEY, &v)),
                format!("/headers/{bad}"),
                "{bad}"
            );
        }
        let mut v = sample_webhook();
        v["headers"] = json!({ "X-Ok": "line\r\nInjected: yes" });
        assert_eq!(field_of(check(WEBHOOK_KEY, &v)), "/headers/X-Ok");
        let mut v = sample_webhook();
        v["headers"] = json!({ "Bad Name": "x" });
        assert!(field_of(check(WEBHOOK_KEY, &v)).starts_with("/headers"));
        let mut v = sample_webhook();
        let many: serde_json::Map<String, Value> =
            (0..21).map(|i| (format!("X-H{i}"), json!("v"))).collect();
        v["headers"] = Value::Object(many);
        assert_eq!(field_of(check(WEBHOOK_KEY, &v)), "/headers");
    }

    #[test]
    fn plaintext_secrets_are_refused() {
        let mut v = sample_webhook();
        v["signing"] = json!({ "secret": "whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0" });
        assert!(field_of(check(WEBHOOK_KEY, &v)).starts_with("/signing"));
        v["signing"] = json!({ "secret": { "ref": "env:SIGNING" } });
        assert!(check(WEBHOOK_KEY, &v).is_ok());
    }

    #[test]
    fn channels_and_events_are_checked() {
        let mut v = sample_webhook();
        v["channels"] = json!(["push"]);
        assert!(field_of(check(WEBHOOK_KEY, &v)).starts_with("/channels"));
        let mut v = sample_webhook();
        v["events"] = json!([]);
        assert_eq!(field_of(check(WEBHOOK_KEY, &v)), "/events");
        let mut v = sample_webhook();
        v.as_object_mut().unwrap().remove("url");
        assert_eq!(field_of(check(WEBHOOK_KEY, &v)), "/");
    }

    #[test]
    fn default_events_are_the_four_documented() {
        let mut v = sample_webhook();
        v.as_object_mut().unwrap().remove("events");
        let Some(ConfigRecord::Webhook(w)) = check(WEBHOOK_KEY, &v).unwrap().record else {
            panic!("webhook expected")
        };
        for s in DEFAULT_EVENTS {
            assert!(w.wants_status(s));
        }
        assert!(!w.wants_status("exclude"));
    }

    #[test]
    fn a_filter_is_checked_member_by_member_and_as_a_whole() {
        let mut v = sample_webhook();
        v["filter"] = json!({"all": [
            {"field": "messageDeliveryFeedback.messageFailure.type", "op": "equals", "value": "Hard"},
            {"field": "retryCount", "op": "lt", "value": 1}
        ]});
        let Some(ConfigRecord::Webhook(w)) = check(WEBHOOK_KEY, &v).unwrap().record else {
            panic!("webhook expected")
        };
        assert!(w.filter.is_some());
        // The schema refuses an unknown operator at its pointer ...
        v["filter"]["all"][1]["op"] = json!("startsWith");
        assert_eq!(field_of(check(WEBHOOK_KEY, &v)), "/filter/all/1/op");
        // ... and the compiler what the members mean together.
        v["filter"]["all"][1] = json!({"field": "retryCount", "op": "gt", "value": "many"});
        assert_eq!(field_of(check(WEBHOOK_KEY, &v)), "/filter/all/1/value");
        v["filter"] = json!({"all": [{"field": "channel", "op": "exists"}], "any": []});
        let found = refusals(&v, Rules::default());
        assert!(
            found.iter().any(|r| r.field.starts_with("/filter")),
            "{found:?}"
        );
        v["filter"] = Value::Null;
        assert!(check(WEBHOOK_KEY, &v).is_ok());
    }

    #[test]
    fn a_delivery_policy_beyond_the_bounds_is_refused_when_written_and_clamped_when_read() {
        let mut v = sample_webhook();
        v["delivery"] = json!({"timeoutMs": 60000, "retrySchedule": [1, 1, 1], "maxAttempts": 50});
        assert!(
            refusals(&v, Rules::default()).is_empty(),
            "the processor takes it (and clamps it)"
        );
        let fields = |v: &Value| -> Vec<String> {
            refusals(v, Rules::default().authoring())
                .into_iter()
                .map(|r| r.field)
                .collect()
        };
        assert_eq!(fields(&v), ["/delivery/timeoutMs", "/delivery/maxAttempts"]);
        v["delivery"] = json!({"retrySchedule": {"maxAgeSeconds": 172800}});
        assert_eq!(fields(&v), ["/delivery/retrySchedule/maxAgeSeconds"]);
        v["delivery"] = json!({"retrySchedule": vec![5000; 20]});
        assert_eq!(
            fields(&v),
            ["/delivery/retrySchedule", "/delivery/retrySchedule"]
        );
        v["delivery"] = json!({"retrySchedule": "often"});
        assert!(fields(&v)[0].starts_with("/delivery/retrySchedule"));
        v["delivery"] = json!({"timeoutMs": 1000, "retrySchedule": [1, 1, 1], "maxAttempts": 4});
        assert!(fields(&v).is_empty());
        let Some(ConfigRecord::Webhook(w)) = check(WEBHOOK_KEY, &v).unwrap().record else {
            panic!("webhook expected")
        };
        let own = w.delivery.unwrap();
        assert_eq!(own.timeout_ms, Some(1000));
        assert_eq!(
            own.retry_schedule,
            Some(RetrySchedule::Waits(vec![1.0, 1.0, 1.0]))
        );
    }

    #[test]
    fn unknown_kind_and_oversize() {
        let err = check(WEBHOOK_KEY, &json!({"kind": "other"}));
        assert_eq!(field_of(err), "/kind");
        let big = vec![b' '; MAX_RECORD_BYTES + 1];
        assert!(matches!(
            validate(WEBHOOK_KEY, Some(&big), Rules::default()),
            Err(ConfigError::TooLarge(_))
        ));
    }
}
