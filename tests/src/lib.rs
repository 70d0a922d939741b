//! Shared helpers of the end-to-end tests: paths to the real binaries and to the sample photos
//! that `scripts/test` installs from Debian packages, a CLI runner, and a store consistency check.

// Test support code: a failed unwrap here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

pub mod proxy;

pub mod app;
pub mod backend;
pub mod browser;
pub mod demo;

pub mod fixtures;
pub mod hostile;
pub mod nginx;
pub mod package;
pub mod raw;
pub mod review;
pub mod server;
pub mod static_site;
pub mod witness;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hattama_core::evidence::{Sha256Hash, SignedManifest};
use hattama_core::store::{CaptureState, Store, StoreKey};
use serde_json::Value;

/// The cargo target directory the tests were built into (`target/<profile>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test binary>
    exe.parent().and_then(Path::parent).expect("target dir").to_owned()
}

/// Path of a workspace binary built alongside the tests, e.g. `hattama`.
pub fn bin(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`, as scripts/test does)",
        path.display()
    );
    path
}

/// Directory of a set of sample files installed by scripts/test; fails loudly if missing.
pub fn sample_dir(rel: &str) -> PathBuf {
    let path = PathBuf::from(rel);
    assert!(
        path.is_dir(),
        "{rel} is missing: scripts/test installs it (Debian packages golang-github-rwcarlsen-goexif-dev \
         and golang-1.19-src)"
    );
    path
}

/// EXIF samples of Debian's golang-github-rwcarlsen-goexif-dev.
pub const GOEXIF: &str = "/usr/share/gocode/src/github.com/rwcarlsen/goexif/exif";
/// Image test data of Debian's golang-1.19-src.
pub const GO_IMAGE: &str = "/usr/share/go-1.19/src/image";

/// Files in `dir` whose names end with one of `exts`, sorted.
pub fn files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read sample dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| exts.contains(&e)))
        .collect();
    out.sort();
    out
}

/// The result of one CLI run.
#[derive(Debug)]
pub struct Run {
    /// Exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Stdout parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Asserts success and returns stdout as JSON.
    pub fn ok_json(&self) -> Value {
        assert_eq!(self.code, Some(0), "command failed: {self:?}");
        self.json()
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// The store key of the tests' stores (the CLI gets it as `HATTAMA_STORE_KEY`).
pub const TEST_KEY_HEX: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

/// [`TEST_KEY_HEX`] as a key.
pub fn test_key() -> StoreKey {
    StoreKey::from_bytes([0x5a; 32])
}

/// The observer CLI bound to one store directory.
pub struct Hattama {
    /// The store directory.
    pub store: PathBuf,
}

impl Hattama {
    /// A CLI over `store`.
    pub fn new(store: &Path) -> Self {
        Self { store: store.to_owned() }
    }

    /// A `Command` for `hattama --store STORE args...`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("hattama"));
        c.arg("--store")
            .arg(&self.store)
            .args(args)
            .env_remove("HATTAMA_TEST_PAUSE_AT")
            .env_remove("HATTAMA_STORE_KEY_FILE")
            .env("HATTAMA_STORE_KEY", TEST_KEY_HEX);
        c
    }

    /// Runs `hattama --store STORE args...` to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        self.command(args).output().expect("run hattama").into()
    }

    /// Captures `photo` for election `e2e` and `precinct`, returning the JSON answer.
    pub fn capture(&self, photo: &Path, precinct: &str) -> Run {
        let photo = photo.to_str().expect("utf-8 path");
        self.run(&["capture", photo, "--election", "e2e", "--precinct", precinct, "--json"])
    }
}

/// Checks every invariant of a store after (re)opening it, which runs crash recovery:
/// each live capture's manifest verifies and its blob exists and matches the signed hash
/// (unless its photo was removed after its receipt);
/// no other blob, temp file or stray thumbnail remains; sequence numbers run 1..n without
/// holes and each manifest's `prev` is the previous capture's id. Returns the live capture count.
pub fn check_store_consistent(dir: &Path) -> usize {
    let store = Store::open(dir, &test_key()).expect("store opens");
    let mut records = store.list().expect("list");
    records.sort_by_key(|r| r.seq);
    let mut referenced = HashSet::new();
    let mut prev_id = Sha256Hash::ZERO;
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1, "sequence numbers must have no holes");
        if r.state == CaptureState::Deleted {
            assert!(store.evidence(&r.id).unwrap().is_none());
            prev_id = r.id;
            continue;
        }
        let (canonical, sig) = store.evidence(&r.id).unwrap().expect("live capture has evidence");
        let signed = SignedManifest::verify(&canonical, &sig).expect("stored manifest verifies");
        assert_eq!(signed.hash(), r.id);
        assert_eq!(signed.manifest.prev, prev_id, "chain link of #{}", r.seq);
        if r.photo_removed_at_ms.is_some() {
            // Removed after its receipt (the election's setting): the server keeps it.
            prev_id = r.id;
            continue;
        }
        // Each photo file is read (decrypted) and hashed once, however many captures show it.
        let sha = signed.manifest.photo.sha256;
        if !referenced.contains(store.blobs().path(&sha).file_name().unwrap()) {
            let photo = store.blobs().get(&sha).expect("blob exists");
            assert_eq!(Sha256Hash::of(&photo), sha, "blob matches its hash");
        }
        referenced.insert(
            store.blobs().path(&signed.manifest.photo.sha256).file_name().unwrap().to_owned(),
        );
        prev_id = r.id;
    }
    let on_disk: HashSet<std::ffi::OsString> =
        std::fs::read_dir(dir.join("blobs")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(on_disk, referenced, "no orphan blob, no missing blob");
    assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0, "no temp file remains");
    records.iter().filter(|r| r.state != CaptureState::Deleted).count()
}

/// A photo as the server in `data_dir` stores it, by its hex SHA-256. Embedded: one of at most
/// `SMALL_PHOTO_BYTES` in its database (table `small_photos`, by the log position of the first
/// capture showing it), a larger one as `blobs/<sha256>`; PostgreSQL: the object
/// `photos/<sha256>` (or a row of `photos`, where admin commands and older servers kept them).
/// Works whether the server runs or not.
pub fn stored_photo(data_dir: &Path, sha: &str) -> Option<Vec<u8>> {
    let backend = backend::Backend::from_env();
    if let backend::Backend::Postgres { .. } = backend {
        assert!(sha.bytes().all(|b| b.is_ascii_hexdigit()), "a hex SHA-256: {sha:?}");
        let key = hattama_server::objects::ObjectKey::new(format!("photos/{sha}")).expect("key");
        if let Some(bytes) = backend::open_objects(data_dir).get_opt(&key).expect("get") {
            return Some(bytes);
        }
        let sql = format!("SELECT encode(bytes, 'hex') FROM photos WHERE sha256 = '{sha}'");
        let row = backend.query(data_dir, &sql);
        return (!row.trim().is_empty()).then(|| hex::decode(row.trim()).expect("hex"));
    }
    let db = sqlite(data_dir);
    let small: Option<Vec<u8>> = db
        .query_row(
            "SELECT p.bytes FROM captures AS c JOIN small_photos AS p USING (log_index)
             WHERE c.photo_sha256 = ?1 LIMIT 1",
            [sha],
            |r| r.get(0),
        )
        .ok();
    small.or_else(|| std::fs::read(data_dir.join("blobs").join(sha)).ok())
}

/// How many photos the server in `data_dir` stores (each once, however many captures show it).
pub fn stored_photo_count(data_dir: &Path) -> usize {
    let backend = backend::Backend::from_env();
    if let backend::Backend::Postgres { .. } = backend {
        let rows: usize =
            backend.query(data_dir, "SELECT count(*) FROM photos").trim().parse().expect("count");
        return rows + backend::open_objects(data_dir).list("photos/").expect("list").len();
    }
    let small: i64 = sqlite(data_dir)
        .query_row("SELECT count(*) FROM small_photos", [], |r| r.get(0))
        .expect("count");
    small as usize + std::fs::read_dir(data_dir.join("blobs")).expect("blobs/").count()
}

/// How many unfinished uploads the server in `data_dir` holds: files under `uploads/` on the
/// embedded backend, rows of `uploads` on PostgreSQL.
pub fn unfinished_uploads(data_dir: &Path) -> usize {
    match backend::Backend::from_env() {
        backend::Backend::Embedded => {
            std::fs::read_dir(data_dir.join("uploads")).expect("uploads/").count()
        }
        postgres => {
            postgres.query(data_dir, "SELECT count(*) FROM uploads").trim().parse().expect("count")
        }
    }
}

/// The embedded server's database in `data_dir`, read-only.
fn sqlite(data_dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        data_dir.join("hattama-server.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the server's database")
}

/// A deterministic JPEG of `w`×`h` with texture, as a camera might produce (no metadata).
pub fn textured_jpeg(w: u32, h: u32, seed: u32, quality: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let n = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503) ^ seed).rotate_left(7);
        let base = 200u32.saturating_sub((x + y) / 64) as u8;
        let v = base.wrapping_sub((n % 48) as u8);
        image::Rgb([v, v.wrapping_add(3), v.wrapping_sub(5)])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(&img)
        .expect("encode jpeg");
    out
}

/// Copies a directory tree (e.g. a stopped server's data directory, or its log files for a
/// static mirror).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Checks that every object in `value` that names a station by its id (`"precinct": "<id>"`)
/// names it as people do too, by its `number` and `region`, equal to those of `stations` (the
/// API's precinct list); returns how many such objects it found (not looking inside them).
pub fn check_stations_named(value: &Value, stations: &Value) -> usize {
    match value {
        Value::Array(items) => items.iter().map(|x| check_stations_named(x, stations)).sum(),
        Value::Object(map) => {
            let Some(Value::String(id)) = map.get("precinct") else {
                return map.values().map(|x| check_stations_named(x, stations)).sum();
            };
            // Found (what is inside it is about the same station).
            {
                let station = stations
                    .as_array()
                    .expect("the precinct list")
                    .iter()
                    .find(|s| s["id"] == id.as_str())
                    .unwrap_or_else(|| panic!("no station {id}"));
                assert_eq!(map.get("number"), Some(&station["number"]), "number of {id}: {value}");
                assert_eq!(map.get("region"), Some(&station["region"]), "region of {id}: {value}");
            }
            1
        }
        _ => 0,
    }
}

/// A capture request for the end-to-end election `e2e`: the posted protocol of `precinct`, page
/// 1 of 1, taken at UTC+5.
pub fn posted_request(precinct: &str) -> hattama_core::CaptureRequest {
    hattama_core::CaptureRequest {
        election: "e2e".into(),
        precinct: precinct.into(),
        kind: hattama_core::evidence::EvidenceKind::Posted,
        page: hattama_core::evidence::Page { count: 1, number: 1 },
        note: None,
        transcription: None,
        location: None,
        utc_offset_min: 300,
    }
}

/// Syncs `client` until nothing remains: a sync cut by a fault or a killed server ends with an
/// error, and is run again, at most `tries` times in all. Panics if something still remains.
pub fn sync_to_completion(client: &hattama_core::Client, tries: usize) {
    use hattama_core::sync::{CancelToken, NoProgress};
    for _ in 0..tries {
        if let Ok(summary) = client.sync(&NoProgress, &CancelToken::new())
            && summary.remaining == 0
        {
            return;
        }
    }
    panic!("sync did not complete: {:?}", client.status().unwrap());
}

/// A random generator for a test's random choices and its seed, which it prints
/// (`HATTAMA_TEST_SEED=<seed>` replays a run).
pub fn seeded_rng() -> (u64, rand::rngs::StdRng) {
    use rand::SeedableRng;
    let seed = std::env::var("HATTAMA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("seed {seed} (rerun with HATTAMA_TEST_SEED={seed})");
    (seed, rand::rngs::StdRng::seed_from_u64(seed))
}
