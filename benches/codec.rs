//! Avro codec throughput for trades: the fast schema-specific codec (Confluent
//! frames) against apache-avro's generic `Value` path it is tested against.
//!
//! The 1,024 trades are made by parsing Binance frames through `BinanceParser`,
//! so they look like real ones (four vendor_data entries, real id shapes).
//! Single-event benchmarks cycle over them and report events per second;
//! `encode_batch` encodes all 1,024 per iteration.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use k2_core::codec::wire::HEADER_LEN;
use k2_core::codec::{SchemaIds, WireCodec, generic};
use k2_core::source::binance::{BinanceParser, Frame};
use k2_core::{MarketEvent, Timestamp, TradeV2};

/// Events prepared per benchmark.
#[path = "common/frames.rs"]
mod frames;
use frames::binance_trade_frame;

const EVENTS: usize = 1024;
const IDS: SchemaIds = SchemaIds { trade: 1, quote: 2 };

/// Realistic trades, as the Binance source produces them.
fn trades() -> Vec<TradeV2> {
    let mut parser = BinanceParser::default();
    (0..EVENTS)
        .map(|i| {
            let received = Timestamp::from_micros(1_722_766_102_795_000 + 7_000 * i as i64);
            match parser.parse(binance_trade_frame(i).as_bytes(), received) {
                Ok(Frame::Event(MarketEvent::Trade(t))) => {
                    assert_eq!(t.vendor_data.as_ref().map(|v| v.len()), Some(4));
                    t
                }
                other => panic!("frame {i} did not parse to a trade: {other:?}"),
            }
        })
        .collect()
}

fn avro_encode_trade(c: &mut Criterion) {
    let codec = WireCodec::new(IDS);
    let events: Vec<MarketEvent> = trades().into_iter().map(MarketEvent::Trade).collect();

    let mut group = c.benchmark_group("avro_encode_trade");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_into", |b| {
        let mut buf = Vec::with_capacity(256);
        let mut next = events.iter().cycle();
        b.iter(|| {
            let event = next.next().expect("cycle never ends");
            buf.clear();
            codec.encode_into(black_box(event), &mut buf).expect("trade encodes");
            black_box(buf.as_slice());
        });
    });
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("encode_batch", |b| {
        b.iter(|| black_box(codec.encode_batch(black_box(&events))));
    });
    group.finish();
}

fn avro_decode_trade(c: &mut Criterion) {
    let codec = WireCodec::new(IDS);
    let events: Vec<MarketEvent> = trades().into_iter().map(MarketEvent::Trade).collect();
    let frames: Vec<Vec<u8>> = events.iter().map(|e| codec.encode(e).expect("trade encodes")).collect();
    for (frame, event) in frames.iter().zip(&events) {
        assert_eq!(&codec.decode(frame).expect("frame decodes"), event);
    }

    let mut group = c.benchmark_group("avro_decode_trade");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode", |b| {
        let mut next = frames.iter().cycle();
        b.iter(|| {
            let frame = next.next().expect("cycle never ends");
            black_box(codec.decode(black_box(frame)))
        });
    });
    group.finish();
}

fn apache_avro_generic_encode_trade(c: &mut Criterion) {
    let trades = trades();

    let mut group = c.benchmark_group("apache_avro_generic_encode_trade");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_trade", |b| {
        let mut next = trades.iter().cycle();
        b.iter(|| {
            let trade = next.next().expect("cycle never ends");
            black_box(generic::encode_trade(black_box(trade)))
        });
    });
    group.finish();
}

fn apache_avro_generic_decode_trade(c: &mut Criterion) {
    let codec = WireCodec::new(IDS);
    let trades = trades();
    let frames: Vec<Vec<u8>> =
        trades.iter().map(|t| codec.encode(&MarketEvent::Trade(t.clone())).expect("trade encodes")).collect();
    for (frame, trade) in frames.iter().zip(&trades) {
        let decoded = generic::decode_trade(&frame[HEADER_LEN..]).expect("datum decodes");
        assert_eq!(&decoded, trade);
    }

    let mut group = c.benchmark_group("apache_avro_generic_decode_trade");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_trade", |b| {
        let mut next = frames.iter().cycle();
        b.iter(|| {
            let frame = next.next().expect("cycle never ends");
            black_box(generic::decode_trade(black_box(&frame[HEADER_LEN..])))
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = avro_encode_trade,
        avro_decode_trade,
        apache_avro_generic_encode_trade,
        apache_avro_generic_decode_trade
}
criterion_main!(benches);
