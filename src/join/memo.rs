//! Decoded config records kept in memory in front of RocksDB, so that the lookups every
//! event makes (its webhook, its campaign) neither read RocksDB nor decode JSON again.
//!
//! Entries, absent records included, are keyed by org → sandbox → id (the campaign id, or
//! "" for the webhook) so that a lookup allocates nothing. A write to the cache forgets its
//! key *after* RocksDB has it, and a miss reads RocksDB while holding the memo's lock, so a
//! lookup can never put back a value older than the last write. The memo is bounded: past
//! `MAX_ENTRIES` it starts over (lookups then refill it from RocksDB).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::store::Stored;

/// Entries kept before the memo starts over: a few tens of MB at most.
const MAX_ENTRIES: usize = 100_000;

type Level<V> = HashMap<String, V>;
/// A remembered lookup: the record, or its absence.
type Entry<T> = Option<Arc<Stored<T>>>;

pub struct Memo<T> {
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    entries: Level<Level<Level<Entry<T>>>>,
    len: usize,
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                len: 0,
            }),
        }
    }
}

impl<T> Memo<T> {
    /// The remembered value under `org/sandbox/id`, or else what `read` returns (read with
    /// the memo locked, and remembered).
    pub fn get_or_read<E>(
        &self,
        org: &str,
        sandbox: &str,
        id: &str,
        read: impl FnOnce() -> Result<Option<Stored<T>>, E>,
    ) -> Result<Option<Arc<Stored<T>>>, E> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = inner
            .entries
            .get(org)
            .and_then(|m| m.get(sandbox))
            .and_then(|m| m.get(id))
        {
            return Ok(found.clone());
        }
        let value = read()?.map(Arc::new);
        if inner.len >= MAX_ENTRIES {
            inner.entries.clear();
            inner.len = 0;
        }
        inner
            .entries
            .entry(org.to_owned())
            .or_default()
            .entry(sandbox.to_owned())
            .or_default()
            .insert(id.to_owned(), value.clone());
        inner.len += 1;
        Ok(value)
    }

    /// Forgets `org/sandbox/id`: called after RocksDB has the new value.
    pub fn forget(&self, org: &str, sandbox: &str, id: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let removed = inner
            .entries
            .get_mut(org)
            .and_then(|m| m.get_mut(sandbox))
            .and_then(|m| m.remove(id))
            .is_some();
        if removed {
            inner.len -= 1;
        }
    }

    pub fn clear(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.entries.clear();
        inner.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::join::Version;

    fn stored(v: u32) -> Stored<u32> {
        Stored {
            value: v,
            version: Version {
                partition: 0,
                offset: i64::from(v),
            },
        }
    }

    #[test]
    fn remembers_values_and_absences_until_forgotten() {
        let memo = Memo::<u32>::default();
        let read = |v: Option<u32>| move || Ok::<_, ()>(v.map(stored));
        assert_eq!(
            memo.get_or_read("o", "s", "", read(Some(1)))
                .unwrap()
                .unwrap()
                .value,
            1
        );
        // Remembered: the reader is not asked again.
        let hit = memo.get_or_read("o", "s", "", || -> Result<_, ()> { panic!("read") });
        assert_eq!(hit.unwrap().unwrap().value, 1);
        assert!(memo
            .get_or_read("o", "s", "c", read(None))
            .unwrap()
            .is_none());
        assert!(memo
            .get_or_read("o", "s", "c", read(Some(9)))
            .unwrap()
            .is_none());
        memo.forget("o", "s", "c");
        assert_eq!(
            memo.get_or_read("o", "s", "c", read(Some(9)))
                .unwrap()
                .unwrap()
                .value,
            9
        );
        // A failed read is not remembered.
        memo.forget("o", "s", "");
        assert!(memo
            .get_or_read("o", "s", "", || Err::<Option<Stored<u32>>, _>(()))
            .is_err());
        assert_eq!(
            memo.get_or_read("o", "s", "", read(Some(2)))
                .unwrap()
                .unwrap()
                .value,
            2
        );
    }

    #[test]
    fn starts_over_when_full() {
        let memo = Memo::<u32>::default();
        for i in 0..=MAX_ENTRIES {
            memo.get_or_read("o", "s", &i.to_string(), || Ok::<_, ()>(None))
                .unwrap();
        }
        assert_eq!(memo.inner.lock().unwrap().len, 1);
    }
}
