//! Redeliver from the API: one event of the delivery log, or a webhook's failed (or skipped)
//! events of a window. Both queue on the redelivery topic with [`crate::replay`], as the
//! `replay` command does, under a new replay id the answer carries; the processor then
//! delivers them with the current config and their new outcomes carry that id.
//!
//! One event is queued before the answer. A window runs in the background; its progress is
//! kept by the instance that runs it (`GET .../webhook/redeliver/{replayId}`), the last
//! [`KEPT`] of them.

use super::budget::PerMinute;
use crate::admin::deliveries::Keep;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use super::{At, Service};
use crate::admin::problem::Problem;
use crate::domain::outcome::{Replay, Source};
use crate::domain::replay::{outcome_selected, Filters, ReplaySource, Window, ANY_REASON};
use crate::domain::time::unix_ms;
use crate::domain::time::{parse_rfc3339, rfc3339_millis};
use crate::kafka::ensure_topics;
use crate::replay::selection::{Plan, Scanner, Selection};
use crate::replay::{blocking, new_id, Counts, ReplayError, Reporter};
use crate::schema::Violation;
use crate::settings::Settings;

/// Window redeliveries whose progress an instance keeps.
pub const KEPT: usize = 100;

/// A window redelivery's progress, as served.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub replay_id: String,
    /// `running`, `done` or `failed`.
    pub state: &'static str,
    /// `outcomes` (choosing the events) or `queueing`.
    pub phase: &'static str,
    /// Records the phase reads.
    pub total: u64,
    #[serde(flatten)]
    pub counts: Counts,
    /// Events queued for redelivery when done.
    pub queued: u64,
    pub error: Option<String>,
    #[serde(skip)]
    org: String,
    #[serde(skip)]
    sandbox: String,
}

/// The progress of the window redeliveries this instance ran, and the budget of single
/// redeliveries.
pub struct Runs {
    runs: Mutex<VecDeque<Arc<Mutex<Status>>>>,
    /// Single-event redeliveries per webhook and minute.
    singles: PerMinute,
    /// Window redeliveries running at once, over all webhooks (one per webhook).
    max_running: usize,
}

impl Runs {
    pub fn from_settings(settings: &Settings) -> Self {
        Runs {
            runs: Mutex::default(),
            singles: PerMinute::new(settings.admin.redeliveries_per_minute),
            max_running: settings.admin.max_window_redeliveries.max(1),
        }
    }

    /// Registers a window redelivery as running: 409 while one of the same webhook runs,
    /// 429 while the most run.
    fn start(
        &self,
        replay_id: &str,
        org: &str,
        sandbox: &str,
    ) -> Result<Arc<Mutex<Status>>, Problem> {
        let Ok(mut runs) = self.runs.lock() else {
            return Err(Problem::unavailable("redelivery state unavailable"));
        };
        let running: Vec<(String, String, String)> = runs
            .iter()
            .filter_map(|s| {
                s.lock()
                    .ok()
                    .filter(|s| s.state == "running")
                    .map(|s| (s.org.clone(), s.sandbox.clone(), s.replay_id.clone()))
            })
            .collect();
        if let Some((_, _, id)) = running.iter().find(|(o, s, _)| o == org && s == sandbox) {
            return Err(Problem::conflict(
                "A redelivery is running",
                format!("redelivery {id} of this webhook is still running"),
            ));
        }
        if running.len() >= self.max_running {
            return Err(Problem::too_many(
                "Too many redeliveries",
                format!(
                    "quota admin.max_window_redeliveries: at most {} window redeliveries run at once",
                    self.max_running
                ),
            ));
        }
        let status = Arc::new(Mutex::new(Status {
            replay_id: replay_id.to_owned(),
            state: "running",
            phase: "outcomes",
            total: 0,
            counts: Counts::default(),
            queued: 0,
            error: None,
            org: org.to_owned(),
            sandbox: sandbox.to_owned(),
        }));
        if runs.len() == KEPT {
            runs.pop_front();
        }
        runs.push_back(status.clone());
        Ok(status)
    }

    fn find(&self, replay_id: &str, org: &str, sandbox: &str) -> Option<Status> {
        let runs = self.runs.lock().ok()?;
        runs.iter()
            .filter_map(|s| s.lock().ok().map(|s| s.clone()))
            .find(|s| s.replay_id == replay_id && s.org == org && s.sandbox == sandbox)
    }
}

/// Progress written where the status endpoint reads it.
struct Shared(Arc<Mutex<Status>>);

impl Reporter for Shared {
    fn phase(&mut self, name: &'static str, total: u64) {
        if let Ok(mut s) = self.0.lock() {
            s.phase = name;
            s.total = total;
            s.counts = Counts::default();
        }
    }

    fn tick(&mut self, counts: &Counts) {
        if let Ok(mut s) = self.0.lock() {
            s.counts = *counts;
        }
    }

    fn done(&mut self, counts: &Counts) {
        self.tick(counts);
    }
}

/// The body of a window redelivery.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowRequest {
    /// `failed` and/or `skipped` (default: failed).
    #[serde(default)]
    pub status: Option<Vec<String>>,
    /// RFC 3339; completed at or after.
    pub from: Option<String>,
    /// RFC 3339, exclusive; default now.
    pub to: Option<String>,
    /// With `skipped`: only these reasons (default: any).
    #[serde(default)]
    pub reasons: Option<Vec<String>>,
}

/// The selection a window request makes for a webhook, or each field refused and why.
pub fn window_selection(
    org: &str,
    sandbox: &str,
    request: &WindowRequest,
    now_ms: i64,
    max_width_ms: i64,
) -> Result<Selection, Vec<Violation>> {
    let mut refused = Vec::new();
    let statuses = request
        .status
        .clone()
        .unwrap_or_else(|| vec!["failed".into()]);
    if statuses.is_empty() {
        refused.push(violation("/status", "name failed and/or skipped"));
    }
    for (i, s) in statuses.iter().enumerate() {
        if s != "failed" && s != "skipped" {
            refused.push(violation(
                &format!("/status/{i}"),
                &format!("{s:?} cannot be redelivered: only failed or skipped"),
            ));
        }
    }
    for (i, reason) in request.reasons.iter().flatten().enumerate() {
        let skipped =
            serde_json::from_value::<crate::domain::outcome::Reason>(Value::from(reason.as_str()))
                .is_ok_and(|r| r.status() == crate::domain::outcome::Status::Skipped);
        if !skipped {
            refused.push(violation(
                &format!("/reasons/{i}"),
                &format!("{reason:?} is not a reason an event is skipped for"),
            ));
        }
    }
    let mut time = |field: &str, text: Option<&String>| -> Option<i64> {
        let text = text?;
        let at = parse_rfc3339(text).map(|t| unix_ms(t) as i64);
        if at.is_none() {
            refused.push(violation(field, "not an RFC 3339 time"));
        }
        at
    };
    let from_ms = time("/from", request.from.as_ref());
    let to_ms = time("/to", request.to.as_ref()).or(Some(now_ms));
    if request.from.is_none() {
        refused.push(violation("/from", "required: the start of the window"));
    }
    if let (Some(from), Some(to)) = (from_ms, to_ms) {
        if from >= to {
            refused.push(violation("/to", "must be after from"));
        } else if to - from > max_width_ms {
            let days = max_width_ms / 86_400_000;
            let why =
                format!("the window is at most {days} day(s) wide (the delivery log's retention)");
            refused.push(violation("/from", &why));
        }
    }
    if !refused.is_empty() {
        return Err(refused);
    }
    Ok(Selection {
        source: ReplaySource::Outcomes,
        window: Window { from_ms, to_ms },
        ranges: Vec::new(),
        all: false,
        filters: Filters {
            orgs: vec![org.to_owned()],
            sandboxes: vec![sandbox.to_owned()],
            ..Filters::default()
        },
        failed: statuses.iter().any(|s| s == "failed"),
        skipped_reasons: match (statuses.iter().any(|s| s == "skipped"), &request.reasons) {
            (false, _) => Vec::new(),
            (true, None) => vec![ANY_REASON.to_owned()],
            (true, Some(reasons)) => reasons.clone(),
        },
    })
}

fn violation(field: &str, message: &str) -> Violation {
    Violation {
        field: field.to_owned(),
        message: message.to_owned(),
    }
}

fn new_replay() -> Replay {
    Replay {
        id: new_id(),
        requested_at: rfc3339_millis(SystemTime::now()),
        source: ReplaySource::Outcomes.as_str().to_owned(),
    }
}

fn failed(e: ReplayError) -> Problem {
    warn!(error = %e, "redelivery not queued");
    Problem::unavailable(format!("redelivery not queued: {e}"))
}

async fn topic_ready(settings: &Settings) -> Result<(), Problem> {
    let topic = settings.replay_topic();
    ensure_topics(
        &settings.kafka,
        std::slice::from_ref(&topic),
        crate::kafka::TopicSpec::from_settings(settings),
    )
    .await
    .map_err(|e| failed(e.into()))
}

/// A redelivery queued or started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Queued {
    pub replay_id: String,
    /// Events queued (one event: 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<u64>,
    /// A window's state (`running`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
}

/// Queues one event whose newest outcome failed or was skipped.
pub async fn one(svc: &Service, at: At<'_>, event_id: &str) -> Result<Queued, Problem> {
    at.allow(true)?;
    let (caller, org, sandbox) = (at.caller, at.org, at.sandbox);
    let outcome = super::deliveries::latest(svc, at, event_id)
        .await?
        .ok_or_else(|| {
            Problem::not_found(format!(
                "no outcome of event {event_id:?} in the delivery log"
            ))
        })?;
    let singles = &svc.redeliveries.singles;
    if !singles.admit(&format!("{org}/{sandbox}")) {
        let most = singles.limit();
        return Err(Problem::too_many(
            "Too many redeliveries",
            format!("at most {most} single-event redeliveries a minute per webhook"),
        ));
    }
    let status = outcome["status"].as_str().unwrap_or_default();
    if status != "failed" && status != "skipped" {
        return Err(Problem::conflict(
            "Not redeliverable",
            format!("the event's last outcome is {status:?}: only failed or skipped events are redelivered"),
        ));
    }
    let source: Source = serde_json::from_value(outcome["source"].clone())
        .map_err(|_| Problem::unavailable("the outcome names no input record"))?;
    topic_ready(&svc.settings).await?;
    let replay = new_replay();
    let (settings, queued_replay) = (svc.settings.clone(), replay.clone());
    let queued = blocking(move || {
        Scanner::open(&settings, "admin")?.queue(
            &Filters::default(),
            &Plan::records([&source]),
            &queued_replay,
            false,
            &mut crate::replay::Quiet,
        )
    })
    .await
    .map_err(failed)?;
    if queued.queued == 0 {
        return Err(Problem::gone(
            "the event is no longer retained in the input topics",
        ));
    }
    info!(
        target: "feedback_webhooks::audit",
        who = caller.name, org, sandbox, event_id, replay_id = replay.id,
        "redelivery queued"
    );
    Ok(Queued {
        replay_id: replay.id,
        queued: Some(queued.queued),
        state: None,
    })
}

/// Starts queueing the webhook's failed (or skipped) events of a window, in the background;
/// its progress is asked for with [`progress`].
pub async fn window(svc: &Service, at: At<'_>, request: &WindowRequest) -> Result<Queued, Problem> {
    at.allow(true)?;
    let (caller, org, sandbox) = (at.caller, at.org, at.sandbox);
    let now = unix_ms(SystemTime::now()) as i64;
    let widest = Keep::from_settings(&svc.settings.admin).age.as_millis() as i64;
    let selection =
        window_selection(org, sandbox, request, now, widest).map_err(Problem::invalid)?;
    let replay = new_replay();
    let status = svc.redeliveries.start(&replay.id, org, sandbox)?;
    if let Err(problem) = topic_ready(&svc.settings).await {
        if let Ok(mut s) = status.lock() {
            s.state = "failed";
            s.error = Some(problem.detail.clone());
        }
        return Err(problem);
    }
    info!(
        target: "feedback_webhooks::audit",
        who = caller.name, org, sandbox, replay_id = replay.id,
        from = request.from, to = request.to,
        "redelivery of a window started"
    );
    let settings = svc.settings.clone();
    let log = svc.stores.deliveries.clone();
    let (org_owned, sandbox_owned) = (org.to_owned(), sandbox.to_owned());
    let id = replay.id.clone();
    tokio::spawn(async move {
        let progress = status.clone();
        let result = blocking(move || {
            let mut progress = Shared(progress);
            // The events come from this webhook's entries of the delivery log, not from
            // a read of every tenant's outcomes.
            let window = (
                selection.window.from_ms.unwrap_or(0).max(0) as u64,
                selection.window.to_ms.unwrap_or(i64::MAX).max(0) as u64,
            );
            let selected =
                |o: &Value| outcome_selected(o, selection.failed, &selection.skipped_reasons);
            progress.phase("outcomes", 0);
            let mut counts = Counts::default();
            let chosen = log
                .redeliverable(
                    &org_owned,
                    &sandbox_owned,
                    window,
                    &selected,
                    &mut |read, chosen| {
                        (counts.scanned, counts.matched) = (read, chosen);
                        progress.tick(&counts);
                    },
                )
                .map_err(|e| ReplayError::Refused(e.to_string()))?;
            progress.done(&counts);
            let scanner = Scanner::open(&settings, "admin")?;
            let plan = Plan::records(&chosen);
            scanner.queue(&Filters::default(), &plan, &replay, false, &mut progress)
        })
        .await;
        if let Ok(mut s) = status.lock() {
            match result {
                Ok(q) => {
                    s.state = "done";
                    s.queued = q.queued;
                    info!(
                        replay_id = s.replay_id,
                        queued = q.queued,
                        "redelivery of a window done"
                    );
                }
                Err(e) => {
                    warn!(replay_id = s.replay_id, error = %e, "redelivery of a window failed");
                    s.state = "failed";
                    s.error = Some(e.to_string());
                }
            }
        }
    });
    Ok(Queued {
        replay_id: id,
        queued: None,
        state: Some("running"),
    })
}

/// A window redelivery's progress, kept by the instance that runs it.
pub fn progress(svc: &Service, at: At<'_>, replay_id: &str) -> Result<Status, Problem> {
    at.allow(false)?;
    let (org, sandbox) = (at.org, at.sandbox);
    svc.redeliveries
        .find(replay_id, org, sandbox)
        .ok_or_else(|| Problem::not_found(format!("no redelivery {replay_id:?} on this instance")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(status: Option<Vec<&str>>, from: Option<&str>, to: Option<&str>) -> WindowRequest {
        WindowRequest {
            status: status.map(|s| s.into_iter().map(String::from).collect()),
            from: from.map(String::from),
            to: to.map(String::from),
            reasons: None,
        }
    }

    #[test]
    fn a_window_may_name_the_skip_reasons_it_takes() {
        let mut r = request(
            Some(vec!["failed", "skipped"]),
            Some("2026-11-27T10:00:00Z"),
            None,
        );
        r.reasons = Some(vec!["webhook_disabled".into()]);
        let s = window_selection("acme", "sb1", &r, 1_900_000_000_000, i64::MAX).unwrap();
        assert!(s.failed);
        assert_eq!(s.skipped_reasons, ["webhook_disabled"]);
        r.reasons = Some(vec!["retries_exhausted".into()]);
        let refused = window_selection("acme", "sb1", &r, 1_900_000_000_000, i64::MAX).unwrap_err();
        assert_eq!(refused[0].field, "/reasons/0");
    }

    #[test]
    fn a_window_selects_the_webhooks_failed_outcomes_by_default() {
        let s = window_selection(
            "acme",
            "sb1",
            &request(None, Some("2026-11-30T10:00:00Z"), None),
            1_800_000_000_000,
            i64::MAX,
        )
        .unwrap();
        assert_eq!(s.source, ReplaySource::Outcomes);
        assert!(s.failed && s.skipped_reasons.is_empty());
        assert_eq!(s.filters.orgs, ["acme"]);
        assert_eq!(s.filters.sandboxes, ["sb1"]);
        assert_eq!(s.window.to_ms, Some(1_800_000_000_000));
        assert!(s.check().is_ok());
        let skipped = window_selection(
            "acme",
            "sb1",
            &request(Some(vec!["skipped"]), Some("2026-11-30T10:00:00Z"), None),
            1_800_000_000_000,
            i64::MAX,
        )
        .unwrap();
        assert!(!skipped.failed);
        assert_eq!(skipped.skipped_reasons, [ANY_REASON]);
    }

    #[test]
    fn a_window_is_at_most_the_log_retention_wide() {
        let day = 86_400_000;
        let week = request(
            None,
            Some("2026-11-23T00:00:00Z"),
            Some("2026-11-30T00:00:00Z"),
        );
        assert!(window_selection("acme", "sb1", &week, 0, 7 * day).is_ok());
        let refused = window_selection("acme", "sb1", &week, 0, 6 * day).unwrap_err();
        assert_eq!(refused[0].field, "/from");
        assert!(
            refused[0].message.contains("at most 6 day(s)"),
            "{}",
            refused[0].message
        );
    }

    #[test]
    fn one_window_redelivery_per_webhook_and_a_few_in_all() {
        let mut settings = Settings::default();
        settings.admin.max_window_redeliveries = 2;
        let runs = Runs::from_settings(&settings);
        let first = runs.start("r1", "acme", "sb1").unwrap();
        let same = runs.start("r2", "acme", "sb1").unwrap_err();
        assert_eq!(same.status, axum::http::StatusCode::CONFLICT);
        assert!(same.detail.contains("r1"));
        runs.start("r3", "acme", "sb2").unwrap();
        let third = runs.start("r4", "globex", "sb1").unwrap_err();
        assert_eq!(third.status, axum::http::StatusCode::TOO_MANY_REQUESTS);
        // A finished one makes room, and its webhook may start again.
        first.lock().unwrap().state = "done";
        runs.start("r5", "acme", "sb1").unwrap();
    }

    #[test]
    fn every_bad_field_is_named() {
        let refused = window_selection(
            "acme",
            "sb1",
            &request(Some(vec!["failed", "delivered"]), None, Some("yesterday")),
            0,
            i64::MAX,
        )
        .unwrap_err();
        let fields: Vec<&str> = refused.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["/status/1", "/to", "/from"]);
        let backwards = window_selection(
            "acme",
            "sb1",
            &request(
                None,
                Some("2026-11-30T10:00:00Z"),
                Some("2026-11-30T09:00:00Z"),
            ),
            0,
            i64::MAX,
        )
        .unwrap_err();
        assert_eq!(backwards[0].field, "/to");
    }
}
