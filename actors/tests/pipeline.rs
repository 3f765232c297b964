//! The supervised pipeline in process: ordering, dedup, sequence metadata,
//! back-pressure, restarts after panics and stops, escalation, and the HTTP
//! health and metrics views of all of it.

mod common;

use std::time::Duration;

use common::trades;

use figment::providers::Env;
use k2::runtime::config::Config;
use k2::runtime::health::ActorState;
use k2::runtime::messages::Fault;
use k2::service::pipeline::Pipeline;
use k2::sinks::MemorySink;
use k2::transforms::dedup::MemoryStore;
use k2_core::MarketEvent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(edit: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k2.toml");
    std::fs::write(&file, edit).unwrap();
    Config::load_from(Some(&file), Env::prefixed("K2_TEST_UNSET__")).unwrap()
}

fn ids_of(events: &[MarketEvent]) -> Vec<i64> {
    events.iter().map(|e| e.source_sequence().unwrap()).collect()
}

fn start(config: &Config, sink: &MemorySink) -> Pipeline {
    let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
    Pipeline::builder(config, Box::new(sink.clone())).dedup(Box::new(store)).start()
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: k2\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let status = raw[9..12].parse().unwrap();
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

async fn http_post(addr: std::net::SocketAddr, path: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("POST {path} HTTP/1.1\r\nHost: k2\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    raw[9..12].parse().unwrap()
}

/// The body of `/health` is chunked on HTTP/1.1; pull the JSON object out.
fn json_of(body: &str) -> serde_json::Value {
    let start = body.find('{').unwrap();
    let end = body.rfind('}').unwrap();
    serde_json::from_str(&body[start..=end]).unwrap()
}

async fn wait_for(mut ok: impl FnMut() -> bool) {
    for _ in 0..200 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not met within 5 s");
}

#[test]
fn events_arrive_once_in_order_with_platform_sequence() {
    k2::runtime::run(|| async {
        let config = config("[pipeline]\nmailbox_capacity = 2\n");
        let sink = MemorySink::new();
        let pipeline = start(&config, &sink);
        // Duplicates inside and across batches, a reordered pair and a gap.
        pipeline.send(trades("BTCUSDT", [1, 2, 3, 3])).await.unwrap();
        pipeline.send(trades("BTCUSDT", [2, 5, 4, 6])).await.unwrap();
        pipeline.send(trades("ETHUSDT", [10, 11])).await.unwrap();
        pipeline.send(trades("BTCUSDT", 20..=400)).await.unwrap();
        pipeline.drain().await.unwrap();

        let got = sink.events();
        let btc: Vec<_> = got.iter().filter(|e| e.symbol() == "BTCUSDT").cloned().collect();
        let expected: Vec<i64> = [1, 2, 3, 5, 4, 6].into_iter().chain(20..=400).collect();
        assert_eq!(ids_of(&btc), expected, "every unique trade once, in arrival order");
        let platform: Vec<i64> = btc
            .iter()
            .map(|e| match e {
                MarketEvent::Trade(t) => t.platform_sequence.unwrap(),
                _ => unreachable!(),
            })
            .collect();
        // Platform numbers are assigned before dedup, so dropped duplicates
        // leave holes; what reaches the sink is strictly increasing.
        assert!(platform.windows(2).all(|w| w[0] < w[1]), "{platform:?}");
        assert_eq!(got.iter().filter(|e| e.symbol() == "ETHUSDT").count(), 2);

        let metrics = k2::runtime::telemetry::render();
        assert!(
            metrics.contains("k2_sequence_gaps_total{exchange=\"BINANCE\",symbol=\"BTCUSDT\",size=\"large\"}"),
            "{metrics}"
        );
        assert!(metrics.contains("k2_duplicates_total{exchange=\"BINANCE\"}"));
        let report = pipeline.registry().report();
        assert_eq!(report["sink"].events, got.len() as u64);
        assert!(report.values().all(|r| r.state == ActorState::Running && r.mailbox_depth == 0), "{report:?}");
    })
    .unwrap();
}

#[test]
fn panics_and_stops_are_restarted_without_losing_queued_batches() {
    k2::runtime::run(|| async {
        let config = config("[supervision]\nbackoff_initial = \"10ms\"\nbackoff_max = \"50ms\"\n[http]\nbind = \"127.0.0.1:0\"\nadmin = true\n");
        let sink = MemorySink::new();
        let pipeline = start(&config, &sink);
        let http = k2::service::http::start(config.http.bind, pipeline.registry().clone(), pipeline.faults().clone(), true, None, None).unwrap();

        pipeline.send(trades("BTCUSDT", 1..=100)).await.unwrap();
        assert_eq!(http_post(http.addr, "/admin/faults?actor=dedup&kind=panic").await, 202);
        pipeline.send(trades("BTCUSDT", 101..=200)).await.unwrap();
        pipeline.faults()["sequencer"].try_send(Fault::Stop).unwrap();
        pipeline.send(trades("BTCUSDT", 201..=300)).await.unwrap();
        pipeline.drain().await.unwrap();

        assert_eq!(ids_of(&sink.events()), (1..=300).collect::<Vec<_>>(), "nothing lost or doubled across restarts");
        let registry = pipeline.registry().clone();
        wait_for(|| registry.report().values().all(|r| r.state == ActorState::Running)).await;
        let report = registry.report();
        assert_eq!((report["dedup"].restarts, report["sequencer"].restarts, report["sink"].restarts), (1, 1, 0));
        assert!(report["dedup"].last_error.as_deref().unwrap().contains("injected panic"));

        let (status, body) = http_get(http.addr, "/health").await;
        assert_eq!(status, 200);
        let health = json_of(&body);
        assert_eq!(health["status"], "ok");
        assert_eq!(health["actors"]["dedup"]["restarts"], 1);
        let (status, metrics) = http_get(http.addr, "/metrics").await;
        assert_eq!(status, 200);
        // Series exist at 0 from the start (telemetry's catalogue): the
        // values are what tell.
        assert!(metrics.contains("k2_actor_restarts_total{actor=\"dedup\"} 1\n"), "{metrics}");
        assert!(metrics.contains("k2_actor_up{actor=\"sequencer\"} 1"));
        let latencies = metrics
            .lines()
            .find_map(|l| l.strip_prefix("k2_end_to_end_latency_seconds_count{stage=\"sink\"} "))
            .and_then(|n| n.parse::<u64>().ok());
        assert!(latencies.is_some_and(|n| n > 0), "no end-to-end latency recorded:\n{metrics}");
        assert_eq!(http_post(http.addr, "/admin/faults?actor=nobody&kind=panic").await, 400);
        http.handle.stop(true).await;
    })
    .unwrap();
}

#[test]
fn a_crash_loop_escalates_and_health_shows_it() {
    k2::runtime::run(|| async {
        let config = config("[supervision]\nmax_restarts = 2\nbackoff_initial = \"5ms\"\nbackoff_max = \"5ms\"\n[http]\nbind = \"127.0.0.1:0\"\n");
        let sink = MemorySink::new();
        let pipeline = start(&config, &sink);
        let http = k2::service::http::start(config.http.bind, pipeline.registry().clone(), pipeline.faults().clone(), false, None, None).unwrap();
        let sink_faults = pipeline.faults()["sink"].clone();
        let registry = pipeline.registry().clone();
        for restarts in 1..=2 {
            sink_faults.try_send(Fault::Panic).unwrap();
            wait_for(|| registry.report()["sink"].restarts == restarts && registry.report()["sink"].state == ActorState::Running).await;
        }
        sink_faults.try_send(Fault::Panic).unwrap();
        wait_for(|| registry.report()["sink"].state == ActorState::Failed).await;

        let (status, body) = http_get(http.addr, "/health").await;
        assert_eq!(status, 503);
        assert_eq!(json_of(&body)["status"], "failed");
        let (_, metrics) = http_get(http.addr, "/metrics").await;
        assert!(metrics.contains("k2_supervision_escalations_total{actor=\"sink\"} 1"), "{metrics}");
        assert!(metrics.contains("k2_actor_state{actor=\"sink\"} 3"));
        // Admin endpoints are off unless configured.
        assert_eq!(http_post(http.addr, "/admin/faults?actor=sink&kind=panic").await, 404);
    })
    .unwrap();
}
