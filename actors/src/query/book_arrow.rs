//! Books as Arrow IPC streams (`Accept: application/vnd.apache.arrow.stream`):
//! the same rows as the CSV answers, typed. Prices, quantities and depths
//! are Decimal128 at scale 8, K2's scale for every price; precision 38, since
//! a depth adds up many quantities. A value with more than 8 decimal places
//! is refused, never rounded (it cannot come from K2's books, which hold
//! scale-8 values).

use std::sync::Arc;

use arrow::array::TimestampMicrosecondArray;
use arrow::array::{ArrayRef, BooleanArray, Decimal128Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use rust_decimal::Decimal;

use crate::lake::books::TopPoint;
use crate::state::books::BookView;

const PRECISION: u8 = 38;
const SCALE: i8 = 8;

fn decimal_field(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Decimal128(PRECISION, SCALE), nullable)
}

/// `d` unscaled at scale 8.
fn unscaled(d: Decimal) -> Result<i128, String> {
    let d = d.normalize();
    let scale = d.scale();
    if scale > SCALE as u32 {
        return Err(format!("{d} has more than {SCALE} decimal places"));
    }
    d.mantissa().checked_mul(10i128.pow(SCALE as u32 - scale)).ok_or_else(|| format!("{d} does not fit"))
}

fn decimals(values: impl Iterator<Item = Option<Decimal>>) -> Result<ArrayRef, String> {
    let values: Vec<Option<i128>> = values.map(|v| v.map(unscaled).transpose()).collect::<Result<_, _>>()?;
    let array = Decimal128Array::from(values).with_precision_and_scale(PRECISION, SCALE).map_err(|e| e.to_string())?;
    Ok(Arc::new(array))
}

fn stream(schema: Arc<Schema>, columns: Vec<ArrayRef>) -> Result<Vec<u8>, String> {
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())?;
    super::format::arrow_stream(&schema, &[batch])
}

/// One row per level shown (bids from the best, then asks), as the CSV.
pub fn levels(view: &BookView) -> Result<Vec<u8>, String> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("exchange", DataType::Utf8, false),
        Field::new("symbol", DataType::Utf8, false),
        Field::new("update_id", DataType::Int64, true),
        Field::new("synced", DataType::Boolean, false),
        Field::new("side", DataType::Utf8, false),
        Field::new("level", DataType::Int32, false),
        decimal_field("price", false),
        decimal_field("quantity", false),
    ]));
    let rows: Vec<(&str, usize, &[String; 2])> = [("bid", &view.bids), ("ask", &view.asks)]
        .into_iter()
        .flat_map(|(side, levels)| levels.iter().enumerate().map(move |(i, l)| (side, i + 1, l)))
        .collect();
    let parse = |s: &str| s.parse::<Decimal>().map_err(|e| format!("book level {s:?}: {e}"));
    let prices = rows.iter().map(|r| parse(&r.2[0]).map(Some)).collect::<Result<Vec<_>, _>>()?;
    let quantities = rows.iter().map(|r| parse(&r.2[1]).map(Some)).collect::<Result<Vec<_>, _>>()?;
    let update_id = view.update_id.and_then(|i| i64::try_from(i).ok());
    let n = rows.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(view.exchange, n))),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(view.symbol.as_str(), n))),
        Arc::new(Int64Array::from_iter(std::iter::repeat_n(update_id, n))),
        Arc::new(BooleanArray::from(vec![view.synced; n])),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| i32::try_from(r.1).unwrap_or(i32::MAX)))),
        decimals(prices.into_iter())?,
        decimals(quantities.into_iter())?,
    ];
    stream(schema, columns)
}

/// One row per sampled instant, the columns of the CSV answer.
pub fn tops(exchange: &str, symbol: &str, points: &[TopPoint]) -> Result<Vec<u8>, String> {
    let utc: Option<Arc<str>> = Some("+00:00".into());
    let schema = Arc::new(Schema::new(vec![
        Field::new("exchange", DataType::Utf8, false),
        Field::new("symbol", DataType::Utf8, false),
        Field::new("time", DataType::Timestamp(TimeUnit::Microsecond, utc.clone()), false),
        Field::new("synced", DataType::Boolean, false),
        Field::new("unsynced_cause", DataType::Utf8, true),
        Field::new("update_id", DataType::Int64, true),
        decimal_field("best_bid", true),
        decimal_field("best_bid_quantity", true),
        decimal_field("best_ask", true),
        decimal_field("best_ask_quantity", true),
        decimal_field("spread", true),
        decimal_field("bid_depth", true),
        Field::new("bid_levels", DataType::Int64, false),
        decimal_field("ask_depth", true),
        Field::new("ask_levels", DataType::Int64, false),
    ]));
    let n = points.len();
    let synced = |t: &TopPoint| t.update_id.is_some();
    let count = |c: usize| i64::try_from(c).unwrap_or(i64::MAX);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(exchange, n))),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(symbol, n))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(points.iter().map(|t| t.at.as_micros())).with_timezone_opt(utc),
        ),
        Arc::new(BooleanArray::from(points.iter().map(synced).collect::<Vec<_>>())),
        Arc::new(StringArray::from_iter(
            points.iter().map(|t| t.unsynced_cause.as_deref().map(crate::state::books::known_cause)),
        )),
        Arc::new(Int64Array::from_iter(points.iter().map(|t| t.update_id.and_then(|i| i64::try_from(i).ok())))),
        decimals(points.iter().map(|t| t.best_bid.map(|l| l.0)))?,
        decimals(points.iter().map(|t| t.best_bid.map(|l| l.1)))?,
        decimals(points.iter().map(|t| t.best_ask.map(|l| l.0)))?,
        decimals(points.iter().map(|t| t.best_ask.map(|l| l.1)))?,
        decimals(points.iter().map(|t| t.best_bid.zip(t.best_ask).map(|(b, a)| a.0 - b.0)))?,
        decimals(points.iter().map(|t| synced(t).then_some(t.bid_depth.0)))?,
        Arc::new(Int64Array::from_iter_values(points.iter().map(|t| count(t.bid_depth.1)))),
        decimals(points.iter().map(|t| synced(t).then_some(t.ask_depth.0)))?,
        Arc::new(Int64Array::from_iter_values(points.iter().map(|t| count(t.ask_depth.1)))),
    ];
    stream(schema, columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_keep_every_digit_at_scale_8_and_refuse_a_ninth() {
        assert_eq!(unscaled("60123.45".parse().unwrap()), Ok(6_012_345_000_000));
        assert_eq!(unscaled("0.00000001".parse().unwrap()), Ok(1));
        assert_eq!(unscaled("-1.5".parse().unwrap()), Ok(-150_000_000));
        assert_eq!(unscaled("2.100000000".parse().unwrap()), Ok(210_000_000), "trailing zeros are exact");
        assert!(unscaled("0.000000001".parse().unwrap()).is_err());
    }
}
