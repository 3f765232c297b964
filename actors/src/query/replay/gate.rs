//! The replay streams open at once, on the replay port and `/v1/replay`
//! together, and the bound `replay.max_clients` puts on them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Clone)]
pub struct ReplayGate {
    open: Arc<AtomicUsize>,
    max: usize,
}

/// One open stream; dropping it closes it.
pub struct Admitted(ReplayGate);

impl ReplayGate {
    pub fn new(max: usize) -> Self {
        Self { open: Arc::new(AtomicUsize::new(0)), max }
    }

    /// A stream's place, or `None` (counted) when `max` are open.
    pub fn admit(&self) -> Option<Admitted> {
        let admitted = self.open.fetch_add(1, Ordering::AcqRel) < self.max;
        let ticket = Admitted(self.clone());
        self.show();
        if admitted {
            Some(ticket)
        } else {
            metrics::counter!("k2_replay_refused_total", "reason" => "busy").increment(1);
            None
        }
    }

    fn show(&self) {
        metrics::gauge!("k2_replay_clients").set(self.open.load(Ordering::Acquire).min(self.max) as f64);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.show();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_bound_a_stream_waits_for_one_to_close() {
        let gate = ReplayGate::new(2);
        let a = gate.admit().expect("first");
        let _b = gate.admit().expect("second");
        assert!(gate.admit().is_none(), "a third is refused");
        drop(a);
        assert!(gate.admit().is_some(), "a place came free");
    }
}
