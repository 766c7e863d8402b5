//! An org's notification endpoint: get, create or replace, delete.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::shapes::{IfMatch, NotificationEndpoint, NotificationWrite, OrgPath};
use super::{body, saved, versioned};
use crate::admin::auth::Caller;
use crate::admin::problem::Problem;
use crate::admin::service::{notification, object};
use crate::admin::versions::if_match;
use crate::admin::AppState;

#[utoipa::path(get, path = "/api/v1/orgs/{org}/notification-endpoint", tag = "notifications", params(OrgPath),
    responses((status = 200, description = "The org's notification endpoint", body = NotificationEndpoint, headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\"")))))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    Path(org): Path<String>,
) -> Result<Response, Problem> {
    Ok(versioned(
        StatusCode::OK,
        notification::get(&state.service, &caller, &org)?,
    ))
}

/// `PUT`: creates (no `If-Match`; 409 when one exists) or replaces (`If-Match`).
#[utoipa::path(put, path = "/api/v1/orgs/{org}/notification-endpoint", tag = "notifications", params(OrgPath, IfMatch),
    request_body = NotificationWrite,
    responses(
        (status = 201, description = "Created", body = NotificationEndpoint, headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\""))),
        (status = 200, description = "Replaced", body = NotificationEndpoint, headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\"")))))]
pub async fn put(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    Path(org): Path<String>,
    headers: HeaderMap,
    request: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = object(&body(request)?)?;
    let expect = if_match(&headers);
    Ok(saved(
        notification::put(&state.service, &caller, &org, &expect, body).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/notification-endpoint", tag = "notifications", params(OrgPath, IfMatch),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    Path(org): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    notification::delete(&state.service, &caller, &org, &if_match(&headers)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
