//! Record versions as HTTP sees them: the ETag of a record is its config-topic
//! `"{partition}-{offset}"`, and a replace or delete names the version it replaces in
//! `If-Match`, so that two administrators never overwrite each other silently.

use axum::http::{HeaderMap, HeaderValue};

use super::problem::Problem;
use crate::join::Version;

pub fn etag(version: Version) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// What a write expects of the current record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// No `If-Match`.
    Nothing,
    /// `If-Match: *`: some version exists.
    Any,
    /// `If-Match: "{partition}-{offset}"` (one of a list).
    OneOf(Vec<String>),
}

impl Expect {
    /// The version a form was made from, as `If-Match` would name it.
    pub fn version(version: &str) -> Expect {
        let version = version.trim();
        Expect::OneOf(if version.is_empty() {
            Vec::new()
        } else {
            vec![version.to_owned()]
        })
    }
}

pub fn if_match(headers: &HeaderMap) -> Expect {
    let Some(value) = headers
        .get(axum::http::header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return Expect::Nothing;
    };
    if value.trim() == "*" {
        return Expect::Any;
    }
    Expect::OneOf(
        value
            .split(',')
            .map(str::trim)
            // If-Match compares strongly (RFC 9110, 13.1.1): a weak tag, kept with its
            // `W/`, matches no version.
            .map(|t| match t.starts_with("W/") {
                true => t.to_owned(),
                false => t.trim_matches('"').to_owned(),
            })
            .filter(|t| !t.is_empty())
            .collect(),
    )
}

/// Checks `expect` against the current version. `create`: a write without `If-Match`
/// creates, and finding a record is a conflict; otherwise `If-Match` is required.
pub fn check(
    expect: &Expect,
    current: Option<Version>,
    create: bool,
    what: &str,
) -> Result<(), Problem> {
    let mismatch = || {
        Problem::version_mismatch(format!(
            "{what} has changed since it was read (now {}): read it again",
            current.map_or("deleted".to_owned(), |v| format!("\"{v}\""))
        ))
    };
    match (expect, current) {
        (Expect::Nothing, Some(v)) if create => Err(Problem::conflict(
            "Already exists",
            format!("{what} already exists (version \"{v}\"); replace it with If-Match"),
        )),
        (Expect::Nothing, _) if create => Ok(()),
        (Expect::Nothing, _) => Err(Problem::version_required(format!(
            "send If-Match with the ETag of the {what} read last"
        ))),
        (Expect::Any, Some(_)) => Ok(()),
        (Expect::OneOf(tags), Some(v)) if tags.contains(&v.to_string()) => Ok(()),
        _ => Err(mismatch()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(offset: i64) -> Option<Version> {
        Some(Version {
            partition: 1,
            offset,
        })
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("if-match", value.parse().unwrap());
        h
    }

    #[test]
    fn a_write_names_the_version_it_replaces() {
        assert_eq!(etag(v(7).unwrap()), "\"1-7\"");
        let seen = if_match(&headers("\"1-7\""));
        assert!(check(&seen, v(7), false, "webhook").is_ok());
        assert_eq!(
            check(&seen, v(8), false, "webhook").unwrap_err().status,
            412
        );
        assert_eq!(
            check(&seen, None, false, "webhook").unwrap_err().status,
            412
        );
        assert!(check(&if_match(&headers("W/\"1-6\", \"1-7\"")), v(7), false, "w").is_ok());
        let weak = check(&if_match(&headers("W/\"1-7\"")), v(7), false, "w");
        assert_eq!(weak.unwrap_err().status, 412, "a weak tag never matches");
        assert!(check(&if_match(&headers("*")), v(3), false, "w").is_ok());
        assert_eq!(
            check(&if_match(&headers("*")), None, false, "w")
                .unwrap_err()
                .status,
            412
        );
    }

    #[test]
    fn without_if_match_a_write_creates_or_is_refused() {
        let none = if_match(&HeaderMap::new());
        assert!(check(&none, None, true, "webhook").is_ok());
        assert_eq!(check(&none, v(1), true, "webhook").unwrap_err().status, 409);
        assert_eq!(
            check(&none, v(1), false, "webhook").unwrap_err().status,
            428
        );
    }
}
