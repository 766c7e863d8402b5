//! Resolves secret sources to bytes, within what the deployment allows each tenant:
//! environment variables named `{prefix}{ORG}__{KEY}` (the org's own), regular files under a
//! configured directory's folder for the tenant's org (re-read when they change), and
//! values sealed for the very record that names them.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::domain::secret::{env_allowed, env_start, SealingKey, SecretError, SecretSource};

/// Largest secret file read (PEM keys are a few KB): a reference to a huge or endless file
/// (`/dev/zero`) costs nothing.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;
/// A file read is reused this long before its modification time is looked at again.
const RECHECK_AFTER: Duration = Duration::from_secs(1);
/// Files remembered before the cache starts over.
const MAX_FILES: usize = 1024;

/// What secret references may reach.
#[derive(Debug, Clone, Default)]
pub struct SecretScope {
    /// Roots of secret files: a tenant's files are under `{root}/{imsOrg}/`. Empty: no
    /// file references.
    pub file_dirs: Vec<PathBuf>,
    /// Environment variables a secret may name start with this; empty: none may.
    pub env_prefix: String,
    /// Whether values sealed before they were bound to a record (`v1.`) still open.
    pub accept_v1_sealed: bool,
}

impl SecretScope {
    pub fn from_settings(secrets: &crate::settings::SecretSettings) -> Self {
        SecretScope {
            file_dirs: secrets.file_dirs.clone(),
            env_prefix: secrets.env_prefix.clone(),
            accept_v1_sealed: secrets.accept_v1_sealed,
        }
    }
}

/// The record a secret belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// `webhook/{imsOrg}/{sandboxId}`: the associated data of its sealed values.
    pub record_key: &'a str,
    pub ims_org: &'a str,
}

/// A file's contents, its modification time, and when that was last looked at.
struct FileEntry {
    modified: Option<SystemTime>,
    checked: Instant,
    bytes: Vec<u8>,
}

pub struct Secrets {
    key: Option<SealingKey>,
    scope: SecretScope,
    files: Mutex<HashMap<PathBuf, FileEntry>>,
}

impl Secrets {
    /// `scope.file_dirs` are canonicalised here (a missing directory allows nothing).
    pub fn new(key: Option<SealingKey>, mut scope: SecretScope) -> Self {
        scope.file_dirs = scope
            .file_dirs
            .iter()
            .filter_map(|d| d.canonicalize().ok())
            .collect();
        Secrets {
            key,
            scope,
            files: Mutex::new(HashMap::new()),
        }
    }

    pub fn resolve(&self, source: &SecretSource, owner: Owner<'_>) -> Result<Vec<u8>, SecretError> {
        match source {
            SecretSource::Env(name) => {
                let prefix = &self.scope.env_prefix;
                if !env_allowed(name, prefix, owner.ims_org) {
                    let start = env_start(prefix, owner.ims_org);
                    return Err(SecretError::EnvNotAllowed(name.clone(), start));
                }
                std::env::var_os(name)
                    .map(|v| v.into_encoded_bytes())
                    .ok_or_else(|| SecretError::MissingEnv(name.clone()))
            }
            SecretSource::File(path) => off_the_runtime(|| self.file(path, owner)),
            SecretSource::Sealed(sealed) => self.key.as_ref().ok_or(SecretError::NoKey)?.open(
                sealed,
                owner.record_key,
                self.scope.accept_v1_sealed,
            ),
        }
    }

    /// Whether `path` (canonical) lies in a folder this org's files may be in.
    fn allowed(&self, path: &Path, ims_org: &str) -> bool {
        // An org name that is not a single plain path segment gets no folder.
        let plain = !ims_org.is_empty()
            && ims_org != "."
            && ims_org != ".."
            && !ims_org.contains(['/', '\\', '\0']);
        // Strictly inside the folder: the folder's own path names no file of the org.
        plain
            && self.scope.file_dirs.iter().any(|root| {
                let folder = root.join(ims_org);
                path.starts_with(&folder) && path != folder
            })
    }

    fn file(&self, path: &str, owner: Owner<'_>) -> Result<Vec<u8>, SecretError> {
        let err = |e: std::io::Error| SecretError::File(path.to_owned(), e.kind().to_string());
        // Symbolic links and `..` are resolved first: what counts is where the file is.
        let canonical = Path::new(path).canonicalize().map_err(err)?;
        if !self.allowed(&canonical, owner.ims_org) {
            return Err(SecretError::FileNotAllowed(path.to_owned()));
        }
        let now = Instant::now();
        {
            let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = files.get(&canonical) {
                if now.duration_since(entry.checked) < RECHECK_AFTER {
                    return Ok(entry.bytes.clone());
                }
            }
        }
        let metadata = std::fs::metadata(&canonical).map_err(err)?;
        if !metadata.is_file() {
            return Err(SecretError::File(
                path.to_owned(),
                "not a regular file".into(),
            ));
        }
        if metadata.len() > MAX_FILE_BYTES {
            return Err(SecretError::File(
                path.to_owned(),
                format!("larger than {MAX_FILE_BYTES} bytes"),
            ));
        }
        let modified = metadata.modified().ok();
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = files.get_mut(&canonical) {
            if modified.is_some() && entry.modified == modified {
                entry.checked = now;
                return Ok(entry.bytes.clone());
            }
        }
        drop(files);
        let mut bytes = Vec::new();
        // Read at most one byte past the cap: a file that grew meanwhile is refused too.
        std::fs::File::open(&canonical)
            .map_err(err)?
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(err)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(SecretError::File(
                path.to_owned(),
                format!("larger than {MAX_FILE_BYTES} bytes"),
            ));
        }
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if files.len() >= MAX_FILES {
            files.clear();
        }
        files.insert(
            canonical,
            FileEntry {
                modified,
                checked: now,
                bytes: bytes.clone(),
            },
        );
        Ok(bytes)
    }
}

/// Runs blocking file work without holding up an async worker: on a multi-threaded
/// runtime the worker hands its other tasks over meanwhile.
fn off_the_runtime<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: Owner<'static> = Owner {
        record_key: "webhook/orgA/prod",
        ims_org: "orgA",
    };

    fn scoped(root: &Path) -> Secrets {
        Secrets::new(
            None,
            SecretScope {
                file_dirs: vec![root.to_owned()],
                env_prefix: "WEBHOOK_SECRET_".into(),
                accept_v1_sealed: false,
            },
        )
    }

    fn later(path: &Path) {
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(later)
            .unwrap();
    }

    #[test]
    fn files_are_re_read_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("orgA")).unwrap();
        let path = dir.path().join("orgA/k");
        std::fs::write(&path, "one").unwrap();
        let secrets = scoped(dir.path());
        let source = SecretSource::File(path.display().to_string());
        assert_eq!(secrets.resolve(&source, OWNER).unwrap(), b"one");
        std::fs::write(&path, "two").unwrap();
        later(&path);
        std::thread::sleep(RECHECK_AFTER);
        assert_eq!(secrets.resolve(&source, OWNER).unwrap(), b"two");
    }

    #[test]
    fn files_outside_the_tenants_folder_special_or_huge_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for org in ["orgA", "orgB"] {
            std::fs::create_dir(dir.path().join(org)).unwrap();
        }
        std::fs::write(dir.path().join("orgB/key"), "B's key").unwrap();
        std::fs::write(dir.path().join("orgA/big"), vec![b'x'; 70_000]).unwrap();
        std::os::unix::fs::symlink(dir.path().join("orgB/key"), dir.path().join("orgA/link"))
            .unwrap();
        let secrets = scoped(dir.path());
        let file = |p: String| secrets.resolve(&SecretSource::File(p), OWNER);
        let d = dir.path().display();
        for path in [
            format!("{d}/orgB/key"),
            format!("{d}/orgA/../orgB/key"),
            format!("{d}/orgA/link"),
            "/dev/zero".to_owned(),
            "/etc/passwd".to_owned(),
        ] {
            assert!(
                matches!(file(path.clone()), Err(SecretError::FileNotAllowed(_))),
                "{path}"
            );
        }
        let big = file(format!("{d}/orgA/big")).unwrap_err();
        assert!(big.to_string().contains("larger than"), "{big}");
        // With no directories configured, no file may be named.
        let none = Secrets::new(None, SecretScope::default());
        assert!(none
            .resolve(&SecretSource::File(format!("{d}/orgA/big")), OWNER)
            .is_err());
    }

    #[test]
    fn env_names_need_the_prefix_and_sealed_values_their_record() {
        let secrets = scoped(Path::new("/nonexistent"));
        let path = SecretSource::Env("PATH".into());
        assert!(matches!(
            secrets.resolve(&path, OWNER),
            Err(SecretError::EnvNotAllowed(..))
        ));
        let another = SecretSource::Env("WEBHOOK_SECRET_ORGB__KEY".into());
        assert!(matches!(
            secrets.resolve(&another, OWNER),
            Err(SecretError::EnvNotAllowed(..))
        ));
        let missing = SecretSource::Env("WEBHOOK_SECRET_ORGA__TEST_UNSET_VARIABLE".into());
        assert!(matches!(
            secrets.resolve(&missing, OWNER),
            Err(SecretError::MissingEnv(_))
        ));

        let key = SealingKey::from_base64(&SealingKey::generate_base64()).unwrap();
        let for_b = SecretSource::Sealed(key.seal(b"s3cret", "webhook/orgB/prod"));
        let for_a = SecretSource::Sealed(key.seal(b"s3cret", OWNER.record_key));
        let secrets = Secrets::new(Some(key), SecretScope::default());
        assert_eq!(secrets.resolve(&for_a, OWNER).unwrap(), b"s3cret");
        assert_eq!(secrets.resolve(&for_b, OWNER), Err(SecretError::WrongKey));
        let no_key = Secrets::new(None, SecretScope::default());
        assert_eq!(no_key.resolve(&for_a, OWNER), Err(SecretError::NoKey));
    }
}
