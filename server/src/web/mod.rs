//! The web foundation shared by the coordinators' review UI and the public gallery:
//! server-rendered askama templates (`server/templates/`, checked at compile time), the three
//! UI languages ([`i18n`]), content-hashed static files ([`assets`]), the security headers of
//! every HTML page, and HTML error pages for browser routes (the JSON API keeps
//! [`crate::error::ApiError`]).
//!
//! A page is a template struct with a `ctx: PageCtx` field; `templates/base.html` (the layout:
//! header with the site name, a `nav` block, the language switcher, `content`, footer) reads
//! only `ctx`. Handlers build the context with [`PageCtx::new`], fill the template and answer
//! with [`html`]. Errors are [`WebError`]s; the [`middleware`] renders them as pages in the
//! request's language and adds the security headers to every HTML response.

pub mod assets;
pub mod chart;
pub mod gallery;
pub mod i18n;
pub mod review;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use askama::Template;
pub use i18n::Lang;

/// The Content-Security-Policy of every HTML page: only this origin's scripts, styles and
/// images; no inline script or style; forms post only here; never framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

/// Registers the foundation's routes: static files and the language switcher.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/static/{file}", web::get().to(assets::serve))
        .route("/lang", web::get().to(switch_language));
    review::configure(cfg);
    gallery::configure(cfg);
}

/// Whether a path belongs to the machine interfaces (JSON API, tus, log files, photos), whose
/// errors stay JSON; every other path is a browser route with HTML error pages.
pub fn is_api_path(path: &str) -> bool {
    ["/api/", "/files/", "/log/", "/photos/"].iter().any(|p| path.starts_with(p))
        || path == "/health"
        || path == "/healthz"
        || path == "/readyz"
        || path == "/metrics"
        || path == "/files"
}

/// The signed-in user as the page header shows it.
#[derive(Clone, Debug)]
pub struct UserBadge {
    /// The display name.
    pub name: String,
    /// The message id of the role's name (`role-coordinator`, …).
    pub role: &'static str,
}

/// What every page's layout needs: the language, where the page is (for the language
/// switcher), and the signed-in user with the session's CSRF token, if any.
#[derive(Clone, Debug)]
pub struct PageCtx {
    /// The page's language.
    pub lang: Lang,
    /// The request's path and query, to come back to after switching language.
    pub here: String,
    /// The signed-in user (review pages).
    pub user: Option<UserBadge>,
    /// The session's CSRF token, for forms (empty without a session).
    pub csrf: String,
}

/// One entry of the language switcher.
#[derive(Clone, Debug)]
pub struct LangLink {
    /// `kk`, `ru`, `en`.
    pub code: &'static str,
    /// The language's own name.
    pub name: &'static str,
    /// `/lang?to=…&next=…`.
    pub url: String,
    /// Whether it is the page's language.
    pub current: bool,
}

impl PageCtx {
    /// The context of a request, without a user.
    pub fn new(req: &HttpRequest) -> Self {
        let here = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
        Self { lang: Lang::of_request(req), here, user: None, csrf: String::new() }
    }

    /// A translated message (see [`Lang::t`]).
    pub fn t(&self, id: &str) -> String {
        self.lang.t(id)
    }

    /// A translated message with one argument (see [`Lang::t1`]).
    pub fn t1(&self, id: &str, name: &str, value: impl i18n::IntoArg) -> String {
        self.lang.t1(id, name, value)
    }

    /// A static file's URL (see [`assets::url`]).
    pub fn asset(&self, name: &str) -> String {
        assets::url(name)
    }

    /// The language switcher's links, back to this page.
    pub fn languages(&self) -> Vec<LangLink> {
        Lang::ALL
            .iter()
            .map(|l| LangLink {
                code: l.code(),
                name: l.native_name(),
                url: format!("/lang?to={}&next={}", l.code(), percent_encode(&self.here)),
                current: *l == self.lang,
            })
            .collect()
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters (for query values).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A local path to go back to: starts with one `/`, no scheme, host or control characters;
/// anything else is `/`. Keeps redirects on this site.
pub fn local_path(next: &str) -> &str {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && next.len() <= 2000
        && !next.chars().any(|c| c.is_control() || c == '\\');
    if ok { next } else { "/" }
}

/// A rendered template as a `200 OK` HTML page. The page depends on the language cookie and
/// `Accept-Language`, so it says so in `Vary`; callers add caching headers.
pub fn html<T: Template>(page: &T) -> Result<HttpResponse, WebError> {
    let body = page.render().map_err(|e| WebError::internal(&e))?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::VARY, "Cookie, Accept-Language"))
        .body(body))
}

/// A `303 See Other` to a local path.
pub fn see_other(path: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, local_path(path))).finish()
}

#[derive(Deserialize)]
struct SwitchLanguage {
    to: String,
    next: Option<String>,
}

use serde::Deserialize;

/// `GET /lang?to=ru&next=/path`: remembers the choice in the `lang` cookie (a year) and goes
/// back. A plain link, so it works without JavaScript; it changes only a display preference.
async fn switch_language(
    req: HttpRequest,
    state: web::Data<crate::startup::AppState>,
    query: web::Query<SwitchLanguage>,
) -> Result<HttpResponse, WebError> {
    let lang = Lang::from_code(&query.to).ok_or(WebError::BadRequest)?;
    let cookie = actix_web::cookie::Cookie::build(i18n::LANG_COOKIE, lang.code())
        .path("/")
        .max_age(actix_web::cookie::time::Duration::days(365))
        .same_site(actix_web::cookie::SameSite::Lax)
        .http_only(true)
        // Not `connection_info().scheme()`: it believes `X-Forwarded-Proto` from anyone.
        .secure(crate::tls::is_https(&req, &state.settings))
        .finish();
    let next = query.next.as_deref().unwrap_or("/");
    let mut response = see_other(next);
    response.add_cookie(&cookie).map_err(|e| WebError::internal(&e))?;
    Ok(response)
}

/// Why a browser request failed. Rendered as an HTML page in the request's language by the
/// [`middleware`]; causes of internal errors are logged, never shown.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// 400: the request is malformed.
    #[error("bad request")]
    BadRequest,
    /// 403: the user may not do this.
    #[error("forbidden")]
    Forbidden,
    /// 403: a form came without the right CSRF token (stale page or forged request).
    #[error("bad CSRF token")]
    Csrf,
    /// 404.
    #[error("not found")]
    NotFound,
    /// 429: too many failed logins; retry after this many seconds.
    #[error("too many requests")]
    TooManyRequests(u64),
    /// 500 (the cause was logged).
    #[error("internal error")]
    Internal,
    /// Not signed in (or the session expired): `303` to the login page, then back to `next`.
    #[error("login required")]
    LoginRequired {
        /// Where to go after logging in.
        next: String,
    },
}

impl WebError {
    /// A 500, logging the cause chain.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        let mut chain = cause.to_string();
        let mut source = cause.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        tracing::error!(cause = %chain, "internal error");
        Self::Internal
    }

    /// The message id of the page's explanation.
    fn message_id(&self) -> &'static str {
        match self {
            WebError::BadRequest => "error-400",
            WebError::Forbidden => "error-403",
            WebError::Csrf => "error-csrf",
            WebError::NotFound => "error-404",
            WebError::TooManyRequests(_) => "error-429",
            WebError::Internal | WebError::LoginRequired { .. } => "error-500",
        }
    }
}

impl From<crate::storage::StorageError> for WebError {
    fn from(e: crate::storage::StorageError) -> Self {
        Self::internal(&e)
    }
}

impl From<actix_web::error::BlockingError> for WebError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        Self::internal(&e)
    }
}

impl ResponseError for WebError {
    fn status_code(&self) -> StatusCode {
        match self {
            WebError::BadRequest => StatusCode::BAD_REQUEST,
            WebError::Forbidden | WebError::Csrf => StatusCode::FORBIDDEN,
            WebError::NotFound => StatusCode::NOT_FOUND,
            WebError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            WebError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            WebError::LoginRequired { .. } => StatusCode::SEE_OTHER,
        }
    }

    /// A bare answer; [`middleware`] replaces its body by the page in the right language.
    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status_code());
        r.insert_header((header::CACHE_CONTROL, "no-store"));
        match self {
            WebError::LoginRequired { next } => {
                let location = format!("/review/login?next={}", percent_encode(local_path(next)));
                r.insert_header((header::LOCATION, location)).finish()
            }
            WebError::TooManyRequests(secs) => {
                r.insert_header((header::RETRY_AFTER, secs.to_string()));
                r.content_type("text/plain; charset=utf-8").body(self.to_string())
            }
            _ => r.content_type("text/plain; charset=utf-8").body(self.to_string()),
        }
    }
}

/// The error page.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    ctx: PageCtx,
    status: u16,
    message: &'static str,
}

/// Renders browser errors as HTML pages and adds the security headers.
///
/// Every response gets `X-Content-Type-Options: nosniff`. HTML responses also get the strict
/// [`CSP`], `Referrer-Policy`, `X-Frame-Options`, `Cross-Origin-Opener-Policy` and
/// `Permissions-Policy`. An error answered on a browser route (not [`is_api_path`]) — a
/// [`WebError`], or any other 4xx/5xx error such as a refused form body — becomes the error
/// page in the request's language; the JSON API's errors are left as they are.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let browser = !is_api_path(req.path());
    // Not a clone of the request: the router needs it unshared while the handler runs.
    let mut res = next.call(req).await?.map_into_boxed_body();
    let status = res.status();
    if status.is_redirection()
        && res.response().error().is_some_and(|e| e.as_error::<WebError>().is_some())
    {
        // A redirect (to the login page) is no error: answer it without the error attached,
        // so that the request log does not report it as one.
        let (http_req, old) = res.into_parts();
        let mut new = HttpResponse::build(status);
        for (name, value) in old.headers() {
            new.append_header((name.clone(), value.clone()));
        }
        res = ServiceResponse::new(http_req, new.finish());
    }
    if browser && (status.is_client_error() || status.is_server_error()) {
        let web_error = res.response().error().and_then(|e| e.as_error::<WebError>());
        let message = match web_error {
            Some(e) => Some(e.message_id()),
            None => match res.response().error() {
                Some(_) => Some(match status.as_u16() {
                    404 => "error-404",
                    403 => "error-403",
                    400..=499 => "error-400",
                    _ => "error-500",
                }),
                None => None,
            },
        };
        if let Some(message) = message {
            let (http_req, old) = res.into_parts();
            let page = ErrorPage { ctx: PageCtx::new(&http_req), status: status.as_u16(), message };
            let body = page.render().unwrap_or_else(|_| status.to_string());
            let mut new = HttpResponse::build(status);
            for (name, value) in old.headers() {
                if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                    new.append_header((name.clone(), value.clone()));
                }
            }
            let new = new.content_type("text/html; charset=utf-8").body(body);
            res = ServiceResponse::new(http_req, new);
        }
    }
    let headers = res.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    let is_html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_html {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        );
        headers.insert(
            header::HeaderName::from_static("permissions-policy"),
            HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
        );
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_local() {
        for (input, expected) in [
            ("/review?x=1", "/review?x=1"),
            ("//evil.example/", "/"),
            ("/\\evil.example", "/"),
            ("https://evil.example/", "/"),
            ("review", "/"),
            ("/a\r\nSet-Cookie: x", "/"),
            ("", "/"),
        ] {
            assert_eq!(local_path(input), expected, "{input:?}");
        }
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved() {
        assert_eq!(percent_encode("/review?a=1&b=é"), "%2Freview%3Fa%3D1%26b%3D%C3%A9");
    }

    #[test]
    fn api_paths_are_not_browser_routes() {
        for p in [
            "/api/v1/enroll",
            "/files/",
            "/files/abc",
            "/log/checkpoint",
            "/photos/x",
            "/health",
            "/healthz",
        ] {
            assert!(is_api_path(p), "{p}");
        }
        for p in ["/", "/review", "/review/login", "/static/app.css", "/lang", "/logs"] {
            assert!(!is_api_path(p), "{p}");
        }
    }
}
