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
        let mut out = BTreeMap::new();
        for (key, marks) in map {
            let (e, s) = key.split_once('/').ok_or_else(|| format!("stream key {key:?} is not EXCHANGE/SYMBOL"))?;
            out.insert((e.into(), s.into()), marks);
        }
        Ok(Self(out))
    }
}
