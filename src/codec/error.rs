//! Typed codec errors: what went wrong and in which field.

use thiserror::Error;

use crate::model::decimal::DecimalError;

/// Why an event could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error(transparent)]
    Decimal(#[from] DecimalError),
    #[error("{field} {micros}us lies outside years 1 to 9999, which other Avro readers cannot hold")]
    TimestampOutOfRange { field: &'static str, micros: i64 },
}

/// Why a frame or datum could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("frame of {len} bytes is shorter than the 5-byte Confluent header")]
    FrameTooShort { len: usize },
    #[error("wrong magic byte {found:#04x}: a Confluent frame starts with 0x00")]
    WrongMagic { found: u8 },
    #[error("unknown schema id {id}")]
    UnknownSchemaId { id: u32 },
    #[error("datum truncated while reading {field}")]
    Truncated { field: &'static str },
    #[error("corrupt datum at {field}: {reason}")]
    Corrupt { field: &'static str, reason: &'static str },
    #[error("{count} bytes left over after the datum")]
    TrailingBytes { count: usize },
    #[error(transparent)]
    Decimal(#[from] DecimalError),
    #[error("{field} {micros}us lies outside years 1 to 9999")]
    TimestampOutOfRange { field: &'static str, micros: i64 },
}

impl DecodeError {
    pub(crate) fn corrupt(field: &'static str, reason: &'static str) -> Self {
        Self::Corrupt { field, reason }
    }
}
