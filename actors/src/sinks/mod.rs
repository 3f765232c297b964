//! Where the pipeline ends. The [`Sink`] trait, and its implementations:
//!
//! - [`actor`]: the last stage, writing each batch to its sink.
//! - [`tails`]: the embedded product's sink, into the tables' tails.
//! - [`spill`]: level 3's segment files on disk, and the one way back into
//!   the tails; [`spill_replay`] is the actor that replays them.
//! - [`kafka`]: Kafka mode's sink, the idempotent producer.
//! - [`MemorySink`]: keeps every event (tests).

pub mod actor;
pub mod kafka;
pub mod spill;
pub mod spill_replay;
pub mod tails;

use std::sync::{Arc, Mutex, PoisonError};

use k2_core::MarketEvent;
use thiserror::Error;

use crate::runtime::errors::{Retry, Retryable, StageError};

#[derive(Debug, Error)]
#[error("sink {sink}: {reason}")]
pub struct SinkError {
    pub sink: &'static str,
    pub reason: String,
    pub retry: Retry,
}

impl Retryable for SinkError {
    fn retry(&self) -> Retry {
        self.retry
    }
}

/// A sink's failure fails the sink stage's batch.
impl From<SinkError> for StageError {
    fn from(e: SinkError) -> Self {
        let retry = e.retry;
        StageError::Failed(e.to_string(), retry)
    }
}

/// Work a sink has accepted but not finished. The sink stage waits for it
/// before taking its next batch, so a slow destination pushes back up the
/// pipeline. It owns what it needs (it must not borrow the sink).
pub type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SinkError>> + Send>>;

/// The end of the pipeline. `write` takes ownership of a batch.
pub trait Sink: Send + 'static {
    fn name(&self) -> &'static str;
    /// Takes a batch; `Some` when the sink needs time to finish taking it.
    fn write(&mut self, events: Vec<MarketEvent>) -> Result<Option<Pending>, SinkError>;
    /// Resolves once everything written so far has reached the destination
    /// (a drain waits for it).
    fn flush(&mut self) -> Option<Pending> {
        None
    }
    /// With shared state (Redis), what the sink makes durable must be
    /// settled there. A sink whose writes become durable later (the tails at
    /// a commit, Kafka at delivery) keeps `settle` and answers true; for the
    /// others the sink stage settles each batch once `write` has taken it.
    fn settle_with(&mut self, _settle: Arc<crate::state::shared::SharedState>) -> bool {
        false
    }
}

/// Keeps every event (tests).
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    events: Arc<Mutex<Vec<MarketEvent>>>,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything written so far.
    pub fn events(&self) -> Vec<MarketEvent> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn len(&self) -> usize {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Sink for MemorySink {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn write(&mut self, events: Vec<MarketEvent>) -> Result<Option<Pending>, SinkError> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).extend(events);
        Ok(None)
    }
}
