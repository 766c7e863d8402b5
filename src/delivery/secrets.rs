//! Resolves secret sources to bytes: environment variables, files (re-read when they change)
//! and values sealed with the deployment's key.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::domain::secret::{SealingKey, SecretError, SecretSource};

/// A file's contents and the modification time they were read at.
type FileEntry = (Option<SystemTime>, Vec<u8>);

pub struct Secrets {
    key: Option<SealingKey>,
    files: Mutex<HashMap<String, FileEntry>>,
}

impl Secrets {
    pub fn new(key: Option<SealingKey>) -> Self {
        Secrets {
            key,
            files: Mutex::new(HashMap::new()),
        }
    }

    pub fn resolve(&self, source: &SecretSource) -> Result<Vec<u8>, SecretError> {
        match source {
            SecretSource::Env(name) => std::env::var_os(name)
                .map(|v| v.into_encoded_bytes())
                .ok_or_else(|| SecretError::MissingEnv(name.clone())),
            SecretSource::File(path) => self.file(path),
            SecretSource::Sealed(sealed) => {
                self.key.as_ref().ok_or(SecretError::NoKey)?.open(sealed)
            }
        }
    }

    fn file(&self, path: &str) -> Result<Vec<u8>, SecretError> {
        let err = |e: std::io::Error| SecretError::File(path.to_owned(), e.kind().to_string());
        let modified = std::fs::metadata(path).map_err(err)?.modified().ok();
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, bytes)) = files.get(path) {
            if modified.is_some() && *at == modified {
                return Ok(bytes.clone());
            }
        }
        let bytes = std::fs::read(path).map_err(err)?;
        files.insert(path.to_owned(), (modified, bytes.clone()));
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_re_read_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "one").unwrap();
        let secrets = Secrets::new(None);
        let source = SecretSource::File(path.display().to_string());
        assert_eq!(secrets.resolve(&source).unwrap(), b"one");
        std::fs::write(&path, "two").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(secrets.resolve(&source).unwrap(), b"two");
    }

    #[test]
    fn sealed_needs_the_key_and_missing_sources_are_errors() {
        let key = SealingKey::from_base64(&SealingKey::generate_base64()).unwrap();
        let sealed = SecretSource::Sealed(key.seal(b"s3cret"));
        assert_eq!(Secrets::new(Some(key)).resolve(&sealed).unwrap(), b"s3cret");
        assert_eq!(Secrets::new(None).resolve(&sealed), Err(SecretError::NoKey));
        let missing = SecretSource::Env("FEEDBACK_WEBHOOKS_TEST_UNSET_VARIABLE".into());
        assert!(matches!(
            Secrets::new(None).resolve(&missing),
            Err(SecretError::MissingEnv(_))
        ));
    }
}
