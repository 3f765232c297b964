//! `k2 run`: the service. Sources (live Binance by default) through the
//! supervised pipeline, `/health` and `/metrics` on the HTTP port, until
//! SIGINT/SIGTERM: then sources stop, in-flight batches drain, exit 0.

use std::process::ExitCode;

use k2::config::Config;
use k2::dedup::MemoryStore;
use k2::health::HealthRegistry;
use k2::pipeline::Pipeline;
use k2::sink::CountingSink;

use super::CommandError;
use crate::cli::RunArgs;

pub fn run(args: RunArgs) -> Result<ExitCode, CommandError> {
    let config = Config::load(args.config.as_deref())?;
    if args.check_config {
        println!("configuration is valid");
        return Ok(ExitCode::SUCCESS);
    }
    k2::runtime::run(|| async move {
        let sink = CountingSink::new();
        let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
        let mut pipeline = Pipeline::start(&config, Box::new(sink.clone()), Box::new(store), HealthRegistry::new());
        let connections = if config.binance.enabled { pipeline.start_binance(&config) } else { Vec::new() };
        let http = k2::http::start(
            config.http.bind,
            pipeline.registry().clone(),
            pipeline.faults().clone(),
            config.http.admin,
        )?;
        eprintln!("k2 run: http://{}/health  http://{}/metrics", http.addr, http.addr);
        let escalated = tokio::select! {
            _ = k2::runtime::shutdown_signal() => None,
            why = pipeline.escalated() => Some(why),
        };
        for c in &connections {
            let _ = c.send(k2::binance::connection::StopSource).await;
        }
        if escalated.is_none() {
            // Everything read before the sources stopped reaches the sink.
            let _ = pipeline.drain().await;
        }
        http.handle.stop(true).await;
        let (trades, quotes) = sink.counts();
        eprintln!("k2 run: stopped; {trades} trades and {quotes} quotes reached the sink");
        Ok::<_, std::io::Error>(match escalated {
            Some(why) => {
                eprintln!("k2 run: {why}");
                ExitCode::from(k2::supervision::ESCALATION_EXIT_CODE as u8)
            }
            None => ExitCode::SUCCESS,
        })
    })?
    .map_err(CommandError::from)
}
