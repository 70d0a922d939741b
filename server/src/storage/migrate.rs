//! The table copy of `hattama-server migrate --to postgres` (`crate::migrate`): every row of an
//! embedded instance's database, read through a read-only SQLite connection, written into an
//! empty PostgreSQL database of the same schema in one transaction, and the migration's
//! progress row (`embedded_migration`) that lets an interrupted migration continue.
//!
//! Why rows and not the storage traits: the traits speak the domain and hide what a copy must
//! keep, by design (ids of accounts, decisions, entries and audit events, the order of invites,
//! the review index's watermark). A copy through them would renumber the audit trail. So this
//! is the one module that knows both engines, as `open.rs` is the one that chooses between
//! them; the tables and their columns are listed once, below, and every table's row count is
//! checked in the same transaction. Photos and the other objects are copied by
//! `crate::migrate` through the traits and the object boundary.

use std::path::{Path, PathBuf};

use postgres::types::ToSql;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};

use super::{PgStorage, StorageError};

/// How a column is written into PostgreSQL.
#[derive(Clone, Copy, Debug)]
enum Col {
    /// `BIGINT NOT NULL`.
    Int,
    /// `BIGINT`, may be NULL.
    OptInt,
    /// `TEXT NOT NULL`.
    Text,
    /// `TEXT`, may be NULL.
    OptText,
    /// `BYTEA NOT NULL`.
    Bytes,
    /// `BOOLEAN NOT NULL`, an integer 0 or 1 in SQLite.
    Bool,
}

/// One table copied row for row.
struct Table {
    /// The table in both databases.
    name: &'static str,
    /// What is read from SQLite, in the column order of `columns`.
    select: &'static str,
    /// The PostgreSQL columns written.
    columns: &'static str,
    /// Their kinds.
    kinds: &'static [Col],
    /// The identity column whose values are kept (`OVERRIDING SYSTEM VALUE`), and whose
    /// sequence then continues after the largest.
    identity: Option<&'static str>,
}

use Col::{Bool, Bytes, Int, OptInt, OptText, Text};

/// Every table, in an order that satisfies the foreign keys. SQLite's `rowid` of an invite is
/// PostgreSQL's `ord`; a capture's rowid in the review index (`src_rowid`) is its log position
/// there (the watermark of each backend: both grow in commit order).
const TABLES: &[Table] = &[
    Table {
        name: "elections",
        select: "SELECT id, definition, imported_at_ms, protocol_lines FROM elections ORDER BY id",
        columns: "id, definition, imported_at_ms, protocol_lines",
        kinds: &[Text, Bytes, Int, Int],
        identity: None,
    },
    Table {
        name: "precincts",
        select: "SELECT election, id, number, region, district, address FROM precincts
                 ORDER BY election, id",
        columns: "election, id, number, region, district, address",
        kinds: &[Text, Text, Int, Text, Text, Text],
        identity: None,
    },
    Table {
        name: "invites",
        select: "SELECT rowid, code, election, precincts, created_at_ms, used_by, used_at_ms,
                    batch, cancelled_at_ms FROM invites ORDER BY rowid",
        columns: "ord, code, election, precincts, created_at_ms, used_by, used_at_ms, batch, \
                  cancelled_at_ms",
        kinds: &[Int, Text, Text, Text, Int, OptText, OptInt, OptInt, OptInt],
        identity: Some("ord"),
    },
    Table {
        name: "devices",
        select: "SELECT id, key, election, enrolled_at_ms, revoked_at_ms FROM devices ORDER BY id",
        columns: "id, key, election, enrolled_at_ms, revoked_at_ms",
        kinds: &[Text, Bytes, Text, Int, OptInt],
        identity: None,
    },
    Table {
        name: "device_precincts",
        select: "SELECT device_id, precinct FROM device_precincts ORDER BY device_id, precinct",
        columns: "device_id, precinct",
        kinds: &[Text, Text],
        identity: None,
    },
    Table {
        name: "uploads",
        select: "SELECT id, manifest, signature, length, created_at_ms FROM uploads ORDER BY id",
        columns: "id, manifest, signature, length, created_at_ms",
        kinds: &[Text, Bytes, Bytes, Int, Int],
        identity: None,
    },
    Table {
        name: "captures",
        select: "SELECT id, device_id, seq, election, precinct, manifest, signature,
                    photo_sha256, photo_bytes, media_type, received_at_ms, receipt, log_index
                 FROM captures ORDER BY log_index",
        columns: "id, device_id, seq, election, precinct, manifest, signature, photo_sha256, \
                  photo_bytes, media_type, received_at_ms, receipt, log_index",
        kinds: &[Text, Text, Int, Text, Text, Bytes, Bytes, Text, Int, Text, Int, Bytes, Int],
        identity: None,
    },
    Table {
        name: "log_entries",
        select: "SELECT idx, entry FROM log_entries ORDER BY idx",
        columns: "idx, entry",
        kinds: &[Int, Bytes],
        identity: None,
    },
    Table {
        name: "log_hash_blocks",
        select: "SELECT block, hashes FROM log_hash_blocks ORDER BY block",
        columns: "block, hashes",
        kinds: &[Int, Bytes],
        identity: None,
    },
    Table {
        name: "checkpoints",
        select: "SELECT size, note FROM checkpoints ORDER BY size",
        columns: "size, note",
        kinds: &[Int, Bytes],
        identity: None,
    },
    Table {
        name: "official_versions",
        select: "SELECT election, version, imported_at_ms, source, sha256, precincts
                 FROM official_versions ORDER BY election, version",
        columns: "election, version, imported_at_ms, source, sha256, precincts",
        kinds: &[Text, Int, Int, Text, Text, Int],
        identity: None,
    },
    Table {
        name: "official_figures",
        select: "SELECT election, version, precinct, line, value FROM official_figures
                 ORDER BY election, version, precinct, line",
        columns: "election, version, precinct, line, value",
        kinds: &[Text, Int, Text, Text, Int],
        identity: None,
    },
    Table {
        name: "users",
        select: "SELECT id, username, display_name, role, regions, password_hash, disabled_at_ms,
                    created_at_ms FROM users ORDER BY id",
        columns: "id, username, display_name, role, regions, password_hash, disabled_at_ms, \
                  created_at_ms",
        kinds: &[Int, Text, Text, Text, Text, Text, OptInt, Int],
        identity: Some("id"),
    },
    Table {
        name: "sessions",
        select: "SELECT token_sha256, user_id, csrf, created_at_ms, expires_at_ms FROM sessions
                 ORDER BY token_sha256",
        columns: "token_sha256, user_id, csrf, created_at_ms, expires_at_ms",
        kinds: &[Bytes, Int, Text, Int, Int],
        identity: None,
    },
    Table {
        name: "review_index",
        select: "SELECT r.capture_id, c.log_index, r.election, r.precinct, r.number, r.region,
                    r.district, r.device_id, r.seq, r.page, r.pages, r.kind, r.captured_at_ms,
                    r.received_at_ms, r.photo_sha256, r.transcription, r.flags, r.state
                 FROM review_index r JOIN captures c ON c.id = r.capture_id
                 ORDER BY c.log_index",
        columns: "capture_id, log_index, election, precinct, number, region, district, \
                  device_id, seq, page, pages, kind, captured_at_ms, received_at_ms, \
                  photo_sha256, transcription, flags, state",
        kinds: &[
            Text, Int, Text, Text, Int, Text, Text, Text, Int, Int, Int, Text, Int, Int, Text,
            OptText, Int, Text,
        ],
        identity: None,
    },
    Table {
        name: "decisions",
        select: "SELECT id, capture_id, user_id, kind, reason, at_ms FROM decisions ORDER BY id",
        columns: "id, capture_id, user_id, kind, reason, at_ms",
        kinds: &[Int, Text, Int, Text, OptText, Int],
        identity: Some("id"),
    },
    Table {
        name: "entries",
        select: "SELECT id, election, precinct, user_id, values_json, reason, resolution, at_ms
                 FROM entries ORDER BY id",
        columns: "id, election, precinct, user_id, values_json, reason, resolution, at_ms",
        kinds: &[Int, Text, Text, Int, Text, OptText, Bool, Int],
        identity: Some("id"),
    },
    Table {
        name: "transcriptions",
        select: "SELECT election, precinct, status, values_json, verified_at_ms,
                    inconsistency_note FROM transcriptions ORDER BY election, precinct",
        columns: "election, precinct, status, values_json, verified_at_ms, inconsistency_note",
        kinds: &[Text, Text, Text, Text, OptInt, OptText],
        identity: None,
    },
    Table {
        name: "audit",
        select: "SELECT id, at_ms, user_id, user_name, action, election, precinct, capture_id,
                    before, after FROM audit ORDER BY id",
        columns: "id, at_ms, user_id, user_name, action, election, precinct, capture_id, \
                  before, after",
        kinds: &[Int, Int, OptInt, OptText, Text, OptText, OptText, OptText, OptText, OptText],
        identity: Some("id"),
    },
    Table {
        name: "device_refusals",
        select: "SELECT device_id, code, count, first_at_ms, last_at_ms FROM device_refusals
                 ORDER BY device_id, code",
        columns: "device_id, code, count, first_at_ms, last_at_ms",
        kinds: &[Text, Text, Int, Int, Int],
        identity: None,
    },
];

/// An embedded instance's database, opened read-only: the migration never writes its source.
pub struct EmbeddedSource {
    dir: PathBuf,
    conn: Connection,
}

/// How many rows of each table were copied, in table order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowCounts(pub Vec<(&'static str, u64)>);

impl RowCounts {
    /// The count of one table (0 if it is not listed).
    pub fn of(&self, table: &str) -> u64 {
        self.0.iter().find(|(t, _)| *t == table).map_or(0, |(_, n)| *n)
    }
}

/// The progress of a migration, as recorded in the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The log public key (hex) of the instance the target is a copy of.
    pub source_log_key: String,
    /// The digest of the list of objects being copied.
    pub objects_digest: String,
    /// How many objects of that list are in the object store.
    pub objects_copied: u64,
    /// Whether the tables are copied.
    pub tables_copied: bool,
}

/// What the target database holds before a migration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetState {
    /// No row in any table: a migration may begin.
    Empty,
    /// Rows, and no migration's record: another instance's data.
    NotEmpty {
        /// A table that has rows.
        table: &'static str,
    },
    /// A migration's record (finished or not).
    Migration(Progress),
}

/// A time or count to write (every one this server writes fits in 63 bits).
fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn source_err(e: rusqlite::Error) -> StorageError {
    StorageError::from(e)
}

impl EmbeddedSource {
    /// Opens the database of the embedded instance in `dir` read-only. Refuses a directory
    /// without one, and a database of another schema version than this server's (an older one
    /// is brought up to date by starting this version's server on it once).
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let path = dir.join(super::sqlite::DB_FILE);
        if !path.is_file() {
            return Err(StorageError::NotFound(format!(
                "an embedded server's database ({})",
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(source_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(source_err)?;
        let version: u32 =
            conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(source_err)?;
        let supported = super::sqlite::SCHEMA_VERSION;
        if version > supported {
            return Err(StorageError::TooNew { found: version, supported });
        }
        if version < supported {
            return Err(StorageError::Conflict(format!(
                "the embedded database is of schema version {version}, this server's is \
                 {supported}: start this version's server on it once (it upgrades the \
                 database), stop it, then migrate"
            )));
        }
        Ok(Self { dir: dir.to_owned(), conn })
    }

    /// Every stored photo once, by hash, with its size, in the order of its first capture.
    pub fn photos(&self) -> Result<Vec<(hattama_core::evidence::Sha256Hash, u64)>, StorageError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT photo_sha256, max(photo_bytes) FROM captures GROUP BY photo_sha256
                 ORDER BY min(log_index)",
            )
            .map_err(source_err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(source_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (hex, size) = row.map_err(source_err)?;
            let sha = hattama_core::evidence::Sha256Hash::from_hex(&hex)
                .ok_or_else(|| StorageError::Corrupt(format!("a photo hash {hex:?}")))?;
            out.push((sha, size.max(0) as u64));
        }
        Ok(out)
    }

    /// Copies every table into `target` in one transaction that also records the tables as
    /// copied in the migration's row; checks every table's row count in it. The target must
    /// hold no rows (see [`target_state`]).
    pub fn copy_tables(&self, target: &PgStorage, now_ms: u64) -> Result<RowCounts, StorageError> {
        let mut conn = target.conn()?;
        let mut tx = conn.transaction()?;
        let mut counts = Vec::new();
        for table in TABLES {
            let n = self.copy_table(table, &mut tx)?;
            let written: i64 =
                tx.query_one(format!("SELECT count(*) FROM {}", table.name).as_str(), &[])?.get(0);
            if written.max(0) as u64 != n {
                return Err(StorageError::Conflict(format!(
                    "table {}: {n} rows read, {written} in the target (was it empty?)",
                    table.name
                )));
            }
            if let Some(column) = table.identity {
                // The next id continues after the copied ones.
                let sql = format!(
                    "SELECT setval(pg_get_serial_sequence('{t}', '{column}'), m)
                     FROM (SELECT max({column}) AS m FROM {t}) AS x WHERE m IS NOT NULL",
                    t = table.name
                );
                tx.execute(sql.as_str(), &[])?;
            }
            counts.push((table.name, n));
        }
        self.copy_upload_bytes(&mut tx)?;
        let generation: i64 = self
            .conn
            .query_row("SELECT value FROM review_generation WHERE id = 1", [], |r| r.get(0))
            .map_err(source_err)?;
        tx.execute("UPDATE review_generation SET value = $1 WHERE id = 1", &[&generation])?;
        // The log's coordination rows: the next position after the last capture, and the size
        // of the newest checkpoint.
        tx.execute(
            "UPDATE log_head SET next_index = (SELECT coalesce(max(log_index) + 1, 0)
             FROM captures) WHERE id = 1",
            &[],
        )?;
        tx.execute(
            "UPDATE log_published SET size = (SELECT coalesce(max(size), 0) FROM checkpoints)
             WHERE id = 1",
            &[],
        )?;
        let updated = tx.execute(
            "UPDATE embedded_migration SET tables_copied_at_ms = $1 WHERE id = 1",
            &[&ms(now_ms)],
        )?;
        if updated != 1 {
            return Err(StorageError::Corrupt("the migration's record vanished".into()));
        }
        tx.commit()?;
        Ok(RowCounts(counts))
    }

    fn copy_table(
        &self,
        table: &Table,
        tx: &mut postgres::Transaction<'_>,
    ) -> Result<u64, StorageError> {
        let placeholders: Vec<String> = (1..=table.kinds.len()).map(|i| format!("${i}")).collect();
        let overriding = if table.identity.is_some() { " OVERRIDING SYSTEM VALUE" } else { "" };
        let sql = format!(
            "INSERT INTO {} ({}){overriding} VALUES ({})",
            table.name,
            table.columns,
            placeholders.join(", ")
        );
        let insert = tx.prepare(&sql)?;
        let mut select = self.conn.prepare(table.select).map_err(source_err)?;
        let mut rows = select.query([]).map_err(source_err)?;
        let mut n = 0;
        while let Some(row) = rows.next().map_err(source_err)? {
            let mut values: Vec<Box<dyn ToSql + Sync>> = Vec::with_capacity(table.kinds.len());
            for (i, kind) in table.kinds.iter().enumerate() {
                let value: Value = row.get(i).map_err(source_err)?;
                values.push(convert(table.name, i, *kind, value)?);
            }
            let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v).collect();
            tx.execute(&insert, &params)?;
            n += 1;
        }
        Ok(n)
    }

    /// The received bytes of unfinished uploads (`uploads/<id>.part`), as one chunk each, so a
    /// device continues its upload on the new storage where it stopped.
    fn copy_upload_bytes(&self, tx: &mut postgres::Transaction<'_>) -> Result<(), StorageError> {
        let mut stmt =
            self.conn.prepare("SELECT id FROM uploads ORDER BY id").map_err(source_err)?;
        let ids = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(source_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(source_err)?;
        for id in ids {
            if hattama_core::evidence::Sha256Hash::from_hex(&id).is_none() {
                return Err(StorageError::Corrupt(format!("an upload id {id:?}")));
            }
            let bytes = match std::fs::read(self.dir.join("uploads").join(format!("{id}.part"))) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            if !bytes.is_empty() {
                tx.execute(
                    "INSERT INTO upload_chunks (upload_id, start, bytes) VALUES ($1, 0, $2)",
                    &[&id, &bytes],
                )?;
            }
        }
        Ok(())
    }
}

/// One SQLite value as the PostgreSQL parameter of its column.
fn convert(
    table: &str,
    column: usize,
    kind: Col,
    value: Value,
) -> Result<Box<dyn ToSql + Sync>, StorageError> {
    fn boxed<T: ToSql + Sync + 'static>(v: T) -> Box<dyn ToSql + Sync> {
        Box::new(v)
    }
    Ok(match (kind, value) {
        (Int | OptInt, Value::Integer(v)) => boxed(v),
        (OptInt, Value::Null) => boxed(None::<i64>),
        (Text | OptText, Value::Text(v)) => boxed(v),
        (OptText, Value::Null) => boxed(None::<String>),
        (Bytes, Value::Blob(v)) => boxed(v),
        // A blob column that SQLite holds as text (a JSON definition written as text).
        (Bytes, Value::Text(v)) => boxed(v.into_bytes()),
        (Bool, Value::Integer(v)) => boxed(v != 0),
        (kind, value) => {
            return Err(StorageError::Corrupt(format!(
                "table {table}, column {}: a {:?} where a {kind:?} belongs",
                column + 1,
                value.data_type()
            )));
        }
    })
}

/// What the target database holds: nothing, another instance's data, or a migration's record.
pub fn target_state(target: &PgStorage) -> Result<TargetState, StorageError> {
    let mut conn = target.conn()?;
    if let Some(row) = conn.query_opt(
        "SELECT source_log_key, objects_digest, objects_copied, tables_copied_at_ms
         FROM embedded_migration WHERE id = 1",
        &[],
    )? {
        return Ok(TargetState::Migration(Progress {
            source_log_key: row.get(0),
            objects_digest: row.get(1),
            objects_copied: row.get::<_, i64>(2).max(0) as u64,
            tables_copied: row.get::<_, Option<i64>>(3).is_some(),
        }));
    }
    for table in TABLES.iter().map(|t| t.name).chain(["upload_chunks", "photos"]) {
        let any: bool =
            conn.query_one(format!("SELECT EXISTS (SELECT 1 FROM {table})").as_str(), &[])?.get(0);
        if any {
            return Ok(TargetState::NotEmpty { table });
        }
    }
    Ok(TargetState::Empty)
}

/// Records the start of a migration of the instance whose log key is `source_log_key` into an
/// empty target. Fails if another process recorded one meanwhile.
pub fn begin(target: &PgStorage, source_log_key: &str, now_ms: u64) -> Result<(), StorageError> {
    let mut conn = target.conn()?;
    conn.execute(
        "INSERT INTO embedded_migration (id, source_log_key, started_at_ms) VALUES (1, $1, $2)",
        &[&source_log_key, &ms(now_ms)],
    )?;
    Ok(())
}

/// Records that the first `copied` objects of the list of digest `digest` are stored.
pub fn record_objects(target: &PgStorage, digest: &str, copied: u64) -> Result<(), StorageError> {
    let mut conn = target.conn()?;
    conn.execute(
        "UPDATE embedded_migration SET objects_digest = $1, objects_copied = $2 WHERE id = 1",
        &[&digest, &ms(copied)],
    )?;
    Ok(())
}

/// Records a successful verification.
pub fn record_verified(target: &PgStorage, now_ms: u64) -> Result<(), StorageError> {
    let mut conn = target.conn()?;
    conn.execute("UPDATE embedded_migration SET verified_at_ms = $1 WHERE id = 1", &[&ms(now_ms)])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table of the embedded backend is copied, or kept elsewhere on purpose: a table
    /// added later without a place here would be lost by a migration.
    #[test]
    fn every_embedded_table_is_copied() {
        let dir = tempfile::tempdir().unwrap();
        drop(super::super::SqliteStorage::open(dir.path(), false).unwrap());
        let source = EmbeddedSource::open(dir.path()).unwrap();
        let mut stmt = source
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        let tables: Vec<String> =
            stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
        // Photos become objects `photos/<sha256>`; the generation and the log's head are set
        // from the source by `copy_tables`.
        let elsewhere = ["small_photos", "review_generation"];
        for table in &tables {
            assert!(
                TABLES.iter().any(|t| t.name == table) || elsewhere.contains(&table.as_str()),
                "table {table} is not migrated"
            );
        }
        for t in TABLES {
            assert!(tables.iter().any(|n| n == t.name), "{} is no table of SQLite", t.name);
            // Each select reads as many columns as are written.
            let read = source.conn.prepare(t.select).unwrap().column_count();
            assert_eq!(read, t.kinds.len(), "{}", t.name);
            assert_eq!(t.columns.split(',').count(), t.kinds.len(), "{}", t.name);
        }
    }

    #[test]
    fn an_older_or_missing_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(EmbeddedSource::open(dir.path()), Err(StorageError::NotFound(_))));
        let conn = Connection::open(dir.path().join(super::super::sqlite::DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 3).unwrap();
        drop(conn);
        let refused = EmbeddedSource::open(dir.path()).err().unwrap().to_string();
        assert!(refused.contains("start this version's server on it once"), "{refused}");
    }
}
