//! Reach: the Flight SQL port beside DuckDB over the same Parquet files, and
//! the replay port's rate.
//!
//! Builds a table of K2_BENCH_ROWS trades (default 5,000,000; 50 symbols
//! over 5 days) through the pipeline into Iceberg, then:
//! - asks K2 through the ADBC Flight SQL driver and DuckDB over the table's
//!   Parquet files the same four questions (`flight_vs_duckdb.py`,
//!   K2_BENCH_RUNS times each, default 50) and prints p50/p99 of each;
//! - replays at `speed=0` to one client (10 symbols' streams combined),
//!   then to 16 clients at once (one symbol each), counting every frame up
//!   to the normal close: events/s delivered.
//!
//! The clients run on the same two cores as K2. `K2_BENCH_PARTS` (default
//! `flight,replay`) picks the parts to run.
//!
//! `cargo bench -p k2 --bench reach`

mod common;

use std::time::Instant;

use common::{DAY, DAY0, DAYS, SYMBOLS};
use futures_util::StreamExt;
use k2::service::Service;
use k2::transforms::dedup::MemoryStore;
use tokio_tungstenite::tungstenite::Message;

/// Frames of one replay stream, read as fast as they come, up to its close
/// (which must be the normal one).
async fn replay(url: String) -> u64 {
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("replay connects");
    let mut frames = 0u64;
    while let Some(message) = ws.next().await {
        match message.expect("replay frame") {
            Message::Text(_) => frames += 1,
            Message::Close(frame) => {
                let code = frame.map(|f| u16::from(f.code));
                assert_eq!(code, Some(1000), "{url}: the end of the range closes normally");
                break;
            }
            _ => {}
        }
    }
    frames
}

fn main() {
    let rows: u64 = std::env::var("K2_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000_000);
    let runs: u64 = std::env::var("K2_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let parts = std::env::var("K2_BENCH_PARTS").unwrap_or_else(|_| "flight,replay".to_owned());
    let (flight_part, replay_part) = (parts.contains("flight"), parts.contains("replay"));
    let dir = tempfile::tempdir().expect("temp dir");
    let config = common::market_config(
        dir.path(),
        "[flight]\nenabled = true\nbind = \"127.0.0.1:0\"\ntimeout = \"600s\"\nmax_rows = 100000000\n\
         [replay]\nenabled = true\nbind = \"127.0.0.1:0\"\nmax_clients = 16\n",
    );
    k2::runtime::run(|| async move {
        let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
        let k2 = Service::builder(&config).dedup(Box::new(store)).start().await.expect("K2 starts");
        common::load_market(&k2, rows).await;

        if flight_part {
            flight_vs_duckdb(&k2, dir.path(), runs).await;
        }
        if replay_part {
            replay_rates(&k2, rows).await;
        }
    })
    .expect("runtime");
}

/// The four questions through ADBC and of DuckDB, side by side.
async fn flight_vs_duckdb(k2: &Service, dir: &std::path::Path, runs: u64) {
    let flight = k2.serve_flight().expect("flight port").expect("flight enabled");
    let files = common::parquet_files(dir, "trades");
    let data = files[0].0.ancestors().find(|p| p.file_name().is_some_and(|n| n == "data")).expect("data dir");
    let glob = format!("{}/**/*.parquet", data.display());
    println!("Flight SQL (ADBC) beside DuckDB over the same {} Parquet files, {runs} runs each:", files.len());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/flight_vs_duckdb.py");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .args([format!("grpc://{flight}"), glob, runs.to_string()])
            .output()
            .expect("python3")
    })
    .await
    .expect("bench client");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    println!("{}", String::from_utf8_lossy(&out.stdout));
}

/// Events/s delivered at `speed=0`, to one client and to 16.
async fn replay_rates(k2: &Service, rows: u64) {
    let port = k2.serve_replay().expect("replay port").expect("replay enabled");
    println!("replay starting (pid {})", std::process::id());
    let (start, end) = (DAY0, DAY0 + DAYS * DAY);
    let per_symbol = rows / SYMBOLS;
    let streams: Vec<String> = (0..10).map(|s| format!("s{s:02}usdt@trade")).collect();
    let url = format!("ws://{port}/stream?streams={}&start={start}&end={end}&speed=0", streams.join("/"));
    let t = Instant::now();
    let frames = replay(url).await;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(frames, per_symbol * 10, "every stored trade of the 10 symbols once");
    println!(
        "replay, speed=0, one client, 10 streams combined: {frames} events in {secs:.1} s = {:.0} events/s (target >= 500000)",
        frames as f64 / secs
    );

    let t = Instant::now();
    let clients: Vec<_> = (0..16)
        .map(|s| {
            let url = format!("ws://{port}/ws/s{s:02}usdt@trade?start={start}&end={end}&speed=0");
            tokio::spawn(replay(url))
        })
        .collect();
    let mut total = 0;
    for c in clients {
        let frames = c.await.expect("client");
        assert_eq!(frames, per_symbol, "every stored trade of the symbol once");
        total += frames;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "replay, speed=0, 16 clients at once (one symbol each): {total} events in {secs:.1} s = {:.0} events/s in all",
        total as f64 / secs
    );
}
