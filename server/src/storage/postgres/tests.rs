//! The PostgreSQL backend against a real server: `HATTAMA_TEST_POSTGRES_URL` names it
//! (`scripts/test` starts a throw-away cluster and sets it; by hand:
//! `eval "$(scripts/lib/postgres.sh start)"`). Each test works in a schema of its own, dropped
//! when it ends. Without the variable the tests say so and pass, except on CI (`CI=true`),
//! where a missing database is a failure: both backends always run there.

use std::str::FromStr;

use super::PgStorage;
use crate::storage::conformance::storage_conformance_tests;

/// The variable that names the test cluster.
const URL_VAR: &str = "HATTAMA_TEST_POSTGRES_URL";

/// A schema of one test, dropped with it.
pub(crate) struct Schema {
    url: String,
    name: String,
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.url, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name));
        }
    }
}

/// A fresh storage in a new schema of the test cluster, or `None` without one (not on CI).
pub(crate) fn open() -> Option<(PgStorage, Schema)> {
    let Ok(url) = std::env::var(URL_VAR) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{URL_VAR} is not set: on CI the PostgreSQL backend must be tested"
        );
        eprintln!("{URL_VAR} is not set: the PostgreSQL backend is not tested here");
        return None;
    };
    let name = format!("t_{}", hex::encode(rand::random::<[u8; 8]>()));
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin.batch_execute(&format!("CREATE SCHEMA {name}")).unwrap();
    let schema = Schema { url: url.clone(), name };
    let mut config = postgres::Config::from_str(&url).unwrap();
    config.options(&format!("-c search_path={}", schema.name));
    Some((PgStorage::open_config(config, 4).unwrap(), schema))
}

storage_conformance_tests!(open());

#[test]
fn a_database_is_migrated_once_and_a_newer_one_is_refused() {
    let Some((storage, schema)) = open() else { return };
    drop(storage);
    // Opened again: nothing to do.
    let mut config = postgres::Config::from_str(&schema.url).unwrap();
    config.options(&format!("-c search_path={}", schema.name));
    let again = PgStorage::open_config(config.clone(), 1).unwrap();
    let mut c = again.conn().unwrap();
    let versions: Vec<i32> = c
        .query("SELECT version FROM schema_version ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=super::SCHEMA_VERSION as i32).collect::<Vec<_>>());
    c.execute(
        "INSERT INTO schema_version (version) VALUES ($1)",
        &[&(super::SCHEMA_VERSION as i32 + 1)],
    )
    .unwrap();
    drop(c);
    assert!(matches!(
        PgStorage::open_config(config, 1),
        Err(crate::storage::StorageError::TooNew { .. })
    ));
}

/// With the server's object store, new photos are objects (`photos/<sha256>`), not rows; a
/// photo stored as a row (by an earlier version) is still read from it.
#[test]
fn photos_are_objects_when_the_server_gives_an_object_store() {
    use std::sync::Arc;

    use crate::objects::{LocalObjects, ObjectBackend, ObjectKey};
    use crate::storage::conformance::{capture, election, key, photo};
    use crate::storage::{Storage, StorageError};

    let Some((storage, _schema)) = open() else { return };
    let dir = tempfile::tempdir().unwrap();
    let objects: Arc<dyn ObjectBackend> = Arc::new(LocalObjects::new(dir.path()).unwrap());
    let storage = storage.with_photos(objects.clone());
    storage.import_election(&election("e1"), 1).unwrap();
    let codes = storage.create_invites("e1", &["p1".into()], 1, 1).unwrap();
    storage.enroll(&codes[0], &key(1), 1).unwrap().unwrap();
    let bytes = photo(7, 100_000);
    let c = capture(&key(1), "e1", "p1", 1, &bytes);
    let sha = c.photo_sha256;
    storage.commit_capture(c).unwrap().unwrap();
    let object = ObjectKey::new(format!("photos/{}", sha.to_hex())).unwrap();
    assert_eq!(objects.get(&object).unwrap(), bytes);
    assert_eq!(storage.photo(&sha).unwrap(), Some(bytes.clone()));
    let mut c = storage.conn().unwrap();
    let rows: i64 = c.query_one("SELECT count(*) FROM photos", &[]).unwrap().get(0);
    assert_eq!(rows, 0, "the photo is not a row");
    // A row of an earlier version is read as before; an object gone is a photo missing.
    let old = photo(8, 500);
    let old_sha = hattama_core::evidence::Sha256Hash::of(&old);
    c.execute("INSERT INTO photos (sha256, bytes) VALUES ($1, $2)", &[&old_sha.to_hex(), &old])
        .unwrap();
    drop(c);
    assert_eq!(storage.photo(&old_sha).unwrap(), Some(old));
    objects.delete(&object).unwrap();
    assert!(matches!(storage.photo(&sha), Ok(None) | Err(StorageError::NotFound(_))));
}

/// One log lease per schema at a time; once the holder's connection is closed (its process
/// dead), another claim takes it. A claim on another schema of the database is not held
/// off.
#[test]
fn one_log_lease_per_schema_taken_over_when_its_holder_goes() {
    use crate::storage::Storage;

    let Some((storage, _schema)) = open() else { return };
    let Some((other, _other_schema)) = open() else { return };
    let mut first = storage.log_lease().unwrap();
    let mut second = storage.log_lease().unwrap();
    assert!(first.shared() && second.shared());
    assert!(first.hold().unwrap(), "a free lease is taken");
    assert!(!second.hold().unwrap(), "held by the first");
    assert!(first.hold().unwrap(), "still held");
    assert!(!second.hold().unwrap(), "still held by the first");
    let mut elsewhere = other.log_lease().unwrap();
    assert!(elsewhere.hold().unwrap(), "another schema's log has a lease of its own");
    // Closing the holder's connection releases the lock as soon as PostgreSQL ends its session.
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !second.hold().unwrap() {
        assert!(std::time::Instant::now() < deadline, "not taken over");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(second.hold().unwrap(), "held by the second now");
}

/// Two logs on one database, as two instances have: one integrates, the other follows what it
/// publishes (its consistency answer is never behind the published checkpoint object); when the
/// integrating one goes, the other takes the lease over and integrates what came since.
#[test]
fn a_second_log_follows_the_integrating_one_and_takes_over_when_it_goes() {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::log::Log;
    use crate::objects::{LocalObjects, ObjectBackend};
    use crate::storage::Storage;
    use crate::storage::conformance::{capture, election, key, photo};

    let Some((storage, _schema)) = open() else { return };
    let storage: Arc<dyn Storage> = Arc::new(storage);
    let dir = tempfile::tempdir().unwrap();
    let objects: Arc<dyn ObjectBackend> = Arc::new(LocalObjects::new(dir.path()).unwrap());
    storage.import_election(&election("e1"), 1).unwrap();
    let codes = storage.create_invites("e1", &["p1".into()], 1, 1).unwrap();
    storage.enroll(&codes[0], &key(1), 1).unwrap().unwrap();
    let commit = |seq: u64| {
        let bytes = photo(seq, 1000);
        storage.commit_capture(capture(&key(1), "e1", "p1", seq, &bytes)).unwrap().unwrap();
    };
    (1..=3).for_each(commit);
    let signer = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let open_log = || Log::open(storage.clone(), signer.clone(), "test.local/log", objects.clone());
    let first = open_log().unwrap();
    let second = open_log().unwrap();
    assert!(first.is_integrating() && !second.is_integrating());
    assert_eq!(first.integrate_once().unwrap(), 3);
    assert_eq!(second.published_size(), 0, "not followed yet");
    let (_, note) = second.consistency(1).unwrap();
    assert_eq!(note, first.published_checkpoint().unwrap().1, "followed before it answers");
    assert_eq!(second.published_size(), 3);

    // The first goes (its lease's connection closes with it); the second's thread takes the
    // lease and integrates the captures committed since.
    drop(first);
    let thread = second.start().unwrap();
    (4..=5).for_each(commit);
    assert!(second.wait_published(4, Duration::from_secs(30)).unwrap(), "not taken over");
    assert!(second.is_integrating());
    second.stop();
    thread.join().unwrap();
}
