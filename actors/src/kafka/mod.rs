//! Kafka mode's plumbing: events travel as Avro in the Confluent wire
//! format, keyed by symbol, on topics
//! `market.{asset_class}.{trades|quotes}.{exchange}`, each value schema
//! registered as `{topic}-value`. The producing side is a sink
//! ([`crate::sinks::kafka`]); the consuming side lands the topics in the lake.
//!
//! - [`topics`]: names and creation through the Admin API.
//! - [`schemas`]: schema ids from the built-in registry or any Confluent
//!   compatible one by URL.
//! - [`consumer`]: the flushers' group, a supervised actor landing the
//!   topics in the tables' tails; [`catch_up`]: a graceful stop's wait for
//!   it to take what is already in its partitions.
//! - [`log_view`]: the records past a table's snapshot, decoded and kept
//!   for exact hybrid queries on any process.
//! - [`recent_ids`]: the window that drops a record a second producer also
//!   put in the log.
//! - [`book_producer`] and [`book_lander`]: the order books' records on
//!   `market.{asset_class}.book.{exchange}`, produced where the books are
//!   kept and landed in the book tables by the flushers.

pub mod book_lander;
pub mod book_producer;
pub mod catch_up;
pub mod consumer;
pub mod log_view;
pub mod recent_ids;
pub mod schemas;
pub mod topics;

use rdkafka::ClientConfig;
use thiserror::Error;

use crate::runtime::config::KafkaConfig;

use crate::runtime::errors::{Retry, Retryable};

/// The producers' client settings (the market sink's and the book
/// records'): idempotent, acks=all, compression, linger, batch size and
/// delivery time-out from the configuration.
pub fn producer_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", &config.compression)
        .set("linger.ms", config.linger.as_millis().to_string())
        .set("batch.size", config.batch_bytes.to_string())
        .set("message.timeout.ms", config.message_timeout.as_millis().to_string());
    client
}

/// A group member's client settings (the flushers' consumer and the book
/// lander): offsets are the tables' business, so no auto commit and no
/// auto store; fetches sized from the configuration.
pub fn consumer_config(config: &KafkaConfig, group: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", config.session_timeout.as_millis().to_string())
        .set("heartbeat.interval.ms", (config.session_timeout.as_millis() / 5).max(100).to_string())
        // New market topics join the subscription within seconds.
        .set("topic.metadata.refresh.interval.ms", "3000")
        // A record over librdkafka's default response cap (100 MB) would
        // stop its partition for good, fetched and refused again and again;
        // records up to this size reach the size check (and the DLQ).
        .set("receive.message.max.bytes", (256 << 20).to_string())
        .set("max.partition.fetch.bytes", config.fetch_partition_bytes.to_string())
        .set("fetch.max.bytes", config.fetch_max_bytes.to_string())
        .set("fetch.wait.max.ms", config.fetch_wait.as_millis().to_string());
    client
}

#[derive(Debug, Error)]
pub enum KafkaError {
    #[error("kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("creating topic {topic}: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("schema registry: {0}")]
    Registry(String),
    /// The registry answered and holds no schema with this id: a record
    /// naming it can never be decoded (unlike one met while the registry
    /// is unreachable, which waits for it).
    #[error("schema registry: no schema with id {0}")]
    UnknownSchema(u32),
    #[error("encoding: {0}")]
    Encode(String),
}

impl Retryable for KafkaError {
    fn retry(&self) -> Retry {
        match self {
            // A bad client setting stays bad; the broker comes back.
            KafkaError::Client(rdkafka::error::KafkaError::ClientCreation(_)) => Retry::Permanent,
            KafkaError::Encode(_) | KafkaError::UnknownSchema(_) => Retry::Permanent,
            _ => Retry::Transient,
        }
    }
}
