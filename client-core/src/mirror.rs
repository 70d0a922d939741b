//! `hattama mirror`: a verified, browsable, auditable copy of everything an instance publishes,
//! as a directory that any static web server serves.
//!
//! Why: the evidence must stay reachable and checkable when the main address is blocked or
//! seized. A newsroom or a partner abroad runs `hattama mirror URL DIR --follow` and serves
//! DIR with whatever web server it has.
//!
//! What a round does:
//! 1. An [`Auditor`] round over the source (`URL/log`, evidence at `URL`), exactly the checks of
//!    `hattama audit --photos`, with a [`crate::audit::Keeper`] that stages every file it
//!    fetches in `.DIR.incoming/` beside DIR (never under it, which a web server serves). A round with any problem is refused: the staged files
//!    are deleted and the problems returned ([`MirrorError::Refused`]); the mirror stays as it
//!    was after the last verified round.
//! 2. The staged files are moved into place (the checkpoint last, at the very end of the
//!    round, so a reader of the mirror never meets a checkpoint whose tiles or evidence are
//!    not there yet), and each new photo's thumbnail and medium rendition are made here from
//!    the verified photo (the core's `thumbnail::render`, as the server makes them).
//! 3. The gallery's pages are fetched in every language (the first at the root, the others
//!    under `<lang>/`), their links rewritten to relative links into the mirror, and what
//!    they link to is fetched: receipts (kept only if their signature and inclusion proof
//!    verify under the pinned log key), inclusion proofs (verified likewise), evidence of
//!    captures not yet in a checkpoint (manifest signature, photo hash), open data and static
//!    files. Links to what a mirror cannot serve (the review, the language switch, uploads)
//!    point to the source.
//!
//! File names: the raw evidence keeps the server's paths, so `hattama audit DIR_URL/log
//! --photos` works against the mirror (`photos/<sha256>`, `api/v1/captures/<id>`); what
//! would collide with them or needs a content type from its name gets a new name:
//! `photos/<sha256>.thumb.jpg`, `photos/<sha256>.medium.jpg`, pages as `<path>.html` (the
//! home page `index.html`), a page's query folded into its name, inclusion proofs as `.txt`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::audit::{AuditConfig, AuditError, Auditor, Problem};
use crate::evidence::{MediaType, Sha256Hash, SignedManifest};
use crate::log::{LogEntry, LogKey, TlogProof};
use crate::receipt::SignedReceipt;
use crate::thumbnail;

/// The staging directory of a round: beside the mirror's directory (on the same file system, so
/// that files are renamed into place), never inside what the web server serves.
fn incoming_dir(dir: &Path) -> PathBuf {
    let name = dir.file_name().map_or_else(|| "mirror".into(), |n| n.to_string_lossy());
    dir.with_file_name(format!(".{name}.incoming"))
}

/// Largest page, receipt, proof or open-data file fetched.
const MAX_FILE_BYTES: u64 = 64 << 20;

/// Most pages fetched per language in a round.
const MAX_PAGES: usize = 200_000;

/// What to mirror and where.
#[derive(Clone, Debug)]
pub struct MirrorConfig {
    /// The instance's base URL (`https://host`).
    pub url: String,
    /// The mirror's directory.
    pub dir: PathBuf,
    /// The log's key. `None`: the key this mirror pinned before (`DIR/api/v1/log/key`), or
    /// else the source's own (trust on first use; [`Mirror::key_from_source`] says so).
    pub key: Option<LogKey>,
    /// The languages of the pages; the first is served at the root.
    pub languages: Vec<String>,
}

/// Why a mirror round failed.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The audit could not be carried out (network, URL, key).
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The source failed verification: nothing of the round was kept.
    #[error(
        "the source {url} failed verification ({count} problem(s)); nothing of this round was \
         kept, the mirror is as the last verified round left it"
    )]
    Refused {
        /// The source.
        url: String,
        /// The problems found (listed up to the audit's limit).
        problems: Vec<Problem>,
        /// How many problems.
        count: u64,
    },
    /// A receipt, proof or piece of evidence linked from the pages failed verification.
    #[error("{path} from {url} failed verification: {detail}; it was not kept")]
    Invalid {
        /// The source.
        url: String,
        /// The file's path.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The source's log key is not the pinned one.
    #[error(
        "the source serves the log key {found}, but this mirror holds the log of {pinned}: a \
         different log is not mixed into it"
    )]
    KeyChanged {
        /// The key served.
        found: String,
        /// The key pinned.
        pinned: String,
    },
    /// A page or file could not be fetched.
    #[error("cannot read {url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The mirror's directory could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What happened.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MirrorError + '_ {
    move |source| MirrorError::Io { path: path.to_owned(), source }
}

/// What a round did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct MirrorRound {
    /// Size of the verified checkpoint now mirrored.
    pub size: u64,
    /// Whether the checkpoint was the one mirrored before.
    pub unchanged: bool,
    /// Captures whose evidence was verified and kept in this round.
    pub new_captures: u64,
    /// Pages written.
    pub pages: u64,
    /// Other files written (log files, evidence, renditions, receipts, proofs, open data).
    pub files: u64,
    /// Links of the pages to files the source did not serve (left as they are).
    pub missing: u64,
}

/// A capture's verified manifest, as far as the mirror needs it.
#[derive(Clone, Debug)]
struct Known {
    election: String,
    precinct: String,
    photo: Sha256Hash,
    bytes: u64,
    media_type: MediaType,
    orientation: u8,
}

/// Where a link of a page leads in the mirror.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    /// A page of the gallery: (language, path with query).
    Page(String, String),
    /// A file: its path in the mirror, and what it is.
    File(String, Kind),
    /// Not mirrored: the link leads to the source.
    Source,
}

/// The kinds of linked files, in the order they are fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    /// `api/v1/captures/<id>`.
    Capture,
    /// `photos/<sha256>`.
    Photo,
    /// `photos/<sha256>.thumb.jpg` or `.medium.jpg`: made here.
    Rendition,
    /// `api/v1/receipts/<id>`.
    Receipt,
    /// `api/v1/log/inclusion/<id>.txt`.
    Inclusion,
    /// Immutable: `static/…` (content-hashed names).
    Static,
    /// Changes with the data: open data, the log key, the OpenAPI document.
    Data,
}

/// A mirror being kept.
pub struct Mirror {
    config: MirrorConfig,
    base: String,
    key: LogKey,
    key_from_source: bool,
    auditor: Auditor,
    http: reqwest::blocking::Client,
    staged: Arc<Mutex<Vec<String>>>,
    known: HashMap<String, Known>,
    size: Option<u64>,
}

/// The file on disk of a path as it appears in URLs (percent-encoded): decoded, as static web
/// servers decode a request's path before they look for the file; `None` if decoded it would
/// leave the mirror's directory.
fn disk_path(url_path: &str) -> Option<PathBuf> {
    let bytes = url_path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(out).ok()?;
    let safe = decoded
        .split('/')
        .all(|s| !s.is_empty() && s != "." && s != ".." && !s.contains(['\\', '\0']));
    safe.then(|| PathBuf::from(decoded))
}

/// Writes `bytes` to `path` through a temporary file renamed into place.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), MirrorError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, bytes).map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// The link from the file `from` to the file `to` (both relative to the mirror's root).
fn relative(from: &str, to: &str) -> String {
    let depth = from.matches('/').count();
    let up = "../".repeat(depth);
    if to.is_empty() { format!("{up}index.html") } else { format!("{up}{to}") }
}

/// The file of a page: `index.html` for `/`, else `<path>.html`, with a query folded into the
/// name; under `<lang>/` unless the language is the first.
fn page_file(prefix: &str, path_and_query: &str) -> String {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let path = path.trim_matches('/');
    let mut name = if path.is_empty() { "index".to_owned() } else { path.to_owned() };
    if !query.is_empty() {
        let folded: String =
            query.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        name.push('.');
        name.push_str(&folded);
    }
    format!("{prefix}{name}.html")
}

/// Decodes the character references of an attribute value (askama writes `&#38;`, `&#34;`,
/// `&#39;`, `&lt;`, `&gt;`; others may write `&amp;`, `&quot;` or hexadecimal ones).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let decoded = rest.find(';').filter(|end| *end <= 10).and_then(|end| {
            let name = &rest[1..end];
            let c = match name {
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "lt" => Some('<'),
                "gt" => Some('>'),
                _ => match name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok().and_then(char::from_u32),
                    None => {
                        name.strip_prefix('#').and_then(|d| d.parse().ok()).and_then(char::from_u32)
                    }
                },
            };
            c.map(|c| (c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;")
}

/// Rewrites the values of the `href`, `src` and `action` attributes of `html` with `map`
/// (given the decoded value; answers the new one). The pages are the server's own templates:
/// attribute values are always double-quoted.
fn rewrite_links(html: &str, mut map: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(html.len() + html.len() / 8);
    let mut rest = html;
    loop {
        let next = ["href=\"", "src=\"", "action=\""]
            .iter()
            .filter_map(|a| {
                let mut from = 0;
                // The attribute name must follow white space (not `data-src="`).
                while let Some(i) = rest[from..].find(a) {
                    let at = from + i;
                    if at > 0 && rest.as_bytes()[at - 1].is_ascii_whitespace() {
                        return Some((at, a.len()));
                    }
                    from = at + a.len();
                }
                None
            })
            .min();
        let Some((at, len)) = next else { break };
        let start = at + len;
        let Some(end) = rest[start..].find('"').map(|e| start + e) else { break };
        out.push_str(&rest[..start]);
        let value = &rest[start..end];
        match map(&unescape(value)) {
            Some(new) => out.push_str(&escape(&new)),
            None => out.push_str(value),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

impl Mirror {
    /// A mirror of `config.url` into `config.dir`; fetches the log key if none is given or
    /// pinned.
    pub fn new(config: MirrorConfig) -> Result<Self, MirrorError> {
        let base = config.url.trim().trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base).map_err(|e| AuditError::BadUrl {
            url: config.url.clone(),
            reason: format!("{e}: give the instance's address, for example https://host"),
        })?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.host_str().is_none()
            || parsed.query().is_some()
        {
            return Err(AuditError::BadUrl {
                url: config.url.clone(),
                reason: "need an http or https address with a host and no query".into(),
            }
            .into());
        }
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(120))
            .redirect(reqwest::redirect::Policy::limited(5))
            .no_proxy()
            .user_agent(concat!("hattama-mirror/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AuditError::Http(e.to_string()))?;
        let pinned_file = config.dir.join("api/v1/log/key");
        let served = get(&http, &format!("{base}/api/v1/log/key"), None)?;
        let served_key = match &served {
            Some(text) => Some(crate::audit::parse_log_key(&String::from_utf8_lossy(text))?),
            None => None,
        };
        let pinned = match &config.key {
            Some(k) => Some(k.clone()),
            None => match fs::read_to_string(&pinned_file) {
                Ok(text) => Some(crate::audit::parse_log_key(&text)?),
                Err(_) => None,
            },
        };
        let (key, key_from_source) = match (pinned, served_key) {
            (Some(p), Some(s)) if p.vkey != s.vkey => {
                return Err(MirrorError::KeyChanged { found: s.vkey, pinned: p.vkey });
            }
            (Some(p), _) => (p, false),
            (None, Some(s)) => (s, true),
            (None, None) => {
                return Err(AuditError::BadKey(
                    "the source serves no log key (/api/v1/log/key): give --key".into(),
                )
                .into());
            }
        };
        fs::create_dir_all(&config.dir).map_err(io(&config.dir))?;
        // Absolute, so that the staging directory beside it is never inside it (`.`).
        let mut config = config;
        config.dir = config.dir.canonicalize().map_err(io(&config.dir))?;
        let mut audit = AuditConfig::new(&format!("{base}/log"), key.clone());
        audit.evidence_url = Some(base.clone());
        let mut auditor = Auditor::new(audit)?;
        let staged = Arc::new(Mutex::new(Vec::new()));
        let incoming = incoming_dir(&config.dir);
        {
            let staged = staged.clone();
            auditor.keep_files(Box::new(move |path: &str, body: &[u8]| {
                let to = incoming.join(path);
                if let Some(dir) = to.parent() {
                    fs::create_dir_all(dir)?;
                }
                fs::write(&to, body)?;
                staged.lock().map_err(|_| std::io::Error::other("poisoned"))?.push(path.to_owned());
                Ok(())
            }));
        }
        Ok(Self {
            config,
            base,
            key,
            key_from_source,
            auditor,
            http,
            staged,
            known: HashMap::new(),
            size: None,
        })
    }

    /// Whether the log key was taken from the source itself (nothing was pinned or given).
    pub fn key_from_source(&self) -> bool {
        self.key_from_source
    }

    /// The log key the mirror checks against.
    pub fn key(&self) -> &LogKey {
        &self.key
    }

    /// One round: audit and keep what is new, then the pages and what they link to.
    pub fn round(&mut self) -> Result<MirrorRound, MirrorError> {
        let incoming = incoming_dir(&self.config.dir);
        let _ = fs::remove_dir_all(&incoming);
        if let Ok(mut s) = self.staged.lock() {
            s.clear();
        }
        let audited = self.auditor.round();
        let staged = self.staged.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default();
        let round = match audited {
            Ok(r) => r,
            Err(e) => {
                let _ = fs::remove_dir_all(&incoming);
                return Err(e.into());
            }
        };
        if round.problem_count > 0 || !round.verified {
            let _ = fs::remove_dir_all(&incoming);
            return Err(MirrorError::Refused {
                url: self.base.clone(),
                problems: round.problems,
                count: round.problem_count.max(1),
            });
        }
        let mut summary = MirrorRound {
            size: round.size,
            unchanged: round.unchanged || self.size == Some(round.size),
            ..MirrorRound::default()
        };
        // Everything but the checkpoint goes into place now; the checkpoint at the end.
        let mut checkpoint = None;
        for rel in &staged {
            let from = incoming.join(rel);
            if rel == "log/checkpoint" {
                checkpoint = Some(fs::read(&from).map_err(io(&from))?);
                continue;
            }
            let to = self.config.dir.join(rel);
            if let Some(dir) = to.parent() {
                fs::create_dir_all(dir).map_err(io(dir))?;
            }
            fs::rename(&from, &to).map_err(io(&to))?;
            summary.files += 1;
            if let Some(id) = rel.strip_prefix("api/v1/captures/") {
                let bytes = fs::read(&to).map_err(io(&to))?;
                // A capture kept before it was logged (linked from a page) is not new again.
                if let Ok(k) = known_of(&bytes)
                    && self.known.insert(id.to_owned(), k).is_none()
                {
                    summary.new_captures += 1;
                }
            }
        }
        let _ = fs::remove_dir_all(&incoming);
        for k in self.known.values().cloned().collect::<Vec<_>>() {
            summary.files += self.renditions(&k)?;
        }
        let key_json = serde_json::json!({ "origin": self.key.origin, "vkey": self.key.vkey });
        write_atomic(&self.config.dir.join("api/v1/log/key"), key_json.to_string().as_bytes())?;
        self.pages(&mut summary)?;
        if let Some(note) = checkpoint {
            write_atomic(&self.config.dir.join("log/checkpoint"), &note)?;
            summary.files += 1;
        }
        self.size = Some(round.size);
        Ok(summary)
    }

    /// Makes the thumbnail and the medium rendition of a verified photo kept in the mirror,
    /// unless they are there; answers how many were made.
    fn renditions(&self, k: &Known) -> Result<u64, MirrorError> {
        let sha = k.photo.to_hex();
        let photo_path = self.config.dir.join("photos").join(&sha);
        let mut made = 0;
        for (name, side) in [("thumb", thumbnail::MAX_SIDE), ("medium", thumbnail::MEDIUM_SIDE)] {
            let to = self.config.dir.join("photos").join(format!("{sha}.{name}.jpg"));
            if to.exists() || !photo_path.exists() {
                continue;
            }
            let photo = fs::read(&photo_path).map_err(io(&photo_path))?;
            match thumbnail::render(
                &photo,
                k.media_type,
                k.orientation,
                side,
                thumbnail::DECODE_BUDGET,
            ) {
                Ok(jpeg) => {
                    write_atomic(&to, &jpeg)?;
                    made += 1;
                }
                Err(e) => tracing::warn!(photo = %sha, error = %e, "no rendition of a photo"),
            }
        }
        Ok(made)
    }

    /// Where the link `value` of a page in language `lang` leads.
    fn target(&self, lang: &str, value: &str) -> Option<Target> {
        if !value.starts_with('/') || value.starts_with("//") {
            return None;
        }
        let url = reqwest::Url::parse(&format!("http://mirror{value}")).ok()?;
        let path = url.path().to_owned();
        let query = url.query().map(str::to_owned);
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let file = |p: String, k: Kind| Some(Target::File(p, k));
        let hex64 = |s: &str| Sha256Hash::from_hex(s).is_some();
        match segments.as_slice() {
            ["lang"] => {
                let pairs: HashMap<String, String> = url.query_pairs().into_owned().collect();
                let to = pairs.get("to")?;
                if !self.config.languages.contains(to) {
                    return Some(Target::Source);
                }
                let next = pairs.get("next").map_or("/", String::as_str);
                if !next.starts_with('/') || next.starts_with("//") {
                    return Some(Target::Source);
                }
                Some(Target::Page(to.clone(), next.to_owned()))
            }
            ["photos", sha] if hex64(sha) => file(format!("photos/{sha}"), Kind::Photo),
            ["photos", sha, r @ ("thumb" | "medium")] if hex64(sha) => {
                file(format!("photos/{sha}.{r}.jpg"), Kind::Rendition)
            }
            ["api", "v1", "captures", id] if hex64(id) => {
                file(format!("api/v1/captures/{id}"), Kind::Capture)
            }
            ["api", "v1", "receipts", id] if hex64(id) => {
                file(format!("api/v1/receipts/{id}"), Kind::Receipt)
            }
            ["api", "v1", "log", "inclusion", id] if hex64(id) => {
                file(format!("api/v1/log/inclusion/{id}.txt"), Kind::Inclusion)
            }
            ["api", "v1", "log", "key"] | ["api", "v1", "openapi.json"] => {
                file(path.trim_start_matches('/').to_owned(), Kind::Data)
            }
            ["api", "v1", "elections", _, "export", name]
                if query.is_none() || name.contains('.') =>
            {
                let rel = match &query {
                    None => path.trim_start_matches('/').to_owned(),
                    Some(q) => {
                        let (stem, ext) = name.rsplit_once('.')?;
                        let folded: String = q
                            .chars()
                            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                            .collect();
                        let dir = path.trim_start_matches('/').rsplit_once('/')?.0;
                        format!("{dir}/{stem}.{folded}.{ext}")
                    }
                };
                file(rel, Kind::Data)
            }
            ["log", "checkpoint"] | ["log", "tile", ..] => {
                file(path.trim_start_matches('/').to_owned(), Kind::Data)
            }
            ["static", name] if !name.is_empty() => file(format!("static/{name}"), Kind::Static),
            ["api", ..]
            | ["review", ..]
            | ["files", ..]
            | ["health" | "healthz" | "readyz" | "metrics"] => Some(Target::Source),
            _ => {
                let mut p = path;
                if let Some(q) = query {
                    p.push('?');
                    p.push_str(&q);
                }
                Some(Target::Page(lang.to_owned(), p))
            }
        }
    }

    fn prefix(&self, lang: &str) -> String {
        if self.config.languages.first().is_some_and(|l| l == lang) {
            String::new()
        } else {
            format!("{lang}/")
        }
    }

    /// Fetches every page in every language, writes it with its links rewritten, then fetches
    /// (and verifies) the files they link to.
    fn pages(&mut self, summary: &mut MirrorRound) -> Result<(), MirrorError> {
        // Browsers ask for it by themselves, from any file they show (a photo opened alone).
        let mut files: HashMap<String, (Kind, String)> =
            HashMap::from([("favicon.ico".to_owned(), (Kind::Static, "/favicon.ico".to_owned()))]);
        for lang in self.config.languages.clone() {
            let mut seen: HashSet<String> = HashSet::new();
            let mut queue: VecDeque<String> = VecDeque::from(["/".to_owned()]);
            seen.insert("/".to_owned());
            while let Some(page) = queue.pop_front() {
                if seen.len() > MAX_PAGES {
                    break;
                }
                let url = format!("{}{page}", self.base);
                let Some(body) = get(&self.http, &url, Some(&lang))? else {
                    summary.missing += 1;
                    continue;
                };
                let html = String::from_utf8_lossy(&body);
                let here = page_file(&self.prefix(&lang), &page);
                let rewritten = rewrite_links(&html, |value| {
                    let (link, fragment) = match value.split_once('#') {
                        Some((l, f)) => (l, Some(f)),
                        None => (value, None),
                    };
                    let new = match self.target(&lang, link)? {
                        Target::Page(l, p) => {
                            let path_only = p.split_once('?').map_or(p.as_str(), |(a, _)| a);
                            // Search answers need the server: the page itself, without the query.
                            let p = if path_only.ends_with("/search") {
                                path_only.to_owned()
                            } else {
                                p
                            };
                            if l == lang && seen.insert(p.clone()) {
                                queue.push_back(p.clone());
                            }
                            relative(&here, &page_file(&self.prefix(&l), &p))
                        }
                        Target::File(rel, kind) => {
                            files.entry(rel.clone()).or_insert((kind, link.to_owned()));
                            relative(&here, &rel)
                        }
                        Target::Source => format!("{}{link}", self.base),
                    };
                    Some(match fragment {
                        Some(f) => format!("{new}#{f}"),
                        None => new,
                    })
                });
                let rewritten = with_note(&rewritten, &note(&lang, &self.base, summary.size));
                let Some(file) = disk_path(&here) else { continue };
                write_atomic(&self.config.dir.join(file), rewritten.as_bytes())?;
                summary.pages += 1;
            }
        }
        let mut files: Vec<(String, (Kind, String))> = files.into_iter().collect();
        files.sort_by(|a, b| (a.1.0, &a.0).cmp(&(b.1.0, &b.0)));
        for (rel, (kind, link)) in files {
            summary.files += self.file(&rel, kind, &link, summary)?;
        }
        Ok(())
    }

    /// Fetches, verifies and keeps one linked file unless the mirror has it; answers how many
    /// files were written.
    fn file(
        &mut self,
        rel: &str,
        kind: Kind,
        link: &str,
        summary: &mut MirrorRound,
    ) -> Result<u64, MirrorError> {
        let to = self.config.dir.join(rel);
        let immutable = !matches!(kind, Kind::Data);
        if immutable && to.exists() {
            return Ok(0);
        }
        if rel.starts_with("log/") || rel == "api/v1/log/key" {
            return Ok(0); // kept by the audit round
        }
        if kind == Kind::Rendition {
            let sha = rel.trim_start_matches("photos/").split('.').next().unwrap_or_default();
            let k = self.known.values().find(|k| k.photo.to_hex() == sha).cloned();
            return match k {
                Some(k) => self.renditions(&k),
                None => {
                    summary.missing += 1;
                    Ok(0)
                }
            };
        }
        let url = format!("{}{link}", self.base);
        let soft = matches!(kind, Kind::Receipt | Kind::Inclusion);
        let Some(body) = get_soft(&self.http, &url, None, soft)? else {
            summary.missing += 1;
            return Ok(0);
        };
        let invalid = |detail: String| MirrorError::Invalid {
            url: self.base.clone(),
            path: rel.to_owned(),
            detail,
        };
        let id = rel.rsplit('/').next().unwrap_or_default().trim_end_matches(".txt").to_owned();
        match kind {
            Kind::Capture => {
                let k = known_of(&body).map_err(invalid)?;
                let signed_id = signed_id(&body).map_err(invalid)?;
                if signed_id != id {
                    return Err(invalid("its manifest is not the capture of this id".into()));
                }
                self.known.insert(id.clone(), k);
                summary.new_captures += 1;
            }
            Kind::Photo => {
                let sha = Sha256Hash::of(&body);
                if sha.to_hex() != id
                    || !self.known.values().any(|k| k.photo == sha && k.bytes == body.len() as u64)
                {
                    return Err(invalid(
                        "the bytes are not a photo a verified manifest signs".into(),
                    ));
                }
            }
            Kind::Receipt => {
                let k = self.known.get(&id).cloned().ok_or_else(|| {
                    invalid("a receipt of a capture the mirror does not hold".into())
                })?;
                let receipt =
                    SignedReceipt::from_json(&body).map_err(|e| invalid(e.to_string()))?;
                let capture = Sha256Hash::from_hex(&id).unwrap_or(Sha256Hash::ZERO);
                receipt
                    .verify(&receipt.receipt.server_key, &capture, &k.photo)
                    .map_err(|e| invalid(e.to_string()))?;
                receipt
                    .verify_log(&self.key, &k.election, &k.precinct)
                    .map_err(|e| invalid(e.to_string()))?;
            }
            Kind::Inclusion => {
                let receipt_path = self.config.dir.join("api/v1/receipts").join(&id);
                let receipt = fs::read(&receipt_path)
                    .ok()
                    .and_then(|b| SignedReceipt::from_json(&b).ok())
                    .and_then(|r| r.log)
                    .ok_or_else(|| {
                        invalid("a proof for a capture without a verified receipt here".into())
                    })?;
                let entry = LogEntry::from_bytes(receipt.entry.as_bytes())
                    .map_err(|e| invalid(e.to_string()))?;
                let text = String::from_utf8(body.clone()).map_err(|e| invalid(e.to_string()))?;
                let proof = TlogProof::from_text(&text).map_err(|e| invalid(e.to_string()))?;
                proof.verify(&entry, &self.key).map_err(|e| invalid(e.to_string()))?;
            }
            Kind::Rendition | Kind::Static | Kind::Data => {}
        }
        write_atomic(&to, &body)?;
        if kind == Kind::Photo
            && let Some(k) = self.known.values().find(|k| k.photo.to_hex() == id).cloned()
        {
            return Ok(1 + self.renditions(&k)?);
        }
        Ok(1)
    }
}

/// `YYYY-MM-DD HH:MM` (UTC) of a time in milliseconds since the Unix epoch.
fn utc_minute(ms: u64) -> String {
    // Days to a civil date: Howard Hinnant's `civil_from_days`.
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", rem / 3600, rem % 3600 / 60)
}

/// The notice every mirrored page carries: whose copy it is, of when, and that its evidence
/// was verified (in the page's language).
fn note(lang: &str, source: &str, size: u64) -> String {
    let source = source.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    // Wrapped anywhere: a long address must not widen a phone's page.
    let source = format!("<code class=\"wrap\">{source}</code>");
    let time = utc_minute(crate::now_ms());
    let text = match lang {
        "kk" => format!(
            "Бұл — {source} сайтының көшірмесі, {time} UTC. Барлық дәлелдер көшіру кезінде \
             тексерілді (журналдағы жазбалар: {size})."
        ),
        "ru" => format!(
            "Это копия сайта {source} на {time} UTC. Все доказательства проверены при \
             копировании (записей в журнале: {size})."
        ),
        _ => format!(
            "This is a copy of {source} as of {time} UTC. All evidence was verified as it was \
             copied (log entries: {size})."
        ),
    };
    format!("<p class=\"notice\" id=\"mirror-note\">{text}</p>")
}

/// `html` with `note` at the start of its `<main>`.
fn with_note(html: &str, note: &str) -> String {
    match html.find("<main").and_then(|at| html[at..].find('>').map(|end| at + end + 1)) {
        Some(at) => format!("{}{note}{}", &html[..at], &html[at..]),
        None => html.to_owned(),
    }
}

/// The capture id a capture document signs (the hash of its manifest).
fn signed_id(body: &[u8]) -> Result<String, String> {
    Ok(signed_of(body)?.hash().to_hex())
}

fn signed_of(body: &[u8]) -> Result<SignedManifest, String> {
    #[derive(serde::Deserialize)]
    struct Capture {
        manifest: String,
        signature: String,
    }
    let c: Capture = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let sig = crate::evidence::parse_lower_hex::<64>(&c.signature)
        .ok_or_else(|| "the signature is not 128 lowercase hex digits".to_owned())?;
    SignedManifest::verify(c.manifest.as_bytes(), &sig).map_err(|e| e.to_string())
}

/// What the mirror keeps of a verified capture document.
fn known_of(body: &[u8]) -> Result<Known, String> {
    let signed = signed_of(body)?;
    let m = signed.manifest;
    Ok(Known {
        election: m.election,
        precinct: m.precinct,
        photo: m.photo.sha256,
        bytes: m.photo.bytes,
        media_type: m.photo.media_type,
        orientation: m.photo.orientation,
    })
}

/// GET `url` (with the `lang` cookie if given): the body, `None` on a 4xx answer.
fn get(
    http: &reqwest::blocking::Client,
    url: &str,
    lang: Option<&str>,
) -> Result<Option<Vec<u8>>, MirrorError> {
    get_soft(http, url, lang, false)
}

/// [`get`]. With `soft`, a 503 is `None` too (a receipt of a capture not yet logged).
fn get_soft(
    http: &reqwest::blocking::Client,
    url: &str,
    lang: Option<&str>,
    soft: bool,
) -> Result<Option<Vec<u8>>, MirrorError> {
    let mut last = String::new();
    let mut retry_after = None;
    for attempt in 0..6u32 {
        if attempt > 0 {
            let backoff = Duration::from_millis(250 << attempt);
            std::thread::sleep(retry_after.take().unwrap_or(backoff));
        }
        let mut request = http.get(url);
        if let Some(lang) = lang {
            request = request.header("Cookie", format!("lang={lang}"));
        }
        let response = match request.send() {
            Ok(r) => r,
            Err(e) => {
                last = crate::sync::error_chain(&e);
                continue;
            }
        };
        let status = response.status().as_u16();
        if soft && status == 503 {
            return Ok(None);
        }
        if matches!(status, 408 | 429) || status >= 500 {
            // A rate limit says when to come back: the mirror waits that long.
            last = format!("HTTP {status}");
            retry_after = crate::audit::retry_after_of(&response);
            continue;
        }
        if !(200..300).contains(&status) {
            return Ok(None);
        }
        let mut body = Vec::new();
        match response.take(MAX_FILE_BYTES + 1).read_to_end(&mut body) {
            Ok(_) if body.len() as u64 > MAX_FILE_BYTES => {
                return Err(MirrorError::Unreachable {
                    url: url.to_owned(),
                    reason: format!("larger than {MAX_FILE_BYTES} bytes"),
                });
            }
            Ok(_) => return Ok(Some(body)),
            Err(e) => last = e.to_string(),
        }
    }
    Err(MirrorError::Unreachable { url: url.to_owned(), reason: last })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_get_file_names_that_never_collide_with_evidence() {
        assert_eq!(page_file("", "/"), "index.html");
        assert_eq!(page_file("ru/", "/"), "ru/index.html");
        assert_eq!(page_file("", "/elections/e1"), "elections/e1.html");
        assert_eq!(page_file("", "/elections/e1/regions/r"), "elections/e1/regions/r.html");
        assert_eq!(
            page_file("en/", "/elections/e1/comparison?line=7"),
            "en/elections/e1/comparison.line-7.html"
        );
    }

    #[test]
    fn notes_tell_when_and_are_placed_in_main() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00");
        assert_eq!(utc_minute(1_795_000_000_000), "2026-11-18 11:06");
        assert_eq!(utc_minute(951_782_400_000), "2000-02-29 00:00");
        let out = with_note("<body><main id=\"main\"><h1>x</h1>", "<p>n</p>");
        assert_eq!(out, "<body><main id=\"main\"><p>n</p><h1>x</h1>");
        assert!(note("ru", "http://a<b>", 5).contains("http://a&lt;b&gt;"));
    }

    #[test]
    fn links_are_relative_to_the_page() {
        assert_eq!(relative("index.html", "photos/ab"), "photos/ab");
        assert_eq!(relative("elections/e/precincts/p.html", "photos/ab"), "../../../photos/ab");
        assert_eq!(relative("ru/elections/e.html", ""), "../../index.html");
    }

    #[test]
    fn only_double_quoted_link_attributes_are_rewritten() {
        assert_eq!(
            unescape("/lang?to=ru&#38;next=%2F&amp;a=&#x2f;&lt;&bogus;&"),
            "/lang?to=ru&next=%2F&a=/<&bogus;&"
        );
        let html = r#"<a href="/a?x=1&amp;y=2#f" data-src="/no"><img src="/b"> <form action="/c">"#;
        let out = rewrite_links(html, |v| Some(format!("[{v}]")));
        assert_eq!(
            out,
            r#"<a href="[/a?x=1&amp;y=2#f]" data-src="/no"><img src="[/b]"> <form action="[/c]">"#
        );
    }

    fn mirror_targets() -> Mirror {
        let key =
            LogKey::for_signer("a", &ed25519_dalek::SigningKey::from_bytes(&[1; 32])).unwrap();
        let dir = std::env::temp_dir();
        let config = MirrorConfig {
            url: "http://127.0.0.1:9".into(),
            dir: dir.clone(),
            key: Some(key.clone()),
            languages: vec!["kk".into(), "ru".into()],
        };
        let mut audit = AuditConfig::new("http://127.0.0.1:9/log", key.clone());
        audit.evidence_url = None;
        Mirror {
            config,
            base: "http://127.0.0.1:9".into(),
            key,
            key_from_source: false,
            auditor: Auditor::new(audit).unwrap(),
            http: reqwest::blocking::Client::new(),
            staged: Arc::default(),
            known: HashMap::new(),
            size: None,
        }
    }

    #[test]
    fn every_link_has_its_place() {
        let m = mirror_targets();
        let sha = "a".repeat(64);
        let page = |l: &str, p: &str| Some(Target::Page(l.into(), p.into()));
        let file = |p: String, k: Kind| Some(Target::File(p, k));
        assert_eq!(m.target("kk", "/elections/e"), page("kk", "/elections/e"));
        assert_eq!(m.target("kk", "/lang?to=ru&next=%2Felections%2Fe"), page("ru", "/elections/e"));
        assert_eq!(m.target("kk", "/lang?to=de&next=%2F"), Some(Target::Source));
        assert_eq!(
            m.target("kk", &format!("/photos/{sha}")),
            file(format!("photos/{sha}"), Kind::Photo)
        );
        assert_eq!(
            m.target("kk", &format!("/photos/{sha}/medium")),
            file(format!("photos/{sha}.medium.jpg"), Kind::Rendition)
        );
        assert_eq!(
            m.target("kk", &format!("/api/v1/log/inclusion/{sha}")),
            file(format!("api/v1/log/inclusion/{sha}.txt"), Kind::Inclusion)
        );
        assert_eq!(
            m.target("kk", "/api/v1/elections/e/export/official.csv?version=2"),
            file("api/v1/elections/e/export/official.version-2.csv".into(), Kind::Data)
        );
        assert_eq!(m.target("kk", "/review"), Some(Target::Source));
        assert_eq!(m.target("kk", "https://elsewhere/"), None);
        assert_eq!(m.target("kk", "#main"), None);
    }
}
