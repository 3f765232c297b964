//! The v2 schema's enums. Their order is the Avro symbol order: the codec writes
//! the index, so a reorder here is a wire change (the schema drift test catches it).

use serde::{Deserialize, Serialize};

/// Asset class (Avro enum `AssetClass`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssetClass {
    Equities,
    Crypto,
    Futures,
    Options,
}

impl AssetClass {
    /// Avro symbols in schema order.
    pub const SYMBOLS: [&'static str; 4] = ["equities", "crypto", "futures", "options"];
    const ALL: [Self; 4] = [Self::Equities, Self::Crypto, Self::Futures, Self::Options];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_index(i: usize) -> Option<Self> {
        Self::ALL.get(i).copied()
    }

    pub fn as_str(self) -> &'static str {
        Self::SYMBOLS[self.index()]
    }
}

/// Side of the aggressor (Avro enum `TradeSide`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TradeSide {
    Buy,
    Sell,
    SellShort,
    Unknown,
}

impl TradeSide {
    /// Avro symbols in schema order.
    pub const SYMBOLS: [&'static str; 4] = ["BUY", "SELL", "SELL_SHORT", "UNKNOWN"];
    const ALL: [Self; 4] = [Self::Buy, Self::Sell, Self::SellShort, Self::Unknown];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_index(i: usize) -> Option<Self> {
        Self::ALL.get(i).copied()
    }

    pub fn as_str(self) -> &'static str {
        Self::SYMBOLS[self.index()]
    }

    /// Reads a side as CSV files write it: `buy`, `SELL`, `sell_short`, `unknown`
    /// (any case; blank means unknown).
    pub fn parse_loose(text: &str) -> Option<Self> {
        let t = text.trim();
        if t.is_empty() {
            return Some(Self::Unknown);
        }
        Self::SYMBOLS.iter().position(|s| s.eq_ignore_ascii_case(t)).and_then(Self::from_index)
    }
}
