//! The Iceberg flusher: the pipeline's last stage hands accepted rows to the
//! tables' tails ([`crate::sinks::tails::TailSink`]); this actor closes a flush generation
//! when it holds `flush.max_rows` rows or its oldest row is `flush.max_age`
//! old, writes it as Parquet on the multi-threaded runtime and commits one
//! snapshot per table per flush. A failed write or commit is retried with
//! backoff, holding the rows in the tail (still queryable) until it succeeds.
//! An error no retry can fix (a refused write, a missing bucket) is not
//! retried on a timer: it trips the breaker of what failed, and the flush
//! tries again only when that breaker lets a probe through.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::{Notify, oneshot};

use super::batch::{FileOrder, LakeRow};
use super::tail::{FlushWork, Tail};
use super::writer::{self, CommitRequest, unique_prefix};
use super::writing::WritingScope;
use super::{Lake, LakeError, TableKind, Tails};
use crate::runtime::breaker::CircuitBreaker;
use crate::runtime::config::FlushConfig;
use crate::runtime::errors::Retryable;
use crate::runtime::health::Probe;
use crate::runtime::supervision::{Supervise, Supervision, supervised};
use crate::state::shared::Settlement;

pub const NAME: &str = "iceberg-flusher";

/// Flushes everything accepted so far; answers once it is committed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FlushAll {
    pub done: oneshot::Sender<()>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct FlushFinished(TableKind);

/// The breakers a flush feeds.
#[derive(Clone)]
pub struct LakeBreakers {
    /// `iceberg`: catalog loads and commits.
    pub catalog: Arc<CircuitBreaker>,
    /// `object-store`: data-file writes.
    pub storage: Arc<CircuitBreaker>,
}

/// The flushes an error no retry can fix holds up, by table: `k2 run`
/// waits for someone to fix the cause, `k2 load` gives up and says which.
#[derive(Debug, Clone, Default)]
pub struct Blocked(Arc<Mutex<BTreeMap<TableKind, Blocker>>>);

/// What holds one table's flush up.
#[derive(Debug, Clone)]
struct Blocker {
    /// The latest permanent error, with the table and generation.
    error: String,
    /// Permanent failures in a row: the first, then one per probe the
    /// breaker let through.
    failures: u32,
}

impl Blocked {
    fn failed(&self, kind: TableKind, error: String) {
        let mut blocked = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let blocker = blocked.entry(kind).or_insert(Blocker { error: String::new(), failures: 0 });
        blocker.error = error;
        blocker.failures += 1;
    }

    fn cleared(&self, kind: TableKind) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(&kind);
    }

    /// The error of a flush that failed permanently again at the probe
    /// after its breaker's cool-down: the cause is not passing.
    pub fn persistent(&self) -> Option<String> {
        let blocked = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        blocked.values().find(|b| b.failures >= 2).map(|b| b.error.clone())
    }
}

pub struct FlusherActor {
    lake: Lake,
    tails: Tails,
    config: FlushConfig,
    full: Arc<Notify>,
    /// The Iceberg catalog's and the object store's breakers, fed by every
    /// commit and every data-file write.
    breaker: LakeBreakers,
    blocked: Blocked,
    waiters: Vec<(u64, u64, oneshot::Sender<()>)>,
    supervision: Supervision,
}

impl FlusherActor {
    pub fn new(
        lake: Lake,
        tails: Tails,
        config: FlushConfig,
        full: Arc<Notify>,
        breaker: LakeBreakers,
        blocked: Blocked,
        supervision: Supervision,
    ) -> Self {
        Self { lake, tails, config, full, breaker, blocked, waiters: Vec::new(), supervision }
    }

    fn wait_for_full(&self, ctx: &mut Context<Self>) {
        let full = self.full.clone();
        ctx.spawn(async move { full.notified().await }.into_actor(self).map(|(), act, ctx| {
            act.check(ctx, false);
            act.wait_for_full(ctx);
        }));
    }

    fn check(&mut self, ctx: &mut Context<Self>, force: bool) {
        let (rows, age) = (self.config.max_rows, self.config.max_age);
        if force || self.tails.trades.due(rows, age) {
            self.start(ctx, self.tails.trades.clone());
        }
        if force || self.tails.quotes.due(rows, age) {
            self.start(ctx, self.tails.quotes.clone());
        }
        for tail in [TableKind::Trades, TableKind::Quotes] {
            let waiting = match tail {
                TableKind::Trades => self.tails.trades.waiting_rows(),
                TableKind::Quotes => self.tails.quotes.waiting_rows(),
            };
            metrics::gauge!("k2_lake_rows_waiting", "table" => tail.name()).set(waiting as f64);
        }
    }

    fn start<R: LakeRow>(&mut self, ctx: &mut Context<Self>, tail: Arc<Tail<R>>) {
        // Read before the rows are taken: a revocation in between makes the
        // flush stale, and its commit is refused.
        let epoch = self.tails.claims.epoch();
        let (mut work, guard) = match tail.take_flush() {
            Ok(Some(taken)) => taken,
            Ok(None) => return,
            Err(e) => {
                self.supervision.probe().error(&e.to_string());
                return;
            }
        };
        work.epoch = epoch;
        work.shed = self.tails.shed.take_unflushed(work.kind == TableKind::Trades);
        if work.kind == TableKind::Trades {
            work.delta.given_up = self.tails.given_up.take();
        }
        let kind = work.kind;
        let lake = self.lake.clone();
        let tails = self.tails.clone();
        let probe = self.supervision.probe().clone();
        let backoff = (self.config.retry_initial, self.config.retry_max);
        let (breaker, blocked) = (self.breaker.clone(), self.blocked.clone());
        let task = tokio::spawn(async move {
            // The guard allows the next flush when this task ends, also by a
            // panic; that flush then takes these rows again.
            let _guard = guard;
            let stops = Stops { probe: &probe, breaker: &breaker, blocked: &blocked };
            flush_until_committed(&lake, &tails, &tail, work, stops, backoff).await;
        });
        let addr = ctx.address();
        // The actor only learns when the task ends; it never waits on it.
        actix::spawn(async move {
            if let Err(e) = task.await {
                tracing::error!(table = kind.name(), error = %e, "flush task failed; its rows are flushed again");
                metrics::counter!("k2_lake_commit_failures_total", "table" => kind.name()).increment(1);
            }
            addr.do_send(FlushFinished(kind));
        });
    }

    fn answer_waiters(&mut self) {
        let (t, q) = self.tails.committed_generations();
        let mut i = 0;
        while i < self.waiters.len() {
            let (want_t, want_q, _) = self.waiters[i];
            if t >= want_t && q >= want_q {
                let (_, _, done) = self.waiters.swap_remove(i);
                let _ = done.send(());
            } else {
                i += 1;
            }
        }
    }
}

/// Where a flush reports its failures.
struct Stops<'a> {
    probe: &'a Probe,
    breaker: &'a LakeBreakers,
    blocked: &'a Blocked,
}

/// Writes and commits one flush until it is durable: a transient failure is
/// retried with backoff, a permanent one when its breaker lets a probe
/// through.
async fn flush_until_committed<R: LakeRow>(
    lake: &Lake,
    tails: &Tails,
    tail: &Tail<R>,
    work: FlushWork,
    Stops { probe, breaker, blocked }: Stops<'_>,
    (initial, max): (Duration, Duration),
) {
    let table = work.kind.name();
    let mut delay = initial;
    let mut files = None;
    // Until this flush commits or gives up, however long that takes, the
    // orphan sweep leaves its files alone.
    let writing = tails.writing.scope();
    loop {
        let started = Instant::now();
        match flush_once(lake, tails, tail, &work, &mut files, &writing).await {
            Ok((committed, bytes, file_count)) => {
                breaker.storage.success();
                breaker.catalog.success();
                blocked.cleared(work.kind);
                if let Some(shared) = tails.settle.get() {
                    shared.settle(settlement_of(&work));
                }
                let secs = started.elapsed().as_secs_f64();
                metrics::histogram!("k2_lake_commit_seconds", "table" => table).record(secs);
                if committed {
                    metrics::counter!("k2_lake_rows_written_total", "table" => table).increment(work.rows as u64);
                    metrics::counter!("k2_lake_bytes_written_total", "table" => table).increment(bytes);
                    metrics::counter!("k2_lake_commits_total", "table" => table).increment(1);
                    metrics::histogram!("k2_lake_files_per_commit", "table" => table).record(file_count as f64);
                }
                tracing::debug!(table, generation = work.generation, rows = work.rows, secs, "flush committed");
                return;
            }
            Err(e @ (LakeError::Revoked | LakeError::Fenced { .. })) => {
                // Its partitions belong to another flusher now, which reads
                // these rows again from the table's offsets.
                metrics::counter!("k2_kafka_flushes_fenced_total", "table" => table).increment(1);
                tracing::warn!(table, generation = work.generation, rows = work.rows, error = %e, "flush not committed");
                if matches!(e, LakeError::Fenced { .. }) {
                    probe.error(&e.to_string());
                    tails.claims.fence();
                    tails.discard();
                }
                blocked.cleared(work.kind);
                return;
            }
            Err(LakeError::Iceberg(e)) if e.kind() == iceberg::ErrorKind::CatalogCommitConflicts => {
                // Another writer committed first (several flushers share the
                // table): routine, not a failure. Retry at once against the
                // newer table.
                metrics::counter!("k2_lake_commit_conflicts_total", "table" => table).increment(1);
                tracing::debug!(table, generation = work.generation, error = %e, "commit conflict; retrying");
            }
            Err(e) => {
                // No files yet: the write failed (the object store);
                // otherwise the commit did (the catalog).
                let failed = if files.is_none() { &breaker.storage } else { &breaker.catalog };
                metrics::counter!("k2_lake_commit_failures_total", "table" => table).increment(1);
                let error = format!("flush of {table} generation {}: {e}", work.generation);
                if !e.is_permanent() {
                    failed.failure();
                    probe.error(&error);
                    // An open breaker (this failure was one too many, or
                    // the other table's flushes failed too) holds the retry
                    // until its cool-down lets a probe through: the rows wait
                    // in the tail, still queryable.
                    let wait = delay.max(failed.open_for());
                    tracing::warn!(table, generation = work.generation, error = %e, ?wait, "flush failed; retrying");
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(max);
                    continue;
                }
                // Retrying on a timer would repeat the error until someone
                // fixes its cause: open the breaker now and try again when
                // its cool-down lets a probe through. The rows stay in the
                // tail (queryable) meanwhile.
                failed.trip(&error);
                metrics::counter!("k2_lake_permanent_failures_total", "table" => table).increment(1);
                probe
                    .error(&format!("{error} (retrying cannot fix this; the {} breaker is open)", failed.dependency()));
                blocked.failed(work.kind, error);
                tracing::error!(
                    table,
                    generation = work.generation,
                    rows = work.rows,
                    dependency = failed.dependency(),
                    error = %e,
                    "flush failed with an error retrying cannot fix; rows kept until the breaker's probe succeeds"
                );
                // Another flush may trip it again meanwhile.
                loop {
                    let left = failed.open_for();
                    if left.is_zero() {
                        break;
                    }
                    tokio::time::sleep(left).await;
                }
                delay = initial;
            }
        }
    }
}

/// The ids and source marks a committed flush made durable.
fn settlement_of(work: &FlushWork) -> Settlement {
    use arrow::array::{Array, StringArray};
    let mut settlement = Settlement::default();
    for batch in &work.batches {
        let column = |name| batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<StringArray>());
        let (Some(ids), Some(exchanges)) = (column("message_id"), column("exchange")) else { continue };
        for i in 0..ids.len() {
            if let Ok(id) = uuid::Uuid::parse_str(ids.value(i)) {
                settlement.push_id(exchanges.value(i), id);
            }
        }
    }
    settlement.raise_marks(&work.delta.marks);
    settlement
}

/// One attempt. Data files written by an earlier attempt are reused, so a
/// failed commit does not rewrite them.
async fn flush_once<R: LakeRow>(
    lake: &Lake,
    tails: &Tails,
    tail: &Tail<R>,
    work: &FlushWork,
    files: &mut Option<Vec<iceberg::spec::DataFile>>,
    writing: &WritingScope,
) -> Result<(bool, u64, usize), LakeError> {
    let ident = lake.ident(work.kind);
    if files.is_none() {
        let table = lake.catalog().load_table(&ident).await?;
        let schema = tail.schema().clone();
        let batches = work.batches.clone();
        // Sorting a large flush is CPU work: keep it off the runtime's I/O
        // path.
        let rows = tokio::task::spawn_blocking(move || FileOrder::of(&schema, batches))
            .await
            .map_err(|e| LakeError::Task { what: "sort", reason: e.to_string() })??;
        let written =
            writer::write_ordered(&table, rows, &unique_prefix(work.generation), writer::FileShape::FLUSH).await?;
        writing.add(written.iter().map(|f| f.file_path()));
        *files = Some(written);
    }
    let data_files = files.clone().unwrap_or_default();
    let bytes = data_files.iter().map(|f| f.file_size_in_bytes()).sum();
    let count = data_files.len();
    tails.pressure.before_commit().await.map_err(LakeError::Injected)?;
    // Held through the commit: a revocation waits for it.
    let _permit = tails.claims.admit(work.epoch, &work.delta.offsets)?;
    let request = CommitRequest {
        files: data_files,
        delta: &work.delta,
        starts: &work.starts,
        writer: lake.writer(),
        shed: &work.shed,
        writing,
    };
    let _commit = tails.commit_lock.lock().await;
    let done = writer::commit(lake.catalog(), &ident, request).await?;
    tail.committed(done.covered, done.table);
    Ok((done.appended, bytes, count))
}

impl Actor for FlusherActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.supervision.started();
        let tick = (self.config.max_age / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
        ctx.run_interval(tick, |act, ctx| act.check(ctx, false));
        self.wait_for_full(ctx);
    }
}

supervised!(FlusherActor);

impl Supervise for FlusherActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    /// The rows live in the tails, which outlive a restart.
    fn reset(&mut self) {}
}

impl Handler<FlushAll> for FlusherActor {
    type Result = ();

    fn handle(&mut self, msg: FlushAll, ctx: &mut Context<Self>) {
        // Sent with a plain `send` (Service::flush), not through a counted
        // Link: the mailbox depth never counted it.
        self.supervision.probe().handled(0);
        // Everything accepted so far is in the open generation or earlier.
        let want = |open_rows: usize, open: u64| if open_rows > 0 { open } else { open - 1 };
        let want_t = want(self.tails.trades.open_rows(), self.tails.trades.open_generation());
        let want_q = want(self.tails.quotes.open_rows(), self.tails.quotes.open_generation());
        self.waiters.push((want_t, want_q, msg.done));
        self.check(ctx, true);
        self.answer_waiters();
    }
}

impl Handler<FlushFinished> for FlusherActor {
    type Result = ();

    fn handle(&mut self, FlushFinished(kind): FlushFinished, ctx: &mut Context<Self>) {
        self.supervision.probe().handled(0);
        // A waiter may need a generation that opened while this flush ran.
        let force = !self.waiters.is_empty();
        match kind {
            TableKind::Trades if force || self.tails.trades.due(self.config.max_rows, self.config.max_age) => {
                self.start(ctx, self.tails.trades.clone())
            }
            TableKind::Quotes if force || self.tails.quotes.due(self.config.max_rows, self.config.max_age) => {
                self.start(ctx, self.tails.quotes.clone())
            }
            _ => {}
        }
        self.answer_waiters();
    }
}
