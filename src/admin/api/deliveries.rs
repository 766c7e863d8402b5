//! The delivery log of a webhook and redelivery: one event, or a window in the background
//! with its progress.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::shapes::{DeliveryPage, RedeliverWindow, Redelivery, RedeliveryStatus, SandboxPath};
use super::{bad_query, OnSandbox};
use crate::admin::problem::Problem;
use crate::admin::service::deliveries::{self, DeliveriesQuery};
use crate::admin::service::redeliver::{self, WindowRequest};

/// `GET .../webhook/deliveries`: the webhook's recent outcomes, newest first.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/webhook/deliveries", tag = "deliveries",
    params(SandboxPath, DeliveriesQuery),
    responses((status = 200, description = "A page of outcomes, newest first", body = DeliveryPage)))]
pub async fn list(
    on: OnSandbox,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    on.at().allow(false)?;
    let Query(q) = query.map_err(bad_query)?;
    Ok(Json(deliveries::list(on.service(), on.at(), &q).await?).into_response())
}

/// `POST .../webhook/deliveries/{eventId}/redeliver`: queues one event whose newest outcome
/// failed or was skipped.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/webhook/deliveries/{eventId}/redeliver", tag = "deliveries",
    params(SandboxPath, ("eventId" = String, Path, description = "The event's id")),
    responses((status = 202, description = "Queued for redelivery", body = Redelivery)))]
pub async fn one(
    on: OnSandbox,
    Path((_, _, event_id)): Path<(String, String, String)>,
) -> Result<Response, Problem> {
    let queued = redeliver::one(on.service(), on.at(), &event_id).await?;
    Ok((StatusCode::ACCEPTED, Json(queued)).into_response())
}

/// `POST .../webhook/redeliver`: queues the webhook's failed (or skipped) events of a
/// window, in the background; answers with the replay id and where its progress is.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/webhook/redeliver", tag = "deliveries", params(SandboxPath),
    request_body = RedeliverWindow,
    responses((status = 202, description = "Started", body = Redelivery,
        headers(("Location" = String, description = "Where its progress is")))))]
pub async fn window(
    on: OnSandbox,
    request: Result<Json<WindowRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    on.at().allow(true)?;
    let Json(request) = request.map_err(|e| Problem::bad_request(e.body_text()))?;
    let started = redeliver::window(on.service(), on.at(), &request).await?;
    let location = format!(
        "/api/v1/orgs/{}/sandboxes/{}/webhook/redeliver/{}",
        on.org, on.sandbox, started.replay_id
    );
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(started),
    )
        .into_response())
}

/// `GET .../webhook/redeliver/{replayId}`: a window redelivery's progress.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/sandboxes/{sandbox}/webhook/redeliver/{replayId}", tag = "deliveries",
    params(SandboxPath, ("replayId" = String, Path, description = "The redelivery's replay id")),
    responses((status = 200, description = "Its progress", body = RedeliveryStatus)))]
pub async fn progress(
    on: OnSandbox,
    Path((_, _, replay_id)): Path<(String, String, String)>,
) -> Result<Response, Problem> {
    let status = redeliver::progress(on.service(), on.at(), &replay_id)?;
    Ok(Json(status).into_response())
}
