//! Carrying verified transcriptions from one Hattama instance to another: the open-data export
//! `transcriptions.csv` (the format of official results: `election,precinct,line,value`) is
//! imported as verified transcriptions (`hattama-server transcription import`), so that a
//! fresh instance, a mirror or a backup shows the same comparison.
//!
//! Imported figures did not go through this instance's double entry: each is recorded as one
//! entry by the system account [`IMPORT_USER`] (disabled: it cannot log in), with an audit
//! event naming the file's SHA-256. A precinct that already has entries here is left alone.

use hattama_core::election::Election;
use serde_json::json;

use crate::official::Figures;
use crate::review::ReviewError;
use crate::storage::review::{
    NewAudit, NewEntry, NewUser, ReviewStorage, Role, Transcription, TranscriptionStatus,
};

/// The system account imported entries are attributed to.
pub const IMPORT_USER: &str = "import";

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Imported {
    /// Precincts recorded as verified.
    pub verified: usize,
    /// Precincts skipped because they already have entries here.
    pub skipped: usize,
}

/// Records `figures` as verified transcriptions of `election`.
pub fn import(
    storage: &dyn ReviewStorage,
    election: &Election,
    figures: &Figures,
    source_sha256: &str,
    now_ms: u64,
) -> Result<Imported, ReviewError> {
    let user = match storage.user_by_name(IMPORT_USER)? {
        Some((user, _)) => user,
        None => {
            let new = NewUser {
                username: IMPORT_USER.into(),
                display_name: "Import of verified transcriptions".into(),
                role: Role::Supervisor,
                regions: Vec::new(),
            };
            // A password nobody knows, and the account disabled: it only signs imports.
            let hash = crate::review::hash_password(&crate::review::generate_password())?;
            let user =
                storage.create_user(&new, &hash, now_ms, &crate::review::user_created(now_ms))?;
            crate::review::disable_user(storage, IMPORT_USER, now_ms)?;
            user
        }
    };
    let mut done = Imported::default();
    for (precinct, values) in figures {
        if election.precinct(precinct).is_none() {
            return Err(ReviewError::NotFound(format!("precinct {precinct}")));
        }
        if !storage.entries(&election.id, precinct)?.is_empty() {
            done.skipped += 1;
            continue;
        }
        let state = Transcription {
            precinct: precinct.clone(),
            status: TranscriptionStatus::Verified,
            values: values.clone(),
            verified_at_ms: Some(now_ms),
            inconsistency_note: None,
        };
        let entry = NewEntry {
            user_id: user.id,
            values: values.clone(),
            reason: None,
            resolution: false,
            at_ms: now_ms,
        };
        let audit = NewAudit {
            at_ms: now_ms,
            user_id: Some(user.id),
            action: "entry_import".into(),
            election: Some(election.id.clone()),
            precinct: Some(precinct.clone()),
            capture: None,
            before: None,
            after: Some(json!({ "source_sha256": source_sha256, "state": state }).to_string()),
        };
        storage.append_entry(&election.id, precinct, 0, &entry, &state, &audit)?;
        done.verified += 1;
    }
    Ok(done)
}
