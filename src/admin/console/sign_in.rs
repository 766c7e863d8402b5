//! Signing in with an API token, signing out, and the org choice of operator tokens.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use minijinja::context;
use serde::Deserialize;

use super::session::{self, cookie, new_secret, Session, CSRF_COOKIE, SESSION_COOKIE};
use super::{render, urlencode, Signed};
use crate::admin::auth::Denied;
use crate::admin::tokens::Scope;
use crate::admin::AppState;

/// Where a signed-in caller starts: their org, or a choice of org for operators.
fn start_of(session: &Session) -> String {
    match &session.principal.scope {
        Scope::Operator => "/console/org".into(),
        Scope::Org(org) => format!("/console/orgs/{}/webhooks", urlencode(org)),
        Scope::Sandbox(org, sandbox) => format!(
            "/console/orgs/{}/webhooks?sandbox={}",
            urlencode(org),
            urlencode(sandbox)
        ),
    }
}

pub async fn home(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match state.console.get(&headers) {
        Some(session) => Redirect::to(&start_of(&session)).into_response(),
        None => Redirect::to("/console/sign-in").into_response(),
    }
}

/// The sign-in form, with a CSRF token doubled in a cookie.
pub async fn page(State(state): State<Arc<AppState>>) -> Response {
    form(&state, None, StatusCode::OK)
}

fn form(state: &AppState, error: Option<&str>, status: StatusCode) -> Response {
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

/// The sign-in form (its CSRF double is checked before, with every form).
#[derive(Deserialize)]
pub struct SignIn {
    token: String,
}

pub async fn sign_in(
    State(state): State<Arc<AppState>>,
    peer: Option<axum::Extension<crate::admin::auth::Peer>>,
    headers: HeaderMap,
    Form(sign_in): Form<SignIn>,
) -> Response {
    // Sign-ins go through the API's gate: failures count per client with the API's.
    let client = state.gate.client(peer.map(|p| p.0 .0.ip()), &headers);
    let principal = match state.gate.authenticate(client, Some(&sign_in.token)).await {
        Ok(principal) => principal,
        Err(Denied::Limited) => {
            return form(
                &state,
                Some("Too many failed sign-ins from this address; try again in a minute."),
                StatusCode::TOO_MANY_REQUESTS,
            )
        }
        Err(_) => {
            return form(
                &state,
                Some("That token is not valid."),
                StatusCode::UNAUTHORIZED,
            )
        }
    };
    tracing::info!(target: "feedback_webhooks::audit", who = principal.name, client = %client, "console sign-in");
    let (id, session) = state.console.create(principal, &headers);
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

pub async fn sign_out(
    State(state): State<Arc<AppState>>,
    peer: Option<axum::Extension<crate::admin::auth::Peer>>,
    headers: HeaderMap,
) -> Response {
    if let Some(session) = state.console.get(&headers) {
        let client = state.gate.client(peer.map(|p| p.0 .0.ip()), &headers);
        let who = &session.principal.name;
        tracing::info!(target: "feedback_webhooks::audit", who, client = %client, "console sign-out");
    }
    state.console.remove(&headers);
    let mut response = Redirect::to("/console/sign-in").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie(SESSION_COOKIE, "", state.secure_cookies, 0)) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

#[derive(Deserialize)]
pub struct OrgPick {
    org: Option<String>,
}

pub async fn pick_org(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Query(q): Query<OrgPick>,
) -> Response {
    match q.org.as_deref().map(str::trim).filter(|o| !o.is_empty()) {
        Some(org) => {
            Redirect::to(&format!("/console/orgs/{}/webhooks", urlencode(org))).into_response()
        }
        None => render(
            &state,
            "orgs.html",
            context! { who => signed.0.principal.name, csrf => signed.0.csrf },
        ),
    }
}
