//! Evidence packages end to end (`docs/evidence-package.md`): the demo server writes a station's
//! package, the gallery links it in three languages, the real `hattama verify-package` checks it
//! offline, and so does an independent verifier in Python written from the docs
//! (`tests/package-py/`); two packages of the same data are byte-identical, and tampering with a
//! photo, a figure, a line of `SHA256SUMS` or a proof is found and named by both verifiers.

// Test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use hattama_tests::bin;
use hattama_tests::demo::{Demo, ELECTION};
use hattama_tests::package::{entries, python_verify, tampered, verify};

/// A demo of a few stations and the id of one whose figures differ from the official ones.
fn demo() -> (Demo, String) {
    let demo = Demo::start(8, 3);
    let cmp = demo.json(&format!("/api/v1/elections/{ELECTION}/comparison"));
    let precinct = cmp["comparison"]["differences"][0]["precinct"].as_str().unwrap().to_owned();
    (demo, precinct)
}

fn get(url: &str) -> reqwest::blocking::Response {
    reqwest::blocking::get(url).unwrap()
}

fn package_url(demo: &Demo, precinct: &str) -> String {
    format!("{}/api/v1/elections/{ELECTION}/precincts/{precinct}/evidence-package.zip", demo.url)
}

#[test]
fn a_station_package_verifies_is_deterministic_and_names_every_tampered_file() {
    let (demo, precinct) = demo();
    let receipt_key = demo.json("/api/v1/receipts/key")["server_key"].as_str().unwrap().to_owned();
    let url = package_url(&demo, &precinct);
    let r = get(&url);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/zip");
    let disposition = r.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\"kz-demo-2026-station-"),
        "{disposition}"
    );
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let zip = r.bytes().unwrap().to_vec();

    // What it holds: every public capture's files, the keys, the station's figures.
    let names: Vec<String> = entries(&zip).into_iter().map(|(n, _)| n).collect();
    let record = demo.json(&format!("/api/v1/elections/{ELECTION}/precincts/{precinct}"));
    let captures = record["captures"].as_array().unwrap();
    assert!(!captures.is_empty(), "the differing station has photos");
    for c in captures {
        let id = c["capture"]["id"].as_str().unwrap();
        for file in ["manifest.json", "manifest.sig", "receipt.json", "tlog-proof"] {
            assert!(names.contains(&format!("captures/{id}/{file}")), "{file} of {id}: {names:?}");
        }
    }
    for file in [
        "README.txt",
        "keys/receipt-key.txt",
        "keys/log.vkey",
        "station/transcription.json",
        "station/official.json",
        "station/differences.json",
        "package.json",
        "package.sig",
        "SHA256SUMS",
    ] {
        assert!(names.contains(&file.to_owned()), "{file}: {names:?}");
    }
    let files: std::collections::BTreeMap<String, Vec<u8>> = entries(&zip).into_iter().collect();
    let transcription: serde_json::Value =
        serde_json::from_slice(&files["station/transcription.json"]).unwrap();
    assert_eq!(transcription["status"], "verified", "{transcription}");
    let history = transcription["entries"].as_array().unwrap();
    assert!(history.len() >= 2, "both blind entries: {transcription}");
    for e in history {
        assert!(e["at_ms"].is_u64() && e["role"].is_string(), "{e}");
        assert!(e["by"].as_str().unwrap().ends_with(char::is_numeric), "pseudonymous: {e}");
    }
    let text = String::from_utf8_lossy(&zip);
    // The demo's people have names ("admin" is only a role, "Demo" the election's name); none
    // may reach the package.
    for (user, display, _) in hattama_server::demo::DEMO_USERS.into_iter().skip(1) {
        let first = display.split(' ').next().unwrap();
        for name in [user, first] {
            assert!(!text.to_lowercase().contains(&name.to_lowercase()), "{name} in the package");
        }
    }
    let differences: serde_json::Value =
        serde_json::from_slice(&files["station/differences.json"]).unwrap();
    assert!(!differences["lines"].as_array().unwrap().is_empty(), "{differences}");

    // The same data gives the same bytes: again from the file, and written anew.
    assert_eq!(get(&url).bytes().unwrap().to_vec(), zip);
    for f in std::fs::read_dir(demo.data_dir().join("packages")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let again = get(&url);
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(again.bytes().unwrap().to_vec(), zip, "a package written anew differs");
    // A client that has it gets 304.
    let r =
        reqwest::blocking::Client::new().get(&url).header("If-None-Match", &etag).send().unwrap();
    assert_eq!(r.status(), 304);

    // The real CLI, offline.
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = verify(&zip, dir.path(), &receipt_key);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid: the evidence package of station"), "{out}");
    assert!(out.contains("entry ") && out.contains("of the public log"), "{out}");
    let (code, out) = python_verify(&zip, dir.path(), &receipt_key);
    assert_eq!(code, 0, "the Python verifier refused it:\n{out}");
    assert!(out.contains("VALID: station"), "{out}");
    let wrong_key = "11".repeat(32);
    let (code, out) = verify(&zip, dir.path(), &wrong_key);
    assert_eq!(code, 11, "{out}");
    assert!(out.contains("FAIL  keys/receipt-key.txt"), "{out}");

    // Tampering, each found and named.
    let id = captures[0]["capture"]["id"].as_str().unwrap();
    let photo = names.iter().find(|n| n.starts_with(&format!("captures/{id}/photo."))).unwrap();
    let figure = transcription["values"].as_object().unwrap().iter().next().unwrap();
    let (line, value) = (figure.0.clone(), figure.1.as_u64().unwrap());
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "one byte of a photo",
            tampered(&zip, photo, |b| {
                let i = b.len() / 2;
                b[i] ^= 0x01;
            }),
            format!("FAIL  {photo}"),
        ),
        (
            "a figure of the transcription",
            tampered(&zip, "station/transcription.json", |b| {
                let s = String::from_utf8(b.clone()).unwrap();
                let from = format!("\"{line}\": {value}");
                assert!(s.contains(&from), "{from} in {s}");
                *b = s.replacen(&from, &format!("\"{line}\": {}", value + 1), 1).into_bytes();
            }),
            "FAIL  station/transcription.json".to_owned(),
        ),
        (
            "a line of SHA256SUMS",
            tampered(&zip, "SHA256SUMS", |b| {
                let i = b.iter().position(|&c| c == b'\n').unwrap() + 1;
                b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            }),
            "FAIL  SHA256SUMS: line 2".to_owned(),
        ),
        (
            "a proof",
            tampered(&zip, &format!("captures/{id}/tlog-proof"), |b| {
                let s = String::from_utf8(b.clone()).unwrap();
                // The checkpoint's root hash: the line after the size.
                let lines: Vec<&str> = s.split('\n').collect();
                let blank = lines.iter().position(|l| l.is_empty()).unwrap();
                let root = lines[blank + 3];
                let other = if root.starts_with('A') { "B" } else { "A" };
                *b = s.replacen(root, &format!("{other}{}", &root[1..]), 1).into_bytes();
            }),
            format!("FAIL  captures/{id}/tlog-proof"),
        ),
    ];
    for (what, zip, expected) in cases {
        let (code, out) = verify(&zip, dir.path(), &receipt_key);
        assert_eq!(code, 11, "{what} was not found:\n{out}");
        assert!(out.contains(&expected), "{what}: expected {expected:?} in\n{out}");
        assert!(out.contains("NOT VALID"), "{what}:\n{out}");
        let (code, out) = python_verify(&zip, dir.path(), &receipt_key);
        assert_eq!(code, 1, "{what} was not found by the Python verifier:\n{out}");
        assert!(out.contains(&expected), "Python, {what}: expected {expected:?} in\n{out}");
    }

    // Not a package at all: a clear refusal.
    let (code, out) = verify(b"not a zip", dir.path(), &receipt_key);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("not an evidence package"), "{out}");
    // A wrong path and a receipt key that is not one: said so, with what to do.
    let missing = dir.path().join("no-such.zip");
    let out = Command::new(bin("hattama")).arg("verify-package").arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let (code, out) = verify(&zip, dir.path(), "not-a-key");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("64 lowercase hex digits"), "{out}");
}

#[test]
fn every_station_page_links_its_package_in_the_visitors_language() {
    let (demo, precinct) = demo();
    let client = reqwest::blocking::Client::new();
    for (lang, text) in [
        ("kk", "Дәлелдер пакетін жүктеу"),
        ("ru", "Скачать пакет доказательств"),
        ("en", "Download the evidence package"),
    ] {
        let page = client
            .get(format!("{}/elections/{ELECTION}/precincts/{precinct}", demo.url))
            .header("Cookie", format!("lang={lang}"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert!(page.contains(text), "{lang}: no link text");
        let href = format!(
            "href=\"/api/v1/elections/{ELECTION}/precincts/{precinct}/evidence-package.zip\""
        );
        assert!(page.contains(&href), "{lang}: no link");
    }
    // Unknown stations and elections: JSON errors.
    let r = get(&package_url(&demo, "nope"));
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<serde_json::Value>().unwrap()["error"], "not_found");
}

#[test]
fn packages_count_against_a_clients_evidence_allowance() {
    use hattama_tests::server::TestServer;
    let env = [
        ("HATTAMA__TRUSTED_PROXIES", "127.0.0.1"),
        // One more a minute: the first answer writes the package and its PDF report, which
        // may take seconds in a debug build on a busy machine, and must not refill the bucket.
        ("HATTAMA__RATE_LIMITS__EVIDENCE__PER_MINUTE", "1"),
        ("HATTAMA__RATE_LIMITS__EVIDENCE__BURST", "3"),
    ];
    let server = TestServer::start_with(&hattama_tests::fixtures::election("e2e", 3), &env);
    let url = format!("{}/api/v1/elections/e2e/precincts/p0001/evidence-package.zip", server.url);
    let http = reqwest::blocking::Client::new();
    let send = |client: &str| http.get(&url).header("X-Forwarded-For", client).send().unwrap();
    let key = http.get(format!("{}/api/v1/receipts/key", server.url)).send().unwrap();
    let key = key.json::<serde_json::Value>().unwrap()["server_key"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let mut zips = Vec::new();
    for i in 0..3 {
        let r = send("203.0.113.1");
        assert_eq!(r.status(), 200, "request {i}");
        // A station without photos yet: a package of its keys and (empty) figures, valid.
        let zip = r.bytes().unwrap().to_vec();
        let names: Vec<String> = entries(&zip).into_iter().map(|(n, _)| n).collect();
        assert!(!names.iter().any(|n| n.starts_with("captures/")), "{names:?}");
        zips.push(zip);
    }
    let r = send("203.0.113.1");
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.json::<serde_json::Value>().unwrap()["error"], "rate_limited");
    assert_eq!(send("203.0.113.2").status(), 200, "another client is served");
    assert!(zips.windows(2).all(|w| w[0] == w[1]), "the same data, the same bytes");
    let (code, out) = verify(&zips[0], dir.path(), &key);
    assert_eq!(code, 0, "{out}");
    let (code, out) = python_verify(&zips[0], dir.path(), &key);
    assert_eq!(code, 0, "{out}");
}
