//! What happens to one record of each loop: an input event, a parked retry, a redelivery
//! request. Each ends in an outcome or a parked record (see `advance`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::Value;
use tracing::{debug, error, warn, Instrument};

use super::Context;
use crate::delivery::{unix_ms, Step};
use crate::domain::event::{self, EventError, FeedbackEvent};
use crate::domain::matching::Decision;
use crate::domain::outcome::{Attempt, Outcome, Reason, Replay, Source, WebhookRef};
use crate::domain::parked::Parked;
use crate::domain::payload;
use crate::domain::replay::ReplayRecord;
use crate::domain::time::rfc3339_millis;
use crate::join::join;
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
    context.recorder.outcome(&outcome).await;
    None
}

/// An input record: parse, join, first attempt. Always completes.
pub(super) async fn handle_input(context: Arc<Context>, record: InputRecord) -> bool {
    let source = source_of(&record);
    let payload = record.payload.as_deref();
    let Some(event) = parse_or_record_invalid(&context, payload, &source, &None).await else {
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
        let progress = Progress {
            attempts: Vec::new(),
            first_seen_ms,
            busy_parks: 0,
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
pub(super) async fn handle_parked(context: Arc<Context>, record: InputRecord) -> bool {
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
        busy_parks,
        ..
    } = parked;
    let progress = Progress {
        attempts,
        first_seen_ms,
        busy_parks,
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
    /// Parks in a row because the webhook's queue was full (they back off).
    busy_parks: u32,
    replay: Option<Replay>,
}

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
    let Some(event) = parse_or_record_invalid(&context, Some(&bytes), &source, &replay).await
    else {
        return true;
    };
    let span = event_span(&event);
    let progress = Progress {
        attempts: Vec::new(),
        first_seen_ms: unix_ms(SystemTime::now()),
        busy_parks: 0,
        replay,
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
        busy_parks,
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
            busy_parks,
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
            attempts,
            delay,
            busy,
            ..
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
                busy_parks: if busy {
                    busy_parks.saturating_add(1)
                } else {
                    0
                },
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
