//! Hattama server.
//!
//! Ingest, the public log, review and the gallery arrive with the [Sync], [Log], [Review] and
//! [Gallery] issues. The server uses `hattama-core` for the evidence format and the photo
//! checks: [`check_evidence`] is the one entry point it will call on every upload.

use hattama_core::evidence::{EvidenceError, SignedManifest};
use hattama_core::media::{self, MediaLimits};

/// Why an upload's evidence is refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Manifest or signature refused.
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    /// Photo refused.
    #[error(transparent)]
    Media(#[from] media::MediaError),
    /// Photo and manifest disagree.
    #[error("photo does not match the manifest")]
    Mismatch,
}

/// Checks a manifest, its signature and its photo with the core's rules.
pub fn check_evidence(
    canonical: &[u8],
    signature: &[u8],
    photo: &[u8],
    limits: &MediaLimits,
) -> Result<SignedManifest, IngestError> {
    let signed = SignedManifest::verify(canonical, signature)?;
    let info = &signed.manifest.photo;
    let clean = media::strip(photo, limits)?;
    let hash = hattama_core::evidence::Sha256Hash::of(photo);
    if clean.bytes != photo
        || hash != info.sha256
        || photo.len() as u64 != info.bytes
        || (clean.width, clean.height) != (info.width, info.height)
    {
        return Err(IngestError::Mismatch);
    }
    Ok(signed)
}
