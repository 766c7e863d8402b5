//! The API's certificate, reloaded when its files change (a renewed certificate, a rotated
//! Kubernetes Secret) without a restart. A handshake looks at the files' modification times
//! at most every [`CHECK_EVERY`]; a new pair that does not load (half written, mismatched)
//! is logged once and the one in use stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

/// How often the files are looked at (by the handshakes that happen meanwhile).
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

/// The modification times of the certificate and key files.
type Stamps = (Option<SystemTime>, Option<SystemTime>);

pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    state: Mutex<State>,
}

struct State {
    current: Arc<CertifiedKey>,
    stamps: Stamps,
    checked: Instant,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

impl ReloadingCert {
    /// Loads the pair (or says which file is wrong, and how).
    pub fn load(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> Result<Self, String> {
        let stamps = stamps(cert, key);
        let current = read(cert, key, &provider)?;
        Ok(ReloadingCert {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            state: Mutex::new(State {
                current,
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    /// The pair in use, reloaded first if its files changed since they were last looked at.
    fn current(&self, now: Instant) -> Option<Arc<CertifiedKey>> {
        let mut state = self.state.lock().ok()?;
        if now.duration_since(state.checked) >= CHECK_EVERY {
            state.checked = now;
            let stamps = stamps(&self.cert, &self.key);
            if stamps != state.stamps {
                // Tried once per change: a broken pair is not retried (and logged) every time.
                state.stamps = stamps;
                match read(&self.cert, &self.key, &self.provider) {
                    Ok(loaded) => {
                        state.current = loaded;
                        info!(cert = %self.cert.display(), "admin API certificate reloaded");
                    }
                    Err(e) => {
                        warn!(error = %e, "admin API certificate files changed but do not load; the current certificate stays");
                    }
                }
            }
        }
        Some(state.current.clone())
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current(Instant::now())
    }
}

fn stamps(cert: &Path, key: &Path) -> Stamps {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

fn read(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, String> {
    let bad = |what: &str, path: &Path, e: String| format!("{what} {}: {e}", path.display());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("certificate", cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("certificate", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(
            "certificate",
            cert,
            "no certificate in the file".into(),
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("key", key, e.to_string()))?;
    CertifiedKey::from_der(chain, private, provider)
        .map(Arc::new)
        .map_err(|e| bad("certificate and key", cert, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::LocalCa;

    fn write(dir: &Path, ca: &LocalCa) {
        std::fs::write(dir.join("cert.pem"), &ca.cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), &ca.key_pem).unwrap();
    }

    /// Makes the files look changed to a check, whatever the file system's clock resolution.
    fn touch(dir: &Path, at: SystemTime) {
        for name in ["cert.pem", "key.pem"] {
            let f = std::fs::File::options()
                .write(true)
                .open(dir.join(name))
                .unwrap();
            f.set_modified(at).unwrap();
        }
    }

    #[test]
    fn a_renewed_pair_is_served_after_the_next_check_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, &LocalCa::generate(&["127.0.0.1"]).unwrap());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = ReloadingCert::load(&d.join("cert.pem"), &d.join("key.pem"), provider).unwrap();
        let start = Instant::now();
        let first = certs.current(start).unwrap();

        let renewed = LocalCa::generate(&["127.0.0.1"]).unwrap();
        write(d, &renewed);
        touch(d, SystemTime::now() + Duration::from_secs(60));
        // Not looked at before the check is due; then the new pair.
        assert!(Arc::ptr_eq(&certs.current(start).unwrap(), &first));
        let later = start + CHECK_EVERY;
        let second = certs.current(later).unwrap();
        assert!(!Arc::ptr_eq(&second, &first));
        assert_ne!(second.cert[0], first.cert[0]);

        // A half-written pair (a key that is not the certificate's) leaves the current one.
        std::fs::write(
            d.join("key.pem"),
            LocalCa::generate(&["x"]).unwrap().key_pem,
        )
        .unwrap();
        touch(d, SystemTime::now() + Duration::from_secs(120));
        let kept = certs.current(later + CHECK_EVERY).unwrap();
        assert!(Arc::ptr_eq(&kept, &second));
    }
}
