//! `GET /api/v1/receipts/{id}`: a stored capture's receipt, with its place in the public log.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use hattama_core::log::TlogProof;
use hattama_core::receipt::{ReceiptLog, SignedReceipt};

use hattama_core::evidence::Sha256Hash;

use super::parse_hash;
use crate::error::ApiError;
use crate::log::Log;
use crate::startup::AppState;
use crate::storage::{Committed, Storage};

/// How long a receipt request waits for the capture to enter a published checkpoint.
const LOG_WAIT: Duration = Duration::from_secs(10);

/// `GET /api/v1/receipts/key`: the server's receipt public key, the key that signs receipts
/// and review decisions (`docs/receipts.md`, "The receipt key").
pub async fn key(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "public, no-cache"))
        .json(serde_json::json!({ "server_key": state.keys.receipt_public().to_hex() }))
}

/// Answers the receipt once the capture is stored and logged; 404 while it is not stored,
/// 503 (retry) while it is stored but not yet in a published checkpoint.
pub async fn get(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_hash(&path)?;
    super::tus::finish_if_complete(&state, id).await?;
    let (storage, log) = (state.storage.clone(), state.log.clone());
    let body = web::block(move || with_log(&*storage, &log, &id)).await??.ok_or_else(|| {
        let mut e = ApiError::new(503, "not_logged_yet", "the capture is not in the log yet");
        e.retry_after = Some(1);
        e
    })?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Cache-Control", "no-store"))
        .body(body))
}

/// A stored capture's receipt with its place in the log (entry and inclusion proof in the
/// newest published checkpoint), waiting up to `LOG_WAIT` for it to be logged; `None` if it
/// is not logged by then, 404 if it is not stored. Blocking.
pub fn with_log(
    storage: &dyn Storage,
    log: &Log,
    id: &Sha256Hash,
) -> Result<Option<Vec<u8>>, ApiError> {
    let receipt = storage
        .receipt(id)?
        .ok_or_else(|| ApiError::not_found("no stored capture with this id"))?;
    let Some(log_index) = storage.log_index(id)? else { return Ok(None) };
    logged(storage, log, id, Committed { receipt, log_index, log_entry: None })
}

/// [`with_log`] for a capture just committed, whose receipt and log position the caller holds.
pub fn logged(
    storage: &dyn Storage,
    log: &Log,
    id: &Sha256Hash,
    committed: Committed,
) -> Result<Option<Vec<u8>>, ApiError> {
    let Committed { receipt, log_index: index, log_entry } = committed;
    if !log.wait_published(index, LOG_WAIT)? {
        return Ok(None);
    }
    let signed = complete(storage, log, id, &receipt, index, log_entry)?;
    serde_json::to_vec(&signed).map(Some).map_err(|e| ApiError::internal(&e))
}

/// [`logged`] for async code: the wait for the checkpoint holds no thread, and the inclusion
/// proof of a capture just committed comes from the hashes the log keeps in memory, without a
/// blocking call; only if one is not kept is the receipt completed on the blocking pool.
pub async fn logged_async(
    state: &AppState,
    id: Sha256Hash,
    committed: Committed,
) -> Result<Option<Vec<u8>>, ApiError> {
    let Committed { receipt, log_index: index, log_entry } = committed;
    if !state.log.published_within(index, LOG_WAIT).await {
        return Ok(None);
    }
    if let Some(entry) = &log_entry
        && let Some(proof) = state.log.inclusion_kept(index)?
    {
        let signed = with_proof(&id, &receipt, index, entry, proof)?;
        return serde_json::to_vec(&signed).map(Some).map_err(|e| ApiError::internal(&e));
    }
    let (storage, log) = (state.storage.clone(), state.log.clone());
    web::block(move || {
        let signed = complete(&*storage, &log, &id, &receipt, index, log_entry)?;
        serde_json::to_vec(&signed).map(Some).map_err(|e| ApiError::internal(&e))
    })
    .await?
}

/// The stored receipt `receipt` of capture `id` with its place in the log (entry and inclusion
/// proof in the newest published checkpoint) when `index` is in it, else the receipt alone:
/// what `GET /api/v1/receipts/{id}` answers, the `receipt` of `evidence.jsonl` and the receipt
/// files of evidence packages. Blocking.
pub fn complete(
    storage: &dyn Storage,
    log: &Log,
    id: &Sha256Hash,
    receipt: &[u8],
    index: u64,
    log_entry: Option<Vec<u8>>,
) -> Result<SignedReceipt, ApiError> {
    if index >= log.published_size() {
        return parse(id, receipt);
    }
    let entry = match log_entry {
        Some(entry) => entry,
        None => storage
            .log_entries(index, index + 1)?
            .pop()
            .ok_or_else(|| ApiError::not_found("log entry"))?,
    };
    let proof = log.inclusion(index)?;
    with_proof(id, receipt, index, &entry, proof)
}

/// The stored receipt `receipt` of capture `id`, read back.
fn parse(id: &Sha256Hash, receipt: &[u8]) -> Result<SignedReceipt, ApiError> {
    let signed: SignedReceipt =
        serde_json::from_slice(receipt).map_err(|e| ApiError::internal(&e))?;
    if signed.receipt.capture_id != *id {
        return Err(ApiError::internal(&std::io::Error::other("a receipt of another capture")));
    }
    Ok(signed)
}

/// The stored receipt `receipt` of capture `id` with its log entry at `index` and the entry's
/// inclusion proof.
fn with_proof(
    id: &Sha256Hash,
    receipt: &[u8],
    index: u64,
    entry: &[u8],
    proof: TlogProof,
) -> Result<SignedReceipt, ApiError> {
    let mut signed = parse(id, receipt)?;
    signed.log = Some(ReceiptLog {
        index,
        entry: String::from_utf8(entry.to_vec()).map_err(|e| ApiError::internal(&e))?,
        proof: proof.to_text(),
    });
    Ok(signed)
}
