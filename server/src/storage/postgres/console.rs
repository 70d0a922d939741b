//! [`ConsoleStorage`] for [`PgStorage`]: invite batches, cancellations, the dashboard's tallies
//! and the devices' summaries.

use std::collections::BTreeMap;

use super::review::insert_audit;
use super::storage::{insert_invite_batch, load_device};
use super::{PgStorage, corrupt, i, u};
use crate::storage::StorageError;
use crate::storage::console::{
    BatchAudit, ConsoleStorage, DeviceSummary, InviteRecord, NewInvites, PrecinctTally,
};
use crate::storage::review::NewAudit;

impl ConsoleStorage for PgStorage {
    fn create_invite_batch(
        &self,
        election: &str,
        groups: &[Vec<String>],
        per_group: usize,
        now_ms: u64,
        audit: Option<BatchAudit<'_>>,
    ) -> Result<(u64, NewInvites), StorageError> {
        self.write(true, |tx| {
            let (batch, codes) = insert_invite_batch(tx, election, groups, per_group, now_ms)?;
            if let Some(audit) = audit {
                insert_audit(tx, &audit(batch, &codes))?;
            }
            Ok((batch, codes))
        })
    }

    fn invites(&self, batch: Option<u64>) -> Result<Vec<InviteRecord>, StorageError> {
        let rows = self.read(|c| {
            Ok(c.query(
                "SELECT i.code, i.election, i.precincts, i.batch, i.created_at_ms, i.used_by,
                    d.key, i.used_at_ms, i.cancelled_at_ms
                 FROM invites i LEFT JOIN devices d ON d.id = i.used_by
                 WHERE $1::BIGINT IS NULL OR i.batch = $1
                 ORDER BY i.created_at_ms DESC, i.ord",
                &[&batch.map(i)],
            )?)
        })?;
        rows.iter()
            .map(|r| {
                let precincts: &str = r.get(2);
                let key: Option<Vec<u8>> = r.get(6);
                Ok(InviteRecord {
                    code: r.get(0),
                    election: r.get(1),
                    precincts: serde_json::from_str(precincts)
                        .map_err(|e| corrupt(format!("invite precincts: {e}")))?,
                    batch: r.get::<_, Option<i64>>(3).map(u),
                    created_at_ms: u(r.get(4)),
                    used_by: r.get(5),
                    used_by_fingerprint: key
                        .and_then(|k| <[u8; 32]>::try_from(k).ok())
                        .map(|k| hattama_core::evidence::DeviceKey(k).fingerprint()),
                    used_at_ms: r.get::<_, Option<i64>>(7).map(u),
                    cancelled_at_ms: r.get::<_, Option<i64>>(8).map(u),
                })
            })
            .collect()
    }

    fn cancel_invite(
        &self,
        code: &str,
        now_ms: u64,
        audit: &NewAudit,
    ) -> Result<bool, StorageError> {
        self.write(false, |tx| {
            let n = tx.execute(
                "UPDATE invites SET cancelled_at_ms = $2
                 WHERE code = $1 AND used_by IS NULL AND cancelled_at_ms IS NULL",
                &[&code, &i(now_ms)],
            )?;
            if n == 1 {
                insert_audit(tx, audit)?;
            }
            Ok(n == 1)
        })
    }

    fn precinct_tallies(
        &self,
        election: &str,
    ) -> Result<BTreeMap<String, PrecinctTally>, StorageError> {
        let rows = self.read(|c| {
            Ok(c.query(
                "SELECT precinct, count(*), count(*) FILTER (WHERE state = 'accepted'),
                    count(*) FILTER (WHERE state = 'new')
                 FROM review_index WHERE election = $1 GROUP BY precinct",
                &[&election],
            )?)
        })?;
        Ok(rows
            .iter()
            .map(|r| {
                let tally = PrecinctTally {
                    captures: u(r.get(1)),
                    accepted: u(r.get(2)),
                    new: u(r.get(3)),
                };
                (r.get(0), tally)
            })
            .collect())
    }

    fn captures_per_hour(
        &self,
        election: &str,
        hours: u64,
    ) -> Result<Vec<(u64, u64)>, StorageError> {
        let rows = self.read(|c| {
            Ok(c.query(
                "SELECT received_at_ms / 3600000 AS hour, count(*) FROM captures
                 WHERE election = $1 GROUP BY hour ORDER BY hour DESC LIMIT $2",
                &[&election, &i(hours)],
            )?)
        })?;
        let mut out: Vec<(u64, u64)> = rows.iter().map(|r| (u(r.get(0)), u(r.get(1)))).collect();
        out.reverse();
        Ok(out)
    }

    fn device_summaries(&self) -> Result<Vec<DeviceSummary>, StorageError> {
        self.read(|c| {
            let keys: Vec<Vec<u8>> = c
                .query("SELECT key FROM devices ORDER BY enrolled_at_ms, id", &[])?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let stats = c.prepare(
                "SELECT max(received_at_ms), count(*), coalesce(max(seq), 0), count(DISTINCT seq)
                 FROM captures WHERE device_id = $1",
            )?;
            let states = c.prepare(
                "SELECT state, count(*), count(*) FILTER (WHERE (flags & 1) <> 0)
                 FROM review_index WHERE device_id = $1 GROUP BY state",
            )?;
            let mut out = Vec::with_capacity(keys.len());
            for k in &keys {
                let device = load_device(c, k)?.ok_or_else(|| corrupt("device vanished"))?;
                let s = c.query_one(&stats, &[&device.id])?;
                let (last, count, max_seq, distinct): (Option<i64>, i64, i64, i64) =
                    (s.get(0), s.get(1), s.get(2), s.get(3));
                let mut by_state = BTreeMap::new();
                let mut chain_gaps = 0;
                for row in c.query(&states, &[&device.id])? {
                    by_state.insert(row.get::<_, String>(0), u(row.get(1)));
                    chain_gaps += u(row.get(2));
                }
                out.push(DeviceSummary {
                    device,
                    last_sync_ms: last.map(u),
                    captures: u(count),
                    states: by_state,
                    missing_seqs: u(max_seq - distinct),
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
        self.write(false, |tx| {
            let n = tx.execute(
                "UPDATE devices SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL",
                &[&id, &i(now_ms)],
            )?;
            if n == 1 {
                insert_audit(tx, audit)?;
            }
            Ok(n == 1)
        })
    }
}
