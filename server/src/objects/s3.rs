//! [`S3Objects`]: objects in an S3-compatible bucket (Garage, MinIO, a cloud provider's), through
//! the `object_store` crate, with path-style requests (`ENDPOINT/BUCKET/KEY`), as self-hosted
//! servers expect.
//!
//! The trait is blocking and `object_store` is async: the store owns a small tokio runtime of its
//! own (two threads, not the app's), and each call hands its future to it and waits on a channel,
//! so a call works from any thread, inside another runtime's blocking pool or outside any.
//!
//! Immutable objects ([`Mode::Immutable`]): S3 servers differ on conditional writes (Garage accepts a PUT with
//! `If-None-Match: *` over an existing object), so a `put` first asks whether the object exists
//! and compares bytes if it does; a PUT that the server does refuse as existing is compared too.
//! Two writers racing on one new key may both PUT: harmless for content-addressed and
//! deterministic objects (the same bytes), and nothing else is immutable here. Photos
//! ([`Mode::ContentAddressed`], named by the SHA-256 of their bytes) skip the look: one PUT.

use std::sync::mpsc;
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    ClientOptions, ObjectStore as _, ObjectStoreExt as _, PutMode, PutPayload, RetryConfig,
};
use secrecy::ExposeSecret;

use super::{Mode, ObjectBackend, ObjectError, ObjectKey, PutOptions, check_prefix};
use crate::settings::ObjectSettings;

/// Objects in an S3-compatible bucket.
pub struct S3Objects {
    store: AmazonS3,
    /// `""`, or the folder of the bucket every key is under, ending with `/`.
    prefix: String,
    /// The runtime the requests run on; `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for S3Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The store's own Debug would print its configuration; the credentials stay out.
        f.debug_struct("S3Objects").finish_non_exhaustive()
    }
}

impl Drop for S3Objects {
    fn drop(&mut self) {
        // Without waiting: a drop may happen on a thread of another runtime, where a blocking
        // shutdown would panic.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn backend(source: impl std::error::Error + Send + Sync + 'static) -> ObjectError {
    ObjectError::Backend { source: Box::new(source) }
}

/// The boundary's error for a client error about `key`.
fn error(key: &str, e: object_store::Error) -> ObjectError {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => ObjectError::NotFound(key.to_owned()),
        // Connections refused or cut, timeouts, 5xx answers after the client's retries.
        E::Generic { source, .. } => ObjectError::Unavailable(source.to_string()),
        other => backend(other),
    }
}

impl S3Objects {
    /// The bucket that `settings` name (checked by `Settings::validate`); fails unless the
    /// bucket answers a listing with these credentials.
    pub fn open(settings: &ObjectSettings) -> Result<Self, ObjectError> {
        let missing = |what: &str| ObjectError::Backend {
            source: format!("storage.objects.{what} is not set").into(),
        };
        let endpoint = settings.endpoint.as_deref().ok_or_else(|| missing("endpoint"))?;
        let bucket = settings.bucket.as_deref().ok_or_else(|| missing("bucket"))?;
        let key_id = settings.access_key_id.as_ref().ok_or_else(|| missing("access_key_id"))?;
        let secret =
            settings.secret_access_key.as_ref().ok_or_else(|| missing("secret_access_key"))?;
        let client = ClientOptions::new()
            .with_allow_http(endpoint.starts_with("http://"))
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(60));
        // A few quick retries: an instance that cannot reach the bucket says so within seconds
        // (the request answers 503 and the client retries), rather than hanging for minutes.
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(15),
            ..RetryConfig::default()
        };
        let store = AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_bucket_name(bucket)
            .with_region(&settings.region)
            .with_access_key_id(key_id.expose_secret())
            .with_secret_access_key(secret.expose_secret())
            .with_virtual_hosted_style_request(false)
            .with_unsigned_payload(settings.transport_protects_bodies())
            .with_client_options(client)
            .with_retry(retry)
            .build()
            .map_err(backend)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("objects-s3")
            .enable_all()
            .build()?;
        let prefix = match settings.prefix.as_deref().map(|p| p.trim_end_matches('/')) {
            Some(p) if !p.is_empty() => format!("{p}/"),
            _ => String::new(),
        };
        let objects = Self { store, prefix, runtime: Some(runtime) };
        // A bucket that does not exist, credentials it refuses or an endpoint that does not
        // answer fail here, when the server starts, rather than at the first upload. (The
        // client reports a listing's 404, NoSuchBucket, as a generic error: any failure here is
        // the configuration's.)
        let probe = Path::from("hattama-probe");
        objects
            .run(|s| async move {
                s.list_with_delimiter(Some(&probe)).await.map_err(|e| {
                    backend(std::io::Error::other(format!(
                        "the bucket does not answer a listing (storage.objects: endpoint, \
                         bucket, region, credentials): {e}"
                    )))
                })
            })
            .map(drop)?;
        Ok(objects)
    }

    /// Runs what `f` makes of the store on the store's runtime and waits for it.
    fn run<T, F>(&self, f: impl FnOnce(AmazonS3) -> F) -> Result<T, ObjectError>
    where
        F: Future<Output = Result<T, ObjectError>> + Send + 'static,
        T: Send + 'static,
    {
        let gone = || ObjectError::Unavailable("the object store's runtime stopped".into());
        let runtime = self.runtime.as_ref().ok_or_else(gone)?;
        let (tx, rx) = mpsc::sync_channel(1);
        let fut = f(self.store.clone());
        runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| gone())?
    }

    /// The bucket's name of an object.
    fn name(&self, key: &ObjectKey) -> String {
        format!("{}{key}", self.prefix)
    }

    fn same(&self, key: &ObjectKey, bytes: &[u8]) -> Result<(), ObjectError> {
        if self.get(key)? == bytes { Ok(()) } else { Err(ObjectError::Conflict(key.to_string())) }
    }
}

/// Writes made at once ([`ObjectBackend::parallel_writes`]): the tiles of one log batch, a
/// handful, leave together.
const PARALLEL_WRITES: usize = 8;

impl ObjectBackend for S3Objects {
    fn put(&self, key: &ObjectKey, bytes: &[u8], options: PutOptions) -> Result<(), ObjectError> {
        if options.mode == Mode::Immutable
            && let Some(size) = self.head(key)?
        {
            if size != bytes.len() as u64 {
                return Err(ObjectError::Conflict(key.to_string()));
            }
            return self.same(key, bytes);
        }
        let mode = match options.mode {
            Mode::Immutable => PutMode::Create,
            // The same name is the same bytes: one PUT, no HEAD before it.
            Mode::Replace | Mode::ContentAddressed => PutMode::Overwrite,
        };
        let payload = PutPayload::from(bytes.to_vec());
        let name = self.name(key);
        let created = self.run(|s| async move {
            let path = Path::from(name.as_str());
            match s.put_opts(&path, payload, mode.into()).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                Err(e) => Err(error(&name, e)),
            }
        })?;
        if created { Ok(()) } else { self.same(key, bytes) }
    }

    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, ObjectError> {
        let (name, shown) = (self.name(key), key.to_string());
        self.run(|s| async move {
            let path = Path::from(name.as_str());
            let got = s.get(&path).await.map_err(|e| error(&shown, e))?;
            let bytes = got.bytes().await.map_err(|e| error(&shown, e))?;
            Ok(bytes.to_vec())
        })
    }

    fn head(&self, key: &ObjectKey) -> Result<Option<u64>, ObjectError> {
        let name = self.name(key);
        self.run(|s| async move {
            match s.head(&Path::from(name.as_str())).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(error(&name, e)),
            }
        })
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), ObjectError> {
        let name = self.name(key);
        self.run(|s| async move {
            match s.delete(&Path::from(name.as_str())).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(error(&name, e)),
            }
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>, ObjectError> {
        check_prefix(prefix)?;
        let folder = format!("{}{prefix}", self.prefix);
        let mine = self.prefix.clone();
        let mut keys = self.run(|s| async move {
            let folder = folder.trim_end_matches('/');
            let path = (!folder.is_empty()).then(|| Path::from(folder));
            let metas: Vec<_> =
                s.list(path.as_ref()).try_collect().await.map_err(|e| error(folder, e))?;
            metas
                .into_iter()
                .map(|m| {
                    let name = m.location.as_ref();
                    ObjectKey::new(name.strip_prefix(mine.as_str()).unwrap_or(name))
                })
                .collect::<Result<Vec<_>, _>>()
        })?;
        keys.sort();
        Ok(keys)
    }

    fn parallel_writes(&self) -> usize {
        PARALLEL_WRITES
    }
}
