//! `k2 run` and `k2 exchange-sim` as processes: the service answers /health
//! and /metrics while streaming, and SIGTERM drains and exits 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `k2 run` with `config` and waits for the line that gives its HTTP
/// address: the process, the rest of its stderr, and the address.
fn start_run(config: &std::path::Path, log: &str) -> (Kill, BufReader<std::process::ChildStderr>, String) {
    let mut run = Command::new(env!("CARGO_BIN_EXE_k2"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("K2_LOG", log)
        .env("K2__STORAGE__DATA_DIR", config.parent().unwrap().join("data"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(run.stderr.take().unwrap());
    let mut line = String::new();
    let http = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "k2 run ended early");
        if let Some(rest) = line.strip_prefix("k2 run: http://") {
            break rest.split('/').next().unwrap().to_owned();
        }
    };
    (Kill(run), stderr, http)
}

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: k2\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
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
    let (mut run, mut stderr, http) = start_run(&config, "warn");
    let pid = run.0.id();

    // Wait for trades to reach the sink.
    let start = Instant::now();
    loop {
        let metrics = get(&http, "/metrics");
        if metrics.contains("k2_sink_events_total{kind=\"trade\"}") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no trades reached the sink:\n{metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let health = get(&http, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"binance-0\":{\"state\":\"running\""), "{health}");

    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(status.success());
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let code = run.0.wait().unwrap();
    assert_eq!(code.code(), Some(0), "{rest}");
    assert!(rest.contains("stopped;") && rest.contains("trades"), "{rest}");
}

fn post(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "POST {path} HTTP/1.1\r\nHost: k2\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
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
    let (mut run, mut stderr, http) = start_run(&config, "error");
    assert!(post(&http, "/admin/faults?actor=dedup&kind=panic").starts_with("HTTP/1.1 202"));
    // The first panic is restarted; wait for it before the second.
    let start = Instant::now();
    while !get(&http, "/health").contains("\"dedup\":{\"state\":\"running\",\"restarts\":1") {
        assert!(start.elapsed() < Duration::from_secs(10), "no restart seen");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(post(&http, "/admin/faults?actor=dedup&kind=panic").starts_with("HTTP/1.1 202"));
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let code = run.0.wait().unwrap();
    assert_eq!(code.code(), Some(70), "{rest}");
    assert!(rest.contains("dedup failed too often"), "{rest}");
}

/// Starts `k2 exchange-sim` (no faults) and returns it with its addresses.
fn start_sim(rate: &str) -> (Kill, serde_json::Value) {
    let mut sim = Command::new(env!("CARGO_BIN_EXE_k2"))
        .args(["exchange-sim", "--ws-bind", "127.0.0.1:0", "--rest-bind", "127.0.0.1:0", "--rate", rate])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(sim.stdout.take().unwrap()).read_line(&mut line).unwrap();
    (Kill(sim), serde_json::from_str(&line).unwrap())
}

fn sigterm_and_wait(mut run: Kill, mut stderr: BufReader<std::process::ChildStderr>) -> String {
    let status = Command::new("kill").args(["-TERM", &run.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let code = run.0.wait().unwrap();
    assert_eq!(code.code(), Some(0), "{rest}");
    rest
}

fn trades_seen(http: &str) -> u64 {
    let body = get(http, "/v1/symbols");
    let json = body.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // The body may be chunked; the JSON object is the part between braces.
    let json = &json[json.find('{').unwrap_or(0)..=json.rfind('}').unwrap_or(0)];
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    v["data"].as_array().map_or(0, |a| a.iter().map(|r| r["trades"].as_u64().unwrap_or(0)).sum())
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
        let (run, stderr, http) = start_run(&config, "warn");
        let start = Instant::now();
        let base = trades_seen(&http);
        while trades_seen(&http) < base + 3000 {
            assert!(start.elapsed() < Duration::from_secs(30), "round {round}: trades stopped arriving");
            std::thread::sleep(Duration::from_millis(100));
        }
        if round == 1 {
            // The trades missed while K2 was down must have been fetched.
            let start = Instant::now();
            loop {
                let m = get(&http, "/metrics");
                let recovered = m.lines().any(|l| l.starts_with("k2_gap_recovery_trades_total{result=\"recovered\"}"));
                let idle = m.lines().any(|l| l == "k2_gap_recovery_queue 0");
                if recovered && idle {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(30), "no gap recovery after the restart:\n{m}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let log = sigterm_and_wait(run, stderr);
        assert!(log.contains("0 rows not committed"), "{log}");
        // Let the exchange move on while K2 is down.
        std::thread::sleep(Duration::from_millis(700));
    }

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/read_iceberg.py");
    let out = Command::new("python3").arg(script).arg(dir.path().join("data")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let per_symbol = v["trades"]["per_symbol"].as_object().unwrap();
    assert_eq!(per_symbol.len(), 3, "{v}");
    for (symbol, s) in per_symbol {
        let (rows, distinct) = (s["rows"].as_i64().unwrap(), s["distinct"].as_i64().unwrap());
        let (min, max) = (s["min"].as_i64().unwrap(), s["max"].as_i64().unwrap());
        assert_eq!(rows, distinct, "{symbol}: a trade was written twice: {s}");
        assert_eq!(rows, max - min + 1, "{symbol}: trades are missing: {s}");
    }
    assert_eq!(v["trades"]["rows"], v["trades"]["distinct_message_ids"]);
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
    let (run, stderr, http) = start_run(&config, "warn");
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
    sigterm_and_wait(run, stderr);
}
