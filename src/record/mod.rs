//! Where an event's result is recorded: the outcome topic.

pub mod outcomes;

pub use outcomes::{OutcomeSink, RecordError};
