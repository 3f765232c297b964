//! `k2 run` and `k2 exchange-sim` as processes: the service answers /health
//! and /metrics while streaming, and SIGTERM drains and exits 0.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    Run, assert_contiguous_trades, get, get_json, metric, post, read_iceberg, start_sim, start_sim_with, trades_seen,
    wait_until, write_sim_config,
};

/// `k2 run` with `config`, its data directory beside it.
fn start_run(config: &std::path::Path, log: &str) -> Run {
    let dir = config.parent().unwrap();
    Run::start(config, &dir.join("data"), log, dir.join(format!("k2-{}.log", uuid::Uuid::new_v4().simple())))
}

#[test]
fn run_streams_from_the_simulator_and_drains_on_sigterm() {
    let (_sim, addrs) = start_sim("5000");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("k2.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nbind = \"127.0.0.1:0\"\n[binance]\nendpoint = \"{ws}\"\nalternate_endpoint = \"{ws}\"\nrest_endpoint = \"{rest}\"\n",
            ws = addrs["ws"].as_str().unwrap(),
            rest = addrs["rest"].as_str().unwrap()
        ),
    )
    .unwrap();
    let run = start_run(&config, "warn");
    let http = run.http.clone();

    // Wait for trades to reach the sink.
    let start = Instant::now();
    loop {
        let metrics = get(&http, "/metrics");
        // The series exists at 0 from the start; a count above 0 is trades.
        let trades = metrics.lines().find_map(|l| l.strip_prefix("k2_sink_events_total{kind=\"trade\"} "));
        if trades.is_some_and(|n| n.trim() != "0") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no trades reached the sink:\n{metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let health = get(&http, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"binance-0\":{\"state\":\"running\""), "{health}");

    let rest = run.stop();
    assert!(rest.contains("stopped;") && rest.contains("trades"), "{rest}");
}

#[test]
fn a_crash_loop_stops_the_service_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("k2.toml");
    std::fs::write(
        &config,
        "[http]\nbind = \"127.0.0.1:0\"\nadmin = true\n[binance]\nenabled = false\n[supervision]\nmax_restarts = 1\nbackoff_initial = \"10ms\"\n",
    )
    .unwrap();
    let run = start_run(&config, "error");
    let http = run.http.clone();
    assert!(post(&http, "/admin/faults?actor=dedup&kind=panic").starts_with("HTTP/1.1 202"));
    // The first panic is restarted; wait for it before the second.
    let start = Instant::now();
    while !get(&http, "/health").contains("\"dedup\":{\"state\":\"running\",\"restarts\":1") {
        assert!(start.elapsed() < Duration::from_secs(10), "no restart seen");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(post(&http, "/admin/faults?actor=dedup&kind=panic").starts_with("HTTP/1.1 202"));
    let (code, rest) = run.wait();
    assert_eq!(code, Some(70), "{rest}");
    assert!(rest.contains("dedup failed too often"), "{rest}");
}

/// Stop K2 with SIGTERM mid-stream and start it again on the same tables:
/// trades the exchange sent while K2 was down are recovered (the sequence
/// high-water marks come back from the latest snapshot), and nothing is
/// written twice. Checked by another engine (pyiceberg): per symbol, the
/// trade ids form one contiguous run with no duplicates.
#[test]
fn sigterm_mid_stream_then_restart_keeps_every_trade_exactly_once() {
    let (_sim, addrs) = start_sim("3000");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("k2.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nbind = \"127.0.0.1:0\"\n[binance]\nendpoint = \"{ws}\"\nalternate_endpoint = \"{ws}\"\nrest_endpoint = \"{rest}\"\nbook_ticker = false\n[flush]\nmax_age = \"300ms\"\n[gap_recovery]\nrequests_per_second = 50\n",
            ws = addrs["ws"].as_str().unwrap(),
            rest = addrs["rest"].as_str().unwrap()
        ),
    )
    .unwrap();

    for round in 0..2 {
        let run = start_run(&config, "warn");
        let http = run.http.clone();
        let start = Instant::now();
        let base = trades_seen(&http, "hybrid");
        while trades_seen(&http, "hybrid") < base + 3000 {
            assert!(start.elapsed() < Duration::from_secs(30), "round {round}: trades stopped arriving");
            std::thread::sleep(Duration::from_millis(100));
        }
        if round == 1 {
            // The trades missed while K2 was down must have been fetched.
            let start = Instant::now();
            loop {
                let m = get(&http, "/metrics");
                let recovered = m
                    .lines()
                    .filter_map(|l| l.strip_prefix("k2_gap_recovery_trades_total{result=\"recovered\"} "))
                    .any(|n| n.trim() != "0");
                let idle = m.lines().any(|l| l == "k2_gap_recovery_queue 0");
                if recovered && idle {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(30), "no gap recovery after the restart:\n{m}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let log = run.stop();
        assert!(log.contains("0 rows not committed"), "{log}");
        // Let the exchange move on while K2 is down.
        std::thread::sleep(Duration::from_millis(700));
    }

    let v = read_iceberg(&dir.path().join("data"));
    assert_eq!(v["trades"]["per_symbol"].as_object().unwrap().len(), 3, "{v}");
    assert_contiguous_trades(&v);
}

/// The ASX acceptance check: after `k2 load` of the real sample, a `k2 run`
/// on the same tables answers the BHP summary for 10 March 2014 (Sydney
/// trading date) exactly as a computation straight over the CSV does.
#[test]
fn asx_summary_after_load_matches_the_csv() {
    use rust_decimal::Decimal;
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/asx-sample");
    if !sample.is_dir() {
        eprintln!("SKIPPED: {} is absent", sample.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let load = Command::new(env!("CARGO_BIN_EXE_k2"))
        .args(["load", "--json", "--data-dir", data.to_str().unwrap(), sample.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(load.status.success(), "{}", String::from_utf8_lossy(&load.stderr));

    // Independently: every BHP (company 7078) trade dated 03/10/2014 in the
    // file (times are Sydney local, so the file's date is the trading date).
    let csv = std::fs::read_to_string(sample.join("trades/7078.csv")).unwrap();
    let (mut open, mut close, mut high, mut low) = (None, None, None::<Decimal>, None::<Decimal>);
    let (mut volume, mut notional, mut count) = (Decimal::ZERO, Decimal::ZERO, 0u64);
    let mut last_time = String::new();
    for line in csv.lines().filter(|l| l.starts_with("03/10/2014,")) {
        let f: Vec<&str> = line.split(',').collect();
        let (price, qty): (Decimal, Decimal) = (f[2].parse().unwrap(), f[3].parse().unwrap());
        assert!(f[1] >= last_time.as_str(), "the file is in time order");
        last_time = f[1].to_owned();
        open.get_or_insert(price);
        close = Some(price);
        high = Some(high.map_or(price, |h| h.max(price)));
        low = Some(low.map_or(price, |l| l.min(price)));
        volume += qty;
        notional += price * qty;
        count += 1;
    }
    let vwap = (notional / volume).round_dp_with_strategy(8, rust_decimal::RoundingStrategy::MidpointNearestEven);

    let config = dir.path().join("k2.toml");
    std::fs::write(&config, "[http]\nbind = \"127.0.0.1:0\"\n[binance]\nenabled = false\n").unwrap();
    let run = start_run(&config, "warn");
    let http = run.http.clone();
    let body = get(&http, "/v1/summary/BHP/2014-03-10?exchange=ASX");
    let json = body.split_once("\r\n\r\n").unwrap().1;
    let json = &json[json.find('{').unwrap()..=json.rfind('}').unwrap()];
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let d = &v["data"];
    let dec = |k: &str| -> Decimal { d[k].as_str().unwrap_or_else(|| panic!("{k} in {v}")).parse().unwrap() };
    assert_eq!(d["tz"], "Australia/Sydney");
    assert_eq!(d["trade_count"].as_u64(), Some(count));
    assert_eq!(dec("open"), open.unwrap());
    assert_eq!(dec("close"), close.unwrap());
    assert_eq!(dec("high"), high.unwrap());
    assert_eq!(dec("low"), low.unwrap());
    assert_eq!(dec("volume"), volume);
    assert_eq!(dec("notional"), notional);
    assert_eq!(dec("vwap"), vwap);
    assert_eq!(v["source"], "hybrid");
    run.stop();
}

/// The latest snapshot id `/v1/snapshots` lists for trades.
fn latest_snapshot(http: &str) -> Option<i64> {
    get_json(http, "/v1/snapshots?table=trades")["data"].as_array()?.last()?["snapshot_id"].as_i64()
}

#[test]
fn a_query_node_beside_a_writer_follows_its_commits_and_never_goes_back() {
    // Three symbols of 2,000 trades.
    let total = 6000;
    let (_sim, addrs) = start_sim_with("400", &["--trades", "2000", "--first-trade-id", "1", "--hold-while-idle"]);
    let rest = addrs["rest"].as_str().unwrap().trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = write_sim_config(dir.path(), &addrs, "[flush]\nmax_age = \"1s\"\n");
    let data = dir.path().join("data");
    let writer = Run::start(&config, &data, "warn", dir.path().join("writer.log"));
    // The same file and directory: the role alone makes it a reader, and a
    // reader takes no lock, so it starts beside the writer.
    let reader = Run::start_with_env(&config, &data, "warn", dir.path().join("reader.log"), &[("K2__ROLE", "query")]);
    let health = get_json(&reader.http, "/health");
    let actors = health["actors"].as_object().expect("/health lists the actors");
    assert!(
        actors.contains_key("query-handler") && !actors.contains_key("binance-0"),
        "a query node runs no source: {health}"
    );

    // While the writer commits, what the query node sees only grows.
    let mut seen = Vec::new();
    let mut last = 0;
    wait_until("the market's trades were not all made", 60, || {
        let now = trades_seen(&reader.http, "historical");
        assert!(now >= last, "the query node went back from {last} to {now} trades");
        if now != last {
            seen.push(now);
        }
        last = now;
        get_json(&rest, "/sim/stats")["trades_generated"].as_u64() == Some(total)
    });

    // Once the writer has committed every trade, the query node answers
    // the same, from the same snapshot.
    wait_until("the writer did not commit every trade", 60, || trades_seen(&writer.http, "historical") == total);
    wait_until("the query node did not catch up with the writer", 30, || {
        trades_seen(&reader.http, "historical") == total
            && trades_seen(&reader.http, "hybrid") == total
            && latest_snapshot(&reader.http) == latest_snapshot(&writer.http)
    });
    assert!(seen.len() >= 2, "the query node saw the tables grow in steps, not once: {seen:?}");
    for table in ["trades", "quotes"] {
        let failures = metric(&reader.http, &format!("k2_query_follow_failures_total{{table=\"{table}\"}}"));
        assert_eq!(failures, Some(0.0), "the query node failed to load a snapshot of {table}");
    }
    reader.stop();
    writer.stop();
    assert_contiguous_trades(&read_iceberg(&data));
}

#[test]
fn a_role_is_checked_against_the_mode_and_decides_the_sources() {
    let check = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_k2"))
            .args(["run", "--check-config"])
            .args(args)
            .env_remove("K2__ROLE")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = check(&["--role", "query"]);
    assert!(ok, "{text}");
    assert!(text.contains("role: Query"), "{text}");
    // The role turns the sources off, and (embedded mode) leaves the
    // tables' maintenance to the writer.
    for section in ["binance: BinanceConfig", "maintenance: MaintenanceConfig"] {
        let rest = text.split(section).nth(1).unwrap_or_default();
        assert!(rest.trim_start_matches([' ', '{', '\n']).starts_with("enabled: false"), "{section}: {text}");
    }

    let (ok, text) = check(&["--role", "flusher"]);
    assert!(!ok, "a flusher needs Kafka mode: {text}");
    assert!(text.contains("role = \"flusher\" need mode = \"kafka\""), "{text}");
    let (ok, text) = check(&["--role", "reader"]);
    assert!(!ok && text.contains("--role"), "an unknown role names the flag: {text}");
}
