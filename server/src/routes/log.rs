//! The public log over HTTP: the checkpoint and the tiles exactly as the log published them as
//! objects (`log/checkpoint`, `log/tile/...`: with the local store, the files under
//! `<data dir>/log/`, so a static mirror serves the same bytes), plus proofs on demand.

use actix_web::{HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use hattama_core::log::is_tile_path;

use super::parse_hash;
use crate::error::ApiError;
use crate::objects::{ObjectError, ObjectKey};
use crate::startup::AppState;
use crate::storage::StorageError;

/// The bytes of a published object of the log (`key`), or 404.
fn read(state: &AppState, key: Result<ObjectKey, StorageError>) -> Result<Vec<u8>, ApiError> {
    match state.log.objects().get(&key?) {
        Ok(bytes) => Ok(bytes),
        Err(ObjectError::NotFound(_)) => Err(ApiError::not_found("no such log file")),
        Err(e) => Err(StorageError::from(e).into()),
    }
}

/// `GET /log/checkpoint`: the newest signed checkpoint.
pub async fn checkpoint(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let key = ObjectKey::new(crate::log::CHECKPOINT_KEY).map_err(StorageError::from);
    let note = web::block(move || read(&state, key)).await??;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .body(note))
}

/// `GET /log/cosigned-checkpoint`: the newest checkpoint whose witnesses' cosignatures make the
/// quorum of the server's witness policy, with them (404 before the first; `docs/witness.md`).
pub async fn cosigned_checkpoint(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let key = ObjectKey::new(crate::witnessing::COSIGNED_KEY).map_err(StorageError::from);
    let note = web::block(move || read(&state, key)).await??;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .body(note))
}

/// `GET /log/tile/{tail}`: a hash tile or an entry bundle; immutable once published.
pub async fn tile(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let tail = path.into_inner();
    if !is_tile_path(&tail) {
        return Err(ApiError::new(400, "bad_tile_path", "not a tile path"));
    }
    let data = match state.log.cached_tile(&tail) {
        Some(data) => data,
        None => {
            let key = crate::log::tile_key_of(&tail);
            let reader = state.clone();
            let data = web::Bytes::from(web::block(move || read(&reader, key)).await??);
            state.log.cache_tile(tail, data.clone());
            data
        }
    };
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("Cache-Control", "public, max-age=31536000, immutable"))
        .body(data))
}

/// `GET /api/v1/log/key`: the log's origin and verifier key.
pub async fn key(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "origin": state.log.log_key.origin,
        "vkey": state.log.log_key.vkey,
    }))
}

/// `GET /api/v1/log/inclusion/{capture id}`: the capture's proof in the C2SP tlog-proof form.
pub async fn inclusion(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_hash(&path)?;
    let (storage, log) = (state.storage.clone(), state.log.clone());
    let text = web::block(move || -> Result<String, ApiError> {
        let index = storage
            .log_index(&id)?
            .ok_or_else(|| ApiError::not_found("this capture is not in the log"))?;
        if index >= log.published_size() {
            // Perhaps published by another server sharing the storage, a moment ago.
            log.follow()?;
        }
        if index >= log.published_size() {
            return Err(ApiError::not_found("this capture is not in the log"));
        }
        Ok(log.inclusion(index)?.to_text())
    })
    .await??;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(text))
}

/// Query of the consistency proof.
#[derive(Deserialize)]
pub struct ConsistencyQuery {
    from: u64,
}

/// `GET /api/v1/log/consistency?from=N`: proof that the newest checkpoint extends the tree of N.
pub async fn consistency(
    query: web::Query<ConsistencyQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let from = query.from;
    let log = state.log.clone();
    let (proof, note) = web::block(move || log.consistency(from)).await?.map_err(|e| match e {
        crate::storage::StorageError::NotFound(m) => ApiError::new(400, "bad_size", m),
        other => other.into(),
    })?;
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(serde_json::json!({
        "from": from,
        "proof": proof.iter().map(|h| B64.encode(h.0)).collect::<Vec<_>>(),
        "checkpoint": String::from_utf8_lossy(&note),
    })))
}
