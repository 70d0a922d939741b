//! SQL of the console's storage ([`crate::storage::ConsoleStorage`]).

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::review::insert_audit;
use super::{SqliteStorage, load_device, lock, ms, new_code};
use crate::storage::console::{
    BatchAudit, ConsoleStorage, DeviceSummary, InviteRecord, NewInvites, PrecinctTally,
};
use crate::storage::review::NewAudit;
use crate::storage::{Storage, StorageError};

/// Invites in numbered batches, and cancelled invites (a migration of `MIGRATIONS`).
pub(super) const MIGRATION: &str = "
ALTER TABLE invites ADD COLUMN batch INTEGER;
ALTER TABLE invites ADD COLUMN cancelled_at_ms INTEGER;
CREATE INDEX invites_by_batch ON invites (batch);
";

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

    fn precinct_tallies(
        &self,
        election: &str,
    ) -> Result<BTreeMap<String, PrecinctTally>, StorageError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT precinct, count(*), sum(state = 'accepted'), sum(state = 'new')
                 FROM review_index WHERE election = ?1 GROUP BY precinct",
            )?;
            let rows = stmt.query_map([election], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    PrecinctTally {
                        captures: r.get::<_, i64>(1)?.max(0) as u64,
                        accepted: r.get::<_, i64>(2)?.max(0) as u64,
                        new: r.get::<_, i64>(3)?.max(0) as u64,
                    },
                ))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
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
            let mut stats = c.prepare_cached(
                "SELECT max(received_at_ms), count(*), coalesce(max(seq), 0), count(DISTINCT seq)
                 FROM captures WHERE device_id = ?1",
            )?;
            let mut states = c.prepare_cached(
                "SELECT state, count(*), sum(flags & 1 != 0) FROM review_index
                 WHERE device_id = ?1 GROUP BY state",
            )?;
            let mut out = Vec::with_capacity(keys.len());
            for k in &keys {
                let device = load_device(c, k)?
                    .ok_or_else(|| StorageError::Corrupt("device vanished".into()))?;
                let (last, count, max_seq, distinct): (Option<i64>, i64, i64, i64) = stats
                    .query_row([&device.id], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })?;
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
                out.push(DeviceSummary {
                    device,
                    last_sync_ms: opt_ms(last),
                    captures: count.max(0) as u64,
                    states: by_state,
                    missing_seqs: (max_seq - distinct).max(0) as u64,
                    chain_gaps,
                });
            }
            Ok(out)
        })
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
