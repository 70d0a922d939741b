//! Election fixtures: a protocol template shaped after Kazakhstan's result protocol, and
//! elections of any size built from it.

use serde_json::{Value, json};

fn names(kk: &str, ru: &str, en: &str) -> Value {
    json!({ "kk": kk, "ru": ru, "en": en })
}

/// The protocol template: counts, candidates, "against all", and the control relations.
pub fn protocol(candidates: &[&str]) -> Value {
    let mut lines = vec![
        json!({"id": "1", "kind": "count", "names": names("Сайлаушылар саны", "Число избирателей", "Voters on the lists")}),
        json!({"id": "2", "kind": "count", "names": names("Алынған бюллетеньдер", "Получено бюллетеней", "Ballots received")}),
        json!({"id": "3", "kind": "count", "names": names("Берілген бюллетеньдер", "Выдано бюллетеней", "Ballots issued")}),
        json!({"id": "4", "kind": "count", "names": names("Өтелген бюллетеньдер", "Погашено бюллетеней", "Ballots cancelled")}),
        json!({"id": "5", "kind": "count", "names": names("Жәшіктердегі бюллетеньдер", "Бюллетеней в ящиках", "Ballots in the boxes")}),
        json!({"id": "6", "kind": "count", "names": names("Жарамсыз бюллетеньдер", "Недействительные бюллетени", "Invalid ballots")}),
    ];
    let mut votes = vec!["6".to_owned()];
    for (i, c) in candidates.iter().enumerate() {
        let id = format!("7.{}", i + 1);
        lines.push(json!({"id": id, "kind": "candidate", "names": names(c, c, c)}));
        votes.push(id);
    }
    lines.push(json!({"id": "8", "kind": "against_all", "names": names("Барлығына қарсы", "Против всех", "Against all")}));
    votes.push("8".to_owned());
    json!({
        "lines": lines,
        "relations": [
            {"id": "received", "severity": "hard", "left": ["2"], "op": "=", "right": ["3", "4"],
             "names": names("Алынған = берілген + жойылған", "Получено = выдано + погашено", "Received = issued + cancelled")},
            {"id": "boxes", "severity": "hard", "left": ["5"], "op": "=", "right": votes,
             "names": names("Жәшіктегі = жарамсыз + дауыстар", "В ящиках = недействительные + голоса", "In boxes = invalid + votes")},
            {"id": "boxes_vs_issued", "severity": "soft", "left": ["5"], "op": "<=", "right": ["3"],
             "names": names("Жәшіктегі ≤ берілген", "В ящиках ≤ выдано", "In boxes ≤ issued")},
            {"id": "issued_vs_voters", "severity": "soft", "left": ["3"], "op": "<=", "right": ["1"],
             "names": names("Берілген ≤ сайлаушылар", "Выдано ≤ избирателей", "Issued ≤ voters")}
        ]
    })
}

/// Precinct id number `i` of an election: `p0001`, `p0002`, …
pub fn precinct_id(i: usize) -> String {
    format!("p{i:04}")
}

/// An election with `precincts` polling stations in a few regions and districts.
pub fn election(id: &str, precincts: usize) -> Value {
    let regions = ["Almaty", "Astana", "Shymkent", "Karaganda"];
    let list: Vec<Value> = (1..=precincts)
        .map(|i| {
            let region = regions[i % regions.len()];
            json!({
                "id": precinct_id(i),
                "number": i,
                "region": region,
                "district": format!("{region} district {}", i % 7 + 1),
                "address": format!("School No. {}, {} street {}", 100 + i, region, i % 50 + 1),
            })
        })
        .collect();
    json!({
        "id": id,
        "names": names("Сайлау", "Выборы", "Election"),
        "precincts": list,
        "protocol": protocol(&["Candidate A", "Candidate B", "Candidate C"]),
    })
}

/// The shape of the Almaty 2019 case: observers' protocols from 225 stations gave a candidate
/// 69,669 votes, while the official figure for all 554 stations was 50,366. Official figures
/// for every station and verified transcriptions (the review's double entry, by two
/// coordinators, through the same domain functions as the review UI) for 225 of them, seeded
/// into a real data directory before the real server starts.
pub mod almaty {
    use std::collections::BTreeMap;
    use std::path::Path;

    use hattama_core::election::Election;
    use hattama_server::review;
    use hattama_server::storage::review::{NewUser, Role};

    use crate::server::{admin, import_election};

    /// The election's id.
    pub const ELECTION: &str = "almaty-2019";
    /// Stations with official figures.
    pub const STATIONS: usize = 554;
    /// Stations whose protocols the observers photographed (every second of the first 450).
    pub const OBSERVED: usize = 225;
    /// The candidate's votes (line 7.1) on the observers' protocols.
    pub const OBSERVED_TOTAL: u64 = 69_669;
    /// The candidate's official votes over all stations.
    pub const OFFICIAL_TOTAL: u64 = 50_366;

    /// A consistent protocol giving `votes` to candidate line 7.1.
    pub fn protocol(votes: u64) -> BTreeMap<String, u64> {
        let others = [("6", 3), ("7.2", 50), ("7.3", 20), ("8", 5)];
        let boxes = votes + others.iter().map(|(_, v)| v).sum::<u64>();
        let mut v: BTreeMap<String, u64> =
            others.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        for (k, x) in [
            ("7.1", votes),
            ("5", boxes),
            ("3", boxes),
            ("4", 10),
            ("2", boxes + 10),
            ("1", boxes + 100),
        ] {
            v.insert(k.to_string(), x);
        }
        v
    }

    /// Spreads `total` over `n` stations as evenly as whole numbers allow.
    pub fn spread(total: u64, n: usize) -> Vec<u64> {
        let (each, extra) = (total / n as u64, (total % n as u64) as usize);
        (0..n).map(|i| each + u64::from(i < extra)).collect()
    }

    /// Seeds `dir` with the Almaty-shaped data; returns the election.
    pub fn seed(dir: &Path) -> Election {
        let json = super::election(ELECTION, STATIONS);
        import_election(dir, &json);
        let election: Election = serde_json::from_value(json).unwrap();
        let official: String = election
            .precincts
            .iter()
            .zip(spread(OFFICIAL_TOTAL, STATIONS))
            .flat_map(|(p, votes)| {
                protocol(votes)
                    .into_iter()
                    .map(move |(l, v)| format!("{ELECTION},{},{l},{v}\n", p.id))
                    .collect::<Vec<_>>()
            })
            .collect();
        let file = dir.join("official.csv");
        std::fs::write(&file, format!("election,precinct,line,value\n{official}")).unwrap();
        let run = admin(dir, &["official", "import", file.to_str().unwrap()]);
        assert_eq!(run.code, Some(0), "{run:?}");

        let storage = crate::backend::open_storage(dir);
        let now = hattama_core::now_ms();
        let coordinator = |name: &str| {
            let user = NewUser {
                username: name.into(),
                display_name: name.into(),
                role: Role::Coordinator,
                regions: Vec::new(),
            };
            review::create_user(&*storage, &user, "a long enough password", now).unwrap()
        };
        let (first, second) = (coordinator("first"), coordinator("second"));
        // Every second station of the first 450 was photographed: 225, over all regions.
        for (p, votes) in election.precincts.iter().step_by(2).zip(spread(OBSERVED_TOTAL, OBSERVED))
        {
            for user in [&first, &second] {
                review::record_entry(&*storage, &election, user, &p.id, protocol(votes), None, now)
                    .unwrap();
            }
        }
        election
    }
}
