//! [Operations] backups: `hattama-server backup` of a serving instance during a sync, and
//! `hattama-server restore` into a new directory that serves the same log, receipts and pages;
//! backups cut short or altered are refused, naming what is wrong.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hattama_core::receipt::SignedReceipt;
use hattama_core::store::CaptureState;
use hattama_core::sync::{CancelToken, NoProgress, SyncConfig};
use hattama_core::{CaptureRequest, Client, ClientConfig};
use hattama_tests::proxy::{FaultConfig, FaultProxy};
use hattama_tests::server::{TestServer, admin};
use hattama_tests::{Run, bin, copy_dir, posted_request, textured_jpeg};
use serde_json::Value;

const PRECINCTS: [&str; 5] = ["p0001", "p0002", "p0003", "p0004", "p0005"];

fn request(i: usize) -> CaptureRequest {
    posted_request(PRECINCTS[i % PRECINCTS.len()])
}

fn receipted(client: &Client) -> HashSet<String> {
    client
        .list()
        .unwrap()
        .into_iter()
        .filter(|r| r.state == CaptureState::Receipted)
        .map(|r| r.id.to_hex())
        .collect()
}

fn get(url: &str) -> (u16, Vec<u8>) {
    let r = reqwest::blocking::get(url).unwrap();
    (r.status().as_u16(), r.bytes().unwrap().to_vec())
}

/// Waits until the checkpoint served at `url` has `size` entries.
fn wait_log(url: &str, size: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, note) = get(&format!("{url}/log/checkpoint"));
        let now: u64 = String::from_utf8(note).unwrap().lines().nth(1).unwrap().parse().unwrap();
        if now == size {
            return;
        }
        assert!(Instant::now() < deadline, "the log at {url} stays at {now}, not {size}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn audit_clean(url: &str, size: u64) {
    let key: Value =
        reqwest::blocking::get(format!("{url}/api/v1/log/key")).unwrap().json().unwrap();
    let run: Run = Command::new(bin("hattama"))
        .args(["audit", &format!("{url}/log"), "--key", key["vkey"].as_str().unwrap()])
        .args(["--photos", "--json"])
        .output()
        .unwrap()
        .into();
    let report = run.ok_json();
    assert_eq!(report["problem_count"], 0, "{run:?}");
    assert_eq!(report["size"], size, "{run:?}");
    assert_eq!(report["evidence_checked"], size, "{run:?}");
}

fn stored_ids(data_dir: &Path) -> HashSet<String> {
    admin(data_dir, &["capture", "list", "--json"])
        .ok_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// `hattama-server restore SRC DIR ARGS...`.
fn restore(src: &Path, dir: &Path, args: &[&str]) -> Run {
    Command::new(bin("hattama-server"))
        .arg("restore")
        .arg(src)
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
        .into()
}

/// A damaged copy of a backup: its name, what damages it, what the refusal must name.
type Damage<'a> = (&'a str, &'a dyn Fn(&Path), &'a str);

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn a_backup_taken_during_a_sync_restores_an_instance_with_every_receipted_capture() {
    let server = TestServer::start_with_election(5);
    // Every chunk is held up to 40 ms: the sync of 100 captures takes several seconds, and the
    // backup is taken in its middle.
    let proxy = FaultProxy::start(
        server.addr,
        FaultConfig {
            delay_probability: 1.0,
            max_delay: Duration::from_millis(40),
            ..FaultConfig::none()
        },
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    let config = ClientConfig {
        sync: SyncConfig {
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(300),
            ..SyncConfig::default()
        },
        ..ClientConfig::default()
    };
    let client = Arc::new(Client::open(store.path(), &hattama_tests::test_key(), config).unwrap());
    client.enroll(&proxy.url(), &server.invite(&PRECINCTS, 1)[0]).unwrap();
    // Small photos (kept in the server's database) and large ones (files), mixed.
    for i in 0..100 {
        let side = if i % 3 == 0 { 700 } else { 120 };
        client.capture(&textured_jpeg(side, side * 3 / 4, i as u32 + 1, 90), &request(i)).unwrap();
    }
    let sync = {
        let client = client.clone();
        std::thread::spawn(move || client.sync(&NoProgress, &CancelToken::new()))
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while receipted(&client).len() < 30 {
        assert!(Instant::now() < deadline, "the sync did not get 30 receipts");
        std::thread::sleep(Duration::from_millis(20));
    }
    let held_before = receipted(&client);
    let backups = tempfile::tempdir().unwrap();
    let dest = backups.path().join("b1");
    let run = admin(&server.data_dir, &["backup", dest.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(!sync.is_finished(), "the backup was not taken during the sync");
    let summary = sync.join().unwrap().unwrap();
    assert_eq!(summary.remaining, 0, "{summary:?}");
    let m1 = manifest(&dest);
    let in_backup = m1["captures"].as_u64().unwrap();
    println!(
        "backup during the sync: {} receipts held before it, {in_backup} captures in it, {}",
        held_before.len(),
        run.stdout.trim()
    );
    assert!(in_backup >= held_before.len() as u64 && in_backup < 100, "{m1}");
    assert_eq!(m1["with_keys"], false);
    assert!(!dest.join("keys").exists(), "no key without --with-keys");

    // Without the keys, restore says where they must come from; with them, it restores.
    let restored = backups.path().join("restored1");
    let refused = restore(&dest, &restored, &[]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("--keys"), "{refused:?}");
    assert!(!restored.exists());
    let keys = server.data_dir.join("keys");
    let run = restore(&dest, &restored, &["--keys", keys.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let stored = stored_ids(&restored);
    assert_eq!(stored.len() as u64, in_backup);
    let lost: Vec<_> = held_before.difference(&stored).collect();
    assert!(lost.is_empty(), "receipted before the backup, missing after restore: {lost:?}");
    {
        let copy = TestServer::start_on(&restored, "127.0.0.1:0");
        // The log of the copy grows to every capture in it (those the backup caught between
        // two checkpoints are integrated by the restored server).
        wait_log(&copy.url, in_backup);
        audit_clean(&copy.url, in_backup);
        for id in &held_before {
            let (receipt, _) = client.receipt(id).unwrap().unwrap();
            let (status, body) = get(&format!("{}/api/v1/receipts/{id}", copy.url));
            assert_eq!(status, 200, "receipt of {id}");
            let served: SignedReceipt = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                (&served.receipt, &served.signature),
                (&receipt.receipt, &receipt.signature),
                "the same signed receipt for {id}"
            );
            assert_eq!(served.log.map(|l| l.index), receipt.log.map(|l| l.index));
        }
    }

    // After the sync, a second backup into the same directory copies only the new photos;
    // restored with the keys it carries, it serves the same log and pages as the original.
    let run = admin(&server.data_dir, &["backup", dest.to_str().unwrap(), "--with-keys"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains("PRIVATE SIGNING KEYS"), "a loud warning: {run:?}");
    assert!(run.stdout.contains("already there"), "{run:?}");
    let kept: u64 = run
        .stdout
        .split(" photos copied, ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(kept >= 10, "the first backup's photos are kept: {run:?}");
    let m2 = manifest(&dest);
    assert_eq!(m2["captures"], 100);
    let restored2 = backups.path().join("restored2");
    let run = restore(&dest, &restored2, &[]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(stored_ids(&restored2), receipted(&client));
    let copy = TestServer::start_on(&restored2, "127.0.0.1:0");
    wait_log(&server.url, 100);
    wait_log(&copy.url, 100);
    audit_clean(&copy.url, 100);
    for path in [
        "/log/checkpoint",
        "/api/v1/log/key",
        "/api/v1/elections/e2e/precincts",
        "/api/v1/elections/e2e/export/precincts.csv",
        "/api/v1/elections/e2e/export/evidence.jsonl",
    ] {
        assert_eq!(
            get(&format!("{}{path}", server.url)),
            get(&format!("{}{path}", copy.url)),
            "{path}"
        );
    }

    // Damaged backups are refused with what is wrong, and leave no directory behind.
    let blob = m2["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .find(|p| p.starts_with("blobs/"))
        .unwrap();
    let tile = m2["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .find(|p| p.starts_with("log/tile/0/"))
        .unwrap();
    let cases: [Damage; 5] = [
        ("no-manifest", &|d| std::fs::remove_file(d.join("manifest.json")).unwrap(), "incomplete"),
        ("no-tile", &|d| std::fs::remove_file(d.join(&tile)).unwrap(), &tile),
        (
            "photo-changed",
            &|d| {
                let path = d.join(&blob);
                let mut bytes = std::fs::read(&path).unwrap();
                let n = bytes.len() / 2;
                bytes[n] ^= 1;
                std::fs::write(&path, bytes).unwrap();
            },
            &blob,
        ),
        (
            "database-changed",
            &|d| {
                let db = rusqlite::Connection::open(d.join("hattama-server.sqlite3")).unwrap();
                db.execute("UPDATE captures SET precinct = 'p0002' WHERE rowid = 1", []).unwrap();
            },
            "hattama-server.sqlite3: its SHA-256 is not the manifest's",
        ),
        (
            "keys-swapped",
            &|d| {
                let (a, b) = (d.join("keys/log.key"), d.join("keys/receipt.key"));
                let (ka, kb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
                std::fs::write(&a, kb).unwrap();
                std::fs::write(&b, ka).unwrap();
            },
            "keys/log.key",
        ),
    ];
    for (name, damage, needle) in cases {
        let copy_dir_path = backups.path().join(name);
        copy_dir(&dest, &copy_dir_path);
        damage(&copy_dir_path);
        let target = backups.path().join(format!("{name}-restored"));
        let run = restore(&copy_dir_path, &target, &[]);
        assert_eq!(run.code, Some(1), "{name}: {run:?}");
        assert!(run.stderr.contains(needle), "{name}: {needle:?} in {}", run.stderr);
        assert!(!target.exists(), "{name}: nothing restored");
    }
    // A directory in use is never written over.
    let run = restore(&dest, &restored2, &[]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("not empty"), "{run:?}");
}
