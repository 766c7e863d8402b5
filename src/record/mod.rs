//! Where an event's result is recorded: its terminal outcome on the outcome topic, or, while
//! it waits for another attempt, a parked record on a retry-tier topic.

mod gate;
#[cfg(test)]
pub mod memory;
pub mod outcomes;
mod recorders;
pub mod transaction;
pub mod watchdog;

use std::time::Duration;

use futures::future::BoxFuture;

pub use outcomes::{RecordError, Recorder, RecorderOptions, Refused};
pub use recorders::start_recorders;

use crate::domain::health::Signal;
use crate::domain::outcome::Outcome;
use crate::domain::parked::Parked;
use crate::source::InputRecord;

/// Where the pipeline writes what became of a record: Kafka in the processor, memory in
/// unit tests. Each call resolves once the write is durable, which is what allows the
/// offset of the record behind it to be committed. `record` is the consumed record the
/// write is the result of: exactly once, nothing is written for a record that is no longer
/// this instance's, and the write holds the transaction open until the record settles.
pub trait RecordSink: Send + Sync {
    /// Writes one terminal outcome, and with it what the step tells the webhook's health
    /// tracker (`signal`).
    fn outcome<'a>(
        &'a self,
        record: &'a InputRecord,
        outcome: &'a Outcome,
        signal: Option<&'a Signal>,
    ) -> BoxFuture<'a, ()>;

    /// Parks an event for another attempt after `delay`; `Err` when the broker refuses the
    /// parked record for good (the caller ends the event instead).
    fn park<'a>(
        &'a self,
        record: &'a InputRecord,
        parked: &'a Parked,
        delay: Duration,
        signal: Option<&'a Signal>,
    ) -> BoxFuture<'a, Result<(), Refused>>;
}
