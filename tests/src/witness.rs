//! Real `hattama-witness` processes and an in-memory log that feeds them checkpoints.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};

use ed25519_dalek::SigningKey;
use hattama_core::log::{Hash, LogKey, sign_checkpoint};
use hattama_core::witness::{AddCheckpoint, CosignerKey};

use crate::{Run, bin};

/// Runs a command of `hattama-witness` on a data directory.
pub fn witness_cmd(dir: &Path, args: &[&str]) -> Run {
    Command::new(bin("hattama-witness"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run hattama-witness")
        .into()
}

/// A witness: its data directory, its key, and (while running) its process and URL.
pub struct TestWitness {
    /// Its data directory.
    pub dir: PathBuf,
    /// Its cosigning key, as `init` printed it.
    pub key: CosignerKey,
    /// `http://127.0.0.1:PORT` of the running process (the last one started).
    pub url: String,
    child: Option<Child>,
    _tmp: tempfile::TempDir,
}

impl TestWitness {
    /// Creates a witness named `name` that witnesses `logs`, and starts it.
    pub fn start(name: &str, logs: &[&LogKey]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("witness");
        let run = witness_cmd(&dir, &["init", "--name", name]);
        assert_eq!(run.code, Some(0), "init: {run:?}");
        let key = CosignerKey::from_vkey(run.stdout.trim()).expect("init prints a witness vkey");
        for log in logs {
            let run = witness_cmd(&dir, &["add-log", &log.vkey]);
            assert_eq!(run.code, Some(0), "add-log: {run:?}");
        }
        let mut w = Self { dir, key, url: String::new(), child: None, _tmp: tmp };
        w.restart(None);
        w
    }

    /// Starts the witness again (after [`Self::kill`]), on a new port; with `pause`, it pauses
    /// at that point and the receiver gets its stderr lines.
    pub fn restart(&mut self, pause: Option<&str>) -> Option<Receiver<String>> {
        self.restart_at(pause, "127.0.0.1:0")
    }

    /// Starts the witness again on the port it had (its URL stays valid in policies).
    pub fn restart_same_port(&mut self) {
        let addr = self.url.trim_start_matches("http://").to_owned();
        self.restart_at(None, &addr);
    }

    fn restart_at(&mut self, pause: Option<&str>, listen: &str) -> Option<Receiver<String>> {
        assert!(self.child.is_none(), "the witness is running");
        let mut c = Command::new(bin("hattama-witness"));
        c.arg("--data-dir")
            .arg(&self.dir)
            .args(["serve", "--listen", listen])
            .env("HATTAMA_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(if pause.is_some() { Stdio::piped() } else { Stdio::inherit() });
        if let Some(p) = pause {
            c.env("HATTAMA_TEST_PAUSE_AT", p);
        }
        let mut child = c.spawn().expect("spawn hattama-witness");
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
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read first line");
        self.url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        self.child = Some(child);
        lines
    }

    /// Kills the witness with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id of the running witness.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether its process has ended (it is then reaped and may be restarted).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            None => true,
            Some(Ok(None)) => false,
            Some(_) => {
                self.child = None;
                true
            }
        }
    }

    /// Sends an add-checkpoint request: the status, the content type and the body.
    pub fn add_checkpoint(
        &self,
        http: &reqwest::blocking::Client,
        req: &AddCheckpoint,
    ) -> reqwest::Result<(u16, Option<String>, Vec<u8>)> {
        let resp = http.post(format!("{}/add-checkpoint", self.url)).body(req.to_bytes()).send()?;
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok((status, ct, resp.bytes()?.to_vec()))
    }
}

impl Drop for TestWitness {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Hashes(Vec<Hash>);

impl tlog_tiles::HashReader for Hashes {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|i| self.0.get(*i as usize).copied().ok_or(tlog_tiles::Error::IndexesNotInTree))
            .collect()
    }
}

/// A log held in memory: its key, its entries' stored hashes; signs checkpoints and proves
/// consistency like the server does (same core functions).
pub struct TestLog {
    key: SigningKey,
    /// Its identity.
    pub log: LogKey,
    hashes: Hashes,
    size: u64,
}

impl TestLog {
    /// An empty log of this origin whose key is made from `seed`.
    pub fn new(origin: &str, seed: u8) -> Self {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let log = LogKey::for_signer(origin, &key).expect("origin");
        Self { key, log, hashes: Hashes(Vec::new()), size: 0 }
    }

    /// Appends an entry.
    pub fn append(&mut self, entry: &[u8]) {
        let h = tlog_tiles::record_hash(entry);
        let new = tlog_tiles::stored_hashes_for_record_hash(self.size, h, &self.hashes)
            .expect("stored hashes");
        self.hashes.0.extend(new);
        self.size += 1;
    }

    /// Its size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root of the tree of its first `n` entries.
    pub fn root(&self, n: u64) -> Hash {
        tlog_tiles::tree_hash(n, &self.hashes).expect("tree hash")
    }

    /// The signed checkpoint of its first `n` entries.
    pub fn checkpoint(&self, n: u64) -> Vec<u8> {
        sign_checkpoint(&self.log.origin, n, &self.root(n), &self.key).expect("sign")
    }

    /// The add-checkpoint request from `old` to `n` entries.
    pub fn request(&self, old: u64, n: u64) -> AddCheckpoint {
        let proof = if old == 0 || old == n {
            Vec::new()
        } else {
            tlog_tiles::prove_tree(n, old, &self.hashes).expect("consistency proof")
        };
        AddCheckpoint { old_size: old, proof, checkpoint: self.checkpoint(n) }
    }
}
