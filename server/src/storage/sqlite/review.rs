//! The review's SQL ([`ReviewStorage`] for [`SqliteStorage`]): accounts, sessions, the review
//! index, decisions, transcription entries and the audit trail. The schema is its migration in
//! `MIGRATIONS` (`mod.rs`); its triggers make decisions, entries and audit events append-only.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use hattama_core::election::Election;
use hattama_core::evidence::{Manifest, Sha256Hash};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params, params_from_iter};

use super::{SqliteStorage, lock, ms};
use crate::review::flags;
use crate::storage::StorageError;
use crate::storage::review::{
    AuditEvent, AuditFilter, Decision, DecisionKind, DecisionRecord, Entry, Flag, NewAudit,
    NewEntry, NewUser, QueueFilter, QueueItem, QueuePage, QueueView, ReviewState, ReviewStorage,
    Role, Session, Transcription, TranscriptionStatus, User,
};

/// The review's tables (a migration of `MIGRATIONS`).
pub(super) const MIGRATION: &str = "
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'coordinator', 'supervisor')),
    regions TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    disabled_at_ms INTEGER,
    created_at_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE sessions (
    token_sha256 BLOB PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id),
    csrf TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE TABLE review_index (
    capture_id TEXT PRIMARY KEY REFERENCES captures (id),
    src_rowid INTEGER NOT NULL UNIQUE,
    election TEXT NOT NULL,
    precinct TEXT NOT NULL,
    number INTEGER NOT NULL,
    region TEXT NOT NULL,
    district TEXT NOT NULL,
    device_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    page INTEGER NOT NULL,
    pages INTEGER NOT NULL,
    kind TEXT NOT NULL,
    captured_at_ms INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    photo_sha256 TEXT NOT NULL,
    transcription TEXT,
    flags INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'new'
) STRICT;
CREATE INDEX review_queue ON review_index
    (election, region, district, number, precinct, page, received_at_ms, capture_id);
-- The queue of one state (usually: the new captures), in queue order.
CREATE INDEX review_queue_by_state ON review_index
    (election, state, region, district, number, precinct, page, received_at_ms, capture_id);
CREATE INDEX review_by_device ON review_index (device_id, seq);
CREATE INDEX review_by_photo ON review_index (photo_sha256);
CREATE INDEX review_by_precinct ON review_index (election, precinct);
-- Bumped by every change of the review index (captures indexed, decisions), in the same
-- transaction, by whichever process makes it: what the queue's counts are cached against.
CREATE TABLE review_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
) STRICT;
INSERT INTO review_generation (id, value) VALUES (1, 0);
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY,
    capture_id TEXT NOT NULL REFERENCES captures (id),
    user_id INTEGER NOT NULL REFERENCES users (id),
    kind TEXT NOT NULL CHECK (kind IN ('accepted', 'rejected', 'flagged')),
    reason TEXT,
    at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX decisions_by_capture ON decisions (capture_id, id);
CREATE TABLE entries (
    id INTEGER PRIMARY KEY,
    election TEXT NOT NULL,
    precinct TEXT NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users (id),
    values_json TEXT NOT NULL,
    reason TEXT,
    resolution INTEGER NOT NULL,
    at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX entries_by_precinct ON entries (election, precinct, id);
CREATE TABLE transcriptions (
    election TEXT NOT NULL,
    precinct TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'disputed', 'verified')),
    values_json TEXT NOT NULL,
    verified_at_ms INTEGER,
    inconsistency_note TEXT,
    PRIMARY KEY (election, precinct)
) STRICT;
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    user_id INTEGER REFERENCES users (id),
    user_name TEXT,
    action TEXT NOT NULL,
    election TEXT,
    precinct TEXT,
    capture_id TEXT,
    before TEXT,
    after TEXT
) STRICT;
CREATE INDEX audit_by_capture ON audit (capture_id);
CREATE INDEX audit_by_precinct ON audit (election, precinct);
CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions
    BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions
    BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
    BEGIN SELECT RAISE(ABORT, 'entries are append-only'); END;
CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
    BEGIN SELECT RAISE(ABORT, 'entries are append-only'); END;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
";

/// What the queue pages read again and again, kept between requests: the number of captures
/// matching a filter (counting 30,000 index entries costs milliseconds, and every queue page
/// shows the total) and an election's regions and districts. Counts are kept against the
/// `review_generation` row, which every change of the review index (and every transcription
/// entry, which the views by transcription state read) bumps in its own transaction, whatever process makes it (the server, or `hattama-server demo` seeding beside
/// it), so they are exact; regions are kept against the election's import time.
#[derive(Default)]
pub(super) struct ReviewCache {
    counts: Mutex<HashMap<String, (i64, u64)>>,
    regions: Mutex<HashMap<String, (i64, Vec<(String, Vec<String>)>)>>,
}

/// Most filters whose counts are kept (then the cache starts over).
const COUNT_CACHE_ENTRIES: usize = 4096;

/// Marks the review index changed (inside the changing transaction).
fn bump_generation(c: &Connection) -> Result<(), StorageError> {
    c.prepare_cached("UPDATE review_generation SET value = value + 1 WHERE id = 1")?.execute([])?;
    Ok(())
}

/// Captures indexed per step of [`ReviewStorage::refresh_index`] (bounds its memory).
const INDEX_BATCH: i64 = 5_000;

const USER_COLUMNS: &str =
    "id, username, display_name, role, regions, disabled_at_ms, created_at_ms, password_hash";

const ITEM_COLUMNS: &str = "r.capture_id, r.election, r.precinct, r.number, r.region, r.district,
    coalesce(p.address, ''), r.device_id, r.seq, r.page, r.pages, r.kind, r.captured_at_ms,
    r.received_at_ms, r.photo_sha256, r.flags, r.state";

const ITEM_FROM: &str =
    "review_index r LEFT JOIN precincts p ON p.election = r.election AND p.id = r.precinct";

const QUEUE_ORDER: &str =
    "r.region, r.district, r.number, r.precinct, r.page, r.received_at_ms, r.capture_id";

/// An account by login name, as it is before a change.
fn user_named(c: &Connection, username: &str) -> Result<Option<User>, StorageError> {
    c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1"))?
        .query_row([username], user_row)
        .optional()?
        .map(|row| Ok(finish_user(row)?.0))
        .transpose()
}

fn corrupt(what: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(what.to_string())
}

fn hash(h: &str) -> Result<Sha256Hash, StorageError> {
    Sha256Hash::from_hex(h).ok_or_else(|| corrupt(format!("bad hash {h}")))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StorageError> {
    serde_json::to_string(v).map_err(corrupt)
}

fn values_from_json(s: &str) -> Result<BTreeMap<String, u64>, StorageError> {
    serde_json::from_str(s).map_err(corrupt)
}

fn user_row(r: &Row<'_>) -> rusqlite::Result<(User, String, String, String)> {
    let regions: String = r.get(4)?;
    let role: String = r.get(3)?;
    Ok((
        User {
            id: r.get(0)?,
            username: r.get(1)?,
            display_name: r.get(2)?,
            role: Role::Coordinator,
            regions: Vec::new(),
            disabled: r.get::<_, Option<i64>>(5)?.is_some(),
            created_at_ms: r.get::<_, i64>(6)? as u64,
        },
        role,
        regions,
        r.get(7)?,
    ))
}

fn finish_user(
    (mut user, role, regions, hash): (User, String, String, String),
) -> Result<(User, String), StorageError> {
    user.role = Role::parse(&role).ok_or_else(|| corrupt(format!("role {role}")))?;
    user.regions = serde_json::from_str(&regions).map_err(corrupt)?;
    Ok((user, hash))
}

type RawItem = (
    String,
    String,
    String,
    i64,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    String,
    i64,
    i64,
    String,
    i64,
    String,
);

fn item_row(r: &Row<'_>) -> rusqlite::Result<RawItem> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
        r.get(12)?,
        r.get(13)?,
        r.get(14)?,
        r.get(15)?,
        r.get(16)?,
    ))
}

fn finish_item(raw: RawItem) -> Result<QueueItem, StorageError> {
    let (id, election, precinct, number, region, district, address, device_id, seq, page, pages) =
        (raw.0, raw.1, raw.2, raw.3, raw.4, raw.5, raw.6, raw.7, raw.8, raw.9, raw.10);
    Ok(QueueItem {
        capture: hash(&id)?,
        election,
        precinct,
        number: number as u32,
        region,
        district,
        address,
        device_id,
        seq: seq as u64,
        page: page as u32,
        pages: pages as u32,
        kind: raw.11,
        captured_at_ms: raw.12 as u64,
        received_at_ms: raw.13 as u64,
        photo_sha256: hash(&raw.14)?,
        flags: raw.15 as u32,
        state: ReviewState::parse(&raw.16).ok_or_else(|| corrupt(format!("state {}", raw.16)))?,
    })
}

/// The WHERE clause and parameters of a queue filter.
fn filter_sql(f: &QueueFilter) -> (String, Vec<Value>) {
    let mut sql = String::from("r.election = ?");
    let mut params = vec![Value::Text(f.election.clone())];
    if let Some(region) = &f.region {
        sql.push_str(" AND r.region = ?");
        params.push(Value::Text(region.clone()));
    }
    if let Some(district) = &f.district {
        sql.push_str(" AND r.district = ?");
        params.push(Value::Text(district.clone()));
    }
    if let Some(precinct) = &f.precinct {
        sql.push_str(" AND (r.precinct = ? OR r.number = ?)");
        params.push(Value::Text(precinct.clone()));
        params.push(Value::Integer(precinct.parse::<i64>().unwrap_or(-1)));
    }
    if let Some(state) = f.state {
        sql.push_str(" AND r.state = ?");
        params.push(Value::Text(state.as_str().into()));
    }
    if let Some(flag) = f.flag {
        sql.push_str(" AND r.flags & ? != 0");
        params.push(Value::Integer(i64::from(flag.bit())));
    }
    if let Some(scope) = &f.scope {
        sql.push_str(" AND r.region IN (");
        sql.push_str(&vec!["?"; scope.len()].join(", "));
        sql.push(')');
        params.extend(scope.iter().map(|r| Value::Text(r.clone())));
    }
    // The views by transcription state: one lookup per capture in `transcriptions` (primary
    // key) and `entries` (`entries_by_precinct`).
    let not_entered_by = "NOT EXISTS (SELECT 1 FROM entries e WHERE e.election = r.election
        AND e.precinct = r.precinct AND e.user_id = ?)";
    match f.view {
        None => {}
        Some(QueueView::NeedsEntry(user)) => {
            sql.push_str(&format!(
                " AND r.state != 'rejected' AND r.kind != 'not-posted'
                    AND NOT EXISTS (SELECT 1 FROM transcriptions t
                    WHERE t.election = r.election AND t.precinct = r.precinct
                    AND t.status != 'pending') AND {not_entered_by}"
            ));
            params.push(Value::Integer(user));
        }
        Some(QueueView::Disputed(user)) => {
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM transcriptions t WHERE t.election = r.election
                    AND t.precinct = r.precinct AND t.status = 'disputed') AND {not_entered_by}"
            ));
            params.push(Value::Integer(user));
        }
        Some(QueueView::Inconsistent) => sql.push_str(
            " AND EXISTS (SELECT 1 FROM entries e WHERE e.election = r.election
                AND e.precinct = r.precinct AND e.reason IS NOT NULL)",
        ),
    }
    (sql, params)
}

/// One capture read for indexing.
struct NewIndexRow {
    rowid: i64,
    id: String,
    device_id: String,
    seq: i64,
    election: String,
    precinct: String,
    manifest: Vec<u8>,
    photo: String,
    received: i64,
    number: i64,
    region: String,
    district: String,
}

/// Recomputes the chain flag of a device's captures: set on a capture whose chain is broken,
/// that is whose predecessor (sequence number − 1) never reached the server, whose `prev` is
/// not the id of that predecessor, or whose sequence number another capture of the device
/// also has.
fn flag_chain_gaps(c: &Connection, device: &str) -> Result<(), StorageError> {
    let rows = c
        .prepare_cached(
            "SELECT r.capture_id, r.seq, c.manifest FROM review_index r
             JOIN captures c ON c.id = r.capture_id WHERE r.device_id = ?1",
        )?
        .query_map([device], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let links: Vec<flags::Link<'_>> = rows
        .iter()
        .map(|(id, seq, manifest)| flags::Link {
            id,
            seq: *seq as u64,
            // A stored manifest was verified on ingest; one that does not parse is a break too.
            prev: Manifest::from_canonical(manifest).ok().map(|m| m.prev.to_hex()),
        })
        .collect();
    let mut update = c.prepare_cached(
        "UPDATE review_index SET flags = (flags & ~1) | ?2 WHERE capture_id = ?1",
    )?;
    for (link, broken) in links.iter().zip(flags::chain_breaks(&links)) {
        let flag = if broken { Flag::ChainGap.bit() } else { 0 };
        update.execute(params![link.id, flag])?;
    }
    Ok(())
}

/// Recomputes the duplicate-photo flag of the captures of a photo.
fn flag_duplicate_photos(c: &Connection, photo: &str) -> Result<(), StorageError> {
    let rows = c
        .prepare_cached(
            "SELECT capture_id, election, precinct FROM review_index WHERE photo_sha256 = ?1",
        )?
        .query_map([photo], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let places: Vec<(&str, &str)> = rows.iter().map(|(_, e, p)| (e.as_str(), p.as_str())).collect();
    let mut update = c.prepare_cached(
        "UPDATE review_index SET flags = (flags & ~4) | ?2 WHERE capture_id = ?1",
    )?;
    for ((id, _, _), elsewhere) in rows.iter().zip(flags::photo_elsewhere(&places)) {
        let flag = if elsewhere { Flag::DuplicatePhoto.bit() } else { 0 };
        update.execute(params![id, flag])?;
    }
    Ok(())
}

/// Recomputes the devices-disagree flag of a precinct: set on its captures that carry an
/// observer's transcription when two devices' newest transcriptions differ on a line.
fn flag_disagreements(c: &Connection, election: &str, precinct: &str) -> Result<(), StorageError> {
    let mut stmt = c.prepare_cached(
        "SELECT device_id, transcription FROM review_index
         WHERE election = ?1 AND precinct = ?2 AND transcription IS NOT NULL ORDER BY seq",
    )?;
    let mut newest: HashMap<String, BTreeMap<String, u64>> = HashMap::new();
    for row in stmt.query_map([election, precinct], |r| Ok((r.get(0)?, r.get(1)?)))? {
        let (device, json): (String, String) = row?;
        newest.insert(device, values_from_json(&json)?);
    }
    let disagree = flags::devices_disagree(newest.values());
    c.prepare_cached(
        "UPDATE review_index SET flags = (flags & ~2) | ?3
         WHERE election = ?1 AND precinct = ?2 AND transcription IS NOT NULL",
    )?
    .execute(params![
        election,
        precinct,
        if disagree { Flag::DevicesDisagree.bit() } else { 0 }
    ])?;
    Ok(())
}

fn load_transcription(
    c: &Connection,
    election: &str,
    precinct: &str,
) -> Result<Option<Transcription>, StorageError> {
    let row: Option<(String, String, Option<i64>, Option<String>)> = c
        .prepare_cached(
            "SELECT status, values_json, verified_at_ms, inconsistency_note FROM transcriptions
             WHERE election = ?1 AND precinct = ?2",
        )?
        .query_row([election, precinct], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    row.map(|(status, values, verified, note)| {
        Ok(Transcription {
            precinct: precinct.to_owned(),
            status: TranscriptionStatus::parse(&status)
                .ok_or_else(|| corrupt(format!("status {status}")))?,
            values: values_from_json(&values)?,
            verified_at_ms: verified.map(|v| v as u64),
            inconsistency_note: note,
        })
    })
    .transpose()
}

pub(super) fn insert_audit(c: &Connection, e: &NewAudit) -> Result<(), StorageError> {
    c.prepare_cached(
        "INSERT INTO audit (at_ms, user_id, user_name, action, election, precinct, capture_id,
            before, after)
         VALUES (?1, ?2, (SELECT display_name FROM users WHERE id = ?2), ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        ms(e.at_ms),
        e.user_id,
        e.action,
        e.election,
        e.precinct,
        e.capture,
        e.before,
        e.after
    ])?;
    Ok(())
}

impl ReviewStorage for SqliteStorage {
    fn capture_decisions(
        &self,
        election: &str,
    ) -> Result<HashMap<Sha256Hash, Decision>, StorageError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT d.capture_id, d.kind, d.reason, d.at_ms FROM decisions d
                 JOIN captures c ON c.id = d.capture_id
                 WHERE c.election = ?1
                   AND d.id = (SELECT max(id) FROM decisions WHERE capture_id = d.capture_id)",
            )?;
            let rows = stmt.query_map([election], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            let mut out = HashMap::new();
            for row in rows {
                let (id, kind, reason, at) = row?;
                let kind =
                    DecisionKind::parse(&kind).ok_or_else(|| corrupt(format!("kind {kind}")))?;
                out.insert(hash(&id)?, Decision { kind, reason, at_ms: at as u64 });
            }
            Ok(out)
        })
    }

    fn transcriptions(&self, election: &str) -> Result<Vec<Transcription>, StorageError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT precinct FROM transcriptions WHERE election = ?1 ORDER BY precinct",
            )?;
            let precincts =
                stmt.query_map([election], |r| r.get(0))?.collect::<Result<Vec<String>, _>>()?;
            precincts
                .iter()
                .filter_map(|p| load_transcription(c, election, p).transpose())
                .collect()
        })
    }

    fn create_user(
        &self,
        user: &NewUser,
        password_hash: &str,
        now_ms: u64,
        audit: &dyn Fn(&User) -> NewAudit,
    ) -> Result<User, StorageError> {
        let regions = to_json(&user.regions)?;
        let mut conn = lock(&self.writer)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let taken: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM users WHERE username = ?1)",
            [&user.username],
            |r| r.get(0),
        )?;
        if taken {
            return Err(StorageError::Conflict(format!("user {} exists", user.username)));
        }
        tx.execute(
            "INSERT INTO users (username, display_name, role, regions, password_hash,
                created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                user.username,
                user.display_name,
                user.role.as_str(),
                regions,
                password_hash,
                ms(now_ms)
            ],
        )?;
        let created = User {
            id: tx.last_insert_rowid(),
            username: user.username.clone(),
            display_name: user.display_name.clone(),
            role: user.role,
            regions: user.regions.clone(),
            disabled: false,
            created_at_ms: now_ms,
        };
        insert_audit(&tx, &audit(&created))?;
        tx.commit()?;
        Ok(created)
    }

    fn user_by_name(&self, username: &str) -> Result<Option<(User, String)>, StorageError> {
        self.read(|c| {
            c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1"))?
                .query_row([username], user_row)
                .optional()?
                .map(finish_user)
                .transpose()
        })
    }

    fn users(&self) -> Result<Vec<User>, StorageError> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))?;
            let rows = stmt.query_map([], user_row)?;
            rows.map(|r| Ok(finish_user(r?)?.0)).collect()
        })
    }

    fn disable_user(
        &self,
        username: &str,
        now_ms: u64,
        audit: &dyn Fn(&User) -> NewAudit,
    ) -> Result<bool, StorageError> {
        let mut conn = lock(&self.writer)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(user) = user_named(&tx, username)? else { return Ok(false) };
        let id = user.id;
        tx.execute(
            "UPDATE users SET disabled_at_ms = coalesce(disabled_at_ms, ?2) WHERE id = ?1",
            params![id, ms(now_ms)],
        )?;
        tx.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?;
        insert_audit(&tx, &audit(&user))?;
        tx.commit()?;
        Ok(true)
    }

    fn set_password(
        &self,
        username: &str,
        hash: &str,
        audit: &dyn Fn(&User) -> NewAudit,
    ) -> Result<bool, StorageError> {
        let mut conn = lock(&self.writer)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(user) = user_named(&tx, username)? else { return Ok(false) };
        let id = user.id;
        tx.execute(
            "UPDATE users SET password_hash = ?2, disabled_at_ms = NULL WHERE id = ?1",
            params![id, hash],
        )?;
        tx.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?;
        insert_audit(&tx, &audit(&user))?;
        tx.commit()?;
        Ok(true)
    }

    fn create_session(
        &self,
        token_sha256: &[u8; 32],
        user_id: i64,
        csrf: &str,
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<(), StorageError> {
        let conn = lock(&self.writer)?;
        // Expired sessions go when new ones come.
        conn.prepare_cached("DELETE FROM sessions WHERE expires_at_ms <= ?1")?
            .execute([ms(now_ms)])?;
        conn.prepare_cached(
            "INSERT INTO sessions (token_sha256, user_id, csrf, created_at_ms, expires_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            token_sha256.as_slice(),
            user_id,
            csrf,
            ms(now_ms),
            ms(expires_at_ms)
        ])?;
        Ok(())
    }

    fn session(
        &self,
        token_sha256: &[u8; 32],
        now_ms: u64,
    ) -> Result<Option<Session>, StorageError> {
        self.read(|c| {
            let row = c
                .prepare_cached(
                    "SELECT u.id, u.username, u.display_name, u.role, u.regions,
                        u.disabled_at_ms, u.created_at_ms, u.password_hash,
                        s.csrf, s.expires_at_ms
                     FROM sessions s JOIN users u ON u.id = s.user_id
                     WHERE s.token_sha256 = ?1 AND s.expires_at_ms > ?2
                       AND u.disabled_at_ms IS NULL",
                )?
                .query_row(params![token_sha256.as_slice(), ms(now_ms)], |r| {
                    Ok((user_row(r)?, r.get::<_, String>(8)?, r.get::<_, i64>(9)?))
                })
                .optional()?;
            row.map(|(user, csrf, expires)| {
                Ok(Session { user: finish_user(user)?.0, csrf, expires_at_ms: expires as u64 })
            })
            .transpose()
        })
    }

    fn delete_session(&self, token_sha256: &[u8; 32]) -> Result<(), StorageError> {
        let conn = lock(&self.writer)?;
        conn.execute("DELETE FROM sessions WHERE token_sha256 = ?1", [token_sha256.as_slice()])?;
        Ok(())
    }

    fn append_audit(&self, event: &NewAudit) -> Result<(), StorageError> {
        let conn = lock(&self.writer)?;
        insert_audit(&conn, event)
    }

    fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StorageError> {
        let mut clauses = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        if let Some(capture) = &filter.capture {
            clauses.push("capture_id = ?".to_owned());
            values.push(Value::Text(capture.clone()));
        }
        if let Some((election, precinct)) = &filter.precinct {
            clauses.push("(election = ? AND precinct = ? AND capture_id IS NULL)".to_owned());
            values.push(Value::Text(election.clone()));
            values.push(Value::Text(precinct.clone()));
        }
        let mut sql = String::from(
            "SELECT id, at_ms, user_id, user_name, action, election, precinct, capture_id,
                before, after FROM audit",
        );
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" OR "));
        }
        if filter.limit > 0 {
            sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", filter.limit));
        } else {
            sql.push_str(" ORDER BY id");
        }
        self.read(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(values), |r| {
                Ok(AuditEvent {
                    id: r.get(0)?,
                    at_ms: r.get::<_, i64>(1)? as u64,
                    user_id: r.get(2)?,
                    user_name: r.get(3)?,
                    action: r.get(4)?,
                    election: r.get(5)?,
                    precinct: r.get(6)?,
                    capture: r.get(7)?,
                    before: r.get(8)?,
                    after: r.get(9)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn refresh_index(&self) -> Result<(), StorageError> {
        let behind: bool = self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT (SELECT coalesce(max(rowid), 0) FROM captures)
                      > (SELECT coalesce(max(src_rowid), 0) FROM review_index)",
            )?
            .query_row([], |r| r.get(0))?)
        })?;
        if !behind {
            return Ok(());
        }
        let mut conn = lock(&self.writer)?;
        loop {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let floor: i64 =
                tx.query_row("SELECT coalesce(max(src_rowid), 0) FROM review_index", [], |r| {
                    r.get(0)
                })?;
            let rows = {
                let mut stmt = tx.prepare_cached(
                    "SELECT c.rowid, c.id, c.device_id, c.seq, c.election, c.precinct, c.manifest,
                        c.photo_sha256, c.received_at_ms, coalesce(p.number, 0),
                        coalesce(p.region, ''), coalesce(p.district, '')
                     FROM captures c
                     LEFT JOIN precincts p ON p.election = c.election AND p.id = c.precinct
                     WHERE c.rowid > ?1 ORDER BY c.rowid LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![floor, INDEX_BATCH], |r| {
                    Ok(NewIndexRow {
                        rowid: r.get(0)?,
                        id: r.get(1)?,
                        device_id: r.get(2)?,
                        seq: r.get(3)?,
                        election: r.get(4)?,
                        precinct: r.get(5)?,
                        manifest: r.get(6)?,
                        photo: r.get(7)?,
                        received: r.get(8)?,
                        number: r.get(9)?,
                        region: r.get(10)?,
                        district: r.get(11)?,
                    })
                })?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            if rows.is_empty() {
                tx.commit()?;
                return Ok(());
            }
            let mut count_times: HashMap<String, Option<u64>> = HashMap::new();
            let mut devices = BTreeSet::new();
            let mut photos = BTreeSet::new();
            let mut precincts = BTreeSet::new();
            for row in &rows {
                let manifest: Manifest = serde_json::from_slice(&row.manifest)
                    .map_err(|e| corrupt(format!("manifest of {}: {e}", row.id)))?;
                if !count_times.contains_key(&row.election) {
                    let definition: Option<Vec<u8>> = tx
                        .query_row(
                            "SELECT definition FROM elections WHERE id = ?1",
                            [&row.election],
                            |r| r.get(0),
                        )
                        .optional()?;
                    let count_time = match definition {
                        Some(d) => {
                            serde_json::from_slice::<Election>(&d).map_err(corrupt)?.count_time_ms
                        }
                        None => None,
                    };
                    count_times.insert(row.election.clone(), count_time);
                }
                let count_time = count_times.get(&row.election).copied().flatten();
                let far = flags::time_far(manifest.captured_at_ms, count_time);
                let transcription = manifest.transcription.as_ref().map(to_json).transpose()?;
                tx.prepare_cached(
                    "INSERT INTO review_index (capture_id, src_rowid, election, precinct, number,
                        region, district, device_id, seq, page, pages, kind, captured_at_ms,
                        received_at_ms, photo_sha256, transcription, flags)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                        ?16, ?17)",
                )?
                .execute(params![
                    row.id,
                    row.rowid,
                    row.election,
                    row.precinct,
                    row.number,
                    row.region,
                    row.district,
                    row.device_id,
                    row.seq,
                    manifest.page.number,
                    manifest.page.count,
                    manifest.kind.as_str(),
                    ms(manifest.captured_at_ms),
                    row.received,
                    row.photo,
                    transcription,
                    if far { Flag::TimeFar.bit() } else { 0 },
                ])?;
                devices.insert(row.device_id.clone());
                photos.insert(row.photo.clone());
                if transcription.is_some() {
                    precincts.insert((row.election.clone(), row.precinct.clone()));
                }
            }
            for d in &devices {
                flag_chain_gaps(&tx, d)?;
            }
            for p in &photos {
                flag_duplicate_photos(&tx, p)?;
            }
            for (e, p) in &precincts {
                flag_disagreements(&tx, e, p)?;
            }
            bump_generation(&tx)?;
            tx.commit()?;
        }
    }

    fn queue(
        &self,
        filter: &QueueFilter,
        offset: u64,
        limit: u64,
    ) -> Result<QueuePage, StorageError> {
        let (clause, params) = filter_sql(filter);
        let key = format!("{clause}{params:?}");
        self.read(|c| {
            // The generation first: a change after this makes the entry stale, never wrongly
            // fresh.
            let generation: i64 = c
                .prepare_cached("SELECT value FROM review_generation WHERE id = 1")?
                .query_row([], |r| r.get(0))?;
            let cached = lock(&self.review_cache.counts)?
                .get(&key)
                .filter(|(g, _)| *g == generation)
                .map(|(_, n)| *n);
            let total = match cached {
                Some(n) => n as i64,
                None => {
                    let n: i64 = c
                        .prepare_cached(&format!(
                            "SELECT count(*) FROM review_index r WHERE {clause}"
                        ))?
                        .query_row(params_from_iter(params.iter()), |r| r.get(0))?;
                    let mut counts = lock(&self.review_cache.counts)?;
                    if counts.len() >= COUNT_CACHE_ENTRIES {
                        counts.clear();
                    }
                    counts.insert(key.clone(), (generation, n as u64));
                    n
                }
            };
            let mut all = params.clone();
            all.push(Value::Integer(limit as i64));
            all.push(Value::Integer(offset as i64));
            // The page's ids first, from an index alone where the filter allows (the rows
            // skipped by OFFSET are never read), then their rows.
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {ITEM_COLUMNS} FROM
                    (SELECT r.capture_id AS id FROM review_index r WHERE {clause}
                     ORDER BY {QUEUE_ORDER} LIMIT ? OFFSET ?) page
                 JOIN review_index r ON r.capture_id = page.id
                 LEFT JOIN precincts p ON p.election = r.election AND p.id = r.precinct
                 ORDER BY {QUEUE_ORDER}"
            ))?;
            let items = stmt
                .query_map(params_from_iter(all), item_row)?
                .map(|r| finish_item(r?))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(QueuePage { items, total: total as u64 })
        })
    }

    fn queue_item(&self, capture: &Sha256Hash) -> Result<Option<QueueItem>, StorageError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {ITEM_COLUMNS} FROM {ITEM_FROM} WHERE r.capture_id = ?1"
            ))?
            .query_row([capture.to_hex()], item_row)
            .optional()?
            .map(finish_item)
            .transpose()
        })
    }

    fn queue_neighbours(
        &self,
        filter: &QueueFilter,
        item: &QueueItem,
    ) -> Result<(Option<Sha256Hash>, Option<Sha256Hash>), StorageError> {
        let (clause, params) = filter_sql(filter);
        let key = [
            Value::Text(item.region.clone()),
            Value::Text(item.district.clone()),
            Value::Integer(i64::from(item.number)),
            Value::Text(item.precinct.clone()),
            Value::Integer(i64::from(item.page)),
            Value::Integer(ms(item.received_at_ms)),
            Value::Text(item.capture.to_hex()),
        ];
        let columns = QUEUE_ORDER;
        let desc = QUEUE_ORDER.replace(',', " DESC,") + " DESC";
        self.read(|c| {
            let find = |op: &str, order: &str| -> Result<Option<Sha256Hash>, StorageError> {
                let sql = format!(
                    "SELECT r.capture_id FROM review_index r WHERE {clause}
                     AND ({columns}) {op} (?, ?, ?, ?, ?, ?, ?) ORDER BY {order} LIMIT 1"
                );
                let all = params.iter().chain(key.iter());
                c.prepare_cached(&sql)?
                    .query_row(params_from_iter(all), |r| r.get::<_, String>(0))
                    .optional()?
                    .map(|h| hash(&h))
                    .transpose()
            };
            Ok((find("<", &desc)?, find(">", columns)?))
        })
    }

    fn precinct_items(
        &self,
        election: &str,
        precinct: &str,
    ) -> Result<Vec<QueueItem>, StorageError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {ITEM_COLUMNS} FROM {ITEM_FROM} WHERE r.election = ?1 AND r.precinct = ?2
                 ORDER BY {QUEUE_ORDER}"
            ))?;
            let rows = stmt.query_map([election, precinct], item_row)?;
            rows.map(|r| finish_item(r?)).collect()
        })
    }

    fn regions(&self, election: &str) -> Result<Vec<(String, Vec<String>)>, StorageError> {
        self.read(|c| {
            let imported: Option<i64> = c
                .prepare_cached("SELECT imported_at_ms FROM elections WHERE id = ?1")?
                .query_row([election], |r| r.get(0))
                .optional()?;
            let Some(imported) = imported else { return Ok(Vec::new()) };
            if let Some((at, regions)) = lock(&self.review_cache.regions)?.get(election)
                && *at == imported
            {
                return Ok(regions.clone());
            }
            let mut stmt = c.prepare_cached(
                "SELECT DISTINCT region, district FROM precincts WHERE election = ?1
                 ORDER BY region, district",
            )?;
            let mut out: Vec<(String, Vec<String>)> = Vec::new();
            for row in stmt.query_map([election], |r| Ok((r.get(0)?, r.get(1)?)))? {
                let (region, district): (String, String) = row?;
                match out.last_mut() {
                    Some((r, ds)) if *r == region => ds.push(district),
                    _ => out.push((region, vec![district])),
                }
            }
            lock(&self.review_cache.regions)?.insert(election.to_owned(), (imported, out.clone()));
            Ok(out)
        })
    }

    fn election_ids(&self) -> Result<Vec<String>, StorageError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT id FROM elections ORDER BY id")?;
            Ok(stmt.query_map([], |r| r.get(0))?.collect::<Result<Vec<String>, _>>()?)
        })
    }

    fn record_decision(
        &self,
        capture: &Sha256Hash,
        user_id: i64,
        decision: &Decision,
        audit: &NewAudit,
        seen: Option<i64>,
    ) -> Result<(), StorageError> {
        let mut conn = lock(&self.writer)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(seen) = seen {
            let newest: i64 = tx
                .prepare_cached("SELECT coalesce(max(id), 0) FROM decisions WHERE capture_id = ?1")?
                .query_row([capture.to_hex()], |r| r.get(0))?;
            if newest != seen {
                return Err(StorageError::Conflict(format!(
                    "capture {capture} has decision {newest}, not {seen}"
                )));
            }
        }
        tx.execute(
            "INSERT INTO decisions (capture_id, user_id, kind, reason, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                capture.to_hex(),
                user_id,
                decision.kind.as_str(),
                decision.reason,
                ms(decision.at_ms)
            ],
        )?;
        let state = ReviewState::from(decision.kind);
        tx.execute(
            "UPDATE review_index SET state = ?2 WHERE capture_id = ?1",
            params![capture.to_hex(), state.as_str()],
        )?;
        insert_audit(&tx, audit)?;
        bump_generation(&tx)?;
        tx.commit()?;
        Ok(())
    }

    fn device_decisions(
        &self,
        device_id: &str,
        limit: usize,
    ) -> Result<Vec<(Sha256Hash, Decision)>, StorageError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT c.id, d.kind, d.reason, d.at_ms FROM captures c
                 JOIN decisions d ON d.id =
                    (SELECT max(id) FROM decisions WHERE capture_id = c.id)
                 WHERE c.device_id = ?1 ORDER BY c.seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![device_id, limit as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, kind, reason, at) = row?;
                let id = Sha256Hash::from_hex(&id).ok_or_else(|| corrupt(format!("id {id}")))?;
                let kind =
                    DecisionKind::parse(&kind).ok_or_else(|| corrupt(format!("kind {kind}")))?;
                out.push((id, Decision { kind, reason, at_ms: at as u64 }));
            }
            Ok(out)
        })
    }

    fn decision(&self, capture: &Sha256Hash) -> Result<Option<Decision>, StorageError> {
        self.read(|c| {
            let row: Option<(String, Option<String>, i64)> = c
                .prepare_cached(
                    "SELECT kind, reason, at_ms FROM decisions WHERE capture_id = ?1
                     ORDER BY id DESC LIMIT 1",
                )?
                .query_row([capture.to_hex()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            row.map(|(kind, reason, at)| {
                Ok(Decision {
                    kind: DecisionKind::parse(&kind)
                        .ok_or_else(|| corrupt(format!("kind {kind}")))?,
                    reason,
                    at_ms: at as u64,
                })
            })
            .transpose()
        })
    }

    fn decision_record(
        &self,
        capture: &Sha256Hash,
    ) -> Result<Option<DecisionRecord>, StorageError> {
        self.read(|c| {
            let row: Option<(i64, String, String, Option<String>, i64)> = c
                .prepare_cached(
                    "SELECT d.id, u.display_name, d.kind, d.reason, d.at_ms
                     FROM decisions d JOIN users u ON u.id = d.user_id
                     WHERE d.capture_id = ?1 ORDER BY d.id DESC LIMIT 1",
                )?
                .query_row([capture.to_hex()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .optional()?;
            row.map(|(id, user_name, kind, reason, at)| {
                let kind =
                    DecisionKind::parse(&kind).ok_or_else(|| corrupt(format!("kind {kind}")))?;
                Ok(DecisionRecord {
                    id,
                    user_name,
                    decision: Decision { kind, reason, at_ms: at as u64 },
                })
            })
            .transpose()
        })
    }

    fn transcription(
        &self,
        election: &str,
        precinct: &str,
    ) -> Result<Option<Transcription>, StorageError> {
        self.read(|c| load_transcription(c, election, precinct))
    }

    fn transcription_statuses(
        &self,
        election: &str,
        precincts: &[String],
    ) -> Result<HashMap<String, TranscriptionStatus>, StorageError> {
        let mut out = HashMap::new();
        self.read(|c| {
            // At most 500 per statement, well below SQLite's parameter limit.
            for chunk in precincts.chunks(500) {
                let sql = format!(
                    "SELECT precinct, status FROM transcriptions
                     WHERE election = ? AND precinct IN ({})",
                    vec!["?"; chunk.len()].join(", ")
                );
                let mut stmt = c.prepare_cached(&sql)?;
                let params = std::iter::once(election).chain(chunk.iter().map(String::as_str));
                let rows = stmt.query_map(params_from_iter(params), |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?;
                for row in rows {
                    let (precinct, status) = row?;
                    let status = TranscriptionStatus::parse(&status)
                        .ok_or_else(|| corrupt(format!("status {status}")))?;
                    out.insert(precinct, status);
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    fn entries(&self, election: &str, precinct: &str) -> Result<Vec<Entry>, StorageError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT e.id, e.user_id, u.display_name, e.values_json, e.reason, e.resolution,
                    e.at_ms
                 FROM entries e JOIN users u ON u.id = e.user_id
                 WHERE e.election = ?1 AND e.precinct = ?2 ORDER BY e.id",
            )?;
            let rows = stmt.query_map([election, precinct], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, bool>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })?;
            rows.map(|row| {
                let (id, user_id, user_name, values, reason, resolution, at) = row?;
                Ok(Entry {
                    id,
                    user_id,
                    user_name,
                    values: values_from_json(&values)?,
                    reason,
                    resolution,
                    at_ms: at as u64,
                })
            })
            .collect()
        })
    }

    fn append_entry(
        &self,
        election: &str,
        precinct: &str,
        expected_entries: usize,
        entry: &NewEntry,
        state: &Transcription,
        audit: &NewAudit,
    ) -> Result<(), StorageError> {
        let mut conn = lock(&self.writer)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let count: i64 = tx.query_row(
            "SELECT count(*) FROM entries WHERE election = ?1 AND precinct = ?2",
            [election, precinct],
            |r| r.get(0),
        )?;
        if count as usize != expected_entries {
            return Err(StorageError::Conflict(format!(
                "precinct {precinct} has {count} entries, not {expected_entries}"
            )));
        }
        tx.execute(
            "INSERT INTO entries (election, precinct, user_id, values_json, reason, resolution,
                at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                election,
                precinct,
                entry.user_id,
                to_json(&entry.values)?,
                entry.reason,
                entry.resolution,
                ms(entry.at_ms)
            ],
        )?;
        tx.execute(
            "INSERT INTO transcriptions (election, precinct, status, values_json, verified_at_ms,
                inconsistency_note) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (election, precinct) DO UPDATE SET status = excluded.status,
                values_json = excluded.values_json, verified_at_ms = excluded.verified_at_ms,
                inconsistency_note = excluded.inconsistency_note",
            params![
                election,
                precinct,
                state.status.as_str(),
                to_json(&state.values)?,
                state.verified_at_ms.map(ms),
                state.inconsistency_note
            ],
        )?;
        insert_audit(&tx, audit)?;
        // The queue's views by transcription state change with entries.
        bump_generation(&tx)?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use hattama_core::election::{Names, Precinct, ProtocolTemplate};
    use hattama_core::evidence::{DeviceKey, EvidenceKind, MediaType, Page, PhotoInfo};

    use super::*;
    use crate::storage::Storage;

    /// Stores a capture row the way ingest would (the manifest unsigned: the index never
    /// checks signatures).
    fn store_capture(s: &SqliteStorage, seq: u64) -> Sha256Hash {
        let m = Manifest {
            captured_at_ms: 1000,
            device_key: DeviceKey([1; 32]),
            election: "e".into(),
            kind: EvidenceKind::Posted,
            location: None,
            note: None,
            page: Page { count: 1, number: 1 },
            photo: PhotoInfo {
                bytes: 1,
                height: 1,
                media_type: MediaType::Jpeg,
                orientation: 1,
                sha256: Sha256Hash::of(&seq.to_be_bytes()),
                width: 1,
            },
            precinct: "p1".into(),
            prev: Sha256Hash::ZERO,
            seq,
            transcription: None,
            utc_offset_min: 0,
            v: 1,
        };
        let manifest = serde_json::to_vec(&m).unwrap();
        let id = Sha256Hash::of(&manifest);
        let conn = lock(&s.writer).unwrap();
        conn.execute(
            "INSERT OR IGNORE INTO devices (id, key, election, enrolled_at_ms) VALUES ('d', x'01', 'e', 1)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO captures (id, device_id, seq, election, precinct, manifest, signature,
                photo_sha256, photo_bytes, media_type, received_at_ms, receipt)
             VALUES (?1, 'd', ?2, 'e', 'p1', ?3, x'00', ?4, 1, 'image/jpeg', ?2, x'00')",
            params![id.to_hex(), seq as i64, manifest, m.photo.sha256.to_hex()],
        )
        .unwrap();
        id
    }

    #[test]
    fn queue_counts_follow_changes_made_by_another_process() {
        let dir = tempfile::tempdir().unwrap();
        let names = || Names { kk: "x".into(), ru: "x".into(), en: "x".into() };
        let election = Election {
            id: "e".into(),
            names: names(),
            count_time_ms: None,
            utc_offset_min: None,
            high_risk: false,
            photos_after_receipt: None,
            precincts: vec![Precinct {
                id: "p1".into(),
                number: 1,
                region: "r".into(),
                district: "d".into(),
                address: "a".into(),
            }],
            protocol: ProtocolTemplate { lines: Vec::new(), relations: Vec::new() },
        };
        let server = SqliteStorage::open(dir.path(), false).unwrap();
        server.import_election(&election, 1).unwrap();
        // Another process (an admin command, the demo's seeding) with its own storage object.
        let other = SqliteStorage::open(dir.path(), false).unwrap();
        let user = other.create_user(
            &NewUser {
                username: "u".into(),
                display_name: "U".into(),
                role: Role::Coordinator,
                regions: Vec::new(),
            },
            "x",
            1,
            &crate::review::user_created(1),
        );
        let user = user.unwrap();
        let first = store_capture(&other, 1);
        let new = QueueFilter {
            election: "e".into(),
            state: Some(ReviewState::New),
            ..QueueFilter::default()
        };
        server.refresh_index().unwrap();
        assert_eq!(server.queue(&new, 0, 50).unwrap().total, 1);
        // The other process indexes a new capture …
        store_capture(&other, 2);
        other.refresh_index().unwrap();
        assert_eq!(server.queue(&new, 0, 50).unwrap().total, 2, "not the cached 1");
        // … and decides on the first.
        let decision = Decision { kind: DecisionKind::Accepted, reason: None, at_ms: 2 };
        other.record_decision(&first, user.id, &decision, &NewAudit::default(), Some(0)).unwrap();
        // A decision on a stale page (it saw no decision) is refused.
        assert!(matches!(
            server.record_decision(&first, user.id, &decision, &NewAudit::default(), Some(0)),
            Err(StorageError::Conflict(_))
        ));
        let page = server.queue(&new, 0, 50).unwrap();
        assert_eq!((page.total, page.items.len()), (1, 1), "the cached count is not reused");
        let all = QueueFilter { election: "e".into(), ..QueueFilter::default() };
        assert_eq!(server.queue(&all, 0, 50).unwrap().total, 2);
        // The append-only tables refuse changes.
        let conn = lock(&server.writer).unwrap();
        assert!(conn.execute("UPDATE decisions SET kind = 'rejected'", []).is_err());
        assert!(conn.execute("DELETE FROM audit", []).is_err());
    }

    #[test]
    fn filter_sql_binds_every_value() {
        let f = QueueFilter {
            election: "e".into(),
            region: Some("r".into()),
            district: None,
            precinct: Some("12".into()),
            state: Some(ReviewState::New),
            flag: Some(Flag::TimeFar),
            scope: Some(vec!["a".into(), "b".into()]),
            view: Some(QueueView::NeedsEntry(3)),
        };
        let (sql, params) = filter_sql(&f);
        assert_eq!(sql.matches('?').count(), params.len());
    }
}
