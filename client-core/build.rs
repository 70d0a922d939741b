//! Sets `HATTAMA_VERSION` for `--version`: the package version and the git commit it was built
//! from, `0.1.0 (1a2b3c4)`. The commit is `HATTAMA_COMMIT` when set (builds from a source archive
//! whose packager knows it), else `git rev-parse --short HEAD`, else `unknown`. The server's
//! build uses this same file.

use std::path::Path;
use std::process::Command;

/// The trimmed output of a successful `git` command.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=HATTAMA_COMMIT");
    let commit = std::env::var("HATTAMA_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=HATTAMA_VERSION={version} ({commit})");
    // Run again when HEAD moves: HEAD itself, the branch it names, the packed refs.
    let mut refs = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    refs.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in refs {
        if let Some(path) = git(&["rev-parse", "--git-path", &name])
            && Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
