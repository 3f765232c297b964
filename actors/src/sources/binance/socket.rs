//! One WebSocket connection's read loop: parse frames into batches, send them
//! down the pipeline (waiting when it is full, which stops reading the socket
//! and so pushes back on the exchange), and report what happens to the
//! connection actor.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use compact_str::CompactString;
use rustc_hash::FxHashMap;
use tokio::sync::oneshot;

use actix::Recipient;
use futures_util::{FutureExt, StreamExt};
use k2_core::book::DepthUpdate;
use k2_core::source::binance::depth::parse_depth_update;
use k2_core::source::binance::{BinanceError, BinanceParser, Control, Frame};
use k2_core::{MarketEvent, Timestamp};
use tokio_tungstenite::tungstenite::Message;

use super::book::DepthBatch;
use crate::runtime::health::Link;
use crate::runtime::messages::EventBatch;
use crate::state::dead_letters::DeadLetters;
use crate::transforms::sequencer::SequenceActor;

/// What happened to a socket, as its task reports it.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub enum SocketEvent {
    Connected {
        generation: u64,
    },
    /// The first data arrived: a rotation can let the old socket go.
    Live {
        generation: u64,
    },
    ServerShutdown {
        generation: u64,
    },
    Ended {
        generation: u64,
        end: SocketEnd,
    },
}

/// Why a socket ended.
#[derive(Debug, Clone)]
pub enum SocketEnd {
    ConnectFailed(String),
    Closed(String),
    Error(String),
    Silent,
    /// Closed by a rotation once its replacement covered it.
    Retired,
}

impl SocketEnd {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ConnectFailed(_) => "connect_failed",
            Self::Closed(_) => "closed",
            Self::Error(_) => "error",
            Self::Silent => "silence",
            Self::Retired => "retired",
        }
    }
}

/// The venue sequence numbers a socket has delivered into the pipeline, per
/// (symbol, is trade): the first and the last. A rotation compares the old
/// socket's with the new one's to know when the old one may close.
#[derive(Debug, Default)]
pub struct Coverage {
    streams: Mutex<FxHashMap<(CompactString, bool), (i64, i64)>>,
}

impl Coverage {
    fn record(&self, events: &[MarketEvent]) {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        // Runs of one stream are common: touch the map once per run.
        let mut run: Option<((&str, bool), i64, i64)> = None;
        let mut flush = |run: Option<((&str, bool), i64, i64)>| {
            if let Some(((symbol, trade), first, last)) = run {
                let entry = streams.entry((CompactString::from(symbol), trade)).or_insert((first, last));
                entry.1 = entry.1.max(last);
            }
        };
        for e in events {
            let Some(seq) = e.source_sequence() else { continue };
            let key = (e.symbol(), e.is_trade());
            match &mut run {
                Some((k, _, last)) if *k == key => *last = (*last).max(seq),
                _ => flush(run.replace((key, seq, seq))),
            }
        }
        flush(run);
    }

    fn merge(&self, other: &mut Coverage) {
        let other = std::mem::take(other.streams.get_mut().unwrap_or_else(PoisonError::into_inner));
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, (first, last)) in other {
            let entry = streams.entry(key).or_insert((first, last));
            entry.1 = entry.1.max(last);
        }
    }

    /// True when this (old) socket has delivered, for every stream it has
    /// seen, everything up to where `new` began: closing it then loses
    /// nothing that `new` will not deliver.
    pub fn covered_by(&self, new: &Coverage) -> bool {
        let old = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let new = new.streams.lock().unwrap_or_else(PoisonError::into_inner);
        old.iter().all(|(key, &(_, last))| new.get(key).is_some_and(|&(first, _)| last >= first - 1))
    }
}

pub(super) struct SocketTask {
    pub generation: u64,
    pub url: String,
    pub parser: BinanceParser,
    pub next: Link<SequenceActor>,
    pub owner: Recipient<SocketEvent>,
    pub batch_size: usize,
    pub silence_timeout: Duration,
    pub connection: &'static str,
    pub probe: crate::runtime::health::Probe,
    pub coverage: Arc<Coverage>,
    /// Fires when a rotation no longer needs this socket: deliver what is in
    /// hand, then end.
    pub retire: oneshot::Receiver<()>,
    /// While true (a rotation's new socket, until the old one has gone), read
    /// batches are held here instead of sent, so the sequencer sees the old
    /// socket's stream end before the new one's begins.
    pub hold: tokio::sync::watch::Receiver<bool>,
    /// Events read while held.
    pub held: Vec<MarketEvent>,
    /// Where refused frames are kept, with their reasons.
    pub dead_letters: Option<DeadLetters>,
    /// Frames refused since the last batch went out.
    pub refused: Vec<(Vec<u8>, String)>,
    /// The order-book actor, when books are kept: depth events go there,
    /// not down the pipeline.
    pub book: Option<Recipient<DepthBatch>>,
    /// Depth events read since the last batch went to the book.
    pub depth: Vec<DepthUpdate>,
}

/// A held socket stops reading beyond this many events (TCP then pushes back).
const HOLD_LIMIT: usize = 1_000_000;

impl SocketTask {
    pub async fn run(mut self) {
        let end = self.read().await;
        // A socket that ends while holding still has good data: send it (dedup
        // and the sequencer sort out the order).
        let mut held = std::mem::take(&mut self.held);
        if !held.is_empty() {
            let _ = self.release(&mut held).await;
        }
        self.owner.do_send(SocketEvent::Ended { generation: self.generation, end });
    }

    async fn read(&mut self) -> SocketEnd {
        let connect =
            tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(self.url.as_str()));
        let mut ws = match connect.await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => return SocketEnd::ConnectFailed(e.to_string()),
            Err(_) => return SocketEnd::ConnectFailed("connect timed out".into()),
        };
        if let Ok(tcp) = match ws.get_ref() {
            tokio_tungstenite::MaybeTlsStream::Plain(s) => Ok(s),
            _ => Err(()),
        } {
            tcp.set_nodelay(true).ok();
        }
        self.owner.do_send(SocketEvent::Connected { generation: self.generation });
        let mut live = false;
        let mut batch: Vec<MarketEvent> = Vec::with_capacity(self.batch_size);
        let mut stats = BatchStats::default();
        loop {
            if !self.held.is_empty() && !*self.hold.borrow() && !self.release_held().await {
                return SocketEnd::Closed("pipeline closed".into());
            }
            if self.held.len() >= HOLD_LIMIT {
                // Wait for the release (or the rotation's end) before reading on.
                let _ = self.hold.wait_for(|h| !*h).await;
                continue;
            }
            let next = tokio::select! {
                biased;
                _ = &mut self.retire => {
                    let _ = ws.close(None).await;
                    return SocketEnd::Retired;
                }
                Ok(()) = self.hold.changed(), if !self.held.is_empty() => continue,
                next = tokio::time::timeout(self.silence_timeout, ws.next()) => next,
            };
            let first = match next {
                Err(_) => return SocketEnd::Silent,
                Ok(None) => return SocketEnd::Closed("stream ended".into()),
                Ok(Some(Err(e))) => return SocketEnd::Error(e.to_string()),
                Ok(Some(Ok(m))) => m,
            };
            let received = Timestamp::now();
            let mut next = Some(first);
            // Take every frame that is already here, up to a batch: batches grow
            // under load and stay small (low latency) when the feed is quiet.
            while let Some(msg) = next.take() {
                match msg {
                    Message::Text(text) => self.frame(text.as_bytes(), received, &mut batch, &mut stats),
                    Message::Binary(bytes) => self.frame(&bytes, received, &mut batch, &mut stats),
                    Message::Close(frame) => {
                        stats.flush(self.connection);
                        self.keep_refused().await;
                        self.send_depth().await;
                        let reason = frame.map(|f| format!("{} {}", f.code, f.reason)).unwrap_or_default();
                        if !batch.is_empty() {
                            let mut pending = Coverage::default();
                            pending.record(&batch);
                            let events = std::mem::take(&mut batch);
                            if self.next.send(EventBatch { events }).await.is_ok() {
                                self.coverage.merge(&mut pending);
                            }
                        }
                        return SocketEnd::Closed(reason);
                    }
                    // tungstenite answers pings itself, with the same payload.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                }
                if batch.len() >= self.batch_size {
                    break;
                }
                next = match ws.next().now_or_never() {
                    Some(Some(Ok(m))) => Some(m),
                    _ => None,
                };
            }
            stats.flush(self.connection);
            self.keep_refused().await;
            self.send_depth().await;
            if batch.is_empty() {
                continue;
            }
            if !live {
                live = true;
                self.owner.do_send(SocketEvent::Live { generation: self.generation });
            }
            if *self.hold.borrow() {
                // Held events count as covered: they will be sent, first thing,
                // when the hold ends.
                self.coverage.record(&batch);
                self.held.append(&mut batch);
                continue;
            }
            if !self.held.is_empty() && !self.release_held().await {
                return SocketEnd::Closed("pipeline closed".into());
            }
            self.probe.handled(batch.len());
            // Coverage is noted before the send but only counts once the batch is
            // in the pipeline's mailbox, which the send's completion means.
            let mut pending = Coverage::default();
            pending.record(&batch);
            let events = std::mem::replace(&mut batch, Vec::with_capacity(self.batch_size));
            if self.next.send(EventBatch { events }).await.is_err() {
                return SocketEnd::Closed("pipeline closed".into());
            }
            self.coverage.merge(&mut pending);
        }
    }

    /// Hands the depth events read so far to the book. Not held during a
    /// rotation: the book starts over on the new socket's events anyway.
    async fn send_depth(&mut self) {
        if self.depth.is_empty() {
            return;
        }
        let updates = std::mem::take(&mut self.depth);
        if let Some(book) = &self.book {
            // A book restarting under its supervisor loses this batch and
            // resyncs from a snapshot: nothing of the trades depends on it.
            let _ = book.send(DepthBatch { generation: self.generation, updates }).await;
        }
    }

    /// Stores the frames refused so far in the dead letters, durably, before
    /// the events read after them go on.
    async fn keep_refused(&mut self) {
        let Some(store) = self.dead_letters.clone() else { return };
        if self.refused.is_empty() {
            return;
        }
        let frames = std::mem::take(&mut self.refused);
        let stage = self.connection;
        if let Err(e) = tokio::task::spawn_blocking(move || store.store_frames(stage, frames)).await {
            tracing::error!(connection = stage, error = %e, "storing refused frames failed");
        }
    }

    async fn release_held(&mut self) -> bool {
        let mut held = std::mem::take(&mut self.held);
        self.release(&mut held).await
    }

    /// Sends what was held during a rotation. False when the pipeline is gone.
    async fn release(&mut self, held: &mut Vec<MarketEvent>) -> bool {
        for chunk in std::mem::take(held).chunks(self.batch_size) {
            self.probe.handled(chunk.len());
            if self.next.send(EventBatch { events: chunk.to_vec() }).await.is_err() {
                return false;
            }
        }
        true
    }

    fn frame(&mut self, bytes: &[u8], received: Timestamp, batch: &mut Vec<MarketEvent>, stats: &mut BatchStats) {
        if self.book.is_some() && is_depth(bytes) {
            match parse_depth_update(bytes) {
                Ok(update) => self.depth.push(update),
                Err(e) => self.refuse(bytes, &e, stats),
            }
            return;
        }
        match self.parser.parse(bytes, received) {
            Ok(Frame::Event(e)) => {
                stats.count(e.symbol());
                batch.push(e);
            }
            Ok(Frame::Control(Control::ServerShutdown)) => {
                tracing::info!(connection = self.connection, "serverShutdown received; rotating");
                self.owner.do_send(SocketEvent::ServerShutdown { generation: self.generation });
            }
            Ok(Frame::Control(Control::Error { code, msg })) => {
                tracing::warn!(connection = self.connection, code, %msg, "error from the exchange");
            }
            Ok(Frame::Control(Control::Response { .. })) => {}
            Err(e) => self.refuse(bytes, &e, stats),
        }
    }

    fn refuse(&mut self, bytes: &[u8], e: &BinanceError, stats: &mut BatchStats) {
        stats.errors += 1;
        let kind = error_kind(e);
        metrics::counter!("k2_binance_rejected_total", "reason" => kind).increment(1);
        // Reasons are logged at debug: a bad feed must not flood the log.
        tracing::debug!(connection = self.connection, reason = %e, "frame rejected");
        if self.dead_letters.is_some() {
            self.refused.push((bytes.to_vec(), format!("{kind}: {e}")));
        }
    }
}

/// A diff-depth frame: its event type is `depthUpdate` (raw or enveloped).
/// Binance writes JSON without spaces; a frame written otherwise goes to
/// the trade parser, which refuses it as unsupported.
fn is_depth(bytes: &[u8]) -> bool {
    memchr::memmem::find(bytes, br#""e":"depthUpdate""#).is_some()
}

/// A bounded label for a rejection.
pub fn error_kind(e: &BinanceError) -> &'static str {
    match e {
        BinanceError::Json(_) => "malformed_json",
        BinanceError::MissingField { .. } => "missing_field",
        BinanceError::Unsupported(_) => "unsupported",
        BinanceError::Invalid { .. } => "invalid_value",
        BinanceError::UnknownQuoteAsset(_) => "unknown_quote_asset",
        BinanceError::Decimal(_) => "decimal",
        BinanceError::BookSide(_) => "book_side",
    }
}

/// Per-batch counts, emitted once per batch rather than per frame.
#[derive(Default)]
struct BatchStats {
    by_symbol: Vec<(compact_str::CompactString, u64)>,
    errors: u64,
}

impl BatchStats {
    fn count(&mut self, symbol: &str) {
        match self.by_symbol.iter_mut().find(|(s, _)| s == symbol) {
            Some((_, n)) => *n += 1,
            None => self.by_symbol.push((symbol.into(), 1)),
        }
    }

    fn flush(&mut self, connection: &'static str) {
        for (symbol, n) in self.by_symbol.drain(..) {
            metrics::counter!("k2_binance_messages_received_total", "symbol" => symbol.to_string()).increment(n);
        }
        if self.errors > 0 {
            metrics::counter!("k2_binance_message_errors_total", "connection" => connection).increment(self.errors);
            self.errors = 0;
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        metrics::gauge!("k2_binance_last_message_timestamp_seconds", "connection" => connection).set(now);
    }
}
