//! The web foundation over real HTTP and in a real browser: HTML error pages on browser routes
//! and JSON on the API, the security headers, content-hashed static files cached forever, and
//! the language switcher (cookie, then `Accept-Language`, then Kazakh).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use hattama_tests::browser;
use hattama_tests::server::TestServer;
use reqwest::blocking::{Client, Response};
use reqwest::redirect::Policy;

fn client() -> Client {
    Client::builder().redirect(Policy::none()).build().unwrap()
}

fn header(r: &Response, name: &str) -> String {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

#[test]
fn browser_routes_answer_html_error_pages_with_security_headers() {
    let server = TestServer::start_with_election(2);
    let http = client();
    let r = http.get(format!("{}/no/such/page", server.url)).send().unwrap();
    assert_eq!(r.status(), 404);
    assert!(header(&r, "content-type").starts_with("text/html"));
    let csp = header(&r, "content-security-policy");
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(part), "CSP {csp:?} lacks {part}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    assert_eq!(header(&r, "x-frame-options"), "DENY");
    assert_eq!(header(&r, "referrer-policy"), "same-origin");
    let body = r.text().unwrap();
    assert!(body.contains("<html lang=\"kk\">"), "Kazakh by default");
    assert!(!body.contains("<script>") && !body.contains("style="), "no inline script or style");

    // The API keeps its JSON errors.
    let r = http.get(format!("{}/api/v1/nothing", server.url)).send().unwrap();
    assert_eq!(r.status(), 404);
    assert!(header(&r, "content-type").starts_with("application/json"));
    assert!(header(&r, "content-security-policy").is_empty());
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    let r = http.get(format!("{}/files/zz", server.url)).send().unwrap();
    assert!(header(&r, "content-type").starts_with("application/json"), "tus stays JSON");
}

#[test]
fn static_files_have_hashed_urls_and_are_immutable() {
    let server = TestServer::start_with_election(1);
    let http = client();
    let page = http.get(format!("{}/x", server.url)).send().unwrap().text().unwrap();
    let css = page
        .split('"')
        .find(|s| s.starts_with("/static/app.") && s.ends_with(".css"))
        .expect("style sheet link");
    let r = http.get(format!("{}{css}", server.url)).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "cache-control"), "public, max-age=31536000, immutable");
    assert!(header(&r, "content-type").starts_with("text/css"));
    // Another hash is another file: not found.
    let r = http.get(format!("{}/static/app.0000000000000000.css", server.url)).send().unwrap();
    assert_eq!(r.status(), 404);
}

#[test]
fn language_is_the_cookie_then_accept_language_then_kazakh() {
    let server = TestServer::start_with_election(1);
    let http = client();
    let lang_of = |cookie: Option<&str>, accept: Option<&str>| {
        let mut req = http.get(format!("{}/x", server.url));
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        if let Some(a) = accept {
            req = req.header("Accept-Language", a);
        }
        let body = req.send().unwrap().text().unwrap();
        let start = body.find("<html lang=\"").unwrap() + 12;
        body[start..start + 2].to_owned()
    };
    assert_eq!(lang_of(None, None), "kk");
    assert_eq!(lang_of(None, Some("de-DE, ru;q=0.8, en;q=0.5")), "ru");
    assert_eq!(lang_of(None, Some("en-GB")), "en");
    assert_eq!(lang_of(Some("lang=en"), Some("ru")), "en");
    assert_eq!(lang_of(Some("lang=xx"), Some("ru")), "ru");

    let r = http.get(format!("{}/lang?to=ru&next=%2Freview%3Fa%3D1", server.url)).send().unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(header(&r, "location"), "/review?a=1");
    let cookie = header(&r, "set-cookie");
    assert!(cookie.starts_with("lang=ru;") && cookie.contains("Path=/"), "{cookie}");
    // Never a redirect off the site.
    let r = http.get(format!("{}/lang?to=ru&next=%2F%2Fevil.example", server.url)).send().unwrap();
    assert_eq!(header(&r, "location"), "/");
    let r = http.get(format!("{}/lang?to=de&next=%2F", server.url)).send().unwrap();
    assert_eq!(r.status(), 400);
}

#[test]
fn foundation_in_a_real_browser() {
    let server = TestServer::start_with_election(1);
    browser::run_script("foundation", &server.url, &[]);
}
