//! The deduplicator actor: drops events whose message id was seen within the
//! window. The state sits behind [`DedupStore`] so a shared store (Redis)
//! can take the in-memory window's place.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use k2_core::MarketEvent;
use k2_core::transform::dedup::DedupWindow;

use crate::runtime::health::{Link, forward};
use crate::runtime::messages::{Drain, EventBatch};
use crate::runtime::supervision::{Supervise, Supervision, guarded, supervised};
use crate::sinks::actor::SinkActor;
use crate::state::dead_letters::{DeadLetters, Kind};
use crate::state::shared::{Claim, SharedState};

pub const NAME: &str = "dedup";

/// How often ids a live instance holds are asked about again.
const RECHECK: Duration = Duration::from_millis(500);

/// Events held for other instances' claims, at most: past it the oldest go
/// on (a possible duplicate, never a loss) so a stuck peer cannot exhaust
/// this one's memory.
const DEFERRED_MAX: usize = 200_000;

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
    /// Early evictions already added to `k2_dedup_evicted_early_total`.
    reported: u64,
}

impl MemoryStore {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self { window: DedupWindow::new(window, capacity), reported: 0 }
    }

    /// Exports the window's size, and its early evictions since the last
    /// report as a counter's increment: a counter, not a gauge set to the
    /// window's own count, so that several windows in one process add up and
    /// `rate()` works across a window replaced by a new one.
    fn report(&mut self) {
        metrics::gauge!("k2_dedup_window_ids").set(self.window.len() as f64);
        let evicted = self.window.evicted_early();
        metrics::counter!("k2_dedup_evicted_early_total").increment(evicted.saturating_sub(self.reported));
        self.reported = evicted;
    }
}

impl DedupStore for MemoryStore {
    fn check(&mut self, events: &[MarketEvent], keep: &mut Vec<bool>) {
        let now = Instant::now();
        keep.clear();
        keep.extend(events.iter().map(|e| self.window.insert(e.message_id(), now)));
        self.report();
    }

    /// Each id gets a full window from now: an id is kept up to one window
    /// longer than needed, never shorter.
    fn remember(&mut self, ids: &mut dyn Iterator<Item = uuid::Uuid>) {
        let now = Instant::now();
        for id in ids {
            self.window.remember(id, now);
        }
        self.report();
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
    /// Events another live instance has claimed but not made durable: if it
    /// dies first they are this instance's to pass on, so they wait here
    /// and are asked about again.
    deferred: Vec<MarketEvent>,
    rechecking: bool,
    /// Every duplicate dropped here, for a batch load's report.
    duplicates: Arc<AtomicU64>,
    /// Where a batch this stage fails on is kept (none in unit tests).
    dead_letters: Option<DeadLetters>,
}

impl DedupActor {
    pub fn new(store: Box<dyn DedupStore>, next: Link<SinkActor>, supervision: Supervision) -> Self {
        let duplicates = Arc::new(AtomicU64::new(0));
        Self {
            store,
            shared: None,
            next,
            supervision,
            keep: Vec::new(),
            deferred: Vec::new(),
            rechecking: false,
            duplicates,
            dead_letters: None,
        }
    }

    pub fn with_dead_letters(mut self, dead_letters: DeadLetters) -> Self {
        dead_letters.announce(NAME, Kind::Events);
        self.dead_letters = Some(dead_letters);
        self
    }

    /// Counts every duplicate dropped into `duplicates` as well.
    pub fn counting(mut self, duplicates: Arc<AtomicU64>) -> Self {
        self.duplicates = duplicates;
        self
    }

    pub fn with_shared(mut self, shared: Option<Arc<SharedState>>) -> Self {
        self.shared = shared;
        self
    }

    /// Splits `events` by the store's verdict (see [`DedupStore::check`],
    /// which must already have filled `self.keep`).
    fn split(&mut self, events: Vec<MarketEvent>) -> Vec<MarketEvent> {
        let mut kept = Vec::with_capacity(events.len());
        // Duplicates per exchange in this batch; an intentional drop, so it is
        // counted, not logged per event.
        let mut dropped: Vec<(compact_str::CompactString, u64)> = Vec::new();
        for (event, keep) in events.into_iter().zip(self.keep.iter()) {
            if *keep {
                kept.push(event);
                continue;
            }
            tally(&mut dropped, event.exchange());
        }
        count_duplicates(dropped, &self.duplicates);
        kept
    }
}

/// One more duplicate of `exchange` in this batch (a batch spans few
/// exchanges, so a short list).
fn tally(dropped: &mut Vec<(compact_str::CompactString, u64)>, exchange: &str) {
    match dropped.iter_mut().find(|(e, _)| e == exchange) {
        Some((_, n)) => *n += 1,
        None => dropped.push((exchange.into(), 1)),
    }
}

fn count_duplicates(dropped: Vec<(compact_str::CompactString, u64)>, total: &AtomicU64) {
    for (exchange, n) in dropped {
        total.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("k2_duplicates_total", "exchange" => exchange.to_string()).increment(n);
    }
}

/// Splits `events` by Redis's answer: those this instance owns now, and
/// those a live instance holds (to ask about again). Duplicates are counted
/// and dropped. When Redis cannot answer, all are owned (this instance's
/// memory has already checked them).
async fn claim_shared(
    shared: Arc<SharedState>,
    events: Vec<MarketEvent>,
    duplicates: Arc<AtomicU64>,
) -> (Vec<MarketEvent>, Vec<MarketEvent>) {
    let ids: Vec<(&str, uuid::Uuid)> = events.iter().map(|e| (e.exchange(), e.message_id())).collect();
    let claimed = match shared.claim(&ids).await {
        Ok(c) => c,
        Err(_) => return (events, Vec::new()),
    };
    drop(ids);
    let mut dropped: Vec<(compact_str::CompactString, u64)> = Vec::new();
    let mut kept = Vec::with_capacity(events.len());
    let mut pending = Vec::new();
    for (event, claim) in events.into_iter().zip(claimed) {
        match claim {
            Claim::Mine => kept.push(event),
            Claim::Pending => pending.push(event),
            Claim::Taken => tally(&mut dropped, event.exchange()),
        }
    }
    count_duplicates(dropped, &duplicates);
    (kept, pending)
}

impl DedupActor {
    fn defer(&mut self, mut pending: Vec<MarketEvent>) -> Vec<MarketEvent> {
        self.deferred.append(&mut pending);
        let excess = self.deferred.len().saturating_sub(DEFERRED_MAX);
        let released: Vec<MarketEvent> = self.deferred.drain(..excess).collect();
        if !released.is_empty() {
            metrics::counter!("k2_dedup_deferred_released_total").increment(released.len() as u64);
            tracing::warn!(
                events = released.len(),
                "too many events wait on other instances' claims; the oldest go on"
            );
        }
        metrics::gauge!("k2_dedup_deferred").set(self.deferred.len() as f64);
        released
    }

    /// Claims `events` in Redis, passes on what is this instance's (in
    /// order, holding the stage like `forward`), keeps what is pending.
    fn claim_and_forward(&mut self, shared: Arc<SharedState>, events: Vec<MarketEvent>) -> AtomicResponse<Self, ()> {
        let duplicates = self.duplicates.clone();
        AtomicResponse::new(Box::pin(
            async move { claim_shared(shared, events, duplicates).await }.into_actor(self).then(
                |(mut kept, pending), act, _| {
                    kept.extend(act.defer(pending));
                    let next = act.next.clone();
                    async move {
                        if !kept.is_empty() && next.send(EventBatch { events: kept }).await.is_err() {
                            tracing::error!("the sink stage is gone; message dropped");
                        }
                    }
                    .into_actor(act)
                },
            ),
        ))
    }
}

/// Asks Redis again about the deferred events.
#[derive(Message)]
#[rtype(result = "()")]
struct Recheck;

impl Handler<Recheck> for DedupActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: Recheck, _: &mut Context<Self>) -> Self::Result {
        self.rechecking = false;
        let events = std::mem::take(&mut self.deferred);
        match self.shared.clone() {
            Some(shared) if !events.is_empty() => self.claim_and_forward(shared, events),
            _ => AtomicResponse::new(Box::pin(async {}.into_actor(self))),
        }
    }
}

impl Actor for DedupActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.supervision.started();
        if self.shared.is_some() {
            ctx.run_interval(RECHECK, |act, ctx| {
                if !act.deferred.is_empty() && !act.rechecking {
                    act.rechecking = true;
                    ctx.notify(Recheck);
                }
            });
        }
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
        self.rechecking = false;
    }
}

impl Handler<EventBatch> for DedupActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, batch: EventBatch, ctx: &mut Context<Self>) -> Self::Result {
        self.supervision.probe().received(batch.events.len());
        // The check is the part that can fail; the batch stays here meanwhile,
        // so a failure keeps it whole for the dead letters.
        if let Err(reason) = guarded(self, ctx, |act| {
            act.store.check(&batch.events, &mut act.keep);
            Ok(())
        }) {
            metrics::counter!("k2_dead_letter_events_total", "actor" => NAME).increment(batch.events.len() as u64);
            if let Some(store) = &self.dead_letters {
                store.store_events(NAME, &reason, &batch.events);
            }
            return AtomicResponse::new(Box::pin(async {}.into_actor(self)));
        }
        let kept = self.split(batch.events);
        if kept.is_empty() {
            return AtomicResponse::new(Box::pin(async {}.into_actor(self)));
        }
        let Some(shared) = self.shared.clone() else {
            return forward(self, &self.next, EventBatch { events: kept });
        };
        self.claim_and_forward(shared, kept)
    }
}

impl Handler<Drain> for DedupActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Drain, _: &mut Context<Self>) -> Self::Result {
        self.supervision.probe().received(0);
        match (self.shared.clone(), msg.settle) {
            (Some(shared), Some(until)) if !self.deferred.is_empty() => self.settle_then_forward(shared, until, msg),
            _ => forward(self, &self.next, msg),
        }
    }
}

impl DedupActor {
    /// A stop's drain: the events held for other instances' claims would
    /// die with this process while their owner may already be dead (its
    /// lease not yet run out), and nobody else holds them. So they are
    /// asked about until each is durable elsewhere or this instance's, and
    /// whatever is still held at `until` goes on as a possible second copy
    /// (the flushers drop it), never a loss. The drain follows them.
    fn settle_then_forward(
        &mut self,
        shared: Arc<SharedState>,
        until: Instant,
        msg: Drain,
    ) -> AtomicResponse<Self, ()> {
        let mut events = std::mem::take(&mut self.deferred);
        metrics::gauge!("k2_dedup_deferred").set(0.0);
        let (duplicates, next) = (self.duplicates.clone(), self.next.clone());
        tracing::info!(events = events.len(), "stopping: waiting for the claims other instances hold on held events");
        AtomicResponse::new(Box::pin(
            async move {
                loop {
                    let (kept, pending) = claim_shared(shared.clone(), events, duplicates.clone()).await;
                    if !kept.is_empty() && next.send(EventBatch { events: kept }).await.is_err() {
                        tracing::error!("the sink stage is gone; message dropped");
                    }
                    if pending.is_empty() {
                        break;
                    }
                    if Instant::now() >= until {
                        metrics::counter!("k2_dedup_deferred_released_total").increment(pending.len() as u64);
                        tracing::warn!(
                            events = pending.len(),
                            "stopping: claims of live instances did not settle in time; their events go on as possible second copies"
                        );
                        if next.send(EventBatch { events: pending }).await.is_err() {
                            tracing::error!("the sink stage is gone; message dropped");
                        }
                        break;
                    }
                    events = pending;
                    tokio::time::sleep(RECHECK).await;
                }
                if next.send(msg).await.is_err() {
                    tracing::error!("the sink stage is gone; the drain is dropped");
                }
            }
            .into_actor(self),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k2_core::source::binance::{BinanceParser, Frame};

    fn trades(ids: std::ops::RangeInclusive<u64>) -> Vec<MarketEvent> {
        let mut p = BinanceParser::default();
        ids.map(|t| {
            let f = format!(
                r#"{{"e":"trade","E":1,"s":"BTCUSDT","t":{t},"p":"1.5","q":"2","T":1722766102789,"m":true,"M":true}}"#
            );
            match p.parse(f.as_bytes(), k2_core::Timestamp::now()).unwrap() {
                Frame::Event(e) => e,
                other => panic!("{other:?}"),
            }
        })
        .collect()
    }

    fn evicted_early_total() -> f64 {
        let text = crate::runtime::telemetry::render();
        let line = text.lines().find(|l| l.starts_with("k2_dedup_evicted_early_total ")).unwrap_or_default();
        line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0)
    }

    /// A counter: each early eviction adds 1 once, however often the window
    /// reports, and a second window's evictions add to the first's.
    #[test]
    fn early_evictions_are_counted_once_each() {
        assert!(crate::runtime::telemetry::prometheus().is_some());
        let before = evicted_early_total();
        let mut keep = Vec::new();
        let mut store = MemoryStore::new(Duration::from_secs(60), 2);
        store.check(&trades(1..=5), &mut keep);
        // Reported again with nothing new evicted (4 and 5 are duplicates).
        store.check(&trades(4..=5), &mut keep);
        assert_eq!(keep, [false, false]);
        assert_eq!(evicted_early_total() - before, 3.0);
        let mut other = MemoryStore::new(Duration::from_secs(60), 2);
        other.check(&trades(11..=14), &mut keep);
        store.check(&trades(6..=6), &mut keep);
        assert_eq!(evicted_early_total() - before, 6.0);
    }
}
