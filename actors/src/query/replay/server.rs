//! The replay port (`replay.bind`, off by default): a supervised actor that
//! owns the accept loop; each connection is a task that reads its pages
//! through the query engine and sends them in order.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::gate::ReplayGate;
use super::params::ReplayParams;
use super::play::{Ended, Outlet, play};
use crate::query::engine::QueryEngine;
use crate::runtime::messages::Fault;
use crate::runtime::supervision::{Supervise, Supervision, restartable};

pub const NAME: &str = "replay-server";

pub struct ReplayServerActor {
    listener: Option<Arc<TcpListener>>,
    engine: Arc<QueryEngine>,
    gate: ReplayGate,
    task: Option<tokio::task::AbortHandle>,
    supervision: Supervision,
}

impl ReplayServerActor {
    /// Takes a listener bound before the service starts (so the port is
    /// known and a bind failure stops the start with a clear error).
    pub fn new(listener: Arc<TcpListener>, engine: Arc<QueryEngine>, gate: ReplayGate, sup: Supervision) -> Self {
        Self { listener: Some(listener), engine, gate, task: None, supervision: sup }
    }
}

impl Actor for ReplayServerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.supervision.started();
        let Some(listener) = self.listener.clone() else { return };
        let (engine, gate, probe) = (self.engine.clone(), self.gate.clone(), self.supervision.probe().clone());
        let task = tokio::spawn(accept(listener, engine, gate, probe));
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
    gate: ReplayGate,
    probe: crate::runtime::health::Probe,
) -> String {
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
        let (engine, gate) = (engine.clone(), gate.clone());
        tokio::spawn(async move {
            // Held until the stream ends.
            let admitted = gate.admit();
            if let Err(e) = serve(socket, engine, admitted.is_none()).await {
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

// The handshake callback's error type is tungstenite's own HTTP response.
#[allow(clippy::result_large_err)]
async fn serve(socket: TcpStream, engine: Arc<QueryEngine>, full: bool) -> Result<(), String> {
    socket.set_nodelay(true).ok();
    let mut asked = None;
    let now = k2_core::Timestamp::now().as_micros();
    let ws = tokio_tungstenite::accept_hdr_async(socket, |req: &Request, resp: Response| {
        if full {
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
    let ended = play(&params, &engine, &mut outlet, &mut closed).await;
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
