//! HTTP resources that answer a method they do not serve with 405 and an
//! `Allow` header (actix's plain `route` answers 404, which tells a client
//! the path does not exist), and HEAD wherever GET is served.

use actix_web::dev::Handler;
use actix_web::http::header;
use actix_web::{FromRequest, HttpResponse, Resource, Responder, web};

/// A resource at `path` answering 405 with `Allow: allow` to other methods;
/// add its routes with [`get`] or `.route(...)`.
pub fn resource(path: &str, allow: &'static str) -> Resource {
    web::resource(path).default_service(web::to(move || async move {
        HttpResponse::MethodNotAllowed()
            .insert_header((header::ALLOW, allow))
            .json(serde_json::json!({"error": format!("method not allowed here; allowed: {allow}")}))
    }))
}

/// Serves `handler` for GET and for HEAD (the same answer, without its body).
pub fn get<F, Args>(resource: Resource, handler: F) -> Resource
where
    F: Handler<Args> + Clone,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    resource.route(web::get().to(handler.clone())).route(web::head().to(handler))
}
