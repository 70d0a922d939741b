//! tus 1.0.0 (core, creation, checksum `sha256`, termination) for photo bytes; see
//! `docs/sync-protocol.md`. The upload URL is the capture id, so every retry of the same capture
//! lands on the same upload and a capture is stored once. It carries the upload's token
//! ([`upload_token`]), which only the creation answers: an upload is bound to whoever holds its
//! signed manifest, and nobody else can read its offset, write into it or discard it.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use hattama_core::evidence::{Sha256Hash, SignedManifest, parse_lower_hex};
use hattama_core::tus::{TusHeaderError, parse_checksum_value, parse_metadata};
use sha2::{Digest, Sha256};

use super::parse_hash;
use crate::error::ApiError;
use crate::ingest;
use crate::startup::AppState;
use crate::storage::SMALL_PHOTO_BYTES;

const TUS_VERSION: &str = "1.0.0";

/// One lock per upload, so PATCH requests for the same upload run one at a time. A new PATCH
/// asks an older one still waiting on a dead connection to stop (`generation`), then takes over.
#[derive(Default)]
pub struct UploadSlots {
    slots: Mutex<HashMap<Sha256Hash, Arc<Slot>>>,
}

#[derive(Default)]
struct Slot {
    lock: tokio::sync::Mutex<()>,
    generation: AtomicU64,
    preempt: tokio::sync::Notify,
}

impl Slot {
    /// Tells an older request that may still wait on a dead connection to let go of the
    /// upload; returns this request's generation.
    fn preempt_others(&self) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.preempt.notify_waiters();
        generation
    }

    /// Takes the upload over from any older request ([`Slot::preempt_others`]) and then its
    /// lock, waiting at most 10 s (else `423` with `Retry-After`). Returns the lock and this
    /// request's generation, for [`next_chunk`].
    async fn take_over(&self) -> Result<(tokio::sync::MutexGuard<'_, ()>, u64), ApiError> {
        let generation = self.preempt_others();
        let Ok(guard) = tokio::time::timeout(Duration::from_secs(10), self.lock.lock()).await
        else {
            let mut e = ApiError::new(423, "upload_busy", "another request is writing this upload");
            e.retry_after = Some(1);
            return Err(e);
        };
        Ok((guard, generation))
    }
}

impl UploadSlots {
    fn get(&self, id: &Sha256Hash) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() > 10_000 {
            slots.retain(|_, s| Arc::strong_count(s) > 1);
        }
        slots.entry(*id).or_default().clone()
    }
}

/// The token of an upload, a keyed hash of its capture id: the same for every creation of the
/// same upload, given only in the creation's `Location`, which only the holder of the signed
/// manifest gets (the creation verifies the signature before anything else).
pub fn upload_token(keys: &crate::keys::ServerKeys, id: &Sha256Hash) -> String {
    let mut h = Sha256::new();
    h.update(b"hattama/upload-token/v1\n");
    h.update(keys.upload_tokens);
    h.update(id.0);
    hex::encode(&h.finalize()[..16])
}

/// The upload's URL with its token, as the creation answers it.
fn location(state: &AppState, id: &Sha256Hash) -> String {
    format!("/files/{id}?token={}", upload_token(&state.keys, id))
}

/// Refuses a request on an upload without its token, as if the upload did not exist.
fn check_token(req: &HttpRequest, state: &AppState, id: &Sha256Hash) -> Result<(), ApiError> {
    let given = req.query_string().split('&').find_map(|kv| kv.strip_prefix("token="));
    let expected = upload_token(&state.keys, id);
    let same = given.is_some_and(|g| {
        g.len() == expected.len()
            && g.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    if same {
        Ok(())
    } else {
        Err(ApiError::not_found(
            "no such upload: use the URL (with its token) that the creation answered",
        ))
    }
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn check_tus(req: &HttpRequest) -> Result<(), ApiError> {
    if header(req, "Tus-Resumable") != Some(TUS_VERSION) {
        let mut e = ApiError::new(412, "tus_version", "Tus-Resumable: 1.0.0 is required");
        e.retry_after = None;
        return Err(e);
    }
    Ok(())
}

fn tus_response(status: actix_web::http::StatusCode) -> actix_web::HttpResponseBuilder {
    let mut r = HttpResponse::build(status);
    r.insert_header(("Tus-Resumable", TUS_VERSION)).insert_header(("Cache-Control", "no-store"));
    r
}

/// `OPTIONS /files/`: discovery.
pub async fn options(state: web::Data<AppState>) -> HttpResponse {
    tus_response(actix_web::http::StatusCode::NO_CONTENT)
        .insert_header(("Tus-Version", TUS_VERSION))
        .insert_header(("Tus-Extension", "creation,creation-with-upload,checksum,termination"))
        .insert_header(("Tus-Checksum-Algorithm", "sha256"))
        .insert_header(("Tus-Max-Size", state.settings.limits.max_photo_bytes.to_string()))
        .finish()
}

/// The answer to a malformed tus header: a 400 with a stable code.
impl From<TusHeaderError> for ApiError {
    fn from(e: TusHeaderError) -> Self {
        let code = match e {
            TusHeaderError::Metadata => "bad_metadata",
            TusHeaderError::ChecksumAlgorithm => "checksum_algorithm",
            TusHeaderError::ChecksumNotBase64 | TusHeaderError::ChecksumLength => "bad_checksum",
        };
        ApiError::new(400, code, e.to_string())
    }
}

/// The request header asking for the receipt in the answer of the request that completes an
/// upload (`docs/sync-protocol.md`).
const RECEIPT_HEADER: &str = "Hattama-Receipt";

/// Whether the request asks for the receipt in its answer.
fn wants_receipt(req: &HttpRequest) -> bool {
    header(req, RECEIPT_HEADER) == Some("wait")
}

/// `POST /files/`: creation. Checks the manifest before any byte is sent. With a body
/// (`Content-Type: application/offset+octet-stream`, tus `creation-with-upload`), the body is
/// the upload's first bytes, taken only by an upload still at offset 0.
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    check_tus(&req)?;
    state.free_space.check()?;
    let length: u64 = header(&req, "Upload-Length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::new(400, "bad_length", "Upload-Length is required"))?;
    let mut meta = parse_metadata(header(&req, "Upload-Metadata").unwrap_or(""))?;
    let manifest = meta
        .remove("manifest")
        .ok_or_else(|| ApiError::new(400, "bad_metadata", "metadata `manifest` is required"))?;
    let sig_text = meta
        .remove("signature")
        .ok_or_else(|| ApiError::new(400, "bad_metadata", "metadata `signature` is required"))?;
    let signature = std::str::from_utf8(&sig_text)
        .ok()
        .and_then(|s| parse_lower_hex::<64>(s.trim()))
        .ok_or_else(|| {
            ApiError::new(400, "bad_signature", "signature must be 128 lowercase hex digits")
        })?;
    let with_body = header(&req, "Content-Type") == Some("application/offset+octet-stream");
    let checksum = if with_body { parse_checksum(&req)? } else { None };
    let content_length = header(&req, "Content-Length").and_then(|v| v.parse::<u64>().ok());
    if with_body && length > 0 && length <= SMALL_PHOTO_BYTES && content_length == Some(length) {
        let upload = Whole { manifest, signature, length, checksum };
        return create_whole(&req, payload, &state, upload).await;
    }
    // With a body, the upload's lock is taken first, for the id a canonical manifest has (the
    // SHA-256 of its bytes), so that the same blocking call can open the upload for writing.
    let claimed = with_body.then(|| Sha256Hash::of(&manifest));
    let slot = claimed.map(|id| state.uploads.get(&id));
    let (_guard, generation) = match &slot {
        Some(slot) => {
            let (guard, generation) = slot.take_over().await?;
            (Some(guard), Some(generation))
        }
        None => (None, None),
    };
    let storage = state.storage.clone();
    let quotas = state.settings.limits.clone();
    let metrics = state.metrics.clone();
    let limits = state.rate_limits.clone();
    let (id, info, writer) = web::block(move || -> Result<_, ApiError> {
        let admit = |s: &SignedManifest| limits.upload(s);
        let (id, created) =
            ingest::create_upload(&*storage, &manifest, &signature, length, &quotas, &admit)?;
        let info = storage.upload(&id)?.ok_or_else(|| ApiError::not_found("no such upload"))?;
        // Counted by the one creation that made the session, even when a retry races it.
        if created {
            metrics.uploads_begun.inc();
        }
        // The body is taken only by an upload still at 0, under the lock of its id.
        let writer = (claimed == Some(id) && info.offset == 0 && !info.stored)
            .then(|| storage.upload_writer(&id, 0))
            .transpose()?;
        Ok((id, info, writer))
    })
    .await??;
    let mut offset = info.offset;
    let mut receipt = None;
    if let (Some(writer), Some(slot), Some(generation)) = (writer, &slot, generation) {
        let body = Body {
            offset: 0,
            payload,
            checksum,
            want_receipt: wants_receipt(&req),
            whole_photo: content_length == Some(length),
        };
        (offset, receipt) = receive(&state, slot, generation, id, info, writer, body).await?;
    } else if info.stored && wants_receipt(&req) {
        receipt = logged_receipt(&state, id).await?;
    }
    let mut answer = tus_response(actix_web::http::StatusCode::CREATED);
    answer
        .insert_header(("Location", location(&state, &id)))
        .insert_header(("Upload-Offset", offset.to_string()));
    Ok(match receipt {
        Some(body) => answer.content_type("application/json").body(body),
        None => answer.finish(),
    })
}

/// What a request body gives next.
enum Chunk {
    Bytes(web::Bytes),
    /// The body ended.
    End,
    /// The body broke off: the connection failed, stayed silent past the read timeout, or a
    /// newer request for the same upload took it over.
    Cut,
}

/// The next chunk of an upload's body (the caller holds the upload's lock as `generation`).
async fn next_chunk(
    payload: &mut web::Payload,
    slot: &Slot,
    generation: u64,
    read_timeout: Duration,
) -> Chunk {
    loop {
        return tokio::select! {
            chunk = payload.next() => match chunk {
                None => Chunk::End,
                Some(Ok(bytes)) => Chunk::Bytes(bytes),
                Some(Err(_)) => Chunk::Cut,
            },
            _ = slot.preempt.notified() => {
                if slot.generation.load(Ordering::SeqCst) != generation { Chunk::Cut } else { continue }
            }
            _ = tokio::time::sleep(read_timeout) => Chunk::Cut,
        };
    }
}

/// A creation request that carries a small photo whole (see [`create_whole`]).
struct Whole {
    manifest: Vec<u8>,
    signature: [u8; 64],
    length: u64,
    checksum: Option<[u8; 32]>,
}

/// `POST /files/` with a whole photo of at most [`SMALL_PHOTO_BYTES`] as its body: the photo is
/// read into memory, then checked and stored in one blocking call without an upload session
/// (`ingest::store_whole`), the answer carrying the receipt if asked. Only if the body is cut
/// does an upload session keep what arrived, so that the client resumes it as usual.
async fn create_whole(
    req: &HttpRequest,
    mut payload: web::Payload,
    state: &web::Data<AppState>,
    upload: Whole,
) -> Result<HttpResponse, ApiError> {
    let Whole { manifest, signature, length, checksum } = upload;
    // The signature, the device's enrollment and the length first: no byte of the body is read
    // for a creation that would be refused, so a stranger's key cannot make the server wait on
    // a slow body.
    let (storage, checked) = (state.storage.clone(), manifest.clone());
    let limits = state.settings.limits.clone();
    let rate = state.rate_limits.clone();
    let (signed, before) = web::block(move || {
        let admit = |s: &SignedManifest| rate.upload(s);
        ingest::check_creation(&*storage, &checked, &signature, length, &limits, &admit)
    })
    .await??;
    let claimed = Sha256Hash::of(&manifest);
    let slot = state.uploads.get(&claimed);
    let (_guard, generation) = slot.take_over().await?;
    let mut photo = state.photo_bufs.with_capacity(length as usize);
    let read_timeout = Duration::from_secs(state.settings.limits.read_timeout_secs);
    let mut cut = false;
    loop {
        match next_chunk(&mut payload, &slot, generation, read_timeout).await {
            Chunk::End => break,
            Chunk::Cut => {
                cut = true;
                break;
            }
            Chunk::Bytes(chunk) => {
                if photo.len() + chunk.len() > length as usize {
                    let e =
                        ApiError::new(413, "body_too_large", "the body runs past Upload-Length");
                    return ingest::of_device(&signed, Err(e));
                }
                photo.extend_from_slice(&chunk);
            }
        }
    }
    if let Some(expected) = checksum
        && (cut || Sha256::digest(&photo).as_slice() != expected)
    {
        return Err(ApiError::new(
            460,
            "checksum_mismatch",
            "the body does not match Upload-Checksum",
        ));
    }
    let (storage, keys, limits) = (state.storage.clone(), state.keys.clone(), state.media_limits);
    let thumbs = state.thumbs.clone();
    let quotas = state.settings.limits.clone();
    let metrics = state.metrics.clone();
    if cut || photo.len() as u64 != length {
        // Keep what arrived as an upload session, as a creation without this path would have.
        let offset = web::block(move || -> Result<u64, ApiError> {
            // Its creation was admitted a moment ago (`check_creation`).
            let admit = |_: &SignedManifest| Ok(());
            let (id, created) =
                ingest::create_upload(&*storage, &manifest, &signature, length, &quotas, &admit)?;
            if created {
                metrics.uploads_begun.inc();
            }
            let info = storage.upload(&id)?.ok_or_else(|| ApiError::not_found("no such upload"))?;
            if info.stored || info.offset != 0 {
                return Ok(info.offset);
            }
            let mut writer = storage.upload_writer(&id, 0)?;
            writer.write_all(&photo).map_err(|e| ApiError::internal(&e))?;
            let kept = writer.finish()?;
            metrics.upload_bytes.inc_by(kept);
            Ok(kept)
        })
        .await??;
        return Err(ApiError::new(
            400,
            "body_incomplete",
            format!("body ended early at offset {offset}"),
        ));
    }
    let log = state.log.clone();
    let (id, committed) = web::block(move || -> Result<_, ApiError> {
        // `before`: a creation cut before may have left a session with the photo's first
        // bytes (as `check_creation` found it).
        let (id, committed) =
            ingest::store_whole(&*storage, &keys, &signed, photo, &limits, &thumbs)?;
        log.wake();
        if committed.log_entry.is_some() {
            if before.is_none() {
                // Begun and completed in this one request.
                metrics.uploads_begun.inc();
            }
            metrics.upload_bytes.inc_by(length.saturating_sub(before.unwrap_or(0)));
            metrics.stored();
        }
        Ok((id, committed))
    })
    .await??;
    // The wait for the log holds no thread of the blocking pool.
    let receipt = if wants_receipt(req) {
        super::receipts::logged_async(state, id, committed).await?
    } else {
        None
    };
    let mut answer = tus_response(actix_web::http::StatusCode::CREATED);
    answer
        .insert_header(("Location", location(state, &id)))
        .insert_header(("Upload-Offset", length.to_string()));
    Ok(match receipt {
        Some(body) => answer.content_type("application/json").body(body),
        None => answer.finish(),
    })
}

/// The receipt with its log proof, once the capture is in a published checkpoint (waiting for
/// that as `GET /api/v1/receipts/{id}` does); `None` if it is not logged in time.
async fn logged_receipt(
    state: &web::Data<AppState>,
    id: Sha256Hash,
) -> Result<Option<Vec<u8>>, ApiError> {
    let (storage, log) = (state.storage.clone(), state.log.clone());
    web::block(move || super::receipts::with_log(&*storage, &log, &id)).await?
}

/// Completes an upload whose last byte arrived (checks, stores, signs the receipt) and asks the
/// log to integrate it.
async fn complete(state: &web::Data<AppState>, id: Sha256Hash) -> Result<(), ApiError> {
    let (storage, keys, limits) = (state.storage.clone(), state.keys.clone(), state.media_limits);
    let thumbs = state.thumbs.clone();
    web::block(move || ingest::complete_upload(&*storage, &keys, &id, None, &limits, &thumbs))
        .await??;
    state.metrics.stored();
    state.log.wake();
    Ok(())
}

/// Finishes an upload whose bytes all arrived but which is not stored yet: the server stopped
/// (or crashed) between its last byte and the commit. Completion is idempotent.
pub async fn finish_if_complete(
    state: &web::Data<AppState>,
    id: Sha256Hash,
) -> Result<Option<crate::storage::UploadInfo>, ApiError> {
    let storage = state.storage.clone();
    let info = web::block(move || storage.upload(&id)).await??;
    match info {
        Some(i) if !i.stored && i.offset == i.length => {
            let slot = state.uploads.get(&id);
            let _guard = slot.lock.lock().await;
            complete(state, id).await?;
            let storage = state.storage.clone();
            Ok(web::block(move || storage.upload(&id)).await??)
        }
        other => Ok(other),
    }
}

/// `HEAD /files/{id}`: the offset.
pub async fn head(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    check_tus(&req)?;
    let id = parse_hash(&path)?;
    check_token(&req, &state, &id)?;
    let info = finish_if_complete(&state, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such upload"))?;
    Ok(tus_response(actix_web::http::StatusCode::OK)
        .insert_header(("Upload-Offset", info.offset.to_string()))
        .insert_header(("Upload-Length", info.length.to_string()))
        .finish())
}

/// `DELETE /files/{id}`: termination of an unfinished upload.
pub async fn delete(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    check_tus(&req)?;
    let id = parse_hash(&path)?;
    check_token(&req, &state, &id)?;
    let slot = state.uploads.get(&id);
    slot.preempt_others();
    let _guard = slot.lock.lock().await;
    let storage = state.storage.clone();
    web::block(move || -> Result<(), ApiError> {
        let info = storage.upload(&id)?.ok_or_else(|| ApiError::not_found("no such upload"))?;
        if info.stored {
            return Err(ApiError::new(403, "already_stored", "a stored capture is never deleted"));
        }
        Ok(storage.discard_upload(&id)?)
    })
    .await??;
    Ok(tus_response(actix_web::http::StatusCode::NO_CONTENT).finish())
}

fn parse_checksum(req: &HttpRequest) -> Result<Option<[u8; 32]>, ApiError> {
    Ok(header(req, "Upload-Checksum").map(parse_checksum_value).transpose()?)
}

/// `PATCH /files/{id}`: bytes at the current offset; the last byte completes the capture.
pub async fn patch(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    check_tus(&req)?;
    let id = parse_hash(&path)?;
    check_token(&req, &state, &id)?;
    state.free_space.check()?;
    if header(&req, "Content-Type") != Some("application/offset+octet-stream") {
        return Err(ApiError::new(
            415,
            "bad_content_type",
            "Content-Type must be application/offset+octet-stream",
        ));
    }
    let offset: u64 = header(&req, "Upload-Offset")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::new(400, "bad_offset", "Upload-Offset is required"))?;
    let checksum = parse_checksum(&req)?;
    let content_length = header(&req, "Content-Length").and_then(|v| v.parse::<u64>().ok());

    // Take over the upload from an older PATCH that may still wait on a dead connection.
    let slot = state.uploads.get(&id);
    let (_guard, generation) = slot.take_over().await?;

    let storage = state.storage.clone();
    let (info, writer) = web::block(move || -> Result<_, ApiError> {
        let info = storage.upload(&id)?.ok_or_else(|| ApiError::not_found("no such upload"))?;
        if offset != info.offset {
            return Err(ApiError::new(
                409,
                "offset_mismatch",
                format!("the upload is at offset {}", info.offset),
            ));
        }
        let writer = (!info.stored && info.offset < info.length)
            .then(|| storage.upload_writer(&id, offset))
            .transpose()?;
        Ok((info, writer))
    })
    .await??;
    let (new_offset, receipt) = if let Some(writer) = writer {
        let whole_photo = offset == 0 && content_length == Some(info.length);
        let body =
            Body { offset, payload, checksum, want_receipt: wants_receipt(&req), whole_photo };
        receive(&state, &slot, generation, id, info, writer, body).await?
    } else {
        if !info.stored {
            complete(&state, id).await?;
        }
        let receipt = if wants_receipt(&req) { logged_receipt(&state, id).await? } else { None };
        (info.length, receipt)
    };
    let status = if receipt.is_some() {
        actix_web::http::StatusCode::OK
    } else {
        actix_web::http::StatusCode::NO_CONTENT
    };
    let mut answer = tus_response(status);
    answer.insert_header(("Upload-Offset", new_offset.to_string()));
    Ok(match receipt {
        Some(body) => answer.content_type("application/json").body(body),
        None => answer.finish(),
    })
}

/// Largest photo whose bytes a request keeps in memory for its completion.
const KEEP_IN_MEMORY: u64 = 1 << 20;

/// Most bytes that requests carrying a whole photo hold in memory at once, all together (see
/// [`receive`]); past it, they write to the upload's file as they arrive.
const WHOLE_IN_MEMORY_BUDGET: u64 = 256 << 20;

/// Bytes reserved now under the memory budget of whole photos (256 MiB), one count per app
/// (in its state).
/// Clones share the count.
#[derive(Clone, Default)]
pub struct WholeInMemory(Arc<AtomicU64>);

/// A reservation under the memory budget of whole photos, given back when dropped.
struct Reserved(WholeInMemory, u64);

impl Reserved {
    fn take(budget: &WholeInMemory, bytes: u64) -> Option<Self> {
        budget
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                (held + bytes <= WHOLE_IN_MEMORY_BUDGET).then_some(held + bytes)
            })
            .ok()
            .map(|_| Self(budget.clone(), bytes))
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.0.0.fetch_sub(self.1, Ordering::SeqCst);
    }
}

/// A request body for an upload.
struct Body {
    /// Where it starts (the caller checked it is the upload's offset).
    offset: u64,
    payload: web::Payload,
    checksum: Option<[u8; 32]>,
    /// Whether the request asks for the receipt in its answer.
    want_receipt: bool,
    /// Whether the body is the whole photo (`Content-Length` equal to `Upload-Length`).
    whole_photo: bool,
}

/// Receives a request body into an upload through `writer` (the caller holds the upload's lock).
/// When the last byte arrives, completes the upload in the same blocking call, from the bytes in
/// memory if this request carried the whole photo, and then, if asked, waits there for the
/// receipt with its log proof. Returns the new offset and that receipt.
async fn receive(
    state: &web::Data<AppState>,
    slot: &Slot,
    generation: u64,
    id: Sha256Hash,
    info: crate::storage::UploadInfo,
    mut writer: Box<dyn crate::storage::UploadWriter>,
    body: Body,
) -> Result<(u64, Option<Vec<u8>>), ApiError> {
    let Body { offset, mut payload, checksum, want_receipt, whole_photo } = body;
    let length = info.length;
    let mut hasher = checksum.map(|_| Sha256::new());
    // A whole photo in one request is kept in memory (within the budget) and written to a file
    // once, by the completion on the blocking pool, not chunk by chunk here on the thread that
    // serves the connections; only a cut body is written here, for the client to resume. A
    // first part of a photo is written as it arrives; a small one is also kept for the
    // completion, which reads it whole anyway.
    let reserved = (offset == 0 && whole_photo)
        .then(|| Reserved::take(&state.whole_in_memory, length))
        .flatten();
    let held = reserved.is_some();
    let mut whole = (held || (offset == 0 && length <= KEEP_IN_MEMORY))
        .then(|| state.photo_bufs.with_capacity(length as usize));
    let mut received = 0u64;
    let read_timeout = Duration::from_secs(state.settings.limits.read_timeout_secs);
    let mut cut = false;
    loop {
        match next_chunk(&mut payload, slot, generation, read_timeout).await {
            Chunk::End => break,
            Chunk::Cut => {
                cut = true;
                break;
            }
            Chunk::Bytes(chunk) => {
                if offset + received + chunk.len() as u64 > length {
                    web::block(move || writer.rollback()).await??;
                    return Err(ApiError::new(
                        413,
                        "body_too_large",
                        "the body runs past Upload-Length",
                    ));
                }
                if !held {
                    // Small sequential writes into the page cache; made durable by `finish`.
                    writer.write_all(&chunk).map_err(|e| ApiError::internal(&e))?;
                }
                if let Some(h) = hasher.as_mut() {
                    h.update(&chunk);
                }
                if let Some(w) = whole.as_mut() {
                    w.extend_from_slice(&chunk);
                }
                received += chunk.len() as u64;
            }
        }
    }
    if let (Some(expected), Some(h)) = (checksum, hasher)
        && (cut || h.finalize().as_slice() != expected)
    {
        web::block(move || writer.rollback()).await??;
        return Err(ApiError::new(
            460,
            "checksum_mismatch",
            "the body does not match Upload-Checksum",
        ));
    }
    let (storage, keys, limits) = (state.storage.clone(), state.keys.clone(), state.media_limits);
    let thumbs = state.thumbs.clone();
    let log = state.log.clone();
    let metrics = state.metrics.clone();
    let (new_offset, receipt) = web::block(move || -> Result<_, ApiError> {
        let _reserved = reserved;
        let complete = !cut && offset + received == length;
        if held && !complete {
            // Keep what arrived, for the client to resume.
            if let Some(w) = &whole {
                writer.write_all(w).map_err(|e| ApiError::internal(&e))?;
            }
        }
        let new_offset = if held && complete { length } else { writer.finish()? };
        metrics.upload_bytes.inc_by(new_offset.saturating_sub(offset));
        if cut || new_offset != length {
            return Ok((new_offset, None));
        }
        let photo = whole
            .filter(|w| w.len() as u64 == length)
            .map(|bytes| ingest::HeldPhoto { bytes, in_upload: !held });
        ingest::complete_upload(&*storage, &keys, &id, Some((info, photo)), &limits, &thumbs)?;
        metrics.stored();
        log.wake();
        let receipt =
            if want_receipt { super::receipts::with_log(&*storage, &log, &id)? } else { None };
        Ok((new_offset, receipt))
    })
    .await??;
    if cut {
        // Keep what arrived; the client resumes from the next HEAD.
        return Err(ApiError::new(
            400,
            "body_incomplete",
            format!("body ended early at offset {new_offset}"),
        ));
    }
    Ok((new_offset, receipt))
}
