//! Writes a flush: rows sorted by (symbol, timestamp), split by day, into
//! zstd Parquet files with a name prefix unique to the flush, then one
//! `fast_append` snapshot whose summary says what it covers.

use std::sync::Arc;

use arrow::array::RecordBatch;
use iceberg::arrow::RecordBatchPartitionSplitter;
use iceberg::spec::{DataFile, DataFileFormat};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{DefaultFileNameGenerator, DefaultLocationGenerator};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::{Catalog, TableIdent};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::LakeError;
use super::batch::FileOrder;
use super::pinned::PinnedCatalog;
use super::summary::{Covered, Offsets};
use super::summary_file;
use super::writing::WritingScope;
use crate::state::marks::Ranges;

/// Rows below which a flush is written by one task: splitting small flushes
/// only makes more files.
pub const ROWS_PER_WRITER: usize = 250_000;

/// Rows per Parquet row group. Rows are sorted by symbol, so with groups this
/// small a one-symbol query skips most of a file on the groups' min/max
/// statistics (parquet-rs defaults to 1M rows: one group per file here).
const ROW_GROUP_ROWS: usize = 65_536;

/// Rows per row group of a compacted file. Its file is one of a day's few,
/// so its footer and page index, which every scan of it parses, would list
/// some sixty groups at the flushes' size; a one-symbol scan still reads
/// only that symbol's pages of a group (row selection by the page index).
const COMPACTED_ROW_GROUP_ROWS: usize = 262_144;

/// Rows per data page of a compacted file, where row selection picks pages:
/// a symbol's hour is about 4,000 rows at 50 symbols and 5 M trades a day,
/// which parquet-rs's default of 20,000 would read five times over.
const COMPACTED_PAGE_ROWS: usize = 8_192;

/// How a write cuts its rows into files, row groups and pages, and how hard
/// it compresses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileShape {
    /// A new file at this many bytes (None: the table's default, 512 MiB).
    pub target_size: Option<usize>,
    pub row_group_rows: usize,
    /// At most this many rows per data page (None: parquet-rs's 20,000).
    pub page_rows: Option<usize>,
    pub zstd_level: i32,
}

impl FileShape {
    /// A flush's (and the book log's) files.
    pub const FLUSH: FileShape =
        FileShape { target_size: None, row_group_rows: ROW_GROUP_ROWS, page_rows: None, zstd_level: 3 };

    /// Compaction's files, of about `target_size` bytes. zstd level 1:
    /// compression is the largest part of a rewrite (with level 1 and
    /// these pages the bench's rewrite went from 0.90 M to 1.25 M rows/s;
    /// the files' size is in docs/architecture.md).
    pub fn compacted(target_size: usize) -> Self {
        Self {
            target_size: Some(target_size),
            row_group_rows: COMPACTED_ROW_GROUP_ROWS,
            page_rows: Some(COMPACTED_PAGE_ROWS),
            zstd_level: 1,
        }
    }
}

/// Columns of K2's tables holding a value unique to each row.
const UNIQUE_PER_ROW: [&str; 3] = ["message_id", "trade_id", "quote_id"];

/// Columns queries filter on: they get page statistics (the column index),
/// which the reader's row selection uses; the rest keep row-group
/// statistics only. The page index is read whole by every scan of a file,
/// so a large compacted file's index, with every column's page bounds, was
/// parsed again on each query for columns nothing filters on.
const FILTERED: [&str; 6] = ["symbol", "exchange", "timestamp", "ingestion_timestamp", "kind", "source"];

/// Integer columns (instants, sequence numbers, update ids) that rise within
/// a symbol, as the files are sorted: delta-encoded they take a few bits a
/// row. A dictionary of them, which a flush's row group never overflows,
/// would hash every value to store it again with an index beside it.
const RISING: [&str; 6] =
    ["timestamp", "ingestion_timestamp", "source_sequence", "platform_sequence", "first_update_id", "final_update_id"];

/// Writes `rows` as data files named `{prefix}-…`, cut as `shape` says.
/// Many rows are cut
/// into contiguous runs, each built and written by a task of its own, one
/// per core: building the run and encoding its Parquet is most of a write's
/// cost. Since rows are sorted by symbol, each file covers a narrow symbol
/// range and its statistics still prune.
pub async fn write_ordered(
    table: &Table,
    rows: FileOrder,
    prefix: &str,
    shape: FileShape,
) -> Result<Vec<DataFile>, LakeError> {
    let writers =
        (rows.len() / ROWS_PER_WRITER).clamp(1, std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let (per, total, rows) = (rows.len().div_ceil(writers), rows.len(), Arc::new(rows));
    let mut tasks = Vec::with_capacity(writers);
    for i in 0..writers {
        let range = (i * per).min(total)..((i + 1) * per).min(total);
        let name = if writers == 1 { prefix.to_owned() } else { format!("{prefix}-w{i}") };
        let (table, rows) = (table.clone(), rows.clone());
        tasks.push(tokio::spawn(async move {
            let run = tokio::task::spawn_blocking(move || rows.rows(range))
                .await
                .map_err(|e| LakeError::Task { what: "sort", reason: e.to_string() })??;
            write_run(table, run, name, shape).await
        }));
    }
    let mut files = Vec::new();
    for task in tasks {
        let run = task.await.map_err(|e| LakeError::Task { what: "writer", reason: e.to_string() })??;
        files.extend(run);
    }
    Ok(files)
}

/// Writes `batch` (sorted) as one file per partition, cut as `shape` says.
pub async fn write_run(
    table: Table,
    batch: RecordBatch,
    prefix: String,
    shape: FileShape,
) -> Result<Vec<DataFile>, LakeError> {
    let metadata = table.metadata();
    let schema = metadata.current_schema().clone();
    let spec = metadata.default_partition_spec().clone();
    let props = WriterProperties::builder()
        // The table property naming the codec is not applied by iceberg-rust
        // 0.10's writer, so the codec is set here.
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(shape.zstd_level).map_err(|e| LakeError::Schema(e.to_string()))?,
        ))
        .set_max_row_group_row_count(Some(shape.row_group_rows))
        .set_statistics_enabled(EnabledStatistics::Chunk);
    let props = match shape.page_rows {
        Some(rows) => props.set_data_page_row_count_limit(rows),
        None => props,
    };
    let props = FILTERED
        .iter()
        .fold(props, |p, column| p.set_column_statistics_enabled(ColumnPath::from(*column), EnabledStatistics::Page));
    // A column whose every value is new (an id) overflows its dictionary
    // page within each row group and falls back to plain encoding, after
    // hashing every value for nothing.
    let props = UNIQUE_PER_ROW
        .iter()
        .fold(props, |p, column| p.set_column_dictionary_enabled(ColumnPath::from(*column), false));
    let props = RISING
        .iter()
        .fold(props, |p, column| {
            p.set_column_dictionary_enabled(ColumnPath::from(*column), false)
                .set_column_encoding(ColumnPath::from(*column), Encoding::DELTA_BINARY_PACKED)
        })
        .build();
    let parquet = ParquetWriterBuilder::new(props, schema.clone());
    let (io, locations) = (table.file_io().clone(), DefaultLocationGenerator::new(metadata)?);
    let names = DefaultFileNameGenerator::new(prefix, None, DataFileFormat::Parquet);
    let rolling = match shape.target_size {
        Some(size) => RollingFileWriterBuilder::new(parquet, size, io, locations, names),
        None => RollingFileWriterBuilder::new_with_default_file_size(parquet, io, locations, names),
    };
    let mut fanout = FanoutWriter::new(DataFileWriterBuilder::new(rolling));
    let splitter = RecordBatchPartitionSplitter::try_new_with_computed_values(schema, spec)?;
    for (key, part) in splitter.split(&batch)? {
        fanout.write(key, part).await?;
    }
    Ok(fanout.close().await?)
}

/// The outcome of a commit.
pub struct Committed {
    pub table: Table,
    /// What the table covers now: everything before plus this flush.
    pub covered: Covered,
    /// False when the table already held this flush (a commit that
    /// succeeded though its answer was lost): nothing was appended twice.
    pub appended: bool,
}

/// One flush to commit.
pub struct CommitRequest<'a> {
    pub files: Vec<DataFile>,
    /// This flush alone: its generation, its rows' marks and, in Kafka mode,
    /// the next offset of each partition it read.
    pub delta: &'a Covered,
    /// Where each of those partitions started: the offset the table held
    /// when this writer last saw it. Another writer having moved it since
    /// means this one no longer owns the partition: the flush is fenced.
    pub starts: &'a Offsets,
    /// This process's writer id.
    pub writer: &'a str,
    /// What the ladder shed of this table's rows meanwhile (may be empty).
    pub shed: &'a std::collections::BTreeMap<String, u64>,
    /// The flush's files not committed yet: its state file joins them.
    pub writing: &'a WritingScope,
}

/// Appends `files` as one snapshot covering everything before plus the
/// flush, unless this writer already committed that generation. The
/// snapshot's summary is computed against the table as loaded here, and the
/// catalog refuses the commit if another writer committed in between (the
/// tables are created with iceberg-rust's own retries off: a retry would
/// reapply this summary to a newer table, and so does its reload before
/// the first attempt: [`PinnedCatalog`] stops that); the caller retries then.
pub async fn commit(
    catalog: &Arc<dyn Catalog>,
    ident: &TableIdent,
    request: CommitRequest<'_>,
) -> Result<Committed, LakeError> {
    let CommitRequest { files, delta, starts, writer, shed, writing } = request;
    let table = catalog.load_table(ident).await?;
    let mut covered = latest_covered(&table).await?;
    covered.generation = delta.generation;
    covered.writer = writer.to_owned();
    if latest_generation_of(&table, writer)?.is_some_and(|mine| mine >= delta.generation) {
        return Ok(Committed { table, covered, appended: false });
    }
    for (topic, partitions) in &delta.offsets {
        for (&partition, &next) in partitions {
            let found = covered.offsets.get(topic).and_then(|m| m.get(&partition)).copied();
            let expected = starts.get(topic).and_then(|m| m.get(&partition)).copied();
            if found != expected {
                return Err(LakeError::Fenced { topic: topic.clone(), partition, expected, found });
            }
            covered.offsets.entry(topic.clone()).or_default().insert(partition, next);
        }
    }
    // Gaps close and open against the marks as they were before this flush.
    let none = Ranges::default();
    let streams: std::collections::BTreeSet<_> = delta.seen.keys().chain(delta.given_up.keys()).collect();
    for stream in streams {
        let high = covered.marks.0.get(stream).and_then(|m| m.source_sequence);
        let seen = delta.seen.get(stream).unwrap_or(&none);
        covered.open.after_flush(stream, high, seen, delta.given_up.get(stream).unwrap_or(&none));
    }
    covered.marks.merge(&delta.marks);
    let tx = Transaction::new(&table);
    let mut summary = covered.to_summary();
    if !shed.is_empty() {
        summary.insert(super::summary::SHED.to_owned(), serde_json::to_string(shed).unwrap_or_default());
    }
    let state = summary_file::write(&table, delta.generation, &mut summary).await?;
    writing.add([state.as_str()]);
    // No duplicate check: it reads every manifest of the table on each
    // commit (a cost growing with every flush), and it cannot find anything,
    // since each flush names its files with a prefix of its own and a retried
    // flush is recognised by its generation above.
    let action = tx.fast_append().with_check_duplicate(false).add_data_files(files).set_snapshot_properties(summary);
    let tx = action.apply(tx)?;
    let io = table.file_io().clone();
    let pinned = PinnedCatalog { inner: catalog.clone(), base: table };
    match tx.commit(&pinned).await {
        Ok(table) => Ok(Committed { table, covered, appended: true }),
        Err(e) => {
            // Refused, or its answer lost: in the second case the snapshot
            // may have landed naming the file, so it is left to the orphan
            // sweep, which keeps whatever a snapshot names.
            if matches!(e.kind(), iceberg::ErrorKind::CatalogCommitConflicts) {
                let _ = io.delete(&state).await;
            }
            Err(e.into())
        }
    }
}

/// The generation of the newest snapshot `writer` committed, if any.
fn latest_generation_of(table: &Table, writer: &str) -> Result<Option<u64>, LakeError> {
    for snapshot in super::summary::newest_first(table) {
        let props = &snapshot.summary().additional_properties;
        if props.get(super::summary::WRITER).is_some_and(|w| w == writer) {
            return Covered::generation_of(props)
                .map(Some)
                .map_err(|reason| LakeError::Summary { table: table_name(table), reason });
        }
    }
    Ok(None)
}

/// What the newest snapshot K2 wrote covers (generation 0 when there is
/// none). Snapshots other engines add on top (a compaction, an append) carry
/// no K2 keys, so the walk goes back along the parents to K2's latest.
pub async fn latest_covered(table: &Table) -> Result<Covered, LakeError> {
    let newest = super::summary::newest_first(table)
        .find(|s| s.summary().additional_properties.contains_key(super::summary::GENERATION));
    let Some(snapshot) = newest else { return Ok(Covered::default()) };
    let props = summary_file::read(table, &snapshot.summary().additional_properties).await?;
    Covered::from_summary(&props).map_err(|reason| LakeError::Summary { table: table_name(table), reason })
}

fn table_name(table: &Table) -> &'static str {
    match table.identifier().name() {
        "trades" => "trades",
        "quotes" => "quotes",
        _ => "a table K2 does not own",
    }
}

/// A name prefix no other flush uses: the default name generator counts
/// from zero per writer, and a reused name would overwrite a committed file.
pub fn unique_prefix(generation: u64) -> String {
    format!("k2-g{generation}-{}", uuid::Uuid::new_v4().simple())
}

pub type SharedCatalog = Arc<dyn Catalog>;
