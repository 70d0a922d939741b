//! [Scale-out] `hattama-server migrate --to postgres`: an embedded instance (SQLite and files)
//! with captures of several devices (small photos in the database, a large one as a file),
//! reviewed captures, verified transcriptions and official results is stopped and copied into
//! the throw-away PostgreSQL cluster (`HATTAMA_TEST_POSTGRES_URL`) and a real Garage bucket
//! (`HATTAMA_TEST_S3_*`); the first run is SIGKILLed halfway through the objects (the pause
//! point `migrate:objects-half`), the second continues and verifies, and a server started on
//! the target serves byte for byte the same checkpoint, receipts, comparison and exports. The
//! command's refusals (a server running on the source, settings that name no PostgreSQL, a
//! target holding other data, a bucket that does not exist) are tried too. Without PostgreSQL
//! or Garage the test says so and passes, except on CI (`CI=true`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use hattama_core::evidence::PhotoInfo;
use hattama_core::media::{self, MediaLimits};
use hattama_server::storage::DecisionKind;
use hattama_server::storage::review::{NewUser, Role};
use hattama_tests::backend::{Backend, open_storage};
use hattama_tests::fixtures::{self, almaty};
use hattama_tests::review::{enrolled_device, photo, upload};
use hattama_tests::server::{TestServer, import_election};
use hattama_tests::{Run, bin, textured_jpeg};

const PRECINCTS: [&str; 4] = ["p0001", "p0002", "p0003", "p0004"];
const ELECTIONS: [&str; 2] = ["almaty-2019", "e2e"];

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// `hattama-server --data-dir TARGET migrate --to postgres --from SOURCE` with `env`.
fn migrate_command(target: &Path, source: &Path, env: &[(String, String)]) -> Command {
    let mut command = Command::new(bin("hattama-server"));
    command
        .envs(pairs(env))
        .env("HATTAMA_LOG", "warn")
        .arg("--data-dir")
        .arg(target)
        .args(["migrate", "--to", "postgres", "--from"])
        .arg(source);
    command
}

fn migrate(target: &Path, source: &Path, env: &[(String, String)]) -> Run {
    migrate_command(target, source, env).output().unwrap().into()
}

fn refused(run: &Run, says: &str) {
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains(says), "expected {says:?}: {run:?}");
}

/// A photo of more than 64 KiB (kept as a file by the embedded backend), stripped.
fn large_photo(seed: u32) -> (Vec<u8>, PhotoInfo) {
    let clean = media::strip(&textured_jpeg(1200, 900, seed, 92), &MediaLimits::default()).unwrap();
    let info = clean.info();
    assert!(clean.bytes.len() > 64 * 1024, "a large photo");
    (clean.bytes, info)
}

/// The size of the published checkpoint.
fn checkpoint_size(http: &reqwest::blocking::Client, url: &str) -> u64 {
    let r = http.get(format!("{url}/log/checkpoint")).send().unwrap();
    if r.status() != 200 {
        return 0;
    }
    r.text().unwrap().lines().nth(1).unwrap().parse().unwrap()
}

/// Everything the migration must keep, as a server serves it: (path, status, body).
fn served(url: &str, captures: &[String]) -> Vec<(String, u16, Vec<u8>)> {
    let http = reqwest::blocking::Client::new();
    let mut paths = vec!["/log/checkpoint".to_owned()];
    for e in ELECTIONS {
        paths.push(format!("/api/v1/elections/{e}/comparison"));
        paths.push(format!("/api/v1/elections/{e}/official"));
        for file in hattama_server::routes::public::EXPORT_FILES {
            paths.push(format!("/api/v1/elections/{e}/export/{file}"));
        }
        paths.push(format!("/api/v1/elections/{e}/export/official.csv?version=1"));
    }
    for id in captures {
        paths.push(format!("/api/v1/receipts/{id}"));
        paths.push(format!("/api/v1/log/inclusion/{id}"));
    }
    paths
        .into_iter()
        .map(|path| {
            let r = http.get(format!("{url}{path}")).send().unwrap();
            let status = r.status().as_u16();
            (path, status, r.bytes().unwrap().to_vec())
        })
        .collect()
}

#[test]
fn an_embedded_instance_migrated_to_postgres_and_s3_serves_the_same_and_a_killed_run_finishes() {
    let Some(backend) = Backend::postgres_s3() else { return };
    let source_dir = tempfile::tempdir().unwrap();
    let source = source_dir.path();

    // The source: Almaty-shaped official results and verified transcriptions (two coordinators'
    // double entry), and an election whose stations three devices photograph.
    almaty::seed(source);
    import_election(source, &fixtures::election("e2e", PRECINCTS.len()));
    let mut server = TestServer::start_on(source, "127.0.0.1:0");
    let mut captures = Vec::new();
    let mut photos = Vec::new();
    for seed in 1..=3u8 {
        let mut device = enrolled_device(&server, seed, &PRECINCTS);
        for (i, precinct) in PRECINCTS.iter().enumerate() {
            let p = photo(u32::from(seed) * 100 + i as u32);
            captures.push(upload(&server, &mut device, precinct, &p, |_| {}));
            photos.push(p.1.sha256.to_hex());
        }
    }
    let mut device = enrolled_device(&server, 4, &PRECINCTS);
    let large = large_photo(7);
    captures.push(upload(&server, &mut device, "p0002", &large, |_| {}));
    photos.push(large.1.sha256.to_hex());
    assert!(
        std::fs::read_dir(source.join("blobs")).unwrap().count() >= 1,
        "the large photo is a file of the embedded backend"
    );
    let http = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpoint_size(&http, &server.url) < captures.len() as u64 {
        assert!(Instant::now() < deadline, "the log did not reach {} entries", captures.len());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Renditions (objects of the data directory) for a few photos.
    for sha in photos.iter().take(3) {
        let r = http.get(format!("{}/photos/{sha}/thumb", server.url)).send().unwrap();
        assert_eq!(r.status(), 200);
    }
    // Reviewed captures: accepted, one rejected (no longer public), one flagged.
    {
        let storage = open_storage(source);
        let user = hattama_server::review::create_user(
            &*storage,
            &NewUser {
                username: "lead".into(),
                display_name: "Lead".into(),
                role: Role::Admin,
                regions: Vec::new(),
            },
            "a long enough password",
            hattama_core::now_ms(),
        )
        .unwrap();
        for (i, id) in captures.iter().take(6).enumerate() {
            let kind = match i {
                0 => DecisionKind::Rejected,
                1 => DecisionKind::Flagged,
                _ => DecisionKind::Accepted,
            };
            let id = hattama_core::evidence::Sha256Hash::from_hex(id).unwrap();
            let reason = match kind {
                DecisionKind::Rejected => Some("wrong_precinct"),
                DecisionKind::Flagged => Some("the figures are hard to read"),
                DecisionKind::Accepted => None,
            };
            hattama_server::review::record_decision(
                &*storage,
                &user,
                &id,
                kind,
                reason,
                hattama_core::now_ms(),
            )
            .unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(300)); // the public views follow within 250 ms
    let before = served(&server.url, &captures);
    assert!(before.iter().filter(|(_, status, _)| *status == 200).count() > 40, "{before:?}");

    let target_dir = tempfile::tempdir().unwrap();
    let target = target_dir.path();
    let env = backend.env(target);

    // Refused: a server running on the source; settings that name no PostgreSQL.
    refused(&migrate(target, source, &env), "a server is running on");
    server.kill();
    refused(&migrate(target, source, &[]), "the settings name the embedded backend");
    // Objects kept in the data directory, and the data directory the source's own.
    let Backend::Postgres { url, .. } = &backend else { unreachable!() };
    let local = Backend::Postgres { url: url.clone(), s3: None }.env(source);
    refused(&migrate(source, source, &local), "the migration writes nothing there");

    // Killed halfway through the objects.
    let mut child = migrate_command(target, source, &env)
        .env("HATTAMA_TEST_PAUSE_AT", hattama_server::migrate::PAUSE_OBJECTS_HALF)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let paused = format!("hattama-paused {}", hattama_server::migrate::PAUSE_OBJECTS_HALF);
    loop {
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("the migration pauses");
        if line == paused {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let progress = backend.query(
        target,
        "SELECT objects_copied, tables_copied_at_ms IS NULL FROM embedded_migration",
    );
    let (copied, no_tables) = progress.trim().split_once('|').unwrap();
    assert!(copied.parse::<u64>().unwrap() > 0, "{progress}");
    assert_eq!(no_tables, "t", "the kill came before the tables: {progress}");
    assert_eq!(backend.query(target, "SELECT count(*) FROM captures").trim(), "0");

    // A target holding another instance's data is refused (a second schema, with an election).
    let other_dir = tempfile::tempdir().unwrap();
    let other_env = backend.env(other_dir.path());
    let file = other_dir.path().join("election.json");
    std::fs::write(&file, serde_json::to_vec(&fixtures::election("e2e", 2)).unwrap()).unwrap();
    let imported: Run = Command::new(bin("hattama-server"))
        .envs(pairs(&other_env))
        .arg("--data-dir")
        .arg(other_dir.path())
        .args(["election", "import", file.to_str().unwrap()])
        .output()
        .unwrap()
        .into();
    assert_eq!(imported.code, Some(0), "{imported:?}");
    refused(&migrate(other_dir.path(), source, &other_env), "the target database is not empty");
    // A bucket that does not exist.
    let no_bucket: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| {
            let v = if k.ends_with("__BUCKET") { "no-such-bucket".to_owned() } else { v.clone() };
            (k.clone(), v)
        })
        .collect();
    refused(&migrate(target, source, &no_bucket), "cannot use the object store");

    // Run again: it continues, copies the rest, verifies and says so.
    let run = migrate(target, source, &env);
    eprintln!("{}", run.stdout);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("continued an unfinished migration"), "{run:?}");
    assert!(run.stdout.contains(&format!("migrated {} captures of 4 devices", captures.len())));
    let receipts = format!("{} receipts identical", captures.len());
    assert!(run.stdout.contains(&receipts), "{run:?}");
    assert!(run.stdout.contains("comparison and 19 exports of 2 elections identical"), "{run:?}");
    // Once more: nothing to copy, verified again.
    let again = migrate(target, source, &env);
    assert_eq!(again.code, Some(0), "{again:?}");
    assert!(again.stdout.contains("(0 copied by this run)"), "{again:?}");

    // The source is unchanged, and a server on the target serves the same bytes.
    let target_server = TestServer::start_on_with(target, "127.0.0.1:0", &pairs(&env));
    let after = served(&target_server.url, &captures);
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.0, a.0);
        assert_eq!((b.1, &b.2), (a.1, &a.2), "{} differs after the migration", b.0);
    }
    // Its photos come from the bucket.
    for sha in &photos {
        let r = http.get(format!("{}/photos/{sha}", target_server.url)).send().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(hattama_core::evidence::Sha256Hash::of(&r.bytes().unwrap()).to_hex(), *sha);
    }
}
