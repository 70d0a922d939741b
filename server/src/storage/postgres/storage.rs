//! [`Storage`] for [`PgStorage`]: elections, enrollment, uploads, captures and the log.

// Row tuples read straight from SQL are clearer inline than behind one-use type aliases.
#![allow(clippy::type_complexity)]

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

use hattama_core::election::Election;
use hattama_core::evidence::{DeviceKey, Sha256Hash};
use postgres::GenericClient;

use super::{PgStorage, corrupt, i, u};
use crate::objects::{ObjectKey, PutOptions};
use crate::storage::{
    Admission, CommitRefusal, Committed, Device, EnrollRefusal, Evidence, NewCapture, NewUpload,
    OpenUpload, PhotoBytes, Storage, StorageError, StoredCapture, UploadInfo, UploadWriter,
    device_id, new_code,
};

/// The object of a photo: `photos/<sha256>`.
fn photo_key(sha256: &Sha256Hash) -> Result<ObjectKey, StorageError> {
    Ok(ObjectKey::new(format!("photos/{}", sha256.to_hex()))?)
}

/// Stored hashes per row of `log_hash_blocks` (as in the SQLite backend: 2 KiB a row).
const HASH_BLOCK: u64 = 64;

fn hash(h: &str) -> Result<Sha256Hash, StorageError> {
    Sha256Hash::from_hex(h).ok_or_else(|| corrupt(format!("bad hash {h}")))
}

fn signature(bytes: Vec<u8>) -> Result<[u8; 64], StorageError> {
    bytes.try_into().map_err(|_| corrupt("signature length"))
}

pub(super) fn load_device(
    c: &mut impl GenericClient,
    key: &[u8],
) -> Result<Option<Device>, StorageError> {
    let Some(row) = c.query_opt(
        "SELECT id, key, election, enrolled_at_ms, revoked_at_ms FROM devices WHERE key = $1",
        &[&key],
    )?
    else {
        return Ok(None);
    };
    let id: String = row.get(0);
    let key: Vec<u8> = row.get(1);
    let key: [u8; 32] = key.try_into().map_err(|_| corrupt("device key length"))?;
    let precincts = c
        .query(
            "SELECT precinct FROM device_precincts WHERE device_id = $1 ORDER BY precinct",
            &[&id],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Some(Device {
        id,
        key: DeviceKey(key),
        election: row.get(2),
        precincts,
        enrolled_at_ms: u(row.get(3)),
        revoked_at_ms: row.get::<_, Option<i64>>(4).map(u),
    }))
}

/// The receipt and log position of a stored capture ([`stored`]).
const STORED: &str = "SELECT receipt, log_index FROM captures WHERE id = $1";

/// What is stored of a capture already: its first receipt and its log position
/// ([`STORED`], prepared).
fn stored(
    c: &mut impl GenericClient,
    statement: &postgres::Statement,
    id: &Sha256Hash,
) -> Result<Option<Committed>, StorageError> {
    Ok(c.query_opt(statement, &[&id.to_hex()])?.map(|row| Committed {
        receipt: row.get(0),
        log_index: u(row.get(1)),
        log_entry: None,
    }))
}

/// Creates `per_group` codes for each group of precincts as one new batch, in `tx` (which
/// holds the writer lock); an unknown election or precinct is [`StorageError::NotFound`].
pub(super) fn insert_invite_batch(
    tx: &mut postgres::Transaction<'_>,
    election: &str,
    groups: &[Vec<String>],
    per_group: usize,
    now_ms: u64,
) -> Result<(u64, Vec<(String, Vec<String>)>), StorageError> {
    if tx.query_opt("SELECT 1 FROM elections WHERE id = $1", &[&election])?.is_none() {
        return Err(StorageError::NotFound(format!("election {election}")));
    }
    for p in groups.iter().flatten() {
        if tx
            .query_opt("SELECT 1 FROM precincts WHERE election = $1 AND id = $2", &[&election, p])?
            .is_none()
        {
            return Err(StorageError::NotFound(format!("precinct {p} of {election}")));
        }
    }
    let batch: i64 = tx.query_one("SELECT coalesce(max(batch), 0) + 1 FROM invites", &[])?.get(0);
    let insert = tx.prepare(
        "INSERT INTO invites (code, election, precincts, created_at_ms, batch)
         VALUES ($1, $2, $3, $4, $5)",
    )?;
    let mut codes = Vec::with_capacity(groups.len() * per_group);
    for group in groups {
        let list = serde_json::to_string(group).map_err(corrupt)?;
        for _ in 0..per_group {
            let code = new_code();
            tx.execute(&insert, &[&code, &election, &list, &i(now_ms), &batch])?;
            codes.push((code, group.clone()));
        }
    }
    Ok((u(batch), codes))
}

/// Appends the bytes of one PATCH to an upload: held until [`UploadWriter::finish`], which
/// stores them as one chunk (replacing any chunk at or past its start: bytes of a PATCH cut
/// before it was acknowledged).
struct ChunkWriter {
    pool: r2d2::Pool<super::Manager>,
    id: String,
    start: u64,
    bytes: Vec<u8>,
}

impl Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl UploadWriter for ChunkWriter {
    fn finish(self: Box<Self>) -> Result<u64, StorageError> {
        if self.bytes.is_empty() {
            return Ok(self.start);
        }
        let mut conn = self.pool.get()?;
        let mut tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM upload_chunks WHERE upload_id = $1 AND start >= $2",
            &[&self.id, &i(self.start)],
        )?;
        // Only for an upload that still exists (not discarded or completed meanwhile).
        tx.execute(
            "INSERT INTO upload_chunks (upload_id, start, bytes)
             SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM uploads WHERE id = $1)",
            &[&self.id, &i(self.start), &self.bytes],
        )?;
        tx.commit()?;
        Ok(self.start + self.bytes.len() as u64)
    }

    fn rollback(self: Box<Self>) -> Result<u64, StorageError> {
        Ok(self.start)
    }
}

/// The bytes of an upload's chunks, in order, at most `limit`.
fn upload_bytes(
    c: &mut impl GenericClient,
    id: &str,
    limit: u64,
) -> Result<Option<Vec<u8>>, StorageError> {
    let rows = c.query(
        "SELECT start, bytes FROM upload_chunks WHERE upload_id = $1 ORDER BY start",
        &[&id],
    )?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for row in rows {
        if u(row.get(0)) != out.len() as u64 {
            return Err(corrupt(format!("upload {id} has a gap at {}", out.len())));
        }
        let bytes: &[u8] = row.get(1);
        out.extend_from_slice(bytes);
        if out.len() as u64 >= limit {
            out.truncate(limit as usize);
            break;
        }
    }
    Ok(Some(out))
}

impl PgStorage {
    /// Commits a round of the group commit (`crate::storage::group_commit`): every capture's
    /// row with its receipt, its photo's row (when photos are not objects) and its log entry at
    /// the next positions, in one transaction that holds the `log_head` row from numbering to
    /// commit. Each capture's photo is in `photo` (`PhotoBytes::Held`), and already durable as
    /// an object when photos are objects.
    fn commit_round(
        &self,
        round: &[NewCapture],
    ) -> Result<Vec<Result<Committed, CommitRefusal>>, StorageError> {
        // A round is a fixed number of statements, whatever its size: each one takes the whole
        // round's rows as arrays.
        let sql = [
            "SELECT next_index FROM log_head WHERE id = 1 FOR UPDATE",
            "SELECT id, receipt, log_index FROM captures WHERE id = ANY($1)",
            "SELECT id FROM devices WHERE id = ANY($1) AND revoked_at_ms IS NOT NULL",
            "INSERT INTO photos (sha256, bytes) SELECT * FROM unnest($1::text[], $2::bytea[])
             ON CONFLICT (sha256) DO NOTHING",
            "INSERT INTO log_entries (idx, entry) SELECT * FROM unnest($1::bigint[], $2::bytea[])",
            "INSERT INTO captures (id, device_id, seq, election, precinct, manifest, signature,
                photo_sha256, photo_bytes, media_type, received_at_ms, receipt, log_index)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                $6::bytea[], $7::bytea[], $8::text[], $9::bigint[], $10::text[], $11::bigint[],
                $12::bytea[], $13::bigint[])",
            "UPDATE log_head SET next_index = $1 WHERE id = 1",
            "DELETE FROM upload_chunks WHERE upload_id = ANY($1)",
            "DELETE FROM uploads WHERE id = ANY($1)",
        ];
        self.write_prepared(false, sql, |tx, statements| {
            let [
                head,
                stored_as,
                revoked,
                insert_photos,
                insert_entries,
                insert_captures,
                move_head,
                chunks,
                uploads,
            ] = statements;
            let ids: Vec<String> = round.iter().map(|c| c.id.to_hex()).collect();
            let device_ids: Vec<&str> = round.iter().map(|c| c.device_id.as_str()).collect();
            let first: i64 = tx.query_one(&head, &[])?.get(0);
            // Looked at under the lock: another instance may have committed one meanwhile.
            let mut done: HashMap<String, Committed> = HashMap::new();
            for row in tx.query(&stored_as, &[&ids])? {
                let committed =
                    Committed { receipt: row.get(1), log_index: u(row.get(2)), log_entry: None };
                done.insert(row.get(0), committed);
            }
            let revoked: HashSet<String> =
                tx.query(&revoked, &[&device_ids])?.iter().map(|row| row.get(0)).collect();
            let mut next = first;
            let mut new = New::default();
            let mut out = Vec::with_capacity(round.len());
            for (c, id) in round.iter().zip(&ids) {
                if let Some(stored) = done.get(id) {
                    // Stored before, or earlier in this round: its first receipt.
                    out.push(Ok(Committed { log_entry: None, ..stored.clone() }));
                    continue;
                }
                if revoked.contains(&c.device_id) {
                    out.push(Err(CommitRefusal::DeviceRevoked));
                    continue;
                }
                if self.photos.is_none() {
                    let PhotoBytes::Held(photo) = &c.photo else {
                        return Err(corrupt(format!("capture {id} came without its photo")));
                    };
                    new.photos.push((c.photo_sha256.to_hex(), &photo[..]));
                }
                let entry = c.log_entry();
                new.push(c, id, next, entry.clone());
                let committed =
                    Committed { receipt: c.receipt.clone(), log_index: u(next), log_entry: None };
                done.insert(id.clone(), committed.clone());
                out.push(Ok(Committed { log_entry: Some(entry), ..committed }));
                next += 1;
            }
            if next != first {
                let (shas, photos): (Vec<String>, Vec<&[u8]>) = new.photos.into_iter().unzip();
                if !shas.is_empty() {
                    tx.execute(&insert_photos, &[&shas, &photos])?;
                }
                tx.execute(&insert_entries, &[&new.index, &new.entry])?;
                tx.execute(
                    &insert_captures,
                    &[
                        &new.id,
                        &new.device_id,
                        &new.seq,
                        &new.election,
                        &new.precinct,
                        &new.manifest,
                        &new.signature,
                        &new.photo_sha256,
                        &new.photo_bytes,
                        &new.media_type,
                        &new.received_at_ms,
                        &new.receipt,
                        &new.index,
                    ],
                )?;
                tx.execute(&move_head, &[&next])?;
            }
            // The unfinished uploads they came from, if any, are done.
            tx.execute(&chunks, &[&ids])?;
            tx.execute(&uploads, &[&ids])?;
            Ok(out)
        })
    }
}

/// The new rows of a round ([`PgStorage::commit_round`]), column by column.
#[derive(Default)]
struct New<'a> {
    photos: Vec<(String, &'a [u8])>,
    index: Vec<i64>,
    entry: Vec<Vec<u8>>,
    id: Vec<&'a str>,
    device_id: Vec<&'a str>,
    seq: Vec<i64>,
    election: Vec<&'a str>,
    precinct: Vec<&'a str>,
    manifest: Vec<&'a [u8]>,
    signature: Vec<&'a [u8]>,
    photo_sha256: Vec<String>,
    photo_bytes: Vec<i64>,
    media_type: Vec<&'a str>,
    received_at_ms: Vec<i64>,
    receipt: Vec<&'a [u8]>,
}

impl<'a> New<'a> {
    fn push(&mut self, c: &'a NewCapture, id: &'a str, index: i64, entry: Vec<u8>) {
        self.index.push(index);
        self.entry.push(entry);
        self.id.push(id);
        self.device_id.push(&c.device_id);
        self.seq.push(i(c.seq));
        self.election.push(&c.election);
        self.precinct.push(&c.precinct);
        self.manifest.push(&c.manifest);
        self.signature.push(c.signature.as_slice());
        self.photo_sha256.push(c.photo_sha256.to_hex());
        self.photo_bytes.push(i(c.photo_bytes));
        self.media_type.push(&c.media_type);
        self.received_at_ms.push(i(c.received_at_ms));
        self.receipt.push(&c.receipt);
    }
}

/// Imports (or re-imports) an election inside the caller's transaction: whether it is new.
pub(super) fn import_election_in(
    tx: &mut postgres::Transaction<'_>,
    election: &Election,
    now_ms: u64,
) -> Result<bool, StorageError> {
    let definition = serde_json::to_vec(election)
        .map_err(|e| corrupt(format!("cannot encode election: {e}")))?;
    let existed = tx.query_opt("SELECT 1 FROM elections WHERE id = $1", &[&election.id])?.is_some();
    tx.execute(
        "INSERT INTO elections (id, definition, imported_at_ms, protocol_lines)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET definition = excluded.definition,
                imported_at_ms = excluded.imported_at_ms,
                protocol_lines = excluded.protocol_lines",
        &[&election.id, &definition, &i(now_ms), &(election.protocol.lines.len() as i64)],
    )?;
    let upsert = tx.prepare(
        "INSERT INTO precincts (election, id, number, region, district, address)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (election, id) DO UPDATE SET number = excluded.number,
                region = excluded.region, district = excluded.district,
                address = excluded.address",
    )?;
    for p in &election.precincts {
        tx.execute(
            &upsert,
            &[&election.id, &p.id, &i64::from(p.number), &p.region, &p.district, &p.address],
        )?;
    }
    Ok(!existed)
}

impl Storage for PgStorage {
    fn import_election(&self, election: &Election, now_ms: u64) -> Result<bool, StorageError> {
        self.write(true, |tx| import_election_in(tx, election, now_ms))
    }

    fn election(&self, id: &str) -> Result<Option<Election>, StorageError> {
        let row = self
            .read(|c| Ok(c.query_opt("SELECT definition FROM elections WHERE id = $1", &[&id])?))?;
        row.map(|r| {
            let bytes: &[u8] = r.get(0);
            serde_json::from_slice(bytes).map_err(|e| corrupt(format!("election {id}: {e}")))
        })
        .transpose()
    }

    fn admission(
        &self,
        election: &str,
        precinct: &str,
        key: &DeviceKey,
    ) -> Result<Admission, StorageError> {
        let row = self.read_prepared(
            "SELECT EXISTS (SELECT 1 FROM elections WHERE id = $1),
                        EXISTS (SELECT 1 FROM precincts WHERE election = $1 AND id = $2),
                        d.id IS NOT NULL,
                        d.revoked_at_ms IS NOT NULL,
                        coalesce(d.election = $1 AND EXISTS (SELECT 1 FROM device_precincts
                            WHERE device_id = d.id AND precinct = $2), false),
                        coalesce((SELECT protocol_lines FROM elections WHERE id = $1), 0)
                 FROM (SELECT 1) AS one LEFT JOIN devices AS d ON d.key = $3",
            |c, st| Ok(c.query_one(st, &[&election, &precinct, &key.0.as_slice()])?),
        )?;
        Ok(Admission {
            election_known: row.get(0),
            precinct_known: row.get(1),
            device_known: row.get(2),
            device_revoked: row.get(3),
            precinct_assigned: row.get(4),
            protocol_lines: u(row.get(5)),
        })
    }

    fn create_invites(
        &self,
        election: &str,
        precincts: &[String],
        count: usize,
        now_ms: u64,
    ) -> Result<Vec<String>, StorageError> {
        let (_, codes) = self.write(true, |tx| {
            insert_invite_batch(tx, election, &[precincts.to_vec()], count, now_ms)
        })?;
        Ok(codes.into_iter().map(|(code, _)| code).collect())
    }

    fn enroll(
        &self,
        code: &str,
        key: &DeviceKey,
        now_ms: u64,
    ) -> Result<Result<Device, EnrollRefusal>, StorageError> {
        let id = device_id(key);
        self.write(true, |tx| {
            let Some(invite) = tx.query_opt(
                "SELECT election, precincts, used_by, cancelled_at_ms FROM invites WHERE code = $1",
                &[&code],
            )?
            else {
                return Ok(Err(EnrollRefusal::UnknownCode));
            };
            let election: String = invite.get(0);
            let precincts: String = invite.get(1);
            let used_by: Option<String> = invite.get(2);
            let cancelled: Option<i64> = invite.get(3);
            match used_by {
                // The same device asking again (its first answer was lost): the same answer.
                Some(by) if by == id => {
                    return load_device(tx, &key.0)?
                        .map(Ok)
                        .ok_or_else(|| corrupt("enrolled device vanished"));
                }
                Some(_) => return Ok(Err(EnrollRefusal::CodeUsed)),
                // A cancelled code enrolls nothing, as if it never existed.
                None if cancelled.is_some() => return Ok(Err(EnrollRefusal::UnknownCode)),
                None => {}
            }
            let precincts: Vec<String> = serde_json::from_str(&precincts)
                .map_err(|e| corrupt(format!("invite precincts: {e}")))?;
            if let Some(existing) = load_device(tx, &key.0)? {
                if existing.election != election {
                    return Ok(Err(EnrollRefusal::OtherElection {
                        observes: existing.election,
                        code_for: election,
                    }));
                }
            } else {
                tx.execute(
                    "INSERT INTO devices (id, key, election, enrolled_at_ms)
                     VALUES ($1, $2, $3, $4)",
                    &[&id, &key.0.as_slice(), &election, &i(now_ms)],
                )?;
            }
            for p in &precincts {
                tx.execute(
                    "INSERT INTO device_precincts (device_id, precinct) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                    &[&id, p],
                )?;
            }
            tx.execute(
                "UPDATE invites SET used_by = $2, used_at_ms = $3 WHERE code = $1",
                &[&code, &id, &i(now_ms)],
            )?;
            let device =
                load_device(tx, &key.0)?.ok_or_else(|| corrupt("enrolled device vanished"))?;
            Ok(Ok(device))
        })
    }

    fn devices(&self) -> Result<Vec<Device>, StorageError> {
        self.read(|c| {
            let keys: Vec<Vec<u8>> = c
                .query("SELECT key FROM devices ORDER BY enrolled_at_ms, id", &[])?
                .iter()
                .map(|r| r.get(0))
                .collect();
            keys.iter()
                .map(|k| load_device(c, k)?.ok_or_else(|| corrupt("device vanished")))
                .collect()
        })
    }

    fn revoke_device(&self, id: &str, now_ms: u64) -> Result<bool, StorageError> {
        let n = self.read(|c| {
            Ok(c.execute(
                "UPDATE devices SET revoked_at_ms = coalesce(revoked_at_ms, $2) WHERE id = $1",
                &[&id, &i(now_ms)],
            )?)
        })?;
        Ok(n == 1)
    }

    fn create_upload(&self, up: &NewUpload) -> Result<bool, StorageError> {
        self.read_prepared(
            "INSERT INTO uploads (id, manifest, signature, length, created_at_ms)
             SELECT $1, $2, $3, $4, $5
             WHERE NOT EXISTS (SELECT 1 FROM captures WHERE id = $1)
             ON CONFLICT (id) DO NOTHING",
            |c, st| {
                let inserted = c.execute(
                    st,
                    &[
                        &up.id.to_hex(),
                        &up.manifest,
                        &up.signature.as_slice(),
                        &i(up.length),
                        &i(up.now_ms),
                    ],
                )?;
                Ok(inserted == 1)
            },
        )
    }

    fn upload(&self, id: &Sha256Hash) -> Result<Option<UploadInfo>, StorageError> {
        let hex = id.to_hex();
        let row = self.read_prepared(
            "(SELECT manifest, signature, photo_bytes, true, photo_bytes
                  FROM captures WHERE id = $1)
                 UNION ALL
                 (SELECT manifest, signature, length, false,
                    (SELECT coalesce(sum(length(bytes)), 0)::BIGINT FROM upload_chunks
                     WHERE upload_id = $1)
                  FROM uploads WHERE id = $1)
                 LIMIT 1",
            |c, st| Ok(c.query_opt(st, &[&hex])?),
        )?;
        let Some(row) = row else { return Ok(None) };
        let length = u(row.get(2));
        Ok(Some(UploadInfo {
            manifest: row.get(0),
            signature: signature(row.get(1))?,
            length,
            stored: row.get(3),
            offset: u(row.get(4)).min(length),
        }))
    }

    fn upload_writer(
        &self,
        id: &Sha256Hash,
        offset: u64,
    ) -> Result<Box<dyn UploadWriter>, StorageError> {
        Ok(Box::new(ChunkWriter {
            pool: self.pool.clone(),
            id: id.to_hex(),
            start: offset,
            bytes: Vec::new(),
        }))
    }

    fn read_upload(&self, id: &Sha256Hash, limit: u64) -> Result<Vec<u8>, StorageError> {
        self.read(|c| upload_bytes(c, &id.to_hex(), limit))?
            .ok_or_else(|| StorageError::NotFound(format!("the bytes of upload {id}")))
    }

    fn discard_upload(&self, id: &Sha256Hash) -> Result<(), StorageError> {
        self.write(false, |tx| {
            tx.execute("DELETE FROM upload_chunks WHERE upload_id = $1", &[&id.to_hex()])?;
            tx.execute("DELETE FROM uploads WHERE id = $1", &[&id.to_hex()])?;
            Ok(())
        })
    }

    fn open_uploads(&self) -> Result<Vec<OpenUpload>, StorageError> {
        let rows = self.read(|c| {
            Ok(c.query("SELECT id, manifest, length, created_at_ms FROM uploads", &[])?)
        })?;
        // The canonical manifest spells its key as `"device_key":"<64 hex digits>"`.
        const KEY: &[u8] = b"\"device_key\":\"";
        Ok(rows
            .iter()
            .filter_map(|row| {
                let manifest: &[u8] = row.get(1);
                let at = manifest.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
                let key = std::str::from_utf8(manifest.get(at..at + 64)?).ok()?.to_owned();
                Some(OpenUpload {
                    id: Sha256Hash::from_hex(row.get(0))?,
                    device_key: key,
                    length: u(row.get(2)),
                    created_at_ms: u(row.get(3)),
                })
            })
            .collect())
    }

    fn captures_of_device_in_precinct(
        &self,
        device_id: &str,
        election: &str,
        precinct: &str,
    ) -> Result<u64, StorageError> {
        let n: i64 = self.read_prepared(
            "SELECT count(*) FROM captures
             WHERE election = $1 AND precinct = $2 AND device_id = $3",
            |c, st| Ok(c.query_one(st, &[&election, &precinct, &device_id])?.get(0)),
        )?;
        Ok(u(n))
    }

    fn commit_capture(
        &self,
        mut c: NewCapture,
    ) -> Result<Result<Committed, CommitRefusal>, StorageError> {
        if let PhotoBytes::Upload = c.photo {
            // Its upload's bytes are gone once it is stored.
            if let Some(done) = self.read_prepared(STORED, |conn, st| stored(conn, st, &c.id))? {
                return Ok(Ok(done));
            }
            let bytes = self
                .read(|conn| upload_bytes(conn, &c.id.to_hex(), c.photo_bytes))?
                .ok_or_else(|| StorageError::NotFound(format!("the bytes of upload {}", c.id)))?;
            c.photo = PhotoBytes::Held(bytes.into());
        }
        // A photo kept as an object is durable before the transaction that references it
        // (concurrent commits write theirs side by side, before their round). A capture stored
        // before writes the same bytes again, which the object store accepts; one refused by
        // its round leaves an object no capture references, as a crash between the two would.
        if let (Some(objects), PhotoBytes::Held(photo)) = (&self.photos, &c.photo) {
            objects.put(&photo_key(&c.photo_sha256)?, photo, PutOptions::PHOTO)?;
            // Only the rows remain to commit: the bytes need not wait in the queue.
            c.photo = PhotoBytes::Upload;
        }
        self.commits.submit(c, |round| self.commit_round(round))
    }

    fn receipt(&self, id: &Sha256Hash) -> Result<Option<Vec<u8>>, StorageError> {
        self.read_prepared("SELECT receipt FROM captures WHERE id = $1", |c, st| {
            Ok(c.query_opt(st, &[&id.to_hex()])?.map(|r| r.get(0)))
        })
    }

    fn photo(&self, sha256: &Sha256Hash) -> Result<Option<Vec<u8>>, StorageError> {
        let row = self.read(|c| {
            Ok(c.query_opt("SELECT bytes FROM photos WHERE sha256 = $1", &[&sha256.to_hex()])?
                .map(|r| r.get(0)))
        })?;
        match (row, &self.photos) {
            (Some(bytes), _) => Ok(Some(bytes)),
            (None, Some(objects)) => Ok(objects.get_opt(&photo_key(sha256)?)?),
            (None, None) => Ok(None),
        }
    }

    fn capture_count(&self) -> Result<u64, StorageError> {
        self.read(|c| Ok(u(c.query_one("SELECT count(*) FROM captures", &[])?.get(0))))
    }

    fn captures(&self) -> Result<Vec<StoredCapture>, StorageError> {
        let rows = self.read(|c| {
            Ok(c.query(
                "SELECT id, device_id, seq, election, precinct, photo_sha256, photo_bytes,
                    received_at_ms FROM captures ORDER BY received_at_ms, id",
                &[],
            )?)
        })?;
        rows.iter()
            .map(|r| {
                Ok(StoredCapture {
                    id: hash(r.get(0))?,
                    device_id: r.get(1),
                    seq: u(r.get(2)),
                    election: r.get(3),
                    precinct: r.get(4),
                    photo_sha256: hash(r.get(5))?,
                    photo_bytes: u(r.get(6)),
                    received_at_ms: u(r.get(7)),
                })
            })
            .collect()
    }

    fn evidence(&self, id: &Sha256Hash) -> Result<Option<Evidence>, StorageError> {
        let row = self.read(|c| {
            Ok(c.query_opt(
                "SELECT manifest, signature FROM captures WHERE id = $1",
                &[&id.to_hex()],
            )?)
        })?;
        row.map(|r| Ok((r.get(0), signature(r.get(1))?))).transpose()
    }

    fn log_size(&self) -> Result<u64, StorageError> {
        self.read_prepared("SELECT size FROM log_published WHERE id = 1", |c, st| {
            Ok(u(c.query_one(st, &[])?.get(0)))
        })
    }

    fn read_log_hashes(&self, indexes: &[u64]) -> Result<Vec<[u8; 32]>, StorageError> {
        self.read_prepared("SELECT hashes FROM log_hash_blocks WHERE block = $1", |c, stmt| {
            let mut out = Vec::with_capacity(indexes.len());
            // Proofs and tiles ask for runs of nearby hashes: keep the block read last.
            let mut last: Option<(u64, Vec<u8>)> = None;
            for &index in indexes {
                let block = index / HASH_BLOCK;
                if last.as_ref().is_none_or(|(b, _)| *b != block) {
                    last = c.query_opt(stmt, &[&i(block)])?.map(|r| (block, r.get(0)));
                }
                let at = ((index % HASH_BLOCK) * 32) as usize;
                let hash = last
                    .as_ref()
                    .and_then(|(_, d)| d.get(at..at + 32))
                    .and_then(|h| <[u8; 32]>::try_from(h).ok())
                    .ok_or_else(|| StorageError::NotFound(format!("stored log hash {index}")))?;
                out.push(hash);
            }
            Ok(out)
        })
    }

    fn append_log(
        &self,
        old_size: u64,
        new_size: u64,
        first_hash: u64,
        hashes: &[[u8; 32]],
        checkpoint: &[u8],
    ) -> Result<(), StorageError> {
        self.write(false, |tx| {
            // The fence: only the writer that read the log at `old_size` moves it on.
            let moved = tx.execute(
                "UPDATE log_published SET size = $2 WHERE id = 1 AND size = $1",
                &[&i(old_size), &i(new_size)],
            )?;
            if moved != 1 {
                let size: i64 =
                    tx.query_one("SELECT size FROM log_published WHERE id = 1", &[])?.get(0);
                return Err(corrupt(format!("log is {size} long, not {old_size}")));
            }
            let next: i64 =
                tx.query_one("SELECT next_index FROM log_head WHERE id = 1", &[])?.get(0);
            if u(next) < new_size {
                return Err(corrupt(format!("fewer than {new_size} entries are stored")));
            }
            let mut block = first_hash / HASH_BLOCK;
            let mut data: Vec<u8> = tx
                .query_opt("SELECT hashes FROM log_hash_blocks WHERE block = $1", &[&i(block)])?
                .map(|r| r.get(0))
                .unwrap_or_default();
            if data.len() as u64 != (first_hash % HASH_BLOCK) * 32 {
                return Err(corrupt(format!(
                    "stored hash block {block} holds {} bytes; the log has {first_hash} hashes",
                    data.len()
                )));
            }
            let upsert = tx.prepare(
                "INSERT INTO log_hash_blocks (block, hashes) VALUES ($1, $2)
                 ON CONFLICT (block) DO UPDATE SET hashes = excluded.hashes",
            )?;
            let mut rest = hashes;
            while !rest.is_empty() {
                let room = (HASH_BLOCK as usize) - data.len() / 32;
                let (now, later) = rest.split_at(room.min(rest.len()));
                data.extend(now.iter().flatten());
                tx.execute(&upsert, &[&i(block), &data])?;
                data.clear();
                block += 1;
                rest = later;
            }
            tx.execute(
                "INSERT INTO checkpoints (size, note) VALUES ($1, $2)",
                &[&i(new_size), &checkpoint],
            )?;
            Ok(())
        })
    }

    fn log_index(&self, capture: &Sha256Hash) -> Result<Option<u64>, StorageError> {
        self.read_prepared("SELECT log_index FROM captures WHERE id = $1", |c, st| {
            Ok(c.query_opt(st, &[&capture.to_hex()])?.map(|r| u(r.get(0))))
        })
    }

    fn log_entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, StorageError> {
        self.read_prepared(
            "SELECT entry FROM log_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx",
            |c, st| Ok(c.query(st, &[&i(start), &i(end)])?.iter().map(|r| r.get(0)).collect()),
        )
    }

    fn latest_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        self.read(|c| {
            Ok(c.query_opt("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1", &[])?
                .map(|r| (u(r.get(0)), r.get(1))))
        })
    }

    fn checkpoint(&self, size: u64) -> Result<Option<Vec<u8>>, StorageError> {
        self.read(|c| {
            Ok(c.query_opt("SELECT note FROM checkpoints WHERE size = $1", &[&i(size)])?
                .map(|r| r.get(0)))
        })
    }

    fn log_lease(&self) -> Result<Box<dyn crate::storage::LogLease>, StorageError> {
        Ok(Box::new(super::lease::PgLease::new(self.config.clone())))
    }

    fn log_entry_stored_at(&self, index: u64) -> Result<Option<u64>, StorageError> {
        let entry: Option<Vec<u8>> = self.read(|c| {
            Ok(c.query_opt("SELECT entry FROM log_entries WHERE idx = $1", &[&i(index)])?
                .map(|r| r.get(0)))
        })?;
        Ok(entry.and_then(|e| {
            let v: serde_json::Value = serde_json::from_slice(&e).ok()?;
            v.get("received_at_ms")?.as_u64()
        }))
    }
}
