//! Where an event's result is recorded: its terminal outcome on the outcome topic, or, while
//! it waits for another attempt, a parked record on a retry-tier topic.

pub mod outcomes;

pub use outcomes::{RecordError, Recorder};
