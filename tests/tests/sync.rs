//! [Sync] end to end: the real core and CLI against the real server on a random port, through
//! a fault-injecting proxy, with the server and the client killed by SIGKILL mid-sync.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use hattama_core::evidence::Sha256Hash;
use hattama_core::hooks::SYNC_POINTS;
use hattama_core::store::CaptureState;
use hattama_core::sync::{CancelToken, NoProgress, SyncConfig};
use hattama_core::{CaptureRequest, Client, ClientConfig};
use hattama_tests::proxy::{FaultConfig, FaultProxy};
use hattama_tests::server::{TestServer, admin, import_election};
use hattama_tests::{Hattama, posted_request, sync_to_completion, textured_jpeg};
use rand::Rng;
use serde_json::Value;

const PRECINCTS: [&str; 5] = ["p0001", "p0002", "p0003", "p0004", "p0005"];

/// Short back-offs and many retries: a test should not wait 30 s for a cap.
fn fast_sync() -> SyncConfig {
    SyncConfig {
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(300),
        max_retries: 60,
        request_timeout: Duration::from_secs(15),
        connect_timeout: Duration::from_secs(2),
        ..SyncConfig::default()
    }
}

fn open_client(dir: &Path) -> Client {
    Client::open(
        dir,
        &hattama_tests::test_key(),
        ClientConfig { sync: fast_sync(), ..ClientConfig::default() },
    )
    .unwrap()
}

fn request(i: usize) -> CaptureRequest {
    posted_request(PRECINCTS[i % PRECINCTS.len()])
}

/// Captures `n` distinct photos of about `side`×`side`; returns their total size as stored.
fn capture_photos(client: &Client, first: usize, n: usize, side: u32) -> u64 {
    (first..first + n)
        .map(|i| {
            let photo = textured_jpeg(side, side * 3 / 4, i as u32 + 1, 90);
            client.capture(&photo, &request(i)).unwrap().manifest.photo.bytes
        })
        .sum()
}

/// The server's stored captures by id, read with its admin command (works while it is down).
fn server_captures(data_dir: &Path) -> HashMap<String, Value> {
    let run = admin(data_dir, &["capture", "list", "--json"]);
    run.ok_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_owned(), c.clone()))
        .collect()
}

/// Every capture the client holds a verified receipt for is stored on the server, and its
/// photo file matches its hash. Returns how many receipts the client holds.
fn check_receipts_are_honoured(client: &Client, data_dir: &Path) -> usize {
    let stored = server_captures(data_dir);
    let mut held = 0;
    for r in client.list().unwrap() {
        if r.state != CaptureState::Receipted {
            continue;
        }
        held += 1;
        let (receipt, _) = client.receipt(&r.id.to_hex()).unwrap().expect("receipt kept");
        assert_eq!(receipt.receipt.capture_id, r.id);
        let on_server = stored
            .get(&r.id.to_hex())
            .unwrap_or_else(|| panic!("capture #{} has a receipt but is not on the server", r.seq));
        let sha = on_server["photo_sha256"].as_str().unwrap();
        let blob = hattama_tests::stored_photo(data_dir, sha).expect("photo stored");
        assert_eq!(Sha256Hash::of(&blob).to_hex(), sha, "stored photo matches its hash");
    }
    held
}

fn assert_all_receipted_once(client: &Client, data_dir: &Path, expected: usize) {
    let records = client.list().unwrap();
    assert_eq!(records.len(), expected);
    assert!(records.iter().all(|r| r.state == CaptureState::Receipted), "{records:?}");
    let stored = server_captures(data_dir);
    assert_eq!(stored.len(), expected, "one stored capture per capture, no duplicate");
    let client_ids: HashSet<String> = records.iter().map(|r| r.id.to_hex()).collect();
    let server_ids: HashSet<String> = stored.keys().cloned().collect();
    assert_eq!(client_ids, server_ids);
    let seqs: HashSet<u64> = stored.values().map(|c| c["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs.len(), expected, "each sequence number stored once");
    check_receipts_are_honoured(client, data_dir);
}

#[test]
fn fifty_captures_sync_through_a_faulty_network_exactly_once() {
    let server = TestServer::start_with_election(5);
    let proxy = FaultProxy::start(server.addr, FaultConfig::none()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = open_client(dir.path());
    let code = &server.invite(&PRECINCTS, 1)[0];
    client.enroll(&proxy.url(), code).unwrap();
    let total = capture_photos(&client, 0, 50, 480);

    // Most connections are cut somewhere in their first 400 KiB, some stall first, chunks are
    // delayed: a bad mobile network.
    proxy.set_config(FaultConfig {
        cut_probability: 0.9,
        max_cut_after: 400 * 1024,
        ..FaultConfig::harsh(7)
    });
    let before = proxy.bytes_client_to_server();
    sync_to_completion(&client, 30);
    let sent = proxy.bytes_client_to_server() - before;

    assert_all_receipted_once(&client, &server.data_dir, 50);
    assert!(proxy.cuts() >= 10, "the network was not faulty enough: {} cuts", proxy.cuts());
    let ratio = sent as f64 / total as f64;
    println!("photos {total} bytes, sent {sent} bytes ({ratio:.3}x), {} cuts", proxy.cuts());
    assert!(ratio <= 1.3, "sent {ratio:.3}x the photos' bytes");
}

#[test]
fn the_server_killed_twenty_times_during_uploads_loses_no_receipted_capture() {
    let data = tempfile::tempdir().unwrap();
    import_election(data.path(), &hattama_tests::fixtures::election("e2e", 5));
    let mut server = TestServer::start_on(data.path(), "127.0.0.1:0");
    let listen = server.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let client = Arc::new(open_client(dir.path()));
    client.enroll(&server.url, &server.invite(&PRECINCTS, 1)[0]).unwrap();
    capture_photos(&client, 0, 12, 900);
    let mut count = 12;
    let mut rng = rand::thread_rng();
    let mut interrupted = 0;
    for round in 0..20 {
        // New evidence keeps arriving, so every kill lands during uploads: large photos (files,
        // several requests each) and, every other round, small ones (stored in the database,
        // one request each).
        capture_photos(&client, count, 3, if round % 2 == 0 { 900 } else { 160 });
        count += 3;
        let cancel = CancelToken::new();
        let sync = {
            let (client, cancel) = (client.clone(), cancel.clone());
            std::thread::spawn(move || client.sync(&NoProgress, &cancel))
        };
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..250)));
        server.kill();
        cancel.cancel();
        let _ = sync.join().unwrap();
        let held = check_receipts_are_honoured(&client, data.path());
        if held < count {
            interrupted += 1;
        }
        println!("round {round}: {held} of {count} receipted");
        server = TestServer::start_on(data.path(), &listen);
    }
    assert!(interrupted >= 15, "only {interrupted} of 20 kills interrupted an upload");
    sync_to_completion(&client, 30);
    assert_all_receipted_once(&client, data.path(), count);
}

/// Starts `hattama sync` paused at `point`, waits until it is there, and SIGKILLs it.
fn kill_sync_at(cli: &Hattama, point: &str) -> bool {
    let mut child = cli
        .command(&["sync"])
        .env("HATTAMA_TEST_PAUSE_AT", point)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let wanted = format!("hattama-paused {point}");
    let reached = BufReader::new(stderr).lines().map_while(Result::ok).any(|l| l == wanted);
    child.kill().unwrap();
    child.wait().unwrap();
    reached
}

#[test]
fn a_client_killed_during_sync_finishes_later_without_duplicates() {
    let server = TestServer::start_with_election(5);
    let store = tempfile::tempdir().unwrap();
    let cli = Hattama::new(store.path());
    let code = &server.invite(&PRECINCTS, 1)[0];
    assert_eq!(cli.run(&["enroll", &server.url, code, "--json"]).code, Some(0));
    let photos = tempfile::tempdir().unwrap();
    let n = 16;
    for i in 0..n {
        let p = photos.path().join(format!("{i}.jpg"));
        std::fs::write(&p, textured_jpeg(1000, 750, i as u32 + 100, 90)).unwrap();
        let precinct = PRECINCTS[i % PRECINCTS.len()];
        let run =
            cli.run(&["capture", p.to_str().unwrap(), "--election", "e2e", "--precinct", precinct]);
        assert_eq!(run.code, Some(0), "{run:?}");
    }
    // Killed exactly where a receipt is at stake: the server stored the capture, the client
    // has no receipt yet; and the receipt fetched but not yet committed locally.
    for point in SYNC_POINTS {
        assert!(kill_sync_at(&cli, point), "sync never reached {point}");
    }
    // Killed at random moments.
    let mut rng = rand::thread_rng();
    for _ in 0..6 {
        let mut child =
            cli.command(&["sync"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(30..400)));
        let _ = child.kill();
        child.wait().unwrap();
    }
    let run = cli.run(&["sync", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let status = cli.run(&["status", "--json"]).ok_json();
    let client =
        Client::open(store.path(), &hattama_tests::test_key(), ClientConfig::default()).unwrap();
    assert_all_receipted_once(&client, &server.data_dir, n);
    assert_eq!(status["server"].as_str(), Some(server.url.as_str()), "{status}");
}

#[test]
fn cli_enroll_capture_sync_status_and_revocation() {
    let server = TestServer::start_with_election(3);
    let store = tempfile::tempdir().unwrap();
    let cli = Hattama::new(store.path());
    let code = &server.invite(&["p0001"], 1)[0];
    let enrolled = cli.run(&["enroll", &server.url, code, "--json"]).ok_json();
    assert_eq!(enrolled["precincts"], serde_json::json!(["p0001"]), "{enrolled}");
    // The code is spent: another store cannot use it.
    let other = tempfile::tempdir().unwrap();
    let reuse = Hattama::new(other.path()).run(&["enroll", &server.url, code, "--json"]);
    assert_eq!(reuse.code, Some(3), "{reuse:?}");

    let photo = "/usr/share/go-1.19/src/image/testdata/video-001.jpeg";
    let first = cli
        .run(&["capture", photo, "--election", "e2e", "--precinct", "p0001", "--json"])
        .ok_json();
    let id = first["id"].as_str().unwrap().to_owned();
    let summary = cli.run(&["sync", "--json"]).ok_json();
    assert_eq!(summary["receipted"], 1, "{summary}");
    let shown = cli.run(&["show", &id, "--json"]).ok_json();
    assert_eq!(shown["state"], "receipted");
    assert!(shown["receipt"].is_object(), "{shown}");
    let status = cli.run(&["status", "--json"]).ok_json();
    assert_eq!(status["counts"]["receipted"], 1, "{status}");

    // A capture for a precinct the device does not observe is refused on the device, before
    // it is signed (tests/tests/observer.rs tries every such refusal, and the server's own
    // refusal of a capture made before enrollment).
    let wrong = cli.run(&["capture", photo, "--election", "e2e", "--precinct", "p0002", "--json"]);
    assert_eq!(
        (wrong.code, wrong.json()["error"].as_str()),
        (Some(3), Some("precinct_not_assigned"))
    );
    let next = cli
        .run(&["capture", photo, "--election", "e2e", "--precinct", "p0001", "--json"])
        .ok_json();
    let summary = cli.run(&["sync", "--json"]).ok_json();
    assert_eq!(
        (summary["receipted"].as_u64(), summary["rejected"].as_u64()),
        (Some(1), Some(0)),
        "{summary}"
    );
    assert_eq!(
        cli.run(&["show", next["id"].as_str().unwrap(), "--json"]).ok_json()["state"],
        "receipted"
    );

    // Revoked: nothing more is accepted, what was stored stays.
    let device_id = enrolled["device_id"].as_str().unwrap();
    assert_eq!(admin(&server.data_dir, &["device", "revoke", device_id]).code, Some(0));
    cli.run(&["capture", photo, "--election", "e2e", "--precinct", "p0001", "--json"]).ok_json();
    let refused = cli.run(&["sync", "--json"]);
    assert_ne!(refused.code, Some(0), "{refused:?}");
    assert!(
        refused.stdout.contains("device_revoked") || refused.stderr.contains("revoked"),
        "{refused:?}"
    );
    assert_eq!(server_captures(&server.data_dir).len(), 2);
    let list = cli.run(&["list", "--json"]).ok_json();
    let states: Vec<&str> =
        list.as_array().unwrap().iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(states, vec!["queued", "receipted", "receipted"], "{list}");
}
