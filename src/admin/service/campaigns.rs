//! Campaign opt-ins of a sandbox: list, get, set (on by default), delete.

use serde::Deserialize;
use serde_json::{json, Value};

use super::paging::{Page, Pager};
use super::{id, At, Saved, Service, Versioned};
use crate::admin::problem::Problem;
use crate::admin::tokens::Principal;
use crate::admin::versions::{check, Expect};
use crate::domain::config::ConfigKey;
use crate::domain::ids::Id;
use crate::schema::Violation;

/// Which opt-ins a list shows, and which page.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub enabled: Option<bool>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

/// The sandbox's opt-ins, a page at a time.
pub async fn list(svc: &Service, at: At<'_>, q: &ListQuery) -> Result<Page<Value>, Problem> {
    at.allow(false)?;
    let prefix = format!("campaign/{}/{}/", at.org, at.sandbox);
    let mut pager = Pager::new(q.cursor.as_deref(), q.limit)?;
    let (enabled, caller) = (q.enabled, at.caller.clone());
    svc.read(at.org, move |stores| {
        let after = pager.after().map(str::to_owned);
        stores.visit(&prefix, after.as_deref(), &mut |key_text, stored| {
            let shown = ConfigKey::parse(key_text).ok().and_then(|key| {
                let shown = stores.shown(&key, &stored, &caller).record;
                enabled
                    .is_none_or(|e| shown["webhooksEnabled"].as_bool() == Some(e))
                    .then_some(shown)
            });
            pager.offer(key_text, shown)
        })?;
        Ok(pager.page())
    })
    .await
}

/// A campaign's opt-in, as listed on the console.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OptIn {
    pub id: String,
    pub enabled: bool,
    /// The record's version (what a change names as the one it replaces).
    pub version: String,
}

/// Every opt-in of the sandbox, for the console's page (nothing outside the caller's scope).
pub async fn all(svc: &Service, at: At<'_>) -> Result<Vec<OptIn>, Problem> {
    let (caller, org, sandbox) = (at.caller, at.org, at.sandbox);
    if !caller.scope.sees(org, sandbox) {
        return Ok(Vec::new());
    }
    let prefix = format!("campaign/{org}/{sandbox}/");
    svc.read(org, move |stores| {
        let mut all = Vec::new();
        stores.visit(&prefix, None, &mut |_, stored| {
            if let Ok(v) = serde_json::from_slice::<Value>(stored.value) {
                all.push(OptIn {
                    id: v["campaignID"].as_str().unwrap_or_default().to_owned(),
                    enabled: v["webhooksEnabled"].as_bool().unwrap_or(false),
                    version: stored.version.to_string(),
                });
            }
            true
        })?;
        Ok(all)
    })
    .await
}

/// The sandboxes of the org that have opt-ins the caller may see.
pub async fn sandboxes(
    svc: &Service,
    caller: &Principal,
    org: &str,
) -> Result<Vec<String>, Problem> {
    if !caller.scope.sees_org(org) {
        return Ok(Vec::new());
    }
    let org = id(Id::Org, org)?.to_owned();
    let scope = caller.scope.clone();
    svc.read(&org.clone(), move |stores| {
        let mut ids: Vec<String> = Vec::new();
        stores.visit(&format!("campaign/{org}/"), None, &mut |key, _| {
            if let Some(id) = key.split('/').nth(2) {
                if ids.last().map(String::as_str) != Some(id) && scope.sees(&org, id) {
                    ids.push(id.to_owned());
                }
            }
            true
        })?;
        Ok(ids)
    })
    .await
}

fn no_opt_in(campaign: &str) -> Problem {
    Problem::not_found(format!("campaign {campaign:?} has no opt-in record"))
}

pub fn get(svc: &Service, at: At<'_>, campaign: &str) -> Result<Versioned<Value>, Problem> {
    at.allow(false)?;
    let (org, sandbox) = (at.org, at.sandbox);
    let key = ConfigKey::campaign(org, sandbox, id(Id::Campaign, campaign)?);
    let stored = svc.current(&key)?.ok_or_else(|| no_opt_in(campaign))?;
    Ok(svc.shown(&key, &stored, at.caller))
}

/// The opt-in a body asks for: `{"webhooksEnabled": true|false}`, `true` when left out.
pub fn enabled_of(mut body: serde_json::Map<String, Value>) -> Result<bool, Problem> {
    match body.remove("webhooksEnabled") {
        None => Ok(true),
        Some(Value::Bool(enabled)) => Ok(enabled),
        Some(_) => Err(Problem::invalid(vec![Violation {
            field: "/webhooksEnabled".into(),
            message: "must be true or false".into(),
        }])),
    }
}

/// Sets the opt-in; `expect` is checked when given.
pub async fn put(
    svc: &Service,
    at: At<'_>,
    campaign: &str,
    expect: &Expect,
    enabled: bool,
) -> Result<Saved, Problem> {
    at.allow(true)?;
    let (caller, org, sandbox) = (at.caller, at.org, at.sandbox);
    let key = ConfigKey::campaign(org, sandbox, id(Id::Campaign, campaign)?);
    let written = svc
        .write(caller, &key, |current| {
            // As a webhook's: without If-Match a PUT creates (409 if there is one), with it
            // replaces the version read.
            check(expect, current.map(|c| c.version), true, "the opt-in")?;
            Ok(Some(json!({
                "kind": "campaign",
                "imsOrg": org,
                "sandboxId": sandbox,
                "campaignID": campaign,
                "webhooksEnabled": enabled,
            })))
        })
        .await?;
    Ok(Saved {
        record: svc.shown_after(&key, &written, "the opt-in", caller)?,
        created: written.old.is_none(),
    })
}

pub async fn delete(
    svc: &Service,
    at: At<'_>,
    campaign: &str,
    expect: &Expect,
) -> Result<(), Problem> {
    at.allow(true)?;
    let (caller, org, sandbox) = (at.caller, at.org, at.sandbox);
    let key = ConfigKey::campaign(org, sandbox, id(Id::Campaign, campaign)?);
    svc.write(caller, &key, |current| {
        if current.is_none() {
            return Err(no_opt_in(campaign));
        }
        check(expect, current.map(|c| c.version), false, "the opt-in")?;
        Ok(None)
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;
    use crate::admin::service::fake::{caller, Fixture};

    #[tokio::test]
    async fn opt_ins_are_set_listed_and_removed() {
        let f = Fixture::new();
        let admin = caller("acme/sb1", true);
        let at = At::new(&admin, "acme", "sb1");
        let set = |campaign, expect, enabled| put(&f.svc, at, campaign, expect, enabled);
        let first = set("c1", &Expect::Nothing, true).await.unwrap();
        assert!(first.created);
        // As a webhook's: a second create is a conflict, a change names what it replaces.
        let again = set("c1", &Expect::Nothing, false).await.unwrap_err();
        assert_eq!(again.status, StatusCode::CONFLICT);
        let read = Expect::version(&first.record.version.to_string());
        let changed = set("c1", &read, false).await.unwrap();
        assert!(!changed.created);
        set("c2", &Expect::Nothing, true).await.unwrap();
        let stale = set("c1", &read, true).await.unwrap_err();
        assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);

        let on = ListQuery {
            enabled: Some(true),
            ..ListQuery::default()
        };
        let listed = list(&f.svc, at, &on).await.unwrap();
        assert_eq!(listed.items.len(), 1);
        assert_eq!(listed.items[0]["campaignID"], "c2");
        let listed: Vec<(String, bool)> = all(&f.svc, at)
            .await
            .unwrap()
            .into_iter()
            .map(|o| (o.id, o.enabled))
            .collect();
        assert_eq!(listed, [("c1".into(), false), ("c2".into(), true)]);
        let c1 = all(&f.svc, at).await.unwrap().remove(0);
        assert_eq!(c1.version, changed.record.version.to_string());
        assert_eq!(sandboxes(&f.svc, &admin, "acme").await.unwrap(), ["sb1"]);
        let elsewhere = caller("acme/sb2", false);
        assert!(all(&f.svc, At::new(&elsewhere, "acme", "sb1"))
            .await
            .unwrap()
            .is_empty());

        let unnamed = delete(&f.svc, at, "c1", &Expect::Nothing).await;
        assert_eq!(
            unnamed.unwrap_err().status,
            StatusCode::PRECONDITION_REQUIRED
        );
        delete(&f.svc, at, "c1", &Expect::Any).await.unwrap();
        let again = delete(&f.svc, at, "c1", &Expect::Any).await;
        assert_eq!(again.unwrap_err().status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn ids_that_break_the_record_grammar_are_refused_before_any_key() {
        let f = Fixture::new();
        let admin = caller("operator", true);
        let at = At::new(&admin, "acme", "sb1");
        for bad in ["a/b", ""] {
            let refused = put(&f.svc, at, bad, &Expect::Nothing, true).await;
            assert_eq!(
                refused.unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad:?}"
            );
            assert_eq!(
                get(&f.svc, at, bad).unwrap_err().status,
                StatusCode::BAD_REQUEST
            );
        }
        assert_eq!(f.published(), 0);
        let event = crate::admin::service::deliveries::latest(&f.svc, at, "no spaces").await;
        assert_eq!(event.unwrap_err().status, StatusCode::BAD_REQUEST);
        let org = crate::admin::service::webhooks::inventory(
            &f.svc,
            &admin,
            "acme/sb1",
            &Default::default(),
        )
        .await;
        assert_eq!(org.unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_body_without_the_opt_in_turns_it_on() {
        assert!(enabled_of(serde_json::Map::new()).unwrap());
        let mut body = serde_json::Map::new();
        body.insert("webhooksEnabled".into(), Value::from("yes"));
        assert_eq!(
            enabled_of(body).unwrap_err().errors[0].field,
            "/webhooksEnabled"
        );
    }
}
