//! The simulator's REST side: `GET /api/v3/historicalTrades` and
//! `GET /api/v3/depth` as Binance answers them, `GET /sim/stats` with the
//! exact fault counts and `GET /sim/book` with a symbol's whole true book.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{App, HttpResponse, HttpServer, web};
use serde::Deserialize;

use super::market::Market;
use super::{SimStats, bump};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoricalQuery {
    symbol: String,
    from_id: Option<u64>,
    limit: Option<usize>,
}

pub(super) fn start(
    bind: SocketAddr,
    market: Arc<Market>,
    stats: Arc<SimStats>,
) -> std::io::Result<(SocketAddr, actix_web::dev::ServerHandle)> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(market.clone()))
            .app_data(web::Data::new(stats.clone()))
            .route("/api/v3/historicalTrades", web::get().to(historical))
            .route("/api/v3/depth", web::get().to(depth))
            .route("/sim/stats", web::get().to(sim_stats))
            .route("/sim/book", web::get().to(true_book))
    })
    .workers(1)
    .disable_signals()
    .bind(bind)?;
    let addr = server.addrs().first().copied().unwrap_or(bind);
    let server = server.run();
    let handle = server.handle();
    actix::spawn(async move {
        let _ = server.await;
    });
    Ok((addr, handle))
}

async fn historical(
    market: web::Data<Arc<Market>>,
    stats: web::Data<Arc<SimStats>>,
    q: web::Query<HistoricalQuery>,
) -> HttpResponse {
    bump(&stats.rest_requests);
    let limit = q.limit.unwrap_or(500).clamp(1, 1000);
    match market.historical(&q.symbol.to_ascii_uppercase(), q.from_id.unwrap_or(0), limit) {
        Some(trades) => HttpResponse::Ok().json(trades),
        None => HttpResponse::BadRequest().json(serde_json::json!({"code": -1121, "msg": "Invalid symbol."})),
    }
}

#[derive(Deserialize)]
struct DepthQuery {
    symbol: String,
    limit: Option<String>,
}

fn invalid_symbol() -> HttpResponse {
    HttpResponse::BadRequest().json(serde_json::json!({"code": -1121, "msg": "Invalid symbol."}))
}

/// Binance's depth limits: 1 to 5,000 levels per side, 100 when not given.
async fn depth(market: web::Data<Arc<Market>>, q: web::Query<DepthQuery>) -> HttpResponse {
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) if (1..=5000).contains(&n) => n,
        Some(_) => {
            return HttpResponse::BadRequest()
                .json(serde_json::json!({"code": -1100, "msg": "Illegal characters found in parameter 'limit'."}));
        }
    };
    match market.depth(&q.symbol.to_ascii_uppercase(), limit) {
        Some((body, _)) => HttpResponse::Ok().json(body),
        None => invalid_symbol(),
    }
}

#[derive(Deserialize)]
struct BookQuery {
    symbol: String,
    update_id: Option<u64>,
}

/// The whole true book, now or at a recent `update_id` (404 when that is
/// not one the simulator still holds).
async fn true_book(market: web::Data<Arc<Market>>, q: web::Query<BookQuery>) -> HttpResponse {
    match market.true_book(&q.symbol.to_ascii_uppercase(), q.update_id) {
        Some(body) => HttpResponse::Ok().json(body),
        None if q.update_id.is_some() => {
            HttpResponse::NotFound().json(serde_json::json!({"msg": "update id not held"}))
        }
        None => invalid_symbol(),
    }
}

async fn sim_stats(stats: web::Data<Arc<SimStats>>) -> HttpResponse {
    HttpResponse::Ok().json(stats.snapshot())
}
