//! Delivers one event: attempts by the retry policy until success or a final answer,
//! re-reading the webhook and campaign before every retry so edits and deletes apply.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, warn};

use super::sender::Sender;
use crate::domain::config::{self, Rules, WebhookConfig};
use crate::domain::event::FeedbackEvent;
use crate::domain::matching::Decision;
use crate::domain::outcome::{Attempt, Reason, WebhookRef};
use crate::domain::retry::{classify, AttemptResult, RetryPolicy, Verdict};
use crate::join::{join, ConfigStore, Joined};

/// What a delivery ended with: `reason` is `None` when delivered.
#[derive(Debug)]
pub struct Delivered {
    pub reason: Option<Reason>,
    pub webhook: Option<WebhookRef>,
    pub attempts: Vec<Attempt>,
}

#[derive(Clone)]
pub struct Deliverer {
    sender: Sender,
    policy: RetryPolicy,
    store: ConfigStore,
    rules: Rules,
}

fn webhook_ref(w: &WebhookConfig) -> WebhookRef {
    WebhookRef {
        name: w.name.clone(),
        url: w.url.clone(),
    }
}

impl Deliverer {
    pub fn new(sender: Sender, policy: RetryPolicy, store: ConfigStore, rules: Rules) -> Self {
        Deliverer {
            sender,
            policy,
            store,
            rules,
        }
    }

    /// Delivers `body` for `event`, starting with the webhook that matching accepted.
    pub async fn deliver(
        &self,
        event: &FeedbackEvent,
        first: WebhookConfig,
        body: Bytes,
    ) -> Delivered {
        let started = Instant::now();
        let mut attempts = Vec::new();
        let mut webhook = first;
        loop {
            // Re-validated at use: a record stored under older rules must not slip through.
            if config::check_url(&webhook.url, self.rules).is_err() {
                return self.end(Some(Reason::ConfigInvalid), &webhook, attempts);
            }
            let report = match self
                .sender
                .send(
                    &webhook.url,
                    webhook.headers.as_ref(),
                    &event.id,
                    body.clone(),
                )
                .await
            {
                Ok(report) => report,
                Err(e) => {
                    warn!(event_id = event.id, error = %e, "webhook headers cannot be sent");
                    return self.end(Some(Reason::ConfigInvalid), &webhook, attempts);
                }
            };
            let retry_after = match &report.result {
                AttemptResult::Response { retry_after, .. } => *retry_after,
                _ => None,
            };
            let verdict = classify(&report.result);
            debug!(event_id = event.id, status = ?report.attempt.http_status, error = ?report.attempt.error, ?verdict, "attempt");
            attempts.push(report.attempt);
            match verdict {
                Verdict::Success => return self.end(None, &webhook, attempts),
                Verdict::Fail => {
                    let reason = match report.result {
                        AttemptResult::Blocked => Reason::DestinationBlocked,
                        _ => Reason::HttpStatus,
                    };
                    return self.end(Some(reason), &webhook, attempts);
                }
                Verdict::Retry => {}
            }
            let delay = self.policy.next_delay(
                attempts.len(),
                started.elapsed(),
                retry_after,
                rand::random::<f64>(),
            );
            let Some(delay) = delay else {
                return self.end(Some(Reason::RetriesExhausted), &webhook, attempts);
            };
            tokio::time::sleep(delay).await;
            match join(&self.store, event) {
                Ok(Joined {
                    webhook: Some(current),
                    decision: Decision::Deliver,
                }) => webhook = current,
                Ok(Joined {
                    decision: Decision::Skip(reason),
                    ..
                }) => {
                    // Config changed so that this event is no longer delivered.
                    return self.end(Some(reason), &webhook, attempts);
                }
                Ok(Joined { webhook: None, .. }) => {
                    return self.end(Some(Reason::NoWebhook), &webhook, attempts);
                }
                Err(e) => {
                    warn!(event_id = event.id, error = %e, "config cache read failed; retrying later");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn end(
        &self,
        reason: Option<Reason>,
        webhook: &WebhookConfig,
        attempts: Vec<Attempt>,
    ) -> Delivered {
        Delivered {
            reason,
            webhook: Some(webhook_ref(webhook)),
            attempts,
        }
    }
}
