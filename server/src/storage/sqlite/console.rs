//! SQL of the console's storage ([`crate::storage::ConsoleStorage`]).

use std::collections::BTreeMap;

use hattama_core::election::Election;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::gallery::import_official_in;
use super::review::insert_audit;
use super::{SqliteStorage, import_election_in, load_device, lock, ms, new_code};
use crate::official::Figures;
use crate::storage::console::{
    AcceptedStation, BatchAudit, ConsoleStorage, DeviceSummary, InviteRecord, MissingStation,
    NewInvites, RefusalRecord, RegionTally,
};
use crate::storage::review::NewAudit;
use crate::storage::{Storage, StorageError};

/// Invites in numbered batches, and cancelled invites (a migration of `MIGRATIONS`).
pub(super) const MIGRATION: &str = "
ALTER TABLE invites ADD COLUMN batch INTEGER;
ALTER TABLE invites ADD COLUMN cancelled_at_ms INTEGER;
CREATE INDEX invites_by_batch ON invites (batch);
";

/// Refused upload requests per enrolled device and error code: a count and the first and
/// latest time, one row per pair however many refusals (a migration of `MIGRATIONS`).
pub(super) const REFUSALS_MIGRATION: &str = "
CREATE TABLE device_refusals (
    device_id TEXT NOT NULL REFERENCES devices (id),
    code TEXT NOT NULL,
    count INTEGER NOT NULL CHECK (count >= 1),
    first_at_ms INTEGER NOT NULL,
    last_at_ms INTEGER NOT NULL,
    PRIMARY KEY (device_id, code)
) STRICT, WITHOUT ROWID;
";

/// The summary of the device of `key`, read with the statements of [`summary_statements`].
fn summary(
    c: &Connection,
    key: &[u8],
    stats: &mut rusqlite::CachedStatement<'_>,
    states: &mut rusqlite::CachedStatement<'_>,
    refusals: &mut rusqlite::CachedStatement<'_>,
) -> Result<DeviceSummary, StorageError> {
    let device =
        load_device(c, key)?.ok_or_else(|| StorageError::Corrupt("device vanished".into()))?;
    let (last, count, max_seq, distinct): (Option<i64>, i64, i64, i64) =
        stats.query_row([&device.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    let mut by_state = BTreeMap::new();
    let mut chain_gaps = 0;
    let rows = states.query_map([&device.id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    })?;
    for row in rows {
        let (state, n, gaps) = row?;
        by_state.insert(state, n.max(0) as u64);
        chain_gaps += gaps.max(0) as u64;
    }
    let refused: i64 = refusals.query_row([&device.id], |r| r.get(0))?;
    Ok(DeviceSummary {
        device,
        last_sync_ms: opt_ms(last),
        captures: count.max(0) as u64,
        states: by_state,
        missing_seqs: (max_seq - distinct).max(0) as u64,
        chain_gaps,
        refusals: refused.max(0) as u64,
    })
}

/// The statements [`summary`] reads a device's activity with.
fn summary_statements(c: &Connection) -> Result<[rusqlite::CachedStatement<'_>; 3], StorageError> {
    Ok([
        c.prepare_cached(
            "SELECT max(received_at_ms), count(*), coalesce(max(seq), 0), count(DISTINCT seq)
             FROM captures WHERE device_id = ?1",
        )?,
        c.prepare_cached(
            "SELECT state, count(*), sum(flags & 1 != 0) FROM review_index
             WHERE device_id = ?1 GROUP BY state",
        )?,
        c.prepare_cached(
            "SELECT coalesce(sum(count), 0) FROM device_refusals WHERE device_id = ?1",
        )?,
    ])
}

fn opt_ms(v: Option<i64>) -> Option<u64> {
    v.map(|v| v.max(0) as u64)
}

impl ConsoleStorage for SqliteStorage {
    fn create_invite_batch(
        &self,
        election: &str,
        groups: &[Vec<String>],
        per_group: usize,
        now_ms: u64,
        audit: Option<BatchAudit<'_>>,
    ) -> Result<(u64, NewInvites), StorageError> {
        let e = self
            .election(election)?
            .ok_or_else(|| StorageError::NotFound(format!("election {election}")))?;
        for p in groups.iter().flatten() {
            if e.precinct(p).is_none() {
                return Err(StorageError::NotFound(format!("precinct {p} of {election}")));
            }
        }
        let mut conn = lock(&self.writer)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let batch: i64 =
            tx.query_row("SELECT coalesce(max(batch), 0) + 1 FROM invites", [], |r| r.get(0))?;
        let mut codes = Vec::with_capacity(groups.len() * per_group);
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO invites (code, election, precincts, created_at_ms, batch)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for group in groups {
                let list = serde_json::to_string(group)
                    .map_err(|e| StorageError::Corrupt(e.to_string()))?;
                for _ in 0..per_group {
                    let code = new_code();
                    insert.execute(params![code, election, list, ms(now_ms), batch])?;
                    codes.push((code, group.clone()));
                }
            }
        }
        if let Some(audit) = audit {
            insert_audit(&tx, &audit(batch.max(0) as u64, &codes))?;
        }
        tx.commit()?;
        Ok((batch.max(0) as u64, codes))
    }

    fn invites(&self, batch: Option<u64>) -> Result<Vec<InviteRecord>, StorageError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT i.code, i.election, i.precincts, i.batch, i.created_at_ms, i.used_by,
                        d.key, i.used_at_ms, i.cancelled_at_ms
                 FROM invites i LEFT JOIN devices d ON d.id = i.used_by
                 WHERE ?1 IS NULL OR i.batch = ?1
                 ORDER BY i.created_at_ms DESC, i.rowid",
            )?;
            let rows = stmt.query_map([batch.map(|b| b as i64)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<Vec<u8>>>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (code, election, precincts, batch, created, used_by, key, used_at, cancelled) =
                    row?;
                let precincts: Vec<String> = serde_json::from_str(&precincts)
                    .map_err(|e| StorageError::Corrupt(format!("invite precincts: {e}")))?;
                let fingerprint = key
                    .and_then(|k| <[u8; 32]>::try_from(k).ok())
                    .map(|k| hattama_core::evidence::DeviceKey(k).fingerprint());
                out.push(InviteRecord {
                    code,
                    election,
                    precincts,
                    batch: opt_ms(batch),
                    created_at_ms: created.max(0) as u64,
                    used_by,
                    used_by_fingerprint: fingerprint,
                    used_at_ms: opt_ms(used_at),
                    cancelled_at_ms: opt_ms(cancelled),
                });
            }
            Ok(out)
        })
    }

    fn cancel_invite(
        &self,
        code: &str,
        now_ms: u64,
        audit: &NewAudit,
    ) -> Result<bool, StorageError> {
        let mut conn = lock(&self.writer)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE invites SET cancelled_at_ms = ?2
             WHERE code = ?1 AND used_by IS NULL AND cancelled_at_ms IS NULL",
            params![code, ms(now_ms)],
        )?;
        if n == 1 {
            insert_audit(&tx, audit)?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    fn region_tallies(&self, election: &str) -> Result<Vec<RegionTally>, StorageError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT p.region, count(*), count(t.precinct), coalesce(sum(t.accepted), 0)
                 FROM precincts p
                 LEFT JOIN (SELECT precinct, max(state = 'accepted') AS accepted
                            FROM review_index WHERE election = ?1 GROUP BY precinct) t
                   ON t.precinct = p.id
                 WHERE p.election = ?1
                 GROUP BY p.region ORDER BY p.region",
            )?;
            let rows = stmt.query_map([election], |r| {
                Ok(RegionTally {
                    region: r.get(0)?,
                    precincts: r.get::<_, i64>(1)?.max(0) as u64,
                    photographed: r.get::<_, i64>(2)?.max(0) as u64,
                    accepted: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn stations_without_photo(
        &self,
        election: &str,
        per_region: u64,
    ) -> Result<Vec<MissingStation>, StorageError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT region, number, address FROM (
                    SELECT p.region, p.number, p.address, row_number() OVER
                        (PARTITION BY p.region ORDER BY p.number, p.id) AS n
                    FROM precincts p
                    WHERE p.election = ?1 AND NOT EXISTS
                        (SELECT 1 FROM review_index r WHERE r.election = ?1 AND r.precinct = p.id))
                 WHERE n <= ?2 ORDER BY region, n",
            )?;
            let rows = stmt.query_map(params![election, per_region as i64], |r| {
                Ok(MissingStation { region: r.get(0)?, number: r.get(1)?, address: r.get(2)? })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn accepted_stations(&self, election: &str) -> Result<Vec<AcceptedStation>, StorageError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT ri.region, min(d.at_ms) FROM review_index ri
                 JOIN decisions d ON d.capture_id = ri.capture_id AND d.kind = 'accepted'
                 WHERE ri.election = ?1 AND ri.state = 'accepted'
                 GROUP BY ri.precinct, ri.region",
            )?;
            let rows = stmt.query_map([election], |r| {
                Ok(AcceptedStation { region: r.get(0)?, at_ms: r.get::<_, i64>(1)?.max(0) as u64 })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn queue_depth(&self, election: &str) -> Result<u64, StorageError> {
        self.read(|c| {
            let n: i64 = c
                .prepare_cached(
                    "SELECT count(*) FROM review_index WHERE election = ?1 AND state = 'new'",
                )?
                .query_row([election], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
    }

    fn captures_per_hour(
        &self,
        election: &str,
        hours: u64,
    ) -> Result<Vec<(u64, u64)>, StorageError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT received_at_ms / 3600000 AS hour, count(*) FROM captures
                 WHERE election = ?1 GROUP BY hour ORDER BY hour DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![election, hours as i64], |r| {
                Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get::<_, i64>(1)?.max(0) as u64))
            })?;
            let mut out = rows.collect::<Result<Vec<_>, _>>()?;
            out.reverse();
            Ok(out)
        })
    }

    fn device_summaries(&self) -> Result<Vec<DeviceSummary>, StorageError> {
        self.read(|c| {
            let keys: Vec<Vec<u8>> = c
                .prepare_cached("SELECT key FROM devices ORDER BY enrolled_at_ms, id")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let [mut stats, mut states, mut refusals] = summary_statements(c)?;
            keys.iter().map(|k| summary(c, k, &mut stats, &mut states, &mut refusals)).collect()
        })
    }

    fn device_summary(&self, id: &str) -> Result<Option<DeviceSummary>, StorageError> {
        self.read(|c| {
            let key: Option<Vec<u8>> = c
                .prepare_cached("SELECT key FROM devices WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            let Some(key) = key else { return Ok(None) };
            let [mut stats, mut states, mut refusals] = summary_statements(c)?;
            summary(c, &key, &mut stats, &mut states, &mut refusals).map(Some)
        })
    }

    fn sequence_gaps(&self, id: &str, limit: u64) -> Result<Vec<(u64, u64)>, StorageError> {
        self.read(|c| {
            // Each received sequence number after one more than 1 below it opens a gap
            // (sequence numbers start at 1).
            let mut stmt = c.prepare_cached(
                "SELECT prev + 1, seq - 1 FROM (
                    SELECT seq, coalesce(lag(seq) OVER (ORDER BY seq), 0) AS prev
                    FROM (SELECT DISTINCT seq FROM captures WHERE device_id = ?1))
                 WHERE seq > prev + 1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![id, limit as i64], |r| {
                Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get::<_, i64>(1)?.max(0) as u64))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn record_refusal(&self, device: &str, code: &str, at_ms: u64) -> Result<(), StorageError> {
        let conn = lock(&self.writer)?;
        conn.prepare_cached(
            "INSERT INTO device_refusals (device_id, code, count, first_at_ms, last_at_ms)
             SELECT ?1, ?2, 1, ?3, ?3 WHERE EXISTS (SELECT 1 FROM devices WHERE id = ?1)
             ON CONFLICT (device_id, code) DO UPDATE SET count = count + 1,
                last_at_ms = max(last_at_ms, excluded.last_at_ms)",
        )?
        .execute(params![device, code, ms(at_ms)])?;
        Ok(())
    }

    fn device_refusals(&self, id: &str) -> Result<Vec<RefusalRecord>, StorageError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT code, count, first_at_ms, last_at_ms FROM device_refusals
                 WHERE device_id = ?1 ORDER BY last_at_ms DESC, code",
            )?;
            let rows = stmt.query_map([id], |r| {
                Ok(RefusalRecord {
                    code: r.get(0)?,
                    count: r.get::<_, i64>(1)?.max(0) as u64,
                    first_at_ms: r.get::<_, i64>(2)?.max(0) as u64,
                    last_at_ms: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn import_election_audited(
        &self,
        election: &Election,
        now_ms: u64,
        audit: &dyn Fn(bool) -> NewAudit,
    ) -> Result<bool, StorageError> {
        let mut conn = lock(&self.writer)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let new = import_election_in(&tx, election, now_ms)?;
        insert_audit(&tx, &audit(new))?;
        tx.commit()?;
        Ok(new)
    }

    fn import_official_audited(
        &self,
        election: &str,
        figures: &Figures,
        source: (&str, &str),
        now_ms: u64,
        audit: &dyn Fn(Option<u64>) -> NewAudit,
    ) -> Result<Option<u64>, StorageError> {
        let mut conn = lock(&self.writer)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version = import_official_in(&tx, election, figures, source, now_ms)?;
        insert_audit(&tx, &audit(version))?;
        tx.commit()?;
        Ok(version)
    }

    fn revoke_device_audited(
        &self,
        id: &str,
        now_ms: u64,
        audit: &NewAudit,
    ) -> Result<bool, StorageError> {
        let mut conn = lock(&self.writer)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE devices SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
            params![id, ms(now_ms)],
        )?;
        if n == 1 {
            insert_audit(&tx, audit)?;
        }
        tx.commit()?;
        Ok(n == 1)
    }
}

/// Whether an invite code was cancelled (read inside the enrollment's transaction).
pub(super) fn cancelled(tx: &rusqlite::Connection, code: &str) -> Result<bool, StorageError> {
    Ok(tx
        .query_row("SELECT cancelled_at_ms FROM invites WHERE code = ?1", [code], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .optional()?
        .flatten()
        .is_some())
}
