//! What an operator sees of a running processor: Prometheus metrics, the health and
//! readiness probes, and the small HTTP server that serves them.

pub mod health;
pub mod logging;
pub mod metrics;
pub mod server;

pub use health::Health;
pub use metrics::metrics;
