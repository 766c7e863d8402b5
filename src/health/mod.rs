//! Webhook health, worked out in the stream. Each delivery step writes a small signal
//! (`domain::health::Signal`) keyed by its webhook, in the same transaction as its outcome
//! or parked record; the health trackers (one per processor, sharing the signal topic's
//! partitions as the consumer group `{group_id}-health`) keep each webhook's state, write
//! it to a compacted state topic and announce its changes on the operational-events
//! topic, all three in one transaction with the signals' offsets (`tracker`). A new owner
//! of a partition reads its state back from the state topic first, so the state survives
//! restarts and rebalances and is the same whichever instance works it out.

pub mod tracker;

pub use tracker::{Tracker, TrackerError, TrackerOptions};
