//! Binance spot WebSocket payloads → v2 events.
//!
//! Accepts the combined-stream envelope `{"stream":..,"data":..}` and raw
//! payloads: `trade` (e,E,s,t,p,q,T,m,M) becomes a [`TradeV2`], `bookTicker`
//! (u,s,b,B,a,A) a [`QuoteV2`]. Subscription responses, error responses and
//! `serverShutdown` are [`Control`] frames, not errors.
//!
//! Frames are parsed from bytes into borrowed structs in one pass; no
//! `serde_json::Value` is built.

use compact_str::CompactString;
use thiserror::Error;

use super::currency::QuoteAssets;
pub mod depth;
mod raw;
pub mod rest;
mod scan;

use self::raw::{Envelope, Payload, StrOrNum};
use super::{BookSideError, book_side};
use crate::model::decimal::{self, DecimalError};
use crate::model::ids::{EventKind, message_id};
use crate::model::{AssetClass, MarketEvent, QuoteV2, Timestamp, TradeSide, TradeV2, VendorData};

/// Exchange code of every Binance event.
pub const EXCHANGE: &str = "BINANCE";

/// What one WebSocket text frame turned out to be.
// Events are nearly every frame: boxing them to shrink `Control` would cost an
// allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Event(MarketEvent),
    Control(Control),
}

/// Frames that steer the connection rather than carry market data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Answer to a SUBSCRIBE / UNSUBSCRIBE / LIST request (`{"result":..,"id":..}`).
    Response { id: Option<CompactString> },
    /// The server will close this connection soon: rotate to a new one.
    ServerShutdown,
    /// An error answer (`{"code":..,"msg":..}`).
    Error { code: i64, msg: String },
}

/// Why a frame was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BinanceError {
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("{event} message lacks field {field:?}")]
    MissingField { event: &'static str, field: &'static str },
    #[error("unsupported message: {0}")]
    Unsupported(String),
    #[error("field {field:?} has invalid value {value}")]
    Invalid { field: &'static str, value: String },
    #[error("symbol {0:?} ends in no known quote asset")]
    UnknownQuoteAsset(String),
    #[error(transparent)]
    Decimal(#[from] DecimalError),
    #[error(transparent)]
    BookSide(#[from] BookSideError),
}

/// Parses Binance frames, caching per-symbol facts between calls.
#[derive(Debug, Default)]
pub struct BinanceParser {
    quote_assets: QuoteAssets,
    /// symbol → (upper-case symbol, quote currency)
    symbols: rustc_hash::FxHashMap<CompactString, (CompactString, CompactString)>,
    is_sample_data: bool,
}

impl BinanceParser {
    pub fn new(quote_assets: QuoteAssets) -> Self {
        Self { quote_assets, ..Self::default() }
    }

    /// Marks every event this parser produces as sample data (simulated feeds).
    pub fn sample_data(mut self, yes: bool) -> Self {
        self.is_sample_data = yes;
        self
    }

    /// Parses one text frame received at `received`.
    pub fn parse(&mut self, frame: &[u8], received: Timestamp) -> Result<Frame, BinanceError> {
        let (mut top, mut inner) = (Payload::empty(), None);
        if scan::scan(frame, &mut top, &mut inner) {
            return self.payload(inner.unwrap_or(top), received);
        }
        let raw = decode_with_serde(frame)?;
        match raw.data {
            Some(data) => self.payload(data, received),
            None => self.payload(raw.with_data(None), received),
        }
    }

    fn payload(&mut self, p: Payload<'_>, received: Timestamp) -> Result<Frame, BinanceError> {
        match p.e.as_deref() {
            Some("trade") => self.trade(p, received).map(|t| Frame::Event(t.into())),
            Some("bookTicker") => self.book_ticker(p, received).map(|q| Frame::Event(q.into())),
            Some("serverShutdown") => Ok(Frame::Control(Control::ServerShutdown)),
            Some(other) => Err(BinanceError::Unsupported(format!("event type {other:?}"))),
            // Spot bookTicker payloads carry no event type.
            None if p.u.is_some() && p.s.is_some() => self.book_ticker(p, received).map(|q| Frame::Event(q.into())),
            None if p.code.is_some() => Ok(Frame::Control(Control::Error {
                code: p.code.unwrap_or_default(),
                msg: p.msg.map(|m| m.0.into_owned()).unwrap_or_default(),
            })),
            None if p.id.is_some() || p.result.is_some() => {
                Ok(Frame::Control(Control::Response { id: p.id.map(|id| id.to_compact()) }))
            }
            None => Err(BinanceError::Unsupported("no event type and no known shape".into())),
        }
    }

    fn trade(&mut self, p: Payload<'_>, received: Timestamp) -> Result<TradeV2, BinanceError> {
        const EV: &str = "trade";
        let symbol = p.s.as_deref().ok_or_else(|| missing(EV, "s"))?;
        let id = p.t.ok_or_else(|| missing(EV, "t"))?;
        let price = p.p.as_deref().ok_or_else(|| missing(EV, "p"))?;
        let quantity = p.q.as_deref().ok_or_else(|| missing(EV, "q"))?;
        let trade_time = p.trade_time.ok_or_else(|| missing(EV, "T"))?;
        let buyer_is_maker = p.buyer_is_maker.ok_or_else(|| missing(EV, "m"))?;

        let sequence = i64::try_from(id).map_err(|_| invalid("t", id))?;
        let timestamp = Timestamp::from_millis(trade_time).ok_or_else(|| invalid("T", trade_time))?;
        let price = decimal::parse("price", price)?;
        let quantity = decimal::parse("quantity", quantity)?;
        let (symbol, currency) = self.symbol(symbol)?;

        // Keys in sorted order, as `from_sorted` requires.
        let mut vendor = Vec::with_capacity(4);
        if let Some(e) = p.event_time {
            vendor.push((CompactString::const_new("event_time"), CompactString::from(itoa::Buffer::new().format(e))));
        }
        if let Some(best) = p.best_match {
            vendor.push((CompactString::const_new("is_best_match"), CompactString::const_new(bool_str(best))));
        }
        vendor.push((CompactString::const_new("is_buyer_maker"), CompactString::const_new(bool_str(buyer_is_maker))));
        vendor.push((
            CompactString::const_new("trade_time"),
            CompactString::from(itoa::Buffer::new().format(trade_time)),
        ));
        let vendor = VendorData::from_sorted(vendor);
        Ok(self.build_trade(Fields {
            symbol,
            currency,
            id,
            sequence,
            timestamp,
            price,
            quantity,
            buyer_is_maker,
            vendor,
            received,
        }))
    }

    /// The one place a Binance trade becomes a [`TradeV2`], for WebSocket and
    /// REST alike: the same trade gets the same ids and the same side rule.
    fn build_trade(&self, f: Fields) -> TradeV2 {
        let mut digits = itoa::Buffer::new();
        let id_text = digits.format(f.id);
        let mut trade_id = CompactString::const_new("BINANCE-");
        trade_id.push_str(id_text);
        TradeV2 {
            message_id: message_id(EXCHANGE, &f.symbol, EventKind::Trade, id_text),
            trade_id,
            exchange: CompactString::const_new(EXCHANGE),
            asset_class: AssetClass::Crypto,
            timestamp: f.timestamp,
            price: f.price,
            quantity: f.quantity,
            // m=true: the buyer was the maker, so the aggressor sold.
            side: if f.buyer_is_maker { TradeSide::Sell } else { TradeSide::Buy },
            trade_conditions: Vec::new(),
            source_sequence: Some(f.sequence),
            ingestion_timestamp: f.received,
            platform_sequence: None,
            vendor_data: Some(f.vendor),
            is_sample_data: self.is_sample_data,
            symbol: f.symbol,
            currency: f.currency,
        }
    }

    fn book_ticker(&mut self, p: Payload<'_>, received: Timestamp) -> Result<QuoteV2, BinanceError> {
        const EV: &str = "bookTicker";
        let symbol = p.s.as_deref().ok_or_else(|| missing(EV, "s"))?;
        let update_id = p.u.ok_or_else(|| missing(EV, "u"))?;
        let bid = p.b.as_ref().and_then(StrOrNum::as_str).ok_or_else(|| missing(EV, "b"))?;
        let bid_qty = p.bid_qty.as_deref().ok_or_else(|| missing(EV, "B"))?;
        let ask = p.a.as_ref().and_then(StrOrNum::as_str).ok_or_else(|| missing(EV, "a"))?;
        let ask_qty = p.ask_qty.as_deref().ok_or_else(|| missing(EV, "A"))?;

        let sequence = i64::try_from(update_id).map_err(|_| invalid("u", update_id))?;
        // Spot book tickers carry no time; futures ones carry T and E.
        let timestamp = match p.trade_time.or(p.event_time) {
            Some(ms) => Timestamp::from_millis(ms).ok_or_else(|| invalid("T", ms))?,
            None => received,
        };
        let (bid_price, bid_quantity) = book_side(("bid_price", bid), ("bid_quantity", bid_qty))?;
        let (ask_price, ask_quantity) = book_side(("ask_price", ask), ("ask_quantity", ask_qty))?;
        let (symbol, currency) = self.symbol(symbol)?;

        let mut digits = itoa::Buffer::new();
        let id_text = digits.format(update_id);
        let mut quote_id = CompactString::const_new("BINANCE-");
        quote_id.push_str(id_text);
        let message_id = message_id(EXCHANGE, &symbol, EventKind::Quote, id_text);

        Ok(QuoteV2 {
            message_id,
            quote_id,
            symbol,
            exchange: CompactString::const_new(EXCHANGE),
            asset_class: AssetClass::Crypto,
            timestamp,
            bid_price,
            bid_quantity,
            ask_price,
            ask_quantity,
            currency,
            source_sequence: Some(sequence),
            ingestion_timestamp: received,
            platform_sequence: None,
            vendor_data: None,
            is_sample_data: self.is_sample_data,
        })
    }

    /// The canonical symbol and its quote currency, computed once per symbol.
    fn symbol(&mut self, symbol: &str) -> Result<(CompactString, CompactString), BinanceError> {
        if let Some(known) = self.symbols.get(symbol) {
            return Ok(known.clone());
        }
        let upper = CompactString::from(symbol.to_ascii_uppercase());
        let quote =
            self.quote_assets.quote_of(&upper).ok_or_else(|| BinanceError::UnknownQuoteAsset(symbol.to_owned()))?;
        let entry = (upper.clone(), CompactString::from(quote));
        self.symbols.insert(CompactString::from(symbol), entry.clone());
        Ok(entry)
    }
}

/// For the fuzz targets (tests/fuzz): whether the fast scanner reads `frame`
/// exactly as serde does. A disagreement would never show as an error, only
/// as a frame read differently, so the fuzzer has to be told to look.
#[cfg(fuzzing)]
pub fn fast_path_agrees(frame: &[u8]) -> Result<(), String> {
    let (mut top, mut inner) = (Payload::empty(), None);
    if !scan::scan(frame, &mut top, &mut inner) {
        return Ok(());
    }
    let slow = decode_with_serde(frame).map_err(|e| format!("the scanner accepted what serde refuses: {e}"))?;
    let received = Timestamp::from_micros(7);
    let fast = BinanceParser::default().payload(inner.unwrap_or(top), received);
    let slow = match slow.data {
        Some(data) => BinanceParser::default().payload(data, received),
        None => BinanceParser::default().payload(slow.with_data(None), received),
    };
    if fast == slow { Ok(()) } else { Err(format!("scanner read {fast:?}, serde {slow:?}")) }
}

fn decode_with_serde(frame: &[u8]) -> Result<Envelope<'_>, BinanceError> {
    serde_json::from_slice(frame).map_err(|e| BinanceError::Json(e.to_string()))
}

/// What a trade is made of, whichever API it came from.
struct Fields {
    symbol: CompactString,
    currency: CompactString,
    id: u64,
    sequence: i64,
    timestamp: Timestamp,
    price: rust_decimal::Decimal,
    quantity: rust_decimal::Decimal,
    buyer_is_maker: bool,
    vendor: VendorData,
    received: Timestamp,
}

fn missing(event: &'static str, field: &'static str) -> BinanceError {
    BinanceError::MissingField { event, field }
}

fn invalid(field: &'static str, value: impl std::fmt::Display) -> BinanceError {
    BinanceError::Invalid { field, value: value.to_string() }
}

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}
