//! `hattama-bench log`: the public log's integrator and its two read paths, against baselines
//! measured in the same run.
//!
//! 1. Integration, in-process (release build, the server's own `Log` and `SqliteStorage` on a
//!    data directory on disk, never tmpfs): N stored captures are written straight into the
//!    database before the clock starts, each with its entry queued at its log position as
//!    `commit_capture` stores them, then `Log::integrate_once` runs until all N are in a
//!    published checkpoint: queued entries read, hashed, their stored hashes and the signed
//!    checkpoint committed in one durable transaction, tiles and the checkpoint written as files.
//!    Goal: ≥ 200,000 entries/s. Baseline: the bare RFC 6962 hashing of the same N entries in
//!    memory (each leaf `SHA-256(0x00 || entry)` and every internal node
//!    `SHA-256(0x01 || l || r)`), whose root must equal the root the log signed; the ratio
//!    integrated / baseline is printed (the log does strictly more: SQL, fsync, files).
//! 2. Inclusion proofs: the real release `hattama-server` (next to this executable) serves that
//!    data directory; K keep-alive clients ask `GET /api/v1/log/inclusion/{capture id}` for
//!    random captures for a fixed time: proofs/s, p50 and p99. A sample of the proofs is then
//!    verified against the entries and the log key.
//! 3. Tiles: the same K clients `GET` random full tiles (`/log/tile/0/NNN` hash tiles and
//!    `/log/tile/entries/NNN` entry bundles) from the server and from nginx serving copies of
//!    the same files (`scripts/bench log` starts it on loopback), in alternating rounds.
//!    Goal: the median of the rounds' ratios of requests/s is ≥ 0.5.
//! 4. Witnesses (`docs/witness.md`): three real release `hattama-witness` processes on loopback
//!    under a 2-of-3 policy. The same N captures are stored in two more data directories (off the
//!    clock), then integrated as in 1, the first while the server's witnessing thread
//!    (`witnessing::start`) asks the witnesses to cosign each new published checkpoint, the
//!    second without witnesses (so the witnessed run never profits from going second). Printed:
//!    the time from each
//!    published checkpoint to the first cosigned checkpoint (quorum) covering it, p50 and p99
//!    (both sizes polled every 200 µs). Goal: the integration rate with witnesses is ≥ 0.9 of
//!    the rate without, measured in this run.
//!
//! Both HTTP phases use one minimal HTTP/1.1 keep-alive client (`Conn`), so that the client's
//! own cost, which shares this machine's cores with the servers, is small and the same for both.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use hattama_core::election::Election;
use hattama_core::evidence::{DeviceKey, Sha256Hash};
use hattama_core::log::{self as tlog, ENTRY_VERSION, Hash, LogEntry, LogKey, TlogProof};
use hattama_server::keys::ServerKeys;
use hattama_server::log::Log;
use hattama_server::objects::{LocalObjects, ObjectBackend};
use hattama_server::storage::{SqliteStorage, Storage};
use rusqlite::params;
use sha2::{Digest, Sha256};

use crate::http::Conn;

/// The data directory's objects, as the server keeps them by default.
fn local(dir: &Path) -> Result<Arc<dyn ObjectBackend>> {
    Ok(Arc::new(LocalObjects::new(dir)?))
}
use crate::{Goal, Stats, bench_root, fs_type, report};

pub const USAGE: &str = "hattama-bench log [--entries N] [--clients K] [--secs S] [--rounds R] \
                         [--nginx URL --nginx-root DIR [--nginx-pid PID]] [--dir DIR] \
                         [--integration-only]";

/// The goals.
const INTEGRATED_PER_S: f64 = 200_000.0;
const TILES_VS_NGINX: f64 = 0.5;
const WITNESSED_VS_NOT: f64 = 0.9;
/// The server's default log origin (settings `log_origin`).
const ORIGIN: &str = "hattama.local/log";
/// Devices the stored captures are spread over.
const DEVICES: usize = 16;
/// Proofs fetched and verified after the timed inclusion run.
const VERIFIED_PROOFS: usize = 200;
/// Warm-up before each timed HTTP run.
const WARMUP: Duration = Duration::from_millis(500);

pub struct Options {
    entries: usize,
    clients: usize,
    secs: f64,
    rounds: usize,
    nginx: Option<String>,
    nginx_root: Option<PathBuf>,
    nginx_pid: Option<u32>,
    dir: Option<PathBuf>,
    /// Stop after the integration (to profile it).
    integration_only: bool,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut o = Self {
            entries: 500_000,
            clients: 16,
            secs: 3.0,
            rounds: 3,
            nginx: None,
            nginx_root: None,
            nginx_pid: None,
            dir: None,
            integration_only: false,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().with_context(|| format!("{arg} needs a value\n{USAGE}"));
            match arg.as_str() {
                "--entries" => o.entries = value()?.parse().context("--entries")?,
                "--clients" => o.clients = value()?.parse().context("--clients")?,
                "--secs" => o.secs = value()?.parse().context("--secs")?,
                "--rounds" => o.rounds = value()?.parse().context("--rounds")?,
                "--nginx" => o.nginx = Some(value()?.trim_end_matches('/').to_owned()),
                "--nginx-root" => o.nginx_root = Some(PathBuf::from(value()?)),
                "--nginx-pid" => o.nginx_pid = Some(value()?.parse().context("--nginx-pid")?),
                "--dir" => o.dir = Some(PathBuf::from(value()?)),
                "--integration-only" => o.integration_only = true,
                other => bail!("unknown option {other}\n{USAGE}"),
            }
        }
        ensure!(o.entries >= 1024, "--entries must be at least 1024");
        ensure!((1..=256).contains(&o.clients), "--clients must be 1 to 256");
        ensure!(o.secs > 0.0, "--secs must be positive");
        ensure!(o.rounds >= 1, "--rounds must be at least 1");
        ensure!(
            o.nginx.is_some() == o.nginx_root.is_some(),
            "--nginx and --nginx-root go together (scripts/bench log passes both)"
        );
        Ok(o)
    }
}

pub fn run(opts: &Options) -> Result<()> {
    let root = bench_root(opts.dir.as_deref())?;
    let tmp = tempfile::Builder::new().prefix("hattama-bench-log-").tempdir_in(&root)?;
    println!(
        "bench directory: {} (file system {})",
        tmp.path().display(),
        fs_type(tmp.path()).unwrap_or_else(|| "unknown".into())
    );
    let n = opts.entries;
    let k = opts.clients;
    let secs = Duration::from_secs_f64(opts.secs);
    let data = tmp.path().join("server");

    // --- Stored captures, written before any clock runs ----------------------------------------
    let started = Instant::now();
    let entries = store_captures(&data, n)?;
    sync_fs(&data)?;
    let db_bytes = file_len(&data.join("hattama-server.sqlite3"));
    println!(
        "stored {n} captures straight into the database ({:.0} MB; {:.1} s, off the clock)",
        db_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let entry_bytes: Vec<Vec<u8>> = entries.iter().map(LogEntry::to_bytes).collect();
    let avg_entry = entry_bytes.iter().map(Vec::len).sum::<usize>() / n;

    // --- 1. Integration ------------------------------------------------------------------------
    println!();
    println!("integration: {n} entries of {avg_entry} bytes on average");
    let mut baseline = Vec::new();
    let mut root = None;
    let mut baseline_run = || {
        let t = Instant::now();
        let r = std::hint::black_box(merkle_root(&entry_bytes));
        baseline.push(t.elapsed());
        root = Some(r);
    };
    baseline_run();
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&data, false)?);
    let keys = ServerKeys::load_or_create(&data)?;
    let log_key = LogKey::for_signer(ORIGIN, &keys.log)?;
    let log = Log::open(storage.clone(), keys.log.clone(), ORIGIN, local(&data)?)?;
    let before = cpu_seconds()?;
    let disk_before = DiskSample::of(&data);
    let mut batches = Vec::new();
    let started = Instant::now();
    loop {
        let t = Instant::now();
        let done = log.integrate_once()?;
        if done == 0 {
            break;
        }
        batches.push((done, t.elapsed()));
    }
    let wall = started.elapsed();
    let cpu = cpu_seconds()? - before;
    let disk = DiskSample::of(&data).and_then(|d| d.since(&disk_before));
    baseline_run();
    baseline_run();
    let integrated: usize = batches.iter().map(|(d, _)| d).sum();
    ensure!(integrated == n, "{integrated} entries integrated, {n} stored");
    ensure!(log.published_size() == n as u64, "published size {}", log.published_size());
    let note = fs::read(data.join("log/checkpoint"))?;
    let checkpoint = tlog::verify_checkpoint(&note, &log_key)?;
    ensure!(checkpoint.size == n as u64, "the checkpoint file is for {} entries", checkpoint.size);
    ensure!(Some(checkpoint.root) == root, "the log's root differs from the recomputed root");
    drop(log);
    drop(storage);
    let started = Instant::now();
    let files = check_tiles(&data.join("log"), &entry_bytes)?;
    let checked_in = started.elapsed();
    // A restarted server first loads the tree's right edge (once per process).
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&data, false)?);
    let started = Instant::now();
    let log = Log::open(storage.clone(), keys.log.clone(), ORIGIN, local(&data)?)?;
    ensure!(log.integrate_once()? == 0, "captures left unlogged");
    let restart = started.elapsed();
    drop(log);
    drop(storage);
    let rate = n as f64 / wall.as_secs_f64();
    let batch_times = Stats::of(&batches.iter().map(|(_, t)| *t).collect::<Vec<_>>());
    println!(
        "  Hattama   {:7.3} s  {rate:9.0} entries/s  ({} batches of up to {} entries; batch \
         {batch_times})",
        wall.as_secs_f64(),
        batches.len(),
        batches.iter().map(|(d, _)| *d).max().unwrap_or(0),
    );
    println!(
        "            CPU of this process {:.2} µs/entry{}",
        cpu * 1e6 / n as f64,
        disk.map_or(String::new(), |d| format!(
            "; disk {:.0} bytes and {:.3} flushes per entry",
            d.sectors as f64 * 512.0 / n as f64,
            d.flushes as f64 / n as f64
        ))
    );
    let best = *baseline.iter().min().context("no baseline run")?;
    let baseline_rate = n as f64 / best.as_secs_f64();
    let list: Vec<String> = baseline.iter().map(|t| format!("{:.3}", t.as_secs_f64())).collect();
    println!(
        "  SHA-256   {:7.3} s  {baseline_rate:9.0} entries/s  (leaf and node hashes in memory, \
         fastest of {} runs: {} s)",
        best.as_secs_f64(),
        baseline.len(),
        list.join(" ")
    );
    println!(
        "  checked: the published checkpoint verifies, is for {n} entries, and its root is the \
         recomputed one; all {files} tile files hold the recomputed hashes and entries ({:.1} s)",
        checked_in.as_secs_f64()
    );
    println!(
        "  restart: a new log loaded its edge and found nothing left to log in {:.0} ms (once per \
         process)",
        ms(restart)
    );
    let ratio = rate / baseline_rate;
    println!("  integrated / SHA-256 baseline: {ratio:.3}");

    // --- 4. The same integration with three witnesses cosigning --------------------------------
    println!();
    let witnessed = witnessed_integration(tmp.path(), n)?;
    let w_ratio = witnessed.rate / witnessed.plain_rate;
    println!("  without        {:9.0} entries/s (this phase's fresh copy)", witnessed.plain_rate);
    println!(
        "  with witnesses {:9.0} entries/s  ({:.3} s, {} checkpoints published); with / without: \
         {w_ratio:.3}",
        witnessed.rate,
        witnessed.wall.as_secs_f64(),
        witnessed.quorum.len()
    );
    let q = Stats::of(&witnessed.quorum);
    println!(
        "  checkpoint -> quorum: p50 {:.1} ms, p99 {:.1} ms (max {:.1}); the last checkpoint \
         ({n} entries) cosigned by a quorum {:.1} ms after it was published",
        ms(q.median),
        ms(q.p99),
        ms(q.max),
        ms(witnessed.last)
    );
    if opts.integration_only {
        println!();
        report("log_entries_integrated_per_s", rate, Goal::AtLeast(INTEGRATED_PER_S));
        return Ok(());
    }

    // --- The real server on that data directory ----------------------------------------------
    let server = Server::start(&data)?;
    println!();
    println!(
        "hattama-server: {} (pid {}), data directory on {}",
        server.url,
        server.child.id(),
        fs_type(&data).unwrap_or_else(|| "unknown".into())
    );

    // --- 2. Inclusion proofs -------------------------------------------------------------------
    let ids: Vec<String> = entries.iter().map(|e| e.capture_id.to_hex()).collect();
    let proof_paths: Vec<Target> = ids
        .iter()
        .map(|id| Target { path: format!("/api/v1/log/inclusion/{id}"), len: None })
        .collect();
    println!();
    println!(
        "inclusion proofs: {k} keep-alive clients, random captures of {n}, {:.1} s warm-up then \
         {:.1} s measured",
        WARMUP.as_secs_f64(),
        secs.as_secs_f64()
    );
    let server_pid = [server.child.id().to_string()];
    load(&server.url, k, WARMUP, &proof_paths, false)?;
    let cpu_before = (cpu_of(&server_pid)?, cpu_seconds()?);
    let proofs = load(&server.url, k, secs, &proof_paths, true)?;
    let proof_cpu = (cpu_of(&server_pid)? - cpu_before.0, cpu_seconds()? - cpu_before.1);
    let proof_lat = Stats::of(&proofs.latencies);
    println!(
        "  Hattama  {} proofs in {:.2} s: {:.0} proofs/s; p50 {:.2} ms, p99 {:.2} ms (max {:.2})",
        proofs.count,
        proofs.wall.as_secs_f64(),
        proofs.rate(),
        ms(proof_lat.median),
        ms(proof_lat.p99),
        ms(proof_lat.max)
    );
    let mut conn = Conn::connect(&server.url)?;
    let mut body = Vec::new();
    let mut rng = Rng::new(7);
    for _ in 0..VERIFIED_PROOFS {
        let i = rng.below(n);
        let status = conn.get(&proof_paths[i].path, &[], &mut body)?;
        ensure!(status == 200, "inclusion proof of entry {i}: HTTP {status}");
        let proof = TlogProof::from_text(std::str::from_utf8(&body)?)?;
        ensure!(proof.index == i as u64, "proof of entry {i} is for index {}", proof.index);
        proof.verify(&entries[i], &log_key).with_context(|| format!("proof of entry {i}"))?;
    }
    println!(
        "           server CPU {:.0} µs/proof, client CPU {:.0} µs/proof",
        proof_cpu.0 * 1e6 / proofs.count as f64,
        proof_cpu.1 * 1e6 / proofs.count as f64
    );
    println!("  checked: {VERIFIED_PROOFS} random proofs verify under the log key");

    // --- 3. Tiles ------------------------------------------------------------------------------
    let tiles = full_tiles(&data.join("log"))?;
    let (hash_tiles, bundles) = tiles.iter().fold((0, 0), |(h, b), t| {
        if t.path.contains("/entries/") { (h, b + 1) } else { (h + 1, b) }
    });
    let avg_tile = tiles.iter().map(|t| t.len.unwrap_or(0)).sum::<usize>() / tiles.len().max(1);
    let nginx = match (&opts.nginx, &opts.nginx_root) {
        (Some(url), Some(nginx_root)) => {
            let copied = copy_dir(&data.join("log/tile"), &nginx_root.join("log/tile"))?;
            sync_fs(nginx_root)?;
            println!();
            println!(
                "nginx: {url}, root {} (file system {}), {copied} tile files copied from the data \
                 directory",
                nginx_root.display(),
                fs_type(nginx_root).unwrap_or_else(|| "unknown".into())
            );
            Some(url.clone())
        }
        _ => {
            println!();
            println!("nginx: not given (run `scripts/bench log`): no comparison");
            None
        }
    };
    println!(
        "tiles: {k} keep-alive clients GET random full tiles ({hash_tiles} hash tiles, {bundles} \
         entry bundles; {avg_tile} bytes on average); {} rounds of {:.1} s per server, alternating",
        opts.rounds,
        secs.as_secs_f64()
    );
    let nginx_pids = match opts.nginx_pid {
        Some(pid) => with_children(pid)?,
        None => Vec::new(),
    };
    let mut ratios = Vec::new();
    let mut hattama_rates = Vec::new();
    let mut nginx_rates = Vec::new();
    for r in 0..=opts.rounds {
        let warmup = r == 0;
        let label = if warmup { "warm-up".to_owned() } else { format!("round {r}") };
        let duration = if warmup { WARMUP } else { secs };
        let nginx_first = r % 2 == 1;
        let mut rates = [None, None];
        for side in [nginx_first, !nginx_first] {
            let (who, url) = match (side, &nginx) {
                (true, Some(url)) => ("nginx  ", url),
                (true, None) => continue,
                (false, _) => ("Hattama", &server.url),
            };
            let pids = if side { nginx_pids.clone() } else { server_pid.to_vec() };
            let before = (cpu_of(&pids)?, cpu_seconds()?);
            let run = load(url, k, duration, &tiles, true)?;
            let (cpu, own) = (cpu_of(&pids)? - before.0, cpu_seconds()? - before.1);
            let lat = Stats::of(&run.latencies);
            let per = |s: f64| s * 1e6 / run.count as f64;
            println!(
                "  {label:8} {who}  {:8.0} GETs/s  {:6.1} MB/s  p50 {:.2} ms, p99 {:.2} ms; CPU \
                 {:.0} µs/GET (client {:.0})",
                run.rate(),
                run.bytes as f64 / 1e6 / run.wall.as_secs_f64(),
                ms(lat.median),
                ms(lat.p99),
                per(cpu),
                per(own)
            );
            rates[usize::from(side)] = Some(run.rate());
        }
        if !warmup {
            if let Some(h) = rates[0] {
                hattama_rates.push(h);
            }
            if let (Some(h), Some(g)) = (rates[0], rates[1]) {
                nginx_rates.push(g);
                ratios.push(h / g);
            }
        }
    }
    drop(server);

    // --- Summary -------------------------------------------------------------------------------
    println!();
    println!("summary:");
    println!(
        "  integration ({n} entries): {rate:.0} entries/s; SHA-256 of the same tree \
         {baseline_rate:.0} entries/s; integrated / baseline {ratio:.3}"
    );
    println!(
        "  inclusion proofs ({k} clients): {:.0} proofs/s; p50 {:.2} ms, p99 {:.2} ms",
        proofs.rate(),
        ms(proof_lat.median),
        ms(proof_lat.p99)
    );
    println!("  tile GETs ({k} clients, median of {} rounds):", hattama_rates.len());
    println!("    Hattama  {:8.0} GETs/s", median(&hattama_rates));
    if !ratios.is_empty() {
        println!("    nginx    {:8.0} GETs/s", median(&nginx_rates));
        let list: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!("    Hattama / nginx by round: {}", list.join(" "));
    }
    println!(
        "  witnesses (3, quorum 2): integration {:.0} entries/s against {:.0} without; \
         checkpoint -> quorum p50 {:.1} ms, p99 {:.1} ms",
        witnessed.rate,
        witnessed.plain_rate,
        ms(q.median),
        ms(q.p99)
    );
    println!();
    report("log_entries_integrated_per_s", rate, Goal::AtLeast(INTEGRATED_PER_S));
    report("log_integration_with_witnesses_vs_without", w_ratio, Goal::AtLeast(WITNESSED_VS_NOT));
    if ratios.is_empty() {
        println!("(log_tile_gets_vs_nginx not measured: no nginx)");
    } else {
        report("log_tile_gets_vs_nginx", median(&ratios), Goal::AtLeast(TILES_VS_NGINX));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Witnesses.

/// A release `hattama-witness` serving on loopback (killed on drop).
struct Witness {
    child: Child,
    url: String,
    vkey: String,
}

impl Witness {
    fn start(dir: &Path, name: &str, log_vkey: &str) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let bin = exe.parent().context("executable has no directory")?.join("hattama-witness");
        ensure!(
            bin.is_file(),
            "{} is missing: `cargo build --release -p hattama-witness` (scripts/bench does)",
            bin.display()
        );
        let run = |args: &[&str]| -> Result<String> {
            let out = Command::new(&bin).arg("--data-dir").arg(dir).args(args).output()?;
            ensure!(out.status.success(), "hattama-witness {args:?}: {out:?}");
            Ok(String::from_utf8(out.stdout)?)
        };
        let vkey = run(&["init", "--name", name])?.trim().to_owned();
        run(&["add-log", log_vkey])?;
        let mut child = Command::new(&bin)
            .arg("--data-dir")
            .arg(dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("HATTAMA_LOG", "error")
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().context("witness stdout")?),
            &mut line,
        )?;
        let url = line.trim().strip_prefix("listening on ").map(str::to_owned);
        match url {
            Some(url) => Ok(Self { child, url, vkey }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("hattama-witness did not start: {line:?}")
            }
        }
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// When each size was first seen.
type Sightings = Vec<(u64, Instant)>;

struct WitnessedRun {
    /// The rate of the same integration without witnesses, on a copy stored alike.
    plain_rate: f64,
    wall: Duration,
    rate: f64,
    /// For each published checkpoint, the time until a cosigned one covering it.
    quorum: Vec<Duration>,
    /// That time for the last one.
    last: Duration,
}

/// Stores `n` captures in a new data directory under `root` and integrates them as phase 1 does,
/// with the witnessing thread asking three local witnesses (quorum 2) to cosign every new
/// checkpoint.
fn witnessed_integration(root: &Path, n: usize) -> Result<WitnessedRun> {
    let data = root.join("witnessed");
    let plain = root.join("plain");
    let started = Instant::now();
    store_captures(&plain, n)?;
    store_captures(&data, n)?;
    sync_fs(&data)?;
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&data, false)?);
    let keys = ServerKeys::load_or_create(&data)?;
    let log_key = LogKey::for_signer(ORIGIN, &keys.log)?;
    let witnesses = ["bench.witness/a", "bench.witness/b", "bench.witness/c"]
        .iter()
        .enumerate()
        .map(|(i, name)| Witness::start(&root.join(format!("witness-{i}")), name, &log_key.vkey))
        .collect::<Result<Vec<_>>>()?;
    let mut policy = format!("log {}\n", log_key.vkey);
    for (name, w) in ["A", "B", "C"].iter().zip(&witnesses) {
        policy += &format!("witness {name} {} {}\n", w.vkey, w.url);
    }
    policy += "group Q 2 A B C\nquorum Q\n";
    let policy = hattama_core::witness::Policy::parse(policy.as_bytes())?;
    println!(
        "witnesses: 3 release hattama-witness processes on loopback ({}), quorum 2; {n} captures \
         stored again in two data directories ({:.1} s, off the clock)",
        witnesses.iter().map(|w| w.url.as_str()).collect::<Vec<_>>().join(", "),
        started.elapsed().as_secs_f64()
    );
    let log = Log::open(storage.clone(), keys.log.clone(), ORIGIN, local(&data)?)?;
    hattama_server::witnessing::start(log.clone(), policy.clone(), Duration::from_secs(3))?;
    // One thread notes when each size is first published and first cosigned with a quorum.
    let cosigned_file = data.join(hattama_server::witnessing::COSIGNED_KEY);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (log, done, policy) = (log.clone(), done.clone(), policy.clone());
        let key = log_key.clone();
        thread::spawn(move || -> Result<(Sightings, Sightings)> {
            let (mut published, mut cosigned) = (Vec::new(), Vec::new());
            let deadline = || Instant::now() + Duration::from_secs(60);
            let mut give_up = deadline();
            loop {
                let p = log.published_size();
                if published.last().is_none_or(|(s, _)| *s < p) {
                    published.push((p, Instant::now()));
                }
                if let Ok(note) = fs::read(&cosigned_file) {
                    let w = hattama_core::witness::check_witnessed(&policy, &key, &note)
                        .map_err(|e| anyhow!("the cosigned checkpoint: {e}"))?;
                    let size = w.checkpoint.size;
                    if cosigned.last().is_none_or(|(s, _)| *s < size) {
                        cosigned.push((size, Instant::now()));
                    }
                }
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                if finished && cosigned.last().is_some_and(|(s, _)| *s == n as u64) {
                    return Ok((published, cosigned));
                }
                if !finished {
                    give_up = deadline();
                }
                ensure!(Instant::now() < give_up, "no quorum for the last checkpoint in 60 s");
                thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let started = Instant::now();
    let mut integrated = 0;
    loop {
        let d = log.integrate_once()?;
        if d == 0 {
            break;
        }
        integrated += d;
    }
    let wall = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    ensure!(integrated == n, "{integrated} entries integrated with witnesses, {n} stored");
    let (published, cosigned) =
        watcher.join().map_err(|_| anyhow!("the witness watcher panicked"))??;
    let mut quorum = Vec::new();
    for (size, at) in &published {
        let (_, when) = cosigned
            .iter()
            .find(|(s, _)| s >= size)
            .context("a published checkpoint was never cosigned")?;
        quorum.push(when.saturating_duration_since(*at));
    }
    let last = *quorum.last().context("no checkpoint published")?;
    drop(witnesses);
    // The same integration without witnesses, second (a first run is never favoured).
    let plain_rate = {
        let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&plain, false)?);
        let keys = ServerKeys::load_or_create(&plain)?;
        let log = Log::open(storage, keys.log.clone(), ORIGIN, local(&plain)?)?;
        let started = Instant::now();
        let mut integrated = 0;
        loop {
            let d = log.integrate_once()?;
            if d == 0 {
                break;
            }
            integrated += d;
        }
        ensure!(integrated == n, "{integrated} entries integrated, {n} stored");
        n as f64 / started.elapsed().as_secs_f64()
    };
    Ok(WitnessedRun { plain_rate, wall, rate: n as f64 / wall.as_secs_f64(), quorum, last })
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let mid = s.len() / 2;
    if s.len() % 2 == 1 { s[mid] } else { (s[mid - 1] + s[mid]) / 2.0 }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// The stored captures.

/// Creates a data directory with election `e2e`, `DEVICES` enrolled devices and `n` stored
/// captures (no photo files: the log never reads them), written with one SQLite transaction
/// straight into the server's tables, each with its entry queued at its log position as
/// `commit_capture` writes them. Returns the captures' log entries in the order they were stored,
/// which is the order the integrator logs them in.
fn store_captures(data: &Path, n: usize) -> Result<Vec<LogEntry>> {
    let precincts = 1000;
    let election = Election::from_json(&serde_json::to_vec(&hattama_tests::fixtures::election(
        "e2e", precincts,
    ))?)?;
    let storage = SqliteStorage::open(data, false)?;
    storage.import_election(&election, 1)?;
    let mut devices = Vec::new();
    for d in 0..DEVICES {
        let precinct = hattama_tests::fixtures::precinct_id(d + 1);
        let code = storage.create_invites("e2e", std::slice::from_ref(&precinct), 1, 1)?;
        let key = DeviceKey(Sha256Hash::of(format!("bench device {d}").as_bytes()).0);
        let device = storage
            .enroll(&code[0], &key, 1)?
            .map_err(|refusal| anyhow!("enrollment refused: {refusal:?}"))?;
        devices.push((device.id, precinct));
    }
    drop(storage);

    let mut conn = rusqlite::Connection::open(data.join("hattama-server.sqlite3"))?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "cache_size", -262_144)?;
    let tx = conn.transaction()?;
    let mut entries = Vec::with_capacity(n);
    {
        let mut insert = tx.prepare(
            "INSERT INTO captures (id, device_id, seq, election, precinct, manifest, signature,
                photo_sha256, photo_bytes, media_type, received_at_ms, receipt, log_index)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        // As `commit_capture` does: the capture's entry queued at its log position.
        let mut queue = tx.prepare("INSERT INTO log_entries (idx, entry) VALUES (?1, ?2)")?;
        // Sizes of a real capture's canonical manifest and signed receipt.
        let mut manifest = vec![b'm'; 700];
        let receipt = vec![b'r'; 450];
        let signature = [7u8; 64];
        let start_ms = 1_760_000_000_000u64;
        for i in 0..n {
            let (device, precinct) = &devices[i % DEVICES];
            manifest[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let id = Sha256Hash::of(&manifest);
            let photo = Sha256Hash::of(&(i as u64).to_le_bytes());
            // Stored one after the other, as their receipts' times say.
            let received = start_ms + i as u64;
            insert.execute(params![
                id.to_hex(),
                device,
                (i / DEVICES) as i64,
                "e2e",
                precinct,
                manifest,
                signature.as_slice(),
                photo.to_hex(),
                2_000_000i64,
                "image/jpeg",
                received as i64,
                receipt,
                i as i64,
            ])?;
            let entry = LogEntry {
                capture_id: id,
                election: "e2e".into(),
                photo_sha256: photo,
                precinct: precinct.clone(),
                received_at_ms: received,
                v: ENTRY_VERSION,
            };
            queue.execute(params![i as i64, entry.to_bytes()])?;
            entries.push(entry);
        }
    }
    tx.commit()?;
    conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
    drop(conn);
    Ok(entries)
}

// ---------------------------------------------------------------------------------------------
// The baseline: RFC 6962 hashing in memory.

fn leaf(entry: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

fn node(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

/// The RFC 6962 root of the entries, hashing each leaf and each internal node once, as an
/// append-only log does (a stack of the roots of the complete subtrees, merged as they fill).
fn merkle_root(entries: &[Vec<u8>]) -> Hash {
    let mut stack: Vec<[u8; 32]> = Vec::with_capacity(64);
    for (i, e) in entries.iter().enumerate() {
        let mut h = leaf(e);
        let mut size = i + 1;
        while size & 1 == 0 {
            let l = stack.pop().unwrap_or_default();
            h = node(&l, &h);
            size >>= 1;
        }
        stack.push(h);
    }
    // The root of an incomplete tree folds the complete subtrees from the right.
    let mut root = stack.pop().unwrap_or_default();
    while let Some(l) = stack.pop() {
        root = node(&l, &root);
    }
    Hash(root)
}

/// Checks every tile file under a log directory (full and partial, hash tiles of every level
/// and entry bundles) against the tree recomputed from the entries; returns how many files.
fn check_tiles(log_dir: &Path, entries: &[Vec<u8>]) -> Result<usize> {
    // levels[k][j]: the hash of the complete subtree of height k over leaves j·2^k … (j+1)·2^k − 1.
    let mut levels: Vec<Vec<[u8; 32]>> = vec![entries.iter().map(|e| leaf(e)).collect()];
    while levels[levels.len() - 1].len() >= 2 {
        let below = &levels[levels.len() - 1];
        let up = below.chunks_exact(2).map(|p| node(&p[0], &p[1])).collect();
        levels.push(up);
    }
    let mut checked = 0;
    let mut stack = vec![log_dir.join("tile")];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir)? {
            let path = e?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(log_dir.join("tile"))?.to_string_lossy().into_owned();
            let (main, width) = match rel.split_once(".p/") {
                Some((m, w)) => (m, w.parse::<usize>().with_context(|| format!("tile {rel}"))?),
                None => (rel.as_str(), 256),
            };
            let (level, number) = main.split_once('/').with_context(|| format!("tile {rel}"))?;
            let number: usize = number.replace(['x', '/'], "").parse().context("tile number")?;
            let data = fs::read(&path)?;
            let start = number * 256;
            let end = start + width;
            if level == "entries" {
                let want = tlog::entry_bundle(
                    entries
                        .get(start..end)
                        .context("bundle past the end")?
                        .iter()
                        .map(Vec::as_slice),
                );
                ensure!(data == want, "entry bundle {rel} differs");
            } else {
                let height = 8 * level.parse::<usize>().context("tile level")?;
                let want = levels
                    .get(height)
                    .and_then(|l| l.get(start..end))
                    .with_context(|| format!("tile {rel} past the end"))?
                    .concat();
                ensure!(data == want, "hash tile {rel} differs");
            }
            checked += 1;
        }
    }
    Ok(checked)
}

// ---------------------------------------------------------------------------------------------
// The real server.

/// `hattama-server` as a child process (killed on drop), next to this executable as cargo
/// builds them (`cargo build --release -p hattama-server -p hattama-tests`).
struct Server {
    url: String,
    child: Child,
}

impl Server {
    fn start(data_dir: &Path) -> Result<Self> {
        let (url, child) = crate::server::spawn(&crate::server::bin()?, data_dir)?;
        Ok(Self { url, child })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Load: K keep-alive clients for a fixed time.

/// A path to GET, and the length its body must have, if known.
struct Target {
    path: String,
    len: Option<usize>,
}

/// The full tiles (`tile/0/…` and `tile/entries/…`, no partial ones) under a log directory.
fn full_tiles(log_dir: &Path) -> Result<Vec<Target>> {
    let mut out = Vec::new();
    let mut stack = vec![log_dir.join("tile/0"), log_dir.join("tile/entries")];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let e = e?;
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type()?.is_dir() {
                if name.starts_with('x') {
                    stack.push(path);
                }
            } else if !name.contains(".p") && !name.contains("tmp") {
                let rel = path.strip_prefix(log_dir)?.to_string_lossy().into_owned();
                out.push(Target {
                    path: format!("/log/{rel}"),
                    len: Some(e.metadata()?.len() as usize),
                });
            }
        }
    }
    ensure!(!out.is_empty(), "no full tiles under {}", log_dir.display());
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

struct LoadRun {
    count: usize,
    bytes: usize,
    wall: Duration,
    latencies: Vec<Duration>,
}

impl LoadRun {
    fn rate(&self) -> f64 {
        self.count as f64 / self.wall.as_secs_f64()
    }
}

/// `k` clients, one thread and one keep-alive connection each, GET random targets for
/// `duration`; every answer must be 200 (and of the target's length, when known).
fn load(
    url: &str,
    k: usize,
    duration: Duration,
    targets: &[Target],
    timed: bool,
) -> Result<LoadRun> {
    let barrier = Barrier::new(k + 1);
    thread::scope(|s| {
        let handles: Vec<_> = (0..k)
            .map(|c| {
                let barrier = &barrier;
                s.spawn(move || -> Result<(usize, usize, Vec<Duration>)> {
                    // Connected before the clock starts; an error is reported after the release,
                    // so that the other threads are not left waiting.
                    let conn = Conn::connect(url);
                    barrier.wait();
                    let mut conn = conn?;
                    let mut rng = Rng::new(c as u64 + 1);
                    let mut body = Vec::new();
                    let mut latencies = Vec::with_capacity(if timed { 1 << 16 } else { 0 });
                    let (mut count, mut bytes) = (0, 0);
                    let deadline = Instant::now() + duration;
                    loop {
                        let t = Instant::now();
                        if t >= deadline {
                            break;
                        }
                        let target = &targets[rng.below(targets.len())];
                        let status = conn.get(&target.path, &[], &mut body)?;
                        ensure!(status == 200, "GET {}: HTTP {status}", target.path);
                        if let Some(len) = target.len {
                            ensure!(
                                body.len() == len,
                                "GET {}: {} bytes, not {len}",
                                target.path,
                                body.len()
                            );
                        }
                        if timed {
                            latencies.push(t.elapsed());
                        }
                        count += 1;
                        bytes += body.len();
                    }
                    Ok((count, bytes, latencies))
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut run = LoadRun { count: 0, bytes: 0, wall: Duration::ZERO, latencies: Vec::new() };
        for h in handles {
            let (count, bytes, latencies) =
                h.join().map_err(|_| anyhow!("a client panicked"))??;
            run.count += count;
            run.bytes += bytes;
            run.latencies.extend(latencies);
        }
        run.wall = start.elapsed();
        ensure!(run.count > 0, "no request completed");
        Ok(run)
    })
}

/// xorshift64*: cheap, reproducible picks.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as usize % n
    }
}

// ---------------------------------------------------------------------------------------------
// Files, CPU, disk.

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// Copies a directory tree; returns how many files.
fn copy_dir(from: &Path, to: &Path) -> Result<usize> {
    fs::create_dir_all(to)?;
    let mut n = 0;
    for e in fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            n += copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else {
            fs::copy(e.path(), to.join(e.file_name()))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Writes back every dirty page of the file system holding `path` (`sync -f`).
fn sync_fs(path: &Path) -> Result<()> {
    let status = Command::new("sync").arg("-f").arg(path).status().context("run sync")?;
    ensure!(status.success(), "sync -f {} failed", path.display());
    Ok(())
}

/// CPU seconds (user and system) this process used so far.
fn cpu_seconds() -> Result<f64> {
    cpu_of(&["self".to_owned()])
}

/// CPU seconds (user and system) these processes (`/proc/<pid>`) used so far; a process that
/// is gone counts 0.
fn cpu_of(pids: &[String]) -> Result<f64> {
    let mut ticks = 0;
    for pid in pids {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let fields: Vec<&str> =
            stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        // After the command: state(0) ppid(1) … utime(11) stime(12).
        ensure!(fields.len() > 12, "unexpected /proc/{pid}/stat");
        ticks += fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    }
    Ok(ticks as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// A process and its children (nginx: the master and its workers).
fn with_children(pid: u32) -> Result<Vec<String>> {
    let mut out = vec![pid.to_string()];
    for entry in fs::read_dir("/proc")? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if ppid == Some(pid.to_string().as_str()) {
            out.push(name);
        }
    }
    Ok(out)
}

/// Sectors written and flushes of the block device holding a path (`/proc/diskstats`).
struct DiskSample {
    sectors: u64,
    flushes: u64,
}

impl DiskSample {
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let dev = fs::metadata(path).ok()?.dev();
        let (major, minor) =
            ((dev >> 8) & 0xfff | (dev >> 32) & !0xfff, dev & 0xff | (dev >> 12) & !0xff);
        let stats = fs::read_to_string("/proc/diskstats").ok()?;
        stats.lines().find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() >= 20 && f[0].parse() == Ok(major) && f[1].parse() == Ok(minor)).then(|| {
                let n = |i: usize| f[i].parse::<u64>().unwrap_or(0);
                Self { sectors: n(9), flushes: n(18) }
            })
        })
    }

    fn since(self, before: &Option<Self>) -> Option<Self> {
        let b = before.as_ref()?;
        Some(Self { sectors: self.sectors - b.sectors, flushes: self.flushes - b.flushes })
    }
}
