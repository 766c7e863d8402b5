//! Where an event is delivered: an HTTPS client built for untrusted destinations, one
//! attempt at a time, and the worker that retries by the policy, re-reading config each time.

pub mod client;
pub mod sender;
pub mod worker;

pub use client::{build_client, ClientError};
pub use sender::{AttemptReport, Sender};
pub use worker::Deliverer;
