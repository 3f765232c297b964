//! The supervised stage chain: sequence tracker → deduplicator → sink (and
//! gap recovery beside it), under one guardian, each stage's mailbox
//! bounded. [`Pipeline::builder`] is the one way to start it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::prelude::*;

use crate::runtime::config::Config;
use crate::runtime::degradation::{LevelHandle, ShedLedger, SourceList};
use crate::runtime::health::HealthRegistry;
use crate::runtime::messages::Fault;
use crate::runtime::supervision::{Escalate, Guardian, Policies, Supervision};
use crate::sinks::Sink;
use crate::sinks::actor::{self as sink_actor, SinkActor};
use crate::sources::binance::book::BookActor;
use crate::sources::binance::connection::ConnectionActor;
use crate::sources::gap_recovery::{self, GapRecoveryActor, TableGaps};
use crate::state::books::BookDirectory;
use crate::state::dead_letters::DeadLetters;
use crate::state::marks::{GivenUp, OpenGaps, SequenceMarks};
use crate::state::shared::SharedState;
use crate::transforms::Entrance;
use crate::transforms::dedup::{self, DedupActor, DedupStore, MemoryStore};
use crate::transforms::sequencer::{self, GapDetected, SequenceActor, Shedding};
use k2_core::transform::sequence::Gap;

/// A running pipeline: where sources send batches, and the handles the HTTP
/// server and tests need. Must be built inside an actix `System`.
#[derive(Clone)]
pub struct Pipeline {
    entrance: Entrance,
    registry: HealthRegistry,
    faults: BTreeMap<&'static str, Recipient<Fault>>,
    policies: Policies,
    guardian: Recipient<Escalate>,
    escalation: tokio::sync::watch::Receiver<Option<String>>,
    /// The degradation level the stages act on.
    level: LevelHandle,
    /// Sources the degradation controller may pause.
    sources: SourceList,
    /// Duplicates the deduplicator has dropped.
    duplicates: Arc<AtomicU64>,
    /// What the ladder has shed.
    shed: ShedLedger,
    /// Gap recovery, when it runs.
    gaps_to: Option<Recipient<GapDetected>>,
    /// Where failed batches and refused frames are kept.
    dead_letters: Option<DeadLetters>,
    /// The order-book actors by symbol, once the Binance source starts.
    books: BookDirectory,
    /// Where the order-book actors record what they do (`book.store`).
    book_log: Option<Arc<dyn crate::state::books::BookRecorder>>,
}

/// What a pipeline starts with; every part but the sink has a default.
pub struct PipelineBuilder<'a> {
    config: &'a Config,
    sink: Box<dyn Sink>,
    store: Option<Box<dyn DedupStore>>,
    shared: Option<Arc<SharedState>>,
    level: LevelHandle,
    registry: HealthRegistry,
    restore: SequenceMarks,
    shed: ShedLedger,
    given_up: GivenUp,
    dead_letters: Option<DeadLetters>,
    table_gaps: Option<TableGaps>,
}

impl<'a> PipelineBuilder<'a> {
    /// Where a batch a stage fails on, and a frame a source refuses, are
    /// kept (default: nowhere; they are only counted and logged).
    pub fn dead_letters(mut self, store: DeadLetters) -> Self {
        self.dead_letters = Some(store);
        self
    }

    /// Where gap recovery reads the open gaps the tables record, to fetch
    /// those nobody is fetching (default: it fetches only the sequencer's).
    pub fn table_gaps(mut self, read: TableGaps) -> Self {
        self.table_gaps = Some(read);
        self
    }

    /// Where gap recovery records ranges the exchange no longer has (the
    /// service shares the tails', so the tables close those gaps).
    pub fn given_up(mut self, given_up: GivenUp) -> Self {
        self.given_up = given_up;
        self
    }

    /// Where the ladder's shedding is recorded (default: a ledger of its
    /// own; the service shares the tails', so snapshots record it).
    pub fn shed_ledger(mut self, ledger: ShedLedger) -> Self {
        self.shed = ledger;
        self
    }

    /// The dedup window to start from (default: an empty in-memory window
    /// sized by `[dedup]`).
    pub fn dedup(mut self, store: Box<dyn DedupStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Dedup and sequence state shared through Redis.
    pub fn shared(mut self, shared: Option<Arc<SharedState>>) -> Self {
        self.shared = shared;
        self
    }

    /// The degradation level the stages act on (set by the controller).
    pub fn level(mut self, level: LevelHandle) -> Self {
        self.level = level;
        self
    }

    pub fn registry(mut self, registry: HealthRegistry) -> Self {
        self.registry = registry;
        self
    }

    /// Each stream continues its sequences after these marks (what is
    /// already durable).
    pub fn restored(mut self, marks: SequenceMarks) -> Self {
        self.restore = marks;
        self
    }

    /// Starts the stages, and gap recovery when configured.
    pub fn start(self) -> Pipeline {
        // Metrics emitted before the recorder exists would be lost.
        crate::runtime::telemetry::prometheus();
        let Self { config, sink, store, shared, level, registry, restore, shed, given_up, dead_letters, table_gaps } =
            self;
        let store = store.unwrap_or_else(|| Box::new(MemoryStore::new(config.dedup.window, config.dedup.capacity)));
        let policies = Policies::from(&config.supervision);
        let capacity = config.pipeline.mailbox_capacity;
        let (guardian, escalation) = Guardian::new(registry.clone(), Duration::from_secs(2));
        let guardian = guardian.start().recipient();
        let supervision =
            |name: &'static str| Supervision::new(policies.for_actor(name), registry.probe(name), guardian.clone());

        let sup = supervision(sink_actor::NAME);
        let sink_link = sup.probe().clone();
        let sink_shared = shared.clone();
        let sink_addr = Supervisor::start(move |ctx: &mut Context<SinkActor>| {
            ctx.set_mailbox_capacity(capacity);
            SinkActor::new(sink, sup).with_shared(sink_shared)
        });
        let sink_link = sink_link.link(sink_addr.clone());

        let sup = supervision(dedup::NAME);
        let dedup_link = sup.probe().clone();
        let duplicates = Arc::new(AtomicU64::new(0));
        let counted = duplicates.clone();
        let letters = dead_letters.clone();
        let dedup_addr = Supervisor::start(move |ctx: &mut Context<DedupActor>| {
            ctx.set_mailbox_capacity(capacity);
            let dedup = DedupActor::new(store, sink_link, sup).with_shared(shared).counting(counted);
            match letters {
                Some(store) => dedup.with_dead_letters(store),
                None => dedup,
            }
        });
        let dedup_link = dedup_link.link(dedup_addr.clone());

        let mut faults = BTreeMap::new();
        // Gap recovery asks the exchange this process streams from. A
        // process without the Binance source (a Kafka flusher that only
        // consumes, a reader) has no business asking it, and one that
        // cannot reach it would count the tables' open gaps unrecoverable
        // and close them for good; the producers fetch them instead.
        let gaps_to: Option<Recipient<GapDetected>> = if config.gap_recovery.enabled && config.binance.enabled {
            let sup = supervision(gap_recovery::NAME);
            let (binance, gaps, link) = (config.binance.clone(), config.gap_recovery.clone(), dedup_link.clone());
            let breaker = registry.breaker("exchange-rest", &config.breakers);
            let addr = Supervisor::start(move |_: &mut Context<GapRecoveryActor>| {
                let actor =
                    GapRecoveryActor::new(&binance, gaps, link, sup).with_breaker(breaker).with_given_up(given_up);
                match table_gaps {
                    Some(read) => actor.with_tables(read),
                    None => actor,
                }
            });
            faults.insert(gap_recovery::NAME, addr.clone().recipient());
            Some(addr.recipient())
        } else {
            None
        };

        let gaps_for_sequencer = gaps_to.clone();
        let sup = supervision(sequencer::NAME);
        let seq_link = sup.probe().clone();
        let seq_config = config.sequence_config();
        let shedding = Shedding::new(level.clone(), &config.degradation.critical_symbols, shed.clone());
        let reader = shed.clone();
        registry.report_shed(Box::new(move || reader.totals()));
        let letters = dead_letters.clone();
        let seq_addr = Supervisor::start(move |ctx: &mut Context<SequenceActor>| {
            ctx.set_mailbox_capacity(capacity);
            let sequencer = SequenceActor::new(seq_config, dedup_link, gaps_for_sequencer, sup)
                .restored(&restore)
                .with_shedding(shedding);
            match letters {
                Some(store) => sequencer.with_dead_letters(store),
                None => sequencer,
            }
        });

        faults.insert(sequencer::NAME, seq_addr.clone().recipient());
        faults.insert(dedup::NAME, dedup_addr.recipient());
        faults.insert(sink_actor::NAME, sink_addr.recipient());
        Pipeline {
            entrance: Entrance::new(seq_link.link(seq_addr), config.pipeline.batch_size),
            registry,
            faults,
            policies,
            guardian,
            escalation,
            level,
            sources: SourceList::default(),
            duplicates,
            shed,
            gaps_to,
            dead_letters,
            books: BookDirectory::default(),
            book_log: None,
        }
    }
}

impl Pipeline {
    /// A pipeline ending in `sink`; see [`PipelineBuilder`] for the rest.
    pub fn builder(config: &Config, sink: Box<dyn Sink>) -> PipelineBuilder<'_> {
        PipelineBuilder {
            config,
            sink,
            store: None,
            shared: None,
            level: LevelHandle::default(),
            registry: HealthRegistry::new(),
            restore: SequenceMarks::default(),
            shed: ShedLedger::default(),
            given_up: GivenUp::default(),
            dead_letters: None,
            table_gaps: None,
        }
    }

    /// The degradation level the stages act on (set by the controller).
    pub fn level(&self) -> &LevelHandle {
        &self.level
    }

    /// The sources started so far, for the controller to pause.
    pub fn sources(&self) -> &SourceList {
        &self.sources
    }

    /// Where sources send their batches.
    pub fn entrance(&self) -> &Entrance {
        &self.entrance
    }

    /// Starts one supervised Binance connection actor per group of streams,
    /// feeding this pipeline.
    pub fn start_binance(&mut self, config: &Config) -> Vec<Addr<ConnectionActor>> {
        let depth = config.book.enabled.then(|| config.book.stream_suffix());
        let groups = crate::sources::binance::stream_groups(&config.binance, depth);
        let mut addrs = Vec::new();
        for (i, streams) in groups.into_iter().enumerate() {
            // Names are registry keys for the process's lifetime: one per
            // connection, a handful at most.
            let name: &'static str = Box::leak(format!("binance-{i}").into_boxed_str());
            let book = config.book.enabled.then(|| self.start_book(config, i, &streams).recipient());
            let sup = self.supervision(name);
            let (binance, batch, next) =
                (config.binance.clone(), self.entrance.batch_size(), self.entrance.link().clone());
            let letters = self.dead_letters.clone();
            let addr = Supervisor::start(move |_: &mut Context<ConnectionActor>| {
                ConnectionActor::new(name, streams, binance, batch, next, sup)
                    .with_dead_letters(letters)
                    .with_book(book)
            });
            self.faults.insert(name, addr.clone().recipient());
            if let Ok(mut sources) = self.sources.lock() {
                sources.push(addr.clone().recipient());
            }
            addrs.push(addr);
        }
        addrs
    }

    /// The order-book actor of connection `i`, keeping the books of the
    /// symbols among its `streams`.
    fn start_book(&mut self, config: &Config, i: usize, streams: &[String]) -> Addr<BookActor> {
        let name: &'static str = Box::leak(format!("book-{i}").into_boxed_str());
        let mut symbols: Vec<compact_str::CompactString> = streams
            .iter()
            .filter_map(|s| s.split_once('@').map(|(symbol, _)| symbol.to_ascii_uppercase().into()))
            .collect();
        symbols.dedup();
        let sup = self.supervision(name);
        let (binance, book, directory) = (config.binance.clone(), config.book.clone(), self.books.clone());
        let (level, critical) = (self.level.clone(), config.degradation.critical_symbols.clone());
        let log = self.book_log.clone();
        let addr = Supervisor::start(move |_: &mut Context<BookActor>| {
            BookActor::new(name, symbols, &binance, book, directory, sup)
                .with_shedding(level, &critical)
                .with_log(log.clone())
        });
        self.faults.insert(name, addr.clone().recipient());
        addr
    }

    /// The order-book actors by symbol (empty while books are off).
    pub fn books(&self) -> &BookDirectory {
        &self.books
    }

    /// Where the order-book actors started from now on record what they do.
    pub fn set_book_log(&mut self, log: Option<Arc<dyn crate::state::books::BookRecorder>>) {
        self.book_log = log;
    }

    /// Sends a batch in, waiting while the first stage is full.
    pub async fn send(&self, events: Vec<k2_core::MarketEvent>) -> Result<(), MailboxError> {
        self.entrance.send(events).await
    }

    /// Returns once everything sent before has reached the sink.
    pub async fn drain(&self) -> Result<(), MailboxError> {
        self.entrance.drain().await
    }

    /// The drain of a stop: also what the deduplicator holds for other
    /// instances' claims, once they settle or at `settle` at the latest.
    pub async fn drain_settling(&self, settle: std::time::Instant) -> Result<(), MailboxError> {
        self.entrance.drain_with(Some(settle)).await
    }

    /// Resolves with the reason once supervision has escalated a failure and
    /// the service must stop.
    pub async fn escalated(&self) -> String {
        let mut watch = self.escalation.clone();
        loop {
            if let Some(why) = watch.borrow_and_update().clone() {
                return why;
            }
            if watch.changed().await.is_err() {
                // The guardian is gone: nothing can escalate any more.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Supervision for another actor under this pipeline's policies and
    /// guardian, reporting as `name`.
    pub fn supervision(&self, name: &'static str) -> Supervision {
        Supervision::new(self.policies.for_actor(name), self.registry.probe(name), self.guardian.clone())
    }

    /// Makes an actor reachable by `/admin/faults`.
    pub fn add_fault_target(&mut self, name: &'static str, to: Recipient<Fault>) {
        self.faults.insert(name, to);
    }

    pub fn registry(&self) -> &HealthRegistry {
        &self.registry
    }

    /// Stage names and where to inject faults into them.
    pub fn faults(&self) -> &BTreeMap<&'static str, Recipient<Fault>> {
        &self.faults
    }

    /// Most events per batch, as configured.
    pub fn batch_size(&self) -> usize {
        self.entrance.batch_size()
    }

    /// Queues the open gaps the tables recorded (a crash, or a stop, while
    /// they were being recovered) for gap recovery; how many trades.
    pub fn requeue_gaps(&self, open: &OpenGaps) -> u64 {
        let Some(to) = &self.gaps_to else { return 0 };
        let mut n = 0;
        for ((exchange, symbol), ranges) in &open.0 {
            for &(from, to_id) in &ranges.0 {
                n += (to_id - from + 1) as u64;
                to.do_send(GapDetected(Gap { exchange: exchange.clone(), symbol: symbol.clone(), from, to: to_id }));
            }
        }
        n
    }

    /// What the degradation ladder has shed, by level, symbol and kind.
    pub fn shed(&self) -> &ShedLedger {
        &self.shed
    }

    /// Duplicates dropped so far (the same message id seen before).
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }
}
