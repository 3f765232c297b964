//! The Confluent wire format: magic byte 0, the schema id as 4 big-endian bytes,
//! then the Avro datum.

use super::datum::{decode_quote, decode_trade, encode_quote, encode_trade};
use super::{DecodeError, EncodeError};
use crate::model::MarketEvent;

/// The first byte of every Confluent frame.
pub const MAGIC: u8 = 0;
/// Magic byte plus schema id.
pub const HEADER_LEN: usize = 5;

/// The registry ids under which the two v2 schemas are registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaIds {
    pub trade: u32,
    pub quote: u32,
}

/// Encodes and decodes v2 events as Confluent frames for one pair of schema ids.
#[derive(Debug, Clone, Copy)]
pub struct WireCodec {
    ids: SchemaIds,
}

impl WireCodec {
    pub fn new(ids: SchemaIds) -> Self {
        Self { ids }
    }

    pub fn schema_ids(&self) -> SchemaIds {
        self.ids
    }

    /// Appends one frame to `out`. On error `out` is left as it was.
    pub fn encode_into(&self, event: &MarketEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let id = match event {
            MarketEvent::Trade(_) => self.ids.trade,
            MarketEvent::Quote(_) => self.ids.quote,
        };
        out.push(MAGIC);
        out.extend_from_slice(&id.to_be_bytes());
        let written = match event {
            MarketEvent::Trade(t) => encode_trade(t, out),
            MarketEvent::Quote(q) => encode_quote(q, out),
        };
        if written.is_err() {
            out.truncate(start);
        }
        written
    }

    /// One frame in a buffer of its own.
    pub fn encode(&self, event: &MarketEvent) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(event, &mut out)?;
        Ok(out)
    }

    /// Encodes a batch into one contiguous buffer. An event that cannot be
    /// encoded is reported by its index and the rest of the batch goes on.
    pub fn encode_batch(&self, events: &[MarketEvent]) -> FrameBatch {
        let mut batch = FrameBatch::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            match self.encode_into(event, &mut batch.buf) {
                Ok(()) => batch.ends.push(batch.buf.len()),
                Err(e) => batch.rejected.push((i, e)),
            }
        }
        batch
    }

    /// Decodes one frame.
    pub fn decode(&self, frame: &[u8]) -> Result<MarketEvent, DecodeError> {
        let (id, datum) = split_frame(frame)?;
        if id == self.ids.trade {
            decode_trade(datum).map(MarketEvent::Trade)
        } else if id == self.ids.quote {
            decode_quote(datum).map(MarketEvent::Quote)
        } else {
            Err(DecodeError::UnknownSchemaId { id })
        }
    }

    /// Decodes many frames; each gets its own result, so one bad frame costs
    /// only itself.
    pub fn decode_batch<'a, I>(&self, frames: I) -> Vec<Result<MarketEvent, DecodeError>>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        frames.into_iter().map(|f| self.decode(f)).collect()
    }
}

/// Splits a frame into its schema id and Avro datum.
pub fn split_frame(frame: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    if frame.len() < HEADER_LEN {
        return Err(DecodeError::FrameTooShort { len: frame.len() });
    }
    if frame[0] != MAGIC {
        return Err(DecodeError::WrongMagic { found: frame[0] });
    }
    let id = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]);
    Ok((id, &frame[HEADER_LEN..]))
}

/// Frames of a batch laid end to end in one buffer: one allocation for the
/// whole batch instead of one per event.
#[derive(Debug, Default)]
pub struct FrameBatch {
    buf: Vec<u8>,
    ends: Vec<usize>,
    rejected: Vec<(usize, EncodeError)>,
}

impl FrameBatch {
    fn with_capacity(events: usize) -> Self {
        Self { buf: Vec::with_capacity(events * 200), ends: Vec::with_capacity(events), rejected: Vec::new() }
    }

    /// Number of frames written.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The frames in event order (rejected events left out).
    pub fn frames(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.ends.len()).map(move |i| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            &self.buf[start..self.ends[i]]
        })
    }

    /// Events that could not be encoded, by their index in the input batch.
    pub fn rejected(&self) -> &[(usize, EncodeError)] {
        &self.rejected
    }

    /// Total bytes of all frames.
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }
}
