//! The observer's client: one handle over one offline store.
//!
//! [`Client::capture`] is the critical path: check and strip the photo, hash, sign, write the
//! blob durably, commit the row durably, and only then return. Nothing slower (decoding,
//! thumbnails, network) happens on it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;

use crate::bundle::{self, BundleError};
use crate::evidence::{
    self, CoarseLocation, DeviceKey, EvidenceError, EvidenceKind, Manifest, Page, PhotoInfo,
    Sha256Hash, SignedManifest,
};
use crate::hooks;
use crate::media::{self, MediaError, MediaLimits};
use crate::store::{CaptureRecord, CaptureState, NewCapture, Store, StoreError};
use crate::thumbnail;

/// Settings the app hands to the core. The core reads no environment or config file.
#[derive(Clone, Debug, Default)]
pub struct ClientConfig {
    /// Limits on photos.
    pub limits: MediaLimits,
}

/// Everything that can go wrong in the client, with its cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The photo was refused.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// A manifest field or a signature was refused.
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bundle failed to export or verify.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// Reading an input file failed.
    #[error("cannot read {path}: {source}")]
    Input {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// No capture has that id.
    #[error("no capture with id {0}")]
    NotFound(String),
    /// The prefix matches more than one capture.
    #[error("id prefix {0} matches more than one capture")]
    Ambiguous(String),
    /// Only unsent captures may be deleted.
    #[error("capture {id} is {state} and can no longer be deleted")]
    NotDeletable {
        /// The capture.
        id: String,
        /// Its state.
        state: &'static str,
    },
    /// A thumbnail could not be made.
    #[error("cannot make a thumbnail: {0}")]
    Thumbnail(String),
}

/// What the observer says about a photo at capture time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureRequest {
    /// Election id.
    pub election: String,
    /// Precinct id.
    pub precinct: String,
    /// Kind of evidence.
    pub kind: EvidenceKind,
    /// Page n of m.
    pub page: Page,
    /// Optional note.
    pub note: Option<String>,
    /// Optional transcription: line id to number.
    pub transcription: Option<BTreeMap<String, u64>>,
    /// Coarse location, only if the observer opted in.
    pub location: Option<CoarseLocation>,
    /// The device's UTC offset now, in minutes (the app knows the time zone; the core does not).
    pub utc_offset_min: i32,
}

/// What a finished capture reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// Its id: SHA-256 of the canonical manifest.
    pub id: Sha256Hash,
    /// Its sequence number on this device.
    pub seq: u64,
    /// The signed manifest.
    pub manifest: Manifest,
    /// Metadata bytes removed from the photo.
    pub removed_bytes: u64,
}

/// A capture with its full evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureDetail {
    /// The list row.
    pub record: CaptureRecord,
    /// The signed manifest, absent for a deleted capture.
    pub signed: Option<SignedManifest>,
}

/// One observer device's handle over its offline store.
pub struct Client {
    store: Store,
    config: ClientConfig,
    key: SigningKey,
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Client {
    /// Opens (or creates) the store in `dir`, recovering it after any crash, and creates the
    /// device identity on first use.
    pub fn open(dir: &Path, config: ClientConfig) -> Result<Self, Error> {
        let store = Store::open(dir)?;
        let key = store.device_key(now_ms())?;
        Ok(Self { store, config, key })
    }

    /// This device's public key.
    pub fn device_key(&self) -> DeviceKey {
        DeviceKey(self.key.verifying_key().to_bytes())
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Reads a photo file with the size limit applied before reading, then captures it.
    pub fn capture_file(&self, path: &Path, request: &CaptureRequest) -> Result<Captured, Error> {
        let input = |source| Error::Input { path: path.display().to_string(), source };
        let file = std::fs::File::open(path).map_err(input)?;
        let len = file.metadata().map_err(input)?.len();
        let limit = self.config.limits.max_bytes;
        if len > limit {
            return Err(MediaError::TooLarge { actual: len, limit }.into());
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(limit + 1).read_to_end(&mut bytes).map_err(input)?;
        self.capture(&bytes, request)
    }

    /// Captures a photo: check and strip it, hash, sign, and store it durably. When this
    /// returns `Ok`, the capture survives a crash or power loss.
    pub fn capture(&self, photo: &[u8], request: &CaptureRequest) -> Result<Captured, Error> {
        evidence::check_id("election", &request.election)?;
        evidence::check_id("precinct", &request.precinct)?;
        if let Some(note) = &request.note {
            evidence::check_note(note)?;
        }
        let clean = media::strip(photo, &self.config.limits)?;
        let photo_info = PhotoInfo {
            bytes: clean.bytes.len() as u64,
            height: clean.height,
            media_type: clean.media_type,
            orientation: clean.orientation,
            sha256: Sha256Hash::of(&clean.bytes),
            width: clean.width,
        };
        let captured_at_ms = now_ms();
        let device_key = self.device_key();
        // The write transaction holds SQLite's write lock from before the sequence number is
        // chosen until the row is committed: captures are serialized, across processes too,
        // and recovery (which takes the same lock) never sees a capture in flight.
        let captured = self.store.write(|tx| -> Result<Captured, Error> {
            let (seq, prev) = match Store::chain_head(tx)? {
                Some((seq, hash)) => (seq + 1, hash),
                None => (1, Sha256Hash::ZERO),
            };
            let manifest = Manifest {
                captured_at_ms,
                device_key,
                election: request.election.clone(),
                kind: request.kind,
                location: request.location,
                note: request.note.clone(),
                page: request.page,
                photo: photo_info.clone(),
                precinct: request.precinct.clone(),
                prev,
                seq,
                transcription: request.transcription.clone(),
                utc_offset_min: request.utc_offset_min,
                v: evidence::FORMAT_VERSION,
            };
            let signed = SignedManifest::sign(manifest, &self.key)?;
            hooks::pause("capture:before-blob");
            self.store.blobs().put(&photo_info.sha256, &clean.bytes).map_err(StoreError::from)?;
            hooks::pause("capture:after-blob");
            Store::insert_capture(
                tx,
                &NewCapture {
                    id: signed.hash(),
                    manifest: &signed.manifest,
                    canonical: &signed.canonical,
                    signature: &signed.signature,
                    removed_bytes: clean.removed_bytes,
                    now_ms: captured_at_ms,
                },
            )?;
            hooks::pause("capture:before-commit");
            Ok(Captured {
                id: signed.hash(),
                seq,
                manifest: signed.manifest,
                removed_bytes: clean.removed_bytes,
            })
        })?;
        hooks::pause("capture:after-commit");
        tracing::info!(seq = captured.seq, bytes = captured.manifest.photo.bytes, "captured");
        Ok(captured)
    }

    /// All captures, newest first; deleted ones appear as tombstones.
    pub fn list(&self) -> Result<Vec<CaptureRecord>, Error> {
        Ok(self.store.list()?)
    }

    /// Resolves an id or unique prefix (at least 6 hex digits) to a capture.
    pub fn resolve(&self, id_or_prefix: &str) -> Result<CaptureRecord, Error> {
        let mut found = self.store.find(id_or_prefix)?;
        match found.len() {
            0 => Err(Error::NotFound(id_or_prefix.to_owned())),
            1 => Ok(found.remove(0)),
            _ => Err(Error::Ambiguous(id_or_prefix.to_owned())),
        }
    }

    /// A capture with its signed manifest.
    pub fn detail(&self, id_or_prefix: &str) -> Result<CaptureDetail, Error> {
        let record = self.resolve(id_or_prefix)?;
        let signed = match self.store.evidence(&record.id)? {
            Some((canonical, signature)) => Some(SignedManifest::verify(&canonical, &signature)?),
            None => None,
        };
        Ok(CaptureDetail { record, signed })
    }

    /// The stored (stripped) photo of a capture.
    pub fn photo(&self, id_or_prefix: &str) -> Result<Vec<u8>, Error> {
        let record = self.resolve(id_or_prefix)?;
        let (hash, _, _) =
            record.photo.ok_or_else(|| Error::NotFound(format!("{} (deleted)", record.id)))?;
        Ok(self.store.blobs().get(&hash).map_err(StoreError::from)?)
    }

    /// Deletes an unsent capture: its photo is removed, its sequence number and hash stay as a
    /// tombstone so the gap in the device's chain remains visible.
    pub fn delete(&self, id_or_prefix: &str) -> Result<CaptureRecord, Error> {
        let record = self.resolve(id_or_prefix)?;
        if !record.state.is_unsent() {
            return Err(Error::NotDeletable { id: record.id.to_hex(), state: record.state.name() });
        }
        let now = now_ms();
        let orphan = self.store.write(|tx| Store::tombstone(tx, &record.id, now))?;
        hooks::pause("delete:after-commit");
        // After the commit; a crash here leaves an orphan that the next open removes.
        if let Some(hash) = orphan {
            self.store.blobs().remove(&hash).map_err(StoreError::from)?;
        }
        self.store.blobs().remove_thumb(&record.id).map_err(StoreError::from)?;
        self.resolve(&record.id.to_hex())
    }

    /// Marks captures `captured` as `queued` for the next sync; returns how many.
    pub fn queue_all(&self) -> Result<usize, Error> {
        let now = now_ms();
        let records = self.list()?;
        Ok(self.store.write(|tx| -> Result<usize, StoreError> {
            let mut n = 0;
            for r in records.iter().filter(|r| r.state == CaptureState::Captured) {
                n += usize::from(Store::set_state(tx, &r.id, &CaptureState::Queued, now)?);
            }
            Ok(n)
        })?)
    }

    /// Bytes the store uses on disk.
    pub fn storage_used(&self) -> Result<u64, Error> {
        Ok(self.store.bytes_used()?)
    }

    /// The capture's thumbnail (JPEG, longest side [`thumbnail::MAX_SIDE`]), made on first use
    /// from a reduced-scale decode and cached. Not part of capturing.
    pub fn thumbnail(&self, id_or_prefix: &str) -> Result<Vec<u8>, Error> {
        let record = self.resolve(id_or_prefix)?;
        let path = self.store.blobs().thumb_path(&record.id);
        if let Ok(bytes) = std::fs::read(&path) {
            return Ok(bytes);
        }
        let (hash, _, media_type) =
            record.photo.ok_or_else(|| Error::NotFound(format!("{} (deleted)", record.id)))?;
        let photo = self.store.blobs().get(&hash).map_err(StoreError::from)?;
        let orientation = match self.store.evidence(&record.id)? {
            Some((canonical, _)) => Manifest::from_canonical(&canonical)?.photo.orientation,
            None => 1,
        };
        let thumb = thumbnail::make(&photo, media_type, orientation, &self.config.limits)
            .map_err(Error::Thumbnail)?;
        crate::store::blobs::write_durably(self.store.blobs().tmp(), &path, &thumb)
            .map_err(StoreError::from)?;
        Ok(thumb)
    }

    /// Writes an evidence bundle (photo, manifest, signature) of a capture into `dir`.
    pub fn export(&self, id_or_prefix: &str, dir: &Path) -> Result<(), Error> {
        let detail = self.detail(id_or_prefix)?;
        let signed =
            detail.signed.ok_or_else(|| Error::NotFound(format!("{} (deleted)", detail.record.id)))?;
        let photo = self.store.blobs().get(&signed.manifest.photo.sha256).map_err(StoreError::from)?;
        bundle::write(dir, &signed, &photo)?;
        Ok(())
    }
}
