//! The real `hattama-server` as a child process on a random port, with its own data directory,
//! and its admin commands: for the tests where a process must die (SIGKILL), pause at a pause
//! point, run under a umask, load TLS files or print something the test reads. Tests that only
//! talk HTTP run the app in their own process instead (`crate::app`, `tests/api.rs`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};

use serde_json::Value;

use crate::backend::{Backend, server_command};
use crate::{Run, bin};

/// A running server (killed on drop).
pub struct TestServer {
    /// Its data directory.
    pub data_dir: PathBuf,
    /// `http://127.0.0.1:PORT` (`https://…` with `[tls]`).
    pub url: String,
    /// The bound address.
    pub addr: std::net::SocketAddr,
    child: Child,
    _dir: Option<tempfile::TempDir>,
}

/// Runs an admin command of `hattama-server` on a data directory.
pub fn admin(data_dir: &Path, args: &[&str]) -> Run {
    server_command(data_dir).args(args).output().expect("run hattama-server").into()
}

impl TestServer {
    /// Starts a server on a fresh data directory with the election `e2e` of `precincts` stations.
    pub fn start_with_election(precincts: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().to_owned();
        import_election(&data_dir, &crate::fixtures::election("e2e", precincts));
        let mut s = Self::start_on(&data_dir, "127.0.0.1:0");
        s._dir = Some(dir);
        s
    }

    /// Starts a server on a fresh data directory with this election definition and these
    /// extra environment variables (e.g. `HATTAMA__REVIEW__SESSION_TTL_SECS`).
    pub fn start_with(election: &Value, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().to_owned();
        import_election(&data_dir, election);
        let mut s = Self::spawn_with(&data_dir, "127.0.0.1:0", None, env, None).0;
        s._dir = Some(dir);
        s
    }

    /// Like [`Self::start_with`], the server started under this umask (e.g. `"000"`), on a
    /// data directory left world-readable (0755) beforehand.
    pub fn start_under_umask(election: &Value, umask: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().to_owned();
        import_election(&data_dir, election);
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut s = Self::spawn_with(&data_dir, "127.0.0.1:0", None, &[], Some(umask)).0;
        s._dir = Some(dir);
        s
    }

    /// Starts a server on an existing data directory, listening on `listen`, with these extra
    /// environment variables.
    pub fn start_on_with(data_dir: &Path, listen: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn_with(data_dir, listen, None, env, None).0
    }

    /// Like [`Self::start_paused`], with these extra environment variables.
    pub fn start_paused_with(
        data_dir: &Path,
        listen: &str,
        point: &str,
        env: &[(&str, &str)],
    ) -> (Self, Receiver<String>) {
        let (s, rx) = Self::spawn_with(data_dir, listen, Some(point), env, None);
        (s, rx.expect("stderr lines"))
    }

    /// Starts a server on an existing data directory, listening on `listen`.
    pub fn start_on(data_dir: &Path, listen: &str) -> Self {
        Self::spawn(data_dir, listen, None).0
    }

    /// Starts a server that pauses at the named pause point (`hattama_core::hooks`); the
    /// receiver gets a line when it is there.
    pub fn start_paused(data_dir: &Path, listen: &str, point: &str) -> (Self, Receiver<String>) {
        let (s, rx) = Self::spawn(data_dir, listen, Some(point));
        (s, rx.expect("stderr lines"))
    }

    fn spawn(
        data_dir: &Path,
        listen: &str,
        pause: Option<&str>,
    ) -> (Self, Option<Receiver<String>>) {
        Self::spawn_with(data_dir, listen, pause, &[], None)
    }

    fn spawn_with(
        data_dir: &Path,
        listen: &str,
        pause: Option<&str>,
        env: &[(&str, &str)],
        umask: Option<&str>,
    ) -> (Self, Option<Receiver<String>>) {
        let mut command = match umask {
            // The shell sets the umask, then becomes the server (same process id).
            Some(mask) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("umask {mask} && exec \"$0\" \"$@\""))
                    .arg(bin("hattama-server"))
                    .envs(Backend::from_env().env(data_dir))
                    .arg("--data-dir")
                    .arg(data_dir);
                c
            }
            None => server_command(data_dir),
        };
        command.envs(env.iter().copied());
        command
            .arg("--listen")
            .arg(listen)
            .arg("serve")
            .env("HATTAMA_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(if pause.is_some() { Stdio::piped() } else { Stdio::inherit() });
        if let Some(point) = pause {
            command.env("HATTAMA_TEST_PAUSE_AT", point);
        }
        let mut child = command.spawn().expect("spawn hattama-server");
        let lines = child.stderr.take().map(|stderr| {
            let (tx, rx) = channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read first line");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        let addr = url.split_once("://").map_or(url.as_str(), |(_, a)| a).parse().expect("address");
        (Self { data_dir: data_dir.to_owned(), url, addr, child, _dir: None }, lines)
    }

    /// Creates enrollment codes for precincts of election `e2e`.
    pub fn invite(&self, precincts: &[&str], count: usize) -> Vec<String> {
        invite(&self.data_dir, precincts, count)
    }

    /// Kills the server with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `GET /readyz` of a running server: its status and JSON body (a 503 must say when to retry).
pub fn readyz(server: &impl RunningServer) -> (u16, serde_json::Value) {
    let r = reqwest::blocking::get(format!("{}/readyz", server.url())).expect("GET /readyz");
    let status = r.status().as_u16();
    if status == 503 {
        assert!(r.headers().contains_key("retry-after"), "a 503 /readyz without Retry-After");
    }
    (status, r.json().expect("/readyz answers JSON"))
}

/// A running server, whichever way it runs: the binary as a child process ([`TestServer`]) or
/// the app in the test's process ([`crate::app::TestApp`]), for helpers that serve both.
pub trait RunningServer {
    /// `http://127.0.0.1:PORT` (`https://…` with `[tls]`).
    fn url(&self) -> &str;
    /// Its data directory.
    fn data_dir(&self) -> &Path;
    /// Creates enrollment codes for precincts of election `e2e`.
    fn invite(&self, precincts: &[&str], count: usize) -> Vec<String> {
        invite(self.data_dir(), precincts, count)
    }
}

impl RunningServer for TestServer {
    fn url(&self) -> &str {
        &self.url
    }

    fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// Creates enrollment codes for precincts of election `e2e` with `invite create` on the server
/// of `data_dir`.
pub fn invite(data_dir: &Path, precincts: &[&str], count: usize) -> Vec<String> {
    let mut args = vec!["invite", "create", "--election", "e2e", "--json"];
    for p in precincts {
        args.push("--precinct");
        args.push(p);
    }
    let count = count.to_string();
    args.extend(["--count", &count]);
    let run = admin(data_dir, &args);
    run.ok_json()
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v["code"].as_str().expect("code").to_owned())
        .collect()
}

/// Imports an election definition into a data directory.
pub fn import_election(data_dir: &Path, election: &Value) {
    std::fs::create_dir_all(data_dir).expect("data dir");
    let file = data_dir.join("election.json");
    std::fs::write(&file, serde_json::to_vec_pretty(election).expect("json")).expect("write");
    let run = admin(data_dir, &["election", "import", file.to_str().expect("utf-8")]);
    assert_eq!(run.code, Some(0), "import failed: {run:?}");
}
