//! Campaign opt-ins of a sandbox: list, get, set (`PUT`, on by default), delete.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::shapes::{Campaign, CampaignPage, CampaignWrite, IfMatch, SandboxPath};
use super::{bad_query, body, saved, versioned, OnSandbox};
use crate::admin::problem::Problem;
use crate::admin::service::campaigns::{self, enabled_of, ListQuery};
use crate::admin::service::object;
use crate::admin::versions::if_match;

#[utoipa::path(get, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/campaigns", tag = "campaigns", params(SandboxPath, ListQuery),
    responses((status = 200, description = "A page of opt-ins", body = CampaignPage)))]
pub async fn list(
    on: OnSandbox,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    on.at().allow(false)?;
    let Query(q) = query.map_err(bad_query)?;
    Ok(Json(campaigns::list(on.service(), on.at(), &q).await?).into_response())
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/campaigns/{campaign}", tag = "campaigns", params(SandboxPath, ("campaign" = String, Path, description = "The campaign id")),
    responses((status = 200, description = "The opt-in", body = Campaign, headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\"")))))]
pub async fn get(
    on: OnSandbox,
    Path((_, _, campaign)): Path<(String, String, String)>,
) -> Result<Response, Problem> {
    let found = campaigns::get(on.service(), on.at(), &campaign)?;
    Ok(versioned(StatusCode::OK, found))
}

/// Sets the opt-in: body `{"webhooksEnabled": true|false}`, or no body for `true`. As for
/// a webhook: without `If-Match` it creates (409 if there is one); with it, it replaces the
/// version named (412 if it changed).
#[utoipa::path(put, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/campaigns/{campaign}", tag = "campaigns",
    params(SandboxPath, ("campaign" = String, Path, description = "The campaign id"), IfMatch),
    request_body(content = Option<CampaignWrite>),
    responses(
        (status = 201, description = "Opted in (or out)", body = Campaign, headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\""))),
        (status = 200, description = "Changed", body = Campaign, headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\"")))))]
pub async fn put(
    on: OnSandbox,
    Path((_, _, campaign)): Path<(String, String, String)>,
    headers: HeaderMap,
    request: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    // Who may write is answered before what was sent.
    on.at().allow(true)?;
    let enabled = match request {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => true,
        request => enabled_of(object(&body(request)?)?)?,
    };
    let expect = if_match(&headers);
    let done = campaigns::put(on.service(), on.at(), &campaign, &expect, enabled).await?;
    Ok(saved(done))
}

/// Removes the opt-in of the version `If-Match` names (428 without it, 412 if it changed).
#[utoipa::path(delete, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/campaigns/{campaign}", tag = "campaigns",
    params(SandboxPath, ("campaign" = String, Path, description = "The campaign id"), IfMatch),
    responses((status = 204, description = "Removed")))]
pub async fn delete(
    on: OnSandbox,
    Path((_, _, campaign)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let expect = if_match(&headers);
    campaigns::delete(on.service(), on.at(), &campaign, &expect).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
