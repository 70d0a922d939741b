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
    storage.commit_capture(c).unwrap();
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
