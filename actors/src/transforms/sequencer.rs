//! The sequence tracker actor: classifies each trade's venue sequence number,
//! assigns `platform_sequence`, reports confirmed gaps, and passes every event
//! on at once (a gap never stalls the stream).

use std::time::{Duration, Instant};

use actix::prelude::*;
use k2_core::MarketEvent;
use k2_core::transform::sequence::{Gap, Outcome, SequenceConfig, SequenceTracker};

use crate::runtime::degradation::{Level, LevelHandle};
use crate::runtime::health::{Link, forward};
use crate::runtime::messages::{Drain, EventBatch};
use crate::runtime::supervision::{Supervise, Supervision, guarded, supervised};
use crate::state::marks::SequenceMarks;
use crate::transforms::dedup::DedupActor;

pub const NAME: &str = "sequencer";

/// A confirmed gap, for gap recovery.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct GapDetected(pub Gap);

/// What the degradation level takes away, applied here, at the first stage:
/// from SOFT, `vendor_data` (optional enrichment); from GRACEFUL, quotes of
/// symbols not in the critical list. Trades are never dropped.
#[derive(Clone, Default)]
pub struct Shedding {
    level: LevelHandle,
    critical: Vec<compact_str::CompactString>,
}

impl Shedding {
    pub fn new(level: LevelHandle, critical: &[String]) -> Self {
        Self { level, critical: critical.iter().map(|s| s.as_str().into()).collect() }
    }

    fn apply(&self, events: &mut Vec<MarketEvent>) {
        let level = self.level.get();
        if level >= Level::Soft {
            for e in events.iter_mut() {
                match e {
                    MarketEvent::Trade(t) => t.vendor_data = None,
                    MarketEvent::Quote(q) => q.vendor_data = None,
                }
            }
        }
        if level >= Level::Graceful {
            let before = events.len();
            events.retain(|e| match e {
                MarketEvent::Trade(_) => true,
                MarketEvent::Quote(q) => self.critical.iter().any(|c| c == q.symbol.as_str()),
            });
            let shed = before - events.len();
            if shed > 0 {
                metrics::counter!("k2_messages_shed_total", "reason" => "quote_of_non_critical_symbol")
                    .increment(shed as u64);
            }
        }
    }
}

pub struct SequenceActor {
    config: SequenceConfig,
    tracker: SequenceTracker,
    next: Link<DedupActor>,
    gaps_to: Option<Recipient<GapDetected>>,
    supervision: Supervision,
    gaps: Vec<Gap>,
    shedding: Shedding,
}

impl SequenceActor {
    pub fn new(
        config: SequenceConfig,
        next: Link<DedupActor>,
        gaps_to: Option<Recipient<GapDetected>>,
        supervision: Supervision,
    ) -> Self {
        Self {
            tracker: SequenceTracker::new(config.clone()),
            config,
            next,
            gaps_to,
            supervision,
            gaps: Vec::new(),
            shedding: Shedding::default(),
        }
    }

    pub fn with_shedding(mut self, shedding: Shedding) -> Self {
        self.shedding = shedding;
        self
    }

    /// Continues from what is already durable: each stream's source
    /// high-water mark (so a trade missed while K2 was down shows as a gap and
    /// is recovered) and platform sequence.
    pub fn restored(mut self, from: &SequenceMarks) -> Self {
        for ((exchange, symbol), marks) in &from.0 {
            if let Some(high) = marks.source_sequence {
                self.tracker.restore_high_water_mark(exchange, symbol, high);
            }
            if let Some(last) = marks.platform_sequence {
                self.tracker.restore_platform_sequence(exchange, symbol, last);
            }
        }
        self
    }

    fn process(&mut self, events: &mut [MarketEvent]) {
        let now = Instant::now();
        let mut counts = [0u64; 6];
        for event in events.iter_mut() {
            match event {
                MarketEvent::Trade(t) => {
                    if let Some(seq) = t.source_sequence {
                        let outcome = self.tracker.observe(&t.exchange, &t.symbol, seq, now, &mut self.gaps);
                        counts[outcome_index(outcome)] += 1;
                    }
                    let platform = self.tracker.next_platform_sequence(&t.exchange, &t.symbol);
                    t.platform_sequence = Some(platform);
                }
                // Book-ticker update ids rise but are not contiguous: no gap
                // checking on quotes, only the platform sequence.
                MarketEvent::Quote(q) => {
                    let platform = self.tracker.next_platform_sequence(&q.exchange, &q.symbol);
                    q.platform_sequence = Some(platform);
                }
            }
        }
        for (i, outcome) in ["first", "in_order", "ahead", "late", "duplicate", "reset"].into_iter().enumerate() {
            if counts[i] > 0 {
                metrics::counter!("k2_sequence_events_total", "outcome" => outcome).increment(counts[i]);
            }
        }
        self.report_gaps();
    }

    fn report_gaps(&mut self) {
        for gap in self.gaps.drain(..) {
            let size = if gap.size() > self.config.large_gap { "large" } else { "small" };
            metrics::counter!("k2_sequence_gaps_total", "exchange" => gap.exchange.to_string(), "symbol" => gap.symbol.to_string(), "size" => size).increment(1);
            metrics::counter!("k2_sequence_missing_total", "exchange" => gap.exchange.to_string())
                .increment(gap.size());
            tracing::warn!(exchange = %gap.exchange, symbol = %gap.symbol, from = gap.from, to = gap.to, size, "sequence gap");
            if let Some(to) = &self.gaps_to {
                to.do_send(GapDetected(gap));
            }
        }
    }
}

fn outcome_index(o: Outcome) -> usize {
    match o {
        Outcome::First => 0,
        Outcome::InOrder => 1,
        Outcome::Ahead { .. } => 2,
        Outcome::Late => 3,
        Outcome::Duplicate => 4,
        Outcome::Reset => 5,
    }
}

impl Actor for SequenceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.supervision.started();
        // Gaps that stay open past the reorder timeout are confirmed even when
        // their stream goes quiet.
        ctx.run_interval(Duration::from_millis(100), |act, _| {
            act.tracker.tick(Instant::now(), &mut act.gaps);
            act.report_gaps();
        });
    }
}

supervised!(SequenceActor);

impl Supervise for SequenceActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    /// Keeps the high-water marks and platform sequences (facts about the
    /// streams: platform sequences must stay unique), drops pending gaps and
    /// counters that a failure may have left half-updated.
    fn reset(&mut self) {
        let mut fresh = SequenceTracker::new(self.config.clone());
        for (exchange, symbol, high) in self.tracker.high_water_marks() {
            fresh.restore_high_water_mark(exchange, symbol, high);
        }
        for (exchange, symbol, last) in self.tracker.platform_sequences() {
            fresh.restore_platform_sequence(exchange, symbol, last);
        }
        self.tracker = fresh;
        self.gaps.clear();
    }
}

impl Handler<EventBatch> for SequenceActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, mut batch: EventBatch, ctx: &mut Context<Self>) -> Self::Result {
        self.supervision.probe().received(batch.events.len());
        let processed = guarded(self, ctx, |act| {
            act.shedding.apply(&mut batch.events);
            act.process(&mut batch.events);
            Ok(())
        });
        if processed.is_none() {
            metrics::counter!("k2_dead_letter_events_total", "actor" => NAME).increment(batch.events.len() as u64);
            return AtomicResponse::new(Box::pin(async {}.into_actor(self)));
        }
        forward(self, &self.next, batch)
    }
}

impl Handler<Drain> for SequenceActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Drain, _: &mut Context<Self>) -> Self::Result {
        self.supervision.probe().received(0);
        forward(self, &self.next, msg)
    }
}
