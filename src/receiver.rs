//! A small HTTPS webhook receiver: the `receiver` subcommand prints what it gets, and the
//! integration tests use it with programmed replies. Its certificate comes from a local CA
//! made at start; the CA's PEM is what a processor adds to its trusted roots.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("listen: {0}")]
    Io(#[from] std::io::Error),
}

/// A CA and a server certificate it signed for the given names.
pub struct LocalCa {
    /// The CA certificate, PEM: trust this to trust the receiver.
    pub ca_pem: String,
    /// The server certificate and its private key (PKCS#8), PEM: for a server that reads
    /// them from files (the admin API in tests and the demo).
    pub cert_pem: String,
    pub key_pem: String,
    pub tls: Arc<rustls::ServerConfig>,
}

impl LocalCa {
    /// Makes a fresh CA and a server certificate for `names` (DNS names or IP addresses).
    pub fn generate(names: &[&str]) -> Result<Self, ReceiverError> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "feedback-webhooks local CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate()?;
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut leaf_params = CertificateParams::new(names)?;
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "feedback-webhooks receiver");
        let leaf_key = KeyPair::generate()?;
        let leaf = leaf_params.signed_by(&leaf_key, &ca)?;

        let chain = vec![CertificateDer::from(leaf.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(LocalCa {
            ca_pem: ca.pem(),
            cert_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
            tls: Arc::new(tls),
        })
    }
}

/// A request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: SystemTime,
    /// The connection it came on: a number per connection accepted, from 1.
    pub connection: u64,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    pub method: String,
    pub path: String,
    /// Header names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How to answer a request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Wait this long before answering (to simulate a slow endpoint).
    pub delay: Option<Duration>,
    pub body: Bytes,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            delay: None,
            body: Bytes::new(),
        }
    }
}

/// Called for every request; returns the reply. Runs on the receiver's tasks.
pub type Handler = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

/// Serves HTTPS on `listener` until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, handler: Handler) {
    let (_keep, never) = tokio::sync::watch::channel(false);
    serve_until(listener, tls, handler, never).await;
}

/// As [`serve`], until `stop` turns true: then the listener and every open connection
/// close, as if the receiver went down.
pub async fn serve_until(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    handler: Handler,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let tls = TlsAcceptor::from(tls);
    let mut incoming = crate::accept::Acceptor::new(listener);
    loop {
        // The test receiver is unbounded: benchmarks open as many connections as they need.
        let (tcp, peer, _unbounded) = tokio::select! {
            accepted = incoming.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        // As web servers do (nginx's `tcp_nodelay on`): small responses are not held back
        // by Nagle's algorithm waiting for the client's delayed ACK.
        let _ = tcp.set_nodelay(true);
        let acceptor = tls.clone();
        let handler = handler.clone();
        let mut stop = stop.clone();
        let number = CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        tokio::spawn(async move {
            let connection = async {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    debug!(%peer, "TLS handshake failed");
                    return;
                };
                let service = service_fn(move |request| answer(request, number, handler.clone()));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            };
            tokio::select! {
                () = connection => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
}

/// Connections accepted by every receiver of the process (numbers them).
static CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn answer(
    request: Request<Incoming>,
    connection: u64,
    handler: Handler,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            // The sender went away mid-request (a crash, a timeout): nothing was delivered,
            // so nothing is recorded or printed.
            debug!(error = %e, "request body cut off");
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = hyper::StatusCode::BAD_REQUEST;
            return Ok(response);
        }
    };
    let received = Received {
        at: SystemTime::now(),
        connection,
        version: format!("{:?}", parts.version),
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    let reply = handler(&received);
    if let Some(delay) = reply.delay {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name, value);
    }
    Ok(response
        .body(Full::new(reply.body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

/// Binds `addr` and returns the listener with its actual address (port 0 picks one).
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ReceiverError> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
