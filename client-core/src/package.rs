//! Evidence packages: one `.zip` per polling station that a lawyer or journalist can hand over
//! and anyone can check offline (`docs/evidence-package.md`).
//!
//! Defined here, once: the server writes packages with [`write_station`] and `hattama
//! verify-package` checks them with [`verify`]. A package is deterministic: the same data gives
//! the same bytes (entries stored uncompressed, in a fixed order, with a fixed time and
//! permissions), so two people who download it can compare hashes. Each capture's directory is
//! an evidence bundle of `docs/evidence-format.md` 7.1 plus its receipt and log proof; the whole
//! is bound by `SHA256SUMS` and by `package.json`, signed with the server's receipt key.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, Write};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use zip::write::SimpleFileOptions;

use crate::bundle::{self, BundleError};
use crate::evidence::{self, DeviceKey, Sha256Hash, SignedManifest};
use crate::log::{LogKey, TlogProof};
use crate::media::MediaLimits;
use crate::receipt::SignedReceipt;

mod report;
pub mod set;

/// The package format's name and version, `format` in `package.json`.
pub const FORMAT: &str = "hattama-evidence-package/v1";
/// The domain-separation prefix of the package manifest's signature.
pub const PACKAGE_PREFIX: &[u8] = b"hattama/package/v1\n";
/// The package manifest.
pub const MANIFEST: &str = "package.json";
/// The receipt key's signature over [`PACKAGE_PREFIX`] and `package.json`.
pub const SIGNATURE: &str = "package.sig";
/// `sha256sum`-style sums of every other file.
pub const SUMS: &str = "SHA256SUMS";
/// The server's receipt key, 64 hex digits and a line feed.
pub const RECEIPT_KEY: &str = "keys/receipt-key.txt";
/// The log's verifier key and a line feed.
pub const LOG_KEY: &str = "keys/log.vkey";
/// Most entries a package may have.
const MAX_ENTRIES: usize = 10_000;
/// Most bytes of any entry but a photo or the report.
const MAX_SMALL: u64 = 8 << 20;
/// The PDF report, when the server makes one: after `package.sig`, before `SHA256SUMS`, with
/// every entry before it attached inside it (section 2 of `docs/evidence-package.md`).
pub const REPORT: &str = "report.pdf";
/// Most bytes of the report (it holds every photo again, as attachments and as pictures).
const MAX_REPORT: u64 = 256 << 20;
/// The statement of facts, plain text in Kazakh and Russian (signed with the rest).
pub const STATEMENT: &str = "station/statement.txt";

/// The station a package is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Station {
    /// Election id.
    pub election: String,
    /// Precinct (station) id.
    pub precinct: String,
    /// The station's number.
    pub number: u32,
    /// Region.
    pub region: String,
    /// District.
    pub district: String,
    /// Address.
    pub address: String,
}

/// One capture of a package: the signed manifest and the server's complete receipt (with its
/// log entry and inclusion proof).
#[derive(Clone, Debug)]
pub struct Capture {
    /// The verified, signed manifest.
    pub signed: SignedManifest,
    /// The receipt, with `log`.
    pub receipt: SignedReceipt,
}

/// What a station package holds besides its photos.
#[derive(Clone, Debug)]
pub struct StationData {
    /// The station.
    pub station: Station,
    /// The server's receipt public key.
    pub receipt_key: DeviceKey,
    /// The log's verifier key.
    pub log_vkey: String,
    /// The captures, in any order (they are written by capture id).
    pub captures: Vec<Capture>,
    /// `station/transcription.json`.
    pub transcription: serde_json::Value,
    /// `station/official.json`.
    pub official: serde_json::Value,
    /// `station/differences.json`.
    pub differences: serde_json::Value,
}

/// One file listed by `package.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Its path in the zip.
    pub path: String,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
    /// Its length.
    pub bytes: u64,
}

/// `package.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageManifest {
    /// [`FORMAT`].
    pub format: String,
    /// The station.
    pub station: Station,
    /// The receipt key (hex): the key that signs `package.sig` and every receipt.
    pub receipt_key: String,
    /// The log's verifier key.
    pub log_key: String,
    /// The capture ids, in order.
    pub captures: Vec<String>,
    /// Every file of the package but `package.json`, `package.sig` and `SHA256SUMS`, in the
    /// order of the zip.
    pub files: Vec<FileEntry>,
}

/// Why a package could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// Writing the zip failed.
    #[error("cannot write the package: {0}")]
    Write(String),
    /// The file is not a zip this format allows.
    #[error("not an evidence package: {0}")]
    NotAPackage(String),
}

fn write_err(e: impl std::fmt::Display) -> PackageError {
    PackageError::Write(e.to_string())
}

/// The options of every entry: stored, 1980-01-01 00:00, mode 0644, made on Unix.
fn options() -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::DEFAULT)
        .unix_permissions(0o644)
        .system(zip::System::Unix)
}

struct Writer<W: Write + Seek> {
    zip: zip::ZipWriter<W>,
    files: Vec<FileEntry>,
    /// Every entry's bytes, when a report will attach them.
    kept: Option<Vec<(String, Vec<u8>)>>,
}

impl<W: Write + Seek> Writer<W> {
    fn add(&mut self, path: String, bytes: &[u8]) -> Result<(), PackageError> {
        self.zip.start_file(path.as_str(), options()).map_err(write_err)?;
        self.zip.write_all(bytes).map_err(write_err)?;
        self.files.push(FileEntry {
            path: path.clone(),
            sha256: Sha256Hash::of(bytes).to_hex(),
            bytes: bytes.len() as u64,
        });
        if let Some(kept) = &mut self.kept {
            kept.push((path, bytes.to_vec()));
        }
        Ok(())
    }
}

fn pretty(value: &impl Serialize) -> Result<Vec<u8>, PackageError> {
    let mut out = serde_json::to_vec_pretty(value).map_err(write_err)?;
    out.push(b'\n');
    Ok(out)
}

fn readme(s: &Station) -> String {
    format!(
        "Hattama evidence package: polling station {n}, {region}, election {e}\n\
         Hattama дәлелдер пакеті: {n} сайлау учаскесі, {region}, сайлау {e}\n\
         Пакет доказательств Hattama: избирательный участок {n}, {region}, выборы {e}\n\
         \n\
         captures/<id>/   photo, manifest.json, manifest.sig (the observer's phone signed them),\n\
         \x20                receipt.json (the server's signed receipt), tlog-proof (its place in\n\
         \x20                the public log)\n\
         station/         the verified transcription with its history, every version of the\n\
         \x20                official figures, the differences line by line\n\
         keys/            the server's receipt key and the log's verifier key\n\
         SHA256SUMS       every file's SHA-256 (sha256sum -c SHA256SUMS)\n\
         package.json     the list of files, signed by the server's receipt key (package.sig)\n\
         report.pdf       the report to read and print (Kazakh, Russian), carrying every file\n\
         \x20                above inside it; station/statement.txt: the statement of facts\n\
         \n\
         Check it offline: hattama verify-package <this file>.zip\n\
         The format: docs/evidence-package.md of Hattama.\n",
        n = s.number,
        region = s.region,
        e = s.election,
    )
}

/// Makes the PDF report from every entry written before it (path and bytes, in the order of
/// the zip, `package.json` and `package.sig` last). The server's renderer; an error is the
/// report's problem, named in [`PackageError::Write`].
pub type ReportMaker<'a> = &'a mut dyn FnMut(&[(String, Vec<u8>)]) -> Result<Vec<u8>, String>;

/// The documents a server adds to a station's package for its readers: the statement of facts
/// ([`STATEMENT`], signed with the rest) and the PDF report ([`REPORT`]).
#[derive(Default)]
pub struct Documents<'a> {
    /// `station/statement.txt`.
    pub statement: Option<String>,
    /// Makes `report.pdf`.
    pub report: Option<ReportMaker<'a>>,
}

/// Writes the package of one station to `out` (a file, usually). Photos are asked of `photo`
/// one at a time, so memory holds at most one photo. `key` is the server's receipt key.
pub fn write_station<W: Write + Seek>(
    out: W,
    data: &StationData,
    photo: &mut dyn FnMut(&Sha256Hash) -> std::io::Result<Vec<u8>>,
    key: &SigningKey,
) -> Result<W, PackageError> {
    write_station_with(out, data, photo, key, Documents::default())
}

/// [`write_station`] with the readers' documents. With a report, every entry is kept in
/// memory until the report is made (it attaches them all).
pub fn write_station_with<W: Write + Seek>(
    out: W,
    data: &StationData,
    photo: &mut dyn FnMut(&Sha256Hash) -> std::io::Result<Vec<u8>>,
    key: &SigningKey,
    documents: Documents<'_>,
) -> Result<W, PackageError> {
    let Documents { statement, mut report } = documents;
    let mut w = Writer {
        zip: zip::ZipWriter::new(out),
        files: Vec::new(),
        kept: report.as_ref().map(|_| Vec::new()),
    };
    w.add("README.txt".into(), readme(&data.station).as_bytes())?;
    w.add(RECEIPT_KEY.into(), format!("{}\n", data.receipt_key.to_hex()).as_bytes())?;
    w.add(LOG_KEY.into(), format!("{}\n", data.log_vkey).as_bytes())?;
    let mut captures: Vec<&Capture> = data.captures.iter().collect();
    captures.sort_by_key(|c| c.signed.hash().to_hex());
    let mut ids = Vec::new();
    for c in captures {
        let id = c.signed.hash().to_hex();
        let dir = format!("captures/{id}");
        let info = &c.signed.manifest.photo;
        let bytes = photo(&info.sha256).map_err(write_err)?;
        w.add(format!("{dir}/{}", bundle::photo_name(info.media_type)), &bytes)?;
        drop(bytes);
        w.add(format!("{dir}/{}", bundle::MANIFEST_FILE), &c.signed.canonical)?;
        let sig = format!("{}\n", hex::encode(c.signed.signature));
        w.add(format!("{dir}/{}", bundle::SIGNATURE_FILE), sig.as_bytes())?;
        w.add(format!("{dir}/receipt.json"), &pretty(&c.receipt)?)?;
        let proof = c.receipt.log.as_ref().map(|l| l.proof.clone()).ok_or_else(|| {
            PackageError::Write(format!("capture {id} is not in a published checkpoint yet"))
        })?;
        w.add(format!("{dir}/tlog-proof"), proof.as_bytes())?;
        ids.push(id);
    }
    w.add("station/transcription.json".into(), &pretty(&data.transcription)?)?;
    w.add("station/official.json".into(), &pretty(&data.official)?)?;
    w.add("station/differences.json".into(), &pretty(&data.differences)?)?;
    if let Some(statement) = statement {
        w.add(STATEMENT.into(), statement.as_bytes())?;
    }
    let manifest = PackageManifest {
        format: FORMAT.into(),
        station: data.station.clone(),
        receipt_key: data.receipt_key.to_hex(),
        log_key: data.log_vkey.clone(),
        captures: ids,
        files: w.files.clone(),
    };
    let manifest = pretty(&manifest)?;
    let signature = key.sign(&[PACKAGE_PREFIX, &manifest].concat());
    w.add(MANIFEST.into(), &manifest)?;
    w.add(SIGNATURE.into(), format!("{}\n", hex::encode(signature.to_bytes())).as_bytes())?;
    if let Some(make) = &mut report {
        let kept = w.kept.take().unwrap_or_default();
        let pdf = make(&kept).map_err(|e| PackageError::Write(format!("the report: {e}")))?;
        drop(kept);
        w.add(REPORT.into(), &pdf)?;
    }
    let sums: String = w.files.iter().map(|f| format!("{}  {}\n", f.sha256, f.path)).collect();
    w.zip.start_file(SUMS, options()).map_err(write_err)?;
    w.zip.write_all(sums.as_bytes()).map_err(write_err)?;
    w.zip.finish().map_err(write_err)
}

// ---------------------------------------------------------------------------------------------
// Verification.

/// What one file of a package proves, or why it does not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileReport {
    /// The file's path in the package.
    pub path: String,
    /// What it proves (when `problem` is `None`).
    pub proves: String,
    /// What is wrong with it.
    pub problem: Option<String>,
}

/// The result of [`verify`]: one line per file (and per check that is not one file's).
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Every file, in the zip's order.
    pub files: Vec<FileReport>,
    /// The package manifest, when it could be read.
    pub manifest: Option<PackageManifest>,
}

impl Report {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.files.iter().all(|f| f.problem.is_none())
    }

    /// The files with a problem.
    pub fn problems(&self) -> impl Iterator<Item = &FileReport> {
        self.files.iter().filter(|f| f.problem.is_some())
    }

    fn set(&mut self, path: &str, result: Result<String, String>) {
        let (proves, problem) = match result {
            Ok(p) => (p, None),
            Err(e) => (String::new(), Some(e)),
        };
        match self.files.iter_mut().find(|f| f.path == path) {
            // A file keeps its first problem; a later success does not hide it.
            Some(f) if f.problem.is_some() => {}
            Some(f) => {
                f.proves = proves;
                f.problem = problem;
            }
            None => self.files.push(FileReport { path: path.into(), proves, problem }),
        }
    }
}

/// The files of a package, read into memory entry by entry with limits.
fn read_zip(
    file: impl Read + Seek,
    limits: &MediaLimits,
) -> Result<BTreeMap<String, Vec<u8>>, PackageError> {
    let bad = |e: &dyn std::fmt::Display| PackageError::NotAPackage(e.to_string());
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(&e))?;
    if zip.len() > MAX_ENTRIES {
        return Err(bad(&format!("{} entries, at most {MAX_ENTRIES}", zip.len())));
    }
    let mut files = BTreeMap::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| bad(&e))?;
        let name = entry.name().map_err(|e| bad(&e))?.into_owned();
        let safe = !name.starts_with('/')
            && !name.contains('\\')
            && name.split('/').all(|p| !p.is_empty() && p != "." && p != "..");
        if !safe {
            return Err(bad(&format!("unsafe entry name {name:?}")));
        }
        let limit = if name.contains("/photo.") {
            limits.max_bytes
        } else if name == REPORT {
            MAX_REPORT
        } else {
            MAX_SMALL
        };
        if entry.size() > limit {
            return Err(bad(&format!("{name}: {} bytes, at most {limit}", entry.size())));
        }
        let mut bytes = Vec::new();
        entry.by_ref().take(limit + 1).read_to_end(&mut bytes).map_err(|e| bad(&e))?;
        if files.insert(name.clone(), bytes).is_some() {
            return Err(bad(&format!("{name} appears twice")));
        }
    }
    Ok(files)
}

fn text(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())
}

fn one_line(bytes: &[u8]) -> Result<&str, String> {
    text(bytes)?.strip_suffix('\n').filter(|l| !l.contains('\n')).ok_or("not one line".into())
}

/// Verifies a package offline: every hash, signature, receipt and proof, and the package
/// manifest. `pinned_receipt_key`, when given, must be the package's receipt key (a key the
/// reader got elsewhere); otherwise the key inside the package is used and said to be used.
pub fn verify(
    file: impl Read + Seek,
    limits: &MediaLimits,
    pinned_receipt_key: Option<&DeviceKey>,
) -> Result<Report, PackageError> {
    let files = read_zip(file, limits)?;
    let mut r = Report::default();
    for path in files.keys() {
        r.files.push(FileReport { path: path.clone(), proves: String::new(), problem: None });
    }
    for required in [SUMS, MANIFEST, SIGNATURE, RECEIPT_KEY, LOG_KEY] {
        if !files.contains_key(required) {
            r.set(required, Err("missing".into()));
        }
    }

    // SHA256SUMS: every other file exactly once, with its hash.
    let mut summed = BTreeSet::new();
    if let Some(sums) = files.get(SUMS) {
        let mut result = Ok(format!("the SHA-256 of the other {} files", files.len() - 1));
        for (n, line) in text(sums).unwrap_or("").split_terminator('\n').enumerate() {
            let Some((hash, path)) = line.split_once("  ") else {
                result = Err(format!("line {} is not `<sha256>  <path>`", n + 1));
                continue;
            };
            if !summed.insert(path.to_owned()) {
                result = Err(format!("line {}: {path} is listed twice", n + 1));
            }
            match files.get(path) {
                None => result = Err(format!("line {} lists {path}, which is missing", n + 1)),
                // The file itself is judged against the signed package.json below.
                Some(bytes) if Sha256Hash::of(bytes).to_hex() != hash => {
                    result = Err(format!("line {} ({path}): the SHA-256 differs", n + 1))
                }
                Some(_) => {}
            }
        }
        for path in files.keys().filter(|p| *p != SUMS && !summed.contains(*p)) {
            result = Err(format!("{path} is not listed"));
        }
        r.set(SUMS, result);
    }

    // The receipt key and the package manifest's signature.
    let receipt_key = files.get(RECEIPT_KEY).and_then(|b| {
        let key = one_line(b).ok().and_then(evidence::parse_lower_hex::<32>).map(DeviceKey);
        let result = match (key, pinned_receipt_key) {
            (None, _) => Err("not 64 lowercase hex digits and a line feed".into()),
            (Some(k), Some(p)) if k != *p => Err(format!("not the key you gave ({})", p.to_hex())),
            (Some(_), Some(_)) => Ok("the server's receipt key, the one you gave".into()),
            (Some(_), None) => Ok("the server's receipt key (compare it with one published \
                                   elsewhere, or pass --receipt-key)"
                .into()),
        };
        r.set(RECEIPT_KEY, result);
        key
    });
    let manifest: Option<PackageManifest> =
        files.get(MANIFEST).and_then(|b| match serde_json::from_slice::<PackageManifest>(b) {
            Ok(m) if m.format == FORMAT => Some(m),
            Ok(m) => {
                r.set(MANIFEST, Err(format!("unknown format {:?}", m.format)));
                None
            }
            Err(e) => {
                r.set(MANIFEST, Err(format!("not a package manifest: {e}")));
                None
            }
        });
    if let (Some(m), Some(bytes), Some(key)) = (&manifest, files.get(MANIFEST), receipt_key) {
        let sig = files.get(SIGNATURE).map(|s| one_line(s).unwrap_or(""));
        let sig = sig.and_then(evidence::parse_lower_hex::<64>);
        let verified = sig.is_some_and(|sig| {
            VerifyingKey::from_bytes(&key.0).is_ok_and(|k| {
                k.verify_strict(&[PACKAGE_PREFIX, bytes].concat(), &Signature::from_bytes(&sig))
                    .is_ok()
            })
        });
        if !verified {
            r.set(SIGNATURE, Err("does not verify under the receipt key".into()));
        } else {
            r.set(SIGNATURE, Ok("the server signed package.json".into()));
        }
        if m.receipt_key != key.to_hex() {
            r.set(MANIFEST, Err("names another receipt key than keys/receipt-key.txt".into()));
        }
        let listed: BTreeMap<&str, &FileEntry> =
            m.files.iter().map(|f| (f.path.as_str(), f)).collect();
        for (path, bytes) in &files {
            if [MANIFEST, SIGNATURE, SUMS, REPORT].contains(&path.as_str()) {
                continue;
            }
            match listed.get(path.as_str()) {
                None => r.set(path, Err("not listed in package.json".into())),
                Some(f) if f.sha256 != Sha256Hash::of(bytes).to_hex() => {
                    r.set(path, Err("its SHA-256 is not the one in package.json".into()))
                }
                Some(f) if f.bytes != bytes.len() as u64 => {
                    r.set(path, Err("its length is not the one in package.json".into()))
                }
                Some(_) => {}
            }
        }
        for f in &m.files {
            if !files.contains_key(&f.path) {
                r.set(MANIFEST, Err(format!("lists {}, which is missing", f.path)));
            }
        }
        r.set(
            MANIFEST,
            Ok(format!(
                "the list of files of station {} ({}), election {}, as the server signed it",
                m.station.number, m.station.region, m.station.election
            )),
        );
    }

    // The log key.
    let log_key = files.get(LOG_KEY).and_then(|b| {
        let key = one_line(b).ok().and_then(|l| LogKey::from_vkey(l).ok());
        r.set(
            LOG_KEY,
            key.as_ref()
                .map(|k| format!("the log's verifier key ({})", k.origin))
                .ok_or_else(|| "not a verifier key".into()),
        );
        key
    });

    // Each capture.
    let station = manifest.as_ref().map(|m| m.station.clone());
    let ids: BTreeSet<String> = files
        .keys()
        .filter_map(|p| p.strip_prefix("captures/")?.split_once('/').map(|(id, _)| id.to_owned()))
        .collect();
    if let Some(m) = &manifest {
        let listed: BTreeSet<String> = m.captures.iter().cloned().collect();
        if listed != ids {
            r.set(MANIFEST, Err("its captures are not the package's capture directories".into()));
        }
    }
    for id in &ids {
        check_capture(&mut r, &files, id, limits, receipt_key, log_key.as_ref(), station.as_ref());
    }

    // The station's figures: what the differences say must be what the two sources say.
    check_differences(&mut r, &files);
    if files.contains_key(REPORT) {
        let result = report::check(&files);
        r.set(REPORT, result);
    }
    for f in &mut r.files {
        if f.problem.is_none() && f.proves.is_empty() {
            f.proves = match f.path.as_str() {
                "README.txt" => "nothing: it explains the package".into(),
                "station/transcription.json" => {
                    "the verified transcription and who (by role) entered it when".into()
                }
                "station/official.json" => "every version of the official figures".into(),
                STATEMENT => "nothing by itself: the facts it states are proven by the files it \
                              names"
                    .into(),
                p => format!("its hash is signed ({p})"),
            };
        }
    }
    r.manifest = manifest;
    Ok(r)
}

fn check_capture(
    r: &mut Report,
    files: &BTreeMap<String, Vec<u8>>,
    id: &str,
    limits: &MediaLimits,
    receipt_key: Option<DeviceKey>,
    log_key: Option<&LogKey>,
    station: Option<&Station>,
) {
    let dir = format!("captures/{id}");
    let path = |name: &str| format!("{dir}/{name}");
    let manifest_path = path(bundle::MANIFEST_FILE);
    let (Some(canonical), Some(sig)) =
        (files.get(&manifest_path), files.get(&path(bundle::SIGNATURE_FILE)))
    else {
        r.set(&manifest_path, Err("the capture has no manifest.json or manifest.sig".into()));
        return;
    };
    let signature = one_line(sig).ok().and_then(evidence::parse_lower_hex::<64>);
    let signed = match signature.map(|s| SignedManifest::verify(canonical, &s)) {
        None => {
            r.set(&path(bundle::SIGNATURE_FILE), Err("not 128 hex digits and a line feed".into()));
            return;
        }
        Some(Err(e)) => {
            r.set(&manifest_path, Err(format!("the device's signature: {e}")));
            return;
        }
        Some(Ok(s)) => s,
    };
    if signed.hash().to_hex() != id {
        r.set(&manifest_path, Err("its SHA-256 is not the directory's capture id".into()));
        return;
    }
    let m = &signed.manifest;
    if station.is_some_and(|s| s.election != m.election || s.precinct != m.precinct) {
        r.set(&manifest_path, Err("it is about another station".into()));
    }
    r.set(
        &manifest_path,
        Ok(format!(
            "device {} signed this photo of station {} (sequence {}, taken at {} ms)",
            m.device_key.fingerprint(),
            m.precinct,
            m.seq,
            m.captured_at_ms
        )),
    );
    r.set(&path(bundle::SIGNATURE_FILE), Ok("the device's Ed25519 signature".into()));
    let photo_path = path(&bundle::photo_name(m.photo.media_type));
    let (photo, hash) = (files.get(&photo_path), m.photo.sha256);
    match photo.map(|p| bundle::check_photo(signed.clone(), p, limits)) {
        None => r.set(&photo_path, Err("missing".into())),
        Some(Err(BundleError::PhotoMismatch(e))) => r.set(&photo_path, Err(e)),
        Some(Err(e)) => r.set(&photo_path, Err(e.to_string())),
        Some(Ok(_)) => {
            r.set(&photo_path, Ok(format!("the photo exactly as signed (SHA-256 {hash})")))
        }
    }
    let receipt_path = path("receipt.json");
    let receipt = files.get(&receipt_path).map(|b| SignedReceipt::from_json(b));
    let receipt = match receipt {
        None => return r.set(&receipt_path, Err("missing".into())),
        Some(Err(e)) => return r.set(&receipt_path, Err(e.to_string())),
        Some(Ok(receipt)) => receipt,
    };
    match receipt_key.map(|k| receipt.verify(&k, &signed.hash(), &hash)) {
        None => r.set(&receipt_path, Err("no receipt key to check it with".into())),
        Some(Err(e)) => r.set(&receipt_path, Err(e.to_string())),
        Some(Ok(())) => r.set(
            &receipt_path,
            Ok(format!(
                "the server stored it at {} ms (signed receipt)",
                receipt.receipt.received_at_ms
            )),
        ),
    }
    let proof_path = path("tlog-proof");
    let Some(proof) = files.get(&proof_path) else {
        return r.set(&proof_path, Err("missing".into()));
    };
    let same = receipt.log.as_ref().is_some_and(|l| l.proof.as_bytes() == proof.as_slice());
    let parsed = text(proof).and_then(|t| TlogProof::from_text(t).map_err(|e| e.to_string()));
    let result = match (parsed, log_key) {
        (Err(e), _) => Err(format!("not a C2SP tlog-proof: {e}")),
        (Ok(_), None) => Err("no log key to check it with".into()),
        (Ok(_), Some(_)) if !same => Err("not the proof of receipt.json".into()),
        (Ok(_), Some(key)) => receipt
            .verify_log(key, &m.election, &m.precinct)
            .map(|v| {
                format!(
                    "entry {} of the public log, in its checkpoint of size {}",
                    v.index, v.checkpoint.size
                )
            })
            .map_err(|e| e.to_string()),
    };
    r.set(&proof_path, result);
}

fn check_differences(r: &mut Report, files: &BTreeMap<String, Vec<u8>>) {
    let read =
        |p: &str| files.get(p).and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok());
    let (Some(t), Some(o), Some(d)) = (
        read("station/transcription.json"),
        read("station/official.json"),
        read("station/differences.json"),
    ) else {
        for p in ["station/transcription.json", "station/official.json", "station/differences.json"]
        {
            if read(p).is_none() {
                r.set(p, Err("missing or not JSON".into()));
            }
        }
        return;
    };
    let observed = &t["values"];
    let official = o["versions"].as_array().and_then(|v| v.last()).map(|v| &v["figures"]);
    let mut result = Ok(format!(
        "{} lines differ between the verified transcription and the newest official figures",
        d["lines"].as_array().map_or(0, Vec::len)
    ));
    for line in d["lines"].as_array().into_iter().flatten() {
        let id = line["line"].as_str().unwrap_or("");
        if line["observed"] != observed[id] || Some(&line["official"]) != official.map(|f| &f[id]) {
            result = Err(format!("line {id} is not what the transcription and official say"));
        }
    }
    r.set("station/differences.json", result);
}
