//! The PostgreSQL backend: the storage of a server of several identical instances on one
//! database. Every instance holds a small pool of connections (`r2d2` over the
//! synchronous `postgres` client: the storage traits are blocking and called from blocking
//! threads); all state lives in the database, so a change made through one instance is what
//! the others read next.
//!
//! What keeps instances from stepping on each other lives in PostgreSQL too:
//! - writes that read before they write (a name taken, the next batch or version number) take
//!   one transaction-scoped advisory lock ([`WRITER_LOCK`]), as SQLite's `BEGIN IMMEDIATE`
//!   serializes them;
//! - a capture's commit numbers it from the `log_head` row, taken `FOR UPDATE` until the commit,
//!   so log positions are given, and become visible, in commit order without a gap;
//! - one instance integrates the log at a time: the holder of the log lease (a session-level
//!   advisory lock, keyed by the schema, on a connection of its own, released by PostgreSQL when
//!   that connection closes, so another instance takes over when the holder dies; `lease.rs`);
//!   the others follow the published checkpoint (`crate::log`);
//! - a checkpoint is appended only by a compare-and-swap of `log_published` from the size its
//!   writer read to the new size (and `checkpoints` has one row per size), so two writers can
//!   never publish two checkpoints for one size, even two that both believe they hold the lease.
//!
//! Photos are objects when the server gives the backend its object store
//! ([`PgStorage::with_photos`], as `Application::build` does): `photos/<sha256>`, content
//! addressed, written durably before the capture's transaction commits (so a receipt is only
//! for a photo that is stored; a photo whose commit then fails is an unreferenced object,
//! harmless, and the same bytes if the upload comes again). Without it (admin commands, which
//! never store photos), and for photos stored as rows by earlier versions, photos are rows of
//! `photos`. The bytes of unfinished uploads are rows (`upload_chunks`), so any instance
//! continues an upload begun on another.
//!
//! The schema is a list of versioned SQL files (`migrations/NNNN_*.sql`), applied in order,
//! each in its own transaction together with its row in `schema_version`, under an advisory
//! lock so that instances starting together migrate once.

use std::str::FromStr;
use std::time::Duration;

use std::collections::HashMap;

use postgres::error::SqlState;
use postgres::{NoTls, Statement};

use super::StorageError;

mod console;
mod gallery;
mod lease;
mod review;
mod storage;

/// The migrations, in order: version `i + 1` is `MIGRATIONS[i]`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_schema.sql"),
    include_str!("migrations/0002_device_refusals.sql"),
    include_str!("migrations/0003_embedded_migration.sql"),
];

/// The schema version this server writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The advisory lock (a 64-bit key of this application's choosing) held by migrations.
const MIGRATION_LOCK: i64 = 0x4861_7474_616d_6101;
/// The advisory lock that serializes writes which read before they write.
const WRITER_LOCK: i64 = 0x4861_7474_616d_6102;

/// A pooled connection.
pub(in crate::storage) type Conn = r2d2::PooledConnection<Manager>;

/// A connection of the pool, with the statements prepared on it so far
/// ([`PgConnection::prepared`]). It is a `postgres::Client` for everything else.
pub(in crate::storage) struct PgConnection {
    client: postgres::Client,
    statements: HashMap<&'static str, Statement>,
}

impl std::ops::Deref for PgConnection {
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        &self.client
    }
}

impl std::ops::DerefMut for PgConnection {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        &mut self.client
    }
}

impl PgConnection {
    /// `sql` prepared on this connection, the first time it is asked for: the statements of
    /// every capture (admission, quotas, receipts, the commit) are then parsed once per
    /// connection, not at every use, and skip a round trip (`perf` showed PostgreSQL spending
    /// most of its time per capture parsing and planning them).
    pub(in crate::storage) fn prepared(
        &mut self,
        sql: &'static str,
    ) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }
}

/// Makes the pool's connections ([`PgConnection`]s) and checks them: a connection is tried
/// with an empty query before use, and one that PostgreSQL closed is let go.
pub(in crate::storage) struct Manager {
    config: postgres::Config,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConnection;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConnection, postgres::Error> {
        Ok(PgConnection { client: self.config.connect(NoTls)?, statements: HashMap::new() })
    }

    fn is_valid(&self, conn: &mut PgConnection) -> Result<(), postgres::Error> {
        conn.client.simple_query("").map(drop)
    }

    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        conn.client.is_closed()
    }
}

/// PostgreSQL storage (see the module docs).
pub struct PgStorage {
    pool: r2d2::Pool<Manager>,
    review_cache: review::ReviewCache,
    /// Where new photos are stored (`photos/<sha256>`); `None`: as rows.
    photos: Option<std::sync::Arc<dyn crate::objects::ObjectBackend>>,
    /// How to connect: the log lease holds a connection of its own, outside the pool.
    config: postgres::Config,
    /// Captures waiting for their group commit (`PgStorage::commit_round`).
    commits: super::group_commit::GroupCommit<
        crate::storage::NewCapture,
        Result<crate::storage::Committed, crate::storage::CommitRefusal>,
    >,
}

/// PostgreSQL's errors, named by what the caller can do about them: a serialization failure,
/// a deadlock, a lock not available, a database shutting down or out of connections, or a
/// connection lost may answer later; a unique key taken conflicts with the stored state;
/// anything else is the backend's failure.
impl From<postgres::Error> for StorageError {
    fn from(e: postgres::Error) -> Self {
        if e.is_closed() {
            return StorageError::Unavailable(format!("database connection lost: {e}"));
        }
        let Some(code) = e.code() else { return StorageError::backend(e) };
        let retry = [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::CONNECTION_FAILURE,
            SqlState::CONNECTION_EXCEPTION,
            SqlState::QUERY_CANCELED,
        ];
        if retry.contains(code) {
            StorageError::Unavailable(e.to_string())
        } else if *code == SqlState::UNIQUE_VIOLATION {
            StorageError::Conflict(e.to_string())
        } else {
            StorageError::backend(e)
        }
    }
}

/// No connection could be had from the pool in time: the database is out of reach or busy.
impl From<r2d2::Error> for StorageError {
    fn from(e: r2d2::Error) -> Self {
        StorageError::Unavailable(format!("no database connection: {e}"))
    }
}

fn corrupt(what: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(what.to_string())
}

/// A count or time read from the database (never negative when written by this server).
fn u(v: i64) -> u64 {
    v.max(0) as u64
}

/// A count or time to write (every one this server writes fits in 63 bits).
fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl PgStorage {
    /// Connects to the database at `url` (a `postgres://` URL or `key=value` pairs, as libpq
    /// reads them) with at most `pool_size` connections, and brings its schema up to date.
    pub fn open(url: &str, pool_size: u32) -> Result<Self, StorageError> {
        let config = postgres::Config::from_str(url).map_err(|e| {
            StorageError::backend(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the database URL does not parse: {e}"),
            ))
        })?;
        Self::open_config(config, pool_size)
    }

    /// [`PgStorage::open`] with a parsed configuration (the tests set a schema of their own
    /// through its `options`).
    pub fn open_config(config: postgres::Config, pool_size: u32) -> Result<Self, StorageError> {
        let manager = Manager { config: config.clone() };
        let pool = r2d2::Pool::builder()
            .max_size(pool_size.max(1))
            .connection_timeout(Duration::from_secs(30))
            // A connection the database closed (a restart, a failover) is found before use.
            .test_on_check_out(true)
            .build(manager)?;
        let storage = Self {
            pool,
            review_cache: review::ReviewCache::default(),
            photos: None,
            config,
            commits: Default::default(),
        };
        storage.migrate()?;
        Ok(storage)
    }

    /// Stores new photos as objects of `objects` (`photos/<sha256>`) rather than as rows; photos
    /// already stored as rows are still read from them.
    pub fn with_photos(
        mut self,
        objects: std::sync::Arc<dyn crate::objects::ObjectBackend>,
    ) -> Self {
        self.photos = Some(objects);
        self
    }

    pub(in crate::storage) fn conn(&self) -> Result<Conn, StorageError> {
        Ok(self.pool.get()?)
    }

    /// Applies the migrations this database has not had, each in its own transaction with its
    /// row in `schema_version`; refuses a database of a newer schema.
    fn migrate(&self) -> Result<(), StorageError> {
        let mut conn = self.conn()?;
        loop {
            let mut tx = conn.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_version (
                    version INTEGER PRIMARY KEY,
                    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                )",
            )?;
            let found: i32 =
                tx.query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])?.get(0);
            let found = found.max(0) as u32;
            if found > SCHEMA_VERSION {
                return Err(StorageError::TooNew { found, supported: SCHEMA_VERSION });
            }
            if found == SCHEMA_VERSION {
                tx.commit()?;
                return Ok(());
            }
            tx.batch_execute(MIGRATIONS[found as usize])?;
            tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&(found as i32 + 1)])?;
            tx.commit()?;
            tracing::info!(version = found + 1, "database schema upgraded");
        }
    }

    /// Runs `f` on a pooled connection, outside a transaction (each statement on its own).
    fn read<T>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut conn = self.conn()?;
        f(&mut conn)
    }

    /// [`PgStorage::read`] of the statements every capture runs: `sql` prepared on the
    /// connection once ([`PgConnection::prepared`]), then `f` runs it.
    fn read_prepared<T>(
        &self,
        sql: &'static str,
        f: impl FnOnce(&mut postgres::Client, &Statement) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut conn = self.conn()?;
        let statement = conn.prepared(sql)?;
        f(&mut conn, &statement)
    }

    /// Runs `f` in one transaction, committed if it returns `Ok`. With `serialized`, the
    /// transaction first takes [`WRITER_LOCK`], so that writes which read before they write
    /// see each other's results, whichever instance makes them.
    fn write<T>(
        &self,
        serialized: bool,
        f: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        self.write_prepared(serialized, [], |tx, []| f(tx))
    }

    /// [`PgStorage::write`] with the statements `sql` prepared on the connection once
    /// ([`PgConnection::prepared`]) and handed to `f` in order.
    fn write_prepared<T, const N: usize>(
        &self,
        serialized: bool,
        sql: [&'static str; N],
        f: impl FnOnce(&mut postgres::Transaction<'_>, [Statement; N]) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut conn = self.conn()?;
        let mut statements = Vec::with_capacity(N);
        for sql in sql {
            statements.push(conn.prepared(sql)?);
        }
        let statements: [Statement; N] = statements
            .try_into()
            .map_err(|_| corrupt("a statement went missing while being prepared"))?;
        let mut tx = conn.transaction()?;
        if serialized {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITER_LOCK])?;
        }
        let value = f(&mut tx, statements)?;
        tx.commit()?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests;
