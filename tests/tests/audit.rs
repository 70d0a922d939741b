//! [Log] auditor end to end: `hattama audit` against the real server and against static mirrors
//! of its log files served by a third-party web server (Python's `http.server`), clean and
//! tampered; `--follow` while captures arrive; forks, rewrites and shrinks of a log written by
//! an independent implementation of the format in this file.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hattama_tests::static_site::StaticSite;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey};
use hattama_core::audit::{AuditConfig, Auditor, Problem};
use hattama_core::evidence::{PhotoInfo, Sha256Hash};
use hattama_core::log::{self, LogKey};
use hattama_core::media::{self, MediaLimits};
use hattama_tests::backend::copy_objects;
use hattama_tests::raw::RawDevice;
use hattama_tests::server::TestServer;
use hattama_tests::{Run, bin, copy_dir, textured_jpeg};
use serde_json::Value;
use sha2::{Digest, Sha256};

const PRECINCTS: [&str; 5] = ["p0001", "p0002", "p0003", "p0004", "p0005"];

// ---------------------------------------------------------------------------------------------
// Helpers

/// `hattama audit ARGS...`.
fn audit(args: &[&str]) -> Run {
    Command::new(bin("hattama")).arg("audit").args(args).output().unwrap().into()
}

/// The problems of an audit's JSON report as (kind, location) pairs.
fn problems(run: &Run) -> Vec<(String, String)> {
    let report = run.json();
    report["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problem list: {run:?}"))
        .iter()
        .map(|p| {
            (p["kind"].as_str().unwrap().to_owned(), p["location"].as_str().unwrap().to_owned())
        })
        .collect()
}

fn has(found: &[(String, String)], kind: &str, location: &str) -> bool {
    found.iter().any(|(k, l)| k == kind && l == location)
}

/// A photo as a device signs it, distinct for every seed.
fn photo(seed: u32) -> (Vec<u8>, PhotoInfo) {
    let clean = media::strip(&textured_jpeg(48, 32, seed, 80), &MediaLimits::default()).unwrap();
    let info = PhotoInfo {
        bytes: clean.bytes.len() as u64,
        height: clean.height,
        media_type: clean.media_type,
        orientation: clean.orientation,
        sha256: Sha256Hash::of(&clean.bytes),
        width: clean.width,
    };
    (clean.bytes, info)
}

/// A server on a five-precinct election whose devices may send many photos of one precinct (these
/// tests send up to 120 a device; the default quota follows the protocol's pages).
fn start() -> TestServer {
    let election = hattama_tests::fixtures::election("e2e", 5);
    TestServer::start_with(&election, &[("HATTAMA__LIMITS__MAX_CAPTURES_PER_PRECINCT", "1000")])
}

/// Uploads `per_device` captures from each of `devices` new devices (in parallel), spread over
/// the precincts; returns when all are receipted.
fn upload(server: &TestServer, devices: usize, per_device: usize, seed: u8) {
    let codes = server.invite(&PRECINCTS, devices);
    let threads: Vec<_> = codes
        .into_iter()
        .enumerate()
        .map(|(d, code)| {
            let url = server.url.clone();
            std::thread::spawn(move || {
                let mut device = RawDevice::new(seed + d as u8);
                assert_eq!(device.enroll(&url, &code).status, 200);
                for i in 0..per_device {
                    let (bytes, info) = photo(u32::from(seed) * 100_000 + (d * 1000 + i) as u32);
                    let signed = device.sign(PRECINCTS[(d + i) % PRECINCTS.len()], &info);
                    let answer = device.upload(&url, &signed, &bytes);
                    assert_eq!(answer.status, 200, "{answer:?}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn log_key(url: &str) -> Value {
    reqwest::blocking::get(format!("{url}/api/v1/log/key")).unwrap().json().unwrap()
}

/// Waits until the served checkpoint has `size` entries.
fn wait_for_size(url: &str, key: &LogKey, size: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let note = reqwest::blocking::get(format!("{url}/log/checkpoint")).unwrap().bytes();
        if let Ok(note) = note
            && let Ok(cp) = log::verify_checkpoint(&note, key)
            && cp.size >= size
        {
            assert_eq!(cp.size, size);
            return;
        }
        assert!(Instant::now() < deadline, "the log did not reach {size} entries");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The entries of a bundle file.
fn bundle(path: &Path) -> Vec<Vec<u8>> {
    log::parse_entry_bundle(&std::fs::read(path).unwrap())
        .unwrap()
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect()
}

fn write_bundle(path: &Path, entries: &[Vec<u8>]) {
    std::fs::write(path, log::entry_bundle(entries.iter().map(Vec::as_slice))).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The live server and its mirrors

#[test]
fn a_live_log_and_its_mirror_audit_clean_and_every_tampering_is_named() {
    let started = Instant::now();
    let server = start();
    upload(&server, 6, 50, 60);
    println!("300 captures uploaded in {:?}", started.elapsed());
    let key_json = log_key(&server.url);
    let vkey = key_json["vkey"].as_str().unwrap().to_owned();
    let key = LogKey::from_vkey(&vkey).unwrap();
    wait_for_size(&server.url, &key, 300);
    let log_url = format!("{}/log", server.url);

    // The live server, every capture's evidence included.
    let run = audit(&[&log_url, "--key", &vkey, "--photos", "--json"]);
    let report = run.ok_json();
    assert_eq!(report["size"], 300, "{run:?}");
    assert_eq!(report["entries"], 300);
    assert_eq!(report["elections"], 1);
    assert_eq!(report["precincts"], 5);
    assert_eq!(report["evidence_checked"], 300);
    assert_eq!(report["problem_count"], 0);
    println!("live audit with evidence done at {:?}", started.elapsed());
    let human = audit(&[&log_url, "--key", &vkey]);
    assert_eq!(human.code, Some(0), "{human:?}");
    assert!(human.stdout.contains("no problems found"), "{human:?}");

    // A static mirror: the log's files (objects of the server) copied to a third-party web
    // server.
    let root = tempfile::tempdir().unwrap();
    let key_file = root.path().join("log-key.json");
    std::fs::write(&key_file, key_json.to_string()).unwrap();
    let key_file = key_file.to_str().unwrap();
    let clean = root.path().join("clean");
    assert!(copy_objects(&server.data_dir, "log/", &clean) > 2, "the log's tiles and checkpoint");
    let scenarios = ["changed", "removed", "reordered", "other-key", "edited-size", "bad-entry"];
    for s in scenarios {
        copy_dir(&clean, &root.path().join(s));
    }
    let mirror = StaticSite::serve(root.path());
    let mirror_url = mirror.url.clone();
    let at = |s: &str| format!("{mirror_url}/{s}");
    let dir = |s: &str| root.path().join(s);

    let run = audit(&[&at("clean"), "--key-file", key_file, "--json"]);
    assert_eq!(run.ok_json()["problem_count"], 0, "{run:?}");
    // The mirror's log with the server's evidence.
    let run = audit(&[
        &at("clean"),
        "--key-file",
        key_file,
        "--photos",
        "--evidence-url",
        &server.url,
        "--json",
    ]);
    assert_eq!(run.ok_json()["evidence_checked"], 300, "{run:?}");
    println!("mirror audits done at {:?}", started.elapsed());

    // (a) An entry changed: one precinct byte, same length, still a canonical entry.
    let mut entries = bundle(&dir("changed").join("tile/entries/000"));
    let text = String::from_utf8(entries[17].clone()).unwrap();
    let precinct = text.split("\"precinct\":\"").nth(1).unwrap()[..5].to_owned();
    let other = if precinct == "p0001" { "p0002" } else { "p0001" };
    entries[17] = text.replacen(&precinct, other, 1).into_bytes();
    log::LogEntry::from_bytes(&entries[17]).expect("still a canonical entry");
    write_bundle(&dir("changed").join("tile/entries/000"), &entries);
    let run = audit(&[&at("changed"), "--key-file", key_file, "--json"]);
    assert_eq!(run.code, Some(11), "{run:?}");
    let found = problems(&run);
    assert!(has(&found, "entry_changed", "tile/entries/000 (entry 17)"), "{found:?}");
    assert!(has(&found, "root_mismatch", "checkpoint"), "{found:?}");
    let report = run.json();
    let roots: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "root_mismatch")
        .map(|p| p["source"].as_str().unwrap())
        .collect();
    assert_eq!(roots, ["entries"], "the hash tiles still give the signed root: {found:?}");
    assert_eq!(found.len(), 2, "{found:?}");

    // (b) An entry removed from its bundle.
    let mut entries = bundle(&dir("removed").join("tile/entries/001.p/44"));
    entries.remove(10);
    write_bundle(&dir("removed").join("tile/entries/001.p/44"), &entries);
    let run = audit(&[&at("removed"), "--key-file", key_file, "--json"]);
    assert_eq!(run.code, Some(11), "{run:?}");
    let found = problems(&run);
    assert!(has(&found, "entry_missing", "tile/entries/001.p/44 (entry 266)"), "{found:?}");
    assert!(has(&found, "root_mismatch", "checkpoint"), "{found:?}");
    assert_eq!(found.len(), 2, "{found:?}");

    // (c) Hash tiles reordered: two hashes of the full level-0 tile swapped.
    let path = dir("reordered").join("tile/0/000");
    let mut tile = std::fs::read(&path).unwrap();
    let (a, b) = (3 * 32, 200 * 32);
    let first: Vec<u8> = tile[a..a + 32].to_vec();
    tile.copy_within(b..b + 32, a);
    tile[b..b + 32].copy_from_slice(&first);
    std::fs::write(&path, &tile).unwrap();
    let run = audit(&[&at("reordered"), "--key-file", key_file, "--json"]);
    assert_eq!(run.code, Some(11), "{run:?}");
    let found = problems(&run);
    assert!(has(&found, "order_mismatch", "tile/entries/000 (entry 3)"), "{found:?}");
    assert!(has(&found, "order_mismatch", "tile/entries/000 (entry 200)"), "{found:?}");
    assert!(has(&found, "tile_hash_mismatch", "tile/1/000.p/1"), "{found:?}");
    let report = run.json();
    let root = report["problems"].as_array().unwrap().iter().find(|p| p["kind"] == "root_mismatch");
    assert_eq!(root.unwrap()["source"], "hash_tiles", "the entries still give the signed root");
    assert_eq!(found.len(), 4, "{found:?}");

    // (d) A checkpoint signed by another key for the same origin, and one with an edited size.
    let note = std::fs::read(dir("clean").join("checkpoint")).unwrap();
    let cp = log::verify_checkpoint(&note, &key).unwrap();
    let forged =
        log::sign_checkpoint(&key.origin, cp.size, &cp.root, &SigningKey::from_bytes(&[9; 32]))
            .unwrap();
    std::fs::write(dir("other-key").join("checkpoint"), forged).unwrap();
    let run = audit(&[&at("other-key"), "--key-file", key_file, "--json"]);
    assert_eq!(run.code, Some(11), "{run:?}");
    assert_eq!(problems(&run), [("checkpoint_signature".to_owned(), "checkpoint".to_owned())]);
    let edited = String::from_utf8(note.clone()).unwrap().replacen("\n300\n", "\n299\n", 1);
    std::fs::write(dir("edited-size").join("checkpoint"), edited).unwrap();
    let run = audit(&[&at("edited-size"), "--key-file", key_file, "--json"]);
    assert_eq!(run.code, Some(11), "{run:?}");
    let found = problems(&run);
    assert!(has(&found, "checkpoint_signature", "checkpoint"), "{found:?}");
    // The tree of 299 entries is either not served (no batch ended there) or not the signed one.
    assert!(
        has(&found, "tile_missing", "tile/0/001.p/43")
            || has(&found, "root_mismatch", "checkpoint"),
        "{found:?}"
    );

    // Several problems in one run, each with its place: a non-canonical entry and a changed one.
    let mut entries = bundle(&dir("bad-entry").join("tile/entries/001.p/44"));
    entries[5] =
        String::from_utf8(entries[5].clone()).unwrap().replace("\"v\":1", "\"v\":2").into();
    entries[6] = String::from_utf8(entries[6].clone()).unwrap().replace("{\"", "{ \"").into();
    write_bundle(&dir("bad-entry").join("tile/entries/001.p/44"), &entries);
    let run = audit(&[&at("bad-entry"), "--key-file", key_file]);
    assert_eq!(run.code, Some(11), "{run:?}");
    for needle in [
        "entry_malformed      tile/entries/001.p/44 (entry 261)",
        "entry_malformed      tile/entries/001.p/44 (entry 262)",
        "entry_changed        tile/entries/001.p/44 (entry 261)",
        "entry_changed        tile/entries/001.p/44 (entry 262)",
        "5 problems found",
    ] {
        assert!(run.stdout.contains(needle), "{needle:?} in {}", run.stdout);
    }

    // The wrong key, a wrong URL, and a log nobody serves.
    let other = LogKey::for_signer(&key.origin, &SigningKey::from_bytes(&[9; 32])).unwrap();
    let run = audit(&[&at("clean"), "--key", &other.vkey, "--json"]);
    assert_eq!(run.code, Some(11), "{run:?}");
    let run = audit(&[&at("clean"), "--key", "not a key"]);
    assert_eq!(run.code, Some(3), "{run:?}");
    let run = audit(&[&at("nothing-here"), "--key", &vkey, "--json"]);
    assert_eq!(run.code, Some(8), "{run:?}");
    assert_eq!(run.json()["error"], "unreachable");
    drop(mirror);
    let run = audit(&[&at("clean"), "--key", &vkey]);
    assert_eq!(run.code, Some(8), "{run:?}");
}

#[test]
fn follow_checks_every_new_checkpoint_of_a_growing_live_log() {
    let server = start();
    upload(&server, 2, 120, 80);
    let vkey = log_key(&server.url)["vkey"].as_str().unwrap().to_owned();
    let key = LogKey::from_vkey(&vkey).unwrap();
    wait_for_size(&server.url, &key, 240);
    let log_url = format!("{}/log", server.url);
    let mut follow = Command::new(bin("hattama"))
        .args(["audit", &log_url, "--key", &vkey, "--photos", "--json"])
        .args(["--follow", "--interval", "3", "--rounds", "6"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // New captures arrive while it follows (after each of its first three rounds, so the next
    // rounds see new checkpoints), across the 256-entry tile boundary.
    let mut lines = Vec::new();
    for line in BufReader::new(follow.stdout.take().unwrap()).lines() {
        lines.push(serde_json::from_str::<Value>(&line.unwrap()).unwrap());
        if lines.len() <= 3 {
            upload(&server, 1, 8, 90 + lines.len() as u8);
        }
    }
    let run: Run = follow.wait_with_output().unwrap().into();
    assert_eq!(run.code, Some(0), "{run:?} {lines:?}");
    assert_eq!(lines.len(), 7, "6 rounds and the report: {lines:?}");
    let rounds = &lines[..6];
    let sizes: Vec<u64> = rounds.iter().map(|r| r["size"].as_u64().unwrap()).collect();
    assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
    assert_eq!((sizes[0], sizes[5]), (240, 264), "{sizes:?}");
    let grown = rounds.iter().filter(|r| r["previous"].is_u64() && r["unchanged"] == false);
    assert!(grown.count() >= 2, "at least two new checkpoints were checked: {lines:?}");
    assert!(rounds.iter().all(|r| r["verified"] == true && r["problem_count"] == 0), "{lines:?}");
    let report = &lines[6];
    assert_eq!(report["problem_count"], 0);
    assert_eq!(report["size"], 264);
    assert_eq!(report["entries"], 264, "every entry counted once");
    assert_eq!(report["evidence_checked"], 264, "every capture checked once");
}

// ---------------------------------------------------------------------------------------------
// Forks, rewrites and shrinks, on logs written by an independent implementation of the format

/// RFC 6962 leaf hash.
fn leaf(entry: &[u8]) -> [u8; 32] {
    Sha256::new().chain_update([0u8]).chain_update(entry).finalize().into()
}

/// RFC 6962 root of leaf hashes.
fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => Sha256::digest(b"").into(),
        1 => leaves[0],
        n => {
            let k = n.next_power_of_two() / 2;
            let (l, r) = (mth(&leaves[..k]), mth(&leaves[k..]));
            Sha256::new().chain_update([1u8]).chain_update(l).chain_update(r).finalize().into()
        }
    }
}

/// A C2SP checkpoint in a signed note, by hand.
fn checkpoint(origin: &str, size: usize, root: &[u8; 32], key: &SigningKey) -> String {
    let body = format!("{origin}\n{size}\n{}\n", B64.encode(root));
    let public = key.verifying_key().to_bytes();
    let id: [u8; 32] = Sha256::new()
        .chain_update(origin.as_bytes())
        .chain_update(b"\n\x01")
        .chain_update(public)
        .finalize()
        .into();
    let sig = key.sign(body.as_bytes()).to_bytes();
    let blob = [&id[..4], &sig[..]].concat();
    format!("{body}\n\u{2014} {origin} {}\n", B64.encode(blob))
}

/// Writes the tiles, bundles and checkpoint of the log of `entries` (fewer than 65,536) into
/// `dir`, as a server publishing every size in `sizes` would have left them.
fn write_log(dir: &Path, entries: &[Vec<u8>], sizes: &[usize], key: &SigningKey, origin: &str) {
    let leaves: Vec<[u8; 32]> = entries.iter().map(|e| leaf(e)).collect();
    let write = |rel: String, bytes: Vec<u8>| {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    for &size in sizes {
        for n in 0..size.div_ceil(256) {
            let w = (size - n * 256).min(256);
            let p = if w == 256 { String::new() } else { format!(".p/{w}") };
            write(format!("tile/0/{n:03}{p}"), leaves[n * 256..n * 256 + w].concat());
            let mut b = Vec::new();
            for e in &entries[n * 256..n * 256 + w] {
                b.extend_from_slice(&(e.len() as u16).to_be_bytes());
                b.extend_from_slice(e);
            }
            write(format!("tile/entries/{n:03}{p}"), b);
        }
        let full = size / 256;
        if full > 0 {
            let hashes: Vec<[u8; 32]> =
                (0..full).map(|n| mth(&leaves[n * 256..(n + 1) * 256])).collect();
            let p = if full == 256 { String::new() } else { format!(".p/{full}") };
            write(format!("tile/1/000{p}"), hashes.concat());
        }
    }
    let size = *sizes.last().unwrap();
    write("checkpoint".into(), checkpoint(origin, size, &mth(&leaves[..size]), key).into_bytes());
}

fn entry(i: usize, precinct: &str) -> Vec<u8> {
    format!(
        "{{\"capture_id\":\"{}\",\"election\":\"e1\",\"photo_sha256\":\"{}\",\"precinct\":\"{precinct}\",\"received_at_ms\":{},\"v\":1}}",
        Sha256Hash::of(format!("capture {i}").as_bytes()),
        Sha256Hash::of(format!("photo {i}").as_bytes()),
        1_795_000_000_000u64 + i as u64,
    )
    .into_bytes()
}

fn kinds(problems: &[Problem]) -> Vec<&'static str> {
    problems.iter().map(Problem::kind).collect()
}

#[test]
fn following_reports_forks_rewrites_and_shrinks_of_an_independently_written_log() {
    const ORIGIN: &str = "audit.example/log";
    let key = SigningKey::from_bytes(&[7; 32]);
    let log_key = LogKey::for_signer(ORIGIN, &key).unwrap();
    let entries: Vec<Vec<u8>> = (0..400).map(|i| entry(i, PRECINCTS[i % 3])).collect();
    let mut rewritten = entries.clone();
    rewritten[5] = entry(5, "p0005");
    let root = tempfile::tempdir().unwrap();
    let mirror = StaticSite::serve(root.path());
    let auditor_of = |name: &str| {
        Auditor::new(AuditConfig::new(&format!("{}/{name}", mirror.url), log_key.clone())).unwrap()
    };
    let dir = |name: &str| -> PathBuf { root.path().join(name) };

    // Growing honestly across a tile boundary: every round consistent.
    write_log(&dir("honest"), &entries, &[100, 250], &key, ORIGIN);
    let mut a = auditor_of("honest");
    let r = a.round().unwrap();
    assert!(r.verified && r.problems.is_empty() && r.size == 250, "{r:?}");
    let r = a.round().unwrap();
    assert!(r.unchanged && r.problems.is_empty(), "{r:?}");
    write_log(&dir("honest"), &entries, &[250, 300], &key, ORIGIN);
    let r = a.round().unwrap();
    assert_eq!((r.previous, r.size, r.problems.clone()), (Some(250), 300, vec![]), "{r:?}");
    write_log(&dir("honest"), &entries, &[300, 301, 400], &key, ORIGIN);
    let r = a.round().unwrap();
    assert_eq!((r.previous, r.size, r.problems.clone()), (Some(300), 400, vec![]), "{r:?}");
    let report = a.report();
    assert_eq!((report.entries, report.elections, report.precincts), (400, 1, 3));
    assert_eq!((report.checkpoints, report.problem_count), (3, 0));

    // A second signed checkpoint for the same size: a fork.
    write_log(&dir("fork"), &entries, &[300], &key, ORIGIN);
    let mut a = auditor_of("fork");
    assert!(a.round().unwrap().problems.is_empty());
    write_log(&dir("fork"), &rewritten, &[300], &key, ORIGIN);
    let r = a.round().unwrap();
    assert_eq!(kinds(&r.problems), ["fork"], "{r:?}");

    // A bigger signed tree that changed an old entry: the history was rewritten.
    write_log(&dir("rewrite"), &entries, &[300], &key, ORIGIN);
    let mut a = auditor_of("rewrite");
    assert!(a.round().unwrap().problems.is_empty());
    write_log(&dir("rewrite"), &rewritten, &[300, 310], &key, ORIGIN);
    let r = a.round().unwrap();
    assert_eq!(r.problems, [Problem::Inconsistent { old: 300, new: 310 }], "{r:?}");

    // A smaller signed tree: the log shrank.
    write_log(&dir("shrink"), &entries, &[200, 300], &key, ORIGIN);
    let mut a = auditor_of("shrink");
    assert!(a.round().unwrap().problems.is_empty());
    write_log(&dir("shrink"), &entries, &[200], &key, ORIGIN);
    let r = a.round().unwrap();
    assert_eq!(r.problems, [Problem::Shrank { old: 300, new: 200 }], "{r:?}");

    // A checkpoint the log key did not sign changes nothing: the next honest one is checked
    // against the last verified one.
    write_log(&dir("unsigned"), &entries, &[300], &key, ORIGIN);
    let mut a = auditor_of("unsigned");
    assert!(a.round().unwrap().problems.is_empty());
    write_log(&dir("unsigned"), &rewritten, &[300, 320], &SigningKey::from_bytes(&[8; 32]), ORIGIN);
    let r = a.round().unwrap();
    assert!(!r.verified, "{r:?}");
    assert_eq!(kinds(&r.problems), ["checkpoint_signature", "inconsistent"], "{r:?}");
    write_log(&dir("unsigned"), &entries, &[300, 330], &key, ORIGIN);
    let r = a.round().unwrap();
    assert_eq!((r.previous, r.size, r.problems.clone()), (Some(300), 330, vec![]), "{r:?}");

    // The CLI says it loudly and exits 11.
    write_log(&dir("cli"), &entries, &[300], &key, ORIGIN);
    let url = format!("{}/cli", mirror.url);
    let mut follow = Command::new(bin("hattama"))
        .args(["audit", &url, "--key", &log_key.vkey, "--follow", "--interval", "1"])
        .args(["--rounds", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = String::new();
    let mut out = BufReader::new(follow.stdout.take().unwrap());
    out.read_line(&mut stdout).unwrap();
    assert!(stdout.starts_with("round 1: checkpoint 300: audited"), "{stdout}");
    // Rewritten between two polls.
    write_log(&dir("cli"), &rewritten, &[300, 310], &key, ORIGIN);
    std::io::Read::read_to_string(&mut out, &mut stdout).unwrap();
    let run: Run = follow.wait_with_output().unwrap().into();
    assert_eq!(run.code, Some(11), "{run:?} {stdout}");
    assert!(run.stderr.contains("ALARM"), "{run:?}");
    assert!(stdout.contains("round 2: checkpoint 310: was 300"), "{stdout}");
    assert!(stdout.contains("inconsistent         checkpoint: INCONSISTENT"), "{stdout}");
    assert!(stdout.contains("1 problem found"), "{stdout}");

    // An independently written log audits clean from scratch.
    let r = auditor_of("honest").round().unwrap();
    assert!(r.problems.is_empty(), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// The worked example of docs/transparency-log.md, produced by the code it describes.
//
// After an intended change, regenerate and review the diff:
//     HATTAMA_UPDATE_DOCS=1 cargo test -p hattama-tests --test audit worked_example

const DOC: &str = "docs/transparency-log.md";
const BEGIN: &str = "<!-- BEGIN GENERATED EXAMPLE -->";
const END: &str = "<!-- END GENERATED EXAMPLE -->";

/// Replaces (with `HATTAMA_UPDATE_DOCS=1`) or checks the generated section of the spec.
fn sync_doc(fragment: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(DOC);
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{DOC}: {e}"));
    let body = doc.find(BEGIN).unwrap_or_else(|| panic!("{DOC} has no {BEGIN}")) + BEGIN.len();
    let end = body + doc[body..].find(END).unwrap_or_else(|| panic!("{DOC} has no {END}"));
    let expected = format!("\n{fragment}\n");
    if doc[body..end] == expected {
        return;
    }
    if std::env::var("HATTAMA_UPDATE_DOCS").as_deref() == Ok("1") {
        std::fs::write(&path, format!("{}{expected}{}", &doc[..body], &doc[end..])).unwrap();
        return;
    }
    let line = doc[body..end]
        .lines()
        .zip(expected.lines())
        .position(|(a, b)| a != b)
        .map_or(String::new(), |i| format!(" from line {}", doc[..body].lines().count() + i));
    panic!(
        "the worked example of {DOC} is not what the code produces{line}. If the change is \
         intended: HATTAMA_UPDATE_DOCS=1 cargo test -p hattama-tests --test audit worked_example"
    );
}

fn hex_dump(bytes: &[u8]) -> String {
    bytes
        .chunks(32)
        .enumerate()
        .map(|(i, c)| format!("{:04x}  {}", i * 32, hex::encode(c)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn node(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    Sha256::new().chain_update([1u8]).chain_update(l).chain_update(r).finalize().into()
}

#[test]
fn worked_example_of_the_spec_is_what_the_code_produces() {
    use hattama_core::log::{Hash, LogEntry, TlogProof};
    use std::fmt::Write as _;

    let origin = "hattama.example/log";
    let key = SigningKey::from_bytes(&std::array::from_fn(|i| 0x20 + i as u8));
    let log_key = LogKey::for_signer(origin, &key).unwrap();
    let entries: Vec<LogEntry> = (1..=3u64)
        .map(|k| LogEntry {
            capture_id: Sha256Hash::of(format!("example capture {k}").as_bytes()),
            election: "kz-2026-example".into(),
            photo_sha256: Sha256Hash::of(format!("example photo {k}").as_bytes()),
            precinct: ["p0001", "p0002", "p0001"][k as usize - 1].into(),
            received_at_ms: 1_795_572_188_364 + 1000 * k,
            v: 1,
        })
        .collect();
    let bytes: Vec<Vec<u8>> = entries.iter().map(LogEntry::to_bytes).collect();
    let leaves: Vec<[u8; 32]> = bytes.iter().map(|b| leaf(b)).collect();
    for (e, l) in entries.iter().zip(&leaves) {
        assert_eq!(e.leaf_hash().0, *l, "the code hashes leaves as RFC 6962 does");
    }
    let n01 = node(&leaves[0], &leaves[1]);
    let root = node(&n01, &leaves[2]);
    assert_eq!(root, mth(&leaves));
    let note = log::sign_checkpoint(origin, 3, &Hash(root), &key).unwrap();
    assert_eq!(note, checkpoint(origin, 3, &root, &key).into_bytes(), "as written by hand");
    assert_eq!(log::verify_checkpoint(&note, &log_key).unwrap().size, 3);
    let public = key.verifying_key().to_bytes();
    let key_hash: [u8; 32] = Sha256::new()
        .chain_update(origin.as_bytes())
        .chain_update(b"\n\x01")
        .chain_update(public)
        .finalize()
        .into();
    let bundle = log::entry_bundle(bytes.iter().map(Vec::as_slice));
    let inclusion = vec![Hash(leaves[0]), Hash(leaves[2])];
    log::verify_inclusion(1, 3, &Hash(root), &Hash(leaves[1]), &inclusion).unwrap();
    let proof = TlogProof { index: 1, hashes: inclusion, checkpoint: note.clone() };
    assert_eq!(proof.verify(&entries[1], &log_key).unwrap().size, 3);
    let consistency = vec![Hash(leaves[2])];
    log::verify_consistency(2, &Hash(n01), 3, &Hash(root), &consistency).unwrap();

    let mut md = String::new();
    let w = &mut md;
    writeln!(w, "### Example log key\n").unwrap();
    writeln!(
        w,
        "Ed25519 seed (secret; only for this example): `{}`\n",
        hex::encode(key.to_bytes())
    )
    .unwrap();
    writeln!(w, "Public key: `{}`\n", hex::encode(public)).unwrap();
    writeln!(
        w,
        "Key id: the first 4 bytes of SHA-256(`{origin}` ‖ LF ‖ 0x01 ‖ public key) = `{}`\n",
        hex::encode(&key_hash[..4])
    )
    .unwrap();
    writeln!(w, "Verifier key (what `GET /api/v1/log/key` answers as `vkey`):\n").unwrap();
    writeln!(w, "```text\n{}\n```\n", log_key.vkey).unwrap();
    writeln!(w, "### Entries and leaf hashes\n").unwrap();
    for (i, (b, l)) in bytes.iter().zip(&leaves).enumerate() {
        writeln!(w, "Entry {i} ({} bytes):\n", b.len()).unwrap();
        writeln!(w, "```json\n{}\n```\n", String::from_utf8_lossy(b)).unwrap();
        writeln!(
            w,
            "leaf hash = SHA-256(0x00 ‖ entry) = `{}` (base64 `{}`)\n",
            hex::encode(l),
            B64.encode(l)
        )
        .unwrap();
    }
    writeln!(w, "### Tree\n").unwrap();
    writeln!(w, "| tree | root (hex) | root (base64) |\n|---|---|---|").unwrap();
    for (name, h) in [
        ("size 1: leaf 0", leaves[0]),
        ("size 2: SHA-256(0x01 ‖ leaf 0 ‖ leaf 1)", n01),
        ("size 3: SHA-256(0x01 ‖ root of size 2 ‖ leaf 2)", root),
    ] {
        writeln!(w, "| {name} | `{}` | `{}` |", hex::encode(h), B64.encode(h)).unwrap();
    }
    writeln!(w, "\n### Checkpoint of size 3\n").unwrap();
    writeln!(
        w,
        "The signed note exactly as served at `checkpoint` (the last line ends with LF):\n"
    )
    .unwrap();
    writeln!(w, "```text\n{}```\n", String::from_utf8_lossy(&note)).unwrap();
    let sig_line = String::from_utf8_lossy(&note).lines().last().unwrap_or_default().to_owned();
    let blob = B64.decode(sig_line.rsplit(' ').next().unwrap()).unwrap();
    writeln!(
        w,
        "The signature line's base64 decodes to 68 bytes: the key id `{}` and the Ed25519 \
         signature of the 3 body lines (with their line feeds): `{}`.\n",
        hex::encode(&blob[..4]),
        hex::encode(&blob[4..])
    )
    .unwrap();
    writeln!(w, "### Tiles and the entry bundle of size 3\n").unwrap();
    writeln!(w, "`tile/0/000.p/3` (3 hashes, 96 bytes, one per line here):\n").unwrap();
    writeln!(w, "```text\n{}\n```\n", hex_dump(&leaves.concat())).unwrap();
    writeln!(w, "`tile/entries/000.p/3` ({} bytes, 32 per line here):\n", bundle.len()).unwrap();
    writeln!(w, "```text\n{}\n```\n", hex_dump(&bundle)).unwrap();
    writeln!(w, "### Inclusion proof of entry 1 in the tree of size 3\n").unwrap();
    writeln!(w, "In the tlog-proof form (as in a receipt's `log.proof`):\n").unwrap();
    writeln!(w, "```text\n{}```\n", proof.to_text()).unwrap();
    writeln!(
        w,
        "The hashes are leaf 0 (the sibling of leaf 1) and leaf 2 (the sibling of the subtree of \
         leaves 0 and 1).\n"
    )
    .unwrap();
    writeln!(w, "### Consistency proof from size 2 to size 3\n").unwrap();
    writeln!(
        w,
        "`GET /api/v1/log/consistency?from=2` answers `\"proof\": [\"{}\"]` (leaf 2): the old root \
         is a complete subtree of the new tree, so the proof only needs its right sibling.\n",
        B64.encode(leaves[2])
    )
    .unwrap();
    writeln!(
        w,
        "### Problems in their JSON form\n\n`hattama audit --json` adds `location` and `message` \
         to each.\n"
    )
    .unwrap();
    writeln!(w, "```json").unwrap();
    for p in [
        Problem::EntryChanged {
            index: 17,
            path: "tile/entries/000".into(),
            tile: "tile/0/000".into(),
        },
        Problem::TileHashMismatch {
            path: "tile/1/000.p/1".into(),
            position: 0,
            below: "tile/0/000".into(),
        },
        Problem::Inconsistent { old: 300, new: 310 },
    ] {
        writeln!(w, "{}", serde_json::to_string(&p).unwrap()).unwrap();
    }
    write!(w, "```").unwrap();
    sync_doc(&md);
}
