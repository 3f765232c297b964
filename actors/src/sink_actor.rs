//! The sink actor: the last stage, writing batches to a [`Sink`] and
//! measuring end-to-end latency (exchange time → sink).

use actix::prelude::*;
use k2_core::{MarketEvent, Timestamp};

use crate::messages::{Drain, EventBatch};
use crate::sink::Sink;
use crate::supervision::{Supervise, Supervision, guarded, supervised};

pub const NAME: &str = "sink";

pub struct SinkActor {
    sink: Box<dyn Sink>,
    supervision: Supervision,
}

impl SinkActor {
    pub fn new(sink: Box<dyn Sink>, supervision: Supervision) -> Self {
        Self { sink, supervision }
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
    type Result = ();

    fn handle(&mut self, batch: EventBatch, ctx: &mut Context<Self>) {
        self.supervision.probe().received(batch.events.len());
        let now = Timestamp::now().as_micros();
        let latency = metrics::histogram!("k2_end_to_end_latency_seconds", "stage" => NAME);
        for e in &batch.events {
            latency.record((now - e.timestamp().as_micros()).max(0) as f64 / 1e6);
        }
        let n = batch.events.len();
        let trades = batch.events.iter().filter(|e| matches!(e, MarketEvent::Trade(_))).count();
        guarded(self, ctx, |act| act.sink.write(batch.events).map_err(|e| e.to_string()));
        metrics::counter!("k2_sink_events_total", "kind" => "trade").increment(trades as u64);
        metrics::counter!("k2_sink_events_total", "kind" => "quote").increment((n - trades) as u64);
    }
}

impl Handler<Drain> for SinkActor {
    type Result = ();

    fn handle(&mut self, msg: Drain, _: &mut Context<Self>) {
        self.supervision.probe().received(0);
        let _ = msg.done.send(());
    }
}
