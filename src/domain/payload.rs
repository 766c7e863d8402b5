//! The webhook payload: exactly the contract's shape, built from a valid event.

use serde::Serialize;
use serde_json::Value;

use super::event::FeedbackEvent;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload<'a> {
    pub request_id: &'a str,
    pub ims_org: &'a str,
    pub sandbox: SandboxRef<'a>,
    pub channel: &'a str,
    pub event_type: &'static str,
    pub message_execution: ExecutionRef<'a>,
    pub message_delivery_feedback: FeedbackRef<'a>,
    pub identity_map: &'a Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SandboxRef<'a> {
    pub id: &'a str,
    pub name: &'a str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecutionRef<'a> {
    #[serde(rename = "messageExecutionID")]
    pub message_execution_id: &'a str,
    #[serde(rename = "messageType")]
    pub message_type: Option<&'a str>,
    #[serde(rename = "campaignID")]
    pub campaign_id: Option<&'a str>,
    #[serde(rename = "campaignVersionID")]
    pub campaign_version_id: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackRef<'a> {
    pub feedback_status: StatusValue<'a>,
    pub offers: &'a Value,
    pub message_exclusion: &'a Value,
    pub message_failure: &'a Value,
    pub retry_count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusValue<'a> {
    pub value: &'a str,
}

static NULL: Value = Value::Null;

/// Builds the payload for an event that matching has accepted (it has a channel and status).
pub fn build<'a>(event: &'a FeedbackEvent, channel: &'a str, status: &'a str) -> Payload<'a> {
    let execution = event.execution();
    let feedback = event.feedback();
    Payload {
        request_id: &event.request_id,
        ims_org: &event.ims_org,
        sandbox: SandboxRef {
            id: &event.sandbox.id,
            name: &event.sandbox.name,
        },
        channel,
        event_type: "message.feedback",
        message_execution: ExecutionRef {
            message_execution_id: &execution.message_execution_id,
            message_type: execution.message_type.as_deref(),
            campaign_id: execution.campaign_id.as_deref(),
            campaign_version_id: execution.campaign_version_id.as_deref(),
        },
        message_delivery_feedback: FeedbackRef {
            feedback_status: StatusValue { value: status },
            offers: feedback.map_or(&NULL, |f| &f.offers),
            message_exclusion: feedback.map_or(&NULL, |f| &f.message_exclusion),
            message_failure: feedback.map_or(&NULL, |f| &f.message_failure),
            retry_count: feedback.and_then(|f| f.retry_count).unwrap_or(0),
        },
        identity_map: &event.identity_map,
    }
}

/// The HTTP body: compact JSON of the payload.
pub fn to_body(payload: &Payload<'_>) -> Vec<u8> {
    // Serialising borrowed strings and JSON values cannot fail.
    serde_json::to_vec(payload).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::tests::{parse_value, spec_event};
    use crate::schema::{self, Kind};
    use serde_json::json;

    /// The SPEC's example payload (`examples/payload.json`).
    pub fn spec_payload() -> Value {
        serde_json::from_str(include_str!("../../examples/payload.json")).unwrap()
    }

    fn body_of(v: &Value) -> Value {
        let e = parse_value(v).unwrap();
        let p = build(&e, e.channel().unwrap(), e.feedback_status().unwrap());
        serde_json::from_slice(&to_body(&p)).unwrap()
    }

    #[test]
    fn spec_example_gives_spec_payload() {
        let body = body_of(&spec_event());
        assert_eq!(body, spec_payload());
        schema::validate(Kind::Payload, &body).unwrap();
    }

    #[test]
    fn absent_optional_parts_are_null_and_retry_count_zero() {
        let mut e = spec_event();
        let fb = &mut e["_experience"]["customerJourneyManagement"]["messageDeliveryfeedback"];
        *fb = json!({ "feedbackStatus": "sent" });
        let body = body_of(&e);
        let f = &body["messageDeliveryFeedback"];
        assert_eq!(f["offers"], Value::Null);
        assert_eq!(f["messageExclusion"], Value::Null);
        assert_eq!(f["messageFailure"], Value::Null);
        assert_eq!(f["retryCount"], json!(0));
        assert_eq!(f["feedbackStatus"], json!({"value": "sent"}));
        schema::validate(Kind::Payload, &body).unwrap();
    }

    #[test]
    fn no_other_fields_leak_from_the_event() {
        let mut e = spec_event();
        e["extra"] = json!("x");
        e["_experience"]["customerJourneyManagement"]["messageExecution"]["internal"] = json!(1);
        let body = body_of(&e);
        assert_eq!(body, spec_payload());
    }
}
