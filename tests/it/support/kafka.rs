//! Topics, producing and reading outcomes on the real broker.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

use super::PATIENCE;

pub fn bootstrap() -> String {
    std::env::var("IT_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// The topics of one test: unique names, so tests run side by side on one broker.
#[derive(Clone, Debug)]
pub struct Topics {
    pub input: String,
    pub config: String,
    pub outcomes: String,
    pub group: String,
    /// The broker they live on.
    pub bootstrap: String,
}

impl Topics {
    /// Creates fresh input (3 partitions), config (compacted, 2) and outcome topics.
    /// Panics, failing the test, when the broker does not answer.
    pub async fn create(name: &str) -> Self {
        Self::create_on(name, &bootstrap()).await
    }

    /// As [`Topics::create`], on the broker at `bootstrap`.
    pub async fn create_on(name: &str, bootstrap: &str) -> Self {
        Self::create_replicated(name, bootstrap, 1).await
    }

    /// As [`Topics::create_on`], each topic with `replication` replicas (and, above one,
    /// `min.insync.replicas` 2).
    pub async fn create_replicated(name: &str, bootstrap: &str, replication: i32) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("it-{name}-{}", &id[..8]);
        let topics = Topics {
            input: format!("{prefix}-input"),
            config: format!("{prefix}-config"),
            outcomes: format!("{prefix}-outcomes"),
            group: format!("{prefix}-group"),
            bootstrap: bootstrap.to_owned(),
        };
        let admin: AdminClient<DefaultClientContext> =
            client(bootstrap).create().expect("admin client");
        let rf = || TopicReplication::Fixed(replication);
        let isr = if replication > 1 { "2" } else { "1" };
        let input = NewTopic::new(&topics.input, 3, rf())
            .set("max.message.bytes", "4194304")
            .set("min.insync.replicas", isr);
        let config = NewTopic::new(&topics.config, 2, rf())
            .set("cleanup.policy", "compact")
            .set("min.insync.replicas", isr);
        let outcomes = NewTopic::new(&topics.outcomes, 3, rf()).set("min.insync.replicas", isr);
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
        let results = tokio::time::timeout(
            PATIENCE,
            admin.create_topics([&input, &config, &outcomes], &options),
        )
        .await
        .unwrap_or_else(|_| {
            panic!("Kafka at {bootstrap} did not answer: start it with scripts/kafka start")
        })
        .unwrap_or_else(|e| panic!("Kafka at {bootstrap} refused topic creation: {e}"));
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
        }
        topics
    }
}

pub struct Producer {
    inner: FutureProducer,
}

impl Producer {
    pub fn new() -> Self {
        Self::on(&bootstrap())
    }

    pub fn on(bootstrap: &str) -> Self {
        // Not idempotent (librdkafka's default), like many upstream producers: a retry
        // after a broker failover may write an event twice, which the fault reports tell
        // apart from the processor's duplicates (they count per input record).
        let inner = client(bootstrap)
            .set("message.max.bytes", "4194304")
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        Producer { inner }
    }

    /// Produces one record and returns its (partition, offset).
    pub async fn send(&self, topic: &str, key: Option<&str>, value: Option<&[u8]>) -> (i32, i64) {
        let mut record = FutureRecord::<str, [u8]>::to(topic);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        let delivery = self
            .inner
            .send(record, Timeout::After(Duration::from_secs(30)))
            .await
            .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
        (delivery.partition, delivery.offset)
    }

    pub async fn send_json(&self, topic: &str, key: Option<&str>, value: &Value) -> (i32, i64) {
        self.send(topic, key, Some(&serde_json::to_vec(value).unwrap()))
            .await
    }

    pub async fn tombstone(&self, topic: &str, key: &str) -> (i32, i64) {
        self.send(topic, Some(key), None).await
    }

    /// Produces one JSON record to a given partition; returns its offset.
    pub async fn send_json_to(&self, topic: &str, partition: i32, key: &str, value: &Value) -> i64 {
        let bytes = serde_json::to_vec(value).unwrap();
        let record = FutureRecord::<str, [u8]>::to(topic)
            .partition(partition)
            .key(key)
            .payload(&bytes);
        self.inner
            .send(record, Timeout::After(Duration::from_secs(30)))
            .await
            .unwrap_or_else(|(e, _)| panic!("producing to {topic}/{partition}: {e}"))
            .offset
    }
}

/// An admin client on the test broker.
pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    client(bootstrap).create().expect("admin client")
}

/// Reads an outcome topic from the beginning, keeping what it has seen and checking each
/// record against the outcome schema.
pub struct Reader {
    consumer: BaseConsumer,
    /// The schema each record must match.
    kind: feedback_webhooks::schema::Kind,
    pub records: Vec<Value>,
    /// Each record's partition and offset, in the order read.
    pub positions: Vec<(i32, i64)>,
}

impl Reader {
    pub fn new(topic: &str) -> Self {
        Self::on(topic, &bootstrap())
    }

    pub fn on(topic: &str, bootstrap: &str) -> Self {
        let consumer: BaseConsumer = client(bootstrap)
            .set("group.id", "it-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let tpl = partitions(&consumer, topic, Offset::Beginning);
        consumer.assign(&tpl).expect("assign");
        Reader {
            consumer,
            kind: feedback_webhooks::schema::Kind::Outcome,
            records: Vec::new(),
            positions: Vec::new(),
        }
    }

    /// A reader of operational events (each checked against their schema).
    pub fn operational(topic: &str) -> Self {
        Reader {
            kind: feedback_webhooks::schema::Kind::OperationalEvent,
            ..Self::new(topic)
        }
    }

    /// Reads whatever arrived within `wait`.
    pub fn poll_for(&mut self, wait: Duration) {
        let until = Instant::now() + wait;
        while Instant::now() < until {
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    let value: Value = m
                        .payload()
                        .map(|p| serde_json::from_slice(p).expect("outcome is JSON"))
                        .unwrap_or(Value::Null);
                    // Every record the processor writes must match the published schema.
                    super::assert_schema(self.kind, &value);
                    self.records.push(value);
                    self.positions.push((m.partition(), m.offset()));
                }
                Some(Err(e)) => panic!("reading: {e}"),
                None => {}
            }
        }
    }

    /// Reads until at least `n` records are in, or fails the test after `PATIENCE`.
    pub fn wait_for(&mut self, n: usize) -> &[Value] {
        self.wait_for_within(n, PATIENCE)
    }

    /// [`Reader::wait_for`], patient for `patience`.
    pub fn wait_for_within(&mut self, n: usize, patience: Duration) -> &[Value] {
        let until = Instant::now() + patience;
        while self.records.len() < n {
            assert!(
                Instant::now() < until,
                "only {} of {n} records arrived within {patience:?}",
                self.records.len()
            );
            self.poll_for(Duration::from_millis(200));
        }
        &self.records
    }

    /// Outcomes by event id (the last one wins).
    pub fn by_event_id(&self) -> HashMap<String, Value> {
        self.records
            .iter()
            .filter_map(|r| Some((r["eventId"].as_str()?.to_owned(), r.clone())))
            .collect()
    }
}

/// Every partition of `topic`, each at `offset`.
fn partitions(consumer: &BaseConsumer, topic: &str, offset: Offset) -> TopicPartitionList {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), offset)
                .expect("partition added");
        }
    }
    tpl
}

/// The offsets `group` has committed on each partition of `topic` (-1: none), by partition.
pub fn committed(bootstrap: &str, group: &str, topic: &str) -> Vec<i64> {
    let consumer: BaseConsumer = client(bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let tpl = partitions(&consumer, topic, Offset::Invalid);
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(30))
        .expect("committed offsets");
    let mut offsets: Vec<(i32, i64)> = committed
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset().to_raw().unwrap_or(-1)))
        .collect();
    offsets.sort_unstable();
    offsets.into_iter().map(|(_, o)| o).collect()
}
