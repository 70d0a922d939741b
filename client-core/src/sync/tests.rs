//! Tests of the sync engine: the pure helpers, the lock, and the HTTP behaviour against a small
//! in-test tus server (`Stub`) that speaks just enough of `docs/sync-protocol.md` and injects
//! the faults a test asks for. The end-to-end tests against the real server live in `tests/`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::thread;

use ed25519_dalek::{Signature, SigningKey, Verifier};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::evidence::{EvidenceKind, Page, SignedManifest};
use crate::log::{LogEntry, TlogProof, sign_checkpoint};
use crate::receipt::{Receipt, ReceiptLog};
use crate::{CaptureRefusal, CaptureRequest, Client, ClientConfig, StoreKey};

// ---------------------------------------------------------------------------------------------
// Pure helpers.

#[test]
fn backoff_ceiling_doubles_up_to_the_cap() {
    let base = Duration::from_millis(250);
    let cap = Duration::from_secs(30);
    let check = |attempt, ms| assert_eq!(backoff_ceiling(base, cap, attempt).as_millis(), ms);
    check(0, 250);
    check(1, 500);
    check(2, 1000);
    check(6, 16_000);
    check(7, 30_000);
    check(31, 30_000);
    check(32, 30_000);
    check(u32::MAX, 30_000);
}

#[test]
fn full_jitter_stays_within_the_ceiling_and_spreads() {
    let mut rng = StdRng::seed_from_u64(7);
    let ceiling = Duration::from_millis(1000);
    let draws: Vec<u128> = (0..2000).map(|_| full_jitter(ceiling, &mut rng).as_millis()).collect();
    assert!(draws.iter().all(|&d| d <= 1000));
    assert!(draws.iter().any(|&d| d < 100));
    assert!(draws.iter().any(|&d| d > 900));
    assert_eq!(full_jitter(Duration::ZERO, &mut rng), Duration::ZERO);
}

#[test]
fn retry_after_takes_seconds_only() {
    let check = |v: &str, expected: Option<u64>| {
        assert_eq!(parse_retry_after(v), expected.map(Duration::from_secs), "{v:?}")
    };
    check("0", Some(0));
    check("5", Some(5));
    check(" 120 ", Some(120));
    check("", None);
    check("-1", None);
    check("1.5", None);
    check("+3", None);
    check("Wed, 21 Oct 2015 07:28:00 GMT", None);
    check("99999999999999999999", None);
}

#[test]
fn codes_are_read_as_people_type_them_and_invites_as_printed() {
    let code = "K7Q2-9XZM-0ABC-1DEF-GHJK";
    for typed in [
        code,
        " k7q2 9xzm 0abc 1def ghjk ",
        "K7Q29XZM0ABC1DEFGHJK",
        "k7q2-9xzm-oabc-idef-ghjk",
        "K7Q2 - 9XZM - 0ABC - LDEF - GHJK",
    ] {
        assert_eq!(canonical_code(typed), code, "{typed:?}");
    }
    // What is not such a code is left as it was (trimmed): the server decides.
    for other in ["NOPE-NOPE", "K7Q2-9XZM", "K7Q2-9XZM-0ABC-1DEF-GHJU", "ÄBCD"] {
        assert_eq!(canonical_code(&format!(" {other} ")), other);
    }

    let uri = invite_uri("https://hattama.example.kz:8443/x", code);
    assert_eq!(
        uri,
        format!("hattama://enroll?server=https%3A%2F%2Fhattama.example.kz%3A8443%2Fx&code={code}")
    );
    assert!(is_invite(&uri) && is_invite(" HATTAMA://enroll") && !is_invite("https://x.kz"));
    let parsed = ("https://hattama.example.kz:8443/x".to_owned(), code.to_owned());
    assert_eq!(parse_invite(&uri).unwrap(), parsed);
    // Unencoded, with spaces around it, other parameters ignored.
    let plain =
        format!(" hattama://enroll?server=https://hattama.example.kz:8443/x/&code={code}&v=2 ");
    assert_eq!(parse_invite(&plain).unwrap(), parsed);
    for bad in [
        "https://hattama.example.kz",
        "hattama://other?server=https://x.kz&code=A",
        "hattama://enroll?code=A",
        "hattama://enroll?server=https://x.kz",
        "hattama://enroll?server=ftp://x.kz&code=A",
        "hattama://enroll?server=https://x.kz&code=A&code=B",
    ] {
        assert!(parse_invite(bad).is_err(), "{bad}");
    }
}

#[test]
fn upload_metadata_is_base64_of_manifest_and_hex_signature() {
    let canonical = br#"{"a":"\u00e9"}"#;
    let signature = [0xabu8; 64];
    let value = upload_metadata(canonical, &signature);
    let pairs: Vec<(&str, &str)> = value.split(',').map(|p| p.split_once(' ').unwrap()).collect();
    assert_eq!(pairs.len(), 2);
    assert_eq!(pairs[0].0, "manifest");
    assert_eq!(BASE64.decode(pairs[0].1).unwrap(), canonical);
    assert_eq!(pairs[1].0, "signature");
    assert_eq!(BASE64.decode(pairs[1].1).unwrap(), "ab".repeat(64).as_bytes());
    // Standard alphabet with padding, no spaces inside values.
    assert_eq!(upload_metadata(b"ab", &[0; 64]).split(',').next(), Some("manifest YWI="));
}

#[test]
fn enroll_message_is_prefix_code_and_key() {
    assert_eq!(enroll_message("K7Q2-9XZM", "00ff"), b"hattama/enroll/v1\nK7Q2-9XZM\n00ff".to_vec());
}

#[test]
fn base_urls_are_checked_and_normalized() {
    let ok = |url: &str, expected: &str| assert_eq!(normalize_base_url(url).unwrap(), expected);
    ok("https://hattama.example.kz", "https://hattama.example.kz");
    ok("https://hattama.example.kz/", "https://hattama.example.kz");
    ok("http://127.0.0.1:8080/", "http://127.0.0.1:8080");
    ok(" https://x.kz/prefix/ ", "https://x.kz/prefix");
    for bad in
        ["", "x.kz", "ftp://x.kz", "https://x.kz/?a=1", "https://x.kz/#f", "https://u:p@x.kz"]
    {
        assert!(matches!(normalize_base_url(bad), Err(SyncError::BadUrl(_))), "{bad}");
    }
}

#[test]
fn server_texts_are_shortened_on_a_char_boundary() {
    assert_eq!(short("abc".into(), 5), "abc");
    assert_eq!(short("абвгд".into(), 2), "аб");
    assert_eq!(short(String::new(), 0), "");
}

#[test]
fn transient_statuses_follow_the_protocol() {
    for s in [408, 425, 429, 500, 502, 503, 504] {
        assert!(is_transient(s), "{s}");
    }
    for s in [400, 403, 404, 409, 412, 413, 415, 422, 460] {
        assert!(!is_transient(s), "{s}");
    }
}

#[test]
fn cancel_token_and_drop_guard() {
    let token = CancelToken::new();
    let clone = token.clone();
    assert!(!clone.is_cancelled());
    {
        let guard = token.cancel_on_drop();
        assert!(!guard.token().is_cancelled());
    }
    assert!(clone.is_cancelled());
    let t0 = Instant::now();
    assert!(!sleep_unless_cancelled(Duration::from_secs(60), &clone));
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert!(sleep_unless_cancelled(Duration::from_millis(5), &CancelToken::new()));
}

#[test]
fn the_sync_lock_is_exclusive_and_released_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let first = SyncLock::acquire(dir.path()).unwrap();
    assert!(matches!(SyncLock::acquire(dir.path()), Err(Error::Sync(SyncError::SyncBusy))));
    assert!(SyncLock::is_held(dir.path()));
    drop(first);
    assert!(!SyncLock::is_held(dir.path()));
    let _again = SyncLock::acquire(dir.path()).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Store transitions used by the engine.

fn tiny_jpeg(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 7) as u8 ^ seed, (y * 13) as u8, (x * y) as u8])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95).encode_image(&img).unwrap();
    out
}

fn request(precinct: &str) -> CaptureRequest {
    CaptureRequest {
        election: "kz-test".into(),
        precinct: precinct.into(),
        kind: EvidenceKind::Posted,
        page: Page { count: 1, number: 1 },
        note: None,
        transcription: None,
        location: None,
        utc_offset_min: 300,
    }
}

fn test_config() -> ClientConfig {
    ClientConfig {
        sync: SyncConfig {
            backoff_base: Duration::from_millis(1),
            backoff_cap: Duration::from_millis(10),
            max_retries: 4,
            chunk_bytes: 4096,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            ..SyncConfig::default()
        },
        ..ClientConfig::default()
    }
}

#[test]
fn store_transitions_guard_each_state() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(dir.path(), &StoreKey::from_bytes([7; 32]), test_config()).unwrap();
    let a = client.capture(&tiny_jpeg(16, 16, 1), &request("p1")).unwrap();
    let b = client.capture(&tiny_jpeg(16, 16, 2), &request("p1")).unwrap();
    let store = client.store();
    assert_eq!(store.pending_totals().unwrap().0, 2);
    let first = store.next_pending(0).unwrap().unwrap();
    assert_eq!((first.id, first.seq, first.state.clone()), (a.id, 1, CaptureState::Captured));
    assert_eq!(store.next_pending(1).unwrap().unwrap().id, b.id);
    assert!(store.next_pending(2).unwrap().is_none());

    // Receipts and rejections only from `uploading`.
    assert!(!store.write(|tx| Store::save_receipt(tx, &a.id, b"{}", None, 5)).unwrap());
    assert!(!store.write(|tx| Store::reject(tx, &a.id, "x: y", 5)).unwrap());
    assert!(!store.write(|tx| Store::record_failure(tx, &a.id, "503", 9)).unwrap());
    assert!(store.write(|tx| Store::begin_upload(tx, &a.id, 5)).unwrap());
    assert!(store.write(|tx| Store::begin_upload(tx, &a.id, 6)).unwrap());
    assert!(client.delete(&a.id.to_hex()).is_err(), "an uploading capture cannot be deleted");
    assert!(store.write(|tx| Store::record_failure(tx, &a.id, "503 internal", 9)).unwrap());
    assert_eq!(store.next_pending(0).unwrap().unwrap().attempts, 1);
    assert!(store.write(|tx| Store::save_receipt(tx, &a.id, b"{\"r\":1}", None, 7)).unwrap());
    assert_eq!(store.receipt(&a.id).unwrap(), Some((b"{\"r\":1}".to_vec(), 7)));
    assert!(!store.write(|tx| Store::begin_upload(tx, &a.id, 8)).unwrap());
    assert!(!store.write(|tx| Store::reject(tx, &a.id, "x: y", 8)).unwrap());

    assert!(store.write(|tx| Store::begin_upload(tx, &b.id, 5)).unwrap());
    assert!(store.write(|tx| Store::reject(tx, &b.id, "unknown_precinct: no", 6)).unwrap());
    assert_eq!(
        client.resolve(&b.id.to_hex()).unwrap().state,
        CaptureState::Rejected { reason: "unknown_precinct: no".into() }
    );
    assert!(!store.write(|tx| Store::begin_upload(tx, &b.id, 7)).unwrap());
    assert!(store.next_pending(0).unwrap().is_none());
    let counts = client.status().unwrap().counts;
    assert_eq!((counts.receipted, counts.rejected, counts.captured), (1, 1, 0));
}

// ---------------------------------------------------------------------------------------------
// A small tus server.

/// A fault the stub injects into the next matching request.
#[derive(Clone, Debug)]
enum Fault {
    /// Answer `status` with a JSON error body (and `Retry-After` if given) to the next request
    /// whose method and path (`"GET /api/v1/receipts/…"`) start with `method`.
    Status { method: &'static str, status: u16, code: &'static str, retry_after: Option<u64> },
    /// Read this many bytes of the next PATCH body, keep them, and close without answering.
    CutPatch { keep: usize },
}

#[derive(Default)]
struct Upload {
    len: u64,
    data: Vec<u8>,
    photo_sha256: Option<Sha256Hash>,
    device_key: Option<DeviceKey>,
    election: String,
    precinct: String,
}

/// How the stub spoils the `log` part of the receipts it serves.
#[derive(Clone, Copy, Debug)]
enum LogTamper {
    /// No `log` at all.
    Omit,
    /// The entry names another precinct.
    Precinct,
    /// The entry's time differs from the receipt's.
    Time,
    /// The entry is not in canonical form.
    NotCanonical,
    /// `log.index` differs from the proof's index.
    Index,
    /// The proof has one hash too many.
    ExtraHash,
    /// The checkpoint is signed with another key.
    OtherKey,
}

/// The stub's log origin.
const ORIGIN: &str = "stub.example/log";

/// Reads the stub's stored hashes (in `tlog_tiles` stored-hash order).
struct Hashes<'a>(&'a [Hash]);

impl tlog_tiles::HashReader for Hashes<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|i| self.0.get(*i as usize).copied().ok_or(tlog_tiles::Error::InvalidTile))
            .collect()
    }
}

/// An entry for a capture nobody here sent (another device's).
fn foreign_entry(n: u64) -> Vec<u8> {
    LogEntry {
        capture_id: Sha256Hash::of(format!("foreign {n}").as_bytes()),
        election: "kz-test".into(),
        photo_sha256: Sha256Hash::of(format!("photo {n}").as_bytes()),
        precinct: "p2".into(),
        received_at_ms: 1_761_480_000_000 + n,
        v: 1,
    }
    .to_bytes()
}

struct StubState {
    key: SigningKey,
    /// The log's signing key.
    log_key: SigningKey,
    /// Whether enrollment answers omit `log_key`.
    enroll_without_log_key: bool,
    /// The log's entries and stored hashes.
    entries: Vec<Vec<u8>>,
    hashes: Vec<Hash>,
    /// Capture id (hex) to entry index.
    index: HashMap<String, u64>,
    log_tamper: Option<LogTamper>,
    /// `/log/checkpoint` serves the tree this many entries smaller (a stale copy).
    checkpoint_lag: u64,
    /// `/log/checkpoint` is signed with another key.
    checkpoint_other_key: bool,
    /// Before the next capture is logged, entry 0 is replaced (a rewrite between contacts).
    fork_on_next_append: bool,
    devices: HashSet<[u8; 32]>,
    precincts: Vec<String>,
    uploads: HashMap<String, Upload>,
    receipts: HashMap<String, Vec<u8>>,
    faults: VecDeque<Fault>,
    tamper_receipts: bool,
    log: Vec<String>,
}

struct Stub {
    url: String,
    state: Arc<Mutex<StubState>>,
}

struct Req {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn election_json() -> serde_json::Value {
    let names = serde_json::json!({"kk": "t", "ru": "t", "en": "t"});
    serde_json::json!({
        "id": "kz-test",
        "names": names,
        "precincts": [
            {"id": "p1", "number": 1, "region": "r", "district": "d", "address": "a"},
            {"id": "p2", "number": 2, "region": "r", "district": "d", "address": "a"},
        ],
        "protocol": {"lines": [{"id": "1", "kind": "count", "names": names}], "relations": []},
    })
}

impl Stub {
    fn start(seed: u8) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(StubState {
            key: SigningKey::from_bytes(&[seed; 32]),
            log_key: SigningKey::from_bytes(&[seed.wrapping_add(100); 32]),
            enroll_without_log_key: false,
            entries: Vec::new(),
            hashes: Vec::new(),
            index: HashMap::new(),
            log_tamper: None,
            checkpoint_lag: 0,
            checkpoint_other_key: false,
            fork_on_next_append: false,
            devices: HashSet::new(),
            precincts: vec!["p1".into()],
            uploads: HashMap::new(),
            receipts: HashMap::new(),
            faults: VecDeque::new(),
            tamper_receipts: false,
            log: Vec::new(),
        }));
        let shared = state.clone();
        // The thread ends with the test process; each connection is served in turn.
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                serve(stream, &shared);
            }
        });
        Self { url, state }
    }

    fn fault(&self, f: Fault) {
        self.state.lock().unwrap().faults.push_back(f);
    }

    fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    fn receipt_key(&self) -> DeviceKey {
        DeviceKey(self.state.lock().unwrap().key.verifying_key().to_bytes())
    }

    fn log_key(&self) -> LogKey {
        LogKey::for_signer(ORIGIN, &self.state.lock().unwrap().log_key).unwrap()
    }

    fn log_size(&self) -> u64 {
        self.state.lock().unwrap().entries.len() as u64
    }

    /// Appends `n` entries of another device.
    fn append_foreign(&self, n: u64) {
        let mut s = self.state.lock().unwrap();
        for _ in 0..n {
            let e = foreign_entry(1000 + s.entries.len() as u64);
            s.append(e);
        }
    }

    /// Rewrites the log: `f` gets the entries and returns the new ones.
    fn rewrite_log(&self, f: impl FnOnce(Vec<Vec<u8>>) -> Vec<Vec<u8>>) {
        let mut s = self.state.lock().unwrap();
        let entries = f(std::mem::take(&mut s.entries));
        s.hashes.clear();
        for e in entries {
            s.append(e);
        }
    }

    /// The requests the stub answered whose line starts with `prefix`.
    fn requests(&self, prefix: &str) -> Vec<String> {
        self.log().into_iter().filter(|l| l.starts_with(prefix)).collect()
    }
}

impl StubState {
    fn append(&mut self, entry: Vec<u8>) -> u64 {
        let n = self.entries.len() as u64;
        let leaf = tlog_tiles::record_hash(&entry);
        let new =
            tlog_tiles::stored_hashes_for_record_hash(n, leaf, &Hashes(&self.hashes)).unwrap();
        self.hashes.extend(new);
        self.entries.push(entry);
        n
    }

    fn checkpoint(&self, size: u64, key: &SigningKey) -> Vec<u8> {
        let root = tlog_tiles::tree_hash(size, &Hashes(&self.hashes)).unwrap();
        sign_checkpoint(ORIGIN, size, &root, key).unwrap()
    }

    /// The receipt's `log`, spoiled as asked.
    fn receipt_log(&self, id: &str) -> Option<ReceiptLog> {
        let index = self.index[id];
        let size = self.entries.len() as u64;
        let mut entry = String::from_utf8(self.entries[index as usize].clone()).unwrap();
        let mut proof = TlogProof {
            index,
            hashes: tlog_tiles::prove_record(size, index, &Hashes(&self.hashes)).unwrap(),
            checkpoint: self.checkpoint(size, &self.log_key),
        };
        let mut log_index = index;
        let mut parsed = LogEntry::from_bytes(entry.as_bytes()).unwrap();
        match self.log_tamper {
            None => {}
            Some(LogTamper::Omit) => return None,
            Some(LogTamper::Precinct) => {
                parsed.precinct = "p2".into();
                entry = String::from_utf8(parsed.to_bytes()).unwrap();
            }
            Some(LogTamper::Time) => {
                parsed.received_at_ms += 1;
                entry = String::from_utf8(parsed.to_bytes()).unwrap();
            }
            Some(LogTamper::NotCanonical) => entry = entry.replacen(':', ": ", 1),
            Some(LogTamper::Index) => log_index += 1,
            Some(LogTamper::ExtraHash) => proof.hashes.push(Hash([7; 32])),
            Some(LogTamper::OtherKey) => {
                proof.checkpoint = self.checkpoint(size, &SigningKey::from_bytes(&[250; 32]));
            }
        }
        Some(ReceiptLog { index: log_index, entry, proof: proof.to_text() })
    }
}

fn read_request(
    reader: &mut BufReader<TcpStream>,
) -> Option<(String, String, HashMap<String, String>)> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    Some((method, path, headers))
}

fn respond(mut stream: TcpStream, status: u16, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.shutdown(Shutdown::Both);
}

fn error(code: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"error": code, "message": format!("stub says {code}")}))
        .unwrap()
}

fn serve(stream: TcpStream, shared: &Mutex<StubState>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let Some((method, path, headers)) = read_request(&mut reader) else { return };
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut state = shared.lock().unwrap();
    let fault_at = state.faults.iter().position(|f| match f {
        Fault::Status { method: m, .. } => format!("{method} {path}").starts_with(m),
        Fault::CutPatch { .. } => method == "PATCH",
    });
    let fault = fault_at.and_then(|i| state.faults.remove(i));
    if let Some(Fault::CutPatch { keep }) = fault {
        let mut part = vec![0; keep.min(len)];
        reader.read_exact(&mut part).unwrap();
        let id = path.trim_start_matches("/files/").to_owned();
        state.log.push(format!("PATCH cut after {keep}"));
        if let Some(u) = state.uploads.get_mut(&id) {
            u.data.extend_from_slice(&part);
        }
        drop(state);
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let req = Req { method, path, headers, body };
    state.log.push(format!("{} {}", req.method, req.path));
    if let Some(Fault::Status { status, code, retry_after, .. }) = fault {
        let mut h = vec![];
        if let Some(s) = retry_after {
            h.push(("Retry-After", s.to_string()));
        }
        drop(state);
        respond(stream, status, &h, &error(code));
        return;
    }
    let (status, headers, body) = handle(&mut state, &req);
    drop(state);
    respond(stream, status, &headers, &body);
}

type Answered = (u16, Vec<(&'static str, String)>, Vec<u8>);

fn handle(s: &mut StubState, req: &Req) -> Answered {
    let tus = req.headers.get("tus-resumable").map(String::as_str) == Some("1.0.0");
    let h = |name: &str| req.headers.get(name).cloned().unwrap_or_default();
    match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/api/v1/enroll") => {
            let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
            let code = v["code"].as_str().unwrap();
            let key_hex = v["device_key"].as_str().unwrap();
            let key = crate::evidence::parse_lower_hex::<32>(key_hex).unwrap();
            let sig =
                crate::evidence::parse_lower_hex::<64>(v["signature"].as_str().unwrap()).unwrap();
            let vk = VerifyingKey::from_bytes(&key).unwrap();
            if code == "USED" {
                return (409, vec![], error("code_used"));
            }
            if vk.verify(&enroll_message(code, key_hex), &Signature::from_bytes(&sig)).is_err() {
                return (400, vec![], error("bad_signature"));
            }
            s.devices.insert(key);
            let precincts = if code == "P2" { vec!["p2"] } else { vec!["p1"] };
            let mut answer = serde_json::json!({
                "device_id": Sha256Hash::of(&key).to_hex(),
                "receipt_key": hex::encode(s.key.verifying_key().to_bytes()),
                "log_key": LogKey::for_signer(ORIGIN, &s.log_key).unwrap().vkey,
                "precincts": precincts,
                "election": election_json(),
            });
            if s.enroll_without_log_key {
                answer.as_object_mut().unwrap().remove("log_key");
            }
            (200, vec![], serde_json::to_vec(&answer).unwrap())
        }
        (_, p) if p.starts_with("/files") && !tus => (412, vec![], error("tus_version")),
        ("POST", "/files/") => {
            let mut meta = HashMap::new();
            for pair in h("upload-metadata").split(',') {
                let (k, v) = pair.split_once(' ').unwrap();
                meta.insert(k.to_owned(), BASE64.decode(v).unwrap());
            }
            let sig = hex::decode(&meta["signature"]).unwrap();
            let signed = SignedManifest::verify(&meta["manifest"], &sig).unwrap();
            let m = &signed.manifest;
            if !s.devices.contains(&m.device_key.0) {
                return (403, vec![], error("device_unknown"));
            }
            if !s.precincts.contains(&m.precinct) {
                return (403, vec![], error("precinct_not_assigned"));
            }
            if h("upload-length").parse::<u64>().ok() != Some(m.photo.bytes) {
                return (400, vec![], error("length_mismatch"));
            }
            let id = signed.hash().to_hex();
            let u = s.uploads.entry(id.clone()).or_default();
            u.len = m.photo.bytes;
            u.photo_sha256 = Some(m.photo.sha256);
            u.device_key = Some(m.device_key);
            u.election = m.election.clone();
            u.precinct = m.precinct.clone();
            let offset = u.data.len().to_string();
            (201, vec![("Location", format!("/files/{id}")), ("Upload-Offset", offset)], vec![])
        }
        ("HEAD", p) => match s.uploads.get(p.trim_start_matches("/files/")) {
            Some(u) => (
                200,
                vec![
                    ("Upload-Offset", u.data.len().to_string()),
                    ("Upload-Length", u.len.to_string()),
                ],
                vec![],
            ),
            None => (404, vec![], vec![]),
        },
        ("PATCH", p) => {
            let id = p.trim_start_matches("/files/").to_owned();
            let key = s.key.clone();
            let Some(u) = s.uploads.get_mut(&id) else { return (404, vec![], error("not_found")) };
            if h("content-type") != "application/offset+octet-stream" {
                return (415, vec![], error("unsupported_media_type"));
            }
            if h("upload-offset").parse::<usize>().ok() != Some(u.data.len()) {
                return (409, vec![], error("offset_mismatch"));
            }
            if u.data.len() + req.body.len() > u.len as usize {
                return (413, vec![], error("body_too_large"));
            }
            u.data.extend_from_slice(&req.body);
            let offset = u.data.len().to_string();
            s.log.push(format!("PATCH bytes {}", req.body.len()));
            let u = &s.uploads[&id];
            if u.data.len() as u64 == u.len {
                let photo = Sha256Hash::of(&u.data);
                if Some(photo) != u.photo_sha256 {
                    s.uploads.remove(&id);
                    return (422, vec![], error("photo_mismatch"));
                }
                let receipt = Receipt {
                    capture_id: Sha256Hash::from_hex(&id).unwrap(),
                    device_key: u.device_key.unwrap(),
                    photo_sha256: photo,
                    received_at_ms: 1_761_480_000_000,
                    server_key: DeviceKey(key.verifying_key().to_bytes()),
                    v: 1,
                }
                .sign(&key);
                let entry = LogEntry {
                    capture_id: receipt.receipt.capture_id,
                    election: u.election.clone(),
                    photo_sha256: photo,
                    precinct: u.precinct.clone(),
                    received_at_ms: receipt.receipt.received_at_ms,
                    v: 1,
                };
                s.receipts.insert(id.clone(), serde_json::to_vec(&receipt).unwrap());
                if std::mem::take(&mut s.fork_on_next_append) {
                    let mut entries = std::mem::take(&mut s.entries);
                    entries[0] = foreign_entry(999);
                    s.hashes.clear();
                    for e in entries {
                        s.append(e);
                    }
                }
                let index = s.append(entry.to_bytes());
                s.index.insert(id, index);
            }
            (204, vec![("Upload-Offset", offset)], vec![])
        }
        ("GET", p) if p.starts_with("/api/v1/receipts/") => {
            match s.receipts.get(p.trim_start_matches("/api/v1/receipts/")) {
                Some(r) => {
                    let mut r: SignedReceipt = serde_json::from_slice(r).unwrap();
                    if s.tamper_receipts {
                        r.receipt.received_at_ms += 1;
                    }
                    r.log = s.receipt_log(&r.receipt.capture_id.to_hex());
                    (200, vec![], serde_json::to_vec(&r).unwrap())
                }
                None => (404, vec![], error("not_found")),
            }
        }
        ("GET", "/log/checkpoint") => {
            let size = (s.entries.len() as u64).saturating_sub(s.checkpoint_lag);
            if size == 0 {
                return (404, vec![], error("not_found"));
            }
            let other = SigningKey::from_bytes(&[251; 32]);
            let key = if s.checkpoint_other_key { &other } else { &s.log_key };
            (200, vec![], s.checkpoint(size, key))
        }
        ("GET", p) if p.starts_with("/api/v1/log/consistency?from=") => {
            let from: u64 = p.trim_start_matches("/api/v1/log/consistency?from=").parse().unwrap();
            let size = s.entries.len() as u64;
            if from == 0 || from > size {
                return (400, vec![], error("bad_size"));
            }
            let proof = tlog_tiles::prove_tree(size, from, &Hashes(&s.hashes)).unwrap();
            let answer = serde_json::json!({
                "from": from,
                "proof": proof.iter().map(|h| BASE64.encode(h.0)).collect::<Vec<_>>(),
                "checkpoint": String::from_utf8(s.checkpoint(size, &s.log_key)).unwrap(),
            });
            (200, vec![], serde_json::to_vec(&answer).unwrap())
        }
        _ => (404, vec![], error("not_found")),
    }
}

// ---------------------------------------------------------------------------------------------
// Engine behaviour.

/// Records every progress report.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<SyncProgress>>,
    cancel_on_retry: Option<CancelToken>,
}

impl SyncListener for Recorder {
    fn on_progress(&self, p: SyncProgress) {
        if let (SyncProgress::Retrying { .. }, Some(c)) = (&p, &self.cancel_on_retry) {
            c.cancel();
        }
        self.events.lock().unwrap().push(p);
    }
}

impl Recorder {
    fn retries(&self) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, SyncProgress::Retrying { .. }))
            .count()
    }
}

fn enrolled(stub: &Stub) -> (tempfile::TempDir, Client) {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(dir.path(), &StoreKey::from_bytes([7; 32]), test_config()).unwrap();
    let e = client.enroll(&format!("{}/", stub.url), "K7Q2-9XZM").unwrap();
    assert_eq!(e.server_url, stub.url);
    assert_eq!(e.receipt_key, stub.receipt_key());
    assert_eq!(e.log_key, Some(stub.log_key()));
    assert_eq!(e.device_id, Sha256Hash::of(&client.device_key().0));
    assert_eq!(e.precincts, vec!["p1".to_owned()]);
    assert_eq!(e.election.id, "kz-test");
    (dir, client)
}

fn state(client: &Client, id: &Sha256Hash) -> CaptureState {
    client.resolve(&id.to_hex()).unwrap().state
}

#[test]
fn sync_sends_everything_in_chunks_and_stores_verified_receipts() {
    let stub = Stub::start(1);
    let (_dir, client) = enrolled(&stub);
    let big = client.capture(&tiny_jpeg(160, 120, 3), &request("p1")).unwrap();
    let small = client.capture(&tiny_jpeg(8, 8, 4), &request("p1")).unwrap();
    assert!(big.manifest.photo.bytes > 3 * 4096, "the photo needs several chunks");
    let recorder = Recorder::default();
    let summary = client.sync(&recorder, &CancelToken::new()).unwrap();
    assert_eq!(
        summary,
        SyncSummary {
            receipted: 2,
            rejected: 0,
            remaining: 0,
            bytes_sent: big.manifest.photo.bytes + small.manifest.photo.bytes,
            cancelled: false,
            log_size: Some(2),
            refused: vec![],
            reviewed: vec![],
            witnessed_size: None,
            witness_problem: None,
        }
    );
    for (i, c) in [&big, &small].into_iter().enumerate() {
        assert_eq!(state(&client, &c.id), CaptureState::Receipted);
        let (receipt, _) = client.receipt(&c.id.to_hex()).unwrap().unwrap();
        receipt.verify(&stub.receipt_key(), &c.id, &c.manifest.photo.sha256).unwrap();
        client.verify_receipt(&c.id.to_hex()).unwrap();
        // Stored with its place in the log: the entry index and the checkpoint of the tree
        // it was proven in (one entry, then two).
        let (index, note) = client.store().receipt_log(&c.id).unwrap().unwrap();
        assert_eq!(index, i as u64);
        assert_eq!(
            crate::log::verify_checkpoint(&note, &stub.log_key()).unwrap().size,
            i as u64 + 1
        );
    }
    // The contact check found an empty log; the second receipt's checkpoint was proven to
    // extend the first one's.
    assert_eq!(stub.requests("GET /log/checkpoint").len(), 1);
    assert_eq!(
        stub.requests("GET /api/v1/log/consistency"),
        ["GET /api/v1/log/consistency?from=1"]
    );
    let log = stub.log();
    let patches: Vec<usize> = log
        .iter()
        .filter_map(|l| l.strip_prefix("PATCH bytes ").map(|n| n.parse().unwrap()))
        .collect();
    assert!(patches.iter().all(|&n| n <= 4096), "{patches:?}");
    assert_eq!(patches.iter().sum::<usize>() as u64, summary.bytes_sent);
    // In sequence order: the big one (seq 1) first.
    let first_post = log.iter().position(|l| l == "POST /files/").unwrap();
    assert!(log[first_post + 1].starts_with(&format!("HEAD /files/{}", big.id)));
    let events = recorder.events.lock().unwrap().clone();
    assert_eq!(
        events.first(),
        Some(&SyncProgress::Started { pending: 2, bytes: summary.bytes_sent })
    );
    assert_eq!(events.last(), Some(&SyncProgress::Finished(summary.clone())));
    let sent: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            SyncProgress::Capture(p) if p.id == big.id => Some(p.sent),
            _ => None,
        })
        .collect();
    assert!(
        sent.windows(2).all(|w| w[0] <= w[1]) && sent.last() == Some(&big.manifest.photo.bytes)
    );

    let status = client.status().unwrap();
    assert_eq!(status.counts.receipted, 2);
    assert_eq!(status.log_key, Some(stub.log_key().vkey));
    assert_eq!(status.log_checkpoint.map(|c| c.size), Some(2));
    assert_eq!(status.log_alarm, None);
    assert_eq!(status.server_url.as_deref(), Some(stub.url.as_str()));
    assert!(status.last_sync_at_ms.is_some() && status.last_sync_error.is_none());
    assert_eq!(status.next_attempt_at_ms, None);
    assert!(!status.running);
    // Nothing left: a second sync sends nothing.
    let again = client.sync(&NoProgress, &CancelToken::new()).unwrap();
    assert_eq!((again.receipted, again.bytes_sent), (0, 0));
    assert!(client.delete(&big.id.to_hex()).is_err(), "a receipted capture stays");
}

#[test]
fn sync_resumes_after_cuts_and_transient_errors() {
    let stub = Stub::start(2);
    let (_dir, client) = enrolled(&stub);
    let c = client.capture(&tiny_jpeg(160, 120, 5), &request("p1")).unwrap();
    stub.fault(Fault::Status {
        method: "POST",
        status: 503,
        code: "internal",
        retry_after: Some(0),
    });
    stub.fault(Fault::Status { method: "HEAD", status: 500, code: "internal", retry_after: None });
    stub.fault(Fault::CutPatch { keep: 1000 });
    stub.fault(Fault::Status {
        method: "PATCH",
        status: 502,
        code: "bad_gateway",
        retry_after: None,
    });
    stub.fault(Fault::CutPatch { keep: 0 });
    stub.fault(Fault::Status {
        method: "GET /api/v1/receipts/",
        status: 429,
        code: "rate_limited",
        retry_after: Some(0),
    });
    let recorder = Recorder::default();
    let summary = client.sync(&recorder, &CancelToken::new()).unwrap();
    assert_eq!(summary.receipted, 1);
    assert_eq!(summary.bytes_sent, c.manifest.photo.bytes);
    assert_eq!(state(&client, &c.id), CaptureState::Receipted);
    assert!(recorder.retries() >= 6, "every fault is a retry");
    // The cut PATCH's 1000 bytes were kept by the server: the client resumed from its offset
    // (the stub refuses a wrong offset and checks the whole photo's hash).
    let log = stub.log();
    let after_cut = log.iter().position(|l| l == "PATCH cut after 1000").unwrap();
    assert!(log[after_cut + 1].starts_with("HEAD "), "{log:?}");
    assert!(!log.iter().any(|l| l.contains("offset_mismatch")));
    assert_eq!(client.store().next_pending(0).unwrap(), None);
}

#[test]
fn a_refused_capture_is_rejected_and_the_next_one_still_goes() {
    let stub = Stub::start(3);
    // Captured before the device enrolled, so not checked against the election then.
    let dir = tempfile::tempdir().unwrap();
    let bad = Client::open(dir.path(), &StoreKey::from_bytes([7; 32]), test_config())
        .unwrap()
        .capture(&tiny_jpeg(8, 8, 6), &request("p9"))
        .unwrap();
    let client = Client::open(dir.path(), &StoreKey::from_bytes([7; 32]), test_config()).unwrap();
    client.enroll(&stub.url, "K7Q2-9XZM").unwrap();
    // Enrolled, the device refuses such a capture itself, before signing it.
    let refused = client.capture(&tiny_jpeg(8, 8, 6), &request("p9")).unwrap_err();
    assert!(matches!(refused, Error::Refused(CaptureRefusal::UnknownPrecinct { .. })));
    let good = client.capture(&tiny_jpeg(8, 8, 7), &request("p1")).unwrap();
    assert_eq!(good.seq, 2, "the refusal used no sequence number");
    let summary = client.sync(&NoProgress, &CancelToken::new()).unwrap();
    assert_eq!((summary.receipted, summary.rejected, summary.remaining), (1, 1, 0));
    assert_eq!(
        summary.refused,
        [RefusedCapture {
            id: bad.id,
            seq: 1,
            reason: "precinct_not_assigned: stub says precinct_not_assigned".into()
        }]
    );
    assert_eq!(
        state(&client, &bad.id),
        CaptureState::Rejected {
            reason: "precinct_not_assigned: stub says precinct_not_assigned".into()
        }
    );
    assert_eq!(state(&client, &good.id), CaptureState::Receipted);
    // A rejected capture is not sent again.
    let log_len = stub.log().len();
    client.sync(&NoProgress, &CancelToken::new()).unwrap();
    assert!(!stub.log()[log_len..].iter().any(|l| l.starts_with("POST /files")));
}

#[test]
fn a_device_refusal_stops_the_sync_without_rejecting_captures() {
    let stub = Stub::start(4);
    let (_dir, client) = enrolled(&stub);
    let c = client.capture(&tiny_jpeg(8, 8, 8), &request("p1")).unwrap();
    stub.state.lock().unwrap().devices.clear();
    let err = client.sync(&NoProgress, &CancelToken::new()).unwrap_err();
    assert!(
        matches!(&err, Error::Sync(SyncError::Refused { status: 403, code, .. }) if code == "device_unknown"),
        "{err:?}"
    );
    assert_eq!(state(&client, &c.id), CaptureState::Queued);
    let status = client.status().unwrap();
    assert!(status.last_sync_error.unwrap().contains("device_unknown"));
}

#[test]
fn a_receipt_that_does_not_verify_stops_the_sync_loudly() {
    let stub = Stub::start(5);
    let (_dir, client) = enrolled(&stub);
    let c = client.capture(&tiny_jpeg(8, 8, 9), &request("p1")).unwrap();
    stub.state.lock().unwrap().tamper_receipts = true;
    let err = client.sync(&NoProgress, &CancelToken::new()).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Sync(SyncError::ReceiptInvalid { capture, source: ReceiptError::BadSignature })
                if *capture == c.id
        ),
        "{err:?}"
    );
    assert_eq!(state(&client, &c.id), CaptureState::Uploading);
    assert_eq!(client.store().receipt(&c.id).unwrap(), None);
    let gets = stub.log().iter().filter(|l| l.starts_with("GET /api/v1/receipts/")).count();
    assert_eq!(gets, 3, "fetched receipt_attempts times, no more");
    // Once the server behaves, the next sync receipts it.
    stub.state.lock().unwrap().tamper_receipts = false;
    assert_eq!(client.sync(&NoProgress, &CancelToken::new()).unwrap().receipted, 1);
}

#[test]
fn an_unreachable_server_gives_up_after_max_retries() {
    let stub = Stub::start(6);
    let (dir, client) = enrolled(&stub);
    client.capture(&tiny_jpeg(8, 8, 10), &request("p1")).unwrap();
    drop(client);
    // Re-point the store at a port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let client = Client::open(dir.path(), &StoreKey::from_bytes([7; 32]), test_config()).unwrap();
    let mut server = client.store().server().unwrap().unwrap();
    server.base_url = url;
    client.store().write(|tx| Store::save_server(tx, &server)).unwrap();
    let recorder = Recorder::default();
    let err = client.sync(&recorder, &CancelToken::new()).unwrap_err();
    assert!(matches!(&err, Error::Sync(SyncError::Unreachable { attempts: 5, .. })), "{err:?}");
    assert_eq!(recorder.retries(), 4);
    let pending = client.store().next_pending(0).unwrap().unwrap();
    assert_eq!(pending.attempts, 5);
    let status = client.status().unwrap();
    assert!(status.last_sync_error.unwrap().contains("unreachable"));
    assert!(status.next_attempt_at_ms.is_some());
}

#[test]
fn cancelling_stops_during_a_back_off_wait() {
    let stub = Stub::start(7);
    let (_dir, client) = enrolled(&stub);
    let c = client.capture(&tiny_jpeg(8, 8, 11), &request("p1")).unwrap();
    stub.fault(Fault::Status {
        method: "POST",
        status: 503,
        code: "internal",
        retry_after: Some(3600),
    });
    let token = CancelToken::new();
    let recorder = Recorder { cancel_on_retry: Some(token.clone()), ..Recorder::default() };
    let t0 = Instant::now();
    let summary = client.sync(&recorder, &token).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(summary.cancelled);
    assert_eq!(summary.remaining, 1);
    assert_eq!(state(&client, &c.id), CaptureState::Uploading);
    // A cancelled token stops a sync before it sends anything.
    let log_len = stub.log().len();
    assert!(client.sync(&NoProgress, &token).unwrap().cancelled);
    assert_eq!(stub.log().len(), log_len);
}

#[test]
fn only_one_sync_runs_per_store() {
    let stub = Stub::start(8);
    let (dir, client) = enrolled(&stub);
    let other = Client::open(dir.path(), &StoreKey::from_bytes([7; 32]), test_config()).unwrap();
    client.capture(&tiny_jpeg(8, 8, 12), &request("p1")).unwrap();
    // The first sync waits in a back-off; the second, from another handle, is refused.
    stub.fault(Fault::Status {
        method: "POST",
        status: 503,
        code: "internal",
        retry_after: Some(3600),
    });
    let token = CancelToken::new();
    let waiting = Arc::new(AtomicU32::new(0));
    struct Flag(Arc<AtomicU32>);
    impl SyncListener for Flag {
        fn on_progress(&self, p: SyncProgress) {
            if matches!(p, SyncProgress::Retrying { .. }) {
                self.0.store(1, Ordering::SeqCst);
            }
        }
    }
    thread::scope(|s| {
        let first = s.spawn(|| client.sync(&Flag(waiting.clone()), &token));
        while waiting.load(Ordering::SeqCst) == 0 {
            thread::sleep(Duration::from_millis(5));
        }
        let err = other.sync(&NoProgress, &CancelToken::new()).unwrap_err();
        assert!(matches!(err, Error::Sync(SyncError::SyncBusy)), "{err:?}");
        let err = client.sync(&NoProgress, &CancelToken::new()).unwrap_err();
        assert!(matches!(err, Error::Sync(SyncError::SyncBusy)), "{err:?}");
        assert!(other.status().unwrap().running);
        token.cancel();
        assert!(first.join().unwrap().unwrap().cancelled);
    });
    assert!(!other.status().unwrap().running);
}

#[test]
fn enrolling_again_adds_precincts_and_refuses_another_server_key() {
    let stub = Stub::start(9);
    let (dir, client) = enrolled(&stub);
    let refused = client.capture(&tiny_jpeg(8, 8, 1), &request("p2")).unwrap_err();
    assert!(matches!(refused, Error::Refused(CaptureRefusal::PrecinctNotAssigned { .. })));
    let e = client.enroll(&stub.url, "P2").unwrap();
    assert_eq!(e.precincts, vec!["p1".to_owned(), "p2".to_owned()]);
    // The station assigned by the second code is the device's own now, by id or number.
    assert_eq!(client.capture(&tiny_jpeg(8, 8, 1), &request("2")).unwrap().manifest.precinct, "p2");
    assert_eq!(client.enrollment().unwrap(), Some(e));
    let err = client.enroll(&stub.url, "USED").unwrap_err();
    assert!(
        matches!(&err, Error::Sync(SyncError::Refused { status: 409, code, .. }) if code == "code_used"),
        "{err:?}"
    );
    let other = Stub::start(10);
    let err = client.enroll(&other.url, "K7Q2").unwrap_err();
    assert!(matches!(err, Error::Sync(SyncError::ServerKeyChanged)), "{err:?}");
    assert_eq!(client.enrollment().unwrap().unwrap().server_url, stub.url);
    assert!(matches!(client.enroll("ftp://x", "K"), Err(Error::Sync(SyncError::BadUrl(_)))));
    assert!(matches!(client.enroll(&stub.url, " "), Err(Error::Sync(SyncError::BadCode))));
    drop(dir);
}

#[test]
fn sync_needs_an_enrollment() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(dir.path(), &StoreKey::from_bytes([7; 32]), test_config()).unwrap();
    let err = client.sync(&NoProgress, &CancelToken::new()).unwrap_err();
    assert!(matches!(err, Error::Sync(SyncError::NotEnrolled)), "{err:?}");
    let status = client.status().unwrap();
    assert_eq!(status.server_url, None);
    assert_eq!(client.enrollment().unwrap(), None);
}

// ---------------------------------------------------------------------------------------------
// The public log: receipts with proofs, the kept checkpoint, alarms.

fn sync_ok(client: &Client) -> SyncSummary {
    client.sync(&NoProgress, &CancelToken::new()).unwrap()
}

fn sync_err(client: &Client) -> SyncError {
    match client.sync(&NoProgress, &CancelToken::new()) {
        Err(Error::Sync(e)) => e,
        other => panic!("expected a sync error, got {other:?}"),
    }
}

#[test]
fn a_receipt_without_a_valid_log_proof_is_invalid() {
    type Expected = fn(&ReceiptError) -> bool;
    let table: [(LogTamper, Expected); 7] = [
        (LogTamper::Omit, |e| *e == ReceiptError::NoLogProof),
        (LogTamper::Precinct, |e| *e == ReceiptError::Mismatch("log entry precinct")),
        (LogTamper::Time, |e| *e == ReceiptError::Mismatch("log entry time")),
        (LogTamper::NotCanonical, |e| {
            matches!(e, ReceiptError::Log(LogError::Malformed { what: "entry", .. }))
        }),
        (LogTamper::Index, |e| *e == ReceiptError::Mismatch("log index")),
        (LogTamper::ExtraHash, |e| {
            *e == ReceiptError::Log(LogError::BadInclusionProof { index: 0, size: 1 })
        }),
        (LogTamper::OtherKey, |e| *e == ReceiptError::Log(LogError::BadCheckpointSignature)),
    ];
    for (i, (tamper, expected)) in table.into_iter().enumerate() {
        let stub = Stub::start(20 + i as u8);
        let (_dir, client) = enrolled(&stub);
        let c = client.capture(&tiny_jpeg(8, 8, 30 + i as u8), &request("p1")).unwrap();
        stub.state.lock().unwrap().log_tamper = Some(tamper);
        match sync_err(&client) {
            SyncError::ReceiptInvalid { capture, source } => {
                assert_eq!(capture, c.id);
                assert!(expected(&source), "{tamper:?}: {source:?}");
            }
            other => panic!("{tamper:?}: {other:?}"),
        }
        assert_eq!(state(&client, &c.id), CaptureState::Uploading, "{tamper:?}");
        assert_eq!(client.store().receipt(&c.id).unwrap(), None);
        assert_eq!(stub.requests("GET /api/v1/receipts/").len(), 3, "not an endless retry");
        assert_eq!(client.status().unwrap().log_alarm, None, "a bad proof is not an alarm");
        stub.state.lock().unwrap().log_tamper = None;
        assert_eq!(sync_ok(&client).receipted, 1, "{tamper:?}");
    }
}

#[test]
fn the_newest_checkpoint_is_kept_and_each_newer_one_proven_to_extend_it() {
    let stub = Stub::start(30);
    let (_dir, client) = enrolled(&stub);
    let mut kept = 0;
    for round in 0..4u8 {
        // Other devices' captures reach the log between this device's contacts.
        stub.append_foreign(u64::from(round) * 3);
        client.capture(&tiny_jpeg(8, 8, 40 + round), &request("p1")).unwrap();
        let before = stub.log().len();
        let summary = sync_ok(&client);
        assert_eq!(summary.receipted, 1);
        assert_eq!(summary.log_size, Some(stub.log_size()));
        let consistency: Vec<String> = stub.log()[before..]
            .iter()
            .filter(|l| l.starts_with("GET /api/v1/log/consistency"))
            .cloned()
            .collect();
        if kept > 0 {
            // From the kept size: at the contact if the log grew, else for the receipt.
            assert_eq!(
                consistency.first(),
                Some(&format!("GET /api/v1/log/consistency?from={kept}")),
                "round {round}"
            );
        }
        kept = stub.log_size();
        assert_eq!(client.status().unwrap().log_checkpoint.unwrap().size, kept);
    }
    // A contact with nothing to send still follows the log.
    stub.append_foreign(5);
    assert_eq!(sync_ok(&client).log_size, Some(kept + 5));
    // Nothing changed: no proof is needed.
    let before = stub.log().len();
    assert_eq!(sync_ok(&client).log_size, Some(kept + 5));
    // Only the contact check, and the question for review decisions (this stub has none).
    assert_eq!(
        stub.log()[before..],
        ["GET /log/checkpoint".to_owned(), "POST /api/v1/challenge".to_owned()]
    );
}

#[test]
fn a_stale_checkpoint_is_not_an_alarm() {
    let stub = Stub::start(31);
    let (_dir, client) = enrolled(&stub);
    for i in 0..3 {
        client.capture(&tiny_jpeg(8, 8, 50 + i), &request("p1")).unwrap();
    }
    assert_eq!(sync_ok(&client).log_size, Some(3));
    // `/log/checkpoint` lags behind (a cache, or a checkpoint committed but not yet
    // published): the server still proves that the smaller tree is a prefix of its newest.
    stub.state.lock().unwrap().checkpoint_lag = 2;
    assert_eq!(sync_ok(&client).log_size, Some(3));
    stub.append_foreign(4);
    assert_eq!(sync_ok(&client).log_size, Some(7));
    assert_eq!(client.status().unwrap().log_alarm, None);
}

/// Checks the stored alarm: its two checkpoints verify under the log key and have the sizes
/// the error named.
fn check_alarm(client: &Client, stub: &Stub, kind: LogAlarmKind, sizes: (u64, u64)) {
    let status = client.status().unwrap();
    let alarm = status.log_alarm.expect("the alarm is stored");
    assert_eq!((alarm.kind, alarm.old_size, alarm.new_size), (kind, sizes.0, sizes.1));
    let old = crate::log::verify_checkpoint(&alarm.old_checkpoint, &stub.log_key()).unwrap();
    let new = crate::log::verify_checkpoint(&alarm.new_checkpoint, &stub.log_key()).unwrap();
    assert_eq!((old.size, new.size), sizes);
    let last = status.last_sync_error.unwrap();
    assert!(
        last.contains(if kind == LogAlarmKind::Forked { "forked" } else { "shrank" }),
        "{last}"
    );
}

/// After an alarm: every later sync stops with it at once, without a request, and the
/// waiting capture is never receipted.
fn check_alarm_stays(client: &Client, stub: &Stub, waiting: &Sha256Hash) {
    let before = stub.log().len();
    let again = sync_err(client);
    assert!(again.is_log_alarm(), "{again:?}");
    assert_eq!(stub.log().len(), before, "no request after the alarm");
    let waiting_state = state(client, waiting);
    assert!(
        matches!(waiting_state, CaptureState::Captured | CaptureState::Queued),
        "{waiting_state:?}"
    );
    assert_eq!(client.store().receipt(waiting).unwrap(), None);
    // Enrolling again does not clear it.
    client.enroll(&stub.url, "K7Q2-9XZM").unwrap();
    assert!(sync_err(client).is_log_alarm());
}

#[test]
fn a_log_rewritten_at_the_same_size_raises_the_fork_alarm() {
    let stub = Stub::start(32);
    let (_dir, client) = enrolled(&stub);
    client.capture(&tiny_jpeg(8, 8, 60), &request("p1")).unwrap();
    client.capture(&tiny_jpeg(8, 8, 61), &request("p1")).unwrap();
    assert_eq!(sync_ok(&client).log_size, Some(2));
    stub.rewrite_log(|mut e| {
        e[0] = foreign_entry(7);
        e
    });
    let waiting = client.capture(&tiny_jpeg(8, 8, 62), &request("p1")).unwrap().id;
    let err = sync_err(&client);
    assert!(
        matches!(&err, SyncError::LogForked { old_size: 2, new_size: 2, detail } if detail.contains("different roots")),
        "{err:?}"
    );
    assert!(stub.requests("POST /files/").len() == 2, "nothing sent to a forked server");
    check_alarm(&client, &stub, LogAlarmKind::Forked, (2, 2));
    check_alarm_stays(&client, &stub, &waiting);
}

#[test]
fn a_log_that_grew_from_a_rewritten_prefix_raises_the_fork_alarm() {
    let stub = Stub::start(33);
    let (_dir, client) = enrolled(&stub);
    client.capture(&tiny_jpeg(8, 8, 63), &request("p1")).unwrap();
    client.capture(&tiny_jpeg(8, 8, 64), &request("p1")).unwrap();
    assert_eq!(sync_ok(&client).log_size, Some(2));
    stub.rewrite_log(|mut e| {
        e[1] = foreign_entry(8);
        e
    });
    stub.append_foreign(3);
    let waiting = client.capture(&tiny_jpeg(8, 8, 65), &request("p1")).unwrap().id;
    let err = sync_err(&client);
    assert!(matches!(err, SyncError::LogForked { old_size: 2, new_size: 5, .. }), "{err:?}");
    check_alarm(&client, &stub, LogAlarmKind::Forked, (2, 5));
    check_alarm_stays(&client, &stub, &waiting);
}

#[test]
fn a_log_that_shrank_raises_the_shrank_alarm() {
    let stub = Stub::start(34);
    let (_dir, client) = enrolled(&stub);
    for i in 0..3 {
        client.capture(&tiny_jpeg(8, 8, 66 + i), &request("p1")).unwrap();
    }
    assert_eq!(sync_ok(&client).log_size, Some(3));
    // Back to an older state of the same log: a prefix, but entries it had are gone.
    stub.rewrite_log(|mut e| {
        e.truncate(1);
        e
    });
    let waiting = client.capture(&tiny_jpeg(8, 8, 69), &request("p1")).unwrap().id;
    let err = sync_err(&client);
    assert!(matches!(err, SyncError::LogShrank { old_size: 3, new_size: 1 }), "{err:?}");
    check_alarm(&client, &stub, LogAlarmKind::Shrank, (3, 1));
    check_alarm_stays(&client, &stub, &waiting);
}

#[test]
fn a_receipt_from_a_forked_log_is_not_kept() {
    let stub = Stub::start(35);
    let (_dir, client) = enrolled(&stub);
    client.capture(&tiny_jpeg(8, 8, 70), &request("p1")).unwrap();
    assert_eq!(sync_ok(&client).log_size, Some(1));
    // The contact check passes; the log is rewritten before this capture enters it, so its
    // receipt's proof verifies against a checkpoint that does not extend the kept one.
    let c = client.capture(&tiny_jpeg(8, 8, 71), &request("p1")).unwrap();
    stub.state.lock().unwrap().fork_on_next_append = true;
    let err = sync_err(&client);
    assert!(matches!(err, SyncError::LogForked { old_size: 1, new_size: 2, .. }), "{err:?}");
    assert_eq!(stub.requests("GET /api/v1/receipts/").len(), 2, "the receipt was fetched");
    assert_eq!(state(&client, &c.id), CaptureState::Queued);
    assert_eq!(client.store().receipt(&c.id).unwrap(), None);
    check_alarm(&client, &stub, LogAlarmKind::Forked, (1, 2));
    check_alarm_stays(&client, &stub, &c.id);
}

#[test]
fn a_checkpoint_under_another_key_stops_the_sync_without_an_alarm() {
    let stub = Stub::start(36);
    let (_dir, client) = enrolled(&stub);
    client.capture(&tiny_jpeg(8, 8, 72), &request("p1")).unwrap();
    sync_ok(&client);
    stub.state.lock().unwrap().checkpoint_other_key = true;
    let err = sync_err(&client);
    assert!(matches!(err, SyncError::LogInvalid(LogError::BadCheckpointSignature)), "{err:?}");
    assert_eq!(client.status().unwrap().log_alarm, None);
    stub.state.lock().unwrap().checkpoint_other_key = false;
    sync_ok(&client);
}

#[test]
fn enrollment_pins_the_log_key_and_refuses_another() {
    let stub = Stub::start(37);
    let (_dir, client) = enrolled(&stub);
    stub.state.lock().unwrap().log_key = SigningKey::from_bytes(&[252; 32]);
    let err = client.enroll(&stub.url, "P2").unwrap_err();
    assert!(matches!(err, Error::Sync(SyncError::LogKeyChanged)), "{err:?}");
    assert_eq!(client.enrollment().unwrap().unwrap().precincts, ["p1"], "nothing changed");
    let other = Stub::start(38);
    other.state.lock().unwrap().enroll_without_log_key = true;
    let dir = tempfile::tempdir().unwrap();
    let fresh = Client::open(dir.path(), &StoreKey::from_bytes([7; 32]), test_config()).unwrap();
    let err = fresh.enroll(&other.url, "K7Q2").unwrap_err();
    assert!(
        matches!(&err, Error::Sync(SyncError::Protocol(m)) if m.contains("log_key")),
        "{err:?}"
    );
    assert_eq!(fresh.enrollment().unwrap(), None);
}

#[test]
fn a_store_enrolled_before_the_log_learns_its_key_on_the_next_enrollment() {
    let stub = Stub::start(39);
    let (_dir, client) = enrolled(&stub);
    // As a store enrolled by a version without the log looks after the upgrade.
    let mut server = client.store().server().unwrap().unwrap();
    server.log_key = None;
    client.store().write(|tx| Store::save_server(tx, &server)).unwrap();
    assert_eq!(client.enrollment().unwrap().unwrap().log_key, None);

    let old = client.capture(&tiny_jpeg(8, 8, 73), &request("p1")).unwrap();
    let summary = sync_ok(&client);
    assert_eq!((summary.receipted, summary.log_size), (1, None));
    assert!(stub.requests("GET /log/").is_empty(), "the log is not checked without a key");
    assert_eq!(client.store().receipt_log(&old.id).unwrap(), None);
    client.verify_receipt(&old.id.to_hex()).unwrap();
    let status = client.status().unwrap();
    assert_eq!((status.log_key, status.log_checkpoint), (None, None));

    // The same code again: the server answers the same, and the log key gets pinned.
    let e = client.enroll(&stub.url, "K7Q2-9XZM").unwrap();
    assert_eq!(e.log_key, Some(stub.log_key()));
    let new = client.capture(&tiny_jpeg(8, 8, 74), &request("p1")).unwrap();
    assert_eq!(sync_ok(&client).log_size, Some(2));
    assert_eq!(client.store().receipt_log(&new.id).unwrap().map(|(i, _)| i), Some(1));
    client.verify_receipt(&new.id.to_hex()).unwrap();
    client.verify_receipt(&old.id.to_hex()).unwrap();
    assert_eq!(client.status().unwrap().log_key, Some(stub.log_key().vkey));
}
