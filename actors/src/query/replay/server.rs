//! The replay port (`replay.bind`, off by default): a supervised actor that
//! owns the accept loop; each connection is a task that reads its pages
//! through the query engine and sends them in order, or, for a plain
//! `GET /api/v3/depth`, answers with the book as the replay has played it
//! (`depth.rs`), as Binance's REST endpoint would.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::depth::{self, DepthBooks, SnapshotError};
use super::gate::ReplayGate;
use super::params::{DepthAsk, ReplayParams};
use super::play::{Ended, Outlet, play};
use crate::query::engine::QueryEngine;
use crate::runtime::messages::Fault;
use crate::runtime::supervision::{Supervise, Supervision, restartable};

pub const NAME: &str = "replay-server";

pub struct ReplayServerActor {
    listener: Option<Arc<TcpListener>>,
    engine: Arc<QueryEngine>,
    gate: ReplayGate,
    books: Option<DepthBooks>,
    task: Option<tokio::task::AbortHandle>,
    supervision: Supervision,
}

impl ReplayServerActor {
    /// Takes a listener bound before the service starts (so the port is
    /// known and a bind failure stops the start with a clear error).
    pub fn new(
        listener: Arc<TcpListener>,
        engine: Arc<QueryEngine>,
        gate: ReplayGate,
        books: Option<DepthBooks>,
        sup: Supervision,
    ) -> Self {
        Self { listener: Some(listener), engine, gate, books, task: None, supervision: sup }
    }
}

impl Actor for ReplayServerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.supervision.started();
        let Some(listener) = self.listener.clone() else { return };
        let shared = Shared { engine: self.engine.clone(), gate: self.gate.clone(), books: self.books.clone() };
        let task = tokio::spawn(accept(listener, shared, self.supervision.probe().clone()));
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

/// What every connection of the port uses.
#[derive(Clone)]
struct Shared {
    engine: Arc<QueryEngine>,
    gate: ReplayGate,
    books: Option<DepthBooks>,
}

async fn accept(listener: Arc<TcpListener>, shared: Shared, probe: crate::runtime::health::Probe) -> String {
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
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(socket, shared).await {
                tracing::debug!(%peer, error = %e, "replay connection ended");
            }
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

/// One connection: a depth snapshot asked over plain HTTP, or a stream.
async fn connection(socket: TcpStream, shared: Shared) -> Result<(), String> {
    socket.set_nodelay(true).ok();
    // A client that sends nothing is not waited for.
    let target = tokio::time::timeout(HEAD_WAIT, request_target(&socket))
        .await
        .map_err(|_| "no request line within 30 s".to_owned())??;
    if let Some(target) = target
        && let Some(asked) = DepthAsk::parse(&target).transpose()
    {
        return answer_depth(socket, asked, shared.books.as_ref()).await;
    }
    // Held until the stream ends.
    let admitted = shared.gate.admit();
    serve(socket, &shared, admitted.is_none()).await
}

/// How long a connection may take to send its request line.
const HEAD_WAIT: Duration = Duration::from_secs(30);

/// The request line's target, read without taking it from the socket
/// (the WebSocket handshake reads the request again); `None` when the
/// line does not come whole.
async fn request_target(socket: &TcpStream) -> Result<Option<String>, String> {
    let mut buf = [0u8; 8192];
    for _ in 0..200 {
        let n = socket.peek(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(end) = buf[..n].windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..end]);
            return Ok(line.split(' ').nth(1).map(str::to_owned));
        }
        if n == buf.len() {
            return Ok(None);
        }
        // Part of the line is in: wait for the rest.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(None)
}

/// Answers `GET /api/v3/depth` as Binance does (its error body is
/// `{"code","msg"}`; K2 adds the parameter), then closes.
async fn answer_depth(
    mut socket: TcpStream,
    asked: Result<DepthAsk, k2_core::query_params::ParamError>,
    books: Option<&DepthBooks>,
) -> Result<(), String> {
    // The request head, read off before answering.
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut chunk))
            .await
            .map_err(|_| "the request head did not come whole".to_owned())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let error = |status: u16, code: i32, msg: String, parameter: &str| {
        (status, serde_json::json!({ "code": code, "msg": msg, "parameter": parameter }).to_string())
    };
    let (status, body) = match (asked, books) {
        (Err(e), _) => {
            metrics::counter!("k2_replay_refused_total", "reason" => "parameter").increment(1);
            error(400, if e.parameter == "symbol" { -1102 } else { -1100 }, e.reason, e.parameter)
        }
        (Ok(_), None) => {
            error(400, -1121, "order books are not stored here (book.enabled and book.store)".into(), "symbol")
        }
        (Ok(ask), Some(books)) => match books.snapshot(&ask.symbol, ask.start, ask.limit).await {
            Ok(body) => (200, body),
            Err(e @ SnapshotError::Unknown(_)) => error(400, -1121, e.to_string(), "symbol"),
            Err(e @ SnapshotError::Unsynced { .. }) => error(503, -1008, e.to_string(), ""),
            Err(e @ SnapshotError::Read(_)) => {
                tracing::warn!(error = %e, "replay: a depth snapshot could not be read");
                error(503, -1008, e.to_string(), "")
            }
        },
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await.map_err(|e| e.to_string())?;
    socket.shutdown().await.map_err(|e| e.to_string())
}

// The handshake callback's error type is tungstenite's own HTTP response.
#[allow(clippy::result_large_err)]
async fn serve(socket: TcpStream, shared: &Shared, full: bool) -> Result<(), String> {
    let mut asked = None;
    let now = k2_core::Timestamp::now().as_micros();
    let ws = tokio_tungstenite::accept_hdr_async(socket, |req: &Request, resp: Response| {
        if full {
            return Err(refusal(StatusCode::SERVICE_UNAVAILABLE, "", "replay.max_clients streams are running"));
        }
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        match ReplayParams::parse(target, now).and_then(|p| depth::check(p, shared.books.as_ref())) {
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
    let (sink, mut incoming) = ws.split();
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
    let mut outlet = Tungstenite(sink);
    let ended = play(&params, &shared.engine, shared.books.as_ref(), &mut outlet, &mut closed).await;
    let mut sink = outlet.0;
    let close = match ended {
        Ended::Range => CloseFrame { code: CloseCode::Normal, reason: "end of the range".into() },
        Ended::Query(e) => {
            tracing::warn!(error = %e, "replay stopped by a query failure");
            CloseFrame { code: CloseCode::Error, reason: "the replay's query failed".into() }
        }
        Ended::Client(e) => return e.map_or(Ok(()), Err),
    };
    let _ = sink.send(Message::Close(Some(close))).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), closed).await;
    Ok(())
}

/// The replay port's sockets.
struct Tungstenite(futures_util::stream::SplitSink<tokio_tungstenite::WebSocketStream<TcpStream>, Message>);

impl Outlet for Tungstenite {
    async fn frame(&mut self, text: String, flush: bool) -> Result<(), String> {
        let message = Message::Text(Utf8Bytes::from(text));
        let written = if flush { self.0.send(message).await } else { self.0.feed(message).await };
        written.map_err(|e| e.to_string())
    }

    async fn flush(&mut self) -> Result<(), String> {
        self.0.flush().await.map_err(|e| e.to_string())
    }
}
