//! The `/v1` HTTP API over the query handler actor, and its OpenAPI
//! description (`/openapi.json`).

use std::sync::Arc;

use actix::Addr;
use actix_web::dev::Payload;
use actix_web::error::InternalError;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use futures_util::future::{Ready, ready};

use super::engine::{QueryEngine, Rows};
use super::format::{self, Format};
use super::params::{BarsQuery, DeadLettersQuery, ReadQuery, SnapshotsQuery, SummaryQuery, SymbolsQuery, pin};
use super::{Answer, Query, QueryActor, QueryError, RunQuery};
use crate::lake::TableKind;
use crate::runtime::resource::{get, resource};

const GET: &str = "GET, HEAD";
use crate::state::dead_letters::{DeadLetters, Status};

/// What the `/v1` handlers need.
#[derive(Clone)]
pub struct Api {
    pub query: Addr<QueryActor>,
    pub engine: Arc<QueryEngine>,
    /// Empty: no key needed.
    pub keys: Arc<Vec<String>>,
    /// The built-in schema registry, served at the root like Confluent's.
    pub registry: Arc<crate::registry::Registry>,
    /// Input a stage failed on or a source refused, kept to be replayed.
    pub dead_letters: DeadLetters,
    /// The maintenance actor, for `POST /admin/maintain`.
    pub maintenance: Option<actix::Recipient<crate::lake::maintenance::actor::RunNow>>,
    /// The order-book actors, for `/v1/book/{symbol}`.
    pub books: crate::state::books::BookDirectory,
    /// The stored books, for `/v1/book/{symbol}?at=` (`book.store`).
    pub book_log: Option<std::sync::Arc<crate::lake::books::BookLog>>,
    /// Replay streams open, here and on the replay port.
    pub replay: super::replay::gate::ReplayGate,
    /// The stored books the replay streams read (`None`: books not stored).
    pub replay_books: Option<super::replay::depth::DepthBooks>,
}

/// Registers `/v1/*` and the schema registry's routes.
pub fn configure(cfg: &mut web::ServiceConfig, api: Api) {
    crate::registry::routes::configure(cfg, api.registry.clone(), api.keys.clone());
    cfg.app_data(web::Data::new(api))
        .app_data(web::QueryConfig::default().error_handler(|err, _| {
            let text = err.to_string();
            // serde names the offending field between backticks.
            let parameter = text.split('`').nth(1).unwrap_or("query").to_owned();
            let body = serde_json::json!({"error": text, "parameter": parameter});
            InternalError::from_response(err, HttpResponse::BadRequest().json(body)).into()
        }))
        .service(
            web::scope("/v1")
                .service(get(resource("/trades", GET), trades))
                .service(get(resource("/quotes", GET), quotes))
                .service(get(resource("/summary/{symbol}/{date}", GET), summary))
                .service(get(resource("/bars", GET), bars))
                .service(get(resource("/symbols", GET), symbols))
                .service(get(resource("/book/{symbol}", GET), book))
                .service(get(resource("/book/{symbol}/top", GET), book_top))
                .service(get(resource("/snapshots", GET), snapshots))
                .service(get(resource("/dead-letters", GET), dead_letters))
                .service(resource("/replay", "GET").route(web::get().to(replay))),
        );
}

/// A request that carries an accepted `X-API-Key` (or needs none).
pub struct Authorized;

impl FromRequest for Authorized {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(api) = req.app_data::<web::Data<Api>>() else { return ready(Ok(Authorized)) };
        let given = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
        match crate::runtime::auth::check(&api.keys, given) {
            Ok(()) => ready(Ok(Authorized)),
            Err(why) => {
                let resp = HttpResponse::Unauthorized().json(serde_json::json!({"error": why}));
                ready(Err(InternalError::from_response(why, resp).into()))
            }
        }
    }
}

/// `GET /v1/replay`: the replay stream (`replay/endpoint.rs`).
async fn replay(_: Authorized, req: HttpRequest, body: web::Payload, api: web::Data<Api>) -> HttpResponse {
    super::replay::endpoint::replay(&req, body, api.engine.clone(), api.replay_books.clone(), &api.replay)
}

fn error_response(e: QueryError) -> HttpResponse {
    let (status, parameter) = match &e {
        QueryError::BadParameter { parameter, .. } => (StatusCode::BAD_REQUEST, Some(*parameter)),
        QueryError::NoSnapshot { parameter, .. } => (StatusCode::NOT_FOUND, Some(*parameter)),
        QueryError::Timeout(_) | QueryError::Unavailable | QueryError::LogUnavailable(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, None)
        }
        QueryError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, None),
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %e, "query failed");
    }
    let mut body = serde_json::json!({"error": e.to_string()});
    if let Some(p) = parameter {
        body["parameter"] = p.into();
    }
    HttpResponse::build(status).json(body)
}

async fn run(api: &Api, query: Query) -> Result<Answer, QueryError> {
    api.query.send(RunQuery(query)).await.map_err(|_| QueryError::Unavailable)?
}

/// The format `Accept` asks for; `None` when it accepts none that rows
/// are served in (a header that is not text accepts nothing).
fn accept(req: &HttpRequest) -> Option<Format> {
    match req.headers().get("accept").map(|v| v.to_str()) {
        Some(Err(_)) => None,
        Some(Ok(text)) => Format::from_accept(Some(text)),
        None => Format::from_accept(None),
    }
}

fn not_acceptable() -> HttpResponse {
    HttpResponse::NotAcceptable().json(serde_json::json!({
        "error": "Accept names no type served here: application/json, text/csv or application/vnd.apache.arrow.stream",
    }))
}

fn rows_response(format: Format, rows: Rows) -> HttpResponse {
    let mut resp = HttpResponse::Ok();
    resp.content_type(format.content_type()).insert_header(("X-K2-Source", rows.source.as_str()));
    if let Some(id) = rows.snapshot_id {
        resp.insert_header(("X-K2-Snapshot-Id", id.to_string()));
    }
    if let Some(c) = &rows.next_cursor {
        resp.insert_header(("X-K2-Next-Cursor", c.as_str()));
    }
    let body = match format {
        Format::Json => {
            let n: usize = rows.batches.iter().map(|b| b.num_rows()).sum();
            let mut out = String::with_capacity(256 + n * 200);
            out.push_str("{\"data\":");
            format::json_rows(&mut out, &rows.schema, &rows.batches);
            out.push_str(&format!(
                ",\"count\":{n},\"next_cursor\":{},\"source\":\"{}\",\"snapshot_id\":{}}}",
                serde_json::to_string(&rows.next_cursor).unwrap_or_else(|_| "null".into()),
                rows.source.as_str(),
                rows.snapshot_id.map_or("null".to_owned(), |i| i.to_string()),
            ));
            Ok(out.into_bytes())
        }
        Format::Csv => format::csv(&rows.schema, &rows.batches),
        Format::Arrow => format::arrow_stream(&rows.schema, &rows.batches),
    };
    match body {
        Ok(b) => resp.body(b),
        Err(e) => error_response(QueryError::Internal(e)),
    }
}

async fn read(req: HttpRequest, api: web::Data<Api>, kind: TableKind, q: ReadQuery) -> HttpResponse {
    let Some(format) = accept(&req) else { return not_acceptable() };
    let params = match q.check() {
        Ok(p) => p,
        Err(e) => return error_response(e.into()),
    };
    match run(&api, Query::Read(kind, params)).await {
        Ok(Answer::Rows(rows)) => rows_response(format, rows),
        Ok(_) => error_response(QueryError::Internal("unexpected answer".into())),
        Err(e) => error_response(e),
    }
}

/// Trades, ordered by (timestamp, message_id), one page.
pub async fn trades(req: HttpRequest, _: Authorized, api: web::Data<Api>, q: web::Query<ReadQuery>) -> HttpResponse {
    read(req, api, TableKind::Trades, q.into_inner()).await
}

/// Quotes (best bid and ask), ordered by (timestamp, message_id), one page.
pub async fn quotes(req: HttpRequest, _: Authorized, api: web::Data<Api>, q: web::Query<ReadQuery>) -> HttpResponse {
    read(req, api, TableKind::Quotes, q.into_inner()).await
}

/// Open, high, low, close, volume, VWAP and trade count of one trading date
/// in the exchange's time zone.
pub async fn summary(
    _: Authorized,
    api: web::Data<Api>,
    path: web::Path<(String, String)>,
    q: web::Query<SummaryQuery>,
) -> HttpResponse {
    let (symbol, date) = path.into_inner();
    let params = match q.into_inner().check(symbol, &date) {
        Ok(p) => p,
        Err(e) => return error_response(e.into()),
    };
    let source = params.pin.source;
    match run(&api, Query::Summary(params)).await {
        Ok(Answer::Summary(s, snapshot_id)) => HttpResponse::Ok().json(serde_json::json!({
            "data": s, "source": source.as_str(), "snapshot_id": snapshot_id,
        })),
        Ok(_) => error_response(QueryError::Internal("unexpected answer".into())),
        Err(e) => error_response(e),
    }
}

/// OHLCV bars.
pub async fn bars(req: HttpRequest, _: Authorized, api: web::Data<Api>, q: web::Query<BarsQuery>) -> HttpResponse {
    let Some(format) = accept(&req) else { return not_acceptable() };
    let params = match q.into_inner().check() {
        Ok(p) => p,
        Err(e) => return error_response(e.into()),
    };
    match run(&api, Query::Bars(params)).await {
        Ok(Answer::Rows(rows)) => rows_response(format, rows),
        Ok(_) => error_response(QueryError::Internal("unexpected answer".into())),
        Err(e) => error_response(e),
    }
}

/// Every (exchange, symbol) with its trade and quote counts and time range.
pub async fn symbols(
    req: HttpRequest,
    _: Authorized,
    api: web::Data<Api>,
    q: web::Query<SymbolsQuery>,
) -> HttpResponse {
    let Some(format) = accept(&req) else { return not_acceptable() };
    let q = q.into_inner();
    let pin = match pin(q.source.as_deref(), q.as_of_snapshot.as_deref(), q.as_of.as_deref()) {
        Ok(p) => p,
        Err(e) => return error_response(e.into()),
    };
    match run(&api, Query::Symbols(pin)).await {
        Ok(Answer::Rows(rows)) => rows_response(format, rows),
        Ok(_) => error_response(QueryError::Internal("unexpected answer".into())),
        Err(e) => error_response(e),
    }
}

/// A live order book (see `book.rs`).
pub async fn book(
    req: HttpRequest,
    _: Authorized,
    api: web::Data<Api>,
    symbol: web::Path<String>,
    q: web::Query<super::book::BookQuery>,
) -> HttpResponse {
    super::book::answer(accept(&req), &api.books, api.book_log.as_ref(), symbol, q).await
}

/// A stored book's top over time (see `book.rs`).
pub async fn book_top(
    req: HttpRequest,
    _: Authorized,
    api: web::Data<Api>,
    symbol: web::Path<String>,
    q: web::Query<k2_core::query_params::BookTopQuery>,
) -> HttpResponse {
    super::book::top_answer(accept(&req), &api.books, api.book_log.as_ref(), symbol, q.into_inner()).await
}

/// A table's snapshots: id, time, rows added and the summary (flush
/// generation and source sequence marks included).
pub async fn snapshots(_: Authorized, api: web::Data<Api>, q: web::Query<SnapshotsQuery>) -> HttpResponse {
    let kind = match q.table.as_deref() {
        None | Some("trades") => TableKind::Trades,
        Some("quotes") => TableKind::Quotes,
        Some(other) => {
            return error_response(QueryError::BadParameter {
                parameter: "table",
                reason: format!("must be trades or quotes, got {other:?}"),
            });
        }
    };
    HttpResponse::Ok().json(serde_json::json!({"table": kind.name(), "data": api.engine.snapshots(kind).await}))
}

/// Dead letters, oldest first: batches a stage failed on and frames a
/// source refused, each with its reason, its raw input (events or the
/// frame) and whether it has been replayed (`k2 dead-letters replay`).
pub async fn dead_letters(_: Authorized, api: web::Data<Api>, q: web::Query<DeadLettersQuery>) -> HttpResponse {
    let status = match q.status.as_deref() {
        None | Some("pending") => Status::Pending,
        Some("replayed") => Status::Replayed,
        Some("all") => Status::All,
        Some(other) => {
            return error_response(QueryError::BadParameter {
                parameter: "status",
                reason: format!("must be pending, replayed or all, got {other:?}"),
            });
        }
    };
    let limit = match q.limit {
        None => 100,
        Some(n @ 1..=1000) => n as usize,
        Some(n) => {
            return error_response(QueryError::BadParameter {
                parameter: "limit",
                reason: format!("must be 1 to 1000, got {n}"),
            });
        }
    };
    let (store, after) = (api.dead_letters.clone(), q.after.unwrap_or(0));
    let listed = tokio::task::spawn_blocking(move || store.list(status, after, limit)).await;
    match listed {
        Ok(Ok((letters, pending))) => HttpResponse::Ok().json(serde_json::json!({
            "status": match status { Status::Pending => "pending", Status::Replayed => "replayed", Status::All => "all" },
            "pending": pending,
            "data": letters,
        })),
        Ok(Err(e)) => error_response(QueryError::Internal(e.to_string())),
        Err(e) => error_response(QueryError::Internal(e.to_string())),
    }
}
