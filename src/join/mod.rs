//! Where an event is joined with its configuration: the config topic is followed into a
//! local RocksDB cache, and each event looks up its webhook and campaign there. Writes to
//! the config topic (the API's, and a receiver's request to be disabled) go through
//! `publish`.

pub mod disable;
pub mod follower;
mod memo;
#[cfg(test)]
pub mod memory;
pub mod publish;
pub mod store;

pub use follower::{ConfigFollower, FollowerStats};
pub use store::{ConfigStore, StoreError, Stored, Version};

use std::sync::Arc;

use crate::domain::config::{CampaignConfig, WebhookConfig};
use crate::domain::event::FeedbackEvent;
use crate::domain::matching::{decide, Decision};

/// Reads of the current configuration: the RocksDB cache in the processor, an in-memory
/// map in unit tests. Calls may block briefly (RocksDB's memtable or block cache).
pub trait ConfigLookup: Send + Sync {
    fn webhook(&self, org: &str, sandbox: &str) -> Found<WebhookConfig>;

    fn campaign(&self, org: &str, sandbox: &str, campaign: &str) -> Found<CampaignConfig>;
}

/// A lookup's answer: the stored record, if there is one.
pub type Found<T> = Result<Option<Arc<Stored<T>>>, StoreError>;

/// An event joined with its current configuration.
#[derive(Debug, Clone)]
pub struct Joined {
    pub webhook: Option<Arc<Stored<WebhookConfig>>>,
    pub decision: Decision,
}

/// Looks up the event's webhook and campaign opt-in and decides whether it is delivered.
pub fn join(config: &dyn ConfigLookup, event: &FeedbackEvent) -> Result<Joined, StoreError> {
    let webhook = config.webhook(&event.ims_org, &event.sandbox.id)?;
    let campaign = match (&webhook, event.campaign_id()) {
        // No webhook means no delivery whatever the campaign says: skip the second read.
        (Some(_), Some(id)) => config.campaign(&event.ims_org, &event.sandbox.id, id)?,
        _ => None,
    };
    let decision = decide(
        event,
        webhook.as_ref().map(|w| &w.value),
        campaign.as_ref().map(|c| &c.value),
    );
    Ok(Joined { webhook, decision })
}
