//! The fixed keys of the fuzz targets. The seed corpus is signed with them (by the test
//! `fuzz_seeds` of `tests/`, which includes this file), so that seeds reach past signature checks.

use ed25519_dalek::SigningKey;
use hattama_core::log::LogKey;

/// The origin of the fuzzing log.
pub const LOG_ORIGIN: &str = "fuzz.hattama.example/log";

/// The log's signing key.
pub fn log_signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// The log's verifier key.
pub fn log_key() -> LogKey {
    LogKey::for_signer(LOG_ORIGIN, &log_signing_key()).expect("a valid origin")
}

/// The server's receipt signing key.
pub fn receipt_signing_key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}
