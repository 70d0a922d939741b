//! [`ReviewStorage`] for [`PgStorage`]: accounts, sessions, the review index, decisions,
//! transcription entries and the audit trail. The rules of the flags are
//! [`crate::review::flags`]'s; this file only reads the rows they need and stores the answers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use hattama_core::election::Election;
use hattama_core::evidence::{Manifest, Sha256Hash};
use postgres::GenericClient;
use postgres::types::ToSql;

use super::{PgStorage, corrupt, i, u};
use crate::review::flags;
use crate::storage::StorageError;
use crate::storage::review::{
    AuditEvent, AuditFilter, Decision, DecisionKind, DecisionRecord, Entry, Flag, NewAudit,
    NewEntry, NewUser, QueueFilter, QueueItem, QueuePage, QueueView, ReviewState, ReviewStorage,
    Role, Session, Transcription, TranscriptionStatus, User,
};

/// What the queue pages read again and again, kept between requests (as in the SQLite
/// backend): the number of captures matching a filter, kept against the `review_generation`
/// row that every change of the review index bumps in its own transaction, whichever instance
/// makes it; an election's regions and districts, kept against its import time.
#[derive(Default)]
pub(super) struct ReviewCache {
    counts: Mutex<HashMap<String, (i64, u64)>>,
    regions: Mutex<HashMap<String, (i64, Regions)>>,
}

/// An election's regions, each with its districts.
type Regions = Vec<(String, Vec<String>)>;

/// Most filters whose counts are kept (then the cache starts over).
const COUNT_CACHE_ENTRIES: usize = 4096;

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

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>, StorageError> {
    m.lock().map_err(|_| corrupt("lock poisoned"))
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

fn kind(s: &str) -> Result<DecisionKind, StorageError> {
    DecisionKind::parse(s).ok_or_else(|| corrupt(format!("kind {s}")))
}

/// A user and their password hash from a row of [`USER_COLUMNS`].
fn user_of(r: &postgres::Row) -> Result<(User, String), StorageError> {
    let role: &str = r.get(3);
    let regions: &str = r.get(4);
    Ok((
        User {
            id: r.get(0),
            username: r.get(1),
            display_name: r.get(2),
            role: Role::parse(role).ok_or_else(|| corrupt(format!("role {role}")))?,
            regions: serde_json::from_str(regions).map_err(corrupt)?,
            disabled: r.get::<_, Option<i64>>(5).is_some(),
            created_at_ms: u(r.get(6)),
        },
        r.get(7),
    ))
}

fn user_named(c: &mut impl GenericClient, username: &str) -> Result<Option<User>, StorageError> {
    c.query_opt(&format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1"), &[&username])?
        .map(|r| Ok(user_of(&r)?.0))
        .transpose()
}

/// A queue item from a row of [`ITEM_COLUMNS`].
fn item_of(r: &postgres::Row) -> Result<QueueItem, StorageError> {
    let state: &str = r.get(16);
    Ok(QueueItem {
        capture: hash(r.get(0))?,
        election: r.get(1),
        precinct: r.get(2),
        number: u(r.get(3)) as u32,
        region: r.get(4),
        district: r.get(5),
        address: r.get(6),
        device_id: r.get(7),
        seq: u(r.get(8)),
        page: u(r.get(9)) as u32,
        pages: u(r.get(10)) as u32,
        kind: r.get(11),
        captured_at_ms: u(r.get(12)),
        received_at_ms: u(r.get(13)),
        photo_sha256: hash(r.get(14))?,
        flags: u(r.get(15)) as u32,
        state: ReviewState::parse(state).ok_or_else(|| corrupt(format!("state {state}")))?,
    })
}

/// Parameters of a statement built piece by piece: each pushed value answers its `$n`.
#[derive(Default)]
struct Params(Vec<Box<dyn ToSql + Sync + Send>>);

impl Params {
    fn push(&mut self, v: impl ToSql + Sync + Send + 'static) -> String {
        self.0.push(Box::new(v));
        format!("${}", self.0.len())
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)).collect()
    }
}

/// The WHERE clause of a queue filter, its parameters pushed to `p`.
fn filter_sql(f: &QueueFilter, p: &mut Params) -> String {
    let mut sql = format!("r.election = {}", p.push(f.election.clone()));
    if let Some(region) = &f.region {
        sql += &format!(" AND r.region = {}", p.push(region.clone()));
    }
    if let Some(district) = &f.district {
        sql += &format!(" AND r.district = {}", p.push(district.clone()));
    }
    if let Some(precinct) = &f.precinct {
        let number = precinct.parse::<i64>().unwrap_or(-1);
        sql += &format!(
            " AND (r.precinct = {} OR r.number = {})",
            p.push(precinct.clone()),
            p.push(number)
        );
    }
    if let Some(state) = f.state {
        sql += &format!(" AND r.state = {}", p.push(state.as_str().to_owned()));
    }
    if let Some(flag) = f.flag {
        sql += &format!(" AND (r.flags & {}) <> 0", p.push(i64::from(flag.bit())));
    }
    if let Some(scope) = &f.scope {
        sql += &format!(" AND r.region = ANY({})", p.push(scope.clone()));
    }
    let not_entered_by = |p: &mut Params, user: i64| {
        format!(
            "NOT EXISTS (SELECT 1 FROM entries e WHERE e.election = r.election
                AND e.precinct = r.precinct AND e.user_id = {})",
            p.push(user)
        )
    };
    match f.view {
        None => {}
        Some(QueueView::NeedsEntry(user)) => {
            sql += &format!(
                " AND r.state <> 'rejected' AND r.kind <> 'not-posted'
                    AND NOT EXISTS (SELECT 1 FROM transcriptions t
                    WHERE t.election = r.election AND t.precinct = r.precinct
                    AND t.status <> 'pending') AND {}",
                not_entered_by(p, user)
            );
        }
        Some(QueueView::Disputed(user)) => {
            sql += &format!(
                " AND EXISTS (SELECT 1 FROM transcriptions t WHERE t.election = r.election
                    AND t.precinct = r.precinct AND t.status = 'disputed') AND {}",
                not_entered_by(p, user)
            );
        }
        Some(QueueView::Inconsistent) => {
            sql += " AND EXISTS (SELECT 1 FROM entries e WHERE e.election = r.election
                AND e.precinct = r.precinct AND e.reason IS NOT NULL)";
        }
    }
    sql
}

/// Marks the review index changed (inside the changing transaction).
fn bump_generation(c: &mut impl GenericClient) -> Result<(), StorageError> {
    c.execute("UPDATE review_generation SET value = value + 1 WHERE id = 1", &[])?;
    Ok(())
}

pub(super) fn insert_audit(c: &mut impl GenericClient, e: &NewAudit) -> Result<(), StorageError> {
    c.execute(
        "INSERT INTO audit (at_ms, user_id, user_name, action, election, precinct, capture_id,
            before, after)
         VALUES ($1, $2, (SELECT display_name FROM users WHERE id = $2), $3, $4, $5, $6, $7, $8)",
        &[
            &i(e.at_ms),
            &e.user_id,
            &e.action,
            &e.election,
            &e.precinct,
            &e.capture,
            &e.before,
            &e.after,
        ],
    )?;
    Ok(())
}

/// Recomputes the chain flag of a device's captures (`flags::chain_breaks`).
fn flag_chain_gaps(c: &mut impl GenericClient, device: &str) -> Result<(), StorageError> {
    let rows: Vec<(String, i64, Vec<u8>)> = c
        .query(
            "SELECT r.capture_id, r.seq, c.manifest FROM review_index r
             JOIN captures c ON c.id = r.capture_id WHERE r.device_id = $1",
            &[&device],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let links: Vec<flags::Link<'_>> = rows
        .iter()
        .map(|(id, seq, manifest)| flags::Link {
            id,
            seq: u(*seq),
            // A stored manifest was verified on ingest; one that does not parse is a break too.
            prev: Manifest::from_canonical(manifest).ok().map(|m| m.prev.to_hex()),
        })
        .collect();
    let update = c.prepare(
        "UPDATE review_index SET flags = (flags & ~1::BIGINT) | $2 WHERE capture_id = $1",
    )?;
    for (link, broken) in links.iter().zip(flags::chain_breaks(&links)) {
        let flag = if broken { i64::from(Flag::ChainGap.bit()) } else { 0 };
        c.execute(&update, &[&link.id, &flag])?;
    }
    Ok(())
}

/// Recomputes the duplicate-photo flag of the captures of a photo (`flags::photo_elsewhere`).
fn flag_duplicate_photos(c: &mut impl GenericClient, photo: &str) -> Result<(), StorageError> {
    let rows: Vec<(String, String, String)> = c
        .query(
            "SELECT capture_id, election, precinct FROM review_index WHERE photo_sha256 = $1",
            &[&photo],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let places: Vec<(&str, &str)> = rows.iter().map(|(_, e, p)| (e.as_str(), p.as_str())).collect();
    let update = c.prepare(
        "UPDATE review_index SET flags = (flags & ~4::BIGINT) | $2 WHERE capture_id = $1",
    )?;
    for ((id, _, _), elsewhere) in rows.iter().zip(flags::photo_elsewhere(&places)) {
        let flag = if elsewhere { i64::from(Flag::DuplicatePhoto.bit()) } else { 0 };
        c.execute(&update, &[id, &flag])?;
    }
    Ok(())
}

/// Recomputes the devices-disagree flag of a precinct (`flags::devices_disagree`).
fn flag_disagreements(
    c: &mut impl GenericClient,
    election: &str,
    precinct: &str,
) -> Result<(), StorageError> {
    let mut newest: HashMap<String, BTreeMap<String, u64>> = HashMap::new();
    for row in c.query(
        "SELECT device_id, transcription FROM review_index
         WHERE election = $1 AND precinct = $2 AND transcription IS NOT NULL ORDER BY seq",
        &[&election, &precinct],
    )? {
        let json: &str = row.get(1);
        newest.insert(row.get(0), values_from_json(json)?);
    }
    let disagree = flags::devices_disagree(newest.values());
    let flag = if disagree { i64::from(Flag::DevicesDisagree.bit()) } else { 0 };
    c.execute(
        "UPDATE review_index SET flags = (flags & ~2::BIGINT) | $3
         WHERE election = $1 AND precinct = $2 AND transcription IS NOT NULL",
        &[&election, &precinct, &flag],
    )?;
    Ok(())
}

fn load_transcription(
    c: &mut impl GenericClient,
    election: &str,
    precinct: &str,
) -> Result<Option<Transcription>, StorageError> {
    c.query_opt(
        "SELECT status, values_json, verified_at_ms, inconsistency_note FROM transcriptions
         WHERE election = $1 AND precinct = $2",
        &[&election, &precinct],
    )?
    .map(|r| {
        let status: &str = r.get(0);
        Ok(Transcription {
            precinct: precinct.to_owned(),
            status: TranscriptionStatus::parse(status)
                .ok_or_else(|| corrupt(format!("status {status}")))?,
            values: values_from_json(r.get(1))?,
            verified_at_ms: r.get::<_, Option<i64>>(2).map(u),
            inconsistency_note: r.get(3),
        })
    })
    .transpose()
}

fn decision_of(kind_: &str, reason: Option<String>, at: i64) -> Result<Decision, StorageError> {
    Ok(Decision { kind: kind(kind_)?, reason, at_ms: u(at) })
}

impl ReviewStorage for PgStorage {
    fn capture_decisions(
        &self,
        election: &str,
    ) -> Result<HashMap<Sha256Hash, Decision>, StorageError> {
        let rows = self.read(|c| {
            Ok(c.query(
                "SELECT DISTINCT ON (d.capture_id) d.capture_id, d.kind, d.reason, d.at_ms
                 FROM decisions d JOIN captures c ON c.id = d.capture_id
                 WHERE c.election = $1 ORDER BY d.capture_id, d.id DESC",
                &[&election],
            )?)
        })?;
        rows.iter()
            .map(|r| Ok((hash(r.get(0))?, decision_of(r.get(1), r.get(2), r.get(3))?)))
            .collect()
    }

    fn transcriptions(&self, election: &str) -> Result<Vec<Transcription>, StorageError> {
        self.read(|c| {
            let precincts: Vec<String> = c
                .query(
                    "SELECT precinct FROM transcriptions WHERE election = $1 ORDER BY precinct",
                    &[&election],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut out = Vec::with_capacity(precincts.len());
            for p in &precincts {
                out.extend(load_transcription(c, election, p)?);
            }
            Ok(out)
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
        self.write(true, |tx| {
            if tx.query_opt("SELECT 1 FROM users WHERE username = $1", &[&user.username])?.is_some()
            {
                return Err(StorageError::Conflict(format!("user {} exists", user.username)));
            }
            let id: i64 = tx
                .query_one(
                    "INSERT INTO users (username, display_name, role, regions, password_hash,
                        created_at_ms) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    &[
                        &user.username,
                        &user.display_name,
                        &user.role.as_str(),
                        &regions,
                        &password_hash,
                        &i(now_ms),
                    ],
                )?
                .get(0);
            let created = User {
                id,
                username: user.username.clone(),
                display_name: user.display_name.clone(),
                role: user.role,
                regions: user.regions.clone(),
                disabled: false,
                created_at_ms: now_ms,
            };
            insert_audit(tx, &audit(&created))?;
            Ok(created)
        })
    }

    fn user_by_name(&self, username: &str) -> Result<Option<(User, String)>, StorageError> {
        self.read(|c| {
            c.query_opt(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1"),
                &[&username],
            )?
            .map(|r| user_of(&r))
            .transpose()
        })
    }

    fn users(&self) -> Result<Vec<User>, StorageError> {
        let rows = self.read(|c| {
            Ok(c.query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"), &[])?)
        })?;
        rows.iter().map(|r| Ok(user_of(r)?.0)).collect()
    }

    fn disable_user(
        &self,
        username: &str,
        now_ms: u64,
        audit: &dyn Fn(&User) -> NewAudit,
    ) -> Result<bool, StorageError> {
        self.write(true, |tx| {
            let Some(user) = user_named(tx, username)? else { return Ok(false) };
            tx.execute(
                "UPDATE users SET disabled_at_ms = coalesce(disabled_at_ms, $2) WHERE id = $1",
                &[&user.id, &i(now_ms)],
            )?;
            tx.execute("DELETE FROM sessions WHERE user_id = $1", &[&user.id])?;
            insert_audit(tx, &audit(&user))?;
            Ok(true)
        })
    }

    fn set_password(
        &self,
        username: &str,
        hash: &str,
        audit: &dyn Fn(&User) -> NewAudit,
    ) -> Result<bool, StorageError> {
        self.write(true, |tx| {
            let Some(user) = user_named(tx, username)? else { return Ok(false) };
            tx.execute(
                "UPDATE users SET password_hash = $2, disabled_at_ms = NULL WHERE id = $1",
                &[&user.id, &hash],
            )?;
            tx.execute("DELETE FROM sessions WHERE user_id = $1", &[&user.id])?;
            insert_audit(tx, &audit(&user))?;
            Ok(true)
        })
    }

    fn create_session(
        &self,
        token_sha256: &[u8; 32],
        user_id: i64,
        csrf: &str,
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<(), StorageError> {
        self.write(false, |tx| {
            // Expired sessions go when new ones come.
            tx.execute("DELETE FROM sessions WHERE expires_at_ms <= $1", &[&i(now_ms)])?;
            tx.execute(
                "INSERT INTO sessions (token_sha256, user_id, csrf, created_at_ms, expires_at_ms)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&token_sha256.as_slice(), &user_id, &csrf, &i(now_ms), &i(expires_at_ms)],
            )?;
            Ok(())
        })
    }

    fn session(
        &self,
        token_sha256: &[u8; 32],
        now_ms: u64,
    ) -> Result<Option<Session>, StorageError> {
        let row = self.read(|c| {
            Ok(c.query_opt(
                "SELECT u.id, u.username, u.display_name, u.role, u.regions,
                    u.disabled_at_ms, u.created_at_ms, u.password_hash,
                    s.csrf, s.expires_at_ms
                 FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.token_sha256 = $1 AND s.expires_at_ms > $2
                   AND u.disabled_at_ms IS NULL",
                &[&token_sha256.as_slice(), &i(now_ms)],
            )?)
        })?;
        row.map(|r| {
            Ok(Session { user: user_of(&r)?.0, csrf: r.get(8), expires_at_ms: u(r.get(9)) })
        })
        .transpose()
    }

    fn delete_session(&self, token_sha256: &[u8; 32]) -> Result<(), StorageError> {
        self.read(|c| {
            c.execute("DELETE FROM sessions WHERE token_sha256 = $1", &[&token_sha256.as_slice()])?;
            Ok(())
        })
    }

    fn append_audit(&self, event: &NewAudit) -> Result<(), StorageError> {
        self.read(|c| insert_audit(c, event))
    }

    fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StorageError> {
        let mut p = Params::default();
        let mut clauses = Vec::new();
        if let Some(capture) = &filter.capture {
            clauses.push(format!("capture_id = {}", p.push(capture.clone())));
        }
        if let Some((election, precinct)) = &filter.precinct {
            clauses.push(format!(
                "(election = {} AND precinct = {} AND capture_id IS NULL)",
                p.push(election.clone()),
                p.push(precinct.clone())
            ));
        }
        let mut sql = String::from(
            "SELECT id, at_ms, user_id, user_name, action, election, precinct, capture_id,
                before, after FROM audit",
        );
        if !clauses.is_empty() {
            sql += " WHERE ";
            sql += &clauses.join(" OR ");
        }
        if filter.limit > 0 {
            sql += &format!(" ORDER BY id DESC LIMIT {}", filter.limit);
        } else {
            sql += " ORDER BY id";
        }
        let rows = self.read(|c| Ok(c.query(&sql, &p.refs())?))?;
        Ok(rows
            .iter()
            .map(|r| AuditEvent {
                id: r.get(0),
                at_ms: u(r.get(1)),
                user_id: r.get(2),
                user_name: r.get(3),
                action: r.get(4),
                election: r.get(5),
                precinct: r.get(6),
                capture: r.get(7),
                before: r.get(8),
                after: r.get(9),
            })
            .collect())
    }

    fn refresh_index(&self) -> Result<(), StorageError> {
        let behind: bool = self.read(|c| {
            Ok(c.query_one(
                "SELECT EXISTS (SELECT 1 FROM captures WHERE log_index >
                    (SELECT coalesce(max(log_index), -1) FROM review_index))",
                &[],
            )?
            .get(0))
        })?;
        if !behind {
            return Ok(());
        }
        loop {
            let done = self.write(true, |tx| {
                let floor: i64 = tx
                    .query_one("SELECT coalesce(max(log_index), -1) FROM review_index", &[])?
                    .get(0);
                let rows = tx.query(
                    "SELECT c.log_index, c.id, c.device_id, c.seq, c.election, c.precinct,
                        c.manifest, c.photo_sha256, c.received_at_ms, coalesce(p.number, 0),
                        coalesce(p.region, ''), coalesce(p.district, '')
                     FROM captures c
                     LEFT JOIN precincts p ON p.election = c.election AND p.id = c.precinct
                     WHERE c.log_index > $1 ORDER BY c.log_index LIMIT $2",
                    &[&floor, &INDEX_BATCH],
                )?;
                if rows.is_empty() {
                    return Ok(true);
                }
                let mut count_times: HashMap<String, Option<u64>> = HashMap::new();
                let mut devices = BTreeSet::new();
                let mut photos = BTreeSet::new();
                let mut precincts = BTreeSet::new();
                let insert = tx.prepare(
                    "INSERT INTO review_index (capture_id, log_index, election, precinct, number,
                        region, district, device_id, seq, page, pages, kind, captured_at_ms,
                        received_at_ms, photo_sha256, transcription, flags)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                        $16, $17)",
                )?;
                for row in &rows {
                    let id: String = row.get(1);
                    let device: String = row.get(2);
                    let election: String = row.get(4);
                    let precinct: String = row.get(5);
                    let photo: String = row.get(7);
                    let manifest: Manifest = serde_json::from_slice(row.get::<_, &[u8]>(6))
                        .map_err(|e| corrupt(format!("manifest of {id}: {e}")))?;
                    if !count_times.contains_key(&election) {
                        let definition = tx.query_opt(
                            "SELECT definition FROM elections WHERE id = $1",
                            &[&election],
                        )?;
                        let count_time = match definition {
                            Some(d) => {
                                serde_json::from_slice::<Election>(d.get::<_, &[u8]>(0))
                                    .map_err(corrupt)?
                                    .count_time_ms
                            }
                            None => None,
                        };
                        count_times.insert(election.clone(), count_time);
                    }
                    let count_time = count_times.get(&election).copied().flatten();
                    let far = flags::time_far(manifest.captured_at_ms, count_time);
                    let transcription = manifest.transcription.as_ref().map(to_json).transpose()?;
                    tx.execute(
                        &insert,
                        &[
                            &id,
                            &row.get::<_, i64>(0),
                            &election,
                            &precinct,
                            &row.get::<_, i64>(9),
                            &row.get::<_, String>(10),
                            &row.get::<_, String>(11),
                            &device,
                            &row.get::<_, i64>(3),
                            &i64::from(manifest.page.number),
                            &i64::from(manifest.page.count),
                            &manifest.kind.as_str(),
                            &i(manifest.captured_at_ms),
                            &row.get::<_, i64>(8),
                            &photo,
                            &transcription,
                            &(if far { i64::from(Flag::TimeFar.bit()) } else { 0 }),
                        ],
                    )?;
                    if transcription.is_some() {
                        precincts.insert((election, precinct));
                    }
                    devices.insert(device);
                    photos.insert(photo);
                }
                for d in &devices {
                    flag_chain_gaps(tx, d)?;
                }
                for p in &photos {
                    flag_duplicate_photos(tx, p)?;
                }
                for (e, p) in &precincts {
                    flag_disagreements(tx, e, p)?;
                }
                bump_generation(tx)?;
                Ok(false)
            })?;
            if done {
                return Ok(());
            }
        }
    }

    fn queue(
        &self,
        filter: &QueueFilter,
        offset: u64,
        limit: u64,
    ) -> Result<QueuePage, StorageError> {
        let mut p = Params::default();
        let clause = filter_sql(filter, &mut p);
        let key = format!("{clause}{filter:?}");
        self.read(|c| {
            // The generation first: a change after this makes the entry stale, never wrongly
            // fresh.
            let generation: i64 =
                c.query_one("SELECT value FROM review_generation WHERE id = 1", &[])?.get(0);
            let cached = lock(&self.review_cache.counts)?
                .get(&key)
                .filter(|(g, _)| *g == generation)
                .map(|(_, n)| *n);
            let total = match cached {
                Some(n) => n,
                None => {
                    let n: i64 = c
                        .query_one(
                            &format!("SELECT count(*) FROM review_index r WHERE {clause}"),
                            &p.refs(),
                        )?
                        .get(0);
                    let mut counts = lock(&self.review_cache.counts)?;
                    if counts.len() >= COUNT_CACHE_ENTRIES {
                        counts.clear();
                    }
                    counts.insert(key.clone(), (generation, u(n)));
                    u(n)
                }
            };
            let limit = p.push(i(limit));
            let offset = p.push(i(offset));
            let rows = c.query(
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM
                        (SELECT r.capture_id AS id FROM review_index r WHERE {clause}
                         ORDER BY {QUEUE_ORDER} LIMIT {limit} OFFSET {offset}) page
                     JOIN review_index r ON r.capture_id = page.id
                     LEFT JOIN precincts p ON p.election = r.election AND p.id = r.precinct
                     ORDER BY {QUEUE_ORDER}"
                ),
                &p.refs(),
            )?;
            let items = rows.iter().map(item_of).collect::<Result<Vec<_>, _>>()?;
            Ok(QueuePage { items, total })
        })
    }

    fn queue_item(&self, capture: &Sha256Hash) -> Result<Option<QueueItem>, StorageError> {
        let row = self.read(|c| {
            Ok(c.query_opt(
                &format!("SELECT {ITEM_COLUMNS} FROM {ITEM_FROM} WHERE r.capture_id = $1"),
                &[&capture.to_hex()],
            )?)
        })?;
        row.map(|r| item_of(&r)).transpose()
    }

    fn queue_neighbours(
        &self,
        filter: &QueueFilter,
        item: &QueueItem,
    ) -> Result<(Option<Sha256Hash>, Option<Sha256Hash>), StorageError> {
        let desc = QUEUE_ORDER.replace(',', " DESC,") + " DESC";
        let find = |op: &str, order: &str| -> Result<Option<Sha256Hash>, StorageError> {
            let mut p = Params::default();
            let clause = filter_sql(filter, &mut p);
            let key = [
                p.push(item.region.clone()),
                p.push(item.district.clone()),
                p.push(i64::from(item.number)),
                p.push(item.precinct.clone()),
                p.push(i64::from(item.page)),
                p.push(i(item.received_at_ms)),
                p.push(item.capture.to_hex()),
            ]
            .join(", ");
            let sql = format!(
                "SELECT r.capture_id FROM review_index r WHERE {clause}
                 AND ({QUEUE_ORDER}) {op} ({key}) ORDER BY {order} LIMIT 1"
            );
            let row = self.read(|c| Ok(c.query_opt(&sql, &p.refs())?))?;
            row.map(|r| hash(r.get(0))).transpose()
        };
        Ok((find("<", &desc)?, find(">", QUEUE_ORDER)?))
    }

    fn precinct_items(
        &self,
        election: &str,
        precinct: &str,
    ) -> Result<Vec<QueueItem>, StorageError> {
        let rows = self.read(|c| {
            Ok(c.query(
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM {ITEM_FROM}
                     WHERE r.election = $1 AND r.precinct = $2 ORDER BY {QUEUE_ORDER}"
                ),
                &[&election, &precinct],
            )?)
        })?;
        rows.iter().map(item_of).collect()
    }

    fn regions(&self, election: &str) -> Result<Vec<(String, Vec<String>)>, StorageError> {
        self.read(|c| {
            let Some(imported) =
                c.query_opt("SELECT imported_at_ms FROM elections WHERE id = $1", &[&election])?
            else {
                return Ok(Vec::new());
            };
            let imported: i64 = imported.get(0);
            if let Some((at, regions)) = lock(&self.review_cache.regions)?.get(election)
                && *at == imported
            {
                return Ok(regions.clone());
            }
            let mut out: Vec<(String, Vec<String>)> = Vec::new();
            for row in c.query(
                "SELECT DISTINCT region, district FROM precincts WHERE election = $1
                 ORDER BY region, district",
                &[&election],
            )? {
                let (region, district): (String, String) = (row.get(0), row.get(1));
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
            Ok(c.query("SELECT id FROM elections ORDER BY id", &[])?
                .iter()
                .map(|r| r.get(0))
                .collect())
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
        self.write(true, |tx| {
            if let Some(seen) = seen {
                let newest: i64 = tx
                    .query_one(
                        "SELECT coalesce(max(id), 0) FROM decisions WHERE capture_id = $1",
                        &[&capture.to_hex()],
                    )?
                    .get(0);
                if newest != seen {
                    return Err(StorageError::Conflict(format!(
                        "capture {capture} has decision {newest}, not {seen}"
                    )));
                }
            }
            tx.execute(
                "INSERT INTO decisions (capture_id, user_id, kind, reason, at_ms)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &capture.to_hex(),
                    &user_id,
                    &decision.kind.as_str(),
                    &decision.reason,
                    &i(decision.at_ms),
                ],
            )?;
            tx.execute(
                "UPDATE review_index SET state = $2 WHERE capture_id = $1",
                &[&capture.to_hex(), &ReviewState::from(decision.kind).as_str()],
            )?;
            insert_audit(tx, audit)?;
            bump_generation(tx)?;
            Ok(())
        })
    }

    fn decision(&self, capture: &Sha256Hash) -> Result<Option<Decision>, StorageError> {
        let row = self.read(|c| {
            Ok(c.query_opt(
                "SELECT kind, reason, at_ms FROM decisions WHERE capture_id = $1
                 ORDER BY id DESC LIMIT 1",
                &[&capture.to_hex()],
            )?)
        })?;
        row.map(|r| decision_of(r.get(0), r.get(1), r.get(2))).transpose()
    }

    fn decision_record(
        &self,
        capture: &Sha256Hash,
    ) -> Result<Option<DecisionRecord>, StorageError> {
        let row = self.read(|c| {
            Ok(c.query_opt(
                "SELECT d.id, u.display_name, d.kind, d.reason, d.at_ms
                 FROM decisions d JOIN users u ON u.id = d.user_id
                 WHERE d.capture_id = $1 ORDER BY d.id DESC LIMIT 1",
                &[&capture.to_hex()],
            )?)
        })?;
        row.map(|r| {
            Ok(DecisionRecord {
                id: r.get(0),
                user_name: r.get(1),
                decision: decision_of(r.get(2), r.get(3), r.get(4))?,
            })
        })
        .transpose()
    }

    fn device_decisions(
        &self,
        device_id: &str,
        limit: usize,
    ) -> Result<Vec<(Sha256Hash, Decision)>, StorageError> {
        let rows = self.read(|c| {
            Ok(c.query(
                "SELECT c.id, d.kind, d.reason, d.at_ms FROM captures c
                 JOIN decisions d ON d.id =
                    (SELECT max(id) FROM decisions WHERE capture_id = c.id)
                 WHERE c.device_id = $1 ORDER BY c.seq LIMIT $2",
                &[&device_id, &(limit as i64)],
            )?)
        })?;
        rows.iter()
            .map(|r| Ok((hash(r.get(0))?, decision_of(r.get(1), r.get(2), r.get(3))?)))
            .collect()
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
        let rows = self.read(|c| {
            Ok(c.query(
                "SELECT precinct, status FROM transcriptions
                 WHERE election = $1 AND precinct = ANY($2)",
                &[&election, &precincts],
            )?)
        })?;
        rows.iter()
            .map(|r| {
                let status: &str = r.get(1);
                let status = TranscriptionStatus::parse(status)
                    .ok_or_else(|| corrupt(format!("status {status}")))?;
                Ok((r.get(0), status))
            })
            .collect()
    }

    fn entries(&self, election: &str, precinct: &str) -> Result<Vec<Entry>, StorageError> {
        let rows = self.read(|c| {
            Ok(c.query(
                "SELECT e.id, e.user_id, u.display_name, e.values_json, e.reason, e.resolution,
                    e.at_ms
                 FROM entries e JOIN users u ON u.id = e.user_id
                 WHERE e.election = $1 AND e.precinct = $2 ORDER BY e.id",
                &[&election, &precinct],
            )?)
        })?;
        rows.iter()
            .map(|r| {
                Ok(Entry {
                    id: r.get(0),
                    user_id: r.get(1),
                    user_name: r.get(2),
                    values: values_from_json(r.get(3))?,
                    reason: r.get(4),
                    resolution: r.get(5),
                    at_ms: u(r.get(6)),
                })
            })
            .collect()
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
        self.write(true, |tx| {
            let count: i64 = tx
                .query_one(
                    "SELECT count(*) FROM entries WHERE election = $1 AND precinct = $2",
                    &[&election, &precinct],
                )?
                .get(0);
            if count as usize != expected_entries {
                return Err(StorageError::Conflict(format!(
                    "precinct {precinct} has {count} entries, not {expected_entries}"
                )));
            }
            tx.execute(
                "INSERT INTO entries (election, precinct, user_id, values_json, reason,
                    resolution, at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &election,
                    &precinct,
                    &entry.user_id,
                    &to_json(&entry.values)?,
                    &entry.reason,
                    &entry.resolution,
                    &i(entry.at_ms),
                ],
            )?;
            tx.execute(
                "INSERT INTO transcriptions (election, precinct, status, values_json,
                    verified_at_ms, inconsistency_note) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (election, precinct) DO UPDATE SET status = excluded.status,
                    values_json = excluded.values_json, verified_at_ms = excluded.verified_at_ms,
                    inconsistency_note = excluded.inconsistency_note",
                &[
                    &election,
                    &precinct,
                    &state.status.as_str(),
                    &to_json(&state.values)?,
                    &state.verified_at_ms.map(i),
                    &state.inconsistency_note,
                ],
            )?;
            insert_audit(tx, audit)?;
            // The queue's views by transcription state change with entries.
            bump_generation(tx)?;
            Ok(())
        })
    }
}
