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

use crate::kafka::TopicSpec;
use crate::settings::Settings;

/// The topics a reader of webhook health follows: the trackers' compacted state and the
/// operational events.
#[derive(Debug, Clone)]
pub struct HealthTopics {
    pub state: String,
    pub events: String,
}

/// Makes the health tracking's topics when it is on (signals, operational events, the
/// compacted state), and names the two the admin API reads; `None` when it is off.
pub async fn ensure_topics(
    settings: &Settings,
) -> Result<Option<HealthTopics>, rdkafka::error::KafkaError> {
    let Some(signals) = settings.health_signal_topic() else {
        return Ok(None);
    };
    let spec = TopicSpec {
        partitions: settings.health.partitions.max(1),
        ..TopicSpec::from_settings(settings)
    };
    let kafka = &settings.kafka;
    let topics = HealthTopics {
        state: settings.health_state_topic(),
        events: settings.health.events_topic.clone(),
    };
    crate::kafka::ensure_topics(kafka, &[signals], spec).await?;
    crate::kafka::ensure_topics(kafka, std::slice::from_ref(&topics.events), spec).await?;
    let state = TopicSpec {
        compact: true,
        ..spec
    };
    crate::kafka::ensure_topics(kafka, std::slice::from_ref(&topics.state), state).await?;
    Ok(Some(topics))
}
