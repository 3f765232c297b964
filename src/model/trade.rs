//! `TradeV2`: one trade, as schemas/trade_v2.avsc describes it.

use compact_str::CompactString;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AssetClass, Timestamp, TradeSide, VendorData};

/// One trade execution, normalised across venues. Field order and meaning follow
/// schemas/trade_v2.avsc; the schema drift tests hold the two together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeV2 {
    /// Deterministic id (see [`crate::model::ids`]); the dedup key.
    pub message_id: Uuid,
    /// The venue's trade id prefixed with the exchange, e.g. `BINANCE-3718209179`.
    pub trade_id: CompactString,
    pub symbol: CompactString,
    pub exchange: CompactString,
    pub asset_class: AssetClass,
    /// Exchange time of the trade.
    pub timestamp: Timestamp,
    /// Exact decimal(18,8), non-negative.
    pub price: Decimal,
    /// Exact decimal(18,8), non-negative.
    pub quantity: Decimal,
    /// Currency of `price` (the quote asset for crypto pairs).
    pub currency: CompactString,
    pub side: TradeSide,
    pub trade_conditions: Vec<CompactString>,
    /// The venue's sequence number; sequence checking runs on it.
    pub source_sequence: Option<i64>,
    pub ingestion_timestamp: Timestamp,
    /// Assigned by the sequence tracker.
    pub platform_sequence: Option<i64>,
    pub vendor_data: Option<VendorData>,
    pub is_sample_data: bool,
}
