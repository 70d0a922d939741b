//! Receipts (`receipt::SignedReceipt::from_json`, what a device reads from the server): an
//! accepted receipt encodes to JSON that parses to the same receipt; verifying it and its log
//! part under the fuzzing keys never panics, and a receipt that verifies names its own ids.
#![no_main]

use hattama_core::evidence::DeviceKey;
use hattama_core::log::LogEntry;
use hattama_core::receipt::SignedReceipt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(r) = SignedReceipt::from_json(data) else { return };
    let json = serde_json::to_vec(&r).expect("a receipt encodes");
    assert_eq!(SignedReceipt::from_json(&json).expect("its encoding parses"), r);
    let pinned = DeviceKey(hattama_fuzz::receipt_signing_key().verifying_key().to_bytes());
    let (id, photo) = (r.receipt.capture_id, r.receipt.photo_sha256);
    if r.verify(&pinned, &id, &photo).is_ok() {
        assert_eq!(r.receipt.server_key, pinned);
    }
    // The election and precinct the device knows: those of the entry, when it parses.
    let entry = r.log.as_ref().and_then(|l| LogEntry::from_bytes(l.entry.as_bytes()).ok());
    let (election, precinct) =
        entry.as_ref().map_or(("e", "p"), |e| (e.election.as_str(), e.precinct.as_str()));
    if let Ok(v) = r.verify_log(&hattama_fuzz::log_key(), election, precinct) {
        assert_eq!(Some(v.entry), entry);
        assert_eq!(v.index, r.log.as_ref().map_or(u64::MAX, |l| l.index));
    }
});
