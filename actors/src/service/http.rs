//! The HTTP server: `/health`, `/metrics`, the `/v1` query API with
//! `/openapi.json` (see [`crate::query::routes`]), and (when enabled, loopback
//! only) `/admin/faults` for fault-injection drills and `/admin/maintain`
//! for a maintenance round now.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use actix::Recipient;
use actix_web::dev::ServerHandle;
use actix_web::dev::Service as _;
use actix_web::{App, HttpResponse, HttpServer, web};
use serde::{Deserialize, Serialize};

use crate::lake::pressure::{Effect, Pressure};
use crate::query::routes::Api;
use crate::runtime::health::{ActorReport, HealthRegistry};
use crate::runtime::messages::Fault;
use crate::runtime::resource::{get, resource};
use crate::service::limits::{Connection, Connections, InFlight, Limits, check_connection, check_uri, within};

#[derive(Clone)]
pub(crate) struct State {
    registry: HealthRegistry,
    faults: BTreeMap<&'static str, Recipient<Fault>>,
    admin: bool,
    pressure: Option<Arc<Pressure>>,
}

#[derive(Serialize)]
struct Health {
    /// "ok" when every actor runs, "degraded" while one restarts, "failed"
    /// once one has exhausted its restarts.
    status: &'static str,
    actors: BTreeMap<&'static str, ActorReport>,
    /// Each dependency's circuit breaker.
    breakers: BTreeMap<&'static str, crate::runtime::breaker::BreakerState>,
    /// Why a breaker was tripped open by an error no retry can fix (a
    /// refused write, a missing bucket), while it is not closed.
    breaker_causes: BTreeMap<&'static str, String>,
    /// The degradation ladder's level and why (absent without a controller).
    #[serde(skip_serializing_if = "Option::is_none")]
    degradation: Option<crate::runtime::health::Degradation>,
    /// Rows the degradation ladder has shed since start, by
    /// `LEVEL/SYMBOL/kind` (absent while nothing was).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    shed: BTreeMap<String, u64>,
}

/// A running HTTP server.
pub struct HttpHandle {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
}

/// Binds and starts the server on the current actix system, with the
/// default [`Limits`]. With `api`, the `/v1` query API and `/openapi.json`
/// are served too.
pub fn start(
    bind: SocketAddr,
    registry: HealthRegistry,
    faults: BTreeMap<&'static str, Recipient<Fault>>,
    admin: bool,
    api: Option<Api>,
    pressure: Option<Arc<Pressure>>,
) -> std::io::Result<HttpHandle> {
    start_with(bind, registry, faults, admin, api, pressure, Limits::default())
}

/// As [`start`], with these limits.
pub fn start_with(
    bind: SocketAddr,
    registry: HealthRegistry,
    faults: BTreeMap<&'static str, Recipient<Fault>>,
    admin: bool,
    api: Option<Api>,
    pressure: Option<Arc<Pressure>>,
    limits: Limits,
) -> std::io::Result<HttpHandle> {
    crate::runtime::telemetry::prometheus();
    crate::service::limits::make_room_for(limits.connections);
    let state = State { registry, faults, admin, pressure };
    let in_flight = InFlight::default();
    let connections = Connections::default();
    // Queries run on the runtime's worker threads, not on these: two HTTP
    // workers keep parsing and answering while scans run.
    let workers = if api.is_some() { 2 } else { 1 };
    let server = HttpServer::new(move || {
        let in_flight = in_flight.clone();
        let app = App::new()
            .wrap_fn(move |req, srv| {
                let admitted = check_uri(req.uri(), limits.max_uri)
                    .and_then(|()| check_connection(req.conn_data::<Connection>(), limits.connections_per_client))
                    .and_then(|()| in_flight.enter(req.peer_addr(), limits.per_client));
                let call = admitted.is_ok().then(|| srv.call(req));
                async move {
                    let _slot = admitted?;
                    match call {
                        Some(call) => within(limits.request_timeout, call).await,
                        None => Err(actix_web::error::ErrorTooManyRequests("refused")),
                    }
                }
            })
            .app_data(web::Data::new(state.clone()))
            .service(get(resource("/health", "GET, HEAD"), health))
            .service(get(resource("/metrics", "GET, HEAD"), metrics))
            .service(resource("/admin/faults", "POST").route(web::post().to(inject_fault)))
            .service(resource("/admin/pressure", "POST").route(web::post().to(apply_pressure)));
        match api.clone() {
            Some(api) => app
                .service(get(resource("/openapi.json", "GET, HEAD"), openapi))
                .service(resource("/admin/maintain", "POST").route(web::post().to(run_maintenance)))
                .configure(|cfg| crate::query::routes::configure(cfg, api)),
            None => app,
        }
    })
    .on_connect(move |conn, extensions| {
        let peer = conn.downcast_ref::<actix_web::rt::net::TcpStream>().and_then(|tcp| tcp.peer_addr().ok());
        extensions.insert(connections.open(peer, limits.connections_per_client));
    })
    .workers(workers)
    .max_connections(limits.connections.div_ceil(workers))
    .disable_signals()
    .bind(bind)?;
    let addr = server.addrs().first().copied().unwrap_or(bind);
    let server = server.run();
    let handle = server.handle();
    actix::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(HttpHandle { addr, handle })
}

/// Every actor's state, restarts, mailbox depth and last error, and every
/// dependency's circuit breaker ("degraded" while one is not closed).
pub(crate) async fn health(state: web::Data<State>) -> HttpResponse {
    let actors = state.registry.report();
    let breakers = state.registry.breakers();
    let breaker_causes = state.registry.breaker_causes();
    let degradation = state.registry.degradation();
    let shed = state.registry.shed();
    use crate::runtime::health::ActorState::*;
    let status = if actors.values().any(|a| a.state == Failed) {
        "failed"
    } else if actors.values().any(|a| matches!(a.state, Restarting | Starting | Stopped))
        || breakers.values().any(|b| *b != crate::runtime::breaker::BreakerState::Closed)
        || degradation.as_ref().is_some_and(|d| d.level > 0)
    {
        "degraded"
    } else {
        "ok"
    };
    let body = Health { status, actors, breakers, breaker_causes, degradation, shed };
    if status == "failed" { HttpResponse::ServiceUnavailable().json(body) } else { HttpResponse::Ok().json(body) }
}

/// Prometheus metrics.
pub(crate) async fn metrics() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(crate::runtime::telemetry::render())
}

#[derive(Deserialize)]
struct FaultQuery {
    actor: String,
    kind: Fault,
}

async fn inject_fault(state: web::Data<State>, query: web::Query<FaultQuery>) -> HttpResponse {
    if !state.admin {
        return HttpResponse::NotFound().json(serde_json::json!({"error": "admin endpoints are off (http.admin)"}));
    }
    match state.faults.get(query.actor.as_str()) {
        Some(to) => match to.try_send(query.kind) {
            Ok(()) => HttpResponse::Accepted().json(serde_json::json!({"actor": query.actor, "fault": query.kind})),
            Err(e) => HttpResponse::ServiceUnavailable().json(serde_json::json!({"error": e.to_string()})),
        },
        None => HttpResponse::BadRequest().json(serde_json::json!({
            "error": "unknown actor",
            "parameter": "actor",
            "known": state.faults.keys().collect::<Vec<_>>(),
        })),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PressureQuery {
    /// `delay` or `fail`.
    effect: String,
    /// For `delay`: how long each commit waits.
    #[serde(default)]
    millis: u64,
    /// How long the pressure lasts (0 clears it).
    seconds: u64,
}

/// Delays or fails Iceberg commits for a while: the degradation ladder's
/// drill. Loopback callers only, and only with `http.admin`.
async fn apply_pressure(
    state: web::Data<State>,
    req: actix_web::HttpRequest,
    query: web::Query<PressureQuery>,
) -> HttpResponse {
    let loopback = req.peer_addr().is_some_and(|a| a.ip().is_loopback());
    let Some(pressure) = state.pressure.as_ref().filter(|_| state.admin && loopback) else {
        return HttpResponse::NotFound()
            .json(serde_json::json!({"error": "admin endpoints are off (http.admin, loopback only)"}));
    };
    let effect = match query.effect.as_str() {
        "delay" => Effect::Delay { millis: query.millis },
        "fail" => Effect::Fail,
        _ => {
            return HttpResponse::BadRequest()
                .json(serde_json::json!({"error": "effect must be delay or fail", "parameter": "effect"}));
        }
    };
    pressure.apply(effect, std::time::Duration::from_secs(query.seconds));
    HttpResponse::Accepted().json(serde_json::json!({"effect": effect, "seconds": query.seconds}))
}

/// Runs a maintenance round now and answers with what it did.
async fn run_maintenance(state: web::Data<State>, api: web::Data<Api>, req: actix_web::HttpRequest) -> HttpResponse {
    let loopback = req.peer_addr().is_some_and(|a| a.ip().is_loopback());
    let Some(maintenance) = api.maintenance.as_ref().filter(|_| state.admin && loopback) else {
        return HttpResponse::NotFound()
            .json(serde_json::json!({"error": "admin endpoints are off (http.admin, loopback only)"}));
    };
    let (done, answer) = tokio::sync::oneshot::channel();
    let unavailable =
        || HttpResponse::ServiceUnavailable().json(serde_json::json!({"error": "the maintenance actor is restarting"}));
    if maintenance.send(crate::lake::maintenance::actor::RunNow { done }).await.is_err() {
        return unavailable();
    }
    match answer.await {
        Ok(Ok(reports)) => HttpResponse::Ok().json(serde_json::json!({ "tables": reports })),
        Ok(Err(error)) => HttpResponse::Conflict().json(serde_json::json!({ "error": error })),
        Err(_) => unavailable(),
    }
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(super::openapi::document())
}
