//! The in-memory deduplication window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use uuid::Uuid;

/// Remembers message ids for a time window, bounded in memory.
///
/// Eviction rule: an id is forgotten when its window has passed (`window`
/// after it was first seen), or, when more than `capacity` ids are held, the
/// oldest-inserted ids are forgotten first. A duplicate arriving after its id
/// was evicted is let through; `evicted_early()` counts the ids that were
/// dropped for capacity before their window passed, so that risk is visible.
///
/// Memory: about 45 bytes per id held (the id twice, a 4-byte expiry twice,
/// hash table overhead), so the default 5,000,000 ids is about 230 MiB, and
/// more while a table doubles.
#[derive(Debug)]
pub struct DedupWindow {
    window: Duration,
    capacity: usize,
    /// Expiries are whole seconds since `epoch`: 4 bytes instead of an
    /// `Instant`'s 16, a third less memory per id.
    epoch: Instant,
    seen: FxHashMap<Uuid, u32>,
    order: VecDeque<(u32, Uuid)>,
    evicted_early: u64,
}

impl DedupWindow {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity: capacity.max(1),
            epoch: Instant::now(),
            seen: FxHashMap::default(),
            order: VecDeque::new(),
            evicted_early: 0,
        }
    }

    /// True when `id` is new (and remembers it), false when it is a duplicate
    /// seen within the window.
    pub fn insert(&mut self, id: Uuid, now: Instant) -> bool {
        let (elapsed_floor, elapsed_ceil) = self.seconds(now);
        self.expire(elapsed_floor);
        if self.seen.contains_key(&id) {
            return false;
        }
        // Rounding the insert time up and the check time down means a window
        // may last up to a second longer, never shorter.
        let window = self.window.as_secs().max(1).min(u64::from(u32::MAX)) as u32;
        let expiry = elapsed_ceil.saturating_add(window);
        self.seen.insert(id, expiry);
        self.order.push_back((expiry, id));
        while self.seen.len() > self.capacity {
            if let Some((_, old)) = self.order.pop_front() {
                self.seen.remove(&old);
                self.evicted_early += 1;
            }
        }
        true
    }

    /// Remembers an id without asking (to absorb state written elsewhere).
    pub fn remember(&mut self, id: Uuid, now: Instant) {
        let _ = self.insert(id, now);
    }

    /// Whole seconds since the epoch, rounded down and up.
    fn seconds(&self, now: Instant) -> (u32, u32) {
        let d = now.saturating_duration_since(self.epoch);
        let floor = d.as_secs().min(u64::from(u32::MAX)) as u32;
        (floor, floor.saturating_add(u32::from(d.subsec_nanos() > 0)))
    }

    fn expire(&mut self, now: u32) {
        while let Some(&(expiry, id)) = self.order.front() {
            if expiry > now {
                break;
            }
            self.order.pop_front();
            // The map holds the same expiry unless the id was evicted and
            // inserted again since; only then is the newer entry kept.
            if self.seen.get(&id) == Some(&expiry) {
                self.seen.remove(&id);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Ids forgotten for capacity before their window passed.
    pub fn evicted_early(&self) -> u64 {
        self.evicted_early
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn duplicates_within_the_window_are_caught() {
        let t0 = Instant::now();
        let mut w = DedupWindow::new(Duration::from_secs(10), 100);
        assert!(w.insert(id(1), t0));
        assert!(!w.insert(id(1), t0 + Duration::from_secs(9)));
        assert!(!w.insert(id(1), t0 + Duration::from_millis(9_999)), "a window never ends early");
        assert!(w.insert(id(1), t0 + Duration::from_secs(11)), "window passed (it may run a second long)");
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn capacity_evicts_oldest_first_and_says_so() {
        let t0 = Instant::now();
        let mut w = DedupWindow::new(Duration::from_secs(60), 3);
        for n in 1..=4 {
            assert!(w.insert(id(n), t0));
        }
        assert_eq!(w.len(), 3);
        assert_eq!(w.evicted_early(), 1);
        assert!(w.insert(id(1), t0), "the oldest was forgotten");
        assert!(!w.insert(id(4), t0), "the newest is remembered");
    }
}
