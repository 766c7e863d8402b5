//! The webhook form: what its fields say as a webhook record for the API, a record as the
//! form shows it, and where each of the API's refusals belongs on the page.
//!
//! Pure: no I/O. Secrets are never in the form: a kept secret travels as its fingerprint
//! (`{"set": true, "fingerprint": F}`, which the API puts back), a new one as
//! `{"value": ...}` (which the API seals).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::filter_rows::{filter_of, row_of_pointer, rows_of, FilterRow, MAX_ROWS};
use crate::schema::Violation;

/// Header rows an empty form starts with, and the most the record takes.
pub const MAX_HEADERS: usize = 20;
/// Signing secrets in force at once (two during a rotation).
pub const MAX_SECRETS: usize = 2;

/// What the form holds.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct WebhookForm {
    /// The version edited (empty when creating).
    pub version: String,
    pub sandbox_name: String,
    pub name: String,
    pub channels: Vec<String>,
    pub url: String,
    pub enabled: bool,
    /// Kept as they were: the form does not edit them.
    pub events: Vec<String>,
    /// `none` or `jwt`.
    pub auth: String,
    pub jwt_algorithm: String,
    /// The fingerprint of the key in force, when one is kept.
    pub jwt_key_set: String,
    /// A new key: replaces the one in force.
    pub jwt_key: String,
    pub jwt_issuer: String,
    pub jwt_subject: String,
    pub jwt_audience: String,
    pub jwt_expires: String,
    pub jwt_claims: String,
    pub headers: Vec<HeaderRow>,
    /// Fingerprints of the signing secrets kept.
    pub secrets: Vec<String>,
    /// A new signing secret, added in front of the kept ones.
    pub secret_new: String,
    /// The filter builder: how its rows join (`all` or `any`), and the rows.
    pub filter_join: String,
    pub filter_rows: Vec<FilterRow>,
    /// A filter the rows cannot show (groups in groups), kept as written (JSON).
    pub filter_kept: String,
    /// The webhook's own delivery policy; each empty: the deployment's.
    pub timeout_ms: String,
    /// Seconds before each retry, separated by commas.
    pub retry_waits: String,
    pub retry_max_age: String,
    pub max_attempts: String,
    /// The webhook's rate cap (empty: none) and its burst (empty: 1).
    pub rate_per_second: String,
    pub rate_burst: String,
}

/// One header parameter row: a name and a value, or a secret value (write-only: a kept
/// one shows only its fingerprint, and an empty value keeps it).
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct HeaderRow {
    pub name: String,
    pub value: String,
    pub secret: bool,
    /// The fingerprint of the secret value kept (empty: none).
    pub kept: String,
}

impl HeaderRow {
    pub fn text(name: &str, value: &str) -> Self {
        HeaderRow {
            name: name.into(),
            value: value.into(),
            ..HeaderRow::default()
        }
    }

    /// The row as the record holds it; `None` for an empty row.
    fn value(&self) -> Option<Result<Value, &'static str>> {
        let value = self.value.trim();
        if self.name.trim().is_empty() && value.is_empty() && self.kept.is_empty() {
            return None;
        }
        Some(
            match (self.secret, value.is_empty(), self.kept.is_empty()) {
                (false, _, _) => Ok(json!(self.value)),
                (true, false, _) => Ok(json!({ "value": value })),
                (true, true, false) => Ok(json!({ "set": true, "fingerprint": self.kept })),
                (true, true, true) => Err("give the secret value"),
            },
        )
    }
}

/// What a submit asks for besides saving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Save,
    AddHeader,
    RemoveHeader(usize),
    GenerateSecret,
    RemoveSecret(String),
    AddFilterRow,
    RemoveFilterRow(usize),
}

impl Action {
    fn parse(text: &str) -> Action {
        if text == "add-header" {
            Action::AddHeader
        } else if text == "generate-secret" {
            Action::GenerateSecret
        } else if text == "add-filter-row" {
            Action::AddFilterRow
        } else if let Some(i) = text
            .strip_prefix("remove-filter-row-")
            .and_then(|i| i.parse().ok())
        {
            Action::RemoveFilterRow(i)
        } else if let Some(i) = text
            .strip_prefix("remove-header-")
            .and_then(|i| i.parse().ok())
        {
            Action::RemoveHeader(i)
        } else if let Some(fp) = text.strip_prefix("remove-secret-") {
            Action::RemoveSecret(fp.to_owned())
        } else {
            Action::Save
        }
    }
}

impl WebhookForm {
    /// An empty form for a new webhook.
    pub fn blank() -> Self {
        WebhookForm {
            channels: vec!["email".into(), "sms".into()],
            enabled: true,
            auth: "none".into(),
            jwt_algorithm: "HS256".into(),
            jwt_expires: "300".into(),
            headers: vec![HeaderRow::default()],
            filter_join: "all".into(),
            filter_rows: vec![FilterRow::default()],
            ..WebhookForm::default()
        }
    }

    /// The form's fields as posted (names may repeat), and the action asked for.
    pub fn from_pairs(pairs: &[(String, String)]) -> (Self, Action) {
        let mut form = WebhookForm::default();
        let mut action = Action::Save;
        let (mut names, mut values, mut kinds, mut kept) = (vec![], vec![], vec![], vec![]);
        let (mut negates, mut fields, mut ops, mut operands) = (vec![], vec![], vec![], vec![]);
        for (name, value) in pairs {
            let v = value.clone();
            match name.as_str() {
                "version" => form.version = v,
                "sandbox_name" => form.sandbox_name = v,
                "name" => form.name = v,
                "channel" => form.channels.push(v),
                "url" => form.url = v,
                "enabled" => form.enabled = v == "true",
                "event" => form.events.push(v),
                "auth" => form.auth = v,
                "jwt_algorithm" => form.jwt_algorithm = v,
                "jwt_key_set" => form.jwt_key_set = v,
                "jwt_key" => form.jwt_key = v,
                "jwt_issuer" => form.jwt_issuer = v,
                "jwt_subject" => form.jwt_subject = v,
                "jwt_audience" => form.jwt_audience = v,
                "jwt_expires" => form.jwt_expires = v,
                "jwt_claims" => form.jwt_claims = v,
                "header_name" => names.push(v),
                "header_value" => values.push(v),
                "header_kind" => kinds.push(v == "secret"),
                "header_kept" => kept.push(v),
                "secret" => form.secrets.push(v),
                "secret_new" => form.secret_new = v,
                "filter_join" => form.filter_join = v,
                "filter_negate" => negates.push(v == "not"),
                "filter_field" => fields.push(v),
                "filter_op" => ops.push(v),
                "filter_value" => operands.push(v),
                "filter_kept" => form.filter_kept = v,
                "timeout_ms" => form.timeout_ms = v,
                "retry_waits" => form.retry_waits = v,
                "retry_max_age" => form.retry_max_age = v,
                "max_attempts" => form.max_attempts = v,
                "rate_per_second" => form.rate_per_second = v,
                "rate_burst" => form.rate_burst = v,
                "action" => action = Action::parse(value),
                _ => {}
            }
        }
        // Every row posts each of its fields: rows line up by position.
        form.headers = rows(names, values, kinds, kept, |name, value, secret, kept| {
            HeaderRow {
                name,
                value,
                secret,
                kept,
            }
        });
        form.filter_rows = rows(
            fields,
            ops,
            negates,
            operands,
            |field, op, negate, value| FilterRow {
                negate,
                field,
                op,
                value,
            },
        );
        (form, action)
    }

    /// Applies an action that only changes the form (not saved).
    pub fn apply(&mut self, action: &Action, new_secret: impl FnOnce() -> String) {
        match action {
            Action::AddHeader if self.headers.len() < MAX_HEADERS => {
                self.headers.push(HeaderRow::default())
            }
            Action::RemoveHeader(i) if *i < self.headers.len() => {
                self.headers.remove(*i);
            }
            Action::GenerateSecret => self.secret_new = new_secret(),
            Action::RemoveSecret(fp) => self.secrets.retain(|s| s != fp),
            Action::AddFilterRow if self.filter_rows.len() < MAX_ROWS => {
                self.filter_rows.push(FilterRow::default())
            }
            Action::RemoveFilterRow(i) if *i < self.filter_rows.len() => {
                self.filter_rows.remove(*i);
            }
            _ => {}
        }
        if self.headers.is_empty() {
            self.headers.push(HeaderRow::default());
        }
        if self.filter_rows.is_empty() && self.filter_kept.is_empty() {
            self.filter_rows.push(FilterRow::default());
        }
    }

    /// A record as read from the API (secrets shown as fingerprints), as the form shows it.
    pub fn from_record(record: &Value) -> Self {
        let text = |pointer: &str| {
            record
                .pointer(pointer)
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                })
                .unwrap_or_default()
        };
        let list = |pointer: &str| -> Vec<String> {
            record
                .pointer(pointer)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut headers = headers_of(record);
        if headers.is_empty() {
            headers.push(HeaderRow::default());
        }
        let secrets = match record.get("signing") {
            Some(Value::Object(s)) => s
                .get("secrets")
                .and_then(Value::as_array)
                .cloned()
                .or_else(|| s.get("secret").map(|one| vec![one.clone()]))
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let jwt = text("/authentication/type") == "jwt";
        let filter = record.get("filter").filter(|f| !f.is_null());
        let (filter_join, filter_rows, filter_kept) = match filter.map(|f| (f, rows_of(f))) {
            None => ("all".into(), vec![FilterRow::default()], String::new()),
            Some((_, Some((join, rows)))) => (join, rows, String::new()),
            Some((f, None)) => ("all".into(), Vec::new(), f.to_string()),
        };
        let waits = record
            .pointer("/delivery/retrySchedule")
            .and_then(Value::as_array)
            .map(|w| {
                w.iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        WebhookForm {
            version: text("/version"),
            sandbox_name: text("/sandbox/name"),
            name: text("/name"),
            channels: list("/channels"),
            url: text("/url"),
            enabled: record.get("enabled").and_then(Value::as_bool) == Some(true),
            events: list("/events"),
            auth: if jwt { "jwt".into() } else { "none".into() },
            jwt_algorithm: if jwt {
                text("/authentication/algorithm")
            } else {
                "HS256".into()
            },
            jwt_key_set: text("/authentication/key/fingerprint"),
            jwt_key: String::new(),
            jwt_issuer: text("/authentication/issuer"),
            jwt_subject: text("/authentication/subject"),
            jwt_audience: text("/authentication/audience"),
            jwt_expires: if jwt {
                text("/authentication/expiresInSeconds")
            } else {
                "300".into()
            },
            jwt_claims: record
                .pointer("/authentication/claims")
                .filter(|c| c.as_object().is_some_and(|o| !o.is_empty()))
                .and_then(|c| serde_json::to_string_pretty(c).ok())
                .unwrap_or_default(),
            headers,
            secrets: secrets
                .iter()
                .filter_map(|s| s.get("fingerprint").and_then(Value::as_str))
                .map(str::to_owned)
                .collect(),
            secret_new: String::new(),
            filter_join,
            filter_rows,
            filter_kept,
            timeout_ms: text("/delivery/timeoutMs"),
            retry_waits: waits,
            retry_max_age: text("/delivery/retrySchedule/maxAgeSeconds"),
            max_attempts: text("/delivery/maxAttempts"),
            rate_per_second: text("/rateLimit/perSecond"),
            rate_burst: text("/rateLimit/burst"),
        }
    }

    /// The webhook record the form describes, for the API (which fills what the path says
    /// and checks everything else); or what the form itself can tell is wrong.
    pub fn to_record(&self) -> Result<Map<String, Value>, Vec<Violation>> {
        let mut refused = Vec::new();
        let mut refuse = |field: &str, message: &str| {
            refused.push(Violation {
                field: field.to_owned(),
                message: message.to_owned(),
            })
        };
        let mut record = Map::new();
        record.insert("name".into(), json!(self.name.trim()));
        record.insert(
            "sandbox".into(),
            json!({ "name": self.sandbox_name.trim() }),
        );
        record.insert("channels".into(), json!(self.channels));
        record.insert("url".into(), json!(self.url.trim()));
        record.insert("enabled".into(), json!(self.enabled));
        if !self.events.is_empty() {
            record.insert("events".into(), json!(self.events));
        }
        let authentication = if self.auth == "jwt" {
            let key = if !self.jwt_key.trim().is_empty() {
                json!({ "value": self.jwt_key.trim() })
            } else if !self.jwt_key_set.is_empty() {
                json!({ "set": true, "fingerprint": self.jwt_key_set })
            } else {
                refuse("/authentication/key", "give the signing key");
                Value::Null
            };
            let expires = match self.jwt_expires.trim().parse::<u64>() {
                Ok(seconds) => json!(seconds),
                Err(_) => {
                    refuse(
                        "/authentication/expiresInSeconds",
                        "must be a whole number of seconds",
                    );
                    Value::Null
                }
            };
            let mut jwt = json!({
                "type": "jwt",
                "algorithm": self.jwt_algorithm,
                "key": key,
                "issuer": self.jwt_issuer.trim(),
                "subject": self.jwt_subject.trim(),
                "audience": self.jwt_audience.trim(),
                "expiresInSeconds": expires,
            });
            if !self.jwt_claims.trim().is_empty() {
                match serde_json::from_str::<Value>(&self.jwt_claims) {
                    Ok(claims @ Value::Object(_)) => jwt["claims"] = claims,
                    _ => refuse(
                        "/authentication/claims",
                        "must be a JSON object, such as {\"tenant\": \"acme\"}",
                    ),
                }
            }
            jwt
        } else {
            json!({ "type": "none" })
        };
        record.insert("authentication".into(), authentication);
        let mut headers = Map::new();
        for row in &self.headers {
            let name = row.name.trim();
            let Some(value) = row.value() else {
                continue;
            };
            if name.is_empty() {
                refuse("/headers", "a header value needs a name");
                continue;
            }
            let field = format!("/headers/{}", pointer_escape(name));
            if headers.keys().any(|k| k.eq_ignore_ascii_case(name)) {
                refuse(&field, "is given twice");
            }
            match value {
                Ok(value) => {
                    headers.insert(name.to_owned(), value);
                }
                Err(why) => refuse(&field, why),
            }
        }
        record.insert(
            "headers".into(),
            if headers.is_empty() {
                Value::Null
            } else {
                Value::Object(headers)
            },
        );
        let mut secrets: Vec<Value> = Vec::new();
        if !self.secret_new.trim().is_empty() {
            secrets.push(json!({ "value": self.secret_new.trim() }));
        }
        secrets.extend(
            self.secrets
                .iter()
                .map(|fp| json!({ "set": true, "fingerprint": fp })),
        );
        if secrets.len() > MAX_SECRETS {
            refuse(
                "/signing/secrets",
                "at most two signing secrets at once: remove the old one before adding another",
            );
        }
        record.insert(
            "signing".into(),
            match secrets.len() {
                0 => Value::Null,
                1 => json!({ "secret": secrets.remove(0) }),
                _ => json!({ "secrets": secrets }),
            },
        );
        let filter = if self.filter_kept.trim().is_empty() {
            filter_of(&self.filter_join, &self.filter_rows).unwrap_or_else(|mut wrong| {
                refused.append(&mut wrong);
                None
            })
        } else {
            match serde_json::from_str::<Value>(&self.filter_kept) {
                Ok(kept) => Some(kept),
                Err(_) => {
                    refused.push(Violation {
                        field: "/filter".into(),
                        message: "the kept filter is not JSON".into(),
                    });
                    None
                }
            }
        };
        record.insert("filter".into(), filter.unwrap_or(Value::Null));
        let delivery = self.delivery(&mut refused);
        record.insert("delivery".into(), delivery);
        let rate = self.rate_limit(&mut refused);
        record.insert("rateLimit".into(), rate);
        if refused.is_empty() {
            Ok(record)
        } else {
            Err(refused)
        }
    }

    /// The webhook's rate cap (null when none is given).
    fn rate_limit(&self, refused: &mut Vec<Violation>) -> Value {
        let (per_second, burst) = (self.rate_per_second.trim(), self.rate_burst.trim());
        if per_second.is_empty() && burst.is_empty() {
            return Value::Null;
        }
        let mut rate = Map::new();
        match per_second.parse::<f64>() {
            Ok(n) if n.is_finite() => {
                let n = if n.fract() == 0.0 && n.abs() < 9e15 {
                    json!(n as i64)
                } else {
                    json!(n)
                };
                rate.insert("perSecond".into(), n);
            }
            _ => refused.push(Violation {
                field: "/rateLimit/perSecond".into(),
                message: "give the most requests a second, such as 50".into(),
            }),
        }
        if !burst.is_empty() {
            match burst.parse::<u64>() {
                Ok(n) => {
                    rate.insert("burst".into(), json!(n));
                }
                Err(_) => refused.push(Violation {
                    field: "/rateLimit/burst".into(),
                    message: "must be a whole number of requests".into(),
                }),
            }
        }
        Value::Object(rate)
    }

    /// The webhook's own delivery policy (null when every field is empty).
    fn delivery(&self, refused: &mut Vec<Violation>) -> Value {
        let mut refuse = |field: &str, message: &str| {
            refused.push(Violation {
                field: format!("/delivery/{field}"),
                message: message.to_owned(),
            })
        };
        let mut policy = Map::new();
        let whole = |text: &str| text.trim().parse::<u64>();
        if !self.timeout_ms.trim().is_empty() {
            match whole(&self.timeout_ms) {
                Ok(ms) => {
                    policy.insert("timeoutMs".into(), json!(ms));
                }
                Err(_) => refuse("timeoutMs", "must be a whole number of milliseconds"),
            }
        }
        if !self.max_attempts.trim().is_empty() {
            match whole(&self.max_attempts) {
                Ok(n) => {
                    policy.insert("maxAttempts".into(), json!(n));
                }
                Err(_) => refuse("maxAttempts", "must be a whole number"),
            }
        }
        let waits = self.retry_waits.trim();
        let age = self.retry_max_age.trim();
        match (waits.is_empty(), age.is_empty()) {
            (true, true) => {}
            (false, false) => refuse(
                "retrySchedule",
                "give either the waits or a maximum age, not both",
            ),
            (false, true) => {
                let parsed: Result<Vec<f64>, _> =
                    waits.split(',').map(|w| w.trim().parse::<f64>()).collect();
                match parsed {
                    Ok(list) if list.iter().all(|w| w.is_finite()) => {
                        let list: Vec<Value> = list
                            .into_iter()
                            .map(|w| {
                                if w.fract() == 0.0 {
                                    json!(w as u64)
                                } else {
                                    json!(w)
                                }
                            })
                            .collect();
                        policy.insert("retrySchedule".into(), Value::Array(list));
                    }
                    _ => refuse(
                        "retrySchedule",
                        "must be seconds separated by commas, such as 1, 5, 30",
                    ),
                }
            }
            (true, false) => match whole(age) {
                Ok(secs) => {
                    policy.insert("retrySchedule".into(), json!({ "maxAgeSeconds": secs }));
                }
                Err(_) => refuse("retrySchedule", "the maximum age must be whole seconds"),
            },
        }
        if policy.is_empty() {
            Value::Null
        } else {
            Value::Object(policy)
        }
    }
}

/// The rows of a form's repeated fields, lined up by position (one per `first`; a field a
/// row did not post is empty).
fn rows<A, B: Default, C: Default, D: Default, R>(
    first: Vec<A>,
    b: Vec<B>,
    c: Vec<C>,
    d: Vec<D>,
    row: impl Fn(A, B, C, D) -> R,
) -> Vec<R> {
    let (mut b, mut c, mut d) = (b.into_iter(), c.into_iter(), d.into_iter());
    first
        .into_iter()
        .map(|a| {
            row(
                a,
                b.next().unwrap_or_default(),
                c.next().unwrap_or_default(),
                d.next().unwrap_or_default(),
            )
        })
        .collect()
}

/// A record's custom headers (as the API shows them: secrets by their fingerprint), as rows.
pub fn headers_of(record: &Value) -> Vec<HeaderRow> {
    record
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| {
            h.iter()
                .map(|(name, v)| match v.as_str() {
                    Some(text) => HeaderRow::text(name, text),
                    None => HeaderRow {
                        name: name.clone(),
                        secret: true,
                        kept: v["fingerprint"].as_str().unwrap_or_default().to_owned(),
                        ..HeaderRow::default()
                    },
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A JSON-pointer segment (RFC 6901).
fn pointer_escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn pointer_unescape(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

/// The form field a refusal's JSON pointer belongs to; `general` when none does.
pub fn field_of(pointer: &str, form: &WebhookForm) -> String {
    let mut parts = pointer.trim_start_matches('/').splitn(3, '/');
    let first = parts.next().unwrap_or_default();
    let second = parts.next();
    match (first, second) {
        ("name", _) => "name".into(),
        ("sandbox", _) => "sandbox_name".into(),
        ("channels", _) => "channels".into(),
        ("url", _) => "url".into(),
        ("enabled", _) => "enabled".into(),
        ("authentication", Some("key")) => "jwt_key".into(),
        ("authentication", Some("algorithm")) => "jwt_algorithm".into(),
        ("authentication", Some("issuer")) => "jwt_issuer".into(),
        ("authentication", Some("subject")) => "jwt_subject".into(),
        ("authentication", Some("audience")) => "jwt_audience".into(),
        ("authentication", Some("expiresInSeconds")) => "jwt_expires".into(),
        ("authentication", Some("claims")) => "jwt_claims".into(),
        ("authentication", _) => "auth".into(),
        ("headers", Some(name)) => {
            let name = pointer_unescape(name);
            match form
                .headers
                .iter()
                .position(|row| row.name.trim().eq_ignore_ascii_case(&name))
            {
                Some(i) => format!("header_{i}"),
                None => "headers".into(),
            }
        }
        ("headers", None) => "headers".into(),
        ("signing", _) => "signing".into(),
        ("filter", _) => match row_of_pointer(pointer, &form.filter_rows) {
            Some(i) if form.filter_kept.is_empty() => format!("filter_{i}"),
            _ => "filter".into(),
        },
        ("delivery", Some("timeoutMs")) => "timeout_ms".into(),
        ("delivery", Some("maxAttempts")) => "max_attempts".into(),
        ("delivery", Some(_)) => "retry_schedule".into(),
        ("delivery", None) => "delivery".into(),
        ("rateLimit", Some("burst")) => "rate_burst".into(),
        ("rateLimit", _) => "rate_per_second".into(),
        _ => "general".into(),
    }
}

/// Refusals grouped by the field they belong to, each with the message to show.
pub fn errors_by_field(refused: &[Violation], form: &WebhookForm) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in refused {
        let field = field_of(&v.field, form);
        let message = if field == "general" && !v.field.is_empty() {
            format!("{}: {}", v.field, v.message)
        } else {
            v.message.clone()
        };
        out.entry(field).or_default().push(message);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_posted_form_becomes_the_record_with_secrets_only_as_values_or_fingerprints() {
        let (form, action) = WebhookForm::from_pairs(&pairs(&[
            ("version", "0-7"),
            ("name", " Orders "),
            ("sandbox_name", "prod"),
            ("channel", "email"),
            ("url", "https://h.example/x"),
            ("enabled", "true"),
            ("auth", "jwt"),
            ("jwt_algorithm", "HS256"),
            ("jwt_key_set", "abcd1234"),
            ("jwt_key", ""),
            ("jwt_issuer", "ajo"),
            ("jwt_subject", "feedback"),
            ("jwt_audience", "partner"),
            ("jwt_expires", "600"),
            ("jwt_claims", "{\"tenant\": \"acme\"}"),
            ("header_name", "X-Partner"),
            ("header_value", "acme"),
            ("header_name", ""),
            ("header_value", ""),
            ("secret", "11112222"),
            ("secret_new", "whsec_new"),
            ("action", "save"),
        ]));
        assert_eq!(action, Action::Save);
        let record = form.to_record().unwrap();
        assert_eq!(record["name"], "Orders");
        assert_eq!(record["channels"], json!(["email"]));
        assert_eq!(
            record["authentication"]["key"],
            json!({"set": true, "fingerprint": "abcd1234"})
        );
        assert_eq!(record["authentication"]["expiresInSeconds"], 600);
        assert_eq!(
            record["authentication"]["claims"],
            json!({"tenant": "acme"})
        );
        assert_eq!(record["headers"], json!({"X-Partner": "acme"}));
        assert_eq!(
            record["signing"],
            json!({"secrets": [{"value": "whsec_new"}, {"set": true, "fingerprint": "11112222"}]})
        );
        // A new key replaces the one in force.
        let (mut replaced, _) = WebhookForm::from_pairs(&pairs(&[("auth", "jwt")]));
        replaced.jwt_key_set = "abcd1234".into();
        replaced.jwt_key = "k".into();
        replaced.jwt_expires = "300".into();
        assert_eq!(
            replaced.to_record().unwrap()["authentication"]["key"],
            json!({"value": "k"})
        );
    }

    #[test]
    fn a_record_read_back_fills_the_form_and_saves_unchanged() {
        let read = json!({
            "kind": "webhook", "imsOrg": "acme", "sandbox": {"id": "sb1", "name": "prod"},
            "name": "Orders", "channels": ["email", "sms"], "url": "https://h.example/x",
            "enabled": false, "events": ["bounce"],
            "authentication": {"type": "jwt", "algorithm": "RS256",
                "key": {"set": true, "fingerprint": "abcd1234"}, "issuer": "i",
                "subject": "s", "audience": "a", "expiresInSeconds": 300},
            "headers": {"X-A": "1"},
            "signing": {"secret": {"set": true, "fingerprint": "99990000"}},
            "version": "0-3"
        });
        let form = WebhookForm::from_record(&read);
        assert_eq!(form.version, "0-3");
        assert_eq!(form.jwt_key_set, "abcd1234");
        assert!(form.jwt_key.is_empty());
        assert_eq!(form.secrets, ["99990000"]);
        let record = form.to_record().unwrap();
        for field in ["name", "channels", "url", "enabled", "events", "headers"] {
            assert_eq!(record[field], read[field], "{field}");
        }
        assert_eq!(record["authentication"], read["authentication"]);
        assert_eq!(record["signing"], read["signing"]);
    }

    #[test]
    fn a_header_value_can_be_a_secret_kept_by_its_fingerprint() {
        let read = json!({"headers": {"X-Partner": "acme", "X-Api-Key": {"set": true, "fingerprint": "abcd1234"}}});
        let form = WebhookForm::from_record(&read);
        let kept = HeaderRow {
            secret: true,
            kept: "abcd1234".into(),
            ..HeaderRow::text("X-Api-Key", "")
        };
        assert_eq!(form.headers, [kept, HeaderRow::text("X-Partner", "acme")]);
        // Posted back untouched, the kept secret is named by its fingerprint.
        let (posted, _) = WebhookForm::from_pairs(&pairs(&[
            ("header_name", "X-Api-Key"),
            ("header_value", ""),
            ("header_kind", "secret"),
            ("header_kept", "abcd1234"),
            ("header_name", "X-New-Key"),
            ("header_value", "k-2"),
            ("header_kind", "secret"),
            ("header_kept", ""),
            ("header_name", "X-Partner"),
            ("header_value", "acme"),
            ("header_kind", "text"),
            ("header_kept", ""),
            ("header_name", "X-Empty-Secret"),
            ("header_value", ""),
            ("header_kind", "secret"),
            ("header_kept", ""),
        ]));
        let refused = posted.to_record().unwrap_err();
        assert_eq!(refused[0].field, "/headers/X-Empty-Secret");
        let mut fixed = posted.clone();
        fixed.headers.pop();
        let record = fixed.to_record().unwrap();
        assert_eq!(
            record["headers"],
            json!({
                "X-Api-Key": {"set": true, "fingerprint": "abcd1234"},
                "X-New-Key": {"value": "k-2"},
                "X-Partner": "acme"
            })
        );
    }

    #[test]
    fn what_the_form_can_tell_is_refused_by_field() {
        let mut form = WebhookForm::blank();
        form.auth = "jwt".into();
        form.jwt_expires = "soon".into();
        form.jwt_claims = "[1]".into();
        form.headers = vec![HeaderRow::text("X-A", "1"), HeaderRow::text("x-a", "2")];
        let refused = form.to_record().unwrap_err();
        let errors = errors_by_field(&refused, &form);
        for field in ["jwt_key", "jwt_expires", "jwt_claims", "header_0"] {
            assert!(errors.contains_key(field), "{field}: {errors:?}");
        }
    }

    #[test]
    fn refusals_land_next_to_their_fields() {
        let mut form = WebhookForm::blank();
        form.headers = vec![HeaderRow::text("X-A", "1"), HeaderRow::text("Host", "h")];
        assert_eq!(field_of("/headers/Host", &form), "header_1");
        assert_eq!(field_of("/headers/a~1b", &form), "headers");
        assert_eq!(field_of("/url", &form), "url");
        assert_eq!(field_of("/authentication/key", &form), "jwt_key");
        assert_eq!(field_of("/signing/secrets/0", &form), "signing");
        assert_eq!(field_of("/updatedAt", &form), "general");
        let errors = errors_by_field(
            &[Violation {
                field: "/kind".into(),
                message: "x".into(),
            }],
            &form,
        );
        assert_eq!(errors["general"], ["/kind: x"]);
    }

    #[test]
    fn actions_change_only_the_form() {
        let (mut form, action) = WebhookForm::from_pairs(&pairs(&[
            ("header_name", "A"),
            ("header_value", "1"),
            ("secret", "f1"),
            ("action", "add-header"),
        ]));
        form.apply(&action, || unreachable!());
        assert_eq!(form.headers.len(), 2);
        form.apply(&Action::parse("remove-header-0"), || unreachable!());
        assert_eq!(form.headers, [HeaderRow::default()]);
        form.apply(&Action::parse("generate-secret"), || "whsec_x".into());
        assert_eq!(form.secret_new, "whsec_x");
        form.apply(&Action::parse("remove-secret-f1"), || unreachable!());
        assert!(form.secrets.is_empty());
    }
}
