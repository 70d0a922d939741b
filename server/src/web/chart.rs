//! The pages' charts: inline SVG drawn by the server, without a script (the strict CSP stays),
//! 300 units wide, about the width of a phone in CSS pixels, so that their 15-unit labels read
//! at 14 px on a 320 px screen and never larger than 18 px on a desktop (`app.css`: `.bars`).
//! A row is a label at its left and its figures at its right on one line, the graphic under
//! them: the gallery's coverage bars (`web/gallery.rs`) and the dashboard's coverage over time
//! ([`timeline`]) are drawn alike. `tests/browser/pages.mjs` fails a page whose chart labels
//! are smaller than 13 px, overlap or run out of their chart.

/// A chart's width, in its units.
pub const WIDTH: u32 = 300;

/// Most characters of a chart's label beside its figures on one line.
pub const LABEL: usize = 22;

/// `name` cut to `max` characters, ending in `…` when cut.
pub fn short_label(name: &str, max: usize) -> String {
    if name.chars().count() > max {
        name.chars().take(max - 1).chain(['…']).collect()
    } else {
        name.to_owned()
    }
}

/// Columns of a timeline's graphic.
const COLUMNS: u64 = 60;
/// Height of a timeline row: its text line, then its graphic.
const ROW: u32 = 62;
/// Top of the graphic within its row, and its height.
const PLOT_TOP: u32 = 22;
const PLOT: u32 = 34;

/// A row of a [`Timeline`]: one set of stations.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineRow {
    /// Label, cut to fit beside the figures (`full` has the whole name).
    pub label: String,
    /// The whole name, when the label is cut.
    pub full: Option<String>,
    /// The figures now: `62 % · 620/1000`.
    pub value: String,
    /// Top of the row.
    pub y: u32,
    /// Top of its graphic and its bottom.
    pub plot_y: u32,
    /// The graphic's height.
    pub plot_h: u32,
    /// The filled area under the count, as SVG path data (numbers only).
    pub path: String,
    /// Whether this is the row of all stations (drawn first and bold).
    pub all: bool,
}

/// Stations with an accepted photo over time: a row for all stations, then one per region, each
/// its share of its own stations from `start` to `end` (a step for every station accepted), and
/// the times of both ends and the middle under the rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeline {
    /// The rows.
    pub rows: Vec<TimelineRow>,
    /// Baseline of the axis' labels.
    pub axis_y: u32,
    /// Total height.
    pub height: u32,
    /// The time at the left end, in the middle and at the right end, as the page writes times.
    pub start: String,
    /// See `start`.
    pub middle: String,
    /// See `start`.
    pub end: String,
}

/// One set of stations of a [`timeline`]: its name, how many stations, and when each of those
/// with an accepted photo got it (sorted).
pub struct Series<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its stations.
    pub precincts: u64,
    /// When each accepted station was accepted, in order.
    pub times: &'a [u64],
}

/// `62 %` of a share, as people write it (a no-break space before the sign).
pub fn percent(part: u64, whole: u64) -> String {
    let pct = if whole == 0 { 0 } else { (100.0 * part as f64 / whole as f64).round() as u64 };
    format!("{pct}\u{a0}%")
}

/// The step area of one series from `start` to `end`, in a graphic at `top` of `PLOT` units.
fn area(times: &[u64], precincts: u64, (start, end): (u64, u64), top: u32) -> String {
    let bottom = top + PLOT;
    let span = end.saturating_sub(start).max(1);
    let mut path = format!("M0 {bottom}");
    for i in 0..COLUMNS {
        let until = start + span * (i + 1) / COLUMNS;
        let count = times.partition_point(|t| *t <= until) as u64;
        let share =
            if precincts == 0 { 0.0 } else { count.min(precincts) as f64 / precincts as f64 };
        let y = f64::from(bottom) - f64::from(PLOT) * share;
        let x = f64::from(WIDTH) * (i + 1) as f64 / COLUMNS as f64;
        path.push_str(&format!(" V{y:.1} H{x:.1}"));
    }
    path.push_str(&format!(" V{bottom} Z"));
    path
}

/// Lays out a timeline of `all` then `regions` from `start` to `end` (ms); `time` writes the
/// two ends' times; `value` the figures of a row (stations accepted by `end`, of all).
pub fn timeline(
    all: &Series<'_>,
    regions: &[Series<'_>],
    (start, end): (u64, u64),
    time: impl Fn(u64) -> String,
    value: impl Fn(u64, u64) -> String,
) -> Timeline {
    let rows: Vec<TimelineRow> = std::iter::once(all)
        .chain(regions)
        .enumerate()
        .map(|(i, s)| {
            let y = i as u32 * ROW;
            let accepted = s.times.partition_point(|t| *t <= end) as u64;
            let cut = s.name.chars().count() > LABEL;
            TimelineRow {
                label: short_label(s.name, LABEL),
                full: cut.then(|| s.name.to_owned()),
                value: value(accepted, s.precincts),
                y,
                plot_y: y + PLOT_TOP,
                plot_h: PLOT,
                path: area(s.times, s.precincts, (start, end), y + PLOT_TOP),
                all: i == 0,
            }
        })
        .collect();
    let axis_y = rows.len() as u32 * ROW + 12;
    Timeline {
        rows,
        axis_y,
        height: axis_y + 6,
        start: time(start),
        middle: time(start + end.saturating_sub(start) / 2),
        end: time(end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_too_long_is_cut_with_an_ellipsis() {
        assert_eq!(short_label("Almaty", 22), "Almaty");
        assert_eq!(short_label("Туркестанская область, район 1", 10), "Туркестан…");
    }

    #[test]
    fn the_area_climbs_a_step_per_station_and_ends_at_the_share_now() {
        // 4 stations, 2 accepted: at the first quarter and at the middle of the span.
        let times = [250, 500];
        let all = Series { name: "All stations", precincts: 4, times: &times };
        let region = Series { name: &"R".repeat(30), precincts: 2, times: &times[..1] };
        let t = timeline(
            &all,
            &[region],
            (0, 1000),
            |ms| ms.to_string(),
            |a, n| format!("{} · {a}/{n}", percent(a, n)),
        );
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[0].value, "50\u{a0}% · 2/4");
        assert_eq!(t.rows[1].value, "50\u{a0}% · 1/2");
        assert_eq!(t.rows[1].label.chars().count(), LABEL);
        assert_eq!(t.rows[1].full.as_deref(), Some(&*"R".repeat(30)));
        assert!(t.rows[0].all && !t.rows[1].all);
        let bottom = PLOT_TOP + PLOT;
        let path = &t.rows[0].path;
        assert!(path.starts_with(&format!("M0 {bottom} V{bottom}.0 H5.0")), "{path}");
        // Half the height at the end: 2 of 4 stations.
        let half = f64::from(bottom) - f64::from(PLOT) / 2.0;
        assert!(path.ends_with(&format!("V{half:.1} H300.0 V{bottom} Z")), "{path}");
        // A quarter from the 15th column (t = 250) to the 29th.
        assert!(path.contains(&format!("V{:.1} H75.0", f64::from(bottom) - 8.5)), "{path}");
        assert_eq!((t.start.as_str(), t.middle.as_str(), t.end.as_str()), ("0", "500", "1000"));
        assert!(t.axis_y > t.rows[1].plot_y + PLOT && t.height > t.axis_y);
    }

    #[test]
    fn no_station_and_no_time_draw_a_flat_line() {
        let all = Series { name: "All", precincts: 0, times: &[] };
        let t = timeline(&all, &[], (5, 5), |_| String::new(), |_, _| String::new());
        let bottom = PLOT_TOP + PLOT;
        assert!(!t.rows[0].path.contains("NaN"));
        assert!(t.rows[0].path.contains(&format!("V{bottom}.0 H300.0")));
    }
}
