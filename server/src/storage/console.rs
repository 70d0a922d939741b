//! What the coordinators' console stores beyond the evidence: invites in numbered batches (so
//! that a batch's cards can be printed again), their cancellation, the devices' summaries
//! (precincts, last sync, captures per review state, sequence gaps, refused uploads) and the
//! election-night dashboard's aggregates. Every change is written together with its audit
//! event, in one transaction (imports from the browser too). The rules (who may do what, how
//! precincts are chosen) live in [`crate::console`].

use std::collections::BTreeMap;

use hattama_core::election::Election;

use super::review::{NewAudit, ReviewStorage};
use super::{Device, GalleryStorage, Storage, StorageError};
use crate::official::Figures;

/// New codes, each with the precincts it is for.
pub type NewInvites = Vec<(String, Vec<String>)>;

/// Makes the audit event of a new batch from its number and codes.
pub type BatchAudit<'a> = &'a dyn Fn(u64, &NewInvites) -> NewAudit;

/// One enrollment code, as the console lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteRecord {
    /// The code (`XXXX-XXXX-XXXX-XXXX-XXXX`).
    pub code: String,
    /// Its election.
    pub election: String,
    /// The precincts a device enrolled with it may upload for.
    pub precincts: Vec<String>,
    /// The batch it was created in (`None` for codes older than batches).
    pub batch: Option<u64>,
    /// When it was created.
    pub created_at_ms: u64,
    /// The device that used it (its id), if one did.
    pub used_by: Option<String>,
    /// That device's key fingerprint, as the app shows it.
    pub used_by_fingerprint: Option<String>,
    /// When it was used.
    pub used_at_ms: Option<u64>,
    /// When it was cancelled, if it was (a cancelled code enrolls nothing).
    pub cancelled_at_ms: Option<u64>,
}

/// A device with what the console shows of its activity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSummary {
    /// The device.
    pub device: Device,
    /// When its newest capture was received (its last successful sync).
    pub last_sync_ms: Option<u64>,
    /// Stored captures.
    pub captures: u64,
    /// Captures per review state (`new`, `accepted`, `rejected`, `flagged`), of those indexed.
    pub states: BTreeMap<String, u64>,
    /// Sequence numbers below its highest that the server never received.
    pub missing_seqs: u64,
    /// Captures flagged with a broken hash chain (a reused or unlinked sequence number).
    pub chain_gaps: u64,
    /// Its upload requests the server refused (all codes).
    pub refusals: u64,
}

/// A device's refused upload requests of one error code (what `/metrics` counts, per device;
/// no address or other personal data is kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusalRecord {
    /// The error code answered (`device_revoked`, `photo_mismatch`, …).
    pub code: String,
    /// How many times.
    pub count: u64,
    /// The first time.
    pub first_at_ms: u64,
    /// The latest time.
    pub last_at_ms: u64,
}

/// One region of an election as the election-night dashboard counts it (from the review index:
/// call `refresh_index` first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionTally {
    /// The region.
    pub region: String,
    /// Its stations.
    pub precincts: u64,
    /// Stations with at least one photo.
    pub photographed: u64,
    /// Stations with a photo accepted by a coordinator.
    pub accepted: u64,
}

/// A station still without a photo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingStation {
    /// Its region.
    pub region: String,
    /// Its number.
    pub number: u32,
    /// Its address.
    pub address: String,
}

/// A station with an accepted photo, and since when: the earliest acceptance among its
/// captures that are accepted now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedStation {
    /// Its region.
    pub region: String,
    /// When its photo was first accepted.
    pub at_ms: u64,
}

/// The console's storage; it reads and writes the evidence, the gallery's and the review's
/// storage as well (one database).
pub trait ConsoleStorage: Storage + GalleryStorage + ReviewStorage {
    /// Creates `per_group` codes for each group of precincts of `election` (a group: the
    /// precincts one code is for), as one new batch, with the audit event `audit` makes of the
    /// batch's number and codes (if any) in the same transaction. Returns the batch number and
    /// the codes with their precincts. An unknown election or precinct is
    /// [`StorageError::NotFound`], and nothing is created.
    fn create_invite_batch(
        &self,
        election: &str,
        groups: &[Vec<String>],
        per_group: usize,
        now_ms: u64,
        audit: Option<BatchAudit<'_>>,
    ) -> Result<(u64, NewInvites), StorageError>;
    /// The invites, newest first; of one batch when given.
    fn invites(&self, batch: Option<u64>) -> Result<Vec<InviteRecord>, StorageError>;
    /// Cancels an unused invite, with its audit event; `false` if there is no unused,
    /// uncancelled invite of that code.
    fn cancel_invite(
        &self,
        code: &str,
        now_ms: u64,
        audit: &NewAudit,
    ) -> Result<bool, StorageError>;
    /// Per region of an election, in the regions' byte order: its stations, those with a
    /// photo and those with an accepted photo, counted in the database (call `refresh_index`
    /// first).
    fn region_tallies(&self, election: &str) -> Result<Vec<RegionTally>, StorageError>;
    /// The stations of an election without a photo, by region and number, at most
    /// `per_region` of each region.
    fn stations_without_photo(
        &self,
        election: &str,
        per_region: u64,
    ) -> Result<Vec<MissingStation>, StorageError>;
    /// Every station of an election with an accepted photo, and since when.
    fn accepted_stations(&self, election: &str) -> Result<Vec<AcceptedStation>, StorageError>;
    /// Captures of an election waiting for a first decision.
    fn queue_depth(&self, election: &str) -> Result<u64, StorageError>;
    /// Captures of an election received per hour (hours since the epoch), the newest `hours`.
    fn captures_per_hour(
        &self,
        election: &str,
        hours: u64,
    ) -> Result<Vec<(u64, u64)>, StorageError>;
    /// Every device with its activity, in the order they enrolled.
    fn device_summaries(&self) -> Result<Vec<DeviceSummary>, StorageError>;
    /// One device with its activity.
    fn device_summary(&self, id: &str) -> Result<Option<DeviceSummary>, StorageError>;
    /// The sequence numbers below a device's highest that the server never received, as
    /// ranges `(first, last)` in order, at most `limit` of them.
    fn sequence_gaps(&self, id: &str, limit: u64) -> Result<Vec<(u64, u64)>, StorageError>;
    /// Counts an upload request of an enrolled device refused with `code` (a device that is
    /// not enrolled is not recorded: anyone can make a key).
    fn record_refusal(&self, device: &str, code: &str, at_ms: u64) -> Result<(), StorageError>;
    /// A device's refused upload requests per code, the latest first.
    fn device_refusals(&self, id: &str) -> Result<Vec<RefusalRecord>, StorageError>;
    /// Stores an election definition (as `Storage::import_election`) and the audit event
    /// `audit(new)` (`new`: the election was not there before) in one transaction: if either
    /// fails, neither is stored. Returns `new`.
    fn import_election_audited(
        &self,
        election: &Election,
        now_ms: u64,
        audit: &dyn Fn(bool) -> NewAudit,
    ) -> Result<bool, StorageError>;
    /// Stores official results (as `GalleryStorage::import_official`) and the audit event
    /// `audit(version)` (`None`: the figures equal the newest version, nothing new is stored)
    /// in one transaction. Returns the version.
    fn import_official_audited(
        &self,
        election: &str,
        figures: &Figures,
        source: (&str, &str),
        now_ms: u64,
        audit: &dyn Fn(Option<u64>) -> NewAudit,
    ) -> Result<Option<u64>, StorageError>;
    /// Revokes a device, with its audit event; `false` if there is no such device or it was
    /// revoked already.
    fn revoke_device_audited(
        &self,
        id: &str,
        now_ms: u64,
        audit: &NewAudit,
    ) -> Result<bool, StorageError>;
}
