//! What a snapshot covers, recorded in its summary in the same atomic commit
//! as its data: the flush generation and, per source stream, the highest
//! sequence numbers included. After a restart the flusher and the sequence
//! tracker start from here.

use std::collections::{BTreeMap, HashMap};

use iceberg::spec::SnapshotRef;
use iceberg::table::Table;

use crate::state::marks::{OpenGaps, Ranges, SequenceMarks, StreamKey};

/// Snapshot summary key of the flush generation (1, 2, ...).
pub const GENERATION: &str = "k2.flush-generation";
/// Snapshot summary key of the per-stream sequence marks (JSON).
pub const SOURCES: &str = "k2.sources";
/// Snapshot summary key of the Kafka offsets a snapshot covers (JSON):
/// `{topic: {partition: next offset}}`, cumulative.
pub const KAFKA_OFFSETS: &str = "k2.kafka-offsets";

/// Snapshot summary key naming the K2 process that wrote a snapshot: flush
/// generations count per writer, so "is this flush already committed" asks
/// about this writer's snapshots only (several flushers may share a table).
pub const WRITER: &str = "k2.writer";

/// Snapshot summary key of the open gaps (JSON, `EXCHANGE/SYMBOL` → ranges
/// of trade numbers below the marks not in the table yet): re-queued for
/// recovery at start, so a crash never forgets a gap.
pub const OPEN_GAPS: &str = "k2.open-gaps";

/// Snapshot summary key of what the degradation ladder shed while this
/// snapshot's rows were accepted (JSON, `LEVEL/SYMBOL/kind` → rows; absent
/// when nothing was): a reader can tell which span is degraded.
pub const SHED: &str = "k2.shed";

/// The table's current snapshot and its parents, newest first: a reader
/// looks back along them for the newest snapshot carrying K2's keys
/// (snapshots other engines add, a compaction or an append, carry none).
pub fn newest_first(table: &Table) -> impl Iterator<Item = SnapshotRef> + '_ {
    let metadata = table.metadata();
    std::iter::successors(metadata.current_snapshot().cloned(), move |s| {
        s.parent_snapshot_id().and_then(|id| metadata.snapshot_by_id(id).cloned())
    })
}

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

/// What the latest snapshot of a table says it covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Covered {
    pub generation: u64,
    /// The process that wrote it (empty when unknown).
    pub writer: String,
    pub marks: SequenceMarks,
    /// Numbers at or below the marks that are not in the table yet (trades
    /// of exchanges K2 can recover gaps of), cumulative.
    pub open: OpenGaps,
    /// Kafka mode: where each partition's consumption continues.
    pub offsets: Offsets,
    /// A flush's own (never in a summary): the trade numbers it holds per
    /// stream...
    pub seen: BTreeMap<StreamKey, Ranges>,
    /// ...and the ranges gap recovery gave up on since the last flush.
    pub given_up: BTreeMap<StreamKey, Ranges>,
}

impl Covered {
    /// Reads the K2 keys of a snapshot summary; a snapshot K2 did not write
    /// (no keys) covers generation 0.
    pub fn from_summary(props: &HashMap<String, String>) -> Result<Self, String> {
        let generation = Self::generation_of(props)?;
        let marks = match props.get(SOURCES) {
            Some(s) => SequenceMarks::from_json(s)?,
            None => SequenceMarks::default(),
        };
        let offsets = match props.get(KAFKA_OFFSETS) {
            Some(o) => serde_json::from_str(o).map_err(|e| format!("{KAFKA_OFFSETS}: {e}"))?,
            None => Offsets::new(),
        };
        let writer = props.get(WRITER).cloned().unwrap_or_default();
        let open = match props.get(OPEN_GAPS) {
            Some(o) => OpenGaps::from_json(o).map_err(|e| format!("{OPEN_GAPS}: {e}"))?,
            None => OpenGaps::default(),
        };
        Ok(Self { generation, writer, marks, open, offsets, ..Self::default() })
    }

    /// The flush generation alone (kept inline, unlike the larger keys).
    pub fn generation_of(props: &HashMap<String, String>) -> Result<u64, String> {
        match props.get(GENERATION) {
            Some(g) => g.parse().map_err(|e| format!("{GENERATION} {g:?}: {e}")),
            None => Ok(0),
        }
    }

    pub fn to_summary(&self) -> HashMap<String, String> {
        let mut props = HashMap::from([
            (GENERATION.to_owned(), self.generation.to_string()),
            (SOURCES.to_owned(), self.marks.to_json()),
        ]);
        if !self.writer.is_empty() {
            props.insert(WRITER.to_owned(), self.writer.clone());
        }
        if !self.open.is_empty() {
            props.insert(OPEN_GAPS.to_owned(), self.open.to_json());
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
        let mut marks = SequenceMarks::default();
        marks.raise("BINANCE", "BTCUSDT", Some(10), Some(3));
        marks.raise("BINANCE", "BTCUSDT", Some(7), Some(9));
        marks.raise("ASX", "BHP", None, Some(5));
        let offsets = Offsets::from([("market.crypto.trades.binance".to_owned(), BTreeMap::from([(0, 17), (2, 5)]))]);
        let mut open = OpenGaps::default();
        open.0.insert(("BINANCE".into(), "BTCUSDT".into()), Ranges(vec![(3, 4), (8, 8)]));
        let c = Covered { generation: 42, writer: "w1".into(), marks, open, offsets, ..Covered::default() };
        let back = Covered::from_summary(&c.to_summary()).unwrap();
        assert_eq!(back, c);
        let btc = back.marks.0[&("BINANCE".into(), "BTCUSDT".into())];
        assert_eq!((btc.source_sequence, btc.platform_sequence), (Some(10), Some(9)));
    }

    #[test]
    fn a_foreign_snapshot_covers_generation_zero_and_bad_keys_are_errors() {
        assert_eq!(Covered::from_summary(&HashMap::new()).unwrap(), Covered::default());
        let bad = HashMap::from([(GENERATION.to_owned(), "x".to_owned())]);
        assert!(Covered::from_summary(&bad).unwrap_err().contains(GENERATION));
    }
}
