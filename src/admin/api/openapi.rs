//! The API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations and the shapes of `shapes.rs`, served at `/api/v1/openapi.json`.
//!
//! The shapes describe what the handlers answer; the records' full rules are the JSON
//! Schemas in `schemas/` (the processor's), which every write is validated against. Every
//! operation also answers errors as `application/problem+json` (the `default` response).

use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::shapes::{FieldError, Problem};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "feedback-webhooks administration API",
        description = "Feedback webhooks of each IMS org + sandbox and their health, operational events, campaign opt-ins, test sends, the delivery log and redelivery. Writes are published to the config topic; see the README's \"Administration API\"."
    ),
    paths(
        super::webhooks::inventory,
        super::webhooks::operational_events,
        super::webhooks::get,
        super::webhooks::put,
        super::webhooks::delete,
        super::webhooks::enable,
        super::webhooks::disable,
        super::webhooks::reenable,
        super::webhooks::send,
        super::deliveries::list,
        super::deliveries::one,
        super::deliveries::window,
        super::deliveries::progress,
        super::campaigns::list,
        super::campaigns::get,
        super::campaigns::put,
        super::campaigns::delete,
        super::notification::get,
        super::notification::put,
        super::notification::delete,
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&Conventions),
    tags(
        (name = "webhooks", description = "The webhook of an org + sandbox"),
        (name = "deliveries", description = "The delivery log and redelivery"),
        (name = "campaigns", description = "Campaign opt-ins"),
        (name = "notifications", description = "An org's notification endpoint: its operational events, signed"),
    )
)]
pub struct ApiDoc;

/// What every operation shares: bearer tokens, and errors as problem+json.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.responses.insert(
            "Problem".into(),
            ResponseBuilder::new()
                .description("An error, as application/problem+json (RFC 9457)")
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
                .into(),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                operation
                    .responses
                    .responses
                    .insert("default".into(), Ref::from_response_name("Problem").into());
            }
        }
    }
}

/// The document as served.
pub fn document() -> Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_errors_as_problems() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        let webhook = "/api/v1/orgs/{org}/sandboxes/{sandbox}/webhook";
        for (path, methods) in [
            ("/api/v1/orgs/{org}/webhooks", &["get"][..]),
            (webhook, &["get", "put", "delete"][..]),
            (&format!("{webhook}/enable"), &["post"][..]),
            (&format!("{webhook}/disable"), &["post"][..]),
            (&format!("{webhook}/reenable"), &["post"][..]),
            (&format!("{webhook}/test"), &["post"][..]),
            (&format!("{webhook}/deliveries"), &["get"][..]),
            (
                &format!("{webhook}/deliveries/{{eventId}}/redeliver"),
                &["post"][..],
            ),
            (&format!("{webhook}/redeliver"), &["post"][..]),
            (&format!("{webhook}/redeliver/{{replayId}}"), &["get"][..]),
            (
                "/api/v1/orgs/{org}/sandboxes/{sandbox}/campaigns",
                &["get"][..],
            ),
            (
                "/api/v1/orgs/{org}/sandboxes/{sandbox}/campaigns/{campaign}",
                &["get", "put", "delete"][..],
            ),
        ] {
            for method in methods {
                let operation = &paths[path][*method];
                assert!(operation.is_object(), "{method} {path} is not documented");
                assert_eq!(
                    operation["responses"]["default"]["$ref"],
                    "#/components/responses/Problem"
                );
            }
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
