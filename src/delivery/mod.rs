//! Where an event is delivered: an HTTPS client built for untrusted destinations
//! (`client`), one attempt (`sender`), per-endpoint isolation (`endpoints`), and the step
//! that decides between done and "try again later" by the retry policy (`worker`).

pub mod auth;
pub mod client;
pub mod endpoints;
pub mod guard;
pub mod secrets;
pub mod sender;
pub mod worker;

pub use client::{build_client, build_lanes, ClientError, ClientOptions};
pub use endpoints::Endpoints;
pub use sender::{AttemptReport, Sender, Senders};
pub use worker::{Deliverer, DelivererError, Disabler, EventProgress, Step};
