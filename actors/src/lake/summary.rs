//! What a snapshot covers, recorded in its summary in the same atomic commit
//! as its data: the flush generation and, per source stream, the highest
//! sequence numbers included. After a restart the flusher and the sequence
//! tracker start from here.

use std::collections::{BTreeMap, HashMap};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// Snapshot summary key of the flush generation (1, 2, ...).
pub const GENERATION: &str = "k2.flush-generation";
/// Snapshot summary key of the per-source high-water marks (JSON).
pub const SOURCES: &str = "k2.sources";
/// Snapshot summary key of the Kafka offsets a snapshot covers (JSON):
/// `{topic: {partition: next offset}}`, cumulative.
pub const KAFKA_OFFSETS: &str = "k2.kafka-offsets";

/// Snapshot summary key naming the K2 process that wrote a snapshot: flush
/// generations count per writer, so "is this flush already committed" asks
/// about this writer's snapshots only (several flushers may share a table).
pub const WRITER: &str = "k2.writer";

/// Next offset to read, by topic and partition.
pub type Offsets = BTreeMap<String, BTreeMap<i32, i64>>;

/// Raises `into` to at least `from`, partition by partition.
pub fn merge_offsets(into: &mut Offsets, from: &Offsets) {
    for (topic, partitions) in from {
        let known = into.entry(topic.clone()).or_default();
        for (p, next) in partitions {
            let e = known.entry(*p).or_insert(*next);
            *e = (*e).max(*next);
        }
    }
}

/// The highest sequence numbers a table holds for one (exchange, symbol).
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

/// Key of a source stream in [`Sources`]: `EXCHANGE/SYMBOL`.
pub type SourceKey = (CompactString, CompactString);

/// Marks per source stream, cumulative: the latest snapshot alone says
/// everything that is durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources(pub BTreeMap<SourceKey, Marks>);

impl Sources {
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

    pub fn merge(&mut self, other: &Sources) {
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
        let mut out = BTreeMap::new();
        for (key, marks) in map {
            let (e, s) = key.split_once('/').ok_or_else(|| format!("source key {key:?} is not EXCHANGE/SYMBOL"))?;
            out.insert((e.into(), s.into()), marks);
        }
        Ok(Self(out))
    }
}

/// What the latest snapshot of a table says it covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Covered {
    pub generation: u64,
    /// The process that wrote it (empty when unknown).
    pub writer: String,
    pub sources: Sources,
    /// Kafka mode: where each partition's consumption continues.
    pub offsets: Offsets,
}

impl Covered {
    /// Reads the K2 keys of a snapshot summary; a snapshot K2 did not write
    /// (no keys) covers generation 0.
    pub fn from_summary(props: &HashMap<String, String>) -> Result<Self, String> {
        let generation = match props.get(GENERATION) {
            Some(g) => g.parse().map_err(|e| format!("{GENERATION} {g:?}: {e}"))?,
            None => 0,
        };
        let sources = match props.get(SOURCES) {
            Some(s) => Sources::from_json(s)?,
            None => Sources::default(),
        };
        let offsets = match props.get(KAFKA_OFFSETS) {
            Some(o) => serde_json::from_str(o).map_err(|e| format!("{KAFKA_OFFSETS}: {e}"))?,
            None => Offsets::new(),
        };
        let writer = props.get(WRITER).cloned().unwrap_or_default();
        Ok(Self { generation, writer, sources, offsets })
    }

    pub fn to_summary(&self) -> HashMap<String, String> {
        let mut props = HashMap::from([
            (GENERATION.to_owned(), self.generation.to_string()),
            (SOURCES.to_owned(), self.sources.to_json()),
        ]);
        if !self.writer.is_empty() {
            props.insert(WRITER.to_owned(), self.writer.clone());
        }
        if !self.offsets.is_empty() {
            props.insert(KAFKA_OFFSETS.to_owned(), serde_json::to_string(&self.offsets).unwrap_or_default());
        }
        props
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covered_round_trips_through_a_summary() {
        let mut sources = Sources::default();
        sources.raise("BINANCE", "BTCUSDT", Some(10), Some(3));
        sources.raise("BINANCE", "BTCUSDT", Some(7), Some(9));
        sources.raise("ASX", "BHP", None, Some(5));
        let offsets = Offsets::from([("market.crypto.trades.binance".to_owned(), BTreeMap::from([(0, 17), (2, 5)]))]);
        let c = Covered { generation: 42, writer: "w1".into(), sources, offsets };
        let back = Covered::from_summary(&c.to_summary()).unwrap();
        assert_eq!(back, c);
        let btc = back.sources.0[&("BINANCE".into(), "BTCUSDT".into())];
        assert_eq!((btc.source_sequence, btc.platform_sequence), (Some(10), Some(9)));
    }

    #[test]
    fn a_foreign_snapshot_covers_generation_zero_and_bad_keys_are_errors() {
        assert_eq!(Covered::from_summary(&HashMap::new()).unwrap(), Covered::default());
        let bad = HashMap::from([(GENERATION.to_owned(), "x".to_owned())]);
        assert!(Covered::from_summary(&bad).unwrap_err().contains(GENERATION));
    }
}
