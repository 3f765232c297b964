//! The snapshots queries read, so that expiry never takes one from under
//! a query: every query notes the snapshot it resolved (a lease as long as
//! a query may run), and time travel (`as_of`, `as_of_snapshot`) keeps what
//! it asked for as long as snapshots are kept at all. Tables are named as
//! maintenance names them (`trades`, `book_updates`, ...).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct Pins(Arc<Mutex<HashMap<(&'static str, i64), Pin>>>);

#[derive(Debug, Clone, Copy)]
struct Pin {
    /// The latest query that read it.
    read: Instant,
    /// The latest time travel that asked for it.
    asked: Option<Instant>,
}

impl Pins {
    /// A query is about to read `snapshot`.
    pub fn read(&self, table: &'static str, snapshot: i64) {
        self.note(table, snapshot, false);
    }

    /// Time travel asked for `snapshot`.
    pub fn asked(&self, table: &'static str, snapshot: i64) {
        self.note(table, snapshot, true);
    }

    fn note(&self, table: &'static str, snapshot: i64, asked: bool) {
        let now = Instant::now();
        let mut pins = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let pin = pins.entry((table, snapshot)).or_insert(Pin { read: now, asked: None });
        pin.read = now;
        if asked {
            pin.asked = Some(now);
        }
    }

    /// Whether `snapshot` was read within `lease` or asked for by time
    /// travel within `keep`. Forgets pins older than both.
    pub fn holds(&self, table: &'static str, snapshot: i64, lease: Duration, keep: Duration) -> bool {
        let mut pins = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        pins.retain(|_, p| p.read.elapsed() < lease.max(keep) || p.asked.is_some_and(|a| a.elapsed() < keep));
        pins.get(&(table, snapshot))
            .is_some_and(|p| p.read.elapsed() < lease || p.asked.is_some_and(|a| a.elapsed() < keep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_holds_for_its_lease_and_time_travel_for_the_keep() {
        let pins = Pins::default();
        pins.read("trades", 1);
        pins.asked("trades", 2);
        let (lease, keep) = (Duration::from_secs(60), Duration::from_secs(3600));
        assert!(pins.holds("trades", 1, lease, keep));
        assert!(pins.holds("trades", 2, lease, keep));
        assert!(!pins.holds("quotes", 1, lease, keep), "pins are per table");
        assert!(!pins.holds("trades", 3, lease, keep));
        assert!(!pins.holds("trades", 1, Duration::ZERO, keep), "a read's lease ran out");
        assert!(pins.holds("trades", 2, Duration::ZERO, keep), "time travel holds for the keep");
        assert!(!pins.holds("trades", 2, Duration::ZERO, Duration::ZERO));
    }
}
