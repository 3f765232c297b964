//! Real Binance frames through the parser, field by field.

use k2_core::model::decimal::DecimalFault;
use k2_core::model::ids::{EventKind, message_id};
use k2_core::source::binance::{BinanceError, BinanceParser, Control, Frame};
use k2_core::{AssetClass, MarketEvent, QuoteV2, Timestamp, TradeSide, TradeV2};
use rust_decimal::Decimal;
use std::str::FromStr;

const RECEIVED: Timestamp = Timestamp::from_micros(1_722_766_102_800_123);
const TRADE: &str = r#"{"e":"trade","E":1722766102790,"s":"BTCUSDT","t":3718209179,"p":"60610.00000000","q":"0.00154000","T":1722766102789,"m":true,"M":true}"#;
const OLD_TRADE: &str = r#"{"e":"trade","E":1688496453388,"s":"BTCUSDT","t":3163009968,"p":"30906.90000000","q":"0.00157000","b":21682983268,"a":21682984519,"T":1688496453388,"m":true,"M":true}"#;

fn parse(frame: &str) -> Result<Frame, BinanceError> {
    BinanceParser::default().parse(frame.as_bytes(), RECEIVED)
}

fn trade(frame: &str) -> TradeV2 {
    match parse(frame) {
        Ok(Frame::Event(MarketEvent::Trade(t))) => t,
        other => panic!("expected a trade, got {other:?}"),
    }
}

fn quote(frame: &str) -> QuoteV2 {
    match parse(frame) {
        Ok(Frame::Event(MarketEvent::Quote(q))) => q,
        other => panic!("expected a quote, got {other:?}"),
    }
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

#[test]
fn golden_trade() {
    let t = trade(TRADE);
    assert_eq!(t.message_id, message_id("BINANCE", "BTCUSDT", EventKind::Trade, "3718209179"));
    assert_eq!(t.trade_id, "BINANCE-3718209179");
    assert_eq!(t.symbol, "BTCUSDT");
    assert_eq!(t.exchange, "BINANCE");
    assert_eq!(t.asset_class, AssetClass::Crypto);
    assert_eq!(t.timestamp, Timestamp::from_micros(1_722_766_102_789_000));
    assert_eq!(t.price, dec("60610"));
    assert_eq!(t.quantity, dec("0.00154"));
    assert_eq!(t.currency, "USDT");
    assert_eq!(t.side, TradeSide::Sell, "m=true: the buyer was the maker, the aggressor sold");
    assert!(t.trade_conditions.is_empty());
    assert_eq!(t.source_sequence, Some(3_718_209_179));
    assert_eq!(t.ingestion_timestamp, RECEIVED);
    assert_eq!(t.platform_sequence, None);
    let v = t.vendor_data.as_ref().unwrap();
    let entries: Vec<_> = v.iter().collect();
    assert_eq!(
        entries,
        [
            ("event_time", "1722766102790"),
            ("is_best_match", "true"),
            ("is_buyer_maker", "true"),
            ("trade_time", "1722766102789")
        ]
    );
    assert!(!t.is_sample_data);
}

#[test]
fn combined_stream_envelope_gives_the_same_trade() {
    let wrapped = format!(r#"{{"stream":"btcusdt@trade","data":{TRADE}}}"#);
    assert_eq!(trade(&wrapped), trade(TRADE));
}

#[test]
fn old_trade_form_with_order_ids_is_accepted() {
    let t = trade(OLD_TRADE);
    assert_eq!(t.trade_id, "BINANCE-3163009968");
    assert_eq!(t.price, dec("30906.9"));
    assert_eq!(t.quantity, dec("0.00157"));
    assert_eq!(t.timestamp, Timestamp::from_micros(1_688_496_453_388_000));
}

#[test]
fn buyer_taker_is_a_buy() {
    let t = trade(&TRADE.replace(r#""m":true"#, r#""m":false"#));
    assert_eq!(t.side, TradeSide::Buy);
    assert_eq!(t.vendor_data.unwrap().get("is_buyer_maker"), Some("false"));
}

#[test]
fn same_trade_same_id_across_parsers_and_times() {
    let a = trade(TRADE);
    let b = BinanceParser::default().parse(TRADE.as_bytes(), Timestamp::from_micros(5)).unwrap();
    let Frame::Event(b) = b else { panic!() };
    assert_eq!(a.message_id, b.message_id());
    let other = trade(&TRADE.replace("3718209179", "3718209180"));
    assert_ne!(a.message_id, other.message_id);
}

#[test]
fn book_ticker_raw_and_enveloped() {
    let raw =
        r#"{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}"#;
    let q = quote(raw);
    assert_eq!(q.quote_id, "BINANCE-400900217");
    assert_eq!(q.symbol, "BNBUSDT");
    assert_eq!(q.currency, "USDT");
    assert_eq!(q.bid_price, Some(dec("25.3519")));
    assert_eq!(q.bid_quantity, Some(dec("31.21")));
    assert_eq!(q.ask_price, Some(dec("25.3652")));
    assert_eq!(q.ask_quantity, Some(dec("40.66")));
    assert_eq!(q.source_sequence, Some(400_900_217));
    assert_eq!(q.timestamp, RECEIVED, "spot bookTicker has no exchange time");
    assert_eq!(q.message_id, message_id("BINANCE", "BNBUSDT", EventKind::Quote, "400900217"));
    let wrapped = format!(r#"{{"stream":"bnbusdt@bookTicker","data":{raw}}}"#);
    assert_eq!(quote(&wrapped), q);
}

#[test]
fn empty_book_side_is_null_not_zero() {
    let q = quote(r#"{"u":1,"s":"ETHBTC","b":"0.00000000","B":"0.00000000","a":"0.05","A":"3"}"#);
    assert_eq!((q.bid_price, q.bid_quantity), (None, None));
    assert_eq!(q.ask_price, Some(dec("0.05")));
    assert_eq!(q.currency, "BTC");
}

#[test]
fn control_frames_are_not_errors() {
    assert_eq!(parse(r#"{"result":null,"id":1}"#), Ok(Frame::Control(Control::Response { id: Some("1".into()) })));
    assert_eq!(parse(r#"{"e":"serverShutdown","E":1700000000000}"#), Ok(Frame::Control(Control::ServerShutdown)));
    assert_eq!(
        parse(r#"{"code":2,"msg":"Invalid request"}"#),
        Ok(Frame::Control(Control::Error { code: 2, msg: "Invalid request".into() }))
    );
}

#[test]
fn malformed_frames_say_why() {
    assert!(matches!(parse("{not json"), Err(BinanceError::Json(_))));
    assert!(matches!(parse("[1,2]"), Err(BinanceError::Json(_))));
    assert_eq!(
        parse(&TRADE.replace(r#""p":"60610.00000000","#, "")),
        Err(BinanceError::MissingField { event: "trade", field: "p" })
    );
    assert!(matches!(parse(r#"{"e":"aggTrade","s":"BTCUSDT"}"#), Err(BinanceError::Unsupported(_))));
    assert!(matches!(parse(&TRADE.replace("BTCUSDT", "FOOBAR")), Err(BinanceError::UnknownQuoteAsset(_))));
    assert!(matches!(parse(&TRADE.replace(r#""t":3718209179"#, r#""t":"x""#)), Err(BinanceError::Json(_))));
}

#[test]
fn decimals_that_do_not_fit_are_refused_not_rounded() {
    let e = parse(&TRADE.replace("0.00154000", "0.000000001")).unwrap_err();
    let BinanceError::Decimal(e) = e else { panic!("{e:?}") };
    assert_eq!((e.field, e.fault, e.value.as_str()), ("quantity", DecimalFault::TooManyFractionDigits, "0.000000001"));
    let e = parse(&TRADE.replace("60610.00000000", "12345678901.0")).unwrap_err();
    assert!(e.to_string().contains("price") && e.to_string().contains("12345678901.0"), "{e}");
    let e = parse(&TRADE.replace("60610.00000000", "-1")).unwrap_err();
    assert!(matches!(e, BinanceError::Decimal(d) if d.fault == DecimalFault::Negative));
}

#[test]
fn escaped_strings_still_parse() {
    let t = trade(&TRADE.replace(r#""s":"BTCUSDT""#, r#""s":"BTC\u0055SDT""#));
    assert_eq!(t.symbol, "BTCUSDT");
}
