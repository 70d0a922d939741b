//! The manifest parser and its canonical encoding: canonical bytes parse back to exactly
//! themselves; any manifest JSON that is valid encodes to canonical bytes that parse back to the
//! same manifest (parse → encode → parse); a signature check never panics.
#![no_main]

use hattama_core::evidence::{Manifest, SignedManifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::from_canonical(data) {
        assert_eq!(m.to_canonical().expect("a parsed manifest encodes"), data);
    }
    if let Ok(m) = serde_json::from_slice::<Manifest>(data)
        && let Ok(canonical) = m.to_canonical()
    {
        let again = Manifest::from_canonical(&canonical).expect("canonical bytes parse");
        assert_eq!(again, m);
        assert_eq!(again.to_canonical().expect("encodes again"), canonical);
    }
    // The last 64 bytes as a signature over the rest.
    if data.len() >= 64 {
        let (body, sig) = data.split_at(data.len() - 64);
        let _ = SignedManifest::verify(body, sig);
    }
});
