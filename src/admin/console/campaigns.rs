//! A sandbox's campaign opt-ins: enable or disable webhooks of a campaign, add one by id.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{render_status, said, urlencode, value, Signed};
use crate::admin::AppState;

/// A campaign's opt-in, as listed.
#[derive(Serialize)]
pub struct CampaignRow {
    pub id: String,
    pub enabled: bool,
}

pub async fn page(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path((org, sandbox)): Path<(String, String)>,
) -> Response {
    show(&state, &signed, &org, &sandbox, None, StatusCode::OK)
}

fn show(
    state: &AppState,
    signed: &Signed,
    org: &str,
    sandbox: &str,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    // Outside the token's scope there is nothing to show (no existence leak).
    let records = if signed.0.principal.scope.sees(org, sandbox) {
        state
            .store
            .scan(&format!("campaign/{org}/{sandbox}/"))
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let rows: Vec<CampaignRow> = records
        .into_iter()
        .filter_map(|(_, stored)| serde_json::from_slice::<Value>(&stored.value).ok())
        .map(|v| CampaignRow {
            id: v["campaignID"].as_str().unwrap_or_default().to_owned(),
            enabled: v["webhooksEnabled"].as_bool().unwrap_or(false),
        })
        .collect();
    render_status(
        state,
        "campaigns.html",
        status,
        context! {
            error => error,
            rows => value(&rows),
            ..signed.base(org, Some(sandbox))
        },
    )
}

#[derive(Deserialize)]
pub struct CampaignForm {
    campaign: String,
    enabled: String,
}

/// Turns a campaign's opt-in on or off (or adds it), through the API's own write path.
pub async fn set(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path((org, sandbox)): Path<(String, String)>,
    Form(form): Form<CampaignForm>,
) -> Response {
    let campaign = form.campaign.trim();
    let principal = &signed.0.principal;
    let refused = |why: String, status| show(&state, &signed, &org, &sandbox, Some(why), status);
    if let Err(problem) = crate::admin::auth::allow(principal, &org, Some(&sandbox), true) {
        return refused(problem.detail, problem.status);
    }
    if campaign.is_empty() {
        return refused(
            "Give the campaign's id.".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    let key = crate::domain::config::ConfigKey::campaign(&org, &sandbox, campaign);
    let enabled = form.enabled == "true";
    let written = crate::admin::write_record(&state, principal, &key, |_| {
        Ok(Some(serde_json::json!({
            "kind": "campaign",
            "imsOrg": org,
            "sandboxId": sandbox,
            "campaignID": campaign,
            "webhooksEnabled": enabled,
        })))
    })
    .await;
    match written {
        Ok(_) => Redirect::to(&format!(
            "/console/orgs/{}/sandboxes/{}/campaigns",
            urlencode(&org),
            urlencode(&sandbox)
        ))
        .into_response(),
        Err(problem) => refused(said(&problem), problem.status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::console::templates;

    #[test]
    fn links_encode_their_segments_and_buttons_name_their_campaign() {
        let html = templates()
            .get_template("campaigns.html")
            .unwrap()
            .render(context! {
                who => "w", csrf => "c", org => "my org", sandbox => "sb/1",
                org_path => urlencode("my org"), sandbox_path => urlencode("sb/1"),
                rows => value(vec![CampaignRow {
                    id: "<c-1>".into(), enabled: true,
                }]),
            })
            .unwrap();
        assert!(
            html.contains("/console/orgs/my%20org/sandboxes/sb%2F1/campaigns"),
            "{html}"
        );
        assert!(html.contains("Disable webhooks for &lt;c-1&gt;"));
        assert!(!html.contains("<c-1>"));
    }
}
