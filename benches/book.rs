//! Order books: diff-depth frames parsed per second, and level updates
//! applied per second on one core (issue 17's target: 2,000,000).
//!
//! The book starts from a 1,000-level-per-side snapshot of BTCUSDT-like
//! prices; each event changes 10 bids and 10 asks around the touch (a
//! quarter of them to zero), as Binance's `@depth@100ms` frames for a busy
//! symbol do. 1,024 distinct events are cycled.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use k2_core::book::{BookSync, DepthSnapshot, SnapshotStep, Step};
use k2_core::source::binance::depth::{parse_depth_snapshot, parse_depth_update};
use rust_decimal::Decimal;

const EVENTS: usize = 1024;
const LEVELS_PER_SIDE: usize = 10;

fn level(i: usize, j: usize, bid: bool) -> String {
    // Prices in cents around 60,000.00, within 500 ticks of the touch.
    let tick = (i * 7 + j * 13) % 500;
    let cents = if bid { 6_000_000 - 1 - tick } else { 6_000_000 + tick };
    let qty = if (i + j).is_multiple_of(4) {
        "0.00000000".to_owned()
    } else {
        format!("{}.{:08}", j % 3, (i * 31 + j) % 100_000_000)
    };
    format!(r#"["{}.{:02}","{qty}"]"#, cents / 100, cents % 100)
}

fn frame(i: usize, first: u64) -> String {
    let side = |bid| (0..LEVELS_PER_SIDE).map(|j| level(i, j, bid)).collect::<Vec<_>>().join(",");
    format!(
        r#"{{"stream":"btcusdt@depth@100ms","data":{{"e":"depthUpdate","E":{},"s":"BTCUSDT","U":{first},"u":{},"b":[{}],"a":[{}]}}}}"#,
        1_700_000_000_000u64 + i as u64 * 100,
        first + 2,
        side(true),
        side(false)
    )
}

fn snapshot(last_update_id: u64) -> DepthSnapshot {
    let side = |bid: bool| {
        (0..1_000)
            .map(|k| format!(r#"["{}","1.5"]"#, Decimal::new(if bid { 6_000_000 - 1 - k } else { 6_000_000 + k }, 2)))
            .collect::<Vec<_>>()
            .join(",")
    };
    let body = format!(r#"{{"lastUpdateId":{last_update_id},"bids":[{}],"asks":[{}]}}"#, side(true), side(false));
    parse_depth_snapshot(body.as_bytes(), 1_000).expect("snapshot")
}

fn depth(c: &mut Criterion) {
    let frames: Vec<Vec<u8>> = (0..EVENTS).map(|i| frame(i, 1 + 3 * i as u64).into_bytes()).collect();
    let mut group = c.benchmark_group("depth_frame_parse");
    group.throughput(Throughput::Elements(1));
    let mut n = 0;
    group.bench_function("enveloped_20_levels", |b| {
        b.iter(|| {
            n = (n + 1) % EVENTS;
            black_box(parse_depth_update(black_box(&frames[n])).expect("frame"))
        })
    });
    group.finish();

    // Level updates applied through the sync procedure, ids made contiguous
    // round after round of the 1,024 events.
    let updates: Vec<_> = frames.iter().map(|f| parse_depth_update(f).expect("frame")).collect();
    let mut sync = BookSync::new(16);
    sync.on_update(updates[0].clone());
    assert!(matches!(sync.on_snapshot(&snapshot(0)), SnapshotStep::Synced { .. }));
    let mut next_id = updates[0].final_update_id + 1;
    let mut group = c.benchmark_group("book_apply");
    group.throughput(Throughput::Elements((2 * LEVELS_PER_SIDE) as u64));
    let mut i = 0;
    group.bench_function("level_updates", |b| {
        b.iter_batched(
            || {
                i = (i + 1) % EVENTS;
                let mut u = updates[i].clone();
                u.first_update_id = next_id;
                u.final_update_id = next_id + 2;
                next_id += 3;
                u
            },
            |u| assert!(matches!(sync.on_update(u), Step::Applied(_))),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, depth);
criterion_main!(benches);
