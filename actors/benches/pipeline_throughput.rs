//! Sustained throughput of the live path over loopback: `k2 exchange-sim` (a
//! separate process) → WebSocket → connection actor → sequence tracker →
//! deduplicator → counting sink, both on this machine.
//!
//! Prints trades/s per second and for the whole window, exchange-to-sink
//! latency percentiles, and the peak RSS of the K2 process. Settings:
//! K2_BENCH_SECS (default 60), K2_BENCH_RATE (trades/s offered, default 0 =
//! as fast as K2 reads), K2_BENCH_SYMBOLS (default 3).
//!
//! `cargo bench -p k2 --bench pipeline_throughput`

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use figment::providers::Env;
use k2::runtime::config::Config;
use k2::service::pipeline::Pipeline;
use k2::sinks::{Pending, Sink, SinkError};
use k2::transforms::dedup::MemoryStore;
use k2_core::{MarketEvent, Timestamp};

/// Latency histogram in 10 µs buckets up to 10 s.
struct Latency {
    buckets: Vec<u64>,
}

impl Latency {
    fn percentile(&self, p: f64) -> Duration {
        let total: u64 = self.buckets.iter().sum();
        let want = (total as f64 * p).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Duration::from_micros((i as u64 + 1) * 10);
            }
        }
        Duration::from_secs(10)
    }
}

#[derive(Clone)]
struct BenchSink {
    trades: Arc<AtomicU64>,
    latency: Arc<Mutex<Latency>>,
    recording: Arc<std::sync::atomic::AtomicBool>,
}

impl Sink for BenchSink {
    fn name(&self) -> &'static str {
        "bench"
    }

    fn write(&mut self, events: Vec<MarketEvent>) -> Result<Option<Pending>, SinkError> {
        let now = Timestamp::now().as_micros();
        let n = events.iter().filter(|e| e.is_trade()).count() as u64;
        self.trades.fetch_add(n, Ordering::Relaxed);
        if self.recording.load(Ordering::Relaxed) {
            let mut l = self.latency.lock().unwrap();
            for e in &events {
                let us = (now - e.timestamp().as_micros()).max(0) as usize;
                let i = (us / 10).min(l.buckets.len() - 1);
                l.buckets[i] += 1;
            }
        }
        Ok(None)
    }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let secs = env_u64("K2_BENCH_SECS", 60);
    let rate = env_u64("K2_BENCH_RATE", 0);
    let symbols: Vec<String> =
        ["btcusdt", "ethusdt", "bnbusdt", "solusdt", "xrpusdt", "dogeusdt", "adausdt", "trxusdt"]
            .iter()
            .take(env_u64("K2_BENCH_SYMBOLS", 3) as usize)
            .map(|s| s.to_string())
            .collect();

    let mut sim = Command::new(env!("CARGO_BIN_EXE_k2"))
        .args(["exchange-sim", "--ws-bind", "127.0.0.1:0", "--rest-bind", "127.0.0.1:0", "--book-ticker-every", "0"])
        .args(["--rate", &rate.to_string(), "--symbols", &symbols.join(",")])
        .env("K2_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("k2 exchange-sim starts");
    let mut first = String::new();
    BufReader::new(sim.stdout.take().expect("stdout")).read_line(&mut first).expect("simulator address");
    let addrs: serde_json::Value = serde_json::from_str(&first).expect("simulator prints its addresses");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bench.toml");
    std::fs::write(
        &file,
        format!(
            "[binance]\nendpoint = \"{ws}\"\nalternate_endpoint = \"{ws}\"\nrest_endpoint = \"{rest}\"\nsymbols = {symbols:?}\nbook_ticker = false\n[gap_recovery]\nenabled = false\n",
            ws = addrs["ws"].as_str().unwrap_or_default(),
            rest = addrs["rest"].as_str().unwrap_or_default(),
        ),
    )
    .expect("config");
    let config = Config::load_from(Some(&file), Env::prefixed("K2_BENCH_UNSET__")).expect("config loads");

    let sink = BenchSink {
        trades: Arc::new(AtomicU64::new(0)),
        latency: Arc::new(Mutex::new(Latency { buckets: vec![0; 1_000_000] })),
        recording: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let bench = sink.clone();
    let result = k2::runtime::run(move || async move {
        let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
        let mut pipeline = Pipeline::builder(&config, Box::new(bench.clone())).dedup(Box::new(store)).start();
        pipeline.start_binance(&config);
        // Warm up: connect and let the stream settle.
        tokio::time::sleep(Duration::from_secs(3)).await;
        bench.recording.store(true, Ordering::Relaxed);
        let start_count = bench.trades.load(Ordering::Relaxed);
        let start = Instant::now();
        let mut last = start_count;
        let mut per_second = Vec::new();
        for _ in 0..secs {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = bench.trades.load(Ordering::Relaxed);
            per_second.push(now - last);
            last = now;
        }
        let total = bench.trades.load(Ordering::Relaxed) - start_count;
        (total, start.elapsed(), per_second)
    });
    let _ = sim.kill();
    let _ = sim.wait();
    let (total, elapsed, per_second) = result.expect("runtime");
    let rate = total as f64 / elapsed.as_secs_f64();
    let lat = sink.latency.lock().unwrap();
    let min = per_second.iter().min().copied().unwrap_or(0);
    let max = per_second.iter().max().copied().unwrap_or(0);
    let offered = match env_u64("K2_BENCH_RATE", 0) {
        0 => "as fast as K2 reads".to_owned(),
        r => format!("{r} trades/s"),
    };
    println!("pipeline_throughput: {secs} s window, {} symbols, offered {offered}", symbols.len());
    println!(
        "  trades through:       {total} in {:.1} s = {rate:.0} trades/s (per second min {min}, max {max})",
        elapsed.as_secs_f64()
    );
    println!(
        "  latency exchange->sink: p50 {:?}  p99 {:?}  p99.9 {:?}",
        lat.percentile(0.50),
        lat.percentile(0.99),
        lat.percentile(0.999)
    );
    println!("  peak RSS (K2 process):  {:.1} MiB", peak_rss_mib());
}
