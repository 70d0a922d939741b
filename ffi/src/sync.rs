//! Progress and cancellation of a sync, as the apps see them.
//!
//! The app implements [`SyncListener`] (a foreign trait); the core calls it on the syncing
//! thread. Whatever the app's implementation does, the sync goes on: an exception the listener
//! throws comes back as an `Err` (UniFFI converts any foreign exception into [`HattamaError`]
//! because the method returns a `Result`; an infallible method would panic instead) and is
//! ignored. The foreign object stays alive (UniFFI holds a handle to it) until the sync returns,
//! even if the app dropped its own reference, so a late callback never reaches freed memory.
//!
//! [`CancelHandle`] cancels on request and when it is destroyed: the sync keeps only the token,
//! never the handle, so destroying the handle (Kotlin `close()`) stops the sync at its next
//! check. (Python and Swift hold their arguments for the duration of a call, so there only
//! `cancel()` stops a running sync.)

use std::sync::Arc;

use hattama_core::sync::{self as core_sync, CancelOnDrop, CancelToken};

use crate::error::HattamaError;
use crate::types::SyncProgress;

/// Receives a sync's progress; implemented by the app (called on the syncing thread: post to
/// the UI thread yourself).
#[uniffi::export(foreign)]
pub trait SyncListener: Send + Sync {
    /// One progress report. Return quickly. Anything it throws is ignored and the sync goes on.
    fn on_progress(&self, progress: SyncProgress) -> Result<(), HattamaError>;
}

/// Hands the core's progress to the app's listener, shielding the sync from the listener.
pub(crate) struct Listener(pub(crate) Option<Arc<dyn SyncListener>>);

impl core_sync::SyncListener for Listener {
    fn on_progress(&self, progress: core_sync::SyncProgress) {
        let Some(listener) = &self.0 else { return };
        if let Err(e) = listener.on_progress(progress.into()) {
            tracing::warn!("the app's sync listener failed ({e}); the sync goes on");
        }
    }
}

/// Cancels a running sync: call [`CancelHandle::cancel`] from any thread, or drop the handle.
#[derive(Debug, uniffi::Object)]
pub struct CancelHandle(CancelOnDrop);

#[uniffi::export]
impl CancelHandle {
    /// A handle that has not been cancelled.
    #[uniffi::constructor]
    pub fn new() -> Arc<Self> {
        Arc::new(Self(CancelToken::new().cancel_on_drop()))
    }

    /// Asks the sync to stop at its next check (between requests and during waits); the sync
    /// then returns normally with `cancelled` set.
    pub fn cancel(&self) {
        self.0.token().cancel();
    }

    /// Whether the handle was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.token().is_cancelled()
    }
}

impl CancelHandle {
    /// The token a sync watches (not the handle, so that dropping the handle cancels).
    pub(crate) fn token(&self) -> CancelToken {
        self.0.token().clone()
    }
}
