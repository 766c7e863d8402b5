//! Settings: defaults, then a TOML file, then `FW_`-prefixed environment variables
//! (`__` separates levels: `FW_KAFKA__BOOTSTRAP_SERVERS=host:9092`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::domain::address::AddressPolicy;
use crate::domain::breaker::BreakerPolicy;
use crate::domain::concurrency::LimitPolicy;
use crate::domain::config::{PolicyBounds, Rules};
use crate::domain::host_schedule::SchedulePolicy;
use crate::domain::retry::RetryPolicy;
use crate::domain::secret::SealingKey;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("settings: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("settings: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub store: StoreSettings,
    pub delivery: DeliverySettings,
    pub secrets: SecretSettings,
    pub log: LogSettings,
    pub http: HttpSettings,
    pub shutdown: ShutdownSettings,
    pub replay: ReplaySettings,
    pub health: HealthSettings,
    pub admin: AdminSettings,
    /// `FW_*` environment variables that name no setting: ignored (a platform or wrapper
    /// may set its own), and reported so that a misspelt setting is noticed.
    #[serde(skip)]
    pub ignored_env: Vec<String>,
}

/// `feedback-webhooks admin`: the administration API (its own process).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Address of the API's listener.
    pub listen: String,
    /// PEM certificate chain and private key of the listener (TLS).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Local use only: serve plain HTTP when no certificate is given. Logged loudly.
    pub allow_plain_http: bool,
    /// RocksDB folder of the API's own config cache (not shared with a processor).
    pub store_path: PathBuf,
    /// The operator port (`/metrics`, `/healthz`, `/readyz`), plain HTTP and
    /// unauthenticated: loopback by default; empty: off.
    pub metrics_listen: String,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Connections the API holds at once; more wait to be accepted. Each also has
    /// deadlines: the TLS handshake 10 s, a request's header 15 s (also the idle limit of a
    /// keep-alive connection).
    pub max_connections: usize,
    /// Failed authentications one client may make per minute; beyond, 429 (a valid token
    /// is always served).
    pub auth_failures_per_minute: u32,
    /// Proxies (load balancers) in front of the API whose `X-Forwarded-For` is trusted: the
    /// client is the address the outermost of them saw. 0: the connection's peer.
    pub trusted_proxy_hops: usize,
    /// Test sends one webhook may make per minute; beyond, 429.
    pub test_sends_per_minute: usize,
    /// Single-event redeliveries one webhook may ask for per minute; beyond, 429.
    pub redeliveries_per_minute: usize,
    /// Quotas per tenant: webhooks and campaign opt-ins an org may hold (then 422), config
    /// writes per token and minute and test sends under way per org (then 429).
    pub max_webhooks_per_org: usize,
    pub max_campaigns_per_org: usize,
    pub writes_per_minute: usize,
    pub max_test_sends_in_flight_per_org: usize,
    /// Window redeliveries running at once on one instance (one per webhook; then 429).
    pub max_window_redeliveries: usize,
    /// Reads that scan the stores (lists, delivery-log pages, the inventory) under way at
    /// once per org (then 429) and in all (more wait); they run off the async workers.
    pub reads_in_flight_per_org: usize,
    pub max_reads_in_flight: usize,
    /// RocksDB folder of the delivery log (the outcome topic, indexed per webhook).
    pub deliveries_path: PathBuf,
    /// How long the delivery log keeps an outcome, and how many it keeps per webhook.
    pub delivery_retention_days: u64,
    pub deliveries_per_webhook: usize,
    /// The API's callers: `[[admin.tokens]]` with `name`, `hash` (from
    /// `feedback-webhooks admin token`), `scope` (`operator`, `{imsOrg}` or
    /// `{imsOrg}/{sandboxId}`) and `right` (`read` or `write`).
    pub tokens: Vec<TokenEntry>,
    /// A TOML file of more `[[tokens]]` entries (same fields), e.g. mounted from a secret
    /// store; read at start.
    pub tokens_file: Option<PathBuf>,
}

/// What a token may do within its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Right {
    Read,
    Write,
}

/// One configured token, as the operator writes it in the settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who the token belongs to: logged with every write and published as `updatedBy`.
    pub name: String,
    /// The token's digest, `$fwa-sha256${id}${sha256}` (`feedback-webhooks admin token`
    /// makes one); an Argon2id PHC string for a token made before tokens named their entry.
    pub hash: String,
    /// `operator` (every org), `{imsOrg}`, or `{imsOrg}/{sandboxId}`.
    pub scope: String,
    pub right: Right,
}

/// The file named by `admin.tokens_file`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
}

impl AdminSettings {
    /// Every configured token: `admin.tokens` and those of `admin.tokens_file`.
    pub fn all_tokens(&self) -> Result<Vec<TokenEntry>, SettingsError> {
        let mut all = self.tokens.clone();
        if let Some(path) = &self.tokens_file {
            if !path.exists() {
                return Err(SettingsError::Invalid(format!(
                    "admin.tokens_file {} does not exist",
                    path.display()
                )));
            }
            let file: TokensFile = Figment::from(Toml::file(path))
                .extract()
                .map_err(|e| SettingsError::Invalid(format!("admin.tokens_file: {e}")))?;
            all.extend(file.tokens);
        }
        Ok(all)
    }
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: "0.0.0.0:8443".into(),
            tls_cert_file: None,
            tls_key_file: None,
            allow_plain_http: false,
            store_path: PathBuf::from("data/admin-cache"),
            metrics_listen: "127.0.0.1:9465".into(),
            max_body_bytes: 256 * 1024,
            max_connections: 1024,
            auth_failures_per_minute: 10,
            trusted_proxy_hops: 0,
            test_sends_per_minute: 6,
            redeliveries_per_minute: 60,
            max_webhooks_per_org: 1_000,
            max_campaigns_per_org: 10_000,
            writes_per_minute: 120,
            max_test_sends_in_flight_per_org: 2,
            max_window_redeliveries: 4,
            reads_in_flight_per_org: 4,
            max_reads_in_flight: 8,
            deliveries_path: PathBuf::from("data/admin-deliveries"),
            delivery_retention_days: 7,
            deliveries_per_webhook: 10_000,
            tokens: Vec::new(),
            tokens_file: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplaySettings {
    /// Redelivery requests processed at once by one instance: the share of its capacity
    /// replays may take (live input has `delivery.max_in_flight` of its own).
    pub max_in_flight: usize,
    /// `feedback-webhooks replay` asks for confirmation (or `--yes`) above this many events.
    pub confirm_above: u64,
}

impl Default for ReplaySettings {
    fn default() -> Self {
        ReplaySettings {
            max_in_flight: 64,
            confirm_above: 1_000,
        }
    }
}

/// Webhook health: the processor group works out each webhook's state from its deliveries
/// (README, "Webhook health").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSettings {
    /// Health tracking, operational events and automatic disabling; off: none of them.
    pub enabled: bool,
    /// Where operational events are written (`webhook.failing`, …).
    pub events_topic: String,
    /// The internal topics: the processor's signals to the trackers (default
    /// `{group_id}-health-signals`) and the trackers' state (compacted, default
    /// `{group_id}-health`). Their consumer group is `{group_id}-health`.
    pub signal_topic: Option<String>,
    pub state_topic: Option<String>,
    /// Partitions of both (trackers share the webhooks by them).
    pub partitions: i32,
    /// A webhook whose every delivery failed for this long is disabled (5 days); 0: never.
    pub disable_after_secs: u64,
    /// The window of the failure rate; `webhook.failing` repeats at most this often.
    pub window_secs: u64,
    pub remind_secs: u64,
    /// Events that ended failed are announced together once per window (`event.exhausted`).
    pub exhausted_window_secs: u64,
    /// How often the trackers look at the time (exhausted windows, the disable period).
    pub tick_ms: u64,
    /// Send each org's operational events to its notification endpoint (the
    /// `notification/{imsOrg}` record), as consumer group `{group_id}-notify`.
    pub notify: bool,
    /// Notifications waiting for one org's endpoint at most; more are dropped (counted
    /// and logged), so one org's failing endpoint holds only its own.
    pub notify_queue_per_org: usize,
    /// Requests to notification endpoints under way at most, all orgs together.
    pub notify_concurrency: usize,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            enabled: true,
            events_topic: "webhook-operational-events".into(),
            signal_topic: None,
            state_topic: None,
            partitions: 6,
            disable_after_secs: 5 * 24 * 3600,
            window_secs: 3600,
            remind_secs: 3600,
            exhausted_window_secs: 300,
            tick_ms: 1_000,
            notify: true,
            notify_queue_per_org: 1_000,
            notify_concurrency: 16,
        }
    }
}

impl HealthSettings {
    /// How long before an automatic disable a webhook began failing, at most: the disable
    /// period and the health window.
    pub fn failing_before_disable(&self) -> Duration {
        Duration::from_secs(self.disable_after_secs.saturating_add(self.window_secs))
    }

    pub fn policy(&self) -> crate::domain::health::HealthPolicy {
        crate::domain::health::HealthPolicy {
            disable_after: if self.disable_after_secs == 0 {
                Duration::MAX
            } else {
                Duration::from_secs(self.disable_after_secs)
            },
            window: Duration::from_secs(self.window_secs.max(60)),
            remind_every: Duration::from_secs(self.remind_secs),
            exhausted_window: Duration::from_secs(self.exhausted_window_secs),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Address of the operator port serving `/metrics`, `/healthz` and `/readyz`
    /// (plain HTTP); empty turns it off.
    pub listen: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSettings {
    /// On SIGTERM/SIGINT: how long deliveries under way may take to finish before the
    /// processor exits anyway (their records stay uncommitted and are processed again).
    /// Keep the pod's termination grace period above it.
    pub drain_deadline_secs: u64,
    /// On a rebalance: how long work under way on revoked partitions may take to finish
    /// before they are handed over (what is unfinished is processed again by the next
    /// owner). The group waits for this member meanwhile.
    pub revoke_grace_secs: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        ShutdownSettings {
            drain_deadline_secs: 30,
            revoke_grace_secs: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretSettings {
    /// File holding the deployment's config-encryption key (base64 of 32 bytes), which
    /// opens `{"encrypted": ...}` secrets and seals them in `secret seal`.
    pub encryption_key_file: Option<PathBuf>,
    /// Roots of secret files: `{"ref": "file:..."}` of org O resolves only to a regular
    /// file under `{root}/O/` (after resolving links), of at most 64 KiB.
    pub file_dirs: Vec<PathBuf>,
    /// `{"ref": "env:NAME"}` may name only variables `{env_prefix}{ORG}__{KEY}` of the
    /// record's org (empty: none).
    pub env_prefix: String,
    /// Whether `v1.` sealed values, sealed before values were bound to their record, still
    /// open. Only for the time it takes to seal them again (`secret seal --record`).
    pub accept_v1_sealed: bool,
}

impl Default for SecretSettings {
    fn default() -> Self {
        SecretSettings {
            encryption_key_file: None,
            file_dirs: vec![PathBuf::from("/etc/feedback-webhooks/jwt-keys")],
            env_prefix: "WEBHOOK_SECRET_".into(),
            accept_v1_sealed: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    pub group_id: String,
    /// Input topics; a name starting with `^` is a regular-expression subscription.
    pub input_topics: Vec<String>,
    pub config_topic: String,
    pub outcome_topic: String,
    /// Prefix of the retry-tier topics (`{prefix}-1s` … `{prefix}-4h`), created at start
    /// when missing. Default `{group_id}-retry`: the tiers belong to one deployment, and two
    /// deployments sharing tiers would deliver each other's retries. Their consumer group is
    /// `{group_id}-retry`.
    pub retry_topic_prefix: Option<String>,
    /// The redelivery topic replays are queued on. Default `{group_id}-replay`; consumed by
    /// the group `{group_id}-replay`.
    pub replay_topic: Option<String>,
    /// Partitions of retry-tier topics the processor creates.
    pub retry_partitions: i32,
    /// Replication factor of the topics the processor creates (retry tiers, redelivery);
    /// 0: 3, or the number of brokers if fewer.
    pub internal_replication_factor: i32,
    /// Their `min.insync.replicas`; 0: 2, or the replication factor if lower.
    pub internal_min_insync_replicas: i32,
    /// Extra librdkafka properties for every client (security.protocol, sasl.*, ssl.*).
    pub properties: BTreeMap<String, String>,
    /// `exactly_once` (default): outcomes, parked records and the input offsets behind
    /// them are written in one Kafka transaction, so a `read_committed` reader of the
    /// outcome topic sees one outcome per input record. `at_least_once`: for brokers
    /// without transactions; a fault may write an outcome twice.
    pub processing_guarantee: Guarantee,
    /// How often completed work is committed (milliseconds): with `exactly_once`, how long
    /// a transaction stays open (its outcomes become visible to `read_committed` readers
    /// when it commits); with `at_least_once`, how often offsets are committed.
    pub commit_interval_ms: u64,
    /// With `exactly_once`, the most results one transaction holds: the one that fills it
    /// asks for a commit before the interval is up. It bounds what a fault (a crash, a
    /// transaction call that never returns) makes the next owner redo besides the requests
    /// in flight; the default is `delivery.max_in_flight`'s.
    pub max_transaction_records: usize,
    /// The transactional id prefix of this instance's producers (`exactly_once`). It must
    /// differ between instances and stay the same across restarts of one instance (a
    /// restart then aborts what the previous run left open at once, instead of after the
    /// transaction timeout). Default: `{group_id}-{host name}-{hash of the store path}`.
    pub transactional_id: Option<String>,
}

/// What a fault may cost: see [`KafkaSettings::processing_guarantee`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    #[default]
    ExactlyOnce,
    AtLeastOnce,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// RocksDB folder of the config cache. Each instance has its own.
    pub path: PathBuf,
}

/// See [`DeliverySettings::http_version`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpVersion {
    Http1,
    Http2,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    /// Events being processed at once (delivery included); beyond it consumption waits.
    pub max_in_flight: usize,
    /// Parked events held by this instance at once (each waits for its due time).
    pub max_retrying: usize,
    /// Most requests in flight to one host (URL origin). The host's limit adapts below it:
    /// it starts at `host_concurrency_initial`, grows while latency holds, shrinks when it
    /// grows. Equal values fix the limit.
    pub host_concurrency_max: usize,
    pub host_concurrency_initial: usize,
    /// First limit of one webhook's requests in flight (it grows while the webhook answers
    /// well, and halves on its errors, 429s and timeouts).
    pub webhook_concurrency_initial: usize,
    /// The HTTP version offered to receivers: `http2` (HTTP/2 when the server offers it in
    /// TLS, HTTP/1.1 otherwise) or `http1` (HTTP/1.1 only).
    pub http_version: HttpVersion,
    /// Requests one connection to a host carries at once before the next is opened: a
    /// host's requests are spread over `ceil(limit / this)` connections (HTTP/2 streams, or
    /// HTTP/1.1 connections in turn), so a server that serves each connection on one worker
    /// gets several.
    pub requests_per_connection: usize,
    /// Events one webhook may have waiting for its host, and their payload bytes; beyond
    /// either, further events are parked (and re-read after a back-off).
    pub queue_max_events: usize,
    pub queue_max_bytes: usize,
    /// Longest wait in a queue before the event is parked instead.
    pub queue_max_wait_ms: u64,
    /// Once ¾ of the input's slots are held, an event whose webhook is over its fair share
    /// of them and would wait longer than this (by the webhook's usual latency and queue) is
    /// parked at once, so that slow hosts give slots back while fast ones keep theirs.
    pub queue_overflow_wait_ms: u64,
    /// Consecutive failures that open a webhook's circuit breaker (and, counting only
    /// failures to connect, its host's).
    pub breaker_failures: u32,
    /// First cool-down of an open breaker, doubled per failed probe up to the maximum.
    pub breaker_open_secs: u64,
    pub breaker_max_open_secs: u64,
    pub max_event_bytes: usize,
    /// Development only: accept `http://` webhook URLs. Logged loudly at start.
    pub allow_http: bool,
    /// CIDRs opened in the destination guard (which refuses loopback, private, link-local,
    /// CGNAT, multicast and reserved addresses) for every org's webhooks, e.g.
    /// `["10.20.0.0/16"]`.
    pub allow_cidrs: Vec<String>,
    /// CIDRs opened for one org's webhooks only, by IMS org: `[delivery.org_allow_cidrs]`
    /// `"ACME@AdobeOrg" = ["10.30.0.0/16"]`. Another org's webhooks cannot reach them.
    pub org_allow_cidrs: BTreeMap<String, Vec<String>>,
    /// PEM file of extra CA certificates trusted besides the built-in web roots.
    pub extra_ca_file: Option<PathBuf>,
    /// Delays before each retry, in seconds.
    pub retry_schedule_secs: Vec<f64>,
    pub retry_jitter: f64,
    pub retry_after_cap_secs: u64,
    pub retry_max_age_secs: u64,
    /// Bounds of a webhook's own `delivery` policy: its `timeoutMs` ...
    pub webhook_timeout_min_ms: u64,
    pub webhook_timeout_max_ms: u64,
    /// ... how long its retries may go on after the first attempt ...
    pub webhook_retry_age_max_secs: u64,
    /// ... and its attempts in all (`maxAttempts`, or its waits + 1).
    pub webhook_attempts_max: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `feedback_webhooks=debug`.
    pub filter: String,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            bootstrap_servers: "127.0.0.1:9092".into(),
            group_id: "feedback-webhooks".into(),
            input_topics: vec!["message-feedback".into()],
            config_topic: "webhook-config".into(),
            outcome_topic: "webhook-outcomes".into(),
            retry_topic_prefix: None,
            replay_topic: None,
            retry_partitions: 6,
            internal_replication_factor: 0,
            internal_min_insync_replicas: 0,
            properties: BTreeMap::new(),
            processing_guarantee: Guarantee::ExactlyOnce,
            commit_interval_ms: 250,
            max_transaction_records: 1_024,
            transactional_id: None,
        }
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            path: PathBuf::from("data/config-cache"),
        }
    }
}

impl Default for DeliverySettings {
    fn default() -> Self {
        let policy = RetryPolicy::default();
        let breaker = BreakerPolicy::default();
        let bounds = PolicyBounds::default();
        DeliverySettings {
            connect_timeout_ms: 5_000,
            request_timeout_ms: 10_000,
            max_in_flight: 1_024,
            max_retrying: 10_000,
            host_concurrency_max: 256,
            host_concurrency_initial: 32,
            webhook_concurrency_initial: 8,
            http_version: HttpVersion::Http2,
            requests_per_connection: 32,
            queue_max_events: 256,
            queue_max_bytes: 8 << 20,
            queue_max_wait_ms: 10_000,
            queue_overflow_wait_ms: 3_000,
            breaker_failures: breaker.failures_to_open,
            breaker_open_secs: breaker.open_for.as_secs(),
            breaker_max_open_secs: breaker.max_open_for.as_secs(),
            max_event_bytes: 1 << 20,
            allow_http: false,
            allow_cidrs: Vec::new(),
            org_allow_cidrs: BTreeMap::new(),
            extra_ca_file: None,
            retry_schedule_secs: policy.schedule.iter().map(Duration::as_secs_f64).collect(),
            retry_jitter: policy.jitter,
            retry_after_cap_secs: policy.retry_after_cap.as_secs(),
            retry_max_age_secs: policy.max_age.map_or(0, |d| d.as_secs()),
            webhook_timeout_min_ms: bounds.timeout_min_ms,
            webhook_timeout_max_ms: bounds.timeout_max_ms,
            webhook_retry_age_max_secs: bounds.retry_age_max_secs,
            webhook_attempts_max: bounds.attempts_max,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: "text".into(),
            filter: "info".into(),
        }
    }
}

impl Settings {
    /// Loads defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(SettingsError::Invalid(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        // Unknown keys in the file are refused; `FW_*` variables that name no setting are
        // ignored and reported (FW_CONFIG_FILE names the file itself).
        let ignored = unknown_env(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()));
        let mut skip: Vec<&str> = vec!["CONFIG_FILE"];
        skip.extend(ignored.iter().map(|k| k.trim_start_matches("FW_")));
        let mut settings: Settings = figment
            .merge(Env::prefixed("FW_").ignore(&skip).split("__"))
            .extract()
            .map_err(Box::new)?;
        settings.check()?;
        settings.ignored_env = ignored;
        Ok(settings)
    }

    /// Every setting's dotted path (`delivery.max_in_flight`), from the defaults.
    fn known_paths() -> Vec<String> {
        fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) if !map.is_empty() || prefix.is_empty() => {
                    for (k, v) in map {
                        let path = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        walk(&path, v, out);
                    }
                }
                _ => out.push(prefix.to_owned()),
            }
        }
        let mut out = Vec::new();
        walk(
            "",
            &serde_json::to_value(Settings::default()).unwrap_or_default(),
            &mut out,
        );
        out
    }

    fn check(&self) -> Result<(), SettingsError> {
        const YEAR_SECS: u64 = 365 * 24 * 3600;
        const DAY_MS: u64 = 24 * 3600 * 1000;
        // Kafka's own ceiling on a record is far above any event; 100 MiB keeps sizes
        // derived from it (fetch sizes, internal records) from overflowing.
        const MAX_EVENT_BYTES_LIMIT: usize = 100 << 20;
        let bad = |m: &str| Err(SettingsError::Invalid(m.to_owned()));
        if self.kafka.input_topics.is_empty() {
            return bad("kafka.input_topics must name at least one topic");
        }
        if self.delivery.max_in_flight == 0 || self.delivery.max_retrying == 0 {
            return bad("delivery.max_in_flight and delivery.max_retrying must be at least 1");
        }
        if self.replay.max_in_flight == 0 {
            return bad("replay.max_in_flight must be at least 1");
        }
        let d = &self.delivery;
        if [
            d.host_concurrency_max,
            d.host_concurrency_initial,
            d.webhook_concurrency_initial,
            d.queue_max_events,
            d.queue_max_bytes,
            d.breaker_failures as usize,
        ]
        .contains(&0)
        {
            return bad("delivery.host_concurrency_max, host_concurrency_initial, \
                 webhook_concurrency_initial, queue_max_events, queue_max_bytes and \
                 breaker_failures must be at least 1");
        }
        self.org_address_policies()?;
        if self.kafka.retry_partitions < 1 {
            return bad("kafka.retry_partitions must be at least 1");
        }
        if !(10..=60_000).contains(&self.kafka.commit_interval_ms) {
            return bad("kafka.commit_interval_ms must be from 10 to 60000");
        }
        if self.kafka.max_transaction_records == 0 {
            return bad("kafka.max_transaction_records must be at least 1");
        }
        if self.kafka.transactional_id.as_deref() == Some("") {
            return bad("kafka.transactional_id must not be empty (leave it out for the default)");
        }
        if self.kafka.internal_replication_factor < 0 || self.kafka.internal_min_insync_replicas < 0
        {
            return bad("kafka.internal_replication_factor and internal_min_insync_replicas must be 0 (automatic) or more");
        }
        if !(0.0..=1.0).contains(&self.delivery.retry_jitter) {
            return bad("delivery.retry_jitter must be between 0 and 1");
        }
        if self
            .delivery
            .retry_schedule_secs
            .iter()
            .any(|s| !s.is_finite() || *s < 0.0 || *s > YEAR_SECS as f64)
        {
            return bad(
                "delivery.retry_schedule_secs must be numbers from 0 to one year (31536000)",
            );
        }
        // Times computed from settings must not overflow: bound every duration.
        for (name, value, max) in [
            ("delivery.connect_timeout_ms", d.connect_timeout_ms, DAY_MS),
            ("delivery.request_timeout_ms", d.request_timeout_ms, DAY_MS),
            ("delivery.queue_max_wait_ms", d.queue_max_wait_ms, DAY_MS),
            (
                "delivery.queue_overflow_wait_ms",
                d.queue_overflow_wait_ms,
                DAY_MS,
            ),
            ("delivery.breaker_open_secs", d.breaker_open_secs, YEAR_SECS),
            (
                "delivery.breaker_max_open_secs",
                d.breaker_max_open_secs,
                YEAR_SECS,
            ),
            (
                "delivery.retry_after_cap_secs",
                d.retry_after_cap_secs,
                YEAR_SECS,
            ),
            (
                "delivery.retry_max_age_secs",
                d.retry_max_age_secs,
                YEAR_SECS,
            ),
            (
                "delivery.webhook_timeout_max_ms",
                d.webhook_timeout_max_ms,
                DAY_MS,
            ),
            (
                "delivery.webhook_retry_age_max_secs",
                d.webhook_retry_age_max_secs,
                YEAR_SECS,
            ),
        ] {
            if value > max {
                return Err(SettingsError::Invalid(format!(
                    "{name} is {value}, above its maximum of {max}"
                )));
            }
        }
        if d.webhook_timeout_min_ms == 0 || d.webhook_timeout_min_ms > d.webhook_timeout_max_ms {
            return bad("delivery.webhook_timeout_min_ms must be at least 1 and at most webhook_timeout_max_ms");
        }
        if d.webhook_attempts_max == 0 || d.webhook_attempts_max > 100 {
            return bad("delivery.webhook_attempts_max must be from 1 to 100");
        }
        if d.requests_per_connection == 0 || d.requests_per_connection > 1_000 {
            return bad("delivery.requests_per_connection must be from 1 to 1000");
        }
        if d.max_event_bytes < 1024 || d.max_event_bytes > MAX_EVENT_BYTES_LIMIT {
            return Err(SettingsError::Invalid(format!(
                "delivery.max_event_bytes must be from 1024 to {MAX_EVENT_BYTES_LIMIT}"
            )));
        }
        if self.log.format != "text" && self.log.format != "json" {
            return bad("log.format must be \"text\" or \"json\"");
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return bad("http.listen must be an address like 0.0.0.0:9464 (or empty for none)");
        }
        Ok(())
    }

    pub fn rules(&self) -> Rules {
        let d = &self.delivery;
        Rules {
            allow_http: d.allow_http,
            bounds: PolicyBounds {
                timeout_min_ms: d.webhook_timeout_min_ms,
                timeout_max_ms: d.webhook_timeout_max_ms,
                retry_age_max_secs: d.webhook_retry_age_max_secs,
                attempts_max: d.webhook_attempts_max,
            },
            authoring: false,
        }
    }

    /// The destination guard's policy for every org: the ranges `delivery.allow_cidrs` opens.
    pub fn address_policy(&self) -> Result<AddressPolicy, SettingsError> {
        Ok(AddressPolicy {
            allow: cidrs("delivery.allow_cidrs", &self.delivery.allow_cidrs)?,
        })
    }

    /// The policies of the orgs `delivery.org_allow_cidrs` opens more ranges for: every
    /// org's ranges and their own.
    pub fn org_address_policies(&self) -> Result<BTreeMap<String, AddressPolicy>, SettingsError> {
        let shared = self.address_policy()?;
        self.delivery
            .org_allow_cidrs
            .iter()
            .map(|(org, own)| {
                let mut allow = shared.allow.clone();
                allow.extend(cidrs(&format!("delivery.org_allow_cidrs.{org}"), own)?);
                Ok((org.clone(), AddressPolicy { allow }))
            })
            .collect()
    }

    /// This instance's transactional id prefix (see [`KafkaSettings::transactional_id`]).
    pub fn transactional_id(&self) -> String {
        if let Some(id) = &self.kafka.transactional_id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "host".into());
        let store =
            std::fs::canonicalize(&self.store.path).unwrap_or_else(|_| self.store.path.clone());
        use sha2::Digest;
        let digest = sha2::Sha256::digest(store.to_string_lossy().as_bytes());
        let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}-{host}-{hash}", self.kafka.group_id)
    }

    /// The config-encryption key, if one is configured.
    pub fn sealing_key(&self) -> Result<Option<SealingKey>, SettingsError> {
        let Some(path) = &self.secrets.encryption_key_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            SettingsError::Invalid(format!(
                "secrets.encryption_key_file {}: {e}",
                path.display()
            ))
        })?;
        SealingKey::from_base64(&text).map(Some).map_err(|e| {
            SettingsError::Invalid(format!(
                "secrets.encryption_key_file {}: {e}",
                path.display()
            ))
        })
    }

    pub fn retry_topic_prefix(&self) -> String {
        self.kafka
            .retry_topic_prefix
            .clone()
            .unwrap_or_else(|| format!("{}-retry", self.kafka.group_id))
    }

    /// The health signals' topic, when health tracking is on.
    pub fn health_signal_topic(&self) -> Option<String> {
        self.health.enabled.then(|| {
            self.health
                .signal_topic
                .clone()
                .unwrap_or_else(|| format!("{}-health-signals", self.kafka.group_id))
        })
    }

    pub fn health_state_topic(&self) -> String {
        self.health
            .state_topic
            .clone()
            .unwrap_or_else(|| format!("{}-health", self.kafka.group_id))
    }

    pub fn replay_topic(&self) -> String {
        self.kafka
            .replay_topic
            .clone()
            .unwrap_or_else(|| format!("{}-replay", self.kafka.group_id))
    }

    pub fn breaker_policy(&self) -> BreakerPolicy {
        let d = &self.delivery;
        BreakerPolicy {
            failures_to_open: d.breaker_failures,
            open_for: Duration::from_secs(d.breaker_open_secs),
            max_open_for: Duration::from_secs(d.breaker_max_open_secs.max(d.breaker_open_secs)),
        }
    }

    /// How hosts' capacity is shared among webhooks (`domain/host_schedule.rs`).
    pub fn schedule_policy(&self) -> SchedulePolicy {
        let d = &self.delivery;
        let webhook_breaker = self.breaker_policy();
        SchedulePolicy {
            host_limit: LimitPolicy::relative(
                d.host_concurrency_initial,
                d.host_concurrency_max,
                crate::domain::host_schedule::RELATIVE_UNIT,
            ),
            webhook_limit: LimitPolicy::adaptive(
                d.webhook_concurrency_initial,
                d.host_concurrency_max,
            ),
            // A host that cannot be connected to is left alone briefly: its webhooks'
            // breakers hold the long cool-downs.
            host_breaker: BreakerPolicy {
                failures_to_open: d.breaker_failures,
                open_for: Duration::from_secs(1).min(webhook_breaker.open_for),
                max_open_for: Duration::from_secs(30).min(webhook_breaker.max_open_for),
            },
            webhook_breaker,
            queue_events: d.queue_max_events,
            queue_bytes: d.queue_max_bytes,
            // A quarter of the input's slots, or four per request slot of the host.
            host_queue_events: (d.max_in_flight / 4).max(1),
        }
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        let d = &self.delivery;
        RetryPolicy {
            schedule: d
                .retry_schedule_secs
                .iter()
                .map(|s| Duration::from_secs_f64(*s))
                .collect(),
            jitter: d.retry_jitter,
            retry_after_cap: Duration::from_secs(d.retry_after_cap_secs),
            max_age: (d.retry_max_age_secs > 0).then(|| Duration::from_secs(d.retry_max_age_secs)),
        }
    }
}

/// The `FW_*` variable names among `names` that name no setting (FW_CONFIG_FILE aside).
fn unknown_env(names: impl Iterator<Item = String>) -> Vec<String> {
    let known = Settings::known_paths();
    let mut unknown: Vec<String> = names
        .filter(|name| name.starts_with("FW_") && name != "FW_CONFIG_FILE")
        .filter(|name| {
            let path = name["FW_".len()..].to_lowercase().replace("__", ".");
            // A map setting (`kafka.properties`) takes any key below it; a whole table may
            // be set at once.
            !known.iter().any(|k| {
                *k == path
                    || path.starts_with(&format!("{k}."))
                    || k.starts_with(&format!("{path}."))
            })
        })
        .collect();
    unknown.sort();
    unknown
}

impl Settings {
    /// The files holding secrets (the config-encryption key, the admin token file, the
    /// admin API's TLS key) that every user of the machine may read, by setting: each is
    /// warned about loudly at start.
    pub fn exposed_secret_files(&self) -> Vec<(&'static str, PathBuf)> {
        [
            (
                "secrets.encryption_key_file",
                &self.secrets.encryption_key_file,
            ),
            ("admin.tokens_file", &self.admin.tokens_file),
            ("admin.tls_key_file", &self.admin.tls_key_file),
        ]
        .into_iter()
        .filter_map(|(setting, path)| Some((setting, path.clone()?)))
        .filter(|(_, path)| readable_by_others(path))
        .collect()
    }
}

#[cfg(unix)]
fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

#[cfg(not(unix))]
fn readable_by_others(_: &Path) -> bool {
    false
}

/// The CIDRs of the setting `name`, or which one is not a CIDR.
fn cidrs(name: &str, texts: &[String]) -> Result<Vec<ipnet::IpNet>, SettingsError> {
    texts
        .iter()
        .map(|c| {
            c.parse::<ipnet::IpNet>()
                .map_err(|_| SettingsError::Invalid(format!("{name}: {c:?} is not a CIDR")))
        })
        .collect()
}

#[cfg(test)]
// figment's test jail returns its own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_contract() {
        let s = Settings::default();
        assert_eq!(s.kafka.input_topics, ["message-feedback"]);
        assert_eq!(s.kafka.config_topic, "webhook-config");
        assert_eq!(s.kafka.outcome_topic, "webhook-outcomes");
        assert_eq!(s.retry_policy(), RetryPolicy::default());
        assert_eq!(s.delivery.max_event_bytes, 1 << 20);
        assert!(!s.delivery.allow_http);
    }

    #[test]
    fn file_then_env_override() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "fw.toml",
                r#"
                [kafka]
                group_id = "from-file"
                input_topics = ["a", "b"]
                [delivery]
                retry_schedule_secs = [1, 2.5]
                "#,
            )?;
            jail.set_env("FW_KAFKA__GROUP_ID", "from-env");
            jail.set_env("FW_CONFIG_FILE", "fw.toml");
            jail.set_env("FW_DELIVERY__ALLOW_CIDRS", "[127.0.0.1/32, \"10.0.0.0/8\"]");
            let s = Settings::load(Some(Path::new("fw.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.kafka.group_id, "from-env");
            assert_eq!(s.kafka.input_topics, ["a", "b"]);
            assert_eq!(
                s.address_policy().map_err(|e| e.to_string())?.allow.len(),
                2
            );
            assert_eq!(
                s.retry_policy().schedule,
                [Duration::from_secs(1), Duration::from_millis(2500)]
            );
            Ok(())
        });
    }

    #[test]
    fn ranges_opened_for_one_org_add_to_the_shared_ones_for_that_org_only() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("FW_DELIVERY__ALLOW_CIDRS", "[\"10.0.0.0/8\"]");
            jail.set_env(
                "FW_DELIVERY__ORG_ALLOW_CIDRS",
                "{myImsOrg=[\"127.0.0.1/32\"]}",
            );
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert!(s.ignored_env.is_empty(), "{:?}", s.ignored_env);
            let policies = s.org_address_policies().map_err(|e| e.to_string())?;
            let own = &policies["myImsOrg"];
            assert_eq!(own.allow.len(), 2);
            assert_eq!(
                s.address_policy().map_err(|e| e.to_string())?.allow.len(),
                1
            );
            assert!(!policies.contains_key("other"));
            jail.set_env("FW_DELIVERY__ORG_ALLOW_CIDRS", "{acme=[\"nope\"]}");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("delivery.org_allow_cidrs.acme"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unauthenticated_operator_ports_listen_on_loopback_unless_told() {
        let s = Settings::default();
        for listen in [&s.http.listen, &s.admin.metrics_listen] {
            let addr: std::net::SocketAddr = listen.parse().unwrap();
            assert!(addr.ip().is_loopback(), "{listen}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn secret_files_others_may_read_are_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (key, tokens) = (
            dir.path().join("config.key"),
            dir.path().join("tokens.toml"),
        );
        for (path, mode) in [(&key, 0o644), (&tokens, 0o600)] {
            std::fs::write(path, "x").unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let mut s = Settings::default();
        s.secrets.encryption_key_file = Some(key.clone());
        s.admin.tokens_file = Some(tokens);
        assert_eq!(
            s.exposed_secret_files(),
            [("secrets.encryption_key_file", key.clone())]
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(s.exposed_secret_files().is_empty());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("fw.toml", "[kafka]\nbootstrap = \"x\"\n")?;
            assert!(Settings::load(Some(Path::new("fw.toml"))).is_err());
            jail.create_file("fw.toml", "[delivery]\nretry_jitter = 3.0\n")?;
            let err = Settings::load(Some(Path::new("fw.toml"))).unwrap_err();
            assert!(err.to_string().contains("retry_jitter"));
            Ok(())
        });
    }

    #[test]
    fn fw_variables_that_name_no_setting_are_ignored_and_reported() {
        let names = [
            "FW_DELIVERY__MAX_IN_FLIGHT",
            "FW_KAFKA__PROPERTIES__SECURITY__PROTOCOL",
            "FW_SECRETS__ENCRYPTION_KEY_FILE",
            "FW_CONFIG_FILE",
            "FW_PLATFORM_INJECTED",
            "FW_DELIVERY__MAX_INFLIGHT",
            "PATH",
        ]
        .map(String::from);
        assert_eq!(
            unknown_env(names.into_iter()),
            ["FW_DELIVERY__MAX_INFLIGHT", "FW_PLATFORM_INJECTED"]
        );
        figment::Jail::expect_with(|jail| {
            jail.set_env("FW_PLATFORM_INJECTED", "1");
            jail.set_env("FW_DELIVERY__MAX_IN_FLIGHT", "7");
            let s = Settings::load(None).unwrap();
            assert_eq!(s.delivery.max_in_flight, 7);
            assert_eq!(s.ignored_env, ["FW_PLATFORM_INJECTED"]);
            // Unknown keys in the file are still refused.
            jail.create_file("fw.toml", "[delivery]\nmax_inflight = 3\n")?;
            assert!(Settings::load(Some(Path::new("fw.toml"))).is_err());
            Ok(())
        });
    }

    #[test]
    fn durations_and_sizes_that_would_overflow_are_refused() {
        for (setting, value, named) in [
            ("retry_schedule_secs", "[1, 1e300]", "retry_schedule_secs"),
            (
                "queue_max_wait_ms",
                "18446744073709551615",
                "queue_max_wait_ms",
            ),
            (
                "retry_after_cap_secs",
                "18446744073709551615",
                "retry_after_cap_secs",
            ),
            (
                "breaker_max_open_secs",
                "18446744073709551615",
                "breaker_max_open_secs",
            ),
            ("max_event_bytes", "18446744073709551615", "max_event_bytes"),
        ] {
            figment::Jail::expect_with(|jail| {
                jail.create_file("fw.toml", &format!("[delivery]\n{setting} = {value}\n"))?;
                let err = Settings::load(Some(Path::new("fw.toml"))).unwrap_err();
                assert!(err.to_string().contains(named), "{setting}: {err}");
                Ok(())
            });
        }
    }
}
