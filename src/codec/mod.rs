//! Avro codecs for v2 events: the fast schema-specific datum codec, the
//! Confluent wire framing around it, and apache-avro's generic path as the
//! reference both are tested against.

pub mod binary;
pub mod book;
pub mod datum;
mod error;
pub mod generic;
pub mod wire;

pub use error::{DecodeError, EncodeError};
pub use wire::{FrameBatch, SchemaIds, WireCodec};
