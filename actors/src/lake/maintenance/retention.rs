//! Retention: whole day partitions whose day ended longer ago than the
//! table's retention are dropped with one `delete` snapshot. Their files go
//! when the snapshots that still reach them expire.

use std::collections::HashSet;
use std::time::Duration;

use iceberg::spec::Operation;

use super::commit::{Change, Outcome, commit_change};
use super::live;
use super::tables::Maintained;
use crate::lake::{Lake, LakeError};

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Dropped {
    /// The days dropped (YYYY-MM-DD).
    pub partitions: Vec<String>,
    pub files: usize,
    pub rows: u64,
    pub snapshot_id: Option<i64>,
}

/// Whether day `day` (days since 1970-01-01) ended at least `keep` before
/// `now_ms`.
pub fn expired_day(day: i32, now_ms: i64, keep: Duration) -> bool {
    let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    (i64::from(day) + 1).saturating_mul(DAY_MS) <= now_ms.saturating_sub(keep_ms)
}

pub fn day_name(day: i32) -> String {
    chrono::DateTime::from_timestamp(i64::from(day) * 86_400, 0)
        .map_or_else(|| day.to_string(), |t| t.format("%Y-%m-%d").to_string())
}

pub async fn drop_old(
    lake: &Lake,
    kind: Maintained,
    keep: Duration,
    dry_run: bool,
    lock: Option<&tokio::sync::Mutex<()>>,
    cache: &mut live::ManifestCache,
) -> Result<Dropped, LakeError> {
    let table = lake.catalog().load_table(&kind.ident(lake)).await?;
    let Some(current) = table.metadata().current_snapshot().cloned() else { return Ok(Dropped::default()) };
    let contents = live::contents_cached(&table, &current, cache).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let mut out = Dropped::default();
    let mut remove = HashSet::new();
    for (day, files) in contents.by_day() {
        let Some(day) = day.filter(|d| expired_day(*d, now, keep)) else { continue };
        out.partitions.push(day_name(day));
        out.files += files.len();
        out.rows += files.iter().map(|f| f.file.record_count()).sum::<u64>();
        remove.extend(files.iter().map(|f| f.path().to_owned()));
    }
    if remove.is_empty() || dry_run {
        return Ok(out);
    }
    let change = Change { operation: Operation::Delete, remove, add: Vec::new(), step: "retention" };
    match commit_change(lake, kind, &change, lock, cache).await? {
        Outcome::Committed { snapshot_id, .. } => {
            out.snapshot_id = Some(snapshot_id);
            metrics::counter!("k2_maintenance_partitions_dropped_total", "table" => kind.name())
                .increment(out.partitions.len() as u64);
            metrics::counter!("k2_maintenance_rows_dropped_total", "table" => kind.name()).increment(out.rows);
        }
        // A compaction replaced some of those files meanwhile: the next
        // round drops them.
        Outcome::Stale { .. } => {
            out = Dropped::default();
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_is_dropped_only_once_it_ended_longer_ago_than_the_keep() {
        let day = 20_000; // 2024-10-04
        let end = (i64::from(day) + 1) * DAY_MS;
        let keep = Duration::from_secs(2 * 86_400);
        assert!(!expired_day(day, end + 2 * DAY_MS - 1, keep));
        assert!(expired_day(day, end + 2 * DAY_MS, keep));
        assert_eq!(day_name(day), "2024-10-04");
    }
}
