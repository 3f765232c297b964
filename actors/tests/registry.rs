//! The built-in schema registry: Confluent's REST API with its error codes,
//! compatibility levels, durability across restarts, and Confluent's own
//! Python client decoding K2's frames through it.

use std::path::Path;

use figment::providers::Env;
use k2::runtime::config::Config;
use k2::service::Service;
use k2::transforms::dedup::MemoryStore;
use k2_core::codec::wire::{SchemaIds, WireCodec};
use k2_core::source::binance::{BinanceParser, Frame};
use k2_core::{MarketEvent, Timestamp};
use serde_json::{Value, json};

fn config(dir: &Path) -> Config {
    let file = dir.join("k2.toml");
    let text = format!("[http]\nbind = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n", dir.join("lake").display());
    std::fs::write(&file, text).unwrap();
    Config::load_from(Some(&file), Env::prefixed("K2_TEST_UNSET__")).unwrap()
}

async fn start(config: &Config) -> Service {
    let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
    Service::builder(config).dedup(Box::new(store)).start().await.unwrap()
}

async fn call(http: &reqwest::Client, method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut req = http.request(method, url).header("Content-Type", "application/vnd.schemaregistry.v1+json");
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

const SUBJECT: &str = "market.crypto.trades.binance-value";

#[test]
fn the_registry_speaks_confluents_api_and_keeps_what_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let trade = k2_core::schema::TRADE_V2_AVSC;
    let quote = k2_core::schema::QUOTE_V2_AVSC;
    let id = {
        let config = config(dir.path());
        k2::runtime::run(|| async move {
            let k2 = start(&config).await;
            let server = k2.serve().unwrap();
            let base = format!("http://{}", server.addr);
            let http = reqwest::Client::new();
            use reqwest::Method as M;

            let (s, body) =
                call(&http, M::POST, format!("{base}/subjects/{SUBJECT}/versions"), Some(json!({"schema": trade})))
                    .await;
            assert_eq!(s, 200, "{body}");
            let id = body["id"].as_i64().unwrap();
            // Same schema again: same id, no new version; under another
            // subject: the same id too (ids are global).
            let (_, again) = call(
                &http,
                M::POST,
                format!("{base}/subjects/{SUBJECT}/versions"),
                Some(json!({"schema": trade, "schemaType": "AVRO"})),
            )
            .await;
            assert_eq!(again["id"].as_i64(), Some(id));
            let (_, other) =
                call(&http, M::POST, format!("{base}/subjects/copy-value/versions"), Some(json!({"schema": trade})))
                    .await;
            assert_eq!(other["id"].as_i64(), Some(id));
            let (_, q) =
                call(&http, M::POST, format!("{base}/subjects/quotes-value/versions"), Some(json!({"schema": quote})))
                    .await;
            assert_ne!(q["id"].as_i64(), Some(id));

            assert_eq!(
                call(&http, M::GET, format!("{base}/subjects"), None).await.1,
                json!(["copy-value", SUBJECT, "quotes-value"])
            );
            assert_eq!(call(&http, M::GET, format!("{base}/subjects/{SUBJECT}/versions"), None).await.1, json!([1]));
            let (_, latest) = call(&http, M::GET, format!("{base}/subjects/{SUBJECT}/versions/latest"), None).await;
            assert_eq!((latest["version"].as_i64(), latest["id"].as_i64()), (Some(1), Some(id)));
            let (_, by_id) = call(&http, M::GET, format!("{base}/schemas/ids/{id}"), None).await;
            assert_eq!(by_id["schema"].as_str(), Some(trade));
            let (_, uses) = call(&http, M::GET, format!("{base}/schemas/ids/{id}/versions"), None).await;
            assert_eq!(uses.as_array().unwrap().len(), 2);
            let (s, found) =
                call(&http, M::POST, format!("{base}/subjects/{SUBJECT}"), Some(json!({"schema": trade}))).await;
            assert_eq!((s, found["version"].as_i64()), (200, Some(1)));

            // BACKWARD (the default): a new required field without a default
            // cannot read old data; an optional one with a default can.
            let mut v: Value = serde_json::from_str(trade).unwrap();
            v["fields"].as_array_mut().unwrap().push(json!({"name": "venue", "type": "string"}));
            let breaking = v.to_string();
            let (s, body) = call(
                &http,
                M::POST,
                format!("{base}/compatibility/subjects/{SUBJECT}/versions/latest"),
                Some(json!({"schema": breaking})),
            )
            .await;
            assert_eq!((s, body["is_compatible"].as_bool()), (200, Some(false)), "{body}");
            let (s, body) =
                call(&http, M::POST, format!("{base}/subjects/{SUBJECT}/versions"), Some(json!({"schema": breaking})))
                    .await;
            assert_eq!((s, body["error_code"].as_i64()), (409, Some(409)), "{body}");
            v["fields"].as_array_mut().unwrap().pop();
            v["fields"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "venue", "type": ["null", "string"], "default": null}));
            let (s, body) = call(
                &http,
                M::POST,
                format!("{base}/subjects/{SUBJECT}/versions"),
                Some(json!({"schema": v.to_string()})),
            )
            .await;
            assert_eq!(s, 200, "{body}");
            assert_eq!(call(&http, M::GET, format!("{base}/subjects/{SUBJECT}/versions"), None).await.1, json!([1, 2]));

            // Levels.
            assert_eq!(
                call(&http, M::GET, format!("{base}/config"), None).await.1,
                json!({"compatibilityLevel": "BACKWARD"})
            );
            let (s, body) =
                call(&http, M::PUT, format!("{base}/config/{SUBJECT}"), Some(json!({"compatibility": "NONE"}))).await;
            assert_eq!((s, body), (200, json!({"compatibility": "NONE"})));
            let (s, body) =
                call(&http, M::POST, format!("{base}/subjects/{SUBJECT}/versions"), Some(json!({"schema": breaking})))
                    .await;
            assert_eq!(s, 200, "NONE accepts anything: {body}");
            assert_eq!(call(&http, M::GET, format!("{base}/config"), None).await.1["compatibilityLevel"], "BACKWARD");

            // Errors, with Confluent's codes.
            for (method, path, body, status, code) in [
                (M::GET, "/subjects/nope/versions".to_owned(), None, 404, 40401),
                (M::GET, format!("/subjects/{SUBJECT}/versions/99"), None, 404, 40402),
                (M::GET, format!("/subjects/{SUBJECT}/versions/zero"), None, 422, 42202),
                (M::GET, "/schemas/ids/999".to_owned(), None, 404, 40403),
                (M::POST, format!("/subjects/{SUBJECT}/versions"), Some(json!({"schema": "{not avro"})), 422, 42201),
                (
                    M::POST,
                    format!("/subjects/{SUBJECT}/versions"),
                    Some(json!({"schema": trade, "schemaType": "PROTOBUF"})),
                    422,
                    42201,
                ),
                (M::PUT, "/config".to_owned(), Some(json!({"compatibility": "SOMETIMES"})), 422, 42203),
            ] {
                let (s, body) = call(&http, method, format!("{base}{path}"), body).await;
                assert_eq!((s, body["error_code"].as_i64()), (status, Some(code)), "{path}: {body}");
                assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{path}: {body}");
            }
            server.handle.stop(true).await;
            id
        })
        .unwrap()
    };

    // Durable: a new process finds the same ids and versions.
    let config = config(dir.path());
    k2::runtime::run(|| async move {
        let k2 = start(&config).await;
        let server = k2.serve().unwrap();
        let base = format!("http://{}", server.addr);
        let http = reqwest::Client::new();
        let (_, again) = call(
            &http,
            reqwest::Method::POST,
            format!("{base}/subjects/{SUBJECT}/versions"),
            Some(json!({"schema": trade})),
        )
        .await;
        assert_eq!(again["id"].as_i64(), Some(id));
        let (_, versions) =
            call(&http, reqwest::Method::GET, format!("{base}/subjects/{SUBJECT}/versions"), None).await;
        assert_eq!(versions, json!([1, 2, 3]));
        server.handle.stop(true).await;
    })
    .unwrap();
}

#[test]
fn confluents_python_client_decodes_k2_frames_through_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let avsc = dir.path().join("trade_v2.avsc");
    std::fs::write(&avsc, k2_core::schema::TRADE_V2_AVSC).unwrap();
    let frames = dir.path().join("frames.hex");
    let (out, sent) = k2::runtime::run(|| async move {
        let k2 = start(&config).await;
        let server = k2.serve().unwrap();
        let base = format!("http://{}", server.addr);
        let http = reqwest::Client::new();
        let (_, body) = call(&http, reqwest::Method::POST, format!("{base}/subjects/{SUBJECT}/versions"), Some(json!({"schema": k2_core::schema::TRADE_V2_AVSC}))).await;
        let id = body["id"].as_u64().unwrap() as u32;

        let mut parser = BinanceParser::default();
        let codec = WireCodec::new(SchemaIds { trade: id, quote: 0 });
        let mut sent = Vec::new();
        let mut hex = String::new();
        for (t, price) in [(1u64, "60610.00000000"), (2, "0.00000001"), (3, "9999999999.99999999")] {
            let f = format!(r#"{{"e":"trade","E":1,"s":"BTCUSDT","t":{t},"p":"{price}","q":"0.00154000","T":1722766102789,"m":true,"M":true}}"#);
            let Frame::Event(event) = parser.parse(f.as_bytes(), Timestamp::now()).unwrap() else { panic!() };
            let bytes = codec.encode(&event).unwrap();
            hex.push_str(&bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
            hex.push('\n');
            sent.push(event);
        }
        std::fs::write(&frames, hex).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/registry_interop.py");
        // The client runs while the server does: on a blocking thread.
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("python3").arg(script).arg(&base).arg(SUBJECT).arg(&avsc).arg(&frames).output().unwrap()
        })
        .await
        .unwrap();
        server.handle.stop(true).await;
        ((out, id), sent)
    })
    .unwrap();
    let (out, id) = out;
    assert!(
        out.status.success(),
        "confluent-kafka failed (pip install -r tests/python/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id"].as_u64(), Some(u64::from(id)), "the client got the id K2 gave: {v}");
    assert_eq!((v["latest_version"].as_i64(), v["compatible"].as_bool()), (Some(1), Some(true)));
    let values = v["values"].as_array().unwrap();
    assert_eq!(values.len(), sent.len());
    for (got, want) in values.iter().zip(&sent) {
        let MarketEvent::Trade(t) = want else { panic!() };
        assert_eq!(got["trade_id"], t.trade_id.as_str());
        assert_eq!(got["price"].as_str().unwrap().parse::<rust_decimal::Decimal>().unwrap(), t.price);
        assert_eq!(got["quantity"].as_str().unwrap().parse::<rust_decimal::Decimal>().unwrap(), t.quantity);
        assert_eq!(got["message_id"], t.message_id.to_string());
        assert_eq!(got["source_sequence"].as_i64(), t.source_sequence);
    }
}
