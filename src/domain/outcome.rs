//! The outcome record: one terminal result per input record.

use serde::{Deserialize, Serialize};

use super::event::{FeedbackEvent, Identity};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Delivered,
    Failed,
    Skipped,
    Invalid,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Invalid => "invalid",
        }
    }
}

/// Every reason the contract names, exactly as spelled there, and `filtered` (a webhook's
/// own filter left the event out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    NoWebhook,
    WebhookDisabled,
    ChannelNotSelected,
    EventNotSelected,
    CampaignNotEnabled,
    NotTransactional,
    ConfigInvalid,
    Filtered,
    HttpStatus,
    RetriesExhausted,
    DestinationBlocked,
    InvalidEvent,
    EventTooLarge,
}

impl Reason {
    /// The status a reason belongs to.
    pub fn status(self) -> Status {
        use Reason::*;
        match self {
            NoWebhook | WebhookDisabled | ChannelNotSelected | EventNotSelected
            | CampaignNotEnabled | NotTransactional | ConfigInvalid | Filtered => Status::Skipped,
            HttpStatus | RetriesExhausted | DestinationBlocked => Status::Failed,
            InvalidEvent | EventTooLarge => Status::Invalid,
        }
    }

    pub fn as_str(self) -> &'static str {
        use Reason::*;
        match self {
            NoWebhook => "no_webhook",
            WebhookDisabled => "webhook_disabled",
            ChannelNotSelected => "channel_not_selected",
            EventNotSelected => "event_not_selected",
            CampaignNotEnabled => "campaign_not_enabled",
            NotTransactional => "not_transactional",
            ConfigInvalid => "config_invalid",
            Filtered => "filtered",
            HttpStatus => "http_status",
            RetriesExhausted => "retries_exhausted",
            DestinationBlocked => "destination_blocked",
            InvalidEvent => "invalid_event",
            EventTooLarge => "event_too_large",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRef {
    pub name: String,
    pub url: String,
}

/// One HTTP attempt. `error` describes a failure without a response (never a secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub at: String,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl Attempt {
    /// Whether this attempt was a request sent (older records list the attempts a breaker
    /// refused as "not sent: ...").
    pub fn was_sent(&self) -> bool {
        self.http_status.is_some()
            || self
                .error
                .as_deref()
                .is_none_or(|e| !e.starts_with("not sent"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Replay {
    pub id: String,
    pub requested_at: String,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    #[serde(flatten)]
    pub identity: Identity,
    pub channel: Option<String>,
    pub feedback_status: Option<String>,
    #[serde(rename = "messageExecutionID")]
    pub message_execution_id: Option<String>,
    #[serde(rename = "campaignID")]
    pub campaign_id: Option<String>,
    pub status: Status,
    pub reason: Option<Reason>,
    pub webhook: Option<WebhookRef>,
    pub attempts: Vec<Attempt>,
    pub source: Source,
    pub replay: Option<Replay>,
    pub completed_at: String,
}

/// Longest identity field an outcome carries (and its key): the event schema bounds these
/// fields to this, and what an invalid record holds is cut to it, so an outcome stays small
/// whatever the input (a record that could never be written would stall its partition).
pub const MAX_ID_CHARS: usize = 256;

/// `s` cut to [`MAX_ID_CHARS`] characters.
pub fn capped(s: &str) -> String {
    match s.char_indices().nth(MAX_ID_CHARS) {
        Some((end, _)) => s[..end].to_owned(),
        None => s.to_owned(),
    }
}

impl Outcome {
    /// The outcome of a valid event. `reason` is `None` exactly when it was delivered.
    pub fn for_event(
        event: &FeedbackEvent,
        reason: Option<Reason>,
        webhook: Option<WebhookRef>,
        attempts: Vec<Attempt>,
        source: Source,
        completed_at: String,
    ) -> Self {
        // The schema bounds these; capping again keeps the outcome's size independent of it.
        Outcome {
            identity: Identity {
                event_id: Some(capped(&event.id)),
                request_id: Some(capped(&event.request_id)),
                ims_org: Some(capped(&event.ims_org)),
                sandbox_id: Some(capped(&event.sandbox.id)),
            },
            channel: event.channel().map(capped),
            feedback_status: event.feedback_status().map(capped),
            message_execution_id: Some(capped(&event.execution().message_execution_id)),
            campaign_id: event.campaign_id().map(capped),
            status: reason.map_or(Status::Delivered, Reason::status),
            reason,
            webhook,
            attempts,
            source,
            replay: None,
            completed_at,
        }
    }

    /// The outcome of a record that is not a valid event.
    pub fn invalid(
        identity: Identity,
        reason: Reason,
        source: Source,
        completed_at: String,
    ) -> Self {
        let cap = |v: Option<String>| v.as_deref().map(capped);
        Outcome {
            identity: Identity {
                event_id: cap(identity.event_id),
                request_id: cap(identity.request_id),
                ims_org: cap(identity.ims_org),
                sandbox_id: cap(identity.sandbox_id),
            },
            channel: None,
            feedback_status: None,
            message_execution_id: None,
            campaign_id: None,
            status: Status::Invalid,
            reason: Some(reason),
            webhook: None,
            attempts: Vec::new(),
            source,
            replay: None,
            completed_at,
        }
    }

    /// The record key: the event id; for a record without one, its source coordinates so
    /// that it still lands on a stable partition.
    pub fn key(&self) -> String {
        match &self.identity.event_id {
            Some(id) => id.clone(),
            None => format!(
                "{}/{}/{}",
                self.source.topic, self.source.partition, self.source.offset
            ),
        }
    }

    /// The same outcome without its attempts and webhook: what is written when the broker
    /// refuses the full one. It still names the event, its status and reason, and where it
    /// came from.
    pub fn reduced(&self) -> Outcome {
        Outcome {
            webhook: None,
            attempts: Vec::new(),
            ..self.clone()
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::tests::{parse_value, spec_event};
    use crate::schema::{self, Kind};

    fn source() -> Source {
        Source {
            topic: "message-feedback".into(),
            partition: 3,
            offset: 1042,
        }
    }

    #[test]
    fn identity_fields_of_an_invalid_record_are_cut_to_256_characters() {
        let huge = "é".repeat(300_000);
        let identity = Identity {
            event_id: Some(huge.clone()),
            request_id: Some(huge.clone()),
            ims_org: Some("org".into()),
            sandbox_id: None,
        };
        let at = "2026-11-27T10:15:05.312Z".to_owned();
        let outcome = Outcome::invalid(identity, Reason::InvalidEvent, source(), at);
        assert_eq!(
            outcome
                .identity
                .event_id
                .as_deref()
                .map(|s| s.chars().count()),
            Some(256)
        );
        assert_eq!(outcome.key().chars().count(), 256);
        assert_eq!(outcome.identity.ims_org.as_deref(), Some("org"));
        assert!(
            outcome.to_json().len() < 2_000,
            "{}",
            outcome.to_json().len()
        );
        assert!(schema::validate(
            Kind::Outcome,
            &serde_json::from_slice(&outcome.to_json()).unwrap()
        )
        .is_ok());
        assert_eq!(capped("short"), "short");
    }

    #[test]
    fn reasons_serialise_as_the_contract_spells_them() {
        for reason in [
            Reason::NoWebhook,
            Reason::WebhookDisabled,
            Reason::ChannelNotSelected,
            Reason::EventNotSelected,
            Reason::CampaignNotEnabled,
            Reason::NotTransactional,
            Reason::ConfigInvalid,
            Reason::Filtered,
            Reason::HttpStatus,
            Reason::RetriesExhausted,
            Reason::DestinationBlocked,
            Reason::InvalidEvent,
            Reason::EventTooLarge,
        ] {
            let json = serde_json::to_value(reason).unwrap();
            assert_eq!(json, serde_json::json!(reason.as_str()));
        }
    }

    #[test]
    fn delivered_outcome_matches_schema() {
        let e = parse_value(&spec_event()).unwrap();
        let o = Outcome::for_event(
            &e,
            None,
            Some(WebhookRef {
                name: "Order feedback".into(),
                url: "https://hooks.example.com/ajo/feedback".into(),
            }),
            vec![Attempt {
                at: "2026-11-27T10:15:00.120Z".into(),
                http_status: Some(200),
                error: None,
                duration_ms: 12,
            }],
            source(),
            "2026-11-27T10:15:05.312Z".into(),
        );
        assert_eq!(o.status, Status::Delivered);
        let json: serde_json::Value = serde_json::from_slice(&o.to_json()).unwrap();
        schema::validate(Kind::Outcome, &json).unwrap();
        assert_eq!(json["channel"], "email");
        assert_eq!(json["feedbackStatus"], "bounce");
        assert_eq!(json["reason"], serde_json::Value::Null);
        assert_eq!(o.key(), e.id);
    }

    #[test]
    fn invalid_outcome_matches_schema_and_keys_by_source() {
        let o = Outcome::invalid(
            Identity::default(),
            Reason::InvalidEvent,
            source(),
            "2026-11-27T10:15:05.312Z".into(),
        );
        let json: serde_json::Value = serde_json::from_slice(&o.to_json()).unwrap();
        schema::validate(Kind::Outcome, &json).unwrap();
        assert_eq!(json["status"], "invalid");
        assert_eq!(o.key(), "message-feedback/3/1042");
    }

    #[test]
    fn schema_rejects_a_reason_of_the_wrong_status() {
        let e = parse_value(&spec_event()).unwrap();
        let o = Outcome::for_event(
            &e,
            Some(Reason::NoWebhook),
            None,
            vec![],
            source(),
            "2026-11-27T10:15:05.312Z".into(),
        );
        let mut json: serde_json::Value = serde_json::from_slice(&o.to_json()).unwrap();
        schema::validate(Kind::Outcome, &json).unwrap();
        json["status"] = "failed".into();
        assert!(schema::validate(Kind::Outcome, &json).is_err());
    }
}
