//! The coordinators' console under `/review`: elections (imports of definitions and official
//! results from the browser, and their history), invites (choosing precincts, printable cards
//! with QR codes, the list, cancelling) and devices (activity, revocation). Admins act;
//! supervisors read; coordinators get 403 (`crate::console::may_read`). Every form carries the
//! session's CSRF token, checked before anything else (in a multipart form: before the file is
//! looked at). Rules in [`crate::console`], SQL behind [`crate::storage::ConsoleStorage`];
//! every change is in the audit trail.

use std::collections::{BTreeMap, BTreeSet};

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use futures_util::StreamExt;
use hattama_core::election::Election;
use serde::Deserialize;

use super::pages::private;
use super::{Clock, Reviewer, reviewer};
use crate::console::{self, ConsoleError, Selection};
use crate::startup::AppState;
use crate::storage::console::{DeviceSummary, InviteRecord};
use crate::storage::review::NewAudit;
use crate::web::i18n::IntoArg;
use crate::web::{Lang, PageCtx, WebError, html, percent_encode, see_other};

/// A console page's reader: admins and supervisors.
async fn reader(req: &HttpRequest, state: &web::Data<AppState>) -> Result<Reviewer, WebError> {
    let r = reviewer(req, state).await?;
    if console::may_read(&r.user) { Ok(r) } else { Err(WebError::Forbidden) }
}

/// A console form's sender: admins, with the session's CSRF token (also the accounts page's).
pub(super) async fn admin(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    csrf: &str,
) -> Result<Reviewer, WebError> {
    let r = reviewer(req, state).await?;
    r.check_csrf(csrf)?;
    if console::may_administer(&r.user) { Ok(r) } else { Err(WebError::Forbidden) }
}

fn audit(r: &Reviewer, action: &str, election: Option<&str>, after: serde_json::Value) -> NewAudit {
    NewAudit {
        at_ms: hattama_core::now_ms(),
        user_id: Some(r.user.id),
        action: action.to_owned(),
        election: election.map(str::to_owned),
        after: Some(after.to_string()),
        ..Default::default()
    }
}

fn with_status(mut r: HttpResponse, status: StatusCode) -> HttpResponse {
    *r.status_mut() = status;
    r
}

/// The `?done=` confirmation words of the console's pages and their messages.
fn done_message(lang: Lang, done: Option<&str>) -> Option<String> {
    let id = match done? {
        "election" => "console-done-election",
        "official" => "console-done-official",
        "unchanged" => "console-done-unchanged",
        "cancelled" => "console-done-cancelled",
        "revoked" => "console-done-revoked",
        _ => return None,
    };
    Some(lang.t(id))
}

/// `?done=`.
#[derive(Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Elections.

struct ElectionRow {
    id: String,
    name: String,
    precincts: usize,
    regions: usize,
    lines: usize,
}

struct VersionRow {
    election: String,
    version: u64,
    at: String,
    source: String,
    sha: String,
    precincts: u64,
}

#[derive(Template)]
#[template(path = "console/elections.html")]
struct ElectionsPage {
    ctx: PageCtx,
    can_admin: bool,
    elections: Vec<ElectionRow>,
    versions: Vec<VersionRow>,
    zone: String,
    done: Option<String>,
    /// A refused file: what the console says, and the check's own words (naming the row).
    refused: Option<(String, String)>,
}

async fn elections_page(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    r: &Reviewer,
    done: Option<&str>,
    refused: Option<(String, String)>,
) -> Result<HttpResponse, WebError> {
    let storage = state.console.clone();
    let (elections, versions) = web::block(move || {
        let elections = storage.elections()?;
        let mut versions = Vec::new();
        for e in &elections {
            for v in storage.official_versions(&e.id)? {
                versions.push((e.id.clone(), v));
            }
        }
        Ok::<_, crate::storage::StorageError>((elections, versions))
    })
    .await?
    .map_err(|e| WebError::internal(&e))?;
    let ctx = r.ctx(req);
    let lang = ctx.lang;
    let mut versions: Vec<VersionRow> = versions
        .into_iter()
        .map(|(election, v)| VersionRow {
            election,
            version: v.version,
            at: r.clock.time(v.imported_at_ms),
            source: v.source,
            sha: v.sha256.chars().take(16).collect(),
            precincts: v.precincts,
        })
        .collect();
    versions.sort_by(|a, b| b.at.cmp(&a.at).then(b.version.cmp(&a.version)));
    let page = ElectionsPage {
        can_admin: console::may_administer(&r.user),
        elections: elections
            .iter()
            .map(|e| ElectionRow {
                id: e.id.clone(),
                name: lang.pick(&e.names).to_owned(),
                precincts: e.precincts.len(),
                regions: e.precincts.iter().map(|p| &p.region).collect::<BTreeSet<_>>().len(),
                lines: e.protocol.lines.len(),
            })
            .collect(),
        versions,
        zone: r.clock.zone(),
        done: done_message(lang, done),
        refused,
        ctx,
    };
    html(&page).map(private)
}

/// `GET /review/elections`.
pub async fn elections(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<DoneQuery>,
) -> Result<HttpResponse, WebError> {
    let r = reader(&req, &state).await?;
    elections_page(&req, &state, &r, query.done.as_deref(), None).await
}

/// The fields of an upload form: the CSRF token and one file (its name and bytes), read with a
/// bound on the whole body.
struct Upload {
    csrf: String,
    name: String,
    bytes: Vec<u8>,
    too_large: bool,
}

async fn read_upload(mut body: Multipart, limit: usize) -> Result<Upload, WebError> {
    let mut up =
        Upload { csrf: String::new(), name: String::new(), bytes: Vec::new(), too_large: false };
    while let Some(field) = body.next().await {
        let mut field = field.map_err(|_| WebError::BadRequest)?;
        let name = field.name().unwrap_or_default().to_owned();
        let filename = field
            .content_disposition()
            .and_then(|d| d.get_filename())
            .unwrap_or_default()
            .to_owned();
        let mut value = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|_| WebError::BadRequest)?;
            if value.len() + chunk.len() > limit {
                up.too_large = true;
                continue;
            }
            value.extend_from_slice(&chunk);
        }
        match name.as_str() {
            "csrf" => up.csrf = String::from_utf8_lossy(&value).into_owned(),
            "file" => {
                up.name = filename.rsplit(['/', '\\']).next().unwrap_or_default().to_owned();
                up.bytes = value;
            }
            _ => {}
        }
    }
    Ok(up)
}

/// What the console says of a refused import, and the check's own words.
fn refusal(lang: Lang, e: &ConsoleError) -> Result<(String, String), WebError> {
    match e {
        ConsoleError::Storage(e) => Err(WebError::internal(e)),
        other => Ok((lang.t("console-import-refused"), other.to_string())),
    }
}

/// `POST /review/elections/definition`: an election definition (JSON), as `election import`.
pub async fn import_definition(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Multipart,
) -> Result<HttpResponse, WebError> {
    let up = read_upload(body, crate::official::MAX_FILE_BYTES).await?;
    let r = admin(&req, &state, &up.csrf).await?;
    let lang = Lang::of_request(&req);
    if up.too_large || up.bytes.is_empty() {
        let why = (lang.t("console-import-refused"), lang.t("console-file-missing-or-large"));
        let page = elections_page(&req, &state, &r, None, Some(why)).await?;
        return Ok(with_status(page, StatusCode::UNPROCESSABLE_ENTITY));
    }
    let storage = state.console.clone();
    let bytes = up.bytes;
    let by = console::Importer { user_id: r.user.id, file: up.name };
    let result = web::block(move || {
        console::import_election(&*storage, &bytes, hattama_core::now_ms(), Some(&by))
    })
    .await?;
    match result {
        Ok(_) => Ok(see_other("/review/elections?done=election")),
        Err(e) => {
            let why = refusal(lang, &e)?;
            let page = elections_page(&req, &state, &r, None, Some(why)).await?;
            Ok(with_status(page, StatusCode::UNPROCESSABLE_ENTITY))
        }
    }
}

/// `POST /review/elections/official`: official results (CSV), as `official import`.
pub async fn import_official(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Multipart,
) -> Result<HttpResponse, WebError> {
    let up = read_upload(body, crate::official::MAX_FILE_BYTES).await?;
    let r = admin(&req, &state, &up.csrf).await?;
    let lang = Lang::of_request(&req);
    if up.too_large || up.bytes.is_empty() {
        let why = (lang.t("console-import-refused"), lang.t("console-file-missing-or-large"));
        let page = elections_page(&req, &state, &r, None, Some(why)).await?;
        return Ok(with_status(page, StatusCode::UNPROCESSABLE_ENTITY));
    }
    let storage = state.console.clone();
    let by = console::Importer { user_id: r.user.id, file: up.name.clone() };
    let (bytes, source) = (up.bytes, up.name);
    let result = web::block(move || {
        console::import_official(&*storage, &bytes, &source, hattama_core::now_ms(), Some(&by))
    })
    .await?;
    match result {
        Ok((_, version)) => {
            let done = if version.is_some() { "official" } else { "unchanged" };
            Ok(see_other(&format!("/review/elections?done={done}")))
        }
        Err(e) => {
            let why = refusal(lang, &e)?;
            let page = elections_page(&req, &state, &r, None, Some(why)).await?;
            Ok(with_status(page, StatusCode::UNPROCESSABLE_ENTITY))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Invites.

struct Choice {
    value: String,
    label: String,
    selected: bool,
}

struct InviteRow {
    /// The code (empty for a supervisor while it is unused).
    code: String,
    election: String,
    precincts: String,
    batch: Option<u64>,
    created: String,
    state: &'static str,
    fingerprint: String,
    used_at: String,
    cancellable: bool,
}

#[derive(Template)]
#[template(path = "console/invites.html")]
struct InvitesPage {
    ctx: PageCtx,
    can_admin: bool,
    elections: Vec<Choice>,
    regions: Vec<Choice>,
    districts: Vec<Choice>,
    form: InviteForm,
    invites: Vec<InviteRow>,
    batches: Vec<(u64, usize)>,
    counts: (usize, usize, usize),
    zone: String,
    done: Option<String>,
    error: Option<String>,
}

/// The invite form.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    election: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    district: String,
    #[serde(default)]
    numbers: String,
    #[serde(default)]
    list: String,
    #[serde(default)]
    per_precinct: String,
}

fn precinct_numbers(e: Option<&Election>, ids: &[String]) -> String {
    ids.iter()
        .map(|id| {
            e.and_then(|e| e.precinct(id)).map_or_else(|| id.clone(), |p| p.number.to_string())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn invites_page(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    r: &Reviewer,
    form: InviteForm,
    done: Option<&str>,
    error: Option<String>,
) -> Result<HttpResponse, WebError> {
    let storage = state.console.clone();
    let (elections, invites) = web::block(move || {
        Ok::<_, crate::storage::StorageError>((storage.elections()?, storage.invites(None)?))
    })
    .await?
    .map_err(|e| WebError::internal(&e))?;
    let ctx = r.ctx(req);
    let lang = ctx.lang;
    let can_admin = console::may_administer(&r.user);
    let chosen = elections
        .iter()
        .find(|e| e.id == form.election)
        .or_else(|| elections.first())
        .map(|e| e.id.clone())
        .unwrap_or_default();
    let current = elections.iter().find(|e| e.id == chosen);
    let regions: BTreeSet<&String> =
        current.map(|e| e.precincts.iter().map(|p| &p.region).collect()).unwrap_or_default();
    let districts: BTreeSet<&String> =
        current.map(|e| e.precincts.iter().map(|p| &p.district).collect()).unwrap_or_default();
    let by_id: BTreeMap<&str, &Election> = elections.iter().map(|e| (e.id.as_str(), e)).collect();
    let (mut unused, mut used, mut cancelled) = (0, 0, 0);
    let mut batches: BTreeMap<u64, usize> = BTreeMap::new();
    let rows: Vec<InviteRow> = invites
        .iter()
        .map(|i: &InviteRecord| {
            let state = if i.cancelled_at_ms.is_some() {
                cancelled += 1;
                "console-invite-cancelled"
            } else if i.used_by.is_some() {
                used += 1;
                "console-invite-used"
            } else {
                unused += 1;
                if let Some(b) = i.batch {
                    *batches.entry(b).or_default() += 1;
                }
                "console-invite-unused"
            };
            let open = i.used_by.is_none() && i.cancelled_at_ms.is_none();
            InviteRow {
                code: if can_admin || !open { i.code.clone() } else { String::new() },
                election: i.election.clone(),
                precincts: precinct_numbers(by_id.get(i.election.as_str()).copied(), &i.precincts),
                batch: i.batch,
                created: r.clock.time(i.created_at_ms),
                state,
                fingerprint: i.used_by_fingerprint.clone().unwrap_or_default(),
                used_at: i.used_at_ms.map(|t| r.clock.time(t)).unwrap_or_default(),
                cancellable: can_admin && open,
            }
        })
        .collect();
    let page = InvitesPage {
        can_admin,
        elections: elections
            .iter()
            .map(|e| Choice {
                value: e.id.clone(),
                label: lang.pick(&e.names).to_owned(),
                selected: e.id == chosen,
            })
            .collect(),
        regions: regions
            .into_iter()
            .map(|v| Choice { value: v.clone(), label: v.clone(), selected: *v == form.region })
            .collect(),
        districts: districts
            .into_iter()
            .map(|v| Choice { value: v.clone(), label: v.clone(), selected: *v == form.district })
            .collect(),
        form,
        invites: rows,
        batches: batches.into_iter().rev().collect(),
        counts: (unused, used, cancelled),
        zone: r.clock.zone(),
        done: done_message(lang, done),
        error,
        ctx,
    };
    html(&page).map(private)
}

/// `GET /review/invites`.
pub async fn invites(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<DoneQuery>,
) -> Result<HttpResponse, WebError> {
    let r = reader(&req, &state).await?;
    let form = InviteForm { per_precinct: "1".into(), ..Default::default() };
    invites_page(&req, &state, &r, form, query.done.as_deref(), None).await
}

/// `POST /review/invites`: creates a batch of invites, then shows its cards.
pub async fn create_invites(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<InviteForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    let r = admin(&req, &state, &form.csrf).await?;
    let lang = Lang::of_request(&req);
    let storage = state.console.clone();
    let (f, user) = (form.clone(), r.user.id);
    let result = web::block(move || -> Result<u64, ConsoleError> {
        let election = storage
            .election(&f.election)?
            .ok_or_else(|| crate::storage::StorageError::NotFound(f.election.clone()))?;
        let selection = Selection {
            region: f.region.clone(),
            district: f.district.clone(),
            numbers: f.numbers.clone(),
            list: f.list.clone(),
        };
        let precincts = console::choose_precincts(&election, &selection)?;
        let per: usize =
            f.per_precinct.trim().parse().map_err(|_| console::SelectionError::PerPrecinct)?;
        console::check_count(precincts.len(), per)?;
        let groups: Vec<Vec<String>> = precincts.into_iter().map(|p| vec![p]).collect();
        let now = hattama_core::now_ms();
        let event = console::invites_created(now, user, &election.id, &groups);
        let (batch, _) =
            storage.create_invite_batch(&election.id, &groups, per, now, Some(&event))?;
        Ok(batch)
    })
    .await?;
    match result {
        Ok(batch) => Ok(see_other(&format!("/review/invites/cards?batch={batch}"))),
        Err(ConsoleError::Storage(crate::storage::StorageError::NotFound(_))) => {
            let page =
                invites_page(&req, &state, &r, form, None, Some(lang.t("console-no-election")))
                    .await?;
            Ok(with_status(page, StatusCode::UNPROCESSABLE_ENTITY))
        }
        Err(ConsoleError::Storage(e)) => Err(WebError::internal(&e)),
        Err(ConsoleError::Selection(e)) => {
            let message = match &e {
                console::SelectionError::Unknown(t) => {
                    lang.t1("console-select-unknown", "entry", t.as_str())
                }
                console::SelectionError::BadRange(t) => {
                    lang.t1("console-select-range", "entry", t.as_str())
                }
                console::SelectionError::Empty => lang.t("console-select-empty"),
                console::SelectionError::TooMany(n) => {
                    lang.t1("console-select-too-many", "count", *n as u64)
                }
                console::SelectionError::PerPrecinct => lang.t("console-select-per-precinct"),
            };
            let page = invites_page(&req, &state, &r, form, None, Some(message)).await?;
            Ok(with_status(page, StatusCode::UNPROCESSABLE_ENTITY))
        }
        Err(e) => Err(WebError::internal(&e)),
    }
}

/// The cancel form.
#[derive(Deserialize)]
pub struct CancelForm {
    csrf: String,
    code: String,
}

/// `POST /review/invites/cancel`.
pub async fn cancel_invite(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<CancelForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    let r = admin(&req, &state, &form.csrf).await?;
    let event = audit(&r, "invite-cancel", None, serde_json::json!({ "code": form.code }));
    let storage = state.console.clone();
    let code = form.code.clone();
    let done = web::block(move || storage.cancel_invite(&code, event.at_ms, &event))
        .await?
        .map_err(|e| WebError::internal(&e))?;
    if done { Ok(see_other("/review/invites?done=cancelled")) } else { Err(WebError::NotFound) }
}

struct Card {
    election: String,
    number: u32,
    region: String,
    district: String,
    address: String,
    code: String,
    uri: String,
    qr: String,
}

#[derive(Template)]
#[template(path = "console/cards.html")]
struct CardsPage {
    ctx: PageCtx,
    batch: u64,
    server: String,
    cards: Vec<Card>,
}

/// `?batch=`.
#[derive(Deserialize)]
pub struct BatchQuery {
    batch: u64,
}

/// The server URL that invites carry: `public_url`, or else the address this request reached.
fn invite_base(req: &HttpRequest, state: &AppState) -> String {
    if let Some(url) = &state.settings.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    // The scheme from the connection (or a trusted proxy), never from any client's header.
    let scheme = if crate::tls::is_https(req, &state.settings) { "https" } else { "http" };
    format!("{scheme}://{}", req.connection_info().host())
}

/// `GET /review/invites/cards?batch=N`: the print-ready cards of a batch's unused invites
/// (admins only: they hold the codes).
pub async fn cards(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<BatchQuery>,
) -> Result<HttpResponse, WebError> {
    let r = reviewer(&req, &state).await?;
    if !console::may_administer(&r.user) {
        return Err(WebError::Forbidden);
    }
    let storage = state.console.clone();
    let batch = query.batch;
    let (invites, elections) = web::block(move || {
        Ok::<_, crate::storage::StorageError>((storage.invites(Some(batch))?, storage.elections()?))
    })
    .await?
    .map_err(|e| WebError::internal(&e))?;
    if invites.is_empty() {
        return Err(WebError::NotFound);
    }
    let ctx = r.ctx(&req);
    let base = invite_base(&req, &state);
    let mut cards = Vec::new();
    for i in &invites {
        if i.used_by.is_some() || i.cancelled_at_ms.is_some() {
            continue;
        }
        let election = elections.iter().find(|e| e.id == i.election);
        let uri = hattama_core::invite::invite_uri(&base, &i.code);
        let qr = console::qr_svg(&uri).ok_or(WebError::Internal)?;
        let first = i.precincts.first().and_then(|p| election.and_then(|e| e.precinct(p)));
        cards.push(Card {
            election: election.map(|e| ctx.lang.pick(&e.names).to_owned()).unwrap_or_default(),
            number: first.map_or(0, |p| p.number),
            region: first.map(|p| p.region.clone()).unwrap_or_default(),
            district: first.map(|p| p.district.clone()).unwrap_or_default(),
            address: first.map(|p| p.address.clone()).unwrap_or_default(),
            code: i.code.clone(),
            uri,
            qr,
        });
    }
    let page = CardsPage { ctx, batch, server: base, cards };
    html(&page).map(private)
}

// ---------------------------------------------------------------------------------------------
// Devices.

struct DeviceRow {
    id: String,
    fingerprint: String,
    election: String,
    precincts: String,
    enrolled: String,
    last_sync: String,
    captures: u64,
    states: Vec<(String, u64)>,
    missing: u64,
    chain_gaps: u64,
    refusals: u64,
    revoked: String,
}

fn device_row(d: &DeviceSummary, elections: &[Election], clock: Clock, lang: Lang) -> DeviceRow {
    let e = elections.iter().find(|e| e.id == d.device.election);
    DeviceRow {
        id: d.device.id.clone(),
        fingerprint: d.device.key.fingerprint(),
        election: d.device.election.clone(),
        precincts: precinct_numbers(e, &d.device.precincts),
        enrolled: clock.time(d.device.enrolled_at_ms),
        last_sync: d.last_sync_ms.map(|t| clock.time(t)).unwrap_or_default(),
        captures: d.captures,
        states: d.states.iter().map(|(s, n)| (lang.t(&format!("state-{s}")), *n)).collect(),
        missing: d.missing_seqs,
        chain_gaps: d.chain_gaps,
        refusals: d.refusals,
        revoked: d.device.revoked_at_ms.map(|t| clock.time(t)).unwrap_or_default(),
    }
}

#[derive(Template)]
#[template(path = "console/devices.html")]
struct DevicesPage {
    ctx: PageCtx,
    devices: Vec<DeviceRow>,
    zone: String,
}

async fn summaries(
    state: &web::Data<AppState>,
) -> Result<(Vec<DeviceSummary>, Vec<Election>), WebError> {
    let storage = state.console.clone();
    web::block(move || {
        storage.refresh_index()?;
        Ok::<_, crate::storage::StorageError>((storage.device_summaries()?, storage.elections()?))
    })
    .await?
    .map_err(|e| WebError::internal(&e))
}

/// `GET /review/devices`.
pub async fn devices(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let r = reader(&req, &state).await?;
    let (list, elections) = summaries(&state).await?;
    let ctx = r.ctx(&req);
    let devices = list.iter().map(|d| device_row(d, &elections, r.clock, ctx.lang)).collect();
    html(&DevicesPage { ctx, devices, zone: r.clock.zone() }).map(private)
}

/// One error code of a device's refused uploads, as its page lists it.
struct RefusalRow {
    code: String,
    /// What it means and what to do, for the codes a device's refusals can have.
    meaning: Option<String>,
    count: u64,
    first: String,
    last: String,
}

/// The codes a device's refusals can have (those answered once its signature verified), each
/// explained by the message `console-refusal-<code>`.
const EXPLAINED: &[&str] = &[
    "device_revoked",
    "precinct_not_assigned",
    "unknown_election",
    "unknown_precinct",
    "too_many_captures",
    "too_many_uploads",
    "rate_limited",
    "photo_mismatch",
    "photo_refused",
    "photo_undecodable",
    "length_mismatch",
    "body_too_large",
    "internal",
];

fn meaning(lang: Lang, code: &str) -> Option<String> {
    EXPLAINED.contains(&code).then(|| lang.t(&format!("console-refusal-{code}")))
}

#[derive(Template)]
#[template(path = "console/device.html")]
struct DevicePage {
    ctx: PageCtx,
    d: DeviceRow,
    refusals: Vec<RefusalRow>,
    /// The missing sequence numbers, as ranges in words (at most [`GAPS_LISTED`]).
    gaps: Vec<String>,
    can_admin: bool,
    zone: String,
    done: Option<String>,
    error: Option<String>,
}

/// Ranges of missing sequence numbers listed on a device's page at most (the count says all).
const GAPS_LISTED: u64 = 20;

async fn device_page(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    r: &Reviewer,
    id: &str,
    done: Option<&str>,
    error: Option<String>,
) -> Result<HttpResponse, WebError> {
    let storage = state.console.clone();
    let wanted = id.to_owned();
    let (summary, refusals, gaps, elections) = web::block(move || {
        storage.refresh_index()?;
        let Some(summary) = storage.device_summary(&wanted)? else {
            return Ok::<_, crate::storage::StorageError>(None);
        };
        let refusals = storage.device_refusals(&wanted)?;
        let gaps = storage.sequence_gaps(&wanted, GAPS_LISTED)?;
        Ok(Some((summary, refusals, gaps, storage.elections()?)))
    })
    .await?
    .map_err(|e| WebError::internal(&e))?
    .ok_or(WebError::NotFound)?;
    let ctx = r.ctx(req);
    let lang = ctx.lang;
    let gaps = gaps
        .iter()
        .map(|(first, last)| {
            if first == last {
                lang.t1("console-gaps-one", "first", *first)
            } else {
                lang.t_args(
                    "console-gaps-range",
                    &[("first", (*first).into_arg()), ("last", (*last).into_arg())],
                )
            }
        })
        .collect();
    html(&DevicePage {
        d: device_row(&summary, &elections, r.clock, lang),
        refusals: refusals
            .into_iter()
            .map(|f| RefusalRow {
                meaning: meaning(lang, &f.code),
                code: f.code,
                count: f.count,
                first: r.clock.time(f.first_at_ms),
                last: r.clock.time(f.last_at_ms),
            })
            .collect(),
        gaps,
        can_admin: console::may_administer(&r.user) && summary.device.revoked_at_ms.is_none(),
        zone: r.clock.zone(),
        done: done_message(lang, done),
        error,
        ctx,
    })
    .map(private)
}

/// `GET /review/devices/{id}`.
pub async fn device(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<DoneQuery>,
) -> Result<HttpResponse, WebError> {
    let r = reader(&req, &state).await?;
    device_page(&req, &state, &r, &path, query.done.as_deref(), None).await
}

/// The revoke form.
#[derive(Deserialize)]
pub struct RevokeForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

/// `POST /review/devices/{id}/revoke`: the device uploads nothing more (`403
/// device_revoked`); what it uploaded stays.
pub async fn revoke(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<RevokeForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    let r = admin(&req, &state, &form.csrf).await?;
    let id = path.into_inner();
    let reason = form.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 500 {
        let lang = Lang::of_request(&req);
        let page =
            device_page(&req, &state, &r, &id, None, Some(lang.t("console-revoke-reason-needed")))
                .await?;
        return Ok(with_status(page, StatusCode::UNPROCESSABLE_ENTITY));
    }
    let event =
        audit(&r, "device-revoke", None, serde_json::json!({ "device": id, "reason": reason }));
    let storage = state.console.clone();
    let device = id.clone();
    let done = web::block(move || storage.revoke_device_audited(&device, event.at_ms, &event))
        .await?
        .map_err(|e| WebError::internal(&e))?;
    if !done {
        return Err(WebError::NotFound);
    }
    Ok(see_other(&format!("/review/devices/{}?done=revoked", percent_encode(&id))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_a_device_page_explains_is_explained_in_every_language() {
        for lang in [Lang::Kk, Lang::Ru, Lang::En] {
            for code in EXPLAINED {
                let text = meaning(lang, code).unwrap();
                assert!(!text.starts_with("console-refusal-"), "{code} in {lang:?}");
            }
            assert_eq!(meaning(lang, "made_up"), None);
        }
    }
}
