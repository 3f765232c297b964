//! The builder's phases: restore, sinks, actors.

use super::*;
use crate::kafka::book_lander::{self, BookLanderActor};
use crate::kafka::book_producer::KafkaBookRecorder;
use crate::kafka::log_view::LogView;
use crate::lake::TableKind;
use crate::lake::books::BookLog;
use crate::lake::books::flusher::{self as book_flusher, BookFlusherActor};
use crate::lake::writer::latest_covered;
use crate::sinks::kafka::KafkaReplay;
use crate::sinks::spill_replay::Target;
use crate::sources::gap_recovery::TableGaps;

/// The least the degradation ladder's age unit (`flush.max_age`) counts as.
const MIN_AGE_UNIT: Duration = Duration::from_secs(10);

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
    book_log: Option<Arc<BookLog>>,
    tails: Tails,
    engine: Arc<QueryEngine>,
    store: Box<dyn DedupStore>,
    marks: SequenceMarks,
    shared: Option<Arc<SharedState>>,
    spill: Arc<Spill>,
    schema_registry: Arc<Registry>,
    dead_letters: DeadLetters,
}

/// Phase 1: the tables and everything that continues from them.
async fn restore(
    config: &Config,
    mut store: Box<dyn DedupStore>,
    registry: &HealthRegistry,
) -> Result<Restored, StartError> {
    // In Kafka mode the tables are written only by the consumer group's
    // flushers, which may share them.
    let access = match (config.role, config.mode) {
        (Role::Query, _) => Access::Reader,
        (_, Mode::Embedded) => Access::Exclusive,
        (_, Mode::Kafka) => Access::Shared,
    };
    let lake = Lake::open_with(&config.storage, access).await?;
    let tails = Tails::open(&lake).await?;
    let path = lake.dir().join("catalog.db");
    // Opened once: its writes are serialised in this process.
    let schema_registry = Arc::new(
        Registry::open(&path)
            .await
            .map_err(|source| StartError::Registry { path: path.display().to_string(), source })?,
    );
    let mut engine = QueryEngine::new(tails.clone(), config.query.timezones.clone());
    if config.follows_catalog() {
        engine = engine.following(lake.clone());
    }
    if config.mode == Mode::Kafka {
        let schemas = schema_source(config, &schema_registry);
        let log = LogView::new(&config.kafka, schemas, config.query.log_cache_rows)
            .map_err(|e| StartError::Restore { what: "the Kafka log reader of queries", reason: e.to_string() })?;
        engine = engine.reading_log(log);
    }
    let engine = Arc::new(engine);
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
    let spill_dir = lake.dir().join("spill");
    let spill = Arc::new(Spill::open(&spill_dir).map_err(spill_error)?);
    // A query node writes no rows: a spill in the directory is its
    // writer's, which replays it.
    if config.mode == Mode::Embedded && config.role != Role::Query {
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
    let dead_letters = DeadLetters::open(&lake.dir().join("dead-letters"))
        .map_err(|e| StartError::Restore { what: "the dead letters", reason: e.to_string() })?;
    let book_log = if config.stores_books() {
        let log = BookLog::open(&lake, config.book.snapshot_every)
            .await
            .map_err(|e| StartError::Restore { what: "the order-book tables", reason: e.to_string() })?;
        Some(log)
    } else if config.lands_books() {
        let log = BookLog::open_landing(&lake, config.book.snapshot_every)
            .await
            .map_err(|e| StartError::Restore { what: "the order-book tables", reason: e.to_string() })?;
        Some(log)
    } else {
        None
    };
    Ok(Restored { lake, book_log, tails, engine, store, marks, shared, spill, schema_registry, dead_letters })
}

fn spill_error(e: spill::SpillError) -> StartError {
    match e {
        spill::SpillError::Io { path, source } => StartError::Spill { path: path.display().to_string(), source },
        other => StartError::Restore { what: "the spill", reason: other.to_string() },
    }
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
    /// Kafka mode: records accepted but not yet in Kafka (read by the
    /// ladder and the shutdown report), and records in it.
    in_flight: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
    delivered: Option<Box<dyn Fn() -> (u64, u64) + Send + Sync>>,
    /// Kafka mode: lets batches held by an open breaker go (shutdown).
    release_held: Option<Box<dyn Fn() + Send + Sync>>,
    /// Kafka mode with a spill: replays it into Kafka.
    kafka_replay: Option<KafkaReplay>,
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
                release_held: None,
                kafka_replay: None,
            }
        }
        // Rows reach the tables through Kafka: the consumer. A full
        // librdkafka queue holds the sink, for batch and live sources alike.
        Mode::Kafka => {
            let breaker = registry.breaker("kafka", &config.breakers);
            let sink = KafkaSink::new(&config.kafka, schema_source(config, &r.schema_registry), breaker)?;
            // Live sources spill what an open breaker holds too long; a
            // batch source waits. A query node produces nothing.
            let kafka_replay = if batch || config.role == Role::Query || config.kafka.spill_after.is_zero() {
                None
            } else {
                let spill = Spill::open_slot(&r.lake.dir().join("spill-kafka")).map_err(spill_error)?;
                Some(sink.spill_to(Arc::new(spill)))
            };
            Sinks {
                kafka_replay,
                in_flight: Some(Arc::new(sink.in_flight())),
                delivered: Some(Box::new(sink.delivered())),
                release_held: Some(Box::new(sink.release_held())),
                sink: Box::new(sink),
                full,
                level,
                stages_level,
            }
        }
    })
}

/// Where gap recovery reads the open gaps the tables record now. A process
/// that commits the trades table (embedded mode, or a Kafka consumer) has
/// them in its tails after each commit; a Kafka producer that does not
/// consume loads the table's latest snapshot from the catalog each time, as
/// the flushers' commits never reach its tails.
fn table_gaps(config: &Config, lake: &Lake, tails: &Tails) -> TableGaps {
    if config.mode == Mode::Kafka && !config.kafka.consume {
        let lake = lake.clone();
        Arc::new(move || {
            let lake = lake.clone();
            Box::pin(async move {
                let table = lake.table(TableKind::Trades).await.map_err(|e| e.to_string())?;
                let covered = latest_covered(&table).await.map_err(|e| e.to_string())?;
                Ok((covered.marks, covered.open))
            })
        })
    } else {
        let tails = tails.clone();
        Arc::new(move || {
            let covered = tails.trades.committed_covered();
            Box::pin(async move { Ok((covered.marks, covered.open)) })
        })
    }
}

/// Phase 3: every actor, supervised.
fn actors(config: &Config, r: Restored, s: Sinks, registry: HealthRegistry) -> Service {
    let Restored { lake, book_log, tails, engine, store, marks, shared, spill, schema_registry, dead_letters } = r;
    let Sinks { sink, full, level, stages_level, in_flight, delivered, release_held, kafka_replay } = s;
    let mut pipeline = Pipeline::builder(config, sink)
        .dedup(store)
        .shared(shared.clone())
        .level(stages_level.clone())
        .registry(registry)
        .restored(marks)
        .shed_ledger(tails.shed.clone())
        .given_up(tails.given_up.clone())
        .dead_letters(dead_letters.clone())
        .table_gaps(table_gaps(config, &lake, &tails))
        .start();
    // Where the order-book actors record: the book log (embedded mode) or
    // the book topics (Kafka mode, which the flushers' landers read).
    let book_producer = if config.produces_books() {
        match KafkaBookRecorder::start(&config.kafka, schema_source(config, &schema_registry)) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::error!(error = %e, "the book records' producer could not be made: books are live only");
                None
            }
        }
    } else {
        None
    };
    let recorder: Option<Arc<dyn crate::state::books::BookRecorder>> = match (&book_log, &book_producer) {
        (Some(log), _) if config.stores_books() => Some(log.clone()),
        (_, Some(p)) => Some(p.clone()),
        _ => None,
    };
    pipeline.set_book_log(recorder);
    if config.lands_books()
        && let Some(log) = &book_log
    {
        match book_lander::BookLogEnds::new(&config.kafka) {
            Ok(ends) => log.set_log_ends(Arc::new(ends)),
            Err(e) => {
                tracing::error!(error = %e, "book queries cannot see the book topics' ends: they answer from what the lander has read")
            }
        }
        let sup = pipeline.supervision(book_lander::NAME);
        let (c, l, schemas) = (config.kafka.clone(), log.clone(), schema_source(config, &schema_registry));
        let addr = Supervisor::start(move |_: &mut Context<BookLanderActor>| BookLanderActor::new(c, l, schemas, sup));
        pipeline.add_fault_target(book_lander::NAME, addr.recipient());
    }
    if let Some(log) = &book_log {
        let sup = pipeline.supervision(book_flusher::NAME);
        let (l, age, rows) = (log.clone(), config.flush.max_age, config.flush.max_rows);
        let addr = Supervisor::start(move |_: &mut Context<BookFlusherActor>| BookFlusherActor::new(l, age, rows, sup));
        pipeline.add_fault_target(book_flusher::NAME, addr.recipient());
    }
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

    let replay = match (&kafka_replay, config.mode) {
        (Some(kafka), _) => kafka.spill().map(|s| (s.clone(), Target::Kafka(kafka.clone()))),
        (None, Mode::Embedded) if config.role != Role::Query => {
            Some((spill.clone(), Target::Tails { tails: tails.clone(), level: stages_level, full }))
        }
        (None, _) => None,
    };
    if let Some((sp, target)) = replay {
        let sup = pipeline.supervision(spill_replay::NAME);
        let addr = Supervisor::start(move |_: &mut Context<SpillReplayActor>| SpillReplayActor::new(sp, target, sup));
        pipeline.add_fault_target(spill_replay::NAME, addr.recipient());
    }

    let sup = pipeline.supervision(maintenance::NAME);
    let maintainer =
        Maintainer::new(lake.clone(), config.maintenance.clone(), config.http.request_timeout, Some(tails.clone()));
    let ladder = level.clone();
    let maintenance =
        Supervisor::start(move |_: &mut Context<MaintenanceActor>| MaintenanceActor::new(maintainer, ladder, sup));
    pipeline.add_fault_target(maintenance::NAME, maintenance.clone().recipient());

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
    let producing = in_flight.clone();
    let lag = Box::new(move || Lag {
        rows: lag_tails.as_ref().map_or(0, |t| t.waiting_rows() as u64) + producing.as_ref().map_or(0, |p| p()),
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

    let api = Api {
        query: query_addr,
        engine,
        keys: Arc::new(config.http.api_keys.iter().map(|k| k.expose().to_owned()).collect()),
        registry: schema_registry,
        dead_letters,
        maintenance: Some(maintenance.recipient()),
        books: pipeline.books().clone(),
        book_log: book_log.clone(),
        replay: crate::query::replay::gate::ReplayGate::new(config.replay.max_clients),
        replay_books: book_log.clone().map(crate::query::replay::depth::DepthBooks::new),
    };
    let appended_at_start = (tails.trades.appended(), tails.quotes.appended());
    Service {
        pipeline,
        lake,
        book_log,
        book_producer,
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
        release_held,
        undelivered: in_flight,
        appended_at_start,
        connections: Vec::new(),
        http: Mutex::new(Vec::new()),
    }
}

impl Service {
    pub fn builder(config: &Config) -> ServiceBuilder<'_> {
        ServiceBuilder { config, store: None, registry: HealthRegistry::new(), batch: false }
    }
}
