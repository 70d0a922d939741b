//! `hattama-bench review`: the coordinators' queue page and the election-night dashboard with
//! 30,000 captures, against nginx serving the same HTML saved as a file and the server's own
//! `/healthz`, in the same run.
//!
//! 1. Off the clock: an election of 10,000 precincts is imported and 30,000 captures (three
//!    pages per precinct, real signed manifests, some with the observer's transcription, spread
//!    over 64 devices) are written straight into the server's database; the review index is
//!    built in-process with the server's own `SqliteStorage` (its time is printed), a
//!    coordinator account and a supervisor account, each with a session, are created, and
//!    the first page of two precincts in three is accepted, the decisions spread over the last
//!    ten hours (the dashboard's coverage over time). The dashboard's counting (its database
//!    aggregates, which the server keeps until storage changes) is timed once in-process.
//! 2. The real release `hattama-server` serves that data directory. The queue page
//!    (`GET /review`, with the session cookie: session lookup, the filtered and counted query,
//!    the template in Kazakh) is fetched once and saved into nginx's root as a file.
//! 3. In alternating rounds, K keep-alive clients (16 by default) GET the page from the server
//!    and the file from nginx for a fixed time; every answer's status and length are checked.
//!    Goal: the server's p99 latency ≤ 50 ms. nginx's figures and the ratio of requests/s are
//!    printed next to it. A filtered, deep page of the queue (a region, a state, page 20) is
//!    measured too, as information.
//! 4. The dashboard (`GET /review/dashboard` as the supervisor: coverage per region and over
//!    time, stations without a photo, photos per hour, refusals, queue depth, log lag) the
//!    same way, in rounds alternating with `/healthz` of the same server (the baseline: what
//!    the server, the client and the machine cost with nothing to count or render) and the
//!    saved page from nginx. Goal: p99 ≤ 50 ms at 16 connections; its p50 and p99, the ratio
//!    of its p99 to the goal and to the baseline's are printed.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ed25519_dalek::SigningKey;
use hattama_core::election::Election;
use hattama_core::evidence::{
    DeviceKey, EvidenceKind, Manifest, MediaType, Page, PhotoInfo, Sha256Hash, SignedManifest,
};
use hattama_server::review;
use hattama_server::storage::review::{NewUser, ReviewStorage, Role};
use hattama_server::storage::{SqliteStorage, Storage};
use rusqlite::params;

use crate::http::Conn;
use crate::{Goal, Stats, bench_root, fs_type, report};

pub const USAGE: &str = "hattama-bench review [--precincts N] [--clients K] [--secs S] \
                         [--rounds R] [--nginx URL --nginx-root DIR] [--dir DIR]";

/// The goal: p99 of the queue page, in ms.
const P99_MS: f64 = 50.0;
/// Captures per precinct (pages).
const PAGES: usize = 3;
/// Devices the captures are spread over.
const DEVICES: usize = 64;
const WARMUP: Duration = Duration::from_millis(500);

pub struct Options {
    precincts: usize,
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
            clients: 16,
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
                "--clients" => o.clients = value()?.parse().context("--clients")?,
                "--secs" => o.secs = value()?.parse().context("--secs")?,
                "--rounds" => o.rounds = value()?.parse().context("--rounds")?,
                "--nginx" => o.nginx = Some(value()?.trim_end_matches('/').to_owned()),
                "--nginx-root" => o.nginx_root = Some(PathBuf::from(value()?)),
                // Passed by scripts/bench to every nginx bench; not needed here.
                "--nginx-pid" => {
                    value()?;
                }
                "--dir" => o.dir = Some(PathBuf::from(value()?)),
                other => bail!("unknown option {other}\n{USAGE}"),
            }
        }
        ensure!(o.precincts >= 100, "--precincts must be at least 100");
        ensure!((1..=256).contains(&o.clients), "--clients must be 1 to 256");
        ensure!(o.secs > 0.0 && o.rounds >= 1, "--secs and --rounds must be positive");
        ensure!(
            o.nginx.is_some() == o.nginx_root.is_some(),
            "--nginx and --nginx-root go together"
        );
        Ok(o)
    }
}

pub fn run(opts: &Options) -> Result<()> {
    let root = bench_root(opts.dir.as_deref())?;
    let tmp = tempfile::Builder::new().prefix("hattama-bench-review-").tempdir_in(&root)?;
    let data = tmp.path().join("server");
    println!(
        "bench directory: {} (file system {})",
        tmp.path().display(),
        fs_type(tmp.path()).unwrap_or_else(|| "unknown".into())
    );

    // --- Data, off the clock ---------------------------------------------------------------------
    let started = Instant::now();
    let n = store(&data, opts.precincts, &[])?;
    println!(
        "stored {n} captures of {} precincts straight into the database ({:.1} s)",
        opts.precincts,
        started.elapsed().as_secs_f64()
    );
    let tokens = {
        let storage = SqliteStorage::open(&data, false)?;
        let started = Instant::now();
        storage.refresh_index()?;
        println!("review index built in-process: {:.2} s", started.elapsed().as_secs_f64());
        let now = hattama_core::now_ms();
        let mut tokens = Vec::new();
        for (name, role) in [("bench", Role::Coordinator), ("bench-supervisor", Role::Supervisor)] {
            let user = review::create_user(
                &storage,
                &NewUser {
                    username: name.into(),
                    display_name: format!("Bench {name}"),
                    role,
                    regions: Vec::new(),
                },
                "a long bench password",
                now,
            )?;
            let token = format!("{name}-session-token");
            storage.create_session(
                &review::token_hash(&token),
                user.id,
                "csrf",
                now,
                now + 86_400_000,
            )?;
            tokens.push((token, user.id));
        }
        drop(storage);
        let accepted = accept(&data, tokens[0].1, now)?;
        println!("{accepted} captures accepted (the first page of two precincts in three)");
        let storage = SqliteStorage::open(&data, false)?;
        let started = Instant::now();
        let facts = hattama_server::console::DashboardFacts::load(&storage, "e2e")?;
        println!(
            "the dashboard's counts in-process (what a commit makes the server count again): \
             {:.1} ms, {} regions, {} stations accepted",
            started.elapsed().as_secs_f64() * 1000.0,
            facts.regions.len(),
            facts.accepted_all.len()
        );
        [tokens[0].0.clone(), tokens[1].0.clone()]
    };

    // --- The server and the saved page -------------------------------------------------------------
    let (url, mut child) = crate::server::spawn(&crate::server::bin()?, &data)?;
    let result = measure(opts, &url, &tokens[0]).and_then(|()| dashboard(opts, &url, &tokens[1]));
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Accepts the first page of two precincts in three, as a coordinator's decisions would
/// (decision rows, review states, the review's generation), the decisions spread over the ten
/// hours before `now`, straight into the database in one transaction. Returns how many.
fn accept(data: &Path, user: i64, now: u64) -> Result<usize> {
    let mut conn = rusqlite::Connection::open(data.join("hattama-server.sqlite3"))?;
    let tx = conn.transaction()?;
    let ids: Vec<String> = tx
        .prepare(
            "SELECT capture_id FROM review_index WHERE page = 1 AND number % 3 != 0 ORDER BY number",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let span = 10 * 3_600_000u64;
    {
        let mut decide = tx.prepare(
            "INSERT INTO decisions (capture_id, user_id, kind, at_ms) VALUES (?1, ?2, 'accepted', ?3)",
        )?;
        let mut state =
            tx.prepare("UPDATE review_index SET state = 'accepted' WHERE capture_id = ?1")?;
        for (i, id) in ids.iter().enumerate() {
            let at = now - span + span * i as u64 / ids.len().max(1) as u64;
            decide.execute(params![id, user, at as i64])?;
            state.execute([id])?;
        }
    }
    tx.execute("UPDATE review_generation SET value = value + 1", [])?;
    tx.commit()?;
    Ok(ids.len())
}

/// The dashboard against `/healthz` (and nginx serving the saved page), in alternating rounds.
fn dashboard(opts: &Options, url: &str, token: &str) -> Result<()> {
    let cookie = format!("hattama_session={token}");
    let path = "/review/dashboard";
    let mut conn = Conn::connect(url)?;
    let mut body = Vec::new();
    let status = conn.get(path, &[("Cookie", &cookie)], &mut body)?;
    ensure!(status == 200, "GET {path}: {status}");
    let page = String::from_utf8_lossy(&body);
    ensure!(page.contains("id=\"dash-timeline\""), "GET {path}: no coverage chart");
    ensure!(page.matches("class=\"bar-accepted\"").count() == 5, "GET {path}: not 4 regions + all");
    println!("\ndashboard: GET {path}: {} bytes (as the supervisor)", body.len());
    let nginx = match (&opts.nginx, &opts.nginx_root) {
        (Some(nginx), Some(root)) => {
            fs::write(root.join("dashboard.html"), &body)?;
            Some(format!("{nginx}/dashboard.html"))
        }
        _ => None,
    };
    let mut health = Vec::new();
    ensure!(conn.get("/healthz", &[], &mut health)? == 200, "GET /healthz");
    let (mut ours, mut base, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..opts.rounds {
        // The order turns every round, so that no side always runs on a warmer machine.
        let mut sides = vec!["dashboard", "healthz", "nginx"];
        sides.rotate_left(r % 3);
        for side in sides {
            match (side, &nginx) {
                ("dashboard", _) => {
                    // The page's time of update changes: its length is not checked.
                    let run = clients(url, path, &cookie, None, opts)?;
                    println!("  round {}  dashboard {}", r + 1, run.line());
                    ours.push(run);
                }
                ("healthz", _) => {
                    let run = clients(url, "/healthz", "", Some(health.len()), opts)?;
                    println!("  round {}  /healthz  {}", r + 1, run.line());
                    base.push(run);
                }
                (_, Some(target)) => {
                    let (b, p) = split(target);
                    let run = clients(b, &p, "", Some(body.len()), opts)?;
                    println!("  round {}  nginx     {}", r + 1, run.line());
                    theirs.push(run);
                }
                (_, None) => {}
            }
        }
    }
    let summary = |runs: &[Run]| {
        let all: Vec<Duration> = runs.iter().flat_map(|r| r.samples.iter().copied()).collect();
        let rps = runs.iter().map(|r| r.rps).sum::<f64>() / runs.len() as f64;
        (Stats::of(&all), rps)
    };
    let (stats, rps) = summary(&ours);
    let (bstats, brps) = summary(&base);
    println!(
        "  dashboard {rps:8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  ({stats})",
        ms(stats.median),
        ms(stats.p99)
    );
    println!(
        "  /healthz  {brps:8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  ({bstats})",
        ms(bstats.median),
        ms(bstats.p99)
    );
    if !theirs.is_empty() {
        let (nstats, nrps) = summary(&theirs);
        println!(
            "  nginx     {nrps:8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  ({nstats})",
            ms(nstats.median),
            ms(nstats.p99)
        );
        println!(
            "  dashboard / nginx: requests/s {:.3}, p99 {:.1}x",
            rps / nrps,
            ms(stats.p99) / ms(nstats.p99).max(1e-6)
        );
    }
    println!(
        "  dashboard / /healthz: requests/s {:.3}, p50 {:.1}x, p99 {:.1}x",
        rps / brps,
        ms(stats.median) / ms(bstats.median).max(1e-6),
        ms(stats.p99) / ms(bstats.p99).max(1e-6)
    );
    println!("  dashboard p99 / goal ({P99_MS} ms): {:.2}", ms(stats.p99) / P99_MS);
    report("review_dashboard_p99_ms", ms(stats.p99), Goal::AtMost(P99_MS));
    Ok(())
}

fn measure(opts: &Options, url: &str, token: &str) -> Result<()> {
    let cookie = format!("hattama_session={token}");
    // A deep page of one region's new captures (page 20 of 150 with 10,000 precincts).
    let deep = (opts.precincts / 4 * PAGES / 50).clamp(1, 20);
    let pages = [
        ("queue page", "/review".to_owned(), "review.html"),
        (
            "filtered, deep page",
            format!("/review?region=Almaty&state=new&page={deep}"),
            "review-filtered.html",
        ),
    ];
    let mut goal_p99 = None;
    for (label, path, file) in &pages {
        let mut conn = Conn::connect(url)?;
        let mut body = Vec::new();
        let status = conn.get(path, &[("Cookie", &cookie)], &mut body)?;
        ensure!(status == 200, "GET {path}: {status}");
        let links = String::from_utf8_lossy(&body).matches("href=\"/review/captures/").count();
        ensure!(links >= 50, "GET {path}: {links} captures listed, expected 50");
        println!("\n{label}: GET {path}: {} bytes, {links} captures listed", body.len());
        let nginx = match (&opts.nginx, &opts.nginx_root) {
            (Some(nginx), Some(root)) => {
                fs::write(root.join(file), &body)?;
                Some(format!("{nginx}/{file}"))
            }
            _ => None,
        };
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for r in 0..opts.rounds {
            let nginx_first = r % 2 == 1;
            for side in [nginx_first, !nginx_first] {
                let run = match (side, &nginx) {
                    (true, Some(target)) => {
                        let (base, p) = split(target);
                        let run = clients(base, &p, "", Some(body.len()), opts)?;
                        println!("  round {}  nginx    {}", r + 1, run.line());
                        theirs.push(run);
                        continue;
                    }
                    (true, None) => continue,
                    (false, _) => clients(url, path, &cookie, Some(body.len()), opts)?,
                };
                println!("  round {}  Hattama  {}", r + 1, run.line());
                ours.push(run);
            }
        }
        let all: Vec<Duration> = ours.iter().flat_map(|r| r.samples.iter().copied()).collect();
        let stats = Stats::of(&all);
        let rps: f64 = ours.iter().map(|r| r.rps).sum::<f64>() / ours.len() as f64;
        println!("  Hattama  {rps:8.0} req/s  {stats}  p99 {:.2} ms", ms(stats.p99));
        if !theirs.is_empty() {
            let all: Vec<Duration> =
                theirs.iter().flat_map(|r| r.samples.iter().copied()).collect();
            let nstats = Stats::of(&all);
            let nrps: f64 = theirs.iter().map(|r| r.rps).sum::<f64>() / theirs.len() as f64;
            println!("  nginx    {nrps:8.0} req/s  {nstats}  p99 {:.2} ms", ms(nstats.p99));
            println!(
                "  Hattama / nginx: requests/s {:.3}, p99 {:.1}x",
                rps / nrps,
                ms(stats.p99) / ms(nstats.p99).max(1e-6)
            );
        }
        if goal_p99.is_none() {
            goal_p99 = Some(ms(stats.p99));
        }
    }
    println!();
    if opts.nginx.is_none() {
        println!("(nginx not given: run `scripts/bench review` for the comparison)");
    }
    report("review_queue_p99_ms", goal_p99.unwrap_or(f64::MAX), Goal::AtMost(P99_MS));
    Ok(())
}

pub(crate) fn split(url: &str) -> (&str, String) {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    match rest.find('/') {
        Some(i) => (&url[..url.len() - rest.len() + i], rest[i..].to_owned()),
        None => (url, "/".to_owned()),
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) struct Run {
    pub(crate) rps: f64,
    pub(crate) samples: Vec<Duration>,
}

impl Run {
    pub(crate) fn line(&self) -> String {
        let s = Stats::of(&self.samples);
        format!("{:8.0} req/s  p50 {:6.2} ms  p99 {:6.2} ms", self.rps, ms(s.median), ms(s.p99))
    }
}

/// K keep-alive clients GET `path` for the configured time (after a warm-up); every answer must
/// be 200, with `len` bytes if given.
fn clients(url: &str, path: &str, cookie: &str, len: Option<usize>, opts: &Options) -> Result<Run> {
    let k = opts.clients;
    let secs = Duration::from_secs_f64(opts.secs);
    let barrier = Arc::new(Barrier::new(k));
    let handles: Vec<_> = (0..k)
        .map(|_| {
            let (url, path, cookie, barrier) =
                (url.to_owned(), path.to_owned(), cookie.to_owned(), barrier.clone());
            thread::spawn(move || -> Result<(Vec<Duration>, Duration)> {
                let mut conn = Conn::connect(&url)?;
                let mut body = Vec::new();
                let warm = Instant::now();
                while warm.elapsed() < WARMUP {
                    conn.get(&path, &[("Cookie", &cookie)], &mut body)?;
                }
                barrier.wait();
                let start = Instant::now();
                let mut samples = Vec::new();
                while start.elapsed() < secs {
                    let t = Instant::now();
                    let status = conn.get(&path, &[("Cookie", &cookie)], &mut body)?;
                    samples.push(t.elapsed());
                    ensure!(
                        status == 200 && len.is_none_or(|len| body.len() == len),
                        "GET {path}: {status}, {} bytes",
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

/// Imports an election of `precincts` stations and writes `PAGES` signed captures per precinct
/// straight into the database, in one transaction, each queued for the log at its position as
/// `commit_capture` does. The first captures name `photos` (hash, length) as their photos, the
/// others stand-in hashes. Returns the number of captures.
pub(crate) fn store(data: &Path, precincts: usize, photos: &[(Sha256Hash, u64)]) -> Result<usize> {
    let regions = ["Almaty", "Astana", "Shymkent", "Karaganda"];
    let list: Vec<serde_json::Value> = (1..=precincts)
        .map(|i| {
            let region = regions[i % regions.len()];
            serde_json::json!({
                "id": format!("p{i:05}"), "number": i, "region": region,
                "district": format!("{region} district {}", i % 7 + 1),
                "address": format!("School No. {}, {region} street {}", 100 + i, i % 50 + 1),
            })
        })
        .collect();
    let names = |s: &str| serde_json::json!({"kk": s, "ru": s, "en": s});
    let election = serde_json::json!({
        "id": "e2e",
        "names": names("Bench election"),
        "count_time_ms": 1_795_000_000_000u64,
        "precincts": list,
        "protocol": {
            "lines": (1..=8).map(|l| serde_json::json!({"id": l.to_string(), "kind": "count", "names": names("line")})).collect::<Vec<_>>(),
            "relations": [],
        },
    });
    let election = Election::from_json(&serde_json::to_vec(&election)?)?;
    let storage = SqliteStorage::open(data, false)?;
    storage.import_election(&election, 1)?;
    drop(storage);

    let keys: Vec<SigningKey> =
        (0..DEVICES).map(|d| SigningKey::from_bytes(&[d as u8 + 1; 32])).collect();
    let mut conn = rusqlite::Connection::open(data.join("hattama-server.sqlite3"))?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let tx = conn.transaction()?;
    let mut prev = vec![Sha256Hash::ZERO; DEVICES];
    let mut seq = vec![0u64; DEVICES];
    for key in &keys {
        let public = DeviceKey(key.verifying_key().to_bytes());
        let id = hattama_server::storage::device_id(&public);
        tx.execute(
            "INSERT INTO devices (id, key, election, enrolled_at_ms) VALUES (?1, ?2, 'e2e', 1)",
            params![id, public.0.as_slice()],
        )?;
    }
    let mut insert = tx.prepare(
        "INSERT INTO captures (id, device_id, seq, election, precinct, manifest, signature,
            photo_sha256, photo_bytes, media_type, received_at_ms, receipt, log_index)
         VALUES (?1, ?2, ?3, 'e2e', ?4, ?5, ?6, ?7, ?8, 'image/jpeg', ?9, ?10, ?11)",
    )?;
    let mut queue = tx.prepare("INSERT INTO log_entries (idx, entry) VALUES (?1, ?2)")?;
    let receipt = vec![b'r'; 450];
    let mut n = 0;
    for p in 1..=precincts {
        let d = p % DEVICES;
        let key = &keys[d];
        let public = DeviceKey(key.verifying_key().to_bytes());
        for page in 1..=PAGES {
            seq[d] += 1;
            let photo = match photos.get(n) {
                Some((sha256, bytes)) => PhotoInfo {
                    bytes: *bytes,
                    height: 800,
                    media_type: MediaType::Jpeg,
                    orientation: 1,
                    sha256: *sha256,
                    width: 600,
                },
                None => PhotoInfo {
                    bytes: 2_000_000,
                    height: 3000,
                    media_type: MediaType::Jpeg,
                    orientation: 1,
                    sha256: Sha256Hash::of(format!("{p}/{page}").as_bytes()),
                    width: 4000,
                },
            };
            let manifest = Manifest {
                captured_at_ms: 1_795_000_000_000 + (n as u64) * 1000,
                device_key: public,
                election: "e2e".into(),
                kind: EvidenceKind::Posted,
                location: None,
                note: (p % 10 == 0).then(|| "stamp is faint".to_owned()),
                page: Page { count: PAGES as u32, number: page as u32 },
                photo: photo.clone(),
                precinct: format!("p{p:05}"),
                prev: prev[d],
                seq: seq[d],
                transcription: (page == 1 && p % 3 == 0)
                    .then(|| (1..=8).map(|l| (l.to_string(), 100 + l as u64)).collect()),
                utc_offset_min: 300,
                v: 1,
            };
            let signed = SignedManifest::sign(manifest, key)?;
            prev[d] = signed.hash();
            insert.execute(params![
                signed.hash().to_hex(),
                hattama_server::storage::device_id(&public),
                seq[d] as i64,
                format!("p{p:05}"),
                signed.canonical,
                signed.signature.as_slice(),
                photo.sha256.to_hex(),
                photo.bytes as i64,
                1_795_000_000_000i64 + n as i64,
                receipt,
                n as i64,
            ])?;
            let entry = hattama_core::log::LogEntry {
                capture_id: signed.hash(),
                election: "e2e".into(),
                photo_sha256: photo.sha256,
                precinct: format!("p{p:05}"),
                received_at_ms: 1_795_000_000_000 + n as u64,
                v: 1,
            };
            queue.execute(params![n as i64, entry.to_bytes()])?;
            n += 1;
        }
    }
    drop(insert);
    drop(queue);
    tx.commit()?;
    Ok(n)
}
