//! Kafka → Iceberg, measured: a backlog of K2 trade records (Avro in the
//! Confluent wire format, keyed by symbol, across the topic's partitions) is
//! read by
//! (0) K2's decoder alone on the same frames (no broker);
//! (1) a bare rdkafka consumer (manual assignment, no group, no decoding):
//!     what the broker serves, the reference;
//! (1b) a query-only K2 over the empty table with the whole backlog in Kafka
//!     past its snapshot: `/v1/trades?limit=100` and `/v1/summary`, the
//!     first (decoding the backlog) and p50/p99 of the next ones;
//! (2) a Kafka-mode K2 flusher, from its start (group join included) until
//!     every record is in an Iceberg snapshot; also from its first commit;
//! (3) then, for the same rows, an embedded K2 taking them through its
//!     pipeline into Iceberg (the embedded flusher's rate).
//! Progress prints every 10 s, so a stall shows; each phase gives up after
//! K2_BENCH_CONSUME_SECS (default 900).
//!
//! Broker: K2_TEST_KAFKA (default 127.0.0.1:9092, the Tansu that
//! `tests/services.sh` starts on SQLite). K2_BENCH_EVENTS (default
//! 1,000,000), K2_BENCH_PARTITIONS (default 3); K2_BENCH_KAFKA adds keys
//! to the `[kafka]` section, `;`-separated (`fetch_wait = "500ms";consume_batch = 4096`).
//! K2_BENCH_SKIP leaves phases out, `,`-separated: `decode`, `bare`,
//! `query`, `embedded` (a 5,000,000-record run of the flusher alone).
//!
//! `cargo bench -p k2 --bench kafka_consume`

mod common;

use std::time::{Duration, Instant};

use figment::providers::Env;
use k2::runtime::config::Config;
use k2::service::{Service, Stop};
use k2::transforms::dedup::MemoryStore;
use k2_core::codec::wire::{SchemaIds, WireCodec};
use k2_core::{AssetClass, MarketEvent, Timestamp, TradeSide, TradeV2, VendorData};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use rust_decimal::Decimal;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Trade `k`: the shape the Binance source produces (vendor data, both
/// sequences), three symbols, a fresh message id each.
fn trade(k: u64) -> MarketEvent {
    let mut vendor = VendorData::new();
    vendor.insert("is_buyer_maker", "true");
    vendor.insert("trade_time", "1722766102789");
    let symbol = ["BTCUSDT", "ETHUSDT", "BNBUSDT"][(k % 3) as usize];
    MarketEvent::Trade(TradeV2 {
        message_id: uuid::Uuid::from_u64_pair(0x006b_32c0, k),
        trade_id: format!("BINANCE-{k}").into(),
        symbol: symbol.into(),
        exchange: "BINANCE".into(),
        asset_class: AssetClass::Crypto,
        timestamp: Timestamp::from_micros(1_722_766_102_789_000 + k as i64),
        price: Decimal::new(6_061_000_000_000 + (k % 1000) as i64, 8),
        quantity: Decimal::new(154_000 + (k % 97) as i64, 8),
        currency: "USDT".into(),
        side: TradeSide::Buy,
        trade_conditions: Vec::new(),
        source_sequence: Some((k / 3) as i64 + 1),
        ingestion_timestamp: Timestamp::from_micros(1_722_766_102_790_000 + k as i64),
        platform_sequence: Some(k as i64),
        vendor_data: Some(vendor),
        is_sample_data: true,
    })
}

fn config(dir: &std::path::Path, mode: &str, bootstrap: &str, prefix: &str, partitions: i32) -> Config {
    config_as(dir, mode, "all", bootstrap, prefix, partitions)
}

/// As [`config`], for a `role`.
fn config_as(dir: &std::path::Path, mode: &str, role: &str, bootstrap: &str, prefix: &str, partitions: i32) -> Config {
    let file = dir.join(format!("k2-{role}.toml"));
    std::fs::write(
        &file,
        format!(
            "mode = \"{mode}\"\nrole = \"{role}\"\n[http]\nbind = \"127.0.0.1:0\"\nrequest_timeout = \"960s\"\n[query]\ntimeout = \"900s\"\n[binance]\nenabled = false\n\
             [storage]\ndata_dir = \"{}\"\n[maintenance]\nenabled = false\n\
             [kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic_prefix = \"{prefix}\"\npartitions = {partitions}\n{}\n",
            dir.join("lake").display(),
            std::env::var("K2_BENCH_KAFKA").unwrap_or_default().replace(';', "\n")
        ),
    )
    .expect("config");
    Config::load_from(Some(&file), Env::prefixed("K2_BENCH_UNSET__")).expect("config")
}

/// Puts `n` pre-encoded trades into `topic`, keyed by symbol; records/s.
async fn fill(bootstrap: &str, config: &Config, topic: &str, codec: &WireCodec, n: u64) -> f64 {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", &config.kafka.compression)
        .set("linger.ms", config.kafka.linger.as_millis().to_string())
        .set("batch.size", config.kafka.batch_bytes.to_string())
        .create()
        .expect("producer");
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(n as usize);
    for k in 0..n {
        let event = trade(k);
        let payload = codec.encode(&event).expect("encode");
        let record = FutureRecord::to(topic).key(event.symbol()).payload(&payload);
        deliveries.push(common::send_when_room(&producer, record).await);
        if deliveries.len() >= 100_000 {
            for d in deliveries.drain(..) {
                assert!(matches!(d.await, Ok(Ok(_))), "a record was not delivered");
            }
        }
    }
    for d in deliveries {
        assert!(matches!(d.await, Ok(Ok(_))), "a record was not delivered");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// What K2 adds per record, without the broker: the consumer's decoding of
/// the same frames.
fn decode_alone(codec: &WireCodec, n: u64) {
    let frames: Vec<Vec<u8>> = (0..n.min(1_000_000)).map(|k| codec.encode(&trade(k)).expect("encode")).collect();
    let t = Instant::now();
    let decoded = codec.decode_batch(frames.iter().map(Vec::as_slice));
    let decode_rate = frames.len() as f64 / t.elapsed().as_secs_f64();
    assert!(decoded.iter().all(Result::is_ok), "every frame decodes");
    println!("(0) decoding the wire format alone: {decode_rate:.0} records/s on one core");
}

/// Reads every record of `topic` from the start (manual assignment): the
/// broker's own fetch rate, records/s, or None when it gave up.
/// Fetches are sized as K2's consumer sizes them (`[kafka]`).
async fn bare_consume(config: &Config, topic: &str, n: u64, limit: Duration) -> Option<f64> {
    let k = &config.kafka;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &k.bootstrap_servers)
        .set("group.id", format!("bare-{}", uuid::Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .set("receive.message.max.bytes", (256 << 20).to_string())
        .set("max.partition.fetch.bytes", k.fetch_partition_bytes.to_string())
        .set("fetch.max.bytes", k.fetch_max_bytes.to_string())
        .set("fetch.wait.max.ms", k.fetch_wait.as_millis().to_string())
        .set("queued.max.messages.kbytes", k.fetch_ahead_kb.to_string())
        .create()
        .expect("bare consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..k.partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning).expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    let started = Instant::now();
    let mut report = Instant::now();
    let mut read = 0u64;
    while read < n {
        if started.elapsed() > limit {
            println!("  bare consumer: gave up after {limit:?} with {read} of {n} records");
            return None;
        }
        if report.elapsed() >= Duration::from_secs(10) {
            report = Instant::now();
            println!("  bare consumer: {read} records at {:.0} s", started.elapsed().as_secs_f64());
        }
        match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            Ok(Ok(_)) => read += 1,
            Ok(Err(e)) => println!("  bare consumer: {e}"),
            Err(_) => {}
        }
    }
    Some(n as f64 / started.elapsed().as_secs_f64())
}

/// (1b): a query-only K2 whose table is empty while `n` records wait in
/// Kafka: each answer is decoded from the log (then from its cache).
async fn query_node(config: &Config, n: u64) {
    let k2 = Service::builder(config).start().await.expect("query node");
    let server = k2.serve().expect("http");
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.addr);
    for (what, path) in
        [("trades?limit=100", "/v1/trades?symbol=BTCUSDT&limit=100"), ("summary", "/v1/summary/BTCUSDT/2024-08-04")]
    {
        let ask = || async {
            let t = Instant::now();
            let response = http.get(format!("{base}{path}")).send().await.expect("query");
            let status = response.status();
            let body = response.text().await.expect("body");
            assert!(status.is_success(), "{path}: {status} {body}");
            (t.elapsed().as_secs_f64() * 1000.0, body)
        };
        let (first, body) = ask().await;
        if what == "summary" {
            let count: serde_json::Value = serde_json::from_str(&body).expect("json");
            let expected = n.div_ceil(3);
            assert_eq!(count["data"]["trade_count"], expected, "every BTCUSDT trade in the log, once: {count}");
        }
        let (p50, p99) = common::latency(&http, 30, |_| format!("{base}{path}")).await;
        println!(
            "(1b) query node, {n} records past the snapshot: /v1/{what} first {first:.0} ms (decodes the backlog), then p50 {:.1} ms, p99 {:.1} ms",
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0
        );
    }
    server.handle.stop(true).await;
    k2.shutdown(Stop::Graceful).await;
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n: u64 = env("K2_BENCH_EVENTS", 1_000_000);
    let skip: String = env("K2_BENCH_SKIP", String::new());
    let run = move |phase: &str| !skip.split(',').any(|s| s.trim() == phase);
    let partitions: i32 = env("K2_BENCH_PARTITIONS", 3);
    let limit = Duration::from_secs(env("K2_BENCH_CONSUME_SECS", 900));
    let bootstrap = std::env::var("K2_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let prefix = format!("bench{}.", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().expect("temp dir");
    let kafka = config(dir.path(), "kafka", &bootstrap, &prefix, partitions);
    let embedded_dir = tempfile::tempdir().expect("temp dir");
    let embedded = config(embedded_dir.path(), "embedded", &bootstrap, &prefix, partitions);
    let lake = dir.path().join("lake");
    println!("{n} trades in {partitions} partitions, broker {bootstrap}");
    k2::runtime::run(|| async move {
        // K2's own registry is its catalog database: register the trade
        // schema under the topic's subject as K2's producer would.
        std::fs::create_dir_all(&lake).expect("lake dir");
        let topic = format!("{prefix}market.crypto.trades.binance");
        let id = {
            let registry = k2::registry::Registry::open(&lake.join("catalog.db")).await.expect("registry");
            registry.register(&format!("{topic}-value"), k2_core::schema::TRADE_V2_AVSC).await.expect("register")
        };
        let codec = WireCodec::new(SchemaIds { trade: id as u32, quote: u32::MAX });
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &bootstrap).create().expect("admin");
        k2::kafka::topics::ensure(&admin, &kafka.kafka, &topic).await.expect("topic");
        let rate = fill(&bootstrap, &kafka, &topic, &codec, n).await;
        println!("backlog: {n} records produced at {rate:.0} records/s");

        if run("decode") {
            decode_alone(&codec, n);
        }

        let bare = if run("bare") { bare_consume(&kafka, &topic, n, limit).await } else { None };
        if let Some(rate) = bare {
            println!("(1) bare rdkafka consumer, Kafka -> memory: {rate:.0} records/s");
        }

        let querying = config_as(dir.path(), "kafka", "query", &bootstrap, &prefix, partitions);
        if run("query") {
            query_node(&querying, n).await;
        }

        let started = Instant::now();
        let k2 = Service::builder(&kafka).start().await.expect("consuming K2");
        let committed =
            || -> i64 { k2.tails.trades.committed_covered().offsets.values().flat_map(|parts| parts.values()).sum() };
        // Rows taken into the tail (recall reads of an assignment are not
        // rows), then every row committed: once all are taken, a flush is
        // asked for rather than waiting out flush.max_age.
        let (mut first_taken, mut all_taken): (Option<f64>, Option<f64>) = (None, None);
        let mut report = Instant::now();
        while committed() < n as i64 {
            let taken = k2.tails.trades.appended();
            if first_taken.is_none() && taken > 0 {
                first_taken = Some(started.elapsed().as_secs_f64());
            }
            if all_taken.is_none() && taken >= n {
                all_taken = Some(started.elapsed().as_secs_f64());
                k2.flush().await.expect("flush");
            }
            if report.elapsed() >= Duration::from_secs(10) {
                report = Instant::now();
                println!(
                    "  flusher: {taken} rows taken, {} committed at {:.0} s",
                    committed(),
                    started.elapsed().as_secs_f64()
                );
            }
            if started.elapsed() > limit {
                println!("(2) flusher: gave up after {limit:?} with {taken} rows taken, {} of {n} committed", committed());
                k2.shutdown(Stop::Graceful).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        let k2_rate = n as f64 / secs;
        let first = first_taken.unwrap_or(0.0);
        let take_rate = n as f64 / (all_taken.unwrap_or(secs) - first).max(1e-3);
        let durable_rate = n as f64 / (secs - first).max(1e-3);
        println!(
            "(2) K2 flusher, Kafka -> Iceberg: {durable_rate:.0} rows/s from the first row taken to every row committed \
             (target >= 250,000); taking into the tail {take_rate:.0} rows/s; {k2_rate:.0} rows/s from start \
             ({n} rows in {secs:.2} s; group join and assignment until the first row: {first:.2} s)"
        );
        k2.shutdown(Stop::Graceful).await;
        if !run("embedded") {
            return;
        }

        let k2 = Service::builder(&embedded)
            .dedup(Box::new(MemoryStore::new(embedded.dedup.window, embedded.dedup.capacity)))
            .start()
            .await
            .expect("embedded K2");
        let started = Instant::now();
        let mut k = 0;
        while k < n {
            let batch: Vec<MarketEvent> = (k..(k + 8192).min(n)).map(trade).collect();
            k += batch.len() as u64;
            k2.pipeline.send(batch).await.expect("send");
        }
        k2.flush().await.expect("flush");
        let embedded_rate = n as f64 / started.elapsed().as_secs_f64();
        k2.shutdown(Stop::Graceful).await;
        println!("(3) embedded K2, the same rows through its pipeline into Iceberg: {embedded_rate:.0} rows/s");
        println!(
            "K2 flusher (first row to committed) / embedded = {:.2} (target >= 0.5); / bare consumer = {}",
            durable_rate / embedded_rate,
            bare.map_or("-".to_owned(), |b| format!("{:.2}", durable_rate / b))
        );
    })
    .expect("runtime");
}
