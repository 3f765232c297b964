//! The simulated market: generates (or replays) frames, applies the fault
//! plan, keeps every generated trade for REST, and broadcasts chunks of frames
//! to the connections.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k2_core::source::binance::rest::RestTrade;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::broadcast;

use super::depth::{DepthBody, DepthFaults, SimBook, decimal_text};
use super::{SimConfig, SimStats, bump};

/// Index of a stream a frame belongs to; `ALL` goes to every connection.
pub type StreamId = u32;
pub const ALL: StreamId = u32::MAX;

/// One thing to send on every connection subscribed to `stream`.
#[derive(Debug)]
pub enum Item {
    Trade {
        stream: StreamId,
        text: Box<str>,
    },
    BookTicker {
        stream: StreamId,
        text: Box<str>,
    },
    Depth {
        stream: StreamId,
        text: Box<str>,
    },
    Malformed {
        stream: StreamId,
        text: Box<str>,
    },
    /// Drop every connection now.
    Disconnect,
    /// Send `serverShutdown`, close after the grace period.
    Shutdown,
}

pub type Chunk = Arc<Vec<Item>>;

/// Trades kept per symbol for REST; older ones are forgotten (and a gap that
/// old is reported unrecoverable, as on a real exchange).
const HISTORY_LIMIT: usize = 2_000_000;

#[derive(Debug, Clone, Copy)]
struct HistTrade {
    price: i64,
    qty: i64,
    time_ms: i64,
    maker: bool,
}

/// Everything generated for one symbol: its trades by id, and its book.
#[derive(Debug, Default)]
struct History {
    first_id: u64,
    trades: Vec<HistTrade>,
    book: Option<SimBook>,
}

pub struct Market {
    streams: Vec<String>,
    tx: broadcast::Sender<Chunk>,
    history: Mutex<HashMap<String, History>>,
    stats: Arc<SimStats>,
    done: AtomicBool,
    /// See [`SimConfig::hold_while_idle`].
    hold_while_idle: bool,
    depth_faults: DepthFaults,
}

impl Market {
    pub(super) fn new(config: &SimConfig, stats: Arc<SimStats>) -> std::io::Result<Self> {
        let streams = config
            .symbols
            .iter()
            .flat_map(|s| {
                let l = s.to_ascii_lowercase();
                [format!("{l}@trade"), format!("{l}@bookTicker"), format!("{l}@depth@100ms")]
            })
            .collect();
        let (tx, _) = broadcast::channel(4096);
        Ok(Self {
            streams,
            tx,
            history: Mutex::new(HashMap::new()),
            stats,
            done: AtomicBool::new(false),
            hold_while_idle: config.hold_while_idle,
            depth_faults: config.faults.depth,
        })
    }

    /// The index of a stream name such as `btcusdt@trade`. `@depth` (1 s
    /// updates on Binance) is served as `@depth@100ms`.
    pub fn stream_id(&self, name: &str) -> Option<StreamId> {
        let fast;
        let name = match name.strip_suffix("@depth") {
            Some(symbol) => {
                fast = format!("{symbol}@depth@100ms");
                fast.as_str()
            }
            None => name,
        };
        self.streams.iter().position(|s| s.eq_ignore_ascii_case(name)).map(|i| i as StreamId)
    }

    /// A REST depth snapshot of `symbol`'s top `limit` levels per side (an
    /// old copy when the fault plan says so); `None` for an unknown symbol.
    pub fn depth(&self, symbol: &str, limit: usize) -> Option<(DepthBody, bool)> {
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        let book = history.get_mut(symbol)?.book.as_mut()?;
        let answer = book.snapshot(limit, &self.depth_faults);
        bump(&self.stats.depth_snapshots);
        if answer.1 {
            bump(&self.stats.stale_snapshots);
        }
        Some(answer)
    }

    /// The whole true book of `symbol` now, or at a recent `update_id`.
    pub fn true_book(&self, symbol: &str, update_id: Option<u64>) -> Option<DepthBody> {
        let history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        history.get(symbol)?.book.as_ref()?.truth(update_id)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Chunk> {
        self.tx.subscribe()
    }

    /// True once a bounded market has sent everything.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Trades of `symbol` from `from_id`, at most `limit`, as Binance's REST
    /// API answers them. `None` for an unknown symbol.
    pub fn historical(&self, symbol: &str, from_id: u64, limit: usize) -> Option<Vec<RestTrade>> {
        let history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        let h = history.get(symbol)?;
        let start = from_id.saturating_sub(h.first_id) as usize;
        Some(
            h.trades
                .iter()
                .enumerate()
                .skip(start)
                .take(limit)
                .map(|(i, t)| RestTrade {
                    id: h.first_id + i as u64,
                    price: decimal_text(t.price),
                    qty: decimal_text(t.qty),
                    quote_qty: None,
                    time: t.time_ms,
                    is_buyer_maker: t.maker,
                    is_best_match: Some(true),
                })
                .collect(),
        )
    }

    /// Generates or replays until done (or forever).
    pub(super) async fn run(self: Arc<Self>, config: SimConfig) {
        self.wait_for_listener().await;
        if let Some(path) = &config.replay {
            self.replay(path, config.rate).await;
        } else {
            self.generate(&config).await;
        }
        self.done.store(true, Ordering::Release);
    }

    async fn wait_for_listener(&self) {
        while self.tx.receiver_count() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// After a disconnect: wait until the old connections have let go and a
    /// new one has subscribed, so that no frame goes to nobody.
    async fn wait_for_reconnect(&self) {
        while self.tx.receiver_count() > 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.wait_for_listener().await;
    }

    /// Broadcasts a chunk; true when it first waited for a client
    /// ([`SimConfig::hold_while_idle`]).
    async fn send(&self, chunk: Vec<Item>) -> bool {
        if chunk.is_empty() {
            return false;
        }
        let held = self.hold_while_idle && self.tx.receiver_count() == 0;
        if held {
            self.wait_for_listener().await;
        }
        let disconnect = chunk.iter().any(|i| matches!(i, Item::Disconnect));
        let _ = self.tx.send(Arc::new(chunk));
        if disconnect {
            self.wait_for_reconnect().await;
        }
        held
    }

    async fn generate(&self, config: &SimConfig) {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let mut symbols: Vec<SymbolGen> = config
            .symbols
            .iter()
            .enumerate()
            .map(|(i, s)| SymbolGen::new(s, i as StreamId * 3, config.first_trade_id, &mut rng))
            .collect();
        {
            let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
            for s in &symbols {
                let book = (config.depth_every > 0).then(|| SimBook::new(&s.symbol, s.price, &mut rng));
                history.insert(s.symbol.clone(), History { first_id: config.first_trade_id, trades: Vec::new(), book });
            }
        }
        let faults = &config.faults;
        let mut frames = 0u64;
        let mut budget = 0.0f64;
        let mut last = Instant::now();
        let mut turn = 0usize;
        loop {
            let active = symbols.iter().filter(|s| !s.finished(config.trades_per_symbol)).count();
            if active == 0 {
                let mut tail = Vec::new();
                for s in &mut symbols {
                    if let Some(h) = s.held.take() {
                        tail.push(h);
                    }
                }
                self.send(tail).await;
                return;
            }
            let n = if config.rate == 0 {
                // As fast as the slowest connection reads.
                while self.tx.len() > 64 {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                512
            } else {
                let now = Instant::now();
                budget = (budget + now.duration_since(last).as_secs_f64() * config.rate as f64).min(50_000.0);
                last = now;
                if budget < 1.0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                let n = budget as usize;
                budget -= n as f64;
                n
            };
            // The history lock must not be held across an await.
            let chunk = {
                let mut chunk = Vec::with_capacity(n + 16);
                let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
                for _ in 0..n {
                    let len = symbols.len();
                    let s = &mut symbols[turn % len];
                    turn += 1;
                    if s.finished(config.trades_per_symbol) {
                        continue;
                    }
                    let Some(h) = history.get_mut(&s.symbol) else { continue };
                    let before = chunk.len();
                    s.step(&mut rng, config, h, &self.stats, &mut chunk);
                    for _ in before..chunk.len() {
                        frames += 1;
                        if faults.malformed_every > 0 && frames.is_multiple_of(faults.malformed_every) {
                            bump(&self.stats.malformed);
                            chunk.push(Item::Malformed { stream: s.stream, text: s.malformed().into() });
                        }
                        if faults.disconnect_every > 0 && frames.is_multiple_of(faults.disconnect_every) {
                            bump(&self.stats.disconnects);
                            chunk.push(Item::Disconnect);
                        }
                        if faults.shutdown_after > 0 && frames == faults.shutdown_after {
                            bump(&self.stats.shutdowns);
                            chunk.push(Item::Shutdown);
                        }
                    }
                    if chunk.iter().rev().take(4).any(|i| matches!(i, Item::Disconnect)) {
                        break;
                    }
                }
                chunk
            };
            if self.send(chunk).await {
                // Time spent waiting for a client is not owed as a burst.
                last = Instant::now();
            }
        }
    }

    async fn replay(&self, path: &std::path::Path, rate: u64) {
        let lines = match std::fs::File::open(path) {
            Ok(f) => std::io::BufReader::new(f).lines(),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot open recording");
                return;
            }
        };
        let mut chunk = Vec::new();
        let pause = if rate == 0 { Duration::ZERO } else { Duration::from_secs_f64(256.0 / rate as f64) };
        for line in lines.map_while(Result::ok) {
            if line.trim().is_empty() {
                continue;
            }
            chunk.push(Item::Trade { stream: ALL, text: line.into() });
            if chunk.len() == 256 {
                self.send(std::mem::take(&mut chunk)).await;
                tokio::time::sleep(pause).await;
            }
        }
        self.send(chunk).await;
    }
}

/// One symbol's generator state.
struct SymbolGen {
    symbol: String,
    lower: String,
    stream: StreamId,
    next_id: u64,
    generated: u64,
    count: u64,
    price: i64,
    book_id: u64,
    held: Option<Item>,
}

impl SymbolGen {
    fn new(symbol: &str, stream: StreamId, first_id: u64, rng: &mut StdRng) -> Self {
        Self {
            symbol: symbol.to_ascii_uppercase(),
            lower: symbol.to_ascii_lowercase(),
            stream,
            next_id: first_id,
            generated: 0,
            count: 0,
            // Between 10 and 60,000, with 8 decimal places.
            price: rng.random_range(1_000_000_000..6_000_000_000_000),
            book_id: rng.random_range(1_000_000..2_000_000),
            held: None,
        }
    }

    fn finished(&self, limit: u64) -> bool {
        limit > 0 && self.generated >= limit
    }

    fn new_trade(&mut self, rng: &mut StdRng, h: &mut History, stats: &SimStats) -> (u64, HistTrade) {
        // A random walk of up to ±5 basis points per trade, never below 1e-8.
        let step = self.price / 20_000;
        self.price = (self.price + rng.random_range(-step..=step)).max(1);
        let t = HistTrade {
            price: self.price,
            qty: rng.random_range(1..10_000_000_000),
            time_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64),
            maker: rng.random_bool(0.5),
        };
        let id = self.next_id;
        self.next_id += 1;
        self.generated += 1;
        h.trades.push(t);
        if h.trades.len() > HISTORY_LIMIT {
            // Keep memory bounded on endless runs: forget the oldest half.
            let drop = HISTORY_LIMIT / 2;
            h.trades.drain(..drop);
            h.first_id += drop as u64;
        }
        bump(&stats.trades_generated);
        (id, t)
    }

    fn step(&mut self, rng: &mut StdRng, config: &SimConfig, h: &mut History, stats: &SimStats, out: &mut Vec<Item>) {
        let f = &config.faults;
        self.count += 1;
        let room = if config.trades_per_symbol == 0 { u64::MAX } else { config.trades_per_symbol - self.generated };
        if f.gap_every > 0 && self.count.is_multiple_of(f.gap_every) && f.gap_size > 0 && room > f.gap_size {
            for _ in 0..f.gap_size {
                self.new_trade(rng, h, stats);
                bump(&stats.gap_trades);
            }
            bump(&stats.gaps);
        }
        let (id, t) = self.new_trade(rng, h, stats);
        let text = self.trade_frame(id, &t);
        if f.duplicate_every > 0 && self.count.is_multiple_of(f.duplicate_every) {
            bump(&stats.duplicates);
            out.push(Item::Trade { stream: self.stream, text: text.clone().into() });
            out.push(Item::Trade { stream: self.stream, text: text.into() });
        } else if f.reorder_every > 0 && self.count.is_multiple_of(f.reorder_every) && self.held.is_none() {
            bump(&stats.reorders);
            self.held = Some(Item::Trade { stream: self.stream, text: text.into() });
            return;
        } else {
            out.push(Item::Trade { stream: self.stream, text: text.into() });
        }
        if let Some(held) = self.held.take() {
            out.push(held);
        }
        if config.book_ticker_every > 0 && self.count.is_multiple_of(config.book_ticker_every) {
            self.book_id += rng.random_range(1..5);
            let spread = (self.price / 10_000).max(1);
            let text = self.book_frame(self.book_id, self.price - spread, self.price + spread, rng);
            out.push(Item::BookTicker { stream: self.stream + 1, text: text.into() });
        }
        if config.depth_every > 0
            && self.count.is_multiple_of(config.depth_every)
            && let Some(book) = h.book.as_mut()
        {
            let last = config.trades_per_symbol > 0 && self.generated + config.depth_every >= config.trades_per_symbol;
            let (event, skipped) = book.step(self.price, &f.depth, last, rng);
            bump(&stats.depth_events_generated);
            if skipped {
                bump(&stats.depth_skipped);
            }
            if let Some(event) = event {
                if event.copies > 1 {
                    bump(&stats.depth_duplicates);
                }
                for _ in 0..event.copies {
                    out.push(Item::Depth { stream: self.stream + 2, text: event.text.as_str().into() });
                }
            }
        }
    }

    fn trade_frame(&self, id: u64, t: &HistTrade) -> String {
        let mut s = String::with_capacity(200);
        let _ = write!(
            s,
            r#"{{"stream":"{}@trade","data":{{"e":"trade","E":{},"s":"{}","t":{id},"p":"{}","q":"{}","T":{},"m":{},"M":true}}}}"#,
            self.lower,
            t.time_ms,
            self.symbol,
            decimal_text(t.price),
            decimal_text(t.qty),
            t.time_ms,
            t.maker
        );
        s
    }

    fn book_frame(&self, u: u64, bid: i64, ask: i64, rng: &mut StdRng) -> String {
        format!(
            r#"{{"stream":"{}@bookTicker","data":{{"u":{u},"s":"{}","b":"{}","B":"{}","a":"{}","A":"{}"}}}}"#,
            self.lower,
            self.symbol,
            decimal_text(bid.max(1)),
            decimal_text(rng.random_range(1..1_000_000_000_000)),
            decimal_text(ask),
            decimal_text(rng.random_range(1..1_000_000_000_000)),
        )
    }

    fn malformed(&self) -> String {
        format!(r#"{{"stream":"{}@trade","data":{{"e":"trade","s":"#, self.lower)
    }
}
