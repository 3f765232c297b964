//! The book tables: their Iceberg schemas, and book records to and from
//! their rows.
//!
//! `market.book_updates` holds a row per level an update changed (an
//! update changing none still has one row, with no side), and a row per
//! sync-state change (`synced`, `unsynced` with its cause), so a reader
//! meets the state changes in order with the updates they qualify.
//! `market.book_snapshots` holds a row per level of each snapshot (`level`
//! numbers them from the best, from 1; in an update, in the venue's
//! order). Both are partitioned by the day of
//! `ingestion_timestamp` (K2's clock, the order the records were made in)
//! and sorted by (symbol, ingestion_timestamp).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Decimal128Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use iceberg::spec::{NestedField, PrimitiveType, Schema, SortOrder, Type, UnboundPartitionSpec};
use k2_core::model::decimal;
use k2_core::{AssetClass, BookEventKind, BookEventV2, BookLevel, Timestamp};
use rust_decimal::Decimal;

use crate::lake::LakeError;

/// The two book tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BookTable {
    Updates,
    Snapshots,
}

impl BookTable {
    pub const ALL: [BookTable; 2] = [BookTable::Updates, BookTable::Snapshots];

    pub fn name(self) -> &'static str {
        match self {
            BookTable::Updates => "book_updates",
            BookTable::Snapshots => "book_snapshots",
        }
    }

    /// Which table a record's rows go to.
    pub fn of(kind: BookEventKind) -> Self {
        match kind {
            BookEventKind::Snapshot => BookTable::Snapshots,
            BookEventKind::Update | BookEventKind::Synced | BookEventKind::Unsynced => BookTable::Updates,
        }
    }

    pub fn schema(self) -> Result<Schema, LakeError> {
        let string = || Type::Primitive(PrimitiveType::String);
        let long = || Type::Primitive(PrimitiveType::Long);
        let time = || Type::Primitive(PrimitiveType::Timestamptz);
        let dec = || Type::Primitive(PrimitiveType::Decimal { precision: 18, scale: 8 });
        let fields = match self {
            BookTable::Updates => vec![
                NestedField::required(1, "symbol", string()),
                NestedField::required(2, "exchange", string()),
                NestedField::required(3, "kind", string()),
                NestedField::required(4, "timestamp", time()),
                NestedField::required(5, "first_update_id", long()),
                NestedField::required(6, "final_update_id", long()),
                NestedField::optional(7, "side", string()),
                NestedField::optional(8, "level", Type::Primitive(PrimitiveType::Int)),
                NestedField::optional(9, "price", dec()),
                NestedField::optional(10, "quantity", dec()),
                NestedField::optional(11, "cause", string()),
                NestedField::required(12, "message_id", string()),
                NestedField::required(13, "ingestion_timestamp", time()),
                NestedField::required(14, "is_sample_data", Type::Primitive(PrimitiveType::Boolean)),
            ],
            BookTable::Snapshots => vec![
                NestedField::required(1, "symbol", string()),
                NestedField::required(2, "exchange", string()),
                NestedField::required(3, "source", string()),
                NestedField::required(4, "timestamp", time()),
                NestedField::required(5, "update_id", long()),
                NestedField::required(6, "depth", Type::Primitive(PrimitiveType::Int)),
                NestedField::optional(7, "side", string()),
                NestedField::optional(8, "level", Type::Primitive(PrimitiveType::Int)),
                NestedField::optional(9, "price", dec()),
                NestedField::optional(10, "quantity", dec()),
                NestedField::required(11, "message_id", string()),
                NestedField::required(12, "ingestion_timestamp", time()),
                NestedField::required(13, "is_sample_data", Type::Primitive(PrimitiveType::Boolean)),
            ],
        };
        Schema::builder()
            .with_schema_id(0)
            .with_fields(fields.into_iter().map(Arc::new).collect::<Vec<_>>())
            .build()
            .map_err(|e| LakeError::Schema(format!("{}: {e}", self.name())))
    }

    pub fn partition_spec(schema: &Schema) -> Result<UnboundPartitionSpec, LakeError> {
        crate::lake::schema::day_partitions(schema, "ingestion_timestamp", "ingestion_day")
    }

    pub fn sort_order(schema: &Schema) -> Result<SortOrder, LakeError> {
        crate::lake::schema::symbol_then(schema, "ingestion_timestamp")
    }
}

/// One row: the record it belongs to and, for a level row, which level.
struct Row<'a> {
    record: &'a BookEventV2,
    level: Option<(&'static str, usize, &'a BookLevel)>,
}

fn rows_of(records: &[BookEventV2]) -> Vec<Row<'_>> {
    let mut rows = Vec::with_capacity(records.len() * 2);
    for r in records {
        let levels = r
            .bids
            .iter()
            .enumerate()
            .map(|(i, l)| ("bid", i, l))
            .chain(r.asks.iter().enumerate().map(|(i, l)| ("ask", i, l)));
        let before = rows.len();
        rows.extend(levels.map(|level| Row { record: r, level: Some(level) }));
        if rows.len() == before {
            rows.push(Row { record: r, level: None });
        }
    }
    rows
}

/// The rows of `records` (all of `table`'s, in K2's order) as a batch of
/// `schema` (the table's, as Arrow).
pub fn to_batch(table: BookTable, schema: &SchemaRef, records: &[BookEventV2]) -> Result<RecordBatch, ArrowError> {
    let rows = rows_of(records);
    let columns =
        schema.fields().iter().map(|f| column(table, &rows, f.name(), f.data_type())).collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

fn column(table: BookTable, rows: &[Row<'_>], name: &str, dt: &DataType) -> Result<ArrayRef, ArrowError> {
    let strings =
        |f: &dyn Fn(&Row<'_>) -> Option<String>| -> ArrayRef { Arc::new(rows.iter().map(f).collect::<StringArray>()) };
    let times = |f: &dyn Fn(&Row<'_>) -> Timestamp| -> Result<ArrayRef, ArrowError> {
        let DataType::Timestamp(_, tz) = dt else {
            return Err(ArrowError::SchemaError(format!("{name}: expected a timestamp column, found {dt}")));
        };
        let values = rows.iter().map(|r| f(r).as_micros());
        Ok(Arc::new(TimestampMicrosecondArray::from_iter_values(values).with_timezone_opt(tz.clone())))
    };
    let decimals = |pick: fn(&BookLevel) -> Decimal| -> Result<ArrayRef, ArrowError> {
        let DataType::Decimal128(precision, scale) = *dt else {
            return Err(ArrowError::SchemaError(format!("{name}: expected decimal, found {dt}")));
        };
        let values = rows
            .iter()
            .map(|r| r.level.map(|(_, _, l)| decimal::to_unscaled("book level", pick(l)).map(i128::from)).transpose())
            .collect::<Result<Vec<Option<i128>>, _>>()
            .map_err(|e| ArrowError::InvalidArgumentError(e.to_string()))?;
        Ok(Arc::new(Decimal128Array::from(values).with_precision_and_scale(precision, scale)?))
    };
    Ok(match (table, name) {
        (_, "symbol") => strings(&|r| Some(r.record.symbol.to_string())),
        (_, "exchange") => strings(&|r| Some(r.record.exchange.to_string())),
        (BookTable::Updates, "kind") => strings(&|r| Some(r.record.kind.as_str().to_owned())),
        (BookTable::Snapshots, "source") => strings(&|r| Some(r.record.cause.as_deref().unwrap_or("rest").to_owned())),
        (_, "timestamp") => times(&|r| r.record.timestamp)?,
        (_, "ingestion_timestamp") => times(&|r| r.record.ingestion_timestamp)?,
        (BookTable::Updates, "first_update_id") => {
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.record.first_update_id)))
        }
        (BookTable::Updates, "final_update_id") | (BookTable::Snapshots, "update_id") => {
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.record.final_update_id)))
        }
        (BookTable::Snapshots, "depth") => {
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.record.depth.unwrap_or(i32::MAX))))
        }
        (_, "side") => strings(&|r| r.level.map(|(side, _, _)| side.to_owned())),
        (_, "level") => Arc::new(
            rows.iter()
                .map(|r| r.level.map(|(_, i, _)| i32::try_from(i + 1).unwrap_or(i32::MAX)))
                .collect::<Int32Array>(),
        ),
        (_, "price") => decimals(|l| l.0)?,
        (_, "quantity") => decimals(|l| l.1)?,
        (BookTable::Updates, "cause") => strings(&|r| r.record.cause.as_deref().map(str::to_owned)),
        (_, "message_id") => strings(&|r| Some(r.record.message_id.hyphenated().to_string())),
        (_, "is_sample_data") => Arc::new(rows.iter().map(|r| Some(r.record.is_sample_data)).collect::<BooleanArray>()),
        (_, other) => return Err(ArrowError::SchemaError(format!("{}: no column {other}", table.name()))),
    })
}

/// A level read back: whether a bid, its rank, the level.
type RankedLevel = (bool, i32, BookLevel);

/// The records whose rows `batches` (of `table`, any order) hold; rows of
/// one record share its message id and instant. Records come back in K2's
/// order; a snapshot's levels by their `level`.
pub fn from_batches(table: BookTable, batches: &[RecordBatch]) -> Result<Vec<BookEventV2>, ArrowError> {
    let mut records: HashMap<(i64, String), BookEventV2> = HashMap::new();
    let mut levels: HashMap<(i64, String), Vec<RankedLevel>> = HashMap::new();
    for b in batches {
        let col = |name: &str| {
            b.column_by_name(name).cloned().ok_or_else(|| ArrowError::SchemaError(format!("no column {name}")))
        };
        let text = |name: &str| -> Result<StringArray, ArrowError> {
            col(name)?
                .as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .ok_or_else(|| ArrowError::SchemaError(format!("{name} is not text")))
        };
        let longs = |name: &str| -> Result<Int64Array, ArrowError> {
            col(name)?
                .as_any()
                .downcast_ref::<Int64Array>()
                .cloned()
                .ok_or_else(|| ArrowError::SchemaError(format!("{name} is not a long")))
        };
        let ints = |name: &str| -> Result<Int32Array, ArrowError> {
            col(name)?
                .as_any()
                .downcast_ref::<Int32Array>()
                .cloned()
                .ok_or_else(|| ArrowError::SchemaError(format!("{name} is not an int")))
        };
        let times = |name: &str| -> Result<TimestampMicrosecondArray, ArrowError> {
            col(name)?
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .cloned()
                .ok_or_else(|| ArrowError::SchemaError(format!("{name} is not a timestamp")))
        };
        let decimals = |name: &str| -> Result<Decimal128Array, ArrowError> {
            col(name)?
                .as_any()
                .downcast_ref::<Decimal128Array>()
                .cloned()
                .ok_or_else(|| ArrowError::SchemaError(format!("{name} is not a decimal")))
        };
        let (symbol, exchange, side) = (text("symbol")?, text("exchange")?, text("side")?);
        let (timestamp, recorded, ids) = (times("timestamp")?, times("ingestion_timestamp")?, text("message_id")?);
        let (price, quantity) = (decimals("price")?, decimals("quantity")?);
        let sample = col("is_sample_data")?
            .as_any()
            .downcast_ref::<BooleanArray>()
            .cloned()
            .ok_or_else(|| ArrowError::SchemaError("is_sample_data is not a boolean".into()))?;
        let level = ints("level")?;
        let (kind, cause, first, last, depth) = match table {
            BookTable::Updates => {
                (Some(text("kind")?), text("cause")?, Some(longs("first_update_id")?), longs("final_update_id")?, None)
            }
            BookTable::Snapshots => (None, text("source")?, None, longs("update_id")?, Some(ints("depth")?)),
        };
        for i in 0..b.num_rows() {
            let key = (recorded.value(i), ids.value(i).to_owned());
            if !records.contains_key(&key) {
                let kind = match &kind {
                    None => BookEventKind::Snapshot,
                    Some(k) => BookEventKind::SYMBOLS
                        .iter()
                        .position(|s| *s == k.value(i))
                        .and_then(BookEventKind::from_index)
                        .ok_or_else(|| ArrowError::ParseError(format!("kind {:?}", k.value(i))))?,
                };
                let id = uuid::Uuid::try_parse(ids.value(i)).map_err(|e| ArrowError::ParseError(e.to_string()))?;
                let final_update_id = last.value(i);
                let record = BookEventV2 {
                    message_id: id,
                    symbol: symbol.value(i).into(),
                    exchange: exchange.value(i).into(),
                    asset_class: AssetClass::Crypto,
                    kind,
                    timestamp: Timestamp::from_micros(timestamp.value(i)),
                    first_update_id: first.as_ref().map_or(final_update_id, |f| f.value(i)),
                    final_update_id,
                    bids: Vec::new(),
                    asks: Vec::new(),
                    depth: depth.as_ref().map(|d| d.value(i)),
                    cause: cause.is_valid(i).then(|| cause.value(i).into()),
                    ingestion_timestamp: Timestamp::from_micros(recorded.value(i)),
                    platform_sequence: None,
                    is_sample_data: sample.value(i),
                };
                records.insert(key.clone(), record);
            }
            if side.is_valid(i) && price.is_valid(i) && quantity.is_valid(i) {
                let unscaled = |a: &Decimal128Array| i64::try_from(a.value(i)).map(|v| Decimal::new(v, 8));
                let (p, q) = match (unscaled(&price), unscaled(&quantity)) {
                    // Scale 8, as the venue writes them: the same text as
                    // the live book shows.
                    (Ok(p), Ok(q)) => (p, q),
                    _ => return Err(ArrowError::ParseError("a level outside decimal(18,8)".into())),
                };
                levels.entry(key).or_default().push((side.value(i) == "bid", level.value(i), (p, q)));
            }
        }
    }
    for (key, mut ls) in levels {
        ls.sort_by_key(|(_, rank, _)| *rank);
        if let Some(r) = records.get_mut(&key) {
            for (bid, _, level) in ls {
                if bid { r.bids.push(level) } else { r.asks.push(level) }
            }
        }
    }
    let mut out: Vec<BookEventV2> = records.into_values().collect();
    out.sort_by_key(|r| r.ingestion_timestamp);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k2_core::book::replay::records;
    use k2_core::book::{DepthSnapshot, DepthUpdate};

    fn lv(p: &str, q: &str) -> BookLevel {
        (p.parse().unwrap(), q.parse().unwrap())
    }

    /// Records to rows and back are the same records, in K2's order,
    /// whatever order the rows are read in.
    #[test]
    fn records_survive_the_rows_of_both_tables() {
        let t = |us| Timestamp::from_micros(us);
        let snap = DepthSnapshot {
            last_update_id: 100,
            bids: vec![lv("4.1", "431"), lv("4", "0.00000001")],
            asks: vec![lv("4.2", "12")],
            limit: 5000,
        };
        let update = DepthUpdate {
            symbol: "BNBBTC".into(),
            event_time: t(50),
            first_update_id: 99,
            final_update_id: 102,
            bids: vec![lv("4.1", "0")],
            asks: vec![],
        };
        let empty = DepthUpdate { first_update_id: 103, final_update_id: 103, bids: vec![], ..update.clone() };
        let all = [
            records::state("BINANCE", "BNBBTC", BookEventKind::Unsynced, 0, Some("restart"), t(1)),
            records::snapshot("BINANCE", "BNBBTC", &snap, t(2)),
            records::state("BINANCE", "BNBBTC", BookEventKind::Synced, 100, None, t(3)),
            records::update("BINANCE", &update, t(4)),
            records::update("BINANCE", &empty, t(5)),
        ];
        for table in BookTable::ALL {
            let mine: Vec<BookEventV2> = all.iter().filter(|r| BookTable::of(r.kind) == table).cloned().collect();
            let schema = Arc::new(iceberg::arrow::schema_to_arrow_schema(&table.schema().unwrap()).unwrap());
            let batch = to_batch(table, &schema, &mine).unwrap();
            // Read back in reverse row order, as files may come.
            let reversed = arrow::compute::take_record_batch(
                &batch,
                &arrow::array::UInt32Array::from_iter_values((0..batch.num_rows() as u32).rev()),
            )
            .unwrap();
            let back = from_batches(table, &[reversed]).unwrap();
            assert_eq!(back, mine, "{}", table.name());
            let texts = |rs: &[BookEventV2]| -> Vec<String> {
                rs.iter().flat_map(|r| r.bids.iter().chain(&r.asks)).map(|(p, _)| p.to_string()).collect()
            };
            assert!(
                texts(&back).iter().all(|t| t.split_once('.').is_some_and(|(_, f)| f.len() == 8)),
                "{:?}",
                texts(&back)
            );
        }
    }
}
