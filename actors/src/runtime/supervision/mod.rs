//! Supervision: restart policies, panic capture and escalation.
//!
//! Every pipeline actor runs under actix's `Supervisor`, which keeps its
//! address (and the messages queued in its mailbox) across restarts. This
//! module adds what actix lacks: a restart policy with exponential backoff and
//! jitter, a limit of `max_restarts` within `window` after which the failure is
//! escalated to the [`Guardian`], and [`guarded`], which turns an error or a
//! panic inside a handler into a restart. (actix does not restart an actor
//! whose handler panicked: the panic ends its task and closes its mailbox.)

mod guardian;

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use actix::prelude::*;
use rand::Rng;

pub use self::guardian::{ESCALATION_EXIT_CODE, Escalate, Guardian};
use crate::runtime::config::SupervisionConfig;
use crate::runtime::errors::StageError;
use crate::runtime::health::{ActorState, Probe};

/// When to restart and when to give up.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    pub max_restarts: u32,
    pub window: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl From<&SupervisionConfig> for RestartPolicy {
    fn from(c: &SupervisionConfig) -> Self {
        Self {
            max_restarts: c.max_restarts,
            window: c.window,
            backoff_initial: c.backoff_initial,
            backoff_max: c.backoff_max,
        }
    }
}

/// The restart policy of each actor kind: `[supervision]` as the default,
/// `[supervision.kinds.*]` where a kind departs from it.
#[derive(Debug, Clone)]
pub struct Policies {
    default: RestartPolicy,
    kinds: std::collections::BTreeMap<String, RestartPolicy>,
}

impl From<&SupervisionConfig> for Policies {
    fn from(c: &SupervisionConfig) -> Self {
        let default = RestartPolicy::from(c);
        let kinds = c
            .kinds
            .iter()
            .map(|(kind, o)| {
                let policy = RestartPolicy {
                    max_restarts: o.max_restarts.unwrap_or(default.max_restarts),
                    window: o.window.unwrap_or(default.window),
                    backoff_initial: o.backoff_initial.unwrap_or(default.backoff_initial),
                    backoff_max: o.backoff_max.unwrap_or(default.backoff_max),
                };
                (kind.clone(), policy)
            })
            .collect();
        Self { default, kinds }
    }
}

impl Policies {
    /// The policy of the actor registered as `name`; its kind is the name
    /// without a trailing `-N` (`binance-2` is a `binance`).
    pub fn for_actor(&self, name: &str) -> RestartPolicy {
        let kind = match name.rsplit_once('-') {
            Some((kind, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => kind,
            _ => name,
        };
        self.kinds.get(kind).cloned().unwrap_or_else(|| self.default.clone())
    }
}

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    RestartAfter(Duration),
    Escalate,
}

/// One actor's supervision state: its probe, its recent restarts, the failure
/// that stopped it, and where to escalate.
#[derive(Debug)]
pub struct Supervision {
    policy: RestartPolicy,
    probe: Probe,
    recent: VecDeque<Instant>,
    failure: Option<String>,
    guardian: Recipient<Escalate>,
    /// Set while a restart is held for its backoff or parked after escalation,
    /// so that `started` does not report the actor running too early.
    held: bool,
    /// An injected fault armed for the next batch ([`Fault::PanicOnBatch`]).
    panic_on_batch: bool,
}

impl Supervision {
    pub fn new(policy: RestartPolicy, probe: Probe, guardian: Recipient<Escalate>) -> Self {
        Self { policy, probe, recent: VecDeque::new(), failure: None, guardian, held: false, panic_on_batch: false }
    }

    /// To be called from `Actor::started`: reports the actor running unless a
    /// restart is still being held.
    pub fn started(&self) {
        if !self.held {
            self.probe.set_state(ActorState::Running);
        }
    }

    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// Records why the actor is about to stop.
    pub fn fail(&mut self, reason: String) {
        tracing::error!(actor = self.probe.actor(), %reason, "actor failed; it will be restarted");
        self.probe.error(&reason);
        self.failure = Some(reason);
    }

    /// Decides about a restart that is happening now.
    pub fn verdict(&mut self, now: Instant) -> Verdict {
        while self.recent.front().is_some_and(|t| now.duration_since(*t) > self.policy.window) {
            self.recent.pop_front();
        }
        if self.recent.len() as u32 >= self.policy.max_restarts {
            return Verdict::Escalate;
        }
        self.recent.push_back(now);
        let doublings = (self.recent.len() as u32).saturating_sub(1).min(20);
        let full = self.policy.backoff_initial.saturating_mul(1 << doublings).min(self.policy.backoff_max);
        // Jitter in [full/2, full] so that actors failing together do not
        // restart in lockstep.
        let jittered = full.mul_f64(rand::rng().random_range(0.5..=1.0));
        Verdict::RestartAfter(jittered)
    }
}

/// Implements `actix::Supervised` (through [`on_restarting`]) and the
/// [`Fault`](crate::runtime::messages::Fault) handler (through [`inject`]) for an actor
/// that implements [`Supervise`]: the same for every stage.
macro_rules! supervised {
    ($actor:ty) => {
        $crate::runtime::supervision::restartable!($actor);

        impl actix::Handler<$crate::runtime::messages::Fault> for $actor {
            type Result = ();

            fn handle(&mut self, fault: $crate::runtime::messages::Fault, ctx: &mut actix::Context<Self>) {
                $crate::runtime::supervision::inject(self, ctx, fault);
            }
        }
    };
}
pub(crate) use supervised;

/// Implements `actix::Supervised` through [`on_restarting`], for an actor
/// that handles [`Fault`](crate::runtime::messages::Fault) its own way.
macro_rules! restartable {
    ($actor:ty) => {
        impl actix::Supervised for $actor {
            fn restarting(&mut self, ctx: &mut actix::Context<Self>) {
                $crate::runtime::supervision::on_restarting(self, ctx);
            }
        }
    };
}
pub(crate) use restartable;

/// Implemented by every supervised actor.
pub trait Supervise: Actor<Context = Context<Self>> {
    fn supervision(&mut self) -> &mut Supervision;
    /// Drops state that may be inconsistent after a failure.
    fn reset(&mut self);
}

/// `Supervised::restarting` for every actor: apply the policy, then either
/// hold the mailbox for the backoff (messages wait, none are lost) or
/// escalate and stay parked.
pub fn on_restarting<A: Supervise>(act: &mut A, ctx: &mut Context<A>) {
    act.reset();
    let sup = act.supervision();
    let reason = sup.failure.take().unwrap_or_else(|| "stopped".to_owned());
    match sup.verdict(Instant::now()) {
        Verdict::RestartAfter(delay) => {
            sup.probe.restarted(&reason);
            sup.probe.set_state(ActorState::Restarting);
            sup.held = true;
            tracing::warn!(actor = sup.probe.actor(), %reason, ?delay, "restarting");
            ctx.wait(actix::clock::sleep(delay).into_actor(act).map(|(), act, _| {
                let sup = act.supervision();
                sup.held = false;
                sup.probe.set_state(ActorState::Running);
            }));
        }
        Verdict::Escalate => {
            sup.probe.set_state(ActorState::Failed);
            sup.held = true;
            let actor = sup.probe.actor();
            tracing::error!(actor, %reason, "restart limit reached; escalating");
            sup.guardian.do_send(Escalate { actor, reason });
            // Parked: the mailbox keeps its messages and senders wait, so
            // nothing is dropped while the guardian decides.
            ctx.wait(futures_util::future::pending::<()>().into_actor(act));
        }
    }
}

/// Runs a handler's work, turning an error or a panic into a recorded
/// failure and a stop (which the supervisor turns into a restart); the
/// failure's reason comes back, for the dead letters.
pub fn guarded<A, R>(
    act: &mut A,
    ctx: &mut Context<A>,
    work: impl FnOnce(&mut A) -> Result<R, StageError>,
) -> Result<R, String>
where
    A: Supervise,
{
    let armed = std::mem::take(&mut act.supervision().panic_on_batch);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        if armed {
            panic!("injected panic on a batch");
        }
        work(act)
    }));
    let error = match outcome {
        Ok(Ok(r)) => return Ok(r),
        Ok(Err(error)) => error,
        Err(panic) => StageError::Panicked(panic_message(panic.as_ref())),
    };
    let reason = error.to_string();
    act.supervision().fail(reason.clone());
    ctx.stop();
    Err(reason)
}

/// Applies an injected fault: a panic goes through [`guarded`] exactly as a
/// real one would; a stop is a plain stop; a panic on a batch is armed for
/// the next batch the stage handles through [`guarded`].
pub fn inject<A: Supervise>(act: &mut A, ctx: &mut Context<A>, fault: crate::runtime::messages::Fault) {
    use crate::runtime::messages::Fault;
    tracing::warn!(actor = act.supervision().probe().actor(), ?fault, "injecting fault");
    match fault {
        Fault::Panic => {
            let _ = guarded(act, ctx, |_| -> Result<(), StageError> { panic!("injected panic") });
        }
        Fault::PanicOnBatch => act.supervision().panic_on_batch = true,
        Fault::Stop => ctx.stop(),
    }
}

/// Why an actor's watched task ended: its own word when it returned, else
/// its panic or its cancellation, naming `what` it was.
pub fn task_ended(ended: Result<String, tokio::task::JoinError>, what: &str) -> String {
    match ended {
        Ok(reason) => reason,
        Err(e) if e.is_panic() => format!("{what} panicked: {}", panic_message(e.into_panic().as_ref())),
        Err(e) => format!("{what}'s task failed: {e}"),
    }
}

pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::config::PolicyOverride;

    fn global() -> SupervisionConfig {
        SupervisionConfig {
            max_restarts: 5,
            window: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            kinds: Default::default(),
        }
    }

    #[test]
    fn a_numbered_actor_takes_its_kinds_policy() {
        let mut c = global();
        c.kinds.insert("binance".into(), PolicyOverride { max_restarts: Some(9), ..Default::default() });
        c.kinds.insert(
            "kafka-consumer".into(),
            PolicyOverride { backoff_initial: Some(Duration::from_secs(1)), ..Default::default() },
        );
        let policies = Policies::from(&c);
        assert_eq!(policies.for_actor("binance-3").max_restarts, 9);
        assert_eq!(policies.for_actor("binance-12").max_restarts, 9);
        // A hyphen followed by letters is part of the kind's name.
        assert_eq!(policies.for_actor("kafka-consumer").backoff_initial, Duration::from_secs(1));
        // Kinds without a section, and names that are no kind, take [supervision].
        assert_eq!(policies.for_actor("sequencer").max_restarts, 5);
        assert_eq!(policies.for_actor("binance-").max_restarts, 5);
        assert_eq!(policies.for_actor("binance-x").max_restarts, 5);
    }

    #[test]
    fn a_kinds_missing_keys_take_the_global_values() {
        let mut c = global();
        c.kinds.insert("sink".into(), PolicyOverride { window: Some(Duration::from_secs(5)), ..Default::default() });
        let p = Policies::from(&c).for_actor("sink");
        assert_eq!(p.window, Duration::from_secs(5));
        assert_eq!(
            (p.max_restarts, p.backoff_initial, p.backoff_max),
            (5, Duration::from_millis(100), Duration::from_secs(10))
        );
    }

    #[test]
    fn the_embedded_profile_backs_the_kafka_consumer_off_longer() {
        let c = crate::runtime::config::Config::load_from(None, figment::providers::Env::prefixed("K2_TEST_UNSET__"))
            .unwrap();
        let policies = Policies::from(&c.supervision);
        let consumer = policies.for_actor("kafka-consumer");
        assert_eq!((consumer.backoff_initial, consumer.backoff_max), (Duration::from_secs(1), Duration::from_secs(30)));
        // Its other keys, and every other kind, are [supervision]'s.
        assert_eq!((consumer.max_restarts, consumer.window), (c.supervision.max_restarts, c.supervision.window));
        let sequencer = policies.for_actor("sequencer");
        assert_eq!(sequencer.backoff_initial, c.supervision.backoff_initial);
        assert!(consumer.backoff_initial > sequencer.backoff_initial);
    }

    #[test]
    fn backoff_grows_then_escalates_within_the_window() {
        let sys = actix::System::new();
        sys.block_on(async {
            let guardian =
                Guardian::new(crate::runtime::health::HealthRegistry::new(), Duration::from_secs(1)).0.start();
            let policy = RestartPolicy {
                max_restarts: 3,
                window: Duration::from_secs(60),
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_millis(300),
            };
            let probe = crate::runtime::health::HealthRegistry::new().probe("t");
            let mut s = Supervision::new(policy, probe, guardian.recipient());
            let t0 = Instant::now();
            let bounds = [(50, 100), (100, 200), (150, 300)];
            for (lo, hi) in bounds {
                match s.verdict(t0) {
                    Verdict::RestartAfter(d) => {
                        assert!(d >= Duration::from_millis(lo) && d <= Duration::from_millis(hi), "{d:?}")
                    }
                    Verdict::Escalate => panic!("escalated too early"),
                }
            }
            assert_eq!(s.verdict(t0), Verdict::Escalate);
            // Once the window has passed, restarts are allowed again.
            assert!(matches!(s.verdict(t0 + Duration::from_secs(61)), Verdict::RestartAfter(_)));
        });
    }
}
