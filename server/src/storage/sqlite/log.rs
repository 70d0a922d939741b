//! The log's SQL. Three tables hold it:
//! - `log_entries (idx, entry)`: every stored capture's entry, keyed by its log position, which
//!   `commit_capture` gives in commit order in the capture's own transaction (and also writes to
//!   `captures.log_index`). Rows past the log's size are the integrator's queue; the table's
//!   integer key is appended in order, so neither a capture's commit nor a batch touches an
//!   index of random keys.
//! - `log_hash_blocks (block, hashes)`: the stored Merkle hashes (Go `tlog` storage order),
//!   [`HASH_BLOCK`] to a row: block `b` holds hashes `b·64 ..`; only the last block is ever
//!   partial, and a batch extends it (a hash once written never changes).
//! - `checkpoints (size, note)`: one signed checkpoint per size; the newest gives the log's
//!   size. Its primary key refuses a second checkpoint for a size.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::storage::StorageError;

/// Stored hashes per row of `log_hash_blocks` (2 KiB: a row fits in one database page).
pub(super) const HASH_BLOCK: u64 = 64;

/// The size of the newest checkpoint: the number of entries in the log.
pub(super) fn size(c: &Connection) -> Result<u64, StorageError> {
    Ok(c.prepare_cached("SELECT coalesce(max(size), 0) FROM checkpoints")?
        .query_row([], |r| r.get::<_, i64>(0))? as u64)
}

/// The position the next committed capture takes.
pub(super) fn next_index(tx: &Transaction<'_>) -> Result<u64, StorageError> {
    Ok(tx
        .prepare_cached("SELECT coalesce(max(idx) + 1, 0) FROM log_entries")?
        .query_row([], |r| r.get::<_, i64>(0))? as u64)
}

/// Queues a committed capture's entry at its position.
pub(super) fn queue_entry(
    tx: &Transaction<'_>,
    idx: u64,
    entry: &[u8],
) -> Result<(), StorageError> {
    tx.prepare_cached("INSERT INTO log_entries (idx, entry) VALUES (?1, ?2)")?
        .execute(params![idx as i64, entry])?;
    Ok(())
}

/// The entries at positions `start..end` that exist, in order.
pub(super) fn entries(c: &Connection, start: u64, end: u64) -> Result<Vec<Vec<u8>>, StorageError> {
    let mut stmt = c.prepare_cached(
        "SELECT entry FROM log_entries WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
    )?;
    let rows = stmt.query_map([start as i64, end as i64], |r| r.get(0))?;
    Ok(rows.collect::<Result<Vec<Vec<u8>>, _>>()?)
}

/// Stored hashes by index; an index not stored is an error.
pub(super) fn read_hashes(c: &Connection, indexes: &[u64]) -> Result<Vec<[u8; 32]>, StorageError> {
    let mut stmt = c.prepare_cached("SELECT hashes FROM log_hash_blocks WHERE block = ?1")?;
    let mut out = Vec::with_capacity(indexes.len());
    // Proofs and tiles ask for runs of nearby hashes: keep the block read last.
    let mut last: Option<(u64, Vec<u8>)> = None;
    for &i in indexes {
        let block = i / HASH_BLOCK;
        if last.as_ref().is_none_or(|(b, _)| *b != block) {
            let data: Option<Vec<u8>> = stmt.query_row([block as i64], |r| r.get(0)).optional()?;
            last = data.map(|d| (block, d));
        }
        let at = ((i % HASH_BLOCK) * 32) as usize;
        let hash = last
            .as_ref()
            .and_then(|(_, d)| d.get(at..at + 32))
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .ok_or_else(|| StorageError::NotFound(format!("stored log hash {i}")))?;
        out.push(hash);
    }
    Ok(out)
}

/// Appends stored hashes `first..first + hashes.len()` and the checkpoint of `new_size`
/// entries, in `tx`; fails unless the log is `old_size` entries long, holds exactly `first`
/// stored hashes and has entries up to `new_size`.
pub(super) fn append(
    tx: &Transaction<'_>,
    old_size: u64,
    new_size: u64,
    first: u64,
    hashes: &[[u8; 32]],
    checkpoint: &[u8],
) -> Result<(), StorageError> {
    let size = size(tx)?;
    if size != old_size {
        return Err(StorageError::Corrupt(format!("log is {size} long, not {old_size}")));
    }
    if next_index(tx)? < new_size {
        return Err(StorageError::Corrupt(format!("fewer than {new_size} entries are stored")));
    }
    let mut block = first / HASH_BLOCK;
    let mut data: Vec<u8> = tx
        .prepare_cached("SELECT hashes FROM log_hash_blocks WHERE block = ?1")?
        .query_row([block as i64], |r| r.get(0))
        .optional()?
        .unwrap_or_default();
    if data.len() as u64 != (first % HASH_BLOCK) * 32 {
        return Err(StorageError::Corrupt(format!(
            "stored hash block {block} holds {} bytes; the log has {first} hashes",
            data.len()
        )));
    }
    let mut upsert = tx.prepare_cached(
        "INSERT INTO log_hash_blocks (block, hashes) VALUES (?1, ?2)
         ON CONFLICT (block) DO UPDATE SET hashes = excluded.hashes",
    )?;
    let mut rest = hashes;
    while !rest.is_empty() {
        let room = (HASH_BLOCK as usize) - data.len() / 32;
        let (now, later) = rest.split_at(room.min(rest.len()));
        data.extend(now.iter().flatten());
        upsert.execute(params![block as i64, data])?;
        data.clear();
        block += 1;
        rest = later;
    }
    tx.prepare_cached("INSERT INTO checkpoints (size, note) VALUES (?1, ?2)")?
        .execute(params![new_size as i64, checkpoint])?;
    Ok(())
}

/// A capture's log position.
pub(super) fn index_of(c: &Connection, capture_hex: &str) -> Result<Option<u64>, StorageError> {
    Ok(c.prepare_cached("SELECT log_index FROM captures WHERE id = ?1")?
        .query_row([capture_hex], |r| r.get::<_, Option<i64>>(0))
        .optional()?
        .flatten()
        .map(|i| i as u64))
}

/// The newest checkpoint.
pub(super) fn latest_checkpoint(c: &Connection) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
    Ok(c.prepare_cached("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
        .optional()?)
}

/// The `received_at_ms` of the entry at `index`, if there is one.
pub(super) fn stored_at(c: &Connection, index: u64) -> Result<Option<u64>, StorageError> {
    // The entry is JSON text stored as a BLOB: cast, or SQLite would read it as JSONB.
    Ok(c.prepare_cached(
        "SELECT json_extract(CAST(entry AS TEXT), '$.received_at_ms') FROM log_entries
         WHERE idx = ?1",
    )?
    .query_row([index as i64], |r| r.get::<_, Option<i64>>(0))
    .optional()?
    .flatten()
    .map(|ms| ms.max(0) as u64))
}

/// The checkpoint of `size` entries.
pub(super) fn checkpoint(c: &Connection, size: u64) -> Result<Option<Vec<u8>>, StorageError> {
    Ok(c.prepare_cached("SELECT note FROM checkpoints WHERE size = ?1")?
        .query_row([size as i64], |r| r.get(0))
        .optional()?)
}
