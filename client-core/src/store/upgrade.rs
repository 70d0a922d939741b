//! Conversion of a plain store (any schema version from before encryption) into an encrypted
//! one, in place and crash-safely.
//!
//! The plain database stays the store until one rename: first its schema is brought up to date
//! (each step its own transaction) and its WAL folded into the file; then every photo is
//! written again sealed under its keyed name (beside the plain files, which are untouched);
//! then the database is exported with SQLCipher into `hattama.sqlite3.new`, fsynced, and
//! renamed over the plain one. A kill before the rename leaves the plain store whole (and
//! `store.key`, so the next open, with the same key, starts over); a kill after it leaves the
//! encrypted store whole, whose recovery then removes the plain photos and thumbnails, which
//! no row names.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use rusqlite::Connection;

use super::blobs::{BlobDir, fsync_dir};
use super::crypt::Keys;
use super::{DB_FILE, SCHEMA_VERSION, StoreError, configure, migrate};
use crate::evidence::Sha256Hash;
use crate::hooks;

/// The encrypted database while it is being written.
const NEW_DB: &str = "hattama.sqlite3.new";

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Converts the plain store in `dir` to an encrypted one under `keys`.
pub(super) fn convert(dir: &Path, keys: &Keys, blobs: &BlobDir) -> Result<(), StoreError> {
    let path = dir.join(DB_FILE);
    let new = dir.join(NEW_DB);
    remove_if_present(&new)?;
    remove_if_present(&dir.join(format!("{NEW_DB}-journal")))?;
    let mut plain = Connection::open(&path)?;
    configure(&plain)?;
    migrate(&mut plain, SCHEMA_VERSION)?;
    // Folds the WAL into the database file and removes it, so that no plain WAL outlives the
    // plain database.
    let mode: String = plain.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(StoreError::Corrupt(format!("cannot leave journal mode {mode}")));
    }
    hooks::pause("upgrade:before-photos");
    let photos: Vec<String> = {
        let mut stmt = plain
            .prepare("SELECT DISTINCT photo_sha256 FROM captures WHERE photo_sha256 IS NOT NULL")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for hex in photos {
        let hash = Sha256Hash::from_hex(&hex)
            .ok_or_else(|| StoreError::Corrupt(format!("bad photo hash {hex}")))?;
        match fs::read(dir.join("blobs").join(&hex)) {
            Ok(bytes) if Sha256Hash::of(&bytes) == hash => blobs.put(&hash, &bytes)?,
            Ok(_) => return Err(StoreError::Corrupt(format!("photo {hex} is damaged"))),
            // Already converted by an interrupted conversion (whose plain files are kept until
            // the rename, so this is a photo the plain store did not have either).
            Err(e) if e.kind() == io::ErrorKind::NotFound && blobs.has(&hash) => {}
            Err(e) => return Err(e.into()),
        }
    }
    hooks::pause("upgrade:before-export");
    let pragma = keys.sqlcipher_pragma();
    // `PRAGMA key = "x'…'";` → the key expression of ATTACH.
    let key_expr = pragma
        .strip_prefix("PRAGMA key = ")
        .and_then(|k| k.strip_suffix(';'))
        .ok_or_else(|| StoreError::Corrupt("key statement".into()))?;
    let new_str =
        new.to_str().ok_or_else(|| StoreError::Corrupt("store path is not UTF-8".into()))?;
    plain.execute(&format!("ATTACH DATABASE ?1 AS sealed KEY {key_expr}"), [new_str])?;
    plain.query_row("SELECT sqlcipher_export('sealed')", [], |_| Ok(()))?;
    plain.execute_batch(&format!("PRAGMA sealed.user_version = {SCHEMA_VERSION};"))?;
    plain.execute_batch("DETACH DATABASE sealed;")?;
    drop(plain);
    File::open(&new)?.sync_all()?;
    hooks::pause("upgrade:before-rename");
    fs::rename(&new, &path)?;
    fsync_dir(dir)?;
    hooks::pause("upgrade:after-rename");
    tracing::info!("converted a plain store to an encrypted one");
    Ok(())
}

/// Writes a plain store as a version before encryption did, at schema `version`, with the
/// given photos as plain files (for the upgrade tests).
#[doc(hidden)]
pub fn create_plain(dir: &Path, version: u32, photos: &[&[u8]]) -> Result<(), StoreError> {
    super::blobs::create_dirs(dir)?;
    let mut conn = Connection::open(dir.join(DB_FILE))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    configure(&conn)?;
    migrate(&mut conn, version)?;
    for photo in photos {
        fs::write(dir.join("blobs").join(Sha256Hash::of(photo).to_hex()), photo)?;
    }
    Ok(())
}

/// Writes a copy of `store` as a version before encryption kept it: the plain database (in WAL
/// mode) and each photo in the clear, named by its SHA-256 (for the upgrade tests).
#[doc(hidden)]
pub fn export_plain(store: &super::Store, to: &Path) -> Result<(), StoreError> {
    super::blobs::create_dirs(to)?;
    let path = to.join(DB_FILE);
    let path_str =
        path.to_str().ok_or_else(|| StoreError::Corrupt("store path is not UTF-8".into()))?;
    let photos: Vec<String> = {
        let conn = super::lock(&store.writer)?;
        let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        conn.execute("ATTACH DATABASE ?1 AS plain KEY ''", [path_str])?;
        conn.query_row("SELECT sqlcipher_export('plain')", [], |_| Ok(()))?;
        conn.execute_batch(&format!("PRAGMA plain.user_version = {version};"))?;
        conn.execute_batch("DETACH DATABASE plain;")?;
        let mut stmt = conn
            .prepare("SELECT DISTINCT photo_sha256 FROM captures WHERE photo_sha256 IS NOT NULL")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for hex in photos {
        let hash = Sha256Hash::from_hex(&hex)
            .ok_or_else(|| StoreError::Corrupt(format!("bad photo hash {hex}")))?;
        fs::write(to.join("blobs").join(&hex), store.blobs().get(&hash)?)?;
    }
    let plain = Connection::open(&path)?;
    plain.pragma_update(None, "journal_mode", "WAL")?;
    Ok(())
}
