//! [`LocalObjects`]: objects as files under a root directory (the data directory), the key as
//! the relative path.
//!
//! A `put` writes a temporary file beside the object (`.<name>.<random>.tmp`: never a key, since
//! no key segment starts with `.`), then, if durable, fsyncs it, renames it into place and
//! fsyncs the directory (and every directory it had to create, in its parent). An immutable
//! object is renamed with `RENAME_NOREPLACE` (or, where the file system lacks it, hard-linked),
//! so two writers never replace each other's file: the second compares bytes.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{Mode, ObjectBackend, ObjectError, ObjectKey, PutOptions, check_prefix};

/// Objects as files under a root directory.
#[derive(Clone, Debug)]
pub struct LocalObjects {
    root: PathBuf,
}

impl LocalObjects {
    /// The objects under `root`, which is created if missing.
    pub fn new(root: &Path) -> Result<Self, ObjectError> {
        fs::create_dir_all(root)?;
        Ok(Self { root: root.to_owned() })
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    /// Creates `dir` and its missing parents under the root; with `durable`, each new
    /// directory's entry is fsynced in its parent.
    fn ensure_dir(&self, dir: &Path, durable: bool) -> std::io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent()
            && parent != self.root
        {
            self.ensure_dir(parent, durable)?;
        }
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(e),
        }
        if durable && let Some(parent) = dir.parent() {
            fsync_dir(parent)?;
        }
        Ok(())
    }

    /// What to answer when an immutable object exists already: accepted if its bytes are
    /// `bytes`.
    fn compare(&self, key: &ObjectKey, bytes: &[u8]) -> Result<(), ObjectError> {
        let stored = self.get(key)?;
        if stored == bytes { Ok(()) } else { Err(ObjectError::Conflict(key.to_string())) }
    }
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Renames `tmp` to `path` unless `path` exists; `false` if it does.
fn rename_new(tmp: &Path, path: &Path) -> std::io::Result<bool> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    use rustix::io::Errno;
    match renameat_with(CWD, tmp, CWD, path, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(true),
        Err(Errno::EXIST) => Ok(false),
        // A file system without RENAME_NOREPLACE: a hard link fails the same way on an
        // existing name.
        Err(Errno::INVAL | Errno::NOSYS) => match fs::hard_link(tmp, path) {
            Ok(()) => {
                fs::remove_file(tmp)?;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        },
        Err(e) => Err(e.into()),
    }
}

impl ObjectBackend for LocalObjects {
    fn put(&self, key: &ObjectKey, bytes: &[u8], options: PutOptions) -> Result<(), ObjectError> {
        let path = self.path(key);
        let dir = path.parent().unwrap_or(&self.root);
        if options.mode != Mode::Replace && path.exists() {
            // Cheaper than a temporary file when a retry or a second writer comes late.
            return self.compare(key, bytes);
        }
        self.ensure_dir(dir, options.durable)?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("object");
        let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
        let written = (|| {
            let mut file =
                OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            file.write_all(bytes)?;
            if options.durable {
                file.sync_all()?;
            }
            Ok::<(), std::io::Error>(())
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        let placed = match options.mode {
            Mode::Replace => fs::rename(&tmp, &path).map(|()| true),
            Mode::Immutable | Mode::ContentAddressed => rename_new(&tmp, &path),
        };
        match placed {
            Ok(true) => {}
            Ok(false) => {
                let _ = fs::remove_file(&tmp);
                return self.compare(key, bytes);
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e.into());
            }
        }
        if options.durable {
            fsync_dir(dir)?;
        }
        Ok(())
    }

    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, ObjectError> {
        fs::read(self.path(key)).map_err(|e| match e.kind() {
            // A key whose parent is a file (`a` stored, `a/b` asked) is missing too.
            ErrorKind::NotFound | ErrorKind::NotADirectory => {
                ObjectError::NotFound(key.to_string())
            }
            _ => e.into(),
        })
    }

    fn head(&self, key: &ObjectKey) -> Result<Option<u64>, ObjectError> {
        match fs::metadata(self.path(key)) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), ObjectError> {
        match fs::remove_file(self.path(key)) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>, ObjectError> {
        check_prefix(prefix)?;
        let mut keys = Vec::new();
        let mut dirs = vec![(self.root.join(prefix), prefix.to_owned())];
        while let Some((dir, rel)) = dirs.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            for entry in entries {
                let entry = entry?;
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
                let rel = format!("{rel}{name}");
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    dirs.push((entry.path(), format!("{rel}/")));
                } else if kind.is_file()
                    && let Ok(key) = ObjectKey::new(rel)
                {
                    // Temporary files and other names that are no keys are not objects.
                    keys.push(key);
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn unsynced_writes_may_tear(&self) -> bool {
        true
    }
}
