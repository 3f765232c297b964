//! A fault no retry can fix, in the tables' storage: the flusher stops
//! retrying it on a timer, opens the breaker at once, says why in `/health`
//! and keeps every row (queryable) until the breaker's probe finds the cause
//! fixed; `k2 load` gives up on it with the cause and a failure status.
//!
//! The fault is a regular file where a table's `data` directory should be
//! (ENOTDIR). Tests and CI run as root, which permission bits do not stop,
//! and `chattr +i` needs a capability containers often lack; a file in the
//! path stops every user.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Kill, assert_contiguous_trades, asx_fixture, metric_in, read_iceberg, trades, wait_until};
use figment::providers::Env;
use k2::runtime::config::Config;
use k2::service::{Service, Stop};
use serde_json::Value;

/// Breakers that trip at once and probe after a second; flushes that start
/// after 200 ms and retry a transient error within 200 ms, so a flusher
/// retrying on its timer would fail about five times per cool-down.
const FAST: &str = "[flush]\nmax_age = \"200ms\"\nretry_initial = \"50ms\"\nretry_max = \"200ms\"\n\
                    [breakers]\nfailures = 3\ncool_down = \"1s\"\nsuccesses = 1\n";

fn config(dir: &Path, data: &Path) -> Config {
    let file = dir.join("k2.toml");
    let text = format!("[http]\nbind = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n{FAST}", data.display());
    std::fs::write(&file, text).unwrap();
    Config::load_from(Some(&file), Env::prefixed("K2_TEST_UNSET__")).unwrap()
}

/// Puts a regular file where the directory `dir` (not made yet) should be,
/// and returns the fix.
fn break_dir(dir: &Path) -> impl FnOnce() + use<> {
    assert!(!dir.exists(), "{}", dir.display());
    std::fs::write(dir, b"a file where the table's data directory should be").unwrap();
    let dir = dir.to_owned();
    move || std::fs::remove_file(&dir).unwrap()
}

fn trades_data(data: &Path) -> PathBuf {
    data.join("warehouse/market/trades/data")
}

fn counter(name: &str) -> f64 {
    metric_in(&k2::runtime::telemetry::render(), &format!("{name}{{table=\"trades\"}}")).unwrap_or(0.0)
}

async fn health(http: &reqwest::Client, base: &str) -> Value {
    http.get(format!("{base}/health")).send().await.unwrap().json().await.unwrap()
}

/// Polls `ok` every 50 ms for up to `secs`: whether it came true.
async fn within(secs: u64, mut ok: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while !ok().await {
        if start.elapsed() > Duration::from_secs(secs) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

#[test]
fn a_permanent_write_error_opens_the_breaker_keeps_the_rows_and_recovers_once_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("lake");
    let config = config(dir.path(), &data);
    let lake = data.clone();
    k2::runtime::run(|| async move {
        let data = lake;
        let k2 = Service::builder(&config).start().await.unwrap();
        let server = k2.serve().unwrap();
        let (http, base) = (reqwest::Client::new(), format!("http://{}", server.addr));

        // The table exists; its data files cannot be written.
        let fix = break_dir(&trades_data(&data));
        let (failures, permanent) =
            (counter("k2_lake_commit_failures_total"), counter("k2_lake_permanent_failures_total"));
        k2.pipeline.send(trades("BTCUSDT", 1..=300)).await.unwrap();
        let failed = within(10, async || counter("k2_lake_permanent_failures_total") > permanent).await;
        assert!(failed, "no permanent failure counted");
        let first = Instant::now();
        // The data-file write failed: the object store's breaker opened at
        // once (not after `failures` tries) and /health says why.
        let mut seen = Value::Null;
        let opened = within(10, async || {
            seen = health(&http, &base).await;
            seen["breakers"]["object-store"] == "open" && seen["breaker_causes"]["object-store"].is_string()
        })
        .await;
        assert!(opened, "the object-store breaker did not open with its cause: {seen}");
        let cause = seen["breaker_causes"]["object-store"].as_str().unwrap();
        assert!(cause.contains("Not a directory"), "{seen}");
        assert!(cause.contains("flush of trades"), "{seen}");
        let last_error = seen["actors"]["iceberg-flusher"]["last_error"].as_str().unwrap_or_default();
        assert!(last_error.contains("Not a directory") && last_error.contains("object-store"), "{seen}");
        assert_eq!(seen["status"], "degraded", "{seen}");

        // It is tried again once per cool-down, not on the retry timer:
        // three permanent failures take two cool-downs, and no attempt
        // fails in between.
        let probed = within(10, async || counter("k2_lake_permanent_failures_total") >= permanent + 3.0).await;
        assert!(probed, "no two probes, each failing permanently");
        // On the retry timer (50, 100, 200 ms) they would take 150 ms.
        let took = first.elapsed();
        assert!(took >= Duration::from_millis(1500), "three failures within {took:?}: not waiting for the cool-down");
        let tried = counter("k2_lake_commit_failures_total") - failures;
        let probes = counter("k2_lake_permanent_failures_total") - permanent;
        assert!(tried <= probes + 1.0, "{tried} failed attempts for {probes} permanent failures");

        // Nothing is dropped: every row waits in the tail, and queries see
        // all of them.
        assert_eq!(k2.tails.waiting_rows(), 300);
        let symbols: Value =
            http.get(format!("{base}/v1/symbols?source=hybrid")).send().await.unwrap().json().await.unwrap();
        assert_eq!(symbols["data"][0]["trades"], 300, "{symbols}");

        // Fixed: the next probe commits them, the breaker closes and its
        // cause goes.
        fix();
        let committed = within(10, async || k2.tails.waiting_rows() == 0).await;
        assert!(committed, "{} rows still waiting after the fix", k2.tails.waiting_rows());
        let closed = within(10, async || {
            seen = health(&http, &base).await;
            seen["breakers"]["object-store"] == "closed"
        })
        .await;
        assert!(closed, "the breaker did not close: {seen}");
        assert_eq!(seen["breaker_causes"], serde_json::json!({}), "{seen}");
        k2.shutdown(Stop::Graceful).await;
    })
    .unwrap();

    // Another engine reads every row sent, once each.
    let v = read_iceberg(&data);
    assert_eq!(v["trades"]["rows"], 300, "{v}");
    assert_eq!(v["trades"]["distinct_message_ids"], 300, "{v}");
    assert_contiguous_trades(&v);
}

#[test]
fn load_ends_with_the_cause_of_a_permanent_error_and_commits_once_it_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("asx");
    asx_fixture(&files);
    let data = dir.path().join("data");
    // The first load makes the table; its data files cannot be written.
    std::fs::create_dir_all(data.join("warehouse/market/trades")).unwrap();
    let fix = break_dir(&trades_data(&data));
    let load = || load(dir.path(), &data, &files, &[]);

    let (code, stdout, stderr) = load();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("500 rows not committed") && stderr.contains("Not a directory"), "{stderr}");
    assert!(stdout.is_empty(), "no summary claims a commit: {stdout}");

    // Fixed, the same files load: the trades that were not committed, and
    // not the quotes that were.
    fix();
    let (code, stdout, stderr) = load();
    assert_eq!(code, Some(0), "{stderr}");
    let v: Value = serde_json::from_slice(stdout.as_bytes()).unwrap();
    assert_eq!((v["accepted_trades"].as_u64(), v["accepted_quotes"].as_u64()), (Some(500), Some(0)), "{v}");
    let tables = read_iceberg(&data);
    assert_eq!((tables["trades"]["rows"].as_u64(), tables["quotes"]["rows"].as_u64()), (Some(500), Some(2)));
    assert_eq!(tables["trades"]["distinct_message_ids"], 500);
}

/// The same with a load larger than its pacing allows (two flushes' worth
/// of rows waiting): the sink holds the reader while no commit can land, so
/// the load must notice the permanent error while it reads, not only at its
/// final flush, or it would wait forever.
#[test]
fn a_paced_load_held_by_a_permanent_error_ends_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("asx");
    asx_fixture(&files);
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("warehouse/market/trades")).unwrap();
    let fix = break_dir(&trades_data(&data));
    // 500 trades against room for 2 x 50: the reader is held early.
    let paced = [("K2__FLUSH__MAX_ROWS", "50"), ("K2__PIPELINE__BATCH_SIZE", "20")];
    let load = || load(dir.path(), &data, &files, &paced);

    let (code, stdout, stderr) = load();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("rows not committed") && stderr.contains("Not a directory"), "{stderr}");
    assert!(stdout.is_empty(), "no summary claims a commit: {stdout}");

    fix();
    let (code, _, stderr) = load();
    assert_eq!(code, Some(0), "{stderr}");
    let tables = read_iceberg(&data);
    assert_eq!((tables["trades"]["rows"].as_u64(), tables["quotes"]["rows"].as_u64()), (Some(500), Some(2)));
    assert_eq!(tables["trades"]["distinct_message_ids"], 500);
}

/// `k2 load --json` of `files` into `data` with a 1 s breaker cool-down and
/// `env`: its exit code, stdout and stderr; killed after 60 s.
fn load(dir: &Path, data: &Path, files: &Path, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let (stdout, stderr) = (dir.join("stdout"), dir.join("stderr"));
    let child = Command::new(env!("CARGO_BIN_EXE_k2"))
        .args(["load", "--json", "--data-dir", data.to_str().unwrap()])
        .arg(files)
        .env("K2__BREAKERS__COOL_DOWN", "1s")
        .envs(env.iter().copied())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut child = Kill(child);
    let mut code = None;
    wait_until("k2 load did not end within 60 s", 60, || {
        code = child.0.try_wait().unwrap().map(|s| s.code());
        code.is_some()
    });
    let read = |p| std::fs::read_to_string(p).unwrap();
    (code.flatten(), read(&stdout), read(&stderr))
}
