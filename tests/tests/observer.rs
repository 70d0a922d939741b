//! [Usability] The observer at the station, end to end with the real `hattama` CLI and the real
//! server: a capture that does not fit the enrolled election is refused before it is signed,
//! `sync` and `status` say what was refused and what to do, the coordinators' decision travels
//! back to the device signed by the server, and an invite enrolls exactly as it was printed.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;

use ed25519_dalek::Signer;
use hattama_core::decision::{DecisionKind, SignedDecision, request_message};
use hattama_core::evidence::{DeviceKey, Sha256Hash};
use hattama_core::store::Store;
use hattama_tests::raw::RawDevice;
use hattama_tests::review::{Browser, add_user};
use hattama_tests::server::TestServer;
use hattama_tests::{Hattama, Run, bin, textured_jpeg};
use serde_json::{Value, json};

/// Writes a distinct camera-like photo into `dir`.
fn photo(dir: &Path, seed: u32) -> String {
    let path = dir.join(format!("{seed}.jpg"));
    std::fs::write(&path, textured_jpeg(320, 240, seed, 85)).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A server with `e2e` (5 stations) and a CLI store enrolled for p0001 and p0002.
fn enrolled() -> (TestServer, tempfile::TempDir, Hattama, Value) {
    let server = TestServer::start_with_election(5);
    let store = tempfile::tempdir().unwrap();
    let cli = Hattama::new(store.path());
    let code = server.invite(&["p0001", "p0002"], 1).remove(0);
    let enrolled = cli.run(&["enroll", &server.url, &code, "--json"]).ok_json();
    (server, store, cli, enrolled)
}

fn capture(cli: &Hattama, photo: &str, extra: &[&str]) -> Run {
    let mut args = vec!["capture", photo, "--election", "e2e", "--json"];
    args.extend_from_slice(extra);
    cli.run(&args)
}

/// A refusal: exit 3, the code word in the JSON answer, and `words` in what the observer reads.
fn assert_refused(run: &Run, code: &str, words: &[&str]) {
    assert_eq!(run.code, Some(3), "{run:?}");
    assert_eq!(run.json()["error"], code, "{run:?}");
    for w in words {
        assert!(run.stderr.contains(w), "{w:?} missing from {:?}", run.stderr);
    }
}

#[test]
fn capture_refuses_what_does_not_fit_the_enrolled_election_before_signing() {
    let (_server, _store, cli, _) = enrolled();
    let photos = tempfile::tempdir().unwrap();
    let p = photo(photos.path(), 1);
    let nothing_stored = "nothing was signed or stored";

    let other = cli.run(&["capture", &p, "--election", "kz-2019", "--precinct", "p0001", "--json"]);
    assert_refused(&other, "wrong_election", &["enrolled for election e2e", nothing_stored]);
    let run = capture(&cli, &p, &["--precinct", "p0004"]);
    assert_refused(
        &run,
        "precinct_not_assigned",
        &["p0004 (No. 4) is not assigned", "Ask your coordinator", "p0001 (No. 1)"],
    );
    for unknown in ["p0099", "99", "№99"] {
        let run = capture(&cli, &p, &["--precinct", unknown]);
        assert_refused(&run, "unknown_precinct", &["no polling station", "p0002 (No. 2)"]);
    }
    let run = capture(&cli, &p, &["--precinct", "p0001", "--line", "3=10", "--line", "99=5"]);
    assert_refused(&run, "unknown_line", &["no line \"99\"", "7.1", nothing_stored]);
    let text = photos.path().join("notes.txt");
    std::fs::write(&text, "not a photo").unwrap();
    let run = capture(&cli, text.to_str().unwrap(), &["--precinct", "p0001"]);
    assert_refused(&run, "photo_refused", &["not a JPEG or PNG", "straight from the camera"]);
    assert_eq!(cli.run(&["list", "--json"]).ok_json(), json!([]), "nothing was stored");

    // The station's number, as on its door, is as good as its id; no sequence number was used.
    let by_number = capture(&cli, &p, &["--precinct", "2"]).ok_json();
    assert_eq!(
        (by_number["seq"].as_u64(), by_number["precinct"].as_str()),
        (Some(1), Some("p0002"))
    );
    assert_eq!(by_number["checked"], true);
    let p2 = photo(photos.path(), 2);
    let sign = capture(&cli, &p2, &["--precinct", "№1", "--line", "3=700"]).ok_json();
    assert_eq!((sign["seq"].as_u64(), sign["precinct"].as_str()), (Some(2), Some("p0001")));
    let summary = cli.run(&["sync", "--json"]).ok_json();
    assert_eq!((summary["receipted"].as_u64(), summary["rejected"].as_u64()), (Some(2), Some(0)));
}

#[test]
fn sync_prints_each_refusal_with_its_reason_and_status_says_what_needs_action() {
    let server = TestServer::start_with_election(5);
    let store = tempfile::tempdir().unwrap();
    let cli = Hattama::new(store.path());
    let photos = tempfile::tempdir().unwrap();
    // Photographed before the device enrolled: nothing to check against yet, and it says so.
    let early = capture(&cli, &photo(photos.path(), 3), &["--precinct", "p0003"]);
    assert_eq!(early.json()["checked"], false, "{early:?}");
    assert!(early.stderr.contains("not enrolled yet"), "{early:?}");
    let code = server.invite(&["p0001"], 1).remove(0);
    cli.run(&["enroll", &server.url, &code, "--json"]).ok_json();
    capture(&cli, &photo(photos.path(), 4), &["--precinct", "p0001"]).ok_json();
    capture(&cli, &photo(photos.path(), 5), &["--precinct", "1"]).ok_json();

    let status = cli.run(&["status"]);
    println!("hattama status before sync:\n{}", status.stdout);
    assert!(status.stdout.contains("waiting  3 safe on this device, not sent yet"), "{status:?}");
    assert!(status.stdout.contains("action   none needed"), "{status:?}");

    let sync = cli.run(&["sync"]);
    println!("hattama sync:\n{}", sync.stdout);
    assert_eq!(sync.code, Some(0), "{sync:?}");
    assert!(sync.stdout.contains("receipted 2, rejected 1"), "{sync:?}");
    assert!(sync.stdout.contains("REFUSED  #1"), "{sync:?}");
    assert!(sync.stdout.contains("precinct_not_assigned"), "{sync:?}");
    assert!(sync.stdout.contains("what to do: this device is not registered"), "{sync:?}");

    let status = cli.run(&["status"]);
    println!("hattama status after sync:\n{}", status.stdout);
    assert!(status.stdout.contains("sent     2 on the server with its receipt"), "{status:?}");
    assert!(status.stdout.contains("ACTION   1 need you now"), "{status:?}");
    assert!(status.stdout.contains("REFUSED  #1"), "{status:?}");
    assert!(!status.stdout.contains("waiting "), "{status:?}");
    let json = cli.run(&["status", "--json"]).ok_json();
    assert_eq!(json["waiting"], 0);
    let act = json["needs_action"].as_array().unwrap();
    assert_eq!(act.len(), 1, "{json}");
    assert_eq!(act[0]["seq"], 1);
    assert!(act[0]["advice"].as_str().unwrap().contains("enrollment code"), "{json}");
}

/// Posts a decision through the review page, as a coordinator does.
/// The form carries the decision the page was rendered from (`seen`), as the review page's does.
fn decide(b: &mut Browser, capture: &str, kind: &str, reason: &str) {
    let shown = b.get(&format!("/review/captures/{capture}"));
    let key = "name=\"seen\" value=\"";
    let start = shown.body.find(key).expect("the capture page has a decision form") + key.len();
    let seen = shown.body[start..].split('"').next().unwrap_or("0").to_owned();
    let csrf = b.csrf();
    let page = b.post(
        &format!("/review/captures/{capture}/decision"),
        &[("csrf", &csrf), ("kind", kind), ("reason", reason), ("seen", &seen)],
    );
    assert_eq!(page.status, 303, "{page:?}");
}

/// Asks the server for a device's decisions as the protocol says; returns status and body.
fn ask_decisions(url: &str, device: &RawDevice, tamper: impl FnOnce(&mut Value)) -> (u16, Value) {
    let http = reqwest::blocking::Client::new();
    let challenge: Value =
        http.post(format!("{url}/api/v1/challenge")).send().unwrap().json().unwrap();
    let challenge = challenge["challenge"].as_str().unwrap().to_owned();
    let key = device.public().to_hex();
    let sig = device.key.sign(&request_message(&challenge, &key));
    let mut body = json!({
        "challenge": challenge,
        "device_key": key,
        "signature": hex::encode(sig.to_bytes()),
    });
    tamper(&mut body);
    let answer = http.post(format!("{url}/api/v1/decisions")).json(&body).send().unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().unwrap_or(Value::Null))
}

#[test]
fn a_coordinators_rejection_reaches_the_device_signed_and_asks_for_a_retake() {
    let (server, store, cli, enrolled) = enrolled();
    add_user(&server.data_dir, "alice", "Alice", "coordinator", &[]);
    let photos = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let run = capture(&cli, &photo(photos.path(), 10 + i), &["--precinct", "p0001"]);
            run.ok_json()["id"].as_str().unwrap().to_owned()
        })
        .collect();
    cli.run(&["sync", "--json"]).ok_json();

    let mut alice = Browser::login(&server.url, "alice");
    decide(&mut alice, &ids[0], "rejected", "unreadable");
    decide(&mut alice, &ids[1], "flagged", "Stamp looks odd; call Aigerim on +7 701 000");
    decide(&mut alice, &ids[2], "accepted", "");

    let sync = cli.run(&["sync"]);
    println!("hattama sync:\n{}", sync.stdout);
    assert_eq!(sync.code, Some(0), "{sync:?}");
    assert!(sync.stdout.contains("RETAKE   #1"), "{sync:?}");
    assert!(sync.stdout.contains("rejected the photo (unreadable)"), "{sync:?}");
    assert!(sync.stdout.contains("what to do: the coordinators cannot read the photo"), "{sync:?}");
    assert!(sync.stdout.contains("REVIEW   #2"), "{sync:?}");
    assert!(sync.stdout.contains("ACCEPTED #3"), "{sync:?}");
    assert!(!sync.stdout.contains("Aigerim"), "a flag's note stays with the coordinators");
    let status = cli.run(&["status"]);
    println!("hattama status:\n{}", status.stdout);
    assert!(status.stdout.contains("1 accepted by the coordinators, 1 rejected"), "{status:?}");
    assert!(status.stdout.contains("ACTION   1 need you now"), "{status:?}");
    assert!(status.stdout.contains("RETAKE   #1"), "{status:?}");
    let shown = cli.run(&["show", &ids[0], "--json"]).ok_json();
    assert_eq!(shown["review"]["decision"], "rejected", "{shown}");
    assert_eq!(shown["review"]["reason"], "unreadable", "{shown}");
    assert_eq!(shown["needs_action"], true, "{shown}");

    // Nothing new at the next sync; a changed decision is learned again.
    let again = cli.run(&["sync", "--json"]).ok_json();
    assert_eq!(again["reviewed"], json!([]), "{again}");
    decide(&mut alice, &ids[0], "accepted", "");
    let changed = cli.run(&["sync", "--json"]).ok_json();
    assert_eq!(changed["reviewed"][0]["decision"], "accepted", "{changed}");
    assert_eq!(changed["reviewed"][0]["seq"], 1, "{changed}");
    assert_eq!(cli.run(&["status", "--json"]).ok_json()["needs_action"], json!([]));

    // What the device keeps is the server's statement, signed with the pinned receipt key.
    let pinned = DeviceKey(
        hattama_core::evidence::parse_lower_hex(enrolled["receipt_key"].as_str().unwrap()).unwrap(),
    );
    let device =
        hattama_core::Client::open(store.path(), &hattama_tests::test_key(), Default::default())
            .unwrap()
            .device_key();
    drop(cli);
    let kept = Store::open(store.path(), &hattama_tests::test_key()).unwrap();
    let statement =
        kept.review_statement(&Sha256Hash::from_hex(&ids[1]).unwrap()).unwrap().unwrap();
    let signed: SignedDecision = serde_json::from_slice(&statement).unwrap();
    signed.verify(&pinned, &device).unwrap();
    assert_eq!((signed.decision.kind, signed.decision.reason), (DecisionKind::Flagged, None));

    // Nobody else learns them: another enrolled device is told only of its own captures, a
    // key that is not enrolled nothing; a request must be signed over a challenge of this
    // server.
    let other = RawDevice::new(41);
    assert_eq!(other.enroll(&server.url, &server.invite(&["p0001"], 1)[0]).status, 200);
    assert_eq!(ask_decisions(&server.url, &other, |_| {}), (200, json!({"decisions": []})));
    let stranger = RawDevice::new(42);
    let (status, body) = ask_decisions(&server.url, &stranger, |_| {});
    assert_eq!((status, body["error"].as_str()), (403, Some("device_unknown")), "{body}");
    let (status, body) = ask_decisions(&server.url, &other, |b| {
        b["device_key"] = json!(device.to_hex());
    });
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_signature")), "{body}");
    let (status, body) = ask_decisions(&server.url, &other, |b| {
        let c = b["challenge"].as_str().unwrap().replacen('1', "2", 1);
        b["challenge"] = json!(c);
    });
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_challenge")), "{body}");
}

/// `hattama-server ARGS` with extra environment, in `cwd`.
fn server_command(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    Command::new(bin("hattama-server"))
        .current_dir(cwd)
        .env_remove("HATTAMA__PUBLIC_URL")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap()
        .into()
}

#[test]
fn the_invite_printed_by_a_running_server_enrolls_as_printed() {
    let server = TestServer::start_with_election(3);
    let data = server.data_dir.to_str().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let invite = ["invite", "create", "--election", "e2e", "--precinct", "p0001", "--count", "3"];
    let mut args = vec!["--data-dir", data];
    args.extend(invite);
    let run = server_command(cwd.path(), &[], &args);
    assert_eq!(run.code, Some(0), "{run:?}");
    // Without public_url, the address the running server listens on, with a warning.
    assert!(run.stderr.contains("public_url is not set"), "{run:?}");
    assert!(run.stderr.contains(&server.url), "{run:?}");
    let printed: Vec<(String, String)> = run
        .stdout
        .lines()
        .map(|l| {
            let (code, uri) = l.split_once("  ").unwrap();
            (code.to_owned(), uri.to_owned())
        })
        .collect();
    assert_eq!(printed.len(), 3, "{run:?}");

    // The URI exactly as printed.
    let store = tempfile::tempdir().unwrap();
    let enrolled = Hattama::new(store.path()).run(&["enroll", &printed[0].1, "--json"]).ok_json();
    assert_eq!(enrolled["server"].as_str(), Some(server.url.as_str()), "{enrolled}");
    assert_eq!(enrolled["precincts"], json!(["p0001"]));
    // The code as a person types it: lower case, spaces for dashes, O for 0.
    let typed = printed[1].0.to_lowercase().replace('-', " ").replace('0', "o");
    let mut args = vec!["enroll", server.url.as_str()];
    args.extend(typed.split(' '));
    args.push("--json");
    let store = tempfile::tempdir().unwrap();
    let enrolled = Hattama::new(store.path()).run(&args).ok_json();
    assert_eq!(enrolled["precincts"], json!(["p0001"]), "{enrolled}");

    // Mistakes say what to do.
    let cli = Hattama::new(store.path());
    let run = cli.run(&["enroll", "hattama://enroll?code=ABCD", "--json"]);
    assert_eq!((run.code, run.json()["error"].as_str()), (Some(3), Some("bad_invite")), "{run:?}");
    assert!(run.stderr.contains("what to do: give the invite exactly as"), "{run:?}");
    let run = cli.run(&["enroll", &server.url, "--json"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    let run = Hattama::new(tempfile::tempdir().unwrap().path()).run(&[
        "enroll",
        &server.url,
        "NOPE-NOPE-NOPE",
        "--json",
    ]);
    assert_eq!(run.json()["server_error"], "bad_code", "{run:?}");
    assert!(run.stderr.contains("what to do: check the code with your coordinator"), "{run:?}");

    // With public_url set, that is what invites carry, without a warning.
    let env = [("HATTAMA__PUBLIC_URL", "https://hattama.example.kz/")];
    let mut args = vec!["--data-dir", data];
    args.extend(invite);
    args.push("--json");
    let run = server_command(cwd.path(), &env, &args);
    let list = run.ok_json();
    let uri = list[0]["uri"].as_str().unwrap();
    assert!(uri.starts_with("hattama://enroll?server=https%3A%2F%2Fhattama.example.kz&code="));
    assert!(!run.stderr.contains("warning"), "{run:?}");

    // Admin commands do not guess a data directory.
    let run = server_command(cwd.path(), &[], &invite);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains("Pass --data-dir DIR"), "{run:?}");
    let missing = cwd.path().join("typo");
    let run = server_command(
        cwd.path(),
        &[],
        &["--data-dir", missing.to_str().unwrap(), "device", "list"],
    );
    assert!(run.stderr.contains("holds no server data"), "{run:?}");
    assert!(std::fs::read_dir(cwd.path()).unwrap().next().is_none(), "nothing was created");
}
