//! Create and edit a webhook: the form of the product's three sections (basic
//! configuration, authentication, header parameters) plus signing secrets. Saving goes
//! through the API's `PUT`: its refusals are shown next to their fields, and an edit made
//! meanwhile by someone else (412) is reported with a way to reload, never overwritten.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use minijinja::context;
use serde::Serialize;

use super::form::{errors_by_field, Action, WebhookForm, MAX_HEADERS};
use super::webhook::read;
use super::{refused, render_status, said, value, webhook_path, Signed};
use crate::admin::service::webhooks::{self, WebhookInput};
use crate::admin::service::At;
use crate::admin::versions::Expect;
use crate::admin::AppState;

/// A banner above the form: what happened to the save.
#[derive(Serialize, Default)]
struct Banner {
    text: String,
    /// Where to start again from the current record.
    reload: Option<String>,
}

pub async fn new(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path((org, sandbox)): Path<(String, String)>,
) -> Response {
    if read(&state, &signed, &org, &sandbox).is_ok() {
        return Redirect::to(&format!("{}/edit", webhook_path(&org, &sandbox))).into_response();
    }
    show(
        &state,
        &signed,
        (&org, &sandbox),
        &WebhookForm::blank(),
        BTreeMap::new(),
        None,
        StatusCode::OK,
    )
}

pub async fn edit(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path((org, sandbox)): Path<(String, String)>,
) -> Response {
    match read(&state, &signed, &org, &sandbox) {
        Ok(webhook) => show(
            &state,
            &signed,
            (&org, &sandbox),
            &WebhookForm::from_record(&webhook),
            BTreeMap::new(),
            None,
            StatusCode::OK,
        ),
        Err(problem) => refused(
            &state,
            &signed,
            &org,
            &problem,
            &format!("/console/orgs/{}/webhooks", super::urlencode(&org)),
        ),
    }
}

fn show(
    state: &AppState,
    signed: &Signed,
    (org, sandbox): (&str, &str),
    form: &WebhookForm,
    errors: BTreeMap<String, Vec<String>>,
    banner: Option<Banner>,
    status: StatusCode,
) -> Response {
    render_status(
        state,
        "edit.html",
        status,
        context! {
            form => value(form),
            errors => value(&errors),
            has_errors => !errors.is_empty(),
            banner => banner.map(value),
            creating => form.version.is_empty(),
            may_add_header => form.headers.len() < MAX_HEADERS,
            webhook_path => webhook_path(org, sandbox),
            ..signed.base(org, Some(sandbox))
        },
    )
}

/// A new signing secret in the Standard Webhooks form.
fn new_signing_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// Every submit of the form: an action on the form itself (add or remove a header row,
/// generate or remove a secret) shows it again; Save writes through the API.
pub async fn submit(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path((org, sandbox)): Path<(String, String)>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let at = (org.as_str(), sandbox.as_str());
    let (mut form, action) = WebhookForm::from_pairs(&pairs);
    if action != Action::Save {
        form.apply(&action, new_signing_secret);
        return show(
            &state,
            &signed,
            at,
            &form,
            BTreeMap::new(),
            None,
            StatusCode::OK,
        );
    }
    let record = match form.to_record() {
        Ok(record) => record,
        Err(refused) => {
            let errors = errors_by_field(&refused, &form);
            return show(
                &state,
                &signed,
                at,
                &form,
                errors,
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            );
        }
    };
    let expect = if form.version.is_empty() {
        Expect::Nothing
    } else {
        Expect::version(&form.version)
    };
    let input = WebhookInput(record);
    let saved = webhooks::put(
        &state.service,
        At::new(signed.caller(), &org, &sandbox),
        &expect,
        input,
    )
    .await;
    let problem = match saved {
        Ok(_) => return Redirect::to(&webhook_path(&org, &sandbox)).into_response(),
        Err(problem) => problem,
    };
    let reload = Some(format!("{}/edit", webhook_path(&org, &sandbox)));
    let banner = match problem.status {
        StatusCode::UNPROCESSABLE_ENTITY => None,
        StatusCode::PRECONDITION_FAILED => {
            let by = read(&state, &signed, &org, &sandbox)
                .ok()
                .map(|w| {
                    format!(
                        " ({} at {})",
                        w["updatedBy"].as_str().unwrap_or("someone"),
                        w["updatedAt"].as_str().unwrap_or("an unknown time")
                    )
                })
                .unwrap_or_default();
            Some(Banner {
                text: format!(
                    "Someone else changed this webhook since you opened it{by}. Your changes below were not saved: reload the current version and make them again."
                ),
                reload,
            })
        }
        StatusCode::CONFLICT => Some(Banner {
            text: "This sandbox already has a feedback webhook (one per org and sandbox): edit that one instead.".into(),
            reload,
        }),
        StatusCode::NOT_FOUND => Some(Banner {
            text: "This webhook was deleted since you opened it.".into(),
            reload: None,
        }),
        _ => Some(Banner {
            text: said(&problem),
            reload: None,
        }),
    };
    let errors = errors_by_field(&problem.errors, &form);
    show(&state, &signed, at, &form, errors, banner, problem.status)
}
