//! An in-memory config topic and cache, for the service's unit tests: what is published
//! is stored at once under the next offset, as the real cache applies it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use futures::future::BoxFuture;

use super::{ConfigRecords, ConfigWriter};
use crate::domain::config::ConfigKey;
use crate::join::publish::PublishError;
use crate::join::store::Visitor;
use crate::join::{StoreError, Stored, Version};

#[derive(Default)]
pub struct MemoryConfig {
    records: Mutex<BTreeMap<String, Stored<Vec<u8>>>>,
    next_offset: Mutex<i64>,
    /// Publishes still to be fenced (another instance writing), one each.
    fence: Mutex<u32>,
    /// Every publish tried, fenced ones included.
    pub published: Mutex<u32>,
}

impl MemoryConfig {
    /// The next `n` publishes are fenced by another instance.
    pub fn fence_next(&self, n: u32) {
        *self.fence.lock().unwrap() = n;
    }

    pub fn json(&self, key: &str) -> Option<serde_json::Value> {
        let records = self.records.lock().unwrap();
        records
            .get(key)
            .map(|s| serde_json::from_slice(&s.value).unwrap())
    }
}

impl ConfigRecords for MemoryConfig {
    fn raw(&self, key: &ConfigKey) -> Result<Option<Stored<Vec<u8>>>, StoreError> {
        Ok(self.records.lock().unwrap().get(&key.to_string()).cloned())
    }

    fn visit(&self, prefix: &str, after: Option<&str>, each: Visitor) -> Result<(), StoreError> {
        let records = self.records.lock().unwrap();
        for (k, v) in records.range(prefix.to_owned()..) {
            if !k.starts_with(prefix) {
                break;
            }
            if after.is_some_and(|a| k.as_str() <= a) {
                continue;
            }
            let stored = Stored {
                value: v.value.as_slice(),
                version: v.version,
            };
            if !each(k, stored) {
                break;
            }
        }
        Ok(())
    }
}

impl ConfigWriter for MemoryConfig {
    fn ready(&self) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(async { Ok(()) })
    }

    fn sync(&self) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(async { Ok(()) })
    }

    fn publish<'a>(
        &'a self,
        key: &'a ConfigKey,
        value: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<Version, PublishError>> {
        Box::pin(async move {
            *self.published.lock().unwrap() += 1;
            {
                let mut fence = self.fence.lock().unwrap();
                if *fence > 0 {
                    *fence -= 1;
                    return Err(PublishError::Fenced);
                }
            }
            let mut next = self.next_offset.lock().unwrap();
            let version = Version {
                partition: 0,
                offset: *next,
            };
            *next += 1;
            let mut records = self.records.lock().unwrap();
            match value {
                Some(bytes) => {
                    records.insert(
                        key.to_string(),
                        Stored {
                            value: bytes.to_vec(),
                            version,
                        },
                    );
                }
                None => {
                    records.remove(&key.to_string());
                }
            }
            Ok(version)
        })
    }
}

/// A service over an in-memory config topic, with a sealing key and an empty delivery log.
pub struct Fixture {
    pub config: std::sync::Arc<MemoryConfig>,
    pub svc: super::Service,
    _log: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        use crate::domain::secret::SealingKey;
        let config = std::sync::Arc::new(MemoryConfig::default());
        let log = tempfile::tempdir().unwrap();
        let settings = crate::settings::Settings::default();
        let key = SealingKey::from_base64(&SealingKey::generate_base64()).unwrap();
        let svc = super::Service {
            stores: super::Stores {
                records: config.clone(),
                deliveries: crate::admin::deliveries::DeliveryLog::open(log.path()).unwrap(),
                sealing: Some(key),
                health_policy: settings.health.policy(),
            },
            writer: config.clone(),
            writes: tokio::sync::Mutex::new(()),
            refs: crate::admin::secrets::RefRules::from_settings(&settings.secrets),
            rules: settings.rules().authoring(),
            tester: super::send_test::Tester::new(&settings).unwrap(),
            redeliveries: super::redeliver::Runs::from_settings(&settings),
            quotas: super::quotas::Quotas::from_settings(&settings.admin),
            reads: super::reads::Reads::from_settings(&settings.admin),
            settings,
        };
        Fixture {
            config,
            svc,
            _log: log,
        }
    }

    /// Publishes so far, fenced ones included.
    pub fn published(&self) -> u32 {
        *self.config.published.lock().unwrap()
    }
}

/// A caller with `scope` (`operator`, `org`, `org/sandbox`) and the right to write or not.
pub fn caller(scope: &str, write: bool) -> crate::admin::tokens::Principal {
    use crate::admin::tokens::{Principal, Right, Scope};
    Principal {
        name: format!("test-{scope}"),
        scope: Scope::parse(scope).unwrap(),
        right: if write { Right::Write } else { Right::Read },
    }
}
