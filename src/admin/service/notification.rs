//! An org's notification endpoint (the `notification/{imsOrg}` record): where the org's
//! operational events are sent, signed. It concerns every sandbox of the org, so a token
//! scoped to one sandbox neither sees nor changes it.

use serde_json::{json, Map, Value};

use super::{allow, Saved, Service, Versioned};
use crate::admin::problem::Problem;
use crate::admin::tokens::{Principal, Scope};
use crate::admin::versions::{check, Expect};
use crate::domain::config::ConfigKey;
use crate::domain::ids::Id;
use crate::schema::Violation;

fn allow_org(caller: &Principal, org: &str, write: bool) -> Result<(), Problem> {
    if matches!(caller.scope, Scope::Sandbox(..)) {
        return Err(Problem::not_found("no such resource"));
    }
    allow(caller, org, None, write)?;
    Id::Org.check(org).map_err(Problem::bad_request)?;
    Ok(())
}

fn none_yet(org: &str) -> Problem {
    Problem::not_found(format!("org {org:?} has no notification endpoint"))
}

/// The endpoint as callers see it (secrets as fingerprints).
pub fn get(svc: &Service, caller: &Principal, org: &str) -> Result<Versioned<Value>, Problem> {
    allow_org(caller, org, false)?;
    let key = ConfigKey::notification(org);
    let stored = svc.current(&key)?.ok_or_else(|| none_yet(org))?;
    Ok(svc.shown(&key, &stored, caller))
}

/// Fills what the path says (`kind`, `imsOrg`); refuses a body that says otherwise.
fn place(mut body: Map<String, Value>, org: &str) -> Result<Value, Vec<Violation>> {
    let mut refused = Vec::new();
    for (field, expected) in [("kind", "notification"), ("imsOrg", org)] {
        if body
            .get(field)
            .is_some_and(|f| f.as_str() != Some(expected))
        {
            refused.push(Violation {
                field: format!("/{field}"),
                message: format!("must be {expected:?}"),
            });
        }
    }
    if !refused.is_empty() {
        return Err(refused);
    }
    body.remove("version");
    body.insert("kind".into(), json!("notification"));
    body.insert("imsOrg".into(), json!(org));
    Ok(Value::Object(body))
}

/// Creates (`expect` nothing; 409 when one exists) or replaces (`expect` the version read).
pub async fn put(
    svc: &Service,
    caller: &Principal,
    org: &str,
    expect: &Expect,
    body: Map<String, Value>,
) -> Result<Saved, Problem> {
    allow_org(caller, org, true)?;
    let placed = place(body, org);
    let key = ConfigKey::notification(org);
    let written = svc
        .write(caller, &key, |current| {
            check(expect, current.map(|c| c.version), true, "the endpoint")?;
            match &placed {
                Ok(value) => Ok(Some(value.clone())),
                Err(refused) => Err(Problem::invalid(refused.clone())),
            }
        })
        .await?;
    Ok(Saved {
        record: svc.shown_after(&key, &written, "the record", caller)?,
        created: *expect == Expect::Nothing,
    })
}

/// Deletes the endpoint of the version `expect` names.
pub async fn delete(
    svc: &Service,
    caller: &Principal,
    org: &str,
    expect: &Expect,
) -> Result<(), Problem> {
    allow_org(caller, org, true)?;
    let key = ConfigKey::notification(org);
    svc.write(caller, &key, |current| {
        if current.is_none() {
            return Err(none_yet(org));
        }
        check(expect, current.map(|c| c.version), false, "the endpoint")?;
        Ok(None)
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_fills_the_record_and_a_body_that_disagrees_is_refused() {
        let body = json!({"url": "https://ops.example.com", "version": "0-1"});
        let placed = place(body.as_object().unwrap().clone(), "acme").unwrap();
        assert_eq!(placed["kind"], "notification");
        assert_eq!(placed["imsOrg"], "acme");
        assert!(placed.get("version").is_none());
        let other = json!({"imsOrg": "evil", "kind": "webhook"});
        let refused = place(other.as_object().unwrap().clone(), "acme").unwrap_err();
        let fields: Vec<&str> = refused.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["/kind", "/imsOrg"]);
    }
}
