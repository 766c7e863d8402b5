//! A sandbox's campaign opt-ins: enable or disable webhooks of a campaign, add one by id.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use minijinja::context;
use serde::Deserialize;

use super::{render_status, said, urlencode, value, Signed};
use crate::admin::service::campaigns::{self, OptIn};
use crate::admin::service::At;
use crate::admin::versions::Expect;
use crate::admin::AppState;

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
    let rows: Vec<OptIn> =
        campaigns::all(&state.service, At::new(signed.caller(), org, sandbox)).unwrap_or_default();
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
    let refused = |why: String, status| show(&state, &signed, &org, &sandbox, Some(why), status);
    if campaign.is_empty() {
        // Who may write is answered before what was sent.
        if let Err(problem) =
            crate::admin::service::allow(signed.caller(), &org, Some(&sandbox), true)
        {
            return refused(problem.detail, problem.status);
        }
        return refused(
            "Give the campaign's id.".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    let enabled = form.enabled == "true";
    let written = campaigns::put(
        &state.service,
        At::new(signed.caller(), &org, &sandbox),
        campaign,
        &Expect::Nothing,
        enabled,
    )
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
                rows => value(vec![OptIn {
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
