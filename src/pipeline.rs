//! The processor: source → join → deliver → record, with acknowledgements that tie each
//! input offset to its completed outcome.
//!
//! Each record becomes a task (bounded by `max_in_flight`); a task ends by writing the
//! record's outcome and reporting completion, and only then may the offset advance.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn, Instrument};

use crate::delivery::{build_client, client::ClientOptions, ClientError, Deliverer, Sender};
use crate::domain::event::{self, EventError};
use crate::domain::matching::Decision;
use crate::domain::outcome::{Outcome, Reason, Source, WebhookRef};
use crate::domain::payload;
use crate::domain::time::rfc3339_millis;
use crate::join::{join, ConfigFollower, ConfigStore, StoreError};
use crate::record::{OutcomeSink, RecordError};
use crate::settings::Settings;
use crate::source::{InputConsumer, InputError, InputRecord, PartitionKey};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Follower(#[from] crate::join::follower::FollowerError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("the config follower stopped; see the log above")]
    FollowerStopped,
}

/// How long shutdown waits for in-flight deliveries before leaving them uncommitted.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// What every record task needs.
struct Context {
    store: ConfigStore,
    deliverer: Deliverer,
    sink: OutcomeSink,
    max_event_bytes: usize,
}

/// Runs the processor until `shutdown` resolves.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PipelineError> {
    tokio::pin!(shutdown);
    if settings.delivery.allow_http {
        warn!("DEVELOPMENT SETTING delivery.allow_http is on: webhook URLs may use plain http");
    }
    let store = ConfigStore::open(&settings.store.path)?;
    let mut follower = ConfigFollower::start(&settings.kafka, store.clone(), settings.rules())?;
    tokio::select! {
        caught_up = follower.wait_caught_up() => if !caught_up {
            return Err(PipelineError::FollowerStopped);
        },
        () = &mut shutdown => {
            info!("shutdown before the config cache caught up");
            return Ok(());
        }
    }

    let client = build_client(&ClientOptions {
        connect_timeout: Duration::from_millis(settings.delivery.connect_timeout_ms),
        request_timeout: Duration::from_millis(settings.delivery.request_timeout_ms),
        extra_ca_file: settings.delivery.extra_ca_file.as_deref(),
    })?;
    let context = Arc::new(Context {
        store: store.clone(),
        deliverer: Deliverer::new(
            Sender::new(client),
            settings.retry_policy(),
            store,
            settings.rules(),
        ),
        sink: OutcomeSink::new(&settings.kafka)?,
        max_event_bytes: settings.delivery.max_event_bytes,
    });
    let input = InputConsumer::subscribe(&settings.kafka, settings.delivery.max_event_bytes)?;
    info!(topics = ?settings.kafka.input_topics, group = settings.kafka.group_id, "processing input");

    let permits = Arc::new(Semaphore::new(settings.delivery.max_in_flight));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(PartitionKey, u64, i64)>();
    let mut tasks = JoinSet::new();

    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some((key, generation, offset)) = done_rx.recv() => {
                input.complete(&key, generation, offset);
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    // A task can only end this way by panicking: its offset is never
                    // stored, so the record is processed again after a restart.
                    error!(error = %e, "record task failed");
                }
            }
            _ = follower_stopped(&follower) => return Err(PipelineError::FollowerStopped),
            next = async {
                let permit = permits.clone().acquire_owned().await;
                (permit, input.next().await)
            } => {
                let (Ok(permit), record) = next else { break };
                match record {
                    Ok(Some(record)) => {
                        let context = context.clone();
                        let done = done_tx.clone();
                        tasks.spawn(async move {
                            let (key, generation, offset) = (record.key.clone(), record.generation, record.offset);
                            process(&context, record).await;
                            let _ = done.send((key, generation, offset));
                            drop(permit);
                        });
                    }
                    Ok(None) => {}
                    Err(e) => warn!(error = %e, "input consumer error"),
                }
            }
        }
    }

    info!(
        in_flight = tasks.len(),
        "shutting down: draining in-flight deliveries"
    );
    input.unsubscribe();
    let drained = tokio::time::timeout(DRAIN_DEADLINE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            left = tasks.len(),
            "drain deadline passed; unfinished records stay uncommitted"
        );
        tasks.abort_all();
    }
    while let Ok((key, generation, offset)) = done_rx.try_recv() {
        input.complete(&key, generation, offset);
    }
    if let Err(e) = input.commit() {
        warn!(error = %e, "final commit failed; the last records may be processed again");
    }
    context.sink.flush(Duration::from_secs(10))?;
    follower.stop();
    info!("stopped");
    Ok(())
}

/// Resolves if the follower thread has ended (it only does on a cache write failure).
async fn follower_stopped(follower: &ConfigFollower) {
    loop {
        if !follower.is_running() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Turns one input record into its outcome and records it.
async fn process(context: &Context, record: InputRecord) {
    let source = Source {
        topic: record.key.topic.clone(),
        partition: record.key.partition,
        offset: record.offset,
    };
    let outcome = outcome_of(context, &record, source).await;
    debug!(event_id = ?outcome.event_id, status = ?outcome.status, reason = ?outcome.reason, "outcome");
    // `record` retries until the broker acknowledges; it returns an error only if the
    // producer itself is gone, in which case the offset stays uncommitted.
    if let Err(e) = context.sink.record(&outcome).await {
        error!(error = %e, "outcome not recorded");
    }
}

async fn outcome_of(context: &Context, record: &InputRecord, source: Source) -> Outcome {
    let now = || rfc3339_millis(SystemTime::now());
    let payload = record.payload.as_deref();
    let event = match event::parse(payload, context.max_event_bytes) {
        Ok(event) => event,
        Err(e) => {
            let reason = match e {
                EventError::TooLarge { .. } => Reason::EventTooLarge,
                _ => Reason::InvalidEvent,
            };
            warn!(topic = source.topic, partition = source.partition, offset = source.offset, error = %e, "invalid event");
            let identity = event::identity_of_invalid(payload, context.max_event_bytes);
            return Outcome::invalid(identity, reason, source, now());
        }
    };
    let span = tracing::info_span!(
        "event",
        event_id = event.id,
        org = event.ims_org,
        sandbox = event.sandbox.id
    );
    handle_event(context, event, source).instrument(span).await
}

/// Joins a valid event with its config and delivers it if it matches.
async fn handle_event(context: &Context, event: event::FeedbackEvent, source: Source) -> Outcome {
    let now = || rfc3339_millis(SystemTime::now());
    let joined = loop {
        match join(&context.store, &event) {
            Ok(joined) => break joined,
            Err(e) => {
                error!(error = %e, "config cache read failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let webhook_ref = joined.webhook.as_ref().map(|w| WebhookRef {
        name: w.name.clone(),
        url: w.url.clone(),
    });
    let webhook = match (joined.decision, joined.webhook) {
        (Decision::Deliver, Some(webhook)) => webhook,
        (Decision::Skip(reason), _) => {
            return Outcome::for_event(&event, Some(reason), webhook_ref, Vec::new(), source, now())
        }
        (Decision::Deliver, None) => {
            return Outcome::for_event(
                &event,
                Some(Reason::NoWebhook),
                None,
                Vec::new(),
                source,
                now(),
            )
        }
    };
    // Matching accepted the event, so it has a channel and a status.
    let (Some(channel), Some(status)) = (event.channel(), event.feedback_status()) else {
        return Outcome::for_event(
            &event,
            Some(Reason::ChannelNotSelected),
            webhook_ref,
            Vec::new(),
            source,
            now(),
        );
    };
    let body = Bytes::from(payload::to_body(&payload::build(&event, channel, status)));
    let delivered = context.deliverer.deliver(&event, webhook, body).await;
    Outcome::for_event(
        &event,
        delivered.reason,
        delivered.webhook,
        delivered.attempts,
        source,
        now(),
    )
}
