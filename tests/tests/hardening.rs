//! [Hardening] The findings of the attack on the server, each through the real HTTP API of the
//! real `hattama-server`: what got through before is refused or bounded now. Some findings that
//! need only HTTP (the login limits of clients behind a proxy, chain breaks, a huge page number,
//! a creation refused before its body, a device's captures per precinct) are tested on the app
//! run in the test's process, in `tests/api.rs`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use hattama_tests::backend::{self, Backend};
use hattama_tests::hostile::{flat_jpeg, png16};
use hattama_tests::raw::RawDevice;
use hattama_tests::review::{Browser, PASSWORD, add_user, election};
use hattama_tests::server::TestServer;

/// A `kB` line of `/proc/<pid>/status` (`VmHWM`: peak resident memory; `VmRSS`: now), in KiB.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The bound of the server's peak memory above idle while photos are decoded (docs/security.md):
/// `limits.max_decodes` (2) decodes of at most `DECODE_BUDGET` (64 MiB) each, plus the bodies
/// and buffers of the requests.
const DECODE_MEMORY_BOUND_MIB: u64 = 256;

/// Finding "memory exhaustion": photos inside the pixel limit that make a decoder allocate
/// hundreds of MiB (a 16-bit PNG, a progressive JPEG) and damaged variants. Each is either
/// refused at upload (and never stored) or stored and thumbnailed: a PNG is decoded at upload
/// (a damaged one is refused), a JPEG too large to decode within the budget is refused from its
/// headers, a damaged JPEG is rendered leniently; while 8 clients ask for the thumbnails at
/// once, again and again, the server's peak resident memory stays within the documented bound
/// above idle.
#[test]
fn decoding_the_largest_photos_stays_within_the_memory_bound() {
    let server = TestServer::start_with(&election(2), &[]);
    let url = server.url.clone();
    let pid = server.pid();
    let code = &server.invite(&["p0001"], 1)[0];
    let mut device = RawDevice::with_timeout(61, 600);
    assert_eq!(device.enroll(&url, code).status, 200);
    let idle = proc_status_kib(pid, "VmHWM");

    // (what, photo, accepted): the largest the limits allow (16,384 × 7,324 is just under
    // 120 megapixels), a progressive JPEG just within the decode budget, damaged variants.
    let photos = [
        ("16-bit PNG, 16384x7324", png16(16_384, 7_324, false), true),
        ("16-bit PNG, 16384x7324, last rows cut", png16(16_384, 7_324, true), false),
        ("progressive JPEG, 16384x7324", flat_jpeg(16_384, 7_324, 3, true, false), false),
        ("progressive JPEG, 3648x2736", flat_jpeg(3_648, 2_736, 3, true, false), true),
        ("progressive JPEG, 3648x2736, damaged", flat_jpeg(3_648, 2_736, 3, true, true), true),
        ("baseline JPEG, 16384x7324", flat_jpeg(16_384, 7_324, 3, false, false), true),
        ("baseline JPEG, 16384x7324, damaged", flat_jpeg(16_384, 7_324, 3, false, true), true),
    ];
    let mut stored = Vec::new();
    let mut refused = Vec::new();
    for (what, bytes, accepted) in &photos {
        let clean = hattama_core::media::strip(bytes, &Default::default())
            .unwrap_or_else(|e| panic!("{what}: not a valid photo for the core: {e}"));
        assert_eq!(&clean.bytes, bytes, "{what}: already clean");
        let info = clean.info();
        let signed = device.sign("p0001", &info);
        let t = std::time::Instant::now();
        let answer = device.upload(&url, &signed, bytes);
        eprintln!(
            "{what} ({} bytes): {} {} in {:.1?}",
            bytes.len(),
            answer.status,
            answer.code(),
            t.elapsed()
        );
        if *accepted {
            assert_eq!(answer.status, 200, "{what}: {answer:?}");
            stored.push(info.sha256.to_hex());
        } else {
            assert_eq!((answer.status, answer.code()), (422, "photo_undecodable"), "{what}");
            refused.push(info.sha256.to_hex());
        }
    }
    eprintln!("after the uploads: peak {} MiB", proc_status_kib(pid, "VmHWM") / 1024);
    // A refused photo is stored nowhere: no photo, no thumbnail.
    for sha in &refused {
        assert!(hattama_tests::stored_photo(&server.data_dir, sha).is_none());
        let r = device.http().get(format!("{url}/photos/{sha}/thumb")).send().unwrap();
        assert_eq!(r.status(), 404, "the thumbnail of a refused photo");
    }

    // 8 clients ask for every thumbnail at once, twice over; the kept thumbnails are removed
    // before each round, so that every round decodes again. A client told to retry (503, the
    // decode slots are busy) retries after `Retry-After`, as a browser's reload would.
    for round in 0..2 {
        backend::remove_objects(&server.data_dir, "thumbs/");
        std::thread::scope(|s| {
            for client in 0..8 {
                let (url, stored) = (&url, &stored);
                s.spawn(move || {
                    let http = reqwest::blocking::Client::builder()
                        .timeout(std::time::Duration::from_secs(300))
                        .build()
                        .unwrap();
                    for i in 0..stored.len() {
                        let sha = &stored[(i + client) % stored.len()];
                        let t = std::time::Instant::now();
                        let (status, body) = loop {
                            let r = http.get(format!("{url}/photos/{sha}/thumb")).send().unwrap();
                            let status = r.status().as_u16();
                            let retry = r.headers().get("retry-after").is_some();
                            let body = r.bytes().unwrap();
                            if status == 503 && retry {
                                std::thread::sleep(std::time::Duration::from_secs(2));
                                continue;
                            }
                            break (status, body);
                        };
                        assert_eq!(status, 200, "round {round}, client {client}, {sha}: {body:?}");
                        assert!(body.starts_with(&[0xFF, 0xD8]), "a JPEG thumbnail");
                        eprintln!("round {round} client {client}: {sha:.8} in {:.1?}", t.elapsed());
                    }
                });
            }
        });
        eprintln!("after round {round}: peak {} MiB", proc_status_kib(pid, "VmHWM") / 1024);
    }
    let peak = proc_status_kib(pid, "VmHWM");
    let above = (peak - idle) / 1024;
    eprintln!(
        "server peak resident memory: idle {} MiB, peak {} MiB, {above} MiB above idle \
         (bound {DECODE_MEMORY_BOUND_MIB} MiB)",
        idle / 1024,
        peak / 1024
    );
    assert!(
        above <= DECODE_MEMORY_BOUND_MIB,
        "the server's peak memory rose {above} MiB above idle (bound {DECODE_MEMORY_BOUND_MIB})"
    );
}

/// Finding "everyone locked out", second half: wrong passwords for a known user name used to
/// lock its owner out for 15 minutes, again and again. Now each attempt after the first five
/// waits a doubling delay, capped (`review.login_max_delay_secs`, 2 s here), and the owner logs
/// in once the delay is over, even while the attack goes on.
#[test]
fn wrong_passwords_delay_an_account_but_never_lock_its_owner_out() {
    let env = [("HATTAMA__REVIEW__LOGIN_MAX_DELAY_SECS", "2")];
    let server = TestServer::start_with(&election(2), &env);
    add_user(&server.data_dir, "alice", "Alice", "coordinator", &[]);
    let url = &server.url;
    let mut attacker = Browser::new(url);
    let mut waits = Vec::new();
    let mut failures = 0;
    while failures < 9 {
        let page = attacker.try_login("alice", &format!("guess {failures}"));
        match page.status {
            401 => failures += 1,
            429 => {
                let wait = page.retry_after.unwrap();
                waits.push(wait);
                std::thread::sleep(std::time::Duration::from_secs(wait));
            }
            other => panic!("unexpected {other}: {page:?}"),
        }
    }
    assert_eq!(waits, [1, 2, 2, 2], "delays from the sixth failure on, capped at 2 s");
    // The owner, from the same address even, is told to wait at most the cap, then gets in.
    let mut alice = Browser::new(url);
    let mut page = alice.try_login("alice", PASSWORD);
    if page.status == 429 {
        assert!(page.retry_after.unwrap() <= 2, "{page:?}");
        std::thread::sleep(std::time::Duration::from_secs(page.retry_after.unwrap()));
        page = alice.try_login("alice", PASSWORD);
    }
    assert_eq!(page.status, 303, "the owner logs in: {page:?}");
}

/// Finding "local secrets": the data directory and everything the server writes in it (the
/// database with invite codes, password hashes and sessions, its WAL, photos, uploads, keys,
/// and the thumbnails and the log's files unless they are objects in a bucket) are private to
/// the server's user even under umask 000, and a data directory made beforehand with looser
/// modes is made private at start.
#[test]
fn the_data_directory_is_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let server = TestServer::start_under_umask(&election(2), "000");
    add_user(&server.data_dir, "alice", "Alice", "coordinator", &[]);
    Browser::login(&server.url, "alice");
    let mut device = hattama_tests::review::enrolled_device(&server, 7, &["p0001"]);
    // A photo bigger than a thumbnail (a smaller one is its own thumbnail, and nothing is kept).
    let large = hattama_core::media::strip(
        &hattama_tests::textured_jpeg(800, 600, 3, 90),
        &Default::default(),
    )
    .unwrap();
    let photo = (large.bytes.clone(), large.info());
    hattama_tests::review::upload(&server, &mut device, "p0001", &photo, |_| {});
    // An unfinished upload leaves a file in uploads/.
    let big = hattama_tests::textured_jpeg(1200, 900, 5, 90);
    let clean = hattama_core::media::strip(&big, &Default::default()).unwrap();
    let signed = device.sign("p0001", &clean.info());
    let sig = hex::encode(signed.signature);
    assert_eq!(
        device.create(&server.url, &signed.canonical, &sig, clean.bytes.len() as u64).status,
        201
    );
    let id = signed.hash().to_hex();
    assert_eq!(device.patch(&server.url, &id, 0, &clean.bytes[..70_000]).status, 204);
    let r = device.http().get(format!("{}/log/checkpoint", server.url)).send().unwrap();
    assert_eq!(r.status(), 200);
    // A thumbnail, made on its first request, is kept under thumbs/.
    let sha = photo.1.sha256.to_hex();
    let r = device.http().get(format!("{}/photos/{sha}/thumb", server.url)).send().unwrap();
    assert_eq!(r.status(), 200);

    let mut seen = std::collections::BTreeMap::new();
    let mut stack = vec![server.data_dir.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let mode = e.metadata().unwrap().permissions().mode() & 0o777;
            let name = e.path().strip_prefix(&server.data_dir).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
                assert_eq!(mode, 0o700, "{name}/ is {mode:o}");
            } else if name != "election.json" {
                // (election.json is the test's own file, written before the server started.)
                assert_eq!(mode, 0o600, "{name} is {mode:o}");
            }
            seen.insert(name, mode);
        }
    }
    let mode = std::fs::metadata(&server.data_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the data directory");
    assert!(seen.contains_key("keys/receipt.key"), "keys/receipt.key missing: {seen:?}");
    // The embedded backend's database and unfinished uploads are files of the data directory
    // too (on PostgreSQL they are rows of the database).
    if Backend::from_env() == Backend::Embedded {
        for expected in ["hattama-server.sqlite3", "hattama-server.sqlite3-wal"] {
            assert!(seen.contains_key(expected), "{expected} missing: {seen:?}");
        }
        assert!(seen.keys().any(|k| k.starts_with("uploads/")), "{seen:?}");
    }
    // The thumbnails and the log's files are objects: files of the data directory with the
    // local object store, checked above; in the bucket with S3, and then none is here.
    let thumbs = backend::open_objects(&server.data_dir).list("thumbs/").unwrap();
    assert_eq!(thumbs.len(), 1, "the kept thumbnail: {thumbs:?}");
    assert!(backend::read_object(&server.data_dir, "log/checkpoint").is_some());
    let in_bucket = Backend::from_env().objects_in_bucket();
    for dir in ["thumbs/", "log/"] {
        assert_eq!(seen.keys().any(|k| k.starts_with(dir)), !in_bucket, "{dir}: {seen:?}");
    }
}

/// A consistent protocol of the fixture template (3 candidates), with a recognisable figure.
fn protocol_values() -> Vec<(String, String)> {
    [
        ("1", 98_765),
        ("2", 90_000),
        ("3", 70_000),
        ("4", 20_000),
        ("5", 69_000),
        ("6", 1_000),
        ("7.1", 43_917),
        ("7.2", 16_083),
        ("7.3", 5_000),
        ("8", 3_000),
    ]
    .iter()
    .map(|(k, v)| (format!("line:{k}"), v.to_string()))
    .collect()
}

fn enter(b: &mut Browser, capture: &str) -> u16 {
    // The form carries the transcription state its page was rendered from, as the page's does.
    let page = b.get(&format!("/review/captures/{capture}")).body;
    let seen = page
        .split("id=\"entry-form\"")
        .nth(1)
        .and_then(|form| form.split("name=\"seen\" value=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("pending")
        .to_owned();
    let csrf = b.csrf();
    let mut form = protocol_values();
    form.push(("csrf".into(), csrf));
    form.push(("seen".into(), seen));
    form.push(("reason".into(), String::new()));
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    b.post(&format!("/review/captures/{capture}/entry"), &form).status
}

/// Finding "blind double entry bypassed": the admin's audit export showed the first entry's
/// numbers while the admin could still make the second, blind entry; and the observer's own
/// transcription was public (and shown on pages) before the coordinators had entered theirs.
/// Now neither is shown to anyone who may still enter blind, and both appear once the entries
/// are in.
#[test]
fn no_export_page_or_api_shows_numbers_to_whom_may_still_enter_blind() {
    use hattama_tests::review::{enrolled_device, photo, upload};
    let server = TestServer::start_with(&election(4), &[]);
    add_user(&server.data_dir, "alice", "Alice", "coordinator", &[]);
    add_user(&server.data_dir, "root", "Root", "admin", &[]);
    add_user(&server.data_dir, "sam", "Sam", "supervisor", &[]);
    let mut device = enrolled_device(&server, 9, &["p0001"]);
    let observer: std::collections::BTreeMap<String, u64> = [("7.1".to_owned(), 987_654u64)].into();
    let id = upload(&server, &mut device, "p0001", &photo(21), |m| {
        m.transcription = Some(observer.clone());
    });
    let public = |server: &TestServer| -> serde_json::Value {
        let url = format!("{}/api/v1/elections/e2e/precincts/p0001", server.url);
        reqwest::blocking::get(url).unwrap().json().unwrap()
    };
    // Before any entry: the observer's figures are in no public view and on no coordinator's
    // page (they stay in the signed manifest, see docs/review.md).
    let before = public(&server);
    assert_eq!(before["captures"][0]["capture"]["observer_transcription"], serde_json::Value::Null);
    let mut alice = Browser::login(&server.url, "alice");
    let page = alice.get(&format!("/review/captures/{id}"));
    assert!(!page.body.contains("987654"), "the observer's figure on a blind entry form");

    // Alice makes the first entry.
    assert_eq!(enter(&mut alice, &id), 303);
    // The admin, who may still make the second entry, sees none of its numbers: not on the
    // page, not in either export.
    let mut root = Browser::login(&server.url, "root");
    let csv = root.get("/review/audit.csv").body;
    let json = root.get("/review/audit.json").body;
    let page = root.get(&format!("/review/captures/{id}")).body;
    for (what, text) in [("audit.csv", &csv), ("audit.json", &json), ("page", &page)] {
        assert!(!text.contains("43917"), "{what} shows the first entry's numbers: {text}");
        assert!(!text.contains("987654"), "{what} shows the observer's numbers");
    }
    assert!(csv.contains("withheld"), "{csv}");
    assert!(csv.contains("\"entry\""), "the event itself is listed");
    assert_eq!(
        public(&server)["captures"][0]["capture"]["observer_transcription"],
        serde_json::Value::Null
    );
    // A supervisor, who cannot enter, reads the whole trail.
    let mut sam = Browser::login(&server.url, "sam");
    assert!(sam.get("/review/audit.csv").body.contains("43917"));

    // The second entry: verified; now everything is shown.
    assert_eq!(enter(&mut root, &id), 303);
    assert!(root.get("/review/audit.csv").body.contains("43917"));
    // (The public views follow the database within 250 ms.)
    let mut after = public(&server);
    for _ in 0..20 {
        if !after["captures"][0]["capture"]["observer_transcription"].is_null() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        after = public(&server);
    }
    assert_eq!(after["captures"][0]["capture"]["observer_transcription"]["7.1"], 987_654);
}

/// Finding "disk exhaustion", sessions: one device may hold only so many unfinished uploads,
/// and so many bytes in them; unfinished uploads expire; resuming one is always allowed, and
/// other devices are not affected.
#[test]
fn a_device_cannot_hold_more_unfinished_uploads_than_its_quota() {
    use hattama_tests::review::{enrolled_device, photo};
    let photos: Vec<_> = (1..=4).map(photo).collect();
    let in_flight = (photos[0].0.len() + photos[1].0.len() + 1).to_string();
    let server = TestServer::start_with(
        &election(2),
        &[
            ("HATTAMA__LIMITS__MAX_OPEN_UPLOADS", "3"),
            ("HATTAMA__LIMITS__MAX_PHOTO_BYTES", &in_flight),
            ("HATTAMA__LIMITS__MAX_UPLOAD_BYTES_IN_FLIGHT", &in_flight),
            ("HATTAMA__LIMITS__UPLOAD_TTL_SECS", "3"),
        ],
    );
    let url = &server.url;
    let mut d = enrolled_device(&server, 12, &["p0001"]);
    let create = |d: &mut RawDevice, p: &(Vec<u8>, hattama_core::evidence::PhotoInfo)| {
        let signed = d.sign("p0001", &p.1);
        let sig = hex::encode(signed.signature);
        (d.create(url, &signed.canonical, &sig, p.0.len() as u64), signed)
    };
    let (first, s1) = create(&mut d, &photos[0]);
    assert_eq!(first.status, 201);
    assert_eq!(create(&mut d, &photos[1]).0.status, 201);
    // A third would take more bytes than the device may have in flight.
    let (third, _) = create(&mut d, &photos[2]);
    assert_eq!((third.status, third.code()), (429, "too_many_uploads"), "{third:?}");
    // Resuming an existing upload is always allowed.
    let again = d.create(url, &s1.canonical, &hex::encode(s1.signature), photos[0].0.len() as u64);
    assert_eq!(again.status, 201);
    // Another device is not affected.
    let mut other = enrolled_device(&server, 13, &["p0001"]);
    assert_eq!(create(&mut other, &photos[2]).0.status, 201);
    // After the time to live, the unfinished uploads are discarded and the device may start
    // new ones.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let (later, _) = create(&mut d, &photos[3]);
    assert_eq!(later.status, 201, "{later:?}");
    assert_eq!(d.head(url, &s1.hash().to_hex()).status, 404, "the expired upload is gone");
}

/// Finding "disk exhaustion", space: below the free-space floor uploads are refused with 507
/// and a JSON body, while everything stored stays served.
#[test]
fn below_the_free_space_floor_uploads_get_507_and_stored_data_stays_served() {
    use hattama_tests::review::{enrolled_device, photo};
    let mut server = TestServer::start_with(&election(2), &[]);
    let mut d = enrolled_device(&server, 14, &["p0001"]);
    let stored = photo(1);
    let signed = d.sign("p0001", &stored.1);
    assert_eq!(d.upload(&server.url, &signed, &stored.0).status, 200);
    let id = signed.hash().to_hex();
    let big = hattama_tests::textured_jpeg(1200, 900, 5, 90);
    let big = hattama_core::media::strip(&big, &Default::default()).unwrap();
    let unfinished = d.sign("p0001", &big.info());
    let sig = hex::encode(unfinished.signature);
    assert_eq!(
        d.create(&server.url, &unfinished.canonical, &sig, big.bytes.len() as u64).status,
        201
    );
    server.kill();

    let floor = (u64::MAX / 4).to_string();
    let server = TestServer::start_on_with(
        &server.data_dir,
        "127.0.0.1:0",
        &[("HATTAMA__LIMITS__MIN_FREE_BYTES", &floor)],
    );
    let url = &server.url;
    let next = d.sign("p0001", &photo(2).1);
    let refused =
        d.create(url, &next.canonical, &hex::encode(next.signature), photo(2).0.len() as u64);
    assert_eq!((refused.status, refused.code()), (507, "insufficient_storage"), "{refused:?}");
    let patch = d.patch(url, &unfinished.hash().to_hex(), 0, &big.bytes[..1000]);
    assert_eq!((patch.status, patch.code()), (507, "insufficient_storage"), "{patch:?}");
    // What is stored stays served.
    assert_eq!(d.receipt(url, &id).status, 200);
    let get = |path: String| reqwest::blocking::get(format!("{url}{path}")).unwrap().status();
    assert_eq!(get(format!("/photos/{}", stored.1.sha256.to_hex())), 200);
    assert_eq!(get(format!("/photos/{}/thumb", stored.1.sha256.to_hex())), 200);
    assert_eq!(get(format!("/api/v1/captures/{id}")), 200);
    assert_eq!(get("/log/checkpoint".into()), 200);
}

/// Uploads a photo (stripped already) for `p0001`; returns the answer and the photo's hash.
fn send(
    server: &TestServer,
    device: &mut RawDevice,
    bytes: &[u8],
) -> (hattama_tests::raw::Answer, String) {
    let clean = hattama_core::media::strip(bytes, &Default::default()).unwrap();
    assert!(clean.bytes == bytes, "already clean");
    let info = clean.info();
    let signed = device.sign("p0001", &info);
    (device.upload(&server.url, &signed, bytes), info.sha256.to_hex())
}

/// "A photo whose thumbnail cannot be made is refused at upload, never stored and served": a
/// PNG is decoded at upload, so a damaged one is refused (422 `photo_undecodable`, JSON) and
/// nothing of it is stored, while an intact one has its thumbnail kept before its receipt; a
/// JPEG whose coded data is damaged is stored, and its thumbnail is made (leniently).
#[test]
fn a_photo_whose_thumbnail_cannot_be_made_is_refused_at_upload() {
    use hattama_tests::review::enrolled_device;
    let server = TestServer::start_with(&election(2), &[]);
    let mut d = enrolled_device(&server, 16, &["p0001"]);
    let (refused, sha) = send(&server, &mut d, &png16(640, 480, true));
    assert_eq!((refused.status, refused.code()), (422, "photo_undecodable"), "{refused:?}");
    assert!(hattama_tests::stored_photo(&server.data_dir, &sha).is_none(), "never stored");
    let get = |path: String| reqwest::blocking::get(format!("{}{path}", server.url)).unwrap();
    assert_eq!(get(format!("/photos/{sha}")).status(), 404, "never served");
    assert_eq!(get(format!("/photos/{sha}/thumb")).status(), 404, "no thumbnail either");

    let (stored, sha) = send(&server, &mut d, &png16(640, 480, false));
    assert_eq!(stored.status, 200, "{stored:?}");
    let kept = backend::read_object(&server.data_dir, &format!("thumbs/{sha}.jpg"))
        .expect("a PNG's thumbnail is made at upload, before any request");
    assert_eq!(get(format!("/photos/{sha}/thumb")).bytes().unwrap(), kept, "and served");

    // A JPEG damaged near its end: the walker accepts it, the strict decoder does not.
    for (what, jpeg) in [
        ("baseline", flat_jpeg(800, 600, 3, false, true)),
        ("progressive", flat_jpeg(800, 600, 3, true, true)),
        ("camera-like", damaged_textured_jpeg()),
    ] {
        let (answer, sha) = send(&server, &mut d, &jpeg);
        assert_eq!(answer.status, 200, "{what}: {answer:?}");
        let thumb = get(format!("/photos/{sha}/thumb"));
        assert_eq!(thumb.status(), 200, "{what}");
        let bytes = thumb.bytes().unwrap();
        let image = image::load_from_memory(&bytes).unwrap();
        assert!(image.width() <= 320 && image.height() <= 320, "{what}: a thumbnail");
    }
}

/// A textured JPEG whose entropy-coded data holds, at nine tenths of its length, 16 bytes of
/// ones (stuffed `FF 00`), a code no standard Huffman table defines.
fn damaged_textured_jpeg() -> Vec<u8> {
    let jpeg = hattama_tests::textured_jpeg(640, 480, 3, 85);
    let mut jpeg = hattama_core::media::strip(&jpeg, &Default::default()).unwrap().bytes;
    let sos = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    let start = sos + 2 + usize::from(u16::from_be_bytes([jpeg[sos + 2], jpeg[sos + 3]]));
    let at = start + (jpeg.len() - 2 - start) * 9 / 10;
    for pair in jpeg[at..at + 16].chunks_exact_mut(2) {
        pair.copy_from_slice(&[0xFF, 0x00]);
    }
    jpeg
}

/// A rendition that cannot be made is not decoded again: its failure is kept and answered
/// (422, JSON) from there. A progressive JPEG of 3648 × 2736 thumbnails within the decode
/// budget, but its medium rendition (decoded at a larger scale) does not fit it.
#[test]
fn a_rendition_that_failed_is_never_decoded_again() {
    use hattama_tests::review::enrolled_device;
    let server = TestServer::start_with(&election(2), &[]);
    let mut d = enrolled_device(&server, 17, &["p0001"]);
    let (answer, sha) = send(&server, &mut d, &flat_jpeg(3_648, 2_736, 3, true, false));
    assert_eq!(answer.status, 200, "{answer:?}");
    let get = |path: &str| {
        let r = reqwest::blocking::get(format!("{}/photos/{sha}/{path}", server.url)).unwrap();
        let status = r.status().as_u16();
        (status, r.json::<serde_json::Value>().ok())
    };
    assert_eq!(get("thumb").0, 200);
    let (status, body) = get("medium");
    let body = body.expect("a JSON error");
    assert_eq!((status, body["error"].as_str()), (422, Some("photo_undecodable")), "{body}");
    // The kept failure answers from now on: changed by hand, the change is what comes back.
    let kept = format!("medium/{sha}.failed");
    let failure = backend::read_object(&server.data_dir, &kept).expect("the failure is kept");
    assert_eq!(String::from_utf8(failure).unwrap(), body["message"].as_str().unwrap());
    backend::replace_object(&server.data_dir, &kept, b"kept failure");
    let (status, body) = get("medium");
    assert_eq!((status, body.unwrap()["message"].as_str()), (422, Some("kept failure")));
}

/// Captures per precinct "set from the election's shape": without the setting, a device may
/// store 10 photos for each page of the protocol (20 numbered lines a page) and 10 more; an
/// election of 10 lines allows 20, one of 42 lines (three pages) 40.
#[test]
fn the_captures_per_precinct_follow_the_protocol_s_pages() {
    use hattama_tests::fixtures::{election as election_of, protocol};
    use hattama_tests::review::{enrolled_device, photo};
    let candidates: Vec<String> = (1..=35).map(|i| format!("Candidate {i}")).collect();
    let names: Vec<&str> = candidates.iter().map(String::as_str).collect();
    let mut long = election_of("e2e", 2);
    long["protocol"] = protocol(&names);
    for (definition, lines, allowed) in [(election(2), 10usize, 20u32), (long, 42, 40)] {
        assert_eq!(definition["protocol"]["lines"].as_array().unwrap().len(), lines);
        let server = TestServer::start_with(&definition, &[]);
        let mut d = enrolled_device(&server, 18, &["p0001", "p0002"]);
        for seed in 0..allowed {
            let p = photo(seed);
            let signed = d.sign("p0001", &p.1);
            let answer = d.upload(&server.url, &signed, &p.0);
            assert_eq!(answer.status, 200, "{lines} lines, capture {seed}: {answer:?}");
        }
        let p = photo(allowed);
        let signed = d.sign("p0001", &p.1);
        let refused = d.upload(&server.url, &signed, &p.0);
        assert_eq!((refused.status, refused.code()), (429, "too_many_captures"), "{lines} lines");
        let other = d.sign("p0002", &p.1);
        assert_eq!(d.upload(&server.url, &other, &p.0).status, 200, "another precinct");
    }
}
