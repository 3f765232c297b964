//! The book flusher: commits the book records every `flush.max_age`, or
//! sooner once `flush.max_rows` wait. Supervised like every actor; a
//! failed commit keeps its records (queries still see them) and is
//! retried at the next tick, the failure counted and on `/health`.

use std::sync::Arc;
use std::time::Duration;

use actix::fut::wrap_future;
use actix::prelude::*;

use super::BookLog;
use crate::runtime::supervision::{Supervise, Supervision, supervised};

pub const NAME: &str = "book-flusher";

/// How often the records waiting are counted against `flush.max_rows`.
const LOOK: Duration = Duration::from_millis(250);

pub struct BookFlusherActor {
    log: Arc<BookLog>,
    max_age: Duration,
    max_rows: usize,
    /// A commit is under way.
    busy: bool,
    /// When the last commit started.
    last: std::time::Instant,
    supervision: Supervision,
}

impl BookFlusherActor {
    pub fn new(log: Arc<BookLog>, max_age: Duration, max_rows: usize, supervision: Supervision) -> Self {
        Self { log, max_age, max_rows, busy: false, last: std::time::Instant::now(), supervision }
    }

    fn look(&mut self, ctx: &mut Context<Self>) {
        let waiting = self.log.waiting();
        metrics::gauge!("k2_book_records_waiting").set(waiting as f64);
        if self.busy || waiting == 0 || (waiting < self.max_rows && self.last.elapsed() < self.max_age) {
            return;
        }
        self.busy = true;
        self.last = std::time::Instant::now();
        let log = self.log.clone();
        ctx.spawn(wrap_future::<_, Self>(async move { log.commit().await }).map(|result, act, _| {
            act.busy = false;
            match result {
                Ok(n) => act.supervision.probe().handled(n),
                Err(e) => {
                    metrics::counter!("k2_book_commit_failures_total").increment(1);
                    tracing::warn!(error = %e, "book records not committed; retrying at the next flush");
                    act.supervision.probe().error(&format!("book records not committed: {e}"));
                }
            }
        }));
    }
}

impl Actor for BookFlusherActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.supervision.started();
        ctx.run_interval(LOOK, |act, ctx| act.look(ctx));
    }
}

supervised!(BookFlusherActor);

impl Supervise for BookFlusherActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    fn reset(&mut self) {
        self.busy = false;
    }
}
