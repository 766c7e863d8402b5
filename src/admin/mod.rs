//! `feedback-webhooks admin`: the administration API behind the admin console and
//! customers' own tooling. A sibling of the processor, not a mode of it: it shares the
//! domain rules, the schemas and the config cache (`join/`), and talks to the processor only
//! through the config topic.
//!
//! - `tokens.rs`, `auth.rs`: who may call, and what they may reach.
//! - `webhooks.rs`, `campaigns.rs`: the resources.
//! - `secrets.rs`: write-only secrets (sealed on the way in, fingerprints on the way out).
//! - `versions.rs`: ETags and `If-Match`.
//! - `send_test.rs`: a test request through the processor's own sender.
//! - `deliveries.rs`: the delivery log, the outcome topic indexed per webhook.
//! - `redeliver.rs`: redelivery of one event or a window, shared with the `replay` command.
//! - `publish.rs`: writes to the config topic, answered once the own cache applied them.
//! - `openapi.rs`: the OpenAPI 3.1 document, generated from the handlers' annotations.
//! - `console/`: the admin console, server-rendered pages on the same state.
//! - `server.rs`: the TLS listener.

pub mod auth;
mod campaigns;
mod console;
pub mod deliveries;
pub mod openapi;
pub mod problem;
pub mod publish;
mod redeliver;
pub mod secrets;
mod send_test;
mod server;
pub mod tokens;
pub mod versions;
mod webhooks;

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use tokio::sync::Mutex;
use tracing::{info, warn};

use self::problem::Problem;
use self::publish::{PublishError, Publisher};
use self::secrets::RefRules;
use self::tokens::{Principal, TokenError, Tokens};
use crate::domain::config::{self, ConfigKey, Rules, MAX_RECORD_BYTES};
use crate::domain::secret::SealingKey;
use crate::domain::time::rfc3339_millis;
use crate::join::follower::FollowerError;
use crate::join::{ConfigFollower, ConfigStore, StoreError, Stored, Version};
use crate::observe::{metrics, Health};
use crate::schema::Violation;
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
    Tester(#[from] send_test::TesterError),
    #[error(transparent)]
    Log(#[from] deliveries::LogError),
    #[error("operator port: {0}")]
    Operator(#[from] crate::observe::server::ServerError),
}

/// What every request handler shares.
pub struct AppState {
    pub store: ConfigStore,
    pub publisher: Publisher,
    pub tokens: Arc<Tokens>,
    pub failures: auth::Failures,
    pub auth_failures_per_minute: u32,
    /// Writes of one instance go one at a time: each checks its version against a cache
    /// that has caught up with the topic, then publishes.
    pub writes: Mutex<()>,
    pub sealing: Option<SealingKey>,
    pub refs: RefRules,
    pub rules: Rules,
    pub health: Arc<Health>,
    pub tester: send_test::Tester,
    pub deliveries: deliveries::DeliveryLog,
    pub redeliveries: redeliver::Runs,
    /// For the redelivery topic's clients.
    pub settings: Settings,
    /// The console's signed-in browsers, and its pages.
    pub console: console::Sessions,
    pub console_templates: minijinja::Environment<'static>,
    /// Cookies are `Secure` when the listener has TLS.
    pub secure_cookies: bool,
}

/// A write done: its new version and the one it replaced.
pub struct Written {
    pub version: Version,
    pub old: Option<Version>,
}

/// One write to the config topic: `decide` sees the current record (after the cache has
/// caught up with the topic) and returns the new value, or `None` for a tombstone. The
/// value's secrets are prepared, it is stamped (`updatedAt`, `updatedBy`), validated with
/// the processor's rules, published, and the write is answered once the cache applied it.
pub(crate) async fn write_record(
    state: &AppState,
    caller: &Principal,
    key: &ConfigKey,
    decide: impl Fn(Option<&Stored<Vec<u8>>>) -> Result<Option<Value>, Problem>,
) -> Result<Written, Problem> {
    let _one_at_a_time = state.writes.lock().await;
    let mut attempt = 0;
    let (old, bytes, version) = loop {
        attempt += 1;
        // The writer first, then catching up and the version check: see `publish`.
        state.publisher.ready().await.map_err(unavailable)?;
        state.publisher.sync().await.map_err(unavailable)?;
        let current = state
            .store
            .raw(key)
            .map_err(|e| Problem::unavailable(e.to_string()))?;
        let old = current.as_ref().map(|c| c.version);
        let bytes = match decide(current.as_ref())? {
            None => None,
            Some(mut value) => Some(publishable(
                state,
                caller,
                key,
                current.as_ref(),
                &mut value,
            )?),
        };
        match state.publisher.publish(key, bytes.as_deref()).await {
            Ok(version) => break (old, bytes, version),
            // Another instance wrote meanwhile: check the version again against its write.
            Err(PublishError::Fenced) if attempt < WRITE_ATTEMPTS => {
                info!(key = %key, attempt, "another instance was writing; trying again");
            }
            Err(e) => return Err(unavailable(e)),
        }
    };
    info!(
        target: "feedback_webhooks::audit",
        who = caller.name,
        action = if bytes.is_none() { "delete" } else if old.is_some() { "replace" } else { "create" },
        key = %key,
        old = old.map_or("none".to_owned(), |v| v.to_string()),
        new = %version,
        "config write"
    );
    Ok(Written { version, old })
}

/// The value as it will be published, or every reason it cannot be.
fn publishable(
    state: &AppState,
    caller: &Principal,
    key: &ConfigKey,
    current: Option<&Stored<Vec<u8>>>,
    value: &mut Value,
) -> Result<Vec<u8>, Problem> {
    let mut refused = Vec::new();
    if let ConfigKey::Webhook { ims_org, .. } = key {
        let current: Option<Value> = current.and_then(|c| serde_json::from_slice(&c.value).ok());
        refused = secrets::prepare(
            value,
            current.as_ref(),
            state.sealing.as_ref(),
            &key.to_string(),
            ims_org,
            caller.is_operator().then_some(&state.refs),
        );
    }
    config::stamp(value, &caller.name, &rfc3339_millis(SystemTime::now()));
    for v in config::refusals(value, state.rules) {
        // A secret refused already is not refused again by the schema.
        if !refused.iter().any(|r| v.field.starts_with(&r.field)) {
            refused.push(v);
        }
    }
    if !refused.is_empty() {
        return Err(Problem::invalid(refused));
    }
    let bytes = serde_json::to_vec(value).map_err(|e| Problem::bad_request(e.to_string()))?;
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(Problem::invalid(vec![Violation {
            field: String::new(),
            message: format!(
                "record is {} bytes, over the {MAX_RECORD_BYTES}-byte limit",
                bytes.len()
            ),
        }]));
    }
    // The processor's own check of key and body together: what it would refuse is never
    // published.
    config::validate(&key.to_string(), Some(&bytes), state.rules).map_err(|e| {
        Problem::invalid(vec![Violation {
            field: String::new(),
            message: e.to_string(),
        }])
    })?;
    Ok(bytes)
}

/// How many times a write starts again after another instance's write fenced it.
const WRITE_ATTEMPTS: u32 = 5;

fn unavailable(e: PublishError) -> Problem {
    warn!(error = %e, "config write not completed");
    Problem::unavailable(e.to_string())
}

/// The API's routes.
pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    let webhook = "/api/v1/orgs/{org}/sandboxes/{sandbox}/webhook";
    let campaigns = "/api/v1/orgs/{org}/sandboxes/{sandbox}/campaigns";
    Router::new()
        .route("/api/v1/orgs/{org}/webhooks", get(webhooks::inventory))
        .route(
            webhook,
            get(webhooks::get)
                .put(webhooks::put)
                .delete(webhooks::delete),
        )
        .route(&format!("{webhook}/enable"), post(webhooks::enable))
        .route(&format!("{webhook}/disable"), post(webhooks::disable))
        .route(&format!("{webhook}/test"), post(send_test::send))
        .route(&format!("{webhook}/deliveries"), get(deliveries::list))
        .route(
            &format!("{webhook}/deliveries/{{eventId}}/redeliver"),
            post(redeliver::one),
        )
        .route(&format!("{webhook}/redeliver"), post(redeliver::window))
        .route(
            &format!("{webhook}/redeliver/{{replayId}}"),
            get(redeliver::progress),
        )
        .route(campaigns, get(campaigns::list))
        .route(
            &format!("{campaigns}/{{campaign}}"),
            get(campaigns::get)
                .put(campaigns::put)
                .delete(campaigns::delete),
        )
        .route(
            "/api/v1/openapi.json",
            get(|| async { axum::Json(openapi::document()) }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .merge(console::router(state.clone()))
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

/// Every error answer is problem+json (those axum makes itself too: 405, 413, bad
/// paths), nothing is cached or sniffed, and each request is counted.
async fn problems_and_headers(request: Request, next: Next) -> Response {
    let method = request.method().to_string();
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
    metrics()
        .admin_requests
        .with_label_values(&[method.as_str(), route.as_str(), status.as_str()])
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
    let mut log_follower = deliveries::LogFollower::start(
        &settings.kafka,
        log.clone(),
        std::time::Duration::from_secs(admin.delivery_retention_days.max(1) * 86_400),
        admin.deliveries_per_webhook.max(1),
    )?;
    let state = Arc::new(AppState {
        store,
        publisher,
        tokens,
        failures: auth::Failures::default(),
        auth_failures_per_minute: admin.auth_failures_per_minute.max(1),
        writes: Mutex::new(()),
        sealing: settings.sealing_key()?,
        refs: RefRules {
            env_prefix: settings.secrets.env_prefix.clone(),
            file_dirs: settings.secrets.file_dirs.clone(),
        },
        rules: settings.rules(),
        health: health.clone(),
        tester: send_test::Tester::new(settings)?,
        deliveries: log,
        redeliveries: redeliver::Runs::default(),
        settings: settings.clone(),
        console: console::Sessions::default(),
        console_templates: console::templates(),
        secure_cookies: tls.is_some(),
    });
    if state.sealing.is_none() {
        warn!("no secrets.encryption_key_file: secrets sent as values will be refused");
    }
    let app = router(state, admin.max_body_bytes);
    let listener = server::bind(&admin.listen, tls.is_some()).await?;
    let caught_up = async {
        if follower.wait_caught_up().await {
            info!("config cache caught up; admin API ready");
            health.set_caught_up();
        }
    };
    let serving = server::serve(listener, tls, app, shutdown);
    let ((), served) = tokio::join!(caught_up, serving);
    health.set_stopping();
    follower.stop();
    log_follower.stop();
    served
}
