//! Standard Webhooks signatures: `v1,` + base64(HMAC-SHA256 over "{id}.{timestamp}.{body}")
//! with the secret's decoded bytes as key; one space-separated entry per secret.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signing secret must be whsec_ followed by base64 of 24 to 64 bytes")]
    BadSecret,
}

/// Decodes a `whsec_...` secret into its HMAC key bytes.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, SignatureError> {
    let encoded = secret
        .trim()
        .strip_prefix("whsec_")
        .ok_or(SignatureError::BadSecret)?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| SignatureError::BadSecret)?;
    if !(24..=64).contains(&key.len()) {
        return Err(SignatureError::BadSecret);
    }
    Ok(key)
}

/// The `webhook-signature` header value for `keys` (decoded secrets), in order.
pub fn sign(keys: &[Vec<u8>], id: &str, timestamp: u64, body: &[u8]) -> String {
    keys.iter()
        // HMAC accepts keys of any length, so no key is ever dropped here.
        .filter_map(|key| <Hmac<Sha256> as Mac>::new_from_slice(key).ok())
        .map(|mut mac| {
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn matches_the_specification_example() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign(
            &[key],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn one_entry_per_secret_during_rotation() {
        let a = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let b = decode_secret(&format!("whsec_{}", STANDARD.encode([7u8; 32]))).unwrap();
        let sig = sign(&[a.clone(), b], "id", 1, b"{}");
        let parts: Vec<&str> = sig.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(&[a], "id", 1, b"{}"));
    }

    #[test]
    fn secrets_are_checked() {
        assert!(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(decode_secret(&format!("whsec_{}", STANDARD.encode([1u8; 8]))).is_err());
        assert!(decode_secret("whsec_***").is_err());
    }
}
