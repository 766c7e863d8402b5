//! A condition the process cannot recover from in place (a fenced producer, a record task
//! that panicked): it stops with a non-zero status so that its supervisor restarts it, and
//! the work after the last commit is redone. Never a silent spin, never a hole in a
//! partition's commit point.

use std::sync::Arc;

use tokio::sync::watch;

/// Raised once, by whoever meets the condition; the pipeline waits on it.
#[derive(Clone)]
pub struct Fatal {
    tx: Arc<watch::Sender<Option<String>>>,
}

impl Default for Fatal {
    fn default() -> Self {
        Fatal {
            tx: Arc::new(watch::channel(None).0),
        }
    }
}

impl Fatal {
    /// Raises the condition; the first reason is kept.
    pub fn raise(&self, why: impl Into<String>) {
        let why = why.into();
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

    /// Resolves with the reason once the condition is raised.
    pub async fn raised(&self) -> String {
        let mut rx = self.tx.subscribe();
        let why = match rx.wait_for(Option::is_some).await {
            Ok(why) => why.clone(),
            // The sender lives in `self`: it cannot be dropped while this waits.
            Err(_) => None,
        };
        why.unwrap_or_default()
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
        fatal.raise("producer fenced");
        fatal.raise("later");
        assert_eq!(waiter.await.unwrap(), "producer fenced");
        assert_eq!(fatal.raised().await, "producer fenced");
    }
}
