//! Server storage behind one narrow interface.
//!
//! Handlers and the ingest logic see only [`Storage`]; the embedded default is [`SqliteStorage`]
//! (SQLite in WAL mode plus a content-addressed photo directory, in one data directory). A
//! PostgreSQL + S3-compatible backend implements the same trait without touching handlers.
//!
//! Durability contract of [`Storage::commit_capture`]: when it returns, the photo is durable (a
//! photo of at most [`SMALL_PHOTO_BYTES`] in the capture's own transaction; a larger one as a file
//! fsynced and renamed under its hash, with its directory fsynced before the commit), and the
//! capture row with its receipt is committed (`synchronous = FULL`), together with the capture's
//! log entry at the next log position (commit order). Only then may a receipt be handed out.

#[cfg(test)]
pub(crate) mod conformance;
pub mod console;
mod gallery;
mod group_commit;
pub mod migrate;
mod open;
mod photo_buf;
mod postgres;
pub mod review;
mod sqlite;

use std::io::Write;

pub use console::ConsoleStorage;
pub use gallery::{GalleryStorage, PublicCapture};
use hattama_core::election::Election;
use hattama_core::evidence::{DeviceKey, Sha256Hash};
pub use open::{Backend, Opener, open, open_with};
pub use photo_buf::{BufPool, PhotoBuf};
pub use postgres::PgStorage;
pub use review::{Decision, DecisionKind, ReviewStorage, Transcription, TranscriptionStatus};
pub use sqlite::SqliteStorage;
pub use sqlite::backup::{SnapshotFacts, snapshot, snapshot_facts};

/// Why a storage operation failed. No variant names a storage engine: each backend maps its
/// engine's errors into these, so that callers decide (retry, report, refuse) without knowing
/// which backend answered. Outcomes of the domain (a code used already, a precinct unknown) are
/// not storage errors: they are the `Ok` answers of the methods that have them
/// ([`EnrollRefusal`]).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The storage engine failed in a way that retrying will not mend (a broken query, a
    /// constraint the caller did not expect, a closed connection it could not replace).
    #[error("storage backend error: {source}")]
    Backend {
        /// The engine's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The storage is busy or out of reach for now (a lock held too long, a database that
    /// does not answer, a serialization failure): the same call may succeed later.
    #[error("storage unavailable, try again later: {0}")]
    Unavailable(String),
    /// The file system failed.
    #[error("file error: {0}")]
    Io(#[from] std::io::Error),
    /// Something referenced does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The change conflicts with the stored state (a name taken, a concurrent change).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Stored data breaks an invariant.
    #[error("storage is corrupt: {0}")]
    Corrupt(String),
    /// The database was written by a newer version.
    #[error("database schema {found} is newer than this server ({supported})")]
    TooNew {
        /// Found version.
        found: u32,
        /// Supported version.
        supported: u32,
    },
}

impl StorageError {
    /// A failure of the storage engine, kept as the cause.
    pub fn backend(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend { source: Box::new(source) }
    }
}

impl From<crate::objects::ObjectError> for StorageError {
    fn from(e: crate::objects::ObjectError) -> Self {
        use crate::objects::ObjectError as O;
        match e {
            O::NotFound(key) => Self::NotFound(format!("object {key}")),
            O::Conflict(key) => Self::Conflict(format!("object {key} exists with other bytes")),
            O::Unavailable(m) => Self::Unavailable(m),
            O::Io(e) => Self::Io(e),
            O::InvalidKey(key) => Self::Corrupt(format!("not an object key: {key:?}")),
            O::Backend { source } => Self::Backend { source },
        }
    }
}

/// Why an enrollment code enrolled nothing ([`Storage::enroll`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnrollRefusal {
    /// No such code, or a cancelled one (which enrolls nothing, as if it never existed).
    UnknownCode,
    /// Another device used the code already.
    CodeUsed,
    /// The device key is enrolled for another election: a code for this one needs another
    /// device (a key signs for one election only).
    OtherElection {
        /// The election the device observes.
        observes: String,
        /// The code's election.
        code_for: String,
    },
}

/// An enrolled device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// SHA-256 of the key bytes, hex.
    pub id: String,
    /// Its public key.
    pub key: DeviceKey,
    /// The election it observes.
    pub election: String,
    /// The precincts it may upload for.
    pub precincts: Vec<String>,
    /// When it enrolled.
    pub enrolled_at_ms: u64,
    /// When it was revoked, if it was.
    pub revoked_at_ms: Option<u64>,
}

/// The device id of a key: SHA-256 of its 32 bytes, hex.
pub fn device_id(key: &DeviceKey) -> String {
    Sha256Hash::of(&key.0).to_hex()
}

/// A new upload session (tus creation), already checked.
#[derive(Clone, Debug)]
pub struct NewUpload {
    /// Capture id (manifest hash): also the upload id.
    pub id: Sha256Hash,
    /// Canonical manifest bytes.
    pub manifest: Vec<u8>,
    /// The signature.
    pub signature: [u8; 64],
    /// Photo length.
    pub length: u64,
    /// Now.
    pub now_ms: u64,
}

/// What the server knows of an upload.
#[derive(Clone, Debug)]
pub struct UploadInfo {
    /// Photo length.
    pub length: u64,
    /// Bytes received so far (equal to `length` once stored).
    pub offset: u64,
    /// Whether the capture is stored (and has a receipt).
    pub stored: bool,
    /// Canonical manifest bytes.
    pub manifest: Vec<u8>,
    /// The signature.
    pub signature: [u8; 64],
}

/// A capture ready to be committed.
#[derive(Clone, Debug)]
pub struct NewCapture {
    /// Its id.
    pub id: Sha256Hash,
    /// The device.
    pub device_id: String,
    /// Device sequence number.
    pub seq: u64,
    /// Election id.
    pub election: String,
    /// Precinct id.
    pub precinct: String,
    /// Canonical manifest.
    pub manifest: Vec<u8>,
    /// Signature.
    pub signature: [u8; 64],
    /// Photo hash.
    pub photo_sha256: Sha256Hash,
    /// Photo length.
    pub photo_bytes: u64,
    /// Media type.
    pub media_type: String,
    /// When received.
    pub received_at_ms: u64,
    /// The signed receipt (JSON) to keep with it.
    pub receipt: Vec<u8>,
    /// The photo's bytes.
    pub photo: PhotoBytes,
}

impl NewCapture {
    /// Its entry in the public log, in canonical bytes (`LogEntry::to_bytes`), as both
    /// backends store it with the capture.
    pub fn log_entry(&self) -> Vec<u8> {
        hattama_core::log::LogEntry {
            capture_id: self.id,
            election: self.election.clone(),
            photo_sha256: self.photo_sha256,
            precinct: self.precinct.clone(),
            received_at_ms: self.received_at_ms,
            v: hattama_core::log::ENTRY_VERSION,
        }
        .to_bytes()
    }
}

/// What [`Storage::commit_capture`] answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The capture's receipt (JSON): the first one, if the capture was stored already.
    pub receipt: Vec<u8>,
    /// Its position in the log.
    pub log_index: u64,
    /// Its log entry (canonical bytes), if the commit wrote it now.
    pub log_entry: Option<Vec<u8>>,
}

/// Why [`Storage::commit_capture`] stored nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitRefusal {
    /// The capture's device was revoked before the commit.
    DeviceRevoked,
}

/// What storage knows of a manifest's election, precinct and device, for the checks of an
/// upload ([`Storage::admission`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// The election exists.
    pub election_known: bool,
    /// The election has the precinct.
    pub precinct_known: bool,
    /// The device key is enrolled.
    pub device_known: bool,
    /// The device is revoked.
    pub device_revoked: bool,
    /// The device is enrolled for this election and precinct.
    pub precinct_assigned: bool,
    /// The number of lines of the election's protocol (0 if the election is unknown), which
    /// the per-precinct quota's default is derived from.
    pub protocol_lines: u64,
}

/// Photos of at most this many bytes are stored in the database, in the transaction that commits
/// their capture, rather than as files: for blobs this small, SQLite reads and writes faster than
/// the file system (<https://www.sqlite.org/intern-v-extern-blob.html>), and a capture's commit
/// then needs no file created, no file fsync and no directory fsync. A creation request carrying
/// such a photo whole is stored in one step, without an upload session (`ingest::store_whole`).
pub const SMALL_PHOTO_BYTES: u64 = 64 * 1024;

/// Where the photo of a capture being committed is.
#[derive(Clone, Debug)]
pub enum PhotoBytes {
    /// In its upload's file, written by [`Storage::upload_writer`].
    Upload,
    /// Here, whole (a photo of at most [`SMALL_PHOTO_BYTES`], or any the caller holds).
    Held(PhotoBuf),
}

/// A stored capture's canonical manifest and signature.
pub type Evidence = (Vec<u8>, [u8; 64]);

/// A stored capture, as listed for operators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCapture {
    /// Capture id.
    pub id: Sha256Hash,
    /// Device id.
    pub device_id: String,
    /// Device sequence number.
    pub seq: u64,
    /// Election.
    pub election: String,
    /// Precinct.
    pub precinct: String,
    /// Photo hash.
    pub photo_sha256: Sha256Hash,
    /// Photo length.
    pub photo_bytes: u64,
    /// When stored.
    pub received_at_ms: u64,
}

/// Appends the bytes of one PATCH request to an upload.
pub trait UploadWriter: Write + Send {
    /// Makes the appended bytes durable and returns the new offset.
    fn finish(self: Box<Self>) -> Result<u64, StorageError>;
    /// Drops what this writer appended (a failed checksum) and returns the offset before it.
    fn rollback(self: Box<Self>) -> Result<u64, StorageError>;
}

/// Everything the server stores. Methods are blocking; async code calls them through
/// `web::block`.
pub trait Storage: Send + Sync + 'static {
    /// Imports (or replaces) an election definition. Returns whether it was new.
    fn import_election(&self, election: &Election, now_ms: u64) -> Result<bool, StorageError>;
    /// An election by id.
    fn election(&self, id: &str) -> Result<Option<Election>, StorageError>;
    /// Everything the checks of an upload ask about its election, precinct and device, at once.
    fn admission(
        &self,
        election: &str,
        precinct: &str,
        key: &DeviceKey,
    ) -> Result<Admission, StorageError>;
    /// Creates `count` one-time enrollment codes for these precincts of an election.
    fn create_invites(
        &self,
        election: &str,
        precincts: &[String],
        count: usize,
        now_ms: u64,
    ) -> Result<Vec<String>, StorageError>;
    /// Uses a code: binds the device key to the code's election and precincts. The same
    /// device using its own code again gets the same device; every other refusal is an
    /// [`EnrollRefusal`], which changes nothing.
    fn enroll(
        &self,
        code: &str,
        key: &DeviceKey,
        now_ms: u64,
    ) -> Result<Result<Device, EnrollRefusal>, StorageError>;
    /// All devices.
    fn devices(&self) -> Result<Vec<Device>, StorageError>;
    /// Revokes a device by id; returns whether it existed.
    fn revoke_device(&self, id: &str, now_ms: u64) -> Result<bool, StorageError>;
    /// Records an upload session; creating an existing one again (or one whose capture is
    /// stored) is a no-op. Returns whether this call created it: of two concurrent creations
    /// of one session, exactly one.
    fn create_upload(&self, upload: &NewUpload) -> Result<bool, StorageError>;
    /// An upload (or a stored capture) by id.
    fn upload(&self, id: &Sha256Hash) -> Result<Option<UploadInfo>, StorageError>;
    /// A writer appending at `offset`, which must be the current offset.
    fn upload_writer(
        &self,
        id: &Sha256Hash,
        offset: u64,
    ) -> Result<Box<dyn UploadWriter>, StorageError>;
    /// Reads a complete upload's bytes.
    fn read_upload(&self, id: &Sha256Hash, limit: u64) -> Result<Vec<u8>, StorageError>;
    /// Discards an unfinished upload and its bytes.
    fn discard_upload(&self, id: &Sha256Hash) -> Result<(), StorageError>;
    /// Every unfinished upload: its id, the device that created it, its length and when.
    fn open_uploads(&self) -> Result<Vec<OpenUpload>, StorageError>;
    /// How many captures a device has stored for a precinct.
    fn captures_of_device_in_precinct(
        &self,
        device_id: &str,
        election: &str,
        precinct: &str,
    ) -> Result<u64, StorageError>;
    /// Stores a complete capture, durably (see the module docs). If the capture is stored
    /// already, keeps the first and returns its receipt. A new capture of a device revoked
    /// before the commit is refused ([`CommitRefusal`]) and nothing of it is recorded: the
    /// check is made in the commit's own transaction, so no revocation can slip in between.
    fn commit_capture(
        &self,
        capture: NewCapture,
    ) -> Result<Result<Committed, CommitRefusal>, StorageError>;
    /// A stored capture's receipt.
    fn receipt(&self, id: &Sha256Hash) -> Result<Option<Vec<u8>>, StorageError>;
    /// A stored photo's bytes, by its hash.
    fn photo(&self, sha256: &Sha256Hash) -> Result<Option<Vec<u8>>, StorageError>;
    /// How many captures are stored.
    fn capture_count(&self) -> Result<u64, StorageError>;
    /// Every stored capture, in the order received.
    fn captures(&self) -> Result<Vec<StoredCapture>, StorageError>;

    /// A stored capture's canonical manifest and signature.
    fn evidence(&self, id: &Sha256Hash) -> Result<Option<Evidence>, StorageError>;

    /// Number of entries in the log: the size of its newest checkpoint.
    fn log_size(&self) -> Result<u64, StorageError>;
    /// Stored Merkle hashes by their storage index (Go `tlog` numbering).
    fn read_log_hashes(&self, indexes: &[u64]) -> Result<Vec<[u8; 32]>, StorageError>;
    /// Appends stored hashes `first_hash..` (those that entries `old_size..new_size` add) and
    /// the checkpoint of `new_size` entries in one durable transaction; fails, changing
    /// nothing, unless the log is `old_size` entries long.
    fn append_log(
        &self,
        old_size: u64,
        new_size: u64,
        first_hash: u64,
        hashes: &[[u8; 32]],
        checkpoint: &[u8],
    ) -> Result<(), StorageError>;
    /// A stored capture's position in the log. [`Storage::commit_capture`] gives it (in commit
    /// order, with the capture's entry); the capture is in the log once a checkpoint larger
    /// than it is published.
    fn log_index(&self, capture: &Sha256Hash) -> Result<Option<u64>, StorageError>;
    /// The canonical bytes of the entries at positions `start..end`, as far as captures are
    /// stored: past the log's size they are the integrator's queue.
    fn log_entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, StorageError>;
    /// The newest checkpoint (size and signed note).
    fn latest_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>, StorageError>;
    /// The checkpoint of exactly `size` entries.
    fn checkpoint(&self, size: u64) -> Result<Option<Vec<u8>>, StorageError>;
    /// When the capture at log position `index` was stored (its entry's `received_at_ms`), if
    /// one is stored there: the integration lag of `/readyz` and `/metrics`.
    fn log_entry_stored_at(&self, index: u64) -> Result<Option<u64>, StorageError>;
    /// A new claim on the right to integrate the log ([`LogLease`]), not yet taken.
    fn log_lease(&self) -> Result<Box<dyn LogLease>, StorageError>;
}

/// The right to integrate the log: among the servers sharing one storage, one holds it at a
/// time, and only the holder appends checkpoints and publishes the log's objects. It is an
/// optimisation of who does the work, not the safety of the log: [`Storage::append_log`] is a
/// compare-and-swap on the stored log's size, so a second writer that believes it holds the
/// lease still cannot commit a second checkpoint for one size.
///
/// The embedded backend's lease is always held (its data directory's lock already makes the
/// server the only one). PostgreSQL's is a session-level advisory lock on a connection of its
/// own: when the holder dies, its connection closes and PostgreSQL releases the lock, so another
/// instance takes it at its next try.
pub trait LogLease: Send {
    /// Takes the lease if it is free, or confirms that it is still held (the holder's
    /// connection still answers): `Ok(true)` while this claim holds it. An error (the database
    /// out of reach) means it is not held now; the next call tries again.
    fn hold(&mut self) -> Result<bool, StorageError>;
    /// Whether other servers write to this storage too (captures they commit, checkpoints they
    /// publish), so that a server looks for their changes rather than waiting to be told.
    fn shared(&self) -> bool;
}

/// The lease of a storage only one server uses: always held.
pub struct SoleLease;

impl LogLease for SoleLease {
    fn hold(&mut self) -> Result<bool, StorageError> {
        Ok(true)
    }

    fn shared(&self) -> bool {
        false
    }
}

/// Makes a data directory private to the server's user, whatever the umask it was created
/// under: the directory and its subdirectories 0700, the database (with its WAL and shared
/// memory files), the lock and the keys 0600. Files created later are private through the
/// process's umask (0077, set by `hattama-server` before anything else); a data directory made
/// before that keeps older files readable only inside this 0700 directory.
pub fn make_private(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let set = |path: std::path::PathBuf, mode: u32| match std::fs::metadata(&path) {
        Ok(m) if m.permissions().mode() & 0o777 != mode => {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    set(dir.to_owned(), 0o700)?;
    for sub in ["blobs", "uploads", "keys", "thumbs", "log"] {
        set(dir.join(sub), 0o700)?;
    }
    for file in [
        "hattama-server.sqlite3",
        "hattama-server.sqlite3-wal",
        "hattama-server.sqlite3-shm",
        "server.lock",
        "keys/receipt.key",
        "keys/log.key",
    ] {
        set(dir.join(file), 0o600)?;
    }
    Ok(())
}

/// Crockford base32 without the ambiguous letters: 20 characters, 100 bits, in groups of four.
fn new_code() -> String {
    // The alphabet devices read codes in (`canonical_code`): no I, L, O or U.
    const ALPHABET: &[u8] = hattama_core::invite::CODE_ALPHABET.as_bytes();
    let bytes: [u8; 20] = rand::random();
    let chars: Vec<char> = bytes.iter().map(|b| ALPHABET[(*b & 31) as usize] as char).collect();
    chars.chunks(4).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join("-")
}

/// An unfinished upload, for the quotas of `ingest::create_upload`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenUpload {
    /// Its capture id.
    pub id: Sha256Hash,
    /// The device key (hex) of its manifest.
    pub device_key: String,
    /// Its `Upload-Length`.
    pub length: u64,
    /// When it was created.
    pub created_at_ms: u64,
}
