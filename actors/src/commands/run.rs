//! `k2 run`: the service. Sources (live Binance by default) through the
//! supervised pipeline into the Iceberg tables, the `/v1` query API,
//! `/health` and `/metrics` on the HTTP port, until SIGINT/SIGTERM: then
//! sources stop, in-flight batches drain and are committed, exit 0.

use std::process::ExitCode;

use k2::runtime::config::Config;
use k2::service::{Service, Stop};

use super::CommandError;
use crate::cli::RunArgs;

pub fn run(args: RunArgs) -> Result<ExitCode, CommandError> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(dir) = args.data_dir {
        config.storage.data_dir = dir;
    }
    if let Some(role) = args.role {
        config.role = role;
        config.apply_role();
        config.validate()?;
    }
    if args.check_config {
        // Secrets show as <redacted>, and so does a password in a URL.
        println!("configuration is valid:\n{}", k2::runtime::config::mask_url_passwords(&format!("{config:#?}")));
        return Ok(ExitCode::SUCCESS);
    }
    k2::runtime::run(|| async move {
        let mut k2 = Service::builder(&config).start().await?;
        k2.start_sources();
        let http = k2.serve()?;
        let addr = http.addr;
        eprintln!("k2 run: http://{addr}/v1/trades  http://{addr}/health  http://{addr}/metrics");
        if let Some(replay) = k2.serve_replay()? {
            eprintln!("k2 run: replay ws://{replay}/stream?streams=<symbol>@trade&start=...");
        }
        if let Some(flight) = k2.serve_flight()? {
            eprintln!("k2 run: flight sql grpc://{flight}");
        }
        eprintln!("k2 run: tables in {}", k2.lake.describe());
        let escalated = tokio::select! {
            _ = k2::runtime::shutdown_signal() => None,
            why = k2.pipeline.escalated() => Some(why),
        };
        let stop = if escalated.is_some() { Stop::Escalated } else { Stop::Graceful };
        let report = k2.shutdown(stop).await;
        match report.delivered {
            None => eprintln!(
                "k2 run: stopped; {} trades and {} quotes accepted, {} rows not committed",
                report.trades, report.quotes, report.not_committed
            ),
            Some((trades, quotes)) => {
                eprintln!(
                    "k2 run: stopped; {} events delivered to Kafka ({trades} trades, {quotes} quotes)",
                    trades + quotes
                )
            }
        }
        Ok::<_, CommandError>(match escalated {
            Some(why) => {
                eprintln!("k2 run: {why}");
                ExitCode::from(k2::runtime::supervision::ESCALATION_EXIT_CODE as u8)
            }
            None => ExitCode::SUCCESS,
        })
    })?
}
