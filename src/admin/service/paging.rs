//! Every list is paged the same way: at most `limit` items (default [`DEFAULT_LIMIT`], at
//! most [`MAX_LIMIT`]) and an opaque cursor naming the key the page ended at; the next page
//! starts after it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;

use crate::admin::problem::Problem;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

/// A page of a list, as every list answers it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `None` on the last.
    pub next_cursor: Option<String>,
}

/// Encodes the key a page ended at.
pub fn cursor_of(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

/// The key a cursor names, or a 400 for one this API did not give.
pub fn after_cursor(cursor: Option<&str>) -> Result<Option<String>, Problem> {
    cursor
        .map(|c| {
            URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| Problem::bad_request("cursor is not one this API gave"))
        })
        .transpose()
}

/// The page size asked for, within bounds.
pub fn limit_of(limit: Option<usize>) -> Result<usize, Problem> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        l @ 1..=MAX_LIMIT => Ok(l),
        _ => Err(Problem::bad_request(format!(
            "limit must be from 1 to {MAX_LIMIT}"
        ))),
    }
}

/// Builds a page of keyed items offered in key order, starting after the cursor's key: keeps
/// at most `limit` of them and names the last one kept when more follow.
pub struct Pager {
    limit: usize,
    after: Option<String>,
    items: Vec<serde_json::Value>,
    last: String,
    next_cursor: Option<String>,
}

impl Pager {
    pub fn new(cursor: Option<&str>, limit: Option<usize>) -> Result<Self, Problem> {
        Ok(Pager {
            limit: limit_of(limit)?,
            after: after_cursor(cursor)?,
            items: Vec::new(),
            last: String::new(),
            next_cursor: None,
        })
    }

    /// The key the page starts after.
    pub fn after(&self) -> Option<&str> {
        self.after.as_deref()
    }

    /// Offers the item of `key` (`None`: filtered out); answers whether to go on.
    pub fn offer(&mut self, key: &str, shown: Option<serde_json::Value>) -> bool {
        if self.after.as_deref().is_some_and(|a| key <= a) {
            return true;
        }
        let Some(shown) = shown else {
            return true;
        };
        if self.items.len() == self.limit {
            self.next_cursor = Some(cursor_of(&self.last));
            return false;
        }
        self.last = key.to_owned();
        self.items.push(shown);
        true
    }

    pub fn page(self) -> Page<serde_json::Value> {
        Page {
            items: self.items,
            next_cursor: self.next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_limits_are_bounded() {
        let c = cursor_of("webhook/acme/sb1");
        assert_eq!(
            after_cursor(Some(&c)).unwrap().as_deref(),
            Some("webhook/acme/sb1")
        );
        assert!(after_cursor(Some("!!")).is_err());
        assert_eq!(limit_of(None).unwrap(), DEFAULT_LIMIT);
        assert!(limit_of(Some(0)).is_err() && limit_of(Some(MAX_LIMIT + 1)).is_err());
    }

    #[test]
    fn a_page_ends_at_its_last_item_and_the_next_starts_after_it() {
        let page = |cursor: Option<&str>| {
            let mut pager = Pager::new(cursor, Some(2)).unwrap();
            for i in 1..=5 {
                let odd = (i % 2 == 1).then(|| serde_json::json!(i));
                if !pager.offer(&format!("k{i}"), odd) {
                    break;
                }
            }
            pager.page()
        };
        let first = page(None);
        assert_eq!(first.items, [1, 3]);
        let cursor = first.next_cursor.unwrap();
        assert_eq!(after_cursor(Some(&cursor)).unwrap().unwrap(), "k3");
        let second = page(Some(&cursor));
        assert_eq!(second.items, [5]);
        assert_eq!(second.next_cursor, None);
    }
}
