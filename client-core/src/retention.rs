//! Photos gone after the receipt: on a phone that can be seized, a photo the server has
//! durably stored and logged need not stay.
//!
//! The election package says whether phones remove a photo once its receipt is verified
//! ([`Election::removes_photos_after_receipt`]: the coordinators' `photos_after_receipt`, on by
//! default for `high_risk` elections). The manifest, signature, receipt and log proof stay, so
//! the observer can still prove what was sent and export the capture (its bundle verifies
//! against the server's copy of the photo).
//!
//! Crash safety: the store records the removal first (one committed transaction), then the
//! photo file and thumbnail are removed. A kill between the two leaves files that no capture
//! references, which the next open removes (store recovery); sync and export read only what
//! the store records, so neither sees a half-removed photo.

use crate::election::Election;
use crate::evidence::Sha256Hash;
use crate::hooks;
use crate::store::{CaptureRecord, CaptureState, Store, StoreError};

/// Whether `capture`'s photo may leave the device now under `election`'s package: the
/// election removes photos after the receipt, and the capture (of that election) is receipted
/// with its photo still here, and also `witnessed` when the election package carries a witness
/// policy (`witnesses`). The one place this decision is made.
pub fn photo_may_be_removed(capture: &CaptureRecord, election: &Election, witnesses: bool) -> bool {
    election.removes_photos_after_receipt()
        && capture.election == election.id
        && capture.state == CaptureState::Receipted
        && (!witnesses || capture.is_witnessed())
        && capture.photo.is_some()
        && capture.photo_removed_at_ms.is_none()
}

/// Removes `capture`'s photo and thumbnail from the device if [`photo_may_be_removed`] says so:
/// the store records it first, then the files go. Returns whether it was removed now.
pub fn remove_if_allowed(
    store: &Store,
    capture: &CaptureRecord,
    election: &Election,
    witnesses: bool,
    now_ms: u64,
) -> Result<bool, StoreError> {
    if !photo_may_be_removed(capture, election, witnesses) {
        return Ok(false);
    }
    let (recorded, unused) = store.write(|tx| Store::remove_photo(tx, &capture.id, now_ms))?;
    if !recorded {
        return Ok(false);
    }
    hooks::pause("retention:after-commit");
    if let Some(hash) = unused {
        store.blobs().remove(&hash)?;
    }
    store.blobs().remove_thumb(&capture.id)?;
    tracing::info!(seq = capture.seq, "photo removed from the device after its receipt");
    Ok(true)
}

/// Removes the photo of one capture, by id, if allowed (the sync calls it after each verified
/// receipt).
pub fn remove_one(
    store: &Store,
    id: &Sha256Hash,
    election: &Election,
    witnesses: bool,
    now_ms: u64,
) -> Result<bool, StoreError> {
    if !election.removes_photos_after_receipt() {
        return Ok(false);
    }
    match store.find(&id.to_hex())?.first() {
        Some(capture) => remove_if_allowed(store, capture, election, witnesses, now_ms),
        None => Ok(false),
    }
}

/// Removes every photo that may leave the device (after a sync, or a crash between a
/// receipt's commit and its photo's removal). Returns how many were removed.
pub fn sweep(
    store: &Store,
    election: &Election,
    witnesses: bool,
    now_ms: u64,
) -> Result<usize, StoreError> {
    if !election.removes_photos_after_receipt() {
        return Ok(0);
    }
    let mut removed = 0;
    for capture in store.list()? {
        removed += usize::from(remove_if_allowed(store, &capture, election, witnesses, now_ms)?);
    }
    Ok(removed)
}
