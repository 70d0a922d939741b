//! The review pages and forms.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use hattama_core::election::{Election, LineKind, Severity, Violation};
use hattama_core::evidence::{Manifest, Sha256Hash};
use serde::Deserialize;

use super::{
    LOGIN_CSRF_COOKIE, Reviewer, SESSION_COOKIE, constant_time_eq, cookie, format_time, reviewer,
};
use crate::review::{self, REJECT_REASONS, ReviewError};
use crate::startup::AppState;
use crate::storage::review::{
    AuditEvent, AuditFilter, DecisionKind, Entry, Flag, QueueFilter, QueueItem, ReviewState,
    Transcription, TranscriptionStatus,
};
use crate::web::{Lang, PageCtx, WebError, html, local_path, percent_encode, see_other};

/// Captures per queue page.
const PAGE_SIZE: u64 = 50;

fn private(mut r: HttpResponse) -> HttpResponse {
    r.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    r
}

fn state_id(s: ReviewState) -> &'static str {
    match s {
        ReviewState::New => "state-new",
        ReviewState::Accepted => "state-accepted",
        ReviewState::Rejected => "state-rejected",
        ReviewState::Flagged => "state-flagged",
    }
}

fn flag_id(f: Flag) -> &'static str {
    match f {
        Flag::ChainGap => "flag-chain_gap",
        Flag::DevicesDisagree => "flag-devices_disagree",
        Flag::DuplicatePhoto => "flag-duplicate_photo",
        Flag::TimeFar => "flag-time_far",
    }
}

fn status_id(t: Option<&Transcription>) -> &'static str {
    status_label(t.map(|t| t.status))
}

fn status_label(status: Option<TranscriptionStatus>) -> &'static str {
    match status {
        None => "transcription-none",
        Some(TranscriptionStatus::Pending) => "transcription-pending",
        Some(TranscriptionStatus::Disputed) => "transcription-disputed",
        Some(TranscriptionStatus::Verified) => "transcription-verified",
    }
}

fn reason_id(code: &str) -> Option<&'static str> {
    match code {
        "not_a_protocol" => Some("reason-not_a_protocol"),
        "unreadable" => Some("reason-unreadable"),
        "wrong_precinct" => Some("reason-wrong_precinct"),
        "duplicate" => Some("reason-duplicate"),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Login and logout.

#[derive(Template)]
#[template(path = "review/login.html")]
struct LoginPage {
    ctx: PageCtx,
    form_csrf: String,
    next: String,
    username: String,
    error: Option<&'static str>,
}

/// `?next=` of the login page.
#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

fn login_form(
    req: &HttpRequest,
    state: &AppState,
    next: &str,
    username: String,
    error: Option<&'static str>,
    status: actix_web::http::StatusCode,
) -> Result<HttpResponse, WebError> {
    let token = req
        .cookie(LOGIN_CSRF_COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|v| v.len() == 43)
        .unwrap_or_else(|| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
        });
    let page = LoginPage {
        ctx: PageCtx::new(req),
        form_csrf: token.clone(),
        next: local_path(next).to_owned(),
        username,
        error,
    };
    let mut r = private(html(&page)?);
    *r.status_mut() = status;
    r.add_cookie(&cookie(state, LOGIN_CSRF_COOKIE, token, 3600))
        .map_err(|e| WebError::internal(&e))?;
    Ok(r)
}

/// `GET /review/login`.
pub async fn login_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<NextQuery>,
) -> Result<HttpResponse, WebError> {
    let next = query.next.clone().unwrap_or_else(|| "/review".into());
    login_form(&req, &state, &next, String::new(), None, actix_web::http::StatusCode::OK)
}

/// The login form.
#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    csrf: String,
    next: Option<String>,
}

/// `POST /review/login`.
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    let bound = req.cookie(LOGIN_CSRF_COOKIE).map(|c| c.value().to_owned()).unwrap_or_default();
    if bound.is_empty() || !constant_time_eq(bound.as_bytes(), form.csrf.as_bytes()) {
        return Err(WebError::Csrf);
    }
    let forwarded: Vec<&str> =
        req.headers().get_all("X-Forwarded-For").filter_map(|v| v.to_str().ok()).collect();
    let client = crate::throttle::client_address(
        req.peer_addr().map(|a| a.ip()),
        &forwarded,
        &state.settings.trusted_proxies,
    );
    let ttl_secs = state.settings.review.session_ttl_secs;
    let s = state.clone();
    let (username, password) = (form.username.clone(), form.password);
    let result = web::block(move || {
        review::login(
            &*s.review,
            &s.login_throttle,
            &username,
            &password,
            &client,
            hattama_core::now_ms(),
            ttl_secs * 1000,
        )
    })
    .await?;
    let next = form.next.unwrap_or_else(|| "/review".into());
    match result {
        Ok(session) => {
            tracing::info!(user = session.user.id, "login");
            let mut r = see_other(&next);
            let max_age = i64::try_from(ttl_secs).unwrap_or(i64::MAX);
            r.add_cookie(&cookie(&state, SESSION_COOKIE, session.token, max_age))
                .map_err(|e| WebError::internal(&e))?;
            Ok(private(r))
        }
        Err(ReviewError::BadLogin) => login_form(
            &req,
            &state,
            &next,
            form.username,
            Some("login-failed"),
            actix_web::http::StatusCode::UNAUTHORIZED,
        ),
        Err(e) => Err(e.into()),
    }
}

/// A form with only its CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// `POST /review/logout`.
pub async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, WebError> {
    let r = reviewer(&req, &state).await?;
    r.check_csrf(&form.csrf)?;
    let storage = state.review.clone();
    web::block(move || review::logout(&*storage, &r.token, &r.user, hattama_core::now_ms()))
        .await??;
    let mut resp = see_other("/review/login");
    resp.add_cookie(&cookie(&state, SESSION_COOKIE, String::new(), 0))
        .map_err(|e| WebError::internal(&e))?;
    Ok(private(resp))
}

// ---------------------------------------------------------------------------------------------
// The queue.

/// The queue's filter, as query parameters (carried to the capture pages for next/previous).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct QueueQuery {
    election: Option<String>,
    region: Option<String>,
    district: Option<String>,
    precinct: Option<String>,
    state: Option<String>,
    flag: Option<String>,
    page: Option<u64>,
}

fn some(s: &Option<String>) -> Option<String> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

impl QueueQuery {
    fn filter(&self, election: &str, user: &crate::storage::review::User) -> QueueFilter {
        QueueFilter {
            election: election.to_owned(),
            region: some(&self.region),
            district: some(&self.district),
            precinct: some(&self.precinct),
            state: some(&self.state).and_then(|s| ReviewState::parse(&s)),
            flag: some(&self.flag).and_then(|f| Flag::parse(&f)),
            scope: review::scope(user),
        }
    }

    /// The filter as a query string (without the page), to carry along.
    fn query_string(&self) -> String {
        let pairs = [
            ("election", &self.election),
            ("region", &self.region),
            ("district", &self.district),
            ("precinct", &self.precinct),
            ("state", &self.state),
            ("flag", &self.flag),
        ];
        pairs
            .iter()
            .filter_map(|(k, v)| some(v).map(|v| format!("{k}={}", percent_encode(&v))))
            .collect::<Vec<_>>()
            .join("&")
    }
}

fn with_query(path: &str, qs: &str) -> String {
    if qs.is_empty() { path.to_owned() } else { format!("{path}?{qs}") }
}

/// A capture in a list.
struct ItemView {
    id: String,
    short: String,
    url: String,
    page: u32,
    pages: u32,
    kind: String,
    state: &'static str,
    state_class: &'static str,
    flags: Vec<&'static str>,
    received: String,
    device: String,
    seq: u64,
}

fn item_view(item: &QueueItem, qs: &str) -> ItemView {
    let id = item.capture.to_hex();
    ItemView {
        short: id[..12].to_owned(),
        url: with_query(&format!("/review/captures/{id}"), qs),
        id,
        page: item.page,
        pages: item.pages,
        kind: item.kind.clone(),
        state: state_id(item.state),
        state_class: item.state.as_str(),
        flags: Flag::of_bits(item.flags).into_iter().map(flag_id).collect(),
        received: format_time(item.received_at_ms),
        device: item.device_id.chars().take(8).collect(),
        seq: item.seq,
    }
}

struct GroupView {
    precinct: String,
    number: u32,
    region: String,
    district: String,
    address: String,
    status: &'static str,
    items: Vec<ItemView>,
}

struct Choice {
    value: String,
    label: String,
    selected: bool,
}

#[derive(Template)]
#[template(path = "review/queue.html")]
struct QueuePage {
    ctx: PageCtx,
    elections: Vec<Choice>,
    regions: Vec<Choice>,
    districts: Vec<Choice>,
    states: Vec<Choice>,
    flags: Vec<Choice>,
    precinct: String,
    groups: Vec<GroupView>,
    total: u64,
    page: u64,
    pages: u64,
    prev_url: Option<String>,
    next_url: Option<String>,
    can_audit: bool,
}

fn choices(values: Vec<(String, String)>, current: &Option<String>) -> Vec<Choice> {
    let current = some(current);
    values
        .into_iter()
        .map(|(value, label)| Choice { selected: current.as_deref() == Some(&value), value, label })
        .collect()
}

/// `GET /review`: the queue.
pub async fn queue(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<QueueQuery>,
) -> Result<HttpResponse, WebError> {
    let r = reviewer(&req, &state).await?;
    let mut query = query.into_inner();
    let storage = state.review.clone();
    let page = query.page.unwrap_or(1).max(1);
    let asked = some(&query.election);
    let filter_query = query.clone();
    let user = r.user.clone();
    let (elections, election, data) = web::block(move || {
        storage.refresh_index()?;
        let elections = storage.election_ids()?;
        // The election asked for if it exists, else the first.
        let election =
            asked.filter(|e| elections.contains(e)).or_else(|| elections.first().cloned());
        let Some(election) = election else {
            return Ok::<_, ReviewError>((elections, None, None));
        };
        let filter = filter_query.filter(&election, &user);
        // A page far past the end (`page=18446744073709551615`) is an empty page, not an
        // overflow.
        let offset = (page - 1).saturating_mul(PAGE_SIZE).min(i64::MAX as u64);
        let found = storage.queue(&filter, offset, PAGE_SIZE)?;
        let regions = storage.regions(&election)?;
        let mut precincts: Vec<String> = found.items.iter().map(|i| i.precinct.clone()).collect();
        precincts.dedup();
        let statuses = storage.transcription_statuses(&election, &precincts)?;
        Ok((elections, Some(election), Some((found, regions, statuses))))
    })
    .await??;
    query.election = election.clone();
    let qs = query.query_string();
    let (found, regions, statuses) = data.unwrap_or_default();
    let mut groups: Vec<GroupView> = Vec::new();
    for item in &found.items {
        let view = item_view(item, &qs);
        match groups.last_mut() {
            Some(g) if g.precinct == item.precinct => g.items.push(view),
            _ => groups.push(GroupView {
                precinct: item.precinct.clone(),
                number: item.number,
                region: item.region.clone(),
                district: item.district.clone(),
                address: item.address.clone(),
                status: status_label(statuses.get(&item.precinct).copied()),
                items: vec![view],
            }),
        }
    }
    let scope = review::scope(&r.user);
    let visible_regions: Vec<&(String, Vec<String>)> = regions
        .iter()
        .filter(|(region, _)| scope.as_ref().is_none_or(|s| s.contains(region)))
        .collect();
    let region_choices = visible_regions.iter().map(|(r, _)| (r.clone(), r.clone())).collect();
    let current_region = some(&query.region);
    let district_choices = visible_regions
        .iter()
        .filter(|(r, _)| current_region.as_ref().is_none_or(|c| c == r))
        .flat_map(|(_, ds)| ds.iter().map(|d| (d.clone(), d.clone())))
        .collect();
    let lang = Lang::of_request(&req);
    let pages = found.total.div_ceil(PAGE_SIZE).max(1);
    let page_url = |p: u64| {
        let sep = if qs.is_empty() { "" } else { "&" };
        format!("/review?{qs}{sep}page={p}")
    };
    let view = QueuePage {
        ctx: r.ctx(&req),
        elections: choices(elections.iter().map(|e| (e.clone(), e.clone())).collect(), &election),
        regions: choices(region_choices, &query.region),
        districts: choices(district_choices, &query.district),
        states: choices(
            ReviewState::ALL
                .iter()
                .map(|s| (s.as_str().to_owned(), lang.t(state_id(*s))))
                .collect(),
            &query.state,
        ),
        flags: choices(
            Flag::ALL.iter().map(|f| (f.as_str().to_owned(), lang.t(flag_id(*f)))).collect(),
            &query.flag,
        ),
        precinct: some(&query.precinct).unwrap_or_default(),
        groups,
        total: found.total,
        page,
        pages,
        prev_url: (page > 1).then(|| page_url(page - 1)),
        next_url: (page < pages).then(|| page_url(page + 1)),
        can_audit: review::may_audit(&r.user),
    };
    Ok(private(html(&view)?))
}

// ---------------------------------------------------------------------------------------------
// A capture.

struct DecisionView {
    kind: &'static str,
    kind_class: &'static str,
    reason: Option<String>,
    at: String,
}

struct LineView {
    id: String,
    field: String,
    name: String,
    kind_class: &'static str,
    input: String,
    first: String,
    second: String,
    observer: String,
    verified: String,
    differs: bool,
}

struct ViolationView {
    name: String,
    hard: bool,
    left: u64,
    right: u64,
}

struct AuditRow {
    at: String,
    who: String,
    action: String,
    before: String,
    after: String,
}

/// What the transcription part of the page shows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The blind entry form (first or second entry).
    Form,
    /// Two entries differ: the resolution form, with both entries shown.
    Resolve,
    /// This user has entered; waiting for someone else.
    Waiting,
    /// Verified.
    Verified,
    /// Read only (supervisors, coordinators of other regions), not verified yet.
    ReadOnly,
}

#[derive(Template)]
#[template(path = "review/capture.html")]
struct CapturePage {
    ctx: PageCtx,
    item: ItemView,
    precinct: String,
    number: u32,
    region: String,
    district: String,
    address: String,
    photo_url: String,
    note: Option<String>,
    captured: String,
    page_label: String,
    decision: Option<DecisionView>,
    can_review: bool,
    reject_reasons: Vec<(&'static str, &'static str)>,
    back: String,
    queue_url: String,
    prev_url: Option<String>,
    next_url: Option<String>,
    siblings: Vec<ItemView>,
    status: &'static str,
    mode: Mode,
    lines: Vec<LineView>,
    entry_names: (String, String),
    show_observer: bool,
    violations: Vec<ViolationView>,
    error: Option<&'static str>,
    needs_reason: bool,
    reason: String,
    inconsistency_note: Option<String>,
    verified_at: Option<String>,
    audit: Vec<AuditRow>,
}

impl CapturePage {
    fn mode_is(&self, m: &str) -> bool {
        let mode = match self.mode {
            Mode::Form => "form",
            Mode::Resolve => "resolve",
            Mode::Waiting => "waiting",
            Mode::Verified => "verified",
            Mode::ReadOnly => "readonly",
        };
        mode == m
    }
}

/// A refused entry, shown again with its values.
struct Refused {
    values: BTreeMap<String, String>,
    reason: String,
    error: &'static str,
    violations: Vec<Violation>,
}

struct CaptureData {
    item: QueueItem,
    election: Election,
    manifest: Option<Manifest>,
    decision: Option<crate::storage::Decision>,
    siblings: Vec<QueueItem>,
    neighbours: (Option<Sha256Hash>, Option<Sha256Hash>),
    transcription: Option<Transcription>,
    entries: Vec<Entry>,
    audit: Vec<AuditEvent>,
}

async fn load_capture(
    state: &web::Data<AppState>,
    r: &Reviewer,
    id: Sha256Hash,
    query: &QueueQuery,
) -> Result<CaptureData, WebError> {
    let s = state.clone();
    let user = r.user.clone();
    let query = query.clone();
    let data = web::block(move || {
        s.review.refresh_index()?;
        let item = s.review.queue_item(&id)?.ok_or(ReviewError::NotFound("capture".into()))?;
        if !review::may_see(&user, &item.region) {
            return Err(ReviewError::Forbidden);
        }
        let election =
            s.storage.election(&item.election)?.ok_or(ReviewError::NotFound("election".into()))?;
        let manifest =
            s.storage.evidence(&id)?.and_then(|(m, _)| serde_json::from_slice::<Manifest>(&m).ok());
        let filter = query.filter(&item.election, &user);
        Ok(CaptureData {
            decision: s.review.decision(&id)?,
            siblings: s.review.precinct_items(&item.election, &item.precinct)?,
            neighbours: s.review.queue_neighbours(&filter, &item)?,
            transcription: s.review.transcription(&item.election, &item.precinct)?,
            entries: s.review.entries(&item.election, &item.precinct)?,
            audit: s.review.audit_events(&AuditFilter {
                capture: Some(id.to_hex()),
                precinct: Some((item.election.clone(), item.precinct.clone())),
                limit: 200,
            })?,
            item,
            election,
            manifest,
        })
    })
    .await??;
    Ok(data)
}

fn capture_page(
    req: &HttpRequest,
    r: &Reviewer,
    d: CaptureData,
    query: &QueueQuery,
    refused: Option<Refused>,
) -> CapturePage {
    let lang = Lang::of_request(req);
    let mut q = query.clone();
    q.election = Some(d.item.election.clone());
    let qs = q.query_string();
    let can_review = review::may_review(&r.user, &d.item.region);
    let entered = d.entries.iter().any(|e| e.user_id == r.user.id);
    let status = d.transcription.as_ref().map(|t| t.status);
    let mode = match status {
        Some(TranscriptionStatus::Verified) => Mode::Verified,
        _ if !can_review => Mode::ReadOnly,
        _ if entered => Mode::Waiting,
        Some(TranscriptionStatus::Disputed) => Mode::Resolve,
        _ => Mode::Form,
    };
    // Blind entry: other people's numbers stay hidden until this user has entered (or cannot).
    let blind = matches!(mode, Mode::Form) && status == Some(TranscriptionStatus::Pending);
    let observer = d.manifest.as_ref().and_then(|m| m.transcription.clone());
    let show_observer = observer.is_some() && mode != Mode::Form;
    let first = d.entries.first();
    let second = d.entries.get(1);
    let show = |v: Option<&u64>| v.map(|v| v.to_string()).unwrap_or_default();
    let lines = d
        .election
        .protocol
        .lines
        .iter()
        .map(|l| {
            let a = first.and_then(|e| e.values.get(&l.id));
            let b = second.and_then(|e| e.values.get(&l.id));
            LineView {
                id: l.id.clone(),
                field: format!("line:{}", l.id),
                name: lang.pick(&l.names).to_owned(),
                kind_class: match l.kind {
                    LineKind::Count => "count",
                    LineKind::Candidate => "candidate",
                    LineKind::AgainstAll => "against_all",
                },
                input: refused
                    .as_ref()
                    .and_then(|f| f.values.get(&l.id).cloned())
                    .unwrap_or_default(),
                first: if mode == Mode::Resolve || mode == Mode::Verified {
                    show(a)
                } else {
                    String::new()
                },
                second: if mode == Mode::Resolve || mode == Mode::Verified {
                    show(b)
                } else {
                    String::new()
                },
                observer: if show_observer {
                    show(observer.as_ref().and_then(|o| o.get(&l.id)))
                } else {
                    String::new()
                },
                verified: show(d.transcription.as_ref().and_then(|t| t.values.get(&l.id))),
                differs: mode == Mode::Resolve && a != b,
            }
        })
        .collect();
    let relation_name = |id: &str| {
        d.election
            .protocol
            .relations
            .iter()
            .find(|r| r.id == id)
            .map_or_else(|| id.to_owned(), |r| lang.pick(&r.names).to_owned())
    };
    let violations_of = |vs: &[Violation]| -> Vec<ViolationView> {
        vs.iter()
            .map(|v| ViolationView {
                name: relation_name(&v.relation),
                hard: v.severity == Severity::Hard,
                left: v.left,
                right: v.right,
            })
            .collect()
    };
    let violations = match (&refused, &d.transcription) {
        (Some(f), _) => violations_of(&f.violations),
        (None, Some(t)) if t.status == TranscriptionStatus::Verified => {
            violations_of(&d.election.protocol.check(&t.values))
        }
        _ => Vec::new(),
    };
    let needs_reason =
        refused.as_ref().is_some_and(|f| f.violations.iter().any(|v| v.severity == Severity::Hard));
    let audit = d
        .audit
        .iter()
        .map(|e| {
            let hide = blind && e.action == "entry";
            let hidden = lang.t("audit-hidden-blind");
            AuditRow {
                at: format_time(e.at_ms),
                who: e.user_name.clone().unwrap_or_else(|| "—".into()),
                action: lang.t(&format!("audit-action-{}", e.action)),
                before: if hide { hidden.clone() } else { e.before.clone().unwrap_or_default() },
                after: if hide { hidden } else { e.after.clone().unwrap_or_default() },
            }
        })
        .collect();
    let item = &d.item;
    let capture_url = |h: &Sha256Hash| with_query(&format!("/review/captures/{h}"), &qs);
    CapturePage {
        ctx: r.ctx(req),
        precinct: item.precinct.clone(),
        number: item.number,
        region: item.region.clone(),
        district: item.district.clone(),
        address: item.address.clone(),
        photo_url: format!("/photos/{}", item.photo_sha256),
        note: d.manifest.as_ref().and_then(|m| m.note.clone()),
        captured: format_time(item.captured_at_ms),
        page_label: format!("{}/{}", item.page, item.pages),
        decision: d.decision.as_ref().map(|dec| DecisionView {
            kind: state_id(dec.kind.into()),
            kind_class: ReviewState::from(dec.kind).as_str(),
            reason: dec
                .reason
                .as_ref()
                .map(|r| reason_id(r).map_or_else(|| r.clone(), |id| lang.t(id))),
            at: format_time(dec.at_ms),
        }),
        can_review,
        reject_reasons: REJECT_REASONS
            .iter()
            .filter_map(|c| reason_id(c).map(|id| (*c, id)))
            .collect(),
        back: qs.clone(),
        queue_url: with_query("/review", &qs),
        prev_url: d.neighbours.0.as_ref().map(capture_url),
        next_url: d.neighbours.1.as_ref().map(capture_url),
        siblings: d.siblings.iter().map(|s| item_view(s, &qs)).collect(),
        status: status_id(d.transcription.as_ref()),
        mode,
        lines,
        entry_names: (
            first.map(|e| e.user_name.clone()).unwrap_or_default(),
            second.map(|e| e.user_name.clone()).unwrap_or_default(),
        ),
        show_observer,
        violations,
        error: refused.as_ref().map(|f| f.error),
        needs_reason,
        reason: refused.as_ref().map(|f| f.reason.clone()).unwrap_or_default(),
        inconsistency_note: d.transcription.as_ref().and_then(|t| t.inconsistency_note.clone()),
        verified_at: d.transcription.as_ref().and_then(|t| t.verified_at_ms).map(format_time),
        audit,
        item: item_view(item, &qs),
    }
}

fn parse_id(s: &str) -> Result<Sha256Hash, WebError> {
    Sha256Hash::from_hex(s).ok_or(WebError::NotFound)
}

/// `GET /review/captures/{id}`.
pub async fn capture(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<QueueQuery>,
) -> Result<HttpResponse, WebError> {
    let r = reviewer(&req, &state).await?;
    let id = parse_id(&path)?;
    let data = load_capture(&state, &r, id, &query).await?;
    Ok(private(html(&capture_page(&req, &r, data, &query, None))?))
}

/// Parses the filter a form carries along (`back`); a malformed one is dropped.
fn back_query(qs: &str) -> QueueQuery {
    web::Query::<QueueQuery>::from_query(qs).map(|q| q.into_inner()).unwrap_or_default()
}

/// The decision form.
#[derive(Deserialize)]
pub struct DecisionForm {
    csrf: String,
    kind: String,
    reason: Option<String>,
    back: Option<String>,
}

/// `POST /review/captures/{id}/decision`.
pub async fn decide(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<DecisionForm>,
) -> Result<HttpResponse, WebError> {
    let r = reviewer(&req, &state).await?;
    r.check_csrf(&form.csrf)?;
    let id = parse_id(&path)?;
    let kind = DecisionKind::parse(&form.kind).ok_or(WebError::BadRequest)?;
    let reason = form.reason.clone();
    let storage = state.review.clone();
    let user = r.user.clone();
    web::block(move || {
        review::record_decision(
            &*storage,
            &user,
            &id,
            kind,
            reason.as_deref(),
            hattama_core::now_ms(),
        )
    })
    .await??;
    let back = back_query(form.back.as_deref().unwrap_or(""));
    Ok(private(see_other(&with_query(&format!("/review/captures/{id}"), &back.query_string()))))
}

/// `POST /review/captures/{id}/entry`: a transcription entry of the capture's precinct.
pub async fn enter(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, WebError> {
    let r = reviewer(&req, &state).await?;
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    r.check_csrf(&field("csrf").unwrap_or_default())?;
    let id = parse_id(&path)?;
    let back = back_query(&field("back").unwrap_or_default());
    let reason = field("reason").unwrap_or_default();
    let raw: BTreeMap<String, String> = form
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("line:").map(|l| (l.to_owned(), v.trim().to_owned())))
        .collect();
    let parsed: Result<BTreeMap<String, u64>, ()> =
        raw.iter().map(|(k, v)| v.parse::<u64>().map(|n| (k.clone(), n)).map_err(|_| ())).collect();
    let refuse = |error: &'static str, violations: Vec<Violation>| Refused {
        values: raw.clone(),
        reason: reason.clone(),
        error,
        violations,
    };
    let outcome = match parsed {
        Err(()) => Err(refuse("entry-error-numbers", Vec::new())),
        Ok(values) => {
            let s = state.clone();
            let user = r.user.clone();
            let reason2 = reason.clone();
            let result = web::block(move || {
                let item =
                    s.review.queue_item(&id)?.ok_or(ReviewError::NotFound("capture".into()))?;
                let election = s
                    .storage
                    .election(&item.election)?
                    .ok_or(ReviewError::NotFound("election".into()))?;
                review::record_entry(
                    &*s.review,
                    &election,
                    &user,
                    &item.precinct,
                    values,
                    Some(&reason2),
                    hattama_core::now_ms(),
                )
            })
            .await?;
            match result {
                Ok(_) => Ok(()),
                Err(ReviewError::HardRules(v)) => Err(refuse("entry-error-hard", v)),
                Err(ReviewError::Invalid(_)) => Err(refuse("entry-error-invalid", Vec::new())),
                Err(ReviewError::AlreadyEntered) => Err(refuse("entry-error-already", Vec::new())),
                Err(ReviewError::AlreadyVerified) => {
                    Err(refuse("entry-error-verified", Vec::new()))
                }
                Err(ReviewError::Conflict) => Err(refuse("entry-error-conflict", Vec::new())),
                Err(e) => return Err(e.into()),
            }
        }
    };
    match outcome {
        Ok(()) => Ok(private(see_other(&with_query(
            &format!("/review/captures/{id}"),
            &back.query_string(),
        )))),
        Err(refused) => {
            let data = load_capture(&state, &r, id, &back).await?;
            let mut resp = html(&capture_page(&req, &r, data, &back, Some(refused)))?;
            *resp.status_mut() = actix_web::http::StatusCode::UNPROCESSABLE_ENTITY;
            Ok(private(resp))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The audit export.

async fn all_audit(
    req: &HttpRequest,
    state: &web::Data<AppState>,
) -> Result<Vec<AuditEvent>, WebError> {
    let r = reviewer(req, state).await?;
    if !review::may_audit(&r.user) {
        return Err(WebError::Forbidden);
    }
    let (s, user) = (state.clone(), r.user.clone());
    Ok(web::block(move || {
        let events = s.review.audit_events(&AuditFilter::default())?;
        review::audit_for(&*s.review, &|id| s.storage.election(id), &user, events)
    })
    .await??)
}

/// One CSV field: quoted, quotes doubled, and a leading `= + - @` (or tab, CR) neutralised with
/// an apostrophe so that a spreadsheet does not run it as a formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `GET /review/audit.csv`: the whole audit trail (admins and supervisors).
pub async fn audit_csv(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let events = all_audit(&req, &state).await?;
    let mut out = String::from(
        "id,time_utc,at_ms,user_id,user,action,election,precinct,capture,before,after\r\n",
    );
    for e in &events {
        let opt = |v: &Option<String>| csv_field(v.as_deref().unwrap_or(""));
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{}\r\n",
            e.id,
            csv_field(&format_time(e.at_ms)),
            e.at_ms,
            e.user_id.map(|i| i.to_string()).unwrap_or_default(),
            opt(&e.user_name),
            csv_field(&e.action),
            opt(&e.election),
            opt(&e.precinct),
            opt(&e.capture),
            opt(&e.before),
            opt(&e.after),
        ));
    }
    Ok(private(
        HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header((
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"hattama-audit.csv\"",
            ))
            .body(out),
    ))
}

/// `GET /review/audit.json`: the whole audit trail as a JSON array (admins and supervisors).
pub async fn audit_json(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let events = all_audit(&req, &state).await?;
    Ok(private(
        HttpResponse::Ok()
            .insert_header((
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"hattama-audit.json\"",
            ))
            .json(events),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formula_safe() {
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "\"'=HYPERLINK(1)\"");
        assert_eq!(csv_field("x,y\nz"), "\"x,y\nz\"");
    }

    #[test]
    fn the_filter_round_trips_through_its_query_string() {
        let q = QueueQuery {
            election: Some("e 1".into()),
            region: Some("Алматы".into()),
            state: Some("new".into()),
            page: Some(3),
            ..QueueQuery::default()
        };
        let back = back_query(&q.query_string());
        assert_eq!(back.query_string(), q.query_string());
        assert_eq!(back.region.as_deref(), Some("Алматы"));
        assert_eq!(back.page, None, "the page is not carried");
    }
}
