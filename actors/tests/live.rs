//! The live path over real sockets: the exchange simulator (a real
//! WebSocket and REST server on loopback) → connection actor → sequence
//! tracker → deduplicator → sink, with faults injected on schedule.

use std::collections::BTreeMap;
use std::time::Duration;

use figment::providers::Env;
use k2::runtime::config::Config;
use k2::service::pipeline::Pipeline;
use k2::sim::{FaultPlan, SimConfig, Simulator};
use k2::sinks::MemorySink;
use k2::transforms::dedup::MemoryStore;
use k2_core::MarketEvent;

/// K2 pointed at the simulator; `binance_extra` lines go in `[binance]`.
fn config(sim: &Simulator, binance_extra: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k2.toml");
    let text = format!(
        "[binance]\nendpoint = \"{ws}\"\nalternate_endpoint = \"{ws}\"\nrest_endpoint = \"{rest}\"\nreconnect_initial = \"10ms\"\nreconnect_max = \"100ms\"\n{binance_extra}\n\
         [gap_recovery]\nrequests_per_second = 500\n[sequence]\nreorder_timeout = \"200ms\"\n",
        ws = sim.ws_url(),
        rest = sim.rest_url()
    );
    std::fs::write(&file, text).unwrap();
    Config::load_from(Some(&file), Env::prefixed("K2_TEST_UNSET__")).unwrap()
}

/// Sum of a metric over all its label sets, from /metrics text.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Trade ids per symbol as they reached the sink.
fn trade_ids(sink: &MemorySink) -> BTreeMap<String, Vec<i64>> {
    let mut ids: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for e in sink.events() {
        if let MarketEvent::Trade(t) = e {
            ids.entry(t.symbol.to_string()).or_default().push(t.source_sequence.unwrap());
        }
    }
    ids
}

async fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every trade id 1..=n once per symbol (sorted view; arrival order may mix
/// recovered trades in later).
fn assert_exactly_once(ids: &BTreeMap<String, Vec<i64>>, symbols: &[&str], n: i64) {
    for s in symbols {
        let mut got = ids.get(*s).cloned().unwrap_or_default();
        got.sort_unstable();
        let total = got.len();
        got.dedup();
        assert_eq!(total, got.len(), "{s}: a trade reached the sink twice");
        let expected: Vec<i64> = (1..=n).collect();
        if got != expected {
            let missing: Vec<_> = expected.iter().filter(|i| got.binary_search(i).is_err()).take(10).collect();
            panic!("{s}: {} of {n} trades; first missing {missing:?}", got.len());
        }
    }
}

#[test]
fn faults_are_absorbed_and_every_trade_arrives_once() {
    k2::runtime::run(|| async {
        const PER_SYMBOL: u64 = 34_000;
        let symbols = ["BTCUSDT", "ETHUSDT", "BNBUSDT"];
        let sim = Simulator::start(SimConfig {
            symbols: symbols.iter().map(|s| s.to_string()).collect(),
            rate: 0,
            trades_per_symbol: PER_SYMBOL,
            book_ticker_every: 3,
            faults: FaultPlan {
                gap_every: 997,
                gap_size: 3,
                duplicate_every: 211,
                reorder_every: 337,
                malformed_every: 5003,
                disconnect_every: 25_013,
                ..FaultPlan::default()
            },
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let config = config(&sim, "");
        let sink = MemorySink::new();
        let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
        let mut pipeline = Pipeline::builder(&config, Box::new(sink.clone())).dedup(Box::new(store)).start();
        pipeline.start_binance(&config);

        let market = sim.market.clone();
        wait_until("the market to finish", Duration::from_secs(120), || market.is_done()).await;
        let expected = PER_SYMBOL as usize * symbols.len();
        wait_until("every trade, recovered ones included", Duration::from_secs(60), || {
            trade_ids(&sink).values().map(Vec::len).sum::<usize>() >= expected
        })
        .await;
        // Anything late would show up now as a second copy.
        tokio::time::sleep(Duration::from_millis(500)).await;
        pipeline.drain().await.unwrap();

        let stats = sim.stats.snapshot();
        assert_exactly_once(&trade_ids(&sink), &symbols, PER_SYMBOL as i64);
        assert!(stats.trades_generated >= 100_000);
        assert!(
            stats.gaps > 0
                && stats.duplicates > 0
                && stats.reorders > 0
                && stats.malformed > 0
                && stats.disconnects > 0
        );

        let m = k2::runtime::telemetry::render();
        assert_eq!(metric(&m, "k2_sequence_gaps_total"), stats.gaps, "gaps counted = gaps injected");
        assert_eq!(metric(&m, "k2_sequence_missing_total"), stats.gap_trades);
        assert_eq!(metric(&m, "k2_gap_recovery_trades_total"), stats.gap_trades, "every missing trade was fetched");
        // The series exists at 0 from the start (telemetry's catalogue).
        assert_eq!(metric(&m, "k2_gap_recovery_trades_total{result=\"unrecoverable\"}"), 0, "nothing unrecoverable");
        assert_eq!(metric(&m, "k2_binance_reconnects_total"), stats.disconnects, "reconnects = disconnects injected");
        assert_eq!(metric(&m, "k2_binance_rejected_total"), stats.malformed, "malformed frames rejected, counted");
        let quotes = sink.events().iter().filter(|e| !e.is_trade()).count() as u64;
        assert_eq!(quotes, stats.book_tickers_sent, "book tickers all arrive too");
        sim.stop().await;
    })
    .unwrap();
}

#[test]
fn rotation_and_server_shutdown_lose_and_double_nothing() {
    k2::runtime::run(|| async {
        const PER_SYMBOL: u64 = 12_000;
        let symbols = ["BTCUSDT", "ETHUSDT"];
        let sim = Simulator::start(SimConfig {
            symbols: symbols.iter().map(|s| s.to_string()).collect(),
            // About 4 s of steady stream.
            rate: 6_000,
            trades_per_symbol: PER_SYMBOL,
            book_ticker_every: 0,
            faults: FaultPlan {
                shutdown_after: 15_000,
                shutdown_grace: Duration::from_millis(800),
                ..FaultPlan::default()
            },
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let config = config(&sim, "rotate_after = \"1s\"");
        let sink = MemorySink::new();
        let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
        let mut pipeline = Pipeline::builder(&config, Box::new(sink.clone())).dedup(Box::new(store)).start();
        pipeline.start_binance(&config);

        let market = sim.market.clone();
        wait_until("the market to finish", Duration::from_secs(60), || market.is_done()).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        pipeline.drain().await.unwrap();

        assert_exactly_once(&trade_ids(&sink), &symbols, PER_SYMBOL as i64);
        let m = k2::runtime::telemetry::render();
        assert!(metric(&m, "k2_binance_rotations_total") >= 3, "{}", metric(&m, "k2_binance_rotations_total"));
        assert_eq!(sim.stats.snapshot().shutdowns, 1);
        assert_eq!(metric(&m, "k2_sequence_gaps_total"), 0, "a rotation is not a gap");
        assert!(metric(&m, "k2_duplicates_total") > 0, "the overlap was absorbed by dedup");
        sim.stop().await;
    })
    .unwrap();
}

#[test]
fn a_recording_is_replayed_frame_for_frame() {
    k2::runtime::run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let recording = dir.path().join("capture.jsonl");
        let frames: Vec<String> = (1..=50)
            .map(|t| {
                format!(
                    r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":1,"s":"BTCUSDT","t":{t},"p":"60610.5","q":"0.001","T":1722766102789,"m":false,"M":true}}}}"#
                )
            })
            .chain([r#"{"result":null,"id":1}"#.to_owned(), "not json".to_owned()])
            .collect();
        std::fs::write(&recording, frames.join("\n")).unwrap();
        let sim = Simulator::start(SimConfig { replay: Some(recording), rate: 0, ..SimConfig::default() }).await.unwrap();
        let config = config(&sim, "symbols = [\"btcusdt\"]");
        let sink = MemorySink::new();
        let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
        let mut pipeline = Pipeline::builder(&config, Box::new(sink.clone())).dedup(Box::new(store)).start();
        pipeline.start_binance(&config);
        let market = sim.market.clone();
        wait_until("the replay to finish", Duration::from_secs(20), || market.is_done() && sink.len() >= 50).await;
        pipeline.drain().await.unwrap();
        assert_eq!(trade_ids(&sink)["BTCUSDT"], (1..=50).collect::<Vec<i64>>());
        assert_eq!(metric(&k2::runtime::telemetry::render(), "k2_binance_rejected_total"), 1, "the one bad line");
        sim.stop().await;
    })
    .unwrap();
}
