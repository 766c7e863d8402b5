pub mod kafka;
pub mod processor;
pub mod receiver;

use std::time::Duration;

use serde_json::{json, Value};

/// How long a test waits for something that should take a second or two.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub const ORG: &str = "myImsOrg";
pub const SANDBOX: &str = "068abf40-575e-11ea-8512-9b1bfdb82603";
pub const CAMPAIGN: &str = "16f24a15-7e21-477c-848a-d5695ca7f137";

/// The SPEC's example event, with the given id.
pub fn spec_event(id: &str) -> Value {
    json!({
      "_id": id,
      "timestamp": "2026-11-27T10:15:00.000Z",
      "requestId": "8NoByJneShCdCGRnrGS1t1m3CdA73dhR",
      "imsOrg": ORG,
      "sandbox": { "id": SANDBOX, "name": "prod" },
      "identityMap": { "email": [ { "id": "john.doe@luma.com", "primary": true } ] },
      "_experience": { "customerJourneyManagement": {
        "messageExecution": {
          "messageExecutionID": "HUMA-26362805",
          "messageType": "transactional",
          "campaignID": CAMPAIGN,
          "campaignVersionID": "2ca10c10-56dd-4505-87cd-fa5da84e7a5d"
        },
        "messageProfile": { "channel": { "_id": "https://ns.adobe.com/xdm/channels/email" } },
        "messageDeliveryfeedback": {
          "feedbackStatus": "bounce",
          "offers": null,
          "messageExclusion": null,
          "messageFailure": { "category": "sync", "type": "Ignored", "code": "25", "reason": "Admin Failure" },
          "retryCount": 0
        }
      } }
    })
}

/// The SPEC's example payload.
pub fn spec_payload() -> Value {
    json!({
      "requestId": "8NoByJneShCdCGRnrGS1t1m3CdA73dhR",
      "imsOrg": "myImsOrg",
      "sandbox": { "id": "068abf40-575e-11ea-8512-9b1bfdb82603", "name": "prod" },
      "channel": "email",
      "eventType": "message.feedback",
      "messageExecution": { "messageExecutionID": "HUMA-26362805", "messageType": "transactional",
        "campaignID": "16f24a15-7e21-477c-848a-d5695ca7f137",
        "campaignVersionID": "2ca10c10-56dd-4505-87cd-fa5da84e7a5d" },
      "messageDeliveryFeedback": {
        "feedbackStatus": { "value": "bounce" },
        "offers": null,
        "messageExclusion": null,
        "messageFailure": { "category": "sync", "type": "Ignored", "code": "25", "reason": "Admin Failure" },
        "retryCount": 0
      },
      "identityMap": { "email": [ { "id": "john.doe@luma.com", "primary": true } ] }
    })
}

/// A webhook record for `org`/`sandbox` pointing at `url`.
pub fn webhook(org: &str, sandbox: &str, url: &str) -> Value {
    json!({ "kind": "webhook", "imsOrg": org,
      "sandbox": { "id": sandbox, "name": "prod" },
      "name": "Order feedback", "channels": ["email", "sms"],
      "url": url,
      "enabled": true,
      "events": ["sent", "delivered", "bounce", "error"],
      "authentication": { "type": "none" },
      "headers": { "X-Partner-Id": "acme" },
      "signing": null,
      "updatedAt": "2026-11-27T09:00:00Z" })
}

pub fn campaign(org: &str, sandbox: &str, campaign: &str, enabled: bool) -> Value {
    json!({ "kind": "campaign", "imsOrg": org, "sandboxId": sandbox, "campaignID": campaign,
      "webhooksEnabled": enabled, "updatedAt": "2026-11-27T09:00:00Z" })
}

pub fn webhook_key(org: &str, sandbox: &str) -> String {
    format!("webhook/{org}/{sandbox}")
}

pub fn campaign_key(org: &str, sandbox: &str, campaign: &str) -> String {
    format!("campaign/{org}/{sandbox}/{campaign}")
}

/// Checks a produced record against one of the project's schemas.
pub fn assert_schema(kind: feedback_webhooks::schema::Kind, value: &Value) {
    if let Err(v) = feedback_webhooks::schema::validate(kind, value) {
        panic!("{kind:?} violates its schema: {v}\n{value:#}");
    }
}
