//! Plans and runs queries with DataFusion over a consistent view: the
//! committed Iceberg snapshot (pinned) and the rows after it: this process's
//! tail in embedded mode, the Kafka log past the snapshot's offsets in Kafka
//! mode (`kafka/log_view.rs`: exact on any process). Every
//! filter value is a typed literal in the plan; no value is ever put into
//! SQL text.

mod books;
mod daily;
mod follow;
mod pages;
mod scan;
mod tables;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Decimal128Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono_tz::Tz;
use datafusion::datasource::MemTable;
use datafusion::functions_aggregate::expr_fn::{count, max, min};
use datafusion::prelude::{DataFrame, Expr, SessionConfig, SessionContext, col, ident, lit};
use datafusion::scalar::ScalarValue;
use futures_util::StreamExt;
use iceberg::table::Table;

use super::QueryError;
use super::aggregate::{Ohlcv, decimal_string};
use super::files::{PageCache, TimeIndexCache};
use super::format::{Decimals, Longs, Strings, Timestamps, column};
use super::params::{AsOf, BarsParams, Cursor, Interval, Pin, ReadParams, Source, SummaryParams, local_midnight};
use crate::kafka::log_view::LogView;
use crate::lake::TableKind;
use crate::lake::Tails;
use crate::lake::tail::TailView;
pub(crate) use books::book_schema;
use pages::two_partitions;
use tables::resolve;

/// Rows and what they were read from.
pub struct Rows {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub source: Source,
    pub snapshot_id: Option<i64>,
    pub next_cursor: Option<String>,
}

/// A trading day's summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub symbol: String,
    pub exchange: String,
    pub date: String,
    pub tz: String,
    pub open: String,
    pub high: String,
    pub low: String,
    pub close: String,
    pub volume: String,
    pub vwap: Option<String>,
    pub notional: String,
    pub trade_count: u64,
    pub first_trade: String,
    pub last_trade: String,
}

pub struct QueryEngine {
    tails: Tails,
    timezones: BTreeMap<String, Tz>,
    time_index: TimeIndexCache,
    pages: PageCache,
    /// Set where this process commits no rows: the tables' latest
    /// snapshots are loaded from the catalog.
    follow: Option<follow::Follow>,
    /// Kafka mode: the rows after a snapshot are read from the log.
    log: Option<LogView>,
}

/// Rows after a snapshot, each batch with its (lowest, highest) timestamp.
struct After {
    batches: Vec<RecordBatch>,
    spans: Vec<(i64, i64)>,
}

fn internal(e: impl std::fmt::Display) -> QueryError {
    QueryError::Internal(e.to_string())
}

fn bad(parameter: &'static str, reason: impl Into<String>) -> QueryError {
    QueryError::BadParameter { parameter, reason: reason.into() }
}

impl QueryEngine {
    pub fn new(tails: Tails, timezones: BTreeMap<String, Tz>) -> Self {
        Self {
            tails,
            timezones,
            time_index: TimeIndexCache::default(),
            pages: PageCache::default(),
            follow: None,
            log: None,
        }
    }

    /// Hybrid and realtime queries read the rows after the snapshot from
    /// the Kafka log (every flusher's partitions), not from this process's
    /// tail.
    pub fn reading_log(mut self, log: LogView) -> Self {
        self.log = Some(log);
        self
    }

    /// The rows after `view`'s snapshot: from the log where there is one
    /// (`local` asks for this process's tail regardless).
    async fn after(&self, kind: TableKind, view: &TailView, local: bool) -> Result<After, QueryError> {
        match &self.log {
            Some(log) if !local => {
                let covered = crate::lake::writer::latest_covered(&view.table).await.map_err(internal)?;
                let rows = log
                    .after(kind, &view.schema, &covered.offsets)
                    .await
                    .map_err(|e| QueryError::LogUnavailable(e.to_string()))?;
                Ok(After { batches: rows.batches, spans: rows.spans })
            }
            _ => Ok(After { batches: view.batches.clone(), spans: view.spans.clone() }),
        }
    }

    /// Queries read the tables' latest snapshots from the catalog (other
    /// processes commit them), not only this process's own commits.
    pub fn following(mut self, lake: crate::lake::Lake) -> Self {
        self.follow = Some(follow::Follow::new(lake));
        self
    }

    async fn view(&self, kind: TableKind) -> Result<TailView, QueryError> {
        if let Some(follow) = &self.follow {
            follow.catch_up(kind, &self.tails).await;
        }
        match kind {
            TableKind::Trades => self.tails.trades.view(),
            TableKind::Quotes => self.tails.quotes.view(),
        }
        .map_err(internal)
    }

    fn context() -> SessionContext {
        SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2).with_batch_size(8192))
    }

    /// The data a pin selects, as one DataFrame.
    async fn frame(
        &self,
        ctx: &SessionContext,
        kind: TableKind,
        pin: Pin,
    ) -> Result<(DataFrame, Option<i64>), QueryError> {
        self.frame_from(ctx, kind, pin, false).await
    }

    /// The data a pin selects of `kind`, as one DataFrame in `ctx`: what
    /// the Flight SQL port registers as the table `kind.name()`.
    pub(crate) async fn table_frame(
        &self,
        ctx: &SessionContext,
        kind: TableKind,
        pin: Pin,
    ) -> Result<DataFrame, QueryError> {
        Ok(self.frame(ctx, kind, pin).await?.0)
    }

    /// The columns of `kind` as queries see them.
    pub(crate) async fn table_schema(&self, kind: TableKind) -> Result<SchemaRef, QueryError> {
        Ok(self.view(kind).await?.schema)
    }

    /// As [`Self::frame`]; with `local`, the rows after the snapshot are this
    /// process's tail even in Kafka mode (what the restore at start reads,
    /// which must not wait for the broker).
    async fn frame_from(
        &self,
        ctx: &SessionContext,
        kind: TableKind,
        pin: Pin,
        local: bool,
    ) -> Result<(DataFrame, Option<i64>), QueryError> {
        let view = self.view(kind).await?;
        let (snapshot, with_tail) = resolve(&view, kind, pin, &self.tails.pins)?;
        let hist = match snapshot {
            Some(id) => Some(historical(ctx, &view.table, id).await?),
            None => None,
        };
        let tail = if with_tail {
            let after = self.after(kind, &view, local).await?;
            // Two partitions: the two cores filter the tail in parallel.
            let t = MemTable::try_new(view.schema.clone(), two_partitions(&after.batches)).map_err(internal)?;
            Some(ctx.read_table(Arc::new(t)).map_err(internal)?)
        } else {
            None
        };
        Ok((combined(ctx, view.schema.clone(), hist, tail)?, snapshot))
    }
}

/// The rows of a snapshot and those after it, as one DataFrame in `ctx`:
/// either may be absent, and with neither the frame has no rows of
/// `schema`.
fn combined(
    ctx: &SessionContext,
    schema: SchemaRef,
    stored: Option<DataFrame>,
    after: Option<DataFrame>,
) -> Result<DataFrame, QueryError> {
    match (stored, after) {
        (Some(s), Some(a)) => s.union(a).map_err(internal),
        (Some(s), None) => Ok(s),
        (None, Some(a)) => Ok(a),
        (None, None) => {
            let t = MemTable::try_new(schema, vec![vec![]]).map_err(internal)?;
            ctx.read_table(Arc::new(t)).map_err(internal)
        }
    }
}

async fn historical(ctx: &SessionContext, table: &Table, snapshot: i64) -> Result<DataFrame, QueryError> {
    let provider = scan::SnapshotTable::try_new(table.clone(), snapshot).map_err(internal)?;
    ctx.read_table(Arc::new(provider)).map_err(internal)
}

fn timestamp_tz(schema: &Schema) -> Option<Arc<str>> {
    match schema.field_with_name("timestamp").map(|f| f.data_type()) {
        Ok(DataType::Timestamp(_, tz)) => tz.clone(),
        _ => None,
    }
}
