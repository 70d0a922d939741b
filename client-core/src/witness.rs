//! Witnesses of the public log: cosignatures, trust policies and the add-checkpoint protocol.
//!
//! A witness is an independent organisation that checks that every new checkpoint of the log
//! extends the last one it saw and then cosigns it with a timestamp. A log that shows one tree
//! to some and another to others cannot gather the cosignatures of both, so a quorum of
//! cosignatures under a trust policy rules out a split view, and each cosignature dates the
//! checkpoint by a clock nobody here controls. Defined here once for the witness
//! (`hattama-witness`), the log server that asks it, the device and the auditor:
//! - [`CosignerKey`] / [`Cosigner`]: C2SP `tlog-cosignature`, type `cosignature/v1` (Ed25519
//!   with a timestamp, signature type `0x04`); the key implements `signed_note`'s `Verifier`;
//! - [`Policy`]: a C2SP `tlog-policy` file (logs, witnesses, groups, the quorum);
//! - [`AddCheckpoint`], [`check_add_checkpoint`], [`read_answer`]: C2SP `tlog-witness`'s
//!   `add-checkpoint` request, the witness's checks in the order the spec gives them, and the
//!   reading of its answer by the client.
//!
//! The formats, with worked examples, are in `docs/witness.md`; test vectors made by the test
//! `witness_vectors` are in `docs/witness-vectors/`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature as EdSignature, Signer as _, SigningKey, VerifyingKey};
use signed_note::{Note, Signature};

use crate::log::{Checkpoint, Hash, LogError, LogKey, hash_from_base64};

/// The header line of the message a `cosignature/v1` signs.
pub const COSIGNATURE_V1: &str = "cosignature/v1";

/// The signature type of `cosignature/v1` keys in verifier keys and key ids.
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

/// The content type of a witness's 409 answer: its latest size in decimal and a newline.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// The most consistency proof lines an add-checkpoint request may carry.
pub const MAX_PROOF_LINES: usize = 63;

/// The largest cosignature timestamp (2^63 - 1).
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// Why a witness object was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WitnessError {
    /// Not of this format.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The checkpoint itself was refused.
    #[error(transparent)]
    Log(#[from] LogError),
    /// No log of the policy signed the checkpoint.
    #[error("no log of the policy signed this checkpoint")]
    UnknownLog,
    /// A witness's answer carries no valid cosignature from its key.
    #[error("the answer of witness {0} carries no valid cosignature from its key")]
    NoCosignature(String),
}

fn malformed(what: &'static str, detail: impl Into<String>) -> WitnessError {
    WitnessError::Malformed { what, detail: detail.into() }
}

/// The message a `cosignature/v1` signs: the header line, the time line, and the whole note body
/// of the checkpoint (with its final newline, without signature lines).
pub fn cosigned_message(body: &[u8], time: u64) -> Vec<u8> {
    let mut msg = format!("{COSIGNATURE_V1}\ntime {time}\n").into_bytes();
    msg.extend_from_slice(body);
    msg
}

/// A witness's public identity: its name and Ed25519 key (`cosignature/v1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CosignerKey {
    name: String,
    key: VerifyingKey,
    id: u32,
}

impl CosignerKey {
    /// The identity of a witness of this name and key.
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, WitnessError> {
        if !signed_note::is_key_name_valid(name) {
            return Err(malformed("witness name", "must be non-empty, without spaces or '+'"));
        }
        let id = signed_note::key_id(name, &[&[ALG_COSIGNATURE_V1][..], key.as_bytes()].concat());
        Ok(Self { name: name.to_owned(), key, id })
    }

    /// Parses a verifier key `<name>+<key id, 8 hex digits>+<base64(0x04 || key)>`.
    pub fn from_vkey(vkey: &str) -> Result<Self, WitnessError> {
        let bad = |d: &str| malformed("witness key", d);
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("not <name>+<key id>+<key>"));
        };
        let bytes = B64.decode(b64).map_err(|_| bad("the key is not base64"))?;
        let Some((&alg, key)) = bytes.split_first() else {
            return Err(bad("empty key"));
        };
        if alg != ALG_COSIGNATURE_V1 {
            return Err(bad(&format!("signature type {alg:#04x} is not cosignature/v1 (0x04)")));
        }
        let key: [u8; 32] = key.try_into().map_err(|_| bad("an Ed25519 key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| bad("not an Ed25519 point"))?;
        let k = Self::new(name, key)?;
        if id.len() != 8 || id != format!("{:08x}", k.id) {
            return Err(bad("the key id does not match the name and key"));
        }
        Ok(k)
    }

    /// The verifier key string.
    pub fn vkey(&self) -> String {
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.id,
            B64.encode([&[ALG_COSIGNATURE_V1][..], self.key.as_bytes()].concat())
        )
    }

    /// The witness's name (the key name of its signature lines).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id of its signature lines.
    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Checks a cosignature (the signature bytes after the key id) over a checkpoint's note body;
    /// returns its timestamp.
    pub fn verify_cosignature(&self, body: &[u8], sig: &[u8]) -> Option<u64> {
        let (time, sig) = sig.split_first_chunk::<8>()?;
        let time = u64::from_be_bytes(*time);
        let sig: &[u8; 64] = sig.try_into().ok()?;
        if time > MAX_TIMESTAMP {
            return None;
        }
        self.key
            .verify_strict(&cosigned_message(body, time), &EdSignature::from_bytes(sig))
            .ok()
            .map(|()| time)
    }
}

impl signed_note::Verifier for CosignerKey {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.id
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        self.verify_cosignature(msg, sig).is_some()
    }
}

/// A witness's signing side.
pub struct Cosigner {
    key: SigningKey,
    public: CosignerKey,
}

impl Cosigner {
    /// The cosigner of this name with this key.
    pub fn new(name: &str, key: SigningKey) -> Result<Self, WitnessError> {
        let public = CosignerKey::new(name, key.verifying_key())?;
        Ok(Self { key, public })
    }

    /// Its public identity.
    pub fn public(&self) -> &CosignerKey {
        &self.public
    }

    /// Cosigns a checkpoint's note body at `time` (seconds since the epoch).
    pub fn cosign(&self, body: &[u8], time: u64) -> Result<Signature, WitnessError> {
        if time > MAX_TIMESTAMP {
            return Err(malformed("cosignature", "timestamp above 2^63 - 1"));
        }
        let sig = self.key.sign(&cosigned_message(body, time));
        let bytes = [&time.to_be_bytes()[..], &sig.to_bytes()[..]].concat();
        Signature::new(self.public.name.clone(), self.public.id, bytes)
            .map_err(|e| malformed("cosignature", e.to_string()))
    }
}

/// A cosignature that verified.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Cosignature {
    /// The witness's name in the policy (its key name where there is no policy).
    pub witness: String,
    /// The key name of the signature line.
    pub key_name: String,
    /// When the witness cosigned (seconds since the epoch), as it says.
    pub time: u64,
}

/// Splits a signed note into its body (with its final newline) and its signature lines.
fn note_parts(note: &[u8]) -> Result<(Vec<u8>, Vec<Signature>), WitnessError> {
    let parsed = Note::from_bytes(note).map_err(|e| malformed("signed note", e.to_string()))?;
    let text = parsed.text().to_vec();
    let sigs = note[text.len() + 1..]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(Signature::from_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| malformed("signed note", e.to_string()))?;
    Ok((text, sigs))
}

/// The body of a signed note (with its final newline, without its signature lines): what a
/// cosignature signs after its two header lines.
pub fn note_body(note: &[u8]) -> Result<Vec<u8>, WitnessError> {
    Ok(note_parts(note)?.0)
}

/// The cosignatures of `note` that verify under one of `keys`: for each key that signed, its
/// index in `keys` and the timestamp. Signature lines of other keys are ignored; a line of a
/// known key that does not verify counts as no cosignature.
pub fn verify_cosignatures(
    note: &[u8],
    keys: &[CosignerKey],
) -> Result<Vec<(usize, u64)>, WitnessError> {
    let (body, sigs) = note_parts(note)?;
    let mut out: Vec<(usize, u64)> = Vec::new();
    for sig in &sigs {
        let Some(i) = keys.iter().position(|k| k.name == sig.name() && k.id == sig.id()) else {
            continue;
        };
        if out.iter().any(|(j, _)| *j == i) {
            continue;
        }
        if let Some(time) = keys[i].verify_cosignature(&body, sig.signature()) {
            out.push((i, time));
        }
    }
    Ok(out)
}

/// Appends signature lines to a signed note, leaving out those of a key that already signed it.
pub fn add_signature_lines(note: &[u8], lines: &[Signature]) -> Result<Vec<u8>, WitnessError> {
    let (_, sigs) = note_parts(note)?;
    let mut out = note.to_vec();
    for l in lines {
        if !sigs.iter().any(|s| s.name() == l.name() && s.id() == l.id()) {
            out.extend_from_slice(&l.to_bytes());
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// tlog-policy

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("tlog-policy line {line}: {detail}")]
pub struct PolicyError {
    /// The line (from 1; 0 for the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub detail: String,
}

/// Most logs, witnesses and groups a policy may define (each); the spec recommends at least 32.
pub const POLICY_LIMIT: usize = 256;

/// A log of a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyLog {
    /// Its key; its name is the origin of its checkpoints.
    pub key: LogKey,
    /// Where to reach it, if said.
    pub url: Option<String>,
}

/// A witness of a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyWitness {
    /// Its name in the policy.
    pub name: String,
    /// Its cosigning key.
    pub key: CosignerKey,
    /// Its submission prefix, if said.
    pub url: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Member {
    Witness(usize),
    Group(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Group {
    name: String,
    k: usize,
    members: Vec<Member>,
}

/// A C2SP `tlog-policy`: the logs, the witnesses and the quorum of cosignatures that make a
/// checkpoint valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    logs: Vec<PolicyLog>,
    witnesses: Vec<PolicyWitness>,
    groups: Vec<Group>,
    /// `None` is `quorum none`.
    quorum: Option<Member>,
}

/// A checkpoint whose log signature verified, with its cosignatures under a policy.
#[derive(Clone, Debug, PartialEq)]
pub struct WitnessedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The policy's witnesses that cosigned it, in the policy's order.
    pub cosignatures: Vec<Cosignature>,
    /// Whether they make the policy's quorum.
    pub quorum: bool,
}

impl Policy {
    /// Parses a policy file, exactly as C2SP `tlog-policy` says; names and URLs must be UTF-8.
    pub fn parse(text: &[u8]) -> Result<Self, PolicyError> {
        let err = |line: usize, detail: &str| PolicyError { line, detail: detail.to_owned() };
        if let Some(b) =
            text.iter().find(|b| (**b < 0x20 && **b != b'\t' && **b != b'\n') || **b == 0x7f)
        {
            return Err(err(0, &format!("control character {b:#04x} (only tab and newline)")));
        }
        let text = std::str::from_utf8(text).map_err(|_| err(0, "not UTF-8"))?;
        let mut p =
            Policy { logs: Vec::new(), witnesses: Vec::new(), groups: Vec::new(), quorum: None };
        let mut quorum_seen = false;
        let mut names: Vec<(String, Member)> = Vec::new();
        for (n, line) in text.split('\n').enumerate() {
            let n = n + 1;
            let words: Vec<&str> = line.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
            let Some((&keyword, args)) = words.split_first() else { continue };
            if keyword.starts_with('#') {
                continue;
            }
            let lookup = |name: &str| names.iter().find(|(m, _)| m == name).map(|(_, x)| *x);
            let define = |name: &str, names: &[(String, Member)]| {
                if name == "none" {
                    Err(err(n, "the name `none` is predefined"))
                } else if names.iter().any(|(m, _)| m == name) {
                    Err(err(n, &format!("`{name}` is already defined")))
                } else {
                    Ok(())
                }
            };
            match keyword {
                "log" => {
                    let (vkey, url) = match args {
                        [v] => (v, None),
                        [v, u] => (v, Some((*u).to_owned())),
                        _ => return Err(err(n, "expected `log <vkey> [<url>]`")),
                    };
                    let key = LogKey::from_vkey(vkey).map_err(|e| err(n, &e.to_string()))?;
                    if !vkey_has_type(vkey, 0x01) {
                        return Err(err(
                            n,
                            "a log key must be an Ed25519 checkpoint key (type 0x01)",
                        ));
                    }
                    let raw = vkey_material(vkey);
                    if p.logs.iter().any(|l| vkey_material(&l.key.vkey) == raw) {
                        return Err(err(n, "duplicate log key"));
                    }
                    p.logs.push(PolicyLog { key, url });
                    if p.logs.len() > POLICY_LIMIT {
                        return Err(err(n, "too many logs"));
                    }
                }
                "witness" => {
                    let (name, vkey, url) = match args {
                        [name, v] => (name, v, None),
                        [name, v, u] => (name, v, Some((*u).to_owned())),
                        _ => return Err(err(n, "expected `witness <name> <vkey> [<url>]`")),
                    };
                    define(name, &names)?;
                    let key = CosignerKey::from_vkey(vkey).map_err(|e| err(n, &e.to_string()))?;
                    if p.witnesses.iter().any(|w| w.key.key == key.key) {
                        return Err(err(n, "duplicate witness key"));
                    }
                    names.push(((*name).to_owned(), Member::Witness(p.witnesses.len())));
                    p.witnesses.push(PolicyWitness { name: (*name).to_owned(), key, url });
                    if p.witnesses.len() > POLICY_LIMIT {
                        return Err(err(n, "too many witnesses"));
                    }
                }
                "group" => {
                    let [name, threshold, members @ ..] = args else {
                        return Err(err(n, "expected `group <name> all|any|<k> <name>...`"));
                    };
                    define(name, &names)?;
                    if members.is_empty() {
                        return Err(err(n, "a group needs at least one member"));
                    }
                    let mut list = Vec::new();
                    for m in members {
                        if *m == "none" {
                            return Err(err(n, "`none` cannot be a group member"));
                        }
                        let x = lookup(m)
                            .ok_or_else(|| err(n, &format!("`{m}` is not defined above")))?;
                        if list.contains(&x) {
                            return Err(err(n, &format!("`{m}` is listed twice")));
                        }
                        list.push(x);
                    }
                    let k = match *threshold {
                        "all" => list.len(),
                        "any" => 1,
                        t => parse_decimal(t)
                            .and_then(|k| usize::try_from(k).ok())
                            .filter(|k| (1..=list.len()).contains(k))
                            .ok_or_else(|| {
                                err(n, "the threshold must be all, any or 1 <= k <= members")
                            })?,
                    };
                    names.push(((*name).to_owned(), Member::Group(p.groups.len())));
                    p.groups.push(Group { name: (*name).to_owned(), k, members: list });
                    if p.groups.len() > POLICY_LIMIT {
                        return Err(err(n, "too many groups"));
                    }
                }
                "quorum" => {
                    let [name] = args else { return Err(err(n, "expected `quorum <name>`")) };
                    if quorum_seen {
                        return Err(err(n, "a second quorum line"));
                    }
                    quorum_seen = true;
                    p.quorum = if *name == "none" {
                        None
                    } else {
                        Some(
                            lookup(name)
                                .ok_or_else(|| err(n, &format!("`{name}` is not defined above")))?,
                        )
                    };
                }
                other => return Err(err(n, &format!("unknown keyword `{other}`"))),
            }
        }
        if !quorum_seen {
            return Err(err(0, "no quorum line"));
        }
        Ok(p)
    }

    /// The policy's logs.
    pub fn logs(&self) -> &[PolicyLog] {
        &self.logs
    }

    /// The policy's witnesses.
    pub fn witnesses(&self) -> &[PolicyWitness] {
        &self.witnesses
    }

    /// Whether the policy asks for any cosignature at all (not `quorum none`): only then can a
    /// checkpoint be called witnessed under it.
    pub fn requires_cosignatures(&self) -> bool {
        self.quorum.is_some()
    }

    /// Whether the policy names this log key.
    pub fn names_log(&self, key: &LogKey) -> bool {
        self.logs.iter().any(|l| l.key == *key)
    }

    /// The witnesses' keys, in the policy's order.
    pub fn witness_keys(&self) -> Vec<CosignerKey> {
        self.witnesses.iter().map(|w| w.key.clone()).collect()
    }

    /// Whether cosignatures from these witnesses (indexes into [`Self::witnesses`]) make the
    /// quorum.
    pub fn quorum_met(&self, cosigned: &[usize]) -> bool {
        fn met(p: &Policy, m: Member, cosigned: &[usize]) -> bool {
            match m {
                Member::Witness(i) => cosigned.contains(&i),
                Member::Group(g) => {
                    let g = &p.groups[g];
                    g.members.iter().filter(|m| met(p, **m, cosigned)).count() >= g.k
                }
            }
        }
        self.quorum.is_none_or(|q| met(self, q, cosigned))
    }

    /// The policy's cosignatures on `note` and whether they make the quorum (the log's own
    /// signature is not checked here).
    pub fn cosignatures(&self, note: &[u8]) -> Result<(Vec<Cosignature>, bool), WitnessError> {
        let found = verify_cosignatures(note, &self.witness_keys())?;
        let mut idx: Vec<usize> = found.iter().map(|(i, _)| *i).collect();
        idx.sort_unstable();
        let quorum = self.quorum_met(&idx);
        let mut cosigs: Vec<Cosignature> = found
            .into_iter()
            .map(|(i, time)| Cosignature {
                witness: self.witnesses[i].name.clone(),
                key_name: self.witnesses[i].key.name.clone(),
                time,
            })
            .collect();
        cosigs.sort_by_key(|c| self.witnesses.iter().position(|w| w.name == c.witness));
        Ok((cosigs, quorum))
    }

    /// Verifies a checkpoint under one of the policy's logs and gathers its cosignatures.
    pub fn verify_checkpoint(&self, note: &[u8]) -> Result<WitnessedCheckpoint, WitnessError> {
        let mut last = WitnessError::UnknownLog;
        for log in &self.logs {
            match crate::log::verify_checkpoint(note, &log.key) {
                Ok(checkpoint) => {
                    let (cosignatures, quorum) = self.cosignatures(note)?;
                    return Ok(WitnessedCheckpoint { checkpoint, cosignatures, quorum });
                }
                Err(LogError::WrongOrigin { .. }) => {}
                Err(e) => last = e.into(),
            }
        }
        Err(last)
    }
}

/// Why a checkpoint is not witnessed under a policy: what a device or an auditor says instead
/// of calling it witnessed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotWitnessed {
    /// It is not a checkpoint of the pinned log (signature, origin or format).
    #[error("not a checkpoint of this log: {0}")]
    Log(#[from] LogError),
    /// Its cosignature lines are not of the format.
    #[error("its cosignatures cannot be read: {0}")]
    Malformed(String),
    /// The policy does not ask for cosignatures (`quorum none`), so nothing is witnessed.
    #[error("the witness policy asks for no cosignature (quorum none)")]
    NoPolicy,
    /// Its valid cosignatures do not make the policy's quorum (a forked log cannot gather
    /// them; cosignature lines copied from another checkpoint do not verify).
    #[error(
        "the quorum of the witness policy is not met: {} of {} witnesses cosigned it validly{}",
        cosigned.len(),
        witnesses,
        if cosigned.is_empty() { String::new() } else { format!(" ({})", cosigned.join(", ")) }
    )]
    NoQuorum {
        /// The witnesses whose cosignatures verified.
        cosigned: Vec<String>,
        /// How many witnesses the policy has.
        witnesses: usize,
    },
}

/// Checks that `note` is a checkpoint of the log `log` (its signature under the pinned key)
/// carrying a quorum of valid cosignatures under `policy`: the one test of "witnessed" for the
/// device, the auditor and the gallery. Consistency with other checkpoints is the caller's.
pub fn check_witnessed(
    policy: &Policy,
    log: &LogKey,
    note: &[u8],
) -> Result<WitnessedCheckpoint, NotWitnessed> {
    if !policy.requires_cosignatures() {
        return Err(NotWitnessed::NoPolicy);
    }
    let checkpoint = crate::log::verify_checkpoint(note, log)?;
    let (cosignatures, quorum) =
        policy.cosignatures(note).map_err(|e| NotWitnessed::Malformed(e.to_string()))?;
    if !quorum {
        return Err(NotWitnessed::NoQuorum {
            cosigned: cosignatures.iter().map(|c| c.witness.clone()).collect(),
            witnesses: policy.witnesses.len(),
        });
    }
    Ok(WitnessedCheckpoint { checkpoint, cosignatures, quorum })
}

/// Whether a verifier key's key material starts with this signature type byte.
fn vkey_has_type(vkey: &str, alg: u8) -> bool {
    vkey_material(vkey).first() == Some(&alg)
}

/// The decoded key material (type byte and key) of a verifier key, empty if it has none.
fn vkey_material(vkey: &str) -> Vec<u8> {
    // `<name>+<key hash>+<base64>`: the name has no '+', but the base64 may.
    vkey.splitn(3, '+').nth(2).and_then(|b| B64.decode(b).ok()).unwrap_or_default()
}

/// Parses a decimal without leading zeroes ("0" itself allowed).
fn parse_decimal(s: &str) -> Option<u64> {
    let ok =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if ok { s.parse().ok() } else { None }
}

// ---------------------------------------------------------------------------------------------
// tlog-witness: add-checkpoint

/// An `add-checkpoint` request: the size the client believes the witness has, a consistency
/// proof from it, and the new checkpoint (with the log's signature).
#[derive(Clone, Debug, PartialEq)]
pub struct AddCheckpoint {
    /// The old size.
    pub old_size: u64,
    /// The consistency proof from the old size to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint.
    pub checkpoint: Vec<u8>,
}

impl AddCheckpoint {
    /// The request body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("old {}\n", self.old_size).into_bytes();
        for h in &self.proof {
            out.extend_from_slice(B64.encode(h.0).as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&self.checkpoint);
        out
    }

    /// Parses a request body.
    pub fn parse(body: &[u8]) -> Result<Self, WitnessError> {
        let bad = |d: &str| malformed("add-checkpoint request", d);
        let split =
            body.windows(2).position(|w| w == b"\n\n").ok_or_else(|| bad("no empty line"))?;
        let head = std::str::from_utf8(&body[..split]).map_err(|_| bad("not UTF-8"))?;
        let mut lines = head.split('\n');
        let old_size = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .and_then(parse_decimal)
            .ok_or_else(|| bad("the first line must be `old <size>`"))?;
        let mut proof = Vec::new();
        for l in lines {
            if proof.len() == MAX_PROOF_LINES {
                return Err(bad("more than 63 consistency proof lines"));
            }
            let h = (l.len() == 44).then(|| hash_from_base64(l)).flatten();
            proof.push(h.ok_or_else(|| bad("a proof line is not a base64 hash"))?);
        }
        Ok(Self { old_size, proof, checkpoint: body[split + 2..].to_vec() })
    }
}

/// What a witness had last cosigned for a log.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latest {
    /// Its size.
    pub size: u64,
    /// Its root hash.
    pub root: Hash,
}

/// Why a witness refuses an add-checkpoint request, with the HTTP status the spec gives it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// 400: the request is not of the format, or its old size is above the checkpoint's.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 404: the witness does not witness this log.
    #[error("unknown log {0:?}")]
    UnknownLog(String),
    /// 403: no signature of the log's key verifies.
    #[error("the checkpoint's signature does not verify under the log's key")]
    BadSignature,
    /// 409: the old size is not the witness's latest size (the answer's body).
    #[error("the witness's latest size is {latest}")]
    Conflict {
        /// The size of the latest checkpoint it cosigned (0 if none).
        latest: u64,
    },
    /// 409: a checkpoint of the witness's latest size with another root hash (a fork).
    #[error("a checkpoint of size {latest} with another root hash than the one cosigned")]
    OtherRoot {
        /// The size of the latest checkpoint it cosigned.
        latest: u64,
    },
    /// 422: the consistency proof does not verify.
    #[error("the consistency proof does not verify")]
    BadProof,
}

impl Refusal {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::UnknownLog(_) => 404,
            Refusal::BadSignature => 403,
            Refusal::Conflict { .. } | Refusal::OtherRoot { .. } => 409,
            Refusal::BadProof => 422,
        }
    }
}

/// The origin line of a signed checkpoint (before any signature is checked), to find its log.
pub fn checkpoint_origin(note: &[u8]) -> Result<String, Refusal> {
    let (body, _) = note_parts(note).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    let cp = tlog_tiles::Checkpoint::from_bytes(&body)
        .map_err(|e| Refusal::BadRequest(format!("malformed checkpoint: {e}")))?;
    Ok(cp.origin().to_owned())
}

/// The witness's checks of an add-checkpoint request, in the order C2SP `tlog-witness` gives
/// them, for the log `log` (the caller found it by [`checkpoint_origin`]; `None` if it does
/// not witness that origin) whose latest cosigned checkpoint is `latest`. Returns the checkpoint
/// to cosign; the caller must store it, atomically with reading `latest`, before answering.
pub fn check_add_checkpoint(
    req: &AddCheckpoint,
    log: Option<&LogKey>,
    latest: Option<Latest>,
) -> Result<Checkpoint, Refusal> {
    let origin = checkpoint_origin(&req.checkpoint)?;
    let log = log.ok_or(Refusal::UnknownLog(origin))?;
    let cp = crate::log::verify_checkpoint(&req.checkpoint, log).map_err(|e| match e {
        LogError::BadCheckpointSignature => Refusal::BadSignature,
        LogError::WrongOrigin { found, .. } => Refusal::UnknownLog(found),
        e => Refusal::BadRequest(e.to_string()),
    })?;
    if req.old_size > cp.size {
        return Err(Refusal::BadRequest(format!(
            "the old size {} is above the checkpoint's size {}",
            req.old_size, cp.size
        )));
    }
    let latest_size = latest.map_or(0, |l| l.size);
    if req.old_size != latest_size {
        return Err(Refusal::Conflict { latest: latest_size });
    }
    let Some(latest) = latest.filter(|l| l.size > 0) else {
        // Nothing cosigned yet: the proof must be empty, and any checkpoint is the first view.
        return if req.proof.is_empty() { Ok(cp) } else { Err(Refusal::BadProof) };
    };
    if cp.size == latest.size {
        if cp.root != latest.root {
            return Err(Refusal::OtherRoot { latest: latest.size });
        }
        return if req.proof.is_empty() { Ok(cp) } else { Err(Refusal::BadProof) };
    }
    crate::log::verify_consistency(latest.size, &latest.root, cp.size, &cp.root, &req.proof)
        .map_err(|_| Refusal::BadProof)?;
    Ok(cp)
}

/// The 409 answer's body: the latest size in decimal and a newline.
pub fn size_body(size: u64) -> String {
    format!("{size}\n")
}

/// A witness's answer to an add-checkpoint request, as the client reads it.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// 200: the witness's cosignature (verified) and its time.
    Cosigned {
        /// The signature line.
        line: Signature,
        /// Its timestamp.
        time: u64,
    },
    /// 409 with `text/x.tlog.size`: the witness's latest size.
    Conflict {
        /// Its latest size.
        size: u64,
    },
    /// Any other answer.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The start of the body, for the operator's log.
        body: String,
    },
}

/// Reads a witness's answer to `req` (status, content type, body): a 200's cosignature must
/// verify under `witness` over `req`'s checkpoint (lines of other keys are ignored).
pub fn read_answer(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
    req: &AddCheckpoint,
    witness: &CosignerKey,
) -> Result<Answer, WitnessError> {
    match status {
        200 => {
            let (note_body, _) = note_parts(&req.checkpoint)?;
            let text = std::str::from_utf8(body).map_err(|_| malformed("answer", "not UTF-8"))?;
            for l in text.split_terminator('\n') {
                let Ok(sig) = Signature::from_bytes(l.as_bytes()) else { continue };
                if sig.name() != witness.name() || sig.id() != witness.key_id() {
                    continue;
                }
                if let Some(time) = witness.verify_cosignature(&note_body, sig.signature()) {
                    return Ok(Answer::Cosigned { line: sig, time });
                }
            }
            Err(WitnessError::NoCosignature(witness.name().to_owned()))
        }
        409 if content_type.is_some_and(|c| {
            c.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case(SIZE_CONTENT_TYPE))
        }) =>
        {
            let text = std::str::from_utf8(body).map_err(|_| malformed("answer", "not UTF-8"))?;
            let size = text
                .strip_suffix('\n')
                .and_then(parse_decimal)
                .ok_or_else(|| malformed("answer", "a 409 body must be a size and a newline"))?;
            Ok(Answer::Conflict { size })
        }
        status => Ok(Answer::Refused {
            status,
            body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        }),
    }
}

/// What an auditor found about a log's cosigned checkpoint (`hattama audit --policy`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct WitnessAudit {
    /// The cosigned checkpoint's size.
    pub size: u64,
    /// The policy's witnesses whose cosignatures verify, with their times.
    pub cosignatures: Vec<Cosignature>,
    /// Whether they make the policy's quorum.
    pub quorum: bool,
    /// Whether its tree is the audited tree's prefix (`None`: it is newer than the audited one).
    pub consistent: Option<bool>,
}

/// Checks the log's cosigned checkpoint (`<log_url>/cosigned-checkpoint`) under `policy`, and
/// that its tree is a prefix of the audited tree of `size` entries with root `root`: its root is
/// recomputed from the log's tiles, which are authenticated against the audited root. `None` if
/// the log serves no cosigned checkpoint.
#[cfg(feature = "sync")]
pub fn audit_cosigned(
    http: &reqwest::blocking::Client,
    log_url: &str,
    policy: &Policy,
    size: u64,
    root: Hash,
) -> Result<Option<WitnessAudit>, String> {
    let base = log_url.trim_end_matches('/');
    let get = |path: &str| -> Result<Option<Vec<u8>>, String> {
        let r = http.get(format!("{base}/{path}")).send().map_err(|e| format!("{path}: {e}"))?;
        match r.status().as_u16() {
            404 => Ok(None),
            200 => Ok(Some(r.bytes().map_err(|e| format!("{path}: {e}"))?.to_vec())),
            s => Err(format!("{path}: HTTP {s}")),
        }
    };
    let Some(note) = get("cosigned-checkpoint")? else { return Ok(None) };
    if note.len() > 64 * 1024 {
        return Err("cosigned-checkpoint: too large".into());
    }
    let w = policy.verify_checkpoint(&note).map_err(|e| format!("cosigned-checkpoint: {e}"))?;
    let m = w.checkpoint.size;
    let consistent = if m > size {
        None
    } else if m == size || m == 0 {
        Some(m == 0 || w.checkpoint.root == root)
    } else {
        struct Tiles<'a, F: Fn(&str) -> Result<Option<Vec<u8>>, String>>(&'a F);
        impl<F: Fn(&str) -> Result<Option<Vec<u8>>, String>> tlog_tiles::TileReader for Tiles<'_, F> {
            fn height(&self) -> u8 {
                crate::log::TILE_HEIGHT
            }
            fn read_tiles(
                &self,
                tiles: &[tlog_tiles::Tile],
            ) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
                tiles
                    .iter()
                    .map(|t| match (self.0)(&crate::log::tile_path(t)) {
                        Ok(Some(d)) if d.len() == t.width() as usize * 32 => Ok(d),
                        _ => Err(tlog_tiles::Error::InvalidTile),
                    })
                    .collect()
            }
            fn save_tiles(&self, _: &[tlog_tiles::Tile], _: &[Vec<u8>]) {}
        }
        let tiles = Tiles(&get);
        let reader = tlog_tiles::TileHashReader::new(size, root, &tiles);
        let at_m = tlog_tiles::tree_hash(m, &reader)
            .map_err(|e| format!("recomputing the root of {m} entries from the tiles: {e}"))?;
        Some(at_m == w.checkpoint.root)
    };
    Ok(Some(WitnessAudit { size: m, cosignatures: w.cosignatures, quorum: w.quorum, consistent }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::sign_checkpoint;

    #[test]
    fn a_verifier_key_whose_base64_holds_a_plus_keeps_its_type_byte() {
        // Found by tests/tests/witness.rs with a random log key: the key material was taken
        // after the last '+', which base64 may contain.
        assert_eq!(vkey_material("log.example/a+35a6249c+AQ+A"), vec![1, 15, 128]);
        assert!(vkey_has_type("log.example/a+35a6249c+AQ+A", 0x01));
    }

    fn witness(seed: u8, name: &str) -> Cosigner {
        Cosigner::new(name, SigningKey::from_bytes(&[seed; 32])).unwrap()
    }

    #[test]
    fn cosignatures_sign_verify_and_refuse_tampering() {
        let key = SigningKey::from_bytes(&[4; 32]);
        let log = LogKey::for_signer("hattama.example/log", &key).unwrap();
        let note = sign_checkpoint(&log.origin, 7, &Hash([9; 32]), &key).unwrap();
        let w = witness(1, "w1.example/w");
        let (body, _) = note_parts(&note).unwrap();
        let sig = w.cosign(&body, 1_700_000_000).unwrap();
        let cosigned = add_signature_lines(&note, std::slice::from_ref(&sig)).unwrap();
        assert_eq!(add_signature_lines(&cosigned, &[sig]).unwrap(), cosigned, "added once");
        let keys = vec![witness(2, "w2.example/w").public().clone(), w.public().clone()];
        assert_eq!(verify_cosignatures(&cosigned, &keys).unwrap(), vec![(1, 1_700_000_000)]);
        // The log's own signature still verifies with the cosignature beside it.
        assert_eq!(crate::log::verify_checkpoint(&cosigned, &log).unwrap().size, 7);
        // Another body: no cosignature.
        let other = sign_checkpoint(&log.origin, 8, &Hash([9; 32]), &key).unwrap();
        let (body8, _) = note_parts(&other).unwrap();
        let line = String::from_utf8(cosigned[note.len()..].to_vec()).unwrap();
        let moved = [other.clone(), line.into_bytes()].concat();
        assert_eq!(verify_cosignatures(&moved, &keys).unwrap(), vec![]);
        // The timestamp is signed.
        let s = w.cosign(&body8, 5).unwrap();
        let mut bytes = s.signature().to_vec();
        bytes[7] = 6;
        assert_eq!(w.public().verify_cosignature(&body8, &bytes), None);
        assert_eq!(w.public().verify_cosignature(&body8, s.signature()), Some(5));
        assert!(w.cosign(&body8, MAX_TIMESTAMP + 1).is_err());
        // The vkey round-trips; a log-type key is refused as a witness key.
        let vkey = w.public().vkey();
        assert_eq!(CosignerKey::from_vkey(&vkey).unwrap(), *w.public());
        assert!(CosignerKey::from_vkey(&log.vkey).is_err());
        assert!(CosignerKey::from_vkey(&vkey.replacen('+', "+0", 1)).is_err());
    }

    fn policy_text(extra: &str) -> String {
        let key = SigningKey::from_bytes(&[4; 32]);
        let log = LogKey::for_signer("hattama.example/log", &key).unwrap();
        let w: Vec<String> =
            (1..=4).map(|i| witness(i, &format!("w{i}.example/w")).public().vkey()).collect();
        format!(
            "# a comment\nlog {} https://log.example/\n\n  witness A {}\t https://a.example/\nwitness B {}\nwitness C {}\nwitness D {}\n{extra}",
            log.vkey, w[0], w[1], w[2], w[3]
        )
    }

    #[test]
    fn policies_parse_and_count_quorums() {
        let p = Policy::parse(
            policy_text("group ABC 2 A B C\ngroup Q all ABC D\nquorum Q\n").as_bytes(),
        )
        .unwrap();
        assert_eq!(p.logs().len(), 1);
        assert_eq!(p.witnesses()[0].url.as_deref(), Some("https://a.example/"));
        assert!(!p.quorum_met(&[0, 1]));
        assert!(p.quorum_met(&[0, 1, 3]));
        assert!(p.quorum_met(&[1, 2, 3]));
        assert!(!p.quorum_met(&[0, 3]));
        let none = Policy::parse(policy_text("quorum none\n").as_bytes()).unwrap();
        assert!(none.quorum_met(&[]));
        let one = Policy::parse(policy_text("quorum B").as_bytes()).unwrap();
        assert!(one.quorum_met(&[1]) && !one.quorum_met(&[0]));
        let any = Policy::parse(policy_text("group G any A B\nquorum G\n").as_bytes()).unwrap();
        assert!(any.quorum_met(&[1]) && !any.quorum_met(&[2]));
    }

    #[test]
    fn policies_refuse_what_the_spec_forbids() {
        let check = |extra: &str, line: usize, detail: &str| {
            let e = Policy::parse(policy_text(extra).as_bytes()).unwrap_err();
            assert_eq!(e.line, line, "{extra:?}: {e}");
            assert!(e.detail.contains(detail), "{extra:?}: {e}");
        };
        check("", 0, "no quorum line");
        check("quorum A\nquorum B\n", 9, "second quorum");
        check("quorum Z\n", 8, "not defined above");
        check("group G 0 A B\nquorum G\n", 8, "threshold");
        check("group G 3 A B\nquorum G\n", 8, "threshold");
        check("group G 01 A B\nquorum G\n", 8, "threshold");
        check("group G any\nquorum G\n", 8, "at least one member");
        check("group G any A A\nquorum G\n", 8, "listed twice");
        check("group G any A none\nquorum G\n", 8, "`none` cannot");
        check("group A any B\nquorum A\n", 8, "already defined");
        check("group none any B\nquorum none\n", 8, "predefined");
        check("quorum G\ngroup G any A\n", 8, "not defined above");
        check("frobnicate\nquorum A\n", 8, "unknown keyword");
        check("quorum A extra\n", 8, "expected `quorum <name>`");
        let dup = witness(1, "other.example/w").public().vkey();
        check(&format!("witness E {dup}\nquorum A\n"), 8, "duplicate witness key");
        let e = Policy::parse(policy_text("quorum A\r\n").as_bytes()).unwrap_err();
        assert!(e.detail.contains("control character"), "{e}");
    }

    #[test]
    fn witnessed_only_with_the_pinned_log_and_a_quorum() {
        let key = SigningKey::from_bytes(&[4; 32]);
        let log = LogKey::for_signer("hattama.example/log", &key).unwrap();
        let policy = Policy::parse(policy_text("group G 2 A B C\nquorum G\n").as_bytes()).unwrap();
        let note = sign_checkpoint(&log.origin, 9, &Hash([3; 32]), &key).unwrap();
        let body = note_body(&note).unwrap();
        let line = |i: u8| witness(i, &format!("w{i}.example/w")).cosign(&body, 1_800_000_000);
        let one = add_signature_lines(&note, &[line(1).unwrap()]).unwrap();
        let two = add_signature_lines(&one, &[line(3).unwrap()]).unwrap();
        assert_eq!(
            check_witnessed(&policy, &log, &one),
            Err(NotWitnessed::NoQuorum { cosigned: vec!["A".into()], witnesses: 4 })
        );
        let w = check_witnessed(&policy, &log, &two).unwrap();
        assert_eq!((w.checkpoint.size, w.cosignatures.len(), w.quorum), (9, 2, true));
        // The same cosignatures on another tree of the same log do not verify.
        let other = sign_checkpoint(&log.origin, 9, &Hash([4; 32]), &key).unwrap();
        let moved = [&other[..], &two[note.len()..]].concat();
        assert!(matches!(
            check_witnessed(&policy, &log, &moved),
            Err(NotWitnessed::NoQuorum { ref cosigned, .. }) if cosigned.is_empty()
        ));
        // Another log's key, and a policy asking for nothing, are never witnessed.
        let stranger =
            LogKey::for_signer("hattama.example/log", &SigningKey::from_bytes(&[5; 32])).unwrap();
        assert!(matches!(check_witnessed(&policy, &stranger, &two), Err(NotWitnessed::Log(_))));
        let none = Policy::parse(policy_text("quorum none\n").as_bytes()).unwrap();
        assert_eq!(check_witnessed(&none, &log, &two), Err(NotWitnessed::NoPolicy));
    }

    struct T(Vec<Hash>);
    impl tlog_tiles::HashReader for T {
        fn read_hashes(&self, i: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
            Ok(i.iter().map(|i| self.0[*i as usize]).collect())
        }
    }

    /// The roots of a tree of these leaves at every size, and the tree.
    fn tree(leaves: &[&[u8]]) -> (Vec<Hash>, T) {
        let mut t = T(Vec::new());
        for (i, l) in leaves.iter().enumerate() {
            let new =
                tlog_tiles::stored_hashes_for_record_hash(i as u64, tlog_tiles::record_hash(l), &t)
                    .unwrap();
            t.0.extend(new);
        }
        let mut roots = vec![tlog_tiles::EMPTY_HASH];
        for n in 1..=leaves.len() as u64 {
            roots.push(tlog_tiles::tree_hash(n, &t).unwrap());
        }
        (roots, t)
    }

    #[test]
    fn the_witness_checks_follow_the_spec() {
        let key = SigningKey::from_bytes(&[4; 32]);
        let log = LogKey::for_signer("hattama.example/log", &key).unwrap();
        let (roots, t) = tree(&[b"a", b"b", b"c"]);
        let cp = |n: u64| sign_checkpoint(&log.origin, n, &roots[n as usize], &key).unwrap();
        let req =
            |old, proof: Vec<Hash>, n| AddCheckpoint { old_size: old, proof, checkpoint: cp(n) };
        let first = req(0, vec![], 2);
        assert_eq!(AddCheckpoint::parse(&first.to_bytes()).unwrap(), first);
        assert_eq!(check_add_checkpoint(&first, Some(&log), None).unwrap().size, 2);
        assert_eq!(
            check_add_checkpoint(&first, None, None),
            Err(Refusal::UnknownLog(log.origin.clone()))
        );
        let other =
            LogKey::for_signer("hattama.example/log", &SigningKey::from_bytes(&[5; 32])).unwrap();
        assert_eq!(check_add_checkpoint(&first, Some(&other), None), Err(Refusal::BadSignature));
        let at2 = Some(Latest { size: 2, root: roots[2] });
        assert_eq!(
            check_add_checkpoint(&first, Some(&log), at2),
            Err(Refusal::Conflict { latest: 2 })
        );
        assert_eq!(
            check_add_checkpoint(&req(3, vec![], 2), Some(&log), at2).unwrap_err().status(),
            400
        );
        // Same size: the same root again is fine, another root is a fork.
        assert!(check_add_checkpoint(&req(2, vec![], 2), Some(&log), at2).is_ok());
        let forked = Some(Latest { size: 2, root: roots[1] });
        assert_eq!(
            check_add_checkpoint(&req(2, vec![], 2), Some(&log), forked),
            Err(Refusal::OtherRoot { latest: 2 })
        );
        // A wrong proof from 2 to 3.
        assert_eq!(
            check_add_checkpoint(&req(2, vec![roots[1]], 3), Some(&log), at2),
            Err(Refusal::BadProof)
        );
        assert_eq!(
            check_add_checkpoint(&req(0, vec![roots[1]], 3), Some(&log), None),
            Err(Refusal::BadProof)
        );
        let proof = tlog_tiles::prove_tree(3, 2, &t).unwrap();
        assert_eq!(check_add_checkpoint(&req(2, proof, 3), Some(&log), at2).unwrap().size, 3);
    }

    #[test]
    fn add_checkpoint_requests_are_strict() {
        for bad in
            [&b"old 01\n\nx"[..], b"old -1\n\nx", b"old 1\nAAAA\n\nx", b"old 1", b"new 1\n\nx"]
        {
            assert!(AddCheckpoint::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let many = format!("old 1\n{}\nx", format!("{}\n", B64.encode([0u8; 32])).repeat(64));
        assert!(AddCheckpoint::parse(many.as_bytes()).is_err());
    }
}
