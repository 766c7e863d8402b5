//! Shared Kafka client settings: every client gets the bootstrap servers and the operator's
//! extra librdkafka properties (security settings among them).

use rdkafka::consumer::Consumer;
use rdkafka::ClientConfig;

pub use crate::settings::KafkaSettings;

/// A client config with the bootstrap servers and the operator's extra properties.
pub fn client_config(kafka: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.bootstrap_servers);
    config.set("client.id", "feedback-webhooks");
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    config
}

/// A client configuration for a consumer that reads partitions by assignment: no group is
/// joined and nothing is committed. librdkafka still wants a group id:
/// `{group_id}-{purpose}`.
pub fn reader_config(kafka: &KafkaSettings, purpose: &str) -> ClientConfig {
    let mut config = client_config(kafka);
    config
        .set("group.id", format!("{}-{purpose}", kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    config
}

/// librdkafka's name for the Java client's default partitioner (murmur2 of the key): a
/// key lands in the same partition whoever publishes it, Java tools included. Every
/// producer of this project uses it.
pub const JAVA_PARTITIONER: &str = "murmur2_random";

/// A client configuration for a producer: [`client_config`] with [`JAVA_PARTITIONER`].
pub fn producer_config(kafka: &KafkaSettings) -> ClientConfig {
    let mut config = client_config(kafka);
    config.set("partitioner", JAVA_PARTITIONER);
    config
}

/// The largest record the processor writes to its internal topics (parked and redelivery
/// records embed an event of up to `max_event_bytes`, plus attempts), for the producers'
/// `message.max.bytes` and the topics' `max.message.bytes`. Both defaults (about 1 MB) are
/// below what an event at the limit needs, and a record the broker refuses could never be
/// written: its partition would stall.
pub fn internal_record_limit(max_event_bytes: usize) -> usize {
    (2 * max_event_bytes + 64 * 1024).max(1 << 20)
}

/// How the processor's own topics (retry tiers, redelivery) are made: they hold events whose
/// input offsets are already committed, so they need the durability of the input itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSpec {
    pub partitions: i32,
    /// Largest record written to them (see [`internal_record_limit`]).
    pub max_record_bytes: usize,
    /// Replication factor; 0: 3, or the number of brokers if fewer.
    pub replication: i32,
    /// `min.insync.replicas`; 0: 2, or the replication factor if lower.
    pub min_insync: i32,
    /// `retention.ms`: longer than any record waits (the retry max age) plus a margin;
    /// `None`: the broker's default, not checked (an output topic, the operator's to size).
    pub retention_ms: Option<i64>,
    /// `cleanup.policy=compact` (a state topic: the latest record per key is kept).
    pub compact: bool,
}

impl TopicSpec {
    /// The processor's own topics under `settings` (`ensure_topics`).
    pub fn from_settings(settings: &crate::settings::Settings) -> Self {
        // Parked records wait at most the retry max age (a day unless set, the longest tier
        // 4 h); a week on top covers an outage of the processor.
        const MARGIN_MS: i64 = 7 * 24 * 3_600_000;
        let max_age_ms = match settings.delivery.retry_max_age_secs {
            0 => 24 * 3_600_000,
            secs => i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX),
        };
        TopicSpec {
            partitions: settings.kafka.retry_partitions,
            max_record_bytes: internal_record_limit(settings.delivery.max_event_bytes),
            replication: settings.kafka.internal_replication_factor,
            min_insync: settings.kafka.internal_min_insync_replicas,
            retention_ms: Some(max_age_ms.saturating_add(MARGIN_MS)),
            compact: false,
        }
    }

    /// The replication factor and `min.insync.replicas` on a cluster of `brokers`.
    pub fn durability(&self, brokers: usize) -> (i32, i32) {
        let brokers = i32::try_from(brokers.max(1)).unwrap_or(i32::MAX);
        let replication = if self.replication > 0 {
            self.replication
        } else {
            3.min(brokers)
        };
        let min_insync = if self.min_insync > 0 {
            self.min_insync
        } else {
            2.min(replication)
        };
        (replication, min_insync)
    }
}

/// What an existing topic has, as far as [`TopicSpec`] cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicState {
    pub replication: i32,
    pub min_insync: Option<i32>,
    pub retention_ms: Option<i64>,
    pub max_message_bytes: Option<usize>,
}

/// Where an existing topic falls short of `spec` on a cluster of `brokers` (empty: fine).
pub fn shortfalls(state: &TopicState, spec: &TopicSpec, brokers: usize) -> Vec<String> {
    let (replication, min_insync) = spec.durability(brokers);
    let mut out = Vec::new();
    if state.replication < replication {
        out.push(format!(
            "replication factor {} < {replication}",
            state.replication
        ));
    }
    if state.min_insync.unwrap_or(1) < min_insync {
        out.push(format!(
            "min.insync.replicas {} < {min_insync}",
            state.min_insync.unwrap_or(1)
        ));
    }
    // -1: kept for ever. A compacted topic keeps each key's latest record regardless.
    let wanted = spec.retention_ms.filter(|_| !spec.compact);
    if let (Some(retention), Some(wanted)) = (state.retention_ms.filter(|r| *r >= 0), wanted) {
        if retention < wanted {
            out.push(format!(
                "retention.ms {retention} < {wanted} (the retry max age plus a margin)"
            ));
        }
    }
    if let Some(max) = state.max_message_bytes {
        if max < spec.max_record_bytes {
            out.push(format!(
                "max.message.bytes {max} < {}",
                spec.max_record_bytes
            ));
        }
    }
    out
}

/// The cluster's metadata (brokers, topics), read off the async workers.
async fn cluster_metadata(
    kafka: &KafkaSettings,
) -> Result<rdkafka::metadata::Metadata, rdkafka::error::KafkaError> {
    let config = client_config(kafka);
    tokio::task::spawn_blocking(move || {
        let client: rdkafka::consumer::BaseConsumer = config.create()?;
        client.fetch_metadata(None, std::time::Duration::from_secs(30))
    })
    .await
    .map_err(|_| rdkafka::error::KafkaError::Canceled)?
}

/// Creates the topics that do not exist yet (for the processor's internal topics) as
/// `spec` says, and checks those that exist: a shortfall is logged loudly (an existing
/// topic is the operator's; the processor does not change it).
pub async fn ensure_topics(
    kafka: &KafkaSettings,
    topics: &[String],
    spec: TopicSpec,
) -> Result<(), rdkafka::error::KafkaError> {
    use rdkafka::admin::{
        AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication,
    };
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;

    let admin: AdminClient<DefaultClientContext> = client_config(kafka).create()?;
    let timeout = std::time::Duration::from_secs(30);
    let brokers = cluster_metadata(kafka).await?.brokers().len();
    let (replication, min_insync) = spec.durability(brokers);
    let limit = spec.max_record_bytes.to_string();
    let isr = min_insync.to_string();
    let retention = spec.retention_ms.map(|r| r.to_string());
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            let topic = NewTopic::new(t, spec.partitions, TopicReplication::Fixed(replication))
                .set("max.message.bytes", &limit)
                .set("min.insync.replicas", &isr);
            match (&retention, spec.compact) {
                (_, true) => topic.set("cleanup.policy", "compact"),
                (Some(retention), false) => topic.set("retention.ms", retention),
                (None, false) => topic,
            }
        })
        .collect();
    let options = AdminOptions::new().request_timeout(Some(timeout));
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(rdkafka::error::KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::error!(topic, error = %code, "cannot create internal topic");
                })
            }
        }
    }
    // Check what exists (made now or earlier, by us or an operator).
    let metadata = cluster_metadata(kafka).await?;
    let specifiers: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let configs = admin.describe_configs(specifiers.iter(), &options).await?;
    for (topic, config) in topics.iter().zip(configs) {
        let Ok(config) = config else { continue };
        let value = |name: &str| config.get(name).and_then(|e| e.value.clone());
        let state = TopicState {
            replication: metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic.as_str())
                .and_then(|t| t.partitions().first())
                .map_or(0, |p| i32::try_from(p.replicas().len()).unwrap_or(i32::MAX)),
            min_insync: value("min.insync.replicas").and_then(|v| v.parse().ok()),
            retention_ms: value("retention.ms").and_then(|v| v.parse().ok()),
            max_message_bytes: value("max.message.bytes").and_then(|v| v.parse().ok()),
        };
        let short = shortfalls(&state, &spec, brokers);
        if !short.is_empty() {
            tracing::error!(
                topic,
                shortfalls = ?short,
                "INTERNAL TOPIC IS LESS DURABLE THAN CONFIGURED: parked and redelivery records may be lost or refused; alter the topic"
            );
        }
    }
    Ok(())
}

/// The largest record `topic` takes (its `max.message.bytes`); `None` when the broker does
/// not say (the topic is missing, or the request failed).
pub async fn max_message_bytes(kafka: &KafkaSettings, topic: &str) -> Option<usize> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;

    let admin: AdminClient<DefaultClientContext> = client_config(kafka).create().ok()?;
    let options = AdminOptions::new().request_timeout(Some(std::time::Duration::from_secs(30)));
    let configs = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await
        .ok()?;
    let config = configs.into_iter().next()?.ok()?;
    config
        .get("max.message.bytes")?
        .value
        .as_deref()?
        .parse()
        .ok()
}

/// The id the cluster gave `topic` when it was created (base64), by the DescribeTopics
/// admin request on `client` (blocking, up to `timeout`); `None` when the broker does not
/// say. A topic deleted and made again under the same name has a new id.
#[allow(unsafe_code)]
pub fn topic_id<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: std::time::Duration,
) -> Option<String> {
    use rdkafka::bindings as rd;
    use std::ffi::{CStr, CString};
    let name = CString::new(topic).ok()?;
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: every pointer comes from librdkafka and is checked for null before use; the
    // descriptions, their ids and strings are owned by the result event, read before it is
    // destroyed; the collection and queue are destroyed once, after the request completed.
    unsafe {
        let queue = rd::rd_kafka_queue_new(client.native_ptr());
        if queue.is_null() {
            return None;
        }
        let mut names = [name.as_ptr()];
        let collection = rd::rd_kafka_TopicCollection_of_topic_names(names.as_mut_ptr(), 1);
        rd::rd_kafka_DescribeTopics(client.native_ptr(), collection, std::ptr::null(), queue);
        let event = rd::rd_kafka_queue_poll(queue, timeout_ms);
        let mut id = None;
        if !event.is_null() {
            let result = rd::rd_kafka_event_DescribeTopics_result(event);
            if rd::rd_kafka_event_error(event)
                == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                && !result.is_null()
            {
                let mut count = 0usize;
                let topics = rd::rd_kafka_DescribeTopics_result_topics(result, &mut count);
                for i in 0..count {
                    let description = *topics.add(i);
                    if description.is_null()
                        || !rd::rd_kafka_TopicDescription_error(description).is_null()
                    {
                        continue;
                    }
                    let uuid = rd::rd_kafka_TopicDescription_topic_id(description);
                    if uuid.is_null() {
                        continue;
                    }
                    let text = rd::rd_kafka_Uuid_base64str(uuid);
                    if !text.is_null() {
                        id = Some(CStr::from_ptr(text).to_string_lossy().into_owned());
                    }
                }
            }
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_TopicCollection_destroy(collection);
        rd::rd_kafka_queue_destroy(queue);
        id
    }
}

/// The partition ids of `topic` (empty when it does not exist).
pub fn partition_ids<C: Consumer>(
    consumer: &C,
    topic: &str,
) -> Result<Vec<i32>, rdkafka::error::KafkaError> {
    partition_ids_within(consumer, topic, std::time::Duration::from_secs(30))
}

/// As [`partition_ids`], waiting at most `timeout` for the broker.
pub fn partition_ids_within<C: Consumer>(
    consumer: &C,
    topic: &str,
    timeout: std::time::Duration,
) -> Result<Vec<i32>, rdkafka::error::KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TopicSpec {
        TopicSpec {
            partitions: 6,
            max_record_bytes: 2 << 20,
            replication: 0,
            min_insync: 0,
            retention_ms: Some(8 * 24 * 3_600_000),
            compact: false,
        }
    }

    #[test]
    fn durability_defaults_fit_the_cluster() {
        assert_eq!(spec().durability(1), (1, 1), "a one-broker dev setup");
        assert_eq!(spec().durability(2), (2, 2));
        assert_eq!(spec().durability(5), (3, 2), "production");
        let fixed = TopicSpec {
            replication: 4,
            min_insync: 3,
            ..spec()
        };
        assert_eq!(fixed.durability(5), (4, 3));
    }

    #[test]
    fn an_existing_topic_is_checked_against_the_spec() {
        let good = TopicState {
            replication: 3,
            min_insync: Some(2),
            retention_ms: Some(8 * 24 * 3_600_000),
            max_message_bytes: Some(2 << 20),
        };
        assert!(shortfalls(&good, &spec(), 3).is_empty());
        let forever = TopicState {
            retention_ms: Some(-1),
            ..good.clone()
        };
        assert!(shortfalls(&forever, &spec(), 3).is_empty());
        let weak = TopicState {
            replication: 1,
            min_insync: None,
            retention_ms: Some(3_600_000),
            max_message_bytes: Some(1 << 20),
        };
        let short = shortfalls(&weak, &spec(), 3);
        assert_eq!(short.len(), 4, "{short:?}");
        assert!(short[2].contains("retry max age"));
    }
}
