//! The database side of `hattama-server backup` and `restore` (`crate::backup`): a consistent
//! copy of a live database, and what a copy holds.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{DB_FILE, SCHEMA_VERSION};
use crate::storage::StorageError;

/// What a database copy holds, for the backup's manifest and the checks of a restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFacts {
    /// Stored captures.
    pub captures: u64,
    /// Size of the newest signed checkpoint (0 without one).
    pub log_size: u64,
    /// The photos kept as files (`blobs/<sha256>`): their hashes (hex) and sizes, sorted.
    pub photo_files: Vec<(String, u64)>,
}

/// Writes a consistent copy of the live database of `data_dir` to `to` (which must not exist)
/// with SQLite's `VACUUM INTO`: it reads one snapshot in a read transaction, so the server
/// goes on committing while it runs (WAL), and the copy holds every transaction committed
/// before it began and none after.
pub fn snapshot(data_dir: &Path, to: &Path) -> Result<(), StorageError> {
    let conn = Connection::open_with_flags(
        data_dir.join(DB_FILE),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    let to = to.to_str().ok_or_else(|| StorageError::Corrupt("a path that is not UTF-8".into()))?;
    conn.execute("VACUUM INTO ?1", [to])?;
    Ok(())
}

/// Checks a database copy (`PRAGMA integrity_check`, a schema this server knows) and says what
/// it holds.
pub fn snapshot_facts(db: &Path) -> Result<SnapshotFacts, StorageError> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(StorageError::Corrupt(format!(
            "the database fails its integrity check: {check}"
        )));
    }
    let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StorageError::TooNew { found: version, supported: SCHEMA_VERSION });
    }
    if version == 0 {
        return Err(StorageError::Corrupt("not a Hattama server database".into()));
    }
    let captures: i64 = conn.query_row("SELECT count(*) FROM captures", [], |r| r.get(0))?;
    let log_size = super::log::latest_checkpoint(&conn)?.map_or(0, |(size, _)| size);
    // A photo is a file unless the first capture that shows it keeps it in `small_photos`.
    let mut stmt = conn.prepare(
        "SELECT photo_sha256, max(photo_bytes) FROM captures AS c
         WHERE NOT EXISTS (SELECT 1 FROM captures AS s JOIN small_photos AS p USING (log_index)
                           WHERE s.photo_sha256 = c.photo_sha256)
         GROUP BY photo_sha256 ORDER BY photo_sha256",
    )?;
    let photo_files = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
        .collect::<Result<_, _>>()?;
    Ok(SnapshotFacts { captures: captures as u64, log_size, photo_files })
}
