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

/// Creates the topics that do not exist yet (for the processor's internal topics), with
/// room for records of `max_record_bytes`.
pub async fn ensure_topics(
    kafka: &KafkaSettings,
    topics: &[String],
    partitions: i32,
    max_record_bytes: usize,
) -> Result<(), rdkafka::error::KafkaError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;

    let admin: AdminClient<DefaultClientContext> = client_config(kafka).create()?;
    let limit = max_record_bytes.to_string();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(t, partitions, TopicReplication::Fixed(-1))
                .set("max.message.bytes", &limit)
        })
        .collect();
    let options = AdminOptions::new().request_timeout(Some(std::time::Duration::from_secs(30)));
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
    Ok(())
}

/// The partition ids of `topic` (empty when it does not exist).
pub fn partition_ids<C: Consumer>(
    consumer: &C,
    topic: &str,
) -> Result<Vec<i32>, rdkafka::error::KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), std::time::Duration::from_secs(30))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}
