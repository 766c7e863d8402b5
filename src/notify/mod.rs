//! Notifications to owners: each org's operational events (`webhook.failing`,
//! `event.exhausted`, `webhook.disabled`, ...) sent to the org's notification endpoint (the
//! `notification/{imsOrg}` config record) as signed Standard Webhooks requests, with the
//! feedback deliveries' retry schedule and SSRF rules, and nothing shared with them that a
//! failing endpoint could hold up. The notifier reads the topic and commits (`notifier`);
//! each org's lane sends and retries (`lane`); what is sent is `domain::notification`.

pub mod lane;
pub mod notifier;

pub use notifier::{Notifier, NotifierOptions, NotifyError};
