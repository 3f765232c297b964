//! Stored trades as Binance trade payloads:
//! `{"e":"trade","E":…,"s":"BTCUSDT","t":…,"p":"…","q":"…","T":…,"m":…,"M":…}`,
//! field for field what the venue sent when the row came from Binance (its
//! event time, best-match flag and maker side are kept in `vendor_data`),
//! prices and quantities as exact decimal strings with the table's scale.

use arrow::array::{Array, AsArray, Decimal128Array, Int64Array, MapArray, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::DataType;
use rust_decimal::Decimal;

/// One trade ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Trade time (µs), the merge key with `symbol` and `trade_id`.
    pub time: i64,
    pub symbol: compact_str::CompactString,
    pub trade_id: i64,
    /// The payload's JSON.
    pub payload: String,
}

/// Why a batch cannot be replayed (a table that is not K2's trades).
#[derive(Debug, thiserror::Error)]
#[error("replay: column {0} is missing or of another type")]
pub struct ColumnError(&'static str);

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &'static str) -> Result<&'a T, ColumnError> {
    batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<T>()).ok_or(ColumnError(name))
}

fn text<'a>(batch: &'a RecordBatch, name: &'static str) -> Result<&'a arrow::array::StringArray, ColumnError> {
    match batch.column_by_name(name) {
        Some(c) if c.data_type() == &DataType::Utf8 => Ok(c.as_string::<i32>()),
        _ => Err(ColumnError(name)),
    }
}

fn decimal(values: &Decimal128Array, row: usize) -> Option<Decimal> {
    let scale = u32::try_from(values.scale()).ok()?;
    (!values.is_null(row)).then(|| Decimal::from_i128_with_scale(values.value(row), scale))
}

/// The `vendor_data` value of `key` in `row`.
fn vendor<'a>(map: Option<&'a MapArray>, row: usize, key: &str) -> Option<&'a str> {
    let map = map?;
    if map.is_null(row) {
        return None;
    }
    let offsets = map.value_offsets();
    let (from, to) = (usize::try_from(offsets[row]).ok()?, usize::try_from(offsets[row + 1]).ok()?);
    let keys = map.keys().as_string_opt::<i32>()?;
    let values = map.values().as_string_opt::<i32>()?;
    (from..to).find(|&i| keys.value(i) == key).filter(|&i| !values.is_null(i)).map(|i| values.value(i))
}

/// The trades of `batch` (rows of the trades table) as payloads; `micros`
/// gives `E` and `T` in microseconds. A row without a trade id (a source
/// that has none) is skipped: a Binance client could not take it.
pub fn trades(batch: &RecordBatch, micros: bool) -> Result<Vec<Frame>, ColumnError> {
    let symbols = text(batch, "symbol")?;
    let sides = text(batch, "side")?;
    let times = column::<TimestampMicrosecondArray>(batch, "timestamp")?;
    let prices = column::<Decimal128Array>(batch, "price")?;
    let quantities = column::<Decimal128Array>(batch, "quantity")?;
    let ids = column::<Int64Array>(batch, "source_sequence")?;
    let vendor_data = batch.column_by_name("vendor_data").and_then(|c| c.as_any().downcast_ref::<MapArray>());
    let unit = |us: i64| if micros { us } else { us.div_euclid(1000) };
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        if ids.is_null(row) || times.is_null(row) {
            continue;
        }
        let (Some(price), Some(quantity)) = (decimal(prices, row), decimal(quantities, row)) else { continue };
        let time = times.value(row);
        let event = vendor(vendor_data, row, "event_time")
            .and_then(|e| e.parse::<i64>().ok())
            .map_or(unit(time), |ms| if micros { ms.saturating_mul(1000) } else { ms });
        let maker = match vendor(vendor_data, row, "is_buyer_maker") {
            Some(m) => m == "true",
            None => sides.value(row).eq_ignore_ascii_case("sell"),
        };
        let best = vendor(vendor_data, row, "is_best_match").is_none_or(|b| b == "true");
        let symbol = symbols.value(row);
        let trade_id = ids.value(row);
        let payload = format!(
            r#"{{"e":"trade","E":{event},"s":"{symbol}","t":{trade_id},"p":"{price}","q":"{quantity}","T":{},"m":{maker},"M":{best}}}"#,
            unit(time)
        );
        out.push(Frame { time, symbol: symbol.into(), trade_id, payload });
    }
    Ok(out)
}

/// `payload` as sent: alone (raw) or in the combined stream's wrapper.
pub fn wrap(payload: &str, symbol: &str, combined: bool) -> String {
    if combined {
        format!(r#"{{"stream":"{}@trade","data":{payload}}}"#, symbol.to_ascii_lowercase())
    } else {
        payload.to_owned()
    }
}
