//! Helpers of the tests that run K2 and the exchange simulator as processes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (SIGKILL) when dropped.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `k2 run` whose stderr goes to a file (a pipe nobody reads would stall
/// it).
pub struct Run {
    pub process: Kill,
    pub log: PathBuf,
    pub http: String,
}

impl Run {
    /// Starts `k2 run --config config` with `K2_LOG=log_level` and the data
    /// directory `data`, logging to `log`, and waits for its HTTP address.
    pub fn start(config: &Path, data: &Path, log_level: &str, log: PathBuf) -> Run {
        Self::start_with_env(config, data, log_level, log, &[])
    }

    /// As [`Run::start`] with more environment variables.
    pub fn start_with_env(config: &Path, data: &Path, log_level: &str, log: PathBuf, env: &[(&str, &str)]) -> Run {
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_k2"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env("K2_LOG", log_level)
            .env("K2__STORAGE__DATA_DIR", data)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        let mut process = Kill(child);
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text.lines().find_map(|l| l.strip_prefix("k2 run: http://")) {
                let http = line.split('/').next().unwrap().to_owned();
                return Run { process, log, http };
            }
            if let Ok(Some(status)) = process.0.try_wait() {
                panic!("k2 run ended early ({status}):\n{text}");
            }
            assert!(start.elapsed() < Duration::from_secs(60), "k2 run did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to flush or leave the consumer group.
    pub fn kill9(mut self) {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
    }

    /// Waits for the process to end by itself: its exit code and log.
    pub fn wait(mut self) -> (Option<i32>, String) {
        let code = self.process.0.wait().unwrap();
        (code.code(), std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// SIGTERM, then waits for a clean exit; returns the log.
    pub fn stop(mut self) -> String {
        let status = Command::new("kill").args(["-TERM", &self.process.0.id().to_string()]).status().unwrap();
        assert!(status.success());
        let code = self.process.0.wait().unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert_eq!(code.code(), Some(0), "{log}");
        log
    }
}

/// Starts `k2 exchange-sim` (no faults) and returns it with its addresses.
pub fn start_sim(rate: &str) -> (Kill, serde_json::Value) {
    start_sim_with(rate, &[])
}

/// Starts `k2 exchange-sim` with more arguments (faults, say) and returns it
/// with its addresses.
pub fn start_sim_with(rate: &str, args: &[&str]) -> (Kill, serde_json::Value) {
    let mut sim = Command::new(env!("CARGO_BIN_EXE_k2"))
        .args(["exchange-sim", "--ws-bind", "127.0.0.1:0", "--rest-bind", "127.0.0.1:0", "--rate", rate])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(sim.stdout.take().unwrap()).read_line(&mut line).unwrap();
    (Kill(sim), serde_json::from_str(&line).unwrap())
}

/// The `[binance]` section pointing at a simulator started by
/// [`start_sim`] (trade streams only).
pub fn sim_binance(addrs: &serde_json::Value) -> String {
    format!(
        "[binance]\nendpoint = \"{ws}\"\nalternate_endpoint = \"{ws}\"\nrest_endpoint = \"{rest}\"\nbook_ticker = false\n",
        ws = addrs["ws"].as_str().unwrap(),
        rest = addrs["rest"].as_str().unwrap()
    )
}

/// Writes `k2.toml` in `dir`: an HTTP port of the system's choosing with
/// admin endpoints, the simulator's streams, then `rest`.
pub fn write_sim_config(dir: &Path, addrs: &serde_json::Value, rest: &str) -> PathBuf {
    let path = dir.join("k2.toml");
    let text = format!("[http]\nbind = \"127.0.0.1:0\"\nadmin = true\n{}{rest}", sim_binance(addrs));
    std::fs::write(&path, text).unwrap();
    path
}

/// The address `run` announces on its log line starting `prefix` (what
/// follows it up to the first `/`), waited for up to 30 s.
pub fn announced(run: &Run, prefix: &str) -> String {
    let find = || {
        std::fs::read_to_string(&run.log)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(prefix).map(|r| r.split('/').next().unwrap_or(r).to_owned()))
    };
    wait_until(&format!("{prefix:?} announced"), 30, || find().is_some());
    find().unwrap_or_default()
}

/// Polls `ok` every 50 ms; fails with `what` after `secs`.
pub fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < Duration::from_secs(secs), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Real Binance trades for one symbol with the given trade ids.
pub fn trades(symbol: &str, ids: impl IntoIterator<Item = u64>) -> Vec<k2_core::MarketEvent> {
    let mut p = k2_core::source::binance::BinanceParser::default();
    ids.into_iter()
        .map(|t| {
            let f = format!(
                r#"{{"e":"trade","E":1,"s":"{symbol}","t":{t},"p":"1.5","q":"2","T":1722766102789,"m":true,"M":true}}"#
            );
            match p.parse(f.as_bytes(), k2_core::Timestamp::now()).unwrap() {
                k2_core::source::binance::Frame::Event(e) => e,
                other => panic!("{other:?}"),
            }
        })
        .collect()
}

/// A GET over a plain socket: the whole response, headers included.
pub fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: k2\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A POST without a body: the whole response.
pub fn post(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "POST {path} HTTP/1.1\r\nHost: k2\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of the first metric line starting with `name_and_labels`.
pub fn metric(http: &str, name_and_labels: &str) -> Option<f64> {
    metric_in(&get(http, "/metrics"), name_and_labels)
}

/// One series' value in a Prometheus text exposition.
pub fn metric_in(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(name_and_labels))?.rsplit(' ').next()?.parse().ok()
}

/// The sum over every series of `name` (a name and `{`, or a name alone)
/// whose line contains `label` (say `cause="gap"`; "" for all).
pub fn metric_total(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The JSON body of a GET (chunked or not).
pub fn get_json(addr: &str, path: &str) -> serde_json::Value {
    json_body(&get(addr, path))
}

/// The status and JSON body of one GET.
pub fn get_status(addr: &str, path: &str) -> (u16, serde_json::Value) {
    let response = get(addr, path);
    (response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), json_body(&response))
}

/// The JSON body of a whole HTTP response.
fn json_body(response: &str) -> serde_json::Value {
    let json = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // A body cut short (a process killed while answering) reads as null.
    match (json.find('{'), json.rfind('}')) {
        (Some(start), Some(end)) if start <= end => serde_json::from_str(&json[start..=end]).unwrap_or_default(),
        _ => serde_json::Value::Null,
    }
}

/// What Python's `websockets` (`tests/python/replay_client.py`) got from a
/// replay stream at `url`, sending `key` as `X-API-Key`: the frames and
/// the close, or the refused handshake's status and body.
pub fn replay_client(url: &str, key: Option<&str>) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/replay_client.py");
    let out = Command::new("python3").arg(script).arg(url).args(key).output().unwrap();
    assert!(out.status.success(), "replay_client.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A GET answered as an Arrow IPC stream (asked for by `Accept`), decoded.
pub fn get_arrow(addr: &str, path: &str) -> Vec<arrow::array::RecordBatch> {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: k2\r\nAccept: application/vnd.apache.arrow.stream\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a response");
    let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
    assert!(head.contains("content-type: application/vnd.apache.arrow.stream"), "{path}: {head}");
    assert!(!head.contains("transfer-encoding: chunked"), "{path}: {head}");
    let reader = arrow::ipc::reader::StreamReader::try_new(&out[split + 4..], None).unwrap();
    reader.collect::<Result<Vec<_>, _>>().unwrap()
}

/// Trades `/v1/symbols` counts, over every symbol.
pub fn trades_seen(http: &str, source: &str) -> u64 {
    let v = get_json(http, &format!("/v1/symbols?source={source}"));
    v["data"].as_array().map_or(0, |a| a.iter().map(|r| r["trades"].as_u64().unwrap_or(0)).sum())
}

/// What pyiceberg (another engine) reads from the tables under `data`.
pub fn read_iceberg(data: &Path) -> serde_json::Value {
    read_iceberg_with(data, &[])
}

/// As [`read_iceberg`] with more arguments of `read_iceberg.py` (its
/// warehouse and S3 options).
pub fn read_iceberg_with(data: &Path, args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/read_iceberg.py");
    let out = Command::new("python3").arg(script).arg(data).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Asserts that, per symbol, the trade ids in the tables form one run with
/// no gap and no duplicate.
pub fn assert_contiguous_trades(v: &serde_json::Value) {
    let per_symbol = v["trades"]["per_symbol"].as_object().expect("trades per symbol");
    assert!(!per_symbol.is_empty(), "{v}");
    for (symbol, s) in per_symbol {
        let (rows, distinct) = (s["rows"].as_i64().unwrap(), s["distinct"].as_i64().unwrap());
        let (min, max) = (s["min"].as_i64().unwrap(), s["max"].as_i64().unwrap());
        assert_eq!(rows, distinct, "{symbol}: a trade was written twice: {s}");
        assert_eq!(rows, max - min + 1, "{symbol}: trades are missing: {s}");
    }
    assert_eq!(v["trades"]["rows"], v["trades"]["distinct_message_ids"]);
}

/// The ASX sample layout's folders under `root`, with BHP (company 7078)
/// as the one company.
pub fn asx_layout(root: &Path) {
    for d in ["trades", "quotes", "reference-data"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(
        root.join("reference-data/company_info.csv"),
        "company_id,symbol,company_name,ISIN,start_date,end_date\n7078,BHP,BHP,AU0,01/01/2000,01/01/2030\n",
    )
    .unwrap();
}

/// A small data set in the ASX sample layout: 500 BHP trades on 2014-03-10
/// (quantities 100..600), one line with a bad price, and 2 quotes.
pub fn asx_fixture(root: &Path) {
    asx_layout(root);
    let trades: String = (0..500)
        .map(|i| format!("03/10/2014,10:{:02}:{:02}.000,36.{i:03},{},3,X,\n", i / 60, i % 60, 100 + i))
        .collect();
    std::fs::write(root.join("trades/7078.csv"), trades + "03/10/2014,10:59:59.000,bad,1,3,X,\n").unwrap();
    std::fs::write(
        root.join("quotes/7078.csv"),
        "03/10/2014,10:00:00.000,37.7,37.73,300,600\n03/10/2014,10:00:01.000,37.7,0.0,300,0\n",
    )
    .unwrap();
}

/// moto's standalone S3 server (`python3 -m moto.server`, installed by
/// tests/python/requirements.txt) on a loopback port, killed when dropped.
/// It speaks the S3 REST protocol over HTTP and keeps objects in memory.
pub struct S3Server {
    _process: Kill,
    pub endpoint: String,
}

impl S3Server {
    pub fn start() -> S3Server {
        // The port is free now; moto binds it a moment later.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m moto.server (tests/services.sh installs moto[server])");
        let process = Kill(child);
        let addr = format!("127.0.0.1:{port}");
        wait_until("moto's S3 server did not start (is moto[server] installed?)", 60, || {
            TcpStream::connect(&addr).is_ok()
        });
        S3Server { _process: process, endpoint: format!("http://{addr}") }
    }

    fn addr(&self) -> &str {
        self.endpoint.trim_start_matches("http://")
    }

    /// Creates a bucket (moto takes unsigned requests).
    pub fn create_bucket(&self, bucket: &str) {
        let mut s = TcpStream::connect(self.addr()).unwrap();
        write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", self.addr())
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(status_ok(&out), "creating bucket {bucket}: {out}");
    }

    /// Every key under `prefix` in `bucket` (ListObjectsV2, all pages).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/{bucket}?list-type=2&prefix={prefix}");
            if let Some(t) = &token {
                path.push_str(&format!("&continuation-token={t}"));
            }
            let body = get(self.addr(), &path);
            assert!(status_ok(&body), "listing {bucket}: {body}");
            keys.extend(xml_values(&body, "Key"));
            token = xml_values(&body, "NextContinuationToken").into_iter().next();
            if token.is_none() {
                return keys;
            }
        }
    }
}

/// Whether an HTTP response's status line says 200.
fn status_ok(response: &str) -> bool {
    response.lines().next().is_some_and(|l| l.split(' ').nth(1) == Some("200"))
}

/// The text of every `<tag>…</tag>` in `xml`.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open).skip(1).filter_map(|part| part.split_once(&close).map(|(v, _)| v.to_owned())).collect()
}

/// Runs the chaos judge (`tests/python/judge_trades.py`) on the tables
/// under `data` against the simulator at `rest` for `symbols`, trade ids up
/// to `upto`, with `options` (`--partial`, `--all-ids`, the warehouse and S3
/// keys): its JSON report, and whether its exit status said exact.
pub fn judge_trades(data: &Path, rest: &str, symbols: &str, upto: u64, options: &[&str]) -> (serde_json::Value, bool) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/judge_trades.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(data)
        .arg(rest)
        .arg(symbols)
        .arg(format!("--upto={upto}"))
        .args(options)
        .output()
        .expect("python3 runs the judge");
    let text = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!("the judge printed no report ({e}): {text}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    (report, out.status.success())
}
