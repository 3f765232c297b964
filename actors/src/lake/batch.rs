//! v2 events → Arrow record batches in the table's own Arrow schema (field ids
//! and nested field names included, so the Parquet writer and readers agree).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Decimal128Array, Int64Array, ListBuilder, MapBuilder, MapFieldNames, RecordBatch,
    StringArray, StringBuilder, TimestampMicrosecondArray,
};
use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, FieldRef, SchemaRef};
use arrow::error::ArrowError;
use compact_str::CompactString;
use k2_core::model::decimal;
use k2_core::{AssetClass, QuoteV2, Timestamp, TradeV2, VendorData};
use rust_decimal::Decimal;

/// A v2 record that lands in a table: the fields every v2 record shares, and
/// its own columns.
pub trait LakeRow: Send + Sync + 'static {
    /// A column of this record's own fields (None for the shared ones).
    fn own_column(rows: &[Self], name: &str, data_type: &DataType) -> Option<Result<ArrayRef, ArrowError>>
    where
        Self: Sized;
    fn message_id(&self) -> uuid::Uuid;
    fn exchange(&self) -> &CompactString;
    fn symbol(&self) -> &CompactString;
    fn asset_class(&self) -> AssetClass;
    fn timestamp(&self) -> Timestamp;
    fn currency(&self) -> &str;
    fn source_sequence(&self) -> Option<i64>;
    fn ingestion_timestamp(&self) -> Timestamp;
    fn platform_sequence(&self) -> Option<i64>;
    fn vendor_data(&self) -> Option<&VendorData>;
    fn is_sample_data(&self) -> bool;
    fn timestamp_micros(&self) -> i64 {
        self.timestamp().as_micros()
    }
}

/// One column (by field name) from `rows`.
fn column<R: LakeRow>(rows: &[R], name: &str, dt: &DataType) -> Result<ArrayRef, ArrowError> {
    if let Some(own) = R::own_column(rows, name, dt) {
        return own;
    }
    Ok(match name {
        "message_id" => {
            let mut ids = uuid::Uuid::encode_buffer();
            let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 36);
            for r in rows {
                b.append_value(r.message_id().hyphenated().encode_lower(&mut ids));
            }
            Arc::new(b.finish())
        }
        "symbol" => strings(rows.iter().map(|r| r.symbol().as_str())),
        "exchange" => strings(rows.iter().map(|r| r.exchange().as_str())),
        "asset_class" => strings(rows.iter().map(|r| r.asset_class().as_str())),
        "timestamp" => timestamps(rows.iter().map(|r| r.timestamp()), dt)?,
        "currency" => strings(rows.iter().map(|r| r.currency())),
        "source_sequence" => optional_longs(rows.iter().map(|r| r.source_sequence())),
        "ingestion_timestamp" => timestamps(rows.iter().map(|r| r.ingestion_timestamp()), dt)?,
        "platform_sequence" => optional_longs(rows.iter().map(|r| r.platform_sequence())),
        "vendor_data" => string_maps(rows.iter().map(|r| r.vendor_data()), dt)?,
        "is_sample_data" => booleans(rows.iter().map(|r| r.is_sample_data())),
        other => return Err(unknown(other)),
    })
}

/// Builds a batch whose columns follow `schema` field by field.
pub fn to_batch<R: LakeRow>(schema: &SchemaRef, rows: &[R]) -> Result<RecordBatch, ArrowError> {
    let columns =
        schema.fields().iter().map(|f| column(rows, f.name(), f.data_type())).collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

/// Sorts a batch by (symbol, timestamp): the order data files are written in.
pub fn sort_for_files(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| ArrowError::SchemaError(format!("batch has no {name} column")))
    };
    let keys =
        [SortColumn { values: col("symbol")?, options: None }, SortColumn { values: col("timestamp")?, options: None }];
    let indices = lexsort_to_indices(&keys, None)?;
    take_record_batch(batch, &indices)
}

fn strings<'a>(rows: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(rows))
}

fn timestamps(rows: impl Iterator<Item = Timestamp>, data_type: &DataType) -> Result<ArrayRef, ArrowError> {
    let tz = match data_type {
        DataType::Timestamp(_, tz) => tz.clone(),
        other => return Err(ArrowError::SchemaError(format!("expected a timestamp column, found {other}"))),
    };
    Ok(Arc::new(TimestampMicrosecondArray::from_iter_values(rows.map(Timestamp::as_micros)).with_timezone_opt(tz)))
}

fn decimals(
    field: &'static str,
    rows: impl Iterator<Item = Option<Decimal>>,
    data_type: &DataType,
) -> Result<ArrayRef, ArrowError> {
    let DataType::Decimal128(precision, scale) = *data_type else {
        return Err(ArrowError::SchemaError(format!("{field}: expected decimal, found {data_type}")));
    };
    let values = rows
        .map(|d| d.map(|d| decimal::to_unscaled(field, d).map(i128::from)).transpose())
        .collect::<Result<Vec<Option<i128>>, _>>()
        .map_err(|e| ArrowError::InvalidArgumentError(e.to_string()))?;
    Ok(Arc::new(Decimal128Array::from(values).with_precision_and_scale(precision, scale)?))
}

fn optional_longs(rows: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(Int64Array::from_iter(rows))
}

fn booleans(rows: impl Iterator<Item = bool>) -> ArrayRef {
    Arc::new(BooleanArray::from_iter(rows.map(Some)))
}

fn string_lists<'a>(
    rows: impl Iterator<Item = &'a [CompactString]>,
    data_type: &DataType,
) -> Result<ArrayRef, ArrowError> {
    let DataType::List(element) = data_type else {
        return Err(ArrowError::SchemaError(format!("expected a list column, found {data_type}")));
    };
    let mut b = ListBuilder::new(StringBuilder::new()).with_field(element.clone());
    for row in rows {
        for s in row {
            b.values().append_value(s);
        }
        b.append(true);
    }
    Ok(Arc::new(b.finish()))
}

fn string_maps<'a>(
    rows: impl Iterator<Item = Option<&'a VendorData>>,
    data_type: &DataType,
) -> Result<ArrayRef, ArrowError> {
    let DataType::Map(entries, _) = data_type else {
        return Err(ArrowError::SchemaError(format!("expected a map column, found {data_type}")));
    };
    let DataType::Struct(kv) = entries.data_type() else {
        return Err(ArrowError::SchemaError("map entries are not a struct".into()));
    };
    let (key, value): (&FieldRef, &FieldRef) = match kv.iter().collect::<Vec<_>>()[..] {
        [k, v] => (k, v),
        _ => return Err(ArrowError::SchemaError("map entries need a key and a value".into())),
    };
    let names = MapFieldNames { entry: entries.name().clone(), key: key.name().clone(), value: value.name().clone() };
    let mut b = MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new())
        .with_keys_field(key.clone())
        .with_values_field(value.clone());
    for row in rows {
        match row {
            Some(map) => {
                for (k, v) in map.iter() {
                    b.keys().append_value(k);
                    b.values().append_value(v);
                }
                b.append(true)?;
            }
            None => b.append(false)?,
        }
    }
    Ok(Arc::new(b.finish()))
}

fn unknown(name: &str) -> ArrowError {
    ArrowError::SchemaError(format!("the table has a column {name} that the v2 record does not"))
}

/// The shared fields' accessors, the same for every v2 record.
macro_rules! shared_fields {
    () => {
        fn message_id(&self) -> uuid::Uuid {
            self.message_id
        }
        fn exchange(&self) -> &CompactString {
            &self.exchange
        }
        fn symbol(&self) -> &CompactString {
            &self.symbol
        }
        fn asset_class(&self) -> AssetClass {
            self.asset_class
        }
        fn timestamp(&self) -> Timestamp {
            self.timestamp
        }
        fn currency(&self) -> &str {
            &self.currency
        }
        fn source_sequence(&self) -> Option<i64> {
            self.source_sequence
        }
        fn ingestion_timestamp(&self) -> Timestamp {
            self.ingestion_timestamp
        }
        fn platform_sequence(&self) -> Option<i64> {
            self.platform_sequence
        }
        fn vendor_data(&self) -> Option<&VendorData> {
            self.vendor_data.as_ref()
        }
        fn is_sample_data(&self) -> bool {
            self.is_sample_data
        }
    };
}

impl LakeRow for TradeV2 {
    fn own_column(rows: &[Self], name: &str, dt: &DataType) -> Option<Result<ArrayRef, ArrowError>> {
        Some(match name {
            "trade_id" => Ok(strings(rows.iter().map(|r| r.trade_id.as_str()))),
            "price" => decimals("price", rows.iter().map(|r| Some(r.price)), dt),
            "quantity" => decimals("quantity", rows.iter().map(|r| Some(r.quantity)), dt),
            "side" => Ok(strings(rows.iter().map(|r| r.side.as_str()))),
            "trade_conditions" => string_lists(rows.iter().map(|r| r.trade_conditions.as_slice()), dt),
            _ => return None,
        })
    }

    shared_fields!();
}

impl LakeRow for QuoteV2 {
    fn own_column(rows: &[Self], name: &str, dt: &DataType) -> Option<Result<ArrayRef, ArrowError>> {
        let side =
            |field: &'static str, get: fn(&QuoteV2) -> Option<Decimal>| decimals(field, rows.iter().map(get), dt);
        Some(match name {
            "quote_id" => Ok(strings(rows.iter().map(|r| r.quote_id.as_str()))),
            "bid_price" => side("bid_price", |r| r.bid_price),
            "bid_quantity" => side("bid_quantity", |r| r.bid_quantity),
            "ask_price" => side("ask_price", |r| r.ask_price),
            "ask_quantity" => side("ask_quantity", |r| r.ask_quantity),
            _ => return None,
        })
    }

    shared_fields!();
}
