//! Evidence packages of a set of stations (`docs/evidence-package.md` section 6), end to end:
//! the real server streams them, the real `hattama verify-package` and the independent Python
//! verifier check them offline (each station's package inside, and the summary's totals
//! recomputed from them), the same data gives the same bytes, and tampering inside a station's
//! package or with the summary is found and named. On the Almaty-shaped fixture the package of
//! "all differing stations" shows 225 stations, 69,669 observed and 50,366 official.
//!
//! That memory does not grow with the number of stations is shown by `scripts/bench package`,
//! not asserted here.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use hattama_tests::demo::{Demo, ELECTION};
use hattama_tests::fixtures::almaty::{self, OBSERVED, OBSERVED_TOTAL, OFFICIAL_TOTAL, STATIONS};
use hattama_tests::package::{entries, python_verify, tampered, verify};
use hattama_tests::server::TestServer;
use serde_json::Value;

/// A GET with time for a set's first download, which writes every station's package and its
/// PDF report (minutes for hundreds of stations in a debug build on a busy machine).
fn get(url: &str) -> reqwest::blocking::Response {
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .unwrap();
    client.get(url).send().unwrap()
}

fn receipt_key(url: &str) -> String {
    let key = get(&format!("{url}/api/v1/receipts/key")).json::<Value>().unwrap();
    key["server_key"].as_str().unwrap().to_owned()
}

/// The set package of `query`; its bytes and entity tag.
fn set_package(url: &str, election: &str, query: &str) -> (Vec<u8>, String) {
    let r = get(&format!("{url}/api/v1/elections/{election}/evidence-package.zip?{query}"));
    assert_eq!(r.status(), 200, "{query}");
    assert_eq!(r.headers()["content-type"], "application/zip");
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    (r.bytes().unwrap().to_vec(), etag)
}

fn files(zip: &[u8]) -> BTreeMap<String, Vec<u8>> {
    entries(zip).into_iter().collect()
}

/// The number grouped as `summary.txt` writes it (`69 669`, no-break spaces).
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('\u{A0}');
        }
        out.push(c);
    }
    out
}

#[test]
fn the_almaty_differing_stations_package_shows_the_totals_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    almaty::seed(dir.path());
    let server = TestServer::start_on(dir.path(), "127.0.0.1:0");
    let (zip, etag) = set_package(&server.url, almaty::ELECTION, "differing=true");
    let f = files(&zip);
    let summary: Value = serde_json::from_slice(&f["summary.json"]).unwrap();
    assert_eq!(summary["stations"], OBSERVED as u64, "225 stations");
    assert_eq!(summary["differing_stations"], OBSERVED as u64);
    assert_eq!(summary["election_stations"], STATIONS as u64);
    let line = summary["lines"].as_array().unwrap().iter().find(|l| l["line"] == "7.1").unwrap();
    assert_eq!(line["set"]["observed_all"], OBSERVED_TOTAL, "69,669 observed");
    assert_eq!(line["election"]["official_all"], OFFICIAL_TOTAL, "50,366 official");
    assert_eq!(line["election"]["official_stations"], STATIONS as u64);
    // Largest difference first, and every station's package inside.
    let rows = summary["differing"].as_array().unwrap();
    assert!(rows.windows(2).all(|w| w[0]["size"].as_u64() >= w[1]["size"].as_u64()));
    let stations: Vec<&String> = f.keys().filter(|n| n.starts_with("stations/")).collect();
    assert_eq!(stations.len(), OBSERVED);

    // The plain-text summary, in Kazakh and Russian, says the same.
    let text = String::from_utf8(f["summary.txt"].clone()).unwrap();
    for needle in [
        grouped(OBSERVED_TOTAL),
        grouped(OFFICIAL_TOTAL),
        format!("Осы пакеттегі учаскелер: {OBSERVED}"),
        format!("Участков в этом пакете: {OBSERVED}"),
        "Ресми, сайлаудың барлық учаскелері бойынша (554): 50\u{A0}366".to_owned(),
        "Официально, по всем участкам выборов (554): 50\u{A0}366".to_owned(),
        "Наблюдатели, по всем участкам выборов (225): 69\u{A0}669".to_owned(),
    ] {
        assert!(text.contains(&needle), "{needle:?} in\n{}", &text[..2000.min(text.len())]);
    }

    // Both verifiers accept it, offline.
    let key = receipt_key(&server.url);
    let work = tempfile::tempdir().unwrap();
    let (code, out) = verify(&zip, work.path(), &key);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid: the evidence package of a set of 225 stations"), "{out}");
    assert!(out.contains("ok    summary.json: 225 stations, 225 of them differ"), "{out}");
    assert!(out.contains("line 7.1: observed 69669"), "{out}");
    let (code, out) = python_verify(&zip, work.path(), &key);
    assert_eq!(code, 0, "the Python verifier refused it:\n{out}");
    assert!(out.contains("VALID: set of 225 stations"), "{out}");

    // The same data gives the same bytes: again, and with every station's package written anew.
    let (again, again_etag) = set_package(&server.url, almaty::ELECTION, "differing=true");
    assert!(again == zip && again_etag == etag, "a second download differs");
    for f in std::fs::read_dir(dir.path().join("packages")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let (anew, anew_etag) = set_package(&server.url, almaty::ELECTION, "differing=true");
    assert!(anew == zip && anew_etag == etag, "a set written anew differs");
    let r = reqwest::blocking::Client::new()
        .get(format!(
            "{}/api/v1/elections/almaty-2019/evidence-package.zip?differing=true",
            server.url
        ))
        .header("If-None-Match", &etag)
        .send()
        .unwrap();
    assert_eq!(r.status(), 304);
}

#[test]
fn a_set_package_of_the_demo_verifies_and_names_every_tampered_file() {
    let demo = Demo::start(8, 3);
    let key = receipt_key(&demo.url);
    let (zip, _) = set_package(&demo.url, ELECTION, "differing=true");
    let work = tempfile::tempdir().unwrap();
    let (code, out) = verify(&zip, work.path(), &key);
    assert_eq!(code, 0, "{out}");
    let (code, out) = python_verify(&zip, work.path(), &key);
    assert_eq!(code, 0, "{out}");
    // The first station's package inside is byte for byte its own download.
    let f = files(&zip);
    let summary: Value = serde_json::from_slice(&f["summary.json"]).unwrap();
    let first = &summary["packages"][0];
    let (path, precinct) = (first["path"].as_str().unwrap(), first["precinct"].as_str().unwrap());
    let own = get(&format!(
        "{}/api/v1/elections/{ELECTION}/precincts/{precinct}/evidence-package.zip",
        demo.url
    ));
    assert_eq!(own.bytes().unwrap().to_vec(), f[path], "{path} is the station's own package");

    // A station of the set with a photo.
    let (station, photo) = f
        .iter()
        .filter(|(n, _)| n.starts_with("stations/"))
        .find_map(|(n, inner)| {
            let photo = entries(inner).into_iter().find(|(p, _)| p.contains("/photo."))?.0;
            Some((n.clone(), photo))
        })
        .expect("a differing station with a photo");
    let cases: Vec<(&str, Vec<u8>, Vec<String>)> = vec![
        (
            "one byte of a photo in a station's package",
            tampered(&zip, &station, |inner| {
                *inner = tampered(inner, &photo, |b| {
                    let i = b.len() / 2;
                    b[i] ^= 0x01;
                })
            }),
            vec![format!("FAIL  {station}: "), photo.clone()],
        ),
        (
            "a figure of the summary",
            tampered(&zip, "summary.json", |b| {
                let s = String::from_utf8(b.clone()).unwrap();
                let from = "\"observed_all\": ";
                let at = s.find(from).unwrap() + from.len();
                let digit = s.as_bytes()[at];
                let mut s = s.into_bytes();
                s[at] = if digit == b'9' { b'1' } else { digit + 1 };
                *b = s;
            }),
            vec!["FAIL  summary.json".to_owned()],
        ),
        (
            "a line of the set's SHA256SUMS",
            tampered(&zip, "SHA256SUMS", |b| {
                b[0] = if b[0] == b'0' { b'1' } else { b'0' };
            }),
            vec!["FAIL  SHA256SUMS: line 1".to_owned()],
        ),
    ];
    for (what, zip, expected) in cases {
        for (name, (code, out), failed) in [
            ("hattama verify-package", verify(&zip, work.path(), &key), 11),
            ("the Python verifier", python_verify(&zip, work.path(), &key), 1),
        ] {
            assert_eq!(code, failed, "{name}: {what} was not found:\n{out}");
            for e in &expected {
                assert!(out.contains(e.as_str()), "{name}, {what}: expected {e:?} in\n{out}");
            }
        }
    }
}

#[test]
fn the_comparison_page_links_the_sets_in_the_visitors_language() {
    let dir = tempfile::tempdir().unwrap();
    let election = almaty::seed(dir.path());
    let server = TestServer::start_on(dir.path(), "127.0.0.1:0");
    let client = reqwest::blocking::Client::new();
    let page = |lang: &str| {
        client
            .get(format!("{}/elections/almaty-2019/comparison", server.url))
            .header("Cookie", format!("lang={lang}"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    for (lang, text) in [
        ("kk", "225 учаскенің дәлелдер пакетін жүктеу"),
        ("ru", "Скачать пакет доказательств 225 участков"),
        ("en", "Download the evidence package of 225 stations"),
    ] {
        let html = page(lang);
        assert!(html.contains(text), "{lang}: no link text {text:?}");
        let href = "href=\"/api/v1/elections/almaty-2019/evidence-package.zip?differing=true\"";
        assert!(html.contains(href), "{lang}: no link to the differing stations' package");
    }
    // A district's link (askama writes `&` as `&#38;`), followed as a browser would: the
    // package of that district's differing stations, and only those.
    let html = page("en");
    let p = election.precincts.iter().step_by(2).next().unwrap();
    let link = format!(
        "/api/v1/elections/almaty-2019/evidence-package.zip?differing=true&#38;region={}&#38;\
         district={}",
        p.region,
        p.district.replace(' ', "%20")
    );
    assert!(html.contains(&link), "no link {link}");
    let (zip, _) = set_package(
        &server.url,
        almaty::ELECTION,
        &link.split_once('?').unwrap().1.replace("&#38;", "&"),
    );
    let summary: Value = serde_json::from_slice(&files(&zip)["summary.json"]).unwrap();
    assert_eq!(summary["selection"]["district"], p.district.as_str());
    let in_district = election
        .precincts
        .iter()
        .step_by(2)
        .take(OBSERVED)
        .filter(|x| x.region == p.region && x.district == p.district)
        .count();
    assert_eq!(summary["stations"], in_district as u64);
    let key = receipt_key(&server.url);
    let work = tempfile::tempdir().unwrap();
    let (code, out) = verify(&zip, work.path(), &key);
    assert_eq!(code, 0, "{out}");

    // Mistakes are said in JSON, with what to do.
    let api = |query: &str| {
        get(&format!("{}/api/v1/elections/almaty-2019/evidence-package.zip?{query}", server.url))
    };
    for (query, status, code) in [
        ("region=Atlantis", 404, "not_found"),
        ("precincts=p0001,nope", 404, "not_found"),
        ("precincts=../etc", 400, "bad_id"),
        ("regoin=Almaty", 400, "bad_query"),
        ("differing=true&precincts=p0002", 404, "no_stations"),
    ] {
        let r = api(query);
        assert_eq!(r.status(), status, "{query}");
        let body: Value = r.json().unwrap();
        assert_eq!(body["error"], code, "{query}: {body}");
        assert!(!body["message"].as_str().unwrap().is_empty());
    }
    let r = get(&format!("{}/api/v1/elections/nope/evidence-package.zip", server.url));
    assert_eq!(r.status(), 404);
}

#[test]
fn set_packages_count_against_a_clients_evidence_allowance() {
    let env = [
        ("HATTAMA__TRUSTED_PROXIES", "127.0.0.1"),
        // One more a minute: the first answer writes the package and its PDF report, which
        // may take seconds in a debug build on a busy machine, and must not refill the bucket.
        ("HATTAMA__RATE_LIMITS__EVIDENCE__PER_MINUTE", "1"),
        ("HATTAMA__RATE_LIMITS__EVIDENCE__BURST", "2"),
    ];
    let server = TestServer::start_with(&hattama_tests::fixtures::election("e2e", 3), &env);
    let url = format!("{}/api/v1/elections/e2e/evidence-package.zip?region=Astana", server.url);
    let http = reqwest::blocking::Client::new();
    let send = |client: &str| http.get(&url).header("X-Forwarded-For", client).send().unwrap();
    for i in 0..2 {
        assert_eq!(send("203.0.113.1").status(), 200, "request {i}");
    }
    let r = send("203.0.113.1");
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.json::<Value>().unwrap()["error"], "rate_limited");
    assert_eq!(send("203.0.113.2").status(), 200, "another client is served");
}
