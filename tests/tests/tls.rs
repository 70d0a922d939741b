//! [Operations] HTTPS end to end: a test certificate authority made here (rcgen), the real
//! server with `[tls]`, the CLI and the Python bindings trusting that CA, a certificate replaced
//! and `SIGHUP` sent while a sync runs, `curl` negotiating HTTP/2, and a plain HTTP request to
//! the HTTPS port.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hattama_tests::proxy::{FaultConfig, FaultProxy};
use hattama_tests::server::TestServer;
use hattama_tests::{Hattama, fixtures, textured_jpeg};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate authority of the test, and its certificate in PEM.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self { issuer: Issuer::new(params, key), pem }
    }

    /// A server certificate for 127.0.0.1 and localhost, written as `<stem>.crt`/`<stem>.key`.
    fn server_cert(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "hattama test server");
        params.subject_alt_names = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::DnsName("localhost".try_into().unwrap()),
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (crt, pem_key) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
        std::fs::write(&crt, cert.pem()).unwrap();
        std::fs::write(&pem_key, key.serialize_pem()).unwrap();
        (crt, pem_key)
    }
}

/// A server with election `e2e` serving HTTPS with the certificate files `crt` and `key`.
fn https_server(crt: &Path, key: &Path) -> TestServer {
    let server = TestServer::start_with(
        &fixtures::election("e2e", 4),
        &[
            ("HATTAMA__TLS__CERT_FILE", crt.to_str().unwrap()),
            ("HATTAMA__TLS__KEY_FILE", key.to_str().unwrap()),
        ],
    );
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);
    server
}

/// `curl` with `args`; returns (exit code, stdout).
fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl (scripts/test installs it)");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Atomically replaces `to` by a copy of `from` (write aside, rename).
fn replace(from: &Path, to: &Path) {
    let aside = to.with_extension("new");
    std::fs::copy(from, &aside).unwrap();
    std::fs::rename(&aside, to).unwrap();
}

#[test]
fn the_cli_syncs_over_https_and_a_certificate_replaced_during_the_sync_fails_no_upload() {
    let pki = tempfile::tempdir().unwrap();
    let (first, second) = (Ca::new("Hattama test CA 1"), Ca::new("Hattama test CA 2"));
    let (crt, key) = first.server_cert(pki.path(), "server");
    let (new_crt, new_key) = second.server_cert(pki.path(), "renewed");
    let (ca1, ca2, both) =
        (pki.path().join("ca1.pem"), pki.path().join("ca2.pem"), pki.path().join("both.pem"));
    std::fs::write(&ca1, &first.pem).unwrap();
    std::fs::write(&ca2, &second.pem).unwrap();
    std::fs::write(&both, format!("{}{}", first.pem, second.pem)).unwrap();
    let server = https_server(&crt, &key);
    let codes = server.invite(&["p0001", "p0002"], 2);

    // Without the CA the server is not trusted, and the CLI says so.
    let stranger = tempfile::tempdir().unwrap();
    let refused = Hattama::new(stranger.path()).run(&["enroll", &server.url, &codes[1], "--json"]);
    assert_ne!(refused.code, Some(0), "{refused:?}");
    assert!(refused.stdout.contains("certificate"), "{refused:?}");

    // Through a proxy that delays chunks, so that the sync is still running when the
    // certificate changes (TLS passes through it untouched).
    let slow = FaultConfig {
        delay_probability: 0.3,
        max_delay: Duration::from_millis(40),
        ..FaultConfig::none()
    };
    let proxy = FaultProxy::start(server.addr, slow).unwrap();
    let url = format!("https://{}", proxy.addr());
    let store = tempfile::tempdir().unwrap();
    let cli = Hattama::new(store.path());
    let with_ca = |args: &[&str]| {
        let mut c = cli.command(args);
        c.env("HATTAMA_CA_FILE", &both);
        c
    };
    let enrolled = with_ca(&["enroll", &url, &codes[0], "--json"]).output().unwrap();
    assert!(enrolled.status.success(), "{enrolled:?}");
    let photos = tempfile::tempdir().unwrap();
    let n = 24;
    for i in 0..n {
        let p = photos.path().join(format!("{i}.jpg"));
        std::fs::write(&p, textured_jpeg(1200, 900, i as u32 + 7, 92)).unwrap();
        let precinct = ["p0001", "p0002"][i % 2];
        let run = cli.capture(&p, precinct);
        assert_eq!(run.code, Some(0), "{run:?}");
    }

    let sync = with_ca(&["sync", "--json"]).stdout(Stdio::piped()).spawn().unwrap();
    // Once some captures are stored, the certificate is replaced and SIGHUP sent.
    let started = Instant::now();
    while hattama_tests::stored_photo_count(&server.data_dir) < 3 {
        assert!(started.elapsed() < Duration::from_secs(120), "the sync stored nothing");
        std::thread::sleep(Duration::from_millis(50));
    }
    replace(&new_crt, &crt);
    replace(&new_key, &key);
    let hup = Command::new("kill").args(["-HUP", &server.pid().to_string()]).status().unwrap();
    assert!(hup.success());
    // New connections get the new certificate (only the second CA's is trusted by curl here).
    let health = format!("{}/healthz", server.url);
    let started = Instant::now();
    while curl(&["--cacert", ca2.to_str().unwrap(), &health]).0 != 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "the certificate was not reloaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stored_at_reload = hattama_tests::stored_photo_count(&server.data_dir);
    assert_ne!(curl(&["--cacert", ca1.to_str().unwrap(), &health]).0, 0, "the old one is gone");

    let out = sync.wait_with_output().unwrap();
    assert!(out.status.success(), "the sync failed: {out:?}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["receipted"], n, "{summary}");
    assert_eq!(summary["remaining"], 0, "{summary}");
    let status = cli.run(&["list", "--json"]).ok_json();
    let states: Vec<&str> =
        status.as_array().unwrap().iter().map(|c| c["state"].as_str().unwrap()).collect();
    assert_eq!(states, vec!["receipted"; n], "{status}");
    assert!(stored_at_reload < n, "the sync was over before the reload ({stored_at_reload})");
    println!("{n} captures receipted; the certificate changed after {stored_at_reload} stored");
}

#[test]
fn https_speaks_http2_sends_hsts_and_secure_cookies_and_plain_http_gets_a_clear_error() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new("Hattama test CA");
    let (crt, key) = ca.server_cert(pki.path(), "server");
    let ca_file = pki.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let server = https_server(&crt, &key);
    let ca_arg = ca_file.to_str().unwrap();

    let (code, version) = curl(&[
        "--http2",
        "--cacert",
        ca_arg,
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        &format!("{}/healthz", server.url),
    ]);
    assert_eq!((code, version.as_str()), (0, "2"), "curl --http2 negotiated {version}");

    let (code, head) =
        curl(&["--cacert", ca_arg, "-D", "-", "-o", "/dev/null", &format!("{}/", server.url)]);
    assert_eq!(code, 0);
    let head = head.to_ascii_lowercase();
    assert!(head.contains("strict-transport-security: max-age=31536000"), "{head}");

    let (code, head) = curl(&[
        "--cacert",
        ca_arg,
        "-D",
        "-",
        "-o",
        "/dev/null",
        &format!("{}/lang?to=ru&next=/", server.url),
    ]);
    assert_eq!(code, 0);
    let cookie = head.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).unwrap();
    assert!(cookie.contains("Secure"), "{cookie}");

    // Plain HTTP to the HTTPS port: a readable answer, not TLS alert bytes.
    let plain = format!("http://{}/healthz", server.addr);
    let (code, body) = curl(&["-w", "\n%{http_code}", &plain]);
    assert_eq!(code, 0, "{body}");
    let (json, status) = body.rsplit_once('\n').unwrap();
    assert_eq!(status, "400", "{body}");
    let json: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(json["error"], "https_required", "{json}");
    assert!(json["message"].as_str().unwrap().contains("https://"), "{json}");
    // And the server goes on serving HTTPS.
    assert_eq!(curl(&["--cacert", ca_arg, &format!("{}/healthz", server.url)]).0, 0);
}

#[test]
fn plain_http_behind_a_trusted_proxy_gets_secure_cookies_only_from_that_proxy() {
    let server = TestServer::start_with(
        &fixtures::election("e2e", 1),
        &[("HATTAMA__TRUSTED_PROXIES", "127.0.0.1")],
    );
    let untrusted = TestServer::start_with(&fixtures::election("e2e", 1), &[]);
    let cookie = |server: &TestServer| {
        let (code, head) = curl(&[
            "-H",
            "X-Forwarded-Proto: https",
            "-D",
            "-",
            "-o",
            "/dev/null",
            &format!("{}/lang?to=ru&next=/", server.url),
        ]);
        assert_eq!(code, 0);
        head.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).unwrap().to_owned()
    };
    assert!(cookie(&server).contains("Secure"), "a trusted proxy's X-Forwarded-Proto counts");
    assert!(!cookie(&untrusted).contains("Secure"), "anyone else's does not");
    // `systemctl reload` (SIGHUP) of a server without [tls] does not end it.
    let hup = Command::new("kill").args(["-HUP", &untrusted.pid().to_string()]).status().unwrap();
    assert!(hup.success());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(curl(&[&format!("{}/healthz", untrusted.url)]).0, 0, "SIGHUP ended the server");
}

#[test]
fn python_bindings_enroll_and_sync_over_https_with_a_test_ca() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned();
    let bindings = root.join("build/bindings/python");
    assert!(
        bindings.join("libhattama_ffi.so").exists(),
        "{} has no bindings: run scripts/bindings first",
        bindings.display()
    );
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new("Hattama test CA");
    let (crt, key) = ca.server_cert(pki.path(), "server");
    let ca_file = pki.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let server = https_server(&crt, &key);
    let codes = server.invite(&["p0001"], 2);
    let work = tempfile::tempdir().unwrap();
    let photos: Vec<PathBuf> = (0..5)
        .map(|i| {
            let p = work.path().join(format!("{i}.jpg"));
            std::fs::write(&p, textured_jpeg(640, 480, i + 300, 90)).unwrap();
            p
        })
        .collect();
    let out = Command::new("python3")
        .arg("-u")
        .arg(root.join("tests/ffi/python/tls_sync.py"))
        .env("PYTHONPATH", &bindings)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("HATTAMA_URL", &server.url)
        .env("HATTAMA_CODES", codes.join(","))
        .env("HATTAMA_CA_FILE", &ca_file)
        .env("HATTAMA_PHOTOS", std::env::join_paths(&photos).unwrap())
        .env("HATTAMA_WORK", work.path())
        .output()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "tests/ffi/python/tls_sync.py failed");
    let stored = hattama_tests::server::admin(&server.data_dir, &["capture", "list", "--json"]);
    assert_eq!(stored.ok_json().as_array().unwrap().len(), photos.len());
}
