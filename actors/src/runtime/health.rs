//! The actor health registry: one entry per actor with its state, restarts,
//! mailbox depth and traffic, exported as Prometheus metrics and as the JSON
//! of `/health`.
//!
//! Counting happens here, in the framework, not in each actor: an actor holds
//! a [`Probe`] and its senders a [`Link`], and both report through them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use actix::dev::ToEnvelope;
use actix::prelude::*;
use serde::Serialize;

/// Where an actor is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorState {
    Starting,
    Running,
    Restarting,
    /// Restarts exhausted; the failure was escalated.
    Failed,
    Stopped,
}

impl ActorState {
    const ALL: [Self; 5] = [Self::Starting, Self::Running, Self::Restarting, Self::Failed, Self::Stopped];
}

/// What is known of one actor. Counters are atomics so the hot path takes no
/// lock; only the last error needs one.
#[derive(Debug, Default)]
struct Entry {
    /// Index into `ActorState::ALL`.
    state: AtomicU8,
    restarts: AtomicU64,
    mailbox_depth: Arc<AtomicI64>,
    batches: AtomicU64,
    events: AtomicU64,
    /// Unix time of the last message, in milliseconds; 0 before any.
    last_message_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// One actor's entry as `/health` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ActorReport {
    pub state: ActorState,
    pub restarts: u64,
    pub mailbox_depth: i64,
    pub batches: u64,
    pub events: u64,
    /// RFC 3339, absent before the first message.
    pub last_message: Option<String>,
    pub last_error: Option<String>,
}

/// Shared registry of every actor's health.
#[derive(Debug, Clone, Default)]
pub struct HealthRegistry {
    actors: Arc<Mutex<BTreeMap<&'static str, Arc<Entry>>>>,
    breakers: Arc<Mutex<BTreeMap<&'static str, Arc<crate::runtime::breaker::CircuitBreaker>>>>,
    degradation: Arc<Mutex<Option<Degradation>>>,
    /// Reads what the degradation ladder has shed (`LEVEL/SYMBOL/kind` →
    /// rows), once the pipeline has said where.
    shed: ShedSlot,
}

/// Reads the shed rows so far.
pub type ShedReader = Box<dyn Fn() -> BTreeMap<String, u64> + Send + Sync>;

#[derive(Clone, Default)]
struct ShedSlot(Arc<Mutex<Option<ShedReader>>>);

impl std::fmt::Debug for ShedSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShedSlot")
    }
}

/// The degradation ladder's level as `/health` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Degradation {
    pub level: u8,
    pub name: &'static str,
    /// Why it is at this level.
    pub cause: String,
}

impl HealthRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an actor (once per name) and returns its probe.
    pub fn probe(&self, actor: &'static str) -> Probe {
        let mut actors = self.actors.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = actors.entry(actor).or_default().clone();
        let depth = entry.mailbox_depth.clone();
        // The actor's counters exist at 0 from its start, so a dashboard
        // shows 0 rather than nothing and rate() sees the first increment.
        // Incrementing by 0 leaves a re-registered actor's counts alone.
        metrics::counter!("k2_actor_restarts_total", "actor" => actor).increment(0);
        metrics::counter!("k2_actor_errors_total", "actor" => actor).increment(0);
        metrics::counter!("k2_actor_messages_total", "actor" => actor).increment(0);
        metrics::counter!("k2_actor_events_total", "actor" => actor).increment(0);
        metrics::counter!("k2_mailbox_full_total", "actor" => actor).increment(0);
        metrics::counter!("k2_dead_letter_events_total", "actor" => actor).increment(0);
        metrics::counter!("k2_supervision_escalations_total", "actor" => actor).increment(0);
        metrics::gauge!("k2_actor_mailbox_depth", "actor" => actor).set(depth.load(Ordering::Relaxed).max(0) as f64);
        let probe = Probe { actor, entry, depth };
        probe.set_state(ActorState::Starting);
        probe
    }

    /// Every actor's report, by name.
    /// The circuit breaker of `dependency`, created on first use with its
    /// thresholds from `policy` (its own subsection's where it has one).
    pub fn breaker(
        &self,
        dependency: &'static str,
        policy: &crate::runtime::config::BreakerConfig,
    ) -> Arc<crate::runtime::breaker::CircuitBreaker> {
        let mut breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        breakers
            .entry(dependency)
            .or_insert_with(|| {
                Arc::new(crate::runtime::breaker::CircuitBreaker::new(dependency, policy.of(dependency)))
            })
            .clone()
    }

    /// The degradation controller's latest level and its cause.
    pub fn set_degradation(&self, level: u8, name: &'static str, cause: &str) {
        *self.degradation.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Degradation { level, name, cause: cause.to_owned() });
    }

    /// None when no controller runs.
    pub fn degradation(&self) -> Option<Degradation> {
        self.degradation.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Where `/health` reads the rows the ladder has shed.
    pub fn report_shed(&self, reader: ShedReader) {
        *self.shed.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(reader);
    }

    /// The rows the ladder has shed, by `LEVEL/SYMBOL/kind`.
    pub fn shed(&self) -> BTreeMap<String, u64> {
        self.shed.0.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(|read| read()).unwrap_or_default()
    }

    /// Every breaker's state.
    pub fn breakers(&self) -> BTreeMap<&'static str, crate::runtime::breaker::BreakerState> {
        let breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        breakers.iter().map(|(name, b)| (*name, b.state())).collect()
    }

    /// Why each tripped breaker opened, for those not closed since.
    pub fn breaker_causes(&self) -> BTreeMap<&'static str, String> {
        let breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        breakers.iter().filter_map(|(name, b)| Some((*name, b.cause()?))).collect()
    }

    pub fn report(&self) -> BTreeMap<&'static str, ActorReport> {
        let actors = self.actors.lock().unwrap_or_else(PoisonError::into_inner);
        actors
            .iter()
            .map(|(name, e)| {
                let last = e.last_message_ms.load(Ordering::Relaxed);
                let report = ActorReport {
                    state: ActorState::ALL[usize::from(e.state.load(Ordering::Relaxed))],
                    restarts: e.restarts.load(Ordering::Relaxed),
                    mailbox_depth: e.mailbox_depth.load(Ordering::Relaxed),
                    batches: e.batches.load(Ordering::Relaxed),
                    events: e.events.load(Ordering::Relaxed),
                    last_message: (last > 0).then(|| rfc3339_ms(last)),
                    last_error: e.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone(),
                };
                (*name, report)
            })
            .collect()
    }

    /// True when no actor has failed.
    pub fn healthy(&self) -> bool {
        self.report().values().all(|r| r.state != ActorState::Failed)
    }
}

fn rfc3339_ms(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// An actor's handle on its registry entry.
#[derive(Debug, Clone)]
pub struct Probe {
    actor: &'static str,
    entry: Arc<Entry>,
    depth: Arc<AtomicI64>,
}

impl Probe {
    pub fn actor(&self) -> &'static str {
        self.actor
    }

    pub fn set_state(&self, state: ActorState) {
        let code = ActorState::ALL.iter().position(|s| *s == state).unwrap_or(0) as u8;
        self.entry.state.store(code, Ordering::Relaxed);
        metrics::gauge!("k2_actor_up", "actor" => self.actor).set(if state == ActorState::Running { 1.0 } else { 0.0 });
        // 0 starting, 1 running, 2 restarting, 3 failed, 4 stopped.
        metrics::gauge!("k2_actor_state", "actor" => self.actor).set(f64::from(code));
    }

    /// A restart happened because of `reason`.
    pub fn restarted(&self, reason: &str) {
        self.entry.restarts.fetch_add(1, Ordering::Relaxed);
        *self.entry.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.to_owned());
        metrics::counter!("k2_actor_restarts_total", "actor" => self.actor).increment(1);
    }

    /// Records a failure without a restart (kept for `/health`).
    pub fn error(&self, reason: &str) {
        *self.entry.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.to_owned());
        metrics::counter!("k2_actor_errors_total", "actor" => self.actor).increment(1);
    }

    /// A message of `events` events sent through a [`Link`] was taken from
    /// the mailbox.
    pub fn received(&self, events: usize) {
        let depth = self.depth.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!("k2_actor_mailbox_depth", "actor" => self.actor).set(depth.max(0) as f64);
        self.handled(events);
    }

    /// A message that did not come through a [`Link`] was handled.
    pub fn handled(&self, events: usize) {
        self.entry.batches.fetch_add(1, Ordering::Relaxed);
        self.entry.events.fetch_add(events as u64, Ordering::Relaxed);
        self.entry.last_message_ms.store(now_ms(), Ordering::Relaxed);
        metrics::counter!("k2_actor_messages_total", "actor" => self.actor).increment(1);
        metrics::counter!("k2_actor_events_total", "actor" => self.actor).increment(events as u64);
        metrics::gauge!("k2_actor_last_message_timestamp_seconds", "actor" => self.actor).set(now_ms() as f64 / 1000.0);
    }

    /// A sender's handle that counts what it puts into this actor's mailbox.
    pub fn link<A>(&self, addr: Addr<A>) -> Link<A>
    where
        A: Actor,
    {
        Link { addr, actor: self.actor, depth: self.depth.clone() }
    }
}

/// A counted, back-pressured way to send to an actor: sending waits while the
/// mailbox is full, and each wait is counted as pressure.
#[derive(Debug)]
pub struct Link<A: Actor> {
    addr: Addr<A>,
    actor: &'static str,
    depth: Arc<AtomicI64>,
}

impl<A: Actor> Clone for Link<A> {
    fn clone(&self) -> Self {
        Self { addr: self.addr.clone(), actor: self.actor, depth: self.depth.clone() }
    }
}

impl<A: Actor> Link<A> {
    pub fn addr(&self) -> &Addr<A> {
        &self.addr
    }

    /// Sends `msg`, waiting while the mailbox is full. Errs only when the
    /// actor is gone for good.
    pub async fn send<M>(&self, msg: M) -> Result<(), MailboxError>
    where
        M: Message<Result = ()> + Send + 'static,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        self.depth.fetch_add(1, Ordering::Relaxed);
        let msg = match self.addr.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(SendError::Full(msg)) => {
                metrics::counter!("k2_mailbox_full_total", "actor" => self.actor).increment(1);
                msg
            }
            Err(SendError::Closed(_)) => {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                return Err(MailboxError::Closed);
            }
        };
        self.addr.send(msg).await.inspect_err(|_| {
            self.depth.fetch_sub(1, Ordering::Relaxed);
        })
    }
}

/// A handler's result that forwards `msg` to the next stage and holds this
/// actor until the next mailbox has taken it: order is kept, and a full
/// mailbox downstream stops this stage from taking more (back-pressure).
pub fn forward<A, B, M>(act: &A, next: &Link<B>, msg: M) -> AtomicResponse<A, ()>
where
    A: Actor<Context = Context<A>>,
    B: Actor + Handler<M>,
    B::Context: ToEnvelope<B, M>,
    M: Message<Result = ()> + Send + 'static,
{
    let next = next.clone();
    AtomicResponse::new(Box::pin(
        async move {
            if next.send(msg).await.is_err() {
                tracing::error!(stage = next.actor, "next stage is gone; message dropped");
            }
        }
        .into_actor(act),
    ))
}
