//! The observer's client: one handle over one offline store.
//!
//! [`Client::capture`] is the critical path: check and strip the photo, hash, sign, write the
//! blob durably, commit the row durably, and only then return. Nothing slower (decoding,
//! thumbnails, network) happens on it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
#[cfg(feature = "sync")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;

use crate::bundle::{self, BundleError};
use crate::election::Election;
use crate::evidence::{
    self, CoarseLocation, DeviceKey, EvidenceError, EvidenceKind, Manifest, Page, Sha256Hash,
    SignedManifest,
};
use crate::hooks;
use crate::media::{self, MediaError, MediaLimits};
use crate::store::{
    self, CaptureRecord, CaptureState, NewCapture, ServerRecord, Store, StoreError, StoreKey,
};
use crate::thumbnail;
#[cfg(feature = "sync")]
use crate::{
    receipt::{ReceiptError, SignedReceipt},
    sync::{
        self, CancelToken, Enrollment, SyncConfig, SyncError, SyncListener, SyncLock, SyncStatus,
        SyncSummary,
    },
};

/// Settings the app hands to the core. The core reads no environment or config file.
#[derive(Clone, Debug, Default)]
pub struct ClientConfig {
    /// Limits on photos.
    pub limits: MediaLimits,
    /// Timeouts, chunk size and back-off of enrollment and sync.
    #[cfg(feature = "sync")]
    pub sync: SyncConfig,
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
    /// The capture's photo was removed from this device after its verified receipt (the
    /// election's setting); the server keeps it.
    #[error(
        "the photo of capture {0} is on the server only: it was removed from this device after          the server's receipt"
    )]
    PhotoOnServer(String),
    /// Enrollment or sync failed.
    #[cfg(feature = "sync")]
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The capture does not fit the election package received at enrollment: refused before
    /// anything was signed or stored.
    #[error(transparent)]
    Refused(#[from] CaptureRefusal),
}

/// Why a capture was refused at the station, before signing: it does not fit the election
/// package this device received at enrollment, so the server would refuse it later, when the
/// observer may have left. Nothing was signed or stored and no sequence number was used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CaptureRefusal {
    /// The election is not the one this device is enrolled for.
    #[error(
        "this device is enrolled for election {enrolled}, not {given}: capture with election \
         {enrolled}"
    )]
    WrongElection {
        /// What the observer gave.
        given: String,
        /// The enrolled election.
        enrolled: String,
    },
    /// Before enrollment: this store's device key already signed for another election (its
    /// first capture's), and a device key signs for one election only.
    #[error(
        "this store's device key signs for election {election} only (its first capture's), not \
         {given}: capture with election {election}, or use a new store for {given}, which gets \
         its own device key"
    )]
    AnotherElection {
        /// What the observer gave.
        given: String,
        /// The election of the store's first capture.
        election: String,
    },
    /// No polling station of the election has this id or number.
    #[error(
        "election {election} has no polling station {given:?} (by id or number): check the \
         station's number on its door; this device is assigned {}",
        list(.assigned)
    )]
    UnknownPrecinct {
        /// What the observer gave.
        given: String,
        /// The election.
        election: String,
        /// The stations assigned to this device, as `id (No. n)`.
        assigned: Vec<String>,
    },
    /// The polling station exists but was not assigned to this device at enrollment.
    #[error(
        "polling station {precinct} (No. {number}) is not assigned to this device, so the \
         server would refuse its photo; this device is assigned {}. Ask your coordinator for \
         an enrollment code for this station and enroll with it, then capture again",
        list(.assigned)
    )]
    PrecinctNotAssigned {
        /// The station's id.
        precinct: String,
        /// Its official number.
        number: u32,
        /// The stations assigned to this device, as `id (No. n)`.
        assigned: Vec<String>,
    },
    /// The transcription names a line the election's protocol does not have.
    #[error(
        "the protocol of election {election} has no line {line:?}: use the line numbers \
         printed on the protocol ({})",
        list(.lines)
    )]
    UnknownLine {
        /// The line given.
        line: String,
        /// The election.
        election: String,
        /// The protocol's lines.
        lines: Vec<String>,
    },
}

impl CaptureRefusal {
    /// The stable code word (the FFI's `FixInput` code, the CLI's JSON `error`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::WrongElection { .. } | Self::AnotherElection { .. } => "wrong_election",
            Self::UnknownPrecinct { .. } => "unknown_precinct",
            Self::PrecinctNotAssigned { .. } => "precinct_not_assigned",
            Self::UnknownLine { .. } => "unknown_line",
        }
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "none".to_owned() } else { items.join(", ") }
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
    /// The enrolled election package, parsed, with the enrollment time and package length it
    /// was parsed from: parsed again only when the device enrolled again.
    election: Mutex<Option<(u64, usize, Arc<Election>)>>,
    /// Set while this handle runs a sync (the file lock guards other handles and processes).
    #[cfg(feature = "sync")]
    syncing: AtomicBool,
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Client {
    /// Opens (or creates) the store in `dir` with the app's `key` (never written to disk),
    /// recovering it after any crash, and creates the device identity on first use. A key that
    /// is not the store's is [`StoreError::Locked`] and changes no file; a plain store of an
    /// earlier version is encrypted in place.
    pub fn open(dir: &Path, key: &StoreKey, config: ClientConfig) -> Result<Self, Error> {
        let store = Store::open(dir, key)?;
        let key = store.device_key(now_ms())?;
        Ok(Self {
            store,
            config,
            key,
            election: Mutex::new(None),
            #[cfg(feature = "sync")]
            syncing: AtomicBool::new(false),
        })
    }

    /// This device's public key.
    pub fn device_key(&self) -> DeviceKey {
        DeviceKey(self.key.verifying_key().to_bytes())
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// From now on the store opens with `new` instead of the key it was opened with (one
    /// rename: after a crash one of the two keys opens it).
    pub fn rekey(&self, new: &StoreKey) -> Result<(), Error> {
        Ok(self.store.rekey(new)?)
    }

    /// The panic wipe of this handle's store ([`store::wipe()`]): unreadable at once, then gone.
    pub fn wipe(self) -> Result<store::Wiped, Error> {
        let dir = self.store.dir().to_owned();
        drop(self);
        Ok(store::wipe(&dir)?)
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

    /// Checks a capture request against the election package received at enrollment, as
    /// [`Self::capture`] does before it signs anything: the election must be the enrolled one,
    /// the precinct (its id, or its number as on the station's door) one of the election's
    /// and assigned to this device, every transcribed line a line of the protocol.
    /// Returns the request as it will be signed (the precinct given by its id) and whether it
    /// was checked against an enrollment: `false` when the device is not enrolled yet, so that
    /// only the fields' form could be checked (the server checks the rest when it is sent).
    pub fn check_request(&self, request: &CaptureRequest) -> Result<(CaptureRequest, bool), Error> {
        let mut request = request.clone();
        request.election = request.election.trim().to_owned();
        request.precinct = request.precinct.trim().to_owned();
        let Some(server) = self.store.server()? else {
            evidence::check_id("election", &request.election)?;
            evidence::check_id("precinct", &request.precinct)?;
            // One device key signs for one election only (nothing public links an observer's
            // captures across elections): before enrollment, the first capture's election is
            // the store's.
            if let Some(first) = self.store.first_election()?
                && first != request.election
            {
                return Err(CaptureRefusal::AnotherElection {
                    given: request.election,
                    election: first,
                }
                .into());
            }
            return Ok((request, false));
        };
        let election = self.enrolled_election(&server)?;
        let election = election.as_ref();
        if request.election != election.id {
            return Err(CaptureRefusal::WrongElection {
                given: request.election,
                enrolled: election.id.clone(),
            }
            .into());
        }
        let assigned = || -> Vec<String> {
            server
                .precincts
                .iter()
                .map(|id| match election.precinct(id) {
                    Some(p) => format!("{id} (No. {})", p.number),
                    None => id.clone(),
                })
                .collect()
        };
        let Some(precinct) = election.find_precinct(&request.precinct) else {
            return Err(CaptureRefusal::UnknownPrecinct {
                given: request.precinct,
                election: election.id.clone(),
                assigned: assigned(),
            }
            .into());
        };
        if !server.precincts.contains(&precinct.id) {
            return Err(CaptureRefusal::PrecinctNotAssigned {
                precinct: precinct.id.clone(),
                number: precinct.number,
                assigned: assigned(),
            }
            .into());
        }
        request.precinct = precinct.id.clone();
        for line in request.transcription.iter().flat_map(|t| t.keys()) {
            if !election.has_line(line) {
                return Err(CaptureRefusal::UnknownLine {
                    line: line.clone(),
                    election: election.id.clone(),
                    lines: election.protocol.lines.iter().map(|l| l.id.clone()).collect(),
                }
                .into());
            }
        }
        Ok((request, true))
    }

    /// The stored election package, parsed once per enrollment (a national election's package
    /// is large; a capture should not parse it every time).
    fn enrolled_election(&self, server: &ServerRecord) -> Result<Arc<Election>, Error> {
        let mut cached = self.election.lock().map_err(|_| StoreError::Poisoned)?;
        let key = (server.enrolled_at_ms, server.election.len());
        if let Some((at, len, election)) = cached.as_ref()
            && (*at, *len) == key
        {
            return Ok(election.clone());
        }
        let election = Arc::new(
            Election::from_json(&server.election)
                .map_err(|e| StoreError::Corrupt(format!("stored election package: {e}")))?,
        );
        *cached = Some((key.0, key.1, election.clone()));
        Ok(election)
    }

    /// Captures a photo: check the request ([`Self::check_request`]), check and strip the
    /// photo, hash, sign, and store it durably. When this returns `Ok`, the capture survives a
    /// crash or power loss. A refused request or photo leaves nothing stored and uses no
    /// sequence number.
    pub fn capture(&self, photo: &[u8], request: &CaptureRequest) -> Result<Captured, Error> {
        let (request, _) = self.check_request(request)?;
        let request = &request;
        evidence::check_id("election", &request.election)?;
        evidence::check_id("precinct", &request.precinct)?;
        if let Some(note) = &request.note {
            evidence::check_note(note)?;
        }
        let clean = media::strip(photo, &self.config.limits)?;
        let photo_info = clean.info();
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

    /// The stored (stripped) photo of a capture; [`Error::PhotoOnServer`] once it left the
    /// device after its receipt.
    pub fn photo(&self, id_or_prefix: &str) -> Result<Vec<u8>, Error> {
        let record = self.resolve(id_or_prefix)?;
        if record.photo_removed_at_ms.is_some() {
            return Err(Error::PhotoOnServer(record.id.to_hex()));
        }
        let (hash, _, _) =
            record.photo.ok_or_else(|| Error::NotFound(format!("{} (deleted)", record.id)))?;
        Ok(self.store.blobs().get(&hash).map_err(StoreError::from)?)
    }

    /// Deletes an unsent capture: its photo is removed, its sequence number and hash stay as a
    /// tombstone so the gap in the device's chain remains visible.
    pub fn delete(&self, id_or_prefix: &str) -> Result<CaptureRecord, Error> {
        let record = self.resolve(id_or_prefix)?;
        let now = now_ms();
        // The state is checked again inside the write transaction: a sync in another process
        // may have started sending the capture since it was read.
        let orphan = self.store.write(|tx| -> Result<Option<Sha256Hash>, Error> {
            let state = Store::state_of(tx, &record.id)?.unwrap_or(CaptureState::Deleted);
            if !state.is_unsent() {
                return Err(Error::NotDeletable { id: record.id.to_hex(), state: state.name() });
            }
            Ok(Store::tombstone(tx, &record.id, now)?)
        })?;
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
        if record.photo_removed_at_ms.is_some() {
            return Err(Error::PhotoOnServer(record.id.to_hex()));
        }
        if let Some(bytes) = self.store.blobs().get_thumb(&record.id).map_err(StoreError::from)? {
            return Ok(bytes);
        }
        let (hash, _, media_type) =
            record.photo.ok_or_else(|| Error::NotFound(format!("{} (deleted)", record.id)))?;
        let photo = self.store.blobs().get(&hash).map_err(StoreError::from)?;
        let orientation = match self.store.evidence(&record.id)? {
            Some((canonical, _)) => Manifest::from_canonical(&canonical)?.photo.orientation,
            None => 1,
        };
        let thumb = thumbnail::make(&photo, media_type, orientation)
            .map_err(|e| Error::Thumbnail(e.to_string()))?;
        self.store.blobs().put_thumb(&record.id, &thumb).map_err(StoreError::from)?;
        Ok(thumb)
    }

    /// Enrolls this device with the server at `base_url` using a one-time `code`
    /// (`docs/sync-protocol.md`, "Enrollment"): proves possession of the device key, then pins
    /// the server's receipt key and stores its precincts and election package. Enrolling again
    /// with the same server adds the new code's precincts; a different receipt key is refused
    /// with [`SyncError::ServerKeyChanged`]. Transient failures are retried with back-off.
    #[cfg(feature = "sync")]
    pub fn enroll(&self, base_url: &str, code: &str) -> Result<Enrollment, Error> {
        sync::enroll(&self.store, &self.key, &self.config.sync, base_url, code)
    }

    /// Enrolls with an invite URI exactly as a coordinator handed it out
    /// (`hattama://enroll?server=…&code=…`, [`sync::invite_uri`]); see [`Self::enroll`].
    #[cfg(feature = "sync")]
    pub fn enroll_invite(&self, invite: &str) -> Result<Enrollment, Error> {
        let (base_url, code) = sync::parse_invite(invite)?;
        self.enroll(&base_url, &code)
    }

    /// The stored enrollment, if this device enrolled.
    #[cfg(feature = "sync")]
    pub fn enrollment(&self) -> Result<Option<Enrollment>, Error> {
        self.store.server()?.map(Enrollment::from_record).transpose()
    }

    /// Sends every capture that is not receipted or rejected, in sequence order, and stores
    /// each verified receipt (`docs/sync-protocol.md`, "The device's sync loop"). Blocks the
    /// calling thread (not for use inside an async runtime); progress goes to `listener`;
    /// `cancel` stops it between requests and during waits, with `Ok` and
    /// [`SyncSummary::cancelled`] set. Only one sync per store runs at a time: another gets
    /// [`SyncError::SyncBusy`].
    #[cfg(feature = "sync")]
    pub fn sync(
        &self,
        listener: &dyn SyncListener,
        cancel: &CancelToken,
    ) -> Result<SyncSummary, Error> {
        if self.syncing.swap(true, Ordering::SeqCst) {
            return Err(SyncError::SyncBusy.into());
        }
        struct Reset<'a>(&'a AtomicBool);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst);
            }
        }
        let _reset = Reset(&self.syncing);
        let _lock = SyncLock::acquire(self.store.dir())?;
        sync::run(&self.store, &self.key, &self.config.sync, listener, cancel)
    }

    /// Counts per state, the enrolled server and how the last sync ended.
    #[cfg(feature = "sync")]
    pub fn status(&self) -> Result<SyncStatus, Error> {
        let mut rows = self.store.counts()?;
        rows.push(("witnessed".to_owned(), self.store.witnessed_count()?));
        let counts = sync::state_counts(&rows);
        let server = self.store.server()?;
        let running = self.syncing.load(Ordering::SeqCst) || SyncLock::is_held(self.store.dir());
        Ok(SyncStatus {
            counts,
            server_url: server.as_ref().map(|s| s.base_url.clone()),
            device_id: server.as_ref().map(|s| s.device_id),
            last_sync_at_ms: server.as_ref().and_then(|s| s.last_sync_at_ms),
            last_sync_error: server.as_ref().and_then(|s| s.last_sync_error.clone()),
            next_attempt_at_ms: self.store.next_attempt_at()?,
            running,
            witness_policy: server.as_ref().is_some_and(|s| s.witness_policy.is_some()),
            witness_problem: server.as_ref().and_then(|s| s.witness_problem.clone()),
            log_key: server.and_then(|s| s.log_key),
            log_checkpoint: self.store.log_checkpoint()?,
            log_alarm: self.store.log_alarm()?,
            witnessed_checkpoint: self.store.witnessed_checkpoint()?,
        })
    }

    /// A receipted capture's receipt (verified when it was stored) and when it arrived.
    #[cfg(feature = "sync")]
    pub fn receipt(&self, id_or_prefix: &str) -> Result<Option<(SignedReceipt, u64)>, Error> {
        let record = self.resolve(id_or_prefix)?;
        let Some((json, received_at_ms)) = self.store.receipt(&record.id)? else {
            return Ok(None);
        };
        let receipt = SignedReceipt::from_json(&json)
            .map_err(|e| StoreError::Corrupt(format!("stored receipt of {}: {e}", record.id)))?;
        Ok(Some((receipt, received_at_ms)))
    }

    /// Checks a capture's stored receipt again, now, under the keys pinned at enrollment (the
    /// check the sync made before storing it): it must name this capture and its photo, and
    /// if it was stored with its place in the log, its log entry and inclusion proof must
    /// verify under the pinned log key and lead to the stored checkpoint.
    /// [`Error::NotFound`] if the capture has no receipt, [`SyncError::ReceiptInvalid`] if it
    /// no longer verifies (the store was changed behind the core's back).
    #[cfg(feature = "sync")]
    pub fn verify_receipt(&self, id_or_prefix: &str) -> Result<(SignedReceipt, u64), Error> {
        let record = self.resolve(id_or_prefix)?;
        let no_receipt = || Error::NotFound(format!("a receipt for {}", record.id));
        let (receipt, received_at_ms) =
            self.receipt(&record.id.to_hex())?.ok_or_else(no_receipt)?;
        let (photo, _, _) = record.photo.ok_or_else(no_receipt)?;
        let enrollment = self.enrollment()?.ok_or(SyncError::NotEnrolled)?;
        let invalid = |source| SyncError::ReceiptInvalid { capture: record.id, source };
        receipt.verify(&enrollment.receipt_key, &record.id, &photo).map_err(invalid)?;
        if let Some((index, note)) = self.store.receipt_log(&record.id)? {
            let log_key = enrollment.log_key.ok_or_else(|| {
                StoreError::Corrupt("a receipt has a log proof but no log key is pinned".into())
            })?;
            let v = receipt
                .verify_log(&log_key, &record.election, &record.precinct)
                .map_err(invalid)?;
            if v.index != index || v.checkpoint.note != note {
                return Err(invalid(ReceiptError::Mismatch("stored log place")).into());
            }
        }
        Ok((receipt, received_at_ms))
    }

    /// Writes an evidence bundle (photo, manifest, signature) of a capture into `dir`; without
    /// the photo file if the photo left the device after its receipt (its bundle verifies with
    /// the server's copy, [`bundle::verify_with_photo`]). Returns whether the photo is in it.
    pub fn export(&self, id_or_prefix: &str, dir: &Path) -> Result<bool, Error> {
        let detail = self.detail(id_or_prefix)?;
        let signed = detail
            .signed
            .ok_or_else(|| Error::NotFound(format!("{} (deleted)", detail.record.id)))?;
        if detail.record.photo_removed_at_ms.is_some() {
            bundle::write(dir, &signed, None)?;
            return Ok(false);
        }
        let photo =
            self.store.blobs().get(&signed.manifest.photo.sha256).map_err(StoreError::from)?;
        bundle::write(dir, &signed, Some(&photo))?;
        Ok(true)
    }
}
