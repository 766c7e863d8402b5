//! Who may call the administration API: bearer tokens configured by the operator as
//! digests (never plaintext at rest), each with a scope (every org, one org, or one
//! org + sandbox) and a right (read or write).
//!
//! A token names its entry: `fwa_{id}_{secret}`, 16 hex digits of id and 32 random bytes
//! (base64url). Checking one costs a map lookup and one SHA-256, whoever sends it, so an
//! unknown or malformed token costs almost nothing. The secret has 256 bits of entropy:
//! its SHA-256 needs no slowness and no key to be safe at rest.
//!
//! Entries made before this format (`fwa_` and 43 characters, an Argon2id hash) keep
//! working: such a token is checked against the Argon2 entries one at a time (one hash in
//! memory at once), then remembered by its SHA-256. `feedback-webhooks admin token` makes
//! entries of the new format; re-issuing a token is the upgrade.

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::PasswordHasher;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

pub use crate::settings::{Right, TokenEntry};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("admin token {name:?}: scope {scope:?} is not \"operator\", \"{{imsOrg}}\" or \"{{imsOrg}}/{{sandboxId}}\"")]
    BadScope { name: String, scope: String },
    #[error("admin token {name:?}: hash is not an Argon2 PHC string ($argon2id$...)")]
    BadHash { name: String },
    #[error("admin token names must be unique, not empty, and not \"health\" or \"receiver\" (the processor writes under those): {0:?}")]
    BadName(String),
    #[error("hashing: {0}")]
    Hashing(String),
}

/// What a token reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Operator,
    Org(String),
    Sandbox(String, String),
}

impl Scope {
    pub fn parse(text: &str) -> Option<Scope> {
        let ok = |s: &str| !s.is_empty() && !s.contains(char::is_whitespace);
        match text.split('/').collect::<Vec<_>>().as_slice() {
            ["operator"] => Some(Scope::Operator),
            [org] if ok(org) => Some(Scope::Org((*org).to_owned())),
            [org, sandbox] if ok(org) && ok(sandbox) => {
                Some(Scope::Sandbox((*org).to_owned(), (*sandbox).to_owned()))
            }
            _ => None,
        }
    }

    /// Whether the org is visible at all (some of its sandboxes may not be).
    pub fn sees_org(&self, org: &str) -> bool {
        match self {
            Scope::Operator => true,
            Scope::Org(o) | Scope::Sandbox(o, _) => o == org,
        }
    }

    pub fn sees(&self, org: &str, sandbox: &str) -> bool {
        match self {
            Scope::Sandbox(o, s) => o == org && s == sandbox,
            _ => self.sees_org(org),
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub scope: Scope,
    pub right: Right,
}

impl Principal {
    pub fn is_operator(&self) -> bool {
        self.scope == Scope::Operator
    }
}

/// How an entry's token is checked.
enum Check {
    /// SHA-256 of the whole token (`$fwa-sha256${id}${digest}`).
    Digest([u8; 32]),
    /// An Argon2id PHC string: an entry made before tokens named their entry.
    Argon2(String),
}

/// What a token's check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid(Principal),
    /// Not the shape of any token this API issues: refused before any hashing.
    Malformed,
    /// Well formed, and no entry's.
    Unknown,
    /// The shape of a token from before tokens named their entry: only an Argon2 check
    /// (slow, and one at a time) can tell ([`Tokens::verify_slow`]).
    Slow,
}

/// The configured tokens, checked.
pub struct Tokens {
    entries: Vec<(Principal, Check)>,
    /// Token id → index in `entries`.
    by_id: HashMap<String, usize>,
    /// Whether any entry is an Argon2 one.
    has_argon2: bool,
    /// SHA-256 of Argon2 tokens already verified → index in `entries`.
    verified: Mutex<HashMap<[u8; 32], usize>>,
    /// One Argon2 check at a time, in one block of memory (19 MiB) made at the first and
    /// kept: checks allocate nothing, so a run of them cannot grow the process.
    argon2: Mutex<Vec<Block>>,
}

/// Tokens remembered at most (a bounded map: only valid tokens enter it).
const MAX_REMEMBERED: usize = 4096;
const PREFIX: &str = "fwa_";
const ID_HEX: usize = 16;
/// 32 bytes, base64url without padding.
const SECRET_CHARS: usize = 43;
const DIGEST_PREFIX: &str = "$fwa-sha256$";

/// The token's id, when it has the shape of one that names its entry.
fn id_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = (rest.get(..ID_HEX)?, rest.get(ID_HEX..)?);
    let secret = secret.strip_prefix('_')?;
    let hex = id
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (hex && is_secret(secret)).then_some(id)
}

/// Whether `token` has the shape of a token from before tokens named their entry.
fn is_old_shape(token: &str) -> bool {
    token.strip_prefix(PREFIX).is_some_and(is_secret)
}

fn is_secret(s: &str) -> bool {
    s.len() == SECRET_CHARS
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Equal, in a time that does not depend on where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An entry's `hash`, read: the token id and its check.
fn check_of(hash: &str) -> Option<(Option<String>, Check)> {
    if let Some(rest) = hash.strip_prefix(DIGEST_PREFIX) {
        let (id, digest) = rest.split_once('$')?;
        let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(digest).ok()?.try_into().ok()?;
        let probe = format!("{PREFIX}{id}_{}", "A".repeat(SECRET_CHARS));
        id_of(&probe)?;
        return Some((Some(id.to_owned()), Check::Digest(bytes)));
    }
    (hash.starts_with("$argon2") && PasswordHash::new(hash).is_ok())
        .then(|| (None, Check::Argon2(hash.to_owned())))
}

impl Tokens {
    pub fn new(entries: &[TokenEntry]) -> Result<Self, TokenError> {
        let mut checked: Vec<(Principal, Check)> = Vec::new();
        let mut by_id = HashMap::new();
        for e in entries {
            // A record's `updatedBy` then tells an operator's write from the processor's.
            let reserved = [
                crate::join::disable::HEALTH,
                crate::join::disable::UPDATED_BY,
            ];
            if e.name.trim().is_empty()
                || reserved.contains(&e.name.as_str())
                || checked.iter().any(|(p, _)| p.name == e.name)
            {
                return Err(TokenError::BadName(e.name.clone()));
            }
            let scope = Scope::parse(&e.scope).ok_or_else(|| TokenError::BadScope {
                name: e.name.clone(),
                scope: e.scope.clone(),
            })?;
            let bad_hash = || TokenError::BadHash {
                name: e.name.clone(),
            };
            let (id, check) = check_of(&e.hash).ok_or_else(bad_hash)?;
            if let Some(id) = id {
                if by_id.insert(id, checked.len()).is_some() {
                    return Err(bad_hash());
                }
            }
            let principal = Principal {
                name: e.name.clone(),
                scope,
                right: e.right,
            };
            checked.push((principal, check));
        }
        Ok(Tokens {
            has_argon2: checked.iter().any(|(_, c)| matches!(c, Check::Argon2(_))),
            entries: checked,
            by_id,
            verified: Mutex::new(HashMap::new()),
            argon2: Mutex::new(Vec::new()),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The caller a token belongs to, as far as a map lookup and one SHA-256 can tell.
    pub fn check(&self, token: &str) -> Verdict {
        if let Some(id) = id_of(token) {
            return match self.by_id.get(id).and_then(|&i| self.entries.get(i)) {
                Some((p, Check::Digest(d))) if same(d, &digest(token)) => Verdict::Valid(p.clone()),
                _ => Verdict::Unknown,
            };
        }
        if !is_old_shape(token) {
            return Verdict::Malformed;
        }
        if !self.has_argon2 {
            return Verdict::Unknown;
        }
        let known = self
            .verified
            .lock()
            .ok()
            .and_then(|v| v.get(&digest(token)).copied());
        match known.and_then(|i| self.entries.get(i)) {
            Some((p, _)) => Verdict::Valid(p.clone()),
            None => Verdict::Slow,
        }
    }

    /// The Argon2 check of a [`Verdict::Slow`] token: tens of milliseconds and 19 MiB, one
    /// at a time (callers queue). Blocking: run it off the async workers.
    pub fn verify_slow(&self, token: &str) -> Option<Principal> {
        let mut memory = self.argon2.lock().ok()?;
        let found = self.entries.iter().position(|(_, check)| match check {
            Check::Argon2(hash) => argon2_matches(token, hash, &mut memory),
            Check::Digest(_) => false,
        })?;
        drop(memory);
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= MAX_REMEMBERED {
                verified.clear();
            }
            verified.insert(digest(token), found);
        }
        self.entries.get(found).map(|(p, _)| p.clone())
    }

    /// [`Tokens::check`], then the slow check where it is needed. Blocking.
    pub fn verify(&self, token: &str) -> Option<Principal> {
        match self.check(token) {
            Verdict::Valid(p) => Some(p),
            Verdict::Slow => self.verify_slow(token),
            Verdict::Malformed | Verdict::Unknown => None,
        }
    }
}

/// Whether `token` hashes to the Argon2 PHC string `hash`, computed in `memory` (grown to
/// what the hash's parameters need, and kept).
fn argon2_matches(token: &str, hash: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(phc) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(phc.algorithm.as_str()),
        Params::try_from(&phc),
    ) else {
        return false;
    };
    let Ok(version) = Version::try_from(phc.version.unwrap_or(0x13)) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, params);
    argon
        .hash_password_into_with_memory(token.as_bytes(), salt, &mut out, &mut memory[..blocks])
        .is_ok()
        // Compared in constant time: every byte, whatever differs.
        && out
            .iter()
            .zip(expected.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A new random token (`fwa_{id}_{secret}`) and the `hash` of its entry.
pub fn generate() -> Result<(String, String), TokenError> {
    let id: [u8; ID_HEX / 2] = rand::random();
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let secret: [u8; 32] = rand::random();
    let token = format!("{PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = format!(
        "{DIGEST_PREFIX}{id}${}",
        URL_SAFE_NO_PAD.encode(digest(&token))
    );
    Ok((token, hash))
}

/// The Argon2id PHC string of `token`, with a random salt: how entries were made before
/// tokens named their entry (kept for tests of those entries).
pub fn argon2_hash(token: &str) -> Result<String, TokenError> {
    let salt: [u8; 16] = rand::random();
    let hash: PasswordHash = Argon2::default()
        .hash_password_with_salt(token.as_bytes(), &salt)
        .map_err(|e| TokenError::Hashing(e.to_string()))?;
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, hash: &str, scope: &str, right: Right) -> TokenEntry {
        TokenEntry {
            name: name.into(),
            hash: hash.into(),
            scope: scope.into(),
            right,
        }
    }

    #[test]
    fn a_token_is_known_by_its_hash_only() {
        let (token, hash) = generate().unwrap();
        assert!(token.starts_with("fwa_") && !hash.contains(&token));
        let tokens = Tokens::new(&[entry("acme-ci", &hash, "acme/prod", Right::Write)]).unwrap();
        let p = tokens.verify(&token).unwrap();
        assert_eq!(p.name, "acme-ci");
        assert_eq!(p.scope, Scope::Sandbox("acme".into(), "prod".into()));
        // Remembered: the second check gives the same answer.
        assert_eq!(tokens.verify(&token), Some(p));
        assert_eq!(tokens.verify("fwa_wrong"), None);
        assert_eq!(tokens.verify(""), None);
    }

    #[test]
    fn a_token_names_its_entry_and_made_up_ones_are_refused_without_argon2() {
        let (token, hash) = generate().unwrap();
        let id = &token[4..20];
        assert!(hash.starts_with(&format!("$fwa-sha256${id}$")), "{hash}");
        let tokens = Tokens::new(&[entry("ci", &hash, "acme", Right::Read)]).unwrap();
        assert!(matches!(tokens.check(&token), Verdict::Valid(p) if p.name == "ci"));
        // The right id with another secret; an id nobody has; not a token at all.
        let other_secret = format!("{}_{}", &token[..20], "x".repeat(43));
        assert_eq!(tokens.check(&other_secret), Verdict::Unknown);
        let other_id = format!("fwa_ffffffffffffffff_{}", &token[21..]);
        assert_eq!(tokens.check(&other_id), Verdict::Unknown);
        for malformed in [
            "",
            "Bearer",
            "fwa_",
            "fwa_ZZZZZZZZZZZZZZZZ_x",
            &"a".repeat(10_000),
        ] {
            assert_eq!(
                tokens.check(malformed),
                Verdict::Malformed,
                "{malformed:.20}"
            );
        }
        // The old shape, with no Argon2 entry configured: unknown at once.
        assert_eq!(
            tokens.check(&format!("fwa_{}", "A".repeat(43))),
            Verdict::Unknown
        );
        // Two entries with one id are refused.
        let twice = Tokens::new(&[
            entry("a", &hash, "acme", Right::Read),
            entry("b", &hash, "acme", Right::Read),
        ]);
        assert!(matches!(twice, Err(TokenError::BadHash { .. })));
    }

    #[test]
    fn entries_made_before_tokens_named_their_entry_keep_working() {
        let old = format!("fwa_{}", "Q".repeat(43));
        let tokens = Tokens::new(&[entry(
            "old",
            &argon2_hash(&old).unwrap(),
            "acme",
            Right::Write,
        )])
        .unwrap();
        assert_eq!(tokens.check(&old), Verdict::Slow);
        let wrong = format!("fwa_{}", "R".repeat(43));
        assert_eq!(tokens.verify(&wrong), None, "another old-shaped token");
        assert_eq!(tokens.verify(&old).map(|p| p.name), Some("old".into()));
        assert!(
            matches!(tokens.check(&old), Verdict::Valid(_)),
            "remembered"
        );
    }

    #[test]
    fn scopes_reach_what_they_name() {
        let op = Scope::parse("operator").unwrap();
        let org = Scope::parse("acme").unwrap();
        let sb = Scope::parse("acme/prod").unwrap();
        assert!(op.sees("other", "x"));
        assert!(org.sees("acme", "any") && !org.sees("acmex", "any"));
        assert!(sb.sees("acme", "prod") && !sb.sees("acme", "dev") && sb.sees_org("acme"));
        assert!(!sb.sees_org("other"));
        for bad in ["", "a/b/c", "a/", "/b", "a b"] {
            assert_eq!(Scope::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bad_entries_are_refused_with_a_reason() {
        let (_, hash) = generate().unwrap();
        assert!(matches!(
            Tokens::new(&[entry("a", &hash, "a/b/c", Right::Read)]),
            Err(TokenError::BadScope { .. })
        ));
        assert!(matches!(
            Tokens::new(&[entry("a", "plaintext-token", "acme", Right::Read)]),
            Err(TokenError::BadHash { .. })
        ));
        assert!(matches!(
            Tokens::new(&[
                entry("a", &hash, "acme", Right::Read),
                entry("a", &hash, "acme", Right::Read)
            ]),
            Err(TokenError::BadName(_))
        ));
        for reserved in ["health", "receiver"] {
            assert!(matches!(
                Tokens::new(&[entry(reserved, &hash, "operator", Right::Write)]),
                Err(TokenError::BadName(_))
            ));
        }
    }
}
