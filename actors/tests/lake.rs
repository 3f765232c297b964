//! The embedded product in process: events through the pipeline into Iceberg
//! tables and back out through the `/v1` API, exactly; hybrid reads while
//! commits happen; every HTTP error case; and another engine (pyiceberg)
//! reading the same tables.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use compact_str::CompactString;
use figment::providers::Env;
use k2::runtime::config::Config;
use k2::service::Service;
use k2::transforms::dedup::MemoryStore;
use k2_core::{AssetClass, MarketEvent, QuoteV2, Timestamp, TradeSide, TradeV2, VendorData};
use rust_decimal::Decimal;
use serde_json::Value;

fn config(data: &Path, edit: &str) -> Config {
    let file = data.join("k2.toml");
    // `edit` may add keys to [http]; its other sections follow.
    let (http, rest) = match edit.strip_prefix("[http]\n") {
        Some(rest) => rest.split_once("\n[").map_or((rest, String::new()), |(h, r)| (h, format!("[{r}"))),
        None => ("", edit.to_owned()),
    };
    let text = format!(
        "[http]\nbind = \"127.0.0.1:0\"\n{http}\n[storage]\ndata_dir = \"{}\"\n{rest}",
        data.join("lake").display()
    );
    std::fs::write(&file, text).unwrap();
    Config::load_from(Some(&file), Env::prefixed("K2_TEST_UNSET__")).unwrap()
}

/// 2024-01-02T00:00:00Z
const DAY: i64 = 1_704_153_600_000_000;

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// Trades of one symbol with varied content: extreme decimals, maps with
/// non-ASCII text, empty and full condition lists.
fn trades(symbol: &str, from: i64, n: i64) -> Vec<MarketEvent> {
    (from..from + n)
        .map(|i| {
            let mut vendor = VendorData::new();
            if i % 3 != 0 {
                vendor.insert("venue", format!("V{i}"));
                vendor.insert("note", "Zürich ✓");
            }
            let price = match i % 4 {
                0 => dec("9999999999.99999999"),
                1 => dec("0.00000001"),
                _ => Decimal::new(6_061_000_000_000 + i, 8),
            };
            MarketEvent::Trade(TradeV2 {
                message_id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("{symbol}-{i}").as_bytes()),
                trade_id: CompactString::from(format!("T-{symbol}-{i}")),
                symbol: symbol.into(),
                exchange: "BINANCE".into(),
                asset_class: AssetClass::Crypto,
                timestamp: Timestamp::from_micros(DAY + i * 1_000_000),
                price,
                quantity: Decimal::new(100_000 + i, 8),
                currency: "USDT".into(),
                side: if i % 2 == 0 { TradeSide::Buy } else { TradeSide::Sell },
                trade_conditions: if i % 5 == 0 { vec![] } else { vec!["A".into(), "ß".into()] },
                source_sequence: Some(i),
                ingestion_timestamp: Timestamp::from_micros(DAY + i * 1_000_000 + 7),
                platform_sequence: None,
                vendor_data: if i % 7 == 0 { None } else { Some(vendor) },
                is_sample_data: i % 2 == 1,
            })
        })
        .collect()
}

fn quotes(symbol: &str, n: i64) -> Vec<MarketEvent> {
    (0..n)
        .map(|i| {
            MarketEvent::Quote(QuoteV2 {
                message_id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("q-{symbol}-{i}").as_bytes()),
                quote_id: CompactString::from(format!("Q-{i}")),
                symbol: symbol.into(),
                exchange: "BINANCE".into(),
                asset_class: AssetClass::Crypto,
                timestamp: Timestamp::from_micros(DAY + i * 500_000),
                bid_price: (i % 2 == 0).then(|| Decimal::new(100 + i, 2)),
                bid_quantity: (i % 2 == 0).then(|| Decimal::new(5, 0)),
                ask_price: Some(Decimal::new(200 + i, 2)),
                ask_quantity: Some(Decimal::new(7, 1)),
                currency: "USDT".into(),
                source_sequence: Some(i),
                ingestion_timestamp: Timestamp::from_micros(DAY),
                platform_sequence: None,
                vendor_data: None,
                is_sample_data: false,
            })
        })
        .collect()
}

fn ts(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros).unwrap().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn d8(d: Decimal) -> String {
    format!("{d:.8}")
}

/// What `/v1/trades` must return for a trade, field by field.
fn expected_trade(t: &TradeV2) -> Value {
    serde_json::json!({
        "message_id": t.message_id.to_string(),
        "trade_id": t.trade_id.as_str(),
        "symbol": t.symbol.as_str(),
        "exchange": t.exchange.as_str(),
        "asset_class": t.asset_class.as_str(),
        "timestamp": ts(t.timestamp.as_micros()),
        "price": d8(t.price),
        "quantity": d8(t.quantity),
        "currency": t.currency.as_str(),
        "side": t.side.as_str(),
        "trade_conditions": t.trade_conditions.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        "source_sequence": t.source_sequence,
        "ingestion_timestamp": ts(t.ingestion_timestamp.as_micros()),
        "vendor_data": t.vendor_data.as_ref().map(|v| v.iter().map(|(k, v)| (k.to_owned(), Value::from(v))).collect::<serde_json::Map<_, _>>()),
        "is_sample_data": t.is_sample_data,
    })
}

struct Client {
    base: String,
    http: reqwest::Client,
    key: Option<&'static str>,
}

impl Client {
    async fn get(&self, path: &str) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(k) = self.key {
            req = req.header("X-API-Key", k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// Every row of a read endpoint, page by page.
    async fn all(&self, path: &str, limit: usize) -> Vec<Value> {
        let mut rows = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let page = match &cursor {
                Some(c) => self.ok(&format!("{path}{sep}limit={limit}&cursor={c}")).await,
                None => self.ok(&format!("{path}{sep}limit={limit}")).await,
            };
            rows.extend(page["data"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return rows,
            }
        }
    }
}

/// The embedded product on `config`, with an in-memory dedup window.
async fn start(config: &Config) -> Service {
    let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
    Service::builder(config).dedup(Box::new(store)).start().await.unwrap()
}

fn client(k2: &Service, _config: &Config) -> (Client, k2::service::http::HttpHandle) {
    let http = k2.serve().unwrap();
    (Client { base: format!("http://{}", http.addr), http: reqwest::Client::new(), key: None }, http)
}

fn without_platform_sequence(mut row: Value) -> Value {
    row.as_object_mut().unwrap().remove("platform_sequence");
    row
}

#[test]
fn events_round_trip_through_iceberg_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "[flush]\nmax_age = \"1h\"\n");
    k2::runtime::run(|| async move {
        let k2 = start(&config).await;
        let (api, http) = client(&k2, &config);
        let sent = trades("BTCUSDT", 1, 300);
        k2.pipeline.send(sent.clone()).await.unwrap();
        k2.pipeline.send(quotes("BTCUSDT", 40)).await.unwrap();
        k2.pipeline.drain().await.unwrap();

        // Before the commit: all in the tail, nothing historical.
        let tail_rows = api.all("/v1/trades?symbol=BTCUSDT&source=realtime", 1000).await;
        assert_eq!(tail_rows.len(), 300);
        assert_eq!(api.ok("/v1/trades?source=historical").await["count"], 0);

        k2.flush().await.unwrap();
        let lake_rows = api.all("/v1/trades?symbol=BTCUSDT&source=historical", 1000).await;
        assert_eq!(api.ok("/v1/trades?source=realtime").await["count"], 0);
        assert_eq!(lake_rows, tail_rows, "the tail and the table answer identically");

        let want: Vec<Value> = sent
            .iter()
            .map(|e| match e {
                MarketEvent::Trade(t) => expected_trade(t),
                _ => unreachable!(),
            })
            .collect();
        let got: Vec<Value> = lake_rows.iter().cloned().map(without_platform_sequence).collect();
        assert_eq!(got, want);
        let platform: BTreeSet<i64> = lake_rows.iter().map(|r| r["platform_sequence"].as_i64().unwrap()).collect();
        assert_eq!(platform, (1..=300).collect(), "one platform sequence per trade, in arrival order");

        let q = api.all("/v1/quotes?symbol=BTCUSDT", 1000).await;
        assert_eq!(q.len(), 40);
        assert_eq!(q[1]["bid_price"], Value::Null, "an empty side stays null");
        assert_eq!(q[0]["bid_price"], "1.00000000");
        assert_eq!(q[0]["ask_quantity"], "0.70000000");

        // One snapshot per table, saying what it covers.
        let snaps = api.ok("/v1/snapshots?table=trades").await;
        let s = &snaps["data"][0];
        assert_eq!(snaps["data"].as_array().unwrap().len(), 1);
        assert_eq!(s["rows_added"], 300);
        assert_eq!(s["summary"]["k2.flush-generation"], "1");
        let sources: Value = serde_json::from_str(s["summary"]["k2.sources"].as_str().unwrap()).unwrap();
        assert_eq!(sources["BINANCE/BTCUSDT"]["source_sequence"], 300);
        http.handle.stop(true).await;
    })
    .unwrap();
}

#[test]
fn hybrid_counts_never_decrease_and_end_exact_while_commits_happen() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "[flush]\nmax_rows = 2500\nmax_age = \"40ms\"\n");
    k2::runtime::run(|| async move {
        let k2 = start(&config).await;
        let (api, http) = client(&k2, &config);
        let batches = 40;
        let per = 500;
        let pipeline = k2.pipeline.clone();
        // The writer waits for a read after each batch, so reads interleave
        // with writes and commits however loaded the machine is.
        let reads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = reads.clone();
        let writer = tokio::spawn(async move {
            for b in 0..batches {
                let before = r.load(std::sync::atomic::Ordering::SeqCst);
                pipeline.send(trades("ETHUSDT", 1 + b * per, per)).await.unwrap();
                while r.load(std::sync::atomic::Ordering::SeqCst) == before {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            pipeline.drain().await.unwrap();
        });
        let count =
            |v: &Value| v["data"].as_array().unwrap().iter().map(|r| r["trades"].as_i64().unwrap()).sum::<i64>();
        let mut seen = Vec::new();
        while !writer.is_finished() {
            seen.push(count(&api.ok("/v1/symbols").await));
            reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        writer.await.unwrap();
        seen.push(count(&api.ok("/v1/symbols").await));
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "a hybrid count went down: {seen:?}");
        assert_eq!(*seen.last().unwrap(), batches * per);
        assert!(seen.len() > batches as usize, "the reader ran alongside the writer ({} reads)", seen.len());

        k2.flush().await.unwrap();
        let snaps = api.ok("/v1/snapshots").await["data"].as_array().unwrap().len();
        assert!(snaps >= 3, "commits happened during the run ({snaps} snapshots)");
        assert_eq!(count(&api.ok("/v1/symbols?source=historical").await), batches * per);
        assert_eq!(count(&api.ok("/v1/symbols").await), batches * per);
        // Pages read across many snapshots' files (the reader narrows each
        // page to the files that can hold it): every row once, in order.
        let all = api.all("/v1/trades?symbol=ETHUSDT", 777).await;
        let ids: BTreeSet<&str> = all.iter().map(|r| r["message_id"].as_str().unwrap()).collect();
        assert_eq!((all.len(), ids.len()), ((batches * per) as usize, (batches * per) as usize));
        let keys: Vec<(String, String)> = all
            .iter()
            .map(|r| (r["timestamp"].as_str().unwrap().to_owned(), r["message_id"].as_str().unwrap().to_owned()))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "pages are in (timestamp, message_id) order");
        let from_middle = api.all(&format!("/v1/trades?start={}", DAY + 7_000 * 1_000_000), 1000).await;
        assert_eq!(from_middle.len(), (batches * per - 6_999) as usize);
        http.handle.stop(true).await;
    })
    .unwrap();
}

#[test]
fn every_endpoint_answers_and_every_bad_parameter_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "[http]\napi_keys = [\"s3cret\"]\n[flush]\nmax_age = \"1h\"\n");
    k2::runtime::run(|| async move {
        let k2 = start(&config).await;
        let (mut api, http) = client(&k2, &config);
        k2.pipeline.send(trades("BTCUSDT", 1, 60)).await.unwrap();
        k2.flush().await.unwrap();
        // Half committed, half in the tail: pagination must cross the seam.
        k2.pipeline.send(trades("BTCUSDT", 61, 43)).await.unwrap();
        k2.pipeline.send(quotes("BTCUSDT", 10)).await.unwrap();
        k2.pipeline.drain().await.unwrap();

        // Keys: /v1 needs one; /health, /metrics and /openapi.json do not.
        let (status, body) = api.get("/v1/trades").await;
        assert_eq!(status, 401, "{body}");
        api.key = Some("wrong");
        assert_eq!(api.get("/v1/trades").await.0, 401);
        assert_eq!(api.get("/health").await.0, 200);
        assert_eq!(api.get("/metrics").await.0, 200);
        let doc = api.ok("/openapi.json").await;
        for path in [
            "/v1/trades",
            "/v1/quotes",
            "/v1/summary/{symbol}/{date}",
            "/v1/bars",
            "/v1/symbols",
            "/v1/snapshots",
            "/v1/dead-letters",
            "/subjects/{subject}/versions",
            "/config/{subject}",
            "/admin/faults",
            "/health",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing from the OpenAPI description");
        }
        let bars = doc["paths"]["/v1/bars"]["get"]["parameters"].as_array().unwrap();
        let symbol = bars.iter().find(|p| p["name"] == "symbol").unwrap();
        assert_eq!(symbol["required"], true, "required parameters are declared so");
        // The schema registry: reads open, writes need a key like /v1.
        let schema = serde_json::json!({"schema": "{\"type\":\"string\"}"}).to_string();
        let write = |method: reqwest::Method, path: &str, body: String, key: Option<&str>| {
            let mut req = api.http.request(method, format!("{}{path}", api.base)).body(body);
            if let Some(k) = key {
                req = req.header("X-API-Key", k);
            }
            req.header("Content-Type", "application/vnd.schemaregistry.v1+json").send()
        };
        for (method, path, body) in [
            (reqwest::Method::POST, "/subjects/squat-value/versions", schema.clone()),
            (reqwest::Method::PUT, "/config/squat-value", r#"{"compatibility":"FULL"}"#.to_owned()),
            (reqwest::Method::PUT, "/config", r#"{"compatibility":"FULL"}"#.to_owned()),
        ] {
            for key in [None, Some("wrong")] {
                let resp = write(method.clone(), path, body.clone(), key).await.unwrap();
                assert_eq!(resp.status().as_u16(), 401, "{method} {path} with {key:?}");
            }
        }
        assert_eq!(api.get("/subjects").await, (200, serde_json::json!([])), "nothing was registered without a key");
        assert_eq!(api.get("/config").await.1["compatibilityLevel"], "BACKWARD");
        let resp = write(reqwest::Method::POST, "/subjects/ok-value/versions", schema, Some("s3cret")).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
        api.key = Some("s3cret");

        // Methods: another one is 405 with Allow, HEAD is GET without a body,
        // an unknown path is 404.
        let with_key = |method: reqwest::Method, path: &str| {
            api.http.request(method, format!("{}{path}", api.base)).header("X-API-Key", "s3cret").send()
        };
        for (method, path, allow) in [
            (reqwest::Method::POST, "/v1/trades", "GET, HEAD"),
            (reqwest::Method::DELETE, "/health", "GET, HEAD"),
            (reqwest::Method::DELETE, "/config", "GET, HEAD, PUT"),
            (reqwest::Method::GET, "/subjects/x-value", "POST"),
        ] {
            let resp = with_key(method.clone(), path).await.unwrap();
            assert_eq!(resp.status().as_u16(), 405, "{method} {path}");
            assert_eq!(resp.headers()["allow"], allow, "{method} {path}");
        }
        let head = with_key(reqwest::Method::HEAD, "/v1/symbols").await.unwrap();
        assert_eq!(head.status().as_u16(), 200);
        assert!(head.bytes().await.unwrap().is_empty(), "HEAD answers without a body");
        assert_eq!(with_key(reqwest::Method::GET, "/v1/nothing-here").await.unwrap().status().as_u16(), 404);

        // A request target over http.max_uri_length (8 KiB) is 414, with a
        // JSON body like every refusal.
        let long = with_key(reqwest::Method::GET, &format!("/v1/trades?symbol={}", "A".repeat(9000))).await.unwrap();
        assert_eq!(long.status().as_u16(), 414);
        assert!(long.json::<serde_json::Value>().await.unwrap()["error"].as_str().unwrap().contains("max_uri_length"));
        // Accept is read with its q-values; one accepting nothing served is 406.
        let accept = |value: &'static str| {
            api.http
                .get(format!("{}/v1/trades?limit=1", api.base))
                .header("X-API-Key", "s3cret")
                .header("Accept", value)
                .send()
        };
        for (value, served) in [
            ("text/csv;q=0.5, application/json", "application/json"),
            ("application/json;q=0, */*", "text/csv"),
            ("text/csv;q=0.8, application/vnd.apache.arrow.stream;q=0.9", "application/vnd.apache.arrow.stream"),
        ] {
            let resp = accept(value).await.unwrap();
            assert_eq!(resp.status().as_u16(), 200, "{value}");
            assert!(resp.headers()["content-type"].to_str().unwrap().starts_with(served), "{value}");
        }
        assert_eq!(accept("text/html").await.unwrap().status().as_u16(), 406);

        // Pagination covers every row once, in order.
        let rows = api.all("/v1/trades?symbol=BTCUSDT", 7).await;
        let seqs: Vec<i64> = rows.iter().map(|r| r["source_sequence"].as_i64().unwrap()).collect();
        assert_eq!(seqs, (1..=103).collect::<Vec<_>>());

        // Filters: time range (both notations), exchange, symbol.
        let start = DAY + 10 * 1_000_000;
        let page = api.ok(&format!("/v1/trades?start={}&end={}", ts(start), start + 5_000_000)).await;
        assert_eq!(page["count"], 5);
        assert_eq!(page["data"][0]["source_sequence"], 10);
        assert_eq!(api.ok("/v1/trades?exchange=ASX").await["count"], 0);
        assert_eq!(api.ok("/v1/trades?symbol=ETHUSDT").await["count"], 0);

        // Summary and bars over the seam, exact.
        let all_trades = trades("BTCUSDT", 1, 103);
        let mut volume = Decimal::ZERO;
        let mut notional = Decimal::ZERO;
        for e in &all_trades {
            if let MarketEvent::Trade(t) = e {
                volume += t.quantity;
                notional += t.price * t.quantity;
            }
        }
        let s = api.ok("/v1/summary/BTCUSDT/2024-01-02").await;
        assert_eq!(s["data"]["trade_count"], 103);
        assert_eq!(dec(s["data"]["volume"].as_str().unwrap()), volume);
        assert_eq!(dec(s["data"]["notional"].as_str().unwrap()), notional);
        assert_eq!(s["data"]["open"], "0.00000001", "trade 1 opens");
        assert_eq!(s["data"]["high"], "9999999999.99999999");
        assert_eq!(s["data"]["tz"], "UTC");
        assert_eq!(api.ok("/v1/summary/BTCUSDT/2024-01-03").await["data"], Value::Null);
        let bars =
            api.ok("/v1/bars?symbol=BTCUSDT&interval=1m&start=2024-01-02T00:00:00Z&end=2024-01-02T01:00:00Z").await;
        let counts: Vec<i64> =
            bars["data"].as_array().unwrap().iter().map(|b| b["trade_count"].as_i64().unwrap()).collect();
        assert_eq!(counts, vec![59, 44], "trades 1-59 in minute 0, 60-103 in minute 1");
        assert_eq!(bars["data"][1]["open"], "9999999999.99999999", "trade 60 opens minute 1");

        let syms = api.ok("/v1/symbols").await;
        assert_eq!(syms["data"][0]["trades"], 103);
        assert_eq!(syms["data"][0]["quotes"], 10);

        // Time travel: the first snapshot had 60 trades.
        let snaps = api.ok("/v1/snapshots").await;
        let first = snaps["data"][0]["snapshot_id"].as_i64().unwrap();
        assert_eq!(api.ok(&format!("/v1/trades?as_of_snapshot={first}&limit=1000")).await["count"], 60);
        assert_eq!(api.ok("/v1/trades?as_of=2999-01-01T00:00:00Z&limit=1000").await["count"], 60);

        // Every bad parameter: 400 naming it.
        for (path, parameter) in [
            ("/v1/trades?limit=0", "limit"),
            ("/v1/trades?limit=10001", "limit"),
            ("/v1/trades?start=yesterday", "start"),
            ("/v1/trades?end=2024-13-01", "end"),
            ("/v1/trades?start=10&end=5", "end"),
            ("/v1/trades?cursor=nope", "cursor"),
            ("/v1/trades?source=lake", "source"),
            ("/v1/trades?as_of=1&source=hybrid", "source"),
            ("/v1/trades?symbl=BTCUSDT", "symbl"),
            ("/v1/quotes?limit=-1", "limit"),
            ("/v1/summary/BTCUSDT/2024-02-30", "date"),
            ("/v1/summary/BTCUSDT/+2024-01-02", "date"),
            ("/v1/summary/BTCUSDT/-2024-01-02", "date"),
            ("/v1/summary/BTCUSDT/12024-01-02", "date"),
            ("/v1/summary/BTCUSDT/2024-01-02?tz=Mars/Olympus", "tz"),
            ("/v1/bars?interval=1m&start=1&end=2", "symbol"),
            ("/v1/bars?symbol=BTCUSDT&interval=2m&start=1&end=2", "interval"),
            ("/v1/bars?symbol=BTCUSDT&interval=1m&end=2", "start"),
            ("/v1/symbols?source=nowhere", "source"),
            ("/v1/snapshots?table=orders", "table"),
        ] {
            let (status, body) = api.get(path).await;
            assert_eq!(status, 400, "{path}: {body}");
            assert_eq!(body["parameter"], parameter, "{path}: {body}");
            assert!(body["error"].as_str().unwrap().len() > 10, "{path}: {body}");
        }
        // Time travel to a snapshot the table does not have: 404, named.
        for (path, parameter) in
            [("/v1/trades?as_of_snapshot=12345", "as_of_snapshot"), ("/v1/trades?as_of=2000-01-01T00:00:00Z", "as_of")]
        {
            let (status, body) = api.get(path).await;
            assert_eq!((status, body["parameter"].as_str()), (404, Some(parameter)), "{path}: {body}");
        }

        // CSV and Arrow.
        let csv = api
            .http
            .get(format!("{}/v1/trades?limit=50", api.base))
            .header("X-API-Key", "s3cret")
            .header("Accept", "text/csv")
            .send()
            .await
            .unwrap();
        assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
        let text = csv.text().await.unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let records: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
        assert_eq!(records.len(), 50);
        assert_eq!(&records[0][6], "0.00000001", "price column, exact");
        let arrow = api
            .http
            .get(format!("{}/v1/trades?limit=30", api.base))
            .header("X-API-Key", "s3cret")
            .header("Accept", "application/vnd.apache.arrow.stream")
            .send()
            .await
            .unwrap();
        let bytes = arrow.bytes().await.unwrap();
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None).unwrap();
        let n: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(n, 30);

        // After all those queries and a flush, answered, nothing waits in a
        // mailbox: no depth below 0 (a message counted out but never in).
        let health = api.ok("/health").await;
        for (actor, report) in health["actors"].as_object().unwrap() {
            assert!(report["mailbox_depth"].as_i64().unwrap() >= 0, "{actor}: {report}");
        }
        let handler = &health["actors"]["query-handler"];
        assert_eq!(handler["mailbox_depth"], 0, "{handler}");
        assert!(handler["batches"].as_u64().unwrap() >= 10, "every query is counted as handled: {handler}");
        assert_eq!(health["actors"]["iceberg-flusher"]["mailbox_depth"], 0, "{health}");
        http.handle.stop(true).await;
    })
    .unwrap();
}

#[test]
fn a_query_over_its_time_budget_is_cancelled_with_503() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "[query]\ntimeout = \"1us\"\n");
    k2::runtime::run(|| async move {
        let k2 = start(&config).await;
        let (api, http) = client(&k2, &config);
        k2.pipeline.send(trades("BTCUSDT", 1, 5000)).await.unwrap();
        k2.flush().await.unwrap();
        let (status, body) = api.get("/v1/trades?limit=10000").await;
        assert_eq!(status, 503, "{body}");
        assert!(body["error"].as_str().unwrap().contains("time budget"), "{body}");
        http.handle.stop(true).await;
    })
    .unwrap();
}

#[test]
fn pyiceberg_reads_the_same_rows_and_the_same_exact_notional() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "[flush]\nmax_rows = 100\nmax_age = \"1h\"\n");
    let lake_dir = dir.path().join("lake");
    let sent = trades("SOLUSDT", 1, 1000);
    let mut notional = Decimal::ZERO;
    for e in &sent {
        if let MarketEvent::Trade(t) = e {
            notional += t.price * t.quantity;
        }
    }
    let api_notional = k2::runtime::run(|| async move {
        let k2 = start(&config).await;
        let (api, http) = client(&k2, &config);
        for chunk in sent.chunks(250) {
            k2.pipeline.send(chunk.to_vec()).await.unwrap();
        }
        k2.flush().await.unwrap();
        let s = api.ok("/v1/summary/SOLUSDT/2024-01-02?source=historical").await;
        http.handle.stop(true).await;
        s["data"]["notional"].as_str().unwrap().to_owned()
    })
    .unwrap();
    assert_eq!(dec(&api_notional), notional);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/read_iceberg.py");
    let out = std::process::Command::new("python3").arg(&script).arg(&lake_dir).output().unwrap();
    assert!(
        out.status.success(),
        "pyiceberg failed (pip install -r tests/python/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["trades"]["rows"], 1000);
    let generation = |v: &Value| v["trades"]["k2_generation"].as_str().map(str::to_owned);
    let before = generation(&v);
    assert!(before.is_some(), "{v}");
    assert_eq!(v["trades"]["distinct_message_ids"], 1000);
    assert_eq!(dec(v["trades"]["notional"].as_str().unwrap()), notional);
    assert!(v["trades"]["snapshots"].as_u64().unwrap() >= 1);
    assert!(v["trades"]["partition_spec"].as_str().unwrap().contains("day"), "{v}");

    // Another engine appends a snapshot of its own (no K2 keys) on top; K2
    // starts again and continues after its own latest generation.
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&lake_dir)
        .arg("k2")
        .arg("--append-one")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = crate::config(dir.path(), "[flush]\nmax_age = \"1h\"\n");
    let (covered, rows) = k2::runtime::run(|| async move {
        let k2 = start(&config).await;
        let covered = k2.tails.trades.committed_covered();
        k2.pipeline.send(trades("SOLUSDT", 1001, 10)).await.unwrap();
        k2.flush().await.unwrap();
        let (api, http) = client(&k2, &config);
        let rows = api.ok("/v1/symbols").await["data"][0]["trades"].as_i64().unwrap();
        http.handle.stop(true).await;
        (covered, rows)
    })
    .unwrap();
    assert_eq!(Some(covered.generation.to_string()), before, "the foreign snapshot did not reset K2's generation");
    let marks = covered.marks.0.values().next().unwrap();
    assert_eq!(marks.source_sequence, Some(1000), "sequence marks survive the foreign snapshot");
    assert_eq!(rows, 1000 + 1 + 10, "K2's rows, the other engine's row, and the new ones");
}

#[test]
fn one_writer_per_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    k2::runtime::run(|| async move {
        let k2 = start(&config).await;
        let err = k2::lake::Lake::open(&config.storage).await.err().expect("a second writer is refused");
        assert!(err.to_string().contains("in use by another K2 process"), "{err}");
        drop(k2);
    })
    .unwrap();
}

#[test]
fn bars_and_summaries_never_mix_exchanges_and_ties_follow_the_venue_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    k2::runtime::run(|| async move {
        let k2 = start(&config).await;
        let (api, http) = client(&k2, &config);
        // Trades 3, 1, 2 arrive in that order, all at the same microsecond:
        // open is trade 1's price and close trade 3's (the venue's order).
        let mut same_time = trades("ADAUSDT", 1, 3);
        for e in &mut same_time {
            if let MarketEvent::Trade(t) = e {
                t.timestamp = Timestamp::from_micros(DAY);
                t.price = Decimal::new(t.source_sequence.unwrap(), 0);
            }
        }
        same_time.rotate_left(2);
        k2.pipeline.send(same_time).await.unwrap();
        k2.pipeline.drain().await.unwrap();
        let s = api.ok("/v1/summary/ADAUSDT/2024-01-02").await;
        assert_eq!((s["data"]["open"].as_str(), s["data"]["close"].as_str()), (Some("1.00000000"), Some("3.00000000")));

        let mut elsewhere = trades("ADAUSDT", 10, 2);
        for e in &mut elsewhere {
            if let MarketEvent::Trade(t) = e {
                t.exchange = "KRAKEN".into();
                t.message_id = uuid::Uuid::new_v4();
            }
        }
        k2.pipeline.send(elsewhere).await.unwrap();
        k2.pipeline.drain().await.unwrap();
        let range = "start=2024-01-02T00:00:00Z&end=2024-01-03T00:00:00Z";
        let (status, body) = api.get(&format!("/v1/bars?symbol=ADAUSDT&interval=1h&{range}")).await;
        assert_eq!((status, body["parameter"].as_str()), (400, Some("exchange")), "{body}");
        let (status, body) = api.get("/v1/summary/ADAUSDT/2024-01-02").await;
        assert_eq!((status, body["parameter"].as_str()), (400, Some("exchange")), "{body}");
        let bars = api.ok(&format!("/v1/bars?symbol=ADAUSDT&exchange=BINANCE&interval=1h&{range}")).await;
        assert_eq!(bars["data"][0]["trade_count"], 3);
        http.handle.stop(true).await;
    })
    .unwrap();
}

#[test]
fn rows_arriving_late_in_the_tail_sort_into_the_right_page() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "[flush]\nmax_age = \"1h\"\n");
    k2::runtime::run(|| async move {
        let k2 = start(&config).await;
        let (api, http) = client(&k2, &config);
        k2.pipeline.send(trades("XRPUSDT", 100, 100)).await.unwrap();
        k2.flush().await.unwrap();
        // Older than everything committed (late), and newer than it.
        k2.pipeline.send(trades("XRPUSDT", 50, 5)).await.unwrap();
        k2.pipeline.send(trades("XRPUSDT", 300, 5)).await.unwrap();
        k2.pipeline.drain().await.unwrap();
        for _ in 0..2 {
            // The second time the snapshot's page comes from the cache.
            let page = api.ok("/v1/trades?symbol=XRPUSDT&limit=10").await;
            let seqs: Vec<i64> =
                page["data"].as_array().unwrap().iter().map(|r| r["source_sequence"].as_i64().unwrap()).collect();
            assert_eq!(seqs, vec![50, 51, 52, 53, 54, 100, 101, 102, 103, 104]);
        }
        let all = api.all("/v1/trades?symbol=XRPUSDT", 9).await;
        let seqs: Vec<i64> = all.iter().map(|r| r["source_sequence"].as_i64().unwrap()).collect();
        let want: Vec<i64> = (50..55).chain(100..200).chain(300..305).collect();
        assert_eq!(seqs, want);
        http.handle.stop(true).await;
    })
    .unwrap();
}

/// A snapshot holding one large file is read on two cores, the file cut
/// into byte ranges, and with the page index: every row comes back once, the
/// day's sums are exact (pyiceberg agrees), and a one-hour page is the
/// hour's first rows.
#[test]
fn one_large_file_read_in_byte_ranges_gives_every_row_once() {
    const ROWS: i64 = 400_000;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "[flush]\nmax_age = \"1h\"\n");
    let lake_dir = dir.path().join("lake");
    // Ten trades a second, so that the rows stay in one day partition.
    let sent: Vec<MarketEvent> = trades("BTCUSDT", 0, ROWS)
        .into_iter()
        .map(|mut e| {
            if let MarketEvent::Trade(t) = &mut e {
                let i = t.source_sequence.unwrap();
                t.timestamp = Timestamp::from_micros(DAY + i * 100_000);
            }
            e
        })
        .collect();
    let mut notional = Decimal::ZERO;
    let mut hour: Vec<(i64, String)> = Vec::new();
    let (from, to) = (DAY + 3_600_000_000, DAY + 7_200_000_000);
    for e in &sent {
        if let MarketEvent::Trade(t) = e {
            notional += t.price * t.quantity;
            let at = t.timestamp.as_micros();
            if (from..to).contains(&at) {
                hour.push((at, t.message_id.to_string()));
            }
        }
    }
    hour.sort();
    let (count, api_notional, page) = k2::runtime::run(|| async move {
        let k2 = start(&config).await;
        let (api, http) = client(&k2, &config);
        for chunk in sent.chunks(50_000) {
            k2.pipeline.send(chunk.to_vec()).await.unwrap();
        }
        k2.flush().await.unwrap();
        let count = api.ok("/v1/symbols?source=historical").await["data"][0]["trades"].as_i64().unwrap();
        let s = api.ok("/v1/summary/BTCUSDT/2024-01-02?source=historical").await;
        let page = api
            .ok(&format!("/v1/trades?symbol=BTCUSDT&source=historical&start={}&end={}&limit=1000", ts(from), ts(to)))
            .await;
        let ids: Vec<String> =
            page["data"].as_array().unwrap().iter().map(|r| r["message_id"].as_str().unwrap().to_owned()).collect();
        http.handle.stop(true).await;
        (count, s["data"]["notional"].as_str().unwrap().to_owned(), ids)
    })
    .unwrap();
    let parquet: Vec<u64> = walk_files(&lake_dir.join("warehouse"))
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "parquet") && p.to_string_lossy().contains("/trades/"))
        .map(|(_, len)| len)
        .collect();
    assert_eq!(parquet.len(), 1, "one flush, one file: {parquet:?}");
    assert!(parquet[0] > 8 << 20, "the file is large enough to be cut into byte ranges: {} bytes", parquet[0]);
    assert_eq!(count, ROWS, "every row once");
    assert_eq!(dec(&api_notional), notional);
    let expected: Vec<String> = hour.into_iter().take(1000).map(|(_, id)| id).collect();
    assert_eq!(page, expected, "the hour's first 1,000 trades in order");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/read_iceberg.py");
    let out = std::process::Command::new("python3").arg(&script).arg(&lake_dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["trades"]["rows"], ROWS);
    assert_eq!(dec(v["trades"]["notional"].as_str().unwrap()), notional);
}

/// Every regular file under `dir`, with its size.
fn walk_files(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk_files(&path));
        } else if let Ok(meta) = entry.metadata() {
            out.push((path, meta.len()));
        }
    }
    out
}
