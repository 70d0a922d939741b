//! Building and running the HTTP server. `Application::build` binds the port (port 0 in tests)
//! and reports the real one before serving.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::Service;
use actix_web::{App, HttpServer, web};
use futures_util::FutureExt;
use hattama_core::media::MediaLimits;

use crate::error::ApiError;
use crate::keys::ServerKeys;
use crate::routes::{self, tus::UploadSlots};
use crate::settings::Settings;
use crate::storage::{ReviewStorage, SqliteStorage, Storage};

/// Shared state of the handlers.
pub struct AppState {
    /// Storage.
    pub storage: Arc<dyn Storage>,
    /// Signing keys.
    pub keys: Arc<ServerKeys>,
    /// Settings.
    pub settings: Settings,
    /// The photo limits, from the settings.
    pub media_limits: MediaLimits,
    /// Per-upload locks.
    pub uploads: UploadSlots,
    /// The public log.
    pub log: Arc<crate::log::Log>,
    /// The public views (gallery, API, open data) and their cache.
    pub gallery: Arc<crate::gallery::Gallery>,
    /// The review's storage (the same database as `storage`).
    pub review: Arc<dyn ReviewStorage>,
    /// Failed logins of the review UI.
    pub login_throttle: crate::review::LoginThrottle,
    /// Thumbnails and the server-wide bound on photo decodes.
    pub thumbs: Arc<crate::thumbs::Thumbnails>,
    /// The free-space floor of uploads.
    pub free_space: crate::ingest::FreeSpace,
}

/// A bound, not yet running server.
pub struct Application {
    addr: SocketAddr,
    server: actix_web::dev::Server,
    _lock: std::fs::File,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// I/O (binding, data dir).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Storage.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// Another server uses this data directory.
    #[error("another server is running on data directory {0}")]
    Busy(String),
}

impl Application {
    /// Opens storage (with crash recovery), loads keys, binds the listener.
    pub fn build(settings: Settings) -> Result<Self, StartError> {
        std::fs::create_dir_all(&settings.data_dir)?;
        let lock = std::fs::File::create(settings.data_dir.join("server.lock"))?;
        if lock.try_lock().is_err() {
            return Err(StartError::Busy(settings.data_dir.display().to_string()));
        }
        let sqlite = Arc::new(SqliteStorage::open(&settings.data_dir, true)?);
        let storage: Arc<dyn Storage> = sqlite.clone();
        let gallery = Arc::new(crate::gallery::Gallery::new(sqlite.clone(), sqlite.clone()));
        let review: Arc<dyn ReviewStorage> = sqlite;
        let keys = Arc::new(ServerKeys::load_or_create(&settings.data_dir)?);
        let log = crate::log::Log::open(
            storage.clone(),
            keys.log.clone(),
            &settings.log_origin,
            &settings.data_dir,
        )?;
        log.start()?;
        let listener = TcpListener::bind(settings.listen)?;
        let addr = listener.local_addr()?;
        let media_limits =
            MediaLimits { max_bytes: settings.limits.max_photo_bytes, ..MediaLimits::default() };
        let workers = settings.workers;
        let login_throttle = crate::review::LoginThrottle::new(
            settings.review.login_max_failures,
            settings.review.login_window_secs,
            settings.review.login_max_delay_secs,
        );
        let thumbs = Arc::new(crate::thumbs::Thumbnails::new(
            settings.data_dir.clone(),
            settings.limits.max_decodes,
            settings.limits.thumbnail_at_upload,
        )?);
        let free_space =
            crate::ingest::FreeSpace::new(&settings.data_dir, settings.limits.min_free_bytes);
        let state = web::Data::new(AppState {
            storage,
            keys,
            settings,
            media_limits,
            uploads: UploadSlots::default(),
            log,
            gallery,
            review,
            login_throttle,
            thumbs,
            free_space,
        });
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap_fn(|req, srv| {
                    // Bodies are never decoded: a compressed body could expand without bound.
                    let encoded = req
                        .headers()
                        .get("Content-Encoding")
                        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
                    if encoded {
                        let e = ApiError::new(
                            415,
                            "unsupported_encoding",
                            "Content-Encoding is not accepted",
                        );
                        return async move { Err(e.into()) }.boxed_local();
                    }
                    srv.call(req).boxed_local()
                })
                .wrap(actix_web::middleware::from_fn(crate::web::middleware))
                .wrap(tracing_actix_web::TracingLogger::<crate::telemetry::RequestSpan>::new())
                // Outermost: answers (HTML, CSS, JSON, CSV) are compressed as the client accepts
                // (brotli or gzip); photos and tiles are sent as they are. Request bodies are
                // never decoded (see above), so an upload is never decompressed.
                .wrap(actix_web::middleware::Compress::default())
                .app_data(state.clone())
                // Malformed paths and queries get the JSON error of the API (and the HTML error
                // page on browser routes, through the web middleware).
                .app_data(
                    web::QueryConfig::default().error_handler(|e, _| {
                        ApiError::new(400, "bad_query", e.to_string()).into()
                    }),
                )
                .app_data(
                    web::PathConfig::default()
                        .error_handler(|e, _| ApiError::new(400, "bad_path", e.to_string()).into()),
                )
                .configure(routes::configure)
                .configure(crate::web::configure)
                .default_service(web::to(routes::not_found))
        })
        .listen(listener)?;
        if workers > 0 {
            server = server.workers(workers);
        }
        Ok(Self { addr, server: server.run(), _lock: lock })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until stopped.
    pub async fn run(self) -> std::io::Result<()> {
        let lock = self._lock;
        let result = self.server.await;
        drop(lock);
        result
    }
}
