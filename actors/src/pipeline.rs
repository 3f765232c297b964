//! Builds the supervised pipeline: sequence tracker → deduplicator → sink,
//! under one guardian, each stage's mailbox bounded.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;

use crate::config::Config;
use crate::dedup::{self, DedupActor, DedupStore};
use crate::health::{HealthRegistry, Link};
use crate::messages::{Drain, EventBatch, Fault};
use crate::sequencer::{self, GapDetected, SequenceActor};
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
}

impl Pipeline {
    pub fn start(config: &Config, sink: Box<dyn Sink>, store: Box<dyn DedupStore>, registry: HealthRegistry) -> Self {
        Self::start_with_gaps(config, sink, store, registry, None)
    }

    pub fn start_with_gaps(
        config: &Config,
        sink: Box<dyn Sink>,
        store: Box<dyn DedupStore>,
        registry: HealthRegistry,
        gaps_to: Option<Recipient<GapDetected>>,
    ) -> Self {
        // Metrics emitted before the recorder exists would be lost.
        crate::telemetry::prometheus();
        let policy = RestartPolicy::from(&config.supervision);
        let capacity = config.pipeline.mailbox_capacity;
        let guardian = Guardian::new(registry.clone(), Duration::from_secs(2)).start().recipient();

        let probe = registry.probe(sink_actor::NAME);
        let sup = Supervision::new(policy.clone(), probe.clone(), guardian.clone());
        let sink_addr = Supervisor::start(move |ctx: &mut Context<SinkActor>| {
            ctx.set_mailbox_capacity(capacity);
            SinkActor::new(sink, sup)
        });
        let sink_link = probe.link(sink_addr.clone());

        let probe = registry.probe(dedup::NAME);
        let sup = Supervision::new(policy.clone(), probe.clone(), guardian.clone());
        let dedup_addr = Supervisor::start(move |ctx: &mut Context<DedupActor>| {
            ctx.set_mailbox_capacity(capacity);
            DedupActor::new(store, sink_link, sup)
        });
        let dedup_link = probe.link(dedup_addr.clone());

        let probe = registry.probe(sequencer::NAME);
        let sup = Supervision::new(policy, probe.clone(), guardian);
        let seq_config = config.sequence_config();
        let seq_addr = Supervisor::start(move |ctx: &mut Context<SequenceActor>| {
            ctx.set_mailbox_capacity(capacity);
            SequenceActor::new(seq_config, dedup_link, gaps_to, sup)
        });

        let faults = BTreeMap::from([
            (sequencer::NAME, seq_addr.clone().recipient()),
            (dedup::NAME, dedup_addr.recipient()),
            (sink_actor::NAME, sink_addr.recipient()),
        ]);
        Self { input: probe.link(seq_addr), registry, faults, batch_size: config.pipeline.batch_size }
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
