//! HTTP handlers: thin, parse → domain (`ingest`) → storage → response.

pub mod decisions;
pub mod enroll;
pub mod evidence;
pub mod log;
pub mod public;
pub mod receipts;
pub mod tus;

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use hattama_core::evidence::Sha256Hash;

use crate::error::ApiError;

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(get("/health", health))
        .service(get("/healthz", health))
        .service(get("/readyz", crate::metrics::readyz))
        .service(get("/metrics", crate::metrics::metrics))
        .route("/api/v1/enroll", web::post().to(enroll::enroll))
        .route("/api/v1/challenge", web::post().to(decisions::challenge))
        .route("/api/v1/decisions", web::post().to(decisions::decisions))
        .service(get("/api/v1/receipts/key", receipts::key))
        .service(get("/api/v1/receipts/{id}", receipts::get))
        .service(get("/api/v1/log/key", log::key))
        .service(get("/api/v1/log/inclusion/{id}", log::inclusion))
        .service(get("/api/v1/log/consistency", log::consistency))
        .service(get("/api/v1/captures/{id}", evidence::capture))
        .service(get("/photos/{sha256}", evidence::photo))
        .service(get("/photos/{sha256}/thumb", evidence::thumbnail))
        .service(get("/photos/{sha256}/medium", evidence::medium))
        .configure(public::configure)
        .service(get("/log/checkpoint", log::checkpoint))
        .service(get("/log/cosigned-checkpoint", log::cosigned_checkpoint))
        .service(get("/log/tile/{tail:.*}", log::tile))
        .service(
            web::resource("/files/")
                .route(web::method(actix_web::http::Method::OPTIONS).to(tus::options))
                .route(web::post().to(tus::create))
                .default_service(web::to(|req| method_not_allowed(req, "OPTIONS, POST"))),
        )
        .service(
            web::resource("/files/{id}")
                .route(web::head().to(tus::head))
                .route(web::patch().to(tus::patch))
                .route(web::delete().to(tus::delete))
                .default_service(web::to(|req| method_not_allowed(req, "HEAD, PATCH, DELETE"))),
        );
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// The 404 of every unknown route: JSON on the API's paths, the HTML error page elsewhere.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, actix_web::Error> {
    if crate::web::is_api_path(req.path()) {
        Err(ApiError::not_found(format!("no route for {} {}", req.method(), req.path())).into())
    } else {
        Err(crate::web::WebError::NotFound.into())
    }
}

/// A resource answering GET (and HEAD) with `handler`, and 405 to any other method.
pub fn get<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .default_service(web::to(|req| method_not_allowed(req, "GET, HEAD")))
}

/// The JSON 405 for a known path with another method, with the `Allow` header.
pub async fn method_not_allowed(
    req: HttpRequest,
    allow: &'static str,
) -> Result<HttpResponse, ApiError> {
    let mut e = ApiError::new(
        405,
        "method_not_allowed",
        format!("{} is not allowed on {}; allowed: {allow}", req.method(), req.path()),
    );
    e.allow = Some(allow);
    Err(e)
}

/// Parses a 64-hex-digit id from a path segment.
pub fn parse_hash(s: &str) -> Result<Sha256Hash, ApiError> {
    Sha256Hash::from_hex(s).ok_or_else(|| ApiError::bad_id("the id"))
}

/// Reads a request body up to `limit` bytes, refusing more with 413.
pub async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::new(400, "bad_body", e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(413, "body_too_large", format!("at most {limit} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
