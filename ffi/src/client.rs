//! The [`Client`] object: one handle over one offline store, shared by every thread of the app.
//!
//! Each method converts its arguments, makes one call into `hattama_core::Client` and converts
//! the answer. All of them block: call them off the UI thread (a WorkManager worker, a
//! BGTaskScheduler task, a background queue). The core serializes what must be serialized
//! (captures through SQLite's write lock, one sync per store through `sync.lock`), so the
//! handle can be used from many threads at once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use hattama_core::sync::SyncError;

use crate::error::HattamaError;
use crate::sync::{CancelHandle, Listener, SyncListener};
use crate::types::{
    CaptureDetail, CaptureRequest, CaptureSummary, Captured, ClientSettings, DeviceIdentity,
    EnrollmentInfo, ReceiptInfo, SyncStatus, SyncSummary, VerifiedBundle, Violation, WipeInfo,
};

/// One observer device's handle over its offline store.
#[derive(uniffi::Object)]
pub struct Client {
    inner: hattama_core::Client,
}

#[uniffi::export]
impl Client {
    /// Opens (or creates) the store in directory `dir` (the app's private files directory)
    /// with the store key `key` (32 bytes the app keeps in Android Keystore or the iOS
    /// Keychain, `docs/mobile.md`; never written to disk), recovering it after any crash, and
    /// creates the device identity on first use. `Locked` (`store_locked`) if `key` is not the
    /// store's key: nothing was read or changed. A plain store of an earlier version is
    /// encrypted in place.
    #[uniffi::constructor(default(settings = None))]
    pub fn open(
        dir: String,
        key: Vec<u8>,
        settings: Option<ClientSettings>,
    ) -> Result<Arc<Self>, HattamaError> {
        let key = store_key(key)?;
        let config = settings.unwrap_or_default().into();
        Ok(Arc::new(Self { inner: hattama_core::Client::open(Path::new(&dir), &key, config)? }))
    }

    /// From now on the store opens with `new_key` instead of the key it was opened with. One
    /// rename: after a crash one of the two keys opens the store.
    pub fn rekey(&self, new_key: Vec<u8>) -> Result<(), HattamaError> {
        Ok(self.inner.rekey(&store_key(new_key)?)?)
    }

    /// The panic wipe of this store (see `wipe_store`). Drop this handle afterwards: every
    /// later call fails or sees nothing.
    pub fn wipe(&self) -> Result<WipeInfo, HattamaError> {
        wipe_store(self.inner.store().dir().to_string_lossy().into_owned())
    }

    /// This device's public identity.
    pub fn device(&self) -> DeviceIdentity {
        self.inner.device_key().into()
    }

    /// Enrolls with the server at `server_url` using a coordinator's one-time `code`, and pins
    /// the server's receipt key. Enrolling again with another code adds its precincts.
    pub fn enroll(&self, server_url: String, code: String) -> Result<EnrollmentInfo, HattamaError> {
        Ok(self.inner.enroll(&server_url, &code)?.into())
    }

    /// Enrolls with an invite exactly as the coordinator handed it out (a QR code or a link:
    /// `hattama://enroll?server=…&code=…`). `FixInput` (`bad_invite`) if it is not one.
    pub fn enroll_invite(&self, invite: String) -> Result<EnrollmentInfo, HattamaError> {
        Ok(self.inner.enroll_invite(&invite)?.into())
    }

    /// The stored enrollment (server, precincts, election for offline use), if enrolled.
    pub fn enrollment(&self) -> Result<Option<EnrollmentInfo>, HattamaError> {
        Ok(self.inner.enrollment()?.map(Into::into))
    }

    /// Captures a photo from the camera's bytes (JPEG or PNG): checks the request against the
    /// enrolled election (see `check_capture`), strips the photo's metadata, signs it and stores
    /// it durably. When this returns, the capture survives a crash or power loss; a refusal
    /// stores nothing and uses no sequence number.
    pub fn capture(
        &self,
        photo: Vec<u8>,
        request: CaptureRequest,
    ) -> Result<Captured, HattamaError> {
        Ok(self.inner.capture(&photo, &request.into())?.into())
    }

    /// Checks a capture request against the enrolled election, as `capture` does before it
    /// signs anything, so the app can check the observer's choices before the photo is taken:
    /// `FixInput` with `wrong_election`, `unknown_precinct`, `precinct_not_assigned` or
    /// `unknown_line` if it does not fit. Returns the precinct's id (the observer may give the
    /// station's number instead).
    pub fn check_capture(&self, request: CaptureRequest) -> Result<String, HattamaError> {
        Ok(self.inner.check_request(&request.into())?.0.precinct)
    }

    /// Like [`Client::capture`] from a file, refusing one above the size limit before reading it.
    pub fn capture_file(
        &self,
        path: String,
        request: CaptureRequest,
    ) -> Result<Captured, HattamaError> {
        Ok(self.inner.capture_file(Path::new(&path), &request.into())?.into())
    }

    /// All captures, newest first; deleted ones appear as tombstones.
    pub fn list(&self) -> Result<Vec<CaptureSummary>, HattamaError> {
        Ok(self.inner.list()?.into_iter().map(Into::into).collect())
    }

    /// A capture (full id or a unique prefix of 6+ hex digits) with its signed evidence.
    pub fn show(&self, id: String) -> Result<CaptureDetail, HattamaError> {
        Ok(self.inner.detail(&id)?.into())
    }

    /// The stored (stripped, signed) photo of a capture.
    pub fn photo(&self, id: String) -> Result<Vec<u8>, HattamaError> {
        Ok(self.inner.photo(&id)?)
    }

    /// A small JPEG of the capture for lists (made on first use, then cached).
    pub fn thumbnail(&self, id: String) -> Result<Vec<u8>, HattamaError> {
        Ok(self.inner.thumbnail(&id)?)
    }

    /// Deletes a capture that was not sent yet; its sequence number stays as a visible gap.
    pub fn delete(&self, id: String) -> Result<CaptureSummary, HattamaError> {
        Ok(self.inner.delete(&id)?.into())
    }

    /// Writes an evidence bundle (photo, manifest, signature) of a capture into `dir` (created
    /// if missing, must be empty), for sharing; anyone can check it (`verify_bundle`).
    pub fn export_bundle(&self, id: String, dir: String) -> Result<(), HattamaError> {
        self.inner.export(&id, Path::new(&dir))?;
        Ok(())
    }

    /// Sends every capture not yet receipted and stores each verified receipt. Blocks until
    /// done, cancelled or failed; progress goes to `listener` on this thread. A second sync of
    /// the same store fails with `RetryLater` (`sync_busy`).
    #[uniffi::method(default(listener = None, cancel = None))]
    pub fn sync(
        &self,
        listener: Option<Arc<dyn SyncListener>>,
        cancel: Option<Arc<CancelHandle>>,
    ) -> Result<SyncSummary, HattamaError> {
        // Only the token is kept: the app dropping its handle cancels (see `CancelHandle`).
        let token = cancel.map(|c| c.token()).unwrap_or_default();
        Ok(self.inner.sync(&Listener(listener), &token)?.into())
    }

    /// Captures per state, the server, how the last sync ended and when to try again.
    pub fn status(&self) -> Result<SyncStatus, HattamaError> {
        Ok(self.inner.status()?.into())
    }

    /// A capture's receipt as stored (verified when it arrived); `None` until it is receipted.
    pub fn receipt(&self, id: String) -> Result<Option<ReceiptInfo>, HattamaError> {
        Ok(self.inner.receipt(&id)?.map(Into::into))
    }

    /// Verifies a capture's stored receipt again, now, under the receipt key pinned at
    /// enrollment. `RejectedByServer` (`receipt_invalid`) if it does not verify, `FixInput`
    /// (`not_found`) if the capture has no receipt.
    pub fn verify_receipt(&self, id: String) -> Result<ReceiptInfo, HattamaError> {
        Ok(self.inner.verify_receipt(&id)?.into())
    }

    /// Checks an observer's transcription (line id to number) against the control relations of
    /// the enrolled election's protocol, with the rule engine the server uses. Returns the
    /// broken relations (none: the arithmetic holds); relations with a missing line are skipped.
    pub fn check_transcription(
        &self,
        values: HashMap<String, u64>,
    ) -> Result<Vec<Violation>, HattamaError> {
        let template = self.inner.enrollment()?.ok_or(SyncError::NotEnrolled)?.election.protocol;
        let broken = template.check(&values.into_iter().collect());
        Ok(broken.into_iter().map(|v| Violation::new(v, &template.relations)).collect())
    }

    /// Bytes the store uses on disk.
    pub fn storage_used(&self) -> Result<u64, HattamaError> {
        Ok(self.inner.storage_used()?)
    }
}

/// The key as the core takes it: exactly 32 bytes, else `FixInput` (`bad_key`).
fn store_key(key: Vec<u8>) -> Result<hattama_core::StoreKey, HattamaError> {
    let key = zeroize::Zeroizing::new(key);
    let bytes: [u8; 32] = key.as_slice().try_into().map_err(|_| HattamaError::FixInput {
        code: "bad_key".into(),
        detail: format!("a store key is 32 bytes, not {}", key.len()),
    })?;
    Ok(hattama_core::StoreKey::from_bytes(bytes))
}

/// The panic wipe: makes the store in `dir` unreadable at once (its key material is destroyed
/// first), then removes it. Needs no key, so it works while the app is locked. A missing store
/// is already wiped.
#[uniffi::export]
pub fn wipe_store(dir: String) -> Result<WipeInfo, HattamaError> {
    Ok(hattama_core::store::wipe(Path::new(&dir))?.into())
}

/// Verifies an evidence bundle directory exactly as `docs/evidence-format.md` says.
#[uniffi::export]
pub fn verify_bundle(dir: String) -> Result<VerifiedBundle, HattamaError> {
    let limits = hattama_core::media::MediaLimits::default();
    Ok(hattama_core::bundle::verify(Path::new(&dir), &limits)?.into())
}
