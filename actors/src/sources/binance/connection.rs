//! The connection actor: owns one Binance combined-stream connection (up to
//! 1024 streams), reconnects it with exponential backoff and jitter, and
//! rotates it make-before-break (on a timer and on `serverShutdown`): the new
//! socket must be delivering before the old one is closed, and the
//! deduplicator absorbs the overlap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use k2_core::source::binance::BinanceParser;
use rand::Rng;
use tokio::task::JoinHandle;

use super::book::DepthBatch;
use super::socket::{Coverage, SocketEnd, SocketEvent, SocketTask};
use crate::runtime::config::BinanceConfig;
use crate::runtime::degradation::PauseSource;
use crate::runtime::health::Link;
use crate::runtime::supervision::{Supervise, Supervision, supervised};
use crate::state::dead_letters::{DeadLetters, Kind};
use crate::transforms::sequencer::SequenceActor;

/// Rotate now (timer, or an operator).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Rotate;

/// Close every socket and stop reading (graceful shutdown).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopSource;

/// A retiring socket is let go once its replacement has delivered from where
/// it got to, or after this long whatever the streams say (a symbol with no
/// trades never shows coverage).
const MAX_OVERLAP: Duration = Duration::from_secs(10);
/// A socket told to retire that has not ended by then is aborted.
const RETIRE_GRACE: Duration = Duration::from_secs(2);

struct Socket {
    generation: u64,
    task: JoinHandle<()>,
    coverage: Arc<Coverage>,
    retire: Option<tokio::sync::oneshot::Sender<()>>,
    hold: tokio::sync::watch::Sender<bool>,
    /// When this socket started being replaced, and when it was told to go.
    retiring_since: Option<Instant>,
    retired_at: Option<Instant>,
}

pub struct ConnectionActor {
    name: &'static str,
    streams: Vec<String>,
    config: BinanceConfig,
    batch_size: usize,
    next: Link<SequenceActor>,
    supervision: Supervision,
    generation: u64,
    current: Option<Socket>,
    /// Sockets being replaced, closed once the current one is live.
    retiring: Vec<Socket>,
    /// Consecutive failed attempts, for the backoff.
    failures: u32,
    stopped: bool,
    /// Paused by the degradation controller (level 4): closed, not
    /// reconnecting, until resumed.
    paused: bool,
    rotate_timer: Option<SpawnHandle>,
    /// The current socket has delivered data.
    live: bool,
    /// Where refused frames are kept.
    dead_letters: Option<DeadLetters>,
    /// The order-book actor of this connection's symbols, when books are on.
    book: Option<Recipient<DepthBatch>>,
}

impl ConnectionActor {
    pub fn new(
        name: &'static str,
        streams: Vec<String>,
        config: BinanceConfig,
        batch_size: usize,
        next: Link<SequenceActor>,
        supervision: Supervision,
    ) -> Self {
        // This connection's series exist at 0 from the start (see
        // telemetry.rs); the timestamp gauge waits for a real message.
        metrics::gauge!("k2_binance_connection_status", "connection" => name).set(0.0);
        metrics::gauge!("k2_binance_reconnect_delay_seconds", "connection" => name).set(0.0);
        metrics::counter!("k2_binance_connection_errors_total", "connection" => name).increment(0);
        metrics::counter!("k2_binance_rotations_total", "connection" => name).increment(0);
        metrics::counter!("k2_binance_message_errors_total", "connection" => name).increment(0);
        Self {
            name,
            streams,
            config,
            batch_size,
            next,
            supervision,
            generation: 0,
            current: None,
            retiring: Vec::new(),
            failures: 0,
            stopped: false,
            paused: false,
            rotate_timer: None,
            live: false,
            dead_letters: None,
            book: None,
        }
    }

    pub fn with_book(mut self, book: Option<Recipient<DepthBatch>>) -> Self {
        self.book = book;
        self
    }

    pub fn with_dead_letters(mut self, dead_letters: Option<DeadLetters>) -> Self {
        if let Some(store) = &dead_letters {
            store.announce(self.name, Kind::Frame);
        }
        self.dead_letters = dead_letters;
        self
    }

    fn endpoint(&self) -> &str {
        // After two failures in a row, try the alternate endpoint, and so on.
        if (self.failures / 2) % 2 == 1 { &self.config.alternate_endpoint } else { &self.config.endpoint }
    }

    /// Opens a socket; `hold` when it replaces one that is still up.
    fn open(&mut self, ctx: &mut Context<Self>, hold: bool) {
        self.generation += 1;
        let coverage = Arc::new(Coverage::default());
        let (retire, retire_rx) = tokio::sync::oneshot::channel();
        let (hold, hold_rx) = tokio::sync::watch::channel(hold);
        let task = SocketTask {
            coverage: coverage.clone(),
            retire: retire_rx,
            hold: hold_rx,
            held: Vec::new(),
            dead_letters: self.dead_letters.clone(),
            refused: Vec::new(),
            book: self.book.clone(),
            depth: Vec::new(),
            generation: self.generation,
            url: super::stream_url(self.endpoint(), &self.streams),
            parser: BinanceParser::default().sample_data(self.config.sample_data),
            next: self.next.clone(),
            owner: ctx.address().recipient(),
            batch_size: self.batch_size,
            silence_timeout: self.config.silence_timeout,
            connection: self.name,
            probe: self.supervision.probe().clone(),
        };
        tracing::info!(connection = self.name, generation = self.generation, url = %task.url, "connecting");
        self.current = Some(Socket {
            generation: self.generation,
            task: tokio::spawn(task.run()),
            coverage,
            retire: Some(retire),
            hold,
            retiring_since: None,
            retired_at: None,
        });
    }

    /// Make-before-break, second half: tell each retiring socket to go once
    /// the current one covers it (or it has overlapped long enough), and abort
    /// one that does not go.
    fn check_retirement(&mut self) {
        let Some(current) = &self.current else { return };
        let now = Instant::now();
        for old in &mut self.retiring {
            let since = *old.retiring_since.get_or_insert(now);
            if let Some(told) = old.retired_at {
                if now.duration_since(told) > RETIRE_GRACE {
                    tracing::warn!(
                        connection = self.name,
                        old = old.generation,
                        "retired socket did not end; aborting it"
                    );
                    old.task.abort();
                }
                continue;
            }
            let covered = old.coverage.covered_by(&current.coverage);
            if covered || now.duration_since(since) > MAX_OVERLAP {
                if !covered {
                    tracing::warn!(
                        connection = self.name,
                        old = old.generation,
                        "rotation overlap timed out; closing the old socket"
                    );
                }
                if let Some(tx) = old.retire.take() {
                    let _ = tx.send(());
                }
                old.retired_at = Some(now);
            }
        }
        let before = self.retiring.len();
        self.retiring.retain(|s| !s.task.is_finished());
        if before > 0 && self.retiring.is_empty() {
            self.release_current();
        }
    }

    /// The rotation is over: the current socket sends what it held.
    fn release_current(&mut self) {
        if let Some(current) = &self.current {
            let _ = current.hold.send(false);
        }
    }

    fn arm_rotation(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.rotate_timer.take() {
            ctx.cancel_future(h);
        }
        self.rotate_timer = Some(ctx.run_later(self.config.rotate_after, |_, ctx| ctx.notify(Rotate)));
    }

    fn backoff(&self) -> Duration {
        let base =
            self.config.reconnect_initial.saturating_mul(1 << self.failures.min(16)).min(self.config.reconnect_max);
        base.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    fn close_all(&mut self) {
        for s in self.current.take().into_iter().chain(self.retiring.drain(..)) {
            s.task.abort();
        }
        metrics::gauge!("k2_binance_connection_status", "connection" => self.name).set(0.0);
    }
}

impl Actor for ConnectionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.supervision.started();
        if !self.stopped {
            self.open(ctx, false);
            self.arm_rotation(ctx);
        }
        ctx.run_interval(Duration::from_millis(50), |act, _| {
            if act.live {
                act.check_retirement();
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.close_all();
    }
}

supervised!(ConnectionActor);

impl Supervise for ConnectionActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    fn reset(&mut self) {
        self.close_all();
        self.rotate_timer = None;
    }
}

impl Handler<SocketEvent> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, event: SocketEvent, ctx: &mut Context<Self>) {
        let current = self.current.as_ref().map(|s| s.generation);
        match event {
            SocketEvent::Connected { generation } if Some(generation) == current => {
                metrics::gauge!("k2_binance_connection_status", "connection" => self.name).set(1.0);
            }
            SocketEvent::Live { generation } if Some(generation) == current => {
                self.failures = 0;
                self.live = true;
                metrics::gauge!("k2_binance_reconnect_delay_seconds", "connection" => self.name).set(0.0);
                self.check_retirement();
            }
            SocketEvent::ServerShutdown { generation } if Some(generation) == current => ctx.notify(Rotate),
            SocketEvent::Ended { generation, end } if Some(generation) == current => {
                self.current = None;
                self.live = false;
                metrics::gauge!("k2_binance_connection_status", "connection" => self.name).set(0.0);
                if self.stopped {
                    return;
                }
                let reason = end.reason();
                if matches!(end, SocketEnd::ConnectFailed(_)) {
                    metrics::counter!("k2_binance_connection_errors_total", "connection" => self.name).increment(1);
                }
                metrics::counter!("k2_binance_reconnects_total", "reason" => reason).increment(1);
                let delay = self.backoff();
                self.failures += 1;
                metrics::gauge!("k2_binance_reconnect_delay_seconds", "connection" => self.name)
                    .set(delay.as_secs_f64());
                tracing::warn!(connection = self.name, ?end, ?delay, "connection ended; reconnecting");
                if let Some(mut old) = self.retiring.pop() {
                    // The socket being replaced is still up: promote it while
                    // the new one is retried, so the stream goes on.
                    if old.retired_at.is_none() {
                        old.retiring_since = None;
                        self.live = true;
                        self.current = Some(old);
                    } else {
                        self.retiring.push(old);
                    }
                }
                ctx.run_later(delay, |act, ctx| {
                    if !act.stopped && act.current.is_none() {
                        let hold = !act.retiring.is_empty();
                        act.open(ctx, hold);
                    } else if !act.stopped {
                        // A retiring socket was promoted: rotate again.
                        ctx.notify(Rotate);
                    }
                });
            }
            // Events of a socket already being retired, or already replaced.
            SocketEvent::Ended { generation, end } => {
                let was_retiring = self.retiring.iter().any(|s| s.generation == generation);
                self.retiring.retain(|s| s.generation != generation);
                if was_retiring && self.retiring.is_empty() {
                    self.release_current();
                }
                if matches!(end, SocketEnd::Retired) {
                    tracing::info!(connection = self.name, old = generation, "rotation complete");
                    metrics::counter!("k2_binance_rotations_total", "connection" => self.name).increment(1);
                } else {
                    tracing::debug!(connection = self.name, generation, ?end, "replaced socket ended");
                }
            }
            _ => {}
        }
    }
}

impl Handler<Rotate> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, _: Rotate, ctx: &mut Context<Self>) {
        if self.stopped {
            return;
        }
        if let Some(old) = self.current.take() {
            self.retiring.push(old);
        }
        self.live = false;
        tracing::info!(connection = self.name, "rotating: opening the new connection first");
        let hold = !self.retiring.is_empty();
        self.open(ctx, hold);
        self.arm_rotation(ctx);
    }
}

impl Handler<StopSource> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, _: StopSource, ctx: &mut Context<Self>) {
        self.stopped = true;
        self.paused = false;
        self.close_all();
        self.supervision.probe().set_state(crate::runtime::health::ActorState::Stopped);
        if let Some(h) = self.rotate_timer.take() {
            ctx.cancel_future(h);
        }
    }
}

impl Handler<PauseSource> for ConnectionActor {
    type Result = ();

    /// Pausing closes the sockets and stops reconnecting; resuming connects
    /// again. The trades sent meanwhile show as a sequence gap when the
    /// stream resumes, and gap recovery fetches them.
    fn handle(&mut self, PauseSource(pause): PauseSource, ctx: &mut Context<Self>) {
        if pause == self.paused || (self.stopped && !self.paused) {
            return;
        }
        self.paused = pause;
        if pause {
            tracing::warn!(connection = self.name, "source paused by the degradation controller");
            self.stopped = true;
            self.close_all();
            if let Some(h) = self.rotate_timer.take() {
                ctx.cancel_future(h);
            }
        } else {
            tracing::info!(connection = self.name, "source resumed");
            self.stopped = false;
            self.failures = 0;
            self.open(ctx, false);
            self.arm_rotation(ctx);
        }
    }
}
