//! Dedup throughput: message ids through Redis on loopback (claims,
//! batches of 1,000, one pipelined round trip each) against the in-memory
//! window, same ids, one run; then settling them (marking them durable,
//! pipelines of 10,000), the second Redis write each id costs. Needs Redis on 127.0.0.1:6379 or
//! `K2_TEST_REDIS`.
//!
//! `cargo bench -p k2 --bench redis_dedup` (K2_BENCH_IDS, default 1,000,000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k2::runtime::breaker::CircuitBreaker;
use k2::runtime::config::{BreakerConfig, RedisConfig};
use k2::state::shared::{Claim, Settlement, SharedState};
use k2_core::transform::dedup::DedupWindow;

fn main() {
    let n: usize = std::env::var("K2_BENCH_IDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let url = std::env::var("K2_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let batch = 1000;
    let ids: Vec<uuid::Uuid> = (0..n as u64).map(|k| uuid::Uuid::from_u64_pair(0x6b32_6265_6e63, k)).collect();
    // The keys expire by themselves a minute after the run.
    let window = Duration::from_secs(60);

    let started = Instant::now();
    let mut memory = DedupWindow::new(window, n);
    let now = Instant::now();
    let fresh = ids.iter().filter(|id| memory.insert(**id, now)).count();
    let secs = started.elapsed().as_secs_f64();
    println!("in-memory window: {:.0} ids/s ({n} ids, {fresh} new, {secs:.3} s)", n as f64 / secs);

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let prefix = format!("k2bench:{}:", uuid::Uuid::new_v4().simple());
        let config = RedisConfig {
            url: url.clone(),
            timeout: Duration::from_secs(5),
            key_prefix: prefix.clone(),
            lease: Duration::from_secs(10),
        };
        let breaker = Arc::new(CircuitBreaker::new(
            "redis",
            BreakerConfig::new(5, Duration::from_secs(30), Duration::from_secs(10), 2),
        ));
        let shared = SharedState::new(&config, window, breaker).expect("redis client");
        let batches: Vec<Vec<(&str, uuid::Uuid)>> =
            ids.chunks(batch).map(|c| c.iter().map(|id| ("BINANCE", *id)).collect()).collect();
        // Claims slow down while Redis grows its key table: say how full it was.
        let keys: Option<i64> = match redis::Client::open(url.as_str()) {
            Ok(client) => match client.get_multiplexed_async_connection().await {
                Ok(mut conn) => redis::cmd("DBSIZE").query_async(&mut conn).await.ok(),
                Err(_) => None,
            },
            Err(_) => None,
        };
        println!("keys in redis before the run: {}", keys.map_or("unknown".into(), |k| k.to_string()));
        // Warm-up: the connection.
        shared.claim(&[("BINANCE", uuid::Uuid::new_v4())]).await.expect("redis answers");
        let started = Instant::now();
        let mut fresh = 0;
        for b in &batches {
            fresh += shared.claim(b).await.expect("claim").into_iter().filter(|c| *c == Claim::Mine).count();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "redis at {url}, pipelined batches of {batch}: {:.0} ids/s ({n} ids, {fresh} new, {secs:.2} s; target >= 200,000)",
            n as f64 / secs
        );
        // The same ids again: every one a duplicate.
        let started = Instant::now();
        let mut again = 0;
        for b in &batches {
            again += shared.claim(b).await.expect("claim").into_iter().filter(|c| *c == Claim::Mine).count();
        }
        let secs = started.elapsed().as_secs_f64();
        println!("redis, the same ids again: {:.0} ids/s ({again} taken as new; expected 0)", n as f64 / secs);
        let mut durable = Settlement::default();
        for id in &ids {
            durable.push_id("BINANCE", *id);
        }
        let started = Instant::now();
        shared.write_settlement(&durable).await.expect("settle");
        let secs = started.elapsed().as_secs_f64();
        println!("redis, settling them (pipelines of 10,000): {:.0} ids/s", n as f64 / secs);
    });
}
