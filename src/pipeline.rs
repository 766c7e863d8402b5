//! The processor: source → join → deliver → record, with acknowledgements that tie each
//! consumed offset to completed work.
//!
//! Two consumer loops run side by side. The input loop turns each feedback event into an
//! outcome, or, when its first attempt must be retried, into a parked record on a retry
//! tier. The retry loop reads the tiers, waits for each record's due time, joins the event
//! with the *current* config and attempts again. Either way a record's offset may advance
//! once what it became (outcome or parked record) is acknowledged by the broker.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn, Instrument};

use crate::delivery::auth::Auth;
use crate::delivery::secrets::Secrets;
use crate::delivery::{
    build_client, client::ClientOptions, unix_ms, ClientError, Deliverer, Endpoints, Sender, Step,
};
use crate::domain::event::{self, EventError, FeedbackEvent};
use crate::domain::matching::Decision;
use crate::domain::outcome::{Attempt, Outcome, Reason, Replay, Source, WebhookRef};
use crate::domain::parked::{tier_topics, Parked};
use crate::domain::payload;
use crate::domain::replay::ReplayRecord;
use crate::domain::time::rfc3339_millis;
use crate::join::{join, ConfigFollower, ConfigStore, StoreError};
use crate::kafka::{ensure_topics, internal_record_limit};
use crate::observe::{metrics, server, Health};
use crate::record::{RecordError, Recorder};
use crate::settings::Settings;
use crate::source::{InputConsumer, InputError, InputRecord, PartitionKey, Subscription};

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
    #[error("retry topics: {0}")]
    Topics(rdkafka::error::KafkaError),
    #[error(transparent)]
    Settings(crate::settings::SettingsError),
    #[error("the config follower stopped; see the log above")]
    FollowerStopped,
    #[error(transparent)]
    Server(#[from] server::ServerError),
}

/// What every record task needs.
struct Context {
    store: ConfigStore,
    deliverer: Deliverer,
    recorder: Recorder,
    max_event_bytes: usize,
    /// Becomes `true` at shutdown: parked records still waiting are left for a restart.
    stopping: watch::Receiver<bool>,
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
    let health = Arc::new(Health::default());
    // Served from the start: liveness holds while the cache catches up, readiness does not.
    let _server = match settings.http.listen.as_str() {
        "" => None,
        addr => Some(server::start(addr, health.clone()).await?),
    };
    let store = ConfigStore::open(&settings.store.path)?;
    {
        let store = store.clone();
        metrics().on_scrape(move |m| {
            m.config_cache_entries
                .set(store.estimated_entries().try_into().unwrap_or(i64::MAX))
        });
    }
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
    health.set_caught_up();
    let tiers = tier_topics(&settings.retry_topic_prefix());
    let replay_topic = settings.replay_topic();
    let mut internal = tiers.clone();
    internal.push(replay_topic.clone());
    let record_limit = internal_record_limit(settings.delivery.max_event_bytes);
    ensure_topics(
        &settings.kafka,
        &internal,
        settings.kafka.retry_partitions,
        record_limit,
    )
    .await
    .map_err(PipelineError::Topics)?;

    let policy = Arc::new(settings.address_policy().map_err(PipelineError::Settings)?);
    if !policy.allow.is_empty() {
        warn!(allow = ?settings.delivery.allow_cidrs, "destination guard opened for these ranges");
    }
    let client = build_client(&ClientOptions {
        connect_timeout: Duration::from_millis(settings.delivery.connect_timeout_ms),
        request_timeout: Duration::from_millis(settings.delivery.request_timeout_ms),
        extra_ca_file: settings.delivery.extra_ca_file.as_deref(),
        policy: policy.clone(),
    })?;
    // An event waits for its endpoint's slot at most about one request's time.
    let endpoints = Endpoints::new(
        settings.delivery.endpoint_concurrency,
        settings.breaker_policy(),
        Duration::from_millis(settings.delivery.request_timeout_ms),
    );
    let auth = Auth::new(Secrets::new(
        settings.sealing_key().map_err(PipelineError::Settings)?,
    ));
    let (stop_tx, stopping) = watch::channel(false);
    let deliverer = Deliverer::new(
        Sender::new(client, policy),
        auth,
        settings.retry_policy(),
        endpoints,
        settings.rules(),
    );
    let context = Arc::new(Context {
        store,
        deliverer,
        recorder: Recorder::new(&settings.kafka, tiers.clone(), record_limit)?,
        max_event_bytes: settings.delivery.max_event_bytes,
        stopping: stopping.clone(),
    });
    {
        let context = context.clone();
        metrics().on_scrape(move |m| {
            let (counts, named) = context
                .deliverer
                .endpoints()
                .breaker_states(crate::observe::metrics::MAX_OPEN_SERIES);
            for (state, n) in ["closed", "open", "half_open"].iter().zip(counts) {
                m.circuit_breakers
                    .with_label_values(&[state])
                    .set(n.try_into().unwrap_or(i64::MAX));
            }
            m.circuit_open.reset();
            for (endpoint, state) in named {
                m.circuit_open
                    .with_label_values(&[endpoint.as_str(), state])
                    .set(1);
            }
        });
    }
    let kafka = &settings.kafka;
    let revoke_grace = Duration::from_secs(settings.shutdown.revoke_grace_secs);
    let input = InputConsumer::subscribe(
        kafka,
        Subscription {
            name: "input",
            group: &kafka.group_id,
            topics: &kafka.input_topics,
            max_record_bytes: settings.delivery.max_event_bytes,
            revoke_grace,
        },
    )?;
    let retry_group = format!("{}-retry", kafka.group_id);
    let retries = InputConsumer::subscribe(
        kafka,
        Subscription {
            name: "retry",
            group: &retry_group,
            topics: &tiers,
            // Parked records embed an event and its attempts.
            max_record_bytes: record_limit,
            revoke_grace,
        },
    )?;
    let replay_group = format!("{}-replay", kafka.group_id);
    let replays = InputConsumer::subscribe(
        kafka,
        Subscription {
            name: "replay",
            group: &replay_group,
            topics: std::slice::from_ref(&replay_topic),
            max_record_bytes: record_limit,
            revoke_grace,
        },
    )?;
    info!(topics = ?kafka.input_topics, group = kafka.group_id, "processing input");

    let drain = Duration::from_secs(settings.shutdown.drain_deadline_secs);
    let loops = async {
        tokio::join!(
            consume(
                Loop {
                    name: "input",
                    consumer: &input,
                    limit: settings.delivery.max_in_flight,
                    drain,
                    in_flight_gauge: None,
                },
                &context,
                stopping.clone(),
                handle_input
            ),
            consume(
                Loop {
                    name: "retry",
                    consumer: &retries,
                    limit: settings.delivery.max_retrying,
                    drain,
                    in_flight_gauge: Some(&metrics().retries_pending),
                },
                &context,
                stopping.clone(),
                handle_parked
            ),
            // Replays run beside live input with a bounded share of their own.
            consume(
                Loop {
                    name: "replay",
                    consumer: &replays,
                    limit: settings.replay.max_in_flight,
                    drain,
                    in_flight_gauge: None,
                },
                &context,
                stopping.clone(),
                handle_replay
            ),
            ready_when_joined(&input, &health, stopping.clone()),
        )
    };
    tokio::pin!(loops);
    let mut failed = None;
    tokio::select! {
        _ = &mut loops => {}
        () = &mut shutdown => {}
        () = follower_stopped(&follower) => failed = Some(PipelineError::FollowerStopped),
    }
    info!(
        deadline_secs = drain.as_secs(),
        "shutting down: draining deliveries under way"
    );
    health.set_stopping();
    let _ = stop_tx.send(true);
    (&mut loops).await;
    context.recorder.flush(Duration::from_secs(10))?;
    // Offsets are committed while the partitions are still ours, then the group is left.
    for consumer in [&input, &retries, &replays] {
        if let Err(e) = consumer.commit() {
            warn!(error = %e, "final commit failed; the last records may be processed again");
        }
        consumer.unsubscribe();
    }
    follower.stop();
    info!("stopped");
    failed.map_or(Ok(()), Err)
}

/// Resolves if the follower thread has ended (it only does on a cache write failure).
async fn follower_stopped(follower: &ConfigFollower) {
    while follower.is_running() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One consumer loop: each record becomes a task, at most `limit` at once.
///
/// At the limit, the loop stops taking records: librdkafka keeps its bounded prefetch, and
/// a slot frees within about one request. If the loop stays full for longer (parked records
/// waiting for their due time), the assignment is paused and the consumer polled on, so the
/// member stays in its group; it resumes once half the slots are free. Pausing makes
/// librdkafka drop and later re-fetch its prefetch, which is why it is not the first resort.
/// Returns after `stopping` turns true and tasks have drained (up to the drain deadline).
async fn consume<F, Fut>(
    l: Loop<'_>,
    context: &Arc<Context>,
    mut stopping: watch::Receiver<bool>,
    handler: F,
) where
    F: Fn(Arc<Context>, InputRecord) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    const PAUSE_AFTER: Duration = Duration::from_secs(30);
    let Loop {
        name,
        consumer,
        limit,
        drain,
        in_flight_gauge,
    } = l;
    let permits = Arc::new(Semaphore::new(limit));
    // Commit points reached by completed records, to store for the next commit.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(PartitionKey, u64, i64)>();
    let mut tasks = JoinSet::new();
    // Records received while full (only while paused: newly assigned partitions).
    let mut held: VecDeque<InputRecord> = VecDeque::new();
    let mut paused = false;
    let mut full_since: Option<tokio::time::Instant> = None;
    let spawn = |record: InputRecord, permit, tasks: &mut JoinSet<()>| {
        let done = done_tx.clone();
        let lease = record.lease();
        let work = handler(context.clone(), record);
        tasks.spawn(async move {
            // An unfinished record (shutdown, panic) drops its lease and is released.
            if work.await {
                if let Some(point) = lease.complete() {
                    let _ = done.send(point);
                }
            }
            drop(permit);
        });
    };
    let count_in_flight = |permits: &Semaphore| {
        if let Some(gauge) = in_flight_gauge {
            gauge.set((limit - permits.available_permits()) as i64);
        }
    };

    while !*stopping.borrow() {
        // Start held records while there is room; drop those whose partition moved away.
        count_in_flight(&permits);
        while let Some(record) = held.pop_front() {
            if !record.is_current() {
                continue;
            }
            match permits.clone().try_acquire_owned() {
                Ok(permit) => spawn(record, permit, &mut tasks),
                Err(_) => {
                    held.push_front(record);
                    break;
                }
            }
        }
        let full = permits.available_permits() == 0 || !held.is_empty();
        if paused && held.is_empty() && permits.available_permits() >= limit.div_ceil(2) {
            consumer.resume();
            paused = false;
        }
        let since = if full {
            *full_since.get_or_insert_with(tokio::time::Instant::now)
        } else {
            full_since = None;
            tokio::time::Instant::now()
        };
        tokio::select! {
            biased;
            _ = stopping.changed() => {}
            Some((key, generation, next)) = done_rx.recv() => consumer.store(&key, generation, next),
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    // Only a panic ends a task this way: its offset is never stored, so the
                    // record is processed again after a restart.
                    error!(consumer = name, error = %e, "record task failed");
                }
            }
            _ = permits.acquire(), if full => {}
            () = tokio::time::sleep_until(since + PAUSE_AFTER), if full && !paused => {
                info!(consumer = name, "full for {PAUSE_AFTER:?}: pausing consumption");
                consumer.pause();
                paused = true;
            }
            next = consumer.next(), if !full || paused => match next {
                Ok(Some(record)) => match permits.clone().try_acquire_owned() {
                    Ok(permit) if held.is_empty() => spawn(record, permit, &mut tasks),
                    _ => held.push_back(record),
                },
                Ok(None) => {}
                Err(e) => warn!(consumer = name, error = %e, "consumer error"),
            },
        }
    }

    // Records not started are left for the next run; those under way may finish.
    held.clear();
    let drained = tokio::time::timeout(drain, async {
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                error!(consumer = name, error = %e, "record task failed");
            }
            while let Ok((key, generation, next)) = done_rx.try_recv() {
                consumer.store(&key, generation, next);
            }
        }
    })
    .await;
    if drained.is_err() {
        warn!(
            consumer = name,
            left = tasks.len(),
            "drain deadline passed; unfinished records stay uncommitted"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    while let Ok((key, generation, next)) = done_rx.try_recv() {
        consumer.store(&key, generation, next);
    }
    count_in_flight(&permits);
}

/// One consumer loop's parts.
struct Loop<'a> {
    /// `input`, `retry` or `replay`, for logs.
    name: &'static str,
    consumer: &'a InputConsumer,
    /// Records processed at once.
    limit: usize,
    /// How long shutdown waits for records under way.
    drain: Duration,
    /// Set to the number of records under way (the retry loop's pending retries).
    in_flight_gauge: Option<&'a prometheus::IntGauge>,
}

/// Marks the processor ready once the input consumer has joined its group, or after a while
/// without an assignment (more members than partitions: idle, but ready).
async fn ready_when_joined(
    input: &InputConsumer,
    health: &Health,
    mut stopping: watch::Receiver<bool>,
) {
    const IDLE_READY_AFTER: Duration = Duration::from_secs(30);
    let started = tokio::time::Instant::now();
    while !input.joined() && started.elapsed() < IDLE_READY_AFTER {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
    }
    health.set_joined();
}

/// The span of one event's work: its id, org and sandbox (never a secret).
fn event_span(event: &FeedbackEvent) -> tracing::Span {
    tracing::info_span!(
        "event",
        event_id = event.id,
        org = event.ims_org,
        sandbox = event.sandbox.id
    )
}

fn now() -> String {
    rfc3339_millis(SystemTime::now())
}

fn source_of(record: &InputRecord) -> Source {
    Source {
        topic: record.key.topic.clone(),
        partition: record.key.partition,
        offset: record.offset,
    }
}

/// An input record: parse, join, first attempt. Always completes.
async fn handle_input(context: Arc<Context>, record: InputRecord) -> bool {
    let source = source_of(&record);
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
            context
                .recorder
                .outcome(&Outcome::invalid(identity, reason, source, now()))
                .await;
            return true;
        }
    };
    let span = event_span(&event);
    let first_seen_ms = unix_ms(SystemTime::now());
    async {
        let raw = || {
            payload
                .and_then(|p| serde_json::from_slice(p).ok())
                .unwrap_or(Value::Null)
        };
        let progress = Progress {
            attempts: Vec::new(),
            first_seen_ms,
            replay: None,
        };
        advance(&context, &event, raw, progress, source).await;
    }
    .instrument(span)
    .await;
    true
}

/// Reads a record of an internal topic. One that cannot be read (written by something
/// else, or by an incompatible version) is recorded as an invalid outcome, so it is seen,
/// and skipped.
async fn read_internal<T: serde::de::DeserializeOwned>(
    context: &Context,
    record: &InputRecord,
    kind: &str,
) -> Option<T> {
    match record.payload.as_deref().map(serde_json::from_slice::<T>) {
        Some(Ok(value)) => Some(value),
        other => {
            let error = other
                .map(|r| r.err().map(|e| e.to_string()))
                .unwrap_or_default();
            error!(
                topic = record.key.topic,
                offset = record.offset,
                kind,
                ?error,
                "unreadable internal record"
            );
            let source = source_of(record);
            let outcome = Outcome::invalid(Default::default(), Reason::InvalidEvent, source, now());
            context.recorder.outcome(&outcome).await;
            None
        }
    }
}

/// A parked record: wait until due, then join with the current config and attempt again.
/// Returns `false` (not complete) when shutdown comes first: the record stays for a restart.
async fn handle_parked(context: Arc<Context>, record: InputRecord) -> bool {
    // Only this processor writes the tiers.
    let Some(parked) = read_internal::<Parked>(&context, &record, "parked").await else {
        return true;
    };
    let due = tokio::time::Instant::now()
        + Duration::from_millis(parked.due_ms.saturating_sub(unix_ms(SystemTime::now())));
    let mut stopping = context.stopping.clone();
    // Waiting ends early at shutdown or when the partition is revoked: the record has not
    // been attempted, so leaving it to the next run or the next owner duplicates nothing.
    loop {
        if !record.is_current() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep_until(due) => break,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stopping.wait_for(|s| *s) => return false,
        }
    }
    let bytes = serde_json::to_vec(&parked.event).unwrap_or_default();
    let event = match event::parse(Some(&bytes), usize::MAX) {
        Ok(event) => event,
        Err(e) => {
            error!(event_id = parked.event_id, error = %e, "parked event no longer parses");
            let outcome = Outcome::invalid(
                Default::default(),
                Reason::InvalidEvent,
                parked.source,
                now(),
            );
            context.recorder.outcome(&outcome).await;
            return true;
        }
    };
    let span = event_span(&event);
    let Parked {
        event: raw,
        attempts,
        first_seen_ms,
        source,
        replay,
        ..
    } = parked;
    let progress = Progress {
        attempts,
        first_seen_ms,
        replay,
    };
    advance(&context, &event, move || raw, progress, source)
        .instrument(span)
        .await;
    true
}

/// Where an event stands: attempts so far, since when, and the replay redelivering it.
struct Progress {
    attempts: Vec<Attempt>,
    first_seen_ms: u64,
    replay: Option<Replay>,
}

/// A redelivery request from an operator's replay: delivered like a new event (current
/// config, normal retries and isolation), its outcome marked with the replay.
async fn handle_replay(context: Arc<Context>, record: InputRecord) -> bool {
    // Written by `feedback-webhooks replay`.
    let Some(request) = read_internal::<ReplayRecord>(&context, &record, "replay").await else {
        return true;
    };
    let ReplayRecord {
        replay,
        event: raw,
        source,
        ..
    } = request;
    let bytes = serde_json::to_vec(&raw).unwrap_or_default();
    let event = match event::parse(Some(&bytes), context.max_event_bytes) {
        Ok(event) => event,
        Err(e) => {
            let reason = match e {
                EventError::TooLarge { .. } => Reason::EventTooLarge,
                _ => Reason::InvalidEvent,
            };
            warn!(replay = replay.id, error = %e, "replayed event is invalid");
            let identity = event::identity_of_invalid(Some(&bytes), context.max_event_bytes);
            let mut outcome = Outcome::invalid(identity, reason, source, now());
            outcome.replay = Some(replay);
            context.recorder.outcome(&outcome).await;
            return true;
        }
    };
    let span = event_span(&event);
    let progress = Progress {
        attempts: Vec::new(),
        first_seen_ms: unix_ms(SystemTime::now()),
        replay: Some(replay),
    };
    advance(&context, &event, move || raw, progress, source)
        .instrument(span)
        .await;
    true
}

/// Joins the event with the current config and takes the next step: an outcome, or a
/// parked record for a later attempt.
async fn advance(
    context: &Context,
    event: &FeedbackEvent,
    raw_event: impl FnOnce() -> Value,
    progress: Progress,
    source: Source,
) {
    let Progress {
        attempts,
        first_seen_ms,
        replay,
    } = progress;
    let joined = loop {
        match join(&context.store, event) {
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
    let (webhook, channel, status) = match (
        joined.decision,
        joined.webhook,
        event.channel(),
        event.feedback_status(),
    ) {
        (Decision::Deliver, Some(webhook), Some(channel), Some(status)) => {
            (webhook, channel, status)
        }
        (decision, _, _, _) => {
            // Matching only delivers events with a webhook, a channel and a status.
            let reason = match decision {
                Decision::Skip(reason) => reason,
                Decision::Deliver => Reason::NoWebhook,
            };
            let mut outcome =
                Outcome::for_event(event, Some(reason), webhook_ref, attempts, source, now());
            outcome.replay = replay;
            context.recorder.outcome(&outcome).await;
            return;
        }
    };
    let body = Bytes::from(payload::to_body(&payload::build(event, channel, status)));
    match context
        .deliverer
        .step(
            event,
            &webhook,
            body,
            attempts,
            first_seen_ms,
            replay.as_ref().map(|r| r.id.as_str()),
        )
        .await
    {
        Step::Done {
            reason,
            webhook,
            attempts,
        } => {
            let mut outcome =
                Outcome::for_event(event, reason, Some(webhook), attempts, source, now());
            outcome.replay = replay;
            context.recorder.outcome(&outcome).await;
        }
        Step::Park {
            attempts, delay, ..
        } => {
            let due = SystemTime::now() + delay;
            let parked = Parked {
                kind: "retry".into(),
                event_id: event.id.clone(),
                event: raw_event(),
                source,
                attempts,
                first_seen_ms,
                due_ms: due
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                replay,
            };
            debug!(
                delay_ms = delay.as_millis() as u64,
                attempts = parked.attempts.len(),
                "parked for retry"
            );
            context.recorder.park(&parked, delay).await;
        }
    }
}
