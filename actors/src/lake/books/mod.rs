//! Order books, stored: every record the order-book actors make (see
//! [`k2_core::book::replay`]) lands in `market.book_updates` and
//! `market.book_snapshots`, and a book is rebuilt as K2 held it at any
//! instant from those tables plus the records not committed yet (hybrid,
//! exact).
//!
//! - [`tables`]: the schemas, and records to and from rows.
//! - [`flusher`]: the supervised actor committing on a schedule.
//!
//! [`BookLog`] stamps each record with K2's instant as it is recorded
//! (strictly increasing, and after everything the tables held when the
//! process started), holds it in a tail until a commit lands it, and says
//! in each commit's summary the instant the tables are complete up to.
//! Every segment of a book ends with an `unsynced` record: the actor's own
//! (a gap, a reconnect...), `stop` for each synced book at a graceful stop,
//! and after a crash `restart`, which the next process commits first of
//! all, stamped just after the instant the tables were complete up to, so
//! a span lost in a crash (records stamped, never committed) reads as
//! unsynced, never as a stale book.
//!
//! In Kafka mode the producers stamp the records ([`stamp`],
//! `kafka::book_producer`) and the flushers' book lander feeds them here
//! ([`landing`]): each commit then records the offsets it covers, and a
//! record lands once whichever flusher reads it.

pub mod flusher;
pub mod landing;
#[cfg(test)]
mod landing_tests;
pub mod tables;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::TryStreamExt;
use iceberg::expr::Reference;
use iceberg::spec::Datum;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{TableCreation, TableIdent};
use k2_core::book::replay::records::PERIODIC;
use k2_core::book::replay::{Replayed, Replayer, replay};
use k2_core::book::{Level, Side};
use k2_core::{BookEventKind, BookEventV2, Timestamp};
use rust_decimal::Decimal;

use super::writer::{FileShape, unique_prefix, write_run};
use super::{Lake, LakeError};
use tables::BookTable;

/// Summary key: every record stamped before this instant (µs) is in this
/// snapshot or an earlier one.
pub const COMPLETE_UNTIL: &str = "k2.books-complete-until";

/// Kafka mode: how long a query waits for the lander to read the book's
/// partition to its end (a lander further behind answers as far as it has
/// read, counted in `k2_book_queries_behind_log_total`).
const LOG_WAIT: Duration = Duration::from_secs(5);

/// The cause of the marker a Kafka-mode producer puts before each book's
/// first record (and of the one after a crash in embedded mode).
pub const RESTART: &str = "restart";

/// The book tables, their tails, and K2's clock for book records.
pub struct BookLog {
    lake: Lake,
    state: Mutex<State>,
    /// One commit at a time.
    committing: tokio::sync::Mutex<()>,
    /// The instant the tables were complete up to when this process
    /// opened them (None: they held no records).
    resumed_after: Option<Timestamp>,
    /// `book.snapshot_every` (zero: none are taken).
    periodic_every: Duration,
    /// Kafka mode: where the book topics' partitions end now.
    log_ends: std::sync::OnceLock<Arc<dyn LogEnds>>,
}

/// Where a partition of a book topic ends now (its high watermark); the
/// Kafka side implements it, so the lake needs no Kafka client.
pub trait LogEnds: Send + Sync {
    /// Blocking; `None` when the broker does not say.
    fn end_of(&self, topic: &str, partition: i32) -> Option<i64>;
}

struct State {
    /// The last instant stamped.
    clock: i64,
    /// Whether each book's last record here left it synced.
    synced: HashMap<Book, bool>,
    /// Every sync change of every book, stored or not, in K2's order: where
    /// a replay starts is found here, not by scanning the tables (they are
    /// few: a book changes state a few times an hour).
    changes: HashMap<Book, Vec<BookEventV2>>,
    /// Per table: as last committed, records not yet taken by a commit,
    /// and records a commit is landing now (visible to queries meanwhile).
    tables: [Table; 2],
    tails: [Vec<BookEventV2>; 2],
    landing: [Arc<Vec<BookEventV2>>; 2],
    /// Kafka mode: where the records taken from the book topics stand.
    kafka: Option<landing::Landing>,
}

/// (exchange, symbol).
type Book = (compact_str::CompactString, compact_str::CompactString);

fn slot(table: BookTable) -> usize {
    match table {
        BookTable::Updates => 0,
        BookTable::Snapshots => 1,
    }
}

impl BookLog {
    /// Opens (creating on first use) both book tables. `periodic_every` is
    /// `book.snapshot_every`: how far back a query looks for a periodic
    /// snapshot to start from (twice it).
    pub async fn open(lake: &Lake, periodic_every: Duration) -> Result<Arc<Self>, LakeError> {
        Self::load(lake, periodic_every, false).await
    }

    async fn load(lake: &Lake, periodic_every: Duration, kafka: bool) -> Result<Arc<Self>, LakeError> {
        // The series a dashboard shows exist at 0 from the start.
        for start in ["periodic", "sync"] {
            metrics::counter!("k2_book_replays_total", "start" => start).increment(0);
        }
        let updates = open_table(lake, BookTable::Updates).await?;
        let snapshots = open_table(lake, BookTable::Snapshots).await?;
        // The chains of updates and sync changes are in book_updates: a
        // crash loses what was stamped after its last commit, whatever
        // book_snapshots holds (a snapshot without its sync replays as
        // unsynced).
        let resumed_after = complete_until(&updates);
        let latest = [&updates, &snapshots].iter().filter_map(|t| complete_until(t)).max();
        // The books an earlier process left synced: it crashed (a stop
        // ends them), and what it held after `resumed_after` is lost.
        let changes = load_changes(&updates).await?;
        let landing = match kafka {
            true => Some(landing::Landing::new([&updates, &snapshots], 0)?),
            false => None,
        };
        let mut clock = resumed_after.map_or_else(|| Timestamp::now().as_micros(), Timestamp::as_micros);
        let mut markers = Vec::new();
        // Kafka mode: the producers mark their restarts.
        for ((exchange, symbol), list) in changes.iter().filter(|_| !kafka) {
            let Some(r) = list.last() else { continue };
            if r.kind == BookEventKind::Synced {
                clock += 1;
                let at = Timestamp::from_micros(clock);
                let mut m = k2_core::book::replay::records::state(
                    exchange,
                    symbol,
                    BookEventKind::Unsynced,
                    0,
                    Some("restart"),
                    at,
                );
                m.ingestion_timestamp = at;
                markers.push(m);
            }
        }
        let log = Arc::new(Self {
            lake: lake.clone(),
            state: Mutex::new(State {
                clock: clock.max(Timestamp::now().as_micros()).max(latest.map_or(0, Timestamp::as_micros)),
                synced: HashMap::new(),
                changes,
                tables: [updates, snapshots],
                tails: [Vec::new(), Vec::new()],
                landing: [Arc::new(Vec::new()), Arc::new(Vec::new())],
                kafka: landing,
            }),
            committing: tokio::sync::Mutex::new(()),
            resumed_after,
            periodic_every,
            log_ends: std::sync::OnceLock::new(),
        });
        if !markers.is_empty() {
            tracing::info!(
                books = markers.len(),
                "books an earlier process left synced are marked unsynced from where the tables end"
            );
            {
                let mut state = log.state();
                for m in &markers {
                    state.changes.entry((m.exchange.clone(), m.symbol.clone())).or_default().push(m.clone());
                }
                state.tails[slot(BookTable::Updates)].extend(markers);
            }
            log.commit().await?;
        }
        Ok(log)
    }

    /// Ends every book this process left synced with `unsynced` (`stop`),
    /// then commits everything.
    pub async fn close(&self) -> Result<usize, LakeError> {
        // Kafka mode: the producers end their books.
        if self.state().kafka.is_some() {
            return self.commit().await;
        }
        let ends: Vec<BookEventV2> = {
            let state = self.state();
            state
                .synced
                .iter()
                .filter(|(_, synced)| **synced)
                .map(|((exchange, symbol), _)| {
                    k2_core::book::replay::records::state(
                        exchange,
                        symbol,
                        BookEventKind::Unsynced,
                        0,
                        Some("stop"),
                        Timestamp::now(),
                    )
                })
                .collect()
        };
        self.record(ends);
        self.commit().await
    }

    /// Kafka mode: lets queries wait for the lander to reach the log's end.
    pub fn set_log_ends(&self, ends: Arc<dyn LogEnds>) {
        let _ = self.log_ends.set(ends);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The instant the tables were complete up to when the process started.
    pub fn resumed_after(&self) -> Option<Timestamp> {
        self.resumed_after
    }

    /// Takes `records` (one actor's, in the order it made them), stamping
    /// each with the next instant: an update keeps its venue time in
    /// `timestamp`, and so does a periodic snapshot (its last update's); a
    /// venue snapshot or state change is timed by the stamp.
    pub fn record(&self, records: Vec<BookEventV2>) {
        let mut state = self.state();
        let now = Timestamp::now().as_micros();
        for mut r in records {
            stamp(&mut state.clock, now, &mut r);
            state.take(r);
        }
    }

    /// `table` as this log last committed it.
    pub fn table(&self, table: BookTable) -> Table {
        self.state().tables[slot(table)].clone()
    }

    /// `table` as this log last committed it and its records not committed
    /// yet, in K2's order, taken at one instant: each record is in one or
    /// the other, never both, as a commit swaps them under the same lock.
    /// What an SQL query of the table reads.
    pub fn held(&self, table: BookTable) -> (Table, Vec<BookEventV2>) {
        let i = slot(table);
        let (committed, landing, mut pending) = {
            let state = self.state();
            (state.tables[i].clone(), state.landing[i].clone(), state.tails[i].clone())
        };
        pending.splice(0..0, landing.iter().cloned());
        // Kafka mode takes records in log order, which is not K2's across
        // producers.
        pending.sort_by_key(|r| r.ingestion_timestamp);
        (committed, pending)
    }

    /// Records waiting to be committed.
    pub fn waiting(&self) -> usize {
        let state = self.state();
        state.tails.iter().map(Vec::len).sum::<usize>() + state.landing.iter().map(|l| l.len()).sum::<usize>()
    }

    /// Commits every record taken so far, table by table; how many.
    pub async fn commit(&self) -> Result<usize, LakeError> {
        let _one = self.committing.lock().await;
        // Both tails are taken at one instant, and the snapshots land
        // first: a crash between the two commits can leave a snapshot
        // without its sync (which nothing replays from), never a sync
        // without its snapshot.
        let cut = {
            let mut state = self.state();
            for i in 0..2 {
                let taken = std::mem::take(&mut state.tails[i]);
                if !taken.is_empty() {
                    // A failed commit's records go first, in order.
                    let mut all = state.landing[i].as_ref().clone();
                    all.extend(taken);
                    state.landing[i] = Arc::new(all);
                    if let Some(k) = state.kafka.as_mut() {
                        k.cut(i);
                    }
                }
            }
            state.clock
        };
        let mut landed = self.commit_table(BookTable::Snapshots, cut).await?;
        landed += self.commit_table(BookTable::Updates, cut).await?;
        Ok(landed)
    }

    async fn commit_table(&self, table: BookTable, cut: i64) -> Result<usize, LakeError> {
        let i = slot(table);
        let (records, base) = {
            let state = self.state();
            (state.landing[i].clone(), state.tables[i].clone())
        };
        if records.is_empty() {
            return Ok(0);
        }
        if self.state().kafka.is_some() {
            return self.commit_landed(table, records).await;
        }
        let ident = base.identifier().clone();
        let current = self.lake.catalog().load_table(&ident).await?;
        // A commit that landed though its answer was lost left its records
        // here, and the records taken since joined them: those it covered
        // (stamped up to the instant it named) are in the table already.
        // Every record is stamped after the instant any earlier commit of
        // this writer named, so the rest are not.
        let landed = landed_until(&current, self.lake.writer());
        let unlanded: Vec<BookEventV2> =
            records.iter().filter(|r| landed.is_none_or(|t| r.ingestion_timestamp.as_micros() > t)).cloned().collect();
        let committed = if unlanded.is_empty() {
            current
        } else {
            let schema = Arc::new(iceberg::arrow::schema_to_arrow_schema(current.metadata().current_schema())?);
            let mut sorted = unlanded;
            sorted.sort_by(|a, b| (&a.symbol, a.ingestion_timestamp).cmp(&(&b.symbol, b.ingestion_timestamp)));
            let batch = tables::to_batch(table, &schema, &sorted)?;
            let files = write_run(current.clone(), batch, unique_prefix(0), FileShape::FLUSH).await?;
            let summary = HashMap::from([
                (COMPLETE_UNTIL.to_owned(), cut.to_string()),
                (super::summary::WRITER.to_owned(), self.lake.writer().to_owned()),
            ]);
            let tx = Transaction::new(&current);
            // Unique file names and the landed check above make iceberg's
            // duplicate scan (every manifest, every commit) moot.
            let action = tx.fast_append().with_check_duplicate(false);
            let tx = action.add_data_files(files).set_snapshot_properties(summary).apply(tx)?;
            tx.commit(self.lake.catalog().as_ref()).await?
        };
        let mut state = self.state();
        state.tables[i] = committed;
        state.landing[i] = Arc::new(Vec::new());
        metrics::counter!("k2_book_records_committed_total", "table" => table.name()).increment(records.len() as u64);
        Ok(records.len())
    }

    /// `symbol`'s book as K2 held it at `at`, from the tables and the
    /// records not committed yet.
    pub async fn book_at(&self, exchange: &str, symbol: &str, at: Timestamp) -> Result<Replayed, LakeError> {
        self.read_to_now(exchange, symbol, LOG_WAIT).await;
        let (tables, pending, from) = {
            let state = self.state();
            // The latest sync change at or before `at` is where the book
            // starts (or, unsynced, all there is to say).
            let Some(last) = state.last_change(exchange, symbol, at) else { return Ok(replay(&[])) };
            if last.kind == BookEventKind::Unsynced {
                return Ok(replay(std::slice::from_ref(last)));
            }
            // The snapshot of a sync is stamped just before its `synced`.
            let from = Timestamp::from_micros(last.ingestion_timestamp.as_micros() - 1);
            (state.tables.clone(), state.pending(exchange, symbol, from, at), from)
        };
        let (from, pending) = self.periodic_start(&tables[1], pending, (exchange, symbol), from, at).await?;
        let records = stored_and_pending(&tables, pending, (exchange, symbol), from, at).await?;
        Ok(replay(&records))
    }

    /// `symbol`'s depth updates stamped in `[from, until]`, in K2's order,
    /// from `book_updates` and the records not committed yet: what a replay
    /// of its `@depth` stream sends.
    pub async fn updates(
        &self,
        exchange: &str,
        symbol: &str,
        from: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<BookEventV2>, LakeError> {
        self.read_to_now(exchange, symbol, LOG_WAIT).await;
        let (table, mut pending) = {
            let state = self.state();
            (state.tables[0].clone(), state.pending(exchange, symbol, from, until))
        };
        pending.retain(|r| r.kind == BookEventKind::Update);
        let book = Some((exchange, symbol));
        let stored = scan(&table, BookTable::Updates, book, Some(from), until, Rows::Updates).await?;
        Ok(with_pending(stored, pending))
    }

    /// Where a replay to `at` of a book synced since `from` starts: at the
    /// latest periodic snapshot in `[from, at]` (a replay from it answers
    /// as one from the sync: `k2_core::book::replay`), else at `from`; and
    /// `pending` from there. The tables are looked at no further back than
    /// twice `book.snapshot_every`: a book that moved has one that recent.
    async fn periodic_start(
        &self,
        snapshots: &Table,
        pending: Vec<BookEventV2>,
        book: (&str, &str),
        from: Timestamp,
        at: Timestamp,
    ) -> Result<(Timestamp, Vec<BookEventV2>), LakeError> {
        // Records not committed yet are newer than every stored one.
        let mut start = pending.iter().filter(|r| is_periodic(r)).map(|r| r.ingestion_timestamp).max();
        if start.is_none() && !self.periodic_every.is_zero() {
            let back = i64::try_from(self.periodic_every.as_micros().saturating_mul(2)).unwrap_or(i64::MAX);
            let since = Timestamp::from_micros(at.as_micros().saturating_sub(back)).max(from);
            start = latest_periodic(snapshots, book, since, at).await?;
        }
        let Some(start) = start.filter(|s| *s >= from) else {
            metrics::counter!("k2_book_replays_total", "start" => "sync").increment(1);
            return Ok((from, pending));
        };
        metrics::counter!("k2_book_replays_total", "start" => "periodic").increment(1);
        Ok((start, pending.into_iter().filter(|r| r.ingestion_timestamp >= start).collect()))
    }
}

impl State {
    /// Takes a stamped record into its table's tail.
    fn take(&mut self, r: BookEventV2) {
        if matches!(r.kind, BookEventKind::Synced | BookEventKind::Unsynced) {
            let book = (r.exchange.clone(), r.symbol.clone());
            self.synced.insert(book.clone(), r.kind == BookEventKind::Synced);
            let mut change = r.clone();
            change.bids = Vec::new();
            change.asks = Vec::new();
            // In K2's order even when a record comes stamped before the
            // last (a Kafka producer whose clock is behind its predecessor's).
            let list = self.changes.entry(book).or_default();
            let at = list.partition_point(|c| c.ingestion_timestamp <= change.ingestion_timestamp);
            list.insert(at, change);
        }
        self.tails[slot(BookTable::of(r.kind))].push(r);
    }

    /// The book's latest sync change at or before `at`.
    fn last_change(&self, exchange: &str, symbol: &str, at: Timestamp) -> Option<&BookEventV2> {
        let book = (compact_str::CompactString::from(exchange), compact_str::CompactString::from(symbol));
        let changes = self.changes.get(&book).map_or(&[][..], Vec::as_slice);
        let upto = changes.partition_point(|r| r.ingestion_timestamp <= at);
        upto.checked_sub(1).and_then(|i| changes.get(i))
    }

    /// The book's records not committed yet, stamped in `[from, until]`.
    fn pending(&self, exchange: &str, symbol: &str, from: Timestamp, until: Timestamp) -> Vec<BookEventV2> {
        self.landing
            .iter()
            .flat_map(|l| l.iter())
            .chain(self.tails.iter().flatten())
            .filter(|r| {
                r.symbol == symbol
                    && r.exchange == exchange
                    && r.ingestion_timestamp <= until
                    && r.ingestion_timestamp >= from
            })
            .cloned()
            .collect()
    }
}

/// The book's records stamped in `[from, until]`, in K2's order: both
/// tables as `tables` were taken, and `pending` (taken with them).
async fn stored_and_pending(
    tables: &[Table; 2],
    pending: Vec<BookEventV2>,
    (exchange, symbol): (&str, &str),
    from: Timestamp,
    until: Timestamp,
) -> Result<Vec<BookEventV2>, LakeError> {
    let book = Some((exchange, symbol));
    let mut records = scan(&tables[0], BookTable::Updates, book, Some(from), until, Rows::All).await?;
    records.extend(scan(&tables[1], BookTable::Snapshots, book, Some(from), until, Rows::All).await?);
    Ok(with_pending(records, pending))
}

/// `records` read from the tables and `pending` taken with them, each
/// once, in K2's order.
fn with_pending(mut records: Vec<BookEventV2>, pending: Vec<BookEventV2>) -> Vec<BookEventV2> {
    // A record being committed may already be in the table loaded here.
    let stored: std::collections::HashSet<(i64, uuid::Uuid)> =
        records.iter().map(|r| (r.ingestion_timestamp.as_micros(), r.message_id)).collect();
    records
        .extend(pending.into_iter().filter(|r| !stored.contains(&(r.ingestion_timestamp.as_micros(), r.message_id))));
    records.sort_by_key(|r| r.ingestion_timestamp);
    records
}

/// A book's top at one sampled instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopPoint {
    pub at: Timestamp,
    /// The update id the book reflected (None: not known then).
    pub update_id: Option<u64>,
    pub unsynced_cause: Option<String>,
    pub best_bid: Option<Level>,
    pub best_ask: Option<Level>,
    /// Quantity over the best `levels` levels of each side the book
    /// vouched for, and how many levels that was.
    pub bid_depth: (Decimal, usize),
    pub ask_depth: (Decimal, usize),
}

impl BookLog {
    /// `symbol`'s top (best bid and ask, depth over `levels` levels) as
    /// K2 held it at `start`, `start + step`, ... up to `end`: one replay
    /// over the range, sampled as it goes.
    pub async fn tops(
        &self,
        exchange: &str,
        symbol: &str,
        range: (Timestamp, Timestamp, i64),
        levels: usize,
    ) -> Result<Vec<TopPoint>, LakeError> {
        self.sample(exchange, symbol, range, |replayer, at| top_point(replayer, at, levels)).await
    }

    /// `symbol`'s book as K2 held it at `start`, `start + step`, ... up
    /// to `end`, each as `f` sees it: one replay over the range, sampled as
    /// it goes.
    pub async fn sample<T>(
        &self,
        exchange: &str,
        symbol: &str,
        (start, end, step): (Timestamp, Timestamp, i64),
        mut f: impl FnMut(&Replayer, Timestamp) -> T,
    ) -> Result<Vec<T>, LakeError> {
        self.read_to_now(exchange, symbol, LOG_WAIT).await;
        let (tables, pending, from, seed) = {
            let state = self.state();
            // From the sync the range starts in (its snapshot is stamped
            // just before it); an unsynced start is said by its change.
            let (from, seed) = match state.last_change(exchange, symbol, start) {
                Some(l) if l.kind == BookEventKind::Synced => {
                    (Timestamp::from_micros(l.ingestion_timestamp.as_micros() - 1), None)
                }
                other => (start, other.cloned()),
            };
            (state.tables.clone(), state.pending(exchange, symbol, from, end), from, seed)
        };
        // Synced at `start`: from the latest periodic snapshot before it.
        let (from, pending) = match seed {
            None => self.periodic_start(&tables[1], pending, (exchange, symbol), from, start).await?,
            Some(_) => (from, pending),
        };
        let records = stored_and_pending(&tables, pending, (exchange, symbol), from, end).await?;
        let mut replayer = Replayer::default();
        if let Some(seed) = &seed {
            replayer.apply(seed);
        }
        let mut next = records.iter().peekable();
        let mut points = Vec::new();
        let mut at = start.as_micros();
        while at <= end.as_micros() {
            while let Some(r) = next.next_if(|r| r.ingestion_timestamp.as_micros() <= at) {
                replayer.apply(r);
            }
            points.push(f(&replayer, Timestamp::from_micros(at)));
            at = match at.checked_add(step.max(1)) {
                Some(a) => a,
                None => break,
            };
        }
        Ok(points)
    }
}

fn top_point(replayer: &Replayer, at: Timestamp, levels: usize) -> TopPoint {
    let Some(book) = replayer.book() else {
        return TopPoint {
            at,
            update_id: None,
            unsynced_cause: replayer.unsynced_cause().map(str::to_owned),
            best_bid: None,
            best_ask: None,
            bid_depth: (Decimal::ZERO, 0),
            ask_depth: (Decimal::ZERO, 0),
        };
    };
    let depth = |side| {
        let (top, _) = book.top(side, levels);
        (top.iter().map(|(_, q)| *q).sum::<Decimal>(), top.len())
    };
    TopPoint {
        at,
        update_id: Some(book.update_id()),
        unsynced_cause: None,
        best_bid: book.top(Side::Bid, 1).0.first().copied(),
        best_ask: book.top(Side::Ask, 1).0.first().copied(),
        bid_depth: depth(Side::Bid),
        ask_depth: depth(Side::Ask),
    }
}

impl crate::state::books::BookRecorder for BookLog {
    fn record(&self, records: Vec<BookEventV2>) {
        BookLog::record(self, records);
    }
}

/// Which records of a table a scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rows {
    All,
    /// Sync-state changes (`book_updates`).
    States,
    /// Depth updates (`book_updates`).
    Updates,
}

/// Stamps `r` with the next instant of `clock` (at least `now`): an update
/// keeps its venue time in `timestamp`, and so does a periodic snapshot
/// (its last update's); a venue snapshot or state change is timed by the
/// stamp, and its id follows it. Kafka mode's producer stamps the same way.
pub fn stamp(clock: &mut i64, now: i64, r: &mut BookEventV2) {
    *clock = (*clock + 1).max(now);
    let at = Timestamp::from_micros(*clock);
    r.ingestion_timestamp = at;
    if r.kind != BookEventKind::Update {
        if !is_periodic(r) {
            r.timestamp = at;
        }
        let range = (r.first_update_id, r.final_update_id);
        r.message_id = BookEventV2::id(&r.exchange, &r.symbol, r.kind, range, r.cause.as_deref(), at);
    }
}

fn is_periodic(r: &BookEventV2) -> bool {
    r.kind == BookEventKind::Snapshot && r.cause.as_deref() == Some(PERIODIC)
}

/// The records of one book (`(exchange, symbol)`; every book when None)
/// in `table` stamped in `[from, until]`, of the `rows` asked for.
async fn scan(
    table: &Table,
    kind: BookTable,
    book: Option<(&str, &str)>,
    from: Option<Timestamp>,
    until: Timestamp,
    rows: Rows,
) -> Result<Vec<BookEventV2>, LakeError> {
    if table.metadata().current_snapshot().is_none() {
        return Ok(Vec::new());
    }
    let mut filter =
        Reference::new("ingestion_timestamp").less_than_or_equal_to(Datum::timestamptz_micros(until.as_micros()));
    if let Some((exchange, symbol)) = book {
        filter = filter
            .and(Reference::new("symbol").equal_to(Datum::string(symbol)))
            .and(Reference::new("exchange").equal_to(Datum::string(exchange)));
    }
    if let Some(from) = from {
        filter = filter.and(
            Reference::new("ingestion_timestamp").greater_than_or_equal_to(Datum::timestamptz_micros(from.as_micros())),
        );
    }
    match rows {
        Rows::All => {}
        Rows::States => filter = filter.and(Reference::new("kind").not_equal_to(Datum::string("update"))),
        Rows::Updates => filter = filter.and(Reference::new("kind").equal_to(Datum::string("update"))),
    }
    // Row selection by the page index: a book's files are sorted by
    // (symbol, ingestion_timestamp), so an instant's few seconds are a few
    // pages of a row group.
    let scan = table.scan().with_filter(filter).with_row_selection_enabled(true);
    let batches: Vec<_> = scan.build()?.to_arrow().await?.try_collect().await?;
    Ok(tables::from_batches(kind, &batches)?)
}

/// The latest instant in `[from, until]` at which `book`'s periodic
/// snapshot was recorded in `snapshots` (only that column is read).
async fn latest_periodic(
    snapshots: &Table,
    (exchange, symbol): (&str, &str),
    from: Timestamp,
    until: Timestamp,
) -> Result<Option<Timestamp>, LakeError> {
    if snapshots.metadata().current_snapshot().is_none() {
        return Ok(None);
    }
    let filter = Reference::new("symbol")
        .equal_to(Datum::string(symbol))
        .and(Reference::new("exchange").equal_to(Datum::string(exchange)))
        .and(Reference::new("source").equal_to(Datum::string(PERIODIC)))
        .and(
            Reference::new("ingestion_timestamp").greater_than_or_equal_to(Datum::timestamptz_micros(from.as_micros())),
        )
        .and(Reference::new("ingestion_timestamp").less_than_or_equal_to(Datum::timestamptz_micros(until.as_micros())));
    // An instant outside the range must never start a replay.
    let range = from.as_micros()..=until.as_micros();
    Ok(latest_stamp(snapshots, filter, |t| range.contains(&t)).await?.map(Timestamp::from_micros))
}

/// The latest `ingestion_timestamp` of the rows of `table` that `filter`
/// selects (only that column is read). The filter is applied to the rows
/// read, but each value is checked again with `keep` all the same.
async fn latest_stamp(
    table: &Table,
    filter: iceberg::expr::Predicate,
    keep: impl Fn(i64) -> bool,
) -> Result<Option<i64>, LakeError> {
    let scan = table.scan().select(["ingestion_timestamp"]).with_filter(filter).with_row_selection_enabled(true);
    let batches: Vec<arrow::array::RecordBatch> = scan.build()?.to_arrow().await?.try_collect().await?;
    let mut latest = None;
    for batch in &batches {
        let Some(times) = batch
            .column_by_name("ingestion_timestamp")
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::TimestampMicrosecondArray>())
        else {
            continue;
        };
        latest = latest.max(times.iter().flatten().filter(|t| keep(*t)).max());
    }
    Ok(latest)
}

/// Every sync change `updates` holds, per book, in K2's order.
async fn load_changes(updates: &Table) -> Result<HashMap<Book, Vec<BookEventV2>>, LakeError> {
    let far = Timestamp::from_micros(i64::MAX);
    let mut changes: HashMap<Book, Vec<BookEventV2>> = HashMap::new();
    for r in scan(updates, BookTable::Updates, None, None, far, Rows::States).await? {
        changes.entry((r.exchange.clone(), r.symbol.clone())).or_default().push(r);
    }
    for c in changes.values_mut() {
        c.sort_by_key(|r| r.ingestion_timestamp);
    }
    Ok(changes)
}

async fn open_table(lake: &Lake, table: BookTable) -> Result<Table, LakeError> {
    let ident = TableIdent::new(lake.ident(super::TableKind::Trades).namespace().clone(), table.name().to_owned());
    let catalog = lake.catalog();
    if catalog.table_exists(&ident).await? {
        return Ok(catalog.load_table(&ident).await?);
    }
    let schema = table.schema()?;
    let creation = TableCreation::builder()
        .name(table.name().to_owned())
        .partition_spec(BookTable::partition_spec(&schema)?)
        .sort_order(BookTable::sort_order(&schema)?)
        .schema(schema)
        .properties(HashMap::from([
            ("write.parquet.compression-codec".to_owned(), "zstd".to_owned()),
            ("k2.schema".to_owned(), format!("v2 {}", table.name())),
        ]))
        .build();
    Ok(catalog.create_table(ident.namespace(), creation).await?)
}

/// The instant the newest snapshot `writer` committed to `table` says the
/// table is complete up to (None: it committed none). Snapshots others
/// added since (a compaction) are passed over.
fn landed_until(table: &Table, writer: &str) -> Option<i64> {
    super::summary::newest_first(table).find_map(|snapshot| {
        let props = &snapshot.summary().additional_properties;
        if props.get(super::summary::WRITER).is_some_and(|w| w == writer) {
            props.get(COMPLETE_UNTIL).and_then(|v| v.parse().ok())
        } else {
            None
        }
    })
}

/// The instant the table's current snapshot says it is complete up to.
fn complete_until(table: &Table) -> Option<Timestamp> {
    let snapshot = table.metadata().current_snapshot()?;
    snapshot.summary().additional_properties.get(COMPLETE_UNTIL)?.parse().ok().map(Timestamp::from_micros)
}

fn written_by(table: &Table, writer: &str) -> bool {
    table
        .metadata()
        .current_snapshot()
        .and_then(|s| s.summary().additional_properties.get(super::summary::WRITER).cloned())
        .is_some_and(|w| w == writer)
}
