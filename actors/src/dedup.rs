//! The deduplicator actor: drops events whose message id was seen within the
//! window. The state sits behind [`DedupStore`] so a shared store (Redis)
//! can take the in-memory window's place.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use k2_core::MarketEvent;
use k2_core::transform::dedup::DedupWindow;

use crate::health::{Link, forward};
use crate::messages::{Drain, EventBatch};
use crate::shared_state::SharedState;
use crate::sink_actor::SinkActor;
use crate::supervision::{Supervise, Supervision, guarded, supervised};

pub const NAME: &str = "dedup";

/// Where seen message ids are kept.
pub trait DedupStore: Send + 'static {
    /// For each event, true when it is new (and now remembered), false when
    /// it is a duplicate.
    fn check(&mut self, events: &[MarketEvent], keep: &mut Vec<bool>);

    /// Remembers ids accepted before this process started (read back from
    /// the tables), oldest first, so that a restart does not accept them
    /// again within the window.
    fn remember(&mut self, ids: &mut dyn Iterator<Item = uuid::Uuid>);
}

/// The in-memory window (see `k2_core::transform::dedup` for its eviction rule).
pub struct MemoryStore {
    window: DedupWindow,
}

impl MemoryStore {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self { window: DedupWindow::new(window, capacity) }
    }
}

impl DedupStore for MemoryStore {
    fn check(&mut self, events: &[MarketEvent], keep: &mut Vec<bool>) {
        let now = Instant::now();
        keep.clear();
        keep.extend(events.iter().map(|e| self.window.insert(e.message_id(), now)));
        metrics::gauge!("k2_dedup_window_ids").set(self.window.len() as f64);
        metrics::gauge!("k2_dedup_evicted_early_total").set(self.window.evicted_early() as f64);
    }

    /// Each id gets a full window from now: an id is kept up to one window
    /// longer than needed, never shorter.
    fn remember(&mut self, ids: &mut dyn Iterator<Item = uuid::Uuid>) {
        let now = Instant::now();
        for id in ids {
            self.window.remember(id, now);
        }
        metrics::gauge!("k2_dedup_window_ids").set(self.window.len() as f64);
    }
}

pub struct DedupActor {
    store: Box<dyn DedupStore>,
    /// Redis, shared with other instances: an event this instance has not
    /// seen goes on only if no instance took it before.
    shared: Option<Arc<SharedState>>,
    next: Link<SinkActor>,
    supervision: Supervision,
    keep: Vec<bool>,
}

impl DedupActor {
    pub fn new(store: Box<dyn DedupStore>, next: Link<SinkActor>, supervision: Supervision) -> Self {
        Self { store, shared: None, next, supervision, keep: Vec::new() }
    }

    pub fn with_shared(mut self, shared: Option<Arc<SharedState>>) -> Self {
        self.shared = shared;
        self
    }

    fn process(&mut self, events: Vec<MarketEvent>) -> Vec<MarketEvent> {
        self.store.check(&events, &mut self.keep);
        let mut kept = Vec::with_capacity(events.len());
        // Duplicates per exchange in this batch; an intentional drop, so it is
        // counted, not logged per event.
        let mut dropped: Vec<(compact_str::CompactString, u64)> = Vec::new();
        for (event, keep) in events.into_iter().zip(self.keep.iter()) {
            if *keep {
                kept.push(event);
                continue;
            }
            match dropped.iter_mut().find(|(e, _)| e == event.exchange()) {
                Some((_, n)) => *n += 1,
                None => dropped.push((event.exchange().into(), 1)),
            }
        }
        count_duplicates(dropped);
        kept
    }
}

fn count_duplicates(dropped: Vec<(compact_str::CompactString, u64)>) {
    for (exchange, n) in dropped {
        metrics::counter!("k2_duplicates_total", "exchange" => exchange.to_string()).increment(n);
    }
}

/// Keeps the events another instance has not taken (per Redis); when Redis
/// cannot answer, all of them (this instance's memory has already checked).
async fn claim_shared(shared: Arc<SharedState>, events: Vec<MarketEvent>) -> Vec<MarketEvent> {
    let ids: Vec<(&str, uuid::Uuid)> = events.iter().map(|e| (e.exchange(), e.message_id())).collect();
    let claimed = match shared.claim(&ids).await {
        Ok(c) => c,
        Err(_) => return events,
    };
    drop(ids);
    let mut dropped: Vec<(compact_str::CompactString, u64)> = Vec::new();
    let kept = events
        .into_iter()
        .zip(claimed)
        .filter_map(|(event, mine)| {
            if mine {
                return Some(event);
            }
            match dropped.iter_mut().find(|(e, _)| e == event.exchange()) {
                Some((_, n)) => *n += 1,
                None => dropped.push((event.exchange().into(), 1)),
            }
            None
        })
        .collect();
    count_duplicates(dropped);
    kept
}

impl Actor for DedupActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.supervision.started();
    }
}

supervised!(DedupActor);

impl Supervise for DedupActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    /// The window is kept: forgetting it would let duplicates through.
    fn reset(&mut self) {
        self.keep.clear();
    }
}

impl Handler<EventBatch> for DedupActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, batch: EventBatch, ctx: &mut Context<Self>) -> Self::Result {
        self.supervision.probe().received(batch.events.len());
        let n = batch.events.len();
        let Some(kept) = guarded(self, ctx, |act| Ok(act.process(batch.events))) else {
            metrics::counter!("k2_dead_letter_events_total", "actor" => NAME).increment(n as u64);
            return AtomicResponse::new(Box::pin(async {}.into_actor(self)));
        };
        if kept.is_empty() {
            return AtomicResponse::new(Box::pin(async {}.into_actor(self)));
        }
        let Some(shared) = self.shared.clone() else {
            return forward(self, &self.next, EventBatch { events: kept });
        };
        let next = self.next.clone();
        // Held like `forward`: the next batch waits for this one's answer,
        // so order is kept.
        AtomicResponse::new(Box::pin(
            async move {
                let kept = claim_shared(shared, kept).await;
                if !kept.is_empty() && next.send(EventBatch { events: kept }).await.is_err() {
                    tracing::error!("the sink stage is gone; message dropped");
                }
            }
            .into_actor(self),
        ))
    }
}

impl Handler<Drain> for DedupActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Drain, _: &mut Context<Self>) -> Self::Result {
        self.supervision.probe().received(0);
        forward(self, &self.next, msg)
    }
}
