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
pub mod recovery;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

use self::consume::{consume, Loop};
use self::handlers::{handle_input, handle_parked, handle_replay, parked_due};
use crate::delivery::{Deliverer, DelivererError, Disabler};
use crate::domain::parked::tier_topics;
use crate::fatal::{Fatal, FatalCause};
use crate::health::{Tracker, TrackerOptions};
use crate::join::disable::ConfigDisabler;
use crate::join::publish::Publisher;
use crate::join::{ConfigFollower, ConfigLookup, ConfigStore, StoreError};
use crate::kafka::{ensure_topics, internal_record_limit, max_message_bytes, TopicSpec};
use crate::notify::{Notifier, NotifierOptions};
use crate::observe::{metrics, server, Health};
use crate::record::{start_recorders, RecordError, RecordSink, Recorder};
use crate::settings::{Guarantee, Settings};
use crate::source::commit::CommitError;
use crate::source::durable::Results;
use crate::source::{InputConsumer, InputError, InputRecord, Subscription};
use recovery::{Next, Recoveries};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Follower(#[from] crate::join::follower::FollowerError),
    #[error(transparent)]
    Deliverer(#[from] DelivererError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("retry topics: {0}")]
    Topics(rdkafka::error::KafkaError),
    #[error("the config follower stopped; see the log above")]
    FollowerStopped,
    /// A part's start, run off the async workers, did not complete.
    #[error("{0}")]
    Start(String),
    #[error("stopping after a fatal error: {0}")]
    Fatal(FatalCause),
    #[error("stopping after a fatal error: final commit: {0}")]
    FinalCommit(CommitError),
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

/// Runs the processor until `shutdown` resolves: the config cache catches up, the
/// processor's parts start ([`Processor::start`]), and its loops run until shutdown or a
/// fatal error ([`Processor::run`]).
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
    let (store, mut follower) = start_cache(&settings).await?;
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
    // A receiver's request to disable its webhook is written to the config topic, like
    // the API's writes.
    let config_disabler = ConfigDisabler::new(
        Publisher::new(&settings.kafka, store.clone())
            .map_err(|e| PipelineError::Start(e.to_string()))?,
        store.clone(),
        settings.rules(),
    );
    let disabler: Arc<dyn Disabler> = Arc::new(config_disabler.clone());
    let config: Arc<dyn ConfigLookup> = Arc::new(store.clone());
    let mut shutdown = Box::pin(futures::FutureExt::fuse(shutdown));
    let mut processor = Processor::start(&settings, config.clone(), disabler.clone()).await?;
    // Started once its topics exist; it rides out its own faults, apart from the loops.
    let tracker = match TrackerOptions::from_settings(&settings) {
        Some(options) => Some(
            Tracker::start(
                options,
                settings.kafka.clone(),
                store.clone(),
                config_disabler,
            )
            .map_err(|e| PipelineError::Start(format!("health tracker: {e}")))?,
        ),
        None => None,
    };
    // Owners' notifications: apart from the loops, like the tracker.
    let notifier = match NotifierOptions::from_settings(&settings) {
        Some(options) => Some(
            Notifier::start(options, &settings, store)
                .map_err(|e| PipelineError::Start(e.to_string()))?,
        ),
        None => None,
    };
    let mut recoveries = Recoveries::default();
    let stopped = loop {
        let result = processor.run(&health, &follower, &mut shutdown).await;
        let cause = match result {
            Err(PipelineError::Fatal(cause))
                if !futures::future::FusedFuture::is_terminated(&shutdown) =>
            {
                cause
            }
            other => break other,
        };
        let wait = match recoveries.next(&cause, std::time::Instant::now()) {
            Next::Recover(wait) => wait,
            Next::Stop(why) => {
                error!(why, "faults keep coming back; stopping");
                break Err(PipelineError::Fatal(cause));
            }
        };
        crate::observe::metrics::metrics()
            .recoveries
            .with_label_values(&[cause.kind()])
            .inc();
        warn!(
            cause = %cause,
            wait_ms = wait.as_millis() as u64,
            recent = recoveries.recent(),
            "the processor's parts stopped after a fault; starting them again in process from the last commit"
        );
        if matches!(cause, FatalCause::Stuck { .. }) {
            crate::record::watchdog::abandoned();
        }
        // Its clients may hang in C (a stuck call): they are let go on a thread of their own.
        abandon(processor);
        health.set_recovering();
        match restart(&settings, &config, &disabler, wait, &mut shutdown).await {
            Some(started) => processor = started,
            None => break Ok(()),
        }
    };
    if let Some(notifier) = notifier {
        notifier.stop().await;
    }
    // Leaving its group blocks: off the async workers.
    let _ = tokio::task::spawn_blocking(move || drop(tracker)).await;
    follower.stop();
    trimmer.abort();
    info!("stopped");
    stopped
}

/// Lets go of a processor's parts on a thread of their own: dropping a client whose call
/// hangs in librdkafka may hang too, and must not hold up the pipeline.
fn abandon(processor: Processor) {
    let spawned = std::thread::Builder::new()
        .name("abandoned-parts".into())
        .spawn(move || drop(processor));
    if let Err(e) = spawned {
        warn!(error = %e, "cannot let go of the old parts on a thread of their own");
    }
}

/// Starts the processor's parts again after `wait`, retrying (with backoff) while the
/// broker cannot be reached; `None` when shutdown comes first.
async fn restart(
    settings: &Settings,
    config: &Arc<dyn ConfigLookup>,
    disabler: &Arc<dyn Disabler>,
    wait: Duration,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Option<Processor> {
    let mut wait = wait;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut *shutdown => return None,
        }
        let started = tokio::select! {
            started = Processor::start(settings, config.clone(), disabler.clone()) => started,
            () = &mut *shutdown => return None,
        };
        match started {
            Ok(started) => return Some(started),
            Err(e) => {
                warn!(error = %e, "the processor's parts cannot start yet; trying again");
                wait = (wait * 2).clamp(Duration::from_secs(1), recovery::MAX_BACKOFF);
            }
        }
    }
}

/// Opens the config cache and starts following the config topic.
async fn start_cache(settings: &Settings) -> Result<(ConfigStore, ConfigFollower), PipelineError> {
    let store = ConfigStore::open(&settings.store.path)?;
    {
        let store = store.clone();
        metrics().on_scrape(move |m| {
            m.config_cache_entries
                .set(store.estimated_entries().try_into().unwrap_or(i64::MAX))
        });
    }
    // Reads the topic's metadata and watermarks, blocking: off the async workers.
    let (kafka, cache, rules) = (settings.kafka.clone(), store.clone(), settings.rules());
    let follower = tokio::task::spawn_blocking(move || ConfigFollower::start(&kafka, cache, rules))
        .await
        .map_err(|e| PipelineError::Start(format!("config follower start: {e}")))??;
    Ok((store, follower))
}

/// One consumer loop: what it reads, how much it takes on at once, and what happens to
/// each of its records (`handlers.rs`).
struct LoopSpec {
    name: &'static str,
    group: String,
    topics: Vec<String>,
    max_record_bytes: usize,
    limit: usize,
    in_flight_gauge: Option<&'static prometheus::IntGauge>,
    due: Option<fn(&InputRecord) -> Option<u64>>,
    /// At least once, a new owner of a partition learns what completed after the committed
    /// offset from the recent results (the input loop's records have them).
    learns_results: bool,
    handler: fn(Arc<Context>, InputRecord) -> RecordWork,
}

/// The three loops, in the order of their recorders: live input; the retry tiers, whose
/// records wait for their due time; operators' redeliveries, beside live input with a
/// bounded share of their own.
fn loops(settings: &Settings, tiers: &[String]) -> [LoopSpec; 3] {
    let kafka = &settings.kafka;
    // Parked records and redelivery requests embed an event and its attempts.
    let record_limit = internal_record_limit(settings.delivery.max_event_bytes);
    [
        LoopSpec {
            name: "input",
            group: kafka.group_id.clone(),
            topics: kafka.input_topics.clone(),
            max_record_bytes: settings.delivery.max_event_bytes,
            limit: settings.delivery.max_in_flight,
            in_flight_gauge: None,
            due: None,
            learns_results: true,
            handler: |c, r| Box::pin(handle_input(c, r)),
        },
        LoopSpec {
            name: "retry",
            group: format!("{}-retry", kafka.group_id),
            topics: tiers.to_vec(),
            max_record_bytes: record_limit,
            limit: settings.delivery.max_retrying,
            in_flight_gauge: Some(&metrics().retries_pending),
            due: Some(parked_due),
            learns_results: false,
            handler: |c, r| Box::pin(handle_parked(c, r)),
        },
        LoopSpec {
            name: "replay",
            group: format!("{}-replay", kafka.group_id),
            topics: vec![settings.replay_topic()],
            max_record_bytes: record_limit,
            limit: settings.replay.max_in_flight,
            in_flight_gauge: None,
            due: None,
            learns_results: false,
            handler: |c, r| Box::pin(handle_replay(c, r)),
        },
    ]
}

/// The processor's parts, started: the loops with their consumers and the context of their
/// record tasks, and what stops them.
pub struct Processor {
    loops: Vec<(LoopSpec, Arc<InputConsumer>, Arc<Context>)>,
    /// At least once, the producer all loops share (flushed at the end).
    input_recorder: Arc<Recorder>,
    exactly_once: bool,
    fatal: Fatal,
    stop: watch::Sender<bool>,
    drain: Duration,
    commit_every: Duration,
}

impl Processor {
    /// Makes the internal topics, the deliverer and the recorders, and joins the loops'
    /// groups, with `config` as the joined config and `disabler` carrying out receivers'
    /// requests to disable their webhooks.
    pub async fn start(
        settings: &Settings,
        config: Arc<dyn ConfigLookup>,
        disabler: Arc<dyn Disabler>,
    ) -> Result<Self, PipelineError> {
        let kafka = &settings.kafka;
        let tiers = tier_topics(&settings.retry_topic_prefix());
        let mut internal = tiers.clone();
        internal.push(settings.replay_topic());
        ensure_topics(kafka, &internal, TopicSpec::from_settings(settings))
            .await
            .map_err(PipelineError::Topics)?;
        crate::health::ensure_topics(settings)
            .await
            .map_err(PipelineError::Topics)?;
        if !settings.delivery.allow_cidrs.is_empty() {
            warn!(allow = ?settings.delivery.allow_cidrs, "destination guard opened for these ranges");
        }
        if settings.secrets.accept_v1_sealed {
            warn!("secrets.accept_v1_sealed is on: values sealed before they were bound to their record still open; seal them again with `secret seal --record`");
        }
        let deliverer = Arc::new(Deliverer::from_settings(settings)?.with_disabler(disabler));
        {
            let deliverer = deliverer.clone();
            metrics().on_scrape(move |m| deliverer.endpoints().report(m));
        }
        let fatal = Fatal::default();
        let exactly_once = kafka.processing_guarantee == Guarantee::ExactlyOnce;
        let outcome_limit = max_message_bytes(kafka, &kafka.outcome_topic)
            .await
            .unwrap_or(BROKER_DEFAULT_MAX_MESSAGE_BYTES);
        let recorders = start_recorders(settings, &tiers, outcome_limit, &fatal).await?;
        let input_recorder = recorders[0].clone();
        // At least once, a new owner of an input partition learns from the recent outcomes
        // and parked records what completed after the committed offset (exactly once, the
        // transactions make the committed offsets exact).
        let results = if exactly_once {
            None
        } else {
            let mut topics = vec![kafka.outcome_topic.clone()];
            topics.extend(tiers.iter().cloned());
            Some(Arc::new(
                Results::new(kafka, topics).map_err(InputError::from)?,
            ))
        };
        let (stop, stopping) = watch::channel(false);
        let mut started = Vec::new();
        for (spec, recorder) in loops(settings, &tiers).into_iter().zip(recorders) {
            let consumer = InputConsumer::subscribe(
                kafka,
                Subscription {
                    name: spec.name,
                    group: &spec.group,
                    topics: &spec.topics,
                    max_record_bytes: spec.max_record_bytes,
                    revoke_grace: Duration::from_secs(settings.shutdown.revoke_grace_secs),
                    transactions: exactly_once
                        .then(|| recorder.clone() as Arc<dyn crate::source::commit::Transactions>),
                    fatal: fatal.clone(),
                    results: results.clone().filter(|_| spec.learns_results),
                    // The input's partitions say this instance's share of the group.
                    share: (spec.name == "input").then(|| deliverer.group_share()),
                },
            )?;
            let context = Arc::new(Context {
                config: config.clone(),
                deliverer: deliverer.clone(),
                recorder: recorder.clone(),
                max_event_bytes: settings.delivery.max_event_bytes,
                stopping: stopping.clone(),
            });
            started.push((spec, Arc::new(consumer), context));
        }
        info!(topics = ?kafka.input_topics, group = kafka.group_id, "processing input");
        Ok(Processor {
            loops: started,
            input_recorder,
            exactly_once,
            fatal,
            stop,
            drain: Duration::from_secs(settings.shutdown.drain_deadline_secs),
            commit_every: Duration::from_millis(kafka.commit_interval_ms),
        })
    }

    /// Runs the loops until `shutdown`, a fatal error or the config follower's end; then
    /// drains what is under way (not after a fatal error), commits and leaves the groups.
    pub async fn run(
        &self,
        health: &Health,
        follower: &ConfigFollower,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), PipelineError> {
        let fatal = &self.fatal;
        // Each loop is a task of its own: a revocation waiting for its records (up to the
        // grace period, inside the consumer's poll) holds up only its own loop.
        let mut tasks = tokio::task::JoinSet::new();
        for (spec, consumer, context) in &self.loops {
            tasks.spawn(self.consume(spec, consumer.clone(), context.clone()));
        }
        let input = &self.loops[0].1;
        let mut loops_done = Box::pin(async {
            while let Some(done) = tasks.join_next().await {
                if let Err(e) = done {
                    error!(error = %e, "a consumer loop failed");
                }
            }
        });
        // Ends only when stopping.
        let readiness = ready_when_joined(input, health, self.stop.subscribe());
        let mut failed = None;
        tokio::select! {
            () = readiness => {}
            () = &mut loops_done => {}
            () = shutdown => {}
            () = follower_stopped(follower) => failed = Some(PipelineError::FollowerStopped),
            why = fatal.raised() => failed = Some(PipelineError::Fatal(why)),
        }
        health.set_stopping();
        let _ = self.stop.send(true);
        if fatal.is_raised() {
            // Nothing more completes: what is under way is redone after the restart.
            error!("fatal error: stopping without draining");
        } else {
            info!(
                deadline_secs = self.drain.as_secs(),
                "shutting down: draining deliveries under way"
            );
            tokio::select! {
                () = &mut loops_done => {}
                why = fatal.raised() => failed = Some(PipelineError::Fatal(why)),
            }
        }
        // Whatever is still under way (after a fatal error) ends here.
        drop(loops_done);
        tasks.abort_all();
        let settled = self.settle();
        failed.map_or(settled, Err)
    }

    /// One loop's task.
    fn consume(
        &self,
        spec: &LoopSpec,
        consumer: Arc<InputConsumer>,
        context: Arc<Context>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let (name, limit, gauge, due, handler) = (
            spec.name,
            spec.limit,
            spec.in_flight_gauge,
            spec.due,
            spec.handler,
        );
        let (fatal, stopping) = (self.fatal.clone(), self.stop.subscribe());
        let (drain, commit_every) = (self.drain, self.commit_every);
        async move {
            let l = Loop {
                name,
                consumer: &*consumer,
                limit,
                drain,
                in_flight_gauge: gauge,
                due,
                fatal: &fatal,
                commit_every,
            };
            consume(l, &context, stopping, handler).await;
        }
    }

    /// After the loops: progress is committed while the partitions are still ours (exactly
    /// once: with the last transaction), then the groups are left.
    fn settle(&self) -> Result<(), PipelineError> {
        // At least once, a flush that times out leaves unacknowledged records uncommitted:
        // the commit below only covers acknowledged work, so it happens anyway.
        let flushed = if self.exactly_once {
            Ok(())
        } else {
            self.input_recorder.flush(Duration::from_secs(10))
        };
        // After a fatal error, exactly once, the open transactions may hold results whose
        // records count as done wrongly (a failed commit voided them): nothing more commits.
        let mut committed = Ok(());
        let commit = !(self.exactly_once && self.fatal.is_raised());
        for (_, consumer, _) in &self.loops {
            if self.fatal.is_stuck() {
                // A producer hangs in C: calling it again would hang here too. Its
                // successor's registration aborts what it left open.
                consumer.unsubscribe();
                continue;
            }
            let result = if commit {
                tokio::task::block_in_place(|| consumer.commit())
            } else {
                tokio::task::block_in_place(|| consumer.abort())
            };
            if let Err(e) = result {
                warn!(error = %e, "final commit failed; the last records may be processed again");
                committed = Err(PipelineError::FinalCommit(e));
            }
            consumer.unsubscribe();
        }
        flushed?;
        committed
    }
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
/// without an assignment (more members than partitions: idle, but ready); then keeps
/// readiness in step with whether the cluster can be reached, until stopping.
async fn ready_when_joined(
    input: &InputConsumer,
    health: &Health,
    mut stopping: watch::Receiver<bool>,
) {
    const IDLE_READY_AFTER: Duration = Duration::from_secs(30);
    let started = tokio::time::Instant::now();
    loop {
        if input.joined() || started.elapsed() >= IDLE_READY_AFTER {
            health.set_joined();
        }
        health.set_reachable(input.reaches_the_cluster());
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
    }
}
