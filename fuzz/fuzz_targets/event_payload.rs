//! Any bytes as an input record: parsing never panics, and a valid event that matching
//! would deliver always yields a payload that matches the payload schema.
#![no_main]

#[path = "../../src/domain/mod.rs"]
#[allow(dead_code)]
mod domain;
#[path = "../../src/schema.rs"]
#[allow(dead_code)]
mod schema;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = domain::event::parse(Some(data), 1 << 20) else {
        let _ = domain::event::identity_of_invalid(Some(data), 1 << 20);
        return;
    };
    let (Some(channel), Some(status)) = (event.channel(), event.feedback_status()) else {
        return;
    };
    let body = domain::payload::to_body(&domain::payload::build(&event, channel, status));
    let json: serde_json::Value = serde_json::from_slice(&body).expect("payload is JSON");
    // The channel check belongs to matching; only email and sms are ever delivered.
    if channel == "email" || channel == "sms" {
        if event.execution().message_type.is_some() && event.campaign_id().is_some() {
            schema::validate(schema::Kind::Payload, &json).expect("payload matches its schema");
        }
    }
});
