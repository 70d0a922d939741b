//! Content-addressed photo files: `blobs/<sha256 hex>`.
//!
//! A blob is written to `tmp/`, fsynced, renamed into place, and the `blobs/` directory is
//! fsynced, so after a crash a blob is either absent or complete. Files are never modified in
//! place. What the database references is decided by the database; [`BlobDir::remove_unreferenced`]
//! removes the rest during recovery.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::evidence::Sha256Hash;

/// The blob and temp directories of a store.
#[derive(Debug, Clone)]
pub struct BlobDir {
    blobs: PathBuf,
    tmp: PathBuf,
    thumbs: PathBuf,
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
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

impl BlobDir {
    /// Opens (creating if needed) the blob directories under `root`.
    pub fn open(root: &Path) -> io::Result<Self> {
        let dir =
            Self { blobs: root.join("blobs"), tmp: root.join("tmp"), thumbs: root.join("thumbs") };
        for d in [&dir.blobs, &dir.tmp, &dir.thumbs] {
            fs::create_dir_all(d)?;
        }
        fsync_dir(root)?;
        Ok(dir)
    }

    /// Where the blob with this hash lives.
    pub fn path(&self, hash: &Sha256Hash) -> PathBuf {
        self.blobs.join(hash.to_hex())
    }

    /// Where a capture's cached thumbnail lives.
    pub fn thumb_path(&self, capture_id: &Sha256Hash) -> PathBuf {
        self.thumbs.join(format!("{}.jpg", capture_id.to_hex()))
    }

    /// The temp directory (same file system as the blobs).
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// Stores `bytes` under their hash unless a complete copy is already there.
    pub fn put(&self, hash: &Sha256Hash, bytes: &[u8]) -> io::Result<()> {
        let path = self.path(hash);
        if let Ok(meta) = fs::metadata(&path)
            && meta.len() == bytes.len() as u64
        {
            return Ok(());
        }
        write_durably(&self.tmp, &path, bytes)
    }

    /// Reads a blob.
    pub fn get(&self, hash: &Sha256Hash) -> io::Result<Vec<u8>> {
        fs::read(self.path(hash))
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

    /// Recovery after a crash: removes temp files, blobs whose hash is not in `referenced`, and
    /// thumbnails of captures not in `live_captures`. Returns how many files were removed.
    /// The caller must hold the store's write lock, so that no capture is in flight.
    pub fn remove_unreferenced(
        &self,
        referenced: &HashSet<String>,
        live_captures: &HashSet<String>,
    ) -> io::Result<usize> {
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
            let id = name.strip_suffix(".jpg").unwrap_or(&name);
            if !live_captures.contains(id) {
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
