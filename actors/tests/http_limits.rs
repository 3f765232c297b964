//! One client cannot hold the HTTP server: bodies that trickle in are cut
//! off with 408 once `http.request_timeout` has passed, and past
//! `http.max_requests_per_client` requests in flight from one address the
//! next gets 429, while another address (a health probe) is still served.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use figment::providers::Env;
use k2::runtime::config::Config;
use k2::service::Service;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A connection from `source` (any 127.0.0.0/8 address is loopback).
async fn connect(source: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// The status of the answer on `stream`, read to its end.
async fn status(stream: &mut TcpStream) -> u16 {
    let mut text = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut text)).await;
    let text = String::from_utf8_lossy(&text);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

async fn get(source: &str, to: SocketAddr, path: &str) -> u16 {
    let mut s = connect(source, to).await;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: k2\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    status(&mut s).await
}

/// A service without sources on a loopback port, its query time budget 1 s,
/// with `http` (lines of `[http]` keys) for the limits under test.
fn config(dir: &std::path::Path, http: &str) -> Config {
    let file = dir.join("k2.toml");
    let text = format!(
        "[http]\nbind = \"127.0.0.1:0\"\n{http}[query]\ntimeout = \"1s\"\n[binance]\nenabled = false\n[storage]\ndata_dir = \"{}\"\n",
        dir.join("data").display()
    );
    std::fs::write(&file, text).unwrap();
    Config::load_from(Some(&file), Env::prefixed("K2_TEST_UNSET__")).unwrap()
}

#[test]
fn a_trickling_client_is_cut_off_and_cannot_take_every_slot() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "request_timeout = \"2s\"\nmax_requests_per_client = 3\n");
    k2::runtime::run(|| async move {
        let k2 = Service::builder(&config).start().await.unwrap();
        let http = k2.serve().unwrap();
        let addr = http.addr;

        // Three registry writes whose bodies never finish arriving.
        let mut slow = Vec::new();
        for _ in 0..3 {
            let mut s = connect("127.0.0.2", addr).await;
            s.write_all(
                b"POST /subjects/x-value/versions HTTP/1.1\r\nHost: k2\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
            )
            .await
            .unwrap();
            slow.push(s);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(get("127.0.0.2", addr, "/health").await, 429, "a fourth request from that address waits for none of them");
        assert_eq!(get("127.0.0.3", addr, "/health").await, 200, "another address is served");

        // Each is answered 408 once its time is up, however slowly it sends.
        let started = Instant::now();
        for s in &mut slow {
            assert_eq!(status(s).await, 408);
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        assert_eq!(get("127.0.0.2", addr, "/health").await, 200, "its slots are back");
        let metrics = {
            let mut s = connect("127.0.0.3", addr).await;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: k2\r\nConnection: close\r\n\r\n").await.unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).await.unwrap();
            text
        };
        let value = |series: &str| {
            metrics.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        };
        assert!(value("k2_http_refused_total{reason=\"per_client\"}").unwrap_or(0.0) >= 1.0, "{metrics}");
        assert!(value("k2_http_refused_total{reason=\"timeout\"}").unwrap_or(0.0) >= 3.0, "{metrics}");
        http.handle.stop(true).await;
        k2.shutdown(k2::service::Stop::Graceful).await;
    })
    .unwrap();
}

/// Forty clients (one address each) send a body a byte a second: every one
/// is answered 408 within the request timeout (plus a margin), and `/health`
/// answers throughout. A forty-first connection from an address already at
/// its connection limit is answered 429 and closed.
#[test]
fn forty_trickling_bodies_are_cut_off_while_health_answers() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        config(dir.path(), "request_timeout = \"3s\"\nmax_requests_per_client = 2\nmax_connections_per_client = 2\n");
    k2::runtime::run(|| async move {
        let k2 = Service::builder(&config).start().await.unwrap();
        let http = k2.serve().unwrap();
        let addr = http.addr;
        let started = Instant::now();
        let mut trickling = Vec::new();
        for i in 0..40 {
            let source = format!("127.0.1.{}", i + 1);
            trickling.push(tokio::spawn(async move {
                let mut s = connect(&source, addr).await;
                s.write_all(b"PUT /config HTTP/1.1\r\nHost: k2\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
                    .await
                    .unwrap();
                // A byte a second until the server answers or closes.
                let mut answer = Vec::new();
                loop {
                    tokio::select! {
                        read = s.read_to_end(&mut answer) => { let _ = read; break; }
                        () = tokio::time::sleep(Duration::from_secs(1)) => {
                            if s.write_all(b" ").await.is_err() {
                                let _ = s.read_to_end(&mut answer).await;
                                break;
                            }
                        }
                    }
                }
                let text = String::from_utf8_lossy(&answer);
                (text.split(' ').nth(1).and_then(|c| c.parse::<u16>().ok()).unwrap_or(0), started.elapsed())
            }));
        }
        // /health keeps answering while the forty hold their requests open.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(get("127.0.0.3", addr, "/health").await, 200, "health while bodies trickle");
        }
        // An address at its connection limit: the third connection's request is refused.
        // Two kept alive after an answer each (so both are surely counted).
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = connect("127.0.0.4", addr).await;
            s.write_all(b"GET /health HTTP/1.1\r\nHost: k2\r\n\r\n").await.unwrap();
            let mut buf = [0u8; 12];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf[9..12], b"200");
            held.push(s);
        }
        assert_eq!(get("127.0.0.4", addr, "/health").await, 429, "a third connection from one address");
        drop(held);
        for t in trickling {
            let (code, at) = t.await.unwrap();
            assert_eq!(code, 408, "a trickling body is answered 408");
            assert!(at < Duration::from_secs(8), "cut off {at:?} after it began (request_timeout 3 s)");
        }
        assert_eq!(get("127.0.0.3", addr, "/health").await, 200);
        http.handle.stop(true).await;
        k2.shutdown(k2::service::Stop::Graceful).await;
    })
    .unwrap();
}
