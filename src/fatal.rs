//! A condition the processor's parts cannot go on from (an aborted transaction, a fenced
//! producer, a stuck transaction call, a record task that panicked): the parts stop without
//! committing, and the pipeline starts them again in process from the last commit
//! (`pipeline/recovery.rs`), so the work after it is redone. Never a silent spin, never a
//! hole in a partition's commit point.

use std::sync::Arc;

use tokio::sync::watch;

/// Why the process cannot go on in place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FatalCause {
    /// A loop's progress could not be committed (exactly once: its transaction failed).
    #[error("{consumer} commit: {reason}")]
    Commit {
        consumer: &'static str,
        reason: String,
    },
    /// Exactly once, the commit on a revocation failed: the open transaction holds results
    /// of partitions handed over.
    #[error("{consumer} revocation: {reason}")]
    Revocation {
        consumer: &'static str,
        reason: String,
    },
    /// A record task panicked: its offset would stay open for good.
    #[error("a {consumer} record task failed: {reason}")]
    TaskFailed {
        consumer: &'static str,
        reason: String,
    },
    /// The producer cannot go on (fenced, a fatal idempotence error).
    #[error("producer: {0}")]
    Producer(String),
    /// The broker refuses what the settings ask for (an invalid topic name, acks or
    /// compression): starting again cannot help.
    #[error("producer: {0}")]
    Misconfigured(String),
    /// A blocking transaction call is past its deadline (librdkafka issues #5456, #5511):
    /// the producer is abandoned where it hangs, and never called again.
    #[error("producer {producer}: {call} is stuck past its deadline")]
    Stuck {
        producer: String,
        call: &'static str,
    },
}

impl FatalCause {
    /// A short name of the kind of fault, for `feedback_webhooks_recoveries_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            FatalCause::Commit { .. } => "commit",
            FatalCause::Revocation { .. } => "revocation",
            FatalCause::TaskFailed { .. } => "task_failed",
            FatalCause::Producer(_) => "producer",
            FatalCause::Misconfigured(_) => "misconfigured",
            FatalCause::Stuck { .. } => "stuck",
        }
    }
}

/// Raised once, by whoever meets the condition; the pipeline waits on it.
#[derive(Clone)]
pub struct Fatal {
    tx: Arc<watch::Sender<Option<FatalCause>>>,
}

impl Default for Fatal {
    fn default() -> Self {
        Fatal {
            tx: Arc::new(watch::channel(None).0),
        }
    }
}

impl Fatal {
    /// Raises the condition; the first cause is kept.
    pub fn raise(&self, why: FatalCause) {
        self.tx.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(why);
            true
        });
    }

    pub fn is_raised(&self) -> bool {
        self.tx.borrow().is_some()
    }

    /// Whether the condition was raised because a call hangs: its client must not be
    /// called again.
    pub fn is_stuck(&self) -> bool {
        matches!(*self.tx.borrow(), Some(FatalCause::Stuck { .. }))
    }

    /// Resolves with the cause once the condition is raised.
    pub async fn raised(&self) -> FatalCause {
        let mut rx = self.tx.subscribe();
        let why = match rx.wait_for(Option::is_some).await {
            Ok(why) => why.clone(),
            // The sender lives in `self`: it cannot be dropped while this waits.
            Err(_) => None,
        };
        why.unwrap_or(FatalCause::Producer(String::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_is_kept_and_waiters_see_it() {
        let fatal = Fatal::default();
        let waiter = tokio::spawn({
            let fatal = fatal.clone();
            async move { fatal.raised().await }
        });
        assert!(!fatal.is_raised());
        fatal.raise(FatalCause::Producer("fenced".into()));
        fatal.raise(FatalCause::Commit {
            consumer: "input",
            reason: "later".into(),
        });
        let first = FatalCause::Producer("fenced".into());
        assert_eq!(waiter.await.unwrap(), first);
        assert_eq!(fatal.raised().await.to_string(), "producer: fenced");
    }
}
