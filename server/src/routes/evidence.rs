//! Public evidence by content address: a capture's signed manifest, and photos by their SHA-256.
//! Both are immutable, so they carry long-lived cache headers.

use actix_web::{HttpResponse, web};

use super::parse_hash;
use crate::error::ApiError;
use crate::startup::AppState;

const IMMUTABLE: (&str, &str) = ("Cache-Control", "public, max-age=31536000, immutable");

/// `GET /api/v1/captures/{id}`: `{"manifest": "<canonical manifest>", "signature": "<hex>"}`.
pub async fn capture(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_hash(&path)?;
    let storage = state.storage.clone();
    let (manifest, signature) = web::block(move || storage.evidence(&id))
        .await??
        .ok_or_else(|| ApiError::not_found("no stored capture with this id"))?;
    let manifest = String::from_utf8(manifest).map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok().insert_header(IMMUTABLE).json(serde_json::json!({
        "id": id.to_hex(),
        "manifest": manifest,
        "signature": hex::encode(signature),
    })))
}

/// `GET /photos/{sha256}`: the stored photo bytes.
pub async fn photo(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let sha = parse_hash(&path)?;
    let file = state.storage.photo_path(&sha);
    let bytes = web::block(move || std::fs::read(file)).await?.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ApiError::not_found("no photo with this hash"),
        _ => ApiError::internal(&e),
    })?;
    let media = if bytes.starts_with(b"\x89PNG") { "image/png" } else { "image/jpeg" };
    Ok(HttpResponse::Ok()
        .content_type(media)
        .insert_header(IMMUTABLE)
        .insert_header(("ETag", format!("\"{}\"", sha.to_hex())))
        .body(bytes))
}
