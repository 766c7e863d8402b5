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
        self.commit_sealing(consumer, mode, &[])
    }

    /// The last commit of partitions `keys` handed over (or, `lost`, the abort of what
    /// their assignment wrote), waiting for the broker's answer. Their records still under
    /// way are sealed out of it (see [`OffsetTracker::seal`]): exactly once, at the moment
    /// the offsets are taken, when no write is half-way (a write that went in before is in
    /// this transaction, and its record's completion counts), so that none slips into the
    /// next transaction once the gate reopens; before an abort, at once.
    pub fn hand_over<C, X>(
        &self,
        consumer: &C,
        keys: &[PartitionKey],
        lost: bool,
    ) -> Result<(), CommitError>
    where
        C: Consumer<X>,
        X: ConsumerContext,
    {
        if lost {
            self.seal(keys);
            self.abort()
        } else {
            self.commit_sealing(consumer, CommitMode::Sync, keys)
        }
    }

    fn seal(&self, keys: &[PartitionKey]) {
        if keys.is_empty() {
            return;
        }
        if let Ok(mut tracker) = self.tracker.lock() {
            keys.iter().for_each(|k| tracker.seal(k));
        }
    }

    /// [`Committer::commit`], sealing `keys` when the offsets are taken.
    fn commit_sealing<C, X>(
        &self,
        consumer: &C,
        mode: CommitMode,
        keys: &[PartitionKey],
    ) -> Result<(), CommitError>
    where
        C: Consumer<X>,
        X: ConsumerContext,
    {
        let mut taken: Vec<(PartitionKey, Progress)> = Vec::new();
        let mut changed = || -> Option<TopicPartitionList> {
            self.seal(keys);
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
                // Called behind the transaction's gate: no write is under way.
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

#[cfg(test)]
mod tests {
    //! The committer against a scripted transaction and a consumer that never connects
    //! anywhere that answers (its group metadata is all it gives).

    use std::sync::atomic::{AtomicUsize, Ordering};

    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::BaseConsumer;

    use super::*;

    #[derive(Default)]
    struct Scripted {
        /// Each commit's offsets: (partition, next offset, metadata).
        committed: Mutex<Vec<Vec<(i32, i64, String)>>>,
        fail_next: Mutex<Option<CommitError>>,
        aborted: AtomicUsize,
        filled: Arc<Notify>,
        /// Runs as the commit waits for the writes under way (before the offsets are taken).
        draining: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    }

    impl Transactions for Scripted {
        fn commit(&self, offsets: &mut dyn FnMut() -> Option<Offsets>) -> Result<(), CommitError> {
            if let Some(draining) = self.draining.lock().unwrap().take() {
                draining();
            }
            let Some((tpl, _group)) = offsets() else {
                return Ok(());
            };
            if let Some(e) = self.fail_next.lock().unwrap().take() {
                return Err(e);
            }
            let mut each: Vec<_> = tpl
                .elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(next) => (e.partition(), next, e.metadata().to_owned()),
                    other => panic!("{other:?}"),
                })
                .collect();
            each.sort();
            self.committed.lock().unwrap().push(each);
            Ok(())
        }

        fn filled(&self) -> Option<Arc<Notify>> {
            Some(self.filled.clone())
        }

        fn held_back(&self) -> bool {
            false
        }

        fn abort(&self) -> Result<(), CommitError> {
            self.aborted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn consumer() -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9")
            .set("group.id", "committer-test")
            .create()
            .unwrap()
    }

    fn key(partition: i32) -> PartitionKey {
        PartitionKey {
            topic: "in".into(),
            partition,
        }
    }

    /// Completes `offsets` of a partition.
    fn done(tracker: &Mutex<OffsetTracker>, partition: i32, offsets: &[i64]) {
        let mut t = tracker.lock().unwrap();
        for &offset in offsets {
            let generation = t.begin(&key(partition), offset).unwrap();
            t.start(&key(partition), generation, offset);
            t.complete(&key(partition), generation, offset);
        }
    }

    fn exactly_once() -> (Committer, Arc<Scripted>, Arc<Mutex<OffsetTracker>>) {
        let scripted = Arc::new(Scripted::default());
        let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
        let committer = Committer::new(tracker.clone(), Some(scripted.clone()));
        (committer, scripted, tracker)
    }

    #[test]
    fn only_progress_that_changed_goes_into_the_transaction() {
        let (committer, scripted, tracker) = exactly_once();
        let consumer = consumer();
        done(&tracker, 0, &[0, 1]);
        done(&tracker, 1, &[0]);
        committer.commit(&consumer, CommitMode::Sync).unwrap();
        done(&tracker, 0, &[2]);
        committer.commit(&consumer, CommitMode::Sync).unwrap();
        // Nothing new: no offsets at all.
        committer.commit(&consumer, CommitMode::Sync).unwrap();
        let committed = scripted.committed.lock().unwrap().clone();
        let nexts: Vec<Vec<(i32, i64)>> = committed
            .iter()
            .map(|c| c.iter().map(|(p, n, _)| (*p, *n)).collect())
            .collect();
        assert_eq!(nexts, [vec![(0, 2), (1, 1)], vec![(0, 3)]]);
        assert_eq!(committer.durable(&key(0), None), Some(Progress::at(3)));
    }

    #[test]
    fn records_done_past_a_gap_travel_in_the_metadata() {
        let (committer, scripted, tracker) = exactly_once();
        done(&tracker, 0, &[0]);
        // Offset 1 is under way while 2 and 3 complete.
        {
            let mut t = tracker.lock().unwrap();
            let generation = t.begin(&key(0), 1).unwrap();
            t.start(&key(0), generation, 1);
        }
        done(&tracker, 0, &[2, 3]);
        let consumer = consumer();
        committer.commit(&consumer, CommitMode::Sync).unwrap();
        let (_, next, metadata) = scripted.committed.lock().unwrap()[0][0].clone();
        assert_eq!(next, 1);
        let durable = committer.durable(&key(0), None).unwrap();
        assert_eq!(durable, Progress::decode(1, &metadata));
        assert_eq!(durable.done, [(2, 3)]);
        // What a new owner reads back from the committed offsets is the same.
        let taken = [(key(0), durable.clone())];
        assert_eq!(committed_progress(&offsets_of(&taken)), taken);
    }

    #[test]
    fn a_failed_commit_leaves_the_progress_to_the_next_one() {
        let (committer, scripted, tracker) = exactly_once();
        let consumer = consumer();
        done(&tracker, 0, &[0]);
        *scripted.fail_next.lock().unwrap() = Some(CommitError::Busy);
        assert!(matches!(
            committer.commit(&consumer, CommitMode::Sync),
            Err(CommitError::Busy)
        ));
        assert_eq!(committer.durable(&key(0), None), None);
        committer.commit(&consumer, CommitMode::Sync).unwrap();
        assert_eq!(scripted.committed.lock().unwrap().len(), 1);
        assert_eq!(committer.durable(&key(0), None), Some(Progress::at(1)));
    }

    #[test]
    fn what_a_handed_over_partition_did_depends_on_the_guarantee() {
        let (committer, _, tracker) = exactly_once();
        done(&tracker, 0, &[0]);
        committer.commit(&consumer(), CommitMode::Sync).unwrap();
        // Exactly once: only what the last transaction committed, whatever is tracked.
        let tracked = Some(Progress::at(5));
        assert_eq!(
            committer.durable(&key(0), tracked.clone()),
            Some(Progress::at(1))
        );
        committer.forget(&key(0));
        assert_eq!(committer.durable(&key(0), tracked.clone()), None);
        // At least once: every completed record is durable.
        let at_least_once = Committer::new(tracker, None);
        assert!(!at_least_once.exactly_once());
        assert_eq!(at_least_once.durable(&key(0), tracked.clone()), tracked);
        assert!(at_least_once.abort().is_ok());
    }

    /// The hand-over's commit counts a record whose write was under way when it started
    /// (it finishes while the commit drains the writes: its result is in this transaction),
    /// and seals out the one still being delivered: that one writes nothing after the commit
    /// (it would go into the next transaction, committed without its offset while the next
    /// owner redoes the record), and its completion leaves the offset open.
    #[test]
    fn a_hand_over_commits_what_finished_while_it_drained_and_seals_out_the_rest() {
        let (committer, scripted, tracker) = exactly_once();
        let (t, generation) = OffsetTracker::with_work_under_way(&key(0), 2);
        *tracker.lock().unwrap() = t;
        tracker.lock().unwrap().start_revoke(&key(0));
        let writing = tracker.clone();
        *scripted.draining.lock().unwrap() = Some(Box::new(move || {
            writing.lock().unwrap().complete(&key(0), generation, 0);
        }));
        committer.hand_over(&consumer(), &[key(0)], false).unwrap();
        let committed = scripted.committed.lock().unwrap().clone();
        assert_eq!(
            committed[0][0].1, 1,
            "offset 0 was written in this transaction"
        );
        let mut t = tracker.lock().unwrap();
        assert!(
            !t.tracks(&key(0), generation, 1),
            "a late result would be written"
        );
        assert_eq!(t.complete(&key(0), generation, 1), None);
        assert_eq!(t.revoke(&key(0)).map(|p| p.next), Some(1));
    }

    #[test]
    fn a_lost_hand_over_seals_then_aborts() {
        let (committer, scripted, tracker) = exactly_once();
        let (t, generation) = OffsetTracker::with_work_under_way(&key(0), 1);
        *tracker.lock().unwrap() = t;
        committer.hand_over(&consumer(), &[key(0)], true).unwrap();
        assert_eq!(scripted.aborted.load(Ordering::SeqCst), 1);
        assert!(!tracker.lock().unwrap().tracks(&key(0), generation, 0));
    }

    #[tokio::test]
    async fn a_full_transaction_asks_for_a_commit_and_an_abort_is_passed_on() {
        let (committer, scripted, _) = exactly_once();
        scripted.filled.notify_one();
        tokio::time::timeout(std::time::Duration::from_secs(1), committer.wanted())
            .await
            .expect("a commit is wanted");
        committer.abort().unwrap();
        assert_eq!(scripted.aborted.load(Ordering::SeqCst), 1);
    }
}
