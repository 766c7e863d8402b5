//! Secret values of config records: never plaintext in the topic. A secret is a reference
//! (`{"ref":"env:NAME"}`, `{"ref":"file:/path"}`) resolved by the processor within the
//! scope the deployment allows, or a value sealed with the deployment's config-encryption
//! key (`{"encrypted":"..."}`, AES-256-GCM).
//!
//! Sealed values are bound to the record they belong to: `v2.` values carry the record key
//! (`webhook/{imsOrg}/{sandboxId}`) as associated data, so a ciphertext copied into another
//! tenant's record does not open. `v1.` values, sealed before that binding existed, open
//! only where the deployment still accepts them (`secrets.accept_v1_sealed`) until they
//! are sealed again. Sealing and opening are pure; resolving references reads the
//! environment or a file and lives in `delivery::secrets`.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

/// Prefix of sealed values bound to their record (associated data: the record key).
const SEALED_PREFIX: &str = "v2.";
/// Prefix of values sealed before they were bound to a record.
const UNBOUND_PREFIX: &str = "v1.";
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
    #[error("sealed secret does not open with this deployment's key for this record (wrong key, altered value, or sealed for another record)")]
    WrongKey,
    #[error("sealed secret is of the unbound v1 format, which this deployment no longer accepts: seal it again for its record (secret seal --record)")]
    Unbound,
    #[error("config-encryption key must be 32 bytes, base64-encoded")]
    BadKey,
    #[error("no config-encryption key is configured (secrets.encryption_key_file)")]
    NoKey,
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    #[error(
        "environment variable {0} is not one this org's secrets may name (they are {1}{{NAME}})"
    )]
    EnvNotAllowed(String, String),
    #[error("secret file {0}: {1}")]
    File(String, String),
    #[error("secret file {0} is outside this tenant's secret directories")]
    FileNotAllowed(String),
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

/// The org's part of the environment variables its secrets may name: its id upper-cased,
/// every character but letters and digits as `_`.
pub fn env_org(org: &str) -> String {
    org.chars()
        .map(|c| match c.is_ascii_alphanumeric() {
            true => c.to_ascii_uppercase(),
            false => '_',
        })
        .collect()
}

/// The start of the variables `org`'s secrets may name: `{prefix}{ORG}__`.
pub fn env_start(prefix: &str, org: &str) -> String {
    format!("{prefix}{}__", env_org(org))
}

/// Whether `{"ref": "env:NAME"}` in a record of `org` may name `name`: `{prefix}{ORG}__{KEY}`,
/// where the org's part is everything up to the last `__` (so no org's variables start
/// another's) and `prefix` is not empty.
pub fn env_allowed(name: &str, prefix: &str, org: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix).filter(|_| !prefix.is_empty()) else {
        return false;
    };
    rest.rsplit_once("__")
        .is_some_and(|(owner, key)| !key.is_empty() && owner == env_org(org))
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

    /// A keyed digest of `data` (HMAC-SHA-256 under a key derived from this one): what
    /// secrets are fingerprinted with, so a fingerprint cannot be matched against guesses
    /// by anyone without the deployment's key.
    pub fn keyed_digest(&self, data: &[u8]) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        use sha2::{Digest, Sha256};
        let derived = Sha256::new()
            .chain_update(b"feedback-webhooks fingerprint v1")
            .chain_update(self.0.as_slice())
            .finalize();
        let Ok(mac) = <Hmac<Sha256> as Mac>::new_from_slice(&derived) else {
            return [0; 32];
        };
        mac.chain_update(data).finalize().into_bytes().into()
    }

    /// A fresh random key, base64-encoded (for `secret new-key`).
    pub fn generate_base64() -> String {
        let key = Aes256Gcm::generate_key(OsRng);
        base64::engine::general_purpose::STANDARD.encode(key)
    }

    /// Seals `plaintext` for the record `record_key`: `v2.` + base64url(nonce ‖
    /// ciphertext+tag), with the record key as associated data.
    pub fn seal(&self, plaintext: &[u8], record_key: &str) -> String {
        let cipher = Aes256Gcm::new(&self.0);
        let nonce = Aes256Gcm::generate_nonce(OsRng);
        let payload = Payload {
            msg: plaintext,
            aad: record_key.as_bytes(),
        };
        // Encryption with a valid key and nonce cannot fail for in-memory buffers.
        let ciphertext = cipher.encrypt(&nonce, payload).unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens a value sealed for `record_key`. A `v1.` value (bound to no record) opens only
    /// when `accept_unbound`.
    pub fn open(
        &self,
        sealed: &str,
        record_key: &str,
        accept_unbound: bool,
    ) -> Result<Vec<u8>, SecretError> {
        let (encoded, aad) = if let Some(v2) = sealed.strip_prefix(SEALED_PREFIX) {
            (v2, record_key.as_bytes())
        } else if let Some(v1) = sealed.strip_prefix(UNBOUND_PREFIX) {
            if !accept_unbound {
                return Err(SecretError::Unbound);
            }
            (v1, &[][..])
        } else {
            return Err(SecretError::Malformed);
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| SecretError::Malformed)?;
        if bytes.len() <= NONCE_LEN {
            return Err(SecretError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad,
        };
        Aes256Gcm::new(&self.0)
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| SecretError::WrongKey)
    }

    /// Whether `sealed` is of the unbound `v1.` format.
    pub fn is_unbound(sealed: &str) -> bool {
        sealed.starts_with(UNBOUND_PREFIX)
    }

    /// A `v1.` value as sealed before values were bound to records (tests of the upgrade).
    #[cfg(test)]
    pub fn seal_unbound(&self, plaintext: &[u8]) -> String {
        let cipher = Aes256Gcm::new(&self.0);
        let nonce = Aes256Gcm::generate_nonce(OsRng);
        let ciphertext = cipher.encrypt(&nonce, plaintext).unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        format!("{UNBOUND_PREFIX}{}", URL_SAFE_NO_PAD.encode(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_org_names_only_its_own_environment_variables() {
        let p = "WEBHOOK_SECRET_";
        assert_eq!(
            env_start(p, "ABC123@AdobeOrg"),
            "WEBHOOK_SECRET_ABC123_ADOBEORG__"
        );
        assert!(env_allowed(
            "WEBHOOK_SECRET_ABC123_ADOBEORG__JWT",
            p,
            "ABC123@AdobeOrg"
        ));
        assert!(env_allowed("WEBHOOK_SECRET_A__JWT", p, "a"));
        // Another org's, one whose id starts like it, no key, no prefix, no org part.
        assert!(!env_allowed("WEBHOOK_SECRET_B__JWT", p, "a"));
        assert!(
            !env_allowed("WEBHOOK_SECRET_A__B__JWT", p, "a"),
            "org a_b's variable"
        );
        assert!(env_allowed("WEBHOOK_SECRET_A__B__JWT", p, "a__b"));
        assert!(!env_allowed("WEBHOOK_SECRET_A__", p, "a"));
        assert!(!env_allowed("PATH", p, "a") && !env_allowed("A__JWT", "", "a"));
        assert!(!env_allowed("WEBHOOK_SECRET_JWT", p, "a"));
    }
    use serde_json::json;

    #[test]
    fn seal_and_open_round_trip_and_detect_tampering() {
        let key = SealingKey::from_base64(&SealingKey::generate_base64()).unwrap();
        let record = "webhook/orgA/prod";
        let sealed = key.seal(b"top secret", record);
        assert!(sealed.starts_with("v2."));
        assert!(!sealed.contains("top secret"));
        assert_eq!(key.open(&sealed, record, false).unwrap(), b"top secret");
        assert_ne!(
            key.seal(b"top secret", record),
            sealed,
            "a fresh nonce each time"
        );

        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            key.open(std::str::from_utf8(&altered).unwrap(), record, false),
            Err(SecretError::WrongKey)
        );

        let other = SealingKey::from_base64(&SealingKey::generate_base64()).unwrap();
        assert_eq!(
            other.open(&sealed, record, false),
            Err(SecretError::WrongKey)
        );
        assert_eq!(
            key.open("plain", record, false),
            Err(SecretError::Malformed)
        );
    }

    #[test]
    fn a_sealed_value_opens_only_in_the_record_it_was_sealed_for() {
        let key = SealingKey::from_base64(&SealingKey::generate_base64()).unwrap();
        let sealed = key.seal(b"B's key", "webhook/orgB/prod");
        assert_eq!(
            key.open(&sealed, "webhook/orgA/prod", true),
            Err(SecretError::WrongKey)
        );
    }

    #[test]
    fn unbound_v1_values_open_only_where_still_accepted() {
        let key = SealingKey::from_base64(&SealingKey::generate_base64()).unwrap();
        let old = key.seal_unbound(b"legacy");
        assert!(SealingKey::is_unbound(&old));
        assert_eq!(
            key.open(&old, "webhook/o/s", false),
            Err(SecretError::Unbound)
        );
        assert_eq!(key.open(&old, "webhook/o/s", true).unwrap(), b"legacy");
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
