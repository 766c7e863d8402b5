//! Redelivery: selecting events already processed and queueing them on the redelivery
//! topic, where the live processor delivers them again with the current config. Used by the
//! `replay` command and by the administration API's redeliver endpoints; nothing here
//! touches the live consumer group's offsets or sends a request to a webhook.
//!
//! - [`selection`]: what a replay selects (input windows, offset ranges, failed outcomes,
//!   named records) and reading those records back;
//! - [`queue`]: queueing them under a replay id, resumable by that id.
//!
//! The pure rules (filters, windows, the redelivery record) are in
//! [`crate::domain::replay`].

pub mod queue;
pub mod selection;

use rdkafka::error::KafkaError;
use serde::Serialize;

use crate::domain::replay::SelectionError;

/// The header that carries the replay id on redelivery records.
pub const REPLAY_ID_HEADER: &str = "replay-id";

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Selection(#[from] SelectionError),
    #[error("{0}")]
    Refused(String),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// Counters of one phase of a replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Records read.
    pub scanned: u64,
    /// Records selected.
    pub matched: u64,
    /// Events queued.
    pub queued: u64,
}

/// Where a replay reports how far it got: a progress bar, a status an API serves, nothing.
pub trait Reporter {
    /// A phase starts that reads `total` records.
    fn phase(&mut self, _name: &'static str, _total: u64) {}
    /// After each record read.
    fn tick(&mut self, _counts: &Counts) {}
    /// The phase ended.
    fn done(&mut self, _counts: &Counts) {}
}

/// Reports nothing.
pub struct Quiet;

impl Reporter for Quiet {}

/// A new replay id: sortable by time, unique.
pub fn new_id() -> String {
    let stamp = time::OffsetDateTime::now_utc();
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "replay-{:04}{:02}{:02}T{:02}{:02}{:02}Z-{}",
        stamp.year(),
        u8::from(stamp.month()),
        stamp.day(),
        stamp.hour(),
        stamp.minute(),
        stamp.second(),
        &uuid[..8]
    )
}

/// Runs blocking replay work (librdkafka's synchronous calls) off the async runtime.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ReplayError> + Send + 'static,
) -> Result<T, ReplayError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ReplayError::Refused(format!("the replay task ended: {e}")))?
}
