//! The public gallery, its JSON API and open data, end to end: the real server on a random port,
//! real uploads from a device, official results imported by the real admin command, pages read
//! by HTTP and by a real browser (headless Chromium through playwright-core), and the API
//! checked against its own OpenAPI document by schemathesis.

// Test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use hattama_core::media::{self, MediaLimits};
use hattama_server::demo;
use hattama_tests::raw::RawDevice;
use hattama_tests::server::{TestServer, admin, import_election};
use serde_json::Value;

/// A precinct address and an observer note full of markup: they must render as text.
const MARKUP_ADDRESS: &str = "<script>alert('addr')</script> School \"No. 1\" & <b>Co</b>";
const MARKUP_NOTE: &str = "<img src=x onerror=alert(1)> posted \"late\" & torn";

/// A server with election `e2e` of 12 precincts (precinct p0001's address full of markup),
/// three captures uploaded by a device (two for p0001, one with a note full of markup, one for
/// p0002), and two versions of official results.
struct Gallery {
    server: TestServer,
    /// Official figures of version 1 and 2 as imported.
    official: [String; 2],
    /// The photos' SHA-256, hex.
    photos: Vec<String>,
    /// The capture ids.
    captures: Vec<String>,
    _dir: tempfile::TempDir,
}

fn protocol_photo(number: u32, seed: u64) -> (Vec<u8>, hattama_core::evidence::PhotoInfo) {
    let election = demo::election(3, 0).unwrap();
    let values = demo::protocol_values(&election.protocol, seed);
    let sheet = demo::photo::Sheet {
        title: "Election",
        precinct_number: number,
        template: &election.protocol,
        values: &values,
        page: (1, 1),
    };
    let jpeg = demo::photo::protocol_photo(&sheet, 300, 400, seed);
    let clean = media::strip(&jpeg, &MediaLimits::default()).unwrap();
    let info = clean.info();
    (clean.bytes, info)
}

fn official_csv(bump: u64) -> String {
    let mut out = String::from("election,precinct,line,value\n");
    for p in 1..=12 {
        for (line, value) in
            [("5", 500 + p), ("6", 10), ("7.1", 200 + bump * (p % 2)), ("7.2", 150)]
        {
            out.push_str(&format!("e2e,p{p:04},{line},{value}\n"));
        }
    }
    out
}

impl Gallery {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut election = hattama_tests::fixtures::election("e2e", 12);
        election["precincts"][0]["address"] = Value::from(MARKUP_ADDRESS);
        import_election(dir.path(), &election);
        let official = [official_csv(0), official_csv(7)];
        for (i, csv) in official.iter().enumerate() {
            let file = dir.path().join(format!("official-v{}.csv", i + 1));
            std::fs::write(&file, csv).unwrap();
            let run = admin(dir.path(), &["official", "import", file.to_str().unwrap()]);
            assert_eq!(run.code, Some(0), "{run:?}");
            assert!(run.stdout.contains(&format!("imported version {}", i + 1)), "{run:?}");
        }
        let server = TestServer::start_on(dir.path(), "127.0.0.1:0");
        let code = &server.invite(&["p0001", "p0002"], 1)[0];
        let mut device = RawDevice::new(77);
        assert_eq!(device.enroll(&server.url, code).status, 200);
        let (mut photos, mut captures) = (Vec::new(), Vec::new());
        for (precinct, seed, note) in
            [("p0001", 1, None), ("p0001", 2, Some(MARKUP_NOTE)), ("p0002", 3, None)]
        {
            let (bytes, info) = protocol_photo(1, seed);
            let signed = device.sign_with(precinct, &info, |m| m.note = note.map(str::to_owned));
            let answer = device.upload(&server.url, &signed, &bytes);
            assert_eq!(answer.status, 200, "{answer:?}");
            photos.push(info.sha256.to_hex());
            captures.push(signed.hash().to_hex());
        }
        Self { server, official, photos, captures, _dir: dir }
    }

    fn get(&self, path: &str) -> reqwest::blocking::Response {
        reqwest::blocking::get(format!("{}{path}", self.server.url)).unwrap()
    }

    fn json(&self, path: &str) -> Value {
        let r = self.get(path);
        assert_eq!(r.status(), 200, "{path}");
        r.json().unwrap()
    }
}

#[test]
fn the_api_shows_every_capture_official_version_and_change() {
    let g = Gallery::start();
    let p = g.json("/api/v1/elections/e2e/precincts/p0001");
    let captures = p["captures"].as_array().unwrap();
    assert_eq!(captures.len(), 2);
    assert_eq!(captures[0]["capture"]["id"], g.captures[0].as_str());
    assert_eq!(captures[1]["capture"]["note"], MARKUP_NOTE);
    assert_eq!(captures[0]["photo_url"], format!("/photos/{}", g.photos[0]));
    assert_eq!(p["official_version"], 2);
    assert_eq!(p["official"]["7.1"], 207);
    let changes = p["official_changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["line"], "7.1");
    assert_eq!(
        (changes[0]["before"].as_u64(), changes[0]["after"].as_u64()),
        (Some(200), Some(207))
    );

    // The evidence the page links to is there, and the photo is byte for byte the signed one.
    for (c, sha) in captures.iter().zip(&g.photos) {
        let photo = g.get(c["photo_url"].as_str().unwrap());
        assert_eq!(photo.headers()["cache-control"], "public, max-age=31536000, immutable");
        let bytes = photo.bytes().unwrap();
        assert_eq!(&hattama_core::evidence::Sha256Hash::of(&bytes).to_hex(), sha);
        let thumb = g.get(&format!("/photos/{sha}/thumb"));
        assert_eq!(thumb.status(), 200);
        assert_eq!(thumb.headers()["content-type"], "image/jpeg");
        let img = image::load_from_memory(&thumb.bytes().unwrap()).unwrap();
        assert!(img.width() <= 320 && img.height() <= 320);
    }

    // Coverage counts public photos; nothing is accepted before review.
    let e = g.json("/api/v1/elections/e2e");
    assert_eq!(e["coverage"]["photographed"], 2);
    assert_eq!(e["coverage"]["captures"], 3);
    assert_eq!(e["coverage"]["precincts"], 12);
    assert_eq!(e["official_versions"].as_array().unwrap().len(), 2);

    // Every version's official figures come back in the import format, byte for byte.
    for (i, csv) in g.official.iter().enumerate() {
        let r = g.get(&format!("/api/v1/elections/e2e/export/official.csv?version={}", i + 1));
        assert_eq!(r.status(), 200);
        let text = r.text().unwrap();
        assert_eq!(text.strip_prefix('\u{feff}'), Some(csv.as_str()), "a BOM, then the file");
    }
    // The bulk evidence export has every capture, with manifest, signature, receipt and log.
    let jsonl = g.get("/api/v1/elections/e2e/export/evidence.jsonl").text().unwrap();
    let lines: Vec<Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    for (line, id) in lines.iter().zip(&g.captures) {
        assert_eq!(&line["id"], id.as_str());
        assert!(line["manifest"].as_str().unwrap().starts_with("{\"captured_at_ms\""));
        assert_eq!(line["signature"].as_str().unwrap().len(), 128);
        assert_eq!(line["receipt"]["receipt"]["capture_id"], id.as_str(), "{line}");
        assert!(line["log_index"].is_u64(), "{line}");
    }
    // Its members in the documented order (docs/open-data.md), and each receipt complete: it
    // verifies under the public receipt key, and its log proof under the public log key.
    let members = [
        "id",
        "precinct",
        "number",
        "region",
        "manifest",
        "signature",
        "receipt",
        "log_index",
        "photo_url",
        "inclusion_proof_url",
    ];
    let server_key = g.json("/api/v1/receipts/key")["server_key"].as_str().unwrap().to_owned();
    let server_key =
        hattama_core::evidence::DeviceKey(hex::decode(&server_key).unwrap().try_into().unwrap());
    let log_key =
        hattama_core::log::LogKey::from_vkey(g.json("/api/v1/log/key")["vkey"].as_str().unwrap())
            .unwrap();
    for (raw, line) in jsonl.lines().zip(&lines) {
        let at: Vec<usize> =
            members.iter().map(|m| raw.find(&format!("\"{m}\":")).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "members out of order: {raw}");
        assert_eq!(line.as_object().unwrap().len(), members.len(), "{raw}");
        let receipt = hattama_core::receipt::SignedReceipt::from_json(
            serde_json::to_string(&line["receipt"]).unwrap().as_bytes(),
        )
        .unwrap();
        let r = &receipt.receipt;
        receipt.verify(&server_key, &r.capture_id, &r.photo_sha256).unwrap();
        let verified = receipt.verify_log(&log_key, "e2e", line["precinct"].as_str().unwrap());
        assert_eq!(verified.unwrap().index, line["log_index"].as_u64().unwrap(), "{raw}");
    }
    // Search by number and by address words.
    let hits = g.json("/api/v1/elections/e2e/precincts?q=2");
    assert_eq!(hits[0]["id"], "p0002", "{hits}");
    let hits = g.json("/api/v1/elections/e2e/precincts?q=school%20no.%201%22");
    assert_eq!(hits.as_array().unwrap().len(), 1, "{hits}");
    assert_eq!(hits[0]["id"], "p0001");
}

#[test]
fn pages_carry_etags_and_answer_304() {
    let g = Gallery::start();
    for path in [
        "/",
        "/elections/e2e",
        "/elections/e2e/precincts/p0001",
        "/elections/e2e/comparison",
        "/api/v1/elections/e2e/precincts/p0001",
    ] {
        let first = g.get(path);
        assert_eq!(first.status(), 200, "{path}");
        let etag = first.headers()["etag"].to_str().unwrap().to_owned();
        let again = reqwest::blocking::Client::new()
            .get(format!("{}{path}", g.server.url))
            .header("If-None-Match", &etag)
            .send()
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
    }
}

#[test]
fn markup_in_addresses_and_notes_renders_escaped() {
    let g = Gallery::start();
    for path in ["/elections/e2e/precincts/p0001", "/elections/e2e/search?q=school"] {
        let r = g.get(path);
        assert_eq!(r.status(), 200);
        let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
        let body = r.text().unwrap();
        assert!(!body.contains("<script>alert"), "{path}: unescaped address");
        assert!(!body.contains("<b>Co</b>"), "{path}: unescaped address");
        let shown: Vec<&str> = body.lines().filter(|l| l.contains("School")).collect();
        // askama escapes with numeric references: `<` is `&#60;`.
        assert!(
            body.contains("&#60;script&#62;alert(&#39;addr&#39;)"),
            "{path}: the address is shown, escaped: {shown:?}"
        );
        if path.contains("precincts") {
            assert!(!body.contains("<img src=x"), "unescaped note");
            assert!(body.contains("&#60;img src=x onerror=alert(1)&#62;"), "the note is shown");
        }
    }
}

#[test]
fn official_imports_refuse_bad_files_and_store_nothing() {
    let g = Gallery::start();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("election,precinct,line,value\ne2e,p9999,5,1\n", "row 2: election has no precinct"),
        ("election,precinct,line,value\ne2e,p0001,99,1\n", "row 2: the protocol has no line"),
        ("election,precinct,line,value\ne2e,p0001,5,-3\n", "row 2: value \"-3\""),
        ("election,precinct,line,value\ne2e,p0001,5,1\ne2e,p0001,5,2\n", "row 3: precinct"),
        ("precinct,line,value\np0001,5,1\n", "the header must be"),
        ("election,precinct,line,value\nnope,p0001,5,1\n", "no election \"nope\""),
    ];
    for (csv, expected) in cases {
        let file = dir.path().join("bad.csv");
        std::fs::write(&file, csv).unwrap();
        let run = admin(&g.server.data_dir, &["official", "import", file.to_str().unwrap()]);
        assert_ne!(run.code, Some(0), "{csv}");
        assert!(run.stderr.contains(expected), "{csv}: {run:?}");
    }
    // The same figures again make no new version.
    let file = dir.path().join("same.csv");
    std::fs::write(&file, &g.official[1]).unwrap();
    let run = admin(&g.server.data_dir, &["official", "import", file.to_str().unwrap()]);
    assert!(run.stdout.starts_with("unchanged"), "{run:?}");
    let versions = g.json("/api/v1/elections/e2e/official");
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);
}

#[test]
fn hostile_public_requests_get_json_errors() {
    let g = Gallery::start();
    for (path, status, code) in [
        ("/api/v1/elections/..%2F..%2Fetc", 400, "bad_id"),
        ("/api/v1/elections/nope", 404, "not_found"),
        ("/api/v1/elections/e2e/precincts/p9999", 404, "not_found"),
        ("/api/v1/elections/e2e/precincts/a%2Fb", 400, "bad_id"),
        ("/api/v1/elections/e2e/export/..%2Fhattama-server.sqlite3", 404, "not_found"),
        ("/api/v1/elections/e2e/export/official.csv?version=99", 404, "not_found"),
        ("/api/v1/elections/e2e/export/official.csv?version=x", 400, "bad_query"),
        ("/photos/..%2F..%2Fkeys%2Freceipt.key", 400, "bad_id"),
    ] {
        let r = g.get(path);
        assert_eq!(r.status(), status, "{path}");
        let body: Value = r.json().unwrap();
        assert_eq!(body["error"], code, "{path}: {body}");
    }
    let long = "x".repeat(300);
    let r = g.get(&format!("/api/v1/elections/e2e/precincts?q={long}"));
    assert_eq!(r.status(), 400);
    // A browser route gets the HTML error page instead.
    let r = g.get("/elections/nope");
    assert_eq!(r.status(), 404);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
}

/// The venv `scripts/test` installs schemathesis into.
fn schemathesis() -> PathBuf {
    let path = hattama_tests::browser::repo_root().join("build/schemathesis-venv/bin/schemathesis");
    assert!(path.exists(), "{} is missing: scripts/test installs it", path.display());
    path
}

#[test]
fn schemathesis_finds_the_api_as_documented() {
    let g = Gallery::start();
    let root = hattama_tests::browser::repo_root();
    let work = tempfile::tempdir().unwrap();
    // Real identifiers, so that every documented endpoint is exercised with data that exists
    // as well as with generated data.
    let config = format!(
        "{}\n[parameters]\n\"path.election\" = \"e2e\"\n\"path.precinct\" = \"p0001\"\n\
         \"path.id\" = \"{}\"\n\"path.sha256\" = \"{}\"\n",
        std::fs::read_to_string(root.join("tests/openapi/schemathesis.toml")).unwrap(),
        g.captures[0],
        g.photos[0],
    );
    let config_file = work.path().join("schemathesis.toml");
    std::fs::write(&config_file, config).unwrap();
    let out = std::process::Command::new(schemathesis())
        .arg("--config-file")
        .arg(&config_file)
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", g.server.url))
        .args(["--checks", "all", "--max-examples", "25", "--workers", "2", "--seed", "1"])
        .current_dir(work.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Tested: 20"), "{stdout}");
}

#[test]
fn a_phone_browses_to_a_precinct_searches_switches_language_and_opens_a_photo() {
    let g = Gallery::start();
    hattama_tests::browser::run_script("gallery", &g.server.url, &["e2e", &g.photos[0]]);
}

#[test]
fn an_official_import_beside_the_running_server_is_seen_at_once() {
    let g = Gallery::start();
    assert_eq!(g.json("/api/v1/elections/e2e/precincts/p0001")["official"]["7.1"], 207);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("v3.csv");
    std::fs::write(&file, official_csv(20)).unwrap();
    let run = admin(&g.server.data_dir, &["official", "import", file.to_str().unwrap()]);
    assert!(run.stdout.contains("imported version 3"), "{run:?}");
    // The cached views notice the commit of another process within a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let p = g.json("/api/v1/elections/e2e/precincts/p0001");
        if p["official_version"] == 3 {
            assert_eq!(p["official"]["7.1"], 220);
            assert_eq!(p["official_changes"].as_array().unwrap().len(), 2, "{p}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "version 3 never shown: {p}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The bytes a client receives for `path` with this `Accept-Encoding` (none: identity), and
/// the answer's `Content-Encoding`.
fn sent(url: &str, path: &str, accept: Option<&str>) -> (Vec<u8>, String) {
    let mut req = reqwest::blocking::Client::new().get(format!("{url}{path}"));
    if let Some(a) = accept {
        req = req.header("Accept-Encoding", a);
    }
    let r = req.send().unwrap();
    assert_eq!(r.status(), 200, "{path}");
    let encoding = r
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (r.bytes().unwrap().to_vec(), encoding)
}

#[test]
fn pages_and_data_are_compressed_as_negotiated_and_csv_downloads_with_a_bom() {
    let g = Gallery::start();
    let url = &g.server.url;
    let station = "/elections/e2e/precincts/p0001";
    let (plain, none) = sent(url, station, None);
    assert_eq!(none, "", "nothing compressed unless asked");
    assert!(String::from_utf8(plain.clone()).unwrap().contains("<html"));
    let (gz, gzip) = sent(url, station, Some("gzip"));
    assert_eq!(gzip, "gzip");
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "a gzip stream");
    let (br, brotli) = sent(url, station, Some("br, gzip"));
    assert_eq!(brotli, "br", "brotli preferred when both are accepted");
    println!(
        "station page as sent: {} bytes plain, {} gzip, {} brotli",
        plain.len(),
        gz.len(),
        br.len()
    );
    // At least 2.5 times smaller (a page of photo hashes, which do not compress, and little
    // repeated markup since a station without observed figures has no empty columns).
    assert!(br.len() * 5 < plain.len() * 2 && gz.len() * 5 < plain.len() * 2, "compressed well");
    for path in ["/api/v1/elections/e2e", "/api/v1/elections/e2e/export/precincts.csv"] {
        assert_eq!(sent(url, path, Some("gzip")).1, "gzip", "{path}");
    }
    // Photos are JPEG already: sent as they are.
    let photo = format!("/photos/{}", g.photos[0]);
    assert_eq!(sent(url, &photo, Some("br, gzip")).1, "", "photo");

    // CSV: a byte-order mark, a download with a file name that says what it is.
    let r = g.get("/api/v1/elections/e2e/export/official.csv?version=1");
    assert_eq!(r.headers()["content-disposition"], "attachment; filename=\"e2e-official-v1.csv\"");
    let bytes = r.bytes().unwrap();
    assert_eq!(&bytes[..3], b"\xEF\xBB\xBF", "UTF-8 byte-order mark");
    assert_eq!(&bytes[3..], g.official[0].as_bytes(), "then the import format, byte for byte");
    let r = g.get("/api/v1/elections/e2e/export/differences.csv");
    assert_eq!(r.headers()["content-disposition"], "attachment; filename=\"e2e-differences.csv\"");
    let text = r.text().unwrap();
    assert!(
        text.starts_with(
            "\u{feff}election,precinct,number,region,line,observed,official,difference\n"
        ),
        "{text}"
    );
    let r = g.get("/api/v1/elections/e2e/export/precincts.json");
    assert_eq!(r.headers()["content-disposition"], "attachment; filename=\"e2e-precincts.json\"");
    assert_eq!(r.bytes().unwrap()[0], b'[', "no byte-order mark in JSON");
}

#[test]
fn a_medium_rendition_sits_between_the_thumbnail_and_the_original() {
    let g = Gallery::start();
    // A phone-camera-sized photo of a protocol (2400×3200), uploaded like any other.
    let election = demo::election(3, 0).unwrap();
    let values = demo::protocol_values(&election.protocol, 9);
    let sheet = demo::photo::Sheet {
        title: "Election",
        precinct_number: 2,
        template: &election.protocol,
        values: &values,
        page: (1, 1),
    };
    let jpeg = demo::photo::protocol_photo(&sheet, 2400, 3200, 9);
    let clean = media::strip(&jpeg, &MediaLimits::default()).unwrap();
    let info = clean.info();
    let code = &g.server.invite(&["p0002"], 1)[0];
    let mut device = RawDevice::new(78);
    assert_eq!(device.enroll(&g.server.url, code).status, 200);
    let signed = device.sign_with("p0002", &info, |_| {});
    assert_eq!(device.upload(&g.server.url, &signed, &clean.bytes).status, 200);
    let sha = info.sha256.to_hex();

    let fetch = |path: String| {
        let r = g.get(&path);
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], "image/jpeg");
        assert_eq!(r.headers()["cache-control"], "public, max-age=31536000, immutable");
        r.bytes().unwrap().to_vec()
    };
    let original = fetch(format!("/photos/{sha}"));
    let medium = fetch(format!("/photos/{sha}/medium"));
    let thumb = fetch(format!("/photos/{sha}/thumb"));
    let img = image::load_from_memory(&medium).unwrap();
    assert_eq!((img.width(), img.height()), (960, 1280), "1280 pixels on the long side");
    assert!(thumb.len() < medium.len() && medium.len() * 3 < original.len(), "a fraction");
    println!(
        "photo 2400×3200: original {} bytes, medium (1280 px) {} bytes ({:.0} %), thumbnail {} bytes",
        original.len(),
        medium.len(),
        100.0 * medium.len() as f64 / original.len() as f64,
        thumb.len()
    );
    // Made once: the same bytes again.
    assert_eq!(fetch(format!("/photos/{sha}/medium")), medium);
    // The station page opens the medium rendition from the thumbnail.
    let page = g.get("/elections/e2e/precincts/p0002").text().unwrap();
    assert!(page.contains(&format!("href=\"/photos/{sha}/medium\"")), "linked from the page");
}

#[test]
fn a_photo_already_smaller_than_the_medium_size_is_served_as_it_is() {
    let g = Gallery::start();
    // 300×400 and upright: the medium rendition is the photo itself, byte for byte, never a
    // re-encoding of it (which could only be bigger or worse).
    let sha = &g.photos[0];
    let original = g.get(&format!("/photos/{sha}")).bytes().unwrap();
    for _ in 0..2 {
        let r = g.get(&format!("/photos/{sha}/medium"));
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "image/jpeg");
        assert_eq!(r.headers()["cache-control"], "public, max-age=31536000, immutable");
        assert_eq!(r.bytes().unwrap(), original, "the original's bytes");
    }
    // A small photo taken sideways (orientation 6) is turned upright, so it is re-encoded.
    let (bytes, info) = protocol_photo(2, 11);
    let code = &g.server.invite(&["p0002"], 1)[0];
    let mut device = RawDevice::new(79);
    assert_eq!(device.enroll(&g.server.url, code).status, 200);
    let signed = device.sign_with("p0002", &info, |m| m.photo.orientation = 6);
    assert_eq!(device.upload(&g.server.url, &signed, &bytes).status, 200);
    let sha = info.sha256.to_hex();
    let medium = g.get(&format!("/photos/{sha}/medium")).bytes().unwrap();
    assert_ne!(medium, bytes, "re-encoded");
    let img = image::load_from_memory(&medium).unwrap();
    assert_eq!((img.width(), img.height()), (400, 300), "upright");
}

#[test]
fn official_changes_and_evidence_name_stations_by_number_and_region() {
    let g = Gallery::start();
    let stations = g.json("/api/v1/elections/e2e/precincts");
    let named = |v: &Value| hattama_tests::check_stations_named(v, &stations);
    // Version 2 changed line 7.1 of the six odd-numbered stations.
    assert_eq!(named(&g.json("/api/v1/elections/e2e/official")["changes"]), 6);
    assert_eq!(named(&g.json("/api/v1/elections/e2e/export/official.json")["changes"]), 6);
    assert_eq!(named(&g.json("/api/v1/elections/e2e/precincts/p0001")["official_changes"]), 1);
    let jsonl = g.get("/api/v1/elections/e2e/export/evidence.jsonl").text().unwrap();
    let lines: Vec<Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(named(&Value::from(lines)), 3, "every capture's station");
    let change = &g.json("/api/v1/elections/e2e/official")["changes"][0];
    assert_eq!((&change["precinct"], &change["number"]), (&Value::from("p0001"), &Value::from(1)));
}

#[test]
fn figures_without_an_accepted_photo_behind_them_say_so() {
    let g = Gallery::start();
    // Verified figures from another instance for p0001 (photographed, nothing accepted yet) and
    // p0003 (never photographed here).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("transcriptions.csv");
    std::fs::write(&file, "election,precinct,line,value\ne2e,p0001,7.1,300\ne2e,p0003,7.1,300\n")
        .unwrap();
    let run = admin(&g.server.data_dir, &["transcription", "import", file.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let page = |p: &str| g.get(&format!("/elections/e2e/precincts/{p}")).text().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !page("p0003").contains("id=\"no-accepted-photo\"") {
        assert!(std::time::Instant::now() < deadline, "never said: {}", page("p0003"));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(page("p0001").contains("id=\"no-accepted-photo\""), "photographed, none accepted");
    assert!(!page("p0004").contains("id=\"no-accepted-photo\""), "no figures, nothing to say");
}
