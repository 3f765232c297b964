//! `BookEventV2`: one order-book event, as schemas/book_v2.avsc describes
//! it. One record type for updates, snapshots and sync-state changes, so
//! that a book topic has one schema and a reader meets the state changes in
//! order with the updates they qualify.

use compact_str::CompactString;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ids::{self, EventKind};
use super::{AssetClass, Timestamp};

/// A price and the absolute quantity resting there (Avro `BookLevel`).
pub type BookLevel = (Decimal, Decimal);

/// What a book event is (Avro enum `BookEventKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BookEventKind {
    /// A venue's depth event: the levels it changes.
    Update,
    /// The book's levels at an update id.
    Snapshot,
    /// From this update id on, updates apply to a known book.
    Synced,
    /// After this update id the book is not known until the next `Synced`.
    Unsynced,
}

impl BookEventKind {
    /// Avro symbols in schema order.
    pub const SYMBOLS: [&'static str; 4] = ["update", "snapshot", "synced", "unsynced"];
    const ALL: [Self; 4] = [Self::Update, Self::Snapshot, Self::Synced, Self::Unsynced];

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

/// One order-book event, normalised across venues. Field order and meaning
/// follow schemas/book_v2.avsc; the schema drift tests hold the two together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookEventV2 {
    /// Deterministic (see [`BookEventV2::id`]); the dedup key.
    pub message_id: Uuid,
    pub symbol: CompactString,
    pub exchange: CompactString,
    pub asset_class: AssetClass,
    pub kind: BookEventKind,
    /// An update's venue event time; when K2 took a snapshot or saw a change.
    pub timestamp: Timestamp,
    /// An update's `U`; otherwise equal to `final_update_id`.
    pub first_update_id: i64,
    /// An update's `u`; the update id a snapshot reflects; the last update
    /// id applied at a state change (0 when none was).
    pub final_update_id: i64,
    /// Bids an update changes (quantity zero removes), or a snapshot's bids
    /// from the best down.
    pub bids: Vec<BookLevel>,
    /// Asks, as bids.
    pub asks: Vec<BookLevel>,
    /// A snapshot's most levels per side.
    pub depth: Option<i32>,
    /// Why a book is unsynced; `rest` or `periodic` for a snapshot.
    pub cause: Option<CompactString>,
    pub ingestion_timestamp: Timestamp,
    /// Assigned by K2 per (exchange, symbol) over book events.
    pub platform_sequence: Option<i64>,
    pub is_sample_data: bool,
}

impl BookEventV2 {
    /// The message id of a book event: an update is named by its update-id
    /// range (a venue's second copy of an event gets the same id), a
    /// snapshot by its update id and source, a state change by its state,
    /// update id, cause and instant (two changes at one update id are two
    /// events).
    pub fn id(
        exchange: &str,
        symbol: &str,
        kind: BookEventKind,
        range: (i64, i64),
        cause: Option<&str>,
        at: Timestamp,
    ) -> Uuid {
        let (first, last) = range;
        let name = match kind {
            BookEventKind::Update => format!("update-{first}-{last}"),
            BookEventKind::Snapshot => format!("snapshot-{last}-{}", cause.unwrap_or("")),
            BookEventKind::Synced | BookEventKind::Unsynced => {
                format!("{}-{last}-{}-{}", kind.as_str(), cause.unwrap_or(""), at.as_micros())
            }
        };
        ids::message_id(exchange, symbol, EventKind::Book, &name)
    }
}
