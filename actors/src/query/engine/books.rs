//! The order-book tables as SQL reads them: what the book log holds (its
//! last commit and the records not committed yet), pinned as trades and
//! quotes are.

use crate::lake::books::BookLog;
use crate::lake::books::tables::{BookTable, to_batch};

use super::tables::resolve_in;
use super::*;

impl QueryEngine {
    /// `table` as `pin` selects it, as one DataFrame in `ctx`: the snapshot
    /// (the log's last commit, or the one time travel names) and, unless
    /// historical or travelling, the records not committed yet. Each record
    /// is read once (see [`BookLog::held`]).
    pub(crate) async fn book_frame(
        &self,
        ctx: &SessionContext,
        log: &BookLog,
        table: BookTable,
        pin: Pin,
    ) -> Result<DataFrame, QueryError> {
        let (committed, pending) = log.held(table);
        let schema = book_schema(&committed)?;
        let current = committed.metadata().current_snapshot_id();
        let (snapshot, with_pending) = resolve_in(&committed, current, table.name(), pin, &self.tails.pins)?;
        let stored = match snapshot {
            Some(id) => Some(historical(ctx, &committed, id).await?),
            None => None,
        };
        let pending = match with_pending && !pending.is_empty() {
            true => {
                let batch = to_batch(table, &schema, &pending).map_err(internal)?;
                let t = MemTable::try_new(schema.clone(), vec![vec![batch]]).map_err(internal)?;
                Some(ctx.read_table(Arc::new(t)).map_err(internal)?)
            }
            false => None,
        };
        combined(ctx, schema, stored, pending)
    }
}

/// The columns of a book table as queries see them.
pub(crate) fn book_schema(table: &Table) -> Result<SchemaRef, QueryError> {
    let schema = iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema()).map_err(internal)?;
    Ok(Arc::new(schema))
}
