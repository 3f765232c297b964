//! The query API over a large trades table, through HTTP, and the flusher's
//! sustained rate into Iceberg.
//!
//! Builds a table of K2_BENCH_ROWS trades (default 10,000,000; 50 symbols
//! over 5 days) by sending them through the pipeline into the Iceberg
//! flusher, then measures p50/p99 latency of three queries (one symbol over
//! one hour, limit 1000; a daily summary; 1-minute bars for a day) and the
//! request rate of `/v1/trades?limit=100` with 64 concurrent clients. The
//! clients run in this process, on the same two cores as K2.
//!
//! `cargo bench -p k2 --bench query_api`

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{DAY, DAY0, DAYS, SYMBOLS, trade};
use k2::service::Service;
use k2::transforms::dedup::MemoryStore;
use k2_core::MarketEvent;

/// Requests per second of `url` with 64 clients for 10 s.
async fn concurrent(client: &reqwest::Client, url: &str) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let window = Duration::from_secs(10);
    let until = Instant::now() + window;
    let mut clients = Vec::new();
    for _ in 0..64 {
        let (client, done, url) = (client.clone(), done.clone(), url.to_owned());
        clients.push(tokio::spawn(async move {
            while Instant::now() < until {
                if let Ok(r) = client.get(&url).send().await
                    && r.status().is_success()
                    && r.bytes().await.is_ok()
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for c in clients {
        let _ = c.await;
    }
    done.load(Ordering::Relaxed) as f64 / window.as_secs_f64()
}

fn main() {
    let rows: u64 = std::env::var("K2_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = common::market_config(dir.path(), "");
    k2::runtime::run(|| async move {
        let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
        let k2 = Service::builder(&config).dedup(Box::new(store)).start().await.expect("K2 starts");

        let started = Instant::now();
        common::load_market(&k2, rows).await;
        let secs = started.elapsed().as_secs_f64();
        let metrics = k2::runtime::telemetry::render();
        let stat = |name: &str| -> f64 {
            metrics
                .lines()
                .filter(|l| l.starts_with(name) && l.contains("table=\"trades\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let (flush_secs, commits) = (stat("k2_lake_commit_seconds_sum"), stat("k2_lake_commit_seconds_count"));
        let bytes = stat("k2_lake_bytes_written_total");
        println!(
            "ingest to durable: {rows} rows in {secs:.1} s = {:.0} rows/s end to end (generation, sequencer, dedup, tail, flush)",
            rows as f64 / secs
        );
        println!(
            "flusher: {commits} commits, {flush_secs:.1} s writing and committing = {:.0} rows/s while flushing; {:.1} MB of Parquet",
            rows as f64 / flush_secs.max(1e-9),
            bytes / 1e6
        );

        let http = k2.serve().expect("http");
        let base = format!("http://{}", http.addr);
        let client = reqwest::Client::builder().pool_max_idle_per_host(128).build().expect("client");
        let sym = |i: usize| format!("S{:02}USDT", (i * 7) as u64 % SYMBOLS);
        let (p50, p99) = common::latency(&client, 200, |i| {
            let start = DAY0 + (i as i64 % DAYS) * DAY + (i as i64 % 24) * 3_600_000_000;
            format!("{base}/v1/trades?symbol={}&start={start}&end={}&limit=1000", sym(i), start + 3_600_000_000)
        })
        .await;
        println!("trades, one symbol, one hour, limit 1000: p50 {p50:?}  p99 {p99:?}  (target p99 <= 50 ms)");
        let (p50, p99) = common::latency(&client, 200, |i| {
            format!("{base}/v1/summary/{}/2024-01-0{}?exchange=BINANCE", sym(i), 1 + i as i64 % DAYS)
        })
        .await;
        println!("daily summary: p50 {p50:?}  p99 {p99:?}  (target p99 <= 50 ms)");
        let (p50, p99) = common::latency(&client, 100, |i| {
            let start = DAY0 + (i as i64 % DAYS) * DAY;
            format!("{base}/v1/bars?symbol={}&interval=1m&start={start}&end={}", sym(i), start + DAY)
        })
        .await;
        println!("1-minute bars for a day: p50 {p50:?}  p99 {p99:?}  (target p99 <= 50 ms)");

        let url = format!("{base}/v1/trades?limit=100");
        let t = Instant::now();
        let first = client.get(&url).send().await.expect("request");
        assert!(first.status().is_success());
        let _ = first.bytes().await;
        println!("/v1/trades?limit=100, first request (snapshot page not cached yet): {:?}", t.elapsed());
        let rate = concurrent(&client, &url).await;
        println!("/v1/trades?limit=100, 64 concurrent clients, empty tail: {rate:.0} req/s (target >= 2000)");

        // The same with rows waiting in the tail, which every request reads.
        let tail_rows = 200_000u64;
        let batch: Vec<MarketEvent> = (0..tail_rows).map(|i| trade(rows + i, rows)).collect();
        k2.pipeline.send(batch).await.expect("send");
        k2.pipeline.drain().await.expect("drain");
        let rate = concurrent(&client, &url).await;
        println!(
            "/v1/trades?limit=100, 64 concurrent clients, {tail_rows} newer rows in the tail (skipped by their span): {rate:.0} req/s"
        );
        let rate = concurrent(&client, &format!("{url}&source=realtime")).await;
        println!("/v1/trades?limit=100&source=realtime (sorts the {tail_rows}-row tail every request), 64 clients: {rate:.0} req/s");
        http.handle.stop(true).await;
    })
    .expect("runtime");
}
