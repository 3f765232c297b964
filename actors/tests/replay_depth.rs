//! Book updates in the replay: a market the simulator played, with its
//! books stored, replayed as `<symbol>@depth@100ms` to an independent client
//! (Python's `websockets`), synced by Binance's documented procedure from
//! the replay port's `GET /api/v3/depth`: the snapshot is the stored book
//! just before the range, every update follows on from it, and the book
//! they build is the stored book at the range's end. A second `k2 run`
//! whose Binance endpoints (WebSocket and REST) are the replay port syncs
//! its own books from them to the same books.

mod common;

use std::collections::BTreeMap;

use common::*;
use rust_decimal::Decimal;
use serde_json::Value;

const TRADES: u64 = 300;

fn now_us() -> i64 {
    k2_core::Timestamp::now().as_micros()
}

/// One side of a book, price to quantity.
type Side = BTreeMap<Decimal, Decimal>;

fn side(v: &Value) -> Side {
    let parse = |x: &Value| x.as_str().unwrap().parse::<Decimal>().unwrap();
    v.as_array().unwrap().iter().map(|l| (parse(&l[0]), parse(&l[1]))).collect()
}

/// A book as an id and its two sides.
#[derive(Debug, Clone, PartialEq)]
struct Book {
    id: u64,
    bids: Side,
    asks: Side,
}

impl Book {
    /// From a depth answer: Binance's (`lastUpdateId`) or `/v1/book`'s.
    fn of(v: &Value) -> Book {
        let id = v["lastUpdateId"].as_u64().or(v["update_id"].as_u64()).unwrap_or_else(|| panic!("no id: {v}"));
        Book { id, bids: side(&v["bids"]), asks: side(&v["asks"]) }
    }

    fn apply(&mut self, u: &k2_core::book::DepthUpdate) {
        for (levels, side) in [(&u.bids, &mut self.bids), (&u.asks, &mut self.asks)] {
            for (price, quantity) in levels {
                if quantity.is_zero() {
                    side.remove(price);
                } else {
                    side.insert(*price, *quantity);
                }
            }
        }
        self.id = u.final_update_id;
    }
}

#[test]
fn book_updates_replay_as_diff_depth_following_on_from_the_ports_snapshot() {
    let (_sim, addrs) = start_sim_with("300", &["--trades", &TRADES.to_string(), "--book-ticker-every", "0"]);
    let rest = addrs["rest"].as_str().unwrap().trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = write_sim_config(
        dir.path(),
        &addrs,
        "[book]\nenabled = true\n[flush]\nmax_age = \"1s\"\n[replay]\nenabled = true\nbind = \"127.0.0.1:0\"\n",
    );
    let k2 = Run::start(&config, &dir.path().join("data-1"), "info", dir.path().join("k2-1.log"));
    let port = announced(&k2, "k2 run: replay ws://");
    wait_until("the BTCUSDT book synced", 60, || get_json(&k2.http, "/v1/book/BTCUSDT")["synced"] == true);
    let start = now_us();
    wait_until("the market played", 120, || {
        get_json(&rest, "/sim/stats")["trades_generated"].as_u64() == Some(TRADES * 3)
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let end = now_us();
    // Some of the range committed to the tables, the rest still in the tail.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let stored = |at: i64| get_json(&k2.http, &format!("/v1/book/BTCUSDT?depth=5000&at={at}"));
    let before = stored(start - 1);
    assert_eq!(before["synced"], true, "{before}");
    let after = stored(end - 1);
    assert_eq!(after["synced"], true, "{after}");

    // With no replay open, the port's snapshot is the book just before the
    // base URL's start.
    let (status, snapshot) = get_status(&port, &format!("/start/{start}/api/v3/depth?symbol=btcusdt&limit=5000"));
    assert_eq!(status, 200, "{snapshot}");
    assert_eq!(Book::of(&snapshot), Book::of(&before));
    let (_, top) = get_status(&port, &format!("/start/{start}/api/v3/depth?symbol=BTCUSDT&limit=3"));
    assert_eq!(side(&top["bids"]).len(), before["bids"].as_array().unwrap().len().min(3), "{top}");

    // The stream over the range, beside a trade stream: every update
    // follows on from the snapshot, and ends at the stored book.
    let url = format!("ws://{port}/stream?streams=btcusdt@depth@100ms/ethusdt@trade&start={start}&end={end}&speed=0");
    let got = replay_client(&url, None);
    assert_eq!(got["close_code"], 1000, "{got}");
    let mut book = Book::of(&snapshot);
    let mut books = BTreeMap::from([(book.id, book.clone())]);
    let (mut updates, mut trades, mut last_event) = (0, 0, i64::MIN);
    for text in got["frames"].as_array().unwrap() {
        let text = text.as_str().unwrap();
        let frame: Value = serde_json::from_str(text).unwrap();
        if frame["stream"] == "ethusdt@trade" {
            trades += 1;
            continue;
        }
        assert_eq!(frame["stream"], "btcusdt@depth@100ms", "{text}");
        assert_eq!(frame["data"]["e"], "depthUpdate", "{text}");
        let u = k2_core::source::binance::depth::parse_depth_update(text.as_bytes()).unwrap();
        if updates == 0 {
            // Binance's rule for the first event after a snapshot.
            assert!(u.first_update_id <= book.id + 1 && book.id < u.final_update_id, "{text} after {}", book.id);
        } else {
            assert_eq!(u.first_update_id, book.id + 1, "the updates follow on: {text}");
        }
        let event = u.event_time.as_micros();
        assert!(event >= last_event, "venue time order: {text}");
        last_event = event;
        book.apply(&u);
        books.insert(book.id, book.clone());
        updates += 1;
    }
    assert!(updates >= 50, "{updates} updates replayed");
    assert!(trades > 0, "the trade stream beside it");
    assert_eq!(book, Book::of(&after), "the replayed book at the end of the range");

    // Bad requests name their parameter, in Binance's error shape.
    for (path, parameter, code) in [
        ("/api/v3/depth", "symbol", -1102),
        ("/api/v3/depth?symbol=BTCUSDT&limit=0", "limit", -1100),
        ("/api/v3/depth?symbol=XRPUSDT", "symbol", -1121),
    ] {
        let (status, body) = get_status(&port, path);
        assert_eq!((status, &body["parameter"], &body["code"]), (400, &Value::from(parameter), &Value::from(code)));
    }

    // Partial book depth: the top levels each second (and each 100 ms) of
    // K2's clock from the start, each the stored book's top at its tick.
    let url =
        format!("ws://{port}/stream?streams=btcusdt@depth5/btcusdt@depth10@100ms&start={start}&end={end}&speed=0");
    let got = replay_client(&url, None);
    assert_eq!(got["close_code"], 1000, "{got}");
    let (mut slow, mut fast) = (Vec::new(), Vec::new());
    for text in got["frames"].as_array().unwrap() {
        let frame: Value = serde_json::from_str(text.as_str().unwrap()).unwrap();
        let data = frame["data"].clone();
        let mut keys: Vec<&String> = data.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["asks", "bids", "lastUpdateId"], "Binance's partial depth payload: {data}");
        match frame["stream"].as_str().unwrap() {
            "btcusdt@depth5" => slow.push(data),
            "btcusdt@depth10@100ms" => fast.push(data),
            other => panic!("stream {other}"),
        }
    }
    let ticks = |step: i64| usize::try_from((end - start + step - 1) / step).unwrap();
    assert_eq!(slow.len(), ticks(1_000_000), "a frame a second");
    assert_eq!(fast.len(), ticks(100_000), "a frame each 100 ms");
    let at_tick = |step: i64, k: usize, depth: usize| {
        let at = start + step * i64::try_from(k).unwrap();
        Book::of(&get_json(&k2.http, &format!("/v1/book/BTCUSDT?depth={depth}&at={at}")))
    };
    for (k, data) in slow.iter().enumerate() {
        assert_eq!(Book::of(data), at_tick(1_000_000, k, 5), "depth5, tick {k}");
    }
    for k in (0..fast.len()).step_by(5) {
        assert_eq!(Book::of(&fast[k]), at_tick(100_000, k, 10), "depth10@100ms, tick {k}");
    }
    let ids: Vec<u64> = fast.iter().map(|d| d["lastUpdateId"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "the book only moves on");
    assert!(ids.first() < ids.last(), "the book moved over the range");

    // A second K2 syncs its book from the replay port alone.
    let base = format!("{port}/start/{start}/end/{end}/speed/0.2");
    let second = dir.path().join("k2-2.toml");
    std::fs::write(
        &second,
        format!(
            "[http]\nbind = \"127.0.0.1:0\"\n[binance]\nendpoint = \"ws://{base}\"\nalternate_endpoint = \"ws://{base}\"\n\
             rest_endpoint = \"http://{base}\"\nbook_ticker = false\n[book]\nenabled = true\nstore = false\n\
             [gap_recovery]\nenabled = false\n"
        ),
    )
    .unwrap();
    let second_k2 = Run::start(&second, &dir.path().join("data-2"), "info", dir.path().join("k2-2.log"));
    // Paced, so the book is asked at several points of the replay.
    let mut compared = std::collections::BTreeSet::new();
    wait_until("the second K2's book synced from the replay, at 3 update ids", 90, || {
        let live = get_json(&second_k2.http, "/v1/book/BTCUSDT?depth=5000");
        if live["synced"] != true {
            return false;
        }
        let live = Book::of(&live);
        let replayed =
            books.get(&live.id).unwrap_or_else(|| panic!("the second K2 holds id {} never replayed", live.id));
        assert_eq!(&live, replayed, "the second K2's book at {}", live.id);
        compared.insert(live.id);
        compared.len() >= 3
    });
    second_k2.stop();
    k2.stop();
}
