//! K2's producer path (events → Avro in the Confluent wire format → Kafka,
//! through the Kafka sink: topic lookup, schema id, encoding, idempotent
//! producer, delivery tracking) against a bare rdkafka producer sending the
//! same number of pre-encoded payloads of the same size, same settings, same
//! broker, one run. Needs a broker on 127.0.0.1:9092 (`tests/services.sh`
//! starts Tansu) or `K2_TEST_KAFKA`.
//!
//! Then the consuming side: a bare rdkafka consumer reading the bare topic
//! (what the broker can serve), and a Kafka-mode K2 consuming K2's topic
//! into the Iceberg tables, rows/s from its start until every record is
//! committed. Both print their progress every 10 s, so a stall shows, and
//! give up after K2_BENCH_CONSUME_SECS (default 900).
//!
//! `cargo bench -p k2 --bench kafka_produce` (K2_BENCH_EVENTS, default
//! 1,000,000).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use figment::providers::Env;
use k2::kafka::schemas::SchemaSource;
use k2::runtime::config::Config;
use k2::sinks::Sink;
use k2::sinks::kafka::KafkaSink;
use k2_core::codec::wire::{SchemaIds, WireCodec};
use k2_core::{AssetClass, MarketEvent, Timestamp, TradeSide, TradeV2, VendorData};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rust_decimal::Decimal;

fn trade(k: u64) -> MarketEvent {
    let mut vendor = VendorData::new();
    vendor.insert("is_buyer_maker", "true");
    vendor.insert("trade_time", "1722766102789");
    MarketEvent::Trade(TradeV2 {
        message_id: uuid::Uuid::from_u64_pair(0x6b32, k),
        trade_id: format!("BINANCE-{k}").into(),
        symbol: ["BTCUSDT", "ETHUSDT", "BNBUSDT"][(k % 3) as usize].into(),
        exchange: "BINANCE".into(),
        asset_class: AssetClass::Crypto,
        timestamp: Timestamp::from_micros(1_722_766_102_789_000 + k as i64),
        price: Decimal::new(6_061_000_000_000 + (k % 1000) as i64, 8),
        quantity: Decimal::new(154_000 + (k % 97) as i64, 8),
        currency: "USDT".into(),
        side: TradeSide::Buy,
        trade_conditions: Vec::new(),
        source_sequence: Some(k as i64),
        ingestion_timestamp: Timestamp::from_micros(1_722_766_102_790_000 + k as i64),
        platform_sequence: Some(k as i64),
        vendor_data: Some(vendor),
        is_sample_data: true,
    })
}

/// Reads every record of `topic` from the start with a plain consumer
/// (manual assignment, no group): the broker's own fetch rate.
async fn bare_consume(bootstrap: &str, topic: &str, partitions: i32, n: u64, limit: Duration) {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{topic}-bare-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("bare consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning).expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    let started = Instant::now();
    let mut report = Instant::now();
    let mut read = 0u64;
    while read < n {
        if started.elapsed() > limit {
            println!("bare consumer: gave up after {limit:?} with {read} of {n} records");
            return;
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
    let secs = started.elapsed().as_secs_f64();
    println!("bare rdkafka consumer, Kafka -> memory: {:.0} records/s ({n} records in {secs:.2} s)", n as f64 / secs);
}

fn main() {
    let n: u64 = std::env::var("K2_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let bootstrap = std::env::var("K2_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = format!("bench{}.", uuid::Uuid::new_v4().simple());
    let file = dir.path().join("k2.toml");
    let lake = dir.path().join("lake");
    std::fs::write(
        &file,
        format!(
            "mode = \"kafka\"\n[http]\nbind = \"127.0.0.1:0\"\n[binance]\nenabled = false\n[flush]\nmax_age = \"1s\"\n[storage]\ndata_dir = \"{}\"\n[kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic_prefix = \"{prefix}\"\npartitions = 3\n",
            lake.display()
        ),
    )
    .expect("config");
    let config = Config::load_from(Some(&file), Env::prefixed("K2_BENCH_UNSET__")).expect("config");
    let batch = 2048u64;
    k2::runtime::run(|| async move {
        // The registry the consuming K2 below reads: its catalog database.
        std::fs::create_dir_all(&lake).expect("lake dir");
        let registry = Arc::new(k2::registry::Registry::open(&lake.join("catalog.db")).await.expect("registry"));
        let breaker = Arc::new(k2::runtime::breaker::CircuitBreaker::new("kafka", config.breakers.clone()));
        let mut sink = KafkaSink::new(&config.kafka, SchemaSource::BuiltIn(registry.clone()), breaker).expect("producer");

        // Warm-up: creates the topic and registers the schema.
        if let Some(p) = sink.write(vec![trade(u64::MAX)]).expect("write") {
            p.await.expect("warm-up");
        }
        if let Some(p) = sink.flush() {
            p.await.expect("flush");
        }

        println!("K2 producer path: {n} trades, batches of {batch}, broker {bootstrap}");
        // Events exist before the clock starts, as the frames do for the bare
        // producer below.
        let batches: Vec<Vec<MarketEvent>> =
            (0..n).step_by(batch as usize).map(|k| (k..(k + batch).min(n)).map(trade).collect()).collect();
        let started = Instant::now();
        for events in batches {
            if let Some(p) = sink.write(events).expect("write") {
                p.await.expect("enqueue");
            }
        }
        if let Some(p) = sink.flush() {
            p.await.expect("flush");
        }
        let k2_secs = started.elapsed().as_secs_f64();
        let k2_rate = n as f64 / k2_secs;
        println!("K2 producer path: {k2_rate:.0} msgs/s ({k2_secs:.2} s)");

        // The same payloads, encoded beforehand, through a bare producer.
        let id = registry
            .version(&format!("{prefix}market.crypto.trades.binance-value"), "latest")
            .await
            .expect("registered")
            .id as u32;
        let codec = WireCodec::new(SchemaIds { trade: id, quote: id });
        let payloads: Vec<(String, Vec<u8>)> =
            (0..n).map(trade).map(|e| (e.symbol().to_string(), codec.encode(&e).expect("encode"))).collect();
        let mean = payloads.iter().map(|(_, p)| p.len()).sum::<usize>() as f64 / n as f64;
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &config.kafka.compression)
            .set("linger.ms", config.kafka.linger.as_millis().to_string())
            .set("batch.size", config.kafka.batch_bytes.to_string())
            .create()
            .expect("bare producer");
        let topic = format!("{prefix}bare");
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &bootstrap).create().expect("admin");
        k2::kafka::topics::ensure(&admin, &config.kafka, &topic).await.expect("bare topic");
        let started = Instant::now();
        let mut deliveries = Vec::with_capacity(n as usize);
        for (key, payload) in &payloads {
            let record = FutureRecord::to(&topic).key(key).payload(payload);
            deliveries.push(common::send_when_room(&producer, record).await);
        }
        let mut failed = 0;
        for d in deliveries {
            if !matches!(d.await, Ok(Ok(_))) {
                failed += 1;
            }
        }
        let bare_secs = started.elapsed().as_secs_f64();
        let bare_rate = n as f64 / bare_secs;
        println!("bare rdkafka producer, pre-encoded ({mean:.0} bytes each): {bare_rate:.0} msgs/s ({bare_secs:.2} s, {failed} failed)");
        println!("K2 / bare = {:.2} (target >= 0.80)", k2_rate / bare_rate);

        let limit = Duration::from_secs(
            std::env::var("K2_BENCH_CONSUME_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(900),
        );
        bare_consume(&bootstrap, &topic, config.kafka.partitions, n, limit).await;

        // The flusher: K2's topic (n + 1 records) into Iceberg.
        let started = Instant::now();
        let k2 = k2::service::Service::builder(&config).start().await.expect("consuming K2");
        let committed = || -> i64 {
            k2.tails.trades.committed_covered().offsets.values().flat_map(|parts| parts.values()).sum()
        };
        let mut first = None;
        let mut report = Instant::now();
        while committed() < n as i64 + 1 {
            if first.is_none() && committed() > 0 {
                first = Some(started.elapsed().as_secs_f64());
            }
            if report.elapsed() >= Duration::from_secs(10) {
                report = Instant::now();
                println!("  flusher: {} rows committed at {:.0} s", committed(), started.elapsed().as_secs_f64());
            }
            if started.elapsed() > limit {
                println!("flusher: gave up after {limit:?} with {} of {} rows committed", committed(), n + 1);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "flusher, Kafka -> Iceberg: {:.0} rows/s ({n} rows in {secs:.2} s from start, group join and first commit included: first commit at {:.2} s)",
            n as f64 / secs,
            first.unwrap_or(secs)
        );
    })
    .expect("runtime");
}
