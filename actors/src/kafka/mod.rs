//! Kafka mode's producing side: accepted events leave the pipeline as Avro
//! in the Confluent wire format, keyed by symbol, on topics
//! `market.{asset_class}.{trades|quotes}.{exchange}`, each value schema
//! registered as `{topic}-value`.
//!
//! - [`topics`]: names and creation through the Admin API.
//! - [`schemas`]: schema ids from the built-in registry or any Confluent
//!   compatible one by URL.
//! - [`producer`]: the idempotent producer as the pipeline's sink.
//! - [`consumer`]: the flushers' group, landing the topics in Iceberg.
//! - [`recent_ids`]: the window that drops a record a second producer also
//!   put in the log.

pub mod consumer;
pub mod producer;
pub mod recent_ids;
pub mod schemas;
pub mod topics;

pub use producer::KafkaSink;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum KafkaError {
    #[error("kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("creating topic {topic}: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("schema registry: {0}")]
    Registry(String),
    #[error("encoding: {0}")]
    Encode(String),
}
