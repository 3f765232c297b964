//! The query side: a DataFusion engine over Iceberg snapshots plus the
//! flusher's tail, behind the query handler actor and the `/v1` HTTP API.
//!
//! - [`params`]: query parameters, checked (400 naming the parameter).
//! - [`engine`]: plans over a consistent (snapshot, tail) view.
//! - [`aggregate`]: exact OHLCV.
//! - [`format`]: JSON, CSV and Arrow IPC output.
//! - [`routes`]: the HTTP handlers and the OpenAPI description.

pub mod aggregate;
pub mod book;
pub mod book_arrow;
pub mod engine;
pub mod files;
pub mod flight;
pub mod format;
pub mod params;
pub mod replay;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use thiserror::Error;

use crate::lake::TableKind;
use crate::runtime::supervision::{Supervise, Supervision, supervised};
use engine::{QueryEngine, Rows, Summary};
use params::{BarsParams, Pin, ReadParams, SummaryParams};

pub const NAME: &str = "query-handler";

#[derive(Debug, Error)]
pub enum QueryError {
    #[error("{parameter}: {reason}")]
    BadParameter { parameter: &'static str, reason: String },
    /// A well-formed time-travel parameter naming a snapshot the table does
    /// not have (404: the request was right, the data is not there).
    #[error("{parameter}: {reason}")]
    NoSnapshot { parameter: &'static str, reason: String },
    #[error("the query ran over its time budget of {0:?} and was cancelled")]
    Timeout(Duration),
    #[error("the query handler is not available")]
    Unavailable,
    /// Kafka mode: the log past the snapshot could not be read, so a hybrid
    /// answer would miss rows (`source=historical` still answers).
    #[error("{0}; source=historical answers from the tables alone")]
    LogUnavailable(String),
    #[error("query failed: {0}")]
    Internal(String),
}

impl From<params::ParamError> for QueryError {
    fn from(e: params::ParamError) -> Self {
        QueryError::BadParameter { parameter: e.parameter, reason: e.reason }
    }
}

/// One query.
#[derive(Debug)]
pub enum Query {
    Read(TableKind, ReadParams),
    Summary(SummaryParams),
    Bars(BarsParams),
    Symbols(Pin),
}

/// A query's answer.
pub enum Answer {
    Rows(Rows),
    Summary(Option<Box<Summary>>, Option<i64>),
}

#[derive(Message)]
#[rtype(result = "Result<Answer, QueryError>")]
pub struct RunQuery(pub Query);

/// The query handler: takes queries from the HTTP workers and runs each on
/// the multi-threaded runtime under the time budget, so this actor (and the
/// arbiter it lives on) never waits on a scan.
pub struct QueryActor {
    engine: Arc<QueryEngine>,
    timeout: Duration,
    running: Arc<tokio::sync::Semaphore>,
    supervision: Supervision,
}

impl QueryActor {
    pub fn new(engine: Arc<QueryEngine>, timeout: Duration, max_concurrent: usize, supervision: Supervision) -> Self {
        Self { engine, timeout, running: Arc::new(tokio::sync::Semaphore::new(max_concurrent)), supervision }
    }
}

impl Actor for QueryActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.supervision.started();
    }
}

supervised!(QueryActor);

impl Supervise for QueryActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    fn reset(&mut self) {}
}

impl Handler<RunQuery> for QueryActor {
    type Result = ResponseFuture<Result<Answer, QueryError>>;

    fn handle(&mut self, RunQuery(query): RunQuery, _: &mut Context<Self>) -> Self::Result {
        // Queries come from the HTTP workers' plain `send`, not through a
        // counted Link: nothing was added to the mailbox depth to take away.
        self.supervision.probe().handled(0);
        let engine = self.engine.clone();
        let budget = self.timeout;
        let running = self.running.clone();
        let kind = match &query {
            Query::Read(TableKind::Trades, _) => "trades",
            Query::Read(TableKind::Quotes, _) => "quotes",
            Query::Summary(_) => "summary",
            Query::Bars(_) => "bars",
            Query::Symbols(_) => "symbols",
        };
        Box::pin(async move {
            let started = std::time::Instant::now();
            let task = tokio::spawn(async move {
                // Closed only if the actor's semaphore is dropped mid-query.
                let Ok(_turn) = running.acquire_owned().await else { return Err(QueryError::Unavailable) };
                match query {
                    Query::Read(table, p) => engine.read(table, p).await.map(Answer::Rows),
                    Query::Summary(p) => engine.summary(p).await.map(|(s, id)| Answer::Summary(s.map(Box::new), id)),
                    Query::Bars(p) => engine.bars(p).await.map(Answer::Rows),
                    Query::Symbols(pin) => engine.symbols(pin).await.map(Answer::Rows),
                }
            });
            let abort = task.abort_handle();
            let outcome = match tokio::time::timeout(budget, task).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(join)) => Err(QueryError::Internal(format!("query task failed: {join}"))),
                Err(_) => {
                    // Dropping the plan's stream stops its scans.
                    abort.abort();
                    Err(QueryError::Timeout(budget))
                }
            };
            let status = match &outcome {
                Ok(_) => "ok",
                Err(QueryError::BadParameter { .. } | QueryError::NoSnapshot { .. }) => "bad_request",
                Err(QueryError::Timeout(_)) => "timeout",
                Err(_) => "error",
            };
            metrics::histogram!("k2_query_seconds", "query" => kind).record(started.elapsed().as_secs_f64());
            metrics::counter!("k2_queries_total", "query" => kind, "status" => status).increment(1);
            outcome
        })
    }
}
