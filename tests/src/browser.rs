//! Browser tests: runs a script of `tests/browser/` (Node.js, playwright-core driving Debian's
//! headless chromium; `scripts/test` installs both) against a running server, so that browser
//! tests are ordinary Rust tests. Screenshots go to `artifacts/screenshots/` at the repository
//! root (gitignored; CI keeps them as test artifacts).

use std::path::PathBuf;
use std::process::Command;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_owned()
}

/// Where screenshots go: `artifacts/screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    repo_root().join("artifacts").join("screenshots")
}

/// Runs `node tests/browser/<script>.mjs URL ARTIFACT_DIR ARGS...` and asserts that it passed,
/// showing its output otherwise.
pub fn run_script(script: &str, url: &str, args: &[&str]) {
    let dir = repo_root().join("tests").join("browser");
    assert!(
        dir.join("node_modules").join("playwright-core").is_dir(),
        "tests/browser/node_modules is missing: scripts/test installs it (npm ci in tests/browser)"
    );
    let chromium = std::env::var("HATTAMA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: scripts/test installs Debian's chromium"
    );
    let out = Command::new("node")
        .arg(dir.join(format!("{script}.mjs")))
        .arg(url)
        .arg(screenshot_dir())
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("run node (scripts/test installs Node.js's npm packages; node must be on PATH)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser script {script} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
}
