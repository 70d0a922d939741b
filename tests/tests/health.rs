//! [Operations] Health and metrics: `/metrics` after a scripted session, parsed by the reference
//! Prometheus client's parser (PyPI `prometheus_client`, in the venv `scripts/test` makes), gives
//! exactly the counts of what happened; `/readyz` turns unready when the log integrator stops
//! (at a pause point of the real binary). `/readyz` below the free-space floor and metrics on
//! their own address are tested in `tests/api.rs`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hattama_tests::proxy::{FaultConfig, FaultProxy};
use hattama_tests::raw::RawDevice;
use hattama_tests::server::{TestServer, admin, import_election, readyz};
use hattama_tests::{Hattama, fixtures, textured_jpeg};
use serde_json::Value;

const TOKEN: &str = "metrics-token-of-the-test-0123456789";

/// One sample of the exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// `GET /metrics` with the token, parsed by `prometheus_client`.
fn scrape(server: &TestServer) -> Vec<Sample> {
    let text = reqwest::blocking::Client::new()
        .get(format!("{}/metrics", server.url))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(text.status(), 200);
    assert!(
        text.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"),
        "{:?}",
        text.headers()
    );
    let text = text.text().unwrap();
    let python = hattama_tests::browser::repo_root().join("build/metrics-venv/bin/python3");
    assert!(python.exists(), "{} is missing: scripts/test installs it", python.display());
    let mut child = Command::new(python)
        .arg(hattama_tests::browser::repo_root().join("tests/metrics/parse.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "prometheus_client refused the exposition:\n{text}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            Sample {
                name: v["name"].as_str().unwrap().to_owned(),
                labels: serde_json::from_value(v["labels"].clone()).unwrap(),
                value: v["value"].as_f64().unwrap(),
            }
        })
        .collect()
}

/// The value of the sample `name` with exactly these labels (0 if absent, as Prometheus reads
/// a counter never incremented).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: BTreeMap<String, String> =
        labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    samples.iter().find(|s| s.name == name && s.labels == wanted).map_or(0.0, |s| s.value)
}

/// Runs `hattama sync` until nothing remains (a sync may run out of retries on a bad network).
fn sync_to_completion(cli: &Hattama) {
    for _ in 0..20 {
        let run = cli.run(&["sync", "--json"]);
        if run.code == Some(0) && run.json()["remaining"] == 0 {
            return;
        }
    }
    panic!("the sync did not complete");
}

#[test]
fn metrics_after_a_scripted_session_give_exactly_what_happened() {
    let server = TestServer::start_with(
        &fixtures::election("e2e", 3),
        &[("HATTAMA__METRICS__TOKEN", TOKEN)],
    );
    // Without the token, nothing.
    let http = reqwest::blocking::Client::new();
    let anonymous = http.get(format!("{}/metrics", server.url)).send().unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = http.get(format!("{}/metrics", server.url)).bearer_auth("x".repeat(36));
    assert_eq!(wrong.send().unwrap().status(), 401);

    // An observer syncs through a network that cuts connections (seeded).
    let seed = 1515;
    println!("fault seed {seed}");
    let faults =
        FaultConfig { cut_probability: 0.9, max_cut_after: 96 * 1024, ..FaultConfig::harsh(seed) };
    let proxy = FaultProxy::start(server.addr, faults).unwrap();
    let codes = server.invite(&["p0001", "p0002"], 2);
    let store = tempfile::tempdir().unwrap();
    let cli = Hattama::new(store.path());
    let enrolled = cli.run(&["enroll", &proxy.url(), &codes[0], "--json"]);
    assert_eq!(enrolled.code, Some(0), "{enrolled:?}");
    let photos = tempfile::tempdir().unwrap();
    let n = 10;
    for i in 0..n {
        // Small photos (sent whole with their creation) and larger ones (upload sessions).
        let (w, h) = if i % 3 == 0 { (96, 64) } else { (900, 700) };
        let p = photos.path().join(format!("{i}.jpg"));
        std::fs::write(&p, textured_jpeg(w, h, i as u32 + 40, 90)).unwrap();
        let run = cli.capture(&p, ["p0001", "p0002"][i % 2]);
        assert_eq!(run.code, Some(0), "{run:?}");
    }
    sync_to_completion(&cli);
    println!("the proxy cut {} of {} connections", proxy.cuts(), proxy.connections());
    assert!(proxy.cuts() > 0, "the network was not faulty");

    // Uploads the server refuses, sent directly: a forged signature (twice), a station the
    // device is not assigned to, a length that is not the signed one.
    let mut device = RawDevice::new(91);
    assert_eq!(device.enroll(&server.url, &codes[1]).status, 200);
    let photo = textured_jpeg(120, 90, 9, 90);
    let (bytes, info) = {
        let clean = hattama_core::media::strip(&photo, &Default::default()).unwrap();
        let info = clean.info();
        (clean.bytes, info)
    };
    for _ in 0..2 {
        let signed = device.sign("p0001", &info);
        let forged =
            device.create(&server.url, &signed.canonical, &"ab".repeat(64), bytes.len() as u64);
        assert_eq!(forged.code(), "bad_signature", "{forged:?}");
    }
    let signed = device.sign("p0003", &info);
    let sig = hex::encode(signed.signature);
    let elsewhere = device.create(&server.url, &signed.canonical, &sig, bytes.len() as u64);
    assert_eq!(elsewhere.code(), "precinct_not_assigned", "{elsewhere:?}");
    let signed = device.sign("p0001", &info);
    let sig = hex::encode(signed.signature);
    let longer = device.create(&server.url, &signed.canonical, &sig, bytes.len() as u64 + 1);
    assert_eq!(longer.code(), "length_mismatch", "{longer:?}");

    let stored = admin(&server.data_dir, &["capture", "list", "--json"]).ok_json();
    let stored = stored.as_array().unwrap();
    assert_eq!(stored.len(), n);
    let photo_bytes: u64 = stored.iter().map(|c| c["photo_bytes"].as_u64().unwrap()).sum();

    // The log publishes the last captures within moments.
    let started = Instant::now();
    let samples = loop {
        let samples = scrape(&server);
        if value(&samples, "hattama_log_size", &[]) == n as f64 {
            break samples;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the log did not catch up");
        std::thread::sleep(Duration::from_millis(100));
    };
    let count = |name: &str| value(&samples, name, &[]);
    assert_eq!(count("hattama_uploads_begun_total"), n as f64);
    assert_eq!(count("hattama_uploads_completed_total"), n as f64);
    assert_eq!(count("hattama_receipts_signed_total"), n as f64);
    assert_eq!(count("hattama_upload_bytes_total"), photo_bytes as f64);
    assert_eq!(count("hattama_captures_stored"), n as f64);
    assert_eq!(count("hattama_review_queue_depth"), n as f64, "nobody reviewed anything");
    assert_eq!(count("hattama_log_integration_lag_seconds"), 0.0);
    assert!(count("hattama_disk_free_bytes") > 0.0);
    let refused: BTreeMap<&str, f64> = samples
        .iter()
        .filter(|s| s.name == "hattama_uploads_refused_total")
        .map(|s| (s.labels["code"].as_str(), s.value))
        .collect();
    let expected = BTreeMap::from([
        ("bad_signature", 2.0),
        ("length_mismatch", 1.0),
        ("precinct_not_assigned", 1.0),
    ]);
    assert_eq!(refused, expected);

    // Latency per route pattern: at least one creation per capture and refusal; labels are
    // patterns and status codes, never a path with an id in it.
    let creations: f64 = samples
        .iter()
        .filter(|s| {
            s.name == "hattama_http_request_duration_seconds_count"
                && s.labels["route"] == "/files/"
                && s.labels["method"] == "POST"
        })
        .map(|s| s.value)
        .sum();
    assert!(creations >= (n + 4) as f64, "{creations} creations timed");
    for s in samples.iter().filter(|s| s.name.starts_with("hattama_http_request_duration")) {
        let route = &s.labels["route"];
        assert!(route == "unmatched" || route.starts_with('/'), "{route}");
        assert!(!route.chars().any(|c| c.is_ascii_hexdigit() && route.len() > 60), "{route}");
    }
    let routes: std::collections::BTreeSet<&str> = samples
        .iter()
        .filter(|s| s.name == "hattama_http_request_duration_seconds_count")
        .map(|s| s.labels["route"].as_str())
        .collect();
    assert!(routes.contains("/files/") && routes.contains("/api/v1/enroll"), "{routes:?}");
}

#[test]
fn readyz_is_unready_while_the_log_integrator_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    import_election(dir.path(), &fixtures::election("e2e", 2));
    let (server, lines) = TestServer::start_paused_with(
        dir.path(),
        "127.0.0.1:0",
        "log:after-commit",
        &[("HATTAMA__READINESS__MAX_LOG_LAG_SECS", "1")],
    );
    let (status, body) = readyz(&server);
    assert_eq!((status, &body), (200, &serde_json::json!({ "status": "ready" })));

    // One capture stored: its log batch commits, and the integrator stops there.
    let code = &server.invite(&["p0001"], 1)[0];
    let mut device = RawDevice::new(92);
    assert_eq!(device.enroll(&server.url, code).status, 200);
    let (bytes, info) = {
        let clean =
            hattama_core::media::strip(&textured_jpeg(400, 300, 5, 90), &Default::default())
                .unwrap();
        let info = clean.info();
        (clean.bytes, info)
    };
    let signed = device.sign("p0001", &info);
    let sig = hex::encode(signed.signature);
    let created = device.create(&server.url, &signed.canonical, &sig, bytes.len() as u64);
    assert_eq!(created.status, 201, "{created:?}");
    let patched = device.patch(&server.url, &signed.hash().to_hex(), 0, &bytes);
    assert_eq!(patched.status, 204, "{patched:?}");
    let paused = lines.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(paused.contains("hattama-paused log:after-commit"), "{paused}");

    let started = Instant::now();
    let body = loop {
        let (status, body) = readyz(&server);
        if status == 503 {
            break body;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "still ready: {body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(body["status"], "unready");
    let failing: Vec<&str> =
        body["failing"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(failing.contains(&"log_lag"), "{body}");
    assert!(!failing.contains(&"storage") && !failing.contains(&"disk"), "{body}");
    // The integrator's own heartbeat stops too (after at most 5 s).
    let started = Instant::now();
    loop {
        let (_, body) = readyz(&server);
        if body["failing"].as_array().unwrap().iter().any(|v| v == "log_integrator") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{body}");
        std::thread::sleep(Duration::from_millis(250));
    }
}
