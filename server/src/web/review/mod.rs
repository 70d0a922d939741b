//! The coordinators' review UI (see `docs/review.md`).

use actix_web::web;

/// Registers the review routes.
pub fn configure(_cfg: &mut web::ServiceConfig) {}
