//! Campaign opt-ins of a sandbox: list, get, set (`PUT`, on by default), delete.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::shapes::{Campaign, CampaignPage, CampaignWrite, IfMatch, SandboxPath};
use super::{bad_query, body, saved, versioned};
use crate::admin::auth::Caller;
use crate::admin::problem::Problem;
use crate::admin::service::campaigns::{self, enabled_of, ListQuery};
use crate::admin::service::{allow, object, At};
use crate::admin::versions::if_match;
use crate::admin::AppState;

#[utoipa::path(get, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/campaigns", tag = "campaigns", params(SandboxPath, ListQuery),
    responses((status = 200, description = "A page of opt-ins", body = CampaignPage)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    Path((org, sandbox)): Path<(String, String)>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    allow(&caller, &org, Some(&sandbox), false)?;
    let Query(q) = query.map_err(bad_query)?;
    let page = campaigns::list(&state.service, At::new(&caller, &org, &sandbox), &q)?;
    Ok(Json(page).into_response())
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/campaigns/{campaign}", tag = "campaigns", params(SandboxPath, ("campaign" = String, Path, description = "The campaign id")),
    responses((status = 200, description = "The opt-in", body = Campaign, headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\"")))))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    Path((org, sandbox, campaign)): Path<(String, String, String)>,
) -> Result<Response, Problem> {
    let found = campaigns::get(&state.service, At::new(&caller, &org, &sandbox), &campaign)?;
    Ok(versioned(StatusCode::OK, found))
}

/// Sets the opt-in: body `{"webhooksEnabled": true|false}`, or no body for `true`.
/// `If-Match` is honoured when given.
#[utoipa::path(put, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/campaigns/{campaign}", tag = "campaigns",
    params(SandboxPath, ("campaign" = String, Path, description = "The campaign id"), IfMatch),
    request_body(content = Option<CampaignWrite>),
    responses(
        (status = 201, description = "Opted in (or out)", body = Campaign, headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\""))),
        (status = 200, description = "Changed", body = Campaign, headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\"")))))]
pub async fn put(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    Path((org, sandbox, campaign)): Path<(String, String, String)>,
    headers: HeaderMap,
    request: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    // Who may write is answered before what was sent.
    allow(&caller, &org, Some(&sandbox), true)?;
    let enabled = match request {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => true,
        request => enabled_of(object(&body(request)?)?)?,
    };
    let expect = if_match(&headers);
    let done = campaigns::put(
        &state.service,
        At::new(&caller, &org, &sandbox),
        &campaign,
        &expect,
        enabled,
    )
    .await?;
    Ok(saved(done))
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/campaigns/{campaign}", tag = "campaigns",
    params(SandboxPath, ("campaign" = String, Path, description = "The campaign id"), IfMatch),
    responses((status = 204, description = "Removed")))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    Path((org, sandbox, campaign)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let expect = if_match(&headers);
    campaigns::delete(
        &state.service,
        At::new(&caller, &org, &sandbox),
        &campaign,
        &expect,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
