//! The v2 market-data model: what every source produces and every sink takes.

mod book;
pub mod decimal;
mod enums;
pub mod ids;
mod quote;
mod timestamp;
mod trade;
mod vendor;

pub use book::{BookEventKind, BookEventV2, BookLevel};
pub use enums::{AssetClass, TradeSide};
pub use quote::QuoteV2;
pub use timestamp::Timestamp;
pub use trade::TradeV2;
pub use vendor::VendorData;

use serde::{Deserialize, Serialize};

/// Either kind of v2 event. Actors move these in batches (`Vec<MarketEvent>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MarketEvent {
    Trade(TradeV2),
    Quote(QuoteV2),
}

impl MarketEvent {
    pub fn message_id(&self) -> uuid::Uuid {
        match self {
            Self::Trade(t) => t.message_id,
            Self::Quote(q) => q.message_id,
        }
    }

    pub fn symbol(&self) -> &str {
        match self {
            Self::Trade(t) => &t.symbol,
            Self::Quote(q) => &q.symbol,
        }
    }

    pub fn exchange(&self) -> &str {
        match self {
            Self::Trade(t) => &t.exchange,
            Self::Quote(q) => &q.exchange,
        }
    }

    pub fn timestamp(&self) -> Timestamp {
        match self {
            Self::Trade(t) => t.timestamp,
            Self::Quote(q) => q.timestamp,
        }
    }

    pub fn source_sequence(&self) -> Option<i64> {
        match self {
            Self::Trade(t) => t.source_sequence,
            Self::Quote(q) => q.source_sequence,
        }
    }

    pub fn is_trade(&self) -> bool {
        matches!(self, Self::Trade(_))
    }
}

impl From<TradeV2> for MarketEvent {
    fn from(t: TradeV2) -> Self {
        Self::Trade(t)
    }
}

impl From<QuoteV2> for MarketEvent {
    fn from(q: QuoteV2) -> Self {
        Self::Quote(q)
    }
}
