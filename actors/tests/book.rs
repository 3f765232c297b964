//! Order books against the simulator, which keeps the true book: whenever
//! K2 says a book is synced at an update id, it equals the venue's book at
//! that id, through skipped ranges, duplicate events, snapshots older than
//! the stream and dropped connections; and the resyncs are the ones those
//! faults caused, never a crossed book.

mod common;

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
        ("/v1/book/BTCUSDT?at=2026-01-01T00:00:00Z", "400", "at"),
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
    k2.stop();
}

/// With books off, the endpoint says so instead of showing an empty book.
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
