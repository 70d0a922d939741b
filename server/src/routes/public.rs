//! The public JSON API and the open-data exports (`docs/open-data.md`, described by the OpenAPI
//! document at `/api/v1/openapi.json`). Everything here reads the gallery's views
//! (`crate::gallery`), so the API, the exports and the public pages always agree. Responses
//! carry an ETag and answer `If-None-Match` with 304.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use hattama_core::evidence::check_id;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::gallery::{Cached, ElectionView, Gallery};
use crate::official;
use crate::startup::AppState;

/// The OpenAPI document.
const OPENAPI: &str = include_str!("../../openapi.json");

/// Registers the public API.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(crate::routes::get("/api/v1/openapi.json", openapi))
        .service(crate::routes::get("/api/v1/elections", elections))
        .service(crate::routes::get("/api/v1/elections/{election}", election))
        .service(crate::routes::get("/api/v1/elections/{election}/precincts", precincts))
        .service(crate::routes::get("/api/v1/elections/{election}/precincts/{precinct}", precinct))
        .service(crate::routes::get(
            "/api/v1/elections/{election}/precincts/{precinct}/evidence-package.zip",
            evidence_package,
        ))
        .service(crate::routes::get(
            "/api/v1/elections/{election}/evidence-package.zip",
            set_package,
        ))
        .service(crate::routes::get("/api/v1/elections/{election}/comparison", comparison))
        .service(crate::routes::get("/api/v1/elections/{election}/official", official_versions))
        .service(crate::routes::get("/api/v1/elections/{election}/export/{file}", export));
}

/// Answers a cached body, or 304 when the client has it.
pub fn respond(req: &HttpRequest, cached: &Cached) -> HttpResponse {
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == cached.etag || t.trim() == "*"));
    let mut r = if fresh { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    r.insert_header((header::ETAG, cached.etag.clone()))
        .insert_header((header::CACHE_CONTROL, "public, no-cache"));
    if fresh { r.finish() } else { r.content_type(cached.content_type).body(cached.body.clone()) }
}

fn json_body(value: &impl Serialize) -> Result<(&'static str, Vec<u8>), ApiError> {
    let body = serde_json::to_vec(value).map_err(|e| ApiError::internal(&e))?;
    Ok(("application/json", body))
}

/// A path id checked like every id of the evidence format (no traversal, bounded).
fn id(kind: &'static str, s: &str) -> Result<(), ApiError> {
    check_id(kind, s).map_err(|_| ApiError::bad_id(&format!("the {kind} id")))
}

/// The view of a path's election, 404 if unknown.
pub fn view_of(gallery: &Gallery, election: &str) -> Result<Arc<ElectionView>, ApiError> {
    id("election", election)?;
    gallery.election(election)?.ok_or_else(|| ApiError::not_found("no such election"))
}

/// Runs blocking gallery work off the async threads.
async fn cached(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    key: String,
    make: impl FnOnce(&Gallery) -> Result<(&'static str, Vec<u8>), ApiError> + Send + 'static,
) -> Result<HttpResponse, ApiError> {
    let gallery = state.gallery.clone();
    let c = web::block(move || gallery.cached(&key, || make(&gallery))).await??;
    Ok(respond(req, &c))
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "public, no-cache"))
        .body(OPENAPI)
}

/// `GET /api/v1/elections`.
async fn elections(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    cached(&req, &state, "api:elections".into(), |g| {
        let mut list = Vec::new();
        for e in g.elections()?.iter() {
            if let Some(v) = g.election(&e.id)? {
                list.push(json!({ "id": e.id, "names": e.names, "coverage": v.coverage }));
            }
        }
        json_body(&list)
    })
    .await
}

/// A cached JSON answer made from one election's view by `make`, under the cache key `name`.
async fn of_election(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    name: &'static str,
    make: fn(&ElectionView) -> Value,
) -> Result<HttpResponse, ApiError> {
    let e = path.into_inner();
    id("election", &e)?;
    cached(&req, &state, format!("api:{name}:{e}"), move |g| json_body(&make(&*view_of(g, &e)?)))
        .await
}

/// `GET /api/v1/elections/{election}`.
async fn election(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    of_election(req, path, state, "election", |v| {
        json!({
            "id": v.election.id,
            "names": v.election.names,
            "count_time_ms": v.election.count_time_ms,
            "coverage": v.coverage,
            "regions": v.regions,
            "districts": v.districts,
            "protocol": v.election.protocol,
            "official_versions": v.official_versions,
        })
    })
    .await
}

/// Every item of `items` that names a station by its id (`precinct`) with the station's number
/// and region as well, as people name it: an internal id alone tells a reader nothing.
fn named<T: Serialize>(v: &ElectionView, items: &[T]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|x| name_station(v, serde_json::to_value(x).unwrap_or_default()))
            .collect(),
    )
}

/// `item` with its station's `number` and `region` beside its `precinct` id.
fn name_station(v: &ElectionView, mut item: Value) -> Value {
    let p = item.get("precinct").and_then(Value::as_str).and_then(|id| v.election.precinct(id));
    if let (Some(p), Value::Object(map)) = (p, &mut item) {
        let (number, region) = (Value::from(p.number), Value::from(p.region.clone()));
        map.insert("number".into(), number);
        map.insert("region".into(), region);
    }
    item
}

/// Filters of the precinct list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrecinctQuery {
    /// A precinct number or words of the address.
    q: Option<String>,
    /// Only this region.
    region: Option<String>,
    /// Only this district.
    district: Option<String>,
}

fn precinct_row(v: &ElectionView, p: &hattama_core::election::Precinct) -> Value {
    let f = v.precincts.get(&p.id).cloned().unwrap_or_default();
    json!({
        "id": p.id,
        "number": p.number,
        "region": p.region,
        "district": p.district,
        "address": p.address,
        "captures": f.captures,
        "accepted": f.accepted,
        "transcription": v.transcriptions.get(&p.id).map(|t| t.status),
        "official": v.official.contains_key(&p.id),
        "differs": v.differing.contains(&p.id),
    })
}

/// `GET /api/v1/elections/{election}/precincts?q=&region=&district=`.
async fn precincts(
    path: web::Path<String>,
    query: web::Query<PrecinctQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let e = path.into_inner();
    id("election", &e)?;
    let q = query.into_inner();
    for s in [&q.q, &q.region, &q.district].into_iter().flatten() {
        if s.len() > 200 {
            return Err(ApiError::new(400, "bad_query", "a filter is at most 200 bytes"));
        }
    }
    let gallery = state.gallery.clone();
    let rows = web::block(move || -> Result<Vec<Value>, ApiError> {
        let v = view_of(&gallery, &e)?;
        let list: Vec<&hattama_core::election::Precinct> = match &q.q {
            Some(text) if !text.trim().is_empty() => v.search(text, 10_000),
            _ => v.election.precincts.iter().collect(),
        };
        Ok(list
            .into_iter()
            .filter(|p| q.region.as_ref().is_none_or(|r| &p.region == r))
            .filter(|p| q.district.as_ref().is_none_or(|d| &p.district == d))
            .map(|p| precinct_row(&v, p))
            .collect())
    })
    .await??;
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "public, no-cache")).json(rows))
}

/// The whole public record of one precinct, as the API and the precinct page show it.
pub fn precinct_json(g: &Gallery, v: &ElectionView, precinct: &str) -> Result<Value, ApiError> {
    let p = v.election.precinct(precinct).ok_or_else(|| ApiError::not_found("no such precinct"))?;
    let captures = g.captures(v, precinct)?;
    let differences = v.comparison.differences.iter().find(|d| d.precinct == precinct);
    Ok(json!({
        "election": v.election.id,
        "precinct": p,
        "captures": captures.iter().map(|c| json!({
            "capture": c,
            "photo_url": format!("/photos/{}", c.photo_sha256),
            "manifest_url": format!("/api/v1/captures/{}", c.id),
            "receipt_url": format!("/api/v1/receipts/{}", c.id),
            "inclusion_proof_url": format!("/api/v1/log/inclusion/{}", c.id),
        })).collect::<Vec<_>>(),
        "transcription": v.transcriptions.get(precinct),
        "official": v.official.get(precinct),
        "official_version": v.official_versions.last().map(|x| x.version),
        "official_changes": named(v, &v.changes_of(precinct)),
        "differences": differences.map(|d| &d.lines),
        "official_violations": v.comparison.broken_official.iter()
            .find(|b| b.precinct == precinct).map(|b| &b.violations),
    }))
}

/// `GET /api/v1/elections/{election}/precincts/{precinct}`.
async fn precinct(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (e, p) = path.into_inner();
    id("election", &e)?;
    id("precinct", &p)?;
    cached(&req, &state, format!("api:precinct:{e}:{p}"), move |g| {
        let v = view_of(g, &e)?;
        json_body(&precinct_json(g, &v, &p)?)
    })
    .await
}

/// `GET /api/v1/elections/{election}/precincts/{precinct}/evidence-package.zip`: the station's
/// evidence package (`docs/evidence-package.md`), written once per state of its data.
async fn evidence_package(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (e, p) = path.into_inner();
    id("election", &e)?;
    id("precinct", &p)?;
    let st = state.clone();
    let base = crate::web::gallery::site_base(&req, &state);
    // The file is opened right after it is found or written: a newer package may replace it,
    // and the open file stays readable.
    let (built, file) = web::block(move || -> Result<_, ApiError> {
        let v = view_of(&st.gallery, &e)?;
        let built = crate::package::build(&st, &v, &p, &base)?;
        let file = std::fs::File::open(&built.path).map_err(|e| ApiError::internal(&e))?;
        Ok((built, file))
    })
    .await??;
    let etag = format!("\"{}\"", built.key);
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut r = if fresh { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    r.insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "public, no-cache"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}\"", built.file_name),
        ));
    if fresh {
        return Ok(r.finish());
    }
    // Streamed in chunks: a package is never held in memory whole.
    let file = tokio::fs::File::from_std(file);
    let chunks = futures_util::stream::unfold(Some(file), |file| async move {
        use tokio::io::AsyncReadExt as _;
        let mut file = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(web::Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok(r.content_type("application/zip").streaming(chunks))
}

/// The query of a set package: which stations (`docs/evidence-package.md` 6.1).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetQuery {
    differing: Option<bool>,
    region: Option<String>,
    district: Option<String>,
    /// Precinct ids, separated by commas.
    precincts: Option<String>,
}

/// Most characters of a region's or a district's name in a query.
const MAX_AREA_NAME: usize = 200;

/// The selection of a set package's query; a malformed one is a 400 that says what is allowed.
fn selection(query: &str) -> Result<crate::package::set::Selection, ApiError> {
    let q = web::Query::<SetQuery>::from_query(query).map_err(|e| {
        ApiError::new(
            400,
            "bad_query",
            format!(
                "{e}; choose stations with differing=true, region=NAME, district=NAME or \
                 precincts=ID,ID,…"
            ),
        )
    })?;
    let q = q.into_inner();
    for name in [&q.region, &q.district].into_iter().flatten() {
        if name.chars().count() > MAX_AREA_NAME {
            return Err(ApiError::new(
                400,
                "bad_query",
                format!("a region or district name has at most {MAX_AREA_NAME} characters"),
            ));
        }
    }
    let precincts = match q.precincts {
        None => None,
        Some(list) => {
            let mut ids: Vec<String> = Vec::new();
            for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                if ids.len() == crate::package::set::MAX_LISTED {
                    return Err(ApiError::new(
                        400,
                        "too_many_stations",
                        format!(
                            "a list may name at most {} stations; split it",
                            crate::package::set::MAX_LISTED
                        ),
                    ));
                }
                id("precinct", p)?;
                if !ids.iter().any(|x| x == p) {
                    ids.push(p.to_owned());
                }
            }
            if ids.is_empty() {
                return Err(ApiError::new(
                    400,
                    "bad_query",
                    "precincts= lists no station; give precinct ids separated by commas",
                ));
            }
            Some(ids)
        }
    };
    Ok(crate::package::set::Selection {
        differing: q.differing.unwrap_or(false),
        region: q.region,
        district: q.district,
        precincts,
    })
}

/// `GET /api/v1/elections/{election}/evidence-package.zip?differing=…&region=…&district=…&
/// precincts=…`: the evidence package of a set of stations (`docs/evidence-package.md` 6): a
/// summary, then every station's package. Each station's package is written once and kept;
/// the set is streamed from them, never held whole, within the app's [`SET_SLOTS`] and the
/// client's evidence allowance.
///
/// [`SET_SLOTS`]: crate::package::set::SET_SLOTS
async fn set_package(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let e = path.into_inner();
    id("election", &e)?;
    let sel = selection(req.query_string())?;
    let slot = state.set_packages.take()?;
    let st = state.clone();
    let base = crate::web::gallery::site_base(&req, &state);
    let prepared = web::block(move || -> Result<_, ApiError> {
        let v = view_of(&st.gallery, &e)?;
        crate::package::set::prepare(&st, &v, &sel, &base)
    })
    .await??;
    let etag = format!("\"{}\"", prepared.key);
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut r = if fresh { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    r.insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "public, no-cache"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}\"", prepared.file_name),
        ));
    if fresh {
        return Ok(r.finish());
    }
    // Photos are compressed already and the rest is small: the stream is sent as it is
    // (`identity` keeps the compression middleware off it).
    r.insert_header(header::ContentEncoding::Identity);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    crate::package::set::stream(state.clone(), prepared, slot, tx)?;
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Ok(r.content_type("application/zip").streaming(body))
}

/// `GET /api/v1/elections/{election}/comparison`.
async fn comparison(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    of_election(req, path, state, "comparison", comparison_json).await
}

/// The body of `GET /api/v1/elections/{election}/comparison` (also what `migrate` compares
/// between the source and the target).
pub fn comparison_json(v: &ElectionView) -> Value {
    let mut comparison = serde_json::to_value(&v.comparison).unwrap_or_default();
    comparison["differences"] = named(v, &v.comparison.differences);
    comparison["broken_official"] = named(v, &v.comparison.broken_official);
    json!({
        "election": v.election.id,
        "official_version": v.official_versions.last().map(|x| x.version),
        "comparison": comparison,
    })
}

/// `GET /api/v1/elections/{election}/official`: versions and every change between them.
async fn official_versions(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    of_election(
        req,
        path,
        state,
        "official",
        |v| json!({ "versions": v.official_versions, "changes": named(v, &v.official_changes) }),
    )
    .await
}

/// Query of the official export.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Official version (default: the newest): digits; a number beyond any version is no
    /// version rather than a malformed query (the OpenAPI document allows any integer ≥ 1).
    version: Option<String>,
}

fn csv_rows(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    // Writing to a Vec cannot fail.
    let _ = w.write_record(header);
    for row in rows {
        let _ = w.write_record(&row);
    }
    w.into_inner().unwrap_or_default()
}

/// `GET /api/v1/elections/{election}/export/{file}`: the open data (see docs/open-data.md).
async fn export(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<ExportQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (e, file) = path.into_inner();
    id("election", &e)?;
    if !EXPORT_FILES.contains(&file.as_str()) {
        return Err(ApiError::not_found(format!(
            "no export {file:?}; there are {}",
            EXPORT_FILES.join(", ")
        )));
    }
    let version = match query.version.as_deref() {
        None => None,
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            Some(v.parse::<u64>().unwrap_or(u64::MAX))
        }
        Some(_) => return Err(ApiError::new(400, "bad_query", "version must be a number")),
    };
    if version == Some(0) {
        return Err(ApiError::new(400, "bad_query", "versions are numbered from 1"));
    }
    // `version` selects a version of official.csv and is ignored by the other files.
    let version = version.filter(|_| file == "official.csv");
    let key = format!("export:{e}:{file}:{version:?}");
    let (storage, log) = (state.storage.clone(), state.log.clone());
    let mut response = cached(&req, &state, key, move |g| {
        let v = view_of(g, &e)?;
        export_file(g, &v, &file, version, (&*storage, &log))
    })
    .await?;
    if response.status().is_success() {
        // Saved, not shown: `<election>-<file>` (`kz-2026-official-v2.csv`), whose parts are
        // ids and fixed names, so the name needs no quoting beyond the quotes.
        let file = req.match_info().get("file").unwrap_or("export");
        let election = req.match_info().get("election").unwrap_or("election");
        let name = match (version, file.split_once('.')) {
            (Some(v), Some((stem, ext))) => format!("{election}-{stem}-v{v}.{ext}"),
            _ => format!("{election}-{file}"),
        };
        response.headers_mut().insert(
            header::CONTENT_DISPOSITION,
            header::HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
                .map_err(|e| ApiError::internal(&e))?,
        );
    }
    Ok(response)
}

/// One line of `evidence.jsonl`, its members in the documented order (`docs/open-data.md`).
#[derive(Serialize)]
struct EvidenceLine {
    id: String,
    precinct: String,
    number: u32,
    region: String,
    manifest: String,
    signature: String,
    receipt: hattama_core::receipt::SignedReceipt,
    log_index: Option<u64>,
    photo_url: String,
    inclusion_proof_url: String,
}

/// The open-data files of an election (`GET /api/v1/elections/{election}/export/{file}`).
pub const EXPORT_FILES: [&str; 9] = [
    "precincts.csv",
    "precincts.json",
    "transcriptions.csv",
    "transcriptions.json",
    "official.csv",
    "official.json",
    "differences.csv",
    "differences.json",
    "evidence.jsonl",
];

/// One export file's content type and bytes, as served (also what `migrate` compares between
/// the source and the target). `version` selects a version of `official.csv`.
pub fn export_file(
    g: &Gallery,
    v: &ElectionView,
    file: &str,
    version: Option<u64>,
    storage: (&dyn crate::storage::Storage, &crate::log::Log),
) -> Result<(&'static str, Vec<u8>), ApiError> {
    let (content_type, mut body) = make_export(g, v, file, version, storage)?;
    if file.ends_with(".csv") {
        // A byte-order mark, so that spreadsheet programs read the UTF-8 (Cyrillic and
        // Kazakh names) as UTF-8; the importers accept it.
        body.splice(0..0, *b"\xEF\xBB\xBF");
    }
    Ok((content_type, body))
}

fn make_export(
    g: &Gallery,
    v: &ElectionView,
    file: &str,
    version: Option<u64>,
    (storage, log): (&dyn crate::storage::Storage, &crate::log::Log),
) -> Result<(&'static str, Vec<u8>), ApiError> {
    const CSV: &str = "text/csv; charset=utf-8";
    let e = &v.election.id;
    Ok(match file {
        "precincts.csv" => (
            CSV,
            csv_rows(
                &[
                    "election",
                    "precinct",
                    "number",
                    "region",
                    "district",
                    "address",
                    "captures",
                    "accepted",
                    "transcription",
                    "official",
                    "differs",
                ],
                v.election.precincts.iter().map(|p| {
                    let r = precinct_row(v, p);
                    let s = |k: &str| match &r[k] {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    vec![
                        e.clone(),
                        p.id.clone(),
                        p.number.to_string(),
                        p.region.clone(),
                        p.district.clone(),
                        p.address.clone(),
                        s("captures"),
                        s("accepted"),
                        s("transcription"),
                        s("official"),
                        s("differs"),
                    ]
                }),
            ),
        ),
        "precincts.json" => {
            json_body(&v.election.precincts.iter().map(|p| precinct_row(v, p)).collect::<Vec<_>>())?
        }
        // The format of official results, so that another instance can import it.
        "transcriptions.csv" => (CSV, official::to_csv(e, &v.observed)),
        "transcriptions.json" => {
            let mut list: Vec<_> = v.transcriptions.iter().collect();
            list.sort_by(|a, b| a.0.cmp(b.0));
            json_body(
                &list
                    .into_iter()
                    .map(|(p, t)| name_station(v, json!({ "precinct": p, "transcription": t })))
                    .collect::<Vec<_>>(),
            )?
        }
        "official.csv" => {
            let newest = v.official_versions.last().map(|x| x.version);
            let wanted = version.or(newest).ok_or_else(|| {
                ApiError::not_found("no official results have been imported for this election")
            })?;
            if !v.official_versions.iter().any(|x| x.version == wanted) {
                return Err(ApiError::not_found(format!("no official version {wanted}")));
            }
            let figures = if Some(wanted) == newest {
                v.official.clone()
            } else {
                g.official_figures(e, wanted)?
            };
            (CSV, official::to_csv(e, &figures))
        }
        "official.json" => {
            let mut versions = Vec::new();
            for x in &v.official_versions {
                versions
                    .push(json!({ "version": x, "figures": g.official_figures(e, x.version)? }));
            }
            json_body(&json!({ "versions": versions, "changes": named(v, &v.official_changes) }))?
        }
        "differences.csv" => (
            CSV,
            csv_rows(
                &[
                    "election",
                    "precinct",
                    "number",
                    "region",
                    "line",
                    "observed",
                    "official",
                    "difference",
                ],
                v.comparison.differences.iter().flat_map(|d| {
                    let p = v.election.precinct(&d.precinct);
                    let number = p.map(|p| p.number.to_string()).unwrap_or_default();
                    let region = p.map(|p| p.region.clone()).unwrap_or_default();
                    d.lines.iter().map(move |l| {
                        vec![
                            e.clone(),
                            d.precinct.clone(),
                            number.clone(),
                            region.clone(),
                            l.line.clone(),
                            l.observed.to_string(),
                            l.official.to_string(),
                            (l.observed as i64 - l.official as i64).to_string(),
                        ]
                    })
                }),
            ),
        ),
        "differences.json" => json_body(&named(v, &v.comparison.differences))?,
        "evidence.jsonl" => {
            let mut out = Vec::new();
            for c in g.all_captures(e)? {
                let receipt = crate::routes::receipts::complete(
                    storage,
                    log,
                    &c.id,
                    &c.receipt,
                    c.log_index.unwrap_or(u64::MAX),
                    None,
                )?;
                let p = v.election.precinct(&c.precinct);
                let line = EvidenceLine {
                    id: c.id.to_hex(),
                    number: p.map_or(0, |p| p.number),
                    region: p.map(|p| p.region.clone()).unwrap_or_default(),
                    precinct: c.precinct,
                    manifest: String::from_utf8_lossy(&c.manifest).into_owned(),
                    signature: hex::encode(c.signature),
                    receipt,
                    log_index: c.log_index,
                    photo_url: format!("/photos/{}", c.photo_sha256.to_hex()),
                    inclusion_proof_url: format!("/api/v1/log/inclusion/{}", c.id.to_hex()),
                };
                serde_json::to_writer(&mut out, &line).map_err(|e| ApiError::internal(&e))?;
                out.push(b'\n');
            }
            ("application/jsonl", out)
        }
        _ => return Err(ApiError::not_found("no such export")),
    })
}
