//! `k2 demo`: everything offline in one process: the exchange simulator
//! (with faults on), the Binance connection actors pointed at it, the
//! supervised pipeline and the HTTP server, until Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use k2::config::Config;
use k2::dedup::MemoryStore;
use k2::health::HealthRegistry;
use k2::pipeline::Pipeline;
use k2::sim::{FaultPlan, SimConfig, Simulator};
use k2::sink::CountingSink;

use super::CommandError;
use crate::cli::DemoArgs;

pub fn run(args: DemoArgs) -> Result<ExitCode, CommandError> {
    let mut config = Config::load(args.config.as_deref())?;
    k2::runtime::run(|| async move {
        let sim = Simulator::start(SimConfig {
            rate: args.rate,
            faults: FaultPlan {
                gap_every: 2_000,
                gap_size: 3,
                duplicate_every: 997,
                reorder_every: 1_499,
                malformed_every: 10_007,
                shutdown_grace: Duration::from_secs(2),
                ..FaultPlan::default()
            },
            ..SimConfig::default()
        })
        .await?;
        config.binance.endpoint = sim.ws_url();
        config.binance.alternate_endpoint = sim.ws_url();
        config.binance.rest_endpoint = sim.rest_url();
        config.binance.symbols = vec!["btcusdt".into(), "ethusdt".into(), "bnbusdt".into()];
        config.binance.sample_data = true;
        let sink = CountingSink::new();
        let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
        let mut pipeline = Pipeline::start(&config, Box::new(sink.clone()), Box::new(store), HealthRegistry::new());
        pipeline.start_binance(&config);
        let http = k2::http::start(config.http.bind, pipeline.registry().clone(), pipeline.faults().clone(), config.http.admin)?;
        println!("K2 demo: a simulated Binance feed ({} trades/s over 3 symbols, with gaps, duplicates,", args.rate);
        println!("reordering and malformed frames) through the supervised pipeline. Try:");
        println!("  curl -s http://{}/health", http.addr);
        println!("  curl -s http://{}/metrics | grep -E '^k2_(sequence|duplicates|gap_recovery|binance)'", http.addr);
        println!("  curl -s {}/sim/stats", sim.rest_url());
        println!("Ctrl-C to stop.");
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        let stop = tokio::time::sleep(if args.seconds == 0 { Duration::MAX / 4 } else { Duration::from_secs(args.seconds) });
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = k2::runtime::shutdown_signal() => break,
                _ = &mut stop => break,
                _ = tick.tick() => {
                    let (trades, quotes) = sink.counts();
                    let s = sim.stats.snapshot();
                    println!("k2 demo: {trades} trades and {quotes} quotes in; simulator injected {} gaps, {} duplicates, {} malformed", s.gaps, s.duplicates, s.malformed);
                }
            }
        }
        let _ = pipeline.drain().await;
        http.handle.stop(true).await;
        sim.stop().await;
        let (trades, quotes) = sink.counts();
        println!("k2 demo: stopped; {trades} trades and {quotes} quotes reached the sink");
        Ok::<_, std::io::Error>(ExitCode::SUCCESS)
    })?
    .map_err(CommandError::from)
}
