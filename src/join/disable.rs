//! A receiver's request to be disabled (`410 Gone`, or `webhook-delivery: disable`),
//! carried out: the webhook's record, as it was when the request was answered, published
//! again with `enabled: false` and `updatedBy: receiver`, and audited like any config write.
//! Every instance then skips its events as `webhook_disabled` until someone enables it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::Value;
use tracing::{info, warn};

use super::publish::{PublishError, Publisher};
use super::{ConfigStore, StoreError, Version};
use crate::delivery::Disabler;
use crate::domain::config::{self, ConfigError, ConfigKey, Rules};
use crate::domain::time::rfc3339_millis;

/// Who a receiver's disable is published as.
pub const UPDATED_BY: &str = "receiver";

/// Who the health trackers' disables are published as.
pub const HEALTH: &str = crate::domain::health::BY_HEALTH;

/// How many times a disable starts again after another writer fenced it.
const ATTEMPTS: u32 = 5;

/// Versions remembered as disabled before the set starts over.
const MAX_REMEMBERED: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum DisableError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored record: {0}")]
    Record(String),
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// The processor's [`Disabler`]: writes through the config topic's [`Publisher`].
#[derive(Clone)]
pub struct ConfigDisabler {
    inner: Arc<Inner>,
}

struct Inner {
    publisher: Publisher,
    store: ConfigStore,
    rules: Rules,
    /// Versions whose disable was started here: the events of a webhook in flight all get
    /// the same answer, and one write is enough.
    started: Mutex<HashSet<(String, Version)>>,
    /// Writes go one at a time: they share one transactional writer.
    writing: tokio::sync::Mutex<()>,
}

impl ConfigDisabler {
    pub fn new(publisher: Publisher, store: ConfigStore, rules: Rules) -> Self {
        ConfigDisabler {
            inner: Arc::new(Inner {
                publisher,
                store,
                rules,
                started: Mutex::new(HashSet::new()),
                writing: tokio::sync::Mutex::new(()),
            }),
        }
    }
}

impl Inner {
    /// Disables `key` if its current version is still `version`; `Ok(None)` when there was
    /// nothing to do (changed, deleted or disabled meanwhile).
    async fn write(
        &self,
        key: &ConfigKey,
        version: Version,
        who: &str,
    ) -> Result<Option<Version>, DisableError> {
        let _one_at_a_time = self.writing.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Registered first, then caught up: see `publish.rs`.
            self.publisher.ready().await?;
            self.publisher.sync().await?;
            let Some(current) = self.store.raw(key)? else {
                return Ok(None);
            };
            if current.version != version {
                return Ok(None);
            }
            let mut record: Value = serde_json::from_slice(&current.value)
                .map_err(|e| DisableError::Record(e.to_string()))?;
            if record.get("enabled") == Some(&Value::Bool(false)) {
                return Ok(None);
            }
            record["enabled"] = Value::Bool(false);
            config::stamp(&mut record, who, &rfc3339_millis(SystemTime::now()));
            let bytes =
                serde_json::to_vec(&record).map_err(|e| DisableError::Record(e.to_string()))?;
            config::validate(&key.to_string(), Some(&bytes), self.rules)?;
            match self.publisher.publish(key, Some(&bytes)).await {
                Ok(new) => return Ok(Some(new)),
                Err(PublishError::Fenced) if attempt < ATTEMPTS => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Disabler for ConfigDisabler {
    fn disable(&self, key: ConfigKey, version: Version) {
        self.disable_as(key, version, UPDATED_BY);
    }
}

impl ConfigDisabler {
    /// Disables `key` as `who` (published as `updatedBy`), if its current version is
    /// still `version`. Returns at once; the write happens in the background, once per
    /// version.
    pub fn disable_as(&self, key: ConfigKey, version: Version, who: &'static str) {
        {
            let mut started = self.inner.started.lock().unwrap_or_else(|e| e.into_inner());
            if started.len() >= MAX_REMEMBERED {
                started.clear();
            }
            if !started.insert((key.to_string(), version)) {
                return;
            }
        }
        let this = self.inner.clone();
        tokio::spawn(async move {
            match this.write(&key, version, who).await {
                Ok(Some(new)) => info!(
                    target: "feedback_webhooks::audit",
                    who,
                    action = "disable",
                    key = %key,
                    old = %version,
                    new = %new,
                    "config write"
                ),
                Ok(None) => {
                    info!(key = %key, old = %version, who, "the webhook changed since its disable was decided; left as it is")
                }
                Err(e) => {
                    warn!(key = %key, error = %e, who, "a webhook's disable was not carried out");
                    // Let a later answer try again.
                    this.started
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&(key.to_string(), version));
                }
            }
        });
    }
}
