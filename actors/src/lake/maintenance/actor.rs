//! The maintenance actor: a round of [`Maintainer::run`] over both tables
//! every `maintenance.interval`, skipped while the degradation ladder is above
//! NORMAL (a service falling behind needs its cores and its disk for
//! ingestion). The round runs as a task on the runtime; the actor only
//! starts it and hears how it ended, so a panic in a round is an error
//! report, not a dead mailbox.

use actix::prelude::*;

use super::{Maintainer, TableReport};
use crate::lake::LakeError;
use crate::runtime::degradation::{Level, LevelHandle};
use crate::runtime::supervision::{Supervise, Supervision, supervised};

pub const NAME: &str = "maintenance";

/// Runs a round now (the admin drill and tests); answers with its reports.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunNow {
    pub done: tokio::sync::oneshot::Sender<Result<Vec<TableReport>, String>>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct RoundEnded;

pub struct MaintenanceActor {
    maintainer: Maintainer,
    level: LevelHandle,
    supervision: Supervision,
}

impl MaintenanceActor {
    pub fn new(maintainer: Maintainer, level: LevelHandle, supervision: Supervision) -> Self {
        Self { maintainer, level, supervision }
    }

    fn start_round(
        &mut self,
        ctx: &mut Context<Self>,
        done: Option<tokio::sync::oneshot::Sender<Result<Vec<TableReport>, String>>>,
    ) {
        self.supervision.probe().handled(0);
        let level = self.level.get();
        if level > Level::Normal && done.is_none() {
            metrics::counter!("k2_maintenance_rounds_total", "result" => "skipped").increment(1);
            tracing::info!(level = level.name(), "maintenance round skipped while the service is degraded");
            return;
        }
        let maintainer = self.maintainer.clone();
        let probe = self.supervision.probe().clone();
        let task = tokio::spawn(async move { maintainer.run_all(false).await });
        let addr = ctx.address();
        actix::spawn(async move {
            let result: Result<Vec<TableReport>, String> = match task.await {
                Ok(Ok(reports)) => Ok(reports),
                Ok(Err(e)) => Err(describe(&e)),
                Err(e) => Err(format!("maintenance round failed: {e}")),
            };
            match &result {
                Ok(reports) => {
                    metrics::counter!("k2_maintenance_rounds_total", "result" => "ok").increment(1);
                    for r in reports {
                        tracing::info!(
                            table = r.table,
                            partitions_compacted = r.compaction.iter().filter(|p| p.done.snapshot_id.is_some()).count(),
                            files_before = r.files_before,
                            files_after = r.files_after,
                            snapshots_expired = r.expired.snapshots,
                            orphans_deleted = r.orphans.deleted,
                            partitions_dropped = r.retention.partitions.len(),
                            seconds = r.seconds,
                            "maintenance round done"
                        );
                    }
                }
                Err(e) => {
                    metrics::counter!("k2_maintenance_rounds_total", "result" => "failed").increment(1);
                    probe.error(e);
                    tracing::warn!(error = %e, "maintenance round failed; the next round tries again");
                }
            }
            if let Some(done) = done {
                let _ = done.send(result);
            }
            addr.do_send(RoundEnded);
        });
    }
}

fn describe(e: &LakeError) -> String {
    format!("maintenance: {e}")
}

impl Actor for MaintenanceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.supervision.started();
        let limit = self.maintainer.config().alert_files_per_partition;
        metrics::gauge!("k2_table_files_per_partition_limit").set(limit as f64);
        if self.maintainer.config().enabled {
            ctx.run_interval(self.maintainer.config().interval, |act, ctx| act.start_round(ctx, None));
        }
    }
}

supervised!(MaintenanceActor);

impl Supervise for MaintenanceActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    /// A round in flight ends on its own; the maintainer lets one run at a
    /// time, across restarts too.
    fn reset(&mut self) {}
}

impl Handler<RunNow> for MaintenanceActor {
    type Result = ();

    fn handle(&mut self, msg: RunNow, ctx: &mut Context<Self>) {
        self.start_round(ctx, Some(msg.done));
    }
}

impl Handler<RoundEnded> for MaintenanceActor {
    type Result = ();

    fn handle(&mut self, _: RoundEnded, _: &mut Context<Self>) {
        self.supervision.probe().handled(0);
    }
}
