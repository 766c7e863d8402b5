//! Committing a consumer's progress: each partition's commit point with, as its metadata,
//! the records after it that are done too (see [`Progress`]).
//!
//! At least once, the offsets are committed by the consumer. Exactly once, they are sent to
//! the transaction the records' results were written in ([`Transactions`], implemented by
//! the outcome writer), so results and offsets become visible together or not at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;

use super::offsets::{OffsetTracker, PartitionKey};
use super::progress::Progress;

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The producer cannot go on (fenced by a newer instance with its transactional id,
    /// or another fatal error): the process must stop.
    #[error("the transactional producer cannot go on: {0}")]
    Fatal(String),
    #[error("offset commit: {0}")]
    Kafka(#[from] KafkaError),
    /// Writes under way did not finish in time (the broker is slow or away): nothing was
    /// committed, and a later commit covers it. Exactly once, new writes wait until then.
    #[error("writes under way did not finish; not committed yet")]
    Busy,
}

/// The offsets to commit with a transaction, and the group they belong to.
pub type Offsets = (TopicPartitionList, ConsumerGroupMetadata);

/// A transaction that records' results are written in (exactly once).
pub trait Transactions: Send + Sync {
    /// Waits until no write is under way (and holds new ones back), then commits what was
    /// written since the last commit together with the offsets `offsets` returns at that
    /// moment, and opens the next transaction. A transaction that cannot commit is an
    /// error that stops the process: its restart redoes the work from the committed
    /// offsets. Blocking.
    fn commit(&self, offsets: &mut dyn FnMut() -> Option<Offsets>) -> Result<(), CommitError>;
    /// Notified when the open transaction is full and should be committed before the
    /// commit interval is up.
    fn filled(&self) -> Option<Arc<Notify>>;
    /// Whether writes are waiting for a commit (the transaction is full, or a commit gave
    /// up on a write that was stuck).
    fn held_back(&self) -> bool;
    /// Throws away what was written since the last commit (the assignment was lost, so
    /// its offsets can no longer be committed). Blocking.
    fn abort(&self) -> Result<(), CommitError>;
}

/// How one consumer commits.
pub struct Committer {
    pub(super) tracker: Arc<Mutex<OffsetTracker>>,
    transactions: Option<Arc<dyn Transactions>>,
    /// Exactly once: notified when the open transaction is full (see [`Committer::wanted`]).
    filled: Option<Arc<Notify>>,
    /// What was last committed per partition: unchanged progress is not committed again,
    /// and exactly once, it is what a revoked partition is known to have done.
    committed: Mutex<HashMap<PartitionKey, Progress>>,
}

impl Committer {
    pub fn new(
        tracker: Arc<Mutex<OffsetTracker>>,
        transactions: Option<Arc<dyn Transactions>>,
    ) -> Self {
        Committer {
            tracker,
            filled: transactions.as_ref().and_then(|t| t.filled()),
            transactions,
            committed: Mutex::new(HashMap::new()),
        }
    }

    pub fn exactly_once(&self) -> bool {
        self.transactions.is_some()
    }

    /// Exactly once: whether writes are waiting for a commit (see [`Transactions`]).
    pub fn held_back(&self) -> bool {
        self.transactions.as_ref().is_some_and(|t| t.held_back())
    }

    /// Commits the progress that changed since the last commit. Blocking (exactly once, or
    /// with `CommitMode::Sync`).
    pub fn commit<C, X>(&self, consumer: &C, mode: CommitMode) -> Result<(), CommitError>
    where
        C: Consumer<X>,
        X: ConsumerContext,
    {
        let mut taken: Vec<(PartitionKey, Progress)> = Vec::new();
        let mut changed = || -> Option<TopicPartitionList> {
            let progress = self.tracker.lock().ok()?.progress();
            let committed = self.committed.lock().ok()?;
            taken = progress
                .into_iter()
                .filter(|(k, p)| committed.get(k) != Some(p))
                .collect();
            (!taken.is_empty()).then(|| offsets_of(&taken))
        };
        match &self.transactions {
            None => {
                let Some(tpl) = changed() else {
                    return Ok(());
                };
                consumer.commit(&tpl, mode)?;
            }
            Some(transactions) => {
                let mut offsets = || Some((changed()?, consumer.group_metadata()?));
                transactions.commit(&mut offsets)?;
            }
        }
        // Stored locally too (never committed from there): the consumer's lag statistics
        // are measured from the stored offsets.
        if !taken.is_empty() {
            let _ = consumer.store_offsets(&offsets_of(&taken));
        }
        if let Ok(mut committed) = self.committed.lock() {
            committed.extend(taken);
        }
        Ok(())
    }

    /// Resolves when progress should be committed before the commit interval is up
    /// (exactly once: the open transaction is full); never at least once.
    pub async fn wanted(&self) {
        match &self.filled {
            Some(filled) => filled.notified().await,
            None => std::future::pending().await,
        }
    }

    /// Exactly once: voids what was written since the last commit (see
    /// [`Transactions::abort`]).
    pub fn abort(&self) -> Result<(), CommitError> {
        match &self.transactions {
            Some(t) => t.abort(),
            None => Ok(()),
        }
    }

    /// What a partition is known to have done, durably, as it is handed over: at least
    /// once, every completed record (its result is acknowledged); exactly once, what the
    /// last transaction committed.
    pub fn durable(&self, key: &PartitionKey, tracked: Option<Progress>) -> Option<Progress> {
        if self.exactly_once() {
            self.committed.lock().ok()?.get(key).cloned()
        } else {
            tracked
        }
    }

    /// Forgets a partition's last commit (it was handed over: another member may commit).
    pub fn forget(&self, key: &PartitionKey) {
        if let Ok(mut committed) = self.committed.lock() {
            committed.remove(key);
        }
    }
}

/// Offsets with their metadata, ready to commit.
pub fn offsets_of(progress: &[(PartitionKey, Progress)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (key, p) in progress {
        if tpl
            .add_partition_offset(&key.topic, key.partition, Offset::Offset(p.next))
            .is_ok()
        {
            if let Some(mut elem) = tpl.find_partition(&key.topic, key.partition) {
                elem.set_metadata(p.encode());
            }
        }
    }
    tpl
}

/// What the committed offsets of `tpl`'s partitions say is done (offsets without a commit
/// are left out).
pub fn committed_progress(tpl: &TopicPartitionList) -> Vec<(PartitionKey, Progress)> {
    tpl.elements()
        .iter()
        .filter_map(|e| {
            let Offset::Offset(next) = e.offset() else {
                return None;
            };
            // The client library insists on UTF-8 metadata; another writer's may not be.
            let metadata =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.metadata().to_owned()))
                    .unwrap_or_default();
            let key = PartitionKey {
                topic: e.topic().to_owned(),
                partition: e.partition(),
            };
            Some((key, Progress::decode(next, &metadata)))
        })
        .collect()
}
