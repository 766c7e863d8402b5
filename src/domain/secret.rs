//! Secret values of config records: never plaintext in the topic. A secret is a reference
//! (`{"ref":"env:NAME"}`, `{"ref":"file:/path"}`) resolved by the processor, or a value
//! sealed with the deployment's config-encryption key (`{"encrypted":"..."}`, AES-256-GCM).
//! Sealing and opening are pure; resolving references reads the environment or a file and
//! lives in `delivery::secrets`.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

/// Prefix of sealed values: the format version, so the format can change later.
const SEALED_PREFIX: &str = "v1.";
const NONCE_LEN: usize = 12;

/// Errors never carry the secret or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("secret is not a {{\"ref\": ...}} or {{\"encrypted\": ...}} object")]
    NotASecret,
    #[error("secret reference {0:?} is not env:NAME or file:/path")]
    BadReference(String),
    #[error("sealed secret is malformed")]
    Malformed,
    #[error("sealed secret does not open with this deployment's key (wrong key or altered value)")]
    WrongKey,
    #[error("config-encryption key must be 32 bytes, base64-encoded")]
    BadKey,
    #[error("no config-encryption key is configured (secrets.encryption_key_file)")]
    NoKey,
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    #[error("secret file {0}: {1}")]
    File(String, String),
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretSource {
    Env(String),
    File(String),
    Sealed(String),
}

impl SecretSource {
    pub fn parse(value: &Value) -> Result<Self, SecretError> {
        if let Some(reference) = value.get("ref").and_then(Value::as_str) {
            if let Some(name) = reference.strip_prefix("env:").filter(|n| !n.is_empty()) {
                return Ok(SecretSource::Env(name.to_owned()));
            }
            if let Some(path) = reference
                .strip_prefix("file:")
                .filter(|p| p.starts_with('/'))
            {
                return Ok(SecretSource::File(path.to_owned()));
            }
            return Err(SecretError::BadReference(reference.to_owned()));
        }
        match value.get("encrypted").and_then(Value::as_str) {
            Some(sealed) => Ok(SecretSource::Sealed(sealed.to_owned())),
            None => Err(SecretError::NotASecret),
        }
    }
}

/// The deployment's config-encryption key.
#[derive(Clone)]
pub struct SealingKey(Key<Aes256Gcm>);

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(..)")
    }
}

impl SealingKey {
    /// Reads a key given as base64 of 32 bytes (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self, SecretError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| SecretError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| SecretError::BadKey)?;
        Ok(SealingKey(key.into()))
    }

    /// A fresh random key, base64-encoded (for `secret new-key`).
    pub fn generate_base64() -> String {
        let key = Aes256Gcm::generate_key(OsRng);
        base64::engine::general_purpose::STANDARD.encode(key)
    }

    /// Seals `plaintext`: `v1.` + base64url(nonce ‖ ciphertext+tag).
    pub fn seal(&self, plaintext: &[u8]) -> String {
        let cipher = Aes256Gcm::new(&self.0);
        let nonce = Aes256Gcm::generate_nonce(OsRng);
        // Encryption with a valid key and nonce cannot fail for in-memory buffers.
        let ciphertext = cipher.encrypt(&nonce, plaintext).unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(out))
    }

    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SecretError> {
        let encoded = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(SecretError::Malformed)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| SecretError::Malformed)?;
        if bytes.len() <= NONCE_LEN {
            return Err(SecretError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        Aes256Gcm::new(&self.0)
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| SecretError::WrongKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seal_and_open_round_trip_and_detect_tampering() {
        let key = SealingKey::from_base64(&SealingKey::generate_base64()).unwrap();
        let sealed = key.seal(b"top secret");
        assert!(!sealed.contains("top secret"));
        assert_eq!(key.open(&sealed).unwrap(), b"top secret");
        assert_ne!(key.seal(b"top secret"), sealed, "a fresh nonce each time");

        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            key.open(std::str::from_utf8(&altered).unwrap()),
            Err(SecretError::WrongKey)
        );

        let other = SealingKey::from_base64(&SealingKey::generate_base64()).unwrap();
        assert_eq!(other.open(&sealed), Err(SecretError::WrongKey));
        assert_eq!(key.open("plain"), Err(SecretError::Malformed));
    }

    #[test]
    fn keys_must_be_32_bytes() {
        assert_eq!(
            SealingKey::from_base64("c2hvcnQ=").unwrap_err(),
            SecretError::BadKey
        );
        assert_eq!(
            SealingKey::from_base64("not base64!").unwrap_err(),
            SecretError::BadKey
        );
    }

    #[test]
    fn sources() {
        assert_eq!(
            SecretSource::parse(&json!({"ref": "env:HOOK_KEY"})),
            Ok(SecretSource::Env("HOOK_KEY".into()))
        );
        assert_eq!(
            SecretSource::parse(&json!({"ref": "file:/run/k"})),
            Ok(SecretSource::File("/run/k".into()))
        );
        assert_eq!(
            SecretSource::parse(&json!({"encrypted": "v1.x"})),
            Ok(SecretSource::Sealed("v1.x".into()))
        );
        assert!(SecretSource::parse(&json!("plaintext")).is_err());
        assert!(SecretSource::parse(&json!({"ref": "vault:x"})).is_err());
    }

    #[test]
    fn debug_output_hides_the_key() {
        let key = SealingKey::from_base64(&SealingKey::generate_base64()).unwrap();
        assert_eq!(format!("{key:?}"), "SealingKey(..)");
    }
}
