//! Every page as its users see it, on the real demo (`hattama-server demo`: real captures made
//! and synced by the core, reviews, two official versions): every public and review route in
//! Kazakh, Russian and English at 320, 390 and 1280 px, with no sideways scrolling, no
//! untranslated message, no console error and no serious accessibility violation (axe-core).
//! Screenshots go to `artifacts/screenshots/pages/`.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use hattama_tests::browser;
use hattama_tests::demo::{Demo, ELECTION};
use serde_json::{Value, json};

/// The demo's accounts' password (`hattama_server::demo::DEMO_PASSWORD`).
const PASSWORD: &str = hattama_server::demo::DEMO_PASSWORD;

fn page(name: &str, path: String) -> Value {
    json!({ "name": name, "path": path })
}

/// The first precinct of the demo's list for which `pick` holds.
fn precinct(list: &[Value], what: &str, pick: impl Fn(&Value) -> bool) -> Value {
    list.iter()
        .find(|p| pick(p))
        .unwrap_or_else(|| panic!("the demo has no precinct {what}"))
        .clone()
}

#[test]
fn every_page_fits_a_phone_reads_in_three_languages_and_passes_axe() {
    let demo = Demo::start(14, 2);
    let e = format!("/elections/{ELECTION}");
    let list = demo.json(&format!("/api/v1/elections/{ELECTION}/precincts"));
    let list = list.as_array().unwrap();
    let differs = precinct(list, "differing from official", |p| p["differs"] == true);
    let without = precinct(list, "without a photo", |p| p["captures"] == 0);
    let disputed = precinct(list, "with disputed entries", |p| p["transcription"] == "disputed");
    let id = |p: &Value| p["id"].as_str().unwrap().to_owned();
    let enc = hattama_server::web::percent_encode;
    let region = differs["region"].as_str().unwrap();
    let district = differs["district"].as_str().unwrap();
    let record = demo.json(&format!("/api/v1/elections/{ELECTION}/precincts/{}", id(&differs)));
    let capture = record["captures"][0]["capture"]["id"].as_str().unwrap().to_owned();
    let public = vec![
        page("home", "/".into()),
        page("election", e.clone()),
        page("region", format!("{e}/regions/{}", enc(region))),
        page("district", format!("{e}/regions/{}/{}", enc(region), enc(district))),
        page("precinct-differs", format!("{e}/precincts/{}", id(&differs))),
        page("precinct-no-photo", format!("{e}/precincts/{}", id(&without))),
        page("precinct-disputed", format!("{e}/precincts/{}", id(&disputed))),
        page("search", format!("{e}/search?q={}", differs["number"])),
        page("search-address", format!("{e}/search?q=school")),
        page("comparison", format!("{e}/comparison")),
        page("comparison-line", format!("{e}/comparison?line=7.1")),
        page("official", format!("{e}/official")),
        page("data", format!("{e}/data")),
        page("check-photo", format!("/check/{capture}")),
        json!({ "name": "not-found", "path": "/no/such/page", "status": 404 }),
    ];
    let review = vec![
        page("review-queue", "/review".into()),
        page("review-queue-mine", "/review?view=mine".into()),
        page("review-queue-unknown-state", "/review?state=pending".into()),
        page("review-queue-precinct", format!("/review?precinct={}", id(&disputed))),
        page("review-capture", format!("/review/captures/{capture}")),
    ];
    // One time zone on a station page, the election's own, stated once.
    let html =
        |path: &str| reqwest::blocking::get(format!("{}{path}", demo.url)).unwrap().text().unwrap();
    let station = html(&format!("{e}/precincts/{}", id(&differs)));
    assert_eq!(station.matches("UTC").count(), 1, "one time zone, stated once");
    assert!(station.contains("UTC+05:00"), "the election's own time zone");
    // Plain words in Kazakh and Russian: the home page's coverage in one sentence, figures
    // still being checked without the review's jargon, a difference from the official side.
    let in_lang = |path: &str, lang: &str| {
        reqwest::blocking::Client::new()
            .get(format!("{}{path}", demo.url))
            .header("Accept-Language", lang)
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    let accepted = list.iter().filter(|p| p["accepted"].as_u64().unwrap_or(0) > 0).count();
    assert_eq!((list.len(), accepted), (14, 9), "the demo's coverage");
    assert!(
        in_lang("/", "kk").contains("14 учаскенің 9-ында қабылданған сурет бар."),
        "{}",
        in_lang("/", "kk")
    );
    let disputed_ru = in_lang(&format!("{e}/precincts/{}", id(&disputed)), "ru");
    assert!(disputed_ru.contains("Цифры с фото ещё проверяются"), "{disputed_ru}");
    assert!(!disputed_ru.contains("ввода"), "no review jargon");
    let disputed_kk = in_lang(&format!("{e}/precincts/{}", id(&disputed)), "kk");
    assert!(disputed_kk.contains("Сандар әлі тексерілуде"), "{disputed_kk}");
    let differs_ru = in_lang(&format!("{e}/precincts/{}", id(&differs)), "ru");
    assert!(
        differs_ru.contains("официально на ") && !differs_ru.contains("(−"),
        "the difference in words: {differs_ru}"
    );
    // Search by the number as people write it, on the home page too.
    assert!(html("/").contains(&format!("action=\"{e}/search\"")), "search on the home page");
    let n = &differs["number"];
    for q in
        [format!("№{n}"), format!("участок {n}"), format!("{n}-участке"), format!("№ {n} учаске")]
    {
        let found = html(&format!("{e}/search?q={}", enc(&q)));
        assert!(found.contains(&format!("/precincts/{}\"", id(&differs))), "{q} finds the station");
        assert!(found.contains("id=\"search-count\""), "{q}: says how many");
    }
    // The vote chart on the comparison page; the "differ from official" count links to the list.
    let comparison = html(&format!("{e}/comparison"));
    assert!(comparison.contains("id=\"vote-chart\""), "observed against official, drawn");
    assert!(comparison.contains("class=\"bar-observed\""), "with bars");
    let overview = html(&e);
    // The coverage chart: all stations first, then a bar per region, each linked.
    let chart = overview.split("id=\"coverage-chart\"").nth(1).expect("a coverage chart");
    let chart = chart.split("</svg>").next().unwrap();
    let regions = demo.json(&format!("/api/v1/elections/{ELECTION}"))["regions"].clone();
    let regions = regions.as_array().unwrap();
    assert_eq!(chart.matches("class=\"bar-accepted\"").count(), regions.len() + 1, "{chart}");
    assert_eq!(chart.matches("<a href=").count(), regions.len(), "a link per region");
    let first = |s: &str| chart.find(s).unwrap_or_else(|| panic!("{s} in {chart}"));
    assert!(first("<g class=\"all\">") < first("<a href="), "all stations first");
    let coverage = &demo.json(&format!("/api/v1/elections/{ELECTION}"))["coverage"];
    let (accepted, precincts) = (&coverage["accepted"], &coverage["precincts"]);
    assert!(chart.contains(&format!("{accepted}/{precincts}")), "the figures: {chart}");
    assert!(
        overview.contains(&format!("href=\"{e}/comparison#drill\" id=\"differing-link\"")),
        "the differing count links to the list"
    );
    // The comparison: its scope in one sentence, then the stations that differ, one line per
    // differing figure, before the chart and the totals; "stations with both" said once.
    let cmp = in_lang(&format!("{e}/comparison"), "ru");
    assert!(cmp.contains("id=\"cmp-summary\">Сравниваем "), "{cmp}");
    let drill = cmp.find("id=\"drill\"").expect("the list of differences");
    assert!(drill < cmp.find("id=\"vote-chart\"").unwrap(), "differences first");
    assert!(drill < cmp.find("id=\"totals\"").unwrap(), "differences first");
    assert!(cmp.contains("class=\"diff-lines\""), "a line per differing figure");
    assert!(cmp.contains(": фото ") && cmp.contains(", официально "), "{cmp}");
    assert!(!cmp.contains("(Участки, где есть и то и другое)"), "not repeated on every figure");
    // The review, before the browser has told its zone, shows times in the election's zone, as
    // the public pages do, not in UTC.
    let mut coordinator = hattama_tests::review::Browser::new(&demo.url);
    let login = coordinator.try_login(hattama_server::demo::DEMO_USERS[0].0, PASSWORD);
    assert_eq!(login.status, 303, "{login:?}");
    let queue = coordinator.get("/review").body;
    let zone = queue.split("id=\"zone\">").nth(1).expect("the zone stated").split('<').next();
    assert!(zone.unwrap().contains("UTC+05:00"), "{zone:?}");
    // A station without a photo says so first, and shows no empty photo or difference column.
    let no_photo = in_lang(&format!("{e}/precincts/{}", id(&without)), "en");
    let said = no_photo.find("id=\"no-photo\"").expect("says there is no photo");
    assert!(said < no_photo.find("<table").unwrap_or(usize::MAX), "before the figures");
    assert!(no_photo.contains("send it with the Hattama app"), "what a reader can do");
    assert!(!no_photo.contains("data-label=\"Difference\""), "no empty difference column");
    assert!(!no_photo.contains("not entered yet"), "no badge implying a photo exists");
    // A region's chart names its districts without repeating the region.
    let region_page = html(&format!("{e}/regions/{}", enc(region)));
    let labels: Vec<&str> = region_page
        .split("class=\"bar-label\">")
        .skip(1)
        .map(|l| l.split('<').next().unwrap())
        .collect();
    assert!(labels.len() > 1, "{region_page}");
    for label in &labels[1..] {
        assert!(!label.starts_with(region) && !label.contains('…'), "{label}");
    }
    // Stations are named by number and place, never by an internal id.
    let official = html(&format!("{e}/official"));
    assert!(official.contains("class=\"changes\""), "the demo's official figures changed");
    assert!(!official.contains(">p0"), "no internal station id as a name");
    // The console, as its admin sees it: a fresh batch of invites to print, a device.
    let made = hattama_tests::server::admin(
        demo.data_dir(),
        &["invite", "create", "--election", ELECTION, "--precinct", &id(&without), "--count", "3"],
    );
    assert_eq!(made.code, Some(0), "{made:?}");
    let mut root = hattama_tests::review::Browser::new(&demo.url);
    assert_eq!(root.try_login("admin", PASSWORD).status, 303);
    let invites = root.get("/review/invites").body;
    let cards = invites.split("href=\"/review/invites/cards?batch=").nth(1).unwrap();
    let batch = cards.split('"').next().unwrap();
    let devices = root.get("/review/devices").body;
    let device = devices.split("data-device=\"").nth(1).unwrap().split('"').next().unwrap();
    let console = vec![
        page("console-elections", "/review/elections".into()),
        page("console-invites", "/review/invites".into()),
        page("console-cards", format!("/review/invites/cards?batch={batch}")),
        page("console-devices", "/review/devices".into()),
        page("console-device", format!("/review/devices/{device}")),
        page("console-users", "/review/users".into()),
        page("console-dashboard", "/review/dashboard".into()),
    ];
    let config = json!({
        "public": public,
        "review": { "username": "aigerim", "password": PASSWORD, "pages": review },
        "console": { "username": "admin", "password": PASSWORD, "pages": console },
    });
    browser::run_script("pages", &demo.url, &[&config.to_string()]);
}

#[test]
fn a_reader_checks_a_demo_photo_in_the_browser_and_a_changed_byte_is_refused() {
    let demo = Demo::start(6, 1);
    let list = demo.json(&format!("/api/v1/elections/{ELECTION}/precincts"));
    let accepted = precinct(list.as_array().unwrap(), "with an accepted photo", |p| {
        p["accepted"].as_u64().unwrap_or(0) > 0
    });
    let station = format!("/elections/{ELECTION}/precincts/{}", accepted["id"].as_str().unwrap());
    browser::run_script("check", &demo.url, &[&station]);
}

/// The bytes a reader's browser receives for `path` with this `Accept-Encoding` (none:
/// identity), and the answer's `Content-Encoding`.
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

/// Every `attr="…"` value in `html` that starts with `prefix`.
fn links<'a>(html: &'a str, attr: &str, prefix: &str) -> Vec<&'a str> {
    let start = format!("{attr}=\"{prefix}");
    html.match_indices(&start)
        .map(|(i, _)| {
            let from = i + attr.len() + 2;
            &html[from..from + html[from..].find('"').unwrap()]
        })
        .collect()
}

/// The figures of the closing note: a station page of the demo as sent (identity, gzip,
/// brotli) with what it loads, and a phone camera's protocol photo against its medium rendition.
#[test]
fn page_weights_of_a_station_page_and_its_photo_on_the_demo() {
    // Photos as a phone camera takes them: 3000×4000 pixels.
    let demo = Demo::start_with(2, 1, &["--photo-width", "3000"]);
    let list = demo.json(&format!("/api/v1/elections/{ELECTION}/precincts"));
    let station = precinct(list.as_array().unwrap(), "with a photo", |p| {
        p["captures"].as_u64().unwrap_or(0) > 0
    });
    let path = format!("/elections/{ELECTION}/precincts/{}", station["id"].as_str().unwrap());
    let (identity, none) = sent(&demo.url, &path, None);
    let (gzip, gz) = sent(&demo.url, &path, Some("gzip"));
    let (brotli, br) = sent(&demo.url, &path, Some("br, gzip"));
    assert_eq!((none.as_str(), gz.as_str(), br.as_str()), ("", "gzip", "br"));
    assert!(brotli.len() < gzip.len() && gzip.len() < identity.len(), "compressed is smaller");
    println!(
        "station page (HTML) as sent: identity {} B, gzip {} B ({:.0} %), brotli {} B ({:.0} %)",
        identity.len(),
        gzip.len(),
        100.0 * gzip.len() as f64 / identity.len() as f64,
        brotli.len(),
        100.0 * brotli.len() as f64 / identity.len() as f64
    );
    // What the page loads besides: its style sheets (compressed) and thumbnails.
    let html = String::from_utf8(identity.clone()).unwrap();
    let (mut css, mut css_identity) = (0, 0);
    for href in links(&html, "href", "/static/") {
        css += sent(&demo.url, href, Some("br, gzip")).0.len();
        css_identity += sent(&demo.url, href, None).0.len();
    }
    let thumbs: Vec<&str> = links(&html, "src", "/photos/");
    assert!(!thumbs.is_empty(), "the station's photos");
    let thumb_bytes: usize = thumbs.iter().map(|t| sent(&demo.url, t, None).0.len()).sum();
    println!(
        "with what it loads: style sheets {css} B (identity {css_identity} B), {} thumbnails \
         {thumb_bytes} B; total {} B as sent (identity {} B)",
        thumbs.len(),
        brotli.len() + css + thumb_bytes,
        identity.len() + css_identity + thumb_bytes
    );
    // The medium rendition a reader opens from a thumbnail, against the photo itself.
    let medium_link = links(&html, "href", "/photos/")[0];
    assert!(medium_link.ends_with("/medium"), "{medium_link}");
    let original = sent(&demo.url, medium_link.trim_end_matches("/medium"), None).0;
    let medium = sent(&demo.url, medium_link, None).0;
    let img = image::load_from_memory(&original).unwrap();
    assert_eq!((img.width(), img.height()), (3000, 4000), "a phone camera's photo");
    let img = image::load_from_memory(&medium).unwrap();
    assert_eq!(img.width().max(img.height()), 1280, "1280 px on the long side");
    assert!(medium.len() < original.len(), "the medium rendition is lighter");
    println!(
        "photo 3000×4000: original {} B, medium (1280 px) {} B ({:.0} %), thumbnail {} B",
        original.len(),
        medium.len(),
        100.0 * medium.len() as f64 / original.len() as f64,
        sent(&demo.url, thumbs[0], None).0.len()
    );
}
