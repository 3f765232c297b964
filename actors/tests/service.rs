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
    let mut sim = Command::new(env!("CARGO_BIN_EXE_k2"))
        .args(["exchange-sim", "--ws-bind", "127.0.0.1:0", "--rest-bind", "127.0.0.1:0", "--rate", "5000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(sim.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _sim = Kill(sim);
    let addrs: serde_json::Value = serde_json::from_str(&line).unwrap();

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
