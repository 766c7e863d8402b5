//! The webhook of an org + sandbox (get, create, replace, delete, enable, disable, send a
//! test) and the inventory of an org's webhooks.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::shapes::{
    IfMatch, OperationalEventPage, OrgPath, ReenableBody, Reenabled, SandboxPath, Webhook,
    WebhookPage, WebhookWrite,
};
use super::{bad_query, body, saved, versioned, OnSandbox};
use crate::admin::auth::Caller;
use crate::admin::problem::Problem;
use crate::admin::service::allow;
use crate::admin::service::operational::{self, OperationalQuery};
use crate::admin::service::reenable::{self, Reenable};
use crate::admin::service::send_test::{self, TestResult};
use crate::admin::service::webhooks::{self, InventoryQuery, WebhookInput};
use crate::admin::versions::etag;
use crate::admin::versions::if_match;
use crate::admin::AppState;

#[utoipa::path(get, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/webhook", tag = "webhooks", params(SandboxPath),
    responses((status = 200, description = "The webhook", body = Webhook, headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\"")))))]
pub async fn get(on: OnSandbox) -> Result<Response, Problem> {
    Ok(versioned(
        StatusCode::OK,
        webhooks::get(on.service(), on.at())?,
    ))
}

/// `PUT`: creates (no `If-Match`; 409 when one exists) or replaces (`If-Match`; 412 when
/// it changed meanwhile).
#[utoipa::path(put, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/webhook", tag = "webhooks", params(SandboxPath, IfMatch),
    request_body = WebhookWrite,
    responses(
        (status = 201, description = "Created", body = Webhook, headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\""))),
        (status = 200, description = "Replaced", body = Webhook, headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\"")))))]
pub async fn put(
    on: OnSandbox,
    headers: HeaderMap,
    request: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    // Who may write is answered before what was sent.
    on.at().allow(true)?;
    let input = WebhookInput::parse(&body(request)?)?;
    let expect = if_match(&headers);
    Ok(saved(
        webhooks::put(on.service(), on.at(), &expect, input).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/webhook", tag = "webhooks", params(SandboxPath, IfMatch),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(on: OnSandbox, headers: HeaderMap) -> Result<Response, Problem> {
    webhooks::delete(on.service(), on.at(), &if_match(&headers)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/webhook/enable", tag = "webhooks", params(SandboxPath, IfMatch),
    responses((status = 200, description = "Enabled", body = Webhook, headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\"")))))]
pub async fn enable(on: OnSandbox, headers: HeaderMap) -> Result<Response, Problem> {
    set_enabled(on, headers, true).await
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/webhook/disable", tag = "webhooks", params(SandboxPath, IfMatch),
    responses((status = 200, description = "Disabled", body = Webhook, headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\"")))))]
pub async fn disable(on: OnSandbox, headers: HeaderMap) -> Result<Response, Problem> {
    set_enabled(on, headers, false).await
}

async fn set_enabled(
    on: OnSandbox,
    headers: HeaderMap,
    enabled: bool,
) -> Result<Response, Problem> {
    let expect = if_match(&headers);
    let done = webhooks::set_enabled(on.service(), on.at(), &expect, enabled).await?;
    Ok(versioned(StatusCode::OK, done))
}

/// `POST .../webhook/reenable`: enables the webhook and redelivers, as one window, what
/// failed or was skipped as `webhook_disabled` while it was down.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/webhook/reenable", tag = "webhooks", params(SandboxPath, IfMatch),
    request_body(content = Option<ReenableBody>, description = "Optional: where the redelivery starts"),
    responses((status = 202, description = "Enabled; the redelivery started", body = Reenabled,
        headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\""),
            ("Location" = String, description = "Where the redelivery's progress is")))))]
pub async fn reenable(
    on: OnSandbox,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let raw = body(raw)?;
    let request: Reenable = if raw.iter().all(u8::is_ascii_whitespace) {
        Reenable::default()
    } else {
        serde_json::from_slice(&raw).map_err(|e| Problem::bad_request(e.to_string()))?
    };
    let expect = if_match(&headers);
    let (enabled, started) = reenable::reenable(on.service(), on.at(), &expect, &request).await?;
    let location = format!(
        "/api/v1/orgs/{}/sandboxes/{}/webhook/redeliver/{}",
        on.org, on.sandbox, started.replay_id
    );
    // The path's parts were checked as ids, and a replay id is generated: always a value.
    let location = HeaderValue::from_str(&location)
        .map_err(|e| Problem::unavailable(format!("location: {e}")))?;
    Ok((
        StatusCode::ACCEPTED,
        [
            (header::ETAG, etag(enabled.version)),
            (header::LOCATION, location),
        ],
        Json(serde_json::json!({ "webhook": enabled.record, "redelivery": started })),
    )
        .into_response())
}

/// The org's webhooks the caller may see, filtered, in sandbox-id order, a page at a time.
/// `GET /orgs/{org}/webhooks`: the org's webhooks the caller may see, paged and filtered.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/webhooks", tag = "webhooks",
    params(OrgPath, InventoryQuery),
    responses((status = 200, description = "A page of webhooks", body = WebhookPage)))]
pub async fn inventory(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    Path(org): Path<String>,
    query: Result<Query<InventoryQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    allow(&caller, &org, None, false)?;
    let Query(q) = query.map_err(bad_query)?;
    let page = webhooks::inventory(&state.service, &caller, &org, &q).await?;
    Ok(Json(page).into_response())
}

/// `GET /orgs/{org}/operational-events`: the org's operational events the caller may see,
/// newest first, paged and filtered by sandbox and type.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/operational-events", tag = "webhooks",
    params(OrgPath, OperationalQuery),
    responses((status = 200, description = "A page of operational events, newest first", body = OperationalEventPage)))]
pub async fn operational_events(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    Path(org): Path<String>,
    query: Result<Query<OperationalQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    allow(&caller, &org, None, false)?;
    let Query(q) = query.map_err(bad_query)?;
    let page = operational::list(&state.service, &caller, &org, &q).await?;
    Ok(Json(page).into_response())
}

/// `POST .../webhook/test`: sends the SPEC's example payload through the processor's sender.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/webhook/test", tag = "webhooks", params(SandboxPath),
    responses((status = 200, description = "What the test send got", body = TestResult)))]
pub async fn send(on: OnSandbox) -> Result<Response, Problem> {
    Ok(Json(send_test::send(on.service(), on.at()).await?).into_response())
}
