//! The public tamper-evident log: entry format, checkpoints, proofs.
//!
//! Defined here once; the server builds the log with it, the device checks its receipts'
//! proofs and watches checkpoints for forks with it, and `hattama audit` recomputes the whole
//! tree with it. The exact rules are in `docs/transparency-log.md`:
//! - hashing is RFC 6962 (leaf `SHA-256(0x00 || entry)`, node `SHA-256(0x01 || l || r)`);
//! - checkpoints are C2SP `tlog-checkpoint` bodies in C2SP `signed-note` envelopes, signed with
//!   the log's Ed25519 key;
//! - tiles are C2SP `tlog-tiles` (height 8);
//! - proofs travel in the C2SP `tlog-proof@v1` text form.
//!
//! Merkle proof checking, tile arithmetic and note signatures come from the `tlog_tiles` and
//! `signed_note` crates (a port of Go's `sumdb/tlog` and `sumdb/note`); this module adds the
//! entry format and the checks that tie them together.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use signed_note::{Note, StandardVerifier, VerifierList};

use crate::evidence::{Sha256Hash, check_id};

pub use tlog_tiles::Hash;

/// Entry format version.
pub const ENTRY_VERSION: u64 = 1;

/// Largest entry accepted, in bytes.
pub const MAX_ENTRY_BYTES: usize = 1024;

/// Height of the log's tiles (C2SP tlog-tiles: 8, 256 hashes per full tile).
pub const TILE_HEIGHT: u8 = 8;

/// The first line of a proof in the C2SP tlog-proof text form.
pub const PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";

/// Why a log object was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    /// Not of this format.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The checkpoint's signature does not verify under the log key.
    #[error("checkpoint signature does not verify under the log key")]
    BadCheckpointSignature,
    /// The checkpoint is for another log.
    #[error("checkpoint is for log {found:?}, expected {expected:?}")]
    WrongOrigin {
        /// Origin found.
        found: String,
        /// Origin expected.
        expected: String,
    },
    /// An inclusion proof does not verify.
    #[error("inclusion proof for entry {index} in a tree of {size} does not verify")]
    BadInclusionProof {
        /// Entry index.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// A consistency proof does not verify: the log forked or was rewritten.
    #[error("the log is not consistent between sizes {old} and {new}: it forked or was rewritten")]
    Inconsistent {
        /// The older size.
        old: u64,
        /// The newer size.
        new: u64,
    },
    /// The log shrank.
    #[error("the log shrank from {old} entries to {new}")]
    Shrank {
        /// The older size.
        old: u64,
        /// The newer size.
        new: u64,
    },
}

fn malformed(what: &'static str, detail: impl Into<String>) -> LogError {
    LogError::Malformed { what, detail: detail.into() }
}

/// One log entry: a statement about an accepted capture, with no personal data and no photo
/// bytes. Field order is the canonical (sorted) key order: do not reorder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEntry {
    /// The capture id (SHA-256 of the canonical manifest).
    pub capture_id: Sha256Hash,
    /// Election id.
    pub election: String,
    /// SHA-256 of the photo.
    pub photo_sha256: Sha256Hash,
    /// Precinct id.
    pub precinct: String,
    /// When the server stored the capture (ms since the Unix epoch).
    pub received_at_ms: u64,
    /// Entry format version: 1.
    pub v: u64,
}

impl LogEntry {
    /// The entry's canonical bytes: what is hashed into the tree and stored in entry tiles.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses canonical entry bytes, refusing anything else.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LogError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(malformed("entry", "too large"));
        }
        let e: Self =
            serde_json::from_slice(bytes).map_err(|e| malformed("entry", e.to_string()))?;
        if e.v != ENTRY_VERSION {
            return Err(malformed("entry", format!("unsupported version {}", e.v)));
        }
        // One range for a server time everywhere (receipts, entries, decisions): JSON numbers
        // every language reads exactly.
        if e.received_at_ms > crate::evidence::MAX_SAFE_INTEGER {
            return Err(malformed("entry", "received_at_ms above 2^53 - 1"));
        }
        check_id("election", &e.election).map_err(|e| malformed("entry", e.to_string()))?;
        check_id("precinct", &e.precinct).map_err(|e| malformed("entry", e.to_string()))?;
        if e.to_bytes() != bytes {
            return Err(malformed("entry", "not in canonical form"));
        }
        Ok(e)
    }

    /// The RFC 6962 leaf hash of this entry.
    pub fn leaf_hash(&self) -> Hash {
        tlog_tiles::record_hash(&self.to_bytes())
    }
}

/// A log's public identity: its origin line and its Ed25519 key, as a signed-note verifier key
/// (`<origin>+<key id hex>+<base64(0x01 || key)>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogKey {
    /// The origin line of its checkpoints.
    pub origin: String,
    /// The verifier key string.
    pub vkey: String,
}

impl LogKey {
    /// The identity of the log with this origin and signing key.
    pub fn for_signer(origin: &str, key: &SigningKey) -> Result<Self, LogError> {
        if !signed_note::is_key_name_valid(origin) {
            return Err(malformed("origin", "must be non-empty, without spaces or '+'"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            vkey: signed_note::new_ed25519_verifier_key(origin, &key.verifying_key()),
        })
    }

    /// Parses a verifier key string.
    pub fn from_vkey(vkey: &str) -> Result<Self, LogError> {
        let v = StandardVerifier::new(vkey).map_err(|e| malformed("log key", e.to_string()))?;
        Ok(Self { origin: signed_note::Verifier::name(&v).to_owned(), vkey: vkey.to_owned() })
    }

    /// Reads a log key as people and scripts hand it over: a signed-note verifier key
    /// (`<origin>+<key id>+<base64>`), or the JSON answer of `GET /api/v1/log/key`
    /// (`{"origin": …, "vkey": …}`), with surrounding white space.
    pub fn from_text(text: &str) -> Result<Self, LogError> {
        let text = text.trim();
        if !text.starts_with('{') {
            return Self::from_vkey(text);
        }
        #[derive(Deserialize)]
        struct KeyAnswer {
            vkey: String,
        }
        let answer = serde_json::from_str::<KeyAnswer>(text)
            .map_err(|e| malformed("log key answer", e.to_string()))?;
        Self::from_vkey(&answer.vkey)
    }
}

/// A verified checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The log's origin.
    pub origin: String,
    /// Number of entries.
    pub size: u64,
    /// Root hash of the tree of `size` entries.
    pub root: Hash,
    /// The signed note exactly as served.
    pub note: Vec<u8>,
}

/// Signs a checkpoint for a tree of `size` entries with root `root`. Deterministic: the same
/// log key, size and root always give the same bytes.
pub fn sign_checkpoint(
    origin: &str,
    size: u64,
    root: &Hash,
    key: &SigningKey,
) -> Result<Vec<u8>, LogError> {
    let body = tlog_tiles::Checkpoint::new(origin, size, *root, "")
        .map_err(|e| malformed("checkpoint", e.to_string()))?
        .to_bytes();
    let mut note = Note::new(&body, &[]).map_err(|e| malformed("checkpoint", e.to_string()))?;
    let skey = format!(
        "PRIVATE+KEY+{origin}+{:08x}+{}",
        signed_note::key_id(origin, &[&[1u8][..], &key.verifying_key().to_bytes()].concat()),
        B64.encode([&[1u8][..], &key.to_bytes()].concat())
    );
    let signer =
        signed_note::StandardSigner::new(&skey).map_err(|e| malformed("log key", e.to_string()))?;
    note.add_sigs(&[&signer]).map_err(|e| malformed("checkpoint", e.to_string()))?;
    Ok(note.to_bytes())
}

/// Parses a signed checkpoint and verifies it under the log's key.
pub fn verify_checkpoint(note: &[u8], key: &LogKey) -> Result<Checkpoint, LogError> {
    let verifier =
        StandardVerifier::new(&key.vkey).map_err(|e| malformed("log key", e.to_string()))?;
    let parsed = Note::from_bytes(note).map_err(|e| malformed("checkpoint", e.to_string()))?;
    parsed
        .verify(&VerifierList::new(vec![Box::new(verifier)]))
        .map_err(|_| LogError::BadCheckpointSignature)?;
    let body = tlog_tiles::Checkpoint::from_bytes(parsed.text())
        .map_err(|e| malformed("checkpoint", e.to_string()))?;
    if body.origin() != key.origin {
        return Err(LogError::WrongOrigin {
            found: body.origin().to_owned(),
            expected: key.origin.clone(),
        });
    }
    Ok(Checkpoint {
        origin: body.origin().to_owned(),
        size: body.size(),
        root: *body.hash(),
        note: note.to_vec(),
    })
}

/// Checks that `leaf` is entry `index` of the tree of `size` entries with root `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    root: &Hash,
    leaf: &Hash,
    proof: &[Hash],
) -> Result<(), LogError> {
    let bad = || LogError::BadInclusionProof { index, size };
    if index >= size {
        return Err(bad());
    }
    tlog_tiles::check_record(&proof.to_vec(), size, *root, index, *leaf).map_err(|_| bad())
}

/// Checks that the tree of `new_size` entries with root `new_root` extends the tree of
/// `old_size` entries with root `old_root` (append-only: nothing changed, nothing removed).
pub fn verify_consistency(
    old_size: u64,
    old_root: &Hash,
    new_size: u64,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), LogError> {
    if new_size < old_size {
        return Err(LogError::Shrank { old: old_size, new: new_size });
    }
    let bad = || LogError::Inconsistent { old: old_size, new: new_size };
    if old_size == 0 {
        return Err(bad());
    }
    tlog_tiles::check_tree(&proof.to_vec(), new_size, *new_root, old_size, *old_root)
        .map_err(|_| bad())
}

/// An inclusion proof in the C2SP `tlog-proof@v1` text form: the entry's index, the proof's
/// hashes, and the signed checkpoint they lead to.
#[derive(Clone, Debug, PartialEq)]
pub struct TlogProof {
    /// Entry index.
    pub index: u64,
    /// Proof hashes, leaf to root.
    pub hashes: Vec<Hash>,
    /// The signed checkpoint.
    pub checkpoint: Vec<u8>,
}

impl TlogProof {
    /// The text form.
    pub fn to_text(&self) -> String {
        let mut out = format!("{PROOF_HEADER}\nindex {}\n", self.index);
        for h in &self.hashes {
            out.push_str(&B64.encode(h.0));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&String::from_utf8_lossy(&self.checkpoint));
        out
    }

    /// Parses the text form (an `extra` line, if present, is ignored).
    pub fn from_text(text: &str) -> Result<Self, LogError> {
        let bad = |d: &str| malformed("proof", d);
        let (head, checkpoint) = text.split_once("\n\n").ok_or_else(|| bad("no blank line"))?;
        let mut lines = head.lines();
        if lines.next() != Some(PROOF_HEADER) {
            return Err(bad("wrong header line"));
        }
        let mut line = lines.next().ok_or_else(|| bad("no index line"))?;
        if line.starts_with("extra ") {
            line = lines.next().ok_or_else(|| bad("no index line"))?;
        }
        let index = line
            .strip_prefix("index ")
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| line == format!("index {n}"))
            .ok_or_else(|| bad("bad index line"))?;
        let mut hashes = Vec::new();
        for l in lines {
            let bytes = B64.decode(l).map_err(|_| bad("a proof line is not base64"))?;
            let hash: [u8; 32] =
                bytes.try_into().map_err(|_| bad("a proof hash is not 32 bytes"))?;
            hashes.push(Hash(hash));
            if hashes.len() > 64 {
                return Err(bad("too many proof lines"));
            }
        }
        Ok(Self { index, hashes, checkpoint: checkpoint.as_bytes().to_vec() })
    }

    /// Verifies the proof for `entry` under the log key; returns the checkpoint.
    pub fn verify(&self, entry: &LogEntry, key: &LogKey) -> Result<Checkpoint, LogError> {
        let cp = verify_checkpoint(&self.checkpoint, key)?;
        verify_inclusion(self.index, cp.size, &cp.root, &entry.leaf_hash(), &self.hashes)?;
        Ok(cp)
    }
}

/// The C2SP tlog-tiles path of a tile (height [`TILE_HEIGHT`]): `tile/<L>/<N>[.p/<W>]` for hash
/// tiles, `tile/entries/<N>[.p/<W>]` for entry bundles, where `<N>` is written in groups of three
/// digits, all but the last prefixed with `x`.
pub fn tile_path(tile: &tlog_tiles::Tile) -> String {
    let mut n = tile.level_index();
    let mut n_str = format!("{:03}", n % 1000);
    while n >= 1000 {
        n /= 1000;
        n_str = format!("x{:03}/{n_str}", n % 1000);
    }
    let partial = if tile.width() == 1 << TILE_HEIGHT {
        String::new()
    } else {
        format!(".p/{}", tile.width())
    };
    if tile.is_data() {
        format!("tile/entries/{n_str}{partial}")
    } else {
        format!("tile/{}/{n_str}{partial}", tile.level())
    }
}

/// Whether `tail` is a C2SP tile path: `<L>/<N>[.p/<W>]` or `entries/<N>[.p/<W>]`, `<N>` in
/// groups of three digits, all but the last prefixed with `x`
/// (the server's `GET /log/tile/{tail}` accepts exactly these; the fuzz target `tile` checks them).
pub fn is_tile_path(tail: &str) -> bool {
    let (main, partial) = match tail.split_once(".p/") {
        Some((m, w)) => (m, Some(w)),
        None => (tail, None),
    };
    let width_ok = |w: &str| w.parse::<u16>().is_ok_and(|w| (1..256).contains(&w));
    if let Some(w) = partial
        && (!width_ok(w) || w.starts_with('0'))
    {
        return false;
    }
    let mut parts = main.split('/');
    let level = parts.next().unwrap_or("");
    if level != "entries" && !(level.len() <= 2 && level.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    let rest: Vec<&str> = parts.collect();
    let Some((last, groups)) = rest.split_last() else { return false };
    last.len() == 3
        && last.bytes().all(|b| b.is_ascii_digit())
        && groups.iter().all(|g| {
            g.len() == 4 && g.starts_with('x') && g[1..].bytes().all(|b| b.is_ascii_digit())
        })
        && tile_of(level, groups, last, partial)
            .is_some_and(|t| tile_path(&t) == format!("tile/{tail}"))
}

/// The tile the parts of a well-formed tile path name, if it can exist (a level below 8: a tree
/// of 2^64 entries has no more; an index that fits 64 bits). With the comparison above, only
/// the path exactly as the core writes it is a tile path (`00/000` and `x000/001` are not):
/// found by the fuzz target `tile`, such paths were accepted and looked up as files.
fn tile_of(
    level: &str,
    groups: &[&str],
    last: &str,
    width: Option<&str>,
) -> Option<tlog_tiles::Tile> {
    let (level, is_data) =
        if level == "entries" { (0, true) } else { (level.parse::<u8>().ok()?, false) };
    let mut n = 0u64;
    for g in groups.iter().map(|g| &g[1..]).chain([last]) {
        n = n.checked_mul(1000)?.checked_add(g.parse::<u64>().ok()?)?;
    }
    let width = width.map_or(Some(1 << TILE_HEIGHT), |w| w.parse::<u32>().ok())?;
    (level < 8 && (1..=1 << TILE_HEIGHT).contains(&width))
        .then(|| tlog_tiles::Tile::new(TILE_HEIGHT, level, n, width, is_data))
}

/// Encodes entries as a C2SP entry bundle: each entry as a 2-byte big-endian length and its bytes.
pub fn entry_bundle<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&(e.len() as u16).to_be_bytes());
        out.extend_from_slice(e);
    }
    out
}

/// Splits an entry bundle into its entries.
pub fn parse_entry_bundle(bytes: &[u8]) -> Result<Vec<&[u8]>, LogError> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.len() < 2 {
            return Err(malformed("entry bundle", "truncated length"));
        }
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let body =
            rest.get(2..2 + len).ok_or_else(|| malformed("entry bundle", "truncated entry"))?;
        out.push(body);
        rest = &rest[2 + len..];
        if out.len() > 1 << TILE_HEIGHT {
            return Err(malformed("entry bundle", "more than 256 entries"));
        }
    }
    Ok(out)
}

/// Decodes a base64 hash (as in checkpoints and proofs).
pub fn hash_from_base64(s: &str) -> Option<Hash> {
    let bytes = B64.decode(s).ok()?;
    Some(Hash(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::{Path, PathBuf};

    #[test]
    fn tile_paths() {
        for ok in [
            "0/000",
            "1/x001/x234/067",
            "0/005.p/17",
            "entries/x001/000.p/3",
            "entries/000",
            "7/x018/x446/x744/x073/x709/x551/615",
        ] {
            assert!(is_tile_path(ok), "{ok}");
        }
        for bad in [
            "",
            "0",
            "0/00",
            "0/0000",
            "../000",
            "0/../000",
            "0/000.p/0",
            "0/000.p/256",
            "0/000.p/017",
            "x/000",
            "0/x01/000",
            "entries/000/..",
            "0/000/",
            "123/000",
            // Found by the fuzz target `tile`: well-formed but not the path of any tile.
            "/464",
            "00/000",
            "01/000",
            "x000/001",
            "0/x000/001",
            "8/000",
            "0/x018/x446/x744/x073/x709/x551/616",
        ] {
            assert!(!is_tile_path(bad), "{bad}");
        }
    }

    fn vectors(dir: &str) -> Vec<(PathBuf, serde_json::Value)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/vectors/transparency-dev-merkle/testdata")
            .join(dir);
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "json") {
                    let v = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                    out.push((p, v));
                }
            }
        }
        assert!(!out.is_empty(), "no vectors under {}", root.display());
        out
    }

    fn h(v: &serde_json::Value) -> Option<Hash> {
        v.as_str().and_then(hash_from_base64)
    }

    /// A consistency vector's two roots. Some vectors compare equal-size trees with byte strings
    /// that are not hashes ("don't care"); such roots can only match themselves, so equal
    /// strings stand for one (any) hash and unequal ones can never verify.
    fn roots(a: &serde_json::Value, b: &serde_json::Value) -> Option<(Hash, Hash)> {
        match (h(a), h(b)) {
            (Some(x), Some(y)) => Some((x, y)),
            _ if a.as_str().is_some_and(|s| !s.is_empty()) && a == b => {
                Some((Hash([7; 32]), Hash([7; 32])))
            }
            _ => None,
        }
    }

    fn proof(v: &serde_json::Value) -> Option<Vec<Hash>> {
        match v {
            serde_json::Value::Null => Some(Vec::new()),
            serde_json::Value::Array(a) => a.iter().map(h).collect(),
            _ => None,
        }
    }

    #[test]
    fn transparency_dev_inclusion_vectors() {
        let all = vectors("inclusion");
        for (path, v) in &all {
            let want_err = v["wantErr"].as_bool().unwrap();
            let verdict = match (h(&v["root"]), h(&v["leafHash"]), proof(&v["proof"])) {
                (Some(root), Some(leaf), Some(p)) => verify_inclusion(
                    v["leafIdx"].as_u64().unwrap(),
                    v["treeSize"].as_u64().unwrap(),
                    &root,
                    &leaf,
                    &p,
                )
                .is_ok(),
                _ => false, // an empty or malformed hash can never verify
            };
            assert_eq!(verdict, !want_err, "{}", path.display());
        }
        assert!(all.len() > 60, "{} inclusion vectors", all.len());
    }

    #[test]
    fn transparency_dev_consistency_vectors() {
        let all = vectors("consistency");
        for (path, v) in &all {
            let want_err = v["wantErr"].as_bool().unwrap();
            let verdict = match (roots(&v["root1"], &v["root2"]), proof(&v["proof"])) {
                (Some((r1, r2)), Some(p)) => verify_consistency(
                    v["size1"].as_u64().unwrap(),
                    &r1,
                    v["size2"].as_u64().unwrap(),
                    &r2,
                    &p,
                )
                .is_ok(),
                _ => false,
            };
            assert_eq!(verdict, !want_err, "{}", path.display());
        }
        assert!(all.len() > 60, "{} consistency vectors", all.len());
    }

    /// An in-memory tree for the property tests.
    struct Tree {
        hashes: Vec<Hash>,
    }

    impl tlog_tiles::HashReader for Tree {
        fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
            Ok(indexes.iter().map(|i| self.hashes[*i as usize]).collect())
        }
    }

    fn tree(n: u64) -> (Tree, Vec<Hash>) {
        let mut t = Tree { hashes: Vec::new() };
        let mut leaves = Vec::new();
        for i in 0..n {
            let leaf = tlog_tiles::record_hash(format!("entry {i}").as_bytes());
            leaves.push(leaf);
            let new = tlog_tiles::stored_hashes_for_record_hash(i, leaf, &t).unwrap();
            t.hashes.extend(new);
        }
        (t, leaves)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn every_inclusion_proof_verifies_and_every_bit_flip_fails(
            n in 1u64..300, pick in any::<prop::sample::Index>(), bit in 0..256usize,
        ) {
            let (t, leaves) = tree(n);
            let root = tlog_tiles::tree_hash(n, &t).unwrap();
            let i = pick.index(n as usize) as u64;
            let p = tlog_tiles::prove_record(n, i, &t).unwrap();
            prop_assert!(verify_inclusion(i, n, &root, &leaves[i as usize], &p).is_ok());
            let flip = |h: &Hash| { let mut x = *h; x.0[bit / 8] ^= 1 << (bit % 8); x };
            prop_assert!(verify_inclusion(i, n, &flip(&root), &leaves[i as usize], &p).is_err());
            prop_assert!(verify_inclusion(i, n, &root, &flip(&leaves[i as usize]), &p).is_err());
            for k in 0..p.len() {
                let mut q = p.clone();
                q[k] = flip(&q[k]);
                prop_assert!(verify_inclusion(i, n, &root, &leaves[i as usize], &q).is_err());
            }
            if n > 1 {
                let other = (i + 1) % n;
                prop_assert!(verify_inclusion(other, n, &root, &leaves[i as usize], &p).is_err());
            }
        }

        #[test]
        fn every_consistency_proof_verifies_and_every_bit_flip_fails(
            n in 2u64..300, pick in any::<prop::sample::Index>(), bit in 0..256usize,
        ) {
            let (t, _) = tree(n);
            let m = 1 + pick.index(n as usize - 1) as u64;
            let old = tlog_tiles::tree_hash(m, &t).unwrap();
            let new = tlog_tiles::tree_hash(n, &t).unwrap();
            let p = tlog_tiles::prove_tree(n, m, &t).unwrap();
            prop_assert!(verify_consistency(m, &old, n, &new, &p).is_ok());
            let flip = |h: &Hash| { let mut x = *h; x.0[bit / 8] ^= 1 << (bit % 8); x };
            prop_assert!(verify_consistency(m, &flip(&old), n, &new, &p).is_err());
            prop_assert!(verify_consistency(m, &old, n, &flip(&new), &p).is_err());
            for k in 0..p.len() {
                let mut q = p.clone();
                q[k] = flip(&q[k]);
                prop_assert!(verify_consistency(m, &old, n, &new, &q).is_err());
            }
            prop_assert_eq!(
                verify_consistency(n, &new, m, &old, &p),
                Err(LogError::Shrank { old: n, new: m })
            );
        }
    }

    #[test]
    fn tile_paths_follow_c2sp() {
        let t = |l, n, w, data| {
            let mut t = tlog_tiles::Tile::new(TILE_HEIGHT, l, n, w, false);
            if data {
                t.set_is_data();
            }
            tile_path(&t)
        };
        assert_eq!(t(0, 0, 256, false), "tile/0/000");
        assert_eq!(t(1, 1234067, 256, false), "tile/1/x001/x234/067");
        assert_eq!(t(0, 5, 17, false), "tile/0/005.p/17");
        assert_eq!(t(0, 1000, 3, true), "tile/entries/x001/000.p/3");
        let bundle = entry_bundle([&b"ab"[..], &b""[..], &b"xyz"[..]]);
        assert_eq!(bundle, b"\0\x02ab\0\0\0\x03xyz");
        assert_eq!(parse_entry_bundle(&bundle).unwrap(), vec![&b"ab"[..], &b""[..], &b"xyz"[..]]);
        assert!(parse_entry_bundle(&bundle[..bundle.len() - 1]).is_err());
    }

    #[test]
    fn checkpoints_sign_verify_and_refuse_tampering() {
        let key = SigningKey::from_bytes(&[4; 32]);
        let log = LogKey::for_signer("hattama.example/log", &key).unwrap();
        let root = tlog_tiles::record_hash(b"x");
        let note = sign_checkpoint(&log.origin, 7, &root, &key).unwrap();
        assert_eq!(note, sign_checkpoint(&log.origin, 7, &root, &key).unwrap(), "deterministic");
        let cp = verify_checkpoint(&note, &log).unwrap();
        assert_eq!((cp.size, cp.root), (7, root));
        let text = String::from_utf8(note.clone()).unwrap();
        let forged = text.replacen("\n7\n", "\n8\n", 1);
        assert_eq!(
            verify_checkpoint(forged.as_bytes(), &log),
            Err(LogError::BadCheckpointSignature)
        );
        let other =
            LogKey::for_signer("hattama.example/log", &SigningKey::from_bytes(&[5; 32])).unwrap();
        assert!(verify_checkpoint(&note, &other).is_err());
        assert_eq!(LogKey::from_vkey(&log.vkey).unwrap(), log);
    }

    #[test]
    fn tlog_proof_text_round_trips_and_verifies() {
        let key = SigningKey::from_bytes(&[4; 32]);
        let log = LogKey::for_signer("hattama.example/log", &key).unwrap();
        let entry = LogEntry {
            capture_id: Sha256Hash::of(b"m"),
            election: "e".into(),
            photo_sha256: Sha256Hash::of(b"p"),
            precinct: "p1".into(),
            received_at_ms: 5,
            v: 1,
        };
        assert_eq!(LogEntry::from_bytes(&entry.to_bytes()).unwrap(), entry);
        for (t, ok) in [(1 << 53, false), ((1 << 53) - 1, true)] {
            let e = LogEntry { received_at_ms: t, ..entry.clone() };
            assert_eq!(LogEntry::from_bytes(&e.to_bytes()).is_ok(), ok, "received_at_ms {t}");
        }
        let mut t = Tree { hashes: Vec::new() };
        let leaves =
            [tlog_tiles::record_hash(b"a"), entry.leaf_hash(), tlog_tiles::record_hash(b"c")];
        for (i, l) in leaves.iter().enumerate() {
            let new = tlog_tiles::stored_hashes_for_record_hash(i as u64, *l, &t).unwrap();
            t.hashes.extend(new);
        }
        let root = tlog_tiles::tree_hash(3, &t).unwrap();
        let proof = TlogProof {
            index: 1,
            hashes: tlog_tiles::prove_record(3, 1, &t).unwrap(),
            checkpoint: sign_checkpoint(&log.origin, 3, &root, &key).unwrap(),
        };
        let text = proof.to_text();
        assert!(text.starts_with("c2sp.org/tlog-proof@v1\nindex 1\n"), "{text}");
        let back = TlogProof::from_text(&text).unwrap();
        assert_eq!(back, proof);
        assert_eq!(back.verify(&entry, &log).unwrap().size, 3);
        let mut wrong = entry.clone();
        wrong.precinct = "p2".into();
        assert!(back.verify(&wrong, &log).is_err());
        assert!(TlogProof::from_text(&text.replacen("index 1", "index 01", 1)).is_err());
    }
}
