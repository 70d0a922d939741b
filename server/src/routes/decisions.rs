//! `POST /api/v1/challenge` and `POST /api/v1/decisions`: the coordinators' review decisions,
//! told only to the device that took the photos (`docs/sync-protocol.md`, "Review decisions").
//!
//! A device proves it holds its key by signing a fresh challenge; the challenge is the server's
//! own signed statement of when it was issued, so the server keeps no state for it and a
//! signed request can be replayed only until the challenge expires. Each decision is signed
//! with the receipt key (`hattama_core::decision`).

use std::time::Duration;

use actix_web::{HttpResponse, web};
use ed25519_dalek::{Signature, Signer, VerifyingKey};
use hattama_core::decision::{self, Decision, DecisionKind, DecisionsAnswer};
use hattama_core::evidence::{DeviceKey, MAX_SAFE_INTEGER, parse_lower_hex};
use serde::Deserialize;

use super::read_body;
use crate::error::ApiError;
use crate::ingest::now_ms;
use crate::startup::AppState;
use crate::storage::device_id;

/// How long a challenge may be used.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(300);

/// The domain-separation prefix of the server's signature on its challenges.
const CHALLENGE_PREFIX: &[u8] = b"hattama/challenge/v1\n";

/// Largest request for decisions.
const MAX_REQUEST_BYTES: usize = 4096;

/// Most decisions answered at once (a device takes far fewer photos).
const MAX_DECISIONS: usize = 10_000;

/// Answers a fresh challenge: `<issued_at_ms>.<32 hex random>.<128 hex signature>`, the
/// signature by the receipt key over `CHALLENGE_PREFIX` and the first two parts.
pub async fn challenge(state: web::Data<AppState>) -> HttpResponse {
    let nonce: [u8; 16] = rand::random();
    let body = format!("{}.{}", now_ms(), hex::encode(nonce));
    let signature = state.keys.receipt.sign(&challenge_message(&body));
    let challenge = format!("{body}.{}", hex::encode(signature.to_bytes()));
    HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(serde_json::json!({
        "challenge": challenge,
        "expires_in_s": CHALLENGE_TTL.as_secs(),
    }))
}

fn challenge_message(body: &str) -> Vec<u8> {
    let mut msg = CHALLENGE_PREFIX.to_vec();
    msg.extend_from_slice(body.as_bytes());
    msg
}

/// Checks that `challenge` is one this server issued less than [`CHALLENGE_TTL`] ago.
fn check_challenge(state: &AppState, challenge: &str, now: u64) -> Result<(), ApiError> {
    let bad = || ApiError::new(400, "bad_challenge", "not a challenge of this server");
    let (body, sig) = challenge.rsplit_once('.').ok_or_else(bad)?;
    let sig = parse_lower_hex::<64>(sig).ok_or_else(bad)?;
    state
        .keys
        .receipt
        .verifying_key()
        .verify_strict(&challenge_message(body), &Signature::from_bytes(&sig))
        .map_err(|_| bad())?;
    let issued: u64 = body.split_once('.').and_then(|(t, _)| t.parse().ok()).ok_or_else(bad)?;
    let ttl = CHALLENGE_TTL.as_millis() as u64;
    if issued > now.saturating_add(60_000) || now.saturating_sub(issued) > ttl {
        return Err(ApiError::new(
            400,
            "challenge_expired",
            "the challenge expired: ask for a new one",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionsRequest {
    challenge: String,
    device_key: String,
    signature: String,
}

/// Answers the newest decision on each of the requesting device's captures, each signed.
pub async fn decisions(
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, MAX_REQUEST_BYTES).await?;
    let req: DecisionsRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(400, "bad_json", format!("not a request for decisions: {e}")))?;
    let key = parse_lower_hex::<32>(&req.device_key).ok_or_else(|| {
        ApiError::new(400, "bad_key", "device_key must be 64 lowercase hex digits")
    })?;
    let verifying = VerifyingKey::from_bytes(&key)
        .map_err(|_| ApiError::new(400, "bad_key", "device_key is not an ed25519 public key"))?;
    check_challenge(&state, &req.challenge, now_ms())?;
    let sig = parse_lower_hex::<64>(&req.signature).ok_or_else(|| {
        ApiError::new(400, "bad_signature", "signature must be 128 lowercase hex digits")
    })?;
    verifying
        .verify_strict(
            &decision::request_message(&req.challenge, &req.device_key),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| ApiError::new(400, "bad_signature", "signature does not verify"))?;
    let device_key = DeviceKey(key);
    let (storage, review) = (state.storage.clone(), state.review.clone());
    let stored = web::block(move || {
        let admission = storage.admission("", "", &device_key)?;
        if !admission.device_known {
            return Ok(Err(ApiError::new(403, "device_unknown", "this device is not enrolled")));
        }
        if admission.device_revoked {
            return Ok(Err(ApiError::new(403, "device_revoked", "this device was revoked")));
        }
        review.device_decisions(&device_id(&device_key), MAX_DECISIONS).map(Ok)
    })
    .await??;
    let server_key = state.keys.receipt_public();
    let decisions = stored?
        .into_iter()
        .map(|(capture_id, d)| {
            let kind = d.kind;
            Decision {
                capture_id,
                decided_at_ms: d.at_ms.min(MAX_SAFE_INTEGER),
                device_key,
                kind,
                // A flag's note is the coordinators' own words: only a rejection's reason
                // (one of a few codes) goes to the device.
                reason: if kind == DecisionKind::Rejected { d.reason } else { None },
                server_key,
                v: 1,
            }
            .sign(&state.keys.receipt)
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(DecisionsAnswer { decisions }))
}
