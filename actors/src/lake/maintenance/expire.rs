//! Snapshot expiry through iceberg-rust's `expire_snapshots`, by id: K2
//! chooses which (older than the keep, beyond the newest few, not read by a
//! query within its lease nor asked for by time travel within the keep),
//! then deletes the files only expired snapshots reached.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use iceberg::spec::SnapshotRef;
use iceberg::transaction::{ApplyTransactionAction, Transaction};

use super::live;
use super::tables::Maintained;
use crate::lake::pins::Pins;
use crate::lake::{Lake, LakeError};

/// What to keep.
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    pub for_: Duration,
    pub last: usize,
    /// How long a query may run: a snapshot read this recently is in use.
    pub lease: Duration,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Expired {
    pub snapshots: usize,
    /// Kept only because a query read it or time travel asked for it.
    pub kept_for_queries: usize,
    pub files_deleted: usize,
}

/// Which snapshots of `snapshots` (any order) to expire.
pub fn choose(
    kind: Maintained,
    snapshots: &[SnapshotRef],
    heads: &HashSet<i64>,
    now_ms: i64,
    keep: Keep,
    pins: &Pins,
) -> (Vec<i64>, usize) {
    let mut newest_first: Vec<&SnapshotRef> = snapshots.iter().collect();
    newest_first.sort_by_key(|s| std::cmp::Reverse((s.sequence_number(), s.timestamp_ms())));
    let cutoff = now_ms.saturating_sub(i64::try_from(keep.for_.as_millis()).unwrap_or(i64::MAX));
    let (mut expire, mut pinned) = (Vec::new(), 0);
    for (i, s) in newest_first.iter().enumerate() {
        let id = s.snapshot_id();
        if i < keep.last || heads.contains(&id) || s.timestamp_ms() >= cutoff {
            continue;
        }
        if pins.holds(kind.name(), id, keep.lease, keep.for_) {
            pinned += 1;
            continue;
        }
        expire.push(id);
    }
    (expire, pinned)
}

/// The snapshots branches and tags point at (other engines may add some):
/// never expired. iceberg-rust keeps the refs map private, so it is read
/// from the metadata's own JSON form.
fn ref_heads(metadata: &iceberg::spec::TableMetadata) -> HashSet<i64> {
    let json = serde_json::to_value(metadata).unwrap_or_default();
    json["refs"]
        .as_object()
        .map(|refs| refs.values().filter_map(|r| r["snapshot-id"].as_i64()).collect())
        .unwrap_or_default()
}

pub async fn expire(
    lake: &Lake,
    kind: Maintained,
    keep: Keep,
    pins: &Pins,
    dry_run: bool,
) -> Result<Expired, LakeError> {
    let table = lake.catalog().load_table(&kind.ident(lake)).await?;
    let metadata = table.metadata();
    let snapshots: Vec<SnapshotRef> = metadata.snapshots().cloned().collect();
    let mut heads = ref_heads(metadata);
    heads.extend(metadata.current_snapshot_id());
    let now = chrono::Utc::now().timestamp_millis();
    let (ids, kept_for_queries) = choose(kind, &snapshots, &heads, now, keep, pins);
    if ids.is_empty() {
        return Ok(Expired { kept_for_queries, ..Expired::default() });
    }
    let expiring: HashSet<i64> = ids.iter().copied().collect();
    let (gone, kept): (Vec<SnapshotRef>, Vec<SnapshotRef>) =
        snapshots.into_iter().partition(|s| expiring.contains(&s.snapshot_id()));
    let keep_files = live::reachable(&table, &kept).await?;
    let mut delete: Vec<String> =
        live::reachable(&table, &gone).await?.into_iter().filter(|p| !keep_files.contains(p)).collect();
    delete.sort();
    if dry_run {
        return Ok(Expired { snapshots: ids.len(), kept_for_queries, files_deleted: delete.len() });
    }
    // By id only: the age cutoff at the epoch selects nothing more.
    let tx = Transaction::new(&table);
    let tx = tx.expire_snapshots().expire_snapshot_ids(ids.clone()).expire_older_than_ms(0).apply(tx)?;
    tx.commit(lake.catalog().as_ref()).await?;
    metrics::counter!("k2_maintenance_snapshots_expired_total", "table" => kind.name()).increment(ids.len() as u64);
    // Committed: nothing reads these files now. A crash before they are all
    // gone leaves the rest to the orphan sweep.
    let io = table.file_io().clone();
    let deleted = futures_util::stream::iter(delete)
        .map(|path| {
            let io = io.clone();
            async move { io.delete(&path).await.is_ok() }
        })
        .buffer_unordered(16)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    metrics::counter!("k2_maintenance_files_deleted_total", "table" => kind.name(), "reason" => "expired")
        .increment(deleted as u64);
    Ok(Expired { snapshots: ids.len(), kept_for_queries, files_deleted: deleted })
}
