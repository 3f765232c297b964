//! Kafka mode's producing side against a real Kafka-protocol broker (Tansu
//! in CI, started by `.ci/run`; `K2_TEST_KAFKA` names another): events leave
//! the pipeline as Confluent-framed Avro on per-exchange topics, keyed by
//! symbol, with the value schemas in K2's registry, and Confluent's Python
//! client reads them back.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use figment::providers::Env;
use k2::runtime::config::Config;
use k2::service::Service;
use k2::transforms::dedup::MemoryStore;
use k2_core::codec::wire::{SchemaIds, WireCodec, split_frame};
use k2_core::source::binance::{BinanceParser, Frame};
use k2_core::{MarketEvent, Timestamp};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};

fn bootstrap() -> String {
    std::env::var("K2_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn config(dir: &Path, prefix: &str) -> Config {
    config_with(dir, prefix, "")
}

/// As [`config`], with more keys for `[http]` (after its bind) in `http`.
fn config_with(dir: &Path, prefix: &str, http: &str) -> Config {
    let file = dir.join("k2.toml");
    let text = format!(
        "mode = \"kafka\"\n[http]\nbind = \"127.0.0.1:0\"\n{http}[storage]\ndata_dir = \"{}\"\n[kafka]\nbootstrap_servers = \"{}\"\ntopic_prefix = \"{prefix}\"\npartitions = 2\n",
        dir.join("lake").display(),
        bootstrap()
    );
    std::fs::write(&file, text).unwrap();
    Config::load_from(Some(&file), Env::prefixed("K2_TEST_UNSET__")).unwrap()
}

fn binance(frames: &[String]) -> Vec<MarketEvent> {
    let mut p = BinanceParser::default();
    frames
        .iter()
        .map(|f| match p.parse(f.as_bytes(), Timestamp::now()).unwrap() {
            Frame::Event(e) => e,
            other => panic!("{other:?}"),
        })
        .collect()
}

fn events() -> Vec<MarketEvent> {
    let mut frames = Vec::new();
    for t in 1..=40u64 {
        let s = if t % 2 == 0 { "BTCUSDT" } else { "ETHUSDT" };
        frames.push(format!(
            r#"{{"e":"trade","E":1,"s":"{s}","t":{t},"p":"6061{t}.12345678","q":"0.0015{t}","T":1722766102789,"m":true,"M":true}}"#
        ));
    }
    for u in 1..=10u64 {
        frames.push(format!(r#"{{"u":{u},"s":"BTCUSDT","b":"1.5{u}","B":"2","a":"1.6","A":"0"}}"#));
    }
    binance(&frames)
}

#[test]
fn events_reach_kafka_as_confluent_avro_keyed_by_symbol() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("t{}.", uuid::Uuid::new_v4().simple());
    let config = config(dir.path(), &prefix);
    let sent = events();
    let expected = sent.clone();
    let (received, ids, produced) = k2::runtime::run(|| async move {
        let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
        let k2 = Service::builder(&config).dedup(Box::new(store)).start().await.unwrap();
        k2.pipeline.send(sent.clone()).await.unwrap();
        // A drain in Kafka mode returns once every record is delivered.
        tokio::time::timeout(Duration::from_secs(30), k2.pipeline.drain()).await.expect("delivered").unwrap();

        let trades = format!("{prefix}market.crypto.trades.binance");
        let quotes = format!("{prefix}market.crypto.quotes.binance");
        let mut ids = BTreeMap::new();
        for topic in [&trades, &quotes] {
            let v = k2.api.registry.version(&format!("{topic}-value"), "latest").await.unwrap();
            ids.insert(topic.clone(), v.id as u32);
        }
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", format!("{prefix}check"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[&trades, &quotes]).unwrap();
        let mut received = Vec::new();
        while received.len() < 50 {
            let m =
                tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await.expect("messages arrive").unwrap();
            received.push((
                m.topic().to_owned(),
                String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
                m.payload().unwrap().to_vec(),
            ));
        }
        // Confluent's own client reads the trades topic through K2's registry.
        let server = k2.serve().unwrap();
        let registry_url = format!("http://{}", server.addr);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/kafka_consume.py");
        let topic = trades.clone();
        let python = tokio::task::spawn_blocking(move || {
            std::process::Command::new("python3")
                .arg(script)
                .arg(bootstrap())
                .arg(registry_url)
                .arg(topic)
                .arg("40")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        server.handle.stop(true).await;
        assert!(python.status.success(), "{}", String::from_utf8_lossy(&python.stderr));
        let values: Vec<serde_json::Value> = serde_json::from_slice(&python.stdout).unwrap();
        assert_eq!(values.len(), 40);
        for v in &values {
            assert_eq!(v["_key"], v["symbol"]);
            let price: rust_decimal::Decimal = v["price"].as_str().unwrap().parse().unwrap();
            let t = v["source_sequence"].as_u64().unwrap();
            assert_eq!(price, format!("6061{t}.12345678").parse::<rust_decimal::Decimal>().unwrap());
        }
        // The series exists from the start (telemetry's catalogue); the
        // registry says the producer is wired to the breaker.
        assert_eq!(k2.pipeline.registry().breakers().get("kafka"), Some(&k2::runtime::breaker::BreakerState::Closed));
        let metrics = k2::runtime::telemetry::render();
        assert!(
            metrics.lines().any(|l| l == "k2_circuit_breaker_state{dependency=\"kafka\"} 0"),
            "the Kafka breaker is exported, closed: {metrics}"
        );
        let produced: u64 = metrics
            .lines()
            .filter(|l| l.starts_with("k2_kafka_messages_produced_total") && l.contains(&prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        (received, ids, produced)
    })
    .unwrap();

    assert_eq!(produced, 50, "delivery metrics count every record");
    let mut by_id: BTreeMap<uuid::Uuid, MarketEvent> = BTreeMap::new();
    let id_of = |kind: &str| *ids.iter().find(|(t, _)| t.contains(kind)).unwrap().1;
    let codec = WireCodec::new(SchemaIds { trade: id_of(".trades."), quote: id_of(".quotes.") });
    for (topic, key, payload) in &received {
        let (id, _) = split_frame(payload).unwrap();
        assert_eq!(Some(&id), ids.get(topic), "{topic}: the frame names the registered schema");
        let event = codec.decode(payload).unwrap();
        assert_eq!(&event.symbol().to_string(), key, "keyed by symbol");
        assert!(topic.ends_with(if event.is_trade() { "trades.binance" } else { "quotes.binance" }));
        by_id.insert(event.message_id(), event);
    }
    assert_eq!(by_id.len(), 50, "each event once");
    for e in expected {
        let mut got = by_id.remove(&e.message_id()).expect("sent event received");
        // The pipeline numbers events (platform sequence); all else is as sent.
        match (&mut got, &e) {
            (MarketEvent::Trade(g), MarketEvent::Trade(_)) => {
                assert!(g.platform_sequence.is_some());
                g.platform_sequence = None;
            }
            (MarketEvent::Quote(g), MarketEvent::Quote(_)) => {
                assert!(g.platform_sequence.is_some());
                g.platform_sequence = None;
            }
            _ => panic!("kind changed"),
        }
        assert_eq!(got, e);
    }
}

/// No broker at all (nothing listens on the port): the Kafka circuit
/// breaker opens, `/health` says degraded and names it, and the metric says
/// open. (A real fault: a closed port, not a mock.)
#[test]
fn an_unreachable_broker_opens_the_kafka_breaker() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k2.toml");
    std::fs::write(
        &file,
        format!(
            "mode = \"kafka\"\n[http]\nbind = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n[kafka]\nbootstrap_servers = \"127.0.0.1:1\"\nmessage_timeout = \"1s\"\n[breakers]\nfailures = 2\nwindow = \"60s\"\ncool_down = \"1h\"\n",
            dir.path().join("lake").display()
        ),
    )
    .unwrap();
    let config = Config::load_from(Some(&file), Env::prefixed("K2_TEST_UNSET__")).unwrap();
    let (health, metrics) = k2::runtime::run(|| async move {
        let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
        let k2 = Service::builder(&config).dedup(Box::new(store)).start().await.unwrap();
        let server = k2.serve().unwrap();
        // The breaker opens on the producer's failed connections; batches
        // sent then are held, not handed to librdkafka to time out.
        let state = "k2_circuit_breaker_state{dependency=\"kafka\"} 1";
        let start = std::time::Instant::now();
        while !k2::runtime::telemetry::render().lines().any(|l| l == state) {
            assert!(start.elapsed() < Duration::from_secs(60), "the Kafka breaker did not open");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // One batch: the sink holds one at a time, the rest wait before it.
        k2.pipeline.send(events().into_iter().take(30).collect()).await.unwrap();
        let held = |text: &str| {
            text.lines().find_map(|l| l.strip_prefix("k2_kafka_producer_held_records ")?.parse::<f64>().ok())
        };
        while held(&k2::runtime::telemetry::render()) != Some(30.0) {
            let text = k2::runtime::telemetry::render();
            assert!(start.elapsed() < Duration::from_secs(60), "the batch was not held: {:?}", held(&text));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let health: serde_json::Value =
            reqwest::get(format!("http://{}/health", server.addr)).await.unwrap().json().await.unwrap();
        server.handle.stop(true).await;
        (health, k2::runtime::telemetry::render())
    })
    .unwrap();
    assert_eq!(health["breakers"]["kafka"], "open", "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(metrics.lines().any(|l| l == "k2_circuit_breaker_state{dependency=\"kafka\"} 1"), "{metrics}");
}

async fn trades_in(api: &str, source: &str) -> u64 {
    let v: serde_json::Value =
        reqwest::get(format!("{api}/v1/symbols?source={source}")).await.unwrap().json().await.unwrap();
    let rows = v["data"].as_array().unwrap_or_else(|| panic!("/v1/symbols?source={source}: {v}"));
    rows.iter().map(|r| r["trades"].as_u64().unwrap()).sum()
}

/// The first `n` letters of `{topic}.dlq`: their headers as text, and payloads.
async fn dead_letters(topic: &str, prefix: &str, n: usize) -> Vec<(BTreeMap<String, String>, Vec<u8>)> {
    use rdkafka::message::Headers;
    let dlq: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", format!("{prefix}dlq-check"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    dlq.subscribe(&[&format!("{topic}.dlq")]).unwrap();
    let mut letters = Vec::with_capacity(n);
    while letters.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(30), dlq.recv()).await.expect("a dead letter").unwrap();
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .filter_map(|h| Some((h.key.to_owned(), String::from_utf8_lossy(h.value?).into_owned())))
                    .collect()
            })
            .unwrap_or_default();
        letters.push((headers, m.payload().unwrap_or_default().to_vec()));
    }
    letters
}

/// Records no K2 producer wrote, between good ones in the same partition:
/// one that is not Avro at all, one naming a schema id the registry does not
/// hold, and one four times `kafka.max_record_bytes`. Each goes to the
/// dead-letter topic with its reason (the big one as its first 64 KiB and
/// its size), and every good record around them lands. (Tansu 0.6.0, the
/// test broker, delivers no record over about 5 MB to any consumer,
/// confluent-kafka's included, so a 100 MB record cannot be tried here.)
#[test]
fn hostile_records_go_to_the_dlq_and_their_partition_goes_on() {
    const BIG: usize = 4 << 20;
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("h{}.", uuid::Uuid::new_v4().simple());
    let topic = format!("{prefix}market.crypto.trades.binance");
    let config = config(dir.path(), &prefix);
    let sent = events();
    let trades_sent = sent.iter().filter(|e| e.is_trade()).count() as u64;
    k2::runtime::run(|| async move {
        let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
        let k2 = Service::builder(&config).dedup(Box::new(store)).start().await.unwrap();
        let server = k2.serve().unwrap();
        let api = format!("http://{}", server.addr);
        k2.pipeline.send(sent[..20].to_vec()).await.unwrap();
        k2.pipeline.drain().await.unwrap();
        let raw: rdkafka::producer::FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("message.max.bytes", (BIG + (1 << 20)).to_string())
            .create()
            .unwrap();
        let mut big = vec![0u8; BIG];
        big[..5].copy_from_slice(&[0, 0, 0, 0, 1]);
        let hostile: [(&str, Vec<u8>); 3] = [
            ("not avro", b"{\"e\":\"trade\",\"s\":\"BTCUSDT\"}".to_vec()),
            ("unknown schema id", vec![0, 0x7f, 0xff, 0xff, 0x00, 2, 4, 6]),
            ("4 MiB", big),
        ];
        for (what, payload) in &hostile {
            let record = rdkafka::producer::FutureRecord::to(&topic).key("BTCUSDT").payload(payload);
            raw.send(record, Duration::from_secs(60)).await.unwrap_or_else(|(e, _)| panic!("{what}: {e}"));
        }
        k2.pipeline.send(sent[20..].to_vec()).await.unwrap();
        k2.pipeline.drain().await.unwrap();
        let start = std::time::Instant::now();
        while trades_in(&api, "hybrid").await < trades_sent {
            assert!(start.elapsed() < Duration::from_secs(60), "good records after the hostile ones did not land");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        land(&k2, &api, trades_sent).await;

        let mut letters: Vec<(String, String, usize)> = dead_letters(&topic, &prefix, hostile.len())
            .await
            .into_iter()
            .map(|(headers, payload)| (headers["k2.reason"].clone(), headers["k2.source.bytes"].clone(), payload.len()))
            .collect();
        letters.sort_by_key(|(_, bytes, _)| bytes.parse::<usize>().unwrap());
        let (reason, bytes, kept) = &letters[0];
        assert!(reason.contains("not in the registry"), "{reason}");
        assert_eq!((bytes.as_str(), *kept), ("8", 8));
        let (reason, bytes, kept) = &letters[1];
        assert!(!reason.is_empty() && *kept == bytes.parse::<usize>().unwrap(), "{reason}");
        let (reason, bytes, kept) = &letters[2];
        assert!(reason.contains("max_record_bytes"), "{reason}");
        assert_eq!(
            (bytes.parse::<usize>().unwrap(), *kept),
            (BIG, 64 << 10),
            "the big one's letter is its first 64 KiB"
        );
        server.handle.stop(true).await;
    })
    .unwrap();
}

/// Kafka mode end to end in one process: pipeline → Kafka → consumer →
/// Iceberg → `/v1`. The snapshot records the offsets it covers; a restart
/// continues from them, so nothing is read twice; a poison record goes to
/// the dead-letter topic with its reason and the good records around it land.
#[test]
fn kafka_mode_lands_every_record_once_and_poison_goes_to_the_dlq() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("e{}.", uuid::Uuid::new_v4().simple());
    let topic = format!("{prefix}market.crypto.trades.binance");
    let sent = events();
    let trades_sent = sent.iter().filter(|e| e.is_trade()).count() as u64;
    {
        let config = config(dir.path(), &prefix);
        let (topic, prefix) = (topic.clone(), prefix.clone());
        k2::runtime::run(|| async move {
            let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
            let k2 = Service::builder(&config).dedup(Box::new(store)).start().await.unwrap();
            let server = k2.serve().unwrap();
            let api = format!("http://{}", server.addr);
            k2.pipeline.send(sent[..20].to_vec()).await.unwrap();
            k2.pipeline.drain().await.unwrap();
            // A record no decoder can read, between good ones.
            let raw: rdkafka::producer::FutureProducer =
                ClientConfig::new().set("bootstrap.servers", bootstrap()).create().unwrap();
            raw.send(
                rdkafka::producer::FutureRecord::to(&topic).key("BTCUSDT").payload(&b"\x00\x00\x00\x00\x07junk"[..]),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
            k2.pipeline.send(sent[20..].to_vec()).await.unwrap();
            k2.pipeline.drain().await.unwrap();
            let start = std::time::Instant::now();
            while trades_in(&api, "hybrid").await < trades_sent {
                assert!(start.elapsed() < Duration::from_secs(30), "records did not come back from Kafka");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            land(&k2, &api, trades_sent).await;
            let snaps: serde_json::Value =
                reqwest::get(format!("{api}/v1/snapshots")).await.unwrap().json().await.unwrap();
            let last = snaps["data"].as_array().unwrap().last().unwrap().clone();
            let offsets: serde_json::Value =
                serde_json::from_str(last["summary"]["k2.kafka-offsets"].as_str().unwrap()).unwrap();
            let next: i64 = offsets[&topic].as_object().unwrap().values().map(|v| v.as_i64().unwrap()).sum();
            assert_eq!(next as u64, trades_sent + 1, "the snapshot covers every trade record and the poison one");

            // The poison record is in the DLQ with its reason and origin.
            let (headers, payload) = dead_letters(&topic, &prefix, 1).await.remove(0);
            let header = |k: &str| headers.get(k).cloned();
            assert_eq!(header("k2.source.topic").as_deref(), Some(topic.as_str()));
            assert!(header("k2.reason").is_some_and(|r| !r.is_empty()));
            assert_eq!(payload, b"\x00\x00\x00\x00\x07junk");
            // Lag is reported per partition and reaches 0 once all is read.
            let start = std::time::Instant::now();
            loop {
                let m = k2::runtime::telemetry::render();
                let lags: Vec<f64> = m
                    .lines()
                    .filter(|l| l.starts_with("k2_kafka_consumer_lag{") && l.contains(&topic))
                    .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
                    .collect();
                if lags.len() == 2 && lags.iter().all(|l| *l == 0.0) {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(20), "no lag of 0 per partition: {lags:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            server.handle.stop(true).await;
        })
        .unwrap();
    }
    // While K2 is down, a second producer puts every trade in the log again
    // (what an active-active producer killed before Redis heard of its
    // deliveries leaves behind), each copy in its original's partition.
    let copies = k2::runtime::run({
        let topic = topic.clone();
        || async move { copy_records(&topic).await }
    })
    .unwrap();
    assert_eq!(copies as u64, trades_sent);
    // Restart on the same tables: consumption continues after the snapshot's
    // offsets, so nothing comes in twice; the copies are dropped, because the
    // consumer reads the offsets before where the table ends again to learn
    // their ids.
    let config = config(dir.path(), &prefix);
    k2::runtime::run(|| async move {
        let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
        let k2 = Service::builder(&config).dedup(Box::new(store)).start().await.unwrap();
        let server = k2.serve().unwrap();
        let api = format!("http://{}", server.addr);
        let dropped = format!("k2_kafka_duplicates_dropped_total{{topic=\"{topic}\"}}");
        let start = std::time::Instant::now();
        loop {
            let m = k2::runtime::telemetry::render();
            let n = m.lines().find(|l| l.starts_with(&dropped)).and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
            if n == Some(trades_sent) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "copies dropped: {n:?} of {trades_sent}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        k2.flush().await.unwrap();
        assert_eq!(trades_in(&api, "hybrid").await, trades_sent, "nothing was read twice after the restart");
        assert_eq!(trades_in(&api, "historical").await, trades_sent);
        server.handle.stop(true).await;
    })
    .unwrap();
}

/// The consumer dies of a panic in its task (injected over `/admin/faults`,
/// as an operator's drill would) and comes back under supervision: `/health`
/// and `/metrics` show the restart, and the new group member continues where
/// the table ends, so trades sent before and after land exactly once.
#[test]
fn a_panicked_consumer_is_restarted_and_continues_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("p{}.", uuid::Uuid::new_v4().simple());
    let config = config_with(dir.path(), &prefix, "admin = true\n");
    k2::runtime::run(|| async move {
        let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
        let k2 = Service::builder(&config).dedup(Box::new(store)).start().await.unwrap();
        let server = k2.serve().unwrap();
        let api = format!("http://{}", server.addr);
        let http = reqwest::Client::new();

        // Before: 30 trades consumed and committed.
        k2.pipeline.send(common::trades("BTCUSDT", 1..=30)).await.unwrap();
        k2.pipeline.drain().await.unwrap();
        wait_for_trades(&api, "hybrid", 30).await;
        land(&k2, &api, 30).await;

        let response = http.post(format!("{api}/admin/faults?actor=kafka-consumer&kind=panic")).send().await.unwrap();
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());

        // The restart waits out [supervision.kinds.kafka-consumer]'s backoff.
        let start = std::time::Instant::now();
        let consumer = loop {
            let health: serde_json::Value =
                http.get(format!("{api}/health")).send().await.unwrap().json().await.unwrap();
            let consumer = health["actors"]["kafka-consumer"].clone();
            if consumer["restarts"].as_u64() >= Some(1) && consumer["state"] == "running" {
                break consumer;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "the consumer did not come back: {health}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(consumer["restarts"], 1, "{consumer}");
        let error = consumer["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("panicked") && error.contains("injected panic"), "{consumer}");
        let metrics = http.get(format!("{api}/metrics")).send().await.unwrap().text().await.unwrap();
        let restarts = common::metric_in(&metrics, "k2_actor_restarts_total{actor=\"kafka-consumer\"}");
        assert!(restarts >= Some(1.0), "{restarts:?}");

        // After: the restarted consumer takes the next 30, and nothing of the
        // first 30 comes in again.
        k2.pipeline.send(common::trades("BTCUSDT", 31..=60)).await.unwrap();
        k2.pipeline.drain().await.unwrap();
        wait_for_trades(&api, "hybrid", 60).await;
        land(&k2, &api, 60).await;
        assert_eq!(trades_in(&api, "hybrid").await, 60, "nothing was read twice after the restart");
        server.handle.stop(true).await;
    })
    .unwrap();
    // Another engine reads every trade once, none missing.
    let v = common::read_iceberg(&dir.path().join("lake"));
    assert_eq!(v["trades"]["rows"], 60, "{v}");
    common::assert_contiguous_trades(&v);
}

/// Flushes until the table holds `n` trades (30 s at most), never more: a
/// hybrid count comes from the log itself, so reaching it does not mean the
/// consumer has taken those records into its tail yet.
async fn land(k2: &Service, api: &str, n: u64) {
    let start = std::time::Instant::now();
    loop {
        k2.flush().await.unwrap();
        let stored = trades_in(api, "historical").await;
        assert!(stored <= n, "{stored} trades stored of {n} sent");
        if stored == n {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{stored} of {n} trades landed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (30 s at most) until `/v1/symbols` counts `n` trades from `source`.
async fn wait_for_trades(api: &str, source: &str, n: u64) {
    let start = std::time::Instant::now();
    loop {
        let seen = trades_in(api, source).await;
        if seen >= n {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{seen} of {n} trades came back from Kafka");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads every decodable record of `topic` and produces it again to the same
/// partition with the same key; how many were copied.
async fn copy_records(topic: &str) -> usize {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", format!("{topic}-copier"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut records = Vec::new();
    // Until the log has been quiet for 3 s.
    while let Ok(m) = tokio::time::timeout(Duration::from_secs(3), c.recv()).await {
        let m = m.unwrap();
        let payload = m.payload().unwrap().to_vec();
        if !payload.ends_with(b"junk") {
            records.push((m.partition(), m.key().unwrap().to_vec(), payload));
        }
    }
    let p: rdkafka::producer::FutureProducer =
        ClientConfig::new().set("bootstrap.servers", bootstrap()).create().unwrap();
    for (partition, key, payload) in &records {
        let record = rdkafka::producer::FutureRecord::to(topic).partition(*partition).key(key).payload(payload);
        p.send(record, Duration::from_secs(10)).await.unwrap();
    }
    records.len()
}

/// A registry named by URL (here another K2's, which speaks Confluent's REST
/// API as Confluent's, Karapace or Redpanda's do): the producer registers
/// there, the consumer resolves ids there, and this K2's own registry stays
/// empty.
#[test]
fn a_remote_registry_named_by_url_is_used_for_both_directions() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("rr{}.", uuid::Uuid::new_v4().simple());
    let host_dir = dir.path().join("host");
    std::fs::create_dir_all(&host_dir).unwrap();
    let host_file = host_dir.join("k2.toml");
    std::fs::write(
        &host_file,
        format!("[http]\nbind = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n", host_dir.join("lake").display()),
    )
    .unwrap();
    let host_config = Config::load_from(Some(&host_file), Env::prefixed("K2_TEST_UNSET__")).unwrap();
    let sent = events();
    let trades_sent = sent.iter().filter(|e| e.is_trade()).count() as u64;
    k2::runtime::run(|| async move {
        let store = MemoryStore::new(host_config.dedup.window, host_config.dedup.capacity);
        let host = Service::builder(&host_config).dedup(Box::new(store)).start().await.unwrap();
        let host_server = host.serve().unwrap();
        let registry_url = format!("http://{}", host_server.addr);

        let mut config = config(dir.path(), &prefix);
        config.kafka.registry_url = registry_url.clone();
        let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
        let k2 = Service::builder(&config).dedup(Box::new(store)).start().await.unwrap();
        let server = k2.serve().unwrap();
        let api = format!("http://{}", server.addr);
        k2.pipeline.send(sent).await.unwrap();
        k2.pipeline.drain().await.unwrap();
        let start = std::time::Instant::now();
        while trades_in(&api, "hybrid").await < trades_sent {
            assert!(start.elapsed() < Duration::from_secs(30), "records did not come back through the remote registry");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let subjects = |url: String| async move {
            reqwest::get(format!("{url}/subjects")).await.unwrap().json::<Vec<String>>().await.unwrap()
        };
        let remote = subjects(registry_url).await;
        assert!(remote.contains(&format!("{prefix}market.crypto.trades.binance-value")), "{remote:?}");
        assert!(remote.contains(&format!("{prefix}market.crypto.quotes.binance-value")), "{remote:?}");
        assert_eq!(subjects(api.clone()).await, Vec::<String>::new(), "this K2's own registry was not used");
        server.handle.stop(true).await;
        host_server.handle.stop(true).await;
    })
    .unwrap();
}
