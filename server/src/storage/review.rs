//! What the review of captures stores: accounts and sessions, the review index of captures
//! (with their flags and review state), decisions, double-entry transcriptions and the
//! append-only audit trail. The rules (who may do what, the double-entry state machine) live
//! in [`crate::review`]; this trait only reads and writes, each write in one transaction.
//!
//! Decisions, transcription entries and audit events are append-only: the SQL schema refuses
//! `UPDATE` and `DELETE` on them. The review index and the transcription states are derived
//! from them and from the stored captures.

use std::collections::{BTreeMap, HashMap};

use hattama_core::evidence::Sha256Hash;
use serde::Serialize;

use super::StorageError;

/// The rules of the flags live above storage (`review::flags`); their bounds are named here too.
pub use crate::review::flags::{TIME_FAR_AFTER_MS, TIME_FAR_BEFORE_MS};

/// A user's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything coordinators do, in every region, plus the audit export.
    Admin,
    /// Reviews captures and transcribes protocols, optionally only in some regions.
    Coordinator,
    /// Reads everything (including the audit trail), changes nothing.
    Supervisor,
}

impl Role {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Coordinator => "coordinator",
            Role::Supervisor => "supervisor",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "coordinator" => Some(Role::Coordinator),
            "supervisor" => Some(Role::Supervisor),
            _ => None,
        }
    }
}

/// An account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Stable id.
    pub id: i64,
    /// Login name.
    pub username: String,
    /// The name shown to others and in the audit trail.
    pub display_name: String,
    /// The role.
    pub role: Role,
    /// Regions a coordinator is limited to (empty: all regions).
    pub regions: Vec<String>,
    /// Whether the account is disabled (it can no longer log in; its sessions are ended).
    pub disabled: bool,
    /// When it was created.
    pub created_at_ms: u64,
}

/// An account to create.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// Login name.
    pub username: String,
    /// Shown name.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Regions (coordinators; empty: all).
    pub regions: Vec<String>,
}

/// A live session.
#[derive(Clone, Debug)]
pub struct Session {
    /// Its user.
    pub user: User,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    /// When it expires.
    pub expires_at_ms: u64,
}

/// What a coordinator decided about a capture: the core's type, the same the device is told.
pub use hattama_core::decision::DecisionKind;

/// A decision on a capture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// What was decided.
    pub kind: DecisionKind,
    /// Why (rejections: `not_a_protocol`, `unreadable`, `wrong_precinct`, `duplicate`; flags:
    /// free text).
    pub reason: Option<String>,
    /// When.
    pub at_ms: u64,
}

/// A capture's newest decision with its id and who took it: the id is the version a decision
/// form is rendered from, so that a decision taken on a stale page is refused and the page can
/// say "already decided by … at …".
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DecisionRecord {
    /// The decision's id (decisions are numbered in the order they were taken).
    pub id: i64,
    /// Who took it (display name).
    pub user_name: String,
    /// The decision.
    pub decision: Decision,
}

/// Where the double entry of a precinct's protocol stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TranscriptionStatus {
    /// No entry or one entry: waiting for a (second) blind entry.
    Pending,
    /// Two entries differ: waiting for a third person to decide.
    Disputed,
    /// Two equal entries, or a third person's resolution.
    Verified,
}

impl TranscriptionStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TranscriptionStatus::Pending => "pending",
            TranscriptionStatus::Disputed => "disputed",
            TranscriptionStatus::Verified => "verified",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(TranscriptionStatus::Pending),
            "disputed" => Some(TranscriptionStatus::Disputed),
            "verified" => Some(TranscriptionStatus::Verified),
            _ => None,
        }
    }
}

/// The transcription state of one precinct.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Transcription {
    /// The precinct.
    pub precinct: String,
    /// Where the double entry stands.
    pub status: TranscriptionStatus,
    /// The verified values per protocol line id; empty unless verified.
    pub values: BTreeMap<String, u64>,
    /// When it was verified.
    pub verified_at_ms: Option<u64>,
    /// Why a coordinator verified a protocol that breaks a hard rule of the template.
    pub inconsistency_note: Option<String>,
}

/// One transcription entry by one user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Its id (entries are numbered in the order they were made).
    pub id: i64,
    /// Who made it.
    pub user_id: i64,
    /// Their display name.
    pub user_name: String,
    /// The values per line id.
    pub values: BTreeMap<String, u64>,
    /// Why the protocol breaks a hard rule, if the user recorded it.
    pub reason: Option<String>,
    /// Whether it is a third person's resolution of two differing entries.
    pub resolution: bool,
    /// When.
    pub at_ms: u64,
}

/// An entry to append.
#[derive(Clone, Debug)]
pub struct NewEntry {
    /// Who.
    pub user_id: i64,
    /// Values per line id.
    pub values: BTreeMap<String, u64>,
    /// The recorded reason for a broken hard rule.
    pub reason: Option<String>,
    /// A resolution of a dispute.
    pub resolution: bool,
    /// When.
    pub at_ms: u64,
}

/// One event of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// Sequence number.
    pub id: i64,
    /// When.
    pub at_ms: u64,
    /// Who (absent for events without a user, such as a failed login of an unknown name).
    pub user_id: Option<i64>,
    /// Their display name then.
    pub user_name: Option<String>,
    /// What: `login`, `login_failed`, `logout`, `decision`, `entry`, `user_created`, …
    pub action: String,
    /// The election concerned.
    pub election: Option<String>,
    /// The precinct concerned.
    pub precinct: Option<String>,
    /// The capture concerned.
    pub capture: Option<String>,
    /// The state before (JSON).
    pub before: Option<String>,
    /// The state after (JSON).
    pub after: Option<String>,
}

/// An event to append to the audit trail.
#[derive(Clone, Debug, Default)]
pub struct NewAudit {
    /// When.
    pub at_ms: u64,
    /// Who.
    pub user_id: Option<i64>,
    /// What.
    pub action: String,
    /// Election.
    pub election: Option<String>,
    /// Precinct.
    pub precinct: Option<String>,
    /// Capture id (hex).
    pub capture: Option<String>,
    /// Before (JSON).
    pub before: Option<String>,
    /// After (JSON).
    pub after: Option<String>,
}

/// Which audit events to read.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Events about this capture, or about its precinct's transcription.
    pub capture: Option<String>,
    /// Events about this precinct (election, precinct).
    pub precinct: Option<(String, String)>,
    /// At most this many, newest first (0: all, oldest first).
    pub limit: usize,
}

/// A capture's review state: its newest decision, or new.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewState {
    /// No decision yet.
    New,
    /// Accepted.
    Accepted,
    /// Rejected.
    Rejected,
    /// Flagged for a supervisor.
    Flagged,
}

impl ReviewState {
    /// Every state, in filter order.
    pub const ALL: [ReviewState; 4] =
        [ReviewState::New, ReviewState::Accepted, ReviewState::Rejected, ReviewState::Flagged];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewState::New => "new",
            ReviewState::Accepted => "accepted",
            ReviewState::Rejected => "rejected",
            ReviewState::Flagged => "flagged",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        ReviewState::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl From<DecisionKind> for ReviewState {
    fn from(k: DecisionKind) -> Self {
        match k {
            DecisionKind::Accepted => ReviewState::Accepted,
            DecisionKind::Rejected => ReviewState::Rejected,
            DecisionKind::Flagged => ReviewState::Flagged,
        }
    }
}

/// A warning sign on a capture, computed from every stored capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// The device's previous capture (sequence number − 1) never reached the server.
    ChainGap,
    /// Devices' own transcriptions for this precinct disagree on a line.
    DevicesDisagree,
    /// The same photo bytes were submitted for another precinct.
    DuplicatePhoto,
    /// Taken long before the count ended or long after ([`TIME_FAR_BEFORE_MS`], [`TIME_FAR_AFTER_MS`]).
    TimeFar,
}

impl Flag {
    /// Every flag.
    pub const ALL: [Flag; 4] =
        [Flag::ChainGap, Flag::DevicesDisagree, Flag::DuplicatePhoto, Flag::TimeFar];

    /// Its bit in [`QueueItem::flags`].
    pub fn bit(self) -> u32 {
        match self {
            Flag::ChainGap => 1,
            Flag::DevicesDisagree => 2,
            Flag::DuplicatePhoto => 4,
            Flag::TimeFar => 8,
        }
    }

    /// The spelling in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::ChainGap => "chain_gap",
            Flag::DevicesDisagree => "devices_disagree",
            Flag::DuplicatePhoto => "duplicate_photo",
            Flag::TimeFar => "time_far",
        }
    }

    /// Parses the URL spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Flag::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// The flags set in a bit set.
    pub fn of_bits(bits: u32) -> Vec<Flag> {
        Flag::ALL.into_iter().filter(|f| bits & f.bit() != 0).collect()
    }
}

/// A capture as the review queue shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueueItem {
    /// Capture id.
    pub capture: Sha256Hash,
    /// Election.
    pub election: String,
    /// Precinct id.
    pub precinct: String,
    /// The precinct's official number (0 if unknown).
    pub number: u32,
    /// Region.
    pub region: String,
    /// District.
    pub district: String,
    /// Address.
    pub address: String,
    /// Device id.
    pub device_id: String,
    /// Device sequence number.
    pub seq: u64,
    /// Page number of the protocol.
    pub page: u32,
    /// Page count of the protocol.
    pub pages: u32,
    /// `posted`, `handed`, `not-posted`.
    pub kind: String,
    /// Device clock at capture.
    pub captured_at_ms: u64,
    /// When the server stored it.
    pub received_at_ms: u64,
    /// Photo hash.
    pub photo_sha256: Sha256Hash,
    /// Flags, as bits ([`Flag::bit`]).
    pub flags: u32,
    /// Review state.
    pub state: ReviewState,
}

/// A view of the queue by transcription state (on top of the other filters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueView {
    /// Captures of a protocol (not rejected, not a report that none was posted) of precincts
    /// still waiting for a blind entry that this user (by id) has not entered.
    NeedsEntry(i64),
    /// Captures of disputed precincts that this user (by id) did not enter: they may resolve.
    Disputed(i64),
    /// Captures of precincts where an entry recorded why the protocol itself breaks a hard rule.
    Inconsistent,
}

/// What the queue shows.
#[derive(Clone, Debug, Default)]
pub struct QueueFilter {
    /// Election.
    pub election: String,
    /// Only this region.
    pub region: Option<String>,
    /// Only this district.
    pub district: Option<String>,
    /// Only this precinct (id or number).
    pub precinct: Option<String>,
    /// Only this state.
    pub state: Option<ReviewState>,
    /// Only captures with this flag.
    pub flag: Option<Flag>,
    /// Only these regions (a coordinator's scope; `None`: all).
    pub scope: Option<Vec<String>>,
    /// Only this view by transcription state.
    pub view: Option<QueueView>,
}

/// One page of the queue.
#[derive(Clone, Debug, Default)]
pub struct QueuePage {
    /// The captures, in queue order (region, district, precinct number, page, arrival).
    pub items: Vec<QueueItem>,
    /// How many match the filter in all.
    pub total: u64,
}

/// The review's storage. Methods are blocking; async code calls them through `web::block`.
pub trait ReviewStorage: Send + Sync + 'static {
    /// The newest decision per capture of an election (captures with no decision are absent).
    fn capture_decisions(
        &self,
        election: &str,
    ) -> Result<HashMap<Sha256Hash, Decision>, StorageError>;
    /// The transcription state of every precinct of an election that has at least one entry.
    fn transcriptions(&self, election: &str) -> Result<Vec<Transcription>, StorageError>;

    /// Creates an account, with the audit event `audit` makes of it in the same transaction;
    /// [`StorageError::Conflict`] if the name is taken.
    fn create_user(
        &self,
        user: &NewUser,
        password_hash: &str,
        now_ms: u64,
        audit: &dyn Fn(&User) -> NewAudit,
    ) -> Result<User, StorageError>;
    /// An account and its password hash, by login name.
    fn user_by_name(&self, username: &str) -> Result<Option<(User, String)>, StorageError>;
    /// Every account.
    fn users(&self) -> Result<Vec<User>, StorageError>;
    /// Disables an account and ends its sessions, with the audit event `audit` makes of the
    /// account in the same transaction; returns whether it exists.
    fn disable_user(
        &self,
        username: &str,
        now_ms: u64,
        audit: &dyn Fn(&User) -> NewAudit,
    ) -> Result<bool, StorageError>;
    /// Sets a new password hash (enabling the account again) and ends its sessions, with the
    /// audit event `audit` makes of the account in the same transaction; returns whether it
    /// exists.
    fn set_password(
        &self,
        username: &str,
        hash: &str,
        audit: &dyn Fn(&User) -> NewAudit,
    ) -> Result<bool, StorageError>;

    /// Stores a session by the SHA-256 of its token.
    fn create_session(
        &self,
        token_sha256: &[u8; 32],
        user_id: i64,
        csrf: &str,
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<(), StorageError>;
    /// A session that has not expired, of an enabled user.
    fn session(
        &self,
        token_sha256: &[u8; 32],
        now_ms: u64,
    ) -> Result<Option<Session>, StorageError>;
    /// Ends a session.
    fn delete_session(&self, token_sha256: &[u8; 32]) -> Result<(), StorageError>;

    /// Appends an event to the audit trail.
    fn append_audit(&self, event: &NewAudit) -> Result<(), StorageError>;
    /// Reads audit events.
    fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StorageError>;

    /// Brings the review index up to date with the stored captures (cheap when nothing new
    /// arrived): new captures enter as `new`, and the flags of every capture that shares a
    /// device, a photo or a precinct with a new one are computed again.
    fn refresh_index(&self) -> Result<(), StorageError>;
    /// A page of the queue.
    fn queue(
        &self,
        filter: &QueueFilter,
        offset: u64,
        limit: u64,
    ) -> Result<QueuePage, StorageError>;
    /// One capture of the index.
    fn queue_item(&self, capture: &Sha256Hash) -> Result<Option<QueueItem>, StorageError>;
    /// The captures before and after this one in the queue under this filter.
    fn queue_neighbours(
        &self,
        filter: &QueueFilter,
        capture: &QueueItem,
    ) -> Result<(Option<Sha256Hash>, Option<Sha256Hash>), StorageError>;
    /// Every capture of a precinct, in queue order.
    fn precinct_items(
        &self,
        election: &str,
        precinct: &str,
    ) -> Result<Vec<QueueItem>, StorageError>;
    /// The regions of an election with their districts, sorted.
    fn regions(&self, election: &str) -> Result<Vec<(String, Vec<String>)>, StorageError>;
    /// Ids of every election, sorted.
    fn election_ids(&self) -> Result<Vec<String>, StorageError>;

    /// Appends a decision on a capture and its audit event, and updates the capture's review
    /// state, in one transaction. With `seen` (the id of the newest decision the decider saw, 0
    /// for none), only if that is still the newest (else [`StorageError::Conflict`]: someone
    /// else decided meanwhile).
    fn record_decision(
        &self,
        capture: &Sha256Hash,
        user_id: i64,
        decision: &Decision,
        audit: &NewAudit,
        seen: Option<i64>,
    ) -> Result<(), StorageError>;
    /// A capture's newest decision.
    fn decision(&self, capture: &Sha256Hash) -> Result<Option<Decision>, StorageError>;
    /// A capture's newest decision with its id and who took it.
    fn decision_record(&self, capture: &Sha256Hash)
    -> Result<Option<DecisionRecord>, StorageError>;
    /// The newest decision on each capture of a device (by device id) that has one, in the
    /// device's sequence order, at most `limit`: what the device is told at its sync.
    fn device_decisions(
        &self,
        device_id: &str,
        limit: usize,
    ) -> Result<Vec<(Sha256Hash, Decision)>, StorageError>;

    /// A precinct's transcription state, if it has an entry.
    fn transcription(
        &self,
        election: &str,
        precinct: &str,
    ) -> Result<Option<Transcription>, StorageError>;
    /// The transcription statuses of some precincts of an election (those without an entry are
    /// absent).
    fn transcription_statuses(
        &self,
        election: &str,
        precincts: &[String],
    ) -> Result<HashMap<String, TranscriptionStatus>, StorageError>;
    /// A precinct's entries, oldest first.
    fn entries(&self, election: &str, precinct: &str) -> Result<Vec<Entry>, StorageError>;
    /// Appends an entry, the precinct's new transcription state and the audit event in one
    /// transaction, if the precinct still has exactly `expected_entries` entries (else
    /// [`StorageError::Conflict`]: someone else entered meanwhile).
    fn append_entry(
        &self,
        election: &str,
        precinct: &str,
        expected_entries: usize,
        entry: &NewEntry,
        state: &Transcription,
        audit: &NewAudit,
    ) -> Result<(), StorageError>;
}
