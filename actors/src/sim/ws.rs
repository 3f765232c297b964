//! The simulator's WebSocket side: `/stream?streams=a/b/c` combined streams,
//! pings, answers to SUBSCRIBE-style requests, and the connection-level faults.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::error::RecvError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use super::market::{ALL, Item, Market, StreamId};
use super::{SimConfig, SimStats, bump};

pub(super) async fn serve(listener: TcpListener, market: Arc<Market>, stats: Arc<SimStats>, config: SimConfig) {
    loop {
        let Ok((socket, peer)) = listener.accept().await else { continue };
        let (market, stats, config) = (market.clone(), stats.clone(), config.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(socket, market, stats, config).await {
                tracing::debug!(%peer, error = %e, "simulator connection ended");
            }
        });
    }
}

// The handshake callback's error type is tungstenite's, not ours.
#[allow(clippy::result_large_err)]
async fn connection(
    socket: TcpStream,
    market: Arc<Market>,
    stats: Arc<SimStats>,
    config: SimConfig,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    socket.set_nodelay(true).ok();
    let mut path = String::new();
    let ws = tokio_tungstenite::accept_hdr_async(socket, |req: &Request, resp: Response| {
        path = req.uri().to_string();
        Ok(resp)
    })
    .await?;
    let subscribed = streams_of(&path, &market);
    // Subscribe before counting the connection, so the market's wait for a
    // listener never sends a frame to nobody.
    let mut rx = market.subscribe();
    bump(&stats.connections);
    let (mut sink, mut source) = ws.split();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + config.ping_interval, config.ping_interval);
    let mut closing: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        tokio::select! {
            chunk = rx.recv() => {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(RecvError::Lagged(_)) => {
                        bump(&stats.lagged_connections);
                        return sink.close().await;
                    }
                    Err(RecvError::Closed) => return sink.close().await,
                };
                for item in chunk.iter() {
                    let (stream, text, trade) = match item {
                        Item::Trade { stream, text } => (*stream, text, true),
                        Item::BookTicker { stream, text }
                        | Item::Depth { stream, text }
                        | Item::Malformed { stream, text } => (*stream, text, false),
                        Item::Disconnect => {
                            // Abrupt: no close frame, as a network failure would be.
                            sink.flush().await?;
                            return Ok(());
                        }
                        Item::Shutdown => {
                            let now = chrono::Utc::now().timestamp_millis();
                            sink.feed(Message::text(format!(r#"{{"e":"serverShutdown","E":{now}}}"#))).await?;
                            closing = Some(Box::pin(tokio::time::sleep(config.faults.shutdown_grace)));
                            continue;
                        }
                    };
                    if stream != ALL && !subscribed.contains(&stream) {
                        continue;
                    }
                    sink.feed(Message::text(text.to_string())).await?;
                    stats.frames_sent.fetch_add(1, Ordering::Relaxed);
                    match item {
                        Item::Trade { .. } if trade => bump(&stats.trades_sent),
                        Item::BookTicker { .. } => bump(&stats.book_tickers_sent),
                        Item::Depth { .. } => bump(&stats.depth_events_sent),
                        _ => {}
                    }
                }
                sink.flush().await?;
            }
            _ = ping.tick() => {
                bump(&stats.pings);
                sink.send(Message::Ping(b"k2-sim".to_vec().into())).await?;
            }
            _ = async { closing.as_mut().expect("guarded by the select condition").await }, if closing.is_some() => {
                return sink.close().await;
            }
            incoming = source.next() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(Message::Pong(_))) => bump(&stats.pongs),
                Some(Ok(Message::Text(t))) => {
                    // SUBSCRIBE / LIST requests: acknowledge by id.
                    let id = serde_json::from_str::<serde_json::Value>(&t).ok().and_then(|v| v.get("id").cloned());
                    let reply = serde_json::json!({"result": null, "id": id});
                    sink.send(Message::text(reply.to_string())).await?;
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Stream ids from `/stream?streams=btcusdt@trade/btcusdt@bookTicker`.
fn streams_of(path: &str, market: &Market) -> Vec<StreamId> {
    let query = path.split_once("streams=").map(|(_, q)| q).unwrap_or("");
    let query = query.split('&').next().unwrap_or("");
    query.split('/').filter_map(|s| market.stream_id(s)).collect()
}
