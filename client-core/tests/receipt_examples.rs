//! The worked example of `docs/receipts.md` (a receipt, its signing input, its place in a
//! one-entry log, and a review decision) and its files in `docs/examples/receipt-v1/`, produced
//! by the code they describe so that the specification cannot drift from it. Every input is
//! published beside the outputs, so an outside verifier can recompute each byte.
//!
//! After an intended change, regenerate and review the diff:
//!
//! ```text
//! HATTAMA_UPDATE_DOCS=1 cargo test -p hattama-core --test receipt_examples
//! ```

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::SigningKey;
use hattama_core::decision::{DECISION_PREFIX, Decision, DecisionKind};
use hattama_core::evidence::{DeviceKey, Sha256Hash};
use hattama_core::log::{LogEntry, LogKey, TlogProof, sign_checkpoint};
use hattama_core::receipt::{RECEIPT_PREFIX, Receipt, ReceiptLog, SignedReceipt};

const DOC: &str = "docs/receipts.md";
const DIR: &str = "docs/examples/receipt-v1";
const BEGIN: &str = "<!-- BEGIN GENERATED RECEIPT EXAMPLE -->";
const END: &str = "<!-- END GENERATED RECEIPT EXAMPLE -->";
const UPDATE_VAR: &str = "HATTAMA_UPDATE_DOCS";
const ORIGIN: &str = "hattama.example/log";
const RECEIVED_AT_MS: u64 = 1_795_572_188_364;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("client-core has a parent").to_owned()
}

fn updating() -> bool {
    std::env::var(UPDATE_VAR).as_deref() == Ok("1")
}

fn drift(what: &str) -> ! {
    panic!(
        "{what} is out of date: it is not what the code produces.\n\
         If the change is intended, regenerate it and review the diff:\n    \
         {UPDATE_VAR}=1 cargo test -p hattama-core --test receipt_examples"
    )
}

fn sync_file(name: &str, expected: &[u8]) {
    let path = workspace().join(DIR).join(name);
    if updating() {
        fs::create_dir_all(path.parent().expect("a directory")).expect("create directory");
        fs::write(&path, expected).expect("write generated file");
    } else if fs::read(&path).ok().as_deref() != Some(expected) {
        drift(&format!("{DIR}/{name}"));
    }
}

fn sync_doc(fragment: &str) {
    let path = workspace().join(DOC);
    let doc = fs::read_to_string(&path).expect("read docs/receipts.md");
    let body = doc.find(BEGIN).expect("begin marker") + BEGIN.len();
    let end = body + doc[body..].find(END).expect("end marker");
    let expected = format!("\n{fragment}\n");
    if doc[body..end] == expected {
        return;
    }
    if !updating() {
        drift(DOC);
    }
    fs::write(&path, format!("{}{expected}{}", &doc[..body], &doc[end..])).expect("write doc");
}

/// A seed of 32 consecutive byte values starting at `first`.
fn seed(first: u8) -> [u8; 32] {
    std::array::from_fn(|i| first + i as u8)
}

/// Shows bytes that are text with a visible line feed, as the signing input is written.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8").replace('\n', "\\n")
}

#[test]
fn receipt_examples_match_the_code() {
    let device = SigningKey::from_bytes(&seed(0x00));
    let server = SigningKey::from_bytes(&seed(0x40));
    let log_signer = SigningKey::from_bytes(&seed(0x20));
    let device_key = DeviceKey(device.verifying_key().to_bytes());
    let server_key = DeviceKey(server.verifying_key().to_bytes());
    let capture_id = Sha256Hash::of(b"hattama receipt example manifest");
    let photo_sha256 = Sha256Hash::of(b"hattama receipt example photo");

    let receipt = Receipt {
        capture_id,
        device_key,
        photo_sha256,
        received_at_ms: RECEIVED_AT_MS,
        server_key,
        v: 1,
    };
    let canonical = receipt.to_canonical();
    let input = [RECEIPT_PREFIX, &canonical].concat();
    let mut signed = receipt.clone().sign(&server);
    signed.verify(&server_key, &capture_id, &photo_sha256).expect("the example verifies");

    // The capture as entry 0 of a log of one entry: the proof has no hashes, and the root is
    // the entry's leaf hash.
    let entry = LogEntry {
        capture_id,
        election: "kz-2026-example".into(),
        photo_sha256,
        precinct: "p0001".into(),
        received_at_ms: RECEIVED_AT_MS,
        v: 1,
    };
    let log_key = LogKey::for_signer(ORIGIN, &log_signer).expect("log key");
    let leaf = entry.leaf_hash();
    let checkpoint = sign_checkpoint(ORIGIN, 1, &leaf, &log_signer).expect("checkpoint");
    let proof = TlogProof { index: 0, hashes: Vec::new(), checkpoint };
    signed.log = Some(ReceiptLog {
        index: 0,
        entry: String::from_utf8(entry.to_bytes()).expect("UTF-8"),
        proof: proof.to_text(),
    });
    signed.verify_log(&log_key, "kz-2026-example", "p0001").expect("the example's log verifies");
    let json = serde_json::to_vec_pretty(&signed).expect("JSON");
    let reparsed: SignedReceipt = serde_json::from_slice(&json).expect("parses back");
    assert_eq!(reparsed, signed);

    let decision = Decision {
        capture_id,
        decided_at_ms: RECEIVED_AT_MS + 60_000,
        device_key,
        kind: DecisionKind::Rejected,
        reason: Some("unreadable".into()),
        server_key,
        v: 1,
    };
    let decision_input = [DECISION_PREFIX, &decision.to_canonical()].concat();
    let signed_decision = decision.sign(&server);
    signed_decision.verify(&server_key, &device_key).expect("the decision verifies");

    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "### Inputs\n");
    let _ = writeln!(w, "| input | value |\n|---|---|");
    let _ = writeln!(
        w,
        "| receipt key seed (secret; only for this example) | `{}` |",
        hex::encode(seed(0x40))
    );
    let _ = writeln!(
        w,
        "| receipt public key (`server_key`) | `{server_key}` |",
        server_key = server_key.to_hex()
    );
    let _ = writeln!(
        w,
        "| device key seed (the example key of `docs/evidence-format.md`) | `{}` |",
        hex::encode(seed(0))
    );
    let _ = writeln!(w, "| device public key (`device_key`) | `{}` |", device_key.to_hex());
    let _ = writeln!(
        w,
        "| device fingerprint (first 16 hex digits of SHA-256 of the 32 key bytes) | `{}` |",
        device_key.fingerprint()
    );
    let _ = writeln!(
        w,
        "| `capture_id` | SHA-256 of the ASCII bytes `hattama receipt example manifest` = `{capture_id}` |"
    );
    let _ = writeln!(
        w,
        "| `photo_sha256` | SHA-256 of the ASCII bytes `hattama receipt example photo` = `{photo_sha256}` |"
    );
    let _ = writeln!(w, "| `received_at_ms` | `{RECEIVED_AT_MS}` |");
    let _ = writeln!(
        w,
        "| log key seed (the example log key of `docs/transparency-log.md`) | `{}` |",
        hex::encode(seed(0x20))
    );
    let _ = writeln!(w, "| log verifier key | `{}` |", log_key.vkey);
    let _ = writeln!(w, "\n### The receipt's signing input\n");
    let _ = writeln!(
        w,
        "{} bytes (file `{DIR}/receipt-signing-input.bin`): the prefix `hattama/receipt/v1`, a line \
         feed (0x0A), then the canonical JSON, with no line feed after it:\n",
        input.len()
    );
    let _ = writeln!(w, "```text\n{}\n```\n", shown(&input));
    let _ = writeln!(w, "SHA-256 of the signing input: `{}`\n", Sha256Hash::of(&input));
    let _ = writeln!(w, "Ed25519 signature (RFC 8032, deterministic): `{}`\n", signed.signature);
    let _ = writeln!(w, "### The complete receipt\n");
    let _ = writeln!(
        w,
        "As `GET /api/v1/receipts/<capture id>` answers it (here indented; file \
         `{DIR}/receipt.json`), the capture being entry 0 of a log of one entry under the example \
         log key, so that its inclusion proof has no hashes and the checkpoint's root is the \
         entry's leaf hash `{}`:\n",
        B64.encode(leaf.0)
    );
    let _ = writeln!(w, "```json\n{}\n```\n", String::from_utf8(json.clone()).expect("UTF-8"));
    let _ = writeln!(w, "### A review decision\n");
    let _ = writeln!(
        w,
        "The coordinators reject the same capture as `unreadable` one minute later; the signing \
         input ({} bytes, file `{DIR}/decision-signing-input.bin`):\n",
        decision_input.len()
    );
    let _ = writeln!(w, "```text\n{}\n```\n", shown(&decision_input));
    let _ = write!(w, "Ed25519 signature by the receipt key: `{}`", signed_decision.signature);

    sync_file("receipt-signing-input.bin", &input);
    sync_file("receipt.json", &[json.as_slice(), b"\n"].concat());
    sync_file("decision-signing-input.bin", &decision_input);
    sync_doc(&md);
}
