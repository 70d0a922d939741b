//! Evidence packages of stations (`docs/evidence-package.md`): the server gathers a station's
//! public record from the gallery's view and storage, and the core writes the zip
//! (`hattama_core::package`).
//!
//! A package is written to a file under `<data dir>/packages/`, named by the SHA-256 of what it
//! is made from, so that the same data is written once and answered from the file until it
//! changes (a newer package replaces the station's older files). Memory holds one photo at a
//! time while it is written.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;

use hattama_core::evidence::SignedManifest;
use hattama_core::package::{self, Capture, Documents, Station, StationData};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::gallery::{ElectionView, PublicState};
use crate::startup::AppState;
use crate::storage::review::TranscriptionStatus;

mod pdf;
pub mod report;
pub mod set;

pub use pdf::{Fonts, ReportError};

/// The version of what the server adds to a package for its readers (the statement of facts
/// and the PDF report): part of a package's key, so that a new layout makes new packages.
const DOCUMENTS_VERSION: &str = "report/1";

/// A package ready to be answered.
#[derive(Debug)]
pub struct Built {
    /// The zip file.
    pub path: PathBuf,
    /// Its SHA-256 of its inputs, hex: the entity tag.
    pub key: String,
    /// The name it is saved as.
    pub file_name: String,
}

/// The station's public record as a package's data. Blocking.
pub fn station_data(
    state: &AppState,
    v: &ElectionView,
    precinct: &str,
) -> Result<StationData, ApiError> {
    let p = v.election.precinct(precinct).ok_or_else(|| ApiError::not_found("no such precinct"))?;
    let e = &v.election.id;
    let mut captures = Vec::new();
    for c in state.gallery.precinct_captures(e, precinct)? {
        let public = v.decisions.get(&c.id).copied().unwrap_or(PublicState::Pending);
        let Some(index) = c.log_index else { continue };
        if public == PublicState::Rejected {
            continue;
        }
        let signed = SignedManifest::verify(&c.manifest, &c.signature)
            .map_err(|e| ApiError::internal(&e))?;
        let receipt = crate::routes::receipts::complete(
            &*state.storage,
            &state.log,
            &c.id,
            &c.receipt,
            index,
            None,
        )?;
        captures.push(Capture { signed, receipt });
    }
    Ok(StationData {
        station: Station {
            election: e.clone(),
            precinct: p.id.clone(),
            number: p.number,
            region: p.region.clone(),
            district: p.district.clone(),
            address: p.address.clone(),
        },
        receipt_key: state.keys.receipt_public(),
        log_vkey: state.log.log_key.vkey.clone(),
        captures,
        transcription: transcription(state, v, precinct)?,
        official: official(state, v, precinct)?,
        differences: differences(v, precinct),
    })
}

/// The transcription with its history: who entered what when, by role and a number within this
/// package (`coordinator 1`), never by name. Entries are only public once the two blind entries
/// are in (as the gallery's rule for the observer's own figures).
fn transcription(state: &AppState, v: &ElectionView, precinct: &str) -> Result<Value, ApiError> {
    let Some(t) = v.transcriptions.get(precinct) else {
        return Ok(json!({ "status": null, "values": {}, "verified_at_ms": null, "entries": [] }));
    };
    let mut entries = Vec::new();
    if t.status != TranscriptionStatus::Pending {
        let roles: HashMap<i64, String> =
            state.review.users()?.into_iter().map(|u| (u.id, u.role.as_str().to_owned())).collect();
        let mut pseudonyms: HashMap<i64, usize> = HashMap::new();
        for entry in state.review.entries(&v.election.id, precinct)? {
            let next = pseudonyms.len() + 1;
            let n = *pseudonyms.entry(entry.user_id).or_insert(next);
            let role = roles.get(&entry.user_id).cloned().unwrap_or_else(|| "coordinator".into());
            entries.push(json!({
                "at_ms": entry.at_ms,
                "by": format!("{role} {n}"),
                "role": role,
                "resolution": entry.resolution,
                "values": entry.values,
                "reason": entry.reason,
            }));
        }
    }
    Ok(json!({
        "status": t.status,
        "values": t.values,
        "verified_at_ms": t.verified_at_ms,
        "inconsistency_note": t.inconsistency_note,
        "entries": entries,
    }))
}

/// Every version of the official figures of the station, with when it was imported, and the
/// changes between versions.
fn official(state: &AppState, v: &ElectionView, precinct: &str) -> Result<Value, ApiError> {
    let mut versions = Vec::new();
    for x in &v.official_versions {
        let figures = state.gallery.official_figures(&v.election.id, x.version)?;
        versions.push(json!({
            "version": x.version,
            "imported_at_ms": x.imported_at_ms,
            "source_sha256": x.sha256,
            "figures": figures.get(precinct),
        }));
    }
    Ok(json!({ "versions": versions, "changes": v.changes_of(precinct) }))
}

/// Observed against the newest official figures, line by line.
fn differences(v: &ElectionView, precinct: &str) -> Value {
    let d = v.comparison.differences.iter().find(|d| d.precinct == precinct);
    json!({
        "official_version": v.official_versions.last().map(|x| x.version),
        "size": d.map_or(0, |d| d.size),
        "lines": d.map(|d| d.lines.iter().map(|l| json!({
            "line": l.line,
            "observed": l.observed,
            "official": l.official,
            "difference": l.observed as i64 - l.official as i64,
        })).collect::<Vec<_>>()).unwrap_or_default(),
    })
}

/// The SHA-256 of what a package is made from (every byte but the photos', which the signed
/// manifests name by hash), with what its documents show besides: the election's names and
/// protocol, the station page's address (the QR code) and whether the report can be made.
fn key_of(data: &StationData, v: &ElectionView, url: &str, report: bool) -> String {
    let mut parts = vec![
        DOCUMENTS_VERSION.as_bytes().to_vec(),
        url.as_bytes().to_vec(),
        vec![u8::from(report)],
        serde_json::to_vec(&v.election.names).unwrap_or_default(),
        serde_json::to_vec(&v.election.protocol).unwrap_or_default(),
        v.election.utc_offset_min.unwrap_or(0).to_be_bytes().to_vec(),
        serde_json::to_vec(&data.station).unwrap_or_default(),
        data.receipt_key.0.to_vec(),
        data.log_vkey.as_bytes().to_vec(),
        serde_json::to_vec(&data.transcription).unwrap_or_default(),
        serde_json::to_vec(&data.official).unwrap_or_default(),
        serde_json::to_vec(&data.differences).unwrap_or_default(),
    ];
    for c in &data.captures {
        parts.push(c.signed.canonical.clone());
        parts.push(serde_json::to_vec(&c.receipt).unwrap_or_default());
    }
    let mut all = Vec::new();
    for p in parts {
        all.extend_from_slice(&(p.len() as u64).to_be_bytes());
        all.extend_from_slice(&p);
    }
    hattama_core::evidence::Sha256Hash::of(&all).to_hex()
}

/// The package of a station, written now or found from an earlier request. `base` is the site's
/// address as readers reach it (`public_url`), for the QR code of the station's page. Blocking.
pub fn build(
    state: &AppState,
    v: &ElectionView,
    precinct: &str,
    base: &str,
) -> Result<Built, ApiError> {
    let data = station_data(state, v, precinct)?;
    let url = format!("{base}{}", crate::web::gallery::precinct_url(&v.election.id, precinct));
    let fonts_dir = &state.settings.report_fonts;
    let report = fonts_dir.join("DejaVuSans.ttf").exists();
    let key = key_of(&data, v, &url, report);
    let dir = state.settings.data_dir.join("packages");
    std::fs::create_dir_all(&dir).map_err(|e| ApiError::internal(&e))?;
    let prefix = format!("{}--{}--", data.station.election, data.station.precinct);
    let path = dir.join(format!("{prefix}{key}.zip"));
    let file_name =
        format!("{}-station-{}-evidence.zip", data.station.election, data.station.number);
    if path.exists() {
        return Ok(Built { path, key, file_name });
    }
    let mut tmp = tempfile_in(&dir)?;
    let storage = state.storage.clone();
    let mut photo = |sha: &hattama_core::evidence::Sha256Hash| {
        storage
            .photo(sha)
            .map_err(std::io::Error::other)?
            .ok_or_else(|| std::io::Error::other(format!("photo {sha} is missing")))
    };
    let statement = Some(report::statement(&v.election, &data));
    let fonts = match report.then(|| Fonts::load(fonts_dir)).transpose() {
        Ok(fonts) => fonts,
        Err(e) => {
            tracing::error!(error = %e, "the package is made without its PDF report");
            None
        }
    };
    if !report {
        tracing::error!(
            fonts = %fonts_dir.display(),
            "no DejaVu fonts (report_fonts): the package is made without its PDF report"
        );
    }
    let written = match &fonts {
        Some(fonts) => {
            let mut make = |files: &[(String, Vec<u8>)]| {
                report::station_pdf(fonts, &v.election, &data, &url, files)
                    .map_err(|e| e.to_string())
            };
            let documents = Documents { statement, report: Some(&mut make) };
            package::write_station_with(tmp.1, &data, &mut photo, &state.keys.receipt, documents)
        }
        None => {
            let documents = Documents { statement, report: None };
            package::write_station_with(tmp.1, &data, &mut photo, &state.keys.receipt, documents)
        }
    };
    let file = written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp.0);
        ApiError::internal(&e)
    })?;
    tmp.1 = file;
    tmp.1.flush().map_err(|e| ApiError::internal(&e))?;
    std::fs::rename(&tmp.0, &path).map_err(|e| ApiError::internal(&e))?;
    // The station's older packages are no longer what the data says.
    if let Ok(list) = std::fs::read_dir(&dir) {
        for f in list.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && f.path() != path {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
    Ok(Built { path, key, file_name })
}

/// A new file beside the packages, for writing one.
fn tempfile_in(dir: &std::path::Path) -> Result<(PathBuf, std::fs::File), ApiError> {
    let name = format!(".tmp-{}", hex::encode(rand::random::<[u8; 8]>()));
    let path = dir.join(name);
    let file = std::fs::File::create_new(&path).map_err(|e| ApiError::internal(&e))?;
    Ok((path, file))
}
