//! The one error the apps see, grouped by what the app should do about it.
//!
//! The core's detailed [`hattama_core::Error`] has a variant per cause; an app needs to know only
//! which screen to show. Each group carries a stable code word (for the app's own branching and
//! its translations) and a message for logs and developers. A refusal by the server carries the
//! server's own code word (`docs/sync-protocol.md`).
//!
//! Named `HattamaError`: Kotlin bindings call it `HattamaException`, Swift and Python
//! `HattamaError`; each group is a subclass (`HattamaException.FixInput`) or case
//! (`HattamaError.fixInput`).

use hattama_core::Error as CoreError;
use hattama_core::bundle::BundleError;
use hattama_core::evidence::EvidenceError;
use hattama_core::media::MediaError;
use hattama_core::store::StoreError;
use hattama_core::sync::SyncError;

/// Why a call failed, grouped by what the app should do.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum HattamaError {
    /// The observer (or the app) must change something: the photo, a field, the server URL or
    /// code, the capture chosen, or enroll first. Retrying the same call fails the same way.
    #[error("{code}: {detail}")]
    FixInput {
        /// Stable code word, e.g. `photo_refused`, `photo_heic`, `invalid_field`, `not_found`,
        /// `not_deletable`, `bad_url`, `bad_code`, `not_enrolled`, `bad_invite`; and the
        /// refusals of a capture that does not fit the enrolled election (checked before
        /// anything is signed or stored): `wrong_election`, `unknown_precinct`,
        /// `precinct_not_assigned`, `unknown_line`.
        code: String,
        /// What is wrong, in English, for logs and developers.
        detail: String,
    },
    /// The network or the server is not available now, or another sync is running: schedule
    /// the work again later (WorkManager / BGTaskScheduler back-off). Nothing was lost.
    #[error("{code}: {detail}")]
    RetryLater {
        /// `unreachable`, `sync_busy` or `protocol` (an answer outside the protocol, such as a
        /// captive portal's login page).
        code: String,
        /// What failed.
        detail: String,
    },
    /// The store key is not this store's: nothing was read or changed. Ask the platform's key
    /// store again (the observer unlocks the phone) or, if the key is lost, the store is too.
    #[error("{code}: {detail}")]
    Locked {
        /// `store_locked`.
        code: String,
        /// What failed.
        detail: String,
    },
    /// The device's storage failed (full, unwritable, corrupt, or written by a newer app).
    #[error("{code}: {detail}")]
    Storage {
        /// `file`, `database`, `store_too_new` or `store_corrupt`.
        code: String,
        /// What failed.
        detail: String,
    },
    /// The server refused this device or its enrollment, or sent something the device must not
    /// trust (a receipt that does not verify, a changed receipt key): show it, and let the
    /// observer contact a coordinator.
    #[error("{code}: {detail}")]
    RejectedByServer {
        /// The server's code word (`bad_code`, `code_used`, `device_revoked`, …), or
        /// `receipt_invalid`, `server_key_changed`, `election_invalid`, `log_key_changed`,
        /// `log_invalid`, and the alarms `log_forked` and `log_shrank` (the server's public log
        /// was rewritten: show it loudly).
        code: String,
        /// The server's message, or what did not verify.
        detail: String,
    },
    /// A bug: report it.
    #[error("{code}: {detail}")]
    Internal {
        /// Where it happened.
        code: String,
        /// What happened.
        detail: String,
    },
}

impl HattamaError {
    fn fix(code: &str, e: impl ToString) -> Self {
        Self::FixInput { code: code.into(), detail: e.to_string() }
    }

    fn retry(code: &str, e: impl ToString) -> Self {
        Self::RetryLater { code: code.into(), detail: e.to_string() }
    }

    fn storage(code: &str, e: impl ToString) -> Self {
        Self::Storage { code: code.into(), detail: e.to_string() }
    }

    fn rejected(code: &str, e: impl ToString) -> Self {
        Self::RejectedByServer { code: code.into(), detail: e.to_string() }
    }

    pub(crate) fn internal(code: &str, e: impl ToString) -> Self {
        Self::Internal { code: code.into(), detail: e.to_string() }
    }
}

impl From<StoreError> for HattamaError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Sql(_) => Self::storage("database", e),
            StoreError::Io(_) => Self::storage("file", e),
            StoreError::TooNew { .. } => Self::storage("store_too_new", e),
            StoreError::Corrupt(_) => Self::storage("store_corrupt", e),
            StoreError::Poisoned => Self::internal("poisoned", e),
            StoreError::Locked => {
                Self::Locked { code: "store_locked".into(), detail: e.to_string() }
            }
        }
    }
}

impl From<SyncError> for HattamaError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::NotEnrolled => Self::fix("not_enrolled", e),
            SyncError::BadUrl(_) => Self::fix("bad_url", e),
            SyncError::BadCa(_) => Self::fix("bad_ca", e),
            SyncError::BadCode => Self::fix("bad_code", e),
            SyncError::BadInvite(_) => Self::fix("bad_invite", e),
            SyncError::SyncBusy => Self::retry("sync_busy", e),
            SyncError::Unreachable { .. } => Self::retry("unreachable", e),
            SyncError::Protocol(_) => Self::retry("protocol", e),
            SyncError::Refused { code, message, .. } => Self::rejected(&code, message),
            SyncError::ReceiptInvalid { .. } => Self::rejected("receipt_invalid", e),
            SyncError::ServerKeyChanged => Self::rejected("server_key_changed", e),
            SyncError::Election(_) => Self::rejected("election_invalid", e),
            SyncError::LogKeyChanged => Self::rejected("log_key_changed", e),
            SyncError::LogInvalid(_) => Self::rejected("log_invalid", e),
            // Alarms: the server's public log misbehaved; the app shows it loudly.
            SyncError::LogForked { .. } => Self::rejected("log_forked", e),
            SyncError::LogShrank { .. } => Self::rejected("log_shrank", e),
            SyncError::Http(_) => Self::internal("http_setup", e),
        }
    }
}

impl From<CoreError> for HattamaError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Media(MediaError::Heic) => Self::fix("photo_heic", e),
            CoreError::Media(MediaError::TooLarge { .. }) => Self::fix("photo_too_large", e),
            CoreError::Media(_) => Self::fix("photo_refused", e),
            CoreError::Evidence(EvidenceError::InvalidField { .. }) => {
                Self::fix("invalid_field", e)
            }
            // Any other evidence error comes from reading back what the store holds.
            CoreError::Evidence(_) => Self::storage("store_corrupt", e),
            CoreError::Store(s) => s.into(),
            CoreError::Bundle(BundleError::Io { .. }) => Self::storage("file", e),
            CoreError::Bundle(BundleError::NotEmpty(_)) => Self::fix("directory_not_empty", e),
            CoreError::Bundle(_) => Self::fix("bundle_invalid", e),
            CoreError::Input { .. } => Self::fix("unreadable_input", e),
            CoreError::NotFound(_) => Self::fix("not_found", e),
            CoreError::Ambiguous(_) => Self::fix("ambiguous_id", e),
            CoreError::NotDeletable { .. } => Self::fix("not_deletable", e),
            CoreError::Thumbnail(_) => Self::internal("thumbnail", e),
            CoreError::PhotoOnServer(_) => Self::fix("photo_on_server", e),
            CoreError::Sync(s) => s.into(),
            CoreError::Refused(r) => Self::fix(r.code(), r),
        }
    }
}

/// What an exception thrown by the app's [`crate::SyncListener`] becomes.
impl From<uniffi::UnexpectedUniFFICallbackError> for HattamaError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::internal("listener", e.reason)
    }
}

impl From<hattama_core::CaptureRefusal> for HattamaError {
    fn from(e: hattama_core::CaptureRefusal) -> Self {
        CoreError::Refused(e).into()
    }
}

impl From<BundleError> for HattamaError {
    fn from(e: BundleError) -> Self {
        CoreError::Bundle(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(e: HattamaError) -> (&'static str, String) {
        match e {
            HattamaError::FixInput { code, .. } => ("fix", code),
            HattamaError::RetryLater { code, .. } => ("retry", code),
            HattamaError::Storage { code, .. } => ("storage", code),
            HattamaError::RejectedByServer { code, .. } => ("rejected", code),
            HattamaError::Internal { code, .. } => ("internal", code),
            HattamaError::Locked { code, .. } => ("locked", code),
        }
    }

    fn check(e: impl Into<HattamaError>, expected: (&str, &str)) {
        let (g, code) = group(e.into());
        assert_eq!((g, code.as_str()), expected);
    }

    #[test]
    fn every_core_error_lands_in_the_group_of_what_the_app_should_do() {
        check(CoreError::Media(MediaError::Heic), ("fix", "photo_heic"));
        check(CoreError::Media(MediaError::Truncated), ("fix", "photo_refused"));
        check(
            CoreError::Media(MediaError::TooLarge { actual: 2, limit: 1 }),
            ("fix", "photo_too_large"),
        );
        check(
            CoreError::Evidence(EvidenceError::InvalidField { field: "page", reason: "x".into() }),
            ("fix", "invalid_field"),
        );
        check(CoreError::Evidence(EvidenceError::BadSignature), ("storage", "store_corrupt"));
        check(StoreError::Io(std::io::Error::other("full")), ("storage", "file"));
        check(StoreError::TooNew { found: 9, supported: 3 }, ("storage", "store_too_new"));
        check(StoreError::Poisoned, ("internal", "poisoned"));
        check(StoreError::Locked, ("locked", "store_locked"));
        check(BundleError::NotEmpty("d".into()), ("fix", "directory_not_empty"));
        check(BundleError::BadSignatureFile, ("fix", "bundle_invalid"));
        check(CoreError::NotFound("x".into()), ("fix", "not_found"));
        check(
            CoreError::NotDeletable { id: "x".into(), state: "receipted" },
            ("fix", "not_deletable"),
        );
        check(CoreError::Thumbnail("x".into()), ("internal", "thumbnail"));
        use hattama_core::CaptureRefusal as R;
        let (given, election, s) = (String::new(), String::new(), Vec::new());
        check(
            R::WrongElection { given: given.clone(), enrolled: election.clone() },
            ("fix", "wrong_election"),
        );
        check(
            R::UnknownPrecinct { given, election: election.clone(), assigned: s.clone() },
            ("fix", "unknown_precinct"),
        );
        check(
            R::PrecinctNotAssigned { precinct: "p".into(), number: 1, assigned: s.clone() },
            ("fix", "precinct_not_assigned"),
        );
        check(R::UnknownLine { line: "9".into(), election, lines: s }, ("fix", "unknown_line"));
        check(SyncError::NotEnrolled, ("fix", "not_enrolled"));
        check(SyncError::BadCode, ("fix", "bad_code"));
        check(SyncError::SyncBusy, ("retry", "sync_busy"));
        check(
            SyncError::Unreachable { attempts: 3, last_error: "refused".into() },
            ("retry", "unreachable"),
        );
        check(SyncError::Protocol("html".into()), ("retry", "protocol"));
        check(
            SyncError::Refused { status: 403, code: "device_revoked".into(), message: "m".into() },
            ("rejected", "device_revoked"),
        );
        check(SyncError::ServerKeyChanged, ("rejected", "server_key_changed"));
        check(SyncError::LogShrank { old_size: 9, new_size: 3 }, ("rejected", "log_shrank"));
        check(SyncError::Http("tls".into()), ("internal", "http_setup"));
    }
}
