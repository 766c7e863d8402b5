//! The administration's typed operations, shared by both faces: the HTTP API (`api/`)
//! extracts, calls and responds; the console (`console/`) reads a form, calls and renders.
//! Nothing here knows about axum: an operation takes the caller, the resource's names and
//! a typed input, and answers a typed result or a [`Problem`], so the console validates,
//! versions, audits and refuses exactly as the API does.
//!
//! - `webhooks.rs`, `campaigns.rs`: the config records (get, write, delete, lists).
//! - `write.rs`: the one write path to the config topic (version check, secrets, stamp,
//!   validation, publish, audit).
//! - `paging.rs`: cursors, limits and pages of every list.
//! - `deliveries.rs`: the delivery log's queries.
//! - `send_test.rs`: a test request through the processor's sender.
//! - `redeliver.rs`: redelivery of one event or a window.
//! - `reads.rs`, `quotas.rs`, `budget.rs`: what each tenant may hold, do and read at once.
//!
//! The config cache and the config-topic writer sit behind [`ConfigRecords`] and
//! [`ConfigWriter`], with an in-memory fake of both (`fake.rs`) for the unit tests.

mod budget;
pub mod campaigns;
pub mod deliveries;
#[cfg(test)]
pub(crate) mod fake;
pub mod notification;
pub mod operational;
pub mod paging;
pub(super) mod quotas;
mod reads;
pub mod redeliver;
pub mod reenable;
pub mod send_test;
pub mod webhooks;
mod write;

use crate::domain::ids::Id;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;

use super::deliveries::DeliveryLog;
use super::problem::Problem;
use super::secrets::{self, RefRules};
use super::tokens::{Principal, Right};
use crate::domain::config::{ConfigKey, Rules};
use crate::domain::secret::SealingKey;
use crate::join::publish::{PublishError, Publisher};
use crate::join::store::Visitor;
use crate::join::{ConfigStore, StoreError, Stored, Version};
use crate::settings::Settings;
use write::Written;

/// What the operations read of the config cache.
pub trait ConfigRecords: Send + Sync {
    /// A record as stored (its JSON), with its version.
    fn raw(&self, key: &ConfigKey) -> Result<Option<Stored<Vec<u8>>>, StoreError>;
    /// Hands `each` the records whose key starts with `prefix` and sorts after `after`, in
    /// key order, until it answers `false`.
    fn visit(&self, prefix: &str, after: Option<&str>, each: Visitor) -> Result<(), StoreError>;
}

impl ConfigRecords for ConfigStore {
    fn raw(&self, key: &ConfigKey) -> Result<Option<Stored<Vec<u8>>>, StoreError> {
        ConfigStore::raw(self, key)
    }

    fn visit(&self, prefix: &str, after: Option<&str>, each: Visitor) -> Result<(), StoreError> {
        ConfigStore::visit(self, prefix, after, each)
    }
}

/// How the operations write to the config topic (see `publish.rs`).
pub trait ConfigWriter: Send + Sync {
    /// Registers as the writer (fencing the last one).
    fn ready(&self) -> BoxFuture<'_, Result<(), PublishError>>;
    /// Waits until the cache has applied the topic's latest records.
    fn sync(&self) -> BoxFuture<'_, Result<(), PublishError>>;
    /// Publishes `value` (a tombstone when `None`) and answers its version once the cache
    /// applied it; [`PublishError::Fenced`] when another instance wrote meanwhile.
    fn publish<'a>(
        &'a self,
        key: &'a ConfigKey,
        value: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<Version, PublishError>>;
}

impl ConfigWriter for Publisher {
    fn ready(&self) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(Publisher::ready(self))
    }

    fn sync(&self) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(Publisher::sync(self))
    }

    fn publish<'a>(
        &'a self,
        key: &'a ConfigKey,
        value: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<Version, PublishError>> {
        Box::pin(Publisher::publish(self, key, value))
    }
}

/// A record and the version it has in the config topic (its `ETag`).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub version: Version,
    pub record: T,
}

/// A write's result: the record as now stored, and whether the write created it.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    pub record: Versioned<Value>,
    pub created: bool,
}

/// What reads use: handles cheap to clone into a read off the async workers.
#[derive(Clone)]
struct Stores {
    records: Arc<dyn ConfigRecords>,
    deliveries: DeliveryLog,
    sealing: Option<SealingKey>,
    health_policy: crate::domain::health::HealthPolicy,
}

impl Stores {
    /// The webhook's health as shown: from its record (as stored or as shown: `imsOrg`,
    /// `sandbox.id`, `enabled`, `updatedAt`) and its tracker's latest state.
    fn health_of(&self, webhook: &Value) -> Value {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let (org, sandbox) = (text(&webhook["imsOrg"]), text(&webhook["sandbox"]["id"]));
        let state = self.deliveries.health(&org, &sandbox).ok().flatten();
        let view = crate::domain::operational::HealthView::of(
            webhook["enabled"] != Value::Bool(false),
            webhook["updatedAt"].as_str().unwrap_or_default(),
            state.as_ref(),
            crate::domain::time::now_ms(),
            &self.health_policy,
        );
        serde_json::to_value(view).unwrap_or(Value::Null)
    }

    /// A webhook record with its `health` added.
    fn with_health(&self, webhook: &mut Value) {
        let health = self.health_of(webhook);
        if let Some(object) = webhook.as_object_mut() {
            object.insert("health".into(), health);
        }
    }

    /// A stored record as `caller` sees it: secrets replaced by their fingerprints (and,
    /// for operators, references by what they name), and its version.
    fn shown(
        &self,
        key: &ConfigKey,
        stored: &Stored<&[u8]>,
        caller: &Principal,
    ) -> Versioned<Value> {
        let record: Value = serde_json::from_slice(stored.value).unwrap_or(Value::Null);
        let refs = caller.is_operator();
        let mut shown = secrets::redact(&record, self.sealing.as_ref(), &key.to_string(), refs);
        if let Some(object) = shown.as_object_mut() {
            object.insert("version".into(), Value::from(stored.version.to_string()));
        }
        Versioned {
            version: stored.version,
            record: shown,
        }
    }

    /// `visit` of the config cache, its failure as a problem.
    fn visit(
        &self,
        prefix: &str,
        after: Option<&str>,
        each: &mut dyn FnMut(&str, Stored<&[u8]>) -> bool,
    ) -> Result<(), Problem> {
        self.records.visit(prefix, after, each).map_err(unavailable)
    }
}

/// What the operations share.
pub struct Service {
    stores: Stores,
    writer: Arc<dyn ConfigWriter>,
    /// Writes of one instance go one at a time: each checks its version against a cache
    /// that has caught up with the topic, then publishes.
    writes: tokio::sync::Mutex<()>,
    refs: RefRules,
    rules: Rules,
    tester: send_test::Tester,
    redeliveries: redeliver::Runs,
    quotas: quotas::Quotas,
    reads: reads::Reads,
    /// For the redelivery topic's clients.
    settings: Settings,
}

impl Service {
    /// The service over a cache, a writer and a delivery log; the rest from `settings`.
    pub fn new(
        settings: &Settings,
        records: Arc<dyn ConfigRecords>,
        writer: Arc<dyn ConfigWriter>,
        deliveries: DeliveryLog,
    ) -> Result<Self, ServiceError> {
        Ok(Service {
            stores: Stores {
                records,
                deliveries,
                sealing: settings.sealing_key()?,
                health_policy: settings.health.policy(),
            },
            writer,
            writes: tokio::sync::Mutex::new(()),
            refs: RefRules::from_settings(&settings.secrets),
            rules: settings.rules().authoring(),
            tester: send_test::Tester::new(settings)?,
            redeliveries: redeliver::Runs::from_settings(settings),
            quotas: quotas::Quotas::from_settings(&settings.admin),
            reads: reads::Reads::from_settings(&settings.admin),
            settings: settings.clone(),
        })
    }

    /// What a webhook's own delivery policy may ask for in this deployment.
    pub fn bounds(&self) -> crate::domain::config::PolicyBounds {
        self.rules.bounds
    }

    /// Whether secrets sent as values can be sealed.
    pub fn seals(&self) -> bool {
        self.stores.sealing.is_some()
    }

    fn current(&self, key: &ConfigKey) -> Result<Option<Stored<Vec<u8>>>, Problem> {
        self.stores.records.raw(key).map_err(unavailable)
    }

    /// Runs `work` on the stores off the async workers, as one read of `org` (`reads.rs`).
    async fn read<T: Send + 'static>(
        &self,
        org: &str,
        work: impl FnOnce(&Stores) -> Result<T, Problem> + Send + 'static,
    ) -> Result<T, Problem> {
        self.reads.run(org, self.stores.clone(), work).await
    }

    /// A stored record as `caller` sees it.
    fn shown(
        &self,
        key: &ConfigKey,
        stored: &Stored<Vec<u8>>,
        caller: &Principal,
    ) -> Versioned<Value> {
        let stored = Stored {
            value: stored.value.as_slice(),
            version: stored.version,
        };
        self.stores.shown(key, &stored, caller)
    }

    /// The record `written` stored, as `caller` sees it.
    fn shown_after(
        &self,
        key: &ConfigKey,
        written: &Written,
        what: &str,
        caller: &Principal,
    ) -> Result<Versioned<Value>, Problem> {
        let stored = self
            .current(key)?
            .filter(|s| s.version == written.version)
            .ok_or_else(|| {
                Problem::unavailable(format!("{what} changed again before it could be read"))
            })?;
        Ok(self.shown(key, &stored, caller))
    }
}

/// Why the service could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    #[error(transparent)]
    Tester(#[from] send_test::TesterError),
}

/// A JSON object body, or why not.
pub fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Problem> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Problem::invalid(vec![crate::schema::Violation {
            field: "".into(),
            message: "the body must be a JSON object".into(),
        }])),
        Err(e) => Err(Problem::bad_request(format!("the body is not JSON: {e}"))),
    }
}

fn unavailable(e: impl std::fmt::Display) -> Problem {
    Problem::unavailable(e.to_string())
}

/// Who asks, about which org and sandbox: what every operation on a sandbox's resources
/// takes.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    pub caller: &'a Principal,
    pub org: &'a str,
    pub sandbox: &'a str,
}

impl<'a> At<'a> {
    pub fn new(caller: &'a Principal, org: &'a str, sandbox: &'a str) -> Self {
        At {
            caller,
            org,
            sandbox,
        }
    }

    /// Whether the caller may read (or `write`) the sandbox's resources (see [`allow`]).
    pub fn allow(&self, write: bool) -> Result<(), Problem> {
        allow(self.caller, self.org, Some(self.sandbox), write)
    }
}

/// `value` as an id of `kind`, or a 400 saying why not (a path segment keeps the record
/// grammar before it reaches a key).
pub fn id(kind: Id, value: &str) -> Result<&str, Problem> {
    kind.check(value).map_err(Problem::bad_request)
}

/// What a caller may do with an org + sandbox (or the whole org when `sandbox` is `None`).
/// Outside its scope a resource does not exist for the caller (404, no existence leak);
/// inside, a read-only token may not write (403).
pub fn allow(
    caller: &Principal,
    org: &str,
    sandbox: Option<&str>,
    write: bool,
) -> Result<(), Problem> {
    let sees = match sandbox {
        Some(sandbox) => caller.scope.sees(org, sandbox),
        None => caller.scope.sees_org(org),
    };
    if !sees {
        return Err(Problem::not_found("no such resource"));
    }
    if write && caller.right != Right::Write {
        return Err(Problem::forbidden(format!(
            "token {:?} may only read",
            caller.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tokens::Scope;

    #[test]
    fn other_orgs_do_not_exist_and_readers_do_not_write() {
        let reader = Principal {
            name: "r".into(),
            scope: Scope::Sandbox("acme".into(), "prod".into()),
            right: Right::Read,
        };
        assert!(allow(&reader, "acme", Some("prod"), false).is_ok());
        assert_eq!(
            allow(&reader, "acme", Some("prod"), true)
                .unwrap_err()
                .status,
            403
        );
        assert_eq!(
            allow(&reader, "acme", Some("dev"), false)
                .unwrap_err()
                .status,
            404
        );
        assert_eq!(
            allow(&reader, "other", None, false).unwrap_err().status,
            404
        );
        assert!(allow(&reader, "acme", None, false).is_ok());
    }
}
