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
use crate::receipt::Receipt;
use crate::{CaptureRequest, Client, ClientConfig};

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
    let client = Client::open(dir.path(), test_config()).unwrap();
    let a = client.capture(&tiny_jpeg(16, 16, 1), &request("p1")).unwrap();
    let b = client.capture(&tiny_jpeg(16, 16, 2), &request("p1")).unwrap();
    let store = client.store();
    assert_eq!(store.pending_totals().unwrap().0, 2);
    let first = store.next_pending(0).unwrap().unwrap();
    assert_eq!((first.id, first.seq, first.state.clone()), (a.id, 1, CaptureState::Captured));
    assert_eq!(store.next_pending(1).unwrap().unwrap().id, b.id);
    assert!(store.next_pending(2).unwrap().is_none());

    // Receipts and rejections only from `uploading`.
    assert!(!store.write(|tx| Store::save_receipt(tx, &a.id, b"{}", 5)).unwrap());
    assert!(!store.write(|tx| Store::reject(tx, &a.id, "x: y", 5)).unwrap());
    assert!(!store.write(|tx| Store::record_failure(tx, &a.id, "503", 9)).unwrap());
    assert!(store.write(|tx| Store::begin_upload(tx, &a.id, 5)).unwrap());
    assert!(store.write(|tx| Store::begin_upload(tx, &a.id, 6)).unwrap());
    assert!(client.delete(&a.id.to_hex()).is_err(), "an uploading capture cannot be deleted");
    assert!(store.write(|tx| Store::record_failure(tx, &a.id, "503 internal", 9)).unwrap());
    assert_eq!(store.next_pending(0).unwrap().unwrap().attempts, 1);
    assert!(store.write(|tx| Store::save_receipt(tx, &a.id, b"{\"r\":1}", 7)).unwrap());
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
    /// Answer `status` with a JSON error body (and `Retry-After` if given).
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
}

struct StubState {
    key: SigningKey,
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
        Fault::Status { method: m, .. } => *m == method,
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
            let answer = serde_json::json!({
                "device_id": Sha256Hash::of(&key).to_hex(),
                "receipt_key": hex::encode(s.key.verifying_key().to_bytes()),
                "precincts": precincts,
                "election": election_json(),
            });
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
                s.receipts.insert(id, serde_json::to_vec(&receipt).unwrap());
            }
            (204, vec![("Upload-Offset", offset)], vec![])
        }
        ("GET", p) if p.starts_with("/api/v1/receipts/") => {
            match s.receipts.get(p.trim_start_matches("/api/v1/receipts/")) {
                Some(r) if s.tamper_receipts => {
                    let mut r: SignedReceipt = serde_json::from_slice(r).unwrap();
                    r.receipt.received_at_ms += 1;
                    (200, vec![], serde_json::to_vec(&r).unwrap())
                }
                Some(r) => (200, vec![], r.clone()),
                None => (404, vec![], error("not_found")),
            }
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
    let client = Client::open(dir.path(), test_config()).unwrap();
    let e = client.enroll(&format!("{}/", stub.url), "K7Q2-9XZM").unwrap();
    assert_eq!(e.server_url, stub.url);
    assert_eq!(e.receipt_key, stub.receipt_key());
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
            cancelled: false
        }
    );
    for c in [&big, &small] {
        assert_eq!(state(&client, &c.id), CaptureState::Receipted);
        let (receipt, _) = client.receipt(&c.id.to_hex()).unwrap().unwrap();
        receipt.verify(&stub.receipt_key(), &c.id, &c.manifest.photo.sha256).unwrap();
    }
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
        method: "GET",
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
    let (_dir, client) = enrolled(&stub);
    let bad = client.capture(&tiny_jpeg(8, 8, 6), &request("p9")).unwrap();
    let good = client.capture(&tiny_jpeg(8, 8, 7), &request("p1")).unwrap();
    let summary = client.sync(&NoProgress, &CancelToken::new()).unwrap();
    assert_eq!((summary.receipted, summary.rejected, summary.remaining), (1, 1, 0));
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
    let client = Client::open(dir.path(), test_config()).unwrap();
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
    let other = Client::open(dir.path(), test_config()).unwrap();
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
    let e = client.enroll(&stub.url, "P2").unwrap();
    assert_eq!(e.precincts, vec!["p1".to_owned(), "p2".to_owned()]);
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
    let client = Client::open(dir.path(), test_config()).unwrap();
    let err = client.sync(&NoProgress, &CancelToken::new()).unwrap_err();
    assert!(matches!(err, Error::Sync(SyncError::NotEnrolled)), "{err:?}");
    let status = client.status().unwrap();
    assert_eq!(status.server_url, None);
    assert_eq!(client.enrollment().unwrap(), None);
}
