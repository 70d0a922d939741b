//! `hattama-bench ingest`: the server's ingest against a plain HTTP server that only writes the
//! same bodies into files.
//!
//! `scripts/bench ingest` starts nginx (Debian's package, DAV module) on loopback and passes its
//! URL, document root and process id. This bench starts the real release `hattama-server` (next
//! to this executable) on a fresh data directory on disk (never tmpfs: an fsync must cost what
//! it costs), imports an election, enrolls K simulated devices (one thread and one keep-alive
//! HTTP client each, `hattama_tests::raw::RawDevice`) and measures:
//!
//! Every capture is one request, as a device sends a photo that fits one request
//! (`docs/sync-protocol.md`): the tus creation carries the whole photo (`creation-with-upload`)
//! and asks for the receipt in its answer (`Hattama-Receipt: wait`), which comes once the capture
//! is durable and in a published log checkpoint.
//!
//! 1. Photos: N distinct ~4 MB camera photos, stripped and signed before the clock starts,
//!    uploaded by the K devices at once. Against it, nginx accepts the same bodies with PUT to
//!    distinct paths at the same concurrency. Rounds alternate (H N, N H, …) with a `sync` of
//!    the file system between them off the clock, so that neither pays for the other's
//!    writeback, and recycled page cache for both (`prime_page_cache`). Goal: the median of the
//!    rounds' ratios of photos/s is ≥ 0.7. nginx does not fsync (its round's writeback is timed
//!    separately and only shown), so Hattama does strictly more: hash, verify the signature,
//!    check the photo, fsync the file and its directory, commit to SQLite, sign a receipt, log.
//! 2. Tiny captures: distinct 64×64 JPEGs by T devices (`--tiny-devices`, 128 by default) for a
//!    fixed time, each device with a minimal keep-alive HTTP client (`http::Conn`, also for nginx's reference run), so that
//!    the load generator's CPU on the shared cores stays small: captures committed per second
//!    (goal ≥ 3,000/s) and the time from sending the last byte (the request's whole,
//!    one-packet body) to holding the receipt, p50 and p99. nginx taking the same tiny bodies is
//!    shown as a reference for what this client and machine can do at all.
//!
//! With `--backend postgres` (`scripts/bench ingest --backend postgres [--instances N]`, which
//! starts a throw-away PostgreSQL cluster and Garage node), the same photos and tiny captures go
//! in the same run to one server on PostgreSQL + the Garage bucket, and with `--instances N`
//! (N > 1) also to N servers on one schema and one bucket prefix behind nginx balancing round
//! robin (`tests/nginx/instances.conf.in`). Each photo round runs nginx and every server in
//! turn, the order rotating. Goals: one instance's photos/s ≥ 0.5 × the embedded default's
//! (median of the rounds' ratios), its tiny captures ≥ 1,500/s, and N instances ≥ 0.9 × one
//! for both. PostgreSQL and Garage share this machine's cores with the servers, so their CPU is
//! printed beside the servers' ("postgres", "garage", "balancer"): what a deployment that runs
//! them elsewhere would not pay on the servers' machines.
//!
//! Every receipt is verified afterwards against the key pinned at enrollment, and each server's
//! capture list must hold exactly the uploaded captures. Each phase also prints where the time
//! went, so that a missed goal comes with its cause: CPU of the server and of this process per
//! upload, disk writes and cache flushes per upload (`/proc/diskstats`), and the machine's
//! busy and iowait shares (the client shares the machine's cores with the server).

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hattama_core::evidence::{DeviceKey, PhotoInfo, Sha256Hash, parse_lower_hex};
use hattama_core::media::{self, MediaLimits};
use hattama_core::receipt::SignedReceipt;
use hattama_tests::raw::RawDevice;
use reqwest::blocking::Client;

use crate::http::Conn;
use crate::photo::{first_quant_table, make_photo, make_variant};
use crate::{Goal, Stats, bench_root, fs_type, report};

pub const USAGE: &str = "hattama-bench ingest [--nginx URL --nginx-root DIR [--nginx-pid PID]] \
                         [--backend embedded|postgres [--instances N]] [--devices K] \
                         [--photos N] [--rounds R] [--tiny-devices T] [--tiny-secs S] \
                         [--tiny-max M] [--dir DIR]";

/// The goals: photos/s as a share of nginx's, and tiny captures committed per second.
const PHOTOS_VS_NGINX: f64 = 0.7;
const TINY_PER_S: f64 = 3000.0;
/// The goals of PostgreSQL + S3 (`--backend postgres`): photos/s of one instance as a share of
/// the embedded default's, tiny captures per second, and N instances against one (they share
/// the machine's cores, so this is what coordinating them costs).
const POSTGRES_PHOTOS_VS_EMBEDDED: f64 = 0.5;
const POSTGRES_TINY_PER_S: f64 = 1500.0;
const INSTANCES_VS_ONE: f64 = 0.9;
/// Size of the tiny photos, in pixels a side.
const TINY_SIDE: u32 = 64;
/// Devices uploading tiny captures at once. The rate of captures committed is the server's
/// capacity only when the server is kept busy: each device waits for its receipt, which comes
/// once the capture is in a published log checkpoint, so 16 devices measure mostly that wait
/// (on election night, thousands of phones sync in the same hour).
const TINY_DEVICES: usize = 128;
/// How long the devices upload tiny captures before the measured time starts.
const TINY_WARMUP: Duration = Duration::from_secs(1);
/// How long nginx takes tiny bodies, as a reference.
const TINY_NGINX: Duration = Duration::from_secs(3);

/// Where the measured servers keep their data.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The embedded default: SQLite and files in the data directory.
    Embedded,
    /// PostgreSQL and an S3 bucket (Garage), `instances` servers on one schema and one bucket
    /// prefix, behind nginx as the load balancer when there are more than one.
    Postgres { instances: usize },
}

impl Kind {
    fn label(self) -> String {
        match self {
            Self::Embedded => "embedded".into(),
            Self::Postgres { instances } => format!("pg+s3 x{instances}"),
        }
    }

    fn instances(self) -> usize {
        match self {
            Self::Embedded => 1,
            Self::Postgres { instances } => instances,
        }
    }
}

pub struct Options {
    nginx: Option<String>,
    nginx_root: Option<PathBuf>,
    nginx_pid: Option<u32>,
    postgres: bool,
    instances: usize,
    devices: usize,
    tiny_devices: usize,
    photos: usize,
    rounds: usize,
    tiny_secs: f64,
    tiny_max: usize,
    dir: Option<PathBuf>,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut o = Self {
            nginx: None,
            nginx_root: None,
            nginx_pid: None,
            postgres: false,
            instances: 1,
            devices: 16,
            tiny_devices: TINY_DEVICES,
            photos: 64,
            rounds: 5,
            tiny_secs: 10.0,
            tiny_max: 60_000,
            dir: None,
        };
        let mut instances = None;
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().with_context(|| format!("{arg} needs a value\n{USAGE}"));
            match arg.as_str() {
                "--nginx" => o.nginx = Some(value()?.trim_end_matches('/').to_owned()),
                "--nginx-root" => o.nginx_root = Some(PathBuf::from(value()?)),
                "--nginx-pid" => o.nginx_pid = Some(value()?.parse().context("--nginx-pid")?),
                "--backend" => {
                    o.postgres = match value()?.as_str() {
                        "embedded" => false,
                        "postgres" => true,
                        other => bail!("--backend {other}: expected embedded or postgres"),
                    }
                }
                "--instances" => instances = Some(value()?.parse().context("--instances")?),
                "--devices" => o.devices = value()?.parse().context("--devices")?,
                "--tiny-devices" => {
                    o.tiny_devices = value()?.parse().context("--tiny-devices")?;
                }
                "--photos" => o.photos = value()?.parse().context("--photos")?,
                "--rounds" => o.rounds = value()?.parse().context("--rounds")?,
                "--tiny-secs" => o.tiny_secs = value()?.parse().context("--tiny-secs")?,
                "--tiny-max" => o.tiny_max = value()?.parse().context("--tiny-max")?,
                "--dir" => o.dir = Some(PathBuf::from(value()?)),
                other => bail!("unknown option {other}\n{USAGE}"),
            }
        }
        if let Some(n) = instances {
            ensure!(o.postgres, "--instances is for --backend postgres (one database, one bucket)");
            ensure!((1..=8).contains(&n), "--instances must be 1 to 8");
            o.instances = n;
        }
        ensure!((1..=1000).contains(&o.devices), "--devices must be 1 to 1000");
        ensure!((1..=1000).contains(&o.tiny_devices), "--tiny-devices must be 1 to 1000");
        ensure!(o.photos >= o.devices, "--photos must be at least --devices");
        ensure!(o.rounds >= 1, "--rounds must be at least 1");
        ensure!(
            o.tiny_secs > 0.0 && o.tiny_max >= o.tiny_devices,
            "--tiny-secs/--tiny-max too small"
        );
        ensure!(
            o.nginx.is_some() == o.nginx_root.is_some(),
            "--nginx and --nginx-root go together (scripts/bench ingest passes both)"
        );
        Ok(o)
    }

    /// The servers measured, in order: the embedded default always (the reference of the
    /// others), then with `--backend postgres` one instance, then `--instances N` if N > 1.
    fn kinds(&self) -> Vec<Kind> {
        let mut kinds = vec![Kind::Embedded];
        if self.postgres {
            kinds.push(Kind::Postgres { instances: 1 });
            if self.instances > 1 {
                kinds.push(Kind::Postgres { instances: self.instances });
            }
        }
        kinds
    }
}

/// nginx as the script started it.
struct Nginx {
    url: String,
    root: PathBuf,
    pid: Option<u32>,
}

/// One measured server (one or several instances) with its enrolled devices and what they
/// will send.
struct Measured {
    target: Target,
    probe: Probe,
    pinned: DeviceKey,
    devices: Vec<Device>,
    /// Per photo round (the warm-up first), per device, the uploads in order.
    rounds: Vec<Vec<Vec<Upload>>>,
    /// Per tiny device, the uploads in order, and how far each got.
    tiny_plan: Vec<Vec<Upload>>,
    cursor: Vec<usize>,
    photo_runs: Vec<Run>,
    tiny: Option<Tiny>,
    receipts: Vec<(Sha256Hash, Sha256Hash, Vec<u8>)>,
}

/// What one server's tiny captures showed.
struct Tiny {
    rate: f64,
    last_byte: Stats,
}

pub fn run(opts: &Options) -> Result<()> {
    let root = bench_root(opts.dir.as_deref())?;
    let tmp = tempfile::Builder::new().prefix("hattama-bench-ingest-").tempdir_in(&root)?;
    println!(
        "bench directory: {} (file system {}{})",
        tmp.path().display(),
        fs_type(tmp.path()).unwrap_or_else(|| "unknown".into()),
        journal_note(tmp.path())
    );
    let nginx = match (&opts.nginx, &opts.nginx_root) {
        (Some(url), Some(root)) => {
            println!(
                "nginx: {url}, root {} (file system {})",
                root.display(),
                fs_type(root).unwrap_or_else(|| "unknown".into())
            );
            Some(Nginx { url: url.clone(), root: root.clone(), pid: opts.nginx_pid })
        }
        _ => {
            println!("nginx: not given (run `scripts/bench ingest`): no comparison");
            None
        }
    };
    let k = opts.devices;
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average before the run: {} (other work on this machine competes for its cores)",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );

    // --- Photos, made before any clock runs ----------------------------------------------------
    let started = Instant::now();
    let (camera, quality, _) = make_photo()?;
    let clean = media::strip(&camera, &MediaLimits::default())?;
    let table = first_quant_table(&clean.bytes)?;
    // A warm-up photo per device, then N per round. Each is distinct (two quantization entries
    // encode its number), valid and already clean, as the server requires.
    let count = k + opts.rounds * opts.photos;
    let photos = parallel_map(count, |i| -> Result<(&'static [u8], PhotoInfo)> {
        let mut bytes = clean.bytes.clone();
        make_variant(&mut bytes, table, i + 1);
        let (bytes, info) = clean_photo(bytes)?;
        Ok((leak(bytes), info))
    })?;
    let photo_len = photos[0].0.len();
    println!(
        "photos: {count} distinct {}x{} JPEGs of {photo_len} bytes ({:.2} MiB; quality {quality}, \
         stripped; made in {:.1} s)",
        clean.width,
        clean.height,
        photo_len as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let tiny = parallel_map(opts.tiny_max, |i| -> Result<(&'static [u8], PhotoInfo)> {
        let jpeg = hattama_tests::textured_jpeg(TINY_SIDE, TINY_SIDE, i as u32, 85);
        let (bytes, info) = clean_photo(jpeg)?;
        Ok((leak(bytes), info))
    })?;
    let distinct: HashSet<_> = tiny.iter().map(|(_, info)| info.sha256).collect();
    ensure!(
        distinct.len() == tiny.len(),
        "only {} of the tiny photos are distinct",
        distinct.len()
    );
    let tiny_avg = tiny.iter().map(|(b, _)| b.len()).sum::<usize>() / tiny.len();
    println!(
        "tiny photos: {} distinct {TINY_SIDE}x{TINY_SIDE} JPEGs, {tiny_avg} bytes on average \
         (made in {:.1} s)",
        tiny.len(),
        started.elapsed().as_secs_f64()
    );

    // --- Servers and devices -----------------------------------------------------------------
    let tk = opts.tiny_devices;
    let enrolled = k.max(tk);
    let backing = if opts.postgres { postgres_processes() } else { Vec::new() };
    let mut measured = Vec::new();
    for kind in opts.kinds() {
        let target = Target::start(kind, tmp.path(), enrolled)?;
        println!(
            "hattama-server {}: {} (pid {}), data directory on {}{}",
            kind.label(),
            target.url,
            target.pids().iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
            fs_type(&target.data_dirs[0]).unwrap_or_else(|| "unknown".into()),
            if target.balancer.is_some() { " (behind nginx, round robin)" } else { "" }
        );
        let (mut devices, pinned) = target.enroll(enrolled)?;
        // The balancer's CPU is the deployment's, as PostgreSQL's and Garage's are.
        let mut others = if kind == Kind::Embedded { Vec::new() } else { backing.clone() };
        others.extend(target.balancer.as_ref().map(|b| (Part::Balancer, b.pid())));
        let probe = Probe::new(
            &target.data_dirs[0],
            target.pids(),
            others,
            nginx.as_ref().and_then(|n| n.pid),
        );
        // Sign everything now: per device in the order it will upload.
        let mut rounds: Vec<Vec<Vec<Upload>>> = Vec::new();
        let mut next = 0;
        for size in std::iter::once(k).chain(std::iter::repeat_n(opts.photos, opts.rounds)) {
            let mut per_device: Vec<Vec<Upload>> = (0..k).map(|_| Vec::new()).collect();
            for j in 0..size {
                let (body, info) = &photos[next + j];
                per_device[j % k].push(devices[j % k].prepare(body, info));
            }
            next += size;
            rounds.push(per_device);
        }
        let mut tiny_plan: Vec<Vec<Upload>> = (0..tk).map(|_| Vec::new()).collect();
        for (j, (body, info)) in tiny.iter().enumerate() {
            tiny_plan[j % tk].push(devices[j % tk].prepare(body, info));
        }
        measured.push(Measured {
            target,
            probe,
            pinned,
            devices,
            rounds,
            tiny_plan,
            cursor: vec![0; tk],
            photo_runs: Vec::new(),
            tiny: None,
            receipts: Vec::new(),
        });
    }
    println!(
        "enrolled {enrolled} devices on each (one thread and one keep-alive HTTP client each)"
    );
    if opts.postgres {
        println!(
            "PostgreSQL, Garage and the balancing nginx: their CPU is printed beside the servers' \
             (postgres, garage, balancer); the servers' photos, renditions and log files are \
             objects in the bucket"
        );
    }

    // --- 1. Photos -----------------------------------------------------------------------------
    println!();
    println!(
        "photos: {} rounds of {} photos by {k} devices, each round running nginx and every \
         server in turn (the order rotating); before each run, off the clock: `sync`, page \
         cache primed",
        opts.rounds, opts.photos
    );
    let mut nginx_runs: Vec<Run> = Vec::new();
    let sides = measured.len() + 1;
    for r in 0..=opts.rounds {
        let warmup = r == 0;
        let label = if warmup { "warm-up".to_owned() } else { format!("round {r}") };
        let round_bytes = measured[0].rounds[r].iter().map(Vec::len).sum::<usize>() * photo_len;
        // Side 0 is nginx, side i the i-th server; the first side of round r is r mod sides.
        for side in (0..sides).map(|i| (i + r) % sides) {
            sync_fs(tmp.path())?;
            prime_page_cache(tmp.path(), round_bytes * 3 / 2)?;
            if side == 0 {
                let Some(nginx) = &nginx else { continue };
                let plan = &measured[0].rounds[r];
                let clients: Vec<&Client> =
                    measured[0].devices[..k].iter().map(|d| d.raw.http()).collect();
                let paths: Vec<Vec<String>> = plan
                    .iter()
                    .enumerate()
                    .map(|(d, list)| {
                        (0..list.len()).map(|j| format!("/r{r}-d{d}-{j}.jpg")).collect()
                    })
                    .collect();
                let before = measured[0].probe.sample()?;
                let (wall, _) = concurrently(plan.iter().zip(&paths).zip(&clients).map(
                    |((list, paths), http)| {
                        move || {
                            for (u, path) in list.iter().zip(paths) {
                                put(http, &nginx.url, path, u.body)?;
                            }
                            Ok(())
                        }
                    },
                ))?;
                let after = measured[0].probe.sample()?;
                let writeback = sync_fs(&nginx.root)?;
                let n = check_written(&nginx.root, plan, &paths)?;
                let run = Run::new(n, n * photo_len, wall, Some(writeback), before.until(&after));
                println!("  {label:8} {:12} {}", "nginx", run.line());
                println!("           {}", run.usage.line(n, true));
                if !warmup {
                    nginx_runs.push(run);
                }
            } else {
                let m = &mut measured[side - 1];
                let plan = &m.rounds[r];
                let clients: Vec<&Client> = m.devices[..k].iter().map(|d| d.raw.http()).collect();
                let before = m.probe.sample()?;
                let (wall, results) =
                    concurrently(plan.iter().zip(&clients).map(|(list, http)| {
                        let url = &m.target.url;
                        move || {
                            list.iter().map(|u| upload(http, url, u)).collect::<Result<Vec<_>>>()
                        }
                    }))?;
                let after = m.probe.sample()?;
                let n = plan.iter().map(Vec::len).sum::<usize>();
                for (list, done) in plan.iter().zip(results) {
                    for (u, t) in list.iter().zip(done) {
                        m.receipts.push((u.id, u.photo_sha256, t.receipt));
                    }
                }
                let run = Run::new(n, n * photo_len, wall, None, before.until(&after));
                println!("  {label:8} {:12} {}", m.target.kind.label(), run.line());
                println!("           {}", run.usage.line(n, false));
                if !warmup {
                    m.photo_runs.push(run);
                }
            }
        }
    }

    // --- 2. Tiny captures ----------------------------------------------------------------------
    println!();
    println!(
        "tiny captures: {tk} devices, {:.0} s warm-up then {:.0} s measured (at most {} captures), \
         each server in turn",
        TINY_WARMUP.as_secs_f64(),
        opts.tiny_secs,
        opts.tiny_max
    );
    let cores = thread::available_parallelism().map_or(2, |p| p.get());
    for m in &mut measured {
        let label = m.target.kind.label();
        let url = m.target.url.clone();
        let mut tiny_run = |secs: Duration| -> Result<(Duration, Vec<Vec<Timed>>, Usage)> {
            sync_fs(tmp.path())?;
            let before = m.probe.sample()?;
            let (wall, results) =
                concurrently(m.tiny_plan.iter().zip(&m.cursor).map(|(list, &from)| {
                    let url = &url;
                    move || {
                        // Connected before the release, like the keep-alive clients of phase 1.
                        let mut conn = Conn::connect(url)?;
                        let deadline = Instant::now() + secs;
                        let mut done = Vec::new();
                        for u in &list[from..] {
                            if Instant::now() >= deadline {
                                break;
                            }
                            done.push(upload_lean(&mut conn, u)?);
                        }
                        Ok(done)
                    }
                }))?;
            let usage = before.until(&m.probe.sample()?);
            for (d, done) in results.iter().enumerate() {
                for (u, t) in m.tiny_plan[d][m.cursor[d]..].iter().zip(done) {
                    m.receipts.push((u.id, u.photo_sha256, t.receipt.clone()));
                }
                m.cursor[d] += done.len();
            }
            Ok((wall, results, usage))
        };
        let (_, warm, _) = tiny_run(TINY_WARMUP)?;
        println!("  {label}: warm-up {} captures", warm.iter().map(Vec::len).sum::<usize>());
        let (wall, results, usage) = tiny_run(Duration::from_secs_f64(opts.tiny_secs))?;
        let timed: Vec<&Timed> = results.iter().flatten().collect();
        let done = timed.len();
        ensure!(done > 0, "no tiny capture completed on {label}");
        if m.cursor.iter().zip(&m.tiny_plan).any(|(c, list)| *c == list.len()) {
            println!("  (a device ran out of prepared captures: raise --tiny-max)");
        }
        let rate = done as f64 / wall.as_secs_f64();
        let last_byte = Stats::of(
            &timed
                .iter()
                .map(|t| t.request + t.receipt_get.unwrap_or_default())
                .collect::<Vec<_>>(),
        );
        let gets: Vec<Duration> = timed.iter().filter_map(|t| t.receipt_get).collect();
        println!(
            "  {label:12} {done} captures in {:.2} s: {rate:.0} captures/s",
            wall.as_secs_f64()
        );
        println!("           {}", usage.line(done, false));
        println!(
            "    one request per capture (the creation carries the photo, its answer the \
             receipt; each device waits for it before sending the next):"
        );
        println!("      last byte -> receipt   {}", ms_stats(&last_byte));
        if !gets.is_empty() {
            println!(
                "      ({} receipts came later, by GET: {})",
                gets.len(),
                ms_stats(&Stats::of(&gets))
            );
        }
        let per = |cpu: f64| cpu * 1000.0 / done as f64;
        let (server_ms, client_ms, storage_ms) =
            (per(usage.0.server), per(usage.0.own), per(usage.0.storage));
        let goal = if m.target.kind == Kind::Embedded { TINY_PER_S } else { POSTGRES_TINY_PER_S };
        println!(
            "    CPU per capture: server {server_ms:.3} ms + storage {storage_ms:.3} ms + client \
             {client_ms:.3} ms = {:.3} ms; {cores} cores at the goal allow {:.3} ms",
            server_ms + storage_ms + client_ms,
            cores as f64 * 1000.0 / goal
        );
        if storage_ms > 0.0 {
            // A ceiling that no change to the server can lift on this machine.
            println!(
                "    PostgreSQL and Garage alone, at 100% of the {cores} cores: at most {:.0} \
                 captures/s",
                cores as f64 * 1000.0 / storage_ms
            );
        }
        m.tiny = Some(Tiny { rate, last_byte });
    }
    let mut nginx_tiny = None;
    if let Some(nginx) = &nginx {
        let plan = &measured[0].tiny_plan;
        sync_fs(tmp.path())?;
        let before = measured[0].probe.sample()?;
        let (wall, counts) = concurrently(plan.iter().enumerate().map(|(d, list)| {
            move || {
                let mut conn = Conn::connect(&nginx.url)?;
                let deadline = Instant::now() + TINY_NGINX;
                let mut n = 0;
                for (j, u) in list.iter().enumerate() {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let path = format!("/tiny-d{d}-{j}.jpg");
                    let a = conn.send("PUT", &path, &[], u.body)?;
                    ensure!(a.status == 201, "nginx PUT {path}: HTTP {}", a.status);
                    n += 1;
                }
                Ok(n)
            }
        }))?;
        let usage = before.until(&measured[0].probe.sample()?);
        let n: usize = counts.iter().sum();
        let rate = n as f64 / wall.as_secs_f64();
        println!(
            "  {:12} {n} PUTs of the same bodies in {:.2} s: {rate:.0} PUTs/s (reference: one \
             request each, as a capture)",
            "nginx",
            wall.as_secs_f64()
        );
        println!("           {}", usage.line(n, true));
        nginx_tiny = Some(rate);
    }

    // --- Checks ------------------------------------------------------------------------------
    println!();
    for m in &measured {
        let started = Instant::now();
        let mut ids = HashSet::new();
        for (id, photo, bytes) in &m.receipts {
            let receipt = SignedReceipt::from_json(bytes)
                .with_context(|| format!("receipt of {}", id.to_hex()))?;
            receipt
                .verify(&m.pinned, id, photo)
                .with_context(|| format!("receipt of {}", id.to_hex()))?;
            ids.insert(*id);
        }
        let stored = m.target.capture_count()?;
        ensure!(
            ids.len() == m.receipts.len() && stored == ids.len(),
            "{}: {} receipts for {} captures, {stored} stored",
            m.target.kind.label(),
            m.receipts.len(),
            ids.len()
        );
        println!(
            "checked {}: {} receipts verify under the pinned key; the server lists exactly these \
             {} captures ({:.1} s)",
            m.target.kind.label(),
            m.receipts.len(),
            stored,
            started.elapsed().as_secs_f64()
        );
    }

    // --- Summary -----------------------------------------------------------------------------
    println!();
    println!("summary:");
    println!("  photos ({photo_len} bytes each, {k} devices, median of {} rounds):", opts.rounds);
    let notes = |kind: Kind| match kind {
        Kind::Embedded => "(hash, verify, fsync, commit, receipt)",
        Kind::Postgres { instances: 1 } => "(the same, the photo PUT into the bucket)",
        Kind::Postgres { .. } => "(the same, through nginx balancing the instances)",
    };
    for m in &measured {
        let h = Run::median(&m.photo_runs);
        println!(
            "    {:12} {:7.1} photos/s  {:7.1} MB/s  {}",
            m.target.kind.label(),
            h.photos_per_s,
            h.mb_per_s,
            notes(m.target.kind)
        );
    }
    // Each round's runs saw the same state of the machine (page cache, memory, disk), so a goal
    // is the median of the rounds' ratios rather than a ratio of medians.
    let by_round = |a: &[Run], b: &[Run]| -> Vec<f64> {
        a.iter().zip(b).map(|(a, b)| a.photos_per_s / b.photos_per_s.max(1e-9)).collect()
    };
    let embedded = &measured[0];
    let vs_nginx = by_round(&embedded.photo_runs, &nginx_runs);
    if !nginx_runs.is_empty() {
        let n = Run::median(&nginx_runs);
        println!(
            "    {:12} {:7.1} photos/s  {:7.1} MB/s  (no fsync; {:.1} MB/s counting the \
             writeback of its round)",
            "nginx", n.photos_per_s, n.mb_per_s, n.mb_per_s_synced
        );
        println!("    embedded / nginx by round: {}", list(&vs_nginx));
    }
    for m in &measured[1..] {
        println!(
            "    {} / embedded by round: {}",
            m.target.kind.label(),
            list(&by_round(&m.photo_runs, &embedded.photo_runs))
        );
    }
    if measured.len() == 3 {
        println!(
            "    {} / {} by round: {}",
            measured[2].target.kind.label(),
            measured[1].target.kind.label(),
            list(&by_round(&measured[2].photo_runs, &measured[1].photo_runs))
        );
    }
    // CPU per photo is steadier than rates when other work shares the machine.
    let cpu = |runs: &[Run], f: fn(&Sample) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(|r| f(&r.usage.0) / r.count as f64).collect();
        v.sort_by(f64::total_cmp);
        v[(v.len() - 1) / 2] * 1000.0
    };
    let mut line = Vec::new();
    for m in &measured {
        let (server, storage) =
            (cpu(&m.photo_runs, |s| s.server), cpu(&m.photo_runs, |s| s.storage));
        line.push(if m.target.kind == Kind::Embedded {
            format!("{} {server:.2} ms", m.target.kind.label())
        } else {
            format!("{} {server:.2} ms + storage {storage:.2} ms", m.target.kind.label())
        });
    }
    if opts.nginx_pid.is_some() && !nginx_runs.is_empty() {
        line.push(format!("nginx {:.2} ms", cpu(&nginx_runs, |s| s.nginx)));
    }
    println!("    CPU per photo (median of rounds): {}", line.join(", "));
    let cores = thread::available_parallelism().map_or(2, |p| p.get()) as f64;
    for m in &measured[1..] {
        let storage = cpu(&m.photo_runs, |s| s.storage);
        if storage > 0.0 {
            println!(
                "    {}: PostgreSQL and Garage alone, at 100% of the {cores} cores: at most \
                 {:.1} photos/s",
                m.target.kind.label(),
                cores * 1000.0 / storage
            );
        }
    }
    println!("  tiny captures ({tiny_avg} bytes, {tk} devices, {:.0} s each):", opts.tiny_secs);
    for m in &measured {
        let Some(t) = &m.tiny else { continue };
        println!(
            "    {:12} {:6.0} captures/s; last byte -> receipt p50 {:.2} ms, p99 {:.2} ms",
            m.target.kind.label(),
            t.rate,
            ms(t.last_byte.median),
            ms(t.last_byte.p99)
        );
    }
    if let Some(rate) = nginx_tiny {
        println!("    (nginx takes {rate:.0} tiny PUTs/s from the same client)");
    }
    println!("  (MB = 10^6 bytes)");
    println!();
    let tiny_rate = |m: &Measured| m.tiny.as_ref().map_or(0.0, |t| t.rate);
    if vs_nginx.is_empty() {
        println!("(ingest_photos_vs_nginx not measured: no nginx)");
    } else {
        report("ingest_photos_vs_nginx", median(vs_nginx), Goal::AtLeast(PHOTOS_VS_NGINX));
    }
    report("ingest_tiny_captures_per_s", tiny_rate(embedded), Goal::AtLeast(TINY_PER_S));
    if let Some(one) = measured.get(1) {
        report(
            "ingest_postgres_photos_vs_embedded",
            median(by_round(&one.photo_runs, &embedded.photo_runs)),
            Goal::AtLeast(POSTGRES_PHOTOS_VS_EMBEDDED),
        );
        report(
            "ingest_postgres_tiny_captures_per_s",
            tiny_rate(one),
            Goal::AtLeast(POSTGRES_TINY_PER_S),
        );
    }
    if let (Some(one), Some(many)) = (measured.get(1), measured.get(2)) {
        let n = many.target.kind.instances();
        report(
            &format!("ingest_postgres_{n}_instances_photos_vs_one"),
            median(by_round(&many.photo_runs, &one.photo_runs)),
            Goal::AtLeast(INSTANCES_VS_ONE),
        );
        report(
            &format!("ingest_postgres_{n}_instances_tiny_vs_one"),
            tiny_rate(many) / tiny_rate(one).max(1e-9),
            Goal::AtLeast(INSTANCES_VS_ONE),
        );
        report(
            &format!("ingest_postgres_{n}_instances_tiny_captures_per_s"),
            tiny_rate(many),
            Goal::AtLeast(POSTGRES_TINY_PER_S),
        );
    }
    drop(measured);
    Ok(())
}

fn list(ratios: &[f64]) -> String {
    ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" ")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 }
}

/// The processes of the PostgreSQL cluster and the Garage node `scripts/bench` started
/// (`HATTAMA_TEST_POSTGRES_DIR`, `HATTAMA_TEST_S3_DIR`): the postmaster (its backends are its
/// children) and the node.
fn postgres_processes() -> Vec<(Part, u32)> {
    let first_line = |path: PathBuf| -> Option<u32> {
        fs::read_to_string(path).ok()?.lines().next()?.trim().parse().ok()
    };
    let mut pids = Vec::new();
    if let Some(dir) = std::env::var_os("HATTAMA_TEST_POSTGRES_DIR") {
        pids.extend(
            first_line(Path::new(&dir).join("data/postmaster.pid")).map(|p| (Part::Postgres, p)),
        );
    }
    if let Some(dir) = std::env::var_os("HATTAMA_TEST_S3_DIR") {
        pids.extend(first_line(Path::new(&dir).join("pid")).map(|p| (Part::Garage, p)));
    }
    pids
}

// ---------------------------------------------------------------------------------------------
// Photos and uploads.

/// Strips a photo as a device would before signing it, and checks that it was clean already
/// or becomes so: the server refuses a photo whose stripped form differs.
fn clean_photo(bytes: Vec<u8>) -> Result<(Vec<u8>, PhotoInfo)> {
    let clean = media::strip(&bytes, &MediaLimits::default())?;
    let info = PhotoInfo {
        bytes: clean.bytes.len() as u64,
        height: clean.height,
        media_type: clean.media_type,
        orientation: clean.orientation,
        sha256: Sha256Hash::of(&clean.bytes),
        width: clean.width,
    };
    Ok((clean.bytes, info))
}

/// Photo bodies live until the process ends: a `'static` slice lets the HTTP client send the
/// same bytes to both servers without copying them into each request.
fn leak(bytes: Vec<u8>) -> &'static [u8] {
    bytes.leak()
}

/// `f(0..n)` on every core, in order.
fn parallel_map<T: Send>(n: usize, f: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    let threads = thread::available_parallelism().map_or(2, |p| p.get()).min(n.max(1));
    let chunk = n.div_ceil(threads);
    let f = &f;
    thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| s.spawn(move || (t * chunk..((t + 1) * chunk).min(n)).map(f).collect()))
            .collect();
        let mut out = Vec::with_capacity(n);
        for h in handles {
            let part: Result<Vec<T>> = h.join().map_err(|_| anyhow!("a worker panicked"))?;
            out.extend(part?);
        }
        Ok(out)
    })
}

/// A signed capture ready to send.
struct Upload {
    id: Sha256Hash,
    photo_sha256: Sha256Hash,
    /// The `Upload-Metadata` header: manifest and signature.
    metadata: String,
    body: &'static [u8],
}

/// One enrolled device and the precinct it reports on.
struct Device {
    raw: RawDevice,
    precinct: String,
}

impl Device {
    fn prepare(&mut self, body: &'static [u8], info: &PhotoInfo) -> Upload {
        let signed = self.raw.sign(&self.precinct, info);
        let signature = hex::encode(signed.signature);
        Upload {
            id: signed.hash(),
            photo_sha256: info.sha256,
            metadata: format!(
                "manifest {},signature {}",
                B64.encode(&signed.canonical),
                B64.encode(signature)
            ),
            body,
        }
    }
}

/// The time of one capture's request, and its receipt.
struct Timed {
    /// The creation with the whole photo and the receipt in its answer: for a photo of one
    /// packet, the time from its last byte to the receipt.
    request: Duration,
    /// A `GET` of the receipt, needed only if the answer came without it.
    receipt_get: Option<Duration>,
    receipt: Vec<u8>,
}

fn check_status(
    r: reqwest::blocking::Response,
    want: &[u16],
    what: &str,
) -> Result<reqwest::blocking::Response> {
    let status = r.status().as_u16();
    if want.contains(&status) {
        return Ok(r);
    }
    let body = r.text().unwrap_or_default();
    bail!("{what}: HTTP {status}: {}", body.chars().take(300).collect::<String>())
}

fn offset(r: &reqwest::blocking::Response) -> Option<u64> {
    r.headers().get("Upload-Offset")?.to_str().ok()?.parse().ok()
}

/// One capture as a device sends it (`docs/sync-protocol.md`): the tus creation carrying the
/// whole photo (`creation-with-upload`) and asking for the receipt in its answer
/// (`Hattama-Receipt: wait`); the receipt is fetched separately only if it did not come.
fn upload(http: &Client, url: &str, u: &Upload) -> Result<Timed> {
    let t = Instant::now();
    let r = http
        .post(format!("{url}/files/"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", u.body.len().to_string())
        .header("Upload-Metadata", &u.metadata)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Hattama-Receipt", "wait")
        .body(u.body)
        .send()?;
    let r = check_status(r, &[201], "creation with the photo")?;
    ensure!(
        offset(&r) == Some(u.body.len() as u64),
        "creation with the whole photo answered offset {:?}",
        offset(&r)
    );
    let receipt = r.bytes()?.to_vec();
    let request = t.elapsed();
    if !receipt.is_empty() {
        return Ok(Timed { request, receipt_get: None, receipt });
    }
    let t = Instant::now();
    let r = http.get(format!("{url}/api/v1/receipts/{}", u.id.to_hex())).send()?;
    let receipt = check_status(r, &[200], "receipt")?.bytes()?.to_vec();
    Ok(Timed { request, receipt_get: Some(t.elapsed()), receipt })
}

/// [`upload`] over the lean client of the tiny runs ([`Conn`]).
fn upload_lean(conn: &mut Conn, u: &Upload) -> Result<Timed> {
    let t = Instant::now();
    let len = u.body.len().to_string();
    let headers = [
        ("Tus-Resumable", "1.0.0"),
        ("Upload-Length", len.as_str()),
        ("Upload-Metadata", u.metadata.as_str()),
        ("Content-Type", "application/offset+octet-stream"),
        ("Hattama-Receipt", "wait"),
    ];
    let a = conn.send("POST", "/files/", &headers, u.body)?;
    if a.status != 201 {
        bail!("creation with the photo: HTTP {}: {}", a.status, String::from_utf8_lossy(&a.body));
    }
    ensure!(
        a.offset == Some(u.body.len() as u64),
        "creation with the whole photo answered offset {:?}",
        a.offset
    );
    let request = t.elapsed();
    if !a.body.is_empty() {
        return Ok(Timed { request, receipt_get: None, receipt: a.body });
    }
    let t = Instant::now();
    let path = format!("/api/v1/receipts/{}", u.id.to_hex());
    let a = conn.send("GET", &path, &[], &[])?;
    ensure!(a.status == 200, "receipt: HTTP {}", a.status);
    Ok(Timed { request, receipt_get: Some(t.elapsed()), receipt: a.body })
}

/// `PUT` of a body to nginx, as a new file.
fn put(http: &Client, url: &str, path: &str, body: &'static [u8]) -> Result<()> {
    let r = http.put(format!("{url}{path}")).body(body).send()?;
    check_status(r, &[201], "nginx PUT")?.bytes()?;
    Ok(())
}

/// Runs the jobs on one thread each, released together; returns the time from the release to
/// the end of the last job, and the results in order.
fn concurrently<T, F, I>(jobs: I) -> Result<(Duration, Vec<T>)>
where
    T: Send,
    F: FnOnce() -> Result<T> + Send,
    I: IntoIterator<Item = F>,
{
    let jobs: Vec<F> = jobs.into_iter().collect();
    let barrier = Barrier::new(jobs.len() + 1);
    thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    job()
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut results = Vec::with_capacity(handles.len());
        for h in handles {
            results.push(h.join().map_err(|_| anyhow!("a device thread panicked"))?);
        }
        let wall = start.elapsed();
        Ok((wall, results.into_iter().collect::<Result<Vec<T>>>()?))
    })
}

/// Checks that nginx wrote every file of the round whole. The files stay until the end, as
/// Hattama's do (`scripts/bench` removes them): see `journal_note` and `prime_page_cache`.
fn check_written(root: &Path, plan: &[Vec<Upload>], paths: &[Vec<String>]) -> Result<usize> {
    let mut n = 0;
    for (list, paths) in plan.iter().zip(paths) {
        for (u, path) in list.iter().zip(paths) {
            let file = root.join(path.trim_start_matches('/'));
            let len = fs::metadata(&file).with_context(|| format!("nginx wrote no {path}"))?.len();
            ensure!(len == u.body.len() as u64, "nginx wrote {len} bytes of {path}");
            n += 1;
        }
    }
    Ok(n)
}

/// `" (no journal)"` when `path` is on ext4 without a journal. There, creating a file skips
/// (one by one) every inode deleted in the last half minute or so, so that files deleted just
/// before or during a run slow it down: this bench deletes nothing until it ends.
fn journal_note(path: &Path) -> &'static str {
    let Ok(path) = path.canonicalize() else { return "" };
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else { return "" };
    let device = mounts
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (device, mount, kind) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mount).then_some((mount.len(), device, kind))
        })
        .max_by_key(|(len, _, _)| *len);
    let Some((_, device, "ext4")) = device else { return "" };
    let name = device.rsplit('/').next().unwrap_or(device);
    let journaled = fs::read_dir("/proc/fs/jbd2").is_ok_and(|entries| {
        entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with(&format!("{name}-")))
    });
    if journaled { "" } else { " (no journal)" }
}

/// Writes `bytes` into a scratch file and removes it, so that the page cache the next run
/// needs is memory this machine used a moment ago, as on a server whose memory is all in use.
/// Without it, the first run after a pause pays for fresh memory: on a virtual machine that
/// hands freed memory back to its host (here, writes into new page cache run at a tenth of
/// their usual speed), that cost would swamp the difference between the two servers.
fn prime_page_cache(dir: &Path, bytes: usize) -> Result<()> {
    let path = dir.join("prime.tmp");
    let chunk = vec![0x5Au8; 4 << 20];
    let mut file = fs::File::create(&path)?;
    for _ in 0..bytes.div_ceil(chunk.len()) {
        file.write_all(&chunk)?;
    }
    drop(file);
    fs::remove_file(&path)?;
    Ok(())
}

/// Writes back every dirty page of the file system holding `path` (`sync -f`); returns how
/// long it took.
fn sync_fs(path: &Path) -> Result<Duration> {
    let t = Instant::now();
    let status = Command::new("sync").arg("-f").arg(path).status().context("run sync")?;
    ensure!(status.success(), "sync -f {} failed", path.display());
    Ok(t.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ms_stats(s: &Stats) -> String {
    format!("p50 {:7.2} ms  p99 {:7.2} ms  (max {:.2})", ms(s.median), ms(s.p99), ms(s.max))
}

/// One timed run of one side.
struct Run {
    count: usize,
    photos_per_s: f64,
    mb_per_s: f64,
    /// Counting the writeback that followed (nginx only), else the same as `mb_per_s`.
    mb_per_s_synced: f64,
    wall: Duration,
    writeback: Option<Duration>,
    usage: Usage,
}

impl Run {
    fn new(
        n: usize,
        bytes: usize,
        wall: Duration,
        writeback: Option<Duration>,
        usage: Usage,
    ) -> Self {
        let secs = wall.as_secs_f64().max(1e-9);
        let synced = secs + writeback.map_or(0.0, |w| w.as_secs_f64());
        Self {
            count: n,
            photos_per_s: n as f64 / secs,
            mb_per_s: bytes as f64 / 1e6 / secs,
            mb_per_s_synced: bytes as f64 / 1e6 / synced,
            wall,
            writeback,
            usage,
        }
    }

    fn line(&self) -> String {
        let mut s = format!(
            "{:6.3} s  {:7.1} photos/s  {:7.1} MB/s",
            self.wall.as_secs_f64(),
            self.photos_per_s,
            self.mb_per_s
        );
        if let Some(w) = self.writeback {
            s += &format!("  (then sync of its files {:.3} s)", w.as_secs_f64());
        }
        s
    }

    /// The run with the median rate (the lower middle one of an even count).
    fn median(runs: &[Run]) -> &Run {
        let mut sorted: Vec<&Run> = runs.iter().collect();
        sorted.sort_by(|a, b| a.photos_per_s.total_cmp(&b.photos_per_s));
        sorted[(sorted.len() - 1) / 2]
    }
}

// ---------------------------------------------------------------------------------------------
// The real servers.

/// `hattama-server` as child processes (killed on drop), next to this executable as cargo
/// builds them (`cargo build --release -p hattama-server -p hattama-tests`): one on the embedded
/// default, or N on one PostgreSQL schema and one bucket prefix, each with a data directory of
/// its own (its lock) holding the same keys, behind nginx when N > 1.
struct Target {
    kind: Kind,
    bin: PathBuf,
    data_dirs: Vec<PathBuf>,
    /// The storage settings of every server and admin command (none for the embedded default).
    env: Vec<(String, String)>,
    url: String,
    children: Vec<Child>,
    balancer: Option<hattama_tests::nginx::Nginx>,
}

impl Target {
    /// Imports election `e2e` (at least 1,000 precincts, one per device), starts serving on
    /// free ports.
    fn start(kind: Kind, root: &Path, devices: usize) -> Result<Self> {
        let precincts = devices.max(1000);
        let bin = crate::server::bin()?;
        let slug = match kind {
            Kind::Embedded => "embedded".to_owned(),
            Kind::Postgres { instances } => format!("postgres-{instances}"),
        };
        let data_dirs: Vec<PathBuf> =
            (0..kind.instances()).map(|i| root.join(format!("{slug}-{i}"))).collect();
        for d in &data_dirs {
            fs::create_dir_all(d)?;
        }
        let env = match kind {
            Kind::Embedded => Vec::new(),
            Kind::Postgres { .. } => {
                for var in ["HATTAMA_TEST_POSTGRES_URL", "HATTAMA_TEST_S3_ENDPOINT"] {
                    ensure!(
                        std::env::var_os(var).is_some(),
                        "{var} is not set: `scripts/bench ingest --backend postgres` starts a \
                         PostgreSQL cluster and a Garage node and sets it"
                    );
                }
                let backend = hattama_tests::backend::Backend::postgres_s3()
                    .context("PostgreSQL and the bucket are not given")?;
                backend.env(&data_dirs[0])
            }
        };
        let election = data_dirs[0].join("election.json");
        fs::write(
            &election,
            serde_json::to_vec(&hattama_tests::fixtures::election("e2e", precincts))?,
        )?;
        admin(&bin, &data_dirs[0], &env, &["election", "import", &election.display().to_string()])?;
        let mut target = Self {
            kind,
            bin,
            data_dirs,
            env,
            url: String::new(),
            children: Vec::new(),
            balancer: None,
        };
        let mut addrs = Vec::new();
        for i in 0..target.data_dirs.len() {
            if i > 0 {
                // The first server made the keys; every instance signs with them.
                hattama_tests::copy_dir(
                    &target.data_dirs[0].join("keys"),
                    &target.data_dirs[i].join("keys"),
                );
            }
            let (url, child) =
                crate::server::spawn_with(&target.bin, &target.data_dirs[i], &target.env)?;
            target.children.push(child);
            let addr: std::net::SocketAddr = url
                .strip_prefix("http://")
                .and_then(|a| a.parse().ok())
                .with_context(|| format!("the server's address {url}"))?;
            addrs.push(addr);
            target.url = url;
        }
        if addrs.len() > 1 {
            let balancer = hattama_tests::nginx::Nginx::start(&addrs);
            target.url = balancer.url.clone();
            target.balancer = Some(balancer);
        }
        Ok(target)
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Enrolls `k` devices, device `d` for precinct `d + 1`; returns them and the receipt key
    /// they pin.
    fn enroll(&self, k: usize) -> Result<(Vec<Device>, DeviceKey)> {
        let precincts: Vec<String> = (1..=k).map(hattama_tests::fixtures::precinct_id).collect();
        let mut args = vec!["invite", "create", "--election", "e2e", "--json", "--count"];
        let count = k.to_string();
        args.push(&count);
        for p in &precincts {
            args.extend(["--precinct", p]);
        }
        let codes: serde_json::Value =
            serde_json::from_str(&admin(&self.bin, &self.data_dirs[0], &self.env, &args)?)?;
        let codes = codes.as_array().context("invite list")?;
        ensure!(codes.len() == k, "{} codes for {k} devices", codes.len());
        let mut devices = Vec::with_capacity(k);
        let mut pinned = None;
        for (d, (code, precinct)) in codes.iter().zip(precincts).enumerate() {
            let raw = RawDevice::numbered(d as u16);
            let answer = raw.enroll(&self.url, code["code"].as_str().context("code")?);
            ensure!(answer.status == 200, "enrollment: {answer:?}");
            let key = answer.body["receipt_key"]
                .as_str()
                .and_then(parse_lower_hex::<32>)
                .context("receipt_key")?;
            if let Some(p) = &pinned {
                ensure!(DeviceKey(key) == *p, "devices got different receipt keys");
            }
            pinned = Some(DeviceKey(key));
            devices.push(Device { raw, precinct });
        }
        Ok((devices, pinned.context("no device")?))
    }

    fn capture_count(&self) -> Result<usize> {
        let list: serde_json::Value = serde_json::from_str(&admin(
            &self.bin,
            &self.data_dirs[0],
            &self.env,
            &["capture", "list", "--json"],
        )?)?;
        Ok(list.as_array().context("capture list")?.len())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs an admin command of `hattama-server` on a data directory; returns its stdout.
fn admin(bin: &Path, data_dir: &Path, env: &[(String, String)], args: &[&str]) -> Result<String> {
    let out = Command::new(bin)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("HATTAMA_LOG", "warn")
        .output()?;
    ensure!(
        out.status.success(),
        "hattama-server {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

// ---------------------------------------------------------------------------------------------
// Where the time goes: CPU of the processes, the machine, the disk (Linux /proc).

/// What a deployment on PostgreSQL + S3 runs besides the servers.
#[derive(Clone, Copy)]
enum Part {
    Postgres = 0,
    Garage = 1,
    Balancer = 2,
}

const STORAGE_PARTS: [&str; 3] = ["postgres", "garage", "balancer"];

struct Probe {
    /// The server instances.
    servers: Vec<u32>,
    /// What else the deployment runs, each process with its children, by part
    /// ([`STORAGE_PARTS`]).
    storage: Vec<(Part, u32)>,
    nginx_pid: Option<u32>,
    /// Major and minor number of the data directory's block device.
    disk: Option<(u64, u64)>,
    ticks_per_s: f64,
}

#[derive(Clone, Copy, Default)]
struct Sample {
    /// CPU seconds of the server instances, of what they run on (`Probe::storage`), of nginx
    /// (master and workers), of this process.
    server: f64,
    storage: f64,
    /// `storage` by part ([`STORAGE_PARTS`]).
    parts: [f64; 3],
    nginx: f64,
    own: f64,
    /// Machine-wide jiffies: all, idle, iowait.
    total: u64,
    idle: u64,
    iowait: u64,
    /// Disk: writes completed, sectors written, flushes completed.
    writes: u64,
    sectors: u64,
    flushes: u64,
    disk: bool,
    ticks_per_s: f64,
}

/// What a run cost, as differences of two samples.
struct Usage(Sample);

impl Probe {
    fn new(
        data_dir: &Path,
        servers: Vec<u32>,
        storage: Vec<(Part, u32)>,
        nginx_pid: Option<u32>,
    ) -> Self {
        let disk = fs::metadata(data_dir).ok().map(|m| {
            let dev = m.dev();
            ((dev >> 8) & 0xfff | (dev >> 32) & !0xfff, dev & 0xff | (dev >> 12) & !0xff)
        });
        let ticks_per_s = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0);
        Self { servers, storage, nginx_pid, disk, ticks_per_s }
    }

    fn sample(&self) -> Result<Sample> {
        let mut s = Sample {
            server: self.cpu_of(&self.servers)?,
            own: self.cpu_of(&[std::process::id()])?,
            ticks_per_s: self.ticks_per_s,
            ..Sample::default()
        };
        for &(part, pid) in &self.storage {
            let mut pids = children(pid)?;
            pids.push(pid);
            let cpu = self.cpu_of(&pids)?;
            s.parts[part as usize] += cpu;
            s.storage += cpu;
        }
        if let Some(master) = self.nginx_pid {
            let mut pids = vec![master];
            pids.extend(children(master)?);
            s.nginx = self.cpu_of(&pids)?;
        }
        let stat = fs::read_to_string("/proc/stat")?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()
            .context("/proc/stat")?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        ensure!(cpu.len() >= 5, "unexpected /proc/stat");
        // user nice system idle iowait irq softirq steal (guest time is counted in user).
        s.total = cpu.iter().take(8).sum();
        s.idle = cpu[3];
        s.iowait = cpu[4];
        if let Some((major, minor)) = self.disk {
            let stats = fs::read_to_string("/proc/diskstats")?;
            for line in stats.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() >= 20 && f[0].parse() == Ok(major) && f[1].parse() == Ok(minor) {
                    let n = |i: usize| f[i].parse::<u64>().unwrap_or(0);
                    (s.writes, s.sectors, s.flushes, s.disk) = (n(7), n(9), n(18), true);
                }
            }
        }
        Ok(s)
    }

    /// CPU seconds (user and system) used so far by these processes.
    fn cpu_of(&self, pids: &[u32]) -> Result<f64> {
        let mut ticks = 0;
        for pid in pids {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            let fields: Vec<&str> =
                stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
            // After the command: state(0) ppid(1) … utime(11) stime(12).
            ensure!(fields.len() > 12, "unexpected /proc/{pid}/stat");
            ticks += fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        }
        Ok(ticks as f64 / self.ticks_per_s)
    }
}

/// Process ids whose parent is `pid`.
fn children(pid: u32) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if ppid.and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            out.push(child);
        }
    }
    Ok(out)
}

impl Sample {
    fn until(&self, later: &Sample) -> Usage {
        Usage(Sample {
            server: later.server - self.server,
            storage: later.storage - self.storage,
            parts: std::array::from_fn(|i| later.parts[i] - self.parts[i]),
            nginx: later.nginx - self.nginx,
            own: later.own - self.own,
            total: later.total - self.total,
            idle: later.idle - self.idle,
            iowait: later.iowait - self.iowait,
            writes: later.writes - self.writes,
            sectors: later.sectors - self.sectors,
            flushes: later.flushes - self.flushes,
            disk: self.disk && later.disk,
            ticks_per_s: self.ticks_per_s,
        })
    }
}

impl Usage {
    /// Per upload: CPU of the server (or nginx) and of the client, the disk's work; the machine's
    /// busy and iowait shares over the run.
    fn line(&self, n: usize, nginx: bool) -> String {
        let u = &self.0;
        let per = |v: f64| v / n.max(1) as f64;
        let total = u.total.max(1) as f64;
        let (who, cpu) = if nginx { ("nginx", u.nginx) } else { ("server", u.server) };
        // Whatever else ran: other processes on the machine, and kernel threads (writeback).
        let busy = total - (u.idle + u.iowait) as f64;
        let others = busy / u.ticks_per_s - u.server - u.storage - u.nginx - u.own;
        let storage = if u.storage > 0.0 {
            let parts: Vec<String> = STORAGE_PARTS
                .iter()
                .zip(u.parts)
                .filter(|(_, cpu)| *cpu > 0.0)
                .map(|(name, cpu)| format!("{name} {:.3}", per(cpu) * 1000.0))
                .collect();
            format!(" (+ {})", parts.join(", "))
        } else {
            String::new()
        };
        let mut s = format!(
            "{who} CPU {:.3}{storage} ms/upload, client CPU {:.3} ms/upload, machine busy {:.0}% (iowait \
             {:.0}%, others {:.0}%)",
            per(cpu) * 1000.0,
            per(u.own) * 1000.0,
            100.0 * busy / total,
            100.0 * u.iowait as f64 / total,
            (100.0 * others * u.ticks_per_s / total).max(0.0),
        );
        if nginx && u.nginx == 0.0 {
            s += " [no nginx pid given: its CPU is not counted]";
        }
        if u.disk {
            s += &format!(
                "; disk {:.1} writes, {:.2} flushes, {:.2} MB per upload",
                per(u.writes as f64),
                per(u.flushes as f64),
                per(u.sectors as f64 * 512.0 / 1e6)
            );
        }
        s
    }
}
