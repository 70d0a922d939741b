//! `hattama`: the observer's command line, the desktop thin UI over `hattama-core`.
//!
//! Exit codes: 0 success; 1 unexpected failure; 2 usage error (also: not enrolled yet);
//! 3 input refused (photo, field, a capture that does not fit the enrolled election, server URL,
//! enrollment code or invite, or the server refused the enrollment or this device); 4 no such capture (or an ambiguous id prefix); 5 storage failure;
//! 6 verification failed (a bundle, a server receipt or its log proof, a log checkpoint, or a
//! changed server or log key); 7 capture can no longer be deleted; 8 network or server failure
//! (unreachable after retries, or answers outside the protocol); 9 a sync of this store is
//! already running; 10 ALARM: the server's public log forked, was rewritten or shrank (printed
//! loudly on stderr; the alarm stays in the store, `status` shows it, and every later sync
//! stops with it); 11 `audit` found problems in the log (each is listed); 12 the store key is not
//! this store's (`store_locked`: nothing was read or changed).
//!
//! The store is encrypted under a key the CLI never writes to disk: 64 hex digits (32 bytes) in
//! the environment variable `HATTAMA_STORE_KEY`, or in a file named by `--key-file` (or
//! `HATTAMA_STORE_KEY_FILE`) outside the store directory. `hattama new-key` prints a new one.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Parser, Subcommand};
use hattama_core::audit::{AuditConfig, AuditError, Auditor, Problem, Round};
use hattama_core::bundle::{self, BundleError};
use hattama_core::decision::DecisionKind;
use hattama_core::evidence::Sha256Hash;
use hattama_core::evidence::{CoarseLocation, EvidenceKind, Page};
use hattama_core::media::MediaLimits;
use hattama_core::mirror::MirrorError;
use hattama_core::store::{CaptureRecord, CaptureState, Review, StoreError, StoreKey};
use hattama_core::sync::{
    CancelToken, Enrollment, LogAlarm, SyncError, SyncListener, SyncProgress, SyncStatus,
    SyncSummary,
};
use hattama_core::{CaptureRequest, Client, ClientConfig, Error};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "hattama", version = env!("HATTAMA_VERSION"), about = "Photograph, sign and keep election protocols")]
struct Cli {
    /// The offline store directory [default: the user's data directory]
    #[arg(long, global = true, env = "HATTAMA_STORE", value_name = "DIR")]
    store: Option<PathBuf>,
    /// Also trust the certificate authorities of this PEM file (a server with its own CA)
    #[arg(long, global = true, env = "HATTAMA_CA_FILE", value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// A file holding the store key (64 hex digits), outside the store; without it the key is
    /// read from HATTAMA_STORE_KEY
    #[arg(long, global = true, env = "HATTAMA_STORE_KEY_FILE", value_name = "FILE")]
    key_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the store and this device's signing key (done by any command if needed)
    Init {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Capture a photo of a protocol: strip metadata, sign, store durably
    Capture {
        /// The photo (JPEG or PNG, straight from the camera)
        photo: PathBuf,
        /// Election id (the one this device enrolled for)
        #[arg(long)]
        election: String,
        /// Polling station: its id, or its number as on its door (`123`, `№123`)
        #[arg(long)]
        precinct: String,
        /// Page number and count, as N/M
        #[arg(long, default_value = "1/1", value_parser = parse_page)]
        page: Page,
        /// What the photo shows: posted, handed or not-posted
        #[arg(long, default_value = "posted", value_parser = parse_kind)]
        kind: EvidenceKind,
        /// A note for the coordinators
        #[arg(long)]
        note: Option<String>,
        /// A transcribed protocol line, as LINE=NUMBER (repeatable)
        #[arg(long = "line", value_parser = parse_line)]
        lines: Vec<(String, u64)>,
        /// Coarse location LAT,LON in degrees, rounded to 0.01 (only if you want it published)
        #[arg(long, value_parser = parse_location)]
        location: Option<CoarseLocation>,
        /// UTC offset in minutes [default: this computer's]
        #[arg(long, allow_negative_numbers = true)]
        utc_offset: Option<i32>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// List captures, newest first
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one capture with its signed manifest
    Show {
        /// Capture id or a unique prefix (at least 6 hex digits)
        id: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete a capture that was not sent (its sequence number stays, as a visible gap)
    Delete {
        /// Capture id or prefix
        id: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Write a capture's evidence bundle (photo, manifest, signature) into DIR
    Export {
        /// Capture id or prefix
        id: String,
        /// Target directory (created; must be empty if it exists)
        dir: PathBuf,
    },
    /// Verify an evidence bundle exactly as docs/evidence-format.md says
    Verify {
        /// The bundle directory
        bundle: PathBuf,
        /// Verify with this photo file instead of the bundle's (the server's copy of a photo
        /// removed from the phone after its receipt)
        #[arg(long, value_name = "FILE")]
        photo: Option<PathBuf>,
        /// Verify with the photo the server (or a mirror of it) at BASE publishes
        /// (`BASE/photos/<sha256>`) instead of the bundle's
        #[arg(long, value_name = "BASE", conflicts_with = "photo")]
        server: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Verify an evidence package (.zip) of a station or of a set of stations offline, as
    /// docs/evidence-package.md says: every hash, signature, receipt and log proof, and a set's
    /// summary against its stations; prints what each file proves
    VerifyPackage {
        /// The package file
        file: PathBuf,
        /// The server's receipt key (64 hex digits) as you got it elsewhere (its data page,
        /// GET /api/v1/receipts/key, an earlier package); without it the key inside is used
        #[arg(long)]
        receipt_key: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Write a capture's thumbnail (JPEG) to a file
    Thumbnail {
        /// Capture id or prefix
        id: String,
        /// Output file
        out: PathBuf,
    },
    /// Enroll this device with a server: the invite from a coordinator as it was printed
    /// (`hattama://enroll?server=…&code=…`), or the server's URL and the code
    Enroll {
        /// The invite, or the server's base URL (for example `https://hattama.example.kz`)
        url: String,
        /// The enrollment code, with a URL (in any case; spaces and dashes do not matter)
        code: Vec<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Send every capture not yet receipted to the server and store its receipt
    Sync {
        /// Print the summary as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show captures per state, the enrolled server and how the last sync ended
    Status {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Print a new random store key (64 hex digits) for HATTAMA_STORE_KEY or a key file
    NewKey,
    /// Change the store's key: from now on it opens with the key in FILE (the current key
    /// unlocks it first). Crash-safe: one of the two keys always opens the store
    Rekey {
        /// A file holding the new key (64 hex digits), outside the store
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Panic wipe: make the store unreadable at once (its key material is destroyed first),
    /// then remove it. Needs no key. Cannot be undone: captures not yet sent are lost
    Wipe {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Audit a public log (the server's or a static mirror's): recompute the tree from its
    /// entries, check every tile and the checkpoint's signature, optionally every capture
    Audit(AuditArgs),
    /// Keep a verified copy of everything an instance publishes (log, evidence, open data,
    /// the gallery's pages) in a directory any static web server can serve
    Mirror(MirrorArgs),
}

#[derive(clap::Args)]
struct MirrorArgs {
    /// The instance's address (`https://host`)
    url: String,
    /// The mirror's directory (created; an earlier mirror there is brought up to date)
    dir: PathBuf,
    /// The log's verifier key [default: the one this mirror pinned, else the source's own]
    #[arg(long, value_name = "VKEY")]
    key: Option<String>,
    /// A file holding the verifier key, or the JSON answer of `/api/v1/log/key`
    #[arg(long, value_name = "FILE", conflicts_with = "key")]
    key_file: Option<PathBuf>,
    /// Keep watching: add what is new every --interval seconds
    #[arg(long)]
    follow: bool,
    /// Seconds between rounds
    #[arg(long, value_name = "SECS", default_value_t = 60, requires = "follow")]
    interval: u64,
    /// Stop after this many rounds, the first included [default: never]
    #[arg(long, value_name = "N", requires = "follow")]
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    rounds: Option<u64>,
    /// Print one JSON line per round
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct AuditArgs {
    /// The log's base URL, where `checkpoint` and `tile/` are (`https://host/log` on a server)
    url: String,
    /// The log's verifier key (`GET /api/v1/log/key`, or from the operator)
    #[arg(long, value_name = "VKEY", required_unless_present = "key_file")]
    key: Option<String>,
    /// A file holding the verifier key, or the JSON answer of `/api/v1/log/key`
    #[arg(long, value_name = "FILE", conflicts_with = "key")]
    key_file: Option<PathBuf>,
    /// Also fetch every capture's signed manifest and photo and check them
    #[arg(long)]
    photos: bool,
    /// Where the evidence is served [default: URL without its final `/log`]
    #[arg(long, value_name = "BASE", requires = "photos")]
    evidence_url: Option<String>,
    /// Keep watching: poll the checkpoint and check that each new one extends the previous
    #[arg(long)]
    follow: bool,
    /// Seconds between polls
    #[arg(long, value_name = "SECS", default_value_t = 60, requires = "follow")]
    interval: u64,
    /// Stop after this many polls, the first audit included [default: never]
    #[arg(long, value_name = "N", requires = "follow")]
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    rounds: Option<u64>,
    /// A C2SP tlog-policy file: also check the log's cosigned checkpoint against its witnesses
    /// and quorum (docs/witness.md)
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Print JSON (with --follow: one line per round, then the report)
    #[arg(long)]
    json: bool,
}

fn parse_page(s: &str) -> Result<Page, String> {
    let (n, m) = s.split_once('/').ok_or("expected N/M, for example 1/2")?;
    let number: u32 = n.trim().parse().map_err(|_| "page number is not a number")?;
    let count: u32 = m.trim().parse().map_err(|_| "page count is not a number")?;
    if !(1..=99).contains(&count) || !(1..=count).contains(&number) {
        return Err("need 1 <= N <= M <= 99".into());
    }
    Ok(Page { count, number })
}

fn parse_kind(s: &str) -> Result<EvidenceKind, String> {
    EvidenceKind::parse(s).ok_or_else(|| "expected posted, handed or not-posted".into())
}

fn parse_line(s: &str) -> Result<(String, u64), String> {
    let (line, value) = s.split_once('=').ok_or("expected LINE=NUMBER, for example 7=1532")?;
    let value = value.trim().parse().map_err(|_| "the number is not a whole number")?;
    Ok((line.trim().to_owned(), value))
}

fn parse_location(s: &str) -> Result<CoarseLocation, String> {
    let (lat, lon) = s.split_once(',').ok_or("expected LAT,LON, for example 43.24,76.89")?;
    let lat: f64 = lat.trim().parse().map_err(|_| "latitude is not a number")?;
    let lon: f64 = lon.trim().parse().map_err(|_| "longitude is not a number")?;
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err("latitude or longitude out of range".into());
    }
    Ok(CoarseLocation {
        lat_e2: (lat * 100.0).round() as i32,
        lon_e2: (lon * 100.0).round() as i32,
    })
}

/// An error with the exit code and the stable code word scripts see.
struct Failure {
    exit: u8,
    code: &'static str,
    error: anyhow::Error,
}

/// A command used wrongly (exit 2, `usage`), with what to do instead.
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn audit_exit(a: &AuditError) -> (u8, &'static str) {
    match a {
        AuditError::BadUrl { .. } => (3, "bad_url"),
        AuditError::BadKey(_) => (3, "bad_key"),
        AuditError::Unreachable { .. } => (8, "unreachable"),
        AuditError::Http(_) => (1, "internal"),
        AuditError::Keep { .. } => (5, "storage"),
    }
}

fn classify(e: anyhow::Error) -> Failure {
    if e.downcast_ref::<UsageError>().is_some() {
        return Failure { exit: 2, code: "usage", error: e };
    }
    if let Some(m) = e.downcast_ref::<MirrorError>() {
        let (exit, code) = match m {
            MirrorError::Audit(a) => audit_exit(a),
            MirrorError::Refused { .. } | MirrorError::Invalid { .. } => {
                (11, "verification_failed")
            }
            MirrorError::KeyChanged { .. } => (10, "log_key_changed"),
            MirrorError::Unreachable { .. } => (8, "unreachable"),
            MirrorError::Io { .. } => (5, "storage"),
        };
        return Failure { exit, code, error: e };
    }
    if e.downcast_ref::<hattama_core::package::PackageError>().is_some() {
        return Failure { exit: 3, code: "not_a_package", error: e };
    }
    if let Some(a) = e.downcast_ref::<AuditError>() {
        let (exit, code) = audit_exit(a);
        return Failure { exit, code, error: e };
    }
    let (exit, code) = match e.downcast_ref::<Error>() {
        Some(Error::Media(_)) => (3, "photo_refused"),
        Some(Error::Evidence(_)) => (3, "invalid_field"),
        Some(Error::Input { .. }) => (3, "input_unreadable"),
        Some(Error::NotFound(_)) => (4, "not_found"),
        Some(Error::Ambiguous(_)) => (4, "ambiguous_id"),
        Some(Error::Store(StoreError::Locked)) => (12, "store_locked"),
        Some(Error::Store(_)) => (5, "storage"),
        Some(Error::NotDeletable { .. }) => (7, "not_deletable"),
        Some(Error::Bundle(BundleError::NotEmpty(_))) => (3, "target_not_empty"),
        Some(Error::Bundle(_)) => (5, "storage"),
        Some(Error::Thumbnail(_)) => (1, "thumbnail"),
        Some(Error::PhotoOnServer(_)) => (4, "photo_on_server"),
        Some(Error::Refused(r)) => (3, r.code()),
        Some(Error::Sync(e)) => match e {
            SyncError::NotEnrolled => (2, "not_enrolled"),
            SyncError::BadUrl(_) => (3, "bad_url"),
            SyncError::BadCa(_) => (3, "bad_ca"),
            SyncError::BadCode => (3, "bad_code"),
            SyncError::BadInvite(_) => (3, "bad_invite"),
            SyncError::Refused { .. } => (3, "refused"),
            SyncError::ReceiptInvalid { .. } => (6, "receipt_invalid"),
            SyncError::ServerKeyChanged => (6, "server_key_changed"),
            SyncError::LogKeyChanged => (6, "log_key_changed"),
            SyncError::LogInvalid(_) => (6, "log_invalid"),
            SyncError::LogForked { .. } => (10, "log_forked"),
            SyncError::LogShrank { .. } => (10, "log_shrank"),
            SyncError::Unreachable { .. } => (8, "unreachable"),
            SyncError::Protocol(_) | SyncError::Election(_) => (8, "protocol"),
            SyncError::SyncBusy => (9, "sync_busy"),
            SyncError::Http(_) => (1, "internal"),
        },
        None => match e.downcast_ref::<BundleError>() {
            Some(_) => (6, "verification_failed"),
            None => (1, "internal"),
        },
    };
    Failure { exit, code, error: e }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HATTAMA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    #[cfg(feature = "test-hooks")]
    if let Ok(point) = std::env::var("HATTAMA_TEST_PAUSE_AT") {
        hattama_core::hooks::set_pause_at(&point);
    }
    // Read before any thread starts: the local offset is only knowable then.
    let local_offset =
        time::UtcOffset::current_local_offset().map(|o| o.whole_minutes() as i32).unwrap_or(0);
    let cli = Cli::parse();
    let json = match &cli.command {
        Command::Init { json }
        | Command::Capture { json, .. }
        | Command::List { json }
        | Command::Show { json, .. }
        | Command::Delete { json, .. }
        | Command::Verify { json, .. }
        | Command::VerifyPackage { json, .. }
        | Command::Enroll { json, .. }
        | Command::Sync { json }
        | Command::Status { json }
        | Command::Rekey { json, .. }
        | Command::Wipe { json } => *json,
        Command::Audit(a) => a.json,
        Command::Mirror(a) => a.json,
        Command::Export { .. } | Command::Thumbnail { .. } | Command::NewKey => false,
    };
    let capturing = matches!(cli.command, Command::Capture { .. });
    match run(cli, local_offset) {
        Ok(code) => code,
        Err(e) => {
            let f = classify(e);
            let message = format!("{:#}", f.error);
            let alarm = match f.error.downcast_ref::<Error>() {
                Some(Error::Sync(e)) if e.is_log_alarm() => Some(e),
                _ => None,
            };
            match alarm {
                Some(e) => eprintln!("{}", alarm_text(e)),
                None => eprintln!("error: {message}"),
            }
            if let Some(Error::Sync(e)) = f.error.downcast_ref::<Error>()
                && let Some(hint) = sync_hint(e)
            {
                eprintln!("what to do: {hint}");
            }
            match f.error.downcast_ref::<Error>() {
                Some(Error::Store(StoreError::Locked)) => eprintln!(
                    "what to do: this is not the key of this store. Give the key it was created \
                     with (HATTAMA_STORE_KEY or --key-file); nothing was read or changed"
                ),
                Some(Error::Media(_) | Error::Input { .. }) if capturing => eprintln!(
                    "nothing was stored: give the photo file straight from the camera (JPEG or \
                     PNG) and capture again"
                ),
                Some(Error::Refused(_) | Error::Evidence(_)) if capturing => {
                    eprintln!("nothing was signed or stored: fix this and capture again")
                }
                _ => {}
            }
            if json {
                let mut v = json!({ "error": f.code, "message": message });
                if let Some(
                    SyncError::LogForked { old_size, new_size, .. }
                    | SyncError::LogShrank { old_size, new_size },
                ) = alarm
                {
                    v["old_size"] = json!(old_size);
                    v["new_size"] = json!(new_size);
                }
                // The server's own code word, for scripts (`code_used`, `device_revoked`, …).
                if let Some(Error::Sync(SyncError::Refused { code, status, .. })) =
                    f.error.downcast_ref::<Error>()
                {
                    v["server_error"] = json!(code);
                    v["status"] = json!(status);
                }
                println!("{v}");
            }
            ExitCode::from(f.exit)
        }
    }
}

/// What to do about a failed enrollment or sync, in words a volunteer understands.
fn sync_hint(e: &SyncError) -> Option<&'static str> {
    Some(match e {
        SyncError::Unreachable { .. } => {
            "the server cannot be reached now. Your captures are safe on this device: run \
             `hattama sync` again when you have a network (`hattama status` shows the server's \
             address)"
        }
        SyncError::NotEnrolled => {
            "enroll first, with the invite from your coordinator: `hattama enroll INVITE`"
        }
        SyncError::BadUrl(_) | SyncError::BadCode | SyncError::BadInvite(_) => {
            "give the invite exactly as your coordinator sent it (hattama://enroll?…), or the \
             server's address (https://…) and the code"
        }
        SyncError::BadCa(_) => {
            "HATTAMA_CA_FILE (or --ca-file) must name a PEM file of certificates, as your \
             coordinator gave it"
        }
        SyncError::SyncBusy => "another sync of this device is running: wait for it to finish",
        SyncError::Refused { code, .. } => match code.as_str() {
            "bad_code" => "check the code with your coordinator: every letter and digit counts",
            "code_used" => {
                "this code was already used by another device: ask your coordinator for a new one"
            }
            "device_revoked" | "device_unknown" => {
                "the server does not accept this device: ask your coordinator for a new code and \
                 enroll again; your captures stay safe on this device"
            }
            "other_election" => {
                "this store's device key is enrolled for another election, and a device key \
                 signs for one election only (so that nothing links your captures across \
                 elections): enroll with a new store, `hattama --store NEW_DIR enroll …`, which \
                 gets its own key"
            }
            _ => "tell your coordinator what the server said",
        },
        SyncError::Protocol(_) => {
            "the server answered something unexpected (a Wi-Fi login page?): check your network \
             and sync again"
        }
        _ => return None,
    })
}

/// The loud message of a log alarm, for stderr.
fn alarm_text(e: &SyncError) -> String {
    let what = match e {
        SyncError::LogForked { old_size, new_size, detail } => {
            let signed = if old_size == new_size {
                format!("It signed two different logs of {old_size} entries")
            } else {
                format!(
                    "It signed a log of {old_size} entries, then one of {new_size} entries \
                     that does not extend it"
                )
            };
            format!(
                "ALARM: the server's public log forked or was rewritten.\n  {signed} \
                 ({detail}).\n  A public log may only grow: the server, or someone with its \
                 key, changed entries it had published."
            )
        }
        SyncError::LogShrank { old_size, new_size } => format!(
            "ALARM: the server's public log shrank.\n  It signed a log of {old_size} entries, \
             then one of only {new_size}: entries it had published are gone."
        ),
        other => format!("ALARM: {other}"),
    };
    format!(
        "{what}\n  Nothing was marked receipted, and this device will not sync with this server \
         again.\n  Keep this store: it holds both signed checkpoints as evidence \
         (`hattama status --json`).\n  Tell your coordinators."
    )
}

fn store_dir(cli: &Cli) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &cli.store {
        return Ok(dir.clone());
    }
    let dirs = directories::ProjectDirs::from("kz", "Hattama", "hattama")
        .context("no home directory; pass --store DIR")?;
    Ok(dirs.data_dir().to_owned())
}

/// Reads a store key from a file: 64 hex digits (white space around them ignored).
fn key_from_file(path: &Path, store: &Path) -> anyhow::Result<StoreKey> {
    let parent = |p: &Path| p.parent().and_then(|d| std::fs::canonicalize(d).ok());
    if let (Some(file_dir), Ok(store)) = (parent(path), std::fs::canonicalize(store))
        && file_dir.starts_with(&store)
    {
        anyhow::bail!(UsageError(format!(
            "the key file {} is inside the store: keep it elsewhere (whoever holds the store \
             must not find its key beside it)",
            path.display()
        )));
    }
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the key file {}", path.display()))?,
    );
    StoreKey::from_hex(&text).ok_or_else(|| {
        UsageError(format!(
            "the key file {} does not hold a key: it must hold 64 hex digits (`hattama new-key`)",
            path.display()
        ))
        .into()
    })
}

/// The store key: `--key-file`, else `HATTAMA_STORE_KEY`.
fn store_key(key_file: Option<&Path>, store: &Path) -> anyhow::Result<StoreKey> {
    if let Some(path) = key_file {
        return key_from_file(path, store);
    }
    let Some(text) = std::env::var_os("HATTAMA_STORE_KEY") else {
        anyhow::bail!(UsageError(
            "no store key: set HATTAMA_STORE_KEY to the store's key (64 hex digits) or pass \
             --key-file FILE; for a new store, make one with `hattama new-key` and keep it \
             outside the store"
                .into()
        ));
    };
    let text = zeroize::Zeroizing::new(text.to_string_lossy().into_owned());
    StoreKey::from_hex(&text).ok_or_else(|| {
        UsageError("HATTAMA_STORE_KEY must be 64 hex digits (`hattama new-key`)".into()).into()
    })
}

fn open(dir: &Path, key_file: Option<&Path>, ca_file: Option<&Path>) -> anyhow::Result<Client> {
    let key = store_key(key_file, dir)?;
    let mut config = ClientConfig { limits: MediaLimits::default(), ..ClientConfig::default() };
    if let Some(file) = ca_file {
        let pem = std::fs::read(file)
            .map_err(|e| Error::Sync(SyncError::BadCa(format!("{}: {e}", file.display()))))?;
        config.sync.extra_ca_pem = Some(pem);
    }
    Ok(Client::open(dir, &key, config)?)
}

fn print(json: bool, value: &Value, human: impl FnOnce() -> String) {
    if json {
        println!("{value}");
    } else {
        println!("{}", human());
    }
}

fn time_text(ms: u64, offset_min: i32) -> String {
    let offset =
        time::UtcOffset::from_whole_seconds(offset_min * 60).unwrap_or(time::UtcOffset::UTC);
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(|t| t.to_offset(offset))
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

fn record_json(r: &CaptureRecord) -> Value {
    let mut v = json!({
        "id": r.id.to_hex(),
        "seq": r.seq,
        "election": r.election,
        "precinct": r.precinct,
        "kind": r.kind.as_str(),
        "page": format!("{}/{}", r.page_number, r.page_count),
        "captured_at": time_text(r.captured_at_ms, r.utc_offset_min),
        "captured_at_ms": r.captured_at_ms,
        "state": r.state.name(),
        "witnessed": r.is_witnessed(),
        "removed_bytes": r.removed_bytes,
    });
    if let CaptureState::Rejected { reason } = &r.state {
        v["reason"] = json!(reason);
        v["advice"] = json!(refusal_advice(split_reason(reason).0));
    }
    if let Some(review) = &r.review {
        v["review"] = review_json(review);
    }
    v["needs_action"] = json!(r.needs_action());
    if let Some((hash, bytes, media_type)) = &r.photo {
        v["photo_sha256"] = json!(hash.to_hex());
        v["photo_bytes"] = json!(bytes);
        v["media_type"] = json!(media_type.as_str());
    }
    // Where the photo is: `device`, or `server` once removed after its verified receipt.
    if r.photo.is_some() {
        v["photo_on"] = json!(if r.photo_removed_at_ms.is_some() { "server" } else { "device" });
    }
    if let Some(at) = r.photo_removed_at_ms {
        v["photo_removed_at_ms"] = json!(at);
    }
    v
}

/// What `show` and `export` say about a photo removed from this device after its receipt.
fn photo_on_server_text(r: &CaptureRecord, e: Option<&Enrollment>) -> Option<String> {
    r.photo_removed_at_ms?;
    let (sha, _, _) = r.photo.as_ref()?;
    let place = match e {
        Some(e) => format!("{}/photos/{}", e.server_url, sha.to_hex()),
        None => format!("the server, as photos/{}", sha.to_hex()),
    };
    Some(format!(
        "the photo is on the server only ({place}): it was removed from this device after the          server's verified receipt, as the election requires"
    ))
}

fn record_line(r: &CaptureRecord) -> String {
    format!(
        "{}  #{:<4} {:<10} {}/{}  p{}/{}  {:<9} {}",
        &r.id.to_hex()[..12],
        r.seq,
        if r.is_witnessed() { "witnessed" } else { r.state.name() },
        r.election,
        r.precinct,
        r.page_number,
        r.page_count,
        r.kind.as_str(),
        time_text(r.captured_at_ms, r.utc_offset_min),
    )
}

fn run(cli: Cli, local_offset: i32) -> anyhow::Result<ExitCode> {
    if let Command::Audit(args) = cli.command {
        return run_audit(args); // needs no store
    }
    if let Command::Mirror(args) = cli.command {
        return run_mirror(args); // needs no store
    }
    if let Command::VerifyPackage { file, receipt_key, json } = cli.command {
        return run_verify_package(&file, receipt_key.as_deref(), json); // needs no store
    }
    if let Command::NewKey = cli.command {
        println!("{}", hex::encode(StoreKey::generate().as_bytes()));
        return Ok(ExitCode::SUCCESS);
    }
    let dir = store_dir(&cli)?;
    let (key_file, ca_file) = (cli.key_file.clone(), cli.ca_file.clone());
    let open = |dir: &Path| open(dir, key_file.as_deref(), ca_file.as_deref());
    match cli.command {
        Command::Rekey { new_key_file, json } => {
            let client = open(&dir)?;
            let new = key_from_file(&new_key_file, &dir)?;
            client.rekey(&new)?;
            let v = json!({ "rekeyed": true });
            print(json, &v, || {
                format!("the store now opens with the key in {}", new_key_file.display())
            });
        }
        Command::Wipe { json } => {
            let wiped = hattama_core::store::wipe(&dir).map_err(Error::from)?;
            let v = json!({
                "wiped": true,
                "erased_ms": wiped.erased_after.as_secs_f64() * 1e3,
                "removed_ms": wiped.removed_after.as_secs_f64() * 1e3,
            });
            print(json, &v, || {
                format!(
                    "wiped {}: unreadable after {:.1} ms, removed after {:.1} ms",
                    dir.display(),
                    wiped.erased_after.as_secs_f64() * 1e3,
                    wiped.removed_after.as_secs_f64() * 1e3
                )
            });
        }
        Command::Init { json } => {
            let client = open(&dir)?;
            let key = client.device_key();
            let v = json!({
                "store": dir.display().to_string(),
                "device_key": key.to_hex(),
                "fingerprint": key.fingerprint(),
            });
            print(json, &v, || {
                format!(
                    "store {}\ndevice key {} (fingerprint {})",
                    dir.display(),
                    key.to_hex(),
                    key.fingerprint()
                )
            });
        }
        Command::Capture {
            photo,
            election,
            precinct,
            page,
            kind,
            note,
            lines,
            location,
            utc_offset,
            json,
        } => {
            let client = open(&dir)?;
            let transcription =
                (!lines.is_empty()).then(|| lines.into_iter().collect::<BTreeMap<String, u64>>());
            let request = CaptureRequest {
                election,
                precinct,
                kind,
                page,
                note,
                transcription,
                location,
                utc_offset_min: utc_offset.unwrap_or(local_offset),
            };
            let (_, checked) = client.check_request(&request)?;
            if !checked {
                eprintln!(
                    "warning: this device is not enrolled yet, so the election and polling \
                     station could not be checked; enroll (`hattama enroll INVITE`) before you \
                     leave the station if you can"
                );
            }
            let captured = client.capture_file(&photo, &request)?;
            let m = &captured.manifest;
            let v = json!({
                "id": captured.id.to_hex(),
                "seq": captured.seq,
                "election": m.election,
                "precinct": m.precinct,
                "checked": checked,
                "photo_sha256": m.photo.sha256.to_hex(),
                "photo_bytes": m.photo.bytes,
                "removed_bytes": captured.removed_bytes,
                "width": m.photo.width,
                "height": m.photo.height,
                "orientation": m.photo.orientation,
            });
            print(json, &v, || {
                format!(
                    "captured {} (#{}) for {}/{}, {}×{} {} bytes, {} bytes of metadata \
                     removed; safe on this device, `hattama sync` sends it",
                    captured.id,
                    captured.seq,
                    m.election,
                    m.precinct,
                    m.photo.width,
                    m.photo.height,
                    m.photo.bytes,
                    captured.removed_bytes
                )
            });
        }
        Command::List { json } => {
            let client = open(&dir)?;
            let records = client.list()?;
            let v = Value::Array(records.iter().map(record_json).collect());
            print(json, &v, || {
                if records.is_empty() {
                    "no captures".to_owned()
                } else {
                    records.iter().map(record_line).collect::<Vec<_>>().join("\n")
                }
            });
        }
        Command::Show { id, json } => {
            let client = open(&dir)?;
            let detail = client.detail(&id)?;
            let mut v = record_json(&detail.record);
            let on_server = photo_on_server_text(&detail.record, client.enrollment()?.as_ref());
            if let Some(text) = &on_server {
                v["photo"] = json!(text);
            }
            if let Some(signed) = &detail.signed {
                v["manifest"] = serde_json::from_slice(&signed.canonical)?;
                v["signature"] = json!(hex::encode(signed.signature));
                v["device_fingerprint"] = json!(signed.manifest.device_key.fingerprint());
            }
            if let Some((receipt, received_at_ms)) = client.receipt(&id)? {
                v["receipt"] = serde_json::to_value(&receipt)?;
                v["receipt_received_at_ms"] = json!(received_at_ms);
                // A receipt stays evidence that the server signed it, but its server's log
                // later misbehaved: say so next to it.
                if let Some(alarm) = client.status()?.log_alarm {
                    eprintln!("{}", alarm_line(&alarm));
                    v["log_alarm"] = alarm_json(&alarm);
                }
            }
            print(json, &v, || {
                let pretty = serde_json::to_string_pretty(&v).unwrap_or_default();
                match on_server {
                    Some(text) => format!("{pretty}\n{text}"),
                    None => pretty,
                }
            });
        }
        Command::Delete { id, json } => {
            let client = open(&dir)?;
            let record = client.delete(&id)?;
            print(json, &record_json(&record), || {
                format!(
                    "deleted {} (#{} stays as a gap in this device's chain)",
                    record.id, record.seq
                )
            });
        }
        Command::Export { id, dir: target } => {
            let client = open(&dir)?;
            if client.export(&id, &target)? {
                println!("exported to {}", target.display());
            } else {
                let record = client.resolve(&id)?;
                let server = client.enrollment()?.map(|e| e.server_url);
                println!(
                    "exported to {} without the photo: {}\nverify it with the server's copy: \
                     hattama verify {} --server {}",
                    target.display(),
                    photo_on_server_text(&record, None).unwrap_or_default(),
                    target.display(),
                    server.as_deref().unwrap_or("URL")
                );
            }
        }
        Command::Verify { bundle: path, photo, server, json } => {
            let limits = MediaLimits::default();
            let signed = if let Some(file) = photo {
                let bytes = std::fs::read(&file)
                    .map_err(|source| Error::Input { path: file.display().to_string(), source })?;
                bundle::verify_with_photo(&path, &bytes, &limits)?
            } else if let Some(base) = server {
                let manifest = bundle::read_manifest(&path)?;
                let info = &manifest.manifest.photo;
                let mut config = ClientConfig::default().sync;
                if let Some(file) = &ca_file {
                    let pem = std::fs::read(file).map_err(|e| {
                        Error::Sync(SyncError::BadCa(format!("{}: {e}", file.display())))
                    })?;
                    config.extra_ca_pem = Some(pem);
                }
                let bytes = hattama_core::sync::fetch_photo(
                    &config,
                    &base,
                    &info.sha256,
                    info.bytes.min(limits.max_bytes),
                )
                .map_err(Error::from)?;
                bundle::verify_with_photo(&path, &bytes, &limits)?
            } else {
                let signed = bundle::read_manifest(&path)?;
                let verified = bundle::verify(&path, &limits);
                if !path.join(bundle::photo_file_name(&signed)).exists() {
                    // Still the verification's failure (step 5), with what to do about it.
                    verified.map_err(|e| {
                        anyhow::Error::from(e).context(
                            "the bundle has no photo file (a photo removed from the phone after \
                             the server's receipt?): verify it with the server's copy, --server \
                             URL (the server or a mirror) or --photo FILE",
                        )
                    })?
                } else {
                    verified?
                }
            };
            let m = &signed.manifest;
            let v = json!({
                "valid": true,
                "id": signed.hash().to_hex(),
                "device_key": m.device_key.to_hex(),
                "device_fingerprint": m.device_key.fingerprint(),
                "seq": m.seq,
                "election": m.election,
                "precinct": m.precinct,
                "photo_sha256": m.photo.sha256.to_hex(),
            });
            print(json, &v, || {
                format!(
                    "valid: capture {} by device {} (#{}), {}/{}, photo {}",
                    signed.hash(),
                    m.device_key.fingerprint(),
                    m.seq,
                    m.election,
                    m.precinct,
                    m.photo.sha256
                )
            });
        }
        Command::Thumbnail { id, out } => {
            let client = open(&dir)?;
            let thumb = client.thumbnail(&id)?;
            std::fs::write(&out, thumb)
                .with_context(|| format!("cannot write {}", out.display()))?;
        }
        Command::Enroll { url, code, json } => {
            let client = open(&dir)?;
            let e = if hattama_core::sync::is_invite(&url) {
                if !code.is_empty() {
                    anyhow::bail!(UsageError(
                        "an invite already holds its code: give the invite alone".into()
                    ));
                }
                client.enroll_invite(&url)?
            } else if code.is_empty() {
                anyhow::bail!(UsageError(
                    "give the invite (hattama://enroll?server=…&code=…) as it was printed, or \
                     the server's URL and the code"
                        .into()
                ));
            } else {
                client.enroll(&url, &code.join(" "))?
            };
            print(json, &enrollment_json(&e), || {
                format!(
                    "enrolled with {} for election {}: precincts {} (receipt key {}, log {})",
                    e.server_url,
                    e.election.id,
                    e.precincts.join(", "),
                    e.receipt_key.fingerprint(),
                    e.log_key.as_ref().map_or("not pinned", |k| k.origin.as_str())
                )
            });
        }
        Command::Sync { json } => {
            let client = open(&dir)?;
            let line = ProgressLine::new(std::io::stderr().is_terminal());
            let summary = client.sync(&line, &CancelToken::new());
            line.finish();
            let summary = summary?;
            let enrollment = client.enrollment()?;
            print(json, &summary_json(&summary), || {
                let log = match summary.log_size {
                    Some(n) => format!("; log checkpoint of {n} entries verified"),
                    None => String::new(),
                };
                let mut out = format!(
                    "receipted {}, rejected {}, remaining {} ({} bytes sent){log}",
                    summary.receipted, summary.rejected, summary.remaining, summary.bytes_sent
                );
                if let Some(n) = summary.witnessed_size {
                    out += &format!("; witnessed up to {n} log entries");
                }
                if let Some(problem) = &summary.witness_problem {
                    out += &format!("\nNOT WITNESSED the server's cosigned checkpoint: {problem}");
                }
                for r in &summary.refused {
                    let (code, message) = split_reason(&r.reason);
                    out += &format!(
                        "\nREFUSED  #{} {}: the server refused it ({code}: {message})\n         \
                         what to do: {}",
                        r.seq,
                        &r.id.to_hex()[..12],
                        refusal_advice(code)
                    );
                }
                for r in &summary.reviewed {
                    let at = station(enrollment.as_ref(), &r.precinct);
                    out += &format!("\n{}", review_line(r.seq, &r.id, &at, &r.review));
                }
                if summary.remaining > 0 {
                    out += &format!(
                        "\n{} captures are still waiting, safe on this device: run `hattama \
                         sync` again",
                        summary.remaining
                    );
                }
                out
            });
        }
        Command::Audit(args) => return run_audit(args),
        Command::Mirror(args) => return run_mirror(args),
        Command::NewKey | Command::VerifyPackage { .. } => {}
        Command::Status { json } => {
            let client = open(&dir)?;
            let status = client.status()?;
            let enrollment = client.enrollment()?;
            let records = client.list()?;
            let mut v = status_json(&status, enrollment.as_ref());
            v["waiting"] = json!(records.iter().filter(|r| r.state.is_pending()).count());
            v["needs_action"] = Value::Array(
                records.iter().filter(|r| r.needs_action()).map(record_json).collect(),
            );
            print(json, &v, || status_text(&status, enrollment.as_ref(), &records));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn enrollment_json(e: &Enrollment) -> Value {
    json!({
        "server": e.server_url,
        "device_id": e.device_id.to_hex(),
        "receipt_key": e.receipt_key.to_hex(),
        "log_key": e.log_key.as_ref().map(|k| k.vkey.clone()),
        "precincts": e.precincts,
        "election": e.election.id,
        "witnesses": e.witness_policy.as_ref().map(|p| {
            p.witnesses().iter().map(|w| w.name.clone()).collect::<Vec<_>>()
        }),
    })
}

fn summary_json(s: &SyncSummary) -> Value {
    json!({
        "receipted": s.receipted,
        "rejected": s.rejected,
        "remaining": s.remaining,
        "bytes_sent": s.bytes_sent,
        "cancelled": s.cancelled,
        "log_size": s.log_size,
        "witnessed_size": s.witnessed_size,
        "witness_problem": s.witness_problem,
        "refused": s.refused.iter().map(|r| {
            let (code, message) = split_reason(&r.reason);
            json!({
                "id": r.id.to_hex(),
                "seq": r.seq,
                "code": code,
                "message": message,
                "advice": refusal_advice(code),
            })
        }).collect::<Vec<_>>(),
        "reviewed": s.reviewed.iter().map(|r| {
            let mut v = review_json(&r.review);
            v["id"] = json!(r.id.to_hex());
            v["seq"] = json!(r.seq);
            v["precinct"] = json!(r.precinct);
            v
        }).collect::<Vec<_>>(),
    })
}

/// A stored rejection reason (`code: message`) as its code word and message.
fn split_reason(reason: &str) -> (&str, &str) {
    reason.split_once(": ").unwrap_or((reason, ""))
}

/// What an observer can do about a capture the server refused, by the server's code word.
fn refusal_advice(code: &str) -> &'static str {
    match code {
        "precinct_not_assigned" => {
            "this device is not registered for that polling station. Ask your coordinator for \
             an enrollment code for it, enroll with it (`hattama enroll INVITE`), then take the \
             photo again"
        }
        "unknown_precinct" | "unknown_election" => {
            "the server has no such election or polling station. Take the photo again for your \
             station (its number is on the door) and the election you enrolled for"
        }
        "body_too_large" => {
            "the photo is too large for the server. Take it again at a lower resolution"
        }
        "photo_refused" | "photo_mismatch" | "length_mismatch" | "bad_manifest"
        | "bad_signature" => {
            "the server could not accept this photo. Take the photo again; if that one is \
             refused too, tell your coordinator"
        }
        _ => "tell your coordinator, and take the photo again if you can",
    }
}

/// What an observer can do about a coordinator's rejection, by its reason.
fn review_advice(reason: Option<&str>) -> &'static str {
    match reason {
        Some("unreadable") => {
            "the coordinators cannot read the photo. Take it again while you are at the \
             station: closer, sharp, well lit, the whole protocol in the frame"
        }
        Some("not_a_protocol") => {
            "the photo does not show the result protocol. Photograph the protocol posted at the \
             station"
        }
        Some("wrong_precinct") => {
            "the photo shows another station's protocol. Photograph your station's protocol \
             (check the number on it)"
        }
        Some("duplicate") => {
            "the same photo was sent before: nothing to do unless you have a better one"
        }
        _ => "take the photo again if you can",
    }
}

fn review_json(r: &Review) -> Value {
    let mut v = json!({
        "decision": r.kind.as_str(),
        "reason": r.reason,
        "decided_at": time_text(r.decided_at_ms, 0),
        "decided_at_ms": r.decided_at_ms,
    });
    if r.kind == DecisionKind::Rejected {
        v["advice"] = json!(review_advice(r.reason.as_deref()));
    }
    v
}

/// A station as an observer knows it: its id and its number on the door, when known.
fn station(e: Option<&Enrollment>, id: &str) -> String {
    match e.and_then(|e| e.election.precinct(id)) {
        Some(p) => format!("{id} No. {}", p.number),
        None => id.to_owned(),
    }
}

/// One line (two for a rejection) about a capture's review decision.
fn review_line(seq: u64, id: &Sha256Hash, precinct: &str, r: &Review) -> String {
    let what = format!("#{seq} {} ({precinct})", &id.to_hex()[..12]);
    match r.kind {
        DecisionKind::Accepted => format!("ACCEPTED {what}: the coordinators accepted the photo"),
        DecisionKind::Flagged => format!("REVIEW   {what}: a supervisor is looking at the photo"),
        DecisionKind::Rejected => format!(
            "RETAKE   {what}: the coordinators rejected the photo ({})\n         what to do: {}",
            r.reason.as_deref().unwrap_or("no reason given"),
            review_advice(r.reason.as_deref())
        ),
    }
}

fn alarm_json(a: &LogAlarm) -> Value {
    json!({
        "kind": a.kind.name(),
        "old_size": a.old_size,
        "new_size": a.new_size,
        "detail": a.detail,
        "raised_at": time_text(a.raised_at_ms, 0),
        "raised_at_ms": a.raised_at_ms,
        "old_checkpoint": String::from_utf8_lossy(&a.old_checkpoint),
        "new_checkpoint": String::from_utf8_lossy(&a.new_checkpoint),
    })
}

fn alarm_line(a: &LogAlarm) -> String {
    format!(
        "ALARM    the server's public log {} ({} then {} entries: {}), raised {}; syncs stop; \
         `status --json` shows both signed checkpoints",
        a.kind.name(),
        a.old_size,
        a.new_size,
        a.detail,
        time_text(a.raised_at_ms, 0)
    )
}

fn status_json(s: &SyncStatus, e: Option<&Enrollment>) -> Value {
    let c = &s.counts;
    json!({
        "enrolled": e.is_some(),
        "server": s.server_url,
        "device_id": s.device_id.map(|d| d.to_hex()),
        "election": e.map(|e| e.election.id.clone()),
        "precincts": e.map(|e| e.precincts.clone()),
        "counts": {
            "captured": c.captured,
            "queued": c.queued,
            "uploading": c.uploading,
            "receipted": c.receipted,
            "witnessed": c.witnessed,
            "rejected": c.rejected,
            "deleted": c.deleted,
        },
        "witness_policy": s.witness_policy,
        "witnessed_checkpoint": s.witnessed_checkpoint.as_ref().map(|c| json!({
            "size": c.size,
            "cosignatures": c.cosignatures.iter().map(|(w, t)| json!({
                "witness": w,
                "time": t,
            })).collect::<Vec<_>>(),
            "seen_at": time_text(c.seen_at_ms, 0),
            "seen_at_ms": c.seen_at_ms,
        })),
        "witness_problem": s.witness_problem,
        "last_sync_at": s.last_sync_at_ms.map(|ms| time_text(ms, 0)),
        "last_sync_at_ms": s.last_sync_at_ms,
        "last_sync_error": s.last_sync_error,
        "next_attempt_at_ms": s.next_attempt_at_ms,
        "running": s.running,
        "log_key": s.log_key,
        "log_checkpoint": s.log_checkpoint.as_ref().map(|c| json!({
            "size": c.size,
            "root": BASE64.encode(c.root),
            "seen_at": time_text(c.seen_at_ms, 0),
            "seen_at_ms": c.seen_at_ms,
        })),
        "log_alarm": s.log_alarm.as_ref().map(alarm_json),
    })
}

fn status_text(s: &SyncStatus, e: Option<&Enrollment>, records: &[CaptureRecord]) -> String {
    let c = &s.counts;
    let mut out = s.log_alarm.as_ref().map(|a| alarm_line(a) + "\n").unwrap_or_default();
    out += &match (&s.server_url, e) {
        (Some(url), Some(e)) => format!(
            "server   {url}\nelection {} (stations {})\n",
            e.election.id,
            e.precincts.iter().map(|id| station(Some(e), id)).collect::<Vec<_>>().join(", ")
        ),
        _ => "server   not enrolled\n".to_owned(),
    };
    if s.server_url.is_some() {
        out.push_str(&match (&s.log_key, &s.log_checkpoint) {
            (None, _) => "log      not checked: enrolled before the server had a public log; \
                          enroll again (the same code works) to pin its key\n"
                .to_owned(),
            (Some(_), None) => "log      key pinned, no checkpoint verified yet\n".to_owned(),
            (Some(_), Some(cp)) => format!(
                "log      checkpoint of {} entries verified {}\n",
                cp.size,
                time_text(cp.seen_at_ms, 0)
            ),
        });
    }
    if s.server_url.is_some() {
        out.push_str(&witness_status_text(s));
    }
    out.push_str(&format!(
        "captures {} captured, {} queued, {} uploading, {} receipted ({} of them witnessed), {} \
         rejected, {} deleted\n",
        c.captured, c.queued, c.uploading, c.receipted, c.witnessed, c.rejected, c.deleted
    ));
    out.push_str(&plain_status(records, e));
    out.push_str(&match (s.last_sync_at_ms, &s.last_sync_error) {
        (None, _) => "last sync never".to_owned(),
        (Some(ms), None) => format!("last sync {} ok", time_text(ms, 0)),
        (Some(ms), Some(err)) => format!("last sync {} failed: {err}", time_text(ms, 0)),
    });
    if s.running {
        out.push_str("\na sync is running now");
    }
    out
}

/// The witnesses line of `status`: whether the election has a policy, the newest witnessed
/// checkpoint (who cosigned it and when), and why the last one offered was refused.
fn witness_status_text(s: &SyncStatus) -> String {
    if !s.witness_policy {
        return "witness  none: the election package names no witnesses\n".to_owned();
    }
    let mut out = match &s.witnessed_checkpoint {
        None => "witness  no checkpoint with a quorum of witnesses yet: receipted captures are \
                 not witnessed yet (the next sync asks again)\n"
            .to_owned(),
        Some(c) => format!(
            "witness  checkpoint of {} entries witnessed (quorum met) by {}\n",
            c.size,
            c.cosignatures
                .iter()
                .map(|(w, t)| format!("{w} at {}", time_text(t.saturating_mul(1000), 0)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    if let Some(p) = &s.witness_problem {
        out += &format!("NOT WITNESSED the server's last cosigned checkpoint: {p}\n");
    }
    out
}

/// The captures as an observer asks about them: which are safe here and waiting, which are on
/// the server, which need the observer now (and what to do).
fn plain_status(records: &[CaptureRecord], e: Option<&Enrollment>) -> String {
    let waiting = records.iter().filter(|r| r.state.is_pending()).count();
    let receipted: Vec<&CaptureRecord> =
        records.iter().filter(|r| r.state == CaptureState::Receipted).collect();
    let decided = |k: DecisionKind| {
        receipted.iter().filter(|r| r.review.as_ref().is_some_and(|v| v.kind == k)).count()
    };
    let mut out = String::new();
    if waiting > 0 {
        out += &format!(
            "waiting  {waiting} safe on this device, not sent yet: run `hattama sync` when you \
             have a network\n"
        );
    }
    if !receipted.is_empty() {
        let (accepted, rejected) =
            (decided(DecisionKind::Accepted), decided(DecisionKind::Rejected));
        let open = receipted.len() - accepted - rejected;
        out += &format!(
            "sent     {} on the server with its receipt: {accepted} accepted by the \
             coordinators, {rejected} rejected, {open} not decided yet\n",
            receipted.len()
        );
    }
    let act: Vec<&CaptureRecord> = records.iter().filter(|r| r.needs_action()).collect();
    if act.is_empty() {
        out.push_str("action   none needed\n");
        return out;
    }
    out +=
        &format!("ACTION   {} need you now, while you may still be at the station:\n", act.len());
    for r in act {
        match (&r.state, &r.review) {
            (CaptureState::Rejected { reason }, _) => {
                let (code, message) = split_reason(reason);
                out += &format!(
                    "REFUSED  #{} {} ({}): the server refused it ({code}: {message})\n         \
                     what to do: {}\n",
                    r.seq,
                    &r.id.to_hex()[..12],
                    station(e, &r.precinct),
                    refusal_advice(code)
                );
            }
            (_, Some(review)) => {
                out += &review_line(r.seq, &r.id, &station(e, &r.precinct), review);
                out.push('\n');
            }
            _ => {}
        }
    }
    out
}

/// A one-line progress display on stderr (carriage return, no newline), only on a terminal.
struct ProgressLine {
    tty: bool,
    state: Mutex<ProgressState>,
}

#[derive(Default)]
struct ProgressState {
    pending: u64,
    done: u64,
    width: usize,
}

impl ProgressLine {
    fn new(tty: bool) -> Self {
        Self { tty, state: Mutex::new(ProgressState::default()) }
    }

    fn show(state: &mut ProgressState, line: &str) {
        let width = line.chars().count();
        let pad = state.width.saturating_sub(width);
        state.width = width;
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}{}", " ".repeat(pad));
        let _ = err.flush();
    }

    /// Ends the line, if one was drawn.
    fn finish(&self) {
        if let Ok(state) = self.state.lock()
            && self.tty
            && state.width > 0
        {
            eprintln!();
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

impl SyncListener for ProgressLine {
    fn on_progress(&self, progress: SyncProgress) {
        if !self.tty {
            return;
        }
        let Ok(mut state) = self.state.lock() else { return };
        let line = match progress {
            SyncProgress::Started { pending, bytes } => {
                state.pending = pending;
                format!("{pending} captures to send ({})", mib(bytes))
            }
            SyncProgress::Capture(p) => {
                if matches!(p.state, CaptureState::Receipted | CaptureState::Rejected { .. }) {
                    state.done += 1;
                }
                format!(
                    "[{}/{}] #{} {} {} {} / {}",
                    state.done,
                    state.pending,
                    p.seq,
                    &p.id.to_hex()[..12],
                    p.state.name(),
                    mib(p.sent),
                    mib(p.total)
                )
            }
            SyncProgress::Retrying { seq, attempt, delay_ms, reason, .. } => {
                format!("#{seq}: {reason}; retry {attempt} in {:.1} s", delay_ms as f64 / 1000.0)
            }
            SyncProgress::Finished(_) => return,
        };
        Self::show(&mut state, &line);
    }
}

// ---------------------------------------------------------------------------------------------
// `hattama audit`

/// Audits a log once, or follows it; exit 0 when clean, 11 when problems were found.
/// `hattama verify-package`: exit 0 when every file verifies, 11 when one does not (each named
/// with what is wrong), 2 when the file cannot be read as a package at all.
fn run_verify_package(
    path: &Path,
    receipt_key: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let pinned = match receipt_key {
        None => None,
        Some(k) => Some(hattama_core::evidence::DeviceKey(
            hattama_core::evidence::parse_lower_hex::<32>(k.trim()).ok_or_else(|| {
                UsageError(
                    "--receipt-key: give the server's receipt key as 64 lowercase hex \
                            digits (the election's data page shows it)"
                        .into(),
                )
            })?,
        )),
    };
    let file = std::fs::File::open(path)
        .map_err(|source| Error::Input { path: path.display().to_string(), source })?;
    let mut file = std::io::BufReader::new(file);
    let is_set = hattama_core::package::set::is_set(&mut file)?;
    file.seek(std::io::SeekFrom::Start(0))
        .map_err(|source| Error::Input { path: path.display().to_string(), source })?;
    if is_set {
        return verify_set_package(file, pinned.as_ref(), json);
    }
    let report = hattama_core::package::verify(file, &MediaLimits::default(), pinned.as_ref())?;
    let station = report.manifest.as_ref().map(|m| &m.station);
    if json {
        let files: Vec<_> = report
            .files
            .iter()
            .map(|f| json!({ "path": f.path, "ok": f.problem.is_none(), "proves": f.proves, "problem": f.problem }))
            .collect();
        println!("{}", json!({ "valid": report.ok(), "station": station, "files": files }));
    } else {
        for f in &report.files {
            match &f.problem {
                None => println!("ok    {}: {}", f.path, f.proves),
                Some(p) => println!("FAIL  {}: {p}", f.path),
            }
        }
        match (report.ok(), station) {
            (true, Some(s)) => println!(
                "valid: the evidence package of station {} ({}), election {}: every file verifies",
                s.number, s.region, s.election
            ),
            _ => println!(
                "NOT VALID: {} file(s) above do not verify; the package was changed or damaged \
                 after the server made it",
                report.problems().count()
            ),
        }
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(11) })
}

/// `hattama verify-package` of a set of stations: each station's package, the set's own files
/// and the summary's totals recomputed from the stations (docs/evidence-package.md 6).
fn verify_set_package(
    file: impl std::io::Read + std::io::Seek,
    pinned: Option<&hattama_core::evidence::DeviceKey>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let report = hattama_core::package::set::verify_set(file, &MediaLimits::default(), pinned)?;
    let set = report.manifest.as_ref().map(|m| {
        json!({ "election": m.election, "selection": m.selection, "stations": m.stations.len() })
    });
    if json {
        let files: Vec<_> = report
            .files
            .iter()
            .map(|f| json!({ "path": f.path, "ok": f.problem.is_none(), "proves": f.proves, "problem": f.problem }))
            .collect();
        println!("{}", json!({ "valid": report.ok(), "set": set, "files": files }));
    } else {
        for f in &report.files {
            match &f.problem {
                None => println!("ok    {}: {}", f.path, f.proves),
                Some(p) => println!("FAIL  {}: {p}", f.path),
            }
        }
        match (report.ok(), &report.summary) {
            (true, Some(s)) => println!(
                "valid: the evidence package of a set of {} stations of election {} ({}): every \
                 file and every station's package verifies",
                s.stations, s.election, s.description.en
            ),
            _ => println!(
                "NOT VALID: {} file(s) above do not verify; the package was changed or damaged \
                 after the server made it",
                report.problems().count()
            ),
        }
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(11) })
}

fn run_audit(a: AuditArgs) -> anyhow::Result<ExitCode> {
    let key_text = match (&a.key, &a.key_file) {
        (Some(k), _) => k.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| AuditError::BadKey(format!("cannot read {}: {e}", f.display())))?,
        (None, None) => return Err(AuditError::BadKey("give --key or --key-file".into()).into()),
    };
    let mut config = AuditConfig::new(&a.url, hattama_core::audit::parse_log_key(&key_text)?);
    if a.photos {
        config.evidence_url = Some(
            a.evidence_url
                .clone()
                .unwrap_or_else(|| hattama_core::audit::default_evidence_url(&a.url)),
        );
    }
    let policy = match &a.policy {
        Some(f) => {
            let text = std::fs::read(f)
                .map_err(|e| AuditError::BadKey(format!("cannot read {}: {e}", f.display())))?;
            Some(
                hattama_core::witness::Policy::parse(&text)
                    .map_err(|e| AuditError::BadKey(format!("{}: {e}", f.display())))?,
            )
        }
        None => None,
    };
    let mut auditor = Auditor::new(config)?;
    let rounds = if a.follow { a.rounds.unwrap_or(u64::MAX) } else { 1 };
    for n in 1..=rounds {
        if n > 1 {
            std::thread::sleep(std::time::Duration::from_secs(a.interval));
        }
        match auditor.round() {
            Ok(round) if a.follow => {
                if a.json {
                    let mut v = serde_json::to_value(&round)?;
                    v["round"] = json!(n);
                    v["problems"] = problems_json(&round.problems);
                    println!("{v}");
                } else {
                    println!("{}", round_text(n, &round));
                }
                let alarm = |p: &Problem| {
                    matches!(p, Problem::Fork { .. } | Problem::Shrank { .. })
                        || matches!(p, Problem::Inconsistent { .. })
                };
                if round.problems.iter().any(alarm) {
                    eprintln!("ALARM: the log at {} forked, shrank or was rewritten", a.url);
                }
            }
            Ok(_) => {}
            // Following: a network failure skips this round (the first must succeed).
            Err(e) if a.follow && n > 1 => eprintln!("round {n}: {e}"),
            Err(e) => return Err(e.into()),
        }
    }
    let report = auditor.report();
    let witnessed = match (&policy, hattama_core::log::hash_from_base64(&report.root)) {
        (Some(p), Some(root)) => Some(
            reqwest::blocking::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .map_err(|e| anyhow::anyhow!("HTTP client: {e}"))
                .and_then(|http| {
                    hattama_core::witness::audit_cosigned(&http, &a.url, p, report.size, root)
                        .map_err(|e| anyhow::anyhow!(e))
                }),
        ),
        _ => None,
    };
    // A cosigned checkpoint that is not a prefix of the audited tree, or whose signatures do not
    // verify, is a problem; one without a quorum is only "not witnessed".
    let witness_problem = match &witnessed {
        Some(Ok(Some(w))) => w.consistent == Some(false),
        Some(Err(_)) => true,
        _ => false,
    };
    let witness_text = witnessed.as_ref().map(witness_text);
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["problems"] = problems_json(&report.problems);
        match &witnessed {
            Some(Ok(w)) => v["witnessed"] = json!(w),
            Some(Err(e)) => v["witnessed"] = json!({ "error": e.to_string() }),
            None => {}
        }
        println!("{v}");
    } else {
        let mut out = format!(
            "log {} at {}\ncheckpoint {} entries, root {}\nentries {}, elections {}, \
             precincts {}, evidence checked {}\n",
            report.origin,
            a.url,
            report.size,
            if report.root.is_empty() { "(none verified)" } else { &report.root },
            report.entries,
            report.elections,
            report.precincts,
            report.evidence_checked,
        );
        if report.problem_count == 0 {
            out.push_str("no problems found");
        } else {
            let n = report.problem_count;
            out.push_str(&format!("{n} problem{} found:", if n == 1 { "" } else { "s" }));
            for p in &report.problems {
                out.push_str(&format!("\n  {:<20} {}: {p}", p.kind(), p.location()));
            }
            let unlisted = report.problem_count.saturating_sub(report.problems.len() as u64);
            if unlisted > 0 {
                out.push_str(&format!("\n  ({unlisted} more, or repeated, not listed)"));
            }
        }
        if let Some(t) = witness_text {
            out.push('\n');
            out.push_str(&t);
        }
        println!("{out}");
    }
    Ok(if report.problem_count == 0 && !witness_problem {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(11)
    })
}

/// What `hattama audit --policy` says of the log's cosigned checkpoint.
fn witness_text(w: &anyhow::Result<Option<hattama_core::witness::WitnessAudit>>) -> String {
    let w = match w {
        Ok(Some(w)) => w,
        Ok(None) => return "not witnessed: the log serves no cosigned checkpoint".into(),
        Err(e) => return format!("PROBLEM with the cosigned checkpoint: {e}"),
    };
    let by: Vec<String> = w
        .cosignatures
        .iter()
        .map(|c| {
            let when = time::OffsetDateTime::from_unix_timestamp(c.time as i64)
                .ok()
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                .unwrap_or_else(|| c.time.to_string());
            format!("{} ({}) at {when}", c.witness, c.key_name)
        })
        .collect();
    let head = match (w.quorum, w.consistent) {
        (_, Some(false)) => "FORK: the cosigned checkpoint is not a prefix of the audited log",
        (true, _) => "witnessed (quorum met)",
        (false, _) => "not witnessed: the cosignatures do not make the quorum",
    };
    format!(
        "{head}: checkpoint of {} entries{}\n  cosigned by: {}",
        w.size,
        if w.consistent.is_none() { " (newer than the audited one)" } else { "" },
        if by.is_empty() { "nobody".to_owned() } else { by.join(", ") }
    )
}

// ---------------------------------------------------------------------------------------------
// `hattama mirror`

/// Mirrors once, or follows; exit 0 when every round verified, 11 when the source failed
/// verification (its problems are listed on standard error).
fn run_mirror(a: MirrorArgs) -> anyhow::Result<ExitCode> {
    use hattama_core::mirror::{Mirror, MirrorConfig, MirrorError};
    let key = match (&a.key, &a.key_file) {
        (Some(k), _) => Some(hattama_core::audit::parse_log_key(k)?),
        (None, Some(f)) => Some(hattama_core::audit::parse_log_key(
            &std::fs::read_to_string(f)
                .map_err(|e| AuditError::BadKey(format!("cannot read {}: {e}", f.display())))?,
        )?),
        (None, None) => None,
    };
    let config = MirrorConfig {
        url: a.url.clone(),
        dir: a.dir.clone(),
        key,
        languages: ["kk", "ru", "en"].map(str::to_owned).to_vec(),
    };
    let mut mirror = Mirror::new(config)?;
    if mirror.key_from_source() {
        eprintln!(
            "note: no --key given: the log key is the one {} serves ({}); it is pinned in the \
             mirror from now on. Compare it with the key the operators published",
            a.url,
            mirror.key().vkey
        );
    }
    let rounds = if a.follow { a.rounds.unwrap_or(u64::MAX) } else { 1 };
    for n in 1..=rounds {
        if n > 1 {
            std::thread::sleep(std::time::Duration::from_secs(a.interval));
        }
        match mirror.round() {
            Ok(r) => {
                if a.json {
                    let mut v = serde_json::to_value(&r)?;
                    v["round"] = json!(n);
                    println!("{v}");
                } else {
                    println!(
                        "round {n}: checkpoint {} verified{}; {} new captures, {} pages, {} files \
                         written{}",
                        r.size,
                        if r.unchanged { " (unchanged)" } else { "" },
                        r.new_captures,
                        r.pages,
                        r.files,
                        if r.missing > 0 {
                            format!(", {} linked files the source did not serve", r.missing)
                        } else {
                            String::new()
                        }
                    );
                }
                use std::io::Write;
                std::io::stdout().flush()?;
            }
            Err(MirrorError::Refused { url, problems, count }) => {
                eprintln!(
                    "REFUSED: {url} failed verification with {count} problem(s); nothing of \
                     this round was kept:"
                );
                for p in &problems {
                    eprintln!("  {:<20} {}: {p}", p.kind(), p.location());
                }
                if a.json {
                    println!(
                        "{}",
                        json!({
                            "error": "verification_failed",
                            "problem_count": count,
                            "problems": problems_json(&problems),
                        })
                    );
                }
                return Ok(ExitCode::from(11));
            }
            // Following: a network failure skips this round (the first must succeed).
            Err(
                MirrorError::Audit(AuditError::Unreachable { url, reason })
                | MirrorError::Unreachable { url, reason },
            ) if n > 1 => {
                eprintln!("round {n}: cannot read {url}: {reason}")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn problems_json(problems: &[Problem]) -> Value {
    Value::Array(
        problems
            .iter()
            .map(|p| {
                let mut v = serde_json::to_value(p).unwrap_or_default();
                v["location"] = json!(p.location());
                v["message"] = json!(p.to_string());
                v
            })
            .collect(),
    )
}

fn round_text(n: u64, r: &Round) -> String {
    let what = match (r.previous, r.unchanged) {
        (_, true) => "unchanged".to_owned(),
        (None, _) => format!("audited, {} entries checked", r.entries_checked),
        (Some(p), _) => format!("was {p}, {} entries checked", r.entries_checked),
    };
    let signed = if r.verified { "" } else { " (NOT verified)" };
    let mut out = format!("round {n}: checkpoint {}{signed}: {what}", r.size);
    if r.problems.is_empty() {
        out.push_str(", no problem");
    }
    for p in &r.problems {
        out.push_str(&format!("\n  {:<20} {}: {p}", p.kind(), p.location()));
    }
    out
}
