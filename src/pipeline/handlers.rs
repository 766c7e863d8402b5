//! What happens to one record of each loop: an input event, a parked retry, a redelivery
//! request. Each ends in an outcome or a parked record (see `advance`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde_json::Value;
use tracing::{debug, error, warn, Instrument};

use super::Context;
use crate::delivery::{EventProgress, Step};
use crate::domain::config::WebhookConfig;
use crate::domain::event::{self, EventError, FeedbackEvent};
use crate::domain::health::{Observation, Signal};
use crate::domain::matching::Decision;
use crate::domain::outcome::{Attempt, Outcome, Reason, Replay, Source, Status, WebhookRef};
use crate::domain::parked::Parked;
use crate::domain::payload;
use crate::domain::replay::ReplayRecord;
use crate::domain::time::{after, bounded, rfc3339_millis, unix_ms};
use crate::join::{join, Joined, StoreError, Stored};
use crate::source::InputRecord;

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

/// Parses an event (of the input, or of a redelivery request); one that is not valid gets
/// its `invalid` outcome here, naming where it came from (and the replay, if any).
async fn parse_or_record_invalid(
    context: &Context,
    record: &InputRecord,
    payload: Option<&[u8]>,
    source: &Source,
    replay: &Option<Replay>,
) -> Option<FeedbackEvent> {
    let e = match event::parse(payload, context.max_event_bytes) {
        Ok(event) => return Some(event),
        Err(e) => e,
    };
    let reason = match e {
        EventError::TooLarge { .. } => Reason::EventTooLarge,
        _ => Reason::InvalidEvent,
    };
    let replay_id = replay.as_ref().map(|r| r.id.as_str());
    warn!(topic = source.topic, partition = source.partition, offset = source.offset, replay = replay_id, error = %e, "invalid event");
    let identity = event::identity_of_invalid(payload, context.max_event_bytes);
    let mut outcome = Outcome::invalid(identity, reason, source.clone(), now());
    outcome.replay = replay.clone();
    context.recorder.outcome(record, &outcome, None).await;
    None
}

/// An input record: parse, join, first attempt. Always completes.
pub(super) async fn handle_input(context: Arc<Context>, record: InputRecord) -> bool {
    let source = source_of(&record);
    let payload = record.payload.as_deref();
    let Some(event) = parse_or_record_invalid(&context, &record, payload, &source, &None).await
    else {
        return true;
    };
    let span = event_span(&event);
    let first_seen_ms = unix_ms(SystemTime::now());
    async {
        let raw = || {
            payload
                .and_then(|p| serde_json::from_slice(p).ok())
                .unwrap_or(Value::Null)
        };
        let progress = EventProgress {
            attempts: Vec::new(),
            first_seen_ms,
            busy_parks: 0,
            replay: None,
        };
        advance(&context, &record, &event, raw, progress, source).await;
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
            context.recorder.outcome(record, &outcome, None).await;
            None
        }
    }
}

/// A parked record: wait until due, then join with the current config and attempt again.
/// Returns `false` (not complete) when shutdown comes first: the record stays for a restart.
pub(super) async fn handle_parked(context: Arc<Context>, record: InputRecord) -> bool {
    // Only this processor writes the tiers.
    let Some(parked) = read_internal::<Parked>(&context, &record, "parked").await else {
        return true;
    };
    // Whatever the record says, the wait is bounded (a due time far off cannot overflow).
    let due = tokio::time::Instant::now()
        + bounded(Duration::from_millis(
            parked.due_ms.saturating_sub(unix_ms(SystemTime::now())),
        ));
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
            context.recorder.outcome(&record, &outcome, None).await;
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
        busy_parks,
        ..
    } = parked;
    let progress = EventProgress {
        attempts,
        first_seen_ms,
        busy_parks,
        replay,
    };
    advance(&context, &record, &event, move || raw, progress, source)
        .instrument(span)
        .await;
    true
}

/// Where an event stands: attempts so far, since when, and the replay redelivering it.
/// A redelivery request from an operator's replay: delivered like a new event (current
/// config, normal retries and isolation), its outcome marked with the replay.
pub(super) async fn handle_replay(context: Arc<Context>, record: InputRecord) -> bool {
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
    let replay = Some(replay);
    let Some(event) =
        parse_or_record_invalid(&context, &record, Some(&bytes), &source, &replay).await
    else {
        return true;
    };
    let span = event_span(&event);
    let progress = EventProgress {
        attempts: Vec::new(),
        first_seen_ms: unix_ms(SystemTime::now()),
        busy_parks: 0,
        replay,
    };
    advance(&context, &record, &event, move || raw, progress, source)
        .instrument(span)
        .await;
    true
}

/// Joins the event with the current config and takes the next step: an outcome, or a
/// parked record for a later attempt.
async fn advance(
    context: &Context,
    record: &InputRecord,
    event: &FeedbackEvent,
    raw_event: impl FnOnce() -> Value,
    mut progress: EventProgress,
    source: Source,
) {
    let end = |reason, webhook, progress, source| {
        finish(context, record, event, reason, webhook, progress, source)
    };
    let Some(joined) = join_current(context, event).await else {
        // A cached record that no longer decodes will not decode on a retry either.
        return end(Some(Reason::ConfigInvalid), None, progress, source).await;
    };
    let webhook_ref = joined.webhook.as_ref().map(|w| WebhookRef {
        name: w.value.name.clone(),
        url: w.value.url.clone(),
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
            return end(Some(reason), webhook_ref, progress, source).await;
        }
    };
    let body = Bytes::from(payload::to_body(&payload::build(event, channel, status)));
    let sent_before = progress.attempts.iter().filter(|a| a.was_sent()).count();
    let step = context
        .deliverer
        .step(event, &webhook, body, &mut progress)
        .await;
    match step {
        Step::Done {
            reason,
            webhook: used,
            attempts,
        } => {
            let signal = health_signal(event, &webhook, &attempts, sent_before, reason);
            progress.attempts = attempts;
            let outcome = outcome_of(event, reason, Some(used), progress, source);
            context
                .recorder
                .outcome(record, &outcome, signal.as_ref())
                .await;
        }
        Step::Park {
            attempts,
            delay,
            busy,
            webhook: used,
        } => {
            let signal = health_signal(event, &webhook, &attempts, sent_before, None);
            let due = after(SystemTime::now(), delay);
            let parked = Parked {
                kind: "retry".into(),
                event_id: event.id.clone(),
                event: raw_event(),
                source,
                attempts,
                first_seen_ms: progress.first_seen_ms,
                due_ms: unix_ms(due),
                busy_parks: if busy {
                    progress.busy_parks.saturating_add(1)
                } else {
                    0
                },
                replay: progress.replay,
            };
            park(
                context,
                record,
                event,
                (parked, delay),
                used,
                signal.as_ref(),
            )
            .await;
        }
    }
}

/// The joined config of the event, read again until the cache answers; `None` when its
/// record no longer decodes.
async fn join_current(context: &Context, event: &FeedbackEvent) -> Option<Joined> {
    loop {
        match join(&*context.config, event) {
            Ok(joined) => return Some(joined),
            Err(e @ StoreError::Corrupt { .. }) => {
                error!(error = %e, "cached config record unreadable");
                return None;
            }
            Err(e) => {
                error!(error = %e, "config cache read failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Ends the event: its outcome, with the attempts made and the replay it belongs to.
async fn finish(
    context: &Context,
    record: &InputRecord,
    event: &FeedbackEvent,
    reason: Option<Reason>,
    webhook: Option<WebhookRef>,
    progress: EventProgress,
    source: Source,
) {
    let outcome = outcome_of(event, reason, webhook, progress, source);
    context.recorder.outcome(record, &outcome, None).await;
}

fn outcome_of(
    event: &FeedbackEvent,
    reason: Option<Reason>,
    webhook: Option<WebhookRef>,
    progress: EventProgress,
    source: Source,
) -> Outcome {
    if progress.first_seen_ms > 0 {
        let ms = unix_ms(SystemTime::now()).saturating_sub(progress.first_seen_ms);
        crate::observe::metrics()
            .outcome_seconds
            .observe(ms as f64 / 1000.0);
    }
    let mut outcome = Outcome::for_event(event, reason, webhook, progress.attempts, source, now());
    outcome.replay = progress.replay;
    outcome
}

/// What a delivery step tells the webhook's health tracker: the request it made (the
/// attempts past the `sent_before` that were requests), and whether the event ended
/// failed. `None` when it did neither.
fn health_signal(
    event: &FeedbackEvent,
    webhook: &Stored<WebhookConfig>,
    attempts: &[Attempt],
    sent_before: usize,
    reason: Option<Reason>,
) -> Option<Signal> {
    let sent = attempts.iter().filter(|a| a.was_sent()).count() > sent_before;
    let last = attempts
        .iter()
        .rev()
        .find(|a| a.was_sent())
        .filter(|_| sent);
    let ended_failed = reason
        .filter(|r| r.status() == Status::Failed)
        .map(|r| r.as_str().to_owned());
    if !sent && ended_failed.is_none() {
        return None;
    }
    let http_status = last.and_then(|a| a.http_status);
    let observation = Observation {
        at_ms: unix_ms(SystemTime::now()),
        sent,
        ok: http_status.is_some_and(|s| (200..300).contains(&s)),
        ended_failed,
        http_status,
        error: last.and_then(|a| a.error.clone()),
    };
    Some(Signal::of(
        &event.ims_org,
        &event.sandbox.id,
        &webhook.version.to_string(),
        &observation,
    ))
}

/// Parks the event for another attempt after `delay`; a parked record the broker refuses
/// for good is never retried, so the event ends there, with its attempts.
async fn park(
    context: &Context,
    record: &InputRecord,
    event: &FeedbackEvent,
    (parked, delay): (Parked, Duration),
    webhook: WebhookRef,
    signal: Option<&Signal>,
) {
    debug!(
        delay_ms = delay.as_millis() as u64,
        attempts = parked.attempts.len(),
        "parked for retry"
    );
    if context
        .recorder
        .park(record, &parked, delay, signal)
        .await
        .is_ok()
    {
        return;
    }
    error!(
        event_id = event.id,
        "parked record refused by the broker; ending the event"
    );
    let Parked {
        attempts,
        source,
        replay,
        ..
    } = parked;
    let progress = EventProgress {
        attempts,
        replay,
        ..EventProgress::default()
    };
    let reason = Some(Reason::RetriesExhausted);
    finish(
        context,
        record,
        event,
        reason,
        Some(webhook),
        progress,
        source,
    )
    .await;
}

/// The due time of a parked record, without decoding its event.
pub(super) fn parked_due(record: &InputRecord) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Due {
        #[serde(rename = "dueMs")]
        due_ms: u64,
    }
    serde_json::from_slice::<Due>(record.payload.as_deref()?)
        .ok()
        .map(|d| d.due_ms)
}

#[cfg(test)]
mod tests {
    //! The handlers against an in-memory config and recorder: what each kind of record
    //! becomes, without a broker.

    use std::sync::Mutex;

    use serde_json::json;
    use tokio::sync::watch;

    use super::*;
    use crate::delivery::Deliverer;
    use crate::domain::config::tests::{sample_campaign, sample_webhook};
    use crate::domain::event::tests::spec_event;
    use crate::domain::outcome::Attempt;
    use crate::domain::outcome::Status;
    use crate::join::memory::MemoryConfig;
    use crate::record::memory::MemoryRecorder;
    use crate::settings::Settings;
    use crate::source::{OffsetTracker, PartitionKey};

    const ORG_OF_SPEC_EVENT: &str = "myImsOrg";

    struct Fixture {
        config: Arc<MemoryConfig>,
        recorder: Arc<MemoryRecorder>,
        context: Arc<Context>,
        tracker: Arc<Mutex<OffsetTracker>>,
        _stop: watch::Sender<bool>,
    }

    fn fixture() -> Fixture {
        let mut settings = Settings::default();
        settings.delivery.connect_timeout_ms = 1_000;
        settings.delivery.request_timeout_ms = 1_000;
        let deliverer = Deliverer::from_settings(&settings).unwrap();
        let config = Arc::new(MemoryConfig::default());
        let recorder = Arc::new(MemoryRecorder::default());
        let (stop, stopping) = watch::channel(false);
        let context = Arc::new(Context {
            config: config.clone(),
            deliverer: Arc::new(deliverer),
            recorder: recorder.clone(),
            max_event_bytes: 1 << 20,
            stopping,
        });
        Fixture {
            config,
            recorder,
            context,
            tracker: Arc::default(),
            _stop: stop,
        }
    }

    impl Fixture {
        /// The SPEC's example event as input record 1, handled to completion: its outcomes.
        async fn input_spec_event(&self) -> Vec<Outcome> {
            let event = serde_json::to_vec(&spec_event()).unwrap();
            assert!(handle_input(self.context.clone(), self.record("input", 1, &event)).await);
            self.outcomes()
        }

        fn record(&self, topic: &str, offset: i64, payload: &[u8]) -> InputRecord {
            let key = PartitionKey {
                topic: topic.into(),
                partition: 3,
            };
            InputRecord::received(&self.tracker, key, offset, Some(payload.to_vec())).unwrap()
        }

        fn outcomes(&self) -> Vec<Outcome> {
            self.recorder.outcomes.lock().unwrap().clone()
        }

        fn with_webhook(&self, url: &str) {
            let mut webhook = sample_webhook();
            webhook["url"] = json!(url);
            self.config
                .put_webhook(serde_json::from_value(webhook).unwrap());
            self.config
                .put_campaign(serde_json::from_value(sample_campaign()).unwrap());
        }
    }

    #[tokio::test]
    async fn an_invalid_event_becomes_an_invalid_outcome_naming_its_source() {
        let f = fixture();
        let record = f.record("input", 17, br#"{"_id": "e-1", "not": "an event"}"#);
        assert!(handle_input(f.context.clone(), record).await);
        let outcomes = f.outcomes();
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0].status, Status::Invalid);
        assert_eq!(outcomes[0].reason, Some(Reason::InvalidEvent));
        assert_eq!(outcomes[0].identity.event_id.as_deref(), Some("e-1"));
        assert_eq!(
            (outcomes[0].source.partition, outcomes[0].source.offset),
            (3, 17)
        );
        assert!(f.recorder.parked.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_event_without_a_webhook_is_skipped() {
        let f = fixture();
        let outcomes = f.input_spec_event().await;
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0].status, Status::Skipped);
        assert_eq!(outcomes[0].reason, Some(Reason::NoWebhook));
        assert!(outcomes[0].attempts.is_empty());
    }

    #[tokio::test]
    async fn a_campaign_that_has_not_opted_in_is_skipped_with_its_webhook_named() {
        let f = fixture();
        f.with_webhook("https://hooks.example.com/feedback");
        let mut campaign = sample_campaign();
        campaign["webhooksEnabled"] = json!(false);
        f.config
            .put_campaign(serde_json::from_value(campaign).unwrap());
        let outcomes = f.input_spec_event().await;
        assert_eq!(outcomes[0].reason, Some(Reason::CampaignNotEnabled));
        assert_eq!(
            outcomes[0].webhook.as_ref().map(|w| w.name.as_str()),
            Some("Order feedback")
        );
    }

    #[tokio::test]
    async fn a_destination_in_a_private_range_is_refused_without_a_request() {
        let f = fixture();
        f.with_webhook("https://10.1.2.3/feedback");
        let outcomes = f.input_spec_event().await;
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0].status, Status::Failed);
        assert_eq!(outcomes[0].reason, Some(Reason::DestinationBlocked));
        assert_eq!(outcomes[0].attempts.len(), 1);
        assert_eq!(outcomes[0].attempts[0].http_status, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_parked_event_waits_until_due_and_is_joined_with_the_current_config() {
        let f = fixture();
        // Parked after one failed attempt; its webhook was deleted meanwhile.
        let earlier = Attempt {
            at: now(),
            http_status: Some(503),
            error: None,
            duration_ms: 12,
        };
        let due_ms = unix_ms(SystemTime::now()) + 5_000;
        let parked = Parked {
            kind: "retry".into(),
            event_id: "5f0c1d2e-0000-4000-8000-000000000001".into(),
            event: spec_event(),
            source: Source {
                topic: "input".into(),
                partition: 1,
                offset: 99,
            },
            attempts: vec![earlier.clone()],
            first_seen_ms: unix_ms(SystemTime::now()),
            due_ms,
            busy_parks: 0,
            replay: None,
        };
        let record = f.record("retry-5s", 0, &parked.to_json());
        let handled = tokio::spawn(handle_parked(f.context.clone(), record));
        tokio::time::sleep(Duration::from_millis(4_000)).await;
        assert!(f.outcomes().is_empty(), "not before it is due");
        assert!(handled.await.unwrap());
        let outcomes = f.outcomes();
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0].reason, Some(Reason::NoWebhook));
        assert_eq!(outcomes[0].attempts, vec![earlier], "earlier attempts kept");
        assert_eq!(outcomes[0].source.offset, 99, "names the input record");
    }

    #[tokio::test]
    async fn an_unreadable_cached_record_ends_the_event_as_config_invalid() {
        let f = fixture();
        f.config.corrupt(ORG_OF_SPEC_EVENT);
        let outcomes = f.input_spec_event().await;
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0].status, Status::Skipped);
        assert_eq!(outcomes[0].reason, Some(Reason::ConfigInvalid));
    }

    #[tokio::test]
    async fn an_unreadable_parked_record_is_recorded_and_skipped() {
        let f = fixture();
        let record = f.record("retry-5s", 4, b"not json");
        assert!(handle_parked(f.context.clone(), record).await);
        let outcomes = f.outcomes();
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0].status, Status::Invalid);
        assert_eq!(
            (outcomes[0].source.topic.as_str(), outcomes[0].source.offset),
            ("retry-5s", 4)
        );
    }
}
