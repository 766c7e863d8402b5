//! The API's listener: TLS from the configured certificate and key files (reloaded when
//! they change, `certs.rs`), or plain HTTP
//! only when explicitly allowed (local use). Each connection's peer address is handed to
//! the handlers (for the failed-authentication limit). On shutdown, no new connection is
//! taken and those open get a few seconds to finish.

use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::auth::Peer;
use super::certs::ReloadingCert;
use super::AdminError;
use crate::accept::{http_server, Acceptor, FirstBytes, HANDSHAKE};
use crate::settings::AdminSettings;

/// How long open connections may take to finish after shutdown began.
const DRAIN: Duration = Duration::from_secs(5);

/// The TLS acceptor of the settings, `None` for plain HTTP (only when allowed).
pub fn tls_config(admin: &AdminSettings) -> Result<Option<TlsAcceptor>, AdminError> {
    let (cert, key) = match (&admin.tls_cert_file, &admin.tls_key_file) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) if admin.allow_plain_http => {
            warn!("ADMIN API SERVES PLAIN HTTP (admin.allow_plain_http): tokens and secrets cross the network unencrypted; local use only");
            return Ok(None);
        }
        (None, None) => {
            return Err(AdminError::Listen(
                "admin.tls_cert_file and admin.tls_key_file are required (or admin.allow_plain_http = true for local use)".into(),
            ))
        }
        _ => {
            return Err(AdminError::Listen(
                "admin.tls_cert_file and admin.tls_key_file go together".into(),
            ))
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = ReloadingCert::load(cert, key, provider.clone()).map_err(AdminError::Listen)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AdminError::Listen(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(certs));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

pub async fn bind(addr: &str, tls: bool) -> Result<TcpListener, AdminError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| AdminError::Listen(format!("{addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| AdminError::Listen(e.to_string()))?;
    let scheme = if tls { "https" } else { "http" };
    info!(url = %format!("{scheme}://{local}/api/v1"), "admin API listening");
    Ok(listener)
}

/// Serves `app` on `listener`, holding at most `max_connections` at once, until `shutdown`
/// completes.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    max_connections: usize,
    app: Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AdminError> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut acceptor = Acceptor::capped(listener, max_connections);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer, slot) = tokio::select! {
            accepted = acceptor.accept() => accepted,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone().layer(Extension(Peer(peer))));
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let server = http_server();
            let result = match tls {
                Some(tls) => match tokio::time::timeout(HANDSHAKE, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let stream = FirstBytes::new(stream, HANDSHAKE);
                        let connection = server.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(connection.into_owned()).await
                    }
                    Ok(Err(e)) => {
                        debug!(client = %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        debug!(client = %peer, "TLS handshake timed out");
                        return;
                    }
                },
                None => {
                    let tcp = FirstBytes::new(tcp, HANDSHAKE);
                    let connection = server.serve_connection(TokioIo::new(tcp), service);
                    watcher.watch(connection.into_owned()).await
                }
            };
            if let Err(e) = result {
                debug!(client = %peer, error = %e, "connection ended");
            }
        });
    }
    info!("admin API stopping");
    drop(acceptor);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("connections still open after the drain period; closing them");
    }
    Ok(())
}
