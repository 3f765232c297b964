//! `GET /v1/replay`: the replay stream on the API port, behind its keys, in
//! Binance's combined format (`?streams=btcusdt@trade/...&start=...`, the
//! same parameters as the replay port's `/stream`).
//!
//! The upgraded connection is actix's: frames are encoded with actix-http's
//! WebSocket codec into a bounded channel that the response body drains
//! (a slow reader holds the stream back), and the request body is decoded
//! for the client's pings and close.

use actix_codec::{Decoder, Encoder};
use actix_http::ws::{self, CloseCode, CloseReason, Codec, Frame, Message};
use actix_web::body::BodyStream;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use std::sync::Arc;

use super::depth::{self, DepthBooks};
use super::gate::ReplayGate;
use super::params::ReplayParams;
use super::play::{Ended, Outlet, play};
use crate::query::engine::QueryEngine;

/// Encoded frames waiting for the socket.
const QUEUED_FRAMES: usize = 64;

fn refused(status: actix_web::http::StatusCode, parameter: &str, reason: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": reason, "parameter": parameter }))
}

/// Answers a `/v1/replay` request whose key was checked: the 101 that
/// starts the stream, or the refusal naming what is wrong.
pub fn replay(
    req: &HttpRequest,
    body: web::Payload,
    engine: Arc<QueryEngine>,
    books: Option<DepthBooks>,
    gate: &ReplayGate,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    let now = k2_core::Timestamp::now().as_micros();
    let params = ReplayParams::parse(&format!("/stream?{}", req.query_string()), now)
        .and_then(|p| depth::check(p, books.as_ref()));
    let params = match params {
        Ok(p) => p,
        Err(e) => {
            metrics::counter!("k2_replay_refused_total", "reason" => "parameter").increment(1);
            return refused(StatusCode::BAD_REQUEST, e.parameter, &e.reason);
        }
    };
    let mut handshake = match ws::handshake(req.head()) {
        Ok(h) => h,
        Err(e) => {
            metrics::counter!("k2_replay_refused_total", "reason" => "parameter").increment(1);
            return refused(StatusCode::BAD_REQUEST, "Upgrade", &format!("a WebSocket handshake is needed: {e}"));
        }
    };
    let Some(admitted) = gate.admit() else {
        return refused(StatusCode::SERVICE_UNAVAILABLE, "", "replay.max_clients streams are running");
    };
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUED_FRAMES);
    let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<()>();
    actix_web::rt::spawn(read_client(body, tx.clone(), closed_tx));
    actix_web::rt::spawn(async move {
        let mut outlet = Socket { tx, codec: Codec::new() };
        let ended = play(&params, &engine, books.as_ref(), &mut outlet, &mut closed).await;
        let reason = match ended {
            Ended::Range => CloseReason { code: CloseCode::Normal, description: Some("end of the range".into()) },
            Ended::Query(e) => {
                tracing::warn!(error = %e, "replay stopped by a query failure");
                CloseReason { code: CloseCode::Error, description: Some("the replay's query failed".into()) }
            }
            Ended::Client(_) => return drop(admitted),
        };
        let _ = outlet.send(Message::Close(Some(reason))).await;
        drop(admitted);
    });
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    HttpResponse::from(handshake.body(BodyStream::new(frames))).map_into_boxed_body()
}

/// The client's frames: pings answered, a close (or the end of its data)
/// signalled through `closed`.
async fn read_client(mut body: web::Payload, tx: mpsc::Sender<Bytes>, closed: tokio::sync::oneshot::Sender<()>) {
    let mut codec = Codec::new();
    let mut buf = BytesMut::new();
    'read: while let Some(Ok(chunk)) = body.next().await {
        buf.extend_from_slice(&chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(Frame::Ping(p))) => {
                    let mut out = BytesMut::new();
                    if codec.encode(Message::Pong(p), &mut out).is_ok() {
                        let _ = tx.send(out.freeze()).await;
                    }
                }
                Ok(Some(Frame::Close(_))) | Err(_) => break 'read,
                Ok(Some(_)) => {}
                Ok(None) => break,
            }
        }
    }
    let _ = closed.send(());
}

/// `/v1/replay`'s socket.
struct Socket {
    tx: mpsc::Sender<Bytes>,
    codec: Codec,
}

impl Socket {
    async fn send(&mut self, message: Message) -> Result<(), String> {
        let mut out = BytesMut::new();
        self.codec.encode(message, &mut out).map_err(|e| e.to_string())?;
        self.tx.send(out.freeze()).await.map_err(|_| "the client is gone".to_owned())
    }
}

impl Outlet for Socket {
    async fn frame(&mut self, text: String, _flush: bool) -> Result<(), String> {
        self.send(Message::Text(text.into())).await
    }

    async fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
}
