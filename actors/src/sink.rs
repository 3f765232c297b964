//! Where the pipeline ends: a sink trait, with an in-memory sink for tests
//! and a counting sink for benchmarks. The product's sinks are the Iceberg
//! tails ([`crate::flusher::TailSink`]) and Kafka ([`crate::kafka::KafkaSink`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use k2_core::MarketEvent;
use thiserror::Error;

#[derive(Debug, Error)]
#[error("sink {sink}: {reason}")]
pub struct SinkError {
    pub sink: &'static str,
    pub reason: String,
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
    fn settle_with(&mut self, _settle: std::sync::Arc<crate::shared_state::SharedState>) -> bool {
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

/// Counts trades and quotes and drops them (benchmarks, `k2 load` until the
/// Iceberg sink exists).
#[derive(Debug, Clone, Default)]
pub struct CountingSink {
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
pub struct Counts {
    pub trades: AtomicU64,
    pub quotes: AtomicU64,
}

impl CountingSink {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn counts(&self) -> (u64, u64) {
        (self.counts.trades.load(Ordering::Relaxed), self.counts.quotes.load(Ordering::Relaxed))
    }
}

impl Sink for CountingSink {
    fn name(&self) -> &'static str {
        "counting"
    }

    fn write(&mut self, events: Vec<MarketEvent>) -> Result<Option<Pending>, SinkError> {
        let trades = events.iter().filter(|e| e.is_trade()).count() as u64;
        self.counts.trades.fetch_add(trades, Ordering::Relaxed);
        self.counts.quotes.fetch_add(events.len() as u64 - trades, Ordering::Relaxed);
        Ok(None)
    }
}
