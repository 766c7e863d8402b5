//! Where an event is joined with its configuration: the config topic is followed into a
//! local RocksDB cache, and each event looks up its webhook and campaign there.

pub mod follower;
pub mod store;

pub use follower::{ConfigFollower, FollowerStats};
pub use store::{ConfigStore, StoreError};

use crate::domain::config::WebhookConfig;
use crate::domain::event::FeedbackEvent;
use crate::domain::matching::{decide, Decision};

/// An event joined with its current configuration.
#[derive(Debug, Clone)]
pub struct Joined {
    pub webhook: Option<WebhookConfig>,
    pub decision: Decision,
}

/// Looks up the event's webhook and campaign opt-in and decides whether it is delivered.
pub fn join(store: &ConfigStore, event: &FeedbackEvent) -> Result<Joined, StoreError> {
    let webhook = store.webhook(&event.ims_org, &event.sandbox.id)?;
    let campaign = match (&webhook, event.campaign_id()) {
        // No webhook means no delivery whatever the campaign says: skip the second read.
        (Some(_), Some(id)) => store.campaign(&event.ims_org, &event.sandbox.id, id)?,
        _ => None,
    };
    let decision = decide(event, webhook.as_ref(), campaign.as_ref());
    Ok(Joined { webhook, decision })
}
