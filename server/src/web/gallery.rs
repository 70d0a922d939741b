//! The public gallery: elections → election overview → region → district → precinct, search,
//! the observed-vs-official comparison, the history of official figures and the open-data page.
//! No login, no cookies but the language choice, no script: light pages for weak phones, with
//! thumbnails first and the full photo on demand.
//!
//! Every page reads the cached views of [`crate::gallery`] and is itself cached per language
//! and URL until storage changes; pages carry an ETag and answer `If-None-Match` with 304. A
//! precinct's URL (`/elections/{election}/precincts/{precinct}`) is permanent.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use hattama_core::election::{LineKind, Precinct, Severity};
use hattama_core::evidence::check_id;
use serde::Deserialize;

use super::chart::{self, short_label};
use super::i18n::IntoArg;
use super::{PageCtx, WebError, percent_encode};
use crate::compare::{LineTotals, PrecinctDifference};
use crate::gallery::{Area, CaptureView, Coverage, ElectionView, Gallery, PublicState};
use crate::official::Change;
use crate::startup::AppState;
use crate::storage::review::{Transcription, TranscriptionStatus};

/// Registers the gallery's routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(crate::routes::get("/", home))
        .service(crate::routes::get("/favicon.ico", super::assets::favicon))
        .service(crate::routes::get("/elections/{election}", election))
        .service(crate::routes::get("/elections/{election}/search", search))
        .service(crate::routes::get("/elections/{election}/comparison", comparison))
        .service(crate::routes::get("/elections/{election}/official", official))
        .service(crate::routes::get("/elections/{election}/data", data))
        .service(crate::routes::get("/elections/{election}/regions/{region}", region))
        .service(crate::routes::get("/elections/{election}/regions/{region}/{district}", district))
        .service(crate::routes::get("/elections/{election}/precincts/{precinct}", precinct))
        .service(crate::routes::get("/check/{capture}", check));
}

/// A whole number with thin spaces between groups of three digits (`69 669`).
pub fn num(n: impl Into<i128>) -> String {
    let n: i128 = n.into();
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 * 3 + 1);
    if n < 0 {
        out.push('−');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202F}');
        }
        out.push(c);
    }
    out
}

/// A signed difference with its sign (`+1 234`, `−56`, `0`).
pub fn signed(n: i64) -> String {
    if n > 0 { format!("+{}", num(n)) } else { num(n) }
}

/// The Kazakh possessive locative ending of a number written in digits ("9-ында", "8-інде",
/// "2-сінде"), from the last word of the number as it is read: its vowel harmony and whether it
/// ends in a vowel.
fn kk_locative(n: i128) -> &'static str {
    const FRONT: &str = "-інде";
    const BACK: &str = "-ында";
    let n = n.unsigned_abs();
    match (n % 10, n / 10 % 10, n / 100 % 10, n / 1000 % 1000) {
        (0, 0, 0, 0) if n == 0 => FRONT,    // нөл
        (1 | 3 | 4 | 5 | 8, ..) => FRONT,   // бір, үш, төрт, бес, сегіз
        (2 | 7, ..) => "-сінде",            // екі, жеті
        (6, ..) => "-сында",                // алты
        (9, ..) => BACK,                    // тоғыз
        (0, 2, ..) => "-сында",             // жиырма
        (0, 5 | 7 | 8, ..) => FRONT,        // елу, жетпіс, сексен
        (0, 1 | 3 | 4 | 6 | 9, ..) => BACK, // он, отыз, қырық, алпыс, тоқсан
        (0, 0, 1..=9, _) => FRONT,          // жүз
        _ => BACK,                          // мың, миллион
    }
}

/// A time in ms since the epoch as `YYYY-MM-DD HH:MM` at a UTC offset, with the offset.
pub fn when(ms: u64, offset_min: i32) -> String {
    let secs = (ms / 1000) as i64 + i64::from(offset_min) * 60;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let sign = if offset_min < 0 { '−' } else { '+' };
    let off = offset_min.unsigned_abs();
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} (UTC{sign}{:02}:{:02})",
        rem / 3600,
        rem % 3600 / 60,
        off / 60,
        off % 60
    )
}

/// Howard Hinnant's days-to-civil: the proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

/// The URL of an election page.
pub fn election_url(e: &str) -> String {
    format!("/elections/{e}")
}

/// The permanent URL of a precinct page.
pub fn precinct_url(e: &str, p: &str) -> String {
    format!("/elections/{e}/precincts/{p}")
}

fn region_url(e: &str, region: &str) -> String {
    format!("/elections/{e}/regions/{}", percent_encode(region))
}

fn district_url(e: &str, region: &str, district: &str) -> String {
    format!("/elections/{e}/regions/{}/{}", percent_encode(region), percent_encode(district))
}

/// Renders a page through the gallery's response cache (per language and URL).
async fn page(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    render: impl FnOnce(&Gallery, PageCtx) -> Result<String, WebError> + Send + 'static,
) -> Result<HttpResponse, WebError> {
    page_keyed(req, state, "", render).await
}

/// [`page`], cached also under `extra` (what the page shows besides the database, such as the
/// witnessed size, which changes without a commit).
async fn page_keyed(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    extra: &str,
    render: impl FnOnce(&Gallery, PageCtx) -> Result<String, WebError> + Send + 'static,
) -> Result<HttpResponse, WebError> {
    let ctx = PageCtx::new(req);
    let key = format!("html:{}:{}{extra}", ctx.lang.code(), ctx.here);
    let gallery = state.gallery.clone();
    let cached = web::block(move || {
        gallery.cached::<WebError>(&key, || {
            Ok(("text/html; charset=utf-8", render(&gallery, ctx)?.into_bytes()))
        })
    })
    .await??;
    let mut r = crate::routes::public::respond(req, &cached);
    r.headers_mut()
        .insert(header::VARY, header::HeaderValue::from_static("Cookie, Accept-Language"));
    Ok(r)
}

fn valid(s: &str) -> Result<(), WebError> {
    check_id("id", s).map_err(|_| WebError::NotFound)
}

fn view(g: &Gallery, e: &str) -> Result<Arc<ElectionView>, WebError> {
    g.election(e)?.ok_or(WebError::NotFound)
}

fn render(t: &impl Template) -> Result<String, WebError> {
    t.render().map_err(|e| WebError::internal(&e))
}

/// A bar of the coverage chart.
pub struct Bar {
    /// Label, shortened to fit the chart's width (the table under it has the full name).
    pub label: String,
    /// The full name, when the label is shortened.
    pub full: Option<String>,
    /// Link (none for the bar of all stations).
    pub url: Option<String>,
    /// Coverage counts.
    pub coverage: Coverage,
    /// Stations with an accepted photo, in per cent of all, as people write it (`62 %`).
    pub accepted_pct: String,
    /// Width of the accepted bar, in chart units (0..=300).
    pub accepted_w: u32,
    /// Width of the photographed bar.
    pub photographed_w: u32,
    /// Top of this bar's row.
    pub y: u32,
}

/// The coverage chart: a row for all stations, then one per area, each with two bars
/// (photographed, accepted). Drawn 300 units wide, about the width of a phone in CSS pixels, so
/// that its labels are read at their size on a 320 px screen.
pub struct Chart {
    /// Rows: all stations first, then the areas.
    pub bars: Vec<Bar>,
    /// Total height.
    pub height: u32,
}

/// `name` without the name of the area it lies in, when it starts with it ("Turkistan Region,
/// district 1" in Turkistan Region: "district 1"); the page already says where it is.
fn within<'a>(name: &'a str, parent: Option<&str>) -> &'a str {
    parent
        .and_then(|p| name.strip_prefix(p))
        .map(|rest| rest.trim_start_matches([',', ' ', '-', '—']))
        .filter(|rest| !rest.is_empty())
        .unwrap_or(name)
}

fn chart(
    all: (&str, &Coverage),
    areas: &[Area],
    parent: Option<&str>,
    url: impl Fn(&str) -> String,
) -> Chart {
    let rows = std::iter::once((all.0, all.1, None))
        .chain(areas.iter().map(|a| (a.name.as_str(), &a.coverage, Some(url(&a.name)))));
    let bars: Vec<Bar> = rows
        .enumerate()
        .map(|(i, (name, c, url))| {
            let label = if url.is_some() { within(name, parent) } else { name };
            let short = label != name || label.chars().count() > chart::LABEL;
            Bar {
                label: short_label(label, chart::LABEL),
                full: short.then(|| name.to_owned()),
                url,
                accepted_pct: chart::percent(c.accepted, c.precincts),
                accepted_w: (c.accepted_pct() * 3.0).round() as u32,
                photographed_w: (c.photographed_pct() * 3.0).round() as u32,
                coverage: c.clone(),
                y: i as u32 * 44,
            }
        })
        .collect();
    Chart { height: bars.len() as u32 * 44 + 4, bars }
}

// ---------------------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "gallery/home.html")]
struct HomePage {
    ctx: PageCtx,
    elections: Vec<(String, String, Coverage)>,
}

async fn home(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, WebError> {
    page(&req, &state, |g, ctx| {
        let mut elections = Vec::new();
        for e in g.elections()?.iter() {
            if let Some(v) = g.election(&e.id)? {
                elections.push((
                    e.id.clone(),
                    ctx.lang.pick(&e.names).to_owned(),
                    v.coverage.clone(),
                ));
            }
        }
        render(&HomePage { ctx, elections })
    })
    .await
}

#[derive(Template)]
#[template(path = "gallery/election.html")]
struct ElectionPage {
    ctx: PageCtx,
    id: String,
    name: String,
    coverage: Coverage,
    chart: Chart,
    versions: usize,
    changes: usize,
    broken: usize,
}

async fn election(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let e = path.into_inner();
    valid(&e)?;
    page(&req, &state, move |g, ctx| {
        let v = view(g, &e)?;
        render(&ElectionPage {
            name: ctx.lang.pick(&v.election.names).to_owned(),
            coverage: v.coverage.clone(),
            chart: chart((&ctx.t("g-chart-all"), &v.coverage), &v.regions, None, |r| {
                region_url(&e, r)
            }),
            versions: v.official_versions.len(),
            changes: v.official_changes.len(),
            broken: v.comparison.broken_official.len(),
            id: e,
            ctx,
        })
    })
    .await
}

/// A row of a precinct list.
pub struct PrecinctRow {
    /// Precinct.
    pub precinct: Precinct,
    /// Its page.
    pub url: String,
    /// Public photos.
    pub captures: u64,
    /// Accepted photos.
    pub accepted: u64,
    /// Transcription state.
    pub transcription: Option<TranscriptionStatus>,
    /// Observed and official differ.
    pub differs: bool,
    /// Official figures exist.
    pub official: bool,
}

fn rows<'a>(v: &ElectionView, list: impl IntoIterator<Item = &'a Precinct>) -> Vec<PrecinctRow> {
    list.into_iter()
        .map(|p| {
            let f = v.precincts.get(&p.id).cloned().unwrap_or_default();
            PrecinctRow {
                url: precinct_url(&v.election.id, &p.id),
                captures: f.captures,
                accepted: f.accepted,
                transcription: v.transcriptions.get(&p.id).map(|t| t.status),
                differs: v.differing.contains(&p.id),
                official: v.official.contains_key(&p.id),
                precinct: p.clone(),
            }
        })
        .collect()
}

#[derive(Template)]
#[template(path = "gallery/region.html")]
struct RegionPage {
    ctx: PageCtx,
    id: String,
    name: String,
    region: String,
    coverage: Coverage,
    chart: Chart,
}

async fn region(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let (e, region) = path.into_inner();
    valid(&e)?;
    page(&req, &state, move |g, ctx| {
        let v = view(g, &e)?;
        let coverage = v
            .regions
            .iter()
            .find(|a| a.name == region)
            .map(|a| a.coverage.clone())
            .ok_or(WebError::NotFound)?;
        let districts = v.districts.get(&region).map(Vec::as_slice).unwrap_or_default();
        render(&RegionPage {
            name: ctx.lang.pick(&v.election.names).to_owned(),
            chart: chart(
                (&ctx.t("g-chart-all-region"), &coverage),
                districts,
                Some(&region),
                |d| district_url(&e, &region, d),
            ),
            coverage,
            region,
            id: e,
            ctx,
        })
    })
    .await
}

#[derive(Template)]
#[template(path = "gallery/district.html")]
struct DistrictPage {
    ctx: PageCtx,
    id: String,
    name: String,
    region: String,
    region_url: String,
    district: String,
    coverage: Coverage,
    rows: Vec<PrecinctRow>,
}

async fn district(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let (e, region, district) = path.into_inner();
    valid(&e)?;
    page(&req, &state, move |g, ctx| {
        let v = view(g, &e)?;
        let coverage = v
            .districts
            .get(&region)
            .and_then(|d| d.iter().find(|a| a.name == district))
            .map(|a| a.coverage.clone())
            .ok_or(WebError::NotFound)?;
        let mut list: Vec<&Precinct> = v
            .election
            .precincts
            .iter()
            .filter(|p| p.region == region && p.district == district)
            .collect();
        list.sort_by_key(|p| p.number);
        render(&DistrictPage {
            name: ctx.lang.pick(&v.election.names).to_owned(),
            region_url: region_url(&e, &region),
            rows: rows(&v, list),
            coverage,
            region,
            district,
            id: e,
            ctx,
        })
    })
    .await
}

/// The search form's query.
#[derive(Deserialize)]
pub struct SearchQuery {
    /// A precinct number or words of its address.
    #[serde(default)]
    q: String,
}

#[derive(Template)]
#[template(path = "gallery/search.html")]
struct SearchPage {
    ctx: PageCtx,
    id: String,
    name: String,
    q: String,
    rows: Vec<PrecinctRow>,
    /// How many matched in all (more than shown when over the limit).
    total: usize,
}

/// Most search results shown.
const SEARCH_LIMIT: usize = 100;

async fn search(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<SearchQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let e = path.into_inner();
    valid(&e)?;
    let q: String = query.into_inner().q.chars().take(200).collect();
    page(&req, &state, move |g, ctx| {
        let v = view(g, &e)?;
        let (hits, total) = v.search_counted(&q, SEARCH_LIMIT);
        render(&SearchPage {
            name: ctx.lang.pick(&v.election.names).to_owned(),
            total,
            rows: rows(&v, hits),
            q,
            id: e,
            ctx,
        })
    })
    .await
}

/// One line of a precinct's figures table.
pub struct FigureRow {
    /// Line id.
    pub id: String,
    /// Its name in the page's language.
    pub name: String,
    /// A candidate or against-all line (a vote count).
    pub vote: bool,
    /// Verified observed value.
    pub observed: Option<u64>,
    /// Official value.
    pub official: Option<u64>,
    /// Both exist and differ.
    pub differs: bool,
    /// `observed - official` when both exist.
    pub difference: Option<i64>,
}

/// A broken control relation, for display.
pub struct Broken {
    /// The relation's name in the page's language.
    pub name: String,
    /// Hard or soft.
    pub hard: bool,
    /// Left sum.
    pub left: u64,
    /// Right sum.
    pub right: u64,
}

#[derive(Template)]
#[template(path = "gallery/precinct.html")]
struct PrecinctPage {
    ctx: PageCtx,
    id: String,
    name: String,
    precinct: Precinct,
    region_url: String,
    district_url: String,
    captures: Vec<CaptureView>,
    transcription: Option<Transcription>,
    figures: Vec<FigureRow>,
    official_version: Option<u64>,
    differs: bool,
    broken_official: Vec<Broken>,
    changes: Vec<Change>,
    line_names: BTreeMap<String, String>,
    /// Verified figures exist, but no accepted photo stands behind them.
    observed_without_photo: bool,
    /// The election's UTC offset, in which every time of the page is shown.
    tz: i32,
    /// The site's address (`public_url`, else the request's), for the page's full address.
    base: String,
    /// Some figure was observed: without any, the observed and difference columns are left out.
    has_observed: bool,
    /// With a witness policy: the newest checkpoint with a quorum of cosignatures, if any.
    witnessed: Option<Option<crate::witnessing::PublicWitnessed>>,
}

/// The site's address as readers reach it: `public_url`, else the request's scheme and host.
pub fn site_base(req: &HttpRequest, state: &AppState) -> String {
    let base = state.settings.public_url.clone().unwrap_or_else(|| {
        let info = req.connection_info();
        format!("{}://{}", info.scheme(), info.host())
    });
    base.trim_end_matches('/').to_owned()
}

async fn precinct(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let (e, p) = path.into_inner();
    valid(&e)?;
    valid(&p)?;
    let base = site_base(&req, &state);
    let witnessed = state
        .witness_policy
        .as_ref()
        .map(|policy| crate::witnessing::public_witnessed(&state.log, policy));
    let extra = match &witnessed {
        Some(Some(w)) => format!(":w{}:{}", w.size, w.cosignatures.len()),
        _ => String::new(),
    };
    page_keyed(&req, &state, &extra, move |g, ctx| {
        let v = view(g, &e)?;
        let precinct = v.election.precinct(&p).cloned().ok_or(WebError::NotFound)?;
        let captures = g.captures(&v, &p)?;
        let transcription = v.transcriptions.get(&p).cloned();
        let observed = v.observed.get(&p);
        let official = v.official.get(&p);
        let figures: Vec<FigureRow> = v
            .election
            .protocol
            .lines
            .iter()
            .map(|l| {
                let o = observed.and_then(|f| f.get(&l.id)).copied();
                let f = official.and_then(|f| f.get(&l.id)).copied();
                let difference = o.zip(f).map(|(o, f)| o as i64 - f as i64);
                FigureRow {
                    id: l.id.clone(),
                    name: ctx.lang.pick(&l.names).to_owned(),
                    vote: matches!(l.kind, LineKind::Candidate | LineKind::AgainstAll),
                    observed: o,
                    official: f,
                    differs: difference.is_some_and(|d| d != 0),
                    difference,
                }
            })
            .collect();
        let broken_official = v
            .comparison
            .broken_official
            .iter()
            .find(|b| b.precinct == p)
            .map(|b| {
                b.violations
                    .iter()
                    .map(|x| Broken {
                        name: v
                            .election
                            .protocol
                            .relations
                            .iter()
                            .find(|r| r.id == x.relation)
                            .map_or(x.relation.clone(), |r| ctx.lang.pick(&r.names).to_owned()),
                        hard: x.severity == Severity::Hard,
                        left: x.left,
                        right: x.right,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let line_names = v
            .election
            .protocol
            .lines
            .iter()
            .map(|l| (l.id.clone(), ctx.lang.pick(&l.names).to_owned()))
            .collect();
        let accepted = v.precincts.get(&p).map_or(0, |f| f.accepted);
        render(&PrecinctPage {
            witnessed,
            base,
            has_observed: figures.iter().any(|f| f.observed.is_some()),
            tz: v.election.utc_offset_min.unwrap_or(0),
            observed_without_photo: observed.is_some() && accepted == 0,
            name: ctx.lang.pick(&v.election.names).to_owned(),
            region_url: region_url(&e, &precinct.region),
            district_url: district_url(&e, &precinct.region, &precinct.district),
            differs: figures.iter().any(|f| f.differs),
            official_version: v.official_versions.last().map(|x| x.version),
            changes: v.changes_of(&p).into_iter().cloned().collect(),
            captures,
            transcription,
            figures,
            broken_official,
            line_names,
            precinct,
            id: e,
            ctx,
        })
    })
    .await
}

/// The drill-down's options.
#[derive(Deserialize)]
pub struct ComparisonQuery {
    /// Sort the differing precincts by this line's difference.
    line: Option<String>,
}

/// A line of the comparison table.
pub struct TotalsRow {
    /// The totals.
    pub totals: LineTotals,
    /// The line's name.
    pub name: String,
    /// A vote line.
    pub vote: bool,
}

/// A differing precinct of the drill-down.
pub struct DiffRow {
    /// The difference.
    pub diff: PrecinctDifference,
    /// The precinct.
    pub precinct: Precinct,
    /// Its page.
    pub url: String,
    /// The sort line's difference, when sorting by a line.
    pub line_difference: Option<i64>,
}

/// One vote line of the observed-against-official chart (like for like: the stations with both).
pub struct VoteBar {
    /// Line id and name.
    pub label: String,
    /// Observed total.
    pub observed: u64,
    /// Official total.
    pub official: u64,
    /// Observed share of all votes, `35.2 %`.
    pub observed_share: String,
    /// Official share.
    pub official_share: String,
    /// Bar widths in chart units (0..=180 of the chart's 300; the figures stand right of them).
    pub observed_w: u32,
    /// Official bar width.
    pub official_w: u32,
    /// Top of this line's row.
    pub y: u32,
}

/// Most characters of a label on a line of its own in a chart 300 units wide.
const VOTE_LABEL: usize = 36;

/// Rows of the vote chart: the vote lines' like-for-like totals, with their shares.
fn vote_chart(lines: &[TotalsRow], lang: super::Lang) -> (Vec<VoteBar>, u32) {
    let votes: Vec<&TotalsRow> = lines.iter().filter(|l| l.vote).collect();
    let sum_obs: u64 = votes.iter().map(|l| l.totals.observed_both).sum();
    let sum_off: u64 = votes.iter().map(|l| l.totals.official_both).sum();
    let max = votes
        .iter()
        .map(|l| l.totals.observed_both.max(l.totals.official_both))
        .max()
        .unwrap_or(0)
        .max(1);
    let share = |n: u64, of: u64| {
        let tenths = (n * 1000 + of / 2).checked_div(of).unwrap_or(0);
        let sep = if lang == super::Lang::En { '.' } else { ',' };
        format!("{}{sep}{}\u{a0}%", tenths / 10, tenths % 10)
    };
    let bars = votes
        .iter()
        .enumerate()
        .map(|(i, l)| VoteBar {
            label: short_label(&format!("{} {}", l.totals.line, l.name), VOTE_LABEL),
            observed: l.totals.observed_both,
            official: l.totals.official_both,
            observed_share: share(l.totals.observed_both, sum_obs),
            official_share: share(l.totals.official_both, sum_off),
            observed_w: (l.totals.observed_both * 180 / max) as u32,
            official_w: (l.totals.official_both * 180 / max) as u32,
            y: i as u32 * 64,
        })
        .collect::<Vec<_>>();
    let height = bars.len() as u32 * 64 + 4;
    (bars, height)
}

#[derive(Template)]
#[template(path = "gallery/comparison.html")]
struct ComparisonPage {
    ctx: PageCtx,
    id: String,
    name: String,
    observed_precincts: u64,
    official_precincts: u64,
    both_precincts: u64,
    total_precincts: usize,
    official_version: Option<u64>,
    lines: Vec<TotalsRow>,
    sort_line: Option<String>,
    diffs: Vec<DiffRow>,
    more: usize,
    broken: Vec<(Precinct, String, usize)>,
    /// The vote chart's rows and height.
    votes: Vec<VoteBar>,
    votes_height: u32,
    /// Line names by id, for the differing lines of each station.
    line_names: BTreeMap<String, String>,
    /// The differing stations of the election.
    differing: usize,
    /// The evidence packages of the differing stations per region, with their districts.
    set_regions: Vec<SetLink>,
}

/// A link to the evidence package of the differing stations of a region or a district.
pub struct SetLink {
    /// The region's or district's name.
    pub name: String,
    /// The package's address.
    pub url: String,
    /// Its differing stations.
    pub count: usize,
    /// A region's districts.
    pub districts: Vec<SetLink>,
}

/// The address of the evidence package of the differing stations of an election, a region or a
/// district (`docs/evidence-package.md` 6.1).
pub fn set_package_url(e: &str, region: Option<&str>, district: Option<&str>) -> String {
    let mut url = format!("/api/v1/elections/{e}/evidence-package.zip?differing=true");
    if let Some(r) = region {
        url.push_str(&format!("&region={}", percent_encode(r)));
    }
    if let Some(d) = district {
        url.push_str(&format!("&district={}", percent_encode(d)));
    }
    url
}

/// The regions with differing stations, each with its districts that have some, by name.
fn set_links(v: &crate::gallery::ElectionView) -> Vec<SetLink> {
    let e = &v.election.id;
    let mut regions: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for p in v.election.precincts.iter().filter(|p| v.differing.contains(&p.id)) {
        *regions.entry(&p.region).or_default().entry(&p.district).or_default() += 1;
    }
    regions
        .into_iter()
        .map(|(region, districts)| SetLink {
            name: region.to_owned(),
            url: set_package_url(e, Some(region), None),
            count: districts.values().sum(),
            districts: districts
                .into_iter()
                .map(|(district, count)| SetLink {
                    name: district.to_owned(),
                    url: set_package_url(e, Some(region), Some(district)),
                    count,
                    districts: Vec::new(),
                })
                .collect(),
        })
        .collect()
}

/// Most differing precincts listed on the page (the CSV export has them all).
const DRILL_LIMIT: usize = 200;

async fn comparison(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<ComparisonQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let e = path.into_inner();
    valid(&e)?;
    let sort_line = query.into_inner().line;
    page(&req, &state, move |g, ctx| {
        let v = view(g, &e)?;
        let c = &v.comparison;
        let sort_line = sort_line.filter(|l| v.election.protocol.lines.iter().any(|x| &x.id == l));
        let line_diff = |d: &PrecinctDifference, l: &str| {
            d.lines.iter().find(|x| x.line == l).map(|x| x.observed as i64 - x.official as i64)
        };
        let mut diffs: Vec<&PrecinctDifference> = match &sort_line {
            Some(l) => c.differences.iter().filter(|d| line_diff(d, l).is_some()).collect(),
            None => c.differences.iter().collect(),
        };
        if let Some(l) = &sort_line {
            diffs.sort_by_key(|d| std::cmp::Reverse(line_diff(d, l).map_or(0, i64::unsigned_abs)));
        }
        let more = diffs.len().saturating_sub(DRILL_LIMIT);
        let diffs = diffs
            .into_iter()
            .take(DRILL_LIMIT)
            .filter_map(|d| {
                let precinct = v.election.precinct(&d.precinct)?.clone();
                Some(DiffRow {
                    url: precinct_url(&e, &d.precinct),
                    line_difference: sort_line.as_deref().and_then(|l| line_diff(d, l)),
                    diff: d.clone(),
                    precinct,
                })
            })
            .collect();
        let lines: Vec<TotalsRow> = c
            .lines
            .iter()
            .filter_map(|t| {
                let l = v.election.protocol.lines.iter().find(|l| l.id == t.line)?;
                Some(TotalsRow {
                    totals: t.clone(),
                    name: ctx.lang.pick(&l.names).to_owned(),
                    vote: matches!(l.kind, LineKind::Candidate | LineKind::AgainstAll),
                })
            })
            .collect();
        let broken = c
            .broken_official
            .iter()
            .filter_map(|b| {
                let p = v.election.precinct(&b.precinct)?.clone();
                Some((p, precinct_url(&e, &b.precinct), b.violations.len()))
            })
            .collect();
        let (votes, votes_height) = vote_chart(&lines, ctx.lang);
        let line_names = lines.iter().map(|l| (l.totals.line.clone(), l.name.clone())).collect();
        render(&ComparisonPage {
            line_names,
            differing: c.differences.len(),
            set_regions: set_links(&v),
            votes,
            votes_height,
            name: ctx.lang.pick(&v.election.names).to_owned(),
            observed_precincts: c.observed_precincts,
            official_precincts: c.official_precincts,
            both_precincts: c.both_precincts,
            total_precincts: v.election.precincts.len(),
            official_version: v.official_versions.last().map(|x| x.version),
            lines,
            sort_line,
            diffs,
            more,
            broken,
            id: e,
            ctx,
        })
    })
    .await
}

#[derive(Template)]
#[template(path = "gallery/official.html")]
struct OfficialPage {
    ctx: PageCtx,
    id: String,
    name: String,
    versions: Vec<crate::official::Version>,
    /// Each change with its station (absent from the definition: none) and the station's page.
    changes: Vec<(Change, Option<Precinct>, String)>,
    more: usize,
    line_names: BTreeMap<String, String>,
    /// The election's UTC offset.
    tz: i32,
}

async fn official(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let e = path.into_inner();
    valid(&e)?;
    page(&req, &state, move |g, ctx| {
        let v = view(g, &e)?;
        let more = v.official_changes.len().saturating_sub(DRILL_LIMIT);
        render(&OfficialPage {
            tz: v.election.utc_offset_min.unwrap_or(0),
            name: ctx.lang.pick(&v.election.names).to_owned(),
            versions: v.official_versions.clone(),
            changes: v
                .official_changes
                .iter()
                .take(DRILL_LIMIT)
                .map(|c| {
                    let p = v.election.precinct(&c.precinct).cloned();
                    (c.clone(), p, precinct_url(&e, &c.precinct))
                })
                .collect(),
            more,
            line_names: v
                .election
                .protocol
                .lines
                .iter()
                .map(|l| (l.id.clone(), ctx.lang.pick(&l.names).to_owned()))
                .collect(),
            id: e,
            ctx,
        })
    })
    .await
}

#[derive(Template)]
#[template(path = "gallery/data.html")]
struct DataPage {
    ctx: PageCtx,
    id: String,
    name: String,
    log_origin: String,
    log_vkey: String,
    receipt_key: String,
    base: String,
}

async fn data(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let e = path.into_inner();
    valid(&e)?;
    let (origin, vkey) = (state.log.log_key.origin.clone(), state.log.log_key.vkey.clone());
    let receipt_key = state.keys.receipt_public().to_hex();
    let base = site_base(&req, &state);
    page(&req, &state, move |g, ctx| {
        let v = view(g, &e)?;
        render(&DataPage {
            name: ctx.lang.pick(&v.election.names).to_owned(),
            log_origin: origin,
            log_vkey: vkey,
            receipt_key,
            base,
            id: e,
            ctx,
        })
    })
    .await
}

#[derive(Template)]
#[template(path = "gallery/check.html")]
struct CheckPage {
    ctx: PageCtx,
    id: String,
    name: String,
    precinct: Precinct,
    capture: CaptureView,
    log_vkey: String,
}

/// `GET /check/{capture}`: "Check this photo yourself", linked from every photo: the reader
/// picks the downloaded photo (or pastes its address) and `static/check.js` checks it in the
/// browser against the signed manifest and the public log, with a guide for doing the same
/// with ordinary tools.
async fn check(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let capture = path.into_inner();
    let id = hattama_core::evidence::Sha256Hash::from_hex(&capture).ok_or(WebError::NotFound)?;
    let vkey = state.log.log_key.vkey.clone();
    let storage = state.storage.clone();
    let (manifest, _) =
        web::block(move || storage.evidence(&id)).await??.ok_or(WebError::NotFound)?;
    let manifest: hattama_core::evidence::Manifest =
        serde_json::from_slice(&manifest).map_err(|e| WebError::internal(&e))?;
    page(&req, &state, move |g, ctx| {
        let v = view(g, &manifest.election)?;
        let capture = g
            .captures(&v, &manifest.precinct)?
            .into_iter()
            .find(|c| c.id == id.to_hex())
            .ok_or(WebError::NotFound)?;
        let precinct =
            v.election.precinct(&manifest.precinct).cloned().ok_or(WebError::NotFound)?;
        render(&CheckPage {
            name: ctx.lang.pick(&v.election.names).to_owned(),
            id: manifest.election.clone(),
            precinct,
            capture,
            log_vkey: vkey,
            ctx,
        })
    })
    .await
}

/// Numbers that templates format (they pass values and references alike).
pub trait AsNum {
    /// The value.
    fn as_num(&self) -> i128;
}

macro_rules! as_num {
    ($($t:ty),*) => {$(
        impl AsNum for $t {
            fn as_num(&self) -> i128 {
                i128::from(*self)
            }
        }
    )*};
}
as_num!(u32, u64, i64);

impl AsNum for usize {
    fn as_num(&self) -> i128 {
        *self as i128
    }
}

impl<T: AsNum> AsNum for &T {
    fn as_num(&self) -> i128 {
        (*self).as_num()
    }
}

/// Template helpers.
impl PageCtx {
    /// "A (witness.example/w1) at 7 Dec 2026, 10:15": one witness's cosignature.
    pub fn cosigned(&self, c: &(String, String, u64), offset_min: &i32) -> String {
        let at = when(c.2.saturating_mul(1000), *offset_min);
        self.lang.t_args(
            "g-witness-cosigned",
            &[
                ("witness", c.0.clone().into_arg()),
                ("key", c.1.clone().into_arg()),
                ("time", at.into_arg()),
            ],
        )
    }

    /// "Witnessed: 2 of 3 witnesses cosigned …" for a witnessed checkpoint.
    pub fn witnessed_msg(&self, w: &crate::witnessing::PublicWitnessed) -> String {
        self.lang.t_args(
            "g-witnessed-yes",
            &[
                ("count", (w.cosignatures.len() as i64).into_arg()),
                ("total", (w.witnesses as i64).into_arg()),
                ("size", num(i128::from(w.size)).into_arg()),
            ],
        )
    }

    /// A number with thin spaces between groups of digits.
    pub fn num(&self, n: impl AsNum) -> String {
        num(n.as_num())
    }

    /// "9 of 14 stations have an accepted photo": in Kazakh "14 учаскенің 9-ында", whose
    /// locative ending follows the last word of the number as it is read.
    pub fn coverage_sentence(&self, accepted: impl AsNum, count: impl AsNum) -> String {
        let accepted = accepted.as_num();
        self.lang.t_args(
            "g-accepted-of",
            &[
                ("accepted", num(accepted).into_arg()),
                ("count", num(count.as_num()).into_arg()),
                ("suffix", kk_locative(accepted).into_arg()),
            ],
        )
    }

    /// The comparison's scope in one sentence: how many stations are compared, of how many.
    pub fn comparison_summary(
        &self,
        both: impl AsNum,
        total: impl AsNum,
        observed: impl AsNum,
        official: impl AsNum,
    ) -> String {
        self.lang.t_args(
            "g-cmp-summary",
            &[
                ("both", num(both.as_num()).into_arg()),
                ("total", num(total.as_num()).into_arg()),
                ("observed", num(observed.as_num()).into_arg()),
                ("official", num(official.as_num()).into_arg()),
            ],
        )
    }

    /// One differing line of a station: "Asanov A.: photo 142, official 163".
    pub fn line_diff(&self, name: &str, observed: impl AsNum, official: impl AsNum) -> String {
        self.lang.t_args(
            "g-cmp-line-diff",
            &[
                ("name", name.to_owned().into_arg()),
                ("observed", num(observed.as_num()).into_arg()),
                ("official", num(official.as_num()).into_arg()),
            ],
        )
    }

    /// A difference (observed − official) in words, from the official figure's side: "official:
    /// 21 more" rather than "−21", whose sign reads either way.
    pub fn diff_words(&self, n: impl AsNum) -> String {
        let n = n.as_num() as i64;
        match n.cmp(&0) {
            std::cmp::Ordering::Less => self.t1("g-diff-official-more", "n", num(-(n as i128))),
            std::cmp::Ordering::Greater => self.t1("g-diff-official-less", "n", num(n as i128)),
            std::cmp::Ordering::Equal => "0".to_owned(),
        }
    }

    /// A size in bytes, in kilobytes or megabytes with the unit in the page's language.
    pub fn size(&self, bytes: impl AsNum) -> String {
        let b = bytes.as_num();
        if b < 1_000_000 {
            self.t1("g-size-kb", "size", num((b + 999) / 1000))
        } else {
            let tenths = (b + 50_000) / 100_000;
            let sep = if self.lang == super::Lang::En { '.' } else { ',' };
            self.t1("g-size-mb", "size", format!("{}{sep}{}", tenths / 10, tenths % 10))
        }
    }

    /// "Showing the first N of M stations found" (message `g-search-some`).
    pub fn search_some(&self, shown: usize, total: &usize) -> String {
        use super::i18n::IntoArg;
        self.lang
            .t_args("g-search-some", &[("shown", shown.into_arg()), ("count", total.into_arg())])
    }

    /// A server time (UTC).
    pub fn when(&self, ms: impl AsNum) -> String {
        when(ms.as_num() as u64, 0)
    }

    /// A time at the page's UTC offset (the election's), without the offset: a page states its
    /// time zone once ([`Self::zone`]).
    pub fn at(&self, ms: impl AsNum, offset_min: &i32) -> String {
        let full = when(ms.as_num() as u64, *offset_min);
        full.split_once(" (").map_or(full.clone(), |(t, _)| t.to_owned())
    }

    /// The time zone of a page, `UTC+05:00`.
    pub fn zone(&self, offset_min: &i32) -> String {
        let sign = if *offset_min < 0 { '−' } else { '+' };
        let off = offset_min.unsigned_abs();
        format!("UTC{sign}{:02}:{:02}", off / 60, off % 60)
    }

    /// A device time at its UTC offset.
    pub fn when_at(&self, ms: impl AsNum, offset_min: &i32) -> String {
        when(ms.as_num() as u64, *offset_min)
    }

    /// The message id of a public review state.
    pub fn state_msg(&self, s: &PublicState) -> String {
        self.t(match s {
            PublicState::Pending => "g-state-pending",
            PublicState::Accepted => "g-state-accepted",
            PublicState::Flagged => "g-state-flagged",
            PublicState::Rejected => "g-state-rejected",
        })
    }

    /// The message of a transcription state.
    pub fn tr_msg(&self, s: &TranscriptionStatus) -> String {
        self.t(match s {
            TranscriptionStatus::Pending => "g-tr-pending",
            TranscriptionStatus::Disputed => "g-tr-disputed",
            TranscriptionStatus::Verified => "g-tr-verified",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_times_read_well() {
        assert_eq!(num(0u64), "0");
        assert_eq!(num(69_669u64), "69\u{202F}669");
        assert_eq!(num(1_234_567u64), "1\u{202F}234\u{202F}567");
        assert_eq!(num(-50_366i64), "−50\u{202F}366");
        assert_eq!(signed(19_303), "+19\u{202F}303");
        assert_eq!(signed(-5), "−5");
        assert_eq!(within("Turkistan Region, district 1", Some("Turkistan Region")), "district 1");
        assert_eq!(within("Turkistan Region", Some("Turkistan Region")), "Turkistan Region");
        assert_eq!(within("Shymkent", Some("Turkistan Region")), "Shymkent");
        for (n, ending) in [
            (0, "-інде"),
            (1, "-інде"),
            (2, "-сінде"),
            (6, "-сында"),
            (9, "-ында"),
            (10, "-ында"),
            (14, "-інде"),
            (20, "-сында"),
            (50, "-інде"),
            (100, "-інде"),
            (1000, "-ында"),
            (2_000_000, "-ында"),
        ] {
            assert_eq!(kk_locative(n), ending, "{n}");
        }
        assert_eq!(when(0, 0), "1970-01-01 00:00 (UTC+00:00)");
        // 2026-12-04 15:00 UTC at UTC+5.
        assert_eq!(when(1_796_396_400_000, 300), "2026-12-04 20:00 (UTC+05:00)");
        assert_eq!(when(1_709_164_800_000, -90), "2024-02-28 22:30 (UTC−01:30)");
    }
}
