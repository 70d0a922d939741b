//! The SQL of the public side: official results and the gallery's reads.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{SqliteStorage, lock, ms};
use crate::official::{Figures, Version};
use crate::storage::{GalleryStorage, PublicCapture, StorageError};
use hattama_core::election::Election;
use hattama_core::evidence::Sha256Hash;

fn hash(h: &str) -> Result<Sha256Hash, StorageError> {
    Sha256Hash::from_hex(h).ok_or_else(|| StorageError::Corrupt(format!("bad hash {h}")))
}

fn figures_of(
    conn: &rusqlite::Connection,
    election: &str,
    version: u64,
) -> Result<Figures, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT precinct, line, value FROM official_figures
         WHERE election = ?1 AND version = ?2 ORDER BY precinct, line",
    )?;
    let mut figures = Figures::new();
    let rows = stmt.query_map(params![election, version as i64], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
    })?;
    for row in rows {
        let (p, l, v) = row?;
        figures.entry(p).or_default().insert(l, v as u64);
    }
    Ok(figures)
}

impl GalleryStorage for SqliteStorage {
    /// SQLite's `PRAGMA data_version` on a connection that never writes: it changes with every
    /// commit of any other connection, in any process.
    fn change_counter(&self) -> Result<u64, StorageError> {
        let conn = lock(&self.watch)?;
        Ok(conn.pragma_query_value(None, "data_version", |r| r.get::<_, i64>(0))? as u64)
    }

    fn elections(&self) -> Result<Vec<Election>, StorageError> {
        let rows: Vec<(String, Vec<u8>)> = self.read(|c| {
            let mut stmt = c.prepare("SELECT id, definition FROM elections ORDER BY id")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })?;
        rows.into_iter()
            .map(|(id, b)| {
                serde_json::from_slice(&b)
                    .map_err(|e| StorageError::Corrupt(format!("election {id}: {e}")))
            })
            .collect()
    }

    fn import_official(
        &self,
        election: &str,
        figures: &Figures,
        source: &str,
        sha256: &str,
        now_ms: u64,
    ) -> Result<Option<u64>, StorageError> {
        let mut conn = lock(&self.writer)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version = import_official_in(&tx, election, figures, (source, sha256), now_ms)?;
        if version.is_some() {
            tx.commit()?;
        }
        Ok(version)
    }

    fn official_versions(&self, election: &str) -> Result<Vec<Version>, StorageError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT version, imported_at_ms, source, sha256, precincts
                 FROM official_versions WHERE election = ?1 ORDER BY version",
            )?;
            let rows = stmt.query_map([election], |r| {
                Ok(Version {
                    version: r.get::<_, i64>(0)? as u64,
                    imported_at_ms: r.get::<_, i64>(1)? as u64,
                    source: r.get(2)?,
                    sha256: r.get(3)?,
                    precincts: r.get::<_, i64>(4)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn official_figures(&self, election: &str, version: u64) -> Result<Figures, StorageError> {
        self.read(|c| figures_of(c, election, version))
    }

    fn public_captures(
        &self,
        election: &str,
        precinct: Option<&str>,
    ) -> Result<Vec<PublicCapture>, StorageError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT c.id, c.precinct, c.manifest, c.signature, c.photo_sha256, c.photo_bytes,
                    c.received_at_ms, c.receipt,
                    -- A position counts once a signed checkpoint covers it.
                    CASE WHEN c.log_index < (SELECT coalesce(max(size), 0) FROM checkpoints)
                         THEN c.log_index END
                 FROM captures c
                 WHERE c.election = ?1 AND (?2 IS NULL OR c.precinct = ?2)
                 ORDER BY c.rowid",
            )?;
            let rows = stmt.query_map(params![election, precinct], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, Vec<u8>>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                ))
            })?;
            rows.map(|row| {
                let (id, precinct, manifest, signature, photo, bytes, received, receipt, idx) =
                    row?;
                Ok(PublicCapture {
                    id: hash(&id)?,
                    precinct,
                    manifest,
                    signature: signature
                        .try_into()
                        .map_err(|_| StorageError::Corrupt("signature length".into()))?,
                    photo_sha256: hash(&photo)?,
                    photo_bytes: bytes as u64,
                    received_at_ms: received as u64,
                    receipt,
                    log_index: idx.map(|i| i as u64),
                })
            })
            .collect()
        })
    }

    fn manifest_of_photo(&self, photo: &Sha256Hash) -> Result<Option<Vec<u8>>, StorageError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT manifest FROM captures WHERE photo_sha256 = ?1 ORDER BY rowid LIMIT 1",
                [photo.to_hex()],
                |r| r.get(0),
            )
            .optional()?)
        })
    }

    fn capture_precincts(&self, election: &str) -> Result<Vec<(Sha256Hash, String)>, StorageError> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT id, precinct FROM captures WHERE election = ?1")?;
            let rows = stmt
                .query_map([election], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            rows.map(|row| {
                let (id, p) = row?;
                Ok((hash(&id)?, p))
            })
            .collect()
        })
    }
}

/// Stores official results as the election's next version inside the caller's transaction;
/// `None` (nothing written) when they equal the newest version. `source`: the file's name and
/// SHA-256.
pub(super) fn import_official_in(
    tx: &rusqlite::Connection,
    election: &str,
    figures: &Figures,
    (source, sha256): (&str, &str),
    now_ms: u64,
) -> Result<Option<u64>, StorageError> {
    let newest: Option<i64> = tx
        .query_row(
            "SELECT max(version) FROM official_versions WHERE election = ?1",
            [election],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    if let Some(v) = newest
        && &figures_of(tx, election, v as u64)? == figures
    {
        return Ok(None);
    }
    let version = newest.unwrap_or(0) + 1;
    tx.execute(
        "INSERT INTO official_versions
            (election, version, imported_at_ms, source, sha256, precincts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![election, version, ms(now_ms), source, sha256, figures.len() as i64],
    )?;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO official_figures (election, version, precinct, line, value)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (precinct, lines) in figures {
        for (line, value) in lines {
            stmt.execute(params![election, version, precinct, line, ms(*value)])?;
        }
    }
    Ok(Some(version as u64))
}
