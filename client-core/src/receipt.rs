//! Server receipts: the server's signed statement that it durably stored a capture.
//!
//! Defined here, once, so the server signs and the device verifies with the same code; the
//! exact rules are in `docs/receipts.md`. The encoding is the evidence format's canonical JSON
//! (sorted keys, no white space, integers only), signed with the domain prefix
//! [`RECEIPT_PREFIX`].

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::evidence::{DeviceKey, MAX_SAFE_INTEGER, Sha256Hash, parse_lower_hex};
use crate::log::{Checkpoint, LogEntry, LogError, LogKey, TlogProof};

/// The domain-separation prefix of a receipt signature.
pub const RECEIPT_PREFIX: &[u8] = b"hattama/receipt/v1\n";

/// Largest receipt body accepted, in bytes.
pub const MAX_RECEIPT_BYTES: usize = 16 * 1024;

/// What a receipt states. Field order is the canonical (sorted) key order: do not reorder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// The capture id: SHA-256 of the canonical manifest.
    pub capture_id: Sha256Hash,
    /// The device that signed the manifest.
    pub device_key: DeviceKey,
    /// SHA-256 of the stored photo.
    pub photo_sha256: Sha256Hash,
    /// When the server stored it, ms since the Unix epoch (server clock).
    pub received_at_ms: u64,
    /// The server's receipt public key (hex), the key that signs this receipt.
    pub server_key: DeviceKey,
    /// Receipt format version: 1.
    pub v: u64,
}

/// A receipt as it travels: the statement and the server's signature over its canonical bytes,
/// and where the capture stands in the public log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    /// The statement.
    pub receipt: Receipt,
    /// 128 lowercase hex digits of the ed25519 signature over
    /// `RECEIPT_PREFIX || canonical(receipt)`.
    pub signature: String,
    /// The capture's log entry and its inclusion proof (not covered by `signature`: the proof
    /// is checked against the log's signed checkpoint instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<ReceiptLog>,
}

/// A receipt's place in the public log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptLog {
    /// The entry's index in the log.
    pub index: u64,
    /// The entry's canonical bytes (`docs/transparency-log.md`).
    pub entry: String,
    /// The inclusion proof in the C2SP tlog-proof text form, with the signed checkpoint.
    pub proof: String,
}

/// Why a receipt was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReceiptError {
    /// Not a receipt of this format.
    #[error("receipt is malformed: {0}")]
    Malformed(String),
    /// Signed by a key other than the pinned one.
    #[error("receipt is signed by an unexpected server key")]
    WrongServerKey,
    /// The signature does not verify.
    #[error("receipt signature does not verify")]
    BadSignature,
    /// The receipt is about another capture or photo.
    #[error("receipt does not match the capture: {0}")]
    Mismatch(&'static str),
    /// The receipt carries no place in the public log (`log` is missing).
    #[error("receipt carries no log entry and inclusion proof")]
    NoLogProof,
    /// The receipt's log entry or inclusion proof is refused.
    #[error("receipt's log proof does not verify: {0}")]
    Log(#[from] LogError),
}

/// A receipt's place in the public log, verified.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedLog {
    /// The entry.
    pub entry: LogEntry,
    /// The entry's index.
    pub index: u64,
    /// The signed checkpoint the inclusion proof leads to.
    pub checkpoint: Checkpoint,
}

impl Receipt {
    /// The canonical bytes of the receipt.
    pub fn to_canonical(&self) -> Vec<u8> {
        // Infallible for this type: strings, integers and objects only.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Signs the receipt with the server's key.
    pub fn sign(self, key: &SigningKey) -> SignedReceipt {
        let mut msg = RECEIPT_PREFIX.to_vec();
        msg.extend_from_slice(&self.to_canonical());
        let signature = hex::encode(key.sign(&msg).to_bytes());
        SignedReceipt { receipt: self, signature, log: None }
    }
}

impl SignedReceipt {
    /// Verifies the receipt strictly under the pinned server key, and that it is about the
    /// capture `capture_id` with photo `photo_sha256`.
    pub fn verify(
        &self,
        pinned: &DeviceKey,
        capture_id: &Sha256Hash,
        photo_sha256: &Sha256Hash,
    ) -> Result<(), ReceiptError> {
        let r = &self.receipt;
        if r.v != 1 || r.received_at_ms > MAX_SAFE_INTEGER {
            return Err(ReceiptError::Malformed("unsupported version or time".into()));
        }
        if r.server_key != *pinned {
            return Err(ReceiptError::WrongServerKey);
        }
        let sig = parse_lower_hex::<64>(&self.signature).ok_or(ReceiptError::BadSignature)?;
        let key = VerifyingKey::from_bytes(&pinned.0).map_err(|_| ReceiptError::WrongServerKey)?;
        let mut msg = RECEIPT_PREFIX.to_vec();
        msg.extend_from_slice(&r.to_canonical());
        key.verify_strict(&msg, &Signature::from_bytes(&sig))
            .map_err(|_| ReceiptError::BadSignature)?;
        if r.capture_id != *capture_id {
            return Err(ReceiptError::Mismatch("capture id"));
        }
        if r.photo_sha256 != *photo_sha256 {
            return Err(ReceiptError::Mismatch("photo hash"));
        }
        Ok(())
    }

    /// Verifies the receipt's place in the public log (`docs/receipts.md`): `log` is present,
    /// its entry is canonical and states this receipt's capture, photo and time and the
    /// capture's `election` and `precinct`, and its inclusion proof leads to a checkpoint
    /// signed with the pinned `log_key`. Call after [`Self::verify`] (which checks the
    /// statement the entry is compared with).
    pub fn verify_log(
        &self,
        log_key: &LogKey,
        election: &str,
        precinct: &str,
    ) -> Result<VerifiedLog, ReceiptError> {
        let log = self.log.as_ref().ok_or(ReceiptError::NoLogProof)?;
        let entry = LogEntry::from_bytes(log.entry.as_bytes())?;
        let r = &self.receipt;
        let checks = [
            (entry.capture_id == r.capture_id, "log entry capture id"),
            (entry.photo_sha256 == r.photo_sha256, "log entry photo hash"),
            (entry.received_at_ms == r.received_at_ms, "log entry time"),
            (entry.election == election, "log entry election"),
            (entry.precinct == precinct, "log entry precinct"),
        ];
        if let Some((_, what)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(ReceiptError::Mismatch(what));
        }
        let proof = TlogProof::from_text(&log.proof)?;
        if proof.index != log.index {
            return Err(ReceiptError::Mismatch("log index"));
        }
        let checkpoint = proof.verify(&entry, log_key)?;
        Ok(VerifiedLog { entry, index: log.index, checkpoint })
    }

    /// Parses a receipt from JSON bytes, with a size limit.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ReceiptError> {
        if bytes.len() > MAX_RECEIPT_BYTES {
            return Err(ReceiptError::Malformed("too large".into()));
        }
        serde_json::from_slice(bytes).map_err(|e| ReceiptError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let server = SigningKey::from_bytes(&[9; 32]);
        let pinned = DeviceKey(server.verifying_key().to_bytes());
        let id = Sha256Hash::of(b"manifest");
        let photo = Sha256Hash::of(b"photo");
        let r = Receipt {
            capture_id: id,
            device_key: DeviceKey([1; 32]),
            photo_sha256: photo,
            received_at_ms: 5,
            server_key: pinned,
            v: 1,
        }
        .sign(&server);
        assert_eq!(r.verify(&pinned, &id, &photo), Ok(()));
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(SignedReceipt::from_json(&json).unwrap(), r);
        assert_eq!(r.verify(&pinned, &photo, &photo), Err(ReceiptError::Mismatch("capture id")));
        let other = DeviceKey(SigningKey::from_bytes(&[8; 32]).verifying_key().to_bytes());
        assert_eq!(r.verify(&other, &id, &photo), Err(ReceiptError::WrongServerKey));
        let mut forged = r.clone();
        forged.receipt.received_at_ms = 6;
        assert_eq!(forged.verify(&pinned, &id, &photo), Err(ReceiptError::BadSignature));
        // The canonical form has sorted keys.
        let bytes = r.receipt.to_canonical();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(serde_json::to_vec(&v).unwrap(), bytes);
    }
}
