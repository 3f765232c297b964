//! The orphan sweep: files under a table's location that no snapshot and no
//! metadata file names, older than the safety age, and not being written by
//! this process (a flush retrying its commit), are deleted. What an
//! interrupted flush, compaction or expiry left behind goes this way.
//!
//! Listing needs the storage's own API; iceberg-rust's FileIO has none, so
//! the sweep covers local warehouses (`file://`) and reports object stores
//! as skipped.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use iceberg::spec::SnapshotRef;

use super::live;
use super::tables::Maintained;
use crate::lake::writing::WritingFiles;
use crate::lake::{Lake, LakeError};

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Orphans {
    pub found: usize,
    pub deleted: usize,
    pub bytes: u64,
    /// Why the sweep did not run, when it did not.
    pub skipped: Option<String>,
}

pub async fn sweep(
    lake: &Lake,
    kind: Maintained,
    min_age: Duration,
    writing: &WritingFiles,
    dry_run: bool,
) -> Result<Orphans, LakeError> {
    let table = lake.catalog().load_table(&kind.ident(lake)).await?;
    let location = table.metadata().location().to_owned();
    let Some(root) = location.strip_prefix("file://") else {
        let scheme = location.split("://").next().unwrap_or("this");
        return Ok(Orphans {
            skipped: Some(format!("{scheme}:// storage cannot be listed yet")),
            ..Orphans::default()
        });
    };
    let snapshots: Vec<SnapshotRef> = table.metadata().snapshots().cloned().collect();
    let mut named = live::reachable(&table, &snapshots).await?;
    named.extend(live::metadata_files(&table));
    let named: std::collections::HashSet<String> =
        named.into_iter().map(|p| p.strip_prefix("file://").map(str::to_owned).unwrap_or(p)).collect();
    let root = PathBuf::from(root);
    let candidates = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for dir in ["data", "metadata"] {
            walk(&root.join(dir), &mut out);
        }
        out
    })
    .await
    .map_err(|e| LakeError::Task { what: "orphan listing", reason: e.to_string() })?;
    let now = SystemTime::now();
    let mut out = Orphans::default();
    for (path, modified, len) in candidates {
        let text = path.display().to_string();
        let old = now.duration_since(modified).is_ok_and(|age| age >= min_age);
        if !old || named.contains(&text) || writing.contains(&format!("file://{text}")) || writing.contains(&text) {
            continue;
        }
        out.found += 1;
        out.bytes += len;
        if dry_run {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => out.deleted += 1,
            Err(e) => tracing::warn!(path = %text, error = %e, "orphan file not deleted"),
        }
    }
    if !dry_run {
        metrics::counter!("k2_maintenance_files_deleted_total", "table" => kind.name(), "reason" => "orphan")
            .increment(out.deleted as u64);
    }
    Ok(out)
}

/// Every regular file under `dir` with its modification time and size.
fn walk(dir: &Path, out: &mut Vec<(PathBuf, SystemTime, u64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            walk(&entry.path(), out);
        } else if meta.is_file() {
            out.push((entry.path(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len()));
        }
    }
}
