//! The webhook of an org + sandbox (get, create, replace, delete, enable, disable) and the
//! inventory of an org's webhooks.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::auth::{allow, Caller};
use super::problem::Problem;
use super::versions::{check, etag, if_match, Expect};
use super::{write_record, AppState, Written};
use crate::domain::config::{ConfigKey, WebhookConfig};
use crate::join::{Stored, Version};
use crate::schema::Violation;

/// A stored record as callers see it: secrets replaced by their fingerprints, and its
/// version.
pub(super) fn view(state: &AppState, key: &ConfigKey, stored: &Stored<Vec<u8>>) -> Value {
    let record: Value = serde_json::from_slice(&stored.value).unwrap_or(Value::Null);
    let mut shown = super::secrets::redact(&record, state.sealing.as_ref(), &key.to_string());
    if let Some(object) = shown.as_object_mut() {
        object.insert("version".into(), Value::from(stored.version.to_string()));
    }
    shown
}

/// A record with its ETag.
pub(super) fn versioned(status: StatusCode, version: Version, body: Value) -> Response {
    (status, [(header::ETAG, etag(version))], Json(body)).into_response()
}

fn current(state: &AppState, key: &ConfigKey) -> Result<Option<Stored<Vec<u8>>>, Problem> {
    state
        .store
        .raw(key)
        .map_err(|e| Problem::unavailable(e.to_string()))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/webhook", tag = "webhooks", params(super::openapi::SandboxPath),
    responses((status = 200, description = "The webhook", body = super::openapi::Webhook, headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\"")))))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    Path((org, sandbox)): Path<(String, String)>,
) -> Result<Response, Problem> {
    allow(&caller, &org, Some(&sandbox), false)?;
    let key = ConfigKey::webhook(&org, &sandbox);
    let stored = current(&state, &key)?.ok_or_else(|| no_webhook(&org, &sandbox))?;
    Ok(versioned(
        StatusCode::OK,
        stored.version,
        view(&state, &key, &stored),
    ))
}

fn no_webhook(org: &str, sandbox: &str) -> Problem {
    Problem::not_found(format!("org {org:?} has no webhook in sandbox {sandbox:?}"))
}

/// Parses a JSON object body.
pub(super) fn object(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, Problem> {
    let body = body.map_err(|e| Problem::new(e.status(), "Bad request body", e.body_text()))?;
    match serde_json::from_slice(&body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Problem::invalid(vec![Violation {
            field: "".into(),
            message: "the body must be a JSON object".into(),
        }])),
        Err(e) => Err(Problem::bad_request(format!("the body is not JSON: {e}"))),
    }
}

/// Fills what the path says (`kind`, `imsOrg`, `sandbox.id`) and refuses a body that says
/// otherwise. A `version` echoed from a read is dropped.
fn from_path(body: &mut Map<String, Value>, org: &str, sandbox: &str) -> Vec<Violation> {
    let mut refused = Vec::new();
    let mut must = |field: &str, found: Option<&Value>, expected: &str| {
        if found.is_some_and(|f| f.as_str() != Some(expected)) {
            refused.push(Violation {
                field: field.to_owned(),
                message: format!("must be {expected:?}, as in the path"),
            });
        }
    };
    must("/kind", body.get("kind"), "webhook");
    must("/imsOrg", body.get("imsOrg"), org);
    must(
        "/sandbox/id",
        body.get("sandbox").and_then(|s| s.get("id")),
        sandbox,
    );
    body.remove("version");
    body.insert("kind".into(), json!("webhook"));
    body.insert("imsOrg".into(), json!(org));
    match body.get_mut("sandbox") {
        Some(Value::Object(s)) => {
            s.insert("id".into(), json!(sandbox));
        }
        None => {
            body.insert("sandbox".into(), json!({ "id": sandbox }));
        }
        Some(_) => {}
    }
    refused
}

/// `PUT`: creates (no `If-Match`; 409 when one exists) or replaces (`If-Match`; 412 when
/// it changed meanwhile).
#[utoipa::path(put, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/webhook", tag = "webhooks", params(super::openapi::SandboxPath, super::openapi::IfMatch),
    request_body = super::openapi::WebhookWrite,
    responses(
        (status = 201, description = "Created", body = super::openapi::Webhook, headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\""))),
        (status = 200, description = "Replaced", body = super::openapi::Webhook, headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\"")))))]
pub async fn put(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    Path((org, sandbox)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    allow(&caller, &org, Some(&sandbox), true)?;
    let mut body = object(body)?;
    let path_refusals = from_path(&mut body, &org, &sandbox);
    let key = ConfigKey::webhook(&org, &sandbox);
    let expect = if_match(&headers);
    let create = expect == Expect::Nothing;
    let written = write_record(&state, &caller, &key, |current| {
        check(&expect, current.map(|c| c.version), true, "the webhook")?;
        if !path_refusals.is_empty() {
            return Err(Problem::invalid(path_refusals.clone()));
        }
        Ok(Some(Value::Object(body.clone())))
    })
    .await?;
    respond(
        &state,
        &key,
        written,
        if create {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
    )
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/webhook", tag = "webhooks", params(super::openapi::SandboxPath, super::openapi::IfMatch),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    Path((org, sandbox)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    allow(&caller, &org, Some(&sandbox), true)?;
    let key = ConfigKey::webhook(&org, &sandbox);
    let expect = if_match(&headers);
    write_record(&state, &caller, &key, |current| {
        if current.is_none() {
            return Err(no_webhook(&org, &sandbox));
        }
        check(&expect, current.map(|c| c.version), false, "the webhook")?;
        Ok(None)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/webhook/enable", tag = "webhooks", params(super::openapi::SandboxPath, super::openapi::IfMatch),
    responses((status = 200, description = "Enabled", body = super::openapi::Webhook, headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\"")))))]
pub async fn enable(
    state: State<Arc<AppState>>,
    caller: Caller,
    path: Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    set_enabled(state, caller, path, headers, true).await
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/webhook/disable", tag = "webhooks", params(super::openapi::SandboxPath, super::openapi::IfMatch),
    responses((status = 200, description = "Disabled", body = super::openapi::Webhook, headers(("ETag" = String, description = "The record's version, \"{partition}-{offset}\"")))))]
pub async fn disable(
    state: State<Arc<AppState>>,
    caller: Caller,
    path: Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    set_enabled(state, caller, path, headers, false).await
}

/// Sets `enabled` on the current record (`If-Match` optional here: the change is one field).
async fn set_enabled(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    Path((org, sandbox)): Path<(String, String)>,
    headers: HeaderMap,
    enabled: bool,
) -> Result<Response, Problem> {
    allow(&caller, &org, Some(&sandbox), true)?;
    let key = ConfigKey::webhook(&org, &sandbox);
    let expect = if_match(&headers);
    let written = write_record(&state, &caller, &key, |current| {
        let Some(current) = current else {
            return Err(no_webhook(&org, &sandbox));
        };
        if expect != Expect::Nothing {
            check(&expect, Some(current.version), false, "the webhook")?;
        }
        let mut record: Value = serde_json::from_slice(&current.value)
            .map_err(|e| Problem::unavailable(format!("stored record unreadable: {e}")))?;
        record["enabled"] = Value::Bool(enabled);
        Ok(Some(record))
    })
    .await?;
    respond(&state, &key, written, StatusCode::OK)
}

fn respond(
    state: &AppState,
    key: &ConfigKey,
    written: Written,
    status: StatusCode,
) -> Result<Response, Problem> {
    let stored = current(state, key)?
        .filter(|s| s.version == written.version)
        .ok_or_else(|| Problem::unavailable("the record changed again before it could be read"))?;
    Ok(versioned(status, stored.version, view(state, key, &stored)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InventoryQuery {
    /// Case-insensitive part of the name.
    name: Option<String>,
    channel: Option<String>,
    enabled: Option<bool>,
    cursor: Option<String>,
    limit: Option<usize>,
}

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

/// Encodes the key a page ended at; the next page starts after it.
pub(super) fn cursor_of(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

pub(super) fn after_cursor(cursor: Option<&str>) -> Result<Option<String>, Problem> {
    cursor
        .map(|c| {
            URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| Problem::bad_request("cursor is not one this API gave"))
        })
        .transpose()
}

pub(super) fn limit_of(limit: Option<usize>) -> Result<usize, Problem> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        l @ 1..=MAX_LIMIT => Ok(l),
        _ => Err(Problem::bad_request(format!(
            "limit must be from 1 to {MAX_LIMIT}"
        ))),
    }
}

/// The org's webhooks the caller may see, filtered, in sandbox-id order, a page at a time.
/// `GET /orgs/{org}/webhooks`: the org's webhooks the caller may see, paged and filtered.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/webhooks", tag = "webhooks",
    params(super::openapi::OrgPath, InventoryQuery),
    responses((status = 200, description = "A page of webhooks", body = super::openapi::WebhookPage)))]
pub async fn inventory(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    Path(org): Path<String>,
    query: Result<Query<InventoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    allow(&caller, &org, None, false)?;
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let limit = limit_of(q.limit)?;
    let after = after_cursor(q.cursor.as_deref())?;
    let records = state
        .store
        .scan(&format!("webhook/{org}/"))
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    let name = q.name.as_deref().map(str::to_lowercase);
    let mut items = Vec::new();
    let mut next = None;
    for (key_text, stored) in records {
        if after.as_deref().is_some_and(|a| key_text.as_str() <= a) {
            continue;
        }
        let Ok(config) = serde_json::from_slice::<WebhookConfig>(&stored.value) else {
            continue;
        };
        if !caller.scope.sees(&org, &config.sandbox.id)
            || name
                .as_deref()
                .is_some_and(|n| !config.name.to_lowercase().contains(n))
            || q.channel
                .as_deref()
                .is_some_and(|c| !config.wants_channel(c))
            || q.enabled.is_some_and(|e| config.enabled != e)
        {
            continue;
        }
        if items.len() == limit {
            next = Some(cursor_of(&items_last_key(&items, &org)));
            break;
        }
        let key = ConfigKey::webhook(&org, &config.sandbox.id);
        items.push(view(&state, &key, &stored));
    }
    Ok(Json(json!({ "items": items, "nextCursor": next })).into_response())
}

fn items_last_key(items: &[Value], org: &str) -> String {
    let sandbox = items
        .last()
        .and_then(|i| i.pointer("/sandbox/id"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    ConfigKey::webhook(org, sandbox).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_fills_the_record_and_a_body_that_disagrees_is_refused() {
        let mut body = json!({"name": "n", "sandbox": {"name": "prod"}, "version": "0-1"});
        let body = body.as_object_mut().unwrap();
        assert!(from_path(body, "acme", "sb1").is_empty());
        assert_eq!(body["imsOrg"], "acme");
        assert_eq!(body["sandbox"], json!({"id": "sb1", "name": "prod"}));
        assert_eq!(body["kind"], "webhook");
        assert!(!body.contains_key("version"));

        let mut other = json!({"imsOrg": "evil", "sandbox": {"id": "x", "name": "p"}});
        let refused = from_path(other.as_object_mut().unwrap(), "acme", "sb1");
        let fields: Vec<&str> = refused.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["/imsOrg", "/sandbox/id"]);
    }

    #[test]
    fn cursors_round_trip_and_limits_are_bounded() {
        let c = cursor_of("webhook/acme/sb1");
        assert_eq!(
            after_cursor(Some(&c)).unwrap().as_deref(),
            Some("webhook/acme/sb1")
        );
        assert!(after_cursor(Some("!!")).is_err());
        assert_eq!(limit_of(None).unwrap(), DEFAULT_LIMIT);
        assert!(limit_of(Some(0)).is_err() && limit_of(Some(MAX_LIMIT + 1)).is_err());
    }
}
