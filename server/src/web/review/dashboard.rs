//! The election-night dashboard (`/review/dashboard`): coverage per region (stations with a
//! photo, with an accepted photo), the stations still without a photo by region with their
//! address, captures per hour, uploads refused by error code (since the server started), the
//! review queue's depth and the log's lag. Server-rendered; on the reader's choice (`?auto=1`,
//! a link that turns it on and off: WCAG's adjustable timing) refreshed by a meta refresh every
//! 30 seconds (no script: the strict CSP stays); bars are `<meter>` elements. Admins and
//! supervisors.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use prometheus::core::Collector;
use serde::Deserialize;

use super::pages::private;
use super::reviewer;
use crate::console;
use crate::startup::AppState;
use crate::web::{PageCtx, WebError, html};

/// Stations without a photo listed per region at most (the rest are counted).
const MISSING_LISTED: usize = 50;

struct RegionRow {
    region: String,
    precincts: usize,
    photographed: usize,
    accepted: usize,
    missing: Vec<(u32, String)>,
    more_missing: usize,
}

#[derive(Template)]
#[template(path = "console/dashboard.html")]
struct DashboardPage {
    ctx: PageCtx,
    election_name: String,
    elections: Vec<(String, String, bool)>,
    regions: Vec<RegionRow>,
    total: (usize, usize, usize),
    hours: Vec<(String, u64)>,
    max_hour: u64,
    refusals: Vec<(String, u64)>,
    queue: u64,
    log_pending: u64,
    updated: String,
    zone: String,
    /// Whether the page refreshes itself, and the link that turns that off or on.
    auto: bool,
    toggle_url: String,
}

/// `?election=`.
#[derive(Deserialize)]
pub struct DashboardQuery {
    election: Option<String>,
    auto: Option<u8>,
}

/// Uploads refused since start, by error code (the `/metrics` counter).
fn refusals(state: &AppState) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = state
        .metrics
        .uploads_refused
        .collect()
        .iter()
        .flat_map(|family| family.get_metric().iter())
        .map(|m| {
            let code = m.get_label().first().map(|l| l.value().to_owned()).unwrap_or_default();
            (code, m.get_counter().get_value() as u64)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

/// `GET /review/dashboard`.
pub async fn dashboard(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<DashboardQuery>,
) -> Result<HttpResponse, WebError> {
    let r = reviewer(&req, &state).await?;
    if !console::may_read(&r.user) {
        return Err(WebError::Forbidden);
    }
    let storage = state.console.clone();
    let wanted = query.election.clone();
    let data = web::block(move || {
        storage.refresh_index()?;
        let elections = storage.elections()?;
        let chosen = elections
            .iter()
            .find(|e| Some(&e.id) == wanted.as_ref())
            .or_else(|| elections.first())
            .cloned();
        let Some(e) = chosen else { return Ok(None) };
        let tallies = storage.precinct_tallies(&e.id)?;
        let hours = storage.captures_per_hour(&e.id, 24)?;
        let pending = storage.capture_count()?.saturating_sub(storage.log_size()?);
        Ok::<_, crate::storage::StorageError>(Some((elections, e, tallies, hours, pending)))
    })
    .await?
    .map_err(|e| WebError::internal(&e))?;
    let ctx = r.ctx(&req);
    let Some((elections, e, tallies, hours, log_pending)) = data else {
        return Err(WebError::NotFound);
    };
    let mut by_region: BTreeMap<&str, RegionRow> = BTreeMap::new();
    for p in &e.precincts {
        let row = by_region.entry(p.region.as_str()).or_insert_with(|| RegionRow {
            region: p.region.clone(),
            precincts: 0,
            photographed: 0,
            accepted: 0,
            missing: Vec::new(),
            more_missing: 0,
        });
        row.precincts += 1;
        match tallies.get(&p.id) {
            Some(t) if t.captures > 0 => {
                row.photographed += 1;
                if t.accepted > 0 {
                    row.accepted += 1;
                }
            }
            _ if row.missing.len() < MISSING_LISTED => {
                row.missing.push((p.number, p.address.clone()));
            }
            _ => row.more_missing += 1,
        }
    }
    let regions: Vec<RegionRow> = by_region.into_values().collect();
    let total = (
        regions.iter().map(|r| r.precincts).sum(),
        regions.iter().map(|r| r.photographed).sum(),
        regions.iter().map(|r| r.accepted).sum(),
    );
    let hours: Vec<(String, u64)> =
        hours.into_iter().map(|(h, n)| (r.clock.time(h * 3_600_000), n)).collect();
    let auto = query.auto == Some(1);
    let toggle_url = format!(
        "/review/dashboard?election={}{}",
        crate::web::percent_encode(&e.id),
        if auto { "" } else { "&auto=1" }
    );
    let page = DashboardPage {
        auto,
        toggle_url,
        election_name: ctx.lang.pick(&e.names).to_owned(),
        elections: elections
            .iter()
            .map(|x| (x.id.clone(), ctx.lang.pick(&x.names).to_owned(), x.id == e.id))
            .collect(),
        regions,
        total,
        max_hour: hours.iter().map(|h| h.1).max().unwrap_or(0).max(1),
        hours,
        refusals: refusals(&state),
        queue: tallies.values().map(|t| t.new).sum(),
        log_pending,
        updated: r.clock.time(hattama_core::now_ms()),
        zone: r.clock.zone(),
        ctx,
    };
    html(&page).map(private)
}
