//! `hattama-server migrate --to postgres --from DIR`: copies a stopped embedded instance (SQLite
//! and files in DIR) into the PostgreSQL database and the object store that the settings name,
//! then verifies the copy and says so.
//!
//! What it guarantees:
//! - **The source's content is not changed.** Its tables are read through a read-only
//!   connection (`storage::migrate::EmbeddedSource`), its photos through the storage traits,
//!   its objects through a store that refuses writes. The one write is the review index's
//!   catch-up (rows derived from the captures, which any reading of the review makes too). A
//!   server running on it is refused (its `server.lock`, held until the end), so nothing
//!   changes while it is read.
//! - **Identical evidence.** Every row keeps its values, log positions and ids; every object
//!   (photos as `photos/<sha256>`, tiles, renditions, checkpoints) its bytes. The receipts and
//!   checkpoints are the ones the instance signed; the keys are copied into the target data
//!   directory, so the new server signs on with the same keys.
//! - **Resumable.** The target records the migration (`embedded_migration`): which instance it
//!   is a copy of (its log key) and how many objects are stored. Objects go first, each put
//!   under the identical-bytes rule (so a put repeated after a kill is harmless), then every
//!   table in one transaction, so a kill leaves either no row or all of them. A run into a
//!   target that holds another instance's data, or rows without that record, is refused.
//! - **Verified.** At the end the newest checkpoint (size, root, bytes), every capture's
//!   receipt and log position, every photo object's size, each election's comparison and every
//!   open-data export are computed from the source and from the target and compared byte for
//!   byte; any difference is an error ([`MigrateError::Differs`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hattama_core::evidence::Sha256Hash;
use sha2::{Digest, Sha256};

use crate::objects::{self, LocalObjects, ObjectBackend, ObjectError, ObjectKey, PutOptions};
use crate::settings::{BackendKind, ObjectsKind, Settings};
use crate::storage::migrate::{self as rows, EmbeddedSource, TargetState};
use crate::storage::{self, Backend, Opener, PgStorage, StorageError};

/// The pause point of the crash test: after half of the objects are stored and recorded.
pub const PAUSE_OBJECTS_HALF: &str = "migrate:objects-half";

/// The key files of a server (`keys/`), copied into the target data directory.
const KEY_FILES: [&str; 3] = ["receipt.key", "log.key", "upload-token.key"];

/// How often the count of stored objects is recorded.
const RECORD_EVERY: usize = 64;

/// Why a migration stopped. The messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The settings do not name PostgreSQL.
    #[error(
        "the settings name the embedded backend, but migrate copies into PostgreSQL: give the \
         settings of the new server (storage.backend = \"postgres\", storage.database_url and \
         [storage.objects]) with --config or HATTAMA__STORAGE__* variables"
    )]
    TargetNotPostgres,
    /// `--from` is not an embedded instance's data directory.
    #[error("{dir} is not the data directory of an embedded server: {reason}")]
    NoSource {
        /// The directory given.
        dir: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The objects would be written into the source's own directory.
    #[error(
        "the settings keep objects in the data directory ([storage.objects] kind = \"local\"), \
         and the data directory is the source {0} itself: the migration writes nothing there. \
         Use another --data-dir, or an S3 bucket"
    )]
    LocalObjectsInSource(PathBuf),
    /// A server runs on the source.
    #[error(
        "a server is running on {0}: stop it first (the migration copies a stopped instance, so \
         that nothing changes while it is copied)"
    )]
    SourceBusy(PathBuf),
    /// A server runs on the target data directory.
    #[error("a server is running on the target data directory {0}: stop it first")]
    TargetBusy(PathBuf),
    /// The database does not answer.
    #[error(
        "cannot reach the database of storage.database_url ({0}). Check that PostgreSQL is \
         running, that the URL's host, port, database, user and password are right, and that \
         this machine may connect"
    )]
    DatabaseUnreachable(String),
    /// The object store does not answer.
    #[error(
        "cannot use the object store of [storage.objects] ({0}). Check the endpoint, the \
         bucket's name and region, and the credentials (HATTAMA__STORAGE__OBJECTS__ACCESS_KEY_ID \
         and …SECRET_ACCESS_KEY)"
    )]
    BucketUnreachable(String),
    /// The target holds data that is not this migration's.
    #[error(
        "the target database is not empty (table {table} has rows) and holds no migration: \
         migrate into an empty database (or an empty schema), or into the one an earlier, \
         unfinished run of this same migration wrote"
    )]
    TargetNotEmpty {
        /// A table with rows.
        table: &'static str,
    },
    /// The target holds the migration of another instance.
    #[error(
        "the target database holds a migration of another instance (log key {found}), not of \
         {dir} (log key {expected}): migrate into an empty database"
    )]
    OtherSource {
        /// The source directory.
        dir: PathBuf,
        /// The source's log key.
        expected: String,
        /// The key the target's record names.
        found: String,
    },
    /// The target data directory holds other keys.
    #[error(
        "{0} exists and differs from the source's key of that name: the new server must sign \
         with the instance's keys. Use a target data directory without keys (the migration \
         copies them) or the source's own directory"
    )]
    KeysDiffer(PathBuf),
    /// The target settings' log origin is not the log's.
    #[error(
        "log_origin in the settings is {configured:?}, but the instance's log is {found:?}: set \
         log_origin = {found:?} (HATTAMA__LOG_ORIGIN), or the new server's checkpoints would \
         not extend the published log"
    )]
    OriginDiffers {
        /// The settings' origin.
        configured: String,
        /// The log's.
        found: String,
    },
    /// The source's published checkpoint is behind its database.
    #[error(
        "the source's published log files are behind its database (a server stopped by a \
         crash): start the server on {0} once, stop it, then migrate"
    )]
    SourceUnpublished(PathBuf),
    /// The verification found a difference.
    #[error(
        "verification failed: {0}. The target is not a faithful copy (the source is \
         unchanged): migrate again into an empty database, and report it if it happens again"
    )]
    Differs(String),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The object store failed.
    #[error(transparent)]
    Objects(#[from] ObjectError),
    /// A file could not be read or written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What a migration did and found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Whether an earlier, unfinished run was continued.
    pub resumed: bool,
    /// Objects stored by this run (those an earlier run stored are not counted).
    pub objects_copied: u64,
    /// Objects of the instance in all.
    pub objects: u64,
    /// Rows copied per table (empty when an earlier run copied them).
    pub rows: rows::RowCounts,
    /// Captures verified (receipt and log position).
    pub captures: u64,
    /// Devices.
    pub devices: u64,
    /// The log's size.
    pub log_size: u64,
    /// The log's root hash (base64, as in the checkpoint).
    pub log_root: String,
    /// Elections whose comparison and exports were compared.
    pub elections: u64,
    /// Export files compared.
    pub exports: u64,
}

/// Migrates the embedded instance in `source` into the storage `target` names (see the module
/// docs). `target.data_dir` receives the keys; it may be `source` itself.
pub fn run(source: &Path, target: &Settings) -> Result<Report, MigrateError> {
    if target.storage.backend != BackendKind::Postgres {
        return Err(MigrateError::TargetNotPostgres);
    }
    let no_source = |reason: String| MigrateError::NoSource { dir: source.to_owned(), reason };
    let embedded = EmbeddedSource::open(source).map_err(|e| no_source(e.to_string()))?;
    let _source_lock = lock(source, false)?.ok_or(MigrateError::SourceBusy(source.to_owned()))?;
    std::fs::create_dir_all(&target.data_dir)?;
    let same_dir = same_dir(source, &target.data_dir)?;
    if same_dir && target.storage.objects.kind == ObjectsKind::Local {
        return Err(MigrateError::LocalObjectsInSource(source.to_owned()));
    }
    let _target_lock = if same_dir {
        None
    } else {
        Some(
            lock(&target.data_dir, true)?
                .ok_or(MigrateError::TargetBusy(target.data_dir.clone()))?,
        )
    };
    let log_key = source_log_key(source).map_err(|e| no_source(e.to_string()))?;
    let log_key_hex = hex::encode(log_key.verifying_key().to_bytes());
    if !same_dir {
        copy_keys(source, &target.data_dir)?;
    }

    let objects =
        objects::open(target).map_err(|e| MigrateError::BucketUnreachable(e.to_string()))?;
    objects.list("log/").map_err(|e| MigrateError::BucketUnreachable(e.to_string()))?;
    let pg = open_target(target)?;

    let mut report = Report::default();
    let progress = match rows::target_state(&pg)? {
        TargetState::Empty => {
            rows::begin(&pg, &log_key_hex, hattama_core::now_ms())?;
            None
        }
        TargetState::NotEmpty { table } => return Err(MigrateError::TargetNotEmpty { table }),
        TargetState::Migration(p) if p.source_log_key != log_key_hex => {
            return Err(MigrateError::OtherSource {
                dir: source.to_owned(),
                expected: log_key_hex,
                found: p.source_log_key,
            });
        }
        TargetState::Migration(p) => {
            report.resumed = true;
            Some(p)
        }
    };

    let source_settings =
        Settings { log_origin: target.log_origin.clone(), ..Settings::for_dir(source) };
    let src = storage::open(&source_settings, Opener::Admin)?;
    let src_objects: Arc<dyn ObjectBackend> = Arc::new(ReadOnly(LocalObjects::new(source)?));
    // The review index is derived from the captures, and brought up to date by any reading of
    // the review (so by the verification's public views): brought up to date first, so that the
    // target gets it whole.
    src.refresh_index()?;

    // Objects first (photos, then the derived ones, the replaceable checkpoints last), so that
    // no row of the target names a photo the object store lacks.
    let items = object_list(&embedded, &*src_objects)?;
    let digest = list_digest(&items);
    let start = match &progress {
        Some(p) if p.objects_digest == digest => (p.objects_copied as usize).min(items.len()),
        _ => 0,
    };
    if start > 0 {
        tracing::info!(done = start, of = items.len(), "continuing the objects' copy");
    }
    report.objects = items.len() as u64;
    let half = items.len() / 2;
    for (i, item) in items.iter().enumerate().skip(start) {
        let bytes = match &item.photo {
            Some(sha) => src.photo(sha)?.ok_or_else(|| {
                StorageError::Corrupt(format!("the source has no photo {}", sha.to_hex()))
            })?,
            None => src_objects.get(&item.key)?,
        };
        objects.put(&item.key, &bytes, item.options)?;
        report.objects_copied += 1;
        let done = i + 1;
        if done % RECORD_EVERY == 0 || done == half || done == items.len() {
            rows::record_objects(&pg, &digest, done as u64)?;
        }
        if done == half {
            hattama_core::hooks::pause(PAUSE_OBJECTS_HALF);
        }
        if done % 1000 == 0 {
            tracing::info!(done, of = items.len(), "objects copied");
        }
    }
    if items.is_empty() {
        rows::record_objects(&pg, &digest, 0)?;
    }

    if !progress.as_ref().is_some_and(|p| p.tables_copied) {
        report.rows = embedded.copy_tables(&pg, hattama_core::now_ms())?;
        tracing::info!("tables copied");
    }
    drop(embedded);

    let pg = Arc::new(pg.with_photos(objects.clone()));
    verify(source, target, &log_key, (src, src_objects), (pg.clone(), objects), &mut report)?;
    rows::record_verified(&pg, hattama_core::now_ms())?;
    Ok(report)
}

/// Opens the target database, saying in plain words when it cannot be reached.
fn open_target(target: &Settings) -> Result<PgStorage, MigrateError> {
    use secrecy::ExposeSecret;
    let url = target.storage.database_url.as_ref().ok_or_else(|| {
        MigrateError::DatabaseUnreachable("storage.database_url is not set".into())
    })?;
    PgStorage::open(url.expose_secret(), 2).map_err(|e| match e {
        StorageError::Unavailable(m) => MigrateError::DatabaseUnreachable(m),
        StorageError::Backend { source } => MigrateError::DatabaseUnreachable(source.to_string()),
        other => MigrateError::Storage(other),
    })
}

/// Takes a data directory's `server.lock` as a serving process does: `Ok(None)` if a server
/// holds it, `Ok(Some(None))` if there is no such file (without `create`: a directory never
/// served gets no file), otherwise the locked file, held until it is dropped.
fn lock(dir: &Path, create: bool) -> Result<Option<Option<File>>, MigrateError> {
    let path = dir.join("server.lock");
    let file = if create {
        File::create(&path)?
    } else {
        match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(None)),
            Err(e) => return Err(e.into()),
        }
    };
    Ok(file.try_lock().is_ok().then_some(Some(file)))
}

fn same_dir(a: &Path, b: &Path) -> std::io::Result<bool> {
    Ok(a.canonicalize()? == b.canonicalize()?)
}

/// The source's log signing key: the instance's identity, which the target's record names.
fn source_log_key(source: &Path) -> std::io::Result<ed25519_dalek::SigningKey> {
    let path = source.join("keys").join("log.key");
    crate::keys::read_key(&path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("its log key {}: {e}", path.display())))
}

/// Copies the key files the target data directory lacks; refuses one that differs.
fn copy_keys(source: &Path, target: &Path) -> Result<(), MigrateError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = target.join("keys");
    std::fs::create_dir_all(&dir)?;
    for name in KEY_FILES {
        let from = source.join("keys").join(name);
        let bytes = match std::fs::read(&from) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        let to = dir.join(name);
        match std::fs::read(&to) {
            Ok(existing) if existing == bytes => continue,
            Ok(_) => return Err(MigrateError::KeysDiffer(to)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&to)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    File::open(&dir)?.sync_all()?;
    Ok(())
}

/// One object to copy.
struct Item {
    key: ObjectKey,
    /// A photo (read through storage), or `None` for an object of the data directory.
    photo: Option<Sha256Hash>,
    options: PutOptions,
}

/// The objects of the instance, in copy order: every photo (by its first capture), then the
/// log's tiles and the renditions, then the replaceable checkpoints.
fn object_list(
    embedded: &EmbeddedSource,
    local: &dyn ObjectBackend,
) -> Result<Vec<Item>, MigrateError> {
    let mut items = Vec::new();
    for (sha, _) in embedded.photos()? {
        let key = ObjectKey::new(format!("photos/{}", sha.to_hex()))?;
        items.push(Item { key, photo: Some(sha), options: PutOptions::EVIDENCE });
    }
    let latest = [crate::log::CHECKPOINT_KEY, crate::witnessing::COSIGNED_KEY];
    let mut last = Vec::new();
    for prefix in ["log/", "thumbs/", "medium/"] {
        for key in local.list(prefix)? {
            if latest.contains(&key.as_str()) {
                last.push(Item { key, photo: None, options: PutOptions::LATEST });
            } else {
                items.push(Item { key, photo: None, options: PutOptions::DERIVED });
            }
        }
    }
    last.sort_by(|a, b| a.key.cmp(&b.key));
    items.extend(last);
    Ok(items)
}

/// The digest of the list of keys: a list that changed between two runs is copied again from
/// its start.
fn list_digest(items: &[Item]) -> String {
    let mut hash = Sha256::new();
    for item in items {
        hash.update(item.key.as_str().as_bytes());
        hash.update(b"\n");
    }
    hex::encode(hash.finalize())
}

/// The source's objects, read-only: a write is an error, so the source is never changed.
struct ReadOnly(LocalObjects);

impl ReadOnly {
    fn refused(key: &ObjectKey) -> ObjectError {
        ObjectError::Backend {
            source: Box::new(std::io::Error::other(format!(
                "the migration's source is read-only (a write of {key} was refused)"
            ))),
        }
    }
}

impl ObjectBackend for ReadOnly {
    fn put(&self, key: &ObjectKey, _: &[u8], _: PutOptions) -> Result<(), ObjectError> {
        Err(Self::refused(key))
    }
    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, ObjectError> {
        self.0.get(key)
    }
    fn head(&self, key: &ObjectKey) -> Result<Option<u64>, ObjectError> {
        self.0.head(key)
    }
    fn delete(&self, key: &ObjectKey) -> Result<(), ObjectError> {
        Err(Self::refused(key))
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>, ObjectError> {
        self.0.list(prefix)
    }
}

/// Compares what the public and the devices get from the source and from the target.
fn verify(
    source: &Path,
    target: &Settings,
    log_key: &ed25519_dalek::SigningKey,
    (src, src_objects): (Arc<dyn Backend>, Arc<dyn ObjectBackend>),
    (dst, dst_objects): (Arc<PgStorage>, Arc<dyn ObjectBackend>),
    report: &mut Report,
) -> Result<(), MigrateError> {
    let differs = |what: String| MigrateError::Differs(what);
    let dst: Arc<dyn Backend> = dst;

    // The log: the newest checkpoint, as stored and as published.
    let checkpoint = src.latest_checkpoint()?;
    if checkpoint != dst.latest_checkpoint()? {
        return Err(differs("the newest checkpoint".into()));
    }
    let key = ObjectKey::new(crate::log::CHECKPOINT_KEY)?;
    let published = src_objects.get_opt(&key)?;
    if let Some((size, note)) = &checkpoint {
        let text = String::from_utf8_lossy(note);
        let origin = text.lines().next().unwrap_or_default();
        if origin != target.log_origin {
            return Err(MigrateError::OriginDiffers {
                configured: target.log_origin.clone(),
                found: origin.to_owned(),
            });
        }
        if published.as_deref() != Some(&note[..]) {
            return Err(MigrateError::SourceUnpublished(source.to_owned()));
        }
        report.log_size = *size;
        report.log_root = text.lines().nth(2).unwrap_or_default().to_owned();
    }
    if published != dst_objects.get_opt(&key)? {
        return Err(differs("the published checkpoint (log/checkpoint)".into()));
    }

    // Every capture: the same row, receipt and log position; its photo stored.
    let sorted = |mut c: Vec<storage::StoredCapture>| {
        c.sort_by_key(|c| c.id);
        c
    };
    let captures = sorted(src.captures()?);
    if captures != sorted(dst.captures()?) {
        return Err(differs("the list of captures".into()));
    }
    for c in &captures {
        if src.receipt(&c.id)? != dst.receipt(&c.id)? {
            return Err(differs(format!("the receipt of capture {}", c.id)));
        }
        if src.log_index(&c.id)? != dst.log_index(&c.id)? {
            return Err(differs(format!("the log position of capture {}", c.id)));
        }
        let photo = ObjectKey::new(format!("photos/{}", c.photo_sha256.to_hex()))?;
        if dst_objects.head(&photo)? != Some(c.photo_bytes) {
            return Err(differs(format!("the photo of capture {}", c.id)));
        }
    }
    report.captures = captures.len() as u64;
    let devices = src.devices()?;
    if devices != dst.devices()? {
        return Err(differs("the enrolled devices".into()));
    }
    report.devices = devices.len() as u64;

    // The public side: each election's comparison and every export, as the server makes them.
    let src_log = crate::log::Log::open(
        src.clone(),
        log_key.clone(),
        &target.log_origin,
        src_objects.clone(),
    )
    .map_err(|_| MigrateError::SourceUnpublished(source.to_owned()))?;
    let dst_log =
        crate::log::Log::open(dst.clone(), log_key.clone(), &target.log_origin, dst_objects)?;
    let src_gallery = crate::gallery::Gallery::new(src.clone(), src.clone());
    let dst_gallery = crate::gallery::Gallery::new(dst.clone(), dst.clone());
    let elections = src_gallery.elections()?;
    let json = |e: &[hattama_core::election::Election]| serde_json::to_value(e).ok();
    if json(&elections) != json(&dst_gallery.elections()?) {
        return Err(differs("the elections".into()));
    }
    use crate::routes::public::{EXPORT_FILES, comparison_json, export_file};
    for election in elections.iter() {
        let e = &election.id;
        let view = |g: &crate::gallery::Gallery| {
            g.election(e)?.ok_or_else(|| StorageError::NotFound(format!("election {e}")))
        };
        let (a, b) = (view(&src_gallery)?, view(&dst_gallery)?);
        if comparison_json(&a) != comparison_json(&b) {
            return Err(differs(format!("the comparison of election {e}")));
        }
        let mut files: Vec<(&str, Option<u64>)> = EXPORT_FILES.iter().map(|f| (*f, None)).collect();
        files.extend(a.official_versions.iter().map(|v| ("official.csv", Some(v.version))));
        for (file, version) in files {
            let made = |g: &crate::gallery::Gallery,
                        v: &crate::gallery::ElectionView,
                        storage: &dyn storage::Storage,
                        log: &crate::log::Log| {
                export_file(g, v, file, version, (storage, log))
                    .map(|(_, bytes)| bytes)
                    .map_err(|e| format!("{} {}", e.code, e.message))
            };
            if made(&src_gallery, &a, &*src, &src_log) != made(&dst_gallery, &b, &*dst, &dst_log) {
                let version = version.map(|v| format!(" (version {v})")).unwrap_or_default();
                return Err(differs(format!("the export {file}{version} of election {e}")));
            }
            report.exports += 1;
        }
        report.elections += 1;
    }
    Ok(())
}
