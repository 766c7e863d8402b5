//! The webhook of an org + sandbox: get, create or replace, delete, enable or disable; and
//! the inventory of an org's webhooks.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::paging::{Page, Pager};
use super::{allow, object, At, Saved, Service, Versioned};
use crate::admin::problem::Problem;
use crate::admin::tokens::Principal;
use crate::admin::versions::{check, Expect};
use crate::domain::config::{ConfigKey, WebhookConfig};
use crate::domain::ids::Id;
use crate::schema::Violation;

/// A webhook as a caller writes it: a JSON object (the shape `WebhookWrite` of the API's
/// document). What the path names (`kind`, `imsOrg`, `sandbox.id`) may be left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookInput(pub Map<String, Value>);

impl WebhookInput {
    /// A request body: a JSON object, or why not.
    pub fn parse(body: &[u8]) -> Result<Self, Problem> {
        object(body).map(WebhookInput)
    }

    /// Fills what the path says (`kind`, `imsOrg`, `sandbox.id`) and refuses a body that
    /// says otherwise. A `version` or `health` echoed from a read is dropped.
    fn place(mut self, org: &str, sandbox: &str) -> Result<Value, Vec<Violation>> {
        let body = &mut self.0;
        let mut refused = Vec::new();
        let mut must = |field: &str, found: Option<&Value>, expected: &str| {
            if found.is_some_and(|f| f.as_str() != Some(expected)) {
                refused.push(Violation {
                    field: field.to_owned(),
                    message: format!("must be {expected:?}, as in the path"),
                });
            }
        };
        must("/kind", body.get("kind"), "webhook");
        must("/imsOrg", body.get("imsOrg"), org);
        must(
            "/sandbox/id",
            body.get("sandbox").and_then(|s| s.get("id")),
            sandbox,
        );
        if !refused.is_empty() {
            return Err(refused);
        }
        // What a read adds (its version, its health) is not part of the record.
        body.remove("version");
        body.remove("health");
        body.insert("kind".into(), json!("webhook"));
        body.insert("imsOrg".into(), json!(org));
        match body.get_mut("sandbox") {
            Some(Value::Object(s)) => {
                s.insert("id".into(), json!(sandbox));
            }
            None => {
                body.insert("sandbox".into(), json!({ "id": sandbox }));
            }
            Some(_) => {}
        }
        Ok(Value::Object(self.0))
    }
}

fn no_webhook(org: &str, sandbox: &str) -> Problem {
    Problem::not_found(format!("org {org:?} has no webhook in sandbox {sandbox:?}"))
}

/// The webhook as callers see it (secrets as fingerprints).
pub fn get(svc: &Service, at: At<'_>) -> Result<Versioned<Value>, Problem> {
    at.allow(false)?;
    let (org, sandbox) = (at.org, at.sandbox);
    let key = ConfigKey::webhook(org, sandbox);
    let stored = svc.current(&key)?.ok_or_else(|| no_webhook(org, sandbox))?;
    let mut shown = svc.shown(&key, &stored, at.caller);
    svc.stores.with_health(&mut shown.record);
    Ok(shown)
}

/// The webhook as the processor reads it (secrets sealed or referenced), for a test send.
pub(super) fn config(
    svc: &Service,
    org: &str,
    sandbox: &str,
) -> Result<(ConfigKey, WebhookConfig), Problem> {
    let key = ConfigKey::webhook(org, sandbox);
    let stored = svc.current(&key)?.ok_or_else(|| no_webhook(org, sandbox))?;
    let webhook = serde_json::from_slice(&stored.value)
        .map_err(|e| Problem::unavailable(format!("stored record unreadable: {e}")))?;
    Ok((key, webhook))
}

/// Creates (`expect` nothing; 409 when one exists) or replaces (`expect` the version read;
/// 412 when it changed meanwhile, 428 without it).
pub async fn put(
    svc: &Service,
    at: At<'_>,
    expect: &Expect,
    input: WebhookInput,
) -> Result<Saved, Problem> {
    at.allow(true)?;
    let (caller, org, sandbox) = (at.caller, at.org, at.sandbox);
    let placed = input.place(org, sandbox);
    let key = ConfigKey::webhook(org, sandbox);
    let written = svc
        .write(caller, &key, |current| {
            check(expect, current.map(|c| c.version), true, "the webhook")?;
            match &placed {
                Ok(value) => Ok(Some(value.clone())),
                Err(refused) => Err(Problem::invalid(refused.clone())),
            }
        })
        .await?;
    let mut record = svc.shown_after(&key, &written, "the record", at.caller)?;
    svc.stores.with_health(&mut record.record);
    Ok(Saved {
        record,
        created: *expect == Expect::Nothing,
    })
}

/// Deletes the webhook of the version `expect` names.
pub async fn delete(svc: &Service, at: At<'_>, expect: &Expect) -> Result<(), Problem> {
    at.allow(true)?;
    let (caller, org, sandbox) = (at.caller, at.org, at.sandbox);
    let key = ConfigKey::webhook(org, sandbox);
    svc.write(caller, &key, |current| {
        if current.is_none() {
            return Err(no_webhook(org, sandbox));
        }
        check(expect, current.map(|c| c.version), false, "the webhook")?;
        Ok(None)
    })
    .await?;
    Ok(())
}

/// Sets `enabled` on the current record (a version is optional here: the change is one
/// field).
pub async fn set_enabled(
    svc: &Service,
    at: At<'_>,
    expect: &Expect,
    enabled: bool,
) -> Result<Versioned<Value>, Problem> {
    at.allow(true)?;
    let (caller, org, sandbox) = (at.caller, at.org, at.sandbox);
    let key = ConfigKey::webhook(org, sandbox);
    let written = svc
        .write(caller, &key, |current| {
            let Some(current) = current else {
                return Err(no_webhook(org, sandbox));
            };
            if *expect != Expect::Nothing {
                check(expect, Some(current.version), false, "the webhook")?;
            }
            let mut record: Value = serde_json::from_slice(&current.value)
                .map_err(|e| Problem::unavailable(format!("stored record unreadable: {e}")))?;
            record["enabled"] = Value::Bool(enabled);
            Ok(Some(record))
        })
        .await?;
    let mut record = svc.shown_after(&key, &written, "the record", at.caller)?;
    svc.stores.with_health(&mut record.record);
    Ok(record)
}

/// Which of an org's webhooks a list shows, and which page.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InventoryQuery {
    /// Case-insensitive part of the name.
    pub name: Option<String>,
    pub channel: Option<String>,
    pub enabled: Option<bool>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

/// The org's webhooks the caller may see, filtered, in sandbox-id order, a page at a time.
pub async fn inventory(
    svc: &Service,
    caller: &Principal,
    org: &str,
    q: &InventoryQuery,
) -> Result<Page<Value>, Problem> {
    allow(caller, org, None, false)?;
    let org = Id::Org.check(org).map_err(Problem::bad_request)?.to_owned();
    let mut pager = Pager::new(q.cursor.as_deref(), q.limit)?;
    let name = q.name.as_deref().map(str::to_lowercase);
    let (channel, enabled) = (q.channel.clone(), q.enabled);
    let reader = caller.clone();
    svc.read(&org.clone(), move |stores| {
        let (after, scope) = (pager.after().map(str::to_owned), &reader.scope);
        let prefix = format!("webhook/{org}/");
        stores.visit(&prefix, after.as_deref(), &mut |key_text, stored| {
            let shown = serde_json::from_slice::<WebhookConfig>(stored.value)
                .ok()
                .filter(|config| {
                    scope.sees(&org, &config.sandbox.id)
                        && name
                            .as_deref()
                            .is_none_or(|n| config.name.to_lowercase().contains(n))
                        && channel.as_deref().is_none_or(|c| config.wants_channel(c))
                        && enabled.is_none_or(|e| config.enabled == e)
                })
                .map(|config| {
                    let key = ConfigKey::webhook(&org, &config.sandbox.id);
                    let mut shown = stores.shown(&key, &stored, &reader).record;
                    stores.with_health(&mut shown);
                    shown
                });
            pager.offer(key_text, shown)
        })?;
        Ok(pager.page())
    })
    .await
}

/// Every webhook of the org the caller may see, decoded, with its record as callers see it
/// (the console's inventory filters and pages them itself).
pub async fn visible(
    svc: &Service,
    caller: &Principal,
    org: &str,
) -> Result<Vec<(WebhookConfig, Value)>, Problem> {
    if !caller.scope.sees_org(org) {
        return Ok(Vec::new());
    }
    let org = Id::Org.check(org).map_err(Problem::bad_request)?.to_owned();
    let scope = caller.scope.clone();
    svc.read(&org.clone(), move |stores| {
        let mut all = Vec::new();
        stores.visit(&format!("webhook/{org}/"), None, &mut |_, stored| {
            let config = serde_json::from_slice::<WebhookConfig>(stored.value).ok();
            let raw = serde_json::from_slice::<Value>(stored.value).ok();
            if let (Some(config), Some(mut raw)) = (config, raw) {
                if scope.sees(&org, &config.sandbox.id) {
                    stores.with_health(&mut raw);
                    all.push((config, raw));
                }
            }
            true
        })?;
        Ok(all)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_fills_the_record_and_a_body_that_disagrees_is_refused() {
        let body = json!({"name": "n", "sandbox": {"name": "prod"}, "version": "0-1",
            "health": {"state": "healthy"}});
        let input = WebhookInput(body.as_object().unwrap().clone());
        let body = input.place("acme", "sb1").unwrap();
        assert_eq!(body["imsOrg"], "acme");
        assert_eq!(body["sandbox"], json!({"id": "sb1", "name": "prod"}));
        assert_eq!(body["kind"], "webhook");
        assert!(body.get("version").is_none() && body.get("health").is_none());

        let other = json!({"imsOrg": "evil", "sandbox": {"id": "x", "name": "p"}});
        let refused = WebhookInput(other.as_object().unwrap().clone())
            .place("acme", "sb1")
            .unwrap_err();
        let fields: Vec<&str> = refused.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["/imsOrg", "/sandbox/id"]);
    }
}

/// The operations against the in-memory config topic: every refusal the API and the
/// console answer with, and secrets kept by their fingerprint.
#[cfg(test)]
mod operations {
    use axum::http::StatusCode;
    use serde_json::json;

    use super::*;
    use crate::admin::service::fake::{caller, Fixture};
    use crate::admin::service::Saved;

    fn webhook() -> WebhookInput {
        WebhookInput::parse(
            br#"{"sandbox": {"name": "prod"}, "name": "Orders", "channels": ["email"],
                "url": "https://hooks.example.com/x", "enabled": true,
                "authentication": {"type": "none"}}"#,
        )
        .unwrap()
    }

    /// `webhook()` with `field` set to `value`.
    fn with(field: &str, value: Value) -> WebhookInput {
        let mut input = webhook();
        input.0.insert(field.into(), value);
        input
    }

    /// `webhook()` with JWT authentication whose key is `key`.
    fn jwt_with(key: Value) -> WebhookInput {
        with(
            "authentication",
            json!({"type": "jwt", "algorithm": "HS256", "key": key,
                   "issuer": "i", "subject": "s", "audience": "a", "expiresInSeconds": 300}),
        )
    }

    fn version(saved: &Saved) -> Expect {
        Expect::version(&saved.record.version.to_string())
    }

    impl Fixture {
        /// A put into acme/sb1 by a caller of `scope` that may write.
        async fn put(
            &self,
            scope: &str,
            expect: &Expect,
            input: WebhookInput,
        ) -> Result<Saved, Problem> {
            let who = caller(scope, true);
            put(&self.svc, At::new(&who, "acme", "sb1"), expect, input).await
        }

        /// A create of `webhook()` in acme/`sandbox` by `who`.
        async fn create(&self, who: &Principal, sandbox: &str) -> Result<Saved, Problem> {
            put(
                &self.svc,
                At::new(who, "acme", sandbox),
                &Expect::Nothing,
                webhook(),
            )
            .await
        }

        fn stored(&self) -> Option<Value> {
            self.config.json("webhook/acme/sb1")
        }
    }

    /// An org token enables and disables a webhook whose key an operator wrote as a
    /// reference, and never sees where the reference points.
    #[tokio::test]
    async fn an_org_token_toggles_a_webhook_holding_an_operators_reference() {
        let f = Fixture::new();
        let jwt = jwt_with(json!({"ref": "env:WEBHOOK_SECRET_ACME__JWT"}));
        f.put("operator", &Expect::Nothing, jwt).await.unwrap();
        let tenant = caller("acme", true);
        let at = At::new(&tenant, "acme", "sb1");
        let off = set_enabled(&f.svc, at, &Expect::Any, false).await.unwrap();
        assert_eq!(off.record["enabled"], false);
        assert!(
            !off.record.to_string().contains("WEBHOOK_SECRET"),
            "{}",
            off.record
        );
        let stored = f.stored().unwrap();
        assert_eq!(
            stored["authentication"]["key"]["ref"],
            "env:WEBHOOK_SECRET_ACME__JWT"
        );
        set_enabled(&f.svc, at, &Expect::Any, true).await.unwrap();
        let operator = caller("operator", false);
        let seen = get(&f.svc, At::new(&operator, "acme", "sb1")).unwrap();
        assert_eq!(
            seen.record["authentication"]["key"]["ref"],
            "env:WEBHOOK_SECRET_ACME__JWT"
        );
    }

    #[tokio::test]
    async fn create_replace_and_delete_check_the_version_read() {
        let f = Fixture::new();
        let created = f.put("acme", &Expect::Nothing, webhook()).await.unwrap();
        assert!(created.created);
        let stored = f.stored().unwrap();
        assert_eq!(
            (&stored["imsOrg"], &stored["updatedBy"]),
            (&json!("acme"), &json!("test-acme"))
        );
        assert_eq!(
            created.record.record["version"],
            created.record.version.to_string()
        );

        // Created again without a version: 409; replaced with an old version: 412.
        let again = f.put("acme", &Expect::Nothing, webhook()).await;
        assert_eq!(again.unwrap_err().status, StatusCode::CONFLICT);
        let replaced = f.put("acme", &version(&created), webhook()).await.unwrap();
        assert!(!replaced.created);
        let stale = f.put("acme", &version(&created), webhook()).await;
        assert_eq!(stale.unwrap_err().status, StatusCode::PRECONDITION_FAILED);

        // A delete names the version it deletes.
        let admin = caller("acme", true);
        let at = At::new(&admin, "acme", "sb1");
        let blind = delete(&f.svc, at, &Expect::Nothing).await;
        assert_eq!(blind.unwrap_err().status, StatusCode::PRECONDITION_REQUIRED);
        delete(&f.svc, at, &version(&replaced)).await.unwrap();
        assert!(f.stored().is_none());
        assert_eq!(get(&f.svc, at).unwrap_err().status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn an_org_holds_at_most_its_quota_of_webhooks_and_writes() {
        let mut f = Fixture::new();
        let mut admin = crate::settings::AdminSettings::default();
        (admin.max_webhooks_per_org, admin.writes_per_minute) = (1, 3);
        f.svc.quotas = crate::admin::service::quotas::Quotas::from_settings(&admin);
        let created = f.put("acme", &Expect::Nothing, webhook()).await.unwrap();
        let refused = f.create(&caller("acme", true), "sb2").await.unwrap_err();
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(refused.detail.contains("admin.max_webhooks_per_org"));
        // Replacing the one it holds is not a new one.
        f.put("acme", &version(&created), webhook()).await.unwrap();
        let fourth = f
            .put("acme", &Expect::Nothing, webhook())
            .await
            .unwrap_err();
        assert_eq!(
            fourth.status,
            StatusCode::TOO_MANY_REQUESTS,
            "3 writes a minute"
        );
        assert_eq!(f.published(), 2);
    }

    #[tokio::test]
    async fn every_refused_field_is_named_and_nothing_is_published() {
        let f = Fixture::new();
        let other_org = f.put("acme", &Expect::Nothing, with("imsOrg", json!("other")));
        let refused = other_org.await.unwrap_err();
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(refused.errors[0].field, "/imsOrg");

        let mut plain = with("url", json!("http://hooks.example.com/x"));
        plain
            .0
            .insert("headers".into(), json!({"Host": "elsewhere"}));
        let refused = f.put("acme", &Expect::Nothing, plain).await.unwrap_err();
        let fields: Vec<&str> = refused.errors.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["/url", "/headers/Host"]);
        assert_eq!(f.published(), 0);
    }

    #[tokio::test]
    async fn scopes_hide_other_orgs_and_readers_do_not_write() {
        let f = Fixture::new();
        let other = f.put("globex", &Expect::Nothing, webhook()).await;
        assert_eq!(other.unwrap_err().status, StatusCode::NOT_FOUND);
        let read_only = f.create(&caller("acme", false), "sb1").await;
        assert_eq!(read_only.unwrap_err().status, StatusCode::FORBIDDEN);
        f.put("acme/sb1", &Expect::Nothing, webhook())
            .await
            .unwrap();
        let second = caller("acme/sb2", true);
        put(
            &f.svc,
            At::new(&second, "acme", "sb2"),
            &Expect::Nothing,
            webhook(),
        )
        .await
        .unwrap();
        // A sandbox token sees its own webhook in the inventory, an org token both.
        let listed = |scope| {
            let (svc, caller) = (&f.svc, caller(scope, false));
            async move {
                let query = InventoryQuery::default();
                let page = inventory(svc, &caller, "acme", &query).await;
                page.unwrap().items.len()
            }
        };
        assert_eq!((listed("acme/sb1").await, listed("acme").await), (1, 2));
        // A page seeks past its cursor.
        let first = InventoryQuery {
            limit: Some(1),
            ..InventoryQuery::default()
        };
        let org_reader = caller("acme", false);
        let page = inventory(&f.svc, &org_reader, "acme", &first);
        let page = page.await.unwrap();
        assert_eq!(page.items[0]["sandbox"]["id"], "sb1");
        let next = InventoryQuery {
            cursor: page.next_cursor,
            ..InventoryQuery::default()
        };
        let rest = inventory(&f.svc, &org_reader, "acme", &next);
        let rest = rest.await.unwrap();
        assert_eq!(rest.items.len(), 1);
        assert_eq!(rest.items[0]["sandbox"]["id"], "sb2");
        assert!(rest.next_cursor.is_none());
    }

    #[tokio::test]
    async fn a_secret_is_sealed_shown_by_fingerprint_and_kept_when_written_back() {
        let f = Fixture::new();
        let jwt = jwt_with(json!({"value": "a-32-byte-long-shared-secret-key"}));
        let created = f.put("acme", &Expect::Nothing, jwt).await.unwrap();
        let sealed = f.stored().unwrap()["authentication"]["key"].clone();
        assert!(sealed.get("encrypted").is_some(), "{sealed}");
        let shown = &created.record.record["authentication"]["key"];
        assert_eq!(shown["set"], true);
        assert!(!shown.to_string().contains("a-32-byte"));

        // The record read back, renamed and written with its version: the secret is kept.
        let mut back = WebhookInput(created.record.record.as_object().unwrap().clone());
        back.0.insert("name".into(), json!("Renamed"));
        f.put("acme", &version(&created), back).await.unwrap();
        let stored = f.stored().unwrap();
        assert_eq!(stored["name"], "Renamed");
        assert_eq!(stored["authentication"]["key"], sealed);
    }

    #[tokio::test]
    async fn a_write_fenced_by_another_instance_starts_again() {
        let f = Fixture::new();
        f.config.fence_next(2);
        f.put("acme", &Expect::Nothing, webhook()).await.unwrap();
        assert_eq!(f.published(), 3);
        // Fenced every time: the write gives up with a 503, and nothing is stored.
        f.config.fence_next(10);
        let admin = caller("acme", true);
        let disabled = set_enabled(
            &f.svc,
            At::new(&admin, "acme", "sb1"),
            &Expect::Nothing,
            false,
        );
        assert_eq!(
            disabled.await.unwrap_err().status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(f.stored().unwrap()["enabled"], true);
    }
}
