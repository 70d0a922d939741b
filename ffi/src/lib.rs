//! Mobile bindings of the Hattama core.
//!
//! This crate will be the only one that knows UniFFI ([FFI] issue). Until then it only re-exports
//! the format version, so the workspace builds the crate and its boundary exists.

/// The evidence format version the bindings speak.
pub const EVIDENCE_FORMAT_VERSION: u64 = hattama_core::evidence::FORMAT_VERSION;
