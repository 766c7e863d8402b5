//! The one pooled HTTPS client: rustls with the web roots (plus an optional extra CA),
//! bounded timeouts, redirects never followed, system proxy settings ignored, and names
//! resolved through the destination guard.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;

use super::guard::GuardedResolver;
use crate::domain::address::AddressPolicy;
use rustls_pki_types::CertificateDer;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("extra CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("HTTP client setup: {0}")]
    Build(#[from] reqwest::Error),
}

pub struct ClientOptions<'a> {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub extra_ca_file: Option<&'a Path>,
    /// Which resolved addresses may be dialled.
    pub policy: Arc<AddressPolicy>,
    /// Whether HTTP/2 is offered (HTTP/1.1 always is).
    pub http2: bool,
    /// Idle connections kept per host: as many as the host may have requests in flight, so
    /// an HTTP/1.1 host is not re-connected (a TLS handshake each time) under load.
    pub idle_per_host: usize,
}

impl<'a> ClientOptions<'a> {
    /// The options the `[delivery]` settings give, with the destination guard's policy.
    pub fn from_settings(
        delivery: &'a crate::settings::DeliverySettings,
        policy: Arc<AddressPolicy>,
    ) -> Self {
        ClientOptions {
            connect_timeout: Duration::from_millis(delivery.connect_timeout_ms),
            request_timeout: Duration::from_millis(delivery.request_timeout_ms),
            extra_ca_file: delivery.extra_ca_file.as_deref(),
            policy,
            http2: delivery.http_version == crate::settings::HttpVersion::Http2,
            idle_per_host: delivery.host_concurrency_max,
        }
    }
}

fn root_store(extra_ca_file: Option<&Path>) -> Result<rustls::RootCertStore, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca_file {
        let err = |reason: String| ClientError::CaFile {
            path: path.display().to_string(),
            reason,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| err(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("no certificate found".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| err(e.to_string()))?;
        }
    }
    Ok(roots)
}

fn tls_config(options: &ClientOptions<'_>) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(options.extra_ca_file)?)
        .with_no_client_auth();
    // HTTP/2 when offered and the server offers it too, HTTP/1.1 otherwise.
    tls.alpn_protocols = if options.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(tls)
}

fn client_with(
    options: &ClientOptions<'_>,
    tls: rustls::ClientConfig,
) -> Result<reqwest::Client, ClientError> {
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(GuardedResolver::new(options.policy.clone())))
        .no_proxy()
        .connect_timeout(options.connect_timeout)
        .timeout(options.request_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(options.idle_per_host)
        .tcp_nodelay(true)
        .user_agent(concat!("feedback-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()?;
    Ok(client)
}

pub fn build_client(options: &ClientOptions<'_>) -> Result<reqwest::Client, ClientError> {
    client_with(options, tls_config(options)?)
}

/// `lanes` clients with pools of their own (a host's requests are spread over them, see
/// [`crate::delivery::Sender::on_lane`]). They share one TLS configuration, and so its
/// session cache: a connection opened on another lane resumes the host's TLS session
/// instead of a full handshake.
pub fn build_lanes(
    options: &ClientOptions<'_>,
    lanes: usize,
) -> Result<Vec<reqwest::Client>, ClientError> {
    let tls = tls_config(options)?;
    (0..lanes.max(1))
        .map(|_| client_with(options, tls.clone()))
        .collect()
}
