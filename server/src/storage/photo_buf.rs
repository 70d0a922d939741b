//! [`PhotoBuf`]: a photo's bytes in memory, laid out so that storage can write them to a file
//! without the page cache (`O_DIRECT`), from a small pool of reused buffers ([`BufPool`], one
//! per app, in its state).
//!
//! A large photo that arrives whole is received into one of these and written once, by its
//! commit. Two costs of an ordinary `Vec` are avoided, both measured by `scripts/bench ingest`:
//! faulting in fresh memory for each 4 MB body (the pool keeps a few buffers warm), and copying
//! the photo into the page cache and writing it back from there on `fsync` (the bytes start on a
//! page boundary and the buffer has room to pad them to whole pages, which `O_DIRECT` requires).
//! Everything here is safe code: the alignment is an offset into an ordinary `Vec` whose
//! allocation never moves while it is used.

use std::fs::File;
#[cfg(target_os = "linux")]
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::ops::Deref;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The alignment and size granule of direct I/O: a page (a multiple of every block size in use).
const PAGE: usize = 4096;

/// Buffers of at least this capacity go back to the pool when dropped.
const POOLED_MIN: usize = 256 * 1024;

/// Most bytes of capacity the pool keeps while nobody uses them.
const POOL_BYTES: usize = 64 << 20;

/// Idle buffers, for the next photos: one pool per app (its state holds it), so that apps in
/// one process share nothing. Clones share the pool.
#[derive(Clone, Default)]
pub struct BufPool(Arc<Mutex<Vec<Vec<u8>>>>);

impl BufPool {
    /// An empty buffer that takes `len` bytes without moving, page-aligned and with room for
    /// padding to a whole page; from the pool if one there is large enough. It goes back to
    /// the pool when dropped.
    pub fn with_capacity(&self, len: usize) -> PhotoBuf {
        let need = round_up(len) + PAGE;
        // A small photo takes fresh memory: the pool's buffers are for large ones.
        let pooled = (need >= POOLED_MIN).then(|| {
            let mut pool = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let best = pool
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= need)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            best.map(|i| pool.swap_remove(i))
        });
        let mut buf = pooled.flatten().unwrap_or_else(|| Vec::with_capacity(need));
        buf.clear();
        let start = buf.as_ptr().align_offset(PAGE).min(PAGE);
        buf.resize(start, 0);
        PhotoBuf { buf, start, pool: Some(self.clone()) }
    }

    /// Takes back a buffer that is no longer used, if it is large and the pool has room.
    fn give_back(&self, buf: Vec<u8>) {
        if buf.capacity() < POOLED_MIN {
            return;
        }
        let mut pool = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = pool.iter().map(Vec::capacity).sum();
        if held + buf.capacity() <= POOL_BYTES {
            pool.push(buf);
        }
    }
}

/// A photo's bytes. Dereferences to them; see the module documentation.
#[derive(Default)]
pub struct PhotoBuf {
    /// `buf[start..]` are the bytes; `start` puts them on a page boundary if the allocation
    /// allowed it (always, for a buffer from [`BufPool::with_capacity`]).
    buf: Vec<u8>,
    start: usize,
    /// Where the buffer goes back when dropped (none for bytes that came as a `Vec`).
    pool: Option<BufPool>,
}

impl PhotoBuf {
    /// Appends bytes (growing, and losing the alignment, only past the capacity asked for).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The bytes padded with zeros to a whole number of pages, if they start on a page boundary
    /// and the padding fits without moving them.
    fn padded(&mut self) -> Option<&[u8]> {
        let len = self.buf.len() - self.start;
        let end = self.start + round_up(len);
        if self.buf[self.start..].as_ptr().align_offset(PAGE) != 0 || end > self.buf.capacity() {
            return None;
        }
        self.buf.resize(end, 0);
        Some(&self.buf[self.start..])
    }

    /// Writes the bytes to a new file at `path` (replacing one there) and makes it durable
    /// (`fsync`), without the page cache where the file system allows. The file's directory is
    /// not synced. Returns whether the page cache was bypassed.
    pub fn write_durably(mut self, path: &Path) -> io::Result<bool> {
        let len = self.len();
        #[cfg(target_os = "linux")]
        if let Some(padded) = self.padded() {
            match write_direct(path, padded, len as u64) {
                Ok(()) => return Ok(true),
                // Not supported by this file system, or not for this buffer: the usual way.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
            self.buf.truncate(self.start + len);
        }
        let mut file = File::create(path)?;
        file.write_all(&self)?;
        file.sync_all()?;
        Ok(false)
    }
}

/// Writes `padded` (page-aligned, whole pages) to `path` with `O_DIRECT`, cuts the file to `len`
/// and fsyncs it.
#[cfg(target_os = "linux")]
fn write_direct(path: &Path, padded: &[u8], len: u64) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    file.write_all(padded)?;
    file.set_len(len)?;
    file.sync_all()
}

impl Deref for PhotoBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl std::fmt::Debug for PhotoBuf {
    /// The length only: a photo is megabytes, and logs hold no photo.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PhotoBuf({} bytes)", self.len())
    }
}

impl AsRef<[u8]> for PhotoBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<Vec<u8>> for PhotoBuf {
    /// Bytes as they are (not aligned: written through the page cache).
    fn from(buf: Vec<u8>) -> Self {
        Self { buf, start: 0, pool: None }
    }
}

impl Clone for PhotoBuf {
    fn clone(&self) -> Self {
        let mut copy = self.pool.clone().unwrap_or_default().with_capacity(self.len());
        copy.extend_from_slice(self);
        copy
    }
}

impl PartialEq for PhotoBuf {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for PhotoBuf {}

impl Drop for PhotoBuf {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give_back(std::mem::take(&mut self.buf));
        }
    }
}

fn round_up(len: usize) -> usize {
    len.div_ceil(PAGE) * PAGE
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn bytes_start_on_a_page_and_are_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let pool = BufPool::default();
        // Where the file system takes O_DIRECT (ext4, as here), every such buffer bypasses the
        // page cache.
        #[cfg(target_os = "linux")]
        let direct = {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .write(true)
                .create(true)
                .custom_flags(libc::O_DIRECT)
                .open(dir.path().join("probe"))
                .is_ok()
        };
        #[cfg(not(target_os = "linux"))]
        let direct = false;
        for len in [0, 1, 4095, 4096, 4097, 300_000, 4_000_001] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let mut buf = pool.with_capacity(len);
            assert_eq!(buf.as_ptr().align_offset(PAGE), 0);
            for chunk in bytes.chunks(65_536) {
                buf.extend_from_slice(chunk);
            }
            assert_eq!(&*buf, &bytes[..]);
            assert!(buf.clone().padded().is_some(), "{len} bytes fit their padding");
            let path = dir.path().join(format!("photo-{len}"));
            assert_eq!(buf.write_durably(&path).unwrap(), direct, "{len} bytes");
            assert_eq!(fs::read(&path).unwrap(), bytes, "{len} bytes");
        }
    }

    #[test]
    fn unaligned_or_grown_bytes_are_written_the_usual_way() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        // From a Vec: not aligned in general; written whole either way.
        let path = dir.path().join("from-vec");
        let unaligned = PhotoBuf::from(bytes.clone());
        let aligned = unaligned.as_ptr().align_offset(PAGE) == 0;
        assert!(unaligned.write_durably(&path).unwrap() <= aligned);
        assert_eq!(fs::read(&path).unwrap(), bytes);
        // Grown past what it was made for: the allocation moved (direct only if by chance the
        // bytes landed on a page boundary with room for the padding).
        let mut grown = BufPool::default().with_capacity(10);
        grown.extend_from_slice(&bytes);
        let path = dir.path().join("grown");
        grown.write_durably(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), bytes);
        // A file there is replaced.
        PhotoBuf::from(b"short".to_vec()).write_durably(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"short");
    }

    #[test]
    fn the_pool_reuses_buffers_and_hands_them_out_empty() {
        let pool = BufPool::default();
        let mut first = pool.with_capacity(1 << 20);
        first.extend_from_slice(&[9; 1 << 20]);
        let allocation = first.buf.as_ptr();
        drop(first);
        // A small photo does not take a large buffer from the pool.
        let small = pool.with_capacity(2048);
        assert!(small.buf.capacity() < POOLED_MIN);
        // The pool is this test's own: the large buffer comes back, empty and aligned.
        let again = pool.with_capacity(1 << 20);
        assert_eq!(again.buf.as_ptr(), allocation);
        assert!(again.is_empty());
        assert_eq!(format!("{again:?}"), "PhotoBuf(0 bytes)");
        assert_eq!(again.as_ptr().align_offset(PAGE), 0);
        // Another pool (another app in the process) does not get it.
        drop(again);
        assert_ne!(BufPool::default().with_capacity(1 << 20).buf.as_ptr(), allocation);
    }
}
