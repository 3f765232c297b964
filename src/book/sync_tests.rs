//! The sync procedure against a venue that keeps the true book: random
//! update streams with skipped ranges, duplicates, reconnects, and snapshots
//! older or newer than the stream. Whenever the local book says it is synced
//! it must equal the truth at its update id.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rust_decimal::Decimal;

use super::levels::{Level, OrderBook, Side};
use super::sync::{BookSync, DepthSnapshot, DepthUpdate, SnapshotStep, Step, UnsyncCause};
use crate::model::Timestamp;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

#[derive(Clone, Default)]
struct Truth {
    bids: BTreeMap<Decimal, Decimal>,
    asks: BTreeMap<Decimal, Decimal>,
}

impl Truth {
    fn levels(&self) -> (Vec<Level>, Vec<Level>) {
        (self.bids.iter().rev().map(|(p, q)| (*p, *q)).collect(), self.asks.iter().map(|(p, q)| (*p, *q)).collect())
    }
}

/// A venue's stream: every event with the true book after it.
fn market(rng: &mut Rng, events: usize) -> Vec<(DepthUpdate, Truth)> {
    let mut truth = Truth::default();
    let mut next_id = 1_000 + rng.below(1_000);
    let mut out = Vec::with_capacity(events);
    for i in 0..events {
        // Bids 90–100, asks 101–111: the true book never crosses.
        let level = |rng: &mut Rng, base: i64| {
            let price = Decimal::new(base * 100 + i64::try_from(rng.below(1_000)).unwrap_or(0), 2);
            let quantity = if rng.below(4) == 0 {
                Decimal::ZERO
            } else {
                Decimal::new(i64::try_from(1 + rng.below(999)).unwrap(), 3)
            };
            (price, quantity)
        };
        let bids: Vec<Level> = (0..rng.below(4)).map(|_| level(rng, 90)).collect();
        let asks: Vec<Level> = (0..rng.below(4)).map(|_| level(rng, 101)).collect();
        for (map, levels) in [(&mut truth.bids, &bids), (&mut truth.asks, &asks)] {
            for &(p, q) in levels {
                if q.is_zero() {
                    map.remove(&p);
                } else {
                    map.insert(p, q);
                }
            }
        }
        // One event may carry several update ids.
        let span = 1 + rng.below(3);
        let update = DepthUpdate {
            symbol: "BNBBTC".into(),
            event_time: Timestamp::from_micros(i64::try_from(i).unwrap_or(0) * 100_000),
            first_update_id: next_id,
            final_update_id: next_id + span - 1,
            bids,
            asks,
        };
        next_id += span;
        out.push((update, truth.clone()));
    }
    out
}

fn snapshot_at(market: &[(DepthUpdate, Truth)], i: usize) -> DepthSnapshot {
    let (bids, asks) = market[i].1.levels();
    DepthSnapshot { last_update_id: market[i].0.final_update_id, bids, asks, limit: 5_000 }
}

fn assert_true(sync: &BookSync, market: &[(DepthUpdate, Truth)]) {
    let Some(book) = sync.book() else { return };
    let at = market
        .iter()
        .position(|(u, _)| u.final_update_id == book.update_id())
        .unwrap_or_else(|| panic!("the book claims update id {} that no event ended at", book.update_id()));
    let (bids, asks) = market[at].1.levels();
    assert_eq!(book.top(Side::Bid, usize::MAX).0, bids, "bids at update id {}", book.update_id());
    assert_eq!(book.top(Side::Ask, usize::MAX).0, asks, "asks at update id {}", book.update_id());
}

/// Runs the stream through a `BookSync` with faults drawn from `seed`,
/// answering snapshot requests a few events later with a snapshot from a
/// random point around the stream (older or newer). Returns the causes of
/// every unsync seen, and whether the book ended synced.
fn run(seed: u64, events: usize, faults: bool) -> (Vec<UnsyncCause>, bool) {
    let mut rng = Rng(seed);
    let market = market(&mut rng, events);
    let mut sync = BookSync::new(10_000);
    let mut causes = Vec::new();
    // (deliver at event index, snapshot taken at index)
    let mut requested: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < market.len() {
        if faults {
            match rng.below(60) {
                0 => i += 1 + usize::try_from(rng.below(3)).unwrap_or(0), // a skipped range
                1 if i > 0 => {
                    // A duplicate of the previous event.
                    let step = sync.on_update(market[i - 1].0.clone());
                    assert!(!matches!(step, Step::Applied(_)), "a duplicate was applied");
                }
                2 => {
                    causes.extend(sync.disconnected());
                    requested = None;
                    sync.snapshot_failed();
                }
                _ => {}
            }
        }
        let Some((update, _)) = market.get(i) else { break };
        match sync.on_update(update.clone()) {
            Step::Unsynced { cause, fetch } => {
                causes.push(cause);
                if fetch {
                    requested = None;
                }
            }
            Step::Synced { applied, .. } => assert!(!applied.is_empty()),
            Step::Applied(_) | Step::Ignored | Step::Buffered { .. } => {}
        }
        if !sync.is_synced() && requested.is_none() {
            // The snapshot answers 0–5 events later, taken 3 events before to
            // 5 after this one.
            let deliver = i + usize::try_from(rng.below(6)).unwrap_or(0);
            let taken = (i + usize::try_from(rng.below(9)).unwrap_or(0)).saturating_sub(3);
            requested = Some((deliver, taken.min(market.len() - 1)));
        }
        assert_true(&sync, &market);
        if let Some((deliver, taken)) = requested
            && deliver <= i
        {
            requested = None;
            match sync.on_snapshot(&snapshot_at(&market, taken)) {
                SnapshotStep::Refetch { cause } => causes.push(cause),
                SnapshotStep::Synced { .. } | SnapshotStep::Waiting | SnapshotStep::Unneeded => {}
            }
            assert_true(&sync, &market);
        }
        i += 1;
    }
    (causes, sync.is_synced())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_synced_book_always_equals_the_truth(seed in any::<u64>()) {
        run(seed, 400, true);
    }

    #[test]
    fn a_clean_stream_syncs_once_and_stays_synced(seed in any::<u64>()) {
        let (causes, synced) = run(seed, 200, false);
        prop_assert!(synced);
        prop_assert!(
            causes.iter().all(|c| *c == UnsyncCause::SnapshotBehind),
            "only a snapshot older than the stream may make it refetch: {causes:?}"
        );
    }

    #[test]
    fn levels_match_a_plain_map(ops in proptest::collection::vec((any::<bool>(), 0u8..40, 0u16..5), 0..300)) {
        let mut book = OrderBook::default();
        let mut model: [BTreeMap<Decimal, Decimal>; 2] = Default::default();
        for (bid, price, quantity) in ops {
            let (side, m) = if bid { (Side::Bid, 0) } else { (Side::Ask, 1) };
            let (p, q) = (Decimal::new(i64::from(price) + if bid { 0 } else { 100 }, 1), Decimal::from(quantity));
            book.apply(side, &[(p, q)]);
            if q.is_zero() { model[m].remove(&p); } else { model[m].insert(p, q); }
        }
        let bids: Vec<Level> = model[0].iter().rev().map(|(p, q)| (*p, *q)).collect();
        let asks: Vec<Level> = model[1].iter().map(|(p, q)| (*p, *q)).collect();
        prop_assert_eq!(book.top(Side::Bid, usize::MAX).0, bids);
        prop_assert_eq!(book.top(Side::Ask, usize::MAX).0, asks);
    }
}

fn update(first: u64, last: u64, bids: &[Level], asks: &[Level]) -> DepthUpdate {
    DepthUpdate {
        symbol: "BNBBTC".into(),
        event_time: Timestamp::from_micros(1),
        first_update_id: first,
        final_update_id: last,
        bids: bids.to_vec(),
        asks: asks.to_vec(),
    }
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

#[test]
fn the_documented_procedure_step_by_step() {
    let mut sync = BookSync::new(100);
    // Events are buffered from the first; the first asks for a snapshot.
    assert_eq!(sync.on_update(update(157, 160, &[(d("0.0024"), d("10"))], &[])), Step::Buffered { fetch: true });
    assert_eq!(sync.on_update(update(161, 165, &[], &[(d("0.0026"), d("100"))])), Step::Buffered { fetch: false });
    // A snapshot older than the first buffered event: fetch again.
    let old = DepthSnapshot { last_update_id: 150, bids: vec![], asks: vec![], limit: 5_000 };
    assert_eq!(sync.on_snapshot(&old), SnapshotStep::Refetch { cause: UnsyncCause::SnapshotBehind });
    // One inside the first event's range: the events ending at or before it
    // are dropped, the rest applied.
    let snap = DepthSnapshot {
        last_update_id: 160,
        bids: vec![(d("0.0024"), d("10")), (d("0.0023"), d("1"))],
        asks: vec![(d("0.0027"), d("5"))],
        limit: 5_000,
    };
    let SnapshotStep::Synced { snapshot_id: 160, applied } = sync.on_snapshot(&snap) else { panic!("not synced") };
    assert_eq!(applied.iter().map(|u| u.first_update_id).collect::<Vec<_>>(), [161]);
    let book = sync.book().unwrap();
    assert_eq!(book.update_id(), 165);
    assert_eq!(book.best_ask(), Some((d("0.0026"), d("100"))));
    // An older event is ignored; a skipped range unsyncs and is kept.
    assert_eq!(sync.on_update(update(161, 165, &[], &[])), Step::Ignored);
    let gap = sync.on_update(update(170, 171, &[], &[]));
    assert_eq!(gap, Step::Unsynced { cause: UnsyncCause::Gap { expected: 166, got: 170 }, fetch: true });
    assert!(sync.book().is_none(), "an unsynced book is not reported");
    assert_eq!(sync.buffered(), 1);
}

#[test]
fn a_snapshot_before_any_event_waits_for_one() {
    let mut sync = BookSync::new(100);
    let snap = DepthSnapshot { last_update_id: 200, bids: vec![(d("1"), d("1"))], asks: vec![], limit: 5_000 };
    assert_eq!(sync.on_snapshot(&snap), SnapshotStep::Waiting);
    // An event the snapshot covers shows it is not behind the stream.
    let Step::Synced { snapshot_id: 200, applied } = sync.on_update(update(190, 200, &[], &[])) else {
        panic!("not synced")
    };
    assert!(applied.is_empty());
    assert_eq!(
        sync.on_update(update(201, 203, &[(d("2"), d("1"))], &[])),
        Step::Applied(update(201, 203, &[(d("2"), d("1"))], &[]))
    );
    assert_eq!(sync.book().unwrap().best_bid(), Some((d("2"), d("1"))));
}

/// A quiet symbol: the snapshot covers every event seen, and none follows
/// for a while. The book is synced at the snapshot; the next event may
/// straddle its id, but one that leaves a hole after it is a gap.
#[test]
fn a_snapshot_covering_every_event_syncs_at_once_and_the_next_event_may_straddle_it() {
    let mut sync = BookSync::new(100);
    sync.on_update(update(100, 104, &[], &[]));
    let snap = DepthSnapshot { last_update_id: 106, bids: vec![(d("1"), d("1"))], asks: vec![], limit: 5_000 };
    assert_eq!(sync.on_snapshot(&snap), SnapshotStep::Synced { snapshot_id: 106, applied: vec![] });
    assert_eq!(sync.book().unwrap().update_id(), 106);
    let straddling = update(105, 108, &[(d("1"), d("0"))], &[]);
    assert_eq!(sync.on_update(straddling.clone()), Step::Applied(straddling));
    assert_eq!(sync.book().unwrap().best_bid(), None);
    // Only the first event after the snapshot may straddle.
    let gap = sync.on_update(update(108, 110, &[], &[]));
    assert_eq!(gap, Step::Unsynced { cause: UnsyncCause::Gap { expected: 109, got: 108 }, fetch: true });

    let mut sync = BookSync::new(100);
    sync.on_update(update(100, 104, &[], &[]));
    assert!(matches!(sync.on_snapshot(&snap), SnapshotStep::Synced { .. }));
    let hole = sync.on_update(update(108, 109, &[], &[]));
    assert_eq!(hole, Step::Unsynced { cause: UnsyncCause::Gap { expected: 107, got: 108 }, fetch: true });
}

#[test]
fn a_crossed_book_is_dropped_and_resynced() {
    let mut sync = BookSync::new(100);
    sync.on_update(update(10, 10, &[], &[]));
    let snap = DepthSnapshot {
        last_update_id: 9,
        bids: vec![(d("1.0"), d("1"))],
        asks: vec![(d("1.1"), d("1"))],
        limit: 5_000,
    };
    assert!(matches!(sync.on_snapshot(&snap), SnapshotStep::Synced { .. }));
    let crossed = sync.on_update(update(11, 11, &[(d("1.2"), d("1"))], &[]));
    assert_eq!(crossed, Step::Unsynced { cause: UnsyncCause::Crossed, fetch: true });
    assert_eq!(sync.unsynced_cause(), Some(UnsyncCause::Crossed));
}

#[test]
fn a_reconnect_drops_the_book_and_asks_for_a_snapshot_once_events_flow() {
    let mut sync = BookSync::new(100);
    sync.on_update(update(10, 10, &[], &[]));
    assert!(matches!(
        sync.on_snapshot(&DepthSnapshot { last_update_id: 10, bids: vec![], asks: vec![], limit: 5_000 }),
        SnapshotStep::Synced { snapshot_id: 10, .. }
    ));
    sync.on_update(update(11, 12, &[], &[]));
    assert!(sync.is_synced());
    assert_eq!(sync.disconnected(), Some(UnsyncCause::Reconnect));
    assert_eq!(sync.on_update(update(20, 21, &[], &[])), Step::Buffered { fetch: true });
}

/// A book whose stored chain broke is resynced while the stream goes on:
/// the events from then on wait for the new snapshot, none dropped.
#[test]
fn a_resync_keeps_buffering_and_syncs_from_the_next_snapshot() {
    let mut sync = BookSync::new(100);
    let snap = DepthSnapshot { last_update_id: 200, bids: vec![(d("1"), d("1"))], asks: vec![], limit: 5_000 };
    assert_eq!(sync.on_snapshot(&snap), SnapshotStep::Waiting);
    assert!(matches!(sync.on_update(update(190, 200, &[], &[])), Step::Synced { .. }));
    assert_eq!(sync.resync(UnsyncCause::StoreGap), Some(true), "a request goes out now");
    assert_eq!(sync.unsynced_cause(), Some(UnsyncCause::StoreGap));
    assert!(sync.book().is_none());
    assert_eq!(sync.resync(UnsyncCause::StoreGap), None, "already unsynced");
    assert_eq!(sync.on_update(update(201, 202, &[(d("2"), d("1"))], &[])), Step::Buffered { fetch: false });
    assert_eq!(sync.on_update(update(203, 204, &[(d("3"), d("1"))], &[])), Step::Buffered { fetch: false });
    let snap = DepthSnapshot { last_update_id: 202, bids: vec![(d("2"), d("1"))], asks: vec![], limit: 5_000 };
    let SnapshotStep::Synced { snapshot_id: 202, applied } = sync.on_snapshot(&snap) else { panic!("not synced") };
    assert_eq!(applied.iter().map(|u| u.first_update_id).collect::<Vec<_>>(), [203]);
    assert_eq!(sync.book().unwrap().best_bid(), Some((d("3"), d("1"))));
}
