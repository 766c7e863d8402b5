//! The security headers of a request: `Authorization: Bearer <JWT>` for webhooks with JWT
//! authentication, and `webhook-signature` for webhooks with signing secrets.
//!
//! Tokens are cached per webhook and reused until shortly before they expire. The cache key
//! includes a digest of the authentication settings and of the key bytes, so an edit of the
//! key or the claims takes effect on the next request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::secrets::Secrets;
use crate::domain::config::{Authentication, WebhookConfig};
use crate::domain::secret::{SecretError, SecretSource};
use crate::domain::signature;
use crate::domain::time::unix_seconds;

/// Why a webhook's security settings cannot be applied. Never carries secret material.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("authentication: {0}")]
    Secret(#[from] SecretError),
    #[error("authentication: {0}")]
    Settings(String),
    #[error("authentication: the key does not suit {0:?}")]
    Key(Algorithm),
    #[error("signing: {0}")]
    Signing(#[from] signature::SignatureError),
}

/// Headers to add to one request.
#[derive(Default)]
pub struct SecurityHeaders {
    pub authorization: Option<String>,
    pub signature: Option<String>,
}

struct Cached {
    token: String,
    expires_at: u64,
    renew_at: u64,
}

pub struct Auth {
    secrets: Secrets,
    tokens: Mutex<HashMap<(String, [u8; 32]), Cached>>,
}

fn settings_str<'a>(jwt: &'a Value, field: &str) -> Result<&'a str, AuthError> {
    jwt.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| AuthError::Settings(format!("{field} is missing")))
}

impl Auth {
    pub fn new(secrets: Secrets) -> Self {
        Auth {
            secrets,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The headers for a request to `webhook` with this id, timestamp and body.
    pub fn headers(
        &self,
        webhook: &WebhookConfig,
        webhook_id: &str,
        timestamp: u64,
        body: &[u8],
    ) -> Result<SecurityHeaders, AuthError> {
        let mut headers = SecurityHeaders::default();
        if let Authentication::Jwt(jwt) = &webhook.authentication {
            let key = webhook.key().to_string();
            headers.authorization = Some(format!("Bearer {}", self.token(&key, jwt)?));
        }
        if let Some(signing) = webhook.signing.as_ref().filter(|s| !s.is_null()) {
            let sources: Vec<&Value> = match (signing.get("secret"), signing.get("secrets")) {
                (Some(one), _) => vec![one],
                (None, Some(Value::Array(many))) => many.iter().collect(),
                _ => return Err(AuthError::Settings("signing has no secret".into())),
            };
            let mut keys = Vec::with_capacity(sources.len());
            for source in sources {
                let bytes = self.secrets.resolve(&SecretSource::parse(source)?)?;
                let text =
                    String::from_utf8(bytes).map_err(|_| signature::SignatureError::BadSecret)?;
                keys.push(signature::decode_secret(&text)?);
            }
            headers.signature = Some(signature::sign(&keys, webhook_id, timestamp, body));
        }
        Ok(headers)
    }

    fn token(&self, webhook_key: &str, jwt: &Value) -> Result<String, AuthError> {
        let algorithm = match settings_str(jwt, "algorithm")? {
            "HS256" => Algorithm::HS256,
            "HS384" => Algorithm::HS384,
            "HS512" => Algorithm::HS512,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            other => {
                return Err(AuthError::Settings(format!(
                    "algorithm {other:?} is not supported"
                )))
            }
        };
        let key_bytes = self.secrets.resolve(&SecretSource::parse(
            jwt.get("key")
                .ok_or_else(|| AuthError::Settings("key is missing".into()))?,
        )?)?;
        let mut digest = Sha256::new();
        digest.update(serde_json::to_vec(jwt).unwrap_or_default());
        digest.update(&key_bytes);
        let cache_key = (webhook_key.to_owned(), <[u8; 32]>::from(digest.finalize()));

        let now = unix_seconds(SystemTime::now());
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cached) = tokens.get(&cache_key) {
            if now < cached.renew_at && now < cached.expires_at {
                return Ok(cached.token.clone());
            }
        }
        let lifetime = jwt
            .get("expiresInSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(300);
        let mut claims = Map::new();
        if let Some(Value::Object(extra)) = jwt.get("claims") {
            claims.extend(extra.clone());
        }
        // The registered claims are the processor's; extra claims cannot override them.
        claims.insert("iss".into(), settings_str(jwt, "issuer")?.into());
        claims.insert("sub".into(), settings_str(jwt, "subject")?.into());
        claims.insert("aud".into(), settings_str(jwt, "audience")?.into());
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + lifetime).into());
        claims.insert("jti".into(), uuid::Uuid::new_v4().to_string().into());
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&key_bytes),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&key_bytes),
            _ => EncodingKey::from_secret(&key_bytes),
        }
        .map_err(|_| AuthError::Key(algorithm))?;
        let token = jsonwebtoken::encode(&Header::new(algorithm), &Value::Object(claims), &key)
            .map_err(|_| AuthError::Key(algorithm))?;
        // Renew when 80% of the lifetime has passed, at least 10 s before expiry.
        let renew_at = now + (lifetime * 4 / 5).min(lifetime.saturating_sub(10));
        // Tokens of earlier settings or keys are never asked for again: drop the expired.
        tokens.retain(|_, cached| cached.expires_at > now);
        tokens.insert(
            cache_key,
            Cached {
                token: token.clone(),
                expires_at: now + lifetime,
                renew_at,
            },
        );
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::tests::sample_webhook;
    use jsonwebtoken::{decode, DecodingKey, Validation};
    use serde_json::json;

    fn webhook_with(auth: Value, signing: Value) -> WebhookConfig {
        let mut v = sample_webhook();
        v["authentication"] = auth;
        v["signing"] = signing;
        serde_json::from_value(v).unwrap()
    }

    fn hs256(key_file: &std::path::Path, claims: Value) -> Value {
        json!({"type": "jwt", "algorithm": "HS256", "key": {"ref": format!("file:{}", key_file.display())},
               "issuer": "feedback", "subject": "org", "audience": "hooks", "expiresInSeconds": 300,
               "claims": claims})
    }

    #[test]
    fn jwt_has_the_registered_and_extra_claims_and_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("k");
        std::fs::write(&key_file, "hs-secret").unwrap();
        let auth = Auth::new(Secrets::new(None));
        let webhook = webhook_with(
            hs256(&key_file, json!({"tenant": "acme", "iss": "forged"})),
            Value::Null,
        );
        let h1 = auth.headers(&webhook, "e1", 1, b"{}").unwrap();
        let token = h1
            .authorization
            .unwrap()
            .strip_prefix("Bearer ")
            .unwrap()
            .to_owned();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&["hooks"]);
        validation.set_issuer(&["feedback"]);
        let data = decode::<Value>(
            &token,
            &DecodingKey::from_secret(b"hs-secret").unwrap(),
            &validation,
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "org");
        assert_eq!(data.claims["tenant"], "acme");
        assert_eq!(data.claims["iss"], "feedback");
        assert!(data.claims["jti"].as_str().is_some());
        assert_eq!(
            data.claims["exp"].as_u64().unwrap() - data.claims["iat"].as_u64().unwrap(),
            300
        );

        let h2 = auth.headers(&webhook, "e2", 2, b"{}").unwrap();
        assert_eq!(
            h2.authorization.unwrap(),
            format!("Bearer {token}"),
            "reused before expiry"
        );

        // A new key takes effect on the next request.
        std::fs::write(&key_file, "rotated").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&key_file)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let h3 = auth.headers(&webhook, "e3", 3, b"{}").unwrap();
        let token3 = h3
            .authorization
            .unwrap()
            .strip_prefix("Bearer ")
            .unwrap()
            .to_owned();
        assert_ne!(token3, token);
        assert!(decode::<Value>(
            &token3,
            &DecodingKey::from_secret(b"rotated").unwrap(),
            &validation
        )
        .is_ok());
    }

    #[test]
    fn signature_header_uses_the_sealed_secret() {
        let key = crate::domain::secret::SealingKey::from_base64(
            &crate::domain::secret::SealingKey::generate_base64(),
        )
        .unwrap();
        let sealed = key.seal(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let auth = Auth::new(Secrets::new(Some(key)));
        let webhook = webhook_with(
            json!({"type": "none"}),
            json!({"secret": {"encrypted": sealed}}),
        );
        let h = auth
            .headers(
                &webhook,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#,
            )
            .unwrap();
        assert_eq!(
            h.signature.unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(h.authorization.is_none());
    }

    #[test]
    fn errors_do_not_reveal_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("k");
        std::fs::write(&key_file, "not-a-pem-SECRETVALUE").unwrap();
        let mut jwt = hs256(&key_file, json!({}));
        jwt["algorithm"] = json!("RS256");
        let auth = Auth::new(Secrets::new(None));
        let err = auth
            .headers(&webhook_with(jwt, Value::Null), "e", 1, b"")
            .err()
            .unwrap();
        assert!(!err.to_string().contains("SECRETVALUE"), "{err}");
    }
}
