//! Enrollment and the sync engine: the device side of `docs/sync-protocol.md`.
//!
//! The engine sends every capture that is not receipted or rejected, in sequence order, over
//! tus 1.0.0 (create, read the offset, send the rest in `PATCH` requests of at most 1 MiB),
//! fetches the server's receipt, verifies it under the key pinned at enrollment, and only then
//! marks the capture `receipted`, storing the receipt in the same transaction.
//!
//! Guarantees:
//! - A capture becomes `receipted` only with a receipt that verified under the pinned key and
//!   names this capture and its photo. A cut connection, a timeout or a crash leaves it
//!   `uploading`; the next run resumes from the server's offset.
//! - A receipt that fails verification is never retried silently for long: after
//!   [`SyncConfig::receipt_attempts`] fetches the sync stops with
//!   [`SyncError::ReceiptInvalid`].
//! - The public log is watched (`docs/transparency-log.md`): with a log key pinned at
//!   enrollment, a receipt counts only with its log entry and an inclusion proof that leads to
//!   a checkpoint signed with that key. The device keeps the newest checkpoint it verified; on
//!   each contact (the start of a sync) and for each receipt's checkpoint it checks that the
//!   log only grew since (a consistency proof, fetched from the server). A log that forked or
//!   shrank raises an alarm ([`SyncError::LogForked`], [`SyncError::LogShrank`]) that is
//!   stored with both signed checkpoints as evidence; the sync stops, every later sync stops
//!   with the same alarm, and no capture is marked receipted from that server again.
//!   A store enrolled before the server had a log has no log key: its receipts are checked
//!   without the log until it enrolls again (status says so; the same code works).
//! - Transient failures (network, 408, 425, 429, 5xx) back off exponentially with full jitter,
//!   or wait `Retry-After`; after [`SyncConfig::max_retries`] attempts without progress the sync
//!   stops with [`SyncError::Unreachable`]. A permanent refusal of a capture marks it `rejected`
//!   with the server's code and message and moves on; a refusal of the device itself (unknown
//!   or revoked device, wrong protocol) stops the sync and leaves the captures as they are.
//! - One sync per store at a time: an exclusive lock on `<store>/sync.lock`, plus an
//!   in-process flag on the [`crate::Client`].
//! - Cancellation is checked between requests, between chunks and during back-off sleeps; a
//!   request in flight is bounded by the timeouts of [`SyncConfig`].
//!
//! Logs carry sequence numbers, sizes, status codes and capture ids (hashes), never manifest
//! contents, keys or photo bytes.

pub use crate::invite::{CODE_ALPHABET, INVITE_PREFIX, canonical_code, invite_uri};
use std::fs::{File, TryLockError};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::Rng;
use reqwest::blocking::{RequestBuilder, Response};
use reqwest::header::{CONTENT_TYPE, HeaderMap, LOCATION, RETRY_AFTER};
use serde::Deserialize;

use crate::client::{Error, now_ms};
use crate::decision::{self, DecisionsAnswer};
use crate::election::{Election, ElectionError};
use crate::evidence::{DeviceKey, Manifest, Sha256Hash, check_id};
use crate::hooks;
use crate::log::{Checkpoint, Hash, LogError, LogKey, hash_from_base64, verify_checkpoint};
use crate::receipt::{MAX_RECEIPT_BYTES, ReceiptError, SignedReceipt};
use crate::retention;
use crate::store::{
    CaptureState, PendingCapture, Review, ServerRecord, Store, StoreError, WitnessedKept,
};
pub use crate::store::{KeptCheckpoint, LogAlarm, LogAlarmKind};
use crate::witness::{NotWitnessed, Policy};

/// The tus protocol version spoken.
pub const TUS_VERSION: &str = "1.0.0";

/// The domain-separation prefix of the enrollment signature.
pub const ENROLL_PREFIX: &[u8] = b"hattama/enroll/v1\n";

/// Largest `PATCH` body the protocol allows (1 MiB).
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

/// Largest enrollment answer accepted (the election package can be large).
pub const MAX_ENROLL_ANSWER_BYTES: usize = 16 << 20;

/// Largest error body read from the server.
const MAX_ERROR_BODY_BYTES: usize = 64 << 10;

/// Longest server message kept (in a rejection reason or an error).
const MAX_MESSAGE_CHARS: usize = 500;

/// Longest enrollment code accepted, in bytes.
pub const MAX_CODE_BYTES: usize = 256;

/// Name of the lock file in the store directory.
pub const LOCK_FILE: &str = "sync.lock";

/// Largest log answer accepted (a checkpoint, or a consistency proof with its checkpoint).
const MAX_LOG_ANSWER_BYTES: usize = 64 << 10;

/// Most hashes in a consistency proof (a tree of 2^64 entries needs fewer than 128).
const MAX_PROOF_HASHES: usize = 128;

/// Most consistency proofs fetched to check one checkpoint. Each answer proves against the
/// server's newest checkpoint, which may itself be newer than the one being checked (the log
/// grows meanwhile) and then needs checking in turn.
const MAX_CONSISTENCY_ROUNDS: u32 = 8;

/// How the sync talks to the server: timeouts, chunk size and back-off. The defaults follow
/// `docs/sync-protocol.md`; tests shrink the delays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConfig {
    /// First back-off ceiling (the protocol's 250 ms); each retry doubles it.
    pub backoff_base: Duration,
    /// Largest back-off ceiling (the protocol's 30 s).
    pub backoff_cap: Duration,
    /// Longest `Retry-After` honoured; a longer one is shortened to this.
    pub max_retry_after: Duration,
    /// Failed attempts in a row, without the server's offset growing, before the sync stops
    /// with [`SyncError::Unreachable`].
    pub max_retries: u32,
    /// Receipt fetches that fail verification before the sync stops with
    /// [`SyncError::ReceiptInvalid`].
    pub receipt_attempts: u32,
    /// Bytes per `PATCH` request, clamped to 1..=[`MAX_CHUNK_BYTES`].
    pub chunk_bytes: usize,
    /// Limit on opening a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Limit on one whole request, response body included. (reqwest's blocking client has no
    /// separate idle-read timeout.) A `PATCH` cut by it keeps the bytes the server received.
    pub request_timeout: Duration,
    /// Send `Upload-Checksum: sha256 …` with every `PATCH`.
    pub checksum: bool,
    /// Certificate authorities to trust besides the built-in web roots (PEM, one or more
    /// `CERTIFICATE` blocks): a server whose certificate comes from an organisation's own CA.
    pub extra_ca_pem: Option<Vec<u8>>,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            backoff_base: Duration::from_millis(250),
            backoff_cap: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
            max_retries: 8,
            receipt_attempts: 3,
            chunk_bytes: MAX_CHUNK_BYTES,
            connect_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(120),
            checksum: false,
            extra_ca_pem: None,
        }
    }
}

/// Why enrollment or a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The store has not enrolled with a server yet.
    #[error("this device is not enrolled with a server; enroll first")]
    NotEnrolled,
    /// Another sync of this store is running.
    #[error("a sync of this store is already running")]
    SyncBusy,
    /// The extra certificate authorities (`SyncConfig::extra_ca_pem`) are not PEM certificates.
    #[error("the trusted certificate authorities cannot be read: {0}")]
    BadCa(String),
    /// The server URL is not an `http` or `https` URL without query or fragment.
    #[error("invalid server URL: {0}")]
    BadUrl(String),
    /// The enrollment code is empty, too long or has control characters.
    #[error("invalid enrollment code")]
    BadCode,
    /// An invite is not of the form `hattama://enroll?server=URL&code=CODE`.
    #[error(
        "this is not an invite ({0}): give the invite exactly as the coordinator sent it \
         (hattama://enroll?server=…&code=…), or the server's URL and the code"
    )]
    BadInvite(String),
    /// The server could not be reached, or kept failing, for `attempts` attempts in a row.
    #[error("server unreachable after {attempts} attempts: {last_error}")]
    Unreachable {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last_error: String,
    },
    /// The server refused the enrollment, or this device as a whole (unknown, revoked).
    #[error("refused by the server ({status} {code}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The server's stable code word.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The server's receipt for a capture does not verify.
    #[error("the receipt for capture {capture} does not verify: {source}")]
    ReceiptInvalid {
        /// The capture.
        capture: Sha256Hash,
        /// What is wrong with it.
        source: ReceiptError,
    },
    /// The server answered outside the protocol.
    #[error("the server broke the protocol: {0}")]
    Protocol(String),
    /// The server's election package is invalid.
    #[error("the server sent an invalid election package: {0}")]
    Election(#[from] ElectionError),
    /// Enrolling would replace the pinned receipt key with another one.
    #[error("the server's receipt key differs from the one pinned at enrollment")]
    ServerKeyChanged,
    /// Enrolling would replace the pinned log key with another one.
    #[error("the server's log key differs from the one pinned at enrollment")]
    LogKeyChanged,
    /// A checkpoint or consistency proof the server sent does not verify under the pinned log
    /// key, or is malformed. Not an alarm: nothing shows that the log itself misbehaved.
    #[error("the server's log answer does not verify: {0}")]
    LogInvalid(LogError),
    /// ALARM: the server's public log forked or was rewritten: it signed two checkpoints that
    /// cannot both be states of one append-only log. Stored with both checkpoints
    /// ([`SyncStatus::log_alarm`]); every later sync stops with it and nothing is marked
    /// receipted from this server again.
    #[error(
        "the server's public log forked or was rewritten: its checkpoints of {old_size} and \
         {new_size} entries conflict ({detail})"
    )]
    LogForked {
        /// Size of the checkpoint seen first.
        old_size: u64,
        /// Size of the conflicting checkpoint.
        new_size: u64,
        /// What was checked and failed.
        detail: String,
    },
    /// ALARM: the server's public log shrank: after signing a tree of `old_size` entries it
    /// signed a smaller one, so entries it had logged are gone. Stored and handled like
    /// [`Self::LogForked`].
    #[error(
        "the server's public log shrank from {old_size} entries to {new_size}: entries it had \
         logged are gone"
    )]
    LogShrank {
        /// Size of the checkpoint seen first.
        old_size: u64,
        /// Size of the smaller checkpoint signed later.
        new_size: u64,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up HTTP: {0}")]
    Http(String),
}

impl SyncError {
    /// Whether this is a log alarm ([`Self::LogForked`] or [`Self::LogShrank`]).
    pub fn is_log_alarm(&self) -> bool {
        matches!(self, Self::LogForked { .. } | Self::LogShrank { .. })
    }
}

impl From<&LogAlarm> for SyncError {
    fn from(a: &LogAlarm) -> Self {
        match a.kind {
            LogAlarmKind::Forked => Self::LogForked {
                old_size: a.old_size,
                new_size: a.new_size,
                detail: a.detail.clone(),
            },
            LogAlarmKind::Shrank => Self::LogShrank { old_size: a.old_size, new_size: a.new_size },
        }
    }
}

/// Reports progress of a sync; the app implements it (called on the syncing thread).
pub trait SyncListener: Send + Sync {
    /// Called at the start, after every request that moves a capture, before every back-off
    /// wait and at the end.
    fn on_progress(&self, progress: SyncProgress);
}

/// A listener that ignores progress.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl SyncListener for NoProgress {
    fn on_progress(&self, _: SyncProgress) {}
}

/// One progress report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncProgress {
    /// The sync starts with this many captures (and photo bytes) to send.
    Started {
        /// Captures to send.
        pending: u64,
        /// Their photo bytes.
        bytes: u64,
    },
    /// A capture moved.
    Capture(CaptureProgress),
    /// A request failed transiently; the sync waits before retrying.
    Retrying {
        /// The capture.
        id: Sha256Hash,
        /// Its sequence number.
        seq: u64,
        /// Failed attempts in a row so far.
        attempt: u32,
        /// The wait, in milliseconds.
        delay_ms: u64,
        /// What failed (status or network error; no personal data).
        reason: String,
    },
    /// The sync ended (successfully or cancelled).
    Finished(SyncSummary),
}

/// Where one capture's upload stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureProgress {
    /// The capture.
    pub id: Sha256Hash,
    /// Its sequence number.
    pub seq: u64,
    /// Bytes the server holds.
    pub sent: u64,
    /// Photo length.
    pub total: u64,
    /// `Uploading`, then `Receipted` or `Rejected`.
    pub state: CaptureState,
}

/// What a sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncSummary {
    /// Captures receipted by this run.
    pub receipted: u64,
    /// Captures rejected by this run.
    pub rejected: u64,
    /// Captures still to send when it ended.
    pub remaining: u64,
    /// Growth of the server's offsets during this run: photo bytes it received (counting
    /// those a cut request left there), not counting what earlier runs sent.
    pub bytes_sent: u64,
    /// Whether it stopped because it was cancelled.
    pub cancelled: bool,
    /// Size of the newest log checkpoint verified so far (by this run or an earlier one);
    /// `None` without a pinned log key or before the first.
    pub log_size: Option<u64>,
    /// The captures the server refused during this run, with its reasons.
    pub refused: Vec<RefusedCapture>,
    /// The coordinators' review decisions this run learned (new or changed).
    pub reviewed: Vec<ReviewedCapture>,
    /// Size of the newest checkpoint verified with a quorum of cosignatures under the
    /// election's witness policy (by this run or an earlier one): every receipted capture
    /// whose log entry is below it is `witnessed`. `None` without a policy or before the first.
    pub witnessed_size: Option<u64>,
    /// Why the server's cosigned checkpoint was refused as witnessed in this run, if it was.
    pub witness_problem: Option<String>,
}

/// A capture the server refused for good, with its reason (`code: message`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedCapture {
    /// The capture.
    pub id: Sha256Hash,
    /// Its sequence number.
    pub seq: u64,
    /// The server's code word and message.
    pub reason: String,
}

/// A review decision the device learned about one of its captures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewedCapture {
    /// The capture.
    pub id: Sha256Hash,
    /// Its sequence number.
    pub seq: u64,
    /// Its precinct.
    pub precinct: String,
    /// The decision.
    pub review: Review,
}

/// Cancels a running sync: cheap to clone, shared between threads.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the sync to stop at the next check.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`Self::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// A handle that cancels this token when dropped (for an app's task handle).
    pub fn cancel_on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(self.clone())
    }
}

/// Cancels its token when dropped.
#[derive(Debug)]
pub struct CancelOnDrop(CancelToken);

impl CancelOnDrop {
    /// The token it cancels.
    pub fn token(&self) -> &CancelToken {
        &self.0
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// What enrollment established, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrollment {
    /// The server's base URL (no trailing slash).
    pub server_url: String,
    /// The server's id for this device: SHA-256 of the device key.
    pub device_id: Sha256Hash,
    /// The pinned receipt key.
    pub receipt_key: DeviceKey,
    /// The pinned key of the server's public log; `None` for a store that enrolled before the
    /// server had a log (it pins one on its next enrollment).
    pub log_key: Option<LogKey>,
    /// Every precinct assigned to this device so far.
    pub precincts: Vec<String>,
    /// The election package, for offline use.
    pub election: Election,
    /// The election package's witness policy: which witnesses must cosign a checkpoint for
    /// the captures it covers to be `witnessed`; `None` without witnesses.
    pub witness_policy: Option<Policy>,
}

impl Enrollment {
    pub(crate) fn from_record(r: ServerRecord) -> Result<Self, Error> {
        let election = Election::from_json(&r.election)
            .map_err(|e| StoreError::Corrupt(format!("stored election package: {e}")))?;
        let log_key = r
            .log_key
            .as_deref()
            .map(LogKey::from_vkey)
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("stored log key: {e}")))?;
        let witness_policy = r
            .witness_policy
            .as_deref()
            .map(Policy::parse)
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("stored witness policy: {e}")))?;
        Ok(Self {
            witness_policy,
            server_url: r.base_url,
            device_id: r.device_id,
            receipt_key: r.receipt_key,
            log_key,
            precincts: r.precincts,
            election,
        })
    }
}

/// Captures per state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Stored, not queued.
    pub captured: u64,
    /// Queued.
    pub queued: u64,
    /// Upload started.
    pub uploading: u64,
    /// Receipted (witnessed ones included).
    pub receipted: u64,
    /// Of the receipted, those `witnessed`: a checkpoint covering them carries a quorum of
    /// cosignatures under the election's witness policy.
    pub witnessed: u64,
    /// Rejected.
    pub rejected: u64,
    /// Deleted (tombstones).
    pub deleted: u64,
}

/// The store's sync status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncStatus {
    /// Captures per state.
    pub counts: StateCounts,
    /// The enrolled server, if any.
    pub server_url: Option<String>,
    /// The server's id for this device, once enrolled.
    pub device_id: Option<Sha256Hash>,
    /// When the last sync ended.
    pub last_sync_at_ms: Option<u64>,
    /// Why the last sync failed, if it did.
    pub last_sync_error: Option<String>,
    /// When the last failed attempt suggested trying again (back-off or `Retry-After`), for
    /// the first capture still to be sent; `None` if it has not failed.
    pub next_attempt_at_ms: Option<u64>,
    /// Whether a sync of this store is running now (in any process).
    pub running: bool,
    /// The pinned log key (verifier key string); `None` if not enrolled, or enrolled before
    /// the server had a log: then receipts are checked without the log until the device
    /// enrolls again.
    pub log_key: Option<String>,
    /// The newest log checkpoint verified.
    pub log_checkpoint: Option<KeptCheckpoint>,
    /// The raised log alarm: while it is set, syncs stop with it.
    pub log_alarm: Option<LogAlarm>,
    /// Whether the election package carries a witness policy (asking for cosignatures).
    pub witness_policy: bool,
    /// The newest checkpoint verified with a quorum of cosignatures under that policy.
    pub witnessed_checkpoint: Option<WitnessedKept>,
    /// Why the last cosigned checkpoint the server served was not taken as witnessed.
    pub witness_problem: Option<String>,
}

/// The exclusive lock on `<store>/sync.lock`, released when dropped (closing the file).
#[derive(Debug)]
pub(crate) struct SyncLock {
    _file: File,
}

impl SyncLock {
    /// Takes the lock without waiting; [`SyncError::SyncBusy`] if another holder has it.
    pub(crate) fn acquire(dir: &Path) -> Result<Self, Error> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(StoreError::from)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(SyncError::SyncBusy.into()),
            Err(TryLockError::Error(e)) => Err(StoreError::from(e).into()),
        }
    }

    /// Whether another holder has the lock now.
    pub(crate) fn is_held(dir: &Path) -> bool {
        matches!(Self::acquire(dir), Err(Error::Sync(SyncError::SyncBusy)))
    }
}

// ----------------------------------------------------------------------------------------------
// Pure helpers: back-off, Retry-After, tus metadata, URLs, the enrollment message.

/// The back-off ceiling before retry number `attempt` (0-based): `base * 2^attempt`, at most
/// `cap`.
pub fn backoff_ceiling(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(cap)
}

/// "Full jitter": a delay drawn uniformly from `0..=ceiling`.
pub fn full_jitter(ceiling: Duration, rng: &mut impl Rng) -> Duration {
    let max = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rng.gen_range(0..=max))
}

/// Parses `Retry-After` in its delay-seconds form; the HTTP-date form is not used by the
/// protocol and gives `None` (the caller then backs off as usual).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() || v.len() > 12 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().map(Duration::from_secs)
}

/// The tus `Upload-Metadata` value: `manifest` is the canonical manifest bytes and
/// `signature` the 128 lowercase hex digits of the signature, each base64-encoded (standard
/// alphabet, padded).
pub fn upload_metadata(canonical: &[u8], signature: &[u8; 64]) -> String {
    format!(
        "manifest {},signature {}",
        BASE64.encode(canonical),
        BASE64.encode(hex::encode(signature))
    )
}

/// The bytes a device signs to enroll: `hattama/enroll/v1\n` + code + `\n` + device key hex.
pub fn enroll_message(code: &str, device_key_hex: &str) -> Vec<u8> {
    let mut msg = ENROLL_PREFIX.to_vec();
    msg.extend_from_slice(code.as_bytes());
    msg.push(b'\n');
    msg.extend_from_slice(device_key_hex.as_bytes());
    msg
}

/// Whether `s` looks like an invite URI (rather than a server URL).
pub fn is_invite(s: &str) -> bool {
    s.trim().get(..8).is_some_and(|p| p.eq_ignore_ascii_case("hattama:"))
}

/// Reads an invite URI exactly as printed (the server URL percent-encoded or not): returns
/// the server's base URL (checked, without a trailing slash) and the code.
pub fn parse_invite(uri: &str) -> Result<(String, String), SyncError> {
    let bad = |what: &str| SyncError::BadInvite(what.to_owned());
    let url = reqwest::Url::parse(uri.trim()).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != "hattama" || url.host_str() != Some("enroll") {
        return Err(bad("it does not start with hattama://enroll"));
    }
    let (mut server, mut code) = (None, None);
    for (key, value) in url.query_pairs() {
        let slot = match key.as_ref() {
            "server" => &mut server,
            "code" => &mut code,
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(bad(&format!("{key} appears twice")));
        }
    }
    let server = server.ok_or_else(|| bad("it names no server"))?;
    let code = code.ok_or_else(|| bad("it has no code"))?;
    Ok((normalize_base_url(&server)?, code))
}

/// Checks a server URL and returns it without a trailing slash.
pub fn normalize_base_url(url: &str) -> Result<String, SyncError> {
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| SyncError::BadUrl(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(SyncError::BadUrl("the scheme must be http or https".into()));
    }
    if parsed.host_str().is_none() || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(SyncError::BadUrl("need a host and no query or fragment".into()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(SyncError::BadUrl("credentials in the URL are not supported".into()));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

fn is_transient(status: u16) -> bool {
    matches!(status, 408 | 425 | 429) || (500..=599).contains(&status)
}

/// Refusals about the device as a whole: rejecting one capture for them would be wrong.
fn is_device_refusal(status: u16, code: &str) -> bool {
    matches!(status, 401 | 412) || matches!(code, "device_unknown" | "device_revoked")
}

fn http_client(config: &SyncConfig) -> Result<reqwest::blocking::Client, SyncError> {
    let mut builder = reqwest::blocking::Client::builder();
    if let Some(pem) = &config.extra_ca_pem {
        let roots = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| SyncError::BadCa(error_chain(&e)))?;
        if roots.is_empty() {
            return Err(SyncError::BadCa("no CERTIFICATE block in it".into()));
        }
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
    }
    builder
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        // The core reads no environment: no proxy from HTTP_PROXY and friends.
        .no_proxy()
        .user_agent(concat!("hattama-core/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| SyncError::Http(error_chain(&e)))
}

/// An error and its sources on one line, without the URL.
pub(crate) fn error_chain(e: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = source {
        let part = err.to_string();
        // reqwest's own text repeats the URL; its sources say what happened.
        let part = part.split(" for url (").next().unwrap_or_default();
        if !text.contains(part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(part);
        }
        source = err.source();
    }
    text
}

/// Waits `delay` unless cancelled first; returns false if cancelled.
fn sleep_unless_cancelled(delay: Duration, cancel: &CancelToken) -> bool {
    let deadline = Instant::now() + delay;
    loop {
        if cancel.is_cancelled() {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(25)));
    }
}

// ----------------------------------------------------------------------------------------------
// One HTTP exchange, classified.

/// A 2xx answer.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// Why an exchange did not give a 2xx answer.
#[derive(Debug)]
enum HttpFailure {
    /// Network failure, 408, 425, 429 or 5xx.
    Transient { reason: String, retry_after: Option<Duration> },
    /// Any other 4xx.
    Refused { status: u16, code: String, message: String },
    /// An answer outside the protocol (1xx, 3xx, oversized).
    Protocol(String),
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    message: String,
}

fn read_limited(resp: Response, limit: usize) -> Result<Vec<u8>, HttpFailure> {
    let mut body = Vec::new();
    resp.take(limit as u64 + 1).read_to_end(&mut body).map_err(|e| HttpFailure::Transient {
        reason: format!("network: reading the answer: {e}"),
        retry_after: None,
    })?;
    if body.len() > limit {
        return Err(HttpFailure::Protocol(format!("answer larger than {limit} bytes")));
    }
    Ok(body)
}

/// Sends a request and sorts the outcome.
fn exchange(request: RequestBuilder, body_limit: usize) -> Result<Answer, HttpFailure> {
    let resp = request.send().map_err(|e| HttpFailure::Transient {
        reason: format!("network: {}", error_chain(&e)),
        retry_after: None,
    })?;
    let status = resp.status();
    let headers = resp.headers().clone();
    if status.is_success() {
        let body = read_limited(resp, body_limit)?;
        return Ok(Answer { status: status.as_u16(), headers, body });
    }
    let code = status.as_u16();
    let body = read_limited(resp, MAX_ERROR_BODY_BYTES).unwrap_or_default();
    let parsed: Option<ErrorBody> = serde_json::from_slice(&body).ok();
    let (word, message) = match parsed {
        Some(b) => (short(b.error, 64), short(b.message, MAX_MESSAGE_CHARS)),
        None => (
            format!("http_{code}"),
            status.canonical_reason().unwrap_or("no reason given").to_owned(),
        ),
    };
    if is_transient(code) {
        let retry_after =
            headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        return Err(HttpFailure::Transient { reason: format!("{code} {word}"), retry_after });
    }
    if status.is_client_error() {
        return Err(HttpFailure::Refused { status: code, code: word, message });
    }
    Err(HttpFailure::Protocol(format!("unexpected status {status}")))
}

/// At most `max` characters of `s` (server texts end up in the store and in logs).
fn short(s: String, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => s[..end].to_owned(),
        None => s,
    }
}

/// The request header asking the server for the receipt in the answer of the request that
/// completes an upload (`docs/sync-protocol.md`).
const RECEIPT_HEADER: &str = "Hattama-Receipt";

/// The receipt an upload's answer carries: a JSON body (an answer without one has none).
fn receipt_in(answer: Answer) -> Option<Vec<u8>> {
    let json = answer
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    (json && !answer.body.is_empty()).then_some(answer.body)
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    let v = headers.get(name)?.to_str().ok()?.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

// ----------------------------------------------------------------------------------------------
// Enrollment.

#[derive(Deserialize)]
struct EnrollAnswer {
    device_id: String,
    receipt_key: String,
    #[serde(default)]
    log_key: Option<String>,
    precincts: Vec<String>,
    election: serde_json::Value,
    #[serde(default)]
    witness_policy: Option<String>,
}

/// Enrolls with the server at `base_url` using `code`; stores and returns the result.
pub(crate) fn enroll(
    store: &Store,
    key: &SigningKey,
    config: &SyncConfig,
    base_url: &str,
    code: &str,
) -> Result<Enrollment, Error> {
    let base = normalize_base_url(base_url)?;
    let code = canonical_code(code);
    let code = code.as_str();
    if code.is_empty() || code.len() > MAX_CODE_BYTES || code.chars().any(char::is_control) {
        return Err(SyncError::BadCode.into());
    }
    let device_key = DeviceKey(key.verifying_key().to_bytes());
    let device_hex = device_key.to_hex();
    let signature = hex::encode(key.sign(&enroll_message(code, &device_hex)).to_bytes());
    let body =
        serde_json::json!({ "code": code, "device_key": device_hex, "signature": signature });
    let body = serde_json::to_vec(&body).map_err(|e| SyncError::Protocol(e.to_string()))?;
    let http = http_client(config)?;
    let url = format!("{base}/api/v1/enroll");
    let mut attempts = 0;
    let answer = loop {
        let request = http.post(&url).header(CONTENT_TYPE, "application/json").body(body.clone());
        match exchange(request, MAX_ENROLL_ANSWER_BYTES) {
            Ok(a) => break a,
            Err(HttpFailure::Transient { reason, retry_after }) => {
                attempts += 1;
                if attempts > config.max_retries {
                    return Err(SyncError::Unreachable { attempts, last_error: reason }.into());
                }
                let delay =
                    retry_after.map(|d| d.min(config.max_retry_after)).unwrap_or_else(|| {
                        let ceiling =
                            backoff_ceiling(config.backoff_base, config.backoff_cap, attempts - 1);
                        full_jitter(ceiling, &mut rand::thread_rng())
                    });
                tracing::info!(attempts, delay_ms = delay.as_millis() as u64, %reason, "enrollment failed, retrying");
                std::thread::sleep(delay);
            }
            Err(HttpFailure::Refused { status, code, message }) => {
                return Err(SyncError::Refused { status, code, message }.into());
            }
            Err(HttpFailure::Protocol(p)) => return Err(SyncError::Protocol(p).into()),
        }
    };
    if answer.status != 200 {
        return Err(SyncError::Protocol(format!("enrollment answered {}", answer.status)).into());
    }
    let parsed: EnrollAnswer = serde_json::from_slice(&answer.body)
        .map_err(|e| SyncError::Protocol(format!("enrollment answer: {e}")))?;
    let device_id = Sha256Hash::from_hex(&parsed.device_id)
        .ok_or_else(|| SyncError::Protocol("device_id is not 64 lowercase hex digits".into()))?;
    if device_id != Sha256Hash::of(&device_key.0) {
        return Err(
            SyncError::Protocol("device_id is not the SHA-256 of the device key".into()).into()
        );
    }
    let receipt_key = crate::evidence::parse_lower_hex::<32>(&parsed.receipt_key)
        .filter(|k| VerifyingKey::from_bytes(k).is_ok())
        .map(DeviceKey)
        .ok_or_else(|| SyncError::Protocol("receipt_key is not an ed25519 public key".into()))?;
    let log_key = parsed
        .log_key
        .as_deref()
        .ok_or_else(|| SyncError::Protocol("the enrollment answer has no log_key".into()))?;
    let log_key =
        LogKey::from_vkey(log_key).map_err(|e| SyncError::Protocol(format!("log_key: {e}")))?.vkey;
    for p in &parsed.precincts {
        check_id("precinct", p).map_err(|e| SyncError::Protocol(e.to_string()))?;
    }
    let election_json =
        serde_json::to_vec(&parsed.election).map_err(|e| SyncError::Protocol(e.to_string()))?;
    Election::from_json(&election_json).map_err(SyncError::from)?;
    let witness_policy = match &parsed.witness_policy {
        Some(text) => {
            let policy = Policy::parse(text.as_bytes())
                .map_err(|e| SyncError::Protocol(format!("witness_policy: {e}")))?;
            let pinned = LogKey::from_vkey(&log_key)
                .map_err(|e| SyncError::Protocol(format!("log_key: {e}")))?;
            if !policy.names_log(&pinned) {
                return Err(SyncError::Protocol(
                    "the witness policy does not name the server's log".into(),
                )
                .into());
            }
            // `quorum none` asks for nothing: no capture could ever be witnessed under it.
            policy.requires_cosignatures().then(|| text.clone().into_bytes())
        }
        None => None,
    };
    let now = now_ms();
    let record = store.write(|tx| -> Result<ServerRecord, Error> {
        let mut precincts = parsed.precincts.clone();
        if let Some(old) = Store::server_in(tx)? {
            if old.receipt_key != receipt_key {
                return Err(SyncError::ServerKeyChanged.into());
            }
            match &old.log_key {
                Some(pinned) if *pinned != log_key => return Err(SyncError::LogKeyChanged.into()),
                Some(_) => {}
                None => tracing::info!("pinned the log key of a server enrolled with before"),
            }
            precincts.extend(old.precincts);
        }
        precincts.sort();
        precincts.dedup();
        let record = ServerRecord {
            base_url: base.clone(),
            device_id,
            receipt_key,
            precincts,
            election: election_json.clone(),
            enrolled_at_ms: now,
            last_sync_at_ms: None,
            last_sync_error: None,
            log_key: Some(log_key.clone()),
            witness_policy: witness_policy.clone(),
            witness_problem: None,
        };
        Store::save_server(tx, &record)?;
        Ok(record)
    })?;
    tracing::info!(precincts = record.precincts.len(), "enrolled");
    Enrollment::from_record(record)
}

// ----------------------------------------------------------------------------------------------
// The sync loop.

/// Where a capture's upload goes next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Create,
    Offset,
    Send(u64),
    Receipt,
}

/// How a step failed, decided by the step.
enum Failure {
    /// Wait (back-off or `Retry-After`), then go on with `then`.
    Retry { reason: String, retry_after: Option<Duration>, then: Step },
    /// The server refused this capture for good: mark it rejected.
    Reject { reason: String },
    /// Stop the sync.
    Fatal(Error),
}

impl Failure {
    fn fatal(e: impl Into<Error>) -> Self {
        Self::Fatal(e.into())
    }

    fn protocol(what: impl Into<String>) -> Self {
        Self::fatal(SyncError::Protocol(what.into()))
    }

    /// A step's failure with the common rules: transient → retry with `then`; device refusal
    /// → stop; other refusals → `refused(status, code, message)`.
    fn from_http(
        f: HttpFailure,
        then: Step,
        refused: impl FnOnce(u16, String, String) -> Failure,
    ) -> Self {
        match f {
            HttpFailure::Transient { reason, retry_after } => {
                Self::Retry { reason, retry_after, then }
            }
            HttpFailure::Refused { status, code, message } if is_device_refusal(status, &code) => {
                Self::fatal(SyncError::Refused { status, code, message })
            }
            HttpFailure::Refused { status, code, message } => refused(status, code, message),
            HttpFailure::Protocol(p) => Self::protocol(p),
        }
    }
}

fn reject(code: String, message: String) -> Failure {
    Failure::Reject { reason: format!("{code}: {message}") }
}

/// What happened to one capture.
enum Outcome {
    Receipted,
    Rejected,
    /// No longer pending when its turn came (deleted or finished by someone else).
    Skipped,
    Cancelled,
}

/// One capture being sent.
struct Upload {
    capture: PendingCapture,
    /// The election and precinct its log entry must state.
    election: String,
    precinct: String,
    photo: Vec<u8>,
    url: String,
}

impl Upload {
    fn len(&self) -> u64 {
        self.photo.len() as u64
    }
}

struct Engine<'a> {
    store: &'a Store,
    /// The device's key, to prove it when asking for its review decisions.
    key: &'a SigningKey,
    config: &'a SyncConfig,
    listener: &'a dyn SyncListener,
    cancel: &'a CancelToken,
    http: reqwest::blocking::Client,
    base: String,
    pinned: DeviceKey,
    /// The pinned log key; `None` for a store enrolled before the server had a log.
    log_key: Option<LogKey>,
    /// The election package's witness policy, if any.
    policy: Option<Policy>,
    /// The enrolled election, when it removes photos after their receipt
    /// ([`crate::retention`]).
    removes_photos: Option<Election>,
    summary: SyncSummary,
}

/// Runs one sync of `store` (the caller holds the lock).
pub(crate) fn run(
    store: &Store,
    key: &SigningKey,
    config: &SyncConfig,
    listener: &dyn SyncListener,
    cancel: &CancelToken,
) -> Result<SyncSummary, Error> {
    let server = store.server()?.ok_or(SyncError::NotEnrolled)?;
    let log_key = server
        .log_key
        .as_deref()
        .map(LogKey::from_vkey)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("stored log key: {e}")))?;
    let policy = server
        .witness_policy
        .as_deref()
        .map(Policy::parse)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("stored witness policy: {e}")))?;
    let election = Election::from_json(&server.election)
        .map_err(|e| StoreError::Corrupt(format!("stored election package: {e}")))?;
    let removes_photos = election.removes_photos_after_receipt().then_some(election);
    let http = http_client(config)?;
    let mut engine = Engine {
        store,
        key,
        config,
        listener,
        cancel,
        http,
        base: server.base_url,
        pinned: server.receipt_key,
        log_key,
        policy,
        removes_photos,
        summary: SyncSummary::default(),
    };
    let result = engine.run_all();
    let error = result.as_ref().err().map(ToString::to_string);
    let recorded = store.write(|tx| Store::record_sync_end(tx, now_ms(), error.as_deref()));
    let summary = result?;
    recorded?;
    tracing::info!(
        receipted = summary.receipted,
        rejected = summary.rejected,
        remaining = summary.remaining,
        bytes = summary.bytes_sent,
        cancelled = summary.cancelled,
        "sync finished"
    );
    listener.on_progress(SyncProgress::Finished(summary.clone()));
    Ok(summary)
}

impl Engine<'_> {
    fn run_all(&mut self) -> Result<SyncSummary, Error> {
        if let Some(alarm) = self.store.log_alarm()? {
            return Err(SyncError::from(&alarm).into());
        }
        let (pending, bytes) = self.store.pending_totals()?;
        self.listener.on_progress(SyncProgress::Started { pending, bytes });
        // The contact check comes first, so nothing is sent to a server whose log forked.
        // If the server cannot be reached now, the uploads find out and report it (with
        // each capture's next attempt); the check then runs again at the end.
        let mut checked = self.cancel.is_cancelled() || self.check_log(0)?;
        let mut after = 0;
        while let Some(capture) = self.store.next_pending(after)? {
            if self.cancel.is_cancelled() {
                self.summary.cancelled = true;
                break;
            }
            after = capture.seq;
            let id = capture.id;
            match self.send_capture(capture)? {
                Outcome::Receipted => {
                    self.summary.receipted += 1;
                    if let Some(election) = &self.removes_photos {
                        let witnesses = self.policy.is_some();
                        retention::remove_one(self.store, &id, election, witnesses, now_ms())?;
                    }
                }
                Outcome::Rejected => self.summary.rejected += 1,
                Outcome::Skipped => {}
                Outcome::Cancelled => {
                    self.summary.cancelled = true;
                    break;
                }
            }
        }
        if self.cancel.is_cancelled() {
            self.summary.cancelled = true;
        }
        if !checked && !self.summary.cancelled {
            checked = self.check_log(self.config.max_retries)?;
            self.summary.cancelled = !checked;
        }
        if !self.summary.cancelled {
            self.fetch_decisions()?;
            self.check_witnessed()?;
        }
        if let Some(election) = &self.removes_photos {
            // Also what an earlier sync left (a crash after a receipt's commit), and what a
            // witnessed checkpoint has just covered.
            retention::sweep(self.store, election, self.policy.is_some(), now_ms())?;
        }
        self.summary.remaining = self.store.pending_totals()?.0;
        self.summary.log_size = self.store.log_checkpoint()?.map(|c| c.size);
        self.summary.witnessed_size = self.store.witnessed_checkpoint()?.map(|c| c.size);
        Ok(self.summary.clone())
    }

    /// Asks the server for the coordinators' newest decisions on this device's captures
    /// (`docs/sync-protocol.md`, "Review decisions"), proving the device key with a signature
    /// over the server's fresh challenge, verifies each under the pinned receipt key and keeps
    /// the new ones ([`SyncSummary::reviewed`]). Only a storage failure stops the sync: the
    /// uploads are done, and a decision missed now is asked for again at the next sync.
    fn fetch_decisions(&mut self) -> Result<(), Error> {
        let receipted = self.store.counts()?.iter().any(|(s, n)| s == "receipted" && *n > 0);
        if !receipted {
            return Ok(());
        }
        let answer = match self.ask_decisions() {
            Ok(a) => a,
            Err(reason) => {
                tracing::info!(%reason, "review decisions not fetched this time");
                return Ok(());
            }
        };
        let own = DeviceKey(self.key.verifying_key().to_bytes());
        let mut learned = Vec::new();
        self.store.write(|tx| -> Result<(), Error> {
            for signed in &answer.decisions {
                let d = &signed.decision;
                if let Err(e) = signed.verify(&self.pinned, &own) {
                    tracing::warn!(error = %e, "a review decision does not verify; ignored");
                    continue;
                }
                let review = Review {
                    kind: d.kind,
                    reason: d.reason.clone(),
                    decided_at_ms: d.decided_at_ms,
                };
                let statement = serde_json::to_vec(signed)
                    .map_err(|e| StoreError::Corrupt(format!("decision: {e}")))?;
                if Store::save_review(tx, &d.capture_id, &review, &statement, now_ms())? {
                    learned.push((d.capture_id, review));
                }
            }
            Ok(())
        })?;
        for (id, review) in learned {
            let Some(record) = self.store.find(&id.to_hex())?.pop() else { continue };
            tracing::info!(seq = record.seq, decision = review.kind.as_str(), "review decision");
            self.summary.reviewed.push(ReviewedCapture {
                id,
                seq: record.seq,
                precinct: record.precinct,
                review,
            });
        }
        Ok(())
    }

    /// With a witness policy, fetches the server's cosigned checkpoint (`GET
    /// /log/cosigned-checkpoint`, `docs/witness.md`) and keeps it as witnessed only if it is
    /// signed by the pinned log, carries a quorum of valid cosignatures under the policy and is
    /// consistent with every checkpoint seen (else the log alarm). No new upload is needed: a
    /// capture receipted earlier becomes `witnessed` as soon as a witnessed checkpoint covers
    /// it. A checkpoint without the quorum is refused as witnessed
    /// ([`SyncSummary::witness_problem`], kept for status); an unreachable server only
    /// postpones this to the next sync.
    fn check_witnessed(&mut self) -> Result<(), Error> {
        let (Some(policy), Some(key)) = (&self.policy, &self.log_key) else { return Ok(()) };
        let request = self.http.get(format!("{}/log/cosigned-checkpoint", self.base));
        let body = match exchange(request, MAX_LOG_ANSWER_BYTES) {
            Ok(a) if a.status == 200 => a.body,
            Ok(_) | Err(HttpFailure::Refused { status: 404, .. }) => return Ok(()),
            Err(f) => {
                let reason = match f {
                    HttpFailure::Transient { reason, .. } | HttpFailure::Protocol(reason) => reason,
                    HttpFailure::Refused { status, code, .. } => format!("{status} {code}"),
                };
                tracing::info!(%reason, "cosigned checkpoint not fetched this time");
                return Ok(());
            }
        };
        let witnessed = match crate::witness::check_witnessed(policy, key, &body) {
            Ok(w) => w,
            Err(problem) => return self.not_witnessed(&problem),
        };
        match self.observe(key, witnessed.checkpoint.clone(), Step::Create) {
            Ok(()) => {}
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry { reason, .. } | Failure::Reject { reason }) => {
                tracing::info!(%reason, "cosigned checkpoint not checked this time");
                return Ok(());
            }
        }
        let kept = WitnessedKept {
            size: witnessed.checkpoint.size,
            note: body,
            cosignatures: witnessed
                .cosignatures
                .iter()
                .map(|c| (c.witness.clone(), c.time))
                .collect(),
            seen_at_ms: now_ms(),
        };
        let newer = self.store.write(|tx| -> Result<bool, StoreError> {
            Store::record_witness_problem(tx, None)?;
            Store::keep_witnessed_checkpoint(tx, &kept)
        })?;
        if newer {
            tracing::info!(
                size = kept.size,
                cosignatures = kept.cosignatures.len(),
                "kept a newer witnessed checkpoint"
            );
        }
        Ok(())
    }

    /// Records that the server's cosigned checkpoint is not witnessed, and why.
    fn not_witnessed(&mut self, problem: &NotWitnessed) -> Result<(), Error> {
        let text = problem.to_string();
        tracing::warn!(problem = %text, "the server's cosigned checkpoint is NOT witnessed");
        self.store.write(|tx| Store::record_witness_problem(tx, Some(&text)))?;
        self.summary.witness_problem = Some(text);
        Ok(())
    }

    /// `POST /api/v1/challenge`, then `POST /api/v1/decisions` with the signed challenge.
    fn ask_decisions(&self) -> Result<DecisionsAnswer, String> {
        #[derive(Deserialize)]
        struct Challenge {
            challenge: String,
        }
        let http = |f: HttpFailure| match f {
            HttpFailure::Transient { reason, .. } => reason,
            HttpFailure::Refused { status, code, message } => format!("{status} {code}: {message}"),
            HttpFailure::Protocol(p) => p,
        };
        let request = self.http.post(format!("{}/api/v1/challenge", self.base)).body(Vec::new());
        let answer = exchange(request, decision::MAX_CHALLENGE_BYTES + 256).map_err(http)?;
        let challenge: Challenge =
            serde_json::from_slice(&answer.body).map_err(|e| format!("challenge: {e}"))?;
        let challenge = challenge.challenge;
        if challenge.is_empty()
            || challenge.len() > decision::MAX_CHALLENGE_BYTES
            || challenge.chars().any(char::is_control)
        {
            return Err("the challenge is empty, too long or has control characters".into());
        }
        let device_hex = DeviceKey(self.key.verifying_key().to_bytes()).to_hex();
        let signature = hex::encode(
            self.key.sign(&decision::request_message(&challenge, &device_hex)).to_bytes(),
        );
        let body = serde_json::json!({
            "challenge": challenge,
            "device_key": device_hex,
            "signature": signature,
        });
        let request = self
            .http
            .post(format!("{}/api/v1/decisions", self.base))
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        let answer = exchange(request, decision::MAX_ANSWER_BYTES).map_err(http)?;
        serde_json::from_slice(&answer.body).map_err(|e| format!("decisions: {e}"))
    }

    /// The contact check: fetches the log's newest checkpoint and checks it against the kept
    /// one (see [`Self::observe`]). Transient failures are retried up to `retries` times;
    /// returns false if they were exhausted (with `retries == 0`) or the sync was cancelled.
    fn check_log(&self, retries: u32) -> Result<bool, Error> {
        let Some(key) = &self.log_key else { return Ok(true) };
        let mut failures = 0u32;
        loop {
            let checked = self.fetch_checkpoint(key).and_then(|seen| match seen {
                Some(cp) => self.observe(key, cp, Step::Create),
                None => match self.store.log_checkpoint().map_err(Failure::fatal)? {
                    Some(kept) => Err(Failure::protocol(format!(
                        "the server has no log checkpoint, but it signed one of {} entries before",
                        kept.size
                    ))),
                    None => Ok(()),
                },
            });
            match checked {
                Ok(()) => return Ok(true),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Reject { reason }) => return Err(SyncError::Protocol(reason).into()),
                Err(Failure::Retry { reason, retry_after, .. }) => {
                    failures += 1;
                    if retries == 0 {
                        tracing::info!(%reason, "log check postponed to the end of the sync");
                        return Ok(false);
                    }
                    if failures > retries {
                        return Err(SyncError::Unreachable {
                            attempts: failures,
                            last_error: reason,
                        }
                        .into());
                    }
                    let delay = self.delay(failures, retry_after);
                    tracing::info!(failures, delay_ms = delay.as_millis() as u64, %reason, "log check failed, retrying");
                    if !sleep_unless_cancelled(delay, self.cancel) {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// `GET /log/checkpoint`, verified under the log key; `None` if the log is still empty.
    fn fetch_checkpoint(&self, key: &LogKey) -> Result<Option<Checkpoint>, Failure> {
        let request = self.http.get(format!("{}/log/checkpoint", self.base));
        let answer = match exchange(request, MAX_LOG_ANSWER_BYTES) {
            Ok(a) => a,
            Err(HttpFailure::Refused { status: 404, .. }) => return Ok(None),
            Err(f) => {
                return Err(Failure::from_http(f, Step::Create, |status, code, message| {
                    Failure::protocol(format!(
                        "the log checkpoint answered {status} {code}: {message}"
                    ))
                }));
            }
        };
        if answer.status != 200 {
            return Err(Failure::protocol(format!(
                "the log checkpoint answered {}",
                answer.status
            )));
        }
        verify_checkpoint(&answer.body, key)
            .map(Some)
            .map_err(|e| Failure::fatal(SyncError::LogInvalid(e)))
    }

    /// `GET /api/v1/log/consistency?from=<from>`: a consistency proof from the tree of `from`
    /// entries to the server's newest checkpoint, which is verified under the log key.
    fn consistency(
        &self,
        key: &LogKey,
        from: u64,
        then: Step,
    ) -> Result<(Vec<Hash>, Checkpoint), Failure> {
        #[derive(Deserialize)]
        struct ConsistencyAnswer {
            from: u64,
            proof: Vec<String>,
            checkpoint: String,
        }
        let url = format!("{}/api/v1/log/consistency?from={from}", self.base);
        let answer = exchange(self.http.get(url), MAX_LOG_ANSWER_BYTES).map_err(|f| {
            Failure::from_http(f, then, |status, code, message| {
                Failure::protocol(format!(
                    "the consistency proof from {from} entries was refused ({status} {code}): \
                     {message}"
                ))
            })
        })?;
        let a: ConsistencyAnswer = serde_json::from_slice(&answer.body)
            .map_err(|e| Failure::protocol(format!("consistency answer: {e}")))?;
        if a.from != from || a.proof.len() > MAX_PROOF_HASHES {
            return Err(Failure::protocol("consistency answer for another size, or too long"));
        }
        let proof =
            a.proof.iter().map(|h| hash_from_base64(h)).collect::<Option<Vec<Hash>>>().ok_or_else(
                || Failure::protocol("a consistency proof hash is not base64 of 32 bytes"),
            )?;
        let checkpoint = verify_checkpoint(a.checkpoint.as_bytes(), key)
            .map_err(|e| Failure::fatal(SyncError::LogInvalid(e)))?;
        Ok((proof, checkpoint))
    }

    /// Checks a verified checkpoint `seen` against the kept one and keeps the newest: both
    /// must be states of one append-only log. Equal sizes need equal roots; otherwise the
    /// server proves that the smaller tree is a prefix of its newest one, which must be at
    /// least as large as every checkpoint seen (each newer checkpoint an answer brings is
    /// checked in turn, so everything ends up proven a prefix of one tree). A failure raises
    /// the log alarm.
    fn observe(&self, key: &LogKey, seen: Checkpoint, then: Step) -> Result<(), Failure> {
        let Some(kept) = self.store.log_checkpoint().map_err(Failure::fatal)? else {
            return if seen.size == 0 { Ok(()) } else { self.keep(&seen) };
        };
        let kept = Checkpoint {
            origin: key.origin.clone(),
            size: kept.size,
            root: Hash(kept.root),
            note: kept.note,
        };
        if seen.size == 0 {
            return Err(self.alarm(LogAlarmKind::Shrank, &kept, &seen, "it signed an empty tree"));
        }
        // Invariant: every checkpoint seen that is not in `todo` is a prefix of `top`.
        let (mut top, mut todo) =
            if seen.size >= kept.size { (seen, vec![kept]) } else { (kept, vec![seen]) };
        let mut rounds = 0;
        while let Some(c) = todo.pop() {
            if c.size == top.size {
                if c.root != top.root {
                    let detail =
                        format!("two checkpoints of {} entries with different roots", c.size);
                    return Err(self.alarm(LogAlarmKind::Forked, &c, &top, &detail));
                }
                continue;
            }
            rounds += 1;
            if rounds > MAX_CONSISTENCY_ROUNDS {
                return Err(Failure::Retry {
                    reason: "the log grew during every consistency check".into(),
                    retry_after: None,
                    then,
                });
            }
            let (proof, latest) = self.consistency(key, c.size, then)?;
            if latest.size < top.size {
                let detail = format!("its newest checkpoint has {} entries", latest.size);
                return Err(self.alarm(LogAlarmKind::Shrank, &top, &latest, &detail));
            }
            if crate::log::verify_consistency(c.size, &c.root, latest.size, &latest.root, &proof)
                .is_err()
            {
                let detail = format!(
                    "the consistency proof from {} to {} entries does not verify",
                    c.size, latest.size
                );
                return Err(self.alarm(LogAlarmKind::Forked, &c, &latest, &detail));
            }
            if latest.size > top.size {
                todo.push(top);
                top = latest;
            } else if latest.root != top.root {
                let detail =
                    format!("two checkpoints of {} entries with different roots", top.size);
                return Err(self.alarm(LogAlarmKind::Forked, &top, &latest, &detail));
            }
        }
        self.keep(&top)
    }

    /// Keeps a checkpoint proven consistent with every one seen before.
    fn keep(&self, c: &Checkpoint) -> Result<(), Failure> {
        let kept = KeptCheckpoint {
            size: c.size,
            root: c.root.0,
            note: c.note.clone(),
            seen_at_ms: now_ms(),
        };
        if self.store.write(|tx| Store::keep_log_checkpoint(tx, &kept)).map_err(Failure::fatal)? {
            tracing::info!(size = c.size, "kept a newer log checkpoint");
        }
        Ok(())
    }

    /// Stores the log alarm (the first one stays) and returns the failure that stops the sync.
    fn alarm(
        &self,
        kind: LogAlarmKind,
        old: &Checkpoint,
        new: &Checkpoint,
        detail: &str,
    ) -> Failure {
        let alarm = LogAlarm {
            kind,
            old_size: old.size,
            new_size: new.size,
            detail: detail.to_owned(),
            old_checkpoint: old.note.clone(),
            new_checkpoint: new.note.clone(),
            raised_at_ms: now_ms(),
        };
        tracing::error!(kind = kind.name(), old = old.size, new = new.size, detail, "LOG ALARM");
        match self.store.write(|tx| Store::raise_log_alarm(tx, &alarm)) {
            Ok(stored) => Failure::fatal(SyncError::from(&stored)),
            Err(e) => Failure::fatal(e),
        }
    }

    fn progress(&self, u: &Upload, sent: u64, state: CaptureState) {
        self.listener.on_progress(SyncProgress::Capture(CaptureProgress {
            id: u.capture.id,
            seq: u.capture.seq,
            sent,
            total: u.len(),
            state,
        }));
    }

    fn send_capture(&mut self, capture: PendingCapture) -> Result<Outcome, Error> {
        let id = capture.id;
        if !self.store.write(|tx| Store::begin_upload(tx, &id, now_ms()))? {
            return Ok(Outcome::Skipped);
        }
        let photo = self.store.blobs().get(&capture.photo_sha256).map_err(StoreError::from)?;
        if photo.len() as u64 != capture.photo_bytes
            || Sha256Hash::of(&photo) != capture.photo_sha256
        {
            return Err(StoreError::Corrupt(format!("the photo of capture {id} is damaged")).into());
        }
        let manifest = Manifest::from_canonical(&capture.canonical)
            .map_err(|e| StoreError::Corrupt(format!("the manifest of capture {id}: {e}")))?;
        tracing::info!(seq = capture.seq, bytes = photo.len(), "sending capture");
        let url = format!("{}/files/{}", self.base, id.to_hex());
        let mut u = Upload {
            capture,
            election: manifest.election,
            precinct: manifest.precinct,
            photo,
            url,
        };
        let mut step = Step::Create;
        let mut failures = 0u32;
        let mut receipt_failures = 0u32;
        let mut best_offset = None::<u64>;
        // A photo that fits one request goes with the first creation (tus creation-with-upload),
        // whose answer then also carries the receipt; a server without the extension ignores
        // the body and the upload goes on with PATCH. Later attempts resume instead.
        let chunk = self.config.chunk_bytes.clamp(1, MAX_CHUNK_BYTES) as u64;
        let mut body_with_create = u.len() > 0 && u.len() <= chunk;
        // A receipt that came in the answer of the request that completed the upload.
        let mut ready: Option<Vec<u8>> = None;
        loop {
            if self.cancel.is_cancelled() {
                return Ok(Outcome::Cancelled);
            }
            let result = match step {
                Step::Create => {
                    let with_body = std::mem::take(&mut body_with_create);
                    if with_body && best_offset.is_none() {
                        // The body counts as sent as far as the server's offset grows from 0.
                        best_offset = Some(0);
                    }
                    self.create(&mut u, with_body).map(|(offset, receipt)| match offset {
                        Some(off) if with_body && off == u.len() => {
                            ready = receipt;
                            Step::Receipt
                        }
                        Some(off) if with_body && off < u.len() => Step::Send(off),
                        _ => Step::Offset,
                    })
                }
                Step::Offset => self
                    .offset(&u)
                    .map(|off| if off == u.len() { Step::Receipt } else { Step::Send(off) }),
                Step::Send(off) => self.patch(&u, off).map(|(new, receipt)| {
                    if new == u.len() {
                        ready = receipt;
                        Step::Receipt
                    } else {
                        Step::Send(new)
                    }
                }),
                Step::Receipt => match self.receipt(&u, ready.take()) {
                    Ok(Ok(())) => {
                        self.progress(&u, u.len(), CaptureState::Receipted);
                        return Ok(Outcome::Receipted);
                    }
                    Ok(Err(e)) => {
                        receipt_failures += 1;
                        tracing::warn!(seq = u.capture.seq, error = %e, "receipt does not verify");
                        if receipt_failures >= self.config.receipt_attempts.max(1) {
                            return Err(SyncError::ReceiptInvalid { capture: id, source: e }.into());
                        }
                        Err(Failure::Retry {
                            reason: format!("receipt does not verify: {e}"),
                            retry_after: None,
                            then: Step::Receipt,
                        })
                    }
                    Err(f) => Err(f),
                },
            };
            match result {
                Ok(next) => {
                    let offset = match next {
                        Step::Send(off) => Some(off),
                        Step::Receipt => Some(u.len()),
                        Step::Create | Step::Offset => None,
                    };
                    if offset.is_some() && offset > best_offset {
                        // Growth of the server's offset, including bytes a cut request left
                        // there; the first offset seen is the baseline from earlier runs.
                        if let (Some(new), Some(old)) = (offset, best_offset) {
                            self.summary.bytes_sent += new - old;
                        }
                        best_offset = offset;
                        failures = 0;
                        self.progress(&u, offset.unwrap_or_default(), CaptureState::Uploading);
                    }
                    if next == Step::Receipt && step != Step::Receipt {
                        hooks::pause("sync:before-receipt");
                    }
                    step = next;
                }
                Err(Failure::Retry { reason, retry_after, then }) => {
                    failures += 1;
                    let seq = u.capture.seq;
                    let delay = self.delay(failures, retry_after);
                    let next_at = now_ms().saturating_add(delay.as_millis() as u64);
                    self.store.write(|tx| Store::record_failure(tx, &id, &reason, next_at))?;
                    if failures > self.config.max_retries {
                        // The caller gets the error; a CLI prints it with what to do.
                        tracing::info!(seq, failures, %reason, "giving up");
                        return Err(SyncError::Unreachable {
                            attempts: failures,
                            last_error: reason,
                        }
                        .into());
                    }
                    tracing::info!(seq, failures, delay_ms = delay.as_millis() as u64, %reason, "retrying");
                    self.listener.on_progress(SyncProgress::Retrying {
                        id,
                        seq,
                        attempt: failures,
                        delay_ms: delay.as_millis() as u64,
                        reason,
                    });
                    if !sleep_unless_cancelled(delay, self.cancel) {
                        return Ok(Outcome::Cancelled);
                    }
                    step = then;
                }
                Err(Failure::Reject { reason }) => {
                    // Reported to the caller (summary, progress, the capture's state).
                    tracing::info!(seq = u.capture.seq, "capture rejected by the server");
                    self.store.write(|tx| Store::reject(tx, &id, &reason, now_ms()))?;
                    self.summary.refused.push(RefusedCapture {
                        id,
                        seq: u.capture.seq,
                        reason: reason.clone(),
                    });
                    self.progress(&u, best_offset.unwrap_or(0), CaptureState::Rejected { reason });
                    return Ok(Outcome::Rejected);
                }
                Err(Failure::Fatal(e)) => {
                    // The sync stops (the device was refused, a receipt was invalid, …): the
                    // capture waits in the queue again; the next sync resumes it from the
                    // server's offset.
                    self.store
                        .write(|tx| Store::set_state(tx, &id, &CaptureState::Queued, now_ms()))?;
                    return Err(e);
                }
            }
        }
    }

    /// The wait before retry number `failures` (1-based).
    fn delay(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(d) => d.min(self.config.max_retry_after),
            None => {
                let c = &self.config;
                let ceiling = backoff_ceiling(c.backoff_base, c.backoff_cap, failures - 1);
                full_jitter(ceiling, &mut rand::thread_rng())
            }
        }
    }

    fn tus(&self, request: RequestBuilder) -> RequestBuilder {
        request.header("Tus-Resumable", TUS_VERSION)
    }

    /// `POST /files/`: creates the upload (or finds it again); `with_body`: with the whole photo,
    /// asking for the receipt in the answer. Returns the answered offset and receipt, if any.
    fn create(
        &self,
        u: &mut Upload,
        with_body: bool,
    ) -> Result<(Option<u64>, Option<Vec<u8>>), Failure> {
        let c = &u.capture;
        let mut request = self
            .tus(self.http.post(format!("{}/files/", self.base)))
            .header("Upload-Length", u.len())
            .header("Upload-Metadata", upload_metadata(&c.canonical, &c.signature));
        request = if with_body {
            let request = request
                .header(CONTENT_TYPE, "application/offset+octet-stream")
                .header(RECEIPT_HEADER, "wait");
            self.with_checksum(request, &u.photo).body(u.photo.clone())
        } else {
            request.body(Vec::new())
        };
        let answer =
            exchange(request, MAX_RECEIPT_BYTES.max(MAX_ERROR_BODY_BYTES)).map_err(|f| {
                Failure::from_http(f, Step::Create, |_, code, message| reject(code, message))
            })?;
        if answer.status != 201 && answer.status != 200 {
            return Err(Failure::protocol(format!("creation answered {}", answer.status)));
        }
        let location = answer
            .headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Failure::protocol("creation answered without Location"))?;
        let base = reqwest::Url::parse(&format!("{}/files/", self.base))
            .map_err(|e| Failure::protocol(e.to_string()))?;
        let url = base.join(location).map_err(|e| Failure::protocol(format!("Location: {e}")))?;
        let expected = c.id.to_hex();
        if url.path_segments().and_then(|mut s| s.next_back()) != Some(expected.as_str()) {
            return Err(Failure::protocol("creation answered a Location for another upload"));
        }
        u.url = url.to_string();
        let offset = header_u64(&answer.headers, "Upload-Offset").filter(|o| *o <= u.len());
        Ok((offset, receipt_in(answer)))
    }

    /// Adds `Upload-Checksum` for `body` if the config asks for it.
    fn with_checksum(&self, request: RequestBuilder, body: &[u8]) -> RequestBuilder {
        if !self.config.checksum {
            return request;
        }
        let digest = Sha256Hash::of(body);
        request.header("Upload-Checksum", format!("sha256 {}", BASE64.encode(digest.0)))
    }

    /// `HEAD /files/<id>`: the server's offset.
    fn offset(&self, u: &Upload) -> Result<u64, Failure> {
        let request = self.tus(self.http.head(&u.url));
        let answer = exchange(request, 0).map_err(|f| {
            Failure::from_http(f, Step::Offset, |status, code, message| match status {
                // The upload is gone (expired or discarded): create it again.
                404 => Failure::Retry {
                    reason: "upload not found".into(),
                    retry_after: None,
                    then: Step::Create,
                },
                _ => Failure::protocol(format!("HEAD answered {status} {code}: {message}")),
            })
        })?;
        let offset = header_u64(&answer.headers, "Upload-Offset")
            .ok_or_else(|| Failure::protocol("HEAD answered without a valid Upload-Offset"))?;
        if let Some(len) = header_u64(&answer.headers, "Upload-Length")
            && len != u.len()
        {
            return Err(Failure::protocol("the server's Upload-Length differs from the photo's"));
        }
        if offset > u.len() {
            return Err(Failure::protocol("the server's offset is past the photo's end"));
        }
        Ok(offset)
    }

    /// `PATCH /files/<id>`: sends the next chunk from `offset` (the last one asks for the receipt
    /// in the answer); returns the new offset and that receipt, if it came.
    fn patch(&self, u: &Upload, offset: u64) -> Result<(u64, Option<Vec<u8>>), Failure> {
        let chunk = self.config.chunk_bytes.clamp(1, MAX_CHUNK_BYTES);
        let start = usize::try_from(offset).map_err(|_| Failure::protocol("offset overflow"))?;
        let end = start.saturating_add(chunk).min(u.photo.len());
        let body = u.photo[start..end].to_vec();
        let mut request = self
            .tus(self.http.patch(&u.url))
            .header(CONTENT_TYPE, "application/offset+octet-stream")
            .header("Upload-Offset", offset);
        if end == u.photo.len() {
            request = request.header(RECEIPT_HEADER, "wait");
        }
        let request = self.with_checksum(request, &body);
        let answer = exchange(request.body(body), MAX_RECEIPT_BYTES.max(MAX_ERROR_BODY_BYTES))
            .map_err(|f| {
                Failure::from_http(f, Step::Offset, |status, code, message| {
                    match (status, code.as_str()) {
                        (404, _) => Failure::Retry {
                            reason: "upload not found".into(),
                            retry_after: None,
                            then: Step::Create,
                        },
                        (409, _) | (460, _) => Failure::Retry {
                            reason: format!("{status} {code}"),
                            retry_after: None,
                            then: Step::Offset,
                        },
                        _ => reject(code, message),
                    }
                })
            })?;
        let new = header_u64(&answer.headers, "Upload-Offset")
            .ok_or_else(|| Failure::protocol("PATCH answered without a valid Upload-Offset"))?;
        if new <= offset || new > end as u64 {
            return Err(Failure::protocol(format!(
                "PATCH from {offset} with {} bytes answered offset {new}",
                end - start
            )));
        }
        Ok((new, receipt_in(answer)))
    }

    /// The receipt (`ready`: as it came in an upload's answer; else `GET /api/v1/receipts/<id>`),
    /// then verification and storage. `Ok(Err(_))`: the receipt arrived but does not verify.
    fn receipt(
        &self,
        u: &Upload,
        ready: Option<Vec<u8>>,
    ) -> Result<Result<(), ReceiptError>, Failure> {
        let body = match ready {
            Some(body) => body,
            None => self.fetch_receipt(u)?,
        };
        self.keep_receipt(u, &body)
    }

    /// `GET /api/v1/receipts/<id>`.
    fn fetch_receipt(&self, u: &Upload) -> Result<Vec<u8>, Failure> {
        let url = format!("{}/api/v1/receipts/{}", self.base, u.capture.id.to_hex());
        let answer = exchange(self.http.get(url), MAX_RECEIPT_BYTES).map_err(|f| {
            Failure::from_http(f, Step::Receipt, |status, code, message| match status {
                // Not stored yet: ask for the offset again (resuming the upload if needed).
                404 => Failure::Retry {
                    reason: "receipt not found".into(),
                    retry_after: None,
                    then: Step::Offset,
                },
                _ => Failure::fatal(SyncError::Refused { status, code, message }),
            })
        })?;
        if answer.status != 200 {
            return Err(Failure::protocol(format!("receipt answered {}", answer.status)));
        }
        Ok(answer.body)
    }

    /// Verification and storage of a receipt (see [`Self::receipt`]).
    fn keep_receipt(&self, u: &Upload, body: &[u8]) -> Result<Result<(), ReceiptError>, Failure> {
        let c = &u.capture;
        let verified = SignedReceipt::from_json(body).and_then(|r| {
            r.verify(&self.pinned, &c.id, &c.photo_sha256)?;
            match &self.log_key {
                Some(key) => r.verify_log(key, &u.election, &u.precinct).map(Some),
                None => Ok(None),
            }
        });
        let in_log = match verified {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        if let (Some(key), Some(v)) = (&self.log_key, &in_log) {
            // The checkpoint the proof leads to must extend every one seen before.
            self.observe(key, v.checkpoint.clone(), Step::Receipt)?;
        }
        if let Some(alarm) = self.store.log_alarm().map_err(Failure::fatal)? {
            return Err(Failure::fatal(SyncError::from(&alarm)));
        }
        hooks::pause("sync:before-receipt-commit");
        let log = in_log.as_ref().map(|v| (v.index, v.checkpoint.note.as_slice()));
        let stored = self
            .store
            .write(|tx| Store::save_receipt(tx, &c.id, body, log, now_ms()))
            .map_err(Failure::fatal)?;
        if !stored {
            // Only a change outside this code can do that: nothing here leaves `uploading`
            // but this function and a rejection.
            return Err(Failure::fatal(StoreError::Corrupt(format!(
                "capture {} left the uploading state during its upload",
                c.id
            ))));
        }
        Ok(Ok(()))
    }
}

/// Fetches the photo with hash `sha256` that a server or a mirror of it publishes
/// (`GET <base_url>/photos/<sha256>`), at most `max_bytes` of it: the copy a bundle exported
/// without its photo is verified with (`crate::bundle::verify_with_photo`). The caller checks
/// the bytes; nothing is trusted here.
pub fn fetch_photo(
    config: &SyncConfig,
    base_url: &str,
    sha256: &Sha256Hash,
    max_bytes: u64,
) -> Result<Vec<u8>, SyncError> {
    let base = normalize_base_url(base_url)?;
    let http = http_client(config)?;
    let url = format!("{base}/photos/{}", sha256.to_hex());
    let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    match exchange(http.get(url), limit) {
        Ok(answer) if answer.status == 200 => Ok(answer.body),
        Ok(answer) => Err(SyncError::Protocol(format!("the photo answered {}", answer.status))),
        Err(HttpFailure::Transient { reason, .. }) => {
            Err(SyncError::Unreachable { attempts: 1, last_error: reason })
        }
        Err(HttpFailure::Refused { status, code, message }) => {
            Err(SyncError::Refused { status, code, message })
        }
        Err(HttpFailure::Protocol(p)) => Err(SyncError::Protocol(p)),
    }
}

/// Counts per state from the store's `(state, count)` rows.
pub(crate) fn state_counts(rows: &[(String, u64)]) -> StateCounts {
    let mut c = StateCounts::default();
    for (state, n) in rows {
        let slot = match state.as_str() {
            "captured" => &mut c.captured,
            "queued" => &mut c.queued,
            "uploading" => &mut c.uploading,
            "receipted" => &mut c.receipted,
            "witnessed" => &mut c.witnessed,
            "rejected" => &mut c.rejected,
            "deleted" => &mut c.deleted,
            _ => continue,
        };
        *slot += n;
    }
    c
}

#[cfg(test)]
mod tests;
