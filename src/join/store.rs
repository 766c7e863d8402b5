//! The config cache: every valid config record, keyed as in the topic, with its version
//! (the config-topic partition and offset it was read at), and the next offset of each
//! config-topic partition, written together so they never disagree.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{Options, WriteBatch, DB};

use super::memo::Memo;
use super::{ConfigLookup, Found};
use crate::domain::config::{CampaignConfig, ConfigKey, WebhookConfig};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("config cache: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("config cache holds an unreadable record under {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

const RECORD_PREFIX: &str = "r/";
const OFFSET_PREFIX: &str = "o/";
/// The layout of stored values. A cache written with another layout is rebuilt from the
/// topic (which holds everything it holds).
const FORMAT_KEY: &str = "format";
/// When the cache was last known to hold everything the topic held (Unix ms).
const SYNCED_KEY: &str = "synced";
/// The id of the config topic the cache was read from.
const TOPIC_ID_KEY: &str = "topic-id";
const FORMAT: &[u8] = b"2";
/// A stored value: the version (partition as 4 bytes, offset as 8, big-endian), then JSON.
const VERSION_BYTES: usize = 12;

/// Where a config record was read: identifies one version of a key's value. Within a
/// process it names one content for good (the cache is only rebuilt at start), so derived
/// state can be kept by version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    pub partition: i32,
    pub offset: i64,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.partition, self.offset)
    }
}

/// A config record as stored, with its version.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored<T> {
    pub value: T,
    pub version: Version,
}

/// What a listing hands each record to: its key and its JSON with its version; answers
/// whether to go on.
pub type Visitor<'a> = &'a mut dyn FnMut(&str, Stored<&[u8]>) -> bool;

/// A cheap-to-clone handle on the cache. Calls block briefly (memtable or block cache).
/// Lookups go through a memo of decoded records (`memo.rs`).
#[derive(Clone)]
pub struct ConfigStore {
    db: Arc<DB>,
    webhooks: Arc<Memo<WebhookConfig>>,
    campaigns: Arc<Memo<CampaignConfig>>,
}

impl ConfigStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        // A config cache is small: keep its memory small too.
        options.set_write_buffer_size(8 << 20);
        options.set_max_write_buffer_number(2);
        options.set_keep_log_file_num(2);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let db = DB::open(&options, path)?;
        let store = ConfigStore {
            db: Arc::new(db),
            webhooks: Arc::default(),
            campaigns: Arc::default(),
        };
        if store.db.get(FORMAT_KEY)?.as_deref() != Some(FORMAT) {
            // Written by an earlier version (or new): clearing the offsets makes the
            // follower read the topic from the beginning.
            store.clear()?;
            store.db.put(FORMAT_KEY, FORMAT)?;
        }
        Ok(store)
    }

    fn offset_key(topic: &str, partition: i32) -> String {
        format!("{OFFSET_PREFIX}{topic}/{partition}")
    }

    /// The next offset to read from a config-topic partition, if the cache has one.
    pub fn next_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        let key = Self::offset_key(topic, partition);
        Ok(self.db.get(&key)?.and_then(|v| {
            let bytes: [u8; 8] = v.as_slice().try_into().ok()?;
            Some(i64::from_be_bytes(bytes))
        }))
    }

    /// Applies one config-topic record: stores or deletes its value (when `change` is given;
    /// a refused record passes `None` and only moves the offset) and the partition's next
    /// offset, in one atomic batch.
    pub fn apply(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        change: Option<(&ConfigKey, Option<&[u8]>)>,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        if let Some((key, value)) = change {
            let record_key = format!("{RECORD_PREFIX}{key}");
            match value {
                Some(value) => {
                    let mut stored = Vec::with_capacity(VERSION_BYTES + value.len());
                    stored.extend_from_slice(&partition.to_be_bytes());
                    stored.extend_from_slice(&offset.to_be_bytes());
                    stored.extend_from_slice(value);
                    batch.put(record_key, stored)
                }
                None => batch.delete(record_key),
            }
        }
        batch.put(
            Self::offset_key(topic, partition),
            (offset + 1).to_be_bytes(),
        );
        self.db.write(batch)?;
        match change.map(|(key, _)| key) {
            Some(ConfigKey::Webhook {
                ims_org,
                sandbox_id,
            }) => self.webhooks.forget(ims_org, sandbox_id, ""),
            Some(ConfigKey::Campaign {
                ims_org,
                sandbox_id,
                campaign_id,
            }) => self.campaigns.forget(ims_org, sandbox_id, campaign_id),
            // Read from the store at each use (see `notify`): nothing memoized.
            Some(ConfigKey::Notification { .. }) | None => {}
        }
        Ok(())
    }

    /// When the cache was last known to be in step with the whole topic (Unix ms).
    pub fn synced_at(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.db.get(SYNCED_KEY)?.and_then(|v| {
            let bytes: [u8; 8] = v.as_slice().try_into().ok()?;
            Some(u64::from_be_bytes(bytes))
        }))
    }

    /// Records that the cache is in step with the whole topic as of `unix_ms`.
    pub fn mark_synced(&self, unix_ms: u64) -> Result<(), StoreError> {
        self.db.put(SYNCED_KEY, unix_ms.to_be_bytes())?;
        Ok(())
    }

    /// The id of the topic the cache holds records of, if known.
    pub fn topic_id(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .db
            .get(TOPIC_ID_KEY)?
            .and_then(|v| String::from_utf8(v).ok()))
    }

    pub fn set_topic_id(&self, id: &str) -> Result<(), StoreError> {
        self.db.put(TOPIC_ID_KEY, id.as_bytes())?;
        Ok(())
    }

    /// Drops every record and offset (used when the topic was recreated under us).
    pub fn clear(&self) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for item in self.db.iterator(rocksdb::IteratorMode::Start) {
            let (key, _) = item?;
            if *key != *FORMAT_KEY.as_bytes() {
                batch.delete(key);
            }
        }
        self.db.write(batch)?;
        self.webhooks.clear();
        self.campaigns.clear();
        Ok(())
    }

    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &ConfigKey,
    ) -> Result<Option<Stored<T>>, StoreError> {
        let record_key = format!("{RECORD_PREFIX}{key}");
        let Some(bytes) = self.db.get_pinned(&record_key)? else {
            return Ok(None);
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            key: key.to_string(),
            reason,
        };
        let (version, json) = decode_version(&bytes).ok_or_else(|| corrupt("no version".into()))?;
        let value = serde_json::from_slice(json).map_err(|e| corrupt(e.to_string()))?;
        Ok(Some(Stored { value, version }))
    }

    /// A record as stored (its JSON, not decoded), for readers that show it.
    pub fn raw(&self, key: &ConfigKey) -> Result<Option<Stored<Vec<u8>>>, StoreError> {
        let record_key = format!("{RECORD_PREFIX}{key}");
        let Some(bytes) = self.db.get_pinned(&record_key)? else {
            return Ok(None);
        };
        let (version, json) = decode_version(&bytes).ok_or_else(|| StoreError::Corrupt {
            key: key.to_string(),
            reason: "no version".into(),
        })?;
        Ok(Some(Stored {
            value: json.to_vec(),
            version,
        }))
    }

    /// Hands `each` the records whose key starts with `prefix` (e.g. `webhook/{imsOrg}/`)
    /// and sorts after `after` (from the first when `None`), in key order, until it answers
    /// `false`. A page seeks to its cursor and copies only what it shows.
    pub fn visit(
        &self,
        prefix: &str,
        after: Option<&str>,
        each: Visitor,
    ) -> Result<(), StoreError> {
        let full = format!("{RECORD_PREFIX}{prefix}");
        let start = match after {
            Some(a) if a > prefix => format!("{RECORD_PREFIX}{a}"),
            _ => full.clone(),
        };
        let iter = self.db.iterator(rocksdb::IteratorMode::From(
            start.as_bytes(),
            rocksdb::Direction::Forward,
        ));
        for item in iter {
            let (key, bytes) = item?;
            if !key.starts_with(full.as_bytes()) {
                break;
            }
            let key = String::from_utf8_lossy(&key[RECORD_PREFIX.len()..]);
            if after == Some(key.as_ref()) {
                continue;
            }
            let Some((version, json)) = decode_version(&bytes) else {
                return Err(StoreError::Corrupt {
                    key: key.into_owned(),
                    reason: "no version".into(),
                });
            };
            if !each(
                &key,
                Stored {
                    value: json,
                    version,
                },
            ) {
                break;
            }
        }
        Ok(())
    }

    /// RocksDB's cheap estimate of the keys held (config records and a few offsets), for
    /// the cache-size gauge.
    pub fn estimated_entries(&self) -> u64 {
        self.db
            .property_int_value("rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Number of config records held (webhooks and campaigns).
    pub fn record_count(&self) -> usize {
        self.db
            .prefix_iterator(RECORD_PREFIX)
            .take_while(|item| {
                item.as_ref()
                    .is_ok_and(|(k, _)| k.starts_with(RECORD_PREFIX.as_bytes()))
            })
            .count()
    }
}

fn decode_version(bytes: &[u8]) -> Option<(Version, &[u8])> {
    let partition = i32::from_be_bytes(bytes.get(..4)?.try_into().ok()?);
    let offset = i64::from_be_bytes(bytes.get(4..VERSION_BYTES)?.try_into().ok()?);
    Some((Version { partition, offset }, bytes.get(VERSION_BYTES..)?))
}

impl ConfigLookup for ConfigStore {
    fn webhook(&self, ims_org: &str, sandbox_id: &str) -> Found<WebhookConfig> {
        self.webhooks.get_or_read(ims_org, sandbox_id, "", || {
            self.get_json(&ConfigKey::webhook(ims_org, sandbox_id))
        })
    }

    fn campaign(&self, org: &str, sandbox: &str, campaign: &str) -> Found<CampaignConfig> {
        self.campaigns.get_or_read(org, sandbox, campaign, || {
            self.get_json(&ConfigKey::campaign(org, sandbox, campaign))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::tests::sample_webhook;

    #[test]
    fn records_and_offsets_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let key = ConfigKey::webhook("myImsOrg", "068abf40-575e-11ea-8512-9b1bfdb82603");
        let body = serde_json::to_vec(&sample_webhook()).unwrap();
        {
            let store = ConfigStore::open(dir.path()).unwrap();
            assert_eq!(store.next_offset("cfg", 0).unwrap(), None);
            store
                .apply("cfg", 0, 41, Some((&key, Some(&body))))
                .unwrap();
            assert_eq!(store.next_offset("cfg", 0).unwrap(), Some(42));
            // A refused record moves the offset and keeps the last valid value.
            store.apply("cfg", 0, 42, None).unwrap();
        }
        let store = ConfigStore::open(dir.path()).unwrap();
        assert_eq!(store.next_offset("cfg", 0).unwrap(), Some(43));
        let webhook = store
            .webhook("myImsOrg", "068abf40-575e-11ea-8512-9b1bfdb82603")
            .unwrap()
            .unwrap();
        assert_eq!(webhook.value.name, "Order feedback");
        assert_eq!(
            webhook.version,
            Version {
                partition: 0,
                offset: 41
            }
        );
        assert_eq!(store.record_count(), 1);

        store.apply("cfg", 0, 43, Some((&key, None))).unwrap();
        assert!(store
            .webhook("myImsOrg", "068abf40-575e-11ea-8512-9b1bfdb82603")
            .unwrap()
            .is_none());
        assert_eq!(store.record_count(), 0);

        store.clear().unwrap();
        assert_eq!(store.next_offset("cfg", 0).unwrap(), None);
    }

    #[test]
    fn records_are_listed_by_key_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::open(dir.path()).unwrap();
        for (i, key) in [
            "webhook/A/s2",
            "webhook/A/s1",
            "webhook/AB/s1",
            "campaign/A/s1/c",
        ]
        .iter()
        .enumerate()
        {
            let key = ConfigKey::parse(key).unwrap();
            store
                .apply("cfg", 0, i as i64, Some((&key, Some(b"{}"))))
                .unwrap();
        }
        let keys = |after: Option<&str>, most: usize| {
            let mut keys = Vec::new();
            store
                .visit("webhook/A/", after, &mut |k, s| {
                    keys.push(format!("{k}@{}", s.version));
                    keys.len() < most
                })
                .unwrap();
            keys
        };
        assert_eq!(keys(None, 10), ["webhook/A/s1@0-1", "webhook/A/s2@0-0"]);
        // A page stops when told, and the next seeks past its cursor.
        assert_eq!(keys(None, 1), ["webhook/A/s1@0-1"]);
        assert_eq!(keys(Some("webhook/A/s1"), 10), ["webhook/A/s2@0-0"]);
        assert!(keys(Some("webhook/A/s2"), 10).is_empty());
        // A cursor of another list reads nothing it should not.
        assert_eq!(keys(Some("campaign/A/"), 10).len(), 2);
        assert!(keys(Some("webhook/B/"), 10).is_empty());
        let raw = store.raw(&ConfigKey::webhook("AB", "s1")).unwrap().unwrap();
        assert_eq!((raw.value.as_slice(), raw.version.offset), (&b"{}"[..], 2));
    }

    #[test]
    fn a_cache_of_an_earlier_layout_is_rebuilt_from_the_topic() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The earlier layout: bare JSON values, no format marker.
            let db = DB::open_default(dir.path()).unwrap();
            db.put(
                "r/webhook/o/s",
                serde_json::to_vec(&sample_webhook()).unwrap(),
            )
            .unwrap();
            db.put("o/cfg/0", 7i64.to_be_bytes()).unwrap();
        }
        let store = ConfigStore::open(dir.path()).unwrap();
        assert_eq!(store.next_offset("cfg", 0).unwrap(), None, "read again");
        assert_eq!(store.record_count(), 0);
        store.apply("cfg", 0, 3, None).unwrap();
        drop(store);
        let store = ConfigStore::open(dir.path()).unwrap();
        assert_eq!(store.next_offset("cfg", 0).unwrap(), Some(4), "kept");
    }
}
