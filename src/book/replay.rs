//! A book rebuilt from stored book records (schemas/book_v2.avsc), as K2
//! held it at an instant.
//!
//! The records of one symbol, in the order K2 made them (their
//! `ingestion_timestamp`, strictly increasing in a process and across its
//! restarts), say everything: `snapshot` (rest) is the venue's snapshot a
//! sync starts from, `synced` says the book is known from that snapshot on,
//! each `update` is a depth event the book applied, and `unsynced` says the
//! book is not known from then on (a restart writes one at the instant the
//! store last covered, so a span the store lost in a crash reads as
//! unsynced, never as a stale book). The replay applies them by the same
//! rule as [`super::BookSync`], and a stored chain that does not follow on
//! (`U` not the book's id + 1) is unsynced too (`store_gap`), so a replay
//! never shows as known a book it cannot vouch for.

use super::levels::{OrderBook, Side};
use crate::model::{BookEventKind, BookEventV2, Timestamp};

/// What the records say of the book at the instant they stop at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// The book, when it was known.
    pub book: Option<OrderBook>,
    /// Why it was not known: the cause of the last `unsynced` record,
    /// `start` with no record at all, `store_gap` for a broken stored chain,
    /// `no_snapshot` for a `synced` record whose snapshot is missing.
    pub unsynced_cause: Option<String>,
    /// Venue event time of the last update applied since the sync.
    pub event_time: Option<Timestamp>,
    /// The K2 instant of the last record replayed.
    pub recorded_at: Option<Timestamp>,
}

enum State {
    Unknown(String),
    Synced { book: OrderBook, straddle: bool },
}

/// The replay as it goes, one record at a time: a range of instants is
/// sampled by applying the records up to each (`/v1/book/{symbol}/top`).
pub struct Replayer {
    state: State,
    pending: Option<OrderBook>,
    event_time: Option<Timestamp>,
    recorded_at: Option<Timestamp>,
}

impl Default for Replayer {
    fn default() -> Self {
        Self { state: State::Unknown("start".into()), pending: None, event_time: None, recorded_at: None }
    }
}

impl Replayer {
    /// Applies the next record (in K2's order).
    pub fn apply(&mut self, r: &BookEventV2) {
        let first = self.recorded_at.is_none();
        self.recorded_at = Some(r.ingestion_timestamp);
        match r.kind {
            BookEventKind::Snapshot => {
                let limit = r.depth.and_then(|d| usize::try_from(d).ok()).unwrap_or(usize::MAX);
                let book = OrderBook::from_snapshot(id(r.final_update_id), &r.bids, &r.asks, limit);
                if r.cause.as_deref() != Some(records::PERIODIC) {
                    // The venue's snapshot a sync is about to start from.
                    self.pending = Some(book);
                    return;
                }
                // K2's own snapshot of a book it held synced: a replay may
                // start from it (as its first record), and one that is
                // synced already takes it as its state (the same levels,
                // and the snapshot's window), so that a replay from the
                // sync and one from here answer alike at every later
                // instant. Anywhere else it is ignored: after an `unsynced`
                // it can only be one a crash left without its updates, and
                // one older than the book replayed so far is out of order.
                let takes = match &self.state {
                    State::Synced { book: held, .. } => held.update_id() <= book.update_id(),
                    State::Unknown(_) => first,
                };
                if takes {
                    self.state = State::Synced { book, straddle: false };
                    self.event_time = Some(r.timestamp);
                }
            }
            BookEventKind::Synced => {
                self.event_time = None;
                self.state = match self.pending.take() {
                    Some(book) if book.update_id() == id(r.final_update_id) => State::Synced { book, straddle: true },
                    _ => State::Unknown("no_snapshot".into()),
                };
            }
            BookEventKind::Unsynced => {
                self.pending = None;
                self.state = State::Unknown(r.cause.clone().map_or_else(|| "unknown".into(), String::from));
            }
            BookEventKind::Update => {
                let State::Synced { book, straddle } = &mut self.state else { return };
                let (first, last, at) = (id(r.first_update_id), id(r.final_update_id), book.update_id());
                if last <= at {
                    return;
                }
                let follows = first == at + 1 || (std::mem::take(straddle) && first <= at + 1);
                if !follows {
                    self.state = State::Unknown("store_gap".into());
                    return;
                }
                book.apply(Side::Bid, &r.bids);
                book.apply(Side::Ask, &r.asks);
                book.set_update_id(last);
                self.event_time = Some(r.timestamp);
            }
        }
    }

    /// The book now, when it is known.
    pub fn book(&self) -> Option<&OrderBook> {
        match &self.state {
            State::Synced { book, .. } => Some(book),
            State::Unknown(_) => None,
        }
    }

    /// Why the book is not known now.
    pub fn unsynced_cause(&self) -> Option<&str> {
        match &self.state {
            State::Synced { .. } => None,
            State::Unknown(cause) => Some(cause),
        }
    }

    pub fn event_time(&self) -> Option<Timestamp> {
        self.event_time.filter(|_| self.book().is_some())
    }

    pub fn recorded_at(&self) -> Option<Timestamp> {
        self.recorded_at
    }

    pub fn finish(self) -> Replayed {
        let event_time = self.event_time();
        match self.state {
            State::Synced { book, .. } => {
                Replayed { book: Some(book), unsynced_cause: None, event_time, recorded_at: self.recorded_at }
            }
            State::Unknown(cause) => {
                Replayed { book: None, unsynced_cause: Some(cause), event_time: None, recorded_at: self.recorded_at }
            }
        }
    }
}

/// Replays `records` (one symbol's, in K2's order, none after the instant
/// asked for).
pub fn replay<'a>(records: impl IntoIterator<Item = &'a BookEventV2>) -> Replayed {
    let mut replayer = Replayer::default();
    for r in records {
        replayer.apply(r);
    }
    replayer.finish()
}

/// Update ids are written as Avro longs; a negative one is no id.
fn id(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Records of a book as the order-book actor makes them: the constructors
/// keep the id and field conventions in one place.
pub mod records {
    use compact_str::CompactString;

    use crate::book::levels::{OrderBook, Side};
    use crate::book::{DepthSnapshot, DepthUpdate};
    use crate::model::{AssetClass, BookEventKind, BookEventV2, Timestamp};

    /// The cause of K2's periodic snapshots of its synced books.
    pub const PERIODIC: &str = "periodic";

    fn base(
        exchange: &str,
        symbol: &str,
        kind: BookEventKind,
        range: (u64, u64),
        cause: Option<&str>,
        at: Timestamp,
        recorded: Timestamp,
    ) -> BookEventV2 {
        let range = (i64::try_from(range.0).unwrap_or(i64::MAX), i64::try_from(range.1).unwrap_or(i64::MAX));
        BookEventV2 {
            message_id: BookEventV2::id(exchange, symbol, kind, range, cause, at),
            symbol: symbol.into(),
            exchange: exchange.into(),
            asset_class: AssetClass::Crypto,
            kind,
            timestamp: at,
            first_update_id: range.0,
            final_update_id: range.1,
            bids: Vec::new(),
            asks: Vec::new(),
            depth: None,
            cause: cause.map(CompactString::from),
            ingestion_timestamp: recorded,
            platform_sequence: None,
            is_sample_data: false,
        }
    }

    /// A depth event the book applied, recorded at `recorded`.
    pub fn update(exchange: &str, u: &DepthUpdate, recorded: Timestamp) -> BookEventV2 {
        let mut r = base(
            exchange,
            &u.symbol,
            BookEventKind::Update,
            (u.first_update_id, u.final_update_id),
            None,
            u.event_time,
            recorded,
        );
        r.bids = u.bids.clone();
        r.asks = u.asks.clone();
        r
    }

    /// The venue's snapshot a sync started from.
    pub fn snapshot(exchange: &str, symbol: &str, s: &DepthSnapshot, recorded: Timestamp) -> BookEventV2 {
        let id = s.last_update_id;
        let mut r = base(exchange, symbol, BookEventKind::Snapshot, (id, id), Some("rest"), recorded, recorded);
        r.bids = s.bids.clone();
        r.asks = s.asks.clone();
        r.depth = Some(i32::try_from(s.limit).unwrap_or(i32::MAX));
        r
    }

    /// K2's snapshot of a synced `book`: its best `depth` known levels per
    /// side, at its update id, with `event_time` (the venue's time of the
    /// last update applied) as its time. A side the book's window cuts
    /// short of `depth` levels says so by the record's depth (the shorter
    /// such side's count, so that a reader takes every side that long or
    /// longer as windowed: never a side as whole that was not). None when
    /// a side is cut with no level known: nothing a reader could start from.
    pub fn periodic(
        exchange: &str,
        symbol: &str,
        book: &OrderBook,
        depth: usize,
        event_time: Timestamp,
        recorded: Timestamp,
    ) -> Option<BookEventV2> {
        let (bids, bid_cut) = book.top(Side::Bid, depth);
        let (asks, ask_cut) = book.top(Side::Ask, depth);
        let limit = |levels: &[crate::book::Level], cut: bool| if cut { levels.len().min(depth) } else { depth };
        let limit = limit(&bids, bid_cut).min(limit(&asks, ask_cut));
        if limit == 0 {
            return None;
        }
        let id = book.update_id();
        let mut r = base(exchange, symbol, BookEventKind::Snapshot, (id, id), Some(PERIODIC), event_time, recorded);
        r.bids = bids;
        r.asks = asks;
        r.depth = Some(i32::try_from(limit).unwrap_or(i32::MAX));
        Some(r)
    }

    /// A change of sync state at update id `id` (the snapshot's for
    /// `synced`, the last applied for `unsynced`; 0 when none).
    pub fn state(
        exchange: &str,
        symbol: &str,
        kind: BookEventKind,
        id: u64,
        cause: Option<&str>,
        recorded: Timestamp,
    ) -> BookEventV2 {
        base(exchange, symbol, kind, (id, id), cause, recorded, recorded)
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::records::{snapshot, state, update};
    use super::*;
    use crate::book::{BookSync, DepthSnapshot, DepthUpdate, Level, SnapshotStep, Step};

    const EX: &str = "BINANCE";

    fn lv(p: i64, q: i64) -> Level {
        (Decimal::new(p, 0), Decimal::new(q, 0))
    }

    fn ev(first: u64, last: u64, bids: Vec<Level>, asks: Vec<Level>) -> DepthUpdate {
        DepthUpdate {
            symbol: "BTCUSDT".into(),
            event_time: Timestamp::from_micros(last as i64),
            first_update_id: first,
            final_update_id: last,
            bids,
            asks,
        }
    }

    /// A clock for records: strictly increasing.
    struct Clock(i64);
    impl Clock {
        fn next(&mut self) -> Timestamp {
            self.0 += 1;
            Timestamp::from_micros(self.0)
        }
    }

    /// Drives the live procedure and records what it did, as the
    /// order-book actor does.
    struct Run {
        live: BookSync,
        clock: Clock,
        stored: Vec<BookEventV2>,
        /// After each input: how many records were stored, and the live book.
        checkpoints: Vec<(usize, Option<OrderBook>)>,
        /// The snapshot the live book holds, waiting for events.
        waiting: Option<DepthSnapshot>,
        /// The event time of the last update applied since the book's
        /// last sync or periodic snapshot (None: none since).
        since_base: Option<Timestamp>,
        /// Where each periodic snapshot is in `stored`.
        periodic_at: Vec<usize>,
    }

    impl Run {
        fn new() -> Self {
            Self {
                live: BookSync::new(1000),
                clock: Clock(0),
                stored: Vec::new(),
                checkpoints: Vec::new(),
                waiting: None,
                since_base: None,
                periodic_at: Vec::new(),
            }
        }

        /// A periodic snapshot of the live book, as the actor takes one:
        /// of a synced book that applied an update since its last base.
        fn periodic(&mut self, depth: usize) {
            let (Some(book), Some(time)) = (self.live.book(), self.since_base) else { return };
            let t = self.clock.next();
            if let Some(r) = super::records::periodic(EX, "BTCUSDT", book, depth, time, t) {
                self.periodic_at.push(self.stored.len());
                self.stored.push(r);
                self.since_base = None;
            }
            self.checkpoints.push((self.stored.len(), self.live.book().cloned()));
        }

        fn synced(&mut self, snapshot_id: u64, applied: Vec<DepthUpdate>) {
            let s = self.waiting.take().expect("the snapshot the book synced from");
            assert_eq!(s.last_update_id, snapshot_id);
            let t = self.clock.next();
            self.stored.push(snapshot(EX, "BTCUSDT", &s, t));
            let t = self.clock.next();
            self.stored.push(state(EX, "BTCUSDT", BookEventKind::Synced, snapshot_id, None, t));
            for u in &applied {
                let t = self.clock.next();
                self.stored.push(update(EX, u, t));
            }
            self.since_base = applied.last().map(|u| u.event_time);
        }

        fn event(&mut self, u: DepthUpdate) {
            match self.live.on_update(u) {
                Step::Applied(u) => {
                    let t = self.clock.next();
                    self.since_base = Some(u.event_time);
                    self.stored.push(update(EX, &u, t));
                }
                Step::Unsynced { cause, .. } => {
                    let t = self.clock.next();
                    self.stored.push(state(EX, "BTCUSDT", BookEventKind::Unsynced, 0, Some(cause.as_str()), t));
                }
                Step::Synced { snapshot_id, applied } => self.synced(snapshot_id, applied),
                Step::Buffered { .. } | Step::Ignored => {}
            }
            self.checkpoints.push((self.stored.len(), self.live.book().cloned()));
        }

        fn snapshot(&mut self, s: DepthSnapshot) {
            self.waiting = Some(s.clone());
            if let SnapshotStep::Synced { snapshot_id, applied } = self.live.on_snapshot(&s) {
                self.synced(snapshot_id, applied);
            }
            self.checkpoints.push((self.stored.len(), self.live.book().cloned()));
        }
    }

    /// A venue whose book moves by random events, some of them never sent
    /// (a skipped range) or sent twice, with snapshots taken of it at
    /// random, and K2's periodic snapshots of its book (of `periodic_depth`
    /// levels) now and then.
    fn random_run(periodic_depth: usize) -> Run {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut venue = OrderBook::from_snapshot(0, &[], &[], usize::MAX);
        let mut run = Run::new();
        let mut last_sent: Option<DepthUpdate> = None;
        let (mut unsynced, mut synced) = (0, 0);
        for _ in 0..3000 {
            let id = venue.update_id();
            let span = 1 + rand(3);
            let mut bids = Vec::new();
            let mut asks = Vec::new();
            for _ in 0..1 + rand(4) {
                // Bids below 100, asks above: the venue's book never crosses.
                let q = rand(3) as i64;
                if rand(2) == 0 {
                    bids.push(lv(90 + rand(10) as i64, q));
                } else {
                    asks.push(lv(101 + rand(10) as i64, q));
                }
            }
            let u = ev(id + 1, id + span, bids, asks);
            venue.apply(Side::Bid, &u.bids);
            venue.apply(Side::Ask, &u.asks);
            venue.set_update_id(u.final_update_id);
            match rand(40) {
                0 => {}
                1 => {
                    if let Some(again) = last_sent.clone() {
                        run.event(again);
                    }
                    run.event(u.clone());
                }
                _ => run.event(u.clone()),
            }
            last_sent = Some(u);
            if run.live.book().is_none() && rand(3) == 0 {
                let (bids, _) = venue.top(Side::Bid, usize::MAX);
                let (asks, _) = venue.top(Side::Ask, usize::MAX);
                run.snapshot(DepthSnapshot { last_update_id: venue.update_id(), bids, asks, limit: 1000 });
            }
            if rand(25) == 0 {
                run.periodic(periodic_depth);
            }
            match run.live.book() {
                Some(_) => synced += 1,
                None => unsynced += 1,
            }
        }
        assert!(synced > 1000 && unsynced > 50, "both states were exercised: {synced} synced, {unsynced} not");
        assert!(run.periodic_at.len() > 50, "periodic snapshots: {}", run.periodic_at.len());
        run
    }

    /// After every input, the replay of what K2 recorded is the book K2
    /// held live, or both are unknown (periodic snapshots deep enough to
    /// hold whole sides change nothing).
    #[test]
    fn the_replay_of_what_the_live_book_recorded_is_the_live_book_after_every_input() {
        let run = random_run(1000);
        for (n, want) in &run.checkpoints {
            let got = replay(&run.stored[..*n]);
            assert_eq!(&got.book, want, "after {n} records");
            assert_eq!(got.unsynced_cause.is_none(), want.is_some());
        }
    }

    /// Periodic snapshots of 3 levels, so that their windows cut the
    /// sides: a replay that starts at one answers as the replay from the
    /// sync at every later input, and every level either shows is the live
    /// book's, best first, with none skipped.
    #[test]
    fn a_replay_from_a_periodic_snapshot_answers_as_the_replay_from_the_sync() {
        let run = random_run(3);
        let mut compared = 0;
        for &p in &run.periodic_at {
            for (n, live) in run.checkpoints.iter().filter(|(n, _)| *n > p).take(40) {
                let whole = replay(&run.stored[..*n]);
                let from_periodic = replay(&run.stored[p..*n]);
                assert_eq!(whole, from_periodic, "records {p}..{n}");
                compared += 1;
                let Some(book) = &whole.book else { continue };
                let live = live.as_ref().expect("a replayed book is synced live");
                for side in [Side::Bid, Side::Ask] {
                    let (shown, _) = book.top(side, usize::MAX);
                    let (held, _) = live.top(side, usize::MAX);
                    assert_eq!(shown[..], held[..shown.len().min(held.len())], "records ..{n}: {side:?}");
                }
            }
        }
        assert!(compared > 1000, "{compared}");
    }

    /// A periodic snapshot after an `unsynced` (one a crash left without
    /// its updates) does not make the book known again.
    #[test]
    fn a_periodic_snapshot_after_an_unsynced_is_not_a_sync() {
        let mut clock = Clock(0);
        let snap = DepthSnapshot { last_update_id: 10, bids: vec![lv(99, 1)], asks: vec![lv(101, 1)], limit: 5 };
        let book = OrderBook::from_snapshot(12, &[lv(99, 2)], &[lv(101, 1)], 5);
        let periodic = super::records::periodic(EX, "BTCUSDT", &book, 5, Timestamp::from_micros(1), clock.next());
        let periodic = periodic.expect("a snapshot of a whole book");
        let stored = vec![
            snapshot(EX, "BTCUSDT", &snap, clock.next()),
            state(EX, "BTCUSDT", BookEventKind::Synced, 10, None, clock.next()),
            state(EX, "BTCUSDT", BookEventKind::Unsynced, 0, Some("restart"), clock.next()),
            periodic.clone(),
        ];
        assert_eq!(replay(&stored).unsynced_cause.as_deref(), Some("restart"));
        // As the first record of a replay, it is where the book starts.
        assert_eq!(replay(std::slice::from_ref(&periodic)).book, Some(book));
    }

    #[test]
    fn a_hole_in_the_stored_chain_is_unsynced_not_a_stale_book() {
        let mut clock = Clock(0);
        let snap = DepthSnapshot { last_update_id: 10, bids: vec![lv(99, 1)], asks: vec![lv(101, 1)], limit: 5 };
        let mut stored = vec![
            snapshot(EX, "BTCUSDT", &snap, clock.next()),
            state(EX, "BTCUSDT", BookEventKind::Synced, 10, None, clock.next()),
            update(EX, &ev(9, 11, vec![lv(98, 1)], vec![]), clock.next()),
        ];
        assert_eq!(replay(&stored).book.map(|b| b.update_id()), Some(11));
        // 12..=13 were lost with a crash.
        stored.push(update(EX, &ev(14, 14, vec![], vec![lv(102, 1)]), clock.next()));
        assert_eq!(replay(&stored).unsynced_cause.as_deref(), Some("store_gap"));
        // A synced record whose snapshot is not stored.
        let orphan = [state(EX, "BTCUSDT", BookEventKind::Synced, 10, None, clock.next())];
        assert_eq!(replay(&orphan).unsynced_cause.as_deref(), Some("no_snapshot"));
        assert_eq!(replay(&[]).unsynced_cause.as_deref(), Some("start"));
    }
}
