//! Plans made at `GetFlightInfo`, kept for the `DoGet` that follows, so a
//! statement is planned once, not once per call: the session, its tables
//! (the pinned snapshot and the rows after it as they stood at
//! `GetFlightInfo`) and the optimised logical plan. A statement therefore
//! reads the data as of its `GetFlightInfo`, the moment the client asked.
//! Kept by ticket, at most `MAX` (the oldest go first) and no longer than
//! `flight.timeout`; a `DoGet` finding none plans again from its ticket.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use datafusion::prelude::DataFrame;

/// Plans kept at most: each holds its session and the rows its tables
/// were given (references to the tail's batches, not copies).
const MAX: usize = 64;

pub struct Planned {
    kept: Mutex<VecDeque<(Vec<u8>, Instant, DataFrame)>>,
    ttl: Duration,
}

impl Planned {
    pub fn new(ttl: Duration) -> Self {
        Self { kept: Mutex::new(VecDeque::new()), ttl }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, VecDeque<(Vec<u8>, Instant, DataFrame)>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `frame`, planned for `ticket`, in place of any plan kept for it.
    pub fn keep(&self, ticket: Vec<u8>, frame: DataFrame) {
        let mut kept = self.kept();
        kept.retain(|(t, at, _)| *t != ticket && at.elapsed() < self.ttl);
        while kept.len() >= MAX {
            kept.pop_front();
        }
        kept.push_back((ticket, Instant::now(), frame));
    }

    /// The plan kept for `ticket`, taken (a second `DoGet` plans again).
    pub fn take(&self, ticket: &[u8]) -> Option<DataFrame> {
        let mut kept = self.kept();
        let i = kept.iter().position(|(t, _, _)| t == ticket)?;
        let (_, at, frame) = kept.remove(i)?;
        (at.elapsed() < self.ttl).then_some(frame)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    #[test]
    fn a_plan_is_taken_once_and_the_oldest_go_past_the_bound() {
        let ctx = SessionContext::new();
        let frame = || ctx.read_empty().expect("empty frame");
        let planned = Planned::new(Duration::from_secs(60));
        planned.keep(b"a".to_vec(), frame());
        assert!(planned.take(b"a").is_some());
        assert!(planned.take(b"a").is_none(), "taken once");
        for i in 0..=MAX {
            planned.keep(i.to_string().into_bytes(), frame());
        }
        assert!(planned.take(b"0").is_none(), "the oldest went");
        assert!(planned.take(MAX.to_string().as_bytes()).is_some());
        let expired = Planned::new(Duration::ZERO);
        expired.keep(b"a".to_vec(), frame());
        assert!(expired.take(b"a").is_none(), "past the time budget");
    }
}
