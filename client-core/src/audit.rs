//! The log auditor: anyone can check that a Hattama log is what its signed checkpoint says.
//!
//! An [`Auditor`] reads a log over plain HTTP GETs of the files the server publishes (the
//! checkpoint, the hash tiles and the entry bundles of C2SP tlog-tiles), so it works as well
//! against a static mirror (the files copied to any web server) as against the server itself.
//! It recomputes the tree from the entries, compares every served hash tile with the one
//! recomputed from the tile below it, compares the recomputed roots with the checkpoint and
//! checks the checkpoint's signature. Optionally it fetches every capture's signed manifest and
//! photo and checks them with the [`crate::evidence`] and [`crate::media`] rules. Followed over
//! time ([`Auditor::round`] again), it checks that every new checkpoint extends the previous one
//! by recomputing the new tree from the previous one's leaves: no proof from the server needed.
//!
//! Guarantees:
//! - Every discrepancy is a typed [`Problem`] with a location (tile path, entry index); the
//!   audit goes on after one, so a run reports all it can find.
//! - Memory is bounded whatever the log's size: tiles are read one at a time, and the auditor
//!   keeps only two Merkle frontiers (at most 64 hashes each), one pending tile of expected
//!   hashes per tile level, the set of distinct (election, precinct) pairs, and at most
//!   [`AuditConfig::max_listed_problems`] problems (the count goes on beyond).
//! - A round that fails on the network leaves the auditor as it was before the round.
//!
//! The checks and the formats are specified in `docs/transparency-log.md`.

use std::collections::HashSet;
use std::io::Read;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use signed_note::Note;
use tlog_tiles::Tile;

use crate::evidence::{self, Sha256Hash, SignedManifest};
use crate::log::{self, Hash, LogEntry, LogError, LogKey, MAX_ENTRY_BYTES, TILE_HEIGHT};
use crate::media::{self, MediaLimits};
use crate::sync::error_chain;

/// Hashes in a full tile.
const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;

/// Bytes of a hash.
const HASH_BYTES: usize = 32;

/// Level-0 tiles in a row with neither hash tile nor bundle served after which the audit stops
/// reading (a checkpoint may claim any size; the files say where the log really ends).
const MAX_MISSING_RUN: u64 = 16;

/// Largest checkpoint read.
const MAX_CHECKPOINT_BYTES: u64 = 64 << 10;

/// Largest entry bundle: 256 entries of at most [`MAX_ENTRY_BYTES`], each after 2 length bytes.
const MAX_BUNDLE_BYTES: u64 = TILE_WIDTH * (2 + MAX_ENTRY_BYTES as u64);

/// Largest `GET /api/v1/captures/{id}` answer: the manifest as a JSON string (escaping at most
/// doubles a canonical manifest, which has no control character left to escape as `\u00xx`),
/// the signature and the id.
const MAX_CAPTURE_JSON_BYTES: u64 = 2 * evidence::MAX_MANIFEST_BYTES as u64 + 4096;

/// What to audit and how to reach it.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// Base URL of the log: `<log_url>/checkpoint` and `<log_url>/tile/...` are its files.
    pub log_url: String,
    /// The log's identity (origin and Ed25519 verifier key).
    pub key: LogKey,
    /// When set, every capture's evidence is fetched and checked too:
    /// `<evidence_url>/api/v1/captures/<id>` and `<evidence_url>/photos/<sha256>`.
    pub evidence_url: Option<String>,
    /// Photo limits for the evidence checks.
    pub limits: MediaLimits,
    /// Limit on opening a connection.
    pub connect_timeout: Duration,
    /// Limit on one whole request.
    pub request_timeout: Duration,
    /// Attempts per request before a transient failure (network, 408, 429, 5xx) is fatal.
    pub attempts: u32,
    /// Problems kept in the report; more are counted, not listed.
    pub max_listed_problems: usize,
}

impl AuditConfig {
    /// An audit of the log at `log_url` under `key`, without the evidence checks.
    pub fn new(log_url: &str, key: LogKey) -> Self {
        Self {
            log_url: log_url.to_owned(),
            key,
            evidence_url: None,
            limits: MediaLimits::default(),
            connect_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(120),
            attempts: 4,
            max_listed_problems: 1000,
        }
    }
}

/// Reads a log key as [`LogKey::from_text`] does: a signed-note verifier key, or the JSON answer
/// of `GET /api/v1/log/key`, with surrounding white space.
pub fn parse_log_key(text: &str) -> Result<LogKey, AuditError> {
    LogKey::from_text(text).map_err(|e| AuditError::BadKey(e.to_string()))
}

/// Where the evidence of a log served at `log_url` lives by default: the same server, without
/// the final `/log` of the log's URL.
pub fn default_evidence_url(log_url: &str) -> String {
    let base = log_url.trim_end_matches('/');
    base.strip_suffix("/log").unwrap_or(base).to_owned()
}

/// Receives every file an audit fetched, by its path under the site (`log/checkpoint`,
/// `log/tile/…`, `api/v1/captures/<id>`, `photos/<sha256>`), before the round has judged it: a
/// mirror keeps the files of a round only if the round found no problem
/// ([`Auditor::keep_files`]).
pub type Keeper = Box<dyn Fn(&str, &[u8]) -> std::io::Result<()> + Send>;

/// Why an audit could not be carried out (as opposed to the [`Problem`]s it found).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The [`Keeper`] could not keep a file.
    #[error("cannot keep {path}: {reason}")]
    Keep {
        /// The file's path under the site.
        path: String,
        /// What happened.
        reason: String,
    },
    /// A URL is not an `http` or `https` URL without query or fragment.
    #[error("invalid URL {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be read: the network failed, or kept failing, or the checkpoint is not
    /// served at all.
    #[error("cannot read {url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The log key is not a signed-note verifier key, or its file cannot be read.
    #[error("invalid log key: {0}")]
    BadKey(String),
    /// The HTTP client could not be set up.
    #[error("cannot set up HTTP: {0}")]
    Http(String),
}

/// Which recomputation of the tree a root comparison is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RootSource {
    /// The tree of the leaf hashes of the entries in the entry bundles.
    Entries,
    /// The tree of the hashes in the served level-0 hash tiles.
    HashTiles,
}

/// One discrepancy found by the audit, with where it is. The JSON form is an object whose
/// `kind` is the variant's name in snake case, with the fields below.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The checkpoint is not a signed note with a C2SP checkpoint body.
    CheckpointMalformed {
        /// What is wrong.
        detail: String,
    },
    /// No signature on the checkpoint verifies under the log key. The rest of the audit
    /// checks the tree the unverified body describes.
    CheckpointSignature {
        /// The size the unverified checkpoint claims.
        size: u64,
    },
    /// The checkpoint is signed by the log key but names another origin.
    CheckpointOrigin {
        /// The origin line found.
        found: String,
        /// The log key's name.
        expected: String,
    },
    /// A tile or entry bundle the checkpoint needs is not served.
    TileMissing {
        /// Its path under the log URL.
        path: String,
        /// The HTTP status.
        status: u16,
    },
    /// A tile has the wrong length, or an entry bundle cannot be split into entries.
    TileMalformed {
        /// Its path.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// An entry is not a canonical log entry (it is still hashed as it is).
    EntryMalformed {
        /// Its index in the log (its position, if its bundle lost or gained entries).
        index: u64,
        /// The entry bundle.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The entry's leaf hash differs from the hash tile's hash at its index, and neither hash
    /// appears elsewhere in the other file: the entry or the hash was changed.
    EntryChanged {
        /// The index.
        index: u64,
        /// The entry bundle.
        path: String,
        /// The level-0 hash tile.
        tile: String,
    },
    /// The hash tile has a hash at this index for which the bundle has no entry: an entry was
    /// removed from the bundle.
    EntryMissing {
        /// The index.
        index: u64,
        /// The entry bundle.
        path: String,
        /// The level-0 hash tile.
        tile: String,
    },
    /// The bundle has an entry whose hash is nowhere in the hash tile: an entry was added.
    EntryExtra {
        /// Its position in the log as the bundle places it.
        position: u64,
        /// The entry bundle.
        path: String,
        /// The level-0 hash tile.
        tile: String,
    },
    /// The bundle and the hash tile hold the same hash at different indexes: entries or hashes
    /// were reordered.
    OrderMismatch {
        /// The index where they disagree.
        index: u64,
        /// The entry bundle.
        path: String,
        /// The level-0 hash tile.
        tile: String,
    },
    /// A hash in a tile of level 1 or more is not the hash of the full tile below it: the tile
    /// or the one below was changed or reordered.
    TileHashMismatch {
        /// The tile.
        path: String,
        /// The position of the hash in the tile.
        position: u64,
        /// The tile below whose hash it should be.
        below: String,
    },
    /// A recomputed root differs from the checkpoint's root (or covers another number of
    /// entries). The source whose root matches the signed checkpoint is the intact one.
    RootMismatch {
        /// Which recomputation.
        source: RootSource,
        /// How many leaves it had.
        size: u64,
        /// Its root (base64).
        root: String,
        /// The checkpoint's size.
        checkpoint_size: u64,
        /// The checkpoint's root (base64).
        checkpoint_root: String,
    },
    /// Two signed checkpoints for the same size with different roots: the log forked.
    Fork {
        /// The size.
        size: u64,
        /// The root seen first (base64).
        root_before: String,
        /// The root seen now (base64).
        root_now: String,
    },
    /// A newer signed checkpoint has fewer entries than an older one.
    Shrank {
        /// The older size.
        old: u64,
        /// The newer size.
        new: u64,
    },
    /// The newer signed checkpoint's tree does not extend the older one's: the first `old`
    /// entries served now do not give the older signed root. The log forked or was rewritten.
    Inconsistent {
        /// The older size.
        old: u64,
        /// The newer size.
        new: u64,
    },
    /// The capture of a log entry is not served.
    EvidenceMissing {
        /// The entry's index.
        index: u64,
        /// The capture id.
        capture_id: String,
        /// The HTTP status.
        status: u16,
    },
    /// The served manifest or signature is refused by the evidence rules.
    EvidenceInvalid {
        /// The entry's index.
        index: u64,
        /// The capture id.
        capture_id: String,
        /// Why.
        detail: String,
    },
    /// The verified manifest disagrees with the log entry.
    EvidenceMismatch {
        /// The entry's index.
        index: u64,
        /// The capture id.
        capture_id: String,
        /// The field that differs: `capture_id`, `election`, `precinct` or `photo_sha256`.
        field: &'static str,
    },
    /// The photo of a log entry is not served.
    PhotoMissing {
        /// The entry's index.
        index: u64,
        /// The photo's SHA-256.
        photo_sha256: String,
        /// The HTTP status.
        status: u16,
    },
    /// The served photo does not have the signed length or hash.
    PhotoMismatch {
        /// The entry's index.
        index: u64,
        /// The photo's SHA-256.
        photo_sha256: String,
        /// What differs.
        detail: String,
    },
    /// The served photo is refused by the photo rules, or still carries metadata (it is not a
    /// fixed point of the stripping function), or its size differs from the manifest's.
    PhotoNotClean {
        /// The entry's index.
        index: u64,
        /// The photo's SHA-256.
        photo_sha256: String,
        /// Why.
        detail: String,
    },
}

impl Problem {
    /// The stable code word of the problem's kind (the `kind` of its JSON form).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::CheckpointMalformed { .. } => "checkpoint_malformed",
            Self::CheckpointSignature { .. } => "checkpoint_signature",
            Self::CheckpointOrigin { .. } => "checkpoint_origin",
            Self::TileMissing { .. } => "tile_missing",
            Self::TileMalformed { .. } => "tile_malformed",
            Self::EntryMalformed { .. } => "entry_malformed",
            Self::EntryChanged { .. } => "entry_changed",
            Self::EntryMissing { .. } => "entry_missing",
            Self::EntryExtra { .. } => "entry_extra",
            Self::OrderMismatch { .. } => "order_mismatch",
            Self::TileHashMismatch { .. } => "tile_hash_mismatch",
            Self::RootMismatch { .. } => "root_mismatch",
            Self::Fork { .. } => "fork",
            Self::Shrank { .. } => "shrank",
            Self::Inconsistent { .. } => "inconsistent",
            Self::EvidenceMissing { .. } => "evidence_missing",
            Self::EvidenceInvalid { .. } => "evidence_invalid",
            Self::EvidenceMismatch { .. } => "evidence_mismatch",
            Self::PhotoMissing { .. } => "photo_missing",
            Self::PhotoMismatch { .. } => "photo_mismatch",
            Self::PhotoNotClean { .. } => "photo_not_clean",
        }
    }

    /// Where the problem is: a file under the log URL, an entry, or `checkpoint`.
    pub fn location(&self) -> String {
        match self {
            Self::CheckpointMalformed { .. }
            | Self::CheckpointSignature { .. }
            | Self::CheckpointOrigin { .. }
            | Self::RootMismatch { .. }
            | Self::Fork { .. }
            | Self::Shrank { .. }
            | Self::Inconsistent { .. } => "checkpoint".to_owned(),
            Self::TileMissing { path, .. }
            | Self::TileMalformed { path, .. }
            | Self::TileHashMismatch { path, .. } => path.clone(),
            Self::EntryMalformed { index, path, .. }
            | Self::EntryChanged { index, path, .. }
            | Self::EntryMissing { index, path, .. }
            | Self::OrderMismatch { index, path, .. }
            | Self::EntryExtra { position: index, path, .. } => format!("{path} (entry {index})"),
            Self::EvidenceMissing { index, capture_id, .. }
            | Self::EvidenceInvalid { index, capture_id, .. }
            | Self::EvidenceMismatch { index, capture_id, .. } => {
                format!("capture {capture_id} (entry {index})")
            }
            Self::PhotoMissing { index, photo_sha256, .. }
            | Self::PhotoMismatch { index, photo_sha256, .. }
            | Self::PhotoNotClean { index, photo_sha256, .. } => {
                format!("photo {photo_sha256} (entry {index})")
            }
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::CheckpointMalformed { detail } => {
                write!(f, "the checkpoint is malformed: {detail}")
            }
            Self::CheckpointSignature { size } => {
                write!(f, "the checkpoint (size {size}) has no valid signature by the log key")
            }
            Self::CheckpointOrigin { found, expected } => {
                write!(f, "the checkpoint is for log {found:?}, the key is for {expected:?}")
            }
            Self::TileMissing { path, status } => write!(f, "{path} is not served (HTTP {status})"),
            Self::TileMalformed { path, detail } => write!(f, "{path} is malformed: {detail}"),
            Self::EntryMalformed { index, path, detail } => {
                write!(f, "entry {index} in {path} is not a canonical entry: {detail}")
            }
            Self::EntryChanged { index, path, tile } => write!(
                f,
                "entry {index}: its hash from {path} differs from the one in {tile} (changed)"
            ),
            Self::EntryMissing { index, path, tile } => {
                write!(f, "entry {index} is in {tile} but missing from {path} (removed)")
            }
            Self::EntryExtra { position, path, tile } => write!(
                f,
                "{path} has an entry at position {position} whose hash is not in {tile} (added)"
            ),
            Self::OrderMismatch { index, path, tile } => {
                write!(f, "entry {index}: {path} and {tile} hold their hashes in another order")
            }
            Self::TileHashMismatch { path, position, below } => write!(
                f,
                "hash {position} of {path} is not the hash of {below} (changed or reordered)"
            ),
            Self::RootMismatch { source, size, root, checkpoint_size, checkpoint_root } => {
                let what = match source {
                    RootSource::Entries => "the entries",
                    RootSource::HashTiles => "the hash tiles",
                };
                write!(
                    f,
                    "{what} give a tree of {size} entries with root {root}; the checkpoint says \
                     {checkpoint_size} entries with root {checkpoint_root}"
                )
            }
            Self::Fork { size, root_before, root_now } => write!(
                f,
                "FORK: two signed checkpoints for {size} entries, roots {root_before} and \
                 {root_now}"
            ),
            Self::Shrank { old, new } => {
                write!(f, "SHRANK: the log had {old} entries and now has {new}")
            }
            Self::Inconsistent { old, new } => write!(
                f,
                "INCONSISTENT: the tree of {new} entries does not extend the signed tree of {old} \
                 entries (forked or rewritten)"
            ),
            Self::EvidenceMissing { index, capture_id, status } => {
                write!(f, "entry {index}: capture {capture_id} is not served (HTTP {status})")
            }
            Self::EvidenceInvalid { index, capture_id, detail } => {
                write!(f, "entry {index}: capture {capture_id} is refused: {detail}")
            }
            Self::EvidenceMismatch { index, capture_id, field } => {
                write!(f, "entry {index}: capture {capture_id} has another {field} than the entry")
            }
            Self::PhotoMissing { index, photo_sha256, status } => {
                write!(f, "entry {index}: photo {photo_sha256} is not served (HTTP {status})")
            }
            Self::PhotoMismatch { index, photo_sha256, detail } => {
                write!(f, "entry {index}: photo {photo_sha256}: {detail}")
            }
            Self::PhotoNotClean { index, photo_sha256, detail } => {
                write!(f, "entry {index}: photo {photo_sha256} is not clean evidence: {detail}")
            }
        }
    }
}

/// What one [`Auditor::round`] saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Round {
    /// The size of the checkpoint served now.
    pub size: u64,
    /// Its root (base64).
    pub root: String,
    /// Whether its signature verified under the log key (and its origin is the key's).
    pub verified: bool,
    /// The size of the previous verified checkpoint, if any.
    pub previous: Option<u64>,
    /// Whether the served checkpoint is the previous one again (nothing new was checked).
    pub unchanged: bool,
    /// Entries checked in this round.
    pub entries_checked: u64,
    /// Problems found in this round (also in [`AuditReport::problems`]), the first
    /// [`AuditConfig::max_listed_problems`].
    pub problems: Vec<Problem>,
    /// Problems found in this round, all counted.
    pub problem_count: u64,
}

/// The cumulative result of every round so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// The log's origin.
    pub origin: String,
    /// The size of the newest verified checkpoint (0 if none verified).
    pub size: u64,
    /// Its root (base64; empty if none verified).
    pub root: String,
    /// Rounds run.
    pub rounds: u64,
    /// Distinct verified checkpoints seen.
    pub checkpoints: u64,
    /// Distinct entries read.
    pub entries: u64,
    /// Distinct elections among them.
    pub elections: u64,
    /// Distinct (election, precinct) pairs among them.
    pub precincts: u64,
    /// Captures whose evidence was checked.
    pub evidence_checked: u64,
    /// Problems found, all counted.
    pub problem_count: u64,
    /// Problems found, the first [`AuditConfig::max_listed_problems`] distinct ones.
    pub problems: Vec<Problem>,
}

/// A Merkle frontier: the roots of the perfect subtrees of a tree, largest (leftmost) first.
#[derive(Clone, Debug, Default)]
struct Frontier {
    size: u64,
    stack: Vec<Hash>,
}

impl Frontier {
    fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut n = self.size;
        while n & 1 == 1 {
            if let Some(left) = self.stack.pop() {
                h = tlog_tiles::node_hash(left, h);
            }
            n >>= 1;
        }
        self.stack.push(h);
        self.size += 1;
    }

    /// The RFC 6962 root: the subtrees folded from the right.
    fn root(&self) -> Hash {
        let mut rest = self.stack.iter().rev();
        let Some(mut acc) = rest.next().copied() else {
            return Hash(Sha256Hash::of(b"").0);
        };
        for left in rest {
            acc = tlog_tiles::node_hash(*left, acc);
        }
        acc
    }
}

/// The recomputation state, cloned at every full level-0 tile so a later round can go on from
/// the last full tile of the previous checkpoint.
#[derive(Clone, Debug, Default)]
struct TreeState {
    /// Level-0 tiles consumed.
    tiles: u64,
    /// The tree of the entries' leaf hashes; `None` once a bundle could not be read.
    entries: Option<Frontier>,
    /// The tree of the served level-0 hashes; `None` once a hash tile could not be read.
    hashes: Option<Frontier>,
    /// For tile level L ≥ 1 (index L − 1): the expected hashes of the level-L tile being filled,
    /// each the hash of a full served tile of level L − 1 (`None`: that tile was unusable).
    pending: Vec<Vec<Option<Hash>>>,
}

impl TreeState {
    fn new() -> Self {
        Self {
            entries: Some(Frontier::default()),
            hashes: Some(Frontier::default()),
            ..Self::default()
        }
    }
}

/// The newest verified checkpoint and the state at its last full level-0 tile.
#[derive(Clone, Debug)]
struct Verified {
    size: u64,
    root: Hash,
    state: TreeState,
}

/// One response: its body (cut after the limit + 1 bytes), or the status of a refusal.
enum Fetched {
    Body(Vec<u8>),
    Missing(u16),
}

/// `x >> bits`, 0 when the shift is 64 bits or more.
fn shr(x: u64, bits: u32) -> u64 {
    x.checked_shr(bits).unwrap_or(0)
}

fn b64(h: &Hash) -> String {
    h.to_string()
}

fn hashes_of(data: &[u8]) -> Vec<Hash> {
    data.chunks_exact(HASH_BYTES)
        .map(|c| {
            let mut h = [0u8; HASH_BYTES];
            h.copy_from_slice(c);
            Hash(h)
        })
        .collect()
}

fn hash_tile_path(level: u8, n: u64, width: u64) -> String {
    log::tile_path(&Tile::new(TILE_HEIGHT, level, n, width as u32, false))
}

fn bundle_path(n: u64, width: u64) -> String {
    let mut t = Tile::new(TILE_HEIGHT, 0, n, width as u32, false);
    t.set_is_data();
    log::tile_path(&t)
}

/// The hash of a full tile of known hashes.
fn tile_hash(hashes: &[Option<Hash>]) -> Option<Hash> {
    let mut data = Vec::with_capacity(hashes.len() * HASH_BYTES);
    for h in hashes {
        data.extend_from_slice(&(*h)?.0);
    }
    (!data.is_empty()).then(|| Tile::subtree_hash(&data))
}

/// The auditor of one log: run [`Auditor::round`] once for an audit, again to follow the log.
pub struct Auditor {
    config: AuditConfig,
    log_url: String,
    evidence_url: Option<String>,
    http: reqwest::blocking::Client,
    verified: Option<Verified>,
    rounds: u64,
    checkpoints: u64,
    /// Entries at or after this index are new (not yet counted, evidence not checked).
    next_new: u64,
    /// Entries counted.
    entries: u64,
    elections: HashSet<String>,
    precincts: HashSet<(String, String)>,
    evidence_checked: u64,
    problem_count: u64,
    problems: Vec<Problem>,
    keeper: Option<Keeper>,
}

/// What a round read that the report counts.
struct Found {
    new_entries: u64,
    next_new: u64,
    elections: HashSet<String>,
    precincts: HashSet<(String, String)>,
    evidence_checked: u64,
}

/// The work of one round, discarded if the round fails on the network.
struct RoundWork<'a> {
    auditor: &'a Auditor,
    problems: Vec<Problem>,
    /// Entries at or after this index are new: counted, their evidence checked.
    count_from: u64,
    /// New entries read.
    new_entries: u64,
    /// Problems found but not listed (beyond the configured number): about the tree, others.
    unlisted: (u64, u64),
    /// `TileMissing` problems found.
    tiles_missing: u64,
    /// Elections of the new entries.
    elections: HashSet<String>,
    /// (election, precinct) pairs of the new entries.
    precincts: HashSet<(String, String)>,
    evidence_checked: u64,
    /// The previous verified checkpoint, whose root the tree must have at its size.
    old: Option<(u64, Hash)>,
    /// The roots seen when the recomputed trees reached the old size.
    roots_at_old: (Option<Hash>, Option<Hash>),
    entries_checked: u64,
}

fn check_url(url: &str) -> Result<String, AuditError> {
    let bad = |reason: &str| AuditError::BadUrl { url: url.to_owned(), reason: reason.to_owned() };
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(bad("need an http or https URL with a host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("no query or fragment allowed"));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

impl Auditor {
    /// An auditor for the log of `config`; nothing is fetched yet.
    pub fn new(config: AuditConfig) -> Result<Self, AuditError> {
        let log_url = check_url(&config.log_url)?;
        let evidence_url = config.evidence_url.as_deref().map(check_url).transpose()?;
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            // Static mirrors may redirect (to a CDN, or from http to https).
            .redirect(reqwest::redirect::Policy::limited(5))
            // The core reads no environment: no proxy from HTTP_PROXY and friends.
            .no_proxy()
            .user_agent(concat!("hattama-audit/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AuditError::Http(e.to_string()))?;
        Ok(Self {
            config,
            log_url,
            evidence_url,
            http,
            verified: None,
            rounds: 0,
            checkpoints: 0,
            next_new: 0,
            entries: 0,
            elections: HashSet::new(),
            precincts: HashSet::new(),
            evidence_checked: 0,
            problem_count: 0,
            problems: Vec::new(),
            keeper: None,
        })
    }

    /// Hands every file fetched from now on to `keeper` (see [`Keeper`]).
    pub fn keep_files(&mut self, keeper: Keeper) {
        self.keeper = Some(keeper);
    }

    /// Gives a fetched file to the keeper, if there is one.
    fn keep(&self, path: &str, body: &[u8]) -> Result<(), AuditError> {
        match &self.keeper {
            Some(keeper) => keeper(path, body)
                .map_err(|e| AuditError::Keep { path: path.to_owned(), reason: e.to_string() }),
            None => Ok(()),
        }
    }

    /// Fetches the checkpoint and checks what is new since the previous round: the whole log
    /// the first time; afterwards, if the checkpoint changed, that the new tree extends the
    /// previous verified one, and everything after it. Problems are returned and kept for the
    /// [`Auditor::report`]; an `Err` means the log could not be read, and changes nothing.
    pub fn round(&mut self) -> Result<Round, AuditError> {
        let url = format!("{}/checkpoint", self.log_url);
        let note = match self.get(&url, MAX_CHECKPOINT_BYTES)? {
            Fetched::Body(b) => b,
            Fetched::Missing(status) => {
                return Err(AuditError::Unreachable { url, reason: format!("HTTP {status}") });
            }
        };
        self.keep("log/checkpoint", &note)?;
        let previous = self.verified.as_ref().map(|v| (v.size, v.root));
        let mut round = Round {
            size: 0,
            root: String::new(),
            verified: false,
            previous: previous.map(|(size, _)| size),
            unchanged: false,
            entries_checked: 0,
            problems: Vec::new(),
            problem_count: 0,
        };
        let body = match parse_checkpoint(&note) {
            Ok(body) => body,
            Err(detail) => {
                round.problems.push(Problem::CheckpointMalformed { detail });
                round.problem_count = 1;
                self.commit(&round, None, None);
                return Ok(round);
            }
        };
        let (size, root) = (body.size(), *body.hash());
        (round.size, round.root) = (size, b64(&root));
        round.verified = match log::verify_checkpoint(&note, &self.config.key) {
            Ok(_) => true,
            Err(LogError::WrongOrigin { found, expected }) => {
                round.problems.push(Problem::CheckpointOrigin { found, expected });
                false
            }
            Err(LogError::Malformed { detail, .. }) => {
                round.problems.push(Problem::CheckpointMalformed { detail });
                false
            }
            Err(_) => {
                round.problems.push(Problem::CheckpointSignature { size });
                false
            }
        };
        let mut start = TreeState::new();
        let mut old = None;
        if let Some((prev_size, prev_root)) = previous {
            if size == prev_size && root == prev_root {
                round.unchanged = true;
                round.problem_count = round.problems.len() as u64;
                self.commit(&round, None, None);
                return Ok(round);
            }
            if round.verified && size == prev_size {
                round.problems.push(Problem::Fork {
                    size,
                    root_before: b64(&prev_root),
                    root_now: b64(&root),
                });
            } else if round.verified && size < prev_size {
                round.problems.push(Problem::Shrank { old: prev_size, new: size });
            }
            if size >= prev_size
                && let Some(v) = &self.verified
            {
                // Go on from the last full tile of the previous checkpoint's tree.
                start = v.state.clone();
                if size > prev_size {
                    old = Some((prev_size, prev_root));
                }
            }
        }
        let mut work = RoundWork::new(self, old);
        work.problems = std::mem::take(&mut round.problems);
        let resumed = previous.is_some() && start.tiles > 0;
        let mut snapshot = work.check_tree(start, size, &root)?;
        if resumed && work.problems.iter().any(|p| matches!(p, Problem::RootMismatch { .. })) {
            // The served files do not give the new root on top of the previous tree. Check the
            // new tree from its first entry to tell a rewritten history (the files give the new
            // root, but not the old one at the old size) from bad files.
            work.problems.retain(|p| !is_tree_problem(p));
            work.unlisted.0 = 0;
            snapshot = work.check_tree(TreeState::new(), size, &root)?;
        }
        if let Some((old, old_root)) = work.old {
            // The tree as served now must have the old signed root at the old size.
            let (from_entries, from_hashes) = work.roots_at_old;
            if let Some(r) = from_entries.or(from_hashes)
                && r != old_root
            {
                work.found(Problem::Inconsistent { old, new: size });
            }
        }
        let found = Found {
            new_entries: work.new_entries,
            next_new: work.count_from,
            elections: work.elections,
            precincts: work.precincts,
            evidence_checked: work.evidence_checked,
        };
        round.problem_count = work.problems.len() as u64 + work.unlisted.0 + work.unlisted.1;
        round.problems = work.problems;
        round.entries_checked = work.entries_checked;
        let verified = round.verified.then_some(Verified { size, root, state: snapshot });
        self.commit(&round, Some(found), verified);
        Ok(round)
    }

    fn commit(&mut self, round: &Round, found: Option<Found>, verified: Option<Verified>) {
        self.rounds += 1;
        self.problem_count += round.problem_count;
        for p in &round.problems {
            if self.problems.len() < self.config.max_listed_problems && !self.problems.contains(p) {
                self.problems.push(p.clone());
            }
        }
        if let Some(found) = found {
            self.entries += found.new_entries;
            self.next_new = self.next_new.max(found.next_new);
            self.elections.extend(found.elections);
            self.precincts.extend(found.precincts);
            self.evidence_checked += found.evidence_checked;
        }
        if let Some(v) = verified {
            self.checkpoints += 1;
            self.verified = Some(v);
        }
    }

    /// Everything found so far.
    pub fn report(&self) -> AuditReport {
        AuditReport {
            origin: self.config.key.origin.clone(),
            size: self.verified.as_ref().map_or(0, |v| v.size),
            root: self.verified.as_ref().map(|v| b64(&v.root)).unwrap_or_default(),
            rounds: self.rounds,
            checkpoints: self.checkpoints,
            entries: self.entries,
            elections: self.elections.len() as u64,
            precincts: self.precincts.len() as u64,
            evidence_checked: self.evidence_checked,
            problem_count: self.problem_count,
            problems: self.problems.clone(),
        }
    }

    /// GET with retries of transient failures; 4xx other than 408 and 429 is `Missing`.
    fn get(&self, url: &str, limit: u64) -> Result<Fetched, AuditError> {
        let mut last = String::new();
        let mut retry_after = None;
        for attempt in 0..self.config.attempts.max(1) {
            if attempt > 0 {
                let backoff = Duration::from_millis(250 << attempt.min(6));
                std::thread::sleep(retry_after.take().unwrap_or(backoff));
            }
            let response = match self.http.get(url).send() {
                Ok(r) => r,
                Err(e) => {
                    last = error_chain(&e);
                    continue;
                }
            };
            let status = response.status().as_u16();
            if matches!(status, 408 | 429) || status >= 500 {
                last = format!("HTTP {status}");
                retry_after = retry_after_of(&response);
                continue;
            }
            if !(200..300).contains(&status) {
                return Ok(Fetched::Missing(status));
            }
            let mut body = Vec::new();
            match response.take(limit + 1).read_to_end(&mut body) {
                Ok(_) => return Ok(Fetched::Body(body)),
                Err(e) => last = e.to_string(),
            }
        }
        Err(AuditError::Unreachable { url: url.to_owned(), reason: last })
    }
}

/// The `Retry-After` of an answer (delay seconds), at most a minute.
pub(crate) fn retry_after_of(response: &reqwest::blocking::Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    crate::sync::parse_retry_after(value).map(|d| d.min(Duration::from_secs(60)))
}

/// Whether a problem is about the served tree (and found again by checking it once more).
fn is_tree_problem(p: &Problem) -> bool {
    matches!(
        p,
        Problem::TileMissing { .. }
            | Problem::TileMalformed { .. }
            | Problem::EntryMalformed { .. }
            | Problem::EntryChanged { .. }
            | Problem::EntryMissing { .. }
            | Problem::EntryExtra { .. }
            | Problem::OrderMismatch { .. }
            | Problem::TileHashMismatch { .. }
            | Problem::RootMismatch { .. }
    )
}

/// The checkpoint body of a signed note, without checking any signature.
fn parse_checkpoint(note: &[u8]) -> Result<tlog_tiles::Checkpoint, String> {
    if note.len() as u64 > MAX_CHECKPOINT_BYTES {
        return Err(format!("larger than {MAX_CHECKPOINT_BYTES} bytes"));
    }
    let parsed = Note::from_bytes(note).map_err(|e| format!("not a signed note: {e}"))?;
    tlog_tiles::Checkpoint::from_bytes(parsed.text())
        .map_err(|e| format!("not a C2SP checkpoint body: {e}"))
}

impl<'a> RoundWork<'a> {
    fn new(auditor: &'a Auditor, old: Option<(u64, Hash)>) -> Self {
        Self {
            auditor,
            problems: Vec::new(),
            count_from: auditor.next_new,
            new_entries: 0,
            unlisted: (0, 0),
            tiles_missing: 0,
            elections: HashSet::new(),
            precincts: HashSet::new(),
            evidence_checked: 0,
            old,
            roots_at_old: (None, None),
            entries_checked: 0,
        }
    }

    /// Records a problem: listed up to the configured number, counted beyond.
    fn found(&mut self, p: Problem) {
        if matches!(p, Problem::TileMissing { .. }) {
            self.tiles_missing += 1;
        }
        if self.problems.len() < self.auditor.config.max_listed_problems {
            self.problems.push(p);
        } else if is_tree_problem(&p) {
            self.unlisted.0 += 1;
        } else {
            self.unlisted.1 += 1;
        }
    }

    /// Recomputes the tree of `size` entries from `state` on, compares it with the served
    /// tiles and with `root`; returns the state after the last full level-0 tile.
    fn check_tree(
        &mut self,
        mut state: TreeState,
        size: u64,
        root: &Hash,
    ) -> Result<TreeState, AuditError> {
        if let Some((old, _)) = self.old {
            // The previous tree may end exactly where the saved state does.
            let at =
                |t: &Option<Frontier>| t.as_ref().filter(|t| t.size == old).map(Frontier::root);
            self.roots_at_old = (at(&state.entries), at(&state.hashes));
        }
        let mut snapshot = state.clone();
        let last = size.div_ceil(TILE_WIDTH);
        let mut missing_run = 0;
        while state.tiles < last {
            let n = state.tiles;
            let width = (size - n * TILE_WIDTH).min(TILE_WIDTH);
            let before = self.tiles_missing;
            let full = self.check_level0(&mut state, n, width)?;
            state.tiles += 1;
            let both_missing = self.tiles_missing - before == 2;
            missing_run = if both_missing { missing_run + 1 } else { 0 };
            if missing_run >= MAX_MISSING_RUN {
                // Nothing is served from here on: the log is not as long as the checkpoint
                // claims. The missing files are reported; reading on would only add more.
                break;
            }
            if width == TILE_WIDTH {
                let leaves = state.tiles * TILE_WIDTH;
                self.push_hash(&mut state, 1, full, leaves)?;
                snapshot = state.clone();
            }
        }
        // The partial tiles of the levels above.
        let mut level = 1u8;
        while level < 64 && shr(size, u32::from(level) * u32::from(TILE_HEIGHT)) > 0 {
            let count = shr(size, u32::from(level) * u32::from(TILE_HEIGHT));
            let width = count % TILE_WIDTH;
            if width > 0 {
                let expected =
                    state.pending.get(usize::from(level) - 1).cloned().unwrap_or_default();
                self.check_upper(level, count / TILE_WIDTH, width, &expected)?;
            }
            level += 1;
        }
        for (source, tree) in
            [(RootSource::Entries, &state.entries), (RootSource::HashTiles, &state.hashes)]
        {
            let Some(tree) = tree else { continue };
            let got = tree.root();
            if tree.size != size || got != *root {
                self.found(Problem::RootMismatch {
                    source,
                    size: tree.size,
                    root: b64(&got),
                    checkpoint_size: size,
                    checkpoint_root: b64(root),
                });
            }
        }
        Ok(snapshot)
    }

    /// Adds the hash of a full tile of level `level − 1` to the expected hashes of level
    /// `level`, and checks the level-`level` tile when that fills it. `leaves` is the number of
    /// leaves covered so far.
    fn push_hash(
        &mut self,
        state: &mut TreeState,
        level: u8,
        hash: Option<Hash>,
        leaves: u64,
    ) -> Result<(), AuditError> {
        let i = usize::from(level) - 1;
        if state.pending.len() <= i {
            state.pending.resize(i + 1, Vec::new());
        }
        state.pending[i].push(hash);
        if state.pending[i].len() as u64 == TILE_WIDTH {
            let expected = std::mem::take(&mut state.pending[i]);
            let n = shr(leaves, u32::from(level + 1) * u32::from(TILE_HEIGHT)).saturating_sub(1);
            let up = self.check_upper(level, n, TILE_WIDTH, &expected)?;
            if level < 63 {
                self.push_hash(state, level + 1, up, leaves)?;
            }
        }
        Ok(())
    }

    /// Checks the served tile (`level` ≥ 1, index `n`) against the hashes of the tiles below;
    /// returns the hash of the tile (served if usable, else recomputed) if it is full.
    fn check_upper(
        &mut self,
        level: u8,
        n: u64,
        width: u64,
        expected: &[Option<Hash>],
    ) -> Result<Option<Hash>, AuditError> {
        let path = hash_tile_path(level, n, width);
        let served = self.fetch_hash_tile(&path, width)?;
        if let Some(served) = &served {
            for (k, (s, e)) in served.iter().zip(expected).enumerate() {
                if let Some(e) = e
                    && s != e
                {
                    let below = hash_tile_path(level - 1, n * TILE_WIDTH + k as u64, TILE_WIDTH);
                    self.found(Problem::TileHashMismatch {
                        path: path.clone(),
                        position: k as u64,
                        below,
                    });
                }
            }
        }
        if width != TILE_WIDTH {
            return Ok(None);
        }
        Ok(match served {
            Some(s) => tile_hash(&s.into_iter().map(Some).collect::<Vec<_>>()),
            None => tile_hash(expected),
        })
    }

    /// A served hash tile of `width` hashes, or `None` (with a problem) if unusable.
    fn fetch_hash_tile(&mut self, path: &str, width: u64) -> Result<Option<Vec<Hash>>, AuditError> {
        let url = format!("{}/{path}", self.auditor.log_url);
        let want = width * HASH_BYTES as u64;
        match self.auditor.get(&url, want)? {
            Fetched::Missing(status) => {
                self.found(Problem::TileMissing { path: path.to_owned(), status });
                Ok(None)
            }
            Fetched::Body(b) if b.len() as u64 != want => {
                self.found(Problem::TileMalformed {
                    path: path.to_owned(),
                    detail: if b.len() as u64 > want {
                        format!("more than {want} bytes for {width} hashes")
                    } else {
                        format!("{} bytes, expected {want} for {width} hashes", b.len())
                    },
                });
                Ok(None)
            }
            Fetched::Body(b) => {
                self.auditor.keep(&format!("log/{path}"), &b)?;
                Ok(Some(hashes_of(&b)))
            }
        }
    }

    /// Checks level-0 tile `n` of `width` entries: its entry bundle and its hash tile. Returns
    /// the hash of the tile (for the level above) if it is full.
    fn check_level0(
        &mut self,
        state: &mut TreeState,
        n: u64,
        width: u64,
    ) -> Result<Option<Hash>, AuditError> {
        let base = n * TILE_WIDTH;
        let tile = hash_tile_path(0, n, width);
        let bundle = bundle_path(n, width);
        let hashes = self.fetch_hash_tile(&tile, width)?;
        let leaves = self.read_bundle(&bundle, base)?;
        if let (Some(leaves), Some(hashes)) = (&leaves, &hashes) {
            self.diff(leaves, hashes, base, &bundle, &tile);
        }
        let (old, _) = self.old.unwrap_or((0, Hash::default()));
        match (&leaves, &mut state.entries) {
            (Some(leaves), Some(tree)) => {
                for leaf in leaves {
                    tree.push(*leaf);
                    if self.old.is_some() && tree.size == old {
                        self.roots_at_old.0 = Some(tree.root());
                    }
                }
            }
            _ => state.entries = None,
        }
        match (&hashes, &mut state.hashes) {
            (Some(hashes), Some(tree)) => {
                for h in hashes {
                    tree.push(*h);
                    if self.old.is_some() && tree.size == old {
                        self.roots_at_old.1 = Some(tree.root());
                    }
                }
            }
            _ => state.hashes = None,
        }
        if width != TILE_WIDTH {
            return Ok(None);
        }
        Ok(match (hashes, leaves) {
            (Some(h), _) => tile_hash(&h.into_iter().map(Some).collect::<Vec<_>>()),
            (None, Some(l)) if l.len() as u64 == TILE_WIDTH => {
                tile_hash(&l.into_iter().map(Some).collect::<Vec<_>>())
            }
            _ => None,
        })
    }

    /// Reads an entry bundle: the leaf hashes of its entries (hashed as they are), after
    /// checking each entry and, for new entries, counting it and checking its evidence.
    fn read_bundle(&mut self, path: &str, base: u64) -> Result<Option<Vec<Hash>>, AuditError> {
        let url = format!("{}/{path}", self.auditor.log_url);
        let bytes = match self.auditor.get(&url, MAX_BUNDLE_BYTES)? {
            Fetched::Body(b) => {
                self.auditor.keep(&format!("log/{path}"), &b)?;
                b
            }
            Fetched::Missing(status) => {
                self.found(Problem::TileMissing { path: path.to_owned(), status });
                return Ok(None);
            }
        };
        let entries = match log::parse_entry_bundle(&bytes) {
            Ok(e) if bytes.len() as u64 <= MAX_BUNDLE_BYTES => e,
            Ok(_) => {
                let detail = format!("larger than {MAX_BUNDLE_BYTES} bytes");
                self.found(Problem::TileMalformed { path: path.to_owned(), detail });
                return Ok(None);
            }
            Err(e) => {
                let detail = e.to_string();
                self.found(Problem::TileMalformed { path: path.to_owned(), detail });
                return Ok(None);
            }
        };
        let mut leaves = Vec::with_capacity(entries.len());
        for (j, raw) in entries.iter().enumerate() {
            let index = base + j as u64;
            leaves.push(tlog_tiles::record_hash(raw));
            self.entries_checked += 1;
            let new = index >= self.count_from;
            if new {
                self.new_entries += 1;
                self.count_from = index + 1;
            }
            match LogEntry::from_bytes(raw) {
                Ok(entry) if new => {
                    if self.auditor.evidence_url.is_some() {
                        self.check_evidence(index, &entry)?;
                        self.evidence_checked += 1;
                    }
                    self.elections.insert(entry.election.clone());
                    self.precincts.insert((entry.election, entry.precinct));
                }
                Ok(_) => {}
                Err(e) => self.found(Problem::EntryMalformed {
                    index,
                    path: path.to_owned(),
                    detail: e.to_string(),
                }),
            }
        }
        Ok(Some(leaves))
    }

    /// Lines up the leaf hashes of a bundle with the hashes of its level-0 tile.
    fn diff(&mut self, leaves: &[Hash], tile: &[Hash], base: u64, path: &str, tile_path: &str) {
        let in_bundle: HashSet<[u8; 32]> = leaves.iter().map(|h| h.0).collect();
        let in_tile: HashSet<[u8; 32]> = tile.iter().map(|h| h.0).collect();
        let (path, tile_path) = (path.to_owned(), tile_path.to_owned());
        let (mut i, mut j) = (0usize, 0usize);
        while i < tile.len() && j < leaves.len() {
            if leaves[j] == tile[i] {
                i += 1;
                j += 1;
                continue;
            }
            let index = base + i as u64;
            let known = (in_bundle.contains(&tile[i].0), in_tile.contains(&leaves[j].0));
            let (path, tile) = (path.clone(), tile_path.clone());
            match known {
                (false, false) => {
                    self.found(Problem::EntryChanged { index, path, tile });
                    i += 1;
                    j += 1;
                }
                (false, true) => {
                    self.found(Problem::EntryMissing { index, path, tile });
                    i += 1;
                }
                (true, false) => {
                    let position = base + j as u64;
                    self.found(Problem::EntryExtra { position, path, tile });
                    j += 1;
                }
                (true, true) => {
                    self.found(Problem::OrderMismatch { index, path, tile });
                    i += 1;
                    j += 1;
                }
            }
        }
        for k in i..tile.len() {
            let (path, tile) = (path.clone(), tile_path.clone());
            self.found(Problem::EntryMissing { index: base + k as u64, path, tile });
        }
        for k in j..leaves.len() {
            let (path, tile) = (path.clone(), tile_path.clone());
            self.found(Problem::EntryExtra { position: base + k as u64, path, tile });
        }
    }

    /// Fetches and checks the signed manifest and the photo of entry `index`.
    fn check_evidence(&mut self, index: u64, entry: &LogEntry) -> Result<(), AuditError> {
        let Some(base) = self.auditor.evidence_url.clone() else { return Ok(()) };
        let capture_id = entry.capture_id.to_hex();
        let url = format!("{base}/api/v1/captures/{capture_id}");
        let body = match self.auditor.get(&url, MAX_CAPTURE_JSON_BYTES)? {
            Fetched::Body(b) => {
                self.auditor.keep(&format!("api/v1/captures/{capture_id}"), &b)?;
                b
            }
            Fetched::Missing(status) => {
                self.found(Problem::EvidenceMissing { index, capture_id, status });
                return Ok(());
            }
        };
        #[derive(Deserialize)]
        struct Capture {
            manifest: String,
            signature: String,
        }
        let signed =
            serde_json::from_slice::<Capture>(&body).map_err(|e| e.to_string()).and_then(|c| {
                let sig = evidence::parse_lower_hex::<64>(&c.signature)
                    .ok_or_else(|| "the signature is not 128 lowercase hex digits".to_owned())?;
                SignedManifest::verify(c.manifest.as_bytes(), &sig).map_err(|e| e.to_string())
            });
        let signed = match signed {
            Ok(s) => s,
            Err(detail) => {
                self.found(Problem::EvidenceInvalid { index, capture_id, detail });
                return Ok(());
            }
        };
        let m = &signed.manifest;
        for (field, same) in [
            ("capture_id", signed.hash() == entry.capture_id),
            ("election", m.election == entry.election),
            ("precinct", m.precinct == entry.precinct),
            ("photo_sha256", m.photo.sha256 == entry.photo_sha256),
        ] {
            if !same {
                let capture_id = capture_id.clone();
                self.found(Problem::EvidenceMismatch { index, capture_id, field });
            }
        }
        let photo_sha256 = m.photo.sha256.to_hex();
        let url = format!("{base}/photos/{photo_sha256}");
        let limit = m.photo.bytes.min(self.auditor.config.limits.max_bytes);
        let photo = match self.auditor.get(&url, limit)? {
            Fetched::Body(b) => {
                self.auditor.keep(&format!("photos/{photo_sha256}"), &b)?;
                b
            }
            Fetched::Missing(status) => {
                self.found(Problem::PhotoMissing { index, photo_sha256, status });
                return Ok(());
            }
        };
        if photo.len() as u64 != m.photo.bytes {
            let detail = if photo.len() as u64 > limit {
                format!("more than the signed {} bytes", m.photo.bytes)
            } else {
                format!("{} bytes, the manifest says {}", photo.len(), m.photo.bytes)
            };
            self.found(Problem::PhotoMismatch { index, photo_sha256, detail });
            return Ok(());
        }
        if Sha256Hash::of(&photo) != m.photo.sha256 {
            let detail = "the bytes do not have the signed SHA-256".to_owned();
            self.found(Problem::PhotoMismatch { index, photo_sha256, detail });
            return Ok(());
        }
        let detail = match media::strip(&photo, &self.auditor.config.limits) {
            Err(e) => Some(e.to_string()),
            Ok(clean) if clean.media_type != m.photo.media_type => {
                Some("another media type than the manifest's".to_owned())
            }
            Ok(clean) if (clean.width, clean.height) != (m.photo.width, m.photo.height) => {
                Some(format!(
                    "{}×{}, the manifest says {}×{}",
                    clean.width, clean.height, m.photo.width, m.photo.height
                ))
            }
            Ok(clean) if clean.bytes != photo => Some("it still carries metadata".to_owned()),
            Ok(_) => None,
        };
        if let Some(detail) = detail {
            self.found(Problem::PhotoNotClean { index, photo_sha256, detail });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frontier gives the RFC 6962 root of every size (checked against `tlog_tiles`).
    #[test]
    fn frontier_roots_match_tlog_tiles() {
        struct Tree(Vec<Hash>);
        impl tlog_tiles::HashReader for Tree {
            fn read_hashes(&self, idx: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
                Ok(idx.iter().map(|i| self.0[*i as usize]).collect())
            }
        }
        let mut t = Tree(Vec::new());
        let mut f = Frontier::default();
        assert_eq!(f.root(), tlog_tiles::tree_hash(0, &t).unwrap());
        for i in 0..600u64 {
            let leaf = tlog_tiles::record_hash(&i.to_be_bytes());
            let new = tlog_tiles::stored_hashes_for_record_hash(i, leaf, &t).unwrap();
            t.0.extend(new);
            f.push(leaf);
            assert_eq!(f.root(), tlog_tiles::tree_hash(i + 1, &t).unwrap(), "size {}", i + 1);
        }
    }

    #[test]
    fn evidence_url_defaults_to_the_server() {
        assert_eq!(default_evidence_url("http://h:1/log"), "http://h:1");
        assert_eq!(default_evidence_url("http://h:1/log/"), "http://h:1");
        assert_eq!(default_evidence_url("https://m.example/hattama"), "https://m.example/hattama");
    }

    fn h(i: u8) -> Hash {
        Hash([i; 32])
    }

    fn auditor(max_listed_problems: usize) -> Auditor {
        let key =
            LogKey::for_signer("a", &ed25519_dalek::SigningKey::from_bytes(&[1; 32])).unwrap();
        let config =
            AuditConfig { max_listed_problems, ..AuditConfig::new("http://127.0.0.1:9/log", key) };
        Auditor::new(config).unwrap()
    }

    #[test]
    fn problems_beyond_the_list_are_counted() {
        let auditor = auditor(2);
        let mut w = RoundWork::new(&auditor, None);
        for size in 0..3 {
            w.found(Problem::CheckpointSignature { size });
            w.found(Problem::TileMissing { path: format!("tile/0/00{size}"), status: 404 });
        }
        assert_eq!((w.problems.len(), w.unlisted, w.tiles_missing), (2, (2, 2), 3));
    }

    fn diff(leaves: &[u8], tile: &[u8]) -> Vec<(&'static str, u64)> {
        let auditor = auditor(1000);
        let mut w = RoundWork::new(&auditor, None);
        let leaves: Vec<Hash> = leaves.iter().map(|i| h(*i)).collect();
        let tile: Vec<Hash> = tile.iter().map(|i| h(*i)).collect();
        w.diff(&leaves, &tile, 100, "b", "t");
        w.problems
            .iter()
            .map(|p| match p {
                Problem::EntryChanged { index, .. }
                | Problem::EntryMissing { index, .. }
                | Problem::OrderMismatch { index, .. }
                | Problem::EntryExtra { position: index, .. } => (p.kind(), *index),
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn bundle_and_tile_are_lined_up() {
        assert_eq!(diff(&[1, 2, 3, 4], &[1, 2, 3, 4]), vec![]);
        assert_eq!(diff(&[1, 9, 3, 4], &[1, 2, 3, 4]), vec![("entry_changed", 101)]);
        assert_eq!(diff(&[1, 3, 4], &[1, 2, 3, 4]), vec![("entry_missing", 101)]);
        assert_eq!(diff(&[1, 2, 3], &[1, 2, 3, 4]), vec![("entry_missing", 103)]);
        assert_eq!(diff(&[1, 2, 9, 3, 4], &[1, 2, 3, 4]), vec![("entry_extra", 102)]);
        assert_eq!(
            diff(&[1, 4, 3, 2], &[1, 2, 3, 4]),
            vec![("order_mismatch", 101), ("order_mismatch", 103)]
        );
    }
}
