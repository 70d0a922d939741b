//! The ingest rules, between HTTP and storage: what is checked when an upload is created and
//! when its last byte arrives, and how a receipt is made. The evidence and photo checks are the
//! core's (`hattama_core::evidence`, `hattama_core::media`): one implementation, never two.

use hattama_core::evidence::{EvidenceError, Manifest, Sha256Hash, SignedManifest};
use hattama_core::media::{self, MediaLimits};
use hattama_core::receipt::Receipt;

use crate::error::ApiError;
use crate::keys::ServerKeys;
use crate::storage::{
    Admission, CommitRefusal, Committed, NewCapture, NewUpload, PhotoBuf, PhotoBytes,
    SMALL_PHOTO_BYTES, Storage, UploadInfo, device_id,
};
use crate::thumbs::{Rendition, Thumbnails};

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> u64 {
    hattama_core::now_ms()
}

/// `result`, its error attributed to the device that signed `signed` (see
/// [`ApiError::device`]).
pub fn of_device<T>(signed: &SignedManifest, result: Result<T, ApiError>) -> Result<T, ApiError> {
    result.map_err(|e| e.of_device(&device_id(&signed.manifest.device_key)))
}

fn evidence_error(e: EvidenceError) -> ApiError {
    match e {
        EvidenceError::BadSignature => ApiError::new(400, "bad_signature", e.to_string()),
        _ => ApiError::new(400, "bad_manifest", e.to_string()),
    }
}

/// Checks a new upload (tus creation) and records it. Returns the capture id.
///
/// A new upload session must fit its device's quotas: at most `limits.max_open_uploads`
/// unfinished uploads, together at most `limits.max_upload_bytes_in_flight` bytes (429
/// `too_many_uploads`); unfinished uploads older than `limits.upload_ttl_secs` are discarded
/// on the way. Creating an upload that exists again (a resume) is always allowed. A new one must
/// also pass `admit` (the device's rate limit), asked once its signature verified.
pub fn create_upload(
    storage: &dyn Storage,
    manifest: &[u8],
    signature: &[u8],
    length: u64,
    limits: &crate::settings::Limits,
    admit: &dyn Fn(&SignedManifest) -> Result<(), ApiError>,
) -> Result<(Sha256Hash, bool), ApiError> {
    let (signed, admission) =
        check_new(storage, manifest, signature, length, limits.max_photo_bytes)?;
    let id = signed.hash();
    if storage.upload(&id)?.is_none() {
        let admitted = admit(&signed)
            .and_then(|()| check_quotas(storage, &signed, &admission, length, limits));
        of_device(&signed, admitted)?;
    }
    let created = storage.create_upload(&NewUpload {
        id,
        manifest: signed.canonical,
        signature: signed.signature,
        length,
        now_ms: now_ms(),
    })?;
    Ok((id, created))
}

/// The upload quotas of a device (see [`create_upload`]), expiring old uploads on the way.
fn check_quotas(
    storage: &dyn Storage,
    signed: &SignedManifest,
    admission: &Admission,
    length: u64,
    limits: &crate::settings::Limits,
) -> Result<(), ApiError> {
    check_precinct_quota(storage, signed, admission, limits)?;
    let now = now_ms();
    let ttl_ms = limits.upload_ttl_secs.saturating_mul(1000);
    let device = signed.manifest.device_key.to_hex();
    let (mut open, mut bytes) = (0usize, length);
    for u in storage.open_uploads()? {
        if now.saturating_sub(u.created_at_ms) > ttl_ms {
            storage.discard_upload(&u.id)?;
        } else if u.device_key == device {
            open += 1;
            bytes = bytes.saturating_add(u.length);
        }
    }
    if open >= limits.max_open_uploads || bytes > limits.max_upload_bytes_in_flight {
        let mut e = ApiError::new(
            429,
            "too_many_uploads",
            format!(
                "this device has {open} unfinished uploads ({} bytes in all); finish or cancel \
                 them before starting another (at most {} uploads, {} bytes)",
                bytes - length,
                limits.max_open_uploads,
                limits.max_upload_bytes_in_flight
            ),
        );
        e.retry_after = Some(60);
        return Err(e);
    }
    Ok(())
}

/// At most so many captures of one device for one precinct (429 `too_many_captures`):
/// `limits.max_captures_per_precinct` if set, else as many as the election's protocol needs
/// ([`crate::settings::Limits::captures_per_precinct`]).
fn check_precinct_quota(
    storage: &dyn Storage,
    signed: &SignedManifest,
    admission: &Admission,
    limits: &crate::settings::Limits,
) -> Result<(), ApiError> {
    let max = limits.captures_per_precinct(admission.protocol_lines);
    let m = &signed.manifest;
    let stored = storage.captures_of_device_in_precinct(
        &device_id(&m.device_key),
        &m.election,
        &m.precinct,
    )?;
    if stored >= max {
        return Err(ApiError::new(
            429,
            "too_many_captures",
            format!(
                "this device has sent {stored} photos of precinct {} already, the most it may; \
                 ask a coordinator if more are needed",
                m.precinct
            ),
        ));
    }
    Ok(())
}

/// The free-space floor of uploads: refuses an upload's bytes (507 `insufficient_storage`)
/// when the data directory's file system has less than `limits.min_free_bytes` free, so that
/// what is stored stays served and the server keeps room to commit what it already accepted.
/// The free space is measured at most once a second (a tiny capture would otherwise pay a
/// `statvfs` each), which a second's uploads cannot use up: the floor is far above what a
/// second of uploads writes.
pub struct FreeSpace {
    dir: std::path::PathBuf,
    min_free: u64,
    /// The last measure and when it was taken.
    last: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

impl FreeSpace {
    /// The floor of `min_free` bytes on the file system of `dir`.
    pub fn new(dir: &std::path::Path, min_free: u64) -> Self {
        Self { dir: dir.to_owned(), min_free, last: std::sync::Mutex::new(None) }
    }

    /// Refuses (507) when the free space is below the floor.
    pub fn check(&self) -> Result<(), ApiError> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let free = match *last {
            Some((at, free)) if at.elapsed() < std::time::Duration::from_secs(1) => free,
            _ => {
                let free = rustix::fs::statvfs(&self.dir)
                    .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
                    .map_err(|e| ApiError::internal(&std::io::Error::from(e)))?;
                *last = Some((std::time::Instant::now(), free));
                free
            }
        };
        drop(last);
        if free < self.min_free {
            let mut e = ApiError::new(
                507,
                "insufficient_storage",
                "the server is short of disk space and takes no new photos now; keep them on \
                 the phone and retry later",
            );
            e.retry_after = Some(300);
            return Err(e);
        }
        Ok(())
    }
}

/// The checks of a creation ([`create_upload`]'s, without recording anything), for a creation
/// that carries a whole photo: made before any byte of its body is read. Returns the verified
/// manifest and the offset of its upload session, if one exists (a creation cut before).
pub fn check_creation(
    storage: &dyn Storage,
    manifest: &[u8],
    signature: &[u8],
    length: u64,
    limits: &crate::settings::Limits,
    admit: &dyn Fn(&SignedManifest) -> Result<(), ApiError>,
) -> Result<(SignedManifest, Option<u64>), ApiError> {
    let (signed, admission) = check_new(storage, manifest, signature, length, SMALL_PHOTO_BYTES)?;
    let before = storage.upload(&signed.hash())?.map(|u| u.offset);
    if before.is_none() {
        let admitted = admit(&signed)
            .and_then(|()| check_precinct_quota(storage, &signed, &admission, limits));
        of_device(&signed, admitted)?;
    }
    Ok((signed, before))
}

/// Stores a whole photo of at most [`SMALL_PHOTO_BYTES`] that came with its manifest in one
/// request (tus `creation-with-upload`), the manifest checked by [`check_creation`] before the
/// body was read: the checks of [`complete_upload`], in one step and without an upload session
/// (a device revoked meanwhile is refused by the commit itself). A refused photo
/// leaves nothing behind. Returns the capture id and what the commit answered.
pub fn store_whole(
    storage: &dyn Storage,
    keys: &ServerKeys,
    signed: &SignedManifest,
    photo: PhotoBuf,
    limits: &MediaLimits,
    thumbs: &Thumbnails,
) -> Result<(Sha256Hash, Committed), ApiError> {
    let id = signed.hash();
    let committed =
        of_device(signed, finish(storage, keys, &id, signed, photo, false, (limits, thumbs)))?;
    Ok((id, committed))
}

/// The checks of a new upload: a strictly valid signature, a known election and precinct, a
/// device enrolled for them and not revoked, and a length as the manifest says and within the
/// limit.
fn check_new(
    storage: &dyn Storage,
    manifest: &[u8],
    signature: &[u8],
    length: u64,
    max_photo_bytes: u64,
) -> Result<(SignedManifest, Admission), ApiError> {
    let signed = SignedManifest::verify(manifest, signature).map_err(evidence_error)?;
    let admission = storage.admission(
        &signed.manifest.election,
        &signed.manifest.precinct,
        &signed.manifest.device_key,
    )?;
    of_device(&signed, check_admission(&signed, &admission, length, max_photo_bytes))?;
    Ok((signed, admission))
}

/// The checks of [`check_new`] once the signature verified.
fn check_admission(
    signed: &SignedManifest,
    admission: &Admission,
    length: u64,
    max_photo_bytes: u64,
) -> Result<(), ApiError> {
    let m = &signed.manifest;
    if !admission.election_known {
        return Err(ApiError::new(404, "unknown_election", format!("no election {}", m.election)));
    }
    if !admission.precinct_known {
        return Err(ApiError::new(
            404,
            "unknown_precinct",
            format!("election {} has no precinct {}", m.election, m.precinct),
        ));
    }
    check_device(signed, admission)?;
    if length != m.photo.bytes {
        return Err(ApiError::new(
            400,
            "length_mismatch",
            format!("Upload-Length {length} differs from the manifest's {}", m.photo.bytes),
        ));
    }
    if length > max_photo_bytes {
        return Err(ApiError::new(
            413,
            "body_too_large",
            format!("photos are at most {max_photo_bytes} bytes"),
        ));
    }
    Ok(())
}

/// The answer to a capture of a revoked device.
fn device_revoked() -> ApiError {
    ApiError::new(403, "device_revoked", "this device was revoked")
}

/// The device must be enrolled, not revoked, and assigned the manifest's election and precinct.
fn check_device(signed: &SignedManifest, admission: &Admission) -> Result<(), ApiError> {
    let m = &signed.manifest;
    if !admission.device_known {
        return Err(ApiError::new(403, "device_unknown", "this device is not enrolled"));
    }
    if admission.device_revoked {
        return Err(device_revoked());
    }
    if !admission.precinct_assigned {
        return Err(ApiError::new(
            403,
            "precinct_not_assigned",
            format!("this device is not enrolled for precinct {} of {}", m.precinct, m.election),
        ));
    }
    Ok(())
}

/// Finishes an upload whose last byte arrived: checks the whole photo against the manifest and
/// the core's photo rules, signs a receipt and stores both durably. Returns the receipt JSON.
/// A whole photo the caller holds for [`complete_upload`].
pub struct HeldPhoto {
    /// Its bytes.
    pub bytes: PhotoBuf,
    /// Whether they are also in the upload's file (else storage writes them).
    pub in_upload: bool,
}

/// `known`: the upload as the caller just read it, not stored yet, and the whole photo if the
/// caller holds it; without it, both are read from storage.
pub fn complete_upload(
    storage: &dyn Storage,
    keys: &ServerKeys,
    id: &Sha256Hash,
    known: Option<(UploadInfo, Option<HeldPhoto>)>,
    limits: &MediaLimits,
    thumbs: &Thumbnails,
) -> Result<Vec<u8>, ApiError> {
    let (info, photo) = match known {
        Some((info, photo)) if !info.stored => (info, photo),
        _ => {
            if let Some(receipt) = storage.receipt(id)? {
                return Ok(receipt);
            }
            (storage.upload(id)?.ok_or_else(|| ApiError::not_found("no such upload"))?, None)
        }
    };
    // The signature was verified strictly when the upload was created; the stored manifest is
    // only parsed again here.
    let signed = SignedManifest {
        manifest: Manifest::from_canonical(&info.manifest).map_err(evidence_error)?,
        canonical: info.manifest.clone(),
        signature: info.signature,
    };
    let HeldPhoto { bytes: photo, in_upload } = match photo {
        Some(held) => held,
        None => {
            HeldPhoto { bytes: storage.read_upload(id, info.length + 1)?.into(), in_upload: true }
        }
    };
    match finish(storage, keys, id, &signed, photo, in_upload, (limits, thumbs)) {
        Ok(committed) => Ok(committed.receipt),
        Err(e) => {
            // A refused photo is dropped with its upload; the client learns why.
            if e.status.is_client_error() {
                storage.discard_upload(id)?;
            }
            of_device(&signed, Err(e))
        }
    }
}

/// Checks a whole photo against its (verified) manifest and the core's photo rules, makes its
/// thumbnail (a photo whose pixels cannot be decoded within the budget is refused here, so it
/// is never stored or served), then signs the receipt and commits the capture with its photo.
/// `in_upload`: the photo is also in its upload's file (which a large photo is stored from).
fn finish(
    storage: &dyn Storage,
    keys: &ServerKeys,
    id: &Sha256Hash,
    signed: &SignedManifest,
    bytes: PhotoBuf,
    in_upload: bool,
    (limits, thumbs): (&MediaLimits, &Thumbnails),
) -> Result<Committed, ApiError> {
    let m = &signed.manifest;
    if bytes.len() as u64 != m.photo.bytes || Sha256Hash::of(&bytes) != m.photo.sha256 {
        return Err(ApiError::new(
            422,
            "photo_mismatch",
            "the bytes are not the photo the manifest signs",
        ));
    }
    // The core's checks, and whether stripping would change anything (without a stripped copy).
    let checked = media::check(&bytes, limits)
        .map_err(|e| ApiError::new(422, "photo_refused", e.to_string()))?;
    if !checked.unchanged
        || checked.media_type != m.photo.media_type
        || (checked.width, checked.height) != (m.photo.width, m.photo.height)
    {
        return Err(ApiError::new(
            422,
            "photo_mismatch",
            "the photo is not clean or not as the manifest says",
        ));
    }
    let thumb = thumbs.at_upload(&bytes, m.photo.media_type, m.photo.orientation)?;
    // A device revoked while its upload was under way can store nothing more: the commit
    // refuses it. An upload's photo is checked here as well, before it is moved into place.
    if in_upload {
        let m = &signed.manifest;
        check_device(signed, &storage.admission(&m.election, &m.precinct, &m.device_key)?)?;
    }
    let received_at_ms = now_ms();
    let receipt = Receipt {
        capture_id: *id,
        device_key: m.device_key,
        photo_sha256: m.photo.sha256,
        received_at_ms,
        server_key: keys.receipt_public(),
        v: 1,
    }
    .sign(&keys.receipt);
    let receipt = serde_json::to_vec(&receipt).map_err(|e| ApiError::internal(&e))?;
    let photo = if in_upload && bytes.len() as u64 > SMALL_PHOTO_BYTES {
        PhotoBytes::Upload
    } else {
        PhotoBytes::Held(bytes)
    };
    let committed = storage
        .commit_capture(NewCapture {
            id: *id,
            device_id: device_id(&m.device_key),
            seq: m.seq,
            election: m.election.clone(),
            precinct: m.precinct.clone(),
            manifest: signed.canonical.clone(),
            signature: signed.signature,
            photo_sha256: m.photo.sha256,
            photo_bytes: m.photo.bytes,
            media_type: m.photo.media_type.as_str().to_owned(),
            received_at_ms,
            receipt,
            photo,
        })?
        .map_err(|refusal| match refusal {
            CommitRefusal::DeviceRevoked => device_revoked(),
        })?;
    if let Some(thumb) = thumb
        && let Err(e) = thumbs.store(&m.photo.sha256, Rendition::Thumb, &thumb)
    {
        tracing::warn!(error = %e, "the thumbnail could not be kept; it is made again when asked");
    }
    tracing::info!(seq = m.seq, bytes = m.photo.bytes, "capture stored");
    Ok(committed)
}
