//! Prepared statements held between a client's calls: the SQL, the pin it
//! was prepared under and the parameters last bound. Bounded twice, so
//! clients that never close theirs cannot grow the process and one client
//! cannot close another's: past `flight.max_prepared_per_key` a key's own
//! oldest is closed; past `flight.max_prepared` in all, the oldest of the
//! key holding the most. A statement answers only to the key that opened
//! it. Without keys there is no per-key quota: every caller is one owner,
//! bounded by `flight.max_prepared` alone.

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

/// The API key a call carried (None where no keys are set: every caller
/// is then one owner).
pub type Owner = Option<String>;

struct Open {
    id: uuid::Uuid,
    owner: Owner,
    statement: Prepared,
}

pub struct PreparedStatements {
    /// Oldest first.
    open: Mutex<VecDeque<Open>>,
    max: usize,
    per_key: usize,
}

impl PreparedStatements {
    pub fn new(max: usize, per_key: usize) -> Self {
        Self { open: Mutex::new(VecDeque::new()), max: max.max(1), per_key: per_key.max(1) }
    }

    fn open_list(&self) -> std::sync::MutexGuard<'_, VecDeque<Open>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds `statement` for `owner`; its handle (random, so one client
    /// cannot guess another's).
    pub fn open(&self, owner: Owner, statement: Prepared) -> Vec<u8> {
        let id = uuid::Uuid::new_v4();
        let mut open = self.open_list();
        while owner.is_some() && open.iter().filter(|o| o.owner == owner).count() >= self.per_key {
            let Some(oldest) = open.iter().position(|o| o.owner == owner) else { break };
            open.remove(oldest);
            metrics::counter!("k2_flight_prepared_closed_total", "reason" => "key_quota").increment(1);
        }
        while open.len() >= self.max {
            let Some(oldest) = oldest_of_largest(&open) else { break };
            open.remove(oldest);
            metrics::counter!("k2_flight_prepared_closed_total", "reason" => "bound").increment(1);
        }
        open.push_back(Open { id, owner, statement });
        metrics::gauge!("k2_flight_prepared_statements").set(open.len() as f64);
        id.as_bytes().to_vec()
    }

    pub fn get(&self, owner: &Owner, handle: &[u8]) -> Option<Prepared> {
        let id = uuid::Uuid::from_slice(handle).ok()?;
        let open = self.open_list();
        open.iter().find(|o| o.id == id && o.owner == *owner).map(|o| o.statement.clone())
    }

    /// Binds `params`; false when the handle is not open (for `owner`).
    pub fn bind(&self, owner: &Owner, handle: &[u8], params: Vec<ScalarValue>) -> bool {
        let Ok(id) = uuid::Uuid::from_slice(handle) else { return false };
        let mut open = self.open_list();
        match open.iter_mut().find(|o| o.id == id && o.owner == *owner) {
            Some(o) => {
                o.statement.params = Some(params);
                true
            }
            None => false,
        }
    }

    pub fn close(&self, owner: &Owner, handle: &[u8]) {
        let Ok(id) = uuid::Uuid::from_slice(handle) else { return };
        let mut open = self.open_list();
        open.retain(|o| !(o.id == id && o.owner == *owner));
        metrics::gauge!("k2_flight_prepared_statements").set(open.len() as f64);
    }
}

/// The position of the oldest statement of the owner holding the most.
fn oldest_of_largest(open: &VecDeque<Open>) -> Option<usize> {
    let count = |owner: &Owner| open.iter().filter(|o| o.owner == *owner).count();
    let largest = open.iter().map(|o| count(&o.owner)).max()?;
    open.iter().position(|o| count(&o.owner) == largest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::params::Source;

    fn statement(sql: &str) -> Prepared {
        Prepared { sql: sql.into(), pin: Pin { source: Source::Hybrid, as_of: None }, params: None }
    }

    fn key(k: &str) -> Owner {
        Some(k.to_owned())
    }

    #[test]
    fn the_oldest_is_closed_past_the_bound_and_binding_sticks() {
        let held = PreparedStatements::new(2, 2);
        let a = held.open(None, statement("SELECT 1"));
        let b = held.open(None, statement("SELECT 2"));
        assert!(held.bind(&None, &b, vec![ScalarValue::Int64(Some(7))]));
        let c = held.open(None, statement("SELECT 3"));
        assert!(held.get(&None, &a).is_none(), "the oldest went first");
        assert_eq!(held.get(&None, &b).unwrap().params, Some(vec![ScalarValue::Int64(Some(7))]));
        assert_eq!(held.get(&None, &c).unwrap().sql, "SELECT 3");
        held.close(&None, &b);
        assert!(held.get(&None, &b).is_none());
        assert!(!held.bind(&None, &b, vec![]), "a closed handle binds nothing");
        assert!(held.get(&None, b"not a handle").is_none());
    }

    #[test]
    fn a_key_past_its_quota_closes_its_own_and_never_anothers() {
        let held = PreparedStatements::new(10, 3);
        let mine = held.open(key("a"), statement("SELECT 1"));
        let theirs: Vec<Vec<u8>> = (0..20).map(|i| held.open(key("b"), statement(&format!("SELECT {i}")))).collect();
        assert!(held.get(&key("a"), &mine).is_some(), "b's statements closed a's");
        let open: Vec<_> = theirs.iter().filter(|h| held.get(&key("b"), h).is_some()).collect();
        assert_eq!(open.len(), 3, "b holds its quota");
        assert!(held.get(&key("b"), &theirs[19]).is_some(), "b's newest stays");
        // A statement answers only to its key.
        assert!(held.get(&key("b"), &mine).is_none());
        assert!(!held.bind(&key("b"), &mine, vec![]));
        held.close(&key("b"), &mine);
        assert!(held.get(&key("a"), &mine).is_some(), "another key cannot close it");
    }

    #[test]
    fn without_keys_only_the_bound_applies() {
        let held = PreparedStatements::new(4, 2);
        let handles: Vec<Vec<u8>> = (0..5).map(|i| held.open(None, statement(&format!("SELECT {i}")))).collect();
        let open = handles.iter().filter(|h| held.get(&None, h).is_some()).count();
        assert_eq!(open, 4, "flight.max_prepared, not the per-key quota");
        assert!(held.get(&None, &handles[0]).is_none(), "the oldest went");
    }

    #[test]
    fn past_the_bound_the_largest_holder_gives_way() {
        let held = PreparedStatements::new(4, 3);
        let a = held.open(key("a"), statement("SELECT 1"));
        let b: Vec<Vec<u8>> = (0..3).map(|_| held.open(key("b"), statement("SELECT 2"))).collect();
        let c = held.open(key("c"), statement("SELECT 3"));
        assert!(held.get(&key("a"), &a).is_some(), "a holds one: b holds the most");
        assert!(held.get(&key("b"), &b[0]).is_none(), "b's oldest went");
        assert!(held.get(&key("c"), &c).is_some());
    }
}
