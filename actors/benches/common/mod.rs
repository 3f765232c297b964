//! What several benches share: request latencies, a producer loop that
//! waits for room in librdkafka's queue, the Parquet files of a table, and
//! a synthetic market of trades.

// Each bench includes this module and uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k2_core::{AssetClass, MarketEvent, Timestamp, TradeSide, TradeV2, VendorData};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rust_decimal::Decimal;

/// p50 and p99 of `v`.
pub fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.50), at(0.99))
}

/// Every Parquet file under `dir` in a directory named `table` (live or
/// not), with its length in bytes.
pub fn parquet_files(dir: &Path, table: &str) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet")
                && path.components().any(|c| c.as_os_str() == table)
            {
                let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
                out.push((path, len));
            }
        }
    }
    out
}

/// p50 and p99 of `n` GETs, one at a time, of the URLs `url` gives; each
/// must succeed.
pub async fn latency(client: &reqwest::Client, n: usize, mut url: impl FnMut(usize) -> String) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let u = url(i);
        let t = Instant::now();
        let resp = client.get(&u).send().await.expect("request");
        assert!(resp.status().is_success(), "{u}: {}", resp.status());
        let _ = resp.bytes().await.expect("body");
        times.push(t.elapsed());
    }
    percentiles(times)
}

/// Hands `record` to librdkafka, waiting while its queue is full; the
/// delivery to await. Any other refusal ends the bench.
pub async fn send_when_room<K, P>(producer: &FutureProducer, mut record: FutureRecord<'_, K, P>) -> DeliveryFuture
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return delivery,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err((e, _)) => panic!("producer: {e}"),
        }
    }
}

/// The synthetic market: `rows` trades over SYMBOLS symbols and DAYS days
/// from DAY0, trade `k` of symbol `k % SYMBOLS`, evenly spaced in time.
pub const SYMBOLS: u64 = 50;
pub const DAYS: i64 = 5;
/// 2024-01-01T00:00:00Z
pub const DAY0: i64 = 1_704_067_200_000_000;
pub const DAY: i64 = 86_400_000_000;

pub fn trade(k: u64, rows: u64) -> MarketEvent {
    let symbol = format!("S{:02}USDT", k % SYMBOLS);
    let step = DAYS * DAY / (rows / SYMBOLS) as i64;
    let ts = DAY0 + (k / SYMBOLS) as i64 * step;
    let mut vendor = VendorData::new();
    vendor.insert("is_buyer_maker", if k.is_multiple_of(2) { "true" } else { "false" });
    MarketEvent::Trade(TradeV2 {
        message_id: uuid::Uuid::from_u64_pair(0x6b32, k),
        trade_id: format!("BINANCE-{k}").into(),
        symbol: symbol.into(),
        exchange: "BINANCE".into(),
        asset_class: AssetClass::Crypto,
        timestamp: Timestamp::from_micros(ts),
        price: Decimal::new(6_000_000_000_000 + (k % 100_000) as i64 * 1_000, 8),
        quantity: Decimal::new(1_000 + (k % 997) as i64, 8),
        currency: "USDT".into(),
        side: if k.is_multiple_of(2) { TradeSide::Buy } else { TradeSide::Sell },
        trade_conditions: Vec::new(),
        source_sequence: Some((k / SYMBOLS) as i64 + 1),
        ingestion_timestamp: Timestamp::from_micros(ts + 1_000),
        platform_sequence: None,
        vendor_data: Some(vendor),
        is_sample_data: true,
    })
}

/// The configuration the table-building benches start K2 with: a data
/// directory under `dir`, flushes only when asked (or after an hour),
/// batches of 8,192; then `extra` (more sections).
pub fn market_config(dir: &Path, extra: &str) -> k2::runtime::config::Config {
    let file = dir.join("k2.toml");
    let text = format!(
        "[http]\nbind = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n[flush]\nmax_age = \"1h\"\n[pipeline]\nbatch_size = 8192\n{extra}",
        dir.join("lake").display()
    );
    std::fs::write(&file, text).expect("config");
    k2::runtime::config::Config::load_from(Some(&file), figment::providers::Env::prefixed("K2_BENCH_UNSET__"))
        .expect("config")
}

/// Sends the synthetic market's `rows` trades through `k2`'s pipeline in
/// batches of 8,192 and waits until every one is committed.
pub async fn load_market(k2: &k2::service::Service, rows: u64) {
    println!("building a {rows}-row trades table ({SYMBOLS} symbols, {DAYS} days) through the pipeline");
    let chunk = 8192u64;
    let mut k = 0;
    while k < rows {
        let batch: Vec<MarketEvent> = (k..(k + chunk).min(rows)).map(|i| trade(i, rows)).collect();
        k += batch.len() as u64;
        k2.pipeline.send(batch).await.expect("send");
    }
    k2.flush().await.expect("flush");
}
