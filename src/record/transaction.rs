//! The open transaction of one recorder (exactly once): its bookkeeping and what it decides
//! when a transaction call fails.
//!
//! The producer's transaction calls sit behind [`TxnCalls`] (implemented by the Kafka
//! producer, and by a fake in the tests), each failure described by the flags the client
//! library gives it ([`CallFailed`]). The decisions:
//!
//! | a call fails and …                                   | then                              |
//! |------------------------------------------------------|-----------------------------------|
//! | it may be retried, within [`Timing::budget`]         | the call is made again            |
//! | it requires an abort because the group moved on      | the transaction is written again  |
//! |   (sending offsets; at most [`REWRITES`] times)      |   in a new one, then committed    |
//! | it requires an abort (sending offsets)               | abort, and the process stops      |
//! | it happened in the commit itself (may have committed)| the process stops, no abort       |
//! | anything else (fatal, retries used up)               | the process stops                 |
//!
//! After a failure that stops the process, nothing commits any more (not even on the
//! revocation that leaving the group causes): the restart redoes the work from the
//! committed offsets.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::OwnedRwLockReadGuard;
use tracing::warn;

use super::gate::Gate;
use super::watchdog::Watchdog;
use crate::observe::metrics;
use crate::source::commit::{CommitError, Offsets};
use crate::source::input::Hold;

/// How one transaction call failed, as the client library describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailed {
    /// The producer cannot go on (its client is in a fatal state, or the error says so).
    pub fatal: bool,
    pub retriable: bool,
    /// The transaction must be aborted.
    pub requires_abort: bool,
    /// The group's generation moved on under the call (a rebalance under way).
    pub group_moved: bool,
    pub text: String,
}

impl std::fmt::Display for CallFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl CallFailed {
    /// A Kafka error of a transaction call; `client_fatal` when the client is in a fatal
    /// state.
    pub fn of(e: &KafkaError, client_fatal: bool) -> Self {
        let group_moved = matches!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::IllegalGeneration | RDKafkaErrorCode::RebalanceInProgress)
        );
        let (fatal, retriable, requires_abort) = match e {
            KafkaError::Transaction(t) => (
                client_fatal || t.is_fatal(),
                t.is_retriable(),
                t.txn_requires_abort(),
            ),
            // Not a transaction error: nothing says it can be retried or aborted.
            _ => (client_fatal, false, false),
        };
        CallFailed {
            fatal,
            retriable,
            requires_abort,
            group_moved,
            text: e.to_string(),
        }
    }
}

/// A record written in the open transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub topic: String,
    pub key: String,
    pub value: Vec<u8>,
}

/// The producer's transaction calls. Blocking.
pub trait TxnCalls: Send + Sync {
    fn begin(&self) -> Result<(), CallFailed>;
    fn send_offsets(&self, offsets: &Offsets, timeout: Duration) -> Result<(), CallFailed>;
    fn commit(&self, timeout: Duration) -> Result<(), CallFailed>;
    fn abort(&self, timeout: Duration) -> Result<(), CallFailed>;
    /// Writes `records` again (in the transaction just begun) and waits for them.
    fn write_again(&self, records: &[Sent]) -> Result<(), String>;
}

impl TxnCalls for FutureProducer {
    fn begin(&self) -> Result<(), CallFailed> {
        self.begin_transaction().map_err(|e| self.failed(&e))
    }

    fn send_offsets(&self, (tpl, group): &Offsets, timeout: Duration) -> Result<(), CallFailed> {
        self.send_offsets_to_transaction(tpl, group, timeout)
            .map_err(|e| self.failed(&e))
    }

    fn commit(&self, timeout: Duration) -> Result<(), CallFailed> {
        self.commit_transaction(timeout)
            .map_err(|e| self.failed(&e))
    }

    fn abort(&self, timeout: Duration) -> Result<(), CallFailed> {
        self.abort_transaction(timeout).map_err(|e| self.failed(&e))
    }

    fn write_again(&self, records: &[Sent]) -> Result<(), String> {
        let mut deliveries = Vec::with_capacity(records.len());
        for r in records {
            let record = FutureRecord::to(&r.topic).key(&r.key).payload(&r.value);
            let delivery = self.send_result(record).map_err(|(e, _)| e.to_string())?;
            deliveries.push(delivery);
        }
        for result in futures::executor::block_on(futures::future::join_all(deliveries)) {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e.to_string()),
                Err(_) => return Err("cancelled".into()),
            }
        }
        Ok(())
    }
}

/// The description of a failed call of this producer.
trait Described {
    fn failed(&self, e: &KafkaError) -> CallFailed;
}

impl Described for FutureProducer {
    fn failed(&self, e: &KafkaError) -> CallFailed {
        CallFailed::of(e, self.client().fatal_error().is_some())
    }
}

/// How many times one commit writes its transaction again after the group moved on.
pub const REWRITES: u32 = 5;

/// How long transaction calls may take, and how they are paced.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long one call (sending offsets, committing) may wait for the broker.
    pub step_wait: Duration,
    /// How long a call is retried in all. Past that the process stops: the restart's
    /// `init_transactions` settles the transaction left behind before anything is read.
    pub budget: Duration,
    /// Between two tries of a retriable call.
    pub retry_pause: Duration,
    /// Before the n-th rewrite, n times this: the consumer learns its new generation from
    /// the coordinator meanwhile.
    pub rewrite_pause: Duration,
    /// How long an abort may take.
    pub abort_wait: Duration,
    /// How long a commit waits for the writes under way.
    pub barrier_wait: Duration,
    /// How much longer than its own timeout a call may block before the process ends (see
    /// [`Watchdog`]).
    pub stuck_margin: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            step_wait: Duration::from_secs(10),
            budget: Duration::from_secs(30),
            retry_pause: Duration::from_millis(200),
            rewrite_pause: Duration::from_millis(100),
            abort_wait: Duration::from_secs(15),
            barrier_wait: Duration::from_secs(2),
            stuck_margin: Duration::from_secs(20),
        }
    }
}

/// The open transaction's bookkeeping.
#[derive(Debug)]
pub struct Transaction {
    /// Between writes and commits (see [`Gate`]).
    gate: Gate,
    /// Something was written since the last commit.
    written: AtomicBool,
    /// A record was given up after its result was written (a shutdown past its drain
    /// deadline): committing would keep that result without its offset, so the
    /// transaction is aborted instead.
    orphaned: AtomicBool,
    /// A commit failed for good: the process is stopping, and nothing commits any more.
    failed: AtomicBool,
    /// Ends the process when a transaction call blocks past its deadline.
    watchdog: Arc<Watchdog>,
    /// What the open transaction holds, to write again if it must be aborted because the
    /// group's generation moved on (see [`Transaction::rewrite`]).
    sent: Mutex<Vec<Sent>>,
    timing: Timing,
}

/// How a transaction call ended.
enum Stepped {
    Done,
    /// Offsets were sent with a group generation that a rebalance had just replaced: the
    /// transaction must be aborted, though nothing was wrong with what it holds.
    GroupMoved(CallFailed),
}

impl Transaction {
    /// The bookkeeping of a transaction just begun, holding at most `cap` results.
    pub fn new(watchdog: Arc<Watchdog>, cap: usize, timing: Timing) -> Self {
        Transaction {
            gate: Gate::new(cap),
            written: AtomicBool::new(false),
            orphaned: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            watchdog,
            sent: Mutex::new(Vec::new()),
            timing,
        }
    }

    /// Waits until a write may go into the open transaction (see [`Gate`]).
    pub async fn enter(&self) -> OwnedRwLockReadGuard<()> {
        self.gate.enter().await
    }

    /// A write under the guard of `enter` is going ahead: the transaction holds something.
    pub fn hold(self: &Arc<Self>, read: OwnedRwLockReadGuard<()>) -> TxnHold {
        self.written.store(true, Ordering::SeqCst);
        TxnHold {
            _read: read,
            txn: self.clone(),
            completed: false,
        }
    }

    /// Notes a record the broker acknowledged in the open transaction.
    pub fn sent(&self, record: Sent) {
        if let Ok(mut sent) = self.sent.lock() {
            sent.push(record);
        }
    }

    /// A write failed for good: nothing commits any more.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }

    pub fn filled(&self) -> Arc<tokio::sync::Notify> {
        self.gate.filled()
    }

    pub fn held_back(&self) -> bool {
        self.gate.is_closed()
    }

    /// Waits until no write is under way (holding new ones back), then commits what was
    /// written with the offsets `offsets` gives at that moment, and begins the next
    /// transaction.
    /// `flush` writes what the transaction's writes left to be written at its end (the
    /// health signals that sum them): it runs once every write under way has settled and
    /// new ones wait, before the offsets and the commit.
    pub fn commit(
        &self,
        calls: &dyn TxnCalls,
        offsets: &mut dyn FnMut() -> Option<Offsets>,
        flush: &dyn Fn(),
    ) -> Result<(), CommitError> {
        // Every write under way finishes (its record settles) first; new ones wait. A write
        // that does not finish soon (the broker is away) is waited for by a later commit,
        // and new writes wait until then.
        let Some(_barrier) = self.gate.drain(self.timing.barrier_wait) else {
            return Err(CommitError::Busy);
        };
        if self.failed.load(Ordering::SeqCst) {
            return Err(CommitError::Fatal(
                "an earlier transaction failed; nothing commits until the restart".into(),
            ));
        }
        flush();
        let result = self.commit_open(calls, offsets);
        if let Err(CommitError::Fatal(_)) = &result {
            self.fail();
        }
        result
    }

    /// Throws away what was written since the last commit and begins the next transaction.
    pub fn abort(&self, calls: &dyn TxnCalls) -> Result<(), CommitError> {
        // Writes under way are thrown away with the rest: no need to wait long for them.
        let _barrier = self.gate.drain(self.timing.barrier_wait);
        let aborted = self.abort_open(calls);
        self.gate.reopen();
        aborted?;
        metrics().transactions.with_label_values(&["aborted"]).inc();
        Ok(())
    }

    /// Runs a transaction call, retrying what can be retried within the budget; a call
    /// that requires it aborts the transaction (and begins the next).
    ///
    /// `may_have_committed`: the call may have reached the coordinator's commit (the commit
    /// itself). A failure there is ambiguous (the response may be what was lost): instead of
    /// aborting and redoing in process, which would redo committed work, the process stops;
    /// the restart's `init_transactions` settles the transaction, and the committed offsets
    /// it then reads say what is done.
    fn step(
        &self,
        calls: &dyn TxnCalls,
        what: &str,
        may_have_committed: bool,
        op: impl Fn() -> Result<(), CallFailed>,
    ) -> Result<Stepped, CommitError> {
        let started = Instant::now();
        loop {
            let result = {
                let _w = self
                    .watchdog
                    .watch(what, self.timing.step_wait + self.timing.stuck_margin);
                op()
            };
            let e = match result {
                Ok(()) => return Ok(Stepped::Done),
                Err(e) => e,
            };
            let abortable = !e.fatal && e.requires_abort && !may_have_committed;
            if !e.fatal && e.retriable && started.elapsed() < self.timing.budget {
                warn!(step = what, error = %e, "transaction step failed; retrying");
                std::thread::sleep(self.timing.retry_pause);
            } else if abortable && e.group_moved {
                return Ok(Stepped::GroupMoved(e));
            } else if abortable {
                // Redoing in process has let a result through twice under a broker
                // failover; a restart redoes from the committed offsets, as after
                // `kill -9`, which never has.
                warn!(step = what, error = %e, "transaction aborted; stopping");
                self.abort_open(calls)?;
                metrics().transactions.with_label_values(&["aborted"]).inc();
                return Err(CommitError::Fatal(format!(
                    "{what}: transaction aborted: {e}"
                )));
            } else {
                return Err(CommitError::Fatal(format!("{what}: {e}")));
            }
        }
    }

    /// Commits the open transaction with the offsets `offsets` gives (the caller holds the
    /// barrier).
    fn commit_open(
        &self,
        calls: &dyn TxnCalls,
        offsets: &mut dyn FnMut() -> Option<Offsets>,
    ) -> Result<(), CommitError> {
        let t = self.timing;
        if self.orphaned.load(Ordering::SeqCst) {
            self.abort_open(calls)?;
            metrics().transactions.with_label_values(&["aborted"]).inc();
            return Err(CommitError::Fatal(
                "a record was given up after its result was written; transaction aborted".into(),
            ));
        }
        let mut rewrites = 0;
        loop {
            let offsets = offsets();
            if offsets.is_none() && !self.written.load(Ordering::SeqCst) {
                return Ok(());
            }
            let Some(offsets) = &offsets else {
                break;
            };
            let sent = self.step(calls, "send offsets", false, || {
                calls.send_offsets(offsets, t.step_wait)
            })?;
            match sent {
                Stepped::Done => break,
                Stepped::GroupMoved(e) if rewrites < REWRITES => {
                    rewrites += 1;
                    warn!(error = %e, attempt = rewrites,
                        "the group moved on during a commit; writing the transaction again");
                    self.rewrite(calls)?;
                    std::thread::sleep(t.rewrite_pause * rewrites);
                }
                Stepped::GroupMoved(e) => {
                    warn!(step = "send offsets", error = %e, "transaction aborted; stopping");
                    self.abort_open(calls)?;
                    metrics().transactions.with_label_values(&["aborted"]).inc();
                    return Err(CommitError::Fatal(format!(
                        "send offsets: the group kept moving: {e}"
                    )));
                }
            }
        }
        if let Stepped::GroupMoved(e) =
            self.step(calls, "commit", true, || calls.commit(t.step_wait))?
        {
            return Err(CommitError::Fatal(format!("commit: {e}")));
        }
        self.written.store(false, Ordering::SeqCst);
        if let Ok(mut sent) = self.sent.lock() {
            sent.clear();
        }
        let _w = self.watchdog.watch("begin", t.step_wait + t.stuck_margin);
        calls
            .begin()
            .map_err(|e| CommitError::Fatal(format!("begin: {e}")))?;
        metrics()
            .transactions
            .with_label_values(&["committed"])
            .inc();
        Ok(())
    }

    /// Aborts the open transaction and writes what it held again in the next one.
    ///
    /// Only for a transaction refused because the group's generation moved on under a
    /// rebalance: this instance is still a member, no partition it holds has been handed
    /// over (a handover commits first), so nobody else has written results for these
    /// records. Writing them again (instead of redoing their deliveries, or stopping and
    /// leaving them to the next owner) keeps one committed result per record and sends no
    /// request twice.
    fn rewrite(&self, calls: &dyn TxnCalls) -> Result<(), CommitError> {
        let t = self.timing;
        let records = self.sent.lock().map(|s| s.clone()).unwrap_or_default();
        {
            let _w = self.watchdog.watch("abort", t.abort_wait + t.stuck_margin);
            calls
                .abort(t.abort_wait)
                .and_then(|()| calls.begin())
                .map_err(|e| CommitError::Fatal(format!("abort: {e}")))?;
        }
        metrics()
            .transactions
            .with_label_values(&["rewritten"])
            .inc();
        let _w = self
            .watchdog
            .watch("write again", t.step_wait + t.stuck_margin);
        calls
            .write_again(&records)
            .map_err(|e| CommitError::Fatal(format!("writing again: {e}")))
    }

    /// Aborts the open transaction and begins the next.
    fn abort_open(&self, calls: &dyn TxnCalls) -> Result<(), CommitError> {
        let t = self.timing;
        let _w = self.watchdog.watch("abort", t.abort_wait + t.stuck_margin);
        calls
            .abort(t.abort_wait)
            .and_then(|()| calls.begin())
            .map_err(|e| CommitError::Fatal(format!("abort: {e}")))?;
        self.written.store(false, Ordering::SeqCst);
        self.orphaned.store(false, Ordering::SeqCst);
        if let Ok(mut sent) = self.sent.lock() {
            sent.clear();
        }
        Ok(())
    }
}

/// What a write inside a transaction holds until its record settles. Dropped otherwise (the
/// write was abandoned half-way, at shutdown), it marks the transaction orphaned.
#[derive(Debug)]
pub struct TxnHold {
    _read: OwnedRwLockReadGuard<()>,
    txn: Arc<Transaction>,
    completed: bool,
}

impl Hold for TxnHold {
    fn settle(mut self: Box<Self>, completed: bool) {
        self.completed = completed;
    }
}

impl Drop for TxnHold {
    fn drop(&mut self) {
        if !self.completed {
            self.txn.orphaned.store(true, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Every branch of the decision table against a scripted producer: seconds, not the
    //! minutes of the broker and cluster fault runs.

    use std::collections::VecDeque;

    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::TopicPartitionList;

    use super::*;

    /// A producer whose transaction calls answer as scripted (then succeed), and that
    /// remembers every call.
    #[derive(Default)]
    struct Script {
        send_offsets: Mutex<VecDeque<CallFailed>>,
        commit: Mutex<VecDeque<CallFailed>>,
        calls: Mutex<Vec<String>>,
        written_again: Mutex<Vec<Sent>>,
    }

    impl Script {
        fn fail_offsets(&self, n: usize, how: CallFailed) {
            self.send_offsets.lock().unwrap().extend(vec![how; n]);
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        fn called(&self, what: &str) -> usize {
            self.calls().iter().filter(|c| *c == what).count()
        }

        fn next(&self, what: &str, queue: &Mutex<VecDeque<CallFailed>>) -> Result<(), CallFailed> {
            self.calls.lock().unwrap().push(what.to_owned());
            queue.lock().unwrap().pop_front().map_or(Ok(()), Err)
        }
    }

    impl TxnCalls for Script {
        fn begin(&self) -> Result<(), CallFailed> {
            self.calls.lock().unwrap().push("begin".into());
            Ok(())
        }

        fn send_offsets(&self, _: &Offsets, _: Duration) -> Result<(), CallFailed> {
            self.next("send offsets", &self.send_offsets)
        }

        fn commit(&self, _: Duration) -> Result<(), CallFailed> {
            self.next("commit", &self.commit)
        }

        fn abort(&self, _: Duration) -> Result<(), CallFailed> {
            self.calls.lock().unwrap().push("abort".into());
            Ok(())
        }

        fn write_again(&self, records: &[Sent]) -> Result<(), String> {
            self.calls.lock().unwrap().push("write again".into());
            self.written_again
                .lock()
                .unwrap()
                .extend_from_slice(records);
            Ok(())
        }
    }

    fn failed(retriable: bool, requires_abort: bool, group_moved: bool) -> CallFailed {
        CallFailed {
            fatal: false,
            retriable,
            requires_abort,
            group_moved,
            text: "scripted".into(),
        }
    }

    const FAST: Timing = Timing {
        step_wait: Duration::from_secs(10),
        budget: Duration::from_millis(300),
        retry_pause: Duration::from_millis(1),
        rewrite_pause: Duration::from_millis(1),
        abort_wait: Duration::from_secs(15),
        barrier_wait: Duration::from_millis(50),
        stuck_margin: Duration::from_secs(20),
    };

    fn transaction() -> Arc<Transaction> {
        Arc::new(Transaction::new(
            Watchdog::start("test", crate::fatal::Fatal::default()),
            8,
            FAST,
        ))
    }

    /// Offsets of one partition with a real group's metadata (made by a consumer that
    /// never connects anywhere that answers).
    fn offsets() -> Offsets {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9")
            .set("group.id", "transaction-test")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("in", 0, rdkafka::Offset::Offset(5))
            .unwrap();
        (tpl, consumer.group_metadata().unwrap())
    }

    /// One result written and settled in the open transaction.
    fn write(txn: &Arc<Transaction>, value: &str) {
        let read = futures::executor::block_on(txn.enter());
        Box::new(txn.hold(read)).settle(true);
        txn.sent(Sent {
            topic: "out".into(),
            key: value.into(),
            value: value.as_bytes().to_vec(),
        });
    }

    /// A transaction that holds one written result, and its scripted producer.
    fn written(value: &str) -> (Arc<Transaction>, Script) {
        let txn = transaction();
        write(&txn, value);
        (txn, Script::default())
    }

    /// Why a commit stopped the process (it must have).
    fn stopped(result: Result<(), CommitError>) -> String {
        match result {
            Err(CommitError::Fatal(why)) => why,
            other => panic!("the commit did not stop: {other:?}"),
        }
    }

    /// A commit whose progress is what the consumer gives every time it is asked (it is
    /// asked again after each rewrite).
    fn commit(txn: &Transaction, calls: &Script) -> Result<(), CommitError> {
        txn.commit(calls, &mut || Some(offsets()), &|| {})
    }

    #[test]
    fn nothing_written_and_nothing_to_commit_makes_no_call() {
        let (txn, calls) = (transaction(), Script::default());
        txn.commit(&calls, &mut || None, &|| {}).unwrap();
        assert!(calls.calls().is_empty());
    }

    #[test]
    fn a_commit_sends_the_offsets_commits_and_begins_the_next() {
        let (txn, calls) = written("a");
        commit(&txn, &calls).unwrap();
        assert_eq!(calls.calls(), ["send offsets", "commit", "begin"]);
        // The next commit has nothing to do.
        txn.commit(&calls, &mut || None, &|| {}).unwrap();
        assert_eq!(calls.calls().len(), 3);
    }

    #[test]
    fn a_retriable_failure_is_tried_again_within_the_budget() {
        let (txn, calls) = written("a");
        calls.fail_offsets(2, failed(true, false, false));
        commit(&txn, &calls).unwrap();
        assert_eq!(calls.called("send offsets"), 3);
        assert_eq!(calls.called("commit"), 1);
    }

    #[test]
    fn retries_past_the_budget_stop_and_nothing_commits_after() {
        let (txn, calls) = written("a");
        calls.fail_offsets(100_000, failed(true, false, false));
        assert!(stopped(commit(&txn, &calls)).starts_with("send offsets: "));
        assert_eq!(calls.called("commit"), 0);
        calls.send_offsets.lock().unwrap().clear();
        let again = stopped(commit(&txn, &calls));
        assert!(again.contains("an earlier transaction failed"), "{again}");
    }

    #[test]
    fn a_failure_that_requires_an_abort_aborts_and_stops() {
        let (txn, calls) = written("a");
        calls.fail_offsets(1, failed(false, true, false));
        assert!(stopped(commit(&txn, &calls)).contains("send offsets: transaction aborted"));
        assert_eq!(calls.calls(), ["send offsets", "abort", "begin"]);
    }

    #[test]
    fn a_group_that_moved_on_gets_the_transaction_written_again() {
        let (txn, calls) = written("a");
        write(&txn, "b");
        calls.fail_offsets(2, failed(false, true, true));
        commit(&txn, &calls).unwrap();
        assert_eq!(
            calls.calls(),
            [
                "send offsets",
                "abort",
                "begin",
                "write again",
                "send offsets",
                "abort",
                "begin",
                "write again",
                "send offsets",
                "commit",
                "begin",
            ]
        );
        let again: Vec<String> = calls
            .written_again
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.key.clone())
            .collect();
        assert_eq!(again, ["a", "b", "a", "b"]);
    }

    #[test]
    fn a_group_that_keeps_moving_is_given_up_after_the_rewrites() {
        let (txn, calls) = written("a");
        calls.fail_offsets(REWRITES as usize + 1, failed(false, true, true));
        assert!(stopped(commit(&txn, &calls)).contains("the group kept moving"));
        assert_eq!(calls.called("write again"), REWRITES as usize);
        assert_eq!(calls.called("commit"), 0);
    }

    #[test]
    fn a_commit_that_may_have_committed_stops_without_an_abort() {
        let (txn, calls) = written("a");
        calls
            .commit
            .lock()
            .unwrap()
            .push_back(failed(false, true, false));
        assert!(stopped(commit(&txn, &calls)).starts_with("commit: "));
        assert_eq!(calls.called("abort"), 0);
        assert_eq!(calls.called("begin"), 0);
    }

    #[test]
    fn a_fatal_producer_stops_even_on_a_retriable_error() {
        let (txn, calls) = written("a");
        let mut fatal = failed(true, true, true);
        fatal.fatal = true;
        calls.fail_offsets(1, fatal);
        assert_eq!(stopped(commit(&txn, &calls)), "send offsets: scripted");
        assert_eq!(calls.calls(), ["send offsets"]);
    }

    #[test]
    fn a_result_given_up_half_way_aborts_the_transaction() {
        let (txn, calls) = (transaction(), Script::default());
        let read = futures::executor::block_on(txn.enter());
        drop(txn.hold(read));
        let why = stopped(commit(&txn, &calls));
        assert!(
            why.contains("given up after its result was written"),
            "{why}"
        );
        assert_eq!(calls.calls(), ["abort", "begin"]);
    }

    #[test]
    fn a_write_still_under_way_keeps_the_commit_waiting() {
        let (txn, calls) = (transaction(), Script::default());
        let read = futures::executor::block_on(txn.enter());
        let hold = txn.hold(read);
        assert!(matches!(commit(&txn, &calls), Err(CommitError::Busy)));
        assert!(txn.held_back(), "new writes wait for the next commit");
        Box::new(hold).settle(true);
        commit(&txn, &calls).unwrap();
        assert!(!txn.held_back());
    }

    #[test]
    fn an_abort_throws_the_transaction_away_and_lets_writes_in() {
        let (txn, calls) = written("a");
        txn.abort(&calls).unwrap();
        assert_eq!(calls.calls(), ["abort", "begin"]);
        // Nothing is left to commit.
        txn.commit(&calls, &mut || None, &|| {}).unwrap();
        assert_eq!(calls.calls().len(), 2);
    }
}
