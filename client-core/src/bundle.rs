//! Evidence bundles: a directory anyone can verify with the rules of `docs/evidence-format.md`.
//!
//! A bundle holds exactly the signed bytes: `manifest.json` (canonical manifest),
//! `manifest.sig` (128 lowercase hex digits of the ed25519 signature, then one line feed) and
//! `photo.jpg` or `photo.png` (the stripped photo). A capture whose photo left the device after
//! its receipt (`crate::retention`) is exported without the photo file; its bundle is verified
//! with the server's copy of the photo ([`verify_with_photo`]).

use std::fs;
use std::io::Read;
use std::path::Path;

use crate::evidence::{self, EvidenceError, MediaType, Sha256Hash, SignedManifest};
use crate::media::{self, MediaError, MediaLimits};

/// File name of the canonical manifest in a bundle.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of the signature in a bundle.
pub const SIGNATURE_FILE: &str = "manifest.sig";

/// Why a bundle could not be written or did not verify.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file of the bundle is missing or unreadable.
    #[error("cannot read or write {file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The target directory exists and is not empty.
    #[error("{0} exists and is not empty")]
    NotEmpty(String),
    /// The signature file is not 128 lowercase hex digits.
    #[error("manifest.sig is not 128 lowercase hex digits followed by a line feed")]
    BadSignatureFile,
    /// The manifest or its signature is refused.
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    /// The photo file is not the one the manifest names.
    #[error("photo does not match the manifest: {0}")]
    PhotoMismatch(String),
    /// The photo is refused by the image checks.
    #[error("photo is refused: {0}")]
    Photo(#[from] MediaError),
}

fn photo_file(media_type: MediaType) -> String {
    format!("photo.{}", media_type.extension())
}

/// The name of the photo file of a bundle whose manifest is `signed`.
pub fn photo_file_name(signed: &SignedManifest) -> String {
    photo_file(signed.manifest.photo.media_type)
}

/// Writes a bundle into `dir` (created if missing; must be empty if present); without the
/// photo file when `photo` is `None` (the photo left the device after its receipt).
pub fn write(dir: &Path, signed: &SignedManifest, photo: Option<&[u8]>) -> Result<(), BundleError> {
    let io = |file: &str| {
        let file = file.to_owned();
        move |source| BundleError::Io { file, source }
    };
    if dir.exists() {
        let mut entries = fs::read_dir(dir).map_err(io(&dir.display().to_string()))?;
        if entries.next().is_some() {
            return Err(BundleError::NotEmpty(dir.display().to_string()));
        }
    }
    fs::create_dir_all(dir).map_err(io(&dir.display().to_string()))?;
    fs::write(dir.join(MANIFEST_FILE), &signed.canonical).map_err(io(MANIFEST_FILE))?;
    let sig = format!("{}\n", hex::encode(signed.signature));
    fs::write(dir.join(SIGNATURE_FILE), sig).map_err(io(SIGNATURE_FILE))?;
    if let Some(photo) = photo {
        let name = photo_file(signed.manifest.photo.media_type);
        fs::write(dir.join(&name), photo).map_err(io(&name))?;
    }
    Ok(())
}

fn read_limited(path: &Path, limit: u64, name: &str) -> Result<Vec<u8>, BundleError> {
    let io = |source| BundleError::Io { file: name.to_owned(), source };
    let file = fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    Ok(bytes)
}

/// Verifies a bundle exactly as the spec says; returns the verified manifest.
pub fn verify(dir: &Path, limits: &MediaLimits) -> Result<SignedManifest, BundleError> {
    verify_photo_from(dir, limits, None)
}

/// Verifies a bundle with `photo` (for example the server's copy, `GET /photos/<sha256>`) in
/// place of its photo file (which need not exist): the spec's steps with step 5 reading these
/// bytes instead.
pub fn verify_with_photo(
    dir: &Path,
    photo: &[u8],
    limits: &MediaLimits,
) -> Result<SignedManifest, BundleError> {
    verify_photo_from(dir, limits, Some(photo))
}

/// The signed manifest of a bundle (steps 1 to 4), to learn which photo it needs.
pub fn read_manifest(dir: &Path) -> Result<SignedManifest, BundleError> {
    let canonical =
        read_limited(&dir.join(MANIFEST_FILE), evidence::MAX_MANIFEST_BYTES as u64, MANIFEST_FILE)?;
    let sig_text = read_limited(&dir.join(SIGNATURE_FILE), 130, SIGNATURE_FILE)?;
    let sig_hex = sig_text.strip_suffix(b"\n").unwrap_or(&sig_text);
    let signature = std::str::from_utf8(sig_hex)
        .ok()
        .and_then(evidence::parse_lower_hex::<64>)
        .ok_or(BundleError::BadSignatureFile)?;
    Ok(SignedManifest::verify(&canonical, &signature)?)
}

fn verify_photo_from(
    dir: &Path,
    limits: &MediaLimits,
    given: Option<&[u8]>,
) -> Result<SignedManifest, BundleError> {
    let signed = read_manifest(dir)?;
    match given {
        Some(photo) => check_photo(signed, photo, limits),
        None => {
            let name = photo_file(signed.manifest.photo.media_type);
            let photo = read_limited(&dir.join(&name), limits.max_bytes, &name)?;
            check_photo(signed, &photo, limits)
        }
    }
}

/// The name of a bundle's photo file for this media type (`photo.jpg` or `photo.png`).
pub fn photo_name(media_type: MediaType) -> String {
    photo_file(media_type)
}

/// Steps 5 and 6 of the verification (`docs/evidence-format.md` 7.2): the photo file against
/// a verified manifest; used by [`verify`] and by evidence packages (`crate::package`).
pub fn check_photo(
    signed: SignedManifest,
    photo: &[u8],
    limits: &MediaLimits,
) -> Result<SignedManifest, BundleError> {
    let info = &signed.manifest.photo;
    let name = photo_file(info.media_type);
    if photo.len() as u64 != info.bytes {
        return Err(BundleError::PhotoMismatch(format!(
            "{name} has {} bytes, the manifest says {}",
            photo.len(),
            info.bytes
        )));
    }
    if Sha256Hash::of(photo) != info.sha256 {
        return Err(BundleError::PhotoMismatch(format!("{name} does not have the signed SHA-256")));
    }
    let clean = media::strip(photo, limits)?;
    if clean.media_type != info.media_type {
        return Err(BundleError::PhotoMismatch("media type differs".into()));
    }
    if (clean.width, clean.height) != (info.width, info.height) {
        return Err(BundleError::PhotoMismatch(format!(
            "photo is {}×{}, the manifest says {}×{}",
            clean.width, clean.height, info.width, info.height
        )));
    }
    if clean.bytes != photo {
        return Err(BundleError::PhotoMismatch("photo still carries metadata".into()));
    }
    Ok(signed)
}
