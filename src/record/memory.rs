//! An in-memory [`RecordSink`] for unit tests: keeps what was written, in order.

use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;

use super::{RecordSink, Refused};
use crate::domain::health::Signal;
use crate::domain::outcome::Outcome;
use crate::domain::parked::Parked;
use crate::source::InputRecord;

#[derive(Default)]
pub struct MemoryRecorder {
    pub outcomes: Mutex<Vec<Outcome>>,
    pub parked: Mutex<Vec<(Parked, Duration)>>,
    pub signals: Mutex<Vec<Signal>>,
}

impl MemoryRecorder {
    fn signal(&self, signal: Option<&Signal>) {
        if let Some(s) = signal {
            self.signals.lock().unwrap().push(s.clone());
        }
    }
}

impl RecordSink for MemoryRecorder {
    fn outcome<'a>(
        &'a self,
        _: &'a InputRecord,
        outcome: &'a Outcome,
        signal: Option<&'a Signal>,
    ) -> BoxFuture<'a, ()> {
        self.signal(signal);
        self.outcomes.lock().unwrap().push(outcome.clone());
        Box::pin(async {})
    }

    fn park<'a>(
        &'a self,
        _: &'a InputRecord,
        parked: &'a Parked,
        delay: Duration,
        signal: Option<&'a Signal>,
    ) -> BoxFuture<'a, Result<(), Refused>> {
        self.signal(signal);
        self.parked.lock().unwrap().push((parked.clone(), delay));
        Box::pin(async { Ok(()) })
    }
}
