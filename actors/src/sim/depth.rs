//! The simulator's order books: one true book per symbol, moved only by the
//! diff-depth events it generates (`<symbol>@depth@100ms`), so replaying the
//! events from any snapshot gives the truth. It answers REST snapshots
//! (`GET /api/v3/depth`) and, for tests, the whole true book now or at any
//! of its recent update ids (`GET /sim/book`).
//!
//! Faults on schedule: an event applied to the truth but never sent (the
//! client sees a skipped range), an event sent twice, and a REST snapshot
//! older than the stream (a copy kept from before the events the client has
//! seen, which it must refuse and fetch again).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use rand::rngs::StdRng;
use serde::Serialize;

/// Levels per side the generator keeps around the mid price.
const LEVELS: i64 = 60;
/// Past states kept, one per event: the truth a test compares a client's
/// book with, and the stale snapshots.
const PAST: usize = 4096;

/// The depth faults, each every Nth event (or request) of a symbol; 0 is off.
#[derive(Debug, Clone, Copy, Default)]
pub struct DepthFaults {
    /// An event is applied to the truth but not sent.
    pub skip_every: u64,
    /// An event is sent twice.
    pub duplicate_every: u64,
    /// A REST snapshot is an old copy, older than the stream.
    pub stale_snapshot_every: u64,
}

type Side = BTreeMap<i64, i64>;

/// One symbol's true book.
#[derive(Debug)]
pub(super) struct SimBook {
    symbol: String,
    lower: String,
    bids: Side,
    asks: Side,
    last_update_id: u64,
    /// One price step, in units of 1e-8.
    tick: i64,
    events: u64,
    snapshots: u64,
    /// The state after each recent event, oldest first.
    past: VecDeque<(u64, Side, Side)>,
}

/// What one generated event is: the frame to send, and how many times.
pub(super) struct DepthEvent {
    pub text: String,
    pub copies: usize,
}

/// A snapshot as Binance's REST API gives it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DepthBody {
    pub last_update_id: u64,
    pub bids: Vec<[String; 2]>,
    pub asks: Vec<[String; 2]>,
}

impl SimBook {
    pub(super) fn new(symbol: &str, price: i64, rng: &mut StdRng) -> Self {
        let tick = (price / 20_000).max(1);
        let mut book = Self {
            symbol: symbol.to_ascii_uppercase(),
            lower: symbol.to_ascii_lowercase(),
            bids: Side::new(),
            asks: Side::new(),
            last_update_id: rng.random_range(10_000_000..20_000_000),
            tick,
            events: 0,
            snapshots: 0,
            past: VecDeque::new(),
        };
        let mid = price - price % tick;
        for i in 1..=LEVELS / 2 {
            book.bids.insert(mid - i * tick, rng.random_range(1..1_000_000_000_000));
            book.asks.insert(mid + i * tick, rng.random_range(1..1_000_000_000_000));
        }
        book
    }

    /// One event moving the book towards `price` with a few random changes;
    /// `None` when the fault plan skips sending it (the truth moves anyway).
    /// `last` events are never skipped: a client cannot notice a skip with no
    /// event after it.
    pub(super) fn step(
        &mut self,
        price: i64,
        faults: &DepthFaults,
        last: bool,
        rng: &mut StdRng,
    ) -> (Option<DepthEvent>, bool) {
        self.events += 1;
        let mid = price - price % self.tick;
        let mut bids: Vec<(i64, i64)> = Vec::new();
        let mut asks: Vec<(i64, i64)> = Vec::new();
        // The mid moved: levels it crossed are gone, and so are levels that
        // fell too far behind.
        let (low, high) = (mid - LEVELS * self.tick, mid + LEVELS * self.tick);
        for (&p, _) in self.bids.range(mid..).chain(self.bids.range(..low)) {
            bids.push((p, 0));
        }
        for (&p, _) in self.asks.range(..=mid).chain(self.asks.range(high..)) {
            asks.push((p, 0));
        }
        for _ in 0..rng.random_range(1..=4) {
            let offset = rng.random_range(1..=LEVELS / 2) * self.tick;
            let remove = rng.random_bool(0.25);
            let qty = if remove { 0 } else { rng.random_range(1..1_000_000_000_000) };
            if rng.random_bool(0.5) {
                set(&mut bids, mid - offset, qty);
            } else {
                set(&mut asks, mid + offset, qty);
            }
        }
        for &(p, q) in &bids {
            put(&mut self.bids, p, q);
        }
        for &(p, q) in &asks {
            put(&mut self.asks, p, q);
        }
        let first = self.last_update_id + 1;
        self.last_update_id += rng.random_range(1..=3);
        if self.past.len() == PAST {
            self.past.pop_front();
        }
        self.past.push_back((self.last_update_id, self.bids.clone(), self.asks.clone()));
        if faults.skip_every > 0 && self.events.is_multiple_of(faults.skip_every) && !last {
            return (None, true);
        }
        let copies =
            if faults.duplicate_every > 0 && self.events.is_multiple_of(faults.duplicate_every) { 2 } else { 1 };
        let time_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let (symbol, lower) = (&self.symbol, &self.lower);
        let mut text = String::with_capacity(160 + 48 * (bids.len() + asks.len()));
        let _ = write!(
            text,
            r#"{{"stream":"{lower}@depth@100ms","data":{{"e":"depthUpdate","E":{time_ms},"s":"{symbol}","U":{first},"u":{},"b":"#,
            self.last_update_id
        );
        levels_json(&mut text, &bids);
        text.push_str(r#","a":"#);
        levels_json(&mut text, &asks);
        text.push_str("}}");
        (Some(DepthEvent { text, copies }), false)
    }

    /// A REST snapshot of the top `limit` levels per side; on the fault
    /// plan's schedule, an old copy instead (true as the second value).
    pub(super) fn snapshot(&mut self, limit: usize, faults: &DepthFaults) -> (DepthBody, bool) {
        self.snapshots += 1;
        let stale = faults.stale_snapshot_every > 0 && self.snapshots.is_multiple_of(faults.stale_snapshot_every);
        // From well before the events a client has buffered.
        if stale && let Some((id, bids, asks)) = self.past.iter().rev().nth(256).or(self.past.front()) {
            return (body(*id, bids, asks, limit), true);
        }
        (body(self.last_update_id, &self.bids, &self.asks, limit), false)
    }

    /// The whole true book now, or as it was at `update_id` (None when
    /// that is too long ago or not an id an event ended at).
    pub(super) fn truth(&self, update_id: Option<u64>) -> Option<DepthBody> {
        match update_id {
            None => Some(body(self.last_update_id, &self.bids, &self.asks, usize::MAX)),
            Some(id) => {
                let i = self.past.binary_search_by_key(&id, |(u, _, _)| *u).ok()?;
                let (u, bids, asks) = &self.past[i];
                Some(body(*u, bids, asks, usize::MAX))
            }
        }
    }
}

fn body(id: u64, bids: &Side, asks: &Side, limit: usize) -> DepthBody {
    let level = |(p, q): (&i64, &i64)| [decimal_text(*p), decimal_text(*q)];
    DepthBody {
        last_update_id: id,
        bids: bids.iter().rev().take(limit).map(level).collect(),
        asks: asks.iter().take(limit).map(level).collect(),
    }
}

/// Sets a level in an event's list, replacing an earlier change to it.
fn set(side: &mut Vec<(i64, i64)>, price: i64, qty: i64) {
    match side.iter_mut().find(|(p, _)| *p == price) {
        Some(level) => level.1 = qty,
        None => side.push((price, qty)),
    }
}

fn put(side: &mut Side, price: i64, qty: i64) {
    if qty == 0 {
        side.remove(&price);
    } else {
        side.insert(price, qty);
    }
}

fn levels_json(out: &mut String, levels: &[(i64, i64)]) {
    out.push('[');
    for (i, &(p, q)) in levels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, r#"["{}","{}"]"#, decimal_text(p), decimal_text(q));
    }
    out.push(']');
}

/// An unscaled decimal(18,8) as text with 8 places.
pub(super) fn decimal_text(unscaled: i64) -> String {
    format!("{}.{:08}", unscaled / 100_000_000, unscaled % 100_000_000)
}
