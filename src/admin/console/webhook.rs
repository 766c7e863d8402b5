//! One webhook's page: what it is, enable/disable, send a test, and delete (with a
//! confirmation and the version the user saw).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use minijinja::context;
use serde::Deserialize;
use serde_json::Value;

use super::{message, refused, render_status, said, urlencode, webhook_path, Signed};
use crate::admin::problem::Problem;
use crate::admin::service::{send_test, webhooks, At};
use crate::admin::versions::Expect;
use crate::admin::AppState;

/// The webhook as the API shows it (secrets as fingerprints), or why not.
pub(super) fn read(
    state: &AppState,
    signed: &Signed,
    org: &str,
    sandbox: &str,
) -> Result<Value, Problem> {
    webhooks::get(&state.service, At::new(signed.caller(), org, sandbox)).map(|found| found.record)
}

pub async fn page(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path((org, sandbox)): Path<(String, String)>,
) -> Response {
    show(&state, &signed, &org, &sandbox, None).await
}

/// The page, with a test send's result when there is one.
async fn show(
    state: &Arc<AppState>,
    signed: &Signed,
    org: &str,
    sandbox: &str,
    test: Option<Value>,
) -> Response {
    match read(state, signed, org, sandbox) {
        Ok(webhook) => render_status(
            state,
            "webhook.html",
            StatusCode::OK,
            context! {
                webhook => super::value(&webhook),
                headers => super::value(super::form::headers_of(&webhook)),
                secrets => super::value(secret_prints(&webhook)),
                test => test.map(|t| super::value(&t)),
                ..signed.base(org, Some(sandbox))
            },
        ),
        Err(problem) if problem.status == StatusCode::NOT_FOUND => message(
            state,
            signed,
            org,
            StatusCode::NOT_FOUND,
            "This sandbox has no feedback webhook.",
            &format!(
                "/console/orgs/{}/webhooks?sandbox={}",
                urlencode(org),
                urlencode(sandbox)
            ),
        ),
        Err(problem) => refused(
            state,
            signed,
            org,
            &problem,
            &format!("/console/orgs/{}/webhooks", urlencode(org)),
        ),
    }
}

fn secret_prints(webhook: &Value) -> Vec<String> {
    super::form::WebhookForm::from_record(webhook).secrets
}

#[derive(Deserialize)]
pub struct Toggle {
    enabled: String,
}

/// Enables or disables the webhook (one field: no version needed), then shows it again.
pub async fn set_enabled(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path((org, sandbox)): Path<(String, String)>,
    Form(form): Form<Toggle>,
) -> Response {
    let enabled = form.enabled == "true";
    let done = webhooks::set_enabled(
        &state.service,
        At::new(signed.caller(), &org, &sandbox),
        &Expect::Nothing,
        enabled,
    )
    .await;
    match done {
        Ok(_) => Redirect::to(&webhook_path(&org, &sandbox)).into_response(),
        Err(problem) => refused(
            &state,
            &signed,
            &org,
            &problem,
            &webhook_path(&org, &sandbox),
        ),
    }
}

/// Sends the test payload through the processor's sender and shows what came back.
pub async fn send_test(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path((org, sandbox)): Path<(String, String)>,
) -> Response {
    let result =
        match send_test::send(&state.service, At::new(signed.caller(), &org, &sandbox)).await {
            Ok(got) => serde_json::to_value(got).unwrap_or(Value::Null),
            Err(problem) => serde_json::json!({ "refused": said(&problem) }),
        };
    show(&state, &signed, &org, &sandbox, Some(result)).await
}

/// Asks before deleting, naming the webhook and the version that will be deleted.
pub async fn confirm_delete(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path((org, sandbox)): Path<(String, String)>,
) -> Response {
    match read(&state, &signed, &org, &sandbox) {
        Ok(webhook) => render_status(
            &state,
            "delete.html",
            StatusCode::OK,
            context! {
                webhook => super::value(&webhook),
                ..signed.base(&org, Some(&sandbox))
            },
        ),
        Err(problem) => refused(
            &state,
            &signed,
            &org,
            &problem,
            &format!("/console/orgs/{}/webhooks", urlencode(&org)),
        ),
    }
}

#[derive(Deserialize)]
pub struct Delete {
    version: String,
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path((org, sandbox)): Path<(String, String)>,
    Form(form): Form<Delete>,
) -> Response {
    let expect = Expect::version(&form.version);
    let deleted = webhooks::delete(
        &state.service,
        At::new(signed.caller(), &org, &sandbox),
        &expect,
    )
    .await;
    match deleted {
        Ok(_) => Redirect::to(&format!(
            "/console/orgs/{}/webhooks?sandbox={}",
            urlencode(&org),
            urlencode(&sandbox)
        ))
        .into_response(),
        Err(problem) if problem.status == StatusCode::PRECONDITION_FAILED => message(
            &state,
            &signed,
            &org,
            problem.status,
            "Someone changed this webhook after you opened it, so it was not deleted. Review it, then delete it again if you still mean to.",
            &webhook_path(&org, &sandbox),
        ),
        Err(problem) => refused(&state, &signed, &org, &problem, &webhook_path(&org, &sandbox)),
    }
}
