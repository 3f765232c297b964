//! `k2 exchange-sim`: a local exchange that speaks Binance's combined-stream
//! WebSocket protocol and the REST endpoint gap recovery uses.
//!
//! It generates realistic trades and book tickers (contiguous trade ids per
//! symbol, random-walk prices within decimal(18,8)) or replays a JSON-lines
//! recording, sends pings, and injects faults on a fixed schedule with exact
//! counts ([`SimStats`], also at `GET /sim/stats`): gaps (trades generated, kept
//! for REST, never sent), duplicate frames, reordered trades, malformed frames,
//! disconnects and `serverShutdown`. Each symbol also has a true order book
//! moved by diff-depth events (`<symbol>@depth@100ms`) and served as REST
//! snapshots (`GET /api/v3/depth`), with its own faults ([`DepthFaults`]).
//! Tests, benchmarks and the demo use it.

mod depth;
mod market;
mod rest;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

pub use self::depth::{DepthBody, DepthFaults};
pub use self::market::Market;

/// Faults, each on a fixed schedule; 0 turns one off.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    /// Every Nth trade of a symbol starts a gap of `gap_size` trades that are
    /// generated (and served over REST) but never sent.
    pub gap_every: u64,
    pub gap_size: u64,
    /// Every Nth trade of a symbol is sent twice.
    pub duplicate_every: u64,
    /// Every Nth trade of a symbol is sent after the one that follows it.
    pub reorder_every: u64,
    /// Every Nth frame is followed by a malformed one.
    pub malformed_every: u64,
    /// Every Nth frame, every connection is dropped; the market then waits
    /// for a new connection, so a disconnect loses nothing by itself.
    pub disconnect_every: u64,
    /// After N frames, a `serverShutdown` is sent on every connection, which
    /// is closed `shutdown_grace` later.
    pub shutdown_after: u64,
    pub shutdown_grace: Duration,
    /// Faults of the depth stream and its snapshots.
    pub depth: DepthFaults,
}

/// How the simulator runs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub ws_bind: SocketAddr,
    pub rest_bind: SocketAddr,
    /// Upper-case symbols, e.g. BTCUSDT.
    pub symbols: Vec<String>,
    /// Trades per second over all symbols; 0 is as fast as clients read.
    pub rate: u64,
    /// Trades per symbol before the market stops; 0 is unbounded.
    pub trades_per_symbol: u64,
    /// One book ticker per this many trades of a symbol; 0 is none.
    pub book_ticker_every: u64,
    /// One diff-depth event per this many trades of a symbol; 0 is none.
    pub depth_every: u64,
    pub ping_interval: Duration,
    pub first_trade_id: u64,
    pub seed: u64,
    pub faults: FaultPlan,
    /// Replay this JSON-lines recording instead of generating.
    pub replay: Option<PathBuf>,
    /// Trade only while a client is connected: with nobody subscribed the
    /// market waits instead of sending frames to nobody. A bounded market
    /// then ends only while a client watches, so a test that kills its
    /// client many times still has the market's last trades arrive live
    /// (a client cannot learn of trades after the last one it sees).
    pub hold_while_idle: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            ws_bind: "127.0.0.1:0".parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))),
            rest_bind: "127.0.0.1:0".parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))),
            symbols: vec!["BTCUSDT".into(), "ETHUSDT".into(), "BNBUSDT".into()],
            rate: 1000,
            trades_per_symbol: 0,
            book_ticker_every: 4,
            depth_every: 1,
            ping_interval: Duration::from_secs(20),
            first_trade_id: 1,
            seed: 7,
            faults: FaultPlan { shutdown_grace: Duration::from_secs(2), ..FaultPlan::default() },
            replay: None,
            hold_while_idle: false,
        }
    }
}

/// What the simulator did, counted exactly.
#[derive(Debug, Default)]
pub struct SimStats {
    pub trades_generated: AtomicU64,
    pub trades_sent: AtomicU64,
    pub book_tickers_sent: AtomicU64,
    pub depth_events_generated: AtomicU64,
    pub depth_events_sent: AtomicU64,
    pub depth_skipped: AtomicU64,
    pub depth_duplicates: AtomicU64,
    pub depth_snapshots: AtomicU64,
    pub stale_snapshots: AtomicU64,
    pub frames_sent: AtomicU64,
    pub gaps: AtomicU64,
    pub gap_trades: AtomicU64,
    pub duplicates: AtomicU64,
    pub reorders: AtomicU64,
    pub malformed: AtomicU64,
    pub disconnects: AtomicU64,
    pub shutdowns: AtomicU64,
    pub connections: AtomicU64,
    pub pings: AtomicU64,
    pub pongs: AtomicU64,
    pub lagged_connections: AtomicU64,
    pub rest_requests: AtomicU64,
}

/// A plain copy of [`SimStats`].
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub trades_generated: u64,
    pub trades_sent: u64,
    pub book_tickers_sent: u64,
    pub depth_events_generated: u64,
    pub depth_events_sent: u64,
    pub depth_skipped: u64,
    pub depth_duplicates: u64,
    pub depth_snapshots: u64,
    pub stale_snapshots: u64,
    pub frames_sent: u64,
    pub gaps: u64,
    pub gap_trades: u64,
    pub duplicates: u64,
    pub reorders: u64,
    pub malformed: u64,
    pub disconnects: u64,
    pub shutdowns: u64,
    pub connections: u64,
    pub pings: u64,
    pub pongs: u64,
    pub lagged_connections: u64,
    pub rest_requests: u64,
}

impl SimStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            trades_generated: g(&self.trades_generated),
            trades_sent: g(&self.trades_sent),
            book_tickers_sent: g(&self.book_tickers_sent),
            depth_events_generated: g(&self.depth_events_generated),
            depth_events_sent: g(&self.depth_events_sent),
            depth_skipped: g(&self.depth_skipped),
            depth_duplicates: g(&self.depth_duplicates),
            depth_snapshots: g(&self.depth_snapshots),
            stale_snapshots: g(&self.stale_snapshots),
            frames_sent: g(&self.frames_sent),
            gaps: g(&self.gaps),
            gap_trades: g(&self.gap_trades),
            duplicates: g(&self.duplicates),
            reorders: g(&self.reorders),
            malformed: g(&self.malformed),
            disconnects: g(&self.disconnects),
            shutdowns: g(&self.shutdowns),
            connections: g(&self.connections),
            pings: g(&self.pings),
            pongs: g(&self.pongs),
            lagged_connections: g(&self.lagged_connections),
            rest_requests: g(&self.rest_requests),
        }
    }
}

pub(crate) fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// A running simulator.
pub struct Simulator {
    pub ws_addr: SocketAddr,
    pub rest_addr: SocketAddr,
    pub stats: Arc<SimStats>,
    pub market: Arc<Market>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    rest: actix_web::dev::ServerHandle,
}

impl Simulator {
    /// Binds both servers and starts the market, inside an actix system.
    pub async fn start(config: SimConfig) -> std::io::Result<Self> {
        let stats = Arc::new(SimStats::default());
        let market = Arc::new(Market::new(&config, stats.clone())?);
        let listener = tokio::net::TcpListener::bind(config.ws_bind).await?;
        let ws_addr = listener.local_addr()?;
        let (rest_addr, rest) = rest::start(config.rest_bind, market.clone(), stats.clone())?;
        let ws_task = tokio::spawn(ws::serve(listener, market.clone(), stats.clone(), config.clone()));
        let gen_task = tokio::spawn(market.clone().run(config));
        tracing::info!(%ws_addr, %rest_addr, "exchange simulator listening");
        Ok(Self { ws_addr, rest_addr, stats, market, tasks: vec![ws_task, gen_task], rest })
    }

    /// `ws://` base URL for K2's `binance.endpoint`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.ws_addr)
    }

    /// `http://` base URL for K2's `binance.rest_endpoint`.
    pub fn rest_url(&self) -> String {
        format!("http://{}", self.rest_addr)
    }

    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.rest.stop(false).await;
    }
}
