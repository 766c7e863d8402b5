//! Campaign opt-ins of a sandbox: list, get, set (`PUT`, on by default), delete.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{allow, Caller};
use super::problem::Problem;
use super::versions::{check, if_match, Expect};
use super::webhooks::{after_cursor, cursor_of, limit_of, object, versioned, view};
use super::{write_record, AppState};
use crate::domain::config::ConfigKey;
use crate::schema::Violation;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    enabled: Option<bool>,
    cursor: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/campaigns", tag = "campaigns", params(super::openapi::SandboxPath, ListQuery),
    responses((status = 200, description = "A page of opt-ins", body = super::openapi::CampaignPage)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    Path((org, sandbox)): Path<(String, String)>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    allow(&caller, &org, Some(&sandbox), false)?;
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let limit = limit_of(q.limit)?;
    let after = after_cursor(q.cursor.as_deref())?;
    let records = state
        .store
        .scan(&format!("campaign/{org}/{sandbox}/"))
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    let mut items = Vec::new();
    let mut next = None;
    let mut last = String::new();
    for (key_text, stored) in records {
        if after.as_deref().is_some_and(|a| key_text.as_str() <= a) {
            continue;
        }
        let Ok(key) = ConfigKey::parse(&key_text) else {
            continue;
        };
        let shown = view(&state, &key, &stored);
        if q.enabled
            .is_some_and(|e| shown["webhooksEnabled"].as_bool() != Some(e))
        {
            continue;
        }
        if items.len() == limit {
            next = Some(cursor_of(&last));
            break;
        }
        last = key_text;
        items.push(shown);
    }
    Ok(Json(json!({ "items": items, "nextCursor": next })).into_response())
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/campaigns/{campaign}", tag = "campaigns", params(super::openapi::SandboxPath, ("campaign" = String, Path, description = "The campaign id")),
    responses((status = 200, description = "The opt-in", body = super::openapi::Campaign, headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\"")))))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    Path((org, sandbox, campaign)): Path<(String, String, String)>,
) -> Result<Response, Problem> {
    allow(&caller, &org, Some(&sandbox), false)?;
    let key = ConfigKey::campaign(&org, &sandbox, &campaign);
    let stored = state
        .store
        .raw(&key)
        .map_err(|e| Problem::unavailable(e.to_string()))?
        .ok_or_else(|| Problem::not_found(format!("campaign {campaign:?} has no opt-in record")))?;
    Ok(versioned(
        StatusCode::OK,
        stored.version,
        view(&state, &key, &stored),
    ))
}

/// Sets the opt-in: body `{"webhooksEnabled": true|false}`, or no body for `true`.
/// `If-Match` is honoured when given.
#[utoipa::path(put, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/campaigns/{campaign}", tag = "campaigns",
    params(super::openapi::SandboxPath, ("campaign" = String, Path, description = "The campaign id"), super::openapi::IfMatch),
    request_body(content = Option<super::openapi::CampaignWrite>),
    responses(
        (status = 201, description = "Opted in (or out)", body = super::openapi::Campaign, headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\""))),
        (status = 200, description = "Changed", body = super::openapi::Campaign, headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\"")))))]
pub async fn put(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    Path((org, sandbox, campaign)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    allow(&caller, &org, Some(&sandbox), true)?;
    let enabled = match &body {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Value::Bool(true),
        _ => object(body)?
            .remove("webhooksEnabled")
            .unwrap_or(Value::Bool(true)),
    };
    if !enabled.is_boolean() {
        return Err(Problem::invalid(vec![Violation {
            field: "/webhooksEnabled".into(),
            message: "must be true or false".into(),
        }]));
    }
    let key = ConfigKey::campaign(&org, &sandbox, &campaign);
    let expect = if_match(&headers);
    let written = write_record(&state, &caller, &key, |current| {
        if expect != Expect::Nothing {
            check(&expect, current.map(|c| c.version), false, "the opt-in")?;
        }
        Ok(Some(json!({
            "kind": "campaign",
            "imsOrg": org,
            "sandboxId": sandbox,
            "campaignID": campaign,
            "webhooksEnabled": enabled,
        })))
    })
    .await?;
    let stored = state
        .store
        .raw(&key)
        .map_err(|e| Problem::unavailable(e.to_string()))?
        .filter(|s| s.version == written.version)
        .ok_or_else(|| Problem::unavailable("the opt-in changed again before it could be read"))?;
    let status = if written.old.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(versioned(
        status,
        stored.version,
        view(&state, &key, &stored),
    ))
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/campaigns/{campaign}", tag = "campaigns",
    params(super::openapi::SandboxPath, ("campaign" = String, Path, description = "The campaign id"), super::openapi::IfMatch),
    responses((status = 204, description = "Removed")))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    Path((org, sandbox, campaign)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    allow(&caller, &org, Some(&sandbox), true)?;
    let key = ConfigKey::campaign(&org, &sandbox, &campaign);
    let expect = if_match(&headers);
    write_record(&state, &caller, &key, |current| {
        if current.is_none() {
            return Err(Problem::not_found(format!(
                "campaign {campaign:?} has no opt-in record"
            )));
        }
        if expect != Expect::Nothing {
            check(&expect, current.map(|c| c.version), false, "the opt-in")?;
        }
        Ok(None)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
