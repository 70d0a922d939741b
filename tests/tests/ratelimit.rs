//! [Operations] Rate limits: a client above its limit gets `429 rate_limited` with `Retry-After`
//! and a JSON body while other clients are served; per device for new uploads, whose client (the
//! real core) waits as told and completes its sync. Clients are told apart by the address a
//! trusted proxy puts in `X-Forwarded-For` (the test's requests all come from loopback).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use hattama_tests::raw::RawDevice;
use hattama_tests::server::TestServer;
use hattama_tests::{Hattama, fixtures, textured_jpeg};
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::Value;

const TOKEN: &str = "rate-limit-test-metrics-token";

/// A server whose limits in `classes` are 60 a minute with a burst of `burst`, behind a trusted
/// proxy on loopback.
fn server(classes: &[&str], burst: &str) -> TestServer {
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
    TestServer::start_with(&fixtures::election("e2e", 3), &env)
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
    let server = server(&["public", "evidence"], "5");
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
    let plain = TestServer::start_with(
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
    let server = server(&["enroll", "login"], "2");
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
    let server = server(&["uploads"], "2");
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
