//! `hattama-server`: serve, and the admin commands.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use commonware_allocator::mimalloc::{Config, MiMalloc, Purge};
use hattama_core::election::Election;
use hattama_server::settings::{Overrides, Settings};
use hattama_server::startup::Application;
use hattama_server::storage::{self, Backend, Opener};
use serde_json::json;

#[derive(Parser)]
#[command(name = "hattama-server", version = env!("HATTAMA_VERSION"), about = "Hattama server")]
struct Cli {
    /// Settings file (TOML)
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (database, photos, keys)
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on (port 0: any free port)
    #[arg(long, global = true, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP (HTTPS with `[tls]`); prints `listening on http(s)://ADDR` as its first line
    Serve,
    /// Serve a demo: a demo election, simulated observers who photograph generated protocols
    /// and sync them, official results with discrepancies; prints the URLs. Without
    /// --data-dir the data goes to a new temporary directory.
    Demo {
        /// Precincts of the demo election
        #[arg(long, default_value_t = 400)]
        precincts: usize,
        /// Simulated observer devices
        #[arg(long, default_value_t = 40)]
        devices: usize,
        /// Width of the observers' photos in pixels (the height is 4/3 of it); a phone camera's
        /// is 3000 or more
        #[arg(long, default_value_t = 720)]
        photo_width: u32,
    },
    /// Manage elections
    Election {
        #[command(subcommand)]
        command: ElectionCommand,
    },
    /// Manage enrollment codes
    Invite {
        #[command(subcommand)]
        command: InviteCommand,
    },
    /// Manage devices
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Import verified transcriptions exported by a Hattama instance
    Transcription {
        #[command(subcommand)]
        command: TranscriptionCommand,
    },
    /// Manage official results
    Official {
        #[command(subcommand)]
        command: OfficialCommand,
    },
    /// Inspect stored captures
    Capture {
        #[command(subcommand)]
        command: CaptureCommand,
    },
    /// Manage the accounts of the review UI
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Copy the instance (it may be serving) into DEST: the database (one consistent snapshot),
    /// the photos it references (only those not in DEST already), the log's files and a
    /// manifest of hashes. The keys only with --with-keys. See docs/operations.md
    Backup {
        /// The backup directory (created; an earlier backup there is brought up to date)
        dest: PathBuf,
        /// Put the server's private signing keys in the backup too (whoever reads the backup
        /// can then sign receipts and checkpoints in the server's name)
        #[arg(long)]
        with_keys: bool,
    },
    /// Copy a stopped embedded instance (SQLite and files in --from DIR) into the PostgreSQL
    /// database and the object store these settings name, then verify the copy (the same
    /// checkpoint, receipts, comparison and exports). Run again after an interruption: it
    /// continues. See docs/operations.md
    Migrate {
        /// Where to: the only target is `postgres` (storage.database_url and [storage.objects]
        /// of these settings)
        #[arg(long, value_enum)]
        to: MigrateTarget,
        /// The embedded instance's data directory (stop its server first; it is only read)
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
    },
    /// Make a new data directory DIR from the backup in SRC, after checking every file of it
    Restore {
        /// The backup directory
        src: PathBuf,
        /// The new data directory (must not exist, or be empty)
        dir: PathBuf,
        /// Directory holding the server's keys (receipt.key, log.key), for a backup taken
        /// without --with-keys
        #[arg(long, value_name = "DIR")]
        keys: Option<PathBuf>,
    },
}

/// The storage `migrate` copies into.
#[derive(Clone, Copy, clap::ValueEnum)]
enum MigrateTarget {
    /// PostgreSQL with an object store (`storage.backend = "postgres"`)
    Postgres,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account; prints a generated password unless --password-stdin is given
    Add {
        /// Login name (a-z 0-9 . _ -)
        username: String,
        /// Name shown to others and in the audit trail
        #[arg(long)]
        name: String,
        /// admin, coordinator or supervisor
        #[arg(long)]
        role: String,
        /// Limit a coordinator to a region (repeatable; none: every region)
        #[arg(long = "region")]
        regions: Vec<String>,
        /// Read the password from the first line of standard input (never from arguments)
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable an account and end its sessions (its history stays)
    Disable {
        /// Login name
        username: String,
    },
    /// Set a new password (and enable the account); ends its sessions
    Reset {
        /// Login name
        username: String,
        /// Read the password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// The password of `user add`/`user reset`: the first line of standard input, or a generated
/// one that is printed once. Never an argument (it would show in `ps` and shell history).
fn new_password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let password = line.trim_end_matches(['\n', '\r']).to_owned();
        hattama_server::review::check_password(&password)?;
        Ok((password, false))
    } else {
        Ok((hattama_server::review::generate_password(), true))
    }
}

fn user_command(settings: &Settings, command: UserCommand) -> anyhow::Result<()> {
    use hattama_server::storage::review::{NewUser, Role};
    let storage = storage::open(settings, Opener::Admin)?;
    let now = hattama_core::now_ms();
    match command {
        UserCommand::Add { username, name, role, regions, password_stdin } => {
            let role = Role::parse(&role)
                .ok_or_else(|| anyhow::anyhow!("--role is admin, coordinator or supervisor"))?;
            let (password, generated) = new_password(password_stdin)?;
            let user = hattama_server::review::create_user(
                &*storage,
                &NewUser { username, display_name: name, role, regions },
                &password,
                now,
            )?;
            println!("created user {} ({})", user.username, user.role.as_str());
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::Disable { username } => {
            anyhow::ensure!(
                hattama_server::review::disable_user(&*storage, &username, now)?,
                "no user {username}"
            );
            println!("disabled {username}");
        }
        UserCommand::Reset { username, password_stdin } => {
            let (password, generated) = new_password(password_stdin)?;
            hattama_server::review::reset_password(&*storage, &username, &password, now)?;
            println!("new password set for {username}");
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::List { json } => {
            let users = storage.users()?;
            if json {
                let list: Vec<_> = users
                    .iter()
                    .map(|u| {
                        json!({
                            "username": u.username,
                            "display_name": u.display_name,
                            "role": u.role,
                            "regions": u.regions,
                            "disabled": u.disabled,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for u in &users {
                    let state = if u.disabled { "disabled" } else { "active" };
                    println!(
                        "{}  {}  {}  {}  {}",
                        u.username,
                        u.role.as_str(),
                        state,
                        u.regions.join(","),
                        u.display_name
                    );
                }
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
enum CaptureCommand {
    /// List stored captures
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ElectionCommand {
    /// Import (or update) an election definition (JSON, see docs/election-format.md)
    Import {
        /// The definition file
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum TranscriptionCommand {
    /// Import `transcriptions.csv` of the open data (`election,precinct,line,value`) as verified
    /// transcriptions, attributed to the system account `import` (precincts with entries here
    /// are skipped)
    Import {
        /// The CSV file
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum OfficialCommand {
    /// Import official figures (CSV `election,precinct,line,value`, see
    /// docs/official-results.md) as the election's next version
    Import {
        /// The CSV file
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum InviteCommand {
    /// Create one-time enrollment codes for precincts
    Create {
        /// Election id
        #[arg(long)]
        election: String,
        /// Precinct id (repeatable)
        #[arg(long = "precinct", required = true)]
        precincts: Vec<String>,
        /// How many codes
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// List enrolled devices
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Revoke a device: it can upload nothing more; what it uploaded stays
    Revoke {
        /// Device id (64 hex digits)
        id: String,
    },
}

/// mimalloc instead of the system's malloc: each request allocates and frees many small objects
/// on several threads (actix workers, the blocking pool, the log integrator), where glibc's
/// allocator cost about a tenth of the server's CPU per tiny capture (`scripts/bench ingest`).
/// The one process-wide item of the server, as a global allocator must be.
///
/// Configured for a server that runs for days on a small machine. mimalloc 3 keeps freed memory
/// for a while before giving it back, and commits its arenas eagerly; each thread of the
/// blocking pool then held on to its last large piece of work (an evidence package, a
/// thumbnail), and the resident memory grew with the number of threads that had done one
/// (`scripts/bench package`: 124 MB after 40 station packages, 46 MB idle). Here freed pages go
/// back to the system as they are freed and arenas are committed as they are used.
#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc::new(Config {
    purge: Purge::After(std::time::Duration::ZERO),
    arena_eager_commit: Some(false),
    ..Config::DEFAULT
});

fn main() -> anyhow::Result<()> {
    // Everything this process creates (database, WAL, photos, uploads, keys, thumbnails, the
    // log's files) is readable by the server's user only, whatever umask it was started with.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    if let Ok(point) = std::env::var("HATTAMA_TEST_PAUSE_AT") {
        // A no-op unless the core was built with its `test-hooks` feature (tests only).
        hattama_core::hooks::set_pause_at(&point);
    }
    let cli = Cli::parse();
    let settings = Settings::load(&Overrides {
        config_file: cli.config.clone(),
        data_dir: cli.data_dir.clone(),
        listen: cli.listen,
    })?;
    let default_filter = match cli.command {
        Command::Demo { .. } => hattama_server::telemetry::QUIET_REQUESTS,
        _ => "info",
    };
    hattama_server::telemetry::init(settings.log_format, default_filter);
    if !matches!(cli.command, Command::Serve | Command::Demo { .. } | Command::Restore { .. }) {
        check_admin_data_dir(&settings, cli.data_dir.is_some(), &cli.command)?;
    }
    match cli.command {
        Command::Serve => serve(settings),
        Command::Demo { precincts, devices, photo_width } => {
            let options = hattama_server::demo::Options {
                precincts,
                devices,
                photo_width,
                ..Default::default()
            };
            demo(&cli.config, &cli.data_dir, cli.listen, options)
        }
        Command::User { command } => user_command(&settings, command),
        Command::Backup { dest, with_keys } => backup(&settings, &dest, with_keys),
        Command::Migrate { to: MigrateTarget::Postgres, from } => migrate(&settings, &from),
        Command::Restore { src, dir, keys } => {
            let done = hattama_server::backup::restore(&src, &dir, keys.as_deref())?;
            println!(
                "restored {} captures and a log of {} entries into {}; serve it with \
                 `hattama-server --data-dir {} serve`",
                done.manifest.captures,
                done.manifest.log_size,
                dir.display(),
                dir.display()
            );
            Ok(())
        }
        Command::Election { command: ElectionCommand::Import { file } } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let storage = storage::open(&settings, Opener::Admin)?;
            // The console's import (`/review/elections`): one implementation.
            let (election, new) = hattama_server::console::import_election(
                &*storage,
                &bytes,
                hattama_core::now_ms(),
                None,
            )?;
            println!(
                "{} election {} with {} precincts",
                if new { "imported" } else { "updated" },
                election.id,
                election.precincts.len()
            );
            Ok(())
        }
        Command::Transcription { command: TranscriptionCommand::Import { file } } => {
            let storage = storage::open(&settings, Opener::Admin)?;
            let (bytes, election) = read_figures_file(&*storage, &file)?;
            let figures = hattama_server::official::parse(&bytes, &election)?;
            let sha = hattama_core::evidence::Sha256Hash::of(&bytes).to_hex();
            let done = hattama_server::observed::import(
                &*storage,
                &election,
                &figures,
                &sha,
                hattama_core::now_ms(),
            )?;
            println!(
                "imported {} verified transcriptions of {} ({} precincts skipped: they have entries)",
                done.verified, election.id, done.skipped
            );
            Ok(())
        }
        Command::Official { command: OfficialCommand::Import { file } } => {
            let storage = storage::open(&settings, Opener::Admin)?;
            let (election, version) = import_official(&*storage, &file)?;
            match version {
                Some(v) => println!("imported version {v} of the official results of {election}"),
                None => println!(
                    "unchanged: the official results of {election} equal the newest version"
                ),
            }
            Ok(())
        }
        Command::Invite { command: InviteCommand::Create { election, precincts, count, json } } => {
            anyhow::ensure!((1..=10_000).contains(&count), "--count must be 1 to 10000");
            let storage = storage::open(&settings, Opener::Admin)?;
            let codes =
                storage.create_invites(&election, &precincts, count, hattama_core::now_ms())?;
            let base = invite_base_url(&settings);
            let list: Vec<_> = codes
                .iter()
                .map(|c| json!({ "code": c, "uri": hattama_core::invite::invite_uri(&base, c) }))
                .collect();
            if json {
                println!("{}", serde_json::Value::Array(list));
            } else {
                for item in list {
                    println!(
                        "{}  {}",
                        item["code"].as_str().unwrap_or(""),
                        item["uri"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(())
        }
        Command::Device { command: DeviceCommand::List { json } } => {
            let storage = storage::open(&settings, Opener::Admin)?;
            let devices = storage.devices()?;
            let list: Vec<_> = devices
                .iter()
                .map(|d| {
                    json!({
                        "id": d.id,
                        "fingerprint": d.key.fingerprint(),
                        "election": d.election,
                        "precincts": d.precincts,
                        "enrolled_at_ms": d.enrolled_at_ms,
                        "revoked_at_ms": d.revoked_at_ms,
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::Value::Array(list));
            } else {
                for d in &devices {
                    let state = if d.revoked_at_ms.is_some() { "revoked" } else { "active" };
                    println!("{}  {}  {}  {}", d.id, state, d.election, d.precincts.join(","));
                }
            }
            Ok(())
        }
        Command::Capture { command: CaptureCommand::List { json } } => {
            let storage = storage::open(&settings, Opener::Admin)?;
            let captures = storage.captures()?;
            if json {
                let list: Vec<_> = captures
                    .iter()
                    .map(|c| {
                        json!({
                            "id": c.id.to_hex(),
                            "device_id": c.device_id,
                            "seq": c.seq,
                            "election": c.election,
                            "precinct": c.precinct,
                            "photo_sha256": c.photo_sha256.to_hex(),
                            "photo_bytes": c.photo_bytes,
                            "received_at_ms": c.received_at_ms,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for c in &captures {
                    println!(
                        "{}  {}/{}  device {} #{}",
                        c.id,
                        c.election,
                        c.precinct,
                        &c.device_id[..16],
                        c.seq
                    );
                }
            }
            Ok(())
        }
        Command::Device { command: DeviceCommand::Revoke { id } } => {
            anyhow::ensure!(
                hattama_core::evidence::Sha256Hash::from_hex(&id).is_some(),
                "a device id is 64 lowercase hex digits"
            );
            let storage = storage::open(&settings, Opener::Admin)?;
            anyhow::ensure!(storage.revoke_device(&id, hattama_core::now_ms())?, "no device {id}");
            println!("revoked {id}");
            Ok(())
        }
    }
}

/// `hattama-server backup`: see [`hattama_server::backup`].
fn backup(settings: &Settings, dest: &std::path::Path, with_keys: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        settings.storage.backend == hattama_server::settings::BackendKind::Embedded,
        "backup copies the embedded storage (SQLite and files in the data directory); with \
         storage.backend = \"postgres\" back up the database with PostgreSQL's own tools \
         (pg_dump, or the operator's base backups) and the data directory's keys and files"
    );
    if with_keys {
        eprintln!(
            "WARNING: --with-keys puts the server's PRIVATE SIGNING KEYS in {}. Whoever can read \
             this backup can sign receipts and log checkpoints in the server's name. Keep it \
             encrypted and offline, never beside the evidence it protects.",
            dest.display()
        );
    }
    let done = hattama_server::backup::backup(&settings.data_dir, dest, with_keys)?;
    let m = &done.manifest;
    println!(
        "backed up {} captures and a log of {} entries into {} ({} photos copied, {} already \
         there, {} bytes written)",
        m.captures,
        m.log_size,
        dest.display(),
        done.photos_copied,
        done.photos_kept,
        done.bytes_written
    );
    println!("manifest SHA-256: {}", done.manifest_sha256);
    if !with_keys {
        println!(
            "the keys are not in the backup: keep a copy of {} elsewhere; `restore` needs it \
             (--keys)",
            settings.data_dir.join("keys").display()
        );
    }
    Ok(())
}

/// `hattama-server migrate`: see [`hattama_server::migrate`].
fn migrate(settings: &Settings, from: &std::path::Path) -> anyhow::Result<()> {
    let report = hattama_server::migrate::run(from, settings)?;
    if report.resumed {
        println!("continued an unfinished migration of {}", from.display());
    }
    println!(
        "migrated {} captures of {} devices and {} objects ({} copied by this run) from {} into \
         PostgreSQL",
        report.captures,
        report.devices,
        report.objects,
        report.objects_copied,
        from.display()
    );
    for (table, n) in &report.rows.0 {
        println!("  {table}: {n} rows");
    }
    println!(
        "log root {} of {} entries identical; {} receipts identical; comparison and {} exports \
         of {} elections identical",
        if report.log_root.is_empty() { "(empty log)" } else { &report.log_root },
        report.log_size,
        report.captures,
        report.exports,
        report.elections
    );
    println!(
        "start the server with these settings; keep {} as it is until the new server has run \
         well",
        from.display()
    );
    Ok(())
}

/// The file in the data directory where a serving process writes the URL it listens on, for
/// the admin commands (`invite create`) to find it.
const LISTENING_FILE: &str = "listening.url";

/// The settings' data directory must have been given (never the built-in default, which is
/// relative to wherever the command runs), and must hold a server's data unless the command
/// creates it (`election import`).
fn check_admin_data_dir(
    settings: &Settings,
    flag_given: bool,
    command: &Command,
) -> anyhow::Result<()> {
    let defaulted = !flag_given
        && settings.data_dir == std::path::Path::new("hattama-data")
        && std::env::var_os("HATTAMA__DATA_DIR").is_none();
    anyhow::ensure!(
        !defaulted,
        "which server's data? Pass --data-dir DIR, the directory the server runs with (or set \
         data_dir in the --config file, or HATTAMA__DATA_DIR)"
    );
    // A new deployment begins with an election or its first account (or a migration).
    let creates = matches!(
        command,
        Command::Election { .. }
            | Command::User { command: UserCommand::Add { .. } }
            | Command::Migrate { .. }
    );
    // On PostgreSQL the data is in the database the settings name, not in the directory.
    let postgres = settings.storage.backend == hattama_server::settings::BackendKind::Postgres;
    anyhow::ensure!(
        creates || postgres || settings.data_dir.join("hattama-server.sqlite3").exists(),
        "{} holds no server data: pass --data-dir DIR, the directory the server runs with \
         (`election import` or `user add` creates a new one)",
        settings.data_dir.display()
    );
    Ok(())
}

/// The server URL an invite carries: `public_url`, or else the URL the server running on this
/// data directory listens on (with a warning: phones must be able to reach it).
fn invite_base_url(settings: &Settings) -> String {
    if let Some(url) = &settings.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let listening = std::fs::read_to_string(settings.data_dir.join(LISTENING_FILE))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let (url, whose) = match listening {
        Some(url) => (url, "the address the server on this data directory listens on"),
        None => (
            format!("http://{}", settings.listen),
            "the configured listen address (the server has not run on this data directory yet)",
        ),
    };
    eprintln!(
        "warning: public_url is not set, so the invites carry {whose}, {url}; phones must be \
         able to reach it. Set public_url (HATTAMA__PUBLIC_URL or public_url in the --config \
         file) to the address observers' phones reach, for example https://hattama.example.kz"
    );
    url
}

/// Records the URL the server listens on in the data directory (see [`LISTENING_FILE`]).
fn record_listening(data_dir: &std::path::Path, url: &str) {
    if let Err(e) = std::fs::write(data_dir.join(LISTENING_FILE), format!("{url}\n")) {
        tracing::warn!(error = %e, "cannot record the listening address in the data directory");
    }
}

/// Reads a figures CSV (size-checked first) and finds the election its first row names.
fn read_figures_file(
    storage: &dyn Backend,
    file: &std::path::Path,
) -> anyhow::Result<(Vec<u8>, Election)> {
    use hattama_server::official;
    let size =
        std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?.len();
    anyhow::ensure!(
        size <= official::MAX_FILE_BYTES as u64,
        official::OfficialError::TooLarge(usize::try_from(size).unwrap_or(usize::MAX))
    );
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let id = official::election_of(&bytes)?;
    let election = storage.election(&id)?.ok_or(official::OfficialError::UnknownElection(id))?;
    Ok((bytes, election))
}

/// Reads, checks and stores an official-results file (the console's import,
/// `/review/elections`: one implementation); returns its election and the new version.
fn import_official(
    storage: &dyn Backend,
    file: &std::path::Path,
) -> anyhow::Result<(String, Option<u64>)> {
    use hattama_server::official;
    let size =
        std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?.len();
    anyhow::ensure!(
        size <= official::MAX_FILE_BYTES as u64,
        official::OfficialError::TooLarge(usize::try_from(size).unwrap_or(usize::MAX))
    );
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let source = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let now = hattama_core::now_ms();
    Ok(hattama_server::console::import_official(storage, &bytes, &source, now, None)?)
}

/// `hattama-server demo` in a build without it (a production build): says how to get it.
#[cfg(not(feature = "demo"))]
fn demo(
    _: &Option<PathBuf>,
    _: &Option<PathBuf>,
    _: Option<SocketAddr>,
    _: hattama_server::demo::Options,
) -> anyhow::Result<()> {
    anyhow::bail!(
        "this build of hattama-server has no demo; run scripts/demo, or build with \
         `cargo build -p hattama-server --features demo`"
    )
}

/// `hattama-server demo`: see [`hattama_server::demo`].
#[cfg(feature = "demo")]
fn demo(
    config_file: &Option<PathBuf>,
    data_dir: &Option<PathBuf>,
    listen: Option<SocketAddr>,
    options: hattama_server::demo::Options,
) -> anyhow::Result<()> {
    use hattama_server::demo;
    anyhow::ensure!((1..=20_000).contains(&options.precincts), "--precincts must be 1 to 20000");
    anyhow::ensure!(
        (64..=6000).contains(&options.photo_width),
        "--photo-width must be 64 to 6000 pixels"
    );
    let data_dir = match data_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("hattama-demo-{}", std::process::id())),
    };
    let settings = Settings::load(&Overrides {
        config_file: config_file.clone(),
        data_dir: Some(data_dir.clone()),
        listen,
    })?;
    let storage = storage::open(&settings, Opener::Admin)?;
    let seeded = storage.election(demo::ELECTION_ID)?.is_some();
    let election = match storage.election(demo::ELECTION_ID)? {
        Some(e) => e,
        None => demo::import_election(&*storage, &options)?,
    };
    drop(storage);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let _entered = runtime.enter();
    let app = Application::build(settings.clone())?;
    let url = format!("http://{}", app.addr());
    println!("listening on {url}");
    record_listening(&data_dir, &url);
    println!("data directory: {}", data_dir.display());
    use std::io::Write;
    std::io::stdout().flush()?;
    let seeding = std::thread::spawn(move || -> anyhow::Result<()> {
        if !seeded {
            let started = std::time::Instant::now();
            println!(
                "seeding: simulated observers photograph and sync {} precincts …",
                options.precincts
            );
            let storage = storage::open(&settings, Opener::Admin)?;
            let observed =
                demo::observe(&*storage, &election, &url, &data_dir.join("observers"), &options)?;
            demo::import_official(&*storage, &election)?;
            demo::review(&*storage, &election, &observed)?;
            println!(
                "seeded {} captures, reviews and transcriptions, and two versions of official \
                 results in {:.1} s",
                observed.len(),
                started.elapsed().as_secs_f64()
            );
        }
        println!();
        println!("  public gallery      {url}/");
        println!("  election overview   {url}/elections/{}", demo::ELECTION_ID);
        println!(
            "  review (log in)     {url}/review   users: {}; password: {}",
            demo::DEMO_USERS.map(|u| u.0).join(", "),
            demo::DEMO_PASSWORD
        );
        println!("  open data (OpenAPI) {url}/api/v1/openapi.json");
        println!("  log checkpoint      {url}/log/checkpoint");
        println!();
        println!("Ctrl-C stops the server; the data stays in the data directory.");
        std::io::stdout().flush()?;
        Ok(())
    });
    let served = actix_web::rt::System::new().block_on(app.run());
    if seeding.is_finished() {
        seeding.join().map_err(|_| anyhow::anyhow!("seeding panicked"))??;
    }
    served?;
    Ok(())
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let _entered = runtime.enter();
    let data_dir = settings.data_dir.clone();
    let app = Application::build(settings)?;
    println!("listening on {}", app.url());
    record_listening(&data_dir, &app.url());
    use std::io::Write;
    std::io::stdout().flush()?;
    actix_web::rt::System::new().block_on(app.run())?;
    Ok(())
}
