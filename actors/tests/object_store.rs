//! The tables in an S3-compatible object store: `k2 load` and `k2 run` with
//! `storage.warehouse = "s3://…"` against moto's S3 server on loopback,
//! the SQL catalog staying in the data directory. What K2 committed is read
//! back three ways: K2's own API, the bucket's listing, and pyiceberg.
//!
//! moto runs without checking signatures (it accepts any key pair): its
//! SigV4 check (INITIAL_NO_AUTH_ACTION_COUNT) refuses object keys holding
//! `=`, which every partitioned Iceberg data file has, and refuses them from
//! boto3 too, so it cannot tell a wrong secret from its own limit.
//!
//! The REST catalog has no server here (none installs from the registries
//! this project uses); its test is that a configured one is the catalog K2
//! talks to: an unreachable one stops the start, named.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Run, S3Server, asx_fixture, get_json, read_iceberg_with};
use rust_decimal::Decimal;

const BUCKET: &str = "k2-warehouse";
const KEY_ID: &str = "k2-test";
const SECRET: &str = "k2-test-secret";

/// `[storage]` pointing the warehouse at `s3` (the secret comes from the
/// environment, as a deployment would pass it).
fn s3_config(dir: &Path, s3: &S3Server) -> std::path::PathBuf {
    let path = dir.join("k2.toml");
    let text = format!(
        "[http]\nbind = \"127.0.0.1:0\"\n[binance]\nenabled = false\n[storage]\nwarehouse = \"s3://{BUCKET}/lake/\"\n\
         s3_endpoint = \"{}\"\ns3_region = \"us-east-1\"\ns3_access_key_id = \"{KEY_ID}\"\ns3_path_style = true\n",
        s3.endpoint
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn k2_load(config: &Path, data: &Path, files: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_k2"))
        .args(["load", "--json", "--config", config.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .arg(files)
        .env("K2__STORAGE__S3_SECRET_ACCESS_KEY", SECRET)
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn load_and_run_with_the_warehouse_in_s3() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("asx");
    asx_fixture(&files);
    let data = dir.path().join("data");
    let config = s3_config(dir.path(), &s3);

    let first = json(&k2_load(&config, &data, &files));
    assert_eq!((first["accepted_trades"].as_u64(), first["accepted_quotes"].as_u64()), (Some(500), Some(2)));
    let snapshot = first["trades_snapshot_id"].as_i64().expect("a trades snapshot");

    // Every table file is in the bucket under the warehouse's prefix, and
    // none on local disk: the data directory keeps only the catalog and
    // K2's own files.
    let keys = s3.keys(BUCKET, "lake/");
    for table in ["trades", "quotes"] {
        let has = |part: &str, suffix: &str| {
            keys.iter().any(|k| k.starts_with(&format!("lake/market/{table}/{part}/")) && k.ends_with(suffix))
        };
        assert!(has("data", ".parquet"), "{table}: no data file in {keys:?}");
        assert!(has("metadata", ".metadata.json"), "{table}: no table metadata in {keys:?}");
        assert!(has("metadata", ".avro"), "{table}: no manifest in {keys:?}");
    }
    assert!(keys.iter().all(|k| !k.contains("//")), "a doubled slash in {keys:?}");
    assert!(data.join("catalog.db").is_file());
    assert!(!data.join("warehouse").exists(), "a local warehouse was made");

    // A second load in a new process restores the dedup window by reading
    // the tables back from the bucket: nothing is accepted twice.
    let again = json(&k2_load(&config, &data, &files));
    assert_eq!((again["accepted_trades"].as_u64(), again["accepted_quotes"].as_u64()), (Some(0), Some(0)));
    assert_eq!(again["duplicates_dropped"], 502);
    assert_eq!(again["trades_snapshot_id"].as_i64(), Some(snapshot), "nothing new was committed");

    // `k2 run` serves them: rows, and an aggregate computed from the
    // Parquet files in the bucket.
    let run = Run::start_with_env(
        &config,
        &data,
        "warn",
        dir.path().join("run.log"),
        &[("K2__STORAGE__S3_SECRET_ACCESS_KEY", SECRET)],
    );
    let trades = get_json(&run.http, "/v1/trades?symbol=BHP&exchange=ASX&limit=1000&source=historical");
    let rows = trades["data"].as_array().expect("rows");
    assert_eq!(rows.len(), 500, "{trades}");
    assert_eq!(rows[0]["price"], "36.00000000");
    assert_eq!(rows[499]["quantity"], "599.00000000");
    let summary = get_json(&run.http, "/v1/summary/BHP/2014-03-10?exchange=ASX&source=historical");
    let d = &summary["data"];
    let (mut volume, mut notional) = (Decimal::ZERO, Decimal::ZERO);
    for i in 0..500i64 {
        let (price, qty) = (Decimal::new(36_000 + i, 3), Decimal::from(100 + i));
        volume += qty;
        notional += price * qty;
    }
    assert_eq!(d["trade_count"], 500, "{summary}");
    assert_eq!(d["volume"].as_str().unwrap().parse::<Decimal>().unwrap(), volume);
    assert_eq!(d["notional"].as_str().unwrap().parse::<Decimal>().unwrap(), notional);
    let quotes = get_json(&run.http, "/v1/quotes?symbol=BHP&exchange=ASX&source=historical");
    assert_eq!(quotes["data"].as_array().map(Vec::len), Some(2), "{quotes}");
    let log = run.stop();
    assert!(log.contains(&format!("tables in s3://{BUCKET}/lake (SQL catalog")), "{log}");

    // Another engine reads the same tables from the same bucket.
    let endpoint = format!("--s3-endpoint={}", s3.endpoint);
    let warehouse = format!("--warehouse=s3://{BUCKET}/lake");
    let v = read_iceberg_with(
        &data,
        &[
            &warehouse,
            &endpoint,
            "--s3-region=us-east-1",
            &format!("--s3-key={KEY_ID}"),
            &format!("--s3-secret={SECRET}"),
        ],
    );
    assert_eq!(v["trades"]["rows"], 500, "{v}");
    assert_eq!(v["trades"]["distinct_message_ids"], 500);
    assert_eq!(v["trades"]["notional"].as_str().unwrap().parse::<Decimal>().unwrap(), notional);
    assert_eq!(v["quotes"]["rows"], 2);
}

#[test]
fn an_unreachable_rest_catalog_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("asx");
    asx_fixture(&files);
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let uri = format!("http://127.0.0.1:{port}");
    let out = Command::new(env!("CARGO_BIN_EXE_k2"))
        .args(["load", "--data-dir", dir.path().join("data").to_str().unwrap()])
        .arg(&files)
        .env("K2__STORAGE__CATALOG", "rest")
        .env("K2__STORAGE__CATALOG_URI", &uri)
        .env("K2__STORAGE__WAREHOUSE", "s3://k2-warehouse/")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&format!("REST catalog at {uri}")), "{stderr}");

    // A REST catalog without its URI is a configuration mistake, named.
    let out = Command::new(env!("CARGO_BIN_EXE_k2"))
        .args(["run", "--check-config"])
        .env("K2__STORAGE__CATALOG", "rest")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("storage.catalog_uri"));
}
