//! v2 events → Arrow record batches in the table's own Arrow schema (field ids
//! and nested field names included, so the Parquet writer and readers agree).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Decimal128Array, Int64Array, ListBuilder, MapBuilder, MapFieldNames, RecordBatch,
    StringArray, StringBuilder, TimestampMicrosecondArray,
};
use arrow::compute::{SortColumn, concat_batches, interleave_record_batch, lexsort_to_indices};
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

/// Rows of several batches in the order data files are written in, by
/// (symbol, timestamp) with ties in their order (batch by batch, row by
/// row), as (batch, row) pairs: any run of them is built straight from the batches
/// (one copy, no concatenation first), so that writers build their own
/// runs side by side.
pub struct FileOrder {
    schema: SchemaRef,
    sources: Vec<RecordBatch>,
    order: Vec<(usize, usize)>,
}

impl FileOrder {
    /// The (symbol, timestamp) order of trades and quotes.
    pub fn of(schema: &SchemaRef, batches: Vec<RecordBatch>) -> Result<Self, ArrowError> {
        Self::by(schema, batches, "timestamp")
    }

    /// The (symbol, `time`) order.
    pub fn by(schema: &SchemaRef, batches: Vec<RecordBatch>, time: &str) -> Result<Self, ArrowError> {
        let col = |batch: &RecordBatch, name: &str| {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| ArrowError::SchemaError(format!("batch has no {name} column")))
        };
        let mut keys = Vec::with_capacity(batches.len());
        for batch in &batches {
            keys.push((col(batch, "symbol")?, col(batch, time)?));
        }
        if let Some(order) = sort_keys(&keys) {
            return Ok(Self { schema: schema.clone(), sources: batches, order });
        }
        let batch = concat_batches(schema, &batches)?;
        let (symbol, timestamp) = (col(&batch, "symbol")?, col(&batch, time)?);
        let keys = [SortColumn { values: symbol, options: None }, SortColumn { values: timestamp, options: None }];
        let order = lexsort_to_indices(&keys, None)?.values().iter().map(|&i| (0, i as usize)).collect();
        Ok(Self { schema: schema.clone(), sources: vec![batch], order })
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Rows `range` of the order, as one batch.
    pub fn rows(&self, range: std::ops::Range<usize>) -> Result<RecordBatch, ArrowError> {
        let order =
            self.order.get(range).ok_or_else(|| ArrowError::InvalidArgumentError("rows out of range".into()))?;
        if order.is_empty() {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        let refs: Vec<&RecordBatch> = self.sources.iter().collect();
        interleave_record_batch(&refs, order)
    }
}

/// The sorting order, as (batch, row), of non-null string symbols and
/// microsecond timestamps, by a symbol's rank among the batches' few
/// distinct symbols: comparing two integers instead of two strings per
/// step, and a stable sort, which merges the sorted runs that data files
/// and flushes are made of instead of sorting from scratch. A symbol is
/// looked up once per run of equal symbols, not once per row. None for
/// other columns (the caller sorts them generically).
fn sort_keys(columns: &[(ArrayRef, ArrayRef)]) -> Option<Vec<(usize, usize)>> {
    let mut typed = Vec::with_capacity(columns.len());
    let mut rows = 0usize;
    for (symbol, timestamp) in columns {
        let symbols = symbol.as_any().downcast_ref::<StringArray>()?;
        let times = timestamp.as_any().downcast_ref::<TimestampMicrosecondArray>()?;
        if symbols.null_count() > 0 || times.null_count() > 0 {
            return None;
        }
        rows += symbols.len();
        typed.push((symbols, times));
    }
    u32::try_from(rows).ok()?;
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut first: Vec<&str> = Vec::new();
    let mut row_ids: Vec<u32> = Vec::with_capacity(rows);
    for (symbols, _) in &typed {
        let mut last: Option<(&str, u32)> = None;
        for s in symbols.iter() {
            let s = s.unwrap_or_default();
            let id = match last {
                Some((name, id)) if name == s => id,
                _ => *ids.entry(s).or_insert_with(|| {
                    first.push(s);
                    u32::try_from(first.len() - 1).unwrap_or(u32::MAX)
                }),
            };
            last = Some((s, id));
            row_ids.push(id);
        }
    }
    let mut by_name: Vec<u32> = (0..u32::try_from(first.len()).ok()?).collect();
    by_name.sort_unstable_by_key(|&id| first[id as usize]);
    let mut rank = vec![0u32; first.len()];
    for (r, &id) in by_name.iter().enumerate() {
        rank[id as usize] = u32::try_from(r).ok()?;
    }
    // (rank, time, batch, row in batch); ties fall to input order.
    let mut keys: Vec<(u32, i64, u32, u32)> = Vec::with_capacity(rows);
    let mut ids = row_ids.iter();
    for (b, (_, times)) in typed.iter().enumerate() {
        for (i, &t) in times.values().iter().enumerate() {
            let id = *ids.next()?;
            keys.push((rank[id as usize], t, b as u32, i as u32));
        }
    }
    keys.sort_by_key(|&(r, t, _, _)| (r, t));
    Some(keys.into_iter().map(|(_, _, b, i)| (b as usize, i as usize)).collect())
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

#[cfg(test)]
mod tests {
    use arrow::datatypes::{Field, Schema, TimeUnit};

    use super::*;

    /// A batch of runs each sorted by (symbol, timestamp), as a compaction
    /// concatenates them, with ties across and within runs; `seq` numbers
    /// the rows in batch order.
    fn runs(seed: u64, runs: usize, rows: usize) -> RecordBatch {
        let mut state = seed;
        let mut next = move |n: u64| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        let (mut symbols, mut times) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let mut run: Vec<(String, i64)> =
                (0..rows).map(|_| (format!("S{}", next(7)), i64::try_from(next(20)).unwrap() - 10)).collect();
            run.sort();
            for (s, t) in run {
                symbols.push(s);
                times.push(t);
            }
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("symbol", DataType::Utf8, false),
            Field::new("timestamp", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
            Field::new("seq", DataType::Int64, false),
        ]));
        let n = i64::try_from(symbols.len()).unwrap();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(symbols)),
                Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
                Arc::new(Int64Array::from_iter_values(0..n)),
            ],
        )
        .unwrap()
    }

    fn sort_for_files(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch, ArrowError> {
        let order = FileOrder::of(schema, batches.to_vec())?;
        order.rows(0..order.len())
    }

    fn rows(batch: &RecordBatch) -> Vec<(String, i64, i64)> {
        let s = batch.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        let t = batch.column(1).as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
        let q = batch.column(2).as_any().downcast_ref::<Int64Array>().unwrap();
        (0..batch.num_rows()).map(|i| (s.value(i).to_owned(), t.value(i), q.value(i))).collect()
    }

    #[test]
    fn rows_come_out_by_symbol_then_time_with_ties_in_batch_order() {
        for seed in 0..20 {
            let batch = runs(seed, 1 + usize::try_from(seed % 5).unwrap(), 40);
            let mut expected = rows(&batch);
            // A stable sort by (symbol, timestamp) is the reference.
            expected.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
            assert_eq!(
                rows(&sort_for_files(&batch.schema(), std::slice::from_ref(&batch)).unwrap()),
                expected,
                "seed {seed}"
            );
            // The same rows cut into several batches sort the same.
            let cuts: Vec<RecordBatch> =
                (0..batch.num_rows()).step_by(7).map(|o| batch.slice(o, 7.min(batch.num_rows() - o))).collect();
            assert_eq!(rows(&sort_for_files(&batch.schema(), &cuts).unwrap()), expected, "seed {seed}, in batches");
            // Writers each build a run of the order: the runs, in turn, are
            // the whole of it.
            let order = FileOrder::of(&batch.schema(), cuts).unwrap();
            let cut = order.len() / 3;
            let mut runs = rows(&order.rows(0..cut).unwrap());
            runs.extend(rows(&order.rows(cut..order.len()).unwrap()));
            assert_eq!(runs, expected, "seed {seed}, in two runs");
            assert!(order.rows(0..order.len() + 1).is_err(), "rows past the end are refused");
        }
    }

    #[test]
    fn a_batch_with_a_null_symbol_is_still_sorted() {
        let batch = runs(7, 3, 10);
        let mut symbols: Vec<Option<String>> = rows(&batch).into_iter().map(|r| Some(r.0)).collect();
        symbols[4] = None;
        let nullable = Arc::new(Schema::new(vec![
            Field::new("symbol", DataType::Utf8, true),
            batch.schema().field(1).clone(),
            batch.schema().field(2).clone(),
        ]));
        let batch = RecordBatch::try_new(
            nullable,
            vec![Arc::new(StringArray::from(symbols)), batch.column(1).clone(), batch.column(2).clone()],
        )
        .unwrap();
        let sorted = sort_for_files(&batch.schema(), &[batch]).unwrap();
        let s = sorted.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        let t = sorted.column(1).as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
        let keys: Vec<(Option<&str>, i64)> =
            (0..sorted.num_rows()).map(|i| ((!s.is_null(i)).then(|| s.value(i)), t.value(i))).collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "{keys:?}");
    }
}
