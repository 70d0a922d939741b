//! [Scale-out] The real `hattama-server` on PostgreSQL with its objects (the log's tiles and
//! checkpoints, thumbnails) in an S3-compatible bucket: a real Garage node
//! (`scripts/lib/garage.sh`, `HATTAMA_TEST_S3_*`) and the throw-away PostgreSQL cluster
//! (`HATTAMA_TEST_POSTGRES_URL`). The real core enrolls and syncs captures, every receipt is
//! verified (by the core, under the pinned keys, with its inclusion proof), the checkpoint and
//! the tiles are read back through HTTP (the auditor recomputes the tree from them, and each
//! capture's inclusion proof is checked against the checkpoint), then the server is SIGKILLed
//! during uploads and started again: nothing receipted is lost, and the log grows on from the
//! bucket. Without PostgreSQL or Garage the test says so and passes, except on CI (`CI=true`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hattama_core::log::{self as tlog, LogEntry, LogKey, TlogProof};
use hattama_core::store::CaptureState;
use hattama_core::sync::{CancelToken, NoProgress, SyncConfig};
use hattama_core::{Client, ClientConfig};
use hattama_tests::backend::Backend;
use hattama_tests::server::TestServer;
use hattama_tests::{Run, bin, posted_request, sync_to_completion, textured_jpeg};

const PRECINCTS: [&str; 3] = ["p0001", "p0002", "p0003"];

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// An admin command of `hattama-server` on this storage.
fn admin(data_dir: &Path, env: &[(String, String)], args: &[&str]) -> Run {
    Command::new(bin("hattama-server"))
        .envs(pairs(env))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap()
        .into()
}

fn open_client(dir: &Path) -> Client {
    let sync = SyncConfig {
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(300),
        max_retries: 60,
        request_timeout: Duration::from_secs(15),
        connect_timeout: Duration::from_secs(2),
        ..SyncConfig::default()
    };
    Client::open(dir, &hattama_tests::test_key(), ClientConfig { sync, ..ClientConfig::default() })
        .unwrap()
}

/// Captures photos `first..first + n`: large ones (several requests each) and small ones (at
/// most 64 KiB, stored in one request) in turn.
fn capture(client: &Client, first: usize, n: usize) {
    for i in first..first + n {
        let side = if i % 2 == 0 { 700 } else { 120 };
        let photo = textured_jpeg(side, side * 3 / 4, i as u32 + 1, 90);
        client.capture(&photo, &posted_request(PRECINCTS[i % PRECINCTS.len()])).unwrap();
    }
}

/// The captures the client holds a verified receipt for.
fn receipted(client: &Client) -> Vec<hattama_core::store::CaptureRecord> {
    client.list().unwrap().into_iter().filter(|r| r.state == CaptureState::Receipted).collect()
}

/// The log's checkpoint of at least `size` entries, verified, read through HTTP.
fn checkpoint(http: &reqwest::blocking::Client, url: &str, key: &LogKey, size: u64) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = http.get(format!("{url}/log/checkpoint")).send().unwrap();
        if r.status() == 200 {
            let note = r.bytes().unwrap().to_vec();
            if tlog::verify_checkpoint(&note, key).unwrap().size >= size {
                return note;
            }
        }
        assert!(Instant::now() < deadline, "no checkpoint of {size} entries");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Everything receipted is served: the capture's receipt as the client holds it, its photo
/// byte for byte, and an inclusion proof of its log entry that verifies under the log key
/// against a checkpoint of at least `size` entries.
fn check_served(client: &Client, url: &str, key: &LogKey, size: u64) {
    let http = reqwest::blocking::Client::new();
    let note = checkpoint(&http, url, key, size);
    let tree = tlog::verify_checkpoint(&note, key).unwrap();
    for record in receipted(client) {
        let id = record.id.to_hex();
        let (held, _) = client.receipt(&id).unwrap().expect("receipt kept");
        let served = http.get(format!("{url}/api/v1/receipts/{id}")).send().unwrap();
        assert_eq!(served.status(), 200, "receipt of capture #{}", record.seq);
        let served: hattama_core::receipt::SignedReceipt = served.json().unwrap();
        assert_eq!(served.signature, held.signature, "the same receipt");
        let (sha, _, _) = record.photo.expect("photo kept by the client");
        let photo = http.get(format!("{url}/photos/{}", sha.to_hex())).send().unwrap();
        assert_eq!(photo.status(), 200, "photo of capture #{}", record.seq);
        assert_eq!(hattama_core::evidence::Sha256Hash::of(&photo.bytes().unwrap()), sha);
        let text = http.get(format!("{url}/api/v1/log/inclusion/{id}")).send().unwrap();
        assert_eq!(text.status(), 200, "inclusion proof of capture #{}", record.seq);
        let proof = TlogProof::from_text(&text.text().unwrap()).unwrap();
        let entry = LogEntry {
            capture_id: record.id,
            election: record.election.clone(),
            photo_sha256: sha,
            precinct: record.precinct.clone(),
            received_at_ms: held.receipt.received_at_ms,
            v: hattama_core::log::ENTRY_VERSION,
        };
        let proved = proof.verify(&entry, key).unwrap();
        assert!(proved.size >= tree.size, "a proof against an older tree");
    }
}

/// `hattama audit` of the server's log through HTTP (checkpoint, every tile, every capture's
/// evidence): clean, and of `size` entries.
fn audit(url: &str, vkey: &str, size: u64) {
    let run: Run = Command::new(bin("hattama"))
        .args(["audit", &format!("{url}/log"), "--key", vkey, "--photos", "--json"])
        .output()
        .unwrap()
        .into();
    let report = run.ok_json();
    assert_eq!(report["problem_count"], 0, "{run:?}");
    assert_eq!(report["size"], size, "{run:?}");
    assert_eq!(report["evidence_checked"], size, "{run:?}");
}

#[test]
fn postgres_and_s3_take_syncs_serve_the_log_from_the_bucket_and_lose_nothing_on_a_kill() {
    let Some(backend) = Backend::postgres_s3() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let env = backend.env(data);
    let election = data.join("election.json");
    let definition = hattama_tests::fixtures::election("e2e", PRECINCTS.len());
    std::fs::write(&election, serde_json::to_vec(&definition).unwrap()).unwrap();
    let imported = admin(data, &env, &["election", "import", election.to_str().unwrap()]);
    assert_eq!(imported.code, Some(0), "{imported:?}");
    let mut server = TestServer::start_on_with(data, "127.0.0.1:0", &pairs(&env));
    let listen = server.addr.to_string();
    let codes = admin(
        data,
        &env,
        &[
            "invite",
            "create",
            "--election",
            "e2e",
            "--precinct",
            "p0001",
            "--precinct",
            "p0002",
            "--precinct",
            "p0003",
            "--json",
        ],
    )
    .ok_json();
    let phone = tempfile::tempdir().unwrap();
    let client = Arc::new(open_client(phone.path()));
    client.enroll(&server.url, codes[0]["code"].as_str().unwrap()).unwrap();

    // A first sync: every capture receipted (the core verified each receipt and its inclusion
    // proof under the keys pinned at enrollment).
    capture(&client, 0, 8);
    sync_to_completion(&client, 30);
    assert_eq!(receipted(&client).len(), 8);
    let http = reqwest::blocking::Client::new();
    let key_json: serde_json::Value =
        http.get(format!("{}/api/v1/log/key", server.url)).send().unwrap().json().unwrap();
    let vkey = key_json["vkey"].as_str().unwrap().to_owned();
    let key = LogKey::from_vkey(&vkey).unwrap();
    check_served(&client, &server.url, &key, 8);
    // The tiles through HTTP: the entry bundle holds the eight entries, and the auditor
    // recomputes the tree from the tiles and checks every photo.
    let bundle = http.get(format!("{}/log/tile/entries/000.p/8", server.url)).send().unwrap();
    assert_eq!(bundle.status(), 200);
    assert_eq!(tlog::parse_entry_bundle(&bundle.bytes().unwrap()).unwrap().len(), 8);
    audit(&server.url, &vkey, 8);
    // The log and the thumbnails are in the bucket: the data directory holds neither.
    let record = &receipted(&client)[0];
    let (sha, _, _) = record.photo.unwrap();
    let thumb = http.get(format!("{}/photos/{}/thumb", server.url, sha.to_hex())).send().unwrap();
    assert_eq!(thumb.status(), 200);
    for local in ["log", "thumbs", "medium", "hattama-server.sqlite3"] {
        assert!(!data.join(local).exists(), "{local} in the data directory");
    }

    // SIGKILLed during uploads, five times, each time started again: whatever the client holds
    // a receipt for is served, with a proof. Each kill comes once the round's first capture is
    // receipted (the others are on their way), a little later each round.
    let mut count = 8;
    let mut interrupted = 0;
    for (round, wait_ms) in [0u64, 40, 10, 90, 25].into_iter().enumerate() {
        let before = receipted(&client).len();
        capture(&client, count, 4);
        count += 4;
        let cancel = CancelToken::new();
        let sync = {
            let (client, cancel) = (client.clone(), cancel.clone());
            std::thread::spawn(move || client.sync(&NoProgress, &cancel))
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while receipted(&client).len() == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(wait_ms));
        server.kill();
        cancel.cancel();
        let _ = sync.join().unwrap();
        let held = receipted(&client).len();
        println!("round {round}: {held} of {count} receipted when killed");
        assert!(held > before, "round {round}: killed before its first receipt");
        if held < count {
            interrupted += 1;
        }
        server = TestServer::start_on_with(data, &listen, &pairs(&env));
        check_served(&client, &server.url, &key, held as u64);
    }
    println!("{interrupted} of 5 kills left captures of their round without a receipt");
    sync_to_completion(&client, 30);
    let all = receipted(&client);
    assert_eq!(all.len(), count);
    check_served(&client, &server.url, &key, count as u64);
    audit(&server.url, &vkey, count as u64);
    // Stored once each, in the database the admin commands read.
    let listed = admin(data, &env, &["capture", "list", "--json"]).ok_json();
    let stored: HashSet<String> =
        listed.as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect();
    let held: HashSet<String> = all.iter().map(|r| r.id.to_hex()).collect();
    assert_eq!(stored, held);
    assert_eq!(listed.as_array().unwrap().len(), count, "no capture stored twice");
}
