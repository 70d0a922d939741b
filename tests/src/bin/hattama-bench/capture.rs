//! `hattama-bench capture [--iterations N] [--warmup N] [--dir DIR]` measures, on a realistic
//! 12-megapixel camera JPEG (about 4 MB, with an EXIF block to strip):
//! - capture latency: `Client::capture` against "SHA-256 + write a new file + fsync", each
//!   baseline iteration interleaved with a capture iteration (goal: ratio of medians ≤ 2.0);
//! - peak memory of one `Client::capture_file` in a fresh process, against the bound
//!   `3 × photo size + 16 MB` (goal: ≤ 1.0) and against a process that only reads, hashes and
//!   writes the photo durably;
//! - thumbnail latency: `Client::thumbnail` (cache removed each time) against a bare 1/8-scale
//!   decode of the same stored photo (goal: ratio of medians ≤ 1.2);
//! - the panic wipe of a store of 1,000 captures (with 100 thumbnails): the time until it is
//!   unreadable (its key destroyed) and until every file is gone (goal: unreadable ≤ 1 s).
//!
//! The store is encrypted (SQLCipher, sealed photo files), so the capture latency includes the
//! encryption: goal ≤ 1.5 of the baseline, which writes the photo in the clear.
//!
//! The hidden modes `capture-child PHOTO STORE` and `baseline-child PHOTO DIR` are the child
//! processes of the peak-memory measurement; each does its work once and prints its `VmHWM`.

use std::fs::{self, File};
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hattama_core::evidence::{CoarseLocation, EvidenceKind, Page};
use hattama_core::{CaptureRequest, Client, ClientConfig, thumbnail};
use sha2::{Digest, Sha256};

use crate::photo::{HEIGHT, WIDTH, first_quant_table, make_photo, make_variant};
use crate::{Goal, Stats, bench_root, fs_type, ratio, report};

pub const USAGE: &str = "hattama-bench capture [--iterations N] [--warmup N] [--dir DIR]";

pub struct Options {
    iterations: usize,
    warmup: usize,
    dir: Option<PathBuf>,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut o = Self { iterations: 30, warmup: 3, dir: None };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().with_context(|| format!("{arg} needs a value\n{USAGE}"));
            match arg.as_str() {
                "--iterations" => o.iterations = value()?.parse().context("--iterations")?,
                "--warmup" => o.warmup = value()?.parse().context("--warmup")?,
                "--dir" => o.dir = Some(PathBuf::from(value()?)),
                other => bail!("unknown option {other}\n{USAGE}"),
            }
        }
        ensure!(o.iterations >= 1, "--iterations must be at least 1");
        Ok(o)
    }
}

// ---------------------------------------------------------------------------------------------
// The benchmark.

pub fn run(opts: &Options) -> Result<()> {
    let root = bench_root(opts.dir.as_deref())?;
    let tmp = tempfile::Builder::new().prefix("hattama-bench-").tempdir_in(&root)?;
    println!(
        "bench directory: {} (file system {})",
        tmp.path().display(),
        fs_type(tmp.path()).unwrap_or_else(|| "unknown".into())
    );

    let started = Instant::now();
    let (mut photo, quality, exif_len) = make_photo()?;
    println!(
        "photo: {WIDTH}x{HEIGHT} JPEG, quality {quality}, {} bytes ({:.2} MiB), EXIF APP1 {} bytes \
         (generated in {:.1} s)",
        photo.len(),
        photo.len() as f64 / 1048576.0,
        exif_len,
        started.elapsed().as_secs_f64()
    );
    let dqt = first_quant_table(&photo)?;
    let photo_path = tmp.path().join("photo.jpg");
    fs::write(&photo_path, &photo)?;

    // --- Capture latency -------------------------------------------------------------------
    let store_dir = tmp.path().join("store");
    let client = Client::open(&store_dir, &hattama_tests::test_key(), ClientConfig::default())?;
    let baseline_dir = tmp.path().join("baseline");
    fs::create_dir_all(&baseline_dir)?;
    let request = request();
    let mut capture_times = Vec::new();
    let mut baseline_times = Vec::new();
    let mut last_id = None;
    for i in 0..opts.warmup + opts.iterations {
        // Each iteration gets a distinct photo (two quantization entries differ), as real captures
        // are: the blob store skips a write when the same photo is already stored.
        make_variant(&mut photo, dqt, i);
        let run_capture = |photo: &[u8]| -> Result<(Duration, hattama_core::Captured)> {
            let t = Instant::now();
            let captured = client.capture(photo, &request)?;
            Ok((t.elapsed(), captured))
        };
        let run_baseline = |photo: &[u8]| -> Result<Duration> {
            let t = Instant::now();
            let digest = Sha256::digest(photo);
            let mut f = File::create(baseline_dir.join(format!("{i}.jpg")))?;
            f.write_all(photo)?;
            f.sync_all()?;
            black_box(digest);
            Ok(t.elapsed())
        };
        // Alternate which goes first so that neither always follows the other's writeback.
        let (c, b) = if i.is_multiple_of(2) {
            let c = run_capture(&photo)?;
            (c, run_baseline(&photo)?)
        } else {
            let b = run_baseline(&photo)?;
            (run_capture(&photo)?, b)
        };
        if i == 0 {
            println!(
                "first capture: seq {}, stored {} bytes, removed {} bytes of metadata",
                c.1.seq, c.1.manifest.photo.bytes, c.1.removed_bytes
            );
        }
        if i >= opts.warmup {
            capture_times.push(c.0);
            baseline_times.push(b);
        }
        last_id = Some(c.1.id);
    }
    let id = last_id.context("no capture was made")?;
    // Every capture wrote its own blob (none was skipped as already stored).
    let hashes: std::collections::HashSet<_> =
        client.list()?.into_iter().filter_map(|r| r.photo.map(|(hash, _, _)| hash)).collect();
    let blobs = client.store().blobs();
    ensure!(
        hashes.len() == opts.warmup + opts.iterations
            && hashes.iter().all(|h| blobs.path(h).is_file()),
        "the store does not hold one distinct photo per capture"
    );
    let capture = Stats::of(&capture_times);
    let baseline = Stats::of(&baseline_times);
    println!();
    println!(
        "capture latency ({} iterations after {} warm-ups, interleaved):",
        opts.iterations, opts.warmup
    );
    println!("  Client::capture              {capture}");
    println!("  baseline sha256+write+fsync  {baseline}");
    let capture_ratio = ratio(capture.median, baseline.median);

    // --- Peak memory -----------------------------------------------------------------------
    println!();
    println!("peak memory (VmHWM of a fresh process doing one operation, 3 runs each):");
    let mut capture_peaks = Vec::new();
    let mut baseline_peaks = Vec::new();
    for run in 0..3 {
        let store = tmp.path().join(format!("child-store-{run}"));
        let dir = tmp.path().join(format!("child-baseline-{run}"));
        fs::create_dir_all(&dir)?;
        capture_peaks.push(run_child("capture-child", &photo_path, &store)?);
        baseline_peaks.push(run_child("baseline-child", &photo_path, &dir)?);
    }
    let show = |peaks: &[Hwm]| {
        peaks
            .iter()
            .map(|h| format!("{} kB (at start {} kB)", h.peak_kb, h.start_kb))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("  capture-child   {}", show(&capture_peaks));
    println!("  baseline-child  {}", show(&baseline_peaks));
    let capture_peak = capture_peaks.iter().map(|h| h.peak_kb).max().unwrap_or(0);
    let baseline_peak = baseline_peaks.iter().map(|h| h.peak_kb).max().unwrap_or(0);
    let photo_kb = photo.len() as f64 / 1024.0;
    let bound_kb = 3.0 * photo_kb + 16.0 * 1024.0;
    println!(
        "  capture peak {capture_peak} kB; baseline peak {baseline_peak} kB; \
         bound 3 x {photo_kb:.0} kB + 16384 kB = {bound_kb:.0} kB"
    );
    println!(
        "  capture peak / baseline peak = {:.2}",
        capture_peak as f64 / baseline_peak.max(1) as f64
    );
    let memory_ratio = capture_peak as f64 / bound_kb;

    // --- Thumbnail ---------------------------------------------------------------------------
    let hex = id.to_hex();
    let stored = client.photo(&hex)?;
    let (full_w, full_h) = (WIDTH, HEIGHT);
    // decode_reduced picks scale = clamp(longest side / target, 1, 8): this target gives 1/8.
    let target = full_w.max(full_h) / 8;
    let reduced = thumbnail::decode_reduced(&stored, target).map_err(anyhow::Error::msg)?;
    ensure!(
        (reduced.width(), reduced.height()) == (full_w / 8, full_h / 8),
        "baseline decode is {}x{}, not 1/8 scale",
        reduced.width(),
        reduced.height()
    );
    let thumb_path = client.store().blobs().thumb_path(&id);
    let mut thumb_times = Vec::new();
    let mut decode_times = Vec::new();
    let mut thumb_len = 0;
    for i in 0..opts.warmup + opts.iterations {
        let run_thumb = || -> Result<(Duration, usize)> {
            client.store().blobs().remove_thumb(&id)?;
            ensure!(!thumb_path.exists(), "the cached thumbnail was not removed");
            let t = Instant::now();
            let thumb = client.thumbnail(&hex)?;
            Ok((t.elapsed(), thumb.len()))
        };
        let run_decode = || -> Result<Duration> {
            let t = Instant::now();
            let image = thumbnail::decode_reduced(&stored, target).map_err(anyhow::Error::msg)?;
            let elapsed = t.elapsed();
            black_box(image);
            Ok(elapsed)
        };
        let (t, d) = if i.is_multiple_of(2) {
            let t = run_thumb()?;
            (t, run_decode()?)
        } else {
            let d = run_decode()?;
            (run_thumb()?, d)
        };
        thumb_len = t.1;
        if i >= opts.warmup {
            thumb_times.push(t.0);
            decode_times.push(d);
        }
    }
    ensure!(thumb_path.exists(), "Client::thumbnail did not cache its result");
    let thumb = Stats::of(&thumb_times);
    let decode = Stats::of(&decode_times);
    println!();
    println!(
        "thumbnail latency ({} iterations after {} warm-ups, interleaved; thumbnail {} bytes):",
        opts.iterations, opts.warmup, thumb_len
    );
    println!("  Client::thumbnail (uncached)  {thumb}");
    println!("  baseline 1/8 decode ({}x{})  {decode}", reduced.width(), reduced.height());
    let thumb_ratio = ratio(thumb.median, decode.median);

    // --- Wipe ------------------------------------------------------------------------------
    let wipe_dir = tmp.path().join("wipe-store");
    let wiped = {
        let client = Client::open(&wipe_dir, &hattama_tests::test_key(), ClientConfig::default())?;
        let started = Instant::now();
        for i in 0..1000u32 {
            let small = hattama_tests::textured_jpeg(96, 72, i + 1, 80);
            let captured = client.capture(&small, &request)?;
            if i % 10 == 0 {
                client.thumbnail(&captured.id.to_hex())?;
            }
        }
        println!();
        println!("wipe: 1,000 captures made in {:.1} s", started.elapsed().as_secs_f64());
        drop(client);
        hattama_core::store::wipe(&wipe_dir)?
    };
    ensure!(!wipe_dir.exists(), "the wiped store is still there");
    println!(
        "  unreadable after {:.2} ms (key destroyed), every file removed after {:.1} ms",
        wiped.erased_after.as_secs_f64() * 1e3,
        wiped.removed_after.as_secs_f64() * 1e3
    );

    println!();
    report("capture_latency", capture_ratio, Goal::AtMost(1.5));
    report("peak_memory_vs_bound", memory_ratio, Goal::AtMost(1.0));
    report("thumbnail", thumb_ratio, Goal::AtMost(1.2));
    report("wipe_unreadable_seconds", wiped.erased_after.as_secs_f64(), Goal::AtMost(1.0));
    Ok(())
}

fn request() -> CaptureRequest {
    CaptureRequest {
        election: "2026-parliament".into(),
        precinct: "12-045-0173".into(),
        kind: EvidenceKind::Posted,
        page: Page { count: 2, number: 1 },
        note: Some("posted at 21:40 on the notice board by the entrance".into()),
        transcription: None,
        location: Some(CoarseLocation { lat_e2: 4171, lon_e2: 4479 }),
        utc_offset_min: 240,
    }
}

// ---------------------------------------------------------------------------------------------
// Peak memory: child processes.

pub enum ChildMode {
    Capture,
    Baseline,
}

struct Hwm {
    start_kb: u64,
    peak_kb: u64,
}

fn run_child(mode: &str, photo: &Path, dir: &Path) -> Result<Hwm> {
    let out = Command::new(std::env::current_exe()?).arg(mode).arg(photo).arg(dir).output()?;
    ensure!(
        out.status.success(),
        "{mode} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout)?;
    let field = |name: &str| -> Result<u64> {
        stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .with_context(|| format!("{mode} printed no {name}: {stdout}"))?
            .parse()
            .with_context(|| format!("{mode} printed a bad {name}: {stdout}"))
    };
    Ok(Hwm { start_kb: field("start_kb=")?, peak_kb: field("peak_kb=")? })
}

pub fn child(mode: ChildMode, args: &[String]) -> Result<()> {
    let [photo, dir] = args else {
        bail!("usage: hattama-bench {{capture,baseline}}-child PHOTO DIR")
    };
    let (photo, dir) = (Path::new(photo), Path::new(dir));
    let start_kb = vm_hwm_kb()?;
    match mode {
        ChildMode::Capture => {
            let client = Client::open(dir, &hattama_tests::test_key(), ClientConfig::default())?;
            let captured = client.capture_file(photo, &request())?;
            black_box(captured);
        }
        ChildMode::Baseline => {
            let bytes = fs::read(photo)?;
            let digest = Sha256::digest(&bytes);
            let mut f = File::create(dir.join("photo.jpg"))?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            black_box(digest);
        }
    }
    println!("start_kb={start_kb} peak_kb={}", vm_hwm_kb()?);
    Ok(())
}

/// This process's peak resident set size (`VmHWM` in `/proc/self/status`), in kB.
fn vm_hwm_kb() -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("no VmHWM")?;
    let kb = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim();
    Ok(kb.parse()?)
}
