//! Create and edit a webhook: the form of the product's three sections (basic
//! configuration, authentication, header parameters) plus signing secrets. Saving goes
//! through the API's `PUT`: its refusals are shown next to their fields, and an edit made
//! meanwhile by someone else (412) is reported with a way to reload, never overwritten.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use minijinja::context;
use serde::Serialize;

use super::filter_rows::{choices, MAX_ROWS};
use super::form::{errors_by_field, Action, WebhookForm, MAX_HEADERS};
use super::page::{redirect, SandboxPage};
use super::webhook::read;
use super::{said, value};
use crate::admin::problem::Problem;
use crate::admin::service::webhooks::{self, WebhookInput};
use crate::admin::versions::Expect;

/// A banner above the form: what happened to the save.
#[derive(Serialize, Default)]
struct Banner {
    text: String,
    /// Where to start again from the current record.
    reload: Option<String>,
}

pub async fn new(page: SandboxPage) -> Response {
    if read(&page).is_ok() {
        return redirect(&format!("{}/edit", page.webhook_path()));
    }
    show(
        &page,
        &WebhookForm::blank(),
        BTreeMap::new(),
        None,
        StatusCode::OK,
    )
}

pub async fn edit(page: SandboxPage) -> Response {
    match read(&page) {
        Ok(webhook) => {
            let form = WebhookForm::from_record(&webhook);
            show(&page, &form, BTreeMap::new(), None, StatusCode::OK)
        }
        Err(problem) => page.refused(&problem, &page.inventory_path()),
    }
}

fn show(
    page: &SandboxPage,
    form: &WebhookForm,
    errors: BTreeMap<String, Vec<String>>,
    banner: Option<Banner>,
    status: StatusCode,
) -> Response {
    let (filter_fields, filter_ops) = choices();
    page.render(
        "edit.html",
        status,
        context! {
            form => value(form),
            errors => value(&errors),
            has_errors => !errors.is_empty(),
            banner => banner.map(value),
            creating => form.version.is_empty(),
            may_add_header => form.headers.len() < MAX_HEADERS,
            may_add_filter_row => form.filter_rows.len() < MAX_ROWS,
            filter_fields => filter_fields,
            filter_ops => filter_ops,
            bounds => value(page.service().bounds()),
            webhook_path => page.webhook_path(),
            ..page.base()
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
pub async fn submit(page: SandboxPage, Form(pairs): Form<Vec<(String, String)>>) -> Response {
    let (mut form, action) = WebhookForm::from_pairs(&pairs);
    if action != Action::Save {
        form.apply(&action, new_signing_secret);
        return show(&page, &form, BTreeMap::new(), None, StatusCode::OK);
    }
    let record = match form.to_record() {
        Ok(record) => record,
        Err(refused) => {
            let errors = errors_by_field(&refused, &form);
            return show(&page, &form, errors, None, StatusCode::UNPROCESSABLE_ENTITY);
        }
    };
    let expect = if form.version.is_empty() {
        Expect::Nothing
    } else {
        Expect::version(&form.version)
    };
    let saved = webhooks::put(page.service(), page.at(), &expect, WebhookInput(record)).await;
    let problem = match saved {
        Ok(_) => return redirect(&page.webhook_path()),
        Err(problem) => problem,
    };
    let banner = banner(&page, &problem);
    let errors = errors_by_field(&problem.errors, &form);
    show(&page, &form, errors, banner, problem.status)
}

/// What a refused save says above the form (field refusals are shown at their fields).
fn banner(page: &SandboxPage, problem: &Problem) -> Option<Banner> {
    let reload = Some(format!("{}/edit", page.webhook_path()));
    match problem.status {
        StatusCode::UNPROCESSABLE_ENTITY => None,
        StatusCode::PRECONDITION_FAILED => {
            let by = read(page)
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
            text: said(problem),
            reload: None,
        }),
    }
}
