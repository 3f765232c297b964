//! Compaction, measured: a trades table built from many small flushes (one
//! day at `flush.max_age` 30 s is 2,880), queried before and after a
//! compaction, against the same rows written as one load.
//!
//! Prints, for `/v1/summary`, a one-hour trades page and 1-minute bars, the
//! p50/p99 on (1) the table of one load, (2) the table of small flushes,
//! (3) that table compacted; the compaction's rate (rows rewritten per
//! second); and the ingest rate with and without a compaction running.
//!
//! K2_BENCH_ROWS (default 20,000,000) rows over 50 symbols in one day,
//! K2_BENCH_FLUSHES (default 2,880) flushes.
//!
//! `cargo bench -p k2 --bench maintenance` (`K2_LOG=k2::lake::maintenance=debug`
//! adds each compaction group's phases)

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use figment::providers::Env;
use k2::lake::TableKind;
use k2::lake::maintenance::{Maintained, Maintainer};
use k2::runtime::config::Config;
use k2::service::{Service, Stop};
use k2::transforms::dedup::MemoryStore;
use k2_core::{AssetClass, MarketEvent, Timestamp, TradeSide, TradeV2};
use rust_decimal::Decimal;

const SYMBOLS: u64 = 50;
/// 2024-01-01T00:00:00Z
const DAY0: i64 = 1_704_067_200_000_000;
const DAY: i64 = 86_400_000_000;

/// Trade `k` of `rows` spread evenly over day `day` (0-based from DAY0).
fn trade(k: u64, rows: u64, day: i64) -> MarketEvent {
    let symbol = format!("S{:02}USDT", k % SYMBOLS);
    let step = DAY / (rows / SYMBOLS).max(1) as i64;
    let ts = DAY0 + day * DAY + (k / SYMBOLS) as i64 * step;
    MarketEvent::Trade(TradeV2 {
        message_id: uuid::Uuid::from_u64_pair(0x6b32 + day as u64, k),
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
        vendor_data: None,
        is_sample_data: true,
    })
}

fn config(dir: &Path) -> Config {
    let file = dir.join("k2.toml");
    std::fs::write(
        &file,
        format!(
            "[http]\nbind = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n[flush]\nmax_age = \"1h\"\n\
             [pipeline]\nbatch_size = 8192\n[maintenance]\nenabled = false\n",
            dir.join("lake").display()
        ),
    )
    .expect("config");
    Config::load_from(Some(&file), Env::prefixed("K2_BENCH_UNSET__")).expect("config")
}

async fn start(config: &Config) -> Service {
    let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
    Service::builder(config).dedup(Box::new(store)).start().await.expect("K2 starts")
}

/// Sends `from..to` of day `day` in pipeline batches.
async fn send(k2: &Service, from: u64, to: u64, rows: u64, day: i64) {
    let mut k = from;
    while k < to {
        let batch: Vec<MarketEvent> = (k..(k + 8192).min(to)).map(|i| trade(i, rows, day)).collect();
        k += batch.len() as u64;
        k2.pipeline.send(batch).await.expect("send");
    }
}

/// p50/p99 of the three queries, on day 0.
async fn queries(k2: &Service) -> [(Duration, Duration); 3] {
    let http = k2.serve().expect("http");
    let base = format!("http://{}", http.addr);
    let client = reqwest::Client::new();
    let sym = |i: usize| format!("S{:02}USDT", (i * 7) as u64 % SYMBOLS);
    // Warm the snapshot's manifests once (the first query of a snapshot
    // reads them).
    let _ = common::latency(&client, 1, |_| format!("{base}/v1/summary/S00USDT/2024-01-01")).await;
    let summary =
        common::latency(&client, 100, |i| format!("{base}/v1/summary/{}/2024-01-01?exchange=BINANCE", sym(i))).await;
    let page = common::latency(&client, 100, |i| {
        let start = DAY0 + (i as i64 % 24) * 3_600_000_000;
        format!("{base}/v1/trades?symbol={}&start={start}&end={}&limit=1000", sym(i), start + 3_600_000_000)
    })
    .await;
    let bars = common::latency(&client, 50, |i| {
        format!("{base}/v1/bars?symbol={}&interval=1m&start={DAY0}&end={}", sym(i), DAY0 + DAY)
    })
    .await;
    http.handle.stop(true).await;
    [summary, page, bars]
}

/// Every symbol's day-0 summary (open to VWAP, exact decimals): the three
/// tables must agree on each, to the last digit.
async fn summaries(k2: &Service) -> Vec<serde_json::Value> {
    let http = k2.serve().expect("http");
    let base = format!("http://{}", http.addr);
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for s in 0..SYMBOLS {
        let url = format!("{base}/v1/summary/S{s:02}USDT/2024-01-01?exchange=BINANCE&source=historical");
        let body: serde_json::Value =
            client.get(url).send().await.expect("summary").json().await.expect("summary body");
        out.push(body["data"].clone());
    }
    http.handle.stop(true).await;
    out
}

/// The trades table's live data files and bytes, as its current snapshot
/// counts them.
async fn data_size(k2: &Service) -> String {
    let table = k2.lake.catalog().load_table(&k2.lake.ident(TableKind::Trades)).await.expect("table");
    let summary = &table.metadata().current_snapshot().expect("a snapshot").summary().additional_properties;
    let get = |key: &str| summary.get(key).cloned().unwrap_or_default();
    format!("{} data files, {} bytes", get("total-data-files"), get("total-files-size"))
}

const NAMES: [&str; 3] =
    ["/v1/summary (a day)", "/v1/trades (one symbol, one hour, limit 1000)", "/v1/bars (1m, a day)"];

fn main() {
    // `K2_LOG=k2::lake::maintenance=debug` prints each compaction group's
    // read, decode, sort and write times.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("K2_LOG") {
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
    let rows: u64 = std::env::var("K2_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000_000);
    let flushes: u64 = std::env::var("K2_BENCH_FLUSHES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_880);
    println!("{rows} trades over {SYMBOLS} symbols in one day; {flushes} small flushes against one load");

    // (1) One load.
    let one = tempfile::tempdir().expect("temp dir");
    let config1 = config(one.path());
    let loaded = k2::runtime::run(|| async move {
        let k2 = start(&config1).await;
        let t = Instant::now();
        send(&k2, 0, rows, rows, 0).await;
        k2.flush().await.expect("flush");
        println!("one load: {rows} rows in {:.1} s", t.elapsed().as_secs_f64());
        println!("one load: {}", data_size(&k2).await);
        let q = queries(&k2).await;
        let sums = summaries(&k2).await;
        k2.shutdown(Stop::Graceful).await;
        (q, sums)
    })
    .expect("runtime");
    let (loaded, loaded_sums) = loaded;
    drop(one);

    // (2) Small flushes, (3) compacted.
    let small = tempfile::tempdir().expect("temp dir");
    let config2 = config(small.path());
    let maintenance = config2.maintenance.clone();
    k2::runtime::run(|| async move {
        let k2 = start(&config2).await;
        let t = Instant::now();
        let per = rows.div_ceil(flushes);
        let mut k = 0;
        let mut done = 0u64;
        while k < rows {
            let to = (k + per).min(rows);
            send(&k2, k, to, rows, 0).await;
            k2.flush().await.expect("flush");
            k = to;
            done += 1;
            // Each commit costs more as the table grows: show it.
            if done.is_multiple_of((flushes / 10).max(1)) {
                println!("  {done} flushes at {:.1} s", t.elapsed().as_secs_f64());
            }
        }
        println!("small flushes: {rows} rows in {flushes} commits, {:.1} s", t.elapsed().as_secs_f64());
        let before = queries(&k2).await;
        assert_eq!(summaries(&k2).await, loaded_sums, "the small flushes hold the same day as the one load");

        // Ingest on its own, then while a compaction runs.
        let extra = (rows / 20).max(100_000);
        let t = Instant::now();
        send(&k2, 0, extra, extra, 1).await;
        k2.flush().await.expect("flush");
        let alone = extra as f64 / t.elapsed().as_secs_f64();

        let maintainer = Maintainer::new(k2.lake.clone(), maintenance, Duration::from_secs(30), Some(k2.tails.clone()));
        let t = Instant::now();
        let compaction = tokio::spawn(async move { maintainer.run(&[Maintained::Rows(TableKind::Trades)], false).await });
        let ingest = Instant::now();
        send(&k2, 0, extra, extra, 2).await;
        k2.flush().await.expect("flush");
        let during = extra as f64 / ingest.elapsed().as_secs_f64();
        let reports = compaction.await.expect("task").expect("compaction");
        let secs = t.elapsed().as_secs_f64();
        let r = &reports[0];
        let rewritten: u64 = r.compaction.iter().map(|p| p.done.rows).sum();
        let compaction_secs = r.compaction_seconds;
        println!(
            "compaction: {rewritten} rows in {} files rewritten into {} in {compaction_secs:.1} s (planned, rewritten and committed; the whole round with expiry and orphan sweep: {:.1} s, {secs:.1} s from the bench's side) = {:.0} rows/s (target >= 1,000,000)",
            r.compaction.iter().map(|p| p.done.files_removed).sum::<usize>(),
            r.compaction.iter().map(|p| p.done.files_added).sum::<usize>(),
            r.seconds,
            rewritten as f64 / compaction_secs
        );
        println!(
            "ingest to durable: {alone:.0} rows/s alone, {during:.0} rows/s while the compaction ran ({:.0} %)",
            during / alone * 100.0
        );
        println!("compacted: {}", data_size(&k2).await);
        let after = queries(&k2).await;
        assert_eq!(summaries(&k2).await, loaded_sums, "the compacted day is the one load's, to the last digit");
        println!("every symbol's day summary (counts, volume, notional, VWAP) equal on all three tables");
        k2.shutdown(Stop::Graceful).await;
        for (i, name) in NAMES.iter().enumerate() {
            let (l, b, a) = (loaded[i], before[i], after[i]);
            println!(
                "{name}: one load p50 {:?} p99 {:?} | {flushes} flushes p50 {:?} p99 {:?} | compacted p50 {:?} p99 {:?} = {:.2}x the one load's p50 (target <= 1.2x)",
                l.0,
                l.1,
                b.0,
                b.1,
                a.0,
                a.1,
                a.0.as_secs_f64() / l.0.as_secs_f64()
            );
        }
    })
    .expect("runtime");
}
