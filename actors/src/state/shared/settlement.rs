//! What became durable, to be told to Redis.

use super::*;

/// What became durable: the ids whose claims become final and the highest
/// source sequence per stream.
#[derive(Debug, Default)]
pub struct Settlement {
    pub(super) ids: Vec<(CompactString, uuid::Uuid)>,
    pub(super) marks: SequenceMarks,
}

impl Settlement {
    pub fn of(events: &[MarketEvent]) -> Self {
        let mut s = Self { ids: Vec::with_capacity(events.len()), marks: SequenceMarks::default() };
        for e in events {
            s.add(e);
        }
        s
    }

    pub fn add(&mut self, event: &MarketEvent) {
        self.ids.push((event.exchange().into(), event.message_id()));
        if let MarketEvent::Trade(t) = event
            && t.source_sequence.is_some()
        {
            self.marks.raise(&t.exchange, &t.symbol, t.source_sequence, None);
        }
    }

    pub fn push_id(&mut self, exchange: &str, id: uuid::Uuid) {
        self.ids.push((exchange.into(), id));
    }

    pub fn raise_marks(&mut self, marks: &SequenceMarks) {
        for ((exchange, symbol), m) in &marks.0 {
            if m.source_sequence.is_some() {
                self.marks.raise(exchange, symbol, m.source_sequence, None);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.marks.0.is_empty()
    }

    /// Takes `other` in: its ids after these, its marks merged.
    pub(super) fn absorb(&mut self, other: Settlement) {
        self.ids.extend(other.ids);
        self.marks.merge(&other.marks);
    }
}
