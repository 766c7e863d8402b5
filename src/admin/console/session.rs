//! Console sessions: a random id in a cookie maps to the signed-in token's principal and
//! the session's CSRF token, for [`LIFETIME`], or until [`IDLE`] passes without a request.
//! A sign-in ends the browser's previous session; one token holds at most
//! [`PER_PRINCIPAL`] sessions and the instance [`MAX_SESSIONS`] (the least recently used
//! goes first), so signing in in a loop costs a bounded amount of memory. Kept by the
//! instance that signed in (a load balancer in front of several instances needs sticky
//! sessions for the console).

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
/// A session unused this long ends.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// Sessions one token may hold at once.
pub const PER_PRINCIPAL: usize = 8;
/// Sessions the instance holds at most.
pub const MAX_SESSIONS: usize = 10_000;

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    /// Every form of the session carries it.
    pub csrf: String,
    expires: Instant,
    used: Instant,
}

impl Session {
    fn live(&self, now: Instant) -> bool {
        self.expires > now && now.duration_since(self.used) < IDLE
    }
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
    /// Starts a session, ending the one the request's browser had; returns its id (the
    /// cookie's value) and the session.
    pub fn create(&self, principal: Principal, headers: &HeaderMap) -> (String, Session) {
        self.create_at(principal, headers, Instant::now())
    }

    fn create_at(
        &self,
        principal: Principal,
        headers: &HeaderMap,
        now: Instant,
    ) -> (String, Session) {
        let id = new_secret();
        let session = Session {
            principal,
            csrf: new_secret(),
            expires: now + LIFETIME,
            used: now,
        };
        if let Ok(mut sessions) = self.sessions.lock() {
            if let Some(previous) = cookie_value(headers, SESSION_COOKIE) {
                sessions.remove(&previous);
            }
            sessions.retain(|_, s| s.live(now));
            let name = &session.principal.name;
            let theirs = sessions
                .values()
                .filter(|s| &s.principal.name == name)
                .count();
            if theirs >= PER_PRINCIPAL {
                evict_least_used(&mut sessions, |s| &s.principal.name == name);
            }
            if sessions.len() >= MAX_SESSIONS {
                evict_least_used(&mut sessions, |_| true);
            }
            sessions.insert(id.clone(), session.clone());
        }
        (id, session)
    }

    /// The request's live session (a request keeps it from going idle).
    pub fn get(&self, headers: &HeaderMap) -> Option<Session> {
        self.get_at(headers, Instant::now())
    }

    fn get_at(&self, headers: &HeaderMap, now: Instant) -> Option<Session> {
        let id = cookie_value(headers, SESSION_COOKIE)?;
        let mut sessions = self.sessions.lock().ok()?;
        let session = sessions.get_mut(&id).filter(|s| s.live(now))?;
        session.used = now;
        Some(session.clone())
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

/// Ends the least recently used of the sessions `which` picks.
fn evict_least_used(sessions: &mut HashMap<String, Session>, which: impl Fn(&Session) -> bool) {
    let oldest = sessions
        .iter()
        .filter(|(_, s)| which(s))
        .min_by_key(|(_, s)| s.used)
        .map(|(id, _)| id.clone());
    if let Some(id) = oldest {
        sessions.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tokens::{Right, Scope};
    use axum::http::HeaderValue;

    fn principal(name: &str) -> Principal {
        Principal {
            name: name.into(),
            scope: Scope::Operator,
            right: Right::Write,
        }
    }

    fn with_cookie(id: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {SESSION_COOKIE}={id}")).unwrap(),
        );
        headers
    }

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends_on_sign_out() {
        let sessions = Sessions::default();
        let (id, session) = sessions.create(principal("ops"), &HeaderMap::new());
        let headers = with_cookie(&id);
        assert_eq!(sessions.get(&headers).unwrap().csrf, session.csrf);
        sessions.remove(&headers);
        assert!(sessions.get(&headers).is_none());
        let c = cookie(SESSION_COOKIE, "v", true, 60);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!cookie(SESSION_COOKIE, "v", false, 60).contains("Secure"));
    }

    #[test]
    fn a_session_ends_when_idle_or_when_its_browser_signs_in_again() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let (id, _) = sessions.create_at(principal("ops"), &HeaderMap::new(), start);
        let headers = with_cookie(&id);
        // Used within the idle time, it lives on; left alone past it, it ends.
        let later = start + IDLE - Duration::from_secs(1);
        assert!(sessions.get_at(&headers, later).is_some());
        assert!(sessions
            .get_at(&headers, later + IDLE - Duration::from_secs(1))
            .is_some());
        assert!(sessions.get_at(&headers, later + IDLE * 2).is_none());

        let (first, _) = sessions.create(principal("ops"), &HeaderMap::new());
        let (second, _) = sessions.create(principal("ops"), &with_cookie(&first));
        assert!(
            sessions.get(&with_cookie(&first)).is_none(),
            "the previous one ended"
        );
        assert!(sessions.get(&with_cookie(&second)).is_some());
    }

    #[test]
    fn one_token_holds_a_few_sessions_and_the_instance_a_bounded_number() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let ids: Vec<String> = (0..PER_PRINCIPAL + 2)
            .map(|i| {
                let at = start + Duration::from_secs(i as u64);
                sessions
                    .create_at(principal("ops"), &HeaderMap::new(), at)
                    .0
            })
            .collect();
        let now = start + Duration::from_secs(60);
        let live = ids
            .iter()
            .filter(|id| sessions.get_at(&with_cookie(id), now).is_some());
        assert_eq!(live.count(), PER_PRINCIPAL);
        assert!(
            sessions.get_at(&with_cookie(&ids[0]), now).is_none(),
            "the oldest went"
        );
        let (other, _) = sessions.create_at(principal("dev"), &HeaderMap::new(), now);
        assert!(sessions.get_at(&with_cookie(&other), now).is_some());
        let total = sessions.sessions.lock().unwrap().len();
        assert!(total <= MAX_SESSIONS && total == PER_PRINCIPAL + 1);
    }
}
