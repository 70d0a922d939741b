//! Helpers of the review tests: accounts made with the real admin command, real captures
//! uploaded by hand-driven devices, and a small HTTP client that logs in like a browser
//! (cookies and CSRF tokens by hand, redirects not followed).

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use hattama_core::evidence::{Manifest, PhotoInfo};
use hattama_core::media::{self, MediaLimits};
use reqwest::blocking::{Client, Response};
use reqwest::redirect::Policy;
use serde_json::Value;

use crate::raw::RawDevice;
use crate::server::RunningServer;
use crate::textured_jpeg;

/// The password every test account gets.
pub const PASSWORD: &str = "correct horse battery staple";

/// Creates an account with `hattama-server user add … --password-stdin`.
pub fn add_user(data_dir: &Path, username: &str, name: &str, role: &str, regions: &[&str]) {
    let mut args =
        vec!["user", "add", username, "--name", name, "--role", role, "--password-stdin"];
    for r in regions {
        args.push("--region");
        args.push(r);
    }
    let mut child = crate::backend::server_command(data_dir)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hattama-server user add");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "user add failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A stripped photo as a device would sign it, different per `seed`.
pub fn photo(seed: u32) -> (Vec<u8>, PhotoInfo) {
    let jpeg = textured_jpeg(96, 64, seed, 80);
    let clean = media::strip(&jpeg, &MediaLimits::default()).expect("a valid photo");
    let info = clean.info();
    (clean.bytes, info)
}

/// Signs and uploads a capture of `precinct` (election `e2e`) with `photo`, letting `edit`
/// change the manifest; returns the capture id.
pub fn upload(
    server: &impl RunningServer,
    device: &mut RawDevice,
    precinct: &str,
    photo: &(Vec<u8>, PhotoInfo),
    edit: impl FnOnce(&mut Manifest),
) -> String {
    let signed = device.sign_with(precinct, &photo.1, edit);
    let answer = device.upload(server.url(), &signed, &photo.0);
    assert_eq!(answer.status, 200, "upload failed: {answer:?}");
    signed.hash().to_hex()
}

/// Enrolls a device for these precincts of `e2e`.
pub fn enrolled_device(server: &impl RunningServer, seed: u8, precincts: &[&str]) -> RawDevice {
    let device = RawDevice::new(seed);
    let code = server.invite(precincts, 1).remove(0);
    let answer = device.enroll(server.url(), &code);
    assert_eq!(answer.status, 200, "enroll failed: {answer:?}");
    device
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Page {
    /// Status.
    pub status: u16,
    /// `Location`, if any.
    pub location: String,
    /// Body.
    pub body: String,
    /// Every `Set-Cookie`.
    pub set_cookies: Vec<String>,
    /// `Retry-After`, in seconds, if any.
    pub retry_after: Option<u64>,
}

impl Page {
    fn from(r: Response) -> Self {
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let set_cookies = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let retry_after = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Self { status, location, body: r.text().unwrap_or_default(), set_cookies, retry_after }
    }

    /// The value of a cookie this answer sets.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies.iter().find_map(|c| {
            c.strip_prefix(&format!("{name}="))
                .map(|v| v.split(';').next().unwrap_or("").to_owned())
        })
    }

    /// The first hidden `csrf` field of the page.
    pub fn csrf(&self) -> String {
        let start = self.body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
        self.body[start..].split('"').next().unwrap_or_default().to_owned()
    }
}

/// A browser-like client of the review UI: one cookie jar (by hand), no redirects followed.
pub struct Browser {
    /// The server's URL.
    pub url: String,
    http: Client,
    /// Cookies sent with every request (`name=value`).
    pub cookies: Vec<(String, String)>,
    /// Other headers sent with every request (e.g. `X-Forwarded-For`).
    pub headers: Vec<(String, String)>,
}

impl Browser {
    /// A client without cookies.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            http: Client::builder().redirect(Policy::none()).build().expect("client"),
            cookies: Vec::new(),
            headers: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn keep(&mut self, page: &Page) {
        for c in &page.set_cookies {
            let pair = c.split(';').next().unwrap_or_default();
            if let Some((k, v)) = pair.split_once('=') {
                self.cookies.retain(|(name, _)| name != k);
                if !v.is_empty() {
                    self.cookies.push((k.to_owned(), v.to_owned()));
                }
            }
        }
    }

    fn with_headers(
        &self,
        mut r: reqwest::blocking::RequestBuilder,
    ) -> reqwest::blocking::RequestBuilder {
        for (k, v) in &self.headers {
            r = r.header(k, v);
        }
        r
    }

    /// `GET path`.
    pub fn get(&mut self, path: &str) -> Page {
        let r = self
            .with_headers(self.http.get(format!("{}{path}", self.url)))
            .header("Cookie", self.cookie_header())
            .header("Accept-Language", "en")
            .send()
            .expect("GET");
        let page = Page::from(r);
        self.keep(&page);
        page
    }

    /// `POST path` with a form.
    pub fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let r = self
            .with_headers(self.http.post(format!("{}{path}", self.url)))
            .header("Cookie", self.cookie_header())
            .header("Accept-Language", "en")
            .form(form)
            .send()
            .expect("POST");
        let page = Page::from(r);
        self.keep(&page);
        page
    }

    /// Logs in (the login form's CSRF token and cookie included); returns the answer.
    pub fn try_login(&mut self, username: &str, password: &str) -> Page {
        let form = self.get("/review/login");
        assert_eq!(form.status, 200, "{form:?}");
        let csrf = form.csrf();
        self.post(
            "/review/login",
            &[("username", username), ("password", password), ("csrf", &csrf), ("next", "/review")],
        )
    }

    /// Logs in and asserts it worked.
    pub fn login(url: &str, username: &str) -> Self {
        let mut b = Self::new(url);
        let page = b.try_login(username, PASSWORD);
        assert_eq!(page.status, 303, "login of {username} failed: {page:?}");
        assert!(page.cookie("hattama_session").is_some());
        b
    }

    /// The session's CSRF token (from the queue page).
    pub fn csrf(&mut self) -> String {
        self.get("/review").csrf()
    }
}

/// The capture ids linked from a queue page, in order.
pub fn capture_links(body: &str) -> Vec<String> {
    body.split("href=\"/review/captures/")
        .skip(1)
        .filter_map(|s| s.get(..64).map(str::to_owned))
        .collect()
}

/// An election `e2e` of `precincts` stations with a count time near the test devices' clocks.
pub fn election(precincts: usize) -> Value {
    let mut e = crate::fixtures::election("e2e", precincts);
    e["count_time_ms"] = serde_json::json!(1_795_000_000_000u64);
    e
}
