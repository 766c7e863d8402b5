//! The HTTP API: each handler extracts (the caller, the path, the query or body), calls
//! one operation of [`crate::admin::service`] and responds. Every operation is documented
//! in the OpenAPI document (`openapi.rs`, with the shapes of `shapes.rs`).
//!
//! - `webhooks.rs`: the webhook of an org + sandbox, the inventory, test sends.
//! - `campaigns.rs`: campaign opt-ins.
//! - `deliveries.rs`: the delivery log and redelivery.
//! - `notification.rs`: an org's notification endpoint.

mod campaigns;
mod deliveries;
mod notification;
pub mod openapi;
pub mod shapes;
mod webhooks;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

use super::auth::Caller;
use super::problem::Problem;
use super::service::{At, Saved, Versioned};
use super::versions::etag;
use super::AppState;

/// The API's routes.
pub fn routes() -> Router<Arc<AppState>> {
    let webhook = "/api/v1/orgs/{org}/sandboxes/{sandbox}/webhook";
    let campaigns = "/api/v1/orgs/{org}/sandboxes/{sandbox}/campaigns";
    Router::new()
        .route("/api/v1/orgs/{org}/webhooks", get(webhooks::inventory))
        .route(
            "/api/v1/orgs/{org}/operational-events",
            get(webhooks::operational_events),
        )
        .route(
            "/api/v1/orgs/{org}/notification-endpoint",
            get(notification::get)
                .put(notification::put)
                .delete(notification::delete),
        )
        .route(
            webhook,
            get(webhooks::get)
                .put(webhooks::put)
                .delete(webhooks::delete),
        )
        .route(&format!("{webhook}/enable"), post(webhooks::enable))
        .route(&format!("{webhook}/disable"), post(webhooks::disable))
        .route(&format!("{webhook}/reenable"), post(webhooks::reenable))
        .route(&format!("{webhook}/test"), post(webhooks::send))
        .route(&format!("{webhook}/deliveries"), get(deliveries::list))
        .route(
            &format!("{webhook}/deliveries/{{eventId}}/redeliver"),
            post(deliveries::one),
        )
        .route(&format!("{webhook}/redeliver"), post(deliveries::window))
        .route(
            &format!("{webhook}/redeliver/{{replayId}}"),
            get(deliveries::progress),
        )
        .route(campaigns, get(campaigns::list))
        .route(
            &format!("{campaigns}/{{campaign}}"),
            get(campaigns::get)
                .put(campaigns::put)
                .delete(campaigns::delete),
        )
        .route(
            "/api/v1/openapi.json",
            get(|| async { Json(openapi::document()) }),
        )
}

/// A request of the API on one org + sandbox.
type OnSandbox = super::OnSandbox<Caller>;

impl OnSandbox {
    fn at(&self) -> At<'_> {
        At::new(&self.who.0, &self.org, &self.sandbox)
    }

    fn service(&self) -> &super::service::Service {
        &self.state.service
    }
}

/// A record with its ETag.
fn versioned(status: StatusCode, found: Versioned<Value>) -> Response {
    (
        status,
        [(header::ETAG, etag(found.version))],
        Json(found.record),
    )
        .into_response()
}

/// A write's answer: 201 when it created the record, else 200.
fn saved(saved: Saved) -> Response {
    let status = if saved.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    versioned(status, saved.record)
}

/// A request body, or why it could not be read.
fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Problem> {
    body.map_err(|e| Problem::new(e.status(), "Bad request body", e.body_text()))
}

/// A query string's rejection as a problem.
fn bad_query(e: axum::extract::rejection::QueryRejection) -> Problem {
    Problem::bad_request(e.body_text())
}
