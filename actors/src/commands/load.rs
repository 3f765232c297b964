//! `k2 load`: batch files through the sequence tracker and deduplicator into
//! the Iceberg tables, with a progress display and a summary.

use std::io::Write;
use std::process::ExitCode;

use k2::runtime::config::Config;
use k2::service::{Service, Stop};
use k2_core::source::asx::AsxOptions;
use k2_core::source::files::discover;
use serde::Serialize;

use super::CommandError;
use crate::cli::LoadArgs;

#[derive(Serialize)]
struct Summary {
    files: usize,
    read: u64,
    accepted_trades: u64,
    accepted_quotes: u64,
    duplicates_dropped: u64,
    rejected: u64,
    rejected_by_reason: std::collections::BTreeMap<String, u64>,
    first_rejected: Vec<k2_core::source::Rejected>,
    seconds: f64,
    data_dir: String,
    /// Where the tables are (the data directory unless `[storage]` says
    /// otherwise); for people, so the JSON stays as it was.
    #[serde(skip)]
    tables: String,
    trades_snapshot_id: Option<i64>,
    quotes_snapshot_id: Option<i64>,
}

pub fn run(args: LoadArgs) -> Result<ExitCode, CommandError> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(dir) = args.data_dir.clone() {
        config.storage.data_dir = dir;
    }
    let found = discover(&args.paths, args.format.into())?;
    let asx = AsxOptions {
        timezone: config.asx.timezone,
        is_sample_data: args.sample_data,
        company_info: args.company_info.clone(),
    };
    let show_progress = !args.json;
    let summary = k2::runtime::run(|| async move {
        // A file can wait: the load is paced by the flusher, never shed.
        let k2 = Service::builder(&config).batch().start().await.map_err(|e| e.to_string())?;
        // The load is paced by commits: when a commit fails in a way retrying
        // cannot fix, no room will come, so stop reading and report why.
        let loaded = tokio::select! {
            loaded = k2::sources::loader::load(found.files, asx, k2.pipeline.entrance(), show_progress) => Some(loaded),
            _ = k2.blocked() => None,
        };
        let Some(loaded) = loaded else {
            let stopped = k2.shutdown(Stop::GracefulUnlessBlocked).await;
            return Err(format!(
                "committing to the tables: {} rows not committed, after an error retrying cannot fix: {}",
                stopped.not_committed,
                stopped.blocked.unwrap_or_else(|| "(cleared meanwhile)".to_owned())
            ));
        };
        let mut report = loaded?;
        for skipped in found.skipped {
            report.rejected += 1;
            report.first_rejected.push(skipped);
        }
        let (lake, tails) = (k2.lake.clone(), k2.tails.clone());
        let stopped = k2.shutdown(Stop::GracefulUnlessBlocked).await;
        if let Some(error) = stopped.blocked {
            return Err(format!(
                "committing to the tables: {} rows not committed, {} spilled, after an error retrying cannot fix: {error}",
                stopped.not_committed, stopped.spilled
            ));
        }
        if stopped.not_committed > 0 || stopped.spilled > 0 {
            return Err(format!(
                "committing to the tables: {} rows not committed, {} still spilled",
                stopped.not_committed, stopped.spilled
            ));
        }
        // Accepted: into the tables (embedded) or into Kafka.
        let (trades, quotes) = stopped.delivered.unwrap_or((stopped.trades, stopped.quotes));
        // Every row read is accepted or a duplicate: anything else is a loss
        // and must not pass for a duplicate.
        let unaccounted = report.read.saturating_sub(trades + quotes + stopped.duplicates);
        if unaccounted > 0 || trades + quotes + stopped.duplicates > report.read {
            return Err(format!(
                "{unaccounted} of {} rows read were neither accepted nor dropped as duplicates ({trades} trades and {quotes} quotes accepted, {} duplicates); a stage failed on them: they are in the dead letters (`k2 dead-letters list`), to replay once the cause is fixed",
                report.read, stopped.duplicates
            ));
        }
        let snapshot = |t: iceberg::table::Table| t.metadata().current_snapshot_id();
        Ok::<_, String>(Summary {
            files: report.files,
            read: report.read,
            accepted_trades: trades,
            accepted_quotes: quotes,
            duplicates_dropped: stopped.duplicates,
            rejected: report.rejected,
            rejected_by_reason: report.rejected_by_reason,
            first_rejected: report.first_rejected,
            seconds: report.seconds,
            data_dir: lake.dir().display().to_string(),
            tables: lake.describe().to_owned(),
            trades_snapshot_id: snapshot(tails.trades.committed_table()),
            quotes_snapshot_id: snapshot(tails.quotes.committed_table()),
        })
    })?
    .map_err(CommandError::Pipeline)?;

    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &summary).map_err(std::io::Error::from)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rate = summary.read as f64 / summary.seconds.max(1e-9);
    writeln!(out, "files               {}", summary.files)?;
    writeln!(out, "read                {} ({rate:.0} rows/s)", summary.read)?;
    writeln!(out, "accepted trades     {}", summary.accepted_trades)?;
    writeln!(out, "accepted quotes     {}", summary.accepted_quotes)?;
    writeln!(out, "duplicates dropped  {}", summary.duplicates_dropped)?;
    writeln!(out, "rejected            {}", summary.rejected)?;
    writeln!(
        out,
        "committed to        {} (trades snapshot {:?}, quotes snapshot {:?})",
        summary.tables, summary.trades_snapshot_id, summary.quotes_snapshot_id
    )?;
    for (reason, n) in &summary.rejected_by_reason {
        writeln!(out, "  {n:>8}  {reason}")?;
    }
    Ok(ExitCode::SUCCESS)
}
