//! The replay port (`replay.bind`, off by default): a supervised actor that
//! owns the accept loop; each connection is a task that reads its pages
//! through the query engine and sends them in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix::prelude::*;
use futures_util::{SinkExt, StreamExt};
use k2_core::query_params::{Cursor, Pin, ReadParams, Source};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::frames::{self, Frame, Kind};
use super::params::{ReplayParams, Wrap};
use crate::lake::TableKind;
use crate::query::engine::QueryEngine;
use crate::runtime::messages::Fault;
use crate::runtime::supervision::{Supervise, Supervision, restartable};

pub const NAME: &str = "replay-server";

/// Rows per page read for one symbol.
const PAGE: usize = 10_000;

/// Frames written between flushes when the stream is not paced.
const FLUSH_EVERY: u64 = 256;

pub struct ReplayServerActor {
    listener: Option<Arc<TcpListener>>,
    engine: Arc<QueryEngine>,
    max_clients: usize,
    task: Option<tokio::task::AbortHandle>,
    supervision: Supervision,
}

impl ReplayServerActor {
    /// Takes a listener bound before the service starts (so the port is
    /// known and a bind failure stops the start with a clear error).
    pub fn new(listener: Arc<TcpListener>, engine: Arc<QueryEngine>, max_clients: usize, sup: Supervision) -> Self {
        Self { listener: Some(listener), engine, max_clients, task: None, supervision: sup }
    }
}

impl Actor for ReplayServerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.supervision.started();
        let Some(listener) = self.listener.clone() else { return };
        let (engine, max, probe) = (self.engine.clone(), self.max_clients, self.supervision.probe().clone());
        let task = tokio::spawn(accept(listener, engine, max, probe));
        self.task = Some(task.abort_handle());
        ctx.spawn(task.into_actor(self).map(|ended, act, ctx| {
            let reason = crate::runtime::supervision::task_ended(ended, "the replay server");
            act.task = None;
            act.supervision.fail(reason);
            ctx.stop();
        }));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

restartable!(ReplayServerActor);

impl Supervise for ReplayServerActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    fn reset(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Handler<Fault> for ReplayServerActor {
    type Result = ();

    fn handle(&mut self, fault: Fault, ctx: &mut Context<Self>) {
        tracing::warn!(actor = NAME, ?fault, "injecting fault");
        ctx.stop();
    }
}

async fn accept(
    listener: Arc<TcpListener>,
    engine: Arc<QueryEngine>,
    max_clients: usize,
    probe: crate::runtime::health::Probe,
) -> String {
    let clients = Arc::new(AtomicUsize::new(0));
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors, say: the next accept may succeed.
                tracing::warn!(error = %e, "replay: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        probe.handled(1);
        let (engine, clients) = (engine.clone(), clients.clone());
        tokio::spawn(async move {
            let full = clients.fetch_add(1, Ordering::AcqRel) >= max_clients;
            metrics::gauge!("k2_replay_clients").set(clients.load(Ordering::Acquire) as f64);
            if let Err(e) = serve(socket, engine, full).await {
                tracing::debug!(%peer, error = %e, "replay connection ended");
            }
            clients.fetch_sub(1, Ordering::AcqRel);
            metrics::gauge!("k2_replay_clients").set(clients.load(Ordering::Acquire) as f64);
        });
    }
}

fn refusal(status: StatusCode, parameter: &str, reason: &str) -> ErrorResponse {
    let body = serde_json::json!({ "error": reason, "parameter": parameter }).to_string();
    let mut response = ErrorResponse::new(Some(body));
    *response.status_mut() = status;
    if let Ok(v) = "application/json".parse() {
        response.headers_mut().insert("content-type", v);
    }
    response
}

// The handshake callback's error type is tungstenite's own HTTP response.
#[allow(clippy::result_large_err)]
async fn serve(socket: TcpStream, engine: Arc<QueryEngine>, full: bool) -> Result<(), String> {
    socket.set_nodelay(true).ok();
    let mut asked = None;
    let now = k2_core::Timestamp::now().as_micros();
    let ws = tokio_tungstenite::accept_hdr_async(socket, |req: &Request, resp: Response| {
        if full {
            metrics::counter!("k2_replay_refused_total", "reason" => "busy").increment(1);
            return Err(refusal(StatusCode::SERVICE_UNAVAILABLE, "", "replay.max_clients streams are running"));
        }
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        match ReplayParams::parse(target, now) {
            Ok(p) => {
                asked = Some(p);
                Ok(resp)
            }
            Err(e) => {
                metrics::counter!("k2_replay_refused_total", "reason" => "parameter").increment(1);
                Err(refusal(StatusCode::BAD_REQUEST, e.parameter, &e.reason))
            }
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    let Some(params) = asked else { return Ok(()) };
    let (mut sink, mut incoming) = ws.split();
    // The client's frames (pings, a close) are read beside the stream.
    let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        while let Some(Ok(m)) = incoming.next().await {
            if m.is_close() {
                break;
            }
        }
        let _ = closed_tx.send(());
    });
    let started = tokio::time::Instant::now();
    let mut first_time: Option<i64> = None;
    let mut sent = 0u64;
    let mut merge = Merge::new(&params);
    let outcome = loop {
        let next = match merge.next(&engine).await {
            Ok(Some(f)) => f,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        if params.speed > 0.0 {
            let t0 = *first_time.get_or_insert(next.time);
            let due = Duration::from_secs_f64(((next.time - t0).max(0) as f64) / 1e6 / params.speed);
            tokio::select! {
                () = tokio::time::sleep_until(started + due) => {}
                _ = &mut closed => return Ok(()),
            }
        }
        let message = Message::Text(Utf8Bytes::from(frames::wrap(&next, params.wrap == Wrap::Combined)));
        // Unpaced, frames are written in runs and flushed once per run (a
        // write per frame would bound the rate by system calls); the
        // socket's buffer still holds a slow reader's stream back.
        let unpaced = params.speed == 0.0;
        let write = async {
            if unpaced {
                sink.feed(message).await?;
                if (sent + 1).is_multiple_of(FLUSH_EVERY) { sink.flush().await } else { Ok(()) }
            } else {
                sink.send(message).await
            }
        };
        tokio::select! {
            written = write => written.map_err(|e| e.to_string())?,
            _ = &mut closed => return Ok(()),
        }
        sent += 1;
    };
    if let Err(e) = sink.flush().await {
        return Err(e.to_string());
    }
    metrics::counter!("k2_replay_events_sent_total").increment(sent);
    let close = match &outcome {
        Ok(()) => CloseFrame { code: CloseCode::Normal, reason: "end of the range".into() },
        Err(e) => {
            tracing::warn!(error = %e, "replay stopped by a query failure");
            CloseFrame { code: CloseCode::Error, reason: "the replay's query failed".into() }
        }
    };
    let _ = sink.send(Message::Close(Some(close))).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), closed).await;
    outcome
}

/// Each stream's pages, merged by (time, symbol, kind, id).
struct Merge {
    symbols: Vec<Pager>,
    params: ReplayParams,
}

struct Pager {
    symbol: String,
    kind: Kind,
    ready: std::collections::VecDeque<Frame>,
    cursor: Option<Cursor>,
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
    fn new(params: &ReplayParams) -> Self {
        let symbols = params
            .streams
            .iter()
            .map(|(s, kind)| Pager {
                symbol: s.to_string(),
                kind: *kind,
                ready: Default::default(),
                cursor: None,
                done: false,
            })
            .collect();
        Self { symbols, params: params.clone() }
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
        let table = match pager.kind {
            Kind::Trade => TableKind::Trades,
            Kind::BookTicker => TableKind::Quotes,
        };
        let rows = engine.read(table, read).await.map_err(|e| e.to_string())?;
        for batch in &rows.batches {
            let made = match pager.kind {
                Kind::Trade => frames::trades(batch, self.params.micros),
                Kind::BookTicker => frames::book_tickers(batch),
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
}
