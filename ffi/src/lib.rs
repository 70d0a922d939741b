//! Mobile bindings of the Hattama core.

uniffi::setup_scaffolding!();

/// The evidence format version the bindings speak.
#[uniffi::export]
pub fn evidence_format_version() -> u64 {
    hattama_core::evidence::FORMAT_VERSION
}
