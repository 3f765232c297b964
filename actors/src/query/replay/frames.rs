//! Stored trades, quotes and book updates as Binance payloads: trades as
//! `{"e":"trade","E":…,"s":"BTCUSDT","t":…,"p":"…","q":"…","T":…,"m":…,"M":…}`,
//! field for field what the venue sent when the row came from Binance (its
//! event time, best-match flag and maker side are kept in `vendor_data`);
//! quotes as spot book tickers, `{"u":…,"s":…,"b":…,"B":…,"a":…,"A":…}`
//! (no time: Binance's carry none either; an empty side as zeros, as
//! Binance sends it); book updates as diff-depth events,
//! `{"e":"depthUpdate","E":…,"s":…,"U":…,"u":…,"b":[["p","q"],…],"a":[…]}`,
//! and a book as `GET /api/v3/depth`'s answer. Prices and quantities are
//! exact decimal strings with the table's scale.

use std::fmt::Write as _;

use arrow::array::{Array, AsArray, Decimal128Array, Int64Array, MapArray, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::DataType;
use k2_core::BookEventV2;
use k2_core::book::{OrderBook, Side};
use rust_decimal::Decimal;

/// Which stream a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Trade,
    BookTicker,
    /// `<symbol>@depth`: Binance's 1000 ms diff-depth stream.
    Depth,
    /// `<symbol>@depth@100ms`.
    Depth100ms,
    /// `<symbol>@depth<levels>` (5, 10 or 20), and with `@100ms` when
    /// `fast`: Binance's partial book depth, the top levels every second
    /// (every 100 ms).
    Partial {
        levels: u8,
        fast: bool,
    },
}

impl Kind {
    /// The stream name's suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Kind::Trade => "trade",
            Kind::BookTicker => "bookTicker",
            Kind::Depth => "depth",
            Kind::Depth100ms => "depth@100ms",
            Kind::Partial { levels: 5, fast: false } => "depth5",
            Kind::Partial { levels: 10, fast: false } => "depth10",
            Kind::Partial { levels: _, fast: false } => "depth20",
            Kind::Partial { levels: 5, fast: true } => "depth5@100ms",
            Kind::Partial { levels: 10, fast: true } => "depth10@100ms",
            Kind::Partial { levels: _, fast: true } => "depth20@100ms",
        }
    }

    /// The stream `suffix` names (what follows `<symbol>@`).
    pub fn of_suffix(suffix: &str) -> Option<Kind> {
        let (name, fast) = match suffix.strip_suffix("@100ms") {
            Some(name) => (name, true),
            None => (suffix, false),
        };
        Some(match name {
            "trade" if !fast => Kind::Trade,
            "bookTicker" if !fast => Kind::BookTicker,
            "depth" => {
                if fast {
                    Kind::Depth100ms
                } else {
                    Kind::Depth
                }
            }
            "depth5" => Kind::Partial { levels: 5, fast },
            "depth10" => Kind::Partial { levels: 10, fast },
            "depth20" => Kind::Partial { levels: 20, fast },
            _ => return None,
        })
    }

    /// Whether the stream is a book's diff-depth events.
    pub fn is_depth(self) -> bool {
        matches!(self, Kind::Depth | Kind::Depth100ms)
    }

    /// Whether the stream is read from the stored books.
    pub fn is_book(self) -> bool {
        self.is_depth() || matches!(self, Kind::Partial { .. })
    }
}

/// One event ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The event's time (µs): with `symbol`, `kind` and `id`, the merge key.
    /// A trade's or quote's timestamp; a book update's K2 stamp (books are
    /// timed by K2's clock, as `/v1/book?at=` is).
    pub time: i64,
    pub symbol: compact_str::CompactString,
    pub kind: Kind,
    /// The trade id, the book ticker's update id or a book update's `u`.
    pub id: i64,
    /// The text as sent: the payload, in its stream's envelope.
    pub text: String,
}

/// How a stream's payloads go out: alone (raw frames) or in the combined
/// stream's `{"stream":"<name>","data":…}`. Each frame's text is written
/// once, envelope and all.
#[derive(Debug, Clone)]
pub struct Envelope {
    kind: Kind,
    head: Option<String>,
}

impl Envelope {
    pub fn new(symbol: &str, kind: Kind, combined: bool) -> Self {
        let head =
            combined.then(|| format!(r#"{{"stream":"{}@{}","data":"#, symbol.to_ascii_lowercase(), kind.suffix()));
        Self { kind, head }
    }

    /// A text of about `payload` bytes, the envelope opened.
    fn open(&self, payload: usize) -> String {
        match &self.head {
            Some(head) => {
                let mut text = String::with_capacity(head.len() + payload + 1);
                text.push_str(head);
                text
            }
            None => String::with_capacity(payload),
        }
    }

    fn close(&self, text: &mut String) {
        if self.head.is_some() {
            text.push('}');
        }
    }
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
pub fn trades(batch: &RecordBatch, micros: bool, envelope: &Envelope) -> Result<Vec<Frame>, ColumnError> {
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
        let mut text = envelope.open(128);
        let _ = write!(
            text,
            r#"{{"e":"trade","E":{event},"s":"{symbol}","t":{trade_id},"p":"{price}","q":"{quantity}","T":{},"m":{maker},"M":{best}}}"#,
            unit(time)
        );
        envelope.close(&mut text);
        out.push(Frame { time, symbol: symbol.into(), kind: Kind::Trade, id: trade_id, text });
    }
    Ok(out)
}

/// The quotes of `batch` (rows of the quotes table) as spot book tickers.
/// A row without an update id is skipped.
pub fn book_tickers(batch: &RecordBatch, envelope: &Envelope) -> Result<Vec<Frame>, ColumnError> {
    let symbols = text(batch, "symbol")?;
    let times = column::<TimestampMicrosecondArray>(batch, "timestamp")?;
    let ids = column::<Int64Array>(batch, "source_sequence")?;
    let sides = [
        column::<Decimal128Array>(batch, "bid_price")?,
        column::<Decimal128Array>(batch, "bid_quantity")?,
        column::<Decimal128Array>(batch, "ask_price")?,
        column::<Decimal128Array>(batch, "ask_quantity")?,
    ];
    let zero = |values: &Decimal128Array| Decimal::new(0, u32::try_from(values.scale()).unwrap_or(8));
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        if ids.is_null(row) || times.is_null(row) {
            continue;
        }
        let [b, bq, a, aq] = sides.map(|values| decimal(values, row).unwrap_or_else(|| zero(values)));
        let symbol = symbols.value(row);
        let id = ids.value(row);
        let mut text = envelope.open(128);
        let _ = write!(text, r#"{{"u":{id},"s":"{symbol}","b":"{b}","B":"{bq}","a":"{a}","A":"{aq}"}}"#);
        envelope.close(&mut text);
        out.push(Frame { time: times.value(row), symbol: symbol.into(), kind: Kind::BookTicker, id, text });
    }
    Ok(out)
}

/// A stored depth update as the venue's diff-depth event, in the
/// envelope's stream; `micros` gives `E` in microseconds.
pub fn depth_update(r: &BookEventV2, envelope: &Envelope, micros: bool) -> Frame {
    let us = r.timestamp.as_micros();
    let event = if micros { us } else { us.div_euclid(1000) };
    let mut payload = envelope.open(80 + 40 * (r.bids.len() + r.asks.len()));
    let _ = write!(
        payload,
        r#"{{"e":"depthUpdate","E":{event},"s":"{}","U":{},"u":{},"b":"#,
        r.symbol, r.first_update_id, r.final_update_id
    );
    levels(&mut payload, &r.bids);
    payload.push_str(r#","a":"#);
    levels(&mut payload, &r.asks);
    payload.push('}');
    envelope.close(&mut payload);
    Frame {
        time: r.ingestion_timestamp.as_micros(),
        symbol: r.symbol.clone(),
        kind: envelope.kind,
        id: r.final_update_id,
        text: payload,
    }
}

/// `[["price","quantity"],...]`.
fn levels(out: &mut String, levels: &[(Decimal, Decimal)]) {
    out.push('[');
    for (i, (price, quantity)) in levels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, r#"["{price}","{quantity}"]"#);
    }
    out.push(']');
}

/// A partial book depth event: the book's top `levels` levels as
/// `depth_snapshot` gives them, in `envelope`, at `time` (K2's clock).
pub fn partial_depth(book: &OrderBook, levels: usize, time: i64, symbol: &str, envelope: &Envelope) -> Frame {
    let mut text = envelope.open(40 + 40 * 2 * levels);
    write_depth(&mut text, book, levels);
    envelope.close(&mut text);
    Frame {
        time,
        symbol: symbol.into(),
        kind: envelope.kind,
        id: i64::try_from(book.update_id()).unwrap_or(i64::MAX),
        text,
    }
}

/// `book`'s best `limit` levels per side as `GET /api/v3/depth` answers:
/// `{"lastUpdateId":…,"bids":[["p","q"],…],"asks":[…]}`.
pub fn depth_snapshot(book: &OrderBook, limit: usize) -> String {
    let mut out = String::new();
    write_depth(&mut out, book, limit);
    out
}

/// [`depth_snapshot`]'s text, written to the end of `out`.
fn write_depth(out: &mut String, book: &OrderBook, limit: usize) {
    let _ = write!(out, r#"{{"lastUpdateId":{},"bids":"#, book.update_id());
    levels(out, &book.top(Side::Bid, limit).0);
    out.push_str(r#","asks":"#);
    levels(out, &book.top(Side::Ask, limit).0);
    out.push('}');
}
