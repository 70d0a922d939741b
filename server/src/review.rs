//! The rules of the coordinators' review, between the web handlers (and the admin commands and
//! `hattama-server demo`) and [`ReviewStorage`]: accounts and passwords (argon2id), logins with
//! throttling, who may see and do what, decisions on captures, and the double-entry
//! transcription of protocols, checked with the election's template
//! ([`ProtocolTemplate::check`](hattama_core::election::ProtocolTemplate::check), the one rule
//! engine).
//!
//! Double entry, per precinct:
//! 1. The first and the second entry are blind (made by two different users, neither sees the
//!    other's numbers).
//! 2. Equal entries: the precinct is verified. Different entries: disputed.
//! 3. A disputed precinct is resolved by a third user (neither of the first two), who sees both
//!    entries and the observer's own transcription; the resolution is verified.
//!
//! Every entry is checked against the template: an entry that breaks a hard rule is refused
//! unless the user records why the protocol itself is inconsistent (the reason becomes the
//! transcription's `inconsistency_note`); soft rules are only shown. Nothing is ever deleted:
//! decisions and entries are appended, each with its audit event (who, when, before, after).

use std::collections::{BTreeMap, HashMap};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use hattama_core::election::{Election, Severity, Violation};
use hattama_core::evidence::{MAX_SAFE_INTEGER, Sha256Hash};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::storage::StorageError;
use crate::storage::review::{
    Decision, DecisionKind, Entry, NewAudit, NewEntry, NewUser, QueueItem, ReviewStorage, Role,
    Transcription, TranscriptionStatus, User,
};

/// Reasons a capture may be rejected for.
pub const REJECT_REASONS: [&str; 4] =
    ["not_a_protocol", "unreadable", "wrong_precinct", "duplicate"];

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Longest free text (a flag's note, an inconsistency reason), in characters.
pub const MAX_TEXT_CHARS: usize = 2000;

/// Why a review action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Storage failed.
    #[error(transparent)]
    Storage(StorageError),
    /// An input breaks a rule (the message says which).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The user's role or regions do not allow this.
    #[error("not allowed")]
    Forbidden,
    /// No such capture, precinct, election or user.
    #[error("{0} not found")]
    NotFound(String),
    /// The entry breaks hard rules of the template and no reason was recorded.
    #[error("the entry breaks hard rules of the protocol template")]
    HardRules(Vec<Violation>),
    /// This user has entered this precinct already (double entry needs other people).
    #[error("you have entered this protocol already")]
    AlreadyEntered,
    /// The precinct's transcription is verified: no more entries.
    #[error("this protocol is verified already")]
    AlreadyVerified,
    /// Someone else changed the precinct meanwhile; reload and try again.
    #[error("changed meanwhile")]
    Conflict,
    /// Too many failed logins: retry after this many seconds.
    #[error("too many failed logins")]
    Throttled(u64),
    /// Wrong user name or password (or a disabled account).
    #[error("wrong user name or password")]
    BadLogin,
}

impl From<StorageError> for ReviewError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Conflict(_) => ReviewError::Conflict,
            e => ReviewError::Storage(e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Accounts and passwords.

/// Hashes a password with argon2id (default parameters, random salt) into a PHC string.
pub fn hash_password(password: &str) -> Result<String, ReviewError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| ReviewError::Invalid(format!("cannot hash the password: {e}")))
}

/// Whether `password` matches a PHC hash.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// A new random password: 20 characters of an unambiguous alphabet (100 bits).
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ";
    (0..20).map(|_| ALPHABET[rand::random::<usize>() % ALPHABET.len()] as char).collect()
}

fn check_text(what: &str, s: &str, max: usize) -> Result<(), ReviewError> {
    let n = s.chars().count();
    if n == 0 || n > max || s.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ReviewError::Invalid(format!(
            "{what} must be 1 to {max} characters without control characters"
        )));
    }
    Ok(())
}

/// Checks a password's length (at least [`MIN_PASSWORD_CHARS`] characters, at most 1000).
pub fn check_password(password: &str) -> Result<(), ReviewError> {
    let n = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=1000).contains(&n) {
        return Err(ReviewError::Invalid(format!(
            "a password has {MIN_PASSWORD_CHARS} to 1000 characters"
        )));
    }
    Ok(())
}

/// Creates an account (admin command, demo). The user name is 1 to 64 characters of
/// `a-z 0-9 . _ -`; the display name 1 to 100 characters; the password see [`check_password`].
pub fn create_user(
    storage: &dyn ReviewStorage,
    user: &NewUser,
    password: &str,
    now_ms: u64,
) -> Result<User, ReviewError> {
    let name_ok = (1..=64).contains(&user.username.len())
        && user
            .username
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !name_ok {
        return Err(ReviewError::Invalid(
            "a user name is 1 to 64 characters of a-z 0-9 . _ -".into(),
        ));
    }
    check_text("a display name", &user.display_name, 100)?;
    if user.display_name.contains('\n') {
        return Err(ReviewError::Invalid("a display name is one line".into()));
    }
    for r in &user.regions {
        check_text("a region", r, 200)?;
    }
    if user.role != Role::Coordinator && !user.regions.is_empty() {
        return Err(ReviewError::Invalid("only coordinators are limited to regions".into()));
    }
    check_password(password)?;
    let hash = hash_password(password)?;
    Ok(storage.create_user(user, &hash, now_ms, &user_created(now_ms))?)
}

// ---------------------------------------------------------------------------------------------
// The audit events of account changes: which event each change records, and what it says.
// Storage writes the event in the change's own transaction.

/// The event of an account's creation.
pub fn user_created(now_ms: u64) -> impl Fn(&User) -> NewAudit {
    move |user| NewAudit {
        at_ms: now_ms,
        user_id: None,
        action: "user_created".into(),
        after: Some(
            json!({
                "id": user.id,
                "username": user.username,
                "display_name": user.display_name,
                "role": user.role,
                "regions": user.regions,
            })
            .to_string(),
        ),
        ..NewAudit::default()
    }
}

/// The event of an account's disabling.
pub fn user_disabled(now_ms: u64) -> impl Fn(&User) -> NewAudit {
    move |user| NewAudit {
        at_ms: now_ms,
        action: "user_disabled".into(),
        after: Some(json!({ "id": user.id, "username": user.username }).to_string()),
        ..NewAudit::default()
    }
}

/// The event of a password's reset.
pub fn password_reset(now_ms: u64) -> impl Fn(&User) -> NewAudit {
    move |user| NewAudit {
        at_ms: now_ms,
        action: "password_reset".into(),
        after: Some(json!({ "id": user.id, "username": user.username }).to_string()),
        ..NewAudit::default()
    }
}

/// Disables an account and ends its sessions, with its audit event; returns whether it exists.
pub fn disable_user(
    storage: &dyn ReviewStorage,
    username: &str,
    now_ms: u64,
) -> Result<bool, StorageError> {
    storage.disable_user(username, now_ms, &user_disabled(now_ms))
}

/// Sets a new password (and enables the account); ends its sessions.
pub fn reset_password(
    storage: &dyn ReviewStorage,
    username: &str,
    password: &str,
    now_ms: u64,
) -> Result<(), ReviewError> {
    check_password(password)?;
    let hash = hash_password(password)?;
    if storage.set_password(username, &hash, &password_reset(now_ms))? {
        Ok(())
    } else {
        Err(ReviewError::NotFound(format!("user {username}")))
    }
}

// ---------------------------------------------------------------------------------------------
// Logins and sessions.

pub use crate::throttle::LoginThrottle;

/// A new session: the token for the cookie (only its SHA-256 is stored) and the CSRF token.
pub struct NewSession {
    /// The cookie's value (43 characters of base64url).
    pub token: String,
    /// The session's CSRF token.
    pub csrf: String,
    /// The user.
    pub user: User,
}

/// The SHA-256 under which a session token is stored.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn random_token() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Checks a user name and password and opens a session of `ttl_ms`. Failures are throttled
/// (a delay per user name, a limit per client address: [`LoginThrottle`]) and audited (also for
/// unknown names).
pub fn login(
    storage: &dyn ReviewStorage,
    throttle: &LoginThrottle,
    username: &str,
    password: &str,
    client: &str,
    now_ms: u64,
    ttl_ms: u64,
) -> Result<NewSession, ReviewError> {
    let name = username.trim().to_lowercase();
    let found = storage.user_by_name(&name)?;
    let known = found.is_some();
    throttle.check(&name, known, client, now_ms).map_err(ReviewError::Throttled)?;
    let ok = match &found {
        Some((user, hash)) => verify_password(hash, password) && !user.disabled,
        None => {
            // The same work as for a known name, so that timing does not tell names apart.
            let _ = verify_password(DUMMY_HASH, password);
            false
        }
    };
    let user_id = found.as_ref().map(|(u, _)| u.id);
    if !ok {
        throttle.fail(&name, known, client, now_ms);
        storage.append_audit(&NewAudit {
            at_ms: now_ms,
            user_id,
            action: "login_failed".into(),
            after: Some(json!({ "username": name }).to_string()),
            ..NewAudit::default()
        })?;
        return Err(ReviewError::BadLogin);
    }
    let Some((user, _)) = found else { return Err(ReviewError::BadLogin) };
    throttle.succeed(&name);
    let token = random_token();
    let csrf = random_token();
    storage.create_session(&token_hash(&token), user.id, &csrf, now_ms, now_ms + ttl_ms)?;
    storage.append_audit(&NewAudit {
        at_ms: now_ms,
        user_id: Some(user.id),
        action: "login".into(),
        ..NewAudit::default()
    })?;
    Ok(NewSession { token, csrf, user })
}

/// An argon2id hash of a random password, verified against for unknown user names.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
    2PrTnSgQmCSnBKVWAFBbydAKeQ9ASTNpRNbBaMMvYR0";

/// Ends a session (logout), audited.
pub fn logout(
    storage: &dyn ReviewStorage,
    token: &str,
    user: &User,
    now_ms: u64,
) -> Result<(), ReviewError> {
    storage.delete_session(&token_hash(token))?;
    storage.append_audit(&NewAudit {
        at_ms: now_ms,
        user_id: Some(user.id),
        action: "logout".into(),
        ..NewAudit::default()
    })?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Who may do what.

/// Whether the user may see captures of this region (admins and supervisors: every region;
/// coordinators: their regions, or all if they have none).
pub fn may_see(user: &User, region: &str) -> bool {
    match user.role {
        Role::Admin | Role::Supervisor => true,
        Role::Coordinator => user.regions.is_empty() || user.regions.iter().any(|r| r == region),
    }
}

/// Whether the user may decide and transcribe in this region (admins, and coordinators in
/// their scope; supervisors only read).
pub fn may_review(user: &User, region: &str) -> bool {
    match user.role {
        Role::Admin => true,
        Role::Coordinator => may_see(user, region),
        Role::Supervisor => false,
    }
}

/// Whether the user may read the whole audit trail and export it.
pub fn may_audit(user: &User) -> bool {
    matches!(user.role, Role::Admin | Role::Supervisor)
}

/// Whether `user` may still make a blind (first or second) entry of a precinct in `region`
/// whose transcription is in `status`: they may transcribe there, have not entered it, and it
/// is still waiting for its blind entries. Then no page, export or API shows them an entry's
/// numbers, nor the observer's own.
pub fn may_enter_blind(
    user: &User,
    region: &str,
    status: Option<TranscriptionStatus>,
    entered: bool,
) -> bool {
    may_review(user, region)
        && !entered
        && matches!(status, None | Some(TranscriptionStatus::Pending))
}

/// What stands in an audit event's `before` and `after` in place of an entry's numbers that
/// the reader may not see yet.
pub const WITHHELD: &str =
    r#"{"withheld":"blind entry: shown once you have entered this protocol"}"#;

/// The audit trail as `user` reads it: the numbers of transcription entries (their `before`
/// and `after`) are withheld in precincts where the user may still enter blind
/// ([`may_enter_blind`]). `election_of` gives an election's definition (for regions).
pub fn audit_for(
    storage: &dyn ReviewStorage,
    election_of: &dyn Fn(&str) -> Result<Option<Election>, StorageError>,
    user: &User,
    mut events: Vec<crate::storage::review::AuditEvent>,
) -> Result<Vec<crate::storage::review::AuditEvent>, ReviewError> {
    let mut blind: HashMap<(String, String), bool> = HashMap::new();
    let mut elections: HashMap<String, Option<Election>> = HashMap::new();
    for e in &mut events {
        if !e.action.starts_with("entry") {
            continue;
        }
        let (Some(election), Some(precinct)) = (&e.election, &e.precinct) else { continue };
        let key = (election.clone(), precinct.clone());
        let hide = match blind.get(&key) {
            Some(hide) => *hide,
            None => {
                if !elections.contains_key(election) {
                    elections.insert(election.clone(), election_of(election)?);
                }
                let region = elections
                    .get(election)
                    .and_then(Option::as_ref)
                    .and_then(|el| el.precincts.iter().find(|p| &p.id == precinct))
                    .map(|p| p.region.clone())
                    .unwrap_or_default();
                let status = storage.transcription(election, precinct)?.map(|t| t.status);
                let entered =
                    storage.entries(election, precinct)?.iter().any(|x| x.user_id == user.id);
                let hide = may_enter_blind(user, &region, status, entered);
                blind.insert(key, hide);
                hide
            }
        };
        if hide {
            e.before = Some(WITHHELD.to_owned());
            e.after = Some(WITHHELD.to_owned());
        }
    }
    Ok(events)
}

/// The regions a user's queue is limited to (`None`: all).
pub fn scope(user: &User) -> Option<Vec<String>> {
    (user.role == Role::Coordinator && !user.regions.is_empty()).then(|| user.regions.clone())
}

// ---------------------------------------------------------------------------------------------
// Decisions.

fn item_for(storage: &dyn ReviewStorage, capture: &Sha256Hash) -> Result<QueueItem, ReviewError> {
    storage.refresh_index()?;
    storage.queue_item(capture)?.ok_or_else(|| ReviewError::NotFound(format!("capture {capture}")))
}

/// Records a decision on a capture by `user`: accepted (no reason), rejected (a reason of
/// [`REJECT_REASONS`]) or flagged for a supervisor (an optional note). Earlier decisions stay;
/// the newest one is the capture's state. Without a check of what the user saw (the demo, the
/// tests); the pages use [`record_decision_seen`].
pub fn record_decision(
    storage: &dyn ReviewStorage,
    user: &User,
    capture: &Sha256Hash,
    kind: DecisionKind,
    reason: Option<&str>,
    now_ms: u64,
) -> Result<Decision, ReviewError> {
    record_decision_seen(storage, user, capture, kind, reason, None, now_ms)
}

/// [`record_decision`], refused with [`ReviewError::Conflict`] unless the newest decision is
/// still the one the user saw (`seen`: its id, 0 for none): a decision taken on a stale page
/// never silently replaces one taken meanwhile.
pub fn record_decision_seen(
    storage: &dyn ReviewStorage,
    user: &User,
    capture: &Sha256Hash,
    kind: DecisionKind,
    reason: Option<&str>,
    seen: Option<i64>,
    now_ms: u64,
) -> Result<Decision, ReviewError> {
    let item = item_for(storage, capture)?;
    if !may_review(user, &item.region) {
        return Err(ReviewError::Forbidden);
    }
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    let reason = match (kind, reason) {
        (DecisionKind::Accepted, _) => None,
        (DecisionKind::Rejected, Some(r)) if REJECT_REASONS.contains(&r) => Some(r.to_owned()),
        (DecisionKind::Rejected, _) => {
            return Err(ReviewError::Invalid(format!(
                "a rejection needs one of the reasons {}",
                REJECT_REASONS.join(", ")
            )));
        }
        (DecisionKind::Flagged, Some(r)) => {
            check_text("a note", r, MAX_TEXT_CHARS)?;
            Some(r.to_owned())
        }
        (DecisionKind::Flagged, None) => None,
    };
    let before = storage.decision(capture)?;
    let decision = Decision { kind, reason, at_ms: now_ms };
    let audit = NewAudit {
        at_ms: now_ms,
        user_id: Some(user.id),
        action: "decision".into(),
        election: Some(item.election.clone()),
        precinct: Some(item.precinct.clone()),
        capture: Some(capture.to_hex()),
        before: before.map(|d| json!(d).to_string()),
        after: Some(json!(decision).to_string()),
    };
    storage.record_decision(capture, user.id, &decision, &audit, seen)?;
    Ok(decision)
}

// ---------------------------------------------------------------------------------------------
// Double entry.

/// The hard rules an entry breaks.
pub fn hard_violations(election: &Election, values: &BTreeMap<String, u64>) -> Vec<Violation> {
    election.protocol.check(values).into_iter().filter(|v| v.severity == Severity::Hard).collect()
}

/// Records a transcription entry of `precinct`'s protocol by `user` (see the module docs for
/// the double-entry rules) and returns the precinct's new state. `values` must give every line
/// of the template; `reason` is required when they break a hard rule (and dropped when they do
/// not: a corrected entry needs no reason). Without a check of what the user saw (the demo, the
/// tests); the pages use [`record_entry_seen`].
pub fn record_entry(
    storage: &dyn ReviewStorage,
    election: &Election,
    user: &User,
    precinct: &str,
    values: BTreeMap<String, u64>,
    reason: Option<&str>,
    now_ms: u64,
) -> Result<Transcription, ReviewError> {
    record_entry_seen(storage, election, user, precinct, values, reason, None, now_ms)
}

/// [`record_entry`], refused with [`ReviewError::Conflict`] unless the precinct's state is
/// still the one the user's form was made for (`seen`; no entry counts as pending): a blind
/// entry never silently becomes the resolution of a dispute it did not see, and a resolution
/// never comes after another. (A second blind entry made meanwhile changes nothing for a
/// blind entry: it stays pending.)
#[allow(clippy::too_many_arguments)] // the entry and what it was made from
pub fn record_entry_seen(
    storage: &dyn ReviewStorage,
    election: &Election,
    user: &User,
    precinct: &str,
    values: BTreeMap<String, u64>,
    reason: Option<&str>,
    seen: Option<TranscriptionStatus>,
    now_ms: u64,
) -> Result<Transcription, ReviewError> {
    let p = election
        .precinct(precinct)
        .ok_or_else(|| ReviewError::NotFound(format!("precinct {precinct}")))?;
    if !may_review(user, &p.region) {
        return Err(ReviewError::Forbidden);
    }
    let lines: Vec<&str> = election.protocol.lines.iter().map(|l| l.id.as_str()).collect();
    let missing: Vec<&str> = lines.iter().copied().filter(|l| !values.contains_key(*l)).collect();
    if !missing.is_empty() {
        return Err(ReviewError::Invalid(format!(
            "lines without a number: {}",
            missing.join(", ")
        )));
    }
    if let Some(extra) = values.keys().find(|k| !lines.contains(&k.as_str())) {
        return Err(ReviewError::Invalid(format!("line {extra} is not on this protocol")));
    }
    if values.values().any(|v| *v > MAX_SAFE_INTEGER) {
        return Err(ReviewError::Invalid("a number is too large".into()));
    }
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    if let Some(r) = reason {
        check_text("a reason", r, MAX_TEXT_CHARS)?;
    }
    let hard = hard_violations(election, &values);
    if !hard.is_empty() && reason.is_none() {
        return Err(ReviewError::HardRules(hard));
    }
    // A reason is kept only where it explains something.
    let reason = if hard.is_empty() { None } else { reason.map(str::to_owned) };

    let entries = storage.entries(&election.id, precinct)?;
    let before = storage.transcription(&election.id, precinct)?;
    if entries.iter().any(|e| e.user_id == user.id) {
        return Err(ReviewError::AlreadyEntered);
    }
    let status = before.as_ref().map_or(TranscriptionStatus::Pending, |t| t.status);
    if seen.is_some_and(|seen| seen != status) {
        return Err(ReviewError::Conflict);
    }
    let (state, resolution) = match (status, entries.as_slice()) {
        (TranscriptionStatus::Verified, _) => return Err(ReviewError::AlreadyVerified),
        (TranscriptionStatus::Pending, []) => (
            Transcription {
                precinct: precinct.to_owned(),
                status: TranscriptionStatus::Pending,
                values: BTreeMap::new(),
                verified_at_ms: None,
                inconsistency_note: None,
            },
            false,
        ),
        (TranscriptionStatus::Pending, [first]) => {
            if first.values == values {
                let mut notes: Vec<String> =
                    first.reason.iter().chain(reason.iter()).cloned().collect();
                notes.dedup();
                (
                    Transcription {
                        precinct: precinct.to_owned(),
                        status: TranscriptionStatus::Verified,
                        values: values.clone(),
                        verified_at_ms: Some(now_ms),
                        inconsistency_note: (!notes.is_empty()).then(|| notes.join("\n")),
                    },
                    false,
                )
            } else {
                (
                    Transcription {
                        precinct: precinct.to_owned(),
                        status: TranscriptionStatus::Disputed,
                        values: BTreeMap::new(),
                        verified_at_ms: None,
                        inconsistency_note: None,
                    },
                    false,
                )
            }
        }
        (TranscriptionStatus::Disputed, _) => (
            Transcription {
                precinct: precinct.to_owned(),
                status: TranscriptionStatus::Verified,
                values: values.clone(),
                verified_at_ms: Some(now_ms),
                inconsistency_note: reason.clone(),
            },
            true,
        ),
        (TranscriptionStatus::Pending, _) => {
            return Err(ReviewError::Storage(StorageError::Corrupt(format!(
                "precinct {precinct} is pending with {} entries",
                entries.len()
            ))));
        }
    };
    let entry = NewEntry {
        user_id: user.id,
        values: values.clone(),
        reason: reason.clone(),
        resolution,
        at_ms: now_ms,
    };
    let audit = NewAudit {
        at_ms: now_ms,
        user_id: Some(user.id),
        action: if resolution { "entry_resolution".into() } else { "entry".into() },
        election: Some(election.id.clone()),
        precinct: Some(precinct.to_owned()),
        capture: None,
        before: before.map(|t| json!(t).to_string()),
        after: Some(json!({ "entry": values, "reason": reason, "state": state }).to_string()),
    };
    storage.append_entry(&election.id, precinct, entries.len(), &entry, &state, &audit)?;
    Ok(state)
}

/// How the third person settles one line of a disputed protocol: a value already there, or a
/// number typed because every value there is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// The first entry's value.
    First,
    /// The second entry's value.
    Second,
    /// The observer's own transcription (from the signed manifest).
    Observer,
    /// A typed number.
    Typed(u64),
}

/// The values of a resolution from the third person's pick per line, against the precinct's
/// two entries and the observer's transcription. A pick of a value that is not there is
/// refused ([`ReviewError::Invalid`]); whether every line has a value is [`record_entry`]'s
/// check.
pub fn resolved_values(
    entries: &[Entry],
    observer: Option<&BTreeMap<String, u64>>,
    picks: &BTreeMap<String, Pick>,
) -> Result<BTreeMap<String, u64>, ReviewError> {
    picks
        .iter()
        .map(|(line, pick)| {
            let from = |values: Option<&BTreeMap<String, u64>>| {
                values.and_then(|v| v.get(line)).copied().ok_or_else(|| {
                    ReviewError::Invalid(format!("line {line}: the value picked is not there"))
                })
            };
            let value = match pick {
                Pick::First => from(entries.first().map(|e| &e.values))?,
                Pick::Second => from(entries.get(1).map(|e| &e.values))?,
                Pick::Observer => from(observer)?,
                Pick::Typed(v) => *v,
            };
            Ok((line.clone(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use hattama_core::election::{Line, LineKind, Names, Op, Precinct, ProtocolTemplate, Relation};

    use super::*;
    use crate::storage::{SqliteStorage, Storage};

    fn names(s: &str) -> Names {
        Names { kk: s.into(), ru: s.into(), en: s.into() }
    }

    fn election() -> Election {
        let line = |id: &str, kind| Line { id: id.into(), kind, names: names(id) };
        Election {
            id: "e".into(),
            names: names("E"),
            count_time_ms: None,
            utc_offset_min: None,
            high_risk: false,
            photos_after_receipt: None,
            precincts: ["p1", "p2"]
                .iter()
                .map(|p| Precinct {
                    id: (*p).into(),
                    number: 1,
                    region: if *p == "p1" { "North" } else { "South" }.into(),
                    district: "d".into(),
                    address: "a".into(),
                })
                .collect(),
            protocol: ProtocolTemplate {
                lines: vec![
                    line("1", LineKind::Count),
                    line("2", LineKind::Candidate),
                    line("3", LineKind::AgainstAll),
                ],
                relations: vec![Relation {
                    id: "sum".into(),
                    severity: Severity::Hard,
                    left: vec!["1".into()],
                    op: Op::Eq,
                    right: vec!["2".into(), "3".into()],
                    names: names("1 = 2 + 3"),
                }],
            },
        }
    }

    fn setup() -> (tempfile::TempDir, SqliteStorage, Election, Vec<User>) {
        let dir = tempfile::tempdir().unwrap();
        let storage = SqliteStorage::open(dir.path(), false).unwrap();
        let e = election();
        storage.import_election(&e, 1).unwrap();
        let users = ["a", "b", "c", "north"]
            .iter()
            .map(|u| {
                let regions = if *u == "north" { vec!["North".to_owned()] } else { Vec::new() };
                let new = NewUser {
                    username: (*u).into(),
                    display_name: u.to_uppercase(),
                    role: Role::Coordinator,
                    regions,
                };
                // Stored directly: hashing is tested on its own and is slow unoptimised.
                storage.create_user(&new, "x", 1, &user_created(1)).unwrap()
            })
            .collect();
        (dir, storage, e, users)
    }

    fn v(a: u64, b: u64, c: u64) -> BTreeMap<String, u64> {
        BTreeMap::from([("1".into(), a), ("2".into(), b), ("3".into(), c)])
    }

    #[test]
    fn double_entry_state_machine() {
        let (_dir, s, e, u) = setup();
        let status = |t: Transcription| t.status;
        // First entry: pending. The same person again: refused.
        assert_eq!(
            status(record_entry(&s, &e, &u[0], "p1", v(10, 7, 3), None, 5).unwrap()),
            TranscriptionStatus::Pending
        );
        assert!(matches!(
            record_entry(&s, &e, &u[0], "p1", v(10, 7, 3), None, 6),
            Err(ReviewError::AlreadyEntered)
        ));
        // Second, different: disputed; the first two may not resolve.
        assert_eq!(
            status(record_entry(&s, &e, &u[1], "p1", v(10, 6, 4), None, 7).unwrap()),
            TranscriptionStatus::Disputed
        );
        assert!(matches!(
            record_entry(&s, &e, &u[1], "p1", v(10, 7, 3), None, 8),
            Err(ReviewError::AlreadyEntered)
        ));
        // A third person resolves.
        let t = record_entry(&s, &e, &u[2], "p1", v(10, 7, 3), None, 9).unwrap();
        assert_eq!(t.status, TranscriptionStatus::Verified);
        assert_eq!(t.values, v(10, 7, 3));
        assert_eq!(t.verified_at_ms, Some(9));
        assert!(matches!(
            record_entry(&s, &e, &u[3], "p1", v(10, 7, 3), None, 10),
            Err(ReviewError::AlreadyVerified)
        ));
        // Equal entries verify at once; a hard rule needs a reason, kept as the note.
        assert!(matches!(
            record_entry(&s, &e, &u[0], "p2", v(10, 7, 4), None, 11),
            Err(ReviewError::HardRules(v)) if v.len() == 1 && v[0].left == 10 && v[0].right == 11
        ));
        record_entry(&s, &e, &u[0], "p2", v(10, 7, 4), Some("written so"), 12).unwrap();
        let t = record_entry(&s, &e, &u[1], "p2", v(10, 7, 4), Some("written so"), 13).unwrap();
        assert_eq!(t.status, TranscriptionStatus::Verified);
        assert_eq!(t.inconsistency_note.as_deref(), Some("written so"));
        // The contract the gallery reads.
        let all = s.transcriptions("e").unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|t| t.status == TranscriptionStatus::Verified));
        assert_eq!(s.entries("e", "p1").unwrap().len(), 3);
        // Incomplete or foreign lines, other regions, unknown precincts.
        let mut partial = v(1, 1, 0);
        partial.remove("3");
        assert!(matches!(
            record_entry(&s, &e, &u[2], "p2", partial, None, 14),
            Err(ReviewError::Invalid(_))
        ));
        assert!(matches!(
            record_entry(&s, &e, &u[3], "p2", v(1, 1, 0), None, 14),
            Err(ReviewError::Forbidden)
        ));
        assert!(matches!(
            record_entry(&s, &e, &u[0], "p9", v(1, 1, 0), None, 14),
            Err(ReviewError::NotFound(_))
        ));
    }

    #[test]
    fn stale_pages_are_refused() {
        let (_dir, s, e, u) = setup();
        let pending = Some(TranscriptionStatus::Pending);
        let disputed = Some(TranscriptionStatus::Disputed);
        record_entry_seen(&s, &e, &u[0], "p1", v(10, 7, 3), None, pending, 5).unwrap();
        // A blind form made before the first entry still makes the second blind entry.
        record_entry_seen(&s, &e, &u[1], "p1", v(10, 6, 4), None, pending, 6).unwrap();
        // A blind form made before the dispute does not become its resolution …
        assert!(matches!(
            record_entry_seen(&s, &e, &u[2], "p1", v(10, 7, 3), None, pending, 7),
            Err(ReviewError::Conflict)
        ));
        // … a resolution form does, once.
        record_entry_seen(&s, &e, &u[2], "p1", v(10, 7, 3), None, disputed, 8).unwrap();
        assert!(matches!(
            record_entry_seen(&s, &e, &u[3], "p1", v(10, 7, 3), None, disputed, 9),
            Err(ReviewError::Conflict)
        ));
        // A corrected entry needs no reason, and a reason it does not need is not kept.
        assert!(matches!(
            record_entry(&s, &e, &u[0], "p2", v(10, 7, 4), None, 10),
            Err(ReviewError::HardRules(_))
        ));
        record_entry(&s, &e, &u[0], "p2", v(10, 7, 3), Some("left over"), 11).unwrap();
        assert_eq!(s.entries("e", "p2").unwrap()[0].reason, None);
    }

    #[test]
    fn a_resolution_is_made_of_picks() {
        let (_dir, s, e, u) = setup();
        record_entry(&s, &e, &u[0], "p1", v(10, 7, 3), None, 5).unwrap();
        record_entry(&s, &e, &u[1], "p1", v(10, 6, 4), None, 6).unwrap();
        let entries = s.entries("e", "p1").unwrap();
        let observer = v(11, 8, 3);
        let picks = BTreeMap::from([
            ("1".to_owned(), Pick::First),
            ("2".to_owned(), Pick::Observer),
            ("3".to_owned(), Pick::Typed(2)),
        ]);
        assert_eq!(resolved_values(&entries, Some(&observer), &picks).unwrap(), v(10, 8, 2));
        let picks = BTreeMap::from([("3".to_owned(), Pick::Second)]);
        assert_eq!(resolved_values(&entries, None, &picks).unwrap()["3"], 4);
        let picks = BTreeMap::from([("2".to_owned(), Pick::Observer)]);
        assert!(matches!(resolved_values(&entries, None, &picks), Err(ReviewError::Invalid(_))));
    }

    #[test]
    fn scopes_and_roles() {
        let (_dir, _s, _e, u) = setup();
        assert!(may_see(&u[3], "North") && !may_see(&u[3], "South"));
        assert!(may_review(&u[0], "South"));
        let mut sup = u[0].clone();
        sup.role = Role::Supervisor;
        assert!(may_see(&sup, "South") && !may_review(&sup, "South") && may_audit(&sup));
        assert!(!may_audit(&u[0]));
        assert_eq!(scope(&u[3]), Some(vec!["North".to_owned()]));
        assert_eq!(scope(&u[0]), None);
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse batterx"));
        assert!(!verify_password("not a hash", "x"));
        assert!(PasswordHash::new(DUMMY_HASH).is_ok(), "the dummy hash parses");
        let p = generate_password();
        assert_eq!(p.chars().count(), 20);
        assert!(check_password(&p).is_ok());
        assert!(check_password("short").is_err());
    }
}

/// The flags' rules, which every storage backend applies to the rows it fetches.
pub mod flags;
