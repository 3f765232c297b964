//! The tail: rows that have passed dedup but are not in a committed snapshot
//! yet. Each row belongs to one flush generation; a generation leaves the
//! tail in the same step (under the same lock) that makes its snapshot the
//! committed one. So a reader that takes the committed snapshot and the tail
//! together sees every row exactly once, also while a commit is under way.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use iceberg::table::Table;

use super::batch::{LakeRow, to_batch};
use super::summary::{Covered, Offsets, merge_offsets};
use super::writer::latest_covered;
use super::{LakeError, TableKind};
use crate::state::marks::{Ranges, SequenceMarks, StreamKey};

/// Whether a table tracks the open gaps of this exchange's trade numbers:
/// those of exchanges whose gaps K2 can recover (the numbers are contiguous
/// and the exchange serves missed trades), so an open gap can close.
pub fn tracks_gaps(exchange: &str) -> bool {
    exchange == k2_core::source::binance::EXCHANGE
}

/// Pending rows become an Arrow batch (a sealed segment) at this size, or
/// when a reader or a flush needs them.
const SEAL_ROWS: usize = 8192;

struct Segment {
    generation: u64,
    batch: RecordBatch,
    /// Lowest and highest timestamp in the batch (µs): readers skip segments
    /// outside what they look for.
    span: (i64, i64),
    marks: SequenceMarks,
    /// Trade numbers per stream, where gaps are tracked (see
    /// [`tracks_gaps`]).
    seen: BTreeMap<StreamKey, Ranges>,
    /// Kafka mode: next offset per partition after the rows it holds.
    offsets: Offsets,
    /// When its first row arrived.
    since: Instant,
}

struct State<R> {
    pending: Vec<R>,
    pending_since: Option<Instant>,
    pending_offsets: Offsets,
    segments: VecDeque<Segment>,
    /// The generation rows join now.
    open_generation: u64,
    open_rows: usize,
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
    /// Told of every commit (a batch load waits on it for room).
    commits: tokio::sync::Notify,
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
    /// Each batch's (lowest, highest) timestamp, µs.
    pub spans: Vec<(i64, i64)>,
}

/// The lowest and highest timestamp of `rows`, µs.
pub(crate) fn span<R: LakeRow>(rows: &[R]) -> (i64, i64) {
    rows.iter().fold((i64::MAX, i64::MIN), |(lo, hi), r| (lo.min(r.timestamp_micros()), hi.max(r.timestamp_micros())))
}

/// Held by a running flush; dropping it allows the next one.
pub struct FlushGuard<R: LakeRow> {
    tail: Arc<Tail<R>>,
}

impl<R: LakeRow> Drop for FlushGuard<R> {
    fn drop(&mut self) {
        self.tail.flushing.store(false, Ordering::Release);
    }
}

/// What one flush writes.
pub struct FlushWork {
    pub kind: TableKind,
    pub generation: u64,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    /// This flush alone: generation, marks and (Kafka mode) the next offset
    /// of each partition it read. The commit adds it to what the table
    /// covers.
    pub delta: Covered,
    /// Where those partitions stood in the table when this process last saw
    /// it: a commit finding otherwise is fenced.
    pub starts: Offsets,
    /// The claims' epoch when the rows were taken (set by the flusher).
    pub epoch: u64,
    /// What the ladder shed of this table's rows since the last flush (set
    /// by the flusher; recorded in the snapshot's summary).
    pub shed: std::collections::BTreeMap<String, u64>,
}

impl<R: LakeRow> Tail<R> {
    /// A tail continuing after what `table`'s latest snapshot covers.
    pub async fn new(kind: TableKind, table: Table) -> Result<Self, LakeError> {
        let schema = std::sync::Arc::new(iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema())?);
        let committed = latest_covered(&table).await?;
        Ok(Self {
            kind,
            schema,
            flushing: AtomicBool::new(false),
            appended: AtomicU64::new(0),
            state: Mutex::new(State {
                pending: Vec::new(),
                pending_since: None,
                pending_offsets: Offsets::new(),
                segments: VecDeque::new(),
                open_generation: committed.generation + 1,
                open_rows: 0,
                committed_table: table,
                committed,
            }),
            commits: tokio::sync::Notify::new(),
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
    /// Rows that cannot become Arrow (a bug: they were validated at ingest)
    /// are dropped, counted and reported; the tail stays usable.
    pub fn append(&self, rows: Vec<R>) -> Result<usize, ArrowError> {
        self.append_consumed(rows, &Offsets::new())
    }

    /// As [`Tail::append`], for rows consumed from Kafka: `offsets` (next
    /// offset per partition after these rows) travel with them into the
    /// snapshot that commits them.
    pub fn append_consumed(&self, rows: Vec<R>, offsets: &Offsets) -> Result<usize, ArrowError> {
        if rows.is_empty() && offsets.is_empty() {
            return Ok(self.lock().open_rows);
        }
        let n = rows.len();
        let mut s = self.lock();
        merge_offsets(&mut s.pending_offsets, offsets);
        if s.pending.is_empty() && n >= SEAL_ROWS {
            // A large batch becomes a segment directly, without a copy.
            let mut segment =
                self.segment(s.open_generation, &rows, Instant::now()).inspect_err(|_| self.dropped(n))?;
            segment.offsets = std::mem::take(&mut s.pending_offsets);
            s.segments.push_back(segment);
            s.open_rows += n;
        } else {
            let mut rows = rows;
            s.pending.append(&mut rows);
            s.pending_since.get_or_insert_with(Instant::now);
            s.open_rows += n;
            if s.pending.len() >= SEAL_ROWS {
                self.seal(&mut s)?;
            }
        }
        self.appended.fetch_add(n as u64, Ordering::Relaxed);
        Ok(s.open_rows)
    }

    fn dropped(&self, n: usize) {
        metrics::counter!("k2_lake_rows_dropped_total", "table" => self.kind.name()).increment(n as u64);
        tracing::error!(table = self.kind.name(), rows = n, "rows could not be converted to Arrow and were dropped");
    }

    fn segment(&self, generation: u64, rows: &[R], since: Instant) -> Result<Segment, ArrowError> {
        let mut marks = SequenceMarks::default();
        let mut numbers: BTreeMap<StreamKey, Vec<i64>> = BTreeMap::new();
        for r in rows {
            marks.raise(r.exchange(), r.symbol(), r.source_sequence(), r.platform_sequence());
            if self.kind == TableKind::Trades
                && tracks_gaps(r.exchange())
                && let Some(n) = r.source_sequence()
            {
                // Symbols are short: the key is built inline, no allocation.
                numbers.entry((r.exchange().clone(), r.symbol().clone())).or_default().push(n);
            }
        }
        let seen = numbers.into_iter().map(|(k, v)| (k, Ranges::of(v))).collect();
        Ok(Segment {
            generation,
            batch: to_batch(&self.schema, rows)?,
            span: span(rows),
            marks,
            seen,
            offsets: Offsets::new(),
            since,
        })
    }

    /// Turns pending rows into a segment; on failure they are dropped (and
    /// uncounted), so one bad row cannot wedge the table.
    fn seal(&self, s: &mut State<R>) -> Result<(), ArrowError> {
        if s.pending.is_empty() {
            return Ok(());
        }
        let since = s.pending_since.take().unwrap_or_else(Instant::now);
        let result = self.segment(s.open_generation, &s.pending, since);
        let n = s.pending.len();
        s.pending.clear();
        match result {
            Ok(mut segment) => {
                segment.offsets = std::mem::take(&mut s.pending_offsets);
                s.segments.push_back(segment);
                Ok(())
            }
            Err(e) => {
                s.open_rows = s.open_rows.saturating_sub(n);
                self.dropped(n);
                Err(e)
            }
        }
    }

    /// The committed snapshot and every row after it, as one consistent view.
    /// Pending rows are converted for the reader but stay pending, so frequent
    /// reads do not cut the tail into tiny segments.
    pub fn view(&self) -> Result<TailView, ArrowError> {
        let s = self.lock();
        let mut batches: Vec<RecordBatch> = s.segments.iter().map(|seg| seg.batch.clone()).collect();
        let mut spans: Vec<(i64, i64)> = s.segments.iter().map(|seg| seg.span).collect();
        if !s.pending.is_empty() {
            batches.push(to_batch(&self.schema, &s.pending)?);
            spans.push(span(&s.pending));
        }
        Ok(TailView {
            table: s.committed_table.clone(),
            snapshot_id: s.committed_table.metadata().current_snapshot_id(),
            generation: s.committed.generation,
            schema: self.schema.clone(),
            batches,
            spans,
        })
    }

    /// How long the oldest row not yet committed has waited.
    pub fn oldest_waiting(&self) -> Option<Duration> {
        let s = self.lock();
        s.segments.front().map(|seg| seg.since).into_iter().chain(s.pending_since).min().map(|t| t.elapsed())
    }

    /// Whether a flush should start now: rows wait, and either the open
    /// generation holds `max_rows` or the oldest waiting row is `max_age` old
    /// (rows of a flush that failed count: they are retried this way).
    pub fn due(&self, max_rows: usize, max_age: Duration) -> bool {
        if self.is_flushing() {
            return false;
        }
        let s = self.lock();
        let oldest = s.segments.front().map(|seg| seg.since).into_iter().chain(s.pending_since).min();
        oldest.is_some() && (s.open_rows >= max_rows || oldest.is_some_and(|t| t.elapsed() >= max_age))
    }

    /// Closes the open generation and hands every uncommitted row to a flush,
    /// unless a flush of this table is already running or nothing waits. The
    /// returned guard allows the next flush when dropped (also when the flush
    /// task panics).
    pub fn take_flush(self: &Arc<Self>) -> Result<Option<(FlushWork, FlushGuard<R>)>, ArrowError> {
        if self.flushing.swap(true, Ordering::AcqRel) {
            return Ok(None);
        }
        let guard = FlushGuard { tail: self.clone() };
        let mut s = self.lock();
        // A seal failure has dropped (and reported) the bad rows already.
        let _ = self.seal(&mut s);
        if s.segments.is_empty() {
            return Ok(None);
        }
        let generation = s.open_generation;
        let mut delta = Covered { generation, ..Covered::default() };
        let mut batches = Vec::with_capacity(s.segments.len());
        let mut rows = 0;
        // Every segment not yet committed: the open generation's, and those of
        // an earlier flush that did not finish (its task failed).
        for seg in &s.segments {
            delta.marks.merge(&seg.marks);
            for (stream, ranges) in &seg.seen {
                delta.seen.entry(stream.clone()).or_default().union(ranges);
            }
            merge_offsets(&mut delta.offsets, &seg.offsets);
            rows += seg.batch.num_rows();
            batches.push(seg.batch.clone());
        }
        s.open_generation += 1;
        s.open_rows = 0;
        let starts = s.committed.offsets.clone();
        Ok(Some((
            FlushWork { kind: self.kind, generation, batches, rows, delta, starts, epoch: 0, shed: Default::default() },
            guard,
        )))
    }

    /// A flush's snapshot is committed: its rows leave the tail in the same
    /// step as the snapshot becomes the one readers see.
    pub fn committed(&self, covered: Covered, table: Table) {
        let mut s = self.lock();
        let generation = covered.generation;
        s.segments.retain(|seg| seg.generation > generation);
        s.committed_table = table;
        s.committed = covered;
        drop(s);
        self.commits.notify_waiters();
    }

    /// A maintenance snapshot (compaction, retention) landed on the
    /// committed one: queries read it from now on. It covers what its parent
    /// did, so nothing else changes; taken only while its parent is still
    /// the committed snapshot (a flush committing meanwhile is newer).
    pub fn maintained(&self, table: Table) {
        let mut s = self.lock();
        let parent = table.metadata().current_snapshot().and_then(|c| c.parent_snapshot_id());
        if parent.is_some() && parent == s.committed_table.metadata().current_snapshot_id() {
            s.committed_table = table;
        }
    }

    /// Resolves at this table's next commit.
    pub async fn next_commit(&self) {
        self.commits.notified().await;
    }

    /// Throws away every uncommitted row: their Kafka partitions were
    /// revoked, and their new owner reads them again from the table's
    /// offsets. A flush already holding some is refused at commit.
    pub fn discard(&self) -> usize {
        let mut s = self.lock();
        let n = s.pending.len() + s.segments.iter().map(|seg| seg.batch.num_rows()).sum::<usize>();
        s.pending.clear();
        s.pending_since = None;
        s.pending_offsets.clear();
        s.segments.clear();
        s.open_rows = 0;
        n
    }

    /// Continues after `table` as it is now (another writer may have
    /// committed): what it covers becomes the start of this tail's next
    /// flush. Uncommitted rows are discarded. This tail's own generation
    /// count goes on.
    pub async fn adopt(&self, table: Table) -> Result<Covered, LakeError> {
        let latest = latest_covered(&table).await?;
        self.discard();
        let mut s = self.lock();
        s.committed = Covered { generation: s.committed.generation, writer: s.committed.writer.clone(), ..latest };
        s.committed_table = table;
        Ok(s.committed.clone())
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

    /// The flush generation the latest committed snapshot covers, without
    /// copying what else it covers (marks, open gaps, offsets).
    pub fn committed_generation(&self) -> u64 {
        self.lock().committed.generation
    }

    /// The latest committed table handle (all snapshots, for time travel).
    pub fn committed_table(&self) -> Table {
        self.lock().committed_table.clone()
    }
}
