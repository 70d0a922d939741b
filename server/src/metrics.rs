//! Health and metrics: `/readyz` for load balancers and orchestrators, and Prometheus metrics at
//! `/metrics` (behind a bearer token) for operators, through the `prometheus` crate.
//!
//! Counters are counted where things happen (the tus handlers and the [`middleware`]); gauges
//! (log size and integration lag, review queue, disk free) are read from storage when scraped.
//! Labels are route patterns (`/photos/{sha256}`, never a path), methods, status codes, error
//! code words and rate-limit classes: nothing personal, and a bounded set.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, web};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::error::ApiError;
use crate::startup::AppState;
use crate::storage::review::{QueueFilter, ReviewState};

/// Error codes of the tus routes that are not a refusal of the upload: a cut connection, a
/// retry racing an older request, an upload that is gone. The client resumes after them.
const NOT_REFUSALS: &[&str] =
    &["body_incomplete", "upload_busy", "offset_mismatch", "not_found", "checksum_mismatch"];

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    /// New uploads: an upload session created, or a small photo stored in one request.
    pub uploads_begun: IntCounter,
    /// Uploads completed: a capture stored and its receipt signed.
    pub uploads_completed: IntCounter,
    /// Upload requests refused, by error code.
    pub uploads_refused: IntCounterVec,
    /// Photo bytes taken into uploads (each byte once, when kept).
    pub upload_bytes: IntCounter,
    /// Receipts signed (one per stored capture).
    pub receipts: IntCounter,
    /// Requests refused by a rate limit, by class.
    pub rate_limited: IntCounterVec,
    requests: HistogramVec,
    log_size: IntGauge,
    log_integrating: IntGauge,
    log_lag: prometheus::Gauge,
    captures: IntGauge,
    review_queue: IntGauge,
    disk_free: IntGauge,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let uploads_begun = counter(
            "hattama_uploads_begun_total",
            "New uploads: upload sessions created and small photos stored in one request",
        )?;
        let uploads_completed = counter(
            "hattama_uploads_completed_total",
            "Uploads completed: captures stored with their receipt",
        )?;
        let upload_bytes =
            counter("hattama_upload_bytes_total", "Photo bytes received into uploads")?;
        let receipts = counter("hattama_receipts_signed_total", "Receipts signed")?;
        let uploads_refused = IntCounterVec::new(
            Opts::new("hattama_uploads_refused_total", "Upload requests refused, by error code"),
            &["code"],
        )?;
        registry.register(Box::new(uploads_refused.clone()))?;
        let rate_limited = IntCounterVec::new(
            Opts::new("hattama_rate_limited_total", "Requests refused by a rate limit, by class"),
            &["class"],
        )?;
        registry.register(Box::new(rate_limited.clone()))?;
        let requests = HistogramVec::new(
            HistogramOpts::new(
                "hattama_http_request_duration_seconds",
                "Time to answer a request, by route pattern",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["method", "route", "status"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        let log_lag = prometheus::Gauge::new(
            "hattama_log_integration_lag_seconds",
            "Age of the oldest stored capture not yet in a published checkpoint (0: none)",
        )?;
        registry.register(Box::new(log_lag.clone()))?;
        Ok(Self {
            uploads_begun,
            uploads_completed,
            uploads_refused,
            upload_bytes,
            receipts,
            rate_limited,
            requests,
            log_size: gauge("hattama_log_size", "Entries in the newest published checkpoint")?,
            log_integrating: gauge(
                "hattama_log_integrating",
                "1 if this server integrates the log (it holds the log lease), else 0",
            )?,
            log_lag,
            captures: gauge("hattama_captures_stored", "Captures stored")?,
            review_queue: gauge(
                "hattama_review_queue_depth",
                "Captures waiting for a coordinator's decision",
            )?,
            disk_free: gauge(
                "hattama_disk_free_bytes",
                "Free bytes on the data directory's file system",
            )?,
            registry,
        })
    }

    /// Counts a stored capture: its upload completed and its receipt signed.
    pub fn stored(&self) {
        self.uploads_completed.inc();
        self.receipts.inc();
    }

    /// Reads the gauges from storage and encodes everything in the text format.
    fn render(&self, state: &AppState) -> Result<String, ApiError> {
        let published = state.log.published_size();
        self.log_size.set(i64::try_from(published).unwrap_or(i64::MAX));
        self.log_integrating.set(i64::from(state.log.is_integrating()));
        self.log_lag.set(log_lag_ms(state)? as f64 / 1000.0);
        let stored = state.storage.capture_count()?;
        self.captures.set(i64::try_from(stored).unwrap_or(i64::MAX));
        self.review_queue.set(i64::try_from(review_queue(state)?).unwrap_or(i64::MAX));
        let free = free_bytes(&state.settings.data_dir)?;
        self.disk_free.set(i64::try_from(free).unwrap_or(i64::MAX));
        let mut text = String::new();
        TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut text)
            .map_err(|e| ApiError::internal(&e))?;
        Ok(text)
    }
}

/// How long the oldest stored capture not in a published checkpoint has waited, in ms.
fn log_lag_ms(state: &AppState) -> Result<u64, ApiError> {
    let published = state.log.published_size();
    Ok(match state.storage.log_entry_stored_at(published)? {
        Some(at) => crate::ingest::now_ms().saturating_sub(at),
        None => 0,
    })
}

/// Captures of every election that no coordinator has decided on yet.
fn review_queue(state: &AppState) -> Result<u64, ApiError> {
    state.review.refresh_index()?;
    let mut waiting = 0;
    for election in state.review.election_ids()? {
        let filter =
            QueueFilter { election, state: Some(ReviewState::New), ..QueueFilter::default() };
        waiting += state.review.queue(&filter, 0, 0)?.total;
    }
    Ok(waiting)
}

fn free_bytes(dir: &std::path::Path) -> Result<u64, ApiError> {
    rustix::fs::statvfs(dir)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .map_err(|e| ApiError::internal(&std::io::Error::from(e)))
}

/// Times every request by route pattern, and counts the refusals of upload requests: by code,
/// and per enrolled device by code when the refusal names its device (`ApiError::device`),
/// stored for the console's device pages before the answer goes out.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let started = Instant::now();
    let route = crate::telemetry::route_pattern(&req);
    let method = req.method().clone();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let result = next.call(req).await;
    let mut by_device = None;
    if let Some(state) = &state {
        let metrics = &state.metrics;
        let (status, error) = match &result {
            Ok(res) => (res.status(), res.response().error()),
            Err(e) => (e.as_response_error().status_code(), Some(e)),
        };
        // Only the standard methods: a label never holds what a client made up.
        let method = match method.as_str() {
            m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => m,
            _ => "OTHER",
        };
        metrics
            .requests
            .with_label_values(&[method, &route, status.as_str()])
            .observe(started.elapsed().as_secs_f64());
        if route.starts_with("/files/")
            && status.as_u16() >= 400
            && let Some(e) = error.and_then(|e| e.as_error::<ApiError>())
            && !NOT_REFUSALS.contains(&e.code)
        {
            metrics.uploads_refused.with_label_values(&[e.code]).inc();
            by_device = e.device.clone().map(|device| (state.console.clone(), device, e.code));
        }
    }
    if let Some((console, device, code)) = by_device {
        let now = hattama_core::now_ms();
        match web::block(move || console.record_refusal(&device, code, now)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "a device's refusal was not recorded"),
            Err(e) => tracing::warn!(error = %e, "a device's refusal was not recorded"),
        }
    }
    result
}

/// `GET /metrics` on `metrics.listen`, the separate address: no token.
pub async fn metrics_open(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    render(state).await
}

async fn render(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let s = state.clone();
    let text = web::block(move || s.metrics.render(&s)).await??;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .content_type(prometheus::TEXT_FORMAT)
        .body(text))
}

/// `GET /metrics`: the text format, with `Authorization: Bearer <metrics.token>`. Without a
/// token configured the route does not exist (404); a wrong or missing token gets 401.
pub async fn metrics(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Some(token) = state.settings.metrics.token.as_deref() else {
        return Err(ApiError::not_found("no route for GET /metrics"));
    };
    let given = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !crate::web::review::constant_time_eq(given.trim().as_bytes(), token.trim().as_bytes()) {
        return Err(ApiError::new(
            401,
            "unauthorized",
            "send Authorization: Bearer <metrics.token>",
        ));
    }
    render(state).await
}

/// `GET /readyz`: 200 `{"status":"ready"}` while the server can take uploads and log them;
/// else 503 with the failing checks (`storage`, `log_integrator`, `log_lag`, `disk`) and
/// `Retry-After`, so that a load balancer sends new clients elsewhere.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let s = state.clone();
    let checks = web::block(move || readiness(&s)).await.unwrap_or_else(|_| vec!["internal"]);
    if checks.is_empty() {
        HttpResponse::Ok()
            .insert_header(("Cache-Control", "no-store"))
            .json(serde_json::json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Cache-Control", "no-store"))
            .insert_header(("Retry-After", "10"))
            .json(serde_json::json!({ "status": "unready", "failing": checks }))
    }
}

/// The checks of `/readyz` that fail.
fn readiness(state: &AppState) -> Vec<&'static str> {
    let mut failing = Vec::new();
    if state.storage.log_size().is_err() {
        failing.push("storage");
    }
    let max_lag_ms = state.settings.readiness.max_log_lag_secs.saturating_mul(1000);
    if state.log.idle_ms() > max_lag_ms.max(5_000) {
        failing.push("log_integrator");
    }
    match log_lag_ms(state) {
        Ok(lag) if lag <= max_lag_ms => {}
        _ => failing.push("log_lag"),
    }
    match free_bytes(&state.settings.data_dir) {
        Ok(free) if free >= state.settings.limits.min_free_bytes => {}
        _ => failing.push("disk"),
    }
    failing
}
