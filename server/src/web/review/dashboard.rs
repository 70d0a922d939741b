//! The election-night dashboard (`/review/dashboard`): coverage per region (stations with a
//! photo, with an accepted photo) and over time (a chart of the stations with an accepted photo,
//! all and per region: `web/chart.rs`), the stations still without a photo by region with their
//! address, captures per hour, uploads refused by error code (since the server started), the
//! review queue's depth and the log's lag. Server-rendered; on the reader's choice (`?auto=1`,
//! a link that turns it on and off: WCAG's adjustable timing) refreshed by a meta refresh every
//! 30 seconds (no script: the strict CSP stays); bars are `<meter>` elements. Admins and
//! supervisors.
//!
//! Everything is counted by the database's aggregates (`ConsoleStorage::region_tallies` and
//! the like, never a query per station) and kept until storage changes
//! ([`crate::console::Dashboards`], against the gallery's generation, which follows the
//! storage's change counter), so a page costs a template while nothing changes.
//! `scripts/bench review` measures it with 10,000 stations and 30,000 captures.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use prometheus::core::Collector;
use serde::Deserialize;

use super::pages::private;
use super::reviewer;
use crate::console;
use crate::startup::AppState;
use crate::storage::console::RegionTally;
use crate::web::chart::{self, Series, Timeline};
use crate::web::{PageCtx, WebError, html};

/// The chart spans at least this much time (an hour).
const MIN_SPAN_MS: u64 = 3_600_000;

struct RegionRow {
    region: String,
    precincts: u64,
    photographed: u64,
    accepted: u64,
    missing: Vec<(u32, String)>,
    /// Stations without a photo: those listed, and more.
    missing_count: u64,
    more_missing: u64,
}

#[derive(Template)]
#[template(path = "console/dashboard.html")]
struct DashboardPage {
    ctx: PageCtx,
    election_name: String,
    elections: Vec<(String, String, bool)>,
    regions: Vec<RegionRow>,
    total: (u64, u64, u64),
    /// Stations with an accepted photo over time (none before the first).
    timeline: Option<Timeline>,
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
    let st = state.clone();
    let wanted = query.election.clone();
    let data = web::block(move || {
        // The gallery's cached elections, and its generation, which follows every commit.
        let elections = st.gallery.elections()?;
        let generation = st.gallery.generation();
        let chosen = elections
            .iter()
            .find(|e| Some(&e.id) == wanted.as_ref())
            .or_else(|| elections.first())
            .map(|e| e.id.clone());
        let Some(id) = chosen else { return Ok(None) };
        let facts = st.dashboards.facts(&*st.console, &id, generation)?;
        Ok::<_, crate::storage::StorageError>(Some((elections, id, facts)))
    })
    .await?
    .map_err(|e| WebError::internal(&e))?;
    let ctx = r.ctx(&req);
    let Some((elections, id, facts)) = data else {
        return Err(WebError::NotFound);
    };
    let e = elections.iter().find(|e| e.id == id).ok_or(WebError::NotFound)?;
    let mut missing: BTreeMap<&str, Vec<(u32, String)>> = BTreeMap::new();
    for m in &facts.missing {
        missing.entry(m.region.as_str()).or_default().push((m.number, m.address.clone()));
    }
    let regions: Vec<RegionRow> = facts
        .regions
        .iter()
        .map(|t: &RegionTally| {
            let listed = missing.remove(t.region.as_str()).unwrap_or_default();
            let without = t.precincts.saturating_sub(t.photographed);
            RegionRow {
                region: t.region.clone(),
                precincts: t.precincts,
                photographed: t.photographed,
                accepted: t.accepted,
                missing_count: without,
                more_missing: without.saturating_sub(listed.len() as u64),
                missing: listed,
            }
        })
        .collect();
    let total = (
        regions.iter().map(|r| r.precincts).sum(),
        regions.iter().map(|r| r.photographed).sum(),
        regions.iter().map(|r| r.accepted).sum(),
    );
    let now = hattama_core::now_ms();
    let timeline = facts.accepted_all.first().map(|first| {
        let end = now.max(*first);
        let start = (first - first % MIN_SPAN_MS).min(end.saturating_sub(MIN_SPAN_MS));
        let all_name = ctx.t("dash-chart-all");
        let all = Series { name: &all_name, precincts: total.0, times: &facts.accepted_all };
        let by_region: Vec<Series<'_>> = regions
            .iter()
            .map(|g| Series {
                name: &g.region,
                precincts: g.precincts,
                times: facts.accepted.get(&g.region).map_or(&[][..], Vec::as_slice),
            })
            .collect();
        chart::timeline(
            &all,
            &by_region,
            (start, end),
            |ms| r.clock.hour(ms),
            |accepted, of| {
                format!("{} · {}/{}", chart::percent(accepted, of), ctx.num(accepted), ctx.num(of))
            },
        )
    });
    let hours: Vec<(String, u64)> =
        facts.hours.iter().map(|(h, n)| (r.clock.time(h * 3_600_000), *n)).collect();
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
        timeline,
        max_hour: hours.iter().map(|h| h.1).max().unwrap_or(0).max(1),
        hours,
        refusals: refusals(&state),
        queue: facts.queue,
        log_pending: facts.log_pending,
        updated: r.clock.time(now),
        zone: r.clock.zone(),
        ctx,
    };
    html(&page).map(private)
}
