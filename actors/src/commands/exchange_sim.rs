//! `k2 exchange-sim`: run the local exchange until Ctrl-C (or until a bounded
//! market is done), then print its exact counts as JSON.

use std::process::ExitCode;
use std::time::Duration;

use k2::sim::{DepthFaults, FaultPlan, SimConfig, Simulator};

use super::CommandError;
use crate::cli::ExchangeSimArgs;

pub fn run(args: ExchangeSimArgs) -> Result<ExitCode, CommandError> {
    let config = SimConfig {
        ws_bind: args.ws_bind,
        rest_bind: args.rest_bind,
        symbols: args.symbols.iter().map(|s| s.to_ascii_uppercase()).collect(),
        rate: args.rate,
        trades_per_symbol: args.trades,
        book_ticker_every: args.book_ticker_every,
        depth_every: args.depth_every,
        ping_interval: args.ping_interval.into(),
        first_trade_id: args.first_trade_id,
        seed: args.seed,
        replay: args.replay.clone(),
        hold_while_idle: args.hold_while_idle,
        faults: FaultPlan {
            gap_every: args.gap_every,
            gap_size: args.gap_size,
            duplicate_every: args.duplicate_every,
            reorder_every: args.reorder_every,
            malformed_every: args.malformed_every,
            disconnect_every: args.disconnect_every,
            shutdown_after: args.shutdown_after,
            shutdown_grace: args.shutdown_grace.into(),
            depth: DepthFaults {
                skip_every: args.depth_skip_every,
                duplicate_every: args.depth_duplicate_every,
                stale_snapshot_every: args.stale_snapshot_every,
            },
        },
    };
    let exit_when_done = args.exit_when_done;
    let stats = k2::runtime::run(|| async move {
        let sim = Simulator::start(config).await?;
        println!("{{\"ws\":\"{}\",\"rest\":\"{}\"}}", sim.ws_url(), sim.rest_url());
        eprintln!("k2 exchange-sim: WebSocket {}/stream?streams=btcusdt@trade  REST {}", sim.ws_url(), sim.rest_url());
        let market = sim.market.clone();
        tokio::select! {
            _ = k2::runtime::shutdown_signal() => {}
            _ = async {
                while !(exit_when_done && market.is_done()) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // Let the connections send what they hold.
                tokio::time::sleep(Duration::from_millis(500)).await;
            } => {}
        }
        let stats = sim.stats.snapshot();
        sim.stop().await;
        Ok::<_, std::io::Error>(stats)
    })??;
    println!("{}", serde_json::to_string(&stats).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}
