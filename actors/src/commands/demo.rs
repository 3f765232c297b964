//! `k2 demo`: everything offline in one process: the exchange simulator
//! (with faults on), the Binance connection actors pointed at it, their
//! order books, the supervised pipeline into Iceberg tables, and the HTTP
//! query API, until Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use k2::runtime::config::Config;
use k2::service::{Service, Stop};
use k2::sim::{DepthFaults, FaultPlan, SimConfig, Simulator};
use k2::state::books::GetBook;

use super::CommandError;
use crate::cli::DemoArgs;

pub fn run(args: DemoArgs) -> Result<ExitCode, CommandError> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(dir) = args.data_dir {
        config.storage.data_dir = dir;
    }
    config.flush.max_age = args.flush_every;
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
                depth: DepthFaults { skip_every: 2_003, duplicate_every: 499, stale_snapshot_every: 4 },
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
        config.book.enabled = true;
        let mut k2 = Service::builder(&config).start().await?;
        k2.start_binance();
        let http = k2.serve()?;
        let url = format!("http://{}", http.addr);
        println!("K2 demo: a simulated Binance feed ({} trades/s over 3 symbols, with gaps, duplicates,", args.rate);
        println!("reordering and malformed frames) through the supervised pipeline into Iceberg tables");
        println!(
            "in {} (a snapshot every {:?}; rows are queryable before that).",
            k2.lake.describe(),
            args.flush_every
        );
        println!("API: {url}/v1  (description: {url}/openapi.json). Try:");
        println!("  curl -s '{url}/v1/trades?symbol=BTCUSDT&limit=5'");
        println!(
            "  curl -s '{url}/v1/bars?symbol=ETHUSDT&interval=1m&start=2020-01-01T00:00:00Z&end=2030-01-01T00:00:00Z'"
        );
        println!("  curl -s '{url}/v1/snapshots?table=trades'");
        println!("  curl -s '{url}/v1/book/BTCUSDT?depth=10'");
        println!("Also {url}/health and {url}/metrics. Ctrl-C to stop.");
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        let stop =
            tokio::time::sleep(if args.seconds == 0 { Duration::MAX / 4 } else { Duration::from_secs(args.seconds) });
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = k2::runtime::shutdown_signal() => break,
                _ = &mut stop => break,
                _ = tick.tick() => {
                    let (trades, quotes) = (k2.tails.trades.appended(), k2.tails.quotes.appended());
                    let committed = k2.tails.trades.committed_generation();
                    let s = sim.stats.snapshot();
                    println!("k2 demo: {trades} trades and {quotes} quotes in, {committed} trade snapshots; simulator injected {} gaps, {} duplicates, {} malformed", s.gaps, s.duplicates, s.malformed);
                    if let Some(actor) = k2.api.books.find("BTCUSDT")
                        && let Ok(Some(book)) = actor.send(GetBook { symbol: "BTCUSDT".into(), depth: 1 }).await
                    {
                        match (book.update_id, book.bids.first(), book.asks.first()) {
                            (Some(id), Some(bid), Some(ask)) => println!(
                                "k2 demo: BTCUSDT book synced at update {id}: best bid {} x {}, best ask {} x {}; the simulator skipped {} depth events and served {} stale snapshots",
                                bid[0], bid[1], ask[0], ask[1], s.depth_skipped, s.stale_snapshots
                            ),
                            _ => println!(
                                "k2 demo: BTCUSDT book unsynced ({}), resyncing",
                                book.unsynced_cause.unwrap_or("start")
                            ),
                        }
                    }
                }
            }
        }
        let tables = k2.lake.describe().to_owned();
        // The sources stop before the simulator does, so nothing reads a
        // closing exchange as a fault.
        let report = k2.shutdown(Stop::Graceful).await;
        sim.stop().await;
        println!(
            "k2 demo: stopped; {} trades and {} quotes accepted into {tables}, {} rows not committed",
            report.trades, report.quotes, report.not_committed
        );
        Ok::<_, CommandError>(ExitCode::SUCCESS)
    })?
}
