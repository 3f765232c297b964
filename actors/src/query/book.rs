//! `GET /v1/book/{symbol}`'s answer (its route is in `routes.rs`): a live
//! order book as its order-book actor holds it now, or with `at` as K2
//! held it at that instant (rebuilt from the book tables and the records
//! not committed yet, see `lake::books`), to `depth` levels per side, with
//! the update id it reflects and whether it was synced.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use compact_str::CompactString;
use serde::Deserialize;

use super::format::Format;
use crate::lake::books::BookLog;
use crate::state::books::{BookDirectory, BookView, GetBook, known_cause};

/// Levels per side when `depth` is not given, and at most.
const DEFAULT_DEPTH: usize = 100;
const MAX_DEPTH: usize = 5000;

#[derive(Debug, Deserialize)]
pub struct BookQuery {
    depth: Option<String>,
    exchange: Option<String>,
    at: Option<String>,
}

fn refuse(status: StatusCode, parameter: &str, error: String) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({"error": error, "parameter": parameter}))
}

/// The answer in `format`, the one `Accept` asked for (`None`: none served).
pub async fn answer(
    format: Option<Format>,
    books: &BookDirectory,
    log: Option<&std::sync::Arc<BookLog>>,
    symbol: web::Path<String>,
    q: web::Query<BookQuery>,
) -> HttpResponse {
    let format = match format {
        Some(f) => f,
        None => {
            return HttpResponse::NotAcceptable().json(serde_json::json!({
                "error": "a book is served as application/json, text/csv or application/vnd.apache.arrow.stream"
            }));
        }
    };
    let depth = match q.depth.as_deref().map(str::parse::<usize>) {
        None => DEFAULT_DEPTH,
        Some(Ok(n)) if (1..=MAX_DEPTH).contains(&n) => n,
        Some(_) => {
            return refuse(StatusCode::BAD_REQUEST, "depth", format!("must be a whole number from 1 to {MAX_DEPTH}"));
        }
    };
    let at = match q.at.as_deref().map(|t| k2_core::query_params::parse_time("at", t)) {
        None => None,
        Some(Ok(us)) if us <= k2_core::Timestamp::now().as_micros() => Some(k2_core::Timestamp::from_micros(us)),
        Some(Ok(_)) => {
            return refuse(StatusCode::NOT_FOUND, "at", "is in the future: no book is known there yet".into());
        }
        Some(Err(e)) => return refuse(StatusCode::BAD_REQUEST, e.parameter, e.reason),
    };
    let exchange = k2_core::source::binance::EXCHANGE;
    if let Some(e) = q.exchange.as_deref()
        && !e.eq_ignore_ascii_case(exchange)
    {
        return refuse(StatusCode::NOT_FOUND, "exchange", format!("no order books are kept for exchange {e:?}"));
    }
    let symbol = CompactString::from(symbol.into_inner().to_ascii_uppercase());
    if let Some(at) = at {
        let Some(log) = log else {
            return refuse(
                StatusCode::NOT_FOUND,
                "at",
                "books are not stored here (book.enabled and book.store, in embedded mode): only the live book is served"
                    .into(),
            );
        };
        return stored(format, log, exchange, &symbol, at, depth, books.find(&symbol).is_some()).await;
    }
    let Some(actor) = books.find(&symbol) else {
        let why = if books.is_empty() {
            "order books are off (book.enabled = false)".to_owned()
        } else {
            format!("no order book is kept for {symbol:?} (binance.symbols names the symbols)")
        };
        return refuse(StatusCode::NOT_FOUND, "symbol", why);
    };
    match actor.send(GetBook { symbol: symbol.clone(), depth }).await {
        Ok(Some(view)) => respond(format, &view),
        Ok(None) => refuse(StatusCode::NOT_FOUND, "symbol", format!("no order book is kept for {symbol:?}")),
        Err(_) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"error": "the order-book actor is restarting; try again"})),
    }
}

/// `symbol`'s book as K2 held it at `at`, from the tables and the tail.
async fn stored(
    format: Format,
    log: &BookLog,
    exchange: &'static str,
    symbol: &CompactString,
    at: k2_core::Timestamp,
    depth: usize,
    kept_now: bool,
) -> HttpResponse {
    let replayed = match log.book_at(exchange, symbol, at).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, %symbol, "a stored book could not be read");
            return HttpResponse::ServiceUnavailable()
                .json(serde_json::json!({"error": format!("the book tables could not be read: {e}")}));
        }
    };
    if replayed.recorded_at.is_none() && !kept_now {
        return refuse(
            StatusCode::NOT_FOUND,
            "symbol",
            format!("no order book of {symbol:?} is stored at or before that instant"),
        );
    }
    let mut view = BookView::of(exchange, symbol.clone(), replayed.book.as_ref(), depth);
    view.unsynced_cause = replayed.unsynced_cause.as_deref().map(known_cause);
    view.event_time_us = replayed.event_time.map(k2_core::Timestamp::as_micros);
    view.recorded_at_us = replayed.recorded_at.map(k2_core::Timestamp::as_micros);
    respond(format, &view)
}

fn respond(format: Format, view: &BookView) -> HttpResponse {
    match format {
        Format::Csv => HttpResponse::Ok().content_type(format.content_type()).body(csv(view)),
        Format::Arrow => arrow_body(format, super::book_arrow::levels(view)),
        Format::Json => HttpResponse::Ok().json(view),
    }
}

/// An Arrow IPC stream, or a 500 naming what could not be encoded.
fn arrow_body(format: Format, encoded: Result<Vec<u8>, String>) -> HttpResponse {
    match encoded {
        Ok(body) => HttpResponse::Ok().content_type(format.content_type()).body(body),
        Err(e) => HttpResponse::InternalServerError().json(serde_json::json!({"error": e})),
    }
}

/// One row per level: side, level number from the top, price, quantity,
/// with the book's update id and sync state on every row.
fn csv(view: &BookView) -> String {
    let mut out = String::from("exchange,symbol,update_id,synced,side,level,price,quantity\n");
    let id = view.update_id.map(|i| i.to_string()).unwrap_or_default();
    for (side, levels) in [("bid", &view.bids), ("ask", &view.asks)] {
        for (i, [price, quantity]) in levels.iter().enumerate() {
            out.push_str(&format!(
                "{},{},{id},{},{side},{},{price},{quantity}\n",
                view.exchange,
                view.symbol,
                view.synced,
                i + 1
            ));
        }
    }
    out
}

/// `GET /v1/book/{symbol}/top`: the best bid and ask, the spread and the
/// depth over `levels` levels per side, as K2 held the book at `start`,
/// `start + interval`, ... up to `end` (one replay of the stored records
/// over the range, sampled as it goes).
pub async fn top_answer(
    format: Option<Format>,
    books: &BookDirectory,
    log: Option<&std::sync::Arc<BookLog>>,
    symbol: web::Path<String>,
    q: k2_core::query_params::BookTopQuery,
) -> HttpResponse {
    let format = match format {
        Some(f) => f,
        None => {
            return HttpResponse::NotAcceptable().json(serde_json::json!({
                "error": "a book's top is served as application/json, text/csv or application/vnd.apache.arrow.stream"
            }));
        }
    };
    let p = match q.check(k2_core::Timestamp::now().as_micros()) {
        Ok(p) => p,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.parameter, e.reason),
    };
    let exchange = k2_core::source::binance::EXCHANGE;
    if let Some(e) = p.exchange.as_deref()
        && !e.eq_ignore_ascii_case(exchange)
    {
        return refuse(StatusCode::NOT_FOUND, "exchange", format!("no order books are kept for exchange {e:?}"));
    }
    let symbol = CompactString::from(symbol.into_inner().to_ascii_uppercase());
    let Some(log) = log else {
        return refuse(
            StatusCode::NOT_FOUND,
            "symbol",
            "books are not stored here (book.enabled and book.store, in embedded mode)".into(),
        );
    };
    let (start, end) = (k2_core::Timestamp::from_micros(p.start), k2_core::Timestamp::from_micros(p.end));
    let points = match log.tops(exchange, &symbol, (start, end, p.interval_us), p.levels).await {
        Ok(points) => points,
        Err(e) => {
            tracing::warn!(error = %e, %symbol, "a stored book could not be read");
            return HttpResponse::ServiceUnavailable()
                .json(serde_json::json!({"error": format!("the book tables could not be read: {e}")}));
        }
    };
    if points.iter().all(|t| t.update_id.is_none() && t.unsynced_cause.as_deref() == Some("start"))
        && books.find(&symbol).is_none()
    {
        return refuse(StatusCode::NOT_FOUND, "symbol", format!("no order book of {symbol:?} is stored in that range"));
    }
    let rows: Vec<serde_json::Value> = points.iter().map(top_row).collect();
    match format {
        Format::Csv => {
            let mut out = String::from(
                "exchange,symbol,time_us,synced,unsynced_cause,update_id,best_bid,best_bid_quantity,best_ask,best_ask_quantity,spread,bid_depth,bid_levels,ask_depth,ask_levels\n",
            );
            let text = |v: &serde_json::Value| match v {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            for r in &rows {
                let cells = [
                    "time_us",
                    "synced",
                    "unsynced_cause",
                    "update_id",
                    "best_bid",
                    "best_bid_quantity",
                    "best_ask",
                    "best_ask_quantity",
                    "spread",
                    "bid_depth",
                    "bid_levels",
                    "ask_depth",
                    "ask_levels",
                ]
                .map(|k| text(&r[k]));
                out.push_str(&format!("{exchange},{symbol},{}\n", cells.join(",")));
            }
            HttpResponse::Ok().content_type(format.content_type()).body(out)
        }
        Format::Arrow => arrow_body(format, super::book_arrow::tops(exchange, &symbol, &points)),
        Format::Json => HttpResponse::Ok().json(serde_json::json!({
            "exchange": exchange,
            "symbol": symbol,
            "interval_us": p.interval_us,
            "levels": p.levels,
            "data": rows,
        })),
    }
}

fn top_row(t: &crate::lake::books::TopPoint) -> serde_json::Value {
    let text = |d: rust_decimal::Decimal| d.to_string();
    let synced = t.update_id.is_some();
    serde_json::json!({
        "time_us": t.at.as_micros(),
        "synced": synced,
        "unsynced_cause": t.unsynced_cause.as_deref().map(known_cause),
        "update_id": t.update_id,
        "best_bid": t.best_bid.map(|l| text(l.0)),
        "best_bid_quantity": t.best_bid.map(|l| text(l.1)),
        "best_ask": t.best_ask.map(|l| text(l.0)),
        "best_ask_quantity": t.best_ask.map(|l| text(l.1)),
        "spread": t.best_bid.zip(t.best_ask).map(|(b, a)| text(a.0 - b.0)),
        "bid_depth": synced.then(|| text(t.bid_depth.0)),
        "bid_levels": t.bid_depth.1,
        "ask_depth": synced.then(|| text(t.ask_depth.0)),
        "ask_levels": t.ask_depth.1,
    })
}
