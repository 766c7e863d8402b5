//! The admin console: server-rendered pages served by `feedback-webhooks admin` itself, on
//! the same state as the API (its cache, its delivery log, its tokens).
//!
//! - Sign in with an API token: the token is checked once and a random session id is kept
//!   in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` over TLS), never the token.
//! - Every form carries a CSRF token (the session's, or before sign-in a cookie's double):
//!   a state-changing request without it is refused.
//! - Every page: a Content-Security-Policy without inline scripts or styles,
//!   `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`; templates escape what they
//!   show.

mod session;

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use minijinja::{context, Environment};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::deliveries::Query as LogQuery;
use super::AppState;
use crate::domain::config::WebhookConfig;
pub use session::Sessions;
use session::{cookie, new_secret, Session, CSRF_COOKIE, SESSION_COOKIE};

const CSS: &str = include_str!("static/console.css");

/// The templates, parsed once.
pub fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, source) in [
        ("layout.html", include_str!("templates/layout.html")),
        ("sign_in.html", include_str!("templates/sign_in.html")),
        ("orgs.html", include_str!("templates/orgs.html")),
        ("inventory.html", include_str!("templates/inventory.html")),
        ("campaigns.html", include_str!("templates/campaigns.html")),
    ] {
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(name, error = %e, "console template does not parse");
        }
    }
    env
}

/// The console's routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console", get(home))
        .route("/console/", get(home))
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/sign-out", axum::routing::post(sign_out))
        .route("/console/org", get(pick_org))
        .route("/console/orgs/{org}/webhooks", get(inventory))
        .route(
            "/console/orgs/{org}/sandboxes/{sandbox}/campaigns",
            get(campaigns).post(set_campaign),
        )
        .route("/console/static/console.css", get(css))
        .layer(middleware::from_fn(page_headers))
}

/// Headers every console answer carries.
async fn page_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
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
    response
}

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
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

/// Where a signed-in caller starts: their org, or a choice of org for operators.
fn start_of(session: &Session) -> String {
    match &session.principal.scope {
        super::tokens::Scope::Operator => "/console/org".into(),
        super::tokens::Scope::Org(org) | super::tokens::Scope::Sandbox(org, _) => {
            format!("/console/orgs/{}/webhooks", urlencode(org))
        }
    }
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

async fn home(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match state.console.get(&headers) {
        Some(session) => Redirect::to(&start_of(&session)).into_response(),
        None => Redirect::to("/console/sign-in").into_response(),
    }
}

/// The sign-in form, with a CSRF token doubled in a cookie.
async fn sign_in_page(State(state): State<Arc<AppState>>) -> Response {
    sign_in_form(&state, None, StatusCode::OK)
}

fn sign_in_form(state: &AppState, error: Option<&str>, status: StatusCode) -> Response {
    let csrf = new_secret();
    let mut response = render(
        state,
        "sign_in.html",
        context! { csrf => csrf.clone(), error => error },
    );
    *response.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&cookie(CSRF_COOKIE, &csrf, state.secure_cookies, 600)) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
    csrf: String,
}

async fn sign_in(
    State(state): State<Arc<AppState>>,
    peer: Option<axum::Extension<super::auth::Peer>>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    if session::cookie_value(&headers, CSRF_COOKIE).as_deref() != Some(form.csrf.as_str()) {
        return refused_csrf();
    }
    // Failed sign-ins count with the API's failed authentications, per client address.
    let ip = peer.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |p| p.0 .0.ip());
    if !state.failures.allowed(ip, state.auth_failures_per_minute) {
        return sign_in_form(
            &state,
            Some("Too many failed sign-ins from this address; try again in a minute."),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let tokens = state.tokens.clone();
    let token = form.token.trim().to_owned();
    let principal = tokio::task::spawn_blocking(move || tokens.verify(&token))
        .await
        .ok()
        .flatten();
    let Some(principal) = principal else {
        state.failures.record(ip);
        crate::observe::metrics()
            .admin_auth_failures
            .with_label_values(&["unknown_token"])
            .inc();
        tracing::warn!(client = %ip, reason = "unknown_token", "console sign-in refused");
        return sign_in_form(
            &state,
            Some("That token is not valid."),
            StatusCode::UNAUTHORIZED,
        );
    };
    tracing::info!(who = principal.name, "console sign-in");
    let (id, session) = state.console.create(principal);
    let mut response = Redirect::to(&start_of(&session)).into_response();
    let max_age = session::LIFETIME.as_secs();
    for value in [
        cookie(SESSION_COOKIE, &id, state.secure_cookies, max_age),
        cookie(CSRF_COOKIE, "", state.secure_cookies, 0),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

#[derive(Deserialize)]
struct CsrfOnly {
    csrf: String,
}

async fn sign_out(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if let Some(session) = state.console.get(&headers) {
        if session.csrf != form.csrf {
            return refused_csrf();
        }
        state.console.remove(&headers);
    }
    let mut response = Redirect::to("/console/sign-in").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie(SESSION_COOKIE, "", state.secure_cookies, 0)) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

fn refused_csrf() -> Response {
    (
        StatusCode::FORBIDDEN,
        Html("<!doctype html><title>Refused</title><p>This form has expired or did not come from this console: reload the page and try again.</p>"),
    )
        .into_response()
}

#[derive(Deserialize)]
struct OrgPick {
    org: Option<String>,
}

async fn pick_org(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<OrgPick>,
) -> Response {
    let Some(session) = state.console.get(&headers) else {
        return Redirect::to("/console/sign-in").into_response();
    };
    match q.org.as_deref().map(str::trim).filter(|o| !o.is_empty()) {
        Some(org) => {
            Redirect::to(&format!("/console/orgs/{}/webhooks", urlencode(org))).into_response()
        }
        None => render(
            &state,
            "orgs.html",
            context! { who => session.principal.name, csrf => session.csrf },
        ),
    }
}

#[derive(Deserialize)]
struct InventoryFilters {
    name: Option<String>,
    channel: Option<String>,
}

/// One row of the inventory.
#[derive(Serialize)]
struct Row {
    name: String,
    sandbox: String,
    sandbox_path: String,
    channels: String,
    url: String,
    auth: String,
    enabled: bool,
    last_status: Option<String>,
    last_at: Option<String>,
}

async fn inventory(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(org): Path<String>,
    Query(filters): Query<InventoryFilters>,
) -> Response {
    let Some(session) = state.console.get(&headers) else {
        return Redirect::to("/console/sign-in").into_response();
    };
    let scope = &session.principal.scope;
    // Another org's webhooks do not exist for this caller: the page is simply empty.
    let records = if scope.sees_org(&org) {
        state
            .store
            .scan(&format!("webhook/{org}/"))
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let name = filters.name.clone().unwrap_or_default();
    let channel = filters.channel.clone().unwrap_or_default();
    let wanted = name.to_lowercase();
    let mut rows = Vec::new();
    for (_, stored) in records {
        let Ok(config) = serde_json::from_slice::<WebhookConfig>(&stored.value) else {
            continue;
        };
        if !scope.sees(&org, &config.sandbox.id)
            || (!wanted.is_empty() && !config.name.to_lowercase().contains(&wanted))
            || (!channel.is_empty() && !config.wants_channel(&channel))
        {
            continue;
        }
        let raw: Value = serde_json::from_slice(&stored.value).unwrap_or(Value::Null);
        let last = state
            .deliveries
            .query(
                &org,
                &config.sandbox.id,
                &LogQuery {
                    limit: 1,
                    ..LogQuery::default()
                },
            )
            .ok()
            .and_then(|(items, _)| items.into_iter().next());
        rows.push(Row {
            name: config.name.clone(),
            sandbox: config.sandbox.name.clone(),
            sandbox_path: urlencode(&config.sandbox.id),
            channels: config.channels.join(", "),
            url: config.url.clone(),
            auth: match raw.pointer("/authentication/type").and_then(Value::as_str) {
                Some("jwt") => "JWT".into(),
                _ => "None".into(),
            },
            enabled: config.enabled,
            last_status: last
                .as_ref()
                .and_then(|o| o["status"].as_str().map(str::to_owned)),
            last_at: last
                .as_ref()
                .and_then(|o| o["completedAt"].as_str().map(str::to_owned)),
        });
    }
    render(
        &state,
        "inventory.html",
        context! {
            who => session.principal.name,
            csrf => session.csrf,
            org_path => urlencode(&org),
            org => org,
            name => name,
            channel => channel,
            rows => minijinja::Value::from(minijinja::value::Serde(&rows)),
        },
    )
}

/// A campaign's opt-in, as listed.
#[derive(Serialize)]
struct CampaignRow {
    id: String,
    enabled: bool,
}

async fn campaigns(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((org, sandbox)): Path<(String, String)>,
) -> Response {
    let Some(session) = state.console.get(&headers) else {
        return Redirect::to("/console/sign-in").into_response();
    };
    campaigns_page(&state, &session, &org, &sandbox, None, StatusCode::OK)
}

fn campaigns_page(
    state: &AppState,
    session: &Session,
    org: &str,
    sandbox: &str,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    // Outside the token's scope there is nothing to show (no existence leak).
    let records = if session.principal.scope.sees(org, sandbox) {
        state
            .store
            .scan(&format!("campaign/{org}/{sandbox}/"))
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let rows: Vec<CampaignRow> = records
        .into_iter()
        .filter_map(|(_, stored)| serde_json::from_slice::<Value>(&stored.value).ok())
        .map(|v| CampaignRow {
            id: v["campaignID"].as_str().unwrap_or_default().to_owned(),
            enabled: v["webhooksEnabled"].as_bool().unwrap_or(false),
        })
        .collect();
    let mut response = render(
        state,
        "campaigns.html",
        context! {
            who => session.principal.name.clone(),
            csrf => session.csrf.clone(),
            org => org,
            sandbox => sandbox,
            org_path => urlencode(org),
            sandbox_path => urlencode(sandbox),
            error => error,
            rows => minijinja::Value::from(minijinja::value::Serde(&rows)),
        },
    );
    *response.status_mut() = status;
    response
}

#[derive(Deserialize)]
struct CampaignForm {
    csrf: String,
    campaign: String,
    enabled: String,
}

/// Turns a campaign's opt-in on or off (or adds it), through the API's own write path.
async fn set_campaign(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((org, sandbox)): Path<(String, String)>,
    Form(form): Form<CampaignForm>,
) -> Response {
    let Some(session) = state.console.get(&headers) else {
        return Redirect::to("/console/sign-in").into_response();
    };
    if session.csrf != form.csrf {
        return refused_csrf();
    }
    let campaign = form.campaign.trim();
    let refused =
        |why: String, status| campaigns_page(&state, &session, &org, &sandbox, Some(why), status);
    if let Err(problem) = super::auth::allow(&session.principal, &org, Some(&sandbox), true) {
        return refused(problem.detail, problem.status);
    }
    if campaign.is_empty() {
        return refused(
            "Give the campaign's id.".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    let key = crate::domain::config::ConfigKey::campaign(&org, &sandbox, campaign);
    let enabled = form.enabled == "true";
    let written = super::write_record(&state, &session.principal, &key, |_| {
        Ok(Some(serde_json::json!({
            "kind": "campaign",
            "imsOrg": org,
            "sandboxId": sandbox,
            "campaignID": campaign,
            "webhooksEnabled": enabled,
        })))
    })
    .await;
    match written {
        Ok(_) => Redirect::to(&format!(
            "/console/orgs/{}/sandboxes/{}/campaigns",
            urlencode(&org),
            urlencode(&sandbox)
        ))
        .into_response(),
        Err(problem) => {
            let why = problem
                .errors
                .iter()
                .map(|v| format!("{}: {}", v.field, v.message))
                .collect::<Vec<_>>()
                .join("; ");
            let why = if why.is_empty() { problem.detail } else { why };
            refused(why, problem.status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_escape_what_they_show() {
        let env = templates();
        let html = env
            .get_template("inventory.html")
            .unwrap()
            .render(context! {
                who => "<b>me</b>", csrf => "c", org => "acme", name => "", channel => "",
                rows => minijinja::Value::from(minijinja::value::Serde(vec![Row {
                    name: "<script>alert(1)</script>".into(), sandbox: "prod".into(),
                    sandbox_path: "sb1".into(),
                    channels: "email".into(), url: "https://h.example/x?a=1&b=2".into(),
                    auth: "JWT".into(), enabled: true, last_status: None, last_at: None,
                }])),
            })
            .unwrap();
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;b&gt;me&lt;&#x2f;b&gt;"));
        let campaigns = env
            .get_template("campaigns.html")
            .unwrap()
            .render(context! {
                who => "w", csrf => "c", org => "my org", sandbox => "sb/1",
                org_path => urlencode("my org"), sandbox_path => urlencode("sb/1"),
                rows => minijinja::Value::from(minijinja::value::Serde(vec![CampaignRow {
                    id: "c-1".into(), enabled: true,
                }])),
            })
            .unwrap();
        assert!(
            campaigns.contains("/console/orgs/my%20org/sandboxes/sb%2F1/campaigns"),
            "{campaigns}"
        );
        assert!(campaigns.contains("Disable webhooks for c-1"));
        for name in ["sign_in.html", "orgs.html"] {
            env.get_template(name)
                .unwrap()
                .render(context! { csrf => "c", who => "w" })
                .unwrap();
        }
    }
}
