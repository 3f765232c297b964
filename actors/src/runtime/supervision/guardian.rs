//! The root of the supervision tree: it receives escalations and tells the
//! service to stop with a clear error, after a grace period in which `/health`
//! and the metrics still show what failed.

use std::time::Duration;

use actix::prelude::*;

use crate::runtime::health::HealthRegistry;

/// Exit status of a service stopped by an escalation (EX_SOFTWARE).
pub const ESCALATION_EXIT_CODE: i32 = 70;

/// An actor exhausted its restarts.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Escalate {
    pub actor: &'static str,
    pub reason: String,
}

/// Receives escalations from every supervised actor.
#[derive(Debug)]
pub struct Guardian {
    registry: HealthRegistry,
    grace: Duration,
    stopping: bool,
    /// Set, after the grace period, to why the service must stop; the
    /// command running the service watches it and exits.
    verdict: tokio::sync::watch::Sender<Option<String>>,
}

impl Guardian {
    pub fn new(registry: HealthRegistry, grace: Duration) -> (Self, tokio::sync::watch::Receiver<Option<String>>) {
        let (verdict, watch) = tokio::sync::watch::channel(None);
        (Self { registry, grace, stopping: false, verdict }, watch)
    }
}

impl Actor for Guardian {
    type Context = Context<Self>;
}

impl Handler<Escalate> for Guardian {
    type Result = ();

    fn handle(&mut self, msg: Escalate, ctx: &mut Context<Self>) {
        metrics::counter!("k2_supervision_escalations_total", "actor" => msg.actor).increment(1);
        tracing::error!(
            actor = msg.actor,
            reason = %msg.reason,
            grace = ?self.grace,
            "supervision escalated: {} failed too often; stopping the service",
            msg.actor
        );
        eprintln!("k2: {} failed too often ({}); stopping the service", msg.actor, msg.reason);
        if self.stopping {
            return;
        }
        self.stopping = true;
        let failed: Vec<_> =
            self.registry.report().into_iter().filter(|(_, r)| r.restarts > 0).map(|(n, _)| n).collect();
        tracing::error!(?failed, "actors with restarts at escalation");
        let why = format!("{} failed too often: {}", msg.actor, msg.reason);
        ctx.run_later(self.grace, move |act, _| {
            let _ = act.verdict.send(Some(why));
        });
    }
}
