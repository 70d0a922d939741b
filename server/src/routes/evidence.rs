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

/// A derived, reduced JPEG of a stored photo. Not evidence: the evidence is the photo itself.
#[derive(Clone, Copy)]
enum Rendition {
    /// At most 320 pixels a side, for lists and galleries.
    Thumb,
    /// At most 1280 pixels a side: readable on a phone, a fraction of the original's bytes.
    Medium,
}

impl Rendition {
    /// The directory under the data directory, and the ETag suffix.
    fn name(self) -> &'static str {
        match self {
            Rendition::Thumb => "thumbs",
            Rendition::Medium => "medium",
        }
    }
}

/// `GET /photos/{sha256}/thumb`: a reduced JPEG (at most 320 pixels a side, upright) of a stored
/// photo, for galleries. Not evidence: the evidence is the photo itself. Made once, kept under
/// `<data dir>/thumbs/`, immutable like the photo.
pub async fn thumbnail(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    rendition(path, state, Rendition::Thumb).await
}

/// `GET /photos/{sha256}/medium`: the medium rendition (at most 1280 pixels a side, upright),
/// made by the same code as the thumbnail, kept under `<data dir>/medium/`.
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
    let dir = state.settings.data_dir.join(kind.name());
    let (gallery, limits) = (state.gallery.clone(), state.media_limits);
    let bytes = web::block(move || -> Result<Vec<u8>, ApiError> {
        let file = dir.join(format!("{}.jpg", sha.to_hex()));
        if let Ok(bytes) = std::fs::read(&file) {
            return Ok(bytes);
        }
        let manifest = gallery
            .manifest_of_photo(&sha)?
            .ok_or_else(|| ApiError::not_found("no photo with this hash"))?;
        let original =
            storage.photo(&sha)?.ok_or_else(|| ApiError::not_found("no photo with this hash"))?;
        let make = match kind {
            Rendition::Thumb => hattama_core::thumbnail::make,
            Rendition::Medium => hattama_core::thumbnail::make_medium,
        };
        let reduced =
            make(&original, manifest.photo.media_type, manifest.photo.orientation, &limits)
                .map_err(|e| ApiError::internal(&std::io::Error::other(e)))?;
        // Written whole under a temporary name, then renamed: a reader never sees half a file.
        std::fs::create_dir_all(&dir).map_err(|e| ApiError::internal(&e))?;
        let tmp = dir.join(format!("{}.{:016x}.tmp", sha.to_hex(), rand::random::<u64>()));
        std::fs::write(&tmp, &reduced)
            .and_then(|()| std::fs::rename(&tmp, &file))
            .map_err(|e| ApiError::internal(&e))?;
        Ok(reduced)
    })
    .await??;
    Ok(HttpResponse::Ok()
        .content_type("image/jpeg")
        .insert_header(IMMUTABLE)
        .insert_header(("ETag", format!("\"{}-{}\"", sha.to_hex(), kind.name())))
        .body(bytes))
}
