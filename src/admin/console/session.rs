//! Console sessions: a random id in a cookie maps to the signed-in token's principal and
//! the session's CSRF token, for [`LIFETIME`]. Kept by the instance that signed in (a load
//! balancer in front of several instances needs sticky sessions for the console).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::admin::tokens::Principal;

/// The session cookie.
pub const SESSION_COOKIE: &str = "fw_session";
/// The sign-in form's CSRF double.
pub const CSRF_COOKIE: &str = "fw_csrf";
/// How long a session lasts.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    /// Every form of the session carries it.
    pub csrf: String,
    expires: Instant,
}

#[derive(Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes, URL-safe.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, for the console's paths; `Secure`
/// over TLS; `max_age` 0 removes it.
pub fn cookie(name: &str, value: &str, secure: bool, max_age: u64) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

/// A cookie's value in a request.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

impl Sessions {
    /// Starts a session; returns its id (the cookie's value) and the session.
    pub fn create(&self, principal: Principal) -> (String, Session) {
        let id = new_secret();
        let session = Session {
            principal,
            csrf: new_secret(),
            expires: Instant::now() + LIFETIME,
        };
        if let Ok(mut sessions) = self.sessions.lock() {
            let now = Instant::now();
            sessions.retain(|_, s| s.expires > now);
            sessions.insert(id.clone(), session.clone());
        }
        (id, session)
    }

    /// The request's live session.
    pub fn get(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie_value(headers, SESSION_COOKIE)?;
        let sessions = self.sessions.lock().ok()?;
        sessions
            .get(&id)
            .filter(|s| s.expires > Instant::now())
            .cloned()
    }

    /// Ends the request's session.
    pub fn remove(&self, headers: &HeaderMap) {
        if let (Some(id), Ok(mut sessions)) =
            (cookie_value(headers, SESSION_COOKIE), self.sessions.lock())
        {
            sessions.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tokens::{Right, Scope};
    use axum::http::HeaderValue;

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends_on_sign_out() {
        let sessions = Sessions::default();
        let (id, session) = sessions.create(Principal {
            name: "ops".into(),
            scope: Scope::Operator,
            right: Right::Write,
        });
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {SESSION_COOKIE}={id}")).unwrap(),
        );
        assert_eq!(sessions.get(&headers).unwrap().csrf, session.csrf);
        sessions.remove(&headers);
        assert!(sessions.get(&headers).is_none());
        let c = cookie(SESSION_COOKIE, "v", true, 60);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!cookie(SESSION_COOKIE, "v", false, 60).contains("Secure"));
    }
}
