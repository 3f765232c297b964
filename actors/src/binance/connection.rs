//! The connection actor: owns one Binance combined-stream connection (up to
//! 1024 streams), reconnects it with exponential backoff and jitter, and
//! rotates it make-before-break (on a timer and on `serverShutdown`): the new
//! socket must be delivering before the old one is closed, and the
//! deduplicator absorbs the overlap.

use std::time::Duration;

use actix::prelude::*;
use k2_core::source::binance::BinanceParser;
use rand::Rng;
use tokio::task::JoinHandle;

use super::socket::SocketTask;
use crate::config::BinanceConfig;
use crate::health::Link;
use crate::messages::Fault;
use crate::sequencer::SequenceActor;
use crate::supervision::{Supervise, Supervision, on_restarting};

/// What happened to a socket, as its task reports it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum SocketEvent {
    Connected {
        generation: u64,
    },
    /// The first data arrived: a rotation can let the old socket go.
    Live {
        generation: u64,
    },
    ServerShutdown {
        generation: u64,
    },
    Ended {
        generation: u64,
        end: SocketEnd,
    },
}

/// Why a socket ended.
#[derive(Debug, Clone)]
pub enum SocketEnd {
    ConnectFailed(String),
    Closed(String),
    Error(String),
    Silent,
}

impl SocketEnd {
    fn reason(&self) -> &'static str {
        match self {
            Self::ConnectFailed(_) => "connect_failed",
            Self::Closed(_) => "closed",
            Self::Error(_) => "error",
            Self::Silent => "silence",
        }
    }
}

/// Rotate now (timer, or an operator).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Rotate;

/// Close every socket and stop reading (graceful shutdown).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopSource;

struct Socket {
    generation: u64,
    task: JoinHandle<()>,
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
    rotate_timer: Option<SpawnHandle>,
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
            rotate_timer: None,
        }
    }

    fn endpoint(&self) -> &str {
        // After two failures in a row, try the alternate endpoint, and so on.
        if (self.failures / 2) % 2 == 1 { &self.config.alternate_endpoint } else { &self.config.endpoint }
    }

    fn open(&mut self, ctx: &mut Context<Self>) {
        self.generation += 1;
        let task = SocketTask {
            generation: self.generation,
            url: super::stream_url(self.endpoint(), &self.streams),
            parser: BinanceParser::default().sample_data(self.config.sample_data),
            next: self.next.clone(),
            owner: ctx.address(),
            batch_size: self.batch_size,
            silence_timeout: self.config.silence_timeout,
            connection: self.name,
            probe: self.supervision.probe().clone(),
        };
        tracing::info!(connection = self.name, generation = self.generation, url = %task.url, "connecting");
        self.current = Some(Socket { generation: self.generation, task: tokio::spawn(task.run()) });
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
            self.open(ctx);
            self.arm_rotation(ctx);
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.close_all();
    }
}

impl Supervised for ConnectionActor {
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        on_restarting(self, ctx);
    }
}

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
                metrics::gauge!("k2_binance_reconnect_delay_seconds", "connection" => self.name).set(0.0);
                for old in self.retiring.drain(..) {
                    tracing::info!(connection = self.name, old = old.generation, new = generation, "rotation complete");
                    old.task.abort();
                    metrics::counter!("k2_binance_rotations_total", "connection" => self.name).increment(1);
                }
            }
            SocketEvent::ServerShutdown { generation } if Some(generation) == current => ctx.notify(Rotate),
            SocketEvent::Ended { generation, end } if Some(generation) == current => {
                self.current = None;
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
                if let Some(old) = self.retiring.pop() {
                    // The socket being replaced is still up: promote it while
                    // the new one is retried, so the stream goes on.
                    self.current = Some(old);
                }
                ctx.run_later(delay, |act, ctx| {
                    if !act.stopped && act.current.is_none() {
                        act.open(ctx);
                    } else if !act.stopped {
                        // A retiring socket was promoted: rotate again.
                        ctx.notify(Rotate);
                    }
                });
            }
            // Events of a socket already being retired, or already replaced.
            SocketEvent::Ended { generation, end } => {
                self.retiring.retain(|s| s.generation != generation);
                tracing::debug!(connection = self.name, generation, ?end, "retired socket ended");
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
        tracing::info!(connection = self.name, "rotating: opening the new connection first");
        self.open(ctx);
        self.arm_rotation(ctx);
    }
}

impl Handler<StopSource> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, _: StopSource, ctx: &mut Context<Self>) {
        self.stopped = true;
        self.close_all();
        self.supervision.probe().set_state(crate::health::ActorState::Stopped);
        if let Some(h) = self.rotate_timer.take() {
            ctx.cancel_future(h);
        }
    }
}

impl Handler<Fault> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, fault: Fault, ctx: &mut Context<Self>) {
        crate::supervision::inject(self, ctx, fault);
    }
}
