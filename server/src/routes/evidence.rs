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
    let bytes = web::block(move || -> Result<Vec<u8>, ApiError> {
        if let Some(bytes) = thumbs.cached(&sha, kind) {
            return Ok(bytes);
        }
        let manifest = gallery
            .manifest_of_photo(&sha)?
            .ok_or_else(|| ApiError::not_found("no photo with this hash"))?;
        let original =
            storage.photo(&sha)?.ok_or_else(|| ApiError::not_found("no photo with this hash"))?;
        let p = &manifest.photo;
        // A rendition is never a bigger file than the photo itself: a photo already upright and
        // within the rendition's size is served as it is, without a decode; so is one whose
        // re-encoding came out no smaller. (A photo to be turned upright is always re-encoded:
        // its stripped bytes carry no orientation a browser would apply.)
        let upright = p.orientation == 1;
        if upright && p.width.max(p.height) <= kind.side() {
            return Ok(original);
        }
        let reduced = thumbs.make(&original, p.media_type, p.orientation, kind)?;
        let kept = if upright && reduced.len() >= original.len() { original } else { reduced };
        thumbs.store(&sha, kind, &kept).map_err(|e| ApiError::internal(&e))?;
        Ok(kept)
    })
    .await??;
    let media = if bytes.starts_with(b"\x89PNG") { "image/png" } else { "image/jpeg" };
    Ok(HttpResponse::Ok()
        .content_type(media)
        .insert_header(IMMUTABLE)
        .insert_header(("ETag", format!("\"{}-{}\"", sha.to_hex(), kind.name())))
        .body(bytes))
}
