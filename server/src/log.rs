//! The public log on the server: one integrator thread appends stored captures to the Merkle
//! tree in batches, signs a checkpoint for every new size, commits entries, hashes and the
//! checkpoint in one transaction, and only then publishes tiles and the checkpoint as files
//! (`<data dir>/log/`), which anyone can mirror with a plain web server.
//!
//! Invariant: a checkpoint is published only after it is committed, and the tree it signs is
//! a prefix of every later tree, so no two different checkpoints for one size ever leave the
//! server, whatever moment it is killed at (signatures are deterministic, and entries are
//! appended in the committed order).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use hattama_core::evidence::Sha256Hash;
use hattama_core::log::{self as tlog, Hash, LogKey, TILE_HEIGHT, TlogProof};
use tlog_tiles::{HashReader, Tile};

use crate::storage::{Storage, StorageError};

/// Most entries integrated in one batch.
const MAX_BATCH: usize = 4096;

/// The server's log.
pub struct Log {
    storage: Arc<dyn Storage>,
    key: SigningKey,
    /// The log's public identity.
    pub log_key: LogKey,
    dir: PathBuf,
    published: Mutex<u64>,
    published_changed: Condvar,
    wake: Mutex<bool>,
    wake_changed: Condvar,
}

fn corrupt(e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(format!("log: {e}"))
}

/// Reads stored hashes from storage, with the hashes of a batch not yet committed on top.
struct Reader<'a> {
    storage: &'a dyn Storage,
    overlay: &'a HashMap<u64, Hash>,
}

impl HashReader for Reader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        let missing: Vec<u64> =
            indexes.iter().copied().filter(|i| !self.overlay.contains_key(i)).collect();
        let stored = if missing.is_empty() {
            Vec::new()
        } else {
            self.storage.read_log_hashes(&missing).map_err(|_| tlog_tiles::Error::InvalidTile)?
        };
        let mut stored = stored.into_iter();
        indexes
            .iter()
            .map(|i| match self.overlay.get(i) {
                Some(h) => Ok(*h),
                None => stored.next().map(Hash).ok_or(tlog_tiles::Error::InvalidTile),
            })
            .collect()
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("tmp{}", rand::random::<u32>()));
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

impl Log {
    /// Opens the log over `storage`, re-publishing whatever a crash left unpublished.
    pub fn open(
        storage: Arc<dyn Storage>,
        key: SigningKey,
        origin: &str,
        data_dir: &Path,
    ) -> Result<Arc<Self>, StorageError> {
        let log_key = LogKey::for_signer(origin, &key).map_err(corrupt)?;
        let log = Arc::new(Self {
            storage,
            key,
            log_key,
            dir: data_dir.join("log"),
            published: Mutex::new(0),
            published_changed: Condvar::new(),
            wake: Mutex::new(false),
            wake_changed: Condvar::new(),
        });
        fs::create_dir_all(&log.dir)?;
        let from = log.published_file_size();
        if let Some((size, note)) = log.storage.latest_checkpoint()? {
            if from != Some(size) {
                log.publish(from.unwrap_or(0).min(size), size, &note)?;
            }
            *log.published.lock().map_err(corrupt)? = size;
        }
        Ok(log)
    }

    fn published_file_size(&self) -> Option<u64> {
        let note = fs::read(self.dir.join("checkpoint")).ok()?;
        tlog::verify_checkpoint(&note, &self.log_key).ok().map(|c| c.size)
    }

    /// Starts the integrator thread. It runs until the process ends.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let log = self.clone();
        std::thread::Builder::new().name("log-integrator".into()).spawn(move || {
            loop {
                match log.integrate_once() {
                    Ok(0) => log.sleep_until_woken(Duration::from_secs(1)),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "log integration failed");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        })?;
        Ok(())
    }

    fn sleep_until_woken(&self, timeout: Duration) {
        let Ok(guard) = self.wake.lock() else { return };
        let Ok((mut guard, _)) = self.wake_changed.wait_timeout_while(guard, timeout, |w| !*w)
        else {
            return;
        };
        *guard = false;
    }

    /// Asks the integrator to look for new captures now.
    pub fn wake(&self) {
        if let Ok(mut w) = self.wake.lock() {
            *w = true;
            self.wake_changed.notify_one();
        }
    }

    /// The size of the newest published checkpoint.
    pub fn published_size(&self) -> u64 {
        self.published.lock().map(|g| *g).unwrap_or(0)
    }

    /// Integrates up to one batch of stored captures; returns how many.
    pub fn integrate_once(&self) -> Result<usize, StorageError> {
        let entries = self.storage.unlogged(MAX_BATCH)?;
        if entries.is_empty() {
            return Ok(0);
        }
        let old = self.storage.log_size()?;
        let mut overlay = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            let n = old + i as u64;
            let reader = Reader { storage: &*self.storage, overlay: &overlay };
            let new = tlog_tiles::stored_hashes_for_record_hash(n, e.leaf_hash(), &reader)
                .map_err(corrupt)?;
            let start = tlog_tiles::stored_hash_index(0, n);
            for (k, h) in new.into_iter().enumerate() {
                overlay.insert(start + k as u64, h);
            }
        }
        let size = old + entries.len() as u64;
        let reader = Reader { storage: &*self.storage, overlay: &overlay };
        let root = tlog_tiles::tree_hash(size, &reader).map_err(corrupt)?;
        let note =
            tlog::sign_checkpoint(&self.log_key.origin, size, &root, &self.key).map_err(corrupt)?;
        let mut hashes: Vec<(u64, [u8; 32])> = overlay.iter().map(|(i, h)| (*i, h.0)).collect();
        hashes.sort_unstable_by_key(|(i, _)| *i);
        self.storage.append_log(old, &entries, &hashes, &note)?;
        hattama_core::hooks::pause("log:after-commit");
        self.publish(old, size, &note)?;
        let mut published = self.published.lock().map_err(corrupt)?;
        *published = size;
        self.published_changed.notify_all();
        tracing::info!(entries = entries.len(), size, "log integrated");
        Ok(entries.len())
    }

    /// Writes the tiles that change between `old` and `new` entries, then the checkpoint.
    fn publish(&self, old: u64, new: u64, note: &[u8]) -> Result<(), StorageError> {
        let empty = HashMap::new();
        let reader = Reader { storage: &*self.storage, overlay: &empty };
        for tile in Tile::new_tiles(TILE_HEIGHT, old, new) {
            let data = tile.read_data(&reader).map_err(corrupt)?;
            write_file(&self.dir.join(tlog::tile_path(&tile)), &data)?;
            if tile.level() == 0 {
                let start = tile.level_index() << TILE_HEIGHT;
                let entries = self.storage.log_entries(start, start + u64::from(tile.width()))?;
                let mut data_tile = tile;
                data_tile.set_is_data();
                let bundle = tlog::entry_bundle(entries.iter().map(Vec::as_slice));
                write_file(&self.dir.join(tlog::tile_path(&data_tile)), &bundle)?;
            }
        }
        write_file(&self.dir.join("checkpoint"), note)?;
        Ok(())
    }

    /// Waits (blocking) until the capture is in a published checkpoint; returns its index, or
    /// `None` if that did not happen within `timeout`.
    pub fn wait_logged(
        &self,
        id: &Sha256Hash,
        timeout: Duration,
    ) -> Result<Option<u64>, StorageError> {
        let deadline = Instant::now() + timeout;
        let mut woken = false;
        loop {
            if let Some(index) = self.storage.log_index(id)?
                && index < self.published_size()
            {
                return Ok(Some(index));
            }
            if !woken {
                self.wake();
                woken = true;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let guard = self.published.lock().map_err(corrupt)?;
            let _ = self
                .published_changed
                .wait_timeout(guard, (deadline - now).min(Duration::from_millis(200)))
                .map_err(corrupt)?;
        }
    }

    /// The newest published checkpoint: size and signed note.
    fn published_checkpoint(&self) -> Result<(u64, Vec<u8>), StorageError> {
        let size = self.published_size();
        let note = self
            .storage
            .checkpoint(size)?
            .ok_or_else(|| StorageError::NotFound("checkpoint".into()))?;
        Ok((size, note))
    }

    /// The inclusion proof of entry `index` in the newest published checkpoint.
    pub fn inclusion(&self, index: u64) -> Result<TlogProof, StorageError> {
        let (size, note) = self.published_checkpoint()?;
        if index >= size {
            return Err(StorageError::NotFound(format!("entry {index} in a published tree")));
        }
        let empty = HashMap::new();
        let reader = Reader { storage: &*self.storage, overlay: &empty };
        let hashes = tlog_tiles::prove_record(size, index, &reader).map_err(corrupt)?;
        Ok(TlogProof { index, hashes, checkpoint: note })
    }

    /// The consistency proof from the tree of `old` entries to the newest published checkpoint.
    pub fn consistency(&self, old: u64) -> Result<(Vec<Hash>, Vec<u8>), StorageError> {
        let (size, note) = self.published_checkpoint()?;
        if old == 0 || old > size {
            return Err(StorageError::NotFound(format!("a tree of {old} entries")));
        }
        let empty = HashMap::new();
        let reader = Reader { storage: &*self.storage, overlay: &empty };
        let proof = tlog_tiles::prove_tree(size, old, &reader).map_err(corrupt)?;
        Ok((proof, note))
    }

    /// The published files (`checkpoint`, `tile/...`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
