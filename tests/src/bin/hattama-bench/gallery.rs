//! `hattama-bench gallery`: public precinct pages and photo bytes, against nginx serving the same
//! pages and photos as files, in the same run.
//!
//! 1. Off the clock: an election of 10,000 precincts with three signed captures each (30,000,
//!    written straight into the database as `review` does), the first `--photos` of them with
//!    real JPEG photos of protocols (generated, about 100 KB) stored as the server stores photos
//!    (its start-up recovery keeps only photos that a capture names). The real
//!    release `hattama-server` serves that data directory; once its log has integrated every
//!    capture (the cache drops whenever the database changes), every precinct page is fetched
//!    once (this also warms the server's page cache, as normal traffic would) and saved into
//!    nginx's root under the same path; the photos are copied there too.
//! 2. Pages: in alternating rounds, K keep-alive clients (64 by default) GET random precinct
//!    pages from the server and from nginx for a fixed time; every answer's status and length
//!    are checked. Goals: the median of the rounds' ratios of requests/s ≥ 0.3 of nginx, and the
//!    server's p99 ≤ 50 ms.
//! 3. Photos: the same with random photos (`/photos/<sha256>` against the file); goal: MB/s ≥
//!    0.5 of nginx.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hattama_core::evidence::Sha256Hash;
use hattama_server::demo;

use crate::http::Conn;
use crate::review::{Run, ms, split, store};
use crate::{Goal, Stats, bench_root, fs_type, report};

pub const USAGE: &str = "hattama-bench gallery [--precincts N] [--photos N] [--clients K] \
                         [--secs S] [--rounds R] [--nginx URL --nginx-root DIR] [--dir DIR]";

const PAGES_VS_NGINX: f64 = 0.3;
const P99_MS: f64 = 50.0;
const PHOTOS_VS_NGINX: f64 = 0.5;
const WARMUP: Duration = Duration::from_millis(500);

pub struct Options {
    precincts: usize,
    photos: usize,
    clients: usize,
    secs: f64,
    rounds: usize,
    nginx: Option<String>,
    nginx_root: Option<PathBuf>,
    dir: Option<PathBuf>,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut o = Self {
            precincts: 10_000,
            photos: 200,
            clients: 64,
            secs: 3.0,
            rounds: 3,
            nginx: None,
            nginx_root: None,
            dir: None,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--precincts" => o.precincts = value()?.parse().context("--precincts")?,
                "--photos" => o.photos = value()?.parse().context("--photos")?,
                "--clients" => o.clients = value()?.parse().context("--clients")?,
                "--secs" => o.secs = value()?.parse().context("--secs")?,
                "--rounds" => o.rounds = value()?.parse().context("--rounds")?,
                "--nginx" => o.nginx = Some(value()?.trim_end_matches('/').to_owned()),
                "--nginx-root" => o.nginx_root = Some(PathBuf::from(value()?)),
                "--nginx-pid" => {
                    value()?;
                }
                "--dir" => o.dir = Some(PathBuf::from(value()?)),
                other => bail!("unknown option {other}\nusage: {USAGE}"),
            }
        }
        ensure!(o.precincts > 0 && o.photos > 0 && o.clients > 0 && o.rounds > 0, "{USAGE}");
        Ok(o)
    }
}

/// Paths with the length of their answer.
type Targets = Arc<Vec<(String, usize)>>;

pub fn run(opts: &Options) -> Result<()> {
    let (nginx, nginx_root) = match (&opts.nginx, &opts.nginx_root) {
        (Some(u), Some(r)) => (u.clone(), r.clone()),
        _ => bail!("scripts/bench gallery starts nginx and passes --nginx and --nginx-root"),
    };
    let root = bench_root(opts.dir.as_deref())?;
    let tmp = tempfile::Builder::new().prefix("hattama-bench-gallery-").tempdir_in(&root)?;
    let data = tmp.path().join("server");
    println!(
        "bench directory: {} (file system {})",
        tmp.path().display(),
        fs_type(tmp.path()).unwrap_or_else(|| "unknown".into())
    );
    let started = Instant::now();
    let photos = store_photos(&data, &nginx_root, opts.photos)?;
    let named: Vec<(Sha256Hash, u64)> = photos
        .iter()
        .filter_map(|(sha, len)| Some((Sha256Hash::from_hex(sha)?, *len as u64)))
        .collect();
    let n = store(&data, opts.precincts, &named)?;
    println!(
        "stored {n} captures of {} precincts and {} photos ({:.1} MB) in {:.1} s",
        opts.precincts,
        photos.len(),
        photos.iter().map(|(_, len)| *len as f64).sum::<f64>() / 1e6,
        started.elapsed().as_secs_f64()
    );
    let (url, mut child) = crate::server::spawn(&crate::server::bin()?, &data)?;
    let result = measure(opts, &url, &nginx, &nginx_root, n, &photos);
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Writes `count` generated protocol photos into the server's photo directory and nginx's root.
fn store_photos(data: &Path, nginx_root: &Path, count: usize) -> Result<Vec<(String, usize)>> {
    let election = demo::election(1, 0)?;
    fs::create_dir_all(data.join("blobs"))?;
    fs::create_dir_all(nginx_root.join("photos"))?;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let values = demo::protocol_values(&election.protocol, i as u64);
        let sheet = demo::photo::Sheet {
            title: "Bench",
            precinct_number: i as u32,
            template: &election.protocol,
            values: &values,
            page: (1, 1),
        };
        let jpeg = demo::photo::protocol_photo(&sheet, 600, 800, i as u64);
        let sha = Sha256Hash::of(&jpeg).to_hex();
        fs::write(data.join("blobs").join(&sha), &jpeg)?;
        fs::write(nginx_root.join("photos").join(&sha), &jpeg)?;
        out.push((sha, jpeg.len()));
    }
    Ok(out)
}

fn measure(
    opts: &Options,
    url: &str,
    nginx: &str,
    nginx_root: &Path,
    captures: usize,
    photos: &[(String, usize)],
) -> Result<()> {
    // The log integrates the 30,000 captures first: each of its commits drops the page cache.
    let wait = Instant::now();
    loop {
        let size = checkpoint_size(url)?;
        if size >= captures as u64 {
            break;
        }
        ensure!(wait.elapsed() < Duration::from_secs(300), "the log did not integrate");
        thread::sleep(Duration::from_millis(200));
    }
    // Let the cache see the final data version (it is looked at every 250 ms at most).
    thread::sleep(Duration::from_millis(600));
    println!("log integrated {captures} captures in {:.1} s", wait.elapsed().as_secs_f64());

    // Every page once: saved for nginx, and the server's cache warmed as traffic would.
    let started = Instant::now();
    let mut pages = Vec::with_capacity(opts.precincts);
    let mut conn = Conn::connect(url)?;
    let mut body = Vec::new();
    for p in 1..=opts.precincts {
        let path = format!("/elections/e2e/precincts/p{p:05}");
        let status = conn.get(&path, &[], &mut body)?;
        ensure!(status == 200, "GET {path}: {status}");
        let file = nginx_root.join(path.trim_start_matches('/'));
        fs::create_dir_all(file.parent().context("parent")?)?;
        fs::write(&file, &body)?;
        pages.push((path, body.len()));
    }
    let mean = pages.iter().map(|(_, l)| *l).sum::<usize>() / pages.len().max(1);
    println!(
        "fetched and saved {} precinct pages (mean {mean} bytes) in {:.1} s",
        pages.len(),
        started.elapsed().as_secs_f64()
    );
    let pages: Targets = Arc::new(pages);
    let photo_targets: Targets =
        Arc::new(photos.iter().map(|(sha, len)| (format!("/photos/{sha}"), *len)).collect());

    let mut page_ratios = Vec::new();
    let mut photo_ratios = Vec::new();
    let mut server_page_samples = Vec::new();
    for round in 1..=opts.rounds {
        let ours = clients(url, &pages, opts, round as u64)?;
        let theirs = clients(nginx, &pages, opts, round as u64)?;
        println!("round {round} pages   hattama {}", ours.line());
        println!("round {round} pages   nginx   {}", theirs.line());
        page_ratios.push(ours.rps / theirs.rps);
        server_page_samples.extend(ours.samples);

        let ours = clients(url, &photo_targets, opts, round as u64)?;
        let theirs = clients(nginx, &photo_targets, opts, round as u64)?;
        let mean = photos.iter().map(|(_, l)| *l as f64).sum::<f64>() / photos.len() as f64;
        let mb = |r: &Run| r.rps * mean / 1e6;
        println!("round {round} photos  hattama {}  {:7.1} MB/s", ours.line(), mb(&ours));
        println!("round {round} photos  nginx   {}  {:7.1} MB/s", theirs.line(), mb(&theirs));
        photo_ratios.push(ours.rps / theirs.rps);
    }
    let p99 = ms(Stats::of(&server_page_samples).p99);
    println!();
    report(
        "gallery precinct pages: requests/s vs nginx",
        median(&page_ratios),
        Goal::AtLeast(PAGES_VS_NGINX),
    );
    report("gallery precinct pages: p99 ms at 64 connections", p99, Goal::AtMost(P99_MS));
    report(
        "gallery photo bytes: MB/s vs nginx",
        median(&photo_ratios),
        Goal::AtLeast(PHOTOS_VS_NGINX),
    );
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn checkpoint_size(url: &str) -> Result<u64> {
    let mut conn = Conn::connect(url)?;
    let mut body = Vec::new();
    let status = conn.get("/log/checkpoint", &[], &mut body)?;
    if status != 200 {
        return Ok(0);
    }
    let text = String::from_utf8_lossy(&body);
    Ok(text.lines().nth(1).and_then(|l| l.parse().ok()).unwrap_or(0))
}

/// K keep-alive clients GET random targets for the configured time (after a warm-up); every
/// answer must be 200 with the target's length.
fn clients(url: &str, targets: &Targets, opts: &Options, seed: u64) -> Result<Run> {
    let k = opts.clients;
    let secs = Duration::from_secs_f64(opts.secs);
    let barrier = Arc::new(Barrier::new(k));
    let (base, _) = split(url);
    let handles: Vec<_> = (0..k)
        .map(|c| {
            let (base, targets, barrier) = (base.to_owned(), targets.clone(), barrier.clone());
            thread::spawn(move || -> Result<(Vec<Duration>, Duration)> {
                let mut conn = Conn::connect(&base)?;
                let mut body = Vec::new();
                let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (c as u64 + 1);
                let mut next = || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    &targets[(rng % targets.len() as u64) as usize]
                };
                let warm = Instant::now();
                while warm.elapsed() < WARMUP {
                    conn.get(&next().0, &[], &mut body)?;
                }
                barrier.wait();
                let start = Instant::now();
                let mut samples = Vec::new();
                while start.elapsed() < secs {
                    let (path, len) = next();
                    let t = Instant::now();
                    let status = conn.get(path, &[], &mut body)?;
                    samples.push(t.elapsed());
                    ensure!(
                        status == 200 && body.len() == *len,
                        "GET {path}: {status}, {} bytes instead of {len}",
                        body.len()
                    );
                }
                Ok((samples, start.elapsed()))
            })
        })
        .collect();
    let mut samples = Vec::new();
    let mut rps = 0.0;
    for h in handles {
        let (s, elapsed) = h.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
        rps += s.len() as f64 / elapsed.as_secs_f64();
        samples.extend(s);
    }
    Ok(Run { rps, samples })
}
