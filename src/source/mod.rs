//! Where an event enters: the input topics, consumed as a consumer group, and the offset
//! bookkeeping that lets offsets advance only over completed work.

pub mod commit;
pub mod durable;
pub mod input;
pub mod offsets;
pub mod progress;
pub mod reach;

pub use input::{InputConsumer, InputError, InputRecord, Lease, RecordSource, Subscription};
pub use offsets::{OffsetTracker, PartitionKey};
