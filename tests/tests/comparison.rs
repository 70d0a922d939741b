//! The observed-vs-official comparison on the shape of the Almaty 2019 case (observers'
//! protocols from 225 stations gave a candidate 69,669 votes; the official figure for all 554
//! stations was 50,366), and the open data round trip: a fresh instance that imports the
//! exports shows the same comparison.
//!
//! The data is `hattama_tests::fixtures::almaty`: verified transcriptions made by the review's
//! double entry, seeded into the real data directory before the real server starts.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use hattama_tests::fixtures::almaty::{
    self, OBSERVED, OBSERVED_TOTAL, OFFICIAL_TOTAL, STATIONS, spread,
};
use hattama_tests::server::{TestServer, admin, import_election};
use serde_json::Value;

fn get_json(url: &str) -> Value {
    let r = reqwest::blocking::get(url).unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.json().unwrap()
}

fn line<'a>(comparison: &'a Value, id: &str) -> &'a Value {
    comparison["comparison"]["lines"].as_array().unwrap().iter().find(|l| l["line"] == id).unwrap()
}

#[test]
fn the_almaty_shaped_fixture_gives_exactly_the_totals() {
    let dir = tempfile::tempdir().unwrap();
    almaty::seed(dir.path());
    let server = TestServer::start_on(dir.path(), "127.0.0.1:0");
    let c = get_json(&format!("{}/api/v1/elections/almaty-2019/comparison", server.url));
    let candidate = line(&c, "7.1");
    assert_eq!(candidate["observed_all"], OBSERVED_TOTAL);
    assert_eq!(candidate["observed_precincts"], OBSERVED as u64);
    assert_eq!(candidate["official_all"], OFFICIAL_TOTAL);
    assert_eq!(candidate["official_precincts"], STATIONS as u64);
    // Like for like, over the same 225 stations, the official figure is smaller still.
    assert_eq!(candidate["both_precincts"], OBSERVED as u64);
    let official_same: u64 =
        spread(OFFICIAL_TOTAL, STATIONS).iter().step_by(2).take(OBSERVED).sum();
    assert_eq!(candidate["official_both"], official_same);
    assert_eq!(c["comparison"]["observed_precincts"], OBSERVED as u64);
    assert_eq!(c["comparison"]["differences"].as_array().unwrap().len(), OBSERVED);

    // The public page says the same, in numbers people read.
    let page = reqwest::blocking::Client::new()
        .get(format!("{}/elections/almaty-2019/comparison", server.url))
        .header("Accept-Language", "en")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("69\u{202F}669"), "observed total on the page");
    assert!(page.contains("50\u{202F}366"), "official total on the page");
    // The difference is said in words from the official side, not as a sign that reads either
    // way.
    let diff = candidate["observed_both"].as_u64().unwrap() - official_same;
    let grouped = |n: u64| {
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push('\u{202F}');
            }
            out.push(c);
        }
        out
    };
    assert!(page.contains(&format!("official: {} fewer", grouped(diff))), "{page}");
    assert!(!page.contains(&format!("+{}", grouped(diff))), "no bare sign");
    let ru = reqwest::blocking::Client::new()
        .get(format!("{}/elections/almaty-2019/comparison", server.url))
        .header("Accept-Language", "ru")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(ru.contains(&format!("официально на {} меньше", grouped(diff))), "{ru}");
}

#[test]
fn importing_the_exports_into_a_fresh_instance_gives_the_same_comparison() {
    let a_dir = tempfile::tempdir().unwrap();
    let election = almaty::seed(a_dir.path());
    let a = TestServer::start_on(a_dir.path(), "127.0.0.1:0");
    let export = |file: &str| {
        let url = format!("{}/api/v1/elections/almaty-2019/export/{file}", a.url);
        reqwest::blocking::get(url).unwrap().text().unwrap()
    };
    let (official, transcriptions) = (export("official.csv"), export("transcriptions.csv"));

    let b_dir = tempfile::tempdir().unwrap();
    import_election(b_dir.path(), &serde_json::to_value(&election).unwrap());
    for (command, csv) in [("official", &official), ("transcription", &transcriptions)] {
        let file = b_dir.path().join(format!("{command}.csv"));
        std::fs::write(&file, csv).unwrap();
        let run = admin(b_dir.path(), &[command, "import", file.to_str().unwrap()]);
        assert_eq!(run.code, Some(0), "{run:?}");
    }
    let b = TestServer::start_on(b_dir.path(), "127.0.0.1:0");
    let path = "/api/v1/elections/almaty-2019/comparison";
    let (ca, cb) = (get_json(&format!("{}{path}", a.url)), get_json(&format!("{}{path}", b.url)));
    assert_eq!(ca["comparison"], cb["comparison"]);
    assert_eq!(line(&cb, "7.1")["observed_all"], OBSERVED_TOTAL);
    // The exports of the copy are the same files.
    for file in ["official.csv", "transcriptions.csv", "differences.csv", "precincts.csv"] {
        let url = format!("{}/api/v1/elections/almaty-2019/export/{file}", b.url);
        let copy = reqwest::blocking::get(url).unwrap().text().unwrap();
        assert_eq!(copy, export(file), "{file}");
    }
}

#[test]
fn differences_and_transcriptions_name_stations_by_number_and_region() {
    let dir = tempfile::tempdir().unwrap();
    almaty::seed(dir.path());
    let server = TestServer::start_on(dir.path(), "127.0.0.1:0");
    let api = |path: &str| get_json(&format!("{}/api/v1/elections/almaty-2019{path}", server.url));
    let stations = api("/precincts");
    let named = |v: &Value| hattama_tests::check_stations_named(v, &stations);
    assert_eq!(named(&api("/comparison")["comparison"]["differences"]), OBSERVED);
    assert_eq!(named(&api("/export/differences.json")), OBSERVED);
    assert_eq!(named(&api("/export/transcriptions.json")), OBSERVED);
    let first = &api("/export/differences.json")[0];
    let csv = reqwest::blocking::get(format!(
        "{}/api/v1/elections/almaty-2019/export/differences.csv",
        server.url
    ))
    .unwrap()
    .text()
    .unwrap();
    let row = format!(
        "almaty-2019,{},{},{},",
        first["precinct"].as_str().unwrap(),
        first["number"],
        first["region"].as_str().unwrap()
    );
    assert!(csv.lines().nth(1).unwrap().starts_with(&row), "the CSV names it the same way: {row}");
}
