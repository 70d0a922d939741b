//! The panic wipe: a store made unreadable at once, then removed.
//!
//! First the crypto-erase: `store.key`, the only copy of the sealed data key, is overwritten in
//! place with random bytes, fsynced and removed; from then on nothing in the directory can be
//! read with any key, even from blocks the flash keeps after the files are gone. Then every
//! file and the directory itself are removed. It needs no key: it is pressed when the phone is
//! about to be taken, perhaps before the app was unlocked.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use super::blobs::fsync_dir;
use super::crypt::KEY_FILE;
use super::{DB_FILE, StoreError};
use crate::hooks;

/// What a wipe did and how long it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wiped {
    /// Time until the store was unreadable (the crypto-erase).
    pub erased_after: Duration,
    /// Time until every file was removed.
    pub removed_after: Duration,
}

/// Overwrites a file in place with random bytes and fsyncs it; `false` if it is not there.
fn overwrite(path: &Path) -> io::Result<bool> {
    let mut file = match OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut left = file.metadata()?.len();
    let mut noise = vec![0u8; 64 * 1024];
    while left > 0 {
        let n = left.min(noise.len() as u64) as usize;
        rand::Rng::fill(&mut rand::thread_rng(), &mut noise[..n]);
        file.write_all(&noise[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(true)
}

/// Wipes the store in `dir`: crypto-erase first, then removes the directory. A missing
/// directory is already wiped. A store of a version before encryption has no key to destroy:
/// its database files are overwritten in place instead.
pub fn wipe(dir: &Path) -> Result<Wiped, StoreError> {
    let start = Instant::now();
    if !dir.exists() {
        return Ok(Wiped { erased_after: Duration::ZERO, removed_after: Duration::ZERO });
    }
    if overwrite(&dir.join(KEY_FILE))? {
        fs::remove_file(dir.join(KEY_FILE))?;
    } else {
        for suffix in ["", "-wal", "-journal"] {
            overwrite(&dir.join(format!("{DB_FILE}{suffix}")))?;
        }
    }
    fsync_dir(dir)?;
    let erased_after = start.elapsed();
    hooks::pause("wipe:after-erase");
    // Another thread or process of the app may still be writing: try again a few times.
    let mut attempt = 0;
    loop {
        match fs::remove_dir_all(dir) {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) if attempt < 3 => {
                attempt += 1;
                tracing::warn!(attempt, error = %e, "wipe: removing the store again");
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(parent) = dir.parent() {
        let _ = fsync_dir(parent);
    }
    tracing::info!(erased_ms = erased_after.as_millis() as u64, "store wiped");
    Ok(Wiped { erased_after, removed_after: start.elapsed() })
}
