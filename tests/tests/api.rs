//! API tests that need no process to die, each against the real server app run in the test's
//! own process (`hattama_tests::app::spawn_app`: port 0, a fresh temporary data directory, the
//! election imported, on the storage of the run), as the zero2prod book's `spawn_app` does:
//! no server process to start and no admin command to import the election, per test. Tests that
//! kill the server, pause it, change its umask, load its TLS files or read what it prints run
//! the real binary in the other test binaries (`hattama_tests::server::TestServer`).
//!
//! Measured on the 2-core development machine (4 interleaved rounds, `cargo test`'s harness):
//! the 14 tests moved here ran in a median 4.0 s as one process of this binary, against 7.1 s as
//! four processes of their old binaries starting the server binary per test; one process per
//! test (as nextest runs them), both took about 8 s: the saving is in running the tests side by
//! side in one process, not in each test's start-up.
//!
//! Here: the web foundation over real HTTP (HTML error pages on browser routes and JSON on the
//! API, the security headers, content-hashed static files cached forever, the language
//! switcher); health (`/readyz` below the free-space floor, metrics on their own address); rate
//! limits (a client above its limit gets `429 rate_limited` with `Retry-After` and a JSON body
//! while other clients are served; per device for new uploads, whose client, the real core,
//! waits as told; clients told apart by the address a trusted proxy puts in `X-Forwarded-For`,
//! since the test's requests all come from loopback); and findings of the attack on the server
//! that need only HTTP (login throttling behind a proxy, chain breaks flagged, a huge page
//! number, a creation refused before its body, the captures per precinct of a device).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use hattama_tests::app::{TestApp, spawn_app, spawn_app_with};
use hattama_tests::raw::RawDevice;
use hattama_tests::review::{Browser, PASSWORD, add_user, election};
use hattama_tests::server::readyz;
use hattama_tests::{Hattama, fixtures, textured_jpeg};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::redirect::Policy;
use serde_json::Value;

// The helper itself.

/// A stopped app is gone: its listener is closed, no file of its data directory is open in
/// this process any more (its database, its lock: the workers let go of the state before
/// `Application::run` returns), and it let go of its data directory's lock, which `run`
/// releases only after the app's integrator thread has been joined.
#[test]
fn a_stopped_app_closes_its_port_and_lets_go_of_its_data_directory() {
    let app = spawn_app(1);
    let url = app.url.clone();
    assert_eq!(reqwest::blocking::get(format!("{url}/healthz")).unwrap().status(), 200);
    assert_eq!(reqwest::blocking::get(format!("{url}/api/v1/elections")).unwrap().status(), 200);
    let dir = app.stop();
    assert!(reqwest::blocking::get(format!("{url}/healthz")).is_err(), "still listening");
    let data_dir = dir.path().canonicalize().unwrap();
    let open: Vec<std::path::PathBuf> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.unwrap().path()).ok())
        .filter(|file| file.starts_with(&data_dir))
        .collect();
    assert!(open.is_empty(), "files of the stopped app still open: {open:?}");
    let lock = std::fs::File::open(dir.path().join("server.lock")).unwrap();
    assert!(lock.try_lock().is_ok(), "the data directory is still locked");
}

// The web foundation over real HTTP (in a real browser: tests/web.rs).

fn client() -> Client {
    Client::builder().redirect(Policy::none()).build().unwrap()
}

fn header(r: &Response, name: &str) -> String {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

#[test]
fn browser_routes_answer_html_error_pages_with_security_headers() {
    let server = spawn_app(2);
    let http = client();
    let r = http.get(format!("{}/no/such/page", server.url)).send().unwrap();
    assert_eq!(r.status(), 404);
    assert!(header(&r, "content-type").starts_with("text/html"));
    let csp = header(&r, "content-security-policy");
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(part), "CSP {csp:?} lacks {part}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    assert_eq!(header(&r, "x-frame-options"), "DENY");
    assert_eq!(header(&r, "referrer-policy"), "same-origin");
    let body = r.text().unwrap();
    assert!(body.contains("<html lang=\"kk\">"), "Kazakh by default");
    assert!(!body.contains("<script>") && !body.contains("style="), "no inline script or style");

    // The API keeps its JSON errors.
    let r = http.get(format!("{}/api/v1/nothing", server.url)).send().unwrap();
    assert_eq!(r.status(), 404);
    assert!(header(&r, "content-type").starts_with("application/json"));
    assert!(header(&r, "content-security-policy").is_empty());
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    let r = http.get(format!("{}/files/zz", server.url)).send().unwrap();
    assert!(header(&r, "content-type").starts_with("application/json"), "tus stays JSON");
}

#[test]
fn static_files_have_hashed_urls_and_are_immutable() {
    let server = spawn_app(1);
    let http = client();
    let page = http.get(format!("{}/x", server.url)).send().unwrap().text().unwrap();
    let css = page
        .split('"')
        .find(|s| s.starts_with("/static/app.") && s.ends_with(".css"))
        .expect("style sheet link");
    let r = http.get(format!("{}{css}", server.url)).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "cache-control"), "public, max-age=31536000, immutable");
    assert!(header(&r, "content-type").starts_with("text/css"));
    // Another hash is another file: not found.
    let r = http.get(format!("{}/static/app.0000000000000000.css", server.url)).send().unwrap();
    assert_eq!(r.status(), 404);
}

#[test]
fn language_is_the_cookie_then_accept_language_then_kazakh() {
    let server = spawn_app(1);
    let http = client();
    let lang_of = |cookie: Option<&str>, accept: Option<&str>| {
        let mut req = http.get(format!("{}/x", server.url));
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        if let Some(a) = accept {
            req = req.header("Accept-Language", a);
        }
        let body = req.send().unwrap().text().unwrap();
        let start = body.find("<html lang=\"").unwrap() + 12;
        body[start..start + 2].to_owned()
    };
    assert_eq!(lang_of(None, None), "kk");
    assert_eq!(lang_of(None, Some("de-DE, ru;q=0.8, en;q=0.5")), "ru");
    assert_eq!(lang_of(None, Some("en-GB")), "en");
    assert_eq!(lang_of(Some("lang=en"), Some("ru")), "en");
    assert_eq!(lang_of(Some("lang=xx"), Some("ru")), "ru");

    let r = http.get(format!("{}/lang?to=ru&next=%2Freview%3Fa%3D1", server.url)).send().unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(header(&r, "location"), "/review?a=1");
    let cookie = header(&r, "set-cookie");
    assert!(cookie.starts_with("lang=ru;") && cookie.contains("Path=/"), "{cookie}");
    // Never a redirect off the site.
    let r = http.get(format!("{}/lang?to=ru&next=%2F%2Fevil.example", server.url)).send().unwrap();
    assert_eq!(header(&r, "location"), "/");
    let r = http.get(format!("{}/lang?to=de&next=%2F", server.url)).send().unwrap();
    assert_eq!(r.status(), 400);
}

// Health (the rest of it: tests/health.rs).

#[test]
fn readyz_is_unready_below_the_free_disk_threshold() {
    let ready = spawn_app_with(&fixtures::election("e2e", 1), &[]);
    let (status, body) = readyz(&ready);
    assert_eq!((status, &body), (200, &serde_json::json!({ "status": "ready" })));
    // A threshold above any disk's free space.
    let short = spawn_app_with(
        &fixtures::election("e2e", 1),
        &[("HATTAMA__LIMITS__MIN_FREE_BYTES", "1000000000000000000")],
    );
    let (status, body) = readyz(&short);
    assert_eq!(status, 503);
    assert_eq!(body, serde_json::json!({ "status": "unready", "failing": ["disk"] }));
    // Alive all the same.
    let alive = reqwest::blocking::get(format!("{}/healthz", short.url)).unwrap();
    assert_eq!(alive.status(), 200);
}

#[test]
fn metrics_on_a_separate_address_need_no_token_and_serve_nothing_else() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let server = spawn_app_with(
        &fixtures::election("e2e", 1),
        &[("HATTAMA__METRICS__LISTEN", listen.as_str())],
    );
    let metrics = reqwest::blocking::get(format!("http://{listen}/metrics")).unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().unwrap();
    assert!(text.contains("\nhattama_log_size 0\n"), "{text}");
    let other = reqwest::blocking::get(format!("http://{listen}/healthz")).unwrap();
    assert_eq!(other.status(), 404, "the metrics address serves only /metrics");
    // Without a token, the main address has no /metrics at all.
    let main = reqwest::blocking::get(format!("{}/metrics", server.url)).unwrap();
    assert_eq!(main.status(), 404);
}

// Rate limits.

const TOKEN: &str = "rate-limit-test-metrics-token";

/// A server whose limits in `classes` are 60 a minute with a burst of `burst`, behind a trusted
/// proxy on loopback.
fn rate_limited(classes: &[&str], burst: &str) -> TestApp {
    let mut env: Vec<(String, String)> = vec![
        ("HATTAMA__TRUSTED_PROXIES".into(), "127.0.0.1".into()),
        ("HATTAMA__METRICS__TOKEN".into(), TOKEN.into()),
    ];
    for class in classes {
        let key = format!("HATTAMA__RATE_LIMITS__{}", class.to_ascii_uppercase());
        env.push((format!("{key}__PER_MINUTE"), "60".into()));
        env.push((format!("{key}__BURST"), burst.into()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    spawn_app_with(&fixtures::election("e2e", 3), &env)
}

/// Sends `request` as the client at `address`; returns status, `Retry-After` and JSON body.
fn send(request: RequestBuilder, address: &str) -> (u16, Option<u64>, Value) {
    let r = request.header("X-Forwarded-For", address).send().unwrap();
    let status = r.status().as_u16();
    let retry = r.headers().get("Retry-After").map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry, r.json().unwrap_or(Value::Null))
}

fn assert_limited((status, retry, body): (u16, Option<u64>, Value)) {
    assert_eq!(status, 429, "{body}");
    assert!(matches!(retry, Some(1..=60)), "Retry-After {retry:?}");
    assert_eq!(body["error"], "rate_limited", "{body}");
    assert!(body["message"].as_str().unwrap().contains("wait"), "{body}");
}

#[test]
fn a_client_above_the_public_and_evidence_limits_waits_while_others_are_served() {
    let server = rate_limited(&["public", "evidence"], "5");
    let http = Client::new();
    let elections = || http.get(format!("{}/api/v1/elections", server.url));
    for i in 0..5 {
        assert_eq!(send(elections(), "203.0.113.1").0, 200, "request {i}");
    }
    assert_limited(send(elections(), "203.0.113.1"));
    assert_eq!(send(elections(), "203.0.113.2").0, 200, "another client is served");
    // The gallery's pages count as the public API; evidence downloads have their own allowance.
    assert_limited(send(http.get(format!("{}/", server.url)), "203.0.113.1"));
    let photo = format!("{}/photos/{}", server.url, "0".repeat(64));
    for _ in 0..5 {
        assert_eq!(send(http.get(&photo), "203.0.113.1").0, 404);
    }
    assert_limited(send(http.get(&photo), "203.0.113.1"));
    // The log's files are never limited (mirrors and auditors read them all).
    for _ in 0..10 {
        assert_eq!(send(http.get(format!("{}/log/checkpoint", server.url)), "203.0.113.1").0, 404);
    }
    // A client's own X-Forwarded-For is not believed without a trusted proxy: all of loopback
    // is one client on a server that trusts none.
    let plain = spawn_app_with(
        &fixtures::election("e2e", 1),
        &[
            ("HATTAMA__RATE_LIMITS__PUBLIC__PER_MINUTE", "60"),
            ("HATTAMA__RATE_LIMITS__PUBLIC__BURST", "3"),
        ],
    );
    for i in 0..3 {
        let address = format!("198.51.100.{i}");
        assert_eq!(send(http.get(format!("{}/api/v1/elections", plain.url)), &address).0, 200);
    }
    assert_limited(send(http.get(format!("{}/api/v1/elections", plain.url)), "198.51.100.9"));
}

#[test]
fn enrollment_and_login_are_limited_per_client() {
    let server = rate_limited(&["enroll", "login"], "2");
    let http = Client::new();
    let enroll = || {
        http.post(format!("{}/api/v1/enroll", server.url))
            .json(&serde_json::json!({ "code": "AAAA-AAAA-AAAA-AAAA-AAAA" }))
    };
    for _ in 0..2 {
        let (status, _, body) = send(enroll(), "203.0.113.5");
        assert!((400..429).contains(&status), "{status} {body}");
    }
    assert_limited(send(enroll(), "203.0.113.5"));
    let (status, _, _) = send(enroll(), "203.0.113.6");
    assert_ne!(status, 429, "another client may still try");

    let login = || {
        http.post(format!("{}/review/login", server.url)).form(&[
            ("username", "nobody"),
            ("password", "guess"),
            ("csrf", "x"),
        ])
    };
    for _ in 0..2 {
        assert_ne!(send(login(), "203.0.113.5").0, 429);
    }
    assert_limited(send(login(), "203.0.113.5"));
    assert_ne!(send(login(), "203.0.113.6").0, 429);
}

#[test]
fn new_uploads_are_limited_per_device_and_the_core_waits_as_told() {
    let server = rate_limited(&["uploads"], "2");
    let codes = server.invite(&["p0001"], 3);
    let photo = |seed: u32| {
        let clean =
            hattama_core::media::strip(&textured_jpeg(160, 120, seed, 90), &Default::default())
                .unwrap();
        let info = clean.info();
        (clean.bytes, info)
    };
    let mut first = RawDevice::new(31);
    let mut second = RawDevice::new(32);
    assert_eq!(first.enroll(&server.url, &codes[0]).status, 200);
    assert_eq!(second.enroll(&server.url, &codes[1]).status, 200);
    let create = |device: &mut RawDevice, seed: u32| {
        let (bytes, info) = photo(seed);
        let signed = device.sign("p0001", &info);
        device.create(
            &server.url,
            &signed.canonical,
            &hex::encode(signed.signature),
            bytes.len() as u64,
        )
    };
    for seed in 0..2 {
        let created = create(&mut first, seed);
        assert_eq!(created.status, 201, "{created:?}");
    }
    let refused = create(&mut first, 2);
    assert_eq!((refused.status, refused.code()), (429, "rate_limited"), "{refused:?}");
    let other = create(&mut second, 3);
    assert_eq!(other.status, 201, "another device is served: {other:?}");
    // A forged signature spends no device's allowance: it is refused for what it is.
    let (bytes, info) = photo(4);
    let signed = second.sign("p0001", &info);
    let forged =
        second.create(&server.url, &signed.canonical, &"ab".repeat(64), bytes.len() as u64);
    assert_eq!(forged.code(), "bad_signature");
    let another = create(&mut second, 5);
    assert_eq!(another.status, 201, "{another:?}");

    // The real core, four captures at two at once and one a second: it honours Retry-After.
    let store = tempfile::tempdir().unwrap();
    let cli = Hattama::new(store.path());
    assert_eq!(cli.run(&["enroll", &server.url, &codes[2], "--json"]).code, Some(0));
    let dir = tempfile::tempdir().unwrap();
    for i in 0..4 {
        let p = dir.path().join(format!("{i}.jpg"));
        std::fs::write(&p, textured_jpeg(200, 150, i + 50, 90)).unwrap();
        assert_eq!(cli.capture(&p, "p0001").code, Some(0));
    }
    let summary = cli.run(&["sync", "--json"]).ok_json();
    assert_eq!(
        (summary["receipted"].as_u64(), summary["remaining"].as_u64()),
        (Some(4), Some(0)),
        "{summary}"
    );
    // Refused twice at least: the raw device's third creation, and the core's third.
    let metrics = Client::new()
        .get(format!("{}/metrics", server.url))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let limited: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hattama_rate_limited_total{class=\"upload\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(limited >= 2.0, "{limited}");
}

// Findings of the attack on the server (the others: tests/hardening.rs).

/// Finding "everyone locked out", first half: behind a reverse proxy every request comes from
/// the proxy's address. With the proxy in `trusted_proxies`, an anonymous client that fails 50
/// logins is refused, and only it: a coordinator behind the same proxy still logs in.
#[test]
fn anonymous_failures_behind_a_proxy_lock_out_no_coordinator() {
    let server = spawn_app_with(&election(2), &[("HATTAMA__TRUSTED_PROXIES", "127.0.0.1")]);
    add_user(&server.data_dir, "alice", "Alice", "coordinator", &[]);
    let url = &server.url;
    let mut attacker = Browser::new(url);
    attacker.headers.push(("X-Forwarded-For".into(), "203.0.113.7".into()));
    for i in 0..50 {
        let page = attacker.try_login(&format!("nobody{i}"), "guess");
        assert_eq!(page.status, 401, "failure {i}");
    }
    let refused = attacker.try_login("nobody-else", "guess");
    assert_eq!(refused.status, 429, "the attacking client is limited");
    assert!(refused.retry_after.unwrap() > 60, "{refused:?}");
    // A left-most address the client wrote itself changes nothing.
    attacker.headers[0].1 = "198.51.100.9, 203.0.113.7".into();
    assert_eq!(attacker.try_login("nobody-else", "guess").status, 429);

    let mut alice = Browser::new(url);
    alice.headers.push(("X-Forwarded-For".into(), "198.51.100.9".into()));
    let page = alice.try_login("alice", PASSWORD);
    assert_eq!(page.status, 303, "a coordinator behind the same proxy logs in: {page:?}");
}

/// `X-Forwarded-For` from a peer that is not a trusted proxy is not believed: a client that
/// writes a new address into it for every attempt is still one client.
#[test]
fn x_forwarded_for_is_not_believed_from_an_untrusted_peer() {
    let server = spawn_app_with(&election(2), &[]);
    let mut attacker = Browser::new(&server.url);
    attacker.headers.push(("X-Forwarded-For".into(), String::new()));
    for i in 0..50 {
        attacker.headers[0].1 = format!("203.0.113.{i}");
        assert_eq!(attacker.try_login(&format!("nobody{i}"), "guess").status, 401);
    }
    attacker.headers[0].1 = "203.0.113.200".into();
    assert_eq!(attacker.try_login("nobody-else", "guess").status, 429);
}

/// Finding "chain breaks not flagged": a capture whose `prev` is not its predecessor's id, and
/// captures that reuse a sequence number, carry the chain flag in the review queue like a gap.
#[test]
fn every_kind_of_chain_break_is_flagged() {
    use hattama_tests::review::{capture_links, enrolled_device, photo, upload};
    let server = spawn_app_with(&election(2), &[]);
    add_user(&server.data_dir, "alice", "Alice", "coordinator", &[]);
    let mut d = enrolled_device(&server, 5, &["p0001"]);
    let a = upload(&server, &mut d, "p0001", &photo(1), |_| {});
    let b = upload(&server, &mut d, "p0001", &photo(2), |_| {});
    // seq 3 with a wrong prev.
    let c = upload(&server, &mut d, "p0001", &photo(3), |m| {
        m.prev = hattama_core::evidence::Sha256Hash::of(b"not the previous manifest");
    });
    // Another seq 2, after seq 1: a reused sequence number.
    let a_id = hattama_core::evidence::Sha256Hash::from_hex(&a).unwrap();
    let reused = upload(&server, &mut d, "p0001", &photo(4), |m| {
        m.seq = 2;
        m.prev = a_id;
    });
    let mut alice = Browser::login(&server.url, "alice");
    let flagged = capture_links(&alice.get("/review?flag=chain_gap").body);
    let mut expected = vec![b.clone(), c.clone(), reused.clone()];
    expected.sort();
    let mut got = flagged.clone();
    got.sort();
    assert_eq!(got, expected, "flagged: {flagged:?}; a = {a}");
}

/// Finding "unchecked arithmetic": a page number at the top of u64 is an empty page, not an
/// overflow (which panicked in debug builds).
#[test]
fn a_huge_page_number_is_an_empty_page() {
    let server = spawn_app_with(&election(2), &[]);
    add_user(&server.data_dir, "alice", "Alice", "coordinator", &[]);
    let mut alice = Browser::login(&server.url, "alice");
    for page in ["18446744073709551615", "9223372036854775807", "0"] {
        let answer = alice.get(&format!("/review?page={page}"));
        assert_eq!(answer.status, 200, "page={page}: {answer:?}");
    }
    assert_eq!(alice.get("/review?page=18446744073709551616").status, 400, "past u64");
}

/// Finding "body read before the signature check": a creation carrying a whole small photo
/// from a key that is not enrolled is refused from its headers, before its body arrives.
#[test]
fn a_whole_photo_creation_from_an_unknown_key_is_refused_before_its_body() {
    use std::io::{Read, Write};
    let server = spawn_app_with(&election(2), &[]);
    let mut stranger = RawDevice::new(99); // never enrolled
    let (bytes, info) = hattama_tests::review::photo(8);
    let signed = stranger.sign("p0001", &info);
    let meta = hattama_core::sync::upload_metadata(&signed.canonical, &signed.signature);
    let mut tcp = std::net::TcpStream::connect(server.addr).unwrap();
    let head = format!(
        "POST /files/ HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Length: {len}\r\n\
         Upload-Metadata: {meta}\r\nContent-Type: application/offset+octet-stream\r\n\
         Content-Length: {len}\r\n\r\n",
        len = bytes.len()
    );
    tcp.write_all(head.as_bytes()).unwrap();
    // A few bytes of the body, then silence: the answer must come without the rest.
    tcp.write_all(&bytes[..16]).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut answer = vec![0; 4096];
    let n = tcp.read(&mut answer).expect("an answer before the body is sent");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("device_unknown"), "{answer}");
}

/// Finding "disk exhaustion", captures: one device may store only so many captures of one
/// precinct (`limits.max_captures_per_precinct`); sending a stored one again still answers its
/// receipt, and other precincts are counted apart.
#[test]
fn a_device_stores_at_most_its_quota_of_captures_per_precinct() {
    use hattama_tests::review::{enrolled_device, photo};
    let server =
        spawn_app_with(&election(2), &[("HATTAMA__LIMITS__MAX_CAPTURES_PER_PRECINCT", "2")]);
    let url = &server.url;
    let mut d = enrolled_device(&server, 15, &["p0001", "p0002"]);
    let mut sent = Vec::new();
    for seed in 1..=2 {
        let p = photo(seed);
        let signed = d.sign("p0001", &p.1);
        assert_eq!(d.upload(url, &signed, &p.0).status, 200);
        sent.push((signed, p));
    }
    let p = photo(3);
    let third = d.sign("p0001", &p.1);
    let refused = d.upload(url, &third, &p.0);
    assert_eq!((refused.status, refused.code()), (429, "too_many_captures"), "{refused:?}");
    // The one-request creation of a whole small photo is counted the same way.
    let sig = hex::encode(third.signature);
    let r = d
        .http()
        .post(format!("{url}/files/"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", p.0.len().to_string())
        .header(
            "Upload-Metadata",
            hattama_core::sync::upload_metadata(&third.canonical, &third.signature),
        )
        .header("Content-Type", "application/offset+octet-stream")
        .body(p.0.clone())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 429, "{sig}");
    let (signed, p) = &sent[0];
    assert_eq!(d.upload(url, signed, &p.0).status, 200, "a stored capture sent again");
    let other = d.sign("p0002", &p.1);
    assert_eq!(d.upload(url, &other, &p.0).status, 200, "another precinct");
}
