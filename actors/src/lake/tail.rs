//! The tail: rows that have passed dedup but are not in a committed snapshot
//! yet. Each row belongs to one flush generation; a generation leaves the
//! tail in the same step (under the same lock) that makes its snapshot the
//! committed one. So a reader that takes the committed snapshot and the tail
//! together sees every row exactly once, also while a commit is under way.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use iceberg::table::Table;

use super::batch::{LakeRow, to_batch};
use super::summary::{Covered, Sources};
use super::writer::latest_covered;
use super::{LakeError, TableKind};

/// Pending rows become an Arrow batch (a sealed segment) at this size, or
/// when a reader or a flush needs them.
const SEAL_ROWS: usize = 8192;

struct Segment {
    generation: u64,
    batch: RecordBatch,
    sources: Sources,
}

struct State<R> {
    pending: Vec<R>,
    segments: VecDeque<Segment>,
    /// The generation rows join now.
    open_generation: u64,
    open_rows: usize,
    open_since: Option<Instant>,
    committed_table: Table,
    committed: Covered,
}

/// One table's tail.
pub struct Tail<R: LakeRow> {
    kind: TableKind,
    schema: SchemaRef,
    flushing: AtomicBool,
    /// Rows accepted since start.
    appended: AtomicU64,
    state: Mutex<State<R>>,
}

/// A consistent read: the committed table (pinned at its current snapshot)
/// and every row not in it.
#[derive(Clone)]
pub struct TailView {
    pub table: Table,
    pub snapshot_id: Option<i64>,
    pub generation: u64,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

/// What one flush writes.
pub struct FlushWork {
    pub kind: TableKind,
    pub generation: u64,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    /// What the snapshot will cover: everything committed before plus this.
    pub covered: Covered,
}

impl<R: LakeRow> Tail<R> {
    /// A tail continuing after what `table`'s latest snapshot covers.
    pub fn new(kind: TableKind, table: Table) -> Result<Self, LakeError> {
        let schema = std::sync::Arc::new(iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema())?);
        let committed = latest_covered(&table)?;
        Ok(Self {
            kind,
            schema,
            flushing: AtomicBool::new(false),
            appended: AtomicU64::new(0),
            state: Mutex::new(State {
                pending: Vec::new(),
                segments: VecDeque::new(),
                open_generation: committed.generation + 1,
                open_rows: 0,
                open_since: None,
                committed_table: table,
                committed,
            }),
        })
    }

    pub fn kind(&self) -> TableKind {
        self.kind
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn lock(&self) -> MutexGuard<'_, State<R>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds rows to the open generation; returns how many rows it holds.
    pub fn append(&self, rows: Vec<R>) -> Result<usize, ArrowError> {
        if rows.is_empty() {
            return Ok(self.lock().open_rows);
        }
        self.appended.fetch_add(rows.len() as u64, Ordering::Relaxed);
        let mut s = self.lock();
        s.open_rows += rows.len();
        s.open_since.get_or_insert_with(Instant::now);
        let mut rows = rows;
        if s.pending.is_empty() && rows.len() >= SEAL_ROWS {
            // A large batch becomes a segment directly, without a copy.
            let generation = s.open_generation;
            let segment = self.segment(generation, &rows)?;
            s.segments.push_back(segment);
            return Ok(s.open_rows);
        }
        s.pending.append(&mut rows);
        if s.pending.len() >= SEAL_ROWS {
            self.seal(&mut s)?;
        }
        Ok(s.open_rows)
    }

    fn segment(&self, generation: u64, rows: &[R]) -> Result<Segment, ArrowError> {
        let mut sources = Sources::default();
        for r in rows {
            sources.raise(r.exchange(), r.symbol(), r.source_sequence(), r.platform_sequence());
        }
        Ok(Segment { generation, batch: to_batch(&self.schema, rows)?, sources })
    }

    fn seal(&self, s: &mut State<R>) -> Result<(), ArrowError> {
        if s.pending.is_empty() {
            return Ok(());
        }
        let segment = self.segment(s.open_generation, &s.pending)?;
        s.pending.clear();
        s.segments.push_back(segment);
        Ok(())
    }

    /// The committed snapshot and every row after it, as one consistent view.
    pub fn view(&self) -> Result<TailView, ArrowError> {
        let mut s = self.lock();
        self.seal(&mut s)?;
        Ok(TailView {
            table: s.committed_table.clone(),
            snapshot_id: s.committed_table.metadata().current_snapshot_id(),
            generation: s.committed.generation,
            schema: self.schema.clone(),
            batches: s.segments.iter().map(|seg| seg.batch.clone()).collect(),
        })
    }

    /// Whether the open generation should be flushed now.
    pub fn due(&self, max_rows: usize, max_age: Duration) -> bool {
        let s = self.lock();
        s.open_rows > 0 && (s.open_rows >= max_rows || s.open_since.is_some_and(|t| t.elapsed() >= max_age))
    }

    /// Closes the open generation and hands it to a flush, unless a flush of
    /// this table is already running or there is nothing to flush. The caller
    /// must call [`Tail::flush_finished`] when done.
    pub fn take_flush(&self) -> Result<Option<FlushWork>, ArrowError> {
        if self.flushing.swap(true, Ordering::AcqRel) {
            return Ok(None);
        }
        let mut s = self.lock();
        if s.open_rows == 0 {
            self.flushing.store(false, Ordering::Release);
            return Ok(None);
        }
        if let Err(e) = self.seal(&mut s) {
            self.flushing.store(false, Ordering::Release);
            return Err(e);
        }
        let generation = s.open_generation;
        let mut covered = Covered { generation, sources: s.committed.sources.clone() };
        let mut batches = Vec::new();
        for seg in s.segments.iter().filter(|seg| seg.generation == generation) {
            covered.sources.merge(&seg.sources);
            batches.push(seg.batch.clone());
        }
        let rows = s.open_rows;
        s.open_generation += 1;
        s.open_rows = 0;
        s.open_since = None;
        Ok(Some(FlushWork { kind: self.kind, generation, batches, rows, covered }))
    }

    /// A flush's snapshot is committed: its rows leave the tail in the same
    /// step as the snapshot becomes the one readers see.
    pub fn committed(&self, covered: Covered, table: Table) {
        let mut s = self.lock();
        let generation = covered.generation;
        s.segments.retain(|seg| seg.generation > generation);
        s.committed_table = table;
        s.committed = covered;
    }

    /// Allows the next flush.
    pub fn flush_finished(&self) {
        self.flushing.store(false, Ordering::Release);
    }

    pub fn is_flushing(&self) -> bool {
        self.flushing.load(Ordering::Acquire)
    }

    /// Rows accepted but not yet durable.
    pub fn waiting_rows(&self) -> usize {
        let s = self.lock();
        s.pending.len() + s.segments.iter().map(|seg| seg.batch.num_rows()).sum::<usize>()
    }

    /// Rows accepted since this process started.
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    pub fn open_generation(&self) -> u64 {
        self.lock().open_generation
    }

    pub fn open_rows(&self) -> usize {
        self.lock().open_rows
    }

    /// The latest committed generation and what it covers.
    pub fn committed_covered(&self) -> Covered {
        self.lock().committed.clone()
    }

    /// The latest committed table handle (all snapshots, for time travel).
    pub fn committed_table(&self) -> Table {
        self.lock().committed_table.clone()
    }
}
