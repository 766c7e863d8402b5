//! An org's operational events (`webhook.failing`, `event.exhausted`, ...), newest first,
//! filtered and paged, as the delivery log's follower indexed them.

use serde::Deserialize;
use serde_json::Value;

use super::paging::{after_cursor, cursor_of, limit_of, Page};
use super::{allow, unavailable, Service};
use crate::admin::deliveries::MAX_SCANNED;
use crate::admin::health_log::EventsQuery;
use crate::admin::problem::Problem;
use crate::admin::tokens::Principal;
use crate::domain::ids::Id;

/// The operational event types.
pub const TYPES: [&str; 5] = [
    "webhook.failing",
    "webhook.recovered",
    "webhook.disabled",
    "webhook.enabled",
    "event.exhausted",
];

/// The API's query of an org's operational events.
#[derive(Debug, Default, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OperationalQuery {
    /// Only this sandbox's webhook.
    pub sandbox: Option<String>,
    /// Only this type (`webhook.failing`, `webhook.recovered`, `webhook.disabled`,
    /// `webhook.enabled`, `event.exhausted`).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

/// The org's operational events the caller may see, newest first, a page at a time. A
/// page reads a bounded number of entries: a narrow filter may answer fewer items than
/// asked, with the cursor to read on from.
pub async fn list(
    svc: &Service,
    caller: &Principal,
    org: &str,
    q: &OperationalQuery,
) -> Result<Page<Value>, Problem> {
    allow(caller, org, q.sandbox.as_deref(), false)?;
    let org = Id::Org.check(org).map_err(Problem::bad_request)?.to_owned();
    if let Some(kind) = q.kind.as_deref().filter(|k| !TYPES.contains(k)) {
        return Err(Problem::bad_request(format!(
            "type {kind:?} is not one of {}",
            TYPES.join(", ")
        )));
    }
    let query = EventsQuery {
        sandbox: q.sandbox.clone(),
        kind: q.kind.clone(),
        after: after_cursor(q.cursor.as_deref())?,
        limit: limit_of(q.limit)?,
    };
    let scope = caller.scope.clone();
    let (items, next) = svc
        .read(&org.clone(), move |stores| {
            let (mut items, next) = stores
                .deliveries
                .operational(&org, &query, MAX_SCANNED)
                .map_err(unavailable)?;
            // A token scoped to some sandboxes sees their webhooks' events only.
            items.retain(|e| {
                e["sandboxId"]
                    .as_str()
                    .is_some_and(|sandbox| scope.sees(&org, sandbox))
            });
            Ok((items, next))
        })
        .await?;
    Ok(Page {
        items,
        next_cursor: next.map(|k| cursor_of(&k)),
    })
}
