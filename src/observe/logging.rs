//! The log filter: the operator's directives (`log.filter` or `RUST_LOG`), with the audit
//! lines (target `feedback_webhooks::audit`: config writes, state-changing requests,
//! console sign-in and sign-out) always kept, whatever the directives say.

use tracing_subscriber::EnvFilter;

/// The target of audit lines.
pub const AUDIT: &str = "feedback_webhooks::audit";

/// `directives`, plus the audit target at `info`. Unparseable directives are skipped, as
/// `EnvFilter::new` does.
pub fn log_filter(directives: &str) -> EnvFilter {
    let audit = format!("{AUDIT}=info")
        .parse()
        .unwrap_or_else(|_| tracing_subscriber::filter::Directive::from(tracing::Level::INFO));
    EnvFilter::new(directives).add_directive(audit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn audit_lines_pass_a_filter_that_drops_everything_else() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(log_filter("error"))
            .with_writer(move || Writer(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "feedback_webhooks::audit", who = "ci", "config write");
            tracing::info!("an ordinary line");
        });
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert!(text.contains("config write"), "{text}");
        assert!(!text.contains("an ordinary line"), "{text}");
    }

    struct Writer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Writer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
