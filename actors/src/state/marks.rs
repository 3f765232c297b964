//! Sequence marks: per stream (exchange, symbol), the highest source
//! sequence (the venue's own number) and platform sequence (K2's) that are
//! durable. The tables record them in every snapshot, Redis shares them
//! between instances, and the sequence tracker continues from them after a
//! restart, so trades sent while K2 was down show as a gap.

use std::collections::BTreeMap;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// The highest sequence numbers held for one (exchange, symbol).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marks {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source_sequence: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub platform_sequence: Option<i64>,
}

impl Marks {
    pub fn raise(&mut self, source: Option<i64>, platform: Option<i64>) {
        self.source_sequence = self.source_sequence.max(source);
        self.platform_sequence = self.platform_sequence.max(platform);
    }

    pub fn merge(&mut self, other: Marks) {
        self.raise(other.source_sequence, other.platform_sequence);
    }
}

/// Key of a stream in [`SequenceMarks`]: (exchange, symbol).
pub type StreamKey = (CompactString, CompactString);

/// Marks per stream, cumulative: the latest snapshot alone says
/// everything that is durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SequenceMarks(pub BTreeMap<StreamKey, Marks>);

impl SequenceMarks {
    pub fn raise(&mut self, exchange: &str, symbol: &str, source: Option<i64>, platform: Option<i64>) {
        match self.0.get_mut(&(CompactString::from(exchange), CompactString::from(symbol))) {
            Some(m) => m.raise(source, platform),
            None => {
                let mut m = Marks::default();
                m.raise(source, platform);
                self.0.insert((exchange.into(), symbol.into()), m);
            }
        }
    }

    pub fn merge(&mut self, other: &SequenceMarks) {
        for (k, m) in &other.0 {
            self.0.entry(k.clone()).or_default().merge(*m);
        }
    }

    pub fn to_json(&self) -> String {
        let map: BTreeMap<String, Marks> = self.0.iter().map(|((e, s), m)| (format!("{e}/{s}"), *m)).collect();
        serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())
    }

    pub fn from_json(text: &str) -> Result<Self, String> {
        let map: BTreeMap<String, Marks> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        map.into_iter().map(|(key, marks)| Ok((stream_key(&key)?, marks))).collect::<Result<_, String>>().map(Self)
    }
}

/// `EXCHANGE/SYMBOL`, as the summaries write a stream's key.
fn stream_key(text: &str) -> Result<StreamKey, String> {
    let (e, s) = text.split_once('/').ok_or_else(|| format!("stream key {text:?} is not EXCHANGE/SYMBOL"))?;
    Ok((e.into(), s.into()))
}

/// Sorted, disjoint, non-adjacent inclusive ranges of sequence numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ranges(pub Vec<(i64, i64)>);

impl Ranges {
    /// The ranges covering `ids` (any order, repeats allowed).
    pub fn of(mut ids: Vec<i64>) -> Self {
        ids.sort_unstable();
        let mut out: Vec<(i64, i64)> = Vec::new();
        for id in ids {
            match out.last_mut() {
                Some((_, to)) if id <= *to + 1 => *to = (*to).max(id),
                _ => out.push((id, id)),
            }
        }
        Self(out)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn max(&self) -> Option<i64> {
        self.0.last().map(|(_, to)| *to)
    }

    pub fn min(&self) -> Option<i64> {
        self.0.first().map(|(from, _)| *from)
    }

    /// How many numbers the ranges hold.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|(f, t)| (t - f + 1) as u64).sum()
    }

    /// Adds `other`'s numbers.
    pub fn union(&mut self, other: &Ranges) {
        let mut all: Vec<(i64, i64)> = self.0.iter().chain(other.0.iter()).copied().collect();
        all.sort_unstable();
        let mut out: Vec<(i64, i64)> = Vec::with_capacity(all.len());
        for (from, to) in all {
            match out.last_mut() {
                Some((_, end)) if from <= end.saturating_add(1) => *end = (*end).max(to),
                _ => out.push((from, to)),
            }
        }
        self.0 = out;
    }

    /// Removes `other`'s numbers.
    pub fn subtract(&mut self, other: &Ranges) {
        let mut out = Vec::with_capacity(self.0.len());
        for &(mut from, to) in &self.0 {
            for &(cut_from, cut_to) in &other.0 {
                if cut_to < from || cut_from > to {
                    continue;
                }
                if cut_from > from {
                    out.push((from, cut_from - 1));
                }
                from = cut_to.saturating_add(1);
                if from > to {
                    break;
                }
            }
            if from <= to {
                out.push((from, to));
            }
        }
        self.0 = out;
    }
}

/// Most open ranges one stream keeps (see [`OpenGaps::after_flush`]).
pub const MAX_OPEN_RANGES: usize = 10_000;

/// Per stream, the sequence numbers at or below its mark that are not
/// durable and that gap recovery has not given up on: what a restarted K2
/// must still fetch. Recorded in each snapshot beside the marks, in the same
/// commit as the rows, so a crash at any instant forgets no gap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenGaps(pub BTreeMap<StreamKey, Ranges>);

impl OpenGaps {
    /// The state after a flush: `high` is the stream's mark before it,
    /// `seen` the numbers the flush holds, `given_up` those gap recovery
    /// counted unrecoverable. Everything from the mark (or the flush's first
    /// number, for a new stream) to the flush's last number is open unless
    /// the flush holds it.
    pub fn after_flush(&mut self, key: &StreamKey, high: Option<i64>, seen: &Ranges, given_up: &Ranges) {
        let open = self.0.entry(key.clone()).or_default();
        if let Some(max) = seen.max() {
            let from = high.map_or(seen.min().unwrap_or(max), |h| h.saturating_add(1));
            if from <= max {
                open.union(&Ranges(vec![(from, max)]));
            }
        }
        open.subtract(seen);
        open.subtract(given_up);
        // Bounded, so that a stream whose gaps nobody recovers (recovery
        // off) cannot grow every snapshot's summary without end: the oldest
        // ranges are given up, loudly.
        if open.0.len() > MAX_OPEN_RANGES {
            let dropped: Vec<(i64, i64)> = open.0.drain(..open.0.len() - MAX_OPEN_RANGES).collect();
            let trades: i64 = dropped.iter().map(|(f, t)| t - f + 1).sum();
            tracing::error!(exchange = %key.0, symbol = %key.1, ranges = dropped.len(), trades, first = ?dropped.first(), "open gaps past the limit given up");
            metrics::counter!("k2_gaps_given_up_total", "reason" => "limit").increment(trades as u64);
        }
        if open.is_empty() {
            self.0.remove(key);
        }
    }

    pub fn to_json(&self) -> String {
        let map: BTreeMap<String, &Ranges> = self.0.iter().map(|((e, s), r)| (format!("{e}/{s}"), r)).collect();
        serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())
    }

    pub fn from_json(text: &str) -> Result<Self, String> {
        let map: BTreeMap<String, Ranges> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        map.into_iter().map(|(key, ranges)| Ok((stream_key(&key)?, ranges))).collect::<Result<_, String>>().map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Ranges gap recovery has given up on (the exchange no longer has them),
/// per stream, waiting for the next trades flush to close them in the
/// table. Shared by gap recovery and the flusher.
#[derive(Debug, Clone, Default)]
pub struct GivenUp(std::sync::Arc<std::sync::Mutex<BTreeMap<StreamKey, Ranges>>>);

impl GivenUp {
    pub fn record(&self, exchange: &str, symbol: &str, from: i64, to: i64) {
        let mut book = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        book.entry((exchange.into(), symbol.into())).or_default().union(&Ranges(vec![(from, to)]));
    }

    /// Everything recorded since the last call.
    pub fn take(&self) -> BTreeMap<StreamKey, Ranges> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_compress_unite_and_subtract() {
        let r = Ranges::of(vec![5, 3, 4, 9, 10, 4, 12]);
        assert_eq!(r.0, vec![(3, 5), (9, 10), (12, 12)]);
        assert_eq!(r.count(), 6);
        let mut u = r.clone();
        u.union(&Ranges(vec![(6, 8), (20, 21)]));
        assert_eq!(u.0, vec![(3, 10), (12, 12), (20, 21)]);
        let mut s = Ranges(vec![(1, 10), (20, 30)]);
        s.subtract(&Ranges(vec![(1, 2), (5, 5), (10, 22), (30, 40)]));
        assert_eq!(s.0, vec![(3, 4), (6, 9), (23, 29)]);
    }

    #[test]
    fn a_flush_opens_what_it_skips_and_closes_what_it_brings() {
        let key: StreamKey = ("BINANCE".into(), "BTCUSDT".into());
        let mut gaps = OpenGaps::default();
        // A new stream: its holes are open, not what came before its first.
        gaps.after_flush(&key, None, &Ranges::of(vec![100, 101, 105, 106]), &Ranges::default());
        assert_eq!(gaps.0[&key].0, vec![(102, 104)]);
        // The next flush starts past the mark: the jump is open too.
        gaps.after_flush(&key, Some(106), &Ranges::of(vec![110, 111]), &Ranges::default());
        assert_eq!(gaps.0[&key].0, vec![(102, 104), (107, 109)]);
        // Recovered trades close their part; given-up ones close theirs.
        gaps.after_flush(&key, Some(111), &Ranges::of(vec![102, 103, 107]), &Ranges(vec![(104, 104)]));
        assert_eq!(gaps.0[&key].0, vec![(108, 109)]);
        gaps.after_flush(&key, Some(111), &Ranges::of(vec![108, 109]), &Ranges::default());
        assert!(gaps.is_empty());
        let back = OpenGaps::from_json(&gaps.to_json()).unwrap();
        assert_eq!(back, gaps);
    }
}
