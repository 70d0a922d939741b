//! [Log] server side: receipts carry verifiable proofs, tiles and checkpoints are served as
//! immutable files, and the server never signs two different checkpoints for one size, however
//! often it is killed while integrating.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hattama_core::log::{self, LogEntry, LogKey, TlogProof, hash_from_base64};
use hattama_core::receipt::SignedReceipt;
use hattama_tests::GO_IMAGE;
use hattama_tests::backend::read_object;
use hattama_tests::raw::{RawDevice, clean_photo};
use hattama_tests::server::{TestServer, import_election};
use rand::Rng;
use serde_json::Value;

fn photo() -> PathBuf {
    PathBuf::from(format!("{GO_IMAGE}/testdata/video-001.q50.420.jpeg"))
}

fn log_key(url: &str) -> LogKey {
    let v: Value = reqwest::blocking::get(format!("{url}/api/v1/log/key")).unwrap().json().unwrap();
    LogKey::from_vkey(v["vkey"].as_str().unwrap()).unwrap()
}

#[test]
fn receipts_carry_proofs_and_tiles_are_immutable_files() {
    // One device sends 300 captures of one precinct: more than its quota allows an observer.
    let server = TestServer::start_with(
        &hattama_tests::fixtures::election("e2e", 3),
        &[("HATTAMA__LIMITS__MAX_CAPTURES_PER_PRECINCT", "1000")],
    );
    let code = &server.invite(&["p0001"], 1)[0];
    let mut device = RawDevice::new(31);
    let enrolled = device.enroll(&server.url, code);
    let key = LogKey::from_vkey(enrolled.body["log_key"].as_str().unwrap()).unwrap();
    assert_eq!(key, log_key(&server.url));
    let (bytes, info) = clean_photo(&photo());
    let mut last = None;
    for i in 0..300 {
        let signed = device.sign("p0001", &info);
        let answer = device.upload(&server.url, &signed, &bytes);
        assert_eq!(answer.status, 200, "{i}: {answer:?}");
        if i % 37 == 0 || i == 299 {
            let receipt: SignedReceipt = serde_json::from_value(answer.body).unwrap();
            let l = receipt.log.expect("receipt carries its log entry");
            let entry = LogEntry::from_bytes(l.entry.as_bytes()).unwrap();
            assert_eq!(entry.capture_id, signed.hash());
            assert_eq!(entry.photo_sha256, info.sha256);
            let proof = TlogProof::from_text(&l.proof).unwrap();
            assert_eq!(proof.index, l.index);
            let cp = proof.verify(&entry, &key).unwrap();
            assert!(cp.size > l.index);
            last = Some(cp);
        }
    }
    let last = last.unwrap();
    // The checkpoint object is what the server serves.
    let served = reqwest::blocking::get(format!("{}/log/checkpoint", server.url)).unwrap();
    assert_eq!(served.headers()["cache-control"], "no-cache");
    let cp = log::verify_checkpoint(&served.bytes().unwrap(), &key).unwrap();
    assert_eq!(cp.size, 300);
    assert!(cp.size >= last.size);
    // Full and partial tiles, and entry bundles, with immutable cache headers.
    for path in [
        "tile/0/000",
        "tile/0/001.p/44",
        "tile/entries/000",
        "tile/entries/001.p/44",
        "tile/1/000.p/1",
    ] {
        let r = reqwest::blocking::get(format!("{}/log/{path}", server.url)).unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        assert_eq!(r.headers()["cache-control"], "public, max-age=31536000, immutable", "{path}");
        let body = r.bytes().unwrap();
        let kept = read_object(&server.data_dir, &format!("log/{path}")).expect(path);
        assert_eq!(body.as_ref(), kept.as_slice(), "{path}");
    }
    let entries = read_object(&server.data_dir, "log/tile/entries/000").unwrap();
    assert_eq!(log::parse_entry_bundle(&entries).unwrap().len(), 256);
    for bad in ["tile/0/..%2F..%2Fkeys%2Flog.key", "tile/0/0000", "tile/9/000"] {
        let r = reqwest::blocking::get(format!("{}/log/{bad}", server.url)).unwrap();
        assert!(matches!(r.status().as_u16(), 400 | 404), "{bad}: {}", r.status());
    }
    // Consistency between two served sizes.
    let (proof, new) = consistency_from(&server.url, 100, &key);
    let old_root = {
        // The root at 100 is not served as a checkpoint; recompute it from the first entries.
        let bundle = read_object(&server.data_dir, "log/tile/entries/000").unwrap();
        let leaves: Vec<_> = log::parse_entry_bundle(&bundle).unwrap()[..100]
            .iter()
            .map(|e| tlog_root_leaf(e))
            .collect();
        merkle_root(&leaves)
    };
    log::verify_consistency(100, &old_root, new.size, &new.root, &proof).unwrap();
}

/// The server's consistency proof from `from` entries to its newest checkpoint, and that
/// checkpoint, verified under the log key.
fn consistency_from(url: &str, from: u64, key: &LogKey) -> (Vec<log::Hash>, log::Checkpoint) {
    let v: Value = reqwest::blocking::get(format!("{url}/api/v1/log/consistency?from={from}"))
        .unwrap()
        .json()
        .unwrap();
    let proof = v["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| hash_from_base64(h.as_str().unwrap()).unwrap())
        .collect();
    let checkpoint =
        log::verify_checkpoint(v["checkpoint"].as_str().unwrap().as_bytes(), key).unwrap();
    (proof, checkpoint)
}

fn tlog_root_leaf(entry: &[u8]) -> log::Hash {
    LogEntry::from_bytes(entry).unwrap().leaf_hash()
}

/// RFC 6962 root of a list of leaf hashes (independent of the code under test).
fn merkle_root(leaves: &[log::Hash]) -> log::Hash {
    use sha2::{Digest, Sha256};
    if leaves.len() == 1 {
        return leaves[0];
    }
    let k = leaves.len().next_power_of_two() / 2;
    let (l, r) = (merkle_root(&leaves[..k]), merkle_root(&leaves[k..]));
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l.0);
    h.update(r.0);
    log::Hash(h.finalize().into())
}

#[test]
fn no_two_checkpoints_for_one_size_across_sigkill_during_integration() {
    let data = tempfile::tempdir().unwrap();
    import_election(data.path(), &hattama_tests::fixtures::election("e2e", 3));
    // Uploads cut by the kills are abandoned, not resumed, and one device sends hundreds of
    // captures of one precinct: more than the per-device quotas allow an observer.
    let quotas = [
        ("HATTAMA__LIMITS__MAX_OPEN_UPLOADS", "100000"),
        ("HATTAMA__LIMITS__MAX_UPLOAD_BYTES_IN_FLIGHT", "100000000000"),
        ("HATTAMA__LIMITS__MAX_CAPTURES_PER_PRECINCT", "100000"),
    ];
    let mut server = TestServer::start_on_with(data.path(), "127.0.0.1:0", &quotas);
    let listen = server.addr.to_string();
    let url = server.url.clone();
    let key = log_key(&url);
    let code = server.invite(&["p0001"], 1).remove(0);
    let device = Arc::new(std::sync::Mutex::new(RawDevice::new(41)));
    assert_eq!(device.lock().unwrap().enroll(&url, &code).status, 200);
    let (bytes, info) = clean_photo(&photo());
    let bytes = Arc::new(bytes);

    // Every checkpoint any client ever saw: polled, and from receipts.
    let seen: Arc<std::sync::Mutex<BTreeMap<u64, Vec<Vec<u8>>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let record = {
        let seen = seen.clone();
        move |note: Vec<u8>, size: u64| {
            let mut s = seen.lock().unwrap();
            let notes = s.entry(size).or_default();
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
    };
    let poller = {
        let (stop, record, key, url) = (stop.clone(), record.clone(), key.clone(), url.clone());
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(r) = http.get(format!("{url}/log/checkpoint")).send()
                    && r.status().is_success()
                    && let Ok(b) = r.bytes()
                {
                    let cp = log::verify_checkpoint(&b, &key)
                        .expect("every served checkpoint is signed");
                    record(b.to_vec(), cp.size);
                }
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };

    let (_, mut rng) = hattama_tests::seeded_rng();
    let mut paused_kills = 0;
    for round in 0..20 {
        let sizes_before = seen.lock().unwrap().len();
        let uploading = Arc::new(AtomicBool::new(true));
        let uploaders: Vec<_> = (0..4)
            .map(|_| {
                let (device, bytes, info, url, uploading, record, key) = (
                    device.clone(),
                    bytes.clone(),
                    info.clone(),
                    url.clone(),
                    uploading.clone(),
                    record.clone(),
                    key.clone(),
                );
                std::thread::spawn(move || {
                    let http = RawDevice::new(41);
                    while uploading.load(Ordering::Relaxed) {
                        let signed = device.lock().unwrap().sign("p0001", &info);
                        let Ok(a) = http.try_upload(&url, &signed, &bytes) else {
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        };
                        if a.status == 200 {
                            let r: SignedReceipt = serde_json::from_value(a.body).unwrap();
                            let proof = TlogProof::from_text(&r.log.unwrap().proof).unwrap();
                            let cp = log::verify_checkpoint(&proof.checkpoint, &key).unwrap();
                            record(proof.checkpoint.clone(), cp.size);
                        }
                    }
                })
            })
            .collect();
        if round % 4 == 3 {
            // Deterministic: killed between a batch's commit and the publication of its files.
            server.kill();
            let (paused, lines) =
                TestServer::start_paused_with(data.path(), &listen, "log:after-commit", &quotas);
            server = paused;
            let reached = lines.recv_timeout(Duration::from_secs(30)).unwrap();
            assert_eq!(reached, "hattama-paused log:after-commit");
            paused_kills += 1;
        } else {
            // Killed at a random moment, but only once this server has published a checkpoint
            // of a new size: on a loaded machine a fixed pause may pass before any upload does.
            std::thread::sleep(Duration::from_millis(rng.gen_range(50..400)));
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while seen.lock().unwrap().len() == sizes_before {
                assert!(std::time::Instant::now() < deadline, "round {round}: no new checkpoint");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        server.kill();
        uploading.store(false, Ordering::Relaxed);
        for u in uploaders {
            u.join().unwrap();
        }
        server = TestServer::start_on_with(data.path(), &listen, &quotas);
    }
    // Let everything integrate, then stop watching.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    poller.join().unwrap();

    let final_cp = {
        let b = reqwest::blocking::get(format!("{url}/log/checkpoint")).unwrap().bytes().unwrap();
        log::verify_checkpoint(&b, &key).unwrap()
    };
    let seen = seen.lock().unwrap();
    // Batches grow with the load, so a fast integrator publishes fewer, larger checkpoints.
    assert!(seen.len() >= 10, "only {} checkpoint sizes seen", seen.len());
    assert_eq!(paused_kills, 5);
    for (size, notes) in seen.iter() {
        assert_eq!(notes.len(), 1, "two different checkpoints for size {size}");
        let cp = log::verify_checkpoint(&notes[0], &key).unwrap();
        if cp.size == final_cp.size {
            assert_eq!(cp.root, final_cp.root);
            continue;
        }
        let (proof, now) = consistency_from(&url, *size, &key);
        log::verify_consistency(cp.size, &cp.root, now.size, &now.root, &proof)
            .unwrap_or_else(|e| panic!("checkpoint {size} is not a prefix of the final tree: {e}"));
    }
    println!("{} checkpoint sizes seen, final size {}", seen.len(), final_cp.size);
    drop(server);
}
