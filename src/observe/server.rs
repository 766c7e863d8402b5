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
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use super::{metrics, Health};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("metrics/health port {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

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
    Ok(tokio::spawn(async move {
        let mut backoff = AcceptBackoff::default();
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => {
                    backoff.reset();
                    tcp
                }
                Err(e) => {
                    // Out of file descriptors (EMFILE) and the like: retrying at once would
                    // spin a core until the condition passes.
                    warn!(error = %e, "accepting a connection failed; backing off");
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
            };
            let health = health.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| answer(request, health.clone()));
                if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await
                {
                    debug!(error = %e, "metrics connection ended");
                }
            });
        }
    }))
}

/// Pause after a failed accept: 10 ms, doubling up to 1 s, reset by a success.
#[derive(Default)]
pub(crate) struct AcceptBackoff(Option<std::time::Duration>);

impl AcceptBackoff {
    pub(crate) fn next(&mut self) -> std::time::Duration {
        use std::time::Duration;
        let next = self
            .0
            .map_or(Duration::from_millis(10), |d| d.saturating_mul(2))
            .min(Duration::from_secs(1));
        self.0 = Some(next);
        next
    }

    pub(crate) fn reset(&mut self) {
        self.0 = None;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn failed_accepts_back_off_up_to_a_second_and_a_success_resets() {
        let mut b = AcceptBackoff::default();
        assert_eq!(b.next(), Duration::from_millis(10));
        assert_eq!(b.next(), Duration::from_millis(20));
        for _ in 0..20 {
            b.next();
        }
        assert_eq!(b.next(), Duration::from_secs(1));
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(10));
    }
}
