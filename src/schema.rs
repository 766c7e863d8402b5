//! The JSON Schemas in `schemas/` are the single source of truth for record shapes: they are
//! compiled into the binary and used both by the processor and by the config CLI.

use std::sync::{Arc, LazyLock};

use jsonschema::{Retrieve, Uri, Validator};
use serde_json::Value;

pub const FEEDBACK_EVENT: &str = include_str!("../schemas/feedback-event.schema.json");
pub const WEBHOOK: &str = include_str!("../schemas/webhook.schema.json");
pub const CAMPAIGN: &str = include_str!("../schemas/campaign.schema.json");
pub const SECRET: &str = include_str!("../schemas/secret.schema.json");
pub const PAYLOAD: &str = include_str!("../schemas/payload.schema.json");
pub const OUTCOME: &str = include_str!("../schemas/outcome.schema.json");
pub const RETRY: &str = include_str!("../schemas/retry.schema.json");
pub const REPLAY: &str = include_str!("../schemas/replay.schema.json");
pub const OPERATIONAL_EVENT: &str = include_str!("../schemas/operational-event.schema.json");
pub const NOTIFICATION: &str = include_str!("../schemas/notification.schema.json");

const BASE: &str = "https://feedback-webhooks.local/schemas/";

/// Serves `$ref`s between our own schemas from the embedded copies; nothing is fetched.
struct Embedded;

impl Retrieve for Embedded {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let name = uri.as_str().strip_prefix(BASE).unwrap_or_default();
        let text = match name {
            "secret.schema.json" => SECRET,
            "feedback-event.schema.json" => FEEDBACK_EVENT,
            "webhook.schema.json" => WEBHOOK,
            "campaign.schema.json" => CAMPAIGN,
            "payload.schema.json" => PAYLOAD,
            "outcome.schema.json" => OUTCOME,
            "retry.schema.json" => RETRY,
            "replay.schema.json" => REPLAY,
            "operational-event.schema.json" => OPERATIONAL_EVENT,
            "notification.schema.json" => NOTIFICATION,
            _ => return Err(format!("unknown schema reference {uri}").into()),
        };
        Ok(serde_json::from_str(text)?)
    }
}

/// Which schema to validate against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    FeedbackEvent,
    Webhook,
    Campaign,
    Payload,
    Outcome,
    Retry,
    Replay,
    OperationalEvent,
    Notification,
}

fn compile(text: &str) -> Arc<Validator> {
    // The schemas are part of the binary: failing to compile one is a build defect, caught
    // by the unit tests below, so a panic at first use is the right response.
    #[allow(clippy::expect_used)]
    let schema: Value = serde_json::from_str(text).expect("embedded schema is JSON");
    #[allow(clippy::expect_used)]
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .with_retriever(Embedded)
        .build(&schema)
        .expect("embedded schema compiles");
    Arc::new(validator)
}

static VALIDATORS: LazyLock<[Arc<Validator>; 9]> = LazyLock::new(|| {
    [
        compile(FEEDBACK_EVENT),
        compile(WEBHOOK),
        compile(CAMPAIGN),
        compile(PAYLOAD),
        compile(OUTCOME),
        compile(RETRY),
        compile(REPLAY),
        compile(OPERATIONAL_EVENT),
        compile(NOTIFICATION),
    ]
});

fn validator(kind: Kind) -> &'static Validator {
    let index = match kind {
        Kind::FeedbackEvent => 0,
        Kind::Webhook => 1,
        Kind::Campaign => 2,
        Kind::Payload => 3,
        Kind::Outcome => 4,
        Kind::Retry => 5,
        Kind::Replay => 6,
        Kind::OperationalEvent => 7,
        Kind::Notification => 8,
    };
    &VALIDATORS[index]
}

/// One schema violation: where in the instance, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer into the instance, `/` for the root.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Validates `instance`; on failure returns the first violation (the most useful one to show).
///
/// Messages name the offending field but never echo its value: a value may be a secret.
pub fn validate(kind: Kind, instance: &Value) -> Result<(), Violation> {
    let validator = validator(kind);
    // The common case first: `is_valid` stops at the first failure and builds no errors.
    if validator.is_valid(instance) {
        return Ok(());
    }
    match validator.iter_errors(instance).next() {
        None => Ok(()),
        Some(error) => {
            let path = error.instance_path().to_string();
            let field = if path.is_empty() {
                "/".to_string()
            } else {
                path
            };
            Err(Violation {
                field,
                message: error.masked().to_string(),
            })
        }
    }
}

/// Every violation of `instance`, each naming its field (a JSON pointer), in document
/// order; empty when it is valid. Messages never echo values, as in [`validate`].
pub fn violations(kind: Kind, instance: &Value) -> Vec<Violation> {
    let validator = validator(kind);
    if validator.is_valid(instance) {
        return Vec::new();
    }
    validator
        .iter_errors(instance)
        .map(|error| {
            let path = error.instance_path().to_string();
            Violation {
                field: if path.is_empty() {
                    "/".to_string()
                } else {
                    path
                },
                message: error.masked().to_string(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_schema_compiles() {
        for kind in [
            Kind::FeedbackEvent,
            Kind::Webhook,
            Kind::Campaign,
            Kind::Payload,
            Kind::Outcome,
            Kind::Retry,
            Kind::Replay,
            Kind::OperationalEvent,
            Kind::Notification,
        ] {
            let _ = validator(kind);
        }
    }

    #[test]
    fn secret_reference_is_resolved_between_schemas() {
        let mut webhook = crate::domain::config::tests::sample_webhook();
        webhook["authentication"] = json!({
            "type": "jwt", "algorithm": "HS256", "key": "plaintext",
            "issuer": "i", "subject": "s", "audience": "a", "expiresInSeconds": 300
        });
        let violation = validate(Kind::Webhook, &webhook).unwrap_err();
        assert!(
            violation.field.starts_with("/authentication"),
            "{violation}"
        );
        webhook["authentication"]["key"] = json!({"ref": "env:HOOK_KEY"});
        validate(Kind::Webhook, &webhook).unwrap();
    }

    #[test]
    fn masked_messages_do_not_echo_values() {
        let mut webhook = crate::domain::config::tests::sample_webhook();
        webhook["signing"] = json!({"secret": "whsec_TOP-SECRET-VALUE"});
        let violation = validate(Kind::Webhook, &webhook).unwrap_err();
        assert!(!violation.to_string().contains("TOP-SECRET"), "{violation}");
    }
}
