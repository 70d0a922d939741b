//! [Sync] Real third-party tus clients against the real server: `tus-js-client` (npm, run with
//! node) and `tuspy` (PyPI) upload a signed photo, are cut off half-way, and resume from the
//! server's offset in a new process, through their own URL storage. A server that only our own
//! client can talk to would not be speaking tus; these clients were written by other people from
//! the same specification.
//!
//! `scripts/test` installs both at fixed places: `tests/tus-clients/node_modules` (`npm ci`) and
//! the virtual environment `build/tus-venv` (pip, pinned by `tests/tus-clients/requirements.txt`).
//! A missing client fails the test; it is never skipped.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

use hattama_core::evidence::DeviceKey;
use hattama_core::receipt::SignedReceipt;
use hattama_tests::raw::{RawDevice, clean_photo};
use hattama_tests::server::{TestServer, admin};
use hattama_tests::{GO_IMAGE, Run};
use serde_json::Value;

/// The directory of the client scripts and their npm and pip pins.
fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tus-clients")
}

/// The workspace root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// How to run one client's script: `program args... MODE ENDPOINT FILE STATE MANIFEST SIGNATURE`.
struct TusClient {
    name: &'static str,
    program: PathBuf,
    script: PathBuf,
}

impl TusClient {
    fn tus_js_client() -> Self {
        let installed = clients_dir().join("node_modules/tus-js-client/package.json");
        assert!(
            installed.exists(),
            "tus-js-client is missing ({}): scripts/test installs it (`npm ci` in tests/tus-clients)",
            installed.display()
        );
        Self {
            name: "tus-js-client",
            program: "node".into(),
            script: clients_dir().join("tus-js-client.js"),
        }
    }

    fn tuspy() -> Self {
        let python = workspace().join("build/tus-venv/bin/python");
        assert!(
            python.exists(),
            "tuspy is missing ({} does not exist): scripts/test installs it into that virtual \
             environment from tests/tus-clients/requirements.txt",
            python.display()
        );
        Self { name: "tuspy", program: python, script: clients_dir().join("tuspy_client.py") }
    }

    /// Runs the script in `mode` (`cut` or `resume`); asserts it succeeded and returns the JSON
    /// line it printed.
    fn run(&self, mode: &str, upload: &Upload) -> Value {
        let output = Command::new(&self.program)
            .arg(&self.script)
            .args([mode, &upload.endpoint])
            .arg(&upload.photo)
            .arg(&upload.state)
            .args([&upload.manifest, &upload.signature])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} for {} ({e}): scripts/test installs the tus clients; \
                     tus-js-client needs Node.js (>= 18) on PATH",
                    self.program.display(),
                    self.name
                )
            });
        let run = Run::from(output);
        assert_eq!(run.code, Some(0), "{} {mode} failed: {run:?}", self.name);
        let last = run.stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("{} {mode} printed no JSON line ({e}): {run:?}", self.name))
    }
}

/// What a client needs to upload one capture.
struct Upload {
    /// The tus creation URL, `…/files/`.
    endpoint: String,
    /// The clean photo, as a file.
    photo: PathBuf,
    /// The client's own URL storage, kept between its two runs.
    state: PathBuf,
    /// The canonical manifest (UTF-8 JSON), sent as the `manifest` metadata.
    manifest: String,
    /// The signature in lowercase hex, sent as the `signature` metadata.
    signature: String,
}

/// Enrolls a device, lets `client` upload a photo with a cut in the middle and a resume from a
/// new process, then checks the server's side: offset at the cut, receipt, blob, one capture.
fn upload_with_a_cut(client: &TusClient, seed: u8) {
    let server = TestServer::start_with_election(2);
    let url = &server.url;
    let code = &server.invite(&["p0001"], 1)[0];
    let mut device = RawDevice::new(seed);
    let enrolled = device.enroll(url, code);
    assert_eq!(enrolled.status, 200, "{enrolled:?}");
    let receipt_key = enrolled.body["receipt_key"].as_str().unwrap();
    let pinned = DeviceKey(hattama_core::evidence::parse_lower_hex::<32>(receipt_key).unwrap());

    let (bytes, info) = clean_photo(&Path::new(GO_IMAGE).join("testdata/video-001.jpeg"));
    let length = bytes.len() as u64;
    let signed = device.sign("p0001", &info);
    let id = signed.hash();
    let dir = tempfile::tempdir().unwrap();
    let upload = Upload {
        endpoint: format!("{url}/files/"),
        photo: dir.path().join("protocol.jpeg"),
        state: dir.path().join("tus-urls.json"),
        manifest: String::from_utf8(signed.canonical.clone()).unwrap(),
        signature: hex::encode(signed.signature),
    };
    std::fs::write(&upload.photo, &bytes).unwrap();
    let upload_url = format!("{url}/files/{id}?token=");

    // First run: create, send part of the photo, stop. The upload's URL carries its token.
    let cut = client.run("cut", &upload);
    assert!(cut["upload_url"].as_str().unwrap().starts_with(&upload_url), "{cut}");
    let upload_url = cut["upload_url"].as_str().unwrap().to_owned();
    device.remember(upload_url.strip_prefix(url.as_str()));
    let cut_at = cut["cut_at"].as_u64().unwrap();
    assert!(0 < cut_at && cut_at < length, "cut at {cut_at} of {length}: not in the middle");
    let head = device.head(url, &id.to_hex());
    assert_eq!((head.status, head.offset), (200, Some(cut_at)), "the server's offset at the cut");
    assert_eq!(device.receipt(url, &id.to_hex()).status, 404, "no receipt before the last byte");

    // Second run, a new process: find the upload, ask for the offset, send the rest.
    let resumed = client.run("resume", &upload);
    assert_eq!(resumed["resumed_from"].as_u64(), Some(cut_at), "{resumed}");
    assert_eq!(resumed["upload_url"], upload_url.as_str(), "{resumed}");
    if let Some(requests) = resumed["requests"].as_array() {
        // tus-js-client reports its requests: no new creation, a HEAD first.
        assert_eq!(requests[0][0], "HEAD", "{resumed}");
        assert!(requests.iter().all(|r| r[0] != "POST"), "resumed without creating: {resumed}");
    }

    let answer = device.receipt(url, &id.to_hex());
    assert_eq!(answer.status, 200, "{answer:?}");
    let receipt: SignedReceipt = serde_json::from_value(answer.body.clone()).unwrap();
    receipt.verify(&pinned, &id, &info.sha256).unwrap();
    let blob = hattama_tests::stored_photo(&server.data_dir, &info.sha256.to_hex()).unwrap();
    assert!(blob == bytes, "the stored blob differs from the photo");
    let captures = admin(&server.data_dir, &["capture", "list", "--json"]).ok_json();
    assert_eq!(captures.as_array().unwrap().len(), 1, "{captures}");
}

#[test]
fn tus_js_client_uploads_and_resumes_after_a_cut() {
    upload_with_a_cut(&TusClient::tus_js_client(), 61);
}

#[test]
fn tuspy_uploads_and_resumes_after_a_cut() {
    upload_with_a_cut(&TusClient::tuspy(), 62);
}
