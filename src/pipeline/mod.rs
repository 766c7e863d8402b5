//! The processor: source → join → deliver → record, with acknowledgements that tie each
//! consumed offset to completed work.
//!
//! Three consumer loops run side by side (`consume`). The input loop turns each feedback
//! event into an outcome, or, when its first attempt must be retried, into a parked record
//! on a retry tier. The retry loop reads the tiers, waits for each record's due time, joins
//! the event with the *current* config and attempts again. The replay loop delivers
//! operators' redelivery requests. What happens to one record is in `handlers`; this file
//! wires the parts together. Either way a record's offset may advance once what it became
//! (outcome or parked record) is acknowledged by the broker.

mod consume;
mod handlers;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

use self::consume::{consume, Loop};
use self::handlers::{handle_input, handle_parked, handle_replay, parked_due};
use crate::delivery::auth::Auth;
use crate::delivery::secrets::Secrets;
use crate::delivery::{
    build_client, client::ClientOptions, ClientError, Deliverer, Endpoints, Sender,
};
use crate::domain::parked::tier_topics;
use crate::fatal::Fatal;
use crate::join::{ConfigFollower, ConfigLookup, ConfigStore, StoreError};
use crate::kafka::{ensure_topics, internal_record_limit, max_message_bytes};
use crate::observe::{metrics, server, Health};
use crate::record::{RecordError, RecordSink, Recorder, RecorderOptions};
use crate::settings::{Guarantee, Settings};
use crate::source::{InputConsumer, InputError, Subscription};

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
    #[error("stopping after a fatal error: {0}")]
    Fatal(String),
    #[error(transparent)]
    Server(#[from] server::ServerError),
}

/// What every record task needs.
pub(crate) struct Context {
    pub(crate) config: Arc<dyn ConfigLookup>,
    pub(crate) deliverer: Arc<Deliverer>,
    pub(crate) recorder: Arc<dyn RecordSink>,
    pub(crate) max_event_bytes: usize,
    /// Becomes `true` at shutdown: parked records still waiting are left for a restart.
    pub(crate) stopping: watch::Receiver<bool>,
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
    // Freed C-heap memory (librdkafka's decompression buffers) goes back to the system.
    let trimmer = crate::memory::spawn_trimmer();
    let store = ConfigStore::open(&settings.store.path)?;
    {
        let store = store.clone();
        metrics().on_scrape(move |m| {
            m.config_cache_entries
                .set(store.estimated_entries().try_into().unwrap_or(i64::MAX))
        });
    }
    // Reads the topic's metadata and watermarks, blocking: off the async workers.
    let mut follower = {
        let (kafka, store, rules) = (settings.kafka.clone(), store.clone(), settings.rules());
        tokio::task::spawn_blocking(move || ConfigFollower::start(&kafka, store, rules))
            .await
            .map_err(|e| PipelineError::Fatal(format!("config follower start: {e}")))??
    };
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
    ensure_topics(&settings.kafka, &internal, settings.internal_topics())
        .await
        .map_err(PipelineError::Topics)?;

    let policy = Arc::new(settings.address_policy().map_err(PipelineError::Settings)?);
    if !policy.allow.is_empty() {
        warn!(allow = ?settings.delivery.allow_cidrs, "destination guard opened for these ranges");
    }
    let client = build_client(&ClientOptions::from_settings(
        &settings.delivery,
        policy.clone(),
    ))?;
    let endpoints = Endpoints::new(settings.schedule_policy(), settings.wait_limits());
    let auth = Auth::new(Secrets::new(
        settings.sealing_key().map_err(PipelineError::Settings)?,
        settings.secret_scope(),
    ));
    if settings.secrets.accept_v1_sealed {
        warn!("secrets.accept_v1_sealed is on: values sealed before they were bound to their record still open; seal them again with `secret seal --record`");
    }
    let (stop_tx, stopping) = watch::channel(false);
    let deliverer = Arc::new(Deliverer::new(
        Sender::new(client, policy),
        auth,
        settings.retry_policy(),
        endpoints,
        settings.rules(),
    ));
    let fatal = Fatal::default();
    let exactly_once = settings.kafka.processing_guarantee == Guarantee::ExactlyOnce;
    let outcome_limit = max_message_bytes(&settings.kafka, &settings.kafka.outcome_topic)
        .await
        .unwrap_or(BROKER_DEFAULT_MAX_MESSAGE_BYTES);
    let recorder = |transactional_id: Option<String>, max_transaction_records: usize| {
        let (kafka, tiers, fatal) = (settings.kafka.clone(), tiers.clone(), fatal.clone());
        // Registering a transactional id waits for the broker: off the async workers.
        tokio::task::spawn_blocking(move || {
            let options = RecorderOptions {
                tier_topics: tiers,
                max_record_bytes: record_limit,
                outcome_limit,
                transactional_id: transactional_id.as_deref(),
                max_transaction_records,
                fatal,
            };
            Recorder::new(&kafka, options).map(Arc::new)
        })
    };
    let joined = |r: Result<Result<Arc<Recorder>, RecordError>, tokio::task::JoinError>| {
        r.map_err(|e| PipelineError::Fatal(format!("producer start: {e}")))?
            .map_err(PipelineError::from)
    };
    // Exactly once, each loop writes in transactions of its own, so a loop that loses its
    // assignment aborts only its own results; a transaction holds at most
    // `kafka.max_transaction_records` results.
    let cap = settings.kafka.max_transaction_records;
    let recorders: [Arc<Recorder>; 3] = if exactly_once {
        let prefix = settings.transactional_id();
        info!(transactional_id = prefix, "processing exactly once");
        [
            joined(recorder(Some(format!("{prefix}-input")), cap).await)?,
            joined(recorder(Some(format!("{prefix}-retry")), cap).await)?,
            joined(recorder(Some(format!("{prefix}-replay")), cap).await)?,
        ]
    } else {
        warn!("processing at least once: a fault may write an outcome twice");
        let shared = joined(recorder(None, cap).await)?;
        [shared.clone(), shared.clone(), shared]
    };
    let config: Arc<dyn ConfigLookup> = Arc::new(store);
    let context_for = |recorder: &Arc<Recorder>| {
        Arc::new(Context {
            config: config.clone(),
            deliverer: deliverer.clone(),
            recorder: recorder.clone(),
            max_event_bytes: settings.delivery.max_event_bytes,
            stopping: stopping.clone(),
        })
    };
    {
        let deliverer = deliverer.clone();
        metrics().on_scrape(move |m| {
            let (counts, named) = deliverer
                .endpoints()
                .breaker_states(crate::observe::metrics::MAX_OPEN_SERIES);
            for (state, n) in ["closed", "open", "half_open"].iter().zip(counts) {
                m.circuit_breakers
                    .with_label_values(&[state])
                    .set(n.try_into().unwrap_or(i64::MAX));
            }
            m.circuit_open.reset();
            for endpoint in named {
                m.circuit_open
                    .with_label_values(&[endpoint.as_str()])
                    .set(1);
            }
            let (queued, queued_bytes) = deliverer.endpoints().queued();
            m.deliveries_queued
                .set(queued.try_into().unwrap_or(i64::MAX));
            m.deliveries_queued_bytes
                .set(queued_bytes.try_into().unwrap_or(i64::MAX));
            let (hosts, webhooks) = deliverer.endpoints().limits();
            for (gauge, mut limits) in [
                (&m.host_concurrency_limit, hosts),
                (&m.webhook_concurrency_limit, webhooks),
            ] {
                limits.sort_unstable();
                gauge.reset();
                if let (Some(min), Some(max)) = (limits.first(), limits.last()) {
                    let median = limits[limits.len() / 2];
                    for (stat, v) in [("min", *min), ("median", median), ("max", *max)] {
                        gauge
                            .with_label_values(&[stat])
                            .set(v.try_into().unwrap_or(i64::MAX));
                    }
                }
            }
        });
    }
    let kafka = &settings.kafka;
    let revoke_grace = Duration::from_secs(settings.shutdown.revoke_grace_secs);
    let transactions = |i: usize| {
        exactly_once.then(|| recorders[i].clone() as Arc<dyn crate::source::commit::Transactions>)
    };
    // At least once, a new owner of an input partition learns from the recent outcomes and
    // parked records what completed after the committed offset (exactly once, the
    // transactions make the committed offsets exact).
    let results = if exactly_once {
        None
    } else {
        let mut topics = vec![kafka.outcome_topic.clone()];
        topics.extend(tiers.iter().cloned());
        Some(Arc::new(
            crate::source::durable::Results::new(kafka, topics).map_err(InputError::from)?,
        ))
    };
    let input = InputConsumer::subscribe(
        kafka,
        Subscription {
            name: "input",
            group: &kafka.group_id,
            topics: &kafka.input_topics,
            max_record_bytes: settings.delivery.max_event_bytes,
            revoke_grace,
            transactions: transactions(0),
            fatal: fatal.clone(),
            results: results.clone(),
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
            transactions: transactions(1),
            fatal: fatal.clone(),
            results: None,
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
            transactions: transactions(2),
            fatal: fatal.clone(),
            results: None,
        },
    )?;
    info!(topics = ?kafka.input_topics, group = kafka.group_id, "processing input");

    let drain = Duration::from_secs(settings.shutdown.drain_deadline_secs);
    let commit_every = Duration::from_millis(kafka.commit_interval_ms);
    let (input, retries, replays) = (Arc::new(input), Arc::new(retries), Arc::new(replays));
    // Each loop is a task of its own: a revocation waiting for its records (up to the grace
    // period, inside the consumer's poll) holds up only its own loop.
    let mut loops = tokio::task::JoinSet::new();
    let spawn_loop =
        |loops: &mut tokio::task::JoinSet<()>,
         consumer: &Arc<InputConsumer>,
         context: Arc<Context>,
         name: &'static str,
         limit: usize,
         in_flight_gauge: Option<&'static prometheus::IntGauge>,
         due: Option<fn(&crate::source::InputRecord) -> Option<u64>>,
         handler: fn(Arc<Context>, crate::source::InputRecord) -> RecordWork| {
            let (consumer, stopping, fatal) = (consumer.clone(), stopping.clone(), fatal.clone());
            loops.spawn(async move {
                let l = Loop {
                    name,
                    consumer: &*consumer,
                    limit,
                    drain,
                    in_flight_gauge,
                    due,
                    fatal: &fatal,
                    commit_every,
                };
                consume(l, &context, stopping, handler).await;
            });
        };
    spawn_loop(
        &mut loops,
        &input,
        context_for(&recorders[0]),
        "input",
        settings.delivery.max_in_flight,
        None,
        None,
        |c, r| Box::pin(handle_input(c, r)),
    );
    spawn_loop(
        &mut loops,
        &retries,
        context_for(&recorders[1]),
        "retry",
        settings.delivery.max_retrying,
        Some(&metrics().retries_pending),
        Some(parked_due),
        |c, r| Box::pin(handle_parked(c, r)),
    );
    // Replays run beside live input with a bounded share of their own.
    spawn_loop(
        &mut loops,
        &replays,
        context_for(&recorders[2]),
        "replay",
        settings.replay.max_in_flight,
        None,
        None,
        |c, r| Box::pin(handle_replay(c, r)),
    );
    let loops_done = async {
        let ((), ()) = tokio::join!(
            async {
                while let Some(done) = loops.join_next().await {
                    if let Err(e) = done {
                        error!(error = %e, "a consumer loop failed");
                    }
                }
            },
            ready_when_joined(&input, &health, stopping.clone()),
        );
    };
    let mut loops_done = Box::pin(loops_done);
    let mut failed = None;
    tokio::select! {
        () = &mut loops_done => {}
        () = &mut shutdown => {}
        () = follower_stopped(&follower) => failed = Some(PipelineError::FollowerStopped),
        why = fatal.raised() => failed = Some(PipelineError::Fatal(why)),
    }
    health.set_stopping();
    let _ = stop_tx.send(true);
    if fatal.is_raised() {
        // Nothing more completes: what is under way is redone after the restart.
        error!("fatal error: stopping without draining");
    } else {
        info!(
            deadline_secs = drain.as_secs(),
            "shutting down: draining deliveries under way"
        );
        tokio::select! {
            () = &mut loops_done => {}
            why = fatal.raised() => failed = Some(PipelineError::Fatal(why)),
        }
    }
    // Whatever is still under way (after a fatal error) ends here.
    drop(loops_done);
    loops.abort_all();
    // At least once, a flush that times out leaves unacknowledged records uncommitted: the
    // commit below only covers acknowledged work, so it happens anyway.
    let flushed = if exactly_once {
        Ok(())
    } else {
        recorders[0].flush(Duration::from_secs(10))
    };
    // Progress is committed while the partitions are still ours (exactly once: with the
    // last transaction), then the group is left.
    // After a fatal error, exactly once, the open transactions may hold results whose
    // records count as done wrongly (a failed commit voided them): nothing more commits.
    let mut committed = Ok(());
    let commit = !(exactly_once && fatal.is_raised());
    for consumer in [&*input, &*retries, &*replays] {
        let result = if commit {
            tokio::task::block_in_place(|| consumer.commit())
        } else {
            tokio::task::block_in_place(|| consumer.abort())
        };
        if let Err(e) = result {
            warn!(error = %e, "final commit failed; the last records may be processed again");
            committed = Err(PipelineError::Fatal(format!("final commit: {e}")));
        }
        consumer.unsubscribe();
    }
    follower.stop();
    trimmer.abort();
    info!("stopped");
    if let Some(failed) = failed {
        return Err(failed);
    }
    flushed?;
    committed
}

/// The broker's default `max.message.bytes`, for when a topic's cannot be read.
const BROKER_DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;

/// What a handler returns: whether the record completed.
type RecordWork = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

/// Resolves if the follower thread has ended (it only does on a cache write failure).
async fn follower_stopped(follower: &ConfigFollower) {
    while follower.is_running() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
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
