//! A sandbox's campaign opt-ins: enable or disable webhooks of a campaign, add one by id.

use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use minijinja::context;
use serde::Deserialize;

use super::page::{redirect, SandboxPage};
use super::{said, urlencode, value};
use crate::admin::service::campaigns::{self, OptIn};
use crate::admin::versions::Expect;

pub async fn page(page: SandboxPage) -> Response {
    show(&page, None, StatusCode::OK).await
}

async fn show(page: &SandboxPage, error: Option<String>, status: StatusCode) -> Response {
    // Outside the token's scope there is nothing to show (no existence leak).
    let rows: Vec<OptIn> = campaigns::all(page.service(), page.at())
        .await
        .unwrap_or_default();
    page.render(
        "campaigns.html",
        status,
        context! { error => error, rows => value(&rows), ..page.base() },
    )
}

#[derive(Deserialize)]
pub struct CampaignForm {
    campaign: String,
    enabled: String,
    /// The version of the row's opt-in (none: the "add" form, which creates).
    version: Option<String>,
}

/// Turns a campaign's opt-in on or off (or adds it), through the API's own write path.
pub async fn set(page: SandboxPage, Form(form): Form<CampaignForm>) -> Response {
    let campaign = form.campaign.trim();
    let page = &page;
    let refused = |why: String, status| show(page, Some(why), status);
    if campaign.is_empty() {
        // Who may write is answered before what was sent.
        if let Err(problem) = page.at().allow(true) {
            return refused(problem.detail, problem.status).await;
        }
        let why = "Give the campaign's id.".to_owned();
        return refused(why, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let enabled = form.enabled == "true";
    let expect = form
        .version
        .as_deref()
        .filter(|v| !v.is_empty())
        .map_or(Expect::Nothing, Expect::version);
    let written = campaigns::put(page.service(), page.at(), campaign, &expect, enabled);
    match written.await {
        Ok(_) => redirect(&format!(
            "/console/orgs/{}/sandboxes/{}/campaigns",
            urlencode(&page.org),
            urlencode(&page.sandbox)
        )),
        Err(problem) if problem.status == StatusCode::CONFLICT => {
            let why = format!("Campaign {campaign} already has an opt-in: change it in the list.");
            refused(why, problem.status).await
        }
        Err(problem) if problem.status == StatusCode::PRECONDITION_FAILED => {
            let why = "The opt-in changed meanwhile: here it is as it is now.".to_owned();
            refused(why, problem.status).await
        }
        Err(problem) => refused(said(&problem), problem.status).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::console::rendered;

    #[test]
    fn links_encode_their_segments_and_buttons_name_their_campaign() {
        let html = rendered(
            "campaigns.html",
            ("w", "my org", Some("sb/1")),
            context! {
                rows => value(vec![OptIn {
                    id: "<c-1>".into(), enabled: true, version: "0-7".into(),
                }]),
            },
        );
        assert!(
            html.contains("/console/orgs/my%20org/sandboxes/sb%2F1/campaigns"),
            "{html}"
        );
        assert!(html.contains("Disable webhooks for &lt;c-1&gt;"));
        assert!(html.contains("name=\"version\" value=\"0-7\""), "{html}");
        assert!(!html.contains("<c-1>"));
    }
}
