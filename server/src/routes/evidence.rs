//! Public evidence by content address: a capture's signed manifest, and photos by their SHA-256.
//! Both are immutable, so they carry long-lived cache headers.

use actix_web::{HttpResponse, web};

use super::parse_hash;
use crate::error::ApiError;
use crate::startup::AppState;
use crate::thumbs::Rendition;

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
    let bytes = match state.gallery.photos.get(&sha) {
        Some(bytes) => bytes,
        None => {
            let storage = state.storage.clone();
            let bytes = web::block(move || storage.photo(&sha))
                .await??
                .ok_or_else(|| ApiError::not_found("no photo with this hash"))?;
            let bytes = actix_web::web::Bytes::from(bytes);
            state.gallery.photos.put(sha, bytes.clone());
            bytes
        }
    };
    let media = if bytes.starts_with(b"\x89PNG") { "image/png" } else { "image/jpeg" };
    Ok(HttpResponse::Ok()
        .content_type(media)
        .insert_header(IMMUTABLE)
        .insert_header(("ETag", format!("\"{}\"", sha.to_hex())))
        .body(bytes))
}

/// `GET /photos/{sha256}/thumb`: a reduced JPEG (at most 320 pixels a side, upright) of a stored
/// photo, for galleries. Not evidence: the evidence is the photo itself. Made on its first request
/// (or at upload, with `limits.thumbnail_at_upload`) within the server's decode slots and kept
/// under `<data dir>/thumbs/`, immutable like the photo.
pub async fn thumbnail(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    rendition(path, state, Rendition::Thumb).await
}

/// `GET /photos/{sha256}/medium`: the medium rendition (at most 1280 pixels a side, upright),
/// made by the same code as the thumbnail, kept under `<data dir>/medium/`; the photo itself
/// when it is already upright and no larger (never a bigger file than the original).
pub async fn medium(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    rendition(path, state, Rendition::Medium).await
}

async fn rendition(
    path: web::Path<String>,
    state: web::Data<AppState>,
    kind: Rendition,
) -> Result<HttpResponse, ApiError> {
    let sha = parse_hash(&path)?;
    let storage = state.storage.clone();
    let (gallery, thumbs) = (state.gallery.clone(), state.thumbs.clone());
    let bytes = web::block(move || {
        thumbs.rendition(&sha, kind, || {
            let manifest = gallery
                .manifest_of_photo(&sha)?
                .ok_or_else(|| ApiError::not_found("no photo with this hash"))?;
            let original = storage
                .photo(&sha)?
                .ok_or_else(|| ApiError::not_found("no photo with this hash"))?;
            Ok((original, manifest.photo))
        })
    })
    .await??;
    let media = if bytes.starts_with(b"\x89PNG") { "image/png" } else { "image/jpeg" };
    Ok(HttpResponse::Ok()
        .content_type(media)
        .insert_header(IMMUTABLE)
        .insert_header(("ETag", format!("\"{}-{}\"", sha.to_hex(), kind.name())))
        .body(bytes))
}
