//! Observed against official figures: the comparison the public gallery shows and the open data
//! exports. Observed figures are the coordinators' verified transcriptions of the photographed
//! protocols; official figures are the newest imported version (`official`).
//!
//! Totals are given two ways per line: over the precincts where both an observed and an official
//! figure exist (like for like), and over all precincts with a figure of that kind (which is how
//! the Almaty 2019 case reads: observers' protocols from 225 stations against the official total
//! of all 554). Precincts that differ are listed by the size of the difference; protocols whose
//! official figures break the template's control relations are listed with the broken ones,
//! found by the core's one rule engine (`ProtocolTemplate::check`).

use hattama_core::election::{ProtocolTemplate, Violation};
use serde::Serialize;

use crate::official::Figures;

/// Totals of one protocol line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LineTotals {
    /// Line id.
    pub line: String,
    /// Observed total over precincts with both figures for this line.
    pub observed_both: u64,
    /// Official total over the same precincts.
    pub official_both: u64,
    /// Observed total over every precinct with an observed figure.
    pub observed_all: u64,
    /// Precincts counted in `observed_all`.
    pub observed_precincts: u64,
    /// Official total over every precinct with an official figure.
    pub official_all: u64,
    /// Precincts counted in `official_all`.
    pub official_precincts: u64,
    /// Precincts counted in the `_both` totals.
    pub both_precincts: u64,
}

impl LineTotals {
    /// `observed_both - official_both`.
    pub fn difference_both(&self) -> i64 {
        self.observed_both as i64 - self.official_both as i64
    }
}

/// One line of one precinct whose observed and official figures differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LineDifference {
    /// Line id.
    pub line: String,
    /// Observed.
    pub observed: u64,
    /// Official.
    pub official: u64,
}

/// A precinct whose observed and official figures differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrecinctDifference {
    /// Precinct id.
    pub precinct: String,
    /// Sum over its lines of |observed - official|: the size it is sorted by.
    pub size: u64,
    /// The differing lines, in protocol order.
    pub lines: Vec<LineDifference>,
}

/// A precinct whose official figures break control relations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BrokenProtocol {
    /// Precinct id.
    pub precinct: String,
    /// The broken relations.
    pub violations: Vec<Violation>,
}

/// The whole comparison of one election.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Comparison {
    /// Precincts with an observed (verified) transcription.
    pub observed_precincts: u64,
    /// Precincts with official figures.
    pub official_precincts: u64,
    /// Precincts with both.
    pub both_precincts: u64,
    /// Per line, in protocol order.
    pub lines: Vec<LineTotals>,
    /// Precincts that differ, largest difference first (ties by precinct id).
    pub differences: Vec<PrecinctDifference>,
    /// Precincts whose official figures break a control relation, by precinct id.
    pub broken_official: Vec<BrokenProtocol>,
}

/// Compares observed with official figures over a protocol template.
pub fn compare(template: &ProtocolTemplate, observed: &Figures, official: &Figures) -> Comparison {
    let mut totals: Vec<LineTotals> = template
        .lines
        .iter()
        .map(|l| LineTotals { line: l.id.clone(), ..LineTotals::default() })
        .collect();
    for (i, line) in template.lines.iter().enumerate() {
        let t = &mut totals[i];
        for figures in observed.values() {
            if let Some(v) = figures.get(&line.id) {
                t.observed_all += v;
                t.observed_precincts += 1;
            }
        }
        for (precinct, figures) in official {
            if let Some(v) = figures.get(&line.id) {
                t.official_all += v;
                t.official_precincts += 1;
                if let Some(o) = observed.get(precinct).and_then(|f| f.get(&line.id)) {
                    t.observed_both += o;
                    t.official_both += v;
                    t.both_precincts += 1;
                }
            }
        }
    }
    let mut differences: Vec<PrecinctDifference> = observed
        .iter()
        .filter_map(|(precinct, obs)| {
            let off = official.get(precinct)?;
            let lines: Vec<LineDifference> = template
                .lines
                .iter()
                .filter_map(|l| {
                    let (o, f) = (*obs.get(&l.id)?, *off.get(&l.id)?);
                    (o != f).then(|| LineDifference {
                        line: l.id.clone(),
                        observed: o,
                        official: f,
                    })
                })
                .collect();
            (!lines.is_empty()).then(|| PrecinctDifference {
                precinct: precinct.clone(),
                size: lines.iter().map(|d| d.observed.abs_diff(d.official)).sum(),
                lines,
            })
        })
        .collect();
    differences.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.precinct.cmp(&b.precinct)));
    let broken_official = official
        .iter()
        .filter_map(|(precinct, figures)| {
            let violations = template.check(figures);
            (!violations.is_empty())
                .then(|| BrokenProtocol { precinct: precinct.clone(), violations })
        })
        .collect();
    let both = observed.keys().filter(|p| official.get(*p).is_some_and(|f| !f.is_empty())).count();
    Comparison {
        observed_precincts: observed.values().filter(|f| !f.is_empty()).count() as u64,
        official_precincts: official.values().filter(|f| !f.is_empty()).count() as u64,
        both_precincts: both as u64,
        lines: totals,
        differences,
        broken_official,
    }
}

impl Comparison {
    /// The totals of one line.
    pub fn line(&self, id: &str) -> Option<&LineTotals> {
        self.lines.iter().find(|l| l.line == id)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hattama_core::election::{Line, LineKind, Names, Op, Relation, Severity};
    use proptest::prelude::*;

    use super::*;

    fn template() -> ProtocolTemplate {
        let names = Names { kk: "x".into(), ru: "x".into(), en: "x".into() };
        let line = |id: &str, kind| Line { id: id.into(), kind, names: names.clone() };
        ProtocolTemplate {
            lines: vec![
                line("5", LineKind::Count),
                line("7.1", LineKind::Candidate),
                line("7.2", LineKind::Candidate),
            ],
            relations: vec![Relation {
                id: "boxes".into(),
                severity: Severity::Hard,
                left: vec!["5".into()],
                op: Op::Eq,
                right: vec!["7.1".into(), "7.2".into()],
                names,
            }],
        }
    }

    fn figures(rows: &[(&str, &str, u64)]) -> Figures {
        let mut f = Figures::new();
        for (p, l, v) in rows {
            f.entry(p.to_string()).or_default().insert(l.to_string(), *v);
        }
        f
    }

    #[test]
    fn totals_differences_and_broken_protocols() {
        let observed = figures(&[
            ("a", "5", 100),
            ("a", "7.1", 60),
            ("a", "7.2", 40),
            ("b", "5", 50),
            ("b", "7.1", 30),
            ("b", "7.2", 20),
        ]);
        let official = figures(&[
            ("a", "5", 100),
            ("a", "7.1", 40),
            ("a", "7.2", 60),
            ("c", "5", 10),
            ("c", "7.1", 9),
            ("c", "7.2", 9),
        ]);
        let c = compare(&template(), &observed, &official);
        assert_eq!((c.observed_precincts, c.official_precincts, c.both_precincts), (2, 2, 1));
        let t = c.line("7.1").unwrap();
        assert_eq!((t.observed_all, t.observed_precincts), (90, 2));
        assert_eq!((t.official_all, t.official_precincts), (49, 2));
        assert_eq!((t.observed_both, t.official_both, t.both_precincts), (60, 40, 1));
        assert_eq!(t.difference_both(), 20);
        assert_eq!(c.differences.len(), 1);
        assert_eq!(c.differences[0].precinct, "a");
        assert_eq!(c.differences[0].size, 40);
        assert_eq!(c.differences[0].lines.len(), 2);
        assert_eq!(c.broken_official.len(), 1);
        assert_eq!(c.broken_official[0].precinct, "c");
        assert_eq!(c.broken_official[0].violations[0].relation, "boxes");
    }

    proptest! {
        /// The like-for-like totals differ exactly by the signed sum of the listed differences.
        #[test]
        fn listed_differences_account_for_the_totals(
            obs in proptest::collection::btree_map(0u8..20, (0u64..1000, 0u64..1000), 0..20),
            off in proptest::collection::btree_map(0u8..20, (0u64..1000, 0u64..1000), 0..20),
        ) {
            let to_figures = |m: &BTreeMap<u8, (u64, u64)>| -> Figures {
                m.iter().map(|(p, (a, b))| {
                    (format!("p{p:02}"), [("7.1".to_string(), *a), ("7.2".to_string(), *b)].into())
                }).collect()
            };
            let (observed, official) = (to_figures(&obs), to_figures(&off));
            let c = compare(&template(), &observed, &official);
            for line in ["7.1", "7.2"] {
                let t = c.line(line).unwrap();
                let listed: i64 = c.differences.iter()
                    .flat_map(|d| &d.lines)
                    .filter(|d| d.line == line)
                    .map(|d| d.observed as i64 - d.official as i64)
                    .sum();
                prop_assert_eq!(t.difference_both(), listed);
            }
            for w in c.differences.windows(2) {
                prop_assert!(w[0].size >= w[1].size);
            }
        }
    }
}
