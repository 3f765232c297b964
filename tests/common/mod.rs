//! proptest strategies for v2 events, shared by the integration tests.
#![allow(dead_code)]

use compact_str::CompactString;
use k2_core::model::decimal::UNSCALED_LIMIT;
use k2_core::{
    AssetClass, BookEventKind, BookEventV2, MarketEvent, QuoteV2, Timestamp, TradeSide, TradeV2, VendorData,
};
use proptest::prelude::*;
use rust_decimal::Decimal;
use uuid::Uuid;

/// Any decimal(18,8) value, with the edges (0, the smallest step, the largest
/// value that fits) drawn often.
pub fn decimal() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        1 => Just(0i64),
        1 => Just(1i64),
        1 => Just(UNSCALED_LIMIT - 1),
        6 => 0..UNSCALED_LIMIT,
    ]
    .prop_map(|u| Decimal::new(u, 8))
}

/// Strings including empty and non-ASCII ones.
pub fn text() -> impl Strategy<Value = CompactString> {
    prop_oneof![Just(String::new()), "[A-Z0-9-]{1,30}", "\\PC{0,40}"].prop_map(CompactString::from)
}

pub fn vendor_data() -> impl Strategy<Value = Option<VendorData>> {
    prop_oneof![
        Just(None),
        Just(Some(VendorData::new())),
        proptest::collection::vec((text(), text()), 1..5).prop_map(|kv| Some(kv.into_iter().collect())),
    ]
}

fn asset_class() -> impl Strategy<Value = AssetClass> {
    prop_oneof![
        Just(AssetClass::Equities),
        Just(AssetClass::Crypto),
        Just(AssetClass::Futures),
        Just(AssetClass::Options)
    ]
}

fn side() -> impl Strategy<Value = TradeSide> {
    prop_oneof![Just(TradeSide::Buy), Just(TradeSide::Sell), Just(TradeSide::SellShort), Just(TradeSide::Unknown)]
}

fn ts() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        1 => Just(Timestamp::MIN),
        1 => Just(Timestamp::MAX),
        8 => (Timestamp::MIN.as_micros()..=Timestamp::MAX.as_micros()).prop_map(Timestamp::from_micros),
    ]
}

pub fn trade() -> impl Strategy<Value = TradeV2> {
    (
        (any::<u128>(), text(), text(), text(), asset_class(), ts(), decimal(), decimal()),
        (text(), side(), proptest::collection::vec(text(), 0..4), any::<Option<i64>>(), ts(), any::<Option<i64>>()),
        (vendor_data(), any::<bool>()),
    )
        .prop_map(
            |(
                (id, trade_id, symbol, exchange, asset_class, timestamp, price, quantity),
                (currency, side, trade_conditions, source_sequence, ingestion_timestamp, platform_sequence),
                (vendor_data, is_sample_data),
            )| TradeV2 {
                message_id: Uuid::from_u128(id),
                trade_id,
                symbol,
                exchange,
                asset_class,
                timestamp,
                price,
                quantity,
                currency,
                side,
                trade_conditions,
                source_sequence,
                ingestion_timestamp,
                platform_sequence,
                vendor_data,
                is_sample_data,
            },
        )
}

pub fn quote() -> impl Strategy<Value = QuoteV2> {
    (
        (any::<u128>(), text(), text(), text(), asset_class(), ts()),
        (
            proptest::option::of(decimal()),
            proptest::option::of(decimal()),
            proptest::option::of(decimal()),
            proptest::option::of(decimal()),
        ),
        (text(), any::<Option<i64>>(), ts(), any::<Option<i64>>(), vendor_data(), any::<bool>()),
    )
        .prop_map(
            |(
                (id, quote_id, symbol, exchange, asset_class, timestamp),
                (bid_price, bid_quantity, ask_price, ask_quantity),
                (currency, source_sequence, ingestion_timestamp, platform_sequence, vendor_data, is_sample_data),
            )| QuoteV2 {
                message_id: Uuid::from_u128(id),
                quote_id,
                symbol,
                exchange,
                asset_class,
                timestamp,
                bid_price,
                bid_quantity,
                ask_price,
                ask_quantity,
                currency,
                source_sequence,
                ingestion_timestamp,
                platform_sequence,
                vendor_data,
                is_sample_data,
            },
        )
}

pub fn event() -> impl Strategy<Value = MarketEvent> {
    prop_oneof![trade().prop_map(MarketEvent::Trade), quote().prop_map(MarketEvent::Quote)]
}

fn book_kind() -> impl Strategy<Value = BookEventKind> {
    prop_oneof![
        Just(BookEventKind::Update),
        Just(BookEventKind::Snapshot),
        Just(BookEventKind::Synced),
        Just(BookEventKind::Unsynced)
    ]
}

/// Any book event, with empty and long level lists.
pub fn book() -> impl Strategy<Value = BookEventV2> {
    let levels = || proptest::collection::vec((decimal(), decimal()), 0..30);
    (
        (any::<u128>(), text(), text(), asset_class(), book_kind(), ts(), any::<i64>(), any::<i64>()),
        (levels(), levels(), any::<Option<i32>>(), proptest::option::of(text())),
        (ts(), any::<Option<i64>>(), any::<bool>()),
    )
        .prop_map(
            |(
                (id, symbol, exchange, asset_class, kind, timestamp, first_update_id, final_update_id),
                (bids, asks, depth, cause),
                (ingestion_timestamp, platform_sequence, is_sample_data),
            )| BookEventV2 {
                message_id: Uuid::from_u128(id),
                symbol,
                exchange,
                asset_class,
                kind,
                timestamp,
                first_update_id,
                final_update_id,
                bids,
                asks,
                depth,
                cause,
                ingestion_timestamp,
                platform_sequence,
                is_sample_data,
            },
        )
}
