//! The one write path to the config topic. `decide` sees the current record (after the
//! cache has caught up with the topic) and returns the new value, or `None` for a
//! tombstone. The value's secrets are prepared, it is stamped (`updatedAt`, `updatedBy`),
//! validated once with the processor's rules (schema, URL and header rules, the typed
//! record and its key), published, and the write is answered once the cache applied it.

use std::time::SystemTime;

use serde_json::Value;
use tracing::{info, warn};

use super::Service;
use crate::admin::problem::Problem;
use crate::admin::secrets;
use crate::admin::tokens::Principal;
use crate::domain::config::{self, ConfigError, ConfigKey, MAX_RECORD_BYTES};
use crate::domain::time::rfc3339_millis;
use crate::join::publish::PublishError;
use crate::join::{Stored, Version};
use crate::schema::Violation;

/// How many times a write starts again after another instance's write fenced it.
const WRITE_ATTEMPTS: u32 = 5;

/// A write done: its new version and the one it replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub version: Version,
    pub old: Option<Version>,
}

impl Service {
    pub(super) async fn write(
        &self,
        caller: &Principal,
        key: &ConfigKey,
        decide: impl Fn(Option<&Stored<Vec<u8>>>) -> Result<Option<Value>, Problem>,
    ) -> Result<Written, Problem> {
        self.quotas.write(&caller.name)?;
        let _one_at_a_time = self.writes.lock().await;
        let mut attempt = 0;
        let (old, deleted, version) = loop {
            attempt += 1;
            // The writer first, then catching up and the version check: see `publish.rs`.
            self.writer.ready().await.map_err(not_written)?;
            self.writer.sync().await.map_err(not_written)?;
            let current = self.current(key)?;
            let old = current.as_ref().map(|c| c.version);
            let bytes = match decide(current.as_ref())? {
                None => None,
                Some(mut value) => {
                    if current.is_none() {
                        let (most, _, _) = self.quotas.holding(key);
                        self.quotas.create(key, self.held_like(key, most).await?)?;
                    }
                    Some(self.publishable(caller, key, current.as_ref(), &mut value)?)
                }
            };
            match self.writer.publish(key, bytes.as_deref()).await {
                Ok(version) => break (old, bytes.is_none(), version),
                // Another instance wrote meanwhile: check the version again against its write.
                Err(PublishError::Fenced) if attempt < WRITE_ATTEMPTS => {
                    info!(key = %key, attempt, "another instance was writing; trying again");
                }
                Err(e) => return Err(not_written(e)),
            }
        };
        info!(
            target: "feedback_webhooks::audit",
            who = caller.name,
            action = if deleted { "delete" } else if old.is_some() { "replace" } else { "create" },
            key = %key,
            old = old.map_or("none".to_owned(), |v| v.to_string()),
            new = %version,
            "config write"
        );
        Ok(Written { version, old })
    }

    /// How many records of `key`'s kind its org holds, counted up to `most` (a read of the
    /// org's keys, bounded by the quota itself).
    async fn held_like(&self, key: &ConfigKey, most: usize) -> Result<usize, Problem> {
        let (kind, org) = match key {
            ConfigKey::Webhook { ims_org, .. } => ("webhook", ims_org),
            ConfigKey::Campaign { ims_org, .. } => ("campaign", ims_org),
            // One per org by its key: nothing to count.
            ConfigKey::Notification { .. } => return Ok(0),
        };
        let prefix = format!("{kind}/{org}/");
        self.read(org, move |stores| {
            let mut held = 0;
            stores.visit(&prefix, None, &mut |_, _| {
                held += 1;
                held < most
            })?;
            Ok(held)
        })
        .await
    }

    /// The value as it will be published, or every reason it cannot be.
    fn publishable(
        &self,
        caller: &Principal,
        key: &ConfigKey,
        current: Option<&Stored<Vec<u8>>>,
        value: &mut Value,
    ) -> Result<Vec<u8>, Problem> {
        let mut refused = Vec::new();
        if let ConfigKey::Webhook { ims_org, .. } | ConfigKey::Notification { ims_org } = key {
            let current: Option<Value> =
                current.and_then(|c| serde_json::from_slice(&c.value).ok());
            refused = secrets::prepare(
                value,
                current.as_ref(),
                self.stores.sealing.as_ref(),
                &key.to_string(),
                ims_org,
                caller.is_operator().then_some(&self.refs),
            );
        }
        config::stamp(value, &caller.name, &rfc3339_millis(SystemTime::now()));
        // Validated once: the schema and the rules a schema cannot say, then the typed record.
        for v in config::refusals(value, self.rules) {
            // A secret refused already is not refused again by the schema.
            if !refused.iter().any(|r| v.field.starts_with(&r.field)) {
                refused.push(v);
            }
        }
        if !refused.is_empty() {
            return Err(Problem::invalid(refused));
        }
        let bytes = serde_json::to_vec(value).map_err(|e| Problem::bad_request(e.to_string()))?;
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(whole(ConfigError::TooLarge(bytes.len())));
        }
        let record = config::typed(value).map_err(whole)?;
        // What the processor would refuse is never published: the body's key is the key.
        let body_key = record.key();
        if body_key != *key {
            return Err(whole(ConfigError::KeyMismatch {
                key: key.to_string(),
                expected: body_key.to_string(),
            }));
        }
        Ok(bytes)
    }
}

/// A refusal of the whole record.
fn whole(e: ConfigError) -> Problem {
    Problem::invalid(vec![Violation {
        field: String::new(),
        message: e.to_string(),
    }])
}

fn not_written(e: PublishError) -> Problem {
    warn!(error = %e, "config write not completed");
    Problem::unavailable(e.to_string())
}
