//! Building and running the HTTP server. `Application::build` binds the port (port 0 in tests)
//! and reports the real one before serving.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpServer, web};
use futures_util::FutureExt;
use hattama_core::media::MediaLimits;

use crate::error::ApiError;
use crate::keys::ServerKeys;
use crate::routes::{self, tus::UploadSlots};
use crate::settings::Settings;
use crate::storage::{ReviewStorage, Storage};
use crate::tls::CertStore;

pub use crate::state::AppState;
use crate::state::Background;

/// Reads the witness policy and checks that it names this log and that its witnesses can be
/// reached (a URL each).
fn witness_policy(
    path: &std::path::Path,
    origin: &str,
    key: &ed25519_dalek::SigningKey,
) -> Result<crate::witnessing::ServerPolicy, StartError> {
    let bad = |d: String| StartError::WitnessPolicy(format!("{}: {d}", path.display()));
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let text = String::from_utf8(text).map_err(|_| bad("not UTF-8".into()))?;
    let policy =
        hattama_core::witness::Policy::parse(text.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let ours =
        hattama_core::log::LogKey::for_signer(origin, key).map_err(|e| bad(e.to_string()))?;
    if !policy.logs().iter().any(|l| l.key == ours) {
        return Err(bad(format!("it does not name this log: add the line `log {}`", ours.vkey)));
    }
    if let Some(w) = policy.witnesses().iter().find(|w| w.url.is_none()) {
        return Err(bad(format!("witness {} has no URL (its submission prefix)", w.name)));
    }
    Ok(crate::witnessing::ServerPolicy { policy, text })
}

/// A bound, not yet running server.
pub struct Application {
    addr: SocketAddr,
    server: actix_web::dev::Server,
    /// The separate metrics listener (`metrics.listen`), if any.
    metrics: Option<actix_web::dev::Server>,
    /// The certificate of the HTTPS listener, read again on `SIGHUP`.
    certs: Option<Arc<CertStore>>,
    /// The log's integrator and the witnessing, stopped when the servers have stopped.
    background: Background,
    /// The handlers' state: `run` drops this last reference to it (see [`release`]).
    state: web::Data<AppState>,
    _lock: std::fs::File,
}

/// Stops a running [`Application`] (its listeners; then `run` stops its threads and returns).
#[derive(Clone)]
pub struct StopHandle {
    server: actix_web::dev::ServerHandle,
    metrics: Option<actix_web::dev::ServerHandle>,
}

impl StopHandle {
    /// Stops the app's listeners; with `graceful`, requests under way finish first.
    pub async fn stop(&self, graceful: bool) {
        if let Some(metrics) = &self.metrics {
            metrics.stop(graceful).await;
        }
        self.server.stop(graceful).await;
    }
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
    /// The object store (`[storage.objects]`) cannot be opened.
    #[error("object store: {0}")]
    Objects(#[from] crate::objects::ObjectError),
    /// Another server uses this data directory.
    #[error("another server is running on data directory {0}")]
    Busy(String),
    /// The witness policy cannot be used.
    #[error("witness_policy: {0}")]
    WitnessPolicy(String),
    /// The certificate or key of `[tls]` could not be loaded.
    #[error("TLS: {0}")]
    Tls(crate::tls::TlsError),
}

impl Application {
    /// Opens storage (with crash recovery), loads keys, binds the listener.
    pub fn build(settings: Settings) -> Result<Self, StartError> {
        std::fs::create_dir_all(&settings.data_dir)?;
        let lock = std::fs::File::create(settings.data_dir.join("server.lock"))?;
        if lock.try_lock().is_err() {
            return Err(StartError::Busy(settings.data_dir.display().to_string()));
        }
        // The one object store of the app: the log's tiles and checkpoints, the renditions, and
        // on PostgreSQL the photos.
        let objects = crate::objects::open(&settings)?;
        let backend = crate::storage::open_with(
            &settings,
            crate::storage::Opener::Server,
            Some(objects.clone()),
        )?;
        let storage: Arc<dyn Storage> = backend.clone();
        let gallery = Arc::new(crate::gallery::Gallery::new(backend.clone(), backend.clone()));
        let console: Arc<dyn crate::storage::ConsoleStorage> = backend.clone();
        let review: Arc<dyn ReviewStorage> = backend;
        let keys = Arc::new(ServerKeys::load_or_create(&settings.data_dir)?);
        let log = crate::log::Log::open(
            storage.clone(),
            keys.log.clone(),
            &settings.log_origin,
            objects.clone(),
        )?;
        // From here, a failed start stops the threads again (`background` is dropped).
        let mut background = Background::new(log.clone());
        background.push(log.start()?);
        let witness_policy = match &settings.witness_policy {
            Some(path) => {
                let policy = Arc::new(witness_policy(path, &settings.log_origin, &keys.log)?);
                let timeout = std::time::Duration::from_millis(settings.witness_timeout_ms);
                background.push(crate::witnessing::start(
                    log.clone(),
                    policy.policy.clone(),
                    timeout,
                )?);
                Some(policy)
            }
            None => None,
        };
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
            objects.clone(),
            settings.limits.max_decodes,
            settings.limits.thumbnail_at_upload,
        )?);
        let metrics = Arc::new(crate::metrics::Metrics::new().map_err(std::io::Error::other)?);
        let rate_limits =
            Arc::new(crate::ratelimit::RateLimits::new(&settings.rate_limits, metrics.clone()));
        let free_space =
            crate::ingest::FreeSpace::new(&settings.data_dir, settings.limits.min_free_bytes);
        let state = web::Data::new(AppState {
            storage,
            objects,
            keys,
            settings,
            media_limits,
            uploads: UploadSlots::default(),
            log,
            gallery,
            review,
            console,
            dashboards: Default::default(),
            login_throttle,
            thumbs,
            metrics,
            rate_limits,
            free_space,
            photo_bufs: Default::default(),
            whole_in_memory: Default::default(),
            witness_policy,
            set_packages: Default::default(),
        });
        let (server, certs) = match &state.settings.tls {
            None => {
                let state = state.clone();
                // TCP_NODELAY: an answer written in more than one piece (a head, then its body)
                // is sent at once, not held by Nagle's algorithm until the client's delayed
                // acknowledgement of the first piece, up to 40 ms later on a kept-alive
                // connection.
                let mut server = HttpServer::new(move || app(state.clone()))
                    .tcp_nodelay(true)
                    .listen(listener)?;
                if workers > 0 {
                    server = server.workers(workers);
                }
                (server.run(), None)
            }
            Some(tls) => {
                let certs = CertStore::open(tls).map_err(StartError::Tls)?;
                let config = certs.server_config().map_err(StartError::Tls)?;
                (https_server(state.clone(), listener, config, workers)?, Some(certs))
            }
        };
        let metrics = match state.settings.metrics.listen {
            None => None,
            Some(listen) => {
                let state = state.clone();
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(state.clone())
                        .route("/metrics", web::get().to(crate::metrics::metrics_open))
                })
                .workers(1)
                .bind(listen)?;
                Some(server.run())
            }
        };
        Ok(Self { addr, server, metrics, certs, background, state, _lock: lock })
    }

    /// What stops this app once it runs.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            server: self.server.handle(),
            metrics: self.metrics.as_ref().map(actix_web::dev::Server::handle),
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's base URL: `https://ADDR` with `[tls]`, else `http://ADDR`.
    pub fn url(&self) -> String {
        let scheme = if self.certs.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Serves until stopped (a signal, or [`Application::stop_handle`]), then stops the app's
    /// threads and drops its state, once its workers have let go of theirs (`release`), so
    /// that nothing of the app (its storage's connections, its data directory's lock) outlives
    /// the returned future. `SIGHUP` reads the certificate and key of `[tls]` again.
    pub async fn run(self) -> std::io::Result<()> {
        // Always caught: `systemctl reload` must never end a server that has nothing to reload.
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let certs = self.certs;
        actix_web::rt::spawn(async move {
            while hangups.recv().await.is_some() {
                match certs.as_ref().map(|c| c.reload()) {
                    None => tracing::info!("SIGHUP: no TLS certificate to reload"),
                    Some(Ok(())) => tracing::info!("TLS certificate reloaded"),
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "TLS certificate not reloaded; keeping the old one");
                    }
                }
            }
        });
        let lock = self._lock;
        let background = self.background;
        let state = self.state;
        let result = match self.metrics {
            None => self.server.await,
            Some(metrics) => futures_util::future::try_join(self.server, metrics).await.map(|_| ()),
        };
        // The integrator may be in the middle of a batch: wait for it off the async threads, then
        // for the workers to let go of the state.
        let _ = tokio::task::spawn_blocking(move || {
            drop(background);
            release(state);
        })
        .await;
        drop(lock);
        result
    }
}

/// How long a stopped app waits for its workers to let go of the state ([`release`]): as long
/// as actix's graceful stop waits for the requests under way.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// Drops the app's last reference to its state, and with it the storage and the log, once the
/// workers (and the blocking tasks of their requests) have dropped theirs. A worker drops its
/// clone on its own async thread as it stops, after the listener has stopped; had it the last
/// one, closing a PostgreSQL connection (the pool's, the log lease's) would panic there, as
/// it blocks. Called off the async threads, so that `Application::run` returns only when
/// nothing of the app remains open.
fn release(state: web::Data<AppState>) {
    let state = state.into_inner();
    let deadline = std::time::Instant::now() + RELEASE_TIMEOUT;
    while Arc::strong_count(&state) > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if Arc::strong_count(&state) > 1 {
        tracing::warn!("a worker still holds the app's state after the app stopped");
    }
}

/// The application: every route and middleware, over the shared state. Built once per worker.
fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let hsts = state
        .settings
        .tls
        .as_ref()
        .filter(|t| t.hsts_max_age_secs > 0)
        .map(|t| format!("max-age={}", t.hsts_max_age_secs));
    App::new()
        .wrap_fn(|req, srv| {
            // Bodies are never decoded: a compressed body could expand without bound.
            let encoded = req
                .headers()
                .get("Content-Encoding")
                .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
            if encoded {
                let e =
                    ApiError::new(415, "unsupported_encoding", "Content-Encoding is not accepted");
                return async move { Err(e.into()) }.boxed_local();
            }
            srv.call(req).boxed_local()
        })
        .wrap(actix_web::middleware::from_fn(crate::ratelimit::middleware))
        .wrap(actix_web::middleware::from_fn(crate::web::middleware))
        .wrap(actix_web::middleware::from_fn(crate::metrics::middleware))
        .wrap(tracing_actix_web::TracingLogger::<crate::telemetry::RequestSpan>::new())
        // Outermost: answers (HTML, CSS, JSON, CSV) are compressed as the client accepts
        // (brotli or gzip); photos and tiles are sent as they are. Request bodies are
        // never decoded (see above), so an upload is never decompressed.
        .wrap(actix_web::middleware::Compress::default())
        // HTTPS only: browsers remember to use nothing else for this host.
        .wrap(actix_web::middleware::Condition::new(
            hsts.is_some(),
            actix_web::middleware::DefaultHeaders::new()
                .add(("Strict-Transport-Security", hsts.unwrap_or_default())),
        ))
        .app_data(state)
        // Malformed paths and queries get the JSON error of the API (and the HTML error
        // page on browser routes, through the web middleware).
        .app_data(
            web::QueryConfig::default()
                .error_handler(|e, _| ApiError::new(400, "bad_query", e.to_string()).into()),
        )
        .app_data(
            web::PathConfig::default()
                .error_handler(|e, _| ApiError::new(400, "bad_path", e.to_string()).into()),
        )
        .configure(routes::configure)
        .configure(crate::web::configure)
        .default_service(web::to(routes::not_found))
}

/// The HTTPS server: each connection's first byte is looked at (a plain HTTP request gets
/// `tls::PLAIN_HTTP_ANSWER`), then TLS (rustls, the certificate from `tls::CertStore`), then
/// HTTP/2 or HTTP/1.1 as ALPN chose.
fn https_server(
    state: web::Data<AppState>,
    listener: TcpListener,
    config: rustls::ServerConfig,
    workers: usize,
) -> std::io::Result<actix_web::dev::Server> {
    use actix_service::{ServiceFactoryExt, fn_service, map_config};
    let mut builder = actix_server::Server::build();
    if workers > 0 {
        builder = builder.workers(workers);
    }
    Ok(builder
        .listen("hattama-https", listener, move || {
            let http = actix_http::HttpService::build()
                .finish(map_config(app(state.clone()), |_| actix_web::dev::AppConfig::default()))
                .rustls_0_23(config.clone());
            fn_service(refuse_plain_http).and_then(http)
        })?
        .run())
}

/// Passes a connection on to TLS unless it starts with a plain HTTP request, which is answered
/// `400 https_required` and closed.
async fn refuse_plain_http(
    io: actix_rt::net::TcpStream,
) -> Result<
    actix_rt::net::TcpStream,
    actix_tls::accept::TlsError<std::io::Error, actix_http::error::DispatchError>,
> {
    use actix_tls::accept::TlsError;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // TCP_NODELAY, as on the plain HTTP listener (`Application::build`).
    if let Err(e) = io.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(Duration::from_secs(10), io.peek(&mut first)).await;
    let plain = matches!(peeked, Ok(Ok(1))) && crate::tls::looks_like_plain_http(first[0]);
    if !plain {
        // A handshake, or nothing: TLS deals with it (and with its timeout).
        return Ok(io);
    }
    let mut io = io;
    // Read the request's head first: closing with unread bytes would reset the connection
    // and lose the answer.
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while head.len() < 64 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let _ = io.write_all(crate::tls::PLAIN_HTTP_ANSWER).await;
    let _ = io.shutdown().await;
    Err(TlsError::Tls(std::io::Error::other("plain HTTP on the HTTPS port")))
}
