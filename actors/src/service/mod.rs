//! The lifecycle of a running K2, in one place. [`Service::builder`] starts
//! it in phases:
//!
//! 1. **restore**: open the tables, continue the tails after them, refill
//!    the dedup window from the ids they hold, merge the sequence marks of
//!    the tables and of Redis, replay a spill an earlier process left;
//! 2. **sinks**: the tails (embedded mode, with the spill) or Kafka;
//! 3. **actors**: the pipeline's stages, the flusher, the query handler,
//!    the Kafka consumer, the spill replayer, the table maintenance and the
//!    degradation controller, all supervised;
//! 4. **HTTP** ([`Service::serve`]) and **sources**
//!    ([`Service::start_sources`]), when the command wants them.
//!
//! [`Service::shutdown`] is the one way down, for `k2 run`, `k2 demo` and
//! `k2 load` alike: stop the sources, drain the pipeline, commit every
//! accepted row (spilled ones too), settle Redis, close HTTP.
//!
//! - [`pipeline`]: the supervised stage chain.
//! - [`http`]: the HTTP server (`/health`, `/metrics`, `/openapi.json`,
//!   `/admin/*`, and the query and registry routes).

mod dead_letters;
pub mod http;
pub mod limits;
pub mod openapi;
pub mod pipeline;
mod start;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::ServerHandle;
use thiserror::Error;
use tokio::sync::{Notify, oneshot};

use crate::kafka::consumer::{self, ConsumerActor};
use crate::kafka::schemas::SchemaSource;
use crate::lake::flusher::{self, Blocked, FlushAll, FlusherActor, LakeBreakers};
use crate::lake::maintenance::Maintainer;
use crate::lake::maintenance::actor::{self as maintenance, MaintenanceActor};
use crate::lake::{Access, Lake, Tails};
use crate::query::engine::QueryEngine;
use crate::query::routes::Api;
use crate::query::{self, QueryActor};
use crate::registry::Registry;
use crate::runtime::config::DegradationConfig;
use crate::runtime::config::{Config, Mode, Role};
use crate::runtime::degradation::{self, DegradationActor, Lag, LevelHandle};
use crate::runtime::errors::{Retry, Retryable, io_retry, text_retry};
use crate::runtime::health::HealthRegistry;
use crate::sinks::Sink;
use crate::sinks::kafka::KafkaSink;
use crate::sinks::spill::{self, Spill};
use crate::sinks::spill_replay::{self, SpillReplayActor};
use crate::sinks::tails::TailSink;
use crate::sources::binance::connection::{ConnectionActor, StopSource};
use crate::state::dead_letters::DeadLetters;
use crate::state::marks::SequenceMarks;
use crate::state::shared::SharedState;
use crate::transforms::dedup::{DedupStore, MemoryStore};
use k2_core::MarketEvent;

pub use dead_letters::{ReplayError, ReplayReport};
pub use http::HttpHandle;
pub use pipeline::Pipeline;
pub use start::ServiceBuilder;

/// Why K2 could not start. Each phase of the service builder has its own
/// variant, so the message says what was being done.
#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::runtime::config::ConfigError),
    #[error("opening the tables: {0}")]
    Lake(#[from] crate::lake::LakeError),
    #[error("restoring {what}: {reason}")]
    Restore { what: &'static str, reason: String },
    #[error("the schema registry in {path}: {source}")]
    Registry { path: String, source: crate::registry::RegistryError },
    #[error("kafka: {0}")]
    Kafka(#[from] crate::kafka::KafkaError),
    #[error("redis: {0}")]
    State(#[from] crate::state::shared::StateError),
    #[error("the spill directory {path}: {source}")]
    Spill { path: String, source: std::io::Error },
    #[error("the HTTP server on {bind}: {source}")]
    Http { bind: std::net::SocketAddr, source: std::io::Error },
    #[error("the replay port on {bind}: {source}")]
    Replay { bind: std::net::SocketAddr, source: std::io::Error },
    #[error("the Flight SQL port on {bind}: {source}")]
    Flight { bind: std::net::SocketAddr, source: std::io::Error },
}

impl Retryable for StartError {
    fn retry(&self) -> Retry {
        match self {
            StartError::Config(_) | StartError::Registry { .. } => Retry::Permanent,
            StartError::Lake(e) => e.retry(),
            StartError::Restore { reason, .. } => text_retry(reason),
            StartError::Kafka(_) | StartError::State(_) => Retry::Transient,
            StartError::Spill { source, .. }
            | StartError::Http { source, .. }
            | StartError::Replay { source, .. }
            | StartError::Flight { source, .. } => io_retry(source.kind()),
        }
    }
}

/// How long a graceful stop in Kafka mode waits, at most, for its
/// consumer to take the records already in its partitions.
const CATCH_UP: Duration = Duration::from_secs(15);

/// A running K2.
pub struct Service {
    pub pipeline: Pipeline,
    pub lake: Lake,
    /// The order-book tables and their tail (`book.store`, embedded mode).
    pub book_log: Option<Arc<crate::lake::books::BookLog>>,
    /// Kafka mode: the order books' records on their way to the book topics.
    pub book_producer: Option<Arc<crate::kafka::book_producer::KafkaBookRecorder>>,
    pub tails: Tails,
    pub flusher: Addr<FlusherActor>,
    pub api: Api,
    pub degradation: Addr<DegradationActor>,
    /// Kafka mode with `kafka.consume`: the group member landing the market
    /// topics in the tails.
    pub consumer: Option<Addr<ConsumerActor>>,
    /// Level 3's spill (embedded mode).
    pub spill: Arc<Spill>,
    /// Redis, when `redis.url` names one.
    pub shared: Option<Arc<SharedState>>,
    /// Flushes held up by an error no retry can fix.
    blocked: Blocked,
    config: Config,
    /// Kafka mode: records the broker has acknowledged so far.
    delivered: Option<Box<dyn Fn() -> (u64, u64) + Send + Sync>>,
    /// Kafka mode: records the broker has not acknowledged yet.
    undelivered: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
    /// Kafka mode: lets the producer's held batches go (see `shutdown`).
    release_held: Option<Box<dyn Fn() + Send + Sync>>,
    /// Rows in the tails when the actors started (a spill an earlier
    /// process left, replayed at restore): not this run's to report.
    appended_at_start: (u64, u64),
    connections: Vec<Addr<ConnectionActor>>,
    http: Mutex<Vec<ServerHandle>>,
}

/// How [`Service::shutdown`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Everything accepted is committed before the process ends, however
    /// long a fault takes to be fixed (`k2 run`: someone is watching).
    Graceful,
    /// As `Graceful`, but a flush an error no retry can fix still holds up
    /// after its breaker's probe ends the wait, named in
    /// [`ShutdownReport::blocked`]: nobody fixes the cause while a batch
    /// command waits (`k2 load`).
    GracefulUnlessBlocked,
    /// Supervision escalated: stop without committing more (the rows that
    /// were not durable show as a gap at the next start).
    Escalated,
}

/// What a shutdown left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Rows that entered the tails since start (embedded mode, or the
    /// consumer's).
    pub trades: u64,
    pub quotes: u64,
    /// Rows accepted and not committed (0 after a graceful stop that could
    /// reach the tables).
    pub not_committed: u64,
    /// Kafka mode: trades and quotes the broker acknowledged.
    pub delivered: Option<(u64, u64)>,
    /// Duplicates the pipeline dropped (the same message id seen before).
    pub duplicates: u64,
    /// Spilled rows still on disk for the next start.
    pub spilled: u64,
    /// The permanent error that ended a [`Stop::GracefulUnlessBlocked`]
    /// before everything was committed.
    pub blocked: Option<String>,
}

impl Service {
    /// The configuration the service was started with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Starts the sources the configuration enables (Binance, when
    /// `binance.enabled`).
    pub fn start_sources(&mut self) {
        if self.config.binance.enabled {
            self.start_binance();
        }
    }

    /// Starts the Binance connections whatever `binance.enabled` says (the
    /// demo points them at its simulator).
    pub fn start_binance(&mut self) {
        let config = self.config.clone();
        self.connections.extend(self.pipeline.start_binance(&config));
    }

    /// Phase 4: the HTTP server with the query API, on `http.bind`. Stopped
    /// by [`Service::shutdown`].
    pub fn serve(&self) -> Result<HttpHandle, StartError> {
        let bind = self.config.http.bind;
        let limits = limits::Limits {
            request_timeout: self.config.http.request_timeout,
            per_client: self.config.http.max_requests_per_client,
            connections_per_client: self.config.http.max_connections_per_client,
            connections: self.config.http.max_connections,
            max_uri: self.config.http.max_uri_length,
        };
        let handle = http::start_with(
            bind,
            self.pipeline.registry().clone(),
            self.pipeline.faults().clone(),
            self.config.http.admin,
            Some(self.api.clone()),
            Some(self.tails.pressure.clone()),
            limits,
        )
        .map_err(|source| StartError::Http { bind, source })?;
        self.http.lock().unwrap_or_else(PoisonError::into_inner).push(handle.handle.clone());
        Ok(handle)
    }

    /// Starts the replay port when `replay.enabled`; its address.
    pub fn serve_replay(&self) -> Result<Option<std::net::SocketAddr>, StartError> {
        use crate::query::replay::server::{NAME, ReplayServerActor};
        if !self.config.replay.enabled {
            return Ok(None);
        }
        let bind = self.config.replay.bind;
        let error = |source| StartError::Replay { bind, source };
        let std = std::net::TcpListener::bind(bind).map_err(error)?;
        std.set_nonblocking(true).map_err(error)?;
        let addr = std.local_addr().map_err(error)?;
        let listener = Arc::new(tokio::net::TcpListener::from_std(std).map_err(error)?);
        let sup = self.pipeline.supervision(NAME);
        let (engine, gate, books) = (self.api.engine.clone(), self.api.replay.clone(), self.api.replay_books.clone());
        Supervisor::start(move |_: &mut Context<ReplayServerActor>| {
            ReplayServerActor::new(listener.clone(), engine.clone(), gate.clone(), books.clone(), sup)
        });
        Ok(Some(addr))
    }

    /// Starts the Flight SQL port when `flight.enabled`; its address.
    pub fn serve_flight(&self) -> Result<Option<std::net::SocketAddr>, StartError> {
        use crate::query::flight::server::{FlightServerActor, NAME};
        use crate::query::flight::service::K2FlightSql;
        if !self.config.flight.enabled {
            return Ok(None);
        }
        let bind = self.config.flight.bind;
        let error = |source| StartError::Flight { bind, source };
        let service = K2FlightSql::new(self.api.engine.clone(), &self.config.flight, self.config.query.max_concurrent)
            .map_err(|e| error(std::io::Error::other(e.to_string())))?
            .with_books(self.book_log.clone())
            .keyed(!self.api.keys.is_empty());
        let std = std::net::TcpListener::bind(bind).map_err(error)?;
        std.set_nonblocking(true).map_err(error)?;
        let addr = std.local_addr().map_err(error)?;
        let listener = Arc::new(tokio::net::TcpListener::from_std(std).map_err(error)?);
        let (sup, service, keys) = (self.pipeline.supervision(NAME), Arc::new(service), self.api.keys.clone());
        Supervisor::start(move |_: &mut Context<FlightServerActor>| {
            FlightServerActor::new(listener.clone(), service.clone(), keys.clone(), sup)
        });
        Ok(Some(addr))
    }

    /// Waits until everything sent into the pipeline so far is committed to
    /// the tables.
    pub async fn flush(&self) -> Result<(), MailboxError> {
        self.flush_settling(None).await
    }

    /// As [`Service::flush`]; at a stop (`settle`), events the deduplicator
    /// holds for other instances' claims go on first (see
    /// [`crate::runtime::messages::Drain::settle`]).
    async fn flush_settling(&self, settle: Option<std::time::Instant>) -> Result<(), MailboxError> {
        match settle {
            Some(until) => self.pipeline.drain_settling(until).await?,
            None => self.pipeline.drain().await?,
        }
        let (done, rx) = oneshot::channel();
        self.flusher.send(FlushAll { done }).await?;
        rx.await.map_err(|_| MailboxError::Closed)
    }

    /// Moves every spilled row into the tails now, whatever the level (a
    /// following flush makes them durable); returns how many.
    async fn unspill(&self) -> usize {
        match spill::replay_all(&self.spill, &self.tails, |_| {}).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "spilled rows could not be read; they stay on disk for the next start");
                0
            }
        }
    }

    /// The one way down: stops the sources, drains the pipeline and (when
    /// graceful) commits everything accepted, spilled rows included; settles
    /// Redis; closes HTTP.
    pub async fn shutdown(self, stop: Stop) -> ShutdownReport {
        for c in &self.connections {
            let _ = c.send(StopSource).await;
        }
        // Batches held while the Kafka breaker is open would hold the drain
        // for as long as the broker is away: they go to librdkafka, which
        // delivers them or fails them after kafka.message_timeout.
        if let Some(release) = &self.release_held {
            release();
        }
        let mut blocked = None;
        // The books end with `stop` in their topics before the landers'
        // catch-up reads up to the ends.
        if let Some(producer) = &self.book_producer {
            let left = producer.close(CATCH_UP).await;
            if left > 0 {
                tracing::error!(
                    records = left,
                    "book records not delivered at the stop; their books' stored chains end early"
                );
            }
        }
        if matches!(stop, Stop::Graceful | Stop::GracefulUnlessBlocked) {
            // The consumer's wait for the records in its partitions, over
            // every round: a broker that is away must not hold the stop.
            let catch_up_until = std::time::Instant::now() + CATCH_UP;
            // Events held for another instance's claims wait for it to make
            // them durable or for its lease to lapse (it may have died).
            let settle_until = std::time::Instant::now() + self.config.redis.lease * 2 + Duration::from_secs(1);
            // Gap recovery may still deliver trades a moment after the
            // sources stop: flush again while rows arrive, a few rounds.
            for _ in 0..10 {
                if self.config.mode == Mode::Embedded {
                    self.unspill().await;
                }
                if self.consumer.is_some() {
                    self.catch_up(catch_up_until).await;
                }
                let flushed = if stop == Stop::GracefulUnlessBlocked {
                    tokio::select! {
                        flushed = self.flush_settling(Some(settle_until)) => flushed,
                        error = self.blocked() => {
                            tracing::error!(%error, "final flush given up: retrying cannot fix its error");
                            blocked = Some(error);
                            break;
                        }
                    }
                } else {
                    self.flush_settling(Some(settle_until)).await
                };
                if let Err(e) = flushed {
                    tracing::error!(error = %e, "final flush failed");
                    break;
                }
                if self.tails.waiting_rows() == 0 && self.spill.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let (t, q) = self.tails.committed_generations();
            self.spill.release(t, q);
            if let Some(log) = &self.book_log
                && self.config.lands_books()
                && let Err(e) = crate::kafka::catch_up::book_lander_caught_up(
                    &self.config.kafka,
                    log,
                    std::time::Instant::now() + CATCH_UP,
                )
                .await
            {
                tracing::warn!(%e, "book records not landed by this stop are landed by the next flusher");
            }
            if let Some(log) = &self.book_log
                && let Err(e) = log.close().await
            {
                tracing::error!(error = %e, "the last book records were not committed; the next start marks those books unsynced from where the tables end");
            }
        }
        if let Some(shared) = &self.shared
            && !shared.settled(Duration::from_secs(10)).await
        {
            tracing::warn!("redis did not take the last settlements; a restart may pass those rows on twice");
        }
        let servers = std::mem::take(&mut *self.http.lock().unwrap_or_else(PoisonError::into_inner));
        for server in servers {
            server.stop(true).await;
        }
        ShutdownReport {
            trades: self.tails.trades.appended() - self.appended_at_start.0,
            quotes: self.tails.quotes.appended() - self.appended_at_start.1,
            // In Kafka mode a row is durable once the broker has it: what
            // the consumer's tails still hold is already safe.
            not_committed: match &self.undelivered {
                Some(undelivered) => undelivered(),
                None => self.tails.waiting_rows() as u64,
            },
            delivered: self.delivered.as_ref().map(|d| d()),
            duplicates: self.pipeline.duplicates(),
            spilled: self.spill.rows(),
            blocked,
        }
    }

    /// Kafka mode with the consumer: lets what the pipeline holds reach the
    /// broker, then the consumer take its partitions up to their ends (see
    /// [`crate::kafka::catch_up`]), until `until` at most.
    async fn catch_up(&self, until: std::time::Instant) {
        if let Err(e) = self.pipeline.drain().await {
            tracing::warn!(error = %e, "the pipeline did not drain before the final flush");
        }
        if let Some(undelivered) = &self.undelivered {
            while undelivered() > 0 && std::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if let Err(e) = crate::kafka::catch_up::consumer_caught_up(&self.config.kafka, &self.tails, until).await {
            tracing::warn!(error = %e, "final flush without every record of this flusher's partitions; their next owner lands the rest");
        }
    }

    /// Resolves with the error once a flush has failed permanently again
    /// at its breaker's probe (a batch load gives up then, instead of
    /// waiting for room that will not come).
    pub async fn blocked(&self) -> String {
        loop {
            if let Some(error) = self.blocked.persistent() {
                return error;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
