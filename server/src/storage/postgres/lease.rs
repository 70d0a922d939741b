//! The log lease on PostgreSQL ([`LogLease`]): a session-level advisory lock taken with
//! `pg_try_advisory_lock` on a connection of its own, outside the pool, and held as long as that
//! connection lives. Advisory locks belong to the database, not to a schema: the lock's key is
//! derived from the schema the storage works in ([`LEASE_KEY`]), so that logs kept in two
//! schemas of one database (two elections, or tests side by side) each have their integrator. When the holder dies (a SIGKILL, a crash, a
//! machine gone), the kernel or TCP keepalives close its connection, PostgreSQL ends the session
//! and releases the lock, and another instance takes it at its next try.

use std::time::Duration;

use postgres::NoTls;

use crate::storage::{LogLease, StorageError};

/// The lock's 64-bit key: the first 64 bits of the MD5 of the current schema's name and a
/// constant, as a `bigint`.
const LEASE_KEY: &str = concat!(
    "('x' || substr(md5(coalesce(current_schema(), '') || ':hattama log lease'), 1, 16))",
    "::bit(64)::bigint"
);

/// How long a lost peer may stay silent before the connection is called dead, at both ends
/// (keepalive idle time, then a few probes a second or two apart).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);

/// A claim on the log lease (see the module docs).
pub(super) struct PgLease {
    config: postgres::Config,
    /// The lease's own connection, once made; dropped (closed) when it fails.
    client: Option<postgres::Client>,
    /// Whether this connection holds the lock.
    held: bool,
}

impl PgLease {
    pub(super) fn new(mut config: postgres::Config) -> Self {
        config
            .connect_timeout(Duration::from_secs(5))
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3);
        Self { config, client: None, held: false }
    }

    fn try_hold(&mut self) -> Result<bool, StorageError> {
        let client = match &mut self.client {
            Some(client) => client,
            None => {
                let mut client = self.config.connect(NoTls)?;
                // The server's end notices a silent client as soon as this end notices it.
                client.batch_execute(
                    "SET application_name = 'hattama log lease';
                     SET tcp_keepalives_idle = 5;
                     SET tcp_keepalives_interval = 2;
                     SET tcp_keepalives_count = 3",
                )?;
                self.client.insert(client)
            }
        };
        if self.held {
            // Still held while the session lives: a round trip proves it does.
            client.simple_query("SELECT 1")?;
            return Ok(true);
        }
        // Taken once only: the lock counts how often one session takes it.
        let taken: bool =
            client.query_one(&format!("SELECT pg_try_advisory_lock({LEASE_KEY})"), &[])?.get(0);
        self.held = taken;
        Ok(taken)
    }
}

impl LogLease for PgLease {
    fn hold(&mut self) -> Result<bool, StorageError> {
        let held = self.try_hold();
        if held.is_err() {
            // The session may be gone, and the lock with it: start again on a new connection.
            self.client = None;
            self.held = false;
        }
        held
    }

    fn shared(&self) -> bool {
        true
    }
}
