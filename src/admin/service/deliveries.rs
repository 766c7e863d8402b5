//! The delivery log's queries: a webhook's outcomes newest first, filtered and paged; an
//! event's newest outcome; the inventory's summary of a webhook.

use serde::Deserialize;
use serde_json::Value;

use super::paging::{after_cursor, cursor_of, limit_of, Page};
use super::{id, unavailable, At, Service};
use crate::admin::deliveries::{DeliveryLog, LogError, LogQuery, Matching, Tally};
use crate::admin::problem::Problem;
use crate::domain::ids::Id;
use crate::domain::time::{parse_rfc3339, unix_ms};

/// The API's query of a webhook's outcomes.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeliveriesQuery {
    pub status: Option<String>,
    pub channel: Option<String>,
    pub feedback_status: Option<String>,
    /// RFC 3339.
    pub from: Option<String>,
    pub to: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

/// The webhook's recent outcomes, newest first, a page at a time.
pub async fn list(svc: &Service, at: At<'_>, q: &DeliveriesQuery) -> Result<Page<Value>, Problem> {
    at.allow(false)?;
    let time = |field: &str, value: &Option<String>| -> Result<Option<u64>, Problem> {
        value
            .as_deref()
            .map(|t| {
                parse_rfc3339(t)
                    .map(unix_ms)
                    .ok_or_else(|| Problem::bad_request(format!("{field} is not an RFC 3339 time")))
            })
            .transpose()
    };
    let query = LogQuery {
        matching: Matching {
            status: q.status.clone(),
            channel: q.channel.clone(),
            feedback_status: q.feedback_status.clone(),
        },
        from_ms: time("from", &q.from)?,
        to_ms: time("to", &q.to)?,
        after: after_cursor(q.cursor.as_deref())?,
        limit: limit_of(q.limit)?,
    };
    let (items, next) = search(svc, at, query).await?;
    Ok(Page {
        items,
        next_cursor: next.map(|k| cursor_of(&k)),
    })
}

/// The webhook's outcomes a query selects, and the log key to go on after (the console
/// keeps it as it is).
pub async fn search(
    svc: &Service,
    at: At<'_>,
    query: LogQuery,
) -> Result<(Vec<Value>, Option<String>), Problem> {
    in_log(svc, at, move |log, org, sandbox| {
        log.query(org, sandbox, &query)
    })
    .await
}

/// The newest outcome of an event, if the log has one.
pub async fn latest(svc: &Service, at: At<'_>, event_id: &str) -> Result<Option<Value>, Problem> {
    let event_id = id(Id::Event, event_id)?.to_owned();
    in_log(svc, at, move |log, org, sandbox| {
        log.latest_of(org, sandbox, &event_id)
    })
    .await
}

/// Reads the webhook's part of the delivery log, as one read of its org.
async fn in_log<T: Send + 'static>(
    svc: &Service,
    at: At<'_>,
    read: impl FnOnce(&DeliveryLog, &str, &str) -> Result<T, LogError> + Send + 'static,
) -> Result<T, Problem> {
    at.allow(false)?;
    let (org, sandbox) = (at.org.to_owned(), at.sandbox.to_owned());
    svc.read(at.org, move |stores| {
        read(&stores.deliveries, &org, &sandbox).map_err(unavailable)
    })
    .await
}

/// Webhooks at a glance: for each sandbox of the org, its newest outcome and the outcomes
/// of the last 24 hours (one read for all of them).
pub async fn summaries(
    svc: &Service,
    org: &str,
    sandboxes: Vec<String>,
    now_ms: u64,
) -> Result<Vec<(Option<Value>, Tally)>, Problem> {
    let org_owned = org.to_owned();
    svc.read(org, move |stores| {
        let log = &stores.deliveries;
        Ok(sandboxes
            .iter()
            .map(|sandbox| {
                let newest = LogQuery {
                    limit: 1,
                    ..LogQuery::default()
                };
                let last = log
                    .query(&org_owned, sandbox, &newest)
                    .ok()
                    .and_then(|(items, _)| items.into_iter().next());
                let tally = log
                    .last_24h(&org_owned, sandbox, now_ms)
                    .unwrap_or_default();
                (last, tally)
            })
            .collect())
    })
    .await
}
