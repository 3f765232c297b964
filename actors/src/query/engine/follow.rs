//! A process that commits no rows (a query node, or a Kafka producer that
//! does not consume) learns of other processes' commits only from the
//! catalog: before a query reads a table, the table's latest snapshot is
//! loaded, at most once per [`FOLLOW_EVERY`], and becomes the snapshot the
//! query reads. The process's tails are empty (nothing is appended to them),
//! so adopting a new snapshot drops nothing.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use iceberg::table::Table;

use crate::lake::batch::LakeRow;
use crate::lake::tail::Tail;
use crate::lake::{Lake, LakeError, TableKind, Tails};

/// How stale a followed snapshot may be. Loading a table reads its metadata
/// file, which grows with its snapshots; queries arriving faster than this
/// share one load.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(500);

pub struct Follow {
    lake: Lake,
    /// When each table (trades, quotes) was last loaded.
    loaded: [Mutex<Option<Instant>>; 2],
}

impl Follow {
    pub fn new(lake: Lake) -> Self {
        Self { lake, loaded: [Mutex::new(None), Mutex::new(None)] }
    }

    /// Makes `kind`'s latest committed snapshot the one `tails` shows, unless
    /// it was loaded within [`FOLLOW_EVERY`]. A catalog that does not answer
    /// leaves the last snapshot seen in place (logged and counted): queries
    /// still answer, from a staler snapshot.
    pub async fn catch_up(&self, kind: TableKind, tails: &Tails) {
        let slot = match kind {
            TableKind::Trades => &self.loaded[0],
            TableKind::Quotes => &self.loaded[1],
        };
        // Concurrent queries wait for one load instead of each making one.
        let mut loaded = slot.lock().await;
        if loaded.is_some_and(|at| at.elapsed() < FOLLOW_EVERY) {
            return;
        }
        let table = match self.lake.table(kind).await {
            Ok(table) => table,
            Err(e) => {
                metrics::counter!("k2_query_follow_failures_total", "table" => kind.name()).increment(1);
                tracing::warn!(table = kind.name(), error = %e, "loading the table's latest snapshot failed; answering from the last one seen");
                return;
            }
        };
        *loaded = Some(Instant::now());
        let adopted = match kind {
            TableKind::Trades => adopt(&tails.trades, table).await,
            TableKind::Quotes => adopt(&tails.quotes, table).await,
        };
        match adopted {
            Ok(None) => {}
            Ok(Some(snapshot)) => {
                tracing::debug!(table = kind.name(), snapshot, "following the table's latest snapshot")
            }
            Err(e) => {
                metrics::counter!("k2_query_follow_failures_total", "table" => kind.name()).increment(1);
                tracing::warn!(table = kind.name(), error = %e, "the table's latest snapshot has an unreadable summary; answering from the last one seen");
            }
        }
    }
}

/// Makes `table` the snapshot `tail` shows unless it already is: the
/// adopted snapshot's id, or `None` when nothing changed.
async fn adopt<R: LakeRow>(tail: &Tail<R>, table: Table) -> Result<Option<i64>, LakeError> {
    if table.metadata_location() == tail.committed_table().metadata_location() {
        return Ok(None);
    }
    let snapshot = table.metadata().current_snapshot_id();
    tail.adopt(table).await?;
    Ok(snapshot)
}
