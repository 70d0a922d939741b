//! `hattama-server demo` as a child process on a random port: the demo election, simulated
//! observers who photographed and synced real captures through the core, coordinators' reviews
//! and two versions of official results. Pages tested on it show what a user would see.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::bin;

/// The demo election's id.
pub const ELECTION: &str = "kz-demo-2026";

/// A running, fully seeded demo (killed on drop).
pub struct Demo {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Demo {
    /// Starts the demo with `precincts` stations and `devices` observers, and waits until it has
    /// seeded everything (it prints the addresses then).
    pub fn start(precincts: usize, devices: usize) -> Self {
        Self::start_with(precincts, devices, &[])
    }

    /// [`Demo::start`] with more arguments of `hattama-server demo` (`--photo-width 3000`).
    pub fn start_with(precincts: usize, devices: usize, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(bin("hattama-server"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "demo", "--precincts"])
            .arg(precincts.to_string())
            .arg("--devices")
            .arg(devices.to_string())
            .args(args)
            .env("HATTAMA_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn hattama-server demo");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut url = None;
        for line in lines.by_ref() {
            let line = line.expect("read the demo's output");
            if let Some(u) = line.strip_prefix("listening on ") {
                url = Some(u.trim().to_owned());
            }
            if line.trim_start().starts_with("public gallery") {
                break;
            }
        }
        let url = url.expect("the demo printed its address");
        // Keep reading (and dropping) its output so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { url, child, _dir: dir }
    }

    /// Its data directory (for the admin commands, e.g. `invite create`).
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// A JSON answer of the public API (`path` starts with `/`).
    pub fn json(&self, path: &str) -> Value {
        let r = reqwest::blocking::get(format!("{}{path}", self.url)).expect("GET");
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().expect("JSON")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
