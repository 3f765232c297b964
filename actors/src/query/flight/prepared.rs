//! Prepared statements held between a client's calls: the SQL, the pin it
//! was prepared under and the parameters last bound. Bounded: past
//! `flight.max_prepared` the oldest is closed, so clients that never close
//! theirs cannot grow the process.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use datafusion::scalar::ScalarValue;

use crate::query::params::Pin;

#[derive(Debug, Clone)]
pub struct Prepared {
    pub sql: String,
    pub pin: Pin,
    pub params: Option<Vec<ScalarValue>>,
}

pub struct PreparedStatements {
    open: Mutex<VecDeque<(uuid::Uuid, Prepared)>>,
    max: usize,
}

impl PreparedStatements {
    pub fn new(max: usize) -> Self {
        Self { open: Mutex::new(VecDeque::new()), max: max.max(1) }
    }

    /// Holds `statement`; its handle (random, so one client cannot guess
    /// another's).
    pub fn open(&self, statement: Prepared) -> Vec<u8> {
        let id = uuid::Uuid::new_v4();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        while open.len() >= self.max {
            open.pop_front();
        }
        open.push_back((id, statement));
        metrics::gauge!("k2_flight_prepared_statements").set(open.len() as f64);
        id.as_bytes().to_vec()
    }

    pub fn get(&self, handle: &[u8]) -> Option<Prepared> {
        let id = uuid::Uuid::from_slice(handle).ok()?;
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.iter().find(|(k, _)| *k == id).map(|(_, p)| p.clone())
    }

    /// Binds `params`; false when the handle is not open.
    pub fn bind(&self, handle: &[u8], params: Vec<ScalarValue>) -> bool {
        let Ok(id) = uuid::Uuid::from_slice(handle) else { return false };
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        match open.iter_mut().find(|(k, _)| *k == id) {
            Some((_, p)) => {
                p.params = Some(params);
                true
            }
            None => false,
        }
    }

    pub fn close(&self, handle: &[u8]) {
        let Ok(id) = uuid::Uuid::from_slice(handle) else { return };
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|(k, _)| *k != id);
        metrics::gauge!("k2_flight_prepared_statements").set(open.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::params::Source;

    fn statement(sql: &str) -> Prepared {
        Prepared { sql: sql.into(), pin: Pin { source: Source::Hybrid, as_of: None }, params: None }
    }

    #[test]
    fn the_oldest_is_closed_past_the_bound_and_binding_sticks() {
        let held = PreparedStatements::new(2);
        let a = held.open(statement("SELECT 1"));
        let b = held.open(statement("SELECT 2"));
        assert!(held.bind(&b, vec![ScalarValue::Int64(Some(7))]));
        let c = held.open(statement("SELECT 3"));
        assert!(held.get(&a).is_none(), "the oldest went first");
        assert_eq!(held.get(&b).unwrap().params, Some(vec![ScalarValue::Int64(Some(7))]));
        assert_eq!(held.get(&c).unwrap().sql, "SELECT 3");
        held.close(&b);
        assert!(held.get(&b).is_none());
        assert!(!held.bind(&b, vec![]), "a closed handle binds nothing");
        assert!(held.get(b"not a handle").is_none());
    }
}
