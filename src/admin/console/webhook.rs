//! One webhook's page: what it is, enable/disable, send a test, and delete (with a
//! confirmation and the version the user saw).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use minijinja::context;
use serde::Deserialize;
use serde_json::Value;

use super::{answer, message, refused, render_status, said, urlencode, webhook_path, Signed};
use crate::admin::auth::Caller;
use crate::admin::problem::Problem;
use crate::admin::{send_test, webhooks, AppState};

/// The webhook as the API shows it (secrets as fingerprints), or why not.
pub(super) async fn read(
    state: &Arc<AppState>,
    signed: &Signed,
    org: &str,
    sandbox: &str,
) -> Result<Value, Problem> {
    let got = webhooks::get(
        State(state.clone()),
        Caller(signed.0.principal.clone()),
        Path((org.to_owned(), sandbox.to_owned())),
    )
    .await;
    Ok(answer(got).await?.body)
}

/// `If-Match` for the version a form was made from.
pub(super) fn if_match(version: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", version.trim())) {
        headers.insert(header::IF_MATCH, v);
    }
    headers
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
    match read(state, signed, org, sandbox).await {
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
    let args = (
        State(state.clone()),
        Caller(signed.0.principal.clone()),
        Path((org.clone(), sandbox.clone())),
        HeaderMap::new(),
    );
    let done = if form.enabled == "true" {
        webhooks::enable(args.0, args.1, args.2, args.3).await
    } else {
        webhooks::disable(args.0, args.1, args.2, args.3).await
    };
    match answer(done).await {
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
    let sent = send_test::send(
        State(state.clone()),
        Caller(signed.0.principal.clone()),
        Path((org.clone(), sandbox.clone())),
    )
    .await;
    let result = match answer(sent).await {
        Ok(a) => a.body,
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
    match read(&state, &signed, &org, &sandbox).await {
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
    let deleted = webhooks::delete(
        State(state.clone()),
        Caller(signed.0.principal.clone()),
        Path((org.clone(), sandbox.clone())),
        if_match(&form.version),
    )
    .await;
    match answer(deleted).await {
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
