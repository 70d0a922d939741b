//! The review's flags: the rules that mark a capture for a coordinator's attention. Defined
//! once, here, as functions of the facts a backend fetches, so that no backend holds a rule:
//! the SQLite code (`storage/sqlite/review.rs`) only reads the rows and stores what these
//! functions answer.

use std::collections::{BTreeMap, HashMap};

/// A capture taken more than this long before the election's `count_time_ms` is flagged
/// (`Flag::TimeFar`): the protocol cannot have been posted yet (or the device clock is wrong).
pub const TIME_FAR_BEFORE_MS: u64 = 60 * 60 * 1000;

/// A capture taken more than this long after the count's end is flagged (`Flag::TimeFar`).
pub const TIME_FAR_AFTER_MS: u64 = 24 * 60 * 60 * 1000;

/// Whether a capture taken at `captured_at_ms` is far from the end of the count (flag
/// `time_far`); never without a count time.
pub fn time_far(captured_at_ms: u64, count_time_ms: Option<u64>) -> bool {
    count_time_ms.is_some_and(|t| {
        captured_at_ms + TIME_FAR_BEFORE_MS < t || captured_at_ms > t + TIME_FAR_AFTER_MS
    })
}

/// One capture of a device's chain: its id, sequence number and the `prev` its manifest
/// names (`None`: a manifest that does not parse, itself a break).
pub struct Link<'a> {
    /// The capture's id (hex).
    pub id: &'a str,
    /// Its sequence number.
    pub seq: u64,
    /// The id (hex) its manifest names as the previous one.
    pub prev: Option<String>,
}

/// For every capture of one device (in the order given), whether its chain is broken (flag
/// `chain_gap`): its predecessor (sequence number − 1) never reached the server, its `prev` is
/// not the id of that predecessor, or another capture of the device has its sequence number.
pub fn chain_breaks(links: &[Link<'_>]) -> Vec<bool> {
    let mut by_seq: HashMap<u64, Vec<&str>> = HashMap::new();
    for l in links {
        by_seq.entry(l.seq).or_default().push(l.id);
    }
    links
        .iter()
        .map(|l| {
            let reused = by_seq.get(&l.seq).is_some_and(|ids| ids.len() > 1);
            let linked = l.seq <= 1
                || by_seq
                    .get(&(l.seq - 1))
                    .is_some_and(|ids| ids.len() == 1 && l.prev.as_deref() == Some(ids[0]));
            reused || !linked
        })
        .collect()
}

/// For every capture of one photo, given where each was taken (election, precinct), whether
/// the same photo was also sent for another precinct (flag `duplicate_photo`).
pub fn photo_elsewhere(places: &[(&str, &str)]) -> Vec<bool> {
    places.iter().map(|here| places.iter().any(|other| other != here)).collect()
}

/// Whether the devices' newest transcriptions of one precinct differ on a line (flag
/// `devices_disagree`, set on the precinct's captures that carry a transcription).
pub fn devices_disagree<'a>(newest: impl IntoIterator<Item = &'a BTreeMap<String, u64>>) -> bool {
    let mut seen: HashMap<&str, u64> = HashMap::new();
    let mut disagree = false;
    for values in newest {
        for (line, v) in values {
            if *seen.entry(line).or_insert(*v) != *v {
                disagree = true;
            }
        }
    }
    disagree
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_far_is_an_hour_before_or_a_day_after_the_count() {
        let t = 100 * TIME_FAR_AFTER_MS;
        for (at, far) in [
            (t, false),
            (t - TIME_FAR_BEFORE_MS, false),
            (t - TIME_FAR_BEFORE_MS - 1, true),
            (t + TIME_FAR_AFTER_MS, false),
            (t + TIME_FAR_AFTER_MS + 1, true),
        ] {
            assert_eq!(time_far(at, Some(t)), far, "{at}");
            assert!(!time_far(at, None));
        }
    }

    #[test]
    fn chain_breaks_are_gaps_wrong_links_and_reused_numbers() {
        let link = |id, seq, prev: &str| Link { id, seq, prev: Some(prev.to_owned()) };
        let links = [
            link("a", 1, "0"),
            link("b", 2, "a"),
            link("c", 3, "x"), // names another predecessor
            link("e", 5, "d"), // 4 never arrived
            link("f", 6, "e"),
            link("g", 7, "f"),
            link("h", 7, "f"), // 7 twice
            Link { id: "i", seq: 8, prev: None },
        ];
        assert_eq!(
            chain_breaks(&links),
            [false, false, true, true, false, true, true, true],
            "each capture's break"
        );
    }

    #[test]
    fn a_photo_is_flagged_where_it_was_also_sent_for_another_precinct() {
        assert_eq!(photo_elsewhere(&[("e", "p1"), ("e", "p1")]), [false, false]);
        assert_eq!(photo_elsewhere(&[("e", "p1"), ("e", "p2"), ("e", "p1")]), [true; 3]);
        assert_eq!(photo_elsewhere(&[("e", "p1"), ("f", "p1")]), [true; 2]);
    }

    #[test]
    fn devices_disagree_on_a_line_they_both_transcribed() {
        let t = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
        };
        let (a, b, c) = (t(&[("1", 10), ("2", 5)]), t(&[("1", 10)]), t(&[("2", 6)]));
        assert!(!devices_disagree([&a, &b]));
        assert!(devices_disagree([&a, &b, &c]));
        assert!(!devices_disagree([&c]));
    }
}
