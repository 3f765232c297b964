//! The order-book actor: keeps the books of one connection's symbols from
//! their diff-depth events and REST snapshots, by Binance's procedure
//! ([`k2_core::book::BookSync`]), and answers what a book holds now.
//!
//! One per connection, not one per symbol: a reconnect or a rotation breaks
//! every book of its connection at once, and the connection's snapshot
//! requests share one queue, one request at a time, which keeps a
//! connection of hundreds of symbols inside Binance's REST weight limit
//! after a reconnect (a 5,000-level snapshot weighs 250 of 6,000 a minute).
//!
//! Sockets are numbered by generation. A batch from a newer socket means
//! the older one is gone or being retired: every book of the connection is
//! unsynced (cause `reconnect`) and resynced from the new socket's events;
//! later batches from the older socket are ignored.
//!
//! Books are the first thing the degradation ladder sheds: from SOFT the
//! depth events of symbols not in `degradation.critical_symbols` are
//! dropped (counted in `k2_shed_total{kind="book_update"}`), from
//! AGGRESSIVE those of every symbol. A shed book is unsynced (cause
//! `shed`) and resyncs from a snapshot once the level falls.
//!
//! With a [`BookRecorder`] (the book tables: embedded mode, `book.store`),
//! the actor records what it does, in order: the venue snapshot a sync
//! started from, the sync, each update applied, each loss with its cause
//! ([`k2_core::book::replay`] rebuilds the book from them).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::fut::wrap_future;
use actix::prelude::*;
use compact_str::CompactString;
use k2_core::book::{BookSync, DepthSnapshot, DepthUpdate, SnapshotStep, Step, UnsyncCause};
use k2_core::source::binance::depth::parse_depth_snapshot;
use rustc_hash::FxHashMap;

use k2_core::book::replay::records;
use k2_core::{BookEventKind, BookEventV2, Timestamp};

use crate::runtime::config::{BinanceConfig, BookConfig};
use crate::runtime::degradation::{Level as Ladder, LevelHandle};
use crate::runtime::supervision::{Supervise, Supervision, supervised};
use crate::state::books::{BookDirectory, BookRecorder, BookView, GetBook};

/// Depth events one socket read, in arrival order.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct DepthBatch {
    pub generation: u64,
    pub updates: Vec<DepthUpdate>,
}

/// A snapshot request came back.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct SnapshotArrived {
    symbol: CompactString,
    result: Result<DepthSnapshot, String>,
}

/// One symbol's book with what its metrics need.
struct Entry {
    sync: BookSync,
    /// Since when it has been unsynced (seconds not yet counted).
    unsynced_since: Option<Instant>,
    event_time_us: Option<i64>,
    /// The snapshot the book waits with, to record once it syncs from it.
    snapshot: Option<DepthSnapshot>,
    /// An update was applied since the book's sync or its last periodic
    /// snapshot: the next periodic snapshot is worth taking.
    moved: bool,
}

const EXCHANGE: &str = k2_core::source::binance::EXCHANGE;

pub struct BookActor {
    name: &'static str,
    books: FxHashMap<CompactString, Entry>,
    symbols: Vec<CompactString>,
    config: BookConfig,
    client: reqwest::Client,
    rest: String,
    /// The newest socket generation seen.
    generation: u64,
    /// Symbols whose snapshot is to be requested, in order.
    queue: VecDeque<CompactString>,
    /// A request is out.
    busy: bool,
    /// No request before this (after a failure).
    not_before: Option<Instant>,
    directory: BookDirectory,
    /// The degradation level, and the symbols whose books go last.
    level: LevelHandle,
    critical: Vec<CompactString>,
    supervision: Supervision,
    /// Where what the books do is recorded (none: books are live only),
    /// and the records of the message being handled.
    log: Option<Arc<dyn BookRecorder>>,
    records: Vec<BookEventV2>,
}

impl BookActor {
    pub fn new(
        name: &'static str,
        symbols: Vec<CompactString>,
        binance: &BinanceConfig,
        config: BookConfig,
        directory: BookDirectory,
        supervision: Supervision,
    ) -> Self {
        let client = crate::sources::rest_client();
        for s in &symbols {
            let symbol = s.to_string();
            metrics::gauge!("k2_book_synced", "symbol" => symbol.clone()).set(0.0);
            metrics::counter!("k2_book_updates_applied_total", "symbol" => symbol.clone()).increment(0);
            metrics::counter!("k2_book_crossed_total", "symbol" => symbol.clone()).increment(0);
            metrics::counter!("k2_book_periodic_snapshots_total", "symbol" => symbol.clone()).increment(0);
            metrics::counter!("k2_book_unsynced_seconds_total", "symbol" => symbol.clone()).increment(0);
            // The causes a dashboard shows exist at 0 from the start.
            for cause in ["gap", "reconnect", "crossed"] {
                metrics::counter!("k2_book_resyncs_total", "symbol" => symbol.clone(), "cause" => cause).increment(0);
            }
            for cause in ["gap", "snapshot_behind"] {
                metrics::counter!("k2_book_snapshot_refetches_total", "symbol" => symbol.clone(), "cause" => cause)
                    .increment(0);
            }
        }
        Self {
            name,
            books: FxHashMap::default(),
            symbols,
            config,
            client,
            rest: binance.rest_endpoint.trim_end_matches('/').to_owned(),
            generation: 0,
            queue: VecDeque::new(),
            busy: false,
            not_before: None,
            directory,
            level: LevelHandle::default(),
            critical: Vec::new(),
            supervision,
            log: None,
            records: Vec::new(),
        }
    }

    /// Records what the books do in `log`.
    pub fn with_log(mut self, log: Option<Arc<dyn BookRecorder>>) -> Self {
        self.log = log;
        self
    }

    /// Hands the records of the message just handled to the log, in order.
    fn flush_records(&mut self) {
        if let Some(log) = &self.log
            && !self.records.is_empty()
        {
            log.record(std::mem::take(&mut self.records));
        }
    }

    fn note_unsynced(&mut self, symbol: &str, cause: UnsyncCause) {
        if self.log.is_some() {
            let r =
                records::state(EXCHANGE, symbol, BookEventKind::Unsynced, 0, Some(cause.as_str()), Timestamp::now());
            self.records.push(r);
        }
    }

    /// The sync of `symbol` from the snapshot it waited with, and the
    /// buffered events applied on it.
    fn note_synced(&mut self, symbol: &str, snapshot_id: u64, applied: &[DepthUpdate]) {
        let Some(entry) = self.books.get_mut(symbol) else { return };
        let snapshot = entry.snapshot.take();
        if self.log.is_none() {
            return;
        }
        match snapshot {
            Some(s) if s.last_update_id == snapshot_id => {
                self.records.push(records::snapshot(EXCHANGE, symbol, &s, Timestamp::now()));
                let synced =
                    records::state(EXCHANGE, symbol, BookEventKind::Synced, snapshot_id, None, Timestamp::now());
                self.records.push(synced);
                self.records.extend(applied.iter().map(|u| records::update(EXCHANGE, u, Timestamp::now())));
            }
            // Not expected: the book syncs only from the snapshot it holds.
            _ => {
                tracing::warn!(%symbol, snapshot_id, "a book synced from a snapshot not kept for recording; its span is not stored")
            }
        }
    }

    /// Sheds books as the ladder says (see the module's documentation).
    pub fn with_shedding(mut self, level: LevelHandle, critical: &[String]) -> Self {
        self.level = level;
        self.critical = critical.iter().map(|s| s.to_ascii_uppercase().into()).collect();
        self
    }

    /// Drops the events the ladder sheds at `level`, unsyncing their books.
    fn shed(&mut self, level: Ladder, updates: &mut Vec<DepthUpdate>) {
        if level < Ladder::Soft {
            return;
        }
        let critical = &self.critical;
        let keep = |symbol: &str| level < Ladder::Aggressive && critical.iter().any(|c| c == symbol);
        let mut shed: FxHashMap<CompactString, u64> = FxHashMap::default();
        updates.retain(|u| {
            let kept = keep(&u.symbol);
            if !kept {
                *shed.entry(u.symbol.clone()).or_default() += 1;
            }
            kept
        });
        for (symbol, n) in shed {
            metrics::counter!("k2_shed_total", "level" => level.name(), "symbol" => symbol.to_string(), "kind" => "book_update")
                .increment(n);
            if let Some(entry) = self.books.get_mut(&symbol)
                && let Some(cause) = entry.sync.shed()
            {
                unsynced(self.name, &symbol, entry, cause);
                self.note_unsynced(&symbol, cause);
            }
        }
    }

    fn fresh_books(&mut self) {
        let now = Instant::now();
        self.books = self
            .symbols
            .iter()
            .map(|s| {
                let entry = Entry {
                    sync: BookSync::new(self.config.max_buffer),
                    unsynced_since: Some(now),
                    event_time_us: None,
                    snapshot: None,
                    moved: false,
                };
                (s.clone(), entry)
            })
            .collect();
        self.queue.clear();
        self.busy = false;
    }

    fn want_snapshot(&mut self, symbol: &CompactString, ctx: &mut Context<Self>) {
        if !self.queue.contains(symbol) {
            self.queue.push_back(symbol.clone());
        }
        self.pump(ctx);
    }

    /// Sends the next snapshot request if none is out.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        if let Some(at) = self.not_before {
            let now = Instant::now();
            if now < at {
                ctx.run_later(at - now, |act, ctx| act.pump(ctx));
                return;
            }
            self.not_before = None;
        }
        let Some(symbol) = self.queue.pop_front() else { return };
        self.busy = true;
        let limit = self.config.snapshot_limit;
        let url = format!("{}/api/v3/depth?symbol={symbol}&limit={limit}", self.rest);
        let request = self.client.get(url);
        let fetch = async move {
            let response = request.send().await.map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response.bytes().await.map_err(|e| e.to_string())?;
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                return Err(format!("HTTP {status}: {text}"));
            }
            parse_depth_snapshot(&body, limit).map_err(|e| e.to_string())
        };
        ctx.spawn(wrap_future::<_, Self>(fetch).map(move |result, act, ctx| {
            act.busy = false;
            act.on_snapshot(SnapshotArrived { symbol, result }, ctx);
            act.pump(ctx);
        }));
    }

    fn on_snapshot(&mut self, SnapshotArrived { symbol, result }: SnapshotArrived, ctx: &mut Context<Self>) {
        let Some(entry) = self.books.get_mut(&symbol) else { return };
        let snapshot = match result {
            Ok(s) => {
                metrics::counter!("k2_book_snapshot_requests_total", "result" => "ok").increment(1);
                s
            }
            Err(e) => {
                metrics::counter!("k2_book_snapshot_requests_total", "result" => "error").increment(1);
                tracing::warn!(connection = self.name, %symbol, error = %e, "depth snapshot request failed; the next event asks again");
                entry.sync.snapshot_failed();
                self.not_before = Some(Instant::now() + self.config.snapshot_retry);
                return;
            }
        };
        entry.snapshot = Some(snapshot.clone());
        match entry.sync.on_snapshot(&snapshot) {
            SnapshotStep::Synced { snapshot_id, applied } => {
                if let Some(last) = applied.last() {
                    entry.event_time_us = Some(last.event_time.as_micros());
                }
                entry.moved = !applied.is_empty();
                synced(&symbol, entry, snapshot_id, &applied);
                self.note_synced(&symbol, snapshot_id, &applied);
                self.flush_records();
            }
            SnapshotStep::Refetch { cause } => {
                entry.snapshot = None;
                metrics::counter!("k2_book_snapshot_refetches_total", "symbol" => symbol.to_string(), "cause" => cause.as_str())
                    .increment(1);
                tracing::debug!(connection = self.name, %symbol, cause = cause.as_str(), snapshot = snapshot.last_update_id, "depth snapshot unusable; fetching another");
                self.want_snapshot(&symbol, ctx);
            }
            SnapshotStep::Waiting | SnapshotStep::Unneeded => {}
        }
    }

    fn apply(&mut self, updates: Vec<DepthUpdate>, ctx: &mut Context<Self>) {
        let mut fetch = Vec::new();
        // Counted per batch and symbol, not per event.
        let mut applied: FxHashMap<CompactString, u64> = FxHashMap::default();
        for update in updates {
            let Some(entry) = self.books.get_mut(&update.symbol) else {
                metrics::counter!("k2_book_events_ignored_total", "reason" => "unknown_symbol").increment(1);
                continue;
            };
            let symbol = update.symbol.clone();
            let time = update.event_time.as_micros();
            match entry.sync.on_update(update) {
                Step::Applied(u) => {
                    entry.event_time_us = Some(time);
                    entry.moved = true;
                    *applied.entry(symbol).or_default() += (u.bids.len() + u.asks.len()) as u64;
                    if self.log.is_some() {
                        self.records.push(records::update(EXCHANGE, &u, Timestamp::now()));
                    }
                }
                Step::Ignored => {
                    metrics::counter!("k2_book_events_ignored_total", "reason" => "older_than_book").increment(1);
                }
                Step::Buffered { fetch: f } => {
                    if f {
                        fetch.push(symbol);
                    }
                }
                Step::Unsynced { cause, fetch: f } => {
                    unsynced(self.name, &symbol, entry, cause);
                    self.note_unsynced(&symbol, cause);
                    if f {
                        fetch.push(symbol);
                    }
                }
                Step::Synced { snapshot_id, applied: a } => {
                    entry.event_time_us = Some(time);
                    entry.moved = !a.is_empty();
                    synced(&symbol, entry, snapshot_id, &a);
                    self.note_synced(&symbol, snapshot_id, &a);
                }
            }
        }
        for (symbol, n) in applied {
            metrics::counter!("k2_book_updates_applied_total", "symbol" => symbol.to_string()).increment(n);
        }
        self.flush_records();
        for symbol in fetch {
            self.want_snapshot(&symbol, ctx);
        }
    }

    /// Resyncs the books whose records the store did not all take (Kafka
    /// mode: a broker that refused one): their stored chains restart at
    /// the next sync.
    fn resync_broken(&mut self, ctx: &mut Context<Self>) {
        let Some(log) = &self.log else { return };
        let broken = log.take_broken(&self.symbols);
        let mut fetch = Vec::new();
        for symbol in broken {
            let Some(entry) = self.books.get_mut(&symbol) else { continue };
            if let Some(now) = entry.sync.resync(UnsyncCause::StoreGap) {
                unsynced(self.name, &symbol, entry, UnsyncCause::StoreGap);
                self.note_unsynced(&symbol, UnsyncCause::StoreGap);
                if now {
                    fetch.push(symbol);
                }
            }
        }
        self.flush_records();
        for symbol in fetch {
            self.want_snapshot(&symbol, ctx);
        }
    }

    /// Unsynced seconds are counted as they pass, not only at the resync.
    fn tick(&mut self) {
        let now = Instant::now();
        let mut levels = 0usize;
        for (symbol, entry) in &mut self.books {
            if let Some(since) = entry.unsynced_since.as_mut() {
                let secs = now.duration_since(*since).as_secs_f64();
                metrics::counter!("k2_book_unsynced_seconds_total", "symbol" => symbol.to_string())
                    .increment(secs as u64);
                // Whole seconds are counted; the rest waits for the next tick.
                *since += Duration::from_secs(secs as u64);
            }
            if let Some(book) = entry.sync.book() {
                levels += book.levels_held();
                metrics::gauge!("k2_book_levels", "symbol" => symbol.to_string()).set(book.levels_held() as f64);
            }
            metrics::gauge!("k2_book_buffered_events", "symbol" => symbol.to_string())
                .set(entry.sync.buffered() as f64);
        }
        metrics::gauge!("k2_book_levels_held", "connection" => self.name).set(levels as f64);
    }

    /// Records each synced book that moved since its sync or its last
    /// periodic snapshot as a snapshot of its best `book.snapshot_depth`
    /// levels: a stored book's replay starts from the nearest one.
    fn periodic_snapshots(&mut self) {
        if self.log.is_none() {
            return;
        }
        let depth = self.config.snapshot_depth;
        let now = Timestamp::now();
        for (symbol, entry) in &mut self.books {
            if !entry.moved {
                continue;
            }
            let (Some(book), Some(time)) = (entry.sync.book(), entry.event_time_us) else { continue };
            let time = Timestamp::from_micros(time);
            if let Some(r) = records::periodic(EXCHANGE, symbol, book, depth, time, now) {
                self.records.push(r);
                entry.moved = false;
                metrics::counter!("k2_book_periodic_snapshots_total", "symbol" => symbol.to_string()).increment(1);
            }
        }
        self.flush_records();
    }

    fn view(&self, symbol: &CompactString, depth: usize) -> Option<BookView> {
        let entry = self.books.get(symbol)?;
        let mut view = BookView::of(EXCHANGE, symbol.clone(), entry.sync.book(), depth);
        view.unsynced_cause = entry.sync.unsynced_cause().map(UnsyncCause::as_str);
        view.event_time_us = entry.event_time_us;
        Some(view)
    }
}

fn synced(symbol: &str, entry: &mut Entry, snapshot_id: u64, applied: &[DepthUpdate]) {
    if let Some(since) = entry.unsynced_since.take() {
        metrics::counter!("k2_book_unsynced_seconds_total", "symbol" => symbol.to_owned())
            .increment(since.elapsed().as_secs());
    }
    metrics::gauge!("k2_book_synced", "symbol" => symbol.to_owned()).set(1.0);
    let levels: u64 = applied.iter().map(|u| (u.bids.len() + u.asks.len()) as u64).sum();
    metrics::counter!("k2_book_updates_applied_total", "symbol" => symbol.to_owned()).increment(levels);
    tracing::info!(%symbol, snapshot = snapshot_id, buffered_applied = applied.len(), "order book synced");
}

fn unsynced(connection: &str, symbol: &str, entry: &mut Entry, cause: UnsyncCause) {
    entry.unsynced_since.get_or_insert_with(Instant::now);
    metrics::gauge!("k2_book_synced", "symbol" => symbol.to_owned()).set(0.0);
    metrics::counter!("k2_book_resyncs_total", "symbol" => symbol.to_owned(), "cause" => cause.as_str()).increment(1);
    match cause {
        UnsyncCause::Crossed => {
            metrics::counter!("k2_book_crossed_total", "symbol" => symbol.to_owned()).increment(1);
            tracing::warn!(connection, symbol, "order book crossed (best bid at or above best ask); resyncing");
        }
        UnsyncCause::Gap { expected, got } => {
            tracing::info!(connection, symbol, expected, got, "depth events skipped a range; resyncing the book");
        }
        _ => tracing::info!(connection, symbol, cause = cause.as_str(), "order book unsynced; resyncing"),
    }
}

impl Actor for BookActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.supervision.started();
        self.directory.register(&self.symbols, &ctx.address().recipient());
        if self.books.is_empty() {
            self.fresh_books();
        }
        ctx.run_interval(Duration::from_secs(1), |act, ctx| {
            act.tick();
            act.resync_broken(ctx);
        });
        if self.log.is_some() && !self.config.snapshot_every.is_zero() {
            ctx.run_interval(self.config.snapshot_every, |act, _| act.periodic_snapshots());
        }
    }
}

supervised!(BookActor);

impl Supervise for BookActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    /// A book the failure may have left half applied is not trusted: every
    /// book starts over from a snapshot.
    fn reset(&mut self) {
        self.fresh_books();
        // What the failed handler recorded is not trusted either.
        self.records.clear();
        let symbols = self.symbols.clone();
        for symbol in &symbols {
            metrics::counter!("k2_book_resyncs_total", "symbol" => symbol.to_string(), "cause" => "restart")
                .increment(1);
            if self.log.is_some() {
                let r = records::state(EXCHANGE, symbol, BookEventKind::Unsynced, 0, Some("restart"), Timestamp::now());
                self.records.push(r);
            }
        }
        self.flush_records();
    }
}

impl Handler<DepthBatch> for BookActor {
    type Result = ();

    fn handle(&mut self, batch: DepthBatch, ctx: &mut Context<Self>) {
        self.supervision.probe().handled(batch.updates.len());
        if batch.generation < self.generation {
            metrics::counter!("k2_book_events_ignored_total", "reason" => "retired_socket")
                .increment(batch.updates.len() as u64);
            return;
        }
        if batch.generation > self.generation {
            if self.generation > 0 {
                let mut lost = Vec::new();
                for (symbol, entry) in &mut self.books {
                    entry.snapshot = None;
                    if entry.sync.disconnected().is_some() {
                        unsynced(self.name, symbol, entry, UnsyncCause::Reconnect);
                        lost.push(symbol.clone());
                    }
                }
                for symbol in lost {
                    self.note_unsynced(&symbol, UnsyncCause::Reconnect);
                }
            }
            self.generation = batch.generation;
        }
        let mut updates = batch.updates;
        self.shed(self.level.get(), &mut updates);
        self.apply(updates, ctx);
    }
}

impl Handler<GetBook> for BookActor {
    type Result = Option<BookView>;

    fn handle(&mut self, q: GetBook, _: &mut Context<Self>) -> Option<BookView> {
        self.view(&q.symbol, q.depth)
    }
}
