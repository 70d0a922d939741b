//! The committed seed corpus of the fuzz targets (`fuzz/corpus-seed/<target>/`): made here from
//! the project's own examples and signing code, checked to be what this code makes now, and
//! each seed checked to pass its parser all the way (a seed that is refused early would leave the
//! fuzzer far from the code it should reach). `HATTAMA_UPDATE_FUZZ_SEEDS=1` rewrites them.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hattama_core::election::Election;
use hattama_core::evidence::{DeviceKey, Manifest, Sha256Hash};
use hattama_core::log::{
    Hash, LogEntry, TlogProof, entry_bundle, is_tile_path, parse_entry_bundle, sign_checkpoint,
    verify_checkpoint,
};
use hattama_core::media::{self, MediaLimits};
use hattama_core::receipt::{Receipt, ReceiptLog, SignedReceipt};
use hattama_core::tus::{parse_checksum_value, parse_metadata};
use image::ImageEncoder;
use sha2::{Digest, Sha256};

#[path = "../../fuzz/src/keys.rs"]
#[allow(dead_code)]
mod keys;

const GO_TESTDATA: &str = "/usr/share/go-1.19/src/image/testdata";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn png(w: u32, h: u32, color: image::ExtendedColorType, bytes_per_pixel: usize) -> Vec<u8> {
    let pixels: Vec<u8> =
        (0..w as usize * h as usize * bytes_per_pixel).map(|i| (i * 37 % 251) as u8).collect();
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(&pixels, w, h, color).unwrap();
    out
}

/// Inserts a chunk right after IHDR (which ends 33 bytes into the file).
fn with_chunk(png: &[u8], kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(kind);
    chunk.extend_from_slice(data);
    let crc = crc32(&chunk[4..]);
    chunk.extend_from_slice(&crc.to_be_bytes());
    [&png[..33], &chunk, &png[33..]].concat()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A big-endian TIFF with one IFD entry: orientation 6.
const TIFF: &[u8] = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00\x00\x00\x00\x00";

/// A JPEG with an EXIF APP1 segment and a comment inserted after SOI.
fn with_exif(jpeg: &[u8]) -> Vec<u8> {
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend_from_slice(TIFF);
    let mut seg = vec![0xFF, 0xE1];
    seg.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    seg.extend_from_slice(&app1);
    seg.extend_from_slice(b"\xFF\xFE\x00\x07hello");
    [&jpeg[..2], &seg, &jpeg[2..]].concat()
}

fn node_hash(l: &Hash, r: &Hash) -> Hash {
    Hash(Sha256::new().chain_update([1u8]).chain_update(l.0).chain_update(r.0).finalize().into())
}

/// Every seed, by target and file name.
fn seeds() -> BTreeMap<(&'static str, String), Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut put = |target: &'static str, name: &str, bytes: Vec<u8>| {
        out.insert((target, name.to_owned()), bytes);
    };
    let docs = root().join("docs/examples/bundle-v1");

    // Photos: the documented example, with metadata added, and Debian's Go sample photos.
    let photo = fs::read(docs.join("photo.jpg")).unwrap();
    let mut photos = vec![("example.jpg".to_owned(), photo.clone())];
    photos.push(("exif.jpg".to_owned(), with_exif(&photo)));
    for name in
        ["video-005.gray.q50.progressive.jpeg", "video-001.q50.420.jpeg", "video-001.rgb.jpeg"]
    {
        let bytes = fs::read(Path::new(GO_TESTDATA).join(name))
            .unwrap_or_else(|e| panic!("{name}: {e} (scripts/test installs golang-1.19-src)"));
        photos.push((name.to_owned(), bytes));
    }
    let rgb = png(8, 6, image::ExtendedColorType::Rgb8, 3);
    photos.push(("rgb8.png".to_owned(), rgb.clone()));
    photos.push(("gray16.png".to_owned(), png(5, 3, image::ExtendedColorType::L16, 2)));
    photos.push(("rgba8.png".to_owned(), png(3, 7, image::ExtendedColorType::Rgba8, 4)));
    photos.push(("text.png".to_owned(), with_chunk(&rgb, b"tEXt", b"Comment\x00secret place")));
    photos.push(("exif.png".to_owned(), with_chunk(&rgb, b"eXIf", TIFF)));
    for (name, bytes) in photos {
        put(if name.ends_with(".png") { "png" } else { "jpeg" }, &name, bytes.clone());
        put("thumbnail", &name, bytes);
    }

    // Manifests: the documented example (canonical), pretty-printed, and with its signature.
    let manifest = fs::read(docs.join("manifest.json")).unwrap();
    let m = Manifest::from_canonical(&manifest).unwrap();
    put("manifest", "pretty.json", serde_json::to_vec_pretty(&m).unwrap());
    let sig = fs::read(docs.join("manifest.sig")).unwrap();
    let sig = hex::decode(String::from_utf8(sig).unwrap().trim()).unwrap();
    put("manifest", "signed", [&manifest[..], &sig[..]].concat());
    put("manifest", "example.json", manifest);

    // The election (also the one the official-results target checks against) and its results.
    let election = fs::read(root().join("fuzz/election.json")).unwrap();
    put("election", "example.json", election);
    put(
        "official_csv",
        "example.csv",
        b"election,precinct,line,value\nkz-2026-almaty,p0123,1,1520\nkz-2026-almaty,p0123,7.1,612\n"
            .to_vec(),
    );
    put(
        "official_csv",
        "bom-crlf.csv",
        b"\xEF\xBB\xBFelection,precinct,line,value\r\nkz-2026-almaty,p0124,2,9007199254740991\r\n"
            .to_vec(),
    );

    // tus headers, one per line: Upload-Metadata, Upload-Checksum, Upload-Length.
    let digest = B64.encode(Sha256Hash::of(b"photo").0);
    put(
        "tus_headers",
        "example",
        format!("manifest eyJ2IjoxfQ==,signature AAEC,empty\nsha256 {digest}\n1048576")
            .into_bytes(),
    );
    put("tus_headers", "spaces", b" a ,b YQ==\nsha256  \n+0007".to_vec());

    // The log: three entries, the checkpoint of their tree, proofs, a bundle, receipts.
    let entries: Vec<LogEntry> = (0..3u8)
        .map(|i| LogEntry {
            capture_id: Sha256Hash::of(&[i]),
            election: "kz-2026-almaty".into(),
            photo_sha256: Sha256Hash::of(&[i, i]),
            precinct: "p0123".into(),
            received_at_ms: 1_795_572_188_364 + u64::from(i),
            v: 1,
        })
        .collect();
    let leaves: Vec<Hash> = entries.iter().map(LogEntry::leaf_hash).collect();
    let root_hash = node_hash(&node_hash(&leaves[0], &leaves[1]), &leaves[2]);
    let checkpoint =
        sign_checkpoint(keys::LOG_ORIGIN, 3, &root_hash, &keys::log_signing_key()).unwrap();
    let body = String::from_utf8(checkpoint.clone()).unwrap();
    let body = body.split_once("\n\n").unwrap().0;
    put("signed_note", "checkpoint", checkpoint.clone());
    put("signed_note", "vkey", keys::log_key().vkey.into_bytes());
    put("checkpoint", "signed", [&[0u8][..], &checkpoint].concat());
    put("checkpoint", "body", format!("\x01{body}\n").into_bytes());
    let raw: Vec<Vec<u8>> = entries.iter().map(LogEntry::to_bytes).collect();
    put("tile", "bundle", entry_bundle(raw.iter().map(Vec::as_slice)));
    put("tile", "path-full", b"0/x001/234".to_vec());
    put("tile", "path-partial", b"entries/000.p/3".to_vec());
    let proof = |index: u64, hashes: Vec<Hash>| {
        TlogProof { index, hashes, checkpoint: checkpoint.clone() }.to_text()
    };
    put("tlog_proof", "index0", proof(0, vec![leaves[1], leaves[2]]).into());
    let proof2 = proof(2, vec![node_hash(&leaves[0], &leaves[1])]);
    put("tlog_proof", "index2", proof2.clone().into());
    let receipt = Receipt {
        capture_id: entries[2].capture_id,
        device_key: DeviceKey([3; 32]),
        photo_sha256: entries[2].photo_sha256,
        received_at_ms: entries[2].received_at_ms,
        server_key: DeviceKey(keys::receipt_signing_key().verifying_key().to_bytes()),
        v: 1,
    };
    let mut signed = receipt.sign(&keys::receipt_signing_key());
    put("receipt", "plain.json", serde_json::to_vec(&signed).unwrap());
    signed.log = Some(ReceiptLog {
        index: 2,
        entry: String::from_utf8(raw[2].clone()).unwrap(),
        proof: proof2,
    });
    put("receipt", "logged.json", serde_json::to_vec_pretty(&signed).unwrap());
    out
}

/// Each seed passes its parser: the fuzzer starts from inputs that reach the deepest code.
fn check_seed(target: &str, name: &str, bytes: &[u8]) {
    let what = format!("seed {target}/{name}");
    let limits = MediaLimits::default();
    let text = || std::str::from_utf8(bytes).unwrap();
    match target {
        "jpeg" | "png" | "thumbnail" => {
            let c = media::check(bytes, &limits).expect(&what);
            // Metadata was added to these, so stripping removes it.
            if name.starts_with("exif") || name.starts_with("text") {
                assert!(!c.unchanged, "{what}");
            }
            if target == "thumbnail" {
                hattama_core::thumbnail::make(bytes, c.media_type, c.orientation).expect(&what);
            }
        }
        "manifest" if name == "signed" => {
            let (body, sig) = bytes.split_at(bytes.len() - 64);
            hattama_core::evidence::SignedManifest::verify(body, sig).expect(&what);
        }
        "manifest" => {
            let m: Manifest = serde_json::from_slice(bytes).expect(&what);
            m.to_canonical().expect(&what);
        }
        "election" => drop(Election::from_json(bytes).expect(&what)),
        "official_csv" => {
            let e = Election::from_json(&fs::read(root().join("fuzz/election.json")).unwrap());
            hattama_server::official::parse(bytes, &e.unwrap()).expect(&what);
        }
        "tus_headers" => {
            let mut lines = text().split('\n');
            parse_metadata(lines.next().unwrap()).expect(&what);
            let checksum = parse_checksum_value(lines.next().unwrap());
            assert_eq!(checksum.is_ok(), name == "example", "{what}");
            lines.next().unwrap().parse::<u64>().expect(&what);
        }
        "signed_note" if name == "vkey" => drop(keys::log_key()),
        "signed_note" => drop(verify_checkpoint(bytes, &keys::log_key()).expect(&what)),
        "checkpoint" if bytes[0] == 0 => {
            drop(verify_checkpoint(&bytes[1..], &keys::log_key()).expect(&what))
        }
        "checkpoint" => tlog_tiles_body(&bytes[1..]).expect(&what),
        "tile" if name == "bundle" => {
            for e in parse_entry_bundle(bytes).expect(&what) {
                LogEntry::from_bytes(e).expect(&what);
            }
        }
        "tile" => assert!(is_tile_path(text()), "{what}"),
        "tlog_proof" => {
            let p = TlogProof::from_text(text()).expect(&what);
            let cp = verify_checkpoint(&p.checkpoint, &keys::log_key()).expect(&what);
            assert_eq!(cp.size, 3, "{what}");
        }
        "receipt" => {
            let r = SignedReceipt::from_json(bytes).expect(&what);
            let pinned = DeviceKey(keys::receipt_signing_key().verifying_key().to_bytes());
            r.verify(&pinned, &r.receipt.capture_id, &r.receipt.photo_sha256).expect(&what);
            if r.log.is_some() {
                r.verify_log(&keys::log_key(), "kz-2026-almaty", "p0123").expect(&what);
            }
        }
        other => panic!("no check for target {other}"),
    }
}

/// The checkpoint body as the auditor reads it (a signed note's text).
fn tlog_tiles_body(body: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    let mut lines = text.lines();
    let (origin, size) = (lines.next(), lines.next().and_then(|s| s.parse::<u64>().ok()));
    (origin == Some(keys::LOG_ORIGIN) && size == Some(3) && lines.next().is_some())
        .then_some(())
        .ok_or_else(|| format!("not the seed checkpoint body: {text:?}"))
}

#[test]
fn fuzz_seeds_are_current_and_reach_past_the_parsers() {
    let dir = root().join("fuzz/corpus-seed");
    let update = std::env::var_os("HATTAMA_UPDATE_FUZZ_SEEDS").is_some();
    let seeds = seeds();
    let mut total = 0;
    for ((target, name), bytes) in &seeds {
        check_seed(target, name, bytes);
        let path = dir.join(target).join(name);
        if update {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, bytes).unwrap();
        }
        let on_disk = fs::read(&path).unwrap_or_default();
        assert!(&on_disk == bytes, "{} is stale: HATTAMA_UPDATE_FUZZ_SEEDS=1", path.display());
        total += bytes.len();
    }
    // No stray seed, every target seeded, and the corpus stays small.
    let mut targets = std::collections::BTreeSet::new();
    for t in fs::read_dir(&dir).unwrap() {
        let t = t.unwrap();
        let target = t.file_name().into_string().unwrap();
        for f in fs::read_dir(t.path()).unwrap() {
            let name = f.unwrap().file_name().into_string().unwrap();
            assert!(
                seeds.keys().any(|(t, n)| *t == target && *n == name),
                "{target}/{name} is not made by this test"
            );
        }
        targets.insert(target);
    }
    let cargo = fs::read_to_string(root().join("fuzz/Cargo.toml")).unwrap();
    let bins: std::collections::BTreeSet<String> = cargo
        .split("[[bin]]\nname = \"")
        .skip(1)
        .map(|b| b.split('"').next().unwrap().to_owned())
        .collect();
    assert_eq!(targets, bins, "every fuzz target has seeds, and only they");
    assert!(total < 2 * 1024 * 1024, "{total} bytes of seeds");
}
