//! A walk over a datum, before apache-avro decodes it, that refuses any array
//! or map block claiming more items than there are bytes left.
//!
//! apache-avro reserves room for a whole block as soon as it reads its count
//! (up to 512 Mi items, many gigabytes for a map), and a failed allocation
//! aborts the process: a 160-byte frame did that in the confluent_avro fuzz
//! target. Every item of the v2 schemas' arrays and maps takes at least one
//! byte, so a count beyond the bytes left cannot be honest.
//!
//! The walk reads lengths, counts and union branches and skips the rest; it
//! knows the types the v2 schemas use and refuses any other, since
//! [`super`] decodes with those schemas only.

use apache_avro::Schema;

/// Why a datum was refused before decoding.
pub(super) type Refusal = &'static str;

pub(super) fn check(schema: &Schema, datum: &[u8]) -> Result<(), Refusal> {
    let mut records = Vec::new();
    named_records(schema, &mut records);
    Cursor { bytes: datum, at: 0, records }.value(schema)
}

/// Every record the schema defines, wherever it sits: a field may name one
/// defined inside an array whose block held no item.
fn named_records<'a>(schema: &'a Schema, out: &mut Vec<&'a Schema>) {
    match schema {
        Schema::Record(record) => {
            out.push(schema);
            for f in &record.fields {
                named_records(&f.schema, out);
            }
        }
        Schema::Array(array) => named_records(&array.items, out),
        Schema::Map(map) => named_records(&map.types, out),
        Schema::Union(union) => union.variants().iter().for_each(|v| named_records(v, out)),
        _ => {}
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    /// The schema's records, for a field that names one (the book schema's
    /// `asks` names the `BookLevel` its `bids` defines).
    records: Vec<&'a Schema>,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn skip(&mut self, n: usize) -> Result<(), Refusal> {
        if n > self.remaining() {
            return Err("datum truncated");
        }
        self.at += n;
        Ok(())
    }

    /// A zig-zag varint of at most ten bytes.
    fn long(&mut self) -> Result<i64, Refusal> {
        let mut z = 0u64;
        for shift in (0..70).step_by(7) {
            let &b = self.bytes.get(self.at).ok_or("datum truncated")?;
            self.at += 1;
            z |= u64::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
            if b & 0x80 == 0 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        Err("varint longer than ten bytes")
    }

    fn value(&mut self, schema: &'a Schema) -> Result<(), Refusal> {
        match schema {
            Schema::Null => Ok(()),
            Schema::Boolean => self.skip(1),
            Schema::Int
            | Schema::Long
            | Schema::Enum(_)
            | Schema::Date
            | Schema::TimeMillis
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => self.long().map(drop),
            Schema::Float => self.skip(4),
            Schema::Double => self.skip(8),
            Schema::Bytes | Schema::String => {
                let n = usize::try_from(self.long()?).map_err(|_| "negative length")?;
                self.skip(n)
            }
            Schema::Fixed(fixed) => self.skip(fixed.size),
            Schema::Decimal(decimal) => self.value(&decimal.inner),
            Schema::Array(array) => self.blocks(|c| c.value(&array.items)),
            Schema::Map(map) => self.blocks(|c| {
                c.value(&Schema::String)?;
                c.value(&map.types)
            }),
            Schema::Union(union) => {
                let branch = usize::try_from(self.long()?).ok().and_then(|i| union.variants().get(i));
                self.value(branch.ok_or("union branch out of range")?)
            }
            Schema::Record(record) => record.fields.iter().try_for_each(|f| self.value(&f.schema)),
            Schema::Ref { name } => {
                let named = self.records.iter().copied().find(|s| matches!(s, Schema::Record(r) if r.name == *name));
                self.value(named.ok_or("a reference to a record the schema does not define")?)
            }
            _ => Err("a schema type the v2 schemas do not use"),
        }
    }

    /// The blocks of an array or map, each item read by `item`.
    fn blocks(&mut self, mut item: impl FnMut(&mut Self) -> Result<(), Refusal>) -> Result<(), Refusal> {
        loop {
            let count = match self.long()? {
                0 => return Ok(()),
                // A negative count is followed by the block's size in bytes.
                n if n < 0 => {
                    self.long()?;
                    n.unsigned_abs()
                }
                n => n.unsigned_abs(),
            };
            if count > self.remaining() as u64 {
                return Err("a block claims more items than there are bytes left");
            }
            for _ in 0..count {
                item(self)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::codec::binary::put_long;
    use crate::codec::generic::{ValueError, decode_quote, decode_trade};
    use crate::codec::wire::{SchemaIds, WireCodec};
    use crate::model::{AssetClass, QuoteV2, Timestamp, TradeSide, TradeV2};
    use crate::{MarketEvent, VendorData};

    /// A quote whose every field is empty or null up to `vendor_data`, a map
    /// that claims `count` entries.
    fn quote_claiming(count: i64) -> Vec<u8> {
        let mut datum = vec![0; 13]; // 4 strings, enum, long, 4 nulls, string, null, long
        datum.extend([0, 2]); // platform_sequence null, vendor_data a map
        put_long(&mut datum, count);
        datum
    }

    /// Found by the confluent_avro fuzz target: apache-avro reserved room
    /// for half a billion map entries from a few bytes and the failed
    /// allocation aborted the process.
    #[test]
    fn a_block_count_beyond_the_datum_is_refused_before_apache_avro() {
        let refused = decode_quote(&quote_claiming(500_000_000)).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "datum refused before decoding: a block claims more items than there are bytes left"
        );
        // A count within the datum is let through: apache-avro decodes it,
        // and only then is the empty message id found wanting.
        let mut one = quote_claiming(1);
        one.extend([2, b'k', 2, b'v', 0, 0]);
        assert!(matches!(decode_quote(&one), Err(ValueError::Shape { field: "message_id", .. })));
    }

    #[test]
    fn real_datums_pass() {
        let vendor: VendorData = [("a", "1"), ("b", "2")].into_iter().collect();
        let trade = TradeV2 {
            message_id: uuid::Uuid::nil(),
            trade_id: "T-1".into(),
            symbol: "BHP".into(),
            exchange: "ASX".into(),
            asset_class: AssetClass::Equities,
            timestamp: Timestamp::from_micros(1),
            price: rust_decimal::Decimal::new(15, 1),
            quantity: rust_decimal::Decimal::ONE,
            currency: "AUD".into(),
            side: TradeSide::Buy,
            trade_conditions: vec!["X".into(), "".into()],
            source_sequence: Some(1),
            ingestion_timestamp: Timestamp::from_micros(2),
            platform_sequence: None,
            vendor_data: Some(vendor.clone()),
            is_sample_data: true,
        };
        let quote = QuoteV2 {
            message_id: uuid::Uuid::nil(),
            quote_id: "Q-1".into(),
            symbol: "BHP".into(),
            exchange: "ASX".into(),
            asset_class: AssetClass::Equities,
            timestamp: Timestamp::from_micros(1),
            bid_price: Some(rust_decimal::Decimal::ONE),
            bid_quantity: Some(rust_decimal::Decimal::ONE),
            ask_price: None,
            ask_quantity: None,
            currency: "AUD".into(),
            source_sequence: None,
            ingestion_timestamp: Timestamp::from_micros(2),
            platform_sequence: Some(3),
            vendor_data: Some(vendor),
            is_sample_data: false,
        };
        let codec = WireCodec::new(SchemaIds { trade: 1, quote: 2 });
        let frame = codec.encode(&MarketEvent::Trade(trade.clone())).unwrap();
        assert_eq!(decode_trade(&frame[5..]).unwrap(), trade);
        let frame = codec.encode(&MarketEvent::Quote(quote.clone())).unwrap();
        assert_eq!(decode_quote(&frame[5..]).unwrap(), quote);
    }
}
