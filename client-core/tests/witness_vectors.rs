//! Test vectors of witness cosignatures (C2SP `tlog-cosignature`, `cosignature/v1`),
//! `tlog-policy` files and `tlog-witness` add-checkpoint requests, made by the code they
//! describe and kept in `docs/witness-vectors/`, so that another implementation can be checked
//! against them and they cannot drift from the code.
//!
//! After an intended change, regenerate and review the diff:
//!
//! ```text
//! HATTAMA_UPDATE_DOCS=1 cargo test -p hattama-core --test witness_vectors
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use hattama_core::log::{Hash, LogKey, sign_checkpoint};
use hattama_core::witness::{
    AddCheckpoint, Cosigner, Policy, add_signature_lines, cosigned_message, note_body,
    verify_cosignatures,
};
use serde_json::json;

const DIR: &str = "docs/witness-vectors";
const UPDATE_VAR: &str = "HATTAMA_UPDATE_DOCS";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("client-core has a parent").to_owned()
}

/// Writes `expected` to `DIR/name` when updating; otherwise fails unless the file holds it.
fn sync_file(name: &str, expected: &[u8]) {
    let path = workspace().join(DIR).join(name);
    if std::env::var(UPDATE_VAR).as_deref() == Ok("1") {
        fs::create_dir_all(path.parent().expect("a directory")).expect("create directory");
        fs::write(&path, expected).expect("write vector");
        return;
    }
    let actual = fs::read(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "{DIR}/{name} is not what the code produces; if the change is intended, regenerate it \
         and review the diff:\n    {UPDATE_VAR}=1 cargo test -p hattama-core --test witness_vectors"
    );
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).expect("UTF-8")
}

#[test]
fn witness_vectors() {
    let log_key = SigningKey::from_bytes(&[0x11; 32]);
    let log = LogKey::for_signer("hattama.example/log", &log_key).unwrap();
    let ws: Vec<Cosigner> =
        ["witness.example.org/w1", "witness.example.net/w2", "witness.example.com/w3"]
            .iter()
            .enumerate()
            .map(|(i, n)| Cosigner::new(n, SigningKey::from_bytes(&[0x21 + i as u8; 32])).unwrap())
            .collect();
    let keys: Vec<_> = ws.iter().map(|w| w.public().clone()).collect();
    let root = Hash(std::array::from_fn(|i| i as u8));
    let checkpoint = sign_checkpoint(&log.origin, 20852163, &root, &log_key).unwrap();
    let body = note_body(&checkpoint).unwrap();
    let time = 1_765_000_000u64;
    let sigs: Vec<_> =
        ws.iter().enumerate().map(|(i, w)| w.cosign(&body, time + i as u64).unwrap()).collect();
    let cosigned = add_signature_lines(&checkpoint, &sigs[..2]).unwrap();
    assert_eq!(verify_cosignatures(&cosigned, &keys).unwrap(), vec![(0, time), (1, time + 1)]);

    let policy = format!(
        "# Hattama's log and three witnesses; two of them make a quorum.\n\
         log {}\n\
         witness w1 {} https://witness.example.org/w1\n\
         witness w2 {} https://witness.example.net/w2\n\
         witness w3 {} https://witness.example.com/w3\n\
         group two-of-three 2 w1 w2 w3\n\
         quorum two-of-three\n",
        log.vkey,
        keys[0].vkey(),
        keys[1].vkey(),
        keys[2].vkey()
    );
    let p = Policy::parse(policy.as_bytes()).unwrap();
    let v = p.verify_checkpoint(&cosigned).unwrap();
    assert!(v.quorum);

    // Cases: each a checkpoint with its signature lines and the witnesses whose cosignatures
    // verify, for a verifier configured with the three witness keys.
    let line = |i: usize| text(&sigs[i].to_bytes());
    let mut cases = Vec::new();
    let mut case = |name: &str, note: String, valid: &[&str], quorum: bool| {
        let got = p.verify_checkpoint(note.as_bytes()).unwrap();
        let names: Vec<&str> = got.cosignatures.iter().map(|c| c.witness.as_str()).collect();
        assert_eq!(names, valid, "{name}");
        assert_eq!(got.quorum, quorum, "{name}");
        cases.push(json!({ "name": name, "checkpoint": note, "valid": valid, "quorum": quorum }));
    };
    let cp = text(&checkpoint);
    case("two of three", text(&cosigned), &["w1", "w2"], true);
    case("all three", format!("{cp}{}{}{}", line(2), line(1), line(0)), &["w1", "w2", "w3"], true);
    case("one", format!("{cp}{}", line(2)), &["w3"], false);
    case("none", cp.clone(), &[], false);
    // The timestamp is signed: changing it breaks the cosignature.
    let mut raw = sigs[0].signature().to_vec();
    raw[7] ^= 1;
    let forged = signed_note::Signature::new(sigs[0].name().into(), sigs[0].id(), raw).unwrap();
    case(
        "timestamp changed",
        format!("{cp}{}{}", text(&forged.to_bytes()), line(1)),
        &["w2"],
        false,
    );
    // A line under a witness's name with another key id is not that witness's.
    let other = signed_note::Signature::new(
        sigs[0].name().into(),
        sigs[0].id() ^ 1,
        sigs[0].signature().to_vec(),
    )
    .unwrap();
    case("wrong key id", format!("{cp}{}{}", text(&other.to_bytes()), line(1)), &["w2"], false);
    // Cosignatures of this checkpoint moved onto a checkpoint of another size.
    let next = text(&sign_checkpoint(&log.origin, 20852164, &root, &log_key).unwrap());
    case("moved to another checkpoint", format!("{next}{}{}", line(0), line(1)), &[], false);

    let request = AddCheckpoint {
        old_size: 20852014,
        proof: (0..4u8).map(|i| Hash([i * 16 + 1; 32])).collect(),
        checkpoint: checkpoint.clone(),
    };
    sync_file("log.vkey", format!("{}\n", log.vkey).as_bytes());
    for (i, k) in keys.iter().enumerate() {
        sync_file(&format!("w{}.vkey", i + 1), format!("{}\n", k.vkey()).as_bytes());
    }
    sync_file("policy.txt", policy.as_bytes());
    sync_file("cosigned-message.txt", &cosigned_message(&body, time));
    sync_file("checkpoint.txt", &cosigned);
    sync_file("add-checkpoint-request.txt", &request.to_bytes());
    sync_file("add-checkpoint-response.txt", line(0).as_bytes());
    let json = serde_json::to_string_pretty(&json!({
        "log": log.vkey,
        "witnesses": keys.iter().map(|k| k.vkey()).collect::<Vec<_>>(),
        "policy": "policy.txt",
        "cases": cases,
    }))
    .unwrap();
    sync_file("cases.json", format!("{json}\n").as_bytes());
}
