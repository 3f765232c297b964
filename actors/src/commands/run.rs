//! `k2 run`: the service. Sources (live Binance by default) through the
//! supervised pipeline into the Iceberg tables, the `/v1` query API,
//! `/health` and `/metrics` on the HTTP port, until SIGINT/SIGTERM: then
//! sources stop, in-flight batches drain and are committed, exit 0.

use std::process::ExitCode;

use k2::config::Config;
use k2::dedup::MemoryStore;
use k2::health::HealthRegistry;
use k2::lakehouse::Lakehouse;

use super::CommandError;
use crate::cli::RunArgs;

pub fn run(args: RunArgs) -> Result<ExitCode, CommandError> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(dir) = args.data_dir {
        config.storage.data_dir = dir;
    }
    if args.check_config {
        println!("configuration is valid");
        return Ok(ExitCode::SUCCESS);
    }
    k2::runtime::run(|| async move {
        let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
        let mut k2 = Lakehouse::start(&config, Box::new(store), HealthRegistry::new()).await?;
        let connections = if config.binance.enabled { k2.pipeline.start_binance(&config) } else { Vec::new() };
        let http = k2.serve(&config)?;
        let addr = http.addr;
        eprintln!("k2 run: http://{addr}/v1/trades  http://{addr}/health  http://{addr}/metrics");
        eprintln!("k2 run: tables in {}", k2.lake.describe());
        let escalated = tokio::select! {
            _ = k2::runtime::shutdown_signal() => None,
            why = k2.pipeline.escalated() => Some(why),
        };
        for c in &connections {
            let _ = c.send(k2::binance::connection::StopSource).await;
        }
        if escalated.is_none() {
            // Everything read before the sources stopped is committed. Gap
            // recovery may still deliver trades a moment later: flush again
            // while rows arrive, for a few rounds.
            for _ in 0..10 {
                // Rows spilled under pressure (level 3, embedded mode only)
                // go in too.
                if config.mode == k2::config::Mode::Embedded {
                    k2.unspill().await;
                }
                let _ = k2.flush().await;
                if k2.tails.waiting_rows() == 0 && k2.spill.is_empty() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            k2.release_spill();
        }
        if let Some(shared) = &k2.shared
            && !shared.settled(std::time::Duration::from_secs(10)).await
        {
            tracing::warn!("redis did not take the last settlements; a restart may pass those rows on twice");
        }
        http.handle.stop(true).await;
        match config.mode {
            k2::config::Mode::Embedded => {
                let (trades, quotes) = (k2.tails.trades.appended(), k2.tails.quotes.appended());
                let waiting = k2.tails.waiting_rows();
                eprintln!(
                    "k2 run: stopped; {trades} trades and {quotes} quotes accepted, {waiting} rows not committed"
                );
            }
            k2::config::Mode::Kafka => {
                let sent = k2::telemetry::render()
                    .lines()
                    .filter(|l| l.starts_with("k2_kafka_messages_produced_total{"))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                    .sum::<u64>();
                eprintln!("k2 run: stopped; {sent} events delivered to Kafka");
            }
        }
        Ok::<_, CommandError>(match escalated {
            Some(why) => {
                eprintln!("k2 run: {why}");
                ExitCode::from(k2::supervision::ESCALATION_EXIT_CODE as u8)
            }
            None => ExitCode::SUCCESS,
        })
    })?
}
