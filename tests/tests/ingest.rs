//! [Sync] server side: the real `hattama-server` on a random port, driven over real HTTP by a
//! hand-made device. Enrollment, idempotent and resumable uploads, receipts, and hostile requests.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::PathBuf;

use hattama_core::evidence::{DeviceKey, Sha256Hash};
use hattama_core::receipt::SignedReceipt;
use hattama_tests::GO_IMAGE;
use hattama_tests::backend::Backend;
use hattama_tests::raw::{Answer, RawDevice, clean_photo};
use hattama_tests::server::{TestServer, admin};
use serde_json::Value;

fn photo(name: &str) -> PathBuf {
    PathBuf::from(format!("{GO_IMAGE}/testdata/{name}"))
}

fn receipt_key(enrolled: &Answer) -> DeviceKey {
    let hex = enrolled.body["receipt_key"].as_str().unwrap();
    DeviceKey(hattama_core::evidence::parse_lower_hex::<32>(hex).unwrap())
}

fn blob_count(server: &TestServer) -> usize {
    hattama_tests::stored_photo_count(&server.data_dir)
}

fn captures(server: &TestServer) -> u64 {
    let run = admin(&server.data_dir, &["capture", "list", "--json"]);
    run.ok_json().as_array().unwrap().len() as u64
}

#[test]
fn enroll_upload_and_receipt_are_idempotent_and_resumable() {
    let server = TestServer::start_with_election(5);
    let url = &server.url;
    let code = &server.invite(&["p0001", "p0002"], 1)[0];
    let mut device = RawDevice::new(11);
    let enrolled = device.enroll(url, code);
    assert_eq!(enrolled.status, 200, "{enrolled:?}");
    assert_eq!(enrolled.body["precincts"], serde_json::json!(["p0001", "p0002"]));
    assert_eq!(enrolled.body["election"]["id"], "e2e");
    assert_eq!(enrolled.body["election"]["precincts"].as_array().unwrap().len(), 5);
    let pinned = receipt_key(&enrolled);

    let (bytes, info) = clean_photo(&photo("video-001.jpeg"));
    let signed = device.sign("p0001", &info);
    let id = signed.hash();
    let sig = hex::encode(signed.signature);

    // Creation answers the deterministic URL; bytes in three pieces, one cut short by a resume.
    let created = device.create(url, &signed.canonical, &sig, bytes.len() as u64);
    assert_eq!(created.status, 201, "{created:?}");
    let location = created.location.clone().unwrap();
    assert!(location.starts_with(&format!("/files/{id}?token=")), "{location}");
    // Without its token, nobody else reads, writes or discards the upload.
    let bare = RawDevice::new(11);
    assert_eq!(bare.head(url, &id.to_hex()).status, 404, "HEAD without the token");
    assert_eq!(bare.patch(url, &id.to_hex(), 0, b"garbage").status, 404, "PATCH without it");
    let wrong = format!("{url}/files/{id}?token=00000000000000000000000000000000");
    let r = bare.http().delete(&wrong).header("Tus-Resumable", "1.0.0").send().unwrap();
    assert_eq!(r.status().as_u16(), 404, "DELETE with a wrong token");
    assert_eq!(device.head(url, &id.to_hex()).offset, Some(0), "the upload is untouched");
    assert_eq!(created.offset, Some(0));
    let third = bytes.len() / 3;
    assert_eq!(device.patch(url, &id.to_hex(), 0, &bytes[..third]).status, 204);
    // A stale offset is refused.
    let stale = device.patch(url, &id.to_hex(), 0, &bytes[..10]);
    assert_eq!((stale.status, stale.code()), (409, "offset_mismatch"));
    assert_eq!(device.head(url, &id.to_hex()).offset, Some(third as u64));
    // No receipt before the last byte.
    assert_eq!(device.receipt(url, &id.to_hex()).status, 404);
    // Creating again resumes the same upload.
    let again = device.create(url, &signed.canonical, &sig, bytes.len() as u64);
    assert_eq!((again.status, again.offset), (201, Some(third as u64)));
    let done = device.patch(url, &id.to_hex(), third as u64, &bytes[third..]);
    assert_eq!((done.status, done.offset), (204, Some(bytes.len() as u64)));

    let r1 = device.receipt(url, &id.to_hex());
    assert_eq!(r1.status, 200);
    let receipt: SignedReceipt = serde_json::from_value(r1.body.clone()).unwrap();
    receipt.verify(&pinned, &id, &info.sha256).unwrap();

    // The same capture sent again: same receipt, one capture, one blob.
    let r2 = device.upload(url, &signed, &bytes);
    assert_eq!(r2.status, 200);
    assert_eq!(r2.body, r1.body);
    assert_eq!(device.head(url, &id.to_hex()).offset, Some(bytes.len() as u64));
    assert_eq!(blob_count(&server), 1);
    assert_eq!(
        hattama_tests::stored_photo(&server.data_dir, &info.sha256.to_hex()).unwrap(),
        bytes
    );

    // A second capture of the same photo bytes (another page) shares the blob.
    let signed2 = device.sign("p0002", &info);
    assert_eq!(device.upload(url, &signed2, &bytes).status, 200);
    assert_eq!(blob_count(&server), 1);
    assert_eq!(captures(&server), 2);
}

#[test]
fn tus_discovery_and_checksums() {
    let server = TestServer::start_with_election(2);
    let device = RawDevice::new(3);
    let options = device
        .http()
        .request(reqwest::Method::OPTIONS, format!("{}/files/", server.url))
        .send()
        .unwrap();
    assert_eq!(options.status().as_u16(), 204);
    let h = |n: &str| options.headers().get(n).unwrap().to_str().unwrap().to_owned();
    assert_eq!(h("Tus-Version"), "1.0.0");
    assert_eq!(h("Tus-Extension"), "creation,creation-with-upload,checksum,termination");
    assert_eq!(h("Tus-Checksum-Algorithm"), "sha256");

    let code = &server.invite(&["p0001"], 1)[0];
    let mut device = RawDevice::new(3);
    assert_eq!(device.enroll(&server.url, code).status, 200);
    let (bytes, info) = clean_photo(&photo("video-001.q50.420.jpeg"));
    let signed = device.sign("p0001", &info);
    let id = signed.hash().to_hex();
    device.create(&server.url, &signed.canonical, &hex::encode(signed.signature), info.bytes);
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(Sha256Hash::of(b).0);
    let wrong = format!("sha256 {}", b64(b"other"));
    let bad = device.patch_with(&server.url, &id, 0, &bytes[..100], &[("Upload-Checksum", &wrong)]);
    assert_eq!((bad.status, bad.code()), (460, "checksum_mismatch"));
    assert_eq!(device.head(&server.url, &id).offset, Some(0), "a failed checksum keeps nothing");
    let right = format!("sha256 {}", b64(&bytes[..100]));
    let ok = device.patch_with(&server.url, &id, 0, &bytes[..100], &[("Upload-Checksum", &right)]);
    assert_eq!((ok.status, ok.offset), (204, Some(100)));
    let md5 =
        device.patch_with(&server.url, &id, 100, &bytes[100..], &[("Upload-Checksum", "md5 AAAA")]);
    assert_eq!(md5.status, 400);
    // Termination discards the unfinished upload.
    let del = device
        .http()
        .delete(device.upload_url(&server.url, &id))
        .header("Tus-Resumable", "1.0.0")
        .send()
        .unwrap();
    assert_eq!(del.status().as_u16(), 204);
    assert_eq!(device.head(&server.url, &id).status, 404);
    // Missing Tus-Resumable.
    let no_tus = device.http().head(device.upload_url(&server.url, &id)).send().unwrap();
    assert_eq!(no_tus.status().as_u16(), 412);
}

/// Asserts a 4xx with a JSON error body carrying `code`.
fn assert_refused(a: &Answer, status: u16, code: &str, what: &str) {
    assert_eq!((a.status, a.code()), (status, code), "{what}: {a:?}");
    assert!(a.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: no message");
}

#[test]
fn hostile_requests_are_refused_with_json_errors_and_store_nothing() {
    let server = TestServer::start_with_election(3);
    let url = server.url.clone();
    let codes = server.invite(&["p0001"], 3);
    let mut device = RawDevice::new(21);
    assert_eq!(device.enroll(&url, &codes[0]).status, 200);
    let (bytes, info) = clean_photo(&photo("video-001.jpeg"));
    let http = device.http().clone();

    // The same device repeating its enrollment gets the same answer; another device may not
    // reuse the code; an unknown code and a bad enrollment signature are refused.
    let repeated = device.enroll(&url, &codes[0]);
    assert_eq!(repeated.status, 200, "{repeated:?}");
    let other = RawDevice::new(22);
    assert_refused(&other.enroll(&url, &codes[0]), 409, "code_used", "reused code");
    assert_refused(&other.enroll(&url, "NOPE-NOPE"), 403, "bad_code", "unknown code");
    let forged = http
        .post(format!("{url}/api/v1/enroll"))
        .json(&serde_json::json!({"code": codes[1], "device_key": other.public().to_hex(), "signature": "00".repeat(64)}))
        .send()
        .unwrap();
    let forged = answer(forged);
    assert_refused(&forged, 400, "bad_signature", "enrollment signature");

    // Malformed and deeply nested JSON, an oversized body, a compressed body.
    let post = |body: Vec<u8>, headers: &[(&str, &str)]| {
        let mut r =
            http.post(format!("{url}/api/v1/enroll")).header("Content-Type", "application/json");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        answer(r.body(body).send().unwrap())
    };
    assert_refused(&post(b"{\"code\": ".to_vec(), &[]), 400, "bad_json", "malformed JSON");
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_refused(&post(deep.into_bytes(), &[]), 413, "body_too_large", "huge nested JSON");
    let nested = format!("{}{}", "[".repeat(2000), "]".repeat(2000));
    assert_refused(&post(nested.into_bytes(), &[]), 400, "bad_json", "deeply nested JSON");
    let bomb = gzip_bomb();
    assert_refused(
        &post(bomb.clone(), &[("Content-Encoding", "gzip")]),
        415,
        "unsupported_encoding",
        "gzip bomb",
    );

    // Bad and malleated signatures.
    let signed = device.sign("p0001", &info);
    let mut sig = signed.signature;
    sig[0] ^= 1;
    assert_refused(
        &device.create(&url, &signed.canonical, &hex::encode(sig), info.bytes),
        400,
        "bad_signature",
        "flipped signature",
    );
    let malleated = add_group_order(signed.signature);
    assert_refused(
        &device.create(&url, &signed.canonical, &hex::encode(malleated), info.bytes),
        400,
        "bad_signature",
        "s >= l",
    );
    assert_refused(
        &device.create(&url, b"{\"v\":1}", &hex::encode(signed.signature), info.bytes),
        400,
        "bad_manifest",
        "bad manifest",
    );

    // Another device's manifest (never enrolled), then a revoked one.
    let mut stranger = RawDevice::new(23);
    let s2 = stranger.sign("p0001", &info);
    assert_refused(
        &stranger.create(&url, &s2.canonical, &hex::encode(s2.signature), info.bytes),
        403,
        "device_unknown",
        "unknown device",
    );
    let mut revoked = RawDevice::new(24);
    assert_eq!(revoked.enroll(&url, &codes[1]).status, 200);
    let run = admin(
        &server.data_dir,
        &[
            "device",
            "revoke",
            &hattama_core::evidence::Sha256Hash::of(&revoked.public().0).to_hex(),
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let s3 = revoked.sign("p0001", &info);
    assert_refused(
        &revoked.create(&url, &s3.canonical, &hex::encode(s3.signature), info.bytes),
        403,
        "device_revoked",
        "revoked device",
    );

    // Unknown precinct; a precinct not assigned; an unknown election.
    let mut lost = device_with(&url, &codes[2], 25);
    let s4 = lost.sign("p9999", &info);
    assert_refused(
        &lost.create(&url, &s4.canonical, &hex::encode(s4.signature), info.bytes),
        404,
        "unknown_precinct",
        "unknown precinct",
    );
    let s5 = lost.sign("p0002", &info);
    assert_refused(
        &lost.create(&url, &s5.canonical, &hex::encode(s5.signature), info.bytes),
        403,
        "precinct_not_assigned",
        "other precinct",
    );
    let mut m = device.sign("p0001", &info).manifest;
    m.election = "nowhere".into();
    let s6 = hattama_core::evidence::SignedManifest::sign(m, &device.key).unwrap();
    assert_refused(
        &device.create(&url, &s6.canonical, &hex::encode(s6.signature), info.bytes),
        404,
        "unknown_election",
        "unknown election",
    );

    // Wrong length at creation.
    let s7 = device.sign("p0001", &info);
    assert_refused(
        &device.create(&url, &s7.canonical, &hex::encode(s7.signature), info.bytes + 1),
        400,
        "length_mismatch",
        "wrong length",
    );

    // A manifest replayed with other photo bytes of the same length.
    let id7 = s7.hash().to_hex();
    assert_eq!(
        device.create(&url, &s7.canonical, &hex::encode(s7.signature), info.bytes).status,
        201
    );
    let mut other_bytes = bytes.clone();
    let mid = other_bytes.len() / 2;
    other_bytes[mid] ^= 0x55;
    assert_refused(
        &device.patch(&url, &id7, 0, &other_bytes),
        422,
        "photo_mismatch",
        "replayed with other bytes",
    );
    assert_eq!(device.receipt(&url, &id7).status, 404);

    // A body running past Upload-Length.
    let s8 = device.sign("p0001", &info);
    let id8 = s8.hash().to_hex();
    device.create(&url, &s8.canonical, &hex::encode(s8.signature), info.bytes);
    let mut long = bytes.clone();
    long.extend_from_slice(&[0; 5000]);
    assert_refused(&device.patch(&url, &id8, 0, &long), 413, "body_too_large", "body past length");
    assert_eq!(device.head(&url, &id8).offset, Some(0));
    // A gzip-encoded PATCH is refused before a byte is read.
    let gz = device.patch_with(&url, &id8, 0, &bomb, &[("Content-Encoding", "gzip")]);
    assert_refused(&gz, 415, "unsupported_encoding", "compressed PATCH");

    // A signed manifest for a "photo" claiming 100000×100000 pixels: refused at completion.
    let png_bomb = huge_png();
    let mut bomb_info = info.clone();
    bomb_info.bytes = png_bomb.len() as u64;
    bomb_info.sha256 = Sha256Hash::of(&png_bomb);
    bomb_info.media_type = hattama_core::evidence::MediaType::Png;
    bomb_info.width = 100_000;
    bomb_info.height = 100_000;
    let s9 = device.sign("p0001", &bomb_info);
    let id9 = s9.hash().to_hex();
    assert_eq!(
        device.create(&url, &s9.canonical, &hex::encode(s9.signature), bomb_info.bytes).status,
        201
    );
    assert_refused(
        &device.patch(&url, &id9, 0, &png_bomb),
        422,
        "photo_refused",
        "decompression bomb PNG",
    );

    // The same through the one-step path (a small photo whole with its creation): refused,
    // and not even an upload is left.
    let whole =
        |device: &RawDevice, signed: &hattama_core::evidence::SignedManifest, body: &[u8]| {
            let (status, _, body) = create_with_body(device, &url, signed, body);
            (status, serde_json::from_slice::<Value>(&body).unwrap()["error"].clone())
        };
    let s10 = device.sign("p0001", &bomb_info);
    assert_eq!(
        whole(&device, &s10, &png_bomb),
        (422, "photo_refused".into()),
        "PNG bomb, one step"
    );
    assert_eq!(device.head(&url, &s10.hash().to_hex()).status, 404);
    let s11 = device.sign("p0001", &info);
    let mut other = bytes.clone();
    let n = other.len();
    other[n - 10] ^= 1;
    assert_eq!(
        whole(&device, &s11, &other),
        (422, "photo_mismatch".into()),
        "other bytes, one step"
    );
    assert_eq!(device.head(&url, &s11.hash().to_hex()).status, 404);
    let mut s12 = device.sign("p0001", &info);
    s12.signature[0] ^= 1;
    assert_eq!(
        whole(&device, &s12, &bytes),
        (400, "bad_signature".into()),
        "bad signature, one step"
    );
    let s13 = device.sign("p0009", &info);
    assert_eq!(
        whole(&device, &s13, &bytes),
        (404, "unknown_precinct".into()),
        "unknown precinct, one step"
    );

    // Path traversal in ids.
    for path in [
        "/files/..%2F..%2Fetc%2Fpasswd",
        "/files/%2e%2e%2f%2e%2e%2fhattama-server.sqlite3",
        "/api/v1/receipts/..%2Fkeys%2Freceipt.key",
        "/api/v1/receipts/ABCDEF",
    ] {
        let a = answer(
            http.get(format!("{url}{path}")).header("Tus-Resumable", "1.0.0").send().unwrap(),
        );
        assert!(a.status == 400 || a.status == 404 || a.status == 405, "{path}: {a:?}");
        assert!(!a.code().is_empty(), "{path}: JSON error body expected: {a:?}");
        let h = device.head(&url, path.trim_start_matches("/files/"));
        assert!(h.status >= 400 && h.status < 500, "{path}: {h:?}");
    }
    let manifest_traversal = {
        let mut m = device.sign("p0001", &info).manifest;
        m.precinct = "../../keys".into();
        serde_json::to_vec(&m).unwrap()
    };
    assert_refused(
        &device.create(&url, &manifest_traversal, &hex::encode([0u8; 64]), info.bytes),
        400,
        "bad_manifest",
        "traversal in precinct",
    );

    // Nothing was stored, and the server still serves.
    assert_eq!(blob_count(&server), 0);
    assert_eq!(captures(&server), 0);
    let health = http.get(format!("{url}/health")).send().unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let s10 = device.sign("p0001", &info);
    assert_eq!(device.upload(&url, &s10, &bytes).status, 200, "a good upload still works");
    assert_eq!(blob_count(&server), 1);
}

fn device_with(url: &str, code: &str, seed: u8) -> RawDevice {
    let d = RawDevice::new(seed);
    assert_eq!(d.enroll(url, code).status, 200);
    d
}

fn answer(r: reqwest::blocking::Response) -> Answer {
    let status = r.status().as_u16();
    let body: Value =
        r.bytes().ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null);
    Answer { status, offset: None, location: None, body }
}

/// s + ℓ, the classic ed25519 malleation.
fn add_group_order(mut sig: [u8; 64]) -> [u8; 64] {
    let l: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(sig[32 + i]) + u16::from(l[i]) + carry;
        sig[32 + i] = sum as u8;
        carry = sum >> 8;
    }
    sig
}

/// A gzip stream of zeros that would inflate 1000-fold (built without a gzip library: a
/// stored-nothing header plus deflate of a long run is not needed; any gzip-labelled body will
/// do, since the server refuses the label before reading).
fn gzip_bomb() -> Vec<u8> {
    let mut v = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    v.extend(std::iter::repeat_n(0u8, 1024));
    v
}

/// A structurally valid PNG whose header claims 100000×100000 pixels.
fn huge_png() -> Vec<u8> {
    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        let mut crc_input = kind.to_vec();
        crc_input.extend_from_slice(data);
        c.extend_from_slice(&crc32(&crc_input).to_be_bytes());
        c
    }
    let mut ihdr = 100_000u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]));
    png.extend(chunk(b"IEND", &[]));
    png
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// `POST /files/` with the upload's bytes (tus creation-with-upload) and `Hattama-Receipt: wait`.
fn create_with_body(
    device: &RawDevice,
    url: &str,
    signed: &hattama_core::evidence::SignedManifest,
    photo: &[u8],
) -> (u16, Option<u64>, Vec<u8>) {
    let r = device
        .http()
        .post(format!("{url}/files/"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", photo.len().to_string())
        .header(
            "Upload-Metadata",
            hattama_core::sync::upload_metadata(&signed.canonical, &signed.signature),
        )
        .header("Content-Type", "application/offset+octet-stream")
        .header("Hattama-Receipt", "wait")
        .body(photo.to_vec())
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let offset = r.headers().get("Upload-Offset").map(|v| v.to_str().unwrap().parse().unwrap());
    (status, offset, r.bytes().unwrap().to_vec())
}

#[test]
fn one_request_carries_the_photo_and_answers_the_logged_receipt() {
    let server = TestServer::start_with_election(2);
    let url = &server.url;
    let code = &server.invite(&["p0001"], 1)[0];
    let mut device = RawDevice::new(21);
    let pinned = receipt_key(&device.enroll(url, code));
    let log_key = {
        let v: Value =
            reqwest::blocking::get(format!("{url}/api/v1/log/key")).unwrap().json().unwrap();
        hattama_core::log::LogKey::from_vkey(v["vkey"].as_str().unwrap()).unwrap()
    };
    let (bytes, info) = clean_photo(&photo("video-001.jpeg"));

    // The whole photo with the creation: stored, logged, and the receipt in the answer, with
    // its log entry and a proof that verifies.
    let signed = device.sign("p0001", &info);
    let id = signed.hash();
    let (status, offset, body) = create_with_body(&device, url, &signed, &bytes);
    assert_eq!((status, offset), (201, Some(bytes.len() as u64)));
    let receipt = SignedReceipt::from_json(&body).unwrap();
    receipt.verify(&pinned, &id, &info.sha256).unwrap();
    receipt.verify_log(&log_key, "e2e", "p0001").unwrap();
    // It is the receipt the receipts route serves (the signed part), stored once.
    let fetched = device.receipt(url, &id.to_hex());
    assert_eq!(
        fetched.body["signature"],
        serde_json::from_slice::<Value>(&body).unwrap()["signature"]
    );
    // Sent again the same way: the same signed receipt, nothing stored twice.
    let (status, offset, again) = create_with_body(&device, url, &signed, &bytes);
    assert_eq!((status, offset), (201, Some(bytes.len() as u64)));
    assert_eq!(
        serde_json::from_slice::<Value>(&again).unwrap()["signature"],
        serde_json::from_slice::<Value>(&body).unwrap()["signature"]
    );
    assert_eq!(captures(&server), 1);

    // An upload that already holds bytes: the last PATCH asking for the receipt answers 200
    // with it.
    let signed = device.sign("p0001", &info);
    let id = signed.hash();
    let sig = hex::encode(signed.signature);
    assert_eq!(device.create(url, &signed.canonical, &sig, bytes.len() as u64).status, 201);
    assert_eq!(device.patch(url, &id.to_hex(), 0, &bytes[..100]).status, 204);
    let last = device
        .http()
        .patch(device.upload_url(url, &id.to_hex()))
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "100")
        .header("Hattama-Receipt", "wait")
        .body(bytes[100..].to_vec())
        .send()
        .unwrap();
    assert_eq!(last.status().as_u16(), 200);
    let receipt = SignedReceipt::from_json(&last.bytes().unwrap()).unwrap();
    receipt.verify(&pinned, &id, &info.sha256).unwrap();
    receipt.verify_log(&log_key, "e2e", "p0001").unwrap();
    assert_eq!(captures(&server), 2);

    // A small photo sent whole with a creation is stored at once, whatever an earlier upload of
    // the same capture holds, and that upload's bytes go.
    assert!(bytes.len() as u64 <= 64 * 1024);
    let signed = device.sign("p0001", &info);
    let id = signed.hash();
    let sig = hex::encode(signed.signature);
    assert_eq!(device.create(url, &signed.canonical, &sig, bytes.len() as u64).status, 201);
    assert_eq!(device.patch(url, &id.to_hex(), 0, &bytes[..100]).status, 204);
    let (status, offset, body) = create_with_body(&device, url, &signed, &bytes);
    assert_eq!((status, offset), (201, Some(bytes.len() as u64)));
    SignedReceipt::from_json(&body).unwrap().verify(&pinned, &id, &info.sha256).unwrap();
    assert_eq!(hattama_tests::unfinished_uploads(&server.data_dir), 0);
    assert_eq!(captures(&server), 3);

    // A larger photo: a creation's body is taken only by an upload still at offset 0; one that
    // already holds bytes ignores it and answers its offset, so the client resumes from there.
    let large = hattama_tests::textured_jpeg(900, 675, 5, 92);
    let large = hattama_core::media::strip(&large, &Default::default()).unwrap();
    let (large, large_info) = (large.bytes.clone(), large.info());
    assert!(large.len() as u64 > 64 * 1024, "{} bytes", large.len());
    let signed = device.sign("p0001", &large_info);
    let id = signed.hash();
    let sig = hex::encode(signed.signature);
    assert_eq!(device.create(url, &signed.canonical, &sig, large.len() as u64).status, 201);
    assert_eq!(device.patch(url, &id.to_hex(), 0, &large[..100]).status, 204);
    let (status, offset, body) = create_with_body(&device, url, &signed, &large);
    assert_eq!((status, offset, body.len()), (201, Some(100), 0));
    assert_eq!(captures(&server), 3);
    // The same larger photo whole with a fresh creation: kept in memory, written once, stored
    // (on the embedded backend as a file under its hash).
    let signed = device.sign("p0001", &large_info);
    let id = signed.hash();
    let (status, offset, body) = create_with_body(&device, url, &signed, &large);
    assert_eq!((status, offset), (201, Some(large.len() as u64)));
    SignedReceipt::from_json(&body).unwrap().verify(&pinned, &id, &large_info.sha256).unwrap();
    let hex = large_info.sha256.to_hex();
    if Backend::from_env() == Backend::Embedded {
        assert_eq!(std::fs::read(server.data_dir.join("blobs").join(&hex)).unwrap(), large);
    }
    assert_eq!(hattama_tests::stored_photo(&server.data_dir, &hex).unwrap(), large);
    assert_eq!(captures(&server), 4);

    // A creation whose body does not match the manifest stores nothing.
    let mut bad = bytes.clone();
    let n = bad.len();
    bad[n / 2] ^= 1;
    let signed = device.sign("p0001", &info);
    let (status, _, body) = create_with_body(&device, url, &signed, &bad);
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    assert_eq!(captures(&server), 4);
    assert_eq!(hattama_tests::unfinished_uploads(&server.data_dir), 1);
}

/// A device revoked while its whole photo is on its way stores nothing: the creation's checks
/// passed before the body was read, and the commit checks the revocation again.
#[test]
fn a_device_revoked_while_its_photo_arrives_stores_nothing() {
    use std::io::{Read, Write};
    let server = TestServer::start_with_election(2);
    let url = &server.url;
    let code = &server.invite(&["p0001"], 1)[0];
    let mut device = RawDevice::new(26);
    assert_eq!(device.enroll(url, code).status, 200);
    let (bytes, info) = clean_photo(&photo("video-001.jpeg"));
    assert!(bytes.len() as u64 <= 64 * 1024, "a photo sent whole with its creation");
    let signed = device.sign("p0001", &info);

    // The creation and half of its body; the server checks the creation, then waits for the rest.
    let host = url.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(host).unwrap();
    let head = format!(
        "POST /files/ HTTP/1.1\r\nHost: {host}\r\nTus-Resumable: 1.0.0\r\nUpload-Length: {n}\r\n\
         Upload-Metadata: {meta}\r\nContent-Type: application/offset+octet-stream\r\n\
         Hattama-Receipt: wait\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n",
        n = bytes.len(),
        meta = hattama_core::sync::upload_metadata(&signed.canonical, &signed.signature),
    );
    let half = bytes.len() / 2;
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(&bytes[..half]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    conn.set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
    let mut early = [0u8; 1];
    assert!(
        conn.read(&mut early).is_err(),
        "the creation passed its checks and waits for its body"
    );

    let id = hattama_core::evidence::Sha256Hash::of(&device.public().0).to_hex();
    let run = admin(&server.data_dir, &["device", "revoke", &id]);
    assert_eq!(run.code, Some(0), "{run:?}");
    conn.write_all(&bytes[half..]).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let body: Value =
        serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["error"], "device_revoked", "{answer}");
    assert_eq!(captures(&server), 0, "nothing stored");
    assert_eq!(device.receipt(url, &signed.hash().to_hex()).status, 404);
    assert_eq!(hattama_tests::unfinished_uploads(&server.data_dir), 0, "no upload left behind");
}
