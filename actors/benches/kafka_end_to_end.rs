//! Kafka mode end to end, measured: the exchange simulator (Binance's
//! WebSocket protocol, in this process) makes K2_BENCH_RATE trades/s (default
//! 50,000) over three symbols for K2_BENCH_SECS (default 60) and then stops;
//! one K2 in Kafka mode with every role (source, producer, consumer,
//! flusher) takes them through the broker into Iceberg.
//!
//! Every second the bench asks K2's `/v1/symbols` twice, as a user would:
//! `source=hybrid` (what a query answers: the snapshot plus the log past it)
//! and `source=historical` (committed to Iceberg). The age of the newest
//! trade each answer holds (its exchange timestamp against the clock, the
//! oldest of the three symbols) is the exchange-to-queryable and
//! exchange-to-durable latency at that instant; p50/p99 over the run are
//! printed, with the sustained rates over the steady part (after the first
//! 10 s) and how long the backlog took to land after the market stopped.
//! The two questions cost K2 an aggregate over its table each second.
//!
//! Broker: K2_TEST_KAFKA (default 127.0.0.1:9092, the Tansu that
//! `tests/services.sh` starts). K2_BENCH_KAFKA adds `[kafka]` keys,
//! `;`-separated.
//!
//! `cargo bench -p k2 --bench kafka_end_to_end`

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use figment::providers::Env;
use k2::runtime::config::Config;
use k2::service::{Service, Stop};
use k2::sim::{SimConfig, Simulator};
use k2::transforms::dedup::MemoryStore;

const SYMBOLS: [&str; 3] = ["BTCUSDT", "ETHUSDT", "BNBUSDT"];

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn config(dir: &std::path::Path, sim: &Simulator, bootstrap: &str) -> Config {
    let file = dir.join("k2.toml");
    std::fs::write(
        &file,
        format!(
            "mode = \"kafka\"\n[http]\nbind = \"127.0.0.1:0\"\n\
             [binance]\nendpoint = \"{ws}\"\nalternate_endpoint = \"{ws}\"\nrest_endpoint = \"{rest}\"\nbook_ticker = false\nsymbols = {symbols:?}\n\
             [storage]\ndata_dir = \"{data}\"\n[maintenance]\nenabled = false\n\
             [kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic_prefix = \"e2e{prefix}.\"\npartitions = 3\n{extra}\n",
            ws = sim.ws_url(),
            rest = sim.rest_url(),
            symbols = SYMBOLS,
            data = dir.join("lake").display(),
            prefix = uuid::Uuid::new_v4().simple(),
            extra = std::env::var("K2_BENCH_KAFKA").unwrap_or_default().replace(';', "\n"),
        ),
    )
    .expect("config");
    Config::load_from(Some(&file), Env::prefixed("K2_BENCH_UNSET__")).expect("config")
}

/// One `/v1/symbols` answer: trades counted, and the age in seconds of the
/// newest trade of the symbol that is furthest behind (None before every
/// symbol has a trade).
async fn ask(http: &reqwest::Client, base: &str, source: &str) -> Option<(u64, Option<f64>)> {
    let response = http.get(format!("{base}/v1/symbols?source={source}")).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body: serde_json::Value = response.json().await.ok()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
    let rows = body["data"].as_array()?;
    let count = rows.iter().filter_map(|r| r["trades"].as_u64()).sum();
    let mut oldest: Option<f64> = None;
    for symbol in SYMBOLS {
        let last = rows.iter().find(|r| r["symbol"] == symbol).and_then(|r| r["last_timestamp"].as_str());
        let Some(last) = last.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
            return Some((count, None));
        };
        let age = now - last.timestamp_micros() as f64 / 1e6;
        oldest = Some(oldest.map_or(age, |o| o.max(age)));
    }
    Some((count, oldest))
}

fn percentiles(v: &[f64]) -> (f64, f64) {
    let d = common::percentiles(v.iter().map(|s| Duration::from_secs_f64(s.max(0.0))).collect());
    (d.0.as_secs_f64() * 1000.0, d.1.as_secs_f64() * 1000.0)
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rate: u64 = env("K2_BENCH_RATE", 50_000);
    let secs: u64 = env("K2_BENCH_SECS", 60);
    let bootstrap = std::env::var("K2_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let per_symbol = rate * secs / SYMBOLS.len() as u64;
    let total = per_symbol * SYMBOLS.len() as u64;
    println!("{rate} trades/s for {secs} s ({total} trades over {} symbols), broker {bootstrap}", SYMBOLS.len());
    let dir = tempfile::tempdir().expect("temp dir");
    k2::runtime::run(|| async move {
        let sim = Simulator::start(SimConfig {
            symbols: SYMBOLS.iter().map(|s| (*s).to_owned()).collect(),
            rate,
            trades_per_symbol: per_symbol,
            book_ticker_every: 0,
            // The market waits for K2 to subscribe, so the clock starts with it.
            hold_while_idle: true,
            ..SimConfig::default()
        })
        .await
        .expect("simulator");
        let config = config(dir.path(), &sim, &bootstrap);
        let mut k2 = Service::builder(&config)
            .dedup(Box::new(MemoryStore::new(config.dedup.window, config.dedup.capacity)))
            .start()
            .await
            .expect("K2");
        k2.start_binance();
        let server = k2.serve().expect("http");
        let base = format!("http://{}", server.addr);
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");

        let started = Instant::now();
        let (mut queryable, mut durable) = (Vec::new(), Vec::new());
        // (seconds since start, generated, queryable, durable)
        let mut samples: Vec<(f64, u64, u64, u64)> = Vec::new();
        let mut market_done: Option<f64> = None;
        let give_up = Duration::from_secs(secs * 3 + 300);
        loop {
            let tick = Instant::now();
            let generated = sim.stats.snapshot().trades_generated;
            let hybrid = ask(&http, &base, "hybrid").await;
            let historical = ask(&http, &base, "historical").await;
            let t = started.elapsed().as_secs_f64();
            let (q, d) = (hybrid.map_or(0, |h| h.0), historical.map_or(0, |h| h.0));
            assert!(q <= total && d <= total, "more trades than the market made: {q} queryable, {d} durable");
            if market_done.is_none() {
                // Ages are the latency only while the market still trades.
                queryable.extend(hybrid.and_then(|h| h.1));
                durable.extend(historical.and_then(|h| h.1));
                if generated >= total {
                    market_done = Some(t);
                }
            }
            samples.push((t, generated, q, d));
            if samples.len().is_multiple_of(5) {
                println!("  {t:.0} s: {generated} made, {q} queryable, {d} durable");
            }
            if d >= total {
                break;
            }
            if started.elapsed() > give_up {
                println!("gave up after {give_up:?}: {generated} made, {q} queryable, {d} durable");
                break;
            }
            tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
        }

        let end = samples.last().copied().unwrap_or_default();
        let steady: Vec<_> = samples.iter().filter(|s| s.0 >= 10.0 && market_done.is_none_or(|m| s.0 <= m)).collect();
        let rate_of = |f: fn(&(f64, u64, u64, u64)) -> u64| match (steady.first(), steady.last()) {
            (Some(a), Some(b)) if b.0 > a.0 => (f(b) - f(a)) as f64 / (b.0 - a.0),
            _ => 0.0,
        };
        println!(
            "sustained from 10 s until the market stopped: made {:.0}/s, queryable {:.0}/s, durable {:.0}/s (asked for {rate}/s)",
            rate_of(|s| s.1),
            rate_of(|s| s.2),
            rate_of(|s| s.3)
        );
        if let Some(m) = market_done {
            println!(
                "the market made its {total} trades in {m:.1} s; all durable {:.1} s after it stopped ({} of {total})",
                end.0 - m,
                end.3
            );
        }
        for (what, ages) in [("queryable (hybrid)", &queryable), ("durable (historical)", &durable)] {
            if ages.is_empty() {
                println!("exchange to {what}: no samples");
                continue;
            }
            let (p50, p99) = percentiles(ages);
            println!("exchange to {what}: p50 {p50:.0} ms, p99 {p99:.0} ms over {} samples", ages.len());
        }
        assert_eq!(end.3, total, "every trade the market made is in Iceberg once");
        server.handle.stop(true).await;
        k2.shutdown(Stop::Graceful).await;
        sim.stop().await;
    })
    .expect("runtime");
}
