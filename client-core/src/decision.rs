//! The coordinators' review decisions, told to the device that took the photo.
//!
//! A coordinator who rejects a photo ("unreadable") wants a retake while the observer may still
//! be at the station; the device learns the decision at its next sync. The server tells each
//! device only about its own captures, after the device proved it holds its key (a signature
//! over a fresh challenge from the server), and signs every decision with its receipt key, so
//! the device stores only statements of the server it pinned at enrollment. Defined here, once:
//! the server signs and answers with this code, the device verifies with it. The exact bytes
//! are in `docs/receipts.md` ("Review decisions") and the requests in `docs/sync-protocol.md`.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::evidence::{DeviceKey, MAX_SAFE_INTEGER, Sha256Hash, parse_lower_hex};

/// The domain-separation prefix of a decision statement's signature.
pub const DECISION_PREFIX: &[u8] = b"hattama/decision/v1\n";

/// The domain-separation prefix of the device's signature on a request for its decisions.
pub const REQUEST_PREFIX: &[u8] = b"hattama/decisions-request/v1\n";

/// Largest answer to a request for decisions.
pub const MAX_ANSWER_BYTES: usize = 8 << 20;

/// Longest challenge the device accepts from the server.
pub const MAX_CHALLENGE_BYTES: usize = 512;

/// What a coordinator decided about a capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// A readable protocol of the right station: nothing more to do.
    Accepted,
    /// Not usable (the reason says why): the observer should take the photo again.
    Rejected,
    /// Handed to a supervisor: still under review.
    Flagged,
}

impl DecisionKind {
    /// The spelling in statements and stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Flagged => "flagged",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Accepted, Self::Rejected, Self::Flagged].into_iter().find(|k| k.as_str() == s)
    }
}

/// The server's statement of the newest review decision on one capture. Field order is the
/// canonical (sorted) key order: do not reorder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// The capture: SHA-256 of its canonical manifest.
    pub capture_id: Sha256Hash,
    /// When the coordinator decided, ms since the Unix epoch (server clock).
    pub decided_at_ms: u64,
    /// The device that signed the capture (the only one told).
    pub device_key: DeviceKey,
    /// What was decided.
    pub kind: DecisionKind,
    /// Why, for a rejection: `not_a_protocol`, `unreadable`, `wrong_precinct` or `duplicate`
    /// (lowercase letters and `_`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The server's receipt public key, the key that signs this statement.
    pub server_key: DeviceKey,
    /// Format version: 1.
    pub v: u64,
}

/// A decision as it travels: the statement and the server's signature over its canonical bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedDecision {
    /// The statement.
    pub decision: Decision,
    /// 128 lowercase hex digits of the ed25519 signature over
    /// `DECISION_PREFIX || canonical(decision)`.
    pub signature: String,
}

/// Why a decision statement was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecisionError {
    /// Not a statement of this format.
    #[error("decision is malformed: {0}")]
    Malformed(&'static str),
    /// Signed by a key other than the pinned one.
    #[error("decision is signed by an unexpected server key")]
    WrongServerKey,
    /// The signature does not verify.
    #[error("decision signature does not verify")]
    BadSignature,
    /// About another device's capture.
    #[error("decision is about another device's capture")]
    OtherDevice,
}

impl Decision {
    /// The canonical bytes of the statement.
    pub fn to_canonical(&self) -> Vec<u8> {
        // Infallible for this type: strings, integers and objects only.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Signs the statement with the server's receipt key.
    pub fn sign(self, key: &SigningKey) -> SignedDecision {
        let signature = hex::encode(key.sign(&signed_message(&self)).to_bytes());
        SignedDecision { decision: self, signature }
    }
}

fn signed_message(d: &Decision) -> Vec<u8> {
    let mut msg = DECISION_PREFIX.to_vec();
    msg.extend_from_slice(&d.to_canonical());
    msg
}

impl SignedDecision {
    /// Verifies the statement strictly under the pinned server key, and that it is about a
    /// capture of the device `own`.
    pub fn verify(&self, pinned: &DeviceKey, own: &DeviceKey) -> Result<(), DecisionError> {
        let d = &self.decision;
        if d.v != 1 || d.decided_at_ms > MAX_SAFE_INTEGER {
            return Err(DecisionError::Malformed("unsupported version or time"));
        }
        let reason_ok = |r: &String| {
            (1..=64).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        };
        if !d.reason.as_ref().is_none_or(reason_ok) {
            return Err(DecisionError::Malformed("reason"));
        }
        if d.server_key != *pinned {
            return Err(DecisionError::WrongServerKey);
        }
        let sig = parse_lower_hex::<64>(&self.signature).ok_or(DecisionError::BadSignature)?;
        let key = VerifyingKey::from_bytes(&pinned.0).map_err(|_| DecisionError::WrongServerKey)?;
        key.verify_strict(&signed_message(d), &Signature::from_bytes(&sig))
            .map_err(|_| DecisionError::BadSignature)?;
        if d.device_key != *own {
            return Err(DecisionError::OtherDevice);
        }
        Ok(())
    }
}

/// The bytes a device signs to ask for its decisions: [`REQUEST_PREFIX`], the server's
/// challenge, a line feed, and the device key in lowercase hex.
pub fn request_message(challenge: &str, device_key_hex: &str) -> Vec<u8> {
    let mut msg = REQUEST_PREFIX.to_vec();
    msg.extend_from_slice(challenge.as_bytes());
    msg.push(b'\n');
    msg.extend_from_slice(device_key_hex.as_bytes());
    msg
}

/// The answer to a request for decisions: the newest decision on each of the device's
/// captures that has one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionsAnswer {
    /// The statements.
    pub decisions: Vec<SignedDecision>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(server: &SigningKey, device: DeviceKey) -> Decision {
        Decision {
            capture_id: Sha256Hash::of(b"m"),
            decided_at_ms: 1_795_572_188_364,
            device_key: device,
            kind: DecisionKind::Rejected,
            reason: Some("unreadable".into()),
            server_key: DeviceKey(server.verifying_key().to_bytes()),
            v: 1,
        }
    }

    #[test]
    fn a_signed_decision_verifies_only_under_the_pinned_key_for_its_device() {
        let server = SigningKey::from_bytes(&[7; 32]);
        let pinned = DeviceKey(server.verifying_key().to_bytes());
        let device = DeviceKey([9; 32]);
        let signed = statement(&server, device).sign(&server);
        signed.verify(&pinned, &device).unwrap();
        // The exact bytes signed (docs/receipts.md shows this example).
        let canonical = String::from_utf8(signed.decision.to_canonical()).unwrap();
        assert_eq!(
            canonical,
            format!(
                "{{\"capture_id\":\"{}\",\"decided_at_ms\":1795572188364,\"device_key\":\"{}\",\
                 \"kind\":\"rejected\",\"reason\":\"unreadable\",\"server_key\":\"{}\",\"v\":1}}",
                Sha256Hash::of(b"m").to_hex(),
                "09".repeat(32),
                pinned.to_hex()
            )
        );
        assert_eq!(signed.verify(&pinned, &DeviceKey([8; 32])), Err(DecisionError::OtherDevice));
        let other = SigningKey::from_bytes(&[6; 32]);
        let other_pinned = DeviceKey(other.verifying_key().to_bytes());
        assert_eq!(signed.verify(&other_pinned, &device), Err(DecisionError::WrongServerKey));
        // A changed field breaks the signature; a signature by another key too.
        let mut changed = signed.clone();
        changed.decision.kind = DecisionKind::Accepted;
        assert_eq!(changed.verify(&pinned, &device), Err(DecisionError::BadSignature));
        let mut forged = statement(&server, device).sign(&other);
        assert_eq!(forged.verify(&pinned, &device), Err(DecisionError::BadSignature));
        forged.signature = "zz".into();
        assert_eq!(forged.verify(&pinned, &device), Err(DecisionError::BadSignature));
        let mut odd = statement(&server, device);
        odd.reason = Some("Not A Code".into());
        assert!(matches!(
            odd.sign(&server).verify(&pinned, &device),
            Err(DecisionError::Malformed(_))
        ));
        // Accepted: no reason, and none in the canonical bytes.
        let mut accepted = statement(&server, device);
        (accepted.kind, accepted.reason) = (DecisionKind::Accepted, None);
        assert!(!String::from_utf8(accepted.to_canonical()).unwrap().contains("reason"));
        accepted.sign(&server).verify(&pinned, &device).unwrap();
        // Unknown fields are refused.
        let mut json = serde_json::to_value(&signed).unwrap();
        json["decision"]["extra"] = 1.into();
        assert!(serde_json::from_value::<SignedDecision>(json).is_err());
    }
}
