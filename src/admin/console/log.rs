//! The delivery log of a webhook: its outcomes newest first, filtered, each expandable to
//! its attempts; "Redeliver" on a failed or skipped one (then the event's page waits for
//! the new outcome), and "Redeliver failed since…" for a window (then its progress page
//! reloads itself until it is done).

use std::time::SystemTime;

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use minijinja::context;
use serde::Deserialize;
use serde_json::Value;

use super::page::{redirect, SandboxPage};
use super::{urlencode, value};
use crate::admin::deliveries::{LogQuery, Matching};
use crate::admin::service::redeliver::{self, WindowRequest};
use crate::admin::service::{deliveries, webhooks};
use crate::domain::time::{parse_rfc3339, rfc3339_millis, unix_ms};

/// Outcomes on one page.
const PAGE: usize = 50;

#[derive(Deserialize, Default)]
pub struct LogFilters {
    status: Option<String>,
    channel: Option<String>,
    feedback: Option<String>,
    /// `datetime-local` values, read as UTC.
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
}

/// A `datetime-local` value (`2026-11-30T10:00`, seconds optional) or RFC 3339, as Unix ms.
fn instant_of(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let full = match text.len() {
        16 => format!("{text}:00Z"),
        19 => format!("{text}Z"),
        _ => text.to_owned(),
    };
    parse_rfc3339(&full).map(unix_ms)
}

fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

pub async fn page(page: SandboxPage, Query(f): Query<LogFilters>) -> Response {
    let mut errors = Vec::new();
    let mut time = |name: &str, v: &Option<String>| {
        let text = given(v)?;
        let at = instant_of(&text);
        if at.is_none() {
            errors.push(format!("{name}: {text:?} is not a date and time"));
        }
        at
    };
    let query = LogQuery {
        matching: Matching {
            status: given(&f.status),
            channel: given(&f.channel),
            feedback_status: given(&f.feedback),
        },
        from_ms: time("From", &f.from),
        to_ms: time("To", &f.to),
        after: given(&f.cursor),
        limit: PAGE,
    };
    let (items, next) = match deliveries::search(page.service(), page.at(), query).await {
        Ok(found) => found,
        Err(problem) if problem.status == StatusCode::SERVICE_UNAVAILABLE => Default::default(),
        Err(problem) => return page.refused(&problem, &page.inventory_path()),
    };
    let next_query = next.map(|cursor| {
        let mut parts = vec![format!("cursor={}", urlencode(&cursor))];
        for (k, v) in [
            ("status", &f.status),
            ("channel", &f.channel),
            ("feedback", &f.feedback),
            ("from", &f.from),
            ("to", &f.to),
        ] {
            if let Some(v) = given(v) {
                parts.push(format!("{k}={}", urlencode(&v)));
            }
        }
        parts.join("&")
    });
    let name = webhooks::get(page.service(), page.at())
        .ok()
        .and_then(|w| w.record["name"].as_str().map(str::to_owned));
    page.render(
        "log.html",
        StatusCode::OK,
        context! {
            items => value(&items),
            next => next_query,
            errors => errors,
            status => given(&f.status),
            channel => given(&f.channel),
            feedback => given(&f.feedback),
            from => given(&f.from),
            to => given(&f.to),
            name => name,
            webhook_path => page.webhook_path(),
            ..page.base()
        },
    )
}

#[derive(Deserialize, Default)]
pub struct Waiting {
    /// The replay whose outcome the page waits for.
    replay: Option<String>,
}

/// An event's newest outcome; with `?replay=`, reloads until that redelivery's outcome is
/// in the log.
pub async fn event(
    page: SandboxPage,
    Path((_, _, event)): Path<(String, String, String)>,
    Query(w): Query<Waiting>,
) -> Response {
    let outcome = match deliveries::latest(page.service(), page.at(), &event).await {
        Ok(outcome) => outcome,
        Err(problem) if problem.status == StatusCode::SERVICE_UNAVAILABLE => None,
        Err(problem) => return page.refused(&problem, &page.inventory_path()),
    };
    let replay = given(&w.replay);
    let arrived = match (&replay, &outcome) {
        (Some(id), Some(o)) => o.pointer("/replay/id").and_then(Value::as_str) == Some(id),
        (None, _) => true,
        (Some(_), None) => false,
    };
    let ctx = context! {
        event => event.clone(),
        outcome => outcome.map(value),
        replay => replay,
        waiting => !arrived,
        log_path => page.log_path(),
        ..page.base()
    };
    page.render_waiting("event.html", ctx, !arrived)
}

/// Queues one failed or skipped event again, then waits on its page for the new outcome.
pub async fn redeliver_one(
    page: SandboxPage,
    Path((_, _, event)): Path<(String, String, String)>,
) -> Response {
    let event_path = format!("{}/{}", page.log_path(), urlencode(&event));
    match redeliver::one(page.service(), page.at(), &event).await {
        Ok(queued) => redirect(&format!(
            "{event_path}?replay={}",
            urlencode(&queued.replay_id)
        )),
        Err(problem) => page.refused(&problem, &event_path),
    }
}

#[derive(Deserialize)]
pub struct WindowForm {
    status: Option<String>,
    from: String,
    to: Option<String>,
}

/// Starts a redelivery of the window's failed (or skipped) events, then shows its progress.
pub async fn redeliver_window(page: SandboxPage, Form(form): Form<WindowForm>) -> Response {
    let rfc3339 = |text: &str| {
        instant_of(text)
            .map(|ms| rfc3339_millis(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms)))
            .unwrap_or_else(|| text.to_owned())
    };
    let request = WindowRequest {
        status: Some(vec![given(&form.status).unwrap_or_else(|| "failed".into())]),
        from: Some(rfc3339(&form.from)),
        to: given(&form.to).map(|t| rfc3339(&t)),
        reasons: None,
    };
    match redeliver::window(page.service(), page.at(), &request).await {
        Ok(started) => redirect(&format!(
            "{}/redeliver/{}",
            page.webhook_path(),
            urlencode(&started.replay_id)
        )),
        Err(problem) => page.refused(&problem, &page.log_path()),
    }
}

/// A window redelivery's progress; reloads itself until it is done.
pub async fn progress(
    page: SandboxPage,
    Path((_, _, replay)): Path<(String, String, String)>,
) -> Response {
    let status = match redeliver::progress(page.service(), page.at(), &replay) {
        Ok(status) => status,
        Err(problem) => return page.refused(&problem, &page.log_path()),
    };
    let running = status.state == "running";
    let ctx = context! {
        run => value(&status),
        running => running,
        log_path => page.log_path(),
        ..page.base()
    };
    page.render_waiting("progress.html", ctx, running)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_from_the_form_are_utc() {
        let at = instant_of("2026-11-30T10:00").unwrap();
        assert_eq!(Some(at), instant_of("2026-11-30T10:00:00Z"));
        assert_eq!(Some(at), instant_of("2026-11-30T10:00:00"));
        assert_eq!(instant_of(""), None);
        assert_eq!(instant_of("yesterday"), None);
    }
}
