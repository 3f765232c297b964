//! Kafka mode's consuming side: records from the market topics land in the
//! tables' tails, carrying their offsets; each Iceberg snapshot records the
//! offsets it covers (`k2.kafka-offsets`) in the same commit as the rows.
//!
//! The flushers form one consumer group (auto-commit off) and split the
//! partitions. When partitions are assigned, each continues exactly where
//! the table's latest snapshot says, read from the catalog at that moment
//! (another flusher may have committed them last). When they are revoked,
//! the rows not yet committed are thrown away, and the revocation waits for
//! a commit under way; a flush taken before is refused at commit
//! ([`Claims`]). So a crash or a rebalance at any point neither loses nor
//! doubles a row. Group offset commits carry what the snapshots cover, for
//! lag monitoring only.
//!
//! A record two producers both put in the log lands once too: its second
//! copy is dropped by [`RecentIds`], whose window an assignment refills by
//! reading the `duplicate_span` offsets before where the table ends.
//!
//! Here the supervised actor; in `group` the member's clients and loop, in
//! `rebalance` the assignment and revocation hooks, in `ingest` how records
//! become rows (or dead letters).

mod group;
mod ingest;
mod membership;
mod rebalance;

pub(crate) use ingest::{Decoders, Fate, dead_letter, fate};
pub use membership::Membership;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k2_core::MarketEvent;
use k2_core::codec::wire::{SchemaIds, WireCodec, split_frame};
use rdkafka::admin::AdminClient;
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};

use actix::prelude::*;
use tokio::sync::Notify;

use super::KafkaError;
use super::recent_ids::RecentIds;
use super::schemas::SchemaSource;
use super::topics::{ensure, is_market_topic, pattern};
use crate::lake::claims::{Claims, Verdict};
use crate::lake::summary::Offsets;
use crate::lake::{Lake, LakeError, TableKind, Tails};
use crate::runtime::breaker::CircuitBreaker;
use crate::runtime::config::KafkaConfig;
use crate::runtime::errors::Retryable;
use crate::runtime::health::Probe;
use crate::runtime::messages::Fault;
use crate::runtime::supervision::{Supervise, Supervision, restartable};
use group::start;

/// How long an assignment waits for the catalog before giving the
/// partitions back (the group then rebalances).
const ASSIGN_PATIENCE: Duration = Duration::from_secs(60);

pub const NAME: &str = "kafka-consumer";

/// The consumer as a supervised actor. Its work runs as a task on the
/// runtime's worker threads (rdkafka's rebalance hooks block inside
/// `recv()`); the actor owns the task and watches it: a task that ends,
/// by a panic or an error, is a failure, and the restart makes a new group
/// member that continues where the tables end (the old one's uncommitted
/// rows were dropped at its revocation or are dropped at the new
/// assignment). Its restart policy is `[supervision.kinds.kafka-consumer]`.
pub struct ConsumerActor {
    config: KafkaConfig,
    lake: Lake,
    tails: Tails,
    schemas: SchemaSource,
    task: Option<tokio::task::AbortHandle>,
    /// Drills: makes the task itself panic, as a real fault in it would.
    inject: Arc<Notify>,
    /// The Iceberg catalog's breaker, which the assignment hook feeds.
    catalog: Arc<CircuitBreaker>,
    /// Claimed at the first join and kept across restarts: every member
    /// this actor makes presents the same instance id.
    membership: Option<Membership>,
    supervision: Supervision,
}

impl ConsumerActor {
    pub fn new(
        config: KafkaConfig,
        lake: Lake,
        tails: Tails,
        schemas: SchemaSource,
        catalog: Arc<CircuitBreaker>,
        supervision: Supervision,
    ) -> Self {
        Self {
            config,
            lake,
            tails,
            schemas,
            task: None,
            inject: Arc::new(Notify::new()),
            catalog,
            membership: None,
            supervision,
        }
    }
}

impl Actor for ConsumerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.supervision.started();
        // Joined from a spawned step, not here: after a restart the backoff
        // holds spawned work too, so a member that cannot start waits out
        // its backoff instead of failing again at once, and a parked actor
        // (escalated) starts none.
        ctx.spawn(async {}.into_actor(self).map(|(), act, ctx| act.join(ctx)));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl ConsumerActor {
    /// Makes a new group member and watches its loop.
    fn join(&mut self, ctx: &mut Context<Self>) {
        let (lake, tails, schemas) = (self.lake.clone(), self.tails.clone(), self.schemas.clone());
        let probe = self.supervision.probe().clone();
        // A drill aimed at an earlier member must not kill this one.
        self.inject = Arc::new(Notify::new());
        if self.membership.is_none() {
            match Membership::claim(&self.config, self.lake.dir()) {
                Ok(m) => {
                    match &m.instance_id {
                        Some(id) => tracing::info!(instance_id = %id, "joining the flushers' group as a static member"),
                        None => tracing::info!("joining the flushers' group as a dynamic member"),
                    }
                    self.membership = Some(m);
                }
                Err(e) => {
                    self.supervision.fail(format!(
                        "claiming a group member id in {}: {e}",
                        self.lake.dir().join("kafka-members").display()
                    ));
                    ctx.stop();
                    return;
                }
            }
        }
        let instance_id = self.membership.as_ref().and_then(|m| m.instance_id.clone());
        let alive = self.membership.as_ref().and_then(|m| m.slot.clone());
        // Only the first member waits: a restart within this process drops
        // the old client, which leaves the group.
        let join_after = self.membership.as_mut().map(|m| std::mem::take(&mut m.join_after)).unwrap_or_default();
        let member = group::Member {
            config: &self.config,
            instance_id: instance_id.as_deref(),
            alive,
            join_after,
            lake,
            tails,
            schemas,
            probe,
            inject: self.inject.clone(),
            catalog: self.catalog.clone(),
        };
        let task = match start(member) {
            Ok(task) => task,
            Err(e) => {
                self.supervision.fail(format!("starting the consumer: {e}"));
                ctx.stop();
                return;
            }
        };
        self.task = Some(task.abort_handle());
        // The actor learns when the task ends; it never waits on it.
        ctx.spawn(task.into_actor(self).map(|ended, act, ctx| {
            let reason = crate::runtime::supervision::task_ended(ended, "the consumer");
            act.task = None;
            act.supervision.fail(reason);
            ctx.stop();
        }));
    }
}

restartable!(ConsumerActor);

impl Supervise for ConsumerActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    fn reset(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Handler<Fault> for ConsumerActor {
    type Result = ();

    /// A panic is injected into the consuming task, where real faults
    /// happen; a stop stops the actor.
    fn handle(&mut self, fault: Fault, ctx: &mut Context<Self>) {
        tracing::warn!(actor = NAME, ?fault, "injecting fault");
        match fault {
            Fault::Panic | Fault::PanicOnBatch => self.inject.notify_one(),
            Fault::Stop => ctx.stop(),
        }
    }
}
