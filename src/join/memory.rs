//! An in-memory [`ConfigLookup`] for unit tests of what happens after the join.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{ConfigLookup, Found, StoreError, Stored, Version};
use crate::domain::config::{CampaignConfig, WebhookConfig};

type Records<K, T> = Mutex<HashMap<K, Arc<Stored<T>>>>;

#[derive(Default)]
pub struct MemoryConfig {
    webhooks: Records<(String, String), WebhookConfig>,
    campaigns: Records<(String, String, String), CampaignConfig>,
    next_offset: Mutex<i64>,
    /// Orgs whose records read as corrupt.
    corrupt: Mutex<Vec<String>>,
}

impl MemoryConfig {
    /// Makes every lookup of `org` fail as an undecodable record does.
    pub fn corrupt(&self, org: &str) {
        self.corrupt.lock().unwrap().push(org.to_owned());
    }

    fn version(&self) -> Version {
        let mut next = self.next_offset.lock().unwrap();
        *next += 1;
        Version {
            partition: 0,
            offset: *next,
        }
    }

    /// `value` stored under the next version.
    fn stored<T>(&self, value: T) -> Arc<Stored<T>> {
        Arc::new(Stored {
            value,
            version: self.version(),
        })
    }

    pub fn put_webhook(&self, webhook: WebhookConfig) {
        let key = (webhook.ims_org.clone(), webhook.sandbox.id.clone());
        let stored = self.stored(webhook);
        self.webhooks.lock().unwrap().insert(key, stored);
    }

    pub fn put_campaign(&self, campaign: CampaignConfig) {
        let key = (
            campaign.ims_org.clone(),
            campaign.sandbox_id.clone(),
            campaign.campaign_id.clone(),
        );
        let stored = self.stored(campaign);
        self.campaigns.lock().unwrap().insert(key, stored);
    }
}

impl ConfigLookup for MemoryConfig {
    fn webhook(&self, ims_org: &str, sandbox_id: &str) -> Found<WebhookConfig> {
        if self.corrupt.lock().unwrap().iter().any(|o| o == ims_org) {
            return Err(StoreError::Corrupt {
                key: format!("webhook/{ims_org}/{sandbox_id}"),
                reason: "not JSON".into(),
            });
        }
        let key = (ims_org.to_owned(), sandbox_id.to_owned());
        Ok(self.webhooks.lock().unwrap().get(&key).cloned())
    }

    fn campaign(&self, org: &str, sandbox: &str, campaign: &str) -> Found<CampaignConfig> {
        let key = (org.to_owned(), sandbox.to_owned(), campaign.to_owned());
        Ok(self.campaigns.lock().unwrap().get(&key).cloned())
    }
}
