//! Secrets are write-only through the API: the JWT key, signing secrets, and custom header
//! values given as objects. A write may give a secret as `{"value": ...}`: it
//! is sealed here, bound to its record key, before anything is published. A read shows
//! `{"set": true, "fingerprint": ...}` in its place; sending that back unchanged keeps the
//! secret (so an edit form never needs it). References (`env:`, `file:`) are for operator
//! tokens, within the deployment's reference rules.
//!
//! Pure: no I/O besides the sealing key handed in.

use std::path::{Component, Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::domain::secret::{env_allowed, env_start, SealingKey};
use crate::domain::signature::decode_secret;
use crate::schema::Violation;

/// What the deployment allows secret references to name (the processor's rules).
#[derive(Debug, Clone, Default)]
pub struct RefRules {
    pub env_prefix: String,
    pub file_dirs: Vec<PathBuf>,
}

impl RefRules {
    pub fn from_settings(secrets: &crate::settings::SecretSettings) -> Self {
        RefRules {
            env_prefix: secrets.env_prefix.clone(),
            file_dirs: secrets.file_dirs.clone(),
        }
    }
}

/// First 8 hex digits of the keyed SHA-256 (HMAC) of a secret, under the deployment's key
/// ([`SealingKey::keyed_digest`]): enough to tell two apart, nothing to recover one from,
/// and nothing to check a guess against. Without a key (no secret can be sealed then, only
/// referenced), of its plain SHA-256.
pub fn fingerprint(secret: &[u8], key: Option<&SealingKey>) -> String {
    let digest: [u8; 32] = match key {
        Some(key) => key.keyed_digest(secret),
        None => Sha256::digest(secret).into(),
    };
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// JSON pointers of the places a webhook record holds secrets.
fn slots(record: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if record.pointer("/authentication/key").is_some() {
        out.push("/authentication/key".to_owned());
    }
    if record.pointer("/signing/secret").is_some() {
        out.push("/signing/secret".to_owned());
    }
    if let Some(list) = record.pointer("/signing/secrets").and_then(Value::as_array) {
        out.extend((0..list.len()).map(|i| format!("/signing/secrets/{i}")));
    }
    // A custom header whose value is an object is a secret (text values are not).
    if let Some(headers) = record.get("headers").and_then(Value::as_object) {
        out.extend(
            headers
                .iter()
                .filter(|(_, v)| v.is_object())
                .map(|(name, _)| {
                    format!("/headers/{}", name.replace('~', "~0").replace('/', "~1"))
                }),
        );
    }
    out
}

/// How a stored secret is shown: set, its fingerprint, and to operators its reference if
/// it is one (a reference names where the secret is, not the secret; only operators may
/// write one, and only they see the deployment's layout of files and variables).
fn shown(stored: &Value, key: Option<&SealingKey>, record_key: &str, refs: bool) -> Value {
    if let Some(reference) = stored.get("ref").and_then(Value::as_str) {
        let print = fingerprint(reference.as_bytes(), key);
        return match refs {
            true => json!({ "set": true, "fingerprint": print, "ref": reference }),
            false => json!({ "set": true, "fingerprint": print }),
        };
    }
    let sealed = stored
        .get("encrypted")
        .and_then(Value::as_str)
        .unwrap_or("");
    let print = match key.and_then(|k| k.open(sealed, record_key, false).ok()) {
        Some(plaintext) => fingerprint(&plaintext, key),
        // Not openable here (another key): still stable, still telling versions apart.
        None => fingerprint(sealed.as_bytes(), key),
    };
    json!({ "set": true, "fingerprint": print })
}

/// The record as a reader sees it: every secret replaced by how it is shown (references
/// only when `refs`: the reader is an operator).
pub fn redact(record: &Value, key: Option<&SealingKey>, record_key: &str, refs: bool) -> Value {
    let mut out = record.clone();
    for slot in slots(record) {
        if let (Some(stored), Some(place)) = (record.pointer(&slot), out.pointer_mut(&slot)) {
            *place = shown(stored, key, record_key, refs);
        }
    }
    out
}

/// Whether `path` is lexically inside `{dir}/{org}/` for one of `dirs` (the processor
/// checks the real file again, links resolved, when it reads it).
fn file_allowed(path: &str, org: &str, dirs: &[PathBuf]) -> bool {
    let path = Path::new(path);
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return false;
    }
    dirs.iter().any(|d| path.starts_with(d.join(org)))
}

/// Makes the secrets of a write publishable: seals `{"value": ...}` (checking a signing
/// secret's form first), puts back a kept secret (`{"set": true, "fingerprint": F}` naming
/// one of `current`'s), and checks references. Returns every refusal.
pub fn prepare(
    record: &mut Value,
    current: Option<&Value>,
    key: Option<&SealingKey>,
    record_key: &str,
    org: &str,
    may_reference: Option<&RefRules>,
) -> Vec<Violation> {
    let mut refused = Vec::new();
    let mut refuse = |field: &str, message: String| {
        refused.push(Violation {
            field: field.to_owned(),
            message,
        })
    };
    let kept: Vec<(String, Value)> = current
        .map(|c| {
            slots(c)
                .into_iter()
                .filter_map(|s| c.pointer(&s).cloned())
                .map(|stored| {
                    let print = shown(&stored, key, record_key, false)["fingerprint"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    (print, stored)
                })
                .collect()
        })
        .unwrap_or_default();
    for slot in slots(record) {
        let Some(place) = record.pointer_mut(&slot) else {
            continue;
        };
        let given = place.clone();
        if let Some(value) = given.get("value") {
            let Some(text) = value.as_str().filter(|t| !t.is_empty()) else {
                refuse(&slot, "value must be a non-empty string".into());
                continue;
            };
            if slot.starts_with("/signing") {
                if let Err(e) = decode_secret(text) {
                    refuse(&slot, e.to_string());
                    continue;
                }
            }
            if slot.starts_with("/headers/")
                && (text.len() > 4096 || !text.bytes().all(|b| (0x20..0x7f).contains(&b)))
            {
                refuse(
                    &slot,
                    "a header value is at most 4096 visible ASCII characters".into(),
                );
                continue;
            }
            match key {
                Some(key) => *place = json!({ "encrypted": key.seal(text.as_bytes(), record_key) }),
                None => refuse(
                    &slot,
                    "this deployment has no encryption key (secrets.encryption_key_file): secrets cannot be taken as values".into(),
                ),
            }
        } else if given.get("set").is_some() {
            let wanted = given.get("fingerprint").and_then(Value::as_str);
            match kept
                .iter()
                .find(|(print, _)| Some(print.as_str()) == wanted)
            {
                Some((_, stored)) => *place = stored.clone(),
                None => refuse(
                    &slot,
                    "no current secret has this fingerprint: send the secret as {\"value\": ...}"
                        .into(),
                ),
            }
        } else if let Some(reference) = given.get("ref").and_then(Value::as_str) {
            // The record's own reference, unchanged (an enable or disable by an org token
            // of a record an operator wrote), stays: it names nothing new.
            if kept.iter().any(|(_, stored)| *stored == given) {
                continue;
            }
            let Some(rules) = may_reference else {
                refuse(
                    &slot,
                    "references (env:, file:) are for operator tokens: send the secret as {\"value\": ...}".into(),
                );
                continue;
            };
            let allowed = match (
                reference.strip_prefix("env:"),
                reference.strip_prefix("file:"),
            ) {
                (Some(name), _) => env_allowed(name, &rules.env_prefix, org),
                (_, Some(path)) => file_allowed(path, org, &rules.file_dirs),
                _ => false,
            };
            if !allowed {
                refuse(
                    &slot,
                    format!(
                        "reference outside what this deployment allows (env:{}{{NAME}}, or file: under a secrets folder's {org}/)",
                        env_start(&rules.env_prefix, org)
                    ),
                );
            }
        } else if given.get("encrypted").is_some()
            && may_reference.is_none()
            && !kept.iter().any(|(_, stored)| *stored == given)
        {
            // A sealed value other than the record's own (one already there stays).
            refuse(
                &slot,
                "sealed values are for operator tokens: send the secret as {\"value\": ...}".into(),
            );
        }
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "webhook/acme/prod";
    const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn sealing() -> SealingKey {
        SealingKey::from_base64(&SealingKey::generate_base64()).unwrap()
    }

    fn record(auth_key: Value, signing: Value) -> Value {
        json!({
            "authentication": { "type": "jwt", "algorithm": "HS256", "key": auth_key },
            "signing": signing,
        })
    }

    #[test]
    fn values_are_sealed_for_their_record_and_never_shown() {
        let key = sealing();
        let mut r = record(
            json!({"value": "hmac-key"}),
            json!({"secret": {"value": WHSEC}}),
        );
        assert!(prepare(&mut r, None, Some(&key), KEY, "acme", None).is_empty());
        let sealed = r["authentication"]["key"]["encrypted"].as_str().unwrap();
        assert_eq!(key.open(sealed, KEY, false).unwrap(), b"hmac-key");
        assert!(
            key.open(sealed, "webhook/acme/dev", false).is_err(),
            "bound to its record"
        );
        let shown = redact(&r, Some(&key), KEY, false);
        let text = shown.to_string();
        assert!(!text.contains("hmac-key") && !text.contains(sealed) && !text.contains(WHSEC));
        assert_eq!(
            shown["authentication"]["key"],
            json!({"set": true, "fingerprint": fingerprint(b"hmac-key", Some(&key))})
        );
        assert_eq!(
            shown["signing"]["secret"]["fingerprint"],
            fingerprint(WHSEC.as_bytes(), Some(&key))
        );
    }

    #[test]
    fn a_header_value_can_be_a_sealed_secret() {
        let key = sealing();
        let mut r = record(json!({"value": "k"}), Value::Null);
        r["headers"] = json!({"X-Partner": "acme", "X-Api-Key": {"value": "api-key-1"}});
        assert!(prepare(&mut r, None, Some(&key), KEY, "acme", None).is_empty());
        let sealed = r["headers"]["X-Api-Key"]["encrypted"].as_str().unwrap();
        assert_eq!(key.open(sealed, KEY, false).unwrap(), b"api-key-1");
        assert_eq!(r["headers"]["X-Partner"], "acme", "text stays text");
        let shown = redact(&r, Some(&key), KEY, false);
        assert!(!shown.to_string().contains("api-key-1") && !shown.to_string().contains(sealed));
        assert_eq!(shown["headers"]["X-Api-Key"]["set"], true);
        // Sent back as shown, it is kept.
        let mut edit = r.clone();
        edit["headers"]["X-Api-Key"] = shown["headers"]["X-Api-Key"].clone();
        edit["authentication"]["key"] = shown["authentication"]["key"].clone();
        assert!(prepare(&mut edit, Some(&r), Some(&key), KEY, "acme", None).is_empty());
        assert_eq!(edit["headers"]["X-Api-Key"], r["headers"]["X-Api-Key"]);
        let mut broken = record(json!({"value": "k"}), Value::Null);
        broken["headers"] = json!({"X-Api-Key": {"value": "line\nbreak"}});
        let refused = prepare(&mut broken, None, Some(&key), KEY, "acme", None);
        assert_eq!(refused[0].field, "/headers/X-Api-Key");
    }

    #[test]
    fn fingerprints_are_keyed_and_references_shown_to_operators_only() {
        let key = sealing();
        let print = fingerprint(b"hmac-key", Some(&key));
        assert_eq!(print.len(), 8);
        assert!(print.chars().all(|c| c.is_ascii_hexdigit()));
        // Not the plain SHA-256's: a guess cannot be checked without the key, and another
        // deployment's key prints another fingerprint.
        assert_ne!(print, fingerprint(b"hmac-key", None));
        assert_ne!(print, fingerprint(b"hmac-key", Some(&sealing())));
        assert_eq!(print, fingerprint(b"hmac-key", Some(&key)), "stable");

        let r = record(json!({"ref": "file:/etc/keys/acme/jwt.pem"}), Value::Null);
        let to_operator = redact(&r, Some(&key), KEY, true);
        assert_eq!(
            to_operator["authentication"]["key"]["ref"],
            "file:/etc/keys/acme/jwt.pem"
        );
        let to_tenant = redact(&r, Some(&key), KEY, false);
        assert!(!to_tenant.to_string().contains("/etc/keys"), "{to_tenant}");
        assert_eq!(to_tenant["authentication"]["key"]["set"], true);
    }

    #[test]
    fn a_shown_secret_sent_back_keeps_the_stored_one() {
        let key = sealing();
        let mut current = record(json!({"value": "k1"}), json!({"secret": {"value": WHSEC}}));
        prepare(&mut current, None, Some(&key), KEY, "acme", None);
        // Rotation: keep the current signing secret and add a new one.
        let shown = redact(&current, Some(&key), KEY, false);
        let other = format!("whsec_{}", "A".repeat(32));
        let mut edit = record(
            shown["authentication"]["key"].clone(),
            json!({"secrets": [shown["signing"]["secret"].clone(), {"value": other}]}),
        );
        assert!(prepare(&mut edit, Some(&current), Some(&key), KEY, "acme", None).is_empty());
        assert_eq!(
            edit["authentication"]["key"],
            current["authentication"]["key"]
        );
        assert_eq!(edit["signing"]["secrets"][0], current["signing"]["secret"]);
        assert!(edit["signing"]["secrets"][1]["encrypted"].is_string());

        // The record's own sealed value, unchanged (an enable or disable), stays.
        let mut same = current.clone();
        assert!(prepare(&mut same, Some(&current), Some(&key), KEY, "acme", None).is_empty());
        let mut pasted = record(json!({"encrypted": "v2.xyz"}), Value::Null);
        assert_eq!(
            prepare(&mut pasted, Some(&current), Some(&key), KEY, "acme", None).len(),
            1
        );

        let mut wrong = record(json!({"set": true, "fingerprint": "00000000"}), Value::Null);
        let refused = prepare(&mut wrong, Some(&current), Some(&key), KEY, "acme", None);
        assert_eq!(refused[0].field, "/authentication/key");
    }

    #[test]
    fn references_and_bad_values_are_refused_with_their_pointer() {
        let key = sealing();
        let rules = RefRules {
            env_prefix: "WEBHOOK_SECRET_".into(),
            file_dirs: vec![PathBuf::from("/etc/keys")],
        };
        let mut r = record(
            json!({"ref": "env:WEBHOOK_SECRET_ACME__A"}),
            json!({"secret": {"value": "plain"}}),
        );
        let refused = prepare(&mut r, None, Some(&key), KEY, "acme", None);
        let fields: Vec<&str> = refused.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["/authentication/key", "/signing/secret"]);

        let ok = |reference: &str| {
            let mut r = record(json!({ "ref": reference }), Value::Null);
            prepare(&mut r, None, Some(&key), KEY, "acme", Some(&rules)).is_empty()
        };
        assert!(ok("env:WEBHOOK_SECRET_ACME__A") && ok("file:/etc/keys/acme/jwt.pem"));
        assert!(!ok("env:HOME") && !ok("file:/etc/keys/other/jwt.pem"));
        assert!(!ok("env:WEBHOOK_SECRET_A") && !ok("env:WEBHOOK_SECRET_OTHER__A"));
        assert!(!ok("file:/etc/keys/acme/../other/jwt.pem") && !ok("file:/etc/passwd"));

        // An org token may write the record back with the operator's reference unchanged
        // (what an enable or disable does), not with another.
        let mut operators = record(json!({"ref": "env:WEBHOOK_SECRET_ACME__A"}), Value::Null);
        assert!(prepare(&mut operators, None, Some(&key), KEY, "acme", Some(&rules)).is_empty());
        let mut toggled = operators.clone();
        toggled["enabled"] = json!(false);
        assert!(prepare(
            &mut toggled,
            Some(&operators),
            Some(&key),
            KEY,
            "acme",
            None
        )
        .is_empty());
        let mut other = record(json!({"ref": "env:WEBHOOK_SECRET_ACME__B"}), Value::Null);
        let refused = prepare(&mut other, Some(&operators), Some(&key), KEY, "acme", None);
        assert_eq!(refused.len(), 1);

        let mut no_key = record(json!({"value": "k"}), Value::Null);
        assert_eq!(prepare(&mut no_key, None, None, KEY, "acme", None).len(), 1);
    }
}
