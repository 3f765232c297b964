//! Rows out: JSON (default), CSV and the Arrow IPC stream. Decimals leave as
//! exact strings (full scale), timestamps as RFC 3339 UTC with microseconds.

use std::fmt::Write as _;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Int64Array, ListArray, MapArray, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};

use super::aggregate::decimal_string;

/// Response formats, chosen by the `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Arrow,
}

pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

impl Format {
    /// The served type the client prefers, by `Accept` and its q-values
    /// (RFC 9110 §12.5.1): the highest q wins, a more specific range
    /// outranks a wildcard at the same q, ties go to the order written, and
    /// q=0 refuses a type. JSON when there is no header; `None` when the
    /// header accepts nothing served (406).
    pub fn from_accept(accept: Option<&str>) -> Option<Self> {
        let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else { return Some(Format::Json) };
        // (q in thousandths, specificity, position) of each served type's
        // best-matching range.
        let mut best: [Option<(u16, u8, usize)>; 3] = [None; 3];
        for (position, part) in accept.split(',').enumerate() {
            let mut params = part.split(';');
            let media = params.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = params
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(Some(1000), |(_, v)| qvalue(v.trim()));
            let Some(q) = q else { continue };
            for (i, format) in [Format::Json, Format::Csv, Format::Arrow].into_iter().enumerate() {
                let Some(specificity) = format.matches(&media) else { continue };
                // The most specific range that names a type sets its q.
                if best[i].is_none_or(|(_, s, _)| specificity > s) {
                    best[i] = Some((q, specificity, position));
                }
            }
        }
        let rank = |(q, specificity, position): (u16, u8, usize)| (q, specificity, std::cmp::Reverse(position));
        let mut chosen: Option<(Format, (u16, u8, usize))> = None;
        for (i, format) in [Format::Json, Format::Csv, Format::Arrow].into_iter().enumerate() {
            if let Some(b) = best[i].filter(|(q, _, _)| *q > 0)
                && chosen.is_none_or(|(_, c)| rank(b) > rank(c))
            {
                chosen = Some((format, b));
            }
        }
        chosen.map(|(f, _)| f)
    }

    /// How specifically `range` names this type: 2 exactly, 1 by `type/*`,
    /// 0 by `*/*`.
    fn matches(self, range: &str) -> Option<u8> {
        let (kind, sub) = match self {
            Format::Json => ("application", "json"),
            Format::Csv => ("text", "csv"),
            Format::Arrow => ("application", "vnd.apache.arrow.stream"),
        };
        match range.split_once('/')? {
            ("*", "*") => Some(0),
            (k, "*") if k == kind => Some(1),
            (k, s) if k == kind && s == sub => Some(2),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => ARROW_STREAM,
        }
    }
}

/// A qvalue ("0", "0.5", "1.000") in thousandths; `None` when malformed
/// (the range is then ignored, as if not written).
fn qvalue(text: &str) -> Option<u16> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths =
        frac.bytes().chain(std::iter::repeat(b'0')).take(3).fold(0u16, |n, b| n * 10 + u16::from(b - b'0'));
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// RFC 3339 with microseconds, UTC.
pub fn timestamp_string(micros: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(micros) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => micros.to_string(),
    }
}

fn json_str(out: &mut String, s: &str) {
    // serde_json's escaping, without building a Value.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

/// Appends one cell as JSON.
fn json_cell(out: &mut String, col: &ArrayRef, row: usize) {
    if col.is_null(row) {
        out.push_str("null");
        return;
    }
    match col.data_type() {
        DataType::Utf8 => json_str(out, col.as_string::<i32>().value(row)),
        DataType::Int64 => {
            let _ = write!(out, "{}", col.as_primitive::<arrow::datatypes::Int64Type>().value(row));
        }
        DataType::Boolean => out.push_str(if col.as_boolean().value(row) { "true" } else { "false" }),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let v = col.as_primitive::<arrow::datatypes::TimestampMicrosecondType>().value(row);
            json_str(out, &timestamp_string(v));
        }
        DataType::Decimal128(_, scale) => {
            let v = col.as_primitive::<arrow::datatypes::Decimal128Type>().value(row);
            json_str(out, &decimal_string(v, *scale as u32));
        }
        DataType::List(_) => {
            let list = col.as_list::<i32>().value(row);
            out.push('[');
            for i in 0..list.len() {
                if i > 0 {
                    out.push(',');
                }
                json_cell(out, &list, i);
            }
            out.push(']');
        }
        DataType::Map(_, _) => {
            let map = col.as_map();
            let entries = map.value(row);
            let (keys, values) = (entries.column(0), entries.column(1));
            out.push('{');
            for i in 0..entries.len() {
                if i > 0 {
                    out.push(',');
                }
                json_str(out, keys.as_string::<i32>().value(i));
                out.push(':');
                json_cell(out, values, i);
            }
            out.push('}');
        }
        other => json_str(out, &format!("<{other}>")),
    }
}

/// Rows as a JSON array of objects.
pub fn json_rows(out: &mut String, schema: &SchemaRef, batches: &[RecordBatch]) {
    let names: Vec<String> =
        schema.fields().iter().map(|f| serde_json::to_string(f.name()).unwrap_or_default()).collect();
    out.push('[');
    let mut first = true;
    for batch in batches {
        for row in 0..batch.num_rows() {
            if !first {
                out.push(',');
            }
            first = false;
            json_object(out, &names, batch, row);
        }
    }
    out.push(']');
}

/// One row as a JSON object.
pub fn json_object(out: &mut String, names: &[String], batch: &RecordBatch, row: usize) {
    out.push('{');
    for (i, col) in batch.columns().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&names[i]);
        out.push(':');
        json_cell(out, col, row);
    }
    out.push('}');
}

/// The text of a cell in CSV: scalars as in JSON but unquoted; lists and maps
/// as JSON text.
fn csv_cell(col: &ArrayRef, row: usize) -> String {
    if col.is_null(row) {
        return String::new();
    }
    match col.data_type() {
        DataType::Utf8 => col.as_string::<i32>().value(row).to_owned(),
        DataType::Int64 => col.as_primitive::<arrow::datatypes::Int64Type>().value(row).to_string(),
        DataType::Boolean => col.as_boolean().value(row).to_string(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            timestamp_string(col.as_primitive::<arrow::datatypes::TimestampMicrosecondType>().value(row))
        }
        DataType::Decimal128(_, scale) => {
            decimal_string(col.as_primitive::<arrow::datatypes::Decimal128Type>().value(row), *scale as u32)
        }
        _ => {
            let mut s = String::new();
            json_cell(&mut s, col, row);
            s
        }
    }
}

pub fn csv(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, String> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    w.write_record(schema.fields().iter().map(|f| f.name().as_str())).map_err(|e| e.to_string())?;
    let mut record = Vec::with_capacity(schema.fields().len());
    for batch in batches {
        for row in 0..batch.num_rows() {
            record.clear();
            record.extend(batch.columns().iter().map(|c| csv_cell(c, row)));
            w.write_record(&record).map_err(|e| e.to_string())?;
        }
    }
    w.into_inner().map_err(|e| e.to_string())
}

pub fn arrow_stream(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, String> {
    let mut w = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema).map_err(|e| e.to_string())?;
    for b in batches {
        w.write(b).map_err(|e| e.to_string())?;
    }
    w.into_inner().map_err(|e| e.to_string())
}

/// Typed column access for the aggregations (fails loudly on a schema that
/// is not the table's, which would be a bug).
pub fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, String> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| format!("column {name} missing or of an unexpected type"))
}

pub type Strings = StringArray;
pub type Longs = Int64Array;
pub type Decimals = Decimal128Array;
pub type Timestamps = TimestampMicrosecondArray;
pub type Booleans = BooleanArray;
pub type Lists = ListArray;
pub type Maps = MapArray;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_honours_q_values() {
        let f = |a: &str| Format::from_accept(Some(a));
        assert_eq!(Format::from_accept(None), Some(Format::Json));
        assert_eq!(f(""), Some(Format::Json));
        assert_eq!(f("text/csv"), Some(Format::Csv));
        assert_eq!(f("text/html, application/vnd.apache.arrow.stream;q=0.9"), Some(Format::Arrow));
        assert_eq!(f("*/*"), Some(Format::Json));
        assert_eq!(f("text/csv;q=0.5, application/json"), Some(Format::Json), "the higher q wins, not the first");
        assert_eq!(f("text/csv;q=0, */*"), Some(Format::Json), "q=0 refuses a type a wildcard would allow");
        assert_eq!(f("*/*;q=0.1, text/*"), Some(Format::Csv));
        assert_eq!(f("text/csv;q=0.8, application/json;q=0.8"), Some(Format::Csv), "a tie goes to the order written");
        assert_eq!(f("TEXT/CSV; Q=1"), Some(Format::Csv), "names and parameters are case-insensitive");
        assert_eq!(f("text/html"), None, "nothing served: 406");
        assert_eq!(f("application/json;q=0"), None);
        assert_eq!(f("application/json;q=2, text/csv"), Some(Format::Csv), "a malformed q drops its range");
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        assert_eq!(timestamp_string(1_704_153_600_000_001), "2024-01-02T00:00:00.000001Z");
    }
}
