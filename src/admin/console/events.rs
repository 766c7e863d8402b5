//! An org's operational events (webhook failing, recovered, disabled, enabled; failed
//! events announced together), newest first, filtered by sandbox and type, a page at a
//! time.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;

use super::{render, said, urlencode, value, Signed};
use crate::admin::service::operational::{self, OperationalQuery, TYPES};
use crate::admin::AppState;

/// Events on one page.
const PAGE: usize = 50;

#[derive(Deserialize, Default)]
pub struct EventFilters {
    sandbox: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    cursor: Option<String>,
}

fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

pub async fn page(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(org): Path<String>,
    Query(f): Query<EventFilters>,
) -> Response {
    let (sandbox, kind) = (given(&f.sandbox), given(&f.kind));
    let query = OperationalQuery {
        sandbox: sandbox.clone(),
        kind: kind.clone(),
        cursor: given(&f.cursor),
        limit: Some(PAGE),
    };
    let (items, next, error) =
        match operational::list(&state.service, signed.caller(), &org, &query).await {
            Ok(page) => (page.items, page.next_cursor, None),
            Err(problem) => (Vec::new(), None, Some(said(&problem))),
        };
    let next = next.map(|cursor| {
        let mut parts = vec![format!("cursor={}", urlencode(&cursor))];
        if let Some(s) = &sandbox {
            parts.push(format!("sandbox={}", urlencode(s)));
        }
        if let Some(k) = &kind {
            parts.push(format!("type={}", urlencode(k)));
        }
        parts.join("&")
    });
    render(
        &state,
        "events.html",
        context! {
            items => value(&items),
            next => next,
            error => error,
            chosen => sandbox,
            kind => kind,
            types => TYPES,
            ..signed.base(&org, None)
        },
    )
}
