//! Errors as `application/problem+json` (RFC 9457), with the `errors` list of the SPEC for
//! validation failures. Every answer that is not a success is one of these.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::schema::Violation;

#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub status: StatusCode,
    pub title: &'static str,
    pub detail: String,
    pub errors: Vec<Violation>,
}

impl Problem {
    pub fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            title,
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "Not found", detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "Bad request", detail)
    }

    /// A write refused: each offending field (JSON pointer) and why.
    pub fn invalid(errors: Vec<Violation>) -> Self {
        Problem {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            title: "Invalid record",
            detail: format!("{} field(s) refused", errors.len()),
            errors,
        }
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, "Forbidden", detail)
    }

    /// The request is well-formed but the resource's state refuses it (409).
    pub fn conflict(title: &'static str, detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::CONFLICT, title, detail)
    }

    /// The record changed since the caller read it (412).
    pub fn version_mismatch(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::PRECONDITION_FAILED, "Version mismatch", detail)
    }

    /// A replace or delete must name the version it replaces (428).
    pub fn version_required(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::PRECONDITION_REQUIRED,
            "If-Match required",
            detail,
        )
    }

    /// A per-caller or per-webhook limit was reached (429).
    pub fn too_many(title: &'static str, detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::TOO_MANY_REQUESTS, title, detail)
    }

    /// What was asked for existed once and is no longer kept (410).
    pub fn gone(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::GONE, "Gone", detail)
    }

    /// Understood, but cannot be done with what the record says (422 without field list).
    pub fn unprocessable(title: &'static str, detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, title, detail)
    }

    pub fn to_json(&self) -> Value {
        let mut body = json!({
            "type": "about:blank",
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if !self.errors.is_empty() {
            body["errors"] = self
                .errors
                .iter()
                .map(|v| json!({ "pointer": v.field, "detail": v.message }))
                .collect();
        }
        body
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.to_json().to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_problems_list_each_field() {
        let p = Problem::invalid(vec![Violation {
            field: "/headers/Host".into(),
            message: "reserved".into(),
        }]);
        assert_eq!(
            p.to_json(),
            json!({"type": "about:blank", "title": "Invalid record", "status": 422,
                   "detail": "1 field(s) refused",
                   "errors": [{"pointer": "/headers/Host", "detail": "reserved"}]})
        );
        let r = Problem::not_found("x").into_response();
        assert_eq!(r.status(), 404);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
