//! The review pages and forms.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use hattama_core::election::{Election, LineKind, Severity, Violation};
use hattama_core::evidence::{Manifest, Sha256Hash};
use serde::Deserialize;

use super::{
    Clock, LOGIN_CSRF_COOKIE, Reviewer, SESSION_COOKIE, constant_time_eq, cookie, format_time,
    reviewer,
};
use crate::review::{self, Pick, REJECT_REASONS, ReviewError};
use crate::startup::AppState;
use crate::storage::review::{
    AuditEvent, AuditFilter, DecisionKind, DecisionRecord, Entry, Flag, QueueFilter, QueueItem,
    QueueView, ReviewState, ReviewStorage, Transcription, TranscriptionStatus, User,
};
use crate::web::i18n::IntoArg;
use crate::web::{Lang, PageCtx, WebError, html, local_path, percent_encode, see_other};

/// Captures per queue page.
const PAGE_SIZE: u64 = 50;

pub(super) fn private(mut r: HttpResponse) -> HttpResponse {
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
    r.add_cookie(&cookie(req, state, LOGIN_CSRF_COOKIE, token, 3600))
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
            r.add_cookie(&cookie(&req, &state, SESSION_COOKIE, session.token, max_age))
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
    resp.add_cookie(&cookie(&req, &state, SESSION_COOKIE, String::new(), 0))
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
    view: Option<String>,
    page: Option<u64>,
    /// After a decision or an entry: what was done (`accepted`, `entered`, …), shown as a
    /// confirmation line on the next page; never carried further.
    done: Option<String>,
    /// … and to which capture.
    after: Option<String>,
}

fn some(s: &Option<String>) -> Option<String> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// The queue's views by transcription state: URL spelling and message id.
const VIEWS: [(&str, &str); 3] =
    [("mine", "view-mine"), ("disputed", "view-disputed"), ("inconsistent", "view-inconsistent")];

fn view_of(s: &str, user: &User) -> Option<QueueView> {
    match s {
        "mine" => Some(QueueView::NeedsEntry(user.id)),
        "disputed" => Some(QueueView::Disputed(user.id)),
        "inconsistent" => Some(QueueView::Inconsistent),
        _ => None,
    }
}

impl QueueQuery {
    fn filter(&self, election: &str, user: &User) -> QueueFilter {
        QueueFilter {
            election: election.to_owned(),
            region: some(&self.region),
            district: some(&self.district),
            precinct: some(&self.precinct),
            state: some(&self.state).and_then(|s| ReviewState::parse(&s)),
            flag: some(&self.flag).and_then(|f| Flag::parse(&f)),
            scope: review::scope(user),
            view: some(&self.view).and_then(|v| view_of(&v, user)),
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
            ("view", &self.view),
        ];
        pairs
            .iter()
            .filter_map(|(k, v)| some(v).map(|v| format!("{k}={}", percent_encode(&v))))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The capture named by `after`, if it is one.
    fn after(&self) -> Option<Sha256Hash> {
        some(&self.after).and_then(|a| Sha256Hash::from_hex(&a))
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
    kind: &'static str,
    state: &'static str,
    state_class: &'static str,
    flags: Vec<&'static str>,
    received: String,
    device: String,
    seq: u64,
    /// The first capture of the queue page: `n` opens it.
    hotkey: bool,
}

fn kind_id(kind: &str) -> &'static str {
    match kind {
        "posted" => "kind-posted",
        "handed" => "kind-handed",
        "not-posted" => "kind-not-posted",
        _ => "kind-other",
    }
}

fn item_view(item: &QueueItem, qs: &str, clock: Clock) -> ItemView {
    let id = item.capture.to_hex();
    ItemView {
        short: id[..12].to_owned(),
        url: with_query(&format!("/review/captures/{id}"), qs),
        id,
        page: item.page,
        pages: item.pages,
        kind: kind_id(&item.kind),
        state: state_id(item.state),
        state_class: item.state.as_str(),
        flags: Flag::of_bits(item.flags).into_iter().map(flag_id).collect(),
        received: clock.time(item.received_at_ms),
        device: item.device_id.chars().take(8).collect(),
        seq: item.seq,
        hotkey: false,
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

/// A view of the queue as a tab: its name, its count under the other filters, its link.
struct ViewTab {
    label: String,
    count: u64,
    url: String,
    current: bool,
    id: &'static str,
}

/// The confirmation line after a decision or an entry, with a link back to that capture.
struct DoneView {
    text: String,
    again_url: String,
}

/// The confirmation line of `done` on `item` (`None` for an unknown word).
fn done_view(lang: Lang, done: &str, item: &QueueItem, qs: &str) -> Option<DoneView> {
    let id = match done {
        "accepted" => "done-accepted",
        "rejected" => "done-rejected",
        "flagged" => "done-flagged",
        "entered" => "done-entered",
        "verified" => "done-verified",
        "disputed" => "done-disputed",
        "resolved" => "done-resolved",
        _ => return None,
    };
    let what = lang.t_args(
        "done-what",
        &[
            ("number", item.number.into_arg()),
            ("page", item.page.into_arg()),
            ("pages", item.pages.into_arg()),
        ],
    );
    Some(DoneView {
        text: lang.t1(id, "what", what),
        again_url: with_query(&format!("/review/captures/{}", item.capture), qs),
    })
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
    views: Vec<ViewTab>,
    view: String,
    precinct: String,
    groups: Vec<GroupView>,
    total: u64,
    page: u64,
    pages: u64,
    prev_url: Option<String>,
    next_url: Option<String>,
    can_audit: bool,
    done: Option<DoneView>,
    zone: String,
    /// Filters of the address that name nothing (`state=pending`): ignored, and said so.
    ignored: Option<String>,
    /// The current view is empty: its name, and the first view with work (label, count, URL).
    empty_view: Option<String>,
    next_view: Option<(String, u64, String)>,
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
    // A filter that names no state, flag or view is dropped, and the page says so, rather than
    // showing everything as if it had been applied.
    let mut ignored = Vec::new();
    if let Some(s) = some(&query.state).filter(|s| ReviewState::parse(s).is_none()) {
        ignored.push(format!("state={s}"));
        query.state = None;
    }
    if let Some(f) = some(&query.flag).filter(|f| Flag::parse(f).is_none()) {
        ignored.push(format!("flag={f}"));
        query.flag = None;
    }
    if let Some(v) = some(&query.view).filter(|v| !VIEWS.iter().any(|(w, _)| w == v)) {
        ignored.push(format!("view={v}"));
        query.view = None;
    }
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
        // Each view's count under the other filters (kept between requests by the storage).
        let mut counts = Vec::new();
        for view in std::iter::once(None).chain(VIEWS.iter().map(|(v, _)| view_of(v, &user))) {
            let f = QueueFilter { view, ..filter.clone() };
            counts.push(storage.queue(&f, 0, 0)?.total);
        }
        let regions = storage.regions(&election)?;
        let mut precincts: Vec<String> = found.items.iter().map(|i| i.precinct.clone()).collect();
        precincts.dedup();
        let statuses = storage.transcription_statuses(&election, &precincts)?;
        let after = match filter_query.after() {
            Some(id) => storage.queue_item(&id)?,
            None => None,
        };
        Ok((elections, Some(election), Some((found, regions, statuses, counts, after))))
    })
    .await??;
    query.election = election.clone();
    let qs = query.query_string();
    let clock = r.clock;
    let (found, regions, statuses, counts, after) = data.unwrap_or_default();
    let mut groups: Vec<GroupView> = Vec::new();
    for item in &found.items {
        let view = item_view(item, &qs, clock);
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
    if let Some(first) = groups.first_mut().and_then(|g| g.items.first_mut()) {
        first.hotkey = true;
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
    let current_view = some(&query.view).filter(|v| VIEWS.iter().any(|(w, _)| w == v));
    let views = std::iter::once(("", "view-all"))
        .chain(VIEWS)
        .zip(counts.iter().copied().chain(std::iter::repeat(0)))
        .map(|((value, label), count)| {
            let q =
                QueueQuery { view: (!value.is_empty()).then(|| value.to_owned()), ..query.clone() };
            ViewTab {
                label: lang.t(label),
                count,
                url: with_query("/review", &q.query_string()),
                current: current_view.as_deref().unwrap_or("") == value,
                id: label,
            }
        })
        .collect::<Vec<ViewTab>>();
    // An empty view says so, and where the work is.
    let empty_view = (groups.is_empty() && page == 1)
        .then(|| views.iter().find(|v| v.current && !v.id.is_empty() && v.id != "view-all"))
        .flatten()
        .map(|v| v.label.clone());
    let next_view = empty_view.as_ref().and_then(|_| {
        // Another view with work first, else all captures.
        let work = |v: &&ViewTab| !v.current && v.count > 0;
        views
            .iter()
            .filter(|v| v.id != "view-all")
            .find(work)
            .or_else(|| views.iter().find(work))
            .map(|v| (v.label.clone(), v.count, v.url.clone()))
    });
    let done = match (&after, some(&query.done)) {
        (Some(item), Some(done)) => done_view(lang, &done, item, &qs),
        _ => None,
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
        views,
        view: current_view.unwrap_or_default(),
        precinct: some(&query.precinct).unwrap_or_default(),
        groups,
        total: found.total,
        page,
        pages,
        prev_url: (page > 1).then(|| page_url(page - 1)),
        next_url: (page < pages).then(|| page_url(page + 1)),
        can_audit: review::may_audit(&r.user),
        done,
        zone: clock.zone(),
        ignored: (!ignored.is_empty()).then(|| ignored.join(", ")),
        empty_view,
        next_view,
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
    by: String,
}

struct LineView {
    id: String,
    field: String,
    pick_field: String,
    name: String,
    kind_class: &'static str,
    /// The form's value (blind entry) or the typed value (resolution).
    input: String,
    first: String,
    second: String,
    observer: String,
    verified: String,
    /// Resolution: the two entries differ on this line.
    differs: bool,
    /// Resolution: the observer's value is a third choice.
    observer_extra: bool,
    /// Resolution: the choice made (`first`, `second`, `observer`, `typed`) or none.
    picked: &'static str,
    /// The line is in a hard rule the refused entry broke.
    invalid: bool,
    /// Where `e` (and, after a refusal, the page's focus) goes.
    focus: bool,
}

struct ViolationView {
    name: String,
    hard: bool,
    left: u64,
    right: u64,
}

struct AuditRow {
    at: String,
    text: String,
    detail: String,
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
    decision_seen: i64,
    can_review: bool,
    reject_reasons: Vec<(&'static str, &'static str)>,
    back: String,
    queue_url: String,
    prev_url: Option<String>,
    next_url: Option<String>,
    siblings: Vec<ItemView>,
    status: &'static str,
    entry_seen: &'static str,
    mode: Mode,
    lines: Vec<LineView>,
    entry_names: (String, String),
    show_observer: bool,
    violations: Vec<ViolationView>,
    error: Option<&'static str>,
    decision_stale: Option<String>,
    /// Why a decision was refused (a rejection without one of the reasons).
    decision_error: Option<&'static str>,
    entry_stale: Option<String>,
    autofocus: bool,
    reason: String,
    inconsistency_note: Option<String>,
    verified_at: Option<String>,
    audit: Vec<AuditRow>,
    done: Option<DoneView>,
    zone: String,
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

/// A refused entry, shown again with what was typed and picked.
struct Refused {
    values: BTreeMap<String, String>,
    picks: BTreeMap<String, String>,
    reason: String,
    error: &'static str,
    violations: Vec<Violation>,
    /// Refused because the precinct changed since the form was made: the page says how.
    stale: bool,
}

struct CaptureData {
    item: QueueItem,
    election: Election,
    manifest: Option<Manifest>,
    decision: Option<DecisionRecord>,
    siblings: Vec<QueueItem>,
    neighbours: (Option<Sha256Hash>, Option<Sha256Hash>),
    transcription: Option<Transcription>,
    entries: Vec<Entry>,
    audit: Vec<AuditEvent>,
    after: Option<QueueItem>,
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
        let after = match query.after() {
            Some(a) => s.review.queue_item(&a)?.filter(|a| review::may_see(&user, &a.region)),
            None => None,
        };
        Ok(CaptureData {
            decision: s.review.decision_record(&id)?,
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
            after,
        })
    })
    .await??;
    Ok(data)
}

/// A translated review state or reason of a decision as JSON in the audit trail.
fn decision_words(lang: Lang, v: &serde_json::Value) -> (String, String) {
    let kind = v["kind"].as_str().and_then(DecisionKind::parse);
    let state = kind.map_or_else(|| "?".to_owned(), |k| lang.t(state_id(k.into())));
    let reason = v["reason"]
        .as_str()
        .map(|r| reason_id(r).map_or_else(|| r.to_owned(), |id| lang.t(id)))
        .unwrap_or_default();
    (state, reason)
}

/// One audit event as a sentence, with the stored JSON one click away (hidden, like the
/// numbers, from a user who has still to make a blind entry).
fn audit_row(lang: Lang, clock: Clock, e: &AuditEvent, blind: bool) -> AuditRow {
    let json = |s: &Option<String>| {
        s.as_deref().and_then(|s| serde_json::from_str(s).ok()).unwrap_or(serde_json::Value::Null)
    };
    let (before, after) = (json(&e.before), json(&e.after));
    let who = e.user_name.clone().unwrap_or_else(|| "—".into());
    let username = after["username"].as_str().unwrap_or("").to_owned();
    let hide = blind && matches!(e.action.as_str(), "entry" | "entry_resolution" | "entry_import");
    let text = match e.action.as_str() {
        "decision" => {
            let (state, reason) = decision_words(lang, &after);
            let id = if reason.is_empty() { "audit-decision" } else { "audit-decision-reason" };
            let mut text = lang.t_args(
                id,
                &[
                    ("who", who.into_arg()),
                    ("state", state.into_arg()),
                    ("reason", reason.into_arg()),
                ],
            );
            if !before.is_null() {
                text.push(' ');
                text.push_str(&lang.t1("audit-was", "state", decision_words(lang, &before).0));
            }
            text
        }
        "entry" | "entry_resolution" | "entry_import" if hide => {
            lang.t1("audit-entry-hidden", "who", who)
        }
        "entry" | "entry_resolution" | "entry_import" => {
            let status = after["state"]["status"].as_str().and_then(TranscriptionStatus::parse);
            let status = lang.t(status_label(status));
            let id = format!("audit-{}", e.action);
            lang.t_args(&id, &[("who", who.into_arg()), ("status", status.into_arg())])
        }
        "login_failed" => lang.t1("audit-login_failed", "username", username),
        "user_created" | "user_disabled" | "password_reset" => {
            lang.t1(&format!("audit-{}", e.action), "username", username)
        }
        "login" | "logout" => lang.t1(&format!("audit-{}", e.action), "who", who),
        other => format!("{who}: {other}"),
    };
    let detail = if hide {
        lang.t("audit-hidden-blind")
    } else if matches!(e.action.as_str(), "entry" | "entry_resolution" | "entry_import") {
        entry_detail(&before, &after)
    } else if e.action == "decision" {
        // The sentence says it all.
        String::new()
    } else {
        [e.before.as_deref(), e.after.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" → ")
    };
    AuditRow { at: clock.time(e.at_ms), text, detail }
}

/// An entry's figures as a reader says them: `7.1: — → 142; 7.2: 90 → 92` (the precinct's
/// figures before it, then what was entered), with the reason the entry gave, if any.
fn entry_detail(before: &serde_json::Value, after: &serde_json::Value) -> String {
    let Some(values) = after["entry"].as_object() else { return String::new() };
    let mut lines: Vec<String> = values
        .iter()
        .map(|(line, v)| {
            let was =
                before["values"][line.as_str()].as_u64().map_or("—".into(), |b| b.to_string());
            let now = v.as_u64().map_or("—".into(), |n| n.to_string());
            format!("{line}: {was} → {now}")
        })
        .collect();
    // Line ids in protocol order: "7.1" before "10".
    lines.sort_by_key(|l| {
        let id = l.split(':').next().unwrap_or_default();
        id.split('.').map(|p| p.parse::<u32>().unwrap_or(u32::MAX)).collect::<Vec<_>>()
    });
    let mut text = lines.join("; ");
    if let Some(reason) = after["reason"].as_str().filter(|r| !r.is_empty()) {
        text.push_str(&format!(" — «{reason}»"));
    }
    text
}

fn capture_page(
    req: &HttpRequest,
    r: &Reviewer,
    d: CaptureData,
    query: &QueueQuery,
    refused: Option<Refused>,
    decision_stale: bool,
) -> CapturePage {
    let lang = Lang::of_request(req);
    let clock = r.clock;
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
    // The lines of the hard rules the refused entry broke: the fields to look at again.
    let invalid: Vec<&str> = refused
        .iter()
        .flat_map(|f| &f.violations)
        .filter(|v| v.severity == Severity::Hard)
        .filter_map(|v| d.election.protocol.relations.iter().find(|r| r.id == v.relation))
        .flat_map(|r| r.left.iter().chain(&r.right).map(String::as_str))
        .collect();
    let resolve = mode == Mode::Resolve;
    let mut lines: Vec<LineView> = d
        .election
        .protocol
        .lines
        .iter()
        .map(|l| {
            let a = first.and_then(|e| e.values.get(&l.id));
            let b = second.and_then(|e| e.values.get(&l.id));
            let o = observer.as_ref().and_then(|o| o.get(&l.id));
            let differs = resolve && a != b;
            let picked = match refused.as_ref().and_then(|f| f.picks.get(&l.id)).map(|s| s.as_str())
            {
                Some("first") => "first",
                Some("second") => "second",
                Some("observer") => "observer",
                Some("typed") => "typed",
                _ if resolve && !differs => "first",
                _ => "",
            };
            let both = mode == Mode::Resolve || mode == Mode::Verified;
            LineView {
                id: l.id.clone(),
                field: format!("line:{}", l.id),
                pick_field: format!("pick:{}", l.id),
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
                first: if both { show(a) } else { String::new() },
                second: if both { show(b) } else { String::new() },
                observer: if show_observer { show(o) } else { String::new() },
                verified: show(d.transcription.as_ref().and_then(|t| t.values.get(&l.id))),
                differs,
                observer_extra: resolve && show_observer && o.is_some() && o != a && o != b,
                picked,
                invalid: invalid.contains(&l.id.as_str()),
                focus: false,
            }
        })
        .collect();
    // `e` goes to the first line to look at: one a broken rule names, else (resolving) the
    // first where the entries differ, else the first.
    let focus = lines
        .iter()
        .position(|l| l.invalid)
        .or_else(|| lines.iter().position(|l| l.differs))
        .unwrap_or(0);
    if let Some(l) = lines.get_mut(focus) {
        l.focus = true;
    }
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
    let audit = d.audit.iter().map(|e| audit_row(lang, clock, e, blind)).collect();
    // A refusal because the page was stale says what happened meanwhile.
    let decision_stale = if decision_stale {
        d.decision.as_ref().map(|rec| {
            let (state, reason) = decision_words(lang, &serde_json::json!(rec.decision));
            let state = if reason.is_empty() { state } else { format!("{state} — {reason}") };
            lang.t_args(
                "stale-decision",
                &[
                    ("who", rec.user_name.clone().into_arg()),
                    ("time", clock.time(rec.decision.at_ms).into_arg()),
                    ("state", state.into_arg()),
                ],
            )
        })
    } else {
        None
    };
    let entry_stale = if refused.as_ref().is_some_and(|f| f.stale) {
        d.entries.last().map(|e| {
            lang.t_args(
                "stale-entry",
                &[
                    ("who", e.user_name.clone().into_arg()),
                    ("time", clock.time(e.at_ms).into_arg()),
                    ("status", lang.t(status_label(status)).into_arg()),
                ],
            )
        })
    } else {
        None
    };
    let item = &d.item;
    let capture_url = |h: &Sha256Hash| with_query(&format!("/review/captures/{h}"), &qs);
    let done = match (&d.after, some(&query.done)) {
        (Some(after), Some(done)) => done_view(lang, &done, after, &qs),
        _ => None,
    };
    CapturePage {
        ctx: r.ctx(req),
        precinct: item.precinct.clone(),
        number: item.number,
        region: item.region.clone(),
        district: item.district.clone(),
        address: item.address.clone(),
        photo_url: format!("/photos/{}", item.photo_sha256),
        note: d.manifest.as_ref().and_then(|m| m.note.clone()),
        captured: clock.time(item.captured_at_ms),
        page_label: format!("{}/{}", item.page, item.pages),
        decision_seen: d.decision.as_ref().map_or(0, |rec| rec.id),
        decision: d.decision.as_ref().map(|rec| DecisionView {
            kind: state_id(rec.decision.kind.into()),
            kind_class: ReviewState::from(rec.decision.kind).as_str(),
            reason: rec
                .decision
                .reason
                .as_ref()
                .map(|r| reason_id(r).map_or_else(|| r.clone(), |id| lang.t(id))),
            at: clock.time(rec.decision.at_ms),
            by: rec.user_name.clone(),
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
        siblings: d.siblings.iter().map(|s| item_view(s, &qs, clock)).collect(),
        status: status_id(d.transcription.as_ref()),
        entry_seen: status.unwrap_or(TranscriptionStatus::Pending).as_str(),
        mode,
        lines,
        entry_names: (
            first.map(|e| e.user_name.clone()).unwrap_or_default(),
            second.map(|e| e.user_name.clone()).unwrap_or_default(),
        ),
        show_observer,
        violations,
        error: refused.as_ref().filter(|f| !f.stale).map(|f| f.error),
        decision_stale,
        decision_error: None,
        entry_stale,
        autofocus: refused.as_ref().is_some_and(|f| !f.stale),
        reason: refused.as_ref().map(|f| f.reason.clone()).unwrap_or_default(),
        inconsistency_note: d.transcription.as_ref().and_then(|t| t.inconsistency_note.clone()),
        verified_at: d.transcription.as_ref().and_then(|t| t.verified_at_ms).map(|t| clock.time(t)),
        audit,
        item: item_view(item, &qs, clock),
        done,
        zone: clock.zone(),
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
    Ok(private(html(&capture_page(&req, &r, data, &query, None, false))?))
}

/// Parses the filter a form carries along (`back`); a malformed one is dropped.
fn back_query(qs: &str) -> QueueQuery {
    let mut q =
        web::Query::<QueueQuery>::from_query(qs).map(|q| q.into_inner()).unwrap_or_default();
    (q.done, q.after, q.page) = (None, None, None);
    q
}

/// Where to go after `done` on capture `id`: the next capture of the filtered queue (it opens
/// with a confirmation line), or the queue when there is none.
fn after_url(next: Option<Sha256Hash>, back: &QueueQuery, done: &str, id: &Sha256Hash) -> String {
    let qs = back.query_string();
    let sep = if qs.is_empty() { "" } else { "&" };
    let qs = format!("{qs}{sep}done={done}&after={id}");
    match next {
        Some(next) => format!("/review/captures/{next}?{qs}"),
        None => format!("/review?{qs}"),
    }
}

/// The next capture after `item` in the queue filtered as `back` says (computed after the
/// change, so a capture that left the view is skipped).
fn next_in_queue(
    storage: &dyn ReviewStorage,
    back: &QueueQuery,
    user: &User,
    id: &Sha256Hash,
) -> Result<Option<Sha256Hash>, ReviewError> {
    let Some(item) = storage.queue_item(id)? else { return Ok(None) };
    let filter = back.filter(&item.election, user);
    Ok(storage.queue_neighbours(&filter, &item)?.1)
}

/// The decision form.
#[derive(Deserialize)]
pub struct DecisionForm {
    csrf: String,
    kind: String,
    reason: Option<String>,
    back: Option<String>,
    /// The id of the newest decision the page showed (0: none).
    seen: Option<String>,
}

/// `POST /review/captures/{id}/decision`: refused (409, the page with what was decided
/// meanwhile) when the page was stale; else on to the next capture of the filtered queue.
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
    let seen: i64 =
        form.seen.as_deref().and_then(|s| s.trim().parse().ok()).ok_or(WebError::BadRequest)?;
    let reason = form.reason.clone();
    let back = back_query(form.back.as_deref().unwrap_or(""));
    // A rejection needs one of the reasons: the page again, saying so.
    if kind == DecisionKind::Rejected
        && !reason.as_deref().is_some_and(|r| REJECT_REASONS.contains(&r.trim()))
    {
        let data = load_capture(&state, &r, id, &back).await?;
        let mut page = capture_page(&req, &r, data, &back, None, false);
        page.decision_error = Some("reason-missing");
        let mut resp = html(&page)?;
        *resp.status_mut() = actix_web::http::StatusCode::BAD_REQUEST;
        return Ok(private(resp));
    }
    let storage = state.review.clone();
    let user = r.user.clone();
    let filter = back.clone();
    let result = web::block(move || {
        review::record_decision_seen(
            &*storage,
            &user,
            &id,
            kind,
            reason.as_deref(),
            Some(seen),
            hattama_core::now_ms(),
        )?;
        next_in_queue(&*storage, &filter, &user, &id)
    })
    .await?;
    match result {
        Ok(next) => Ok(private(see_other(&after_url(next, &back, kind.as_str(), &id)))),
        Err(ReviewError::Conflict) => {
            let data = load_capture(&state, &r, id, &back).await?;
            let mut resp = html(&capture_page(&req, &r, data, &back, None, true))?;
            *resp.status_mut() = actix_web::http::StatusCode::CONFLICT;
            Ok(private(resp))
        }
        Err(e) => Err(e.into()),
    }
}

/// What an entry form sent: numbers (a blind entry), or a pick per line (a resolution).
enum Submitted {
    Values(BTreeMap<String, u64>),
    Picks(BTreeMap<String, Pick>),
}

/// `POST /review/captures/{id}/entry`: a transcription entry of the capture's precinct (numbers
/// in `line:ID`; a resolution picks per line in `pick:ID`: `first`, `second`, `observer`, or
/// `typed` with the number in `line:ID`). `seen` is the precinct's state the form was made for.
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
    let seen = field("seen")
        .and_then(|s| TranscriptionStatus::parse(s.trim()))
        .ok_or(WebError::BadRequest)?;
    let back = back_query(&field("back").unwrap_or_default());
    let reason = field("reason").unwrap_or_default();
    let prefixed = |prefix: &str| -> BTreeMap<String, String> {
        form.iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(prefix).map(|l| (l.to_owned(), v.trim().to_owned()))
            })
            .collect()
    };
    let raw = prefixed("line:");
    let picks = prefixed("pick:");
    let refuse = |error: &'static str, violations: Vec<Violation>| Refused {
        values: raw.clone(),
        picks: picks.clone(),
        reason: reason.clone(),
        error,
        violations,
        stale: false,
    };
    let number = |line: &str| raw.get(line).and_then(|v| v.parse::<u64>().ok());
    let submitted = if picks.is_empty() {
        raw.keys()
            .map(|k| number(k).map(|n| (k.clone(), n)))
            .collect::<Option<BTreeMap<_, _>>>()
            .map(Submitted::Values)
            .ok_or_else(|| refuse("entry-error-numbers", Vec::new()))
    } else {
        picks
            .iter()
            .map(|(line, pick)| {
                let pick = match pick.as_str() {
                    "first" => Pick::First,
                    "second" => Pick::Second,
                    "observer" => Pick::Observer,
                    _ => Pick::Typed(number(line)?),
                };
                Some((line.clone(), pick))
            })
            .collect::<Option<BTreeMap<_, _>>>()
            .map(Submitted::Picks)
            .ok_or_else(|| refuse("entry-error-pick", Vec::new()))
    };
    let outcome = match submitted {
        Err(refused) => Err(refused),
        Ok(submitted) => {
            let s = state.clone();
            let user = r.user.clone();
            let reason2 = reason.clone();
            let filter = back.clone();
            let result = web::block(move || {
                let item =
                    s.review.queue_item(&id)?.ok_or(ReviewError::NotFound("capture".into()))?;
                let election = s
                    .storage
                    .election(&item.election)?
                    .ok_or(ReviewError::NotFound("election".into()))?;
                let values = match submitted {
                    Submitted::Values(v) => v,
                    Submitted::Picks(p) => {
                        let entries = s.review.entries(&item.election, &item.precinct)?;
                        let observer = s
                            .storage
                            .evidence(&id)?
                            .and_then(|(m, _)| serde_json::from_slice::<Manifest>(&m).ok())
                            .and_then(|m| m.transcription);
                        review::resolved_values(&entries, observer.as_ref(), &p)?
                    }
                };
                let t = review::record_entry_seen(
                    &*s.review,
                    &election,
                    &user,
                    &item.precinct,
                    values,
                    Some(&reason2),
                    Some(seen),
                    hattama_core::now_ms(),
                )?;
                Ok::<_, ReviewError>((t, next_in_queue(&*s.review, &filter, &user, &id)?))
            })
            .await?;
            match result {
                Ok(ok) => Ok(ok),
                Err(ReviewError::HardRules(v)) => Err(refuse("entry-error-hard", v)),
                Err(ReviewError::Invalid(_)) => Err(refuse("entry-error-invalid", Vec::new())),
                Err(ReviewError::AlreadyEntered) => Err(refuse("entry-error-already", Vec::new())),
                Err(ReviewError::AlreadyVerified) => {
                    Err(refuse("entry-error-verified", Vec::new()))
                }
                // The precinct changed since the form was made: what was typed was meant for
                // another state, so it is not offered again.
                Err(ReviewError::Conflict) => Err(Refused {
                    values: BTreeMap::new(),
                    picks: BTreeMap::new(),
                    stale: true,
                    ..refuse("entry-error-conflict", Vec::new())
                }),
                Err(e) => return Err(e.into()),
            }
        }
    };
    match outcome {
        Ok((t, next)) => {
            let done = match (seen, t.status) {
                (TranscriptionStatus::Disputed, _) => "resolved",
                (_, TranscriptionStatus::Pending) => "entered",
                (_, TranscriptionStatus::Disputed) => "disputed",
                (_, TranscriptionStatus::Verified) => "verified",
            };
            Ok(private(see_other(&after_url(next, &back, done, &id))))
        }
        Err(refused) => {
            let status = if refused.stale {
                actix_web::http::StatusCode::CONFLICT
            } else {
                actix_web::http::StatusCode::UNPROCESSABLE_ENTITY
            };
            let data = load_capture(&state, &r, id, &back).await?;
            let mut resp = html(&capture_page(&req, &r, data, &back, Some(refused), false))?;
            *resp.status_mut() = status;
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

    /// The message ids the pages build at run time (kinds, views, confirmations, audit
    /// sentences, stale refusals) exist in every language: no id shows instead of words.
    #[test]
    fn an_entry_in_the_audit_trail_reads_as_figures() {
        let before = serde_json::json!({"status": "pending", "values": {"7.1": 140}});
        let after = serde_json::json!({
            "entry": {"10": 3, "7.1": 142, "7.2": 90},
            "reason": "The protocol says so",
            "state": {"status": "verified"}
        });
        assert_eq!(
            entry_detail(&before, &after),
            "7.1: 140 → 142; 7.2: — → 90; 10: — → 3 — «The protocol says so»"
        );
        assert_eq!(entry_detail(&serde_json::Value::Null, &serde_json::json!({})), "");
    }

    #[test]
    fn every_message_built_at_run_time_exists() {
        let item = QueueItem {
            capture: Sha256Hash::of(b"x"),
            election: "e".into(),
            precinct: "p1".into(),
            number: 12,
            region: "r".into(),
            district: "d".into(),
            address: "a".into(),
            device_id: "dev".into(),
            seq: 1,
            page: 1,
            pages: 2,
            kind: "posted".into(),
            captured_at_ms: 0,
            received_at_ms: 0,
            photo_sha256: Sha256Hash::of(b"y"),
            flags: 0,
            state: ReviewState::New,
        };
        let event = |action: &str, before: Option<&str>, after: &str| AuditEvent {
            id: 1,
            at_ms: 0,
            user_id: Some(1),
            user_name: Some("Alice".into()),
            action: action.into(),
            election: None,
            precinct: None,
            capture: None,
            before: before.map(str::to_owned),
            after: Some(after.to_owned()),
        };
        let decision = r#"{"kind":"rejected","reason":"unreadable","at_ms":1}"#;
        let entry = r#"{"entry":{},"reason":null,"state":{"status":"verified"}}"#;
        let events = [
            event("decision", Some(decision), r#"{"kind":"accepted","reason":null,"at_ms":2}"#),
            event("decision", None, decision),
            event("entry", None, entry),
            event("entry_resolution", None, entry),
            event("entry_import", None, entry),
            event("login", None, "null"),
            event("logout", None, "null"),
            event("login_failed", None, r#"{"username":"x"}"#),
            event("user_created", None, r#"{"username":"x"}"#),
            event("user_disabled", None, r#"{"username":"x"}"#),
            event("password_reset", None, r#"{"username":"x"}"#),
        ];
        for lang in Lang::ALL {
            let mut texts: Vec<String> = ["posted", "handed", "not-posted", "?"]
                .iter()
                .map(|k| lang.t(kind_id(k)))
                .collect();
            texts.extend(VIEWS.iter().map(|(_, id)| lang.t(id)));
            for done in
                ["accepted", "rejected", "flagged", "entered", "verified", "disputed", "resolved"]
            {
                texts.push(done_view(lang, done, &item, "").unwrap().text);
            }
            for e in &events {
                texts.push(audit_row(lang, Clock::UTC, e, false).text);
                texts.push(audit_row(lang, Clock::UTC, e, true).text);
            }
            for t in texts {
                assert!(
                    !t.contains("kind-")
                        && !t.contains("view-")
                        && !t.contains("done-")
                        && !t.contains("audit-")
                        && !t.contains("state-")
                        && !t.contains("transcription-")
                        && !t.contains("reason-"),
                    "{}: {t}",
                    lang.code()
                );
            }
        }
        let en = audit_row(Lang::En, Clock::UTC, &events[0], false).text;
        assert_eq!(en, "Alice: decision — accepted. Before: rejected.");
        let en = audit_row(Lang::En, Clock::UTC, &events[1], false).text;
        assert_eq!(en, "Alice: decision — rejected (unreadable).");
        let hidden = audit_row(Lang::En, Clock::UTC, &events[2], true);
        assert!(!hidden.detail.contains("verified"), "a blind entry's numbers stay hidden");
    }

    #[test]
    fn the_filter_round_trips_through_its_query_string() {
        let q = QueueQuery {
            election: Some("e 1".into()),
            region: Some("Алматы".into()),
            state: Some("new".into()),
            view: Some("mine".into()),
            page: Some(3),
            done: Some("accepted".into()),
            ..QueueQuery::default()
        };
        let back = back_query(&q.query_string());
        assert_eq!(back.query_string(), q.query_string());
        assert_eq!(back.region.as_deref(), Some("Алматы"));
        assert_eq!(back.page, None, "the page is not carried");
        assert_eq!(back.view.as_deref(), Some("mine"), "the view is carried");
        assert_eq!(back.done, None, "a confirmation is shown once");
    }
}
