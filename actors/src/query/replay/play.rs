//! One replay: each stream's pages read through the query engine (trades,
//! quotes) or the book log (depth updates), merged in time order, paced,
//! and written to an [`Outlet`] (the replay port's socket or
//! `/v1/replay`'s), until the range ends, the query fails or the client
//! goes.

use std::time::Duration;

use k2_core::query_params::{Cursor, Pin, ReadParams, Source};

use super::depth::{DepthBooks, next_owner};
use super::frames::{self, Envelope, Frame, Kind};
use super::params::{ReplayParams, Wrap};
use crate::lake::TableKind;
use crate::query::engine::QueryEngine;

/// Rows per page read for one symbol.
const PAGE: usize = 10_000;

/// A depth stream's first read covers this much of K2's clock (µs); each
/// read after grows or shrinks it towards `DEPTH_PAGE` updates.
const DEPTH_WINDOW: i64 = 10_000_000;
const DEPTH_PAGE: usize = 5_000;
const MAX_DEPTH_WINDOW: i64 = 86_400_000_000;

/// Frames written between flushes when the stream is not paced.
const FLUSH_EVERY: u64 = 256;

/// Where a replay's frames go.
pub(crate) trait Outlet {
    /// Writes one frame; `flush`: it must go out now, not with the next.
    async fn frame(&mut self, text: String, flush: bool) -> Result<(), String>;
    async fn flush(&mut self) -> Result<(), String>;
}

/// How a replay ended.
pub(crate) enum Ended {
    /// Every frame of the range written: close normally.
    Range,
    /// A page could not be read: close with an error.
    Query(String),
    /// The client closed (`None`) or could not be written to: nothing more
    /// to send.
    Client(Option<String>),
}

/// Plays `params` into `out`; `closed` fires when the client closes.
/// `books` serves the depth streams (the caller refuses those without it).
pub(crate) async fn play(
    params: &ReplayParams,
    engine: &QueryEngine,
    books: Option<&DepthBooks>,
    out: &mut impl Outlet,
    closed: &mut tokio::sync::oneshot::Receiver<()>,
) -> Ended {
    let owner = next_owner();
    let ended = play_as(owner, params, engine, books, out, closed).await;
    if let Some(books) = books {
        books.release(owner);
    }
    ended
}

async fn play_as(
    owner: u64,
    params: &ReplayParams,
    engine: &QueryEngine,
    books: Option<&DepthBooks>,
    out: &mut impl Outlet,
    closed: &mut tokio::sync::oneshot::Receiver<()>,
) -> Ended {
    let started = tokio::time::Instant::now();
    let mut first_time: Option<i64> = None;
    let mut sent = 0u64;
    let mut merge = Merge::new(params, books.cloned());
    // Unpaced, frames are written in runs and flushed once per run (a
    // write per frame would bound the rate by system calls); the socket's
    // buffer still holds a slow reader's stream back.
    let unpaced = params.speed == 0.0;
    let ended = loop {
        let next = match merge.next(engine).await {
            Ok(Some(f)) => f,
            Ok(None) => break Ended::Range,
            Err(e) => break Ended::Query(e),
        };
        if !unpaced {
            let t0 = *first_time.get_or_insert(next.time);
            let due = Duration::from_secs_f64(((next.time - t0).max(0) as f64) / 1e6 / params.speed);
            tokio::select! {
                () = tokio::time::sleep_until(started + due) => {}
                _ = &mut *closed => break Ended::Client(None),
            }
        }
        let Frame { time, symbol, kind, text, .. } = next;
        let flush = !unpaced || (sent + 1).is_multiple_of(FLUSH_EVERY);
        tokio::select! {
            written = out.frame(text, flush) => if let Err(e) = written { break Ended::Client(Some(e)) },
            _ = &mut *closed => break Ended::Client(None),
        }
        // Once written, a depth snapshot asked of the replay port covers it.
        if kind.is_depth()
            && let Some(books) = books
        {
            books.played(owner, &symbol, time);
        }
        sent += 1;
    };
    metrics::counter!("k2_replay_events_sent_total").increment(sent);
    match ended {
        Ended::Client(_) => ended,
        _ => match out.flush().await {
            Ok(()) => ended,
            Err(e) => Ended::Client(Some(e)),
        },
    }
}

/// Each stream's pages, merged by (time, symbol, kind, id).
struct Merge {
    symbols: Vec<Pager>,
    params: ReplayParams,
    books: Option<DepthBooks>,
}

struct Pager {
    symbol: String,
    kind: Kind,
    envelope: Envelope,
    ready: std::collections::VecDeque<Frame>,
    /// Trades and quotes: the next page's key.
    cursor: Option<Cursor>,
    /// Depth: the next read's `[from, from + window)` of K2's clock.
    from: i64,
    window: i64,
    done: bool,
}

impl Pager {
    /// Whether the first frame is the stream's next: a later time is
    /// ready behind it.
    fn settled(&self) -> bool {
        match (self.ready.front(), self.ready.back()) {
            (Some(first), Some(last)) => last.time > first.time,
            _ => false,
        }
    }
}

impl Merge {
    fn new(params: &ReplayParams, books: Option<DepthBooks>) -> Self {
        let symbols = params
            .streams
            .iter()
            .map(|(s, kind)| Pager {
                symbol: s.to_string(),
                kind: *kind,
                envelope: Envelope::new(s, *kind, params.wrap == Wrap::Combined),
                ready: Default::default(),
                cursor: None,
                from: params.start,
                window: DEPTH_WINDOW,
                done: false,
            })
            .collect();
        Self { symbols, params: params.clone(), books }
    }

    async fn next(&mut self, engine: &QueryEngine) -> Result<Option<Frame>, String> {
        for i in 0..self.symbols.len() {
            // Pages are in (time, row id) order, the venue's in (time, trade
            // id): the first frame is sure to be next only once a later
            // time is in hand (more of its time may be on the next page).
            while !self.symbols[i].done && !self.symbols[i].settled() {
                self.fill(i, engine).await?;
            }
        }
        let best = self
            .symbols
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.ready.front().map(|f| (f.time, &f.symbol, f.kind, f.id, i)))
            .min()
            .map(|(.., i)| i);
        Ok(best.and_then(|i| self.symbols[i].ready.pop_front()))
    }

    async fn fill(&mut self, i: usize, engine: &QueryEngine) -> Result<(), String> {
        if self.symbols[i].kind.is_depth() {
            return self.fill_depth(i).await;
        }
        let pager = &mut self.symbols[i];
        let read = ReadParams {
            symbol: Some(pager.symbol.clone()),
            exchange: None,
            start: Some(self.params.start),
            end: Some(self.params.end),
            limit: PAGE,
            cursor: pager.cursor.take(),
            pin: Pin { source: Source::Hybrid, as_of: None },
        };
        let table = if pager.kind == Kind::Trade { TableKind::Trades } else { TableKind::Quotes };
        let rows = engine.read(table, read).await.map_err(|e| e.to_string())?;
        for batch in &rows.batches {
            let made = match pager.kind {
                Kind::Trade => frames::trades(batch, self.params.micros, &pager.envelope),
                _ => frames::book_tickers(batch, &pager.envelope),
            };
            pager.ready.extend(made.map_err(|e| e.to_string())?);
        }
        pager.ready.make_contiguous().sort_by_key(|f| (f.time, f.id));
        match rows.next_cursor {
            Some(c) => pager.cursor = Some(Cursor::decode(&c).map_err(|e| e.reason)?),
            None => pager.done = true,
        }
        Ok(())
    }

    /// The depth stream's next stretch of K2's clock: the window grows
    /// over quiet stretches and shrinks over busy ones.
    async fn fill_depth(&mut self, i: usize) -> Result<(), String> {
        let books = self.books.as_ref().ok_or("book updates are not stored here")?;
        let (end, micros) = (self.params.end, self.params.micros);
        let pager = &mut self.symbols[i];
        if pager.from >= end {
            pager.done = true;
            return Ok(());
        }
        let until = pager.from.saturating_add(pager.window).min(end);
        let made = books.frames(&pager.symbol, (pager.from, until), micros, &pager.envelope).await?;
        pager.window = if made.len() < DEPTH_PAGE / 4 {
            pager.window.saturating_mul(4).min(MAX_DEPTH_WINDOW)
        } else if made.len() > DEPTH_PAGE * 4 {
            (pager.window / 2).max(1)
        } else {
            pager.window
        };
        pager.ready.extend(made);
        pager.from = until;
        pager.done = until >= end;
        Ok(())
    }
}
