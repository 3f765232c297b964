//! Table maintenance, the upkeep Spark or Trino jobs do for other Iceberg
//! writers, built in and safe while ingestion goes on:
//!
//! - [`retention`]: day partitions older than the table's retention are
//!   dropped (`delete` snapshot);
//! - [`compact`]: small files of a day rewritten into large sorted ones
//!   (`replace` snapshot);
//! - [`expire`]: old snapshots expired, and the files only they reached
//!   deleted;
//! - [`orphans`]: files no snapshot names, older than a safety age, deleted.
//!
//! [`commit`] makes the snapshots iceberg-rust cannot make yet; [`live`]
//! reads what a snapshot holds. [`Maintainer`] runs the steps in that order
//! for `k2 maintain` and for the [`actor`] `k2 run` schedules.

pub mod actor;
pub mod commit;
pub mod compact;
pub mod expire;
pub mod live;
pub mod orphans;
pub mod retention;
pub mod tables;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::pins::Pins;
use super::writing::WritingFiles;
use super::{Lake, LakeError, TableKind, Tails};
use crate::runtime::config::MaintenanceConfig;
use compact::{Compacted, PartitionPlan};
use expire::{Expired, Keep};
use live::ManifestCache;
use orphans::Orphans;
use retention::Dropped;
pub use tables::Maintained;

/// What one round did (or, dry, would do) to one table.
#[derive(Debug, Default, Clone, Serialize)]
pub struct TableReport {
    pub table: &'static str,
    pub dry_run: bool,
    pub retention: Dropped,
    pub compaction: Vec<PartitionReport>,
    pub expired: Expired,
    pub orphans: Orphans,
    /// Live data files, and the most in one day partition, before and after.
    pub files_before: usize,
    pub files_after: usize,
    pub max_files_per_partition_before: usize,
    pub max_files_per_partition_after: usize,
    pub snapshots_after: usize,
    /// The whole round of this table.
    pub seconds: f64,
    /// Its compaction alone: planning, rewriting and committing.
    pub compaction_seconds: f64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct PartitionReport {
    pub day: String,
    pub groups: usize,
    #[serde(flatten)]
    pub done: Compacted,
}

/// Runs maintenance on a lake.
#[derive(Clone)]
pub struct Maintainer {
    lake: Lake,
    config: MaintenanceConfig,
    /// How long a query may run: what a query read this recently stays.
    lease: Duration,
    pins: Pins,
    writing: WritingFiles,
    /// `k2 run`'s tails, told of each maintenance snapshot so queries read
    /// it (absent for `k2 maintain`).
    tails: Option<Tails>,
    /// Set while a round runs: one at a time.
    busy: Arc<AtomicBool>,
}

impl Maintainer {
    pub fn new(lake: Lake, config: MaintenanceConfig, lease: Duration, tails: Option<Tails>) -> Self {
        let (pins, writing) = tails.as_ref().map(|t| (t.pins.clone(), t.writing.clone())).unwrap_or_default();
        Self { lake, config, lease, pins, writing, tails, busy: Arc::default() }
    }

    pub fn config(&self) -> &MaintenanceConfig {
        &self.config
    }

    /// One round over every table there is (the book tables where books
    /// are stored).
    pub async fn run_all(&self, dry_run: bool) -> Result<Vec<TableReport>, LakeError> {
        let kinds = tables::existing(&self.lake, &Maintained::ALL).await?;
        self.run(&kinds, dry_run).await
    }

    /// One round over `kinds`: retention, compaction, expiry, orphans.
    pub async fn run(&self, kinds: &[Maintained], dry_run: bool) -> Result<Vec<TableReport>, LakeError> {
        if self.busy.swap(true, Ordering::AcqRel) {
            return Err(LakeError::Task { what: "maintenance", reason: "a round is already running".into() });
        }
        let _busy = Busy(&self.busy);
        let mut out = Vec::new();
        for &kind in kinds {
            out.push(self.table(kind, dry_run).await?);
        }
        Ok(out)
    }

    async fn table(&self, kind: Maintained, dry_run: bool) -> Result<TableReport, LakeError> {
        let started = Instant::now();
        let name = kind.name();
        let mut report = TableReport { table: name, dry_run, ..TableReport::default() };
        // Every step of the round reads the table's manifests; each is
        // decoded once (a manifest never changes once written), where
        // before a round of a table of 720 flushes decoded them four times.
        let mut cache = ManifestCache::default();
        let (files, max) = self.file_counts(kind, &mut cache).await?;
        (report.files_before, report.max_files_per_partition_before) = (files, max);

        if let Some(&keep) = self.config.retention.get(name) {
            let t = Instant::now();
            report.retention =
                retention::drop_old(&self.lake, kind, keep, dry_run, self.lock(kind), &mut cache).await?;
            self.adopt(kind).await;
            seconds(kind, "retention", t, dry_run);
        }

        let t = Instant::now();
        let target = self.config.target_file_size_mb.saturating_mul(1 << 20);
        for plan in self.plan(kind, &mut cache).await? {
            let mut part = PartitionReport {
                day: plan.day.map_or_else(|| "none".to_owned(), retention::day_name),
                groups: plan.groups.len(),
                done: Compacted {
                    files_removed: plan.files(),
                    rows: plan.rows(),
                    bytes_read: plan.bytes(),
                    ..Compacted::default()
                },
            };
            if !dry_run {
                part.done = self.compact(kind, &plan, target, &mut cache).await?;
            }
            report.compaction.push(part);
        }
        report.compaction_seconds = t.elapsed().as_secs_f64();
        seconds(kind, "compaction", t, dry_run);

        let t = Instant::now();
        let keep =
            Keep { for_: self.config.keep_snapshots_for, last: self.config.keep_last_snapshots, lease: self.lease };
        report.expired = expire::expire(&self.lake, kind, keep, &self.pins, dry_run).await?;
        seconds(kind, "expiry", t, dry_run);

        let t = Instant::now();
        report.orphans = orphans::sweep(&self.lake, kind, self.config.orphan_age, &self.writing, dry_run).await?;
        seconds(kind, "orphans", t, dry_run);

        let (files, max) = self.file_counts(kind, &mut cache).await?;
        (report.files_after, report.max_files_per_partition_after) = (files, max);
        let table = self.lake.catalog().load_table(&kind.ident(&self.lake)).await?;
        report.snapshots_after = table.metadata().snapshots().len();
        if !dry_run {
            metrics::gauge!("k2_table_files_per_partition_max", "table" => name).set(max as f64);
            metrics::gauge!("k2_table_data_files", "table" => name).set(files as f64);
            metrics::gauge!("k2_table_snapshots", "table" => name).set(report.snapshots_after as f64);
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    async fn plan(&self, kind: Maintained, cache: &mut ManifestCache) -> Result<Vec<PartitionPlan>, LakeError> {
        let table = self.lake.catalog().load_table(&kind.ident(&self.lake)).await?;
        let Some(current) = table.metadata().current_snapshot().cloned() else { return Ok(Vec::new()) };
        let contents = live::contents_cached(&table, &current, cache).await?;
        let target = self.config.target_file_size_mb.saturating_mul(1 << 20);
        Ok(compact::plan(contents.by_day(), target, self.config.min_files))
    }

    async fn compact(
        &self,
        kind: Maintained,
        plan: &PartitionPlan,
        target: u64,
        cache: &mut ManifestCache,
    ) -> Result<Compacted, LakeError> {
        let done = compact::compact(&self.lake, kind, plan, target, &self.writing, self.lock(kind), cache).await?;
        let name = kind.name();
        if done.snapshot_id.is_some() {
            metrics::counter!("k2_maintenance_files_rewritten_total", "table" => name)
                .increment(done.files_removed as u64);
            metrics::counter!("k2_maintenance_files_written_total", "table" => name).increment(done.files_added as u64);
            metrics::counter!("k2_maintenance_rows_rewritten_total", "table" => name).increment(done.rows);
            metrics::counter!("k2_maintenance_bytes_rewritten_total", "table" => name).increment(done.bytes_read);
            self.adopt(kind).await;
        }
        tracing::info!(
            table = name,
            day = ?plan.day,
            files_removed = done.files_removed,
            files_added = done.files_added,
            rows = done.rows,
            stale = done.stale,
            snapshot_id = ?done.snapshot_id,
            "partition compacted"
        );
        Ok(done)
    }

    /// Hands the table as it is now to the tails, which take it if it is a
    /// maintenance snapshot on top of what they hold.
    async fn adopt(&self, kind: Maintained) {
        // The book log takes the table as it is at its next commit.
        let (Some(tails), Some(kind)) = (&self.tails, kind.rows()) else { return };
        let Ok(table) = self.lake.catalog().load_table(&self.lake.ident(kind)).await else { return };
        match kind {
            TableKind::Trades => tails.trades.maintained(table),
            TableKind::Quotes => tails.quotes.maintained(table),
        }
    }

    /// What this process's flushes of `kind` wait on while a maintenance
    /// snapshot is staged. Book commits take none: they are few, and an
    /// append that loses the race is applied again on the new state by
    /// iceberg-rust's own retry, which is exact for an append.
    fn lock(&self, kind: Maintained) -> Option<&tokio::sync::Mutex<()>> {
        kind.rows().and(self.tails.as_ref()).map(|t| t.commit_lock.as_ref())
    }

    /// Live data files, and the most in one day partition.
    async fn file_counts(&self, kind: Maintained, cache: &mut ManifestCache) -> Result<(usize, usize), LakeError> {
        let table = self.lake.catalog().load_table(&kind.ident(&self.lake)).await?;
        let Some(current) = table.metadata().current_snapshot().cloned() else { return Ok((0, 0)) };
        let by_day = live::contents_cached(&table, &current, cache).await?.by_day();
        Ok((by_day.values().map(Vec::len).sum(), by_day.values().map(Vec::len).max().unwrap_or(0)))
    }
}

struct Busy<'a>(&'a AtomicBool);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn seconds(kind: Maintained, step: &'static str, since: Instant, dry_run: bool) {
    if !dry_run {
        metrics::histogram!("k2_maintenance_seconds", "table" => kind.name(), "step" => step)
            .record(since.elapsed().as_secs_f64());
    }
}
