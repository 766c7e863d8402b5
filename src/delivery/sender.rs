//! One HTTP attempt: POST the body with the contract's headers and report what happened,
//! in terms the retry policy and the outcome record understand.

use std::error::Error as _;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER,
};

use std::collections::HashMap;
use std::sync::Arc;

use super::auth::SecurityHeaders;
use super::guard::{check_literal, DestinationBlocked};
use crate::domain::address::AddressPolicy;
use crate::domain::config::HeaderParam;

use crate::domain::outcome::Attempt;
use crate::domain::retry::{parse_retry_after, receiver_signal, AttemptResult, ReceiverSignal};
use crate::domain::time::{rfc3339_millis, unix_seconds};
use crate::observe::metrics::{metrics, status_class};

/// What identifies a delivery to the receiver.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryIds<'a> {
    /// `webhook-id`: the event's id, the same for retries and replays.
    pub webhook_id: &'a str,
    /// `webhook-replay-id`, when a replay makes the delivery.
    pub replay_id: Option<&'a str>,
}

/// A receiver's answer header asking to disable the webhook (`disable`) or to stop
/// retrying the event (`abort`).
pub const SIGNAL_HEADER: &str = "webhook-delivery";

/// Marks a delivery made by a replay; its value is the replay's id.
pub const REPLAY_HEADER: &str = "webhook-replay-id";

/// Response bodies are read (so connections can be reused) up to this many bytes, then dropped.
const BODY_CAP: usize = 64 * 1024;

/// The webhook's headers cannot be sent: a config problem, not a delivery failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidHeaders(pub String);

pub struct AttemptReport {
    pub result: AttemptResult,
    pub attempt: Attempt,
    /// How long the attempt took, precisely (the attempt record has milliseconds).
    pub elapsed: std::time::Duration,
    /// No connection could be made (refused, DNS, TLS): the host's failure, not a path's.
    pub connect_failed: bool,
    /// The first [`RESPONSE_HEAD`] bytes of the response body (for a test send).
    pub response_head: Bytes,
    /// What the receiver asked for besides its status (410, `webhook-delivery`).
    pub signal: Option<ReceiverSignal>,
}

/// How much of a response body an attempt keeps.
pub const RESPONSE_HEAD: usize = 1024;

#[derive(Clone)]
pub struct Sender {
    /// Clients with pools of their own: the connection lanes a host's requests are spread
    /// over.
    lanes: Arc<[reqwest::Client]>,
    /// The lane this sender sends on.
    lane: usize,
    policy: Arc<AddressPolicy>,
    /// The whole request's timeout, when a webhook sets its own (else the client's).
    timeout: Option<std::time::Duration>,
    /// Counted in the feedback delivery metrics (not so for notifications).
    metered: bool,
}

impl Sender {
    /// `policy` must be the one the client's resolver uses; here it checks literal IPs.
    pub fn new(client: reqwest::Client, policy: Arc<AddressPolicy>) -> Self {
        Sender::with_lanes(vec![client], policy)
    }

    /// A sender over several connection lanes (see [`crate::delivery::build_lanes`]).
    pub fn with_lanes(clients: Vec<reqwest::Client>, policy: Arc<AddressPolicy>) -> Self {
        Sender {
            lanes: clients.into(),
            lane: 0,
            policy,
            timeout: None,
            metered: true,
        }
    }

    /// This sender on lane `lane` (taken modulo the lanes there are).
    pub fn on_lane(&self, lane: usize) -> Sender {
        Sender {
            lanes: self.lanes.clone(),
            lane: lane % self.lanes.len().max(1),
            policy: self.policy.clone(),
            timeout: self.timeout,
            metered: self.metered,
        }
    }

    /// This sender, its requests not counted in the feedback delivery metrics.
    pub fn unmetered(mut self) -> Sender {
        self.metered = false;
        self
    }

    /// This sender with a whole-request timeout of its own (`None`: the client's).
    pub fn with_timeout(mut self, timeout: Option<std::time::Duration>) -> Sender {
        self.timeout = timeout;
        self
    }

    /// POSTs `body` to `url`. `custom` are the webhook's own headers (validated at publish
    /// time and again here); `webhook_id` is stable across retries.
    /// `at` is the attempt's time, sent as `webhook-timestamp` (and signed, when signing).
    pub async fn send(
        &self,
        url: &str,
        custom: Option<&std::collections::BTreeMap<String, HeaderParam>>,
        ids: DeliveryIds<'_>,
        at: SystemTime,
        security: &SecurityHeaders,
        body: Bytes,
    ) -> Result<AttemptReport, InvalidHeaders> {
        let started_at = at;
        let started = Instant::now();
        if let Err(blocked) = check_literal(url, &self.policy) {
            if self.metered {
                metrics().attempts.with_label_values(&["blocked"]).inc();
            }
            return Ok(report(
                started_at,
                started,
                AttemptResult::Blocked,
                None,
                Some(blocked.to_string()),
            ));
        }
        let mut headers = headers(custom, ids.webhook_id, started_at).map_err(InvalidHeaders)?;
        if let Some(id) = ids.replay_id {
            // `webhook-id` stays the event's id, so receivers de-duplicate a replay like a
            // retry; this header tells them it is one, and which.
            let value = HeaderValue::from_str(id)
                .map_err(|_| InvalidHeaders("replay id is not a valid header value".into()))?;
            headers.insert(REPLAY_HEADER, value);
        }
        for (name, value) in [
            (AUTHORIZATION.as_str(), &security.authorization),
            ("webhook-signature", &security.signature),
        ] {
            if let Some(value) = value {
                headers.insert(HeaderName::from_static(name), sensitive(name, value)?);
            }
        }
        for (name, value) in &security.secret_headers {
            if let Some(name) = custom_name(name).map_err(InvalidHeaders)? {
                headers.insert(name.clone(), sensitive(name.as_str(), value)?);
            }
        }
        let m = metrics();
        let in_flight = self.metered.then(InFlight::enter);
        // Never empty: `with_lanes` is given at least one client.
        let Some(client) = self.lanes.get(self.lane).or(self.lanes.first()) else {
            return Ok(report(
                started_at,
                started,
                AttemptResult::Blocked,
                None,
                Some("no HTTP client".into()),
            ));
        };
        let mut request = client.post(url).headers(headers).body(body);
        if let Some(timeout) = self.timeout {
            request = request.timeout(timeout);
        }
        let response = request.send().await;
        drop(in_flight);
        let class = match &response {
            Ok(r) => status_class(r.status().as_u16()),
            Err(e) if blocked(e).is_some() => "blocked",
            Err(e) if e.is_timeout() => "timeout",
            Err(_) => "network",
        };
        if self.metered {
            m.attempts.with_label_values(&[class]).inc();
        }
        if class != "blocked" && self.metered {
            m.attempt_seconds.observe(started.elapsed().as_secs_f64());
        }
        match response {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                let signal = receiver_signal(
                    status,
                    response
                        .headers()
                        .get(SIGNAL_HEADER)
                        .and_then(|v| v.to_str().ok()),
                );
                // Drain a bounded amount so the connection can go back to the pool; keep its
                // head.
                let mut read = 0usize;
                let mut head = Vec::new();
                while read < BODY_CAP {
                    match response.chunk().await {
                        Ok(Some(chunk)) => {
                            let room = RESPONSE_HEAD.saturating_sub(head.len());
                            head.extend_from_slice(&chunk[..room.min(chunk.len())]);
                            read += chunk.len();
                        }
                        _ => break,
                    }
                }
                let mut report = report(
                    started_at,
                    started,
                    AttemptResult::Response {
                        status,
                        retry_after,
                    },
                    Some(status),
                    None,
                );
                report.response_head = Bytes::from(head);
                report.signal = signal;
                Ok(report)
            }
            Err(e) => {
                let result = if blocked(&e).is_some() {
                    AttemptResult::Blocked
                } else {
                    AttemptResult::Transport
                };
                let mut report = report(started_at, started, result, None, Some(describe(&e)));
                report.connect_failed = e.is_connect();
                Ok(report)
            }
        }
    }
}

/// The senders of a deployment: one for every org, and one more for each org the operator
/// opened ranges of its own for (`delivery.org_allow_cidrs`), so that a range opened for
/// one org is dialled for that org's webhooks only.
#[derive(Clone)]
pub struct Senders {
    shared: Sender,
    by_org: Arc<HashMap<String, Sender>>,
}

impl Senders {
    pub fn new(shared: Sender, by_org: HashMap<String, Sender>) -> Self {
        Senders {
            shared,
            by_org: Arc::new(by_org),
        }
    }

    /// These senders, their requests not counted in the feedback delivery metrics.
    pub fn unmetered(self) -> Senders {
        let by_org = self
            .by_org
            .iter()
            .map(|(org, sender)| (org.clone(), sender.clone().unmetered()))
            .collect();
        Senders::new(self.shared.unmetered(), by_org)
    }

    /// The sender of `org`'s webhooks.
    pub fn for_org(&self, org: &str) -> &Sender {
        self.by_org.get(org).unwrap_or(&self.shared)
    }
}

/// Counts a request in `deliveries_in_flight` for as long as it lives (also when the
/// request is cancelled at shutdown).
struct InFlight;

impl InFlight {
    fn enter() -> Self {
        metrics().deliveries_in_flight.inc();
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics().deliveries_in_flight.dec();
    }
}

fn report(
    at: SystemTime,
    started: Instant,
    result: AttemptResult,
    http_status: Option<u16>,
    error: Option<String>,
) -> AttemptReport {
    AttemptReport {
        result,
        elapsed: started.elapsed(),
        connect_failed: false,
        response_head: Bytes::new(),
        signal: None,
        attempt: Attempt {
            at: rfc3339_millis(at),
            http_status,
            error,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        },
    }
}

/// A secret header value, kept out of debug output and HTTP/2 header compression tables;
/// refused without showing it.
fn sensitive(name: &str, value: &str) -> Result<HeaderValue, InvalidHeaders> {
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| InvalidHeaders(format!("{name} is not a valid header value")))?;
    value.set_sensitive(true);
    Ok(value)
}

/// A custom header's name, checked again (records were validated when stored: this is
/// the last line of defence); `None` for a hop-by-hop one, valid in a record but a
/// connection's or a proxy's business, never sent.
fn custom_name(name: &str) -> Result<Option<HeaderName>, String> {
    if crate::domain::config::check_header_name(name).is_err() {
        return Err(format!("header {name:?} is not allowed"));
    }
    if crate::domain::config::is_hop_by_hop(name) {
        return Ok(None);
    }
    HeaderName::from_bytes(name.as_bytes())
        .map(Some)
        .map_err(|_| format!("header {name:?} is not valid"))
}

fn headers(
    custom: Option<&std::collections::BTreeMap<String, HeaderParam>>,
    webhook_id: &str,
    at: SystemTime,
) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, param) in custom.into_iter().flatten() {
        // Secret values come resolved with the security headers.
        let HeaderParam::Text(value) = param else {
            continue;
        };
        let Some(name) = custom_name(name)? else {
            continue;
        };
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("value of header {name} is not valid"))?;
        map.insert(name, value);
    }
    map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let id = HeaderValue::from_str(webhook_id)
        .map_err(|_| "event id is not a valid header value".to_string())?;
    map.insert("webhook-id", id);
    map.insert("webhook-timestamp", HeaderValue::from(unix_seconds(at)));
    Ok(map)
}

/// The guard's refusal, if that is what failed the request.
fn blocked(e: &reqwest::Error) -> Option<&DestinationBlocked> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(c) = cause {
        if let Some(b) = c.downcast_ref::<DestinationBlocked>() {
            return Some(b);
        }
        cause = c.source();
    }
    None
}

/// A short description of a transport error: its kind and innermost cause, without the URL
/// (a URL's query string may carry a customer's token).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_request() {
        "request"
    } else {
        "transport"
    };
    if let Some(b) = blocked(e) {
        return b.to_string();
    }
    let mut cause: Option<&dyn std::error::Error> = e.source();
    let mut innermost = None;
    while let Some(c) = cause {
        innermost = Some(c.to_string());
        cause = c.source();
    }
    match innermost {
        Some(detail) => format!("{kind}: {detail}"),
        None => kind.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn text(value: &str) -> HeaderParam {
        HeaderParam::Text(value.to_string())
    }

    #[test]
    fn contract_headers_are_always_set() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let mut custom = BTreeMap::new();
        custom.insert("X-Partner-Id".to_string(), text("acme"));
        let map = headers(Some(&custom), "evt-1", at).unwrap();
        assert_eq!(map["content-type"], "application/json");
        assert_eq!(map["webhook-id"], "evt-1");
        assert_eq!(map["webhook-timestamp"], "1800000000");
        assert_eq!(map["x-partner-id"], "acme");
    }

    #[test]
    fn hop_by_hop_headers_of_a_record_are_not_sent() {
        let mut custom = BTreeMap::new();
        for name in ["Upgrade", "TE", "Proxy-Authorization", "X-Api-Key"] {
            custom.insert(name.to_string(), text("v"));
        }
        let map = headers(Some(&custom), "evt-1", SystemTime::now()).unwrap();
        assert_eq!(map["x-api-key"], "v");
        assert!(!map.contains_key("upgrade") && !map.contains_key("te"));
        assert!(!map.contains_key("proxy-authorization"));
        // A secret's value comes resolved with the security headers, not from the record.
        custom.insert(
            "X-Key".into(),
            HeaderParam::Secret(serde_json::json!({"ref": "env:K"})),
        );
        let map = headers(Some(&custom), "evt-1", SystemTime::now()).unwrap();
        assert!(!map.contains_key("x-key"));
    }

    #[test]
    fn reserved_or_broken_headers_are_refused_at_use() {
        let at = SystemTime::now();
        for (name, value) in [
            ("Content-Type", "text/plain"),
            ("X-Bad", "a\r\nb: c"),
            ("webhook-id", "x"),
        ] {
            let mut custom = BTreeMap::new();
            custom.insert(name.to_string(), text(value));
            assert!(headers(Some(&custom), "evt-1", at).is_err(), "{name}");
        }
    }
}
