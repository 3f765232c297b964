//! Sequence checking per (exchange, symbol) on the venue's own numbers.
//!
//! Events are never held back: the tracker classifies each one and passes it
//! on. A jump forward opens a *pending* gap; if the missing numbers arrive
//! within the reorder window (the stream moving `reorder_window` numbers past
//! the gap, or `reorder_timeout` passing on a [`SequenceTracker::tick`]), the
//! gap was only reordering and is not reported. Otherwise it is confirmed and
//! reported once, as a [`Gap`] for gap recovery to fill.

use std::time::{Duration, Instant};

use compact_str::CompactString;
use rustc_hash::FxHashMap;

/// How a tracker tells gaps, reorders and resets apart.
#[derive(Debug, Clone)]
pub struct SequenceConfig {
    /// A confirmed gap of more than this many numbers is "large".
    pub large_gap: u64,
    /// A number this far below the high-water mark means the venue restarted
    /// its numbering, not a late message.
    pub reset_distance: u64,
    /// Numbers the stream may move past a gap before it is confirmed.
    pub reorder_window: u64,
    /// Time a gap may stay open before a tick confirms it.
    pub reorder_timeout: Duration,
}

impl Default for SequenceConfig {
    fn default() -> Self {
        Self {
            large_gap: 10,
            reset_distance: 100_000,
            reorder_window: 100,
            reorder_timeout: Duration::from_millis(500),
        }
    }
}

/// What one sequence number meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The first number seen for this stream.
    First,
    InOrder,
    /// Jumped forward; a gap is pending.
    Ahead {
        missing: u64,
    },
    /// Filled (part of) a pending gap: it was reordered, not lost.
    Late,
    /// At or below the high-water mark and not in a pending gap.
    Duplicate,
    /// Far below the high-water mark: the venue restarted its numbering.
    Reset,
}

/// A confirmed gap: the numbers `from..=to` of a stream never arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub exchange: CompactString,
    pub symbol: CompactString,
    pub from: i64,
    pub to: i64,
}

impl Gap {
    pub fn size(&self) -> u64 {
        (self.to - self.from + 1) as u64
    }
}

#[derive(Debug)]
struct Pending {
    from: i64,
    to: i64,
    opened: Instant,
}

#[derive(Debug, Default)]
struct Stream {
    high: Option<i64>,
    pending: Vec<Pending>,
    platform: i64,
}

/// Per-stream sequence state for many (exchange, symbol) pairs.
#[derive(Debug, Default)]
pub struct SequenceTracker {
    config: SequenceConfig,
    streams: FxHashMap<(CompactString, CompactString), Stream>,
}

impl SequenceTracker {
    pub fn new(config: SequenceConfig) -> Self {
        Self { config, streams: FxHashMap::default() }
    }

    /// The next platform sequence number of a stream (1, 2, 3, ...).
    pub fn next_platform_sequence(&mut self, exchange: &str, symbol: &str) -> i64 {
        let s = self.stream(exchange, symbol);
        s.platform += 1;
        s.platform
    }

    /// Classifies `seq` for a stream; confirmed gaps are appended to `gaps`.
    pub fn observe(&mut self, exchange: &str, symbol: &str, seq: i64, now: Instant, gaps: &mut Vec<Gap>) -> Outcome {
        let config = &self.config;
        let s = self.streams.entry(key(exchange, symbol)).or_default();
        let outcome = match s.high {
            None => {
                s.high = Some(seq);
                Outcome::First
            }
            Some(high) if seq == high + 1 => {
                s.high = Some(seq);
                Outcome::InOrder
            }
            Some(high) if seq > high + 1 => {
                s.pending.push(Pending { from: high + 1, to: seq - 1, opened: now });
                s.high = Some(seq);
                Outcome::Ahead { missing: (seq - high - 1) as u64 }
            }
            Some(high) if (high - seq) as u64 > config.reset_distance => {
                // Whatever was pending belongs to the old numbering.
                s.pending.clear();
                s.high = Some(seq);
                Outcome::Reset
            }
            Some(_) => match s.pending.iter().position(|p| (p.from..=p.to).contains(&seq)) {
                Some(i) => {
                    let p = &mut s.pending[i];
                    if p.from == p.to {
                        s.pending.swap_remove(i);
                    } else if seq == p.from {
                        p.from += 1;
                    } else if seq == p.to {
                        p.to -= 1;
                    } else {
                        let tail = Pending { from: seq + 1, to: p.to, opened: p.opened };
                        p.to = seq - 1;
                        s.pending.push(tail);
                    }
                    Outcome::Late
                }
                None => Outcome::Duplicate,
            },
        };
        let high = s.high.unwrap_or(seq);
        confirm(exchange, symbol, s, now, config, gaps, |p| (high - p.to) as u64 > config.reorder_window);
        outcome
    }

    /// Confirms gaps that have stayed open past the reorder timeout.
    pub fn tick(&mut self, now: Instant, gaps: &mut Vec<Gap>) {
        for ((exchange, symbol), s) in self.streams.iter_mut() {
            confirm(exchange, symbol, s, now, &self.config, gaps, |_| false);
        }
    }

    /// The highest number seen on a stream.
    pub fn high_water_mark(&self, exchange: &str, symbol: &str) -> Option<i64> {
        self.streams.get(&key(exchange, symbol)).and_then(|s| s.high)
    }

    /// Sets a stream's high-water mark (state restored from elsewhere). Only
    /// moves it forward.
    pub fn restore_high_water_mark(&mut self, exchange: &str, symbol: &str, high: i64) {
        let s = self.stream(exchange, symbol);
        if s.high.is_none_or(|h| h < high) {
            s.high = Some(high);
        }
    }

    /// Continues a stream's platform sequence after `last` (state restored
    /// from elsewhere). Only moves it forward.
    pub fn restore_platform_sequence(&mut self, exchange: &str, symbol: &str, last: i64) {
        let s = self.stream(exchange, symbol);
        s.platform = s.platform.max(last);
    }

    /// Every stream's last platform sequence.
    pub fn platform_sequences(&self) -> impl Iterator<Item = (&str, &str, i64)> {
        self.streams.iter().filter(|(_, st)| st.platform > 0).map(|((e, s), st)| (e.as_str(), s.as_str(), st.platform))
    }

    /// Every stream's high-water mark.
    pub fn high_water_marks(&self) -> impl Iterator<Item = (&str, &str, i64)> {
        self.streams.iter().filter_map(|((e, s), st)| st.high.map(|h| (e.as_str(), s.as_str(), h)))
    }

    fn stream(&mut self, exchange: &str, symbol: &str) -> &mut Stream {
        self.streams.entry(key(exchange, symbol)).or_default()
    }
}

/// Exchange codes and symbols fit inline in a `CompactString`: building a key
/// allocates nothing.
fn key(exchange: &str, symbol: &str) -> (CompactString, CompactString) {
    (CompactString::from(exchange), CompactString::from(symbol))
}

fn confirm(
    exchange: &str,
    symbol: &str,
    s: &mut Stream,
    now: Instant,
    config: &SequenceConfig,
    gaps: &mut Vec<Gap>,
    moved_past: impl Fn(&Pending) -> bool,
) {
    s.pending.retain(|p| {
        let due = moved_past(p) || now.duration_since(p.opened) >= config.reorder_timeout;
        if due {
            gaps.push(Gap { exchange: exchange.into(), symbol: symbol.into(), from: p.from, to: p.to });
        }
        !due
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tracker: &mut SequenceTracker, seqs: &[i64], now: Instant) -> (Vec<Outcome>, Vec<Gap>) {
        let mut gaps = Vec::new();
        let outcomes = seqs.iter().map(|&s| tracker.observe("BINANCE", "BTCUSDT", s, now, &mut gaps)).collect();
        (outcomes, gaps)
    }

    fn tracker(window: u64) -> SequenceTracker {
        SequenceTracker::new(SequenceConfig { reorder_window: window, ..SequenceConfig::default() })
    }

    #[test]
    fn in_order_duplicate_and_reset() {
        let mut t = tracker(100);
        let (o, gaps) = run(&mut t, &[1_000_000, 1_000_001, 1_000_001, 999_999, 5], Instant::now());
        assert_eq!(o, [Outcome::First, Outcome::InOrder, Outcome::Duplicate, Outcome::Duplicate, Outcome::Reset]);
        assert!(gaps.is_empty());
        assert_eq!(t.high_water_mark("BINANCE", "BTCUSDT"), Some(5));
    }

    #[test]
    fn reordering_within_the_window_is_not_a_gap() {
        let mut t = tracker(3);
        let (o, gaps) = run(&mut t, &[1, 2, 4, 3, 5, 6, 7, 8, 9], Instant::now());
        assert_eq!(o[2], Outcome::Ahead { missing: 1 });
        assert_eq!(o[3], Outcome::Late);
        assert!(gaps.is_empty());
    }

    #[test]
    fn a_gap_is_confirmed_once_the_stream_moves_past_it() {
        let mut t = tracker(3);
        let (_, gaps) = run(&mut t, &[1, 2, 6, 7, 8, 9, 10, 11], Instant::now());
        assert_eq!(gaps, [Gap { exchange: "BINANCE".into(), symbol: "BTCUSDT".into(), from: 3, to: 5 }]);
        assert_eq!(gaps[0].size(), 3);
    }

    #[test]
    fn a_partly_filled_gap_reports_only_what_is_missing() {
        let mut t = tracker(5);
        let (_, gaps) = run(&mut t, &[1, 7, 4, 8, 9, 10, 11, 12, 13], Instant::now());
        let ranges: Vec<_> = gaps.iter().map(|g| (g.from, g.to)).collect();
        assert_eq!(ranges, [(2, 3), (5, 6)]);
    }

    #[test]
    fn a_tick_confirms_gaps_that_stay_open() {
        let mut t = tracker(1000);
        let t0 = Instant::now();
        let (_, gaps) = run(&mut t, &[1, 5], t0);
        assert!(gaps.is_empty());
        let mut gaps = Vec::new();
        t.tick(t0 + Duration::from_millis(100), &mut gaps);
        assert!(gaps.is_empty());
        t.tick(t0 + Duration::from_secs(1), &mut gaps);
        assert_eq!(gaps.iter().map(|g| (g.from, g.to)).collect::<Vec<_>>(), [(2, 4)]);
    }

    #[test]
    fn streams_are_independent() {
        let mut t = tracker(0);
        let now = Instant::now();
        let mut gaps = Vec::new();
        assert_eq!(t.observe("BINANCE", "A", 10, now, &mut gaps), Outcome::First);
        assert_eq!(t.observe("BINANCE", "B", 50, now, &mut gaps), Outcome::First);
        assert_eq!(t.observe("BINANCE", "A", 11, now, &mut gaps), Outcome::InOrder);
        assert_eq!(t.next_platform_sequence("BINANCE", "A"), 1);
        assert_eq!(t.next_platform_sequence("BINANCE", "A"), 2);
        assert_eq!(t.next_platform_sequence("BINANCE", "B"), 1);
    }
}
