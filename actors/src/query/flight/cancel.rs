//! Statements running now, by the ticket they were fetched with, so a
//! client can end one: `CancelFlightInfo` (and the older `CancelQuery`)
//! name the `FlightInfo` whose tickets to stop. A statement's ticket is
//! unique to its `GetFlightInfo` (it carries a nonce); a prepared
//! statement's is its handle, so a cancel ends every execution of it
//! running then. A cancelled statement ends with an error naming the
//! cancel (never looking complete) and frees its turn. A ticket cancelled before its `DoGet`
//! starts is remembered (the latest few), and that `DoGet` is refused.

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

/// One statement's registration; its signal fires on a cancel.
pub struct Registered {
    pub id: u64,
    pub cancel: Arc<Notify>,
}

impl Runs {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A statement fetched with `ticket` starts; `None` when the ticket was
    /// cancelled before it ran.
    pub fn start(&self, ticket: &[u8]) -> Option<Registered> {
        let mut state = self.state();
        if let Some(i) = state.cancelled_early.iter().position(|t| t == ticket) {
            state.cancelled_early.remove(i);
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let cancel = Arc::new(Notify::new());
        state.running.entry(ticket.to_vec()).or_default().push((id, cancel.clone()));
        Some(Registered { id, cancel })
    }

    /// The statement `id` fetched with `ticket` ended.
    pub fn ended(&self, ticket: &[u8], id: u64) {
        let mut state = self.state();
        if let Some(runs) = state.running.get_mut(ticket) {
            runs.retain(|(i, _)| *i != id);
            if runs.is_empty() {
                state.running.remove(ticket);
            }
        }
    }

    /// Cancels every statement running with one of `info`'s tickets; a
    /// ticket not running yet is refused when it comes.
    pub fn cancel(&self, info: &FlightInfo) -> CancelStatus {
        let tickets: Vec<&[u8]> =
            info.endpoint.iter().filter_map(|e| e.ticket.as_ref()).map(|t| t.ticket.as_ref()).collect();
        if tickets.is_empty() {
            return CancelStatus::NotCancellable;
        }
        let mut state = self.state();
        for ticket in tickets {
            match state.running.remove(ticket) {
                Some(runs) => runs.iter().for_each(|(_, cancel)| cancel.notify_one()),
                None => {
                    if state.cancelled_early.len() == REMEMBERED {
                        state.cancelled_early.pop_front();
                    }
                    state.cancelled_early.push_back(ticket.to_vec());
                }
            }
        }
        CancelStatus::Cancelled
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
        let runs = Runs::default();
        let running = runs.start(b"a").expect("starts");
        assert_eq!(runs.cancel(&info(b"a")), CancelStatus::Cancelled);
        // The permit is kept until the statement waits for it.
        tokio::time::timeout(std::time::Duration::from_secs(1), running.cancel.notified()).await.expect("signalled");
        runs.ended(b"a", running.id);
        assert_eq!(runs.cancel(&info(b"b")), CancelStatus::Cancelled);
        assert!(runs.start(b"b").is_none(), "cancelled before it ran");
        assert!(runs.start(b"b").is_some(), "refused once");
        assert_eq!(runs.cancel(&FlightInfo::new()), CancelStatus::NotCancellable);
    }
}
