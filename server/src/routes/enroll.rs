//! `POST /api/v1/enroll`: a device enrolls with a one-time code.

use actix_web::{HttpResponse, web};
use ed25519_dalek::{Signature, VerifyingKey};
use hattama_core::evidence::{DeviceKey, parse_lower_hex};
use serde::Deserialize;

use super::read_body;
use crate::error::ApiError;
use crate::ingest::now_ms;
use crate::startup::AppState;
use crate::storage::EnrollRefusal;

/// Largest enrollment request.
const MAX_ENROLL_BYTES: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollRequest {
    code: String,
    device_key: String,
    signature: String,
}

/// The message a device signs to enroll.
pub fn enroll_message(code: &str, device_key_hex: &str) -> Vec<u8> {
    format!("hattama/enroll/v1\n{code}\n{device_key_hex}").into_bytes()
}

/// Enrolls the device and answers its election package and the server's receipt key.
pub async fn enroll(
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, MAX_ENROLL_BYTES).await?;
    let req: EnrollRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(400, "bad_json", format!("not an enrollment request: {e}")))?;
    let key = parse_lower_hex::<32>(&req.device_key).ok_or_else(|| {
        ApiError::new(400, "bad_key", "device_key must be 64 lowercase hex digits")
    })?;
    let verifying = VerifyingKey::from_bytes(&key)
        .map_err(|_| ApiError::new(400, "bad_key", "device_key is not an ed25519 public key"))?;
    let sig = parse_lower_hex::<64>(&req.signature).ok_or_else(|| {
        ApiError::new(400, "bad_signature", "signature must be 128 lowercase hex digits")
    })?;
    verifying
        .verify_strict(&enroll_message(&req.code, &req.device_key), &Signature::from_bytes(&sig))
        .map_err(|_| ApiError::new(400, "bad_signature", "signature does not verify"))?;
    if req.code.len() > 64 {
        return Err(ApiError::new(403, "bad_code", "unknown enrollment code"));
    }
    let storage = state.storage.clone();
    // A code typed by a person (any case, spaces, `O` for `0`) is read as the code it means;
    // the signature covers the code as sent.
    let code = hattama_core::invite::canonical_code(&req.code);
    let device = web::block(move || storage.enroll(&code, &DeviceKey(key), now_ms()))
        .await??
        .map_err(|refusal| match refusal {
            EnrollRefusal::UnknownCode => ApiError::new(403, "bad_code", "unknown enrollment code"),
            EnrollRefusal::CodeUsed => {
                ApiError::new(409, "code_used", "this code was used already")
            }
            EnrollRefusal::OtherElection { observes, code_for } => ApiError::new(
                409,
                "other_election",
                format!(
                    "this device observes {observes}; a code for {code_for} needs another device"
                ),
            ),
        })?;
    let storage = state.storage.clone();
    let election_id = device.election.clone();
    let election = web::block(move || storage.election(&election_id))
        .await??
        .ok_or_else(|| ApiError::not_found("election vanished"))?;
    tracing::info!("device enrolled");
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(serde_json::json!({
        "device_id": device.id,
        "receipt_key": state.keys.receipt_public().to_hex(),
        "log_key": state.log.log_key.vkey,
        "precincts": device.precincts,
        "election": election,
        "witness_policy": state.witness_policy.as_ref().map(|p| p.text.as_str()),
    })))
}
