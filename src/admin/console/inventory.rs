//! The org's webhooks (Administration › Channels › Feedback webhook configuration): one row
//! per webhook the token may see, filters, the sandbox picker, and "Create feedback
//! webhook" for the chosen sandbox.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{render, urlencode, value, Signed};
use crate::admin::deliveries::Tally;
use crate::admin::service::{campaigns, deliveries, webhooks};
use crate::admin::tokens::Scope;
use crate::admin::AppState;
use crate::domain::config::WebhookConfig;
use crate::domain::time::unix_ms;

/// Rows on one page.
pub const PAGE_ROWS: usize = 100;
/// Sandboxes the picker suggests; past that many, one is typed (a long list would weigh on
/// every page).
pub const PICKER_SUGGESTIONS: usize = 200;

#[derive(Deserialize, Default)]
pub struct InventoryFilters {
    name: Option<String>,
    channel: Option<String>,
    sandbox: Option<String>,
    page: Option<usize>,
}

/// One row of the inventory.
#[derive(Serialize)]
pub struct Row {
    pub name: String,
    pub sandbox: String,
    pub sandbox_path: String,
    pub channels: String,
    pub url: String,
    pub auth: &'static str,
    pub enabled: bool,
    pub last_status: Option<String>,
    pub last_at: Option<String>,
    /// Failed share of delivered and failed outcomes of the last 24 h, e.g. "2.5 %".
    pub failure_rate: Option<String>,
    pub outcomes_24h: u64,
    /// `healthy`, `failing` or `disabled`, and what the badge's tooltip says.
    pub health: String,
    pub health_note: String,
}

/// A sandbox the picker offers.
#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct SandboxChoice {
    id: String,
    name: String,
}

pub async fn page(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(org): Path<String>,
    Query(filters): Query<InventoryFilters>,
) -> Response {
    let scope = &signed.0.principal.scope;
    // Another org's webhooks do not exist for this caller: the page is simply empty.
    let caller = signed.caller();
    let webhooks = webhooks::visible(&state.service, caller, &org)
        .await
        .unwrap_or_default();

    // The picker: sandboxes with a webhook or a campaign, and the token's own.
    let mut sandboxes: BTreeMap<String, String> = webhooks
        .iter()
        .map(|(c, _)| (c.sandbox.id.clone(), c.sandbox.name.clone()))
        .collect();
    for id in campaigns::sandboxes(&state.service, caller, &org)
        .await
        .unwrap_or_default()
    {
        sandboxes.entry(id).or_default();
    }
    if let Scope::Sandbox(o, s) = scope {
        if *o == org {
            sandboxes.entry(s.clone()).or_default();
        }
    }
    let chosen = match scope {
        Scope::Sandbox(_, s) => Some(s.clone()),
        _ => filters
            .sandbox
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty() && !s.contains('/'))
            .map(str::to_owned),
    };
    let chosen_has_webhook = chosen
        .as_deref()
        .is_some_and(|s| webhooks.iter().any(|(c, _)| c.sandbox.id == s));

    let name = filters.name.clone().unwrap_or_default();
    let channel = filters.channel.clone().unwrap_or_default();
    let wanted = name.to_lowercase();
    let matching: Vec<&(WebhookConfig, Value)> = webhooks
        .iter()
        .filter(|(config, _)| {
            chosen.as_deref().is_none_or(|s| config.sandbox.id == s)
                && (wanted.is_empty() || config.name.to_lowercase().contains(&wanted))
                && (channel.is_empty() || config.wants_channel(&channel))
        })
        .collect();
    let pages = matching.len().div_ceil(PAGE_ROWS).max(1);
    let page = filters.page.unwrap_or(1).clamp(1, pages);
    let now = unix_ms(SystemTime::now());
    let shown: Vec<&&(WebhookConfig, Value)> = matching
        .iter()
        .skip((page - 1) * PAGE_ROWS)
        .take(PAGE_ROWS)
        .collect();
    let sandbox_ids = shown.iter().map(|(c, _)| c.sandbox.id.clone()).collect();
    let summaries = deliveries::summaries(&state.service, &org, sandbox_ids, now)
        .await
        .unwrap_or_default();
    let rows: Vec<Row> = shown
        .iter()
        .enumerate()
        .map(|(i, (config, raw))| {
            let (last, tally) = summaries.get(i).cloned().unwrap_or_default();
            row(config, raw, last, tally)
        })
        .collect();
    let query_of = |page: usize| {
        let mut parts = vec![format!("page={page}")];
        for (k, v) in [("name", &name), ("channel", &channel)] {
            if !v.is_empty() {
                parts.push(format!("{k}={}", urlencode(v)));
            }
        }
        if let Some(s) = &chosen {
            parts.push(format!("sandbox={}", urlencode(s)));
        }
        parts.join("&")
    };
    let known = sandboxes.len();
    let picker: Vec<SandboxChoice> = sandboxes
        .into_iter()
        .take(PICKER_SUGGESTIONS)
        .map(|(id, name)| SandboxChoice { id, name })
        .collect();
    render(
        &state,
        "inventory.html",
        context! {
            name => name.clone(),
            channel => channel.clone(),
            rows => value(&rows),
            total => matching.len(),
            first => (page - 1) * PAGE_ROWS + 1,
            last => (page - 1) * PAGE_ROWS + rows.len(),
            previous => (page > 1).then(|| query_of(page - 1)),
            next => (page < pages).then(|| query_of(page + 1)),
            sandboxes => value(&picker),
            more_sandboxes => known.saturating_sub(PICKER_SUGGESTIONS),
            chosen => chosen.clone(),
            chosen_path => chosen.as_deref().map(urlencode),
            chosen_has_webhook => chosen_has_webhook,
            sandbox_fixed => matches!(scope, Scope::Sandbox(..)),
            may_write => signed.0.principal.right == crate::admin::tokens::Right::Write,
            ..signed.base(&org, None)
        },
    )
}

fn row(config: &WebhookConfig, raw: &Value, last: Option<Value>, tally: Tally) -> Row {
    let sandbox = &config.sandbox.id;
    Row {
        name: config.name.clone(),
        sandbox: if config.sandbox.name.is_empty() {
            sandbox.clone()
        } else {
            config.sandbox.name.clone()
        },
        sandbox_path: urlencode(sandbox),
        channels: config.channels.join(", "),
        url: config.url.clone(),
        auth: match raw.pointer("/authentication/type").and_then(Value::as_str) {
            Some("jwt") => "JWT",
            _ => "None",
        },
        enabled: config.enabled,
        last_status: last
            .as_ref()
            .and_then(|o| o["status"].as_str().map(str::to_owned)),
        last_at: last
            .as_ref()
            .and_then(|o| o["completedAt"].as_str().map(str::to_owned)),
        failure_rate: tally.failure_percent().map(|p| format!("{p:.1} %")),
        outcomes_24h: tally.delivered + tally.failed,
        health: raw["health"]["state"]
            .as_str()
            .unwrap_or("healthy")
            .to_owned(),
        health_note: health_note(&raw["health"]),
    }
}

/// A webhook's health in a few words: since when, and its last error.
pub fn health_note(health: &Value) -> String {
    let mut note = match (health["state"].as_str(), health["since"].as_str()) {
        (Some(state), Some(since)) => format!("{state} since {since}"),
        (Some(state), None) => state.to_owned(),
        _ => String::new(),
    };
    if let Some(error) = last_error(health) {
        note.push_str("; last error: ");
        note.push_str(&error);
    }
    note
}

/// The last error of a health view, in words (`HTTP 503 at ...`).
pub fn last_error(health: &Value) -> Option<String> {
    let e = health.get("lastError").filter(|e| !e.is_null())?;
    let what = match (e["httpStatus"].as_u64(), e["error"].as_str()) {
        (Some(status), _) => format!("HTTP {status}"),
        (None, Some(error)) => error.to_owned(),
        (None, None) => "a failure".to_owned(),
    };
    Some(match e["at"].as_str() {
        Some(at) => format!("{what} at {at}"),
        None => what,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::console::rendered;

    #[test]
    fn what_users_typed_is_escaped() {
        let html = rendered(
            "inventory.html",
            ("<b>me</b>", "acme", None),
            context! {
                name => "", channel => "", total => 1,
                rows => value(vec![Row {
                    name: "<script>alert(1)</script>".into(), sandbox: "prod".into(),
                    sandbox_path: "sb1".into(),
                    channels: "email".into(), url: "https://h.example/x?a=1&b=2".into(),
                    auth: "JWT", enabled: true, last_status: None, last_at: None,
                    failure_rate: Some("2.5 %".into()), outcomes_24h: 40,
                    health: "failing".into(), health_note: "failing since <b>".into(),
                }]),
            },
        );
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;b&gt;me&lt;&#x2f;b&gt;"));
        assert!(html.contains("2.5 %"));
        assert!(html.contains("health failing"), "{html}");
        assert!(html.contains("failing since &lt;b&gt;"), "{html}");
    }

    #[test]
    fn the_health_note_says_since_when_and_the_last_error() {
        let health = serde_json::json!({"state": "failing", "since": "T0",
            "lastError": {"at": "T1", "httpStatus": 503, "error": null}});
        assert_eq!(
            health_note(&health),
            "failing since T0; last error: HTTP 503 at T1"
        );
        let timeout = serde_json::json!({"state": "healthy", "since": null,
            "lastError": {"at": "T1", "httpStatus": null, "error": "timed out"}});
        assert_eq!(
            health_note(&timeout),
            "healthy; last error: timed out at T1"
        );
    }
}
