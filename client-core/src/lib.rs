//! Hattama observer core.
//!
//! Everything an observer's device does, independent of any UI: the evidence format
//! ([`evidence`]), photo checks and metadata stripping ([`media`]), the offline store ([`store`]),
//! the capture pipeline and the device handle ([`Client`]), evidence bundles ([`bundle`]),
//! thumbnails ([`thumbnail`]), receipts ([`receipt`]) and, with the `sync` feature, enrollment
//! and upload to a server (`sync`). The mobile apps reach it through the `ffi` crate, the desktop
//! through the `hattama` CLI, the server through its evidence and media checks.
//!
//! The core reads no environment variable or config file: the app hands it a [`ClientConfig`]
//! and a data directory.

#[cfg(feature = "sync")]
pub mod audit;
pub mod bundle;
mod client;
pub mod decision;
pub mod election;
pub mod evidence;
pub mod hooks;
pub mod invite;
pub mod log;
pub mod media;
#[cfg(feature = "sync")]
pub mod mirror;
#[cfg(feature = "official")]
pub mod official;
pub mod package;
pub mod receipt;
pub mod retention;
pub mod store;
#[cfg(feature = "sync")]
pub mod sync;
pub mod thumbnail;
pub mod tus;
pub mod witness;

pub use store::StoreKey;

pub use client::{
    CaptureDetail, CaptureRefusal, CaptureRequest, Captured, Client, ClientConfig, Error, now_ms,
};
