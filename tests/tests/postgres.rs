//! [Scale-out] The real `hattama-server` on PostgreSQL (`storage.backend = "postgres"`), end to
//! end: admin commands and the server share the database, a device enrolls and uploads in
//! pieces, its receipt verifies, the log integrates it, and after a SIGKILL the server answers
//! the same receipt from the database. The database is the throw-away cluster named by
//! `HATTAMA_TEST_POSTGRES_URL` (`scripts/lib/postgres.sh`), in a schema of this test's own.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hattama_core::evidence::DeviceKey;
use hattama_core::receipt::SignedReceipt;
use hattama_tests::raw::{RawDevice, clean_photo};
use hattama_tests::server::TestServer;
use hattama_tests::{GO_IMAGE, Run, bin};

/// A schema of the test cluster, dropped at the end.
struct Schema {
    admin_url: String,
    name: String,
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = psql(&self.admin_url, &format!("DROP SCHEMA {} CASCADE", self.name));
    }
}

fn psql(url: &str, sql: &str) -> Run {
    Command::new("psql")
        .args([url, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .unwrap()
        .into()
}

/// The test cluster's URL with a fresh schema as the search path, or `None` without a cluster
/// (except on CI, where that fails).
fn database(test: &str) -> Option<(String, Schema)> {
    let Ok(url) = std::env::var("HATTAMA_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "HATTAMA_TEST_POSTGRES_URL is not set: on CI the PostgreSQL backend must be tested"
        );
        eprintln!("HATTAMA_TEST_POSTGRES_URL is not set: {test} is not run here");
        return None;
    };
    let name = format!("e2e_{}", hex::encode(rand::random::<[u8; 6]>()));
    let created = psql(&url, &format!("CREATE SCHEMA {name}"));
    assert_eq!(created.code, Some(0), "{created:?}");
    let with_schema = format!("{url} options='-c search_path={name}'");
    Some((with_schema, Schema { admin_url: url, name }))
}

/// An admin command on the PostgreSQL storage.
fn admin(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    Command::new(bin("hattama-server"))
        .envs(env.iter().copied())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap()
        .into()
}

#[test]
fn the_server_on_postgres_takes_uploads_logs_them_and_keeps_them_across_a_kill() {
    let Some((url, _schema)) = database("the PostgreSQL end-to-end test") else { return };
    let env = [("HATTAMA__STORAGE__BACKEND", "postgres"), ("HATTAMA__STORAGE__DATABASE_URL", &url)];
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let election = data.join("election.json");
    let definition = hattama_tests::fixtures::election("e2e", 3);
    std::fs::write(&election, serde_json::to_vec(&definition).unwrap()).unwrap();
    let imported = admin(data, &env, &["election", "import", election.to_str().unwrap()]);
    assert_eq!(imported.code, Some(0), "{imported:?}");

    let mut server = TestServer::start_on_with(data, "127.0.0.1:0", &env);
    let codes = admin(
        data,
        &env,
        &["invite", "create", "--election", "e2e", "--precinct", "p0001", "--json"],
    )
    .ok_json();
    let code = codes[0]["code"].as_str().unwrap();
    let mut device = RawDevice::new(21);
    let enrolled = device.enroll(&server.url, code);
    assert_eq!(enrolled.status, 200, "{enrolled:?}");
    let pinned = DeviceKey(
        hattama_core::evidence::parse_lower_hex::<32>(
            enrolled.body["receipt_key"].as_str().unwrap(),
        )
        .unwrap(),
    );
    // The code is used, in the database the admin commands read too.
    assert_eq!(device.enroll(&server.url, code).status, 200, "the same device again");
    assert_eq!(RawDevice::new(22).enroll(&server.url, code).status, 409, "another device");

    let (bytes, info) = clean_photo(&PathBuf::from(format!("{GO_IMAGE}/testdata/video-001.jpeg")));
    let signed = device.sign("p0001", &info);
    let id = signed.hash();
    let created = device.create(
        &server.url,
        &signed.canonical,
        &hex::encode(signed.signature),
        bytes.len() as u64,
    );
    assert_eq!(created.status, 201, "{created:?}");
    let half = bytes.len() / 2;
    assert_eq!(device.patch(&server.url, &id.to_hex(), 0, &bytes[..half]).status, 204);
    assert_eq!(device.head(&server.url, &id.to_hex()).offset, Some(half as u64));
    let done = device.patch(&server.url, &id.to_hex(), half as u64, &bytes[half..]);
    assert_eq!((done.status, done.offset), (204, Some(bytes.len() as u64)));
    let first = device.receipt(&server.url, &id.to_hex());
    assert_eq!(first.status, 200, "{first:?}");
    let receipt: SignedReceipt = serde_json::from_value(first.body.clone()).unwrap();
    receipt.verify(&pinned, &id, &info.sha256).unwrap();
    let listed = admin(data, &env, &["capture", "list", "--json"]).ok_json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    // The log integrates it: a checkpoint of one entry is published.
    let http = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = http.get(format!("{}/log/checkpoint", server.url)).send().unwrap();
        if r.status() == 200 && r.text().unwrap().lines().nth(1) == Some("1") {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint of one entry");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Killed and started again: the same receipt, the same photo, from the database.
    server.kill();
    let server = TestServer::start_on_with(data, "127.0.0.1:0", &env);
    let again = device.receipt(&server.url, &id.to_hex());
    assert_eq!((again.status, &again.body), (200, &first.body));
    let photo = http.get(format!("{}/photos/{}", server.url, info.sha256.to_hex())).send().unwrap();
    assert_eq!(photo.status(), 200);
    assert_eq!(photo.bytes().unwrap().as_ref(), &bytes[..]);
    // The embedded database in the data directory holds none of it.
    assert!(!data.join("hattama-server.sqlite3").exists(), "no SQLite database on PostgreSQL");
}
