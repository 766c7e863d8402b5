//! A deadline on blocking Kafka transaction calls. librdkafka can block in
//! `send_offsets_to_transaction` far past the timeout it is given while the group
//! coordinator is away or has moved (librdkafka issues #5456 and #5511), and a thread
//! blocked in C cannot be cancelled. A call still running at its deadline ends the process
//! (exit status [`EXIT_STUCK`]): its supervisor restarts it, and the restart's
//! `init_transactions` settles what was left open, as after a crash, which exactly once
//! loses nothing and duplicates no outcome.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tracing::error;

use crate::domain::time::now_ms;

/// Exit status of a process ended by a stuck transaction call.
pub const EXIT_STUCK: i32 = 3;

/// How often the deadline is looked at.
const TICK: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct Watchdog {
    name: String,
    /// Unix ms by which the call under way must return; 0: none under way.
    deadline: AtomicU64,
    /// What the call under way is (index into [`CALLS`]).
    call: AtomicU64,
}

/// The calls watched, by index (an atomic holds which one is under way).
const CALLS: [&str; 5] = [
    "send offsets",
    "commit",
    "abort",
    "begin",
    "init transactions",
];

impl Watchdog {
    /// Starts the watching thread; it ends when the returned handle is dropped.
    pub fn start(name: &str) -> Arc<Watchdog> {
        let dog = Arc::new(Watchdog {
            name: name.to_owned(),
            deadline: AtomicU64::new(0),
            call: AtomicU64::new(0),
        });
        let weak: Weak<Watchdog> = Arc::downgrade(&dog);
        let spawned = std::thread::Builder::new()
            .name("txn-watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                let Some(dog) = weak.upgrade() else {
                    return;
                };
                if dog.overdue(now_ms()) {
                    let call = CALLS
                        .get(dog.call.load(Ordering::SeqCst) as usize)
                        .copied()
                        .unwrap_or("?");
                    error!(
                        producer = dog.name,
                        call,
                        "a Kafka transaction call is stuck past its deadline; exiting for the supervisor to restart the process"
                    );
                    std::process::exit(EXIT_STUCK);
                }
            });
        if let Err(e) = spawned {
            error!(error = %e, "cannot start the transaction watchdog");
        }
        dog
    }

    fn overdue(&self, now: u64) -> bool {
        let deadline = self.deadline.load(Ordering::SeqCst);
        deadline != 0 && now > deadline
    }

    /// Watches one call (`what`, one of [`CALLS`]) for `limit`, until the guard drops.
    pub fn watch(&self, what: &str, limit: Duration) -> Watched<'_> {
        let index = CALLS.iter().position(|c| *c == what).unwrap_or(0);
        self.call.store(index as u64, Ordering::SeqCst);
        self.deadline
            .store(now_ms() + limit.as_millis() as u64, Ordering::SeqCst);
        Watched(self)
    }
}

/// A call under watch; dropping it ends the watch.
pub struct Watched<'a>(&'a Watchdog);

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        self.0.deadline.store(0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_call_under_way_past_its_deadline_is_overdue() {
        let dog = Watchdog {
            name: "t".into(),
            deadline: AtomicU64::new(0),
            call: AtomicU64::new(0),
        };
        assert!(!dog.overdue(now_ms() + 1_000_000), "nothing under way");
        {
            let _w = dog.watch("commit", Duration::from_secs(30));
            assert!(!dog.overdue(now_ms()));
            assert!(dog.overdue(now_ms() + 31_000));
        }
        assert!(!dog.overdue(now_ms() + 31_000), "the call returned");
    }
}
