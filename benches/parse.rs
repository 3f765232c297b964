//! Parser throughput: Binance WebSocket trade frames and ASX sample trade lines.
//!
//! Each benchmark cycles over 1,024 inputs prepared beforehand (different trade
//! ids, prices, quantities and times), so it does not measure one input that
//! sits in cache. Every iteration parses one input; criterion reports the time
//! per input and, through `Throughput::Elements(1)`, inputs per second.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use k2_core::source::asx::clock::LocalClock;
use k2_core::source::asx::sample::SampleParser;
use k2_core::source::binance::{BinanceParser, Frame};
use k2_core::{MarketEvent, Timestamp};

/// Inputs prepared per benchmark.
#[path = "common/frames.rs"]
mod frames;
use frames::{binance_trade_frame, binance_trade_payload};

const INPUTS: usize = 1024;
/// When the frames are "received": fixed, so that no clock read is measured.
const RECEIVED: Timestamp = Timestamp::from_micros(1_722_766_102_795_000);

/// A trade line of the ASX sample format, varied by `i`: the time runs from
/// 10:00 to about 16:00 local in file order, price and volume change.
fn asx_trade_line(i: usize) -> String {
    let ms = 10 * 3_600_000 + i * 21_101;
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1_000 % 60, ms % 1_000);
    let mills = 36_500 + (i * 37) % 400;
    let volume = 100 * (1 + i % 250);
    let qualifiers = if i.is_multiple_of(4) { "" } else { "3" };
    format!("03/10/2014,{h:02}:{m:02}:{s:02}.{frac:03},{}.{:03},{volume},{qualifiers},X,", mills / 1_000, mills % 1_000)
}

fn check_binance(frames: &[Vec<u8>]) {
    let mut parser = BinanceParser::default();
    for f in frames {
        match parser.parse(f, RECEIVED) {
            Ok(Frame::Event(MarketEvent::Trade(_))) => {}
            other => panic!("frame {} did not parse to a trade: {other:?}", String::from_utf8_lossy(f)),
        }
    }
}

fn sydney_parser() -> SampleParser {
    SampleParser::new("7078", "BHP", LocalClock::new(chrono_tz::Australia::Sydney), false)
}

fn binance_trade_parse(c: &mut Criterion) {
    let enveloped: Vec<Vec<u8>> = (0..INPUTS).map(|i| binance_trade_frame(i).into_bytes()).collect();
    let raw: Vec<Vec<u8>> = (0..INPUTS).map(|i| binance_trade_payload(i).into_bytes()).collect();
    check_binance(&enveloped);
    check_binance(&raw);

    let mut group = c.benchmark_group("binance_trade_parse");
    group.throughput(Throughput::Elements(1));
    for (name, frames) in [("enveloped", &enveloped), ("raw", &raw)] {
        group.bench_function(name, |b| {
            let mut parser = BinanceParser::default();
            let mut next = frames.iter().cycle();
            b.iter(|| {
                let frame = next.next().expect("cycle never ends");
                black_box(parser.parse(black_box(frame), RECEIVED))
            });
        });
    }
    group.finish();
}

fn asx_trade_line_parse(c: &mut Criterion) {
    let lines: Vec<String> = (0..INPUTS).map(asx_trade_line).collect();
    let mut check = sydney_parser();
    for (i, line) in lines.iter().enumerate() {
        if let Err(e) = check.trade(line, i as u64 + 1, RECEIVED) {
            panic!("line {line:?} did not parse: {e}");
        }
    }

    let mut group = c.benchmark_group("asx_trade_line");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sample_trade", |b| {
        let mut parser = sydney_parser();
        let mut next = lines.iter().zip(1u64..).cycle();
        b.iter(|| {
            let (line, line_no) = next.next().expect("cycle never ends");
            black_box(parser.trade(black_box(line), line_no, RECEIVED))
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = binance_trade_parse, asx_trade_line_parse
}
criterion_main!(benches);
