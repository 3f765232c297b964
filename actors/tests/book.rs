//! Order books against the simulator, which keeps the true book: whenever
//! K2 says a book is synced at an update id, it equals the venue's book at
//! that id, through skipped ranges, duplicate events, snapshots older than
//! the stream and dropped connections; and the resyncs are the ones those
//! faults caused, never a crossed book.

mod common;

use arrow::array::Array;
use common::*;
use rust_decimal::Decimal;
use serde_json::Value;

const SYMBOLS: [&str; 3] = ["BTCUSDT", "ETHUSDT", "BNBUSDT"];

fn levels(v: &Value) -> Vec<(Decimal, Decimal)> {
    let parse = |x: &Value| x.as_str().unwrap().parse::<Decimal>().unwrap();
    v.as_array().unwrap().iter().map(|l| (parse(&l[0]), parse(&l[1]))).collect()
}

#[test]
fn every_synced_book_equals_the_venue_at_its_update_id_through_every_fault() {
    const TRADES: u64 = 6_000;
    let (_sim, addrs) = start_sim_with(
        "1500",
        &[
            "--trades",
            &TRADES.to_string(),
            "--book-ticker-every",
            "0",
            "--depth-skip-every",
            "150",
            "--depth-duplicate-every",
            "37",
            "--stale-snapshot-every",
            "3",
            "--disconnect-every",
            "7000",
            "--hold-while-idle",
        ],
    );
    let rest = addrs["rest"].as_str().unwrap().trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = write_sim_config(dir.path(), &addrs, "[book]\nenabled = true\n");
    let k2 = Run::start(&config, &dir.path().join("data"), "info", dir.path().join("k2.log"));

    let mut compared = [0u32; SYMBOLS.len()];
    let done = |rest: &str| get_json(rest, "/sim/stats")["trades_generated"].as_u64() == Some(TRADES * 3);
    let started = std::time::Instant::now();
    while !done(&rest) {
        assert!(started.elapsed().as_secs() < 120, "the market did not end");
        for (i, symbol) in SYMBOLS.iter().enumerate() {
            let book = get_json(&k2.http, &format!("/v1/book/{symbol}?depth=5000"));
            if book["synced"] != true {
                assert!(book["bids"].as_array().unwrap().is_empty(), "an unsynced book shows no levels: {book}");
                continue;
            }
            let id = book["update_id"].as_u64().unwrap();
            let truth = get_json(&rest, &format!("/sim/book?symbol={symbol}&update_id={id}"));
            assert_eq!(truth["lastUpdateId"].as_u64(), Some(id), "the venue never ended an event at {id}: {book}");
            assert_eq!(levels(&book["bids"]), levels(&truth["bids"]), "{symbol} bids at {id}");
            assert_eq!(levels(&book["asks"]), levels(&truth["asks"]), "{symbol} asks at {id}");
            compared[i] += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let stats = get_json(&rest, "/sim/stats");
    let metrics = get(&k2.http, "/metrics");
    k2.stop();
    assert!(compared.iter().all(|&n| n >= 10), "books compared per symbol: {compared:?}\n{stats}");

    let n = |k: &str| stats[k].as_u64().unwrap() as f64;
    assert!(n("depth_skipped") >= 3.0 && n("stale_snapshots") >= 1.0 && n("disconnects") >= 1.0, "{stats}");
    for symbol in SYMBOLS {
        let label = format!("symbol=\"{symbol}\"");
        assert!(
            metric_total(&metrics, "k2_book_resyncs_total", &format!("{label},cause=\"gap\"")) >= 1.0,
            "{symbol}: {metrics}"
        );
        assert_eq!(metric_total(&metrics, "k2_book_crossed_total", &label), 0.0, "{symbol}");
    }
    // A skipped range unsyncs a synced book once (one that falls while the
    // book waits for a snapshot is covered by the snapshot or makes it
    // unusable): never more resyncs than skips.
    let gaps = metric_total(&metrics, "k2_book_resyncs_total", "cause=\"gap\"");
    assert!(gaps <= n("depth_skipped"), "gap resyncs {gaps} exceed the ranges skipped: {stats}");
    // Every other unsync has a fault behind it: the dropped connections.
    let reconnects = metric_total(&metrics, "k2_book_resyncs_total", "cause=\"reconnect\"");
    assert!(reconnects >= 1.0 && reconnects <= n("disconnects") * 3.0, "reconnect resyncs {reconnects}: {stats}");
    for cause in ["crossed", "restart", "snapshot_behind", "start"] {
        assert_eq!(
            metric_total(&metrics, "k2_book_resyncs_total", &format!("cause=\"{cause}\"")),
            0.0,
            "{cause}: {metrics}"
        );
    }
    // Stale snapshots were refused and fetched again, and duplicates dropped.
    assert!(
        metric_total(&metrics, "k2_book_snapshot_refetches_total", "cause=\"snapshot_behind\"") >= 1.0,
        "{metrics}"
    );
    assert!(metric_total(&metrics, "k2_book_events_ignored_total", "reason=\"older_than_book\"") >= 1.0, "{metrics}");
}

/// What a user asking for a book gets wrong is named.
#[test]
fn book_parameters_are_checked_and_a_book_nobody_keeps_is_404() {
    let (_sim, addrs) = start_sim("200");
    let dir = tempfile::tempdir().unwrap();
    let config = write_sim_config(dir.path(), &addrs, "[book]\nenabled = true\n");
    let k2 = Run::start(&config, &dir.path().join("data"), "info", dir.path().join("k2.log"));
    let status = |path: &str| get(&k2.http, path).split(' ').nth(1).unwrap_or("").to_owned();
    let named = |path: &str| get_json(&k2.http, path)["parameter"].as_str().unwrap_or("").to_owned();
    for (path, code, parameter) in [
        ("/v1/book/BTCUSDT?depth=0", "400", "depth"),
        ("/v1/book/BTCUSDT?depth=5001", "400", "depth"),
        ("/v1/book/BTCUSDT?depth=ten", "400", "depth"),
        ("/v1/book/BTCUSDT?at=yesterday", "400", "at"),
        ("/v1/book/BTCUSDT?at=9999-01-01T00:00:00Z", "404", "at"),
        ("/v1/book/DOGEUSDT?at=2026-01-01T00:00:00Z", "404", "symbol"),
        ("/v1/book/BTCUSDT?exchange=ASX", "404", "exchange"),
        ("/v1/book/DOGEUSDT", "404", "symbol"),
    ] {
        assert_eq!(status(path), code, "{path}");
        assert_eq!(named(path), parameter, "{path}");
    }
    wait_until("the BTCUSDT book did not sync", 30, || get_json(&k2.http, "/v1/book/btcusdt")["synced"] == true);
    let book = get_json(&k2.http, "/v1/book/btcusdt?depth=3&exchange=binance");
    assert_eq!(book["bids"].as_array().unwrap().len(), 3, "{book}");
    assert_eq!(book["asks"].as_array().unwrap().len(), 3, "{book}");
    let (bid, ask) = (levels(&book["bids"])[0].0, levels(&book["asks"])[0].0);
    assert!(bid < ask, "{book}");
    // CSV: one row per level, bids then asks, each with the book's id.
    let mut s = std::net::TcpStream::connect(&k2.http).unwrap();
    use std::io::{Read, Write};
    write!(s, "GET /v1/book/BTCUSDT?depth=2 HTTP/1.1\r\nHost: k2\r\nAccept: text/csv\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut csv = String::new();
    s.read_to_string(&mut csv).unwrap();
    let body = csv.split_once("\r\n\r\n").unwrap().1;
    let rows: Vec<&str> = body.lines().filter(|l| l.starts_with("BINANCE,")).collect();
    assert_eq!(rows.len(), 4, "{csv}");
    assert!(rows[0].contains(",bid,1,") && rows[2].contains(",ask,1,"), "{csv}");
    // Arrow: the same rows, typed, prices as decimal(38, 8).
    let batches = get_arrow(&k2.http, "/v1/book/BTCUSDT?depth=2");
    let batch = &batches[0];
    assert_eq!(batch.num_rows(), 4);
    let side = batch.column_by_name("side").unwrap().as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
    assert_eq!((side.value(0), side.value(2)), ("bid", "ask"));
    let price = batch.column_by_name("price").unwrap();
    assert_eq!(price.data_type(), &arrow::datatypes::DataType::Decimal128(38, 8));
    let price = price.as_any().downcast_ref::<arrow::array::Decimal128Array>().unwrap();
    assert!(price.value(0) > price.value(1), "bids from the best down");
    assert!(price.value(2) > price.value(0), "the best ask above the best bid");
    k2.stop();
}

/// With books off, the endpoint says so instead of showing an empty book;
/// with books kept but not stored, `at` is refused by name.
#[test]
fn books_off_answer_404_naming_the_symbol() {
    let (_sim, addrs) = start_sim("100");
    let dir = tempfile::tempdir().unwrap();
    let config = write_sim_config(dir.path(), &addrs, "");
    let k2 = Run::start(&config, &dir.path().join("data"), "info", dir.path().join("k2.log"));
    let body = get_json(&k2.http, "/v1/book/BTCUSDT");
    assert_eq!(body["parameter"], "symbol", "{body}");
    assert!(body["error"].as_str().unwrap().contains("book.enabled"), "{body}");
    k2.stop();
    let config = write_sim_config(dir.path(), &addrs, "[book]\nenabled = true\nstore = false\n");
    let k2 = Run::start(&config, &dir.path().join("data"), "info", dir.path().join("k2-live.log"));
    let body = get_json(&k2.http, "/v1/book/BTCUSDT?at=2026-01-01T00:00:00Z");
    assert_eq!(body["parameter"], "at", "{body}");
    k2.stop();
}

/// SIGKILL mid-stream: the restarted process syncs its books again from
/// new snapshots, and they equal the venue's at the ids they claim.
#[test]
fn a_killed_k2_resyncs_its_books_after_the_restart() {
    let (_sim, addrs) = start_sim_with("600", &["--depth-skip-every", "400"]);
    let rest = addrs["rest"].as_str().unwrap().trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = write_sim_config(dir.path(), &addrs, "[book]\nenabled = true\n");
    let data = dir.path().join("data");
    let synced_and_true = |http: &str| {
        SYMBOLS.iter().all(|symbol| {
            let book = get_json(http, &format!("/v1/book/{symbol}?depth=5000"));
            let Some(id) = book["update_id"].as_u64().filter(|_| book["synced"] == true) else { return false };
            let truth = get_json(&rest, &format!("/sim/book?symbol={symbol}&update_id={id}"));
            truth["lastUpdateId"].as_u64() == Some(id)
                && levels(&book["bids"]) == levels(&truth["bids"])
                && levels(&book["asks"]) == levels(&truth["asks"])
        })
    };
    for round in 0..3 {
        let k2 = Run::start(&config, &data, "info", dir.path().join(format!("k2-{round}.log")));
        wait_until("every book synced and equal to the venue's", 30, || synced_and_true(&k2.http));
        let applied = metric_total(&get(&k2.http, "/metrics"), "k2_book_updates_applied_total", "symbol=");
        assert!(applied > 0.0, "round {round}");
        k2.kill9();
    }
}

/// One answer of `/v1/book/{symbol}?at=`.
struct Asked {
    symbol: &'static str,
    at: i64,
    answer: Value,
}

/// The parts of an answer that say what the book was.
fn what(v: &Value) -> (Value, Value, Value, Value) {
    (v["synced"].clone(), v["update_id"].clone(), v["bids"].clone(), v["asks"].clone())
}

/// Asks every symbol's book at an instant `back_ms` ago, checks each
/// synced answer against the venue's book at the id it claims, and keeps
/// the answers.
fn ask_at(http: &str, rest: &str, back_ms: i64, asked: &mut Vec<Asked>, compared: &mut [u32]) {
    let at = k2_core::Timestamp::now().as_micros() - back_ms * 1000;
    for (i, symbol) in SYMBOLS.iter().enumerate() {
        let answer = get_json(http, &format!("/v1/book/{symbol}?depth=5000&at={at}"));
        assert!(answer["synced"].is_boolean(), "{symbol} at {at}: {answer}");
        if answer["synced"] == true {
            let id = answer["update_id"].as_u64().unwrap();
            let truth = get_json(rest, &format!("/sim/book?symbol={symbol}&update_id={id}"));
            if truth["lastUpdateId"].as_u64() == Some(id) {
                assert_eq!(levels(&answer["bids"]), levels(&truth["bids"]), "{symbol} bids at {id} (at {at})");
                assert_eq!(levels(&answer["asks"]), levels(&truth["asks"]), "{symbol} asks at {id} (at {at})");
                compared[i] += 1;
            }
        } else {
            assert!(answer["bids"].as_array().unwrap().is_empty(), "an unsynced book shows no levels: {answer}");
            assert!(answer["unsynced_cause"].is_string(), "{answer}");
        }
        asked.push(Asked { symbol, at, answer });
    }
}

/// The stored books: at instants sampled while K2 ran through skipped
/// ranges, duplicates, stale snapshots and dropped connections, the book
/// rebuilt from the tables and the records not committed yet equals the
/// venue's at the update id it claims. After a graceful restart every
/// earlier instant answers exactly as before; after a kill -9, an instant
/// answers as before or as unsynced (the store lost what it had not
/// committed), never as another book. Periodic snapshots every second (most
/// instants replay from one). pyiceberg judges the tables: every
/// segment starts from the venue's snapshot and its updates follow on.
#[test]
fn a_book_at_any_instant_is_the_venues_and_stays_so_across_restarts() {
    let (_sim, addrs) = start_sim_with(
        "800",
        &[
            "--book-ticker-every",
            "0",
            "--depth-skip-every",
            "150",
            "--depth-duplicate-every",
            "37",
            "--stale-snapshot-every",
            "3",
            "--disconnect-every",
            "5000",
            "--hold-while-idle",
        ],
    );
    let rest = addrs["rest"].as_str().unwrap().trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    // Periodic snapshots every second: most instants replay from one.
    let config = write_sim_config(
        dir.path(),
        &addrs,
        "[book]\nenabled = true\nsnapshot_every = \"1s\"\n[flush]\nmax_age = \"2s\"\n",
    );
    let data = dir.path().join("data");
    let mut asked = Vec::new();
    let mut compared = [0u32; SYMBOLS.len()];

    let k2 = Run::start(&config, &data, "info", dir.path().join("k2-1.log"));
    wait_until("every book synced", 30, || {
        SYMBOLS.iter().all(|s| get_json(&k2.http, &format!("/v1/book/{s}"))["synced"] == true)
    });
    let started = std::time::Instant::now();
    while started.elapsed().as_secs() < 12 {
        // Now (the tail), and seconds ago (committed to the tables).
        ask_at(&k2.http, &rest, 200, &mut asked, &mut compared);
        ask_at(&k2.http, &rest, 3000, &mut asked, &mut compared);
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    // Synced instants rebuilt from a periodic snapshot (a replay that
    // starts at one is synced unless the store broke): the comparisons
    // above held for them too. The faults resync books every few hundred
    // milliseconds, so many instants still start from their sync.
    let metrics = get(&k2.http, "/metrics");
    let from_periodic = metric_total(&metrics, "k2_book_replays_total{", "start=\"periodic\"");
    let synced_answers = asked.iter().filter(|a| a.answer["synced"] == true).count() as f64;
    assert!(from_periodic >= 10.0, "{from_periodic} replays from periodic snapshots of {synced_answers} synced");
    k2.stop();
    let down_at = k2_core::Timestamp::now().as_micros();
    assert!(compared.iter().all(|&n| n >= 10), "stored books compared with the venue's, per symbol: {compared:?}");
    let unsynced = asked.iter().filter(|a| a.answer["synced"] == false).count();

    // A graceful restart: the instants answer as they did (every third is
    // asked again: a replay in a debug build on a loaded machine is slow).
    let k2 = Run::start(&config, &data, "info", dir.path().join("k2-2.log"));
    for a in asked.iter().step_by(3) {
        let again = get_json(&k2.http, &format!("/v1/book/{}?depth=5000&at={}", a.symbol, a.at));
        assert_eq!(what(&again), what(&a.answer), "{} at {} after a graceful restart", a.symbol, a.at);
    }
    // The top over the first run, sampled every 500 ms: each point is the
    // book `at` answers at that instant, summed.
    let (first, last) = (asked.first().unwrap().at, down_at - 1);
    let top = get_json(&k2.http, &format!("/v1/book/BTCUSDT/top?start={first}&end={last}&interval=500ms&levels=10"));
    let points = top["data"].as_array().unwrap_or_else(|| panic!("{top}"));
    assert!(points.len() >= 20, "{top}");
    let mut synced_points = 0;
    for p in points.iter().step_by(4) {
        let at = p["time_us"].as_i64().unwrap();
        let book = get_json(&k2.http, &format!("/v1/book/BTCUSDT?depth=10&at={at}"));
        assert_eq!((&p["synced"], &p["update_id"]), (&book["synced"], &book["update_id"]), "{p} / {book}");
        if p["synced"] == true {
            synced_points += 1;
            let (bids, asks) = (levels(&book["bids"]), levels(&book["asks"]));
            let dec = |v: &Value| v.as_str().unwrap().parse::<Decimal>().unwrap();
            assert_eq!(dec(&p["best_bid"]), bids[0].0, "{p}");
            assert_eq!(dec(&p["best_ask"]), asks[0].0, "{p}");
            assert_eq!(dec(&p["spread"]), asks[0].0 - bids[0].0, "{p}");
            assert_eq!(dec(&p["bid_depth"]), bids.iter().map(|l| l.1).sum::<Decimal>(), "{p}");
            assert_eq!(dec(&p["ask_depth"]), asks.iter().map(|l| l.1).sum::<Decimal>(), "{p}");
            assert!(bids[0].0 < asks[0].0, "{p}");
        } else {
            assert_eq!(p["unsynced_cause"], book["unsynced_cause"], "{p} / {book}");
        }
    }
    assert!(synced_points >= 3, "{top}");
    // As Arrow: the same points, typed.
    let arrow = get_arrow(&k2.http, &format!("/v1/book/BTCUSDT/top?start={first}&end={last}&interval=500ms&levels=10"));
    let rows: usize = arrow.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, points.len());
    let b = &arrow[0];
    let col = |n: &str| b.column_by_name(n).unwrap().clone();
    let synced = col("synced");
    let synced = synced.as_any().downcast_ref::<arrow::array::BooleanArray>().unwrap();
    let best_bid = col("best_bid");
    let best_bid = best_bid.as_any().downcast_ref::<arrow::array::Decimal128Array>().unwrap();
    for (i, p) in points.iter().enumerate().take(b.num_rows()) {
        assert_eq!(Value::Bool(synced.value(i)), p["synced"], "{p}");
        let json_bid = p["best_bid"].as_str().map(|v| v.parse::<Decimal>().unwrap());
        let arrow_bid = (!best_bid.is_null(i)).then(|| Decimal::from_i128_with_scale(best_bid.value(i), 8));
        assert_eq!(arrow_bid, json_bid, "{p}");
    }
    let bad = get_json(&k2.http, &format!("/v1/book/BTCUSDT/top?start={first}&end={last}&interval=1ms"));
    assert_eq!(bad["parameter"], "interval", "{bad}");

    // The span K2 was down reads as unsynced: it stopped.
    for symbol in SYMBOLS {
        let v = get_json(&k2.http, &format!("/v1/book/{symbol}?at={down_at}"));
        assert_eq!((&v["synced"], &v["unsynced_cause"]), (&Value::Bool(false), &Value::from("stop")), "{symbol}: {v}");
    }

    // kill -9 with records not yet committed.
    let mut before_kill = Vec::new();
    let started = std::time::Instant::now();
    while started.elapsed().as_secs() < 6 {
        ask_at(&k2.http, &rest, 200, &mut before_kill, &mut compared);
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    k2.kill9();
    let k2 = Run::start(&config, &data, "info", dir.path().join("k2-3.log"));
    let (mut same, mut lost) = (0, 0);
    for a in asked.iter().step_by(3).chain(&before_kill) {
        let again = get_json(&k2.http, &format!("/v1/book/{}?depth=5000&at={}", a.symbol, a.at));
        if what(&again) == what(&a.answer) {
            same += 1;
        } else {
            assert_eq!(
                again["synced"],
                false,
                "{} at {}: after the kill, update id {} (recorded at {}) where it was {} (recorded at {})",
                a.symbol,
                a.at,
                again["update_id"],
                again["recorded_at_us"],
                a.answer["update_id"],
                a.answer["recorded_at_us"]
            );
            lost += 1;
        }
    }
    assert!(
        same >= asked.len().div_ceil(3),
        "instants committed before the kill answer as before: {same} same, {lost} lost"
    );
    wait_until("every book synced after the kill", 30, || {
        SYMBOLS.iter().all(|s| get_json(&k2.http, &format!("/v1/book/{s}"))["synced"] == true)
    });
    let sample: Vec<(&str, i64, Value)> = asked
        .iter()
        .step_by(4)
        .map(|a| {
            let now = get_json(&k2.http, &format!("/v1/book/{}?depth=5000&at={}", a.symbol, a.at));
            (a.symbol, a.at, now)
        })
        .collect();
    k2.stop();

    // Maintenance compacts the book tables too: fewer files, and every
    // instant rebuilds as before, with the tables' complete-until instant
    // carried so that the next process resumes after it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_k2"))
        .args(["maintain", "--json", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .env("K2__MAINTENANCE__MIN_FILES", "2")
        .output()
        .unwrap();
    assert!(out.status.success(), "k2 maintain: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for table in ["book_updates", "book_snapshots"] {
        let r = report["done"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == table)
            .unwrap_or_else(|| panic!("{report}"));
        let before = r["files_before"].as_u64().unwrap();
        assert!(before >= 4, "{table}: {r}");
        assert!(r["files_after"].as_u64().unwrap() < before, "{table} compacted: {r}");
        assert!(r["compaction"].as_array().unwrap().iter().any(|p| p["snapshot_id"].is_i64()), "{r}");
    }
    let k2 = Run::start(&config, &data, "info", dir.path().join("k2-4.log"));
    for (symbol, at, before) in &sample {
        let after = get_json(&k2.http, &format!("/v1/book/{symbol}?depth=5000&at={at}"));
        assert_eq!(what(&after), what(before), "{symbol} at {at} after the compaction");
    }
    wait_until("every book synced after the compaction", 30, || {
        SYMBOLS.iter().all(|s| get_json(&k2.http, &format!("/v1/book/{s}"))["synced"] == true)
    });
    k2.stop();

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/read_books.py");
    let out = std::process::Command::new("python3").arg(script).arg(&data).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let judged: Value = serde_json::from_slice(&out.stdout).unwrap();
    for symbol in SYMBOLS {
        let s = &judged["symbols"][symbol];
        assert!(s["segments"].as_u64().unwrap() >= 3, "{symbol}: {s}");
        assert!(s["kinds"]["update"].as_u64().unwrap() > 100, "{symbol}: {s}");
        // The kill leaves one segment whose last updates are lost: a reader
        // sees it end early, never out of order.
        assert_eq!(s["broken"], 0, "{symbol}: {judged}");
        assert!(s["periodic"].as_u64().unwrap() >= 10, "{symbol}: {s}");
        assert_eq!(s["periodic_off"], 0, "every periodic snapshot at its segment's update id: {judged}");
        assert!(s["unsynced_causes"]["stop"].as_u64().unwrap() >= 1, "{symbol}: {s}");
    }
    // The restart after the kill ends, with `restart`, each book the tables
    // left synced; a book resyncing after one of the faults' gaps when the
    // kill came has none (likelier on a loaded machine), but not all three.
    let restarts: u64 =
        SYMBOLS.iter().map(|s| judged["symbols"][*s]["unsynced_causes"]["restart"].as_u64().unwrap_or(0)).sum();
    assert!(restarts >= 1, "no book ended with `restart` after the kill: {judged}");
    eprintln!(
        "compared {compared:?}; {} instants asked, {unsynced} unsynced; after the kill {same} same, {lost} lost",
        asked.len() + before_kill.len()
    );
}

fn bootstrap() -> String {
    std::env::var("K2_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Kafka mode: the order books' records travel through
/// `market.crypto.book.binance` and a flusher lands them in the book
/// tables. One `k2 run` producing and landing, asked for its books at
/// instants just gone and seconds back, killed (SIGKILL) mid-stream and
/// started again, then stopped: Confluent's client reading the topic
/// and pyiceberg reading the tables agree that every record landed exactly
/// once at the instant it was stamped, the restart marks each book the
/// kill left synced, the stored chains never break, and instants asked
/// before the kill answer as before (so no answer was from a lander that
/// had not read that far), or as unsynced for a span the kill cut short.
#[test]
fn kafka_mode_lands_every_book_record_once_across_a_kill() {
    let (_sim, addrs) = start_sim_with(
        "600",
        &[
            "--book-ticker-every",
            "0",
            "--depth-skip-every",
            "300",
            "--depth-duplicate-every",
            "37",
            "--stale-snapshot-every",
            "3",
            "--hold-while-idle",
        ],
    );
    let rest = addrs["rest"].as_str().unwrap().trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("b{}.", uuid::Uuid::new_v4().simple());
    let config = write_sim_config(
        dir.path(),
        &addrs,
        &format!(
            "[book]\nenabled = true\nsnapshot_every = \"1s\"\n[flush]\nmax_age = \"1s\"\n\
             [kafka]\nbootstrap_servers = \"{}\"\ntopic_prefix = \"{prefix}\"\npartitions = 2\nsession_timeout = \"6s\"\n",
            bootstrap()
        ),
    );
    // `mode` is a top-level key: it goes before the first section.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("mode = \"kafka\"\n{text}")).unwrap();
    let data = dir.path().join("data");
    let synced = |http: &str| SYMBOLS.iter().all(|s| get_json(http, &format!("/v1/book/{s}"))["synced"] == true);
    let mut asked = Vec::new();
    let mut compared = [0u32; SYMBOLS.len()];

    let k2 = Run::start(&config, &data, "info", dir.path().join("k2-1.log"));
    wait_until("every book synced", 60, || synced(&k2.http));
    // Instants just gone (a query waits for the lander to read the book's
    // partition to its end) and seconds back (committed).
    let started = std::time::Instant::now();
    while started.elapsed().as_secs() < 12 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        ask_at(&k2.http, &rest, 200, &mut asked, &mut compared);
        if started.elapsed().as_secs() >= 4 {
            ask_at(&k2.http, &rest, 3000, &mut asked, &mut compared);
        }
    }
    let landed = metric_total(&get(&k2.http, "/metrics"), "k2_book_records_committed_total", "table=");
    assert!(landed > 0.0, "book records committed before the kill");
    k2.kill9();

    let k2 = Run::start(&config, &data, "info", dir.path().join("k2-2.log"));
    wait_until("every book synced after the kill", 60, || synced(&k2.http));
    // Tansu keeps the killed member's partitions until its session ends:
    // the lander rejoins and lands what the first process left.
    wait_until("the records the first process left landed", 90, || {
        let text = get(&k2.http, "/metrics");
        metric_total(&text, "k2_book_records_committed_total", "table=") > 0.0
    });
    std::thread::sleep(std::time::Duration::from_secs(4));
    let (mut same, mut lost) = (0, 0);
    for a in &asked {
        let again = get_json(&k2.http, &format!("/v1/book/{}?depth=5000&at={}", a.symbol, a.at));
        if what(&again) == what(&a.answer) {
            same += 1;
        } else {
            assert_eq!(again["synced"], false, "{} at {}: {again} where it was {}", a.symbol, a.at, a.answer);
            lost += 1;
        }
    }
    assert!(same * 2 >= asked.len(), "instants before the kill answer as before: {same} same, {lost} lost");
    k2.stop();
    assert!(compared.iter().all(|&n| n >= 3), "stored books compared with the venue's, per symbol: {compared:?}");

    // A stop lands what its lander has read by then (15 s at most); on a
    // loaded machine the rest waits in the topic for the next flusher, as
    // designed. One more flusher, with no sources, lands it and stops.
    let flusher = Run::start_with_env(
        &config,
        &data,
        "info",
        dir.path().join("k2-flusher.log"),
        &[("K2__BINANCE__ENABLED", "false"), ("K2__BOOK__ENABLED", "false")],
    );
    wait_until("the last flusher owns the book partitions", 60, || {
        metric_total(&get(&flusher.http, "/metrics"), "k2_book_lander_partitions_owned", "") >= 2.0
    });
    flusher.stop();

    // A query node serves the registry for the judge.
    let query = Run::start_with_env(&config, &data, "info", dir.path().join("k2-query.log"), &[("K2__ROLE", "query")]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/book_topic_vs_tables.py");
    let topic = format!("{prefix}market.crypto.book.binance");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(bootstrap())
        .arg(format!("http://{}", query.http))
        .arg(&topic)
        .arg(&data)
        .output()
        .unwrap();
    query.stop();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let judged: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(judged["read"].as_u64().unwrap() > 500, "{judged}");
    for problem in ["missing", "doubled", "unknown"] {
        assert_eq!(judged[problem], 0, "{problem}: {judged}");
    }

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/read_books.py");
    let out = std::process::Command::new("python3").arg(script).arg(&data).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let books: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut restarts = 0;
    for symbol in SYMBOLS {
        let s = &books["symbols"][symbol];
        assert!(s["segments"].as_u64().unwrap() >= 2, "{symbol}: {s}");
        assert_eq!(s["broken"], 0, "{symbol}: {books}");
        assert!(s["unsynced_causes"]["stop"].as_u64().unwrap_or(0) >= 1, "{symbol}: {s}");
        restarts += s["unsynced_causes"]["restart"].as_u64().unwrap_or(0);
    }
    assert!(restarts >= 1, "no book ended with `restart` after the kill: {books}");
    eprintln!("judged {judged}; {same} instants same after the kill, {lost} lost; compared {compared:?}");
}
