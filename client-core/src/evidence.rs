//! Evidence format v1: the manifest, its canonical bytes, and its signature.
//!
//! This module is the single definition of what is signed, hashed and logged. The client signs
//! with it, the server and the `hattama verify` command check with it, and `docs/evidence-format.md`
//! describes exactly these rules. Changing a byte of the encoding is a new format version.
//!
//! The canonical encoding is JSON in the RFC 8785 (JCS) form restricted to objects, strings and
//! integers: keys sorted by their bytes, no insignificant white space, strings escaped as JCS does.
//! serde_json's compact writer produces exactly that form as long as every object's keys are
//! serialized in sorted order, which the struct field order below guarantees (a unit test checks
//! it against a sorted re-serialization).

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The only manifest version this code writes and accepts.
pub const FORMAT_VERSION: u64 = 1;

/// The domain-separation prefix of every signed manifest: the signature covers
/// `SIGNING_PREFIX || canonical manifest bytes`.
pub const SIGNING_PREFIX: &[u8] = b"hattama/evidence/v1\n";

/// Largest canonical manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

/// Largest note, in bytes of UTF-8.
pub const MAX_NOTE_BYTES: usize = 2000;

/// Most lines an observer's transcription may hold.
pub const MAX_TRANSCRIPTION_LINES: usize = 200;

/// Largest integer the format carries (2^53 - 1, exact in every JSON implementation).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Why a manifest, a signature or an identifier was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EvidenceError {
    /// The bytes are not a manifest of this format at all.
    #[error("manifest is not valid: {0}")]
    Malformed(String),
    /// The manifest parses but is not in its canonical byte form.
    #[error("manifest is not in canonical form")]
    NotCanonical,
    /// The manifest is larger than [`MAX_MANIFEST_BYTES`].
    #[error("manifest is larger than {MAX_MANIFEST_BYTES} bytes")]
    TooLarge,
    /// The manifest names a format version this code does not know.
    #[error("unsupported manifest version {0}")]
    UnsupportedVersion(u64),
    /// A field breaks a rule of the format.
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField {
        /// The field's name as it appears in the manifest.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The signature does not verify under the manifest's device key.
    #[error("signature does not verify")]
    BadSignature,
}

/// A 32-byte SHA-256 digest, written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Hash(pub [u8; 32]);

impl Sha256Hash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The all-zero hash, used as `prev` of a device's first manifest.
    pub const ZERO: Self = Self([0; 32]);

    /// Lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses exactly 64 lowercase hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        parse_lower_hex::<32>(s).map(Self)
    }
}

impl fmt::Debug for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Hash({})", self.to_hex())
    }
}

impl fmt::Display for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Sha256Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Sha256Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("expected 64 lowercase hex digits"))
    }
}

/// Parses exactly `2 * N` lowercase hex digits (uppercase is refused: one spelling per value).
pub fn parse_lower_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// A device's ed25519 public key, written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceKey(pub [u8; 32]);

impl DeviceKey {
    /// Lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A short fingerprint for people: the first 16 hex digits of SHA-256 of the key bytes.
    pub fn fingerprint(&self) -> String {
        Sha256Hash::of(&self.0).to_hex()[..16].to_owned()
    }

    /// Decodes the key, refusing encodings that are not canonical (y ≥ p, or x = 0 with the
    /// sign bit set): every key has exactly one spelling.
    fn verifying_key(&self) -> Result<VerifyingKey, EvidenceError> {
        let bad = || EvidenceError::InvalidField {
            field: "device_key",
            reason: "not a canonically encoded ed25519 public key".into(),
        };
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| bad())?;
        if key.to_edwards().compress().to_bytes() != self.0 {
            return Err(bad());
        }
        Ok(key)
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKey({})", self.to_hex())
    }
}

impl Serialize for DeviceKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for DeviceKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_lower_hex::<32>(&s)
            .map(Self)
            .ok_or_else(|| serde::de::Error::custom("expected 64 lowercase hex digits"))
    }
}

/// What the photo is evidence of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EvidenceKind {
    /// The protocol copy posted on the wall of the polling station (art. 43 p.8).
    #[serde(rename = "posted")]
    Posted,
    /// A copy of the protocol handed to the observer.
    #[serde(rename = "handed")]
    Handed,
    /// A report that no protocol was posted: the photo shows where it should have been.
    #[serde(rename = "not-posted")]
    NotPosted,
}

impl EvidenceKind {
    /// The spelling used in manifests and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Posted => "posted",
            Self::Handed => "handed",
            Self::NotPosted => "not-posted",
        }
    }

    /// Parses the spelling of [`Self::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "posted" => Some(Self::Posted),
            "handed" => Some(Self::Handed),
            "not-posted" => Some(Self::NotPosted),
            _ => None,
        }
    }
}

/// Page `number` of `count` of a multi-page protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// How many pages the protocol has (1 to 99).
    pub count: u32,
    /// Which page this is (1 to `count`).
    pub number: u32,
}

/// A coarse location, only present when the observer opted in: hundredths of a degree
/// (about 1 km), never finer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoarseLocation {
    /// Latitude in hundredths of a degree, -9000 to 9000.
    pub lat_e2: i32,
    /// Longitude in hundredths of a degree, -18000 to 18000.
    pub lon_e2: i32,
}

/// The media types a photo may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MediaType {
    /// JPEG (JFIF or Exif from a camera, stripped).
    #[serde(rename = "image/jpeg")]
    Jpeg,
    /// PNG.
    #[serde(rename = "image/png")]
    Png,
}

impl MediaType {
    /// The IANA media type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
        }
    }

    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            Self::Png => "png",
        }
    }

    /// Parses the IANA media type spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "image/jpeg" => Some(Self::Jpeg),
            "image/png" => Some(Self::Png),
            _ => None,
        }
    }
}

/// What the manifest says of the (already stripped) photo.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhotoInfo {
    /// Length of the photo in bytes.
    pub bytes: u64,
    /// Height in pixels, as stored (before orientation is applied).
    pub height: u32,
    /// Media type.
    pub media_type: MediaType,
    /// EXIF orientation (1 to 8) read from the original before stripping; 1 when absent.
    pub orientation: u8,
    /// SHA-256 of the photo bytes.
    pub sha256: Sha256Hash,
    /// Width in pixels, as stored.
    pub width: u32,
}

/// An evidence manifest, version 1. Field order is the canonical (sorted) key order: do not
/// reorder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Capture time, milliseconds since the Unix epoch, UTC, by the device clock.
    pub captured_at_ms: u64,
    /// The device's ed25519 public key.
    pub device_key: DeviceKey,
    /// Election identifier.
    pub election: String,
    /// What kind of evidence this is.
    pub kind: EvidenceKind,
    /// Coarse location, only if the observer opted in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<CoarseLocation>,
    /// The observer's note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Page n of m.
    pub page: Page,
    /// The photo.
    pub photo: PhotoInfo,
    /// Precinct (polling station) identifier.
    pub precinct: String,
    /// SHA-256 of the canonical bytes of this device's previous manifest; zero for `seq` 1.
    pub prev: Sha256Hash,
    /// Per-device sequence number, starting at 1, one more for every manifest the device signs.
    pub seq: u64,
    /// The observer's transcription: protocol line id to number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcription: Option<BTreeMap<String, u64>>,
    /// The device's offset from UTC at capture time, in minutes (-720 to 840).
    pub utc_offset_min: i32,
    /// Format version: 1.
    pub v: u64,
}

/// Checks an election, precinct or protocol-line identifier: 1 to 64 characters of
/// `[A-Za-z0-9._-]`, starting with a letter or digit. Such an id is also safe in a path or URL.
pub fn check_id(field: &'static str, id: &str) -> Result<(), EvidenceError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(EvidenceError::InvalidField {
            field,
            reason: "must be 1-64 characters of A-Z a-z 0-9 . _ - starting with a letter or digit"
                .into(),
        })
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> EvidenceError {
    EvidenceError::InvalidField { field, reason: reason.into() }
}

impl Manifest {
    /// Checks every field rule of the format (the "validity" rules of the spec).
    pub fn validate(&self) -> Result<(), EvidenceError> {
        if self.v != FORMAT_VERSION {
            return Err(EvidenceError::UnsupportedVersion(self.v));
        }
        check_id("election", &self.election)?;
        check_id("precinct", &self.precinct)?;
        if self.captured_at_ms > MAX_SAFE_INTEGER {
            return Err(invalid("captured_at_ms", "out of range"));
        }
        if !(-720..=840).contains(&self.utc_offset_min) {
            return Err(invalid("utc_offset_min", "must be between -720 and 840"));
        }
        if self.seq == 0 || self.seq > MAX_SAFE_INTEGER {
            return Err(invalid("seq", "must be between 1 and 2^53-1"));
        }
        if (self.seq == 1) != (self.prev == Sha256Hash::ZERO) {
            return Err(invalid("prev", "must be zero exactly when seq is 1"));
        }
        if !(1..=99).contains(&self.page.count)
            || !(1..=self.page.count).contains(&self.page.number)
        {
            return Err(invalid("page", "need 1 <= number <= count <= 99"));
        }
        let p = &self.photo;
        if p.bytes == 0 || p.bytes > MAX_SAFE_INTEGER {
            return Err(invalid("photo.bytes", "out of range"));
        }
        if p.width == 0 {
            return Err(invalid("photo.width", "pixel size must be positive"));
        }
        if p.height == 0 {
            return Err(invalid("photo.height", "pixel size must be positive"));
        }
        if !(1..=8).contains(&p.orientation) {
            return Err(invalid("photo.orientation", "must be 1 to 8"));
        }
        if let Some(loc) = &self.location
            && (!(-9000..=9000).contains(&loc.lat_e2) || !(-18000..=18000).contains(&loc.lon_e2))
        {
            return Err(invalid("location", "out of range"));
        }
        if let Some(note) = &self.note {
            check_note(note)?;
        }
        if let Some(lines) = &self.transcription {
            if lines.is_empty() || lines.len() > MAX_TRANSCRIPTION_LINES {
                return Err(invalid("transcription", "must hold 1 to 200 lines"));
            }
            for (line, value) in lines {
                check_id("transcription", line)?;
                if *value > MAX_SAFE_INTEGER {
                    return Err(invalid("transcription", "value out of range"));
                }
            }
        }
        Ok(())
    }

    /// The canonical bytes of this manifest (after checking it is valid).
    pub fn to_canonical(&self) -> Result<Vec<u8>, EvidenceError> {
        self.validate()?;
        let bytes =
            serde_json::to_vec(self).map_err(|e| EvidenceError::Malformed(e.to_string()))?;
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(EvidenceError::TooLarge);
        }
        Ok(bytes)
    }

    /// Parses canonical manifest bytes: refuses anything that is not exactly the canonical
    /// encoding of a valid manifest (unknown or duplicate keys, other spacing or key order,
    /// other escapes, a version other than 1).
    pub fn from_canonical(bytes: &[u8]) -> Result<Self, EvidenceError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(EvidenceError::TooLarge);
        }
        // Look at the version first, so a future manifest gets a precise error.
        if let Ok(probe) = serde_json::from_slice::<VersionProbe>(bytes)
            && probe.v != FORMAT_VERSION
        {
            return Err(EvidenceError::UnsupportedVersion(probe.v));
        }
        let manifest: Self =
            serde_json::from_slice(bytes).map_err(|e| EvidenceError::Malformed(e.to_string()))?;
        manifest.validate()?;
        if manifest.to_canonical()? != bytes {
            return Err(EvidenceError::NotCanonical);
        }
        Ok(manifest)
    }
}

#[derive(Deserialize)]
struct VersionProbe {
    v: u64,
}

/// Checks the note rule: 1 to [`MAX_NOTE_BYTES`] bytes, no control characters but line feed.
pub fn check_note(note: &str) -> Result<(), EvidenceError> {
    if note.is_empty() || note.len() > MAX_NOTE_BYTES {
        return Err(invalid("note", format!("must be 1 to {MAX_NOTE_BYTES} bytes")));
    }
    if note.chars().any(|c| c.is_control() && c != '\n') {
        return Err(invalid("note", "must not contain control characters other than line feed"));
    }
    Ok(())
}

/// The message a device signs for `canonical` manifest bytes.
pub fn signing_message(canonical: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNING_PREFIX.len() + canonical.len());
    msg.extend_from_slice(SIGNING_PREFIX);
    msg.extend_from_slice(canonical);
    msg
}

/// A manifest with its canonical bytes and the device's signature over them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedManifest {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// Its canonical bytes, exactly as signed.
    pub canonical: Vec<u8>,
    /// The ed25519 signature over `SIGNING_PREFIX || canonical`.
    pub signature: [u8; 64],
}

impl SignedManifest {
    /// Signs `manifest` with the device key `key`, whose public half must be the manifest's
    /// `device_key`.
    pub fn sign(manifest: Manifest, key: &SigningKey) -> Result<Self, EvidenceError> {
        if key.verifying_key().to_bytes() != manifest.device_key.0 {
            return Err(invalid("device_key", "does not match the signing key"));
        }
        let canonical = manifest.to_canonical()?;
        let signature = key.sign(&signing_message(&canonical)).to_bytes();
        Ok(Self { manifest, canonical, signature })
    }

    /// Parses canonical bytes and checks the signature strictly (RFC 8032 with canonical `s`,
    /// no small-order keys or `R`).
    pub fn verify(canonical: &[u8], signature: &[u8]) -> Result<Self, EvidenceError> {
        let manifest = Manifest::from_canonical(canonical)?;
        let sig: [u8; 64] = signature.try_into().map_err(|_| EvidenceError::BadSignature)?;
        let key = manifest.device_key.verifying_key()?;
        key.verify_strict(&signing_message(canonical), &Signature::from_bytes(&sig))
            .map_err(|_| EvidenceError::BadSignature)?;
        Ok(Self { manifest, canonical: canonical.to_vec(), signature: sig })
    }

    /// The manifest hash: SHA-256 of the canonical bytes. It is the capture's identifier.
    pub fn hash(&self) -> Sha256Hash {
        Sha256Hash::of(&self.canonical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample(key: &SigningKey) -> Manifest {
        Manifest {
            captured_at_ms: 1_761_480_000_000,
            device_key: DeviceKey(key.verifying_key().to_bytes()),
            election: "kz-2026-test".into(),
            kind: EvidenceKind::Posted,
            location: None,
            note: Some("Posted at 21:40, \"copy\" ok\nсчёт".into()),
            page: Page { count: 2, number: 1 },
            photo: PhotoInfo {
                bytes: 1234,
                height: 480,
                media_type: MediaType::Jpeg,
                orientation: 6,
                sha256: Sha256Hash::of(b"photo"),
                width: 640,
            },
            precinct: "75-123".into(),
            prev: Sha256Hash::ZERO,
            seq: 1,
            transcription: Some([("1".into(), 1200), ("10".into(), 3), ("2".into(), 1100)].into()),
            utc_offset_min: 300,
            v: 1,
        }
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn canonical_bytes_have_sorted_keys_everywhere() {
        let m = sample(&key(1));
        let bytes = m.to_canonical().unwrap();
        // serde_json::Value keeps objects in a BTreeMap: re-serializing sorts every object.
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(serde_json::to_vec(&value).unwrap(), bytes);
    }

    #[test]
    fn refuses_non_canonical_spellings() {
        let m = sample(&key(1));
        let bytes = m.to_canonical().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let spaced = text.replacen(":", ": ", 1);
        assert_eq!(Manifest::from_canonical(spaced.as_bytes()), Err(EvidenceError::NotCanonical));
        let escaped = text.replacen("kz-2026-test", "kz\\u002d2026-test", 1);
        assert_eq!(Manifest::from_canonical(escaped.as_bytes()), Err(EvidenceError::NotCanonical));
        let dup = text.replacen("{", "{\"v\":1,", 1);
        assert!(matches!(
            Manifest::from_canonical(dup.as_bytes()),
            Err(EvidenceError::Malformed(_))
        ));
        let unknown = text.replacen("{", "{\"aaa\":1,", 1);
        assert!(matches!(
            Manifest::from_canonical(unknown.as_bytes()),
            Err(EvidenceError::Malformed(_))
        ));
        let v2 = text.replace("\"v\":1}", "\"v\":2}");
        assert_eq!(
            Manifest::from_canonical(v2.as_bytes()),
            Err(EvidenceError::UnsupportedVersion(2))
        );
        assert!(Manifest::from_canonical(&bytes).is_ok());
    }

    #[test]
    fn field_rules() {
        let k = key(1);
        let check = |f: &dyn Fn(&mut Manifest), field: &str| {
            let mut m = sample(&k);
            f(&mut m);
            match m.validate() {
                Err(EvidenceError::InvalidField { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: expected an invalid field, got {other:?}"),
            }
        };
        check(&|m| m.election = "../etc".into(), "election");
        check(&|m| m.precinct = String::new(), "precinct");
        check(&|m| m.precinct = "a/b".into(), "precinct");
        check(&|m| m.seq = 0, "seq");
        check(&|m| m.seq = 2, "prev");
        check(&|m| m.page = Page { count: 1, number: 2 }, "page");
        check(&|m| m.page = Page { count: 100, number: 1 }, "page");
        check(&|m| m.photo.orientation = 9, "photo.orientation");
        check(&|m| m.photo.bytes = 0, "photo.bytes");
        check(&|m| m.utc_offset_min = 900, "utc_offset_min");
        check(&|m| m.note = Some("a\u{0}b".into()), "note");
        check(&|m| m.note = Some("x".repeat(2001)), "note");
        check(&|m| m.location = Some(CoarseLocation { lat_e2: 9001, lon_e2: 0 }), "location");
        check(&|m| m.transcription = Some(BTreeMap::new()), "transcription");
    }

    #[test]
    fn signature_roundtrip_and_strictness() {
        let k = key(7);
        let signed = SignedManifest::sign(sample(&k), &k).unwrap();
        let back = SignedManifest::verify(&signed.canonical, &signed.signature).unwrap();
        assert_eq!(back, signed);

        // Malleated signature: s + l (the group order) verifies under lax rules only.
        let l: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut sig = signed.signature;
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = sig[32 + i] as u16 + l[i] as u16 + carry;
            sig[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(
            SignedManifest::verify(&signed.canonical, &sig),
            Err(EvidenceError::BadSignature)
        );

        // Signed by another key.
        let other = key(8);
        let mut m = sample(&k);
        m.device_key = DeviceKey(other.verifying_key().to_bytes());
        let forged = SignedManifest::sign(m, &other).unwrap();
        let mut canonical = forged.canonical.clone();
        let key_hex = DeviceKey(k.verifying_key().to_bytes()).to_hex();
        let other_hex = DeviceKey(other.verifying_key().to_bytes()).to_hex();
        let text = String::from_utf8(canonical).unwrap().replace(&other_hex, &key_hex);
        canonical = text.into_bytes();
        assert_eq!(
            SignedManifest::verify(&canonical, &forged.signature),
            Err(EvidenceError::BadSignature)
        );
    }

    #[test]
    fn non_canonical_device_keys_are_refused() {
        // y = p + 3 (p = 2^255 - 19): decodes to the same point as y = 3 under lax rules.
        let mut y = [0xffu8; 32];
        y[0] = 0xed + 3;
        y[31] = 0x7f;
        let key = DeviceKey(y);
        assert!(VerifyingKey::from_bytes(&y).is_ok(), "the lax decoder accepts it");
        assert!(matches!(
            key.verifying_key(),
            Err(EvidenceError::InvalidField { field: "device_key", .. })
        ));
        let good = DeviceKey(key_bytes(5));
        assert!(good.verifying_key().is_ok());
    }

    fn key_bytes(seed: u8) -> [u8; 32] {
        key(seed).verifying_key().to_bytes()
    }

    #[test]
    fn sign_refuses_a_key_other_than_the_manifests() {
        let m = sample(&key(1));
        assert!(SignedManifest::sign(m, &key(2)).is_err());
    }

    fn arb_id() -> impl Strategy<Value = String> {
        "[A-Za-z0-9][A-Za-z0-9._-]{0,20}"
    }

    prop_compose! {
        fn arb_manifest()(
            captured_at_ms in 0..=MAX_SAFE_INTEGER,
            election in arb_id(),
            precinct in arb_id(),
            kind in prop_oneof![
                Just(EvidenceKind::Posted), Just(EvidenceKind::Handed), Just(EvidenceKind::NotPosted)
            ],
            location in proptest::option::of((-9000..=9000i32, -18000..=18000i32)),
            note in proptest::option::of("[^\\p{Cc}]{1,40}(\n[^\\p{Cc}]{0,10})?"),
            (count, number) in (1..=99u32).prop_flat_map(|c| (Just(c), 1..=c)),
            bytes in 1..=MAX_SAFE_INTEGER,
            (width, height) in (1..=u32::MAX, 1..=u32::MAX),
            orientation in 1..=8u8,
            sha in any::<[u8; 32]>(),
            media_png in any::<bool>(),
            (seq, prev) in prop_oneof![
                Just((1u64, [0u8; 32])),
                (2..=MAX_SAFE_INTEGER, any::<[u8; 32]>().prop_filter("nonzero", |p| *p != [0; 32]))
            ],
            transcription in proptest::option::of(
                proptest::collection::btree_map(arb_id(), 0..=MAX_SAFE_INTEGER, 1..10)),
            utc_offset_min in -720..=840i32,
        ) -> Manifest {
            Manifest {
                captured_at_ms,
                device_key: DeviceKey(key(3).verifying_key().to_bytes()),
                election,
                kind,
                location: location.map(|(lat_e2, lon_e2)| CoarseLocation { lat_e2, lon_e2 }),
                note,
                page: Page { count, number },
                photo: PhotoInfo {
                    bytes,
                    height,
                    media_type: if media_png { MediaType::Png } else { MediaType::Jpeg },
                    orientation,
                    sha256: Sha256Hash(sha),
                    width,
                },
                precinct,
                prev: Sha256Hash(prev),
                seq,
                transcription,
                utc_offset_min,
                v: 1,
            }
        }
    }

    proptest! {
        #[test]
        fn canonical_encoding_round_trips(m in arb_manifest()) {
            let bytes = m.to_canonical().unwrap();
            let back = Manifest::from_canonical(&bytes).unwrap();
            prop_assert_eq!(&back, &m);
            prop_assert_eq!(back.to_canonical().unwrap(), bytes.clone());
            let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(serde_json::to_vec(&value).unwrap(), bytes);
        }

        #[test]
        fn any_byte_change_breaks_verification(
            m in arb_manifest(), pos in any::<prop::sample::Index>(), bit in 0..8u8
        ) {
            let k = key(3);
            let signed = SignedManifest::sign(m, &k).unwrap();
            let mut bytes = signed.canonical.clone();
            let i = pos.index(bytes.len());
            bytes[i] ^= 1 << bit;
            prop_assert!(SignedManifest::verify(&bytes, &signed.signature).is_err());
            let mut sig = signed.signature;
            sig[pos.index(64)] ^= 1 << bit;
            prop_assert!(SignedManifest::verify(&signed.canonical, &sig).is_err());
        }

        #[test]
        fn any_field_change_breaks_verification(m in arb_manifest(), which in 0..12usize) {
            let k = key(3);
            let signed = SignedManifest::sign(m.clone(), &k).unwrap();
            let mut changed = m;
            match which {
                0 => changed.captured_at_ms ^= 1,
                1 => changed.election.push('x'),
                2 => changed.kind = if changed.kind == EvidenceKind::Posted {
                    EvidenceKind::Handed } else { EvidenceKind::Posted },
                3 => changed.note = Some(format!("{}!", changed.note.unwrap_or_default())),
                4 => if changed.page.count < 99 {
                    changed.page.count += 1;
                } else {
                    changed.page.count = 98;
                    changed.page.number = changed.page.number.min(98);
                },
                5 => changed.photo.bytes = if changed.photo.bytes == 1 { 2 } else { changed.photo.bytes - 1 },
                6 => changed.photo.sha256.0[0] ^= 1,
                7 => changed.photo.width = changed.photo.width.wrapping_add(1).max(1),
                8 => changed.precinct.push('0'),
                9 => changed.utc_offset_min = if changed.utc_offset_min == 0 { 60 } else { 0 },
                10 => changed.photo.orientation = changed.photo.orientation % 8 + 1,
                _ => changed.location = match changed.location {
                    Some(_) => None,
                    None => Some(CoarseLocation { lat_e2: 4325, lon_e2: 7695 }),
                },
            }
            prop_assume!(changed != signed.manifest);
            prop_assume!(changed.validate().is_ok());
            let bytes = changed.to_canonical().unwrap();
            prop_assert!(SignedManifest::verify(&bytes, &signed.signature).is_err());
        }
    }
}
