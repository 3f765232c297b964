//! apache-avro's generic path for `BookEventV2`: the reference the fast book
//! codec ([`crate::codec::book`]) is tested against.

use apache_avro::types::Value;

use super::{Fields, ValueError, asset_class, bounds, decimal, opt_long, shape, string, value_decimal};
use crate::model::{BookEventKind, BookEventV2, BookLevel};

/// apache-avro's encoding of a book event over schemas/book_v2.avsc.
pub fn encode_book(b: &BookEventV2) -> Result<Vec<u8>, ValueError> {
    let value = book_to_value(b)?;
    apache_avro::to_avro_datum(crate::schema::book_schema(), value).map_err(|e| Box::new(e).into())
}

/// apache-avro's decoding of a book datum, once [`bounds`] has found its
/// block counts plausible.
pub fn decode_book(mut datum: &[u8]) -> Result<BookEventV2, ValueError> {
    let schema = crate::schema::book_schema();
    bounds::check(schema, datum).map_err(ValueError::Implausible)?;
    let value = apache_avro::from_avro_datum(schema, &mut datum, None).map_err(Box::new)?;
    value_to_book(value)
}

pub fn book_to_value(b: &BookEventV2) -> Result<Value, ValueError> {
    Ok(Value::Record(vec![
        ("message_id".into(), Value::String(b.message_id.to_string())),
        ("symbol".into(), string(&b.symbol)),
        ("exchange".into(), string(&b.exchange)),
        ("asset_class".into(), asset_class(b.asset_class)),
        ("kind".into(), Value::Enum(b.kind.index() as u32, b.kind.as_str().into())),
        ("timestamp".into(), Value::TimestampMicros(b.timestamp.as_micros())),
        ("first_update_id".into(), Value::Long(b.first_update_id)),
        ("final_update_id".into(), Value::Long(b.final_update_id)),
        ("bids".into(), levels("bids", &b.bids)?),
        ("asks".into(), levels("asks", &b.asks)?),
        (
            "depth".into(),
            match b.depth {
                None => Value::Union(0, Box::new(Value::Null)),
                Some(d) => Value::Union(1, Box::new(Value::Int(d))),
            },
        ),
        (
            "cause".into(),
            match &b.cause {
                None => Value::Union(0, Box::new(Value::Null)),
                Some(c) => Value::Union(1, Box::new(string(c))),
            },
        ),
        ("ingestion_timestamp".into(), Value::TimestampMicros(b.ingestion_timestamp.as_micros())),
        ("platform_sequence".into(), opt_long(b.platform_sequence)),
        ("is_sample_data".into(), Value::Boolean(b.is_sample_data)),
    ]))
}

pub fn value_to_book(value: Value) -> Result<BookEventV2, ValueError> {
    let mut f = Fields::of(value)?;
    Ok(BookEventV2 {
        message_id: f.uuid("message_id")?,
        symbol: f.string("symbol")?,
        exchange: f.string("exchange")?,
        asset_class: f.asset_class()?,
        kind: match f.take("kind")? {
            Value::Enum(i, _) => {
                BookEventKind::from_index(i as usize).ok_or(shape("kind", "a BookEventKind symbol"))?
            }
            _ => return Err(shape("kind", "an enum")),
        },
        timestamp: f.timestamp("timestamp")?,
        first_update_id: f.long("first_update_id")?,
        final_update_id: f.long("final_update_id")?,
        bids: value_levels("bids", f.take("bids")?)?,
        asks: value_levels("asks", f.take("asks")?)?,
        depth: match f.take("depth")? {
            Value::Union(_, inner) => match *inner {
                Value::Null => None,
                Value::Int(d) => Some(d),
                _ => return Err(shape("depth", "null or int")),
            },
            _ => return Err(shape("depth", "a union")),
        },
        cause: match f.take("cause")? {
            Value::Union(_, inner) => match *inner {
                Value::Null => None,
                Value::String(s) => Some(s.into()),
                _ => return Err(shape("cause", "null or string")),
            },
            _ => return Err(shape("cause", "a union")),
        },
        ingestion_timestamp: f.timestamp("ingestion_timestamp")?,
        platform_sequence: f.opt_long("platform_sequence")?,
        is_sample_data: f.boolean("is_sample_data")?,
    })
}

fn levels(field: &'static str, levels: &[BookLevel]) -> Result<Value, ValueError> {
    let items = levels
        .iter()
        .map(|(p, q)| {
            Ok(Value::Record(vec![("price".into(), decimal(field, *p)?), ("quantity".into(), decimal(field, *q)?)]))
        })
        .collect::<Result<Vec<_>, ValueError>>()?;
    Ok(Value::Array(items))
}

fn value_levels(field: &'static str, v: Value) -> Result<Vec<BookLevel>, ValueError> {
    let Value::Array(items) = v else {
        return Err(shape(field, "an array"));
    };
    items
        .into_iter()
        .map(|item| {
            let mut level = Fields::of(item)?;
            Ok((value_decimal(field, level.take("price")?)?, value_decimal(field, level.take("quantity")?)?))
        })
        .collect()
}
