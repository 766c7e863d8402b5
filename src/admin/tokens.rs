//! Who may call the administration API: bearer tokens configured by the operator as
//! Argon2id hashes (never plaintext at rest), each with a scope (every org, one org, or one
//! org + sandbox) and a right (read or write).
//!
//! Verifying an Argon2 hash is deliberately slow, so a token is checked against the hashes
//! once and then remembered by its SHA-256 (in memory only) for later requests.

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
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
    #[error("admin token names must be unique and not empty: {0:?}")]
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

/// The configured tokens, checked.
pub struct Tokens {
    entries: Vec<(Principal, String)>,
    /// SHA-256 of tokens already verified → index in `entries`.
    verified: Mutex<HashMap<[u8; 32], usize>>,
}

/// Tokens remembered at most (a bounded map: only valid tokens enter it).
const MAX_REMEMBERED: usize = 4096;

impl Tokens {
    pub fn new(entries: &[TokenEntry]) -> Result<Self, TokenError> {
        let mut checked = Vec::new();
        for e in entries {
            if e.name.trim().is_empty()
                || checked
                    .iter()
                    .any(|(p, _): &(Principal, _)| p.name == e.name)
            {
                return Err(TokenError::BadName(e.name.clone()));
            }
            let scope = Scope::parse(&e.scope).ok_or_else(|| TokenError::BadScope {
                name: e.name.clone(),
                scope: e.scope.clone(),
            })?;
            if PasswordHash::new(&e.hash).is_err() || !e.hash.starts_with("$argon2") {
                return Err(TokenError::BadHash {
                    name: e.name.clone(),
                });
            }
            checked.push((
                Principal {
                    name: e.name.clone(),
                    scope,
                    right: e.right,
                },
                e.hash.clone(),
            ));
        }
        Ok(Tokens {
            entries: checked,
            verified: Mutex::new(HashMap::new()),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The caller a token belongs to, if any. Slow (Argon2) the first time a token is seen.
    pub fn verify(&self, token: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(&i) = self.verified.lock().ok()?.get(&digest) {
            return self.entries.get(i).map(|(p, _)| p.clone());
        }
        let argon = Argon2::default();
        let found = self.entries.iter().position(|(_, hash)| {
            PasswordHash::new(hash)
                .is_ok_and(|h| argon.verify_password(token.as_bytes(), &h).is_ok())
        })?;
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= MAX_REMEMBERED {
                verified.clear();
            }
            verified.insert(digest, found);
        }
        self.entries.get(found).map(|(p, _)| p.clone())
    }
}

/// A new random token (`fwa_` and 32 random bytes, base64url) and its Argon2id hash.
pub fn generate() -> Result<(String, String), TokenError> {
    let bytes: [u8; 32] = rand::random();
    let token = format!("fwa_{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash(&token)?;
    Ok((token, hash))
}

/// The Argon2id PHC string of `token`, with a random salt.
pub fn hash(token: &str) -> Result<String, TokenError> {
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
    }
}
