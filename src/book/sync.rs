//! Binance's procedure for keeping a local book from the diff-depth stream
//! (`<symbol>@depth`) and REST snapshots (`GET /api/v3/depth`), as its API
//! documentation gives it, for one symbol:
//!
//! 1. buffer events from the first one; fetch a snapshot;
//! 2. a snapshot whose `lastUpdateId` is below the first buffered event's
//!    `U` is older than the stream: fetch again;
//! 3. drop buffered events with `u <= lastUpdateId`; the first left must
//!    hold `lastUpdateId + 1` in `[U, u]`;
//! 4. from then on every event's `U` is the previous `u + 1`; an event
//!    wholly older than the book (`u <=` its update id) is ignored.
//!
//! Any break (a skipped range, a socket rotation or reconnect, a crossed
//! book) makes the book unsynced: it is dropped and rebuilt from a new
//! snapshot, and the events that arrive meanwhile are buffered so none is
//! lost across the fetch. A snapshot that comes before any event is kept
//! until the first event says whether it is usable. A snapshot at or past
//! every buffered event syncs the book at once (a quiet symbol may send no
//! event for minutes); the next event may then straddle the snapshot's id,
//! as the first one applied after a snapshot may (`U <= lastUpdateId + 1 <=
//! u`), and must still not leave a hole.

use std::collections::VecDeque;

use compact_str::CompactString;

use super::levels::{Level, OrderBook, Side};
use crate::model::Timestamp;

/// One diff-depth event (`depthUpdate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepthUpdate {
    pub symbol: CompactString,
    /// `E`.
    pub event_time: Timestamp,
    /// `U`: the first update id in the event.
    pub first_update_id: u64,
    /// `u`: the last update id in the event.
    pub final_update_id: u64,
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
}

/// One REST depth snapshot, with the number of levels per side asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepthSnapshot {
    pub last_update_id: u64,
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
    pub limit: usize,
}

/// Why a book is not (or no longer) synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnsyncCause {
    /// Never synced yet.
    Start,
    /// An event did not start right after the book's update id.
    Gap { expected: u64, got: u64 },
    /// The connection was closed or rotated: events may have been missed.
    Reconnect,
    /// The best bid reached the best ask.
    Crossed,
    /// Events were dropped on purpose (a degradation ladder shed them).
    Shed,
    /// A snapshot was older than the first buffered event.
    SnapshotBehind,
    /// A record of the book never reached the store (a broker that refused
    /// it): the stored chain breaks there, and a new sync restarts it.
    StoreGap,
}

impl UnsyncCause {
    /// A label for metrics and state rows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Gap { .. } => "gap",
            Self::Reconnect => "reconnect",
            Self::Crossed => "crossed",
            Self::Shed => "shed",
            Self::SnapshotBehind => "snapshot_behind",
            Self::StoreGap => "store_gap",
        }
    }
}

/// What one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Applied to the synced book.
    Applied(DepthUpdate),
    /// Wholly older than the book (a duplicate or a replay): dropped.
    Ignored,
    /// Buffered until a snapshot: `fetch` says one should be requested now.
    Buffered { fetch: bool },
    /// The book was lost; the event is buffered for the next sync (or, for a
    /// crossed book, was the one that crossed it).
    Unsynced { cause: UnsyncCause, fetch: bool },
    /// A snapshot waiting for events took this one: the book is synced, and
    /// these buffered events were applied on the snapshot in order.
    Synced { snapshot_id: u64, applied: Vec<DepthUpdate> },
}

/// What a snapshot did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotStep {
    /// The book is synced from it, with these buffered events applied.
    Synced { snapshot_id: u64, applied: Vec<DepthUpdate> },
    /// Kept until an event says whether it is usable.
    Waiting,
    /// Unusable (older than the stream, or the buffered events have a hole
    /// after it): fetch another.
    Refetch { cause: UnsyncCause },
    /// The book was already synced: not needed.
    Unneeded,
}

#[derive(Debug)]
enum State {
    Synced,
    Unsynced {
        cause: UnsyncCause,
        /// Events in arrival order since the book was lost.
        buffer: VecDeque<DepthUpdate>,
        /// A snapshot that came before any event it could be checked against.
        pending: Option<OrderBook>,
    },
}

/// One symbol's book and its sync state.
#[derive(Debug)]
pub struct BookSync {
    book: OrderBook,
    state: State,
    /// A snapshot request is out.
    fetching: bool,
    max_buffer: usize,
    /// Events dropped from a full buffer since the last sync.
    pub overflowed: u64,
    /// Synced from a snapshot with no event applied on it yet: the next
    /// event may straddle its id.
    straddle: bool,
}

impl BookSync {
    /// A book to sync, buffering at most `max_buffer` events while unsynced.
    pub fn new(max_buffer: usize) -> Self {
        Self {
            book: OrderBook::default(),
            state: State::Unsynced { cause: UnsyncCause::Start, buffer: VecDeque::new(), pending: None },
            fetching: false,
            max_buffer: max_buffer.max(1),
            overflowed: 0,
            straddle: false,
        }
    }

    pub fn is_synced(&self) -> bool {
        matches!(self.state, State::Synced)
    }

    /// Why the book is unsynced, if it is.
    pub fn unsynced_cause(&self) -> Option<UnsyncCause> {
        match &self.state {
            State::Synced => None,
            State::Unsynced { cause, .. } => Some(*cause),
        }
    }

    /// The synced book (None while unsynced: it is not known).
    pub fn book(&self) -> Option<&OrderBook> {
        self.is_synced().then_some(&self.book)
    }

    /// Events buffered while unsynced.
    pub fn buffered(&self) -> usize {
        match &self.state {
            State::Synced => 0,
            State::Unsynced { buffer, .. } => buffer.len(),
        }
    }

    /// A snapshot request failed: the next event asks again.
    pub fn snapshot_failed(&mut self) {
        self.fetching = false;
    }

    fn want_fetch(&mut self) -> bool {
        !std::mem::replace(&mut self.fetching, true)
    }

    fn unsync(&mut self, cause: UnsyncCause, first: Option<DepthUpdate>) -> bool {
        self.book = OrderBook::default();
        self.state = State::Unsynced { cause, buffer: first.into_iter().collect(), pending: None };
        self.want_fetch()
    }

    /// Drops a synced book for a fresh sync while the stream goes on: the
    /// events from now are buffered for the next snapshot (none is lost, so
    /// unlike a reconnect nothing buffered is dropped). Whether a snapshot
    /// request should go out now, or None when the book was not synced.
    pub fn resync(&mut self, cause: UnsyncCause) -> Option<bool> {
        match self.state {
            State::Synced => Some(self.unsync(cause, None)),
            State::Unsynced { .. } => None,
        }
    }

    /// The connection carrying this symbol's events closed or rotated.
    pub fn disconnected(&mut self) -> Option<UnsyncCause> {
        self.broken(UnsyncCause::Reconnect)
    }

    /// Events of this symbol were dropped on purpose: the book is lost as
    /// after a reconnect, with its own cause, until events are taken again.
    pub fn shed(&mut self) -> Option<UnsyncCause> {
        self.broken(UnsyncCause::Shed)
    }

    /// The stream has a hole of unknown size: drop the book and what was
    /// buffered; the cause when a synced book was lost.
    fn broken(&mut self, cause: UnsyncCause) -> Option<UnsyncCause> {
        match &mut self.state {
            State::Synced => {
                self.unsync(cause, None);
                // The request goes out once events come again.
                self.fetching = false;
                Some(cause)
            }
            State::Unsynced { buffer, pending, .. } => {
                // Buffered events from the old connection cannot be joined to
                // the new one's reliably: start over.
                buffer.clear();
                *pending = None;
                None
            }
        }
    }

    /// One event from the stream.
    pub fn on_update(&mut self, update: DepthUpdate) -> Step {
        match &mut self.state {
            State::Synced => {
                let id = self.book.update_id();
                if update.final_update_id <= id {
                    return Step::Ignored;
                }
                let straddles = std::mem::take(&mut self.straddle) && update.first_update_id <= id + 1;
                if update.first_update_id != id + 1 && !straddles {
                    let cause = UnsyncCause::Gap { expected: id + 1, got: update.first_update_id };
                    let fetch = self.unsync(cause, Some(update));
                    return Step::Unsynced { cause, fetch };
                }
                apply(&mut self.book, &update);
                if self.book.is_crossed() {
                    let fetch = self.unsync(UnsyncCause::Crossed, None);
                    return Step::Unsynced { cause: UnsyncCause::Crossed, fetch };
                }
                Step::Applied(update)
            }
            State::Unsynced { buffer, pending, .. } => {
                if buffer.len() >= self.max_buffer {
                    buffer.pop_front();
                    self.overflowed += 1;
                }
                buffer.push_back(update);
                if pending.is_some() {
                    return match self.try_sync() {
                        SnapshotStep::Synced { snapshot_id, applied } => Step::Synced { snapshot_id, applied },
                        SnapshotStep::Refetch { cause } => Step::Unsynced { cause, fetch: self.want_fetch() },
                        SnapshotStep::Waiting | SnapshotStep::Unneeded => Step::Buffered { fetch: false },
                    };
                }
                Step::Buffered { fetch: self.want_fetch() }
            }
        }
    }

    /// A REST snapshot arrived.
    pub fn on_snapshot(&mut self, snapshot: &DepthSnapshot) -> SnapshotStep {
        self.fetching = false;
        let State::Unsynced { pending, .. } = &mut self.state else {
            return SnapshotStep::Unneeded;
        };
        *pending =
            Some(OrderBook::from_snapshot(snapshot.last_update_id, &snapshot.bids, &snapshot.asks, snapshot.limit));
        let step = self.try_sync();
        if matches!(step, SnapshotStep::Refetch { .. }) {
            self.fetching = true;
        }
        step
    }

    /// Steps 2 to 4 with the pending snapshot and the buffer.
    fn try_sync(&mut self) -> SnapshotStep {
        let State::Unsynced { cause, buffer, pending } = &mut self.state else {
            return SnapshotStep::Unneeded;
        };
        let Some(snapshot_id) = pending.as_ref().map(OrderBook::update_id) else {
            return SnapshotStep::Waiting;
        };
        let saw_events = !buffer.is_empty();
        while buffer.front().is_some_and(|u| u.final_update_id <= snapshot_id) {
            buffer.pop_front();
        }
        let Some(first) = buffer.front() else {
            if !saw_events {
                return SnapshotStep::Waiting;
            }
            // Not behind the stream: it covers every event seen.
            self.book = pending.take().unwrap_or_default();
            self.state = State::Synced;
            self.overflowed = 0;
            self.straddle = true;
            return SnapshotStep::Synced { snapshot_id, applied: Vec::new() };
        };
        if first.first_update_id > snapshot_id + 1 {
            *pending = None;
            *cause = UnsyncCause::SnapshotBehind;
            return SnapshotStep::Refetch { cause: *cause };
        }
        let mut book = pending.take().unwrap_or_default();
        let mut applied = Vec::with_capacity(buffer.len());
        while let Some(update) = buffer.pop_front() {
            if !applied.is_empty() && update.first_update_id != book.update_id() + 1 {
                if update.final_update_id <= book.update_id() {
                    continue;
                }
                let gap = UnsyncCause::Gap { expected: book.update_id() + 1, got: update.first_update_id };
                buffer.push_front(update);
                *cause = gap;
                return SnapshotStep::Refetch { cause: gap };
            }
            apply(&mut book, &update);
            if book.is_crossed() {
                buffer.clear();
                *cause = UnsyncCause::Crossed;
                return SnapshotStep::Refetch { cause: UnsyncCause::Crossed };
            }
            applied.push(update);
        }
        self.book = book;
        self.state = State::Synced;
        self.overflowed = 0;
        self.straddle = false;
        SnapshotStep::Synced { snapshot_id, applied }
    }
}

fn apply(book: &mut OrderBook, update: &DepthUpdate) {
    book.apply(Side::Bid, &update.bids);
    book.apply(Side::Ask, &update.asks);
    book.set_update_id(update.final_update_id);
}
