//! Evidence packages of a set of stations (`docs/evidence-package.md` section 6): a district, a
//! region, the stations whose figures differ, or a list of stations, in one `.zip` that holds a
//! summary (`summary.json`, `summary.txt`, and the summary PDF when the server makes one) and
//! then every station's own package, byte for byte the one its station page offers.
//!
//! The set is written as a stream ([`write_set`] needs only `Write`): each station's package is
//! copied in as it comes, so memory does not grow with the number of stations or photos. Entries
//! therefore carry a data descriptor (the zip's bit 3); the bytes are still deterministic. The
//! whole is bound by `SHA256SUMS` and by `package.json`, signed with the receipt key like a
//! station's, and [`verify_set`] checks every inner package with [`super::verify`] and recomputes
//! the summary's totals over the set from them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom, Write};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    FileEntry, FileReport, LOG_KEY, MANIFEST, MAX_SMALL, PackageError, RECEIPT_KEY, Report,
    SIGNATURE, SUMS, one_line, options, pretty, text, write_err,
};
use crate::election::{LineKind, Names};
use crate::evidence::{self, DeviceKey, Sha256Hash};
use crate::log::LogKey;
use crate::media::MediaLimits;

/// The set format's name and version, `format` in a set's `package.json`.
pub const SET_FORMAT: &str = "hattama-evidence-set/v1";
/// The domain-separation prefix of a set manifest's signature.
pub const SET_PREFIX: &[u8] = b"hattama/package-set/v1\n";
/// The summary's figures.
pub const SUMMARY: &str = "summary.json";
/// The summary in plain text, Kazakh and Russian.
pub const SUMMARY_TEXT: &str = "summary.txt";
/// The summary as a PDF, when the server makes one.
pub const SUMMARY_PDF: &str = "summary.pdf";
/// Where the stations' packages are.
pub const STATIONS_DIR: &str = "stations/";
/// Most entries a set may have.
const MAX_SET_ENTRIES: usize = 200_000;
/// Most bytes of the summary PDF.
const MAX_PDF: u64 = 64 << 20;

/// Which stations of an election a set holds. Every member is always present (`null` or `false`
/// when it does not restrict the set); the conditions given hold together.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Only the stations whose verified and newest official figures differ.
    pub differing: bool,
    /// Only the stations of this region.
    pub region: Option<String>,
    /// Only the stations of this district.
    pub district: Option<String>,
    /// Only these stations (precinct ids, in the order given), when given.
    pub precincts: Option<Vec<String>>,
}

/// Totals of one protocol line over a group of stations, as the gallery's comparison counts
/// them: like for like over the stations with both figures, and over every station with a
/// figure of that kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    /// Observed (verified transcriptions) over the stations with both figures of this line.
    pub observed_both: u64,
    /// Official (newest version) over the same stations.
    pub official_both: u64,
    /// Stations counted in the `_both` totals.
    pub both_stations: u64,
    /// Observed over every station with an observed figure of this line.
    pub observed_all: u64,
    /// Stations counted in `observed_all`.
    pub observed_stations: u64,
    /// Official over every station with an official figure of this line.
    pub official_all: u64,
    /// Stations counted in `official_all`.
    pub official_stations: u64,
}

impl Totals {
    /// `observed_both - official_both`: what the observers saw minus what was published, over
    /// the same stations.
    pub fn difference_both(&self) -> i64 {
        self.observed_both as i64 - self.official_both as i64
    }
}

/// One protocol line of the summary: its totals over the set and over the whole election.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryLine {
    /// Line id (`"7.1"`).
    pub line: String,
    /// What it counts.
    pub kind: LineKind,
    /// Its name in the protocol.
    pub names: Names,
    /// Over the stations of the set (a verifier recomputes these from the inner packages).
    pub set: Totals,
    /// Over every station of the election (the gallery's comparison; signed by the server, not
    /// recomputable from the set unless it holds every station).
    pub election: Totals,
}

/// One differing line of a station.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineDifference {
    /// Line id.
    pub line: String,
    /// Verified transcription.
    pub observed: u64,
    /// Newest official figure.
    pub official: u64,
    /// `observed - official`.
    pub difference: i64,
}

/// A station of the set whose verified and newest official figures differ: a row of the
/// summary's table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DifferingStation {
    /// Precinct id.
    pub precinct: String,
    /// Station number.
    pub number: u32,
    /// Region.
    pub region: String,
    /// District.
    pub district: String,
    /// Address.
    pub address: String,
    /// Sum over its lines of |observed − official|, the order of the table (largest first).
    pub size: u64,
    /// Its differing lines, in protocol order.
    pub lines: Vec<LineDifference>,
    /// Its package inside the set (`stations/…zip`).
    pub path: String,
}

/// A station of the set, in the order of the zip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetStation {
    /// Precinct id.
    pub precinct: String,
    /// Station number.
    pub number: u32,
    /// Region.
    pub region: String,
    /// District.
    pub district: String,
    /// Address.
    pub address: String,
    /// Its package inside the set (`stations/<number>-<precinct>.zip`).
    pub path: String,
}

/// `summary.json`: the figures of the set's first page, the summary PDF's and `summary.txt`'s
/// source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSummary {
    /// Election id.
    pub election: String,
    /// The election's name.
    pub election_names: Names,
    /// Which stations the set holds.
    pub selection: Selection,
    /// The selection in words (`"Stations whose figures differ, region Almaty"`).
    pub description: Names,
    /// The newest official version the figures are compared with (`null`: none imported).
    pub official_version: Option<u64>,
    /// Stations of the whole election.
    pub election_stations: u64,
    /// Stations in the set.
    pub stations: u64,
    /// Stations of the set with a verified transcription (observed figures).
    pub observed_stations: u64,
    /// Stations of the set with official figures in the newest version.
    pub official_stations: u64,
    /// Stations of the set with both.
    pub both_stations: u64,
    /// Stations of the set whose figures differ (the rows of `differing`).
    pub differing_stations: u64,
    /// Every protocol line, in protocol order.
    pub lines: Vec<SummaryLine>,
    /// The differing stations, largest difference first (ties by precinct id).
    pub differing: Vec<DifferingStation>,
    /// Every station of the set, in the order of their packages in the zip.
    pub packages: Vec<SetStation>,
}

impl SetSummary {
    /// `summary.json`'s bytes, as the set holds them (so that a summary PDF can print their
    /// SHA-256).
    pub fn to_json(&self) -> Result<Vec<u8>, PackageError> {
        pretty(self)
    }

    /// The summary's line `id`.
    pub fn line(&self, id: &str) -> Option<&SummaryLine> {
        self.lines.iter().find(|l| l.line == id)
    }
}

/// The figures of one station, as its package gives them: what [`SetSummary`]'s totals over the
/// set are computed from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StationFigures {
    /// Verified transcription (empty unless verified).
    pub observed: BTreeMap<String, u64>,
    /// Newest official figures (empty when none).
    pub official: BTreeMap<String, u64>,
}

/// A set's `package.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetManifest {
    /// [`SET_FORMAT`].
    pub format: String,
    /// Election id.
    pub election: String,
    /// Which stations the set holds (the same as the summary's).
    pub selection: Selection,
    /// The receipt key (hex): the key that signs `package.sig` here and in every station.
    pub receipt_key: String,
    /// The log's verifier key.
    pub log_key: String,
    /// The paths of the stations' packages, in the order of the zip.
    pub stations: Vec<String>,
    /// Every entry before `package.json`, in the order of the zip.
    pub files: Vec<FileEntry>,
}

/// What a set package holds besides the stations' packages.
#[derive(Clone, Debug)]
pub struct SetData<'a> {
    /// The server's receipt public key.
    pub receipt_key: DeviceKey,
    /// The log's verifier key.
    pub log_vkey: String,
    /// `summary.json`; its `packages` are the stations, in order.
    pub summary: &'a SetSummary,
    /// `summary.txt`.
    pub summary_text: String,
    /// `summary.pdf`, when there is one.
    pub summary_pdf: Option<Vec<u8>>,
}

/// A writer that hashes and counts what goes through it.
struct Hashing<'a, W: Write> {
    inner: &'a mut W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn readme(s: &SetSummary) -> String {
    format!(
        "Hattama evidence package of {n} polling stations, election {e}: {en}\n\
         Hattama дәлелдер пакеті, {n} сайлау учаскесі, сайлау {e}: {kk}\n\
         Пакет доказательств Hattama, избирательных участков: {n}, выборы {e}: {ru}\n\
         \n\
         summary.txt      the totals observed and official, and the stations that differ\n\
         \x20                (Kazakh and Russian); summary.json the same figures as data\n\
         stations/        every station's own evidence package (.zip), exactly the file its\n\
         \x20                page offers: check each alone with hattama verify-package\n\
         keys/            the server's receipt key and the log's verifier key\n\
         SHA256SUMS       every file's SHA-256 (sha256sum -c SHA256SUMS)\n\
         package.json     the list of files, signed by the server's receipt key (package.sig)\n\
         \n\
         Check it offline: hattama verify-package <this file>.zip\n\
         The format: docs/evidence-package.md of Hattama.\n",
        n = s.stations,
        e = s.election,
        en = s.description.en,
        kk = s.description.kk,
        ru = s.description.ru,
    )
}

/// Adds one file written whole.
fn add<W: Write>(
    zip: &mut zip::ZipWriter<zip::write::StreamWriter<W>>,
    files: &mut Vec<FileEntry>,
    path: &str,
    bytes: &[u8],
) -> Result<(), PackageError> {
    zip.start_file(path, options()).map_err(write_err)?;
    zip.write_all(bytes).map_err(write_err)?;
    files.push(FileEntry {
        path: path.to_owned(),
        sha256: Sha256Hash::of(bytes).to_hex(),
        bytes: bytes.len() as u64,
    });
    Ok(())
}

/// Writes the package of a set of stations to `out` as a stream (no seeking: each entry is
/// followed by a data descriptor). `station` writes the package of one station of
/// `data.summary.packages` into the writer it is given; they are asked for in order, one at a
/// time, and copied through, never held. `key` is the server's receipt key.
pub fn write_set<W: Write>(
    out: W,
    data: &SetData<'_>,
    station: &mut dyn FnMut(&SetStation, &mut dyn Write) -> std::io::Result<()>,
    key: &SigningKey,
) -> Result<W, PackageError> {
    let mut zip = zip::ZipWriter::new_stream(out);
    let mut files: Vec<FileEntry> = Vec::new();
    let s = data.summary;
    let key_line = format!("{}\n", data.receipt_key.to_hex());
    let log_line = format!("{}\n", data.log_vkey);
    let mut documents: Vec<(&str, &[u8])> = Vec::new();
    let (readme, summary) = (readme(s), pretty(s)?);
    documents.push(("README.txt", readme.as_bytes()));
    documents.push((RECEIPT_KEY, key_line.as_bytes()));
    documents.push((LOG_KEY, log_line.as_bytes()));
    documents.push((SUMMARY, &summary));
    documents.push((SUMMARY_TEXT, data.summary_text.as_bytes()));
    if let Some(pdf) = &data.summary_pdf {
        documents.push((SUMMARY_PDF, pdf));
    }
    for (path, bytes) in documents {
        add(&mut zip, &mut files, path, bytes)?;
    }
    let mut stations = Vec::with_capacity(s.packages.len());
    for p in &s.packages {
        zip.start_file(p.path.as_str(), options()).map_err(write_err)?;
        let mut w = Hashing { inner: &mut zip, hash: Sha256::new(), bytes: 0 };
        station(p, &mut w).map_err(|e| PackageError::Write(format!("{}: {e}", p.path)))?;
        let (hash, bytes) = (Sha256Hash(w.hash.finalize().into()), w.bytes);
        files.push(FileEntry { path: p.path.clone(), sha256: hash.to_hex(), bytes });
        stations.push(p.path.clone());
    }
    let manifest = SetManifest {
        format: SET_FORMAT.into(),
        election: s.election.clone(),
        selection: s.selection.clone(),
        receipt_key: data.receipt_key.to_hex(),
        log_key: data.log_vkey.clone(),
        stations,
        files: files.clone(),
    };
    let manifest = pretty(&manifest)?;
    let signature = key.sign(&[SET_PREFIX, &manifest].concat());
    add(&mut zip, &mut files, MANIFEST, &manifest)?;
    let signature = format!("{}\n", hex::encode(signature.to_bytes()));
    add(&mut zip, &mut files, SIGNATURE, signature.as_bytes())?;
    let sums: String = files.iter().map(|f| format!("{}  {}\n", f.sha256, f.path)).collect();
    zip.start_file(SUMS, options()).map_err(write_err)?;
    zip.write_all(sums.as_bytes()).map_err(write_err)?;
    Ok(zip.finish().map_err(write_err)?.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Verification.

/// Whether a zip is a set package (it has a `stations/` directory) rather than one station's.
pub fn is_set(file: impl Read + Seek) -> Result<bool, PackageError> {
    let zip = zip::ZipArchive::new(file).map_err(|e| PackageError::NotAPackage(e.to_string()))?;
    Ok(zip.file_names().any(|n| n.is_ok_and(|n| n.starts_with(STATIONS_DIR))))
}

/// The result of [`verify_set`].
#[derive(Clone, Debug, Default)]
pub struct SetReport {
    /// Every file of the set, in the zip's order; a station's package is one line, whose problem
    /// names the files inside it that fail.
    pub files: Vec<FileReport>,
    /// Each station's own report, by its path in the set.
    pub stations: Vec<(String, Report)>,
    /// The set manifest, when it could be read.
    pub manifest: Option<SetManifest>,
    /// The summary, when it could be read.
    pub summary: Option<SetSummary>,
}

impl SetReport {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.files.iter().all(|f| f.problem.is_none()) && self.stations.iter().all(|(_, r)| r.ok())
    }

    /// The files with a problem.
    pub fn problems(&self) -> impl Iterator<Item = &FileReport> {
        self.files.iter().filter(|f| f.problem.is_some())
    }

    fn set(&mut self, path: &str, result: Result<String, String>) {
        let mut r = Report { files: std::mem::take(&mut self.files), ..Report::default() };
        r.set(path, result);
        self.files = r.files;
    }

    /// [`Self::set`], but a problem is added to one the file already has: a station's package
    /// whose hash is wrong also says which of its files fail.
    fn add(&mut self, path: &str, result: Result<String, String>) {
        match (self.files.iter_mut().find(|f| f.path == path), result) {
            (Some(f), Err(e)) if f.problem.is_some() => {
                f.problem = f.problem.take().map(|p| format!("{p}; {e}"));
            }
            (_, result) => self.set(path, result),
        }
    }
}

/// A part of a file seen as a file of its own: a stored entry of the set.
struct Window<R> {
    inner: R,
    start: u64,
    len: u64,
    pos: u64,
}

impl<R: Read + Seek> Read for Window<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        if left == 0 {
            return Ok(0);
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let n = self.inner.read(&mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for Window<R> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let at = match to {
            SeekFrom::Start(n) => i128::from(n),
            SeekFrom::End(n) => i128::from(self.len) + i128::from(n),
            SeekFrom::Current(n) => i128::from(self.pos) + i128::from(n),
        };
        self.pos = u64::try_from(at).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.pos)
    }
}

/// An entry of the set: a small file read whole, or a station's package left in place.
enum Entry {
    Small(Vec<u8>),
    Station { start: u64, len: u64 },
}

/// The entries of a set, in order: small files read with limits, stations' packages located.
fn read_set<R: Read + Seek>(file: R) -> Result<(Vec<(String, Entry)>, R), PackageError> {
    let bad = |e: &dyn std::fmt::Display| PackageError::NotAPackage(e.to_string());
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(&e))?;
    if zip.len() > MAX_SET_ENTRIES {
        return Err(bad(&format!("{} entries, at most {MAX_SET_ENTRIES}", zip.len())));
    }
    let mut entries = Vec::with_capacity(zip.len());
    let mut seen = BTreeSet::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| bad(&e))?;
        let name = entry.name().map_err(|e| bad(&e))?.into_owned();
        let safe = !name.starts_with('/')
            && !name.contains('\\')
            && name.split('/').all(|p| !p.is_empty() && p != "." && p != "..");
        if !safe {
            return Err(bad(&format!("unsafe entry name {name:?}")));
        }
        if !seen.insert(name.clone()) {
            return Err(bad(&format!("{name} appears twice")));
        }
        if name.starts_with(STATIONS_DIR) {
            if entry.compression() != zip::CompressionMethod::Stored {
                return Err(bad(&format!("{name} is compressed; a set stores its stations")));
            }
            let start = entry.data_start().ok_or_else(|| bad(&format!("{name}: no data")))?;
            entries.push((name, Entry::Station { start, len: entry.size() }));
            continue;
        }
        let limit = if name == SUMMARY_PDF { MAX_PDF } else { MAX_SMALL };
        if entry.size() > limit {
            return Err(bad(&format!("{name}: {} bytes, at most {limit}", entry.size())));
        }
        let mut bytes = Vec::new();
        entry.by_ref().take(limit + 1).read_to_end(&mut bytes).map_err(|e| bad(&e))?;
        entries.push((name, Entry::Small(bytes)));
    }
    Ok((entries, zip.into_inner()))
}

/// The SHA-256 and length of a station's package inside the set, read as a stream.
fn hash_window<R: Read + Seek>(w: &mut Window<R>) -> std::io::Result<(String, u64)> {
    w.seek(SeekFrom::Start(0))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = w.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((Sha256Hash(hash.finalize().into()).to_hex(), bytes))
}

/// The figures a station's package gives: its verified transcription and its newest official
/// figures (`docs/evidence-package.md` section 4).
fn figures_of<R: Read + Seek>(w: &mut Window<R>) -> Option<StationFigures> {
    w.seek(SeekFrom::Start(0)).ok()?;
    let mut zip = zip::ZipArchive::new(w).ok()?;
    let mut json = |name: &str| -> Option<serde_json::Value> {
        let entry = zip.by_name(name).ok()?;
        let mut bytes = Vec::new();
        entry.take(MAX_SMALL).read_to_end(&mut bytes).ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    let (t, o) = (json("station/transcription.json")?, json("station/official.json")?);
    let numbers = |v: &serde_json::Value| -> BTreeMap<String, u64> {
        v.as_object()
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))).collect())
            .unwrap_or_default()
    };
    let observed = if t["status"] == "verified" { numbers(&t["values"]) } else { BTreeMap::new() };
    let newest = o["versions"].as_array().and_then(|v| v.last());
    let official = newest.map(|v| numbers(&v["figures"])).unwrap_or_default();
    Some(StationFigures { observed, official })
}

/// The summary's figures over the set, computed from its stations' own packages as
/// `docs/evidence-package.md` 6.3 says: the lines' `set` totals, the station counts and the
/// table of differing stations. `lines` gives the protocol's lines in order.
pub fn recompute(
    lines: &[String],
    stations: &[(SetStation, StationFigures)],
) -> (Vec<Totals>, [u64; 4], Vec<DifferingStation>) {
    let mut totals = vec![Totals::default(); lines.len()];
    let mut counts = [0u64; 4]; // observed, official, both, stations
    let mut differing = Vec::new();
    for (s, f) in stations {
        counts[3] += 1;
        counts[0] += u64::from(!f.observed.is_empty());
        counts[1] += u64::from(!f.official.is_empty());
        counts[2] += u64::from(!f.observed.is_empty() && !f.official.is_empty());
        let mut diff = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let t = &mut totals[i];
            let (o, x) = (f.observed.get(line), f.official.get(line));
            if let Some(o) = o {
                t.observed_all += o;
                t.observed_stations += 1;
            }
            if let Some(x) = x {
                t.official_all += x;
                t.official_stations += 1;
            }
            if let (Some(&o), Some(&x)) = (o, x) {
                t.observed_both += o;
                t.official_both += x;
                t.both_stations += 1;
                if o != x {
                    diff.push(LineDifference {
                        line: line.clone(),
                        observed: o,
                        official: x,
                        difference: o as i64 - x as i64,
                    });
                }
            }
        }
        if !diff.is_empty() {
            differing.push(DifferingStation {
                precinct: s.precinct.clone(),
                number: s.number,
                region: s.region.clone(),
                district: s.district.clone(),
                address: s.address.clone(),
                size: diff.iter().map(|d| d.difference.unsigned_abs()).sum(),
                lines: diff,
                path: s.path.clone(),
            });
        }
    }
    differing.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.precinct.cmp(&b.precinct)));
    (totals, counts, differing)
}

/// Verifies a set package offline: every station's package as [`super::verify`] does, the
/// set's own hashes and signature, that each station's package is the station its name and the
/// summary say, and the summary's totals over the set recomputed from the stations' figures.
/// Memory holds one station's package at a time.
pub fn verify_set<R: Read + Seek>(
    file: R,
    limits: &MediaLimits,
    pinned_receipt_key: Option<&DeviceKey>,
) -> Result<SetReport, PackageError> {
    let (entries, mut inner) = read_set(file)?;
    let mut r = SetReport::default();
    for (path, _) in &entries {
        r.files.push(FileReport { path: path.clone(), proves: String::new(), problem: None });
    }
    let small = |name: &str| {
        entries.iter().find(|(p, _)| p == name).and_then(|(_, e)| match e {
            Entry::Small(b) => Some(b.as_slice()),
            Entry::Station { .. } => None,
        })
    };
    for required in [SUMS, MANIFEST, SIGNATURE, RECEIPT_KEY, LOG_KEY, SUMMARY] {
        if small(required).is_none() {
            r.set(required, Err("missing".into()));
        }
    }

    // Every entry's SHA-256 and length (the stations' read as a stream).
    let mut hashes: BTreeMap<String, (String, u64)> = BTreeMap::new();
    for (path, e) in &entries {
        let h = match e {
            Entry::Small(b) => (Sha256Hash::of(b).to_hex(), b.len() as u64),
            Entry::Station { start, len } => {
                let mut w = Window { inner: &mut inner, start: *start, len: *len, pos: 0 };
                hash_window(&mut w).map_err(|e| PackageError::NotAPackage(e.to_string()))?
            }
        };
        hashes.insert(path.clone(), h);
    }

    // SHA256SUMS: every other file exactly once, with its hash.
    if let Some(sums) = small(SUMS) {
        let mut summed = BTreeSet::new();
        let mut result = Ok(format!("the SHA-256 of the other {} files", entries.len() - 1));
        for (n, line) in text(sums).unwrap_or("").split_terminator('\n').enumerate() {
            let Some((hash, path)) = line.split_once("  ") else {
                result = Err(format!("line {} is not `<sha256>  <path>`", n + 1));
                continue;
            };
            if !summed.insert(path.to_owned()) {
                result = Err(format!("line {}: {path} is listed twice", n + 1));
            }
            match hashes.get(path) {
                None => result = Err(format!("line {} lists {path}, which is missing", n + 1)),
                Some((h, _)) if h != hash => {
                    result = Err(format!("line {} ({path}): the SHA-256 differs", n + 1))
                }
                Some(_) => {}
            }
        }
        for path in hashes.keys().filter(|p| *p != SUMS && !summed.contains(*p)) {
            result = Err(format!("{path} is not listed"));
        }
        r.set(SUMS, result);
    }

    // The receipt key and the set manifest's signature.
    let receipt_key = small(RECEIPT_KEY).and_then(|b| {
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
    let manifest: Option<SetManifest> =
        small(MANIFEST).and_then(|b| match serde_json::from_slice::<SetManifest>(b) {
            Ok(m) if m.format == SET_FORMAT => Some(m),
            Ok(m) => {
                r.set(MANIFEST, Err(format!("unknown format {:?}", m.format)));
                None
            }
            Err(e) => {
                r.set(MANIFEST, Err(format!("not a set manifest: {e}")));
                None
            }
        });
    if let (Some(m), Some(bytes), Some(key)) = (&manifest, small(MANIFEST), receipt_key) {
        let sig = small(SIGNATURE).map(|s| one_line(s).unwrap_or(""));
        let sig = sig.and_then(evidence::parse_lower_hex::<64>);
        let verified = sig.is_some_and(|sig| {
            VerifyingKey::from_bytes(&key.0).is_ok_and(|k| {
                k.verify_strict(&[SET_PREFIX, bytes].concat(), &Signature::from_bytes(&sig)).is_ok()
            })
        });
        r.set(
            SIGNATURE,
            if verified {
                Ok("the server signed package.json".into())
            } else {
                Err("does not verify under the receipt key".into())
            },
        );
        if m.receipt_key != key.to_hex() {
            r.set(MANIFEST, Err("names another receipt key than keys/receipt-key.txt".into()));
        }
        let listed: BTreeMap<&str, &FileEntry> =
            m.files.iter().map(|f| (f.path.as_str(), f)).collect();
        for (path, (hash, bytes)) in &hashes {
            if [MANIFEST, SIGNATURE, SUMS].contains(&path.as_str()) {
                continue;
            }
            match listed.get(path.as_str()) {
                None => r.set(path, Err("not listed in package.json".into())),
                Some(f) if &f.sha256 != hash => {
                    r.set(path, Err("its SHA-256 is not the one in package.json".into()))
                }
                Some(f) if f.bytes != *bytes => {
                    r.set(path, Err("its length is not the one in package.json".into()))
                }
                Some(_) => {}
            }
        }
        for f in &m.files {
            if !hashes.contains_key(&f.path) {
                r.set(MANIFEST, Err(format!("lists {}, which is missing", f.path)));
            }
        }
        let in_zip: Vec<&String> =
            entries.iter().map(|(p, _)| p).filter(|p| p.starts_with(STATIONS_DIR)).collect();
        if m.stations.iter().collect::<Vec<_>>() != in_zip {
            r.set(MANIFEST, Err("its stations are not the set's station packages".into()));
        }
        r.set(
            MANIFEST,
            Ok(format!(
                "the list of files of a set of {} stations of election {}, as the server \
                 signed it",
                m.stations.len(),
                m.election
            )),
        );
    }

    // The log key.
    let log_key = small(LOG_KEY).and_then(|b| {
        let key = one_line(b).ok().and_then(|l| LogKey::from_vkey(l).ok());
        r.set(
            LOG_KEY,
            key.as_ref()
                .map(|k| format!("the log's verifier key ({})", k.origin))
                .ok_or_else(|| "not a verifier key".into()),
        );
        key.map(|_| one_line(b).unwrap_or_default().to_owned())
    });

    // Each station's package: valid alone, by the same server and log, about the station its
    // name says, of the set's election.
    let election = manifest.as_ref().map(|m| m.election.clone());
    let mut figures: Vec<(SetStation, StationFigures)> = Vec::new();
    for (path, e) in &entries {
        let Entry::Station { start, len } = e else { continue };
        let mut w = Window { inner: &mut inner, start: *start, len: *len, pos: 0 };
        let report =
            match super::verify(std::io::BufReader::new(&mut w), limits, receipt_key.as_ref()) {
                Ok(report) => report,
                Err(e) => {
                    r.set(path, Err(e.to_string()));
                    continue;
                }
            };
        let mut problems: Vec<String> = report
            .problems()
            .map(|f| format!("{}: {}", f.path, f.problem.as_deref().unwrap_or("")))
            .collect();
        if let Some(m) = &report.manifest {
            let s = &m.station;
            if receipt_key.is_some_and(|k| k.to_hex() != m.receipt_key) {
                problems.push("signed by another receipt key than the set's".into());
            }
            if log_key.as_ref().is_some_and(|k| k != &m.log_key) {
                problems.push("another log than the set's".into());
            }
            if election.as_ref().is_some_and(|e| e != &s.election) {
                problems.push(format!("a station of another election ({})", s.election));
            }
            if *path != format!("{STATIONS_DIR}{}-{}.zip", s.number, s.precinct) {
                problems.push(format!("the package of station {} ({})", s.number, s.precinct));
            }
            if let Some(f) = figures_of(&mut w) {
                let station = SetStation {
                    precinct: s.precinct.clone(),
                    number: s.number,
                    region: s.region.clone(),
                    district: s.district.clone(),
                    address: s.address.clone(),
                    path: path.clone(),
                };
                figures.push((station, f));
            }
        }
        let result = match (problems.is_empty(), &report.manifest) {
            (true, Some(m)) => Ok(format!(
                "the evidence package of station {} ({}): its {} files verify",
                m.station.number,
                m.station.region,
                report.files.len()
            )),
            _ if problems.is_empty() => Err("not a station's evidence package".into()),
            _ => Err(problems.join("; ")),
        };
        r.add(path, result);
        r.stations.push((path.clone(), report));
    }

    // The summary: about this set, and its figures over the set are the stations' own.
    let summary = small(SUMMARY).and_then(|b| match serde_json::from_slice::<SetSummary>(b) {
        Ok(s) => Some(s),
        Err(e) => {
            r.set(SUMMARY, Err(format!("not a set summary: {e}")));
            None
        }
    });
    if let Some(s) = &summary {
        r.set(SUMMARY, check_summary(s, manifest.as_ref(), &figures));
    }
    for f in &mut r.files {
        if f.problem.is_none() && f.proves.is_empty() {
            f.proves = match f.path.as_str() {
                "README.txt" => "nothing: it explains the package".into(),
                SUMMARY_TEXT | SUMMARY_PDF => {
                    "the summary for people to read (its hash is signed; summary.json's \
                     figures are checked)"
                        .into()
                }
                p => format!("its hash is signed ({p})"),
            };
        }
    }
    r.manifest = manifest;
    r.summary = summary;
    Ok(r)
}

/// `summary.json` against the set: the same election and selection as `package.json`, the
/// stations of the zip, the selection holds for each, and the totals over the set, the counts
/// and the table of differing stations are what the stations' packages give.
fn check_summary(
    s: &SetSummary,
    m: Option<&SetManifest>,
    figures: &[(SetStation, StationFigures)],
) -> Result<String, String> {
    if let Some(m) = m {
        if s.election != m.election || s.selection != m.selection {
            return Err("its election or selection is not package.json's".into());
        }
        let paths: Vec<&String> = s.packages.iter().map(|p| &p.path).collect();
        if paths != m.stations.iter().collect::<Vec<_>>() {
            return Err("its stations are not the set's station packages".into());
        }
    }
    let stations: Vec<&SetStation> = figures.iter().map(|(s, _)| s).collect();
    if s.packages.iter().collect::<Vec<_>>() != stations {
        return Err("its stations are not the ones their packages are about".into());
    }
    let sel = &s.selection;
    for (p, f) in figures {
        let differs = s.lines.iter().any(|l| {
            matches!((f.observed.get(&l.line), f.official.get(&l.line)), (Some(o), Some(x)) if o != x)
        });
        let outside = (sel.differing && !differs)
            || sel.region.as_ref().is_some_and(|r| r != &p.region)
            || sel.district.as_ref().is_some_and(|d| d != &p.district)
            || sel.precincts.as_ref().is_some_and(|l| !l.contains(&p.precinct));
        if outside {
            return Err(format!("station {} ({}) is not of the selection", p.number, p.precinct));
        }
    }
    if let Some(l) = &sel.precincts
        && l.iter().any(|id| !s.packages.iter().any(|p| &p.precinct == id))
    {
        return Err("a listed station has no package in the set".into());
    }
    let ids: Vec<String> = s.lines.iter().map(|l| l.line.clone()).collect();
    let (totals, counts, differing) = recompute(&ids, figures);
    for (l, t) in s.lines.iter().zip(&totals) {
        if &l.set != t {
            return Err(format!(
                "line {}: its totals over the set are not the stations' (observed {} in the \
                 summary, {} in the packages; official {} and {})",
                l.line, l.set.observed_all, t.observed_all, l.set.official_all, t.official_all
            ));
        }
    }
    let said = [s.observed_stations, s.official_stations, s.both_stations, s.stations];
    if said != counts {
        return Err(format!("its station counts {said:?} are not the packages' {counts:?}"));
    }
    if s.differing_stations != differing.len() as u64 || s.differing != differing {
        return Err("its table of differing stations is not the packages' differences".into());
    }
    let headline = s
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::Candidate)
        .map(|l| {
            format!(
                "line {}: observed {}, official {}",
                l.line, l.set.observed_all, l.set.official_all
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    Ok(format!(
        "{} stations, {} of them differ; totals over the set recomputed from their packages \
         ({headline}); totals over all {} stations of the election as the server signed them",
        s.stations, s.differing_stations, s.election_stations
    ))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use serde_json::json;

    use super::*;
    use crate::package::{Station, StationData, write_station};

    const LINES: [&str; 2] = ["7.1", "7.2"];

    fn names(s: &str) -> Names {
        Names { kk: s.into(), ru: s.into(), en: s.into() }
    }

    /// Three stations: 1 differs on 7.1, 2 agrees, 3 has no transcription.
    fn stations() -> Vec<(SetStation, StationFigures)> {
        let figures = |o: &[u64], x: &[u64]| StationFigures {
            observed: LINES.iter().map(|l| l.to_string()).zip(o.iter().copied()).collect(),
            official: LINES.iter().map(|l| l.to_string()).zip(x.iter().copied()).collect(),
        };
        [
            (1, figures(&[120, 30], &[90, 30])),
            (2, figures(&[50, 50], &[50, 50])),
            (3, figures(&[], &[7, 8])),
        ]
        .into_iter()
        .map(|(n, f)| {
            let s = SetStation {
                precinct: format!("p{n}"),
                number: n,
                region: "Almaty".into(),
                district: format!("district {n}"),
                address: format!("School {n}"),
                path: format!("stations/{n}-p{n}.zip"),
            };
            (s, f)
        })
        .collect()
    }

    fn summary(stations: &[(SetStation, StationFigures)]) -> SetSummary {
        let ids: Vec<String> = LINES.iter().map(|l| l.to_string()).collect();
        let (totals, counts, differing) = recompute(&ids, stations);
        SetSummary {
            election: "e".into(),
            election_names: names("Election"),
            selection: Selection::default(),
            description: names("All stations"),
            official_version: Some(1),
            election_stations: 3,
            stations: counts[3],
            observed_stations: counts[0],
            official_stations: counts[1],
            both_stations: counts[2],
            differing_stations: differing.len() as u64,
            lines: LINES
                .iter()
                .zip(totals)
                .map(|(l, t)| SummaryLine {
                    line: l.to_string(),
                    kind: LineKind::Candidate,
                    names: names(l),
                    set: t.clone(),
                    election: t,
                })
                .collect(),
            differing,
            packages: stations.iter().map(|(s, _)| s.clone()).collect(),
        }
    }

    struct Keys {
        receipt: SigningKey,
        log_vkey: String,
    }

    fn keys() -> Keys {
        let receipt = SigningKey::from_bytes(&[7; 32]);
        let log = LogKey::for_signer("example.org/log", &SigningKey::from_bytes(&[9; 32])).unwrap();
        Keys { receipt, log_vkey: log.vkey }
    }

    fn station_zip(k: &Keys, s: &SetStation, f: &StationFigures) -> Vec<u8> {
        let data = StationData {
            station: Station {
                election: "e".into(),
                precinct: s.precinct.clone(),
                number: s.number,
                region: s.region.clone(),
                district: s.district.clone(),
                address: s.address.clone(),
            },
            receipt_key: DeviceKey(k.receipt.verifying_key().to_bytes()),
            log_vkey: k.log_vkey.clone(),
            captures: Vec::new(),
            transcription: json!({
                "status": if f.observed.is_empty() { serde_json::Value::Null } else { json!("verified") },
                "values": f.observed, "verified_at_ms": null, "inconsistency_note": null, "entries": [],
            }),
            official: json!({ "versions": [{ "version": 1, "imported_at_ms": 1, "source_sha256": "00",
                "figures": f.official }], "changes": [] }),
            differences: json!({ "official_version": 1, "size": 0, "lines": [] }),
        };
        let mut none = |_: &Sha256Hash| -> std::io::Result<Vec<u8>> { unreachable!() };
        write_station(Cursor::new(Vec::new()), &data, &mut none, &k.receipt).unwrap().into_inner()
    }

    /// A set of the stations, each station's package written by `station_zip`.
    fn set(k: &Keys, summary: &SetSummary, stations: &[(SetStation, StationFigures)]) -> Vec<u8> {
        let data = SetData {
            receipt_key: DeviceKey(k.receipt.verifying_key().to_bytes()),
            log_vkey: k.log_vkey.clone(),
            summary,
            summary_text: "summary\n".into(),
            summary_pdf: None,
        };
        let mut copy = |p: &SetStation, out: &mut dyn Write| {
            let (s, f) = stations.iter().find(|(s, _)| s.path == p.path).unwrap();
            out.write_all(&station_zip(k, s, f))
        };
        write_set(Vec::new(), &data, &mut copy, &k.receipt).unwrap()
    }

    fn problems(r: &SetReport) -> Vec<String> {
        r.problems().map(|f| format!("{}: {}", f.path, f.problem.clone().unwrap())).collect()
    }

    #[test]
    fn a_set_verifies_and_its_summary_is_what_its_stations_give() {
        let (k, stations) = (keys(), stations());
        let s = summary(&stations);
        assert_eq!(s.differing_stations, 1);
        assert_eq!(s.differing[0].lines[0].difference, 30);
        assert_eq!(s.line("7.1").unwrap().set.observed_all, 170);
        assert_eq!(s.line("7.1").unwrap().set.official_all, 147);
        assert_eq!((s.observed_stations, s.official_stations, s.both_stations), (2, 3, 2));
        let zip = set(&k, &s, &stations);
        assert_eq!(zip, set(&k, &s, &stations), "the same data, the same bytes");
        assert!(is_set(Cursor::new(&zip)).unwrap());
        let r = verify_set(Cursor::new(&zip), &MediaLimits::default(), None).unwrap();
        assert!(r.ok(), "{:?}", problems(&r));
        assert_eq!(r.stations.len(), 3);
        let names: Vec<&str> = r.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(&names[..5], ["README.txt", RECEIPT_KEY, LOG_KEY, SUMMARY, SUMMARY_TEXT]);
        assert_eq!(&names[names.len() - 3..], [MANIFEST, SIGNATURE, SUMS]);
        // A station's package inside is the very file: it verifies alone.
        let inner = station_zip(&k, &stations[0].0, &stations[0].1);
        assert!(zip.windows(inner.len()).any(|w| w == inner.as_slice()));
    }

    #[test]
    fn a_summary_signed_with_other_figures_is_named() {
        let (k, stations) = (keys(), stations());
        let mut s = summary(&stations);
        // The server's own key signs it, so only recomputing the totals finds it.
        s.lines[0].set.observed_all += 1000;
        let r =
            verify_set(Cursor::new(set(&k, &s, &stations)), &MediaLimits::default(), None).unwrap();
        let p = problems(&r);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("summary.json: line 7.1: its totals over the set"), "{p:?}");

        let mut s = summary(&stations);
        s.differing.clear();
        s.differing_stations = 0;
        let r =
            verify_set(Cursor::new(set(&k, &s, &stations)), &MediaLimits::default(), None).unwrap();
        assert!(problems(&r)[0].contains("table of differing stations"), "{:?}", problems(&r));

        // A selection the stations do not meet.
        let mut s = summary(&stations);
        s.selection.differing = true;
        let r =
            verify_set(Cursor::new(set(&k, &s, &stations)), &MediaLimits::default(), None).unwrap();
        assert!(problems(&r)[0].contains("is not of the selection"), "{:?}", problems(&r));
    }

    #[test]
    fn a_file_that_is_no_zip_is_not_a_package() {
        assert!(matches!(
            verify_set(Cursor::new(b"no zip"), &MediaLimits::default(), None),
            Err(PackageError::NotAPackage(_))
        ));
    }
}
