//! The tus request headers the server reads from a device's upload (`docs/sync-protocol.md`):
//! `Upload-Metadata` and `Upload-Checksum`. The device writes them in `sync`
//! (`sync::upload_metadata`); the server's `routes::tus` parses them here and answers each
//! [`TusHeaderError`] with a 400. Kept out of the server so that the fuzz target `tus_headers`
//! checks exactly this code without building the server.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// Why a tus header value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TusHeaderError {
    /// `Upload-Metadata` is not comma-separated `key base64(value)` pairs with distinct keys.
    #[error("Upload-Metadata is malformed")]
    Metadata,
    /// `Upload-Checksum` names an algorithm other than `sha256`.
    #[error("only sha256 checksums are supported")]
    ChecksumAlgorithm,
    /// The digest of `Upload-Checksum` is not base64.
    #[error("checksum is not base64")]
    ChecksumNotBase64,
    /// The digest of `Upload-Checksum` is not 32 bytes long.
    #[error("a sha256 digest is 32 bytes")]
    ChecksumLength,
}

/// Parses `Upload-Metadata`: comma-separated `key base64(value)` pairs; a key given twice is
/// refused.
pub fn parse_metadata(value: &str) -> Result<HashMap<String, Vec<u8>>, TusHeaderError> {
    let mut out = HashMap::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, val) = pair.split_once(' ').unwrap_or((pair, ""));
        let bytes = B64.decode(val.trim()).map_err(|_| TusHeaderError::Metadata)?;
        if out.insert(key.to_owned(), bytes).is_some() {
            return Err(TusHeaderError::Metadata);
        }
    }
    Ok(out)
}

/// Parses an `Upload-Checksum` value: `sha256 <base64 digest>`.
pub fn parse_checksum_value(value: &str) -> Result<[u8; 32], TusHeaderError> {
    let (algo, digest) = value.split_once(' ').unwrap_or((value, ""));
    if algo != "sha256" {
        return Err(TusHeaderError::ChecksumAlgorithm);
    }
    let bytes = B64.decode(digest.trim()).map_err(|_| TusHeaderError::ChecksumNotBase64)?;
    bytes.try_into().map_err(|_| TusHeaderError::ChecksumLength)
}
