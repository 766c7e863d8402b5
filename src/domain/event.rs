//! The feedback event: the value of an input record.
//!
//! Parsing is liberal where the contract allows (unknown fields are kept and ignored) and
//! strict where it must be (the schema's required fields, a size bound).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema::{self, Kind};

/// Why an input record could not be turned into an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("event is {size} bytes, over the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
    #[error("event has no value")]
    Empty,
    #[error("event is not JSON: {0}")]
    Malformed(String),
    #[error("event violates the feedback-event schema at {0}")]
    Schema(schema::Violation),
}

/// The sandbox an event names, as a webhook record names it.
pub use super::config::Sandbox;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageExecution {
    #[serde(rename = "messageExecutionID")]
    pub message_execution_id: String,
    #[serde(default)]
    pub message_type: Option<String>,
    #[serde(rename = "campaignID", default)]
    pub campaign_id: Option<String>,
    #[serde(rename = "campaignVersionID", default)]
    pub campaign_version_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Channel {
    #[serde(rename = "_id", default)]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct MessageProfile {
    #[serde(default)]
    pub channel: Option<Channel>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryFeedback {
    #[serde(default)]
    pub feedback_status: Option<String>,
    #[serde(default)]
    pub offers: Value,
    #[serde(default)]
    pub message_exclusion: Value,
    #[serde(default)]
    pub message_failure: Value,
    #[serde(default)]
    pub retry_count: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerJourneyManagement {
    pub message_execution: MessageExecution,
    #[serde(default)]
    pub message_profile: Option<MessageProfile>,
    #[serde(rename = "messageDeliveryfeedback", default)]
    pub message_delivery_feedback: Option<DeliveryFeedback>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Experience {
    pub customer_journey_management: CustomerJourneyManagement,
}

/// A valid feedback event, with the parts the contract uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FeedbackEvent {
    #[serde(rename = "_id")]
    pub id: String,
    pub timestamp: String,
    #[serde(rename = "requestId")]
    pub request_id: String,
    #[serde(rename = "imsOrg")]
    pub ims_org: String,
    pub sandbox: Sandbox,
    #[serde(rename = "identityMap", default)]
    pub identity_map: Value,
    #[serde(rename = "_experience")]
    pub experience: Experience,
}

impl FeedbackEvent {
    pub fn execution(&self) -> &MessageExecution {
        &self
            .experience
            .customer_journey_management
            .message_execution
    }

    pub fn feedback(&self) -> Option<&DeliveryFeedback> {
        self.experience
            .customer_journey_management
            .message_delivery_feedback
            .as_ref()
    }

    pub fn feedback_status(&self) -> Option<&str> {
        self.feedback().and_then(|f| f.feedback_status.as_deref())
    }

    /// The channel is the last path segment of `messageProfile.channel._id`.
    pub fn channel(&self) -> Option<&str> {
        let id = self
            .experience
            .customer_journey_management
            .message_profile
            .as_ref()?
            .channel
            .as_ref()?
            .id
            .as_deref()?;
        id.trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
    }

    pub fn campaign_id(&self) -> Option<&str> {
        self.execution().campaign_id.as_deref()
    }
}

/// Parses and validates one input record's value.
pub fn parse(value: Option<&[u8]>, max_bytes: usize) -> Result<FeedbackEvent, EventError> {
    let bytes = value.ok_or(EventError::Empty)?;
    if bytes.len() > max_bytes {
        return Err(EventError::TooLarge {
            size: bytes.len(),
            max: max_bytes,
        });
    }
    let json: Value =
        serde_json::from_slice(bytes).map_err(|e| EventError::Malformed(e.to_string()))?;
    schema::validate(Kind::FeedbackEvent, &json).map_err(EventError::Schema)?;
    // The schema guarantees the shape serde needs; a mismatch here would be a schema bug,
    // still reported as an invalid event rather than a panic.
    serde_json::from_value(json).map_err(|e| EventError::Malformed(e.to_string()))
}

/// Who an event is: its ids, org and sandbox. An outcome carries it; for a record that is
/// not a valid event, what could be read of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub event_id: Option<String>,
    pub request_id: Option<String>,
    pub ims_org: Option<String>,
    pub sandbox_id: Option<String>,
}

/// Best-effort extraction of identifying fields from an invalid record.
pub fn identity_of_invalid(value: Option<&[u8]>, max_bytes: usize) -> Identity {
    let Some(bytes) = value.filter(|b| b.len() <= max_bytes) else {
        return Identity::default();
    };
    let Ok(json) = serde_json::from_slice::<Value>(bytes) else {
        return Identity::default();
    };
    let text = |pointer: &str| {
        json.pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Identity {
        event_id: text("/_id"),
        request_id: text("/requestId"),
        ims_org: text("/imsOrg"),
        sandbox_id: text("/sandbox/id"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// The SPEC's example event (`examples/event.json`).
    pub fn spec_event() -> Value {
        serde_json::from_str(include_str!("../../examples/event.json")).unwrap()
    }

    pub fn parse_value(v: &Value) -> Result<FeedbackEvent, EventError> {
        parse(Some(&serde_json::to_vec(v).unwrap()), 1 << 20)
    }

    #[test]
    fn parses_the_spec_example() {
        let event = parse_value(&spec_event()).unwrap();
        assert_eq!(event.id, "5f0c1d2e-0000-4000-8000-000000000001");
        assert_eq!(event.channel(), Some("email"));
        assert_eq!(event.feedback_status(), Some("bounce"));
        assert_eq!(
            event.campaign_id(),
            Some("16f24a15-7e21-477c-848a-d5695ca7f137")
        );
        assert_eq!(
            event.execution().message_type.as_deref(),
            Some("transactional")
        );
    }

    #[test]
    fn channel_is_last_path_segment() {
        let mut v = spec_event();
        v["_experience"]["customerJourneyManagement"]["messageProfile"]["channel"]["_id"] =
            json!("https://ns.adobe.com/xdm/channels/sms");
        assert_eq!(parse_value(&v).unwrap().channel(), Some("sms"));
        v["_experience"]["customerJourneyManagement"]["messageProfile"] = json!(null);
        assert_eq!(parse_value(&v).unwrap().channel(), None);
    }

    #[test]
    fn an_id_that_cannot_be_a_header_value_is_invalid() {
        for id in ["with space", "line\nbreak", "caf\u{e9}", "tab\t"] {
            let mut v = spec_event();
            v["_id"] = json!(id);
            assert!(
                matches!(parse_value(&v), Err(EventError::Schema(_))),
                "{id:?}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_kept_not_rejected() {
        let mut v = spec_event();
        v["somethingNew"] = json!({"a": 1});
        v["_experience"]["customerJourneyManagement"]["messageExecution"]["extra"] = json!(true);
        assert!(parse_value(&v).is_ok());
    }

    #[test]
    fn missing_required_field_names_it() {
        let mut v = spec_event();
        v.as_object_mut().unwrap().remove("requestId");
        match parse_value(&v) {
            Err(EventError::Schema(violation)) => {
                assert!(violation.message.contains("requestId"), "{violation}")
            }
            other => panic!("expected a schema error, got {other:?}"),
        }
        let mut v = spec_event();
        v["_experience"]["customerJourneyManagement"]["messageExecution"]
            .as_object_mut()
            .unwrap()
            .remove("messageExecutionID");
        assert!(matches!(parse_value(&v), Err(EventError::Schema(_))));
    }

    #[test]
    fn malformed_empty_and_too_large() {
        assert!(matches!(
            parse(Some(b"{not json"), 1024),
            Err(EventError::Malformed(_))
        ));
        assert_eq!(parse(None, 1024), Err(EventError::Empty));
        let big = vec![b' '; 2048];
        assert_eq!(
            parse(Some(&big), 1024),
            Err(EventError::TooLarge {
                size: 2048,
                max: 1024
            })
        );
    }

    #[test]
    fn wrong_types_are_schema_errors() {
        let mut v = spec_event();
        v["timestamp"] = json!("not a time");
        assert!(matches!(parse_value(&v), Err(EventError::Schema(_))));
        let mut v = spec_event();
        v["_experience"]["customerJourneyManagement"]["messageDeliveryfeedback"]["retryCount"] =
            json!(-1);
        assert!(matches!(parse_value(&v), Err(EventError::Schema(_))));
    }

    #[test]
    fn identity_of_invalid_reads_what_it_can() {
        let id = identity_of_invalid(
            Some(br#"{"_id":"e1","imsOrg":"o","sandbox":{"id":"s"}}"#),
            1024,
        );
        assert_eq!(id.event_id.as_deref(), Some("e1"));
        assert_eq!(id.sandbox_id.as_deref(), Some("s"));
        assert_eq!(
            identity_of_invalid(Some(b"garbage"), 1024),
            Identity::default()
        );
    }
}
