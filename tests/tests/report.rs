//! The PDF reports of evidence packages (`docs/evidence-package.md` section 7), checked with
//! real tools as a reader's machine would open them: Debian's qpdf (`qpdf --check`) and
//! poppler-utils (`pdffonts`, `pdftotext`, `pdfdetach`, `pdftoppm`), and ZBar for the QR code.
//! The rendered pages are kept in `artifacts/screenshots/report/` to be looked at.
//!
//! A station's report is PDF/A with its fonts embedded; its text gives back the station, every
//! differing figure and Kazakh letters intact; it carries every file of the package, byte for
//! byte; its QR code leads to the station's page; and changing one byte of it is found and named
//! by both verifiers. The summary PDF of the Almaty-shaped set shows 225 stations, 69 669
//! observed and 50 366 official on its first page.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use hattama_tests::browser::repo_root;
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

/// Runs a tool of poppler-utils, qpdf or ZBar; its exit status and output.
fn run(tool: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool} (scripts/test installs it): {e}"));
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A number as the reports write it: groups of three digits split by a narrow no-break space,
/// a minus sign U+2212 and a plus for positive differences.
fn grouped(n: i64, sign: bool) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202F}');
        }
        out.push(c);
    }
    match n {
        n if n < 0 => format!("\u{2212}{out}"),
        n if n > 0 && sign => format!("+{out}"),
        _ => out,
    }
}

/// `s` with its runs of white space made one space, as [`text_of`] gives the text back (the
/// narrow no-break space between digit groups is white space too).
fn norm(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The text of pages `first..=last` (all when `None`), its runs of white space made one space.
fn text_of(pdf: &Path, pages: Option<(usize, usize)>) -> String {
    let mut args = Vec::new();
    let range;
    if let Some((first, last)) = pages {
        range = [first.to_string(), last.to_string()];
        args.extend(["-f", range[0].as_str(), "-l", range[1].as_str()]);
    }
    let path = pdf.to_str().unwrap();
    args.extend([path, "-"]);
    let (ok, text) = run("pdftotext", &args);
    assert!(ok, "pdftotext: {text}");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// How many pages `pdfinfo` counts.
fn pages_of(pdf: &Path) -> usize {
    let (ok, info) = run("pdfinfo", &[pdf.to_str().unwrap()]);
    assert!(ok, "pdfinfo: {info}");
    let line = info.lines().find(|l| l.starts_with("Pages:")).unwrap();
    line["Pages:".len()..].trim().parse().unwrap()
}

/// Renders page `page` into `artifacts/screenshots/report/<name>.png` (`scale` pixels wide);
/// the PNG's path.
fn render(pdf: &Path, page: usize, name: &str, width: u32) -> PathBuf {
    let dir = repo_root().join("artifacts/screenshots/report");
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = dir.join(name);
    let page = page.to_string();
    let width = width.to_string();
    let (ok, out) = run(
        "pdftoppm",
        &[
            "-png",
            "-singlefile",
            "-f",
            &page,
            "-l",
            &page,
            "-scale-to-x",
            &width,
            "-scale-to-y",
            "-1",
            pdf.to_str().unwrap(),
            prefix.to_str().unwrap(),
        ],
    );
    assert!(ok, "pdftoppm: {out}");
    prefix.with_extension("png")
}

/// The PDF checks every report must pass: `qpdf --check` clean and every font embedded.
fn check_pdf(pdf: &Path) {
    let (ok, out) = run("qpdf", &["--check", pdf.to_str().unwrap()]);
    assert!(ok, "qpdf --check: {out}");
    assert!(out.contains("No syntax or stream encoding errors found"), "{out}");
    assert!(!out.to_lowercase().contains("warning"), "qpdf warns: {out}");
    let (ok, out) = run("pdffonts", &[pdf.to_str().unwrap()]);
    assert!(ok, "pdffonts: {out}");
    // name, type, encoding, emb, sub, uni, object, ID: the columns from the right.
    let fonts: Vec<Vec<&str>> =
        out.lines().skip(2).map(|l| l.split_whitespace().collect()).collect();
    assert!(!fonts.is_empty(), "no fonts: {out}");
    for f in &fonts {
        let n = f.len();
        assert!(n >= 7 && f[n - 5] == "yes", "a font that is not embedded: {f:?}\n{out}");
        assert!(f[n - 3] == "yes", "a font without its Unicode map: {f:?}\n{out}");
        assert!(f[0].contains("DejaVuSans"), "not DejaVu: {f:?}");
    }
    // PDF/A-3 says so in its metadata (pdfinfo reads the XMP).
    let (ok, meta) = run("pdfinfo", &["-meta", pdf.to_str().unwrap()]);
    assert!(ok, "pdfinfo -meta: {meta}");
    assert!(meta.contains("<pdfaid:part>3</pdfaid:part>"), "not PDF/A-3: {meta}");
}

#[test]
fn a_station_report_reads_back_carries_the_package_and_leads_to_the_station() {
    let demo = Demo::start(8, 3);
    let cmp = demo.json(&format!("/api/v1/elections/{ELECTION}/comparison"));
    let precinct = cmp["comparison"]["differences"][0]["precinct"].as_str().unwrap().to_owned();
    let url = format!(
        "{}/api/v1/elections/{ELECTION}/precincts/{precinct}/evidence-package.zip",
        demo.url
    );
    let zip = get(&url).bytes().unwrap().to_vec();
    let names: Vec<String> = entries(&zip).into_iter().map(|(n, _)| n).collect();
    let files: BTreeMap<String, Vec<u8>> = entries(&zip).into_iter().collect();
    let manifest: Value = serde_json::from_slice(&files["package.json"]).unwrap();
    let number = manifest["station"]["number"].as_u64().unwrap();
    // Where they are: the statement signed with the rest, the report after package.sig.
    let at =
        |n: &str| names.iter().position(|x| x == n).unwrap_or_else(|| panic!("{n}: {names:?}"));
    assert!(at("station/statement.txt") < at("package.json"));
    assert_eq!(at("report.pdf"), at("package.sig") + 1);
    assert_eq!(at("SHA256SUMS"), names.len() - 1);

    let dir = tempfile::tempdir().unwrap();
    let pdf = dir.path().join("report.pdf");
    std::fs::write(&pdf, &files["report.pdf"]).unwrap();
    check_pdf(&pdf);

    // Its text: the station, every differing figure, the statement, Kazakh letters intact.
    let differences: Value = serde_json::from_slice(&files["station/differences.json"]).unwrap();
    let lines = differences["lines"].as_array().unwrap();
    assert!(!lines.is_empty(), "the demo's station differs: {differences}");
    let first = text_of(&pdf, Some((1, 1)));
    assert!(first.contains(&format!("№ {number} сайлау учаскесі")), "{first}");
    assert!(first.contains(&format!("Избирательный участок № {number}")), "{first}");
    for l in lines {
        for (key, sign) in [("observed", false), ("official", false), ("difference", true)] {
            let figure = norm(&grouped(l[key].as_i64().unwrap(), sign));
            assert!(first.contains(&figure), "{key} {figure:?} of line {} in: {first}", l["line"]);
        }
    }
    let size = norm(&grouped(differences["size"].as_i64().unwrap(), false));
    assert!(first.contains(&format!("айырмалардың қосындысы {size}")), "{first}");
    assert!(first.contains(&format!("сумма расхождений {size}")), "{first}");
    for letter in ["Ә", "Ғ", "Қ", "Ң", "Ө", "Ұ", "Ү", "Һ", "І"] {
        let lower = letter.to_lowercase();
        assert!(first.contains(letter) && first.contains(&lower), "{letter} lost: {first}");
    }
    let all = text_of(&pdf, None);
    let statement = String::from_utf8(files["station/statement.txt"].clone()).unwrap();
    for fact in statement.lines().filter(|l| l.starts_with(char::is_numeric)) {
        let fact = fact.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(all.contains(&fact), "the statement's {fact:?} is not in the PDF:\n{all}");
    }
    assert!(statement.contains("ФАКТІЛЕР БАЯНЫ") && statement.contains("ИЗЛОЖЕНИЕ ФАКТОВ"));
    assert!(statement.contains("Дәлел: station/differences.json"), "{statement}");
    // Every page: its number and the package's hash.
    let manifest_sha = hattama_core::evidence::Sha256Hash::of(&files["package.json"]).to_hex();
    let pages = pages_of(&pdf);
    assert!(pages >= 5, "{pages} pages");
    for page in 1..=pages {
        let text = text_of(&pdf, Some((page, page)));
        assert!(text.contains(&format!("Страница {page} из {pages}")), "page {page}: {text}");
        assert!(text.contains(&format!("package.json SHA-256: {manifest_sha}")), "page {page}");
    }

    // The files it carries are the package's, byte for byte.
    let (ok, list) = run("pdfdetach", &["-list", pdf.to_str().unwrap()]);
    assert!(ok, "pdfdetach -list: {list}");
    let carried: Vec<&str> =
        list.lines().skip(1).map(|l| l.split_once(": ").unwrap().1.trim()).collect();
    let expected: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| *n != "report.pdf" && *n != "SHA256SUMS")
        .collect();
    let mut sorted = expected.clone();
    sorted.sort();
    let mut carried_sorted = carried.clone();
    carried_sorted.sort();
    assert_eq!(carried_sorted, sorted, "{list}");
    let out = dir.path().join("detached");
    std::fs::create_dir(&out).unwrap();
    // pdfdetach saves each under its name's last component, so one at a time.
    for (n, name) in carried.iter().enumerate() {
        let file = out.join(format!("{n}"));
        let n = (n + 1).to_string();
        let (ok, msg) =
            run("pdfdetach", &["-save", &n, "-o", file.to_str().unwrap(), pdf.to_str().unwrap()]);
        assert!(ok, "pdfdetach -save {n}: {msg}");
        assert!(std::fs::read(&file).unwrap() == files[*name], "{name} differs from the zip's");
    }

    // The pages to look at: the first, a photo, and the first at a phone's width.
    render(&pdf, 1, "station-first-page", 1240);
    let photo_page = (1..=pages)
        .find(|p| text_of(&pdf, Some((*p, *p))).contains("/photo."))
        .expect("a page with a photo");
    render(&pdf, photo_page, "station-photo-page", 1240);
    render(&pdf, 1, "station-first-page-phone", 390);

    // The QR code of the first page leads to the station's permanent page.
    let png = render(&pdf, 1, "station-first-page-qr", 1240);
    let zbar = Command::new("zbarimg")
        .args(["--quiet", "-Sdisable", "-Sqrcode.enable", png.to_str().unwrap()])
        .output()
        .expect("run zbarimg (scripts/test installs Debian's zbar-tools)");
    assert!(zbar.status.success(), "zbarimg: {zbar:?}");
    let expected = format!("QR-Code:{}/elections/{ELECTION}/precincts/{precinct}", demo.url);
    assert_eq!(String::from_utf8_lossy(&zbar.stdout).trim(), expected);
    assert_eq!(get(&expected["QR-Code:".len()..]).status(), 200);

    // One byte of the PDF changed: both verifiers name it.
    let receipt_key = demo.json("/api/v1/receipts/key")["server_key"].as_str().unwrap().to_owned();
    let (code, out) = verify(&zip, dir.path(), &receipt_key);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok    report.pdf:"), "{out}");
    let (code, out) = python_verify(&zip, dir.path(), &receipt_key);
    assert_eq!(code, 0, "{out}");
    let cases = [
        (
            "one byte of the PDF",
            tampered(&zip, "report.pdf", |b| {
                let i = b.len() / 2;
                b[i] ^= 0x01;
            }),
            vec!["FAIL  SHA256SUMS: line", "(report.pdf): the SHA-256 differs"],
        ),
        (
            "an attachment of the PDF, with SHA256SUMS made to match",
            retampered_report(&zip, &files["report.pdf"], &files["package.json"]),
            vec!["FAIL  report.pdf: the package.json it carries is not the package's package.json"],
        ),
    ];
    for (what, bad, expected) in cases {
        let (code, out) = verify(&bad, dir.path(), &receipt_key);
        assert_eq!(code, 11, "{what} was not found:\n{out}");
        let (py_code, py_out) = python_verify(&bad, dir.path(), &receipt_key);
        assert_eq!(py_code, 1, "{what} was not found by the Python verifier:\n{py_out}");
        for needle in expected {
            assert!(out.contains(needle), "{what}: {needle:?} in\n{out}");
            assert!(py_out.contains(needle), "Python, {what}: {needle:?} in\n{py_out}");
        }
    }
}

/// The package with a report whose attached `package.json` has one byte changed (inside an
/// uncompressed copy of the PDF's attachment would be work; instead the PDF is written again
/// with the changed attachment by replacing the attachment's bytes where the PDF holds them
/// uncompressed), and `SHA256SUMS` fixed to match, so that only the attachments betray it.
fn retampered_report(zip: &[u8], pdf: &[u8], manifest: &[u8]) -> Vec<u8> {
    // krilla stores an attachment deflated when that is smaller; JSON is, so the attachment
    // is found by decoding every stream with qpdf and re-encoding is left to it.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.pdf");
    let plain = dir.path().join("plain.pdf");
    std::fs::write(&input, pdf).unwrap();
    let (ok, out) = run(
        "qpdf",
        &[
            "--stream-data=uncompress",
            "--object-streams=disable",
            input.to_str().unwrap(),
            plain.to_str().unwrap(),
        ],
    );
    assert!(ok, "qpdf: {out}");
    let mut bytes = std::fs::read(&plain).unwrap();
    let at = bytes
        .windows(manifest.len())
        .position(|w| w == manifest)
        .expect("package.json uncompressed inside the PDF");
    // Same length, one figure changed: "format" → "furmat".
    let i = at + manifest.windows(6).position(|w| w == b"format").unwrap() + 1;
    bytes[i] = b'u';
    let changed = bytes;
    let mut sums = None;
    let out = tampered(zip, "report.pdf", |b| {
        b.clone_from(&changed);
    });
    for (name, b) in entries(&out) {
        if name == "SHA256SUMS" {
            let text = String::from_utf8(b).unwrap();
            let fixed: String = text
                .lines()
                .map(|l| {
                    if l.ends_with("  report.pdf") {
                        let hash = hattama_core::evidence::Sha256Hash::of(&changed).to_hex();
                        format!("{hash}  report.pdf\n")
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect();
            sums = Some(fixed);
        }
    }
    let sums = sums.unwrap();
    tampered(&out, "SHA256SUMS", |b| *b = sums.clone().into_bytes())
}

#[test]
fn the_almaty_summary_pdf_shows_the_totals_on_its_first_page() {
    let dir = tempfile::tempdir().unwrap();
    almaty::seed(dir.path());
    let server = TestServer::start_on(dir.path(), "127.0.0.1:0");
    let r = get(&format!(
        "{}/api/v1/elections/{}/evidence-package.zip?differing=true",
        server.url,
        almaty::ELECTION
    ));
    assert_eq!(r.status(), 200);
    let zip = r.bytes().unwrap().to_vec();
    let files: BTreeMap<String, Vec<u8>> = entries(&zip).into_iter().collect();
    let work = tempfile::tempdir().unwrap();
    let pdf = work.path().join("summary.pdf");
    std::fs::write(&pdf, files.get("summary.pdf").expect("the set has a summary PDF")).unwrap();
    check_pdf(&pdf);
    let first = text_of(&pdf, Some((1, 1)));
    for needle in [
        format!("{OBSERVED} сайлау учаскесінің дәлелдер пакеті"),
        format!("Пакет доказательств {OBSERVED} избирательных участков"),
        format!("сайлаудағы {STATIONS} учаскенің {OBSERVED}"),
        format!("{OBSERVED} из {STATIONS} на выборах"),
        grouped(OBSERVED_TOTAL as i64, false),
        grouped(OFFICIAL_TOTAL as i64, false),
    ] {
        let needle = norm(&needle);
        assert!(first.contains(&needle), "{needle:?} on the first page:\n{first}");
    }
    // The row of line 7.1: observed over the set, …, official over all 554 stations.
    let row = first.split(" 7.1 ").nth(1).expect("line 7.1 on the first page");
    let joined = row.split(" 7.2 ").next().unwrap().to_owned();
    assert!(
        joined.contains(&norm(&grouped(OBSERVED_TOTAL as i64, false)))
            && joined.contains(&norm(&grouped(OFFICIAL_TOTAL as i64, false))),
        "{joined}"
    );
    // Every page numbered, with the summary's hash.
    let sha = hattama_core::evidence::Sha256Hash::of(&files["summary.json"]).to_hex();
    let pages = pages_of(&pdf);
    for page in [1, pages] {
        let text = text_of(&pdf, Some((page, page)));
        assert!(text.contains(&format!("Страница {page} из {pages}")), "{text}");
        assert!(text.contains(&format!("summary.json SHA-256: {sha}")), "{text}");
    }
    // The table of differing stations: the largest first.
    let summary: Value = serde_json::from_slice(&files["summary.json"]).unwrap();
    let top = &summary["differing"][0];
    let all = text_of(&pdf, None);
    let top_row = format!("№ {} — {}", top["number"], top["region"].as_str().unwrap());
    let second = &summary["differing"][1];
    let second_row = format!("№ {} — {}", second["number"], second["region"].as_str().unwrap());
    let (a, b) = (all.find(&top_row).unwrap(), all.find(&second_row).unwrap());
    assert!(a < b, "the largest difference first");
    render(&pdf, 1, "summary-first-page", 1240);
    render(&pdf, 1, "summary-first-page-phone", 390);

    // The same data, the same bytes (the summary PDF included).
    let again = get(&format!(
        "{}/api/v1/elections/{}/evidence-package.zip?differing=true",
        server.url,
        almaty::ELECTION
    ))
    .bytes()
    .unwrap()
    .to_vec();
    assert!(again == zip, "a second set differs");
}
