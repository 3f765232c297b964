//! The message ids of a partition's recent records, so that the flusher
//! lands a record once even when two producers put it in the log.
//!
//! Active-active producers share dedup claims in Redis, but a producer
//! killed after the broker took a record and before Redis heard it was
//! durable leaves a claim the other producer takes over: the record is in
//! the log twice. The key is the symbol, so both copies are in one
//! partition, a lease's worth of records apart.
//!
//! The rule is a function of the log alone: a record is a duplicate when a
//! record with the same message id lies within `span` offsets before it in
//! its partition. A flusher that takes a partition over reads the `span`
//! offsets before where the table ends again to learn them, so every
//! flusher, before or after any crash or rebalance, drops the same records.

use std::collections::{HashMap, VecDeque};

use uuid::Uuid;

/// One partition's window.
#[derive(Debug)]
pub struct RecentIds {
    span: i64,
    order: VecDeque<(i64, Uuid)>,
    /// How many records in the window carry each id (a duplicate is
    /// remembered too, so the window is the log's, not what was taken).
    count: HashMap<Uuid, u32>,
}

impl RecentIds {
    pub fn new(span: i64) -> Self {
        Self { span: span.max(0), order: VecDeque::new(), count: HashMap::new() }
    }

    /// Notes the record at `offset` and says whether its id lies within the
    /// span before it. Offsets come in increasing order.
    pub fn note(&mut self, offset: i64, id: Uuid) -> bool {
        let oldest = offset.saturating_sub(self.span);
        while let Some(&(o, old)) = self.order.front() {
            if o >= oldest {
                break;
            }
            self.order.pop_front();
            if let Some(n) = self.count.get_mut(&old) {
                *n -= 1;
                if *n == 0 {
                    self.count.remove(&old);
                }
            }
        }
        if self.span == 0 {
            return false;
        }
        let n = self.count.entry(id).or_insert(0);
        *n += 1;
        self.order.push_back((offset, id));
        *n > 1
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn an_id_seen_within_the_span_is_a_duplicate_and_one_further_back_is_not() {
        let mut w = RecentIds::new(10);
        assert!(!w.note(0, id(1)));
        assert!(!w.note(1, id(2)));
        assert!(w.note(5, id(1)), "offset 0 lies within 10 before 5");
        assert!(w.note(10, id(1)), "offsets 0 and 5 lie within 10 before 10");
        // The copies at 5 and 10 are remembered: at 16, 10 is still in span.
        assert!(w.note(16, id(1)));
        // At 27 the last copy (16) is 11 back: not a duplicate.
        assert!(!w.note(27, id(1)));
        assert!(!w.note(40, id(2)));
        assert_eq!(w.len(), 1, "only offsets 30..=40 are kept: {w:?}");
    }

    #[test]
    fn the_verdicts_depend_on_the_log_not_on_where_reading_started() {
        // The same log read whole, and read by a flusher that took over at
        // offset 50 after re-reading the span before it: equal verdicts from
        // 50 on.
        let log: Vec<(i64, Uuid)> = (0..200).map(|o| (o, id(((o * 7919) % 37) as u128))).collect();
        let mut whole = RecentIds::new(30);
        let all: Vec<bool> = log.iter().map(|&(o, i)| whole.note(o, i)).collect();
        let mut later = RecentIds::new(30);
        let resumed: Vec<bool> = log[20..].iter().map(|&(o, i)| later.note(o, i)).collect();
        assert_eq!(&all[50..], &resumed[30..]);
    }

    #[test]
    fn a_span_of_zero_drops_nothing_and_keeps_nothing() {
        let mut w = RecentIds::new(0);
        assert!(!w.note(0, id(1)));
        assert!(!w.note(1, id(1)));
        assert!(w.is_empty());
    }
}
