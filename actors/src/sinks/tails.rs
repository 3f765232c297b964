//! The embedded product's sink: accepted rows go to the tables' tails,
//! where they are queryable at once and the flusher commits them. From
//! degradation level 3, and until what was spilled is replayed, batches go
//! to the spill on disk instead (order kept).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k2_core::{MarketEvent, QuoteV2, TradeV2};
use tokio::sync::Notify;

use super::spill::Spill;
use super::{Pending, Sink, SinkError};
use crate::lake::Tails;
use crate::runtime::degradation::{Level, LevelHandle};
use crate::runtime::errors::Retry;
use crate::state::shared::SharedState;

/// The last stage's sink in the embedded product: rows go to the tails.
pub struct TailSink {
    tails: Tails,
    max_rows: usize,
    /// Wakes the flusher when a tail is full (it also looks on a timer).
    full: Arc<Notify>,
    trades: Vec<TradeV2>,
    quotes: Vec<QuoteV2>,
    /// From degradation level 3, and until what was spilled is replayed,
    /// batches go to disk instead of the tails (order kept).
    spill: Option<(Arc<Spill>, LevelHandle)>,
    /// The spill's disk refused the last batch sent to it: logged once per
    /// outage (a full disk refuses every batch, hundreds a second, and the
    /// log may be on the same disk); each refusal is still counted.
    refusing: Arc<AtomicBool>,
    /// A batch source (a file load): past this many rows not yet committed
    /// the sink waits for a commit instead (the source waits with it).
    wait_above: Option<usize>,
}

impl TailSink {
    pub fn new(tails: Tails, max_rows: usize, full: Arc<Notify>) -> Self {
        Self {
            tails,
            max_rows,
            full,
            trades: Vec::new(),
            quotes: Vec::new(),
            spill: None,
            refusing: Arc::default(),
            wait_above: None,
        }
    }

    /// For a batch source: never spills; holds the pipeline while two
    /// flushes' worth of rows wait to be committed, so a file of any size
    /// loads at the flusher's pace with bounded memory.
    pub fn paced(mut self) -> Self {
        self.spill = None;
        self.wait_above = Some(self.max_rows.saturating_mul(2).max(1));
        self
    }

    pub fn with_spill(mut self, spill: Arc<Spill>, level: LevelHandle) -> Self {
        self.spill = Some((spill, level));
        self
    }
}

impl Sink for TailSink {
    fn name(&self) -> &'static str {
        "iceberg-tail"
    }

    /// Rows are durable once committed: the flusher settles them then.
    fn settle_with(&mut self, settle: Arc<SharedState>) -> bool {
        let _ = self.tails.settle.set(settle);
        true
    }

    fn write(&mut self, events: Vec<MarketEvent>) -> Result<Option<Pending>, SinkError> {
        if let Some((spill, level)) = &self.spill
            && (level.get() >= Level::Aggressive || !spill.is_empty())
        {
            let (spill, tails, refusing) = (spill.clone(), self.tails.clone(), self.refusing.clone());
            return Ok(Some(Box::pin(async move {
                let events = Arc::new(events);
                let (s, e) = (spill.clone(), events.clone());
                let written = tokio::task::spawn_blocking(move || s.append(&e)).await;
                if matches!(written, Ok(Ok(()))) {
                    if refusing.swap(false, Ordering::Relaxed) {
                        tracing::warn!("the spill takes batches again");
                    }
                } else {
                    // The disk refused: hold the batch in memory rather than
                    // lose it.
                    if !refusing.swap(true, Ordering::Relaxed) {
                        tracing::error!(
                            result = ?written.map(|r| r.err()),
                            "spill write failed; rows kept in the tails (until it takes batches again, further \
                             failures are only counted in k2_spill_write_failures_total)"
                        );
                    }
                    metrics::counter!("k2_spill_write_failures_total").increment(1);
                    tails.append(Arc::unwrap_or_clone(events));
                }
                Ok(())
            })));
        }
        for e in events {
            match e {
                MarketEvent::Trade(t) => self.trades.push(t),
                MarketEvent::Quote(q) => self.quotes.push(q),
            }
        }
        let err = |e: arrow::error::ArrowError| SinkError {
            sink: "iceberg-tail",
            reason: e.to_string(),
            retry: Retry::Permanent,
        };
        // Both tables get their rows even when one refuses some.
        let trades = self.tails.trades.append(std::mem::take(&mut self.trades));
        let quotes = self.tails.quotes.append(std::mem::take(&mut self.quotes));
        if [&trades, &quotes].iter().any(|r| r.as_ref().is_ok_and(|&n| n >= self.max_rows)) {
            self.full.notify_one();
        }
        trades.and(quotes).map_err(err)?;
        let Some(limit) = self.wait_above.filter(|limit| self.tails.waiting_rows() >= *limit) else {
            return Ok(None);
        };
        let (tails, full) = (self.tails.clone(), self.full.clone());
        Ok(Some(Box::pin(async move {
            while tails.waiting_rows() >= limit {
                full.notify_one();
                // A commit may land between the check and the wait: look
                // again after a while in any case.
                tokio::select! {
                    () = tails.trades.next_commit() => {}
                    () = tails.quotes.next_commit() => {}
                    () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                }
            }
            Ok(())
        })))
    }
}
