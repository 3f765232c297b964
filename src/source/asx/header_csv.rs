//! The original K2's CSV format, with a header line:
//! trades `symbol,exchange_timestamp,price,quantity,side,sequence_number,trade_id[,company_id,qualifiers,venue]`,
//! quotes `symbol,exchange_timestamp,bid_price,ask_price,bid_size,ask_size,sequence_number[,quote_id]`.
//! Columns are found by name, so their order may vary; `exchange` and
//! `currency` columns are honoured when present (default ASX and AUD).

use chrono::{DateTime, NaiveDateTime};
use compact_str::{CompactString, format_compact};

use super::clock::LocalClock;
use super::{CURRENCY, EXCHANGE};
use crate::model::decimal;
use crate::model::ids::{EventKind, message_id};
use crate::model::{AssetClass, MarketEvent, QuoteV2, Timestamp, TradeSide, TradeV2, VendorData};
use crate::source::book_side;

/// Which records a header file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    Trades,
    Quotes,
}

// Listed in the order `record` destructures them, not the files' order: the
// last slot is the sequence number in both lists.
const TRADE_COLUMNS: [&str; 7] =
    ["symbol", "exchange_timestamp", "price", "quantity", "side", "trade_id", "sequence_number"];
const QUOTE_COLUMNS: [&str; 7] =
    ["symbol", "exchange_timestamp", "bid_price", "ask_price", "bid_size", "ask_size", "sequence_number"];
const OPTIONAL: [&str; 6] = ["company_id", "qualifiers", "venue", "quote_id", "exchange", "currency"];

/// Column positions of one header file.
#[derive(Debug)]
pub struct HeaderParser {
    kind: HeaderKind,
    required: [usize; 7],
    optional: [Option<usize>; 6],
    clock: LocalClock,
    is_sample_data: bool,
}

impl HeaderParser {
    /// Reads the header; the kind is told by which required columns are there.
    pub fn from_header(header: &csv::StringRecord, clock: LocalClock, is_sample_data: bool) -> Result<Self, String> {
        let find = |name: &str| header.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
        let kind = if find("price").is_some() { HeaderKind::Trades } else { HeaderKind::Quotes };
        let names = match kind {
            HeaderKind::Trades => TRADE_COLUMNS,
            HeaderKind::Quotes => QUOTE_COLUMNS,
        };
        let mut required = [0; 7];
        for (slot, name) in required.iter_mut().zip(names) {
            *slot = find(name).ok_or_else(|| format!("header lacks column {name:?}"))?;
        }
        Ok(Self { kind, required, optional: OPTIONAL.map(find), clock, is_sample_data })
    }

    pub fn kind(&self) -> HeaderKind {
        self.kind
    }

    /// One data record; `line_no` is the file line it came from.
    pub fn record(
        &mut self,
        rec: &csv::StringRecord,
        line_no: u64,
        ingested: Timestamp,
    ) -> Result<MarketEvent, String> {
        let col = |i: usize| rec.get(i).map(str::trim).unwrap_or("");
        let optional = self.optional;
        let opt = |i: usize| optional[i].map(col).filter(|s| !s.is_empty());
        let [c_symbol, c_ts, c_a, c_b, c_c, c_d, c_seq] = self.required;
        let symbol = CompactString::from(col(c_symbol).to_ascii_uppercase());
        if symbol.is_empty() {
            return Err("symbol is empty".into());
        }
        let exchange = CompactString::from(opt(4).unwrap_or(EXCHANGE).to_ascii_uppercase());
        let currency = CompactString::from(opt(5).unwrap_or(CURRENCY));
        let timestamp = self.timestamp(col(c_ts))?;
        let sequence = match col(c_seq) {
            "" => None,
            s => Some(s.parse::<i64>().map_err(|_| format!("sequence_number {s:?} is not an integer"))?),
        };
        match self.kind {
            HeaderKind::Trades => {
                let venue_trade_id = col(c_d);
                if venue_trade_id.is_empty() {
                    return Err("trade_id is empty".into());
                }
                let mut vendor = VendorData::new();
                for (key, slot) in [("company_id", 0), ("qualifiers", 1), ("venue", 2)] {
                    if let Some(v) = opt(slot) {
                        vendor.insert(key, v);
                    }
                }
                let side = TradeSide::parse_loose(col(c_c))
                    .ok_or_else(|| format!("side {:?} is not buy, sell, sell_short or unknown", col(c_c)))?;
                Ok(MarketEvent::Trade(TradeV2 {
                    message_id: message_id(&exchange, &symbol, EventKind::Trade, venue_trade_id),
                    trade_id: format_compact!("{exchange}-{venue_trade_id}"),
                    asset_class: AssetClass::Equities,
                    timestamp,
                    price: decimal::parse("price", col(c_a)).map_err(|e| e.to_string())?,
                    quantity: decimal::parse("quantity", col(c_b)).map_err(|e| e.to_string())?,
                    side,
                    trade_conditions: Vec::new(),
                    source_sequence: sequence,
                    ingestion_timestamp: ingested,
                    platform_sequence: None,
                    vendor_data: (!vendor.is_empty()).then_some(vendor),
                    is_sample_data: self.is_sample_data,
                    symbol,
                    exchange,
                    currency,
                }))
            }
            HeaderKind::Quotes => {
                let (bid_price, bid_quantity) =
                    book_side(("bid_price", col(c_a)), ("bid_quantity", col(c_c))).map_err(|e| e.to_string())?;
                let (ask_price, ask_quantity) =
                    book_side(("ask_price", col(c_b)), ("ask_quantity", col(c_d))).map_err(|e| e.to_string())?;
                // A quote's venue id: its own column, else its sequence number,
                // else its line, so a second load of the file repeats the ids.
                let venue_id = match (opt(3), sequence) {
                    (Some(id), _) => CompactString::from(id),
                    (None, Some(seq)) => format_compact!("{seq}"),
                    (None, None) => format_compact!("line-{line_no}"),
                };
                Ok(MarketEvent::Quote(QuoteV2 {
                    message_id: message_id(&exchange, &symbol, EventKind::Quote, &venue_id),
                    quote_id: format_compact!("{exchange}-{venue_id}"),
                    asset_class: AssetClass::Equities,
                    timestamp,
                    bid_price,
                    bid_quantity,
                    ask_price,
                    ask_quantity,
                    source_sequence: sequence,
                    ingestion_timestamp: ingested,
                    platform_sequence: None,
                    vendor_data: opt(0).map(|c| [("company_id", c)].into_iter().collect()),
                    is_sample_data: self.is_sample_data,
                    symbol,
                    exchange,
                    currency,
                }))
            }
        }
    }

    /// RFC 3339 with an offset is taken as given; a timestamp without one is
    /// exchange-local time.
    fn timestamp(&mut self, text: &str) -> Result<Timestamp, String> {
        if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
            return Ok(Timestamp::from_micros(dt.timestamp_micros()));
        }
        let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
            .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
            .map_err(|_| format!("exchange_timestamp {text:?} is not RFC 3339 or YYYY-MM-DD HH:MM:SS[.f]"))?;
        self.clock.to_utc(naive)
    }
}
