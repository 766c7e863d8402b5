//! The destination guard of the HTTP client. Names are resolved here and only the allowed
//! addresses are handed to the connector, so the address checked is the address dialled
//! (no window for DNS rebinding). URLs with a literal IP, which skip resolution, are checked
//! before the request is made.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::domain::address::AddressPolicy;

/// A destination the policy refuses. Found in a request error's source chain.
#[derive(Debug, Clone, thiserror::Error)]
#[error("destination blocked: {host} is {why}")]
pub struct DestinationBlocked {
    pub host: String,
    pub why: String,
}

pub struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl GuardedResolver {
    pub fn new(policy: Arc<AddressPolicy>) -> Self {
        GuardedResolver { policy }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut why = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check(a.ip()) {
                    None => true,
                    Some(reason) => {
                        why.get_or_insert(reason);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = why.map_or("unresolvable".to_owned(), |w| {
                    format!("resolved only to refused addresses: {w}")
                });
                return Err(Box::new(DestinationBlocked { host, why })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Refuses a URL whose host is a literal IP address in a refused range.
pub fn check_literal(url: &str, policy: &AddressPolicy) -> Result<(), DestinationBlocked> {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return Ok(());
    };
    // IPv6 literals come bracketed; a name does not parse as an address.
    let ip: Option<IpAddr> = parsed
        .host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse().ok());
    match ip.and_then(|ip| policy.check(ip).map(|why| (ip, why))) {
        Some((ip, why)) => Err(DestinationBlocked {
            host: ip.to_string(),
            why: why.to_owned(),
        }),
        None => Ok(()),
    }
}

/// Whether `url`'s host is, or resolves to, an address only an allowance opens (one the
/// guard refuses by default). A name that does not resolve needs none: the request fails
/// on its own.
pub async fn needs_allowance(url: &str) -> bool {
    let closed = AddressPolicy::default();
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    let Some(host) = parsed.host_str().map(str::to_owned) else {
        return false;
    };
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return closed.check(ip).is_some();
    }
    let port = parsed.port_or_known_default().unwrap_or(443);
    let found = tokio::net::lookup_host((host.as_str(), port)).await;
    found.is_ok_and(|mut found| found.any(|a| closed.check(a.ip()).is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn destinations_that_need_an_allowance_are_told_apart() {
        for url in [
            "https://127.0.0.1:8443/x",
            "https://[::1]/",
            "https://10.1.2.3/",
            "https://localhost:9/",
        ] {
            assert!(needs_allowance(url).await, "{url}");
        }
        for url in [
            "https://8.8.8.8/",
            "https://[2001:4860::8888]/",
            "not a url",
        ] {
            assert!(!needs_allowance(url).await, "{url}");
        }
    }

    #[test]
    fn literal_ips_in_refused_ranges_are_blocked_without_any_connection() {
        let policy = AddressPolicy::default();
        for url in [
            "https://127.0.0.1/x",
            "https://10.0.0.1/x",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/",
            "https://[::1]:8443/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:10.0.0.1]/",
            "https://0.0.0.0/",
        ] {
            assert!(check_literal(url, &policy).is_err(), "{url}");
        }
        assert!(check_literal("https://8.8.8.8/", &policy).is_ok());
        assert!(check_literal("https://hooks.example.com/", &policy).is_ok());
    }

    #[tokio::test]
    async fn names_resolving_to_refused_addresses_are_blocked() {
        let resolver = GuardedResolver::new(Arc::new(AddressPolicy::default()));
        let err = match resolver.resolve("localhost".parse().unwrap()).await {
            Err(e) => e,
            Ok(_) => panic!("localhost must be refused"),
        };
        assert!(err.downcast_ref::<DestinationBlocked>().is_some(), "{err}");

        let open = GuardedResolver::new(Arc::new(AddressPolicy {
            allow: vec!["127.0.0.1/32".parse().unwrap()],
        }));
        let addrs: Vec<SocketAddr> = match open.resolve("localhost".parse().unwrap()).await {
            Ok(a) => a.collect(),
            Err(e) => panic!("{e}"),
        };
        assert!(!addrs.is_empty());
        assert!(
            addrs.iter().all(|a| a.ip() == IpAddr::from([127, 0, 0, 1])),
            "{addrs:?}"
        );
    }
}
