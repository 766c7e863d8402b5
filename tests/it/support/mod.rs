pub mod kafka;
pub mod processor;
pub mod receiver;

use self::kafka::{Producer, Topics};
use self::processor::{env_for, Processor};
use self::receiver::TestReceiver;

use std::time::Duration;

use serde_json::{json, Value};

/// How long a test waits for something that should take a second or two.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub const ORG: &str = "myImsOrg";
pub const SANDBOX: &str = "068abf40-575e-11ea-8512-9b1bfdb82603";
pub const CAMPAIGN: &str = "16f24a15-7e21-477c-848a-d5695ca7f137";

/// The SPEC's example event (`examples/event.json`), with the given id.
pub fn spec_event(id: &str) -> Value {
    let mut event: Value =
        serde_json::from_str(include_str!("../../../examples/event.json")).unwrap();
    event["_id"] = json!(id);
    event
}

/// The SPEC's example payload (`examples/payload.json`).
pub fn spec_payload() -> Value {
    serde_json::from_str(include_str!("../../../examples/payload.json")).unwrap()
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

/// One test's world: fresh topics, a receiver with its test CA, the processor's environment
/// and a producer.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub topics: Topics,
    pub receiver: TestReceiver,
    pub producer: Producer,
    pub env: Vec<(String, String)>,
}

impl Harness {
    pub async fn start(name: &str) -> Self {
        Self::start_on(name, &kafka::bootstrap()).await
    }

    /// As [`Harness::start`], with the webhook of [`ORG`] pointing at the receiver's
    /// `/hook`.
    pub async fn hooked(name: &str) -> Self {
        let h = Self::start(name).await;
        h.configure(ORG, &h.receiver.url("/hook")).await;
        h
    }

    /// As [`Harness::start`], on the broker at `bootstrap`.
    pub async fn start_on(name: &str, bootstrap: &str) -> Self {
        Self::start_replicated(name, bootstrap, 1).await
    }

    /// As [`Harness::start_on`], with topics of `replication` replicas.
    pub async fn start_replicated(name: &str, bootstrap: &str, replication: i32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let topics = Topics::create_replicated(name, bootstrap, replication).await;
        let receiver = TestReceiver::start(dir.path()).await;
        let env = env_for(&topics, &dir.path().join("store"), &receiver.ca_file);
        Harness {
            dir,
            topics,
            receiver,
            producer: Producer::on(bootstrap),
            env,
        }
    }

    /// Publishes a webhook for `org` (sandbox `SANDBOX`) at `url` and opts `CAMPAIGN` in.
    pub async fn configure(&self, org: &str, url: &str) {
        let config = &self.topics.config;
        self.producer
            .send_json(
                config,
                Some(&webhook_key(org, SANDBOX)),
                &webhook(org, SANDBOX, url),
            )
            .await;
        self.producer
            .send_json(
                config,
                Some(&campaign_key(org, SANDBOX, CAMPAIGN)),
                &campaign(org, SANDBOX, CAMPAIGN, true),
            )
            .await;
    }

    /// Starts the processor with this harness's environment, logging to `{log}.log`.
    pub fn processor(&self, log: &str) -> Processor {
        Processor::start(&self.env, self.dir.path().join(format!("{log}.log")))
    }
}
