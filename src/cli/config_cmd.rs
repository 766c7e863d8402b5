//! `config put|get|list|delete` and `campaign enable|disable`: every record is validated
//! with the processor's own rules before it is published to the config topic.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

use crate::domain::config::{self, ConfigError, ConfigKey, Rules};
use crate::domain::time::rfc3339_millis;
use crate::kafka::{client_config, partition_ids, reader_config};
use crate::settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("refused: {0}")]
    Invalid(#[from] ConfigError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("config topic {0:?} does not exist")]
    NoTopic(String),
    #[error("{0}")]
    NotFound(String),
}

/// Publishes a webhook or campaign record read from `file`, stamped as published now by
/// `by` (`updatedAt`, `updatedBy`). Every refusal is listed at once.
pub async fn put(settings: &Settings, file: &Path, by: &str) -> Result<ConfigKey, CommandError> {
    let bytes = std::fs::read(file).map_err(|e| CommandError::File {
        path: file.display().to_string(),
        reason: e.to_string(),
    })?;
    if bytes.len() > config::MAX_RECORD_BYTES {
        return Err(ConfigError::TooLarge(bytes.len()).into());
    }
    let mut value: Value =
        serde_json::from_slice(&bytes).map_err(|e| ConfigError::Malformed(e.to_string()))?;
    config::stamp(&mut value, by, &rfc3339_millis(SystemTime::now()));
    let record = config::validate_value(&value, settings.rules().authoring())?;
    let key = record.key();
    // Publish the compact form of what was validated.
    let compact = serde_json::to_vec(&value).unwrap_or_default();
    publish(settings, &key, Some(&compact)).await?;
    Ok(key)
}

/// Who publishes from this command line, for `updatedBy` when `--by` is not given.
pub fn operator() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "operator".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    format!("cli:{user}@{host}")
}

/// Publishes a campaign opt-in record.
pub async fn set_campaign(
    settings: &Settings,
    ims_org: &str,
    sandbox_id: &str,
    campaign_id: &str,
    enabled: bool,
) -> Result<ConfigKey, CommandError> {
    let value = json!({
        "kind": "campaign",
        "imsOrg": ims_org,
        "sandboxId": sandbox_id,
        "campaignID": campaign_id,
        "webhooksEnabled": enabled,
        "updatedAt": rfc3339_millis(SystemTime::now()),
        "updatedBy": operator(),
    });
    let bytes = serde_json::to_vec(&value).unwrap_or_default();
    let change = config::validate(
        &ConfigKey::campaign(ims_org, sandbox_id, campaign_id).to_string(),
        Some(&bytes),
        Rules::default(),
    )?;
    publish(settings, &change.key, Some(&bytes)).await?;
    Ok(change.key)
}

/// Enables the webhook of `ims_org` + `sandbox_id` (published by `by`); answers when it
/// went down (see [`crate::domain::health::down_since`]), from where what it missed is
/// redelivered.
pub async fn reenable(
    settings: &Settings,
    ims_org: &str,
    sandbox_id: &str,
    by: &str,
) -> Result<Option<SystemTime>, CommandError> {
    let key = ConfigKey::webhook(ims_org, sandbox_id);
    let mut record = read_all(settings)?
        .remove(&key.to_string())
        .ok_or_else(|| CommandError::NotFound(format!("no webhook for {key}")))?;
    let since =
        crate::domain::health::down_since(&record, settings.health.failing_before_disable());
    if let Some(object) = record.as_object_mut() {
        object.insert("enabled".into(), Value::Bool(true));
    }
    config::stamp(&mut record, by, &rfc3339_millis(SystemTime::now()));
    config::validate_value(&record, settings.rules())?;
    let bytes = serde_json::to_vec(&record).unwrap_or_default();
    publish(settings, &key, Some(&bytes)).await?;
    Ok(since)
}

/// Publishes a tombstone for `key`.
pub async fn delete(settings: &Settings, key: &ConfigKey) -> Result<(), CommandError> {
    config::validate(&key.to_string(), None, Rules::default())?;
    publish(settings, key, None).await
}

async fn publish(
    settings: &Settings,
    key: &ConfigKey,
    value: Option<&[u8]>,
) -> Result<(), CommandError> {
    ensure_topic(settings)?;
    let producer: FutureProducer = crate::kafka::producer_config(&settings.kafka)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    let key = key.to_string();
    let mut record = FutureRecord::<str, [u8]>::to(&settings.kafka.config_topic).key(&key);
    if let Some(value) = value {
        record = record.payload(value);
    }
    producer
        .send(record, Timeout::After(Duration::from_secs(30)))
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

fn ensure_topic(settings: &Settings) -> Result<Vec<i32>, CommandError> {
    let consumer: BaseConsumer = client_config(&settings.kafka).create()?;
    partitions(&consumer, &settings.kafka.config_topic)
}

fn partitions(consumer: &BaseConsumer, topic: &str) -> Result<Vec<i32>, CommandError> {
    let ids = partition_ids(consumer, topic)?;
    if ids.is_empty() {
        return Err(CommandError::NoTopic(topic.to_owned()));
    }
    Ok(ids)
}

/// The current state of the config topic: latest value per key, tombstoned keys removed.
pub fn read_all(settings: &Settings) -> Result<BTreeMap<String, Value>, CommandError> {
    let topic = &settings.kafka.config_topic;
    let consumer: BaseConsumer = reader_config(&settings.kafka, "config-cli").create()?;
    let ids = partitions(&consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in ids {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(30))?;
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut state = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let position = consumer.position()?;
        let done = ends.iter().all(|(&p, &high)| {
            high == 0
                || position
                    .find_partition(topic, p)
                    .and_then(|e| e.offset().to_raw())
                    .is_some_and(|o| o >= high)
        });
        if done {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(CommandError::NotFound(
                "timed out reading the config topic".into(),
            ));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let Some(key) = m.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
                    continue;
                };
                match m.payload() {
                    None => {
                        state.remove(&key);
                    }
                    // Only records the processor would accept count as state.
                    Some(v) if config::validate(&key, Some(v), settings.rules()).is_ok() => {
                        if let Ok(json) = serde_json::from_slice(v) {
                            state.insert(key, json);
                        }
                    }
                    Some(_) => {}
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    Ok(state)
}
