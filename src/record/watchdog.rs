//! A deadline on blocking Kafka transaction calls. librdkafka can block in
//! `send_offsets_to_transaction` far past the timeout it is given while the group
//! coordinator is away or has moved (librdkafka issues #5456 and #5511), and a thread
//! blocked in C cannot be cancelled. A call still running at its deadline raises the
//! processor's fatal condition ([`FatalCause::Stuck`]): the pipeline abandons the producer
//! where it hangs and starts its parts again in process, and the new producer's
//! `init_transactions` (same transactional id) fences it and settles what was left open,
//! as after a crash, which exactly once loses nothing and duplicates no outcome.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tracing::error;

use crate::domain::time::now_ms;
use crate::fatal::{Fatal, FatalCause};

/// Exit status of a process whose stuck call nothing took over (a final commit at
/// shutdown that hangs): its supervisor settles it, as after a crash.
pub const EXIT_STUCK: i32 = 3;

/// How long a stuck call may hang after its fatal condition was raised before the process
/// ends, unless a recovery abandoned the producer meanwhile ([`abandoned`]): a running
/// pipeline abandons it within milliseconds; a shutdown's final commit is not kept from
/// ending much past its own deadline.
const LAST_RESORT: Duration = Duration::from_secs(10);

/// Recoveries that abandoned their producers (process-wide).
static ABANDONED: AtomicU64 = AtomicU64::new(0);

/// The pipeline started its parts again, leaving the producers of the old ones where they
/// hang: their watchdogs stop watching.
pub fn abandoned() {
    ABANDONED.fetch_add(1, Ordering::SeqCst);
}

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
    /// Starts the watching thread; it ends when the returned handle is dropped, or after it
    /// raised `fatal`.
    pub fn start(name: &str, fatal: Fatal) -> Arc<Watchdog> {
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
                        "a Kafka transaction call is stuck past its deadline; starting again with a new producer"
                    );
                    fatal.raise(FatalCause::Stuck {
                        producer: dog.name.clone(),
                        call,
                    });
                    dog.last_resort(ABANDONED.load(Ordering::SeqCst));
                    return;
                }
            });
        if let Err(e) = spawned {
            error!(error = %e, "cannot start the transaction watchdog");
        }
        dog
    }

    /// After the fatal condition: ends the process if the call still hangs
    /// [`LAST_RESORT`] later and no recovery took the producer over.
    fn last_resort(&self, recoveries: u64) {
        let until = now_ms() + LAST_RESORT.as_millis() as u64;
        while now_ms() < until {
            std::thread::sleep(TICK);
            if ABANDONED.load(Ordering::SeqCst) != recoveries || !self.overdue(now_ms()) {
                return;
            }
        }
        error!(
            producer = self.name,
            "a stuck Kafka transaction call was not taken over; exiting for the supervisor"
        );
        std::process::exit(EXIT_STUCK);
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
