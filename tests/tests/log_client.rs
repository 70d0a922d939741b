//! [Log] end to end on the device side: the real core and CLI against the real server. Receipts
//! carry proofs the device verifies, the device keeps the newest checkpoint across syncs, and a
//! server restarted on an old copy of its data directory (a fork, or a log that shrank) raises
//! the alarm: CLI exit 10 with a loud message, the alarm stored with both signed checkpoints,
//! and nothing more receipted.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::time::Duration;

use hattama_core::evidence::{EvidenceKind, Page, Sha256Hash};
use hattama_core::log::{LogEntry, LogKey, TlogProof, verify_checkpoint};
use hattama_core::store::CaptureState;
use hattama_core::sync::{CancelToken, NoProgress, SyncConfig, SyncError};
use hattama_core::{CaptureRequest, Client, ClientConfig, Error};
use hattama_tests::server::{TestServer, admin, import_election};
use hattama_tests::{Hattama, copy_dir, textured_jpeg};
use serde_json::Value;

const PRECINCTS: [&str; 5] = ["p0001", "p0002", "p0003", "p0004", "p0005"];

fn open_client(dir: &Path) -> Client {
    let sync = SyncConfig {
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(300),
        max_retries: 30,
        request_timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(2),
        ..SyncConfig::default()
    };
    Client::open(dir, &hattama_tests::test_key(), ClientConfig { sync, ..ClientConfig::default() })
        .unwrap()
}

/// Captures `n` distinct photos (seeds `seed..seed + n`); returns their ids.
fn capture(client: &Client, seed: u32, n: u32) -> Vec<Sha256Hash> {
    (seed..seed + n)
        .map(|i| {
            let request = CaptureRequest {
                election: "e2e".into(),
                precinct: PRECINCTS[i as usize % PRECINCTS.len()].into(),
                kind: EvidenceKind::Posted,
                page: Page { count: 1, number: 1 },
                note: None,
                transcription: None,
                location: None,
                utc_offset_min: 300,
            };
            client.capture(&textured_jpeg(200, 150, i, 90), &request).unwrap().id
        })
        .collect()
}

/// Syncs and returns the size of the checkpoint the device keeps afterwards.
fn sync(client: &Client) -> u64 {
    let summary = client.sync(&NoProgress, &CancelToken::new()).unwrap();
    assert_eq!(summary.remaining, 0, "{summary:?}");
    summary.log_size.expect("a checkpoint is kept")
}

/// The server's newest checkpoint, verified under `key`.
fn server_checkpoint(url: &str, key: &LogKey) -> hattama_core::log::Checkpoint {
    let note = reqwest::blocking::get(format!("{url}/log/checkpoint")).unwrap().bytes().unwrap();
    verify_checkpoint(&note, key).unwrap()
}

fn server_has(data_dir: &Path, id: &Sha256Hash) -> bool {
    let run = admin(data_dir, &["capture", "list", "--json"]);
    run.ok_json().as_array().unwrap().iter().any(|c| c["id"] == id.to_hex().as_str())
}

#[test]
fn receipts_carry_proofs_and_the_device_keeps_the_newest_checkpoint() {
    let server = TestServer::start_with_election(5);
    let codes = server.invite(&PRECINCTS, 2);
    let store = tempfile::tempdir().unwrap();
    let cli = Hattama::new(store.path());
    let enrolled = cli.run(&["enroll", &server.url, &codes[0], "--json"]).ok_json();
    let key = LogKey::from_vkey(enrolled["log_key"].as_str().unwrap()).unwrap();
    let other_store = tempfile::tempdir().unwrap();
    let other = open_client(other_store.path());
    other.enroll(&server.url, &codes[1]).unwrap();

    let client = open_client(store.path());
    let mut mine = Vec::new();
    for round in 0..3 {
        // Another device's captures enter the log between this device's syncs.
        capture(&other, 100 + round * 10, 2);
        sync(&other);
        mine.extend(capture(&client, round * 10, 2));
        let kept = sync(&client);
        assert_eq!(kept, server_checkpoint(&server.url, &key).size, "round {round}");
        assert_eq!(kept, 4 * (u64::from(round) + 1));
    }
    // Each receipt carries its entry and a proof that verifies under the pinned log key, and
    // the core checks it again on demand.
    let mut indexes = Vec::new();
    for id in &mine {
        let (receipt, _) = client.verify_receipt(&id.to_hex()).unwrap();
        let log = receipt.log.as_ref().expect("the receipt has its place in the log");
        let entry = LogEntry::from_bytes(log.entry.as_bytes()).unwrap();
        assert_eq!(entry.capture_id, *id);
        let cp = TlogProof::from_text(&log.proof).unwrap().verify(&entry, &key).unwrap();
        assert!(log.index < cp.size);
        indexes.push(log.index);
    }
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), mine.len(), "one entry per capture");

    // A contact with nothing to send still follows the log.
    capture(&other, 200, 3);
    sync(&other);
    let summary = cli.run(&["sync", "--json"]).ok_json();
    assert_eq!(summary["log_size"], 15, "{summary}");
    let status = cli.run(&["status", "--json"]).ok_json();
    assert_eq!(status["log_key"].as_str(), Some(key.vkey.as_str()), "{status}");
    assert_eq!(status["log_checkpoint"]["size"], 15, "{status}");
    assert_eq!(status["log_alarm"], Value::Null, "{status}");
    let text = cli.run(&["status"]);
    assert!(text.stdout.contains("log      checkpoint of 15 entries verified"), "{text:?}");
    let shown = cli.run(&["show", &mine[0].to_hex(), "--json"]).ok_json();
    assert!(
        shown["receipt"]["log"]["proof"].as_str().unwrap().starts_with("c2sp.org/tlog-proof@v1")
    );
}

/// A device that synced with a server, the server's data directory copied at that point, and
/// the device synced again with the original, so it keeps a checkpoint the copy never signed.
struct Forkable {
    data: tempfile::TempDir,
    copy: tempfile::TempDir,
    listen: String,
    url: String,
    store: tempfile::TempDir,
    client: Client,
    key: LogKey,
    /// A second device, enrolled before the copy was taken.
    other_store: tempfile::TempDir,
    other: Client,
}

impl Forkable {
    /// The device syncs `before` captures, the server is stopped and copied, then the device
    /// syncs `after` more with the original, which is stopped again.
    fn new(before: u32, after: u32) -> Self {
        let data = tempfile::tempdir().unwrap();
        import_election(data.path(), &hattama_tests::fixtures::election("e2e", 5));
        let mut server = TestServer::start_on(data.path(), "127.0.0.1:0");
        let listen = server.addr.to_string();
        let codes = server.invite(&PRECINCTS, 2);
        let (store, other_store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let client = open_client(store.path());
        let key = client.enroll(&server.url, &codes[0]).unwrap().log_key.unwrap();
        let other = open_client(other_store.path());
        other.enroll(&server.url, &codes[1]).unwrap();
        capture(&client, 0, before);
        assert_eq!(sync(&client), u64::from(before));

        server.kill();
        let copy = tempfile::tempdir().unwrap();
        copy_dir(data.path(), copy.path());
        let mut server = TestServer::start_on(data.path(), &listen);
        capture(&client, 50, after);
        assert_eq!(sync(&client), u64::from(before + after));
        server.kill();
        let url = server.url.clone();
        Self { data, copy, listen, url, store, client, key, other_store, other }
    }

    /// Starts a server on the copy, at the address the device knows.
    fn serve_copy(&self) -> TestServer {
        TestServer::start_on(self.copy.path(), &self.listen)
    }

    /// Runs `hattama sync --json` for the device with a new capture waiting; checks the loud
    /// alarm, that the capture was neither sent nor receipted, and returns the stored alarm.
    fn sync_expecting_alarm(&self, code: &str, headline: &str, sizes: (u64, u64)) -> Value {
        let waiting = capture(&self.client, 90, 1)[0];
        let cli = Hattama::new(self.store.path());
        let run = cli.run(&["sync", "--json"]);
        println!(
            "hattama sync: exit {:?}\nstderr:\n{}stdout:\n{}",
            run.code, run.stderr, run.stdout
        );
        assert_eq!(run.code, Some(10), "{run:?}");
        assert!(run.stderr.contains(headline), "{run:?}");
        assert!(run.stderr.contains("Nothing was marked receipted"), "{run:?}");
        let answer = run.json();
        assert_eq!(answer["error"], code, "{answer}");
        assert_eq!(
            (answer["old_size"].as_u64(), answer["new_size"].as_u64()),
            (Some(sizes.0), Some(sizes.1))
        );

        let state = self.client.resolve(&waiting.to_hex()).unwrap().state;
        assert!(matches!(state, CaptureState::Captured | CaptureState::Queued), "{state:?}");
        assert!(!server_has(self.copy.path(), &waiting), "nothing is sent to that server");

        // The alarm stays: the next sync stops at once with it, whatever the server does now.
        let err = self.client.sync(&NoProgress, &CancelToken::new()).unwrap_err();
        assert!(matches!(&err, Error::Sync(e) if e.is_log_alarm()), "{err:?}");
        assert_eq!(cli.run(&["sync"]).code, Some(10));
        let status = cli.run(&["status", "--json"]).ok_json();
        let text = cli.run(&["status"]);
        println!("hattama status:\n{}", text.stdout);
        assert!(text.stdout.starts_with("ALARM "), "{text:?}");
        // Both signed checkpoints are kept as evidence.
        let alarm = status["log_alarm"].clone();
        let old =
            verify_checkpoint(alarm["old_checkpoint"].as_str().unwrap().as_bytes(), &self.key);
        let new =
            verify_checkpoint(alarm["new_checkpoint"].as_str().unwrap().as_bytes(), &self.key);
        assert_eq!((old.unwrap().size, new.unwrap().size), sizes, "{alarm}");
        assert_eq!(self.client.resolve(&waiting.to_hex()).unwrap().state, state);
        alarm
    }
}

/// The fork: the copy gets other captures until its log is at least as long as the one the
/// device saw, with different entries after the copy point.
fn fork(extra_on_copy: u32, expected_new_size: u64) {
    let f = Forkable::new(3, 2);
    let copy = f.serve_copy();
    assert_eq!(copy.url, f.url, "same address, so the device's URL stays valid");
    // The second device never saw the original's later entries: it syncs with the copy fine.
    capture(&f.other, 300, extra_on_copy);
    assert_eq!(sync(&f.other), expected_new_size);
    let alarm = f.sync_expecting_alarm(
        "log_forked",
        "ALARM: the server's public log forked or was rewritten",
        (5, expected_new_size),
    );
    assert_eq!(alarm["kind"], "forked", "{alarm}");
    // Not this device's doing: its earlier receipts stand (they verify as stored).
    for r in f.client.list().unwrap().iter().filter(|r| r.state == CaptureState::Receipted) {
        f.client.verify_receipt(&r.id.to_hex()).unwrap();
    }
    assert!(f.data.path().exists() && f.other_store.path().exists());
}

#[test]
fn a_fork_with_a_longer_log_raises_the_alarm() {
    fork(3, 6);
}

#[test]
fn a_fork_of_the_same_size_raises_the_alarm() {
    fork(2, 5);
}

#[test]
fn a_log_that_shrank_raises_the_alarm() {
    let f = Forkable::new(3, 2);
    let _copy = f.serve_copy();
    let alarm =
        f.sync_expecting_alarm("log_shrank", "ALARM: the server's public log shrank", (5, 3));
    assert_eq!(alarm["kind"], "shrank", "{alarm}");
    // The core's typed error says the same.
    let err = f.client.sync(&NoProgress, &CancelToken::new()).unwrap_err();
    assert!(
        matches!(err, Error::Sync(SyncError::LogShrank { old_size: 5, new_size: 3 })),
        "{err:?}"
    );
}
