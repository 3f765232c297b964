//! Kafka mode as separate processes against a real Kafka-protocol broker:
//! the exchange simulator → a producing `k2 run` → Kafka → two flushing
//! `k2 run`s in one consumer group → Iceberg, with the flushers killed
//! (SIGKILL) at random moments. Every trade lands exactly once, checked by
//! another engine (pyiceberg) and through `/v1`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Run, assert_contiguous_trades, read_iceberg, start_sim, trades_seen};
use figment::providers::Env;
use k2::runtime::config::Config;
use k2::runtime::health::HealthRegistry;
use k2::service::Service;
use k2::state::shared::{Claim, SharedState};
use k2::transforms::dedup::MemoryStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

fn bootstrap() -> String {
    std::env::var("K2_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn redis_url() -> String {
    std::env::var("K2_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Records in every partition of `topic` (its high watermarks' sum).
fn records_in(topic: &str, partitions: i32) -> i64 {
    records_in_at(&bootstrap(), topic, partitions)
}

fn write(path: &Path, text: &str) -> std::path::PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_owned()
}

#[test]
fn flushers_in_one_group_killed_at_random_land_every_trade_exactly_once() {
    let seed: u64 = std::env::var("K2_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("seed = {seed} (K2_TEST_SEED={seed} repeats this run)");
    let mut rng = StdRng::seed_from_u64(seed);

    let (_sim, addrs) = start_sim("2000");
    // Kept when the test fails: the processes' logs are in it.
    let kept = tempfile::tempdir().unwrap().keep();
    let dir = Dir(kept.clone());
    let data = dir.path().join("data");
    let prefix = format!("g{}.", uuid::Uuid::new_v4().simple());
    let topic = format!("{prefix}market.crypto.trades.binance");
    let kafka = format!(
        "[kafka]\nbootstrap_servers = \"{}\"\ntopic_prefix = \"{prefix}\"\npartitions = 4\nsession_timeout = \"6s\"\n",
        bootstrap()
    );
    let producer = write(
        &dir.path().join("producer.toml"),
        &format!(
            "mode = \"kafka\"\n[http]\nbind = \"127.0.0.1:0\"\n[binance]\nendpoint = \"{ws}\"\nalternate_endpoint = \"{ws}\"\nrest_endpoint = \"{rest}\"\nbook_ticker = false\n[gap_recovery]\nrequests_per_second = 50\n{kafka}consume = false\n",
            ws = addrs["ws"].as_str().unwrap(),
            rest = addrs["rest"].as_str().unwrap()
        ),
    );
    let flusher = write(
        &dir.path().join("flusher.toml"),
        &format!(
            "mode = \"kafka\"\n[http]\nbind = \"127.0.0.1:0\"\n[binance]\nenabled = false\n[flush]\nmax_age = \"300ms\"\nmax_rows = 2000\n{kafka}"
        ),
    );
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let producing = Run::start(&producer, &data, "warn", log("producer"));
    let start = Instant::now();
    while records_in_topic_exists(&topic) == 0 {
        assert!(start.elapsed() < Duration::from_secs(30), "nothing reached Kafka");
        std::thread::sleep(Duration::from_millis(200));
    }

    let mut started = 0;
    let start_flusher = |slot: usize, started: &mut usize| {
        *started += 1;
        Run::start(&flusher, &data, "info", log(&format!("flusher-{slot}-{started}")))
    };
    let mut flushers = [Some(start_flusher(0, &mut started)), Some(start_flusher(1, &mut started))];
    for round in 0..10 {
        let wait = rng.random_range(500..4000);
        let victim = rng.random_range(0..2);
        std::thread::sleep(Duration::from_millis(wait));
        eprintln!("round {round}: kill -9 flusher {victim} after {wait} ms");
        if let Some(run) = flushers[victim].take() {
            run.kill9();
        }
        // The killed member leaves the group when its session times out.
        // Tansu 0.6 drops it then but keeps its partitions assigned to it
        // until somebody joins, so the restart comes after the timeout (with
        // Apache Kafka the survivor would take them over by itself).
        std::thread::sleep(Duration::from_millis(6500));
        flushers[victim] = Some(start_flusher(victim, &mut started));
    }

    // The producer stops cleanly: everything it took is in Kafka.
    producing.stop();
    let total = records_in(&topic, 4);
    assert!(total > 10_000, "only {total} records were produced");
    // A loaded machine (or broker) lands the backlog slowly: what fails the
    // test is no progress for two minutes, not a slow one.
    let (start, mut last, mut progressed) = (Instant::now(), -1, Instant::now());
    let v = loop {
        let v = read_iceberg(&data);
        let rows = v["trades"]["rows"].as_i64().unwrap();
        assert!(rows <= total, "{rows} rows in the table, {total} records in Kafka: {v}");
        if rows == total {
            break v;
        }
        if rows > last {
            (last, progressed) = (rows, Instant::now());
        }
        assert!(
            progressed.elapsed() < Duration::from_secs(120) && start.elapsed() < Duration::from_secs(900),
            "{rows} of {total} records in the table, no progress for {:?}; seed {seed}; logs in {}",
            progressed.elapsed(),
            dir.path().display()
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    assert_contiguous_trades(&v);
    assert!(v["trades"]["writers"].as_u64().unwrap() >= 3, "flushers shared the work: {v}");

    for f in flushers.into_iter().flatten() {
        f.stop();
    }
    // The query API over the result: a K2 that only reads the tables.
    let reader = write(
        &dir.path().join("reader.toml"),
        &format!(
            "mode = \"kafka\"\n[http]\nbind = \"127.0.0.1:0\"\n[binance]\nenabled = false\n{kafka}consume = false\n"
        ),
    );
    let reading = Run::start(&reader, &data, "warn", log("reader"));
    assert_eq!(trades_seen(&reading.http, "historical"), total as u64);
    reading.stop();
    let _ = std::fs::remove_dir_all(&kept);
}

/// One flusher, killed (SIGKILL) and restarted ten times while the
/// producer keeps filling the topic: each incarnation owns the partitions
/// again within the session timeout plus a few seconds (most restarts come
/// while the dead member is still in the group, every fourth after its
/// session expired), and in the end the table holds every record once.
#[test]
fn a_single_flusher_killed_and_restarted_owns_its_partitions_again_each_time() {
    const SESSION_SECS: u64 = 6;
    /// The bound the test holds each incarnation to.
    const OWNED_WITHIN: Duration = Duration::from_secs(SESSION_SECS + 8);
    let seed: u64 = std::env::var("K2_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("seed = {seed} (K2_TEST_SEED={seed} repeats this run)");
    let mut rng = StdRng::seed_from_u64(seed);

    let (_sim, addrs) = start_sim("1000");
    let kept = tempfile::tempdir().unwrap().keep();
    let dir = Dir(kept.clone());
    let data = dir.path().join("data");
    let prefix = format!("r{}.", uuid::Uuid::new_v4().simple());
    let topic = format!("{prefix}market.crypto.trades.binance");
    let kafka = format!(
        "[kafka]\nbootstrap_servers = \"{}\"\ntopic_prefix = \"{prefix}\"\npartitions = 3\nsession_timeout = \"{SESSION_SECS}s\"\n",
        bootstrap()
    );
    let producer = write(
        &dir.path().join("producer.toml"),
        &format!(
            "mode = \"kafka\"\n[http]\nbind = \"127.0.0.1:0\"\n[binance]\nendpoint = \"{ws}\"\nalternate_endpoint = \"{ws}\"\nrest_endpoint = \"{rest}\"\nbook_ticker = false\n[gap_recovery]\nrequests_per_second = 50\n{kafka}consume = false\n",
            ws = addrs["ws"].as_str().unwrap(),
            rest = addrs["rest"].as_str().unwrap()
        ),
    );
    let flusher = write(
        &dir.path().join("flusher.toml"),
        &format!(
            "mode = \"kafka\"\n[http]\nbind = \"127.0.0.1:0\"\n[binance]\nenabled = false\n[flush]\nmax_age = \"300ms\"\n{kafka}"
        ),
    );
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let producing = Run::start(&producer, &data, "warn", log("producer"));
    common::wait_until("records in Kafka", 30, || records_in_topic_exists(&topic) > 0);

    let owned = |run: &Run| metric(&run.http, "k2_kafka_partitions_owned ").unwrap_or(0.0) as i64;
    let mut waits = Vec::new();
    let mut killed_within_session = None;
    for round in 1..=11 {
        let flushing = Run::start(&flusher, &data, "info", log(&format!("flusher-{round}")));
        let started = Instant::now();
        while owned(&flushing) < 3 {
            assert!(
                started.elapsed() < OWNED_WITHIN,
                "round {round}: the flusher owned {} of 3 partitions after {:?}; seed {seed}; logs in {}",
                owned(&flushing),
                started.elapsed(),
                dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        waits.push(started.elapsed());
        if let Some(down) = killed_within_session {
            // It waited for the broker to expire its killed predecessor
            // before joining, rather than join beside it.
            let text = std::fs::read_to_string(log(&format!("flusher-{round}"))).unwrap();
            assert!(
                text.contains("previous flusher was killed"),
                "round {round} (down {down} ms) did not wait:\n{text}"
            );
        }
        if round == 11 {
            // The last incarnation lands the rest.
            producing.stop();
            let total = records_in(&topic, 3);
            assert!(total > 5_000, "only {total} records were produced");
            let (start, mut last, mut progressed) = (Instant::now(), -1, Instant::now());
            let v = loop {
                let v = read_iceberg(&data);
                let rows = v["trades"]["rows"].as_i64().unwrap();
                assert!(rows <= total, "{rows} rows in the table, {total} records in Kafka: {v}");
                if rows == total {
                    break v;
                }
                if rows > last {
                    (last, progressed) = (rows, Instant::now());
                }
                assert!(
                    progressed.elapsed() < Duration::from_secs(120) && start.elapsed() < Duration::from_secs(600),
                    "{rows} of {total} records in the table; seed {seed}; logs in {}",
                    dir.path().display()
                );
                std::thread::sleep(Duration::from_secs(1));
            };
            assert_contiguous_trades(&v);
            flushing.stop();
            eprintln!("every incarnation owned its partitions within {:?}: {waits:?}", waits.iter().max());
            break;
        }
        let up = rng.random_range(300..3000);
        std::thread::sleep(Duration::from_millis(up));
        flushing.kill9();
        // Most restarts come within the session (the member is still in the
        // group); every fourth after it expired.
        let down = if round % 4 == 0 { SESSION_SECS * 1000 + 1500 } else { rng.random_range(0..2000) };
        eprintln!(
            "round {round}: owned 3 partitions after {:?}, killed after {up} ms, down {down} ms",
            waits[round - 1]
        );
        std::thread::sleep(Duration::from_millis(down));
        killed_within_session = (down < SESSION_SECS * 1000).then_some(down);
    }
    let _ = std::fs::remove_dir_all(&kept);
}

/// A directory path.
struct Dir(std::path::PathBuf);

impl Dir {
    fn path(&self) -> &Path {
        &self.0
    }
}

/// Records in partition 0 of `topic`, 0 when it does not exist yet.
fn records_in_topic_exists(topic: &str) -> i64 {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap()).create().unwrap();
    c.fetch_watermarks(topic, 0, Duration::from_secs(2)).map(|(_, high)| high).unwrap_or(0)
}

/// A Tansu broker of the test's own on a spare port, stopped when dropped.
struct Broker {
    process: Option<common::Kill>,
    port: u16,
    db: std::path::PathBuf,
}

impl Broker {
    fn start(dir: &Path) -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut b = Broker { process: None, port, db: dir.join("tansu.db") };
        b.restart();
        b
    }

    fn restart(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::options().create(true).append(true).open(self.db.with_extension("log")).unwrap();
        let child = std::process::Command::new("tansu")
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .arg("--storage-engine")
            .arg(format!("sqlite:///{}", self.db.display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("tansu is on PATH (tests/services.sh installs it)");
        self.process = Some(common::Kill(child));
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "tansu did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        self.process = None;
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn metric(http: &str, line_start: &str) -> Option<f64> {
    common::get(http, "/metrics").lines().find(|l| l.starts_with(line_start))?.rsplit(' ').next()?.parse().ok()
}

/// The broker dies mid-stream and comes back on the same storage: the
/// producer holds and retries, the Kafka breaker shows the outage in
/// /metrics and closes again, and every trade lands once.
#[test]
fn a_broker_restart_mid_stream_loses_nothing_and_shows_in_the_breaker() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    let (sim, addrs) = start_sim("1000");
    let data = dir.path().join("data");
    let prefix = "r.";
    let topic = format!("{prefix}market.crypto.trades.binance");
    let config = write(
        &dir.path().join("k2.toml"),
        &format!(
            "mode = \"kafka\"\n[http]\nbind = \"127.0.0.1:0\"\n[binance]\nendpoint = \"{ws}\"\nalternate_endpoint = \"{ws}\"\nrest_endpoint = \"{rest}\"\nbook_ticker = false\n[gap_recovery]\nrequests_per_second = 50\n[flush]\nmax_age = \"300ms\"\n[breakers]\ncool_down = \"1s\"\n[kafka]\nbootstrap_servers = \"{}\"\ntopic_prefix = \"{prefix}\"\npartitions = 2\nsession_timeout = \"6s\"\n",
            broker.bootstrap(),
            ws = addrs["ws"].as_str().unwrap(),
            rest = addrs["rest"].as_str().unwrap()
        ),
    );
    let k2 = Run::start(&config, &data, "warn", dir.path().join("k2.log"));
    let start = Instant::now();
    while trades_seen(&k2.http, "hybrid") < 2000 {
        assert!(start.elapsed() < Duration::from_secs(30), "trades did not come back from Kafka");
        std::thread::sleep(Duration::from_millis(100));
    }
    let state = "k2_circuit_breaker_state{dependency=\"kafka\"}";
    assert_eq!(metric(&k2.http, state), Some(0.0));

    broker.kill();
    let start = Instant::now();
    while metric(&k2.http, state) != Some(1.0) {
        assert!(start.elapsed() < Duration::from_secs(30), "the Kafka breaker did not open while the broker was down");
        std::thread::sleep(Duration::from_millis(100));
    }
    let during = trades_seen(&k2.http, "hybrid");
    broker.restart();
    let start = Instant::now();
    while metric(&k2.http, state) != Some(0.0) || trades_seen(&k2.http, "hybrid") < during + 2000 {
        assert!(start.elapsed() < Duration::from_secs(60), "no recovery after the broker came back");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The exchange stops; what K2 took must all come back from Kafka.
    drop(sim);
    let start = Instant::now();
    let mut last = (0, Instant::now());
    loop {
        let (seen, total) = (trades_seen(&k2.http, "hybrid") as i64, records_in_at(&broker.bootstrap(), &topic, 2));
        if seen == total && last.1.elapsed() > Duration::from_secs(2) {
            break;
        }
        if seen != last.0 {
            last = (seen, Instant::now());
        }
        assert!(seen <= total, "{seen} trades seen, {total} records in Kafka");
        assert!(start.elapsed() < Duration::from_secs(60), "{seen} of {total} records consumed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let total = records_in_at(&broker.bootstrap(), &topic, 2);
    k2.stop();
    let v = read_iceberg(&data);
    assert_eq!(v["trades"]["rows"].as_i64(), Some(total), "{v}");
    assert_contiguous_trades(&v);
}

/// The broker is gone for longer than `kafka.message_timeout`: the records
/// the producer could not deliver give their Redis claims up, so another
/// instance holding them as pending takes them at its next look instead of
/// when the dedup window ends; the delivered ones are settled.
#[test]
fn claims_of_records_the_producer_cannot_deliver_are_released() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    let prefix = format!("rel{}.", uuid::Uuid::new_v4().simple());
    let redis = format!("[redis]\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\n", redis_url());
    let config = producing_config(dir.path(), &broker, &prefix, &redis, "message_timeout = \"2s\"\n");
    k2::runtime::run(|| async move {
        let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
        let k2 = Service::builder(&config).dedup(Box::new(store)).start().await.unwrap();
        let delivered = common::trades("XRPUSDT", 1..=20);
        k2.pipeline.send(delivered.clone()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(60), k2.pipeline.drain()).await.expect("delivered").unwrap();

        broker.kill();
        let lost = common::trades("XRPUSDT", 21..=40);
        k2.pipeline.send(lost.clone()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(60), k2.pipeline.drain()).await.expect("given up").unwrap();
        let shared = k2.shared.clone().expect("redis is configured");
        assert!(shared.settled(Duration::from_secs(10)).await, "settlements reach redis");
        let released = "k2_state_released_ids_total{store=\"redis\"}";
        let start = Instant::now();
        while common::metric_in(&k2::runtime::telemetry::render(), released) != Some(20.0) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "claims released: {:?}",
                common::metric_in(&k2::runtime::telemetry::render(), released)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let other = SharedState::new(
            &config.redis,
            config.dedup.window,
            HealthRegistry::new().breaker("redis", &config.breakers),
        )
        .unwrap();
        let answers = other.claim(&claim_ids(&lost)).await.unwrap();
        assert!(answers.iter().all(|c| *c == Claim::Mine), "undelivered: {answers:?}");
        let answers = other.claim(&claim_ids(&delivered)).await.unwrap();
        assert!(answers.iter().all(|c| *c == Claim::Taken), "delivered: {answers:?}");
    })
    .unwrap();
}

/// In Kafka mode a record is durable once the broker has it, so the
/// producer's undelivered records are the ladder's lag: with the broker
/// gone they climb it to CIRCUIT_BREAK (an open breaker alone gives SOFT),
/// and once the broker is back and takes them it comes down to NORMAL.
#[test]
fn records_the_producer_has_not_delivered_climb_the_ladder() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    let prefix = format!("lad{}.", uuid::Uuid::new_v4().simple());
    let ladder = "[degradation]\nlag = [10, 20, 30, 40]\ncool_down = \"500ms\"\n";
    let config = producing_config(dir.path(), &broker, &prefix, ladder, "");
    k2::runtime::run(|| async move {
        let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
        let k2 = Service::builder(&config).dedup(Box::new(store)).start().await.unwrap();
        let level = || k2.pipeline.registry().degradation().map(|d| (d.level, d.cause));
        // The topic exists and the registry knows its schema.
        k2.pipeline.send(common::trades("DOTUSDT", 1..=5)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(60), k2.pipeline.drain()).await.expect("delivered").unwrap();

        broker.kill();
        k2.pipeline.send(common::trades("DOTUSDT", 6..=105)).await.unwrap();
        let start = Instant::now();
        while level().map(|l| l.0) != Some(4) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no CIRCUIT_BREAK while 100 records wait: {:?}",
                level()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, cause) = level().unwrap();
        assert!(cause.contains("not yet durable"), "{cause}");

        broker.restart();
        tokio::time::timeout(Duration::from_secs(60), k2.pipeline.drain()).await.expect("delivered").unwrap();
        let start = Instant::now();
        while level().map(|l| l.0) != Some(0) {
            assert!(start.elapsed() < Duration::from_secs(60), "the ladder did not come down: {:?}", level());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let topic = format!("{prefix}market.crypto.trades.binance");
        assert_eq!(records_in_at(&broker.bootstrap(), &topic, 1), 105, "every record in Kafka once");
    })
    .unwrap();
}

/// While the Kafka breaker is open the sink holds batches before
/// librdkafka, where they would fail after `message_timeout`: a broker gone
/// for longer than that loses nothing, and the held records show.
#[test]
fn an_open_kafka_breaker_holds_batches_instead_of_letting_them_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    let prefix = format!("hold{}.", uuid::Uuid::new_v4().simple());
    let breakers = "[breakers]\ncool_down = \"20s\"\n";
    let config = producing_config(dir.path(), &broker, &prefix, breakers, "message_timeout = \"2s\"\n");
    k2::runtime::run(|| async move {
        let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
        let k2 = Service::builder(&config).dedup(Box::new(store)).start().await.unwrap();
        k2.pipeline.send(common::trades("ADAUSDT", 1..=5)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(60), k2.pipeline.drain()).await.expect("delivered").unwrap();

        broker.kill();
        let state = "k2_circuit_breaker_state{dependency=\"kafka\"}";
        let start = Instant::now();
        while common::metric_in(&k2::runtime::telemetry::render(), state) != Some(1.0) {
            assert!(start.elapsed() < Duration::from_secs(30), "the Kafka breaker did not open with the broker gone");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        k2.pipeline.send(common::trades("ADAUSDT", 6..=105)).await.unwrap();
        // Three message timeouts: queued in librdkafka they would have failed.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let held = "k2_kafka_producer_held_records";
        assert_eq!(common::metric_in(&k2::runtime::telemetry::render(), held), Some(100.0));

        broker.restart();
        tokio::time::timeout(Duration::from_secs(60), k2.pipeline.drain()).await.expect("delivered").unwrap();
        assert_eq!(common::metric_in(&k2::runtime::telemetry::render(), held), Some(0.0));
        let failed = "k2_kafka_produce_errors_total";
        let text = k2::runtime::telemetry::render();
        let failures: f64 = text
            .lines()
            .filter(|l| l.starts_with(failed))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(failures, 0.0, "no delivery failed");
        let topic = format!("{prefix}market.crypto.trades.binance");
        assert_eq!(records_in_at(&broker.bootstrap(), &topic, 1), 105, "every record in Kafka once");
    })
    .unwrap();
}

/// An in-process K2 in Kafka mode that only produces, to `broker`, with
/// `sections` (whole TOML tables) and `kafka` (more `[kafka]` keys).
fn producing_config(dir: &Path, broker: &Broker, prefix: &str, sections: &str, kafka: &str) -> Config {
    let file = write(
        &dir.join("k2.toml"),
        &format!(
            "mode = \"kafka\"\n[storage]\ndata_dir = \"{}\"\n{sections}[kafka]\nbootstrap_servers = \"{}\"\ntopic_prefix = \"{prefix}\"\npartitions = 1\nconsume = false\n{kafka}",
            dir.join("lake").display(),
            broker.bootstrap()
        ),
    );
    Config::load_from(Some(&file), Env::prefixed("K2_TEST_UNSET__")).unwrap()
}

fn claim_ids(events: &[k2_core::MarketEvent]) -> Vec<(&str, uuid::Uuid)> {
    events.iter().map(|e| (e.exchange(), e.message_id())).collect()
}

fn records_in_at(bootstrap: &str, topic: &str, partitions: i32) -> i64 {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    (0..partitions).map(|p| c.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1).sum()
}

/// Active-active: two ingesting K2s on the same exchange streams, sharing
/// one Redis, both producing to Kafka. Dedup before produce keeps the topic
/// clean: every trade is in it once, and both instances took part.
#[test]
fn two_ingesting_instances_sharing_redis_put_each_trade_in_kafka_once() {
    let v = active_active(false);
    assert_eq!(v["duplicates_dropped"], 0, "the topic itself holds each trade once: {v}");
    assert_contiguous_trades(&v);
}

/// Active-active, and one instance is killed (-9) mid-stream: the trades it
/// had claimed but not delivered pass to the other once its lease runs out,
/// so none is missing. A trade the killed instance delivered before Redis
/// heard it was durable is in the topic twice (the other instance took its
/// claim over); the flusher drops the second copy, so the table holds each
/// trade once.
#[test]
fn an_active_active_instance_killed_mid_stream_loses_no_trade() {
    let v = active_active(true);
    println!(
        "{} rows from {} records in the topic, {} second copies dropped",
        v["trades"]["rows"], v["total_records"], v["duplicates_dropped"]
    );
    assert_contiguous_trades(&v);
}

/// Runs two producing instances on one simulated stream, optionally kills
/// the first mid-stream, lands the topic in Iceberg with a flusher, and
/// returns what pyiceberg reads.
fn active_active(kill_one: bool) -> serde_json::Value {
    let (sim, addrs) = start_sim("1000");
    let kept = tempfile::tempdir().unwrap().keep();
    let dir = Dir(kept.clone());
    let data = dir.path().join("data");
    let prefix = format!("aa{}.", uuid::Uuid::new_v4().simple());
    let topic = format!("{prefix}market.crypto.trades.binance");
    let redis = std::env::var("K2_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let kafka = format!(
        "[kafka]\nbootstrap_servers = \"{}\"\ntopic_prefix = \"{prefix}\"\npartitions = 2\nsession_timeout = \"6s\"\n",
        bootstrap()
    );
    let producer = write(
        &dir.path().join("producer.toml"),
        &format!(
            "mode = \"kafka\"\n[http]\nbind = \"127.0.0.1:0\"\n[binance]\nendpoint = \"{ws}\"\nalternate_endpoint = \"{ws}\"\nrest_endpoint = \"{rest}\"\nbook_ticker = false\n[gap_recovery]\nrequests_per_second = 50\n[redis]\nurl = \"{redis}\"\nkey_prefix = \"{prefix}\"\ntimeout = \"10s\"\nlease = \"1s\"\n{kafka}consume = false\n",
            ws = addrs["ws"].as_str().unwrap(),
            rest = addrs["rest"].as_str().unwrap()
        ),
    );
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let a = Run::start(&producer, &data, "warn", log("a"));
    let b = Run::start(&producer, &data, "warn", log("b"));
    let produced = |http: &str| {
        common::metric(http, &format!("k2_kafka_messages_produced_total{{topic=\"{topic}\"}}")).unwrap_or(0.0)
    };
    let start = Instant::now();
    while records_in_topic_exists(&topic) < 5000 {
        assert!(start.elapsed() < Duration::from_secs(60), "trades did not reach Kafka");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (from_a, from_b) = (produced(&a.http), produced(&b.http));
    assert!(from_a > 0.0 && from_b > 0.0, "both instances produced: {from_a} and {from_b}");
    // Exactness holds while Redis answers; a fallback to memory (Redis
    // unreachable, or slower than redis.timeout) lets both instances pass a
    // trade, by design. The timeout above is generous for a loaded machine.
    let runs = if kill_one {
        a.kill9();
        // B goes on alone; A's claims pass to it after A's lease (1 s).
        std::thread::sleep(Duration::from_secs(5));
        vec![b]
    } else {
        vec![a, b]
    };
    for run in &runs {
        // Every series of the counter (one per state), at 0 since the start.
        let fallbacks: f64 = common::get(&run.http, "/metrics")
            .lines()
            .filter(|l| l.starts_with("k2_state_fallback_batches_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(fallbacks, 0.0, "an instance fell back to memory");
    }
    drop(sim);
    for run in runs {
        run.stop();
    }
    let total = records_in(&topic, 2);

    // Into the table through a flusher; pyiceberg reads it.
    let flusher = write(
        &dir.path().join("flusher.toml"),
        &format!(
            "mode = \"kafka\"\n[http]\nbind = \"127.0.0.1:0\"\n[binance]\nenabled = false\n[flush]\nmax_age = \"300ms\"\n{kafka}"
        ),
    );
    let f = Run::start(&flusher, &data, "warn", log("flusher"));
    let start = Instant::now();
    // Every record is either in the table or dropped as a second copy.
    let dropped_metric = format!("k2_kafka_duplicates_dropped_total{{topic=\"{topic}\"}}");
    let mut v = loop {
        let dropped = common::metric(&f.http, &dropped_metric).unwrap_or(0.0) as i64;
        let mut v = read_iceberg(&data);
        if v["trades"]["rows"].as_i64().map(|rows| rows + dropped) == Some(total) {
            v["duplicates_dropped"] = dropped.into();
            break v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} rows and {dropped} dropped of {total} records; logs in {}",
            v["trades"]["rows"],
            kept.display()
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    f.stop();
    let _ = std::fs::remove_dir_all(&kept);
    v["total_records"] = total.into();
    v
}
