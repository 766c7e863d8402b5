//! Webhook health and operational events, as the API shows them: the delivery log's
//! follower also reads the health trackers' compacted state topic and the
//! operational-events topic into the same RocksDB.
//!
//! Keys: `s/{org}/{sandbox}` → the webhook's health state (as its tracker wrote it; a
//! tombstone deletes it); `n/{org}/{u64::MAX - occurred ms, hex}/{partition}-{offset}` →
//! an operational event, so a prefix scan is an org's events newest first (kept like
//! outcomes: for the retention, at most `deliveries_per_webhook` per org);
//! `os/{partition}` and `on/{partition}` → the next offset to read of each topic.

use rocksdb::WriteBatch;
use serde_json::Value;

use super::deliveries::{DeliveryLog, Keep, LogError};
use crate::domain::health::Health;
use crate::domain::time::{parse_rfc3339, unix_ms};

pub(super) const STATE_OFFSETS: &str = "os/";
pub(super) const EVENT_OFFSETS: &str = "on/";

fn state_key(org: &str, sandbox: &str) -> String {
    format!("s/{org}/{sandbox}")
}

fn events_prefix(org: &str) -> String {
    format!("n/{org}/")
}

/// What a query of an org's operational events asks for.
#[derive(Debug, Default, Clone)]
pub struct EventsQuery {
    pub sandbox: Option<String>,
    /// `webhook.failing`, ...
    pub kind: Option<String>,
    pub after: Option<String>,
    pub limit: usize,
}

impl DeliveryLog {
    /// Applies one record of the state topic (keyed `webhook/{org}/{sandbox}`).
    pub fn apply_state(
        &self,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), LogError> {
        let mut batch = WriteBatch::default();
        let webhook = key
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.strip_prefix("webhook/"))
            .and_then(|k| k.split_once('/'));
        if let Some((org, sandbox)) = webhook {
            match value {
                Some(value) => batch.put(state_key(org, sandbox), value),
                None => batch.delete(state_key(org, sandbox)),
            }
        }
        batch.put(
            format!("{STATE_OFFSETS}{partition}"),
            (offset + 1).to_be_bytes(),
        );
        self.db().write(batch)?;
        Ok(())
    }

    /// Applies one operational event.
    pub fn apply_operational(
        &self,
        partition: i32,
        offset: i64,
        value: &[u8],
    ) -> Result<(), LogError> {
        let mut batch = WriteBatch::default();
        let event = serde_json::from_slice::<Value>(value).ok();
        let placed = event.as_ref().and_then(|e| {
            let org = e.get("imsOrg")?.as_str()?;
            let at = parse_rfc3339(e.get("occurredAt")?.as_str()?)?;
            Some((org.to_owned(), unix_ms(at)))
        });
        if let Some((org, at)) = placed {
            let key = format!(
                "{}{:016x}/{partition}-{offset}",
                events_prefix(&org),
                u64::MAX - at
            );
            batch.put(key, value);
        }
        batch.put(
            format!("{EVENT_OFFSETS}{partition}"),
            (offset + 1).to_be_bytes(),
        );
        self.db().write(batch)?;
        Ok(())
    }

    /// The webhook's health state, if its tracker has written one.
    pub fn health(&self, org: &str, sandbox: &str) -> Result<Option<Health>, LogError> {
        Ok(self
            .db()
            .get(state_key(org, sandbox))?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// An org's operational events, newest first, filtered; and the key to go on after.
    /// Reads at most `max_scanned` entries.
    pub fn operational(
        &self,
        org: &str,
        q: &EventsQuery,
        max_scanned: usize,
    ) -> Result<(Vec<Value>, Option<String>), LogError> {
        let prefix = events_prefix(org);
        let start = q.after.clone().unwrap_or_else(|| prefix.clone());
        let mut items = Vec::new();
        let mut last: Option<String> = None;
        let mut scanned = 0usize;
        let iter = self.db().iterator(rocksdb::IteratorMode::From(
            start.as_bytes(),
            rocksdb::Direction::Forward,
        ));
        for item in iter {
            let (key, value) = item?;
            let Ok(key) = std::str::from_utf8(&key) else {
                continue;
            };
            if !key.starts_with(&prefix) {
                break;
            }
            if q.after.as_deref() == Some(key) {
                continue;
            }
            if items.len() == q.limit || scanned == max_scanned {
                return Ok((items, last));
            }
            scanned += 1;
            last = Some(key.to_owned());
            let Ok(event) = serde_json::from_slice::<Value>(&value) else {
                continue;
            };
            let wanted = |field: &str, want: &Option<String>| {
                want.as_deref()
                    .is_none_or(|w| event.get(field).and_then(Value::as_str) == Some(w))
            };
            if wanted("sandboxId", &q.sandbox) && wanted("type", &q.kind) {
                items.push(event);
            }
        }
        Ok((items, None))
    }

    /// Deletes the operational events the log no longer keeps (older than the retention,
    /// or past the newest `keep.per_webhook` of an org).
    pub fn prune_operational(&self, keep: Keep, now_ms: u64) -> Result<usize, LogError> {
        let oldest = now_ms.saturating_sub(keep.age.as_millis() as u64);
        let mut batch = WriteBatch::default();
        let mut removed = 0;
        let mut current = String::new();
        let mut kept = 0usize;
        let iter = self.db().iterator(rocksdb::IteratorMode::From(
            b"n/",
            rocksdb::Direction::Forward,
        ));
        for item in iter {
            let (key, _) = item?;
            let Ok(key) = std::str::from_utf8(&key) else {
                continue;
            };
            if !key.starts_with("n/") {
                break;
            }
            // `n/{org}/{inverse ms}/...`
            let mut parts = key.splitn(4, '/');
            let (_, org, at) = (parts.next(), parts.next(), parts.next());
            let org = org.unwrap_or_default();
            if org != current {
                current = org.to_owned();
                kept = 0;
            }
            let at = at
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .map_or(0, |inverse| u64::MAX - inverse);
            if kept >= keep.per_webhook || at < oldest {
                batch.delete(key);
                removed += 1;
            } else {
                kept += 1;
            }
        }
        self.db().write(batch)?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn event(org: &str, sandbox: &str, kind: &str, at: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "id": format!("op_{kind}{at}"), "type": kind, "occurredAt": at,
            "imsOrg": org, "sandboxId": sandbox
        }))
        .unwrap()
    }

    #[test]
    fn an_orgs_events_newest_first_filtered_paged_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let log = DeliveryLog::open(dir.path()).unwrap();
        let at = |s: u32| format!("2026-12-08T00:00:{s:02}.000Z");
        for (i, (sandbox, kind)) in [
            ("a", "webhook.failing"),
            ("b", "webhook.failing"),
            ("a", "event.exhausted"),
            ("a", "webhook.disabled"),
        ]
        .into_iter()
        .enumerate()
        {
            let value = event("org", sandbox, kind, &at(i as u32));
            log.apply_operational(0, i as i64, &value).unwrap();
        }
        log.apply_operational(0, 9, &event("other", "a", "webhook.failing", &at(9)))
            .unwrap();
        let q = |sandbox: Option<&str>, kind: Option<&str>, after, limit| EventsQuery {
            sandbox: sandbox.map(str::to_owned),
            kind: kind.map(str::to_owned),
            after,
            limit,
        };
        let types = |items: &[Value]| -> Vec<String> {
            items
                .iter()
                .map(|e| {
                    format!(
                        "{}:{}",
                        e["sandboxId"].as_str().unwrap(),
                        e["type"].as_str().unwrap()
                    )
                })
                .collect()
        };
        let (all, next) = log
            .operational("org", &q(None, None, None, 10), 100)
            .unwrap();
        assert_eq!(
            types(&all),
            [
                "a:webhook.disabled",
                "a:event.exhausted",
                "b:webhook.failing",
                "a:webhook.failing"
            ]
        );
        assert!(next.is_none());
        let (first, next) = log
            .operational("org", &q(Some("a"), None, None, 2), 100)
            .unwrap();
        assert_eq!(types(&first), ["a:webhook.disabled", "a:event.exhausted"]);
        let (rest, next) = log
            .operational("org", &q(Some("a"), None, next, 2), 100)
            .unwrap();
        assert_eq!(types(&rest), ["a:webhook.failing"]);
        assert!(next.is_none());
        let (failing, _) = log
            .operational("org", &q(None, Some("webhook.failing"), None, 10), 100)
            .unwrap();
        assert_eq!(failing.len(), 2);
        // Pruned to the newest two of each org.
        let keep = Keep {
            age: Duration::from_secs(365 * 86_400),
            per_webhook: 2,
        };
        let now = unix_ms(parse_rfc3339(&at(10)).unwrap());
        assert_eq!(log.prune_operational(keep, now).unwrap(), 2);
        let (left, _) = log
            .operational("org", &q(None, None, None, 10), 100)
            .unwrap();
        assert_eq!(types(&left), ["a:webhook.disabled", "a:event.exhausted"]);
        assert_eq!(
            log.operational("other", &q(None, None, None, 10), 100)
                .unwrap()
                .0
                .len(),
            1
        );
    }

    #[test]
    fn the_state_is_the_latest_record_and_a_tombstone_deletes_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = DeliveryLog::open(dir.path()).unwrap();
        let health = Health::new("org", "sbx");
        let key = "webhook/org/sbx";
        let value = serde_json::to_vec(&health).unwrap();
        log.apply_state(0, 0, Some(key.as_bytes()), Some(&value))
            .unwrap();
        assert_eq!(log.health("org", "sbx").unwrap(), Some(health));
        assert_eq!(log.health("org", "other").unwrap(), None);
        log.apply_state(0, 1, Some(key.as_bytes()), None).unwrap();
        assert_eq!(log.health("org", "sbx").unwrap(), None);
    }
}
