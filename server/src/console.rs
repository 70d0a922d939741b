//! The coordinators' console's rules (`/review/elections`, `/review/invites`,
//! `/review/devices`): who may use it, the imports of election definitions and official results
//! (one implementation for the browser and the `election import` / `official import`
//! commands: the same checks, a refused file stores nothing), how precincts are chosen for
//! invites, and the QR codes of the invite cards.
//!
//! Admins do everything here; supervisors read (without the codes of unused invites, which
//! enroll a phone); coordinators have their queue, not the console.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use hattama_core::election::{Election, ElectionError};
use qrcode::QrCode;
use qrcode::render::svg;

use crate::official::{self, OfficialError};
use crate::storage::console::{MissingStation, NewInvites, RegionTally};
use crate::storage::review::{NewAudit, Role, User};
use crate::storage::{ConsoleStorage, StorageError};

/// The most invites one request creates (as `invite create --count`).
pub const MAX_INVITES: usize = 10_000;

/// The most invites per precinct one request creates.
pub const MAX_PER_PRECINCT: usize = 50;

/// Why a console action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The election definition was refused.
    #[error(transparent)]
    Election(#[from] ElectionError),
    /// The official-results file was refused.
    #[error(transparent)]
    Official(#[from] OfficialError),
    /// The choice of precincts was refused.
    #[error(transparent)]
    Selection(#[from] SelectionError),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a choice of precincts was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectionError {
    /// A pasted entry or number names no precinct of the election.
    #[error("{0:?} is not a precinct of this election (neither its id nor its number)")]
    Unknown(String),
    /// A range of numbers is not `N` or `N-M`.
    #[error("{0:?} is not a number or a range of numbers such as 12-30")]
    BadRange(String),
    /// Nothing matched.
    #[error("no precinct matches this choice")]
    Empty,
    /// Too many invites at once.
    #[error("{0} invites at once; at most {MAX_INVITES}")]
    TooMany(usize),
    /// The number of invites per precinct is out of range.
    #[error("invites per precinct must be 1 to {MAX_PER_PRECINCT}")]
    PerPrecinct,
}

/// Whether the user may change things in the console (admins).
pub fn may_administer(user: &User) -> bool {
    user.role == Role::Admin && !user.disabled
}

/// Whether the user may read the console (admins and supervisors).
pub fn may_read(user: &User) -> bool {
    matches!(user.role, Role::Admin | Role::Supervisor) && !user.disabled
}

/// Who imports a file from the browser, for the audit trail (the commands have no account).
#[derive(Clone, Debug)]
pub struct Importer {
    /// The account.
    pub user_id: i64,
    /// The file's name as the browser sent it.
    pub file: String,
}

/// The audit event of an import: `action`, by `by`, of `election`, with `after`.
fn import_event(
    by: &Importer,
    action: &str,
    election: &str,
    now_ms: u64,
    after: serde_json::Value,
) -> NewAudit {
    let mut after = after;
    after["file"] = serde_json::Value::String(by.file.clone());
    NewAudit {
        at_ms: now_ms,
        user_id: Some(by.user_id),
        action: action.to_owned(),
        election: Some(election.to_owned()),
        after: Some(after.to_string()),
        ..Default::default()
    }
}

/// Checks and stores an election definition; returns it and whether it was new. The same
/// checks as `hattama-server election import`. Imported `by` someone (the console), the audit
/// event `election-import` is stored in the same transaction: both or neither.
pub fn import_election(
    storage: &dyn ConsoleStorage,
    bytes: &[u8],
    now_ms: u64,
    by: Option<&Importer>,
) -> Result<(Election, bool), ConsoleError> {
    let election = Election::from_json(bytes)?;
    let new = match by {
        None => storage.import_election(&election, now_ms)?,
        Some(by) => {
            let event = |new: bool| {
                let after = serde_json::json!({ "new": new,
                    "precincts": election.precincts.len() });
                import_event(by, "election-import", &election.id, now_ms, after)
            };
            storage.import_election_audited(&election, now_ms, &event)?
        }
    };
    Ok((election, new))
}

/// Checks a whole official-results file and stores it as its election's next version (`None`
/// when it equals the newest); returns the election's id. The same checks as
/// `hattama-server official import`: a refused file (named row) stores nothing. Imported `by`
/// someone (the console), the audit event `official-import` is stored in the same transaction.
pub fn import_official(
    storage: &dyn ConsoleStorage,
    bytes: &[u8],
    source: &str,
    now_ms: u64,
    by: Option<&Importer>,
) -> Result<(String, Option<u64>), ConsoleError> {
    if bytes.len() > official::MAX_FILE_BYTES {
        return Err(OfficialError::TooLarge(bytes.len()).into());
    }
    let id = official::election_of(bytes)?;
    let election = storage.election(&id)?.ok_or(OfficialError::UnknownElection(id))?;
    let figures = official::parse(bytes, &election)?;
    let sha = hattama_core::evidence::Sha256Hash::of(bytes).to_hex();
    let version = match by {
        None => storage.import_official(&election.id, &figures, source, &sha, now_ms)?,
        Some(by) => {
            let event = |version: Option<u64>| {
                let after = serde_json::json!({ "version": version });
                import_event(by, "official-import", &election.id, now_ms, after)
            };
            storage.import_official_audited(
                &election.id,
                &figures,
                (source, &sha),
                now_ms,
                &event,
            )?
        }
    };
    Ok((election.id, version))
}

/// A choice of precincts: a pasted list (ids or numbers, separated by spaces, commas, semicolons
/// or lines), or else the precincts of a region, a district and ranges of numbers (each empty:
/// any).
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// A region, exactly as in the definition.
    pub region: String,
    /// A district, exactly as in the definition.
    pub district: String,
    /// Numbers and ranges: `1-10, 15`.
    pub numbers: String,
    /// A pasted list of precinct ids or numbers.
    pub list: String,
}

fn tokens(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';')).filter(|t| !t.is_empty())
}

/// The precincts of a choice, in the definition's order, each once.
pub fn choose_precincts(election: &Election, s: &Selection) -> Result<Vec<String>, SelectionError> {
    let mut chosen = vec![false; election.precincts.len()];
    if tokens(&s.list).next().is_some() {
        for t in tokens(&s.list) {
            let by_number = t.parse::<u32>().ok();
            let mut found = false;
            for (i, p) in election.precincts.iter().enumerate() {
                if p.id == t || by_number == Some(p.number) {
                    chosen[i] = true;
                    found = true;
                }
            }
            if !found {
                return Err(SelectionError::Unknown(t.to_owned()));
            }
        }
    } else {
        let mut ranges = Vec::new();
        for t in tokens(&s.numbers) {
            let bad = || SelectionError::BadRange(t.to_owned());
            let (a, b) = match t.split_once('-') {
                Some((a, b)) => {
                    (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?)
                }
                None => {
                    let n: u32 = t.parse().map_err(|_| bad())?;
                    (n, n)
                }
            };
            if a > b {
                return Err(bad());
            }
            ranges.push((a, b));
        }
        let (region, district) = (s.region.trim(), s.district.trim());
        for (i, p) in election.precincts.iter().enumerate() {
            chosen[i] = (region.is_empty() || p.region == region)
                && (district.is_empty() || p.district == district)
                && (ranges.is_empty() || ranges.iter().any(|(a, b)| (*a..=*b).contains(&p.number)));
        }
    }
    let out: Vec<String> = election
        .precincts
        .iter()
        .zip(chosen)
        .filter(|(_, c)| *c)
        .map(|(p, _)| p.id.clone())
        .collect();
    if out.is_empty() { Err(SelectionError::Empty) } else { Ok(out) }
}

/// Stations without a photo listed per region at most on the dashboard (the rest are counted).
pub const MISSING_LISTED: u64 = 50;

/// What the election-night dashboard shows of one election, counted by the database's
/// aggregates (never a query per station), and kept while storage does not change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DashboardFacts {
    /// Per region: stations, with a photo, with an accepted photo.
    pub regions: Vec<RegionTally>,
    /// Stations without a photo, by region and number, at most [`MISSING_LISTED`] a region.
    pub missing: Vec<MissingStation>,
    /// Per region, when each station with an accepted photo got it, in order.
    pub accepted: BTreeMap<String, Vec<u64>>,
    /// All the regions' acceptance times, in order.
    pub accepted_all: Vec<u64>,
    /// Captures received per hour (hours since the epoch), the last 24 hours with any.
    pub hours: Vec<(u64, u64)>,
    /// Captures waiting for a first decision.
    pub queue: u64,
    /// Stored captures not yet in the public log (all elections).
    pub log_pending: u64,
}

impl DashboardFacts {
    /// Counts everything the dashboard shows of `election` (indexing new captures first).
    pub fn load(storage: &dyn ConsoleStorage, election: &str) -> Result<Self, StorageError> {
        storage.refresh_index()?;
        let mut accepted: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut accepted_all = Vec::new();
        for s in storage.accepted_stations(election)? {
            accepted_all.push(s.at_ms);
            accepted.entry(s.region).or_default().push(s.at_ms);
        }
        accepted_all.sort_unstable();
        accepted.values_mut().for_each(|t| t.sort_unstable());
        Ok(Self {
            regions: storage.region_tallies(election)?,
            missing: storage.stations_without_photo(election, MISSING_LISTED)?,
            accepted,
            accepted_all,
            hours: storage.captures_per_hour(election, 24)?,
            queue: storage.queue_depth(election)?,
            log_pending: storage.capture_count()?.saturating_sub(storage.log_size()?),
        })
    }
}

/// The dashboard's facts per election, kept against the gallery's generation (which follows the
/// storage's change counter): counted again only after a commit. One request counts while the
/// others wait for its answer, so that a crowd of dashboards opened after a commit costs one
/// count.
#[derive(Default)]
pub struct Dashboards {
    cached: Mutex<HashMap<String, (u64, Arc<DashboardFacts>)>>,
}

impl Dashboards {
    /// The facts of `election` as of `generation` (read before calling: a change meanwhile
    /// makes the next call count again).
    pub fn facts(
        &self,
        storage: &dyn ConsoleStorage,
        election: &str,
        generation: u64,
    ) -> Result<Arc<DashboardFacts>, StorageError> {
        let mut cached =
            self.cached.lock().map_err(|_| StorageError::Corrupt("dashboard cache lock".into()))?;
        if let Some((g, facts)) = cached.get(election)
            && *g == generation
        {
            return Ok(facts.clone());
        }
        let facts = Arc::new(DashboardFacts::load(storage, election)?);
        cached.retain(|_, (g, _)| *g == generation);
        cached.insert(election.to_owned(), (generation, facts.clone()));
        Ok(facts)
    }
}

/// The audit event of a new batch of invites, made of its number and codes: who created it,
/// for which election, how many codes for which precincts.
pub fn invites_created(
    at_ms: u64,
    user_id: i64,
    election: &str,
    groups: &[Vec<String>],
) -> impl Fn(u64, &NewInvites) -> NewAudit {
    let election = election.to_owned();
    let precincts: Vec<String> = groups.iter().flatten().cloned().collect();
    move |batch, codes| NewAudit {
        at_ms,
        user_id: Some(user_id),
        action: "invites-create".into(),
        election: Some(election.clone()),
        after: Some(
            serde_json::json!({ "batch": batch, "invites": codes.len(), "precincts": precincts })
                .to_string(),
        ),
        ..NewAudit::default()
    }
}

/// Checks how many invites a choice makes.
pub fn check_count(precincts: usize, per_precinct: usize) -> Result<(), SelectionError> {
    if !(1..=MAX_PER_PRECINCT).contains(&per_precinct) {
        return Err(SelectionError::PerPrecinct);
    }
    let total = precincts.saturating_mul(per_precinct);
    if total > MAX_INVITES { Err(SelectionError::TooMany(total)) } else { Ok(()) }
}

/// The QR code of an invite URI as an SVG element to put inline in a page (no XML declaration,
/// no style attribute: the strict CSP allows it), scaling to its box.
pub fn qr_svg(uri: &str) -> Option<String> {
    let code = QrCode::new(uri.as_bytes()).ok()?;
    let image = code
        .render::<svg::Color<'_>>()
        .min_dimensions(200, 200)
        .dark_color(svg::Color("#000"))
        .light_color(svg::Color("#fff"))
        .build();
    let start = image.find("<svg")?;
    Some(image[start..].replacen("<svg ", "<svg class=\"qr\" aria-hidden=\"true\" ", 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn election() -> Election {
        let precincts: Vec<_> = (1..=12)
            .map(|n| {
                serde_json::json!({
                    "id": format!("p{n:04}"),
                    "number": n,
                    "region": if n <= 6 { "North" } else { "South" },
                    "district": format!("D{}", (n - 1) / 3),
                    "address": format!("School {n}"),
                })
            })
            .collect();
        let e = serde_json::json!({
            "id": "e1",
            "names": { "kk": "a", "ru": "b", "en": "c" },
            "precincts": precincts,
            "protocol": { "lines": [ { "id": "1", "kind": "count",
                "names": { "kk": "a", "ru": "b", "en": "c" } } ], "relations": [] },
        });
        Election::from_json(&serde_json::to_vec(&e).unwrap()).unwrap()
    }

    fn check(s: Selection, expected: Result<Vec<u32>, SelectionError>) {
        let e = election();
        let got = choose_precincts(&e, &s)
            .map(|ids| ids.iter().map(|id| e.precinct(id).unwrap().number).collect::<Vec<_>>());
        assert_eq!(got, expected, "{s:?}");
    }

    #[test]
    fn precincts_are_chosen_by_region_district_numbers_or_a_list() {
        let sel = |region: &str, district: &str, numbers: &str, list: &str| Selection {
            region: region.into(),
            district: district.into(),
            numbers: numbers.into(),
            list: list.into(),
        };
        check(sel("North", "", "", ""), Ok(vec![1, 2, 3, 4, 5, 6]));
        check(sel("", "D2", "", ""), Ok(vec![7, 8, 9]));
        check(sel("South", "", "1-8, 12", ""), Ok(vec![7, 8, 12]));
        check(sel("", "", "", "p0003\n12; 5,p0003"), Ok(vec![3, 5, 12]));
        check(sel("North", "", "", "12"), Ok(vec![12]));
        check(sel("", "", "", "p0099"), Err(SelectionError::Unknown("p0099".into())));
        check(sel("", "", "9-3", ""), Err(SelectionError::BadRange("9-3".into())));
        check(sel("", "", "x", ""), Err(SelectionError::BadRange("x".into())));
        check(sel("West", "", "", ""), Err(SelectionError::Empty));
        assert_eq!(check_count(10, 2), Ok(()));
        assert_eq!(check_count(10, 0), Err(SelectionError::PerPrecinct));
        assert_eq!(check_count(10_000, 2), Err(SelectionError::TooMany(20_000)));
    }

    #[test]
    fn an_import_and_its_audit_event_are_stored_together_or_not_at_all() {
        use crate::storage::review::{AuditFilter, NewUser, ReviewStorage};
        use crate::storage::{GalleryStorage, SqliteStorage, Storage};
        let dir = tempfile::tempdir().unwrap();
        let storage = SqliteStorage::open(dir.path(), false).unwrap();
        let definition = serde_json::to_vec(&election()).unwrap();
        let csv = b"election,precinct,line,value\ne1,p0001,1,7\n";
        let imports = |storage: &SqliteStorage| {
            let events = storage.audit_events(&AuditFilter::default()).unwrap();
            events.iter().filter(|e| e.action.ends_with("-import")).count()
        };
        // The event names an account that does not exist, so it cannot be written: nor is the
        // election, nor the official figures.
        let ghost = Importer { user_id: 999, file: "e1.json".into() };
        let refused = import_election(&storage, &definition, 1, Some(&ghost));
        assert!(matches!(refused, Err(ConsoleError::Storage(_))), "{refused:?}");
        assert!(storage.election("e1").unwrap().is_none(), "half an import");
        import_election(&storage, &definition, 1, None).unwrap();
        let refused = import_official(&storage, csv, "r.csv", 2, Some(&ghost));
        assert!(matches!(refused, Err(ConsoleError::Storage(_))), "{refused:?}");
        assert!(storage.official_versions("e1").unwrap().is_empty(), "half an import");
        assert_eq!(imports(&storage), 0);

        let new = NewUser {
            username: "root".into(),
            display_name: "Root".into(),
            role: Role::Admin,
            regions: Vec::new(),
        };
        let user = crate::review::create_user(&storage, &new, "a long enough password", 3).unwrap();
        let by = Importer { user_id: user.id, file: "e1.json".into() };
        let (_, new) = import_election(&storage, &definition, 4, Some(&by)).unwrap();
        assert!(!new, "imported above without an account");
        let by = Importer { user_id: user.id, file: "r.csv".into() };
        assert_eq!(import_official(&storage, csv, "r.csv", 5, Some(&by)).unwrap().1, Some(1));
        // Unchanged figures store no version, but the attempt is in the trail.
        assert_eq!(import_official(&storage, csv, "r.csv", 6, Some(&by)).unwrap().1, None);
        let events = storage.audit_events(&AuditFilter::default()).unwrap();
        let actions: Vec<(&str, Option<&str>)> =
            events.iter().map(|e| (e.action.as_str(), e.after.as_deref())).collect();
        assert!(
            actions.contains(&(
                "election-import",
                Some(r#"{"file":"e1.json","new":false,"precincts":12}"#)
            )),
            "{actions:?}"
        );
        assert!(actions.contains(&("official-import", Some(r#"{"file":"r.csv","version":1}"#))));
        assert!(actions.contains(&("official-import", Some(r#"{"file":"r.csv","version":null}"#))));
        assert_eq!(imports(&storage), 3);
        assert_eq!(storage.capture_count().unwrap(), 0);
    }

    #[test]
    fn qr_codes_are_inline_svg() {
        let svg = qr_svg("hattama://enroll?server=http%3A%2F%2F127.0.0.1&code=ABCD").unwrap();
        assert!(svg.starts_with("<svg class=\"qr\""), "{svg}");
        assert!(!svg.contains("<?xml") && !svg.contains("style="), "{svg}");
    }
}
