//! Liveness and readiness, as the probes report them.
//!
//! Alive: the process serves HTTP (a wedged runtime fails the probe by not answering).
//! Ready: the config cache has caught up with the config topic and the input consumer has
//! joined its group (it holds partitions, or the group has none to give it: idle but
//! ready), and shutdown has not begun. A processor that is not ready never delivers with a
//! stale config: it is still reading the config topic.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Health {
    caught_up: AtomicBool,
    joined: AtomicBool,
    stopping: AtomicBool,
    /// No broker of the cluster can be reached.
    cut_off: AtomicBool,
}

impl Health {
    pub fn set_caught_up(&self) {
        self.caught_up.store(true, Ordering::Relaxed);
    }

    pub fn set_joined(&self) {
        self.joined.store(true, Ordering::Relaxed);
    }

    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether the cluster can be reached.
    pub fn set_reachable(&self, reachable: bool) {
        self.cut_off.store(!reachable, Ordering::Relaxed);
    }

    /// The processor's parts start again after a fault: not ready until they have joined.
    pub fn set_recovering(&self) {
        self.joined.store(false, Ordering::Relaxed);
        self.stopping.store(false, Ordering::Relaxed);
    }

    /// `Ok` when ready, else why not.
    pub fn ready(&self) -> Result<(), &'static str> {
        if self.stopping.load(Ordering::Relaxed) {
            Err("shutting down")
        } else if !self.caught_up.load(Ordering::Relaxed) {
            Err("config cache catching up")
        } else if !self.joined.load(Ordering::Relaxed) {
            Err("joining the consumer group")
        } else if self.cut_off.load(Ordering::Relaxed) {
            Err("no broker can be reached")
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_between_catching_up_and_shutdown() {
        let h = Health::default();
        assert_eq!(h.ready(), Err("config cache catching up"));
        h.set_joined();
        assert_eq!(h.ready(), Err("config cache catching up"));
        h.set_caught_up();
        assert_eq!(h.ready(), Ok(()));
        h.set_stopping();
        assert_eq!(h.ready(), Err("shutting down"));
        h.set_recovering();
        assert_eq!(h.ready(), Err("joining the consumer group"));
        h.set_joined();
        assert_eq!(h.ready(), Ok(()));
        h.set_reachable(false);
        assert_eq!(h.ready(), Err("no broker can be reached"));
        h.set_reachable(true);
        assert_eq!(h.ready(), Ok(()));
    }
}
