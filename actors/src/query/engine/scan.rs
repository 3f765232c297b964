//! A snapshot of an Iceberg table as a DataFusion table, read on every core
//! and with the Parquet page index.
//!
//! iceberg-datafusion 0.10's provider reads a whole scan as one stream on
//! one thread, and its reader leaves the page index unused, so a compacted
//! day (few large files, one symbol's rows spanning many hours per row
//! group) was decoded row group by row group. Here the files are planned
//! once, when DataFusion plans the query, and dealt to as many partitions as
//! the session has (large files cut into byte ranges of a few per core: the
//! reader gives each row group to the one range holding its midpoint), and the
//! reader selects rows by the page index, so a one-hour filter reads the
//! pages of that hour. The filters are still applied by DataFusion
//! (`Inexact`): pruning here only ever skips what cannot match.
//!
//! When iceberg-datafusion partitions its scans and enables row selection,
//! this module can give way to its `IcebergStaticTableProvider` again.

use std::any::Any;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::TableProviderFilterPushDown;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use datafusion::prelude::Expr;
use futures_util::{StreamExt, TryStreamExt};
use iceberg::arrow::ArrowReaderBuilder;
use iceberg::scan::FileScanTask;
use iceberg::table::Table;
use iceberg_datafusion::physical_plan::convert_filters_to_predicate;

/// The shortest byte range a file is cut into: each range reads the footer
/// and page index again, which a short range does not earn back.
const MIN_RANGE_BYTES: u64 = 4 << 20;

fn df_error(e: iceberg::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// One snapshot of one table.
#[derive(Debug, Clone)]
pub struct SnapshotTable {
    table: Table,
    snapshot_id: i64,
    schema: SchemaRef,
}

impl SnapshotTable {
    pub fn try_new(table: Table, snapshot_id: i64) -> Result<Self, iceberg::Error> {
        let snapshot = table.metadata().snapshot_by_id(snapshot_id).ok_or_else(|| {
            iceberg::Error::new(iceberg::ErrorKind::DataInvalid, format!("no snapshot {snapshot_id}"))
        })?;
        let schema = Arc::new(iceberg::arrow::schema_to_arrow_schema(snapshot.schema(table.metadata())?.as_ref())?);
        Ok(Self { table, snapshot_id, schema })
    }
}

#[async_trait::async_trait]
impl TableProvider for SnapshotTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let scan = self.table.scan().snapshot_id(self.snapshot_id);
        let mut scan = scan.select(schema.fields().iter().map(|f| f.name().clone()));
        if let Some(predicate) = convert_filters_to_predicate(filters) {
            scan = scan.with_filter(predicate);
        }
        let tasks: Vec<FileScanTask> = scan
            .build()
            .map_err(df_error)?
            .plan_files()
            .await
            .map_err(df_error)?
            .try_collect()
            .await
            .map_err(df_error)?;
        // Files are sorted by symbol: a scan of one symbol reads a row group
        // or two of a file, and cutting the file would only read its footer
        // and page index once per range.
        let cut = !filters.iter().any(pins_symbol);
        let partitions = deal(tasks, state.config().target_partitions().max(1), cut);
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Arc::new(SnapshotScan { table: self.table.clone(), schema, partitions, properties }))
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DFResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }
}

/// Ranges per partition to aim for: a file's row groups fall unevenly on
/// byte ranges (each goes whole to the range holding its midpoint), and a
/// compacted day is one full file and a remainder, so a few ranges per core
/// even the cores out where one range each would leave one waiting.
const RANGES_PER_PARTITION: u64 = 4;

/// Deals `tasks` into at most `n` partitions of about equal bytes, largest
/// first to the lightest. With `cut`, files of at least twice a `1 / (n *
/// RANGES_PER_PARTITION)` share of the bytes (and of `MIN_RANGE_BYTES`) are
/// first cut into byte ranges of about that share.
fn deal(tasks: Vec<FileScanTask>, n: usize, cut: bool) -> Vec<Vec<FileScanTask>> {
    let total: u64 = tasks.iter().map(|t| t.length).sum();
    let share = (total / (n as u64 * RANGES_PER_PARTITION).max(1)).max(MIN_RANGE_BYTES);
    let mut ranges = Vec::with_capacity(tasks.len());
    for task in tasks {
        // Cut only what is at least twice the share: a file just above it
        // would become two ranges with two footer reads for no balance.
        let pieces = if cut && task.length >= 2 * share { task.length.div_ceil(share) } else { 1 };
        if pieces == 1 {
            ranges.push(task);
            continue;
        }
        let step = task.length.div_ceil(pieces);
        let end = task.start + task.length;
        let mut start = task.start;
        while start < end {
            let mut range = task.clone();
            range.start = start;
            range.length = step.min(end - start);
            range.record_count = None;
            start += range.length;
            ranges.push(range);
        }
    }
    ranges.sort_by_key(|t| std::cmp::Reverse(t.length));
    let mut parts: Vec<(u64, Vec<FileScanTask>)> = (0..n.min(ranges.len())).map(|_| (0, Vec::new())).collect();
    for range in ranges {
        if let Some(lightest) = parts.iter_mut().min_by_key(|(bytes, _)| *bytes) {
            lightest.0 += range.length;
            lightest.1.push(range);
        }
    }
    parts.into_iter().map(|(_, ranges)| ranges).collect()
}

/// Whether `filter` (one conjunct) keeps a single symbol: `symbol = 'X'`.
fn pins_symbol(filter: &Expr) -> bool {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    let Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) = filter else { return false };
    let is_symbol = |e: &Expr| matches!(e, Expr::Column(c) if c.name == "symbol");
    let is_literal = |e: &Expr| matches!(e, Expr::Literal(..));
    (is_symbol(left) && is_literal(right)) || (is_literal(left) && is_symbol(right))
}

/// The planned files of a snapshot scan, by partition.
#[derive(Debug)]
struct SnapshotScan {
    table: Table,
    schema: SchemaRef,
    partitions: Vec<Vec<FileScanTask>>,
    properties: Arc<PlanProperties>,
}

impl DisplayAs for SnapshotScan {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let files: usize = self.partitions.iter().map(Vec::len).sum();
        write!(f, "SnapshotScan: {} ranges in {} partitions", files, self.partitions.len())
    }
}

impl ExecutionPlan for SnapshotScan {
    fn name(&self) -> &str {
        "SnapshotScan"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>) -> DFResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DFResult<SendableRecordBatchStream> {
        let tasks = self.partitions.get(partition).cloned().unwrap_or_default();
        let runtime = iceberg::Runtime::try_current().map_err(df_error)?;
        let reader = ArrowReaderBuilder::new(self.table.file_io().clone(), runtime)
            .with_batch_size(context.session_config().batch_size())
            .with_row_group_filtering_enabled(true)
            .with_row_selection_enabled(true)
            .build();
        let stream = reader
            .read(Box::pin(futures_util::stream::iter(tasks.into_iter().map(Ok))))
            .map_err(df_error)?
            .stream()
            .map_err(df_error);
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream.boxed())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(path: &str, length: u64) -> FileScanTask {
        let schema = Arc::new(iceberg::spec::Schema::builder().build().unwrap());
        FileScanTask {
            file_size_in_bytes: length,
            start: 0,
            length,
            record_count: Some(10),
            data_file_path: path.to_owned(),
            data_file_format: iceberg::spec::DataFileFormat::Parquet,
            schema,
            project_field_ids: vec![],
            predicate: None,
            deletes: vec![],
            partition: None,
            partition_spec: None,
            name_mapping: None,
            case_sensitive: true,
        }
    }

    #[test]
    fn large_files_are_cut_into_ranges_covering_each_once() {
        let size = 100 << 20;
        let parts = deal(vec![task("a", size), task("b", size / 2)], 2, true);
        assert_eq!(parts.len(), 2);
        for (path, length) in [("a", size), ("b", size / 2)] {
            let mut ranges: Vec<(u64, u64)> = parts
                .iter()
                .flatten()
                .filter(|t| t.data_file_path == path)
                .map(|t| (t.start, t.start + t.length))
                .collect();
            ranges.sort();
            assert!(ranges.len() > 1, "{path} was not cut: {ranges:?}");
            assert_eq!(ranges.first().map(|r| r.0), Some(0));
            assert_eq!(ranges.last().map(|r| r.1), Some(length));
            assert!(ranges.windows(2).all(|w| w[0].1 == w[1].0), "{path}: gaps or overlaps in {ranges:?}");
        }
        assert!(parts.iter().flatten().all(|t| t.record_count.is_none()));
        let bytes: Vec<u64> = parts.iter().map(|p| p.iter().map(|t| t.length).sum()).collect();
        let (low, high) = (bytes.iter().min().copied().unwrap_or(0), bytes.iter().max().copied().unwrap_or(0));
        // Balanced to within one range: a share of the whole.
        let total = size + size / 2;
        assert!(high - low <= total / (2 * RANGES_PER_PARTITION), "unbalanced: {bytes:?}");
    }

    #[test]
    fn small_files_stay_whole_and_partitions_balance_by_bytes() {
        assert_eq!(deal(vec![task("a", 1000)], 2, true).iter().flatten().count(), 1);
        let parts = deal(vec![task("a", 50), task("b", 30), task("c", 25), task("d", 5)], 2, true);
        let bytes: Vec<u64> = parts.iter().map(|p| p.iter().map(|t| t.length).sum()).collect();
        assert_eq!(bytes.iter().sum::<u64>(), 110);
        assert!(bytes.iter().all(|b| *b == 55), "{bytes:?}");
        assert!(deal(vec![], 2, true).is_empty());
        // One symbol's scan leaves files whole.
        assert_eq!(deal(vec![task("a", 100 << 20)], 2, false).iter().flatten().count(), 1);
    }
}

#[cfg(test)]
mod filter_tests {
    use datafusion::prelude::{col, lit};

    use super::pins_symbol;

    #[test]
    fn a_symbol_equality_pins_a_symbol_and_nothing_else_does() {
        assert!(pins_symbol(&col("symbol").eq(lit("BTCUSDT"))));
        assert!(pins_symbol(&lit("BTCUSDT").eq(col("symbol"))));
        assert!(!pins_symbol(&col("exchange").eq(lit("BINANCE"))));
        assert!(!pins_symbol(&col("symbol").not_eq(lit("BTCUSDT"))));
        assert!(!pins_symbol(&col("timestamp").gt(lit(5))));
    }
}
