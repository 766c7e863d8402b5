//! What one tenant may hold and do, so that none can take the API from the others: webhooks
//! and campaign opt-ins per org, config writes per token and minute, test sends under way
//! per org. Each refusal names its quota and setting.

use super::budget::{Held, InFlight, PerMinute};
use crate::admin::problem::Problem;
use crate::domain::config::ConfigKey;
use crate::settings::AdminSettings;

pub struct Quotas {
    webhooks_per_org: usize,
    campaigns_per_org: usize,
    /// Config writes per token and minute.
    writes: PerMinute,
    /// Test sends under way per org.
    sending: InFlight,
}

impl Quotas {
    pub fn from_settings(admin: &AdminSettings) -> Self {
        Quotas {
            webhooks_per_org: admin.max_webhooks_per_org.max(1),
            campaigns_per_org: admin.max_campaigns_per_org.max(1),
            writes: PerMinute::new(admin.writes_per_minute),
            sending: InFlight::new(admin.max_test_sends_in_flight_per_org),
        }
    }

    /// Counts a write of the token `name`, or refuses it (429).
    pub fn write(&self, name: &str) -> Result<(), Problem> {
        if self.writes.admit(name) {
            return Ok(());
        }
        Err(Problem::too_many(
            "Quota reached",
            format!(
                "quota admin.writes_per_minute: at most {} config writes a minute per token",
                self.writes.limit()
            ),
        ))
    }

    /// Whether the org, holding `held` records of the kind `key` creates, may create one
    /// more (422 otherwise).
    pub fn create(&self, key: &ConfigKey, held: usize) -> Result<(), Problem> {
        let (most, setting, what) = self.holding(key);
        if held < most {
            return Ok(());
        }
        Err(Problem::unprocessable(
            "Quota reached",
            format!("quota {setting}: at most {most} {what} per org"),
        ))
    }

    /// The most records of the kind `key` names an org may hold, and the setting and name
    /// of that quota.
    pub fn holding(&self, key: &ConfigKey) -> (usize, &'static str, &'static str) {
        match key {
            ConfigKey::Webhook { .. } => (
                self.webhooks_per_org,
                "admin.max_webhooks_per_org",
                "webhooks",
            ),
            ConfigKey::Campaign { .. } => (
                self.campaigns_per_org,
                "admin.max_campaigns_per_org",
                "campaign opt-ins",
            ),
            // One per org by its key.
            ConfigKey::Notification { .. } => (usize::MAX, "none", "notification endpoints"),
        }
    }

    /// A place for one test send of `org` under way, given back when dropped; 429 when the
    /// org has its most under way.
    pub fn test_send(&self, org: &str) -> Result<Held, Problem> {
        self.sending.take(org).ok_or_else(|| {
            Problem::too_many(
                "Quota reached",
                format!(
                    "quota admin.max_test_sends_in_flight_per_org: at most {} test sends under way per org",
                    self.sending.most()
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn quotas() -> Quotas {
        let admin = AdminSettings {
            max_webhooks_per_org: 2,
            max_campaigns_per_org: 3,
            writes_per_minute: 2,
            max_test_sends_in_flight_per_org: 1,
            ..AdminSettings::default()
        };
        Quotas::from_settings(&admin)
    }

    #[test]
    fn each_quota_refuses_past_its_setting_and_says_which() {
        let q = quotas();
        let webhook = ConfigKey::webhook("acme", "sb3");
        assert!(q.create(&webhook, 1).is_ok());
        let full = q.create(&webhook, 2).unwrap_err();
        assert_eq!(full.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            full.detail.contains("admin.max_webhooks_per_org"),
            "{}",
            full.detail
        );
        let campaign = ConfigKey::campaign("acme", "sb1", "c4");
        assert!(q.create(&campaign, 2).is_ok() && q.create(&campaign, 3).is_err());

        assert!(q.write("ci").is_ok() && q.write("ci").is_ok());
        let writes = q.write("ci").unwrap_err();
        assert_eq!(writes.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(writes.detail.contains("admin.writes_per_minute"));
        assert!(q.write("other-token").is_ok());

        let one = q.test_send("acme").unwrap();
        assert_eq!(
            q.test_send("acme").unwrap_err().status,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert!(q.test_send("other").is_ok(), "another org is not held up");
        drop(one);
        assert!(q.test_send("acme").is_ok(), "given back when done");
    }
}
