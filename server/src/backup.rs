//! `hattama-server backup DEST` and `hattama-server restore SRC DIR`: a consistent copy of a
//! running embedded instance (SQLite + files), and a new data directory made from one.
//!
//! A backup holds a copy of the database taken in one read transaction while the server goes
//! on serving (`storage::snapshot`, SQLite's `VACUUM INTO`), the photos stored as files that
//! this copy references (content-addressed: a photo already in DEST from an earlier backup is
//! not copied again), the log's published files (checkpoint and tiles), the server's keys only
//! with `--with-keys`, and `manifest.json`: every file's path, size and SHA-256, the public
//! keys, the number of captures and the log size. The manifest is written last, so a backup
//! cut short has none and is refused by `restore`.
//!
//! Order matters for consistency: the log's files are copied *before* the database, so they
//! describe a prefix of the copied log (the server publishes a checkpoint only after
//! committing it); a restored server publishes what they lack at start-up. Photos are copied
//! *after* the database, so every photo it references exists (photos are durable before their
//! capture commits and are never removed).
//!
//! `restore` checks everything before it writes anything: every file of the manifest present
//! with its size and hash, every photo named by its own hash, the database's integrity, its
//! captures and log size as the manifest says, every photo it references present, and the keys
//! (from the backup or `--keys`) the ones the manifest names. It fills a new directory next to
//! DIR and renames it into place, so DIR is either a whole instance or absent.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::storage::{self, StorageError};

/// The name of the manifest in a backup directory.
pub const MANIFEST: &str = "manifest.json";

/// The format name in every manifest.
pub const FORMAT: &str = "hattama-backup/1";

/// The database file of a data directory (and of a backup).
const DB_FILE: &str = "hattama-server.sqlite3";

/// The key files of a data directory, under `keys/`.
const KEY_FILES: [&str; 3] = ["receipt.key", "log.key", "upload-token.key"];

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Storage failed or the database copy is unusable.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What happened.
        source: std::io::Error,
    },
    /// The backup is not whole: it was cut short or files are missing.
    #[error("the backup in {dir} is incomplete: {detail}")]
    Incomplete {
        /// The backup directory.
        dir: PathBuf,
        /// What is missing.
        detail: String,
    },
    /// Files of the backup differ from what its manifest says.
    #[error("the backup in {dir} was altered or damaged: {}", problems.join("; "))]
    Altered {
        /// The backup directory.
        dir: PathBuf,
        /// The problems, with the file each is about.
        problems: Vec<String>,
    },
    /// The keys are missing or are not the backup's.
    #[error("{0}")]
    Keys(String),
    /// The backup directory and the data directory overlap.
    #[error(
        "the backup directory {dest} and the data directory {data} must not be inside each \
         other: back up to another directory, better on another disk"
    )]
    Overlap {
        /// The backup directory.
        dest: PathBuf,
        /// The data directory.
        data: PathBuf,
    },
    /// The target directory holds something already.
    #[error("{0} exists and is not empty: restore into a new directory")]
    NotEmpty(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io { path: path.to_owned(), source }
}

/// A file of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Its path under the backup directory (`/`-separated).
    pub path: String,
    /// Its size.
    pub bytes: u64,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
}

/// `manifest.json` of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// When the backup was finished (Unix milliseconds).
    pub created_at_ms: u64,
    /// Captures in the database copy.
    pub captures: u64,
    /// Size of the newest signed checkpoint in the database copy.
    pub log_size: u64,
    /// The public key of the receipt key (hex): receipts of the restored instance verify under it.
    pub receipt_public_key: String,
    /// The public key of the log key (hex).
    pub log_public_key: String,
    /// Whether the private keys are in the backup (`keys/`).
    pub with_keys: bool,
    /// Every file, sorted by path.
    pub files: Vec<FileEntry>,
}

/// What a backup did.
#[derive(Clone, Debug)]
pub struct BackupSummary {
    /// Its manifest.
    pub manifest: Manifest,
    /// SHA-256 of `manifest.json`, hex: note it somewhere else to detect a changed manifest.
    pub manifest_sha256: String,
    /// Photo files copied now.
    pub photos_copied: u64,
    /// Photo files already in the destination (from an earlier backup), not copied again.
    pub photos_kept: u64,
    /// Bytes written.
    pub bytes_written: u64,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `bytes` to `to` by a temporary file, fsynced and renamed (mode 0600).
fn write_file(to: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let dir = to.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = to.with_extension("backup-tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, to).map_err(io(to))
}

/// Fsyncs the directories of `paths` (relative to `root`) and `root` itself.
fn sync_dirs<'a>(root: &Path, paths: impl Iterator<Item = &'a str>) -> Result<(), BackupError> {
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for p in paths {
        let mut d = root.join(p);
        while d.pop() && d.starts_with(root) {
            dirs.insert(d.clone());
        }
    }
    dirs.insert(root.to_owned());
    for d in dirs {
        fs::File::open(&d).and_then(|f| f.sync_all()).map_err(io(&d))?;
    }
    Ok(())
}

/// Every file under `dir`, as `/`-separated paths relative to `root`, sorted.
fn files_under(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), BackupError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io(&path))?;
        if kind.is_dir() {
            files_under(root, &path, out)?;
        } else if kind.is_file()
            && let Ok(rel) = path.strip_prefix(root)
            && let Some(rel) = rel.to_str()
            && !rel.ends_with(".tmp")
            && !rel.ends_with(".backup-tmp")
        {
            out.push(rel.to_owned());
        }
    }
    out.sort();
    Ok(())
}

/// Copies `rel` from `from` to `to`; answers its entry of the manifest.
fn copy_file(from: &Path, to: &Path, rel: &str) -> Result<FileEntry, BackupError> {
    let path = from.join(rel);
    let bytes = fs::read(&path).map_err(io(&path))?;
    write_file(&to.join(rel), &bytes)?;
    Ok(FileEntry { path: rel.to_owned(), bytes: bytes.len() as u64, sha256: sha256_hex(&bytes) })
}

/// The public key (hex) of a key file.
fn public_key(path: &Path) -> Result<String, BackupError> {
    let key = crate::keys::read_key(path).map_err(io(path))?;
    Ok(hex::encode(key.verifying_key().to_bytes()))
}

/// Backs up the instance in `data_dir` (which may be serving) into `dest`; see the module
/// documentation.
pub fn backup(data_dir: &Path, dest: &Path, with_keys: bool) -> Result<BackupSummary, BackupError> {
    let data_dir = data_dir.canonicalize().map_err(io(data_dir))?;
    let existed = dest.exists();
    fs::create_dir_all(dest).map_err(io(dest))?;
    let dest = dest.canonicalize().map_err(io(dest))?;
    if dest.starts_with(&data_dir) || data_dir.starts_with(&dest) {
        if !existed {
            let _ = fs::remove_dir(&dest);
        }
        return Err(BackupError::Overlap { dest, data: data_dir });
    }
    storage::make_private(&dest).map_err(io(&dest))?;
    // Whatever manifest is there describes an earlier backup: without it, a backup cut short
    // from here on is recognizably incomplete.
    match fs::remove_file(dest.join(MANIFEST)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&dest)(e)),
        _ => {}
    }
    let receipt_public_key = public_key(&data_dir.join("keys/receipt.key"))?;
    let log_public_key = public_key(&data_dir.join("keys/log.key"))?;
    let mut files: Vec<FileEntry> = Vec::new();
    let mut bytes_written = 0u64;
    let copy =
        |rel: &str, files: &mut Vec<FileEntry>, written: &mut u64| -> Result<(), BackupError> {
            let f = copy_file(&data_dir, &dest, rel)?;
            *written += f.bytes;
            files.push(f);
            Ok(())
        };
    // 1. The log's published files: the checkpoint first, then the tiles (all a checkpoint
    // covers were written before it).
    if data_dir.join("log/checkpoint").exists() {
        copy("log/checkpoint", &mut files, &mut bytes_written)?;
    }
    let mut tiles = Vec::new();
    files_under(&data_dir, &data_dir.join("log/tile"), &mut tiles)?;
    for rel in &tiles {
        copy(rel, &mut files, &mut bytes_written)?;
    }

    // 2. The database, in one read transaction.
    let db = dest.join(DB_FILE);
    let tmp = dest.join(format!("{DB_FILE}.tmp"));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&tmp)(e)),
        _ => {}
    }
    storage::snapshot(&data_dir, &tmp)?;
    fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io(&tmp))?;
    fs::rename(&tmp, &db).map_err(io(&db))?;
    let facts = storage::snapshot_facts(&db)?;
    let db_bytes = fs::read(&db).map_err(io(&db))?;
    bytes_written += db_bytes.len() as u64;
    files.push(FileEntry {
        path: DB_FILE.to_owned(),
        bytes: db_bytes.len() as u64,
        sha256: sha256_hex(&db_bytes),
    });
    drop(db_bytes);

    // 3. The photos it references that are files: a photo is named by its hash, so one
    // already in DEST with its size is the same photo (restore checks every byte).
    let (mut photos_copied, mut photos_kept) = (0, 0);
    for (sha, size) in &facts.photo_files {
        let rel = format!("blobs/{sha}");
        let to = dest.join(&rel);
        if fs::metadata(&to).is_ok_and(|m| m.len() == *size) {
            photos_kept += 1;
        } else {
            let from = data_dir.join(&rel);
            let bytes = fs::read(&from).map_err(io(&from))?;
            if bytes.len() as u64 != *size || sha256_hex(&bytes) != *sha {
                return Err(StorageError::Corrupt(format!(
                    "the stored photo {} does not have its hash and size",
                    from.display()
                ))
                .into());
            }
            write_file(&to, &bytes)?;
            bytes_written += bytes.len() as u64;
            photos_copied += 1;
        }
        files.push(FileEntry { path: rel, bytes: *size, sha256: sha.clone() });
    }

    // 4. The keys, only when asked.
    if with_keys {
        for name in KEY_FILES {
            let rel = format!("keys/{name}");
            if data_dir.join(&rel).exists() {
                copy(&rel, &mut files, &mut bytes_written)?;
            }
        }
    }

    // Files of earlier backups that this one does not hold (keys of a backup with keys, old
    // partial tiles) go; then everything is made durable, and the manifest is written last.
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let listed: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let mut present = Vec::new();
    files_under(&dest, &dest, &mut present)?;
    for rel in present.iter().filter(|p| !listed.contains(p.as_str())) {
        let path = dest.join(rel);
        fs::remove_file(&path).map_err(io(&path))?;
    }
    sync_dirs(&dest, listed.iter().copied())?;
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        created_at_ms: hattama_core::now_ms(),
        captures: facts.captures,
        log_size: facts.log_size,
        receipt_public_key,
        log_public_key,
        with_keys,
        files,
    };
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| StorageError::Corrupt(format!("cannot write the manifest: {e}")))?;
    write_file(&dest.join(MANIFEST), &text)?;
    sync_dirs(&dest, std::iter::empty())?;
    Ok(BackupSummary {
        manifest_sha256: sha256_hex(&text),
        manifest,
        photos_copied,
        photos_kept,
        bytes_written,
    })
}

/// What a restore did.
#[derive(Clone, Debug)]
pub struct RestoreSummary {
    /// The backup's manifest.
    pub manifest: Manifest,
}

/// Whether `rel` is a path a backup may hold (no escape from its directory).
fn allowed_path(rel: &str) -> bool {
    let known = rel == DB_FILE
        || rel == "log/checkpoint"
        || rel.starts_with("log/tile/")
        || rel.strip_prefix("blobs/").is_some_and(|h| h.len() == 64)
        || rel.strip_prefix("keys/").is_some_and(|k| KEY_FILES.contains(&k));
    known && rel.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Reads and checks the manifest of the backup in `src`.
pub fn read_manifest(src: &Path) -> Result<Manifest, BackupError> {
    if !src.is_dir() {
        return Err(BackupError::Incomplete {
            dir: src.to_owned(),
            detail: "it is not a directory: give the directory `hattama-server backup` wrote"
                .into(),
        });
    }
    let path = src.join(MANIFEST);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackupError::Incomplete {
                dir: src.to_owned(),
                detail: format!(
                    "it has no {MANIFEST} (written last: the backup did not finish, or this is \
                     not a backup directory). Take the backup again"
                ),
            });
        }
        Err(e) => return Err(io(&path)(e)),
    };
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| BackupError::Altered {
        dir: src.to_owned(),
        problems: vec![format!("{MANIFEST} is not a backup manifest: {e}")],
    })?;
    if manifest.format != FORMAT {
        return Err(BackupError::Altered {
            dir: src.to_owned(),
            problems: vec![format!("{MANIFEST} has format {:?}, not {FORMAT}", manifest.format)],
        });
    }
    Ok(manifest)
}

/// Checks every file of the backup in `src` against its manifest and the database copy.
pub fn verify(src: &Path) -> Result<Manifest, BackupError> {
    let manifest = read_manifest(src)?;
    let mut missing = Vec::new();
    let mut problems = Vec::new();
    for f in &manifest.files {
        if !allowed_path(&f.path) {
            problems.push(format!("{}: not a path a backup holds", f.path));
            continue;
        }
        let path = src.join(&f.path);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing.push(f.path.clone());
                continue;
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let sha = sha256_hex(&bytes);
        if bytes.len() as u64 != f.bytes {
            problems.push(format!(
                "{}: {} bytes, the manifest says {}",
                f.path,
                bytes.len(),
                f.bytes
            ));
        } else if sha != f.sha256 {
            problems.push(format!("{}: its SHA-256 is not the manifest's", f.path));
        } else if let Some(name) = f.path.strip_prefix("blobs/")
            && name != sha
        {
            problems.push(format!("{}: a photo not named by its own SHA-256", f.path));
        }
    }
    if !manifest.files.iter().any(|f| f.path == DB_FILE) {
        missing.push(DB_FILE.to_owned());
    }
    if !missing.is_empty() {
        let shown: Vec<_> = missing.iter().take(5).cloned().collect();
        return Err(BackupError::Incomplete {
            dir: src.to_owned(),
            detail: format!(
                "{} file(s) of its manifest are missing: {}{}",
                missing.len(),
                shown.join(", "),
                if missing.len() > 5 { ", …" } else { "" }
            ),
        });
    }
    let altered = |problems: Vec<String>| BackupError::Altered { dir: src.to_owned(), problems };
    if !problems.is_empty() {
        return Err(altered(problems));
    }
    let facts =
        storage::snapshot_facts(&src.join(DB_FILE)).map_err(|e| altered(vec![e.to_string()]))?;
    if facts.captures != manifest.captures || facts.log_size != manifest.log_size {
        problems.push(format!(
            "the database holds {} captures and a log of {}, the manifest says {} and {}",
            facts.captures, facts.log_size, manifest.captures, manifest.log_size
        ));
    }
    let listed: BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    let unlisted: Vec<_> = facts
        .photo_files
        .iter()
        .filter(|(sha, _)| !listed.contains(format!("blobs/{sha}").as_str()))
        .collect();
    if let Some((sha, _)) = unlisted.first() {
        problems.push(format!(
            "{} photo(s) the database references are not in the backup, blobs/{sha} first",
            unlisted.len()
        ));
    }
    if manifest.with_keys {
        for (name, public) in
            [("receipt.key", &manifest.receipt_public_key), ("log.key", &manifest.log_public_key)]
        {
            let rel = format!("keys/{name}");
            if !listed.contains(rel.as_str()) {
                problems.push(format!("{rel} is missing though the manifest says it has the keys"));
            } else if public_key(&src.join(&rel))? != *public {
                problems.push(format!("{rel} is not the key the manifest names"));
            }
        }
    }
    if !problems.is_empty() {
        return Err(altered(problems));
    }
    Ok(manifest)
}

/// Makes a new data directory `dir` from the backup in `src`, with the keys of the backup or of
/// `keys` (a directory with `receipt.key` and `log.key`, and `upload-token.key` if kept).
pub fn restore(src: &Path, dir: &Path, keys: Option<&Path>) -> Result<RestoreSummary, BackupError> {
    if let Ok(mut entries) = fs::read_dir(dir)
        && entries.next().is_some()
    {
        return Err(BackupError::NotEmpty(dir.to_owned()));
    }
    let manifest = verify(src)?;
    // The keys: the backup's, or those given, which must be the ones the manifest names.
    let mut key_files: Vec<(PathBuf, String)> = Vec::new();
    match (manifest.with_keys, keys) {
        (true, None) => {}
        (_, Some(keys)) => {
            for (name, public) in [
                ("receipt.key", Some(&manifest.receipt_public_key)),
                ("log.key", Some(&manifest.log_public_key)),
                ("upload-token.key", None),
            ] {
                let path = keys.join(name);
                if public.is_none() && !path.exists() {
                    continue;
                }
                if !path.exists() {
                    return Err(BackupError::Keys(format!(
                        "{} is missing: --keys names the directory of the server's keys \
                         (receipt.key, log.key)",
                        path.display()
                    )));
                }
                if let Some(public) = public
                    && public_key(&path)? != *public
                {
                    return Err(BackupError::Keys(format!(
                        "{} is not the key of the backed-up server (its public key is not the \
                         manifest's): a restored server must sign with the same keys, or devices \
                         and auditors would refuse its receipts and checkpoints",
                        path.display()
                    )));
                }
                key_files.push((path, format!("keys/{name}")));
            }
        }
        (false, None) => {
            return Err(BackupError::Keys(format!(
                "the backup in {} holds no keys (taken without --with-keys): pass --keys DIR, \
                 the directory where the server's keys are kept (receipt.key, log.key), so that \
                 the restored server signs with the same keys",
                src.display()
            )));
        }
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io(&parent))?;
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("hattama-data");
    let work = parent.join(format!(".{name}.restoring-{}", std::process::id()));
    let result = (|| {
        fs::create_dir_all(&work).map_err(io(&work))?;
        storage::make_private(&work).map_err(io(&work))?;
        for f in &manifest.files {
            if !f.path.starts_with("keys/") || keys.is_none() {
                let from = src.join(&f.path);
                write_file(&work.join(&f.path), &fs::read(&from).map_err(io(&from))?)?;
            }
        }
        for (from, rel) in &key_files {
            write_file(&work.join(rel), &fs::read(from).map_err(io(from))?)?;
        }
        let written = manifest.files.iter().map(|f| f.path.as_str());
        let keys_written = key_files.iter().map(|(_, rel)| rel.as_str());
        sync_dirs(&work, written.chain(keys_written))?;
        // An empty directory given as the target is replaced.
        match fs::remove_dir(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(dir)(e)),
            _ => {}
        }
        fs::rename(&work, dir).map_err(io(dir))?;
        fs::File::open(&parent).and_then(|f| f.sync_all()).map_err(io(&parent))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&work);
    }
    result?;
    Ok(RestoreSummary { manifest })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_of_a_backup_are_allowed() {
        for ok in [
            DB_FILE,
            "log/checkpoint",
            "log/tile/0/000",
            "log/tile/entries/001.p/4",
            "keys/log.key",
        ] {
            assert!(allowed_path(ok), "{ok}");
        }
        let blob = format!("blobs/{}", "a".repeat(64));
        assert!(allowed_path(&blob));
        for bad in [
            "../x",
            "log/tile/../../../etc/passwd",
            "log/tile//x",
            "keys/other.key",
            "blobs/abc",
            "manifest.json",
            "/etc/passwd",
            "log/tile/./0",
        ] {
            assert!(!allowed_path(bad), "{bad}");
        }
    }
}
