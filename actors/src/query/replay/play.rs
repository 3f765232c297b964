//! One replay: each stream's pages read through the query engine (trades,
//! quotes) or the book log (depth updates), merged in time order, paced,
//! and written to an [`Outlet`] (the replay port's socket or
//! `/v1/replay`'s), until the range ends, the query fails or the client
//! goes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::depth::{DepthBooks, next_owner};
use super::frames::{self, Envelope, Frame, Kind};
use super::params::{ReplayParams, Wrap};
use crate::lake::TableKind;
use crate::query::engine::QueryEngine;

/// Trades and quotes are read a span of time at a time, spans ending where
/// the table's files end: a span holds at most `SPAN_ROWS` rows of its
/// symbol (past it, the span is halved and read again), and the spans grow
/// over files with few (each stream holds about three spans' frames: one
/// being sent, one waiting, one being read).
const SPAN_ROWS: usize = 20_000;

/// A depth stream's first read covers this much of K2's clock (µs); each
/// read after grows or shrinks it towards `DEPTH_PAGE` updates.
const DEPTH_WINDOW: i64 = 10_000_000;
const DEPTH_PAGE: usize = 5_000;
/// An hour: Binance sends a book's updates at most every 100 ms, so a
/// window holds at most 36,000 however quiet the stretch before it.
const MAX_DEPTH_WINDOW: i64 = 3_600_000_000;

/// Ticks of a partial depth stream read at a time.
const PARTIAL_TICKS: i64 = 600;

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
    engine: &Arc<QueryEngine>,
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
    engine: &Arc<QueryEngine>,
    books: Option<&DepthBooks>,
    out: &mut impl Outlet,
    closed: &mut tokio::sync::oneshot::Receiver<()>,
) -> Ended {
    let started = tokio::time::Instant::now();
    let mut first_time: Option<i64> = None;
    let mut sent = 0u64;
    let mut merge = Merge::new(params, engine, books.cloned());
    // Unpaced, frames are written in runs and flushed once per run (a
    // write per frame would bound the rate by system calls); the socket's
    // buffer still holds a slow reader's stream back.
    let unpaced = params.speed == 0.0;
    let ended = loop {
        let next = match merge.next().await {
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

/// Each stream's pages, read ahead by a task per stream and merged by
/// (time, symbol, kind, id). Reading and building frames runs beside the
/// sending (on another core when there is one), a page or two ahead: a
/// slow client holds its readers back through the bounded channels.
struct Merge {
    lanes: Vec<Lane>,
    readers: Vec<tokio::task::AbortHandle>,
}

/// One stream as the merge sees it: frames ready, more on the way.
struct Lane {
    ready: VecDeque<Frame>,
    pages: mpsc::Receiver<Result<Vec<Frame>, String>>,
    done: bool,
}

impl Lane {
    /// Whether the first frame is the stream's next: a later time is
    /// ready behind it.
    fn settled(&self) -> bool {
        match (self.ready.front(), self.ready.back()) {
            (Some(first), Some(last)) => last.time > first.time,
            _ => false,
        }
    }
}

impl Drop for Merge {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

impl Merge {
    fn new(params: &ReplayParams, engine: &Arc<QueryEngine>, books: Option<DepthBooks>) -> Self {
        let mut lanes = Vec::with_capacity(params.streams.len());
        let mut readers = Vec::with_capacity(params.streams.len());
        for (symbol, kind) in &params.streams {
            // One page waits in the channel while the next is read.
            let (tx, pages) = mpsc::channel(1);
            let reader = Reader {
                symbol: symbol.to_string(),
                kind: *kind,
                envelope: Envelope::new(symbol, *kind, params.wrap == Wrap::Combined),
                range: (params.start, params.end),
                micros: params.micros,
                from: params.start,
                window: DEPTH_WINDOW,
                ends: None,
                stride: 1,
                engine: engine.clone(),
                books: books.clone(),
            };
            readers.push(tokio::spawn(reader.run(tx)).abort_handle());
            lanes.push(Lane { ready: VecDeque::new(), pages, done: false });
        }
        Self { lanes, readers }
    }

    async fn next(&mut self) -> Result<Option<Frame>, String> {
        for lane in &mut self.lanes {
            // Pages are in (time, row id) order, the venue's in (time, trade
            // id): the first frame is sure to be next only once a later
            // time is in hand (more of its time may be on the next page).
            while !lane.done && !lane.settled() {
                match lane.pages.recv().await {
                    Some(page) => {
                        lane.ready.extend(page?);
                        lane.ready.make_contiguous().sort_by_key(|f| (f.time, f.id));
                    }
                    None => lane.done = true,
                }
            }
        }
        let best = self
            .lanes
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.ready.front().map(|f| (f.time, &f.symbol, f.kind, f.id, i)))
            .min()
            .map(|(.., i)| i);
        Ok(best.and_then(|i| self.lanes[i].ready.pop_front()))
    }
}

/// One stream's pages, read in order.
struct Reader {
    symbol: String,
    kind: Kind,
    envelope: Envelope,
    /// `[start, end)` of the replay.
    range: (i64, i64),
    micros: bool,
    /// Where the next span starts (trades and quotes: a time; depth: a
    /// stamp of K2's clock) and, for depth, how long it is.
    from: i64,
    window: i64,
    /// Trades and quotes: where spans may end (the files' ends, read at
    /// the first span) and how many of them the next span covers.
    ends: Option<Vec<i64>>,
    stride: usize,
    engine: Arc<QueryEngine>,
    books: Option<DepthBooks>,
}

impl Reader {
    /// Sends every page, then closes (a failure is the last thing sent).
    async fn run(mut self, tx: mpsc::Sender<Result<Vec<Frame>, String>>) {
        loop {
            let page = match self.kind {
                Kind::Partial { levels, fast } => self.partial_page(levels, fast).await,
                kind if kind.is_depth() => self.depth_page().await,
                _ => self.page().await,
            };
            let (page, last) = match page {
                Ok(Some(frames)) => (Ok(frames), false),
                Ok(None) => return,
                Err(e) => (Err(e), true),
            };
            if tx.send(page).await.is_err() || last {
                return;
            }
        }
    }

    /// The next span of trades or quotes; `None` past the last.
    async fn page(&mut self) -> Result<Option<Vec<Frame>>, String> {
        let end = self.range.1;
        if self.from >= end {
            return Ok(None);
        }
        let table = if self.kind == Kind::Trade { TableKind::Trades } else { TableKind::Quotes };
        if self.ends.is_none() {
            self.ends = Some(self.engine.span_ends(table, (self.from, end)).await.map_err(|e| e.to_string())?);
        }
        let ends = self.ends.as_deref().unwrap_or_default();
        let later = ends.partition_point(|e| *e <= self.from);
        let mut until = ends.get(later.saturating_add(self.stride - 1)).copied().unwrap_or(end).min(end);
        let batches = loop {
            // A span of one microsecond is read whole, however many rows.
            let limit = if until - self.from <= 1 { usize::MAX - 1 } else { SPAN_ROWS };
            let read = self.engine.read_span(table, &self.symbol, (self.from, until), limit);
            match read.await.map_err(|e| e.to_string())? {
                Some(batches) => break batches,
                None => {
                    self.stride = 1;
                    until = self.from + (until - self.from) / 2;
                }
            }
        };
        let mut frames = Vec::with_capacity(batches.iter().map(|b| b.num_rows()).sum());
        for batch in &batches {
            let made = match self.kind {
                Kind::Trade => frames::trades(batch, self.micros, &self.envelope),
                _ => frames::book_tickers(batch, &self.envelope),
            };
            frames.extend(made.map_err(|e| e.to_string())?);
        }
        if frames.len() < SPAN_ROWS / 4 {
            self.stride = (self.stride * 2).min(1 << 20);
        }
        self.from = until;
        Ok(Some(frames))
    }

    /// The partial depth stream's next ticks: the book's top levels each
    /// second (or 100 ms) of K2's clock from the replay's start.
    async fn partial_page(&mut self, levels: u8, fast: bool) -> Result<Option<Vec<Frame>>, String> {
        let books = self.books.as_ref().ok_or("book updates are not stored here")?;
        let end = self.range.1;
        if self.from >= end {
            return Ok(None);
        }
        let step = if fast { 100_000 } else { 1_000_000 };
        let until = self.from.saturating_add(step * PARTIAL_TICKS).min(end);
        let made =
            books.partial_frames(&self.symbol, (self.from, until, step), usize::from(levels), &self.envelope).await?;
        // The next tick: `until` is on the grid unless it is the end.
        self.from = until;
        Ok(Some(made))
    }

    /// The depth stream's next stretch of K2's clock: the window grows
    /// over quiet stretches and shrinks over busy ones.
    async fn depth_page(&mut self) -> Result<Option<Vec<Frame>>, String> {
        let books = self.books.as_ref().ok_or("book updates are not stored here")?;
        let end = self.range.1;
        if self.from >= end {
            return Ok(None);
        }
        let until = self.from.saturating_add(self.window).min(end);
        let made = books.frames(&self.symbol, (self.from, until), self.micros, &self.envelope).await?;
        self.window = if made.len() < DEPTH_PAGE / 4 {
            self.window.saturating_mul(4).min(MAX_DEPTH_WINDOW)
        } else if made.len() > DEPTH_PAGE * 4 {
            (self.window / 2).max(1)
        } else {
            self.window
        };
        self.from = until;
        Ok(Some(made))
    }
}
