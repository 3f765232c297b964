//! Builds the supervised pipeline: sequence tracker → deduplicator → sink,
//! under one guardian, each stage's mailbox bounded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::binance::connection::ConnectionActor;
use crate::config::Config;
use crate::dedup::{self, DedupActor, DedupStore};
use crate::degradation::{LevelHandle, SourceList};
use crate::gap_recovery::{self, GapRecoveryActor};
use crate::health::{HealthRegistry, Link};
use crate::lake::summary::Sources;
use crate::messages::{Drain, EventBatch, Fault};
use crate::sequencer::{self, GapDetected, SequenceActor, Shedding};
use crate::shared_state::SharedState;
use crate::sink::Sink;
use crate::sink_actor::{self, SinkActor};
use crate::supervision::{Guardian, RestartPolicy, Supervision};

/// A running pipeline: where sources send batches, and the handles the HTTP
/// server and tests need. Must be built inside an actix `System`.
#[derive(Clone)]
pub struct Pipeline {
    input: Link<SequenceActor>,
    registry: HealthRegistry,
    faults: BTreeMap<&'static str, Recipient<Fault>>,
    batch_size: usize,
    policy: RestartPolicy,
    guardian: Recipient<crate::supervision::Escalate>,
    escalation: tokio::sync::watch::Receiver<Option<String>>,
    /// The degradation level the stages act on.
    level: LevelHandle,
    /// Sources the degradation controller may pause.
    sources: SourceList,
}

impl Pipeline {
    /// Starts the stages (and gap recovery, when configured).
    pub fn start(config: &Config, sink: Box<dyn Sink>, store: Box<dyn DedupStore>, registry: HealthRegistry) -> Self {
        Self::start_restored(config, sink, store, registry, &Sources::default())
    }

    /// As [`Pipeline::start`], continuing each stream's sequences from what
    /// is already durable.
    pub fn start_restored(
        config: &Config,
        sink: Box<dyn Sink>,
        store: Box<dyn DedupStore>,
        registry: HealthRegistry,
        restore: &Sources,
    ) -> Self {
        Self::start_shared(config, sink, store, None, LevelHandle::default(), registry, restore)
    }

    /// As [`Pipeline::start_restored`], with dedup and sequence state shared
    /// through Redis when `shared` is given.
    pub fn start_shared(
        config: &Config,
        sink: Box<dyn Sink>,
        store: Box<dyn DedupStore>,
        shared: Option<Arc<SharedState>>,
        level: LevelHandle,
        registry: HealthRegistry,
        restore: &Sources,
    ) -> Self {
        // Metrics emitted before the recorder exists would be lost.
        crate::telemetry::prometheus();
        let policy = RestartPolicy::from(&config.supervision);
        let capacity = config.pipeline.mailbox_capacity;
        let (guardian, escalation) = Guardian::new(registry.clone(), Duration::from_secs(2));
        let guardian = guardian.start().recipient();

        let probe = registry.probe(sink_actor::NAME);
        let sup = Supervision::new(policy.clone(), probe.clone(), guardian.clone());
        let sink_shared = shared.clone();
        let sink_addr = Supervisor::start(move |ctx: &mut Context<SinkActor>| {
            ctx.set_mailbox_capacity(capacity);
            SinkActor::new(sink, sup).with_shared(sink_shared)
        });
        let sink_link = probe.link(sink_addr.clone());

        let probe = registry.probe(dedup::NAME);
        let sup = Supervision::new(policy.clone(), probe.clone(), guardian.clone());
        let dedup_shared = shared;
        let dedup_addr = Supervisor::start(move |ctx: &mut Context<DedupActor>| {
            ctx.set_mailbox_capacity(capacity);
            DedupActor::new(store, sink_link, sup).with_shared(dedup_shared)
        });
        let dedup_link = probe.link(dedup_addr.clone());

        let mut faults = BTreeMap::new();
        let gaps_to: Option<Recipient<GapDetected>> = if config.gap_recovery.enabled {
            let probe = registry.probe(gap_recovery::NAME);
            let sup = Supervision::new(policy.clone(), probe, guardian.clone());
            let (binance, gaps, link) = (config.binance.clone(), config.gap_recovery.clone(), dedup_link.clone());
            let breaker = registry.breaker("exchange-rest", &config.breakers);
            let addr = Supervisor::start(move |_: &mut Context<GapRecoveryActor>| {
                GapRecoveryActor::new(&binance, gaps, link, sup).with_breaker(breaker)
            });
            faults.insert(gap_recovery::NAME, addr.clone().recipient());
            Some(addr.recipient())
        } else {
            None
        };

        let probe = registry.probe(sequencer::NAME);
        let sup = Supervision::new(policy.clone(), probe.clone(), guardian.clone());
        let seq_config = config.sequence_config();
        let restore = restore.clone();
        let shedding = Shedding::new(level.clone(), &config.degradation.critical_symbols);
        let seq_addr = Supervisor::start(move |ctx: &mut Context<SequenceActor>| {
            ctx.set_mailbox_capacity(capacity);
            SequenceActor::new(seq_config, dedup_link, gaps_to, sup).restored(&restore).with_shedding(shedding)
        });

        faults.insert(sequencer::NAME, seq_addr.clone().recipient());
        faults.insert(dedup::NAME, dedup_addr.recipient());
        faults.insert(sink_actor::NAME, sink_addr.recipient());
        Self {
            input: probe.link(seq_addr),
            registry,
            faults,
            batch_size: config.pipeline.batch_size,
            policy,
            guardian,
            escalation,
            level,
            sources: SourceList::default(),
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

    /// Starts one supervised Binance connection actor per group of streams,
    /// feeding this pipeline.
    pub fn start_binance(&mut self, config: &Config) -> Vec<Addr<ConnectionActor>> {
        let groups = crate::binance::stream_groups(&config.binance);
        let mut addrs = Vec::new();
        for (i, streams) in groups.into_iter().enumerate() {
            // Names are registry keys for the process's lifetime: one per
            // connection, a handful at most.
            let name: &'static str = Box::leak(format!("binance-{i}").into_boxed_str());
            let probe = self.registry.probe(name);
            let sup = Supervision::new(self.policy.clone(), probe, self.guardian.clone());
            let (binance, batch, next) = (config.binance.clone(), self.batch_size, self.input.clone());
            let addr = Supervisor::start(move |_: &mut Context<ConnectionActor>| {
                ConnectionActor::new(name, streams, binance, batch, next, sup)
            });
            self.faults.insert(name, addr.clone().recipient());
            if let Ok(mut sources) = self.sources.lock() {
                sources.push(addr.clone().recipient());
            }
            addrs.push(addr);
        }
        addrs
    }

    /// Sends a batch in, waiting while the first stage is full.
    pub async fn send(&self, events: Vec<k2_core::MarketEvent>) -> Result<(), MailboxError> {
        self.input.send(EventBatch { events }).await
    }

    /// Returns once everything sent before has reached the sink.
    pub async fn drain(&self) -> Result<(), MailboxError> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.input.send(Drain { done }).await?;
        rx.await.map_err(|_| MailboxError::Closed)
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

    /// Supervision for another actor under this pipeline's policy and
    /// guardian, reporting as `name`.
    pub fn supervision(&self, name: &'static str) -> Supervision {
        Supervision::new(self.policy.clone(), self.registry.probe(name), self.guardian.clone())
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
        self.batch_size
    }
}
