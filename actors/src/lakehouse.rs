//! The embedded product in one place: the Iceberg tables, the supervised
//! pipeline ending in their tails, the flusher and the query handler. `k2
//! run`, `k2 demo` and `k2 load` all start it the same way.

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::{Notify, oneshot};

use crate::config::{Config, Mode};
use crate::dedup::DedupStore;
use crate::degradation::{DegradationActor, LevelHandle};
use crate::flusher::{self, FlushAll, FlusherActor, TailSink, Tails, append_to_tails, replay_spill};
use crate::health::HealthRegistry;
use crate::kafka::KafkaSink;
use crate::kafka::schemas::SchemaSource;
use crate::lake::{Access, Lake, LakeError};
use crate::pipeline::Pipeline;
use crate::query::engine::QueryEngine;
use crate::query::routes::Api;
use crate::query::{self, QueryActor};
use crate::shared_state::SharedState;
use crate::spill::Spill;
use k2_core::MarketEvent;

/// A running embedded K2.
pub struct Lakehouse {
    pub pipeline: Pipeline,
    /// Kafka mode: the task consuming the market topics into the tails.
    pub consumer: Option<tokio::task::JoinHandle<()>>,
    pub lake: Lake,
    pub tails: Tails,
    pub flusher: Addr<FlusherActor>,
    pub api: Api,
    pub degradation: Addr<DegradationActor>,
    /// Level 3's spill (embedded mode).
    pub spill: Arc<Spill>,
    /// Redis, when `redis.url` names one.
    pub shared: Option<Arc<SharedState>>,
}

impl Lakehouse {
    /// Opens the tables and starts every actor. Sequences continue from what
    /// the tables' latest snapshots cover. Must run inside the actix system.
    pub async fn start(
        config: &Config,
        mut store: Box<dyn DedupStore>,
        registry: HealthRegistry,
    ) -> Result<Self, LakeError> {
        // Gauges set before the recorder exists (breakers' first state)
        // would be lost.
        crate::telemetry::prometheus();
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
        let mut recent = engine.ingested_since(since).await.map_err(|e| LakeError::Restore(e.to_string()))?;
        let skip = recent.len().saturating_sub(config.dedup.capacity);
        let remembered = recent.len() - skip;
        store.remember(&mut recent.drain(skip..));
        tracing::info!(
            ids = remembered,
            secs = started.elapsed().as_secs_f64(),
            "dedup window restored from the tables"
        );
        let (mut restore, _) = tails.committed();
        // Redis: another instance (or this one before a restart) may have
        // seen further than the tables hold.
        let shared = if config.redis.url.is_empty() {
            None
        } else {
            let breaker = registry.breaker("redis", &config.breakers);
            let shared = SharedState::new(&config.redis, config.dedup.window, breaker)
                .map_err(|e| LakeError::Restore(e.to_string()))?;
            match shared.restore_into(&mut restore).await {
                Ok(n) => tracing::info!(streams = n, "sequence high-water marks restored from redis"),
                Err(e) => {
                    tracing::warn!(error = %e, "sequence marks not restored from redis; continuing from the tables")
                }
            }
            Some(shared)
        };
        let schema_registry = Arc::new(
            crate::registry::Registry::open(&lake.dir().join("catalog.db"))
                .await
                .map_err(|e| LakeError::Registry(e.to_string()))?,
        );
        // K2's own registry, or the one named by URL.
        let schema_source = || {
            if config.kafka.registry_url.is_empty() {
                SchemaSource::BuiltIn(schema_registry.clone())
            } else {
                SchemaSource::Remote { url: config.kafka.registry_url.clone(), http: reqwest::Client::new() }
            }
        };
        let full = Arc::new(Notify::new());
        let level = LevelHandle::default();
        // Rows spilled by an earlier process (level 3) that are not in the
        // tables yet: replayed first, through the restored dedup window,
        // which drops those the tables already hold.
        let spill = Arc::new(Spill::open(&lake.dir().join("spill")).map_err(|e| LakeError::Restore(e.to_string()))?);
        if config.mode == Mode::Embedded {
            let mut keep = Vec::new();
            loop {
                let s = spill.clone();
                let taken = tokio::task::spawn_blocking(move || s.take_oldest())
                    .await
                    .map_err(|e| LakeError::Restore(e.to_string()))?
                    .map_err(|e| LakeError::Restore(e.to_string()))?;
                let Some((seq, mut events)) = taken else { break };
                let n = events.len();
                store.check(&events, &mut keep);
                let mut k = keep.iter();
                events.retain(|_| k.next().copied().unwrap_or(false));
                tracing::info!(segment = seq, rows = n, new = events.len(), "spill left by an earlier run replayed");
                // Platform sequences continue after the replayed rows'. Source
                // marks do not move: rows lost from memory in the crash lie
                // below the spilled ones and must show as a gap to be
                // fetched again (the spilled ones then arrive as duplicates).
                for e in &events {
                    if let MarketEvent::Trade(t) = e {
                        restore.raise(&t.exchange, &t.symbol, None, t.platform_sequence);
                    }
                }
                let (t, q) = append_to_tails(&tails, events);
                spill.replayed(seq, t, q);
            }
        }
        // Kafka mode's records accepted but not yet in Kafka.
        let mut producing: Option<Box<dyn Fn() -> u64 + Send>> = None;
        let sink: Box<dyn crate::sink::Sink> = match config.mode {
            Mode::Embedded => {
                replay_spill(spill.clone(), tails.clone(), level.clone(), full.clone());
                Box::new(
                    TailSink::new(tails.clone(), config.flush.max_rows, full.clone())
                        .with_spill(spill.clone(), level.clone()),
                )
            }
            // Rows reach the tables through Kafka: the consumer below.
            Mode::Kafka => {
                let schemas = schema_source();
                let breaker = registry.breaker("kafka", &config.breakers);
                let sink =
                    KafkaSink::new(&config.kafka, schemas, breaker).map_err(|e| LakeError::Kafka(e.to_string()))?;
                producing = Some(Box::new(sink.in_flight()));
                Box::new(sink)
            }
        };
        let mut pipeline = Pipeline::start_shared(config, sink, store, shared.clone(), level, registry, &restore);
        let consumer = if config.mode == Mode::Kafka && config.kafka.consume {
            let schemas = schema_source();
            Some(
                crate::kafka::consumer::start(&config.kafka, lake.clone(), tails.clone(), schemas)
                    .map_err(|e| LakeError::Kafka(e.to_string()))?,
            )
        } else {
            None
        };

        let sup = pipeline.supervision(flusher::NAME);
        let (l, t, c) = (lake.clone(), tails.clone(), config.flush.clone());
        let breaker = flusher::LakeBreakers {
            catalog: pipeline.registry().breaker("iceberg", &config.breakers),
            storage: pipeline.registry().breaker("object-store", &config.breakers),
        };
        let flusher =
            Supervisor::start(move |_: &mut Context<FlusherActor>| FlusherActor::new(l, t, c, full, breaker, sup));
        pipeline.add_fault_target(flusher::NAME, flusher.clone().recipient());

        let sup = pipeline.supervision(query::NAME);
        let (e, timeout, max) = (engine.clone(), config.query.timeout, config.query.max_concurrent);
        let query_addr = Supervisor::start(move |_: &mut Context<QueryActor>| QueryActor::new(e, timeout, max, sup));
        pipeline.add_fault_target(query::NAME, query_addr.clone().recipient());
        // The degradation ladder watches what is not yet durable (the tails;
        // in Kafka mode also the records the producer has not delivered) and
        // the registry. Consumer lag is not an input: those records are
        // durable in Kafka, and shedding new ones would not land them sooner.
        let lag_tails = tails.clone();
        let (dc, level, sources, capacity, health) = (
            config.degradation.clone(),
            pipeline.level().clone(),
            pipeline.sources().clone(),
            config.pipeline.mailbox_capacity,
            pipeline.registry().clone(),
        );
        let degradation = DegradationActor::new(
            dc,
            level,
            health,
            Box::new(move || lag_tails.waiting_rows() as u64 + producing.as_ref().map_or(0, |p| p())),
            capacity,
            sources,
        )
        .start();
        let registry = crate::registry::Registry::open(&lake.dir().join("catalog.db"))
            .await
            .map_err(|e| LakeError::Registry(e.to_string()))?;
        let api = Api {
            query: query_addr,
            engine,
            keys: Arc::new(config.http.api_keys.clone()),
            registry: Arc::new(registry),
        };
        Ok(Self { pipeline, consumer, lake, tails, flusher, api, degradation, spill, shared })
    }

    /// Waits until everything sent into the pipeline so far is committed to
    /// the tables.
    pub async fn flush(&self) -> Result<(), MailboxError> {
        self.pipeline.drain().await?;
        let (done, rx) = oneshot::channel();
        self.flusher.send(FlushAll { done }).await?;
        rx.await.map_err(|_| MailboxError::Closed)
    }

    /// Moves every spilled row into the tails now, whatever the level (at
    /// shutdown: a following flush makes them durable); returns how many.
    pub async fn unspill(&self) -> usize {
        let mut n = 0;
        loop {
            let s = self.spill.clone();
            match tokio::task::spawn_blocking(move || s.take_oldest()).await {
                Ok(Ok(Some((seq, events)))) => {
                    n += events.len();
                    let (t, q) = append_to_tails(&self.tails, events);
                    self.spill.replayed(seq, t, q);
                }
                Ok(Ok(None)) => return n,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "spilled rows could not be read; they stay on disk for the next start");
                    return n;
                }
                Err(e) => {
                    tracing::error!(error = %e, "spill task failed");
                    return n;
                }
            }
        }
    }

    /// Deletes spill segments whose rows are committed.
    pub fn release_spill(&self) {
        self.spill.release(
            self.tails.trades.committed_covered().generation,
            self.tails.quotes.committed_covered().generation,
        );
    }

    /// Starts the HTTP server with the query API.
    pub fn serve(&self, config: &Config) -> std::io::Result<crate::http::HttpHandle> {
        crate::http::start(
            config.http.bind,
            self.pipeline.registry().clone(),
            self.pipeline.faults().clone(),
            config.http.admin,
            Some(self.api.clone()),
            Some(self.tails.pressure.clone()),
        )
    }
}
