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
