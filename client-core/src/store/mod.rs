//! The offline store: one SQLite database (WAL) plus content-addressed photo files.
//!
//! All SQL of the client lives in this module. Callers get a [`Store`] and use typed
//! functions; `read` and `write` hand a connection or transaction to a closure. One writer
//! connection (behind a mutex, `BEGIN IMMEDIATE` so that other processes queue too) and one
//! reader connection.
//!
//! The store is encrypted ([`crypt`]): the database with SQLCipher, every file sealed, under
//! keys that only the app's [`StoreKey`] unlocks. A plain store of an earlier version is
//! converted when it is first opened with a key ([`Store::open`]); [`wipe()`] destroys a store.
//!
//! Guarantees:
//! - A capture's blob is durable (fsynced file and directory) before its row is committed,
//!   and the commit is durable (`synchronous = FULL`) before the capture is reported.
//! - Opening a store runs recovery under the write lock: temp files and blobs no row references
//!   are removed, so after any crash the store is consistent.

pub mod blobs;
pub mod crypt;
pub mod upgrade;
mod wipe;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use ed25519_dalek::SigningKey;
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};

use crate::decision::DecisionKind;
use crate::evidence::{DeviceKey, EvidenceKind, MediaType, Sha256Hash, parse_lower_hex};
pub use blobs::BlobDir;
pub use crypt::StoreKey;
use crypt::{KEY_FILE, Keys};
pub use wipe::{Wiped, wipe};

/// File name of the database inside the store directory.
pub const DB_FILE: &str = "hattama.sqlite3";

/// Schema migrations; entry `i` upgrades version `i` to `i + 1`. Each runs in its own
/// transaction. Never edit a released entry: add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: device identity and captures.
    "CREATE TABLE device (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        secret_key BLOB NOT NULL CHECK (length(secret_key) = 32),
        public_key BLOB NOT NULL CHECK (length(public_key) = 32),
        created_at_ms INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE captures (
        seq INTEGER PRIMARY KEY CHECK (seq >= 1),
        id TEXT NOT NULL UNIQUE,
        manifest BLOB,
        signature BLOB,
        photo_sha256 TEXT,
        photo_bytes INTEGER,
        media_type TEXT,
        election TEXT NOT NULL,
        precinct TEXT NOT NULL,
        kind TEXT NOT NULL,
        page_number INTEGER NOT NULL,
        page_count INTEGER NOT NULL,
        captured_at_ms INTEGER NOT NULL,
        utc_offset_min INTEGER NOT NULL,
        removed_bytes INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN
            ('captured', 'queued', 'uploading', 'receipted', 'rejected', 'deleted')),
        state_detail TEXT,
        updated_at_ms INTEGER NOT NULL,
        CHECK ((state = 'deleted') = (manifest IS NULL))
    ) STRICT;",
    // 2: key-value settings (server pin, sync cursor) and an index for the sync queue.
    "CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) STRICT;
    CREATE INDEX captures_by_state ON captures (state, seq);",
    // 3: the enrolled server, receipts, and each capture's sync bookkeeping.
    "CREATE TABLE server (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        base_url TEXT NOT NULL,
        device_id TEXT NOT NULL CHECK (length(device_id) = 64),
        receipt_key TEXT NOT NULL CHECK (length(receipt_key) = 64),
        precincts TEXT NOT NULL,
        election BLOB NOT NULL,
        enrolled_at_ms INTEGER NOT NULL,
        last_sync_at_ms INTEGER,
        last_sync_error TEXT
    ) STRICT;
    CREATE TABLE receipts (
        capture_id TEXT PRIMARY KEY REFERENCES captures (id),
        receipt BLOB NOT NULL,
        received_at_ms INTEGER NOT NULL
    ) STRICT;
    ALTER TABLE captures ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE captures ADD COLUMN last_error TEXT;
    ALTER TABLE captures ADD COLUMN next_attempt_at_ms INTEGER;",
    // 4: the public log: its pinned key (NULL for a store enrolled before the log existed),
    // the newest verified checkpoint, a raised alarm, and each receipt's place in the log.
    "ALTER TABLE server ADD COLUMN log_key TEXT;
    CREATE TABLE log_checkpoint (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        size INTEGER NOT NULL CHECK (size >= 1),
        root BLOB NOT NULL CHECK (length(root) = 32),
        note BLOB NOT NULL,
        seen_at_ms INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE log_alarm (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        kind TEXT NOT NULL CHECK (kind IN ('forked', 'shrank')),
        old_size INTEGER NOT NULL,
        new_size INTEGER NOT NULL,
        detail TEXT NOT NULL,
        old_checkpoint BLOB NOT NULL,
        new_checkpoint BLOB NOT NULL,
        raised_at_ms INTEGER NOT NULL
    ) STRICT;
    ALTER TABLE receipts ADD COLUMN log_index INTEGER;
    ALTER TABLE receipts ADD COLUMN log_checkpoint BLOB;",
    // 5: the coordinators' newest review decision on each capture, as the server signed it.
    "CREATE TABLE reviews (
        capture_id TEXT PRIMARY KEY REFERENCES captures (id),
        decision TEXT NOT NULL CHECK (decision IN ('accepted', 'rejected', 'flagged')),
        decision_reason TEXT,
        decided_at_ms INTEGER NOT NULL,
        statement BLOB NOT NULL,
        received_at_ms INTEGER NOT NULL
    ) STRICT;",
    // 6: witnesses: the election package's witness policy (a C2SP tlog-policy; NULL without
    // one), why the last cosigned checkpoint was not taken as witnessed, and the newest
    // checkpoint verified with a quorum of cosignatures under the policy.
    "ALTER TABLE server ADD COLUMN witness_policy BLOB;
    ALTER TABLE server ADD COLUMN witness_problem TEXT;
    CREATE TABLE witnessed_checkpoint (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        size INTEGER NOT NULL CHECK (size >= 1),
        note BLOB NOT NULL,
        cosignatures TEXT NOT NULL,
        seen_at_ms INTEGER NOT NULL
    ) STRICT;",
    // 7: when a receipted capture's photo was removed from the device (the election's
    // `photos_after_receipt`); its hash, size and type stay, the server keeps the photo.
    "ALTER TABLE captures ADD COLUMN photo_removed_at_ms INTEGER;",
];

/// The condition on a row of `captures` that it is `witnessed`: receipted, with its log entry
/// below the size of the witnessed checkpoint (a macro, for `concat!`).
macro_rules! witnessed_sql {
    () => {
        "state = 'receipted' AND EXISTS (SELECT 1 FROM receipts w_r, witnessed_checkpoint w_c
        WHERE w_r.capture_id = captures.id AND w_r.log_index < w_c.size)"
    };
}

/// The schema version this code writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The file system failed.
    #[error("file error: {0}")]
    Io(#[from] std::io::Error),
    /// The database was written by a newer version of this software.
    #[error("the store has schema version {found}; this version understands up to {supported}")]
    TooNew {
        /// Version in the file.
        found: u32,
        /// Newest version known here.
        supported: u32,
    },
    /// Stored data breaks an invariant (a bug or outside tampering).
    #[error("the store is corrupt: {0}")]
    Corrupt(String),
    /// A lock was poisoned by a panic in another thread.
    #[error("internal lock poisoned")]
    Poisoned,
    /// The key given is not this store's key. Nothing was read or changed.
    #[error("the store is locked: this is not its key")]
    Locked,
}

/// Where a capture is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaptureState {
    /// Durably stored on the device, not yet queued for upload.
    Captured,
    /// Waiting for the next sync.
    Queued,
    /// An upload is in progress.
    Uploading,
    /// The server returned a valid receipt.
    Receipted,
    /// The server refused it for good.
    Rejected {
        /// The server's reason.
        reason: String,
    },
    /// Deleted by the observer before it was sent; only its sequence number and hash remain.
    Deleted,
}

impl CaptureState {
    fn to_sql(&self) -> (&'static str, Option<&str>) {
        match self {
            Self::Captured => ("captured", None),
            Self::Queued => ("queued", None),
            Self::Uploading => ("uploading", None),
            Self::Receipted => ("receipted", None),
            Self::Rejected { reason } => ("rejected", Some(reason)),
            Self::Deleted => ("deleted", None),
        }
    }

    fn from_sql(state: &str, detail: Option<String>) -> Result<Self, StoreError> {
        Ok(match state {
            "captured" => Self::Captured,
            "queued" => Self::Queued,
            "uploading" => Self::Uploading,
            "receipted" => Self::Receipted,
            "rejected" => Self::Rejected { reason: detail.unwrap_or_default() },
            "deleted" => Self::Deleted,
            other => return Err(StoreError::Corrupt(format!("unknown state {other}"))),
        })
    }

    /// The state's name as stored and shown (`captured`, `queued`, ...).
    pub fn name(&self) -> &'static str {
        self.to_sql().0
    }

    /// Whether the capture waits to be sent (captured, queued, or its upload started): safe on
    /// the device, not on the server yet.
    pub fn is_pending(&self) -> bool {
        matches!(self, Self::Captured | Self::Queued | Self::Uploading)
    }

    /// Whether the capture has not reached the server yet (and so may be deleted).
    pub fn is_unsent(&self) -> bool {
        matches!(self, Self::Captured | Self::Queued | Self::Rejected { .. })
    }
}

/// The coordinators' newest review decision on a capture, as the server told this device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Review {
    /// What was decided.
    pub kind: DecisionKind,
    /// Why, for a rejection (`unreadable`, `not_a_protocol`, `wrong_precinct`, `duplicate`).
    pub reason: Option<String>,
    /// When (server clock, ms since the epoch).
    pub decided_at_ms: u64,
}

/// One row of the capture list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureRecord {
    /// The capture id: SHA-256 of the canonical manifest.
    pub id: Sha256Hash,
    /// The device sequence number.
    pub seq: u64,
    /// Election id.
    pub election: String,
    /// Precinct id.
    pub precinct: String,
    /// Kind of evidence.
    pub kind: EvidenceKind,
    /// Page number.
    pub page_number: u32,
    /// Page count.
    pub page_count: u32,
    /// Capture time (ms since the epoch, UTC).
    pub captured_at_ms: u64,
    /// The device's UTC offset at capture (minutes).
    pub utc_offset_min: i32,
    /// Photo hash and size and type; `None` once deleted.
    pub photo: Option<(Sha256Hash, u64, MediaType)>,
    /// Metadata bytes removed from the original.
    pub removed_bytes: u64,
    /// Where it is in its life.
    pub state: CaptureState,
    /// Last state change (ms since the epoch).
    pub updated_at_ms: u64,
    /// The coordinators' newest decision, once the server told it.
    pub review: Option<Review>,
    /// Receipted, and its log entry is in a checkpoint the device verified with a quorum of
    /// witnesses' cosignatures under the election's witness policy ([`Self::is_witnessed`]).
    pub witnessed: bool,
    /// When the photo was removed from the device after its verified receipt (the election's
    /// setting, [`crate::retention`]); the server keeps it. `photo` still names it.
    pub photo_removed_at_ms: Option<u64>,
}

impl CaptureRecord {
    /// Whether the capture is `witnessed`: receipted, and a checkpoint that covers its log
    /// entry carries a quorum of valid cosignatures under the election's witness policy (never
    /// without a policy, never for a checkpoint without the quorum).
    pub fn is_witnessed(&self) -> bool {
        self.witnessed && self.state == CaptureState::Receipted
    }

    /// Whether the observer must act on this capture: the server refused it, or coordinators
    /// rejected its photo (a retake, while the observer may still be at the station).
    pub fn needs_action(&self) -> bool {
        matches!(self.state, CaptureState::Rejected { .. })
            || self.review.as_ref().is_some_and(|r| r.kind == DecisionKind::Rejected)
    }
}

/// A new capture's row, written together with its blob.
pub struct NewCapture<'a> {
    /// Its id (manifest hash).
    pub id: Sha256Hash,
    /// The fields mirrored from the manifest for listing.
    pub manifest: &'a crate::evidence::Manifest,
    /// Canonical manifest bytes.
    pub canonical: &'a [u8],
    /// The signature.
    pub signature: &'a [u8; 64],
    /// Metadata bytes removed.
    pub removed_bytes: u64,
    /// Now (ms since the epoch).
    pub now_ms: u64,
}

/// A capture's canonical manifest bytes and signature.
pub type Evidence = (Vec<u8>, [u8; 64]);

/// The server this device enrolled with, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerRecord {
    /// Base URL without a trailing slash (`https://host[:port][/prefix]`).
    pub base_url: String,
    /// The server's id for this device: SHA-256 of the device key bytes.
    pub device_id: Sha256Hash,
    /// The pinned receipt key: every receipt must verify under it.
    pub receipt_key: DeviceKey,
    /// Precincts assigned to this device, sorted, without duplicates.
    pub precincts: Vec<String>,
    /// The election package (JSON, `docs/election-format.md`) as received.
    pub election: Vec<u8>,
    /// When the device last enrolled (ms since the epoch, device clock).
    pub enrolled_at_ms: u64,
    /// When the last sync ended, whatever its outcome.
    pub last_sync_at_ms: Option<u64>,
    /// Why the last sync failed; `None` if it succeeded (or none ran).
    pub last_sync_error: Option<String>,
    /// The pinned key of the server's public log (a signed-note verifier key); `None` for a
    /// store that enrolled before the server had a log (it pins one on its next enrollment).
    pub log_key: Option<String>,
    /// The election package's witness policy (C2SP tlog-policy text) as received; `None`
    /// without witnesses.
    pub witness_policy: Option<Vec<u8>>,
    /// Why the last cosigned checkpoint the server served was not taken as witnessed.
    pub witness_problem: Option<String>,
}

/// The newest checkpoint this device verified with a quorum of cosignatures under the witness
/// policy (and proved consistent with every checkpoint it saw).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessedKept {
    /// Number of entries: every receipted capture whose log entry is below it is `witnessed`.
    pub size: u64,
    /// The signed note with its cosignature lines, exactly as served.
    pub note: Vec<u8>,
    /// The witnesses that cosigned it and when (seconds since the epoch, their clock).
    pub cosignatures: Vec<(String, u64)>,
    /// When it was kept (ms since the epoch, device clock).
    pub seen_at_ms: u64,
}

/// The newest checkpoint of the server's log that this device verified (its signature under
/// the pinned log key, and that it extends every checkpoint seen before).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptCheckpoint {
    /// Number of entries.
    pub size: u64,
    /// Root hash of the tree of `size` entries.
    pub root: [u8; 32],
    /// The signed note exactly as served.
    pub note: Vec<u8>,
    /// When it was kept (ms since the epoch, device clock).
    pub seen_at_ms: u64,
}

/// What the server's log did wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogAlarmKind {
    /// Two signed checkpoints that cannot both be states of one append-only log: the log
    /// forked or was rewritten.
    Forked,
    /// The log signed a smaller tree than one it signed before.
    Shrank,
}

impl LogAlarmKind {
    /// The kind's name as stored and shown (`forked`, `shrank`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Forked => "forked",
            Self::Shrank => "shrank",
        }
    }
}

/// A raised log alarm, kept until someone deals with it: the two signed checkpoints are the
/// evidence (anyone can check both signatures and see that they conflict).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogAlarm {
    /// What happened.
    pub kind: LogAlarmKind,
    /// Size of the checkpoint seen first.
    pub old_size: u64,
    /// Size of the conflicting checkpoint.
    pub new_size: u64,
    /// What was checked and failed.
    pub detail: String,
    /// The checkpoint seen first (signed note).
    pub old_checkpoint: Vec<u8>,
    /// The conflicting checkpoint (signed note).
    pub new_checkpoint: Vec<u8>,
    /// When it was raised (ms since the epoch, device clock).
    pub raised_at_ms: u64,
}

/// A capture the sync still has to send, with what the upload needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingCapture {
    /// The capture id.
    pub id: Sha256Hash,
    /// Its sequence number.
    pub seq: u64,
    /// `Captured`, `Queued` or `Uploading`.
    pub state: CaptureState,
    /// Hash of the photo (the blob's name).
    pub photo_sha256: Sha256Hash,
    /// Length of the photo.
    pub photo_bytes: u64,
    /// Canonical manifest bytes.
    pub canonical: Vec<u8>,
    /// The device's signature over the manifest.
    pub signature: [u8; 64],
    /// Failed sync attempts so far.
    pub attempts: u32,
}

/// The offline store.
pub struct Store {
    dir: PathBuf,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    blobs: BlobDir,
    keys: Arc<Keys>,
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, StoreError> {
    m.lock().map_err(|_| StoreError::Poisoned)
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

/// Applies the migrations from the database's `user_version` up to `target`.
fn migrate(conn: &mut Connection, target: u32) -> Result<(), StoreError> {
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: u32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew { found: version, supported: SCHEMA_VERSION });
        }
        if version >= target {
            return Ok(());
        }
        tx.execute_batch(MIGRATIONS[version as usize])?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
}

/// The first bytes of an unencrypted SQLite database.
const PLAIN_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Whether the database file at `path` is an unencrypted SQLite database (a store of a version
/// before encryption, or one whose conversion was interrupted).
fn is_plain(path: &Path) -> Result<bool, StoreError> {
    use std::io::Read;
    let mut header = [0u8; 16];
    match std::fs::File::open(path) {
        Ok(mut f) => Ok(f.read_exact(&mut header).is_ok() && &header == PLAIN_HEADER),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Opens the database at `path` with the store's SQLCipher key and checks that the key opens
/// it (and that this build has SQLCipher at all).
fn open_keyed(path: &Path, keys: &Keys, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags)?;
    conn.execute_batch(&keys.sqlcipher_pragma())?;
    let cipher: Option<String> =
        conn.query_row("PRAGMA cipher_version", [], |r| r.get(0)).optional()?;
    if cipher.is_none() {
        return Err(StoreError::Corrupt("this build of SQLite cannot encrypt".into()));
    }
    match conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0)) {
        Ok(_) => Ok(conn),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::NotADatabase =>
        {
            Err(StoreError::Locked)
        }
        Err(e) => Err(e.into()),
    }
}

impl Store {
    /// Opens or creates the store in `dir` with the app's `key`, upgrades its schema and
    /// recovers from any crash. A key that is not the store's is [`StoreError::Locked`], and
    /// then no file is changed. A plain store of an earlier version is converted in place.
    pub fn open(dir: &Path, key: &StoreKey) -> Result<Self, StoreError> {
        Self::open_at_version(dir, key, SCHEMA_VERSION)
    }

    /// Opens the store but migrates only up to `version` (for the upgrade tests).
    #[doc(hidden)]
    pub fn open_at_version(dir: &Path, key: &StoreKey, version: u32) -> Result<Self, StoreError> {
        let path = dir.join(DB_FILE);
        // The key is checked before anything is created or changed.
        let keys = if dir.join(KEY_FILE).exists() {
            Keys::unlock(dir, key)?
        } else if is_plain(&path)? {
            blobs::create_dirs(dir)?;
            Keys::create(dir, &dir.join("tmp"), key)?
        } else if std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
            return Err(StoreError::Corrupt(format!(
                "{KEY_FILE} is missing: this store was wiped or damaged"
            )));
        } else {
            std::fs::create_dir_all(dir)?;
            blobs::create_dirs(dir)?;
            Keys::create(dir, &dir.join("tmp"), key)?
        };
        let keys = Arc::new(keys);
        let blobs = BlobDir::open(dir, keys.clone())?;
        if is_plain(&path)? {
            upgrade::convert(dir, &keys, &blobs)?;
        }
        let mut writer = open_keyed(&path, &keys, OpenFlags::default())?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        configure(&writer)?;
        migrate(&mut writer, version)?;
        let reader = open_keyed(
            &path,
            &keys,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&reader)?;
        let store = Self {
            dir: dir.to_owned(),
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            blobs,
            keys,
        };
        if version == SCHEMA_VERSION {
            store.recover()?;
        }
        Ok(store)
    }

    /// Seals the store's data key under `new` instead of the key it was opened with, in one
    /// rename: after a crash the old key or the new one opens the store, whole. Nothing else is
    /// rewritten.
    pub fn rekey(&self, new: &StoreKey) -> Result<(), StoreError> {
        let _writer = lock(&self.writer)?;
        self.keys.seal_into(&self.dir, self.blobs.tmp(), new)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The photo files.
    pub fn blobs(&self) -> &BlobDir {
        &self.blobs
    }

    /// Runs `f` on the reader connection.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = lock(&self.reader)?;
        f(&conn)
    }

    /// Runs `f` in an immediate write transaction, committed if `f` succeeds.
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = lock(&self.writer)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let value = f(&tx)?;
        tx.commit().map_err(StoreError::from)?;
        Ok(value)
    }

    /// Removes what a crash may have left: temp files and unreferenced blobs and thumbnails.
    fn recover(&self) -> Result<usize, StoreError> {
        self.write(|tx| -> Result<usize, StoreError> {
            let mut referenced = HashSet::new();
            let mut live = HashSet::new();
            // A photo removed after its receipt is no longer referenced: a crash between that
            // commit and the removal of its files leaves them for this recovery.
            let mut stmt = tx.prepare(
                "SELECT id, photo_sha256 FROM captures
                 WHERE state != 'deleted' AND photo_removed_at_ms IS NULL",
            )?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            for row in rows {
                let (id, photo) = row?;
                let hash = |h: &str| {
                    Sha256Hash::from_hex(h)
                        .ok_or_else(|| StoreError::Corrupt(format!("bad hash {h} in captures")))
                };
                live.insert(hash(&id)?);
                referenced.insert(hash(&photo)?);
            }
            let removed = self.blobs.remove_unreferenced(&referenced, &live)?;
            if removed > 0 {
                tracing::info!(removed, "store recovery removed leftover files");
            }
            Ok(removed)
        })
    }

    /// The device key, created on first use.
    pub fn device_key(&self, now_ms: u64) -> Result<SigningKey, StoreError> {
        if let Some(key) = self.read(load_device_key)? {
            return Ok(key);
        }
        self.write(|tx| -> Result<SigningKey, StoreError> {
            if let Some(key) = load_device_key(tx)? {
                return Ok(key);
            }
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            tx.execute(
                "INSERT INTO device (id, secret_key, public_key, created_at_ms) VALUES (1, ?1, ?2, ?3)",
                params![key.to_bytes().as_slice(), key.verifying_key().to_bytes().as_slice(), now_ms as i64],
            )?;
            Ok(key)
        })
    }

    /// Lists captures, newest first (deleted ones included as tombstones).
    pub fn list(&self) -> Result<Vec<CaptureRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!("{SELECT_RECORD} ORDER BY seq DESC"))?;
            let rows = stmt.query_map([], raw_record)?;
            rows.map(|r| r.map_err(StoreError::from).and_then(RawRecord::into_record)).collect()
        })
    }

    /// Finds a capture by its id or a unique prefix of it (at least 6 hex digits).
    pub fn find(&self, id_or_prefix: &str) -> Result<Vec<CaptureRecord>, StoreError> {
        if id_or_prefix.len() < 6 || !id_or_prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Vec::new());
        }
        let prefix = id_or_prefix.to_ascii_lowercase();
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!(
                "{SELECT_RECORD} WHERE substr(id, 1, length(?1)) = ?1 ORDER BY seq DESC LIMIT 2"
            ))?;
            let rows = stmt.query_map([&prefix], raw_record)?;
            rows.map(|r| r.map_err(StoreError::from).and_then(RawRecord::into_record)).collect()
        })
    }

    /// The election of this device's first capture (deleted or not), if any: the one election
    /// its device key signs for.
    pub fn first_election(&self) -> Result<Option<String>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .query_row("SELECT election FROM captures ORDER BY seq LIMIT 1", [], |r| r.get(0))
                .optional()?)
        })
    }

    /// The canonical manifest and signature of a live capture.
    pub fn evidence(&self, id: &Sha256Hash) -> Result<Option<Evidence>, StoreError> {
        self.read(|conn| {
            type Row = (Option<Vec<u8>>, Option<Vec<u8>>);
            let row: Option<Row> = conn
                .query_row(
                    "SELECT manifest, signature FROM captures WHERE id = ?1",
                    [id.to_hex()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            match row {
                Some((Some(m), Some(s))) => {
                    let sig: [u8; 64] = s
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("signature is not 64 bytes".into()))?;
                    Ok(Some((m, sig)))
                }
                _ => Ok(None),
            }
        })
    }

    /// Inserts a new capture inside `tx` (the caller has written its blob already).
    pub fn insert_capture(tx: &Transaction<'_>, c: &NewCapture<'_>) -> Result<(), StoreError> {
        let m = c.manifest;
        tx.execute(
            "INSERT INTO captures (seq, id, manifest, signature, photo_sha256, photo_bytes,
                media_type, election, precinct, kind, page_number, page_count, captured_at_ms,
                utc_offset_min, removed_bytes, state, state_detail, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, 'captured',
                NULL, ?16)",
            params![
                m.seq as i64,
                c.id.to_hex(),
                c.canonical,
                c.signature.as_slice(),
                m.photo.sha256.to_hex(),
                m.photo.bytes as i64,
                m.photo.media_type.as_str(),
                m.election,
                m.precinct,
                m.kind.as_str(),
                m.page.number,
                m.page.count,
                m.captured_at_ms as i64,
                m.utc_offset_min,
                c.removed_bytes as i64,
                c.now_ms as i64,
            ],
        )?;
        Ok(())
    }

    /// The last sequence number and manifest hash of this device, inside `tx`.
    pub fn chain_head(tx: &Transaction<'_>) -> Result<Option<(u64, Sha256Hash)>, StoreError> {
        let row: Option<(i64, String)> = tx
            .query_row("SELECT seq, id FROM captures ORDER BY seq DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        row.map(|(seq, id)| {
            let hash = Sha256Hash::from_hex(&id)
                .ok_or_else(|| StoreError::Corrupt(format!("bad capture id {id}")))?;
            Ok((seq as u64, hash))
        })
        .transpose()
    }

    /// Sets a capture's state.
    pub fn set_state(
        tx: &Transaction<'_>,
        id: &Sha256Hash,
        state: &CaptureState,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let (name, detail) = state.to_sql();
        let n = tx.execute(
            "UPDATE captures SET state = ?2, state_detail = ?3, updated_at_ms = ?4 WHERE id = ?1",
            params![id.to_hex(), name, detail, now_ms as i64],
        )?;
        Ok(n == 1)
    }

    /// Turns a capture into a tombstone: its manifest, signature and photo reference are erased,
    /// its sequence number and hash stay. Returns the photo hash if no other live capture uses
    /// the same photo (so the caller may remove the blob after commit).
    pub fn tombstone(
        tx: &Transaction<'_>,
        id: &Sha256Hash,
        now_ms: u64,
    ) -> Result<Option<Sha256Hash>, StoreError> {
        let photo: Option<String> = tx
            .query_row("SELECT photo_sha256 FROM captures WHERE id = ?1", [id.to_hex()], |r| {
                r.get(0)
            })
            .optional()?
            .flatten();
        tx.execute(
            "UPDATE captures SET state = 'deleted', state_detail = NULL, manifest = NULL,
                signature = NULL, photo_sha256 = NULL, photo_bytes = NULL, media_type = NULL,
                updated_at_ms = ?2
             WHERE id = ?1",
            params![id.to_hex(), now_ms as i64],
        )?;
        let Some(photo) = photo else { return Ok(None) };
        photo_if_unused(tx, &photo)
    }

    /// Records that a receipted capture's photo leaves the device (the caller removes its file
    /// and thumbnail after the commit; recovery does it after a crash). Returns whether it was
    /// recorded (false if the capture has no receipt, was deleted, or its photo was removed
    /// already) and the photo's hash if no capture keeps the same photo.
    pub fn remove_photo(
        tx: &Transaction<'_>,
        id: &Sha256Hash,
        now_ms: u64,
    ) -> Result<(bool, Option<Sha256Hash>), StoreError> {
        let n = tx.execute(
            "UPDATE captures SET photo_removed_at_ms = ?2
             WHERE id = ?1 AND manifest IS NOT NULL AND photo_removed_at_ms IS NULL
               AND EXISTS (SELECT 1 FROM receipts WHERE capture_id = ?1)",
            params![id.to_hex(), now_ms as i64],
        )?;
        if n != 1 {
            return Ok((false, None));
        }
        let photo: String =
            tx.query_row("SELECT photo_sha256 FROM captures WHERE id = ?1", [id.to_hex()], |r| {
                r.get(0)
            })?;
        Ok((true, photo_if_unused(tx, &photo)?))
    }

    /// Counts of captures per state name.
    pub fn counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare("SELECT state, count(*) FROM captures GROUP BY state ORDER BY state")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
            rows.map(|r| r.map_err(StoreError::from)).collect()
        })
    }

    /// The state of one capture, inside a transaction (or on any connection).
    pub fn state_of(
        conn: &Connection,
        id: &Sha256Hash,
    ) -> Result<Option<CaptureState>, StoreError> {
        let row: Option<(String, Option<String>)> = conn
            .query_row(
                "SELECT state, state_detail FROM captures WHERE id = ?1",
                [id.to_hex()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(state, detail)| CaptureState::from_sql(&state, detail)).transpose()
    }

    /// The enrolled server, if any.
    pub fn server(&self) -> Result<Option<ServerRecord>, StoreError> {
        self.read(load_server)
    }

    /// The enrolled server, read inside a write transaction.
    pub fn server_in(tx: &Transaction<'_>) -> Result<Option<ServerRecord>, StoreError> {
        load_server(tx)
    }

    /// Writes the enrolled server (the sync outcome columns are kept).
    pub fn save_server(tx: &Transaction<'_>, s: &ServerRecord) -> Result<(), StoreError> {
        let precincts = serde_json::to_string(&s.precincts)
            .map_err(|e| StoreError::Corrupt(format!("precinct list: {e}")))?;
        tx.execute(
            "INSERT INTO server (id, base_url, device_id, receipt_key, precincts, election,
                enrolled_at_ms, log_key, witness_policy)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (id) DO UPDATE SET base_url = ?1, device_id = ?2, receipt_key = ?3,
                precincts = ?4, election = ?5, enrolled_at_ms = ?6, log_key = ?7,
                witness_policy = ?8",
            params![
                s.base_url,
                s.device_id.to_hex(),
                s.receipt_key.to_hex(),
                precincts,
                s.election,
                s.enrolled_at_ms as i64,
                s.log_key,
                s.witness_policy,
            ],
        )?;
        Ok(())
    }

    /// Records why the last cosigned checkpoint was not taken as witnessed (`None`: it was).
    pub fn record_witness_problem(
        tx: &Transaction<'_>,
        problem: Option<&str>,
    ) -> Result<(), StoreError> {
        tx.execute("UPDATE server SET witness_problem = ?1 WHERE id = 1", [problem])?;
        Ok(())
    }

    /// The newest checkpoint verified with a quorum of cosignatures, if any.
    pub fn witnessed_checkpoint(&self) -> Result<Option<WitnessedKept>, StoreError> {
        self.read(|conn| {
            let row: Option<(i64, Vec<u8>, String, i64)> = conn
                .query_row(
                    "SELECT size, note, cosignatures, seen_at_ms FROM witnessed_checkpoint
                     WHERE id = 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            row.map(|(size, note, cosigs, seen)| {
                Ok(WitnessedKept {
                    size: size as u64,
                    note,
                    cosignatures: serde_json::from_str(&cosigs).map_err(|_| {
                        StoreError::Corrupt("bad cosignatures of the witnessed checkpoint".into())
                    })?,
                    seen_at_ms: seen as u64,
                })
            })
            .transpose()
        })
    }

    /// Keeps `c` as the newest witnessed checkpoint unless a larger one is kept already (the
    /// witnessed size never decreases). The caller verified its quorum under the policy and
    /// proved it consistent with the kept log checkpoint. Returns whether it was written.
    pub fn keep_witnessed_checkpoint(
        tx: &Transaction<'_>,
        c: &WitnessedKept,
    ) -> Result<bool, StoreError> {
        let cosigs = serde_json::to_string(&c.cosignatures)
            .map_err(|e| StoreError::Corrupt(format!("cosignatures: {e}")))?;
        let n = tx.execute(
            "INSERT INTO witnessed_checkpoint (id, size, note, cosignatures, seen_at_ms)
             VALUES (1, ?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET size = ?1, note = ?2, cosignatures = ?3,
                seen_at_ms = ?4
             WHERE excluded.size > witnessed_checkpoint.size",
            params![c.size as i64, c.note, cosigs, c.seen_at_ms as i64],
        )?;
        Ok(n == 1)
    }

    /// How many receipted captures are `witnessed` (their log entry below the witnessed size).
    pub fn witnessed_count(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            Ok(conn.query_row(
                concat!("SELECT count(*) FROM captures WHERE ", witnessed_sql!()),
                [],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
    }

    /// Records how a sync ended: `error` is `None` on success.
    pub fn record_sync_end(
        tx: &Transaction<'_>,
        now_ms: u64,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        tx.execute(
            "UPDATE server SET last_sync_at_ms = ?1, last_sync_error = ?2 WHERE id = 1",
            params![now_ms as i64, error],
        )?;
        Ok(())
    }

    /// The first capture after `after_seq`, in sequence order, that still has to be sent
    /// (`captured`, `queued` or `uploading`).
    pub fn next_pending(&self, after_seq: u64) -> Result<Option<PendingCapture>, StoreError> {
        self.read(|conn| {
            let row = conn
                .query_row(
                    "SELECT id, seq, state, photo_sha256, photo_bytes, manifest, signature, attempts
                     FROM captures
                     WHERE state IN ('captured', 'queued', 'uploading') AND seq > ?1
                     ORDER BY seq LIMIT 1",
                    [after_seq as i64],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, Vec<u8>>(5)?,
                            r.get::<_, Vec<u8>>(6)?,
                            r.get::<_, i64>(7)?,
                        ))
                    },
                )
                .optional()?;
            let Some((id, seq, state, photo, bytes, canonical, signature, attempts)) = row else {
                return Ok(None);
            };
            let corrupt = |what: &str| StoreError::Corrupt(format!("bad {what} in capture {id}"));
            Ok(Some(PendingCapture {
                id: Sha256Hash::from_hex(&id).ok_or_else(|| corrupt("id"))?,
                seq: seq as u64,
                state: CaptureState::from_sql(&state, None)?,
                photo_sha256: Sha256Hash::from_hex(&photo).ok_or_else(|| corrupt("photo hash"))?,
                photo_bytes: bytes as u64,
                signature: signature.try_into().map_err(|_| corrupt("signature"))?,
                canonical,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            }))
        })
    }

    /// When the sync suggested trying again, after the last failure of the first capture still
    /// to be sent (the app may schedule its next sync then).
    pub fn next_attempt_at(&self) -> Result<Option<u64>, StoreError> {
        self.read(|conn| {
            let at: Option<Option<i64>> = conn
                .query_row(
                    "SELECT next_attempt_at_ms FROM captures
                     WHERE state IN ('captured', 'queued', 'uploading') ORDER BY seq LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(at.flatten().map(|t| t as u64))
        })
    }

    /// How many captures still have to be sent, and their photo bytes.
    pub fn pending_totals(&self) -> Result<(u64, u64), StoreError> {
        self.read(|conn| {
            Ok(conn.query_row(
                "SELECT count(*), coalesce(sum(photo_bytes), 0) FROM captures
                 WHERE state IN ('captured', 'queued', 'uploading')",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )?)
        })
    }

    /// Moves a capture that still has to be sent to `uploading`. Returns false if it is no
    /// longer pending (deleted, receipted or rejected meanwhile).
    pub fn begin_upload(
        tx: &Transaction<'_>,
        id: &Sha256Hash,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let n = tx.execute(
            "UPDATE captures SET state = 'uploading', state_detail = NULL, updated_at_ms = ?2
             WHERE id = ?1 AND state IN ('captured', 'queued', 'uploading')",
            params![id.to_hex(), now_ms as i64],
        )?;
        Ok(n == 1)
    }

    /// Counts a failed attempt on an uploading capture: its error and when to try next.
    pub fn record_failure(
        tx: &Transaction<'_>,
        id: &Sha256Hash,
        error: &str,
        next_attempt_at_ms: u64,
    ) -> Result<bool, StoreError> {
        let n = tx.execute(
            "UPDATE captures SET attempts = attempts + 1, last_error = ?2, next_attempt_at_ms = ?3
             WHERE id = ?1 AND state = 'uploading'",
            params![id.to_hex(), error, next_attempt_at_ms as i64],
        )?;
        Ok(n == 1)
    }

    /// Stores a verified receipt and marks the capture `receipted`, in one transaction. The
    /// caller must have verified `receipt_json` against the pinned keys and the capture;
    /// `log` is the verified entry index and the signed checkpoint its proof leads to (`None`
    /// only for a store without a pinned log key). Returns false (and stores nothing) if the
    /// capture is not `uploading`, or if a log alarm is raised: nothing is receipted from a
    /// server whose log forked.
    pub fn save_receipt(
        tx: &Transaction<'_>,
        id: &Sha256Hash,
        receipt_json: &[u8],
        log: Option<(u64, &[u8])>,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let n = tx.execute(
            "UPDATE captures SET state = 'receipted', state_detail = NULL, last_error = NULL,
                next_attempt_at_ms = NULL, updated_at_ms = ?2
             WHERE id = ?1 AND state = 'uploading' AND NOT EXISTS (SELECT 1 FROM log_alarm)",
            params![id.to_hex(), now_ms as i64],
        )?;
        if n != 1 {
            return Ok(false);
        }
        let (index, note) = log.map_or((None, None), |(i, n)| (Some(i as i64), Some(n)));
        tx.execute(
            "INSERT INTO receipts (capture_id, receipt, received_at_ms, log_index, log_checkpoint)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id.to_hex(), receipt_json, now_ms as i64, index, note],
        )?;
        Ok(true)
    }

    /// A receipt's verified place in the log: its entry index and the signed checkpoint its
    /// proof led to. `None` if the capture has no receipt or it was stored without a log key.
    pub fn receipt_log(&self, id: &Sha256Hash) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.read(|conn| {
            let row: Option<(Option<i64>, Option<Vec<u8>>)> = conn
                .query_row(
                    "SELECT log_index, log_checkpoint FROM receipts WHERE capture_id = ?1",
                    [id.to_hex()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            Ok(match row {
                Some((Some(i), Some(note))) => Some((i as u64, note)),
                _ => None,
            })
        })
    }

    /// The newest verified checkpoint of the server's log, if one was kept.
    pub fn log_checkpoint(&self) -> Result<Option<KeptCheckpoint>, StoreError> {
        self.read(|conn| {
            let row: Option<(i64, Vec<u8>, Vec<u8>, i64)> = conn
                .query_row(
                    "SELECT size, root, note, seen_at_ms FROM log_checkpoint WHERE id = 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            row.map(|(size, root, note, seen)| {
                Ok(KeptCheckpoint {
                    size: size as u64,
                    root: root
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("kept log root is not 32 bytes".into()))?,
                    note,
                    seen_at_ms: seen as u64,
                })
            })
            .transpose()
        })
    }

    /// Keeps `c` as the newest verified checkpoint unless a larger one is kept already (the
    /// kept size never decreases). Returns whether it was written.
    pub fn keep_log_checkpoint(
        tx: &Transaction<'_>,
        c: &KeptCheckpoint,
    ) -> Result<bool, StoreError> {
        let n = tx.execute(
            "INSERT INTO log_checkpoint (id, size, root, note, seen_at_ms) VALUES (1, ?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET size = ?1, root = ?2, note = ?3, seen_at_ms = ?4
             WHERE excluded.size > log_checkpoint.size",
            params![c.size as i64, c.root.as_slice(), c.note, c.seen_at_ms as i64],
        )?;
        Ok(n == 1)
    }

    /// The raised log alarm, if any.
    pub fn log_alarm(&self) -> Result<Option<LogAlarm>, StoreError> {
        self.read(load_log_alarm)
    }

    /// Raises the log alarm. The first alarm stays (it holds the first evidence); a later one
    /// is not recorded. Returns the alarm now raised.
    pub fn raise_log_alarm(tx: &Transaction<'_>, a: &LogAlarm) -> Result<LogAlarm, StoreError> {
        tx.execute(
            "INSERT INTO log_alarm (id, kind, old_size, new_size, detail, old_checkpoint,
                new_checkpoint, raised_at_ms)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
            params![
                a.kind.name(),
                a.old_size as i64,
                a.new_size as i64,
                a.detail,
                a.old_checkpoint,
                a.new_checkpoint,
                a.raised_at_ms as i64
            ],
        )?;
        load_log_alarm(tx)?.ok_or_else(|| StoreError::Corrupt("log alarm not stored".into()))
    }

    /// Marks an uploading capture `rejected` with the server's reason.
    pub fn reject(
        tx: &Transaction<'_>,
        id: &Sha256Hash,
        reason: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let n = tx.execute(
            "UPDATE captures SET state = 'rejected', state_detail = ?2, last_error = NULL,
                next_attempt_at_ms = NULL, updated_at_ms = ?3
             WHERE id = ?1 AND state = 'uploading'",
            params![id.to_hex(), reason, now_ms as i64],
        )?;
        Ok(n == 1)
    }

    /// Stores the newest review decision on a capture (its verified signed statement), unless
    /// the one stored was decided later. Returns whether it is new or changed; false (storing
    /// nothing) also if the capture is not receipted.
    pub fn save_review(
        tx: &Transaction<'_>,
        id: &Sha256Hash,
        review: &Review,
        statement: &[u8],
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let receipted = matches!(Store::state_of(tx, id)?, Some(CaptureState::Receipted));
        if !receipted {
            return Ok(false);
        }
        let n = tx.execute(
            "INSERT INTO reviews (capture_id, decision, decision_reason, decided_at_ms, statement,
                received_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (capture_id) DO UPDATE SET decision = ?2, decision_reason = ?3,
                decided_at_ms = ?4, statement = ?5, received_at_ms = ?6
             WHERE excluded.decided_at_ms >= reviews.decided_at_ms
               AND (reviews.decision, coalesce(reviews.decision_reason, ''),
                    reviews.decided_at_ms)
                   IS NOT (?2, coalesce(?3, ''), ?4)",
            params![
                id.to_hex(),
                review.kind.as_str(),
                review.reason,
                review.decided_at_ms as i64,
                statement,
                now_ms as i64
            ],
        )?;
        Ok(n == 1)
    }

    /// A capture's stored review statement (the server's signed JSON), if any.
    pub fn review_statement(&self, id: &Sha256Hash) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .query_row(
                    "SELECT statement FROM reviews WHERE capture_id = ?1",
                    [id.to_hex()],
                    |r| r.get(0),
                )
                .optional()?)
        })
    }

    /// A capture's stored receipt (the signed receipt's JSON) and when it was received.
    pub fn receipt(&self, id: &Sha256Hash) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .query_row(
                    "SELECT receipt, received_at_ms FROM receipts WHERE capture_id = ?1",
                    [id.to_hex()],
                    |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)? as u64)),
                )
                .optional()?)
        })
    }

    /// Bytes used by the database and the files.
    pub fn bytes_used(&self) -> Result<u64, StoreError> {
        let mut total = self.blobs.bytes_used()?;
        for suffix in ["", "-wal", "-shm"] {
            if let Ok(meta) = std::fs::metadata(self.dir.join(format!("{DB_FILE}{suffix}"))) {
                total += meta.len();
            }
        }
        Ok(total)
    }
}

/// The photo `photo` (hex) if no capture keeps it on the device any more.
fn photo_if_unused(conn: &Connection, photo: &str) -> Result<Option<Sha256Hash>, StoreError> {
    let still_used: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM captures WHERE photo_sha256 = ?1
            AND state != 'deleted' AND photo_removed_at_ms IS NULL)",
        [photo],
        |r| r.get(0),
    )?;
    if still_used {
        return Ok(None);
    }
    Ok(Sha256Hash::from_hex(photo))
}

fn load_device_key(conn: &Connection) -> Result<Option<SigningKey>, StoreError> {
    let bytes: Option<Vec<u8>> = conn
        .query_row("SELECT secret_key FROM device WHERE id = 1", [], |r| r.get(0))
        .optional()?;
    bytes
        .map(|b| {
            let arr: [u8; 32] = b
                .try_into()
                .map_err(|_| StoreError::Corrupt("device key is not 32 bytes".into()))?;
            Ok(SigningKey::from_bytes(&arr))
        })
        .transpose()
}

fn load_server(conn: &Connection) -> Result<Option<ServerRecord>, StoreError> {
    let row = conn
        .query_row(
            "SELECT base_url, device_id, receipt_key, precincts, election, enrolled_at_ms,
                last_sync_at_ms, last_sync_error, log_key, witness_policy, witness_problem
             FROM server WHERE id = 1",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, Option<Vec<u8>>>(9)?,
                    r.get::<_, Option<String>>(10)?,
                ))
            },
        )
        .optional()?;
    let Some((
        base_url,
        device_id,
        receipt_key,
        precincts,
        election,
        enrolled,
        last_at,
        last_error,
        log_key,
        witness_policy,
        witness_problem,
    )) = row
    else {
        return Ok(None);
    };
    let corrupt = |what: &str| StoreError::Corrupt(format!("bad {what} in the server row"));
    Ok(Some(ServerRecord {
        base_url,
        device_id: Sha256Hash::from_hex(&device_id).ok_or_else(|| corrupt("device id"))?,
        receipt_key: DeviceKey(
            parse_lower_hex::<32>(&receipt_key).ok_or_else(|| corrupt("receipt key"))?,
        ),
        precincts: serde_json::from_str(&precincts).map_err(|_| corrupt("precinct list"))?,
        election,
        enrolled_at_ms: enrolled as u64,
        last_sync_at_ms: last_at.map(|t| t as u64),
        last_sync_error: last_error,
        log_key,
        witness_policy,
        witness_problem,
    }))
}

fn load_log_alarm(conn: &Connection) -> Result<Option<LogAlarm>, StoreError> {
    type Row = (String, i64, i64, String, Vec<u8>, Vec<u8>, i64);
    let row: Option<Row> = conn
        .query_row(
            "SELECT kind, old_size, new_size, detail, old_checkpoint, new_checkpoint,
                raised_at_ms FROM log_alarm WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
        )
        .optional()?;
    let Some((kind, old_size, new_size, detail, old_checkpoint, new_checkpoint, at)) = row else {
        return Ok(None);
    };
    let kind = match kind.as_str() {
        "forked" => LogAlarmKind::Forked,
        "shrank" => LogAlarmKind::Shrank,
        other => return Err(StoreError::Corrupt(format!("unknown log alarm kind {other}"))),
    };
    Ok(Some(LogAlarm {
        kind,
        old_size: old_size as u64,
        new_size: new_size as u64,
        detail,
        old_checkpoint,
        new_checkpoint,
        raised_at_ms: at as u64,
    }))
}

const SELECT_RECORD: &str = concat!(
    "SELECT id, seq, election, precinct, kind, page_number, page_count,
    captured_at_ms, utc_offset_min, photo_sha256, photo_bytes, media_type, removed_bytes, state,
    state_detail, updated_at_ms, r.decision, r.decision_reason, r.decided_at_ms, (",
    witnessed_sql!(),
    "), photo_removed_at_ms FROM captures LEFT JOIN reviews r ON r.capture_id = captures.id"
);

struct RawRecord {
    id: String,
    seq: i64,
    election: String,
    precinct: String,
    kind: String,
    page_number: u32,
    page_count: u32,
    captured_at_ms: i64,
    utc_offset_min: i32,
    photo_sha256: Option<String>,
    photo_bytes: Option<i64>,
    media_type: Option<String>,
    removed_bytes: i64,
    state: String,
    state_detail: Option<String>,
    updated_at_ms: i64,
    decision: Option<String>,
    decision_reason: Option<String>,
    decided_at_ms: Option<i64>,
    witnessed: bool,
    photo_removed_at_ms: Option<i64>,
}

fn raw_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok(RawRecord {
        id: r.get(0)?,
        seq: r.get(1)?,
        election: r.get(2)?,
        precinct: r.get(3)?,
        kind: r.get(4)?,
        page_number: r.get(5)?,
        page_count: r.get(6)?,
        captured_at_ms: r.get(7)?,
        utc_offset_min: r.get(8)?,
        photo_sha256: r.get(9)?,
        photo_bytes: r.get(10)?,
        media_type: r.get(11)?,
        removed_bytes: r.get(12)?,
        state: r.get(13)?,
        state_detail: r.get(14)?,
        updated_at_ms: r.get(15)?,
        decision: r.get(16)?,
        decision_reason: r.get(17)?,
        decided_at_ms: r.get(18)?,
        witnessed: r.get(19)?,
        photo_removed_at_ms: r.get(20)?,
    })
}

impl RawRecord {
    fn into_record(self) -> Result<CaptureRecord, StoreError> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("bad {what} in capture {}", self.id));
        let photo = match (&self.photo_sha256, self.photo_bytes, &self.media_type) {
            (Some(h), Some(b), Some(t)) => Some((
                Sha256Hash::from_hex(h).ok_or_else(|| corrupt("photo hash"))?,
                b as u64,
                MediaType::parse(t).ok_or_else(|| corrupt("media type"))?,
            )),
            _ => None,
        };
        let review = match (&self.decision, self.decided_at_ms) {
            (Some(kind), Some(at)) => Some(Review {
                kind: DecisionKind::parse(kind).ok_or_else(|| corrupt("review decision"))?,
                reason: self.decision_reason.clone(),
                decided_at_ms: at as u64,
            }),
            _ => None,
        };
        Ok(CaptureRecord {
            id: Sha256Hash::from_hex(&self.id).ok_or_else(|| corrupt("id"))?,
            seq: self.seq as u64,
            kind: EvidenceKind::parse(&self.kind).ok_or_else(|| corrupt("kind"))?,
            election: self.election,
            precinct: self.precinct,
            page_number: self.page_number,
            page_count: self.page_count,
            captured_at_ms: self.captured_at_ms as u64,
            utc_offset_min: self.utc_offset_min,
            photo,
            removed_bytes: self.removed_bytes as u64,
            state: CaptureState::from_sql(&self.state, self.state_detail)?,
            updated_at_ms: self.updated_at_ms as u64,
            review,
            witnessed: self.witnessed,
            photo_removed_at_ms: self.photo_removed_at_ms.map(|t| t as u64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StoreKey {
        StoreKey::from_bytes([7; 32])
    }

    fn schema(conn: &Connection) -> Vec<String> {
        let mut out = Vec::new();
        let mut stmt = conn
            .prepare("SELECT type, name, tbl_name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' ORDER BY name")
            .unwrap();
        let objects: Vec<(String, String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (kind, name, table) in objects {
            out.push(format!("{kind} {name} on {table}"));
            let pragma = if kind == "table" { "table_xinfo" } else { "index_xinfo" };
            let mut stmt =
                conn.prepare(&format!("SELECT * FROM pragma_{pragma}('{name}')")).unwrap();
            let n = stmt.column_count();
            let rows = stmt
                .query_map([], |r| {
                    Ok((0..n)
                        .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                        .collect::<Vec<_>>()
                        .join(","))
                })
                .unwrap();
            out.extend(rows.map(Result::unwrap));
        }
        let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        out.push(format!("user_version {version}"));
        out
    }

    /// A capture row as versions 1 and 2 wrote it (raw SQL: the typed functions write the
    /// newest schema).
    fn insert_old_capture(store: &Store) {
        store
            .write(|tx| -> Result<(), StoreError> {
                tx.execute(
                    "INSERT INTO captures (seq, id, manifest, signature, photo_sha256, photo_bytes,
                        media_type, election, precinct, kind, page_number, page_count,
                        captured_at_ms, utc_offset_min, removed_bytes, state, state_detail,
                        updated_at_ms)
                     VALUES (1, ?1, X'7B7D', ?2, ?3, 10, 'image/jpeg', 'e', 'p', 'posted', 1, 1,
                        5, 0, 0, 'queued', NULL, 5)",
                    params![
                        Sha256Hash::of(b"m").to_hex(),
                        vec![7u8; 64],
                        Sha256Hash::of(b"p").to_hex()
                    ],
                )?;
                Ok(())
            })
            .unwrap();
    }

    /// What version 3 wrote at enrollment and for a receipted capture (raw SQL, its columns).
    fn insert_v3_server_and_receipt(store: &Store) -> Sha256Hash {
        let id = Sha256Hash::of(b"m2");
        store
            .write(|tx| -> Result<(), StoreError> {
                tx.execute(
                    "INSERT INTO server (id, base_url, device_id, receipt_key, precincts, election,
                        enrolled_at_ms, last_sync_at_ms, last_sync_error)
                     VALUES (1, 'https://x.kz', ?1, ?2, '[\"p\"]', X'7B7D', 3, 4, NULL)",
                    params![Sha256Hash::of(b"d").to_hex(), "03".repeat(32)],
                )?;
                tx.execute(
                    "INSERT INTO captures (seq, id, manifest, signature, photo_sha256, photo_bytes,
                        media_type, election, precinct, kind, page_number, page_count,
                        captured_at_ms, utc_offset_min, removed_bytes, state, state_detail,
                        updated_at_ms)
                     VALUES (2, ?1, X'7B7D', ?2, ?3, 10, 'image/jpeg', 'e', 'p', 'posted', 1, 1,
                        6, 0, 0, 'receipted', NULL, 6)",
                    params![id.to_hex(), vec![7u8; 64], Sha256Hash::of(b"p").to_hex()],
                )?;
                tx.execute(
                    "INSERT INTO receipts (capture_id, receipt, received_at_ms)
                     VALUES (?1, X'7B7D', 7)",
                    [id.to_hex()],
                )?;
                Ok(())
            })
            .unwrap();
        id
    }

    #[test]
    fn upgraded_database_equals_fresh_one() {
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = Store::open(fresh_dir.path(), &key()).unwrap();
        let a = fresh.read(|c| Ok(schema(c))).unwrap();
        assert!(a.iter().any(|l| l == &format!("user_version {SCHEMA_VERSION}")));
        for from in 1..SCHEMA_VERSION {
            let old_dir = tempfile::tempdir().unwrap();
            let (old_key, receipted) = {
                let old = Store::open_at_version(old_dir.path(), &key(), from).unwrap();
                insert_old_capture(&old);
                let receipted = (from >= 3).then(|| insert_v3_server_and_receipt(&old));
                (old.device_key(1).unwrap().to_bytes(), receipted)
            };
            let upgraded = Store::open(old_dir.path(), &key()).unwrap();
            let b = upgraded.read(|c| Ok(schema(c))).unwrap();
            assert_eq!(a, b, "upgraded from version {from}");
            // The device and the capture made before the upgrade are still there, and the
            // capture is waiting for its first sync.
            assert_eq!(upgraded.device_key(2).unwrap().to_bytes(), old_key);
            let pending = upgraded.next_pending(0).unwrap().unwrap();
            assert_eq!(
                (pending.seq, pending.state, pending.attempts),
                (1, CaptureState::Queued, 0)
            );
            assert_eq!(upgraded.receipt(&pending.id).unwrap(), None);
            assert_eq!(upgraded.log_checkpoint().unwrap(), None);
            assert_eq!(upgraded.log_alarm().unwrap(), None);
            let Some(receipted) = receipted else {
                assert_eq!(upgraded.server().unwrap(), None);
                continue;
            };
            // An enrollment from before the log: no log key (the next enrollment pins one),
            // the rest kept; its receipt is kept, without a place in the log.
            let server = upgraded.server().unwrap().unwrap();
            assert_eq!(
                (server.log_key, server.enrolled_at_ms, server.last_sync_at_ms),
                (None, 3, Some(4))
            );
            assert_eq!(upgraded.receipt(&receipted).unwrap(), Some((b"{}".to_vec(), 7)));
            assert_eq!(upgraded.receipt_log(&receipted).unwrap(), None);
        }
    }

    #[test]
    fn a_plain_store_of_every_version_is_encrypted_in_place() {
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = Store::open(fresh_dir.path(), &key()).unwrap();
        let want = fresh.read(|c| Ok(schema(c))).unwrap();
        for from in 1..=SCHEMA_VERSION {
            let dir = tempfile::tempdir().unwrap();
            upgrade::create_plain(dir.path(), from, &[b"p", b"orphan"]).unwrap();
            let plain = Connection::open(dir.path().join(DB_FILE)).unwrap();
            plain
                .execute(
                    "INSERT INTO captures (seq, id, manifest, signature, photo_sha256, photo_bytes,
                        media_type, election, precinct, kind, page_number, page_count,
                        captured_at_ms, utc_offset_min, removed_bytes, state, state_detail,
                        updated_at_ms)
                     VALUES (1, ?1, X'7B7D', ?2, ?3, 1, 'image/jpeg', 'e', 'p', 'posted', 1, 1,
                        5, 0, 0, 'queued', NULL, 5)",
                    params![
                        Sha256Hash::of(b"m").to_hex(),
                        vec![7u8; 64],
                        Sha256Hash::of(b"p").to_hex()
                    ],
                )
                .unwrap();
            drop(plain);
            let path = dir.path().join(DB_FILE);
            assert!(is_plain(&path).unwrap());
            let store = Store::open(dir.path(), &key()).unwrap();
            assert!(!is_plain(&path).unwrap(), "from version {from}");
            assert_eq!(store.read(|c| Ok(schema(c))).unwrap(), want, "from version {from}");
            assert_eq!(store.list().unwrap().len(), 1);
            assert_eq!(store.blobs().get(&Sha256Hash::of(b"p")).unwrap(), b"p");
            let names: Vec<String> = std::fs::read_dir(dir.path().join("blobs"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(
                names,
                [store
                    .blobs()
                    .path(&Sha256Hash::of(b"p"))
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()],
                "the plain photo files are gone"
            );
            drop(store);
            assert!(matches!(
                Store::open(dir.path(), &StoreKey::from_bytes([8; 32])),
                Err(StoreError::Locked)
            ));
        }
    }

    #[test]
    fn the_kept_checkpoint_only_grows_and_the_first_alarm_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &key()).unwrap();
        let kept = |size: u64| KeptCheckpoint {
            size,
            root: [size as u8; 32],
            note: format!("note {size}").into_bytes(),
            seen_at_ms: size,
        };
        let keep = |size| store.write(|tx| Store::keep_log_checkpoint(tx, &kept(size))).unwrap();
        assert!(keep(5));
        assert!(keep(9));
        assert!(!keep(7), "never back to a smaller tree");
        assert!(!keep(9));
        assert_eq!(store.log_checkpoint().unwrap(), Some(kept(9)));

        // A receipt is stored with its place in the log, until an alarm is raised.
        let capture = |id: &Sha256Hash, seq: i64| {
            store
                .write(|tx| -> Result<(), StoreError> {
                    tx.execute(
                        "INSERT INTO captures (seq, id, manifest, signature, photo_sha256,
                            photo_bytes, media_type, election, precinct, kind, page_number,
                            page_count, captured_at_ms, utc_offset_min, removed_bytes, state,
                            updated_at_ms)
                         VALUES (?1, ?2, X'7B7D', ?3, ?4, 10, 'image/jpeg', 'e', 'p', 'posted',
                            1, 1, 5, 0, 0, 'uploading', 5)",
                        params![seq, id.to_hex(), vec![7u8; 64], Sha256Hash::of(b"p").to_hex()],
                    )?;
                    Ok(())
                })
                .unwrap();
        };
        let (a, b) = (Sha256Hash::of(b"a"), Sha256Hash::of(b"b"));
        capture(&a, 1);
        capture(&b, 2);
        let saved = |id| store.write(|tx| Store::save_receipt(tx, id, b"{}", Some((4, b"cp")), 6));
        assert!(saved(&a).unwrap());
        assert_eq!(store.receipt_log(&a).unwrap(), Some((4, b"cp".to_vec())));

        let alarm = |old_size| LogAlarm {
            kind: LogAlarmKind::Shrank,
            old_size,
            new_size: 1,
            detail: "d".into(),
            old_checkpoint: b"old".to_vec(),
            new_checkpoint: b"new".to_vec(),
            raised_at_ms: 8,
        };
        assert_eq!(store.write(|tx| Store::raise_log_alarm(tx, &alarm(9))).unwrap(), alarm(9));
        assert_eq!(store.write(|tx| Store::raise_log_alarm(tx, &alarm(3))).unwrap(), alarm(9));
        assert_eq!(store.log_alarm().unwrap(), Some(alarm(9)));
        assert!(!saved(&b).unwrap(), "nothing is receipted once the alarm is raised");
        assert_eq!(store.receipt(&b).unwrap(), None);
    }

    #[test]
    fn server_row_round_trips_and_keeps_the_sync_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &key()).unwrap();
        let mut record = ServerRecord {
            base_url: "https://x.kz".into(),
            device_id: Sha256Hash::of(b"d"),
            receipt_key: DeviceKey([3; 32]),
            precincts: vec!["p1".into(), "p2".into()],
            election: b"{}".to_vec(),
            enrolled_at_ms: 5,
            last_sync_at_ms: None,
            last_sync_error: None,
            log_key: Some("log+01234567+AQ==".into()),
            witness_policy: Some(b"quorum none\n".to_vec()),
            witness_problem: None,
        };
        store.write(|tx| Store::save_server(tx, &record)).unwrap();
        assert_eq!(store.server().unwrap().as_ref(), Some(&record));
        store.write(|tx| Store::record_sync_end(tx, 9, Some("unreachable"))).unwrap();
        record.base_url = "https://y.kz".into();
        store.write(|tx| Store::save_server(tx, &record)).unwrap();
        let stored = store.server().unwrap().unwrap();
        assert_eq!(stored.base_url, "https://y.kz");
        assert_eq!(
            (stored.last_sync_at_ms, stored.last_sync_error.as_deref()),
            (Some(9), Some("unreachable"))
        );
        store.write(|tx| Store::record_sync_end(tx, 10, None)).unwrap();
        assert_eq!(store.server().unwrap().unwrap().last_sync_error, None);
    }

    #[test]
    fn a_review_is_kept_for_a_receipted_capture_and_only_a_later_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &key()).unwrap();
        let capture = |id: &Sha256Hash, seq: i64, state: &str| {
            store
                .write(|tx| -> Result<(), StoreError> {
                    tx.execute(
                        "INSERT INTO captures (seq, id, manifest, signature, photo_sha256,
                            photo_bytes, media_type, election, precinct, kind, page_number,
                            page_count, captured_at_ms, utc_offset_min, removed_bytes, state,
                            updated_at_ms)
                         VALUES (?1, ?2, X'7B7D', ?3, ?4, 10, 'image/jpeg', 'e', 'p', 'posted',
                            1, 1, 5, 0, 0, ?5, 5)",
                        params![
                            seq,
                            id.to_hex(),
                            vec![7u8; 64],
                            Sha256Hash::of(b"p").to_hex(),
                            state
                        ],
                    )?;
                    Ok(())
                })
                .unwrap();
        };
        let (sent, queued) = (Sha256Hash::of(b"a"), Sha256Hash::of(b"b"));
        capture(&sent, 1, "receipted");
        capture(&queued, 2, "queued");
        let review = |kind, reason: Option<&str>, at| Review {
            kind,
            reason: reason.map(str::to_owned),
            decided_at_ms: at,
        };
        let save =
            |id, r: &Review| store.write(|tx| Store::save_review(tx, id, r, b"{}", 9)).unwrap();
        let rejected = review(DecisionKind::Rejected, Some("unreadable"), 10);
        assert!(!save(&queued, &rejected), "only a capture the server holds is reviewed");
        assert!(save(&sent, &rejected));
        assert!(!save(&sent, &rejected), "the same decision again is no news");
        assert!(!save(&sent, &review(DecisionKind::Accepted, None, 9)), "an older one is not kept");
        let records = store.list().unwrap();
        let (newest, oldest) = (&records[1], &records[0]);
        assert_eq!(newest.review, Some(rejected));
        assert!(newest.needs_action());
        assert_eq!((oldest.review.as_ref(), oldest.needs_action()), (None, false));
        let accepted = review(DecisionKind::Accepted, None, 11);
        assert!(save(&sent, &accepted));
        let record = store.find(&sent.to_hex()).unwrap().remove(0);
        assert_eq!(record.review, Some(accepted));
        assert!(!record.needs_action());
        assert_eq!(store.review_statement(&sent).unwrap(), Some(b"{}".to_vec()));
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), &key()).unwrap());
        let keys = Keys::unlock(dir.path(), &key()).unwrap();
        let conn = open_keyed(&dir.path().join(DB_FILE), &keys, OpenFlags::default()).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(conn);
        assert!(matches!(Store::open(dir.path(), &key()), Err(StoreError::TooNew { .. })));
    }

    #[test]
    fn device_key_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = Store::open(dir.path(), &key()).unwrap().device_key(1).unwrap();
        let k2 = Store::open(dir.path(), &key()).unwrap().device_key(2).unwrap();
        assert_eq!(k1.to_bytes(), k2.to_bytes());
    }
}
