//! [Operations] mirrors: `hattama mirror` of the running demo, served by a third-party static
//! web server (Python's `http.server`): `hattama audit --photos` against the mirror is clean,
//! every link of every mirrored page leads to a file of the mirror, a real browser walks
//! election → station → photo, `--follow` adds new captures, and a source whose tile or photo
//! was altered is refused with the problem named, keeping nothing.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ed25519_dalek::SigningKey;
use hattama_core::log::LogKey;
use hattama_core::media::{self, MediaLimits};
use hattama_tests::demo::{Demo, ELECTION};
use hattama_tests::raw::RawDevice;
use hattama_tests::server::admin;
use hattama_tests::static_site::StaticSite;
use hattama_tests::{Run, bin, browser, copy_dir, textured_jpeg};
use serde_json::Value;

fn hattama(args: &[&str]) -> Run {
    Command::new(bin("hattama")).args(args).output().unwrap().into()
}

fn vkey(url: &str) -> String {
    let key: Value =
        reqwest::blocking::get(format!("{url}/api/v1/log/key")).unwrap().json().unwrap();
    key["vkey"].as_str().unwrap().to_owned()
}

/// `hattama audit URL/log --photos` against a site; returns the report.
fn audit(url: &str, key: &str) -> Value {
    let run = hattama(&["audit", &format!("{url}/log"), "--key", key, "--photos", "--json"]);
    let report = run.ok_json();
    assert_eq!(report["problem_count"], 0, "{run:?}");
    report
}

fn checkpoint_size(dir: &Path) -> u64 {
    let note = std::fs::read_to_string(dir.join("log/checkpoint")).unwrap();
    note.lines().nth(1).unwrap().parse().unwrap()
}

/// Every HTML file under `dir`.
fn pages(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            pages(&path, out);
        } else if path.extension().is_some_and(|e| e == "html") {
            out.push(path);
        }
    }
}

/// Decodes `%XX` escapes.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The links of every mirrored page that lead to no file of the mirror (relative links are
/// resolved as a browser does; links to the source are counted apart).
fn broken_links(dir: &Path, source: &str) -> (Vec<String>, usize, usize) {
    let mut files = Vec::new();
    pages(dir, &mut files);
    let (mut broken, mut checked, mut to_source) = (Vec::new(), 0, 0);
    for file in &files {
        let html = std::fs::read_to_string(file).unwrap();
        for attr in [" href=\"", " src=\"", " action=\""] {
            for piece in html.split(attr).skip(1) {
                let link =
                    piece.split('"').next().unwrap().replace("&#38;", "&").replace("&amp;", "&");
                assert!(!link.contains("&#"), "{}: an undecoded link {link}", file.display());
                if link.starts_with('#') || link.starts_with("https://") {
                    continue;
                }
                if link.starts_with(source) {
                    to_source += 1;
                    continue;
                }
                assert!(!link.starts_with('/'), "{}: a root-relative link {link}", file.display());
                assert!(!link.starts_with("http"), "{}: a link elsewhere {link}", file.display());
                let path = link.split(['#', '?']).next().unwrap();
                let target = file.parent().unwrap().join(percent_decode(path));
                checked += 1;
                if !target.is_file() {
                    broken.push(format!("{} -> {link}", file.strip_prefix(dir).unwrap().display()));
                }
            }
        }
    }
    (broken, checked, to_source)
}

/// Uploads `n` new captures to the demo for `precinct`; returns their photos' hashes.
fn upload_to_demo(demo: &Demo, precinct: &str, n: usize, seed: u8) -> Vec<String> {
    let code = admin(
        demo.data_dir(),
        &["invite", "create", "--election", ELECTION, "--precinct", precinct, "--json"],
    )
    .ok_json()[0]["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut device = RawDevice::new(seed);
    assert_eq!(device.enroll(&demo.url, &code).status, 200);
    (0..n)
        .map(|i| {
            let jpeg = textured_jpeg(640, 480, 9000 + u32::from(seed) * 100 + i as u32, 85);
            let clean = media::strip(&jpeg, &MediaLimits::default()).unwrap();
            let info = clean.info();
            let signed = device.sign_with(precinct, &info, |m| m.election = ELECTION.into());
            let answer = device.upload(&demo.url, &signed, &clean.bytes);
            assert_eq!(answer.status, 200, "{answer:?}");
            info.sha256.to_hex()
        })
        .collect()
}

#[test]
fn a_mirror_of_the_demo_is_browsable_auditable_follows_and_refuses_altered_sources() {
    let demo = Demo::start(10, 2);
    let key = vkey(&demo.url);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mirror");
    let dir_s = dir.to_str().unwrap();

    // A first mirror, with the key taken from the source (and said so).
    let run = hattama(&["mirror", &demo.url, dir_s, "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains("no --key given"), "{run:?}");
    let first = run.ok_json();
    let size = checkpoint_size(&dir);
    assert_eq!(first["size"], size);
    assert_eq!(first["new_captures"], size, "{first}");
    assert!(first["pages"].as_u64().unwrap() > 30, "{first}");
    assert!(!root.path().join(".mirror.incoming").exists(), "nothing staged is left");
    println!("mirror: {first}");

    // Every link of every page leads to a file of the mirror.
    let (broken, checked, to_source) = broken_links(&dir, &demo.url);
    println!("{checked} links checked, {to_source} to the source");
    assert!(
        broken.is_empty(),
        "{} broken links: {:?}",
        broken.len(),
        &broken[..broken.len().min(20)]
    );
    assert!(checked > 500, "{checked}");
    for lang in ["ru", "en"] {
        assert!(dir.join(lang).join("index.html").is_file(), "{lang}");
    }
    let home = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(home.contains("id=\"mirror-note\"") && home.contains(&demo.url), "a copy says so");

    // Served by a third-party web server: audited clean, evidence included, with the key of
    // the mirror itself and with the source's.
    let site = StaticSite::serve(&dir);
    let report = audit(&site.url, &key);
    assert_eq!(report["size"], size);
    assert_eq!(report["evidence_checked"], size);
    let run = hattama(&[
        "audit",
        &format!("{}/log", site.url),
        "--key-file",
        dir.join("api/v1/log/key").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run:?}");
    // Pages and renditions come with content types a browser shows.
    let index = reqwest::blocking::get(format!("{}/elections/{ELECTION}.html", site.url)).unwrap();
    assert!(index.headers()["content-type"].to_str().unwrap().starts_with("text/html"));

    // A browser walks the mirrored gallery: election → station → photo, no broken link.
    let list = demo.json(&format!("/api/v1/elections/{ELECTION}/precincts"));
    let station = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["captures"].as_u64().unwrap_or(0) > 0 && p["state"] == "accepted")
        .or_else(|| {
            list.as_array().unwrap().iter().find(|p| p["captures"].as_u64().unwrap_or(0) > 0)
        })
        .unwrap();
    let enc = hattama_server::web::percent_encode;
    let region = enc(station["region"].as_str().unwrap());
    let district = enc(station["district"].as_str().unwrap());
    let precinct = station["id"].as_str().unwrap().to_owned();
    browser::run_script("mirror", &site.url, &[ELECTION, &region, &district, &precinct]);

    // --follow adds new captures.
    let mut follow = Command::new(bin("hattama"))
        .args(["mirror", &demo.url, dir_s, "--key", &key, "--json"])
        .args(["--follow", "--interval", "1", "--rounds", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut rounds = Vec::new();
    let mut added = Vec::new();
    for line in BufReader::new(follow.stdout.take().unwrap()).lines() {
        rounds.push(serde_json::from_str::<Value>(&line.unwrap()).unwrap());
        if rounds.len() == 1 {
            added = upload_to_demo(&demo, &precinct, 3, 41);
        }
    }
    let run: Run = follow.wait_with_output().unwrap().into();
    assert_eq!(run.code, Some(0), "{run:?} {rounds:?}");
    assert_eq!(rounds.len(), 3, "{rounds:?}");
    let last = rounds.last().unwrap();
    assert_eq!(last["size"], size + 3, "{rounds:?}");
    let new: u64 = rounds[1..].iter().map(|r| r["new_captures"].as_u64().unwrap()).sum();
    assert_eq!(new, 3, "{rounds:?}");
    for sha in &added {
        assert!(dir.join("photos").join(sha).is_file(), "photo {sha}");
        assert!(dir.join("photos").join(format!("{sha}.thumb.jpg")).is_file());
    }
    let station_page = std::fs::read_to_string(
        dir.join(format!("elections/{ELECTION}/precincts/{precinct}.html")),
    )
    .unwrap();
    for sha in &added {
        assert!(station_page.contains(&format!("photos/{sha}.thumb.jpg")), "the page shows {sha}");
    }
    let report = audit(&site.url, &key);
    assert_eq!(report["size"], size + 3);
    let (broken, _, _) = broken_links(&dir, &demo.url);
    assert!(broken.is_empty(), "{broken:?}");

    // Sources with an altered tile or photo are refused, the problem named, nothing kept.
    let n = size + 3;
    assert!(!n.is_multiple_of(256));
    let bundle = format!("log/tile/entries/{:03}.p/{}", n / 256, n % 256);
    let photo = format!("photos/{}", added[0]);
    let cases = [
        ("altered-tile", bundle.as_str(), "entry_changed", bundle.trim_start_matches("log/")),
        ("altered-photo", photo.as_str(), "photo_mismatch", added[0].as_str()),
    ];
    for (name, file, kind, place) in cases {
        let bad = root.path().join(name);
        copy_dir(&dir, &bad);
        let path = bad.join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        // In a bundle, a hex digit of an entry's capture id (it stays a canonical entry); in a
        // photo, a byte in its middle.
        let at = if name == "altered-tile" {
            let text = String::from_utf8_lossy(&bytes);
            text.find("\"capture_id\":\"").unwrap() + 20
        } else {
            bytes.len() / 2
        };
        bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
        std::fs::write(&path, bytes).unwrap();
        let source = StaticSite::serve(&bad);
        let target = root.path().join(format!("{name}-mirror"));
        let run = hattama(&["mirror", &source.url, target.to_str().unwrap(), "--key", &key]);
        assert_eq!(run.code, Some(11), "{name}: {run:?}");
        assert!(run.stderr.contains("REFUSED"), "{name}: {run:?}");
        let named = run.stderr.lines().any(|l| l.contains(kind) && l.contains(place));
        assert!(named, "{name}: {kind} at {place} named in {}", run.stderr);
        let mut kept = Vec::new();
        if target.exists() {
            for e in std::fs::read_dir(&target).unwrap() {
                kept.push(e.unwrap().file_name().to_string_lossy().into_owned());
            }
        }
        assert!(kept.is_empty(), "{name}: nothing kept, found {kept:?}");
    }

    // A mirror never mixes another log into itself: a key other than the pinned one is refused.
    let origin = LogKey::from_vkey(&key).unwrap().origin;
    let other = LogKey::for_signer(&origin, &SigningKey::from_bytes(&[9; 32])).unwrap();
    let run = hattama(&["mirror", &demo.url, dir_s, "--key", &other.vkey]);
    assert_eq!(run.code, Some(10), "{run:?}");
    assert!(run.stderr.contains("not mixed"), "{run:?}");
}
