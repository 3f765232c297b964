//! The simulator's REST side: `GET /api/v3/historicalTrades` as Binance
//! answers it, and `GET /sim/stats` with the exact fault counts.

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
            .route("/sim/stats", web::get().to(sim_stats))
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

async fn sim_stats(stats: web::Data<Arc<SimStats>>) -> HttpResponse {
    HttpResponse::Ok().json(stats.snapshot())
}
