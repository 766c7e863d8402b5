//! The delivery log of a webhook: its outcomes newest first, filtered, each expandable to
//! its attempts; "Redeliver" on a failed or skipped one (then the event's page waits for
//! the new outcome), and "Redeliver failed since…" for a window (then its progress page
//! reloads itself until it is done).

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use minijinja::context;
use serde::Deserialize;
use serde_json::Value;

use super::{refused, render_status, urlencode, value, webhook_path, Signed};
use crate::admin::deliveries::LogQuery;
use crate::admin::service::redeliver::{self, WindowRequest};
use crate::admin::service::{deliveries, webhooks, At};
use crate::admin::AppState;
use crate::domain::time::parse_rfc3339;
use crate::domain::time::unix_ms;

/// Outcomes on one page.
const PAGE: usize = 50;
/// How often a page waiting for work reloads itself, in seconds.
const RELOAD_SECONDS: &str = "1";

#[derive(Deserialize, Default)]
pub struct Filters {
    status: Option<String>,
    channel: Option<String>,
    feedback: Option<String>,
    /// `datetime-local` values, read as UTC.
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
}

/// Where a refused page leads back to.
fn inventory_path(org: &str) -> String {
    format!("/console/orgs/{}/webhooks", urlencode(org))
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

pub async fn page(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path((org, sandbox)): Path<(String, String)>,
    Query(f): Query<Filters>,
) -> Response {
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
        status: given(&f.status),
        channel: given(&f.channel),
        feedback_status: given(&f.feedback),
        from_ms: time("From", &f.from),
        to_ms: time("To", &f.to),
        after: given(&f.cursor),
        limit: PAGE,
    };
    let (items, next) = match deliveries::search(
        &state.service,
        At::new(signed.caller(), &org, &sandbox),
        &query,
    ) {
        Ok(found) => found,
        Err(problem) if problem.status == StatusCode::SERVICE_UNAVAILABLE => Default::default(),
        Err(problem) => return refused(&state, &signed, &org, &problem, &inventory_path(&org)),
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
    let name = webhooks::get(&state.service, At::new(signed.caller(), &org, &sandbox))
        .ok()
        .and_then(|w| w.record["name"].as_str().map(str::to_owned));
    render_status(
        &state,
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
            webhook_path => webhook_path(&org, &sandbox),
            ..signed.base(&org, Some(&sandbox))
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
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path((org, sandbox, event)): Path<(String, String, String)>,
    Query(w): Query<Waiting>,
) -> Response {
    let outcome = match deliveries::latest(
        &state.service,
        At::new(signed.caller(), &org, &sandbox),
        &event,
    ) {
        Ok(outcome) => outcome,
        Err(problem) if problem.status == StatusCode::SERVICE_UNAVAILABLE => None,
        Err(problem) => return refused(&state, &signed, &org, &problem, &inventory_path(&org)),
    };
    let replay = given(&w.replay);
    let arrived = match (&replay, &outcome) {
        (Some(id), Some(o)) => o.pointer("/replay/id").and_then(Value::as_str) == Some(id),
        (None, _) => true,
        (Some(_), None) => false,
    };
    let mut response = render_status(
        &state,
        "event.html",
        StatusCode::OK,
        context! {
            event => event.clone(),
            outcome => outcome.map(value),
            replay => replay,
            waiting => !arrived,
            log_path => format!("{}/deliveries", webhook_path(&org, &sandbox)),
            ..signed.base(&org, Some(&sandbox))
        },
    );
    if !arrived {
        response.headers_mut().insert(
            header::REFRESH,
            axum::http::HeaderValue::from_static(RELOAD_SECONDS),
        );
    }
    response
}

/// Queues one failed or skipped event again, then waits on its page for the new outcome.
pub async fn redeliver_one(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path((org, sandbox, event)): Path<(String, String, String)>,
) -> Response {
    let queued = redeliver::one(
        &state.service,
        At::new(signed.caller(), &org, &sandbox),
        &event,
    )
    .await;
    let event_path = format!(
        "{}/deliveries/{}",
        webhook_path(&org, &sandbox),
        urlencode(&event)
    );
    match queued {
        Ok(queued) => Redirect::to(&format!(
            "{event_path}?replay={}",
            urlencode(&queued.replay_id)
        ))
        .into_response(),
        Err(problem) => refused(&state, &signed, &org, &problem, &event_path),
    }
}

#[derive(Deserialize)]
pub struct Window {
    status: Option<String>,
    from: String,
    to: Option<String>,
}

/// Starts a redelivery of the window's failed (or skipped) events, then shows its progress.
pub async fn redeliver_window(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path((org, sandbox)): Path<(String, String)>,
    Form(form): Form<Window>,
) -> Response {
    let log = format!("{}/deliveries", webhook_path(&org, &sandbox));
    let rfc3339 = |text: &str| {
        instant_of(text)
            .map(|ms| {
                crate::domain::time::rfc3339_millis(
                    SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms),
                )
            })
            .unwrap_or_else(|| text.to_owned())
    };
    let request = WindowRequest {
        status: Some(vec![given(&form.status).unwrap_or_else(|| "failed".into())]),
        from: Some(rfc3339(&form.from)),
        to: given(&form.to).map(|t| rfc3339(&t)),
    };
    let started = redeliver::window(
        &state.service,
        At::new(signed.caller(), &org, &sandbox),
        &request,
    )
    .await;
    match started {
        Ok(started) => Redirect::to(&format!(
            "{}/redeliver/{}",
            webhook_path(&org, &sandbox),
            urlencode(&started.replay_id)
        ))
        .into_response(),
        Err(problem) => refused(&state, &signed, &org, &problem, &log),
    }
}

/// A window redelivery's progress; reloads itself until it is done.
pub async fn progress(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path((org, sandbox, replay)): Path<(String, String, String)>,
) -> Response {
    let got = redeliver::progress(
        &state.service,
        At::new(signed.caller(), &org, &sandbox),
        &replay,
    );
    let log = format!("{}/deliveries", webhook_path(&org, &sandbox));
    let status = match got {
        Ok(status) => status,
        Err(problem) => return refused(&state, &signed, &org, &problem, &log),
    };
    let running = status.state == "running";
    let mut response = render_status(
        &state,
        "progress.html",
        StatusCode::OK,
        context! {
            run => value(&status),
            running => running,
            log_path => log,
            ..signed.base(&org, Some(&sandbox))
        },
    );
    if running {
        response.headers_mut().insert(
            header::REFRESH,
            axum::http::HeaderValue::from_static(RELOAD_SECONDS),
        );
    }
    response
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
