//! Rate limits per client (`governor`, generic cell rate algorithm): a client above its rate gets
//! `429 rate_limited` with `Retry-After` (which the core honours) and a JSON body, while every
//! other client is served as before.
//!
//! - **Per client address** (the real client's: `throttle::client_address`, believing
//!   `X-Forwarded-For` only from `trusted_proxies`; IPv6 per /64): enrollment, logins to the
//!   review, the public pages and API (and any unknown path), evidence downloads (photos and
//!   manifests). Classified by route pattern in [`middleware`].
//! - **Per device** (its key, once the manifest's signature verified, so nobody can spend
//!   another device's allowance): new uploads, in `ingest::create_upload` and
//!   `ingest::check_creation` through [`RateLimits::upload`]. Resuming an upload (`HEAD`,
//!   `PATCH`) is not limited: its bytes are bounded by the upload's signed length and the
//!   device's quotas.
//! - **Not limited**: the log's files and proofs (static, cached, what mirrors and auditors
//!   read), receipts and decisions (signed per device), health, readiness, metrics, static
//!   assets and the rest of the review (behind a session).
//!
//! The defaults (`settings::RateLimits`) are far above what election night asks of one client:
//! 10,000 stations × 3 photos in three hours is 2.8 uploads a second over *all* devices
//! (28 at ten times that), while one device may begin 100 a second (`scripts/bench ingest`
//! reaches about 21 per device). Memory: a key's state is a few bytes; keys idle long enough
//! to be full again are dropped every few thousand checks.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hattama_core::evidence::SignedManifest;

use crate::error::ApiError;
use crate::settings::{Rate, RateLimits as Settings};
use crate::startup::AppState;

/// What a request is limited as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// `POST /api/v1/enroll`.
    Enroll,
    /// `POST /review/login`.
    Login,
    /// The public pages, the public API and unknown paths.
    Public,
    /// Photos, thumbnails, renditions and manifests.
    Evidence,
    /// New uploads of one device.
    Upload,
}

impl Class {
    /// The label of the class (metrics, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Enroll => "enroll",
            Class::Login => "login",
            Class::Public => "public",
            Class::Evidence => "evidence",
            Class::Upload => "upload",
        }
    }

    /// The class of a request by its route pattern and method; `None`: not limited here.
    pub fn of(route: &str, method: &actix_web::http::Method) -> Option<Self> {
        let limited_elsewhere_or_never = [
            "/files/",
            "/log/",
            "/api/v1/log/",
            "/api/v1/receipts/",
            "/api/v1/challenge",
            "/api/v1/decisions",
            "/static/",
            "/health",
            "/readyz",
            "/metrics",
            "/lang",
        ];
        if route == "/api/v1/enroll" {
            Some(Class::Enroll)
        } else if route == "/review/login" {
            (method == actix_web::http::Method::POST).then_some(Class::Login)
        } else if route.starts_with("/review") {
            None
        } else if route.starts_with("/photos/")
            || route.starts_with("/api/v1/captures/")
            || route.ends_with("/evidence-package.zip")
        {
            Some(Class::Evidence)
        } else if limited_elsewhere_or_never.iter().any(|p| route.starts_with(p)) {
            None
        } else {
            Some(Class::Public)
        }
    }
}

/// One keyed limiter and the checks since its last clean-up.
struct Limiter {
    keyed: DefaultKeyedRateLimiter<String>,
    checks: AtomicU64,
}

/// Checks between two clean-ups of idle keys.
const CLEAN_EVERY: u64 = 4096;

impl Limiter {
    fn new(rate: Rate) -> Option<Self> {
        let per_minute = NonZeroU32::new(rate.per_minute)?;
        let burst = NonZeroU32::new(rate.burst)?;
        let quota = Quota::per_minute(per_minute).allow_burst(burst);
        Some(Self { keyed: RateLimiter::keyed(quota), checks: AtomicU64::new(0) })
    }

    /// `Err(seconds to wait)` if `key` is over its rate.
    fn check(&self, key: &str) -> Result<(), u64> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % CLEAN_EVERY == CLEAN_EVERY - 1 {
            self.keyed.retain_recent();
            self.keyed.shrink_to_fit();
        }
        self.keyed.check_key(&key.to_owned()).map_err(|not_until| {
            let wait: Duration = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + 1
        })
    }
}

/// The server's rate limits (see the module docs); `None` where a limit is off.
pub struct RateLimits {
    enroll: Option<Limiter>,
    login: Option<Limiter>,
    public: Option<Limiter>,
    evidence: Option<Limiter>,
    upload: Option<Limiter>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl RateLimits {
    /// The limits of the settings.
    pub fn new(s: &Settings, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        Self {
            enroll: Limiter::new(s.enroll),
            login: Limiter::new(s.login),
            public: Limiter::new(s.public),
            evidence: Limiter::new(s.evidence),
            upload: Limiter::new(s.uploads),
            metrics,
        }
    }

    /// Checks one request of `key` (a client address or a device id) of `class`.
    pub fn check(&self, class: Class, key: &str) -> Result<(), ApiError> {
        let limiter = match class {
            Class::Enroll => &self.enroll,
            Class::Login => &self.login,
            Class::Public => &self.public,
            Class::Evidence => &self.evidence,
            Class::Upload => &self.upload,
        };
        let Some(limiter) = limiter else { return Ok(()) };
        limiter.check(key).map_err(|secs| {
            self.metrics.rate_limited.with_label_values(&[class.as_str()]).inc();
            let mut e = ApiError::new(
                429,
                "rate_limited",
                format!(
                    "too many requests from here; wait {secs} s and try again (nothing was lost)"
                ),
            );
            e.retry_after = Some(secs);
            e
        })
    }

    /// Checks a new upload of the device that signed `signed`.
    pub fn upload(&self, signed: &SignedManifest) -> Result<(), ApiError> {
        self.check(Class::Upload, &crate::storage::device_id(&signed.manifest.device_key))
    }
}

/// Applies the per-address limits by route pattern, before the handler runs.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody + 'static>>, actix_web::Error> {
    let route = crate::telemetry::route_pattern(&req);
    let class = Class::of(&route, req.method());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    if let (Some(class), Some(state)) = (class, state) {
        let forwarded: Vec<&str> =
            req.headers().get_all("X-Forwarded-For").filter_map(|v| v.to_str().ok()).collect();
        let client = crate::throttle::client_address(
            req.peer_addr().map(|a| a.ip()),
            &forwarded,
            &state.settings.trusted_proxies,
        );
        if let Err(e) = state.rate_limits.check(class, &client) {
            let response = e.error_response();
            return Ok(req.into_response(response).map_into_right_body());
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::Method;

    #[test]
    fn routes_are_classified_by_pattern() {
        let check = |route: &str, method: Method, expected: Option<Class>| {
            assert_eq!(Class::of(route, &method), expected, "{method} {route}");
        };
        check("/api/v1/enroll", Method::POST, Some(Class::Enroll));
        check("/review/login", Method::POST, Some(Class::Login));
        check("/review/login", Method::GET, None);
        check("/review/captures/{id}", Method::GET, None);
        check("/photos/{sha256}", Method::GET, Some(Class::Evidence));
        check("/photos/{sha256}/thumb", Method::GET, Some(Class::Evidence));
        check("/api/v1/captures/{id}", Method::GET, Some(Class::Evidence));
        let package = "/api/v1/elections/{election}/precincts/{precinct}/evidence-package.zip";
        check(package, Method::GET, Some(Class::Evidence));
        check("/api/v1/elections/{election}", Method::GET, Some(Class::Public));
        check("/", Method::GET, Some(Class::Public));
        check("unmatched", Method::GET, Some(Class::Public));
        for free in ["/files/", "/files/{id}", "/log/checkpoint", "/log/tile/{tail:.*}"] {
            check(free, Method::GET, None);
        }
        check("/api/v1/receipts/{id}", Method::GET, None);
        check("/healthz", Method::GET, None);
        check("/readyz", Method::GET, None);
        check("/static/{file}", Method::GET, None);
    }

    #[test]
    fn a_client_over_its_rate_waits_and_others_are_served() {
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::new().unwrap());
        let settings =
            Settings { public: Rate { per_minute: 60, burst: 3 }, ..Settings::default() };
        let limits = RateLimits::new(&settings, metrics);
        for _ in 0..3 {
            limits.check(Class::Public, "198.51.100.1").unwrap();
        }
        let e = limits.check(Class::Public, "198.51.100.1").unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (429, "rate_limited"));
        assert!(matches!(e.retry_after, Some(1..=2)), "{:?}", e.retry_after);
        limits.check(Class::Public, "198.51.100.2").unwrap();
        // Another class of the same client has its own allowance.
        limits.check(Class::Evidence, "198.51.100.1").unwrap();
    }

    /// `scripts/bench ingest` sends at most 60,000 tiny captures over 128 devices (469 each,
    /// at about 21 a second) after enrolling 144 devices from one address; election night is
    /// 3 photos per station and device. With the defaults none of it is refused, even all at
    /// once.
    #[test]
    fn the_defaults_never_refuse_the_bench_or_election_night() {
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::new().unwrap());
        let limits = RateLimits::new(&Settings::default(), metrics);
        for _ in 0..600 {
            limits.check(Class::Upload, "a bench device").unwrap();
        }
        for _ in 0..200 {
            limits.check(Class::Enroll, "127.0.0.1").unwrap();
        }
        let defaults = Settings::default();
        // Ten times election night over all devices, as if they were one: 10,000 × 3 × 10 in
        // three hours is 28 a second; one device may begin 100 a second.
        assert!(f64::from(defaults.uploads.per_minute) / 60.0 >= 10_000.0 * 3.0 * 10.0 / 10_800.0);
    }

    #[test]
    fn a_zero_turns_a_limit_off() {
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::new().unwrap());
        let settings = Settings { enroll: Rate { per_minute: 0, burst: 1 }, ..Settings::default() };
        let limits = RateLimits::new(&settings, metrics);
        for _ in 0..10_000 {
            limits.check(Class::Enroll, "198.51.100.1").unwrap();
        }
    }
}
