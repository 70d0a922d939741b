//! Records and enums the apps see: small mirrors of the core's types, with `From` conversions.
//!
//! Hashes and keys cross the boundary as lowercase hex strings (the spelling of every document in
//! `docs/`), times as milliseconds since the Unix epoch, photos as bytes. Nothing here decides
//! anything: every rule stays in `hattama-core`.

use std::collections::HashMap;
use std::time::Duration;

use hattama_core::decision;
use hattama_core::election::{self, Election, Line, LineKind, Relation};
use hattama_core::evidence::{self, Page, SignedManifest};
use hattama_core::media::MediaLimits;
use hattama_core::receipt::SignedReceipt;
use hattama_core::store::{self, CaptureRecord};
use hattama_core::sync::{self, Enrollment, SyncConfig, SyncError};
use hattama_core::{CaptureDetail as CoreDetail, CaptureRequest as CoreRequest, ClientConfig};

/// Optional tuning of a [`crate::Client`]; every field left out keeps the core's default
/// (`docs/sync-protocol.md`). Apps normally pass none; tests shorten the back-off.
#[derive(Clone, Debug, Default, uniffi::Record)]
pub struct ClientSettings {
    /// Largest photo accepted, in bytes (default 40 MiB).
    #[uniffi(default)]
    pub max_photo_bytes: Option<u64>,
    /// First back-off ceiling in ms (default 250); each retry doubles it.
    #[uniffi(default)]
    pub backoff_base_ms: Option<u64>,
    /// Largest back-off ceiling in ms (default 30 000).
    #[uniffi(default)]
    pub backoff_cap_ms: Option<u64>,
    /// Failed attempts in a row before a sync gives up with `RetryLater` (default 8).
    #[uniffi(default)]
    pub max_retries: Option<u32>,
    /// Limit on opening a connection, in ms (default 15 000).
    #[uniffi(default)]
    pub connect_timeout_ms: Option<u64>,
    /// Limit on one request, in ms (default 120 000).
    #[uniffi(default)]
    pub request_timeout_ms: Option<u64>,
    /// Bytes per upload request, at most 1 MiB (the default).
    #[uniffi(default)]
    pub chunk_bytes: Option<u32>,
    /// Certificate authorities to trust besides the built-in web roots (PEM text): a server
    /// whose certificate comes from the organisation's own CA.
    #[uniffi(default)]
    pub extra_ca_pem: Option<String>,
}

impl From<ClientSettings> for ClientConfig {
    fn from(s: ClientSettings) -> Self {
        let (limits, sync) = (MediaLimits::default(), SyncConfig::default());
        let ms = Duration::from_millis;
        ClientConfig {
            limits: MediaLimits {
                max_bytes: s.max_photo_bytes.unwrap_or(limits.max_bytes),
                ..limits
            },
            sync: SyncConfig {
                backoff_base: s.backoff_base_ms.map_or(sync.backoff_base, ms),
                backoff_cap: s.backoff_cap_ms.map_or(sync.backoff_cap, ms),
                max_retries: s.max_retries.unwrap_or(sync.max_retries),
                connect_timeout: s.connect_timeout_ms.map_or(sync.connect_timeout, ms),
                request_timeout: s.request_timeout_ms.map_or(sync.request_timeout, ms),
                chunk_bytes: s.chunk_bytes.map_or(sync.chunk_bytes, |b| b as usize),
                extra_ca_pem: s.extra_ca_pem.map(String::into_bytes),
                ..sync
            },
        }
    }
}

/// This device's identity: its ed25519 public key (the private key never leaves the store).
#[derive(Clone, Debug, uniffi::Record)]
pub struct DeviceIdentity {
    /// The public key, 64 hex digits.
    pub public_key: String,
    /// A short fingerprint for people (16 hex digits).
    pub fingerprint: String,
}

impl From<evidence::DeviceKey> for DeviceIdentity {
    fn from(k: evidence::DeviceKey) -> Self {
        Self { public_key: k.to_hex(), fingerprint: k.fingerprint() }
    }
}

/// What the photo is evidence of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum EvidenceKind {
    /// The protocol copy posted on the wall of the polling station.
    Posted,
    /// A copy handed to the observer.
    Handed,
    /// No protocol was posted: the photo shows where it should have been.
    NotPosted,
}

impl From<EvidenceKind> for evidence::EvidenceKind {
    fn from(k: EvidenceKind) -> Self {
        match k {
            EvidenceKind::Posted => Self::Posted,
            EvidenceKind::Handed => Self::Handed,
            EvidenceKind::NotPosted => Self::NotPosted,
        }
    }
}

impl From<evidence::EvidenceKind> for EvidenceKind {
    fn from(k: evidence::EvidenceKind) -> Self {
        match k {
            evidence::EvidenceKind::Posted => Self::Posted,
            evidence::EvidenceKind::Handed => Self::Handed,
            evidence::EvidenceKind::NotPosted => Self::NotPosted,
        }
    }
}

/// A coarse location (about 1 km), only if the observer opted in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Record)]
pub struct CoarseLocation {
    /// Latitude in hundredths of a degree, -9000 to 9000.
    pub lat_e2: i32,
    /// Longitude in hundredths of a degree, -18000 to 18000.
    pub lon_e2: i32,
}

impl From<CoarseLocation> for evidence::CoarseLocation {
    fn from(l: CoarseLocation) -> Self {
        Self { lat_e2: l.lat_e2, lon_e2: l.lon_e2 }
    }
}

impl From<evidence::CoarseLocation> for CoarseLocation {
    fn from(l: evidence::CoarseLocation) -> Self {
        Self { lat_e2: l.lat_e2, lon_e2: l.lon_e2 }
    }
}

/// What the observer says about a photo at capture time. The core checks every field.
#[derive(Clone, Debug, uniffi::Record)]
pub struct CaptureRequest {
    /// Election id (from the enrollment's election).
    pub election: String,
    /// Precinct: its id or its official number (one of the enrollment's precincts).
    pub precinct: String,
    /// The device's UTC offset now, in minutes (the app knows the time zone; the core does not).
    pub utc_offset_min: i32,
    /// What the photo shows.
    #[uniffi(default = None)]
    pub kind: Option<EvidenceKind>,
    /// Page number of a multi-page protocol (default 1).
    #[uniffi(default = 1)]
    pub page_number: u32,
    /// Page count (default 1).
    #[uniffi(default = 1)]
    pub page_count: u32,
    /// Optional note.
    #[uniffi(default)]
    pub note: Option<String>,
    /// Optional transcription of the protocol: line id to number.
    #[uniffi(default)]
    pub transcription: Option<HashMap<String, u64>>,
    /// Coarse location, only if the observer opted in.
    #[uniffi(default)]
    pub location: Option<CoarseLocation>,
}

impl From<CaptureRequest> for CoreRequest {
    fn from(r: CaptureRequest) -> Self {
        CoreRequest {
            election: r.election,
            precinct: r.precinct,
            kind: r.kind.unwrap_or(EvidenceKind::Posted).into(),
            page: Page { count: r.page_count, number: r.page_number },
            note: r.note,
            transcription: r.transcription.map(|t| t.into_iter().collect()),
            location: r.location.map(Into::into),
            utc_offset_min: r.utc_offset_min,
        }
    }
}

/// A finished capture: durably stored and signed.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Captured {
    /// The capture id (SHA-256 of the signed manifest).
    pub id: String,
    /// Its sequence number on this device (1, 2, …).
    pub seq: u64,
    /// Capture time by the device clock.
    pub captured_at_ms: u64,
    /// SHA-256 of the stored (stripped) photo.
    pub photo_sha256: String,
    /// Length of the stored photo.
    pub photo_bytes: u64,
    /// `image/jpeg` or `image/png`.
    pub media_type: String,
    /// Width in pixels, as stored.
    pub width: u32,
    /// Height in pixels, as stored.
    pub height: u32,
    /// Metadata bytes removed from the camera's file (EXIF with GPS, maker notes, …).
    pub removed_bytes: u64,
}

impl From<hattama_core::Captured> for Captured {
    fn from(c: hattama_core::Captured) -> Self {
        let p = c.manifest.photo;
        Self {
            id: c.id.to_hex(),
            seq: c.seq,
            captured_at_ms: c.manifest.captured_at_ms,
            photo_sha256: p.sha256.to_hex(),
            photo_bytes: p.bytes,
            media_type: p.media_type.as_str().into(),
            width: p.width,
            height: p.height,
            removed_bytes: c.removed_bytes,
        }
    }
}

/// Where a capture is in its life.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum CaptureState {
    /// Stored on the device, not sent yet.
    Captured,
    /// Waiting for the next sync.
    Queued,
    /// An upload has started.
    Uploading,
    /// The server holds it and its receipt verified.
    Receipted,
    /// The server refused it for good.
    Rejected {
        /// The server's code word and message.
        reason: String,
    },
    /// Deleted before it was sent; its sequence number stays as a visible gap.
    Deleted,
}

impl From<store::CaptureState> for CaptureState {
    fn from(s: store::CaptureState) -> Self {
        match s {
            store::CaptureState::Captured => Self::Captured,
            store::CaptureState::Queued => Self::Queued,
            store::CaptureState::Uploading => Self::Uploading,
            store::CaptureState::Receipted => Self::Receipted,
            store::CaptureState::Rejected { reason } => Self::Rejected { reason },
            store::CaptureState::Deleted => Self::Deleted,
        }
    }
}

/// What the coordinators decided about a capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ReviewKind {
    /// A readable protocol of the right station: nothing more to do.
    Accepted,
    /// Not usable: ask the observer for a retake while they may still be at the station.
    Rejected,
    /// Handed to a supervisor: still under review.
    Flagged,
}

/// The coordinators' newest decision on a capture, as the server signed it for this device.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct ReviewDecision {
    /// What was decided.
    pub kind: ReviewKind,
    /// Why, for a rejection: `unreadable`, `not_a_protocol`, `wrong_precinct` or `duplicate`
    /// (code words: the app shows its own words for them).
    pub reason: Option<String>,
    /// When (server clock).
    pub decided_at_ms: u64,
}

impl From<store::Review> for ReviewDecision {
    fn from(r: store::Review) -> Self {
        let kind = match r.kind {
            decision::DecisionKind::Accepted => ReviewKind::Accepted,
            decision::DecisionKind::Rejected => ReviewKind::Rejected,
            decision::DecisionKind::Flagged => ReviewKind::Flagged,
        };
        Self { kind, reason: r.reason, decided_at_ms: r.decided_at_ms }
    }
}

/// One row of the capture list.
#[derive(Clone, Debug, uniffi::Record)]
pub struct CaptureSummary {
    /// The capture id.
    pub id: String,
    /// Its sequence number.
    pub seq: u64,
    /// Election id.
    pub election: String,
    /// Precinct id.
    pub precinct: String,
    /// What the photo shows.
    pub kind: EvidenceKind,
    /// Page number.
    pub page_number: u32,
    /// Page count.
    pub page_count: u32,
    /// Capture time (device clock, UTC).
    pub captured_at_ms: u64,
    /// The device's UTC offset at capture, in minutes.
    pub utc_offset_min: i32,
    /// SHA-256 of the photo; `None` once deleted.
    pub photo_sha256: Option<String>,
    /// Length of the photo; `None` once deleted.
    pub photo_bytes: Option<u64>,
    /// Media type; `None` once deleted.
    pub media_type: Option<String>,
    /// Metadata bytes removed from the camera's file.
    pub removed_bytes: u64,
    /// Where it is in its life.
    pub state: CaptureState,
    /// Last state change.
    pub updated_at_ms: u64,
    /// The coordinators' newest decision, once the device learned it at a sync.
    pub review: Option<ReviewDecision>,
    /// The photo was removed from this phone after its verified receipt (the election's
    /// setting): the server keeps it; `photo` and `thumbnail` fail with `photo_on_server`.
    pub photo_on_server: bool,
    /// The observer must act: the server refused the capture (`state` says why), or the
    /// coordinators rejected its photo (`review` says why): show it first and ask for a retake.
    pub needs_action: bool,
    /// Receipted and `witnessed`: a checkpoint covering its log entry carries a quorum of the
    /// election's witnesses' cosignatures (never without a witness policy).
    pub witnessed: bool,
}

impl From<CaptureRecord> for CaptureSummary {
    fn from(r: CaptureRecord) -> Self {
        let needs_action = r.needs_action();
        Self {
            needs_action,
            witnessed: r.is_witnessed(),
            photo_on_server: r.photo_removed_at_ms.is_some(),
            review: r.review.map(Into::into),
            id: r.id.to_hex(),
            seq: r.seq,
            election: r.election,
            precinct: r.precinct,
            kind: r.kind.into(),
            page_number: r.page_number,
            page_count: r.page_count,
            captured_at_ms: r.captured_at_ms,
            utc_offset_min: r.utc_offset_min,
            photo_sha256: r.photo.map(|(h, _, _)| h.to_hex()),
            photo_bytes: r.photo.map(|(_, b, _)| b),
            media_type: r.photo.map(|(_, _, t)| t.as_str().to_owned()),
            removed_bytes: r.removed_bytes,
            state: r.state.into(),
            updated_at_ms: r.updated_at_ms,
        }
    }
}

/// A capture's signed evidence, as it will be published.
#[derive(Clone, Debug, uniffi::Record)]
pub struct SignedEvidence {
    /// The canonical manifest (JSON), exactly the signed bytes.
    pub manifest_json: String,
    /// The device's ed25519 signature, 128 hex digits.
    pub signature: String,
    /// The device key that signed it.
    pub device_key: String,
    /// The id of the previous capture in this device's chain (64 zeros for the first).
    pub prev: String,
    /// EXIF orientation of the camera's file (1 to 8).
    pub orientation: u8,
    /// The note, if any.
    pub note: Option<String>,
    /// The transcription, if any.
    pub transcription: Option<HashMap<String, u64>>,
    /// The coarse location, if the observer opted in.
    pub location: Option<CoarseLocation>,
}

impl From<SignedManifest> for SignedEvidence {
    fn from(s: SignedManifest) -> Self {
        let m = s.manifest;
        Self {
            manifest_json: String::from_utf8_lossy(&s.canonical).into_owned(),
            signature: hex::encode(s.signature),
            device_key: m.device_key.to_hex(),
            prev: m.prev.to_hex(),
            orientation: m.photo.orientation,
            note: m.note,
            transcription: m.transcription.map(|t| t.into_iter().collect()),
            location: m.location.map(Into::into),
        }
    }
}

/// A capture with its evidence.
#[derive(Clone, Debug, uniffi::Record)]
pub struct CaptureDetail {
    /// The list row.
    pub summary: CaptureSummary,
    /// The signed evidence; `None` once deleted.
    pub evidence: Option<SignedEvidence>,
}

impl From<CoreDetail> for CaptureDetail {
    fn from(d: CoreDetail) -> Self {
        Self { summary: d.record.into(), evidence: d.signed.map(Into::into) }
    }
}

/// A server's receipt for a capture: its signed statement that it stored it.
#[derive(Clone, Debug, uniffi::Record)]
pub struct ReceiptInfo {
    /// The capture id.
    pub capture_id: String,
    /// SHA-256 of the photo the server stored.
    pub photo_sha256: String,
    /// The device key named in the receipt.
    pub device_key: String,
    /// The server's receipt key (the one pinned at enrollment).
    pub server_key: String,
    /// When the server stored it (server clock).
    pub received_at_ms: u64,
    /// When the device stored the receipt (device clock).
    pub stored_at_ms: u64,
    /// The server's signature, 128 hex digits.
    pub signature: String,
    /// The receipt as JSON (`docs/receipts.md`), to share or archive.
    pub json: String,
}

impl From<(SignedReceipt, u64)> for ReceiptInfo {
    fn from((s, stored_at_ms): (SignedReceipt, u64)) -> Self {
        let json = serde_json::to_string(&s).unwrap_or_default();
        let r = s.receipt;
        Self {
            capture_id: r.capture_id.to_hex(),
            photo_sha256: r.photo_sha256.to_hex(),
            device_key: r.device_key.to_hex(),
            server_key: r.server_key.to_hex(),
            received_at_ms: r.received_at_ms,
            stored_at_ms,
            signature: s.signature,
            json,
        }
    }
}

/// A name in the three languages of the UI.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Names {
    /// Kazakh.
    pub kk: String,
    /// Russian.
    pub ru: String,
    /// English.
    pub en: String,
}

impl From<election::Names> for Names {
    fn from(n: election::Names) -> Self {
        Self { kk: n.kk, ru: n.ru, en: n.en }
    }
}

/// A polling station.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Precinct {
    /// Id used in captures.
    pub id: String,
    /// The station's official number.
    pub number: u32,
    /// Region.
    pub region: String,
    /// District.
    pub district: String,
    /// Street address.
    pub address: String,
}

impl From<election::Precinct> for Precinct {
    fn from(p: election::Precinct) -> Self {
        Self {
            id: p.id,
            number: p.number,
            region: p.region,
            district: p.district,
            address: p.address,
        }
    }
}

/// What a protocol line counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ProtocolLineKind {
    /// A count of voters or ballots.
    Count,
    /// Votes for a candidate.
    Candidate,
    /// Votes "against all".
    AgainstAll,
}

/// One numbered line of the protocol: a field of the transcription form.
#[derive(Clone, Debug, uniffi::Record)]
pub struct ProtocolLine {
    /// Line id as printed ("1", "7.1", …): the key in a transcription.
    pub id: String,
    /// What it counts.
    pub kind: ProtocolLineKind,
    /// Its title (or the candidate's name).
    pub names: Names,
}

impl From<Line> for ProtocolLine {
    fn from(l: Line) -> Self {
        let kind = match l.kind {
            LineKind::Count => ProtocolLineKind::Count,
            LineKind::Candidate => ProtocolLineKind::Candidate,
            LineKind::AgainstAll => ProtocolLineKind::AgainstAll,
        };
        Self { id: l.id, kind, names: l.names.into() }
    }
}

/// How bad a broken control relation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Severity {
    /// Arithmetically impossible: the observer should look again before leaving the station.
    Hard,
    /// Suspicious but possible.
    Soft,
}

impl From<election::Severity> for Severity {
    fn from(s: election::Severity) -> Self {
        match s {
            election::Severity::Hard => Self::Hard,
            election::Severity::Soft => Self::Soft,
        }
    }
}

/// An election as the server handed it at enrollment, for offline use.
#[derive(Clone, Debug, uniffi::Record)]
pub struct ElectionInfo {
    /// Election id used in captures.
    pub id: String,
    /// Its name.
    pub names: Names,
    /// When counting ends, if known.
    pub count_time_ms: Option<u64>,
    /// The polling stations.
    pub precincts: Vec<Precinct>,
    /// The protocol's lines, in protocol order.
    pub lines: Vec<ProtocolLine>,
    /// The election is marked high-risk for observers.
    pub high_risk: bool,
    /// Photos are removed from the phone once their receipt is verified (the coordinators'
    /// setting; tell the observer before the first capture).
    pub removes_photos_after_receipt: bool,
}

impl From<Election> for ElectionInfo {
    fn from(e: Election) -> Self {
        Self {
            high_risk: e.high_risk,
            removes_photos_after_receipt: e.removes_photos_after_receipt(),
            id: e.id,
            names: e.names.into(),
            count_time_ms: e.count_time_ms,
            precincts: e.precincts.into_iter().map(Into::into).collect(),
            lines: e.protocol.lines.into_iter().map(Into::into).collect(),
        }
    }
}

/// What enrollment established.
#[derive(Clone, Debug, uniffi::Record)]
pub struct EnrollmentInfo {
    /// The server's base URL.
    pub server_url: String,
    /// The server's id for this device.
    pub device_id: String,
    /// The pinned receipt key.
    pub receipt_key: String,
    /// Precincts assigned to this device.
    pub precincts: Vec<String>,
    /// The election.
    pub election: ElectionInfo,
}

impl From<Enrollment> for EnrollmentInfo {
    fn from(e: Enrollment) -> Self {
        Self {
            server_url: e.server_url,
            device_id: e.device_id.to_hex(),
            receipt_key: e.receipt_key.to_hex(),
            precincts: e.precincts,
            election: e.election.into(),
        }
    }
}

/// A broken control relation of the protocol, as the server's review will also see it.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Violation {
    /// The relation's id.
    pub relation: String,
    /// Hard or soft.
    pub severity: Severity,
    /// Sum of the left side.
    pub left: u64,
    /// Sum of the right side.
    pub right: u64,
    /// The relation's lines on the left.
    pub left_lines: Vec<String>,
    /// The relation's lines on the right.
    pub right_lines: Vec<String>,
    /// What the relation means, for people ("Received = issued + cancelled").
    pub names: Names,
}

impl Violation {
    /// The core's violation with its relation's names and lines, for the app to show.
    pub(crate) fn new(v: election::Violation, relations: &[Relation]) -> Self {
        let relation = relations.iter().find(|r| r.id == v.relation);
        let no_names =
            || Names { kk: v.relation.clone(), ru: v.relation.clone(), en: v.relation.clone() };
        Self {
            left_lines: relation.map(|r| r.left.clone()).unwrap_or_default(),
            right_lines: relation.map(|r| r.right.clone()).unwrap_or_default(),
            names: relation.map_or_else(no_names, |r| r.names.clone().into()),
            severity: v.severity.into(),
            left: v.left,
            right: v.right,
            relation: v.relation,
        }
    }
}

/// Captures per state.
#[derive(Clone, Debug, uniffi::Record)]
pub struct StateCounts {
    /// Stored, not sent.
    pub captured: u64,
    /// Queued.
    pub queued: u64,
    /// Upload started.
    pub uploading: u64,
    /// Receipted (witnessed ones included).
    pub receipted: u64,
    /// Of the receipted, those witnessed (a quorum of the election's witnesses cosigned a
    /// checkpoint covering them).
    pub witnessed: u64,
    /// Rejected.
    pub rejected: u64,
    /// Deleted.
    pub deleted: u64,
}

impl From<sync::StateCounts> for StateCounts {
    fn from(c: sync::StateCounts) -> Self {
        Self {
            captured: c.captured,
            queued: c.queued,
            uploading: c.uploading,
            receipted: c.receipted,
            witnessed: c.witnessed,
            rejected: c.rejected,
            deleted: c.deleted,
        }
    }
}

/// The store's sync status, for the app's status screen and its scheduler.
#[derive(Clone, Debug, uniffi::Record)]
pub struct SyncStatus {
    /// Captures per state.
    pub counts: StateCounts,
    /// The enrolled server, if any.
    pub server_url: Option<String>,
    /// The server's id for this device, once enrolled.
    pub device_id: Option<String>,
    /// When the last sync ended.
    pub last_sync_at_ms: Option<u64>,
    /// Why the last sync failed, if it did.
    pub last_sync_error: Option<String>,
    /// When the last failure suggested trying again (schedule the next background sync then).
    pub next_attempt_at_ms: Option<u64>,
    /// Whether a sync of this store runs now, in any process.
    pub running: bool,
    /// The server's public log key pinned at enrollment, if the server has a log.
    pub log_key: Option<String>,
    /// Entries in the newest log checkpoint this device verified.
    pub log_size: Option<u64>,
    /// ALARM: the server's public log forked or shrank (what was seen). While it is set every
    /// sync stops with `RejectedByServer` (`log_forked` / `log_shrank`): show it loudly.
    pub log_alarm: Option<String>,
    /// Whether the election package names witnesses (a policy asking for cosignatures).
    pub witness_policy: bool,
    /// Entries in the newest checkpoint verified with a quorum of cosignatures: receipted
    /// captures below it are witnessed.
    pub witnessed_size: Option<u64>,
    /// The witnesses that cosigned that checkpoint, each with when (seconds since the epoch,
    /// the witness's clock), as `name@time`.
    pub witnessed_by: Vec<String>,
    /// Why the server's last cosigned checkpoint was refused as witnessed (show it loudly).
    pub witness_problem: Option<String>,
}

impl From<sync::SyncStatus> for SyncStatus {
    fn from(s: sync::SyncStatus) -> Self {
        Self {
            counts: s.counts.into(),
            server_url: s.server_url,
            device_id: s.device_id.map(|d| d.to_hex()),
            last_sync_at_ms: s.last_sync_at_ms,
            last_sync_error: s.last_sync_error,
            next_attempt_at_ms: s.next_attempt_at_ms,
            running: s.running,
            log_key: s.log_key,
            log_size: s.log_checkpoint.map(|c| c.size),
            log_alarm: s.log_alarm.as_ref().map(|a| SyncError::from(a).to_string()),
            witness_policy: s.witness_policy,
            witnessed_size: s.witnessed_checkpoint.as_ref().map(|c| c.size),
            witnessed_by: s
                .witnessed_checkpoint
                .map(|c| c.cosignatures.iter().map(|(w, t)| format!("{w}@{t}")).collect())
                .unwrap_or_default(),
            witness_problem: s.witness_problem,
        }
    }
}

/// What a sync did.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct SyncSummary {
    /// Captures receipted by this run.
    pub receipted: u64,
    /// Captures rejected by this run.
    pub rejected: u64,
    /// Captures still to send.
    pub remaining: u64,
    /// Photo bytes the server received during this run.
    pub bytes_sent: u64,
    /// Whether it stopped because it was cancelled.
    pub cancelled: bool,
    /// Entries in the newest log checkpoint verified, once the server has a log.
    pub log_size: Option<u64>,
    /// Review decisions this sync learned (new or changed); those that reject a photo ask for
    /// a retake (`CaptureSummary.needs_action`).
    pub reviewed: u64,
    /// Entries in the newest checkpoint verified with a quorum of the election's witnesses.
    pub witnessed_size: Option<u64>,
    /// Why the server's cosigned checkpoint was refused as witnessed in this run.
    pub witness_problem: Option<String>,
}

impl From<sync::SyncSummary> for SyncSummary {
    fn from(s: sync::SyncSummary) -> Self {
        Self {
            reviewed: s.reviewed.len() as u64,
            receipted: s.receipted,
            rejected: s.rejected,
            remaining: s.remaining,
            bytes_sent: s.bytes_sent,
            cancelled: s.cancelled,
            log_size: s.log_size,
            witnessed_size: s.witnessed_size,
            witness_problem: s.witness_problem,
        }
    }
}

/// One progress report of a sync.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum SyncProgress {
    /// The sync starts with this many captures (and photo bytes) to send.
    Started {
        /// Captures to send.
        pending: u64,
        /// Their photo bytes.
        bytes: u64,
    },
    /// A capture moved: `Uploading` with bytes, then `Receipted` or `Rejected`.
    Capture {
        /// The capture id.
        id: String,
        /// Its sequence number.
        seq: u64,
        /// Bytes the server holds.
        sent: u64,
        /// Photo length.
        total: u64,
        /// Its state now.
        state: CaptureState,
    },
    /// A request failed transiently; the sync waits, then tries again.
    Retrying {
        /// The capture id.
        id: String,
        /// Its sequence number.
        seq: u64,
        /// Failed attempts in a row so far.
        attempt: u32,
        /// The wait, in ms.
        delay_ms: u64,
        /// What failed.
        reason: String,
    },
    /// The sync ended (successfully or cancelled).
    Finished {
        /// What it did.
        summary: SyncSummary,
    },
}

impl From<sync::SyncProgress> for SyncProgress {
    fn from(p: sync::SyncProgress) -> Self {
        match p {
            sync::SyncProgress::Started { pending, bytes } => Self::Started { pending, bytes },
            sync::SyncProgress::Capture(c) => Self::Capture {
                id: c.id.to_hex(),
                seq: c.seq,
                sent: c.sent,
                total: c.total,
                state: c.state.into(),
            },
            sync::SyncProgress::Retrying { id, seq, attempt, delay_ms, reason } => {
                Self::Retrying { id: id.to_hex(), seq, attempt, delay_ms, reason }
            }
            sync::SyncProgress::Finished(summary) => Self::Finished { summary: summary.into() },
        }
    }
}

/// A bundle that verified.
#[derive(Clone, Debug, uniffi::Record)]
pub struct VerifiedBundle {
    /// The capture id.
    pub id: String,
    /// The signed evidence.
    pub evidence: SignedEvidence,
}

impl From<SignedManifest> for VerifiedBundle {
    fn from(s: SignedManifest) -> Self {
        Self { id: s.hash().to_hex(), evidence: s.into() }
    }
}

/// What a panic wipe did.
#[derive(Clone, Debug, uniffi::Record)]
pub struct WipeInfo {
    /// Milliseconds until the store was unreadable (its key material destroyed).
    pub erased_ms: u64,
    /// Milliseconds until every file was removed.
    pub removed_ms: u64,
}

impl From<hattama_core::store::Wiped> for WipeInfo {
    fn from(w: hattama_core::store::Wiped) -> Self {
        Self {
            erased_ms: w.erased_after.as_millis() as u64,
            removed_ms: w.removed_after.as_millis() as u64,
        }
    }
}
