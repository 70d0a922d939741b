//! The witness's state: the logs it witnesses and, per log, the latest checkpoint it cosigned,
//! in one embedded SQLite database; its key in a file beside it.
//!
//! The one promise a witness makes is never to cosign two different trees of the same size (nor
//! a tree that does not extend the one it cosigned before). [`Store::add_checkpoint`] therefore
//! reads the latest checkpoint, checks the request against it, and stores the new one in a
//! single `BEGIN IMMEDIATE` transaction committed with `synchronous = FULL` before the
//! cosignature leaves the process: a SIGKILL at any moment leaves either the old state (and no
//! cosignature was given) or the new one. Every cosigned size is also kept in `cosigned`, whose
//! primary key `(origin, size)` lets the database itself refuse a second root for a size.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::SigningKey;
use hattama_core::log::{Hash, LogKey};
use hattama_core::witness::{
    AddCheckpoint, Cosigner, Latest, Refusal, add_signature_lines, check_add_checkpoint,
    checkpoint_origin,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

/// The database file in the data directory.
pub const DB_FILE: &str = "witness.db";
/// The key file in the data directory: the witness's name, then its Ed25519 seed in base64.
pub const KEY_FILE: &str = "witness.key";

/// Most refused checkpoints kept per log as evidence (the oldest are dropped).
const MAX_REFUSALS_PER_LOG: i64 = 1000;

const SCHEMA: &str = "
CREATE TABLE logs (
    origin TEXT PRIMARY KEY,
    vkey TEXT NOT NULL,
    added_at INTEGER NOT NULL
) STRICT;
CREATE TABLE latest (
    origin TEXT PRIMARY KEY REFERENCES logs(origin),
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    checkpoint BLOB NOT NULL,
    time INTEGER NOT NULL
) STRICT;
CREATE TABLE cosigned (
    origin TEXT NOT NULL REFERENCES logs(origin),
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    first_time INTEGER NOT NULL,
    PRIMARY KEY (origin, size)
) STRICT;
CREATE TABLE refusals (
    id INTEGER PRIMARY KEY,
    origin TEXT NOT NULL REFERENCES logs(origin),
    status INTEGER NOT NULL,
    request BLOB NOT NULL,
    at INTEGER NOT NULL
) STRICT;
";

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database.
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The key file.
    #[error("key file {path}: {detail}")]
    Key {
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A request was refused as the spec says.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A stored value is not what this code wrote.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The data directory is not initialised.
    #[error("{0} is not a witness data directory: run `hattama-witness init` first")]
    NotInitialised(PathBuf),
}

/// A log the witness witnesses, with what it last cosigned.
#[derive(Clone, Debug)]
pub struct LogState {
    /// The log's origin.
    pub origin: String,
    /// The log's verifier key.
    pub vkey: String,
    /// The latest cosigned checkpoint (with the witness's cosignature), its size and time.
    pub latest: Option<(u64, Vec<u8>, u64)>,
    /// Validly signed checkpoints refused because they do not extend what was cosigned (kept
    /// as evidence of a fork, the newest 1000).
    pub refused: u64,
}

/// The witness's database and key.
pub struct Store {
    conn: Mutex<Connection>,
    cosigner: Cosigner,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn open_db(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

impl Store {
    /// Creates a witness in `dir`: a new key named `name` and an empty database. Refuses a
    /// directory that already holds a witness.
    pub fn init(dir: &Path, name: &str) -> Result<Self, StoreError> {
        let key_path = dir.join(KEY_FILE);
        let key_err = |detail: String| StoreError::Key { path: key_path.clone(), detail };
        std::fs::create_dir_all(dir).map_err(|e| key_err(e.to_string()))?;
        match (key_path.exists(), dir.join(DB_FILE).exists()) {
            (false, false) => {}
            (true, true) => {
                return Err(key_err("already exists: this directory holds a witness".into()));
            }
            _ => {
                return Err(key_err(format!(
                    "an earlier init of {} was interrupted (only one of {KEY_FILE} and {DB_FILE} \
                     exists): if this witness never served, remove the directory and run init again",
                    dir.display()
                )));
            }
        }
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let cosigner = Cosigner::new(name, key.clone()).map_err(|e| key_err(e.to_string()))?;
        let conn = open_db(&dir.join(DB_FILE))?;
        conn.execute_batch(&format!("BEGIN; {SCHEMA} PRAGMA user_version = 1; COMMIT;"))?;
        let text = format!("{name}\n{}\n", B64.encode(key.to_bytes()));
        let tmp = dir.join(format!("{KEY_FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &key_path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| key_err(e.to_string()))?;
        Ok(Self { conn: Mutex::new(conn), cosigner })
    }

    /// Opens the witness of `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let key_path = dir.join(KEY_FILE);
        if !key_path.exists() || !dir.join(DB_FILE).exists() {
            return Err(StoreError::NotInitialised(dir.to_owned()));
        }
        let key_err =
            |detail: &str| StoreError::Key { path: key_path.clone(), detail: detail.into() };
        let text = std::fs::read_to_string(&key_path).map_err(|e| key_err(&e.to_string()))?;
        let mut lines = text.lines();
        let (Some(name), Some(seed)) = (lines.next(), lines.next()) else {
            return Err(key_err("expected a name line and a key line"));
        };
        let seed: [u8; 32] = B64
            .decode(seed)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| key_err("the key line is not a base64 Ed25519 seed"))?;
        let cosigner = Cosigner::new(name, SigningKey::from_bytes(&seed))
            .map_err(|e| key_err(&e.to_string()))?;
        let conn = open_db(&dir.join(DB_FILE))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version != 1 {
            return Err(StoreError::Corrupt(format!("schema version {version}, expected 1")));
        }
        Ok(Self { conn: Mutex::new(conn), cosigner })
    }

    /// The witness's cosigner.
    pub fn cosigner(&self) -> &Cosigner {
        &self.cosigner
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-written transaction (it rolls back
        // on drop), so a poisoned lock is safe to take.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a log to witness (or replaces the key of a known origin that has nothing cosigned).
    pub fn add_log(&self, key: &LogKey) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let cosigned: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM latest WHERE origin = ?1)",
            [&key.origin],
            |r| r.get(0),
        )?;
        let known: Option<String> = tx
            .query_row("SELECT vkey FROM logs WHERE origin = ?1", [&key.origin], |r| r.get(0))
            .optional()?;
        if cosigned && known.as_deref() != Some(key.vkey.as_str()) {
            return Err(StoreError::Corrupt(format!(
                "log {} already has cosigned checkpoints under another key",
                key.origin
            )));
        }
        tx.execute(
            "INSERT INTO logs (origin, vkey, added_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (origin) DO UPDATE SET vkey = excluded.vkey",
            params![key.origin, key.vkey, now_secs() as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The logs and their latest cosigned checkpoints.
    pub fn logs(&self) -> Result<Vec<LogState>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT logs.origin, logs.vkey, latest.size, latest.checkpoint, latest.time,
                 (SELECT count(*) FROM refusals WHERE refusals.origin = logs.origin)
             FROM logs LEFT JOIN latest ON latest.origin = logs.origin ORDER BY logs.origin",
        )?;
        let rows = stmt.query_map([], |r| {
            let size: Option<i64> = r.get(2)?;
            Ok(LogState {
                origin: r.get(0)?,
                vkey: r.get(1)?,
                latest: match size {
                    Some(s) => Some((s as u64, r.get(3)?, r.get::<_, i64>(4)? as u64)),
                    None => None,
                },
                refused: r.get::<_, i64>(5)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Handles an add-checkpoint request body: checks it against the latest checkpoint of its
    /// log and, if it passes, stores it with its cosignature and returns the signature line,
    /// all in one transaction committed before this returns.
    pub fn add_checkpoint(&self, body: &[u8]) -> Result<String, StoreError> {
        let req = AddCheckpoint::parse(body).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        let origin = checkpoint_origin(&req.checkpoint)?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let vkey: Option<String> = tx
            .query_row("SELECT vkey FROM logs WHERE origin = ?1", [&origin], |r| r.get(0))
            .optional()?;
        let log = match vkey {
            Some(v) => Some(LogKey::from_vkey(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?),
            None => None,
        };
        let latest = tx
            .query_row("SELECT size, root FROM latest WHERE origin = ?1", [&origin], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .optional()?
            .map(|(size, root)| {
                let root: [u8; 32] =
                    root.try_into().map_err(|_| StoreError::Corrupt("root hash".into()))?;
                Ok::<_, StoreError>(Latest { size: size as u64, root: Hash(root) })
            })
            .transpose()?;
        let cp = match check_add_checkpoint(&req, log.as_ref(), latest) {
            Ok(cp) => cp,
            Err(refusal) => {
                // A validly signed checkpoint that does not extend what was cosigned may be
                // evidence of a fork: keep it (bounded) for the operator.
                if matches!(refusal, Refusal::OtherRoot { .. } | Refusal::BadProof) {
                    tx.execute(
                        "INSERT INTO refusals (origin, status, request, at) VALUES (?1, ?2, ?3, ?4)",
                        params![origin, refusal.status(), body, now_secs() as i64],
                    )?;
                    tx.execute(
                        "DELETE FROM refusals WHERE origin = ?1 AND id NOT IN
                         (SELECT id FROM refusals WHERE origin = ?1 ORDER BY id DESC LIMIT ?2)",
                        params![origin, MAX_REFUSALS_PER_LOG],
                    )?;
                    tx.commit()?;
                }
                return Err(refusal.into());
            }
        };
        let text = note_text(&cp.note)?;
        let time = now_secs();
        let sig =
            self.cosigner.cosign(&text, time).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let stored = add_signature_lines(&cp.note, std::slice::from_ref(&sig))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        tx.execute(
            "INSERT INTO latest (origin, size, root, checkpoint, time) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root,
                 checkpoint = excluded.checkpoint, time = excluded.time",
            params![origin, cp.size as i64, &cp.root.0[..], stored, time as i64],
        )?;
        // Same size again (the same root, checked above): keep the first time it was cosigned.
        let root_then: Vec<u8> = tx.query_row(
            "INSERT INTO cosigned (origin, size, root, first_time) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (origin, size) DO UPDATE SET first_time = first_time
             RETURNING root",
            params![origin, cp.size as i64, &cp.root.0[..], time as i64],
            |r| r.get(0),
        )?;
        if root_then != cp.root.0 {
            // Unreachable while check_add_checkpoint holds; the transaction rolls back.
            return Err(StoreError::Corrupt(format!("two roots for size {}", cp.size)));
        }
        hattama_core::hooks::pause("witness:before-commit");
        tx.commit()?;
        hattama_core::hooks::pause("witness:after-commit");
        Ok(String::from_utf8_lossy(&sig.to_bytes()).into_owned())
    }

    /// Every size cosigned for a log with its root, smallest first (for tests and monitors).
    pub fn cosigned(&self, origin: &str) -> Result<Vec<(u64, Hash)>, StoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT size, root FROM cosigned WHERE origin = ?1 ORDER BY size")?;
        let rows =
            stmt.query_map([origin], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
        rows.map(|r| {
            let (size, root) = r?;
            let root: [u8; 32] =
                root.try_into().map_err(|_| StoreError::Corrupt("root hash".into()))?;
            Ok((size as u64, Hash(root)))
        })
        .collect()
    }
}

/// The body of a signed note (with its final newline).
fn note_text(note: &[u8]) -> Result<Vec<u8>, StoreError> {
    hattama_core::witness::note_body(note).map_err(|e| StoreError::Corrupt(e.to_string()))
}
