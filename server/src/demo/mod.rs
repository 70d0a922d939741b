//! `hattama-server demo`: a living instance in one command. It imports a demo election of a few
//! hundred precincts, starts the server, and lets simulated observers (the real core: capture,
//! offline store, enrollment and sync over HTTP) photograph generated protocols and sync them;
//! then it imports official results with discrepancies (two versions) so that the gallery, the
//! comparison and the open data all have something to show.
//!
//! The generators (`election`, `protocol_values`, `official_figures`, `photo::protocol_photo`)
//! are also used by tests and benchmarks; the simulated observers (`observe`) only with the
//! `demo` feature, which links the device's sync client.

#[cfg(feature = "demo")]
mod observe;
pub mod photo;

use std::collections::BTreeMap;

use hattama_core::election::{Election, LineKind, Names, ProtocolTemplate};
use rand::{Rng, SeedableRng};

use crate::official::Figures;
use crate::storage::review::{DecisionKind, NewUser, ReviewStorage, Role};
use crate::storage::{GalleryStorage, Storage};

/// The demo election's id.
pub const ELECTION_ID: &str = "kz-demo-2026";

const REGIONS: [&str; 6] =
    ["Almaty", "Astana", "Shymkent", "Karaganda Region", "Turkistan Region", "Aktobe Region"];

fn names(kk: &str, ru: &str, en: &str) -> Names {
    Names { kk: kk.into(), ru: ru.into(), en: en.into() }
}

/// The demo election: `precincts` stations over six regions, a presidential protocol of three
/// candidates and "against all", counted at `count_time_ms` (0: none given).
pub fn election(precincts: usize, count_time_ms: u64) -> Result<Election, DemoError> {
    let json = serde_json::json!({
        "id": ELECTION_ID,
        "names": names("Демо сайлау 2026", "Демо-выборы 2026", "Demo election 2026"),
        "count_time_ms": (count_time_ms > 0).then_some(count_time_ms),
        "utc_offset_min": 300,
        "precincts": (1..=precincts).map(|i| {
            let region = REGIONS[i % REGIONS.len()];
            serde_json::json!({
                "id": format!("p{i:04}"),
                "number": 100 + i,
                "region": region,
                "district": format!("{region}, district {}", i % 5 + 1),
                "address": format!("School No. {}, {} street {}", 10 + i % 90, region, i % 40 + 1),
            })
        }).collect::<Vec<_>>(),
        "protocol": template_json(),
    });
    Ok(serde_json::from_value(json)?)
}

fn template_json() -> serde_json::Value {
    let n = |kk: &str, ru: &str, en: &str| serde_json::json!({ "kk": kk, "ru": ru, "en": en });
    serde_json::json!({
        "lines": [
            {"id": "1", "kind": "count", "names": n("Сайлаушылар саны", "Число избирателей", "Voters on the lists")},
            {"id": "2", "kind": "count", "names": n("Алынған бюллетеньдер", "Получено бюллетеней", "Ballots received")},
            {"id": "3", "kind": "count", "names": n("Берілген бюллетеньдер", "Выдано бюллетеней", "Ballots issued")},
            {"id": "4", "kind": "count", "names": n("Өтелген бюллетеньдер", "Погашено бюллетеней", "Ballots cancelled")},
            {"id": "5", "kind": "count", "names": n("Жәшіктердегі бюллетеньдер", "Бюллетеней в ящиках", "Ballots in the boxes")},
            {"id": "6", "kind": "count", "names": n("Жарамсыз бюллетеньдер", "Недействительные бюллетени", "Invalid ballots")},
            {"id": "7.1", "kind": "candidate", "names": n("Асанов А.", "Асанов А.", "Asanov A.")},
            {"id": "7.2", "kind": "candidate", "names": n("Бекова Б.", "Бекова Б.", "Bekova B.")},
            {"id": "7.3", "kind": "candidate", "names": n("Жұмабаев Ж.", "Жумабаев Ж.", "Zhumabayev Zh.")},
            {"id": "8", "kind": "against_all", "names": n("Барлығына қарсы", "Против всех", "Against all")}
        ],
        "relations": [
            {"id": "received", "severity": "hard", "left": ["2"], "op": "=", "right": ["3", "4"],
             "names": n("Алынған = берілген + жойылған", "Получено = выдано + погашено", "Received = issued + cancelled")},
            {"id": "boxes", "severity": "hard", "left": ["5"], "op": "=", "right": ["6", "7.1", "7.2", "7.3", "8"],
             "names": n("Жәшіктегі = жарамсыз + дауыстар", "В ящиках = недействительные + голоса", "In boxes = invalid + votes")},
            {"id": "boxes_vs_issued", "severity": "soft", "left": ["5"], "op": "<=", "right": ["3"],
             "names": n("Жәшіктегі ≤ берілген", "В ящиках ≤ выдано", "In boxes ≤ issued")},
            {"id": "issued_vs_voters", "severity": "soft", "left": ["3"], "op": "<=", "right": ["1"],
             "names": n("Берілген ≤ сайлаушылар", "Выдано ≤ избирателей", "Issued ≤ voters")}
        ]
    })
}

/// An arithmetically consistent protocol for the demo template (or any template with the same
/// count lines "1" to "6"): voters, ballots, and votes split over the candidate and
/// against-all lines. Deterministic in `seed`.
pub fn protocol_values(template: &ProtocolTemplate, seed: u64) -> BTreeMap<String, u64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let voters: u64 = rng.gen_range(600..2600);
    let issued = voters * rng.gen_range(45..85) / 100;
    let cancelled: u64 = rng.gen_range(20..200);
    let boxes = issued - rng.gen_range(0..3);
    let invalid = boxes * rng.gen_range(1..4) / 100;
    let mut votes: Vec<&str> = template
        .lines
        .iter()
        .filter(|l| matches!(l.kind, LineKind::Candidate | LineKind::AgainstAll))
        .map(|l| l.id.as_str())
        .collect();
    let mut v = BTreeMap::new();
    for (id, value) in [
        ("1", voters),
        ("2", issued + cancelled),
        ("3", issued),
        ("4", cancelled),
        ("5", boxes),
        ("6", invalid),
    ] {
        v.insert(id.to_owned(), value);
    }
    let mut left = boxes - invalid;
    let last = votes.pop();
    for id in votes {
        let share = left * rng.gen_range(15..55) / 100;
        v.insert(id.to_owned(), share);
        left -= share;
    }
    if let Some(id) = last {
        v.insert(id.to_owned(), left);
    }
    v
}

/// The true protocol of every precinct of the demo election (`seed` per precinct index).
pub fn true_figures(election: &Election) -> Figures {
    election
        .precincts
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.clone(), protocol_values(&election.protocol, i as u64)))
        .collect()
}

/// Official figures made from the true ones, as a commission that "adjusts" them would: in
/// every `every`-th precinct a share of the second candidate's votes goes to the first (the
/// protocol still adds up). Version two (`second`) adjusts a few more precincts.
pub fn official_figures(truth: &Figures, every: usize, second: bool) -> Figures {
    let mut out = truth.clone();
    for (i, (_, lines)) in out.iter_mut().enumerate() {
        let moved = if i % every == 3 || (second && i % (every * 3) == 7) {
            lines.get("7.2").copied().unwrap_or(0) * (20 + (i as u64 % 25)) / 100
        } else {
            continue;
        };
        if let (Some(a), Some(b)) = (lines.get("7.1").copied(), lines.get("7.2").copied()) {
            lines.insert("7.1".into(), a + moved);
            lines.insert("7.2".into(), b - moved);
        }
    }
    out
}

/// What the demo should seed.
#[derive(Clone, Debug)]
pub struct Options {
    /// Precincts of the election.
    pub precincts: usize,
    /// Simulated observer devices.
    pub devices: usize,
    /// Percentage of precincts photographed.
    pub coverage_pct: usize,
    /// Photo size (width; the height is 4/3 of it).
    pub photo_width: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self { precincts: 400, devices: 40, coverage_pct: 75, photo_width: 720 }
    }
}

/// One capture a simulated observer made.
#[derive(Clone, Debug)]
pub struct Observed {
    /// Precinct.
    pub precinct: String,
    /// Capture id (hex).
    pub capture: String,
    /// The protocol's values as written on the photographed sheet.
    pub values: BTreeMap<String, u64>,
}

/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Storage.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// The core (capture, enrollment, sync).
    #[error(transparent)]
    Core(#[from] hattama_core::Error),
    /// A file.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The generated election definition does not parse (a bug).
    #[error("demo election: {0}")]
    Election(#[from] serde_json::Error),
    /// Review refused something (a bug in the demo).
    #[error(transparent)]
    Review(#[from] crate::review::ReviewError),
    /// A simulated observer thread died.
    #[error("a simulated observer failed: {0}")]
    Observer(String),
}

/// Imports the demo election into storage (before the server starts).
pub fn import_election(storage: &dyn Storage, options: &Options) -> Result<Election, DemoError> {
    let election = election(options.precincts, hattama_core::now_ms())?;
    storage.import_election(&election, hattama_core::now_ms())?;
    Ok(election)
}

/// The demo's accounts: user name, display name, role. They all get the password
/// [`DEMO_PASSWORD`] (a demo only; `hattama-server user reset` changes it).
pub const DEMO_USERS: [(&str, &str, Role); 4] = [
    ("admin", "Demo admin", Role::Admin),
    ("aigerim", "Aigerim (coordinator)", Role::Coordinator),
    ("dmitry", "Dmitry (coordinator)", Role::Coordinator),
    ("saule", "Saule (supervisor)", Role::Supervisor),
];

/// The demo accounts' password.
pub const DEMO_PASSWORD: &str = "hattama-demo-2026";

/// Coordinators review what the observers sent, as they would on election night: most photos
/// accepted, a few rejected or flagged; most photographed protocols entered twice and verified,
/// some entered differently by the second coordinator (disputed, waiting for a third), some not
/// yet transcribed. Uses the same domain functions as the review UI.
pub fn review(
    storage: &dyn ReviewStorage,
    election: &Election,
    observed: &[Observed],
) -> Result<(), DemoError> {
    let now = hattama_core::now_ms();
    let mut users = Vec::new();
    for (name, display, role) in DEMO_USERS {
        let user = NewUser {
            username: name.into(),
            display_name: display.into(),
            role,
            regions: Vec::new(),
        };
        users.push(crate::review::create_user(storage, &user, DEMO_PASSWORD, now)?);
    }
    let (first, second) = (&users[1], &users[2]);
    let mut precincts: Vec<(&str, &BTreeMap<String, u64>)> = Vec::new();
    for (i, o) in observed.iter().enumerate() {
        let id = hattama_core::evidence::Sha256Hash::from_hex(&o.capture)
            .ok_or_else(|| DemoError::Observer("bad capture id".into()))?;
        let (kind, reason) = match i % 23 {
            5 => (DecisionKind::Rejected, Some("unreadable")),
            11 => (DecisionKind::Flagged, Some("The stamp is missing.")),
            _ => (DecisionKind::Accepted, None),
        };
        crate::review::record_decision(storage, first, &id, kind, reason, now)?;
        if precincts.last().is_none_or(|(p, _)| *p != o.precinct) {
            precincts.push((&o.precinct, &o.values));
        }
    }
    for (i, (precinct, values)) in precincts.into_iter().enumerate() {
        if i % 5 == 4 {
            continue; // not transcribed yet
        }
        let values = values.clone();
        crate::review::record_entry(storage, election, first, precinct, values.clone(), None, now)?;
        let mut second_values = values;
        if i % 9 == 2 {
            // A typing slip: the entries differ, a third coordinator must decide.
            if let Some(v) = second_values.get_mut("7.2") {
                *v += 10;
            }
            if let Some(v) = second_values.get_mut("5") {
                *v += 10;
            }
        }
        crate::review::record_entry(storage, election, second, precinct, second_values, None, now)?;
    }
    Ok(())
}

#[cfg(feature = "demo")]
pub use observe::observe;

/// Imports two versions of official results with discrepancies.
pub fn import_official(storage: &dyn GalleryStorage, election: &Election) -> Result<(), DemoError> {
    let truth = true_figures(election);
    for (n, second) in [(1, false), (2, true)] {
        let figures = official_figures(&truth, 12, second);
        let csv = crate::official::to_csv(&election.id, &figures);
        let sha = hattama_core::evidence::Sha256Hash::of(&csv).to_hex();
        storage.import_official(
            &election.id,
            &figures,
            &format!("cec-results-v{n}.csv"),
            &sha,
            hattama_core::now_ms(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_election_is_valid_and_its_protocols_add_up() {
        let e = election(50, 1).unwrap();
        e.validate().unwrap();
        assert_eq!(e.precincts.len(), 50);
        let truth = true_figures(&e);
        for values in truth.values() {
            assert!(e.protocol.check(values).is_empty(), "{values:?}");
        }
        let official = official_figures(&truth, 12, false);
        let changed = truth.iter().filter(|(p, v)| official.get(*p) != Some(v)).count();
        assert!(changed >= 3, "{changed}");
        for values in official.values() {
            assert!(e.protocol.check(values).iter().all(|v| v.relation != "boxes"));
        }
        assert_ne!(official_figures(&truth, 12, true), official);
    }
}
