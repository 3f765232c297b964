//! The Flight SQL port against real clients (the ADBC Flight SQL driver and
//! pyarrow's Flight client, `tests/python/flight_client.py`): a market the
//! simulator played, asked as SQL, answers with the rows `/v1` stores, to
//! the last decimal place and microsecond; writes, `COPY` and file reads
//! are refused; a call without the key is refused; time travel by header
//! reads the snapshot named.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::str::FromStr;

use common::*;
use rust_decimal::Decimal;
use serde_json::Value;

const KEY: &str = "flight-test-key";
const OTHER_KEY: &str = "another-flight-key";
const TRADES: u64 = 400;

/// A `/v1` GET with the API key, as HTTP/1.0 (so the body is not chunked).
fn v1(http: &str, path: &str) -> Value {
    let mut s = std::net::TcpStream::connect(http).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: k2\r\nX-API-Key: {KEY}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    serde_json::from_str(body).unwrap()
}

/// Every stored trade of `symbol`, by trade id.
fn stored(http: &str, symbol: &str) -> BTreeMap<String, Value> {
    let mut rows = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/trades?symbol={symbol}&limit=1000&cursor={c}"),
            None => format!("/v1/trades?symbol={symbol}&limit=1000"),
        };
        let page = v1(http, &path);
        for row in page["data"].as_array().unwrap() {
            rows.insert(row["trade_id"].as_str().unwrap().to_owned(), row.clone());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return rows,
        }
    }
}

fn micros(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text).unwrap().timestamp_micros()
}

fn decimal(v: &Value) -> Decimal {
    Decimal::from_str(v.as_str().unwrap()).unwrap()
}

fn client(args: &[&str]) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/flight_client.py");
    let out = std::process::Command::new("python3").arg(script).args(args).output().unwrap();
    assert!(out.status.success(), "flight_client.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn flight_port(run: &Run) -> String {
    announced(run, "k2 run: flight sql grpc://")
}

fn error_of<'a>(got: &'a Value, call: &str) -> &'a str {
    got[call]["error"].as_str().unwrap_or_else(|| panic!("{call} was not refused: {}", got[call]))
}

#[test]
fn sql_clients_read_the_stored_market_exactly_and_cannot_write() {
    let (_sim, addrs) = start_sim_with("800", &["--trades", &TRADES.to_string(), "--book-ticker-every", "0"]);
    let rest = addrs["rest"].as_str().unwrap().trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = write_sim_config(
        dir.path(),
        &addrs,
        "[flight]\nenabled = true\nbind = \"127.0.0.1:0\"\nmax_rows = 1000\n[flush]\nmax_age = \"1s\"\n",
    );
    let k2 = Run::start_with_env(
        &config,
        &dir.path().join("data"),
        "info",
        dir.path().join("k2.log"),
        &[("K2__HTTP__API_KEYS", &format!("[\"{KEY}\", \"{OTHER_KEY}\"]"))],
    );
    let flight = flight_port(&k2);
    let trades_stored = || -> u64 {
        v1(&k2.http, "/v1/symbols")["data"].as_array().unwrap().iter().map(|r| r["trades"].as_u64().unwrap()).sum()
    };
    wait_until("the market played", 120, || {
        get_json(&rest, "/sim/stats")["trades_generated"].as_u64() == Some(TRADES * 3)
    });
    wait_until("every trade stored", 60, || trades_stored() == TRADES * 3);
    wait_until("every trade committed", 60, || {
        v1(&k2.http, "/v1/symbols?source=historical")["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["trades"].as_u64().unwrap())
            .sum::<u64>()
            == TRADES * 3
    });
    let snapshots = v1(&k2.http, "/v1/snapshots?table=trades");
    let first_snapshot = snapshots["data"][0]["snapshot_id"].as_i64().unwrap();
    // Rows in the table at that snapshot, as Iceberg's summary counts them.
    let at_first = snapshots["data"][0]["summary"]["total-records"].as_str().unwrap_or_else(|| panic!("{snapshots}"));

    let uri = format!("grpc://{flight}");
    let got = client(&[&uri, KEY, "BTCUSDT", &first_snapshot.to_string()]);
    let symbols = ["BNBUSDT", "BTCUSDT", "ETHUSDT"];
    let rows: BTreeMap<&str, BTreeMap<String, Value>> = symbols.iter().map(|s| (*s, stored(&k2.http, s))).collect();

    // Browsing: the catalog, the tables, the server.
    assert_eq!(got["vendor"], "K2");
    let objects = got["objects"].as_array().unwrap();
    let tables: Vec<&str> = objects.iter().map(|o| o["table"].as_str().unwrap()).collect();
    assert_eq!(tables, ["quotes", "trades"], "{objects:?}");
    assert!(objects.iter().all(|o| o["catalog"] == "k2" && o["schema"] == "public"), "{objects:?}");
    let columns = got["trades_schema"].as_array().unwrap();
    assert!(columns.iter().any(|c| c.as_str().unwrap().starts_with("price:decimal128(")), "{columns:?}");
    assert!(columns.iter().any(|c| c.as_str().unwrap().starts_with("timestamp:timestamp[us, tz=")), "{columns:?}");
    // The SQL types (JDBC's getTypeInfo), all or by type.
    let types = got["xdbc_types"]["ok"].as_array().unwrap_or_else(|| panic!("{}", got["xdbc_types"]));
    let names: Vec<&str> = types.iter().map(|t| t[0].as_str().unwrap()).collect();
    for name in ["BOOLEAN", "BIGINT", "DECIMAL", "VARCHAR", "TIMESTAMP"] {
        assert!(names.contains(&name), "{name} in {types:?}");
    }
    assert_eq!(got["xdbc_bigint"]["ok"], serde_json::json!([["BIGINT", -5, -5]]), "{}", got["xdbc_bigint"]);
    // A statement's schema without running it (GetSchema), by pyarrow and
    // by ADBC; a write is refused there too.
    assert_eq!(
        got["get_schema"]["ok"],
        serde_json::json!([
            "trade_id:string",
            columns.iter().find(|c| c.as_str().unwrap().starts_with("price:")).unwrap(),
            columns.iter().find(|c| c.as_str().unwrap().starts_with("timestamp:")).unwrap()
        ]),
        "{}",
        got["get_schema"]
    );
    assert!(error_of(&got, "get_schema_insert").contains("read-only"), "{}", error_of(&got, "get_schema_insert"));
    let quantity = columns.iter().find(|c| c.as_str().unwrap().starts_with("quantity:")).unwrap();
    assert_eq!(
        got["execute_schema"]["ok"],
        serde_json::json!(["symbol:string", quantity]),
        "{}",
        got["execute_schema"]
    );

    // An aggregate per symbol: counts and exact sums of every stored trade.
    let per_symbol = got["per_symbol"]["ok"]["rows"].as_array().unwrap_or_else(|| panic!("{}", got["per_symbol"]));
    assert_eq!(per_symbol.len(), 3);
    for row in per_symbol {
        let symbol = row[0].as_str().unwrap();
        let stored = &rows[symbol];
        assert_eq!(row[1].as_str().unwrap(), stored.len().to_string(), "{symbol}");
        let notional: Decimal = stored.values().map(|r| decimal(&r["price"]) * decimal(&r["quantity"])).sum();
        assert_eq!(decimal(&row[2]), notional, "{symbol}: sum(price * quantity) exact");
        let low = stored.values().map(|r| decimal(&r["price"])).min().unwrap();
        assert_eq!(decimal(&row[3]), low, "{symbol}");
    }

    // A prepared statement with a parameter: every BTCUSDT trade once, in
    // order, each field as stored.
    let prepared = got["prepared"]["ok"]["rows"].as_array().unwrap_or_else(|| panic!("{}", got["prepared"]));
    assert_eq!(prepared.len(), rows["BTCUSDT"].len());
    let mut last = i64::MIN;
    for row in prepared {
        let stored = &rows["BTCUSDT"][row[0].as_str().unwrap()];
        assert_eq!(decimal(&row[1]), decimal(&stored["price"]), "{row:?} / {stored}");
        assert_eq!(decimal(&row[2]), decimal(&stored["quantity"]), "{row:?} / {stored}");
        // A zoned timestamp, the same microsecond.
        let at = micros(row[3].as_str().unwrap());
        assert_eq!(at, micros(stored["timestamp"].as_str().unwrap()), "{row:?} / {stored}");
        assert!(at >= last, "time order");
        last = at;
    }
    let limited = got["prepared_limit"]["ok"]["rows"].as_array().unwrap_or_else(|| panic!("{}", got["prepared_limit"]));
    let first_ids: Vec<&String> = rows["BTCUSDT"].keys().take(3).collect();
    assert_eq!(limited.iter().map(|r| r[0].as_str().unwrap()).collect::<Vec<_>>(), first_ids);
    // JDBC's `?` placeholders, numbered in order.
    assert_eq!(got["prepared_qmark"]["ok"], got["prepared_limit"]["ok"], "{}", got["prepared_qmark"]);

    // Time travel by header: the first snapshot, as /v1 reads it.
    let historical =
        got["as_of_snapshot"]["ok"]["rows"].as_array().unwrap_or_else(|| panic!("{}", got["as_of_snapshot"]));
    assert_eq!(historical[0][0].as_str().unwrap(), at_first);

    // Refusals, each with its reason.
    for call in ["insert", "copy", "update"] {
        assert!(error_of(&got, call).contains("read-only"), "{call}: {}", error_of(&got, call));
    }
    assert!(error_of(&got, "file").contains("not found"), "{}", error_of(&got, "file"));
    assert!(error_of(&got, "unknown_table").contains("orders"), "{}", error_of(&got, "unknown_table"));
    assert!(error_of(&got, "too_many_rows").contains("flight.max_rows"), "{}", error_of(&got, "too_many_rows"));
    assert!(error_of(&got, "bad_as_of").contains("x-k2-as-of"), "{}", error_of(&got, "bad_as_of"));
    assert!(error_of(&got, "no_key").to_lowercase().contains("unauthenticated"), "{}", error_of(&got, "no_key"));
    assert_eq!(got["pyarrow_with_token"], true, "the handshake's token is accepted");
    let without = got["pyarrow_without_token"].as_str().unwrap();
    assert!(without.to_lowercase().contains("unauthenticated"), "{without}");

    // A prepared statement answers only to the key that opened it: another
    // key can neither run it nor close it.
    let owners = client(&[&uri, KEY, "--owners", OTHER_KEY, "SELECT count(*) AS n FROM trades"]);
    let e = owners["other_runs"]["error"].as_str().unwrap_or_else(|| panic!("another key ran it: {owners}"));
    assert!(e.contains("not open"), "{e}");
    assert_eq!(owners["owner_runs"]["ok"], 1, "{owners}");

    let metrics = get(&k2.http, "/metrics");
    for reason in ["not_read_only", "rows", "unauthenticated", "bad_request"] {
        assert!(
            metric_total(&metrics, "k2_flight_refused_total", &format!("reason=\"{reason}\"")) >= 1.0,
            "refusals counted by reason: {reason}"
        );
    }
    k2.stop();
}

/// A statement past `flight.timeout` or `flight.memory_limit` ends with an
/// error naming the limit; the next statement runs as before.
#[test]
fn a_statement_past_a_limit_ends_naming_it_and_the_next_one_runs() {
    let (_sim, addrs) = start_sim_with("800", &["--trades", "20", "--book-ticker-every", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_sim_config(
        dir.path(),
        &addrs,
        "[flight]\nenabled = true\nbind = \"127.0.0.1:0\"\ntimeout = \"2s\"\nmemory_limit = 1048576\n\
         [query]\nmax_concurrent = 1\n",
    );
    let k2 = Run::start(&config, &dir.path().join("data"), "info", dir.path().join("k2.log"));
    let uri = format!("grpc://{}", flight_port(&k2));
    wait_until("the trades stored", 60, || trades_seen(&k2.http, "hybrid") == 60);
    let sql = |q: &str| client(&[&uri, "", "--sql", q]);

    let slow = sql("SELECT count(*) FROM generate_series(1, 1000000000000)");
    let e = slow["error"].as_str().unwrap_or_else(|| panic!("not refused: {slow}"));
    assert!(e.contains("flight.timeout"), "{e}");
    let big = sql("SELECT value FROM generate_series(1, 5000000) ORDER BY value DESC");
    let e = big["error"].as_str().unwrap_or_else(|| panic!("not refused: {big}"));
    assert!(e.contains("flight.memory_limit"), "{e}");
    // A function whose one call could take any memory is not there.
    let huge = sql("SELECT repeat('x', 2000000000)");
    let e = huge["error"].as_str().unwrap_or_else(|| panic!("not refused: {huge}"));
    assert!(e.contains("repeat"), "{e}");
    let after = sql("SELECT count(*) AS n FROM trades");
    assert_eq!(after["ok"]["rows"][0][0], "60", "{after}");
    // A query's plan, and the plan run with its figures, for tuning.
    let grouped = "SELECT symbol, count(*) FROM trades GROUP BY symbol";
    for explain in [format!("EXPLAIN {grouped}"), format!("EXPLAIN ANALYZE {grouped}")] {
        let plan = sql(&explain);
        let rows = plan["ok"]["rows"].as_array().unwrap_or_else(|| panic!("{explain}: {plan}"));
        let text = rows.iter().map(|r| r[1].as_str().unwrap_or_default()).collect::<Vec<_>>().join("\n");
        assert!(text.contains("AggregateExec"), "{explain}: {text}");
    }

    // A client that stops reading holds its turn (the only one here) no
    // longer than flight.timeout: a statement after that runs.
    let next = client(&[
        &uri,
        "",
        "--stalled",
        "SELECT value FROM generate_series(1, 5000000)",
        "SELECT count(*) AS n FROM trades",
        "3",
    ]);
    assert_eq!(next["ok"]["rows"][0][0], "60", "{next}");

    // CancelFlightInfo ends a running statement with CANCELLED, not as
    // complete and not at the deadline, and refuses one cancelled before
    // it was fetched; the one turn is free again after.
    let cancelled = client(&[&uri, "", "--cancel", "SELECT count(*) FROM generate_series(1, 1000000000000)"]);
    assert_eq!(cancelled["cancel_status"], "0801", "CANCELLED: {cancelled}");
    let e = cancelled["running"]["error"].as_str().unwrap_or_else(|| panic!("not cancelled: {cancelled}"));
    assert!(e.to_lowercase().contains("cancelled") && !e.contains("flight.timeout"), "{e}");
    assert_eq!(cancelled["early_status"], "0801", "{cancelled}");
    let e = cancelled["early"]["error"].as_str().unwrap_or_else(|| panic!("ran: {cancelled}"));
    assert!(e.to_lowercase().contains("cancelled"), "{e}");
    let after = sql("SELECT count(*) AS n FROM trades");
    assert_eq!(after["ok"]["rows"][0][0], "60", "{after}");

    let metrics = get(&k2.http, "/metrics");
    let refused = |reason: &str| metric_total(&metrics, "k2_flight_refused_total", &format!("reason=\"{reason}\""));
    assert_eq!(refused("memory"), 1.0);
    assert_eq!(refused("timeout"), 2.0, "the slow statement and the stalled one");
    assert_eq!(refused("busy"), 0.0);
    let cancels = metric_total(&metrics, "k2_flight_statements_total", "status=\"cancelled\"");
    assert!(cancels >= 2.0, "cancels counted: {cancels}");
    k2.stop();
}

/// One row of a book table, as both engines give it: (message_id, side,
/// level), then price, quantity and the recording instant, normalised.
type BookRow = ((String, Option<String>, Option<String>), (Option<Decimal>, Option<Decimal>, i64));

fn book_rows(rows: &Value) -> Vec<BookRow> {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    // Python writes a zero of scale 8 as `0E-8`.
    let dec = |v: &Value| v.as_str().map(|s| Decimal::from_str(s).or_else(|_| Decimal::from_scientific(s)).unwrap());
    let mut out: Vec<BookRow> = rows
        .as_array()
        .unwrap_or_else(|| panic!("{rows}"))
        .iter()
        .map(|r| {
            ((text(&r[0]).unwrap(), text(&r[1]), text(&r[2])), (dec(&r[3]), dec(&r[4]), micros(r[5].as_str().unwrap())))
        })
        .collect();
    out.sort();
    out
}

/// The order-book tables over SQL read what the book log holds: the rows
/// committed and those not yet, each once. The judge is pyiceberg, reading
/// the same rows from the tables once a graceful stop has committed all.
#[test]
fn book_tables_answer_with_the_rows_not_yet_committed_each_once() {
    // A market that goes on for the whole test, its book moving.
    let (_sim, addrs) = start_sim_with("300", &["--trades", "30000", "--book-ticker-every", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_sim_config(
        dir.path(),
        &addrs,
        "[book]\nenabled = true\n[flush]\nmax_age = \"2s\"\n[flight]\nenabled = true\nbind = \"127.0.0.1:0\"\n",
    );
    let data = dir.path().join("data");
    let k2 = Run::start(&config, &data, "info", dir.path().join("k2.log"));
    let uri = format!("grpc://{}", flight_port(&k2));
    wait_until("the BTCUSDT book synced", 60, || get_json(&k2.http, "/v1/book/BTCUSDT")["synced"] == true);

    let tables = client(&[&uri, "", "--tables"]);
    let names: Vec<&String> = tables.as_object().unwrap().keys().collect();
    assert_eq!(names, ["book_snapshots", "book_updates", "quotes", "trades"], "{tables}");
    let columns = tables["book_updates"].as_array().unwrap();
    assert!(columns.iter().any(|c| c.as_str().unwrap().starts_with("price:decimal128(18, 8)")), "{columns:?}");

    // BTCUSDT's rows, asked as the tables alone, as the rows not committed
    // alone, and as a whole, within milliseconds; tried until the whole
    // holds rows of both. K2 stamps book records in the order it takes
    // them, so the whole (taken at one instant) holds every row stamped up
    // to its latest: that is what the tables must hold once all is
    // committed.
    let sql = |table: &str| {
        format!(
            "SELECT message_id, side, CAST(level AS VARCHAR), price, quantity, ingestion_timestamp FROM {table} \
             WHERE symbol = 'BTCUSDT'"
        )
    };
    let (mut sample, mut tries) = (None, Vec::new());
    for _ in 0..30 {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let got = client(&[&uri, "", "--sources", &sql("book_updates")]);
        let [pending, hybrid, historical] =
            ["realtime", "hybrid", "historical"].map(|s| book_rows(&got[s]["ok"]["rows"]));
        let latest = hybrid.iter().map(|r| r.1.2).max().unwrap_or(i64::MIN);
        // A commit between the calls moves rows from one part to the
        // other, never out of the whole.
        for (part, rows) in [("committed", &historical), ("pending", &pending)] {
            let missing = rows.iter().filter(|r| r.1.2 <= latest && hybrid.binary_search(r).is_err()).count();
            assert_eq!(missing, 0, "{part} rows the whole lacks");
        }
        tries.push((hybrid.len(), historical.len(), pending.len()));
        let committed = hybrid.iter().filter(|r| historical.binary_search(r).is_ok()).count();
        if committed > 0 && committed < hybrid.len() && !pending.is_empty() {
            sample = Some((latest, hybrid));
            break;
        }
    }
    let (until, updates) = sample.unwrap_or_else(|| panic!("no moment with rows both committed and not: {tries:?}"));
    let got = client(&[&uri, "", "--sql", &sql("book_snapshots")]);
    let snapshots: Vec<BookRow> = book_rows(&got["ok"]["rows"]).into_iter().filter(|r| r.1.2 <= until).collect();
    let once: std::collections::BTreeSet<_> = updates.iter().map(|r| &r.0).collect();
    assert_eq!(once.len(), updates.len(), "a row read twice");
    k2.stop();

    let judge = |table: &str| {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/book_rows.py");
        let out = std::process::Command::new("python3")
            .arg(script)
            .args([data.to_str().unwrap(), table, "BTCUSDT", &until.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "book_rows.py: {}", String::from_utf8_lossy(&out.stderr));
        let got: Value = serde_json::from_slice(&out.stdout).unwrap();
        book_rows(&got["rows"])
    };
    let stored = judge("book_updates");
    assert!(stored.len() > 100, "a market's updates: {}", stored.len());
    assert_eq!(updates.len(), stored.len());
    assert!(updates == stored, "the updates SQL answered are not those pyiceberg reads");
    let stored = judge("book_snapshots");
    assert!(!stored.is_empty(), "the sync's snapshot");
    assert!(snapshots == stored, "the snapshots SQL answered are not those pyiceberg reads");
}
