//! One WebSocket connection's read loop: parse frames into batches, send them
//! down the pipeline (waiting when it is full, which stops reading the socket
//! and so pushes back on the exchange), and report what happens to the
//! connection actor.

use std::time::Duration;

use actix::Addr;
use futures_util::{FutureExt, StreamExt};
use k2_core::source::binance::{BinanceError, BinanceParser, Control, Frame};
use k2_core::{MarketEvent, Timestamp};
use tokio_tungstenite::tungstenite::Message;

use super::connection::{ConnectionActor, SocketEnd, SocketEvent};
use crate::health::Link;
use crate::messages::EventBatch;
use crate::sequencer::SequenceActor;

pub(super) struct SocketTask {
    pub generation: u64,
    pub url: String,
    pub parser: BinanceParser,
    pub next: Link<SequenceActor>,
    pub owner: Addr<ConnectionActor>,
    pub batch_size: usize,
    pub silence_timeout: Duration,
    pub connection: &'static str,
    pub probe: crate::health::Probe,
}

impl SocketTask {
    pub async fn run(mut self) {
        let end = self.read().await;
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
            let first = match tokio::time::timeout(self.silence_timeout, ws.next()).await {
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
                        let reason = frame.map(|f| format!("{} {}", f.code, f.reason)).unwrap_or_default();
                        if !batch.is_empty() {
                            let _ = self.next.send(EventBatch { events: std::mem::take(&mut batch) }).await;
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
            if batch.is_empty() {
                continue;
            }
            if !live {
                live = true;
                self.owner.do_send(SocketEvent::Live { generation: self.generation });
            }
            self.probe.handled(batch.len());
            let events = std::mem::replace(&mut batch, Vec::with_capacity(self.batch_size));
            if self.next.send(EventBatch { events }).await.is_err() {
                return SocketEnd::Closed("pipeline closed".into());
            }
        }
    }

    fn frame(&mut self, bytes: &[u8], received: Timestamp, batch: &mut Vec<MarketEvent>, stats: &mut BatchStats) {
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
            Err(e) => {
                stats.errors += 1;
                let kind = error_kind(&e);
                metrics::counter!("k2_binance_rejected_total", "reason" => kind).increment(1);
                // Reasons are logged at debug: a bad feed must not flood the log.
                tracing::debug!(connection = self.connection, reason = %e, "frame rejected");
            }
        }
    }
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
