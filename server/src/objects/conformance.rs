//! The object conformance suite: the contract of [`ObjectBackend`], checked through the trait
//! alone, run against the local store (a temporary directory) and against a real S3 server
//! (Garage, started by `scripts/test`: `HATTAMA_TEST_S3_*`). A store is correct when it passes.
//!
//! Tests of one bucket run at once: each check works under a prefix of its own.

use std::sync::Arc;

use super::{ObjectBackend, ObjectError, ObjectKey, PutOptions};

/// A prefix no other test (in this run or another) writes under.
pub fn fresh_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("t-{test}-{}-{nanos}/", std::process::id())
}

fn key(prefix: &str, rest: &str) -> ObjectKey {
    ObjectKey::new(format!("{prefix}{rest}")).unwrap()
}

/// Deterministic bytes of `len` from `seed` (a xorshift stream).
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// put, get, head, exists and delete of one object.
pub fn round_trip(store: &dyn ObjectBackend, prefix: &str) {
    let k = key(prefix, "one");
    let data = bytes(1, 1000);
    store.put(&k, &data, PutOptions::EVIDENCE).unwrap();
    assert_eq!(store.get(&k).unwrap(), data);
    assert_eq!(store.head(&k).unwrap(), Some(1000));
    assert!(store.exists(&k).unwrap());
    store.delete(&k).unwrap();
    assert!(matches!(store.get(&k), Err(ObjectError::NotFound(n)) if n == k.as_str()));
    assert_eq!(store.head(&k).unwrap(), None);
    // Deleting what is gone succeeds.
    store.delete(&k).unwrap();
    // An empty object is an object.
    let empty = key(prefix, "empty");
    store.put(&empty, b"", PutOptions::DERIVED).unwrap();
    assert_eq!(store.get(&empty).unwrap(), b"");
    assert_eq!(store.head(&empty).unwrap(), Some(0));
}

/// A missing key is `NotFound` for `get`, `None` for `head` and `get_opt`.
pub fn missing_is_not_found(store: &dyn ObjectBackend, prefix: &str) {
    let k = key(prefix, "never/written");
    assert!(matches!(store.get(&k), Err(ObjectError::NotFound(_))));
    assert_eq!(store.get_opt(&k).unwrap(), None);
    assert_eq!(store.head(&k).unwrap(), None);
    assert!(!store.exists(&k).unwrap());
}

/// An immutable object written again with the same bytes is accepted (retries are harmless),
/// in both durabilities.
pub fn identical_reput_is_accepted(store: &dyn ObjectBackend, prefix: &str) {
    let modes = [PutOptions::EVIDENCE, PutOptions::DERIVED, PutOptions::PHOTO];
    for (i, options) in modes.into_iter().enumerate() {
        let k = key(prefix, &format!("same-{i}"));
        let data = bytes(2 + i as u64, 300);
        store.put(&k, &data, options).unwrap();
        store.put(&k, &data, options).unwrap();
        store.put(&k, &data, PutOptions::EVIDENCE).unwrap();
        assert_eq!(store.get(&k).unwrap(), data);
    }
}

/// An immutable object written again with other bytes (of another length, or of the same) is
/// refused with `Conflict`, and the first bytes stay.
pub fn different_reput_is_refused(store: &dyn ObjectBackend, prefix: &str) {
    let k = key(prefix, "first");
    let first = bytes(3, 500);
    store.put(&k, &first, PutOptions::EVIDENCE).unwrap();
    for other in [bytes(4, 500), bytes(3, 499), bytes(3, 501), Vec::new()] {
        for options in [PutOptions::EVIDENCE, PutOptions::DERIVED] {
            match store.put(&k, &other, options) {
                Err(ObjectError::Conflict(n)) => assert_eq!(n, k.as_str()),
                other => panic!("a different re-put answered {other:?}"),
            }
        }
    }
    assert_eq!(store.get(&k).unwrap(), first);
}

/// A replaceable object takes the last bytes written.
pub fn replace_takes_the_last_bytes(store: &dyn ObjectBackend, prefix: &str) {
    let k = key(prefix, "checkpoint");
    for n in 0..3 {
        let data = bytes(10 + n, 100 + n as usize);
        store.put(&k, &data, PutOptions::LATEST).unwrap();
        assert_eq!(store.get(&k).unwrap(), data);
    }
}

/// An object of 8 MB makes the round trip unchanged, and its identical re-put is accepted.
pub fn large_object(store: &dyn ObjectBackend, prefix: &str) {
    let k = key(prefix, "large.jpg");
    let data = bytes(5, 8 << 20);
    store.put(&k, &data, PutOptions::EVIDENCE).unwrap();
    assert_eq!(store.head(&k).unwrap(), Some(8 << 20));
    assert!(store.get(&k).unwrap() == data, "8 MB came back changed");
    store.put(&k, &data, PutOptions::EVIDENCE).unwrap();
    let mut changed = data;
    changed[4 << 20] ^= 1;
    assert!(matches!(store.put(&k, &changed, PutOptions::EVIDENCE), Err(ObjectError::Conflict(_))));
}

/// Keys with slashes are distinct objects, listed by prefix, sorted.
pub fn keys_with_slashes(store: &dyn ObjectBackend, prefix: &str) {
    let names = ["tile/0/x001/234.p/17", "tile/0/x001/235", "tile/entries/000", "thumbs/ab.jpg"];
    for (i, n) in names.iter().enumerate() {
        store.put(&key(prefix, n), &bytes(20 + i as u64, 64), PutOptions::DERIVED).unwrap();
    }
    for (i, n) in names.iter().enumerate() {
        assert_eq!(store.get(&key(prefix, n)).unwrap(), bytes(20 + i as u64, 64), "{n}");
    }
    let listed = |p: &str| -> Vec<String> {
        store
            .list(&format!("{prefix}{p}"))
            .unwrap()
            .into_iter()
            .map(|k| k.as_str()[prefix.len()..].to_owned())
            .collect()
    };
    assert_eq!(listed("tile/0/"), ["tile/0/x001/234.p/17", "tile/0/x001/235"]);
    let mut all = names.map(str::to_owned).to_vec();
    all.sort();
    assert_eq!(listed(""), all);
    assert!(listed("nothing/").is_empty());
    assert!(matches!(store.list("no-slash"), Err(ObjectError::InvalidKey(_))));
    // A key under an object's name is missing, not an error.
    assert!(matches!(store.get(&key(prefix, "thumbs/ab.jpg/more")), Err(ObjectError::NotFound(_))));
}

/// Writers of the same object at once all succeed, and one copy is stored.
pub fn concurrent_identical_puts(store: Arc<dyn ObjectBackend>, prefix: &str) {
    let k = key(prefix, "raced");
    let data = Arc::new(bytes(6, 100_000));
    let writers: Vec<_> = (0..6)
        .map(|i| {
            let (store, k, data) = (store.clone(), k.clone(), data.clone());
            let options = if i % 2 == 0 { PutOptions::EVIDENCE } else { PutOptions::DERIVED };
            std::thread::spawn(move || store.put(&k, &data, options))
        })
        .collect();
    for w in writers {
        w.join().unwrap().unwrap();
    }
    assert_eq!(store.get(&k).unwrap(), *data);
    assert_eq!(store.list(prefix).unwrap(), [k]);
}

/// The suite as `#[test]`s, given an expression that answers `Some((store, guard))`, the
/// guard kept until the test ends, or `None` when the store is not available here.
macro_rules! objects_conformance_tests {
    ($open:expr) => {
        objects_conformance_tests!(@each $open;
            round_trip, missing_is_not_found, identical_reput_is_accepted,
            different_reput_is_refused, replace_takes_the_last_bytes, large_object,
            keys_with_slashes);
        #[test]
        fn concurrent_identical_puts() {
            let Some((store, _guard)) = $open else { return };
            let prefix = $crate::objects::conformance::fresh_prefix("concurrent_identical_puts");
            $crate::objects::conformance::concurrent_identical_puts(store, &prefix);
        }
    };
    (@each $open:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                let Some((store, _guard)) = $open else { return };
                let prefix = $crate::objects::conformance::fresh_prefix(stringify!($name));
                $crate::objects::conformance::$name(&*store, &prefix);
            }
        )*
    };
}

mod local {
    use std::sync::Arc;

    use crate::objects::{LocalObjects, ObjectBackend};

    fn open() -> Option<(Arc<dyn ObjectBackend>, tempfile::TempDir)> {
        let dir = tempfile::tempdir().unwrap();
        Some((Arc::new(LocalObjects::new(dir.path()).unwrap()), dir))
    }

    objects_conformance_tests!(open());

    /// The local store's files are the objects, at their keys, and nothing else is left: a
    /// refused re-put leaves no temporary file.
    #[test]
    fn files_are_the_objects_and_refusals_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalObjects::new(dir.path()).unwrap();
        let k = crate::objects::ObjectKey::new("log/tile/0/000").unwrap();
        store.put(&k, b"one", crate::objects::PutOptions::DERIVED).unwrap();
        assert!(store.put(&k, b"two", crate::objects::PutOptions::EVIDENCE).is_err());
        assert_eq!(std::fs::read(dir.path().join("log/tile/0/000")).unwrap(), b"one");
        let files: Vec<_> =
            std::fs::read_dir(dir.path().join("log/tile/0")).unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(files.len(), 1, "{files:?}");
    }
}

mod s3 {
    use std::sync::Arc;

    use crate::objects::{ObjectBackend, S3Objects};
    use crate::settings::{ObjectSettings, ObjectsKind};

    /// The bucket of `scripts/test` (`HATTAMA_TEST_S3_*`), or `None` without one (not on CI).
    pub fn settings() -> Option<ObjectSettings> {
        let var = |name: &str| std::env::var(format!("HATTAMA_TEST_S3_{name}")).ok();
        let Some(endpoint) = var("ENDPOINT") else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "HATTAMA_TEST_S3_ENDPOINT is not set: on CI the S3 object store must be tested"
            );
            eprintln!(
                "HATTAMA_TEST_S3_ENDPOINT is not set: the S3 object store is not tested here \
                 (scripts/lib/garage.sh starts one)"
            );
            return None;
        };
        Some(ObjectSettings {
            kind: ObjectsKind::S3,
            endpoint: Some(endpoint),
            bucket: var("BUCKET"),
            prefix: None,
            region: var("REGION").unwrap_or_else(|| "garage".into()),
            access_key_id: var("ACCESS_KEY_ID").map(Into::into),
            secret_access_key: var("SECRET_ACCESS_KEY").map(Into::into),
            allow_http: false,
        })
    }

    fn open() -> Option<(Arc<dyn ObjectBackend>, ())> {
        let store = S3Objects::open(&settings()?).expect("the test bucket answers");
        Some((Arc::new(store), ()))
    }

    objects_conformance_tests!(open());

    /// A bucket that does not exist is refused when the store opens, not at the first upload.
    #[test]
    fn a_missing_bucket_is_refused_at_open() {
        let Some(mut settings) = settings() else { return };
        settings.bucket = Some("hattama-no-such-bucket".into());
        let e = S3Objects::open(&settings).unwrap_err();
        assert!(matches!(e, crate::objects::ObjectError::Backend { .. }), "{e:?}");
    }
}
