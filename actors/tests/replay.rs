//! The replay port against an independent client (Python's `websockets`):
//! a market the simulator played is replayed in Binance's combined and raw
//! formats, every stored trade once, in time order, each frame one K2's own
//! Binance parser takes back as the trade that was stored; the end of the
//! range closes normally, and a bad request is refused naming its
//! parameter.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;

const TRADES: u64 = 400;

fn replay(url: &str) -> Value {
    replay_client(url, None)
}

/// Every stored trade of `symbol`, by trade id, through `/v1/trades`.
fn stored(http: &str, symbol: &str) -> BTreeMap<i64, Value> {
    let mut rows = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/trades?symbol={symbol}&limit=1000&cursor={c}"),
            None => format!("/v1/trades?symbol={symbol}&limit=1000"),
        };
        let page = get_json(http, &path);
        for row in page["data"].as_array().unwrap() {
            rows.insert(row["source_sequence"].as_i64().unwrap(), row.clone());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return rows,
        }
    }
}

/// The replay port `run` announces, on the line after its HTTP address.
fn replay_port(run: &Run) -> String {
    announced(run, "k2 run: replay ws://")
}

/// Waits until the simulator at `rest` has played its `trades` and `run`
/// stores every one.
fn played_and_stored(rest: &str, run: &Run, trades: u64) {
    wait_until("the market played", 120, || get_json(rest, "/sim/stats")["trades_generated"].as_u64() == Some(trades));
    wait_until("every trade stored", 60, || trades_seen(&run.http, "hybrid") == trades);
}

fn micros(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_micros()
}

#[test]
fn a_replayed_market_is_every_stored_trade_in_binances_format_and_order() {
    let (_sim, addrs) = start_sim_with("800", &["--trades", &TRADES.to_string(), "--book-ticker-every", "0"]);
    let rest = addrs["rest"].as_str().unwrap().trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    // Frequent commits: the replay reads spans ending at many files' ends,
    // and the tail after them.
    let config = write_sim_config(
        dir.path(),
        &addrs,
        "[replay]\nenabled = true\nbind = \"127.0.0.1:0\"\n[flush]\nmax_age = \"150ms\"\n",
    );
    let k2 = Run::start(&config, &dir.path().join("data"), "info", dir.path().join("k2.log"));
    let replay_addr = replay_port(&k2);
    played_and_stored(&rest, &k2, TRADES * 3);

    let symbols = ["BTCUSDT", "ETHUSDT", "BNBUSDT"];
    let rows: BTreeMap<&str, BTreeMap<i64, Value>> = symbols.iter().map(|s| (*s, stored(&k2.http, s))).collect();
    let first = rows.values().flat_map(|r| r.values()).map(|r| micros(r["timestamp"].as_str().unwrap())).min().unwrap();

    // Combined: the three streams merged in time order, as fast as read.
    let url =
        format!("ws://{replay_addr}/stream?streams=btcusdt@trade/ethusdt@trade/bnbusdt@trade&start={first}&speed=0");
    let got = replay(&url);
    assert_eq!(got["close_code"], 1000, "{}", got["close_reason"]);
    let frames = got["frames"].as_array().unwrap();
    assert_eq!(frames.len() as u64, TRADES * 3, "every stored trade once");
    let mut parser = k2_core::source::binance::BinanceParser::default();
    let mut seen: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut last_time = i64::MIN;
    for text in frames {
        let text = text.as_str().unwrap();
        let frame: Value = serde_json::from_str(text).unwrap();
        let symbol = frame["data"]["s"].as_str().unwrap().to_owned();
        assert_eq!(frame["stream"], format!("{}@trade", symbol.to_lowercase()), "{text}");
        // K2's own Binance parser takes the frame back as the stored trade.
        let k2_core::source::binance::Frame::Event(event) =
            parser.parse(text.as_bytes(), k2_core::Timestamp::now()).unwrap()
        else {
            panic!("not an event: {text}")
        };
        let k2_core::MarketEvent::Trade(trade) = event else { panic!("not a trade: {text}") };
        let id = trade.source_sequence.unwrap();
        let row = &rows[symbol.as_str()][&id];
        assert_eq!(trade.price.to_string(), row["price"].as_str().unwrap(), "{text} / {row}");
        assert_eq!(trade.quantity.to_string(), row["quantity"].as_str().unwrap(), "{text} / {row}");
        assert_eq!(trade.timestamp.as_micros(), micros(row["timestamp"].as_str().unwrap()), "{text} / {row}");
        assert_eq!(trade.side.as_str(), row["side"].as_str().unwrap(), "{text} / {row}");
        assert_eq!(
            frame["data"]["E"].to_string(),
            row["vendor_data"]["event_time"].as_str().unwrap(),
            "the venue's event time: {text} / {row}"
        );
        let time = trade.timestamp.as_micros();
        assert!(time >= last_time, "time order: {text} after {last_time}");
        last_time = time;
        seen.entry(symbol).or_default().push(id);
    }
    for symbol in symbols {
        let ids = &seen[symbol];
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{symbol}: each trade once, in order");
        assert_eq!(ids.len(), rows[symbol].len(), "{symbol}");
    }

    // Raw frames of one stream over part of the range, times in µs.
    let times: Vec<i64> = rows["ETHUSDT"].values().map(|r| micros(r["timestamp"].as_str().unwrap())).collect();
    let (from, to) = (times[times.len() / 4], times[times.len() / 2]);
    let got =
        replay(&format!("ws://{replay_addr}/ws/ethusdt@trade?start={from}&end={to}&speed=0&timeUnit=MICROSECOND"));
    assert_eq!(got["close_code"], 1000);
    let raw = got["frames"].as_array().unwrap();
    // `end` is exclusive, as in `/v1`.
    let expected = times.iter().filter(|t| (from..to).contains(*t)).count();
    assert_eq!(raw.len(), expected);
    for text in raw {
        let payload: Value = serde_json::from_str(text.as_str().unwrap()).unwrap();
        assert_eq!(payload["e"], "trade", "{payload}");
        let t = payload["T"].as_i64().unwrap();
        assert!((from..to).contains(&t), "µs trade time inside the range: {payload}");
    }

    // Paced (speed 20: two seconds of market in about 0.1 s): the range
    // still arrives whole and closes normally.
    let end = first + 2_000_000;
    let got = replay(&format!("ws://{replay_addr}/ws/btcusdt@trade?start={first}&end={end}&speed=20"));
    assert_eq!(got["close_code"], 1000);
    let within = rows["BTCUSDT"].values().filter(|r| micros(r["timestamp"].as_str().unwrap()) < end).count();
    assert_eq!(got["frames"].as_array().unwrap().len(), within);

    let refused = replay(&format!("ws://{replay_addr}/stream?streams=btcusdt@trade"));
    assert_eq!(refused["status"], 400, "{refused}");
    let body: Value = serde_json::from_str(refused["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["parameter"], "start", "{body}");
    let refused = replay(&format!("ws://{replay_addr}/stream?streams=btcusdt@depth&start=0"));
    let body: Value = serde_json::from_str(refused["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["parameter"], "streams", "{body}");
    k2.stop();
}

/// The round trip: a market K2 stored, replayed into a second `k2 run`
/// whose Binance endpoint is the replay port with the range in its base
/// URL, lands the same trades in a second data directory (ids, prices,
/// quantities, times, sides and the venue's event times).
#[test]
fn a_market_replayed_into_another_k2_lands_the_same_trades() {
    let (_sim, addrs) = start_sim_with("800", &["--trades", &TRADES.to_string(), "--book-ticker-every", "0"]);
    let rest = addrs["rest"].as_str().unwrap().trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = write_sim_config(dir.path(), &addrs, "[replay]\nenabled = true\nbind = \"127.0.0.1:0\"\n");
    let first_k2 = Run::start(&config, &dir.path().join("data-1"), "info", dir.path().join("k2-1.log"));
    let replay_addr = replay_port(&first_k2);
    played_and_stored(&rest, &first_k2, TRADES * 3);
    let symbols = ["BTCUSDT", "ETHUSDT", "BNBUSDT"];
    let before: Vec<BTreeMap<i64, Value>> = symbols.iter().map(|s| stored(&first_k2.http, s)).collect();
    let times = || before.iter().flat_map(|r| r.values()).map(|r| micros(r["timestamp"].as_str().unwrap()));
    let (first, last) = (times().min().unwrap(), times().max().unwrap());

    let base = format!("ws://{replay_addr}/start/{first}/end/{}/speed/0", last + 1);
    let second = dir.path().join("k2-2.toml");
    std::fs::write(
        &second,
        format!(
            "[http]\nbind = \"127.0.0.1:0\"\n[binance]\nendpoint = \"{base}\"\nalternate_endpoint = \"{base}\"\n\
             rest_endpoint = \"http://{rest}\"\nbook_ticker = false\n[gap_recovery]\nenabled = false\n"
        ),
    )
    .unwrap();
    let second_k2 = Run::start(&second, &dir.path().join("data-2"), "info", dir.path().join("k2-2.log"));
    wait_until("the replay landed in the second K2", 60, || trades_seen(&second_k2.http, "hybrid") >= TRADES * 3);
    let after: Vec<BTreeMap<i64, Value>> = symbols.iter().map(|s| stored(&second_k2.http, s)).collect();
    second_k2.stop();
    first_k2.stop();
    for (symbol, (a, b)) in symbols.iter().zip(before.iter().zip(&after)) {
        assert_eq!(a.len(), b.len(), "{symbol}");
        for (id, row) in a {
            let again = &b[id];
            for field in ["message_id", "trade_id", "price", "quantity", "timestamp", "side", "currency"] {
                assert_eq!(row[field], again[field], "{symbol} {id} {field}");
            }
            assert_eq!(row["vendor_data"]["event_time"], again["vendor_data"]["event_time"], "{symbol} {id}");
            assert_eq!(row["vendor_data"]["is_buyer_maker"], again["vendor_data"]["is_buyer_maker"], "{symbol} {id}");
        }
    }
}

/// Every stored row of `symbol` in `table` (`trades` or `quotes`) stamped
/// before `end`.
fn stored_before(http: &str, table: &str, symbol: &str, end: i64) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/{table}?symbol={symbol}&end={end}&limit=1000");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = get_json(http, &path);
        rows.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return rows,
        }
    }
}

/// Quotes replay as spot book tickers, merged with the trades in time
/// order, each taken back by K2's parser as the quote stored.
#[test]
fn quotes_replay_as_book_tickers_beside_the_trades() {
    let (_sim, addrs) = start_sim_with("400", &["--trades", "200"]);
    let rest = addrs["rest"].as_str().unwrap().trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = write_sim_config(dir.path(), &addrs, "[replay]\nenabled = true\nbind = \"127.0.0.1:0\"\n");
    let k2 = Run::start_with_env(
        &config,
        &dir.path().join("data"),
        "info",
        dir.path().join("k2.log"),
        &[("K2__BINANCE__BOOK_TICKER", "true")],
    );
    let replay_addr = replay_port(&k2);
    played_and_stored(&rest, &k2, 600);
    let end = k2_core::Timestamp::now().as_micros();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let trades = stored_before(&k2.http, "trades", "BTCUSDT", end);
    let quotes = stored_before(&k2.http, "quotes", "BTCUSDT", end);
    assert!(quotes.len() >= 20, "{} quotes stored", quotes.len());
    let start = trades.iter().chain(&quotes).map(|r| micros(r["timestamp"].as_str().unwrap())).min().unwrap();
    let got = replay(&format!(
        "ws://{replay_addr}/stream?streams=btcusdt@trade/btcusdt@bookTicker&start={start}&end={end}&speed=0"
    ));
    k2.stop();
    assert_eq!(got["close_code"], 1000, "{got}");
    let frames = got["frames"].as_array().unwrap();
    assert_eq!(frames.len(), trades.len() + quotes.len());
    let by_id: BTreeMap<i64, &Value> = quotes.iter().map(|q| (q["source_sequence"].as_i64().unwrap(), q)).collect();
    let mut parser = k2_core::source::binance::BinanceParser::default();
    let (mut last, mut tickers) = (i64::MIN, 0);
    for text in frames {
        let text = text.as_str().unwrap();
        let frame: Value = serde_json::from_str(text).unwrap();
        let k2_core::source::binance::Frame::Event(event) =
            parser.parse(text.as_bytes(), k2_core::Timestamp::now()).unwrap()
        else {
            panic!("not an event: {text}")
        };
        let time = match event {
            k2_core::MarketEvent::Quote(q) => {
                assert_eq!(frame["stream"], "btcusdt@bookTicker", "{text}");
                let row = by_id[&q.source_sequence.unwrap()];
                let text_of = |d: Option<rust_decimal::Decimal>| d.map(|d| d.to_string());
                assert_eq!(text_of(q.bid_price).as_deref(), row["bid_price"].as_str(), "{text} / {row}");
                assert_eq!(text_of(q.bid_quantity).as_deref(), row["bid_quantity"].as_str(), "{text} / {row}");
                assert_eq!(text_of(q.ask_price).as_deref(), row["ask_price"].as_str(), "{text} / {row}");
                assert_eq!(text_of(q.ask_quantity).as_deref(), row["ask_quantity"].as_str(), "{text} / {row}");
                tickers += 1;
                micros(row["timestamp"].as_str().unwrap())
            }
            k2_core::MarketEvent::Trade(t) => t.timestamp.as_micros(),
        };
        assert!(time >= last, "time order at {text}");
        last = time;
    }
    assert_eq!(tickers, quotes.len());
}

/// `GET /v1/replay` on the API port: the same stream behind the API keys,
/// every stored trade once in time order up to a normal close; refused
/// without the key, and with a bad parameter named.
#[test]
fn the_api_port_replays_behind_its_keys() {
    let (_sim, addrs) = start_sim_with("800", &["--trades", "200", "--book-ticker-every", "0"]);
    let rest = addrs["rest"].as_str().unwrap().trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = write_sim_config(dir.path(), &addrs, "");
    let key = "replay-key";
    let k2 = Run::start_with_env(
        &config,
        &dir.path().join("data"),
        "info",
        dir.path().join("k2.log"),
        &[("K2__HTTP__API_KEYS", &format!("[\"{key}\"]"))],
    );
    wait_until("the market played", 120, || get_json(&rest, "/sim/stats")["trades_generated"].as_u64() == Some(600));
    // /v1 needs the key now: the stream's own count is checked against
    // the trades the simulator played, each once.
    let url = |q: &str| format!("ws://{}/v1/replay?{q}", k2.http);
    let all = "streams=btcusdt@trade/ethusdt@trade/bnbusdt@trade&start=0&speed=0";
    let mut got = replay_client(&url(all), Some(key));
    for _ in 0..100 {
        if got["frames"].as_array().map_or(0, Vec::len) == 600 {
            break;
        }
        // Rows on their way into the tail when the stream began.
        std::thread::sleep(std::time::Duration::from_millis(100));
        got = replay_client(&url(all), Some(key));
    }
    assert_eq!(got["close_code"], 1000, "{}", got["close_reason"]);
    let frames = got["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 600);
    let mut seen = std::collections::BTreeSet::new();
    let mut last = i64::MIN;
    for text in frames {
        let frame: Value = serde_json::from_str(text.as_str().unwrap()).unwrap();
        let data = &frame["data"];
        assert!(seen.insert((data["s"].as_str().unwrap().to_owned(), data["t"].as_i64().unwrap())), "once: {frame}");
        let t = data["T"].as_i64().unwrap();
        assert!(t >= last, "time order: {frame}");
        last = t;
    }

    let refused = replay_client(&url(all), None);
    assert_eq!(refused["status"], 401, "{refused}");
    let refused = replay_client(&url("streams=btcusdt@trade"), Some(key));
    assert_eq!(refused["status"], 400, "{refused}");
    let body: Value = serde_json::from_str(refused["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["parameter"], "start", "{body}");
    k2.stop();
}
