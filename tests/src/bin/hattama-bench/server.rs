//! The release `hattama-server` the HTTP benches measure: found next to this executable, as
//! cargo builds them (`cargo build --release -p hattama-server -p hattama-tests`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail, ensure};

/// The server binary.
pub fn bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("executable has no directory")?.join("hattama-server");
    ensure!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --release -p hattama-server` (scripts/bench \
         does)",
        bin.display()
    );
    Ok(bin)
}

/// Starts `bin` serving `data_dir` on a free loopback port; returns its URL and the process.
pub fn spawn(bin: &Path, data_dir: &Path) -> Result<(String, Child)> {
    spawn_with(bin, data_dir, &[])
}

/// [`spawn`] with extra environment variables (the storage settings of another backend).
pub fn spawn_with(
    bin: &Path,
    data_dir: &Path,
    env: &[(String, String)],
) -> Result<(String, Child)> {
    let mut child = Command::new(bin)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0", "serve"])
        .env("HATTAMA_LOG", "warn")
        // A bench device sends far more than any observer: the per-device quotas would stop it.
        .env("HATTAMA__LIMITS__MAX_CAPTURES_PER_PRECINCT", "1000000000")
        .env("HATTAMA__LIMITS__MAX_OPEN_UPLOADS", "1000000")
        .env("HATTAMA__LIMITS__MAX_UPLOAD_BYTES_IN_FLIGHT", "1000000000000")
        // The gallery and review benches are one address as busy as a crowd: no per-address
        // limit on pages and photos (0 turns a limit off). Uploads and enrollment keep the
        // defaults, which `ingest` must never meet.
        .env("HATTAMA__RATE_LIMITS__PUBLIC__PER_MINUTE", "0")
        .env("HATTAMA__RATE_LIMITS__PUBLIC__BURST", "0")
        .env("HATTAMA__RATE_LIMITS__EVIDENCE__PER_MINUTE", "0")
        .env("HATTAMA__RATE_LIMITS__EVIDENCE__BURST", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    match line.trim().strip_prefix("listening on ") {
        Some(url) => Ok((url.to_owned(), child)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("hattama-server did not start: {line:?}")
        }
    }
}
