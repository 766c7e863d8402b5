//! Shared Kafka client settings: every client gets the bootstrap servers and the operator's
//! extra librdkafka properties (security settings among them).

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
