//! The spill replayer: it moves spilled rows back where they were going,
//! oldest segment first. Embedded mode: into the tails while the
//! degradation level is below AGGRESSIVE, deleting segments whose rows both
//! tables have committed. Kafka mode: into Kafka while the Kafka breaker is
//! closed ([`KafkaReplay`]). A supervised actor like the stages, so a
//! failure restarts it and shows in `/health`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::Notify;

use super::kafka::KafkaReplay;
use super::spill::{Spill, SpillError, replay_oldest};
use crate::lake::Tails;
use crate::runtime::degradation::{Level, LevelHandle};
use crate::runtime::supervision::{Supervise, Supervision, supervised};

pub const NAME: &str = "spill-replay";

/// How often the replayer looks at the level and the spill.
const LOOK: Duration = Duration::from_millis(200);

/// Clears the flag it holds when dropped.
struct ClearOnDrop(Arc<AtomicBool>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Where spilled rows go back to.
#[derive(Clone)]
pub enum Target {
    /// Embedded mode: the tails, below AGGRESSIVE; `full` wakes the flusher
    /// once replayed rows wait in them.
    Tails { tails: Tails, level: LevelHandle, full: Arc<Notify> },
    /// Kafka mode: the topics, while the Kafka breaker is closed.
    Kafka(KafkaReplay),
}

pub struct SpillReplayActor {
    spill: Arc<Spill>,
    target: Target,
    /// A replay is running: one at a time keeps the order. Cleared by the
    /// replay's own task, which outlives a restart of this actor.
    busy: Arc<AtomicBool>,
    supervision: Supervision,
}

impl SpillReplayActor {
    pub fn new(spill: Arc<Spill>, target: Target, supervision: Supervision) -> Self {
        Self { spill, target, busy: Arc::new(AtomicBool::new(false)), supervision }
    }

    fn look(&mut self, ctx: &mut Context<Self>) {
        if let Target::Tails { tails, level, .. } = &self.target {
            let (t, q) = tails.committed_generations();
            self.spill.release(t, q);
            if level.get() >= Level::Aggressive {
                return;
            }
        }
        if self.spill.is_empty() || self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let (spill, target, busy) = (self.spill.clone(), self.target.clone(), self.busy.clone());
        // On a worker thread: turning a segment into Arrow is CPU work that
        // must not hold the actors' thread.
        let replay = tokio::spawn(async move {
            // Cleared however the replay ends, a panic included.
            let _done = ClearOnDrop(busy);
            match &target {
                Target::Tails { tails, .. } => replay_oldest(&spill, tails, |_| {}).await,
                Target::Kafka(kafka) => kafka.replay().await,
            }
        });
        ctx.spawn(replay.into_actor(self).map(|replayed, act, _| {
            let replayed = replayed.unwrap_or_else(|e| Err(SpillError::Task(e.to_string())));
            match replayed {
                Ok(Some((seq, rows))) => {
                    act.supervision.probe().handled(rows);
                    match &act.target {
                        Target::Tails { full, .. } => {
                            tracing::info!(segment = seq, rows, "spilled rows replayed into the tails");
                            full.notify_one();
                        }
                        Target::Kafka(_) => tracing::info!(segment = seq, rows, "spilled records replayed into Kafka"),
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    // The segment stays on disk; the next look tries again.
                    tracing::error!(error = %e, "spill replay failed; retrying");
                    act.supervision.probe().error(&e.to_string());
                }
            }
        }));
    }
}

impl Actor for SpillReplayActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.supervision.started();
        ctx.run_interval(LOOK, |act, ctx| act.look(ctx));
    }
}

supervised!(SpillReplayActor);

impl Supervise for SpillReplayActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    /// A replay under way goes on in its own task (and clears `busy`).
    fn reset(&mut self) {}
}
