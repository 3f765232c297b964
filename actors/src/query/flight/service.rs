//! The Flight SQL service: who may call (the API keys of `/v1` as bearer
//! tokens, checked by [`authorizer`] before any call), what a call reads (the pin in its `x-k2-*` headers), and the
//! limits every statement runs under (a turn among `query.max_concurrent`,
//! `flight.timeout`, `flight.memory_limit`, `flight.max_rows`). Every
//! refusal is counted in `k2_flight_refused_total` by reason.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, CommandGetCatalogs,
    CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use base64::Engine as _;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::DataFrame;
use datafusion::scalar::ScalarValue;
use futures_util::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::cancel::{Registered, Runs};
use super::catalog::Browse;
use super::planned::Planned;
use super::prepared::{Owner, Prepared, PreparedStatements};
use super::session::{self, Sources, SqlError, SqlTable};
use crate::lake::books::BookLog;
use crate::query::QueryError;
use crate::query::engine::{QueryEngine, book_schema};
use crate::query::params::Pin;
use crate::runtime::config::FlightConfig;

type DoGet = <K2FlightSql as FlightService>::DoGetStream;
type DoAction = <K2FlightSql as FlightService>::DoActionStream;

/// The Flight RPC action ending a `FlightInfo`'s statements.
const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";

/// A query's parameters take at most this much.
const MAX_PARAMETER_BYTES: usize = 1 << 20;

/// What bounds each statement.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub max_rows: u64,
}

pub struct K2FlightSql {
    engine: Arc<QueryEngine>,
    /// Where books are stored: `book_updates` and `book_snapshots`.
    books: Option<Arc<BookLog>>,
    runtime: Arc<RuntimeEnv>,
    running: Arc<Semaphore>,
    /// The statements running, for cancels.
    runs: Arc<Runs>,
    /// Plans made at `GetFlightInfo`, for its `DoGet`.
    planned: Planned,
    prepared: PreparedStatements,
    limits: Limits,
    /// Whether calls carry one of `http.api_keys`: each key then owns the
    /// prepared statements it opens.
    keyed: bool,
}

/// The `x-k2-*` headers that pin what a statement reads, as given (kept in
/// a statement's ticket, so the read runs under the pin it was planned
/// under).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct StatementTicket {
    /// Makes each `GetFlightInfo`'s ticket its own, so a cancel names one
    /// execution.
    #[serde(default)]
    nonce: String,
    sql: String,
    source: Option<String>,
    as_of: Option<String>,
    as_of_snapshot: Option<String>,
}

impl StatementTicket {
    fn pin(&self) -> Result<Pin, Status> {
        k2_core::query_params::pin(self.source.as_deref(), self.as_of_snapshot.as_deref(), self.as_of.as_deref())
            .map_err(|e| {
                refused(
                    "bad_request",
                    Status::invalid_argument(format!("x-k2-{}: {}", e.parameter.replace('_', "-"), e.reason)),
                )
            })
    }
}

fn header(metadata: &MetadataMap, name: &str) -> Option<String> {
    metadata.get(name).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_owned())
}

/// The pin headers of a call, with `sql`.
fn ticket_of(metadata: &MetadataMap, sql: String) -> StatementTicket {
    StatementTicket {
        nonce: String::new(),
        sql,
        source: header(metadata, "x-k2-source"),
        as_of: header(metadata, "x-k2-as-of"),
        as_of_snapshot: header(metadata, "x-k2-as-of-snapshot"),
    }
}

/// Counts a refusal and passes its status on.
fn refused(reason: &'static str, status: Status) -> Status {
    metrics::counter!("k2_flight_refused_total", "reason" => reason).increment(1);
    status
}

fn sql_status(e: SqlError) -> Status {
    match e {
        e @ SqlError::NotReadOnly(_) => refused("not_read_only", Status::permission_denied(e.to_string())),
        SqlError::Invalid(m) => refused("bad_request", Status::invalid_argument(m)),
        SqlError::Query(QueryError::BadParameter { parameter, reason }) => {
            refused("bad_request", Status::invalid_argument(format!("x-k2-{}: {reason}", parameter.replace('_', "-"))))
        }
        SqlError::Query(QueryError::NoSnapshot { parameter, reason }) => {
            Status::not_found(format!("x-k2-{}: {reason}", parameter.replace('_', "-")))
        }
        SqlError::Query(e @ (QueryError::LogUnavailable(_) | QueryError::Unavailable)) => {
            Status::unavailable(e.to_string())
        }
        SqlError::Query(e) => Status::internal(e.to_string()),
    }
}

/// A failure while a plan runs: memory past the pool is the caller's to
/// fix (a narrower query), so it says which limit.
fn execution_status(e: DataFusionError) -> Status {
    match e.find_root() {
        DataFusionError::ResourcesExhausted(m) => refused(
            "memory",
            Status::resource_exhausted(format!("the statement needs more than flight.memory_limit allows: {m}")),
        ),
        DataFusionError::NotImplemented(_) => Status::unimplemented(e.to_string()),
        // The caller's to fix: a value a cast or a function refuses.
        DataFusionError::Execution(_) | DataFusionError::ArrowError(..) | DataFusionError::Plan(_) => {
            Status::invalid_argument(e.to_string())
        }
        _ => Status::internal(e.to_string()),
    }
}

/// Every call's check, handshake included: with `http.api_keys` set, the
/// call carries one of them.
pub fn authorizer(keys: Arc<Vec<String>>) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        if keys.is_empty() {
            return Ok(request);
        }
        let given = key_of(request.metadata());
        match crate::runtime::auth::check(&keys, given.as_deref()) {
            Ok(()) => Ok(request),
            Err(_) => {
                let why = match given {
                    Some(_) => "the key is not one of http.api_keys",
                    None => "a key is required: `authorization: Bearer <key>`, or the key as the basic-auth password",
                };
                Err(refused("unauthenticated", Status::unauthenticated(why)))
            }
        }
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

fn ipc_schema(schema: &Schema) -> Result<prost::bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default()).try_into().map_err(internal)?;
    Ok(bytes)
}

fn flight_info(schema: &Schema, ticket: Vec<u8>, descriptor: FlightDescriptor) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(internal)?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// The key a call carries: a bearer token, the password of basic
/// authentication (what JDBC and DBeaver send), or `x-api-key` as `/v1`.
fn key_of(metadata: &MetadataMap) -> Option<String> {
    if let Some(value) = header(metadata, "authorization") {
        let (scheme, rest) = value.split_once(' ').unwrap_or((value.as_str(), ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(rest.trim().to_owned());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
            let text = String::from_utf8(decoded).ok()?;
            return text.split_once(':').map(|(_, password)| password.to_owned());
        }
    }
    header(metadata, "x-api-key")
}

/// The statement's parameters, one row of `batches`.
fn parameter_row(batches: &[RecordBatch]) -> Result<Vec<ScalarValue>, Status> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(Vec::new());
    };
    if rows != 1 {
        return Err(refused(
            "bad_request",
            Status::invalid_argument(format!("parameters: bind one row of values to a query, not {rows}")),
        ));
    }
    batch
        .columns()
        .iter()
        .map(|c| ScalarValue::try_from_array(c, 0))
        .collect::<Result<_, _>>()
        .map_err(|e| refused("bad_request", Status::invalid_argument(format!("parameters: {e}"))))
}

/// `$1`, `$2`, ... with the types the plan gives them, in order.
fn parameter_schema(frame: &DataFrame) -> Result<Schema, Status> {
    let types = frame.logical_plan().get_parameter_types().map_err(internal)?;
    let mut named: Vec<(u64, String, DataType)> = types
        .into_iter()
        .map(|(name, ty)| {
            let n = name.trim_start_matches('$').parse().unwrap_or(u64::MAX);
            // A placeholder the plan gives no type takes text, which a
            // client can always bind (a Null-typed one it cannot).
            (n, name, ty.unwrap_or(DataType::Utf8))
        })
        .collect();
    named.sort();
    Ok(Schema::new(named.into_iter().map(|(_, name, ty)| Field::new(name, ty, true)).collect::<Vec<_>>()))
}

impl K2FlightSql {
    pub fn new(
        engine: Arc<QueryEngine>,
        config: &FlightConfig,
        max_concurrent: usize,
    ) -> Result<Self, DataFusionError> {
        use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
        // No spilling: a statement past the pool fails and says so, rather
        // than filling a temporary directory nobody sized for it.
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_limit(config.memory_limit, 1.0)
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
            .build_arc()?;
        Ok(Self {
            engine,
            books: None,
            runtime,
            running: Arc::new(Semaphore::new(max_concurrent.max(1))),
            runs: Arc::default(),
            planned: Planned::new(config.timeout),
            prepared: PreparedStatements::new(config.max_prepared, config.max_prepared_per_key),
            limits: Limits { timeout: config.timeout, max_rows: config.max_rows },
            keyed: false,
        })
    }

    /// Calls carry one of `http.api_keys` (checked before they come here).
    pub fn keyed(mut self, keyed: bool) -> Self {
        self.keyed = keyed;
        self
    }

    /// Who a call's prepared statements belong to: its key.
    fn owner(&self, metadata: &MetadataMap) -> Owner {
        if self.keyed { key_of(metadata) } else { None }
    }

    /// Serves the book tables of `log` beside trades and quotes.
    pub fn with_books(mut self, log: Option<Arc<BookLog>>) -> Self {
        self.books = log;
        self
    }

    /// Plans `sql` in a turn among the running statements, within the time
    /// budget; the turn is held until the statement's stream ends.
    async fn plan(
        &self,
        sql: &str,
        pin: Pin,
        params: Option<&[ScalarValue]>,
        deadline: tokio::time::Instant,
    ) -> Result<(DataFrame, OwnedSemaphorePermit), Status> {
        let turn = self.turn(deadline).await?;
        let budget = self.limits.timeout;
        let planned =
            tokio::time::timeout_at(deadline, session::plan(self.sources(), self.runtime.clone(), sql, pin, params))
                .await
                .map_err(|_| {
                    refused(
                        "timeout",
                        Status::deadline_exceeded(format!("planning ran over flight.timeout ({budget:?})")),
                    )
                })?
                .map_err(sql_status)?;
        Ok((planned, turn))
    }

    /// A turn among the running statements, waited for until `deadline`.
    async fn turn(&self, deadline: tokio::time::Instant) -> Result<OwnedSemaphorePermit, Status> {
        let budget = self.limits.timeout;
        tokio::time::timeout_at(deadline, self.running.clone().acquire_owned())
            .await
            .map_err(|_| {
                refused(
                    "busy",
                    Status::unavailable(format!(
                        "query.max_concurrent statements ran for the whole of flight.timeout ({budget:?})"
                    )),
                )
            })?
            .map_err(|_| Status::unavailable("the Flight SQL service is stopping"))
    }

    /// Runs `sql`, fetched with `ticket`, and streams its batches as
    /// Flight data.
    async fn run(
        &self,
        ticket: &[u8],
        sql: &str,
        pin: Pin,
        params: Option<&[ScalarValue]>,
    ) -> Result<Response<DoGet>, Status> {
        let started = Instant::now();
        let Some(registered) = self.runs.start(ticket) else {
            finished(started, tonic::Code::Cancelled);
            return Err(Status::cancelled("the statement was cancelled (CancelFlightInfo) before it ran"));
        };
        let deadline = tokio::time::Instant::now() + self.limits.timeout;
        let outcome = async {
            // Planned at its GetFlightInfo, unless that plan is gone.
            let (frame, turn) = match self.planned.take(ticket) {
                Some(frame) => (frame, self.turn(deadline).await?),
                None => self.plan(sql, pin, params, deadline).await?,
            };
            let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            let batches = tokio::time::timeout_at(deadline, frame.execute_stream())
                .await
                .map_err(|_| refused("timeout", Status::deadline_exceeded("the statement ran over flight.timeout")))?
                .map_err(execution_status)?;
            Ok::<_, Status>((schema, batches, turn))
        }
        .await;
        let (schema, batches, turn) = match outcome {
            Ok(running) => running,
            Err(status) => {
                finished(started, status.code());
                return Err(status);
            }
        };
        let running = Running { batches, rows: 0, limits: self.limits, deadline, started, registered, _turn: turn };
        // The plan runs in a task of its own, a batch or two ahead of the
        // client: a client that stops reading is not polled by gRPC any
        // more, and the deadline must still end the statement and free its
        // turn.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let failure: Arc<Mutex<Option<Status>>> = Arc::default();
        let failed = failure.clone();
        tokio::spawn(produce(running, tx, failure));
        let flight =
            FlightDataEncoderBuilder::new().with_schema(schema).build(delivered(rx, failed)).map_err(Status::from);
        Ok(Response::new(Box::pin(flight)))
    }

    /// The `FlightInfo` of a statement planned as `frame`, fetched with
    /// `ticket`; the plan is kept for that ticket's `DoGet`.
    fn kept_for(
        &self,
        frame: DataFrame,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = frame.schema().as_arrow().clone();
        self.planned.keep(ticket.clone(), frame);
        flight_info(&schema, ticket, descriptor)
    }

    /// Forgets the plan kept for `ticket`: parameters were bound since, or
    /// no `DoGet` will follow.
    pub(crate) fn forget_plan(&self, ticket: &[u8]) {
        let _ = self.planned.take(ticket);
    }

    fn sources(&self) -> Sources<'_> {
        Sources { engine: &self.engine, books: self.books.as_deref() }
    }

    /// The tables and their schemas, for `GetTables`.
    async fn tables(&self) -> Result<Vec<(&'static str, SchemaRef)>, Status> {
        let mut out = Vec::new();
        for table in SqlTable::all(self.books.is_some()) {
            let schema = match (table, &self.books) {
                (SqlTable::Market(kind), _) => self.engine.table_schema(kind).await,
                (SqlTable::Book(book), Some(log)) => book_schema(&log.table(book)),
                (SqlTable::Book(_), None) => continue,
            };
            out.push((table.name(), schema.map_err(|e| sql_status(SqlError::Query(e)))?));
        }
        Ok(out)
    }

    async fn browse_info<C: Browse + ProstMessageExt>(
        &self,
        command: C,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = command.schema();
        flight_info(&schema, command.as_any().encode_to_vec(), request.into_inner())
    }

    async fn browse<C: Browse>(&self, command: C) -> Result<Response<DoGet>, Status> {
        let schema = command.schema();
        let tables = self.tables().await?;
        let batch = command.rows(&tables).map_err(internal)?;
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures_util::stream::iter([Ok(batch)]))
            .map_err(Status::from);
        Ok(Response::new(Box::pin(flight)))
    }

    fn read_only(&self) -> Status {
        refused("not_read_only", Status::permission_denied("K2's Flight SQL port is read-only: only SELECT is served"))
    }
}

/// A statement's batches on their way out, with its limits.
struct Running {
    batches: SendableRecordBatchStream,
    rows: u64,
    limits: Limits,
    deadline: tokio::time::Instant,
    started: Instant,
    /// Its place among the statements a client can cancel (its signal
    /// fires on a cancel; it leaves when this is dropped).
    registered: Registered,
    _turn: OwnedSemaphorePermit,
}

fn finished(started: Instant, code: tonic::Code) {
    let status = match code {
        tonic::Code::Ok => "ok",
        // ABORTED is what a statement cancelled while running ends with.
        tonic::Code::Cancelled | tonic::Code::Aborted => "cancelled",
        tonic::Code::InvalidArgument
        | tonic::Code::PermissionDenied
        | tonic::Code::ResourceExhausted
        | tonic::Code::Unavailable
        | tonic::Code::DeadlineExceeded
        | tonic::Code::NotFound
        | tonic::Code::Unauthenticated => "refused",
        _ => "error",
    };
    metrics::counter!("k2_flight_statements_total", "status" => status).increment(1);
    metrics::histogram!("k2_flight_statement_seconds").record(started.elapsed().as_secs_f64());
}

/// Runs the plan into `tx` until it ends, fails, passes the row cap or the
/// deadline (a client that stops reading included), or the client goes
/// away; a failure is left in `failure` before `tx` closes. The turn is
/// freed when this returns.
async fn produce(mut r: Running, tx: tokio::sync::mpsc::Sender<RecordBatch>, failure: Arc<Mutex<Option<Status>>>) {
    let timeout = r.limits.timeout;
    let over_time = move || {
        refused(
            "timeout",
            Status::deadline_exceeded(format!("the statement ran over flight.timeout ({timeout:?}) and was cancelled")),
        )
    };
    // ABORTED, not CANCELLED: gRPC's C++ client (pyarrow's) stalls the
    // connection after a server ends a stream it is reading with CANCELLED.
    let cancelled = || Status::aborted("the statement was cancelled by the client (CancelFlightInfo)");
    let outcome = loop {
        let next = tokio::select! {
            biased;
            () = r.registered.cancel.notified() => break Some(cancelled()),
            next = tokio::time::timeout_at(r.deadline, r.batches.next()) => next,
        };
        let batch = match next {
            Ok(None) => break None,
            Ok(Some(Ok(batch))) => batch,
            Ok(Some(Err(e))) => break Some(execution_status(e)),
            Err(_) => break Some(over_time()),
        };
        r.rows += batch.num_rows() as u64;
        if r.rows > r.limits.max_rows {
            break Some(refused(
                "rows",
                Status::resource_exhausted(format!(
                    "the result is over flight.max_rows ({}): add a LIMIT or narrow the query",
                    r.limits.max_rows
                )),
            ));
        }
        let sent = tokio::select! {
            biased;
            () = r.registered.cancel.notified() => break Some(cancelled()),
            sent = tokio::time::timeout_at(r.deadline, tx.send(batch)) => sent,
        };
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                finished(r.started, tonic::Code::Cancelled);
                return;
            }
            Err(_) => break Some(over_time()),
        }
    };
    finished(r.started, outcome.as_ref().map_or(tonic::Code::Ok, |s| s.code()));
    if let Some(status) = outcome {
        *failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(status);
    }
}

/// The batches `produce` sends, then its failure if it left one: a
/// statement cut short never looks complete.
fn delivered(
    rx: tokio::sync::mpsc::Receiver<RecordBatch>,
    failure: Arc<Mutex<Option<Status>>>,
) -> impl Stream<Item = Result<RecordBatch, FlightError>> + Send {
    futures_util::stream::unfold(Some((rx, failure)), |state| async move {
        let (mut rx, failure) = state?;
        match rx.recv().await {
            Some(batch) => Some((Ok(batch), Some((rx, failure)))),
            None => {
                let status = failure.lock().unwrap_or_else(PoisonError::into_inner).take()?;
                Some((Err(FlightError::Tonic(Box::new(status))), None))
            }
        }
    })
}

#[tonic::async_trait]
impl FlightSqlService for K2FlightSql {
    type FlightService = K2FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<<Self as FlightService>::HandshakeStream>, Status> {
        let key = key_of(request.metadata());
        let reply = futures_util::stream::iter([Ok(HandshakeResponse::default())]);
        let mut response: Response<<Self as FlightService>::HandshakeStream> = Response::new(Box::pin(reply));
        // The client sends the token back on every later call.
        if let Some(value) = key.and_then(|k| format!("Bearer {k}").parse().ok()) {
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let mut ticket = ticket_of(request.metadata(), query.query);
        let deadline = tokio::time::Instant::now() + self.limits.timeout;
        let (frame, _turn) = self.plan(&ticket.sql, ticket.pin()?, None, deadline).await?;
        ticket.nonce = uuid::Uuid::new_v4().simple().to_string();
        let handle = serde_json::to_vec(&ticket).map_err(internal)?;
        let ticket = TicketStatementQuery { statement_handle: handle.into() }.as_any().encode_to_vec();
        self.kept_for(frame, ticket, request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGet>, Status> {
        let statement: StatementTicket = serde_json::from_slice(&ticket.statement_handle)
            .map_err(|e| refused("bad_request", Status::invalid_argument(format!("not a K2 statement ticket: {e}"))))?;
        self.run(&request.get_ref().ticket, &statement.sql, statement.pin()?, None).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let ticket = ticket_of(request.metadata(), query.query);
        let pin = ticket.pin()?;
        let deadline = tokio::time::Instant::now() + self.limits.timeout;
        let (frame, _turn) = self.plan(&ticket.sql, pin, None, deadline).await?;
        let dataset_schema = ipc_schema(frame.schema().as_arrow())?;
        let parameter_schema = ipc_schema(&parameter_schema(&frame)?)?;
        let handle =
            self.prepared.open(self.owner(request.metadata()), Prepared { sql: ticket.sql, pin, params: None });
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into(),
            dataset_schema,
            parameter_schema,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let owner = self.owner(request.metadata());
        if self.prepared.get(&owner, &query.prepared_statement_handle).is_none() {
            return Err(not_open());
        }
        let data = request.into_inner().map_err(FlightError::from);
        let mut stream = FlightRecordBatchStream::new_from_flight_data(data);
        let deadline = tokio::time::Instant::now() + self.limits.timeout;
        let (mut batches, mut rows, mut bytes) = (Vec::new(), 0, 0);
        // Read no further than one row of values can need.
        while let Some(batch) = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| refused("timeout", Status::deadline_exceeded("the parameters took over flight.timeout")))?
        {
            let batch = batch.map_err(Status::from)?;
            (rows, bytes) = (rows + batch.num_rows(), bytes + batch.get_array_memory_size());
            if rows > 1 || bytes > MAX_PARAMETER_BYTES {
                return Err(refused(
                    "bad_request",
                    Status::invalid_argument("parameters: bind one row of values to a query, of at most 1 MiB"),
                ));
            }
            batches.push(batch);
        }
        let params = parameter_row(&batches)?;
        if !self.prepared.bind(&owner, &query.prepared_statement_handle, params) {
            return Err(not_open());
        }
        // A plan kept from an earlier GetFlightInfo has the old values.
        self.forget_plan(&query.as_any().encode_to_vec());
        Ok(DoPutPreparedStatementResult { prepared_statement_handle: Some(query.prepared_statement_handle) })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let prepared = self
            .prepared
            .get(&self.owner(request.metadata()), &query.prepared_statement_handle)
            .ok_or_else(not_open)?;
        let deadline = tokio::time::Instant::now() + self.limits.timeout;
        let (frame, _turn) = self.plan(&prepared.sql, prepared.pin, prepared.params.as_deref(), deadline).await?;
        self.kept_for(frame, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGet>, Status> {
        let prepared = self
            .prepared
            .get(&self.owner(request.metadata()), &query.prepared_statement_handle)
            .ok_or_else(not_open)?;
        self.run(&request.get_ref().ticket, &prepared.sql, prepared.pin, prepared.params.as_deref()).await
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.prepared.close(&self.owner(request.metadata()), &query.prepared_statement_handle);
        Ok(())
    }

    async fn do_put_statement_update(
        &self,
        _: CommandStatementUpdate,
        _: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(self.read_only())
    }

    async fn do_put_prepared_statement_update(
        &self,
        _: CommandPreparedStatementUpdate,
        _: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(self.read_only())
    }

    async fn do_put_statement_ingest(
        &self,
        _: CommandStatementIngest,
        _: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(self.read_only())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.browse_info(query, request).await
    }

    async fn do_get_catalogs(&self, query: CommandGetCatalogs, _: Request<Ticket>) -> Result<Response<DoGet>, Status> {
        self.browse(query).await
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.browse_info(query, request).await
    }

    async fn do_get_schemas(&self, query: CommandGetDbSchemas, _: Request<Ticket>) -> Result<Response<DoGet>, Status> {
        self.browse(query).await
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.browse_info(query, request).await
    }

    async fn do_get_tables(&self, query: CommandGetTables, _: Request<Ticket>) -> Result<Response<DoGet>, Status> {
        self.browse(query).await
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.browse_info(query, request).await
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _: Request<Ticket>,
    ) -> Result<Response<DoGet>, Status> {
        self.browse(query).await
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.browse_info(query, request).await
    }

    async fn do_get_sql_info(&self, query: CommandGetSqlInfo, _: Request<Ticket>) -> Result<Response<DoGet>, Status> {
        self.browse(query).await
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.browse_info(query, request).await
    }

    async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        _: Request<Ticket>,
    ) -> Result<Response<DoGet>, Status> {
        self.browse(query).await
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.browse_info(query, request).await
    }

    async fn do_get_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        _: Request<Ticket>,
    ) -> Result<Response<DoGet>, Status> {
        self.browse(query).await
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.browse_info(query, request).await
    }

    async fn do_get_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        _: Request<Ticket>,
    ) -> Result<Response<DoGet>, Status> {
        self.browse(query).await
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.browse_info(query, request).await
    }

    async fn do_get_cross_reference(
        &self,
        query: CommandGetCrossReference,
        _: Request<Ticket>,
    ) -> Result<Response<DoGet>, Status> {
        self.browse(query).await
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.browse_info(query, request).await
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _: Request<Ticket>,
    ) -> Result<Response<DoGet>, Status> {
        self.browse(query).await
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        _: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        // `ActionCancelQueryResult.CancelResult`, which arrow-flight does not
        // export: the same numbers as `CancelStatus`.
        let info = FlightInfo::decode(query.info).map_err(|e| {
            refused("bad_request", Status::invalid_argument(format!("CancelQuery: not a FlightInfo: {e}")))
        })?;
        Ok(ActionCancelQueryResult { result: self.runs.cancel(&info, names_one_execution).into() })
    }

    async fn do_action_fallback(&self, request: Request<Action>) -> Result<Response<DoAction>, Status> {
        let action = request.into_inner();
        if action.r#type != CANCEL_FLIGHT_INFO {
            return Err(Status::invalid_argument(format!("no action {:?} here", action.r#type)));
        }
        let asked = CancelFlightInfoRequest::decode(action.body).map_err(|e| {
            refused("bad_request", Status::invalid_argument(format!("CancelFlightInfo: not a request: {e}")))
        })?;
        let info = asked.info.ok_or_else(|| {
            refused("bad_request", Status::invalid_argument("CancelFlightInfo: the request names no FlightInfo"))
        })?;
        let status = self.runs.cancel(&info, names_one_execution);
        let body = CancelFlightInfoResult { status: status.into() }.encode_to_vec();
        Ok(Response::new(Box::pin(futures_util::stream::iter([Ok(arrow_flight::Result { body: body.into() })]))))
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(vec![Ok(ActionType {
            r#type: CANCEL_FLIGHT_INFO.to_owned(),
            description: "Cancels the statements of a FlightInfo: \n\
                Request Message: CancelFlightInfoRequest\n\
                Response Message: CancelFlightInfoResult"
                .to_owned(),
        })])
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// Whether `ticket` is a statement's (one execution: it carries a nonce),
/// not a prepared statement's handle (run again after a cancel).
fn names_one_execution(ticket: &[u8]) -> bool {
    arrow_flight::sql::Any::decode(ticket).is_ok_and(|any| any.is::<TicketStatementQuery>())
}

fn not_open() -> Status {
    Status::not_found(
        "the prepared statement is not open (closed, opened with another key, or the oldest past \
         flight.max_prepared_per_key or flight.max_prepared)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&'static str, &str)]) -> MetadataMap {
        let mut m = MetadataMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn a_key_is_read_from_bearer_basic_or_x_api_key() {
        assert_eq!(key_of(&metadata(&[("authorization", "Bearer k1")])).as_deref(), Some("k1"));
        let basic = base64::engine::general_purpose::STANDARD.encode("anyone:k2");
        assert_eq!(key_of(&metadata(&[("authorization", &format!("Basic {basic}"))])).as_deref(), Some("k2"));
        assert_eq!(key_of(&metadata(&[("x-api-key", "k3")])).as_deref(), Some("k3"));
        assert_eq!(key_of(&metadata(&[])), None);
    }

    #[test]
    fn pin_headers_are_checked_and_named() {
        let ticket = ticket_of(&metadata(&[("x-k2-as-of", "yesterday")]), "SELECT 1".into());
        let e = ticket.pin().unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with("x-k2-as-of:"), "{}", e.message());
        let ticket = ticket_of(&metadata(&[("x-k2-as-of-snapshot", "12")]), "SELECT 1".into());
        assert_eq!(ticket.pin().unwrap().source, crate::query::params::Source::Historical);
    }

    #[test]
    fn parameters_are_one_row() {
        let batch = |n: i64| {
            RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new("$1", DataType::Int64, false)])),
                vec![Arc::new(arrow::array::Int64Array::from_iter_values(0..n))],
            )
            .unwrap()
        };
        assert_eq!(parameter_row(&[batch(1)]).unwrap(), vec![ScalarValue::Int64(Some(0))]);
        assert_eq!(parameter_row(&[]).unwrap(), vec![]);
        let e = parameter_row(&[batch(2)]).unwrap_err();
        assert!(e.message().contains("one row"), "{}", e.message());
    }
}
