//! The admin console: server-rendered pages served by `feedback-webhooks admin` itself, on
//! the same state as the API (its cache, its delivery log, its tokens). Each page reads a
//! form, calls the operations of [`crate::admin::service`] the API calls, and renders what
//! they answer, so the console validates, versions, audits and refuses exactly as the API
//! does.
//!
//! - `sign_in.rs`: sign in with an API token, sign out, the org choice of operators.
//! - `inventory.rs`: the org's webhooks, the sandbox picker, "Create feedback webhook".
//! - `editor.rs` (with the pure `form.rs`): create and edit a webhook.
//! - `webhook.rs`: one webhook: enable/disable, send a test, delete.
//! - `log.rs`: the delivery log, redelivery of one event or of a window.
//! - `campaigns.rs`: a sandbox's campaign opt-ins.
//!
//! A signed-in browser holds a random session id in an `HttpOnly`, `SameSite=Strict`
//! cookie (`Secure` over TLS), never the token. Every form carries a CSRF token, checked
//! for every POST by one middleware (`csrf`) before any handler runs. Every page
//! has a Content-Security-Policy without inline code, `X-Frame-Options: DENY` and
//! `Referrer-Policy: no-referrer` (and over TLS, HSTS); templates escape what they show. No script: every
//! action is a form, and work that takes time reloads itself (`Refresh`).

mod campaigns;
mod editor;
mod events;
mod filter_rows;
mod form;
mod inventory;
mod log;
mod page;
mod session;
mod sign_in;
mod webhook;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use minijinja::{context, Environment};

use super::problem::Problem;
use super::AppState;
use session::Session;
pub use session::Sessions;

const CSS: &str = include_str!("static/console.css");

/// `(name, source)` of each template, embedded from `templates/{name}.html`.
macro_rules! templates {
    ($($name:ident),* $(,)?) => {
        [$((
            concat!(stringify!($name), ".html"),
            include_str!(concat!("templates/", stringify!($name), ".html")),
        )),*]
    };
}

/// Every page's template, by name.
const TEMPLATES: [(&str, &str); 13] = templates![
    layout, sign_in, orgs, inventory, campaigns, webhook, edit, delete, log, event, progress,
    message, events,
];

/// The templates, parsed once.
pub fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    // A path segment from a value (an event id, say), percent-encoded.
    env.add_filter("segment", |text: String| urlencode(&text));
    for (name, source) in TEMPLATES {
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(name, error = %e, "console template does not parse");
            debug_assert!(false, "{name}: {e:#}");
        }
    }
    env
}

/// The console's routes.
pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    const WEBHOOK: &str = "/console/orgs/{org}/sandboxes/{sandbox}/webhook";
    let at = |tail: &str| format!("{WEBHOOK}{tail}");
    Router::new()
        .route("/console", get(sign_in::home))
        .route("/console/", get(sign_in::home))
        .route(
            "/console/sign-in",
            get(sign_in::page).post(sign_in::sign_in),
        )
        .route("/console/sign-out", post(sign_in::sign_out))
        .route("/console/org", get(sign_in::pick_org))
        .route("/console/orgs/{org}/webhooks", get(inventory::page))
        .route("/console/orgs/{org}/events", get(events::page))
        .route(
            "/console/orgs/{org}/sandboxes/{sandbox}/campaigns",
            get(campaigns::page).post(campaigns::set),
        )
        .route(WEBHOOK, get(webhook::page))
        .route(&at("/enabled"), post(webhook::set_enabled))
        .route(&at("/reenable"), post(webhook::reenable))
        .route(&at("/test"), post(webhook::send_test))
        .route(
            &at("/delete"),
            get(webhook::confirm_delete).post(webhook::delete),
        )
        .route(&at("/new"), get(editor::new).post(editor::submit))
        .route(&at("/edit"), get(editor::edit).post(editor::submit))
        .route(&at("/deliveries"), get(log::page))
        .route(&at("/deliveries/{event}"), get(log::event))
        .route(
            &at("/deliveries/{event}/redeliver"),
            post(log::redeliver_one),
        )
        .route(&at("/redeliver"), post(log::redeliver_window))
        .route(&at("/redeliver/{replay}"), get(log::progress))
        .route("/console/static/console.css", get(css))
        .layer(middleware::from_fn_with_state(state.clone(), csrf))
        .layer(middleware::from_fn_with_state(state, page_headers))
}

/// The most a console form may hold.
const FORM_LIMIT: usize = 256 * 1024;

/// Every state-changing request (every POST) must carry the CSRF token of its session, or
/// before sign-in the double of its `fw_csrf` cookie, as its `csrf` form field; checked
/// here for all routes, so that no form can forget it.
async fn csrf(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, FORM_LIMIT).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response();
    };
    let expected = if parts.uri.path() == "/console/sign-in" {
        session::cookie_value(&parts.headers, session::CSRF_COOKIE)
    } else {
        match state.console.get(&parts.headers) {
            Some(session) => Some(session.csrf),
            // No session (expired, signed out): sign in again; nothing is done.
            None => return Redirect::to("/console/sign-in").into_response(),
        }
    };
    let given = url::form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned());
    if expected.is_none() || given != expected {
        return refused_csrf();
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// Headers every console answer carries (over TLS, HSTS too: a browser that has seen the
/// console never reaches it, or its session cookie, over plain HTTP).
async fn page_headers(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    if state.secure_cookies {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Pages show the caller's own data: never from a shared cache.
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

/// A signed-in request; without a live session, a redirect to the sign-in page.
pub struct Signed(pub Session);

impl FromRequestParts<Arc<AppState>> for Signed {
    type Rejection = Redirect;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Redirect> {
        let session = state.console.get(&parts.headers);
        let signed = session
            .map(Signed)
            .ok_or_else(|| Redirect::to("/console/sign-in"))?;
        let peer = parts.extensions.get::<crate::admin::auth::Peer>();
        let client = state.gate.client(peer.map(|p| p.0.ip()), &parts.headers);
        crate::admin::auth::Who::set(parts, &signed.0.principal.name, client);
        Ok(signed)
    }
}

impl Signed {
    /// Who is signed in, as the operations take it.
    fn caller(&self) -> &crate::admin::tokens::Principal {
        &self.0.principal
    }

    /// What every signed-in page shows.
    fn base(&self, org: &str, sandbox: Option<&str>) -> minijinja::Value {
        base(&self.0.principal.name, &self.0.csrf, org, sandbox)
    }
}

/// What every signed-in page shows: who is signed in, the form token, and where (the org
/// and sandbox, and their path segments).
fn base(who: &str, csrf: &str, org: &str, sandbox: Option<&str>) -> minijinja::Value {
    context! {
        who => who,
        csrf => csrf,
        org => org,
        org_path => urlencode(org),
        sandbox => sandbox,
        sandbox_path => sandbox.map(urlencode),
    }
}

fn render(state: &AppState, name: &str, ctx: minijinja::Value) -> Response {
    match state
        .console_templates
        .get_template(name)
        .and_then(|t| t.render(ctx))
    {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(name, error = %e, "console page not rendered");
            (StatusCode::INTERNAL_SERVER_ERROR, "page not rendered").into_response()
        }
    }
}

fn render_status(
    state: &AppState,
    name: &str,
    status: StatusCode,
    ctx: minijinja::Value,
) -> Response {
    let mut response = render(state, name, ctx);
    if response.status() == StatusCode::OK {
        *response.status_mut() = status;
    }
    response
}

/// Anything serializable, for a template.
fn value<T: serde::Serialize>(v: T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(v))
}

/// A short page saying why something was not done, with a way back.
fn message(
    state: &AppState,
    signed: &Signed,
    org: &str,
    status: StatusCode,
    text: &str,
    back: &str,
) -> Response {
    render_status(
        state,
        "message.html",
        status,
        context! { text => text, back => back, ..signed.base(org, None) },
    )
}

/// What the API refused, as a page with a way back.
fn refused(
    state: &AppState,
    signed: &Signed,
    org: &str,
    problem: &Problem,
    back: &str,
) -> Response {
    message(state, signed, org, problem.status, &said(problem), back)
}

fn refused_csrf() -> Response {
    (
        StatusCode::FORBIDDEN,
        Html("<!doctype html><title>Refused</title><p>This form has expired or did not come from this console: reload the page and try again.</p>"),
    )
        .into_response()
}

/// A problem as one line for a page: its field refusals, or its detail.
fn said(problem: &Problem) -> String {
    let fields = problem
        .errors
        .iter()
        .map(|v| format!("{}: {}", v.field, v.message))
        .collect::<Vec<_>>()
        .join("; ");
    if fields.is_empty() {
        problem.detail.clone()
    } else {
        fields
    }
}

/// The path of a webhook's pages.
fn webhook_path(org: &str, sandbox: &str) -> String {
    format!(
        "/console/orgs/{}/sandboxes/{}/webhook",
        urlencode(org),
        urlencode(sandbox)
    )
}

/// `text` as one URL path segment: everything but unreserved characters percent-encoded.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The page `name` rendered with `ctx` and the signed-in base of `who` on `org` (and
/// `sandbox`), for the pages' tests.
#[cfg(test)]
pub(crate) fn rendered(
    name: &str,
    (who, org, sandbox): (&str, &str, Option<&str>),
    ctx: minijinja::Value,
) -> String {
    let ctx = context! { ..ctx, ..base(who, "c", org, sandbox) };
    let html = templates().get_template(name).and_then(|t| t.render(ctx));
    html.unwrap_or_else(|e| panic!("{name}: {e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_path_segments_are_encoded() {
        let env = templates();
        for (name, _) in TEMPLATES {
            if let Err(e) = env.get_template(name) {
                panic!("{name}: {e:#}");
            }
        }
        assert_eq!(urlencode("my org/sb~1"), "my%20org%2Fsb~1");
        assert_eq!(
            webhook_path("a b", "s/1"),
            "/console/orgs/a%20b/sandboxes/s%2F1/webhook"
        );
    }
}
