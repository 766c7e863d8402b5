//! feedback-webhooks: delivers message-feedback events from Kafka to each tenant's webhook.
//!
//! The pipeline, by module:
//! - [`source`]: where an event enters (the input topics, consumed as a group) and the
//!   offset bookkeeping that commits only completed work;
//! - [`join`]: the config topic followed into a RocksDB cache, and the event's lookup there;
//! - [`delivery`]: the HTTPS client, one attempt, and the retrying worker;
//! - [`record`]: the outcome topic, one terminal record per input record;
//! - [`pipeline`]: the loop that ties them together;
//! - [`observe`]: metrics, health and readiness for the operator;
//! - [`health`]: each webhook's health, worked out from its deliveries, and the
//!   operational events that announce its changes;
//! - [`notify`]: those events sent to each org's notification endpoint;
//! - [`replay`]: redelivery of events already processed (the `replay` command, the API's
//!   redeliver endpoints), queued on the redelivery topic for the pipeline.
//!
//! [`admin`] is a sibling of the pipeline: the administration API (`feedback-webhooks admin`),
//! which publishes to the config topic and follows it with the same [`join`] cache.
//!
//! [`domain`] holds the pure rules (parsing, matching, payload, outcome, retry policy) and
//! [`schema`] the JSON Schemas they validate against.

pub mod accept;
pub mod admin;
pub mod cli;
pub mod delivery;
pub mod domain;
pub mod fatal;
pub mod health;
pub mod join;
pub mod kafka;
pub mod memory;
pub mod notify;
pub mod observe;
pub mod pipeline;
pub mod receiver;
pub mod record;
pub mod replay;
pub mod schema;
pub mod settings;
pub mod source;
