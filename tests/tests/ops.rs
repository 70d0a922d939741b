//! Operations: the systemd unit of `deploy/`, `--version` of both binaries, the JSON-lines logs
//! and the liveness route.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hattama_tests::bin;
use serde_json::Value;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(file)
}

/// `systemd-analyze`, which must be there (Debian's `systemd`, installed by scripts/test).
fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze").args(args).output().unwrap_or_else(|e| {
        panic!("systemd-analyze cannot run ({e}): install Debian's systemd (scripts/test does)")
    })
}

#[test]
fn systemd_unit_is_accepted_by_systemd_analyze_and_is_hardened() {
    let unit = std::fs::read_to_string(deploy("hattama-server.service")).unwrap();
    for line in [
        "User=hattama",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/hattama",
        "StateDirectory=hattama",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line:?}");
    }
    // The data directory is the only writable path.
    let writable: Vec<_> = unit.lines().filter(|l| l.starts_with("ReadWritePaths=")).collect();
    assert_eq!(writable, ["ReadWritePaths=/var/lib/hattama"]);
    assert!(unit.contains("--data-dir /var/lib/hattama "), "the unit serves another directory");
    // `verify` checks that ExecStart's binary exists: the same unit, on the binary built here.
    const INSTALLED: &str = "ExecStart=/usr/local/bin/hattama-server ";
    assert_eq!(unit.matches(INSTALLED).count(), 1, "ExecStart is not the installed binary");
    let built = format!("ExecStart={} ", bin("hattama-server").display());
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("hattama-server.service");
    std::fs::write(&copy, unit.replace(INSTALLED, &built)).unwrap();
    let copy = copy.to_str().unwrap();
    let out = systemd_analyze(&["verify", copy]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown or misspelt keys are only warnings: any output at all is a failure.
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
    // Its exposure, as systemd rates it (0 safest .. 10): 1.2 now; fails above 1.5.
    let out = systemd_analyze(&["security", "--offline=true", "--threshold=15", copy]);
    assert!(out.status.success(), "exposure too high: {}", String::from_utf8_lossy(&out.stdout));

    // A unit with a mistake in it is refused, so the check above can fail.
    std::fs::write(
        dir.path().join("hattama-server.service"),
        unit.replace("[Service]", "[Servce]"),
    )
    .unwrap();
    let out = systemd_analyze(&["verify", copy]);
    assert!(!out.status.success() || !out.stderr.is_empty(), "a broken unit passed");
}

#[test]
fn example_settings_of_the_unit_load() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(bin("hattama-server"))
            .arg("--config")
            .arg(deploy("hattama-server.toml"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // A new deployment's first step: its first account (which creates the data).
    run(&["user", "add", "root", "--name", "Root", "--role", "admin"]);
    let users: serde_json::Value = serde_json::from_str(&run(&["user", "list", "--json"])).unwrap();
    assert_eq!(users[0]["username"], "root", "{users}");
}

/// `git rev-parse HEAD` of this checkout, if git and a repository are there.
fn git_head() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `NAME --version` prints `NAME VERSION (COMMIT)`, the commit of this checkout.
fn check_version(name: &str) {
    let out = Command::new(bin(name)).arg("--version").output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let rest = line
        .trim()
        .strip_prefix(&format!("{name} {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected --version: {line:?}"));
    match git_head() {
        Some(head) => assert!(
            rest.len() >= 7 && head.starts_with(rest),
            "{name} --version says commit {rest}, the checkout is at {head}"
        ),
        None => assert_eq!(rest, "unknown"),
    }
}

#[test]
fn server_version_names_the_commit() {
    check_version("hattama-server");
}

#[test]
fn cli_version_names_the_commit() {
    check_version("hattama");
}

#[test]
fn json_logs_give_every_request_an_id_and_no_personal_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin("hattama-server"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "serve"])
        .env("HATTAMA_LOG", "info")
        .env("HATTAMA_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let url = first.trim().strip_prefix("listening on ").unwrap().to_owned();

    let http = reqwest::blocking::Client::new();
    let secret = "secret-4711";
    let requests = [
        (format!("{url}/healthz"), 200),
        (format!("{url}/health?who={secret}"), 200),
        (format!("{url}/photos/{secret}"), 400),
        (format!("{url}/api/v1/receipts/{secret}"), 400),
        (format!("{url}/nowhere-{secret}"), 404),
    ];
    for (u, status) in &requests {
        let response = http
            .get(u)
            .header("User-Agent", format!("agent-{secret}"))
            .header("Cookie", format!("session={secret}"))
            .header("X-Forwarded-For", "203.0.113.77")
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), *status, "{u}");
        if u.ends_with("/healthz") {
            assert_eq!(response.json::<Value>().unwrap(), serde_json::json!({"status": "ok"}));
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();

    assert!(!stderr.contains(secret), "personal data in the logs:\n{stderr}");
    assert!(!stderr.contains("203.0.113.77"), "a client address in the logs:\n{stderr}");
    let mut ids = Vec::new();
    let mut routes = Vec::new();
    for line in stderr.lines() {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\nall:\n{stderr}"));
        assert!(event["timestamp"].is_string() && event["level"].is_string(), "{line}");
        if event["fields"]["message"] != "request" {
            continue;
        }
        // The request line: its span carries the request id, the method and the route pattern.
        let span = &event["span"];
        let id = span["request_id"].as_str().unwrap_or_else(|| panic!("no request id: {line}"));
        assert_eq!(id.len(), 36, "not a UUID: {line}");
        assert_eq!(span["method"], "GET", "{line}");
        assert!(event["fields"]["status"].is_u64() && event["fields"]["ms"].is_f64(), "{line}");
        ids.push(id.to_owned());
        routes.push((
            span["route"].as_str().unwrap().to_owned(),
            event["fields"]["status"].as_u64().unwrap(),
        ));
    }
    assert_eq!(ids.len(), requests.len(), "one request line per request:\n{stderr}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), requests.len(), "request ids repeat:\n{stderr}");
    assert_eq!(
        routes,
        [
            ("/healthz".to_owned(), 200),
            ("/health".to_owned(), 200),
            ("/photos/{sha256}".to_owned(), 400),
            ("/api/v1/receipts/{id}".to_owned(), 400),
            ("unmatched".to_owned(), 404),
        ]
    );
}
