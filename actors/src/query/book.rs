//! `GET /v1/book/{symbol}`'s answer (its route is in `routes.rs`): a live
//! order book as its order-book actor holds it now, to `depth` levels per
//! side, with the update id it reflects and whether it is synced. Books are
//! not stored yet, so there is no `at`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use compact_str::CompactString;
use serde::Deserialize;

use super::format::Format;
use crate::state::books::{BookDirectory, BookView, GetBook};

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
    symbol: web::Path<String>,
    q: web::Query<BookQuery>,
) -> HttpResponse {
    let format = match format {
        Some(f @ (Format::Json | Format::Csv)) => f,
        _ => {
            return HttpResponse::NotAcceptable()
                .json(serde_json::json!({"error": "a book is served as application/json or text/csv"}));
        }
    };
    let depth = match q.depth.as_deref().map(str::parse::<usize>) {
        None => DEFAULT_DEPTH,
        Some(Ok(n)) if (1..=MAX_DEPTH).contains(&n) => n,
        Some(_) => {
            return refuse(StatusCode::BAD_REQUEST, "depth", format!("must be a whole number from 1 to {MAX_DEPTH}"));
        }
    };
    if q.at.is_some() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "at",
            "books are not stored yet: only the live book is served (leave out `at`)".into(),
        );
    }
    let exchange = k2_core::source::binance::EXCHANGE;
    if let Some(e) = q.exchange.as_deref()
        && !e.eq_ignore_ascii_case(exchange)
    {
        return refuse(StatusCode::NOT_FOUND, "exchange", format!("no order books are kept for exchange {e:?}"));
    }
    let symbol = CompactString::from(symbol.into_inner().to_ascii_uppercase());
    let Some(actor) = books.find(&symbol) else {
        let why = if books.is_empty() {
            "order books are off (book.enabled = false)".to_owned()
        } else {
            format!("no order book is kept for {symbol:?} (binance.symbols names the symbols)")
        };
        return refuse(StatusCode::NOT_FOUND, "symbol", why);
    };
    match actor.send(GetBook { symbol: symbol.clone(), depth }).await {
        Ok(Some(view)) => match format {
            Format::Csv => HttpResponse::Ok().content_type(format.content_type()).body(csv(&view)),
            _ => HttpResponse::Ok().json(view),
        },
        Ok(None) => refuse(StatusCode::NOT_FOUND, "symbol", format!("no order book is kept for {symbol:?}")),
        Err(_) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"error": "the order-book actor is restarting; try again"})),
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
