//! The embedded default storage: SQLite (WAL, `synchronous = FULL`) and files in one data
//! directory: `hattama-server.sqlite3` (with the photos of at most `SMALL_PHOTO_BYTES`, in its
//! table `small_photos`), `blobs/<sha256>` (larger stored photos), `uploads/<id>.part`
//! (unfinished uploads). All SQL of the server lives here.

// Row tuples read straight from SQL are clearer inline than behind one-use type aliases.
#![allow(clippy::type_complexity)]

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use hattama_core::election::Election;
use hattama_core::evidence::{DeviceKey, Sha256Hash};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};

pub mod backup;
mod log;
#[cfg(test)]
mod tests;

mod review;

use super::group_commit::GroupCommit;
use super::{
    Admission, CommitRefusal, Committed, Device, EnrollRefusal, NewCapture, NewUpload, PhotoBytes,
    SMALL_PHOTO_BYTES, Storage, StorageError, StoredCapture, UploadInfo, UploadWriter, device_id,
    new_code,
};

mod console;
mod gallery;

pub(in crate::storage) const DB_FILE: &str = "hattama-server.sqlite3";

const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE elections (
    id TEXT PRIMARY KEY,
    definition BLOB NOT NULL,
    imported_at_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE precincts (
    election TEXT NOT NULL REFERENCES elections (id),
    id TEXT NOT NULL,
    number INTEGER NOT NULL,
    region TEXT NOT NULL,
    district TEXT NOT NULL,
    address TEXT NOT NULL,
    PRIMARY KEY (election, id)
) STRICT;
CREATE TABLE invites (
    code TEXT PRIMARY KEY,
    election TEXT NOT NULL REFERENCES elections (id),
    precincts TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    used_by TEXT,
    used_at_ms INTEGER
) STRICT;
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    key BLOB NOT NULL UNIQUE,
    election TEXT NOT NULL REFERENCES elections (id),
    enrolled_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
) STRICT;
CREATE TABLE device_precincts (
    device_id TEXT NOT NULL REFERENCES devices (id),
    precinct TEXT NOT NULL,
    PRIMARY KEY (device_id, precinct)
) STRICT;
CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    manifest BLOB NOT NULL,
    signature BLOB NOT NULL,
    length INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE captures (
    id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices (id),
    seq INTEGER NOT NULL,
    election TEXT NOT NULL,
    precinct TEXT NOT NULL,
    manifest BLOB NOT NULL,
    signature BLOB NOT NULL,
    photo_sha256 TEXT NOT NULL,
    photo_bytes INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    receipt BLOB NOT NULL
) STRICT;
CREATE INDEX captures_by_device ON captures (device_id, seq);
CREATE INDEX captures_by_precinct ON captures (election, precinct);
",
    "
CREATE TABLE log_entries (
    idx INTEGER PRIMARY KEY CHECK (idx >= 0),
    capture_id TEXT NOT NULL UNIQUE REFERENCES captures (id),
    entry BLOB NOT NULL
) STRICT;
CREATE TABLE log_hashes (
    idx INTEGER PRIMARY KEY,
    hash BLOB NOT NULL CHECK (length(hash) = 32)
) STRICT;
CREATE TABLE checkpoints (
    size INTEGER PRIMARY KEY,
    note BLOB NOT NULL
) STRICT;
",
    // Official results: every import is kept as a numbered version (gallery.rs).
    "
CREATE TABLE official_versions (
    election TEXT NOT NULL REFERENCES elections (id),
    version INTEGER NOT NULL CHECK (version >= 1),
    imported_at_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    precincts INTEGER NOT NULL,
    PRIMARY KEY (election, version)
) STRICT;
CREATE TABLE official_figures (
    election TEXT NOT NULL,
    version INTEGER NOT NULL,
    precinct TEXT NOT NULL,
    line TEXT NOT NULL,
    value INTEGER NOT NULL CHECK (value >= 0),
    PRIMARY KEY (election, version, precinct, line),
    FOREIGN KEY (election, version) REFERENCES official_versions (election, version)
) STRICT, WITHOUT ROWID;
CREATE INDEX captures_by_photo ON captures (photo_sha256);
",
    review::MIGRATION,
    // The log position is given when a capture is committed (commit order), and its entry is
    // stored with it, keyed by that position: the log's queue needs no index of capture ids.
    // Merkle hashes are stored in blocks of 64 (storage order), not one row per hash. Captures
    // committed but not yet logged take the next positions in the order the integrator would
    // have taken them (rowid); their entries are written as `LogEntry::to_bytes` writes them
    // (keys in this order, compact, integers bare; ids are plain ASCII).
    "
ALTER TABLE captures ADD COLUMN log_index INTEGER CHECK (log_index >= 0);
ALTER TABLE log_entries RENAME TO log_entries_v2;
UPDATE captures SET log_index = (SELECT idx FROM log_entries_v2 WHERE capture_id = captures.id);
UPDATE captures SET log_index = pending.idx
FROM (SELECT rowid AS r,
        (SELECT coalesce(max(idx) + 1, 0) FROM log_entries_v2)
            + row_number() OVER (ORDER BY rowid) - 1 AS idx
      FROM captures WHERE log_index IS NULL) AS pending
WHERE captures.rowid = pending.r;
CREATE TABLE log_entries (
    idx INTEGER PRIMARY KEY CHECK (idx >= 0),
    entry BLOB NOT NULL
) STRICT;
INSERT INTO log_entries (idx, entry) SELECT idx, entry FROM log_entries_v2 ORDER BY idx;
INSERT INTO log_entries (idx, entry)
SELECT log_index, CAST(json_object('capture_id', id, 'election', election,
        'photo_sha256', photo_sha256, 'precinct', precinct, 'received_at_ms', received_at_ms,
        'v', 1) AS BLOB)
FROM captures WHERE log_index >= (SELECT coalesce(max(idx) + 1, 0) FROM log_entries_v2)
ORDER BY log_index;
DROP TABLE log_entries_v2;
CREATE TABLE log_hash_blocks (
    block INTEGER PRIMARY KEY CHECK (block >= 0),
    hashes BLOB NOT NULL CHECK (length(hashes) BETWEEN 32 AND 2048 AND length(hashes) % 32 = 0)
) STRICT;
INSERT INTO log_hash_blocks (block, hashes)
SELECT idx / 64, CAST(group_concat(hash, x'' ORDER BY idx) AS BLOB) FROM log_hashes
GROUP BY idx / 64;
DROP TABLE log_hashes;
",
    // Photos of at most `SMALL_PHOTO_BYTES`, stored with the first capture that shows them
    // (`commit_capture`), keyed by its log position: appended in order, so that a capture's
    // commit touches no index of random keys for its photo. Found by hash through
    // `captures_by_photo`.
    "
CREATE TABLE small_photos (
    log_index INTEGER PRIMARY KEY,
    bytes BLOB NOT NULL
) STRICT;
",
    // A device's captures of one precinct are counted at every upload (the per-precinct quota):
    // this index answers the count by itself, without reading each capture's row.
    "
CREATE INDEX captures_by_device_precinct ON captures (device_id, election, precinct);
",
    // The number of lines of an election's protocol, which the per-precinct quota's default is
    // derived from at every upload (`Admission::protocol_lines`), without parsing the definition.
    "
ALTER TABLE elections ADD COLUMN protocol_lines INTEGER NOT NULL DEFAULT 0;
UPDATE elections SET protocol_lines = coalesce(json_array_length(definition, '$.protocol.lines'), 0);
",
    console::MIGRATION,
    console::REFUSALS_MIGRATION,
    // The per-precinct quota counts a device's captures of a precinct once per process and then
    // keeps the count in memory (`captures_of_device_in_precinct`): the index made for that
    // count only cost every capture's commit an insert. The queries by device use
    // `captures_by_device`, those by election and precinct `captures_by_precinct`.
    "
DROP INDEX captures_by_device_precinct;
",
];

pub(in crate::storage) const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;
const READERS: usize = 4;
/// How much of the database file each reader maps (`PRAGMA mmap_size`; see `open`).
const READER_MMAP_BYTES: i64 = 256 << 20;

/// SQLite + files storage.
pub struct SqliteStorage {
    dir: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    review_cache: review::ReviewCache,
    /// A connection only for `PRAGMA data_version` (whose value is per connection).
    watch: Mutex<Connection>,
    /// Captures waiting for their group commit ([`SqliteStorage::group_commit`]).
    commits: GroupCommit<NewCapture, Result<Committed, CommitRefusal>>,
    /// Stored captures per device, election and precinct, counted once from the database and
    /// then kept up to date by every commit (see `captures_of_device_in_precinct`): the
    /// per-precinct quota asks at every upload.
    precinct_counts: Mutex<HashMap<(String, String, String), u64>>,
}

/// Stores an election definition and its precincts inside the caller's transaction; returns
/// whether the election is new.
fn import_election_in(
    tx: &Connection,
    election: &Election,
    now_ms: u64,
) -> Result<bool, StorageError> {
    let definition = serde_json::to_vec(election)
        .map_err(|e| StorageError::Corrupt(format!("cannot encode election: {e}")))?;
    let existed: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM elections WHERE id = ?1)",
        [&election.id],
        |r| r.get(0),
    )?;
    tx.execute(
        "INSERT INTO elections (id, definition, imported_at_ms, protocol_lines)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET definition = excluded.definition,
            imported_at_ms = excluded.imported_at_ms,
            protocol_lines = excluded.protocol_lines",
        params![election.id, definition, ms(now_ms), election.protocol.lines.len() as i64],
    )?;
    for p in &election.precincts {
        tx.execute(
            "INSERT INTO precincts (election, id, number, region, district, address)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (election, id) DO UPDATE SET number = excluded.number,
                region = excluded.region, district = excluded.district,
                address = excluded.address",
            params![election.id, p.id, p.number, p.region, p.district, p.address],
        )?;
    }
    Ok(!existed)
}

/// SQLite's errors, named by what the caller can do about them: a database busy or locked past
/// the busy timeout may answer later; anything else is the backend's failure.
impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
        match e.sqlite_error_code() {
            Some(DatabaseBusy | DatabaseLocked) => StorageError::Unavailable(e.to_string()),
            _ => StorageError::backend(e),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, StorageError> {
    m.lock().map_err(|_| StorageError::Corrupt("lock poisoned".into()))
}

/// Removes a file if it is there.
fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn configure(conn: &Connection) -> Result<(), StorageError> {
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

fn ms(v: u64) -> i64 {
    v as i64
}

fn load_device(conn: &Connection, key: &[u8]) -> Result<Option<Device>, StorageError> {
    let row: Option<(String, Vec<u8>, String, i64, Option<i64>)> = conn
        .prepare_cached(
            "SELECT id, key, election, enrolled_at_ms, revoked_at_ms FROM devices WHERE key = ?1",
        )?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .optional()?;
    let Some((id, key, election, enrolled, revoked)) = row else { return Ok(None) };
    let key: [u8; 32] =
        key.try_into().map_err(|_| StorageError::Corrupt("device key length".into()))?;
    let mut stmt = conn.prepare_cached(
        "SELECT precinct FROM device_precincts WHERE device_id = ?1 ORDER BY precinct",
    )?;
    let precincts = stmt.query_map([&id], |r| r.get(0))?.collect::<Result<Vec<String>, _>>()?;
    Ok(Some(Device {
        id,
        key: DeviceKey(key),
        election,
        precincts,
        enrolled_at_ms: enrolled as u64,
        revoked_at_ms: revoked.map(|v| v as u64),
    }))
}

/// A stored capture's receipt and log position.
fn committed(c: &Connection, id: &Sha256Hash) -> Result<Option<Committed>, StorageError> {
    let row: Option<(Vec<u8>, i64)> = c
        .prepare_cached("SELECT receipt, log_index FROM captures WHERE id = ?1")?
        .query_row([id.to_hex()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.map(|(receipt, index)| Committed { receipt, log_index: index as u64, log_entry: None }))
}

/// Inserts a capture with its receipt and its log entry at the next log position, in `tx`, and
/// its photo if it is held (a small photo); a file photo is durable already. A capture stored
/// already keeps its first receipt.
fn insert_capture(
    tx: &Transaction<'_>,
    c: &NewCapture,
) -> Result<Result<Committed, CommitRefusal>, StorageError> {
    if let Some(existing) = committed(tx, &c.id)? {
        return Ok(Ok(existing));
    }
    let revoked = tx
        .prepare_cached("SELECT revoked_at_ms IS NOT NULL FROM devices WHERE id = ?1")?
        .query_row([&c.device_id], |r| r.get::<_, bool>(0))
        .optional()?;
    if revoked == Some(true) {
        return Ok(Err(CommitRefusal::DeviceRevoked));
    }
    // Its place in the log: the next one, in commit order, with its entry queued for the
    // integrator in the same transaction.
    let log_index = log::next_index(tx)?;
    if let PhotoBytes::Held(bytes) = &c.photo {
        // Once per photo: a second capture of the same bytes shares the first one's.
        tx.prepare_cached(
            "INSERT INTO small_photos (log_index, bytes)
             SELECT ?1, ?2 WHERE NOT EXISTS (SELECT 1 FROM captures WHERE photo_sha256 = ?3)",
        )?
        .execute(params![log_index as i64, &bytes[..], c.photo_sha256.to_hex()])?;
    }
    let entry = c.log_entry();
    log::queue_entry(tx, log_index, &entry)?;
    tx.prepare_cached(
        "INSERT INTO captures (id, device_id, seq, election, precinct, manifest, signature,
            photo_sha256, photo_bytes, media_type, received_at_ms, receipt, log_index)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        c.id.to_hex(),
        c.device_id,
        ms(c.seq),
        c.election,
        c.precinct,
        c.manifest,
        c.signature.as_slice(),
        c.photo_sha256.to_hex(),
        ms(c.photo_bytes),
        c.media_type,
        ms(c.received_at_ms),
        c.receipt,
        log_index as i64,
    ])?;
    tx.prepare_cached("DELETE FROM uploads WHERE id = ?1")?.execute([c.id.to_hex()])?;
    Ok(Ok(Committed { receipt: c.receipt.clone(), log_index, log_entry: Some(entry) }))
}

impl SqliteStorage {
    /// Opens (creating and migrating) the storage in `dir`. With `recover`, also removes what a
    /// crash may have left (photos no capture references, upload files without a session); only
    /// the serving process may do that, never an admin command running beside it.
    pub fn open(dir: &Path, recover: bool) -> Result<Self, StorageError> {
        for sub in ["blobs", "uploads"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let path = dir.join(DB_FILE);
        let mut writer = Connection::open(&path)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        super::make_private(dir)?;
        configure(&writer)?;
        // 128 MiB of page cache for the one writer (a limit; pages are cached as they are used):
        // every capture goes into the random-keyed index of capture ids (its primary key), and
        // with SQLite's default 2 MB each insert would read that index's pages again.
        writer.pragma_update(None, "cache_size", -131_072)?;
        // Checkpoint the WAL into the database every 8,000 pages (32 MB) instead of SQLite's
        // 1,000: the pages every commit touches (the ends of the capture and log tables, the
        // indexes' hot pages) are then copied once per 8,000 pages of WAL, not once per 1,000.
        writer.pragma_update(None, "wal_autocheckpoint", 8000)?;
        loop {
            let tx = writer.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let version: u32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version > SCHEMA_VERSION {
                return Err(StorageError::TooNew { found: version, supported: SCHEMA_VERSION });
            }
            if version == SCHEMA_VERSION {
                break;
            }
            tx.execute_batch(MIGRATIONS[version as usize])?;
            tx.pragma_update(None, "user_version", version + 1)?;
            tx.commit()?;
        }
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            configure(&r)?;
            // A reader drops its whole page cache whenever the database changed since its last
            // read, which under a stream of commits is at nearly every read: mapped, the pages
            // of the database file are looked at in place instead of read and cached again
            // (those still in the WAL are read as before). The tables every upload asks
            // (elections, precincts, devices) are among the first pages of the file.
            r.pragma_update(None, "mmap_size", READER_MMAP_BYTES)?;
            readers.push(Mutex::new(r));
        }
        let storage = Self {
            dir: dir.to_owned(),
            writer: Mutex::new(writer),
            readers,
            review_cache: review::ReviewCache::default(),
            watch: Mutex::new(Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?),
            commits: GroupCommit::default(),
            precinct_counts: Mutex::default(),
        };
        if recover {
            storage.recover()?;
        }
        Ok(storage)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        for r in &self.readers {
            if let Ok(conn) = r.try_lock() {
                return f(&conn);
            }
        }
        let conn = lock(&self.readers[0])?;
        f(&conn)
    }

    /// Commits a capture whose photo is held or renamed into place, together with the captures
    /// other threads are completing at the same moment: one thread at a time leads a round,
    /// which fsyncs the photo directory once (if a photo of the round is a file) and commits
    /// every queued row in one transaction (one WAL fsync); the others wait for their round.
    /// Each caller returns only after its own round is durable. If a round's transaction fails,
    /// its captures are committed one by one, so that one bad capture fails alone.
    fn group_commit(
        &self,
        c: NewCapture,
    ) -> Result<Result<Committed, CommitRefusal>, StorageError> {
        self.commits.submit(c, |captures| {
            if captures.iter().any(|c| matches!(c.photo, PhotoBytes::Upload)) {
                fsync_dir(&self.dir.join("blobs"))?;
            }
            let mut conn = lock(&self.writer)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let receipts: Vec<Result<Committed, CommitRefusal>> =
                captures.iter().map(|c| insert_capture(&tx, c)).collect::<Result<_, _>>()?;
            tx.commit()?;
            // Still under the writer's lock, which a count read from the database holds too.
            let mut counts = lock(&self.precinct_counts)?;
            for (c, r) in captures.iter().zip(&receipts) {
                // A new capture has its log entry; one stored before does not.
                if let Ok(r) = r
                    && r.log_entry.is_some()
                    && let Some(n) = counts.get_mut(&(
                        c.device_id.clone(),
                        c.election.clone(),
                        c.precinct.clone(),
                    ))
                {
                    *n += 1;
                }
            }
            Ok(receipts)
        })
    }

    /// Where a stored photo larger than [`SMALL_PHOTO_BYTES`] is.
    fn blob_path(&self, sha256: &Sha256Hash) -> PathBuf {
        self.dir.join("blobs").join(sha256.to_hex())
    }

    fn part_path(&self, id: &Sha256Hash) -> PathBuf {
        self.dir.join("uploads").join(format!("{}.part", id.to_hex()))
    }

    fn recover(&self) -> Result<(), StorageError> {
        let conn = lock(&self.writer)?;
        let mut stmt = conn.prepare("SELECT photo_sha256 FROM captures")?;
        let photos: HashSet<String> =
            stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        let mut stmt = conn.prepare("SELECT id FROM uploads")?;
        let uploads: HashSet<String> =
            stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        let mut removed = 0;
        for entry in fs::read_dir(self.dir.join("blobs"))? {
            let entry = entry?;
            if !photos.contains(&*entry.file_name().to_string_lossy()) {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        for entry in fs::read_dir(self.dir.join("uploads"))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name.strip_suffix(".part").unwrap_or(&name);
            if !uploads.contains(id) {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "recovery removed leftover files");
        }
        Ok(())
    }
}

struct PartWriter {
    file: File,
    start: u64,
    written: u64,
}

impl Write for PartWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl UploadWriter for PartWriter {
    fn finish(self: Box<Self>) -> Result<u64, StorageError> {
        // Partial uploads need not be durable (the client resends from the server's offset);
        // a complete one is fsynced once, by `commit_capture`, before it is renamed.
        Ok(self.start + self.written)
    }

    fn rollback(self: Box<Self>) -> Result<u64, StorageError> {
        self.file.set_len(self.start)?;
        self.file.sync_data()?;
        Ok(self.start)
    }
}

impl Storage for SqliteStorage {
    fn import_election(&self, election: &Election, now_ms: u64) -> Result<bool, StorageError> {
        let mut conn = lock(&self.writer)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let new = import_election_in(&tx, election, now_ms)?;
        tx.commit()?;
        Ok(new)
    }

    fn election(&self, id: &str) -> Result<Option<Election>, StorageError> {
        let bytes: Option<Vec<u8>> = self.read(|c| {
            Ok(c.query_row("SELECT definition FROM elections WHERE id = ?1", [id], |r| r.get(0))
                .optional()?)
        })?;
        bytes
            .map(|b| {
                serde_json::from_slice(&b)
                    .map_err(|e| StorageError::Corrupt(format!("election {id}: {e}")))
            })
            .transpose()
    }

    fn admission(
        &self,
        election: &str,
        precinct: &str,
        key: &DeviceKey,
    ) -> Result<Admission, StorageError> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM elections WHERE id = ?1),
                        EXISTS (SELECT 1 FROM precincts WHERE election = ?1 AND id = ?2),
                        d.id IS NOT NULL,
                        d.revoked_at_ms IS NOT NULL,
                        coalesce(d.election = ?1 AND EXISTS (SELECT 1 FROM device_precincts
                            WHERE device_id = d.id AND precinct = ?2), 0),
                        coalesce((SELECT protocol_lines FROM elections WHERE id = ?1), 0)
                 FROM (SELECT 1) LEFT JOIN devices AS d ON d.key = ?3",
            )?
            .query_row(params![election, precinct, key.0.as_slice()], |r| {
                Ok(Admission {
                    election_known: r.get(0)?,
                    precinct_known: r.get(1)?,
                    device_known: r.get(2)?,
                    device_revoked: r.get(3)?,
                    precinct_assigned: r.get(4)?,
                    protocol_lines: r.get::<_, i64>(5)?.max(0) as u64,
                })
            })?)
        })
    }

    fn create_invites(
        &self,
        election: &str,
        precincts: &[String],
        count: usize,
        now_ms: u64,
    ) -> Result<Vec<String>, StorageError> {
        // One implementation with the console's batches: one group of these precincts.
        use crate::storage::ConsoleStorage;
        let (_, codes) =
            self.create_invite_batch(election, &[precincts.to_vec()], count, now_ms, None)?;
        Ok(codes.into_iter().map(|(code, _)| code).collect())
    }

    fn enroll(
        &self,
        code: &str,
        key: &DeviceKey,
        now_ms: u64,
    ) -> Result<Result<Device, EnrollRefusal>, StorageError> {
        let id = device_id(key);
        let mut conn = lock(&self.writer)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let invite: Option<(String, String, Option<String>)> = tx
            .query_row(
                "SELECT election, precincts, used_by FROM invites WHERE code = ?1",
                [code],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((election, precincts, used_by)) = invite else {
            return Ok(Err(EnrollRefusal::UnknownCode));
        };
        // A cancelled code enrolls nothing (the console's "cancel"), as if it never existed.
        if used_by.is_none() && console::cancelled(&tx, code)? {
            return Ok(Err(EnrollRefusal::UnknownCode));
        }
        match used_by {
            // The same device asking again (its first answer was lost): the same answer.
            Some(by) if by == id => {
                return load_device(&tx, &key.0)?
                    .map(Ok)
                    .ok_or_else(|| StorageError::Corrupt("enrolled device vanished".into()));
            }
            Some(_) => return Ok(Err(EnrollRefusal::CodeUsed)),
            None => {}
        }
        let precincts: Vec<String> = serde_json::from_str(&precincts)
            .map_err(|e| StorageError::Corrupt(format!("invite precincts: {e}")))?;
        if let Some(existing) = load_device(&tx, &key.0)? {
            if existing.election != election {
                return Ok(Err(EnrollRefusal::OtherElection {
                    observes: existing.election,
                    code_for: election,
                }));
            }
        } else {
            tx.execute(
                "INSERT INTO devices (id, key, election, enrolled_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![id, key.0.as_slice(), election, ms(now_ms)],
            )?;
        }
        for p in &precincts {
            tx.execute(
                "INSERT OR IGNORE INTO device_precincts (device_id, precinct) VALUES (?1, ?2)",
                params![id, p],
            )?;
        }
        tx.execute(
            "UPDATE invites SET used_by = ?2, used_at_ms = ?3 WHERE code = ?1",
            params![code, id, ms(now_ms)],
        )?;
        let device = load_device(&tx, &key.0)?
            .ok_or_else(|| StorageError::Corrupt("enrolled device vanished".into()))?;
        tx.commit()?;
        Ok(Ok(device))
    }

    fn devices(&self) -> Result<Vec<Device>, StorageError> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT key FROM devices ORDER BY enrolled_at_ms, id")?;
            let keys =
                stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?.collect::<Result<Vec<_>, _>>()?;
            keys.iter()
                .map(|k| {
                    load_device(c, k)?
                        .ok_or_else(|| StorageError::Corrupt("device vanished".into()))
                })
                .collect()
        })
    }

    fn revoke_device(&self, id: &str, now_ms: u64) -> Result<bool, StorageError> {
        let conn = lock(&self.writer)?;
        let n = conn.execute(
            "UPDATE devices SET revoked_at_ms = coalesce(revoked_at_ms, ?2) WHERE id = ?1",
            params![id, ms(now_ms)],
        )?;
        Ok(n == 1)
    }

    fn create_upload(&self, u: &NewUpload) -> Result<bool, StorageError> {
        // An upload session need not survive a power loss: creation is idempotent and a client
        // whose session vanished creates it again. So no fsync here (synchronous = NORMAL for
        // this one commit), and the `.part` file is created by the first PATCH.
        let conn = lock(&self.writer)?;
        conn.prepare_cached("PRAGMA synchronous = NORMAL")?.execute([])?;
        let inserted = conn
            .prepare_cached(
                "INSERT INTO uploads (id, manifest, signature, length, created_at_ms)
                 SELECT ?1, ?2, ?3, ?4, ?5
                 WHERE NOT EXISTS (SELECT 1 FROM captures WHERE id = ?1)
                 ON CONFLICT (id) DO NOTHING",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    u.id.to_hex(),
                    u.manifest,
                    u.signature.as_slice(),
                    ms(u.length),
                    ms(u.now_ms)
                ])
            });
        conn.prepare_cached("PRAGMA synchronous = FULL")?.execute([])?;
        Ok(inserted? == 1)
    }

    fn upload(&self, id: &Sha256Hash) -> Result<Option<UploadInfo>, StorageError> {
        let hex = id.to_hex();
        let row: Option<(Vec<u8>, Vec<u8>, i64, bool)> = self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT manifest, signature, photo_bytes, 1 FROM captures WHERE id = ?1
                 UNION ALL
                 SELECT manifest, signature, length, 0 FROM uploads WHERE id = ?1
                 LIMIT 1",
            )?
            .query_row([&hex], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()?)
        })?;
        let Some((manifest, signature, length, stored)) = row else { return Ok(None) };
        let signature: [u8; 64] =
            signature.try_into().map_err(|_| StorageError::Corrupt("signature length".into()))?;
        let length = length as u64;
        let offset = if stored {
            length
        } else {
            match fs::metadata(self.part_path(id)) {
                Ok(m) => m.len().min(length),
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => return Err(e.into()),
            }
        };
        Ok(Some(UploadInfo { length, offset, stored, manifest, signature }))
    }

    fn upload_writer(
        &self,
        id: &Sha256Hash,
        offset: u64,
    ) -> Result<Box<dyn UploadWriter>, StorageError> {
        let path = self.part_path(id);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let len = file.metadata()?.len();
        if len != offset {
            // The caller checked the offset; a longer file holds bytes of a PATCH that was cut
            // before it could be acknowledged. Drop them: the client resends from `offset`.
            file.set_len(offset)?;
        }
        Ok(Box::new(PartWriter { file, start: offset, written: 0 }))
    }

    fn read_upload(&self, id: &Sha256Hash, limit: u64) -> Result<Vec<u8>, StorageError> {
        let file = File::open(self.part_path(id))?;
        let mut bytes = Vec::new();
        file.take(limit).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn open_uploads(&self) -> Result<Vec<super::OpenUpload>, StorageError> {
        let rows: Vec<(String, Vec<u8>, i64, i64)> = self.read(|c| {
            Ok(c.prepare_cached("SELECT id, manifest, length, created_at_ms FROM uploads")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?)
        })?;
        // The canonical manifest spells its key as `"device_key":"<64 hex digits>"`.
        const KEY: &[u8] = b"\"device_key\":\"";
        Ok(rows
            .into_iter()
            .filter_map(|(id, manifest, length, created)| {
                let at = manifest.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
                let key = std::str::from_utf8(manifest.get(at..at + 64)?).ok()?.to_owned();
                Some(super::OpenUpload {
                    id: Sha256Hash::from_hex(&id)?,
                    device_key: key,
                    length: length as u64,
                    created_at_ms: created as u64,
                })
            })
            .collect())
    }

    fn captures_of_device_in_precinct(
        &self,
        device_id: &str,
        election: &str,
        precinct: &str,
    ) -> Result<u64, StorageError> {
        let key = (device_id.to_owned(), election.to_owned(), precinct.to_owned());
        if let Some(n) = lock(&self.precinct_counts)?.get(&key) {
            return Ok(*n);
        }
        // Counted once, through the writer's connection and under its lock, which a commit
        // holds from its transaction to its increments: the count read here and a commit's
        // increment never both count a capture, nor both miss it.
        let conn = lock(&self.writer)?;
        let mut counts = lock(&self.precinct_counts)?;
        if let Some(n) = counts.get(&key) {
            return Ok(*n);
        }
        let n: i64 = conn
            .prepare_cached(
                "SELECT count(*) FROM captures
                 WHERE election = ?1 AND precinct = ?2 AND device_id = ?3",
            )?
            .query_row(params![election, precinct, device_id], |r| r.get(0))?;
        counts.insert(key, n as u64);
        Ok(n as u64)
    }

    fn discard_upload(&self, id: &Sha256Hash) -> Result<(), StorageError> {
        let conn = lock(&self.writer)?;
        conn.execute("DELETE FROM uploads WHERE id = ?1", [id.to_hex()])?;
        drop(conn);
        Ok(remove_if_present(&self.part_path(id))?)
    }

    fn commit_capture(
        &self,
        mut c: NewCapture,
    ) -> Result<Result<Committed, CommitRefusal>, StorageError> {
        let part = self.part_path(&c.id);
        if c.photo_bytes <= SMALL_PHOTO_BYTES {
            // Into the database, with the capture's row. A capture stored already keeps its
            // first receipt: `insert_capture` looks in the commit's own transaction, so no read
            // comes before it, which every new capture would pay.
            if let PhotoBytes::Upload = c.photo {
                // Its upload's file is gone once it is stored.
                if let Some(done) = self.read(|conn| committed(conn, &c.id))? {
                    return Ok(Ok(done));
                }
                c.photo = PhotoBytes::Held(fs::read(&part)?.into());
            }
            let done = self.group_commit(c)?;
            // An upload's file, if there was one, is not needed any more.
            remove_if_present(&part)?;
            return Ok(done);
        }
        if let Some(done) = self.read(|conn| committed(conn, &c.id))? {
            return Ok(Ok(done));
        }
        let blob = self.blob_path(&c.photo_sha256);
        // The photo first: fsynced and renamed here (concurrent completions do this side by
        // side); the directory is fsynced by the group commit, before the rows are committed.
        match std::mem::replace(&mut c.photo, PhotoBytes::Upload) {
            _ if blob.exists() => remove_if_present(&part)?,
            PhotoBytes::Held(bytes) => {
                bytes.write_durably(&part)?;
                fs::rename(&part, &blob)?;
            }
            PhotoBytes::Upload => {
                File::open(&part)?.sync_all()?;
                fs::rename(&part, &blob)?;
            }
        }
        // Refused (its device revoked meanwhile), the photo stays in `blobs` until the next
        // start's recovery removes it, as after a crash: another capture of the same bytes may
        // be committing beside this one, so it cannot be removed here.
        self.group_commit(c)
    }

    fn receipt(&self, id: &Sha256Hash) -> Result<Option<Vec<u8>>, StorageError> {
        self.read(|c| {
            Ok(c.prepare_cached("SELECT receipt FROM captures WHERE id = ?1")?
                .query_row([id.to_hex()], |r| r.get(0))
                .optional()?)
        })
    }

    fn photo(&self, sha256: &Sha256Hash) -> Result<Option<Vec<u8>>, StorageError> {
        let small: Option<Vec<u8>> = self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT p.bytes FROM captures AS c JOIN small_photos AS p USING (log_index)
                 WHERE c.photo_sha256 = ?1 LIMIT 1",
            )?
            .query_row([sha256.to_hex()], |r| r.get(0))
            .optional()?)
        })?;
        if small.is_some() {
            return Ok(small);
        }
        match fs::read(self.blob_path(sha256)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn capture_count(&self) -> Result<u64, StorageError> {
        self.read(|c| {
            Ok(c.query_row("SELECT count(*) FROM captures", [], |r| r.get::<_, i64>(0))? as u64)
        })
    }

    fn captures(&self) -> Result<Vec<StoredCapture>, StorageError> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT id, device_id, seq, election, precinct, photo_sha256, photo_bytes,
                    received_at_ms FROM captures ORDER BY received_at_ms, id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })?;
            let hash = |h: &str| {
                Sha256Hash::from_hex(h)
                    .ok_or_else(|| StorageError::Corrupt(format!("bad hash {h}")))
            };
            rows.map(|row| {
                let (id, device_id, seq, election, precinct, photo, bytes, received) = row?;
                Ok(StoredCapture {
                    id: hash(&id)?,
                    device_id,
                    seq: seq as u64,
                    election,
                    precinct,
                    photo_sha256: hash(&photo)?,
                    photo_bytes: bytes as u64,
                    received_at_ms: received as u64,
                })
            })
            .collect()
        })
    }

    fn log_size(&self) -> Result<u64, StorageError> {
        self.read(log::size)
    }

    fn read_log_hashes(&self, indexes: &[u64]) -> Result<Vec<[u8; 32]>, StorageError> {
        self.read(|c| log::read_hashes(c, indexes))
    }

    fn append_log(
        &self,
        old_size: u64,
        new_size: u64,
        first_hash: u64,
        hashes: &[[u8; 32]],
        checkpoint: &[u8],
    ) -> Result<(), StorageError> {
        // Without an fsync of its own (`synchronous = NORMAL`): the batch is derived from
        // entries that are durable already (committed with their captures, in order), and the
        // checkpoint's signature is deterministic. A power loss can only take back batches
        // committed after the last capture's commit (whose fsync covers every earlier commit
        // in the WAL); the log then integrates them again into the very same hashes and
        // checkpoints. A killed process loses nothing either way.
        let mut conn = lock(&self.writer)?;
        conn.prepare_cached("PRAGMA synchronous = NORMAL")?.execute([])?;
        let result = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StorageError::from)
            .and_then(|tx| {
                log::append(&tx, old_size, new_size, first_hash, hashes, checkpoint)?;
                Ok(tx.commit()?)
            });
        conn.prepare_cached("PRAGMA synchronous = FULL")?.execute([])?;
        result
    }

    fn log_index(&self, capture: &Sha256Hash) -> Result<Option<u64>, StorageError> {
        let hex = capture.to_hex();
        self.read(|c| log::index_of(c, &hex))
    }

    fn log_entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, StorageError> {
        self.read(|c| log::entries(c, start, end))
    }

    fn latest_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        self.read(log::latest_checkpoint)
    }

    fn evidence(&self, id: &Sha256Hash) -> Result<Option<super::Evidence>, StorageError> {
        let row: Option<(Vec<u8>, Vec<u8>)> = self.read(|c| {
            Ok(c.query_row(
                "SELECT manifest, signature FROM captures WHERE id = ?1",
                [id.to_hex()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
        })?;
        row.map(|(m, s)| {
            let sig: [u8; 64] =
                s.try_into().map_err(|_| StorageError::Corrupt("signature length".into()))?;
            Ok((m, sig))
        })
        .transpose()
    }

    fn checkpoint(&self, size: u64) -> Result<Option<Vec<u8>>, StorageError> {
        self.read(|c| log::checkpoint(c, size))
    }

    fn log_entry_stored_at(&self, index: u64) -> Result<Option<u64>, StorageError> {
        self.read(|c| log::stored_at(c, index))
    }

    /// The data directory's lock makes the server the only writer.
    fn log_lease(&self) -> Result<Box<dyn crate::storage::LogLease>, StorageError> {
        Ok(Box::new(crate::storage::SoleLease))
    }
}
