//! [Observer safety] end to end: what a seized phone's store gives away (nothing without its
//! key), a wrong key, rekey, and the panic wipe, with the real CLI, core and server.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hattama_core::evidence::{CoarseLocation, EvidenceKind, Page, Sha256Hash};
use hattama_core::store::{StoreError, StoreKey};
use hattama_core::{CaptureRequest, Client, ClientConfig, Error};
use hattama_tests::server::TestServer;
use hattama_tests::{Hattama, TEST_KEY_HEX, bin, check_store_consistent, test_key, textured_jpeg};
use rand::Rng;
use serde_json::Value;

const PRECINCTS: [&str; 3] = ["p0001", "p0002", "p0003"];
const NOTE: &str = "the chairman would not let us photograph the second page";

/// Every file under `root` (relative path → bytes), sorted.
fn files_under(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(path.strip_prefix(root).unwrap().to_owned(), bytes);
            }
        }
    }
    out
}

/// What must not be found in a seized store, by what it would give away.
struct Needles(Vec<(String, Vec<u8>)>);

impl Needles {
    fn add(&mut self, what: impl Into<String>, bytes: impl AsRef<[u8]>) {
        self.0.push((what.into(), bytes.as_ref().to_vec()));
    }

    /// The needles found in `files` (in names or contents), as `what in file`. One pass per
    /// needle length, with a table of two-byte prefixes before the set lookup: thousands of
    /// needles over megabytes stay quick in a debug build.
    fn found(&self, files: &BTreeMap<PathBuf, Vec<u8>>) -> Vec<String> {
        /// The two-byte prefixes of the needles of one length, and the needles.
        type OfLength<'a> = (Vec<bool>, HashMap<&'a [u8], &'a str>);
        let mut by_len: BTreeMap<usize, OfLength<'_>> = BTreeMap::new();
        for (what, needle) in &self.0 {
            let (prefixes, set) =
                by_len.entry(needle.len()).or_insert_with(|| (vec![false; 65536], HashMap::new()));
            prefixes[usize::from(needle[0]) << 8 | usize::from(needle[1])] = true;
            set.insert(needle, what);
        }
        let mut found = Vec::new();
        for (path, bytes) in files {
            let name = path.to_string_lossy();
            for hay in [name.as_bytes(), bytes] {
                for (len, (prefixes, set)) in &by_len {
                    for w in hay.windows(*len) {
                        if prefixes[usize::from(w[0]) << 8 | usize::from(w[1])]
                            && let Some(what) = set.get(w)
                        {
                            found.push(format!("{what} in {}", path.display()));
                        }
                    }
                }
            }
        }
        found.sort();
        found.dedup();
        found
    }
}

/// The forensic needles of a store's captures, from their exported evidence: each photo's
/// signature bytes and a piece of its middle, its hash (hex and raw), the capture id (hex and
/// raw), the manifest's JSON, election and precinct ids, the note, the server's address. Every
/// needle is at least 8 bytes, so that random (encrypted) bytes match one by chance with a
/// probability below 2^-40 per run.
fn needles(client: &Client, server_url: &str) -> Needles {
    let mut n = Needles(Vec::new());
    n.add("PNG signature", b"\x89PNG\r\n\x1a\n");
    n.add("manifest JSON", b"{\"captured_at_ms\":");
    n.add("manifest JSON", b"\"transcription\":{");
    n.add("manifest JSON", b"\"location\":{");
    n.add("note", NOTE.as_bytes());
    n.add("election id", b"\"e2e\"");
    n.add("election id", b"e2e-");
    n.add("server address", server_url.as_bytes());
    for p in PRECINCTS {
        n.add("precinct id", p.as_bytes());
    }
    for record in client.list().unwrap() {
        n.add("capture id", record.id.to_hex());
        n.add("capture id (raw)", record.id.0);
        let Some((sha, _, _)) = record.photo else { continue };
        n.add("photo hash", sha.to_hex());
        n.add("photo hash (raw)", sha.0);
        let photo = client.photo(&record.id.to_hex()).unwrap();
        n.add("JPEG signature", &photo[..16]);
        let mid = photo.len() / 2;
        n.add("photo bytes", &photo[mid..mid + 32]);
    }
    n
}

fn request(i: usize) -> CaptureRequest {
    CaptureRequest {
        election: "e2e".into(),
        precinct: PRECINCTS[i % PRECINCTS.len()].into(),
        kind: EvidenceKind::Posted,
        page: Page { count: 1, number: 1 },
        note: Some(NOTE.into()),
        transcription: Some([("1".to_owned(), 1000 + i as u64), ("5".into(), 690)].into()),
        location: Some(CoarseLocation { lat_e2: 4324, lon_e2: 7689 }),
        utc_offset_min: 300,
    }
}

/// A store after captures with notes, transcriptions and an opted-in location, some sent and
/// receipted, some not, with thumbnails, enrolled with a real server. Returns the server too.
fn busy_store(store: &Path) -> TestServer {
    let server = TestServer::start_with_election(PRECINCTS.len());
    let cli = Hattama::new(store);
    let code = &server.invite(&PRECINCTS, 1)[0];
    cli.run(&["enroll", &server.url, code, "--json"]).ok_json();
    let photos = tempfile::tempdir().unwrap();
    for i in 0..4 {
        let photo = photos.path().join(format!("{i}.jpg"));
        std::fs::write(&photo, textured_jpeg(640, 480, i + 1, 90)).unwrap();
        let p = photo.to_str().unwrap();
        let precinct = PRECINCTS[i as usize % PRECINCTS.len()];
        let args = [
            "capture",
            p,
            "--election",
            "e2e",
            "--precinct",
            precinct,
            "--note",
            NOTE,
            "--line",
            "1=1000",
            "--line",
            "5=690",
            "--location",
            "43.24,76.89",
            "--json",
        ];
        let id = cli.run(&args).ok_json()["id"].as_str().unwrap().to_owned();
        let thumb = photos.path().join(format!("{i}.thumb.jpg"));
        assert_eq!(cli.run(&["thumbnail", &id, thumb.to_str().unwrap()]).code, Some(0));
        if i == 1 {
            assert_eq!(cli.run(&["sync", "--json"]).code, Some(0));
        }
    }
    server
}

#[test]
fn a_forensic_scan_of_the_store_finds_nothing_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let server = busy_store(&store);

    // One more capture through the core, scanned while its handle is open (its WAL holds it).
    let client = Client::open(&store, &test_key(), ClientConfig::default()).unwrap();
    client.capture(&textured_jpeg(600, 400, 99, 85), &request(9)).unwrap();
    client.thumbnail(&client.list().unwrap()[0].id.to_hex()).unwrap();
    let needles = needles(&client, &server.url);
    let open = files_under(&store);
    assert!(open.keys().any(|p| p.to_string_lossy().ends_with("-wal")), "{:?}", open.keys());
    assert!(open.keys().filter(|p| p.starts_with("thumbs")).count() >= 5, "{:?}", open.keys());
    assert_eq!(client.list().unwrap().iter().filter(|r| r.state.name() == "receipted").count(), 2);

    // The scan finds what it looks for where it is in the clear: in an exported bundle, and
    // in the database read with its key (so a scan that finds nothing means something).
    let bundle = dir.path().join("bundle");
    client.export(&client.list().unwrap()[0].id.to_hex(), &bundle).unwrap();
    let clear = needles.found(&files_under(&bundle));
    for what in ["JPEG signature", "manifest JSON", "note", "election id", "photo hash"] {
        assert!(clear.iter().any(|f| f.starts_with(what)), "{what} not found in {clear:?}");
    }
    let found = needles.found(&open);
    assert!(found.is_empty(), "found in the open store: {found:#?}");
    drop(client);

    // A temporary file, caught while a capture is paused right after writing it.
    let photo = dir.path().join("late.jpg");
    std::fs::write(&photo, textured_jpeg(500, 400, 77, 90)).unwrap();
    let mut child = Hattama::new(&store)
        .command(&[
            "capture",
            photo.to_str().unwrap(),
            "--election",
            "e2e",
            "--precinct",
            PRECINCTS[0],
            "--note",
            NOTE,
        ])
        .env("HATTAMA_TEST_PAUSE_AT", "blob:after-temp-write")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("hattama-paused") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the capture did not pause");
    }
    let paused = files_under(&store);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(paused.keys().any(|p| p.starts_with("tmp")), "no temp file: {:?}", paused.keys());
    let mut late = needles;
    let late_photo = hattama_core::media::strip(
        &std::fs::read(&photo).unwrap(),
        &hattama_core::media::MediaLimits::default(),
    )
    .unwrap()
    .bytes;
    late.add("JPEG signature of the paused capture", &late_photo[..16]);
    late.add("photo hash of the paused capture", Sha256Hash::of(&late_photo).to_hex());
    let found = late.found(&paused);
    assert!(found.is_empty(), "found while a capture was paused: {found:#?}");

    // Closed (checkpointed) and recovered, it is still consistent, and still says nothing.
    assert_eq!(check_store_consistent(&store), 5);
    let found = late.found(&files_under(&store));
    assert!(found.is_empty(), "found in the closed store: {found:#?}");
}

#[test]
fn a_wrong_key_is_store_locked_and_changes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let _server = busy_store(&store);
    let before = files_under(&store);
    let wrong = "00".repeat(32);

    // The CLI: exit 12, `store_locked`, for every command that opens the store.
    for args in [&["list", "--json"][..], &["status", "--json"], &["sync", "--json"]] {
        let run: hattama_tests::Run = Hattama::new(&store)
            .command(args)
            .env("HATTAMA_STORE_KEY", &wrong)
            .output()
            .unwrap()
            .into();
        assert_eq!(run.code, Some(12), "{run:?}");
        assert_eq!(run.json()["error"], "store_locked", "{run:?}");
        assert!(run.stderr.contains("not the key of this store"), "{run:?}");
    }
    // The core: a typed error.
    let wrong_key = StoreKey::from_hex(&wrong).unwrap();
    match Client::open(&store, &wrong_key, ClientConfig::default()) {
        Err(Error::Store(StoreError::Locked)) => {}
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    assert_eq!(files_under(&store), before, "a wrong key changed the store");

    // No key, a malformed key, a key file inside the store: told what to do, nothing changed.
    let no_key: hattama_tests::Run = Hattama::new(&store)
        .command(&["list", "--json"])
        .env_remove("HATTAMA_STORE_KEY")
        .output()
        .unwrap()
        .into();
    assert_eq!((no_key.code, &no_key.json()["error"]), (Some(2), &Value::from("usage")));
    assert!(no_key.stderr.contains("hattama new-key"), "{no_key:?}");
    let inside = store.join("my.key");
    std::fs::write(&inside, TEST_KEY_HEX).unwrap();
    let run: hattama_tests::Run = Hattama::new(&store)
        .command(&["list", "--key-file", inside.to_str().unwrap()])
        .output()
        .unwrap()
        .into();
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("inside the store"), "{run:?}");
    std::fs::remove_file(&inside).unwrap();
    assert_eq!(files_under(&store), before);
    assert_eq!(
        Hattama::new(&store).run(&["list", "--json"]).ok_json().as_array().unwrap().len(),
        4
    );

    // With the key, a receipt changed behind the core's back no longer verifies.
    let client = Client::open(&store, &test_key(), ClientConfig::default()).unwrap();
    let receipted: Vec<_> = client
        .list()
        .unwrap()
        .into_iter()
        .filter(|r| r.state.name() == "receipted")
        .map(|r| r.id.to_hex())
        .collect();
    assert_eq!(receipted.len(), 2);
    client
        .store()
        .write(|tx| -> Result<(), StoreError> {
            let raw: Vec<u8> = tx.query_row(
                "SELECT receipt FROM receipts WHERE capture_id = ?1",
                [&receipted[0]],
                |r| r.get(0),
            )?;
            let mut forged: Value = serde_json::from_slice(&raw).unwrap();
            let at = forged["receipt"]["received_at_ms"].as_u64().unwrap();
            forged["receipt"]["received_at_ms"] = Value::from(at + 1);
            tx.execute(
                "UPDATE receipts SET receipt = ?1 WHERE capture_id = ?2",
                rusqlite::params![serde_json::to_vec(&forged).unwrap(), &receipted[0]],
            )?;
            Ok(())
        })
        .unwrap();
    match client.verify_receipt(&receipted[0]) {
        Err(Error::Sync(hattama_core::sync::SyncError::ReceiptInvalid { .. })) => {}
        other => panic!("a forged receipt: {:?}", other.map(|_| ())),
    }
    client.verify_receipt(&receipted[1]).unwrap();
}

#[test]
fn rekey_moves_the_store_to_a_new_key_and_a_crash_leaves_one_of_the_two() {
    let dir = tempfile::tempdir().unwrap();
    let new_key = dir.path().join("new.key");
    let new_hex = "a1".repeat(32);
    std::fs::write(&new_key, &new_hex).unwrap();
    let with_key = |store: &Path, hex: &str, args: &[&str]| -> hattama_tests::Run {
        Hattama::new(store).command(args).env("HATTAMA_STORE_KEY", hex).output().unwrap().into()
    };
    let photo = dir.path().join("p.jpg");
    std::fs::write(&photo, textured_jpeg(320, 240, 5, 90)).unwrap();
    // Killed before and after the new key file's rename: exactly one key opens the store.
    for (point, new_opens) in [
        ("rekey:before-rename", false),
        ("blob:after-temp-write", false),
        ("blob:after-rename", true),
    ] {
        let store = dir.path().join(point.replace(':', "-"));
        Hattama::new(&store).capture(&photo, "p1").ok_json();
        let mut child = Hattama::new(&store)
            .command(&["rekey", "--new-key-file", new_key.to_str().unwrap()])
            .env("HATTAMA_TEST_PAUSE_AT", point)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("hattama-paused") {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "rekey did not pause at {point}");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let (good, bad) =
            if new_opens { (&new_hex[..], TEST_KEY_HEX) } else { (TEST_KEY_HEX, &new_hex[..]) };
        assert_eq!(with_key(&store, bad, &["list", "--json"]).code, Some(12), "{point}");
        let listed = with_key(&store, good, &["list", "--json"]).ok_json();
        assert_eq!(listed.as_array().unwrap().len(), 1, "{point}");
    }
    // Run to its end: the old key no longer opens the store, the new one does, and nothing
    // but the sealed key file changed.
    let store = dir.path().join("done");
    Hattama::new(&store).capture(&photo, "p1").ok_json();
    let before = files_under(&store);
    let run =
        Hattama::new(&store).run(&["rekey", "--new-key-file", new_key.to_str().unwrap(), "--json"]);
    assert_eq!(run.ok_json()["rekeyed"], true);
    let after = files_under(&store);
    let changed: Vec<_> = after.keys().filter(|k| before.get(*k) != after.get(*k)).collect();
    // The sealed key is new; the photos are not rewritten (opening the store may touch the
    // database's WAL).
    assert!(changed.contains(&&PathBuf::from("store.key")), "{changed:?}");
    assert!(
        changed
            .iter()
            .all(|p| p == &Path::new("store.key")
                || p.to_string_lossy().starts_with("hattama.sqlite3")),
        "{changed:?}"
    );
    assert_eq!(Hattama::new(&store).run(&["list"]).code, Some(12));
    assert_eq!(
        with_key(&store, &new_hex, &["list", "--json"]).ok_json().as_array().unwrap().len(),
        1
    );
}

/// The `hattama` binary with no store key in its environment.
fn hattama_without_key(store: &Path, args: &[&str]) -> hattama_tests::Run {
    Command::new(bin("hattama"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("HATTAMA_STORE_KEY")
        .env_remove("HATTAMA_STORE_KEY_FILE")
        .output()
        .unwrap()
        .into()
}

#[test]
fn the_panic_wipe_erases_the_key_first_and_leaves_nothing_readable() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let server = busy_store(&store);
    let client = Client::open(&store, &test_key(), ClientConfig::default()).unwrap();
    let needles = needles(&client, &server.url);
    drop(client);
    // What the flash may keep of the files after they are removed: their bytes as they were.
    let former = files_under(&store);
    // A hard link outside the store sees what happens to the key file's own blocks.
    let key_link = dir.path().join("key-link");
    std::fs::hard_link(store.join("store.key"), &key_link).unwrap();
    let sealed_key = std::fs::read(&key_link).unwrap();

    // No key needed.
    let run = hattama_without_key(&store, &["wipe", "--json"]);
    let wiped = run.ok_json();
    assert_eq!(wiped["wiped"], true);
    assert!(wiped["erased_ms"].as_f64().unwrap() <= wiped["removed_ms"].as_f64().unwrap());
    assert!(!store.exists(), "the store directory is gone");
    let overwritten = std::fs::read(&key_link).unwrap();
    assert_eq!(overwritten.len(), sealed_key.len());
    assert_ne!(overwritten, sealed_key, "the key file was overwritten in place before removal");

    // The former files (without the destroyed key) give nothing away, even with the right key.
    let found = needles.found(&former);
    assert!(found.is_empty(), "{found:#?}");
    let restored = dir.path().join("restored");
    for (path, bytes) in &former {
        let to = restored.join(path);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let bytes = if path == Path::new("store.key") { &overwritten } else { bytes };
        std::fs::write(to, bytes).unwrap();
    }
    match Client::open(&restored, &test_key(), ClientConfig::default()) {
        Err(Error::Store(StoreError::Locked)) => {}
        other => panic!("a wiped store opened: {:?}", other.map(|_| ())),
    }
    std::fs::remove_file(restored.join("store.key")).unwrap();
    assert!(Client::open(&restored, &test_key(), ClientConfig::default()).is_err());

    // Wiping again is no error; a new store may start in its place.
    assert_eq!(hattama_without_key(&store, &["wipe"]).code, Some(0));
    assert_eq!(Hattama::new(&store).run(&["list", "--json"]).ok_json(), Value::Array(vec![]));
}

#[test]
fn wiping_a_store_of_a_thousand_captures_leaves_nothing_readable() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let client = Client::open(&store, &test_key(), ClientConfig::default()).unwrap();
    for i in 0..1000 {
        let captured =
            client.capture(&textured_jpeg(96, 72, i as u32 + 1, 80), &request(i)).unwrap();
        if i % 10 == 0 {
            client.thumbnail(&captured.id.to_hex()).unwrap();
        }
    }
    let needles = needles(&client, "http://127.0.0.1:");
    assert!(needles.0.len() > 6000);
    drop(client);
    let former = files_under(&store);
    assert!(former.len() >= 1100, "{} files", former.len());

    let wiped = hattama_core::store::wipe(&store).unwrap();
    println!(
        "wiped a store of 1,000 captures ({} files): unreadable after {:.2} ms, removed after {:.1} ms",
        former.len(),
        wiped.erased_after.as_secs_f64() * 1e3,
        wiped.removed_after.as_secs_f64() * 1e3
    );
    assert!(!store.exists());
    let found = needles.found(&former);
    assert!(found.is_empty(), "{found:#?}");
    // The former files without their key: the right store key opens nothing.
    let restored = dir.path().join("restored");
    for (path, bytes) in former.iter().filter(|(p, _)| *p != Path::new("store.key")) {
        let to = restored.join(path);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, bytes).unwrap();
    }
    assert!(Client::open(&restored, &test_key(), ClientConfig::default()).is_err());
}

/// Copies a directory tree.
fn copy_tree(from: &Path, to: &Path) {
    for (path, bytes) in files_under(from) {
        let target = to.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
    for sub in ["blobs", "tmp", "thumbs"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
    }
}

/// Whether the store in `dir` is still the plain store it was (its database unencrypted, with
/// `captures` rows, each live photo in the clear under its hash), or else the encrypted store
/// whole, as `check_store_consistent` checks it. Returns which.
fn one_whole_store(dir: &Path, captures: usize, live: usize) -> &'static str {
    let header = std::fs::read(dir.join("hattama.sqlite3")).unwrap();
    if header.starts_with(b"SQLite format 3\0") {
        let plain = rusqlite::Connection::open(dir.join("hattama.sqlite3")).unwrap();
        let rows: i64 = plain.query_row("SELECT count(*) FROM captures", [], |r| r.get(0)).unwrap();
        assert_eq!(rows as usize, captures);
        let mut stmt = plain
            .prepare("SELECT photo_sha256 FROM captures WHERE photo_sha256 IS NOT NULL")
            .unwrap();
        let photos: Vec<String> =
            stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        assert_eq!(photos.len(), live);
        for sha in photos {
            let photo = std::fs::read(dir.join("blobs").join(&sha)).unwrap();
            assert_eq!(Sha256Hash::of(&photo).to_hex(), sha);
        }
        "plain"
    } else {
        assert_eq!(check_store_consistent(dir), live);
        "encrypted"
    }
}

#[test]
fn a_plain_store_is_encrypted_in_place_and_a_kill_at_any_point_leaves_one_whole_store() {
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    // A store as the version before encryption kept it: six captures, one deleted.
    let source = dir.path().join("source");
    let client = Client::open(&source, &test_key(), ClientConfig::default()).unwrap();
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(
            client.capture(&textured_jpeg(400, 300, i + 1, 90), &request(i as usize)).unwrap().id,
        );
    }
    client.delete(&ids[2].to_hex()).unwrap();
    let plain = dir.path().join("plain");
    hattama_core::store::upgrade::export_plain(client.store(), &plain).unwrap();
    drop(client);
    assert_eq!(one_whole_store(&plain, 6, 5), "plain");

    let run_upgrade = |store: &Path, pause: Option<&str>| {
        let mut command = Hattama::new(store).command(&["list", "--json"]);
        if let Some(point) = pause {
            command.env("HATTAMA_TEST_PAUSE_AT", point);
        }
        command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
    };
    // Undisturbed: how long it takes, so that random kills land all over it.
    let store = dir.path().join("whole");
    copy_tree(&plain, &store);
    let started = std::time::Instant::now();
    assert!(run_upgrade(&store, None).wait().unwrap().success());
    let took = started.elapsed();
    assert_eq!(one_whole_store(&store, 6, 5), "encrypted");

    // At every pause point of the conversion.
    for (i, point) in hattama_core::hooks::UPGRADE_POINTS.iter().enumerate() {
        let store = dir.path().join(format!("point-{i}"));
        copy_tree(&plain, &store);
        let mut child = run_upgrade(&store, Some(point));
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("hattama-paused") {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "did not pause at {point}");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let was = one_whole_store(&store, 6, 5);
        println!("killed at {point}: {was}");
        // Opened again with the key, it ends encrypted and whole.
        assert_eq!(check_store_consistent(&store), 5, "after {point}");
        assert_eq!(one_whole_store(&store, 6, 5), "encrypted", "after {point}");
    }
    // And at 50 random moments.
    let mut outcomes = BTreeMap::new();
    for i in 0..50 {
        let store = dir.path().join(format!("random-{i}"));
        copy_tree(&plain, &store);
        let mut child = run_upgrade(&store, None);
        let at = took.mul_f64(rng.gen_range(0.0..1.2));
        std::thread::sleep(at);
        let _ = child.kill();
        child.wait().unwrap();
        *outcomes.entry(one_whole_store(&store, 6, 5)).or_insert(0) += 1;
        assert_eq!(check_store_consistent(&store), 5);
        assert_eq!(one_whole_store(&store, 6, 5), "encrypted");
    }
    println!("undisturbed conversion {took:?}; killed at random: {outcomes:?}");
}

/// Runs `hattama sync` on `cli`'s store until it pauses at `point`, then kills it (SIGKILL).
/// Returns whether it reached the point.
fn kill_sync_at(cli: &Hattama, point: &str) -> bool {
    let mut child = cli
        .command(&["sync"])
        .env("HATTAMA_TEST_PAUSE_AT", point)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let wanted = format!("hattama-paused {point}");
    let reached = BufReader::new(stderr).lines().map_while(Result::ok).any(|l| l == wanted);
    child.kill().unwrap();
    child.wait().unwrap();
    reached
}

/// Which of a store's files hold the photo and thumbnail of `id` (photo `sha`).
fn photo_files(store: &Path, id: &Sha256Hash, sha: &Sha256Hash) -> (bool, bool) {
    let client = Client::open(store, &test_key(), ClientConfig::default()).unwrap();
    let blobs = client.store().blobs();
    (blobs.path(sha).exists(), blobs.thumb_path(id).exists())
}

#[test]
fn photos_leave_the_phone_only_after_the_verified_receipt_and_their_export_still_verifies() {
    let mut election = hattama_tests::fixtures::election("e2e", PRECINCTS.len());
    election["high_risk"] = Value::Bool(true);
    let server = TestServer::start_with(&election, &[]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let cli = Hattama::new(&store);
    let code = &server.invite(&PRECINCTS, 1)[0];
    cli.run(&["enroll", &server.url, code, "--json"]).ok_json();
    // Photo A at two stations (one photo file for two captures), photo B at a third.
    let (a, b) = (dir.path().join("a.jpg"), dir.path().join("b.jpg"));
    std::fs::write(&a, textured_jpeg(640, 480, 1, 90)).unwrap();
    std::fs::write(&b, textured_jpeg(640, 480, 2, 90)).unwrap();
    let mut ids = Vec::new();
    for (photo, precinct) in [(&a, PRECINCTS[0]), (&b, PRECINCTS[1]), (&a, PRECINCTS[2])] {
        let captured = cli.capture(photo, precinct).ok_json();
        let id = Sha256Hash::from_hex(captured["id"].as_str().unwrap()).unwrap();
        let sha = Sha256Hash::from_hex(captured["photo_sha256"].as_str().unwrap()).unwrap();
        let thumb = dir.path().join("thumb.jpg");
        assert_eq!(cli.run(&["thumbnail", &id.to_hex(), thumb.to_str().unwrap()]).code, Some(0));
        ids.push((id, sha));
    }
    let (first, first_sha) = ids[0];

    // Killed after the receipt was fetched and verified, before it was stored: the capture has
    // no receipt, and its photo and thumbnail are still on the phone.
    assert!(kill_sync_at(&cli, "sync:before-receipt-commit"));
    let shown = cli.run(&["show", &first.to_hex(), "--json"]).ok_json();
    assert_eq!(
        (shown["state"].as_str(), shown["photo_on"].as_str()),
        (Some("uploading"), Some("device"))
    );
    assert_eq!(photo_files(&store, &first, &first_sha), (true, true));

    // Killed between the commit that records the removal and the removal of the files: the
    // first capture is receipted and its photo recorded as gone; its thumbnail file is still
    // there until the store is opened again. Photo A stays: the third capture still needs it.
    assert!(kill_sync_at(&cli, "retention:after-commit"));
    let client = Client::open(&store, &test_key(), ClientConfig::default()).unwrap();
    let record = client.resolve(&first.to_hex()).unwrap();
    assert_eq!(record.state.name(), "receipted");
    assert!(record.photo_removed_at_ms.is_some());
    assert!(matches!(client.photo(&first.to_hex()), Err(Error::PhotoOnServer(_))));
    assert!(matches!(client.thumbnail(&first.to_hex()), Err(Error::PhotoOnServer(_))));
    assert!(client.photo(&ids[2].0.to_hex()).is_ok(), "the third capture keeps photo A");
    drop(client);
    assert_eq!(photo_files(&store, &first, &first_sha), (true, false));
    assert_eq!(check_store_consistent(&store), 3);

    // The rest is sent: every photo and thumbnail leaves the phone, nothing else does.
    let summary = cli.run(&["sync", "--json"]).ok_json();
    assert_eq!(summary["remaining"], 0, "{summary}");
    for (id, sha) in &ids {
        let shown = cli.run(&["show", &id.to_hex(), "--json"]).ok_json();
        assert_eq!(shown["state"], "receipted", "{shown}");
        assert_eq!(shown["photo_on"], "server", "{shown}");
        assert!(shown["receipt"].is_object() && shown["manifest"].is_object(), "{shown}");
        assert_eq!(shown["photo_sha256"].as_str(), Some(sha.to_hex().as_str()));
        assert!(
            shown["photo"].as_str().unwrap().contains(&format!("{}/photos/{sha}", server.url)),
            "{shown}"
        );
        assert_eq!(photo_files(&store, id, sha), (false, false));
        // The receipt still verifies under the pinned keys without the photo.
        let client = Client::open(&store, &test_key(), ClientConfig::default()).unwrap();
        client.verify_receipt(&id.to_hex()).unwrap();
    }
    assert_eq!(std::fs::read_dir(store.join("blobs")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(store.join("thumbs")).unwrap().count(), 0);
    let human = cli.run(&["show", &first.to_hex()]);
    assert!(human.stdout.contains("the photo is on the server only"), "{human:?}");
    let thumb =
        cli.run(&["thumbnail", &first.to_hex(), dir.path().join("t.jpg").to_str().unwrap()]);
    assert_eq!(thumb.code, Some(4), "{thumb:?}");
    assert_eq!(check_store_consistent(&store), 3);

    // Its export has the manifest and signature, not the photo, and verifies with the
    // server's copy: fetched from the server, or given as a file.
    let bundle = dir.path().join("bundle");
    let export = cli.run(&["export", &first.to_hex(), bundle.to_str().unwrap()]);
    assert_eq!(export.code, Some(0), "{export:?}");
    assert!(export.stdout.contains("without the photo"), "{export:?}");
    let mut names: Vec<String> = std::fs::read_dir(&bundle)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["manifest.json", "manifest.sig"]);
    let alone = cli.run(&["verify", bundle.to_str().unwrap(), "--json"]);
    assert_eq!(
        (alone.code, alone.json()["error"].as_str()),
        (Some(6), Some("verification_failed")),
        "{alone:?}"
    );
    assert!(alone.stderr.contains("--server"), "{alone:?}");
    let verified =
        cli.run(&["verify", bundle.to_str().unwrap(), "--server", &server.url, "--json"]).ok_json();
    assert_eq!(verified["valid"], true);
    assert_eq!(verified["id"].as_str(), Some(first.to_hex().as_str()));
    let served = hattama_tests::stored_photo(&server.data_dir, &first_sha.to_hex()).unwrap();
    let copy = dir.path().join("server-copy.jpg");
    std::fs::write(&copy, &served).unwrap();
    let given =
        cli.run(&["verify", bundle.to_str().unwrap(), "--photo", copy.to_str().unwrap(), "--json"]);
    assert_eq!(given.ok_json()["valid"], true);
    // Another photo does not verify it.
    let wrong =
        cli.run(&["verify", bundle.to_str().unwrap(), "--photo", b.to_str().unwrap(), "--json"]);
    assert_eq!(wrong.code, Some(6), "{wrong:?}");
}

#[test]
fn each_election_gets_its_own_device_key_and_chain_and_nothing_public_links_them() {
    let server = TestServer::start_with_election(PRECINCTS.len());
    let second = hattama_tests::fixtures::election("senate-2027", PRECINCTS.len());
    hattama_tests::server::import_election(&server.data_dir, &second);
    let invite = |election: &str| {
        let run = hattama_tests::server::admin(
            &server.data_dir,
            &["invite", "create", "--election", election, "--precinct", "p0001", "--json"],
        );
        run.ok_json()[0]["code"].as_str().unwrap().to_owned()
    };
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("protocol.jpg");
    std::fs::write(&photo, textured_jpeg(640, 480, 5, 90)).unwrap();
    let photo = photo.to_str().unwrap();

    // One enrollment per election, each in its own store: each with its own device key.
    let mut exported = Vec::new();
    for (name, election) in [("first", "e2e"), ("second", "senate-2027")] {
        let cli = Hattama::new(&dir.path().join(name));
        let enrolled = cli.run(&["enroll", &server.url, &invite(election), "--json"]).ok_json();
        assert_eq!(enrolled["election"], election, "{enrolled}");
        for _ in 0..2 {
            let run = cli.run(&["capture", photo, "--election", election, "--precinct", "p0001"]);
            assert_eq!(run.code, Some(0), "{run:?}");
        }
        assert_eq!(cli.run(&["sync", "--json"]).ok_json()["receipted"], 2);
        let first = cli.run(&["list", "--json"]).ok_json()[1]["id"].as_str().unwrap().to_owned();
        let bundle = dir.path().join(format!("{name}-bundle"));
        assert_eq!(cli.run(&["export", &first, bundle.to_str().unwrap()]).code, Some(0));
        let verified = cli.run(&["verify", bundle.to_str().unwrap(), "--json"]).ok_json();
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
        // Its own chain: the first capture of each election is #1 and names no earlier one.
        assert_eq!(
            (verified["seq"].as_u64(), manifest["prev"].as_str()),
            (Some(1), Some("0".repeat(64).as_str()))
        );
        assert_eq!(verified["election"], election);
        exported.push(verified);

        // A store enrolled for one election does not enroll for another: its key signs for
        // one election only. The observer is told to use a new store.
        let other = if election == "e2e" { "senate-2027" } else { "e2e" };
        let refused = cli.run(&["enroll", &server.url, &invite(other), "--json"]);
        assert_eq!(refused.code, Some(3), "{refused:?}");
        assert_eq!(refused.json()["server_error"], "other_election", "{refused:?}");
        assert!(refused.stderr.contains("enroll with a new store"), "{refused:?}");
    }
    let (a, b) = (&exported[0], &exported[1]);
    assert_ne!(a["device_key"], b["device_key"]);
    assert_ne!(a["device_fingerprint"], b["device_fingerprint"]);

    // On the server: two devices, one per election, with exactly these keys' fingerprints.
    let devices = hattama_tests::server::admin(&server.data_dir, &["device", "list", "--json"]);
    let mut devices: Vec<(String, String)> = devices
        .ok_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["election"].as_str().unwrap().to_owned(),
                d["fingerprint"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    devices.sort();
    let mut expected = vec![
        ("e2e".to_owned(), a["device_fingerprint"].as_str().unwrap().to_owned()),
        ("senate-2027".to_owned(), b["device_fingerprint"].as_str().unwrap().to_owned()),
    ];
    expected.sort();
    assert_eq!(devices, expected);

    // Before any enrollment, a store's key signs for the election of its first capture only.
    let fresh = Hattama::new(&dir.path().join("fresh"));
    let run = fresh.run(&["capture", photo, "--election", "e2e", "--precinct", "p0001"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let other = fresh.run(&[
        "capture",
        photo,
        "--election",
        "senate-2027",
        "--precinct",
        "p0001",
        "--json",
    ]);
    assert_eq!((other.code, other.json()["error"].as_str()), (Some(3), Some("wrong_election")));
    assert!(other.stderr.contains("use a new store for senate-2027"), "{other:?}");
    assert_eq!(fresh.run(&["list", "--json"]).ok_json().as_array().unwrap().len(), 1);
}
