//! The live order books as readers see them: what a reader asks an
//! order-book actor ([`GetBook`]), what it gets back ([`BookView`]), and
//! which actor keeps which symbol ([`BookDirectory`]). Here, between the
//! sources that keep the books and the queries that show them.

use std::sync::{Arc, RwLock};

use actix::prelude::*;
use compact_str::CompactString;
use rustc_hash::FxHashMap;
use serde::Serialize;

/// What a symbol's book holds now, to `depth` levels per side.
#[derive(Debug, Message)]
#[rtype(result = "Option<BookView>")]
pub struct GetBook {
    pub symbol: CompactString,
    pub depth: usize,
}

/// One book as `/v1/book/{symbol}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BookView {
    pub exchange: &'static str,
    pub symbol: CompactString,
    pub synced: bool,
    /// Why it is not synced (`start`, `gap`, `reconnect`, `crossed`,
    /// `snapshot_behind`, `shed`, `restart`; stored books also `stop`,
    /// `store_gap`, `no_snapshot`).
    pub unsynced_cause: Option<&'static str>,
    /// The last update id the book reflects (None while unsynced).
    pub update_id: Option<u64>,
    /// Event time of the last event applied, in microseconds.
    pub event_time_us: Option<i64>,
    pub bids: Vec<[String; 2]>,
    pub asks: Vec<[String; 2]>,
    /// True when a side was cut at the edge of what the last snapshot
    /// vouched for: more levels may exist beyond it that the book does not
    /// know of, so none beyond it are reported.
    pub bids_cut_at_window: bool,
    pub asks_cut_at_window: bool,
    /// Levels held, and of those outside the synced window (never shown).
    pub levels_held: usize,
    pub levels_outside_window: usize,
    /// A stored book's: K2's instant of the last record it reflects.
    pub recorded_at_us: Option<i64>,
}

impl BookView {
    /// `book` (None: not known, so no levels) to `depth` levels per side;
    /// the cause, the times and the recording instant are the caller's.
    pub fn of(
        exchange: &'static str,
        symbol: CompactString,
        book: Option<&k2_core::book::OrderBook>,
        depth: usize,
    ) -> Self {
        use k2_core::book::Side;
        let text = |levels: Vec<k2_core::book::Level>| {
            levels.into_iter().map(|(p, q)| [p.to_string(), q.to_string()]).collect()
        };
        let mut view = BookView {
            exchange,
            symbol,
            synced: book.is_some(),
            unsynced_cause: None,
            update_id: None,
            event_time_us: None,
            bids: Vec::new(),
            asks: Vec::new(),
            bids_cut_at_window: false,
            asks_cut_at_window: false,
            levels_held: 0,
            levels_outside_window: 0,
            recorded_at_us: None,
        };
        if let Some(book) = book {
            let (bids, bids_cut) = book.top(Side::Bid, depth);
            let (asks, asks_cut) = book.top(Side::Ask, depth);
            view.update_id = Some(book.update_id());
            view.bids = text(bids);
            view.asks = text(asks);
            view.bids_cut_at_window = bids_cut;
            view.asks_cut_at_window = asks_cut;
            view.levels_held = book.levels_held();
            view.levels_outside_window = book.outside_window();
        }
        view
    }
}

/// Where the order-book actors record what they do: the book tables
/// (`lake::books::BookLog`), kept behind this so the sources do not
/// reach into the lake.
pub trait BookRecorder: Send + Sync {
    /// Takes one actor's records, in the order it made them.
    fn record(&self, records: Vec<k2_core::BookEventV2>);

    /// Those of `symbols` whose records did not all reach the store since
    /// they were last asked (their stored chains broke): the actor resyncs
    /// them, so that the stored book is trustworthy again from the next
    /// sync.
    fn take_broken(&self, symbols: &[CompactString]) -> Vec<CompactString> {
        let _ = symbols;
        Vec::new()
    }
}

/// Which actor keeps which symbol's book, for the HTTP API.
#[derive(Clone, Default)]
pub struct BookDirectory(Arc<RwLock<FxHashMap<CompactString, Recipient<GetBook>>>>);

impl BookDirectory {
    pub fn register(&self, symbols: &[CompactString], addr: &Recipient<GetBook>) {
        let mut map = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        for s in symbols {
            map.insert(s.clone(), addr.clone());
        }
    }

    /// The actor keeping `symbol`'s book (upper case), if books are on.
    pub fn find(&self, symbol: &str) -> Option<Recipient<GetBook>> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(symbol).cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty()
    }
}

/// A stored or live cause of an unsynced book as one of the documented
/// ones (`unknown` otherwise), as the book endpoints answer it.
pub fn known_cause(cause: &str) -> &'static str {
    const KNOWN: [&str; 10] = [
        "start",
        "gap",
        "reconnect",
        "crossed",
        "snapshot_behind",
        "shed",
        "restart",
        "stop",
        "store_gap",
        "no_snapshot",
    ];
    KNOWN.into_iter().find(|k| *k == cause).unwrap_or("unknown")
}
