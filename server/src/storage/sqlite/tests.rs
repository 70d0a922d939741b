//! Schema upgrades and the log's storage, on real database files.

use std::path::Path;

use hattama_core::evidence::Sha256Hash;
use hattama_core::log::{ENTRY_VERSION, LogEntry};
use rusqlite::{Connection, params};

use super::{DB_FILE, MIGRATIONS, SqliteStorage};
use crate::storage::{NewCapture, PhotoBytes, Storage};

/// `sqlite_master` without SQLite's own objects, sorted: the schema to compare.
fn schema(path: &Path) -> Vec<(String, String, Option<String>)> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'
             ORDER BY type, name",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Pseudo-random bytes with zeros in them (as hashes have).
fn bytes(seed: u64) -> [u8; 32] {
    let mut h = Sha256Hash::of(&seed.to_le_bytes()).0;
    h[(seed % 32) as usize] = 0;
    h
}

fn entry(i: u64) -> LogEntry {
    LogEntry {
        capture_id: Sha256Hash::of(format!("capture {i}").as_bytes()),
        election: "e1".into(),
        photo_sha256: Sha256Hash::of(format!("photo {i}").as_bytes()),
        precinct: format!("p{:04}", i % 7),
        received_at_ms: 1_760_000_000_000 + i * 1000,
        v: ENTRY_VERSION,
    }
}

/// A database at schema version 2 (log entries keyed by capture id, one row per stored hash)
/// with `stored` captures, the first `logged` of them in the log: returns the stored hashes.
fn version_2_database(dir: &Path, stored: u64, logged: u64) -> Vec<[u8; 32]> {
    let mut conn = Connection::open(dir.join(DB_FILE)).unwrap();
    let tx = conn.transaction().unwrap();
    tx.execute_batch(MIGRATIONS[0]).unwrap();
    tx.execute_batch(MIGRATIONS[1]).unwrap();
    tx.pragma_update(None, "user_version", 2).unwrap();
    tx.execute(
        "INSERT INTO elections (id, definition, imported_at_ms) VALUES ('e1', x'7b7d', 1)",
        [],
    )
    .unwrap();
    tx.execute("INSERT INTO devices VALUES ('d1', x'01', 'e1', 1, NULL)", []).unwrap();
    for i in 0..stored {
        let e = entry(i);
        tx.execute(
            "INSERT INTO captures VALUES (?1, 'd1', ?2, 'e1', ?3, x'6d', x'73', ?4, 10,
                'image/jpeg', ?5, x'72')",
            params![
                e.capture_id.to_hex(),
                i as i64,
                e.precinct,
                e.photo_sha256.to_hex(),
                e.received_at_ms as i64
            ],
        )
        .unwrap();
        if i < logged {
            tx.execute(
                "INSERT INTO log_entries VALUES (?1, ?2, ?3)",
                params![i as i64, e.capture_id.to_hex(), e.to_bytes()],
            )
            .unwrap();
        }
    }
    let hashes: Vec<[u8; 32]> =
        (0..tlog_tiles::stored_hash_count(logged)).map(|i| bytes(i + 1)).collect();
    for (i, h) in hashes.iter().enumerate() {
        tx.execute("INSERT INTO log_hashes VALUES (?1, ?2)", params![i as i64, h.as_slice()])
            .unwrap();
    }
    tx.execute("INSERT INTO checkpoints VALUES (?1, x'6e')", [logged as i64]).unwrap();
    tx.commit().unwrap();
    hashes
}

fn new_capture(storage: &SqliteStorage, i: u64) -> NewCapture {
    let e = entry(i);
    std::fs::write(storage.part_path(&e.capture_id), b"photo").unwrap();
    NewCapture {
        id: e.capture_id,
        device_id: "d1".into(),
        seq: i,
        election: e.election,
        precinct: e.precinct,
        manifest: b"m".to_vec(),
        signature: [3; 64],
        photo_sha256: e.photo_sha256,
        photo_bytes: 5,
        media_type: "image/jpeg".into(),
        received_at_ms: e.received_at_ms,
        receipt: format!("receipt {i}").into_bytes(),
        photo: PhotoBytes::Upload,
    }
}

#[test]
fn upgraded_database_equals_fresh_one_and_keeps_its_log() {
    let old = tempfile::tempdir().unwrap();
    // 137 entries: a partial last hash block; 40 captures stored but not yet logged.
    let hashes = version_2_database(old.path(), 177, 137);
    let storage = SqliteStorage::open(old.path(), true).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    drop(SqliteStorage::open(fresh.path(), true).unwrap());
    assert_eq!(schema(&old.path().join(DB_FILE)), schema(&fresh.path().join(DB_FILE)));

    assert_eq!(storage.log_size().unwrap(), 137);
    let all: Vec<u64> = (0..hashes.len() as u64).collect();
    assert_eq!(storage.read_log_hashes(&all).unwrap(), hashes);
    assert!(storage.read_log_hashes(&[hashes.len() as u64]).is_err());
    // Logged entries keep their bytes and positions; the pending ones follow in the order they
    // were stored, written exactly as `LogEntry::to_bytes` writes them.
    let want: Vec<Vec<u8>> = (0..177).map(|i| entry(i).to_bytes()).collect();
    assert_eq!(storage.log_entries(0, 1000).unwrap(), want);
    for i in [0, 136, 137, 176] {
        assert_eq!(storage.log_index(&entry(i).capture_id).unwrap(), Some(i), "capture {i}");
    }
    assert_eq!(storage.log_index(&entry(177).capture_id).unwrap(), None);

    // The next capture committed takes the next position, with its entry.
    storage.commit_capture(new_capture(&storage, 177)).unwrap().unwrap();
    assert_eq!(storage.log_index(&entry(177).capture_id).unwrap(), Some(177));
    assert_eq!(storage.log_entries(177, 178).unwrap(), vec![entry(177).to_bytes()]);
}

#[test]
fn hash_blocks_grow_across_batches_and_a_stale_batch_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = SqliteStorage::open(dir.path(), true).unwrap();
    {
        let conn = storage.writer.lock().unwrap();
        conn.execute(
            "INSERT INTO elections (id, definition, imported_at_ms) VALUES ('e1', x'7b7d', 1)",
            [],
        )
        .unwrap();
        conn.execute("INSERT INTO devices VALUES ('d1', x'01', 'e1', 1, NULL)", []).unwrap();
    }
    let mut size = 0;
    let mut all: Vec<[u8; 32]> = Vec::new();
    // Batches that end inside a block, exactly at its end, and span several blocks.
    for batch in [1u64, 30, 1, 64, 200, 3] {
        for i in size..size + batch {
            storage.commit_capture(new_capture(&storage, i)).unwrap().unwrap();
        }
        let first = all.len() as u64;
        let count = tlog_tiles::stored_hash_count(size + batch) - first;
        let hashes: Vec<[u8; 32]> = (first..first + count).map(|i| bytes(i + 7)).collect();
        let note = format!("checkpoint {}", size + batch).into_bytes();
        // Not the log's size: refused, and nothing is written.
        assert!(storage.append_log(size + 1, size + batch, first, &hashes, &note).is_err());
        // More entries than are stored: refused.
        assert!(storage.append_log(size, size + batch + 1, first, &hashes, &note).is_err());
        storage.append_log(size, size + batch, first, &hashes, &note).unwrap();
        // The same batch again (a second checkpoint for one size): refused.
        assert!(storage.append_log(size, size + batch, first, &hashes, &note).is_err());
        size += batch;
        all.extend(hashes);
        assert_eq!(storage.log_size().unwrap(), size);
        assert_eq!(storage.latest_checkpoint().unwrap(), Some((size, note)));
        let every: Vec<u64> = (0..all.len() as u64).collect();
        assert_eq!(storage.read_log_hashes(&every).unwrap(), all);
        let backwards: Vec<u64> = every.iter().rev().step_by(3).copied().collect();
        let want: Vec<[u8; 32]> = backwards.iter().map(|&i| all[i as usize]).collect();
        assert_eq!(storage.read_log_hashes(&backwards).unwrap(), want);
    }
}

/// The storage conformance suite, on a fresh data directory.
mod conformance {
    use crate::storage::SqliteStorage;
    use crate::storage::conformance::storage_conformance_tests;

    fn open() -> Option<(SqliteStorage, tempfile::TempDir)> {
        let dir = tempfile::tempdir().unwrap();
        Some((SqliteStorage::open(dir.path(), true).unwrap(), dir))
    }

    storage_conformance_tests!(open());
}
