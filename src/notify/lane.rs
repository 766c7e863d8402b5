//! One org's notifications, one after another: each sent to the org's endpoint as it is
//! at each attempt (an edit or a delete applies to pending retries, as for webhooks), with
//! the deployment's retry schedule. A lane waits out its own retries, so a failing
//! endpoint holds back its org's notifications only.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, warn};

use crate::delivery::sender::DeliveryIds;
use crate::delivery::{auth::Auth, Senders};
use crate::domain::config::{self, ConfigKey, ConfigRecord, NotificationConfig};
use crate::domain::notification::{self, NotSent};
use crate::domain::operational::OperationalEvent;
use crate::domain::retry::{verdict, AttemptResult, RetryPolicy, Verdict};
use crate::domain::time::unix_seconds;
use crate::join::ConfigStore;
use crate::observe::metrics::metrics;

/// An operational event to send, and where it was read.
pub struct Job {
    pub partition: i32,
    pub offset: i64,
    pub event: OperationalEvent,
}

/// What every lane shares: the config cache, the HTTP client (pools of its own, apart from
/// feedback deliveries'), the secrets, the schedule, and the cap on requests under way.
pub struct Shared {
    pub store: ConfigStore,
    pub senders: Senders,
    pub auth: Auth,
    pub policy: RetryPolicy,
    pub permits: Semaphore,
}

/// How a notification ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Delivered,
    Failed,
    NotSent(NotSent),
}

/// Sends `org`'s jobs in order, telling `done` each one's coordinates when it has ended.
pub async fn run(
    org: String,
    mut jobs: mpsc::Receiver<Job>,
    shared: Arc<Shared>,
    done: mpsc::UnboundedSender<(String, i32, i64)>,
) {
    while let Some(job) = jobs.recv().await {
        let ended = send(&shared, &org, &job.event).await;
        let result = match ended {
            Ended::Delivered => Some("delivered"),
            Ended::Failed => Some("failed"),
            Ended::NotSent(_) => None,
        };
        if let Some(result) = result {
            metrics().notifications.with_label_values(&[result]).inc();
        }
        debug!(org = %org, id = %job.event.id, ?ended, "notification ended");
        if done.send((org.clone(), job.partition, job.offset)).is_err() {
            return;
        }
    }
}

/// The org's notification endpoint record, if it has a valid one.
fn endpoint(store: &ConfigStore, org: &str) -> Option<NotificationConfig> {
    let stored = store.raw(&ConfigKey::notification(org)).ok()??;
    let json: serde_json::Value = serde_json::from_slice(&stored.value).ok()?;
    match config::typed(&json) {
        Ok(ConfigRecord::Notification(n)) => Some(n),
        _ => None,
    }
}

async fn send(shared: &Shared, org: &str, event: &OperationalEvent) -> Ended {
    let body = match serde_json::to_vec(&notification::body(event)) {
        Ok(bytes) => Bytes::from(bytes),
        Err(_) => return Ended::Failed,
    };
    let started = Instant::now();
    let mut attempts = 0usize;
    loop {
        let current = endpoint(&shared.store, org);
        if let Err(why) = notification::route(current.as_ref(), event) {
            return Ended::NotSent(why);
        }
        let Some(endpoint) = current else {
            return Ended::NotSent(NotSent::NoEndpoint);
        };
        let at = SystemTime::now();
        let security = shared
            .auth
            .prepare_notification(&endpoint)
            .and_then(|p| shared.auth.headers(&p, &event.id, unix_seconds(at), &body));
        let security = match security {
            Ok(headers) => headers,
            Err(e) => {
                // A config problem (a secret that cannot be read): retrying cannot help.
                warn!(org = %org, id = %event.id, error = %e, "notification not sent: the endpoint's settings cannot be applied");
                return Ended::Failed;
            }
        };
        let report = {
            let _permit = shared.permits.acquire().await;
            shared
                .senders
                .for_org(org)
                .send(
                    &endpoint.url,
                    endpoint.headers.as_ref(),
                    DeliveryIds {
                        webhook_id: &event.id,
                        replay_id: None,
                    },
                    at,
                    &security,
                    body.clone(),
                )
                .await
        };
        attempts += 1;
        let report = match report {
            Ok(report) => report,
            Err(e) => {
                warn!(org = %org, id = %event.id, error = %e, "notification not sent: the endpoint's headers cannot be sent");
                return Ended::Failed;
            }
        };
        let retry_after = match &report.result {
            AttemptResult::Response { retry_after, .. } => *retry_after,
            _ => None,
        };
        match verdict(&report.result, report.signal) {
            Verdict::Success => return Ended::Delivered,
            Verdict::Fail => {
                warn!(org = %org, id = %event.id, status = ?report.attempt.http_status, error = ?report.attempt.error, "notification failed; not retried");
                return Ended::Failed;
            }
            Verdict::Retry => {
                let next = shared.policy.next_delay(
                    attempts,
                    started.elapsed(),
                    retry_after,
                    rand::random::<f64>(),
                );
                let Some(delay) = next else {
                    warn!(org = %org, id = %event.id, attempts, status = ?report.attempt.http_status, error = ?report.attempt.error, "notification failed: retries exhausted");
                    return Ended::Failed;
                };
                metrics()
                    .notifications
                    .with_label_values(&["retried"])
                    .inc();
                debug!(org = %org, id = %event.id, attempts, delay_ms = delay.as_millis() as u64, "notification failed; trying again");
                tokio::time::sleep(delay.max(Duration::from_millis(10))).await;
            }
        }
    }
}
