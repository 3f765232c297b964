//! The Confluent Schema Registry REST API (the subset clients use), served
//! on K2's HTTP port. Bodies are read whatever their content type, since
//! clients send `application/vnd.schemaregistry.v1+json`.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use k2_core::registry_wire::{config_body, schema_body, schema_id};

use super::store::{Registry, RegistryError};

use crate::runtime::resource::{get, resource};

const GET: &str = "GET, HEAD";
const GET_POST: &str = "GET, HEAD, POST";
const GET_PUT: &str = "GET, HEAD, PUT";

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The keys a write needs (`http.api_keys`; none: writes are open).
struct WriteKeys(Arc<Vec<String>>);

/// Registers the registry's routes. Reads are open; writes (registering a
/// schema, setting a compatibility level) need an API key whenever keys
/// are configured: an outsider could otherwise register a schema under a
/// topic's subject first, or set a level that refuses K2's own schema.
pub fn configure(cfg: &mut web::ServiceConfig, registry: Arc<Registry>, keys: Arc<Vec<String>>) {
    cfg.app_data(web::Data::from(registry))
        .app_data(web::Data::new(WriteKeys(keys)))
        .service(get(resource("/subjects", GET), subjects))
        .service(resource("/subjects/{subject}", "POST").route(web::post().to(lookup)))
        .service(get(resource("/subjects/{subject}/versions", GET_POST), versions).route(web::post().to(register)))
        .service(get(resource("/subjects/{subject}/versions/{version}", GET), version))
        .service(get(resource("/subjects/{subject}/versions/{version}/schema", GET), version_schema))
        .service(get(resource("/schemas/ids/{id}", GET), schema_by_id))
        .service(get(resource("/schemas/ids/{id}/versions", GET), schema_uses))
        .service(
            resource("/compatibility/subjects/{subject}/versions/{version}", "POST")
                .route(web::post().to(compatibility)),
        )
        .service(get(resource("/config", GET_PUT), get_config).route(web::put().to(put_config)))
        .service(
            get(resource("/config/{subject}", GET_PUT), get_subject_config).route(web::put().to(put_subject_config)),
        );
}

/// A 401 in Confluent's error shape, unless the request carries an
/// accepted key (or none is needed).
fn refused(req: &HttpRequest) -> Option<HttpResponse> {
    let keys = req.app_data::<web::Data<WriteKeys>>()?;
    let given = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
    let why = crate::runtime::auth::check(&keys.0, given).err()?;
    Some(
        HttpResponse::Unauthorized()
            .content_type(CONTENT_TYPE)
            .body(serde_json::json!({"error_code": 40101, "message": why}).to_string()),
    )
}

fn ok(body: serde_json::Value) -> HttpResponse {
    HttpResponse::Ok().content_type(CONTENT_TYPE).body(body.to_string())
}

fn error(e: RegistryError) -> HttpResponse {
    let code = e.code();
    let status = StatusCode::from_u16((code / if code >= 10_000 { 100 } else { 1 }) as u16)
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::error!(error = %e, "schema registry");
    }
    HttpResponse::build(status)
        .content_type(CONTENT_TYPE)
        .body(serde_json::json!({"error_code": code, "message": e.to_string()}).to_string())
}

fn reply<T>(result: Result<T, RegistryError>, body: impl FnOnce(T) -> serde_json::Value) -> HttpResponse {
    match result {
        Ok(v) => ok(body(v)),
        Err(e) => error(e),
    }
}

async fn subjects(registry: web::Data<Registry>) -> HttpResponse {
    reply(registry.subjects().await, |s| serde_json::json!(s))
}

async fn versions(registry: web::Data<Registry>, subject: web::Path<String>) -> HttpResponse {
    reply(registry.versions(&subject).await, |v| serde_json::json!(v))
}

async fn register(
    req: HttpRequest,
    registry: web::Data<Registry>,
    subject: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    if let Some(refused) = refused(&req) {
        return refused;
    }
    let result = match schema_body(&body) {
        Ok(schema) => registry.register(&subject, &schema).await,
        Err(e) => Err(e.into()),
    };
    reply(result, |id| serde_json::json!({"id": id}))
}

async fn lookup(registry: web::Data<Registry>, subject: web::Path<String>, body: web::Bytes) -> HttpResponse {
    let result = match schema_body(&body) {
        Ok(schema) => registry.lookup(&subject, &schema).await,
        Err(e) => Err(e.into()),
    };
    reply(result, |v| serde_json::json!(v))
}

async fn version(registry: web::Data<Registry>, path: web::Path<(String, String)>) -> HttpResponse {
    let (subject, version) = path.into_inner();
    reply(registry.version(&subject, &version).await, |v| serde_json::json!(v))
}

async fn version_schema(registry: web::Data<Registry>, path: web::Path<(String, String)>) -> HttpResponse {
    let (subject, version) = path.into_inner();
    match registry.version(&subject, &version).await {
        Ok(v) => HttpResponse::Ok().content_type(CONTENT_TYPE).body(v.schema),
        Err(e) => error(e),
    }
}

async fn schema_by_id(registry: web::Data<Registry>, id: web::Path<String>) -> HttpResponse {
    let result = match schema_id(&id) {
        Ok(id) => registry.schema_by_id(id).await,
        Err(e) => Err(e.into()),
    };
    reply(result, |schema| serde_json::json!({"schema": schema}))
}

async fn schema_uses(registry: web::Data<Registry>, id: web::Path<String>) -> HttpResponse {
    let result = match schema_id(&id) {
        Ok(id) => registry.uses_of(id).await,
        Err(e) => Err(e.into()),
    };
    reply(result, |uses| {
        serde_json::json!(
            uses.into_iter().map(|(s, v)| serde_json::json!({"subject": s, "version": v})).collect::<Vec<_>>()
        )
    })
}

async fn compatibility(
    registry: web::Data<Registry>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    let (subject, version) = path.into_inner();
    let result = match schema_body(&body) {
        Ok(schema) => registry.is_compatible(&subject, &version, &schema).await,
        Err(e) => Err(e.into()),
    };
    reply(result, |ok| serde_json::json!({"is_compatible": ok}))
}

async fn get_config(registry: web::Data<Registry>) -> HttpResponse {
    reply(registry.compatibility(None).await, |c| serde_json::json!({"compatibilityLevel": c.as_str()}))
}

async fn put_config(req: HttpRequest, registry: web::Data<Registry>, body: web::Bytes) -> HttpResponse {
    if let Some(refused) = refused(&req) {
        return refused;
    }
    let result = match config_body(&body) {
        Ok(level) => registry.set_compatibility(None, level).await.map(|()| level),
        Err(e) => Err(e.into()),
    };
    reply(result, |c| serde_json::json!({"compatibility": c.as_str()}))
}

async fn get_subject_config(registry: web::Data<Registry>, subject: web::Path<String>) -> HttpResponse {
    reply(registry.compatibility(Some(&subject)).await, |c| serde_json::json!({"compatibilityLevel": c.as_str()}))
}

async fn put_subject_config(
    req: HttpRequest,
    registry: web::Data<Registry>,
    subject: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    if let Some(refused) = refused(&req) {
        return refused;
    }
    let result = match config_body(&body) {
        Ok(level) => registry.set_compatibility(Some(&subject), level).await.map(|()| level),
        Err(e) => Err(e.into()),
    };
    reply(result, |c| serde_json::json!({"compatibility": c.as_str()}))
}
