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

use thiserror::Error;

use crate::runtime::errors::{Retry, Retryable};

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
