//! Evidence packages of a set of stations (`docs/evidence-package.md` section 6): a district, a
//! region, the stations whose figures differ, or a list of stations. The server chooses the
//! stations ([`select`]), sums up their figures ([`summary`], the [`SetSummary`] that
//! `summary.json`, `summary.txt` and the summary PDF are made from) and streams the zip: the
//! summary first, then every station's own package, each the file its station page offers
//! (`super::build`), copied in one after the other. Memory holds a copy buffer and one small
//! record per station, never a station's package whole.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;

use actix_web::web;
use hattama_core::election::{Names, Precinct};
pub use hattama_core::package::set::{
    DifferingStation, LineDifference, Selection, SetStation, SetSummary, SummaryLine, Totals,
};
use hattama_core::package::set::{SetData, write_set};
use sha2::{Digest, Sha256};

use super::Built;
use crate::compare::{self, LineTotals};
use crate::error::ApiError;
use crate::gallery::ElectionView;
use crate::official::Figures;
use crate::startup::AppState;

/// Most stations a list may name.
pub const MAX_LISTED: usize = 10_000;

/// The path of a station's package inside a set.
pub fn station_path(p: &Precinct) -> String {
    format!("stations/{}-{}.zip", p.number, p.id)
}

/// The stations of `v` that `sel` selects, in the order of the set: by station number, then
/// precinct id. A region, district or listed station the election does not have is a 404 that
/// names it; a selection that matches no station is a 404 too.
pub fn select<'a>(v: &'a ElectionView, sel: &Selection) -> Result<Vec<&'a Precinct>, ApiError> {
    let precincts = &v.election.precincts;
    if let Some(r) = &sel.region
        && !precincts.iter().any(|p| &p.region == r)
    {
        return Err(ApiError::not_found(format!("the election has no region {r:?}")));
    }
    if let Some(d) = &sel.district
        && !precincts.iter().any(|p| &p.district == d)
    {
        return Err(ApiError::not_found(format!("the election has no district {d:?}")));
    }
    let listed: Option<HashSet<&str>> = match &sel.precincts {
        None => None,
        Some(list) => {
            if list.len() > MAX_LISTED {
                return Err(ApiError::new(
                    400,
                    "too_many_stations",
                    format!("a list may name at most {MAX_LISTED} stations; split it"),
                ));
            }
            let known: HashSet<&str> = precincts.iter().map(|p| p.id.as_str()).collect();
            if let Some(unknown) = list.iter().find(|p| !known.contains(p.as_str())) {
                return Err(ApiError::not_found(format!(
                    "the election has no station with the id {unknown:?}"
                )));
            }
            Some(list.iter().map(String::as_str).collect())
        }
    };
    let mut chosen: Vec<&Precinct> = precincts
        .iter()
        .filter(|p| {
            (!sel.differing || v.differing.contains(&p.id))
                && sel.region.as_ref().is_none_or(|r| &p.region == r)
                && sel.district.as_ref().is_none_or(|d| &p.district == d)
                && listed.as_ref().is_none_or(|l| l.contains(p.id.as_str()))
        })
        .collect();
    if chosen.is_empty() {
        return Err(ApiError::new(
            404,
            "no_stations",
            "no station matches this selection (no station of it differs, or the region and \
             district do not go together); choose another",
        ));
    }
    chosen.sort_by(|a, b| a.number.cmp(&b.number).then_with(|| a.id.cmp(&b.id)));
    Ok(chosen)
}

/// The selection in words, in the three languages.
pub fn describe(sel: &Selection) -> Names {
    let mut kk = String::from(if sel.differing {
        "Сандары ресми нәтижеден өзгеше учаскелер"
    } else {
        "Барлық учаскелер"
    });
    let mut ru = String::from(if sel.differing {
        "Участки, где цифры расходятся с официальными"
    } else {
        "Все участки"
    });
    let mut en =
        String::from(if sel.differing { "Stations whose figures differ" } else { "All stations" });
    if let Some(r) = &sel.region {
        kk.push_str(&format!(", өңір: {r}"));
        ru.push_str(&format!(", регион: {r}"));
        en.push_str(&format!(", region {r}"));
    }
    if let Some(d) = &sel.district {
        kk.push_str(&format!(", аудан: {d}"));
        ru.push_str(&format!(", район: {d}"));
        en.push_str(&format!(", district {d}"));
    }
    if let Some(list) = &sel.precincts {
        let n = list.len();
        kk.push_str(&format!(", тізімдегі {n} учаске"));
        ru.push_str(&format!(", из списка ({n})"));
        en.push_str(&format!(", of a list of {n}"));
    }
    Names { kk, ru, en }
}

fn totals(t: &LineTotals) -> Totals {
    Totals {
        observed_both: t.observed_both,
        official_both: t.official_both,
        both_stations: t.both_precincts,
        observed_all: t.observed_all,
        observed_stations: t.observed_precincts,
        official_all: t.official_all,
        official_stations: t.official_precincts,
    }
}

/// The summary of the set of `stations` (as [`select`] gave them): the comparison of the
/// gallery computed over these stations only (`compare::compare`), beside the election's.
pub fn summary(v: &ElectionView, sel: &Selection, stations: &[&Precinct]) -> SetSummary {
    let ids: HashSet<&str> = stations.iter().map(|p| p.id.as_str()).collect();
    let only = |f: &Figures| -> Figures {
        f.iter()
            .filter(|(p, _)| ids.contains(p.as_str()))
            .map(|(p, x)| (p.clone(), x.clone()))
            .collect()
    };
    let (observed, official) = (only(&v.observed), only(&v.official));
    let c = compare::compare(&v.election.protocol, &observed, &official);
    let by_id: HashMap<&str, &Precinct> = stations.iter().map(|p| (p.id.as_str(), *p)).collect();
    let lines = v
        .election
        .protocol
        .lines
        .iter()
        .map(|l| SummaryLine {
            line: l.id.clone(),
            kind: l.kind,
            names: l.names.clone(),
            set: c.line(&l.id).map(totals).unwrap_or_default(),
            election: v.comparison.line(&l.id).map(totals).unwrap_or_default(),
        })
        .collect();
    let differing: Vec<DifferingStation> = c
        .differences
        .iter()
        .filter_map(|d| {
            let p = by_id.get(d.precinct.as_str())?;
            Some(DifferingStation {
                precinct: p.id.clone(),
                number: p.number,
                region: p.region.clone(),
                district: p.district.clone(),
                address: p.address.clone(),
                size: d.size,
                lines: d
                    .lines
                    .iter()
                    .map(|l| LineDifference {
                        line: l.line.clone(),
                        observed: l.observed,
                        official: l.official,
                        difference: l.observed as i64 - l.official as i64,
                    })
                    .collect(),
                path: station_path(p),
            })
        })
        .collect();
    SetSummary {
        election: v.election.id.clone(),
        election_names: v.election.names.clone(),
        selection: sel.clone(),
        description: describe(sel),
        official_version: v.official_versions.last().map(|x| x.version),
        election_stations: v.election.precincts.len() as u64,
        stations: stations.len() as u64,
        observed_stations: c.observed_precincts,
        official_stations: c.official_precincts,
        both_stations: c.both_precincts,
        differing_stations: differing.len() as u64,
        lines,
        differing,
        packages: stations
            .iter()
            .map(|p| SetStation {
                precinct: p.id.clone(),
                number: p.number,
                region: p.region.clone(),
                district: p.district.clone(),
                address: p.address.clone(),
                path: station_path(p),
            })
            .collect(),
    }
}

/// A number with its thousands grouped by no-break spaces (`69 669`), as Kazakh and Russian
/// write them.
fn num(n: impl std::fmt::Display) -> String {
    let s = n.to_string();
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::from(sign);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{A0}');
        }
        out.push(c);
    }
    out
}

fn signed(n: i64) -> String {
    if n > 0 { format!("+{}", num(n)) } else { num(n) }
}

/// `summary.txt`: the summary in Kazakh, then in Russian, as plain text a lawyer can read or
/// quote; the same figures as `summary.json`.
pub fn summary_text(s: &SetSummary) -> String {
    struct Words {
        title: &'static str,
        election: &'static str,
        stations: &'static str,
        of_election: &'static str,
        differing: &'static str,
        version: &'static str,
        none: &'static str,
        observed: &'static str,
        official_same: &'static str,
        difference: &'static str,
        official_set: &'static str,
        official_all: &'static str,
        observed_all: &'static str,
        table: &'static str,
        no_table: &'static str,
        station: &'static str,
        total_difference: &'static str,
        line: &'static str,
        package: &'static str,
    }
    let kk = Words {
        title: "ДӘЛЕЛДЕР ПАКЕТІ",
        election: "Сайлау",
        stations: "Осы пакеттегі учаскелер",
        of_election: "сайлаудағы барлық учаскелер",
        differing: "Сандары ресми нәтижеден өзгеше учаскелер",
        version: "Ресми нәтиженің нұсқасы",
        none: "жоқ",
        observed: "Байқаушылардың хаттама суреттері бойынша",
        official_same: "Ресми, сол учаскелер бойынша",
        difference: "Айырма (бірдей учаскелер, суретте минус ресми)",
        official_set: "Ресми, осы пакеттің барлық учаскелері бойынша",
        official_all: "Ресми, сайлаудың барлық учаскелері бойынша",
        observed_all: "Байқаушылар, сайлаудың барлық учаскелері бойынша",
        table: "Сандары өзгеше учаскелер, айырмасы үлкенінен бастап",
        no_table: "Сандары өзгеше учаске жоқ.",
        station: "Учаске №",
        total_difference: "жалпы айырма",
        line: "суретте {o}, ресми {x}, айырма {d}",
        package: "пакеті",
    };
    let ru = Words {
        title: "ПАКЕТ ДОКАЗАТЕЛЬСТВ",
        election: "Выборы",
        stations: "Участков в этом пакете",
        of_election: "всего участков на выборах",
        differing: "Участков, где цифры расходятся с официальными",
        version: "Версия официальных итогов",
        none: "нет",
        observed: "По снимкам протоколов наблюдателей",
        official_same: "Официально, на тех же участках",
        difference: "Разница (те же участки, на снимке минус официально)",
        official_set: "Официально, по всем участкам этого пакета",
        official_all: "Официально, по всем участкам выборов",
        observed_all: "Наблюдатели, по всем участкам выборов",
        table: "Участки, где цифры расходятся, начиная с наибольшей разницы",
        no_table: "Участков с расхождениями нет.",
        station: "Участок №",
        total_difference: "общая разница",
        line: "на снимке {o}, официально {x}, разница {d}",
        package: "пакет",
    };
    let mut out = String::new();
    for (w, names, description, lang) in [
        (&kk, &s.election_names.kk, &s.description.kk, "kk"),
        (&ru, &s.election_names.ru, &s.description.ru, "ru"),
    ] {
        let pick = |n: &Names| if lang == "kk" { n.kk.clone() } else { n.ru.clone() };
        out.push_str(&format!("{}: {description}\n", w.title));
        out.push_str(&format!("{}: {names} ({})\n", w.election, s.election));
        out.push_str(&format!(
            "{}: {} ({}: {})\n",
            w.stations,
            num(s.stations),
            w.of_election,
            num(s.election_stations)
        ));
        out.push_str(&format!("{}: {}\n", w.differing, num(s.differing_stations)));
        let version = s.official_version.map_or(w.none.to_owned(), |v| v.to_string());
        out.push_str(&format!("{}: {version}\n\n", w.version));
        for l in &s.lines {
            let (t, e) = (&l.set, &l.election);
            out.push_str(&format!("{} {}\n", l.line, pick(&l.names)));
            let mut row = |label: &str, value: String, stations: u64| {
                out.push_str(&format!("  {label} ({}): {value}\n", num(stations)));
            };
            row(w.observed, num(t.observed_all), t.observed_stations);
            row(w.official_same, num(t.official_both), t.both_stations);
            row(w.difference, signed(t.difference_both()), t.both_stations);
            row(w.official_set, num(t.official_all), t.official_stations);
            row(w.official_all, num(e.official_all), e.official_stations);
            row(w.observed_all, num(e.observed_all), e.observed_stations);
        }
        out.push('\n');
        if s.differing.is_empty() {
            out.push_str(w.no_table);
            out.push('\n');
        } else {
            out.push_str(&format!("{}:\n", w.table));
        }
        for d in &s.differing {
            out.push_str(&format!(
                "{}{}, {}, {}, {}: {} {} ({} {})\n",
                w.station,
                d.number,
                d.region,
                d.district,
                d.address,
                w.total_difference,
                num(d.size),
                w.package,
                d.path
            ));
            for x in &d.lines {
                let name = s.line(&x.line).map(|l| pick(&l.names)).unwrap_or_default();
                let figures = w
                    .line
                    .replace("{o}", &num(x.observed))
                    .replace("{x}", &num(x.official))
                    .replace("{d}", &signed(x.difference));
                out.push_str(&format!("  {} {name}: {figures}\n", x.line));
            }
        }
        out.push_str("\n\n");
    }
    out
}

/// Set packages being made or sent at once, at most: each holds a thread and reads every
/// station's package from disk, so a crowd of requests waits its turn (`503 busy`) instead of
/// exhausting the server. Per client, set packages count against the evidence downloads' limit.
pub const SET_SLOTS: usize = 4;

/// The app's slots for set packages ([`SET_SLOTS`]).
#[derive(Clone)]
pub struct SetSlots(Arc<tokio::sync::Semaphore>);

impl Default for SetSlots {
    fn default() -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new(SET_SLOTS)))
    }
}

impl SetSlots {
    /// A slot, or `503 busy` when every one is taken.
    pub fn take(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.0.clone().try_acquire_owned().map_err(|_| {
            let mut e = ApiError::new(
                503,
                "busy",
                "other packages of sets of stations are being made right now; try again in a \
                 minute (a single station's package is always available from its page)",
            );
            e.retry_after = Some(30);
            e
        })
    }
}

/// A set ready to be streamed: its summary and documents, each station's package file, and the
/// entity tag.
#[derive(Debug)]
pub struct Prepared {
    /// `summary.json`'s figures.
    pub summary: SetSummary,
    /// `summary.txt`.
    pub summary_text: String,
    /// `summary.pdf`, when the server makes one.
    pub summary_pdf: Option<Vec<u8>>,
    /// Each station's package as `super::build` wrote it, in the order of `summary.packages`.
    pub stations: Vec<Built>,
    /// The SHA-256 of everything the set is made from, hex: the entity tag.
    pub key: String,
    /// The name it is saved as.
    pub file_name: String,
}

/// The name a set is saved as: the election and the selection in plain ASCII.
fn file_name(election: &str, sel: &Selection) -> String {
    let mut name = String::from(election);
    if sel.differing {
        name.push_str("-differing");
    }
    for part in [&sel.region, &sel.district].into_iter().flatten() {
        let ascii: String = part
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
            .collect();
        let ascii = ascii.split('-').filter(|s| !s.is_empty()).collect::<Vec<_>>().join("-");
        if !ascii.is_empty() {
            name.push('-');
            name.push_str(&ascii);
        }
    }
    if let Some(list) = &sel.precincts {
        name.push_str(&format!("-{}-stations", list.len()));
    }
    format!("{name}-evidence.zip")
}

/// Chooses the stations, sums them up and makes sure every station's package is written (each
/// is kept, `super::build`); memory holds one station's data at a time. Blocking.
pub fn prepare(
    state: &AppState,
    v: &ElectionView,
    sel: &Selection,
    base: &str,
) -> Result<Prepared, ApiError> {
    let stations = select(v, sel)?;
    let summary = summary(v, sel, &stations);
    let summary_text = summary_text(&summary);
    let summary_pdf = summary_pdf(state, v, &summary);
    let mut key = Sha256::new();
    let json = serde_json::to_vec(&summary).map_err(|e| ApiError::internal(&e))?;
    for part in [
        hattama_core::package::set::SET_FORMAT.as_bytes(),
        json.as_slice(),
        summary_text.as_bytes(),
    ] {
        key.update((part.len() as u64).to_be_bytes());
        key.update(part);
    }
    key.update(summary_pdf.as_ref().map(|p| Sha256::digest(p).to_vec()).unwrap_or_default());
    let mut built = Vec::with_capacity(stations.len());
    for p in &stations {
        let b = super::build(state, v, &p.id, base)?;
        key.update(b.key.as_bytes());
        built.push(b);
    }
    Ok(Prepared {
        file_name: file_name(&v.election.id, sel),
        key: hex::encode(key.finalize()),
        summary,
        summary_text,
        summary_pdf,
        stations: built,
    })
}

/// The summary PDF, when the report's fonts are there (otherwise the set has none, and the
/// error is logged). Its date is the newest time of the election's data it sums up.
fn summary_pdf(state: &AppState, v: &ElectionView, summary: &SetSummary) -> Option<Vec<u8>> {
    let fonts = super::Fonts::load(&state.settings.report_fonts)
        .inspect_err(|e| tracing::error!(error = %e, "the set is made without its summary PDF"))
        .ok()?;
    let newest = v.official_versions.iter().map(|x| x.imported_at_ms).max().unwrap_or(0);
    let newest = v.transcriptions.values().filter_map(|t| t.verified_at_ms).fold(newest, u64::max);
    super::report::summary_pdf(&fonts, summary, newest)
        .inspect_err(|e| tracing::error!(error = %e, "the set is made without its summary PDF"))
        .ok()
}

/// A `Write` that sends what is written as chunks of at most [`CHUNK`] bytes into a bounded
/// channel (the HTTP body); a reader that went away is a broken pipe.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<web::Bytes>>,
    buf: Vec<u8>,
}

/// Bytes per chunk of a streamed set.
const CHUNK: usize = 64 * 1024;

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = web::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Writes the prepared set into `tx` on a thread of its own (holding `slot` until it ends), one
/// station's package after the other: the body of the answer. A station whose package was
/// replaced meanwhile (its data changed) ends the stream with an error, since the set's entity
/// tag no longer holds; the client sees a cut download and asks again.
pub fn stream(
    state: web::Data<AppState>,
    prepared: Prepared,
    slot: tokio::sync::OwnedSemaphorePermit,
    tx: tokio::sync::mpsc::Sender<std::io::Result<web::Bytes>>,
) -> Result<(), ApiError> {
    let spawned = std::thread::Builder::new().name("set-package".into()).spawn(move || {
        let _slot = slot;
        let data = SetData {
            receipt_key: state.keys.receipt_public(),
            log_vkey: state.log.log_key.vkey.clone(),
            summary: &prepared.summary,
            summary_text: prepared.summary_text.clone(),
            summary_pdf: prepared.summary_pdf.clone(),
        };
        let files: HashMap<&str, &Built> = prepared
            .summary
            .packages
            .iter()
            .map(|p| p.path.as_str())
            .zip(prepared.stations.iter())
            .collect();
        let mut copy = |p: &SetStation, out: &mut dyn Write| -> std::io::Result<()> {
            let built =
                files.get(p.path.as_str()).ok_or_else(|| std::io::Error::other("unknown"))?;
            let mut file = std::fs::File::open(&built.path).map_err(|e| {
                std::io::Error::other(format!("its package changed while the set was sent: {e}"))
            })?;
            std::io::copy(&mut file, out)?;
            Ok(())
        };
        let out = ChannelWriter { tx: tx.clone(), buf: Vec::with_capacity(CHUNK) };
        let written = write_set(out, &data, &mut copy, &state.keys.receipt);
        match written
            .map_err(|e| e.to_string())
            .and_then(|mut w| w.flush().map_err(|e| e.to_string()))
        {
            Ok(()) => {}
            Err(e) if e.contains("the client went away") => {
                tracing::info!(stations = prepared.stations.len(), "set package: client went away")
            }
            Err(e) => {
                tracing::warn!(error = %e, "set package cut short");
                let _ = tx.blocking_send(Err(std::io::Error::other(e)));
            }
        }
    });
    spawned.map(|_| ()).map_err(|e| ApiError::internal(&e))
}
