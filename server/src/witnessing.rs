//! The log server asks its witnesses to cosign its checkpoints (`docs/witness.md`).
//!
//! With `witness_policy` set, a thread of its own takes the newest published checkpoint and sends
//! it to every witness of the policy that has not cosigned it yet, all in parallel, each request
//! with a timeout and a few retries; a `409` is answered by sending again from the witness's
//! size. Once the cosignatures gathered for a checkpoint make the policy's quorum, the checkpoint
//! with them is published as the object `log/cosigned-checkpoint` (with the local store,
//! `<data dir>/log/cosigned-checkpoint`; served as
//! `GET /log/cosigned-checkpoint`). Nothing else waits for it: receipts and the integrator never
//! do, so slow or dead witnesses delay only the cosigned checkpoint.

use std::sync::Arc;
use std::time::Duration;

use hattama_core::witness::{
    AddCheckpoint, Answer, CosignerKey, Policy, add_signature_lines, read_answer,
};
use signed_note::Signature;

use crate::log::Log;
use crate::objects::{ObjectError, ObjectKey, PutOptions};

/// The object holding the newest checkpoint with a quorum (replaced by each newer one).
pub const COSIGNED_KEY: &str = "log/cosigned-checkpoint";

fn cosigned_key() -> Result<ObjectKey, ObjectError> {
    ObjectKey::new(COSIGNED_KEY)
}

/// The server's witness policy: parsed, and its text as read (what devices get at enrollment).
pub struct ServerPolicy {
    /// The policy.
    pub policy: Policy,
    /// The policy file's text.
    pub text: String,
}

/// The server's newest cosigned checkpoint as the public pages show it, checked under the policy
/// (`check_witnessed`, the device's and auditor's test): a file that does not verify or has no
/// quorum is never shown as witnessed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicWitnessed {
    /// Its size: every log entry below it is witnessed.
    pub size: u64,
    /// Who cosigned it and when: (policy name, key name, seconds since the epoch).
    pub cosignatures: Vec<(String, String, u64)>,
    /// How many witnesses the policy has.
    pub witnesses: usize,
}

impl PublicWitnessed {
    /// Whether the log entry at `index` is covered.
    pub fn covers(&self, index: &Option<u64>) -> bool {
        index.is_some_and(|i| i < self.size)
    }
}

/// The newest cosigned checkpoint under the server's policy, if it has one with a quorum.
pub fn public_witnessed(log: &Log, policy: &ServerPolicy) -> Option<PublicWitnessed> {
    let note = match cosigned_key().and_then(|key| log.objects().get_opt(&key)) {
        Ok(note) => note?,
        Err(e) => {
            tracing::error!(error = %e, "the cosigned checkpoint cannot be read");
            return None;
        }
    };
    match hattama_core::witness::check_witnessed(&policy.policy, &log.log_key, &note) {
        Ok(w) => Some(PublicWitnessed {
            size: w.checkpoint.size,
            cosignatures: w
                .cosignatures
                .into_iter()
                .map(|c| (c.witness, c.key_name, c.time))
                .collect(),
            witnesses: policy.policy.witnesses().len(),
        }),
        Err(e) => {
            tracing::error!(error = %e, "the cosigned checkpoint file is not witnessed");
            None
        }
    }
}

/// Retries of a request that got no answer, after the first try.
const RETRIES: u32 = 2;

struct Witness {
    key: CosignerKey,
    url: String,
    /// The size it last said it has (from a cosignature or a 409), if known.
    known: Option<u64>,
}

/// Starts the witnessing thread for `log` under `policy`; it ends after [`Log::stop`].
pub fn start(
    log: Arc<Log>,
    policy: Policy,
    timeout: Duration,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let http = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(std::io::Error::other)?;
    let mut witnesses = Vec::new();
    for w in policy.witnesses() {
        match &w.url {
            Some(url) => witnesses.push(Witness {
                key: w.key.clone(),
                url: url.trim_end_matches('/').to_owned(),
                known: None,
            }),
            None => tracing::warn!(witness = w.name, "a witness of the policy has no URL"),
        }
    }
    std::thread::Builder::new()
        .name("witnessing".into())
        .spawn(move || run(&log, &policy, &http, witnesses))
}

fn run(log: &Log, policy: &Policy, http: &reqwest::blocking::Client, mut witnesses: Vec<Witness>) {
    // The checkpoint being cosigned and the lines gathered for it, one slot per witness.
    let mut target: Option<(u64, Vec<u8>)> = None;
    let mut lines: Vec<Option<Signature>> = vec![None; witnesses.len()];
    let mut written = 0u64;
    while !log.is_stopping() {
        // Of the servers sharing one storage, the one that integrates asks the witnesses (and
        // alone writes the cosigned checkpoint object, so that it only grows).
        if !log.is_integrating() {
            let _ = log.wait_published(log.published_size(), Duration::from_secs(1));
            continue;
        }
        let (size, note) = match log.published_checkpoint() {
            Ok(c) if c.0 > 0 => c,
            _ => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if target.as_ref().is_none_or(|(s, _)| *s != size) {
            target = Some((size, note.clone()));
            lines = vec![None; witnesses.len()];
        }
        let missing: Vec<usize> = (0..witnesses.len()).filter(|i| lines[*i].is_none()).collect();
        if !missing.is_empty() {
            let got: Vec<(usize, Option<Signature>)> = std::thread::scope(|s| {
                let handles: Vec<_> = witnesses
                    .iter_mut()
                    .enumerate()
                    .filter(|(i, _)| missing.contains(i))
                    .map(|(i, w)| {
                        let note = &note;
                        s.spawn(move || (i, submit(http, log, w, size, note)))
                    })
                    .collect();
                handles.into_iter().filter_map(|h| h.join().ok()).collect()
            });
            for (i, line) in got {
                if line.is_some() {
                    lines[i] = line;
                }
            }
            let gathered: Vec<Signature> = lines.iter().flatten().cloned().collect();
            match add_signature_lines(&note, &gathered) {
                Ok(cosigned) => match policy.cosignatures(&cosigned) {
                    Ok((cosigs, true)) if size > written || cosigs.len() == witnesses.len() => {
                        let put = cosigned_key()
                            .and_then(|key| log.objects().put(&key, &cosigned, PutOptions::LATEST));
                        if let Err(e) = put {
                            tracing::error!(error = %e, "cannot write the cosigned checkpoint");
                        } else {
                            written = size;
                            tracing::info!(
                                size,
                                cosignatures = cosigs.len(),
                                "checkpoint witnessed"
                            );
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "cosigned checkpoint"),
                },
                Err(e) => tracing::error!(error = %e, "cosigned checkpoint"),
            }
        }
        // Wait for a newer checkpoint; while a witness is missing, try it again within a second.
        let wait = if lines.iter().all(Option::is_some) {
            Duration::from_secs(3600)
        } else {
            Duration::from_secs(1)
        };
        let _ = log.wait_published(size, wait);
    }
}

/// Asks one witness to cosign the checkpoint `note` of `size`; its cosignature line, or `None`
/// (logged) if it did not give one.
fn submit(
    http: &reqwest::blocking::Client,
    log: &Log,
    w: &mut Witness,
    size: u64,
    note: &[u8],
) -> Option<Signature> {
    let mut old = w.known.unwrap_or(0);
    let mut tries = 0;
    for _ in 0..8 {
        if old > size {
            tracing::error!(
                witness = w.key.name(),
                old,
                size,
                "the witness has seen a larger tree than the log's newest: the log was rolled back?"
            );
            w.known = None;
            return None;
        }
        let proof = if old == 0 || old == size {
            Vec::new()
        } else {
            match log.prove_consistency(old, size) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "consistency proof for a witness");
                    return None;
                }
            }
        };
        let req = AddCheckpoint { old_size: old, proof, checkpoint: note.to_vec() };
        let resp = http.post(format!("{}/add-checkpoint", w.url)).body(req.to_bytes()).send();
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                tries += 1;
                if tries > RETRIES {
                    tracing::warn!(witness = w.key.name(), error = %e, "witness unreachable");
                    return None;
                }
                std::thread::sleep(Duration::from_millis(100 << tries));
                continue;
            }
        };
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = match resp.bytes() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(witness = w.key.name(), error = %e, "witness answer cut");
                return None;
            }
        };
        match read_answer(status, ct.as_deref(), &body, &req, &w.key) {
            Ok(Answer::Cosigned { line, .. }) => {
                w.known = Some(size);
                return Some(line);
            }
            Ok(Answer::Conflict { size: theirs }) if theirs == old => {
                tracing::error!(
                    witness = w.key.name(),
                    size,
                    "the witness cosigned another tree of this size: the log forked?"
                );
                return None;
            }
            Ok(Answer::Conflict { size: theirs }) => {
                w.known = Some(theirs);
                old = theirs;
            }
            Ok(Answer::Refused { status, body }) => {
                tracing::error!(
                    witness = w.key.name(),
                    status,
                    body,
                    size,
                    old,
                    "the witness refused the checkpoint"
                );
                w.known = None;
                return None;
            }
            Err(e) => {
                tracing::warn!(witness = w.key.name(), error = %e, "witness answer not understood");
                return None;
            }
        }
    }
    None
}
