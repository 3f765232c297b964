//! The same records through apache-avro's generic `Value`, independent of the
//! hand-written codec in [`super::datum`].
//!
//! This path is slow (a tree per record) and is not used on the hot path. It is
//! the reference the fast codec is tested against, and what a caller uses to
//! resolve data written with another version of the schema.

mod book;
mod bounds;

pub use book::{book_to_value, decode_book, encode_book, value_to_book};

use std::collections::HashMap;

use apache_avro::types::Value;
use compact_str::CompactString;
use num_bigint::BigInt;
use rust_decimal::Decimal;
use thiserror::Error;

use crate::model::decimal::{DecimalError, from_unscaled, to_unscaled};
use crate::model::{AssetClass, QuoteV2, Timestamp, TradeSide, TradeV2, VendorData};

/// A `Value` that is not a v2 record of the expected shape.
#[derive(Debug, Error)]
pub enum ValueError {
    #[error("field {field}: expected {expected}")]
    Shape { field: &'static str, expected: &'static str },
    #[error("field {0} is missing")]
    Missing(&'static str),
    #[error(transparent)]
    Decimal(#[from] DecimalError),
    #[error(transparent)]
    Avro(#[from] Box<apache_avro::Error>),
    #[error("datum refused before decoding: {0}")]
    Implausible(&'static str),
}

/// apache-avro's encoding of a trade over schemas/trade_v2.avsc.
pub fn encode_trade(t: &TradeV2) -> Result<Vec<u8>, ValueError> {
    let value = trade_to_value(t)?;
    apache_avro::to_avro_datum(crate::schema::trade_schema(), value).map_err(|e| Box::new(e).into())
}

/// apache-avro's encoding of a quote over schemas/quote_v2.avsc.
pub fn encode_quote(q: &QuoteV2) -> Result<Vec<u8>, ValueError> {
    let value = quote_to_value(q)?;
    apache_avro::to_avro_datum(crate::schema::quote_schema(), value).map_err(|e| Box::new(e).into())
}

/// apache-avro's decoding of a trade datum written with schemas/trade_v2.avsc,
/// once [`bounds`] has found its block counts plausible.
pub fn decode_trade(mut datum: &[u8]) -> Result<TradeV2, ValueError> {
    let schema = crate::schema::trade_schema();
    bounds::check(schema, datum).map_err(ValueError::Implausible)?;
    let value = apache_avro::from_avro_datum(schema, &mut datum, None).map_err(Box::new)?;
    value_to_trade(value)
}

/// apache-avro's decoding of a quote datum written with schemas/quote_v2.avsc,
/// once [`bounds`] has found its block counts plausible.
pub fn decode_quote(mut datum: &[u8]) -> Result<QuoteV2, ValueError> {
    let schema = crate::schema::quote_schema();
    bounds::check(schema, datum).map_err(ValueError::Implausible)?;
    let value = apache_avro::from_avro_datum(schema, &mut datum, None).map_err(Box::new)?;
    value_to_quote(value)
}

pub fn trade_to_value(t: &TradeV2) -> Result<Value, ValueError> {
    Ok(Value::Record(vec![
        ("message_id".into(), Value::String(t.message_id.to_string())),
        ("trade_id".into(), string(&t.trade_id)),
        ("symbol".into(), string(&t.symbol)),
        ("exchange".into(), string(&t.exchange)),
        ("asset_class".into(), asset_class(t.asset_class)),
        ("timestamp".into(), Value::TimestampMicros(t.timestamp.as_micros())),
        ("price".into(), decimal("price", t.price)?),
        ("quantity".into(), decimal("quantity", t.quantity)?),
        ("currency".into(), string(&t.currency)),
        ("side".into(), Value::Enum(t.side.index() as u32, t.side.as_str().into())),
        ("trade_conditions".into(), Value::Array(t.trade_conditions.iter().map(|c| string(c)).collect())),
        ("source_sequence".into(), opt_long(t.source_sequence)),
        ("ingestion_timestamp".into(), Value::TimestampMicros(t.ingestion_timestamp.as_micros())),
        ("platform_sequence".into(), opt_long(t.platform_sequence)),
        ("vendor_data".into(), vendor_data(t.vendor_data.as_ref())),
        ("is_sample_data".into(), Value::Boolean(t.is_sample_data)),
    ]))
}

pub fn quote_to_value(q: &QuoteV2) -> Result<Value, ValueError> {
    Ok(Value::Record(vec![
        ("message_id".into(), Value::String(q.message_id.to_string())),
        ("quote_id".into(), string(&q.quote_id)),
        ("symbol".into(), string(&q.symbol)),
        ("exchange".into(), string(&q.exchange)),
        ("asset_class".into(), asset_class(q.asset_class)),
        ("timestamp".into(), Value::TimestampMicros(q.timestamp.as_micros())),
        ("bid_price".into(), opt_decimal("bid_price", q.bid_price)?),
        ("bid_quantity".into(), opt_decimal("bid_quantity", q.bid_quantity)?),
        ("ask_price".into(), opt_decimal("ask_price", q.ask_price)?),
        ("ask_quantity".into(), opt_decimal("ask_quantity", q.ask_quantity)?),
        ("currency".into(), string(&q.currency)),
        ("source_sequence".into(), opt_long(q.source_sequence)),
        ("ingestion_timestamp".into(), Value::TimestampMicros(q.ingestion_timestamp.as_micros())),
        ("platform_sequence".into(), opt_long(q.platform_sequence)),
        ("vendor_data".into(), vendor_data(q.vendor_data.as_ref())),
        ("is_sample_data".into(), Value::Boolean(q.is_sample_data)),
    ]))
}

pub fn value_to_trade(value: Value) -> Result<TradeV2, ValueError> {
    let mut f = Fields::of(value)?;
    Ok(TradeV2 {
        message_id: f.uuid("message_id")?,
        trade_id: f.string("trade_id")?,
        symbol: f.string("symbol")?,
        exchange: f.string("exchange")?,
        asset_class: f.asset_class()?,
        timestamp: f.timestamp("timestamp")?,
        price: f.decimal("price")?,
        quantity: f.decimal("quantity")?,
        currency: f.string("currency")?,
        side: match f.take("side")? {
            Value::Enum(i, _) => TradeSide::from_index(i as usize).ok_or(shape("side", "a TradeSide symbol"))?,
            _ => return Err(shape("side", "an enum")),
        },
        trade_conditions: match f.take("trade_conditions")? {
            Value::Array(items) => {
                items.into_iter().map(|v| as_string("trade_conditions", v)).collect::<Result<_, _>>()?
            }
            _ => return Err(shape("trade_conditions", "an array")),
        },
        source_sequence: f.opt_long("source_sequence")?,
        ingestion_timestamp: f.timestamp("ingestion_timestamp")?,
        platform_sequence: f.opt_long("platform_sequence")?,
        vendor_data: f.vendor_data()?,
        is_sample_data: f.boolean("is_sample_data")?,
    })
}

pub fn value_to_quote(value: Value) -> Result<QuoteV2, ValueError> {
    let mut f = Fields::of(value)?;
    Ok(QuoteV2 {
        message_id: f.uuid("message_id")?,
        quote_id: f.string("quote_id")?,
        symbol: f.string("symbol")?,
        exchange: f.string("exchange")?,
        asset_class: f.asset_class()?,
        timestamp: f.timestamp("timestamp")?,
        bid_price: f.opt_decimal("bid_price")?,
        bid_quantity: f.opt_decimal("bid_quantity")?,
        ask_price: f.opt_decimal("ask_price")?,
        ask_quantity: f.opt_decimal("ask_quantity")?,
        currency: f.string("currency")?,
        source_sequence: f.opt_long("source_sequence")?,
        ingestion_timestamp: f.timestamp("ingestion_timestamp")?,
        platform_sequence: f.opt_long("platform_sequence")?,
        vendor_data: f.vendor_data()?,
        is_sample_data: f.boolean("is_sample_data")?,
    })
}

fn shape(field: &'static str, expected: &'static str) -> ValueError {
    ValueError::Shape { field, expected }
}

fn string(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn asset_class(a: AssetClass) -> Value {
    Value::Enum(a.index() as u32, a.as_str().into())
}

fn decimal(field: &'static str, d: Decimal) -> Result<Value, ValueError> {
    let unscaled = to_unscaled(field, d)?;
    // num-bigint's minimal two's complement, as Java's BigInteger writes it;
    // deliberately not the fast codec's own byte trimming.
    let bytes = BigInt::from(unscaled).to_signed_bytes_be();
    Ok(Value::Decimal(apache_avro::Decimal::from(bytes)))
}

fn opt_decimal(field: &'static str, d: Option<Decimal>) -> Result<Value, ValueError> {
    Ok(match d {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(d) => Value::Union(1, Box::new(decimal(field, d)?)),
    })
}

fn opt_long(v: Option<i64>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(Value::Long(v))),
    }
}

fn vendor_data(map: Option<&VendorData>) -> Value {
    match map {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(m) => {
            let entries: HashMap<String, Value> = m.iter().map(|(k, v)| (k.to_owned(), string(v))).collect();
            Value::Union(1, Box::new(Value::Map(entries)))
        }
    }
}

fn as_string(field: &'static str, v: Value) -> Result<CompactString, ValueError> {
    match v {
        Value::String(s) => Ok(s.into()),
        _ => Err(shape(field, "a string")),
    }
}

/// The fields of a decoded record, taken out by name.
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn of(value: Value) -> Result<Self, ValueError> {
        match value {
            Value::Record(fields) => Ok(Self(fields)),
            _ => Err(shape("record", "a record")),
        }
    }

    fn take(&mut self, field: &'static str) -> Result<Value, ValueError> {
        let i = self.0.iter().position(|(n, _)| n == field).ok_or(ValueError::Missing(field))?;
        Ok(std::mem::replace(&mut self.0[i].1, Value::Null))
    }

    fn string(&mut self, field: &'static str) -> Result<CompactString, ValueError> {
        as_string(field, self.take(field)?)
    }

    fn uuid(&mut self, field: &'static str) -> Result<uuid::Uuid, ValueError> {
        let s = self.string(field)?;
        uuid::Uuid::try_parse(&s).map_err(|_| shape(field, "a UUID string"))
    }

    fn asset_class(&mut self) -> Result<AssetClass, ValueError> {
        match self.take("asset_class")? {
            Value::Enum(i, _) => AssetClass::from_index(i as usize).ok_or(shape("asset_class", "an AssetClass symbol")),
            _ => Err(shape("asset_class", "an enum")),
        }
    }

    fn timestamp(&mut self, field: &'static str) -> Result<Timestamp, ValueError> {
        match self.take(field)? {
            Value::TimestampMicros(v) | Value::Long(v) => Ok(Timestamp::from_micros(v)),
            _ => Err(shape(field, "timestamp-micros")),
        }
    }

    fn long(&mut self, field: &'static str) -> Result<i64, ValueError> {
        match self.take(field)? {
            Value::Long(v) => Ok(v),
            _ => Err(shape(field, "a long")),
        }
    }

    fn boolean(&mut self, field: &'static str) -> Result<bool, ValueError> {
        match self.take(field)? {
            Value::Boolean(b) => Ok(b),
            _ => Err(shape(field, "a boolean")),
        }
    }

    fn decimal(&mut self, field: &'static str) -> Result<Decimal, ValueError> {
        value_decimal(field, self.take(field)?)
    }

    fn opt_decimal(&mut self, field: &'static str) -> Result<Option<Decimal>, ValueError> {
        match self.take(field)? {
            Value::Union(_, inner) => match *inner {
                Value::Null => Ok(None),
                other => value_decimal(field, other).map(Some),
            },
            _ => Err(shape(field, "a nullable decimal")),
        }
    }

    fn opt_long(&mut self, field: &'static str) -> Result<Option<i64>, ValueError> {
        match self.take(field)? {
            Value::Union(_, inner) => match *inner {
                Value::Null => Ok(None),
                Value::Long(v) => Ok(Some(v)),
                _ => Err(shape(field, "null or long")),
            },
            _ => Err(shape(field, "a union")),
        }
    }

    fn vendor_data(&mut self) -> Result<Option<VendorData>, ValueError> {
        match self.take("vendor_data")? {
            Value::Union(_, inner) => match *inner {
                Value::Null => Ok(None),
                Value::Map(m) => m
                    .into_iter()
                    .map(|(k, v)| Ok((k, as_string("vendor_data", v)?)))
                    .collect::<Result<VendorData, ValueError>>()
                    .map(Some),
                _ => Err(shape("vendor_data", "null or a map")),
            },
            _ => Err(shape("vendor_data", "a union")),
        }
    }
}

fn value_decimal(field: &'static str, v: Value) -> Result<Decimal, ValueError> {
    let Value::Decimal(d) = v else {
        return Err(shape(field, "a decimal"));
    };
    let big = BigInt::from(d);
    let unscaled = i64::try_from(&big).map_err(|_| shape(field, "a decimal(18,8) within 18 digits"))?;
    Ok(from_unscaled(field, unscaled)?)
}
