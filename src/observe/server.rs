//! The operator's HTTP port: `/metrics` (Prometheus text format), `/healthz`, `/readyz`.
//! Plain HTTP on its own port, apart from any webhook traffic; it serves no secrets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, info};

use crate::accept::{http_server, Acceptor, FirstBytes, HANDSHAKE};

use super::{metrics, Health};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("metrics/health port {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Connections the operator port holds at once (scrapers and probes need few).
const MAX_CONNECTIONS: usize = 64;

/// Binds `addr` and serves the probes and metrics until the task is dropped.
pub async fn start(
    addr: &str,
    health: Arc<Health>,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    let bind_error = |source| ServerError::Bind {
        addr: addr.to_owned(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local: SocketAddr = listener.local_addr().map_err(bind_error)?;
    info!(addr = %local, "serving /metrics, /healthz and /readyz");
    {
        let health = health.clone();
        metrics().on_scrape(move |m| m.ready.set(i64::from(health.ready().is_ok())));
    }
    Ok(tokio::spawn(async move {
        let mut acceptor = Acceptor::capped(listener, MAX_CONNECTIONS);
        loop {
            let (tcp, _, slot) = acceptor.accept().await;
            let health = health.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = service_fn(move |request| answer(request, health.clone()));
                if let Err(e) = http_server()
                    .serve_connection(TokioIo::new(FirstBytes::new(tcp, HANDSHAKE)), service)
                    .await
                {
                    debug!(error = %e, "metrics connection ended");
                }
            });
        }
    }))
}

async fn answer(
    request: Request<Incoming>,
    health: Arc<Health>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        Ok(response)
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match request.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics().render(),
        ),
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => match health.ready() {
            Ok(()) => reply(StatusCode::OK, "text/plain", "ready\n".into()),
            Err(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}
