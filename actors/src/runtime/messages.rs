//! Messages every pipeline stage understands. Data moves in batches; control
//! is one small vocabulary.

use actix::prelude::*;
use k2_core::MarketEvent;
use tokio::sync::oneshot;

/// A batch of events moving down the pipeline, in arrival order.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct EventBatch {
    pub events: Vec<MarketEvent>,
}

/// Ask every stage to pass on what it holds; the last stage answers once the
/// whole pipeline before it has drained (mailboxes are FIFO, so everything
/// sent before the drain has been handled).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Drain {
    pub done: oneshot::Sender<()>,
    /// At a stop: events the deduplicator holds for another instance's
    /// claims are asked about until they settle, and passed on at this
    /// instant if they have not (a possible second copy, never a loss).
    /// `None`: they stay held, as between batches.
    pub settle: Option<std::time::Instant>,
}

/// Faults injected on purpose (admin endpoint, tests, drills).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message, serde::Deserialize, serde::Serialize)]
#[rtype(result = "()")]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// Panic inside the handler.
    Panic,
    /// Stop the actor as if it had finished.
    Stop,
    /// Panic inside the handler of the next batch, as a bug would: the batch
    /// goes to the dead letters (`/v1/dead-letters`).
    #[serde(rename = "panic_on_batch")]
    PanicOnBatch,
}
