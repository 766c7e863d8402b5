//! Any key and bytes as a config record: validation never panics, and whatever it accepts
//! passes the record's schema and names a key that agrees with its body.
#![no_main]

#[path = "../../src/domain/mod.rs"]
#[allow(dead_code)]
mod domain;
#[path = "../../src/schema.rs"]
#[allow(dead_code)]
mod schema;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first line is the key, the rest the value ("-" alone: a tombstone).
    let (key, value) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"-"[..]),
    };
    let Ok(key) = std::str::from_utf8(key) else {
        return;
    };
    let value = (value != b"-").then_some(value);
    for allow_http in [false, true] {
        let rules = domain::config::Rules { allow_http };
        if let Ok(change) = domain::config::validate(key, value, rules) {
            assert_eq!(change.key.to_string(), key);
            if let Some(bytes) = value {
                let json: serde_json::Value =
                    serde_json::from_slice(bytes).expect("accepted records are JSON");
                let kind = match json["kind"].as_str() {
                    Some("webhook") => schema::Kind::Webhook,
                    _ => schema::Kind::Campaign,
                };
                schema::validate(kind, &json).expect("accepted records match their schema");
            }
        }
    }
});
