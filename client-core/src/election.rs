//! Election definitions and the protocol template's control relations.
//!
//! The server imports an election from this JSON form (`docs/election-format.md`) and hands it to
//! enrolled devices, so the app works offline; [`ProtocolTemplate::check`] is the one rule
//! engine that the phone (the observer's own transcription), the server and the review UI use.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::evidence::{EvidenceError, check_id};

/// A name in the three languages of the UI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Names {
    /// Kazakh.
    pub kk: String,
    /// Russian.
    pub ru: String,
    /// English.
    pub en: String,
}

/// A polling station.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Precinct {
    /// Identifier used in manifests and URLs.
    pub id: String,
    /// The station's official number.
    pub number: u32,
    /// Region (oblast or city of republican significance).
    pub region: String,
    /// District.
    pub district: String,
    /// Street address.
    pub address: String,
}

/// What a protocol line counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// A count of voters or ballots.
    Count,
    /// Votes for a candidate.
    Candidate,
    /// Votes "against all".
    AgainstAll,
}

/// One numbered line of the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// Line id as printed on the protocol ("1", "2", "7.1", ...).
    pub id: String,
    /// What it counts.
    pub kind: LineKind,
    /// Its title (or the candidate's name).
    pub names: Names,
}

/// How bad a broken relation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The protocol is arithmetically impossible: blocks verification unless explained.
    Hard,
    /// Suspicious but possible: shown as a flag.
    Soft,
}

/// How the two sides of a relation compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Equal.
    #[serde(rename = "=")]
    Eq,
    /// Left at most right.
    #[serde(rename = "<=")]
    Le,
    /// Left at least right.
    #[serde(rename = ">=")]
    Ge,
}

/// A control relation: `sum(left) op sum(right)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relation {
    /// Relation id.
    pub id: String,
    /// Hard or soft.
    pub severity: Severity,
    /// Lines summed on the left.
    pub left: Vec<String>,
    /// The comparison.
    pub op: Op,
    /// Lines summed on the right.
    pub right: Vec<String>,
    /// What it means, for people.
    pub names: Names,
}

/// The protocol's lines and control relations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolTemplate {
    /// Lines in protocol order.
    pub lines: Vec<Line>,
    /// Control relations.
    pub relations: Vec<Relation>,
}

/// An election as imported by the server and handed to devices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Election {
    /// Election id used in manifests.
    pub id: String,
    /// Its name.
    pub names: Names,
    /// When counting ends, ms since the Unix epoch (to flag captures far from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_time_ms: Option<u64>,
    /// The election's own time zone as an offset from UTC in minutes (Kazakhstan: 300), in which
    /// public pages show every time; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utc_offset_min: Option<i32>,
    /// Observers of this election are at risk (`docs/election-format.md`): unless
    /// `photos_after_receipt` says otherwise, phones remove a photo once its receipt is verified.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub high_risk: bool,
    /// What a phone does with a photo once the server's receipt is verified, as the
    /// coordinators impose it; absent: [`PhotoRetention::Remove`] when `high_risk`, else keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photos_after_receipt: Option<PhotoRetention>,
    /// The polling stations.
    pub precincts: Vec<Precinct>,
    /// The protocol template.
    pub protocol: ProtocolTemplate,
}

/// What a phone does with a photo once the server's receipt for it is verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhotoRetention {
    /// The photo stays on the phone until the observer deletes the store.
    Keep,
    /// The photo bytes and thumbnail are removed from the phone; the manifest, signature,
    /// receipt and log proof stay, and the server keeps the photo.
    Remove,
}

/// A broken relation, found by [`ProtocolTemplate::check`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The relation's id.
    pub relation: String,
    /// Hard or soft.
    pub severity: Severity,
    /// Sum of the left side.
    pub left: u64,
    /// Sum of the right side.
    pub right: u64,
}

/// Why an election definition was refused.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// Not JSON of this shape.
    #[error("election definition is malformed: {0}")]
    Malformed(String),
    /// A rule of the format is broken.
    #[error("election definition is invalid: {0}")]
    Invalid(String),
    /// An id is not a valid id.
    #[error(transparent)]
    Id(#[from] EvidenceError),
}

impl Election {
    /// Parses and validates an election definition (JSON).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ElectionError> {
        let e: Self =
            serde_json::from_slice(bytes).map_err(|e| ElectionError::Malformed(e.to_string()))?;
        e.validate()?;
        Ok(e)
    }

    /// Checks ids, uniqueness and that relations name existing lines.
    pub fn validate(&self) -> Result<(), ElectionError> {
        check_id("election", &self.id)?;
        if self.utc_offset_min.is_some_and(|m| !(-720..=840).contains(&m)) {
            return Err(ElectionError::Invalid("utc_offset_min must be -720 to 840".into()));
        }
        let mut seen = HashSet::new();
        for p in &self.precincts {
            check_id("precinct", &p.id)?;
            if !seen.insert(p.id.as_str()) {
                return Err(ElectionError::Invalid(format!("precinct {} appears twice", p.id)));
            }
        }
        let mut lines = HashSet::new();
        for l in &self.protocol.lines {
            check_id("transcription", &l.id)?;
            if !lines.insert(l.id.as_str()) {
                return Err(ElectionError::Invalid(format!("line {} appears twice", l.id)));
            }
        }
        for r in &self.protocol.relations {
            for l in r.left.iter().chain(&r.right) {
                if !lines.contains(l.as_str()) {
                    return Err(ElectionError::Invalid(format!(
                        "relation {} names unknown line {l}",
                        r.id
                    )));
                }
            }
        }
        Ok(())
    }

    /// The precinct with this id.
    pub fn precinct(&self, id: &str) -> Option<&Precinct> {
        self.precincts.iter().find(|p| p.id == id)
    }

    /// The precinct an observer means by `given`: its id, or else its official number as
    /// written on the station's door (`123`, `№123`, `No. 123`, `#123`, `участок 123`). `None`
    /// if no precinct has that id, or the number matches none or more than one.
    pub fn find_precinct(&self, given: &str) -> Option<&Precinct> {
        let given = given.trim();
        if let Some(p) = self.precinct(given) {
            return Some(p);
        }
        let number = precinct_number(given)?;
        let mut found = self.precincts.iter().filter(|p| p.number == number);
        match (found.next(), found.next()) {
            (Some(p), None) => Some(p),
            _ => None,
        }
    }

    /// Whether phones remove a photo once its receipt is verified: `photos_after_receipt`, or
    /// else whether the election is `high_risk`.
    pub fn removes_photos_after_receipt(&self) -> bool {
        match self.photos_after_receipt {
            Some(r) => r == PhotoRetention::Remove,
            None => self.high_risk,
        }
    }

    /// Whether the protocol has a line with this id.
    pub fn has_line(&self, id: &str) -> bool {
        self.protocol.lines.iter().any(|l| l.id == id)
    }
}

/// The number of a precinct as people write it: one run of digits and, besides it, only `№`,
/// `#`, `No.`, `N`, `Nr` or the words for "precinct" or "station" in Kazakh, Russian or English
/// with their case endings (`140`, `№140`, `No. 140`, `участок 140`, `140-участке`,
/// `№140 учаскесі`, `polling station 140`). `None` for anything else (an address, two numbers).
/// The one reading of a station's number, for the observer's capture and the gallery's search.
pub fn precinct_number(given: &str) -> Option<u32> {
    let spaced: String = given
        .to_lowercase()
        .chars()
        .map(|c| if matches!(c, '№' | '#' | '-' | '.' | ',') { ' ' } else { c })
        .collect();
    let mut number = None;
    for word in spaced.split_whitespace() {
        if word.bytes().all(|b| b.is_ascii_digit()) {
            if number.replace(word).is_some() {
                return None;
            }
        } else if !(["no", "nr", "n", "уч"].contains(&word)
            || ["участ", "учаск", "station", "polling", "precinct"]
                .iter()
                .any(|s| word.starts_with(s)))
        {
            return None;
        }
    }
    number?.parse().ok()
}

impl ProtocolTemplate {
    /// Evaluates every relation whose lines all have a value; returns the broken ones.
    pub fn check(&self, values: &BTreeMap<String, u64>) -> Vec<Violation> {
        let sum = |ids: &[String]| -> Option<u64> {
            ids.iter().try_fold(0u64, |acc, id| values.get(id).map(|v| acc.saturating_add(*v)))
        };
        self.relations
            .iter()
            .filter_map(|r| {
                let (left, right) = (sum(&r.left)?, sum(&r.right)?);
                let holds = match r.op {
                    Op::Eq => left == right,
                    Op::Le => left <= right,
                    Op::Ge => left >= right,
                };
                (!holds).then(|| Violation {
                    relation: r.id.clone(),
                    severity: r.severity,
                    left,
                    right,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &str) -> Names {
        Names { kk: s.into(), ru: s.into(), en: s.into() }
    }

    fn template() -> ProtocolTemplate {
        let line = |id: &str, kind| Line { id: id.into(), kind, names: names(id) };
        ProtocolTemplate {
            lines: vec![
                line("1", LineKind::Count),
                line("2", LineKind::Count),
                line("3", LineKind::Count),
                line("4", LineKind::Count),
                line("5", LineKind::Candidate),
                line("6", LineKind::AgainstAll),
            ],
            relations: vec![
                Relation {
                    id: "received".into(),
                    severity: Severity::Hard,
                    left: vec!["1".into()],
                    op: Op::Eq,
                    right: vec!["2".into(), "3".into()],
                    names: names("received = issued + cancelled"),
                },
                Relation {
                    id: "boxes".into(),
                    severity: Severity::Soft,
                    left: vec!["4".into()],
                    op: Op::Le,
                    right: vec!["2".into()],
                    names: names("ballots in boxes <= issued"),
                },
            ],
        }
    }

    #[test]
    fn relations_are_checked_only_when_all_lines_are_known() {
        let t = template();
        let v = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        assert!(t.check(&v(&[("1", 100)])).is_empty());
        assert!(t.check(&v(&[("1", 100), ("2", 90), ("3", 10), ("4", 90)])).is_empty());
        let broken = t.check(&v(&[("1", 100), ("2", 90), ("3", 9), ("4", 95)]));
        assert_eq!(
            broken,
            vec![
                Violation {
                    relation: "received".into(),
                    severity: Severity::Hard,
                    left: 100,
                    right: 99
                },
                Violation {
                    relation: "boxes".into(),
                    severity: Severity::Soft,
                    left: 95,
                    right: 90
                },
            ]
        );
    }

    #[test]
    fn a_precinct_is_found_by_id_or_by_its_number_as_people_write_it() {
        let p = |id: &str, number| Precinct {
            id: id.into(),
            number,
            region: "r".into(),
            district: "d".into(),
            address: "a".into(),
        };
        let e = Election {
            id: "kz".into(),
            names: names("Test"),
            count_time_ms: None,
            precincts: vec![p("p0123", 123), p("77", 5), p("a", 9), p("b", 9)],
            protocol: template(),
            utc_offset_min: None,
            high_risk: false,
            photos_after_receipt: None,
        };
        let found = |given: &str| e.find_precinct(given).map(|p| p.id.as_str());
        for (given, expected) in [
            ("p0123", Some("p0123")),
            (" p0123 ", Some("p0123")),
            ("123", Some("p0123")),
            ("0123", Some("p0123")),
            ("№123", Some("p0123")),
            ("№ 123", Some("p0123")),
            ("No. 123", Some("p0123")),
            ("#123", Some("p0123")),
            ("участок 123", Some("p0123")),
            ("Учаске 123", Some("p0123")),
            ("123-участке", Some("p0123")),
            ("№123 учаскесі", Some("p0123")),
            ("участок №123", Some("p0123")),
            ("polling station 123", Some("p0123")),
            ("school 123", None),
            ("123 124", None),
            ("участок", None),
            // An id wins over a number.
            ("77", Some("77")),
            ("5", Some("77")),
            // A number two precincts share is ambiguous.
            ("9", None),
            ("124", None),
            ("p0124", None),
            ("", None),
            ("12a", None),
            ("99999999999", None),
        ] {
            assert_eq!(found(given), expected, "{given:?}");
        }
        assert!(e.has_line("5") && !e.has_line("55"));
    }

    #[test]
    fn photos_leave_phones_after_the_receipt_when_high_risk_unless_the_package_says_otherwise() {
        let base = r#""id":"e","names":{"kk":"e","ru":"e","en":"e"},"precincts":[],"protocol":{"lines":[],"relations":[]}"#;
        for (extra, high_risk, removes) in [
            ("", false, false),
            (r#","high_risk":true"#, true, true),
            (r#","high_risk":false"#, false, false),
            (r#","high_risk":true,"photos_after_receipt":"keep""#, true, false),
            (r#","photos_after_receipt":"remove""#, false, true),
            (r#","photos_after_receipt":"keep""#, false, false),
        ] {
            let json = format!("{{{base}{extra}}}");
            let e = Election::from_json(json.as_bytes()).unwrap();
            assert_eq!((e.high_risk, e.removes_photos_after_receipt()), (high_risk, removes));
            // The package a device receives says the same.
            let again = Election::from_json(&serde_json::to_vec(&e).unwrap()).unwrap();
            assert_eq!(again, e);
        }
        for bad in [r#","photos_after_receipt":"delete""#, r#","high_risk":"yes""#] {
            assert!(Election::from_json(format!("{{{base}{bad}}}").as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_station_number_is_read_as_people_write_it() {
        for (given, expected) in [
            ("140", Some(140)),
            ("№140", Some(140)),
            ("№ 140", Some(140)),
            ("no. 140", Some(140)),
            ("#140", Some(140)),
            ("участок 140", Some(140)),
            ("140-участке", Some(140)),
            ("участок №140", Some(140)),
            ("140 учаске", Some(140)),
            ("№140 учаскесі", Some(140)),
            ("polling station 140", Some(140)),
            ("school 140", None),
            ("nurly 140", None),
            ("140 141", None),
            ("абая", None),
            ("участок", None),
            ("99999999999", None),
        ] {
            assert_eq!(precinct_number(given), expected, "{given:?}");
        }
    }

    #[test]
    fn validation_catches_bad_definitions() {
        let mut e = Election {
            id: "kz-test".into(),
            names: names("Test"),
            count_time_ms: None,
            utc_offset_min: None,
            high_risk: false,
            photos_after_receipt: None,
            precincts: vec![Precinct {
                id: "p1".into(),
                number: 1,
                region: "r".into(),
                district: "d".into(),
                address: "a".into(),
            }],
            protocol: template(),
        };
        assert!(e.validate().is_ok());
        e.protocol.relations[0].left.push("99".into());
        assert!(matches!(e.validate(), Err(ElectionError::Invalid(_))));
        e.protocol = template();
        e.precincts.push(e.precincts[0].clone());
        assert!(matches!(e.validate(), Err(ElectionError::Invalid(_))));
        e.precincts.pop();
        e.precincts[0].id = "../x".into();
        assert!(matches!(e.validate(), Err(ElectionError::Id(_))));
    }
}
