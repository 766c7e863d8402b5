//! Every request carries `Authorization: Bearer <token>`. A missing or unknown token is a
//! 401; a client address that fails too often is refused with 429 before any hash is
//! checked (Argon2 is slow on purpose). Failures are logged with the address, never the
//! token.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::warn;

use super::problem::Problem;
use super::tokens::Principal;
use super::AppState;
use crate::observe::metrics;

/// The connection's peer, added to each request by the server.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Failed authentications per client address in the current minute.
#[derive(Default)]
pub struct Failures {
    by_address: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; beyond, expired windows are dropped first.
const MAX_ADDRESSES: usize = 10_000;

impl Failures {
    /// Whether `ip` may try again now.
    pub fn allowed(&self, ip: IpAddr, per_minute: u32) -> bool {
        let Ok(map) = self.by_address.lock() else {
            return false;
        };
        map.get(&ip)
            .is_none_or(|(start, count)| start.elapsed() > WINDOW || *count < per_minute)
    }

    pub fn record(&self, ip: IpAddr) {
        let Ok(mut map) = self.by_address.lock() else {
            return;
        };
        if map.len() >= MAX_ADDRESSES {
            map.retain(|_, (start, _)| start.elapsed() <= WINDOW);
        }
        let entry = map.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() > WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

/// The authenticated caller of a request.
pub struct Caller(pub Principal);

/// Why a request was not authenticated.
pub struct Refused(Problem);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let status = self.0.status;
        let mut response = self.0.into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = Refused;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<Peer>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0.ip());
        let per_minute = state.auth_failures_per_minute;
        if !state.failures.allowed(ip, per_minute) {
            metrics()
                .admin_auth_failures
                .with_label_values(&["rate_limited"])
                .inc();
            return Err(Refused(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed authentications",
                "too many failed authentications from this address; try again in a minute",
            )));
        }
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let principal = match token {
            None => None,
            Some(token) => {
                let tokens = state.tokens.clone();
                let token = token.to_owned();
                // Argon2 takes tens of milliseconds: off the runtime's threads.
                tokio::task::spawn_blocking(move || tokens.verify(&token))
                    .await
                    .ok()
                    .flatten()
            }
        };
        match principal {
            Some(p) => Ok(Caller(p)),
            None => {
                state.failures.record(ip);
                let why = if token.is_some() {
                    "unknown_token"
                } else {
                    "no_token"
                };
                metrics()
                    .admin_auth_failures
                    .with_label_values(&[why])
                    .inc();
                warn!(client = %ip, path = parts.uri.path(), reason = why, "authentication failed");
                Err(Refused(Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "a valid bearer token is required (Authorization: Bearer ...)",
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_limited_per_address_and_minute() {
        let f = Failures::default();
        let a = IpAddr::from([127, 0, 0, 1]);
        let b = IpAddr::from([127, 0, 0, 2]);
        for _ in 0..3 {
            assert!(f.allowed(a, 3));
            f.record(a);
        }
        assert!(!f.allowed(a, 3));
        assert!(f.allowed(b, 3));
    }
}
