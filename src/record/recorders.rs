//! The recorders of the processor's three consumer loops (input, retry, replay), made from
//! the settings.

use std::sync::Arc;

use tracing::{info, warn};

use super::{RecordError, Recorder, RecorderOptions};
use crate::fatal::Fatal;
use crate::kafka::internal_record_limit;
use crate::settings::{Guarantee, Settings};

/// One recorder per loop, in the order input, retry, replay. Exactly once, each loop writes
/// in transactions of its own (`{transactional id}-input`, `-retry`, `-replay`), so a loop
/// that loses its assignment aborts only its own results; a transaction holds at most
/// `kafka.max_transaction_records` results. At least once, the loops share one producer.
pub async fn start_recorders(
    settings: &Settings,
    tiers: &[String],
    outcome_limit: usize,
    fatal: &Fatal,
) -> Result<[Arc<Recorder>; 3], RecordError> {
    let start = |transactional_id: Option<String>| {
        let (kafka, fatal) = (settings.kafka.clone(), fatal.clone());
        let options = (
            tiers.to_vec(),
            internal_record_limit(settings.delivery.max_event_bytes),
            settings.kafka.max_transaction_records,
            settings.health_signal_topic(),
        );
        async move {
            // Registering a transactional id waits for the broker: off the async workers.
            tokio::task::spawn_blocking(move || {
                let (tier_topics, max_record_bytes, max_transaction_records, signal_topic) =
                    options;
                let options = RecorderOptions {
                    tier_topics,
                    signal_topic,
                    max_record_bytes,
                    outcome_limit,
                    transactional_id: transactional_id.as_deref(),
                    max_transaction_records,
                    fatal,
                };
                Recorder::new(&kafka, options).map(Arc::new)
            })
            .await
            .map_err(|e| RecordError::Start(e.to_string()))?
        }
    };
    if settings.kafka.processing_guarantee == Guarantee::ExactlyOnce {
        let prefix = settings.transactional_id();
        info!(transactional_id = prefix, "processing exactly once");
        Ok([
            start(Some(format!("{prefix}-input"))).await?,
            start(Some(format!("{prefix}-retry"))).await?,
            start(Some(format!("{prefix}-replay"))).await?,
        ])
    } else {
        warn!("processing at least once: a fault may write an outcome twice");
        let shared = start(None).await?;
        Ok([shared.clone(), shared.clone(), shared])
    }
}
