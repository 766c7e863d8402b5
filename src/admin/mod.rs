//! `feedback-webhooks admin`: the administration API behind the admin console and
//! customers' own tooling. A sibling of the processor, not a mode of it: it shares the
//! domain rules, the schemas and the config cache (`join/`), and talks to the processor only
//! through the config topic.
//!
//! Two faces over one service:
//! - `service/`: the typed operations (webhooks, campaigns, the delivery log, test sends,
//!   redelivery) and the one write path to the config topic; no HTTP in them.
//! - `api/`: the HTTP API, handlers that extract, call an operation and respond; its
//!   OpenAPI document.
//! - `console/`: the admin console, server-rendered pages that call the same operations.
//!
//! And what they stand on:
//! - `tokens.rs`, `auth.rs`: who may call (tokens, the `Caller` of a request).
//! - `problem.rs`: every refusal, as `application/problem+json`.
//! - `versions.rs`: ETags and `If-Match`.
//! - `certs.rs`: the listener's certificate, reloaded when its files change.
//! - `secrets.rs`: write-only secrets (sealed on the way in, fingerprints on the way out).
//! - `publish.rs`: writes to the config topic, answered once the own cache applied them.
//! - `deliveries.rs`: the delivery log, the outcome topic indexed per webhook.
//! - `server.rs`: the TLS listener.

pub mod api;
pub mod auth;
mod certs;
mod console;
pub mod deliveries;
pub mod health_log;
pub mod problem;
pub mod secrets;
mod server;
pub mod service;
pub mod tokens;
pub mod versions;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tracing::{info, warn};

use self::problem::Problem;
use self::service::Service;
use self::tokens::{TokenError, Tokens};
use crate::domain::ids::Id;
use crate::join::follower::FollowerError;
use crate::join::publish::{PublishError, Publisher};
use crate::join::{ConfigFollower, ConfigStore, StoreError};
use crate::observe::{metrics, Health};
use crate::settings::{Settings, SettingsError};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Tokens(#[from] TokenError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Follower(#[from] FollowerError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("admin listener: {0}")]
    Listen(String),
    #[error(transparent)]
    Service(#[from] service::ServiceError),
    #[error(transparent)]
    Log(#[from] deliveries::LogError),
    #[error("operator port: {0}")]
    Operator(#[from] crate::observe::server::ServerError),
}

/// A request on one org + sandbox, for either face: the shared state, who asks (`W`: the
/// API's bearer `Caller` or the console's `Signed` session, extracted first, so that an
/// unauthenticated request learns nothing else) and the names of its path. A route with a
/// third name (a campaign, an event) extracts that itself.
pub(crate) struct OnSandbox<W> {
    pub state: Arc<AppState>,
    pub who: W,
    pub org: String,
    pub sandbox: String,
}

#[derive(serde::Deserialize)]
struct SandboxNames {
    org: String,
    sandbox: String,
}

impl<W> axum::extract::FromRequestParts<Arc<AppState>> for OnSandbox<W>
where
    W: axum::extract::FromRequestParts<Arc<AppState>> + Send,
    W::Rejection: IntoResponse,
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let who = W::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let axum::extract::Path(names) =
            axum::extract::Path::<SandboxNames>::from_request_parts(parts, state)
                .await
                .map_err(IntoResponse::into_response)?;
        // `%2F` decodes to `/`: the ids keep the record grammar before they reach any key.
        for (id, value) in [(Id::Org, &names.org), (Id::Sandbox, &names.sandbox)] {
            id.check(value)
                .map_err(|why| Problem::bad_request(why).into_response())?;
        }
        Ok(OnSandbox {
            state: state.clone(),
            who,
            org: names.org,
            sandbox: names.sandbox,
        })
    }
}

/// What every request of either face shares.
pub struct AppState {
    /// The operations both faces call.
    pub service: Service,
    /// Who is calling: tokens, and failures per client.
    pub gate: auth::Gate,
    pub health: Arc<Health>,
    /// The console's signed-in browsers, and its pages.
    pub console: console::Sessions,
    pub console_templates: minijinja::Environment<'static>,
    /// Cookies are `Secure` when the listener has TLS.
    pub secure_cookies: bool,
}

/// Both faces' routes, behind the answers' common rules.
pub fn app(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    api::routes()
        .merge(console::router(state.clone()))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .fallback(|| async { Problem::not_found("no such resource") })
        .layer(middleware::from_fn(problems_and_headers))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.health.ready() {
        Ok(()) => "ready\n".into_response(),
        Err(why) => Problem::unavailable(format!("not ready: {why}")).into_response(),
    }
}

/// A request method as a metric label: the methods HTTP defines, or `other`, so that made-up
/// methods cannot add series.
fn method_label(method: &axum::http::Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method.as_str())
        .unwrap_or("other")
}

/// Every error answer is problem+json (those axum makes itself too: 405, 413, bad
/// paths), nothing is cached or sniffed, and each request is counted.
async fn problems_and_headers(mut request: Request, next: Next) -> Response {
    let who = auth::Who::default();
    request.extensions_mut().insert(who.clone());
    let changes = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched".to_owned(), |p| p.as_str().to_owned());
    // The console answers browsers with pages, errors included.
    let page = request.uri().path().starts_with("/console");
    let mut response = next.run(request).await;
    let status = response.status();
    let is_problem = page
        || response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if status.as_u16() >= 400 && !is_problem {
        let title = status.canonical_reason().unwrap_or("Error");
        let detail = match status {
            StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this resource".to_owned(),
            StatusCode::PAYLOAD_TOO_LARGE => "request body too large".to_owned(),
            _ => title.to_lowercase(),
        };
        let headers = response.headers().clone();
        response = Problem::new(status, "Error", detail).into_response();
        for name in [header::ALLOW, header::WWW_AUTHENTICATE] {
            if let Some(v) = headers.get(&name) {
                response.headers_mut().insert(name, v.clone());
            }
        }
    }
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Every authenticated attempt to change something is audited, refused ones too.
    if let Some((name, client)) = who.get().filter(|_| changes) {
        info!(
            target: "feedback_webhooks::audit",
            who = name, client = %client, method, route, status = status.as_u16(),
            "request"
        );
    }
    metrics()
        .admin_requests
        .with_label_values(&[method, route.as_str(), status.as_str()])
        .inc();
    response
}

/// Runs the API until `shutdown` completes (SIGTERM/SIGINT).
pub async fn run(
    settings: &Settings,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AdminError> {
    let admin = &settings.admin;
    let tokens = Arc::new(Tokens::new(&admin.all_tokens()?)?);
    if tokens.is_empty() {
        warn!("no admin tokens configured ([[admin.tokens]]): every request will be refused");
    }
    let tls = server::tls_config(admin)?;
    let health = Arc::new(Health::default());
    // The API joins no consumer group: it is ready once its cache has caught up.
    health.set_joined();
    let _operator = if admin.metrics_listen.is_empty() {
        None
    } else {
        Some(crate::observe::server::start(&admin.metrics_listen, health.clone()).await?)
    };
    let store = ConfigStore::open(&admin.store_path)?;
    // Writes are answered once this cache has seen them: fetch often.
    let mut follower = ConfigFollower::start_waiting(
        &settings.kafka,
        store.clone(),
        settings.rules(),
        std::time::Duration::from_millis(5),
    )?;
    let publisher = Publisher::new(&settings.kafka, store.clone())?;
    let log = deliveries::DeliveryLog::open(&admin.deliveries_path)?;
    let keep = deliveries::Keep::from_settings(admin);
    // Health is shown once its topics exist (the processor makes them too).
    let health_topics = match crate::health::ensure_topics(settings).await {
        Ok(topics) => topics,
        Err(e) => {
            warn!(error = %e, "the health topics cannot be made; webhook health is not shown");
            None
        }
    };
    let mut log_follower =
        deliveries::LogFollower::start(&settings.kafka, log.clone(), keep, health_topics)?;
    let service = Service::new(settings, Arc::new(store), Arc::new(publisher), log)?;
    if !service.seals() {
        warn!("no secrets.encryption_key_file: secrets sent as values will be refused");
    }
    let state = Arc::new(AppState {
        service,
        gate: auth::Gate {
            tokens,
            failures: auth::Failures::default(),
            failures_per_minute: admin.auth_failures_per_minute.max(1),
            proxy_hops: admin.trusted_proxy_hops,
        },
        health: health.clone(),
        console: console::Sessions::default(),
        console_templates: console::templates(),
        secure_cookies: tls.is_some(),
    });
    let app = app(state, admin.max_body_bytes);
    let listener = server::bind(&admin.listen, tls.is_some()).await?;
    let caught_up = async {
        if follower.wait_caught_up().await {
            info!("config cache caught up; admin API ready");
            health.set_caught_up();
        }
    };
    let serving = server::serve(listener, tls, admin.max_connections, app, shutdown);
    let ((), served) = tokio::join!(caught_up, serving);
    health.set_stopping();
    follower.stop();
    log_follower.stop();
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_metric_label() {
        let method = |m: &str| axum::http::Method::from_bytes(m.as_bytes()).unwrap();
        assert_eq!(method_label(&method("GET")), "GET");
        assert_eq!(method_label(&method("PATCH")), "PATCH");
        for made_up in ["FOO", "BAR1", "get"] {
            assert_eq!(method_label(&method(made_up)), "other");
        }
    }
}
