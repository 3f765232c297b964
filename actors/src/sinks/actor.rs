//! The sink actor: the last stage, writing batches to a [`Sink`] and
//! measuring end-to-end latency (exchange time → sink).

use actix::prelude::*;
use k2_core::{MarketEvent, Timestamp};

use std::sync::Arc;

use crate::runtime::messages::{Drain, EventBatch};
use crate::runtime::supervision::{Supervise, Supervision, guarded, supervised};
use crate::sinks::Sink;
use crate::state::shared::{Settlement, SharedState};

pub const NAME: &str = "sink";

pub struct SinkActor {
    sink: Box<dyn Sink>,
    supervision: Supervision,
    /// Redis, when the sink is durable on write and so this stage settles.
    settle: Option<Arc<SharedState>>,
}

impl SinkActor {
    pub fn new(sink: Box<dyn Sink>, supervision: Supervision) -> Self {
        Self { sink, supervision, settle: None }
    }

    /// Shares durability with Redis: through the sink when it settles
    /// itself, else here after each write.
    pub fn with_shared(mut self, shared: Option<Arc<SharedState>>) -> Self {
        if let Some(shared) = shared
            && !self.sink.settle_with(shared.clone())
        {
            self.settle = Some(shared);
        }
        self
    }
}

impl Actor for SinkActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.supervision.started();
    }
}

supervised!(SinkActor);

impl Supervise for SinkActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    fn reset(&mut self) {}
}

impl Handler<EventBatch> for SinkActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, batch: EventBatch, ctx: &mut Context<Self>) -> Self::Result {
        self.supervision.probe().received(batch.events.len());
        let now = Timestamp::now().as_micros();
        let latency = metrics::histogram!("k2_end_to_end_latency_seconds", "stage" => NAME);
        for e in &batch.events {
            latency.record((now - e.timestamp().as_micros()).max(0) as f64 / 1e6);
        }
        let n = batch.events.len();
        let trades = batch.events.iter().filter(|e| matches!(e, MarketEvent::Trade(_))).count();
        let settlement = self.settle.as_ref().map(|s| (s.clone(), Settlement::of(&batch.events)));
        let pending = match guarded(self, ctx, |act| Ok(act.sink.write(batch.events)?)) {
            Ok(pending) => {
                if let Some((shared, settlement)) = settlement {
                    shared.settle(settlement);
                }
                pending
            }
            Err(_) => None,
        };
        metrics::counter!("k2_sink_events_total", "kind" => "trade").increment(trades as u64);
        metrics::counter!("k2_sink_events_total", "kind" => "quote").increment((n - trades) as u64);
        AtomicResponse::new(Box::pin(finish(self, pending)))
    }
}

/// Holds the stage until the sink's pending work is done (back-pressure);
/// a failure there is reported, not a restart: the sink keeps its state.
fn finish(act: &SinkActor, pending: Option<crate::sinks::Pending>) -> impl ActorFuture<SinkActor, Output = ()> + use<> {
    let probe = act.supervision.probe().clone();
    let name = act.sink.name();
    async move {
        if let Some(work) = pending
            && let Err(e) = work.await
        {
            tracing::error!(sink = name, error = %e, "sink failed to finish a batch");
            probe.error(&e.to_string());
        }
    }
    .into_actor(act)
}

impl Handler<Drain> for SinkActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Drain, _: &mut Context<Self>) -> Self::Result {
        self.supervision.probe().received(0);
        let pending = self.sink.flush();
        AtomicResponse::new(Box::pin(finish(self, pending).map(move |(), _, _| {
            let _ = msg.done.send(());
        })))
    }
}
