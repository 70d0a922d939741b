//! Official results: the figures the election commission publishes, imported from CSV
//! (`docs/official-results.md`), kept as numbered versions per election so that the public sees
//! when the official figure for a precinct changed and what changed.
//!
//! An import is a complete snapshot: version N holds every official figure known at its import.
//! Importing figures identical to the newest version creates no new version. The CSV is checked
//! whole before anything is stored: an unknown precinct or line, a duplicate, a bad number or a
//! file too large is a typed error naming the row, and nothing is stored.

use std::collections::BTreeMap;

use crate::election::Election;
use serde::Serialize;

/// Largest official-results file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 64 * 1024 * 1024;

/// The CSV header of an import file (and of the per-version export, which round-trips).
pub const HEADER: [&str; 4] = ["election", "precinct", "line", "value"];

/// Official figures of one election: precinct id → line id → value.
pub type Figures = BTreeMap<String, BTreeMap<String, u64>>;

/// Why an official-results file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OfficialError {
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("the file has {0} bytes; at most {MAX_FILE_BYTES} are accepted")]
    TooLarge(usize),
    /// The header is not `election,precinct,line,value`.
    #[error("the header must be `election,precinct,line,value`")]
    BadHeader,
    /// A row is not valid CSV or has the wrong number of fields.
    #[error("row {row}: {message}")]
    Malformed {
        /// 1-based row number, the header being row 1.
        row: u64,
        /// What is wrong.
        message: String,
    },
    /// The rows name more than one election, or another election than the one imported into.
    #[error("row {row}: election {found:?}, but the file is for {expected:?}")]
    OtherElection {
        /// Row.
        row: u64,
        /// The election named.
        found: String,
        /// The election expected.
        expected: String,
    },
    /// No election of that id exists.
    #[error("no election {0:?}: import its definition first")]
    UnknownElection(String),
    /// A precinct of the row is not in the election.
    #[error("row {row}: election has no precinct {precinct:?}")]
    UnknownPrecinct {
        /// Row.
        row: u64,
        /// The precinct named.
        precinct: String,
    },
    /// A line of the row is not in the protocol template.
    #[error("row {row}: the protocol has no line {line:?}")]
    UnknownLine {
        /// Row.
        row: u64,
        /// The line named.
        line: String,
    },
    /// The same precinct and line appear twice.
    #[error("row {row}: precinct {precinct:?} line {line:?} appears twice")]
    Duplicate {
        /// Row.
        row: u64,
        /// Precinct.
        precinct: String,
        /// Line.
        line: String,
    },
    /// A value is not a non-negative integer of at most 2^53 - 1.
    #[error("row {row}: value {value:?} is not a whole number from 0 to 9007199254740991")]
    BadValue {
        /// Row.
        row: u64,
        /// The value as written.
        value: String,
    },
    /// The file holds no figure.
    #[error("the file holds no figure")]
    Empty,
}

/// Reads the election id named by the first data row (to find the election to check against).
pub fn election_of(csv_bytes: &[u8]) -> Result<String, OfficialError> {
    let mut reader = reader(csv_bytes)?;
    match reader.records().next() {
        Some(Ok(record)) => Ok(record.get(0).unwrap_or_default().to_owned()),
        Some(Err(e)) => Err(malformed(&e)),
        None => Err(OfficialError::Empty),
    }
}

fn reader(csv_bytes: &[u8]) -> Result<csv::Reader<&[u8]>, OfficialError> {
    if csv_bytes.len() > MAX_FILE_BYTES {
        return Err(OfficialError::TooLarge(csv_bytes.len()));
    }
    let bytes = csv_bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(csv_bytes);
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes);
    let header = reader.headers().map_err(|e| malformed(&e))?;
    if header.iter().map(str::trim).ne(HEADER) {
        return Err(OfficialError::BadHeader);
    }
    Ok(reader)
}

fn malformed(e: &csv::Error) -> OfficialError {
    let row = e.position().map_or(0, |p| p.line());
    let message = match e.kind() {
        csv::ErrorKind::UnequalLengths { len, .. } => format!("{len} fields instead of 4"),
        csv::ErrorKind::Utf8 { .. } => "not UTF-8".to_owned(),
        _ => e.to_string(),
    };
    OfficialError::Malformed { row, message }
}

/// Parses and checks a whole official-results file against its election.
pub fn parse(csv_bytes: &[u8], election: &Election) -> Result<Figures, OfficialError> {
    let mut reader = reader(csv_bytes)?;
    let lines: std::collections::HashSet<&str> =
        election.protocol.lines.iter().map(|l| l.id.as_str()).collect();
    let precincts: std::collections::HashSet<&str> =
        election.precincts.iter().map(|p| p.id.as_str()).collect();
    let mut figures = Figures::new();
    for record in reader.records() {
        let record = record.map_err(|e| malformed(&e))?;
        let row = record.position().map_or(0, |p| p.line());
        let field = |i: usize| record.get(i).unwrap_or_default().trim();
        let (e, precinct, line, value) = (field(0), field(1), field(2), field(3));
        if e != election.id {
            return Err(OfficialError::OtherElection {
                row,
                found: e.to_owned(),
                expected: election.id.clone(),
            });
        }
        if !precincts.contains(precinct) {
            return Err(OfficialError::UnknownPrecinct { row, precinct: precinct.to_owned() });
        }
        if !lines.contains(line) {
            return Err(OfficialError::UnknownLine { row, line: line.to_owned() });
        }
        let number = value
            .parse::<u64>()
            .ok()
            .filter(|v| *v <= crate::evidence::MAX_SAFE_INTEGER && value.len() <= 16)
            .ok_or_else(|| OfficialError::BadValue { row, value: value.to_owned() })?;
        let previous =
            figures.entry(precinct.to_owned()).or_default().insert(line.to_owned(), number);
        if previous.is_some() {
            return Err(OfficialError::Duplicate {
                row,
                precinct: precinct.to_owned(),
                line: line.to_owned(),
            });
        }
    }
    if figures.is_empty() {
        return Err(OfficialError::Empty);
    }
    Ok(figures)
}

/// Writes figures as an import file (the format [`parse`] reads), rows sorted by precinct then
/// line.
pub fn to_csv(election: &str, figures: &Figures) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    // Writing to a Vec cannot fail.
    let _ = w.write_record(HEADER);
    for (precinct, lines) in figures {
        for (line, value) in lines {
            let _ = w.write_record([election, precinct, line, &value.to_string()]);
        }
    }
    w.into_inner().unwrap_or_default()
}

/// A stored version of the official figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Version {
    /// 1, 2, … per election.
    pub version: u64,
    /// When it was imported.
    pub imported_at_ms: u64,
    /// The imported file's name (no directory).
    pub source: String,
    /// SHA-256 of the imported file, hex.
    pub sha256: String,
    /// Precincts with at least one figure.
    pub precincts: u64,
}

/// One official figure that changed from one version to the next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The version in which it changed.
    pub version: u64,
    /// Precinct.
    pub precinct: String,
    /// Line.
    pub line: String,
    /// The value before (absent: the figure was new).
    pub before: Option<u64>,
    /// The value after (absent: the figure was removed).
    pub after: Option<u64>,
}

/// The figures that differ between two consecutive versions, in precinct and line order.
pub fn changes(version: u64, before: &Figures, after: &Figures) -> Vec<Change> {
    let empty = BTreeMap::new();
    let mut precincts: Vec<&String> = before.keys().chain(after.keys()).collect();
    precincts.sort();
    precincts.dedup();
    let mut out = Vec::new();
    for p in precincts {
        let (b, a) = (before.get(p).unwrap_or(&empty), after.get(p).unwrap_or(&empty));
        let mut lines: Vec<&String> = b.keys().chain(a.keys()).collect();
        lines.sort();
        lines.dedup();
        for l in lines {
            let (x, y) = (b.get(l).copied(), a.get(l).copied());
            if x != y {
                out.push(Change {
                    version,
                    precinct: p.clone(),
                    line: l.clone(),
                    before: x,
                    after: y,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn election() -> Election {
        let json = serde_json::json!({
            "id": "e1",
            "names": {"kk": "e", "ru": "e", "en": "e"},
            "precincts": [
                {"id": "p1", "number": 1, "region": "r", "district": "d", "address": "a"},
                {"id": "p2", "number": 2, "region": "r", "district": "d", "address": "a"}
            ],
            "protocol": {"lines": [
                {"id": "1", "kind": "count", "names": {"kk": "x", "ru": "x", "en": "x"}},
                {"id": "7.1", "kind": "candidate", "names": {"kk": "x", "ru": "x", "en": "x"}}
            ], "relations": []}
        });
        Election::from_json(json.to_string().as_bytes()).unwrap()
    }

    fn check(csv: &str, expected: Result<Vec<(&str, &str, u64)>, OfficialError>) {
        let got = parse(csv.as_bytes(), &election());
        let expected = expected.map(|rows| {
            let mut f = Figures::new();
            for (p, l, v) in rows {
                f.entry(p.to_owned()).or_default().insert(l.to_owned(), v);
            }
            f
        });
        assert_eq!(got, expected, "{csv}");
    }

    #[test]
    fn files_are_parsed_or_refused_with_the_row() {
        let h = "election,precinct,line,value\n";
        check(
            &format!("{h}e1,p1,1,100\ne1,p2,7.1,5\n"),
            Ok(vec![("p1", "1", 100), ("p2", "7.1", 5)]),
        );
        check(&format!("\u{feff}{h}e1, p1 ,1,7\r\n"), Ok(vec![("p1", "1", 7)]));
        check("precinct,line,value\np1,1,1\n", Err(OfficialError::BadHeader));
        check(h, Err(OfficialError::Empty));
        check(
            &format!("{h}e1,p1,1,1\ne2,p1,1,1\n"),
            Err(OfficialError::OtherElection { row: 3, found: "e2".into(), expected: "e1".into() }),
        );
        check(
            &format!("{h}e1,p9,1,1\n"),
            Err(OfficialError::UnknownPrecinct { row: 2, precinct: "p9".into() }),
        );
        check(
            &format!("{h}e1,p1,9,1\n"),
            Err(OfficialError::UnknownLine { row: 2, line: "9".into() }),
        );
        check(
            &format!("{h}e1,p1,1,1\ne1,p1,1,2\n"),
            Err(OfficialError::Duplicate { row: 3, precinct: "p1".into(), line: "1".into() }),
        );
        for bad in ["-1", "1.5", "", "9007199254740992", "1e3", "x"] {
            check(
                &format!("{h}e1,p1,1,{bad}\n"),
                Err(OfficialError::BadValue { row: 2, value: bad.into() }),
            );
        }
        check(
            &format!("{h}e1,p1,1\n"),
            Err(OfficialError::Malformed { row: 2, message: "3 fields instead of 4".into() }),
        );
    }

    #[test]
    fn an_oversized_file_is_refused_before_parsing() {
        let big = vec![b'a'; MAX_FILE_BYTES + 1];
        assert_eq!(parse(&big, &election()), Err(OfficialError::TooLarge(MAX_FILE_BYTES + 1)));
    }

    #[test]
    fn the_export_reads_back_as_the_same_figures() {
        let csv = "election,precinct,line,value\ne1,p2,7.1,5\ne1,p1,1,100\ne1,p1,7.1,3\n";
        let figures = parse(csv.as_bytes(), &election()).unwrap();
        let out = to_csv("e1", &figures);
        assert_eq!(parse(&out, &election()).unwrap(), figures);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "election,precinct,line,value\ne1,p1,1,100\ne1,p1,7.1,3\ne1,p2,7.1,5\n"
        );
    }

    #[test]
    fn changes_name_every_figure_that_moved() {
        let f = |rows: &[(&str, &str, u64)]| {
            let mut f = Figures::new();
            for (p, l, v) in rows {
                f.entry(p.to_string()).or_default().insert(l.to_string(), *v);
            }
            f
        };
        let a = f(&[("p1", "1", 10), ("p1", "7.1", 5), ("p2", "1", 3)]);
        let b = f(&[("p1", "1", 10), ("p1", "7.1", 9), ("p3", "1", 4)]);
        let c = |p: &str, l: &str, before, after| Change {
            version: 2,
            precinct: p.into(),
            line: l.into(),
            before,
            after,
        };
        assert_eq!(
            changes(2, &a, &b),
            vec![
                c("p1", "7.1", Some(5), Some(9)),
                c("p2", "1", Some(3), None),
                c("p3", "1", None, Some(4))
            ]
        );
        assert!(changes(2, &a, &a).is_empty());
    }
}
