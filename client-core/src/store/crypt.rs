//! The store's encryption: whoever holds the phone without the app's key reads nothing.
//!
//! The app supplies a [`StoreKey`] (32 random bytes, kept by Android Keystore or the iOS
//! Keychain: `docs/mobile.md`); the core never writes it to disk. The store's own random data
//! key is kept in `store.key`, sealed (XChaCha20-Poly1305) under a key derived from the store
//! key, so that:
//! - a wrong store key fails to unseal `store.key` and nothing else is read or written
//!   ([`StoreError::Locked`]);
//! - `rekey` seals the same data key under a new store key and replaces `store.key` with one
//!   rename: a crash leaves the old key file or the new one, whole;
//! - destroying `store.key` (overwritten in place, then removed) makes everything else in the
//!   directory unreadable, with any key (the panic wipe's crypto-erase).
//!
//! From the data key (HKDF-SHA256, one `info` string each) come the SQLCipher key of the
//! database, the key that seals every photo, thumbnail and temporary file (XChaCha20-Poly1305,
//! a random 24-byte nonce per file, the file's name as associated data so that files cannot be
//! swapped), and the key of file names (HMAC-SHA256 of what the file holds: a photo file is not
//! named by the photo's hash, which would tell which photo a seized phone held).

use std::fs;
use std::io;
use std::path::Path;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::StoreError;
use super::blobs::write_durably;
use crate::evidence::Sha256Hash;

/// File name of the sealed data key inside the store directory.
pub const KEY_FILE: &str = "store.key";

const NONCE: usize = 24;
const TAG: usize = 16;
/// Bytes a sealed file adds to what it holds.
pub const OVERHEAD: u64 = (NONCE + TAG) as u64;
const KEY_FILE_AAD: &[u8] = b"hattama store key v1";

/// The key the app holds for its store: 32 bytes, never written to disk by the core. Wiped
/// from memory when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct StoreKey([u8; 32]);

impl StoreKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key from 64 hex digits (surrounding white space ignored); `None` otherwise.
    pub fn from_hex(hex_digits: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_digits.trim(), &mut bytes).ok()?;
        Some(Self(bytes))
    }

    /// A new random key (for an app creating its store, or a test).
    pub fn generate() -> Self {
        Self(rand::random())
    }

    /// The key's bytes (for the app to keep it in the platform's key store).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn sealing_key(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&derive(&self.0, b"hattama store: seals store.key v1").into())
    }
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(…)")
    }
}

fn derive(ikm: &[u8; 32], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit of 255 * 32: this cannot fail.
    if Hkdf::<Sha256>::new(None, ikm).expand(info, &mut out).is_err() {
        unreachable!("HKDF-SHA256 expands to 32 bytes");
    }
    out
}

/// `nonce || ciphertext || tag`, encrypted in place in the one buffer it returns (a photo is
/// copied once, not three times: the capture's memory bound counts copies).
fn seal_with(cipher: &XChaCha20Poly1305, aad: &[u8], plain: &[u8]) -> io::Result<Vec<u8>> {
    let nonce: [u8; NONCE] = rand::random();
    let mut out = Vec::with_capacity(NONCE + plain.len() + TAG);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut out[NONCE..])
        .map_err(|_| io::Error::other("encryption failed"))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens what [`seal_with`] made, decrypting in place in `sealed`'s own buffer.
fn open_with(cipher: &XChaCha20Poly1305, aad: &[u8], mut sealed: Vec<u8>) -> Option<Vec<u8>> {
    if sealed.len() < NONCE + TAG {
        return None;
    }
    let end = sealed.len() - TAG;
    let nonce = *XNonce::from_slice(&sealed[..NONCE]);
    let tag = *Tag::from_slice(&sealed[end..]);
    cipher.decrypt_in_place_detached(&nonce, aad, &mut sealed[NONCE..end], &tag).ok()?;
    sealed.truncate(end);
    sealed.drain(..NONCE);
    Some(sealed)
}

/// The keys of one unlocked store, derived from its data key.
pub struct Keys {
    data: Zeroizing<[u8; 32]>,
    files: XChaCha20Poly1305,
    names: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(…)")
    }
}

impl Keys {
    fn from_data_key(data: [u8; 32]) -> Self {
        let files = XChaCha20Poly1305::new(&derive(&data, b"hattama store: files v1").into());
        let names = Zeroizing::new(derive(&data, b"hattama store: file names v1"));
        Self { data: Zeroizing::new(data), files, names }
    }

    /// Creates a new data key for a new store and seals it under `key` into `dir/store.key`
    /// (durably, through `tmp`).
    pub fn create(dir: &Path, tmp: &Path, key: &StoreKey) -> Result<Self, StoreError> {
        let keys = Self::from_data_key(rand::random());
        keys.seal_into(dir, tmp, key)?;
        Ok(keys)
    }

    /// Unseals the data key of the store in `dir` with `key`: [`StoreError::Locked`] if it is
    /// not this store's key. Reads one file and writes nothing.
    pub fn unlock(dir: &Path, key: &StoreKey) -> Result<Self, StoreError> {
        let sealed = fs::read(dir.join(KEY_FILE))?;
        let data = open_with(&key.sealing_key(), KEY_FILE_AAD, sealed)
            .map(Zeroizing::new)
            .ok_or(StoreError::Locked)?;
        let data: [u8; 32] = data
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("{KEY_FILE} holds no 32-byte key")))?;
        Ok(Self::from_data_key(data))
    }

    /// Seals this store's data key under `key` and replaces `dir/store.key` with it in one
    /// rename (the old file or the new one is there after a crash, whole).
    pub fn seal_into(&self, dir: &Path, tmp: &Path, key: &StoreKey) -> Result<(), StoreError> {
        let sealed = seal_with(&key.sealing_key(), KEY_FILE_AAD, self.data.as_slice())?;
        crate::hooks::pause("rekey:before-rename");
        write_durably(tmp, &dir.join(KEY_FILE), &sealed)?;
        Ok(())
    }

    /// The SQLCipher statement that keys a connection (a raw key: no slow passphrase
    /// derivation, as the data key is random).
    pub fn sqlcipher_pragma(&self) -> Zeroizing<String> {
        let key = Zeroizing::new(derive(&self.data, b"hattama store: sqlcipher v1"));
        Zeroizing::new(format!("PRAGMA key = \"x'{}'\";", hex::encode(key.as_slice())))
    }

    /// Seals a file's bytes; `name` (the file's name) is bound as associated data.
    pub fn seal(&self, name: &str, plain: &[u8]) -> io::Result<Vec<u8>> {
        seal_with(&self.files, name.as_bytes(), plain)
    }

    /// Opens a sealed file; an error if it was changed, truncated or is another file.
    pub fn open(&self, name: &str, sealed: Vec<u8>) -> io::Result<Vec<u8>> {
        open_with(&self.files, name.as_bytes(), sealed).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{name}: damaged sealed file"))
        })
    }

    /// The file name of what `id` identifies in `kind` (`photo`, `thumb`): 64 hex digits that
    /// tell nothing without the key.
    pub fn name(&self, kind: &str, id: &Sha256Hash) -> String {
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(self.names.as_slice()) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes a key of any length"),
        };
        mac.update(kind.as_bytes());
        mac.update(b":");
        mac.update(&id.0);
        hex::encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_key_is_locked_and_rekey_keeps_the_data_key() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (StoreKey::generate(), StoreKey::generate());
        let keys = Keys::create(dir.path(), dir.path(), &a).unwrap();
        let sealed = keys.seal("n", b"photo").unwrap();
        assert!(matches!(Keys::unlock(dir.path(), &b), Err(StoreError::Locked)));
        let again = Keys::unlock(dir.path(), &a).unwrap();
        assert_eq!(again.open("n", sealed.clone()).unwrap(), b"photo");
        assert!(again.open("m", sealed.clone()).is_err(), "bound to its name");
        again.seal_into(dir.path(), dir.path(), &b).unwrap();
        assert!(matches!(Keys::unlock(dir.path(), &a), Err(StoreError::Locked)));
        let rekeyed = Keys::unlock(dir.path(), &b).unwrap();
        assert_eq!(rekeyed.open("n", sealed).unwrap(), b"photo");
        assert_eq!(rekeyed.name("photo", &Sha256Hash::ZERO), keys.name("photo", &Sha256Hash::ZERO));
        assert_ne!(keys.name("photo", &Sha256Hash::ZERO), keys.name("thumb", &Sha256Hash::ZERO));
    }
}
