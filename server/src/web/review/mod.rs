//! The coordinators' review UI under `/review` (see `docs/review.md`): login, the queue, a
//! capture's page (photo viewer, decision, double-entry transcription, audit trail) and the
//! audit export. Handlers are thin: session and CSRF checks here, rules in [`crate::review`],
//! SQL behind [`crate::storage::ReviewStorage`].
//!
//! Sessions: a random token in the `hattama_session` cookie (HttpOnly, SameSite=Strict, Secure
//! when `public_url` is https; only its SHA-256 is stored), expiring after
//! `review.session_ttl_secs`. Every form carries the session's CSRF token (the login form a
//! token bound to a cookie of its own), checked before anything else.

mod console;
mod dashboard;
mod pages;
mod users;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{HttpRequest, web};

use super::{PageCtx, UserBadge, WebError};
use crate::review::{self, ReviewError};
use crate::startup::AppState;
use crate::storage::review::{Role, User};

/// The session cookie.
pub const SESSION_COOKIE: &str = "hattama_session";
/// The cookie binding the login form's CSRF token.
pub const LOGIN_CSRF_COOKIE: &str = "hattama_login_csrf";
/// The cookie in which `static/viewer.js` keeps the browser's offset from UTC in minutes, so
/// that the review shows times in the coordinator's local time (a display preference only).
pub const TZ_COOKIE: &str = "tz";

/// Registers the review routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/review/login")
            .route(web::get().to(pages::login_page))
            .route(web::post().to(pages::login)),
    )
    .route("/review/logout", web::post().to(pages::logout))
    .route("/review", web::get().to(pages::queue))
    .route("/review/", web::get().to(pages::queue))
    .route("/review/captures/{id}", web::get().to(pages::capture))
    .route("/review/captures/{id}/decision", web::post().to(pages::decide))
    .route("/review/captures/{id}/entry", web::post().to(pages::enter))
    .route("/review/audit.csv", web::get().to(pages::audit_csv))
    .route("/review/audit.json", web::get().to(pages::audit_json))
    .route("/review/elections", web::get().to(console::elections))
    .route("/review/elections/definition", web::post().to(console::import_definition))
    .route("/review/elections/official", web::post().to(console::import_official))
    .service(
        web::resource("/review/invites")
            .route(web::get().to(console::invites))
            .route(web::post().to(console::create_invites)),
    )
    .route("/review/invites/cards", web::get().to(console::cards))
    .route("/review/invites/cancel", web::post().to(console::cancel_invite))
    .route("/review/devices", web::get().to(console::devices))
    .route("/review/devices/{id}", web::get().to(console::device))
    .route("/review/devices/{id}/revoke", web::post().to(console::revoke))
    .service(
        web::resource("/review/users")
            .route(web::get().to(users::users))
            .route(web::post().to(users::add)),
    )
    .route("/review/users/disable", web::post().to(users::disable))
    .route("/review/users/reset", web::post().to(users::reset))
    .route("/review/dashboard", web::get().to(dashboard::dashboard));
}

/// The signed-in user of a request.
pub struct Reviewer {
    /// The user.
    pub user: User,
    /// The session's CSRF token.
    pub csrf: String,
    /// The session token (for logout).
    pub token: String,
    /// The coordinator's local time.
    pub clock: Clock,
}

impl Reviewer {
    /// The page context with this user.
    pub fn ctx(&self, req: &HttpRequest) -> PageCtx {
        let mut ctx = PageCtx::new(req);
        ctx.user = Some(UserBadge {
            name: self.user.display_name.clone(),
            role: match self.user.role {
                Role::Admin => "role-admin",
                Role::Coordinator => "role-coordinator",
                Role::Supervisor => "role-supervisor",
            },
        });
        ctx.csrf = self.csrf.clone();
        ctx
    }

    /// Refuses a form whose CSRF token is not this session's.
    pub fn check_csrf(&self, token: &str) -> Result<(), WebError> {
        if constant_time_eq(token.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(WebError::Csrf)
        }
    }
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The signed-in user, or [`WebError::LoginRequired`] (back to this page after logging in).
pub async fn reviewer(
    req: &HttpRequest,
    state: &web::Data<AppState>,
) -> Result<Reviewer, WebError> {
    let here = req.uri().path_and_query().map_or("/review", |p| p.as_str()).to_owned();
    let next = if req.method() == actix_web::http::Method::GET { here } else { "/review".into() };
    let Some(token) = req.cookie(SESSION_COOKIE).map(|c| c.value().to_owned()) else {
        return Err(WebError::LoginRequired { next });
    };
    let storage = state.review.clone();
    let gallery = state.gallery.clone();
    let hash = review::token_hash(&token);
    let (session, election_offset) = web::block(move || {
        // Without the browser's zone, the election's (as on the public pages), not UTC.
        let offset = gallery
            .elections()
            .ok()
            .and_then(|es| es.iter().find_map(|e| e.utc_offset_min))
            .unwrap_or(0);
        storage.session(&hash, hattama_core::now_ms()).map(|s| (s, offset))
    })
    .await??;
    match session {
        Some(s) => Ok(Reviewer {
            user: s.user,
            csrf: s.csrf,
            token,
            clock: Clock::of_request(req, election_offset),
        }),
        None => Err(WebError::LoginRequired { next }),
    }
}

/// A cookie of the review: HttpOnly, SameSite=Strict, path `/`, Secure when the request came
/// over HTTPS (`tls::is_https`: TLS here, or `X-Forwarded-Proto` of a trusted proxy) or the
/// public URL is https (plain http on loopback, as in the tests, must keep working).
pub fn cookie(
    req: &HttpRequest,
    state: &AppState,
    name: &'static str,
    value: String,
    max_age_secs: i64,
) -> Cookie<'static> {
    let secure = crate::tls::is_https(req, &state.settings)
        || state.settings.public_url.as_deref().is_some_and(|u| u.starts_with("https://"));
    Cookie::build(name, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(actix_web::cookie::time::Duration::seconds(max_age_secs))
        .finish()
}

impl From<ReviewError> for WebError {
    fn from(e: ReviewError) -> Self {
        match e {
            ReviewError::Storage(e) => WebError::internal(&e),
            ReviewError::Forbidden => WebError::Forbidden,
            ReviewError::NotFound(_) => WebError::NotFound,
            ReviewError::Throttled(secs) => WebError::TooManyRequests(secs),
            ReviewError::Invalid(_)
            | ReviewError::HardRules(_)
            | ReviewError::AlreadyEntered
            | ReviewError::AlreadyVerified
            | ReviewError::Conflict
            | ReviewError::BadLogin => WebError::BadRequest,
        }
    }
}

/// `YYYY-MM-DD HH:MM UTC` of a time in ms since the epoch.
pub fn format_time(ms: u64) -> String {
    format!("{} UTC", Clock::UTC.time(ms))
}

/// Times as the coordinator reads them: at the browser's offset from UTC (the `tz` cookie that
/// `viewer.js` sets, from the login page on), the election's without it (as the public pages
/// show times), never a bare UTC the coordinator must convert. Pages state the zone once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    offset_min: i32,
}

impl Clock {
    /// UTC.
    pub const UTC: Clock = Clock { offset_min: 0 };

    /// The clock of a request's `tz` cookie (minutes east of UTC, −12 h to +14 h), else at
    /// `fallback_min` minutes east of UTC.
    pub fn of_request(req: &HttpRequest, fallback_min: i32) -> Self {
        let offset_min = req
            .cookie(TZ_COOKIE)
            .and_then(|c| c.value().parse::<i32>().ok())
            .filter(|m| (-720..=840).contains(m))
            .unwrap_or(fallback_min);
        Clock { offset_min }
    }

    /// `YYYY-MM-DD HH:MM` of a time in ms since the epoch, at this clock's offset.
    pub fn time(self, ms: u64) -> String {
        let local = (ms / 1000) as i64 + i64::from(self.offset_min) * 60;
        civil(local.max(0) as u64)
    }

    /// `HH:MM` of a time, at this clock's offset.
    pub fn hour(self, ms: u64) -> String {
        self.time(ms).split_off(11)
    }

    /// The zone, as pages state it once: `UTC` or `UTC+05:00`.
    pub fn zone(self) -> String {
        if self.offset_min == 0 {
            return "UTC".into();
        }
        let sign = if self.offset_min < 0 { '−' } else { '+' };
        let m = self.offset_min.unsigned_abs();
        format!("UTC{sign}{:02}:{:02}", m / 60, m % 60)
    }
}

/// `YYYY-MM-DD HH:MM` of seconds since the epoch.
fn civil(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", rest / 3600, rest % 3600 / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_time(1_773_592_800_000), "2026-03-15 16:40 UTC");
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00 UTC");
        let almaty = Clock { offset_min: 300 };
        assert_eq!(almaty.time(1_773_592_800_000), "2026-03-15 21:40");
        assert_eq!(almaty.hour(1_773_592_800_000), "21:40");
        assert_eq!(almaty.zone(), "UTC+05:00");
        assert_eq!(Clock { offset_min: -210 }.zone(), "UTC−03:30");
        assert_eq!(Clock::UTC.zone(), "UTC");
    }

    #[test]
    fn csrf_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
