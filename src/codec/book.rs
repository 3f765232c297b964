//! The schema-specific Avro encoder and decoder for `BookEventV2`
//! (schemas/book_v2.avsc), beside [`super::datum`]'s trade and quote; tests
//! hold its bytes equal to apache-avro's.

use super::binary::{Reader, put_decimal, put_long, put_str};
use super::datum::{
    check_time, finish, put_opt_long, put_uuid, read_asset_class, read_compact, read_decimal, read_opt_long, read_time,
    read_uuid,
};
use super::{DecodeError, EncodeError};
use crate::model::decimal::to_unscaled;
use crate::model::{BookEventKind, BookEventV2, BookLevel};

/// Appends the Avro datum of a book event (no header). Every decimal and
/// time is checked before anything is written, so a refused event leaves
/// `out` as it was.
pub fn encode_book(b: &BookEventV2, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let bids = unscaled_levels("bids", &b.bids)?;
    let asks = unscaled_levels("asks", &b.asks)?;
    check_time("timestamp", b.timestamp)?;
    check_time("ingestion_timestamp", b.ingestion_timestamp)?;
    put_uuid(out, &b.message_id);
    put_str(out, &b.symbol);
    put_str(out, &b.exchange);
    put_long(out, b.asset_class.index() as i64);
    put_long(out, b.kind.index() as i64);
    put_long(out, b.timestamp.as_micros());
    put_long(out, b.first_update_id);
    put_long(out, b.final_update_id);
    put_levels(out, &bids);
    put_levels(out, &asks);
    put_opt_long(out, b.depth.map(i64::from));
    match &b.cause {
        None => put_long(out, 0),
        Some(c) => {
            put_long(out, 1);
            put_str(out, c);
        }
    }
    put_long(out, b.ingestion_timestamp.as_micros());
    put_opt_long(out, b.platform_sequence);
    out.push(u8::from(b.is_sample_data));
    Ok(())
}

/// Reads a whole book datum; bytes left over are an error.
pub fn decode_book(datum: &[u8]) -> Result<BookEventV2, DecodeError> {
    let mut r = Reader::new(datum);
    let b = BookEventV2 {
        message_id: read_uuid(&mut r)?,
        symbol: read_compact(&mut r, "symbol")?,
        exchange: read_compact(&mut r, "exchange")?,
        asset_class: read_asset_class(&mut r)?,
        kind: {
            let i = r.index("kind", BookEventKind::SYMBOLS.len())?;
            BookEventKind::from_index(i).ok_or(DecodeError::corrupt("kind", "index out of range"))?
        },
        timestamp: read_time(&mut r, "timestamp")?,
        first_update_id: r.long("first_update_id")?,
        final_update_id: r.long("final_update_id")?,
        bids: read_levels(&mut r, "bids")?,
        asks: read_levels(&mut r, "asks")?,
        depth: match read_opt_long(&mut r, "depth")? {
            None => None,
            Some(d) => Some(i32::try_from(d).map_err(|_| DecodeError::corrupt("depth", "not an int"))?),
        },
        cause: match r.index("cause", 2)? {
            0 => None,
            _ => Some(read_compact(&mut r, "cause")?),
        },
        ingestion_timestamp: read_time(&mut r, "ingestion_timestamp")?,
        platform_sequence: read_opt_long(&mut r, "platform_sequence")?,
        is_sample_data: r.boolean("is_sample_data")?,
    };
    finish(&r)?;
    Ok(b)
}

fn unscaled_levels(field: &'static str, levels: &[BookLevel]) -> Result<Vec<(i64, i64)>, EncodeError> {
    levels.iter().map(|(p, q)| Ok((to_unscaled(field, *p)?, to_unscaled(field, *q)?))).collect()
}

/// One block with every level, then the end marker (as apache-avro writes
/// an array).
fn put_levels(out: &mut Vec<u8>, levels: &[(i64, i64)]) {
    if !levels.is_empty() {
        put_long(out, levels.len() as i64);
        for (price, quantity) in levels {
            put_decimal(out, *price);
            put_decimal(out, *quantity);
        }
    }
    put_long(out, 0);
}

fn read_levels(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<BookLevel>, DecodeError> {
    let mut levels = Vec::new();
    loop {
        let n = r.block_count(field)?;
        if n == 0 {
            return Ok(levels);
        }
        // A level takes at least two bytes: a count beyond that is corrupt,
        // and checking it first keeps a bad count from reserving huge memory.
        if n.saturating_mul(2) > r.remaining() {
            return Err(DecodeError::Truncated { field });
        }
        levels.reserve(n);
        for _ in 0..n {
            let price = read_decimal(r, field)?;
            let quantity = read_decimal(r, field)?;
            levels.push((price, quantity));
        }
    }
}
