//! `hattama-bench`: measures Hattama's performance goals against baselines measured in the same
//! run, so that the figures are ratios that do not depend on the machine.
//!
//! - `capture`: the device side (capture latency, peak memory, thumbnails); see `capture.rs`.
//! - `ingest`: the server side (photo uploads against nginx accepting the same bodies, and the
//!   rate and latency of small captures); see `ingest.rs`. `scripts/bench ingest` starts nginx.
//! - `log`: the public log (entries integrated per second against bare SHA-256 hashing of the
//!   same tree, inclusion proofs per second, tile GETs against nginx serving the same files);
//!   see `log.rs`. `scripts/bench log` starts nginx.
//! - `gallery`: public precinct pages and photo bytes against nginx serving the same files; see
//!   `gallery.rs`. `scripts/bench gallery` starts nginx.
//! - `package`: evidence packages, one station's (time, peak memory) and a set of 554 stations
//!   streamed (peak memory at 55 and at 554 stations); see `package.rs`.
//! - `review`: the coordinators' queue page and the election-night dashboard with 30,000
//!   captures against nginx serving the same HTML as a file (the dashboard also against the
//!   server's `/healthz`); see `review.rs`. `scripts/bench review` starts nginx.
//!
//! Every goal ends in one `RATIO name value (goal <= bound) PASS|MISS` line (`>=` for goals
//! that are floors). A missed goal is reported, not an error: the process fails only when the
//! measurement itself fails.
//!
//! `photo OUT.jpg` writes the generated photo, to look at it.

mod capture;
mod gallery;
mod http;
mod ingest;
mod log;
mod package;
mod photo;
mod review;
mod server;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

fn usage() -> String {
    format!(
        "usage: {}\n       {}\n       {}\n       {}\n       {}\n       {}",
        capture::USAGE,
        ingest::USAGE,
        log::USAGE,
        review::USAGE,
        gallery::USAGE,
        package::USAGE
    )
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        // `hattama-bench log --help` too: the usage, not an error.
        println!("{}", usage());
        return Ok(());
    }
    match args.first().map(String::as_str) {
        Some("capture") => capture::run(&capture::Options::parse(&args[1..])?),
        Some("capture-child") => capture::child(capture::ChildMode::Capture, &args[1..]),
        Some("baseline-child") => capture::child(capture::ChildMode::Baseline, &args[1..]),
        Some("ingest") => ingest::run(&ingest::Options::parse(&args[1..])?),
        Some("log") => log::run(&log::Options::parse(&args[1..])?),
        Some("review") => review::run(&review::Options::parse(&args[1..])?),
        Some("gallery") => gallery::run(&gallery::Options::parse(&args[1..])?),
        Some("package") => package::run(&package::Options::parse(&args[1..])?),
        Some("photo") => {
            let [out] = &args[1..] else { bail!("usage: hattama-bench photo OUT.jpg") };
            Ok(fs::write(out, photo::make_photo()?.0)?)
        }
        _ => bail!("{}", usage()),
    }
}

// ---------------------------------------------------------------------------------------------
// Shared by the benchmarks.

/// A goal: a ceiling (latency, memory) or a floor (throughput).
#[derive(Clone, Copy)]
enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

/// Prints the one line a goal ends in.
fn report(name: &str, value: f64, goal: Goal) {
    let (met, op, bound) = match goal {
        Goal::AtMost(b) => (value <= b, "<=", b),
        Goal::AtLeast(b) => (value >= b, ">=", b),
    };
    let verdict = if met { "PASS" } else { "MISS" };
    println!("RATIO {name} {value:.2} (goal {op} {bound:.1}) {verdict}");
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

struct Stats {
    median: Duration,
    p90: Duration,
    p99: Duration,
    min: Duration,
    max: Duration,
}

impl Stats {
    fn of(samples: &[Duration]) -> Self {
        let mut s = samples.to_vec();
        s.sort();
        // Nearest-rank percentiles.
        let rank = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
        let median = if s.len() % 2 == 1 {
            s[s.len() / 2]
        } else {
            (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2
        };
        Self { median, p90: rank(0.9), p99: rank(0.99), min: s[0], max: s[s.len() - 1] }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "median {:8.2} ms  p90 {:8.2} ms  (min {:.2}, max {:.2})",
            ms(self.median),
            ms(self.p90),
            ms(self.min),
            ms(self.max)
        )
    }
}

/// Where to put the bench directory: `dir` if given, else the system temp directory unless it
/// is in memory (tmpfs would hide the cost of fsync), else next to this executable (target/).
fn bench_root(dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = dir {
        fs::create_dir_all(dir)?;
        return Ok(dir.to_owned());
    }
    let tmp = std::env::temp_dir();
    if !matches!(fs_type(&tmp).as_deref(), Some("tmpfs" | "ramfs")) {
        return Ok(tmp);
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable has no directory")?.join("bench-tmp");
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The type of the file system holding `path`, from `/proc/self/mounts` (Linux).
fn fs_type(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_, mount, kind) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mount).then(|| (mount.len(), kind.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, kind)| kind)
}
