//! C2SP tlog-proof text (`log::TlogProof`, in every receipt): a parsed proof's text form parses
//! to the same proof; verifying it against an entry never panics.
#![no_main]

use hattama_core::evidence::Sha256Hash;
use hattama_core::log::{LogEntry, TlogProof};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(proof) = TlogProof::from_text(text) else { return };
    assert!(proof.hashes.len() <= 64);
    let again = TlogProof::from_text(&proof.to_text()).expect("its text form parses");
    assert_eq!(again, proof);
    let entry = LogEntry {
        capture_id: Sha256Hash::of(b"capture"),
        election: "e".into(),
        photo_sha256: Sha256Hash::of(b"photo"),
        precinct: "p".into(),
        received_at_ms: 1,
        v: 1,
    };
    let _ = proof.verify(&entry, &hattama_fuzz::log_key());
});
