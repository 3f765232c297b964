//! Dedup and sequence state in a real Redis (127.0.0.1:6379, or
//! `K2_TEST_REDIS`; `.ci/run` starts one when none answers): a restarted
//! instance drops the overlap without false gaps, two instances pass each
//! trade once, an instance that dies before its rows are durable leaves them
//! to the other, marks follow durability, and a Redis that goes away means a
//! fallback to memory, an open breaker, and the marks written back when it
//! returns.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::trades;

use figment::providers::Env;
use k2::runtime::config::Config;
use k2::runtime::health::HealthRegistry;
use k2::service::pipeline::Pipeline;
use k2::sinks::{MemorySink, Pending, Sink, SinkError};
use k2::state::marks::SequenceMarks;
use k2::state::shared::{Claim, Settlement, SharedState};
use k2::transforms::dedup::MemoryStore;
use k2_core::MarketEvent;

fn redis_url() -> String {
    std::env::var("K2_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn config(url: &str, extra: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k2.toml");
    let prefix = format!("k2test:{}:", uuid::Uuid::new_v4().simple());
    std::fs::write(
        &file,
        format!("[gap_recovery]\nenabled = false\n[redis]\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n{extra}"),
    )
    .unwrap();
    Config::load_from(Some(&file), Env::prefixed("K2_TEST_UNSET__")).unwrap()
}

fn ids_of(events: &[MarketEvent]) -> Vec<i64> {
    events.iter().map(|e| e.source_sequence().unwrap()).collect()
}

/// A handle on the configured Redis, as one K2 instance holds it.
fn shared_state(config: &Config, registry: &HealthRegistry) -> Arc<SharedState> {
    SharedState::new(&config.redis, config.dedup.window, registry.breaker("redis", &config.breakers)).unwrap()
}

async fn start(config: &Config, sink: &MemorySink, registry: &HealthRegistry) -> (Pipeline, Arc<SharedState>) {
    start_with(config, Box::new(sink.clone()), registry).await
}

async fn start_with(config: &Config, sink: Box<dyn Sink>, registry: &HealthRegistry) -> (Pipeline, Arc<SharedState>) {
    let shared = shared_state(config, registry);
    let mut restore = SequenceMarks::default();
    // Nothing to restore is fine; Redis being down is not expected here.
    let _ = shared.restore_into(&mut restore).await;
    let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
    let pipeline = Pipeline::builder(config, sink)
        .dedup(Box::new(store))
        .shared(Some(shared.clone()))
        .registry(registry.clone())
        .restored(restore)
        .start();
    (pipeline, shared)
}

fn metric(name_and_labels: &str) -> Option<f64> {
    k2::runtime::telemetry::render().lines().find(|l| l.starts_with(name_and_labels))?.rsplit(' ').next()?.parse().ok()
}

async fn hget(url: &str, key: &str, field: &str) -> Option<i64> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    redis::cmd("HGET").arg(key).arg(field).query_async(&mut conn).await.ok()?
}

/// A second run of K2 on the same Redis drops what the first already took
/// and, continuing from the first run's high-water mark, reports no gap.
#[test]
fn a_restarted_instance_drops_the_overlap_and_reports_no_false_gaps() {
    let config = config(&redis_url(), "");
    k2::runtime::run(|| async move {
        let sink = MemorySink::default();
        let registry = HealthRegistry::new();
        let (first, _) = start(&config, &sink, &registry).await;
        first.send(trades("BTCUSDT", 1..=100)).await.unwrap();
        first.drain().await.unwrap();
        assert_eq!(ids_of(&sink.events()), (1..=100).collect::<Vec<_>>());
        // Marks are written off the batch path; give them a moment.
        let key = format!("{}seq:BINANCE", config.redis.key_prefix);
        for _ in 0..100 {
            if hget(&redis_url(), &key, "BTCUSDT").await == Some(100) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(hget(&redis_url(), &key, "BTCUSDT").await, Some(100));

        // The restart: fresh memory, the same Redis, an overlapping replay.
        let again = MemorySink::default();
        let (second, _) = start(&config, &again, &registry).await;
        second.send(trades("BTCUSDT", 51..=150)).await.unwrap();
        second.drain().await.unwrap();
        assert_eq!(ids_of(&again.events()), (101..=150).collect::<Vec<_>>());
        let rendered = k2::runtime::telemetry::render();
        assert!(!rendered.contains("k2_sequence_gaps_total"), "a false gap was reported:\n{rendered}");
        assert!(metric("k2_duplicates_total{exchange=\"BINANCE\"}").is_some_and(|n| n >= 50.0), "{rendered}");
    })
    .unwrap();
}

/// Two instances on the same stream (active-active), one Redis: every trade
/// goes on from exactly one of them.
#[test]
fn two_instances_on_one_stream_pass_each_trade_once() {
    let config = config(&redis_url(), "");
    k2::runtime::run(|| async move {
        let (a_sink, b_sink) = (MemorySink::default(), MemorySink::default());
        let (a, _) = start(&config, &a_sink, &HealthRegistry::new()).await;
        let (b, _) = start(&config, &b_sink, &HealthRegistry::new()).await;
        // Both receive the whole stream; which one sees a batch first
        // alternates, and that one passes it on.
        let ids: Vec<u64> = (1..=2000).collect();
        for (i, chunk) in ids.chunks(100).enumerate() {
            let (first, second) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
            first.send(trades("ETHUSDT", chunk.iter().copied())).await.unwrap();
            first.drain().await.unwrap();
            second.send(trades("ETHUSDT", chunk.iter().copied())).await.unwrap();
            second.drain().await.unwrap();
        }
        let from_a = ids_of(&a_sink.events());
        let from_b = ids_of(&b_sink.events());
        let chunks = |parity: usize| -> Vec<i64> {
            ids.chunks(100)
                .enumerate()
                .filter(|(i, _)| i % 2 == parity)
                .flat_map(|(_, c)| c.iter().map(|&t| t as i64))
                .collect()
        };
        assert_eq!(from_a, chunks(0));
        assert_eq!(from_b, chunks(1));
    })
    .unwrap();
}

/// A sink whose rows become durable only when the test says so (as the
/// tails do at a commit): until then a crash would lose them.
#[derive(Clone, Default)]
struct HeldSink {
    held: Arc<std::sync::Mutex<Vec<MarketEvent>>>,
    settle: Arc<std::sync::OnceLock<Arc<SharedState>>>,
}

impl HeldSink {
    fn make_durable(&self) {
        let held = std::mem::take(&mut *self.held.lock().unwrap());
        self.settle.get().unwrap().settle(Settlement::of(&held));
    }
}

impl Sink for HeldSink {
    fn name(&self) -> &'static str {
        "held"
    }

    fn write(&mut self, events: Vec<MarketEvent>) -> Result<Option<Pending>, SinkError> {
        self.held.lock().unwrap().extend(events);
        Ok(None)
    }

    fn settle_with(&mut self, settle: Arc<SharedState>) -> bool {
        let _ = self.settle.set(settle);
        true
    }
}

fn claim_ids(events: &[MarketEvent]) -> Vec<(&str, uuid::Uuid)> {
    events.iter().map(|e| (e.exchange(), e.message_id())).collect()
}

/// Instance A claims trades and dies before they are durable (the crash the
/// claims used to lose data in). Instance B, on the same stream, holds them
/// while A's lease lasts, then takes them over: each trade once, none lost.
#[test]
fn ids_claimed_by_an_instance_that_dies_before_durability_pass_to_another() {
    let config = config(&redis_url(), "lease = \"1500ms\"\n");
    k2::runtime::run(|| async move {
        let registry = HealthRegistry::new();
        let a = shared_state(&config, &registry);
        let first_half = trades("SOLUSDT", 1..=50);
        let claims = a.claim(&claim_ids(&first_half)).await.unwrap();
        assert!(claims.iter().all(|c| *c == Claim::Mine), "{claims:?}");

        let sink = MemorySink::default();
        let (b, _) = start(&config, &sink, &registry).await;
        b.send(trades("SOLUSDT", 1..=100)).await.unwrap();
        b.drain().await.unwrap();
        // While A is alive (its heartbeat renews the lease however long B
        // took to start), its ids wait.
        assert_eq!(ids_of(&sink.events()), (51..=100).collect::<Vec<_>>());
        // The crash: A's memory (its copy of 1..=50) is gone, its liveness
        // key runs out after the lease.
        drop(a);
        for _ in 0..100 {
            if sink.len() >= 100 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut ids = ids_of(&sink.events());
        ids.sort_unstable();
        assert_eq!(ids, (1..=100).collect::<Vec<_>>(), "every trade once, A's included");
        assert_eq!(metric("k2_dedup_deferred "), Some(0.0));
    })
    .unwrap();
}

/// B stops while holding ids A claimed: a stop does not end with them in
/// B's memory. When A has died they pass to B within A's lease; when A
/// lives but never settles them, they go on at the stop's deadline as
/// possible second copies (counted), never lost.
#[test]
fn a_stopping_instance_passes_on_what_it_held_for_others() {
    let config = config(&redis_url(), "lease = \"1s\"\n");
    k2::runtime::run(|| async move {
        let registry = HealthRegistry::new();
        let dead = shared_state(&config, &registry);
        let alive = shared_state(&config, &registry);
        assert!(dead.claim(&claim_ids(&trades("XRPUSDT", 1..=40))).await.unwrap().iter().all(|c| *c == Claim::Mine));
        assert!(alive.claim(&claim_ids(&trades("XRPUSDT", 41..=60))).await.unwrap().iter().all(|c| *c == Claim::Mine));

        let sink = MemorySink::default();
        let (b, _) = start(&config, &sink, &registry).await;
        b.send(trades("XRPUSDT", 1..=100)).await.unwrap();
        b.drain().await.unwrap();
        assert_eq!(ids_of(&sink.events()), (61..=100).collect::<Vec<_>>(), "claimed ids wait");
        let released = metric("k2_dedup_deferred_released_total ").unwrap_or(0.0);
        // The crash of one owner; the other lives on and never settles.
        drop(dead);
        let started = std::time::Instant::now();
        b.drain_settling(started + Duration::from_secs(4)).await.unwrap();
        let waited = started.elapsed();
        let mut ids = ids_of(&sink.events());
        ids.sort_unstable();
        assert_eq!(ids, (1..=100).collect::<Vec<_>>(), "every trade once when the stop's drain returns");
        assert!(waited >= Duration::from_secs(4), "the live owner's ids waited for the deadline: {waited:?}");
        assert_eq!(metric("k2_dedup_deferred_released_total ").unwrap_or(0.0) - released, 20.0);
        assert_eq!(metric("k2_dedup_deferred "), Some(0.0));
        drop(alive);
    })
    .unwrap();
}

/// A releases the claims of records it could not deliver: B, which held
/// them as pending, claims them at once. A release touches only what A still
/// holds: ids made durable, or taken over by B, stay as they are.
#[test]
fn released_claims_pass_to_another_instance_at_once() {
    let config = config(&redis_url(), "lease = \"10s\"\n");
    k2::runtime::run(|| async move {
        let registry = HealthRegistry::new();
        let (a, b) = (shared_state(&config, &registry), shared_state(&config, &registry));
        let events = trades("ADAUSDT", 1..=30);
        let ids = claim_ids(&events);
        assert!(a.claim(&ids).await.unwrap().iter().all(|c| *c == Claim::Mine));
        assert!(b.claim(&ids).await.unwrap().iter().all(|c| *c == Claim::Pending));
        // 1..=10 become durable; 11..=30 were not delivered.
        a.write_settlement(&Settlement::of(&events[..10])).await.unwrap();
        let undelivered: Vec<_> = events[10..].iter().map(|e| (e.exchange().into(), e.message_id())).collect();
        assert_eq!(a.write_release(&undelivered).await.unwrap(), 20);
        let answers = b.claim(&ids).await.unwrap();
        assert!(answers[..10].iter().all(|c| *c == Claim::Taken), "{answers:?}");
        assert!(answers[10..].iter().all(|c| *c == Claim::Mine), "{answers:?}");
        // B holds them now: A releasing again frees nothing.
        assert_eq!(a.write_release(&undelivered).await.unwrap(), 0);
        assert!(b.claim(&ids[10..]).await.unwrap().iter().all(|c| *c == Claim::Taken));
    })
    .unwrap();
}

/// While A's copy is in flight B holds the same ids; once A's copy is
/// durable B drops them as duplicates.
#[test]
fn ids_another_instance_makes_durable_are_dropped_after_waiting() {
    let config = config(&redis_url(), "lease = \"10s\"\n");
    k2::runtime::run(|| async move {
        let registry = HealthRegistry::new();
        let a = shared_state(&config, &registry);
        let first_half = trades("ADAUSDT", 1..=50);
        let claims = a.claim(&claim_ids(&first_half)).await.unwrap();
        assert!(claims.iter().all(|c| *c == Claim::Mine), "{claims:?}");

        let sink = MemorySink::default();
        let (b, _) = start(&config, &sink, &registry).await;
        b.send(trades("ADAUSDT", 1..=100)).await.unwrap();
        b.drain().await.unwrap();
        assert_eq!(ids_of(&sink.events()), (51..=100).collect::<Vec<_>>());
        assert_eq!(metric("k2_dedup_deferred "), Some(50.0));

        a.write_settlement(&Settlement::of(&first_half)).await.unwrap();
        for _ in 0..100 {
            if metric("k2_dedup_deferred ") == Some(0.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(metric("k2_dedup_deferred "), Some(0.0));
        assert_eq!(ids_of(&sink.events()), (51..=100).collect::<Vec<_>>(), "A's trades were passed on twice");
    })
    .unwrap();
}

/// The shared high-water mark moves only with durable rows: a mark raised
/// past rows held in memory would hide them from gap recovery after a crash.
#[test]
fn marks_reach_redis_only_once_the_rows_are_durable() {
    let config = config(&redis_url(), "");
    k2::runtime::run(|| async move {
        let sink = HeldSink::default();
        let (pipeline, _) = start_with(&config, Box::new(sink.clone()), &HealthRegistry::new()).await;
        pipeline.send(trades("XRPUSDT", 1..=40)).await.unwrap();
        pipeline.drain().await.unwrap();
        let key = format!("{}seq:BINANCE", config.redis.key_prefix);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(hget(&redis_url(), &key, "XRPUSDT").await, None, "a mark ran ahead of durability");

        sink.make_durable();
        for _ in 0..100 {
            if hget(&redis_url(), &key, "XRPUSDT").await == Some(40) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(hget(&redis_url(), &key, "XRPUSDT").await, Some(40));
    })
    .unwrap();
}

/// A redis-server of the test's own, on a spare port, without persistence.
struct OwnRedis {
    port: u16,
    process: Option<std::process::Child>,
}

impl OwnRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut r = Self { port, process: None };
        r.restart();
        r
    }

    fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.process = Some(child);
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Redis stops mid-run: ingestion goes on with this instance's memory, the
/// breaker opens and the fallback shows; Redis returns (empty): the breaker
/// closes and the marks seen meanwhile are written back.
#[test]
fn redis_going_away_falls_back_to_memory_and_writes_the_marks_back() {
    let mut redis_server = OwnRedis::start();
    let url = redis_server.url();
    let config = config(&url, "[breakers]\nfailures = 2\nwindow = \"30s\"\ncool_down = \"300ms\"\nsuccesses = 1\n");
    k2::runtime::run(|| async move {
        let sink = MemorySink::default();
        let registry = HealthRegistry::new();
        let (pipeline, shared) = start(&config, &sink, &registry).await;
        pipeline.send(trades("BNBUSDT", 1..=10)).await.unwrap();
        pipeline.drain().await.unwrap();
        assert!(!shared.is_falling_back());

        redis_server.kill();
        for k in 0..5u64 {
            pipeline.send(trades("BNBUSDT", 11 + k * 4..15 + k * 4)).await.unwrap();
            pipeline.drain().await.unwrap();
        }
        // Nothing was lost and nothing doubled while Redis was away.
        pipeline.send(trades("BNBUSDT", [12, 13])).await.unwrap();
        pipeline.drain().await.unwrap();
        assert_eq!(ids_of(&sink.events()), (1..=30).collect::<Vec<_>>());
        assert!(shared.is_falling_back());
        assert_eq!(metric("k2_state_fallback{store=\"redis\"}"), Some(1.0));
        assert_eq!(metric("k2_circuit_breaker_state{dependency=\"redis\"}"), Some(1.0));

        redis_server.restart();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let key = format!("{}seq:BINANCE", config.redis.key_prefix);
        let mut next = 31u64;
        while hget(&url, &key, "BNBUSDT").await.is_none_or(|h| h < 30) {
            assert!(next < 200, "the marks were not written back");
            pipeline.send(trades("BNBUSDT", [next])).await.unwrap();
            pipeline.drain().await.unwrap();
            next += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!shared.is_falling_back());
        assert_eq!(metric("k2_state_fallback{store=\"redis\"}"), Some(0.0));
        assert_eq!(metric("k2_circuit_breaker_state{dependency=\"redis\"}"), Some(0.0));
    })
    .unwrap();
}
