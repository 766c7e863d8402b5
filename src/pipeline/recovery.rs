//! Riding out faults in process. When the processor's parts cannot go on (an aborted
//! transaction, a refused commit after a rejoin, a fenced or fatal producer, a stuck
//! transaction call, a panicked record task) they stop without committing, and the
//! pipeline starts them again: new consumers join the groups and resume from the committed
//! offsets (with their progress metadata, so completed work is skipped), new producers
//! register the same transactional ids (fencing the old ones and aborting what they left
//! open), and the config cache stays. That is what a supervisor's restart did, without the
//! process exit: the work since the last commit is redone, nothing is lost, and exactly
//! once no outcome is committed twice.
//!
//! This module is the policy, pure: how long to wait before starting again (quickly at
//! first, backing off while faults follow each other), and when to stop for good: faults
//! that keep coming back (a configuration error, another live instance with the same
//! transactional id fencing this one, the broker refusing authorisation) end the process
//! with the cause, as before.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::fatal::FatalCause;

/// Faults counted to decide whether they keep coming back.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Recoveries allowed within [`WINDOW`]; one more stops the process.
pub const MAX_IN_WINDOW: usize = 8;
/// The longest wait before starting again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What to do after a fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Start the parts again after this wait.
    Recover(Duration),
    /// Faults keep coming back: stop, with why.
    Stop(String),
}

/// The recent recoveries.
#[derive(Debug, Default)]
pub struct Recoveries {
    recent: VecDeque<Instant>,
    /// When a producer of this process last met an old epoch (see [`old_epoch`]).
    old_epoch_at: Option<Instant>,
}

/// Two old-epoch faults closer than this: another live instance.
pub const FENCED_AGAIN_WITHIN: Duration = Duration::from_secs(60);

/// Whether `cause` says another producer registered this one's transactional id. Only a
/// live producer's fault reaches the pipeline, and this process registers a new producer
/// only after letting go of the old one: so it is another live instance with the same id,
/// and the two would only fence each other in turn. (A transaction the broker timed out
/// reads otherwise: an old epoch, which starting again rides out.)
fn fenced(cause: &FatalCause) -> bool {
    let text = cause.to_string().to_lowercase();
    [
        "fenced by a newer instance",
        "fences the current one",
        "producer fenced",
    ]
    .iter()
    .any(|t| text.contains(t))
}

/// Whether `cause` is an operation with an old producer epoch: once, the broker may have
/// timed a transaction out; again soon after starting anew, another live instance is
/// registering the same id in turn.
fn old_epoch(cause: &FatalCause) -> bool {
    cause.to_string().to_lowercase().contains("old epoch")
}

impl Recoveries {
    /// Decides about a fault with `cause` at `now`, and counts it when it recovers.
    pub fn next(&mut self, cause: &FatalCause, now: Instant) -> Next {
        if let FatalCause::Misconfigured(_) = cause {
            return Next::Stop(format!("a setting the broker refuses: {cause}"));
        }
        let again = old_epoch(cause)
            && self
                .old_epoch_at
                .is_some_and(|at| now.duration_since(at) < FENCED_AGAIN_WITHIN);
        if fenced(cause) || again {
            return Next::Stop(format!(
                "another live instance uses this transactional id ({cause})"
            ));
        }
        if old_epoch(cause) {
            self.old_epoch_at = Some(now);
        }
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= MAX_IN_WINDOW {
            return Next::Stop(format!(
                "{} faults within {} s, the last: {cause}",
                self.recent.len() + 1,
                WINDOW.as_secs()
            ));
        }
        // The first fault in a while starts again at once; faults in a row wait 1 s, 2 s,
        // 4 s... (the broker is likely still away), up to MAX_BACKOFF.
        let in_a_row = self
            .recent
            .iter()
            .rev()
            .take_while(|t| now.duration_since(**t) < MAX_BACKOFF * 2)
            .count();
        self.recent.push_back(now);
        let wait = match in_a_row {
            0 => Duration::ZERO,
            n => Duration::from_secs(1 << (n - 1).min(5)).min(MAX_BACKOFF),
        };
        Next::Recover(wait)
    }

    /// Recoveries counted within the window (for the log).
    pub fn recent(&self) -> usize {
        self.recent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aborted() -> FatalCause {
        FatalCause::Commit {
            consumer: "input",
            reason: "transaction aborted".into(),
        }
    }

    #[test]
    fn a_lone_fault_recovers_at_once_and_faults_in_a_row_back_off() {
        let mut r = Recoveries::default();
        let t = Instant::now();
        assert_eq!(r.next(&aborted(), t), Next::Recover(Duration::ZERO));
        let s = Duration::from_secs;
        assert_eq!(r.next(&aborted(), t + s(1)), Next::Recover(s(1)));
        assert_eq!(r.next(&aborted(), t + s(3)), Next::Recover(s(2)));
        assert_eq!(r.next(&aborted(), t + s(7)), Next::Recover(s(4)));
        // A fault long after the last ones starts again at once.
        assert_eq!(
            r.next(&aborted(), t + s(200)),
            Next::Recover(Duration::ZERO)
        );
    }

    #[test]
    fn a_setting_the_broker_refuses_stops_at_once() {
        let mut r = Recoveries::default();
        let refused = FatalCause::Misconfigured("Broker: Invalid topic".into());
        assert!(matches!(r.next(&refused, Instant::now()), Next::Stop(_)));
    }

    #[test]
    fn fenced_by_a_newer_instance_stops_and_an_old_epoch_recovers() {
        let mut r = Recoveries::default();
        let t = Instant::now();
        let epoch = FatalCause::Producer(
            "Broker: Producer attempted an operation with an old epoch".into(),
        );
        assert!(matches!(r.next(&epoch, t), Next::Recover(_)));
        // The same soon after starting anew: another instance registering the id in turn.
        let soon = t + Duration::from_secs(5);
        let mut again = Recoveries::default();
        assert!(matches!(again.next(&epoch, t), Next::Recover(_)));
        assert!(matches!(again.next(&epoch, soon), Next::Stop(_)));
        let broker = FatalCause::Producer(
            "Broker: There is a newer producer with the same transactionalId which fences the current one".into(),
        );
        assert!(matches!(
            Recoveries::default().next(&broker, t),
            Next::Stop(_)
        ));
        let fenced = FatalCause::Commit {
            consumer: "input",
            reason: "Local: This instance has been fenced by a newer instance".into(),
        };
        match r.next(&fenced, t + Duration::from_secs(1)) {
            Next::Stop(why) => assert!(why.contains("another live instance"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn faults_that_keep_coming_back_stop_the_process_with_their_cause() {
        let mut r = Recoveries::default();
        let t = Instant::now();
        let fenced = FatalCause::Producer("broker went away".into());
        for i in 0..MAX_IN_WINDOW {
            let at = t + Duration::from_secs(20 * i as u64);
            assert!(matches!(r.next(&fenced, at), Next::Recover(_)), "{i}");
        }
        let at = t + Duration::from_secs(20 * MAX_IN_WINDOW as u64);
        match r.next(&fenced, at) {
            Next::Stop(why) => assert!(why.contains("broker went away"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Outside the window they count no more.
        let later = at + WINDOW + Duration::from_secs(1);
        assert_eq!(r.next(&fenced, later), Next::Recover(Duration::ZERO));
    }
}
