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
//! Every receipt is verified afterwards against the key pinned at enrollment, and the server's
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
                         [--devices K] [--photos N] [--rounds R] [--tiny-devices T] [--tiny-secs S] \
                         [--tiny-max M] \
                         [--dir DIR]";

/// The goals: photos/s as a share of nginx's, and tiny captures committed per second.
const PHOTOS_VS_NGINX: f64 = 0.7;
const TINY_PER_S: f64 = 3000.0;
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

pub struct Options {
    nginx: Option<String>,
    nginx_root: Option<PathBuf>,
    nginx_pid: Option<u32>,
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
            devices: 16,
            tiny_devices: TINY_DEVICES,
            photos: 64,
            rounds: 5,
            tiny_secs: 10.0,
            tiny_max: 60_000,
            dir: None,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().with_context(|| format!("{arg} needs a value\n{USAGE}"));
            match arg.as_str() {
                "--nginx" => o.nginx = Some(value()?.trim_end_matches('/').to_owned()),
                "--nginx-root" => o.nginx_root = Some(PathBuf::from(value()?)),
                "--nginx-pid" => o.nginx_pid = Some(value()?.parse().context("--nginx-pid")?),
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
        // Device keys come from one byte, from 100 on.
        ensure!((1..=150).contains(&o.devices), "--devices must be 1 to 150");
        ensure!((1..=150).contains(&o.tiny_devices), "--tiny-devices must be 1 to 150");
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
}

/// nginx as the script started it.
struct Nginx {
    url: String,
    root: PathBuf,
    pid: Option<u32>,
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

    // --- Server and devices ------------------------------------------------------------------
    let tk = opts.tiny_devices;
    let enrolled = k.max(tk);
    let server = Server::start(&tmp.path().join("server"), enrolled)?;
    println!(
        "hattama-server: {} (pid {}), data directory on {}",
        server.url,
        server.pid(),
        fs_type(&server.data_dir).unwrap_or_else(|| "unknown".into())
    );
    let (mut devices, pinned) = server.enroll(enrolled)?;
    println!("enrolled {enrolled} devices (one thread and one keep-alive HTTP client each)");
    let probe = Probe::new(&server.data_dir, server.pid(), nginx.as_ref().and_then(|n| n.pid));

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
    let clients: Vec<&Client> = devices[..k].iter().map(|d| d.raw.http()).collect();
    let mut receipts: Vec<(Sha256Hash, Sha256Hash, Vec<u8>)> = Vec::new();

    // --- 1. Photos -----------------------------------------------------------------------------
    println!();
    println!(
        "photos: {} rounds of {} photos by {k} devices, alternating Hattama and nginx; before \
         each run, off the clock: `sync`, page cache primed",
        opts.rounds, opts.photos
    );
    let mut hattama_runs: Vec<Run> = Vec::new();
    let mut nginx_runs: Vec<Run> = Vec::new();
    for (r, plan) in rounds.iter().enumerate() {
        let warmup = r == 0;
        let label = if warmup { "warm-up".to_owned() } else { format!("round {r}") };
        let nginx_first = r % 2 == 0;
        let round_bytes = plan.iter().map(Vec::len).sum::<usize>() * photo_len;
        for side in [nginx_first, !nginx_first] {
            sync_fs(tmp.path())?;
            prime_page_cache(tmp.path(), round_bytes * 3 / 2)?;
            if side {
                let Some(nginx) = &nginx else { continue };
                let paths: Vec<Vec<String>> = plan
                    .iter()
                    .enumerate()
                    .map(|(d, list)| {
                        (0..list.len()).map(|j| format!("/r{r}-d{d}-{j}.jpg")).collect()
                    })
                    .collect();
                let before = probe.sample()?;
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
                let after = probe.sample()?;
                let writeback = sync_fs(&nginx.root)?;
                let n = check_written(&nginx.root, plan, &paths)?;
                let run = Run::new(n, n * photo_len, wall, Some(writeback), before.until(&after));
                println!("  {label:8} nginx    {}", run.line());
                println!("           {}", run.usage.line(n, true));
                if !warmup {
                    nginx_runs.push(run);
                }
            } else {
                let before = probe.sample()?;
                let (wall, results) =
                    concurrently(plan.iter().zip(&clients).map(|(list, http)| {
                        let url = &server.url;
                        move || {
                            list.iter().map(|u| upload(http, url, u)).collect::<Result<Vec<_>>>()
                        }
                    }))?;
                let after = probe.sample()?;
                let n = plan.iter().map(Vec::len).sum::<usize>();
                for (list, done) in plan.iter().zip(results) {
                    for (u, t) in list.iter().zip(done) {
                        receipts.push((u.id, u.photo_sha256, t.receipt));
                    }
                }
                let run = Run::new(n, n * photo_len, wall, None, before.until(&after));
                println!("  {label:8} Hattama  {}", run.line());
                println!("           {}", run.usage.line(n, false));
                if !warmup {
                    hattama_runs.push(run);
                }
            }
        }
    }

    // --- 2. Tiny captures ----------------------------------------------------------------------
    println!();
    println!(
        "tiny captures: {tk} devices, {:.0} s warm-up then {:.0} s measured (at most {} captures)",
        TINY_WARMUP.as_secs_f64(),
        opts.tiny_secs,
        opts.tiny_max
    );
    let mut cursor = vec![0usize; tk];
    let mut tiny_run = |secs: Duration| -> Result<(Duration, Vec<Vec<Timed>>, Usage)> {
        sync_fs(tmp.path())?;
        let before = probe.sample()?;
        let (wall, results) = concurrently(tiny_plan.iter().zip(&cursor).map(|(list, &from)| {
            let url = &server.url;
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
        let usage = before.until(&probe.sample()?);
        for (d, done) in results.iter().enumerate() {
            for (u, t) in tiny_plan[d][cursor[d]..].iter().zip(done) {
                receipts.push((u.id, u.photo_sha256, t.receipt.clone()));
            }
            cursor[d] += done.len();
        }
        Ok((wall, results, usage))
    };
    let (_, warm, _) = tiny_run(TINY_WARMUP)?;
    println!("  warm-up: {} captures", warm.iter().map(Vec::len).sum::<usize>());
    let (tiny_wall, tiny_results, tiny_usage) = tiny_run(Duration::from_secs_f64(opts.tiny_secs))?;
    let timed: Vec<&Timed> = tiny_results.iter().flatten().collect();
    let tiny_done = timed.len();
    ensure!(tiny_done > 0, "no tiny capture completed");
    if cursor.iter().zip(&tiny_plan).any(|(c, list)| *c == list.len()) {
        println!("  (a device ran out of prepared captures: raise --tiny-max)");
    }
    let tiny_rate = tiny_done as f64 / tiny_wall.as_secs_f64();
    let last_byte = Stats::of(
        &timed.iter().map(|t| t.request + t.receipt_get.unwrap_or_default()).collect::<Vec<_>>(),
    );
    let gets: Vec<Duration> = timed.iter().filter_map(|t| t.receipt_get).collect();
    println!(
        "  Hattama  {tiny_done} captures in {:.2} s: {tiny_rate:.0} captures/s",
        tiny_wall.as_secs_f64()
    );
    println!("           {}", tiny_usage.line(tiny_done, false));
    println!(
        "    one request per capture (the creation carries the photo, its answer the receipt; \
         each device waits for it before sending the next):"
    );
    println!("      last byte -> receipt   {}", ms_stats(&last_byte));
    if !gets.is_empty() {
        println!(
            "      ({} receipts came later, by GET: {})",
            gets.len(),
            ms_stats(&Stats::of(&gets))
        );
    }
    let cores = thread::available_parallelism().map_or(2, |p| p.get());
    let per = |cpu: f64| cpu * 1000.0 / tiny_done as f64;
    let (server_ms, client_ms) = (per(tiny_usage.0.server), per(tiny_usage.0.own));
    println!(
        "    CPU per capture: server {server_ms:.3} ms + client {client_ms:.3} ms = {:.3} ms; \
         {cores} cores at the goal allow {:.3} ms",
        server_ms + client_ms,
        cores as f64 * 1000.0 / TINY_PER_S
    );
    let mut nginx_tiny = None;
    if let Some(nginx) = &nginx {
        sync_fs(tmp.path())?;
        let before = probe.sample()?;
        let (wall, counts) = concurrently(tiny_plan.iter().enumerate().map(|(d, list)| {
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
        let usage = before.until(&probe.sample()?);
        let n: usize = counts.iter().sum();
        let rate = n as f64 / wall.as_secs_f64();
        println!(
            "  nginx    {n} PUTs of the same bodies in {:.2} s: {rate:.0} PUTs/s (reference: one \
             request each, as a capture)",
            wall.as_secs_f64()
        );
        println!("           {}", usage.line(n, true));
        nginx_tiny = Some(rate);
    }

    // --- Checks ------------------------------------------------------------------------------
    let started = Instant::now();
    let mut ids = HashSet::new();
    for (id, photo, bytes) in &receipts {
        let receipt = SignedReceipt::from_json(bytes)
            .with_context(|| format!("receipt of {}", id.to_hex()))?;
        receipt
            .verify(&pinned, id, photo)
            .with_context(|| format!("receipt of {}", id.to_hex()))?;
        ids.insert(*id);
    }
    let stored = server.capture_count()?;
    ensure!(
        ids.len() == receipts.len() && stored == ids.len(),
        "{} receipts for {} captures, {stored} stored",
        receipts.len(),
        ids.len()
    );
    println!();
    println!(
        "checked: {} receipts verify under the pinned key; the server lists exactly these {} \
         captures ({:.1} s)",
        receipts.len(),
        stored,
        started.elapsed().as_secs_f64()
    );
    drop(server);

    // --- Summary -----------------------------------------------------------------------------
    println!();
    println!("summary:");
    let hattama = Run::median(&hattama_runs);
    println!(
        "  photos ({photo_len} bytes each, {k} devices, median of {} rounds):",
        hattama_runs.len()
    );
    println!(
        "    Hattama  {:7.1} photos/s  {:7.1} MB/s  (hash, verify, fsync, commit, receipt)",
        hattama.photos_per_s, hattama.mb_per_s
    );
    // Each round's two runs saw the same state of the machine (page cache, memory, disk), so
    // the goal is the median of the rounds' ratios rather than a ratio of medians.
    let mut ratios: Vec<f64> = hattama_runs
        .iter()
        .zip(&nginx_runs)
        .map(|(h, n)| h.photos_per_s / n.photos_per_s.max(1e-9))
        .collect();
    if !nginx_runs.is_empty() {
        let n = Run::median(&nginx_runs);
        println!(
            "    nginx    {:7.1} photos/s  {:7.1} MB/s  (no fsync; {:.1} MB/s counting the \
             writeback of its round)",
            n.photos_per_s, n.mb_per_s, n.mb_per_s_synced
        );
        let list: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!("    Hattama / nginx by round: {}", list.join(" "));
        // CPU per photo is steadier than rates when other work shares the machine.
        let cpu = |runs: &[Run], nginx: bool| {
            let mut v: Vec<f64> = runs
                .iter()
                .map(|r| if nginx { r.usage.0.nginx } else { r.usage.0.server } / r.count as f64)
                .collect();
            v.sort_by(f64::total_cmp);
            v[(v.len() - 1) / 2] * 1000.0
        };
        if opts.nginx_pid.is_some() {
            let (h, n) = (cpu(&hattama_runs, false), cpu(&nginx_runs, true));
            println!("    CPU per photo (median of rounds): Hattama {h:.2} ms, nginx {n:.2} ms");
        }
    }
    println!(
        "  tiny captures ({tiny_avg} bytes, {tk} devices, {:.0} s): {tiny_rate:.0} captures/s; \
         last byte -> receipt p50 {:.2} ms, p99 {:.2} ms",
        opts.tiny_secs,
        ms(last_byte.median),
        ms(last_byte.p99)
    );
    if let Some(rate) = nginx_tiny {
        println!("    (nginx takes {rate:.0} tiny PUTs/s from the same client)");
    }
    println!("  (MB = 10^6 bytes)");
    println!();
    if ratios.is_empty() {
        println!("(ingest_photos_vs_nginx not measured: no nginx)");
    } else {
        ratios.sort_by(f64::total_cmp);
        let mid = ratios.len() / 2;
        let median =
            if ratios.len() % 2 == 1 { ratios[mid] } else { (ratios[mid - 1] + ratios[mid]) / 2.0 };
        report("ingest_photos_vs_nginx", median, Goal::AtLeast(PHOTOS_VS_NGINX));
    }
    report("ingest_tiny_captures_per_s", tiny_rate, Goal::AtLeast(TINY_PER_S));
    Ok(())
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
// The real server.

/// `hattama-server` as a child process (killed on drop), next to this executable as cargo
/// builds them (`cargo build --release -p hattama-server -p hattama-tests`).
struct Server {
    bin: PathBuf,
    data_dir: PathBuf,
    url: String,
    child: Child,
}

impl Server {
    /// Imports election `e2e` (at least 1,000 precincts, one per device), starts serving on a
    /// free port.
    fn start(data_dir: &Path, devices: usize) -> Result<Self> {
        let precincts = devices.max(1000);
        let bin = crate::server::bin()?;
        fs::create_dir_all(data_dir)?;
        let election = data_dir.join("election.json");
        fs::write(
            &election,
            serde_json::to_vec(&hattama_tests::fixtures::election("e2e", precincts))?,
        )?;
        admin(&bin, data_dir, &["election", "import", &election.display().to_string()])?;
        let (url, child) = crate::server::spawn(&bin, data_dir)?;
        Ok(Self { bin, data_dir: data_dir.to_owned(), url, child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
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
            serde_json::from_str(&admin(&self.bin, &self.data_dir, &args)?)?;
        let codes = codes.as_array().context("invite list")?;
        ensure!(codes.len() == k, "{} codes for {k} devices", codes.len());
        let mut devices = Vec::with_capacity(k);
        let mut pinned = None;
        for (d, (code, precinct)) in codes.iter().zip(precincts).enumerate() {
            // Seeds from 100 on: distinct keys; `RawDevice` derives the key from one byte.
            let raw = RawDevice::new(100 + d as u8);
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
            &self.data_dir,
            &["capture", "list", "--json"],
        )?)?;
        Ok(list.as_array().context("capture list")?.len())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs an admin command of `hattama-server` on a data directory; returns its stdout.
fn admin(bin: &Path, data_dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(bin)
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

struct Probe {
    server_pid: u32,
    nginx_pid: Option<u32>,
    /// Major and minor number of the data directory's block device.
    disk: Option<(u64, u64)>,
    ticks_per_s: f64,
}

#[derive(Clone, Copy, Default)]
struct Sample {
    /// CPU seconds of the server, of nginx (master and workers), of this process.
    server: f64,
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
    fn new(data_dir: &Path, server_pid: u32, nginx_pid: Option<u32>) -> Self {
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
        Self { server_pid, nginx_pid, disk, ticks_per_s }
    }

    fn sample(&self) -> Result<Sample> {
        let mut s = Sample {
            server: self.cpu_of(&[self.server_pid])?,
            own: self.cpu_of(&[std::process::id()])?,
            ticks_per_s: self.ticks_per_s,
            ..Sample::default()
        };
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
        let others = busy / u.ticks_per_s - u.server - u.nginx - u.own;
        let mut s = format!(
            "{who} CPU {:.3} ms/upload, client CPU {:.3} ms/upload, machine busy {:.0}% (iowait \
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
