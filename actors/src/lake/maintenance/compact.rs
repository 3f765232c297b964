//! Compaction: a day partition's small files rewritten into files of about
//! the target size, sorted by (symbol, timestamp) as the flusher writes
//! them, committed as one `replace` snapshot per partition. Only files live
//! when the round began are rewritten; flushes appending meanwhile add
//! files the commit keeps as they are.

use std::collections::HashSet;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use futures_util::{StreamExt, TryStreamExt};
use iceberg::spec::{DataFile, Operation};
use iceberg::table::Table;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::commit::{Change, Outcome, commit_change};
use super::live::{LiveFile, ManifestCache};
use super::tables::Maintained;
use crate::lake::batch::FileOrder;
use crate::lake::writer::{FileShape, write_ordered};
use crate::lake::writing::WritingFiles;
use crate::lake::{Lake, LakeError};

/// Groups rewritten at once: one per core.
const CONCURRENT_GROUPS: usize = 2;

/// Rows per batch read from a data file.
const READ_BATCH_ROWS: usize = 65_536;

/// The files of one day partition to rewrite, in groups of about the
/// target size (each group becomes about one file per core).
#[derive(Debug, Clone)]
pub struct PartitionPlan {
    pub day: Option<i32>,
    pub groups: Vec<Vec<LiveFile>>,
}

impl PartitionPlan {
    pub fn files(&self) -> usize {
        self.groups.iter().map(Vec::len).sum()
    }

    pub fn rows(&self) -> u64 {
        self.groups.iter().flatten().map(|f| f.file.record_count()).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.groups.iter().flatten().map(|f| f.file.file_size_in_bytes()).sum()
    }
}

/// Rows a group holds at most. A group is decoded whole in memory before it
/// is sorted and written: market data compresses to a few bytes a row, so
/// a group of `target` bytes of Parquet was 17 million rows (some 3 GB
/// decoded) in the bench's day, and rewrote at half the rate of groups of
/// a few million.
pub const MAX_GROUP_ROWS: u64 = 4_000_000;

/// Which partitions to compact: those holding at least `min_files` files
/// below three quarters of `target` bytes. Files are grouped in the order
/// they were committed (so each new file covers a span of time) into groups
/// of at most `target` bytes and `MAX_GROUP_ROWS` rows; a group of one file
/// is left alone.
pub fn plan(
    files: impl IntoIterator<Item = (Option<i32>, Vec<LiveFile>)>,
    target: u64,
    min_files: usize,
) -> Vec<PartitionPlan> {
    let small_below = target / 4 * 3;
    let mut plans = Vec::new();
    for (day, files) in files {
        let mut small: Vec<LiveFile> =
            files.into_iter().filter(|f| f.file.file_size_in_bytes() < small_below).collect();
        if small.len() < min_files {
            continue;
        }
        small.sort_by(|a, b| (a.sequence_number, a.path()).cmp(&(b.sequence_number, b.path())));
        let mut groups: Vec<Vec<LiveFile>> = Vec::new();
        let (mut size, mut rows) = (0, 0);
        for f in small {
            let (len, n) = (f.file.file_size_in_bytes(), f.file.record_count());
            match groups.last_mut() {
                Some(group) if size + len <= target && rows + n <= MAX_GROUP_ROWS => group.push(f),
                _ => {
                    groups.push(vec![f]);
                    (size, rows) = (0, 0);
                }
            }
            size += len;
            rows += n;
        }
        groups.retain(|g| g.len() > 1);
        if !groups.is_empty() {
            plans.push(PartitionPlan { day, groups });
        }
    }
    plans
}

/// What compacting one partition did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Compacted {
    pub files_removed: usize,
    pub files_added: usize,
    pub rows: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// The `replace` snapshot, when committed.
    pub snapshot_id: Option<i64>,
    /// Files another step removed first: nothing committed.
    pub stale: bool,
    pub conflicts: u32,
}

/// Rewrites and commits one partition. New files of a rewrite that does not
/// commit are deleted again.
pub async fn compact(
    lake: &Lake,
    kind: Maintained,
    plan: &PartitionPlan,
    target: u64,
    writing: &WritingFiles,
    lock: Option<&tokio::sync::Mutex<()>>,
    cache: &mut ManifestCache,
) -> Result<Compacted, LakeError> {
    let scope = writing.scope();
    let table = kind.ident(lake);
    let table = lake.catalog().load_table(&table).await?;
    let schema = std::sync::Arc::new(iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema())?);
    let prefix = format!("k2-compact-{}", uuid::Uuid::new_v4().simple());
    let written: Vec<Vec<DataFile>> = futures_util::stream::iter(plan.groups.clone().into_iter().enumerate())
        .map(|(i, group)| {
            let (table, schema, prefix) = (table.clone(), schema.clone(), format!("{prefix}-{i}"));
            async move { rewrite_group(&table, schema, &group, (prefix, kind.time_column()), target).await }
        })
        .buffer_unordered(CONCURRENT_GROUPS)
        .try_collect()
        .await?;
    let added: Vec<DataFile> = written.into_iter().flatten().collect();
    scope.add(added.iter().map(|f| f.file_path()));
    let out = Compacted {
        files_removed: plan.files(),
        files_added: added.len(),
        rows: plan.rows(),
        bytes_read: plan.bytes(),
        bytes_written: added.iter().map(|f| f.file_size_in_bytes()).sum(),
        ..Compacted::default()
    };
    let rows_added: u64 = added.iter().map(|f| f.record_count()).sum();
    let remove: HashSet<String> = plan.groups.iter().flatten().map(|f| f.path().to_owned()).collect();
    let drop_new = |files: Vec<DataFile>| async move {
        for f in files {
            let _ = table.file_io().delete(f.file_path()).await;
        }
    };
    if rows_added != out.rows {
        drop_new(added).await;
        return Err(LakeError::Schema(format!(
            "compaction of {} read {} rows but wrote {rows_added}; nothing committed",
            kind.name(),
            out.rows
        )));
    }
    let change = Change { operation: Operation::Replace, remove, add: added.clone(), step: "compaction" };
    match commit_change(lake, kind, &change, lock, cache).await {
        Ok(Outcome::Committed { snapshot_id, conflicts, .. }) => {
            Ok(Compacted { snapshot_id: Some(snapshot_id), conflicts, ..out })
        }
        Ok(Outcome::Stale { .. }) => {
            drop_new(added).await;
            Ok(Compacted { stale: true, files_added: 0, bytes_written: 0, ..out })
        }
        Err(e) => {
            // A commit whose answer was lost may still have landed: the new
            // files are left to the orphan sweep, which knows.
            Err(e)
        }
    }
}

/// Reads a group's files, sorts their rows and writes them as about one
/// file.
async fn rewrite_group(
    table: &Table,
    schema: SchemaRef,
    group: &[LiveFile],
    (prefix, time): (String, &'static str),
    target: u64,
) -> Result<Vec<DataFile>, LakeError> {
    let started = Instant::now();
    let mut contents = Vec::with_capacity(group.len());
    for f in group {
        contents.push(table.file_io().new_input(f.path())?.read().await?);
    }
    let read = started.elapsed();
    // A partition is often one group: its files are decoded in halves on two
    // threads so that the rewrite is not bound to one core.
    let second = contents.split_off(contents.len().div_ceil(2));
    let decode = |part: Vec<_>, schema: SchemaRef| {
        tokio::task::spawn_blocking(move || -> Result<Vec<RecordBatch>, LakeError> {
            let mut batches = Vec::new();
            for bytes in part {
                read_parquet(bytes, &schema, &mut batches)?;
            }
            Ok(batches)
        })
    };
    let task_failed = |e: tokio::task::JoinError| LakeError::Task { what: "compaction read", reason: e.to_string() };
    let (first, second) = tokio::join!(decode(contents, schema.clone()), decode(second, schema.clone()));
    let mut batches = first.map_err(task_failed)??;
    batches.extend(second.map_err(task_failed)??);
    let decoded = started.elapsed();
    let sorted =
        tokio::task::spawn_blocking(move || FileOrder::by(&schema, batches, time)).await.map_err(task_failed)??;
    let sorted_at = started.elapsed();
    let rows = sorted.len();
    let shape = FileShape::compacted(usize::try_from(target).unwrap_or(usize::MAX));
    let files = write_ordered(table, sorted, &prefix, shape).await?;
    tracing::debug!(
        files = group.len(),
        rows,
        read_ms = read.as_millis(),
        decode_ms = (decoded - read).as_millis(),
        sort_ms = (sorted_at - decoded).as_millis(),
        write_ms = (started.elapsed() - sorted_at).as_millis(),
        "compaction group rewritten"
    );
    Ok(files)
}

/// Decodes one Parquet data file into batches of the table's Arrow schema.
fn read_parquet<R: parquet::file::reader::ChunkReader + 'static>(
    bytes: R,
    schema: &SchemaRef,
    out: &mut Vec<RecordBatch>,
) -> Result<(), LakeError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| LakeError::Schema(format!("reading a data file: {e}")))?
        .with_batch_size(READ_BATCH_ROWS)
        .build()
        .map_err(|e| LakeError::Schema(format!("reading a data file: {e}")))?;
    for batch in reader {
        let batch = batch?;
        let mut columns = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let column = batch.column_by_name(field.name()).ok_or_else(|| {
                LakeError::Schema(format!("a data file has no column {} the table has", field.name()))
            })?;
            columns.push(if column.data_type() == field.data_type() {
                column.clone()
            } else {
                cast(column, field.data_type())?
            });
        }
        out.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A live file of `size` bytes committed at `seq`, built through
    /// iceberg's own builder.
    fn file(path: &str, size: u64, seq: i64) -> LiveFile {
        file_of(path, size, seq, 10)
    }

    fn file_of(path: &str, size: u64, seq: i64, rows: u64) -> LiveFile {
        let file = iceberg::spec::DataFileBuilder::default()
            .content(iceberg::spec::DataContentType::Data)
            .file_path(path.to_owned())
            .file_format(iceberg::spec::DataFileFormat::Parquet)
            .partition(iceberg::spec::Struct::from_iter([Some(iceberg::spec::Literal::int(20_000))]))
            .record_count(rows)
            .file_size_in_bytes(size)
            .build()
            .unwrap();
        LiveFile { file, snapshot_id: seq, sequence_number: seq, file_sequence_number: seq }
    }

    #[test]
    fn small_files_group_in_commit_order_up_to_the_target() {
        let files: Vec<_> = (0..10).map(|i| file(&format!("f{i}"), 30, 10 - i)).collect();
        let plans = plan([(Some(20_000), files)], 100, 4);
        assert_eq!(plans.len(), 1);
        let groups: Vec<Vec<&str>> = plans[0].groups.iter().map(|g| g.iter().map(LiveFile::path).collect()).collect();
        // Oldest first (highest i was committed first); three of 30 fit 100.
        assert_eq!(groups, [vec!["f9", "f8", "f7"], vec!["f6", "f5", "f4"], vec!["f3", "f2", "f1"]]);
        assert_eq!(plans[0].files(), 9, "a last group of one file is left as it is");
    }

    #[test]
    fn a_group_holds_at_most_max_group_rows() {
        let files: Vec<_> = (0..9).map(|i| file_of(&format!("f{i}"), 1, 9 - i, MAX_GROUP_ROWS / 4)).collect();
        let plans = plan([(Some(1), files)], 1_000, 2);
        let sizes: Vec<usize> = plans[0].groups.iter().map(Vec::len).collect();
        assert_eq!(sizes, [4, 4], "bytes allow all nine; rows allow four a group (a last one alone stays)");
    }

    #[test]
    fn big_files_and_partitions_with_few_small_files_are_left_alone() {
        let mut files: Vec<_> = (0..3).map(|i| file(&format!("s{i}"), 10, i)).collect();
        files.extend((0..5).map(|i| file(&format!("b{i}"), 90, i)));
        assert!(plan([(Some(1), files.clone())], 100, 4).is_empty(), "three small files, four needed");
        let plans = plan([(Some(1), files)], 100, 3);
        assert_eq!(plans[0].files(), 3, "files over 3/4 of the target are not rewritten");
    }
}
