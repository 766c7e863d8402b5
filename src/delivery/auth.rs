//! The security headers of a request: `Authorization: Bearer <JWT>` for webhooks with JWT
//! authentication, and `webhook-signature` for webhooks with signing secrets.
//!
//! [`Auth::prepare`] parses a webhook's settings (algorithm, claims and secret sources, with
//! sealed and environment secrets resolved then); the caller keeps the result for as long as
//! the record's version stands (the delivery worker keeps it per config version). Key files
//! are re-read when they change. Tokens are kept with the parsed settings and reused until
//! shortly before they expire, so an edit of the record (a new version, prepared anew) or of
//! a key file takes effect on the next request.

use std::sync::Mutex;
use std::time::SystemTime;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::secrets::{Owner, Secrets};
use crate::domain::config::{Authentication, HeaderParam, NotificationConfig, WebhookConfig};
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
    /// Custom headers whose value is a secret, resolved: (name, value).
    pub secret_headers: Vec<(String, String)>,
}

/// A secret's bytes: resolved when the settings were parsed, or a file read at use (and
/// re-read when it changes).
enum Material {
    Resolved(Vec<u8>),
    File(SecretSource),
}

/// The JWT settings of one config version.
struct JwtSettings {
    algorithm: Algorithm,
    issuer: String,
    subject: String,
    audience: String,
    lifetime: u64,
    claims: Map<String, Value>,
    key: Material,
    /// The last token, with the digest of the key bytes it was signed with.
    token: Mutex<Option<([u8; 32], Cached)>>,
}

struct Cached {
    token: String,
    expires_at: u64,
    renew_at: u64,
}

/// A webhook's security settings, parsed (see [`Auth::prepare`]).
pub struct Prepared {
    /// The record the settings belong to, for the secrets read at use.
    record_key: String,
    ims_org: String,
    jwt: Option<JwtSettings>,
    /// Signing keys: decoded when resolved at parse time; files are decoded at use.
    signing: Vec<Material>,
    /// Custom headers whose value is a secret.
    secret_headers: Vec<(String, Material)>,
}

impl Prepared {
    fn owner(&self) -> Owner<'_> {
        Owner {
            record_key: &self.record_key,
            ims_org: &self.ims_org,
        }
    }
}

pub struct Auth {
    secrets: Secrets,
}

/// The security settings of a record (a webhook, a notification endpoint).
struct Secured<'a> {
    record_key: String,
    ims_org: &'a str,
    authentication: &'a Authentication,
    signing: Option<&'a Value>,
    headers: Option<&'a std::collections::BTreeMap<String, HeaderParam>>,
}

fn settings_str(jwt: &Value, field: &str) -> Result<String, AuthError> {
    jwt.get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| AuthError::Settings(format!("{field} is missing")))
}

fn algorithm(name: &str) -> Result<Algorithm, AuthError> {
    Ok(match name {
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
    })
}

fn encoding_key(algorithm: Algorithm, bytes: &[u8]) -> Result<EncodingKey, AuthError> {
    match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(bytes),
        Algorithm::ES256 => EncodingKey::from_ec_pem(bytes),
        _ => EncodingKey::from_secret(bytes),
    }
    .map_err(|_| AuthError::Key(algorithm))
}

fn decode_signing_key(bytes: Vec<u8>) -> Result<Vec<u8>, AuthError> {
    let text = String::from_utf8(bytes).map_err(|_| signature::SignatureError::BadSecret)?;
    Ok(signature::decode_secret(&text)?)
}

impl Auth {
    pub fn new(secrets: Secrets) -> Self {
        Auth { secrets }
    }

    /// The headers for a request with these settings, id, timestamp and body.
    pub fn headers(
        &self,
        prepared: &Prepared,
        webhook_id: &str,
        timestamp: u64,
        body: &[u8],
    ) -> Result<SecurityHeaders, AuthError> {
        let mut headers = SecurityHeaders::default();
        if let Some(jwt) = &prepared.jwt {
            headers.authorization = Some(format!("Bearer {}", self.token(jwt, prepared.owner())?));
        }
        if !prepared.signing.is_empty() {
            let mut keys = Vec::with_capacity(prepared.signing.len());
            for material in &prepared.signing {
                keys.push(match material {
                    Material::Resolved(key) => key.clone(),
                    Material::File(source) => {
                        decode_signing_key(self.secrets.resolve(source, prepared.owner())?)?
                    }
                });
            }
            headers.signature = Some(signature::sign(&keys, webhook_id, timestamp, body));
        }
        for (name, material) in &prepared.secret_headers {
            let bytes = match material {
                Material::Resolved(bytes) => bytes.clone(),
                Material::File(source) => self.secrets.resolve(source, prepared.owner())?,
            };
            let value = String::from_utf8(bytes).map_err(|_| {
                AuthError::Settings(format!("header {name}: the secret is not text"))
            })?;
            // A file's trailing newline is not part of a header value.
            let value = value.trim_end_matches(['\r', '\n']).to_owned();
            headers.secret_headers.push((name.clone(), value));
        }
        Ok(headers)
    }

    fn material(
        &self,
        value: Option<&Value>,
        what: &str,
        owner: Owner<'_>,
    ) -> Result<Material, AuthError> {
        let source = SecretSource::parse(
            value.ok_or_else(|| AuthError::Settings(format!("{what} is missing")))?,
        )?;
        Ok(match source {
            SecretSource::File(_) => Material::File(source),
            _ => Material::Resolved(self.secrets.resolve(&source, owner)?),
        })
    }

    /// Parses `webhook`'s authentication and signing settings, resolving the secrets that
    /// do not change while the process runs (sealed values, the environment).
    pub fn prepare(&self, webhook: &WebhookConfig) -> Result<Prepared, AuthError> {
        self.prepare_record(Secured {
            record_key: webhook.key().to_string(),
            ims_org: &webhook.ims_org,
            authentication: &webhook.authentication,
            signing: webhook.signing.as_ref(),
            headers: webhook.headers.as_ref(),
        })
    }

    /// The same, for an org's notification endpoint.
    pub fn prepare_notification(
        &self,
        endpoint: &NotificationConfig,
    ) -> Result<Prepared, AuthError> {
        self.prepare_record(Secured {
            record_key: endpoint.key().to_string(),
            ims_org: &endpoint.ims_org,
            authentication: &endpoint.authentication,
            signing: Some(&endpoint.signing),
            headers: endpoint.headers.as_ref(),
        })
    }

    fn prepare_record(&self, record: Secured<'_>) -> Result<Prepared, AuthError> {
        let record_key = record.record_key;
        let owner = Owner {
            record_key: &record_key,
            ims_org: record.ims_org,
        };
        let jwt = match record.authentication {
            Authentication::Jwt(jwt) => {
                let algorithm = algorithm(&settings_str(jwt, "algorithm")?)?;
                let key = self.material(jwt.get("key"), "key", owner)?;
                if let Material::Resolved(bytes) = &key {
                    // A key that cannot sign is refused now, not at the first token.
                    encoding_key(algorithm, bytes)?;
                }
                let claims = match jwt.get("claims") {
                    Some(Value::Object(extra)) => extra.clone(),
                    _ => Map::new(),
                };
                Some(JwtSettings {
                    algorithm,
                    issuer: settings_str(jwt, "issuer")?,
                    subject: settings_str(jwt, "subject")?,
                    audience: settings_str(jwt, "audience")?,
                    lifetime: jwt
                        .get("expiresInSeconds")
                        .and_then(Value::as_u64)
                        .unwrap_or(300),
                    claims,
                    key,
                    token: Mutex::new(None),
                })
            }
            Authentication::None => None,
        };
        let mut signing = Vec::new();
        if let Some(settings) = record.signing.filter(|s| !s.is_null()) {
            let sources: Vec<&Value> = match (settings.get("secret"), settings.get("secrets")) {
                (Some(one), _) => vec![one],
                (None, Some(Value::Array(many))) => many.iter().collect(),
                _ => return Err(AuthError::Settings("signing has no secret".into())),
            };
            for source in sources {
                signing.push(match self.material(Some(source), "secret", owner)? {
                    Material::Resolved(bytes) => Material::Resolved(decode_signing_key(bytes)?),
                    file => file,
                });
            }
        }
        let mut secret_headers = Vec::new();
        for (name, param) in record.headers.into_iter().flatten() {
            if let HeaderParam::Secret(source) = param {
                let material = self.material(Some(source), &format!("header {name}"), owner)?;
                secret_headers.push((name.clone(), material));
            }
        }
        Ok(Prepared {
            jwt,
            signing,
            secret_headers,
            ims_org: record.ims_org.to_owned(),
            record_key,
        })
    }

    fn token(&self, jwt: &JwtSettings, owner: Owner<'_>) -> Result<String, AuthError> {
        let file_bytes;
        let key_bytes: &[u8] = match &jwt.key {
            Material::Resolved(bytes) => bytes,
            Material::File(source) => {
                file_bytes = self.secrets.resolve(source, owner)?;
                &file_bytes
            }
        };
        let digest = <[u8; 32]>::from(Sha256::digest(key_bytes));
        let now = unix_seconds(SystemTime::now());
        let mut cached = jwt.token.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, token)) = cached.as_ref() {
            if *at == digest && now < token.renew_at && now < token.expires_at {
                return Ok(token.token.clone());
            }
        }
        let mut claims = jwt.claims.clone();
        // The registered claims are the processor's; extra claims cannot override them.
        claims.insert("iss".into(), jwt.issuer.clone().into());
        claims.insert("sub".into(), jwt.subject.clone().into());
        claims.insert("aud".into(), jwt.audience.clone().into());
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), now.saturating_add(jwt.lifetime).into());
        claims.insert("jti".into(), uuid::Uuid::new_v4().to_string().into());
        let key = encoding_key(jwt.algorithm, key_bytes)?;
        let token = jsonwebtoken::encode(&Header::new(jwt.algorithm), &Value::Object(claims), &key)
            .map_err(|_| AuthError::Key(jwt.algorithm))?;
        // Renew when 80% of the lifetime has passed, at least 10 s before expiry.
        let lifetime = jwt.lifetime;
        let renew_at =
            now.saturating_add((lifetime.saturating_mul(4) / 5).min(lifetime.saturating_sub(10)));
        *cached = Some((
            digest,
            Cached {
                token: token.clone(),
                expires_at: now.saturating_add(lifetime),
                renew_at,
            },
        ));
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::secrets::SecretScope;
    use crate::domain::config::tests::sample_webhook;
    use jsonwebtoken::{decode, DecodingKey, Validation};
    use serde_json::json;

    /// The sample webhook's record key (the associated data of its sealed values).
    const RECORD: &str = "webhook/myImsOrg/068abf40-575e-11ea-8512-9b1bfdb82603";

    /// Secrets whose files are under `dir`, in the sample org's folder.
    fn scoped(dir: &tempfile::TempDir) -> Secrets {
        let scope = SecretScope {
            file_dirs: vec![dir.path().to_owned()],
            ..SecretScope::default()
        };
        Secrets::new(None, scope)
    }

    /// Writes `text` to a secret file, dated later than any read of it so far, and waits
    /// until a read looks at the file again (at most once a second).
    fn rewrite(path: &std::path::Path, text: &str) {
        std::fs::write(path, text).unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(later).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1_100));
    }

    /// `name` in the sample org's folder under `dir`.
    fn org_file(dir: &tempfile::TempDir, name: &str) -> std::path::PathBuf {
        let folder = dir.path().join("myImsOrg");
        std::fs::create_dir_all(&folder).unwrap();
        folder.join(name)
    }

    /// Prepares `webhook` and makes its headers.
    fn headers(
        auth: &Auth,
        webhook: &WebhookConfig,
        id: &str,
    ) -> Result<SecurityHeaders, AuthError> {
        auth.headers(&auth.prepare(webhook)?, id, 1, b"{}")
    }

    fn bearer(h: SecurityHeaders) -> String {
        h.authorization
            .unwrap()
            .strip_prefix("Bearer ")
            .unwrap()
            .to_owned()
    }

    fn claims(token: &str, key: &[u8]) -> Value {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&["hooks"]);
        validation.set_issuer(&["feedback"]);
        decode::<Value>(token, &DecodingKey::from_secret(key).unwrap(), &validation)
            .unwrap()
            .claims
    }

    #[test]
    fn prepared_settings_keep_their_token_and_edits_are_prepared_anew() {
        let sealing = crate::domain::secret::SealingKey::from_base64(
            &crate::domain::secret::SealingKey::generate_base64(),
        )
        .unwrap();
        let sealed = |key: &[u8]| json!({"encrypted": sealing.seal(key, RECORD)});
        let auth = Auth::new(Secrets::new(Some(sealing.clone()), SecretScope::default()));
        let jwt = |key: Value, tenant: &str| {
            json!({"type": "jwt", "algorithm": "HS256", "key": key, "issuer": "feedback",
                   "subject": "org", "audience": "hooks", "claims": {"tenant": tenant}})
        };
        let first = webhook_with(jwt(sealed(b"k1"), "one"), Value::Null);
        let prepared = auth.prepare(&first).unwrap();
        let token = bearer(auth.headers(&prepared, "e1", 1, b"{}").unwrap());
        assert_eq!(claims(&token, b"k1")["tenant"], "one");
        // The same prepared settings keep their token.
        assert_eq!(
            bearer(auth.headers(&prepared, "e2", 2, b"{}").unwrap()),
            token
        );

        // Edited settings (a new version) are prepared anew, with their key and claims.
        let edited = webhook_with(jwt(sealed(b"k2"), "two"), Value::Null);
        let token2 = bearer(headers(&auth, &edited, "e3").unwrap());
        assert_eq!(claims(&token2, b"k2")["tenant"], "two");

        // Settings that cannot work are refused when prepared, without revealing the key.
        let mut bad = jwt(sealed(b"not-a-pem-SECRETVALUE"), "x");
        bad["algorithm"] = json!("RS256");
        let err = auth.prepare(&webhook_with(bad, Value::Null)).err().unwrap();
        assert!(matches!(err, AuthError::Key(Algorithm::RS256)), "{err}");
        assert!(!err.to_string().contains("SECRETVALUE"));
    }

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
        let key_file = org_file(&dir, "k");
        std::fs::write(&key_file, "hs-secret").unwrap();
        let auth = Auth::new(scoped(&dir));
        let webhook = webhook_with(
            hs256(&key_file, json!({"tenant": "acme", "iss": "forged"})),
            Value::Null,
        );
        let prepared = auth.prepare(&webhook).unwrap();
        let h1 = auth.headers(&prepared, "e1", 1, b"{}").unwrap();
        let token = bearer(h1);
        let first = claims(&token, b"hs-secret");
        assert_eq!(first["sub"], "org");
        assert_eq!(first["tenant"], "acme");
        assert_eq!(first["iss"], "feedback");
        assert!(first["jti"].as_str().is_some());
        assert_eq!(
            first["exp"].as_u64().unwrap() - first["iat"].as_u64().unwrap(),
            300
        );

        let h2 = auth.headers(&prepared, "e2", 2, b"{}").unwrap();
        assert_eq!(
            h2.authorization.unwrap(),
            format!("Bearer {token}"),
            "reused before expiry"
        );

        // A new key takes effect within a second.
        rewrite(&key_file, "rotated");
        let h3 = auth.headers(&prepared, "e3", 3, b"{}").unwrap();
        let token3 = bearer(h3);
        assert_ne!(token3, token);
        // Signed with the new key.
        assert_eq!(claims(&token3, b"rotated")["tenant"], "acme");
    }

    #[test]
    fn signature_header_uses_the_sealed_secret() {
        let key = crate::domain::secret::SealingKey::from_base64(
            &crate::domain::secret::SealingKey::generate_base64(),
        )
        .unwrap();
        let sealed = key.seal(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", RECORD);
        let auth = Auth::new(Secrets::new(Some(key), SecretScope::default()));
        let webhook = webhook_with(
            json!({"type": "none"}),
            json!({"secret": {"encrypted": sealed}}),
        );
        let h = auth
            .headers(
                &auth.prepare(&webhook).unwrap(),
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
    fn secret_header_values_are_resolved_at_use() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Auth::new(scoped(&dir));
        let key_file = org_file(&dir, "api-key");
        std::fs::write(&key_file, "k-1\n").unwrap();
        let mut v = sample_webhook();
        v["headers"] = json!({
            "X-Partner-Id": "acme",
            "X-Api-Key": {"ref": format!("file:{}", key_file.display())},
        });
        let webhook: WebhookConfig = serde_json::from_value(v).unwrap();
        let prepared = auth.prepare(&webhook).unwrap();
        let first = auth.headers(&prepared, "e1", 1, b"{}").unwrap();
        assert_eq!(first.secret_headers, [("X-Api-Key".into(), "k-1".into())]);
        // A rotated file is read at the next use.
        rewrite(&key_file, "k-2");
        let second = auth.headers(&prepared, "e2", 2, b"{}").unwrap();
        assert_eq!(second.secret_headers, [("X-Api-Key".into(), "k-2".into())]);
    }

    #[test]
    fn errors_do_not_reveal_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = org_file(&dir, "k");
        std::fs::write(&key_file, "not-a-pem-SECRETVALUE").unwrap();
        let mut jwt = hs256(&key_file, json!({}));
        jwt["algorithm"] = json!("RS256");
        let auth = Auth::new(scoped(&dir));
        // A key file is read at use: the error comes with the first request.
        let err = headers(&auth, &webhook_with(jwt, Value::Null), "e")
            .err()
            .unwrap();
        assert!(!err.to_string().contains("SECRETVALUE"), "{err}");
    }
}
