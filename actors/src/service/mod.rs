//! The lifecycle of a running K2, in one place. [`Service::builder`] starts
//! it in phases:
//!
//! 1. **restore**: open the tables, continue the tails after them, refill
//!    the dedup window from the ids they hold, merge the sequence marks of
//!    the tables and of Redis, replay a spill an earlier process left;
//! 2. **sinks**: the tails (embedded mode, with the spill) or Kafka;
//! 3. **actors**: the pipeline's stages, the flusher, the query handler,
//!    the Kafka consumer, the spill replayer and the degradation
//!    controller, all supervised;
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

pub mod http;
pub mod pipeline;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::ServerHandle;
use thiserror::Error;
use tokio::sync::{Notify, oneshot};

use crate::kafka::consumer::{self, ConsumerActor};
use crate::kafka::schemas::SchemaSource;
use crate::lake::flusher::{self, Blocked, FlushAll, FlusherActor, LakeBreakers};
use crate::lake::{Access, Lake, Tails};
use crate::query::engine::QueryEngine;
use crate::query::routes::Api;
use crate::query::{self, QueryActor};
use crate::registry::Registry;
use crate::runtime::config::DegradationConfig;
use crate::runtime::config::{Config, Mode};
use crate::runtime::degradation::{self, DegradationActor, Lag, LevelHandle};
use crate::runtime::errors::{Retry, Retryable, io_retry, text_retry};
use crate::runtime::health::HealthRegistry;
use crate::sinks::Sink;
use crate::sinks::kafka::KafkaSink;
use crate::sinks::spill::{self, Spill};
use crate::sinks::spill_replay::{self, SpillReplayActor};
use crate::sinks::tails::TailSink;
use crate::sources::binance::connection::{ConnectionActor, StopSource};
use crate::state::marks::SequenceMarks;
use crate::state::shared::SharedState;
use crate::transforms::dedup::{DedupStore, MemoryStore};
use k2_core::MarketEvent;

pub use http::HttpHandle;
pub use pipeline::Pipeline;

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
}

impl Retryable for StartError {
    fn retry(&self) -> Retry {
        match self {
            StartError::Config(_) | StartError::Registry { .. } => Retry::Permanent,
            StartError::Lake(e) => e.retry(),
            StartError::Restore { reason, .. } => text_retry(reason),
            StartError::Kafka(_) | StartError::State(_) => Retry::Transient,
            StartError::Spill { source, .. } | StartError::Http { source, .. } => io_retry(source.kind()),
        }
    }
}

/// The least the degradation ladder's age unit (`flush.max_age`) counts as.
const MIN_AGE_UNIT: Duration = Duration::from_secs(10);

/// A running K2.
pub struct Service {
    pub pipeline: Pipeline,
    pub lake: Lake,
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
    undelivered: Option<Box<dyn Fn() -> u64 + Send>>,
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

/// Starts a [`Service`]; see the module's phases.
pub struct ServiceBuilder<'a> {
    config: &'a Config,
    store: Option<Box<dyn DedupStore>>,
    registry: HealthRegistry,
    batch: bool,
}

impl<'a> ServiceBuilder<'a> {
    /// The dedup window to start from (default: an in-memory window sized
    /// by `[dedup]`); the restore phase adds the ids the tables hold.
    pub fn dedup(mut self, store: Box<dyn DedupStore>) -> Self {
        self.store = Some(store);
        self
    }

    pub fn registry(mut self, registry: HealthRegistry) -> Self {
        self.registry = registry;
        self
    }

    /// For a batch source (`k2 load`): a file can wait, so nothing is shed,
    /// stripped or spilled whatever the degradation ladder says; the sink
    /// holds the source while two flushes' worth of rows wait instead. The
    /// ladder still reads the pressure (and `/health` shows it).
    pub fn batch(mut self) -> Self {
        self.batch = true;
        self
    }

    /// Runs the restore, sinks and actors phases. Must run inside the actix
    /// system.
    pub async fn start(self) -> Result<Service, StartError> {
        // Gauges set before the recorder exists (breakers' first state)
        // would be lost.
        crate::runtime::telemetry::prometheus();
        // A file has no live gaps to fetch: a load reads what it reads, and
        // its report accounts for exactly that.
        let batch_config;
        let config = if self.batch {
            let mut c = self.config.clone();
            c.gap_recovery.enabled = false;
            batch_config = c;
            &batch_config
        } else {
            self.config
        };
        let store =
            self.store.unwrap_or_else(|| Box::new(MemoryStore::new(config.dedup.window, config.dedup.capacity)));
        let restored = restore(config, store, &self.registry).await?;
        let sinks = sinks(config, &restored, &self.registry, self.batch)?;
        Ok(actors(config, restored, sinks, self.registry))
    }
}

/// What the restore phase hands on.
struct Restored {
    lake: Lake,
    tails: Tails,
    engine: Arc<QueryEngine>,
    store: Box<dyn DedupStore>,
    marks: SequenceMarks,
    shared: Option<Arc<SharedState>>,
    spill: Arc<Spill>,
    schema_registry: Arc<Registry>,
}

/// Phase 1: the tables and everything that continues from them.
async fn restore(
    config: &Config,
    mut store: Box<dyn DedupStore>,
    registry: &HealthRegistry,
) -> Result<Restored, StartError> {
    // In Kafka mode the tables are written only by the consumer group's
    // flushers, which may share them.
    let access = match config.mode {
        Mode::Embedded => Access::Exclusive,
        Mode::Kafka => Access::Shared,
    };
    let lake = Lake::open_with(&config.storage, access).await?;
    let tails = Tails::open(&lake).await?;
    let engine = Arc::new(QueryEngine::new(tails.clone(), config.query.timezones.clone()));
    // The dedup window outlives the process: ids already in the tables
    // within the window are remembered before the first event arrives.
    let window = i64::try_from(config.dedup.window.as_micros()).unwrap_or(i64::MAX);
    let since = k2_core::Timestamp::now().as_micros().saturating_sub(window);
    let started = std::time::Instant::now();
    let mut recent = engine
        .ingested_since(since)
        .await
        .map_err(|e| StartError::Restore { what: "the dedup window from the tables", reason: e.to_string() })?;
    let skip = recent.len().saturating_sub(config.dedup.capacity);
    let remembered = recent.len() - skip;
    store.remember(&mut recent.drain(skip..));
    tracing::info!(ids = remembered, secs = started.elapsed().as_secs_f64(), "dedup window restored from the tables");
    let (mut marks, _) = tails.committed();
    // Redis: another instance (or this one before a restart) may have seen
    // further than the tables hold.
    let shared = if config.redis.url.is_empty() {
        None
    } else {
        let breaker = registry.breaker("redis", &config.breakers);
        let shared = SharedState::new(&config.redis, config.dedup.window, breaker)?;
        shared.watch_liveness(registry.probe("redis-liveness"));
        match shared.restore_into(&mut marks).await {
            Ok(n) => tracing::info!(streams = n, "sequence high-water marks restored from redis"),
            Err(e) => tracing::warn!(error = %e, "sequence marks not restored from redis; continuing from the tables"),
        }
        Some(shared)
    };
    let path = lake.dir().join("catalog.db");
    // Opened once: its writes are serialised in this process.
    let schema_registry = Arc::new(
        Registry::open(&path)
            .await
            .map_err(|source| StartError::Registry { path: path.display().to_string(), source })?,
    );
    let spill_dir = lake.dir().join("spill");
    let spill = Arc::new(Spill::open(&spill_dir).map_err(|e| match e {
        spill::SpillError::Io { path, source } => StartError::Spill { path: path.display().to_string(), source },
        other => StartError::Restore { what: "the spill", reason: other.to_string() },
    })?);
    if config.mode == Mode::Embedded {
        // Rows spilled by an earlier process (level 3) that are not in the
        // tables yet: replayed first, through the restored dedup window,
        // which drops those the tables already hold.
        let mut keep = Vec::new();
        let replayed = spill::replay_all(&spill, &tails, |events: &mut Vec<MarketEvent>| {
            store.check(events, &mut keep);
            let mut k = keep.iter();
            events.retain(|_| k.next().copied().unwrap_or(false));
            // Platform sequences continue after the replayed rows'. Source
            // marks do not move: rows lost from memory in the crash lie
            // below the spilled ones and must show as a gap to be fetched
            // again (the spilled ones then arrive as duplicates).
            for e in events.iter() {
                if let MarketEvent::Trade(t) = e {
                    marks.raise(&t.exchange, &t.symbol, None, t.platform_sequence);
                }
            }
        })
        .await
        .map_err(|e| StartError::Restore { what: "the spill left by an earlier run", reason: e.to_string() })?;
        if replayed > 0 {
            tracing::info!(rows = replayed, "spill left by an earlier run replayed");
        }
    }
    Ok(Restored { lake, tails, engine, store, marks, shared, spill, schema_registry })
}

/// K2's own registry, or the one named by URL.
fn schema_source(config: &Config, registry: &Arc<Registry>) -> SchemaSource {
    if config.kafka.registry_url.is_empty() {
        SchemaSource::BuiltIn(registry.clone())
    } else {
        SchemaSource::Remote { url: config.kafka.registry_url.clone(), http: reqwest::Client::new() }
    }
}

/// What the sinks phase hands on.
struct Sinks {
    sink: Box<dyn Sink>,
    /// Wakes the flusher when a tail is full.
    full: Arc<Notify>,
    /// The level the controller sets...
    level: LevelHandle,
    /// ...and the one the stages act on: the same, but for a batch source,
    /// whose stages never degrade.
    stages_level: LevelHandle,
    /// Kafka mode: records accepted but not yet in Kafka, and records in it.
    in_flight: Option<Box<dyn Fn() -> u64 + Send>>,
    delivered: Option<Box<dyn Fn() -> (u64, u64) + Send + Sync>>,
    undelivered: Option<Box<dyn Fn() -> u64 + Send>>,
}

/// Phase 2: where the pipeline ends.
fn sinks(config: &Config, r: &Restored, registry: &HealthRegistry, batch: bool) -> Result<Sinks, StartError> {
    let full = Arc::new(Notify::new());
    let level = LevelHandle::default();
    let stages_level = if batch { LevelHandle::default() } else { level.clone() };
    Ok(match config.mode {
        Mode::Embedded => {
            let sink = TailSink::new(r.tails.clone(), config.flush.max_rows, full.clone());
            let sink = if batch { sink.paced() } else { sink.with_spill(r.spill.clone(), level.clone()) };
            Sinks {
                sink: Box::new(sink),
                full,
                level,
                stages_level,
                in_flight: None,
                delivered: None,
                undelivered: None,
            }
        }
        // Rows reach the tables through Kafka: the consumer. A full
        // librdkafka queue holds the sink, for batch and live sources alike.
        Mode::Kafka => {
            let breaker = registry.breaker("kafka", &config.breakers);
            let sink = KafkaSink::new(&config.kafka, schema_source(config, &r.schema_registry), breaker)?;
            Sinks {
                in_flight: Some(Box::new(sink.in_flight())),
                delivered: Some(Box::new(sink.delivered())),
                undelivered: Some(Box::new(sink.in_flight())),
                sink: Box::new(sink),
                full,
                level,
                stages_level,
            }
        }
    })
}

/// Phase 3: every actor, supervised.
fn actors(config: &Config, r: Restored, s: Sinks, registry: HealthRegistry) -> Service {
    let Restored { lake, tails, engine, store, marks, shared, spill, schema_registry } = r;
    let Sinks { sink, full, level, stages_level, in_flight, delivered, undelivered } = s;
    let mut pipeline = Pipeline::builder(config, sink)
        .dedup(store)
        .shared(shared.clone())
        .level(stages_level.clone())
        .registry(registry)
        .restored(marks)
        .shed_ledger(tails.shed.clone())
        .given_up(tails.given_up.clone())
        .start();
    // Gaps that were being recovered when the last process stopped: the
    // tables recorded them with the rows, so none is forgotten.
    let open = tails.trades.committed_covered().open;
    let requeued = pipeline.requeue_gaps(&open);
    if requeued > 0 {
        tracing::info!(trades = requeued, streams = open.0.len(), "open gaps from the tables queued for recovery");
    }

    let consumer = (config.mode == Mode::Kafka && config.kafka.consume).then(|| {
        let sup = pipeline.supervision(consumer::NAME);
        let (c, l, t, schemas) =
            (config.kafka.clone(), lake.clone(), tails.clone(), schema_source(config, &schema_registry));
        let catalog = pipeline.registry().breaker("iceberg", &config.breakers);
        let addr =
            Supervisor::start(move |_: &mut Context<ConsumerActor>| ConsumerActor::new(c, l, t, schemas, catalog, sup));
        pipeline.add_fault_target(consumer::NAME, addr.clone().recipient());
        addr
    });

    let sup = pipeline.supervision(flusher::NAME);
    let (l, t, c) = (lake.clone(), tails.clone(), config.flush.clone());
    let breakers = LakeBreakers {
        catalog: pipeline.registry().breaker("iceberg", &config.breakers),
        storage: pipeline.registry().breaker("object-store", &config.breakers),
    };
    let wake = full.clone();
    let blocked = Blocked::default();
    let b = blocked.clone();
    let flusher =
        Supervisor::start(move |_: &mut Context<FlusherActor>| FlusherActor::new(l, t, c, wake, breakers, b, sup));
    pipeline.add_fault_target(flusher::NAME, flusher.clone().recipient());

    if config.mode == Mode::Embedded {
        let sup = pipeline.supervision(spill_replay::NAME);
        let (sp, t, lv) = (spill.clone(), tails.clone(), stages_level);
        let addr =
            Supervisor::start(move |_: &mut Context<SpillReplayActor>| SpillReplayActor::new(sp, t, lv, full, sup));
        pipeline.add_fault_target(spill_replay::NAME, addr.recipient());
    }

    let sup = pipeline.supervision(query::NAME);
    let (e, timeout, max) = (engine.clone(), config.query.timeout, config.query.max_concurrent);
    let query_addr = Supervisor::start(move |_: &mut Context<QueryActor>| QueryActor::new(e, timeout, max, sup));
    pipeline.add_fault_target(query::NAME, query_addr.clone().recipient());

    // The degradation ladder watches what is not yet durable: in embedded
    // mode the tails; in Kafka mode the records the producer has not
    // delivered (a record is durable once the broker has it). The consumer's
    // tails are not an input, nor is consumer lag: those records are durable
    // in Kafka, and shedding new ones would not land them sooner.
    let lag_tails = (config.mode == Mode::Embedded).then(|| tails.clone());
    // A flush interval counts as at least 10 s: a commit itself takes
    // seconds on an object store, so with a short max_age the rows' age
    // would measure commit latency, not falling behind.
    let max_age = config.flush.max_age.as_secs_f64().max(MIN_AGE_UNIT.as_secs_f64());
    let lag = Box::new(move || Lag {
        rows: lag_tails.as_ref().map_or(0, |t| t.waiting_rows() as u64) + in_flight.as_ref().map_or(0, |p| p()),
        age: lag_tails.as_ref().and_then(|t| t.oldest_waiting()).map_or(0.0, |a| a.as_secs_f64() / max_age),
    });
    let sup = pipeline.supervision(degradation::NAME);
    let dc = DegradationConfig { lag: Some(config.lag_triggers()), ..config.degradation.clone() };
    let (health, capacity, sources) =
        (pipeline.registry().clone(), config.pipeline.mailbox_capacity, pipeline.sources().clone());
    let degradation = Supervisor::start(move |_: &mut Context<DegradationActor>| {
        DegradationActor::new(dc, level, health, lag, capacity, sources, sup)
    });
    pipeline.add_fault_target(degradation::NAME, degradation.clone().recipient());

    let api =
        Api { query: query_addr, engine, keys: Arc::new(config.http.api_keys.clone()), registry: schema_registry };
    let appended_at_start = (tails.trades.appended(), tails.quotes.appended());
    Service {
        pipeline,
        lake,
        tails,
        flusher,
        api,
        degradation,
        consumer,
        spill,
        shared,
        blocked,
        config: config.clone(),
        delivered,
        undelivered,
        appended_at_start,
        connections: Vec::new(),
        http: Mutex::new(Vec::new()),
    }
}

impl Service {
    pub fn builder(config: &Config) -> ServiceBuilder<'_> {
        ServiceBuilder { config, store: None, registry: HealthRegistry::new(), batch: false }
    }

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
        let handle = http::start(
            bind,
            self.pipeline.registry().clone(),
            self.pipeline.faults().clone(),
            self.config.http.admin,
            Some(self.api.clone()),
            Some(self.tails.pressure.clone()),
        )
        .map_err(|source| StartError::Http { bind, source })?;
        self.http.lock().unwrap_or_else(PoisonError::into_inner).push(handle.handle.clone());
        Ok(handle)
    }

    /// Waits until everything sent into the pipeline so far is committed to
    /// the tables.
    pub async fn flush(&self) -> Result<(), MailboxError> {
        self.pipeline.drain().await?;
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
        let mut blocked = None;
        if matches!(stop, Stop::Graceful | Stop::GracefulUnlessBlocked) {
            // Gap recovery may still deliver trades a moment after the
            // sources stop: flush again while rows arrive, a few rounds.
            for _ in 0..10 {
                if self.config.mode == Mode::Embedded {
                    self.unspill().await;
                }
                let flushed = if stop == Stop::GracefulUnlessBlocked {
                    tokio::select! {
                        flushed = self.flush() => flushed,
                        error = self.persistently_blocked() => {
                            tracing::error!(%error, "final flush given up: retrying cannot fix its error");
                            blocked = Some(error);
                            break;
                        }
                    }
                } else {
                    self.flush().await
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
            let (t, q) = (self.tails.trades.committed_covered(), self.tails.quotes.committed_covered());
            self.spill.release(t.generation, q.generation);
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

    /// Resolves with the error once a flush has failed permanently again
    /// at its breaker's probe (a batch load gives up then, instead of
    /// waiting for room that will not come).
    pub async fn blocked(&self) -> String {
        self.persistently_blocked().await
    }

    async fn persistently_blocked(&self) -> String {
        loop {
            if let Some(error) = self.blocked.persistent() {
                return error;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
