//! `QuoteV2`: best bid and offer, as schemas/quote_v2.avsc describes it.

use compact_str::CompactString;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AssetClass, Timestamp, VendorData};

/// Best bid and offer, normalised across venues. A side of the book that is
/// empty is `None`, never a price of zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteV2 {
    /// Deterministic id (see [`crate::model::ids`]); the dedup key.
    pub message_id: Uuid,
    /// The venue's quote or book-update id prefixed with the exchange.
    pub quote_id: CompactString,
    pub symbol: CompactString,
    pub exchange: CompactString,
    pub asset_class: AssetClass,
    /// Exchange time; receive time for venues that send none.
    pub timestamp: Timestamp,
    pub bid_price: Option<Decimal>,
    pub bid_quantity: Option<Decimal>,
    pub ask_price: Option<Decimal>,
    pub ask_quantity: Option<Decimal>,
    pub currency: CompactString,
    pub source_sequence: Option<i64>,
    pub ingestion_timestamp: Timestamp,
    pub platform_sequence: Option<i64>,
    pub vendor_data: Option<VendorData>,
    pub is_sample_data: bool,
}
