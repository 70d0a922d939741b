//! [`GalleryStorage`] for [`PgStorage`]: official results and the gallery's reads.

use hattama_core::election::Election;
use hattama_core::evidence::Sha256Hash;
use postgres::GenericClient;
use sha2::{Digest, Sha256};

use super::{PgStorage, corrupt, i, u};
use crate::official::{Figures, Version};
use crate::storage::{GalleryStorage, PublicCapture, StorageError};

fn hash(h: &str) -> Result<Sha256Hash, StorageError> {
    Sha256Hash::from_hex(h).ok_or_else(|| corrupt(format!("bad hash {h}")))
}

fn figures_of(
    c: &mut impl GenericClient,
    election: &str,
    version: u64,
) -> Result<Figures, StorageError> {
    let mut figures = Figures::new();
    for row in c.query(
        "SELECT precinct, line, value FROM official_figures
         WHERE election = $1 AND version = $2 ORDER BY precinct, line",
        &[&election, &i(version)],
    )? {
        figures.entry(row.get(0)).or_default().insert(row.get(1), u(row.get(2)));
    }
    Ok(figures)
}

/// Stores official figures as a new version inside the caller's transaction, unless they equal
/// the newest version (then `None`).
pub(super) fn import_official_in(
    tx: &mut postgres::Transaction<'_>,
    election: &str,
    figures: &Figures,
    (source, sha256): (&str, &str),
    now_ms: u64,
) -> Result<Option<u64>, StorageError> {
    let newest: Option<i64> = tx
        .query_one("SELECT max(version) FROM official_versions WHERE election = $1", &[&election])?
        .get(0);
    if let Some(v) = newest
        && &figures_of(tx, election, u(v))? == figures
    {
        return Ok(None);
    }
    let version = newest.unwrap_or(0) + 1;
    tx.execute(
        "INSERT INTO official_versions
            (election, version, imported_at_ms, source, sha256, precincts)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[&election, &version, &i(now_ms), &source, &sha256, &(figures.len() as i64)],
    )?;
    let insert = tx.prepare(
        "INSERT INTO official_figures (election, version, precinct, line, value)
         VALUES ($1, $2, $3, $4, $5)",
    )?;
    for (precinct, lines) in figures {
        for (line, value) in lines {
            tx.execute(&insert, &[&election, &version, precinct, line, &i(*value)])?;
        }
    }
    Ok(Some(u(version)))
}

impl GalleryStorage for PgStorage {
    /// A digest of the database's current snapshot (`pg_current_snapshot()`: which
    /// transactions are committed, running or not begun): two readings are equal exactly when
    /// no transaction committed between them, whichever instance or command made it. It costs
    /// no write; a transaction of another database of the cluster changes it too, which only
    /// drops caches for nothing.
    fn change_counter(&self) -> Result<u64, StorageError> {
        let snapshot: String =
            self.read(|c| Ok(c.query_one("SELECT pg_current_snapshot()::text", &[])?.get(0)))?;
        let digest = Sha256::digest(snapshot.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Ok(u64::from_be_bytes(first))
    }

    fn elections(&self) -> Result<Vec<Election>, StorageError> {
        let rows =
            self.read(|c| Ok(c.query("SELECT id, definition FROM elections ORDER BY id", &[])?))?;
        rows.iter()
            .map(|r| {
                let id: &str = r.get(0);
                let bytes: &[u8] = r.get(1);
                serde_json::from_slice(bytes).map_err(|e| corrupt(format!("election {id}: {e}")))
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
        self.write(true, |tx| import_official_in(tx, election, figures, (source, sha256), now_ms))
    }

    fn official_versions(&self, election: &str) -> Result<Vec<Version>, StorageError> {
        let rows = self.read(|c| {
            Ok(c.query(
                "SELECT version, imported_at_ms, source, sha256, precincts
                 FROM official_versions WHERE election = $1 ORDER BY version",
                &[&election],
            )?)
        })?;
        Ok(rows
            .iter()
            .map(|r| Version {
                version: u(r.get(0)),
                imported_at_ms: u(r.get(1)),
                source: r.get(2),
                sha256: r.get(3),
                precincts: u(r.get(4)),
            })
            .collect())
    }

    fn official_figures(&self, election: &str, version: u64) -> Result<Figures, StorageError> {
        self.read(|c| figures_of(c, election, version))
    }

    fn public_captures(
        &self,
        election: &str,
        precinct: Option<&str>,
    ) -> Result<Vec<PublicCapture>, StorageError> {
        let rows = self.read(|c| {
            Ok(c.query(
                "SELECT c.id, c.precinct, c.manifest, c.signature, c.photo_sha256, c.photo_bytes,
                    c.received_at_ms, c.receipt,
                    -- A position counts once a signed checkpoint covers it.
                    CASE WHEN c.log_index < (SELECT size FROM log_published WHERE id = 1)
                         THEN c.log_index END
                 FROM captures c
                 WHERE c.election = $1 AND ($2::TEXT IS NULL OR c.precinct = $2)
                 ORDER BY c.log_index",
                &[&election, &precinct],
            )?)
        })?;
        rows.iter()
            .map(|r| {
                let signature: Vec<u8> = r.get(3);
                Ok(PublicCapture {
                    id: hash(r.get(0))?,
                    precinct: r.get(1),
                    manifest: r.get(2),
                    signature: signature.try_into().map_err(|_| corrupt("signature length"))?,
                    photo_sha256: hash(r.get(4))?,
                    photo_bytes: u(r.get(5)),
                    received_at_ms: u(r.get(6)),
                    receipt: r.get(7),
                    log_index: r.get::<_, Option<i64>>(8).map(u),
                })
            })
            .collect()
    }

    fn manifest_of_photo(&self, photo: &Sha256Hash) -> Result<Option<Vec<u8>>, StorageError> {
        self.read(|c| {
            Ok(c.query_opt(
                "SELECT manifest FROM captures WHERE photo_sha256 = $1 ORDER BY log_index LIMIT 1",
                &[&photo.to_hex()],
            )?
            .map(|r| r.get(0)))
        })
    }

    fn capture_precincts(&self, election: &str) -> Result<Vec<(Sha256Hash, String)>, StorageError> {
        let rows = self.read(|c| {
            Ok(c.query("SELECT id, precinct FROM captures WHERE election = $1", &[&election])?)
        })?;
        rows.iter().map(|r| Ok((hash(r.get(0))?, r.get(1)))).collect()
    }
}
