//! [FFI] end to end: the bindings that `scripts/bindings` generated from `hattama-ffi` drive the
//! whole flow against the real server, through the fault-injecting proxy, from Python (CPython,
//! ctypes only) and from Kotlin on the JVM (kotlinc + JNA). This driver starts the server and
//! the proxy, creates enrollment codes, runs the programs of `tests/ffi/` with the server's URL,
//! the codes and real photos in their environment, and then checks on the server's own list that
//! every capture the programs hold a receipt for is stored there with the signed photo.
//!
//! Needs `scripts/bindings` to have run (scripts/test does), and for Kotlin the compiler that
//! scripts/test installs into `tests/ffi/kotlin/node_modules` plus Debian's `libjna-java`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use hattama_core::evidence::Sha256Hash;
use hattama_tests::proxy::{FaultConfig, FaultProxy};
use hattama_tests::review::{PASSWORD, add_user};
use hattama_tests::server::{TestServer, admin};
use hattama_tests::{GO_IMAGE, GOEXIF, files, sample_dir};
use serde_json::Value;

const PRECINCTS: [&str; 3] = ["p0001", "p0002", "p0003"];
const JNA: &str = "/usr/share/java/jna.jar";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// The generated bindings of one language, with a check that they exist and are newer than the
/// sources of the library they were generated from.
fn bindings(language: &str) -> PathBuf {
    let dir = root().join("build/bindings").join(language);
    let copy = dir.join("libhattama_ffi.so");
    assert!(copy.exists(), "{} has no bindings: run scripts/bindings first", dir.display());
    for src in ["ffi/src", "client-core/src"] {
        let newest = newest_file(&root().join(src));
        assert!(
            newest.1 <= modified(&copy),
            "{} is newer than the bindings in {}: run scripts/bindings again",
            newest.0.display(),
            dir.display()
        );
    }
    dir
}

/// The most recently modified file under `dir`, with its time.
fn newest_file(dir: &Path) -> (PathBuf, SystemTime) {
    let mut newest = (dir.to_owned(), SystemTime::UNIX_EPOCH);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let candidate =
            if path.is_dir() { newest_file(&path) } else { (path.clone(), modified(&path)) };
        if candidate.1 > newest.1 {
            newest = candidate;
        }
    }
    newest
}

/// Real photos that decode: Go's JPEG test data and the goexif samples with image data (their
/// EXIF blocks carry GPS positions, makers and serial numbers).
fn photos() -> Vec<PathBuf> {
    let mut all = files(&sample_dir(&format!("{GO_IMAGE}/testdata")), &["jpeg"]);
    all.extend(files(&sample_dir(&format!("{GOEXIF}/samples")), &["jpg"]));
    all.push(PathBuf::from(format!("{GOEXIF}/sample1.jpg")));
    all.retain(|p| {
        !p.to_string_lossy().contains("truncated")
            && image::load_from_memory(&std::fs::read(p).unwrap()).is_ok()
    });
    assert!(all.len() >= 20, "expected the Debian samples, found {}", all.len());
    all
}

/// A server with the election `e2e`, a faulty proxy in front of it, codes and a scratch dir.
struct Setup {
    server: TestServer,
    proxy: FaultProxy,
    codes: Vec<String>,
    work: tempfile::TempDir,
}

impl Setup {
    fn start(codes: usize, seed: u64) -> Self {
        // One station more than the codes are for: a capture for it is refused on the device.
        // The stress tests capture ~100 photos of a few stations from one device: far above the
        // default quota per station (which follows the protocol's pages).
        let server = TestServer::start_with(
            &hattama_tests::fixtures::election("e2e", PRECINCTS.len() + 1),
            &[("HATTAMA__LIMITS__MAX_CAPTURES_PER_PRECINCT", "1000")],
        );
        let codes = server.invite(&PRECINCTS, codes);
        // 90 % of connections cut within their first 48 KiB (the photos are small), 5 % stalled
        // for a second first, chunks delayed: a bad mobile network.
        let faults = FaultConfig {
            cut_probability: 0.9,
            max_cut_after: 48 * 1024,
            ..FaultConfig::harsh(seed)
        };
        let proxy = FaultProxy::start(server.addr, faults).unwrap();
        Self { server, proxy, codes, work: tempfile::tempdir().unwrap() }
    }

    /// The environment the test programs read (tests/ffi/python/test_hattama.py explains it).
    fn env(&self, command: &mut Command, photos: &[PathBuf]) -> PathBuf {
        let result = self.work.path().join("receipted.jsonl");
        let photos = std::env::join_paths(photos).unwrap();
        command
            .env("HATTAMA_URL", self.proxy.url())
            .env("HATTAMA_CODES", self.codes.join(","))
            .env("HATTAMA_PRECINCTS", PRECINCTS.join(","))
            .env("HATTAMA_UNASSIGNED", hattama_tests::fixtures::precinct_id(PRECINCTS.len() + 1))
            .env("HATTAMA_PHOTOS", photos)
            .env("HATTAMA_WORK", self.work.path())
            .env("HATTAMA_RESULT", &result);
        result
    }

    /// Every capture a program holds a verified receipt for is on the server, with its photo.
    fn check_receipts_are_on_the_server(&self, result: &Path) -> usize {
        let run = admin(&self.server.data_dir, &["capture", "list", "--json"]);
        let stored: HashMap<String, Value> = run
            .ok_json()
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["id"].as_str().unwrap().to_owned(), c.clone()))
            .collect();
        let text = std::fs::read_to_string(result).unwrap();
        let mut held = 0;
        for line in text.lines() {
            let held_receipt: Value = serde_json::from_str(line).unwrap();
            let id = held_receipt["id"].as_str().unwrap();
            let on_server = stored.get(id).unwrap_or_else(|| panic!("{id} is not on the server"));
            let sha = held_receipt["photo_sha256"].as_str().unwrap();
            assert_eq!(on_server["photo_sha256"], sha, "{id}");
            let blob = hattama_tests::stored_photo(&self.server.data_dir, sha).unwrap();
            assert_eq!(Sha256Hash::of(&blob).to_hex(), sha);
            held += 1;
        }
        held
    }
}

/// Runs a test program to completion, printing its output; panics unless it exits 0.
fn run(what: &str, command: &mut Command) {
    let start = Instant::now();
    let out = command.output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    println!("{what} ({:.1} s):", start.elapsed().as_secs_f64());
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed: {}", out.status);
}

#[test]
fn python_bindings_drive_the_whole_flow_against_the_real_server() {
    let python = bindings("python");
    let setup = Setup::start(12, 11);
    // A coordinator, whose decisions the Python program takes in the review UI (directly, not
    // through the faulty proxy) and then finds in the app's capture list.
    add_user(&setup.server.data_dir, "coord", "Coordinator", "coordinator", &[]);
    let mut command = Command::new("python3");
    command
        .env("HATTAMA_SERVER_URL", &setup.server.url)
        .env("HATTAMA_REVIEWER", "coord")
        .env("HATTAMA_REVIEWER_PASSWORD", PASSWORD);
    command
        .arg("-u")
        .arg(root().join("tests/ffi/python/test_hattama.py"))
        .env("PYTHONPATH", &python)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let result = setup.env(&mut command, &photos());
    run("python3 tests/ffi/python/test_hattama.py", &mut command);

    // flow (all photos but the deleted one), busy 1, throws 3, dropped 4, cancel 3, stress 96,
    // safety 1 (recorded before its store was wiped).
    let held = setup.check_receipts_are_on_the_server(&result);
    assert_eq!(held, photos().len() - 1 + 1 + 3 + 4 + 3 + 96 + 1);
    assert!(setup.proxy.cuts() >= 5, "the network was not faulty: {} cuts", setup.proxy.cuts());
    let (cuts, connections) = (setup.proxy.cuts(), setup.proxy.connections());
    println!(
        "{held} receipts checked on the server; the proxy cut {cuts} of {connections} connections"
    );
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path).and_then(|m| m.modified()).unwrap()
}

/// Compiles the generated Kotlin and the test program into one jar with the Kotlin runtime
/// (again only when a source is newer than the jar: kotlinc takes about a minute).
fn kotlin_jar(generated: &Path) -> PathBuf {
    let kotlinc = root().join("tests/ffi/kotlin/node_modules/kotlin-compiler/bin/kotlinc");
    assert!(kotlinc.exists(), "{} is missing: scripts/test installs it", kotlinc.display());
    assert!(Path::new(JNA).exists(), "{JNA} is missing: scripts/test installs libjna-java");
    let sources = [
        generated.join("uniffi/hattama_ffi/hattama_ffi.kt"),
        root().join("tests/ffi/kotlin/HattamaFfiTest.kt"),
    ];
    let jar = root().join("build/ffi-kotlin/hattama-ffi-test.jar");
    if jar.exists() && sources.iter().all(|s| modified(s) < modified(&jar)) {
        return jar;
    }
    // Written elsewhere and renamed, so that an interrupted build leaves no jar (kotlinc writes
    // a jar only to a path ending in `.jar`).
    let tmp = root().join("build/ffi-kotlin/tmp/hattama-ffi-test.jar");
    std::fs::create_dir_all(tmp.parent().unwrap()).unwrap();
    run(
        "kotlinc",
        Command::new(&kotlinc)
            .args(&sources)
            .args(["-cp", JNA, "-include-runtime", "-nowarn", "-d"])
            .arg(&tmp),
    );
    std::fs::rename(&tmp, &jar).unwrap();
    jar
}

#[test]
fn kotlin_bindings_compile_and_drive_the_flow_on_the_jvm() {
    let kotlin = bindings("kotlin");
    let jar = kotlin_jar(&kotlin);
    let setup = Setup::start(5, 23);
    let photos = photos();
    let mut command = Command::new("java");
    command
        .arg("-cp")
        .arg(std::env::join_paths([jar.as_path(), Path::new(JNA)]).unwrap())
        .arg(format!("-Djna.library.path={}", kotlin.display()))
        .arg("HattamaFfiTestKt");
    let result = setup.env(&mut command, &photos);
    run("java HattamaFfiTestKt", &mut command);

    let held = setup.check_receipts_are_on_the_server(&result);
    // flow (all photos but the deleted one), close cancels 3, threads 20.
    assert_eq!(
        held,
        photos.len() - 1 + 3 + 20 + 1,
        "every receipt of the Kotlin program is honoured"
    );
    let (cuts, connections) = (setup.proxy.cuts(), setup.proxy.connections());
    println!(
        "{held} receipts checked on the server; the proxy cut {cuts} of {connections} connections"
    );
}
