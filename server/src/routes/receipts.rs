//! `GET /api/v1/receipts/{id}`: a stored capture's receipt.

use actix_web::{HttpResponse, web};

use super::parse_hash;
use crate::error::ApiError;
use crate::startup::AppState;

/// Answers the receipt, or 404 while the capture is not stored.
pub async fn get(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_hash(&path)?;
    super::tus::finish_if_complete(&state, id).await?;
    let storage = state.storage.clone();
    let receipt = web::block(move || storage.receipt(&id)).await??;
    let receipt = receipt.ok_or_else(|| ApiError::not_found("no stored capture with this id"))?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Cache-Control", "no-store"))
        .body(receipt))
}
