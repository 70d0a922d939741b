//! What the coordinators' console stores beyond the evidence: invites in numbered batches (so
//! that a batch's cards can be printed again), their cancellation, and the devices' summaries
//! (precincts, last sync, captures per review state, sequence gaps). Every change is written
//! together with its audit event, in one transaction. The rules (who may do what, how
//! precincts are chosen) live in [`crate::console`].

use std::collections::BTreeMap;

use super::review::{NewAudit, ReviewStorage};
use super::{Device, GalleryStorage, Storage, StorageError};

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
}

/// One precinct's captures, as the election-night dashboard counts them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrecinctTally {
    /// Captures received.
    pub captures: u64,
    /// Captures accepted by a coordinator.
    pub accepted: u64,
    /// Captures waiting for a first decision.
    pub new: u64,
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
    /// Per precinct of an election (only those with a capture): its captures, as indexed for
    /// the review (call `refresh_index` first).
    fn precinct_tallies(
        &self,
        election: &str,
    ) -> Result<BTreeMap<String, PrecinctTally>, StorageError>;
    /// Captures of an election received per hour (hours since the epoch), the newest `hours`.
    fn captures_per_hour(
        &self,
        election: &str,
        hours: u64,
    ) -> Result<Vec<(u64, u64)>, StorageError>;
    /// Every device with its activity, in the order they enrolled.
    fn device_summaries(&self) -> Result<Vec<DeviceSummary>, StorageError>;
    /// Revokes a device, with its audit event; `false` if there is no such device or it was
    /// revoked already.
    fn revoke_device_audited(
        &self,
        id: &str,
        now_ms: u64,
        audit: &NewAudit,
    ) -> Result<bool, StorageError>;
}
