//! Who is calling, for both faces: the API's `Authorization: Bearer <token>` and the
//! console's sign-in go through one [`Gate`].
//!
//! What anyone can send before authenticating costs almost nothing: a token names its
//! entry, so checking it is a map lookup and one SHA-256 (`tokens.rs`), and a valid token is
//! always served. Failures are counted per client (the connection's peer, or the address a
//! trusted proxy forwarded; an IPv6 client by its /64): past `admin.auth_failures_per_minute`
//! a failing client hears 429. A token of the old Argon2 kind is slow to check, so its
//! client's failure slot is taken before the check and given back if it was valid. Failures
//! are logged with the client address, never the token.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::warn;

use super::problem::Problem;
use super::tokens::{Principal, Tokens, Verdict};
use super::AppState;
use crate::observe::metrics;

/// The connection's peer, added to each request by the server.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

const WINDOW: Duration = Duration::from_secs(60);
/// Clients remembered at most: the limiter's memory is bounded whoever calls.
const MAX_CLIENTS: usize = 10_000;

/// Failed authentications per client in the current minute.
#[derive(Default)]
pub struct Failures {
    by_client: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Failures {
    /// Counts a failure of `client`; whether it is past `per_minute` (then: 429).
    pub fn fail(&self, client: IpAddr, per_minute: u32) -> bool {
        self.count(client, |n| n.saturating_add(1)) > per_minute
    }

    /// Takes a failure slot before a slow check; `false` when none is left. Checked and
    /// taken under one lock, so a burst of parallel requests cannot take more.
    pub fn reserve(&self, client: IpAddr, per_minute: u32) -> bool {
        let mut taken = false;
        self.count(client, |n| {
            taken = n < per_minute;
            n + u32::from(taken)
        });
        taken
    }

    /// Gives back a slot [`Failures::reserve`] took: the check succeeded.
    pub fn release(&self, client: IpAddr) {
        if let Ok(mut map) = self.by_client.lock() {
            if let Some((_, n)) = map.get_mut(&client) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// Changes the client's count in the current window by `change`, and returns it.
    fn count(&self, client: IpAddr, change: impl FnOnce(u32) -> u32) -> u32 {
        let Ok(mut map) = self.by_client.lock() else {
            return u32::MAX;
        };
        if !map.contains_key(&client) && map.len() >= MAX_CLIENTS {
            map.retain(|_, (start, _)| start.elapsed() <= WINDOW);
            if map.len() >= MAX_CLIENTS {
                // Still full of live windows: the oldest goes.
                let oldest = map.iter().min_by_key(|(_, (start, _))| *start);
                if let Some(oldest) = oldest.map(|(ip, _)| *ip) {
                    map.remove(&oldest);
                }
            }
        }
        let entry = map.entry(client).or_insert((Instant::now(), 0));
        if entry.0.elapsed() > WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 = change(entry.1);
        entry.1
    }

    #[cfg(test)]
    fn clients(&self) -> usize {
        self.by_client.lock().map_or(0, |m| m.len())
    }
}

/// Why a caller was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    NoToken,
    Malformed,
    Unknown,
    /// Too many failures from this client this minute.
    Limited,
}

impl Denied {
    fn reason(self) -> &'static str {
        match self {
            Denied::NoToken => "no_token",
            Denied::Malformed => "malformed_token",
            Denied::Unknown => "unknown_token",
            Denied::Limited => "rate_limited",
        }
    }
}

/// The door both faces use.
pub struct Gate {
    pub tokens: Arc<Tokens>,
    pub failures: Failures,
    pub failures_per_minute: u32,
    /// Proxies in front of the API whose `X-Forwarded-For` is trusted (0: none).
    pub proxy_hops: usize,
}

impl Gate {
    /// The client a request is counted against: the address the nearest untrusted hop
    /// connected from (the peer, or the `proxy_hops`-th `X-Forwarded-For` entry from the
    /// right), an IPv6 address by its /64.
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> IpAddr {
        let peer = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let forwarded = (self.proxy_hops > 0)
            .then(|| forwarded_for(headers, self.proxy_hops))
            .flatten();
        per_client(forwarded.unwrap_or(peer))
    }

    /// The caller `token` belongs to, or why not. A valid token is always let in.
    pub async fn authenticate(
        &self,
        client: IpAddr,
        token: Option<&str>,
    ) -> Result<Principal, Denied> {
        let limit = self.failures_per_minute;
        let denied = |why: Denied| {
            let why = if self.failures.fail(client, limit) {
                Denied::Limited
            } else {
                why
            };
            Err(note(client, why))
        };
        let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            return denied(Denied::NoToken);
        };
        match self.tokens.check(token) {
            Verdict::Valid(p) => Ok(p),
            Verdict::Malformed => denied(Denied::Malformed),
            Verdict::Unknown => denied(Denied::Unknown),
            Verdict::Slow => {
                if !self.failures.reserve(client, limit) {
                    return Err(note(client, Denied::Limited));
                }
                let (tokens, token) = (self.tokens.clone(), token.to_owned());
                // Argon2 takes tens of milliseconds: off the runtime's threads.
                let found = tokio::task::spawn_blocking(move || tokens.verify_slow(&token))
                    .await
                    .ok()
                    .flatten();
                match found {
                    Some(p) => {
                        self.failures.release(client);
                        Ok(p)
                    }
                    None => Err(note(client, Denied::Unknown)),
                }
            }
        }
    }
}

/// Counts and logs a refusal.
fn note(client: IpAddr, why: Denied) -> Denied {
    metrics()
        .admin_auth_failures
        .with_label_values(&[why.reason()])
        .inc();
    warn!(client = %client, reason = why.reason(), "authentication failed");
    why
}

/// The `hops`-th address of `X-Forwarded-For` from the right: the one the outermost
/// trusted proxy saw connect. `None` when the header has fewer entries.
fn forwarded_for(headers: &HeaderMap, hops: usize) -> Option<IpAddr> {
    let all: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let entry = all.len().checked_sub(hops).map(|i| all[i])?;
    entry.parse().ok()
}

/// The key a client is counted by: an IPv4 address, or an IPv6 address's /64 (one
/// subscriber's whole allocation).
fn per_client(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Who made a request and from where, once authenticated: the audit line of a
/// state-changing request names them (`admin/mod.rs`). Each request carries an empty one.
#[derive(Clone, Default)]
pub struct Who(Arc<Mutex<Option<(String, IpAddr)>>>);

impl Who {
    pub fn set(parts: &Parts, name: &str, client: IpAddr) {
        if let Some(Ok(mut who)) = parts.extensions.get::<Who>().map(|w| w.0.lock()) {
            *who = Some((name.to_owned(), client));
        }
    }

    pub fn get(&self) -> Option<(String, IpAddr)> {
        self.0.lock().ok().and_then(|w| w.clone())
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
        let peer = parts.extensions.get::<Peer>().map(|p| p.0.ip());
        let client = state.gate.client(peer, &parts.headers);
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match state.gate.authenticate(client, token).await {
            Ok(p) => {
                Who::set(parts, &p.name, client);
                Ok(Caller(p))
            }
            Err(Denied::Limited) => Err(Refused(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed authentications",
                "too many failed authentications from this client; try again in a minute",
            ))),
            Err(_) => Err(Refused(Problem::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "a valid bearer token is required (Authorization: Bearer ...)",
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tokens::{argon2_hash, generate, TokenEntry};
    use crate::settings::Right;

    fn gate(entries: &[(&str, &str)], per_minute: u32, proxy_hops: usize) -> Gate {
        let entries: Vec<TokenEntry> = entries
            .iter()
            .map(|(name, hash)| TokenEntry {
                name: (*name).into(),
                hash: (*hash).into(),
                scope: "acme".into(),
                right: Right::Read,
            })
            .collect();
        Gate {
            tokens: Arc::new(Tokens::new(&entries).unwrap()),
            failures: Failures::default(),
            failures_per_minute: per_minute,
            proxy_hops,
        }
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[tokio::test]
    async fn a_valid_token_is_let_in_whatever_its_client_failed_before() {
        let (token, hash) = generate().unwrap();
        let g = gate(&[("ci", &hash)], 3, 0);
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(
                g.authenticate(A, Some("fwa_0123456789abcdef_made-up"))
                    .await,
            );
        }
        let denied = [Denied::Malformed, Denied::Malformed, Denied::Malformed];
        assert_eq!(seen[..3], denied.map(Err));
        assert_eq!(seen[3..], [Err(Denied::Limited), Err(Denied::Limited)]);
        assert_eq!(
            g.authenticate(A, Some(&token)).await.map(|p| p.name),
            Ok("ci".into())
        );
        // Another client is not limited by A's failures.
        let b = IpAddr::from([10, 0, 0, 2]);
        assert_eq!(g.authenticate(b, None).await, Err(Denied::NoToken));
    }

    #[tokio::test]
    async fn an_old_argon2_token_takes_its_slot_before_the_check_and_gives_it_back() {
        let old = format!("fwa_{}", "B".repeat(43));
        let g = gate(&[("old", &argon2_hash(&old).unwrap())], 2, 0);
        assert!(g.authenticate(A, Some(&old)).await.is_ok());
        assert!(g.authenticate(A, Some(&old)).await.is_ok(), "remembered");
        let wrong = format!("fwa_{}", "C".repeat(43));
        assert_eq!(g.authenticate(A, Some(&wrong)).await, Err(Denied::Unknown));
        assert_eq!(g.authenticate(A, Some(&wrong)).await, Err(Denied::Unknown));
        // Both slots taken: no third Argon2 check for this client this minute.
        assert_eq!(g.authenticate(A, Some(&wrong)).await, Err(Denied::Limited));
        assert!(g.authenticate(A, Some(&old)).await.is_ok(), "still let in");
    }

    #[test]
    fn slots_are_checked_and_taken_at_once_by_parallel_callers() {
        let f = Arc::new(Failures::default());
        let taken: usize = std::thread::scope(|s| {
            let runs: Vec<_> = (0..32).map(|_| s.spawn(|| f.reserve(A, 5))).collect();
            runs.into_iter()
                .map(|r| usize::from(r.join().unwrap()))
                .sum()
        });
        assert_eq!(taken, 5);
    }

    #[test]
    fn clients_are_the_forwarded_address_of_trusted_hops_and_ipv6_by_its_64() {
        let headers = |xff: &str| {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", xff.parse().unwrap());
            h
        };
        let peer = IpAddr::from([10, 1, 1, 1]);
        let lb = Some(peer);
        let direct = gate(&[], 10, 0);
        let forged = headers("203.0.113.9");
        assert_eq!(direct.client(lb, &forged), peer, "not trusted: the peer");
        let behind_one = gate(&[], 10, 1);
        let h = headers("198.51.100.7, 203.0.113.9");
        assert_eq!(behind_one.client(lb, &h), IpAddr::from([203, 0, 113, 9]));
        assert_eq!(behind_one.client(lb, &HeaderMap::new()), peer);
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        let h = headers("2001:db8:1:2:aaaa::1");
        assert_eq!(behind_one.client(lb, &h), v6("2001:db8:1:2::"));
        let other = headers("2001:db8:1:2:bbbb::9");
        assert_eq!(behind_one.client(lb, &h), behind_one.client(lb, &other));
    }

    #[test]
    fn the_limiter_remembers_a_bounded_number_of_clients() {
        let f = Failures::default();
        for i in 0..(MAX_CLIENTS as u32 + 500) {
            f.fail(IpAddr::from(i.to_be_bytes()), 10);
        }
        assert_eq!(f.clients(), MAX_CLIENTS);
    }
}
