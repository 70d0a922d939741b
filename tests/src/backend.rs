//! The storage the end-to-end tests run the real server on, chosen by `HATTAMA_TEST_BACKEND`:
//! `embedded` (the default: SQLite and files in the data directory), `postgres` (the
//! throw-away cluster named by `HATTAMA_TEST_POSTGRES_URL`, `scripts/lib/postgres.sh`, with the
//! objects in the data directory) or `postgres-s3` (the same with the objects in the Garage
//! bucket of `HATTAMA_TEST_S3_*`, `scripts/lib/garage.sh`, under a prefix per data directory).
//!
//! The tests that matter for trust are written once, parametrised: `scripts/test` runs their
//! binaries on the embedded default, then a second time with `HATTAMA_TEST_BACKEND=postgres-s3`.
//! Every server and admin command of a test starts through [`server_command`], and every app
//! run in the test's process (`crate::app`) gets its settings from [`settings_with`]; both give
//! each data directory a PostgreSQL schema of its own (created on first use, named after the
//! directory) and, on S3, the schema's name as the prefix of its keys, so the server and the
//! admin commands of one data directory share one database and one set of objects, and tests
//! running side by side share nothing. A test reads or changes what the server keeps as objects
//! (thumbnails, renditions, the log's tiles and checkpoints) through [`read_object`],
//! [`replace_object`], [`remove_objects`] and [`copy_objects`], never as files of the data
//! directory, so it checks the same thing on every backend.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use hattama_server::objects::{self, ObjectBackend, ObjectKey, PutOptions};
use hattama_server::settings::{Overrides, Settings};
use hattama_server::storage::{self, Opener};

use sha2::{Digest, Sha256};

use crate::bin;

/// Where the server keeps its data in this test run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// SQLite and files in the data directory.
    Embedded,
    /// PostgreSQL (`postgres`: objects in the data directory; `postgres-s3`: photos,
    /// renditions and the log's files in the S3 bucket of `HATTAMA_TEST_S3_*`,
    /// `scripts/lib/garage.sh`).
    Postgres {
        /// The cluster's URL, without a schema.
        url: String,
        /// The bucket's settings (`[storage.objects]` keys and values) without the prefix.
        s3: Option<Vec<(&'static str, String)>>,
    },
}

impl Backend {
    /// The backend named by `HATTAMA_TEST_BACKEND`. Panics on an unknown name, or on a
    /// backend whose servers are not given (`HATTAMA_TEST_POSTGRES_URL`, `HATTAMA_TEST_S3_*`): a
    /// test run asked for a backend it cannot have must not pass on another one.
    pub fn from_env() -> Self {
        match std::env::var("HATTAMA_TEST_BACKEND").as_deref() {
            Err(_) | Ok("" | "embedded") => Self::Embedded,
            Ok(name @ ("postgres" | "postgres-s3")) => {
                let url = std::env::var("HATTAMA_TEST_POSTGRES_URL").expect(
                    "HATTAMA_TEST_BACKEND=postgres needs HATTAMA_TEST_POSTGRES_URL \
                     (eval \"$(scripts/lib/postgres.sh start)\")",
                );
                let s3 = (name == "postgres-s3").then(s3_settings);
                Self::Postgres { url, s3 }
            }
            Ok(other) => {
                panic!("HATTAMA_TEST_BACKEND={other:?}: expected embedded, postgres or postgres-s3")
            }
        }
    }

    /// PostgreSQL with its objects in the S3 bucket, whatever `HATTAMA_TEST_BACKEND` says, for
    /// tests of that pair alone; `None` (said on stderr) without the cluster or the bucket,
    /// except on CI (`CI=true`), where both are always there.
    pub fn postgres_s3() -> Option<Self> {
        for var in ["HATTAMA_TEST_POSTGRES_URL", "HATTAMA_TEST_S3_ENDPOINT"] {
            if std::env::var(var).is_err() {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{var} is not set: on CI it must be"
                );
                eprintln!("{var} is not set: the PostgreSQL + S3 test is not run here");
                return None;
            }
        }
        let url = std::env::var("HATTAMA_TEST_POSTGRES_URL").ok()?;
        Some(Self::Postgres { url, s3: Some(s3_settings()) })
    }

    /// Whether the server's objects (thumbnails, renditions, the log's tiles and checkpoints,
    /// and on PostgreSQL its photos) are in the bucket rather than files of the data directory.
    pub fn objects_in_bucket(&self) -> bool {
        matches!(self, Self::Postgres { s3: Some(_), .. })
    }

    /// The settings a server or an admin command on `data_dir` needs, as (section, key, value):
    /// nothing for the embedded default; for PostgreSQL, the backend and a database URL whose
    /// search path is this data directory's own schema (created here when it does not exist
    /// yet), and the bucket with this schema's name as the prefix of its keys.
    fn settings(&self, data_dir: &Path) -> Vec<(&'static str, &'static str, String)> {
        match self {
            Self::Embedded => Vec::new(),
            Self::Postgres { url, s3 } => {
                let schema = schema_of(data_dir);
                psql(url, &format!("CREATE SCHEMA IF NOT EXISTS {schema}"));
                let mut settings = vec![
                    ("storage", "backend", "postgres".to_owned()),
                    ("storage", "database_url", format!("{url} options='-c search_path={schema}'")),
                ];
                for (key, value) in s3.iter().flatten() {
                    settings.push(("storage.objects", key, value.clone()));
                }
                if s3.is_some() {
                    settings.push(("storage.objects", "prefix", format!("{schema}/")));
                }
                settings
            }
        }
    }

    /// The environment a server or an admin command on `data_dir` needs (see `settings`).
    pub fn env(&self, data_dir: &Path) -> Vec<(String, String)> {
        self.settings(data_dir)
            .into_iter()
            .map(|(section, key, value)| {
                let name = format!("HATTAMA__{section}__{key}").replace('.', "__").to_uppercase();
                (name, value)
            })
            .collect()
    }

    /// Runs one SQL statement on `data_dir`'s schema and returns its rows, one per line, columns
    /// separated by `|` (psql's unaligned output). Only for [`Backend::Postgres`].
    pub fn query(&self, data_dir: &Path, sql: &str) -> String {
        let Self::Postgres { url, .. } = self else {
            panic!("query is for the PostgreSQL backend")
        };
        psql(url, &format!("SET search_path = {}; {sql}", schema_of(data_dir)))
    }
}

/// The server's settings for `data_dir` on the backend of this test run, as an admin command
/// loads them.
fn load_settings(data_dir: &Path) -> Settings {
    settings_with(data_dir, None, &[])
}

/// The server's settings for `data_dir` on the backend of this test run, loaded through the
/// server's own `Settings::load` (defaults, then a settings file, then the environment of the
/// process, as the binary loads them), listening on `listen` if given, with `overrides` named
/// as the environment variables that would set them (`HATTAMA__LIMITS__MIN_FREE_BYTES`,
/// `HATTAMA__RATE_LIMITS__PUBLIC__BURST`). The overrides go into the settings file, never into
/// the environment of the process, which tests running side by side share.
pub fn settings_with(
    data_dir: &Path,
    listen: Option<std::net::SocketAddr>,
    overrides: &[(&str, &str)],
) -> Settings {
    // TOML tables by their dotted name ("" for the top level, which must come first).
    let mut tables: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (section, key, value) in Backend::from_env().settings(data_dir) {
        tables.entry(section.to_owned()).or_default().push((key.to_owned(), value));
    }
    for (name, value) in overrides {
        let path = name
            .strip_prefix("HATTAMA__")
            .unwrap_or_else(|| panic!("{name:?}: a setting's variable starts with HATTAMA__"))
            .to_lowercase();
        let (section, key) = path.rsplit_once("__").unwrap_or(("", &path));
        tables
            .entry(section.replace("__", "."))
            .or_default()
            .push((key.to_owned(), (*value).to_owned()));
    }
    let mut toml = String::new();
    for (table, entries) in &tables {
        if !table.is_empty() {
            toml.push_str(&format!("[{table}]\n"));
        }
        for (key, value) in entries {
            // A string each, as an environment variable gives it: the settings parse it.
            toml.push_str(&format!("{key} = {value:?}\n"));
        }
    }
    let config = tempfile::Builder::new().suffix(".toml").tempfile().expect("settings file");
    std::fs::write(config.path(), toml).expect("write settings");
    let overrides = Overrides {
        config_file: Some(config.path().to_owned()),
        data_dir: Some(data_dir.to_owned()),
        listen,
    };
    Settings::load(&overrides).unwrap_or_else(|e| panic!("settings: {e}"))
}

/// The storage of `data_dir` on the backend of this test run, opened as an admin command
/// opens it (through the server's own `storage::open`), for fixtures that write rows directly.
pub fn open_storage(data_dir: &Path) -> Arc<dyn storage::Backend> {
    storage::open(&load_settings(data_dir), Opener::Admin).expect("open the storage")
}

/// The object store of `data_dir` on the backend of this test run (`objects::open`).
pub fn open_objects(data_dir: &Path) -> Arc<dyn ObjectBackend> {
    objects::open(&load_settings(data_dir)).expect("open the object store")
}

/// An object of the server on `data_dir` (`thumbs/<sha256>.jpg`, `log/checkpoint`, …), read
/// through its object store (`open_objects`: a file of the data directory, or the bucket), or
/// `None` if there is none.
pub fn read_object(data_dir: &Path, key: &str) -> Option<Vec<u8>> {
    open_objects(data_dir).get_opt(&object_key(key)).expect("read an object")
}

/// Replaces (or creates) an object of the server on `data_dir`: a test's tampering with what
/// the server keeps.
pub fn replace_object(data_dir: &Path, key: &str, bytes: &[u8]) {
    open_objects(data_dir).put(&object_key(key), bytes, PutOptions::LATEST).expect("put an object");
}

/// Removes every object of the server on `data_dir` under `prefix` (`""`, or ending with `/`);
/// returns how many there were.
pub fn remove_objects(data_dir: &Path, prefix: &str) -> usize {
    let objects = open_objects(data_dir);
    let keys = objects.list(prefix).expect("list objects");
    for key in &keys {
        objects.delete(key).expect("delete an object");
    }
    keys.len()
}

/// Copies every object of the server on `data_dir` under `prefix` (ending with `/`) into
/// files under `to`, each at its key without the prefix (so `log/` gives a static copy of the
/// log, laid out as the server serves it); returns how many.
pub fn copy_objects(data_dir: &Path, prefix: &str, to: &Path) -> usize {
    let objects = open_objects(data_dir);
    let keys = objects.list(prefix).expect("list objects");
    for key in &keys {
        let rel = key.as_str().strip_prefix(prefix).expect("a key under its prefix");
        let file = to.join(rel);
        std::fs::create_dir_all(file.parent().expect("a parent")).expect("create a directory");
        std::fs::write(&file, objects.get(key).expect("read an object")).expect("write a copy");
    }
    keys.len()
}

fn object_key(key: &str) -> ObjectKey {
    ObjectKey::new(key).unwrap_or_else(|e| panic!("{key:?}: {e}"))
}

/// `hattama-server --data-dir DATA_DIR`, on the backend of this test run.
pub fn server_command(data_dir: &Path) -> Command {
    let mut command = Command::new(bin("hattama-server"));
    command.envs(Backend::from_env().env(data_dir)).arg("--data-dir").arg(data_dir);
    command
}

/// The bucket of `HATTAMA_TEST_S3_*` as `[storage.objects]` keys and values (without the prefix).
fn s3_settings() -> Vec<(&'static str, String)> {
    let var = |name: &str| {
        std::env::var(format!("HATTAMA_TEST_S3_{name}"))
            .unwrap_or_else(|_| panic!("HATTAMA_TEST_S3_{name} is not set (scripts/lib/garage.sh)"))
    };
    vec![
        ("kind", "s3".to_owned()),
        ("endpoint", var("ENDPOINT")),
        ("bucket", var("BUCKET")),
        ("region", var("REGION")),
        ("access_key_id", var("ACCESS_KEY_ID")),
        ("secret_access_key", var("SECRET_ACCESS_KEY")),
    ]
}

/// The schema of a data directory: `t_` and 16 hex digits of the SHA-256 of its path.
fn schema_of(data_dir: &Path) -> String {
    let path = data_dir.canonicalize().unwrap_or_else(|_| data_dir.to_owned());
    let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
    format!("t_{}", &hex::encode(digest)[..16])
}

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("psql prints UTF-8")
}
