//! `hattama-witness`: a C2SP `tlog-witness` for Hattama's public log, small enough for a partner
//! organisation to run on a cheap server.
//!
//! It keeps its own Ed25519 key, the logs it witnesses (origin and verifier key) and, per log,
//! the latest checkpoint it cosigned, in an embedded SQLite database ([`store`]). Its HTTP side
//! ([`http`]) answers `POST /add-checkpoint` exactly as the spec says and serves, for monitors,
//! the latest cosigned checkpoint of each log. The checks themselves are the core's
//! (`hattama_core::witness`), shared with the log server and every verifier.

pub mod http;
pub mod store;
