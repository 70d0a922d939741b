//! C2SP signed notes (`signed_note`, as the core and the auditor read checkpoints) and log
//! verifier keys: a parsed note encodes to bytes that parse to the same note; verification and
//! key parsing never panic, and a parsed key's own text parses to the same key.
#![no_main]

use hattama_core::log::LogKey;
use libfuzzer_sys::fuzz_target;
use signed_note::{Note, StandardVerifier, VerifierList};

fuzz_target!(|data: &[u8]| {
    if let Ok(note) = Note::from_bytes(data) {
        let bytes = note.to_bytes();
        let again = Note::from_bytes(&bytes).expect("an encoded note parses");
        assert_eq!(again.text(), note.text());
        assert_eq!(again.to_bytes(), bytes);
        let key = hattama_fuzz::log_key();
        let verifier = StandardVerifier::new(&key.vkey).expect("the fuzz key");
        let _ = note.verify(&VerifierList::new(vec![Box::new(verifier)]));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(key) = LogKey::from_vkey(text) {
            assert_eq!(LogKey::from_vkey(&key.vkey).expect("its own text parses"), key);
        }
        let _ = LogKey::from_text(text);
    }
});
