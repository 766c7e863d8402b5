//! The gate between writes and commits of one transaction (exactly once).
//!
//! A write holds the gate for reading until its record settles; a commit takes it for
//! writing, so it sees every written record's offset as done and no write is half-way.
//! While a commit waits for the writes under way, new ones wait at the gate.
//!
//! The open transaction also holds at most a set number of writes
//! (`kafka.max_transaction_records`): the write that fills it closes the gate and asks for a
//! commit straight away. So
//! a burst (a backlog after a stall) is committed in pieces, and a transaction lost to a
//! fault takes no more than that with it.
//!
//! A commit that gives up waiting (a write is stuck: the broker is away, a leader is
//! moving) leaves the gate closed. New writes keep waiting until a commit goes through, so
//! the open transaction holds no more than the writes that were under way: if it is lost
//! (the process ends, a transaction call hangs), what is redone is bounded by the requests
//! in flight, not by how long the trouble lasted.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

#[derive(Debug)]
pub(super) struct Gate {
    lock: Arc<RwLock<()>>,
    /// New writes wait: a commit is under way, one gave up waiting for the writes, or the
    /// transaction is full.
    closed: AtomicBool,
    reopened: Notify,
    /// Writes the open transaction may hold.
    cap: usize,
    /// Writes let in since the last commit.
    entered: AtomicUsize,
    /// Notified when the open transaction is full: it should be committed now.
    filled: Arc<Notify>,
}

impl Gate {
    pub(super) fn new(cap: usize) -> Self {
        Gate {
            lock: Arc::default(),
            closed: AtomicBool::new(false),
            reopened: Notify::new(),
            cap: cap.max(1),
            entered: AtomicUsize::new(0),
            filled: Arc::new(Notify::new()),
        }
    }

    /// Notified (once per transaction, the permit kept until someone waits) when the open
    /// transaction is full.
    pub(super) fn filled(&self) -> Arc<Notify> {
        self.filled.clone()
    }

    /// Waits until the gate is open and the transaction has room, then holds the gate for
    /// one write (until the guard drops).
    pub(super) async fn enter(&self) -> OwnedRwLockReadGuard<()> {
        loop {
            // Registered before the check, so a reopening in between is not missed.
            let reopened = self.reopened.notified();
            tokio::pin!(reopened);
            reopened.as_mut().enable();
            if !self.closed.load(Ordering::SeqCst) {
                let cap = self.cap;
                let admitted = self
                    .entered
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                        (n < cap).then_some(n + 1)
                    });
                // Full: the write that filled it has closed the gate (or is about to).
                if let Ok(n) = admitted {
                    if n + 1 == cap {
                        self.closed.store(true, Ordering::SeqCst);
                        self.filled.notify_one();
                    }
                    break;
                }
            }
            reopened.await;
        }
        self.lock.clone().read_owned().await
    }

    /// Closes the gate and waits up to `wait` for the writes under way to settle. Blocking,
    /// and runtime-free: it runs inside consumer callbacks too.
    ///
    /// With the writes settled, the gate reopens behind the returned guard (new writes
    /// queue for it and go on once the commit drops it). Otherwise (`None`) the gate stays
    /// closed until a later call succeeds or [`Gate::reopen`].
    pub(super) fn drain(&self, wait: Duration) -> Option<OwnedRwLockWriteGuard<()>> {
        self.closed.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + wait;
        loop {
            match self.lock.clone().try_write_owned() {
                Ok(guard) => {
                    self.reopen();
                    return Some(guard);
                }
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                Err(_) => return None,
            }
        }
    }

    /// Lets new writes in again, into the next transaction (the open one is being
    /// committed behind a drained gate, or was aborted).
    pub(super) fn reopen(&self) {
        self.entered.store(0, Ordering::SeqCst);
        self.closed.store(false, Ordering::SeqCst);
        self.reopened.notify_waiters();
    }

    /// Whether new writes wait (for a commit, when none is under way).
    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[tokio::test]
    async fn a_commit_waits_for_the_write_under_way_and_holds_new_ones_back() {
        let gate = Gate::new(8);
        let under_way = gate.enter().await;
        assert!(
            gate.drain(Duration::from_millis(20)).is_none(),
            "a write is under way"
        );
        // Gave up: the gate stays closed, so the transaction does not grow meanwhile.
        assert!(gate.is_closed());
        let mut next = Box::pin(gate.enter());
        assert!((&mut next).now_or_never().is_none(), "a new write waits");
        drop(under_way);
        let commit = gate
            .drain(Duration::from_millis(20))
            .expect("nothing under way");
        assert!(!gate.is_closed());
        assert!(
            (&mut next).now_or_never().is_none(),
            "the write waits for the commit to finish"
        );
        drop(commit);
        assert!(next.now_or_never().is_some(), "then it goes in");
    }

    #[tokio::test]
    async fn an_abort_lets_writes_in_again() {
        let gate = Gate::new(8);
        let _stuck = gate.enter().await;
        assert!(gate.drain(Duration::from_millis(1)).is_none());
        let mut next = Box::pin(gate.enter());
        assert!((&mut next).now_or_never().is_none());
        gate.reopen();
        assert!(next.now_or_never().is_some());
    }

    #[tokio::test]
    async fn a_full_transaction_holds_writes_back_and_asks_for_a_commit() {
        let gate = Gate::new(3);
        let filled = gate.filled();
        let mut asked = Box::pin(filled.notified());
        let mut writes = Vec::new();
        for _ in 0..2 {
            writes.push(gate.enter().await);
        }
        assert!((&mut asked).now_or_never().is_none(), "room for one more");
        writes.push(gate.enter().await);
        assert!((&mut asked).now_or_never().is_some(), "full: commit now");
        let mut fourth = Box::pin(gate.enter());
        assert!(
            (&mut fourth).now_or_never().is_none(),
            "it waits for the commit"
        );
        drop(writes);
        let commit = gate.drain(Duration::from_millis(20)).expect("settled");
        drop(commit);
        assert!(
            fourth.now_or_never().is_some(),
            "the next transaction has room"
        );
        let mut more = Vec::new();
        for _ in 0..2 {
            more.push(gate.enter().now_or_never().expect("room"));
        }
        assert!(
            Box::pin(gate.enter()).now_or_never().is_none(),
            "the fourth, fifth and sixth fill the next one"
        );
    }
}
