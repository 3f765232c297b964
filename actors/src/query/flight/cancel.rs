//! Statements running now, by the ticket they were fetched with, so a
//! client can end one: `CancelFlightInfo` (and the older `CancelQuery`)
//! name the `FlightInfo` whose tickets to stop. A statement's ticket is
//! unique to its `GetFlightInfo` (it carries a nonce); a prepared
//! statement's is its handle, so a cancel ends every execution of it
//! running then. A cancelled statement ends with an error naming the
//! cancel (never looking complete) and frees its turn. A statement's ticket
//! cancelled before its `DoGet` starts is remembered (the latest few), and
//! that `DoGet` is refused; a prepared statement's is not (its handle runs
//! again after). A registration ends when its guard drops, however the
//! `DoGet` ends.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arrow_flight::{CancelStatus, FlightInfo};
use tokio::sync::Notify;

/// Tickets cancelled before they ran, kept at most.
const REMEMBERED: usize = 1024;

#[derive(Default)]
pub struct Runs {
    state: Mutex<State>,
    next: AtomicU64,
}

#[derive(Default)]
struct State {
    running: HashMap<Vec<u8>, Vec<(u64, Arc<Notify>)>>,
    cancelled_early: VecDeque<Vec<u8>>,
}

/// One statement's registration, ended when dropped; its signal fires on
/// a cancel.
pub struct Registered {
    runs: Arc<Runs>,
    ticket: Vec<u8>,
    id: u64,
    pub cancel: Arc<Notify>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.runs.ended(&self.ticket, self.id);
    }
}

impl Runs {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A statement fetched with `ticket` starts; `None` when the ticket was
    /// cancelled before it ran.
    pub fn start(self: &Arc<Self>, ticket: &[u8]) -> Option<Registered> {
        let mut state = self.state();
        if let Some(i) = state.cancelled_early.iter().position(|t| t == ticket) {
            state.cancelled_early.remove(i);
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let cancel = Arc::new(Notify::new());
        state.running.entry(ticket.to_vec()).or_default().push((id, cancel.clone()));
        Some(Registered { runs: self.clone(), ticket: ticket.to_vec(), id, cancel })
    }

    /// The statement `id` fetched with `ticket` ended.
    fn ended(&self, ticket: &[u8], id: u64) {
        let mut state = self.state();
        if let Some(runs) = state.running.get_mut(ticket) {
            runs.retain(|(i, _)| *i != id);
            if runs.is_empty() {
                state.running.remove(ticket);
            }
        }
    }

    /// Cancels every statement running with one of `info`'s tickets; a
    /// ticket not running for which `once` holds (it names one execution)
    /// is refused when it comes. NOT_CANCELLABLE when nothing was.
    pub fn cancel(&self, info: &FlightInfo, once: impl Fn(&[u8]) -> bool) -> CancelStatus {
        let mut state = self.state();
        let mut cancelled = false;
        for ticket in info.endpoint.iter().filter_map(|e| e.ticket.as_ref()).map(|t| t.ticket.as_ref()) {
            match state.running.remove(ticket) {
                Some(runs) => runs.iter().for_each(|(_, cancel)| cancel.notify_one()),
                None if once(ticket) => {
                    if state.cancelled_early.len() == REMEMBERED {
                        state.cancelled_early.pop_front();
                    }
                    state.cancelled_early.push_back(ticket.to_vec());
                }
                None => continue,
            }
            cancelled = true;
        }
        if cancelled { CancelStatus::Cancelled } else { CancelStatus::NotCancellable }
    }
}

#[cfg(test)]
mod tests {
    use arrow_flight::{FlightEndpoint, Ticket};

    use super::*;

    fn info(ticket: &[u8]) -> FlightInfo {
        FlightInfo::new().with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket.to_vec())))
    }

    #[tokio::test]
    async fn a_cancel_signals_the_running_statement_and_refuses_one_not_started() {
        let runs = Arc::new(Runs::default());
        let once = |_: &[u8]| true;
        let running = runs.start(b"a").expect("starts");
        assert_eq!(runs.cancel(&info(b"a"), once), CancelStatus::Cancelled);
        // The permit is kept until the statement waits for it.
        tokio::time::timeout(std::time::Duration::from_secs(1), running.cancel.notified()).await.expect("signalled");
        drop(running);
        assert!(runs.state().running.is_empty(), "the guard ended it");
        assert_eq!(runs.cancel(&info(b"b"), once), CancelStatus::Cancelled);
        assert!(runs.start(b"b").is_none(), "cancelled before it ran");
        assert!(runs.start(b"b").is_some(), "refused once");
        assert_eq!(runs.cancel(&FlightInfo::new(), once), CancelStatus::NotCancellable);
        // A prepared statement's handle is not held against its next run.
        assert_eq!(runs.cancel(&info(b"handle"), |_| false), CancelStatus::NotCancellable);
        assert!(runs.start(b"handle").is_some());
    }
}
