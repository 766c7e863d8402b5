//! `receiver`: a local HTTPS endpoint that prints every request as one JSON line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::domain::time::rfc3339_millis;
use crate::receiver::{bind, serve, LocalCa, Received, ReceiverError, Reply};

/// `names`: extra DNS names for the receiver's certificate (besides localhost and loopback),
/// e.g. its service name in docker-compose.
pub async fn run(
    listen: SocketAddr,
    ca_out: &Path,
    status: u16,
    names: &[String],
) -> Result<(), ReceiverError> {
    let mut all = vec!["localhost", "127.0.0.1", "::1"];
    all.extend(names.iter().map(String::as_str));
    let ca = LocalCa::generate(&all)?;
    std::fs::write(ca_out, &ca.ca_pem)?;
    let (listener, local) = bind(listen).await?;
    eprintln!(
        "receiver: listening on https://{local}/ (trust {} to verify it)",
        ca_out.display()
    );
    let handler = Arc::new(move |r: &Received| {
        print_request(r);
        Reply::status(status)
    });
    serve(listener, ca.tls, handler).await;
    Ok(())
}

fn print_request(r: &Received) {
    let body: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&r.body).into_owned()));
    let headers: serde_json::Map<String, Value> = r
        .headers
        .iter()
        .map(|(n, v)| {
            // Never print credentials a sender may have attached.
            let shown = if n == "authorization" || n == "webhook-signature" {
                "[redacted]"
            } else {
                v
            };
            (n.clone(), Value::String(shown.to_owned()))
        })
        .collect();
    let line = json!({
        "receivedAt": rfc3339_millis(r.at),
        "method": r.method,
        "path": r.path,
        "headers": headers,
        "body": body,
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
