//! `k2 maintain`: one maintenance round against a data directory, planned
//! first (printed), then done (printed) unless `--dry-run`.

use std::io::Write;
use std::process::ExitCode;

use k2::lake::books::tables::BookTable;
use k2::lake::maintenance::{Maintained, Maintainer, TableReport};
use k2::lake::{Access, Lake, TableKind};
use k2::runtime::config::{Config, Mode};

use super::CommandError;
use crate::cli::{MaintainArgs, TableArg};

pub fn run(args: MaintainArgs) -> Result<ExitCode, CommandError> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(dir) = args.data_dir.clone() {
        config.storage.data_dir = dir;
    }
    let named = !args.table.is_empty();
    let mut kinds: Vec<Maintained> = args
        .table
        .iter()
        .map(|t| match t {
            TableArg::Trades => Maintained::Rows(TableKind::Trades),
            TableArg::Quotes => Maintained::Rows(TableKind::Quotes),
            TableArg::BookUpdates => Maintained::Book(BookTable::Updates),
            TableArg::BookSnapshots => Maintained::Book(BookTable::Snapshots),
        })
        .collect();
    if kinds.is_empty() {
        kinds = Maintained::ALL.to_vec();
    }
    kinds.dedup();
    let dry_run = args.dry_run;
    let (planned, done) = k2::runtime::run(|| async move {
        // Kafka mode's flushers share the tables, and maintenance commits
        // like one of them; an embedded `k2 run` owns its directory (and
        // maintains it itself).
        let access = if config.mode == Mode::Kafka { Access::Shared } else { Access::Exclusive };
        let lake = Lake::open_with(&config.storage, access).await.map_err(|e| e.to_string())?;
        // Unnamed, the book tables are maintained where books are stored;
        // named, a table that does not exist is an error.
        if !named {
            kinds = k2::lake::maintenance::tables::existing(&lake, &kinds).await.map_err(|e| e.to_string())?;
        }
        let maintainer = Maintainer::new(lake, config.maintenance.clone(), config.http.request_timeout, None);
        let planned = maintainer.run(&kinds, true).await.map_err(|e| e.to_string())?;
        let done = if dry_run { None } else { Some(maintainer.run(&kinds, false).await.map_err(|e| e.to_string())?) };
        Ok::<_, String>((planned, done))
    })?
    .map_err(CommandError::Pipeline)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &serde_json::json!({ "planned": planned, "done": done }))
            .map_err(std::io::Error::from)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "would do:")?;
    for r in &planned {
        print_report(&mut out, r)?;
    }
    if let Some(done) = &done {
        writeln!(out, "did:")?;
        for r in done {
            print_report(&mut out, r)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(out: &mut impl Write, r: &TableReport) -> std::io::Result<()> {
    writeln!(
        out,
        "  {}: {} data files (at most {} in one day), {} snapshots",
        r.table, r.files_before, r.max_files_per_partition_before, r.snapshots_after
    )?;
    let d = &r.retention;
    if d.partitions.is_empty() {
        writeln!(out, "    retention:  nothing to drop")?;
    } else {
        writeln!(
            out,
            "    retention:  {} day partitions ({}), {} files, {} rows",
            d.partitions.len(),
            d.partitions.join(", "),
            d.files,
            d.rows
        )?;
    }
    if r.compaction.is_empty() {
        writeln!(out, "    compaction: nothing to compact")?;
    }
    for p in &r.compaction {
        let c = &p.done;
        let result = match (r.dry_run, c.snapshot_id, c.stale) {
            (true, _, _) => format!("{} groups", p.groups),
            (false, Some(id), _) => format!("{} files written, snapshot {id}", c.files_added),
            (false, None, true) => "skipped: its files changed meanwhile".to_owned(),
            (false, None, false) => "not committed".to_owned(),
        };
        writeln!(
            out,
            "    compaction: {}: {} files, {} rows, {} bytes: {result}",
            p.day, c.files_removed, c.rows, c.bytes_read
        )?;
    }
    writeln!(
        out,
        "    expiry:     {} snapshots, {} files{}",
        r.expired.snapshots,
        r.expired.files_deleted,
        if r.expired.kept_for_queries > 0 {
            format!(" ({} kept for queries)", r.expired.kept_for_queries)
        } else {
            String::new()
        }
    )?;
    match &r.orphans.skipped {
        Some(why) => writeln!(out, "    orphans:    skipped: {why}")?,
        None => writeln!(out, "    orphans:    {} files, {} bytes", r.orphans.found, r.orphans.bytes)?,
    }
    if !r.dry_run {
        writeln!(
            out,
            "    now:        {} data files (at most {} in one day), {:.1} s",
            r.files_after, r.max_files_per_partition_after, r.seconds
        )?;
    }
    Ok(())
}
