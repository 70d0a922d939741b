//! Hattama server: enrollment, resumable ingest (tus) with signed receipts, and the admin
//! commands; later the public log, review and gallery.
//!
//! The server uses `hattama-core` for the evidence format and the photo checks: one
//! implementation, never two. Handlers are thin (`routes`), the rules live in `ingest`, and all
//! persistence sits behind the [`storage::Storage`] trait.

pub mod backup;
pub mod compare;
pub mod console;
pub mod demo;
pub mod error;
pub mod gallery;
pub mod ingest;
pub mod keys;
pub mod log;
pub mod metrics;
pub mod migrate;
pub mod objects;
pub mod observed;
pub mod package;
pub mod ratelimit;
pub mod review;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod throttle;
pub mod thumbs;
pub mod tls;
pub mod web;
pub mod witnessing;

/// The official-results CSV: defined in the core (`hattama_core::official`), with no server
/// dependency, so that the fuzz target `official_csv` builds without the server.
pub use hattama_core::official;
