//! The public log on the server: one integrator thread appends stored captures to the Merkle
//! tree in batches, signs a checkpoint for every new size, commits the new hashes and the
//! checkpoint in one transaction, and only then publishes tiles and the checkpoint as objects
//! (`log/checkpoint`, `log/tile/...`, through the object boundary, `crate::objects`: files
//! under `<data dir>/log/` with the local store, which anyone can mirror with a plain web
//! server, or a bucket). The integrator touches no file itself. A capture's position
//! and entry are stored with the capture itself (`Storage::commit_capture`, commit order): the
//! integrator reads them as a queue keyed by position.
//!
//! Invariant: a checkpoint is published only after it is committed, and the tree it signs is
//! a prefix of every later tree, so no two different checkpoints for one size ever leave the
//! server, whatever moment it is killed at (signatures are deterministic, and entries are
//! appended in the committed order).
//!
//! Speed: the integrator keeps the committed tree's right edge in memory (`Edge`: the roots
//! of its complete subtrees, the incomplete tile of each level and the incomplete entry
//! bundle), so a batch reads nothing but the queued entries: it hashes them, commits hashes and
//! checkpoint, and writes the tiles from memory. Under a backlog, a batch's files are written on
//! a thread of their own while the next batch is read, hashed and committed; the next batch's
//! files wait for them, so checkpoints are still published in order, each after its tiles. The
//! edge is loaded from storage when the log opens and again after any failure, so storage stays
//! the only source of truth.
//!
//! Several servers on one storage (PostgreSQL): one integrates at a time, the holder of the
//! storage's log lease ([`LogLease`]: a PostgreSQL advisory lock held by a connection of its
//! own); the compare-and-swap of [`Storage::append_log`] still fences off a second writer that
//! believes it holds it. The others follow: every [`FOLLOW_INTERVAL`] (and when a receipt waits)
//! each asks storage for the log's size, and when it grew, reads the published checkpoint object
//! and takes it as its own published checkpoint, so its waiting receipts wake and its proofs
//! are against a checkpoint whose tiles are written. Each tries for the lease as it follows, so
//! when the holder dies (its connection closes and PostgreSQL releases the lock), another takes
//! over at its next try (every [`FOLLOW_INTERVAL`]) and publishes whatever the dead one committed but did not
//! publish. Only the holder writes the log's objects. A holder cut off from the database without
//! dying may still finish publishing a batch it committed, and so put back an older checkpoint
//! object until the new holder's next one: a reader then sees an older checkpoint, never another
//! tree, and [`Log::consistency`] answers from the newest this server has seen.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use hattama_core::evidence::Sha256Hash;
use hattama_core::log::{self as tlog, Hash, LogKey, TILE_HEIGHT, TlogProof};
use tlog_tiles::{HashReader, Tile};

use crate::objects::{Mode, ObjectBackend, ObjectError, ObjectKey, PutOptions};
use crate::storage::{LogLease, Storage, StorageError};

/// The object of the newest published checkpoint (mutable: replaced by each newer one).
pub const CHECKPOINT_KEY: &str = "log/checkpoint";

/// The object of a tile: `log/` and its C2SP path (`log/tile/0/x001/234.p/17`).
pub fn tile_key(tile: &Tile) -> Result<ObjectKey, StorageError> {
    ObjectKey::new(format!("log/{}", tlog::tile_path(tile))).map_err(StorageError::from)
}

/// The object of a tile whose C2SP path under `tile/` is `tail` (checked by the caller).
pub fn tile_key_of(tail: &str) -> Result<ObjectKey, StorageError> {
    ObjectKey::new(format!("log/tile/{tail}")).map_err(StorageError::from)
}

fn checkpoint_key() -> Result<ObjectKey, StorageError> {
    ObjectKey::new(CHECKPOINT_KEY).map_err(StorageError::from)
}

/// How long a batch should take: under load, a capture then waits about a second at most for a
/// checkpoint (the batch before its own, then its own). The integrator sizes its batches to this
/// from the rate of the last full batch, between [`MIN_BATCH`] and [`MAX_BATCH`] entries.
const BATCH_TIME: Duration = Duration::from_millis(800);

/// Least time between the starts of two batches (see `Log::start`). Each batch costs the same
/// whatever its size (a signature, a commit, its partial tiles and checkpoint written as new
/// files, every waiting receipt woken): at 5 ms, under a stream of tiny captures, that was
/// about a tenth of the server's CPU. 20 ms adds at most that to a receipt's wait under load,
/// where a receipt waits tens of milliseconds anyway.
const BATCH_INTERVAL: Duration = Duration::from_millis(20);

/// Entries whose tiles are looked over when the server starts ([`Log::repair_recent`]): more
/// than a minute and a half of captures at 3,000 a second, longer than a file system keeps
/// written data unflushed (30 s by default on Linux).
const REPAIR_ENTRIES: u64 = 1 << 18;

/// Fewest entries a batch may be limited to.
const MIN_BATCH: usize = 1 << 12;

/// Most entries integrated in one batch: large batches make the commit's fsync, the partial tiles
/// rewritten at each batch's end, and the index pages the batch dirties cost less per entry.
const MAX_BATCH: usize = 1 << 16;

/// Hashes in a full tile.
const TILE_WIDTH: usize = 1 << TILE_HEIGHT;

/// How often a server that does not integrate looks for a newer published checkpoint and tries
/// for the lease; and how often, on storage shared with other servers, the integrator looks for
/// captures they committed (it is woken at once for those of its own server).
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);

/// How often the integrator confirms that it still holds the lease while it works.
const LEASE_CHECK: Duration = Duration::from_millis(500);

/// The server's log.
pub struct Log {
    storage: Arc<dyn Storage>,
    key: SigningKey,
    /// The log's public identity.
    pub log_key: LogKey,
    /// Where tiles and the checkpoint are published.
    objects: Arc<dyn ObjectBackend>,
    published: Arc<Published>,
    wake: Mutex<bool>,
    wake_changed: Condvar,
    /// The integrator's state, held for the whole of a batch, so batches never overlap.
    integrator: Mutex<Integrator>,
    /// Tile files served lately, by path under `tile/`: they never change once written.
    tiles: Mutex<TileCache>,
    /// When the integrator thread last went round its loop, or was started (ms since the epoch;
    /// 0: never started): `/readyz` calls it dead when that is long ago.
    beat_ms: std::sync::atomic::AtomicU64,
    /// Set by [`Log::stop`]: the integrator (and the witnessing thread) end their loops.
    stopping: std::sync::atomic::AtomicBool,
    /// Stored hashes the receipts' inclusion proofs ask for, without a read of storage.
    recent: Mutex<RecentHashes>,
    /// Whether this server holds the log lease (it integrates and publishes).
    integrating: std::sync::atomic::AtomicBool,
    /// Whether other servers share the storage ([`LogLease::shared`]).
    shared: bool,
}

/// Most hashes kept of the newest committed batches (32 bytes each: 4 MiB).
const RECENT_HASHES: usize = 1 << 17;

/// Most older stored hashes kept, those proofs asked for (the roots of the tree's large
/// subtrees, which every proof of a recent entry asks for).
const OLDER_HASHES: usize = 1 << 12;

/// Stored hashes known from the batches this process committed and from reads: a stored hash
/// never changes once committed, so a copy is always right. Every receipt answered at once
/// carries an inclusion proof of an entry of the newest batches, whose hashes are then all
/// here; without them, each proof read a dozen hash blocks from storage.
#[derive(Default)]
struct RecentHashes {
    /// Stored hashes from index `start` on, as the newest batches committed them.
    start: u64,
    hashes: std::collections::VecDeque<[u8; 32]>,
    /// Older stored hashes read for proofs (emptied when full).
    older: HashMap<u64, [u8; 32]>,
}

impl RecentHashes {
    /// Adds what a batch committed: `hashes` stored from index `first` on.
    fn committed(&mut self, first: u64, hashes: &[[u8; 32]]) {
        if first != self.start + self.hashes.len() as u64 {
            // Not right after the last batch seen (a batch failed, or this is the first).
            self.hashes.clear();
            self.start = first;
        }
        self.hashes.extend(hashes.iter().copied());
        let over = self.hashes.len().saturating_sub(RECENT_HASHES);
        self.hashes.drain(..over);
        self.start += over as u64;
    }

    fn get(&self, index: u64) -> Option<[u8; 32]> {
        let recent = index.checked_sub(self.start).and_then(|i| self.hashes.get(i as usize));
        recent.or_else(|| self.older.get(&index)).copied()
    }
}

/// Reads stored hashes from [`RecentHashes`] first, then from storage (keeping what it read).
struct CachedReader<'a> {
    storage: &'a dyn Storage,
    recent: &'a Mutex<RecentHashes>,
}

impl HashReader for CachedReader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        let known: Vec<Option<[u8; 32]>> = {
            let recent = self.recent.lock().map_err(|_| tlog_tiles::Error::InvalidTile)?;
            indexes.iter().map(|&i| recent.get(i)).collect()
        };
        let missing: Vec<u64> =
            indexes.iter().zip(&known).filter(|(_, h)| h.is_none()).map(|(&i, _)| i).collect();
        let read = if missing.is_empty() {
            Vec::new()
        } else {
            Reader { storage: self.storage }.read_hashes(&missing)?
        };
        let mut read = read.into_iter();
        let mut out = Vec::with_capacity(indexes.len());
        let mut fresh = Vec::with_capacity(missing.len());
        for (&i, h) in indexes.iter().zip(known) {
            match h {
                Some(h) => out.push(Hash(h)),
                None => {
                    let h = read.next().ok_or(tlog_tiles::Error::InvalidTile)?;
                    fresh.push((i, h.0));
                    out.push(h);
                }
            }
        }
        if !fresh.is_empty() {
            let mut recent = self.recent.lock().map_err(|_| tlog_tiles::Error::InvalidTile)?;
            if recent.older.len() + fresh.len() > OLDER_HASHES {
                recent.older.clear();
            }
            recent.older.extend(fresh);
        }
        Ok(out)
    }
}

/// Reads stored hashes from [`RecentHashes`] only, noting whether one was not there.
struct KeptReader<'a> {
    recent: &'a Mutex<RecentHashes>,
    missed: std::cell::Cell<bool>,
}

impl HashReader for KeptReader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        let recent = self.recent.lock().map_err(|_| tlog_tiles::Error::InvalidTile)?;
        let kept: Option<Vec<Hash>> = indexes.iter().map(|&i| recent.get(i).map(Hash)).collect();
        kept.ok_or_else(|| {
            self.missed.set(true);
            tlog_tiles::Error::InvalidTile
        })
    }
}

/// The size of the newest published checkpoint, and a signal when it grows; and that
/// checkpoint, so that a receipt's proof needs no read of it.
///
/// Blocking waiters wait on `changed` under `size`'s lock, which [`Published::set`] holds to
/// change the size before it notifies them, so that no growth is missed between a waiter's look
/// at the size and its wait. Async waiters (receipts answered on the connection's thread) wait
/// on `watch`, which marks each value seen, without holding a thread of the blocking pool.
#[derive(Default)]
struct Published {
    size: Mutex<u64>,
    changed: Condvar,
    watch: tokio::sync::watch::Sender<u64>,
    note: Mutex<Option<(u64, Arc<[u8]>)>>,
    /// Waits that ended by their timeout rather than by a notification (tests only).
    #[cfg(test)]
    timed_out: std::sync::atomic::AtomicUsize,
}

impl Published {
    /// Records a published checkpoint; sizes only grow.
    fn set(&self, size: u64, note: &[u8]) -> Result<(), StorageError> {
        {
            let mut latest = self.note.lock().map_err(corrupt)?;
            if latest.as_ref().is_none_or(|(s, _)| *s < size) {
                *latest = Some((size, note.into()));
            }
        }
        let mut published = self.size.lock().map_err(corrupt)?;
        *published = (*published).max(size);
        self.changed.notify_all();
        drop(published);
        self.watch.send_if_modified(|s| {
            let grew = size > *s;
            *s = (*s).max(size);
            grew
        });
        Ok(())
    }

    /// Wakes every waiter, blocking or not (the log stops).
    fn wake_all(&self) {
        // Under the lock, as `set`: a blocking waiter that has not yet seen `stop` is then
        // waiting already, and is woken.
        if let Ok(_size) = self.size.lock() {
            self.changed.notify_all();
        }
        self.watch.send_modify(|_| {});
    }

    /// Waits (blocking) until the size is above `index`, `stopping()` says to give up, or the
    /// deadline passes; returns whether the size is above `index`. `stopping` is asked under the
    /// size's lock before each wait.
    fn wait_above(
        &self,
        index: u64,
        deadline: Instant,
        stopping: &dyn Fn() -> bool,
    ) -> Result<bool, StorageError> {
        // The size is looked at and waited for under its lock, which `set` takes to change it:
        // a change between the look and the wait cannot go unnoticed.
        let mut size = self.size.lock().map_err(corrupt)?;
        loop {
            if index < *size {
                return Ok(true);
            }
            if stopping() {
                return Ok(false);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let (guard, _waited) =
                self.changed.wait_timeout(size, deadline - now).map_err(corrupt)?;
            #[cfg(test)]
            if _waited.timed_out() {
                self.timed_out.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            size = guard;
        }
    }
}

/// A committed batch's files: its tiles, then its checkpoint.
struct Publication {
    objects: Arc<dyn ObjectBackend>,
    tiles: Vec<(Tile, Vec<u8>)>,
    note: Vec<u8>,
    size: u64,
}

impl Publication {
    fn run(self, published: &Published) -> Result<(), StorageError> {
        write_tiles(&*self.objects, &self.tiles)?;
        self.objects.put(&checkpoint_key()?, &self.note, PutOptions::LATEST)?;
        published.set(self.size, &self.note)
    }
}

/// Fewest entries whose batch publishes its files on a thread of its own, while the next batch
/// is read, hashed and committed (a backlog); smaller batches publish before returning.
const PIPELINED: usize = MIN_BATCH;

/// Most bytes of tile files kept in memory for serving.
const TILE_CACHE_BYTES: usize = 128 << 20;

/// Recently served tile files (immutable), so that a popular tile is served without a file
/// read on the blocking pool. When full, it starts again empty: simple, and bounded.
#[derive(Default)]
struct TileCache {
    files: HashMap<String, actix_web::web::Bytes>,
    bytes: usize,
}

fn corrupt(e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(format!("log: {e}"))
}

/// Reads stored hashes from storage.
struct Reader<'a> {
    storage: &'a dyn Storage,
}

impl HashReader for Reader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        let hashes =
            self.storage.read_log_hashes(indexes).map_err(|_| tlog_tiles::Error::InvalidTile)?;
        if hashes.len() != indexes.len() {
            return Err(tlog_tiles::Error::InvalidTile);
        }
        Ok(hashes.into_iter().map(Hash).collect())
    }
}

/// The right edge of a tree of `size` entries: all a batch needs to append entries, sign the new
/// root and write the new tiles, without reading storage.
#[derive(Clone)]
struct Edge {
    size: u64,
    /// The roots of the tree's maximal complete subtrees, left to right: one per bit set in
    /// `size`, the largest first.
    frontier: Vec<Hash>,
    /// Per tile level, the data of its incomplete tile: fewer than 256 hashes.
    tiles: Vec<Vec<u8>>,
    /// The entry bundle of the incomplete level-0 tile.
    bundle: Vec<u8>,
}

/// What the integrator keeps between batches.
struct Integrator {
    /// The committed tree's right edge; `None` until loaded from storage, and again after a
    /// failure.
    edge: Option<Edge>,
    /// The most entries the next batch takes.
    batch: usize,
    /// The publication of the batch before, still writing its files.
    publishing: Option<std::thread::JoinHandle<Result<(), StorageError>>>,
    /// This server's claim on the right to integrate.
    lease: Box<dyn LogLease>,
    /// When the lease was last confirmed held.
    lease_checked: Option<Instant>,
    /// Whether the tiles of the newest entries were looked over since the server started
    /// ([`Log::repair_recent`]).
    repaired: bool,
}

/// What a batch writes: stored hashes (for storage, from storage index `first_hash` on) and
/// tiles (files, after the commit).
struct Batch {
    first_hash: u64,
    hashes: Vec<[u8; 32]>,
    tiles: Vec<(Tile, Vec<u8>)>,
}

impl Edge {
    /// Reads the edge of the stored tree of `size` entries.
    fn load(storage: &dyn Storage, size: u64) -> Result<Self, StorageError> {
        let read = |indexes: &[u64]| -> Result<Vec<[u8; 32]>, StorageError> {
            let hashes = storage.read_log_hashes(indexes)?;
            if hashes.len() != indexes.len() {
                return Err(corrupt("missing stored hashes"));
            }
            Ok(hashes)
        };
        let frontier =
            read(&tlog_tiles::sub_tree_index(0, size, Vec::new()))?.into_iter().map(Hash).collect();
        let mut tiles = Vec::new();
        let mut level = 0u8;
        while size >> (level * TILE_HEIGHT) > 0 {
            let count = size >> (level * TILE_HEIGHT);
            let start = count - count % TILE_WIDTH as u64;
            let indexes: Vec<u64> = (start..count)
                .map(|j| tlog_tiles::stored_hash_index(level * TILE_HEIGHT, j))
                .collect();
            tiles.push(read(&indexes)?.concat());
            level += 1;
        }
        let start = size - size % TILE_WIDTH as u64;
        let entries = storage.log_entries(start, size)?;
        if entries.len() as u64 != size - start {
            return Err(corrupt("missing entries"));
        }
        let bundle = tlog::entry_bundle(entries.iter().map(Vec::as_slice));
        Ok(Self { size, frontier, tiles, bundle })
    }

    /// The root hash of the tree.
    fn root(&self) -> Hash {
        let mut hashes = self.frontier.iter().rev();
        let Some(mut root) = hashes.next().copied() else { return tlog_tiles::EMPTY_HASH };
        for left in hashes {
            root = tlog_tiles::node_hash(*left, root);
        }
        root
    }

    /// Appends one entry: records the stored hashes it adds (the RFC 6962 leaf hash, then the
    /// root of each subtree it completes, in storage order) and every tile it fills.
    fn append(&mut self, entry: &[u8], batch: &mut Batch) -> Result<(), StorageError> {
        let n = self.size;
        let mut hash = tlog_tiles::record_hash(entry);
        self.bundle.extend_from_slice(&(entry.len() as u16).to_be_bytes());
        self.bundle.extend_from_slice(entry);
        self.push(0, n, hash, batch)?;
        // Each trailing 1 bit of n is a subtree this entry completes.
        let mut level = 0u8;
        while (n >> level) & 1 == 1 {
            let left = self.frontier.pop().ok_or_else(|| corrupt("edge too short"))?;
            hash = tlog_tiles::node_hash(left, hash);
            level += 1;
            self.push(level, n >> level, hash, batch)?;
        }
        self.frontier.push(hash);
        self.size = n + 1;
        Ok(())
    }

    /// Records stored hash `index` of tree level `level`, and puts it in its tile if the level
    /// has tiles.
    fn push(
        &mut self,
        level: u8,
        index: u64,
        hash: Hash,
        batch: &mut Batch,
    ) -> Result<(), StorageError> {
        batch.hashes.push(hash.0);
        if !level.is_multiple_of(TILE_HEIGHT) {
            return Ok(());
        }
        let tile_level = level / TILE_HEIGHT;
        if self.tiles.len() <= usize::from(tile_level) {
            self.tiles.resize(usize::from(tile_level) + 1, Vec::new());
        }
        let data = &mut self.tiles[usize::from(tile_level)];
        if data.len() / 32 != (index % TILE_WIDTH as u64) as usize {
            return Err(corrupt(format!("tile edge of level {tile_level} out of step")));
        }
        data.extend_from_slice(&hash.0);
        if data.len() == TILE_WIDTH * 32 {
            let tile = Tile::new(
                TILE_HEIGHT,
                tile_level,
                index / TILE_WIDTH as u64,
                TILE_WIDTH as u32,
                false,
            );
            batch.tiles.push((tile, std::mem::take(data)));
            if tile_level == 0 {
                let mut bundle = tile;
                bundle.set_is_data();
                batch.tiles.push((bundle, std::mem::take(&mut self.bundle)));
            }
        }
        Ok(())
    }

    /// The partial tiles of the tree after a batch that started at `old` entries: those of the
    /// levels the batch reached (as `Tile::new_tiles`).
    fn partial_tiles(&self, old: u64, out: &mut Vec<(Tile, Vec<u8>)>) {
        for (level, data) in self.tiles.iter().enumerate() {
            let shift = level as u8 * TILE_HEIGHT;
            let width = data.len() / 32;
            if old >> shift == self.size >> shift || width == 0 {
                continue;
            }
            let index = (self.size >> shift) / TILE_WIDTH as u64;
            let tile = Tile::new(TILE_HEIGHT, level as u8, index, width as u32, false);
            out.push((tile, data.clone()));
            if level == 0 {
                let mut bundle = tile;
                bundle.set_is_data();
                out.push((bundle, self.bundle.clone()));
            }
        }
    }
}

/// Writes a tile: immutable (a full tile, or a partial one of a given width, never changes), and
/// derived, so not fsynced. A tile stored with other bytes is a `Conflict`: the stored tree
/// would not be a prefix of this one, and nothing is published over it. Unless the stored copy
/// is torn ([`torn`]): a tile file written just before a power cut may come back short or with
/// blocks of zeros, and is then written again (else the integrator would stop on it for good).
fn write_tile(objects: &dyn ObjectBackend, tile: &Tile, data: &[u8]) -> Result<(), StorageError> {
    let key = tile_key(tile)?;
    match objects.put(&key, data, PutOptions::DERIVED) {
        Err(ObjectError::Conflict(_)) if objects.get_opt(&key)?.is_some_and(|s| torn(&s, data)) => {
            tracing::warn!(tile = %key, "a tile torn by a crash is written again");
            let replace = PutOptions { mode: Mode::Replace, ..PutOptions::DERIVED };
            Ok(objects.put(&key, data, replace)?)
        }
        other => Ok(other?),
    }
}

/// Whether `stored` is `expected` as a crash may leave an unsynced file: no longer, and zeros
/// wherever it differs (cut short, down to empty, or blocks never written). Two different
/// trees' tiles differ in hashes, which are never all zeros.
fn torn(stored: &[u8], expected: &[u8]) -> bool {
    stored.len() <= expected.len() && stored.iter().zip(expected).all(|(s, e)| s == e || *s == 0)
}

/// Writes tiles, on a few threads when there are many (a batch under load writes thousands;
/// creating a file costs the file system far more than writing it, and a bucket answers each
/// PUT after a round trip). Returns once every one is written, so the checkpoint after them
/// never leads to a missing tile.
fn write_tiles(objects: &dyn ObjectBackend, tiles: &[(Tile, Vec<u8>)]) -> Result<(), StorageError> {
    // Many tiles (a large batch) are hashed and written on a few threads; a bucket takes even a
    // few at once, each write waiting on a round trip more than on this machine.
    let threads = if tiles.len() < 64 {
        1
    } else {
        std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 4)
    }
    .max(objects.parallel_writes().min(tiles.len()));
    let write = |part: &[(Tile, Vec<u8>)]| -> Result<(), StorageError> {
        for (tile, data) in part {
            write_tile(objects, tile, data)?;
        }
        Ok(())
    };
    if threads == 1 {
        return write(tiles);
    }
    std::thread::scope(|scope| {
        let parts: Vec<_> = tiles
            .chunks(tiles.len().div_ceil(threads))
            .map(|part| scope.spawn(move || write(part)))
            .collect();
        parts.into_iter().try_for_each(|part| {
            part.join().unwrap_or_else(|_| Err(corrupt("a tile writer panicked")))
        })
    })
}

/// Waits for a publication thread.
fn join(handle: std::thread::JoinHandle<Result<(), StorageError>>) -> Result<(), StorageError> {
    handle.join().unwrap_or_else(|_| Err(corrupt("the log publisher panicked")))
}

impl Log {
    /// Opens the log over `storage`, publishing to `objects`, re-publishing whatever a crash
    /// left unpublished.
    pub fn open(
        storage: Arc<dyn Storage>,
        key: SigningKey,
        origin: &str,
        objects: Arc<dyn ObjectBackend>,
    ) -> Result<Arc<Self>, StorageError> {
        let log_key = LogKey::for_signer(origin, &key).map_err(corrupt)?;
        let mut lease = storage.log_lease()?;
        let shared = lease.shared();
        let leading = match lease.hold() {
            Ok(held) => held,
            // Shared storage out of reach for the lease: follow for now, try again later.
            Err(e) if shared => {
                tracing::warn!(error = %e, "the log lease cannot be had now");
                false
            }
            Err(e) => return Err(e),
        };
        let log = Arc::new(Self {
            storage,
            key,
            log_key,
            objects,
            published: Arc::default(),
            wake: Mutex::new(false),
            wake_changed: Condvar::new(),
            // Before any rate is known, a batch of a size that takes well under a second.
            integrator: Mutex::new(Integrator {
                edge: None,
                batch: MIN_BATCH * 4,
                publishing: None,
                lease,
                lease_checked: leading.then(Instant::now),
                repaired: false,
            }),
            tiles: Mutex::default(),
            beat_ms: std::sync::atomic::AtomicU64::new(0),
            stopping: std::sync::atomic::AtomicBool::new(false),
            recent: Mutex::default(),
            integrating: std::sync::atomic::AtomicBool::new(leading),
            shared,
        });
        if !leading {
            // Published is what the object says; the integrator publishes the rest.
            if let Some((size, note)) = log.published_object()? {
                log.published.set(size, &note)?;
            }
            return Ok(log);
        }
        let from = log.published_object()?.map(|(size, _)| size);
        if let Some((size, note)) = log.storage.latest_checkpoint()? {
            if from != Some(size) {
                log.publish(from.unwrap_or(0).min(size), size, &note)?;
            }
            log.published.set(size, &note)?;
        }
        Ok(log)
    }

    /// The published checkpoint object (size and note), if there is one that verifies.
    fn published_object(&self) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        let Some(note) = self.objects.get_opt(&checkpoint_key()?)? else { return Ok(None) };
        Ok(tlog::verify_checkpoint(&note, &self.log_key).ok().map(|c| (c.size, note)))
    }

    /// Whether this server integrates the log now (it holds the log lease).
    pub fn is_integrating(&self) -> bool {
        self.integrating.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Takes or confirms the log lease (confirmed at most every [`LEASE_CHECK`] while held);
    /// returns whether this server integrates. Whenever that changes, the integrator starts
    /// again from storage: its edge may be that of an earlier tenure.
    fn lead(&self) -> Result<bool, StorageError> {
        let mut state = self.integrator.lock().map_err(corrupt)?;
        let fresh = state.lease_checked.is_some_and(|at| at.elapsed() < LEASE_CHECK);
        let held = if fresh && self.is_integrating() { Ok(true) } else { state.lease.hold() };
        let now = matches!(held, Ok(true));
        if now && !fresh {
            state.lease_checked = Some(Instant::now());
        } else if !now {
            state.lease_checked = None;
        }
        let was = self.integrating.swap(now, std::sync::atomic::Ordering::SeqCst);
        if was != now {
            state.edge = None;
            if let Some(Err(e)) = state.publishing.take().map(join) {
                tracing::warn!(error = %e, "log publication failed; the next integrator redoes it");
            }
            if now {
                tracing::info!("this server holds the log lease: it integrates the log");
            } else {
                tracing::warn!("this server lost the log lease: another one integrates the log");
            }
        }
        held
    }

    /// Takes the checkpoint object as this server's published checkpoint if it is newer; reads
    /// it only when storage says the log grew. What a server that does not integrate does to
    /// keep up, and what any server does before it proves consistency with its newest.
    pub fn follow(&self) -> Result<(), StorageError> {
        let published = self.published_size();
        if self.storage.log_size()? <= published {
            return Ok(());
        }
        if let Some((size, note)) = self.published_object()?
            && size > published
        {
            self.published.set(size, &note)?;
        }
        Ok(())
    }

    /// Starts the integrator thread. It runs until [`Log::stop`]; join the handle after that.
    pub fn start(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        // Its idle time counts from now until its first round, which a busy machine may delay
        // past the first `/readyz` (that found it dead when it counted from the epoch).
        self.beat_ms.store(hattama_core::now_ms(), std::sync::atomic::Ordering::Relaxed);
        let log = self.clone();
        std::thread::Builder::new().name("log-integrator".into()).spawn(move || {
            while !log.is_stopping() {
                // A batch gathers whatever was committed while the one before it ran, so batches
                // grow with the load. Batches start at most every BATCH_INTERVAL: a capture
                // arriving after a quiet moment is integrated at once, while under a stream of
                // small commits each batch's fixed costs (a signature, a commit, the partial
                // tiles rewritten) are shared by the captures of a few milliseconds.
                let started = Instant::now();
                log.beat_ms.store(hattama_core::now_ms(), std::sync::atomic::Ordering::Relaxed);
                // Captures other servers commit nobody wakes this one for: look every
                // FOLLOW_INTERVAL when the storage is shared.
                let idle = if log.shared { FOLLOW_INTERVAL } else { Duration::from_secs(1) };
                let rest = || {
                    if let Some(rest) = BATCH_INTERVAL.checked_sub(started.elapsed()) {
                        std::thread::sleep(rest);
                    }
                };
                match log.lead() {
                    Ok(true) => match log.integrate_once() {
                        Ok(0) => log.sleep_until_woken(idle),
                        Ok(_) => rest(),
                        Err(e) => {
                            tracing::error!(error = %e, "log integration failed");
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    },
                    // Following: woken early by a waiting receipt, but at most every
                    // BATCH_INTERVAL.
                    Ok(false) => {
                        if let Err(e) = log.follow() {
                            tracing::warn!(error = %e, "cannot follow the published log");
                        }
                        log.sleep_until_woken(FOLLOW_INTERVAL);
                        rest();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the log lease cannot be had now");
                        log.sleep_until_woken(FOLLOW_INTERVAL);
                        rest();
                    }
                }
            }
            // A publication still running ends before the thread does.
            if let Ok(mut state) = log.integrator.lock()
                && let Some(Err(e)) = state.publishing.take().map(join)
            {
                tracing::warn!(error = %e, "log publication failed; the next start publishes it");
            }
        })
    }

    /// Asks the integrator thread (and whoever waits on the log) to end soon: at the end of
    /// its batch, or at once when idle. Called when the app stops.
    pub fn stop(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake();
        self.published.wake_all();
    }

    /// Whether [`Log::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn sleep_until_woken(&self, timeout: Duration) {
        let Ok(guard) = self.wake.lock() else { return };
        let Ok((mut guard, _)) = self.wake_changed.wait_timeout_while(guard, timeout, |w| !*w)
        else {
            return;
        };
        *guard = false;
    }

    /// Milliseconds since the integrator thread last went round its loop (it does at least
    /// every second when idle) or was started; the time since the epoch if it never started.
    pub fn idle_ms(&self) -> u64 {
        let beat = self.beat_ms.load(std::sync::atomic::Ordering::Relaxed);
        hattama_core::now_ms().saturating_sub(beat)
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
        self.published.size.lock().map(|g| *g).unwrap_or(0)
    }

    /// Integrates up to one batch of stored captures; returns how many.
    pub fn integrate_once(&self) -> Result<usize, StorageError> {
        let mut state = self.integrator.lock().map_err(corrupt)?;
        // On failure the edge stays `None`: the next batch reloads it from storage.
        let loaded = match state.edge.take() {
            Some(e) => e,
            None => {
                // A publication still running ends first; whatever it left undone is redone
                // from storage.
                if let Some(Err(e)) = state.publishing.take().map(join) {
                    tracing::warn!(error = %e, "log publication failed; publishing again");
                }
                let size = self.storage.log_size()?;
                self.publish_missing(size)?;
                if !state.repaired {
                    self.repair_recent(size)?;
                    state.repaired = true;
                }
                Edge::load(&*self.storage, size)?
            }
        };
        let limit = state.batch;
        let started = Instant::now();
        let (done, next, publication) = self.integrate(loaded, limit)?;
        // Checkpoints leave in order: the batch before this one is published first. On any
        // failure from here the edge stays `None`, and the next call publishes from storage.
        if let Some(before) = state.publishing.take() {
            join(before)?;
        }
        match publication {
            Some(p) if done >= PIPELINED => {
                let published = self.published.clone();
                let handle = std::thread::Builder::new()
                    .name("log-publisher".into())
                    .spawn(move || p.run(&published))?;
                state.publishing = Some(handle);
            }
            Some(p) => p.run(&self.published)?,
            None => {}
        }
        state.edge = Some(next);
        if done == limit {
            // A backlog: size the next batch to take about BATCH_TIME.
            let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
            state.batch = ((rate * BATCH_TIME.as_secs_f64()) as usize).clamp(MIN_BATCH, MAX_BATCH);
        }
        Ok(done)
    }

    /// Writes again the tiles of the newest [`REPAIR_ENTRIES`] entries of a log of `size`, once
    /// after the server starts, where unsynced files may have been torn by a power cut: a torn
    /// tile is written again ([`write_tile`]), a whole one only compared.
    fn repair_recent(&self, size: u64) -> Result<(), StorageError> {
        if size == 0 || !self.objects.unsynced_writes_may_tear() {
            return Ok(());
        }
        let Some(note) = self.storage.checkpoint(size)? else { return Ok(()) };
        self.publish(size.saturating_sub(REPAIR_ENTRIES), size, &note)
    }

    /// Publishes what a failed batch committed but did not publish.
    fn publish_missing(&self, size: u64) -> Result<(), StorageError> {
        let published = self.published_size();
        if published >= size {
            return Ok(());
        }
        let (size, note) = self
            .storage
            .latest_checkpoint()?
            .ok_or_else(|| StorageError::NotFound("checkpoint".into()))?;
        self.publish(published.min(size), size, &note)?;
        self.published.set(size, &note)
    }

    /// One batch on top of `edge`, committed; returns how many entries, the new edge and the
    /// files to publish.
    fn integrate(
        &self,
        edge: Edge,
        limit: usize,
    ) -> Result<(usize, Edge, Option<Publication>), StorageError> {
        let started = Instant::now();
        let old = edge.size;
        // The queue: entries stored with their captures, at the positions after the log's end.
        let entries = self.storage.log_entries(old, old + limit as u64)?;
        if entries.is_empty() {
            return Ok((0, edge, None));
        }
        let read = started.elapsed();
        let mut next = edge;
        let mut batch = Batch {
            first_hash: tlog_tiles::stored_hash_index(0, old),
            hashes: Vec::with_capacity(entries.len() * 2 + 64),
            tiles: Vec::new(),
        };
        for e in &entries {
            next.append(e, &mut batch)?;
        }
        next.partial_tiles(old, &mut batch.tiles);
        let size = next.size;
        let note = tlog::sign_checkpoint(&self.log_key.origin, size, &next.root(), &self.key)
            .map_err(corrupt)?;
        let hashed = started.elapsed();
        // Fails, and changes nothing, unless the stored log is `old` entries long: the edge was
        // that of the stored tree.
        self.storage.append_log(old, size, batch.first_hash, &batch.hashes, &note)?;
        self.recent.lock().map_err(corrupt)?.committed(batch.first_hash, &batch.hashes);
        let committed = started.elapsed();
        hattama_core::hooks::pause("log:after-commit");
        tracing::info!(
            entries = entries.len(),
            size,
            read_ms = read.as_millis() as u64,
            hash_ms = (hashed - read).as_millis() as u64,
            commit_ms = (committed - hashed).as_millis() as u64,
            "log integrated"
        );
        let publication =
            Publication { objects: self.objects.clone(), tiles: batch.tiles, note, size };
        Ok((entries.len(), next, Some(publication)))
    }

    /// Writes the tiles that change between `old` and `new` entries, reading them from storage,
    /// then the checkpoint: what a crash or a failure left unpublished.
    fn publish(&self, old: u64, new: u64, note: &[u8]) -> Result<(), StorageError> {
        let reader = Reader { storage: &*self.storage };
        for tile in Tile::new_tiles(TILE_HEIGHT, old, new) {
            let data = tile.read_data(&reader).map_err(corrupt)?;
            write_tile(&*self.objects, &tile, &data)?;
            if tile.level() == 0 {
                let start = tile.level_index() << TILE_HEIGHT;
                let entries = self.storage.log_entries(start, start + u64::from(tile.width()))?;
                let mut data_tile = tile;
                data_tile.set_is_data();
                let bundle = tlog::entry_bundle(entries.iter().map(Vec::as_slice));
                write_tile(&*self.objects, &data_tile, &bundle)?;
            }
        }
        self.objects.put(&checkpoint_key()?, note, PutOptions::LATEST)?;
        Ok(())
    }

    /// Waits (blocking) until the capture is in a published checkpoint; returns its index, or
    /// `None` if that did not happen within `timeout`.
    pub fn wait_logged(
        &self,
        id: &Sha256Hash,
        timeout: Duration,
    ) -> Result<Option<u64>, StorageError> {
        // Given when the capture was committed; it never changes.
        let Some(index) = self.storage.log_index(id)? else { return Ok(None) };
        Ok(self.wait_published(index, timeout)?.then_some(index))
    }

    /// Waits (blocking) until the entry at `index` is in a published checkpoint; returns whether
    /// that happened within `timeout` (`false` at once if the log stops).
    pub fn wait_published(&self, index: u64, timeout: Duration) -> Result<bool, StorageError> {
        let deadline = Instant::now() + timeout;
        if index < self.published_size() {
            return Ok(true);
        }
        self.wake();
        self.published.wait_above(index, deadline, &|| self.is_stopping())
    }

    /// [`Log::wait_published`] for async code: the task waits, no thread does.
    pub async fn published_within(&self, index: u64, timeout: Duration) -> bool {
        if index < self.published_size() {
            return true;
        }
        self.wake();
        let mut published = self.published.watch.subscribe();
        let waited = tokio::time::timeout(
            timeout,
            published.wait_for(|&size| index < size || self.is_stopping()),
        )
        .await;
        matches!(waited, Ok(Ok(size)) if index < *size)
    }

    /// The newest published checkpoint: size and signed note.
    pub fn published_checkpoint(&self) -> Result<(u64, Vec<u8>), StorageError> {
        let size = self.published_size();
        if let Some((s, note)) = self.published.note.lock().map_err(corrupt)?.as_ref()
            && *s == size
        {
            return Ok((size, note.to_vec()));
        }
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
        let reader = CachedReader { storage: &*self.storage, recent: &self.recent };
        let hashes = tlog_tiles::prove_record(size, index, &reader).map_err(corrupt)?;
        Ok(TlogProof { index, hashes, checkpoint: note })
    }

    /// [`Log::inclusion`] from the hashes kept in memory only (those of the newest batches and
    /// of older proofs), so without a blocking read of storage: what a receipt of a capture just
    /// logged needs. `None` if a hash of the proof is not kept.
    pub fn inclusion_kept(&self, index: u64) -> Result<Option<TlogProof>, StorageError> {
        // The checkpoint kept is published (its files are written before it is kept).
        let Some((size, note)) = self.published.note.lock().map_err(corrupt)?.clone() else {
            return Ok(None);
        };
        if index >= size {
            return Ok(None);
        }
        let reader = KeptReader { recent: &self.recent, missed: std::cell::Cell::new(false) };
        match tlog_tiles::prove_record(size, index, &reader) {
            Ok(hashes) => Ok(Some(TlogProof { index, hashes, checkpoint: note.to_vec() })),
            Err(_) if reader.missed.get() => Ok(None),
            Err(e) => Err(corrupt(e)),
        }
    }

    /// The consistency proof from the tree of `old` entries to the newest published checkpoint,
    /// at least as new as every checkpoint a server sharing the storage handed out before (the
    /// device asking may hold one from another server: [`Log::follow`] first).
    pub fn consistency(&self, old: u64) -> Result<(Vec<Hash>, Vec<u8>), StorageError> {
        self.follow()?;
        let (size, note) = self.published_checkpoint()?;
        if old == 0 || old > size {
            return Err(StorageError::NotFound(format!("a tree of {old} entries")));
        }
        let reader = Reader { storage: &*self.storage };
        let proof = tlog_tiles::prove_tree(size, old, &reader).map_err(corrupt)?;
        Ok((proof, note))
    }

    /// The consistency proof from the tree of `old` entries to that of `new` (both committed).
    pub fn prove_consistency(&self, old: u64, new: u64) -> Result<Vec<Hash>, StorageError> {
        let reader = Reader { storage: &*self.storage };
        tlog_tiles::prove_tree(new, old, &reader).map_err(corrupt)
    }

    /// Where the log is published ([`CHECKPOINT_KEY`], [`tile_key`]).
    pub fn objects(&self) -> &Arc<dyn ObjectBackend> {
        &self.objects
    }

    /// A tile file (`tail`: its path under `tile/`, already checked) as served lately.
    pub fn cached_tile(&self, tail: &str) -> Option<actix_web::web::Bytes> {
        self.tiles.lock().ok()?.files.get(tail).cloned()
    }

    /// Keeps a tile file read for serving. Only for files that exist: tiles never change.
    pub fn cache_tile(&self, tail: String, data: actix_web::web::Bytes) {
        let Ok(mut cache) = self.tiles.lock() else { return };
        if cache.bytes + data.len() > TILE_CACHE_BYTES {
            *cache = TileCache::default();
        }
        cache.bytes += data.len();
        cache.files.insert(tail, data);
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use hattama_core::log::{ENTRY_VERSION, LogEntry};
    use rusqlite::params;

    use std::path::Path;

    use super::*;
    use crate::objects::LocalObjects;
    use crate::storage::SqliteStorage;

    fn objects(dir: &Path) -> Arc<dyn ObjectBackend> {
        Arc::new(LocalObjects::new(dir).unwrap())
    }

    /// A data directory with `n` queued entries (as [`queue`] gives them) and its storage.
    fn queued(n: u64) -> (tempfile::TempDir, Vec<Vec<u8>>, Arc<dyn Storage>) {
        let dir = tempfile::tempdir().unwrap();
        let entries = queue(dir.path(), n);
        let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(dir.path(), false).unwrap());
        (dir, entries, storage)
    }

    /// The log of `storage` in `dir`, opened as a starting server opens it.
    fn open_log(dir: &Path, storage: &Arc<dyn Storage>) -> Arc<Log> {
        let key = SigningKey::from_bytes(&[9; 32]);
        Log::open(storage.clone(), key, "test.local/log", objects(dir)).unwrap()
    }

    /// `n` stored captures with their queued entries, written straight into the database.
    fn queue(dir: &Path, n: u64) -> Vec<Vec<u8>> {
        drop(SqliteStorage::open(dir, false).unwrap());
        let mut conn = rusqlite::Connection::open(dir.join("hattama-server.sqlite3")).unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute(
            "INSERT INTO elections (id, definition, imported_at_ms) VALUES ('e1', x'7b7d', 1)",
            [],
        )
        .unwrap();
        tx.execute("INSERT INTO devices VALUES ('d1', x'01', 'e1', 1, NULL)", []).unwrap();
        let mut entries = Vec::new();
        for i in 0..n {
            let e = LogEntry {
                capture_id: Sha256Hash::of(&i.to_le_bytes()),
                election: "e1".into(),
                photo_sha256: Sha256Hash::of(&(i + n).to_le_bytes()),
                precinct: format!("p{}", i % 5),
                received_at_ms: 1_760_000_000_000 + i,
                v: ENTRY_VERSION,
            };
            tx.execute(
                "INSERT INTO captures VALUES (?1, 'd1', ?2, 'e1', ?3, x'6d', x'73', ?4, 1,
                    'image/jpeg', ?5, x'72', ?2)",
                params![
                    e.capture_id.to_hex(),
                    i as i64,
                    e.precinct,
                    e.photo_sha256.to_hex(),
                    e.received_at_ms as i64
                ],
            )
            .unwrap();
            tx.execute("INSERT INTO log_entries VALUES (?1, ?2)", params![i as i64, e.to_bytes()])
                .unwrap();
            entries.push(e.to_bytes());
        }
        tx.commit().unwrap();
        entries
    }

    /// The RFC 6962 root of the entries, computed here without the log's code.
    fn root(entries: &[Vec<u8>]) -> Hash {
        let mut stack: Vec<Hash> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let mut h = tlog_tiles::record_hash(e);
            let mut size = i + 1;
            while size & 1 == 0 {
                h = tlog_tiles::node_hash(stack.pop().unwrap(), h);
                size >>= 1;
            }
            stack.push(h);
        }
        let mut root = stack.pop().unwrap();
        while let Some(l) = stack.pop() {
            root = tlog_tiles::node_hash(l, root);
        }
        root
    }

    #[test]
    fn a_checkpoint_published_between_a_waiters_look_and_its_wait_wakes_the_waiter() {
        let published = Arc::new(Published::default());
        published.set(5, b"five").unwrap();
        // Right after the waiter's look at the size (entry 5 is not published yet), where it
        // asks whether to give up, another thread publishes the checkpoint it waits for and is
        // given every chance to finish before the waiter goes on to wait.
        let setter = Mutex::new(None);
        let stopping = || {
            let mut setter = setter.lock().unwrap();
            if setter.is_none() {
                let p = published.clone();
                *setter = Some(std::thread::spawn(move || p.set(6, b"six").unwrap()));
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        assert!(published.wait_above(5, deadline, &stopping).unwrap());
        setter.lock().unwrap().take().unwrap().join().unwrap();
        // Woken by that publication, not by a timeout.
        assert_eq!(published.timed_out.load(std::sync::atomic::Ordering::SeqCst), 0);
        // Already published: no wait at all; not published by the deadline: `false`.
        assert!(published.wait_above(5, Instant::now(), &|| false).unwrap());
        let soon = Instant::now() + Duration::from_millis(10);
        assert!(!published.wait_above(6, soon, &|| false).unwrap());
        assert!(!published.wait_above(6, deadline, &|| true).unwrap(), "stopping");
    }

    #[test]
    fn async_waiters_see_every_publication_and_the_stop() {
        let (dir, _, storage) = queued(3);
        let log = open_log(dir.path(), &storage);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            let long = Duration::from_secs(30);
            // Entry 2 is not logged yet: the waiter is woken by the batch that logs it.
            let waiter = log.published_within(2, long);
            let integrate = async {
                tokio::task::yield_now().await;
                assert_eq!(log.integrate_once().unwrap(), 3);
            };
            let (logged, ()) = tokio::join!(waiter, integrate);
            assert!(logged);
            assert!(log.published_within(0, Duration::ZERO).await, "published already");
            assert!(!log.published_within(3, Duration::from_millis(10)).await, "not by then");
            // A stop wakes a waiter, which gives up.
            let waiter = log.published_within(3, long);
            let stop = async {
                tokio::task::yield_now().await;
                log.stop();
            };
            let (logged, ()) = tokio::join!(waiter, stop);
            assert!(!logged);
        });
        // The proof from the kept hashes is the one read from storage.
        let kept = log.inclusion_kept(1).unwrap().expect("the batch's hashes are kept");
        assert_eq!(kept.hashes, log.inclusion(1).unwrap().hashes);
    }

    #[test]
    fn large_batches_publish_on_their_own_thread_in_order_and_every_file_is_right() {
        let n = 3 * PIPELINED as u64 + 1000;
        let (dir, entries, storage) = queued(n);
        let log = open_log(dir.path(), &storage);
        // Batches of at least PIPELINED entries: each publishes on its own thread while the next
        // one is committed; published sizes only grow, one checkpoint per batch.
        log.integrator.lock().unwrap().batch = PIPELINED;
        let mut sizes = Vec::new();
        loop {
            let done = log.integrate_once().unwrap();
            if done == 0 {
                break;
            }
            sizes.push(log.published_size());
        }
        assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
        // Nothing left to do means everything is published.
        assert_eq!(log.published_size(), n);
        let checkpoint = tlog::verify_checkpoint(
            &fs::read(dir.path().join("log/checkpoint")).unwrap(),
            &log.log_key,
        )
        .unwrap();
        assert_eq!((checkpoint.size, checkpoint.root), (n, root(&entries)));
        // The first batch took PIPELINED entries, the next ones (sized to the rate) the rest.
        assert!(sizes.len() >= 2, "{sizes:?}");
        for size in [PIPELINED as u64, n] {
            assert!(storage.checkpoint(size).unwrap().is_some(), "checkpoint of {size}");
        }
        let reader = Reader { storage: &*storage };
        for tile in Tile::new_tiles(TILE_HEIGHT, 0, n) {
            let file = fs::read(dir.path().join("log").join(tlog::tile_path(&tile))).unwrap();
            assert_eq!(file, tile.read_data(&reader).unwrap(), "{}", tlog::tile_path(&tile));
            if tile.level() == 0 {
                let start = (tile.level_index() << TILE_HEIGHT) as usize;
                let want = tlog::entry_bundle(
                    entries[start..start + tile.width() as usize].iter().map(Vec::as_slice),
                );
                let mut bundle = tile;
                bundle.set_is_data();
                let file = dir.path().join("log").join(tlog::tile_path(&bundle));
                assert_eq!(fs::read(file).unwrap(), want);
            }
        }
    }

    #[test]
    fn tiles_torn_by_a_crash_are_written_again_but_a_tile_of_another_tree_stops_publication() {
        let n = 300;
        let (dir, _, storage) = queued(n);
        let log = open_log(dir.path(), &storage);
        while log.integrate_once().unwrap() > 0 {}
        let (size, note) = storage.latest_checkpoint().unwrap().unwrap();
        assert_eq!(size, n);
        let tile = dir.path().join("log/tile/0/000");
        let bundle = dir.path().join("log/tile/entries/000");
        let (tile_bytes, bundle_bytes) = (fs::read(&tile).unwrap(), fs::read(&bundle).unwrap());
        assert_eq!(tile_bytes.len(), 256 * 32, "a full tile");

        // As a power cut may leave them: a block never written (zeros), a file cut to nothing.
        let mut zeroed = tile_bytes.clone();
        zeroed[4096..].fill(0);
        fs::write(&tile, &zeroed).unwrap();
        fs::write(&bundle, b"").unwrap();
        log.publish(0, size, &note).unwrap();
        assert_eq!(fs::read(&tile).unwrap(), tile_bytes);
        assert_eq!(fs::read(&bundle).unwrap(), bundle_bytes);

        // Other hashes at the same place: another tree's tile, which nothing overwrites.
        let mut forked = tile_bytes.clone();
        forked[100] ^= 0x5a;
        fs::write(&tile, &forked).unwrap();
        let e = log.publish(0, size, &note).unwrap_err();
        assert!(e.to_string().contains("conflict"), "{e}");
        assert_eq!(fs::read(&tile).unwrap(), forked);
    }

    #[test]
    fn a_started_integrator_writes_again_the_torn_tiles_of_the_newest_entries() {
        let (dir, _, storage) = queued(300);
        let log = open_log(dir.path(), &storage);
        while log.integrate_once().unwrap() > 0 {}
        drop(log);
        let tile = dir.path().join("log/tile/0/000");
        let whole = fs::read(&tile).unwrap();
        // Everything was published before the power cut; the full tile came back as zeros.
        fs::write(&tile, vec![0; whole.len()]).unwrap();
        let log = open_log(dir.path(), &storage);
        assert_eq!(log.integrate_once().unwrap(), 0, "nothing new to integrate");
        assert_eq!(fs::read(&tile).unwrap(), whole);
    }

    #[test]
    fn inclusion_proofs_from_the_kept_hashes_are_those_read_from_storage() {
        let n = 700;
        let (dir, entries, storage) = queued(n);
        let log = open_log(dir.path(), &storage);
        // Small batches of uneven sizes, a proof of every published entry after each, as
        // receipts ask: each from the kept hashes as far as they go, checked against storage.
        let reader = Reader { storage: &*storage };
        let mut batch = 1;
        while log.published_size() < n {
            log.integrator.lock().unwrap().batch = batch;
            assert!(log.integrate_once().unwrap() > 0);
            batch = batch * 3 % 97 + 1;
            let size = log.published_size();
            for index in (0..size).rev().take(40) {
                let proof = log.inclusion(index).unwrap();
                let want = tlog_tiles::prove_record(size, index, &reader).unwrap();
                assert_eq!(proof.hashes, want, "entry {index} of {size}");
            }
        }
        assert!(!log.recent.lock().unwrap().hashes.is_empty());
        // A log opened again (a restart) has no batch of its own: its proofs read the hashes
        // from storage and keep them. Every proof of the final tree verifies against its root,
        // from both.
        let again = open_log(dir.path(), &storage);
        let root = root(&entries);
        for log in [&log, &again] {
            for index in 0..n {
                let proof = log.inclusion(index).unwrap();
                let leaf = tlog_tiles::record_hash(&entries[index as usize]);
                tlog_tiles::check_record(&proof.hashes, n, root, index, leaf).unwrap();
            }
        }
        let kept = again.recent.lock().unwrap();
        assert!(kept.hashes.is_empty() && !kept.older.is_empty());
    }
}
