//! One webhook's page: what it is, enable/disable (and re-enable with the redelivery of
//! what it missed), send a test, and delete (with a confirmation and the version the user
//! saw).

use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use minijinja::context;
use serde::Deserialize;
use serde_json::Value;

use super::page::{redirect, SandboxPage};
use super::{said, urlencode};
use crate::admin::problem::Problem;
use crate::admin::service::reenable::{self, Reenable};
use crate::admin::service::{send_test, webhooks};
use crate::admin::versions::Expect;

/// The webhook as the API shows it (secrets as fingerprints), or why not.
pub(super) fn read(page: &SandboxPage) -> Result<Value, Problem> {
    webhooks::get(page.service(), page.at()).map(|found| found.record)
}

pub async fn page(page: SandboxPage) -> Response {
    show(&page, None)
}

/// The page, with a test send's result when there is one.
fn show(page: &SandboxPage, test: Option<Value>) -> Response {
    match read(page) {
        Ok(webhook) => page.render(
            "webhook.html",
            StatusCode::OK,
            context! {
                webhook => super::value(&webhook),
                headers => super::value(super::form::headers_of(&webhook)),
                secrets => super::value(secret_prints(&webhook)),
                filter => webhook.get("filter").filter(|f| !f.is_null()).map(Value::to_string),
                last_error => super::inventory::last_error(&webhook["health"]),
                test => test.map(|t| super::value(&t)),
                ..page.base()
            },
        ),
        Err(problem) if problem.status == StatusCode::NOT_FOUND => page.message(
            StatusCode::NOT_FOUND,
            "This sandbox has no feedback webhook.",
            &page.sandbox_path(),
        ),
        Err(problem) => page.refused(&problem, &page.inventory_path()),
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
pub async fn set_enabled(page: SandboxPage, Form(form): Form<Toggle>) -> Response {
    let enabled = form.enabled == "true";
    let done = webhooks::set_enabled(page.service(), page.at(), &Expect::Nothing, enabled).await;
    match done {
        Ok(_) => redirect(&page.webhook_path()),
        Err(problem) => page.refused(&problem, &page.webhook_path()),
    }
}

/// Enables the webhook and redelivers what it missed while it was down, then shows the
/// redelivery's progress.
pub async fn reenable(page: SandboxPage) -> Response {
    let done = reenable::reenable(
        page.service(),
        page.at(),
        &Expect::Nothing,
        &Reenable::default(),
    )
    .await;
    match done {
        Ok((_, started)) => redirect(&format!(
            "{}/redeliver/{}",
            page.webhook_path(),
            urlencode(&started.replay_id)
        )),
        Err(problem) => page.refused(&problem, &page.webhook_path()),
    }
}

/// Sends the test payload through the processor's sender and shows what came back.
pub async fn send_test(page: SandboxPage) -> Response {
    let result = match send_test::send(page.service(), page.at()).await {
        Ok(got) => serde_json::to_value(got).unwrap_or(Value::Null),
        Err(problem) => serde_json::json!({ "refused": said(&problem) }),
    };
    show(&page, Some(result))
}

/// Asks before deleting, naming the webhook and the version that will be deleted.
pub async fn confirm_delete(page: SandboxPage) -> Response {
    match read(&page) {
        Ok(webhook) => page.render(
            "delete.html",
            StatusCode::OK,
            context! { webhook => super::value(&webhook), ..page.base() },
        ),
        Err(problem) => page.refused(&problem, &page.inventory_path()),
    }
}

#[derive(Deserialize)]
pub struct Delete {
    version: String,
}

pub async fn delete(page: SandboxPage, Form(form): Form<Delete>) -> Response {
    let expect = Expect::version(&form.version);
    match webhooks::delete(page.service(), page.at(), &expect).await {
        Ok(()) => redirect(&page.sandbox_path()),
        Err(problem) if problem.status == StatusCode::PRECONDITION_FAILED => page.message(
            problem.status,
            "Someone changed this webhook after you opened it, so it was not deleted. Review it, then delete it again if you still mean to.",
            &page.webhook_path(),
        ),
        Err(problem) => page.refused(&problem, &page.webhook_path()),
    }
}
