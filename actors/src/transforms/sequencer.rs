//! The sequence tracker actor: classifies each trade's venue sequence number,
//! assigns `platform_sequence`, reports confirmed gaps, and passes every event
//! on at once (a gap never stalls the stream).

use std::time::{Duration, Instant};

use actix::prelude::*;
use k2_core::MarketEvent;
use k2_core::transform::sequence::{Gap, Outcome, SequenceConfig, SequenceTracker};

use crate::runtime::degradation::{Level, LevelHandle, Shed, ShedLedger};
use crate::runtime::health::{Link, forward};
use crate::runtime::messages::{Drain, EventBatch};
use crate::runtime::supervision::{Supervise, Supervision, guarded, supervised};
use crate::state::dead_letters::{DeadLetters, Kind};
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
    ledger: ShedLedger,
}

impl Shedding {
    pub fn new(level: LevelHandle, critical: &[String], ledger: ShedLedger) -> Self {
        Self { level, critical: critical.iter().map(|s| s.as_str().into()).collect(), ledger }
    }

    fn apply(&self, events: &mut Vec<MarketEvent>) {
        let level = self.level.get();
        if level < Level::Soft {
            return;
        }
        // Counted per symbol; a batch holds few symbols, so a short list.
        let mut shed: Vec<(compact_str::CompactString, Shed, bool, u64)> = Vec::new();
        let mut count = |symbol: &str, what: Shed, trade: bool| match shed
            .iter_mut()
            .find(|(s, w, t, _)| s == symbol && *w == what && *t == trade)
        {
            Some((_, _, _, n)) => *n += 1,
            None => shed.push((symbol.into(), what, trade, 1)),
        };
        if level >= Level::Graceful {
            events.retain(|e| match e {
                MarketEvent::Trade(_) => true,
                MarketEvent::Quote(q) => {
                    let keep = self.critical.iter().any(|c| c == q.symbol.as_str());
                    if !keep {
                        count(&q.symbol, Shed::Quote, false);
                    }
                    keep
                }
            });
        }
        for e in events.iter_mut() {
            let (vendor, symbol, trade) = match e {
                MarketEvent::Trade(t) => (&mut t.vendor_data, &t.symbol, true),
                MarketEvent::Quote(q) => (&mut q.vendor_data, &q.symbol, false),
            };
            if vendor.take().is_some() {
                count(symbol, Shed::VendorData, trade);
            }
        }
        for (symbol, what, trade, n) in shed {
            self.ledger.record(level, &symbol, what, trade, n);
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
    /// Where a batch this stage fails on is kept (none in unit tests).
    dead_letters: Option<DeadLetters>,
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
            dead_letters: None,
        }
    }

    pub fn with_dead_letters(mut self, dead_letters: DeadLetters) -> Self {
        dead_letters.announce(NAME, Kind::Events);
        self.dead_letters = Some(dead_letters);
        self
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
        if let Err(reason) = processed {
            metrics::counter!("k2_dead_letter_events_total", "actor" => NAME).increment(batch.events.len() as u64);
            // The events are kept whole (the tracker may have seen some: they
            // will not show as a gap), so a replay can bring them back.
            if let Some(store) = &self.dead_letters {
                store.store_events(NAME, &reason, &batch.events);
            }
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

#[cfg(test)]
mod tests {
    use k2_core::source::binance::{BinanceParser, Frame};

    use super::*;

    fn frames(texts: &[String]) -> Vec<MarketEvent> {
        let mut p = BinanceParser::default();
        texts
            .iter()
            .map(|f| match p.parse(f.as_bytes(), k2_core::Timestamp::now()).unwrap() {
                Frame::Event(e) => e,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn trade(symbol: &str, id: u64) -> String {
        format!(
            r#"{{"e":"trade","E":1,"s":"{symbol}","t":{id},"p":"1.5","q":"2","T":1722766102789,"m":true,"M":true}}"#
        )
    }

    fn quote(symbol: &str, id: u64) -> String {
        format!(r#"{{"u":{id},"s":"{symbol}","b":"1.0","B":"2","a":"1.1","A":"3"}}"#)
    }

    #[test]
    fn what_the_ladder_sheds_is_counted_per_level_symbol_and_kind_and_trades_stay() {
        let level = LevelHandle::default();
        let ledger = ShedLedger::default();
        let shedding = Shedding::new(level.clone(), &["BTCUSDT".to_owned()], ledger.clone());
        let batch = || frames(&[trade("BTCUSDT", 1), trade("ETHUSDT", 2), quote("BTCUSDT", 3), quote("ETHUSDT", 4)]);

        let mut events = batch();
        shedding.apply(&mut events);
        let vendor = |e: &MarketEvent| match e {
            MarketEvent::Trade(t) => t.vendor_data.is_some(),
            MarketEvent::Quote(q) => q.vendor_data.is_some(),
        };
        assert_eq!(events.len(), 4, "NORMAL takes nothing");
        assert_eq!(events.iter().filter(|e| vendor(e)).count(), 2, "the trades keep their vendor_data");
        assert!(ledger.totals().is_empty());

        level.set_for_test(Level::Graceful);
        let mut events = batch();
        shedding.apply(&mut events);
        assert_eq!(events.len(), 3, "the quote of the non-critical symbol goes, the trades stay: {events:?}");
        assert!(events.iter().all(|e| !vendor(e)));
        assert_eq!(events.iter().filter(|e| e.is_trade()).count(), 2);
        let totals = ledger.totals();
        assert_eq!(totals.get("GRACEFUL/ETHUSDT/quote"), Some(&1), "{totals:?}");
        assert_eq!(totals.get("GRACEFUL/ETHUSDT/vendor_data"), Some(&1), "{totals:?}");
        assert_eq!(totals.get("GRACEFUL/BTCUSDT/vendor_data"), Some(&1), "{totals:?}");
        // The trades' table gets the trades' counts, once.
        let trades = ledger.take_unflushed(true);
        assert_eq!(trades.values().sum::<u64>(), 2, "{trades:?}");
        assert!(ledger.take_unflushed(true).is_empty());
        assert_eq!(ledger.take_unflushed(false).get("GRACEFUL/ETHUSDT/quote"), Some(&1));
    }
}
