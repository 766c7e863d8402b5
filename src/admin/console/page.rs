//! A signed-in page about one org + sandbox: who is signed in, where, and the answers such
//! a page gives (a rendered template, a refusal with a way back, a redirect).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::{message, refused, render_status, urlencode, webhook_path, Signed};
use crate::admin::problem::Problem;
use crate::admin::service::{At, Service};

/// How often a page waiting for work reloads itself, in seconds.
const RELOAD_SECONDS: &str = "1";

/// A console page on one org + sandbox.
pub type SandboxPage = crate::admin::OnSandbox<Signed>;

impl SandboxPage {
    pub fn service(&self) -> &Service {
        &self.state.service
    }

    /// The signed-in caller on this page's org + sandbox, as the operations take it.
    pub fn at(&self) -> At<'_> {
        At::new(self.who.caller(), &self.org, &self.sandbox)
    }

    /// What every page of this org + sandbox shows (who, the form token, where).
    pub fn base(&self) -> minijinja::Value {
        self.who.base(&self.org, Some(&self.sandbox))
    }

    pub fn render(&self, name: &str, status: StatusCode, ctx: minijinja::Value) -> Response {
        render_status(&self.state, name, status, ctx)
    }

    /// `render`, reloading itself every second while `waiting`.
    pub fn render_waiting(&self, name: &str, ctx: minijinja::Value, waiting: bool) -> Response {
        let mut response = self.render(name, StatusCode::OK, ctx);
        if waiting {
            response
                .headers_mut()
                .insert(header::REFRESH, HeaderValue::from_static(RELOAD_SECONDS));
        }
        response
    }

    /// What an operation refused, as a page with a way back to `back`.
    pub fn refused(&self, problem: &Problem, back: &str) -> Response {
        refused(&self.state, &self.who, &self.org, problem, back)
    }

    /// A short page saying why something was not done, with a way back to `back`.
    pub fn message(&self, status: StatusCode, text: &str, back: &str) -> Response {
        message(&self.state, &self.who, &self.org, status, text, back)
    }

    /// The webhook's page.
    pub fn webhook_path(&self) -> String {
        webhook_path(&self.org, &self.sandbox)
    }

    /// The webhook's delivery log.
    pub fn log_path(&self) -> String {
        format!("{}/deliveries", self.webhook_path())
    }

    /// The org's webhooks.
    pub fn inventory_path(&self) -> String {
        format!("/console/orgs/{}/webhooks", urlencode(&self.org))
    }

    /// The org's webhooks, this sandbox chosen.
    pub fn sandbox_path(&self) -> String {
        format!(
            "{}?sandbox={}",
            self.inventory_path(),
            urlencode(&self.sandbox)
        )
    }
}

pub fn redirect(to: &str) -> Response {
    Redirect::to(to).into_response()
}
