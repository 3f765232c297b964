//! Book updates in a replay: each `<symbol>@depth` stream sends the depth
//! updates K2 stored for the symbol (the `update` records of
//! `market.book_updates` and those not committed yet), timed by K2's stamp,
//! and the replay port answers `GET /api/v3/depth` with the book as the
//! replay has played it, so a client syncing by Binance's procedure (buffer
//! the stream, fetch a snapshot, drop what it covers, apply the rest) gets
//! the same book K2 held.
//!
//! "As played" is the symbol's clock: the stamp of the last update a
//! replay wrote for it. The snapshot is the stored book at that stamp, so
//! it covers exactly the frames written and the next frame follows on from
//! it: a client that finds a gap (a span K2 itself was unsynced) fetches
//! again and syncs on the far side. With no replay of the symbol open, the
//! snapshot is the book just before the base URL's `start` (where the next
//! replay begins), else the book now. With two replays of one symbol open
//! at once, the clock is that of the one that wrote last (of those still
//! open).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use compact_str::CompactString;
use k2_core::Timestamp;
use k2_core::query_params::ParamError;
use k2_core::source::binance::EXCHANGE;

use super::frames::{self, Envelope, Frame};
use super::params::{ReplayParams, Wrap};
use crate::lake::books::BookLog;

/// The stored books a replay reads, and each symbol's clock.
#[derive(Clone)]
pub struct DepthBooks {
    log: Arc<BookLog>,
    /// Per symbol, each open replay's clock.
    clocks: Arc<Mutex<HashMap<CompactString, Vec<Clock>>>>,
    written: Arc<AtomicU64>,
}

#[derive(Debug, Clone, Copy)]
struct Clock {
    /// The replay.
    owner: u64,
    /// The K2 stamp (µs) of the last update it wrote.
    stamp: i64,
    /// When it wrote it, in the order of all writes.
    order: u64,
}

/// Why a snapshot cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no order book of {0} is stored")]
    Unknown(CompactString),
    #[error("the book of {symbol} was not synced at that point of the replay ({cause}); ask again")]
    Unsynced { symbol: CompactString, cause: String },
    #[error("the book tables could not be read: {0}")]
    Read(String),
}

/// A replay's identity for the clocks.
pub(crate) fn next_owner() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl DepthBooks {
    pub fn new(log: Arc<BookLog>) -> Self {
        Self { log, clocks: Arc::default(), written: Arc::default() }
    }

    fn clocks(&self) -> std::sync::MutexGuard<'_, HashMap<CompactString, Vec<Clock>>> {
        self.clocks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replay `owner` wrote `symbol`'s update stamped `stamp`.
    pub(crate) fn played(&self, owner: u64, symbol: &str, stamp: i64) {
        let order = self.written.fetch_add(1, Ordering::Relaxed);
        let clock = Clock { owner, stamp, order };
        let mut clocks = self.clocks();
        let Some(open) = clocks.get_mut(symbol) else {
            clocks.insert(symbol.into(), vec![clock]);
            return;
        };
        match open.iter_mut().find(|c| c.owner == owner) {
            Some(c) => *c = clock,
            None => open.push(clock),
        }
    }

    /// Replay `owner` ended: its clocks are forgotten.
    pub(crate) fn release(&self, owner: u64) {
        let mut clocks = self.clocks();
        for open in clocks.values_mut() {
            open.retain(|c| c.owner != owner);
        }
        clocks.retain(|_, open| !open.is_empty());
    }

    /// `symbol`'s clock: the stamp the replay that wrote last wrote.
    fn clock(&self, symbol: &str) -> Option<i64> {
        self.clocks().get(symbol)?.iter().max_by_key(|c| c.order).map(|c| c.stamp)
    }

    /// `symbol`'s updates stamped in `[from, until)` as frames in `envelope`.
    pub(crate) async fn frames(
        &self,
        symbol: &str,
        (from, until): (i64, i64),
        micros: bool,
        envelope: &Envelope,
    ) -> Result<Vec<Frame>, String> {
        let records = self
            .log
            .updates(EXCHANGE, symbol, Timestamp::from_micros(from), Timestamp::from_micros(until - 1))
            .await
            .map_err(|e| e.to_string())?;
        Ok(records.iter().map(|r| frames::depth_update(r, envelope, micros)).collect())
    }

    /// `symbol`'s partial book depth frames at each tick of `ticks` (the
    /// first, then every `step` µs, up to before the end) where K2 held its
    /// book: the top `levels` levels as of that instant of K2's clock. A
    /// tick where the book was not known sends nothing, as a venue whose
    /// book is being rebuilt does not.
    pub(crate) async fn partial_frames(
        &self,
        symbol: &str,
        (first, end, step): (i64, i64, i64),
        levels: usize,
        envelope: &Envelope,
    ) -> Result<Vec<Frame>, String> {
        if first >= end {
            return Ok(Vec::new());
        }
        let last = first + (end - 1 - first) / step * step;
        let range = (Timestamp::from_micros(first), Timestamp::from_micros(last), step);
        let sampled = self
            .log
            .sample(EXCHANGE, symbol, range, |replayer, at| {
                replayer.book().map(|book| frames::partial_depth(book, levels, at.as_micros(), symbol, envelope))
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(sampled.into_iter().flatten().collect())
    }

    /// `GET /api/v3/depth`'s body for `symbol`: its book at its clock, or
    /// just before `start`, or now.
    pub(crate) async fn snapshot(
        &self,
        symbol: &CompactString,
        start: Option<i64>,
        limit: usize,
    ) -> Result<String, SnapshotError> {
        let clock = self.clock(symbol);
        let at = clock.or(start.map(|s| s - 1)).unwrap_or_else(|| Timestamp::now().as_micros());
        let replayed = self
            .log
            .book_at(EXCHANGE, symbol, Timestamp::from_micros(at))
            .await
            .map_err(|e| SnapshotError::Read(e.to_string()))?;
        match &replayed.book {
            Some(book) => Ok(frames::depth_snapshot(book, limit)),
            None if replayed.recorded_at.is_none() => Err(SnapshotError::Unknown(symbol.clone())),
            None => Err(SnapshotError::Unsynced {
                symbol: symbol.clone(),
                cause: replayed.unsynced_cause.unwrap_or_else(|| "unknown".into()),
            }),
        }
    }
}

/// `params`, or their refusal when they ask for depth streams where no
/// books are stored, naming the parameter that asked.
pub(crate) fn check(params: ReplayParams, books: Option<&DepthBooks>) -> Result<ReplayParams, ParamError> {
    match params.streams.iter().find(|(_, kind)| kind.is_book()) {
        Some((symbol, kind)) if books.is_none() => Err(ParamError {
            parameter: if params.wrap == Wrap::Combined { "streams" } else { "path" },
            reason: format!(
                "{}@{}: book updates are not stored here (book.enabled and book.store)",
                symbol.to_ascii_lowercase(),
                kind.suffix()
            ),
        }),
        _ => Ok(params),
    }
}
