//! Mobile bindings of the Hattama core (UniFFI proc-macros): the only crate that knows UniFFI.
//!
//! The apps are thin: they show screens, hand over camera bytes and schedule background work;
//! every decision lives in `hattama-core`. This crate exports a small surface over it:
//! - [`Client`]: one object per store (open, device identity, enroll, capture, list, show,
//!   delete, export, sync, status, receipts, transcription check);
//! - records and enums that mirror the core's types ([`types`]), converted with `From`;
//! - [`SyncListener`] (implemented by the app) and [`CancelHandle`] for a sync;
//! - one error, [`HattamaError`], grouped by what the app should do.
//!
//! Guarantees: every object is `Send + Sync` and every method may be called from any thread;
//! nothing here panics on bad input (errors come back as `HattamaError`); a listener that throws
//! or that the app dropped cannot crash a sync. Bindings for Kotlin, Swift and Python are
//! generated from the built library by `scripts/bindings` (`docs/mobile.md`).
//!
//! The crate has no `unsafe` of its own; the workspace's `forbid(unsafe_code)` holds here too
//! (UniFFI's generated scaffolding passes it).

mod client;
mod error;
mod sync;
pub mod types;

pub use client::{Client, verify_bundle, wipe_store};
pub use error::HattamaError;
pub use sync::{CancelHandle, SyncListener};

uniffi::setup_scaffolding!();

/// The evidence format version the bindings speak.
#[uniffi::export]
pub fn evidence_format_version() -> u64 {
    hattama_core::evidence::FORMAT_VERSION
}
