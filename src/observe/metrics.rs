//! Prometheus metrics, all named `feedback_webhooks_*`.
//!
//! Every label has a bounded set of values: topics and partitions (fixed by the deployment),
//! outcome statuses and reasons (fixed by the SPEC), HTTP status classes, breaker states.
//! Nothing is labelled by org, sandbox, campaign or event: a platform has as many tenants as
//! it has customers, and one series per tenant would grow the scrape without bound. The
//! one per-endpoint series, `circuit_open`, is capped at [`MAX_OPEN_SERIES`] endpoints and
//! rebuilt on every scrape, so it names the endpoints an operator must look at without
//! growing with the number of tenants; the full list is in the log.

use std::sync::{Mutex, OnceLock};

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// At most this many endpoints are named by `feedback_webhooks_circuit_open`.
pub const MAX_OPEN_SERIES: usize = 20;

type Hook = Box<dyn Fn(&Metrics) + Send + Sync>;

pub struct Metrics {
    registry: Registry,
    /// Records read, by topic (input topics and retry tiers).
    pub events_consumed: IntCounterVec,
    /// Outcomes written, by status and reason (`none` when there is no reason).
    pub outcomes: IntCounterVec,
    /// Delivery attempts by result: `2xx`…`5xx`, `timeout`, `network`, `blocked`.
    pub attempts: IntCounterVec,
    /// Duration of delivery attempts that reached the endpoint or timed out.
    pub attempt_seconds: Histogram,
    /// Parked events this instance holds, waiting for their next attempt.
    pub retries_pending: IntGauge,
    /// Events parked onto a retry tier, by tier.
    pub retries_parked: IntCounterVec,
    /// Records the broker refused for good, by what was done instead (`outcome_reduced`,
    /// `outcome_dropped`, `park_refused`).
    pub record_write_failures: IntCounterVec,
    /// Transactions (exactly once) by how they ended (`committed`, `aborted`).
    pub transactions: IntCounterVec,
    /// Times the processor's parts were started again in process after a fault, by the
    /// fault's kind (`commit`, `revocation`, `task_failed`, `producer`, `stuck`).
    pub recoveries: IntCounterVec,
    /// Administration API requests, by method, route pattern and status code.
    pub admin_requests: IntCounterVec,
    /// Administration API authentications refused, by reason (`no_token`,
    /// `unknown_token`, `rate_limited`).
    pub admin_auth_failures: IntCounterVec,
    /// HTTP requests to webhooks under way.
    pub deliveries_in_flight: IntGauge,
    /// Circuit breakers (one per host, one per webhook) by state (`closed`, `open`,
    /// `half_open`).
    pub circuit_breakers: IntGaugeVec,
    /// 1 for each host (origin) with a breaker, its own or a webhook's, that is open or
    /// half-open (at most [`MAX_OPEN_SERIES`]).
    pub circuit_open: IntGaugeVec,
    /// Events waiting in memory for their host, and their payload bytes.
    pub deliveries_queued: IntGauge,
    pub deliveries_queued_bytes: IntGauge,
    /// The hosts' adaptive concurrency limits: `min`, `median` and `max` over known hosts.
    pub host_concurrency_limit: IntGaugeVec,
    /// The same over the webhooks on them.
    pub webhook_concurrency_limit: IntGaugeVec,
    /// Config records read, by result: `applied`, `deleted`, `refused`.
    pub config_records: IntCounterVec,
    /// Records in the local config cache (RocksDB's estimate).
    pub config_cache_entries: IntGauge,
    /// Messages behind the partition's end, by consumer (`input`, `retry`), topic, partition.
    pub consumer_lag: IntGaugeVec,
    /// Rebalance callbacks, by consumer and kind (`assign`, `revoke`).
    pub rebalances: IntCounterVec,
    /// Webhooks tracked by this instance's health tracker, by state (`healthy`,
    /// `failing`, `disabled`): counts, never one series per webhook.
    pub webhooks_by_health: IntGaugeVec,
    /// Operational events written, by type (`webhook.failing`, …).
    pub operational_events: IntCounterVec,
    /// Operational events sent to notification endpoints, by result (`delivered`,
    /// `failed`, `dropped`: over an org's queue) and requests to them that failed.
    pub notifications: IntCounterVec,
    /// 1 while the processor is ready (its `/readyz` answers 200), else 0.
    pub ready: IntGauge,
    /// Time from an event's first handling to its terminal outcome (its retries
    /// included): the outcome lag.
    pub outcome_seconds: Histogram,
    hooks: Mutex<Vec<Hook>>,
}

/// The process's metrics (registered on first use).
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The metric `made`, registered. Start-up only: a bad name or a clash is a programming error.
fn registered<M: Collector + Clone + 'static>(
    registry: &Registry,
    name: &str,
    made: prometheus::Result<M>,
) -> M {
    let metric = made.unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    metric
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(
        registry,
        name,
        IntCounterVec::new(Opts::new(name, help), labels),
    )
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(
        registry,
        name,
        IntGaugeVec::new(Opts::new(name, help), labels),
    )
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    registered(registry, name, IntGauge::new(name, help))
}

/// How transactions ended, and the faults the processor recovered from in process.
fn fault_counters(r: &Registry) -> [IntCounterVec; 2] {
    [
        counter(
            r,
            "transactions_total",
            "Transactions of outcomes, parked records and input offsets, by how they ended",
            &["result"],
        ),
        counter(
            r,
            "recoveries_total",
            "Times the processor's parts were started again in process after a fault, by kind",
            &["cause"],
        ),
    ]
}

fn attempt_histogram(r: &Registry) -> Histogram {
    let name = "delivery_attempt_duration_seconds";
    let buckets = vec![
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let opts = HistogramOpts::new(name, "Duration of webhook delivery attempts").buckets(buckets);
    registered(r, name, Histogram::with_opts(opts))
}

fn outcome_histogram(r: &Registry) -> Histogram {
    let name = "outcome_seconds";
    let buckets = vec![
        0.01, 0.05, 0.25, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0, 14_400.0, 86_400.0,
    ];
    let opts = HistogramOpts::new(
        name,
        "Time from an event's first handling to its terminal outcome, retries included",
    )
    .buckets(buckets);
    registered(r, name, Histogram::with_opts(opts))
}

impl Metrics {
    // Registration only fails on a programming error (a bad or repeated name), caught by the
    // unit test below: start-up may panic then.
    fn new() -> Self {
        let r = Registry::new_custom(Some("feedback_webhooks".into()), None)
            .unwrap_or_else(|e| panic!("metrics registry: {e}"));
        let [transactions, recoveries] = fault_counters(&r);
        Metrics {
            events_consumed: counter(
                &r,
                "events_consumed_total",
                "Records read, by topic",
                &["topic"],
            ),
            outcomes: counter(
                &r,
                "outcomes_total",
                "Outcomes written, by status and reason",
                &["status", "reason"],
            ),
            attempts: counter(
                &r,
                "delivery_attempts_total",
                "Webhook delivery attempts, by result class",
                &["class"],
            ),
            attempt_seconds: attempt_histogram(&r),
            retries_pending: gauge(
                &r,
                "retries_pending",
                "Parked events held by this instance, waiting for their next attempt",
            ),
            retries_parked: counter(
                &r,
                "retries_parked_total",
                "Events parked onto a retry tier, by tier",
                &["tier"],
            ),
            record_write_failures: counter(
                &r,
                "record_write_failures_total",
                "Records the broker refused for good, by what was done instead",
                &["action"],
            ),
            transactions,
            recoveries,
            admin_requests: counter(
                &r,
                "admin_requests_total",
                "Administration API requests, by method, route and status",
                &["method", "route", "status"],
            ),
            admin_auth_failures: counter(
                &r,
                "admin_auth_failures_total",
                "Administration API authentications refused, by reason",
                &["reason"],
            ),
            deliveries_in_flight: gauge(&r, "deliveries_in_flight", "Webhook requests under way"),
            circuit_breakers: gauge_vec(
                &r,
                "circuit_breakers",
                "Circuit breakers (hosts' and webhooks') known to this instance, by state",
                &["state"],
            ),
            circuit_open: gauge_vec(
                &r,
                "circuit_open",
                "1 per host (origin) with an open or half-open breaker, its own or a webhook's; at most 20",
                &["endpoint"],
            ),
            deliveries_queued: gauge(
                &r,
                "deliveries_queued",
                "Events waiting in memory for a free request slot of their host",
            ),
            deliveries_queued_bytes: gauge(
                &r,
                "deliveries_queued_bytes",
                "Payload bytes of the events waiting for their host",
            ),
            host_concurrency_limit: gauge_vec(
                &r,
                "host_concurrency_limit",
                "Adaptive concurrency limits of the known hosts: min, median, max",
                &["stat"],
            ),
            webhook_concurrency_limit: gauge_vec(
                &r,
                "webhook_concurrency_limit",
                "Adaptive concurrency limits of the known webhooks: min, median, max",
                &["stat"],
            ),
            config_records: counter(
                &r,
                "config_records_total",
                "Config-topic records read, by result",
                &["result"],
            ),
            config_cache_entries: gauge(
                &r,
                "config_cache_entries",
                "Webhook and campaign records in the local config cache (estimate)",
            ),
            consumer_lag: gauge_vec(
                &r,
                "consumer_lag",
                "Messages between the committed position and the partition's end",
                &["consumer", "topic", "partition"],
            ),
            rebalances: counter(
                &r,
                "rebalances_total",
                "Consumer-group rebalance callbacks, by consumer and kind",
                &["consumer", "kind"],
            ),
            webhooks_by_health: gauge_vec(
                &r,
                "webhooks",
                "Webhooks tracked by this instance's health tracker, by health state",
                &["state"],
            ),
            operational_events: counter(
                &r,
                "operational_events_total",
                "Operational events written, by type",
                &["type"],
            ),
            notifications: counter(
                &r,
                "notifications_total",
                "Operational events sent to notification endpoints, by result (delivered, failed, dropped, retried: a request that failed and will be tried again)",
                &["result"],
            ),
            ready: gauge(&r, "ready", "1 while the processor is ready, else 0"),
            outcome_seconds: outcome_histogram(&r),
            registry: r,
            hooks: Mutex::new(Vec::new()),
        }
    }

    /// Registers work to run before each scrape (gauges computed from live state).
    pub fn on_scrape(&self, hook: impl Fn(&Metrics) + Send + Sync + 'static) {
        if let Ok(mut hooks) = self.hooks.lock() {
            hooks.push(Box::new(hook));
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        if let Ok(hooks) = self.hooks.lock() {
            for hook in hooks.iter() {
                hook(self);
            }
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The class of an attempt's result for `delivery_attempts_total`.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_with_the_prefix() {
        let m = metrics();
        m.events_consumed.with_label_values(&["t"]).inc();
        m.outcomes.with_label_values(&["delivered", "none"]).inc();
        m.attempts.with_label_values(&["2xx"]).inc();
        m.attempt_seconds.observe(0.1);
        m.circuit_breakers.with_label_values(&["open"]).set(1);
        m.circuit_open
            .with_label_values(&["https://a.example:443"])
            .set(1);
        m.deliveries_queued.set(2);
        m.host_concurrency_limit.with_label_values(&["max"]).set(32);
        m.config_records.with_label_values(&["applied"]).inc();
        m.consumer_lag
            .with_label_values(&["input", "t", "0"])
            .set(3);
        m.rebalances.with_label_values(&["input", "assign"]).inc();
        m.retries_parked.with_label_values(&["1s"]).inc();
        m.recoveries.with_label_values(&["commit"]).inc();
        let text = m.render();
        for name in [
            "feedback_webhooks_events_consumed_total{topic=\"t\"} ",
            "feedback_webhooks_outcomes_total{reason=\"none\",status=\"delivered\"} ",
            "feedback_webhooks_delivery_attempts_total{class=\"2xx\"} ",
            "feedback_webhooks_delivery_attempt_duration_seconds_bucket{le=\"0.25\"} ",
            "feedback_webhooks_retries_pending ",
            "feedback_webhooks_deliveries_in_flight ",
            "feedback_webhooks_circuit_breakers{state=\"open\"} ",
            "feedback_webhooks_config_records_total{result=\"applied\"} ",
            "feedback_webhooks_config_cache_entries ",
            "feedback_webhooks_recoveries_total{cause=\"commit\"} ",
            "feedback_webhooks_consumer_lag{consumer=\"input\",partition=\"0\",topic=\"t\"} 3",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }

    #[test]
    fn the_shipped_alert_rules_name_only_exported_metrics() {
        let m = metrics();
        m.webhooks_by_health.with_label_values(&["failing"]).set(1);
        m.operational_events
            .with_label_values(&["webhook.disabled"])
            .inc();
        m.outcome_seconds.observe(0.2);
        m.notifications.with_label_values(&["delivered"]).inc();
        m.transactions.with_label_values(&["aborted"]).inc();
        m.consumer_lag
            .with_label_values(&["input", "t", "0"])
            .set(3);
        m.ready.set(1);
        let text = m.render();
        let rules = include_str!("../../deploy/prometheus/alerts.yaml");
        let mut named = 0;
        for (at, _) in rules.match_indices("feedback_webhooks_") {
            let name: String = rules[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                text.contains(&format!("\n{name}{{")) || text.contains(&format!("\n{name} ")),
                "{name} is not exported"
            );
            named += 1;
        }
        assert!(named >= 6, "{named}");
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(429), "4xx");
        assert_eq!(status_class(503), "5xx");
    }
}
