//! Photo files: `blobs/<name>`, sealed, one per photo, and cached thumbnails `thumbs/<name>`.
//!
//! Every file is sealed (XChaCha20-Poly1305, [`Keys::seal`]) before it is written, temp files
//! included, and named by a keyed hash of the photo's SHA-256 (or of the capture id, for a
//! thumbnail), so a file's name and bytes tell nothing without the store key.
//! A blob is written to `tmp/`, fsynced, renamed into place, and the `blobs/` directory is
//! fsynced, so after a crash a blob is either absent or complete. Files are never modified in
//! place. What the database references is decided by the database; [`BlobDir::remove_unreferenced`]
//! removes the rest during recovery.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::crypt::{Keys, OVERHEAD};
use crate::evidence::Sha256Hash;

/// The blob and temp directories of a store.
#[derive(Debug, Clone)]
pub struct BlobDir {
    blobs: PathBuf,
    tmp: PathBuf,
    thumbs: PathBuf,
    keys: Arc<Keys>,
}

pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` durably to `path` through a temp file in `tmp` (same file system).
pub fn write_durably(tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = format!("{}.part", hex::encode(rand::random::<[u8; 8]>()));
    let tmp_path = tmp.join(name);
    let result = (|| {
        let mut f = File::create(&tmp_path)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        crate::hooks::pause("blob:after-temp-write");
        fs::rename(&tmp_path, path)?;
        crate::hooks::pause("blob:after-rename");
        fsync_dir(path.parent().unwrap_or(Path::new(".")))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    result
}

/// Creates the blob directories under `root` (nothing else).
pub fn create_dirs(root: &Path) -> io::Result<()> {
    for d in ["blobs", "tmp", "thumbs"] {
        fs::create_dir_all(root.join(d))?;
    }
    fsync_dir(root)
}

impl BlobDir {
    /// Opens (creating if needed) the blob directories under `root`, sealing with `keys`.
    pub fn open(root: &Path, keys: Arc<Keys>) -> io::Result<Self> {
        create_dirs(root)?;
        Ok(Self {
            blobs: root.join("blobs"),
            tmp: root.join("tmp"),
            thumbs: root.join("thumbs"),
            keys,
        })
    }

    fn name(&self, hash: &Sha256Hash) -> String {
        self.keys.name("photo", hash)
    }

    fn thumb_name(&self, capture_id: &Sha256Hash) -> String {
        self.keys.name("thumb", capture_id)
    }

    /// Where the blob of the photo with this hash lives.
    pub fn path(&self, hash: &Sha256Hash) -> PathBuf {
        self.blobs.join(self.name(hash))
    }

    /// Where a capture's cached thumbnail lives.
    pub fn thumb_path(&self, capture_id: &Sha256Hash) -> PathBuf {
        self.thumbs.join(self.thumb_name(capture_id))
    }

    /// The temp directory (same file system as the blobs).
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// Stores the photo `bytes` (sealed) under their hash unless a complete copy is already
    /// there.
    pub fn put(&self, hash: &Sha256Hash, bytes: &[u8]) -> io::Result<()> {
        let name = self.name(hash);
        let path = self.blobs.join(&name);
        if let Ok(meta) = fs::metadata(&path)
            && meta.len() == bytes.len() as u64 + OVERHEAD
        {
            return Ok(());
        }
        write_durably(&self.tmp, &path, &self.keys.seal(&name, bytes)?)
    }

    /// Reads a photo.
    pub fn get(&self, hash: &Sha256Hash) -> io::Result<Vec<u8>> {
        let name = self.name(hash);
        self.keys.open(&name, fs::read(self.blobs.join(&name))?)
    }

    /// Whether the photo with this hash is on this device.
    pub fn has(&self, hash: &Sha256Hash) -> bool {
        self.path(hash).exists()
    }

    /// A capture's cached thumbnail, if there is one.
    pub fn get_thumb(&self, capture_id: &Sha256Hash) -> io::Result<Option<Vec<u8>>> {
        let name = self.thumb_name(capture_id);
        match fs::read(self.thumbs.join(&name)) {
            Ok(sealed) => Ok(Some(self.keys.open(&name, sealed)?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Keeps a capture's thumbnail (sealed, written durably).
    pub fn put_thumb(&self, capture_id: &Sha256Hash, thumb: &[u8]) -> io::Result<()> {
        let name = self.thumb_name(capture_id);
        write_durably(&self.tmp, &self.thumbs.join(&name), &self.keys.seal(&name, thumb)?)
    }

    /// Removes a blob and its directory entry durably. A missing blob is not an error.
    pub fn remove(&self, hash: &Sha256Hash) -> io::Result<()> {
        match fs::remove_file(self.path(hash)) {
            Ok(()) => fsync_dir(&self.blobs),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes a capture's cached thumbnail, if any.
    pub fn remove_thumb(&self, capture_id: &Sha256Hash) -> io::Result<()> {
        match fs::remove_file(self.thumb_path(capture_id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Total bytes of blobs and thumbnails.
    pub fn bytes_used(&self) -> io::Result<u64> {
        let mut total = 0;
        for dir in [&self.blobs, &self.thumbs] {
            for entry in fs::read_dir(dir)? {
                total += entry?.metadata()?.len();
            }
        }
        Ok(total)
    }

    /// Recovery after a crash: removes temp files, blobs of photos not in `referenced`, and
    /// thumbnails of captures not in `live_captures`. Returns how many files were removed.
    /// The caller must hold the store's write lock, so that no capture is in flight.
    pub fn remove_unreferenced(
        &self,
        referenced: &HashSet<Sha256Hash>,
        live_captures: &HashSet<Sha256Hash>,
    ) -> io::Result<usize> {
        let referenced: HashSet<String> = referenced.iter().map(|h| self.name(h)).collect();
        let live_captures: HashSet<String> =
            live_captures.iter().map(|id| self.thumb_name(id)).collect();
        let mut removed = 0;
        for entry in fs::read_dir(&self.tmp)? {
            fs::remove_file(entry?.path())?;
            removed += 1;
        }
        for entry in fs::read_dir(&self.blobs)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !referenced.contains(&name) {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        for entry in fs::read_dir(&self.thumbs)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !live_captures.contains(&name) {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        if removed > 0 {
            fsync_dir(&self.blobs)?;
        }
        Ok(removed)
    }
}
