//! `hattama-witness` as a partner organisation runs it: the real binary on a random port,
//! driven over HTTP exactly as C2SP `tlog-witness` says, including forks and SIGKILLs.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use hattama_core::log::Hash;
use hattama_core::witness::{
    AddCheckpoint, Answer, Policy, SIZE_CONTENT_TYPE, add_signature_lines, read_answer,
};
use hattama_tests::witness::{TestLog, TestWitness, witness_cmd};
use rand::Rng;
use serde_json::Value;

const ORIGIN: &str = "hattama.test/log";

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().expect("client")
}

fn log_of(n: u64, tag: &str) -> TestLog {
    let mut log = TestLog::new(ORIGIN, 7);
    for i in 0..n {
        log.append(format!("{tag} entry {i}").as_bytes());
    }
    log
}

/// A log with the same key whose entries are those of `log_of(_, "honest")` up to `common`,
/// then different: what a server would show if it forked.
fn fork_of(n: u64, common: u64) -> TestLog {
    let mut log = TestLog::new(ORIGIN, 7);
    for i in 0..n {
        let tag = if i < common { "honest" } else { "fork" };
        log.append(format!("{tag} entry {i}").as_bytes());
    }
    log
}

fn send(w: &TestWitness, req: &AddCheckpoint) -> (u16, Option<String>, Vec<u8>) {
    w.add_checkpoint(&http(), req).expect("the witness answers")
}

fn error_code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).expect("a JSON error body");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v["error"].as_str().expect("error code").to_owned()
}

#[test]
fn add_checkpoint_answers_every_case_as_the_spec_says() {
    let honest = log_of(8, "honest");
    let mut w = TestWitness::start("witness.test/a", &[&honest.log]);
    let http = http();

    // First sight: old 0, no proof. 200 with a cosignature over the checkpoint.
    let first = honest.request(0, 3);
    let (status, _, body) = send(&w, &first);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let Answer::Cosigned { line, time } = read_answer(200, None, &body, &first, &w.key).unwrap()
    else {
        panic!("no cosignature in {body:?}")
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(time <= now && time + 60 > now, "cosigned at {time}, now {now}");
    let cosigned = add_signature_lines(&first.checkpoint, &[line]).unwrap();
    let policy = Policy::parse(
        format!("log {}\nwitness A {}\nquorum A\n", honest.log.vkey, w.key.vkey()).as_bytes(),
    )
    .unwrap();
    let v = policy.verify_checkpoint(&cosigned).unwrap();
    assert!(v.quorum && v.checkpoint.size == 3, "{v:?}");
    assert!(!policy.verify_checkpoint(&first.checkpoint).unwrap().quorum);

    // 404: a log it does not witness.
    let stranger = TestLog::new("other.test/log", 9);
    let mut s = stranger;
    s.append(b"x");
    let (status, _, body) = send(&w, &s.request(0, 1));
    assert_eq!((status, error_code(&body).as_str()), (404, "unknown_log"));

    // 403: the right origin signed by another key.
    let mut impostor = TestLog::new(ORIGIN, 8);
    for i in 0..5 {
        impostor.append(format!("honest entry {i}").as_bytes());
    }
    let (status, _, body) = send(&w, &impostor.request(3, 5));
    assert_eq!((status, error_code(&body).as_str()), (403, "bad_signature"));

    // 409: a stale old size; the body is the latest size, typed text/x.tlog.size.
    let stale = honest.request(0, 5);
    let (status, ct, body) = send(&w, &stale);
    assert_eq!((status, ct.as_deref(), &body[..]), (409, Some(SIZE_CONTENT_TYPE), &b"3\n"[..]));
    assert_eq!(
        read_answer(409, ct.as_deref(), &body, &stale, &w.key),
        Ok(Answer::Conflict { size: 3 })
    );

    // 400: the old size above the checkpoint's; a body that is not a request.
    let (status, _, body) = send(&w, &AddCheckpoint { old_size: 4, ..honest.request(0, 3) });
    assert_eq!((status, error_code(&body).as_str()), (400, "bad_request"));
    let resp = http.post(format!("{}/add-checkpoint", w.url)).body("hello").send().unwrap();
    assert_eq!(resp.status().as_u16(), 400);

    // 422: a proof that does not verify.
    let mut bad = honest.request(3, 5);
    bad.proof[0].0[0] ^= 1;
    let (status, _, body) = send(&w, &bad);
    assert_eq!((status, error_code(&body).as_str()), (422, "bad_proof"));

    // 409: the same size with another root (a fork at the witness's size).
    let fork = fork_of(5, 2);
    let (status, ct, body) = send(&w, &fork.request(3, 3));
    assert_eq!((status, ct.as_deref(), &body[..]), (409, Some(SIZE_CONTENT_TYPE), &b"3\n"[..]));

    // The same checkpoint again is cosigned again; then the log grows.
    assert_eq!(send(&w, &honest.request(3, 3)).0, 200);
    assert_eq!(send(&w, &honest.request(3, 5)).0, 200);

    // Monitoring: the latest cosigned checkpoint, with the cosignature, survives a restart.
    w.kill();
    w.restart(None);
    let logs: Value = http.get(format!("{}/logs", w.url)).send().unwrap().json().unwrap();
    assert_eq!(logs[0]["origin"], ORIGIN);
    assert_eq!(logs[0]["size"], 5);
    let note = http
        .get(format!("{}/checkpoint", w.url))
        .query(&[("origin", ORIGIN)])
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(note, logs[0]["checkpoint"].as_str().unwrap().as_bytes());
    let v = policy.verify_checkpoint(&note).unwrap();
    assert!(v.quorum && v.checkpoint.size == 5, "{v:?}");
    assert_eq!(v.cosignatures[0].witness, "A");
    let id: Value = http.get(&w.url).send().unwrap().json().unwrap();
    assert_eq!(id["vkey"], w.key.vkey());
    let run = witness_cmd(&w.dir, &["logs"]);
    assert!(run.stdout.contains(&format!("{ORIGIN} size 5")), "{run:?}");
    // The bad proof and the fork at size 3 were kept as evidence.
    assert_eq!(logs[0]["refused"], 2);
}

#[test]
fn a_forked_log_never_reaches_a_quorum() {
    let honest = log_of(12, "honest");
    let fork = fork_of(12, 6);
    let names = ["witness.test/x", "witness.test/y", "witness.test/z"];
    let ws: Vec<TestWitness> =
        names.iter().map(|n| TestWitness::start(n, &[&honest.log])).collect();
    let policy = Policy::parse(
        format!(
            "log {}\nwitness X {}\nwitness Y {}\nwitness Z {}\ngroup G 2 X Y Z\nquorum G\n",
            honest.log.vkey,
            ws[0].key.vkey(),
            ws[1].key.vkey(),
            ws[2].key.vkey()
        )
        .as_bytes(),
    )
    .unwrap();
    // Every witness has cosigned the honest log at 8.
    for w in &ws {
        assert_eq!(send(w, &honest.request(0, 8)).0, 200);
    }
    // The fork, from every size a client could claim: refused with 409 or 422 by every witness.
    let mut lines = Vec::new();
    for w in &ws {
        for (old, n) in [(0, 10), (8, 10), (8, 8), (6, 10), (10, 12)] {
            let req = fork.request(old, n);
            let (status, ct, body) = send(w, &req);
            assert!(status == 409 || status == 422, "{old}->{n}: {status}");
            if status == 409 {
                assert_eq!((ct.as_deref(), &body[..]), (Some(SIZE_CONTENT_TYPE), &b"8\n"[..]));
            }
            assert!(!matches!(
                read_answer(status, ct.as_deref(), &body, &req, &w.key),
                Ok(Answer::Cosigned { .. })
            ));
        }
        // And the honest log goes on.
        let req = honest.request(8, 12);
        let (status, _, body) = send(w, &req);
        assert_eq!(status, 200);
        if let Ok(Answer::Cosigned { line, .. }) = read_answer(200, None, &body, &req, &w.key) {
            lines.push(line);
        }
    }
    let honest_note = add_signature_lines(&honest.checkpoint(12), &lines).unwrap();
    assert!(policy.verify_checkpoint(&honest_note).unwrap().quorum);
    // The fork's checkpoint with the honest cosignatures moved onto it: they do not verify.
    let moved = [fork.checkpoint(12), honest_note[honest.checkpoint(12).len()..].to_vec()].concat();
    let v = policy.verify_checkpoint(&moved).unwrap();
    assert!(!v.quorum && v.cosignatures.is_empty(), "{v:?}");
}

/// Sends `req`; `None` when the witness was not reachable or died during the request.
fn try_send(w: &TestWitness, req: &AddCheckpoint) -> Option<(u16, Option<String>, Vec<u8>)> {
    w.add_checkpoint(&http(), req).ok()
}

#[test]
fn sigkill_at_any_moment_never_cosigns_two_roots_for_one_size() {
    let (seed, mut rng) = hattama_tests::seeded_rng();
    const N: u64 = 400;
    let honest = log_of(N, "honest");
    let fork = fork_of(N, rng.gen_range(1..40));
    let mut w = TestWitness::start("witness.test/k", &[&honest.log]);
    let mut believed = 0u64; // what the client thinks the witness's size is
    let mut cosigned: BTreeMap<u64, Hash> = BTreeMap::new();
    let (mut kills, mut answered, mut lost) = (0, 0, 0);
    for _ in 0..200 {
        if w.exited() {
            w.restart(None);
        }
        // A SIGKILL some time into this request (or after it), one call in three.
        let killer = rng.gen_bool(1.0 / 3.0).then(|| {
            let pid = w.pid().expect("running");
            let delay = Duration::from_micros(rng.gen_range(0..20_000));
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
            })
        });
        let log = if rng.gen_bool(0.3) { &fork } else { &honest };
        let n = (believed + rng.gen_range(0..6)).clamp(1, N);
        let old = if rng.gen_bool(0.1) { rng.gen_range(0..=n) } else { believed.min(n) };
        let req = log.request(old, n);
        match try_send(&w, &req) {
            None => lost += 1,
            Some((status, ct, body)) => {
                answered += 1;
                match read_answer(status, ct.as_deref(), &body, &req, &w.key).unwrap() {
                    Answer::Cosigned { .. } => {
                        let root = log.root(n);
                        if let Some(r) = cosigned.insert(n, root) {
                            assert_eq!(r, root, "two roots cosigned for size {n} (seed {seed})");
                        }
                        // Never anything that does not extend what was cosigned before.
                        for (&m, r) in cosigned.range(..n) {
                            assert_eq!(*r, log.root(m), "cosigned {n} inconsistent with {m}");
                        }
                        believed = n;
                    }
                    Answer::Conflict { size } => believed = size,
                    Answer::Refused { status, .. } => {
                        assert!([400, 422].contains(&status), "status {status} (seed {seed})")
                    }
                }
            }
        }
        if let Some(k) = killer {
            k.join().unwrap();
            kills += 1;
            // Reap it; a kill that came after the process had answered still kills it.
            while !w.exited() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    println!(
        "{kills} kills, {answered} answers, {lost} requests lost, {} sizes cosigned",
        cosigned.len()
    );
    assert!(kills >= 30 && lost >= 1 && cosigned.len() >= 5, "the test exercised too little");
    // The witness's own record agrees: one root per size, all of one log.
    if w.exited() {
        w.restart(None);
    }
    let latest = *cosigned.keys().last().unwrap();
    let (status, ..) = send(&w, &honest.request(latest, latest));
    let winner = if status == 200 { &honest } else { &fork };
    for (&n, r) in &cosigned {
        assert_eq!(*r, winner.root(n), "size {n} (seed {seed})");
    }
}

#[test]
fn sigkill_at_the_named_pause_points() {
    let honest = log_of(10, "honest");
    let fork = fork_of(10, 2);
    for (point, stored) in [("witness:before-commit", false), ("witness:after-commit", true)] {
        let mut w = TestWitness::start("witness.test/p", &[&honest.log]);
        assert_eq!(send(&w, &honest.request(0, 3)).0, 200);
        w.kill();
        let lines = w.restart(Some(point)).unwrap();
        let url = w.url.clone();
        let body = honest.request(3, 6).to_bytes();
        let sender = std::thread::spawn(move || {
            http().post(format!("{url}/add-checkpoint")).body(body).send().map(|r| r.status())
        });
        loop {
            let line = lines.recv_timeout(Duration::from_secs(20)).expect("the witness pauses");
            if line.contains(&format!("hattama-paused {point}")) {
                break;
            }
        }
        w.kill();
        assert!(sender.join().unwrap().is_err(), "no answer from a killed witness");
        w.restart(None);
        // Before the commit nothing was stored: the witness is still at 3. After it, at 6 (the
        // client never got that cosignature, and gets one again for the same tree).
        let (status, _, body) = send(&w, &honest.request(0, 6));
        let size = if stored { "6\n" } else { "3\n" };
        assert_eq!((status, &body[..]), (409, size.as_bytes()), "{point}");
        let old = if stored { 6 } else { 3 };
        // The fork of the same size is refused either way.
        assert!([409, 422].contains(&send(&w, &fork.request(old, 6)).0), "{point}");
        assert_eq!(send(&w, &honest.request(old, 6)).0, 200, "{point}");
    }
}

/// Runs the independent Python verifier (`tests/witness-py/verify.py`) on a checkpoint.
fn python_verify(note: &[u8], log: &str, witnesses: &[String]) -> (bool, Value) {
    use std::io::Write;
    let root = hattama_tests::browser::repo_root();
    let python = root.join("build/witness-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test installs `cryptography` into that virtual environment from \
         tests/witness-py/requirements.txt",
        python.display()
    );
    let mut child = std::process::Command::new(python)
        .arg(root.join("tests/witness-py/verify.py"))
        .arg(log)
        .args(witnesses)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python");
    child.stdin.take().expect("stdin").write_all(note).expect("write to python");
    let out = child.wait_with_output().expect("python ends");
    let ok = out.status.success();
    let v = if ok { serde_json::from_slice(&out.stdout).expect("JSON") } else { Value::Null };
    (ok, v)
}

#[test]
fn an_independent_python_verifier_agrees_on_the_cosignatures() {
    let honest = log_of(20, "honest");
    let ws: Vec<TestWitness> = ["witness.test/py1", "witness.test/py2", "witness.test/py3"]
        .iter()
        .map(|n| TestWitness::start(n, &[&honest.log]))
        .collect();
    let vkeys: Vec<String> = ws.iter().map(|w| w.key.vkey()).collect();
    let policy = Policy::parse(
        format!(
            "log {}\nwitness A {}\nwitness B {}\nwitness C {}\ngroup Q 2 A B C\nquorum Q\n",
            honest.log.vkey, vkeys[0], vkeys[1], vkeys[2]
        )
        .as_bytes(),
    )
    .unwrap();
    let mut note = Vec::new();
    for n in [5u64, 13, 20] {
        // Two of the three witnesses each time (a different pair), from their own sizes.
        let mut lines = Vec::new();
        for w in ws.iter().filter(|w| !(n == 13 && w.key.name().ends_with("py2"))) {
            let mut req = honest.request(0, n);
            let (mut status, mut ct, mut body) = send(w, &req);
            if let Answer::Conflict { size } =
                read_answer(status, ct.as_deref(), &body, &req, &w.key).unwrap()
            {
                // The client's 409 handling: resend from the witness's size.
                req = honest.request(size, n);
                (status, ct, body) = send(w, &req);
            }
            assert_eq!(status, 200);
            if let Answer::Cosigned { line, .. } =
                read_answer(status, ct.as_deref(), &body, &req, &w.key).unwrap()
            {
                lines.push(line);
            }
        }
        note = add_signature_lines(&honest.checkpoint(n), &lines).unwrap();
        let ours = policy.verify_checkpoint(&note).unwrap();
        let (ok, theirs) = python_verify(&note, &honest.log.vkey, &vkeys);
        assert!(ok, "the Python verifier refused a good checkpoint");
        assert_eq!(theirs["size"], n);
        let names: Vec<(String, u64)> = theirs["cosigned"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap().to_owned(), c["time"].as_u64().unwrap()))
            .collect();
        let expected: Vec<(String, u64)> =
            ours.cosignatures.iter().map(|c| (c.key_name.clone(), c.time)).collect();
        assert_eq!(names, expected, "size {n}");
        assert_eq!(names.len(), if n == 13 { 2 } else { 3 });
    }
    // A cosignature with one bit flipped verifies for neither.
    let text = String::from_utf8(note.clone()).unwrap();
    let last = text.trim_end().rsplit('\n').next().unwrap().to_owned();
    let (head, b64) = last.rsplit_once(' ').unwrap();
    use base64::Engine;
    let mut raw = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    raw[20] ^= 1;
    let flipped = text.replace(
        &last,
        &format!("{head} {}", base64::engine::general_purpose::STANDARD.encode(raw)),
    );
    let (ok, theirs) = python_verify(flipped.as_bytes(), &honest.log.vkey, &vkeys);
    assert!(ok);
    assert_eq!(theirs["cosigned"].as_array().unwrap().len(), 2);
    assert_eq!(policy.verify_checkpoint(flipped.as_bytes()).unwrap().cosignatures.len(), 2);
    // The cosignatures of 20 moved onto a checkpoint of another size: none verifies.
    let sigs = &note[honest.checkpoint(20).len()..];
    let moved = [honest.checkpoint(19), sigs.to_vec()].concat();
    let (ok, theirs) = python_verify(&moved, &honest.log.vkey, &vkeys);
    assert!(ok && theirs["cosigned"].as_array().unwrap().is_empty(), "{theirs}");
    // A checkpoint the log did not sign is refused outright.
    let (ok, _) = python_verify(&moved, &TestLog::new(ORIGIN, 99).log.vkey, &vkeys);
    assert!(!ok);
}

/// The server's cosigned checkpoint, once its size is `size` (waits up to 30 s).
fn cosigned_at(
    url: &str,
    policy: &Policy,
    size: u64,
) -> hattama_core::witness::WitnessedCheckpoint {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = reqwest::blocking::get(format!("{url}/log/cosigned-checkpoint")).expect("get");
        if r.status().as_u16() == 200 {
            let v = policy.verify_checkpoint(&r.bytes().expect("body")).expect("verifies");
            assert!(v.quorum, "the server serves a checkpoint without a quorum: {v:?}");
            if v.checkpoint.size == size {
                return v;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no cosigned checkpoint of size {size}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_server_gathers_a_quorum_and_receipts_never_wait_for_witnesses() {
    use hattama_tests::raw::{RawDevice, clean_photo};
    use hattama_tests::server::TestServer;
    let election = hattama_tests::fixtures::election("e2e", 3);
    let env = [("HATTAMA__LIMITS__MAX_CAPTURES_PER_PRECINCT", "1000")];
    // The first start makes the log's key.
    let mut first = TestServer::start_with(&election, &env);
    let v: Value =
        reqwest::blocking::get(format!("{}/api/v1/log/key", first.url)).unwrap().json().unwrap();
    let log_key = hattama_core::log::LogKey::from_vkey(v["vkey"].as_str().unwrap()).unwrap();
    first.kill();
    let mut ws: Vec<TestWitness> = ["witness.test/s1", "witness.test/s2", "witness.test/s3"]
        .iter()
        .map(|n| TestWitness::start(n, &[&log_key]))
        .collect();
    let policy_text = format!(
        "log {}\nwitness A {} {}\nwitness B {} {}\nwitness C {} {}\ngroup Q 2 A B C\nquorum Q\n",
        log_key.vkey,
        ws[0].key.vkey(),
        ws[0].url,
        ws[1].key.vkey(),
        ws[1].url,
        ws[2].key.vkey(),
        ws[2].url
    );
    let policy = Policy::parse(policy_text.as_bytes()).unwrap();
    let policy_file = first.data_dir.join("witnesses.policy");
    std::fs::write(&policy_file, &policy_text).unwrap();
    let policy_env = policy_file.display().to_string();
    let server = TestServer::start_on_with(
        &first.data_dir,
        "127.0.0.1:0",
        &[env[0], ("HATTAMA__WITNESS_POLICY", &policy_env)],
    );
    let code = &server.invite(&["p0001"], 1)[0];
    let mut device = RawDevice::new(41);
    assert_eq!(device.enroll(&server.url, code).status, 200);
    let (bytes, info) = clean_photo(&std::path::PathBuf::from(
        "/usr/share/go-1.19/src/image/testdata/video-001.q50.420.jpeg",
    ));
    let mut upload = |n: usize| {
        for _ in 0..n {
            let signed = device.sign("p0001", &info);
            assert_eq!(device.upload(&server.url, &signed, &bytes).status, 200);
        }
    };
    upload(20);
    let v = cosigned_at(&server.url, &policy, 20);
    assert!(v.cosignatures.len() >= 2, "{v:?}");
    // One witness killed: still a quorum.
    ws[0].kill();
    upload(10);
    let v = cosigned_at(&server.url, &policy, 30);
    assert_eq!(v.cosignatures.iter().map(|c| c.witness.as_str()).collect::<Vec<_>>(), ["B", "C"]);
    // Two killed: receipts still come, at once; nothing more is witnessed.
    ws[1].kill();
    let started = std::time::Instant::now();
    upload(10);
    println!("10 receipts with two witnesses down in {:?}", started.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(cosigned_at(&server.url, &policy, 30).checkpoint.size, 30);
    // The auditor checks the cosigned checkpoint (30) against the tree it recomputed (40).
    let log_url = format!("{}/log", server.url);
    let policy_arg = policy_file.to_str().unwrap();
    let run = audit(&[&log_url, "--key", &log_key.vkey, "--policy", policy_arg, "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let w = &run.json()["witnessed"];
    assert_eq!((w["size"].as_u64(), w["quorum"].as_bool()), (Some(30), Some(true)), "{run:?}");
    assert_eq!(w["consistent"], true);
    assert_eq!(w["cosignatures"].as_array().unwrap().len(), 2);
    // One comes back: the newest checkpoint is witnessed, without any new upload.
    ws[1].restart_same_port();
    let v = cosigned_at(&server.url, &policy, 40);
    assert!(v.cosignatures.len() >= 2, "{v:?}");
    let run = audit(&[&log_url, "--key", &log_key.vkey, "--policy", policy_arg]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("witnessed (quorum met): checkpoint of 40 entries"), "{run:?}");
    assert!(run.stdout.contains("B (witness.test/s2) at 20"), "{run:?}");

    // A fork: a second server with the same log key and other entries, asking the same
    // witnesses. Every one refuses it (its view is the first server's), so it never reaches a
    // quorum; its checkpoint is not witnessed for any verifier, and the auditor says so.
    ws[0].restart_same_port();
    let fork_tmp = tempfile::tempdir().unwrap();
    let fork_dir = fork_tmp.path().join("data");
    hattama_tests::server::import_election(&fork_dir, &election);
    std::fs::create_dir_all(fork_dir.join("keys")).unwrap();
    for f in std::fs::read_dir(first.data_dir.join("keys")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), fork_dir.join("keys").join(f.file_name())).unwrap();
    }
    let fork = TestServer::start_on_with(
        &fork_dir,
        "127.0.0.1:0",
        &[env[0], ("HATTAMA__WITNESS_POLICY", &policy_env)],
    );
    let code = &fork.invite(&["p0002"], 1)[0];
    let mut other = RawDevice::new(42);
    assert_eq!(other.enroll(&fork.url, code).status, 200);
    for _ in 0..45 {
        let signed = other.sign("p0002", &info);
        assert_eq!(other.upload(&fork.url, &signed, &bytes).status, 200);
    }
    std::thread::sleep(Duration::from_secs(3));
    let r = reqwest::blocking::get(format!("{}/log/cosigned-checkpoint", fork.url)).unwrap();
    assert_eq!(r.status().as_u16(), 404, "a forked log gathered cosignatures");
    let fork_cp =
        reqwest::blocking::get(format!("{}/log/checkpoint", fork.url)).unwrap().bytes().unwrap();
    let v = policy.verify_checkpoint(&fork_cp).unwrap();
    assert!(v.checkpoint.size == 45 && !v.quorum, "{v:?}");
    let fork_url = format!("{}/log", fork.url);
    let run = audit(&[&fork_url, "--key", &log_key.vkey, "--policy", policy_arg]);
    assert!(run.stdout.contains("not witnessed"), "{run:?}");
    // The witnesses still stand by the first server's tree.
    for w in &ws[1..] {
        let logs: Value =
            reqwest::blocking::get(format!("{}/logs", w.url)).unwrap().json().unwrap();
        assert_eq!(logs[0]["size"], 40, "{logs}");
        // And kept the fork's checkpoints as evidence.
        assert!(logs[0]["refused"].as_u64().unwrap() >= 1, "{logs}");
        let run = witness_cmd(&w.dir, &["logs"]);
        assert!(run.stdout.contains("evidence of a fork"), "{run:?}");
    }
}

/// `hattama audit ARGS...`.
fn audit(args: &[&str]) -> hattama_tests::Run {
    std::process::Command::new(hattama_tests::bin("hattama"))
        .arg("audit")
        .args(args)
        .output()
        .expect("run hattama audit")
        .into()
}

#[test]
fn the_server_refuses_a_witness_policy_it_cannot_use() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    hattama_tests::server::import_election(&dir, &hattama_tests::fixtures::election("e2e", 1));
    let other = TestLog::new("hattama.local/log", 3);
    let w = hattama_core::witness::Cosigner::new(
        "witness.test/v",
        ed25519_dalek::SigningKey::from_bytes(&[5; 32]),
    )
    .unwrap();
    let vkey = w.public().vkey();
    for (policy, says) in [
        (
            format!("log {}\nwitness A {vkey} http://127.0.0.1:9/\nquorum A\n", other.log.vkey),
            "add the line `log hattama.local/log+",
        ),
        ("witness A x\nquorum A\n".to_owned(), "line 1"),
        ("quorum none\n".to_owned(), "does not name this log"),
    ] {
        let file = tmp.path().join("policy");
        std::fs::write(&file, policy).unwrap();
        let out = std::process::Command::new(hattama_tests::bin("hattama-server"))
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen", "127.0.0.1:0", "serve"])
            .env("HATTAMA__WITNESS_POLICY", &file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says), "{says}: {stderr}");
        assert!(stderr.contains("witness_policy"), "{stderr}");
    }
}

/// A server (and the stopped first start that made its log key, which owns the data
/// directory) asking three real witnesses under a 2-of-3 policy (`witnesses.policy` in its
/// data directory): the server, the witnesses, the policy and its file.
struct Witnessed {
    _first: hattama_tests::server::TestServer,
    server: hattama_tests::server::TestServer,
    ws: Vec<TestWitness>,
    policy: Policy,
    policy_file: std::path::PathBuf,
    log_key: hattama_core::log::LogKey,
}

const QUOTA: (&str, &str) = ("HATTAMA__LIMITS__MAX_CAPTURES_PER_PRECINCT", "1000");

fn witnessed_server(election: &Value) -> Witnessed {
    use hattama_tests::server::TestServer;
    let mut first = TestServer::start_with(election, &[QUOTA]);
    let v: Value =
        reqwest::blocking::get(format!("{}/api/v1/log/key", first.url)).unwrap().json().unwrap();
    let log_key = hattama_core::log::LogKey::from_vkey(v["vkey"].as_str().unwrap()).unwrap();
    first.kill();
    let ws: Vec<TestWitness> = ["witness.test/d1", "witness.test/d2", "witness.test/d3"]
        .iter()
        .map(|n| TestWitness::start(n, &[&log_key]))
        .collect();
    let mut text = format!("log {}\n", log_key.vkey);
    for (name, w) in ["A", "B", "C"].iter().zip(&ws) {
        text += &format!("witness {name} {} {}\n", w.key.vkey(), w.url);
    }
    text += "group Q 2 A B C\nquorum Q\n";
    let policy = Policy::parse(text.as_bytes()).unwrap();
    let policy_file = first.data_dir.join("witnesses.policy");
    std::fs::write(&policy_file, &text).unwrap();
    let env = policy_file.display().to_string();
    let server = TestServer::start_on_with(
        &first.data_dir,
        "127.0.0.1:0",
        &[QUOTA, ("HATTAMA__WITNESS_POLICY", &env)],
    );
    Witnessed { _first: first, server, ws, policy, policy_file, log_key }
}

/// A device driven by the real CLI (`hattama`), enrolled with `url` for `precinct`; it captures
/// through the core (distinct textured photos).
struct Device {
    cli: hattama_tests::Hattama,
    client: hattama_core::Client,
    precinct: String,
    next: u32,
    _store: tempfile::TempDir,
}

impl Device {
    fn enroll(url: &str, code: &str, precinct: &str, seed: u32) -> (Self, Value) {
        let store = tempfile::tempdir().unwrap();
        let cli = hattama_tests::Hattama::new(store.path());
        let enrolled = cli.run(&["enroll", url, code, "--json"]).ok_json();
        let client = hattama_core::Client::open(
            store.path(),
            &hattama_tests::test_key(),
            hattama_core::ClientConfig::default(),
        )
        .unwrap();
        let d = Self { cli, client, precinct: precinct.to_owned(), next: seed, _store: store };
        (d, enrolled)
    }

    fn capture(&mut self, n: u32) {
        for _ in 0..n {
            let request = hattama_tests::posted_request(&self.precinct);
            let photo = hattama_tests::textured_jpeg(120, 90, self.next, 90);
            self.client.capture(&photo, &request).unwrap();
            self.next += 1;
        }
    }

    /// `hattama sync --json`.
    fn sync(&self) -> Value {
        let s = self.cli.run(&["sync", "--json"]).ok_json();
        assert_eq!(s["remaining"], 0, "{s}");
        s
    }

    /// `hattama status --json`: (receipted, witnessed, the whole answer).
    fn status(&self) -> (u64, u64, Value) {
        let s = self.cli.run(&["status", "--json"]).ok_json();
        let c = &s["counts"];
        (c["receipted"].as_u64().unwrap(), c["witnessed"].as_u64().unwrap(), s)
    }

    /// The captures `hattama list --json` calls witnessed, and all of them.
    fn listed_witnessed(&self) -> (usize, usize) {
        let list = self.cli.run(&["list", "--json"]).ok_json();
        let all = list.as_array().unwrap();
        (all.iter().filter(|c| c["witnessed"] == true).count(), all.len())
    }
}

/// The server's log size now.
fn log_size(url: &str) -> u64 {
    let note = reqwest::blocking::get(format!("{url}/log/checkpoint")).unwrap().bytes().unwrap();
    let text = String::from_utf8_lossy(&note).to_string();
    text.lines().nth(1).unwrap().parse().unwrap()
}

/// Waits until the log has integrated `n` entries (receipts come after integration, so this is
/// immediate in practice).
fn wait_log(url: &str, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while log_size(url) < n {
        assert!(std::time::Instant::now() < deadline, "the log never reached {n}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn devices_become_witnessed_by_themselves_and_never_without_a_quorum() {
    let election = hattama_tests::fixtures::election("e2e", 3);
    let mut w = witnessed_server(&election);
    let url = w.server.url.clone();
    let codes = w.server.invite(&["p0001", "p0002"], 2);
    // The election package carries the policy.
    let (mut a, enrolled) = Device::enroll(&url, &codes[0], "p0001", 0);
    assert_eq!(enrolled["witnesses"], serde_json::json!(["A", "B", "C"]), "{enrolled}");
    let (mut b, _) = Device::enroll(&url, &codes[1], "p0002", 1000);
    let (_, _, s) = a.status();
    assert_eq!(s["witness_policy"], true, "{s}");

    // All three up: every checkpoint after the first seconds carries >= 2 valid cosignatures,
    // and the devices' captures become witnessed at a later sync, by themselves.
    a.capture(6);
    b.capture(6);
    a.sync();
    b.sync();
    let v = cosigned_at(&url, &w.policy, 12);
    assert!(v.cosignatures.len() >= 2, "{v:?}");
    for d in [&a, &b] {
        let s = d.sync();
        assert_eq!((s["receipted"].as_u64(), s["bytes_sent"].as_u64()), (Some(0), Some(0)));
        assert_eq!(s["witnessed_size"], 12, "{s}");
        let (receipted, witnessed, status) = d.status();
        assert_eq!((receipted, witnessed), (6, 6), "{status}");
        assert!(status["witnessed_checkpoint"]["cosignatures"].as_array().unwrap().len() >= 2);
        assert_eq!(d.listed_witnessed(), (6, 6));
    }
    let text = a.cli.run(&["status"]).stdout;
    assert!(text.contains("6 receipted (6 of them witnessed)"), "{text}");
    assert!(text.contains("witness  checkpoint of 12 entries witnessed (quorum met) by"), "{text}");

    // One witness killed: still a quorum, and the new captures become witnessed.
    w.ws[0].kill();
    a.capture(4);
    a.sync();
    let v = cosigned_at(&url, &w.policy, 16);
    assert_eq!(v.cosignatures.iter().map(|c| c.witness.as_str()).collect::<Vec<_>>(), ["B", "C"]);
    a.sync();
    let (receipted, witnessed, status) = a.status();
    assert_eq!((receipted, witnessed), (10, 10), "{status}");
    let by: Vec<&str> = status["witnessed_checkpoint"]["cosignatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["witness"].as_str().unwrap())
        .collect();
    assert_eq!(by, ["B", "C"], "{status}");

    // Two killed: receipts still come; nothing new becomes witnessed, however often it syncs.
    w.ws[1].kill();
    a.capture(5);
    b.capture(3);
    let s = a.sync();
    assert_eq!(s["receipted"], 5, "receipts come without witnesses: {s}");
    assert_eq!(b.sync()["receipted"], 3);
    wait_log(&url, 24);
    std::thread::sleep(Duration::from_secs(3));
    for _ in 0..2 {
        a.sync();
        b.sync();
    }
    let (receipted, witnessed, status) = a.status();
    assert_eq!((receipted, witnessed), (15, 10), "{status}");
    assert_eq!(status["witnessed_checkpoint"]["size"], 16, "{status}");
    assert_eq!(a.listed_witnessed(), (10, 15));
    let (receipted, witnessed, _) = b.status();
    assert_eq!((receipted, witnessed), (9, 6));
    assert_eq!(cosigned_at(&url, &w.policy, 16).checkpoint.size, 16);

    // A witness returns: everything becomes witnessed, without a new upload.
    w.ws[1].restart_same_port();
    cosigned_at(&url, &w.policy, 24);
    for d in [&a, &b] {
        let s = d.sync();
        assert_eq!((s["receipted"].as_u64(), s["bytes_sent"].as_u64()), (Some(0), Some(0)));
        assert_eq!(s["witnessed_size"], 24, "{s}");
    }
    assert_eq!(a.status().0, 15);
    assert_eq!(a.status().1, 15);
    assert_eq!(b.status().1, 9);
    assert_eq!(a.listed_witnessed(), (15, 15));
    assert_eq!(a.status().2["witness_problem"], Value::Null);
    // The store agrees with the CLI: each receipted capture says so itself.
    assert!(a.client.list().unwrap().iter().all(hattama_core::store::CaptureRecord::is_witnessed));
    let _ = &w.policy_file;
    let _ = &w.log_key;
}

#[test]
fn a_fork_is_never_witnessed_on_a_device_and_the_auditor_says_so() {
    use hattama_tests::server::TestServer;
    let election = hattama_tests::fixtures::election("e2e", 3);
    let w = witnessed_server(&election);
    let url = w.server.url.clone();
    let code = &w.server.invite(&["p0001"], 1)[0];
    let (mut honest, _) = Device::enroll(&url, code, "p0001", 0);
    honest.capture(4);
    honest.sync();
    let cosigned = cosigned_at(&url, &w.policy, 4);
    assert_eq!(honest.sync()["witnessed_size"], 4);

    // The fork: a second server with the same log key (and the same policy), other entries.
    let fork_tmp = tempfile::tempdir().unwrap();
    let fork_dir = fork_tmp.path().join("data");
    hattama_tests::server::import_election(&fork_dir, &election);
    std::fs::create_dir_all(fork_dir.join("keys")).unwrap();
    for f in std::fs::read_dir(w.server.data_dir.join("keys")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), fork_dir.join("keys").join(f.file_name())).unwrap();
    }
    let env = w.policy_file.display().to_string();
    let fork = TestServer::start_on_with(
        &fork_dir,
        "127.0.0.1:0",
        &[QUOTA, ("HATTAMA__WITNESS_POLICY", &env)],
    );
    let code = &fork.invite(&["p0002"], 1)[0];
    let (mut victim, enrolled) = Device::enroll(&fork.url, code, "p0002", 500);
    assert_eq!(enrolled["witnesses"], serde_json::json!(["A", "B", "C"]));
    victim.capture(6);
    assert_eq!(victim.sync()["receipted"], 6, "the fork's own log receipts");
    // Every witness refuses the fork (it extends no view they cosigned): no quorum, ever.
    std::thread::sleep(Duration::from_secs(3));
    let r = reqwest::blocking::get(format!("{}/log/cosigned-checkpoint", fork.url)).unwrap();
    assert_eq!(r.status().as_u16(), 404, "a forked log gathered cosignatures");
    for wit in &w.ws {
        let logs: Value =
            reqwest::blocking::get(format!("{}/logs", wit.url)).unwrap().json().unwrap();
        assert_eq!(logs[0]["size"], 4, "{logs}");
        assert!(logs[0]["refused"].as_u64().unwrap() >= 1, "{logs}");
    }
    let s = victim.sync();
    assert_eq!(
        (s["witnessed_size"].clone(), s["witness_problem"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(victim.status().1, 0);

    // The fork lies: it serves its checkpoint with the honest log's cosignature lines copied
    // onto it. The device refuses it as witnessed, says why, and keeps saying it.
    let fork_cp = reqwest::blocking::get(format!("{}/log/checkpoint", fork.url))
        .unwrap()
        .bytes()
        .unwrap()
        .to_vec();
    let honest_note = reqwest::blocking::get(format!("{url}/log/cosigned-checkpoint"))
        .unwrap()
        .bytes()
        .unwrap()
        .to_vec();
    let honest_text = String::from_utf8(honest_note).unwrap();
    let lines: String = honest_text
        .split("\n\n")
        .nth(1)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with(&format!("— {} ", w.log_key.origin)))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(lines.lines().count() >= cosigned.cosignatures.len().min(2), "{honest_text}");
    let forged = [fork_cp, lines.into_bytes()].concat();
    std::fs::write(fork_dir.join("log").join("cosigned-checkpoint"), &forged).unwrap();
    let s = victim.sync();
    let problem = s["witness_problem"].as_str().expect("a problem is reported");
    assert!(problem.contains("quorum of the witness policy is not met: 0 of 3"), "{problem}");
    assert_eq!(s["witnessed_size"], Value::Null);
    let (receipted, witnessed, status) = victim.status();
    assert_eq!((receipted, witnessed), (6, 0), "{status}");
    assert_eq!(status["witness_problem"].as_str(), Some(problem));
    assert_eq!(victim.listed_witnessed(), (0, 6));
    let text = victim.cli.run(&["status"]).stdout;
    assert!(text.contains("NOT WITNESSED the server's last cosigned checkpoint"), "{text}");
    assert!(text.contains("6 receipted (0 of them witnessed)"), "{text}");
    // The same check in the core, typed.
    let forged_check = hattama_core::witness::check_witnessed(&w.policy, &w.log_key, &forged);
    assert!(
        matches!(
            forged_check,
            Err(hattama_core::witness::NotWitnessed::NoQuorum { ref cosigned, witnesses: 3 })
                if cosigned.is_empty()
        ),
        "{forged_check:?}"
    );
    // The auditor reports it.
    let policy_arg = w.policy_file.to_str().unwrap();
    let fork_url = format!("{}/log", fork.url);
    let run = audit(&[&fork_url, "--key", &w.log_key.vkey, "--policy", policy_arg]);
    assert!(run.stdout.contains("not witnessed"), "{run:?}");
    // And the honest device is untouched.
    assert_eq!(honest.status().1, 4);
    assert_eq!(honest.status().2["witness_problem"], Value::Null);
}

#[test]
fn the_station_page_shows_who_witnessed_each_photo_and_when_in_three_languages() {
    let election = hattama_tests::fixtures::election("e2e", 3);
    let w = witnessed_server(&election);
    let url = w.server.url.clone();
    let code = &w.server.invite(&["p0001"], 1)[0];
    let (mut d, _) = Device::enroll(&url, code, "p0001", 0);
    d.capture(2);
    d.sync();
    let v = cosigned_at(&url, &w.policy, 2);
    assert!(v.cosignatures.len() >= 2);
    let page = reqwest::blocking::Client::new()
        .get(format!("{url}/elections/e2e/precincts/p0001"))
        .header("Accept-Language", "ru")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("Заверено"), "{page}");
    assert!(page.contains("witness.test/d"), "{page}");
    hattama_tests::browser::run_script("witness", &url, &["e2e", "p0001", "2"]);
}
