//! The object boundary: named bytes (log tiles and checkpoints, thumbnails and other renditions,
//! and whatever else a backend keeps as whole objects), stored on the local file system or in an
//! S3-compatible bucket, behind one small blocking trait shaped like Cloudflare azul's
//! `ObjectBackend` (`upload`/`fetch`).
//!
//! Why a boundary: with several instances on one database, the log's tiles and the thumbnails
//! must be where every instance reads them, and a disk lost must not take them. Callers name an
//! object by an [`ObjectKey`] (a relative, slash-separated path, e.g. `log/tile/0/000`) and
//! never see a file path, an HTTP status or an engine's error type: every failure is an
//! [`ObjectError`].
//!
//! Guarantees every implementation gives (checked by `objects_conformance_tests!` against the
//! local store and against a real S3 server, Garage):
//! - [`Mode::Immutable`] (the default, for content-addressed and derived objects): a `put` of a
//!   key that exists is accepted only if the stored bytes are identical (Trillian Tessera's
//!   rule), so retries and a second writer of the same object are harmless; other bytes are
//!   refused with [`ObjectError::Conflict`] and the stored object stays. This never relies on
//!   conditional writes of the bucket (Garage ignores `If-None-Match`): the S3 store compares.
//!   No fence may rely on the bucket either: fences (one checkpoint per size) live in the
//!   database.
//! - [`Mode::Replace`] (for the few mutable objects, the published checkpoint): the last
//!   writer wins; a reader sees the old bytes or the new, never a mix.
//! - [`Mode::ContentAddressed`] (photos, named by the SHA-256 of their bytes, which the caller
//!   has checked): a `put` of a key that exists succeeds and leaves the same bytes; the S3
//!   store writes without looking first (one request instead of two).
//! - A missing object is [`ObjectError::NotFound`] for `get`; `head` answers `None`.
//! - `delete` of a missing object succeeds (it removes unfinished uploads and temp files).
//!
//! The local store keeps the file system's durability order ([`PutOptions::durable`]: written
//! under a temporary name, fsynced, renamed, the directory fsynced), and lays objects out as
//! files under its root with the key as the relative path, so a data directory keeps the layout
//! it always had (`log/`, `thumbs/`, `medium/`), which a static web server can serve.

mod local;
mod s3;

#[cfg(test)]
mod conformance;

use std::sync::Arc;

pub use local::LocalObjects;
pub use s3::S3Objects;

use crate::settings::{ObjectsKind, Settings};

/// Most bytes in a key.
const MAX_KEY_BYTES: usize = 512;

/// The name of an object: non-empty segments of ASCII letters, digits, `.`, `_` and `-`,
/// separated by `/`; no segment starts with `.` (so `..` is never one, and the local store's
/// temporary files, which start with `.`, are never objects).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Checks a key.
    pub fn new(key: impl Into<String>) -> Result<Self, ObjectError> {
        let key = key.into();
        let segment_ok = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        };
        if key.len() > MAX_KEY_BYTES || !key.split('/').all(segment_ok) {
            return Err(ObjectError::InvalidKey(key));
        }
        Ok(Self(key))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why an object operation failed. No variant names an engine.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// Not a key ([`ObjectKey::new`]).
    #[error("not an object key: {0:?}")]
    InvalidKey(String),
    /// No object has this key.
    #[error("object {0} not found")]
    NotFound(String),
    /// An immutable object exists under this key with other bytes; it was kept.
    #[error("object {0} exists with other bytes")]
    Conflict(String),
    /// The store does not answer, or answers that it cannot now: the same call may succeed later.
    #[error("object store unavailable, try again later: {0}")]
    Unavailable(String),
    /// The local file system failed.
    #[error("object file error: {0}")]
    Io(#[from] std::io::Error),
    /// The store failed in a way a retry will not mend (refused credentials, a bucket that
    /// does not exist, an answer that makes no sense).
    #[error("object store error: {source}")]
    Backend {
        /// The client's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// How a `put` treats an object that exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Accepted only if the stored bytes are identical; otherwise [`ObjectError::Conflict`].
    #[default]
    Immutable,
    /// Replaced (a mutable object: the published checkpoint).
    Replace,
    /// Named by the SHA-256 of its bytes (a photo, `photos/<sha256>`): an object that exists
    /// holds these very bytes, so a store may write over it without looking first. The caller
    /// vouches for the name.
    ContentAddressed,
}

/// How to write an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutOptions {
    /// What to do with an object that exists.
    pub mode: Mode,
    /// Whether `put` returns only once the object survives a power loss (the local store
    /// fsyncs the file and its directory; an S3 store's successful PUT always is). Derived
    /// objects, made again from the database when lost (tiles, checkpoints, thumbnails), are
    /// written without: a power loss can only take back what is then redone identically.
    pub durable: bool,
}

impl PutOptions {
    /// Evidence and other objects that nothing can make again: immutable, durable.
    pub const EVIDENCE: Self = Self { mode: Mode::Immutable, durable: true };
    /// A photo, named by the SHA-256 of its bytes: durable, and never looked up before it is
    /// written.
    pub const PHOTO: Self = Self { mode: Mode::ContentAddressed, durable: true };
    /// Immutable objects derived from durable data (tiles, renditions): not fsynced.
    pub const DERIVED: Self = Self { mode: Mode::Immutable, durable: false };
    /// A mutable object derived from durable data (the published checkpoint): replaced, not
    /// fsynced.
    pub const LATEST: Self = Self { mode: Mode::Replace, durable: false };
}

/// Named bytes, local or in a bucket. Methods are blocking: async code calls them through
/// `web::block` (the S3 store runs its requests on a runtime of its own).
pub trait ObjectBackend: Send + Sync + 'static {
    /// Stores `bytes` under `key` (see [`Mode`] for a key that exists).
    fn put(&self, key: &ObjectKey, bytes: &[u8], options: PutOptions) -> Result<(), ObjectError>;
    /// The bytes of an object; [`ObjectError::NotFound`] if there is none.
    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, ObjectError>;
    /// The size of an object, or `None` if there is none.
    fn head(&self, key: &ObjectKey) -> Result<Option<u64>, ObjectError>;
    /// Removes an object; removing one that does not exist succeeds.
    fn delete(&self, key: &ObjectKey) -> Result<(), ObjectError>;
    /// Every key under `prefix` (`""`, or ending with `/`), sorted.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>, ObjectError>;

    /// How many writes are worth making at once: a bucket answers each after a round trip
    /// and the storage node's own flush, which writes side by side overlap; local files are
    /// written one after another.
    fn parallel_writes(&self) -> usize {
        1
    }

    /// Whether an object written without `durable` may come back torn after a power cut (short,
    /// or with blocks of zeros): local files not fsynced may; a bucket's PUT is whole or absent.
    fn unsynced_writes_may_tear(&self) -> bool {
        false
    }

    /// Whether an object exists.
    fn exists(&self, key: &ObjectKey) -> Result<bool, ObjectError> {
        Ok(self.head(key)?.is_some())
    }

    /// The bytes of an object, or `None` if there is none.
    fn get_opt(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>, ObjectError> {
        match self.get(key) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(ObjectError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A prefix argument of [`ObjectBackend::list`]: `""` or a key followed by `/`.
fn check_prefix(prefix: &str) -> Result<(), ObjectError> {
    if prefix.is_empty() {
        return Ok(());
    }
    match prefix.strip_suffix('/') {
        Some(dir) => ObjectKey::new(dir).map(drop),
        None => Err(ObjectError::InvalidKey(prefix.to_owned())),
    }
}

/// Opens the object store that `settings` name (`[storage.objects]`): the data directory's
/// files (`kind = "local"`, the default) or an S3-compatible bucket (`kind = "s3"`).
pub fn open(settings: &Settings) -> Result<Arc<dyn ObjectBackend>, ObjectError> {
    let objects = &settings.storage.objects;
    match objects.kind {
        ObjectsKind::Local => Ok(Arc::new(LocalObjects::new(&settings.data_dir)?)),
        ObjectsKind::S3 => Ok(Arc::new(S3Objects::open(objects)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_relative_paths_of_plain_segments() {
        for ok in ["checkpoint", "log/tile/0/x001/234.p/17", "thumbs/ab12.jpg", "a_b-c.D"] {
            assert_eq!(ObjectKey::new(ok).unwrap().as_str(), ok);
        }
        let long = "a".repeat(MAX_KEY_BYTES + 1);
        for bad in
            ["", "/a", "a/", "a//b", "..", "a/../b", ".tmp", "a/.b", "a b", "a\\b", "ä", &long]
        {
            assert!(matches!(ObjectKey::new(bad), Err(ObjectError::InvalidKey(_))), "{bad:?}");
        }
        assert!(check_prefix("").is_ok() && check_prefix("log/tile/").is_ok());
        for bad in ["log", "/", "log//", "../"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
