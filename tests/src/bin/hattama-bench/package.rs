//! `hattama-bench package`: evidence packages (`docs/evidence-package.md`), one station's and a
//! set's, in time and in the server's memory.
//!
//! 1. Off the clock: `hattama-server demo` seeds an election of `--stations` stations (554, the
//!    Almaty 2019 count) with simulated observers' real captures, reviews and official results,
//!    then stops. Every measurement below runs a **fresh** release `hattama-server serve` on
//!    that data directory, so that its memory high-water mark is the measurement's own.
//! 2. One station: the packages of `--singles` different stations with photos, each written for
//!    the first time, one request at a time: p50 and p99 of the time to the whole answer (goal
//!    <= 1 s), and the server's peak memory (goal <= 64 MB). Baseline in the same run: the same
//!    packages answered again from the kept files, so the ratio is the cost of writing one.
//! 3. A set: the package of every station is made once (keeping each station's package), then a
//!    fresh server streams the set of the first 55 stations and another fresh server the set of
//!    all of them: the peak memory of each (goal: 554 within 10% of 55), and the streaming
//!    speed against reading the same station files from disk in this process (the baseline).
//!
//! Peak memory is the server process's resident set high-water mark, `VmHWM` of
//! `/proc/<pid>/status`, read after the answer was received in full.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::{Goal, Stats, bench_root, fs_type, report};

pub const USAGE: &str =
    "hattama-bench package [--stations N] [--devices D] [--singles K] [--dir DIR]";

const ELECTION: &str = "kz-demo-2026";
const STATION_SECS: f64 = 1.0;
const STATION_MB: f64 = 64.0;
const SET_GROWTH: f64 = 1.10;
const SMALL_SET: usize = 55;

pub struct Options {
    stations: usize,
    devices: usize,
    singles: usize,
    dir: Option<PathBuf>,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut o = Self { stations: 554, devices: 20, singles: 40, dir: None };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--stations" => o.stations = value()?.parse().context("--stations")?,
                "--devices" => o.devices = value()?.parse().context("--devices")?,
                "--singles" => o.singles = value()?.parse().context("--singles")?,
                "--dir" => o.dir = Some(PathBuf::from(value()?)),
                other => bail!("unknown option {other}\nusage: {USAGE}"),
            }
        }
        ensure!(o.stations > SMALL_SET && o.devices > 0 && o.singles > 0, "{USAGE}");
        Ok(o)
    }
}

/// A fresh server on the data directory, killed on drop.
struct Server {
    url: String,
    child: Child,
}

impl Server {
    fn start(data: &Path) -> Result<Self> {
        let (url, child) = crate::server::spawn(&crate::server::bin()?, data)?;
        let s = Self { url, child };
        // Its log integrates what the demo left queued; the views are built once.
        s.json(&format!("/api/v1/elections/{ELECTION}/comparison"))?;
        Ok(s)
    }

    /// `VmHWM` of the process, in MB.
    fn peak_mb(&self) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .context("no VmHWM in /proc/<pid>/status")?
            .parse()?;
        Ok(kb / 1024.0)
    }

    fn json(&self, path: &str) -> Result<Value> {
        let r = reqwest::blocking::get(format!("{}{path}", self.url))?;
        ensure!(r.status() == 200, "GET {path}: {}", r.status());
        Ok(r.json()?)
    }

    /// GETs `path`, reading the body as it comes; its length and the time to its end.
    fn download(&self, client: &reqwest::blocking::Client, path: &str) -> Result<(u64, Duration)> {
        let t = Instant::now();
        let mut r = client.get(format!("{}{path}", self.url)).send()?;
        ensure!(r.status() == 200, "GET {path}: {}", r.status());
        let n = std::io::copy(&mut r, &mut std::io::sink())?;
        Ok((n, t.elapsed()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run(opts: &Options) -> Result<()> {
    let root = bench_root(opts.dir.as_deref())?;
    let tmp = tempfile::Builder::new().prefix("hattama-bench-package-").tempdir_in(&root)?;
    let data = tmp.path().join("server");
    println!(
        "bench directory: {} (file system {})",
        tmp.path().display(),
        fs_type(tmp.path()).unwrap_or_else(|| "unknown".into())
    );
    let started = Instant::now();
    seed(&data, opts)?;
    println!(
        "demo seeded {} stations with {} observers in {:.1} s",
        opts.stations,
        opts.devices,
        started.elapsed().as_secs_f64()
    );
    println!("peak memory: VmHWM of the server process (/proc/<pid>/status), a fresh process each");
    let client = reqwest::blocking::Client::builder().timeout(None).build()?;

    // One station's package.
    let server = Server::start(&data)?;
    let list = server.json(&format!("/api/v1/elections/{ELECTION}/precincts"))?;
    let list = list.as_array().context("the precinct list")?;
    let with_photos: Vec<String> = list
        .iter()
        .filter(|p| p["captures"].as_u64().unwrap_or(0) > 0)
        .filter_map(|p| p["id"].as_str().map(str::to_owned))
        .take(opts.singles)
        .collect();
    ensure!(!with_photos.is_empty(), "the demo photographed no station");
    let idle = server.peak_mb()?;
    let station =
        |p: &str| format!("/api/v1/elections/{ELECTION}/precincts/{p}/evidence-package.zip");
    let (mut written, mut kept, mut bytes) = (Vec::new(), Vec::new(), 0u64);
    for p in &with_photos {
        let (n, t) = server.download(&client, &station(p))?;
        written.push(t);
        bytes += n;
    }
    for p in &with_photos {
        kept.push(server.download(&client, &station(p))?.1);
    }
    let peak = server.peak_mb()?;
    let (w, k) = (Stats::of(&written), Stats::of(&kept));
    println!(
        "one station ({} stations with photos, mean {:.0} KB): written {w}  p99 {:.2} ms",
        with_photos.len(),
        bytes as f64 / with_photos.len() as f64 / 1024.0,
        w.p99.as_secs_f64() * 1000.0
    );
    println!("one station, answered from the kept file:       {k}  p99 {:.2} ms", ms(k.p99));
    println!("server peak memory: {peak:.1} MB (idle after start-up {idle:.1} MB)");

    // Every station's package made once, through the set of all of them.
    let all = format!("/api/v1/elections/{ELECTION}/evidence-package.zip");
    let (all_bytes, first) = server.download(&client, &all)?;
    println!(
        "set of all {} stations, writing every station's package: {:.1} MB in {:.1} s",
        opts.stations,
        all_bytes as f64 / 1e6,
        first.as_secs_f64()
    );
    drop(server);

    // The sets streamed from the kept packages, each by a fresh server.
    let numbers: Vec<String> = list
        .iter()
        .filter_map(|p| Some((p["number"].as_u64()?, p["id"].as_str()?.to_owned())))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_values()
        .collect();
    let small = format!("{all}?precincts={}", numbers[..SMALL_SET].join(","));
    let mut peaks = Vec::new();
    for (label, path, count) in
        [("55", small.as_str(), SMALL_SET), ("all", all.as_str(), opts.stations)]
    {
        let server = Server::start(&data)?;
        let idle = server.peak_mb()?;
        let (n, t) = server.download(&client, path)?;
        let peak = server.peak_mb()?;
        println!(
            "set of {count} stations ({label}): {:.1} MB streamed in {:.2} s ({:.1} MB/s); server \
             peak memory {peak:.1} MB (idle after start-up {idle:.1} MB)",
            n as f64 / 1e6,
            t.as_secs_f64(),
            n as f64 / 1e6 / t.as_secs_f64()
        );
        peaks.push((peak, n, t));
    }
    // Baseline: reading the same station packages from disk in this process.
    let t = Instant::now();
    let mut read = 0u64;
    for f in std::fs::read_dir(data.join("packages"))? {
        let f = f?;
        if f.file_name().to_string_lossy().starts_with(ELECTION) {
            let mut file = std::fs::File::open(f.path())?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                read += n as u64;
            }
        }
    }
    let baseline = t.elapsed();
    println!(
        "baseline: reading the {:.1} MB of kept station packages from disk: {:.2} s ({:.1} MB/s)",
        read as f64 / 1e6,
        baseline.as_secs_f64(),
        read as f64 / 1e6 / baseline.as_secs_f64()
    );
    println!();
    report("package: one station, p50 s", w.median.as_secs_f64(), Goal::AtMost(STATION_SECS));
    report("package: one station, p99 s", w.p99.as_secs_f64(), Goal::AtMost(STATION_SECS));
    println!(
        "ratio package: one station written vs answered from its kept file, p50: {:.2}",
        w.median.as_secs_f64() / k.median.as_secs_f64().max(1e-9)
    );
    report("package: one station, server peak MB", peak, Goal::AtMost(STATION_MB));
    report(
        &format!("package: set of {} vs {SMALL_SET} stations, server peak memory", opts.stations),
        peaks[1].0 / peaks[0].0,
        Goal::AtMost(SET_GROWTH),
    );
    let (_, n, t) = peaks[1];
    println!(
        "ratio package: set streaming MB/s vs reading the same files in this process: {:.2}",
        (n as f64 / t.as_secs_f64()) / (read as f64 / baseline.as_secs_f64())
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Seeds `data` with `hattama-server demo` and stops it once it says it is ready.
fn seed(data: &Path, opts: &Options) -> Result<()> {
    use std::io::BufRead;
    let mut child = Command::new(crate::server::bin()?)
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "demo", "--precincts"])
        .arg(opts.stations.to_string())
        .arg("--devices")
        .arg(opts.devices.to_string())
        .env("HATTAMA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start hattama-server demo")?;
    let stdout = child.stdout.take().context("demo stdout")?;
    let mut ready = false;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        if line.contains("not built with") || line.contains("--features demo") {
            bail!("{line}");
        }
        if line.trim_start().starts_with("public gallery") {
            ready = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    ensure!(
        ready,
        "hattama-server demo stopped before it was ready (scripts/bench package builds it with \
         --features demo)"
    );
    Ok(())
}
