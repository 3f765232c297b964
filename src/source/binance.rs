//! Binance spot WebSocket payloads → v2 events.
//!
//! Accepts the combined-stream envelope `{"stream":..,"data":..}` and raw
//! payloads: `trade` (e,E,s,t,p,q,T,m,M) becomes a [`TradeV2`], `bookTicker`
//! (u,s,b,B,a,A) a [`QuoteV2`]. Subscription responses, error responses and
//! `serverShutdown` are [`Control`] frames, not errors.
//!
//! Frames are parsed from bytes into borrowed structs in one pass; no
//! `serde_json::Value` is built.

use std::borrow::Cow;
use std::collections::HashMap;

use compact_str::CompactString;
use serde::Deserialize;
use serde::de::IgnoredAny;
use thiserror::Error;

use super::currency::QuoteAssets;
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
    symbols: HashMap<CompactString, (CompactString, CompactString)>,
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
        let raw: Envelope<'_> = serde_json::from_slice(frame).map_err(|e| BinanceError::Json(e.to_string()))?;
        match raw.data {
            Some(data) => self.payload(data, received),
            None => self.payload(raw.without_data(), received),
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
        let symbol = p.s.as_deref().ok_or(BinanceError::MissingField { event: EV, field: "s" })?;
        let id = p.t.ok_or(BinanceError::MissingField { event: EV, field: "t" })?;
        let price = p.p.as_deref().ok_or(BinanceError::MissingField { event: EV, field: "p" })?;
        let quantity = p.q.as_deref().ok_or(BinanceError::MissingField { event: EV, field: "q" })?;
        let trade_time = p.trade_time.ok_or(BinanceError::MissingField { event: EV, field: "T" })?;
        let buyer_is_maker = p.buyer_is_maker.ok_or(BinanceError::MissingField { event: EV, field: "m" })?;

        let sequence = i64::try_from(id).map_err(|_| invalid("t", id))?;
        let timestamp = Timestamp::from_millis(trade_time).ok_or_else(|| invalid("T", trade_time))?;
        let price = decimal::parse("price", price)?;
        let quantity = decimal::parse("quantity", quantity)?;
        let (symbol, currency) = self.symbol(symbol)?;

        let mut digits = itoa::Buffer::new();
        let id_text = digits.format(id);
        let mut trade_id = CompactString::const_new("BINANCE-");
        trade_id.push_str(id_text);
        let message_id = message_id(EXCHANGE, &symbol, EventKind::Trade, id_text);

        let mut vendor = VendorData::with_capacity(4);
        if let Some(e) = p.event_time {
            vendor.insert("event_time", itoa::Buffer::new().format(e));
        }
        vendor.insert("trade_time", itoa::Buffer::new().format(trade_time));
        vendor.insert("is_buyer_maker", bool_str(buyer_is_maker));
        if let Some(best) = p.best_match {
            vendor.insert("is_best_match", bool_str(best));
        }

        Ok(TradeV2 {
            message_id,
            trade_id,
            symbol,
            exchange: CompactString::const_new(EXCHANGE),
            asset_class: AssetClass::Crypto,
            timestamp,
            price,
            quantity,
            currency,
            // m=true: the buyer was the maker, so the aggressor sold.
            side: if buyer_is_maker { TradeSide::Sell } else { TradeSide::Buy },
            trade_conditions: Vec::new(),
            source_sequence: Some(sequence),
            ingestion_timestamp: received,
            platform_sequence: None,
            vendor_data: Some(vendor),
            is_sample_data: self.is_sample_data,
        })
    }

    fn book_ticker(&mut self, p: Payload<'_>, received: Timestamp) -> Result<QuoteV2, BinanceError> {
        const EV: &str = "bookTicker";
        let symbol = p.s.as_deref().ok_or(BinanceError::MissingField { event: EV, field: "s" })?;
        let update_id = p.u.ok_or(BinanceError::MissingField { event: EV, field: "u" })?;
        let bid =
            p.b.as_ref().and_then(StrOrNum::as_str).ok_or(BinanceError::MissingField { event: EV, field: "b" })?;
        let bid_qty = p.bid_qty.as_deref().ok_or(BinanceError::MissingField { event: EV, field: "B" })?;
        let ask =
            p.a.as_ref().and_then(StrOrNum::as_str).ok_or(BinanceError::MissingField { event: EV, field: "a" })?;
        let ask_qty = p.ask_qty.as_deref().ok_or(BinanceError::MissingField { event: EV, field: "A" })?;

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

fn invalid(field: &'static str, value: impl std::fmt::Display) -> BinanceError {
    BinanceError::Invalid { field, value: value.to_string() }
}

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// Every field any supported frame may have; unknown fields are skipped. `D` is
/// the nested payload for the combined-stream envelope, or nothing inside it.
#[derive(Deserialize)]
struct Raw<'a, D> {
    // No `default` here: it would demand `D: Default`, and serde already reads
    // a missing `Option` field as `None`.
    data: Option<D>,
    #[serde(borrow, default)]
    e: Option<Text<'a>>,
    #[serde(rename = "E", default)]
    event_time: Option<i64>,
    #[serde(borrow, default)]
    s: Option<Text<'a>>,
    #[serde(default)]
    t: Option<u64>,
    #[serde(borrow, default)]
    p: Option<Text<'a>>,
    #[serde(borrow, default)]
    q: Option<Text<'a>>,
    #[serde(rename = "T", default)]
    trade_time: Option<i64>,
    #[serde(rename = "m", default)]
    buyer_is_maker: Option<bool>,
    #[serde(rename = "M", default)]
    best_match: Option<bool>,
    #[serde(default)]
    u: Option<u64>,
    /// Best bid price in bookTicker; the buyer order id (a number) in old trades.
    #[serde(borrow, default)]
    b: Option<StrOrNum<'a>>,
    #[serde(rename = "B", borrow, default)]
    bid_qty: Option<Text<'a>>,
    /// Best ask price in bookTicker; the seller order id in old trades.
    #[serde(borrow, default)]
    a: Option<StrOrNum<'a>>,
    #[serde(rename = "A", borrow, default)]
    ask_qty: Option<Text<'a>>,
    #[serde(default)]
    result: Option<IgnoredAny>,
    #[serde(borrow, default)]
    id: Option<StrOrNum<'a>>,
    #[serde(default)]
    code: Option<i64>,
    #[serde(borrow, default)]
    msg: Option<Text<'a>>,
}

type Payload<'a> = Raw<'a, IgnoredAny>;
type Envelope<'a> = Raw<'a, Payload<'a>>;

impl<'a> Envelope<'a> {
    /// The envelope's own fields as a payload (a raw, un-enveloped frame).
    fn without_data(self) -> Payload<'a> {
        Raw {
            data: None,
            e: self.e,
            event_time: self.event_time,
            s: self.s,
            t: self.t,
            p: self.p,
            q: self.q,
            trade_time: self.trade_time,
            buyer_is_maker: self.buyer_is_maker,
            best_match: self.best_match,
            u: self.u,
            b: self.b,
            bid_qty: self.bid_qty,
            a: self.a,
            ask_qty: self.ask_qty,
            result: self.result,
            id: self.id,
            code: self.code,
            msg: self.msg,
        }
    }
}

/// A JSON string, borrowed from the frame unless it holds escapes.
///
/// serde borrows a bare `Cow<str>` field but not one inside an `Option`, which
/// would allocate for every field of every frame; this visitor borrows in both.
struct Text<'a>(Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON value that is a string in one message type and a number in another.
enum StrOrNum<'a> {
    Str(Cow<'a, str>),
    Num(i128),
}

impl StrOrNum<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            Self::Num(_) => None,
        }
    }

    fn to_compact(&self) -> CompactString {
        match self {
            Self::Str(s) => CompactString::from(s.as_ref()),
            Self::Num(n) => CompactString::from(itoa::Buffer::new().format(*n)),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for StrOrNum<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StrOrNum<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(StrOrNum::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StrOrNum::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(StrOrNum::Num(i128::from(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(StrOrNum::Num(i128::from(v)))
            }
        }
        d.deserialize_any(V)
    }
}
