//! Where the pipeline ends, for now: a sink trait with an in-memory sink for
//! tests and a counting sink for benchmarks. (Iceberg and Kafka sinks come
//! with their issues.)

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

/// The end of the pipeline. `write` takes ownership of a batch.
pub trait Sink: Send + 'static {
    fn name(&self) -> &'static str;
    fn write(&mut self, events: Vec<MarketEvent>) -> Result<(), SinkError>;
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

    fn write(&mut self, events: Vec<MarketEvent>) -> Result<(), SinkError> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).extend(events);
        Ok(())
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

    fn write(&mut self, events: Vec<MarketEvent>) -> Result<(), SinkError> {
        let trades = events.iter().filter(|e| e.is_trade()).count() as u64;
        self.counts.trades.fetch_add(trades, Ordering::Relaxed);
        self.counts.quotes.fetch_add(events.len() as u64 - trades, Ordering::Relaxed);
        Ok(())
    }
}
