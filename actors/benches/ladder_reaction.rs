//! Degradation ladder reaction time: from the moment the rows not yet
//! durable cross a trigger to the moment the level the stages read has
//! changed, for the default look interval (250 ms) and a short one (50 ms).
//! 20 rises each; the pressure is an in-process counter, so this measures
//! the controller, not how fast a real backlog builds (the degradation tests
//! log that: about 4 s from slowed commits to level 4 at 2,000 trades/s).
//!
//! `cargo bench -p k2 --bench ladder_reaction`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::Actor;
use k2::runtime::config::DegradationConfig;
use k2::runtime::degradation::{DegradationActor, Lag, Level, LevelHandle, SourceList};
use k2::runtime::health::HealthRegistry;
use k2::runtime::supervision::{Guardian, RestartPolicy, Supervision};

fn main() {
    k2::runtime::run(|| async {
        for interval in [Duration::from_millis(250), Duration::from_millis(50)] {
            let lag = Arc::new(AtomicU64::new(0));
            let level = LevelHandle::default();
            let config = DegradationConfig {
                interval,
                lag: Some([1000, 2000, 3000, 4000]),
                age: [3.0, 6.0, 12.0, 24.0],
                memory: [0.7, 0.8, 0.9, 0.95],
                memory_budget_mb: 0,
                mailbox: [0.5, 0.9],
                mailbox_for: Duration::from_secs(2),
                cool_down: Duration::ZERO,
                critical_symbols: Vec::new(),
            };
            let l = lag.clone();
            let registry = HealthRegistry::new();
            let guardian = Guardian::new(registry.clone(), Duration::from_secs(2)).0.start();
            let policy = RestartPolicy {
                max_restarts: 5,
                window: Duration::from_secs(60),
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_secs(10),
            };
            let supervision = Supervision::new(policy, registry.probe("degradation"), guardian.recipient());
            let _controller = DegradationActor::new(
                config,
                level.clone(),
                registry,
                Box::new(move || Lag { rows: l.load(Ordering::Relaxed), age: 0.0 }),
                1000,
                SourceList::default(),
                supervision,
            )
            .start();
            let mut reactions = Vec::new();
            for _ in 0..20 {
                lag.store(0, Ordering::Relaxed);
                while level.get() != Level::Normal {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                // Start at a random phase of the controller's interval.
                tokio::time::sleep(Duration::from_millis(rand::random_range(0..interval.as_millis() as u64))).await;
                let t0 = Instant::now();
                lag.store(2500, Ordering::Relaxed);
                while level.get() != Level::Graceful {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                reactions.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
            reactions.sort_by(f64::total_cmp);
            let mean = reactions.iter().sum::<f64>() / reactions.len() as f64;
            println!(
                "interval {} ms: pressure to level change mean {mean:.0} ms, median {:.0} ms, max {:.0} ms (20 rises)",
                interval.as_millis(),
                reactions[reactions.len() / 2],
                reactions[reactions.len() - 1]
            );
        }
    })
    .expect("runtime");
}
