//! The web foundation in a real browser (`tests/browser/foundation.mjs`); over real HTTP (HTML
//! error pages on browser routes and JSON on the API, the security headers, content-hashed
//! static files cached forever, and the language switcher) it is tested in `tests/api.rs`.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use hattama_tests::browser;
use hattama_tests::server::TestServer;

#[test]
fn foundation_in_a_real_browser() {
    let server = TestServer::start_with_election(1);
    browser::run_script("foundation", &server.url, &[]);
}
