//! The worked examples of `docs/evidence-format.md` and the example bundle in
//! `docs/examples/bundle-v1/`, produced by the code they describe so that the specification
//! cannot drift from it.
//!
//! The test builds a fixed example (a device key from a fixed seed, a tiny photo, a chain of
//! manifests), renders it as Markdown and compares the result with the text between the markers
//! `<!-- BEGIN GENERATED EXAMPLES -->` and `<!-- END GENERATED EXAMPLES -->` of the spec, and
//! the example bundle with the files on disk. Every invalid example is a real bundle checked by
//! [`bundle::verify`]; the error shown in the spec is the one it returned.
//!
//! After an intended change of the format or of these examples, regenerate and review the diff:
//!
//! ```text
//! HATTAMA_UPDATE_DOCS=1 cargo test -p hattama-core --test evidence_examples
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use hattama_core::bundle::{self, BundleError};
use hattama_core::evidence::{
    CoarseLocation, DeviceKey, EvidenceError, EvidenceKind, Manifest, Page, PhotoInfo,
    SIGNING_PREFIX, Sha256Hash, SignedManifest, signing_message,
};
use hattama_core::media::{self, CleanPhoto, MediaLimits};
use sha2::{Digest, Sha512};

const DOC: &str = "docs/evidence-format.md";
const BUNDLE_DIR: &str = "docs/examples/bundle-v1";
const BEGIN: &str = "<!-- BEGIN GENERATED EXAMPLES -->";
const END: &str = "<!-- END GENERATED EXAMPLES -->";
const UPDATE_VAR: &str = "HATTAMA_UPDATE_DOCS";

/// The note of Example 1: a quote, a backslash, a slash, a line feed, Cyrillic and a character
/// outside the Basic Multilingual Plane, so every string rule of the encoding shows.
const NOTE: &str = "Posted on the door/wall at 21:40, \"copy 2\" \\ stamp ok\nсчёт верен 🗳";

// ---------------------------------------------------------------------------------------------
// Keeping the docs in step with the code.

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("client-core has a parent").to_owned()
}

fn updating() -> bool {
    std::env::var(UPDATE_VAR).as_deref() == Ok("1")
}

fn drift(what: &str, detail: &str) -> ! {
    panic!(
        "{what} is out of date: it is not what the code produces ({detail}).\n\
         If the change is intended, regenerate it and review the diff:\n    \
         {UPDATE_VAR}=1 cargo test -p hattama-core --test evidence_examples"
    )
}

/// Writes `expected` to `rel` when updating; otherwise fails unless the file holds exactly it.
fn sync_file(rel: &str, expected: &[u8]) {
    let path = workspace().join(rel);
    if updating() {
        fs::create_dir_all(path.parent().expect("file has a directory")).expect("create directory");
        fs::write(&path, expected).expect("write generated file");
        return;
    }
    match fs::read(&path) {
        Ok(actual) if actual == expected => {}
        Ok(actual) => drift(
            rel,
            &format!("{} bytes on disk, {} bytes generated", actual.len(), expected.len()),
        ),
        Err(e) => drift(rel, &format!("cannot read it: {e}")),
    }
}

/// Replaces (when updating) or checks the generated section of the spec.
fn sync_doc(fragment: &str) {
    let path = workspace().join(DOC);
    let doc = fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {DOC}: {e}"));
    let start = doc.find(BEGIN).unwrap_or_else(|| panic!("{DOC} has no `{BEGIN}` marker"));
    let body = start + BEGIN.len();
    let end = doc[body..]
        .find(END)
        .map(|i| body + i)
        .unwrap_or_else(|| panic!("{DOC} has no `{END}` marker after `{BEGIN}`"));
    let expected = format!("\n{fragment}\n");
    let current = &doc[body..end];
    if current == expected {
        return;
    }
    if updating() {
        let new = format!("{}{expected}{}", &doc[..body], &doc[end..]);
        fs::write(&path, new).expect("write the spec");
        return;
    }
    let marker_line = doc[..body].lines().count();
    let (cur, exp): (Vec<&str>, Vec<&str>) =
        (current.lines().collect(), expected.lines().collect());
    let i = cur.iter().zip(&exp).position(|(a, b)| a != b).unwrap_or(cur.len().min(exp.len()));
    drift(
        DOC,
        &format!(
            "the generated examples differ from line {}:\n  in the file:    {:?}\n  from the code:  {:?}",
            marker_line + i,
            cur.get(i).copied().unwrap_or("<end of section>"),
            exp.get(i).copied().unwrap_or("<end of section>"),
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// The example inputs.

fn example_seed() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

fn example_key() -> SigningKey {
    SigningKey::from_bytes(&example_seed())
}

/// A 16 × 8 JPEG from the `image` crate's encoder (deterministic for a given version).
fn encode_jpeg(pixel: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_fn(16, 8, |x, y| image::Rgb(pixel(x, y)));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&img)
        .expect("the JPEG encoder works");
    out
}

fn jpeg_segment(code: u8, payload: &[u8]) -> Vec<u8> {
    let mut s = vec![0xFF, code];
    s.extend_from_slice(&u16::try_from(payload.len() + 2).expect("short segment").to_be_bytes());
    s.extend_from_slice(payload);
    s
}

/// An EXIF block (big-endian TIFF) whose IFD0 holds only the orientation tag.
fn exif_block(orientation: u16) -> Vec<u8> {
    let mut t = b"Exif\0\0MM\0*\0\0\0\x08".to_vec();
    t.extend_from_slice(&1u16.to_be_bytes());
    t.extend_from_slice(&[0x01, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01]);
    t.extend_from_slice(&orientation.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    t
}

/// The example photo as a camera might save it: encoder output plus EXIF and a comment.
fn original_jpeg() -> Vec<u8> {
    let plain = encode_jpeg(|x, y| [(x * 16) as u8, (y * 32) as u8, 96]);
    let mut v = plain[..2].to_vec();
    v.extend(jpeg_segment(0xE1, &exif_block(6)));
    v.extend(jpeg_segment(0xFE, b"phone serial 12345"));
    v.extend_from_slice(&plain[2..]);
    v
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = u32::try_from(data.len()).expect("short chunk").to_be_bytes().to_vec();
    c.extend_from_slice(kind);
    c.extend_from_slice(data);
    let mut h = crc32fast::Hasher::new();
    h.update(kind);
    h.update(data);
    c.extend_from_slice(&h.finalize().to_be_bytes());
    c
}

/// A 4 × 2 PNG from the `image` crate's encoder, with chunks inserted after IHDR.
fn original_png() -> Vec<u8> {
    let img =
        image::RgbImage::from_fn(4, 2, |x, y| image::Rgb([(x * 60) as u8, (y * 120) as u8, 200]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).expect("the PNG encoder works");
    let png = out.into_inner();
    let after_ihdr = 8 + 12 + 13;
    assert_eq!(&png[12..16], b"IHDR");
    let mut v = png[..after_ihdr].to_vec();
    v.extend(png_chunk(b"sRGB", &[0]));
    v.extend(png_chunk(b"tEXt", b"Author\0Observer Name"));
    v.extend(png_chunk(b"eXIf", &exif_block(3)[6..]));
    v.extend(png_chunk(b"tIME", &[0x07, 0xEA, 3, 15, 16, 40, 0]));
    v.extend_from_slice(&png[after_ihdr..]);
    v
}

fn strip(bytes: &[u8]) -> CleanPhoto {
    media::strip(bytes, &MediaLimits::default()).expect("the example photo strips")
}

fn photo_info(clean: &CleanPhoto) -> PhotoInfo {
    PhotoInfo {
        bytes: clean.bytes.len() as u64,
        height: clean.height,
        media_type: clean.media_type,
        orientation: clean.orientation,
        sha256: Sha256Hash::of(&clean.bytes),
        width: clean.width,
    }
}

struct Example {
    key: SigningKey,
    original: Vec<u8>,
    photo: CleanPhoto,
    chain: Vec<SignedManifest>,
}

fn build_example() -> Example {
    let key = example_key();
    let device_key = DeviceKey(key.verifying_key().to_bytes());
    let original = original_jpeg();
    let photo = strip(&original);
    let photo2 = strip(&encode_jpeg(|x, y| [200, (x * 16) as u8, (y * 32) as u8]));
    let photo3 = strip(&encode_jpeg(|x, y| [(y * 32) as u8, 40, (x * 16) as u8]));

    let first = Manifest {
        captured_at_ms: 1_773_592_800_000,
        device_key,
        election: "kz-2026-example".into(),
        kind: EvidenceKind::Posted,
        location: Some(CoarseLocation { lat_e2: 4325, lon_e2: 7695 }),
        note: Some(NOTE.into()),
        page: Page { count: 2, number: 1 },
        photo: photo_info(&photo),
        precinct: "75-123".into(),
        prev: Sha256Hash::ZERO,
        seq: 1,
        transcription: Some(BTreeMap::from([
            ("1".to_owned(), 1520),
            ("2".to_owned(), 1498),
            ("10".to_owned(), 3),
        ])),
        utc_offset_min: 300,
        v: 1,
    };
    let mut chain = vec![SignedManifest::sign(first, &key).expect("example 1 signs")];
    let mut next = |f: &dyn Fn(&mut Manifest)| {
        let prev = chain.last().expect("chain has a head");
        let mut m = prev.manifest.clone();
        m.seq += 1;
        m.prev = prev.hash();
        m.captured_at_ms += 60_000;
        m.location = None;
        m.note = None;
        m.transcription = None;
        f(&mut m);
        chain.push(SignedManifest::sign(m, &key).expect("chained manifest signs"));
    };
    next(&|m| {
        m.page = Page { count: 2, number: 2 };
        m.photo = photo_info(&photo2);
    });
    next(&|m| {
        m.kind = EvidenceKind::Handed;
        m.page = Page { count: 1, number: 1 };
        m.photo = photo_info(&photo3);
    });
    next(&|m| {
        m.kind = EvidenceKind::Handed;
        m.page = Page { count: 1, number: 1 };
        m.photo = photo_info(&photo3);
        m.note = Some("second try: the first photo was blurred".into());
    });
    Example { key, original, photo, chain }
}

// ---------------------------------------------------------------------------------------------
// Listing a photo's structure (only for the examples above, which are well formed).

struct Part {
    offset: usize,
    bytes: Vec<u8>,
    marker: String,
    name: String,
}

fn ascii_id(payload: &[u8]) -> String {
    let end = payload.iter().position(|&b| b == 0).unwrap_or(payload.len()).min(32);
    let nuls = payload[end..].iter().take(2).take_while(|&&b| b == 0).count();
    let id: String = payload[..end].iter().map(|&b| b as char).collect();
    format!("`{id}{}`", "\\0".repeat(nuls))
}

fn jpeg_parts(b: &[u8]) -> Vec<Part> {
    let mut parts = vec![Part {
        offset: 0,
        bytes: b[..2].to_vec(),
        marker: "FF D8".into(),
        name: "SOI".into(),
    }];
    let mut pos = 2;
    while pos < b.len() {
        assert_eq!(b[pos], 0xFF, "example JPEGs have no fill bytes");
        let code = b[pos + 1];
        let mut end = if code == 0xD9 {
            pos + 2
        } else {
            pos + 2 + usize::from(u16::from_be_bytes([b[pos + 2], b[pos + 3]]))
        };
        let payload = &b[(pos + 4).min(end)..end];
        let name = match code {
            0xD9 => "EOI".to_owned(),
            0xC0 => "SOF0 (baseline frame header)".to_owned(),
            0xC4 => "DHT (Huffman table)".to_owned(),
            0xDB => "DQT (quantization table)".to_owned(),
            0xDD => "DRI (restart interval)".to_owned(),
            0xDA => "SOS (scan header) and entropy-coded data".to_owned(),
            0xE0..=0xEF => format!("APP{} {}", code - 0xE0, ascii_id(payload)),
            0xFE => format!("COM {}", ascii_id(payload)),
            _ => format!("marker {code:02X}"),
        };
        if code == 0xDA {
            loop {
                let i = end + b[end..].iter().position(|&x| x == 0xFF).expect("scan ends");
                match b[i + 1] {
                    0x00 | 0xD0..=0xD7 => end = i + 2,
                    0xFF => end = i + 1,
                    _ => {
                        end = i;
                        break;
                    }
                }
            }
        }
        parts.push(Part {
            offset: pos,
            bytes: b[pos..end].to_vec(),
            marker: format!("FF {code:02X}"),
            name,
        });
        pos = end;
        if code == 0xD9 {
            break;
        }
    }
    if pos < b.len() {
        parts.push(Part {
            offset: pos,
            bytes: b[pos..].to_vec(),
            marker: String::new(),
            name: "trailer".into(),
        });
    }
    parts
}

fn png_parts(b: &[u8]) -> Vec<Part> {
    let mut parts = vec![Part {
        offset: 0,
        bytes: b[..8].to_vec(),
        marker: String::new(),
        name: "signature".into(),
    }];
    let mut pos = 8;
    while pos < b.len() {
        let len = u32::from_be_bytes(b[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let kind: String = b[pos + 4..pos + 8].iter().map(|&c| c as char).collect();
        let end = pos + 12 + len;
        parts.push(Part {
            offset: pos,
            bytes: b[pos..end].to_vec(),
            marker: format!("`{kind}`"),
            name: format!("{len} data byte{}", if len == 1 { "" } else { "s" }),
        });
        pos = end;
    }
    parts
}

/// Renders the structure of `original`, marking each part kept if it appears (byte for byte,
/// in order) in `stripped`.
fn structure_table(out: &mut String, original: &[Part], stripped: &[Part], orientation: &str) {
    out.push_str("| offset | bytes | marker / type | part | stripping |\n");
    out.push_str("|---:|---:|---|---|---|\n");
    let mut next = stripped.iter().peekable();
    for p in original {
        let kept = next.peek().is_some_and(|s| s.bytes == p.bytes);
        if kept {
            next.next();
        }
        let action = match (kept, p.name.as_str()) {
            (true, _) => "kept".to_owned(),
            (false, n) if n.contains("Exif") || n.contains("eXIf") || p.marker == "`eXIf`" => {
                format!("dropped (orientation {orientation} read from it)")
            }
            (false, _) => "dropped".to_owned(),
        };
        let marker = if p.marker.is_empty() { String::new() } else { format!("`{}`", p.marker) };
        let marker = marker.replace("``", "`");
        writeln!(out, "| {} | {} | {marker} | {} | {action} |", p.offset, p.bytes.len(), p.name)
            .expect("write to string");
    }
    assert!(next.next().is_none(), "every stripped part comes from the original");
}

fn hex_lines(bytes: &[u8]) -> String {
    bytes.chunks(32).map(hex::encode).collect::<Vec<_>>().join("\n")
}

// ---------------------------------------------------------------------------------------------
// Scalar arithmetic modulo ℓ, only to build the small-order-R example below.

/// ℓ = 2^252 + 27742317777372353535851937790883648493, the order of the base point,
/// little-endian.
const ELL: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

type U256 = [u64; 4];

fn u256(le: &[u8; 32]) -> U256 {
    std::array::from_fn(|i| u64::from_le_bytes(le[8 * i..8 * i + 8].try_into().expect("8 bytes")))
}

fn le_bytes(x: U256) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, limb) in x.iter().enumerate() {
        out[8 * i..8 * i + 8].copy_from_slice(&limb.to_le_bytes());
    }
    out
}

/// `a + b` for values below 2^255 (no overflow).
fn add(a: U256, b: U256) -> U256 {
    let mut out = [0u64; 4];
    let mut carry = false;
    for i in 0..4 {
        let (s, c1) = a[i].overflowing_add(b[i]);
        let (s, c2) = s.overflowing_add(u64::from(carry));
        out[i] = s;
        carry = c1 || c2;
    }
    out
}

/// `a + b mod ℓ` for `a, b < ℓ`.
fn add_mod(a: U256, b: U256) -> U256 {
    let l = u256(&ELL);
    let s = add(a, b);
    let ge = (0..4).rev().find(|&i| s[i] != l[i]).is_none_or(|i| s[i] > l[i]);
    if !ge {
        return s;
    }
    let mut out = [0u64; 4];
    let mut borrow = false;
    for i in 0..4 {
        let (d, b1) = s[i].overflowing_sub(l[i]);
        let (d, b2) = d.overflowing_sub(u64::from(borrow));
        out[i] = d;
        borrow = b1 || b2;
    }
    out
}

/// `a · (little-endian bytes) mod ℓ` by double and add; `a < ℓ`.
fn mul_mod(a: U256, bytes: &[u8]) -> U256 {
    let mut acc = [0u64; 4];
    for byte in bytes.iter().rev() {
        for bit in (0..8).rev() {
            acc = add_mod(acc, acc);
            if (byte >> bit) & 1 == 1 {
                acc = add_mod(acc, a);
            }
        }
    }
    acc
}

fn reduce(bytes: &[u8]) -> U256 {
    mul_mod([1, 0, 0, 0], bytes)
}

/// The signature `(R, S)` with `R` the identity point (a small-order point) and
/// `S = k·a mod ℓ`: it satisfies the verification equation `[S]B = R + [k]A`, so a verifier
/// without the small-order rule accepts it.
fn small_order_r_signature(seed: &[u8; 32], public: &[u8; 32], message: &[u8]) -> [u8; 64] {
    let h = Sha512::digest(seed);
    let mut a: [u8; 32] = h[..32].try_into().expect("32 bytes");
    a[0] &= 248;
    a[31] &= 127;
    a[31] |= 64;
    let identity: [u8; 32] = std::array::from_fn(|i| u8::from(i == 0));
    let k = reduce(
        &Sha512::new().chain_update(identity).chain_update(public).chain_update(message).finalize(),
    );
    let s = mul_mod(k, &a);
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&identity);
    sig[32..].copy_from_slice(&le_bytes(s));
    sig
}

/// `S + ℓ`: the same signature with a non-canonical scalar (accepted by a verifier that only
/// checks the top bits of S).
fn add_ell(sig: &[u8; 64]) -> [u8; 64] {
    let s = add(u256(sig[32..].try_into().expect("32 bytes")), u256(&ELL));
    let mut out = *sig;
    out[32..].copy_from_slice(&le_bytes(s));
    out
}

// ---------------------------------------------------------------------------------------------
// Bundles and the invalid cases.

#[derive(Clone)]
struct Files {
    manifest: Vec<u8>,
    sig: Vec<u8>,
    photo_name: String,
    photo: Option<Vec<u8>>,
}

impl Files {
    fn of(signed: &SignedManifest, photo: &[u8]) -> Self {
        Self {
            manifest: signed.canonical.clone(),
            sig: format!("{}\n", hex::encode(signed.signature)).into_bytes(),
            photo_name: format!("photo.{}", signed.manifest.photo.media_type.extension()),
            photo: Some(photo.to_vec()),
        }
    }

    fn write(&self, dir: &Path) {
        fs::create_dir_all(dir).expect("create bundle dir");
        fs::write(dir.join(bundle::MANIFEST_FILE), &self.manifest).expect("write manifest");
        fs::write(dir.join(bundle::SIGNATURE_FILE), &self.sig).expect("write signature");
        if let Some(photo) = &self.photo {
            fs::write(dir.join(&self.photo_name), photo).expect("write photo");
        }
    }
}

/// A short, platform-independent name for a verification error.
fn error_code(e: &BundleError) -> String {
    match e {
        BundleError::Io { file, .. } => format!("Io({file})"),
        BundleError::NotEmpty(_) => "NotEmpty".into(),
        BundleError::BadSignatureFile => "BadSignatureFile".into(),
        BundleError::Evidence(e) => format!(
            "Evidence({})",
            match e {
                EvidenceError::Malformed(_) => "Malformed".to_owned(),
                EvidenceError::NotCanonical => "NotCanonical".to_owned(),
                EvidenceError::TooLarge => "TooLarge".to_owned(),
                EvidenceError::UnsupportedVersion(v) => format!("UnsupportedVersion({v})"),
                EvidenceError::InvalidField { field, .. } => format!("InvalidField({field})"),
                EvidenceError::BadSignature => "BadSignature".to_owned(),
            }
        ),
        BundleError::PhotoMismatch(_) => "PhotoMismatch".into(),
        BundleError::Photo(m) => {
            let debug = format!("{m:?}");
            let variant = debug.split([' ', '(', '{']).next().unwrap_or_default();
            format!("Photo({variant})")
        }
    }
}

fn error_message(e: &BundleError) -> String {
    match e {
        BundleError::Io { file, source } => {
            format!("cannot read or write {file}: {}", source.kind())
        }
        other => other.to_string(),
    }
}

struct Case {
    step: &'static str,
    change: String,
    expect: &'static str,
    result: String,
}

struct Cases<'a> {
    example: &'a Example,
    valid: Files,
    scratch: tempfile::TempDir,
    list: Vec<Case>,
}

fn code_span(s: &str) -> String {
    let shown = s.replace('\n', "\\n");
    if shown.contains('`') { format!("`` {shown} ``") } else { format!("`{shown}`") }
}

impl<'a> Cases<'a> {
    fn new(example: &'a Example) -> Self {
        Self {
            example,
            valid: Files::of(&example.chain[0], &example.photo.bytes),
            scratch: tempfile::tempdir().expect("temp dir"),
            list: Vec::new(),
        }
    }

    fn text(&self) -> String {
        String::from_utf8(self.valid.manifest.clone()).expect("manifest is UTF-8")
    }

    fn sig_file(&self, message: &[u8]) -> Vec<u8> {
        format!("{}\n", hex::encode(self.example.key.sign(message).to_bytes())).into_bytes()
    }

    /// Runs `files` through `bundle::verify` and records the result; `expect` is the error code
    /// the case is about ("accepted" for a case that must pass).
    fn check(&mut self, step: &'static str, change: String, expect: &'static str, files: Files) {
        let dir = self.scratch.path().join(self.list.len().to_string());
        files.write(&dir);
        let (code, result) = match bundle::verify(&dir, &MediaLimits::default()) {
            Ok(_) => ("accepted".to_owned(), "accepted".to_owned()),
            Err(e) => {
                let code = error_code(&e);
                (code.clone(), format!("`{code}`: {}", error_message(&e)))
            }
        };
        assert_eq!(code, expect, "invalid example {change:?} is refused for another reason");
        self.list.push(Case { step, change, expect, result });
    }

    /// Replaces `from` (which must occur) by `to` in the valid manifest; `resign` signs the
    /// result with the example key so that only the rule in question is broken.
    fn manifest_edit(
        &mut self,
        step: &'static str,
        from: &str,
        to: &str,
        resign: bool,
        expect: &'static str,
    ) {
        let what = format!("replace {} with {}", code_span(from), code_span(to));
        self.manifest_edit_described(step, from, to, &what, resign, expect);
    }

    fn manifest_edit_described(
        &mut self,
        step: &'static str,
        from: &str,
        to: &str,
        what: &str,
        resign: bool,
        expect: &'static str,
    ) {
        let text = self.text();
        assert!(text.contains(from), "the example manifest contains {from:?}");
        let manifest = text.replacen(from, to, 1).into_bytes();
        let mut files = self.valid.clone();
        if resign {
            files.sig = self.sig_file(&signing_message(&manifest));
        }
        let sha = Sha256Hash::of(&manifest);
        files.manifest = manifest;
        let resigned = if resign { ", re-signed" } else { "" };
        let change = format!("`manifest.json`: {what}{resigned}; manifest SHA-256 `{sha}`");
        self.check(step, change, expect, files);
    }

    /// A manifest with other photo facts, properly signed, and the given photo file.
    fn photo_case(
        &mut self,
        step: &'static str,
        change: &str,
        expect: &'static str,
        photo: Vec<u8>,
        edit: &dyn Fn(&mut PhotoInfo),
    ) {
        let mut m = self.example.chain[0].manifest.clone();
        m.photo =
            PhotoInfo { bytes: photo.len() as u64, sha256: Sha256Hash::of(&photo), ..m.photo };
        edit(&mut m.photo);
        let signed = SignedManifest::sign(m, &self.example.key).expect("photo case signs");
        let files = Files::of(&signed, &photo);
        let change = format!(
            "{change}; manifest updated to match and re-signed (manifest SHA-256 `{}`)",
            signed.hash()
        );
        self.check(step, change, expect, files);
    }
}

fn invalid_cases(example: &Example) -> Vec<Case> {
    let mut c = Cases::new(example);
    let text = c.text();
    let valid = c.valid.clone();
    let public = example.key.verifying_key().to_bytes();
    let canonical = valid.manifest.clone();
    let message = signing_message(&canonical);

    // Step 1: size.
    let mut big = valid.clone();
    big.manifest.resize(65_537, b' ');
    c.check(
        "3a",
        format!(
            "`manifest.json`: append {} spaces so that it has 65,537 bytes",
            65_537 - canonical.len()
        ),
        "Evidence(TooLarge)",
        big,
    );

    // Step 3: version and JSON shape.
    c.manifest_edit("3b", "\"v\":1}", "\"v\":2}", true, "Evidence(UnsupportedVersion(2))");
    c.manifest_edit(
        "3c",
        "{\"captured_at_ms\"",
        "{\"aaa\":1,\"captured_at_ms\"",
        true,
        "Evidence(Malformed)",
    );
    c.manifest_edit(
        "3c",
        "{\"captured_at_ms\"",
        "{\"v\":1,\"captured_at_ms\"",
        true,
        "Evidence(Malformed)",
    );
    c.manifest_edit("3c", "\"seq\":1,", "\"seq\":1.0,", true, "Evidence(Malformed)");
    c.manifest_edit("3c", "\"seq\":1,", "\"seq\":01,", true, "Evidence(Malformed)");
    c.manifest_edit(
        "3c",
        "\"utc_offset_min\":300",
        "\"utc_offset_min\":\"300\"",
        true,
        "Evidence(Malformed)",
    );
    let sha = example.chain[0].manifest.photo.sha256.to_hex();
    c.manifest_edit("3c", &sha, &sha.to_uppercase(), true, "Evidence(Malformed)");
    c.manifest_edit(
        "3c",
        "\"kind\":\"posted\"",
        "\"kind\":\"Posted\"",
        true,
        "Evidence(Malformed)",
    );
    c.manifest_edit(
        "3c",
        "\"media_type\":\"image/jpeg\"",
        "\"media_type\":\"image/jpg\"",
        true,
        "Evidence(Malformed)",
    );
    // Numbers outside the parser's machine type are type errors (docs/evidence-format.md 3.2).
    c.manifest_edit("3c", "\"seq\":1,", "\"seq\":-1,", true, "Evidence(Malformed)");
    c.manifest_edit(
        "3c",
        "\"seq\":1,",
        "\"seq\":18446744073709551616,",
        true,
        "Evidence(Malformed)",
    );
    c.manifest_edit("3c", "\"orientation\":6", "\"orientation\":256", true, "Evidence(Malformed)");
    c.manifest_edit(
        "3c",
        "\"utc_offset_min\":300",
        "\"utc_offset_min\":2147483648",
        true,
        "Evidence(Malformed)",
    );

    // Step 3: field rules.
    c.manifest_edit(
        "3d",
        "\"captured_at_ms\":1773592800000",
        "\"captured_at_ms\":9007199254740992",
        true,
        "Evidence(InvalidField(captured_at_ms))",
    );
    c.manifest_edit(
        "3d",
        "\"election\":\"kz-2026-example\"",
        "\"election\":\"-kz-2026-example\"",
        true,
        "Evidence(InvalidField(election))",
    );
    c.manifest_edit(
        "3d",
        "\"precinct\":\"75-123\"",
        "\"precinct\":\"75/123\"",
        true,
        "Evidence(InvalidField(precinct))",
    );
    c.manifest_edit(
        "3d",
        "\"utc_offset_min\":300",
        "\"utc_offset_min\":841",
        true,
        "Evidence(InvalidField(utc_offset_min))",
    );
    c.manifest_edit("3d", "\"seq\":1,", "\"seq\":0,", true, "Evidence(InvalidField(seq))");
    c.manifest_edit("3d", "\"seq\":1,", "\"seq\":2,", true, "Evidence(InvalidField(prev))");
    c.manifest_edit("3d", "\"number\":1}", "\"number\":3}", true, "Evidence(InvalidField(page))");
    c.manifest_edit("3d", "{\"count\":2,", "{\"count\":100,", true, "Evidence(InvalidField(page))");
    let bytes = format!("\"bytes\":{}", example.photo.bytes.len());
    c.manifest_edit("3d", &bytes, "\"bytes\":0", true, "Evidence(InvalidField(photo.bytes))");
    c.manifest_edit(
        "3d",
        "\"height\":8",
        "\"height\":0",
        true,
        "Evidence(InvalidField(photo.height))",
    );
    c.manifest_edit(
        "3d",
        "\"orientation\":6",
        "\"orientation\":9",
        true,
        "Evidence(InvalidField(photo.orientation))",
    );
    c.manifest_edit(
        "3d",
        "\"lat_e2\":4325",
        "\"lat_e2\":9001",
        true,
        "Evidence(InvalidField(location))",
    );
    c.manifest_edit(
        "3d",
        "\"lon_e2\":7695",
        "\"lon_e2\":-18001",
        true,
        "Evidence(InvalidField(location))",
    );
    let note = serde_json::to_string(NOTE).expect("note encodes");
    c.manifest_edit("3d", &note, "\"\"", true, "Evidence(InvalidField(note))");
    c.manifest_edit("3d", "Posted on", "Posted\\ton", true, "Evidence(InvalidField(note))");
    c.manifest_edit("3d", "stamp ok\\n", "stamp ok\\r\\n", true, "Evidence(InvalidField(note))");
    let long_note = format!("\"{}\"", "x".repeat(2001));
    c.manifest_edit_described(
        "3d",
        &note,
        &long_note,
        "replace the note by 2001 letters `x`",
        true,
        "Evidence(InvalidField(note))",
    );
    c.manifest_edit(
        "3d",
        "\"transcription\":{\"1\":1520,\"10\":3,\"2\":1498}",
        "\"transcription\":{}",
        true,
        "Evidence(InvalidField(transcription))",
    );
    c.manifest_edit("3d", "\"10\":3", "\"1 0\":3", true, "Evidence(InvalidField(transcription))");
    c.manifest_edit(
        "3d",
        "\"10\":3",
        "\"10\":9007199254740992",
        true,
        "Evidence(InvalidField(transcription))",
    );

    // Step 3: canonical form.
    c.manifest_edit_described(
        "3e",
        "\"captured_at_ms\":",
        "\"captured_at_ms\": ",
        "insert one space after the first colon",
        true,
        "Evidence(NotCanonical)",
    );
    let mut trailing = valid.clone();
    trailing.manifest.push(b'\n');
    trailing.sig = c.sig_file(&signing_message(&trailing.manifest));
    c.check(
        "3e",
        format!(
            "`manifest.json`: append one line feed, re-signed; manifest SHA-256 `{}`",
            Sha256Hash::of(&trailing.manifest)
        ),
        "Evidence(NotCanonical)",
        trailing,
    );
    let without_v = text.replacen(",\"v\":1}", "}", 1);
    let reordered = without_v.replacen('{', "{\"v\":1,", 1);
    let mut files = valid.clone();
    files.sig = c.sig_file(&signing_message(reordered.as_bytes()));
    files.manifest = reordered.into_bytes();
    c.check(
        "3e",
        format!("`manifest.json`: move `\"v\":1` to the front (`{{\"v\":1,\"captured_at_ms\":…`), re-signed; manifest SHA-256 `{}`", Sha256Hash::of(&files.manifest)),
        "Evidence(NotCanonical)",
        files,
    );
    c.manifest_edit("3e", "\"75-123\"", "\"75\\u002d123\"", true, "Evidence(NotCanonical)");
    c.manifest_edit("3e", "door/wall", "door\\/wall", true, "Evidence(NotCanonical)");
    c.manifest_edit("3e", "счёт", "\\u0441чёт", true, "Evidence(NotCanonical)");
    c.manifest_edit("3e", "\\\"copy 2\\\"", "\\u0022copy 2\\u0022", true, "Evidence(NotCanonical)");
    c.manifest_edit(
        "3e",
        "\"location\":{\"lat_e2\":4325,\"lon_e2\":7695}",
        "\"location\":null",
        true,
        "Evidence(NotCanonical)",
    );
    c.manifest_edit(
        "3e",
        "{\"1\":1520,",
        "{\"1\":1520,\"1\":1520,",
        true,
        "Evidence(NotCanonical)",
    );

    // Step 2: the signature file.
    let sig_hex = hex::encode(example.chain[0].signature);
    let mut files = valid.clone();
    files.sig = format!("{}\n", sig_hex.to_uppercase()).into_bytes();
    c.check("2", "`manifest.sig`: the same digits in upper case".into(), "BadSignatureFile", files);
    let mut files = valid.clone();
    files.sig = format!("{sig_hex}\r\n").into_bytes();
    c.check("2", "`manifest.sig`: ends with CR LF".into(), "BadSignatureFile", files);
    let mut files = valid.clone();
    files.sig = format!("{sig_hex}\n\n").into_bytes();
    c.check("2", "`manifest.sig`: ends with two line feeds".into(), "BadSignatureFile", files);
    let mut files = valid.clone();
    files.sig = sig_hex.clone().into_bytes();
    c.check(
        "2",
        "`manifest.sig`: no final line feed (tolerated, see step 2)".into(),
        "accepted",
        files,
    );

    // Step 4: the signature.
    let mut files = valid.clone();
    let malleated = add_ell(&example.chain[0].signature);
    files.sig = format!("{}\n", hex::encode(malleated)).into_bytes();
    c.check(
        "4",
        format!("`manifest.sig`: S replaced by S + ℓ: `{}`", hex::encode(malleated)),
        "Evidence(BadSignature)",
        files,
    );
    let mut flipped = example.chain[0].signature;
    flipped[0] ^= 1;
    let mut files = valid.clone();
    files.sig = format!("{}\n", hex::encode(flipped)).into_bytes();
    c.check(
        "4",
        "`manifest.sig`: lowest bit of the first byte flipped".into(),
        "Evidence(BadSignature)",
        files,
    );
    let other = SigningKey::from_bytes(&[0x42; 32]);
    let mut files = valid.clone();
    files.sig = format!("{}\n", hex::encode(other.sign(&message).to_bytes())).into_bytes();
    c.check(
        "4",
        "`manifest.sig`: signed by another key (seed 32 × `42`)".into(),
        "Evidence(BadSignature)",
        files,
    );
    let mut files = valid.clone();
    files.sig = c.sig_file(&canonical);
    c.check("4", "`manifest.sig`: signature over `manifest.json` alone, without the `hattama/evidence/v1` LF prefix".into(), "Evidence(BadSignature)", files);

    // A small-order public key (the identity point, order 1): R = B and S = 1 satisfy the
    // cofactorless equation [S]B = R + [k]A for every message.
    let identity = identity_point();
    let weak_text = text.replacen(&hex::encode(public), &hex::encode(identity), 1);
    let weak_message = signing_message(weak_text.as_bytes());
    let mut weak_sig = [0u8; 64];
    weak_sig[..32].copy_from_slice(&BASE_POINT);
    weak_sig[32] = 1;
    let weak_key = VerifyingKey::from_bytes(&identity).expect("the identity point decodes");
    let weak_signature = Signature::from_bytes(&weak_sig);
    assert!(weak_key.verify(&weak_message, &weak_signature).is_ok(), "lax verification accepts it");
    assert!(weak_key.verify_strict(&weak_message, &weak_signature).is_err());
    let mut files = valid.clone();
    files.manifest = weak_text.into_bytes();
    files.sig = format!("{}\n", hex::encode(weak_sig)).into_bytes();
    c.check(
        "4",
        format!(
            "`manifest.json`: `device_key` replaced by `{}` (the identity point, a small-order key); \
             `manifest.sig`: R = the base point B, S = 1: `{}` (satisfies the equation for any \
             message); manifest SHA-256 `{}`",
            hex::encode(identity),
            hex::encode(weak_sig),
            Sha256Hash::of(&files.manifest),
        ),
        "Evidence(BadSignature)",
        files,
    );

    // A small-order R (the identity point) with S = k·a: satisfies the equation too.
    let low_r = small_order_r_signature(&example_seed(), &public, &message);
    let lax_key = VerifyingKey::from_bytes(&public).expect("the example key decodes");
    let low_r_signature = Signature::from_bytes(&low_r);
    assert!(lax_key.verify(&message, &low_r_signature).is_ok(), "lax verification accepts it");
    assert!(lax_key.verify_strict(&message, &low_r_signature).is_err());
    let mut files = valid.clone();
    files.sig = format!("{}\n", hex::encode(low_r)).into_bytes();
    c.check(
        "4",
        format!(
            "`manifest.sig`: R = the identity point (small order), S = k·a mod ℓ with a the \
             example's secret scalar and k = SHA-512(R ‖ A ‖ message) mod ℓ: `{}` (satisfies the \
             equation)",
            hex::encode(low_r)
        ),
        "Evidence(BadSignature)",
        files,
    );

    // A device key that is not a curve point: the first y = 2, 3, ... that does not decode.
    let off_curve = (2u8..)
        .map(|y| std::array::from_fn::<u8, 32, _>(|i| if i == 0 { y } else { 0 }))
        .find(|b| VerifyingKey::from_bytes(b).is_err())
        .expect("some small y is not on the curve");
    c.manifest_edit(
        "4",
        &hex::encode(public),
        &hex::encode(off_curve),
        true,
        "Evidence(InvalidField(device_key))",
    );

    // Steps 5 to 11: the photo.
    let photo = &example.photo.bytes;
    let mut files = valid.clone();
    files.photo = None;
    c.check("5", "`photo.jpg` missing".into(), "Io(photo.jpg)", files);
    let mut files = valid.clone();
    files.photo = Some([photo.as_slice(), &[0]].concat());
    c.check("6", "`photo.jpg`: one byte 0x00 appended".into(), "PhotoMismatch", files);
    let dqt = jpeg_parts(photo).iter().find(|p| p.marker == "FF DB").expect("a DQT").offset;
    let mut changed = photo.clone();
    changed[dqt + 5] ^= 1;
    let mut files = valid.clone();
    files.photo = Some(changed);
    c.check(
        "7",
        format!("`photo.jpg`: byte {} (a quantization table entry) changed", dqt + 5),
        "PhotoMismatch",
        files,
    );
    c.photo_case(
        "8",
        "`photo.jpg`: followed by the 4 bytes `PK\\x03\\x04`",
        "Photo(TrailingData)",
        [photo.as_slice(), b"PK\x03\x04"].concat(),
        &|_| {},
    );
    c.photo_case(
        "8",
        "`photo.jpg`: its last 2 bytes (the EOI marker) removed",
        "Photo(Truncated)",
        photo[..photo.len() - 2].to_vec(),
        &|_| {},
    );
    let sof = jpeg_parts(photo).iter().find(|p| p.marker == "FF C0").expect("a SOF0").offset;
    let mut arithmetic = photo.clone();
    arithmetic[sof + 1] = 0xC9;
    c.photo_case(
        "8",
        &format!("`photo.jpg`: the frame marker at offset {sof} changed from `FF C0` to `FF C9` (arithmetic coding)"),
        "Photo(Unsupported)",
        arithmetic,
        &|_| {},
    );
    c.photo_case(
        "9",
        "`photo.png` holds the JPEG; `media_type` is `image/png`",
        "PhotoMismatch",
        photo.clone(),
        &|p| p.media_type = hattama_core::evidence::MediaType::Png,
    );
    c.photo_case("10", "`width` 17 instead of 16", "PhotoMismatch", photo.clone(), &|p| {
        p.width = 17
    });
    c.photo_case(
        "11",
        "`photo.jpg` is the original, unstripped photo (with its APP0, EXIF and comment segments)",
        "PhotoMismatch",
        example.original.clone(),
        &|p| p.orientation = 6,
    );
    c.photo_case(
        "11",
        "`photo.jpg`: followed by 16 bytes 0x00 (padding: stripping accepts and drops it)",
        "PhotoMismatch",
        [photo.as_slice(), &[0; 16]].concat(),
        &|_| {},
    );
    c.list
}

/// The encoding of the identity point (x = 0, y = 1).
fn identity_point() -> [u8; 32] {
    std::array::from_fn(|i| u8::from(i == 0))
}

/// The encoding of the Ed25519 base point B (y = 4/5).
const BASE_POINT: [u8; 32] = [
    0x58, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
    0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
];

// ---------------------------------------------------------------------------------------------
// Rendering.

macro_rules! out {
    ($o:expr) => {
        writeln!($o).expect("writing to a String cannot fail")
    };
    ($o:expr, $($arg:tt)*) => {
        writeln!($o, $($arg)*).expect("writing to a String cannot fail")
    };
}

fn manifest_section(o: &mut String, title: &str, intro: &str, signed: &SignedManifest) {
    let text = std::str::from_utf8(&signed.canonical).expect("canonical bytes are UTF-8");
    let message = signing_message(&signed.canonical);
    out!(o, "### {title}\n\n{intro}\n");
    out!(
        o,
        "`manifest.json`, {} bytes of UTF-8, shown as text (the file has no line feed at the \
         end):\n",
        signed.canonical.len()
    );
    out!(o, "```json\n{text}\n```\n");
    out!(o, "| | |\n|---|---|");
    out!(o, "| capture id = SHA-256 of `manifest.json` | `{}` |", signed.hash());
    out!(
        o,
        "| signing message | the {} bytes `{}` (`hattama/evidence/v1` and LF), then \
         `manifest.json`: {} bytes |",
        SIGNING_PREFIX.len(),
        hex::encode(SIGNING_PREFIX),
        message.len()
    );
    out!(o, "| SHA-256 of the signing message (for debugging) | `{}` |", Sha256Hash::of(&message));
    out!(o, "| signature R (bytes 0–31) | `{}` |", hex::encode(&signed.signature[..32]));
    out!(o, "| signature S (bytes 32–63) | `{}` |", hex::encode(&signed.signature[32..]));
    out!(o, "| `manifest.sig` | the 128 hex digits of R then S, and one line feed: 129 bytes |\n");
}

fn render(example: &Example, cases: &[Case]) -> String {
    let mut o = String::new();
    let public = example.key.verifying_key().to_bytes();
    let [first, second, third, fourth] = &example.chain[..] else {
        panic!("the example chain has four captures")
    };

    out!(o, "### The example device key\n");
    out!(o, "| | |\n|---|---|");
    out!(o, "| seed (the 32-byte Ed25519 secret key) | `{}` |", hex::encode(example_seed()));
    out!(o, "| public key A = `device_key` | `{}` |\n", hex::encode(public));

    let original = &example.original;
    let photo = &example.photo;
    out!(o, "### The example photo\n");
    out!(
        o,
        "A 16 × 8 JPEG made by the `image` crate's encoder, into which the test inserted an EXIF \
         block (orientation 6) and a comment, as a camera would. Its parts, and what stripping \
         does with each:\n"
    );
    structure_table(&mut o, &jpeg_parts(original), &jpeg_parts(&photo.bytes), "6");
    out!(o);
    out!(
        o,
        "Before stripping: {} bytes, SHA-256 `{}`.\n\nAfter stripping (this is `photo.jpg` of \
         the example bundle): {} bytes, SHA-256 `{}`, {} × {} pixels, orientation {}. Stripping \
         it again returns the same bytes: it is clean.\n",
        original.len(),
        Sha256Hash::of(original),
        photo.bytes.len(),
        Sha256Hash::of(&photo.bytes),
        photo.width,
        photo.height,
        photo.orientation,
    );
    out!(o, "<details><summary><code>photo.jpg</code> in hex</summary>\n");
    out!(o, "```text\n{}\n```\n", hex_lines(&photo.bytes));
    out!(o, "</details>\n");

    manifest_section(
        &mut o,
        "Example 1: the first capture of a device (`seq` 1)",
        "Page 1 of 2 of a posted protocol, with every optional field. This is the example bundle \
         `docs/examples/bundle-v1/`.",
        first,
    );
    manifest_section(
        &mut o,
        "Example 2: the next capture (`seq` 2)",
        "Page 2 of 2, without the optional fields; `prev` is the capture id of Example 1.",
        second,
    );

    out!(o, "### A chain with a deleted capture\n");
    out!(
        o,
        "After Examples 1 and 2 the device made capture 3 and deleted it before it was sent, then \
         made capture 4. The server receives 1, 2 and 4:\n"
    );
    out!(o, "| seq | capture id | prev | on the server |\n|---:|---|---|---|");
    let fate = ["received", "received", "never seen: deleted on the device", "received"];
    for (signed, fate) in [first, second, third, fourth].into_iter().zip(fate) {
        let m = &signed.manifest;
        out!(o, "| {} | `{}` | `{}` | {fate} |", m.seq, signed.hash(), m.prev);
    }
    out!(o);
    out!(
        o,
        "On the server `seq` 3 is missing and the `prev` of `seq` 4 names `{}`, a manifest it \
         never received. Until capture 3 arrives, the server cannot tell a capture still on its \
         way from a deleted one; it can tell that the device signed a manifest it has not seen.\n",
        third.hash()
    );

    let png = original_png();
    let clean_png = strip(&png);
    out!(o, "### Stripping a PNG\n");
    out!(
        o,
        "A 4 × 2 PNG made by the `image` crate's encoder, with `sRGB`, `tEXt`, `eXIf` \
         (orientation 3) and `tIME` chunks inserted after `IHDR`:\n"
    );
    structure_table(&mut o, &png_parts(&png), &png_parts(&clean_png.bytes), "3");
    out!(o);
    out!(
        o,
        "Before: {} bytes, SHA-256 `{}`. After: {} bytes, SHA-256 `{}`, orientation {}:\n",
        png.len(),
        Sha256Hash::of(&png),
        clean_png.bytes.len(),
        Sha256Hash::of(&clean_png.bytes),
        clean_png.orientation,
    );
    out!(o, "```text\n{}\n```\n", hex_lines(&clean_png.bytes));

    out!(o, "### Invalid bundles\n");
    out!(
        o,
        "Each row changes one thing in the Example 1 bundle and shows what \
         `hattama_core::bundle::verify` returns. \"Re-signed\" means the changed `manifest.json` \
         was signed again with the example key, so that only the rule in question is broken; \
         Ed25519 signatures are deterministic, so the new `manifest.sig` can be recomputed from \
         the seed above.\n"
    );
    out!(o, "| # | step | change | result |\n|---:|---|---|---|");
    for (i, case) in cases.iter().enumerate() {
        debug_assert!(!case.expect.is_empty());
        out!(o, "| {} | {} | {} | {} |", i + 1, case.step, case.change, case.result);
    }
    o.trim_end().to_owned()
}

#[test]
fn spec_examples_are_generated_from_the_code() {
    let example = build_example();
    assert_eq!(original_jpeg(), example.original, "the JPEG encoder is deterministic");
    assert_eq!(
        strip(&example.photo.bytes).bytes,
        example.photo.bytes,
        "the example photo is clean"
    );

    for pair in example.chain.windows(2) {
        assert_eq!(pair[1].manifest.prev, pair[0].hash());
        assert_eq!(pair[1].manifest.seq, pair[0].manifest.seq + 1);
    }
    for signed in &example.chain {
        let back = SignedManifest::verify(&signed.canonical, &signed.signature).expect("verifies");
        assert_eq!(&back, signed);
    }

    let valid = Files::of(&example.chain[0], &example.photo.bytes);
    sync_file(&format!("{BUNDLE_DIR}/{}", bundle::MANIFEST_FILE), &valid.manifest);
    sync_file(&format!("{BUNDLE_DIR}/{}", bundle::SIGNATURE_FILE), &valid.sig);
    sync_file(&format!("{BUNDLE_DIR}/{}", valid.photo_name), &example.photo.bytes);
    let verified = bundle::verify(&workspace().join(BUNDLE_DIR), &MediaLimits::default())
        .expect("the example bundle in docs/examples/bundle-v1 verifies");
    assert_eq!(verified, example.chain[0]);

    let cases = invalid_cases(&example);
    sync_doc(&render(&example, &cases));
}
