//! Logs: where they go (stderr), in which format (text for people, JSON lines for machines), and
//! what a request leaves in them.
//!
//! Every request gets a span carrying a request id (a random UUID, nothing derived from the
//! client), its method and its route *pattern* (`/photos/{sha256}`, never the path or the query,
//! which may hold anything a client typed), and ends with one `request` line with its status and
//! duration. Everything logged while a request is served carries its id. Nothing personal is
//! logged: no client address, user agent, cookie, query or body.

use std::io::IsTerminal;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage};
use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder};

use crate::settings::LogFormat;

/// The default filter of the demo, whose own simulated observers would fill the terminal with
/// `request` lines.
pub const QUIET_REQUESTS: &str = "info,hattama_server::telemetry=warn";

/// Installs the process's log subscriber: stderr, filtered by `HATTAMA_LOG`, else by
/// `default_filter` (`info`, or [`QUIET_REQUESTS`]). Does nothing if one is installed already.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HATTAMA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Colours only on a terminal: not into the journal or a file.
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// When the request began (kept in the request's extensions for its `request` line).
#[derive(Clone, Copy)]
struct Started(Instant);

/// The root span of every request (see the module docs), for `tracing_actix_web::TracingLogger`.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let span = tracing::info_span!(
            "request",
            request_id = tracing::field::Empty,
            method = tracing::field::Empty,
            route = tracing::field::Empty,
        );
        // Filtered out (`HATTAMA_LOG=warn`), the span costs nothing more: its fields are not
        // made, in particular the route pattern, which matches the path against every route
        // again (regular expressions) at each request.
        if span.is_disabled() {
            return span;
        }
        request.extensions_mut().insert(Started(Instant::now()));
        let id = request.extensions().get::<RequestId>().map(|id| id.to_string());
        let route = route_pattern(request);
        span.record("request_id", id.as_deref().unwrap_or("none"));
        span.record("method", tracing::field::display(request.method()));
        span.record("route", tracing::field::display(&route));
        span
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let (status, started) = match outcome {
            Ok(response) => (
                response.status().as_u16(),
                response.request().extensions().get::<Started>().copied(),
            ),
            Err(error) => (error.as_response_error().status_code().as_u16(), None),
        };
        let ms = started.map(|Started(at)| at.elapsed().as_secs_f64() * 1000.0);
        span.in_scope(|| tracing::info!(status, ms, "request"));
    }
}

/// The route pattern of a request (as `ServiceRequest::match_pattern` answers, `"unmatched"`
/// if none), found once per request and kept in its extensions: finding it matches the path
/// against the routes (regular expressions), which the metrics and the rate limits both ask.
pub fn route_pattern(req: &ServiceRequest) -> std::rc::Rc<str> {
    #[derive(Clone)]
    struct Route(std::rc::Rc<str>);
    if let Some(Route(route)) = req.extensions().get::<Route>() {
        return route.clone();
    }
    let route: std::rc::Rc<str> = req.match_pattern().unwrap_or_else(|| "unmatched".into()).into();
    req.extensions_mut().insert(Route(route.clone()));
    route
}
