//! [`ConsoleStorage`] for [`PgStorage`]: invite batches, cancellations, the dashboard's tallies
//! and the devices' summaries.

use std::collections::BTreeMap;

use hattama_core::election::Election;

use super::gallery::import_official_in;
use super::review::insert_audit;
use super::storage::{import_election_in, insert_invite_batch, load_device};
use super::{PgStorage, corrupt, i, u};
use crate::official::Figures;
use crate::storage::StorageError;
use crate::storage::console::{
    AcceptedStation, BatchAudit, ConsoleStorage, DeviceSummary, InviteRecord, MissingStation,
    NewInvites, RefusalRecord, RegionTally,
};
use crate::storage::review::NewAudit;

/// The summaries of the devices of `keys`, in that order.
fn summaries(
    c: &mut postgres::Client,
    keys: &[Vec<u8>],
) -> Result<Vec<DeviceSummary>, StorageError> {
    let stats = c.prepare(
        "SELECT max(received_at_ms), count(*), coalesce(max(seq), 0), count(DISTINCT seq)
         FROM captures WHERE device_id = $1",
    )?;
    let states = c.prepare(
        "SELECT state, count(*), count(*) FILTER (WHERE (flags & 1) <> 0)
         FROM review_index WHERE device_id = $1 GROUP BY state",
    )?;
    let refusals = c.prepare(
        "SELECT coalesce(sum(count), 0)::BIGINT FROM device_refusals WHERE device_id = $1",
    )?;
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
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
        let refused: i64 = c.query_one(&refusals, &[&device.id])?.get(0);
        out.push(DeviceSummary {
            device,
            last_sync_ms: last.map(u),
            captures: u(count),
            states: by_state,
            missing_seqs: u(max_seq - distinct),
            chain_gaps,
            refusals: u(refused),
        });
    }
    Ok(out)
}

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

    fn region_tallies(&self, election: &str) -> Result<Vec<RegionTally>, StorageError> {
        let rows = self.read(|c| {
            Ok(c.query(
                "SELECT p.region, count(*), count(t.precinct),
                    coalesce(sum(t.accepted), 0)::BIGINT
                 FROM precincts p
                 LEFT JOIN (SELECT precinct,
                                max(CASE WHEN state = 'accepted' THEN 1 ELSE 0 END) AS accepted
                            FROM review_index WHERE election = $1 GROUP BY precinct) t
                   ON t.precinct = p.id
                 WHERE p.election = $1
                 GROUP BY p.region ORDER BY p.region",
                &[&election],
            )?)
        })?;
        Ok(rows
            .iter()
            .map(|r| RegionTally {
                region: r.get(0),
                precincts: u(r.get(1)),
                photographed: u(r.get(2)),
                accepted: u(r.get(3)),
            })
            .collect())
    }

    fn stations_without_photo(
        &self,
        election: &str,
        per_region: u64,
    ) -> Result<Vec<MissingStation>, StorageError> {
        let rows = self.read(|c| {
            Ok(c.query(
                "SELECT region, number, address FROM (
                    SELECT p.region, p.number, p.address, row_number() OVER
                        (PARTITION BY p.region ORDER BY p.number, p.id) AS n
                    FROM precincts p
                    WHERE p.election = $1 AND NOT EXISTS
                        (SELECT 1 FROM review_index r WHERE r.election = $1 AND r.precinct = p.id)
                 ) ranked
                 WHERE n <= $2 ORDER BY region, n",
                &[&election, &i(per_region)],
            )?)
        })?;
        rows.iter()
            .map(|r| {
                Ok(MissingStation {
                    region: r.get(0),
                    number: u32::try_from(r.get::<_, i64>(1))
                        .map_err(|_| corrupt("precinct number out of range"))?,
                    address: r.get(2),
                })
            })
            .collect()
    }

    fn accepted_stations(&self, election: &str) -> Result<Vec<AcceptedStation>, StorageError> {
        let rows = self.read(|c| {
            Ok(c.query(
                "SELECT ri.region, min(d.at_ms) FROM review_index ri
                 JOIN decisions d ON d.capture_id = ri.capture_id AND d.kind = 'accepted'
                 WHERE ri.election = $1 AND ri.state = 'accepted'
                 GROUP BY ri.precinct, ri.region",
                &[&election],
            )?)
        })?;
        Ok(rows.iter().map(|r| AcceptedStation { region: r.get(0), at_ms: u(r.get(1)) }).collect())
    }

    fn queue_depth(&self, election: &str) -> Result<u64, StorageError> {
        let row = self.read(|c| {
            Ok(c.query_one(
                "SELECT count(*) FROM review_index WHERE election = $1 AND state = 'new'",
                &[&election],
            )?)
        })?;
        Ok(u(row.get(0)))
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
            summaries(c, &keys)
        })
    }

    fn device_summary(&self, id: &str) -> Result<Option<DeviceSummary>, StorageError> {
        self.read(|c| {
            let Some(row) = c.query_opt("SELECT key FROM devices WHERE id = $1", &[&id])? else {
                return Ok(None);
            };
            Ok(summaries(c, &[row.get(0)])?.pop())
        })
    }

    fn sequence_gaps(&self, id: &str, limit: u64) -> Result<Vec<(u64, u64)>, StorageError> {
        let rows = self.read(|c| {
            // Each received sequence number after one more than 1 below it opens a gap
            // (sequence numbers start at 1).
            Ok(c.query(
                "SELECT prev + 1, seq - 1 FROM (
                    SELECT seq, coalesce(lag(seq) OVER (ORDER BY seq), 0) AS prev
                    FROM (SELECT DISTINCT seq FROM captures WHERE device_id = $1) s) g
                 WHERE seq > prev + 1 ORDER BY seq LIMIT $2",
                &[&id, &i(limit)],
            )?)
        })?;
        Ok(rows.iter().map(|r| (u(r.get(0)), u(r.get(1)))).collect())
    }

    fn record_refusal(&self, device: &str, code: &str, at_ms: u64) -> Result<(), StorageError> {
        self.write(false, |tx| {
            tx.execute(
                "INSERT INTO device_refusals (device_id, code, count, first_at_ms, last_at_ms)
                 SELECT $1, $2, 1, $3, $3 WHERE EXISTS (SELECT 1 FROM devices WHERE id = $1)
                 ON CONFLICT (device_id, code) DO UPDATE SET
                    count = device_refusals.count + 1,
                    last_at_ms = greatest(device_refusals.last_at_ms, excluded.last_at_ms)",
                &[&device, &code, &i(at_ms)],
            )?;
            Ok(())
        })
    }

    fn device_refusals(&self, id: &str) -> Result<Vec<RefusalRecord>, StorageError> {
        let rows = self.read(|c| {
            Ok(c.query(
                "SELECT code, count, first_at_ms, last_at_ms FROM device_refusals
                 WHERE device_id = $1 ORDER BY last_at_ms DESC, code",
                &[&id],
            )?)
        })?;
        Ok(rows
            .iter()
            .map(|r| RefusalRecord {
                code: r.get(0),
                count: u(r.get(1)),
                first_at_ms: u(r.get(2)),
                last_at_ms: u(r.get(3)),
            })
            .collect())
    }

    fn import_election_audited(
        &self,
        election: &Election,
        now_ms: u64,
        audit: &dyn Fn(bool) -> NewAudit,
    ) -> Result<bool, StorageError> {
        self.write(true, |tx| {
            let new = import_election_in(tx, election, now_ms)?;
            insert_audit(tx, &audit(new))?;
            Ok(new)
        })
    }

    fn import_official_audited(
        &self,
        election: &str,
        figures: &Figures,
        source: (&str, &str),
        now_ms: u64,
        audit: &dyn Fn(Option<u64>) -> NewAudit,
    ) -> Result<Option<u64>, StorageError> {
        self.write(true, |tx| {
            let version = import_official_in(tx, election, figures, source, now_ms)?;
            insert_audit(tx, &audit(version))?;
            Ok(version)
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
